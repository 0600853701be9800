/*
 * tests/bench/test_sse.c — the SSE splitter and chunk classifier: a loom
 * stream cut at every byte boundary gives the same events; CRLF, comments,
 * multi-line data, a missing final blank line; chunks with text, usage,
 * error events, [DONE] and garbage.
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

static void test_chunks(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
		const chunk_case *c = &chunks[i];
		bn_chunk ch;
		bn_chunk_parse(c->data, strlen(c->data), &ch);
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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
