/*
 * common/tokenizer_bpe.c — text -> ids.
 *
 * Pipeline per call (all state lives in a tk_enc on the caller's stack, so a
 * loom_tok is shared read-only): check UTF-8; cut the text at added tokens
 * (leftmost, then longest); normalize each piece between them; split it
 * into words with the pre-tokenizer steps; run the BPE model on each word;
 * wrap with the post-processor's prefix/suffix when add_special.
 *
 * The BPE model is Hugging Face's: symbols start as one per character (or
 * per byte: byte-level mapping, <0xNN> byte fallback, fused <unk>), and
 * adjacent pairs merge lowest merge rank first, leftmost first among equal
 * ranks, driven by a binary heap of candidate pairs over a doubly linked
 * symbol list. A SentencePiece-style prompt has no pre-tokenizer, so the
 * whole prompt is one word: the heap keeps that O(n log n).
 */
#include <string.h>

#include "alloc.h"
#include "tokenizer_int.h"

typedef struct tk_buf {
	char *p;
	size_t len, cap;
} tk_buf;

/* A list of words: byte ranges of buf. */
typedef struct tk_words {
	tk_buf buf;
	size_t *off, *len;
	size_t n, cap;
} tk_words;

typedef struct tk_cand {
	int32_t rank, pos, id;
} tk_cand;

typedef struct tk_enc {
	const loom_tok *t;
	int32_t *ids;           /* output */
	size_t n_ids, cap_ids;
	tk_buf norm;            /* normalized segment */
	tk_buf tmp;             /* scratch for normalization / mapping */
	tk_words w[2];          /* pre-tokenizer double buffer */
	pcre2_match_data *md;   /* per call: pcre2 match data is not shareable */
	/* BPE scratch, sized to the longest word */
	int32_t *sym, *prev, *next;
	tk_cand *heap;
	size_t n_heap, cap_sym, cap_heap;
} tk_enc;

static loom_err oom(const tk_enc *e)
{
	return loom_fail(LOOM_ENOMEM, "%s: out of memory while encoding", e->t->name);
}

static loom_err buf_reserve(tk_buf *b, size_t n)
{
	if (n <= b->cap)
		return LOOM_OK;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < n)
		cap *= 2;
	char *p = loom_realloc(b->p, cap);
	if (!p)
		return LOOM_ENOMEM;
	b->p = p;
	b->cap = cap;
	return LOOM_OK;
}

static loom_err buf_add(tk_buf *b, const char *s, size_t n)
{
	if (buf_reserve(b, b->len + n + 1))
		return LOOM_ENOMEM;
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	return LOOM_OK;
}

static loom_err emit(tk_enc *e, int32_t id)
{
	if (e->n_ids == e->cap_ids) {
		size_t cap = e->cap_ids ? 2 * e->cap_ids : 64;
		int32_t *p = loom_realloc(e->ids, cap * sizeof *p);
		if (!p)
			return oom(e);
		e->ids = p;
		e->cap_ids = cap;
	}
	e->ids[e->n_ids++] = id;
	return LOOM_OK;
}

static void words_clear(tk_words *w)
{
	w->buf.len = 0;
	w->n = 0;
}

/* Appends a word made of a (optional prefix) + s. */
static loom_err words_add(tk_words *w, const char *pre, size_t pre_len, const char *s, size_t n)
{
	if (!pre_len && !n)
		return LOOM_OK;
	if (w->n == w->cap) {
		size_t cap = w->cap ? 2 * w->cap : 64;
		size_t *o = loom_realloc(w->off, cap * sizeof *o);
		if (!o)
			return LOOM_ENOMEM;
		w->off = o;
		size_t *l = loom_realloc(w->len, cap * sizeof *l);
		if (!l)
			return LOOM_ENOMEM;
		w->len = l;
		w->cap = cap;
	}
	w->off[w->n] = w->buf.len;
	w->len[w->n] = pre_len + n;
	w->n++;
	if (buf_add(&w->buf, pre, pre_len) || buf_add(&w->buf, s, n))
		return LOOM_ENOMEM;
	return LOOM_OK;
}

static void enc_fini(tk_enc *e)
{
	loom_free(e->ids);
	loom_free(e->norm.p);
	loom_free(e->tmp.p);
	for (int i = 0; i < 2; i++) {
		loom_free(e->w[i].buf.p);
		loom_free(e->w[i].off);
		loom_free(e->w[i].len);
	}
	if (e->md)
		pcre2_match_data_free(e->md);
	loom_free(e->sym);
	loom_free(e->prev);
	loom_free(e->next);
	loom_free(e->heap);
}

/* ---- normalizer ---- */

static loom_err normalize(tk_enc *e, const char *s, size_t n)
{
	const loom_tok *t = e->t;
	tk_buf *cur = &e->norm, *tmp = &e->tmp;
	cur->len = 0;
	if (buf_add(cur, s, n))
		return oom(e);
	for (int i = 0; i < t->n_norm; i++) {
		const tk_norm *st = &t->norm[i];
		if (!cur->len)
			break; /* HF: normalizers leave an empty string empty */
		tmp->len = 0;
		if (st->kind == TK_NORM_PREPEND) {
			if (buf_add(tmp, st->with, st->with_len) || buf_add(tmp, cur->p, cur->len))
				return oom(e);
		} else if (st->kind == TK_NORM_NFC) {
			char *nfc;
			size_t nfc_len;
			if (tk_nfc(cur->p, cur->len, &nfc, &nfc_len))
				return oom(e);
			loom_err rc = buf_add(tmp, nfc, nfc_len);
			loom_free(nfc);
			if (rc)
				return oom(e);
		} else {
			size_t j = 0, from = 0;
			while (j + st->pat_len <= cur->len) {
				if (memcmp(cur->p + j, st->pat, st->pat_len) == 0) {
					if (buf_add(tmp, cur->p + from, j - from) ||
					    buf_add(tmp, st->with, st->with_len))
						return oom(e);
					j += st->pat_len;
					from = j;
				} else {
					j++;
				}
			}
			if (buf_add(tmp, cur->p + from, cur->len - from))
				return oom(e);
		}
		tk_buf x = *cur; /* swap contents: the result stays in e->norm */
		*cur = *tmp;
		*tmp = x;
	}
	return LOOM_OK;
}

/* ---- pre-tokenizer ---- */

/* Splits s by re: matches (and, when isolated, the gaps) become words. */
static loom_err split_re(tk_enc *e, tk_words *out, pcre2_code *re, bool keep_gaps, const char *s, size_t n)
{
	if (!e->md) {
		e->md = pcre2_match_data_create(2, NULL);
		if (!e->md)
			return oom(e);
	}
	size_t pos = 0, last = 0;
	while (pos <= n) {
		int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
		if (rc == PCRE2_ERROR_NOMATCH)
			break;
		if (rc < 0) {
			PCRE2_UCHAR msg[120];
			pcre2_get_error_message(rc, msg, sizeof msg);
			return loom_fail(LOOM_EINTERNAL, "%s: pre_tokenizer regex failed: %s", e->t->name,
					 (const char *)msg);
		}
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
		size_t ms = ov[0], me = ov[1];
		if (me == ms) { /* empty match: step over one character */
			pos = ms + 1;
			while (pos < n && ((uint8_t)s[pos] & 0xc0) == 0x80)
				pos++;
			if (ms >= n)
				break;
			continue;
		}
		if (keep_gaps && ms > last && words_add(out, NULL, 0, s + last, ms - last))
			return oom(e);
		if (words_add(out, NULL, 0, s + ms, me - ms))
			return oom(e);
		last = pos = me;
	}
	if (keep_gaps && last < n && words_add(out, NULL, 0, s + last, n - last))
		return oom(e);
	return LOOM_OK;
}

static loom_err metaspace(tk_enc *e, tk_words *out, const tk_pre *st, const char *s, size_t n, bool first)
{
	size_t rl = strlen(st->repl);
	tk_buf *b = &e->tmp;
	b->len = 0;
	/* HF prepends only when the text (spaces already replaced) does not
	 * start with the replacement */
	bool starts = (n && s[0] == ' ') || (n >= rl && memcmp(s, st->repl, rl) == 0);
	if (!starts && (st->scheme == TK_PREPEND_ALWAYS || (st->scheme == TK_PREPEND_FIRST && first)))
		if (buf_add(b, st->repl, rl))
			return oom(e);
	for (size_t i = 0; i < n; i++)
		if (s[i] == ' ' ? buf_add(b, st->repl, rl) : buf_add(b, s + i, 1))
			return oom(e);
	if (!st->split)
		return words_add(out, NULL, 0, b->p, b->len) ? oom(e) : LOOM_OK;
	size_t from = 0;
	for (size_t i = 1; i + rl <= b->len; i++)
		if (memcmp(b->p + i, st->repl, rl) == 0) {
			if (words_add(out, NULL, 0, b->p + from, i - from))
				return oom(e);
			from = i;
		}
	return words_add(out, NULL, 0, b->p + from, b->len - from) ? oom(e) : LOOM_OK;
}

static loom_err digits(tk_enc *e, tk_words *out, bool individual, const char *s, size_t n)
{
	size_t from = 0, i = 0;
	while (i < n) {
		if (s[i] < '0' || s[i] > '9') {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (!individual && j < n && s[j] >= '0' && s[j] <= '9')
			j++;
		if (words_add(out, NULL, 0, s + from, i - from) || words_add(out, NULL, 0, s + i, j - i))
			return oom(e);
		from = i = j;
	}
	return words_add(out, NULL, 0, s + from, n - from) ? oom(e) : LOOM_OK;
}

/* Runs the pre-tokenizer steps over s0; the words end in *res. */
static loom_err pretokenize(tk_enc *e, const char *s0, size_t n0, bool first, tk_words **res)
{
	const loom_tok *t = e->t;
	tk_words *cur = &e->w[0], *nxt = &e->w[1];
	loom_err rc;
	words_clear(cur);
	if (words_add(cur, NULL, 0, s0, n0))
		return oom(e);
	for (int i = 0; i < t->n_pre; i++) {
		const tk_pre *st = &t->pre[i];
		words_clear(nxt);
		for (size_t k = 0; k < cur->n; k++) {
			const char *s = cur->buf.p + cur->off[k];
			size_t n = cur->len[k];
			switch (st->kind) {
			case TK_PRE_SPLIT:
				rc = split_re(e, nxt, st->re, st->mode == TK_SPLIT_ISOLATED, s, n);
				break;
			case TK_PRE_BYTELEVEL: {
				bool pre = st->add_prefix_space && s[0] != ' ';
				if (!st->re) {
					rc = words_add(nxt, " ", pre, s, n) ? oom(e) : LOOM_OK;
					break;
				}
				if (pre) {
					e->tmp.len = 0;
					if (buf_add(&e->tmp, " ", 1) || buf_add(&e->tmp, s, n))
						return oom(e);
					s = e->tmp.p;
					n = e->tmp.len;
				}
				rc = split_re(e, nxt, st->re, true, s, n);
				break;
			}
			case TK_PRE_METASPACE:
				rc = metaspace(e, nxt, st, s, n, first && k == 0);
				break;
			default:
				rc = digits(e, nxt, st->individual, s, n);
				break;
			}
			if (rc)
				return rc;
		}
		tk_words *x = cur;
		cur = nxt;
		nxt = x;
	}
	*res = cur;
	return LOOM_OK;
}

/* ---- BPE ---- */

static inline bool cand_less(const tk_cand *a, const tk_cand *b)
{
	return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(tk_enc *e, tk_cand c)
{
	size_t i = e->n_heap++;
	while (i) {
		size_t p = (i - 1) / 2;
		if (!cand_less(&c, &e->heap[p]))
			break;
		e->heap[i] = e->heap[p];
		i = p;
	}
	e->heap[i] = c;
}

static tk_cand heap_pop(tk_enc *e)
{
	tk_cand top = e->heap[0], last = e->heap[--e->n_heap];
	size_t i = 0, n = e->n_heap;
	for (;;) {
		size_t l = 2 * i + 1, m = i;
		const tk_cand *best = &last;
		if (l < n && cand_less(&e->heap[l], best)) {
			m = l;
			best = &e->heap[l];
		}
		if (l + 1 < n && cand_less(&e->heap[l + 1], best))
			m = l + 1;
		if (m == i)
			break;
		e->heap[i] = e->heap[m];
		i = m;
	}
	if (n)
		e->heap[i] = last;
	return top;
}

static loom_err bpe_reserve(tk_enc *e, size_t n)
{
	if (n > e->cap_sym) {
		size_t cap = n < 64 ? 64 : n;
		int32_t *a = loom_realloc(e->sym, cap * sizeof *a);
		if (a)
			e->sym = a;
		int32_t *b = a ? loom_realloc(e->prev, cap * sizeof *b) : NULL;
		if (b)
			e->prev = b;
		int32_t *c = b ? loom_realloc(e->next, cap * sizeof *c) : NULL;
		if (!c)
			return oom(e);
		e->next = c;
		e->cap_sym = cap;
	}
	/* each merge pushes at most two candidates */
	if (3 * n > e->cap_heap) {
		tk_cand *h = loom_realloc(e->heap, 3 * n * sizeof *h);
		if (!h)
			return oom(e);
		e->heap = h;
		e->cap_heap = 3 * n;
	}
	return LOOM_OK;
}

static void try_pair(tk_enc *e, int32_t pos)
{
	int32_t nx = e->next[pos];
	if (nx < 0)
		return;
	const tk_merge *m = tk_pairmap_get(&e->t->merges, e->sym[pos], e->sym[nx]);
	if (m)
		heap_push(e, (tk_cand){ .rank = m->rank, .pos = pos, .id = m->id });
}

/* Initial symbols of one word. Returns their count in *n. */
static loom_err bpe_symbols(tk_enc *e, const char *s, size_t len, size_t *n)
{
	const loom_tok *t = e->t;
	size_t k = 0;
	bool last_unk = false;
	for (size_t i = 0; i < len;) {
		const uint8_t *u = (const uint8_t *)s + i;
		size_t cl = t->byte_level ? 1 : (*u < 0x80 ? 1 : tk_utf8_seq(u, len - i, NULL));
		int32_t id = -1;
		if (!cl)
			cl = 1; /* cannot happen: the input was validated */
		if (t->byte_level) {
			id = t->byte_piece[*u];
		} else {
			id = tk_strmap_get(&t->pieces, t, s + i, cl);
			if (id >= 0 && (t->flags[id] & TK_ADDED_ONLY))
				id = -1;
		}
		if (id < 0 && t->byte_fallback && !t->byte_level) {
			bool all = true;
			for (size_t j = 0; j < cl; j++)
				all = all && t->byte_piece[u[j]] >= 0;
			if (all) {
				for (size_t j = 0; j < cl; j++)
					e->sym[k++] = t->byte_piece[u[j]];
				last_unk = false;
				i += cl;
				continue;
			}
		}
		if (id < 0) {
			/* no piece: <unk> (fused with a preceding one), or dropped when there is none */
			if (t->unk_id >= 0 && !(last_unk && t->fuse_unk))
				e->sym[k++] = t->unk_id;
			last_unk = t->unk_id >= 0;
		} else {
			e->sym[k++] = id;
			last_unk = false;
		}
		i += cl;
	}
	*n = k;
	return LOOM_OK;
}

static loom_err bpe_word(tk_enc *e, const char *s, size_t len)
{
	const loom_tok *t = e->t;
	loom_err rc;
	size_t n;
	if (!len)
		return LOOM_OK;
	if (t->byte_level) {
		/* the word as the vocab spells it, for ignore_merges */
		if (t->ignore_merges) {
			e->tmp.len = 0;
			for (size_t i = 0; i < len; i++) {
				uint32_t cp = tk_byte_to_cp((uint8_t)s[i]);
				char c[2] = { (char)(0xc0 | (cp >> 6)), (char)(0x80 | (cp & 0x3f)) };
				if (cp < 0x80)
					c[0] = (char)cp;
				if (buf_add(&e->tmp, c, cp < 0x80 ? 1 : 2))
					return oom(e);
			}
			int32_t id = tk_strmap_get(&t->pieces, t, e->tmp.p, e->tmp.len);
			if (id >= 0 && !(t->flags[id] & TK_ADDED_ONLY))
				return emit(e, id);
		}
	} else if (t->ignore_merges) {
		int32_t id = tk_strmap_get(&t->pieces, t, s, len);
		if (id >= 0 && !(t->flags[id] & TK_ADDED_ONLY))
			return emit(e, id);
	}
	if ((rc = bpe_reserve(e, len)) || (rc = bpe_symbols(e, s, len, &n)))
		return rc;
	for (size_t i = 0; i < n; i++) {
		e->prev[i] = (int32_t)i - 1;
		e->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
	}
	e->n_heap = 0;
	for (size_t i = 0; i + 1 < n; i++)
		try_pair(e, (int32_t)i);
	while (e->n_heap) {
		tk_cand c = heap_pop(e);
		int32_t nx = e->next[c.pos];
		if (e->sym[c.pos] < 0 || nx < 0)
			continue;
		const tk_merge *m = tk_pairmap_get(&t->merges, e->sym[c.pos], e->sym[nx]);
		if (!m || m->id != c.id)
			continue;
		e->sym[c.pos] = c.id;
		e->sym[nx] = -1; /* dead */
		e->next[c.pos] = e->next[nx];
		if (e->next[nx] >= 0)
			e->prev[e->next[nx]] = c.pos;
		if (e->prev[c.pos] >= 0)
			try_pair(e, e->prev[c.pos]);
		try_pair(e, c.pos);
	}
	for (int32_t i = n ? 0 : -1; i >= 0; i = e->next[i])
		if ((rc = emit(e, e->sym[i])))
			return rc;
	return LOOM_OK;
}

/* ---- the pipeline ---- */

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static const tk_added *match_added(const tk_added_set *set, const char *s, size_t n)
{
	for (size_t j = 0; j < set->n; j++) {
		const tk_added *a = &set->v[j];
		if (a->len <= n && a->s[0] == s[0] && memcmp(a->s, s, a->len) == 0)
			return a;
	}
	return NULL;
}

/* Pre-tokenizer and model over s[0..n), which is already normalized. */
static loom_err encode_normalized(tk_enc *e, const char *s, size_t n, bool first)
{
	loom_err rc;
	tk_words *w = NULL;
	if (!n)
		return LOOM_OK;
	if ((rc = pretokenize(e, s, n, first, &w)))
		return rc;
	for (size_t k = 0; k < w->n; k++)
		if ((rc = bpe_word(e, w->buf.p + w->off[k], w->len[k])))
			return rc;
	return LOOM_OK;
}

/*
 * Cuts s[0..n) at the added tokens of set (leftmost, then longest; lstrip
 * and rstrip eat the whitespace beside a token) and passes the text between
 * them to next (raw stage: normalize, then the normalized stage).
 */
typedef loom_err (*tk_stage)(tk_enc *e, const char *s, size_t n, bool first);

static loom_err cut_added(tk_enc *e, const tk_added_set *set, const char *s, size_t n, bool first,
			  tk_stage next)
{
	loom_err rc;
	size_t seg = 0, i = 0;
	while (i < n) {
		const tk_added *a = set->first[(uint8_t)s[i]] ? match_added(set, s + i, n - i) : NULL;
		if (!a) {
			i++;
			continue;
		}
		size_t end = i;
		if (a->lstrip)
			while (end > seg && is_space(s[end - 1]))
				end--;
		if ((rc = next(e, s + seg, end - seg, first && seg == 0)) || (rc = emit(e, a->id)))
			return rc;
		i += a->len;
		if (a->rstrip)
			while (i < n && is_space(s[i]))
				i++;
		seg = i;
	}
	return next(e, s + seg, n - seg, first && seg == 0);
}

static loom_err encode_raw(tk_enc *e, const char *s, size_t n, bool first)
{
	loom_err rc;
	if (!n)
		return LOOM_OK;
	if ((rc = normalize(e, s, n)))
		return rc;
	/* e->norm stays untouched below: pretokenize and bpe use other buffers */
	return cut_added(e, &e->t->added_norm, e->norm.p, e->norm.len, first, encode_normalized);
}

loom_err tk_normalize(const loom_tok *t, const char *s, size_t n, char **out, size_t *out_len)
{
	tk_enc e = { .t = t };
	loom_err rc = normalize(&e, s, n);
	*out = NULL;
	*out_len = 0;
	if (!rc) {
		*out = loom_strndup(e.norm.p ? e.norm.p : "", e.norm.len);
		*out_len = e.norm.len;
		if (!*out)
			rc = oom(&e);
	}
	enc_fini(&e);
	return rc;
}

loom_err loom_tok_encode(const loom_tok *t, const char *text, size_t len, bool add_special,
			 int32_t **ids, size_t *n)
{
	tk_enc e = { .t = t };
	loom_err rc = LOOM_OK;
	*ids = NULL;
	*n = 0;
	if (len && !text)
		return loom_fail(LOOM_EINVAL, "%s: encode: NULL text", t->name);
	if (!tk_utf8_valid((const uint8_t *)text, len))
		return loom_fail(LOOM_EINVAL, "%s: encode: input is not valid UTF-8", t->name);
	if (add_special)
		for (size_t i = 0; i < t->n_prefix; i++)
			if ((rc = emit(&e, t->prefix[i])))
				goto out;
	if ((rc = cut_added(&e, &t->added_raw, text, len, true, encode_raw)))
		goto out;
	if (add_special)
		for (size_t k = 0; k < t->n_suffix; k++)
			if ((rc = emit(&e, t->suffix[k])))
				goto out;
	if (!e.ids && (rc = emit(&e, 0)) == LOOM_OK)
		e.n_ids = 0; /* a valid (empty) array for the caller */
	if (rc)
		goto out;
	*ids = e.ids;
	*n = e.n_ids;
	e.ids = NULL;
out:
	enc_fini(&e);
	return rc;
}
