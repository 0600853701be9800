/*
 * tests/bench/test_sse.c — the SSE splitter and chunk classifier: a loom
 * stream cut at every byte boundary gives the same events; CRLF, comments,
 * multi-line data, a missing final blank line; chunks with text, usage
 * (cached prompt tokens included), error events, [DONE] and garbage; the
 * token ids of a stream gathered across chunks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "bench/bn_sse.h"
#include "common/alloc.h"

typedef struct events {
	char data[16][256];
	int n;
} events;

static int collect(void *ctx, const char *data, size_t len)
{
	events *e = ctx;
	assert_true(e->n < 16);
	assert_true(len < 256);
	assert_int_equal(strlen(data), len);
	memcpy(e->data[e->n], data, len + 1);
	e->n++;
	return 0;
}

static const char stream[] =
	"data: {\"choices\":[{\"text\":\" in\",\"finish_reason\":null}]}\n\n"
	": keep-alive comment\n\n"
	"data: {\"choices\":[{\"text\":\"\",\"finish_reason\":null}]}\n\n"
	"event: message\nid: 7\n"
	"data: {\"choices\":[{\"text\":\"k\",\"finish_reason\":\"length\"}]}\n\n"
	"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\n"
	"data: [DONE]\n\n";

static void test_split_everywhere(void **state)
{
	(void)state;
	size_t n = strlen(stream);
	for (size_t cut = 0; cut <= n; cut++) {
		bn_sse *s;
		events e = { .n = 0 };
		assert_int_equal(bn_sse_create(1 << 16, &s), LOOM_OK);
		assert_int_equal(bn_sse_feed(s, stream, cut, collect, &e), LOOM_OK);
		assert_int_equal(bn_sse_feed(s, stream + cut, n - cut, collect, &e), LOOM_OK);
		assert_int_equal(bn_sse_finish(s, collect, &e), LOOM_OK);
		assert_int_equal(e.n, 5);
		assert_string_equal(e.data[4], "[DONE]");
		assert_non_null(strstr(e.data[0], "\" in\""));
		bn_sse_destroy(s);
	}
	/* byte by byte */
	bn_sse *s;
	events e = { .n = 0 };
	assert_int_equal(bn_sse_create(1 << 16, &s), LOOM_OK);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(bn_sse_feed(s, stream + i, 1, collect, &e), LOOM_OK);
	assert_int_equal(e.n, 5);
	bn_sse_destroy(s);
}

static void test_crlf_multiline_and_unterminated(void **state)
{
	bn_sse *s;
	events e = { .n = 0 };
	static const char t[] = "data:a\r\ndata: b\r\n\r\ndata: last";
	(void)state;
	assert_int_equal(bn_sse_create(1 << 16, &s), LOOM_OK);
	assert_int_equal(bn_sse_feed(s, t, strlen(t), collect, &e), LOOM_OK);
	assert_int_equal(e.n, 1);
	assert_string_equal(e.data[0], "a\nb");
	assert_int_equal(bn_sse_finish(s, collect, &e), LOOM_OK);
	assert_int_equal(e.n, 2);
	assert_string_equal(e.data[1], "last");
	bn_sse_destroy(s);
}

static int stop_first(void *ctx, const char *data, size_t len)
{
	(void)data;
	(void)len;
	++*(int *)ctx;
	return 1;
}

static void test_stop_and_long_line(void **state)
{
	bn_sse *s;
	int calls = 0;
	char big[300];
	(void)state;
	assert_int_equal(bn_sse_create(256, &s), LOOM_OK);
	assert_int_equal(bn_sse_feed(s, "data: 1\n\ndata: 2\n\n", 18, stop_first, &calls),
			 LOOM_ECANCELED);
	assert_int_equal(calls, 1);
	bn_sse_destroy(s);
	memset(big, 'x', sizeof big);
	assert_int_equal(bn_sse_create(256, &s), LOOM_OK);
	assert_int_equal(bn_sse_feed(s, big, sizeof big, stop_first, &calls), LOOM_ERANGE);
	bn_sse_destroy(s);
}

typedef struct chunk_case {
	const char *name, *data;
	bn_chunk_kind kind;
	size_t text_len;
	long tokens;
	const char *msg;
} chunk_case;

static const chunk_case chunks[] = {
	{ "done", "[DONE]", BN_CHUNK_DONE, 0, -1, NULL },
	{ "text", "{\"choices\":[{\"text\":\"abc\"}]}", BN_CHUNK_DATA, 3, -1, NULL },
	{ "empty text", "{\"choices\":[{\"text\":\"\"}]}", BN_CHUNK_DATA, 0, -1, NULL },
	{ "chat delta", "{\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}", BN_CHUNK_DATA, 2, -1,
	  NULL },
	{ "usage", "{\"choices\":[],\"usage\":{\"completion_tokens\":42}}", BN_CHUNK_DATA, 0, 42,
	  NULL },
	{ "error event", "{\"error\":{\"message\":\"worker lost\",\"type\":\"server_error\"}}",
	  BN_CHUNK_ERROR, 0, -1, "worker lost" },
	{ "not json", "{oops", BN_CHUNK_BAD, 0, -1, "not a JSON object" },
	{ "array", "[1,2]", BN_CHUNK_BAD, 0, -1, "not a JSON object" },
	{ "NUL in text", "{\"choices\":[{\"text\":\"a\\u0000b\"}]}", BN_CHUNK_DATA, 3, -1, NULL },
	{ "no choices", "{\"id\":\"x\"}", BN_CHUNK_DATA, 0, -1, NULL },
};

/* usage.prompt_tokens_details.cached_tokens when present, -1 otherwise. */
static void test_cached_tokens(void **state)
{
	static const struct { const char *data; long cached, tokens; } cases[] = {
		{ "{\"choices\":[],\"usage\":{\"prompt_tokens\":300,\"completion_tokens\":8,"
		  "\"prompt_tokens_details\":{\"cached_tokens\":256}}}", 256, 8 },
		{ "{\"choices\":[],\"usage\":{\"completion_tokens\":8,"
		  "\"prompt_tokens_details\":{\"cached_tokens\":0}}}", 0, 8 },
		{ "{\"choices\":[],\"usage\":{\"completion_tokens\":8}}", -1, 8 },
		{ "{\"choices\":[],\"usage\":{\"prompt_tokens_details\":null}}", -1, -1 },
		{ "{\"choices\":[],\"usage\":{\"prompt_tokens_details\":{\"cached_tokens\":-3}}}",
		  -1, -1 },
		{ "{\"choices\":[{\"text\":\"a\"}]}", -1, -1 },
	};
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		bn_chunk ch;
		bn_chunk_parse(cases[i].data, strlen(cases[i].data), &ch, NULL);
		assert_int_equal(ch.kind, BN_CHUNK_DATA);
		assert_int_equal(ch.cached_tokens, cases[i].cached);
		assert_int_equal(ch.completion_tokens, cases[i].tokens);
	}
}

/* choices[0].token_ids of every chunk, appended in order; a bad id makes
 * the whole set unusable; chunks without the field leave it unseen. */
static void test_token_ids(void **state)
{
	static const char *const good[] = {
		"{\"choices\":[{\"text\":\"a\",\"token_ids\":[5]}],\"prompt_token_ids\":[1,2]}",
		"{\"choices\":[{\"text\":\"\",\"token_ids\":[]}]}",
		"{\"choices\":[{\"text\":\"bc\",\"token_ids\":[7,2147483647]}]}",
		"{\"choices\":[],\"usage\":{\"completion_tokens\":3}}",
	};
	bn_ids ids = { 0 };
	bn_chunk ch;
	(void)state;
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		bn_chunk_parse(good[i], strlen(good[i]), &ch, &ids);
	assert_true(ids.seen);
	assert_false(ids.bad);
	assert_int_equal(ids.n, 3);
	assert_int_equal(ids.v[0], 5);
	assert_int_equal(ids.v[1], 7);
	assert_int_equal(ids.v[2], 2147483647);
	bn_ids_fini(&ids);
	/* many chunks: the buffer grows */
	for (int i = 0; i < 1000; i++) {
		char d[96];
		snprintf(d, sizeof d, "{\"choices\":[{\"text\":\"x\",\"token_ids\":[%d,%d]}]}",
			 i, i + 1);
		bn_chunk_parse(d, strlen(d), &ch, &ids);
	}
	assert_int_equal(ids.n, 2000);
	for (int i = 0; i < 1000; i++)
		assert_true(ids.v[2 * i] == i && ids.v[2 * i + 1] == i + 1);
	bn_ids_fini(&ids);
	static const char *const bad[] = {
		"{\"choices\":[{\"token_ids\":[1,-1]}]}",
		"{\"choices\":[{\"token_ids\":[\"7\"]}]}",
		"{\"choices\":[{\"token_ids\":[4294967296]}]}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		bn_chunk_parse(bad[i], strlen(bad[i]), &ch, &ids);
		assert_true(ids.seen && ids.bad);
		bn_ids_fini(&ids);
	}
	const char *none = "{\"choices\":[{\"text\":\"a\"}]}";
	bn_chunk_parse(none, strlen(none), &ch, &ids);
	assert_false(ids.seen);
	assert_int_equal(ids.n, 0);
}

static void test_chunks(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
		const chunk_case *c = &chunks[i];
		bn_chunk ch;
		bn_chunk_parse(c->data, strlen(c->data), &ch, NULL);
		if (ch.kind != c->kind || ch.text_len != c->text_len ||
		    ch.completion_tokens != c->tokens)
			fail_msg("%s: kind %d text %zu tokens %ld", c->name, (int)ch.kind,
				 ch.text_len, ch.completion_tokens);
		if (c->msg && !strstr(ch.message, c->msg))
			fail_msg("%s: message '%s'", c->name, ch.message);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split_everywhere),
		cmocka_unit_test(test_crlf_multiline_and_unterminated),
		cmocka_unit_test(test_stop_and_long_line),
		cmocka_unit_test(test_chunks),
		cmocka_unit_test(test_cached_tokens),
		cmocka_unit_test(test_token_ids),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
