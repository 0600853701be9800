/*
 * worker/sample.c — the sampling controls, greedy and temperature / min-p /
 * top-k / top-p sampling, and logprobs.
 *
 * Order (sample.h has the whole list): min_tokens mask, logit_bias,
 * repetition, frequency and presence penalties on the raw row in place
 * (wk_sample_process); then wk_sample: logits / temperature -> keep the
 * top_k largest -> softmax -> drop those below min_p times the largest ->
 * keep the smallest prefix of the sorted probabilities whose mass reaches
 * top_p -> draw with wk_rand_uniform(seed, position). Candidates are
 * ordered by logit descending, then id ascending, so ties break toward the
 * lowest id everywhere (greedy and top_k = 1 agree; logprobs' top-k too).
 * Work: O(V) when no filter is on, O(V log k) with top_k, a full sort only
 * for top_p without top_k; penalties O(distinct ids seen) per step.
 */
#include "sample.h"

#include <inttypes.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/alloc.h"

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

/* The id that ranks first (before()): the largest value, NaN as -inf, the
 * lowest id among equals. Two plain passes instead of before() per id
 * (a greedy step of 32 sequences over a 32000-id vocabulary spent ~2 % of
 * loom-lora-batch's step in it): the largest value, kept in four running
 * maxima (a NaN never compares greater), then the first id holding it. */
static int32_t argmax(const float *logits, int vocab)
{
	float m[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
	int32_t i = 0;
	for (; i + 4 <= vocab; i += 4)
		for (int k = 0; k < 4; k++)
			m[k] = logits[i + k] > m[k] ? logits[i + k] : m[k];
	for (; i < vocab; i++)
		m[0] = logits[i] > m[0] ? logits[i] : m[0];
	float best = m[0];
	for (int k = 1; k < 4; k++)
		best = m[k] > best ? m[k] : best;
	for (i = 0; i < vocab; i++)
		if (logits[i] == best || (best == -INFINITY && isnan(logits[i])))
			return i;
	return 0;
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

	if (p->min_p > 0.0f) {
		/* prob[i] / max prob = prob[i] (the largest candidate has e = 1) */
		double acc = 0.0;
		for (int i = 0; i < n; i++) {
			if (prob[i] < p->min_p)
				prob[i] = 0.0f;
			acc += prob[i];
		}
		total = acc;
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

/* ------------------------------------------------------------------ */
/* history, penalties, logprobs                                        */
/* ------------------------------------------------------------------ */

static int rep_on(const loom_sampling *p)
{
	return p->repetition_penalty != 0.0f && p->repetition_penalty != 1.0f;
}

int wk_sample_needs_hist(const loom_sampling *p)
{
	return p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f || rep_on(p);
}

/* Index of id in h, or of where it would go (*found 0). */
static uint32_t hist_find(const wk_hist *h, int32_t id, int *found)
{
	uint32_t lo = 0, hi = h->n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (h->e[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < h->n && h->e[lo].id == id;
	return lo;
}

/* Counts id (generated: count + 1; prompt: in_prompt). */
static void hist_put(wk_hist *h, int32_t id, int prompt)
{
	int found;
	uint32_t i;

	if (!h->e)
		return;
	i = hist_find(h, id, &found);
	if (!found) {
		if (h->n == h->cap) /* cannot happen with an honest cap: drop it */
			return;
		memmove(&h->e[i + 1], &h->e[i], (size_t)(h->n - i) * sizeof *h->e);
		h->e[i] = (wk_hist_entry){ .id = id };
		h->n++;
	}
	if (prompt)
		h->e[i].in_prompt = 1;
	else
		h->e[i].count++;
}

loom_err wk_hist_init(wk_hist *h, const loom_sampling *p, const int32_t *prompt,
		      uint32_t n_prompt, const int32_t *gen, uint32_t n_gen, uint32_t cap)
{
	memset(h, 0, sizeof *h);
	if (!wk_sample_needs_hist(p))
		return LOOM_OK;
	h->cap = cap ? cap : 1;
	h->e = loom_malloc((size_t)h->cap * sizeof *h->e);
	if (!h->e) {
		h->cap = 0;
		return loom_fail(LOOM_ENOMEM, "out of memory for the token counts of %" PRIu32
				 " distinct ids", cap);
	}
	h->with_prompt = (uint8_t)rep_on(p);
	for (uint32_t i = 0; h->with_prompt && i < n_prompt; i++)
		hist_put(h, prompt[i], 1);
	for (uint32_t i = 0; i < n_gen; i++)
		hist_put(h, gen[i], 0);
	return LOOM_OK;
}

void wk_hist_add(wk_hist *h, int32_t id)
{
	hist_put(h, id, 0);
}

void wk_hist_fini(wk_hist *h)
{
	loom_free(h->e);
	memset(h, 0, sizeof *h);
}

void wk_sample_process(float *logits, int vocab, const loom_sampling *p, const wk_hist *h,
		       uint32_t n_gen, const int32_t *eos, int n_eos)
{
	if (n_gen < p->min_tokens) {
		for (int i = 0; !p->ignore_eos && i < n_eos; i++)
			if (eos[i] >= 0 && eos[i] < vocab)
				logits[eos[i]] = -INFINITY;
		for (uint32_t i = 0; i < p->n_stop_ids; i++)
			if (p->stop_ids[i] >= 0 && p->stop_ids[i] < vocab)
				logits[p->stop_ids[i]] = -INFINITY;
	}
	for (uint32_t i = 0; i < p->n_bias; i++)
		if (p->bias_ids[i] >= 0 && p->bias_ids[i] < vocab)
			logits[p->bias_ids[i]] = (float)((double)logits[p->bias_ids[i]] + p->bias[i]);
	if (!h || !h->e)
		return;
	int rep = rep_on(p);
	double rp = p->repetition_penalty, fp = p->frequency_penalty, pp = p->presence_penalty;
	for (uint32_t i = 0; i < h->n; i++) {
		const wk_hist_entry *x = &h->e[i];
		if (x->id < 0 || x->id >= vocab)
			continue;
		double l = logits[x->id];
		if (rep && (x->in_prompt || x->count))
			l = l > 0 ? l / rp : l * rp;
		if (x->count)
			l -= (double)x->count * fp + pp;
		logits[x->id] = (float)l;
	}
}

void wk_logprobs(const float *logits, int vocab, int32_t id, int k, float *lp, int32_t *top_ids,
		 float *top_lp)
{
	float mx = -INFINITY;
	double sum = 0.0, lse;

	for (int i = 0; i < vocab; i++)
		if (logits[i] > mx)
			mx = logits[i];
	if (isfinite(mx)) {
		for (int i = 0; i < vocab; i++)
			if (!isnan(logits[i]))
				sum += exp((double)logits[i] - mx);
		lse = (double)mx + log(sum);
	} else {
		lse = 0.0; /* every logit -inf (or NaN): every logprob -inf */
	}
#define LP_OF(x) (isnan(x) || !isfinite(mx) ? -INFINITY : (float)((double)(x) - lse))
	*lp = id >= 0 && id < vocab ? LP_OF(logits[id]) : -INFINITY;
	if (k > vocab)
		k = vocab;
	if (k > LOOM_MAX_LOGPROBS)
		k = LOOM_MAX_LOGPROBS;
	if (k <= 0)
		return;
	top_k_ids(logits, vocab, k, top_ids);
	for (int i = 0; i < k; i++)
		top_lp[i] = LP_OF(logits[top_ids[i]]);
#undef LP_OF
}
