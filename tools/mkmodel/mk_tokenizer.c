/*
 * tools/mkmodel/mk_tokenizer.c — a real, trained tokenizer.json of either
 * shape for random test models.
 *
 * BPE is trained on a short built-in story (the corpus below): words are
 * counted once, then the most frequent adjacent pair (ties: the pair of
 * older tokens) is merged until the vocab is full. When the corpus runs out
 * of pairs before that, padding merges join pairs of existing tokens in a
 * fixed order, so any vocab size gives consistent vocab/merges that Hugging
 * Face's tokenizers library loads. Output is deterministic.
 *
 * SentencePiece shape: <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF> = 3..258, the
 * merged pieces, then the single characters (as Llama-2/TinyLlama files
 * order them); Prepend/Replace normalizer, byte fallback, TemplateProcessing
 * adding <s>, decoder Replace/ByteFallback/Fuse/Strip; merges as "a b".
 * Byte-level shape (Llama-3): the 256 byte symbols in byte order, the merged
 * pieces, then <|begin_of_text|> and <|end_of_text|> as special added tokens;
 * Split (Llama-3 regex, Isolated) + ByteLevel pre-tokenizer, ignore_merges,
 * ByteLevel + TemplateProcessing post-processor, ByteLevel decoder; merges
 * as ["a", "b"] pairs.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/alloc.h"
#include "mk.h"

#define MK_SP_MIN (259 + 16)
#define MK_BL_MIN (258 + 8)
#define MK_VOCAB_MAX (1 << 20)

static const char llama3_re[] =
	"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
	"\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char corpus[] =
	"The Lighthouse Keeper's Cat\n\n"
	"Once upon a time, on a small island at the edge of a cold grey sea, there lived an old "
	"lighthouse keeper named Tom and his cat, Pip. Every evening Tom climbed the one hundred and "
	"twelve steps of the tower to light the great lamp, and every evening Pip climbed them too, "
	"one step behind him, her tail held high like a little flag.\n"
	"The ships that passed the island never saw Pip, but they saw the light. It turned and turned "
	"through the long night, and the sailors said to each other, \"There is the old light. We are "
	"safe now.\" Tom liked to think that Pip helped. She sat by the lamp and watched the dark water "
	"with her bright green eyes, as if she were counting the waves.\n"
	"One winter the storms came early. The wind howled around the tower for three days and three "
	"nights. The rain hit the windows so hard that Tom could not hear himself think. On the third "
	"night, the lamp went out.\n"
	"\"Oh no,\" said Tom. \"The oil is wet, and the wick will not burn. What will the ships do?\"\n"
	"Pip looked at him, and then she looked at the sea. Far away, a small red light was moving "
	"between the waves. It was a fishing boat, and it was coming closer and closer to the rocks.\n"
	"Tom searched the store room. He found an old box of candles, a lantern and a mirror. He "
	"lit the candles, put them in the lantern and held the mirror behind it. The light was small, "
	"but it was bright. He waved it slowly from side to side, the way his father had taught him "
	"many years ago.\n"
	"Pip ran up and down the stairs, meowing as loud as she could. Maybe she wanted to help. Maybe "
	"she was only cold. Tom laughed for the first time in three days.\n"
	"Out on the water, the fisherman saw the little light. He turned his boat away from the rocks "
	"and found the quiet bay behind the island. In the morning the storm was gone, and the sea was "
	"calm and blue. The fisherman walked up to the lighthouse with a basket of fish.\n"
	"\"Thank you,\" he said. \"Without your light, I would have been lost. My name is Sam. I have "
	"sailed past this island for twenty years, and I never knew who lived here.\"\n"
	"\"It was not only me,\" said Tom, and he pointed at the cat. Pip was sitting on the warm "
	"stones in the sun, washing her paws as if nothing had happened.\n"
	"Sam laughed and gave her the biggest fish in the basket. From that day on, every time his "
	"boat passed the island, he rang a little bell, and Pip ran to the window to watch him go by.\n"
	"Years later, when Tom was too old to climb the stairs, a young woman named Lily came to keep "
	"the light. She was quick and kind, and she asked a lot of questions. Tom told her about the "
	"lamp, the oil, the wick and the weather. He told her how to read the clouds and how to listen "
	"to the wind. And he told her about the night of the storm.\n"
	"\"Is that true?\" asked Lily. \"Did the cat really save the boat?\"\n"
	"\"Well,\" said Tom with a smile, \"she certainly thinks so.\"\n"
	"Lily kept the light for forty years. She painted the tower white and red, she planted "
	"flowers by the door, and she always kept a box of candles, a lantern and a mirror in the "
	"store room, just in case. And there was always a cat by the lamp, watching the water with "
	"bright green eyes. The sailors called the island Cat Rock, and they still do today.\n"
	"Some facts about lighthouses: the first ones were fires on hills; later towers used oil "
	"lamps and big glass lenses. A good lens can send light 20 or 30 miles (about 40 km) out to "
	"sea. Many lights are automatic now, but people still love to visit them, to climb 112 or "
	"even 200 steps and look out over the water - just like Tom, Lily and Pip!\n";

/* ---- a string set: token string -> token index ---- */

typedef struct mk_strset {
	char **key;     /* [cap] NULL = empty (strings owned by the token table) */
	int *val;
	size_t cap, n;
} mk_strset;

static uint32_t mk_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 16777619u;
	}
	return h;
}

static int set_get(const mk_strset *m, const char *s)
{
	if (!m->cap)
		return -1;
	size_t mask = m->cap - 1;
	for (size_t i = mk_hash(s) & mask; m->key[i]; i = (i + 1) & mask)
		if (!strcmp(m->key[i], s))
			return m->val[i];
	return -1;
}

static loom_err set_put(mk_strset *m, char *s, int v)
{
	if (2 * (m->n + 1) > m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 1024;
		char **k = loom_calloc(cap, sizeof *k);
		int *vv = loom_calloc(cap, sizeof *vv);
		if (!k || !vv) {
			loom_free(k);
			loom_free(vv);
			return LOOM_ENOMEM;
		}
		for (size_t i = 0; i < m->cap; i++)
			if (m->key[i]) {
				size_t j = mk_hash(m->key[i]) & (cap - 1);
				while (k[j])
					j = (j + 1) & (cap - 1);
				k[j] = m->key[i];
				vv[j] = m->val[i];
			}
		loom_free(m->key);
		loom_free(m->val);
		m->key = k;
		m->val = vv;
		m->cap = cap;
	}
	size_t mask = m->cap - 1, i = mk_hash(s) & mask;
	while (m->key[i])
		i = (i + 1) & mask;
	m->key[i] = s;
	m->val[i] = v;
	m->n++;
	return LOOM_OK;
}

/* ---- the trainer ---- */

typedef struct mk_word {
	int *sym;       /* token indices; -1 = a character outside the alphabet */
	int n;
	int freq;
} mk_word;

typedef struct mk_train {
	mk_tok_kind kind;
	char **tok;     /* token strings in creation order (alphabet, then merged) */
	int n_tok, cap_tok;
	mk_strset tokset;
	mk_word *word;
	int n_word, cap_word;
	mk_strset wordset; /* word text -> index, while counting */
	char **word_text;
	int (*merge)[2];   /* token indices */
	int n_merge, cap_merge;
	/* pair counting */
	uint64_t *pkey;
	long *pcount;
	size_t pcap;
} mk_train;

static loom_err add_token(mk_train *tr, const char *s, size_t len, int *idx)
{
	if (tr->n_tok == tr->cap_tok) {
		int cap = tr->cap_tok ? 2 * tr->cap_tok : 512;
		char **p = loom_realloc(tr->tok, (size_t)cap * sizeof *p);
		if (!p)
			return LOOM_ENOMEM;
		tr->tok = p;
		tr->cap_tok = cap;
	}
	char *c = loom_strndup(s, len);
	if (!c || set_put(&tr->tokset, c, tr->n_tok)) {
		loom_free(c);
		return LOOM_ENOMEM;
	}
	tr->tok[tr->n_tok] = c;
	*idx = tr->n_tok++;
	return LOOM_OK;
}

static void utf8_put(uint32_t cp, char *out, size_t *n)
{
	if (cp < 0x80) {
		out[(*n)++] = (char)cp;
	} else if (cp < 0x800) {
		out[(*n)++] = (char)(0xc0 | (cp >> 6));
		out[(*n)++] = (char)(0x80 | (cp & 0x3f));
	} else {
		out[(*n)++] = (char)(0xe0 | (cp >> 12));
		out[(*n)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[(*n)++] = (char)(0x80 | (cp & 0x3f));
	}
}

/* GPT-2's bytes_to_unicode (same table as common/tokenizer_decode.c). */
static uint32_t byte_cp(uint8_t b)
{
	if (b <= 0x20)
		return 256u + b;
	if (b >= 0x7f && b <= 0xa0)
		return 256u + 33 + (b - 0x7fu);
	if (b == 0xad)
		return 256u + 67;
	return b;
}

static size_t utf8_len(const char *s)
{
	uint8_t c = (uint8_t)*s;
	return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

/* Counts one word (its text); symbols are made later. */
static loom_err count_word(mk_train *tr, const char *s, size_t len)
{
	if (!len)
		return LOOM_OK;
	char *w = loom_strndup(s, len);
	if (!w)
		return LOOM_ENOMEM;
	int i = set_get(&tr->wordset, w);
	if (i >= 0) {
		tr->word[i].freq++;
		loom_free(w);
		return LOOM_OK;
	}
	if (tr->n_word == tr->cap_word) {
		int cap = tr->cap_word ? 2 * tr->cap_word : 256;
		mk_word *p = loom_realloc(tr->word, (size_t)cap * sizeof *p);
		char **q = p ? loom_realloc(tr->word_text, (size_t)cap * sizeof *q) : NULL;
		if (p)
			tr->word = p;
		if (!q) {
			loom_free(w);
			return LOOM_ENOMEM;
		}
		tr->word_text = q;
		tr->cap_word = cap;
	}
	if (set_put(&tr->wordset, w, tr->n_word)) {
		loom_free(w);
		return LOOM_ENOMEM;
	}
	tr->word_text[tr->n_word] = w;
	tr->word[tr->n_word++] = (mk_word){ .freq = 1 };
	return LOOM_OK;
}

/* SentencePiece words: "▁" + text with spaces as "▁", cut before each "▁"
 * and around newlines. */
static loom_err words_sp(mk_train *tr)
{
	size_t n = sizeof corpus - 1, start = 0, o = 0;
	char *norm = loom_malloc(3 * n + 4);
	loom_err rc = LOOM_OK;
	if (!norm)
		return LOOM_ENOMEM;
	memcpy(norm, "\xe2\x96\x81", 3);
	o = 3;
	for (size_t i = 0; i < n; i++) {
		if (corpus[i] == ' ') {
			memcpy(norm + o, "\xe2\x96\x81", 3);
			o += 3;
		} else {
			norm[o++] = corpus[i];
		}
	}
	for (size_t i = 0; i <= o && !rc; i++) {
		bool cut = i == o || norm[i] == '\n' || (i > start && !memcmp(norm + i, "\xe2\x96\x81", 3));
		if (!cut)
			continue;
		rc = count_word(tr, norm + start, i - start);
		start = i < o && norm[i] == '\n' ? i + 1 : i;
	}
	loom_free(norm);
	return rc;
}

/* Byte-level words: Llama-3's split regex, bytes mapped to printable chars. */
static loom_err words_bl(mk_train *tr)
{
	int err;
	PCRE2_SIZE eoff;
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)llama3_re, sizeof llama3_re - 1, PCRE2_UTF | PCRE2_UCP,
				       &err, &eoff, NULL);
	pcre2_match_data *md = re ? pcre2_match_data_create(2, NULL) : NULL;
	loom_err rc = LOOM_OK;
	size_t n = sizeof corpus - 1, pos = 0;
	char buf[512];
	if (!md) {
		rc = re ? LOOM_ENOMEM : loom_fail(LOOM_EINTERNAL, "mk_tokenizer: split regex does not compile");
		goto out;
	}
	while (pos < n && !rc) {
		if (pcre2_match(re, (PCRE2_SPTR)corpus, n, pos, 0, md, NULL) < 0)
			break;
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		size_t o = 0;
		for (size_t i = ov[0]; i < ov[1] && o + 2 < sizeof buf; i++)
			utf8_put(byte_cp((uint8_t)corpus[i]), buf, &o);
		rc = count_word(tr, buf, o);
		pos = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
	}
out:
	pcre2_match_data_free(md);
	pcre2_code_free(re);
	return rc;
}

/* The alphabet: the n_alpha most frequent characters of the words. */
static loom_err make_alphabet(mk_train *tr, int max_alpha)
{
	typedef struct { char s[5]; int freq; } ch;
	ch cs[256];
	int n = 0;
	for (int w = 0; w < tr->n_word; w++)
		for (const char *p = tr->word_text[w]; *p; p += utf8_len(p)) {
			size_t l = utf8_len(p);
			if ((uint8_t)*p < 0x20)
				continue;
			int k;
			for (k = 0; k < n; k++)
				if (!strncmp(cs[k].s, p, l) && cs[k].s[l] == '\0')
					break;
			if (k == n) {
				if (n == 256)
					continue;
				memcpy(cs[n].s, p, l);
				cs[n].s[l] = '\0';
				cs[n++].freq = 0;
			}
			cs[k].freq += tr->word[w].freq;
		}
	/* most frequent first; stable by first appearance */
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && cs[j].freq > cs[j - 1].freq; j--) {
			ch x = cs[j];
			cs[j] = cs[j - 1];
			cs[j - 1] = x;
		}
	for (int i = 0; i < n && i < max_alpha; i++) {
		int idx;
		if (add_token(tr, cs[i].s, strlen(cs[i].s), &idx))
			return LOOM_ENOMEM;
	}
	return LOOM_OK;
}

static loom_err make_symbols(mk_train *tr)
{
	for (int w = 0; w < tr->n_word; w++) {
		const char *s = tr->word_text[w];
		size_t len = strlen(s);
		mk_word *wd = &tr->word[w];
		wd->sym = loom_malloc((len + 1) * sizeof *wd->sym);
		if (!wd->sym)
			return LOOM_ENOMEM;
		for (const char *p = s; *p; p += utf8_len(p)) {
			char c[5] = { 0 };
			memcpy(c, p, utf8_len(p));
			wd->sym[wd->n++] = set_get(&tr->tokset, c);
		}
	}
	return LOOM_OK;
}

static inline uint64_t pkey(int a, int b)
{
	return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

/* Most frequent pair (count >= 2); ties go to the pair of older tokens. */
static bool best_pair(mk_train *tr, int *a, int *b)
{
	size_t mask = tr->pcap - 1;
	memset(tr->pcount, 0, tr->pcap * sizeof *tr->pcount);
	for (int w = 0; w < tr->n_word; w++) {
		const mk_word *wd = &tr->word[w];
		for (int i = 0; i + 1 < wd->n; i++) {
			if (wd->sym[i] < 0 || wd->sym[i + 1] < 0)
				continue;
			uint64_t k = pkey(wd->sym[i], wd->sym[i + 1]);
			size_t j = (size_t)((k * 0x9e3779b97f4a7c15ULL) >> 40) & mask;
			while (tr->pcount[j] && tr->pkey[j] != k)
				j = (j + 1) & mask;
			tr->pkey[j] = k;
			tr->pcount[j] += wd->freq;
		}
	}
	long best = 2; /* a pair seen once is not worth a merge */
	uint64_t bk = UINT64_MAX, border = UINT64_MAX;
	for (size_t j = 0; j < tr->pcap; j++) {
		long c = tr->pcount[j];
		if (c < best)
			continue;
		uint64_t pa = tr->pkey[j] >> 32, pb = (uint32_t)tr->pkey[j];
		uint64_t order = ((pa > pb ? pa : pb) << 42) | ((pa < pb ? pa : pb) << 21) | pa;
		if (c > best || order < border || bk == UINT64_MAX) {
			best = c;
			bk = tr->pkey[j];
			border = order;
		}
	}
	if (bk == UINT64_MAX)
		return false;
	*a = (int)(bk >> 32);
	*b = (int)(uint32_t)bk;
	return true;
}

static loom_err add_merge(mk_train *tr, int a, int b)
{
	if (tr->n_merge == tr->cap_merge) {
		int cap = tr->cap_merge ? 2 * tr->cap_merge : 512;
		int(*p)[2] = loom_realloc(tr->merge, (size_t)cap * sizeof *p);
		if (!p)
			return LOOM_ENOMEM;
		tr->merge = p;
		tr->cap_merge = cap;
	}
	tr->merge[tr->n_merge][0] = a;
	tr->merge[tr->n_merge][1] = b;
	tr->n_merge++;
	return LOOM_OK;
}

/* Merges (a, b) into the token for their concatenation; *fresh when new. */
static loom_err join(mk_train *tr, int a, int b, int *c, bool *fresh)
{
	size_t la = strlen(tr->tok[a]), lb = strlen(tr->tok[b]);
	char *s = loom_malloc(la + lb + 1);
	if (!s)
		return LOOM_ENOMEM;
	memcpy(s, tr->tok[a], la);
	memcpy(s + la, tr->tok[b], lb + 1);
	*c = set_get(&tr->tokset, s);
	*fresh = *c < 0;
	loom_err rc = *fresh ? add_token(tr, s, la + lb, c) : LOOM_OK;
	loom_free(s);
	return rc ? rc : add_merge(tr, a, b);
}

static void apply_merge(mk_train *tr, int a, int b, int c)
{
	for (int w = 0; w < tr->n_word; w++) {
		mk_word *wd = &tr->word[w];
		int o = 0;
		for (int i = 0; i < wd->n; i++) {
			if (i + 1 < wd->n && wd->sym[i] == a && wd->sym[i + 1] == b) {
				wd->sym[o++] = c;
				i++;
			} else {
				wd->sym[o++] = wd->sym[i];
			}
		}
		wd->n = o;
	}
}

/* Trains until n_new tokens were created (corpus merges, then padding). */
static loom_err train(mk_train *tr, int n_new, const char *const *avoid, int n_avoid)
{
	int made = 0, a, b, c;
	bool fresh;
	loom_err rc;
	tr->pcap = 1 << 14;
	tr->pkey = loom_malloc(tr->pcap * sizeof *tr->pkey);
	tr->pcount = loom_malloc(tr->pcap * sizeof *tr->pcount);
	if (!tr->pkey || !tr->pcount)
		return LOOM_ENOMEM;
	while (made < n_new && best_pair(tr, &a, &b)) {
		if ((rc = join(tr, a, b, &c, &fresh)))
			return rc;
		apply_merge(tr, a, b, c);
		made += fresh;
	}
	/* padding: pairs of existing tokens along the diagonals i + j = d */
	int base = tr->n_tok;
	for (int d = 0; made < n_new; d++)
		for (int i = 0; i <= d && made < n_new; i++) {
			int j = d - i;
			if (i >= base || j >= base)
				continue;
			size_t la = strlen(tr->tok[i]), lb = strlen(tr->tok[j]);
			char s[256];
			if (la + lb >= sizeof s)
				continue;
			memcpy(s, tr->tok[i], la);
			memcpy(s + la, tr->tok[j], lb + 1);
			bool skip = set_get(&tr->tokset, s) >= 0;
			for (int k = 0; k < n_avoid; k++)
				skip = skip || !strcmp(s, avoid[k]);
			if (skip)
				continue;
			if ((rc = join(tr, i, j, &c, &fresh)))
				return rc;
			made += fresh;
		}
	return LOOM_OK;
}

static void train_fini(mk_train *tr)
{
	for (int i = 0; i < tr->n_tok; i++)
		loom_free(tr->tok[i]);
	for (int i = 0; i < tr->n_word; i++) {
		loom_free(tr->word[i].sym);
		loom_free(tr->word_text[i]);
	}
	loom_free(tr->tok);
	loom_free(tr->word);
	loom_free(tr->word_text);
	loom_free(tr->tokset.key);
	loom_free(tr->tokset.val);
	loom_free(tr->wordset.key);
	loom_free(tr->wordset.val);
	loom_free(tr->merge);
	loom_free(tr->pkey);
	loom_free(tr->pcount);
}

/* ---- JSON ---- */

static json_t *added_token(int id, const char *content)
{
	return json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content", content,
			 "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 0, "special", 1);
}

static json_t *template_post(const char *bos, int bos_id)
{
	return json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
			 "type", "TemplateProcessing",
			 "single", "SpecialToken", "id", bos, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
			 "pair", "SpecialToken", "id", bos, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
			 "SpecialToken", "id", bos, "type_id", 1, "Sequence", "id", "B", "type_id", 1,
			 "special_tokens", bos, "id", bos, "ids", bos_id, "tokens", bos);
}

/* id of token index i in the final vocab */
static int sp_id(int i, int n_alpha, int n_tok)
{
	return i < n_alpha ? 259 + (n_tok - n_alpha) + i : 259 + (i - n_alpha);
}

static json_t *build_sp(mk_train *tr, int n_alpha)
{
	json_t *vocab = json_object(), *merges = json_array();
	char b[8];
	if (!vocab || !merges)
		goto fail;
	json_object_set_new(vocab, "<unk>", json_integer(0));
	json_object_set_new(vocab, "<s>", json_integer(1));
	json_object_set_new(vocab, "</s>", json_integer(2));
	for (int i = 0; i < 256; i++) {
		snprintf(b, sizeof b, "<0x%02X>", i);
		json_object_set_new(vocab, b, json_integer(3 + i));
	}
	for (int i = n_alpha; i < tr->n_tok; i++)
		json_object_set_new(vocab, tr->tok[i], json_integer(sp_id(i, n_alpha, tr->n_tok)));
	for (int i = 0; i < n_alpha; i++)
		json_object_set_new(vocab, tr->tok[i], json_integer(sp_id(i, n_alpha, tr->n_tok)));
	for (int m = 0; m < tr->n_merge; m++) {
		const char *x = tr->tok[tr->merge[m][0]], *y = tr->tok[tr->merge[m][1]];
		size_t lx = strlen(x), ly = strlen(y);
		char *s = loom_malloc(lx + ly + 2);
		if (!s)
			goto fail;
		memcpy(s, x, lx);
		s[lx] = ' ';
		memcpy(s + lx + 1, y, ly + 1);
		json_array_append_new(merges, json_string(s));
		loom_free(s);
	}
	json_t *root = json_pack(
		"{s:s, s:n, s:n, s:[o, o, o],"
		" s:{s:s, s:[{s:s, s:s}, {s:s, s:{s:s}, s:s}]},"
		" s:n, s:o,"
		" s:{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}, {s:s, s:s, s:i, s:i}]},"
		" s:{s:s, s:n, s:s, s:n, s:n, s:b, s:b, s:b, s:o, s:o}}",
		"version", "1.0", "truncation", "padding", "added_tokens",
		added_token(0, "<unk>"), added_token(1, "<s>"), added_token(2, "</s>"),
		"normalizer", "type", "Sequence", "normalizers", "type", "Prepend", "prepend", "\xe2\x96\x81",
		"type", "Replace", "pattern", "String", " ", "content", "\xe2\x96\x81",
		"pre_tokenizer", "post_processor", template_post("<s>", 1),
		"decoder", "type", "Sequence", "decoders", "type", "Replace", "pattern", "String", "\xe2\x96\x81",
		"content", " ", "type", "ByteFallback", "type", "Fuse", "type", "Strip", "content", " ",
		"start", 1, "stop", 0,
		"model", "type", "BPE", "dropout", "unk_token", "<unk>", "continuing_subword_prefix",
		"end_of_word_suffix", "fuse_unk", 1, "byte_fallback", 1, "ignore_merges", 0, "vocab", vocab,
		"merges", merges);
	return root;
fail:
	json_decref(vocab);
	json_decref(merges);
	return NULL;
}

static json_t *build_bl(mk_train *tr, int vocab_n)
{
	json_t *vocab = json_object(), *merges = json_array();
	if (!vocab || !merges)
		goto fail;
	for (int i = 0; i < tr->n_tok; i++)
		json_object_set_new(vocab, tr->tok[i], json_integer(i));
	for (int m = 0; m < tr->n_merge; m++)
		json_array_append_new(merges, json_pack("[s, s]", tr->tok[tr->merge[m][0]], tr->tok[tr->merge[m][1]]));
	json_t *root = json_pack(
		"{s:s, s:n, s:n, s:[o, o], s:n,"
		" s:{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]},"
		" s:{s:s, s:[{s:s, s:b, s:b, s:b}, o]},"
		" s:{s:s, s:b, s:b, s:b},"
		" s:{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}}",
		"version", "1.0", "truncation", "padding", "added_tokens",
		added_token(vocab_n - 2, "<|begin_of_text|>"), added_token(vocab_n - 1, "<|end_of_text|>"),
		"normalizer",
		"pre_tokenizer", "type", "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex", llama3_re,
		"behavior", "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
		"use_regex", 0,
		"post_processor", "type", "Sequence", "processors", "type", "ByteLevel", "add_prefix_space", 1,
		"trim_offsets", 0, "use_regex", 1, template_post("<|begin_of_text|>", vocab_n - 2),
		"decoder", "type", "ByteLevel", "add_prefix_space", 1, "trim_offsets", 1, "use_regex", 1,
		"model", "type", "BPE", "dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
		"fuse_unk", 0, "byte_fallback", 0, "ignore_merges", 1, "vocab", vocab, "merges", merges);
	return root;
fail:
	json_decref(vocab);
	json_decref(merges);
	return NULL;
}

loom_err mk_tokenizer_json(mk_tok_kind kind, int vocab, char **json, size_t *len, int32_t *bos,
			   int32_t *eos)
{
	mk_train tr = { .kind = kind };
	json_t *root = NULL;
	char *text = NULL;
	loom_err rc = LOOM_OK;
	int n_alpha = 0;
	*json = NULL;
	*len = 0;
	if (kind != MK_TOK_SP && kind != MK_TOK_BYTELEVEL)
		return loom_fail(LOOM_EINVAL, "mk_tokenizer: unknown tokenizer kind %d", (int)kind);
	int min = kind == MK_TOK_SP ? MK_SP_MIN : MK_BL_MIN;
	if (vocab < min || vocab > MK_VOCAB_MAX)
		return loom_fail(LOOM_EINVAL, "mk_tokenizer: vocab %d is outside %d..%d for the %s tokenizer", vocab,
				 min, MK_VOCAB_MAX, kind == MK_TOK_SP ? "sentencepiece" : "byte-level");
	if (kind == MK_TOK_SP) {
		if ((rc = words_sp(&tr)) || (rc = make_alphabet(&tr, (vocab - 259) / 2)))
			goto out;
		n_alpha = tr.n_tok;
		if ((rc = make_symbols(&tr)))
			goto out;
		static const char *const avoid[] = { "<unk>", "<s>", "</s>" };
		rc = train(&tr, vocab - 259 - n_alpha, avoid, 3);
	} else {
		for (int b = 0; b < 256; b++) {
			char s[4];
			size_t n = 0;
			int idx;
			utf8_put(byte_cp((uint8_t)b), s, &n);
			if ((rc = add_token(&tr, s, n, &idx)))
				goto out;
		}
		if ((rc = words_bl(&tr)) || (rc = make_symbols(&tr)))
			goto out;
		static const char *const avoid[] = { "<|begin_of_text|>", "<|end_of_text|>" };
		rc = train(&tr, vocab - 258, avoid, 2);
	}
	if (rc)
		goto out;
	root = kind == MK_TOK_SP ? build_sp(&tr, n_alpha) : build_bl(&tr, vocab);
	char *s = root ? json_dumps(root, JSON_INDENT(1)) : NULL;
	if (!s) {
		rc = LOOM_ENOMEM;
		goto out;
	}
	*len = strlen(s);
	text = loom_malloc(*len + 1);
	if (text)
		memcpy(text, s, *len + 1);
	free(s);
	if (!text) {
		rc = LOOM_ENOMEM;
		goto out;
	}
	*json = text;
	*bos = kind == MK_TOK_SP ? 1 : vocab - 2;
	*eos = kind == MK_TOK_SP ? 2 : vocab - 1;
out:
	if (rc == LOOM_ENOMEM)
		loom_fail(rc, "mk_tokenizer: out of memory");
	if (rc)
		*len = 0;
	json_decref(root);
	train_fini(&tr);
	return rc;
}
