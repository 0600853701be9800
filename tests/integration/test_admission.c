/*
 * tests/integration/test_admission.c — admission with the gateway's default
 * settings (issue 13): one loom-worker process (a random LLaMA model, hidden
 * 512, 4 layers, vocab 2048: on a CPU, 16 prompts of 320 tokens take longer
 * than the interactive class's 1000 ms to prefill) behind a loom-gateway
 * started with no SLO configuration at all.
 *
 * 1. A closed loop of 16 clients (loom-bench --concurrency 16, 64 requests,
 *    320-token prompts, 32 tokens out, the default class): every request
 *    completes — none is refused with 503 because its TTFT target cannot be
 *    met, none gets 429 — and /metrics counts no refusal.
 * 2. 20 concurrent batch streams (--slo-mix batch:1, 8-token prompts so that
 *    all of them fit one prefill step, 48 tokens out) start together: the
 *    first-token times (send time + TTFT, from loom-bench's samples) lie
 *    within SPREAD_STEPS worker steps of each other, a step being the median
 *    time per output token of the same requests. Sent a few at a time (the
 *    earlier --batch-per-worker 4), the last ones would start only after the
 *    first ones' 48 tokens (about 200 steps measured); sent together they
 *    start within 2-4 steps on a quiet machine, up to 10 with a load average
 *    of 6, hence a bound of half the output length: no request waits for
 *    another to finish.
 * Timing-sensitive only in its generous bound; runs under the cpu_timing
 * lock (CMakeLists.txt).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

#define CLIENTS 16
#define BATCH 20
#define PROMPT 320
#define BATCH_OUT 48
#define SPREAD_STEPS (BATCH_OUT / 2.0)

static char *dir;
static char model_arg[700];
static lt_stack stack;
static bool started;

static int setup(void **state)
{
	(void)state;
	dir = lt_tmpdir("admission");
	if (lt_sh("%s model --out %s/model --hidden 512 --ffn 1376 --layers 4 --heads 8 "
		  "--kv-heads 4 --vocab 2048 --ctx 512 --seed 5 > %s/mkmodel.log 2>&1",
		  lt_bin_path("loom-mkmodel"), dir, dir))
		return -1;
	snprintf(model_arg, sizeof model_arg, "m=%s/model", dir);
	const char *models[] = {model_arg, NULL};
	const char *wk_args[] = {"--max-seqs", "32", NULL};
	if (lt_stack_start2(&stack, models, 1, NULL, wk_args))
		return -1;
	started = true;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (started)
		lt_stack_stop(&stack);
	loom_free(dir);
	return 0;
}

static json_t *load_json(const char *path)
{
	json_error_t e;
	json_t *j = json_load_file(path, 0, &e);
	if (!j)
		fail_msg("%s: %s", path, e.text);
	return j;
}

static double num(json_t *j, const char *a, const char *b)
{
	json_t *v = json_object_get(j, a);
	if (b)
		v = json_object_get(v, b);
	if (!json_is_number(v))
		fail_msg("report field %s.%s is not a number", a, b ? b : "");
	return json_number_value(v);
}

/* The value of a /metrics sample ("name{labels} "), -1 when absent. */
static double metric(const char *sample)
{
	char url[128];
	lt_resp r;
	snprintf(url, sizeof url, "%s/metrics", stack.url);
	if (lt_http("GET", url, NULL, NULL, 5000, &r) != 0 || r.status != 200)
		fail_msg("GET /metrics failed");
	const char *p = strstr(r.body, sample);
	double v = p ? strtod(p + strlen(sample), NULL) : -1;
	lt_resp_free(&r);
	return v;
}

/* Runs loom-bench with args against the stack; returns its JSON report. */
static json_t *bench(const char *tag, const char *args)
{
	int st = lt_sh("%s --url %s --model m --vocab 2048 %s --quiet --json %s/%s.json "
		       "> %s/%s.log 2>&1",
		       lt_bin_path("loom-bench"), stack.url, args, dir, tag, dir, tag);
	if (st) {
		lt_sh("cat %s/%s.log >&2", dir, tag);
		lt_proc_dump(&stack.gw);
		fail_msg("%s: loom-bench exit status %d", tag, st);
	}
	char path[700];
	snprintf(path, sizeof path, "%s/%s.json", dir, tag);
	return load_json(path);
}

static void test_closed_loop_defaults(void **state)
{
	(void)state;
	char args[256];
	snprintf(args, sizeof args, "--concurrency %d --requests %d --prompt-len fixed:%d "
		 "--output-len fixed:32", CLIENTS, 4 * CLIENTS, PROMPT);
	json_t *j = bench("closed", args);
	fprintf(stderr, "%d clients: %.0f of %.0f completed, %.0f errors; TTFT p50 %.0f ms, "
		"p99 %.0f ms (the interactive target is 1000 ms)\n", CLIENTS,
		num(j, "completed", NULL), num(j, "sent", NULL), num(j, "errors", "total"),
		num(j, "ttft", "p50"), num(j, "ttft", "p99"));
	assert_true(num(j, "sent", NULL) == 4 * CLIENTS);
	assert_true(num(j, "completed", NULL) == 4 * CLIENTS);
	assert_true(num(j, "errors", "total") == 0);
	json_decref(j);
	assert_true(metric("\nloom_slo_refused_total{class=\"interactive\",status=\"503\"} ") == 0);
	assert_true(metric("\nloom_slo_refused_total{class=\"interactive\",status=\"429\"} ") == 0);
	assert_true(metric("\nloom_slo_requests_total{class=\"interactive\"} ") == 4 * CLIENTS);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void test_batch_burst_starts_together(void **state)
{
	(void)state;
	char args[256];
	snprintf(args, sizeof args, "--concurrency %d --requests %d --slo-mix batch:1 "
		 "--prompt-len fixed:8 --output-len fixed:%d", BATCH, BATCH, BATCH_OUT);
	json_t *j = bench("batch", args);
	assert_true(num(j, "completed", NULL) == BATCH);
	json_t *smp = json_object_get(j, "samples");
	json_t *t = json_object_get(smp, "t_s"), *lag = json_object_get(smp, "lag_ms");
	json_t *ttft = json_object_get(smp, "ttft_ms"), *tpot = json_object_get(smp, "tpot_ms");
	assert_int_equal(json_array_size(ttft), BATCH);
	double first[BATCH], per_tok[BATCH], lo = INFINITY, hi = -INFINITY;
	for (size_t i = 0; i < BATCH; i++) {
		first[i] = 1000.0 * json_number_value(json_array_get(t, i)) +
			   json_number_value(json_array_get(lag, i)) +
			   json_number_value(json_array_get(ttft, i));
		per_tok[i] = json_number_value(json_array_get(tpot, i));
		lo = fmin(lo, first[i]);
		hi = fmax(hi, first[i]);
		assert_true(json_is_number(json_array_get(tpot, i)));
	}
	qsort(per_tok, BATCH, sizeof per_tok[0], cmp_double);
	double step = per_tok[BATCH / 2];
	fprintf(stderr, "%d batch streams: first tokens within %.0f ms of each other; a step "
		"(median time per output token) %.1f ms: %.1f steps (bound %.0f)\n", BATCH, hi - lo,
		step, (hi - lo) / step, SPREAD_STEPS);
	assert_true(step > 0);
	assert_true(hi - lo <= SPREAD_STEPS * step);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_closed_loop_defaults),
		cmocka_unit_test(test_batch_burst_starts_together),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
