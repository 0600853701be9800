/*
 * tests/bench/test_stats.c — percentiles and summaries on known data.
 * Expected values follow numpy's default numpy.percentile(x, q), method
 * "linear": position h = (n-1)*q/100 on the sorted data, linear interpolation
 * between x[floor h] and the next (worked by hand from that definition; e.g.
 * numpy's own docs give percentile([[10,7,4],[3,2,1]], 50) = 3.5).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>

#include "bench/bn_stats.h"

#define CLOSE(a, b) assert_true(fabs((a) - (b)) < 1e-9)

typedef struct pcase {
	const char *name;
	double x[8];
	size_t n;
	double q, want;
} pcase;

static const pcase cases[] = {
	{ "four p50", { 1, 2, 3, 4 }, 4, 50, 2.5 },
	{ "four p90", { 1, 2, 3, 4 }, 4, 90, 3.7 },
	{ "four p99", { 1, 2, 3, 4 }, 4, 99, 3.97 },
	{ "five p40", { 15, 20, 35, 40, 50 }, 5, 40, 29.0 },
	{ "five p25", { 15, 20, 35, 40, 50 }, 5, 25, 20.0 },
	{ "five p0", { 15, 20, 35, 40, 50 }, 5, 0, 15.0 },
	{ "five p100", { 15, 20, 35, 40, 50 }, 5, 100, 50.0 },
	{ "one", { 7 }, 1, 99, 7.0 },
	{ "two p50", { 1, 3 }, 2, 50, 2.0 },
	{ "ties", { 2, 2, 2, 5 }, 4, 90, 4.1 },
	{ "numpy docs example", { 1, 2, 3, 4, 7, 10 }, 6, 50, 3.5 },
};

static void test_percentile_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		double got = bn_percentile(cases[i].x, cases[i].n, cases[i].q);
		if (fabs(got - cases[i].want) > 1e-9)
			fail_msg("%s: percentile %g = %.12g, numpy says %.12g", cases[i].name,
				 cases[i].q, got, cases[i].want);
	}
}

static void test_summary_1_to_100(void **state)
{
	double x[100];
	bn_summary s;
	(void)state;
	for (int i = 0; i < 100; i++)
		x[i] = 100 - i; /* any order: summarize sorts */
	assert_int_equal(bn_summarize(x, 100, &s), LOOM_OK);
	assert_int_equal(s.count, 100);
	CLOSE(s.mean, 50.5);
	CLOSE(s.min, 1);
	CLOSE(s.max, 100);
	CLOSE(s.p50, 50.5);  /* numpy.percentile(range(1,101), 50) */
	CLOSE(s.p90, 90.1);
	CLOSE(s.p99, 99.01);
	CLOSE(s.stddev, sqrt((100.0 * 100 - 1) / 12)); /* population sd of 1..n */
	assert_true(s.p50 <= s.p90 && s.p90 <= s.p99);
}

static void test_summary_skips_nan_and_empty(void **state)
{
	double x[] = { NAN, 3, NAN, 1, 2 };
	bn_summary s;
	(void)state;
	assert_int_equal(bn_summarize(x, 5, &s), LOOM_OK);
	assert_int_equal(s.count, 3);
	CLOSE(s.p50, 2);
	CLOSE(s.mean, 2);
	assert_int_equal(bn_summarize(x, 0, &s), LOOM_OK);
	assert_int_equal(s.count, 0);
	assert_true(isnan(s.p50));
	double only_nan[] = { NAN, NAN };
	assert_int_equal(bn_summarize(only_nan, 2, &s), LOOM_OK);
	assert_int_equal(s.count, 0);
	assert_true(isnan(s.mean));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_percentile_table),
		cmocka_unit_test(test_summary_1_to_100),
		cmocka_unit_test(test_summary_skips_nan_and_empty),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
