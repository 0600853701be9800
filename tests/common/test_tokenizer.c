/*
 * tests/common/test_tokenizer.c — common/tokenizer against the real
 * tokenizer.json files in shared/ and the ones loom-mkmodel generates
 * (mk_tokenizer.c is compiled into this test).
 *
 * Expected ids not given by FIXTURES.md were produced by Hugging Face's own
 * tokenizers library (0.23, Rust) on the same files; the whole pipeline was
 * also compared with it over ~330 mixed texts per tokenizer while it was
 * written (ids identical; decode identical except that HF 0.23 does not skip
 * "normalized": true special tokens, which loom does).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/tokenizer.h"
#include "tests/support/harness.h"
#include "tools/mkmodel/mk_tokenizer.c"

#define N_ELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Texts every tokenizer must give back unchanged. */
static const char *const rt_texts[] = {
	"Hello world",
	"Once upon a time, there was a little girl named Lily.",
	"",
	" ",
	"   ",
	"  leading and trailing  ",
	"runs   of    spaces\t\ttabs\n\nnewlines\r\nand CRLF\n",
	"\n\tindented\n\t\tmore\n",
	"emoji \xf0\x9f\x98\x80\xf0\x9f\x98\x83 family \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d"
	"\xf0\x9f\x91\xa7\xe2\x80\x8d\xf0\x9f\x91\xa6 flags \xf0\x9f\x87\xab\xf0\x9f\x87\xb7\xf0\x9f\x87\xaf"
	"\xf0\x9f\x87\xb5 thumbs \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd",
	"\xf0\x9f\x98\x80",
	"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88 "
	"\xe4\xb8\xad\xe6\x96\x87 \xed\x95\x9c\xea\xb5\xad\xec\x96\xb4",
	"Caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9\x65, na\xc3\xafve fa\xc3\xa7\x61\x64\x65",   /* precomposed */
	"Cafe\xcc\x81 cre\xcc\x80me nai\xcc\x88ve",                                          /* combining */
	"digits 0123456789 3.14159 1,000,000 2024-01-01 x=42;",
	"It's we're they've I'm you'll he'd",
	"\xce\xb6\xcf\x89\xce\xae \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d",
	"zero\xe2\x80\x8bwidth nbsp\xc2\xa0here em\xe2\x80\x83space",
	"code: if (x == 1) { return y; } // done",
};

/* ---- helpers ---- */

static loom_tok *load_shared(const char *rel)
{
	loom_tok *t = NULL;
	loom_err rc = loom_tok_load(lt_shared_path(rel), &t);
	if (rc)
		fail_msg("load %s: %s: %s", rel, loom_strerror(rc), loom_errmsg());
	return t;
}

static loom_tok *load_generated(mk_tok_kind kind, int vocab)
{
	char *js;
	size_t len;
	int32_t bos, eos;
	loom_tok *t = NULL;
	assert_int_equal(mk_tokenizer_json(kind, vocab, &js, &len, &bos, &eos), LOOM_OK);
	loom_err rc = loom_tok_load_json(js, len, "generated", &t);
	if (rc)
		fail_msg("load generated: %s", loom_errmsg());
	loom_free(js);
	return t;
}

/* Independent strict UTF-8 check (not the library's). */
static int utf8_ok(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		unsigned c = p[i], need, cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			need = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			need = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			need = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (i + need >= n)
			return 0;
		for (unsigned k = 1; k <= need; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((need == 1 && cp < 0x80) || (need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += need + 1;
	}
	return 1;
}

static void expect_ids(const loom_tok *t, const char *text, bool add_special, const int32_t *want, size_t n_want)
{
	int32_t *ids;
	size_t n;
	loom_err rc = loom_tok_encode(t, text, strlen(text), add_special, &ids, &n);
	if (rc)
		fail_msg("encode \"%s\": %s", text, loom_errmsg());
	int same = n == n_want && !memcmp(ids, want, n * sizeof *ids);
	if (!same) {
		fprintf(stderr, "encode \"%s\" gave:", text);
		for (size_t i = 0; i < n; i++)
			fprintf(stderr, " %d", ids[i]);
		fprintf(stderr, "\n");
	}
	loom_free(ids);
	assert_true(same);
}

#define EXPECT(t, text, sp, ...)                                                  \
	do {                                                                      \
		static const int32_t w_[] = { __VA_ARGS__ };                      \
		expect_ids((t), (text), (sp), w_, N_ELEM(w_));                    \
	} while (0)

/* Decoded text may hold NUL bytes (<0x00>): *len tells its length. */
static char *decode_n(const loom_tok *t, const int32_t *ids, size_t n, bool skip, size_t *len)
{
	char *s;
	loom_err rc = loom_tok_decode(t, ids, n, skip, &s, len);
	if (rc)
		fail_msg("decode: %s", loom_errmsg());
	assert_int_equal(s[*len], '\0');
	return s;
}

static char *decode(const loom_tok *t, const int32_t *ids, size_t n, bool skip)
{
	size_t len;
	char *s = decode_n(t, ids, n, skip, &len);
	assert_int_equal(strlen(s), len);
	return s;
}

/* Streams ids one by one; checks every chunk and the total against decode. */
static void stream_matches_n(const loom_tok *t, const int32_t *ids, size_t n, bool skip, bool at_start,
			     const char *want, size_t want_len)
{
	loom_tok_stream *s;
	assert_int_equal(loom_tok_stream_create(t, skip, at_start, &s), LOOM_OK);
	size_t cap = want_len + 64, len = 0;
	char *acc = malloc(cap);
	assert_non_null(acc);
	for (size_t i = 0; i <= n; i++) {
		const char *out;
		size_t k;
		if (i < n)
			assert_int_equal(loom_tok_stream_push(s, ids[i], &out, &k), LOOM_OK);
		else
			assert_int_equal(loom_tok_stream_finish(s, &out, &k), LOOM_OK);
		if (!utf8_ok(out, k))
			fail_msg("stream chunk %zu is not whole UTF-8", i);
		if (len + k >= cap) {
			cap = 2 * (len + k);
			acc = realloc(acc, cap);
			assert_non_null(acc);
		}
		memcpy(acc + len, out, k);
		len += k;
	}
	assert_int_equal(len, want_len);
	assert_memory_equal(acc, want, len);
	free(acc);
	loom_tok_stream_destroy(s);
}

static void stream_matches(const loom_tok *t, const int32_t *ids, size_t n, bool skip, bool at_start,
			   const char *want)
{
	stream_matches_n(t, ids, n, skip, at_start, want, strlen(want));
}

/* decode(encode(x)) == x with and without add_special; the stream agrees. */
static void roundtrip_all(const loom_tok *t)
{
	for (size_t c = 0; c < N_ELEM(rt_texts); c++) {
		const char *x = rt_texts[c];
		for (int sp = 0; sp < 2; sp++) {
			int32_t *ids;
			size_t n;
			assert_int_equal(loom_tok_encode(t, x, strlen(x), sp, &ids, &n), LOOM_OK);
			char *back = decode(t, ids, n, true);
			if (strcmp(back, x))
				fail_msg("round trip of text %zu (add_special %d): \"%s\" came back as \"%s\"", c, sp, x, back);
			stream_matches(t, ids, n, true, true, back);
			loom_free(back);
			loom_free(ids);
		}
	}
}

/* ---- known ids ---- */

static void stories260k_ids(void **state)
{
	(void)state;
	loom_tok *t = load_shared("models/stories260k/tokenizer.json");
	EXPECT(t, "Once upon a time", true, 1, 403, 407, 261, 378);
	EXPECT(t, "Once upon a time", false, 403, 407, 261, 378);
	assert_int_equal(loom_tok_n_vocab(t), 512);
	assert_int_equal(loom_tok_id(t, "<s>"), 1);
	assert_true(loom_tok_is_special(t, 1));
	assert_false(loom_tok_is_special(t, 403));
	loom_tok_free(t);
}

static void gpt2_ids(void **state)
{
	(void)state;
	loom_tok *t = load_shared("fixtures/gpt2-tokenizer/tokenizer.json");
	EXPECT(t, "Hello world", false, 15496, 995);
	EXPECT(t, "Hello world", true, 15496, 995); /* ByteLevel post-processor adds nothing */
	EXPECT(t, "Hello  world", false, 15496, 220, 995);
	EXPECT(t, " it's 123456", false, 340, 338, 17031, 29228);
	EXPECT(t, "x<|endoftext|>y", false, 87, 50256, 88);
	EXPECT(t, "  leading and trailing  ", false, 220, 3756, 290, 25462, 220, 220);
	EXPECT(t, "Caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80", false, 34, 1878,
	       2634, 41492, 10545, 245, 98, 17312, 105, 45739, 252, 30325, 222);
	assert_int_equal(loom_tok_n_vocab(t), 50257);
	assert_int_equal(loom_tok_id(t, "<|endoftext|>"), 50256);
	assert_true(loom_tok_is_special(t, 50256));
	loom_tok_free(t);
}

static void tinyllama_ids(void **state)
{
	(void)state;
	loom_tok *t = load_shared("fixtures/tinyllama-v0-tokenizer/tokenizer.json");
	EXPECT(t, "Hello world", true, 1, 16644, 924);
	/* not in the vocab: byte fallback, 4 pieces for the emoji */
	EXPECT(t, "\xf0\x9f\x98\x80", false, 31822, 243, 162, 155, 131);
	EXPECT(t, "  leading and trailing  ", false, 31822, 31822, 3034, 291, 30174, 31822, 31822);
	assert_int_equal(loom_tok_n_vocab(t), 32000);
	loom_tok_free(t);
}

static void babyllama_unk(void **state)
{
	(void)state;
	loom_tok *t = load_shared("models/babyllama105/tokenizer.json");
	/* no byte fallback: unknown characters are <unk>, and a run fuses into one */
	EXPECT(t, "Hello \xe6\x97\xa5\xe6\x9c\xac world", false, 3, 33, 4, 14, 14, 7, 3, 0, 3, 17, 7, 13, 14, 11);
	EXPECT(t, "\xe6\x97\xa5 \xe6\x9c\xac", true, 1, 3, 0, 3, 0);
	int32_t ids[] = { 3, 33, 0, 3 };
	char *s = decode(t, ids, 4, false);
	assert_string_equal(s, "H<unk> ");
	loom_free(s);
	s = decode(t, ids, 4, true);
	assert_string_equal(s, "H ");
	loom_free(s);
	loom_tok_free(t);
}

static void added_token_strip(void **state)
{
	(void)state;
	static const char js[] =
		"{\"added_tokens\":[{\"id\":4,\"content\":\"<x>\",\"lstrip\":true,\"rstrip\":true,"
		"\"normalized\":false,\"special\":false}],\"normalizer\":null,\"pre_tokenizer\":null,"
		"\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\" \":2,\"ab\":3},\"merges\":[[\"a\",\"b\"]]}}";
	loom_tok *t;
	assert_int_equal(loom_tok_load_json(js, strlen(js), "tiny", &t), LOOM_OK);
	EXPECT(t, "ab <x> a", false, 3, 4, 0);
	EXPECT(t, "ab<x>ab", false, 3, 4, 3);
	EXPECT(t, "  <x>  ", false, 4);
	assert_false(loom_tok_is_special(t, 4));
	loom_tok_free(t);
}

/* stories260k rewritten to the newer Metaspace form (ids from HF tokenizers). */
static loom_tok *metaspace_variant(const char *pre, const char *dec)
{
	json_error_t err;
	json_t *root = json_load_file(lt_shared_path("models/stories260k/tokenizer.json"), 0, &err);
	assert_non_null(root);
	json_object_set_new(root, "normalizer", json_null());
	json_object_set_new(root, "pre_tokenizer", json_loads(pre, 0, &err));
	json_object_set_new(root, "decoder", json_loads(dec, 0, &err));
	char *js = json_dumps(root, 0);
	loom_tok *t;
	loom_err rc = loom_tok_load_json(js, strlen(js), "metaspace", &t);
	if (rc)
		fail_msg("metaspace variant: %s", loom_errmsg());
	free(js);
	json_decref(root);
	return t;
}

static void metaspace_forms(void **state)
{
	(void)state;
	loom_tok *t = metaspace_variant(
		"{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":false}",
		"{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\",\"prepend_scheme\":\"first\",\"split\":false}");
	EXPECT(t, "  leading and trailing  ", false, 410, 278, 411, 380, 299, 269, 259, 420, 412, 290, 299, 410, 410);
	EXPECT(t, "Hi<s>there you", false, 320, 417, 1, 413, 260, 276, 364); /* no prepend after <s> */
	EXPECT(t, "Once upon a time", true, 1, 403, 407, 261, 378);
	int32_t ids[] = { 320, 417, 1, 413, 260, 276, 364 };
	char *s = decode(t, ids, 7, true);
	assert_string_equal(s, "Hithere you");
	loom_free(s);
	loom_tok_free(t);

	t = metaspace_variant(
		"{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
		"{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\",\"prepend_scheme\":\"always\",\"split\":true}]}",
		"{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\",\"prepend_scheme\":\"always\",\"split\":true}");
	EXPECT(t, "Hi<s>there you", false, 320, 417, 1, 383, 364);
	EXPECT(t, "Once upon 2024 times", false, 403, 407, 410, 410, 479, 410, 477, 410, 479, 410, 484, 378, 419);
	loom_tok_free(t);
}

/* ---- round trips ---- */

static void roundtrip_tinyllama(void **state)
{
	(void)state;
	loom_tok *t = load_shared("fixtures/tinyllama-v0-tokenizer/tokenizer.json");
	roundtrip_all(t);
	loom_tok_free(t);
}

static void roundtrip_gpt2(void **state)
{
	(void)state;
	loom_tok *t = load_shared("fixtures/gpt2-tokenizer/tokenizer.json");
	roundtrip_all(t);
	loom_tok_free(t);
}

static void roundtrip_stories260k(void **state)
{
	(void)state;
	loom_tok *t = load_shared("models/stories260k/tokenizer.json");
	roundtrip_all(t);
	loom_tok_free(t);
}

static void roundtrip_generated(void **state)
{
	(void)state;
	static const struct { mk_tok_kind kind; int vocab; } cases[] = {
		{ MK_TOK_SP, MK_SP_MIN }, { MK_TOK_SP, 512 }, { MK_TOK_SP, 32000 },
		{ MK_TOK_BYTELEVEL, MK_BL_MIN }, { MK_TOK_BYTELEVEL, 1024 }, { MK_TOK_BYTELEVEL, 8192 },
	};
	for (size_t i = 0; i < N_ELEM(cases); i++) {
		loom_tok *t = load_generated(cases[i].kind, cases[i].vocab);
		assert_int_equal(loom_tok_n_vocab(t), cases[i].vocab);
		roundtrip_all(t);
		loom_tok_free(t);
	}
}

static size_t put_cp(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Random strings over awkward code points (NUL and controls included). */
static void roundtrip_random_unicode(void **state)
{
	(void)state;
	static const uint32_t ranges[][2] = {
		{ 0x00, 0x20 }, { 0x20, 0x7f }, { 0x20, 0x7f }, { 0x80, 0x2ff }, { 0x300, 0x36f },
		{ 0x2000, 0x206f }, { 0x3040, 0x30ff }, { 0x4e00, 0x9fff }, { 0xac00, 0xd7a3 },
		{ 0xe000, 0xe0ff }, { 0xfff0, 0xfffd }, { 0x1f300, 0x1faff }, { 0x1f1e6, 0x1f1ff },
		{ 0x10000, 0x10ffff },
	};
	loom_tok *toks[5] = {
		load_shared("fixtures/tinyllama-v0-tokenizer/tokenizer.json"),
		load_shared("fixtures/gpt2-tokenizer/tokenizer.json"),
		load_shared("models/stories260k/tokenizer.json"),
		load_generated(MK_TOK_SP, 512),
		load_generated(MK_TOK_BYTELEVEL, 512),
	};
	unsigned seed = 99;
	char text[256];
	for (int round = 0; round < 300; round++) {
		size_t n = 0;
		int len = 1 + round % 40;
		for (int i = 0; i < len; i++) {
			seed = seed * 1103515245u + 12345u;
			const uint32_t *r = ranges[(seed >> 8) % N_ELEM(ranges)];
			seed = seed * 1103515245u + 12345u;
			uint32_t cp = r[0] + (seed >> 4) % (r[1] - r[0] + 1);
			if (cp >= 0xd800 && cp <= 0xdfff)
				cp = 0xfffd;
			n += put_cp(text + n, cp);
		}
		for (size_t k = 0; k < N_ELEM(toks); k++) {
			int32_t *ids;
			size_t m, back_len;
			assert_int_equal(loom_tok_encode(toks[k], text, n, round % 2, &ids, &m), LOOM_OK);
			char *back = decode_n(toks[k], ids, m, true, &back_len);
			if (back_len != n || memcmp(back, text, n))
				fail_msg("tokenizer %zu: random text %d does not round-trip", k, round);
			loom_free(back);
			loom_free(ids);
		}
	}
	for (size_t k = 0; k < N_ELEM(toks); k++)
		loom_tok_free(toks[k]);
}

/* ---- the generator ---- */

static void generated_shapes(void **state)
{
	(void)state;
	char *js, *js2;
	size_t len, len2;
	int32_t bos, eos;
	loom_tok *t;

	assert_int_equal(mk_tokenizer_json(MK_TOK_SP, 1000, &js, &len, &bos, &eos), LOOM_OK);
	assert_int_equal(bos, 1);
	assert_int_equal(eos, 2);
	assert_int_equal(loom_tok_load_json(js, len, "sp", &t), LOOM_OK);
	assert_int_equal(loom_tok_n_vocab(t), 1000);
	assert_int_equal(loom_tok_id(t, "<unk>"), 0);
	assert_int_equal(loom_tok_id(t, "<0x00>"), 3);
	assert_int_equal(loom_tok_id(t, "<0xFF>"), 258);
	assert_true(loom_tok_is_special(t, 1));
	int32_t *ids;
	size_t n;
	assert_int_equal(loom_tok_encode(t, "Once upon a time", 16, true, &ids, &n), LOOM_OK);
	assert_int_equal(ids[0], 1);
	assert_true(n < 10); /* trained merges do their job on corpus words */
	loom_free(ids);
	loom_tok_free(t);
	/* deterministic */
	assert_int_equal(mk_tokenizer_json(MK_TOK_SP, 1000, &js2, &len2, &bos, &eos), LOOM_OK);
	assert_int_equal(len, len2);
	assert_memory_equal(js, js2, len);
	loom_free(js);
	loom_free(js2);

	assert_int_equal(mk_tokenizer_json(MK_TOK_BYTELEVEL, 1024, &js, &len, &bos, &eos), LOOM_OK);
	assert_int_equal(bos, 1022);
	assert_int_equal(eos, 1023);
	assert_int_equal(loom_tok_load_json(js, len, "bl", &t), LOOM_OK);
	assert_int_equal(loom_tok_n_vocab(t), 1024);
	assert_int_equal(loom_tok_id(t, "<|begin_of_text|>"), 1022);
	assert_true(loom_tok_is_special(t, 1022) && loom_tok_is_special(t, 1023));
	assert_int_equal(loom_tok_encode(t, "<|begin_of_text|>Once upon a time", 33, true, &ids, &n), LOOM_OK);
	assert_true(n >= 3 && ids[0] == 1022 && ids[1] == 1022);
	char *s = decode(t, ids, n, true);
	assert_string_equal(s, "Once upon a time");
	loom_free(s);
	loom_free(ids);
	loom_tok_free(t);
	loom_free(js);

	assert_int_equal(mk_tokenizer_json(MK_TOK_SP, MK_SP_MIN - 1, &js, &len, &bos, &eos), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "275"));
	assert_int_equal(mk_tokenizer_json(MK_TOK_BYTELEVEL, 10, &js, &len, &bos, &eos), LOOM_EINVAL);
	assert_null(js);
}

/* ---- streaming ---- */

static void stream_emoji_bytes(void **state)
{
	(void)state;
	loom_tok *t = load_shared("fixtures/tinyllama-v0-tokenizer/tokenizer.json");
	/* "▁", then the four byte-fallback pieces of U+1F600 */
	int32_t ids[] = { 31822, 243, 162, 155, 131 };
	loom_tok_stream *s;
	const char *out;
	size_t k;
	assert_int_equal(loom_tok_stream_create(t, true, false, &s), LOOM_OK);
	assert_int_equal(loom_tok_stream_push(s, ids[0], &out, &k), LOOM_OK);
	assert_string_equal(out, " "); /* a continuation keeps its space */
	for (int i = 1; i < 4; i++) {
		assert_int_equal(loom_tok_stream_push(s, ids[i], &out, &k), LOOM_OK);
		assert_int_equal(k, 0);
	}
	assert_int_equal(loom_tok_stream_push(s, ids[4], &out, &k), LOOM_OK);
	assert_string_equal(out, "\xf0\x9f\x98\x80");
	assert_int_equal(loom_tok_stream_finish(s, &out, &k), LOOM_OK);
	assert_int_equal(k, 0);
	loom_tok_stream_destroy(s);
	/* at the start the leading space goes, as in decode */
	stream_matches(t, ids, 5, true, true, "\xf0\x9f\x98\x80");

	/* broken sequences come out as U+FFFD, stream and decode alike */
	int32_t bad[] = { 16644, 243, 162, 68, 243 }; /* Hello <0xF0><0x9F> <0x41>... <0xF0> */
	assert_int_equal(loom_tok_id(t, "<0x41>"), 68);
	char *full = decode(t, bad, 5, true);
	assert_string_equal(full, "Hello\xef\xbf\xbd\xef\xbf\xbd" "A\xef\xbf\xbd");
	stream_matches(t, bad, 5, true, true, full);
	loom_free(full);
	loom_tok_free(t);
}

static void stream_random_ids(void **state)
{
	(void)state;
	const char *files[] = { "fixtures/tinyllama-v0-tokenizer/tokenizer.json",
				"fixtures/gpt2-tokenizer/tokenizer.json" };
	unsigned seed = 7;
	for (size_t f = 0; f < N_ELEM(files); f++) {
		loom_tok *t = load_shared(files[f]);
		int32_t nv = loom_tok_n_vocab(t);
		for (int round = 0; round < 50; round++) {
			int32_t ids[40];
			for (int i = 0; i < 40; i++) {
				seed = seed * 1103515245u + 12345u;
				/* favour byte pieces (ids < 259 in tinyllama, byte chars in gpt2) */
				ids[i] = (int32_t)((seed >> 8) % (i % 3 ? 259u : (unsigned)nv));
			}
			for (int skip = 0; skip < 2; skip++) {
				size_t len;
				char *full = decode_n(t, ids, 40, skip, &len);
				assert_true(utf8_ok(full, len));
				stream_matches_n(t, ids, 40, skip, true, full, len);
				loom_free(full);
			}
		}
		loom_tok_free(t);
	}
}

/* ---- errors ---- */

static void expect_load_error(const char *js, size_t len, loom_err want, const char *in_msg)
{
	loom_tok *t = (loom_tok *)1;
	loom_err rc = loom_tok_load_json(js, len, "bad.json", &t);
	if (rc != want)
		fail_msg("expected %s, got %s: %s", loom_strerror(want), loom_strerror(rc), loom_errmsg());
	assert_null(t);
	assert_non_null(strstr(loom_errmsg(), "bad.json"));
	if (in_msg && !strstr(loom_errmsg(), in_msg))
		fail_msg("message \"%s\" lacks \"%s\"", loom_errmsg(), in_msg);
}

static void load_errors(void **state)
{
	(void)state;
	const char *path = lt_shared_path("models/stories260k/tokenizer.json");
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	char buf[4096];
	size_t n = fread(buf, 1, sizeof buf, f);
	fclose(f);
	assert_true(n > 2000);
	expect_load_error(buf, 2000, LOOM_EFORMAT, "JSON");                 /* truncated */
	expect_load_error("\x01\x02garbage", 9, LOOM_EFORMAT, "JSON");
	expect_load_error("", 0, LOOM_EFORMAT, NULL);
	expect_load_error("[1,2]", 5, LOOM_EFORMAT, "model");
	expect_load_error("{\"version\":\"1.0\"}", 17, LOOM_EFORMAT, "model");
#define J(s) s, strlen(s)
	expect_load_error(J("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}"), LOOM_EUNSUPPORTED, "Unigram");
	expect_load_error(J("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}"), LOOM_EUNSUPPORTED, "WordPiece");
	expect_load_error(J("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a c\"]}}"),
			  LOOM_EFORMAT, "merges[0]");
	expect_load_error(J("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}"),
			  LOOM_EFORMAT, "merges[0]"); /* "ab" is not a piece */
	expect_load_error(J("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"ab\"]}}"),
			  LOOM_EFORMAT, "merges[0]");
	expect_load_error(J("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-3}}}"), LOOM_EFORMAT, "vocab");
	expect_load_error(J("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0}}}"), LOOM_EFORMAT, "id 0");
	expect_load_error(J("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"unk_token\":\"<unk>\"}}"),
			  LOOM_EFORMAT, "unk_token");
	expect_load_error(J("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"pre_tokenizer\":{\"type\":\"BertPreTokenizer\"}}"),
			  LOOM_EUNSUPPORTED, "BertPreTokenizer");
	expect_load_error(J("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"pre_tokenizer\":{\"type\":\"Split\","
			    "\"pattern\":{\"Regex\":\"(unclosed\"},\"behavior\":\"Isolated\"}}"),
			  LOOM_EFORMAT, "regex");
	expect_load_error(J("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}},\"added_tokens\":[{\"id\":0,\"content\":\"b\"}]}"),
			  LOOM_EFORMAT, "added token");
#undef J
	loom_tok *t = (loom_tok *)1;
	assert_int_equal(loom_tok_load("/nonexistent/tokenizer.json", &t), LOOM_ENOTFOUND);
	assert_null(t);
	assert_non_null(strstr(loom_errmsg(), "/nonexistent/tokenizer.json"));
}

static void input_errors(void **state)
{
	(void)state;
	loom_tok *t = load_shared("fixtures/gpt2-tokenizer/tokenizer.json");
	static const char *const bad[] = {
		"\xff", "ok \xc0\xaf", "\xed\xa0\x80 surrogate", "cut \xe2\x82", "\xf4\x90\x80\x80", "\x80",
	};
	for (size_t i = 0; i < N_ELEM(bad); i++) {
		int32_t *ids = (int32_t *)1;
		size_t n = 9;
		assert_int_equal(loom_tok_encode(t, bad[i], strlen(bad[i]), true, &ids, &n), LOOM_EINVAL);
		assert_null(ids);
		assert_int_equal(n, 0);
	}
	int32_t out_of_range[][2] = { { 15496, -1 }, { 50257, 0 }, { INT32_MAX, 1 } };
	for (size_t i = 0; i < N_ELEM(out_of_range); i++) {
		char *s = (char *)1;
		size_t len;
		assert_int_equal(loom_tok_decode(t, out_of_range[i], 2, false, &s, &len), LOOM_ERANGE);
		assert_null(s);
	}
	loom_tok_stream *s;
	const char *out;
	size_t k;
	assert_int_equal(loom_tok_stream_create(t, false, true, &s), LOOM_OK);
	assert_int_equal(loom_tok_stream_push(s, 50257, &out, &k), LOOM_ERANGE);
	assert_int_equal(loom_tok_stream_push(s, 15496, &out, &k), LOOM_OK); /* still usable */
	assert_string_equal(out, "Hello");
	loom_tok_stream_destroy(s);
	assert_int_equal(loom_tok_id(t, "no such piece here"), -1);
	assert_false(loom_tok_is_special(t, -5));
	assert_false(loom_tok_is_special(t, 1 << 30));
	loom_tok_free(t);
}

/* The N-th allocation fails: a clean LOOM_ENOMEM every time, never a crash. */
static void alloc_faults(void **state)
{
	(void)state;
	char *js;
	size_t len;
	int32_t bos, eos;
	assert_int_equal(mk_tokenizer_json(MK_TOK_BYTELEVEL, 300, &js, &len, &bos, &eos), LOOM_OK);
	int ok_at = 0;
	for (int nth = 1; nth < 5000 && !ok_at; nth++) {
		loom_tok *t = NULL;
		loom_alloc_fail_after(nth);
		loom_err rc = loom_tok_load_json(js, len, "faulty", &t);
		int32_t *ids = NULL;
		size_t n;
		if (!rc) {
			rc = loom_tok_encode(t, "Once upon a time", 16, true, &ids, &n);
			if (!rc)
				ok_at = nth;
		}
		loom_alloc_fail_reset();
		if (rc)
			assert_int_equal(rc, LOOM_ENOMEM);
		loom_free(ids);
		loom_tok_free(t);
	}
	assert_true(ok_at > 1);
	for (int nth = 1; nth < 400; nth++) {
		char *j2 = NULL;
		size_t l2;
		loom_alloc_fail_after(nth);
		loom_err rc = mk_tokenizer_json(MK_TOK_SP, 300, &j2, &l2, &bos, &eos);
		loom_alloc_fail_reset();
		assert_true(rc == LOOM_OK || rc == LOOM_ENOMEM);
		loom_free(j2);
		if (!rc)
			break;
	}
	loom_free(js);
}

/* ---- speed and threads ---- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char *big_prompt(size_t *len)
{
	static const char line[] = "The quick brown fox jumps over the lazy dog; 42 cats \xf0\x9f\x98\x80 ran "
				   "away, caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac!\n";
	size_t n = 0;
	char *p = malloc(21000);
	assert_non_null(p);
	while (n + sizeof line - 1 < 20480) {
		memcpy(p + n, line, sizeof line - 1);
		n += sizeof line - 1;
	}
	p[n] = '\0';
	*len = n;
	return p;
}

static void speed(void **state)
{
	(void)state;
	size_t len;
	char *text = big_prompt(&len);
	const char *files[] = { "fixtures/tinyllama-v0-tokenizer/tokenizer.json",
				"fixtures/gpt2-tokenizer/tokenizer.json" };
	for (size_t f = 0; f < N_ELEM(files); f++) {
		double t0 = now_s();
		loom_tok *t = load_shared(files[f]);
		double t_load = now_s() - t0;
		int32_t *ids;
		size_t n;
		t0 = now_s();
		assert_int_equal(loom_tok_encode(t, text, len, false, &ids, &n), LOOM_OK);
		double t_enc = now_s() - t0;
		char *back = decode(t, ids, n, false);
		assert_string_equal(back, text);
		fprintf(stderr, "# %s: load %.0f ms, encode %zu bytes -> %zu ids in %.2f ms\n", files[f],
			t_load * 1e3, len, n, t_enc * 1e3);
		/* budgets with slack for a loaded 2-core machine (typical: ~100 ms, ~1-3 ms) */
		assert_true(t_load < 3.0);
		assert_true(t_enc < 0.25);
		loom_free(back);
		loom_free(ids);
		loom_tok_free(t);
	}
	free(text);
}

typedef struct th_arg {
	const loom_tok *t;
	const char *text;
	size_t len;
	const int32_t *want;
	size_t n_want;
	int bad;
} th_arg;

static void *th_main(void *p)
{
	th_arg *a = p;
	for (int i = 0; i < 20; i++) {
		int32_t *ids;
		size_t n;
		if (loom_tok_encode(a->t, a->text, a->len, true, &ids, &n) || n != a->n_want ||
		    memcmp(ids, a->want, n * sizeof *ids))
			a->bad++;
		loom_free(ids);
	}
	return NULL;
}

static void threads(void **state)
{
	(void)state;
	loom_tok *t = load_shared("fixtures/gpt2-tokenizer/tokenizer.json");
	size_t len;
	char *text = big_prompt(&len);
	int32_t *want;
	size_t n_want;
	assert_int_equal(loom_tok_encode(t, text, len, true, &want, &n_want), LOOM_OK);
	pthread_t th[4];
	th_arg args[4];
	for (int i = 0; i < 4; i++) {
		args[i] = (th_arg){ .t = t, .text = text, .len = len, .want = want, .n_want = n_want };
		assert_int_equal(pthread_create(&th[i], NULL, th_main, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].bad, 0);
	}
	loom_free(want);
	free(text);
	loom_tok_free(t);
}

/* A post-processor special token whose id no token has (a hole in the id
 * range) is refused at load; it would make encode emit an id decode refuses
 * (found by fuzz/tokenizer_json). */
static void template_hole_id(void **state)
{
	(void)state;
	static const char j[] =
		"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"c\":2},\"merges\":[]},"
		"\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
		"{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
		"\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[1],\"tokens\":[\"<s>\"]}}}}";
	loom_tok *t = NULL;
	assert_int_equal(loom_tok_load_json(j, sizeof j - 1, "hole.json", &t), LOOM_EFORMAT);
	assert_null(t);
	assert_non_null(strstr(loom_errmsg(), "outside the vocab"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(stories260k_ids),
		cmocka_unit_test(gpt2_ids),
		cmocka_unit_test(tinyllama_ids),
		cmocka_unit_test(babyllama_unk),
		cmocka_unit_test(added_token_strip),
		cmocka_unit_test(metaspace_forms),
		cmocka_unit_test(roundtrip_tinyllama),
		cmocka_unit_test(roundtrip_gpt2),
		cmocka_unit_test(roundtrip_stories260k),
		cmocka_unit_test(roundtrip_generated),
		cmocka_unit_test(roundtrip_random_unicode),
		cmocka_unit_test(generated_shapes),
		cmocka_unit_test(stream_emoji_bytes),
		cmocka_unit_test(stream_random_ids),
		cmocka_unit_test(load_errors),
		cmocka_unit_test(input_errors),
		cmocka_unit_test(alloc_faults),
		cmocka_unit_test(speed),
		cmocka_unit_test(threads),
		cmocka_unit_test(template_hole_id),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
