/*
 * tests/worker/test_sample.c — greedy, temperature, top-k and top-p sampling
 * and the counter-based random stream; the sampling controls (min_tokens,
 * logit_bias, repetition/frequency/presence penalties, min_p) and logprobs
 * against a double-precision re-implementation written from their
 * definitions; token counts rebuilt on resumption.
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

/* Greedy against before()'s definition written out (largest value, NaN as
 * -inf, lowest id among equals), on every length 1..13 with the top at
 * every position, ties, -inf and NaN mixed in. */
static void test_greedy_edges(void **st)
{
	(void)st;
	enum { V = 13 };
	float lg[V];
	void *scr = scratch_for(V);
	loom_sampling p = params(0.0f, 0, 1.0f, 0);
	const float odd[] = {NAN, -INFINITY, 3.0f, -2.0f};
	for (int n = 1; n <= V; n++)
		for (int top = 0; top < n; top++)
			for (int variant = 0; variant < 6; variant++) {
				for (int i = 0; i < n; i++)
					lg[i] = variant < 4 ? (float)((i * 7 + variant) % 5) - 2.0f
							    : odd[(i + variant) % 4];
				if (variant % 2 == 0)
					lg[top] = 9.0f;
				if (variant == 5)
					for (int i = 0; i < n; i++)
						lg[i] = i % 2 ? -INFINITY : NAN;
				int want = 0;
				for (int i = 1; i < n; i++) {
					float x = isnan(lg[i]) ? -INFINITY : lg[i];
					float y = isnan(lg[want]) ? -INFINITY : lg[want];
					if (x > y)
						want = i;
				}
				assert_int_equal(wk_sample(lg, n, &p, 0, scr), want);
			}
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

/* ---- sampling controls against a float64 reference ---- */

/* Deterministic pseudo-random logits of a position (a stand-in model). */
static void fake_logits(float *lg, int V, uint64_t seed, uint64_t pos)
{
	for (int i = 0; i < V; i++)
		lg[i] = (float)(wk_rand_uniform(seed, pos * 1000003u + (uint64_t)i) * 6.0 - 3.0);
}

typedef struct ref_req {
	const loom_sampling *p;
	const int32_t *prompt;
	int n_prompt;
	const int32_t *gen;
	int n_gen;
	const int32_t *eos;
	int n_eos;
} ref_req;

/* Steps 1-4 of worker/sample.h in double, from the definitions:
 * OpenAI's logit[j] -= c[j] * frequency + (c[j] > 0) * presence and HF's
 * repetition penalty over prompt + generated. */
static void ref_process(const float *in, int V, const ref_req *q, double *out)
{
	const loom_sampling *p = q->p;
	for (int j = 0; j < V; j++) {
		double l = in[j];
		int c = 0, seen = 0, stop = 0;
		for (int i = 0; i < q->n_gen; i++)
			c += q->gen[i] == j;
		for (int i = 0; i < q->n_prompt; i++)
			seen |= q->prompt[i] == j;
		seen |= c > 0;
		for (int i = 0; i < q->n_eos && !p->ignore_eos; i++)
			stop |= q->eos[i] == j;
		for (uint32_t i = 0; i < p->n_stop_ids; i++)
			stop |= p->stop_ids[i] == j;
		if ((uint32_t)q->n_gen < p->min_tokens && stop)
			l = -INFINITY;
		for (uint32_t i = 0; i < p->n_bias; i++)
			if (p->bias_ids[i] == j)
				l += p->bias[i];
		if (p->repetition_penalty != 0 && seen)
			l = l > 0 ? l / p->repetition_penalty : l * p->repetition_penalty;
		l -= c * (double)p->frequency_penalty + (c > 0) * (double)p->presence_penalty;
		out[j] = l;
	}
}

/* The token the reference draws: softmax(l / T), min_p, then the inverse CDF
 * over ids in order at u = wk_rand_uniform(seed, pos) (no top_k/top_p). */
static int ref_draw(const double *l, int V, const loom_sampling *p, uint64_t pos)
{
	double mx = -INFINITY, total = 0, prob[256];
	int best = 0;
	for (int j = 0; j < V; j++)
		if (l[j] > mx)
			mx = l[j], best = j;
	if (p->temperature == 0)
		return best;
	for (int j = 0; j < V; j++) {
		prob[j] = exp((l[j] - mx) / p->temperature);
		if (prob[j] < p->min_p) /* p_j / p_max */
			prob[j] = 0;
		total += prob[j];
	}
	double u = wk_rand_uniform(p->seed, pos) * total, acc = 0;
	for (int j = 0; j < V; j++) {
		acc += prob[j];
		if (u < acc)
			return j;
	}
	return V - 1;
}

static void ref_logsoftmax(const double *l, int V, double *out)
{
	double mx = -INFINITY, s = 0;
	for (int j = 0; j < V; j++)
		if (l[j] > mx)
			mx = l[j];
	for (int j = 0; j < V; j++)
		s += exp(l[j] - mx);
	for (int j = 0; j < V; j++)
		out[j] = l[j] - mx - log(s);
}

static void test_controls_reference(void **st)
{
	(void)st;
	enum { V = 64, NP = 12, NG = 20 };
	int32_t prompt[NP], gen[NG], eos[] = { 2 }, stops[] = { 5, 9 };
	int32_t bias_ids[] = { 3, 7, 11, 2 };
	float bias[] = { 2.5f, -100.0f, 0.75f, 1.0f };
	float lg[V], mine[V];
	double ref[V], lsm[V];
	void *scr = scratch_for(V);
	for (int i = 0; i < NP; i++)
		prompt[i] = (int32_t)(wk_rand_uniform(8, (uint64_t)i) * V);
	for (int i = 0; i < NG; i++) /* repeats on purpose: counts up to 4 */
		gen[i] = (int32_t)(wk_rand_uniform(9, (uint64_t)i) * 16);
	struct { float pres, freq, rep, min_p, temp; uint32_t min_tokens; } cases[] = {
		{ 0.7f, 0.4f, 1.3f, 0.0f, 0.0f, 0 },
		{ 1.5f, -0.5f, 0.0f, 0.0f, 1.0f, 30 },
		{ -2.0f, 2.0f, 0.8f, 0.1f, 0.7f, 0 },
		{ 0.0f, 0.0f, 1.7f, 0.3f, 1.3f, 25 },
		{ 0.2f, 0.9f, 2.0f, 0.0f, 0.9f, 0 },
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		loom_sampling p = params(cases[c].temp, 0, 1.0f, 1000 + c);
		p.presence_penalty = cases[c].pres;
		p.frequency_penalty = cases[c].freq;
		p.repetition_penalty = cases[c].rep;
		p.min_p = cases[c].min_p;
		p.min_tokens = cases[c].min_tokens;
		p.n_bias = 4;
		p.bias_ids = bias_ids;
		p.bias = bias;
		p.n_stop_ids = 2;
		p.stop_ids = stops;
		for (int ng = 0; ng <= NG; ng += 4) {
			wk_hist h;
			ref_req q = { &p, prompt, NP, gen, ng, eos, 1 };
			assert_int_equal(wk_hist_init(&h, &p, prompt, NP, gen, (uint32_t)ng, V),
					 LOOM_OK);
			for (uint64_t pos = 0; pos < 8; pos++) {
				fake_logits(lg, V, 77 + c, pos);
				memcpy(mine, lg, sizeof lg);
				wk_sample_process(mine, V, &p, &h, (uint32_t)ng, eos, 1);
				ref_process(lg, V, &q, ref);
				for (int j = 0; j < V; j++) {
					if (isinf(ref[j])) {
						assert_true(isinf(mine[j]) && mine[j] < 0);
						continue;
					}
					if (fabs(mine[j] - ref[j]) > 1e-5 * (1 + fabs(ref[j]))) {
						print_error("case %zu ng %d token %d: %.7f vs %.7f\n", c,
							    ng, j, (double)mine[j], ref[j]);
						fail();
					}
				}
				assert_int_equal(wk_sample(mine, V, &p, (uint64_t)ng + pos, scr),
						 ref_draw(ref, V, &p, (uint64_t)ng + pos));
				/* logprobs: log-softmax of the processed row */
				int32_t top[5];
				float lp, top_lp[5];
				ref_logsoftmax(ref, V, lsm);
				wk_logprobs(mine, V, 13, 5, &lp, top, top_lp);
				assert_true(fabs(lp - lsm[13]) < 1e-5 || (isinf(lsm[13]) && isinf(lp)));
				for (int k = 0; k < 5; k++) {
					int better = 0;
					for (int j = 0; j < V; j++)
						better += lsm[j] > lsm[top[k]];
					assert_int_equal(better, k); /* no ties in random logits */
					assert_true(fabs(top_lp[k] - lsm[top[k]]) < 1e-5);
				}
			}
			wk_hist_fini(&h);
		}
	}
	free(scr);
}

/* min_tokens keeps EOS and the stop ids out; then they can win again. */
static void test_min_tokens(void **st)
{
	(void)st;
	enum { V = 8 };
	int32_t eos[] = { 0 }, stops[] = { 1 };
	void *scr = scratch_for(V);
	loom_sampling p = params(0.0f, 0, 1.0f, 1);
	p.min_tokens = 3;
	p.n_stop_ids = 1;
	p.stop_ids = stops;
	for (uint32_t ng = 0; ng < 5; ng++) {
		float lg[V] = { 9, 8, 1, 2, 3, 0, 0, 0 };
		wk_sample_process(lg, V, &p, NULL, ng, eos, 1);
		assert_int_equal(wk_sample(lg, V, &p, ng, scr), ng < 3 ? 4 : 0);
	}
	p.ignore_eos = true; /* EOS does not stop then: not masked; stop ids still are */
	float lg[V] = { 9, 8, 1, 2, 3, 0, 0, 0 };
	wk_sample_process(lg, V, &p, NULL, 0, eos, 1);
	assert_int_equal(wk_sample(lg, V, &p, 0, scr), 0);
	assert_true(isinf(lg[1]));
	free(scr);
}

/* Greedy with logit_bias -100 on the best token gives the runner-up. */
static void test_bias_ban(void **st)
{
	(void)st;
	enum { V = 100 };
	float lg[V];
	void *scr = scratch_for(V);
	fake_logits(lg, V, 5, 0);
	loom_sampling p = params(0.0f, 0, 1.0f, 1);
	int32_t best = wk_sample(lg, V, &p, 0, scr), second = -1;
	for (int j = 0; j < V; j++)
		if (j != best && (second < 0 || lg[j] > lg[second]))
			second = j;
	float b = -100.0f;
	p.n_bias = 1;
	p.bias_ids = &best;
	p.bias = &b;
	wk_sample_process(lg, V, &p, NULL, 0, NULL, 0);
	assert_int_equal(wk_sample(lg, V, &p, 0, scr), second);
	free(scr);
}

/* A sequence resumed at position k (its counts rebuilt from prompt + the k
 * tokens) samples the same tokens as the uncut run, with penalties. */
static void test_hist_resume(void **st)
{
	(void)st;
	enum { V = 40, NP = 6, N = 40 };
	int32_t prompt[NP] = { 1, 5, 5, 9, 30, 2 }, eos[] = { 0 };
	int32_t run[N], resumed[N];
	float lg[V];
	void *scr = scratch_for(V);
	loom_sampling p = params(0.9f, 0, 0.95f, 4242);
	p.presence_penalty = 0.6f;
	p.frequency_penalty = 0.3f;
	p.repetition_penalty = 1.2f;
	p.min_tokens = 4;
	wk_hist h;
	assert_int_equal(wk_hist_init(&h, &p, prompt, NP, NULL, 0, NP + N), LOOM_OK);
	for (int i = 0; i < N; i++) {
		fake_logits(lg, V, 31, (uint64_t)i);
		wk_sample_process(lg, V, &p, &h, (uint32_t)i, eos, 1);
		run[i] = wk_sample(lg, V, &p, (uint64_t)i, scr);
		wk_hist_add(&h, run[i]);
	}
	assert_true(h.n <= h.cap);
	wk_hist_fini(&h);
	for (int k = 1; k < N; k += 7) {
		memcpy(resumed, run, (size_t)k * sizeof *run);
		assert_int_equal(wk_hist_init(&h, &p, prompt, NP, run, (uint32_t)k, NP + N), LOOM_OK);
		for (int i = k; i < N; i++) {
			fake_logits(lg, V, 31, (uint64_t)i);
			wk_sample_process(lg, V, &p, &h, (uint32_t)i, eos, 1);
			resumed[i] = wk_sample(lg, V, &p, (uint64_t)i, scr);
			wk_hist_add(&h, resumed[i]);
		}
		assert_memory_equal(run, resumed, sizeof run);
		wk_hist_fini(&h);
	}
	/* no penalty: no memory */
	loom_sampling plain = params(1.0f, 0, 1.0f, 1);
	assert_int_equal(wk_hist_init(&h, &plain, prompt, NP, run, 3, 100), LOOM_OK);
	assert_null(h.e);
	wk_hist_add(&h, 3);
	wk_hist_fini(&h);
	free(scr);
}

/* Logprobs: ties in the top-k go to the lower id; -inf stays -inf. */
static void test_logprobs_ties(void **st)
{
	(void)st;
	float lg[] = { 1.0f, 3.0f, 3.0f, -INFINITY, 2.0f, 3.0f };
	int32_t top[6];
	float lp, tl[6];
	wk_logprobs(lg, 6, 3, 6, &lp, top, tl);
	assert_true(isinf(lp) && lp < 0);
	int32_t want[] = { 1, 2, 5, 4, 0, 3 };
	assert_memory_equal(top, want, sizeof want);
	double s = 3 * exp(0.0) + exp(-1.0) + exp(-2.0);
	assert_true(fabs(tl[0] - (-log(s))) < 1e-6);
	assert_true(fabs(tl[3] - (-1.0 - log(s))) < 1e-6);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greedy_ties),
		cmocka_unit_test(test_greedy_edges),
		cmocka_unit_test(test_top_k1_is_greedy),
		cmocka_unit_test(test_seed_reproducible),
		cmocka_unit_test(test_frequencies_match_softmax),
		cmocka_unit_test(test_top_k_filters),
		cmocka_unit_test(test_top_p_cuts_tail),
		cmocka_unit_test(test_large_vocab),
		cmocka_unit_test(test_controls_reference),
		cmocka_unit_test(test_min_tokens),
		cmocka_unit_test(test_bias_ban),
		cmocka_unit_test(test_hist_resume),
		cmocka_unit_test(test_logprobs_ties),
	};
	return cmocka_run_group_tests_name("worker/sample", tests, NULL, NULL);
}
