/*
 * tests/integration/test_prefix_http.c — the prefix cache through HTTP, on
 * real gateways and workers (../shared/models/stories260k, two random
 * adapters written by loom-mkmodel and imported through the admin API).
 *
 * Three stacks: "on" (two workers, prefix cache on, the default), "solo"
 * (one worker, cache on: where a request goes is never in doubt) and "off"
 * (one worker with --no-prefix-cache: everything computed from scratch).
 *  - the same requests (shared 64-token prefixes over the base model and
 *    both adapters, greedy and seeded, logprobs) give the same choices
 *    (text, token ids, logprobs as printed) on both, and the "on" stack
 *    reports cached prompt tokens (usage.prompt_tokens_details);
 *  - an adapter replaced under its name (?replace=true) reuses no block of
 *    its old version: cached_tokens 0 and the choices of the new version
 *    computed from scratch (the "off" stack); the next request reuses;
 *  - five requests sharing a 160-token prefix all land on the worker that
 *    holds it, counted through /metrics (loom_worker_prefix_*), and reuse it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

static lt_stack on, off, solo;
static char *tmp;
static int ok_on, ok_off, ok_solo;

static int post(lt_stack *s, const char *path, const char *body, json_t **out)
{
	char url[256];
	lt_resp r;
	snprintf(url, sizeof url, "%s%s", s->url, path);
	if (lt_http("POST", url, body, NULL, 120000, &r))
		fail_msg("POST %s: no answer", url);
	long st = r.status;
	if (out)
		*out = json_loads(r.body, 0, NULL);
	if (st >= 300)
		fprintf(stderr, "POST %s -> %ld: %s\n", path, st, r.body);
	lt_resp_free(&r);
	return (int)st;
}

static void import_ad(lt_stack *s, const char *name, const char *dir, bool replace)
{
	char body[1024];
	snprintf(body, sizeof body, "{\"name\":\"%s\",\"base_model\":\"stories\",\"path\":\"%s/%s\"}",
		 name, tmp, dir);
	int st = post(s, replace ? "/admin/adapters?replace=true" : "/admin/adapters", body, NULL);
	assert_true(st == 200 || st == 201);
}

/* A prompt: ids [0, n_shared) from shared, the rest from seed. */
static void prompt_ids(char *out, size_t cap, int n, int n_shared, unsigned shared, unsigned seed)
{
	size_t o = 0;
	o += (size_t)snprintf(out + o, cap - o, "[");
	for (int i = 0; i < n; i++) {
		unsigned x = (i < n_shared ? shared : seed) * 2654435761u + (unsigned)i * 40503u;
		o += (size_t)snprintf(out + o, cap - o, "%s%u", i ? "," : "", 3 + (x >> 8) % 500);
	}
	snprintf(out + o, cap - o, "]");
}

/* POST /v1/completions; *choice gets choices[0] as compact JSON text
 * (loom_malloc'ed), *cached usage.prompt_tokens_details.cached_tokens. */
static void complete(lt_stack *s, const char *model, const char *ids, double temp, int seed,
		     char **choice, long *cached)
{
	char body[8192];
	json_t *j = NULL;
	snprintf(body, sizeof body,
		 "{\"model\":\"%s\",\"prompt\":%s,\"max_tokens\":10,\"temperature\":%g,"
		 "\"seed\":%d,\"logprobs\":2,\"return_token_ids\":true,\"ignore_eos\":true}",
		 model, ids, temp, seed);
	assert_int_equal(post(s, "/v1/completions", body, &j), 200);
	assert_non_null(j);
	json_t *c = json_array_get(json_object_get(j, "choices"), 0);
	assert_non_null(c);
	*choice = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
	json_t *d = json_object_get(json_object_get(j, "usage"), "prompt_tokens_details");
	assert_true(json_is_integer(json_object_get(d, "cached_tokens")));
	*cached = (long)json_integer_value(json_object_get(d, "cached_tokens"));
	json_decref(j);
}

/* The sum over the worker labels of a /metrics family, per worker: fills
 * vals[] in the order workers appear; returns how many. */
static int metric(lt_stack *s, const char *family, long long *vals, int max)
{
	char url[256], key[160];
	lt_resp r;
	int n = 0;
	snprintf(url, sizeof url, "%s/metrics", s->url);
	assert_int_equal(lt_http("GET", url, NULL, NULL, 10000, &r), 0);
	assert_int_equal(r.status, 200);
	snprintf(key, sizeof key, "%s{", family);
	for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
		if (strncmp(line, key, strlen(key)) || strstr(line, "model=") || n >= max)
			continue;
		char *sp = strrchr(line, ' ');
		vals[n++] = sp ? atoll(sp + 1) : -1;
	}
	lt_resp_free(&r);
	return n;
}

static int setup(void **state)
{
	(void)state;
	const char *stories = lt_shared_path("models/stories260k");
	char model[1024];
	tmp = lt_tmpdir("prefix-http");
	for (int i = 0; i < 2; i++)
		if (lt_sh("'%s' adapter --model '%s' --out '%s/ad%d' --rank 8 --alpha 16 "
			  "--targets q_proj,k_proj,v_proj,o_proj --seed %d >/dev/null",
			  lt_bin_path("loom-mkmodel"), stories, tmp, i, 70 + i))
			return -1;
	snprintf(model, sizeof model, "stories=%s", stories);
	const char *models[] = {model, NULL};
	const char *gw[] = {"--adapter-dir", tmp, NULL};
	const char *wk_off[] = {"--no-prefix-cache", NULL};
	if (lt_stack_start2(&on, models, 2, gw, NULL))
		return -1;
	ok_on = 1;
	if (lt_stack_start2(&off, models, 1, gw, wk_off))
		return -1;
	ok_off = 1;
	if (lt_stack_start2(&solo, models, 1, gw, NULL))
		return -1;
	ok_solo = 1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (ok_on)
		lt_stack_stop(&on);
	if (ok_off)
		lt_stack_stop(&off);
	if (ok_solo)
		lt_stack_stop(&solo);
	loom_free(tmp);
	return 0;
}

static void test_on_off_same(void **state)
{
	(void)state;
	static const char *const models[3] = {"stories", "a0", "a1"};
	char ids[4096];
	import_ad(&on, "a0", "ad0", false);
	import_ad(&on, "a1", "ad1", false);
	import_ad(&off, "a0", "ad0", false);
	import_ad(&off, "a1", "ad1", false);
	long reused = 0;
	for (int k = 0; k < 9; k++) {
		char *c_on, *c_off;
		long cached_on, cached_off;
		prompt_ids(ids, sizeof ids, 72 + k, 64, 1, 10 + (unsigned)k);
		double temp = k % 2 ? 0.8 : 0.0;
		complete(&on, models[k % 3], ids, temp, 100 + k, &c_on, &cached_on);
		complete(&off, models[k % 3], ids, temp, 100 + k, &c_off, &cached_off);
		if (strcmp(c_on, c_off))
			fail_msg("request %d (%s): cache on %s\n  off %s", k, models[k % 3], c_on, c_off);
		assert_int_equal(cached_off, 0);
		/* the first request of each model/adapter finds nothing of its own */
		if (k < 3)
			assert_int_equal(cached_on, 0);
		reused += cached_on;
		free(c_on);
		free(c_off);
	}
	printf("  9 requests: %ld prompt tokens reused with the cache on\n", reused);
	/* the router may send a request to the other worker when their fitted
	 * step times differ by more than the prefill saved (test_routed_to_holder
	 * checks the preference), so only some reuse is certain */
	assert_true(reused >= 48);
}

static void test_adapter_replaced(void **state)
{
	(void)state;
	char ids[4096], *before, *again, *after, *ref;
	long cached;
	prompt_ids(ids, sizeof ids, 80, 0, 0, 999);
	/* the reference: "x" = ad1, computed from scratch */
	import_ad(&off, "x", "ad1", false);
	complete(&off, "x", ids, 0.0, 1, &ref, &cached);
	/* "x" = ad0 on the one-worker cached stack, twice: the second reuses */
	import_ad(&solo, "x", "ad0", false);
	complete(&solo, "x", ids, 0.0, 1, &before, &cached);
	complete(&solo, "x", ids, 0.0, 1, &again, &cached);
	assert_string_equal(before, again);
	assert_int_equal(cached, 64);
	assert_true(strcmp(before, ref) != 0); /* the versions differ */
	/* replaced under its name: nothing of the old version is reused */
	import_ad(&solo, "x", "ad1", true);
	complete(&solo, "x", ids, 0.0, 1, &after, &cached);
	assert_int_equal(cached, 0);
	assert_string_equal(after, ref);
	free(after);
	complete(&solo, "x", ids, 0.0, 1, &after, &cached);
	assert_int_equal(cached, 64);
	assert_string_equal(after, ref);
	free(before);
	free(again);
	free(after);
	free(ref);
}

/* The counters once both workers sent STATS (a worker has no line before
 * its first) and the earlier requests' arrived: the same over 0.6 s. */
static void settled(long long p[2], long long c[2])
{
	long long q[2], d[2];
	for (int t = 0; t < 50; t++) {
		if (metric(&on, "loom_worker_prefix_prompt_tokens_total", p, 2) < 2 ||
		    metric(&on, "loom_worker_prefix_cached_tokens_total", c, 2) < 2) {
			lt_sh("sleep 0.2");
			continue;
		}
		lt_sh("sleep 0.6");
		assert_int_equal(metric(&on, "loom_worker_prefix_prompt_tokens_total", q, 2), 2);
		assert_int_equal(metric(&on, "loom_worker_prefix_cached_tokens_total", d, 2), 2);
		if (!memcmp(p, q, sizeof q) && !memcmp(c, d, sizeof d))
			return;
	}
	fail_msg("the prefix counters never settled");
}

static void test_routed_to_holder(void **state)
{
	(void)state;
	long long p0[2], p1[2], c0[2], c1[2];
	char ids[4096], *choice;
	long cached;
	settled(p0, c0);
	for (int k = 0; k < 5; k++) {
		prompt_ids(ids, sizeof ids, 176, 160, 2, 500 + (unsigned)k);
		complete(&on, "stories", ids, 0.0, 1, &choice, &cached);
		assert_int_equal(cached, k ? 160 : 0);
		free(choice);
	}
	/* STATS come with the heartbeat */
	settled(p1, c1);
	printf("  prompt tokens per worker: %lld, %lld; cached: %lld, %lld\n", p1[0] - p0[0],
	       p1[1] - p0[1], c1[0] - c0[0], c1[1] - c0[1]);
	/* one worker took all five, and reused the prefix four times */
	assert_true((p1[0] - p0[0] == 5 * 176 && p1[1] == p0[1]) ||
		    (p1[1] - p0[1] == 5 * 176 && p1[0] == p0[0]));
	assert_true((c1[0] - c0[0]) + (c1[1] - c0[1]) == 4 * 160);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_on_off_same),
		cmocka_unit_test(test_adapter_replaced),
		cmocka_unit_test(test_routed_to_holder),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
