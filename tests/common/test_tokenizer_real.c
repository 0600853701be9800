/*
 * tests/common/test_tokenizer_real.c — common/tokenizer on the tokenizer.json
 * files real models ship (Llama 3.x, Qwen2.5, Mistral v0.2, Phi-3; see
 * shared/FIXTURES.md), held against an independent reference.
 *
 * The reference is tests/common/bpe_oracle.py, a Python encoder written from
 * Hugging Face tokenizers' Rust code (no loom code or data), run with
 * Debian's /usr/bin/python3 and python3-regex; the test skips, saying so,
 * when either is missing. The oracle is itself checked first against ids
 * published elsewhere: llama.cpp's tokenizer test vectors
 * (models/ggml-vocab-{gpt-2,llama-bpe,qwen2,phi-3}.gguf.out, produced with
 * Hugging Face's tokenizers; the oracle matched all 46 of each file when it
 * was written), GPT-2's "Hello world" from FIXTURES.md and Mistral's
 * documented "[INST]" ids.
 *
 * For every line of tests/common/corpus_tokenizer.txt and each file: loom's
 * ids with and without add_special equal the oracle's; loom's decode of its
 * ids equals the oracle's (Hugging Face's decoders); the stream decoder
 * equals decode; for the byte-level files decode(encode(x)) == x (Qwen: ==
 * NFC(x), which is x for all lines that are already NFC). Agreement counts
 * are printed per file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/tokenizer.h"
#include "tests/support/harness.h"

#define PYTHON "/usr/bin/python3"
#define ORACLE "tests/common/bpe_oracle.py"
#define CORPUS "tests/common/corpus_tokenizer.txt"
#define N_ELEM(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_SHOWN 6 /* mismatches printed per file and check */

/* ---- the oracle ---- */

/* One corpus case as the oracle saw it (all malloc'ed). */
typedef struct oracle_case {
	char *text;        /* the unescaped text, NUL-terminated */
	size_t len;
	int32_t *sp;       /* ids with add_special */
	size_t n_sp;
	int32_t *plain;    /* ids without */
	size_t n_plain;
	char *dec;         /* Hugging Face's decode of plain (skip_special false) */
	size_t dec_len;
} oracle_case;

static const char *skip_reason(void)
{
	if (access(PYTHON, X_OK) != 0)
		return PYTHON " is missing (Debian's python3)";
	if (system(PYTHON " -c 'import regex' 2>/dev/null") != 0)
		return "the regex module of " PYTHON " is missing (apt-get install python3-regex)";
	return NULL;
}

#define SKIP_WITHOUT_ORACLE()                                                           \
	do {                                                                            \
		const char *why_ = skip_reason();                                       \
		if (why_) {                                                             \
			fprintf(stderr, "test_tokenizer_real: SKIP: %s\n", why_);       \
			skip();                                                         \
		}                                                                       \
	} while (0)

static char *hex_to_bytes(const char *h, size_t hn, size_t *len)
{
	char *out = malloc(hn / 2 + 1);
	assert_non_null(out);
	assert_int_equal(hn % 2, 0);
	for (size_t i = 0; i < hn / 2; i++) {
		unsigned v;
		if (sscanf(h + 2 * i, "%2x", &v) != 1)
			fail_msg("oracle output: bad hex");
		out[i] = (char)v;
	}
	out[hn / 2] = '\0';
	*len = hn / 2;
	return out;
}

static int32_t *parse_ids(const char *s, size_t sn, size_t *n)
{
	int32_t *v = malloc((sn / 2 + 1) * sizeof *v);
	assert_non_null(v);
	size_t k = 0;
	const char *p = s, *end = s + sn;
	while (p < end) {
		char *q;
		long x = strtol(p, &q, 10);
		if (q == p)
			break;
		v[k++] = (int32_t)x;
		p = q;
	}
	*n = k;
	return v;
}

/* Reads a whole stream (popen'ed) into a malloc'ed NUL-terminated string. */
static char *slurp(FILE *f)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap);
	assert_non_null(buf);
	size_t k;
	while ((k = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += k;
		if (cap - len < 2) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
	}
	buf[len] = '\0';
	return buf;
}

/* Runs cmd (a shell line) and returns its output; fails the test on a
 * non-zero exit, naming the command. */
static char *run_capture(const char *cmd)
{
	FILE *f = popen(cmd, "r");
	if (!f)
		fail_msg("popen %s failed", cmd);
	char *out = slurp(f);
	int st = pclose(f);
	if (st != 0)
		fail_msg("%s: exit status %d", cmd, st);
	return out;
}

/* The oracle's reading of the corpus for tokenizer file json. */
static oracle_case *oracle_corpus(const char *json, size_t *n_out)
{
	char cmd[1024];
	snprintf(cmd, sizeof cmd, PYTHON " " ORACLE " --tsv '%s' < " CORPUS, json);
	char *out = run_capture(cmd);
	size_t cap = 64, n = 0;
	oracle_case *v = malloc(cap * sizeof *v);
	assert_non_null(v);
	for (char *line = out; *line;) {
		char *nl = strchr(line, '\n');
		assert_non_null(nl);
		char *col[4];
		col[0] = line;
		for (int c = 1; c < 4; c++) {
			col[c] = memchr(col[c - 1], '\t', (size_t)(nl - col[c - 1]));
			if (!col[c])
				fail_msg("oracle output line %zu has fewer than 4 columns", n + 1);
			col[c]++;
		}
		if (n == cap) {
			cap *= 2;
			v = realloc(v, cap * sizeof *v);
			assert_non_null(v);
		}
		oracle_case *o = &v[n++];
		o->text = hex_to_bytes(col[0], (size_t)(col[1] - 1 - col[0]), &o->len);
		o->sp = parse_ids(col[1], (size_t)(col[2] - 1 - col[1]), &o->n_sp);
		o->plain = parse_ids(col[2], (size_t)(col[3] - 1 - col[2]), &o->n_plain);
		o->dec = hex_to_bytes(col[3], (size_t)(nl - col[3]), &o->dec_len);
		line = nl + 1;
	}
	free(out);
	*n_out = n;
	return v;
}

static void oracle_free(oracle_case *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].text);
		free(v[i].sp);
		free(v[i].plain);
		free(v[i].dec);
	}
	free(v);
}

/* Appends arg to the shell line cmd, single-quoted. */
static void sh_quote_cat(char *cmd, size_t cap, const char *arg)
{
	size_t k = strlen(cmd);
	assert_true(k + 4 * strlen(arg) + 3 < cap);
	cmd[k++] = '\'';
	for (const char *p = arg; *p; p++) {
		if (*p == '\'') {
			memcpy(cmd + k, "'\\''", 4);
			k += 4;
		} else {
			cmd[k++] = *p;
		}
	}
	cmd[k++] = '\'';
	cmd[k] = '\0';
}

/* ---- helpers ---- */

static loom_tok *load(const char *rel)
{
	loom_tok *t = NULL;
	loom_err rc = loom_tok_load(lt_shared_path(rel), &t);
	if (rc)
		fail_msg("load %s: %s: %s", rel, loom_strerror(rc), loom_errmsg());
	return t;
}

static bool same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
	return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

static void print_ids(const char *label, const int32_t *v, size_t n)
{
	fprintf(stderr, "    %-7s", label);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, " %d", v[i]);
	fprintf(stderr, "\n");
}

/* The text with controls escaped, for messages. */
static void print_text(const char *what, const char *s, size_t n)
{
	fprintf(stderr, "    %s \"", what);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '\n')
			fprintf(stderr, "\\n");
		else if (c == '\t')
			fprintf(stderr, "\\t");
		else if (c < 0x20 || c == 0x7f)
			fprintf(stderr, "\\x%02x", c);
		else
			fputc(c, stderr);
	}
	fprintf(stderr, "\"\n");
}

/* Decodes via the stream, one id at a time; the concatenation (malloc'ed). */
static char *stream_all(const loom_tok *t, const int32_t *ids, size_t n, size_t *len)
{
	loom_tok_stream *s;
	assert_int_equal(loom_tok_stream_create(t, false, true, &s), LOOM_OK);
	size_t cap = 256, k = 0;
	char *acc = malloc(cap);
	assert_non_null(acc);
	for (size_t i = 0; i <= n; i++) {
		const char *out;
		size_t m;
		if (i < n)
			assert_int_equal(loom_tok_stream_push(s, ids[i], &out, &m), LOOM_OK);
		else
			assert_int_equal(loom_tok_stream_finish(s, &out, &m), LOOM_OK);
		if (k + m + 1 > cap) {
			cap = 2 * (k + m + 1);
			acc = realloc(acc, cap);
			assert_non_null(acc);
		}
		memcpy(acc + k, out, m);
		k += m;
	}
	loom_tok_stream_destroy(s);
	*len = k;
	return acc;
}

/* ---- the oracle's own check: ids published elsewhere ---- */

typedef struct known {
	const char *file;  /* under shared/ */
	const char *text;  /* corpus escapes (see corpus_tokenizer.txt) */
	bool add_special;
	int32_t ids[40];
	size_t n;
} known;

#define LLAMA3 "fixtures/llama3.2-1b-instruct/tokenizer.json"
#define QWEN25 "fixtures/qwen2.5-0.5b-instruct/tokenizer.json"
#define MISTRAL "fixtures/mistral-7b-instruct-v0.2/tokenizer.json"
#define PHI3 "fixtures/phi-3-mini-4k-instruct/tokenizer.json"
#define GPT2 "fixtures/gpt2-tokenizer/tokenizer.json"

/* llama.cpp: models/ggml-vocab-<name>.gguf.inp/.out (ids without specials);
 * GPT-2's "Hello world" also in FIXTURES.md; Mistral's [INST] as its docs
 * show it. */
static const known knowns[] = {
	{ GPT2, "Hello world", false, { 15496, 995 }, 2 },
	{ GPT2, "\\sHello world", false, { 18435, 995 }, 2 },
	{ GPT2, "Hello, world!", false, { 15496, 11, 995, 0 }, 4 },
	{ GPT2, "\\s\\s\\sHello", false, { 220, 220, 18435 }, 3 },
	{ GPT2, "333333333", false, { 24840, 2091, 20370 }, 3 },
	{ LLAMA3, "Hello world", true, { 128000, 9906, 1917 }, 3 },
	{ LLAMA3, "\\sHello World!", false, { 22691, 4435, 0 }, 3 },
	{ LLAMA3, "333333333", false, { 8765, 8765, 8765 }, 3 },
	{ LLAMA3, "\\n =", false, { 198, 284 }, 2 },
	{ LLAMA3, "' era", false, { 6, 11639 }, 2 },
	{ LLAMA3, "\\s\\s\\s\\sHello\\n\\s\\s\\s\\sHello", false, { 262, 22691, 198, 262, 22691 }, 5 },
	{ LLAMA3, "Hello, y'all! How are you \xf0\x9f\x98\x81 ?\xe6\x88\x91\xe6\x83\xb3\xe5\x9c\xa8"
		  "apple\xe5\xb7\xa5\xe4\xbd\x9c" "1314151\xe5\xa4\xa9\xef\xbd\x9e", false,
	  { 9906, 11, 379, 65948, 0, 2650, 527, 499, 27623, 223, 949, 37046, 101067, 19000, 23182,
	    102301, 9263, 18136, 16, 36827, 21909 }, 21 },
	{ QWEN25, "Hello world", true, { 9707, 1879 }, 2 },
	{ QWEN25, "\\sHello World!", false, { 21927, 4337, 0 }, 3 },
	{ QWEN25, "333", false, { 18, 18, 18 }, 3 },
	{ QWEN25, "' era", false, { 6, 11385 }, 2 },
	{ QWEN25, "Hello, y'all! How are you \xf0\x9f\x98\x81 ?\xe6\x88\x91\xe6\x83\xb3\xe5\x9c\xa8"
		  "apple\xe5\xb7\xa5\xe4\xbd\x9c" "1314151\xe5\xa4\xa9\xef\xbd\x9e", false,
	  { 9707, 11, 379, 64848, 0, 2585, 525, 498, 26525, 223, 937, 104100, 18493, 22377, 99257, 16,
	    18, 16, 19, 16, 20, 16, 35727, 21216 }, 24 },
	{ PHI3, "Hello world", false, { 15043, 3186 }, 2 },
	{ PHI3, "\\sHello world", false, { 29871, 15043, 3186 }, 3 },
	{ PHI3, "\\n =", false, { 29871, 13, 353 }, 3 },
	{ PHI3, "\\t", false, { 29871, 12 }, 2 },
	{ PHI3, "\\s\\s\\s\\sHello\\n\\s\\s\\s\\sHello", false, { 268, 15043, 13, 1678, 15043 }, 5 },
	{ MISTRAL, "[INST]", true, { 1, 733, 16289, 28793 }, 4 },
};

static void oracle_known_ids(void **state)
{
	(void)state;
	SKIP_WITHOUT_ORACLE();
	int bad = 0;
	/* one oracle run per file (the table lists each file's entries together) */
	for (size_t i = 0; i < N_ELEM(knowns);) {
		size_t j = i;
		char cmd[4096];
		snprintf(cmd, sizeof cmd, PYTHON " " ORACLE " --tsv '%s'", lt_shared_path(knowns[i].file));
		for (; j < N_ELEM(knowns) && !strcmp(knowns[j].file, knowns[i].file); j++) {
			strcat(cmd, " -e ");
			sh_quote_cat(cmd, sizeof cmd, knowns[j].text);
		}
		char *out = run_capture(cmd), *line = out;
		for (size_t k = i; k < j; k++) {
			char *nl = strchr(line, '\n'), *c1, *c2, *c3;
			assert_non_null(nl);
			c1 = strchr(line, '\t');
			assert_non_null(c1);
			c2 = strchr(c1 + 1, '\t');
			assert_non_null(c2);
			c3 = strchr(c2 + 1, '\t');
			assert_non_null(c3);
			size_t n;
			int32_t *got = knowns[k].add_special ? parse_ids(c1 + 1, (size_t)(c2 - c1 - 1), &n)
							     : parse_ids(c2 + 1, (size_t)(c3 - c2 - 1), &n);
			if (!same_ids(got, n, knowns[k].ids, knowns[k].n)) {
				fprintf(stderr, "oracle disagrees with the published ids on %s \"%s\"\n", knowns[k].file,
					knowns[k].text);
				print_ids("want", knowns[k].ids, knowns[k].n);
				print_ids("oracle", got, n);
				bad++;
			}
			free(got);
			line = nl + 1;
		}
		free(out);
		i = j;
	}
	assert_int_equal(bad, 0);
}

/* loom gives the same published ids. */
static void loom_known_ids(void **state)
{
	(void)state;
	int bad = 0;
	loom_tok *t = NULL;
	for (size_t i = 0; i < N_ELEM(knowns); i++) {
		const known *k = &knowns[i];
		char text[256];
		size_t n = 0;
		for (const char *p = k->text; *p; p++) { /* the escapes the table uses */
			if (*p == '\\') {
				p++;
				text[n++] = *p == 's' ? ' ' : *p == 'n' ? '\n' : *p == 't' ? '\t' : *p;
			} else {
				text[n++] = *p;
			}
		}
		if (i == 0 || strcmp(k->file, knowns[i - 1].file)) {
			loom_tok_free(t);
			t = load(k->file);
		}
		int32_t *ids;
		size_t m;
		assert_int_equal(loom_tok_encode(t, text, n, k->add_special, &ids, &m), LOOM_OK);
		if (!same_ids(ids, m, k->ids, k->n)) {
			fprintf(stderr, "loom disagrees with the published ids on %s \"%s\"\n", k->file, k->text);
			print_ids("want", k->ids, k->n);
			print_ids("loom", ids, m);
			bad++;
		}
		loom_free(ids);
	}
	loom_tok_free(t);
	assert_int_equal(bad, 0);
}

/* ---- the corpus, loom against the oracle ---- */

/* identity: decode(encode(x)) must give x back for every line whose oracle
 * decode is x (all of them for Llama 3; the NFC ones for Qwen). */
static void corpus_agrees(const char *rel, bool identity)
{
	SKIP_WITHOUT_ORACLE();
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	loom_tok *t = load(rel);
	size_t n;
	oracle_case *v = oracle_corpus(lt_shared_path(rel), &n);
	assert_true(n >= 200);
	size_t ok_sp = 0, ok_plain = 0, ok_dec = 0, ok_stream = 0, ok_x = 0, n_x = 0;
	int shown = 0;
	for (size_t i = 0; i < n; i++) {
		const oracle_case *o = &v[i];
		int32_t *sp, *plain;
		size_t n_sp, n_plain;
		loom_err rc = loom_tok_encode(t, o->text, o->len, true, &sp, &n_sp);
		if (rc)
			fail_msg("%s: encode of corpus case %zu: %s", rel, i + 1, loom_errmsg());
		assert_int_equal(loom_tok_encode(t, o->text, o->len, false, &plain, &n_plain), LOOM_OK);
		bool a = same_ids(sp, n_sp, o->sp, o->n_sp);
		bool b = same_ids(plain, n_plain, o->plain, o->n_plain);
		ok_sp += a;
		ok_plain += b;
		if ((!a || !b) && shown++ < MAX_SHOWN) {
			fprintf(stderr, "%s: case %zu: loom and the oracle disagree\n", rel, i + 1);
			print_text("text", o->text, o->len);
			print_ids("oracle", o->plain, o->n_plain);
			print_ids("loom", plain, n_plain);
			if (!a) {
				print_ids("oracle+", o->sp, o->n_sp);
				print_ids("loom+", sp, n_sp);
			}
		}

		char *back;
		size_t back_len;
		assert_int_equal(loom_tok_decode(t, plain, n_plain, false, &back, &back_len), LOOM_OK);
		bool d = back_len == o->dec_len && !memcmp(back, o->dec, back_len);
		ok_dec += d;
		if (!d && shown++ < MAX_SHOWN) {
			fprintf(stderr, "%s: case %zu: decode differs from Hugging Face's\n", rel, i + 1);
			print_text("text", o->text, o->len);
			print_text("oracle", o->dec, o->dec_len);
			print_text("loom", back, back_len);
		}
		size_t s_len;
		char *s = stream_all(t, plain, n_plain, &s_len);
		ok_stream += s_len == back_len && !memcmp(s, back, s_len);
		free(s);
		if (o->dec_len == o->len && !memcmp(o->dec, o->text, o->len)) {
			n_x++;
			ok_x += back_len == o->len && !memcmp(back, o->text, o->len);
		}
		loom_free(back);
		loom_free(sp);
		loom_free(plain);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
	fprintf(stderr,
		"test_tokenizer_real: %s: %zu/%zu lines agree with add_special, %zu/%zu without; "
		"decode %zu/%zu as Hugging Face's, stream %zu/%zu; decode(encode(x)) == x on %zu/%zu "
		"(%zu lines the file's normalizer or added tokens change) [%.2f s]\n",
		rel, ok_sp, n, ok_plain, n, ok_dec, n, ok_stream, n, ok_x, n_x, n - n_x, secs);
	assert_int_equal(ok_sp, n);
	assert_int_equal(ok_plain, n);
	assert_int_equal(ok_dec, n);
	assert_int_equal(ok_stream, n);
	assert_int_equal(ok_x, n_x);
	if (identity)
		assert_int_equal(n_x, n);
	oracle_free(v, n);
	loom_tok_free(t);
}

static void corpus_llama3(void **state)
{
	(void)state;
	corpus_agrees(LLAMA3, true);
}

static void corpus_qwen25(void **state)
{
	(void)state;
	corpus_agrees(QWEN25, false);
}

static void corpus_mistral(void **state)
{
	(void)state;
	corpus_agrees(MISTRAL, false);
}

static void corpus_phi3(void **state)
{
	(void)state;
	corpus_agrees(PHI3, false);
}

static void corpus_gpt2(void **state)
{
	(void)state;
	corpus_agrees(GPT2, true);
}

/* ---- stop tokens the files name ---- */

typedef struct stop_tok {
	const char *file;
	const char *piece;
	int32_t id;
	bool special;   /* as the file's added_tokens entry says */
} stop_tok;

static const stop_tok stops[] = {
	/* generation_config.json eos_token_id [128001, 128008, 128009]; BOS 128000 */
	{ LLAMA3, "<|begin_of_text|>", 128000, true },
	{ LLAMA3, "<|end_of_text|>", 128001, true },
	{ LLAMA3, "<|eom_id|>", 128008, true },
	{ LLAMA3, "<|eot_id|>", 128009, true },
	/* eos_token_id [151645, 151643] */
	{ QWEN25, "<|im_end|>", 151645, true },
	{ QWEN25, "<|endoftext|>", 151643, true },
	{ QWEN25, "<|im_start|>", 151644, true },
	{ QWEN25, "<|repo_name|>", 151663, false },
	{ MISTRAL, "<s>", 1, true },
	{ MISTRAL, "</s>", 2, true },
	{ MISTRAL, "<unk>", 0, true },
	/* tokenizer_config eos "<|endoftext|>"; the template ends turns with <|end|> */
	{ PHI3, "<|endoftext|>", 32000, true },
	{ PHI3, "<|end|>", 32007, true },
	{ PHI3, "<|user|>", 32010, true },
	{ PHI3, "</s>", 2, false },
	{ GPT2, "<|endoftext|>", 50256, true },
};

static void stop_tokens(void **state)
{
	(void)state;
	const char *cur = NULL;
	loom_tok *t = NULL;
	for (size_t i = 0; i < N_ELEM(stops); i++) {
		const stop_tok *s = &stops[i];
		if (!cur || strcmp(cur, s->file)) {
			loom_tok_free(t);
			t = load(s->file);
			cur = s->file;
		}
		if (loom_tok_id(t, s->piece) != s->id)
			fail_msg("%s: loom_tok_id(\"%s\") = %d, want %d", s->file, s->piece, loom_tok_id(t, s->piece),
				 s->id);
		if (loom_tok_is_special(t, s->id) != s->special)
			fail_msg("%s: loom_tok_is_special(%d \"%s\") is %d, the file says %d", s->file, s->id, s->piece,
				 loom_tok_is_special(t, s->id), s->special);
		/* the piece in text is that one id */
		int32_t *ids;
		size_t n;
		assert_int_equal(loom_tok_encode(t, s->piece, strlen(s->piece), false, &ids, &n), LOOM_OK);
		assert_int_equal(n, 1);
		assert_int_equal(ids[0], s->id);
		loom_free(ids);
	}
	loom_tok_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(oracle_known_ids),
		cmocka_unit_test(loom_known_ids),
		cmocka_unit_test(corpus_llama3),
		cmocka_unit_test(corpus_qwen25),
		cmocka_unit_test(corpus_mistral),
		cmocka_unit_test(corpus_phi3),
		cmocka_unit_test(corpus_gpt2),
		cmocka_unit_test(stop_tokens),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
