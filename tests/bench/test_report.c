/*
 * tests/bench/test_report.c — figures from hand-made samples (throughput,
 * TPOT, SLO attainment per class, errors by kind), the JSON report's shape,
 * the figures per turn of a --turns run and the cached prompt tokens, and
 * --extract's columns (scalars per point, arrays as gnuplot blocks).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bn_report.h"
#include "common/alloc.h"

#define CLOSE(a, b) assert_true(fabs((a) - (b)) < 1e-9)

/* Two classes: interactive (ttft 1000 ms, tpot 200 ms) and batch (none). */
static void two_classes(bn_config *c)
{
	bn_config_init(c);
	c->requests = 4;
	c->concurrency = 2;
	assert_int_equal(bn_slo_mix_parse(c, "interactive:0.5,batch:0.5"), LOOM_OK);
}

static bn_sample ok(double t, double ttft, double lat, int tokens, int slo, int adapter)
{
	return (bn_sample){ .t_sched = t, .ttft = ttft, .latency = lat, .t_end = t + lat,
			    .adapter = adapter, .slo = slo, .prompt_tokens = 10,
			    .max_tokens = tokens, .tokens = tokens, .chunks = tokens,
			    .status = 200, .err = BN_OK, .conv = -1, .turn = 1,
			    .cached_tokens = -1 };
}

static bn_result *make_result(void)
{
	bn_result *r = loom_calloc(1, sizeof *r);
	assert_non_null(r);
	r->n = 5;
	r->samples = loom_calloc(r->n, sizeof *r->samples);
	assert_non_null(r->samples);
	/* interactive: met (ttft 0.5 s, tpot (2.5-0.5)/10 = 0.2 s -> 200 ms: met, <=) */
	r->samples[0] = ok(0, 0.5, 2.5, 11, 0, 3);
	/* interactive: TTFT 1.5 s misses */
	r->samples[1] = ok(1, 1.5, 2.0, 2, 0, 3);
	/* interactive: 1 token, no TPOT, ttft ok: met */
	r->samples[2] = ok(2, 0.1, 0.1, 1, 0, 5);
	/* batch: slow but no targets: met */
	r->samples[3] = ok(3, 9.0, 19.0, 11, 1, -1);
	/* batch: failed with a 503: missed */
	r->samples[4] = (bn_sample){ .t_sched = 4, .ttft = NAN, .latency = NAN, .t_end = 4.1,
				     .adapter = 7, .slo = 1, .prompt_tokens = 10, .max_tokens = 5,
				     .status = 503, .err = BN_ERR_HTTP_5XX, .conv = -1, .turn = 1,
				     .cached_tokens = -1 };
	snprintf(r->examples[BN_ERR_HTTP_5XX], sizeof r->examples[0], "HTTP 503: no worker");
	r->elapsed_s = 22.0;
	return r;
}

static void test_figures(void **state)
{
	bn_config c;
	bn_figures f;
	(void)state;
	two_classes(&c);
	bn_result *r = make_result();
	assert_int_equal(bn_figures_compute(&c, r, &f), LOOM_OK);
	assert_int_equal(f.sent, 5);
	assert_int_equal(f.completed, 4);
	assert_int_equal(f.errors, 1);
	assert_int_equal(f.by_kind[BN_ERR_HTTP_5XX], 1);
	assert_int_equal(f.output_tokens, 11 + 2 + 1 + 11);
	CLOSE(f.requests_per_s, 4 / 22.0);
	CLOSE(f.output_tokens_per_s, 25 / 22.0);
	assert_int_equal(f.ttft.count, 4);
	CLOSE(f.ttft.min, 100);
	CLOSE(f.ttft.max, 9000);
	assert_int_equal(f.tpot.count, 3); /* the 1-token request has none */
	CLOSE(f.tpot.min, 200);            /* (2.5 - 0.5) / 10 s */
	CLOSE(f.tpot.max, 1000);           /* (19 - 9) / 10 s and (2.0 - 1.5) / 1 */
	assert_int_equal(f.latency.count, 4);
	assert_int_equal(f.slo[0].requests, 3);
	assert_int_equal(f.slo[0].attained, 2);
	assert_int_equal(f.slo[1].requests, 2);
	assert_int_equal(f.slo[1].attained, 1);
	assert_int_equal(f.slo_all.attained, 3);
	assert_int_equal(f.adapters_used, 3); /* 3, 5, 7 */
	bn_result_destroy(r);
	bn_config_fini(&c);
}

static void test_report_json(void **state)
{
	bn_config c;
	bn_figures f;
	json_t *j;
	(void)state;
	two_classes(&c);
	bn_result *r = make_result();
	assert_int_equal(bn_figures_compute(&c, r, &f), LOOM_OK);
	assert_int_equal(bn_report_json(&c, r, &f, &j), LOOM_OK);
	assert_int_equal(json_integer_value(json_object_get(j, "completed")), 4);
	assert_int_equal(json_integer_value(json_object_get(j, "sent")), 5);
	assert_int_equal(json_integer_value(json_object_get(j, "output_tokens")), 25);
	static const char *const metrics[] = { "ttft", "tpot", "latency" };
	for (int k = 0; k < 3; k++) {
		json_t *m = json_object_get(j, metrics[k]);
		double p50 = json_number_value(json_object_get(m, "p50"));
		double p90 = json_number_value(json_object_get(m, "p90"));
		double p99 = json_number_value(json_object_get(m, "p99"));
		assert_true(p50 > 0 && p50 <= p90 && p90 <= p99);
	}
	json_t *tp = json_object_get(j, "throughput");
	CLOSE(json_number_value(json_object_get(tp, "requests_per_s")), 4 / 22.0);
	CLOSE(json_number_value(json_object_get(tp, "output_tokens_per_s")), 25 / 22.0);
	json_t *errs = json_object_get(j, "errors");
	assert_int_equal(json_integer_value(json_object_get(errs, "total")), 1);
	assert_int_equal(json_integer_value(json_object_get(errs, "http_5xx")), 1);
	assert_int_equal(json_integer_value(json_object_get(errs, "timeout")), 0);
	assert_string_equal(json_string_value(json_object_get(json_object_get(errs, "examples"),
							      "http_5xx")), "HTTP 503: no worker");
	json_t *inter = json_object_get(json_object_get(j, "slo"), "interactive");
	CLOSE(json_number_value(json_object_get(inter, "attainment")), 2.0 / 3.0);
	CLOSE(json_number_value(json_object_get(inter, "ttft_ms")), 1000);
	assert_true(json_is_null(json_object_get(json_object_get(json_object_get(j, "slo"),
								 "batch"), "ttft_ms")));
	json_t *s = json_object_get(j, "samples");
	assert_int_equal(json_array_size(json_object_get(s, "latency_ms")), 5);
	assert_true(json_is_null(json_array_get(json_object_get(s, "latency_ms"), 4)));
	assert_string_equal(json_string_value(json_array_get(json_object_get(s, "error"), 4)),
			    "http_5xx");
	assert_non_null(json_object_get(json_object_get(j, "config"), "url"));
	assert_true(json_integer_value(json_object_get(json_object_get(j, "host"), "cpus")) >= 1);
	json_decref(j);
	bn_result_destroy(r);
	bn_config_fini(&c);
}

/* A turn of conversation conv: ttft s, prompt tokens, cached (-1: not reported). */
static bn_sample turn(long conv, int t, double ttft, int prompt, long cached)
{
	bn_sample s = ok(t, ttft, ttft + 1.0, 4, 0, -1);
	s.conv = conv;
	s.turn = t;
	s.prompt_tokens = prompt;
	s.cached_tokens = cached;
	return s;
}

static void test_turns_and_cached(void **state)
{
	bn_config c;
	bn_figures f;
	json_t *j;
	(void)state;
	bn_config_init(&c);
	c.requests = 5;
	c.concurrency = 2;
	c.turns = 3;
	c.shared_prefix = 64;
	bn_result *r = loom_calloc(1, sizeof *r);
	assert_non_null(r);
	r->n = 5;
	r->samples = loom_calloc(r->n, sizeof *r->samples);
	assert_non_null(r->samples);
	r->samples[0] = turn(0, 1, 0.4, 100, 64);
	r->samples[1] = turn(1, 1, 0.6, 110, 64);
	r->samples[2] = turn(0, 2, 0.1, 150, 100);
	r->samples[3] = turn(1, 2, NAN, 170, -1);
	r->samples[3].err = BN_ERR_HTTP_5XX;
	r->samples[3].latency = NAN;
	r->samples[4] = turn(0, 3, 0.2, 200, -1);
	r->elapsed_s = 10;
	r->substituted = 1;
	assert_int_equal(bn_figures_compute(&c, r, &f), LOOM_OK);
	assert_int_equal(f.cached_tokens, 228);
	assert_int_equal(f.cached_reported, 3);
	assert_int_equal(f.cached_prompt_tokens, 360);
	assert_int_equal(bn_report_json(&c, r, &f, &j), LOOM_OK);
	assert_int_equal(json_integer_value(json_object_get(j, "cached_tokens")), 228);
	assert_int_equal(json_integer_value(json_object_get(j, "cached_tokens_reported")), 3);
	CLOSE(json_number_value(json_object_get(j, "cached_fraction")), 228.0 / 360.0);
	assert_int_equal(json_integer_value(json_object_get(j, "history_substituted")), 1);
	json_t *pt = json_object_get(j, "per_turn");
	assert_int_equal(json_array_size(pt), 3);
	static const struct { long sent, completed, cached; double prompt, ttft_p50; } want[3] = {
		{ 2, 2, 128, 105, 500 }, { 2, 1, 100, 160, 100 }, { 1, 1, -1, 200, 200 },
	};
	for (int t = 0; t < 3; t++) {
		json_t *e = json_array_get(pt, (size_t)t);
		assert_int_equal(json_integer_value(json_object_get(e, "turn")), t + 1);
		assert_int_equal(json_integer_value(json_object_get(e, "sent")), want[t].sent);
		assert_int_equal(json_integer_value(json_object_get(e, "completed")),
				 want[t].completed);
		CLOSE(json_number_value(json_object_get(e, "prompt_tokens_mean")), want[t].prompt);
		CLOSE(json_number_value(json_object_get(json_object_get(e, "ttft"), "p50")),
		      want[t].ttft_p50);
		assert_int_equal(json_integer_value(json_object_get(json_object_get(e, "ttft"),
								    "count")), want[t].completed);
		json_t *ct = json_object_get(e, "cached_tokens");
		if (want[t].cached < 0)
			assert_true(json_is_null(ct));
		else
			assert_int_equal(json_integer_value(ct), want[t].cached);
	}
	json_t *s = json_object_get(j, "samples");
	assert_int_equal(json_integer_value(json_array_get(json_object_get(s, "turn"), 4)), 3);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(s, "conv"), 3)), 1);
	assert_true(json_is_null(json_array_get(json_object_get(s, "cached_tokens"), 4)));
	assert_int_equal(json_integer_value(json_array_get(json_object_get(s, "cached_tokens"), 2)),
			 100);
	json_decref(j);
	/* the table: the cache line and one row per turn */
	char *out = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&out, &len);
	assert_non_null(m);
	bn_report_print(m, &c, r, &f);
	fclose(m);
	assert_non_null(strstr(out, "228 of 360 prompt tokens"));
	assert_non_null(strstr(out, "3-turn conversations"));
	assert_non_null(strstr(out, "TTFT p50"));
	assert_non_null(strstr(out, "\n  1           2      2     105.0      64.0      500.0"));
	assert_non_null(strstr(out, "\n  3           1      1     200.0         -      200.0"));
	free(out);
	/* without --turns: no per-turn figures */
	c.turns = 1;
	assert_int_equal(bn_report_json(&c, r, &f, &j), LOOM_OK);
	assert_null(json_object_get(j, "per_turn"));
	json_decref(j);
	bn_result_destroy(r);
	bn_config_fini(&c);
}

/* Runs --extract on a file holding text and returns what it printed. */
static char *extract(const char *text, char *const *keys, int n, loom_err *rc)
{
	char path[256], *out = NULL;
	size_t len = 0;
	const char *tmp = getenv("LOOM_TMP") ? getenv("LOOM_TMP") : "/tmp";
	snprintf(path, sizeof path, "%s/bench-extract-%d.json", tmp, (int)getpid());
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	FILE *m = open_memstream(&out, &len);
	assert_non_null(m);
	*rc = bn_extract(m, path, keys, n);
	fclose(m);
	unlink(path);
	return out;
}

static void test_extract(void **state)
{
	static const char one[] =
		"{\"sweep\":null,\"label\":\"my run\",\"ttft\":{\"p50\":1.5},\"completed\":3,"
		"\"slo_attainment\":null,\"samples\":{\"latency_ms\":[1,2.5,3]}}";
	static const char arr[] =
		"[{\"sweep\":{\"key\":\"rate\",\"value\":1},\"s\":{\"x\":[1,2]}},"
		" {\"sweep\":{\"key\":\"rate\",\"value\":2},\"s\":{\"x\":[3]}}]";
	loom_err rc;
	char *out;
	(void)state;
	char *k1[] = { "completed", "ttft.p50", "label", "missing.key", "slo_attainment", "@index" };
	out = extract(one, k1, 6, &rc);
	assert_int_equal(rc, LOOM_OK);
	assert_string_equal(out, "3\t1.5\tmy_run\tNaN\tNaN\t0\n");
	free(out);
	char *k2[] = { "samples.latency_ms" };
	out = extract(one, k2, 1, &rc);
	assert_string_equal(out, "1\n2.5\n3\n");
	free(out);
	char *k3[] = { "sweep.value" };
	out = extract(arr, k3, 1, &rc);
	assert_string_equal(out, "1\n2\n");
	free(out);
	char *k4[] = { "sweep.value", "s.x" };
	out = extract(arr, k4, 2, &rc);
	assert_string_equal(out, "1\t1\n1\t2\n\n\n2\t3\n");
	free(out);
	char *k6[] = { "@keys:ttft", "@keys:completed" };
	out = extract(one, k6, 2, &rc);
	assert_string_equal(out, "p50\tNaN\n");
	free(out);
	char *k7[] = { "@nope" };
	out = extract(one, k7, 1, &rc);
	assert_int_equal(rc, LOOM_EINVAL);
	free(out);
	char *k5[] = { "ttft" };
	out = extract(one, k5, 1, &rc);
	assert_int_equal(rc, LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "ttft.p50"));
	free(out);
	out = extract("{not json", k1, 1, &rc);
	assert_int_equal(rc, LOOM_EFORMAT);
	free(out);
	out = extract("42", k1, 1, &rc);
	assert_int_equal(rc, LOOM_EFORMAT);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_figures),
		cmocka_unit_test(test_report_json),
		cmocka_unit_test(test_turns_and_cached),
		cmocka_unit_test(test_extract),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
