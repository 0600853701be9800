/*
 * tests/bench/test_gen.c — loom-bench's generators against their formulas:
 * arrival rate and cv of long Poisson/Gamma series, Zipf and S-LoRA
 * power-law adapter frequencies, length distributions, spec parsing.
 * Sample sizes (200k) make the statistical tolerances several sigmas wide,
 * and the seeds are fixed, so the results are deterministic.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench/bn_gen.h"
#include "common/alloc.h"

#define N_SAMPLES 200000

static void mean_cv(const double *x, int n, double *mean, double *cv)
{
	double s = 0, sq = 0;
	for (int i = 0; i < n; i++)
		s += x[i];
	*mean = s / n;
	for (int i = 0; i < n; i++)
		sq += (x[i] - *mean) * (x[i] - *mean);
	*cv = sqrt(sq / (n - 1)) / *mean;
}

static void expect_rel(double got, double want, double tol, const char *what)
{
	if (fabs(got - want) > tol * fabs(want))
		fail_msg("%s: got %.6g, want %.6g (tolerance %.1f%%)", what, got, want, tol * 100);
}

static void check_arrivals(double rate, double cv, double tol_mean, double tol_cv)
{
	static double gaps[N_SAMPLES];
	bn_rng r;
	double m, c, total = 0;
	char what[64];
	bn_rng_seed(&r, 42, 1);
	for (int i = 0; i < N_SAMPLES; i++) {
		gaps[i] = bn_arrival_gap(&r, rate, cv);
		assert_true(gaps[i] >= 0);
		total += gaps[i];
	}
	mean_cv(gaps, N_SAMPLES, &m, &c);
	snprintf(what, sizeof what, "rate %g cv %g: arrival rate", rate, cv);
	expect_rel(N_SAMPLES / total, rate, tol_mean, what);
	snprintf(what, sizeof what, "rate %g cv %g: cv of gaps", rate, cv);
	expect_rel(c, cv, tol_cv, what);
}

static void test_poisson_rate_and_cv(void **state)
{
	(void)state;
	check_arrivals(5.0, 1.0, 0.01, 0.02);
	check_arrivals(0.25, 1.0, 0.01, 0.02);
}

static void test_gamma_rate_and_cv(void **state)
{
	(void)state;
	check_arrivals(2.0, 0.5, 0.01, 0.02);  /* shape 4: more regular than Poisson */
	check_arrivals(2.0, 2.0, 0.02, 0.03);  /* shape 1/4: burstier (S-LoRA's cv sweep) */
	check_arrivals(10.0, 4.0, 0.04, 0.05); /* shape 1/16 */
}

static void test_gamma_moments(void **state)
{
	static double x[N_SAMPLES];
	static const double shapes[] = { 0.3, 1.0, 2.5, 9.0 };
	(void)state;
	for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
		bn_rng r;
		double m, c;
		bn_rng_seed(&r, 7, k);
		for (int i = 0; i < N_SAMPLES; i++)
			x[i] = bn_rng_gamma(&r, shapes[k], 3.0);
		mean_cv(x, N_SAMPLES, &m, &c);
		expect_rel(m, shapes[k] * 3.0, 0.02, "gamma mean");
		expect_rel(c, 1.0 / sqrt(shapes[k]), 0.03, "gamma cv");
	}
}

/* Frequencies of n_draw picks within 5 binomial sigmas of probs. */
static void check_freq(bn_pop pop, int n, const double *want)
{
	bn_picker *pk;
	bn_rng r;
	long count[64] = { 0 };
	assert_true(n <= 64);
	assert_int_equal(bn_picker_create(&pop, n, &pk), LOOM_OK);
	bn_rng_seed(&r, 3, 2);
	for (int i = 0; i < N_SAMPLES; i++) {
		int a = bn_picker_next(pk, &r);
		assert_true(a >= 0 && a < n);
		count[a]++;
	}
	for (int i = 0; i < n; i++) {
		double p = want[i], got = (double)count[i] / N_SAMPLES;
		double sigma = sqrt(p * (1 - p) / N_SAMPLES);
		if (fabs(got - p) > 5 * sigma + 1e-12)
			fail_msg("adapter %d: frequency %.5f, formula %.5f (5 sigma = %.5f)", i, got, p,
				 5 * sigma);
	}
	bn_picker_destroy(pk);
}

static void test_zipf_frequencies(void **state)
{
	static const double alphas[] = { 0.0, 0.8, 1.0, 1.5 };
	(void)state;
	for (size_t k = 0; k < sizeof alphas / sizeof alphas[0]; k++) {
		double want[10], probs[10], h = 0;
		bn_pop pop = { BN_POP_ZIPF, alphas[k] };
		for (int i = 0; i < 10; i++)
			h += pow(i + 1, -alphas[k]);
		for (int i = 0; i < 10; i++)
			want[i] = pow(i + 1, -alphas[k]) / h; /* 1/rank^alpha, normalized */
		bn_pop_probs(&pop, 10, probs);
		for (int i = 0; i < 10; i++)
			assert_true(fabs(probs[i] - want[i]) < 1e-12);
		check_freq(pop, 10, want);
	}
}

static void test_powerlaw_frequencies(void **state)
{
	static const double alphas[] = { 0.1, 0.3, 0.6, 1.0, 2.0 };
	(void)state;
	for (size_t k = 0; k < sizeof alphas / sizeof alphas[0]; k++) {
		double want[8], probs[8];
		bn_pop pop = { BN_POP_POWERLAW, alphas[k] };
		/* S-LoRA: floor(N * X), X ~ numpy.random.power(alpha) (CDF x^alpha) */
		for (int i = 0; i < 8; i++)
			want[i] = pow((i + 1) / 8.0, alphas[k]) - pow(i / 8.0, alphas[k]);
		bn_pop_probs(&pop, 8, probs);
		for (int i = 0; i < 8; i++)
			assert_true(fabs(probs[i] - want[i]) < 1e-12);
		check_freq(pop, 8, want);
	}
	/* alpha = 1 is uniform; smaller alpha favours adapter 0 */
	double p1[8], p01[8];
	bn_pop_probs(&(bn_pop){ BN_POP_POWERLAW, 1.0 }, 8, p1);
	bn_pop_probs(&(bn_pop){ BN_POP_POWERLAW, 0.1 }, 8, p01);
	for (int i = 0; i < 8; i++)
		assert_true(fabs(p1[i] - 0.125) < 1e-12);
	assert_true(p01[0] > 0.8);
}

static void test_uniform_and_distinct(void **state)
{
	double want[16];
	bn_picker *pk;
	bn_rng r;
	(void)state;
	for (int i = 0; i < 16; i++)
		want[i] = 1.0 / 16;
	check_freq((bn_pop){ BN_POP_UNIFORM, 0 }, 16, want);
	assert_int_equal(bn_picker_create(&(bn_pop){ BN_POP_DISTINCT, 0 }, 5, &pk), LOOM_OK);
	bn_rng_seed(&r, 1, 1);
	for (int i = 0; i < 23; i++)
		assert_int_equal(bn_picker_next(pk, &r), i % 5);
	bn_picker_destroy(pk);
	assert_int_equal(bn_picker_create(&(bn_pop){ BN_POP_UNIFORM, 0 }, 0, &pk), LOOM_EINVAL);
	assert_null(pk);
}

static void test_length_uniform_bounds(void **state)
{
	bn_len l;
	bn_rng r;
	long count[5] = { 0 };
	double sum = 0;
	(void)state;
	assert_int_equal(bn_len_parse("uniform:8:12", "--prompt-len", &l), LOOM_OK);
	bn_rng_seed(&r, 9, 3);
	for (int i = 0; i < N_SAMPLES; i++) {
		int v = bn_len_sample(&l, &r);
		assert_true(v >= 8 && v <= 12); /* both bounds inclusive */
		count[v - 8]++;
		sum += v;
	}
	for (int i = 0; i < 5; i++)
		expect_rel((double)count[i] / N_SAMPLES, 0.2, 0.03, "uniform length frequency");
	expect_rel(sum / N_SAMPLES, 10.0, 0.005, "uniform length mean");
	assert_int_equal(bn_len_parse("uniform:7:7", "--output-len", &l), LOOM_OK);
	assert_int_equal(bn_len_sample(&l, &r), 7);
}

static void test_length_lognormal_moments(void **state)
{
	static const double mus[] = { 4.0, 6.0 }, sigmas[] = { 0.5, 1.0 };
	(void)state;
	for (int k = 0; k < 2; k++) {
		char spec[64];
		bn_len l;
		bn_rng r;
		double s = 0, sq = 0, logs = 0, logsq = 0;
		snprintf(spec, sizeof spec, "lognormal:%g:%g", mus[k], sigmas[k]);
		assert_int_equal(bn_len_parse(spec, "--prompt-len", &l), LOOM_OK);
		bn_rng_seed(&r, 11, 4);
		for (int i = 0; i < N_SAMPLES; i++) {
			double v = bn_len_sample(&l, &r);
			assert_true(v >= 1);
			s += v;
			sq += v * v;
			logs += log(v);
			logsq += log(v) * log(v);
		}
		double mean = s / N_SAMPLES, sd = sqrt(sq / N_SAMPLES - mean * mean);
		double want_mean = exp(mus[k] + sigmas[k] * sigmas[k] / 2);
		double want_sd = want_mean * sqrt(exp(sigmas[k] * sigmas[k]) - 1);
		expect_rel(mean, want_mean, 0.01, "lognormal mean");
		expect_rel(sd, want_sd, 0.04, "lognormal sd");
		double lm = logs / N_SAMPLES;
		expect_rel(lm, mus[k], 0.005, "lognormal mu (mean of log)");
		expect_rel(sqrt(logsq / N_SAMPLES - lm * lm), sigmas[k], 0.02,
			   "lognormal sigma (sd of log)");
	}
}

static void test_length_fixed_and_format(void **state)
{
	bn_len l;
	bn_rng r;
	char buf[64];
	(void)state;
	bn_rng_seed(&r, 1, 1);
	assert_int_equal(bn_len_parse("fixed:17", "--output-len", &l), LOOM_OK);
	assert_int_equal(bn_len_sample(&l, &r), 17);
	bn_len_format(&l, buf, sizeof buf);
	assert_string_equal(buf, "fixed:17");
	assert_int_equal(bn_len_parse("64", "--output-len", &l), LOOM_OK);
	assert_int_equal(bn_len_sample(&l, &r), 64);
	assert_int_equal(bn_len_parse("lognormal:5.5:0.25", "--output-len", &l), LOOM_OK);
	bn_len_format(&l, buf, sizeof buf);
	assert_string_equal(buf, "lognormal:5.5:0.25");
}

static void test_spec_errors(void **state)
{
	static const char *const bad_len[] = { "fixed:0", "fixed:abc", "fixed:", "uniform:5:3",
		"uniform:0:3", "uniform:1", "lognormal:1", "lognormal:1:-1", "lognormal:x:1",
		"foo", "", "fixed:2000000", "lognormal:99:1", "fixed:3:4" };
	static const char *const bad_pop[] = { "zipf", "zipf:-1", "zipf:x", "powerlaw:0",
		"powerlaw:", "normal", "", "uniform:1", "zipf:1:2" };
	bn_len l;
	bn_pop p;
	(void)state;
	for (size_t i = 0; i < sizeof bad_len / sizeof bad_len[0]; i++) {
		if (bn_len_parse(bad_len[i], "--prompt-len", &l) != LOOM_EINVAL)
			fail_msg("length spec '%s' accepted", bad_len[i]);
		assert_non_null(strstr(loom_errmsg(), "--prompt-len"));
	}
	for (size_t i = 0; i < sizeof bad_pop / sizeof bad_pop[0]; i++) {
		if (bn_pop_parse(bad_pop[i], &p) != LOOM_EINVAL)
			fail_msg("popularity '%s' accepted", bad_pop[i]);
		assert_non_null(strstr(loom_errmsg(), "--popularity"));
	}
	assert_int_equal(bn_pop_parse("zipf:1.2", &p), LOOM_OK);
	assert_int_equal(p.kind, BN_POP_ZIPF);
	assert_true(p.alpha == 1.2);
	assert_int_equal(bn_pop_parse("powerlaw:0.3", &p), LOOM_OK);
	assert_int_equal(p.kind, BN_POP_POWERLAW);
	assert_int_equal(bn_pop_parse("distinct", &p), LOOM_OK);
	assert_int_equal(p.kind, BN_POP_DISTINCT);
}

static void test_rng_determinism_and_range(void **state)
{
	bn_rng a, b, c;
	int differ = 0;
	(void)state;
	bn_rng_seed(&a, 5, 1);
	bn_rng_seed(&b, 5, 1);
	bn_rng_seed(&c, 5, 2);
	for (int i = 0; i < 1000; i++) {
		uint64_t x = bn_rng_u64(&a), y = bn_rng_u64(&b), z = bn_rng_u64(&c);
		assert_true(x == y);
		differ += x != z;
	}
	assert_true(differ > 990);
	for (int i = 0; i < 100000; i++) {
		double u = bn_rng_uniform(&a);
		long v = bn_rng_range(&a, 3, 511);
		assert_true(u >= 0 && u < 1);
		assert_true(v >= 3 && v <= 511);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_poisson_rate_and_cv),
		cmocka_unit_test(test_gamma_rate_and_cv),
		cmocka_unit_test(test_gamma_moments),
		cmocka_unit_test(test_zipf_frequencies),
		cmocka_unit_test(test_powerlaw_frequencies),
		cmocka_unit_test(test_uniform_and_distinct),
		cmocka_unit_test(test_length_uniform_bounds),
		cmocka_unit_test(test_length_lognormal_moments),
		cmocka_unit_test(test_length_fixed_and_format),
		cmocka_unit_test(test_spec_errors),
		cmocka_unit_test(test_rng_determinism_and_range),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
