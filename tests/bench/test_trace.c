/*
 * tests/bench/test_trace.c — trace CSV and adapter-list parsing: good files
 * in their variants (header or not, CRLF, comments, unsorted rows, base-model
 * rows), and bad ones, each of which must fail with a message naming the
 * file, the line and the problem.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bn_trace.h"
#include "common/alloc.h"

static bn_trace *parse_ok(const char *text)
{
	bn_trace *t = NULL;
	loom_err rc = bn_trace_parse(text, strlen(text), "t.csv", &t);
	if (rc)
		fail_msg("trace rejected: %s", loom_errmsg());
	assert_non_null(t);
	return t;
}

static void test_trace_with_header(void **state)
{
	(void)state;
	bn_trace *t = parse_ok("timestamp_s,adapter,prompt_tokens,output_tokens\n"
			       "10.5,lora-1,100,20\n"
			       "11,lora-2,5,1\n"
			       "12.25,lora-1,7,300\n");
	assert_int_equal(t->n, 3);
	assert_int_equal(t->n_names, 2);
	assert_string_equal(t->names[0], "lora-1");
	assert_string_equal(t->names[1], "lora-2");
	assert_true(t->rows[0].t == 0.0); /* relative to the first row */
	assert_true(t->rows[1].t == 0.5);
	assert_true(t->rows[2].t == 1.75);
	assert_int_equal(t->rows[0].adapter, 0);
	assert_int_equal(t->rows[1].adapter, 1);
	assert_int_equal(t->rows[2].adapter, 0);
	assert_int_equal(t->rows[0].prompt_tokens, 100);
	assert_int_equal(t->rows[2].output_tokens, 300);
	bn_trace_destroy(t);
}

static void test_trace_variants(void **state)
{
	(void)state;
	/* no header, CRLF, blanks around fields, comments, blank lines, an empty
	 * adapter (= base model), rows out of order (sorted, ties keep line order) */
	bn_trace *t = parse_ok("# recorded 2024-01-01\r\n"
			       "\r\n"
			       " 3 , b , 4 , 5 \r\n"
			       "1,,2,3\r\n"
			       "3,a,6,7\r\n"
			       "2,b,8,9");
	assert_int_equal(t->n, 4);
	assert_int_equal(t->n_names, 2);
	assert_true(t->rows[0].t == 0);
	assert_int_equal(t->rows[0].adapter, -1);
	assert_int_equal(t->rows[1].prompt_tokens, 8);
	assert_int_equal(t->rows[2].prompt_tokens, 4); /* line 3 before line 5 (same t) */
	assert_int_equal(t->rows[3].prompt_tokens, 6);
	assert_string_equal(t->names[t->rows[2].adapter], "b");
	assert_string_equal(t->names[t->rows[3].adapter], "a");
	bn_trace_destroy(t);
}

static void test_trace_many_adapters(void **state)
{
	(void)state;
	size_t cap = 64 * 5000, n = 0;
	char *text = loom_malloc(cap);
	assert_non_null(text);
	for (int i = 0; i < 5000; i++)
		n += (size_t)snprintf(text + n, cap - n, "%d,adapter-%d,1,1\n", i, i % 1000);
	bn_trace *t = parse_ok(text);
	assert_int_equal(t->n, 5000);
	assert_int_equal(t->n_names, 1000);
	for (int i = 0; i < 5000; i++) {
		char want[32];
		snprintf(want, sizeof want, "adapter-%d", i % 1000);
		assert_string_equal(t->names[t->rows[i].adapter], want);
	}
	bn_trace_destroy(t);
	loom_free(text);
}

typedef struct bad_case {
	const char *name;
	const char *text;
	const char *want; /* substring of the error message */
} bad_case;

static const bad_case bad[] = {
	{ "too few fields", "0,a,1,1\n1,a,1\n", "t.csv:2: expected 4 fields" },
	{ "too many fields", "0,a,1,1,9\n", "t.csv:1: expected 4 fields" },
	{ "timestamp not a number", "x,a,1,1\n", "t.csv:1: timestamp_s" },
	{ "negative timestamp", "0,a,1,1\n-1,a,1,1\n", "t.csv:2: timestamp_s" },
	{ "empty timestamp", "\n\n,a,1,1\n", "t.csv:3: timestamp_s" },
	{ "prompt zero", "0,a,0,1\n", "t.csv:1: prompt_tokens" },
	{ "prompt float", "0,a,1.5,1\n", "t.csv:1: prompt_tokens" },
	{ "output word", "# c\n0,a,1,abc\n", "t.csv:2: output_tokens" },
	{ "output huge", "0,a,1,99999999\n", "t.csv:1: output_tokens" },
	{ "adapter with a space", "0,my adapter,1,1\n", "t.csv:1: adapter" },
	{ "bad header", "timestamp_s,model,prompt_tokens,output_tokens\n0,a,1,1\n",
	  "t.csv:1: header must be" },
	{ "header only", "timestamp_s,adapter,prompt_tokens,output_tokens\n", "no requests" },
	{ "empty", "", "no requests" },
	{ "comments only", "# nothing\n\n", "no requests" },
	{ "header late", "0,a,1,1\ntimestamp_s,adapter,prompt_tokens,output_tokens\n",
	  "t.csv:2: timestamp_s" },
};

static void test_trace_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		bn_trace *t = (bn_trace *)1;
		loom_err rc = bn_trace_parse(bad[i].text, strlen(bad[i].text), "t.csv", &t);
		if (rc == LOOM_OK)
			fail_msg("%s: accepted", bad[i].name);
		assert_null(t);
		if (!strstr(loom_errmsg(), bad[i].want))
			fail_msg("%s: message '%s' lacks '%s'", bad[i].name, loom_errmsg(),
				 bad[i].want);
	}
}

static void test_trace_load_missing_file(void **state)
{
	bn_trace *t;
	(void)state;
	assert_int_equal(bn_trace_load("/nonexistent/trace.csv", &t), LOOM_EIO);
	assert_null(t);
	assert_non_null(strstr(loom_errmsg(), "/nonexistent/trace.csv"));
}

static void test_names(void **state)
{
	char **names;
	int n;
	static const char good[] = "# adapters\nlora-a\r\n\n  lora-b  \nlora-c";
	(void)state;
	assert_int_equal(bn_names_parse(good, strlen(good), "n.txt", &names, &n), LOOM_OK);
	assert_int_equal(n, 3);
	assert_string_equal(names[0], "lora-a");
	assert_string_equal(names[1], "lora-b");
	assert_string_equal(names[2], "lora-c");
	bn_names_free(names, n);
	static const char spaced[] = "ok\nnot ok\n";
	assert_int_equal(bn_names_parse(spaced, strlen(spaced), "n.txt", &names, &n),
			 LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "n.txt:2"));
	assert_null(names);
	assert_int_equal(bn_names_parse("\n# x\n", 5, "n.txt", &names, &n), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "no adapter names"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_trace_with_header),
		cmocka_unit_test(test_trace_variants),
		cmocka_unit_test(test_trace_many_adapters),
		cmocka_unit_test(test_trace_errors),
		cmocka_unit_test(test_trace_load_missing_file),
		cmocka_unit_test(test_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
