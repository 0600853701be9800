/*
 * tests/bench/test_config.c — loom-bench's command line and workloads:
 * accepted and rejected option sets (each error names the option), SLO mix
 * and targets, sweeps, and the requests a workload produces (bodies, adapter
 * names, seeds shared across sweep points, trace replay).
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

#include "bench/bn_config.h"
#include "bench/bn_workload.h"
#include "common/alloc.h"

#define MAX_ARGS 32

/* Parses a space-separated command line into c; returns the parse result. */
static loom_err parse(bn_config *c, const char *line, bn_action *act)
{
	static char buf[1024];
	static char *argv[MAX_ARGS];
	int argc = 0, at;
	snprintf(buf, sizeof buf, "%s", line);
	argv[argc++] = "loom-bench";
	for (char *tok = strtok(buf, " "); tok && argc < MAX_ARGS; tok = strtok(NULL, " "))
		argv[argc++] = tok;
	bn_config_init(c);
	return bn_config_parse(c, argc, argv, act, &at);
}

static void test_defaults_and_good_lines(void **state)
{
	bn_config c;
	bn_action act;
	(void)state;
	assert_int_equal(parse(&c, "--requests 10", &act), LOOM_OK);
	assert_int_equal(act, BN_ACT_RUN);
	assert_string_equal(c.url, "http://127.0.0.1:8080");
	assert_int_equal(c.concurrency, 1); /* default load */
	assert_int_equal(c.n_slo, 1);
	assert_false(c.send_slo);
	bn_config_fini(&c);

	assert_int_equal(parse(&c, "--url=http://h:1 --rate 2.5 --cv 3 --duration 60 --adapters 512 "
			       "--popularity powerlaw:1 --prompt-len uniform:8:512 --output-len "
			       "lognormal:4:1 --vocab 512 --seed 9 --json out.json", &act), LOOM_OK);
	assert_true(c.rate == 2.5 && c.cv == 3 && c.duration_s == 60);
	assert_int_equal(c.n_adapters, 512);
	assert_int_equal(c.pop.kind, BN_POP_POWERLAW);
	assert_int_equal(c.prompt_len.kind, BN_LEN_UNIFORM);
	assert_int_equal(c.output_len.kind, BN_LEN_LOGNORMAL);
	assert_int_equal(c.vocab, 512);
	assert_int_equal(c.concurrency, 0);
	assert_string_equal(c.json_path, "out.json");
	json_t *j = bn_config_json(&c);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "arrivals")), "gamma");
	assert_int_equal(json_integer_value(json_object_get(j, "adapters")), 512);
	assert_string_equal(json_string_value(json_object_get(j, "popularity")), "powerlaw:1");
	json_decref(j);
	bn_config_fini(&c);

	assert_int_equal(parse(&c, "--help", &act), LOOM_OK);
	assert_int_equal(act, BN_ACT_HELP);
	bn_config_fini(&c);
	assert_int_equal(parse(&c, "--extract f.json ttft.p50", &act), LOOM_OK);
	assert_int_equal(act, BN_ACT_EXTRACT);
	bn_config_fini(&c);
}

typedef struct bad_line {
	const char *line;
	const char *want;
} bad_line;

static const bad_line bad[] = {
	{ "--rate 1", "--requests N or --duration" },
	{ "--requests 5 --rate 1 --concurrency 2", "exclude each other" },
	{ "--requests 5 --cv 2", "--cv" },
	{ "--requests 5 --rate 0", "--rate" },
	{ "--requests 5 --rate -1", "--rate" },
	{ "--requests 5 --concurrency 0", "--concurrency" },
	{ "--requests x", "--requests" },
	{ "--requests", "--requests needs a value" },
	{ "--requests 5 --url ftp://x", "--url" },
	{ "--requests 5 --bogus", "unknown option '--bogus'" },
	{ "--requests 5 --prompt-len fixed:0", "--prompt-len" },
	{ "--requests 5 --output-len uniform:9:2", "--output-len" },
	{ "--requests 5 --popularity zipf", "--popularity" },
	{ "--requests 5 --vocab 3", "--vocab" },
	{ "--requests 5 --adapters 2 --adapter-file /dev/null", "exclude each other" },
	{ "--requests 5 --slo-mix interactive", "--slo-mix" },
	{ "--requests 5 --slo-mix a:1,a:2", "twice" },
	{ "--requests 5 --slo-mix a:0", "weight" },
	{ "--requests 5 --slo-target batch:10:10", "not in the SLO mix" },
	{ "--requests 5 --slo-mix a:1 --slo-target a:10", "--slo-target" },
	{ "--requests 5 --slo-mix a:1 --slo-target a:x:1", "--slo-target" },
	{ "--requests 5 --sweep speed=1,2", "--sweep" },
	{ "--requests 5 --sweep rate=1,,2", "--sweep" },
	{ "--requests 5 --sweep adapters=1,x", "--sweep" },
	{ "--requests 5 --sweep alpha=0.5,1", "needs --popularity" },
	{ "--requests 5 --sweep rate=1,2 --concurrency 4", "exclude each other" },
	{ "--requests 5 --sweep cv=1,2", "needs --rate" },
	{ "--trace /dev/null --rate 1", "--trace" },
	{ "--trace /dev/null --adapters 4", "--trace" },
	{ "--trace /dev/null --prompt-len fixed:4", "--trace" },
	{ "--trace /nonexistent.csv", "/nonexistent.csv" },
	{ "--trace /dev/null", "no requests" },
	{ "--requests 5 --adapter-file /nonexistent.txt", "/nonexistent.txt" },
	{ "--extract", "--extract needs" },
};

static void test_bad_lines(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		bn_config c;
		bn_action act;
		loom_err rc = parse(&c, bad[i].line, &act);
		if (rc == LOOM_OK)
			fail_msg("'%s' accepted", bad[i].line);
		if (!strstr(loom_errmsg(), bad[i].want))
			fail_msg("'%s': message '%s' lacks '%s'", bad[i].line, loom_errmsg(),
				 bad[i].want);
		bn_config_fini(&c);
	}
}

static void test_slo_mix_and_targets(void **state)
{
	bn_config c;
	bn_action act;
	(void)state;
	/* targets given before the mix still apply */
	assert_int_equal(parse(&c, "--requests 5 --slo-target batch:none:80 --slo-mix "
			       "interactive:0.7,batch:0.3 --slo-target interactive:500:50", &act),
			 LOOM_OK);
	assert_int_equal(c.n_slo, 2);
	assert_true(c.send_slo);
	assert_string_equal(c.slo[0].name, "interactive");
	assert_true(fabs(c.slo[0].weight - 0.7) < 1e-12);
	assert_true(c.slo[0].ttft_ms == 500 && c.slo[0].tpot_ms == 50);
	assert_string_equal(c.slo[1].name, "batch");
	assert_true(c.slo[1].ttft_ms <= 0 && c.slo[1].tpot_ms == 80);
	bn_config_fini(&c);
	/* defaults: interactive 1000:200, others none; weights normalized */
	assert_int_equal(parse(&c, "--requests 5 --slo-mix interactive:7,batch:3", &act), LOOM_OK);
	assert_true(c.slo[0].ttft_ms == 1000 && c.slo[0].tpot_ms == 200);
	assert_true(c.slo[1].ttft_ms <= 0 && c.slo[1].tpot_ms <= 0);
	assert_true(fabs(c.slo[1].weight - 0.3) < 1e-12);
	bn_config_fini(&c);
}

static void test_sweep_points(void **state)
{
	bn_config c, p;
	bn_action act;
	(void)state;
	assert_int_equal(parse(&c, "--requests 5 --sweep adapters=0,1,8,64,512 --rate 2", &act),
			 LOOM_OK);
	assert_int_equal(c.sweep, BN_SWEEP_ADAPTERS);
	assert_int_equal(c.n_sweep, 5);
	bn_config_point(&c, 4, &p);
	assert_int_equal(p.n_adapters, 512);
	assert_true(p.sweep_value == 512);
	assert_int_equal(bn_config_validate(&p), LOOM_OK);
	bn_config_fini(&c);
	assert_int_equal(parse(&c, "--duration 5 --sweep rate=0.5,1,2", &act), LOOM_OK);
	assert_int_equal(c.concurrency, 0); /* the rate sweep makes it an open loop */
	bn_config_point(&c, 1, &p);
	assert_true(p.rate == 1);
	bn_config_fini(&c);
	assert_int_equal(parse(&c, "--requests 5 --popularity zipf:1 --adapters 8 "
			       "--sweep alpha=0,0.5,2", &act), LOOM_OK);
	bn_config_point(&c, 2, &p);
	assert_true(p.pop.alpha == 2);
	bn_config_fini(&c);
}

static void test_body(void **state)
{
	bn_config c;
	bn_action act;
	bn_workload *w;
	bn_reqspec s;
	char *body;
	(void)state;
	assert_int_equal(parse(&c, "--requests 5 --adapters 3 --adapter-prefix a\"b- --vocab 10 "
			       "--prompt-len fixed:50 --output-len fixed:7 --slo-mix batch:1", &act),
			 LOOM_OK);
	assert_int_equal(bn_workload_create(&c, &w), LOOM_OK);
	assert_int_equal(bn_workload_next(w, &s), LOOM_OK);
	assert_int_equal(bn_workload_body(w, &s, &body), LOOM_OK);
	json_error_t e;
	json_t *j = json_loads(body, 0, &e);
	if (!j)
		fail_msg("body is not JSON (%s): %s", e.text, body);
	char want[32];
	snprintf(want, sizeof want, "a\"b-%d", s.adapter);
	assert_string_equal(json_string_value(json_object_get(j, "model")), want);
	json_t *prompt = json_object_get(j, "prompt");
	assert_int_equal(json_array_size(prompt), 50);
	for (size_t i = 0; i < 50; i++) {
		json_int_t id = json_integer_value(json_array_get(prompt, i));
		assert_true(id >= 3 && id <= 9);
	}
	assert_int_equal(json_integer_value(json_object_get(j, "max_tokens")), 7);
	assert_true(json_is_true(json_object_get(j, "ignore_eos")));
	assert_true(json_is_true(json_object_get(j, "stream")));
	assert_true(json_is_true(json_object_get(json_object_get(j, "stream_options"),
						 "include_usage")));
	assert_string_equal(json_string_value(json_object_get(j, "slo_class")), "batch");
	json_decref(j);
	loom_free(body);
	bn_workload_destroy(w);
	bn_config_fini(&c);

	/* base model, no usage, no SLO mix: neither field is sent */
	assert_int_equal(parse(&c, "--requests 5 --model base --no-usage", &act), LOOM_OK);
	assert_int_equal(bn_workload_create(&c, &w), LOOM_OK);
	assert_int_equal(bn_workload_next(w, &s), LOOM_OK);
	assert_int_equal(s.adapter, -1);
	assert_int_equal(bn_workload_body(w, &s, &body), LOOM_OK);
	j = json_loads(body, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "model")), "base");
	assert_null(json_object_get(j, "stream_options"));
	assert_null(json_object_get(j, "slo_class"));
	json_decref(j);
	loom_free(body);
	bn_workload_destroy(w);
	bn_config_fini(&c);
}

/* The adapters, lengths and classes of a run do not depend on the rate, so
 * points of a rate sweep differ only in their arrival times. */
static void test_sweep_points_share_requests(void **state)
{
	bn_config a, b;
	bn_action act;
	bn_workload *wa, *wb;
	(void)state;
	assert_int_equal(parse(&a, "--requests 5 --rate 1 --adapters 50 --popularity zipf:1 "
			       "--prompt-len uniform:1:100 --slo-mix x:1,y:1", &act), LOOM_OK);
	assert_int_equal(parse(&b, "--requests 5 --rate 7 --adapters 50 --popularity zipf:1 "
			       "--prompt-len uniform:1:100 --slo-mix x:1,y:1", &act), LOOM_OK);
	assert_int_equal(bn_workload_create(&a, &wa), LOOM_OK);
	assert_int_equal(bn_workload_create(&b, &wb), LOOM_OK);
	double ta = 0, tb = 0;
	for (int i = 0; i < 2000; i++) {
		bn_reqspec x, y;
		assert_int_equal(bn_workload_next(wa, &x), LOOM_OK);
		assert_int_equal(bn_workload_next(wb, &y), LOOM_OK);
		assert_int_equal(x.adapter, y.adapter);
		assert_int_equal(x.prompt_tokens, y.prompt_tokens);
		assert_int_equal(x.slo, y.slo);
		assert_true(x.t > ta && y.t > tb); /* arrivals increase */
		ta = x.t;
		tb = y.t;
	}
	assert_true(fabs(ta / tb - 7.0) < 0.7); /* 2000 arrivals: rate ratio within 10% */
	bn_workload_destroy(wa);
	bn_workload_destroy(wb);
	bn_config_fini(&a);
	bn_config_fini(&b);
}

static void test_trace_replay(void **state)
{
	bn_config c;
	bn_action act;
	bn_workload *w;
	bn_reqspec s;
	char path[256], line[320];
	(void)state;
	const char *tmp = getenv("LOOM_TMP") ? getenv("LOOM_TMP") : "/tmp";
	snprintf(path, sizeof path, "%s/bench-trace-%d.csv", tmp, (int)getpid());
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("timestamp_s,adapter,prompt_tokens,output_tokens\n100,x,4,2\n100.5,,8,3\n", f);
	fclose(f);
	snprintf(line, sizeof line, "--trace %s --model base", path);
	assert_int_equal(parse(&c, line, &act), LOOM_OK);
	assert_int_equal(bn_config_adapter_count(&c), 1);
	assert_int_equal(bn_workload_create(&c, &w), LOOM_OK);
	assert_int_equal(bn_workload_next(w, &s), LOOM_OK);
	assert_true(s.t == 0);
	assert_string_equal(bn_workload_model(w, s.adapter), "x");
	assert_int_equal(s.prompt_tokens, 4);
	assert_int_equal(bn_workload_next(w, &s), LOOM_OK);
	assert_true(s.t == 0.5);
	assert_string_equal(bn_workload_model(w, s.adapter), "base");
	assert_int_equal(s.output_tokens, 3);
	assert_int_equal(bn_workload_next(w, &s), LOOM_ENOTFOUND);
	bn_workload_destroy(w);
	bn_config_fini(&c);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_and_good_lines),
		cmocka_unit_test(test_bad_lines),
		cmocka_unit_test(test_slo_mix_and_targets),
		cmocka_unit_test(test_sweep_points),
		cmocka_unit_test(test_body),
		cmocka_unit_test(test_sweep_points_share_requests),
		cmocka_unit_test(test_trace_replay),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
