/*
 * tests/integration/test_bench.c — loom-bench against a real loom: one
 * loom-gateway and one loom-worker serving the real stories260k model (vocab
 * 512), real HTTP. Each case runs the loom-bench program for a few seconds
 * at most and checks its JSON report: counts (completed == sent, output
 * tokens == requests x output length, since ignore_eos makes it exact), zero
 * errors, ordered percentiles, sweeps, --extract, errors by kind, the prefix
 * caching workloads (--shared-prefix, --turns: every turn's prompt extends the
 * last one by its output, closed-loop clients one turn at a time, per-turn
 * figures; over two random adapters chat-0/1 and the base model), and the
 * bench/suites scripts (quick, base model; and --target).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

static lt_stack stack;
static char *dir;
static char model_arg[600];

static int setup(void **state)
{
	(void)state;
	char abs[512];
	static char ad_args[2][700];
	if (!realpath(lt_shared_path("models/stories260k"), abs))
		return -1;
	snprintf(model_arg, sizeof model_arg, "stories=%s", abs);
	const char *models[] = { model_arg, NULL };
	dir = lt_tmpdir("bench");
	/* two adapters for the conversations (names no other case asks for) */
	for (int i = 0; i < 2; i++) {
		if (lt_sh("%s adapter --model %s --out %s/chat%d --rank 8 --alpha 16 "
			  "--targets q_proj,v_proj --seed %d > /dev/null",
			  lt_bin_path("loom-mkmodel"), abs, dir, i, 40 + i) != 0)
			return -1;
		snprintf(ad_args[i], sizeof ad_args[i], "chat-%d=%s/chat%d@stories", i, dir, i);
	}
	const char *gw[] = { "--adapter", ad_args[0], "--adapter", ad_args[1], NULL };
	return lt_stack_start(&stack, models, 1, gw);
}

static int teardown(void **state)
{
	(void)state;
	lt_stack_stop(&stack);
	loom_free(dir);
	return 0;
}

/* Runs loom-bench with args (plus --url, --json FILE, --quiet); returns its
 * exit status and the parsed report (or NULL). Output goes to a log that is
 * printed when the exit status is not want_status. */
static json_t *bench(const char *tag, const char *args, int want_status)
{
	char json[600], log[600];
	snprintf(json, sizeof json, "%s/%s.json", dir, tag);
	snprintf(log, sizeof log, "%s/%s.log", dir, tag);
	int st = lt_sh("%s --url %s --json %s --quiet %s > %s 2>&1", lt_bin_path("loom-bench"),
		       stack.url, json, args, log);
	if (st != want_status) {
		lt_sh("cat %s >&2", log);
		fail_msg("loom-bench %s: exit status %d, want %d", args, st, want_status);
	}
	json_error_t e;
	json_t *j = json_load_file(json, 0, &e);
	if (!j)
		fail_msg("%s: %s", json, e.text);
	return j;
}

static long integer(json_t *j, const char *a, const char *b)
{
	json_t *v = json_object_get(j, a);
	if (b)
		v = json_object_get(v, b);
	if (!json_is_integer(v))
		fail_msg("report field %s%s%s is not an integer", a, b ? "." : "", b ? b : "");
	return (long)json_integer_value(v);
}

static void expect_ordered(json_t *j, const char *metric)
{
	json_t *m = json_object_get(j, metric);
	json_t *p50 = json_object_get(m, "p50"), *p90 = json_object_get(m, "p90"),
	       *p99 = json_object_get(m, "p99");
	if (!json_is_number(p50) || !json_is_number(p90) || !json_is_number(p99))
		fail_msg("%s: p50/p90/p99 missing", metric);
	double a = json_number_value(p50), b = json_number_value(p90), c = json_number_value(p99);
	if (!(a > 0 && a <= b && b <= c))
		fail_msg("%s: p50 %g p90 %g p99 %g not ordered", metric, a, b, c);
}

/* The report of a fully successful run of n requests. */
static void expect_clean(json_t *j, long n)
{
	assert_int_equal(integer(j, "sent", NULL), n);
	assert_int_equal(integer(j, "completed", NULL), n);
	assert_int_equal(integer(j, "errors", "total"), 0);
	expect_ordered(j, "ttft");
	expect_ordered(j, "tpot");
	expect_ordered(j, "latency");
	json_t *tp = json_object_get(j, "throughput");
	assert_true(json_number_value(json_object_get(tp, "requests_per_s")) > 0);
	assert_true(json_number_value(json_object_get(tp, "output_tokens_per_s")) > 0);
	json_t *s = json_object_get(j, "samples");
	assert_int_equal(json_array_size(json_object_get(s, "latency_ms")), n);
	for (long i = 0; i < n; i++) {
		/* ignore_eos: exactly max_tokens tokens each */
		assert_int_equal(json_integer_value(json_array_get(json_object_get(s, "output_tokens"), i)),
				 json_integer_value(json_array_get(json_object_get(s, "max_tokens"), i)));
		assert_true(json_is_null(json_array_get(json_object_get(s, "error"), i)));
	}
}

static void test_closed_loop(void **state)
{
	(void)state;
	json_t *j = bench("closed", "--model stories --vocab 512 --requests 24 --concurrency 4 "
			  "--prompt-len fixed:16 --output-len fixed:12", 0);
	expect_clean(j, 24);
	assert_int_equal(integer(j, "output_tokens", NULL), 24 * 12);
	assert_int_equal(integer(j, "prompt_tokens", NULL), 24 * 16);
	json_t *c = json_object_get(j, "config");
	assert_string_equal(json_string_value(json_object_get(c, "model")), "stories");
	assert_string_equal(json_string_value(json_object_get(c, "mode")), "closed");
	assert_int_equal(integer(c, "concurrency", NULL), 4);
	json_t *inter = json_object_get(json_object_get(j, "slo"), "interactive");
	assert_int_equal(integer(inter, "requests", NULL), 24);
	json_decref(j);
}

static void test_open_loop_poisson_with_slo_mix(void **state)
{
	(void)state;
	json_t *j = bench("open", "--model stories --vocab 512 --rate 10 --duration 2.5 "
			  "--prompt-len uniform:4:40 --output-len uniform:2:20 --seed 3 "
			  "--slo-mix interactive:0.6,batch:0.4 --slo-target batch:none:500", 0);
	long n = integer(j, "sent", NULL);
	assert_true(n >= 5 && n <= 60); /* Poisson(25) */
	expect_clean(j, n);
	long want = 0;
	json_t *mt = json_object_get(json_object_get(j, "samples"), "max_tokens");
	for (long i = 0; i < n; i++)
		want += (long)json_integer_value(json_array_get(mt, i));
	assert_int_equal(integer(j, "output_tokens", NULL), want);
	json_t *slo = json_object_get(j, "slo");
	assert_int_equal(integer(slo, "interactive", "requests") + integer(slo, "batch", "requests"),
			 n);
	json_t *t = json_object_get(json_object_get(json_object_get(j, "config"), "slo_classes"),
				    "batch");
	assert_true(json_is_null(json_object_get(t, "ttft_ms")));
	assert_true(json_number_value(json_object_get(t, "tpot_ms")) == 500);
	json_decref(j);
}

static void test_gamma_sweep_and_extract(void **state)
{
	(void)state;
	json_t *j = bench("sweep", "--model stories --vocab 512 --requests 8 --cv 2 "
			  "--sweep rate=20,40 --prompt-len fixed:8 --output-len fixed:6", 0);
	assert_true(json_is_array(j));
	assert_int_equal(json_array_size(j), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *p = json_array_get(j, i);
		expect_clean(p, 8);
		assert_int_equal(integer(p, "output_tokens", NULL), 8 * 6);
		json_t *sw = json_object_get(p, "sweep");
		assert_string_equal(json_string_value(json_object_get(sw, "key")), "rate");
		assert_true(json_number_value(json_object_get(sw, "value")) == (i ? 40 : 20));
	}
	json_decref(j);
	char out[600];
	snprintf(out, sizeof out, "%s/extract.txt", dir);
	assert_int_equal(lt_sh("%s --extract %s/sweep.json sweep.value completed output_tokens > %s",
			       lt_bin_path("loom-bench"), dir, out), 0);
	assert_int_equal(lt_sh("printf '20\\t8\\t48\\n40\\t8\\t48\\n' | cmp - %s", out), 0);
}

static void test_usage_off_counts_chunks(void **state)
{
	(void)state;
	json_t *j = bench("nousage", "--model stories --vocab 512 --requests 4 --no-usage "
			  "--output-len fixed:10", 0);
	assert_int_equal(integer(j, "completed", NULL), 4);
	long tok = integer(j, "output_tokens", NULL);
	assert_true(tok > 0 && tok <= 40); /* chunks with text: at most one per token */
	json_decref(j);
}

static void test_errors_by_kind(void **state)
{
	(void)state;
	/* adapter names loom does not serve: every request is a 404 */
	json_t *j = bench("noadapter", "--model stories --vocab 512 --requests 5 --adapters 3 "
			  "--popularity zipf:1", 0);
	assert_int_equal(integer(j, "sent", NULL), 5);
	assert_int_equal(integer(j, "completed", NULL), 0);
	assert_int_equal(integer(j, "errors", "http_4xx"), 5);
	assert_int_equal(integer(j, "errors", "total"), 5);
	const char *ex = json_string_value(json_object_get(json_object_get(json_object_get(j,
		"errors"), "examples"), "http_4xx"));
	assert_non_null(ex);
	assert_non_null(strstr(ex, "404"));
	json_decref(j);
	/* a prompt longer than the 512-token context: 400 */
	j = bench("toolong", "--model stories --vocab 512 --requests 2 --prompt-len fixed:600", 0);
	assert_int_equal(integer(j, "errors", "http_4xx"), 2);
	json_decref(j);
	/* nothing listening: transport errors, and the run still ends and reports */
	char args[300];
	snprintf(args, sizeof args, "--requests 3 --url http://127.0.0.1:%d", lt_free_port());
	j = bench("refused", args, 0);
	assert_int_equal(integer(j, "errors", "transport"), 3);
	json_decref(j);
	/* a duration limit with a grace of zero: requests still running time out */
	j = bench("grace", "--model stories --vocab 512 --concurrency 2 --duration 0.3 --grace 0 "
		  "--output-len fixed:400 --prompt-len fixed:100", 0);
	assert_true(integer(j, "errors", "timeout") >= 1);
	assert_int_equal(integer(j, "sent", NULL),
			 integer(j, "completed", NULL) + integer(j, "errors", "total"));
	json_decref(j);
}

/* A suite end to end, quick and on the base model (adapters=0): it makes
 * its model, starts its own loom, sweeps two rates and plots them. */
static void test_suite_quick_base_model(void **state)
{
	(void)state;
	char out[600];
	snprintf(out, sizeof out, "%s/suite", dir);
	int st = lt_sh("LOOM_BENCH_WORK=%s/work bench/suites/slora-rate --quick --adapters 0 "
		       "--duration 1 --out %s > %s/suite.log 2>&1", dir, out, dir);
	if (st != 0) {
		lt_sh("cat %s/suite.log >&2", dir);
		fail_msg("bench/suites/slora-rate exited %d", st);
	}
	char path[700];
	snprintf(path, sizeof path, "%s/slora-rate.json", out);
	json_t *j = json_load_file(path, 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_array_size(j), 2);
	for (size_t i = 0; i < 2; i++) {
		json_t *p = json_array_get(j, i);
		assert_int_equal(integer(p, "errors", "total"), 0);
		assert_int_equal(integer(p, "completed", NULL), integer(p, "sent", NULL));
		assert_int_equal(integer(p, "adapters_used", NULL), 0);
	}
	json_decref(j);
	if (lt_sh("command -v gnuplot > /dev/null") == 0)
		assert_int_equal(lt_sh("test -s %s/slora-rate-throughput.png && "
				       "test -s %s/slora-rate-cdf.png", out, out), 0);
}

/* --target: the same suite against a server it did not start (here our
 * stack, standing in for another OpenAI-compatible server). */
static void test_suite_target_mode(void **state)
{
	(void)state;
	int st = lt_sh("bench/suites/slora-adapters --quick --target %s --model stories "
		       "--adapters 0 --duration 1 --no-plot --out %s/target > %s/target.log 2>&1",
		       stack.url, dir, dir);
	if (st != 0) {
		lt_sh("cat %s/target.log >&2", dir);
		fail_msg("bench/suites/slora-adapters --target exited %d", st);
	}
	char path[700];
	snprintf(path, sizeof path, "%s/target/slora-adapters.json", dir);
	json_t *j = json_load_file(path, 0, NULL);
	assert_non_null(j);
	json_t *p = json_array_get(j, 0);
	assert_int_equal(integer(p, "errors", "total"), 0);
	assert_true(integer(p, "completed", NULL) > 0);
	assert_string_equal(json_string_value(json_object_get(json_object_get(p, "config"), "url")),
			    stack.url);
	json_decref(j);
}

static json_t *column(json_t *j, const char *name)
{
	json_t *c = json_object_get(json_object_get(j, "samples"), name);
	if (!json_is_array(c))
		fail_msg("samples.%s missing", name);
	return c;
}

static double num_at(json_t *col, size_t i)
{
	return json_number_value(json_array_get(col, i));
}

/*
 * Checks a clean --turns run of n requests: the per-turn figures add up;
 * within each conversation the turns come 1, 2, ... in send order, each
 * sent no earlier than its predecessor ended, and each prompt is the
 * previous prompt + its output (max_tokens, exact with ignore_eos) + a
 * message of msg_lo..msg_hi tokens; turn 1 is prefix + a message.
 */
static void expect_conversations(json_t *j, long n, int turns, int prefix, int msg_lo,
				 int msg_hi)
{
	json_t *conv = column(j, "conv"), *turn = column(j, "turn"), *t = column(j, "t_s");
	json_t *lat = column(j, "latency_ms"), *pt = column(j, "prompt_tokens");
	json_t *mt = column(j, "max_tokens");
	long sum = 0, n_conv = 0;
	json_t *per = json_object_get(j, "per_turn");
	assert_true(json_is_array(per) && json_array_size(per) >= 1 &&
		    json_array_size(per) <= (size_t)turns);
	for (size_t k = 0; k < json_array_size(per); k++) {
		json_t *e = json_array_get(per, k);
		long sent = integer(e, "sent", NULL);
		assert_int_equal(integer(e, "turn", NULL), (long)k + 1);
		assert_int_equal(integer(e, "completed", NULL), sent);
		assert_int_equal(integer(json_object_get(e, "ttft"), "count", NULL), sent);
		assert_true(json_number_value(json_object_get(json_object_get(e, "ttft"), "p50")) > 0);
		if (k > 0) /* a turn is only sent after the one before it */
			assert_true(sent <= integer(json_array_get(per, k - 1), "sent", NULL));
		sum += sent;
	}
	assert_int_equal(sum, n);
	assert_int_equal(integer(j, "history_substituted", NULL), 0); /* loom returns ids */
	assert_true(json_is_integer(json_object_get(j, "cached_tokens")));
	for (long i = 0; i < n; i++) {
		long c = (long)json_integer_value(json_array_get(conv, (size_t)i));
		int tk = (int)json_integer_value(json_array_get(turn, (size_t)i));
		long p = (long)json_integer_value(json_array_get(pt, (size_t)i));
		assert_true(c >= 0 && tk >= 1 && tk <= turns);
		if (tk == 1) {
			assert_true(p >= prefix + msg_lo && p <= prefix + msg_hi);
			n_conv++;
			continue;
		}
		long prev = -1; /* the same conversation's latest earlier request */
		for (long k = i - 1; k >= 0 && prev < 0; k--)
			if ((long)json_integer_value(json_array_get(conv, (size_t)k)) == c)
				prev = k;
		if (prev < 0)
			fail_msg("turn %d of conversation %ld sent without turn 1", tk, c);
		assert_int_equal(json_integer_value(json_array_get(turn, (size_t)prev)), tk - 1);
		long grown = p - (long)json_integer_value(json_array_get(pt, (size_t)prev)) -
			     (long)json_integer_value(json_array_get(mt, (size_t)prev));
		assert_true(grown >= msg_lo && grown <= msg_hi);
		double end = num_at(t, (size_t)prev) + num_at(lat, (size_t)prev) / 1000.0;
		assert_true(num_at(t, (size_t)i) >= end - 1e-6);
	}
	assert_true(n_conv >= 1);
}

/* Closed loop, 4 clients, 3 turns over the shared prefix and two adapters. */
static void test_turns_closed_loop(void **state)
{
	(void)state;
	json_t *j = bench("turns", "--model stories --vocab 512 --requests 24 --concurrency 4 "
			  "--turns 3 --shared-prefix 64 --prompt-len uniform:4:16 "
			  "--output-len fixed:8 --adapters 2 --adapter-prefix chat-", 0);
	expect_clean(j, 24);
	expect_conversations(j, 24, 3, 64, 4, 16);
	assert_int_equal(integer(j, "adapters_used", NULL), 2);
	json_t *c = json_object_get(j, "config");
	assert_int_equal(integer(c, "turns", NULL), 3);
	assert_int_equal(integer(c, "shared_prefix", NULL), 64);
	/* no more than 4 conversations at once: each client holds one */
	json_t *conv = column(j, "conv"), *t = column(j, "t_s"), *lat = column(j, "latency_ms");
	for (size_t i = 0; i < 24; i++) {
		double at = num_at(t, i) + 1e-4; /* just after request i went out */
		int open = 0;
		for (long cv = 0; cv <= 24; cv++) {
			double first = -1, last = -1;
			for (size_t k = 0; k < 24; k++) {
				if ((long)json_integer_value(json_array_get(conv, k)) != cv)
					continue;
				if (first < 0)
					first = num_at(t, k);
				last = num_at(t, k) + num_at(lat, k) / 1000.0;
			}
			if (first >= 0 && first <= at && at < last)
				open++;
		}
		assert_true(open <= 4);
	}
	json_decref(j);
	/* the per-turn table is printed */
	assert_int_equal(lt_sh("grep -q 'TTFT p50' %s/turns.log && grep -q '^  3 ' %s/turns.log",
			       dir, dir), 0);
}

/* Open loop: every arrival a conversation, its second turn after its first. */
static void test_turns_open_loop(void **state)
{
	(void)state;
	json_t *j = bench("turns-open", "--model stories --vocab 512 --rate 6 --duration 2 "
			  "--turns 2 --shared-prefix 32 --prompt-len fixed:6 --output-len fixed:5 "
			  "--seed 5", 0);
	long n = integer(j, "sent", NULL);
	assert_true(n >= 2);
	expect_clean(j, n);
	expect_conversations(j, n, 2, 32, 6, 6);
	json_decref(j);
}

static void test_bad_command_line(void **state)
{
	(void)state;
	char log[600];
	snprintf(log, sizeof log, "%s/bad.log", dir);
	assert_int_equal(lt_sh("%s --rate 1 --concurrency 2 --requests 1 2> %s",
			       lt_bin_path("loom-bench"), log), 2);
	assert_int_equal(lt_sh("grep -q 'exclude each other' %s", log), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_closed_loop),
		cmocka_unit_test(test_open_loop_poisson_with_slo_mix),
		cmocka_unit_test(test_gamma_sweep_and_extract),
		cmocka_unit_test(test_usage_off_counts_chunks),
		cmocka_unit_test(test_errors_by_kind),
		cmocka_unit_test(test_turns_closed_loop),
		cmocka_unit_test(test_turns_open_loop),
		cmocka_unit_test(test_suite_quick_base_model),
		cmocka_unit_test(test_suite_target_mode),
		cmocka_unit_test(test_bad_command_line),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
