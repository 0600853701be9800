/*
 * tests/gateway/test_stream.c — output text of one request: stop strings
 * held back and matched across chunk boundaries and inside UTF-8, and the
 * incremental detokenizer path with the real stories260k tokenizer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/tokenizer.h"
#include "gateway/gw_stream.h"
#include "tests/support/harness.h"

typedef struct stop_case {
	const char *name;
	const char *stops[GW_MAX_STOP + 1]; /* NULL-terminated */
	const char *pieces[16];             /* text fed in this order, NULL-terminated */
	const char *released[16];           /* text released after each piece */
	const char *final;                  /* text after finish (or at the stop) */
	bool stopped;
} stop_case;

static const stop_case cases[] = {
	{"no stops releases at once", {NULL}, {"ab", "cd", NULL}, {"ab", "cd"}, "abcd", false},
	{"stop inside one piece", {"STOP", NULL}, {"abSTOPcd", NULL}, {"ab"}, "ab", true},
	{"stop across pieces", {"STOP", NULL}, {"abST", "O", "Pxx", NULL}, {"ab", "", ""}, "ab", true},
	{"false start released", {"STOP", NULL}, {"abST", "OX", NULL}, {"ab", "STOX"}, "abSTOX", false},
	{"held tail flushed at finish", {"STOP", NULL}, {"abST", NULL}, {"ab"}, "abST", false},
	{"stop at very start", {"Hi", NULL}, {"Hi there", NULL}, {""}, "", true},
	{"earliest of two stops", {"cd", "b", NULL}, {"abcd", NULL}, {"a"}, "a", true},
	{"longer stop begins earlier", {"xyz", "z", NULL}, {"ax", "yz", NULL}, {"a", ""}, "a", true},
	{"overlapping prefix", {"aab", NULL}, {"a", "a", "a", "b", NULL}, {"", "", "a", ""}, "a", true},
	{"repeated partial", {"abc", NULL}, {"ab", "ab", "c", NULL}, {"", "ab", ""}, "ab", true},
	{"utf8 stop split inside a character", {"\xc3\xa9t\xc3\xa9", NULL},
	 {"l'\xc3\xa9", "t", "\xc3\xa9!", NULL}, {"l'", "", ""}, "l'", true},
	{"utf8 near miss", {"\xc3\xa9t\xc3\xa9", NULL}, {"\xc3\xa9t", "\xc3\xa8", NULL},
	 {"", "\xc3\xa9t\xc3\xa8"}, "\xc3\xa9t\xc3\xa8", false},
	{"emoji stop", {"\xf0\x9f\x98\x80", NULL}, {"ok ", "\xf0\x9f\x98\x80", " more", NULL},
	 {"ok ", "", ""}, "ok ", true},
	{"newline stop", {"\n\n", NULL}, {"line\n", "\nnext", NULL}, {"line", ""}, "line", true},
	{"input after stop ignored", {"x", NULL}, {"ax", "bbb", NULL}, {"a", ""}, "a", true},
};

static void test_stop_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const stop_case *c = &cases[i];
		size_t n_stops = 0;
		while (c->stops[n_stops])
			n_stops++;
		gw_stream *s;
		assert_int_equal(gw_stream_create(NULL, c->stops, n_stops, &s), LOOM_OK);
		for (size_t k = 0; c->pieces[k]; k++) {
			bool stopped;
			size_t len;
			assert_int_equal(gw_stream_push_text(s, c->pieces[k], strlen(c->pieces[k]),
							     &stopped), LOOM_OK);
			const char *t = gw_stream_take(s, &len);
			if (len != strlen(c->released[k]) || memcmp(t, c->released[k], len))
				fail_msg("case '%s' piece %zu: released '%.*s', want '%s'", c->name, k,
					 (int)len, t, c->released[k]);
		}
		assert_int_equal(gw_stream_finish(s), LOOM_OK);
		size_t len;
		const char *all = gw_stream_text(s, &len);
		if (strcmp(all, c->final) || gw_stream_stopped(s) != c->stopped)
			fail_msg("case '%s': final '%s' stopped %d, want '%s' %d", c->name, all,
				 gw_stream_stopped(s), c->final, c->stopped);
		gw_stream_destroy(s);
	}
}

static void test_bad_stops(void **state)
{
	(void)state;
	gw_stream *s;
	const char *empty[] = {""};
	assert_int_equal(gw_stream_create(NULL, empty, 1, &s), LOOM_EINVAL);
	assert_null(s);
	const char *five[] = {"a", "b", "c", "d", "e"};
	assert_int_equal(gw_stream_create(NULL, five, 5, &s), LOOM_EINVAL);
}

static loom_tok *load_tok(void)
{
	char path[512];
	loom_tok *t = NULL;
	snprintf(path, sizeof path, "%s", lt_shared_path("models/stories260k/tokenizer.json"));
	assert_int_equal(loom_tok_load(path, &t), LOOM_OK);
	return t;
}

/* ids of " there was a little girl named Lily." as the model continues a prompt */
static void test_ids_match_decode(void **state)
{
	(void)state;
	loom_tok *t = load_tok();
	const char *text = "Once upon a time, there was a little girl named Lily. She loved it.";
	int32_t *ids;
	size_t n;
	assert_int_equal(loom_tok_encode(t, text, strlen(text), true, &ids, &n), LOOM_OK);
	/* feed the continuation after the 5 prompt ids one at a time, then EOS */
	gw_stream *s;
	assert_int_equal(gw_stream_create(t, NULL, 0, &s), LOOM_OK);
	for (size_t i = 5; i < n; i++)
		assert_int_equal(gw_stream_push_ids(s, &ids[i], 1, NULL), LOOM_OK);
	int32_t eos = 2;
	assert_int_equal(gw_stream_push_ids(s, &eos, 1, NULL), LOOM_OK);
	assert_int_equal(gw_stream_finish(s), LOOM_OK);
	size_t len;
	const char *out = gw_stream_text(s, &len);
	char *want;
	size_t wl;
	assert_int_equal(loom_tok_decode(t, ids + 5, n - 5, true, &want, &wl), LOOM_OK);
	assert_string_equal(out, want);
	assert_non_null(strstr(out, "girl named Lily."));
	assert_null(strstr(out, "</s>")); /* EOS adds no text */
	loom_free(want);
	gw_stream_destroy(s);

	/* the same ids with a stop string: ends right before it, whatever the chunking */
	for (size_t chunk = 1; chunk <= 4; chunk++) {
		const char *stops[] = {"named Lily", "xyz"};
		bool stopped = false;
		assert_int_equal(gw_stream_create(t, stops, 2, &s), LOOM_OK);
		for (size_t i = 5; i < n && !stopped; i += chunk) {
			size_t k = (i + chunk <= n) ? chunk : n - i;
			assert_int_equal(gw_stream_push_ids(s, &ids[i], k, &stopped), LOOM_OK);
			size_t tl;
			const char *piece = gw_stream_take(s, &tl);
			assert_null(memmem(piece, tl, "named", 5)); /* never a prefix of the stop */
		}
		assert_true(stopped);
		out = gw_stream_text(s, &len);
		assert_string_equal(out, ", there was a little girl ");
		gw_stream_destroy(s);
	}
	/* an id the tokenizer does not know adds no text and is no error */
	int32_t bad = 100000;
	assert_int_equal(gw_stream_create(t, NULL, 0, &s), LOOM_OK);
	assert_int_equal(gw_stream_push_ids(s, &bad, 1, NULL), LOOM_OK);
	gw_stream_destroy(s);
	loom_free(ids);
	loom_tok_free(t);
}

/* byte-fallback ids of a multi-byte character never release half of it */
static void test_utf8_byte_fallback(void **state)
{
	(void)state;
	loom_tok *t = load_tok();
	const char *text = "caf\xc3\xa9 \xe2\x82\xac";  /* café € */
	int32_t *ids;
	size_t n;
	assert_int_equal(loom_tok_encode(t, text, strlen(text), false, &ids, &n), LOOM_OK);
	gw_stream *s;
	const char *stops[] = {"\xe2\x82\xac"};
	assert_int_equal(gw_stream_create(t, stops, 1, &s), LOOM_OK);
	bool stopped = false;
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(gw_stream_push_ids(s, &ids[i], 1, &stopped), LOOM_OK);
		size_t tl;
		const char *piece = gw_stream_take(s, &tl);
		/* each release ends on a character boundary */
		if (tl) {
			unsigned char last = (unsigned char)piece[tl - 1];
			assert_true(last < 0x80 || (last & 0xC0) == 0x80);
		}
	}
	assert_true(stopped);
	size_t len;
	assert_string_equal(gw_stream_text(s, &len), " caf\xc3\xa9 "); /* a continuation keeps the space */
	gw_stream_destroy(s);
	loom_free(ids);
	loom_tok_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stop_cases),
		cmocka_unit_test(test_bad_stops),
		cmocka_unit_test(test_ids_match_decode),
		cmocka_unit_test(test_utf8_byte_fallback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
