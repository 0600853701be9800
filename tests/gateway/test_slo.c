/*
 * tests/gateway/test_slo.c — gw_slo: the default classes (both queue when
 * late), --slo-class specs with and without a refuse|queue policy and config
 * JSON with "on_miss" (good ones and a table of bad ones, each refused with a
 * message naming the problem), lookups, the attainment rules per outcome
 * (loom-bench's: failures and refusals are misses, a missing target holds,
 * a one-token completion meets any TPOT target) and the /metrics text
 * (families, cumulative histograms, goodput).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/gw_slo.h"

static void test_defaults(void **state)
{
	(void)state;
	gw_slo *s;
	assert_int_equal(gw_slo_create(&s), LOOM_OK);
	assert_int_equal(gw_slo_count(s), 2);
	const gw_slo_class *i = gw_slo_at(s, (size_t)gw_slo_find(s, "interactive"));
	const gw_slo_class *b = gw_slo_at(s, (size_t)gw_slo_find(s, "batch"));
	assert_true(i->ttft_ms == 1000 && i->tpot_ms == 200 && i->priority == 1);
	assert_true(b->ttft_ms == 0 && b->tpot_ms == 0 && b->priority == 0);
	assert_false(i->refuse); /* nothing is refused for lateness unless asked */
	assert_false(b->refuse);
	assert_int_equal(gw_slo_default(s), gw_slo_find(s, "interactive"));
	assert_int_equal(gw_slo_find(s, "nope"), -1);
	assert_int_equal(gw_slo_min_ttft(s), 1000);
	char names[128];
	gw_slo_names(s, names, sizeof names);
	assert_string_equal(names, "interactive, batch");
	assert_null(gw_slo_at(s, 2));
	gw_slo_destroy(s);
}

static void test_specs(void **state)
{
	(void)state;
	gw_slo *s;
	assert_int_equal(gw_slo_create(&s), LOOM_OK);
	assert_int_equal(gw_slo_parse_arg(s, "fast=300:50:5", "--slo-class"), LOOM_OK);
	assert_int_equal(gw_slo_parse_arg(s, "interactive=none:100:2", "--slo-class"), LOOM_OK);
	assert_int_equal(gw_slo_count(s), 3);
	const gw_slo_class *f = gw_slo_at(s, (size_t)gw_slo_find(s, "fast"));
	assert_true(f->ttft_ms == 300 && f->tpot_ms == 50 && f->priority == 5 && !f->refuse);
	const gw_slo_class *i = gw_slo_at(s, (size_t)gw_slo_find(s, "interactive"));
	assert_true(i->ttft_ms == 0 && i->tpot_ms == 100 && i->priority == 2);
	assert_int_equal(gw_slo_min_ttft(s), 300);
	/* the policy when the TTFT target cannot be met */
	assert_int_equal(gw_slo_parse_arg(s, "fast=300:50:5:refuse", "--slo-class"), LOOM_OK);
	assert_true(f->ttft_ms == 300 && f->priority == 5 && f->refuse);
	assert_int_equal(gw_slo_parse_arg(s, "fast=300:50:5:queue", "--slo-class"), LOOM_OK);
	assert_true(f->ttft_ms == 300 && f->priority == 5 && !f->refuse);
	assert_int_equal(gw_slo_count(s), 3);
	static const struct {
		const char *spec, *why;
	} bad[] = {
		{"x", "NAME=TTFT_MS:TPOT_MS:PRIORITY"},
		{"x=1:2", "NAME=TTFT_MS:TPOT_MS:PRIORITY"},
		{"x=a:2:3", "milliseconds"},
		{"x=1:2:", "priority"},
		{"x=1:2:3:4", "priority"},
		{"x=1:2:3:maybe", "'refuse' or 'queue'"},
		{"x=1:2::refuse", "priority"},
		{"x=1:2:3:refuse:queue", "'refuse' or 'queue'"},
		{"x=-1:2:3", "milliseconds"},
		{"x=1:2:1001", "priority"},
		{"x=1:99999999:1", "milliseconds"},
		{"=1:2:3", "name"},
		{"bad name=1:2:3", "name"},
		{"waytoolongnamewaytoolongnamewaytoolong=1:2:3", "NAME"},
	};
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		assert_int_equal(gw_slo_parse_arg(s, bad[k].spec, "--slo-class"), LOOM_EINVAL);
		if (!strstr(loom_errmsg(), bad[k].why) || !strstr(loom_errmsg(), "--slo-class"))
			fail_msg("'%s': message '%s' does not say '%s'", bad[k].spec, loom_errmsg(),
				 bad[k].why);
	}
	assert_int_equal(gw_slo_count(s), 3);
	/* at most GW_SLO_MAX_CLASSES */
	char spec[64];
	for (int k = 3; k < GW_SLO_MAX_CLASSES; k++) {
		snprintf(spec, sizeof spec, "c%d=1:1:1", k);
		assert_int_equal(gw_slo_parse_arg(s, spec, "--slo-class"), LOOM_OK);
	}
	assert_int_equal(gw_slo_parse_arg(s, "one-more=1:1:1", "--slo-class"), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "at most"));
	gw_slo_destroy(s);
}

static void test_config_json(void **state)
{
	(void)state;
	gw_slo *s;
	assert_int_equal(gw_slo_create(&s), LOOM_OK);
	assert_int_equal(gw_slo_load_json(s, "{\"gold\":{\"ttft_ms\":250,\"tpot_ms\":null,"
					  "\"priority\":9,\"on_miss\":\"refuse\"},\"batch\":"
					  "{\"tpot_ms\":500},\"silver\":{\"ttft_ms\":900,"
					  "\"on_miss\":\"queue\"}}", "c.json"),
			 LOOM_OK);
	const gw_slo_class *g = gw_slo_at(s, (size_t)gw_slo_find(s, "gold"));
	assert_true(g->ttft_ms == 250 && g->tpot_ms == 0 && g->priority == 9 && g->refuse);
	assert_false(gw_slo_at(s, (size_t)gw_slo_find(s, "silver"))->refuse);
	const gw_slo_class *b = gw_slo_at(s, (size_t)gw_slo_find(s, "batch"));
	assert_true(b->ttft_ms == 0 && b->tpot_ms == 500 && b->priority == 0);
	static const struct {
		const char *json, *why;
	} bad[] = {
		{"[1]", "must be an object"},
		{"{\"x\":3}", "slo_classes.x must be an object"},
		{"{\"x\":{\"ttft\":3}}", "unknown key 'ttft'"},
		{"{\"x\":{\"ttft_ms\":\"3\"}}", "slo_classes.x.ttft_ms"},
		{"{\"x\":{\"tpot_ms\":-3}}", "slo_classes.x.tpot_ms"},
		{"{\"x\":{\"priority\":1.5}}", "slo_classes.x.priority"},
		{"{\"x\":{\"on_miss\":\"drop\"}}", "slo_classes.x.on_miss"},
		{"{\"x\":{\"on_miss\":true}}", "slo_classes.x.on_miss"},
		{"{\"x y\":{}}", "slo_classes.x y"},
	};
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		assert_int_equal(gw_slo_load_json(s, bad[k].json, "c.json"), LOOM_EINVAL);
		if (!strstr(loom_errmsg(), bad[k].why) || strncmp(loom_errmsg(), "c.json: ", 8))
			fail_msg("%s: message '%s' does not say '%s'", bad[k].json, loom_errmsg(),
				 bad[k].why);
	}
	gw_slo_destroy(s);
}

static void test_accounting(void **state)
{
	(void)state;
	gw_slo *s;
	assert_int_equal(gw_slo_create(&s), LOOM_OK);
	int in = gw_slo_find(s, "interactive"), ba = gw_slo_find(s, "batch");
	static const struct {
		const char *what;
		gw_slo_outcome o;
		int ttft_met, tpot_met, met;
	} cases[] = {
		{"within both", {200, true, 120, true, 20, 10}, 1, 1, 1},
		{"TTFT late", {200, true, 1500, true, 20, 10}, 0, 1, 0},
		{"TTFT on the target", {200, true, 1000, true, 200, 10}, 1, 1, 1},
		{"TPOT slow", {200, true, 100, true, 250, 10}, 1, 0, 0},
		{"one token: no TPOT", {200, true, 100, false, 0, 1}, 1, 1, 1},
		{"no token at all", {200, false, 0, false, 0, 0}, 0, 1, 0},
		{"refused 503", {503, false, 0, false, 0, 0}, 0, 0, 0},
		{"refused 429", {429, false, 0, false, 0, 0}, 0, 0, 0},
		{"failed 502", {502, true, 100, false, 0, 3}, 0, 0, 0},
	};
	size_t n = sizeof cases / sizeof cases[0];
	gw_slo_figures want = {0}, got;
	for (size_t k = 0; k < n; k++) {
		gw_slo_record(s, in, &cases[k].o);
		gw_slo_figures_get(s, in, &got);
		want.requests++;
		want.ttft_met += (uint64_t)cases[k].ttft_met;
		want.tpot_met += (uint64_t)cases[k].tpot_met;
		want.met += (uint64_t)cases[k].met;
		if (cases[k].met)
			want.good_tokens += cases[k].o.tokens;
		if (got.requests != want.requests || got.ttft_met != want.ttft_met ||
		    got.tpot_met != want.tpot_met || got.met != want.met ||
		    got.good_tokens != want.good_tokens)
			fail_msg("after '%s': requests %llu ttft %llu tpot %llu met %llu good %llu",
				 cases[k].what, (unsigned long long)got.requests,
				 (unsigned long long)got.ttft_met, (unsigned long long)got.tpot_met,
				 (unsigned long long)got.met, (unsigned long long)got.good_tokens);
	}
	assert_int_equal(got.refused_503, 1);
	assert_int_equal(got.refused_429, 1);
	assert_int_equal(got.failed, 1);
	/* batch has no targets: any success meets it, however slow */
	gw_slo_outcome slow = {200, true, 60000, true, 5000, 96};
	gw_slo_record(s, ba, &slow);
	gw_slo_figures_get(s, ba, &got);
	assert_true(got.requests == 1 && got.met == 1 && got.good_tokens == 96);
	gw_slo_record(s, 7, &slow); /* no such class: ignored */

	char *t = gw_slo_metrics_text(s);
	assert_non_null(t);
	assert_non_null(strstr(t, "# TYPE loom_slo_requests_total counter\n"));
	assert_non_null(strstr(t, "loom_slo_requests_total{class=\"interactive\"} 9\n"));
	assert_non_null(strstr(t, "loom_slo_met_total{class=\"interactive\"} 3\n"));
	assert_non_null(strstr(t, "loom_slo_attainment{class=\"interactive\",kind=\"all\"} 0.333333\n"));
	assert_non_null(strstr(t, "loom_slo_refused_total{class=\"interactive\",status=\"503\"} 1\n"));
	assert_non_null(strstr(t, "loom_slo_target_seconds{class=\"interactive\",kind=\"ttft\"} 1\n"));
	assert_null(strstr(t, "loom_slo_target_seconds{class=\"batch\""));
	assert_non_null(strstr(t, "# TYPE loom_slo_ttft_seconds histogram\n"));
	/* TTFTs of the successes with a first token: 120, 1500, 1000, 100, 100 ms */
	assert_non_null(strstr(t, "loom_slo_ttft_seconds_bucket{class=\"interactive\",le=\"0.1\"} 2\n"));
	assert_non_null(strstr(t, "loom_slo_ttft_seconds_bucket{class=\"interactive\",le=\"1\"} 4\n"));
	assert_non_null(strstr(t, "loom_slo_ttft_seconds_bucket{class=\"interactive\",le=\"+Inf\"} 5\n"));
	assert_non_null(strstr(t, "loom_slo_ttft_seconds_count{class=\"interactive\"} 5\n"));
	assert_non_null(strstr(t, "loom_slo_tpot_seconds_count{class=\"interactive\"} 4\n"));
	const char *g = strstr(t, "loom_slo_goodput_tokens_per_second{class=\"interactive\"} ");
	assert_non_null(g);
	assert_true(strtod(g + strlen("loom_slo_goodput_tokens_per_second{class=\"interactive\"} "),
			   NULL) > 0);
	loom_free(t);
	gw_slo_destroy(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_specs),
		cmocka_unit_test(test_config_json),
		cmocka_unit_test(test_accounting),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
