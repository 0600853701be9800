/*
 * tests/integration/test_choices_http.c — `n` > 1 (issue 13 item 3) end to
 * end: a real gateway and worker on loopback, real HTTP, stories260k and a
 * random-weight Qwen2 model (loom-mkmodel, the real Qwen2.5 tokenizer and
 * template) for tools.
 *  - the prompt is prefilled once: the worker's prefix-cache counters
 *    (/metrics) grow by 4 prompts of context for n = 4 but by at most one
 *    prompt plus 16 tokens (the tail past the last full KV block) per
 *    extra choice of computed tokens;
 *  - with a seed S, choice i equals a single request with seed S + i:
 *    text, token ids, finish reason and logprobs (completions with stop
 *    strings, echo + logprobs + prompt_logprobs, chat with top_logprobs,
 *    guided_choice, forced tool calls);
 *  - streamed equals non-streamed, every chunk carries one choice with its
 *    index, each chat choice has its role chunk, one usage chunk and one
 *    [DONE] at the end; usage counts the prompt once and every choice's
 *    completion tokens.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

static lt_stack stack;
static char *tmp;

static int setup(void **state)
{
	(void)state;
	static char sarg[600], qarg[600];
	char sdir[512], qdir[560];
	tmp = lt_tmpdir("choices-http");
	if (!realpath(lt_shared_path("models/stories260k"), sdir))
		return -1;
	snprintf(qdir, sizeof qdir, "%s/q", tmp);
	if (lt_sh("%s model --out %s --family qwen2 --hidden 64 --ffn 96 --layers 2 --heads 4 "
		  "--kv-heads 2 --ctx 2048 --seed 7 --tied --tokenizer-json %s --tokenizer-config %s "
		  ">/dev/null", lt_bin_path("loom-mkmodel"), qdir,
		  lt_shared_path("fixtures/qwen2.5-0.5b-instruct/tokenizer.json"),
		  lt_shared_path("fixtures/qwen2.5-0.5b-instruct/tokenizer_config.json")))
		return -1;
	snprintf(sarg, sizeof sarg, "stories=%s", sdir);
	snprintf(qarg, sizeof qarg, "q=%s", qdir);
	const char *models[] = { sarg, qarg, NULL };
	return lt_stack_start(&stack, models, 1, NULL);
}

static int teardown(void **state)
{
	(void)state;
	lt_stack_stop(&stack);
	lt_sh("rm -rf '%s'", tmp);
	loom_free(tmp);
	return 0;
}

/* ---- HTTP ---- */

static json_t *post_ok(const char *path, const char *body)
{
	char url[256];
	lt_resp r;
	snprintf(url, sizeof url, "%s%s", stack.url, path);
	assert_int_equal(lt_http("POST", url, body, NULL, 120000, &r), 0);
	if (r.status != 200)
		fail_msg("%s -> %ld: %s", body, r.status, r.body);
	json_t *j = json_loads(r.body, 0, NULL);
	lt_resp_free(&r);
	assert_non_null(j);
	return j;
}

/* The data: events of an SSE body (a JSON array); exactly one [DONE], last. */
static json_t *stream(const char *path, const char *body)
{
	char url[256];
	lt_resp r;
	json_t *ev = json_array();
	int done = 0;
	snprintf(url, sizeof url, "%s%s", stack.url, path);
	assert_int_equal(lt_http("POST", url, body, NULL, 120000, &r), 0);
	if (r.status != 200)
		fail_msg("%s -> %ld: %s", body, r.status, r.body);
	for (char *p = r.body; (p = strstr(p, "data: ")); ) {
		p += 6;
		char *end = strstr(p, "\n\n");
		assert_non_null(end);
		*end = '\0';
		assert_int_equal(done, 0);
		if (!strcmp(p, "[DONE]")) {
			done++;
		} else {
			json_t *j = json_loads(p, 0, NULL);
			assert_non_null(j);
			json_array_append_new(ev, j);
		}
		p = end + 1;
	}
	assert_int_equal(done, 1);
	lt_resp_free(&r);
	return ev;
}

/* The first sample of a /metrics family (the worker's own line). */
static double metric(const char *name)
{
	char url[128], key[128];
	lt_resp r;
	snprintf(url, sizeof url, "%s/metrics", stack.url);
	if (lt_http("GET", url, NULL, NULL, 5000, &r) != 0 || r.status != 200)
		fail_msg("GET /metrics failed");
	snprintf(key, sizeof key, "\n%s{", name);
	const char *p = strstr(r.body, key);
	const char *v = p ? strstr(p, "} ") : NULL;
	double x = v ? strtod(v + 2, NULL) : -1;
	lt_resp_free(&r);
	if (x < 0)
		fail_msg("/metrics has no %s", name);
	return x;
}

/* ---- comparing choices ---- */

static char *dumps(const json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
}

/* A choice without what may differ between choice i of an n-request and
 * the single request: its index, tool calls' ids (drawn per choice). */
static json_t *comparable(json_t *c)
{
	json_t *x = json_deep_copy(c), *tc;
	size_t i;
	json_object_del(x, "index");
	json_array_foreach(json_object_get(json_object_get(x, "message"), "tool_calls"), i, tc)
		json_object_del(tc, "id");
	return x;
}

static void expect_same(json_t *a, json_t *b, const char *what)
{
	json_t *x = comparable(a), *y = comparable(b);
	if (!json_equal(x, y)) {
		char *sx = dumps(x), *sy = dumps(y);
		fprintf(stderr, "%s differ:\n  %s\n  %s\n", what, sx, sy);
		free(sx);
		free(sy);
		fail_msg("%s differ", what);
	}
	json_decref(x);
	json_decref(y);
}

/* Appends array b's items to array a. */
static void extend(json_t *a, json_t *b)
{
	size_t i;
	json_t *v;
	json_array_foreach(b, i, v)
		json_array_append(a, v);
}

/*
 * Folds a stream's chunks into one choice per index, in the non-stream
 * shape: text or message.content concatenated, token_ids and the logprobs
 * arrays extended, finish_reason, tool_calls (their ids dropped by the
 * comparison), prompt_logprobs. Checks that every chunk carries one choice
 * with an index in [0, n), each chat choice starts with its role chunk,
 * nothing follows a choice's finish, and one usage chunk comes last.
 * *usage gets it (a new reference).
 */
static json_t *fold(json_t *ev, size_t n, bool chat, json_t **usage)
{
	json_t *out = json_array(), *e;
	size_t k;
	*usage = NULL;
	for (size_t i = 0; i < n; i++)
		json_array_append_new(out, json_object());
	json_array_foreach(ev, k, e) {
		json_t *chs = json_object_get(e, "choices");
		assert_true(json_is_array(chs));
		if (json_array_size(chs) == 0) {
			assert_null(*usage);
			*usage = json_incref(json_object_get(e, "usage"));
			continue;
		}
		assert_null(*usage);
		assert_int_equal(json_array_size(chs), 1);
		json_t *c = json_array_get(chs, 0), *ix = json_object_get(c, "index");
		if (!json_is_integer(ix))
			fail_msg("a chunk without an index: %s", dumps(e));
		size_t i = (size_t)json_integer_value(ix);
		assert_true(i < n);
		json_t *o = json_array_get(out, i);
		assert_null(json_object_get(o, "finish_reason"));
		json_t *d = json_object_get(c, "delta");
		if (chat && !json_object_get(o, "message")) {
			assert_string_equal(json_string_value(json_object_get(d, "role")), "assistant");
			json_object_set_new(o, "message", json_pack("{s:s, s:s}", "role", "assistant",
								     "content", ""));
		}
		const char *t = chat ? json_string_value(json_object_get(d, "content"))
				     : json_string_value(json_object_get(c, "text"));
		json_t *holder = chat ? json_object_get(o, "message") : o;
		const char *key = chat ? "content" : "text";
		if (t) {
			const char *had = json_string_value(json_object_get(holder, key));
			char *cat = malloc(strlen(had ? had : "") + strlen(t) + 1);
			strcpy(cat, had ? had : "");
			strcat(cat, t);
			json_object_set_new(holder, key, json_string(cat));
			free(cat);
		} else if (!chat && !json_object_get(o, "text")) {
			json_object_set_new(o, "text", json_string(""));
		}
		if (chat && json_object_get(d, "tool_calls")) {
			json_t *calls = json_deep_copy(json_object_get(d, "tool_calls")), *tc;
			size_t m;
			json_array_foreach(calls, m, tc)
				json_object_del(tc, "index");
			json_object_set_new(holder, "tool_calls", calls);
		}
		json_t *ids = json_object_get(c, "token_ids");
		if (ids) {
			if (!json_object_get(o, "token_ids"))
				json_object_set_new(o, "token_ids", json_array());
			extend(json_object_get(o, "token_ids"), ids);
		}
		json_t *lp = json_object_get(c, "logprobs");
		if (!json_object_get(o, "logprobs"))
			json_object_set_new(o, "logprobs", json_null());
		if (json_is_object(lp)) {
			json_t *have = json_object_get(o, "logprobs"), *v;
			const char *f;
			if (!json_is_object(have)) {
				have = json_object();
				json_object_set_new(o, "logprobs", have);
			}
			json_object_foreach(lp, f, v) {
				if (!json_is_array(v)) { /* chat's "refusal": null */
					json_object_set(have, f, v);
					continue;
				}
				if (!json_object_get(have, f))
					json_object_set_new(have, f, json_array());
				extend(json_object_get(have, f), v);
			}
		}
		if (json_object_get(c, "prompt_logprobs"))
			json_object_set(o, "prompt_logprobs", json_object_get(c, "prompt_logprobs"));
		json_t *fin = json_object_get(c, "finish_reason");
		if (json_is_string(fin))
			json_object_set(o, "finish_reason", fin);
	}
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_array_get(out, i);
		if (!json_is_string(json_object_get(o, "finish_reason")))
			fail_msg("choice %zu has no finish_reason in the stream", i);
		json_t *m = json_object_get(o, "message");
		if (m && json_object_get(m, "tool_calls") &&
		    !strcmp(json_string_value(json_object_get(m, "content")), ""))
			json_object_set_new(m, "content", json_null());
		json_object_set_new(o, "index", json_integer((json_int_t)i));
	}
	assert_non_null(*usage);
	return out;
}

/* The request body with ",\"n\":N,\"seed\":S" (n 0: no n) and more fields. */
static char *body_with(const char *base, int n, long long seed, const char *more)
{
	char *b = NULL;
	char nfield[32] = "";
	if (n)
		snprintf(nfield, sizeof nfield, ",\"n\":%d", n);
	assert_true(asprintf(&b, "%s%s,\"seed\":%lld%s}", base, nfield, seed, more) > 0);
	return b;
}

/*
 * base: a request body without its closing brace. With n choices and seed:
 * the response has them sorted by index, each equal to a single request
 * with seed + i (logprobs included), and the same request streamed gives
 * the same choices; usage: the prompt once, every choice's tokens. Returns
 * the response (new reference).
 */
static json_t *check_choices(const char *path, const char *base, int n, long long seed)
{
	bool chat = strstr(path, "chat") != NULL;
	char *b = body_with(base, n, seed, "");
	json_t *j = post_ok(path, b);
	json_t *chs = json_object_get(j, "choices");
	assert_int_equal(json_array_size(chs), (size_t)n);
	long long completion = 0;
	for (int i = 0; i < n; i++) {
		json_t *c = json_array_get(chs, (size_t)i);
		assert_int_equal(json_integer_value(json_object_get(c, "index")), i);
		char *sb = body_with(base, 0, seed + i, "");
		json_t *one = post_ok(path, sb);
		char what[64];
		snprintf(what, sizeof what, "choice %d and the request with seed %lld", i, seed + i);
		expect_same(c, json_array_get(json_object_get(one, "choices"), 0), what);
		completion += json_integer_value(json_object_get(json_object_get(one, "usage"),
								 "completion_tokens"));
		assert_int_equal(json_integer_value(json_object_get(json_object_get(one, "usage"),
								    "prompt_tokens")),
				 json_integer_value(json_object_get(json_object_get(j, "usage"),
								    "prompt_tokens")));
		json_decref(one);
		free(sb);
	}
	json_t *u = json_object_get(j, "usage");
	assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), completion);
	free(b);

	b = body_with(base, n, seed, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
	json_t *ev = stream(path, b), *su;
	json_t *folded = fold(ev, (size_t)n, chat, &su);
	for (int i = 0; i < n; i++) {
		char what[64];
		snprintf(what, sizeof what, "choice %d streamed and not", i);
		json_t *c = json_array_get(chs, (size_t)i), *s = json_array_get(folded, (size_t)i);
		expect_same(c, s, what);
	}
	assert_true(json_equal(json_object_get(su, "completion_tokens"),
			       json_object_get(u, "completion_tokens")));
	assert_true(json_equal(json_object_get(su, "prompt_tokens"),
			       json_object_get(u, "prompt_tokens")));
	json_decref(su);
	json_decref(folded);
	json_decref(ev);
	free(b);
	return j;
}

/* ---- tests ---- */

/* n = 4 over an 80-token prompt no request sent before: the first choice
 * computes it, the others take its full blocks (64 tokens) and compute
 * their 16-token tail. */
static void test_prefilled_once(void **state)
{
	(void)state;
	enum { P = 80, N = 4 };
	char body[1024];
	size_t at = (size_t)snprintf(body, sizeof body, "{\"model\":\"stories\",\"prompt\":[1");
	for (int i = 1; i < P; i++)
		at += (size_t)snprintf(body + at, sizeof body - at, ",%d", 3 + (i * 37 + 11) % 500);
	snprintf(body + at, sizeof body - at, "],\"n\":%d,\"seed\":42,\"max_tokens\":8,"
		 "\"return_token_ids\":true}", N);
	double p0 = metric("loom_worker_prefix_prompt_tokens_total");
	double c0 = metric("loom_worker_prefix_cached_tokens_total");
	json_t *j = post_ok("/v1/completions", body);
	/* STATS follow each iteration: wait until the four admissions show */
	double p1 = p0, c1 = c0;
	for (int t = 0; t < 100 && p1 - p0 < N * P; t++) {
		usleep(50 * 1000);
		p1 = metric("loom_worker_prefix_prompt_tokens_total");
		c1 = metric("loom_worker_prefix_cached_tokens_total");
	}
	double computed = (p1 - p0) - (c1 - c0);
	print_message("n = %d, %d-token prompt: %.0f context tokens admitted, %.0f from the cache, "
		      "%.0f computed\n", N, P, p1 - p0, c1 - c0, computed);
	assert_true(p1 - p0 == N * P);
	assert_true(computed >= P);
	assert_true(computed <= P + (N - 1) * 16);
	json_t *u = json_object_get(j, "usage");
	assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), P);
	/* nothing was cached before the request: what its choices shared is not counted */
	assert_int_equal(json_integer_value(json_object_get(json_object_get(u,
				"prompt_tokens_details"), "cached_tokens")), 0);
	long long sum = 0;
	for (size_t i = 0; i < N; i++)
		sum += (long long)json_array_size(json_object_get(json_array_get(
				json_object_get(j, "choices"), i), "token_ids"));
	assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), sum);
	json_decref(j);
}

#define STORY "{\"model\":\"stories\",\"prompt\":\"Once upon a time, there was a little girl " \
	"named Lily. She loved to play outside in the park with her friends. One day, she saw " \
	"a big red ball under a tree. She ran to the ball and picked it up. Then she\""

/* Completions with stop strings and logprobs: four choices, each the request
 * with its seed; streamed the same. */
static void test_completions(void **state)
{
	(void)state;
	json_t *j = check_choices("/v1/completions", STORY ",\"max_tokens\":16,\"temperature\":1,"
				  "\"logprobs\":3,\"return_token_ids\":true,\"stop\":[\" the\","
				  "\"ball\"]", 4, 7);
	assert_true(json_integer_value(json_object_get(json_object_get(j, "usage"),
						       "prompt_tokens")) >= 64);
	/* different seeds, different choices */
	json_t *chs = json_object_get(j, "choices");
	int differ = 0;
	for (size_t i = 1; i < 4; i++)
		differ += !json_equal(json_object_get(json_array_get(chs, 0), "token_ids"),
				      json_object_get(json_array_get(chs, i), "token_ids"));
	assert_true(differ > 0);
	json_decref(j);
	/* with no seed the choices still come, each with its own stream of draws */
	json_t *k = post_ok("/v1/completions", STORY ",\"max_tokens\":8,\"n\":3}");
	assert_int_equal(json_array_size(json_object_get(k, "choices")), 3);
	json_decref(k);
}

/* echo + logprobs + prompt_logprobs: every choice echoes the prompt with its
 * logprobs (the workers compute them per choice). */
static void test_echo(void **state)
{
	(void)state;
	json_t *j = check_choices("/v1/completions", "{\"model\":\"stories\",\"prompt\":\"Once upon "
				  "a time\",\"max_tokens\":6,\"echo\":true,\"logprobs\":2,"
				  "\"prompt_logprobs\":1", 2, 3);
	json_t *c1 = json_array_get(json_object_get(j, "choices"), 1);
	assert_int_equal(strncmp(json_string_value(json_object_get(c1, "text")), "Once upon a time",
				 16), 0);
	assert_non_null(json_object_get(c1, "prompt_logprobs"));
	json_decref(j);
}

/* Chat with top_logprobs, streamed: a role chunk per choice. */
static void test_chat(void **state)
{
	(void)state;
	json_t *j = check_choices("/v1/chat/completions", "{\"model\":\"stories\",\"messages\":"
				  "[{\"role\":\"user\",\"content\":\"Tell me about a dog and a cat "
				  "who play in the garden every day, and what they find there\"}],"
				  "\"max_tokens\":12,\"logprobs\":true,\"top_logprobs\":2", 3, 11);
	json_decref(j);
}

/* Structured outputs: each choice is held to the grammar. */
static void test_guided(void **state)
{
	(void)state;
	json_t *j = check_choices("/v1/completions", "{\"model\":\"stories\",\"prompt\":\"Pick:\","
				  "\"max_tokens\":10,\"guided_choice\":[\"alpha\",\"beta\",\"gamma\"]",
				  4, 5);
	json_t *c;
	size_t i;
	json_array_foreach(json_object_get(j, "choices"), i, c) {
		const char *t = json_string_value(json_object_get(c, "text"));
		assert_true(!strcmp(t, "alpha") || !strcmp(t, "beta") || !strcmp(t, "gamma"));
	}
	json_decref(j);
}

/* Forced tool calls: each choice one call, parsed, with ids of its own. */
static void test_tools(void **state)
{
	(void)state;
	json_t *j = check_choices("/v1/chat/completions", "{\"model\":\"q\",\"messages\":[{\"role\":"
				  "\"user\",\"content\":\"time?\"}],\"max_tokens\":300,\"tools\":"
				  "[{\"type\":\"function\",\"function\":{\"name\":\"get_time\","
				  "\"parameters\":{\"type\":\"object\",\"properties\":{\"tz\":"
				  "{\"enum\":[\"UTC\",\"CET\",\"PST\"]}},\"required\":[\"tz\"],"
				  "\"additionalProperties\":false}}}],\"tool_choice\":\"required\"",
				  2, 21);
	const char *ids[2];
	for (size_t i = 0; i < 2; i++) {
		json_t *c = json_array_get(json_object_get(j, "choices"), i);
		assert_string_equal(json_string_value(json_object_get(c, "finish_reason")),
				    "tool_calls");
		json_t *calls = json_object_get(json_object_get(c, "message"), "tool_calls");
		assert_int_equal(json_array_size(calls), 1);
		json_t *fn = json_object_get(json_array_get(calls, 0), "function");
		assert_string_equal(json_string_value(json_object_get(fn, "name")), "get_time");
		json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0,
					  NULL);
		assert_non_null(args);
		assert_true(json_is_string(json_object_get(args, "tz")));
		json_decref(args);
		ids[i] = json_string_value(json_object_get(json_array_get(calls, 0), "id"));
	}
	assert_string_not_equal(ids[0], ids[1]);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prefilled_once), /* first: its prompt must be new */
		cmocka_unit_test(test_completions),
		cmocka_unit_test(test_echo),
		cmocka_unit_test(test_chat),
		cmocka_unit_test(test_guided),
		cmocka_unit_test(test_tools),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
