/*
 * worker/sample.c — greedy and temperature / top-k / top-p sampling.
 *
 * Order of filters (the common one, as in HF generate and vLLM):
 * logits / temperature -> keep the top_k largest -> softmax -> keep the
 * smallest prefix of the sorted probabilities whose mass reaches top_p ->
 * draw with wk_rand_uniform(seed, position). Candidates are ordered by
 * logit descending, then id ascending, so ties break toward the lowest id
 * everywhere (greedy and top_k = 1 agree). Work: O(V) when neither filter is
 * on, O(V log k) with top_k, a full sort only for top_p without top_k.
 */
#include "sample.h"

#include <math.h>
#include <stdlib.h>

/* splitmix64 finalizer: a bijective mix of 64 bits. */
static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

double wk_rand_uniform(uint64_t seed, uint64_t position)
{
	uint64_t z = mix64(seed + 0x9e3779b97f4a7c15ULL);
	z = mix64(z ^ (position * 0xd1b54a32d192ed03ULL + 0x9e3779b97f4a7c15ULL));
	return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

size_t wk_sample_scratch_bytes(int vocab)
{
	return (size_t)(vocab > 0 ? vocab : 1) * (sizeof(float) + sizeof(int32_t));
}

/* a ranks before b: larger logit, then lower id; NaN counts as -inf. */
static int before(const float *lg, int32_t a, int32_t b)
{
	float x = isnan(lg[a]) ? -INFINITY : lg[a];
	float y = isnan(lg[b]) ? -INFINITY : lg[b];
	if (x != y)
		return x > y;
	return a < b;
}

static int32_t argmax(const float *logits, int vocab)
{
	int32_t best = 0;
	for (int32_t i = 1; i < vocab; i++)
		if (before(logits, i, best))
			best = i;
	return best;
}

/* qsort_r comparator (glibc): ctx is the logits array. */
static int cmp_ids(const void *pa, const void *pb, void *ctx)
{
	const float *lg = ctx;
	int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
	return before(lg, a, b) ? -1 : before(lg, b, a) ? 1 : 0;
}

/* Min-heap (by rank: the worst candidate at the root) of k ids. */
static void heap_down(const float *lg, int32_t *h, int n, int i)
{
	for (;;) {
		int w = i, l = 2 * i + 1, r = l + 1;
		if (l < n && before(lg, h[w], h[l]))
			w = l;
		if (r < n && before(lg, h[w], h[r]))
			w = r;
		if (w == i)
			return;
		int32_t t = h[i];
		h[i] = h[w];
		h[w] = t;
		i = w;
	}
}

/* Writes the k best ids into ids[0..k), best first. */
static void top_k_ids(const float *lg, int vocab, int k, int32_t *ids)
{
	for (int i = 0; i < k; i++)
		ids[i] = i;
	for (int i = k / 2 - 1; i >= 0; i--)
		heap_down(lg, ids, k, i);
	for (int32_t i = k; i < vocab; i++) {
		if (before(lg, i, ids[0])) {
			ids[0] = i;
			heap_down(lg, ids, k, 0);
		}
	}
	/* heap sort in place: repeatedly move the worst to the end */
	for (int n = k; n > 1; n--) {
		int32_t t = ids[0];
		ids[0] = ids[n - 1];
		ids[n - 1] = t;
		heap_down(lg, ids, n - 1, 0);
	}
}

int32_t wk_sample(const float *logits, int vocab, const loom_sampling *p, uint64_t position,
		  void *scratch)
{
	if (vocab <= 1)
		return 0;
	if (!(p->temperature > 0.0f) || p->top_k == 1)
		return argmax(logits, vocab);

	int32_t *ids = (int32_t *)scratch;
	float *prob = (float *)(ids + vocab);
	int n = vocab;
	int sorted = 0;
	if (p->top_k > 0 && p->top_k < vocab) {
		n = p->top_k;
		top_k_ids(logits, vocab, n, ids);
		sorted = 1;
	} else {
		for (int32_t i = 0; i < vocab; i++)
			ids[i] = i;
		if (p->top_p < 1.0f) {
			qsort_r(ids, (size_t)vocab, sizeof *ids, cmp_ids, (void *)logits);
			sorted = 1;
		}
	}

	/* softmax of logit/temperature over the candidates */
	float mx = -INFINITY;
	for (int i = 0; i < n; i++)
		if (logits[ids[i]] > mx)
			mx = logits[ids[i]];
	if (!isfinite(mx))
		return argmax(logits, vocab);
	double inv_t = 1.0 / p->temperature, total = 0.0;
	for (int i = 0; i < n; i++) {
		float lg = logits[ids[i]];
		double e = isnan(lg) ? 0.0 : exp(((double)lg - mx) * inv_t);
		prob[i] = (float)e;
		total += e;
	}

	if (sorted && p->top_p < 1.0f) {
		double want = (double)p->top_p * total, acc = 0.0;
		int keep = 0;
		while (keep < n) {
			acc += prob[keep++];
			if (acc >= want)
				break;
		}
		n = keep;
		total = acc;
	}

	double u = wk_rand_uniform(p->seed, position) * total, acc = 0.0;
	for (int i = 0; i < n; i++) {
		acc += prob[i];
		if (u < acc)
			return ids[i];
	}
	for (int i = n - 1; i > 0; i--) /* rounding: u landed past the sum */
		if (prob[i] > 0.0f)
			return ids[i];
	return ids[0];
}
