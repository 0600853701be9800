/*
 * tests/integration/test_sampling_http.c — the sampling controls and
 * logprobs of issue 13 end to end: a real gateway and worker on loopback,
 * real HTTP, stories260k. Expected values come from tests/support/ref_llm
 * (an independent float64 forward): the greedy token and its runner-up,
 * the penalised greedy continuation, log-softmax values and top-k ids.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "tests/support/harness.h"
#include "tests/support/ref_llm.h"

static lt_stack stack;
static char model_arg[600];
static char model_dir[512];
static ref_llm *ref;
static int V;

/* "Once upon a time" as stories260k's tokenizer gives it (BOS included) */
static const int32_t ONCE[] = { 1, 403, 407, 261, 378 };

/* As in test_api.c: generation_config.json names 2 and 1 (the BOS that
 * ends a stories260k story) as EOS, so stories end for real. */
static int setup(void **state)
{
	(void)state;
	const char *src = lt_shared_path("models/stories260k");
	char *dir = lt_tmpdir("sampling-eos");
	if (!realpath(src, model_dir))
		return -1;
	if (lt_sh("for f in config.json model.safetensors tokenizer.json; do ln -s %s/$f %s/$f; done"
		  " && echo '{\"eos_token_id\": [2, 1]}' > %s/generation_config.json",
		  model_dir, dir, dir) != 0)
		return -1;
	snprintf(model_arg, sizeof model_arg, "stories=%s", dir);
	if (ref_llm_load(model_dir, NULL, &ref)) {
		fprintf(stderr, "reference: %s\n", ref_llm_errmsg());
		return -1;
	}
	V = ref_llm_vocab(ref);
	const char *models[] = { model_arg, NULL };
	return lt_stack_start(&stack, models, 1, NULL);
}

static int teardown(void **state)
{
	(void)state;
	lt_stack_stop(&stack);
	ref_llm_free(ref);
	return 0;
}

/* ---- HTTP ---- */

static json_t *post(const char *path, const char *body, long *status)
{
	char url[256];
	lt_resp r;
	snprintf(url, sizeof url, "%s%s", stack.url, path);
	assert_int_equal(lt_http("POST", url, body, NULL, 60000, &r), 0);
	*status = r.status;
	json_t *j = json_loads(r.body, 0, NULL);
	if (!j)
		fprintf(stderr, "not JSON (%ld): %s\n", r.status, r.body);
	lt_resp_free(&r);
	assert_non_null(j);
	return j;
}

static json_t *post_ok(const char *path, const char *body)
{
	long st;
	json_t *j = post(path, body, &st);
	if (st != 200)
		fprintf(stderr, "%s -> %ld: %s\n", body, st, json_dumps(j, 0));
	assert_int_equal(st, 200);
	return j;
}

static void expect_400(const char *path, const char *body, const char *param)
{
	long st;
	json_t *j = post(path, body, &st);
	json_t *p = json_object_get(json_object_get(j, "error"), "param");
	if (st != 400 || !json_is_string(p) || strcmp(json_string_value(p), param))
		fprintf(stderr, "%s: want 400 naming %s, got %ld %s\n", body, param, st,
			json_is_string(p) ? json_string_value(p) : "(no param)");
	assert_int_equal(st, 400);
	assert_string_equal(json_string_value(p), param);
	json_decref(j);
}

/* The data: events of an SSE body, parsed (a JSON array). */
static json_t *stream(const char *path, const char *body)
{
	char url[256];
	lt_resp r;
	json_t *ev = json_array();
	snprintf(url, sizeof url, "%s%s", stack.url, path);
	assert_int_equal(lt_http("POST", url, body, NULL, 60000, &r), 0);
	assert_int_equal(r.status, 200);
	for (char *p = r.body; (p = strstr(p, "data: ")); ) {
		p += 6;
		char *end = strstr(p, "\n\n");
		assert_non_null(end);
		*end = '\0';
		if (strcmp(p, "[DONE]")) {
			json_t *j = json_loads(p, 0, NULL);
			assert_non_null(j);
			json_array_append_new(ev, j);
		}
		p = end + 1;
	}
	lt_resp_free(&r);
	return ev;
}

static json_t *choice0(json_t *j)
{
	json_t *c = json_array_get(json_object_get(j, "choices"), 0);
	assert_non_null(c);
	return c;
}

static int32_t *token_ids(json_t *j, size_t *n)
{
	json_t *a = json_object_get(choice0(j), "token_ids");
	assert_true(json_is_array(a));
	*n = json_array_size(a);
	int32_t *ids = loom_malloc((*n ? *n : 1) * sizeof *ids);
	for (size_t i = 0; i < *n; i++)
		ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
	return ids;
}

/* ---- the float64 reference ---- */

/* Logits [vocab] of the last position of tok[0..n). */
static double *ref_last(const int32_t *tok, int n)
{
	double *all = loom_malloc((size_t)n * V * sizeof *all);
	double *last = loom_malloc((size_t)V * sizeof *last);
	assert_int_equal(ref_llm_forward(ref, tok, n, all), 0);
	memcpy(last, all + (size_t)(n - 1) * V, (size_t)V * sizeof *last);
	loom_free(all);
	return last;
}

static void log_softmax(double *l)
{
	double mx = -INFINITY, s = 0;
	for (int j = 0; j < V; j++)
		mx = l[j] > mx ? l[j] : mx;
	for (int j = 0; j < V; j++)
		s += exp(l[j] - mx);
	for (int j = 0; j < V; j++)
		l[j] -= mx + log(s);
}

static int argmax(const double *l, int skip)
{
	int b = -1;
	for (int j = 0; j < V; j++)
		if (j != skip && (b < 0 || l[j] > l[b]))
			b = j;
	return b;
}

/* The k best ids of l (ties: lower id), into top[k]. */
static void top_k(const double *l, int k, int *top)
{
	for (int i = 0; i < k; i++) {
		int b = -1;
		for (int j = 0; j < V; j++) {
			int used = 0;
			for (int q = 0; q < i; q++)
				used |= top[q] == j;
			if (!used && (b < 0 || l[j] > l[b]))
				b = j;
		}
		top[i] = b;
	}
}

/* ---- cases ---- */

/* logit_bias -100 on the greedy token gives the runner-up. */
static void test_logit_bias(void **state)
{
	(void)state;
	double *l = ref_last(ONCE, 5);
	int g1 = argmax(l, -1), g2 = argmax(l, g1);
	char body[512];
	size_t n;
	snprintf(body, sizeof body, "{\"model\":\"stories\",\"prompt\":[1,403,407,261,378],"
		 "\"max_tokens\":1,\"temperature\":0,\"return_token_ids\":true}");
	json_t *j = post_ok("/v1/completions", body);
	int32_t *ids = token_ids(j, &n);
	assert_int_equal(ids[0], g1);
	loom_free(ids);
	json_decref(j);
	snprintf(body, sizeof body, "{\"model\":\"stories\",\"prompt\":[1,403,407,261,378],"
		 "\"max_tokens\":1,\"temperature\":0,\"return_token_ids\":true,"
		 "\"logit_bias\":{\"%d\":-100}}", g1);
	j = post_ok("/v1/completions", body);
	ids = token_ids(j, &n);
	assert_int_equal(ids[0], g2);
	fprintf(stderr, "greedy %d, banned -> %d\n", g1, ids[0]);
	loom_free(ids);
	json_decref(j);
	/* a positive bias makes a chosen token win, also when sampling */
	snprintf(body, sizeof body, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
		 "\"max_tokens\":3,\"temperature\":1,\"seed\":5,\"return_token_ids\":true,"
		 "\"logit_bias\":{\"300\":100}}");
	j = post_ok("/v1/completions", body);
	ids = token_ids(j, &n);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(ids[i], 300);
	loom_free(ids);
	json_decref(j);
	loom_free(l);
}

/* Greedy with penalties equals the float64 reference's penalised argmax. */
static void test_penalties(void **state)
{
	(void)state;
	enum { N = 40 };
	const struct { double pres, freq, rep; } cases[] = {
		{ 2.0, 0.0, 1.0 }, { 0.0, 2.0, 1.0 }, { 0.0, 0.0, 6.0 }, { 1.2, 1.4, 3.0 },
	};
	int32_t plain[5 + N];
	int changed = 0;
	memcpy(plain, ONCE, sizeof ONCE);
	for (int t = 0; t < N; t++) {
		double *l = ref_last(plain, 5 + t);
		plain[5 + t] = argmax(l, -1);
		loom_free(l);
	}
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		int32_t ctx[5 + N];
		int cnt[4096] = { 0 }, seen[4096] = { 0 };
		memcpy(ctx, ONCE, sizeof ONCE);
		for (int i = 0; i < 5; i++)
			seen[ONCE[i]] = 1;
		for (int t = 0; t < N; t++) {
			double *l = ref_last(ctx, 5 + t);
			for (int j = 0; j < V; j++) {
				if (seen[j] && cases[c].rep != 1.0)
					l[j] = l[j] > 0 ? l[j] / cases[c].rep : l[j] * cases[c].rep;
				l[j] -= cnt[j] * cases[c].freq + (cnt[j] > 0) * cases[c].pres;
			}
			int g = argmax(l, -1);
			ctx[5 + t] = g;
			cnt[g]++;
			seen[g] = 1;
			loom_free(l);
		}
		changed += memcmp(ctx, plain, sizeof ctx) != 0;
		char body[512];
		snprintf(body, sizeof body, "{\"model\":\"stories\",\"prompt\":[1,403,407,261,378],"
			 "\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true,"
			 "\"return_token_ids\":true,\"presence_penalty\":%g,"
			 "\"frequency_penalty\":%g,\"repetition_penalty\":%g}",
			 N, cases[c].pres, cases[c].freq, cases[c].rep);
		json_t *j = post_ok("/v1/completions", body);
		size_t n;
		int32_t *ids = token_ids(j, &n);
		assert_int_equal(n, N);
		for (int t = 0; t < N; t++) {
			if (ids[t] != ctx[5 + t])
				fprintf(stderr, "case %zu token %d: %d, reference %d\n", c, t, ids[t],
					ctx[5 + t]);
			assert_int_equal(ids[t], ctx[5 + t]);
		}
		loom_free(ids);
		json_decref(j);
	}
	/* the penalties change the greedy story (else the test proves nothing) */
	fprintf(stderr, "%d of 4 penalty cases change the greedy story\n", changed);
	assert_true(changed >= 2);
	json_t *a, *b;
	/* seeded sampling with penalties and min_p is reproducible */
	const char *s = "{\"model\":\"stories\",\"prompt\":\"Once upon a time\",\"max_tokens\":20,"
			"\"temperature\":1,\"seed\":99,\"presence_penalty\":0.5,\"min_p\":0.05}";
	a = post_ok("/v1/completions", s);
	b = post_ok("/v1/completions", s);
	assert_string_equal(json_string_value(json_object_get(choice0(a), "text")),
			    json_string_value(json_object_get(choice0(b), "text")));
	json_decref(a);
	json_decref(b);
}

/* A prompt after which stories260k ends at once (greedy): the greedy story
 * of "Once upon a time" without its final EOS. Writes its ids into p (n
 * returned). */
static int ending_prompt(int32_t *p, int max)
{
	json_t *j = post_ok("/v1/completions", "{\"model\":\"stories\",\"prompt\":[1,403,407,261,"
			    "378],\"max_tokens\":400,\"temperature\":0,\"return_token_ids\":true}");
	size_t n;
	int32_t *ids = token_ids(j, &n);
	assert_string_equal(json_string_value(json_object_get(choice0(j), "finish_reason")), "stop");
	assert_true(5 + n - 1 < (size_t)max);
	memcpy(p, ONCE, sizeof ONCE);
	memcpy(p + 5, ids, (n - 1) * sizeof *ids);
	loom_free(ids);
	json_decref(j);
	return (int)(5 + n - 1);
}

static void test_min_tokens(void **state)
{
	(void)state;
	int32_t p[512];
	int n = ending_prompt(p, 512);
	double *l = ref_last(p, n);
	int g = argmax(l, -1);
	loom_free(l);
	fprintf(stderr, "after the finished story the reference's greedy token is %d\n", g);
	assert_true(g == 1 || g == 2); /* an EOS of the served model */
	char body[8192];
	int at = snprintf(body, sizeof body, "{\"model\":\"stories\",\"prompt\":[");
	for (int i = 0; i < n; i++)
		at += snprintf(body + at, sizeof body - (size_t)at, "%s%d", i ? "," : "", p[i]);
	char *tail = body + at;
	/* without min_tokens: one token (the EOS), finish_reason stop, no text */
	snprintf(tail, sizeof body - (size_t)at, "],\"max_tokens\":20,\"temperature\":0}");
	json_t *j = post_ok("/v1/completions", body);
	assert_string_equal(json_string_value(json_object_get(choice0(j), "finish_reason")), "stop");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"),
							    "completion_tokens")), 1);
	assert_string_equal(json_string_value(json_object_get(choice0(j), "text")), "");
	json_decref(j);
	/* min_tokens 6: at least 6 tokens, none of the first 5 an EOS */
	snprintf(tail, sizeof body - (size_t)at, "],\"max_tokens\":20,\"temperature\":0,"
		 "\"min_tokens\":6,\"return_token_ids\":true}");
	j = post_ok("/v1/completions", body);
	size_t nt;
	int32_t *ids = token_ids(j, &nt);
	assert_true(nt >= 6);
	for (size_t i = 0; i < 5; i++)
		assert_true(ids[i] != 1 && ids[i] != 2);
	loom_free(ids);
	json_decref(j);
	expect_400("/v1/completions", "{\"model\":\"stories\",\"prompt\":\"hi\",\"max_tokens\":3,"
		   "\"min_tokens\":4}", "min_tokens");
}

/* stop_token_ids end the generation with "stop", without the stop token's text. */
static void test_stop_token_ids(void **state)
{
	(void)state;
	json_t *j = post_ok("/v1/completions", "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
			    "\"max_tokens\":20,\"temperature\":0,\"return_token_ids\":true}");
	size_t n;
	int32_t *ids = token_ids(j, &n);
	assert_int_equal(n, 20);
	int stop = ids[6], k = 0;
	while (ids[k] != stop) /* its first occurrence */
		k++;
	json_decref(j);
	/* the text of the tokens before the stop token */
	char body[512];
	int at = snprintf(body, sizeof body, "{\"model\":\"stories\",\"tokens\":[");
	for (int i = 0; i < k; i++)
		at += snprintf(body + at, sizeof body - (size_t)at, "%s%d", i ? "," : "", ids[i]);
	snprintf(body + at, sizeof body - (size_t)at, "]}");
	json_t *d = post_ok("/detokenize", body);
	snprintf(body, sizeof body, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
		 "\"max_tokens\":20,\"temperature\":0,\"return_token_ids\":true,"
		 "\"stop_token_ids\":[%d]}", stop);
	j = post_ok("/v1/completions", body);
	size_t n2;
	int32_t *ids2 = token_ids(j, &n2);
	assert_int_equal(n2, (size_t)k + 1);
	assert_int_equal(ids2[k], stop);
	assert_string_equal(json_string_value(json_object_get(choice0(j), "finish_reason")), "stop");
	assert_string_equal(json_string_value(json_object_get(choice0(j), "text")),
			    json_string_value(json_object_get(d, "prompt")));
	json_decref(j);
	/* streamed: the same end */
	snprintf(body, sizeof body, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\","
		 "\"max_tokens\":20,\"temperature\":0,\"stream\":true,\"stop_token_ids\":[%d]}", stop);
	json_t *ev = stream("/v1/completions", body);
	json_t *last = json_array_get(ev, json_array_size(ev) - 1);
	assert_string_equal(json_string_value(json_object_get(choice0(last), "finish_reason")),
			    "stop");
	json_decref(ev);
	json_decref(d);
	loom_free(ids);
	loom_free(ids2);
	expect_400("/v1/completions", "{\"model\":\"stories\",\"prompt\":\"hi\","
		   "\"stop_token_ids\":[100000]}", "stop_token_ids");
}

/* Checks the legacy logprobs of completion tokens ids[0..n) after the
 * prompt ONCE (echo: the prompt's tokens come first) against the reference. */
static void check_legacy(json_t *lp, const int32_t *ids, size_t n, int k, int echo)
{
	json_t *toks = json_object_get(lp, "tokens"), *tl = json_object_get(lp, "token_logprobs");
	json_t *tops = json_object_get(lp, "top_logprobs"), *off = json_object_get(lp, "text_offset");
	size_t np = echo ? 5 : 0;
	int32_t ctx[64];
	assert_int_equal(json_array_size(toks), np + n);
	assert_int_equal(json_array_size(tl), np + n);
	assert_int_equal(json_array_size(tops), np + n);
	assert_int_equal(json_array_size(off), np + n);
	memcpy(ctx, ONCE, sizeof ONCE);
	memcpy(ctx + 5, ids, n * sizeof *ids);
	double *all = loom_malloc((5 + n) * (size_t)V * sizeof *all);
	assert_int_equal(ref_llm_forward(ref, ctx, (int)(5 + n), all), 0);
	if (echo) {
		assert_true(json_is_null(json_array_get(tl, 0)));
		assert_true(json_is_null(json_array_get(tops, 0)));
	}
	for (size_t i = echo ? 1 : np; i < np + n; i++) {
		size_t pos = echo ? i : 5 + i; /* the token's position in ctx */
		double *l = all + (pos - 1) * V;
		log_softmax(l);
		double got = json_real_value(json_array_get(tl, i));
		if (fabs(got - l[ctx[pos]]) > 1e-3)
			fprintf(stderr, "token %zu: logprob %.6f, reference %.6f\n", i, got,
				l[ctx[pos]]);
		assert_true(fabs(got - l[ctx[pos]]) < 1e-3);
		/* the map: the k best (and the token); values against the reference */
		int top[32];
		top_k(l, k, top);
		json_t *m = json_array_get(tops, i);
		assert_true(json_object_size(m) >= (size_t)k && json_object_size(m) <= (size_t)k + 1);
		const char *key;
		json_t *v;
		int matched = 0;
		json_object_foreach(m, key, v) {
			for (int q = 0; q < k; q++)
				matched += fabs(json_real_value(v) - l[top[q]]) < 1e-3;
		}
		assert_true(matched >= k);
	}
	/* text_offset: where each token starts in the text (ASCII here) */
	for (size_t i = 1; i < np + n; i++)
		assert_true(json_integer_value(json_array_get(off, i)) >=
			    json_integer_value(json_array_get(off, i - 1)));
	loom_free(all);
}

static void test_logprobs_completions(void **state)
{
	(void)state;
	const char *body = "{\"model\":\"stories\",\"prompt\":\"Once upon a time\",\"max_tokens\":12,"
			   "\"temperature\":0.8,\"seed\":7,\"logprobs\":5,\"return_token_ids\":true}";
	json_t *j = post_ok("/v1/completions", body);
	size_t n;
	int32_t *ids = token_ids(j, &n);
	json_t *lp = json_object_get(choice0(j), "logprobs");
	check_legacy(lp, ids, n, 5, 0);
	/* the tokens spell the text; text_offset is each one's start */
	const char *text = json_string_value(json_object_get(choice0(j), "text"));
	size_t at = 0;
	json_t *toks = json_object_get(lp, "tokens"), *off = json_object_get(lp, "text_offset");
	for (size_t i = 0; i < n; i++) {
		const char *t = json_string_value(json_array_get(toks, i));
		assert_int_equal(json_integer_value(json_array_get(off, i)), at);
		assert_memory_equal(text + at, t, strlen(t));
		at += strlen(t);
	}
	assert_int_equal(at, strlen(text));
	/* streamed: the chunks' logprobs concatenate to the same arrays */
	char sbody[512];
	snprintf(sbody, sizeof sbody, "%.*s,\"stream\":true}", (int)strlen(body) - 1, body);
	json_t *ev = stream("/v1/completions", sbody);
	json_t *cat = json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs",
				"top_logprobs", "text_offset");
	for (size_t e = 0; e < json_array_size(ev); e++) {
		json_t *c = json_array_get(json_object_get(json_array_get(ev, e), "choices"), 0);
		json_t *l = json_object_get(c, "logprobs");
		if (!json_is_object(l))
			continue;
		const char *key;
		json_t *v;
		json_object_foreach(l, key, v)
			json_array_extend(json_object_get(cat, key), v);
	}
	assert_true(json_equal(cat, lp));
	json_decref(cat);
	json_decref(ev);
	loom_free(ids);
	json_decref(j);
	expect_400("/v1/completions", "{\"model\":\"stories\",\"prompt\":\"hi\",\"logprobs\":21}",
		   "logprobs");
}

/* echo + logprobs: the prompt's tokens first (the first without a logprob),
 * and vLLM's prompt_logprobs, both against the reference. */
static void test_echo_prompt_logprobs(void **state)
{
	(void)state;
	const char *body = "{\"model\":\"stories\",\"prompt\":\"Once upon a time\",\"max_tokens\":6,"
			   "\"temperature\":0,\"logprobs\":3,\"echo\":true,\"prompt_logprobs\":2,"
			   "\"return_token_ids\":true}";
	json_t *j = post_ok("/v1/completions", body);
	size_t n;
	int32_t *ids = token_ids(j, &n);
	const char *text = json_string_value(json_object_get(choice0(j), "text"));
	assert_memory_equal(text, "Once upon a time", 16);
	json_t *lp = json_object_get(choice0(j), "logprobs");
	check_legacy(lp, ids, n, 3, 1);
	/* completion offsets continue after the prompt text */
	assert_int_equal(json_integer_value(json_array_get(json_object_get(lp, "text_offset"), 5)),
			 16);
	json_t *pl = json_object_get(choice0(j), "prompt_logprobs");
	assert_int_equal(json_array_size(pl), 5);
	assert_true(json_is_null(json_array_get(pl, 0)));
	double *all = loom_malloc(5 * (size_t)V * sizeof *all);
	assert_int_equal(ref_llm_forward(ref, ONCE, 5, all), 0);
	for (int i = 1; i < 5; i++) {
		double *l = all + (size_t)(i - 1) * V;
		int top[2];
		char key[16];
		log_softmax(l);
		top_k(l, 2, top);
		json_t *m = json_array_get(pl, (size_t)i);
		snprintf(key, sizeof key, "%d", ONCE[i]);
		json_t *e = json_object_get(m, key);
		assert_non_null(e);
		assert_true(fabs(json_real_value(json_object_get(e, "logprob")) - l[ONCE[i]]) < 1e-3);
		for (int q = 0; q < 2; q++) {
			snprintf(key, sizeof key, "%d", top[q]);
			e = json_object_get(m, key);
			assert_non_null(e);
			assert_true(fabs(json_real_value(json_object_get(e, "logprob")) - l[top[q]]) <
				    1e-3);
			assert_int_equal(json_integer_value(json_object_get(e, "rank")), q + 1);
		}
	}
	loom_free(all);
	/* streamed: prompt text and logprobs first, then the same arrays */
	char sbody[512];
	snprintf(sbody, sizeof sbody, "%.*s,\"stream\":true}", (int)strlen(body) - 1, body);
	json_t *ev = stream("/v1/completions", sbody);
	json_t *cat = json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs",
				"top_logprobs", "text_offset");
	char st[1024] = "";
	json_t *spl = NULL;
	for (size_t e = 0; e < json_array_size(ev); e++) {
		json_t *c = json_array_get(json_object_get(json_array_get(ev, e), "choices"), 0);
		if (!c)
			continue;
		strcat(st, json_string_value(json_object_get(c, "text")));
		if (json_object_get(c, "prompt_logprobs"))
			spl = json_object_get(c, "prompt_logprobs");
		json_t *l = json_object_get(c, "logprobs");
		const char *key;
		json_t *v;
		if (json_is_object(l))
			json_object_foreach(l, key, v)
				json_array_extend(json_object_get(cat, key), v);
	}
	assert_string_equal(st, text);
	assert_true(json_equal(cat, lp));
	assert_true(spl && json_equal(spl, pl));
	json_decref(cat);
	json_decref(ev);
	loom_free(ids);
	json_decref(j);
}

static void test_logprobs_chat(void **state)
{
	(void)state;
	const char *body = "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":"
			   "\"Once upon a time\"}],\"max_completion_tokens\":8,\"temperature\":0,"
			   "\"logprobs\":true,\"top_logprobs\":4,\"return_token_ids\":true}";
	json_t *j = post_ok("/v1/chat/completions", body);
	size_t n;
	int32_t *ids = token_ids(j, &n);
	json_t *pt = json_object_get(j, "prompt_token_ids");
	size_t np = json_array_size(pt);
	int32_t ctx[256];
	assert_true(np + n < 256);
	for (size_t i = 0; i < np; i++)
		ctx[i] = (int32_t)json_integer_value(json_array_get(pt, i));
	memcpy(ctx + np, ids, n * sizeof *ids);
	double *all = loom_malloc((np + n) * (size_t)V * sizeof *all);
	assert_int_equal(ref_llm_forward(ref, ctx, (int)(np + n), all), 0);
	json_t *content = json_object_get(json_object_get(choice0(j), "logprobs"), "content");
	assert_int_equal(json_array_size(content), n);
	for (size_t i = 0; i < n; i++) {
		double *l = all + (np + i - 1) * V;
		int top[4];
		log_softmax(l);
		top_k(l, 4, top);
		json_t *e = json_array_get(content, i);
		assert_true(fabs(json_real_value(json_object_get(e, "logprob")) - l[ids[i]]) < 1e-3);
		const char *tok = json_string_value(json_object_get(e, "token"));
		json_t *bytes = json_object_get(e, "bytes");
		assert_int_equal(json_array_size(bytes), strlen(tok));
		json_t *tl = json_object_get(e, "top_logprobs");
		assert_int_equal(json_array_size(tl), 4);
		for (int q = 0; q < 4; q++)
			assert_true(fabs(json_real_value(json_object_get(json_array_get(tl, q),
									  "logprob")) - l[top[q]]) < 1e-3);
		/* greedy: the token is the best alternative */
		assert_string_equal(json_string_value(json_object_get(json_array_get(tl, 0), "token")),
				    tok);
	}
	/* streamed: the chunks' content entries concatenate to the same list */
	char sbody[1024];
	snprintf(sbody, sizeof sbody, "%.*s,\"stream\":true}", (int)strlen(body) - 1, body);
	json_t *ev = stream("/v1/chat/completions", sbody);
	json_t *cat = json_array();
	for (size_t e = 0; e < json_array_size(ev); e++) {
		json_t *c = json_array_get(json_object_get(json_array_get(ev, e), "choices"), 0);
		json_t *l = json_object_get(c, "logprobs");
		if (json_is_object(l))
			json_array_extend(cat, json_object_get(l, "content"));
	}
	assert_true(json_equal(cat, content));
	json_decref(cat);
	json_decref(ev);
	loom_free(all);
	loom_free(ids);
	json_decref(j);
	expect_400("/v1/chat/completions", "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
		   "\"content\":\"x\"}],\"top_logprobs\":2}", "top_logprobs");
}

static void test_validation(void **state)
{
	(void)state;
	const char *c = "/v1/completions";
	expect_400(c, "{\"model\":\"stories\",\"prompt\":\"hi\",\"presence_penalty\":2.5}",
		   "presence_penalty");
	expect_400(c, "{\"model\":\"stories\",\"prompt\":\"hi\",\"frequency_penalty\":\"x\"}",
		   "frequency_penalty");
	expect_400(c, "{\"model\":\"stories\",\"prompt\":\"hi\",\"repetition_penalty\":0}",
		   "repetition_penalty");
	expect_400(c, "{\"model\":\"stories\",\"prompt\":\"hi\",\"min_p\":-0.1}", "min_p");
	expect_400(c, "{\"model\":\"stories\",\"prompt\":\"hi\",\"logit_bias\":{\"99999\":1}}",
		   "logit_bias");
	expect_400(c, "{\"model\":\"stories\",\"prompt\":\"hi\",\"logit_bias\":{\"5\":-101}}",
		   "logit_bias");
	expect_400("/v1/chat/completions", "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\","
		   "\"content\":\"x\"}],\"max_tokens\":4,\"max_completion_tokens\":5}",
		   "max_completion_tokens");
	expect_400(c, "{\"model\":\"stories\",\"prompt\":\"hi\",\"n\":17}", "n");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_logit_bias),
		cmocka_unit_test(test_penalties),
		cmocka_unit_test(test_min_tokens),
		cmocka_unit_test(test_stop_token_ids),
		cmocka_unit_test(test_logprobs_completions),
		cmocka_unit_test(test_echo_prompt_logprobs),
		cmocka_unit_test(test_logprobs_chat),
		cmocka_unit_test(test_validation),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
