/*
 * tests/worker/test_sample.c — greedy, temperature, top-k and top-p sampling
 * and the counter-based random stream.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "worker/sample.h"

static loom_sampling params(float temperature, int top_k, float top_p, uint64_t seed)
{
	loom_sampling p;
	memset(&p, 0, sizeof p);
	p.temperature = temperature;
	p.top_k = top_k;
	p.top_p = top_p;
	p.seed = seed;
	return p;
}

static void *scratch_for(int vocab)
{
	void *s = malloc(wk_sample_scratch_bytes(vocab));
	assert_non_null(s);
	return s;
}

static void test_greedy_ties(void **st)
{
	(void)st;
	float lg[] = {0.5f, 2.0f, -1.0f, 2.0f, 2.0f, NAN};
	void *scr = scratch_for(6);
	loom_sampling p = params(0.0f, 0, 1.0f, 7);
	for (uint64_t pos = 0; pos < 10; pos++)
		assert_int_equal(wk_sample(lg, 6, &p, pos, scr), 1);
	float lg2[] = {NAN, -3.0f, -3.0f};
	assert_int_equal(wk_sample(lg2, 3, &p, 0, scr), 1);
	free(scr);
}

static void test_top_k1_is_greedy(void **st)
{
	(void)st;
	enum { V = 300 };
	float lg[V];
	void *scr = scratch_for(V);
	for (int trial = 0; trial < 20; trial++) {
		for (int i = 0; i < V; i++)
			lg[i] = (float)(wk_rand_uniform(99, (uint64_t)(trial * V + i)) * 4.0);
		lg[trial * 7] = lg[trial * 7 + 3] = 5.0f; /* a tie at the top */
		loom_sampling g = params(0.0f, 0, 1.0f, 0);
		int32_t want = wk_sample(lg, V, &g, 0, scr);
		assert_int_equal(want, trial * 7);
		loom_sampling k1 = params(1.3f, 1, 0.9f, (uint64_t)trial);
		for (uint64_t pos = 0; pos < 50; pos++)
			assert_int_equal(wk_sample(lg, V, &k1, pos, scr), want);
	}
	free(scr);
}

static void test_seed_reproducible(void **st)
{
	(void)st;
	enum { V = 50, N = 200 };
	float lg[V];
	for (int i = 0; i < V; i++)
		lg[i] = (float)(i % 7) * 0.3f;
	void *scr = scratch_for(V);
	int32_t a[N], b[N], c[N];
	loom_sampling p1 = params(1.0f, 0, 1.0f, 1234), p2 = params(1.0f, 0, 1.0f, 1235);
	for (int i = 0; i < N; i++) {
		a[i] = wk_sample(lg, V, &p1, (uint64_t)i, scr);
		b[i] = wk_sample(lg, V, &p1, (uint64_t)i, scr);
		c[i] = wk_sample(lg, V, &p2, (uint64_t)i, scr);
	}
	assert_memory_equal(a, b, sizeof a);
	int diff = 0;
	for (int i = 0; i < N; i++)
		diff += a[i] != c[i];
	assert_true(diff > N / 2); /* ~ (1 - sum p^2) of positions differ */
	/* the draw is a pure function of (seed, position) */
	assert_true(wk_rand_uniform(5, 9) == wk_rand_uniform(5, 9));
	assert_true(wk_rand_uniform(5, 9) != wk_rand_uniform(5, 10));
	assert_true(wk_rand_uniform(5, 9) != wk_rand_uniform(6, 9));
	double mean = 0;
	for (uint64_t i = 0; i < 100000; i++) {
		double u = wk_rand_uniform(42, i);
		assert_true(u >= 0.0 && u < 1.0);
		mean += u;
	}
	assert_true(fabs(mean / 100000 - 0.5) < 0.005);
	free(scr);
}

/* Frequencies over 20000 positions against softmax(logits / T). */
static void check_freqs(const float *lg, int V, loom_sampling p, const double *want)
{
	enum { N = 20000 };
	int count[16] = {0};
	void *scr = scratch_for(V);
	for (int i = 0; i < N; i++) {
		int32_t t = wk_sample(lg, V, &p, (uint64_t)i, scr);
		assert_true(t >= 0 && t < V);
		count[t]++;
	}
	for (int i = 0; i < V; i++) {
		double f = (double)count[i] / N;
		if (fabs(f - want[i]) > 0.015) {
			print_error("token %d: frequency %.4f, expected %.4f\n", i, f, want[i]);
			fail();
		}
		if (want[i] == 0.0)
			assert_int_equal(count[i], 0);
	}
	free(scr);
}

static void softmax(const float *lg, int n, double temp, double *p)
{
	double s = 0;
	for (int i = 0; i < n; i++)
		s += (p[i] = exp(lg[i] / temp));
	for (int i = 0; i < n; i++)
		p[i] /= s;
}

static void test_frequencies_match_softmax(void **st)
{
	(void)st;
	float lg[] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
	double want[5];
	softmax(lg, 5, 1.0, want);
	check_freqs(lg, 5, params(1.0f, 0, 1.0f, 77), want);
	softmax(lg, 5, 0.5, want);
	check_freqs(lg, 5, params(0.5f, 0, 1.0f, 78), want);
	softmax(lg, 5, 2.0, want);
	check_freqs(lg, 5, params(2.0f, 0, 1.0f, 79), want);
}

static void test_top_k_filters(void **st)
{
	(void)st;
	float lg[] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.9f};
	/* top_k = 3 keeps ids 1, 4, 0 */
	float kept[] = {1.0f, 2.0f, 1.5f};
	double pk[3], want[6] = {0};
	softmax(kept, 3, 1.0, pk);
	want[0] = pk[0], want[1] = pk[1], want[4] = pk[2];
	check_freqs(lg, 6, params(1.0f, 3, 1.0f, 5), want);
}

static void test_top_p_cuts_tail(void **st)
{
	(void)st;
	/* probabilities 0.5, 0.25, 0.125, 0.0625, 0.0625 */
	float lg[] = {(float)log(0.0625), (float)log(0.5), (float)log(0.125), (float)log(0.25),
		      (float)log(0.0625)};
	double want[5] = {0};
	/* top_p 0.7: 0.5 < 0.7 <= 0.75 keeps ids 1 and 3 */
	want[1] = 0.5 / 0.75, want[3] = 0.25 / 0.75;
	check_freqs(lg, 5, params(1.0f, 0, 0.7f, 11), want);
	/* just below the two-token mass */
	check_freqs(lg, 5, params(1.0f, 0, 0.749f, 12), want);
	/* combined with top_k = 4 */
	check_freqs(lg, 5, params(1.0f, 4, 0.7f, 13), want);
	/* top_p >= 1 is off: everything can be drawn */
	double all[5] = {0.0625, 0.5, 0.125, 0.25, 0.0625};
	check_freqs(lg, 5, params(1.0f, 0, 1.0f, 14), all);
	/* a tiny top_p keeps only the best */
	double one[5] = {0, 1, 0, 0, 0};
	check_freqs(lg, 5, params(1.0f, 0, 0.01f, 15), one);
}

static void test_large_vocab(void **st)
{
	(void)st;
	enum { V = 32000 };
	float *lg = malloc(sizeof(float) * V);
	void *scr = scratch_for(V);
	for (int i = 0; i < V; i++)
		lg[i] = (float)(wk_rand_uniform(3, (uint64_t)i) * 10.0);
	loom_sampling p = params(0.8f, 40, 0.95f, 3);
	for (uint64_t pos = 0; pos < 50; pos++) {
		int32_t t = wk_sample(lg, V, &p, pos, scr);
		int better = 0;
		for (int i = 0; i < V; i++)
			better += lg[i] > lg[t];
		assert_true(better < 40);
	}
	p = params(0.8f, 0, 0.5f, 3);
	int32_t t = wk_sample(lg, V, &p, 0, scr);
	assert_true(t >= 0 && t < V);
	free(lg);
	free(scr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greedy_ties),
		cmocka_unit_test(test_top_k1_is_greedy),
		cmocka_unit_test(test_seed_reproducible),
		cmocka_unit_test(test_frequencies_match_softmax),
		cmocka_unit_test(test_top_k_filters),
		cmocka_unit_test(test_top_p_cuts_tail),
		cmocka_unit_test(test_large_vocab),
	};
	return cmocka_run_group_tests_name("worker/sample", tests, NULL, NULL);
}
