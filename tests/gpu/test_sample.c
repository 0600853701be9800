/*
 * tests/gpu/test_sample.c — next-token sampling on the device
 * (kernels/cuda/sample.cu) against the CPU backend's worker/sample.c.
 *
 * Greedy must give the CPU's token exactly (ties to the lowest id, NaN as
 * -inf, -0 equal to +0). Sampled draws (temperature, top_k below and above
 * the kernel's compaction limit, top_p, both) must give the CPU's token
 * for the same (seed, position); a difference is accepted only where a
 * float64 re-computation here shows the draw (or the top_p cut) within
 * 1e-6 of the total mass from a boundary, where float rounding may decide
 * either way. The uniform draw itself must equal wk_rand_uniform bit for
 * bit.
 */
#include "gpu_test.h"

#ifdef LOOM_HAVE_CUDA
#include "worker/sample.h"
#endif

#define GT_CASES(X)                                                                            \
	X(test_sample_rand_uniform)                                                            \
	X(test_sample_bad_arguments)                                                           \
	X(test_sample_greedy)                                                                  \
	X(test_sample_draws_f32)                                                               \
	X(test_sample_draws_bf16_large_vocab)

#ifdef LOOM_HAVE_CUDA

static void test_sample_rand_uniform(void **state)
{
	(void)state;
	for (int i = 0; i < 20000; i++) {
		uint64_t seed = gt_next(), pos = i < 100 ? (uint64_t)i : gt_next();
		double a = kn_cuda_rand_uniform(seed, pos), b = wk_rand_uniform(seed, pos);
		if (memcmp(&a, &b, sizeof a) != 0)
			fail_msg("rand_uniform(%llu, %llu): %.17g vs CPU %.17g",
				 (unsigned long long)seed, (unsigned long long)pos, a, b);
	}
}

/* CPU order: best first (logit desc, id asc; NaN as -inf) when filtering. */
static const float *cmp_lg;
static int cmp_best(const void *pa, const void *pb)
{
	int a = *(const int *)pa, b = *(const int *)pb;
	float x = isnan(cmp_lg[a]) ? -INFINITY : cmp_lg[a];
	float y = isnan(cmp_lg[b]) ? -INFINITY : cmp_lg[b];
	if (x != y)
		return x > y ? -1 : 1;
	return a < b ? -1 : a > b;
}

/* Smallest distance, relative to the mass, between a decision (top_p cut,
 * the draw) and a cumulative boundary, in float64. */
static double draw_margin(const float *lg, int V, const loom_sampling *p, uint64_t position)
{
	int *ids = malloc((size_t)V * sizeof *ids);
	double *e = malloc((size_t)V * sizeof *e);
	assert_true(ids && e);
	for (int i = 0; i < V; i++)
		ids[i] = i;
	int use_k = p->top_k > 0 && p->top_k < V, use_p = p->top_p < 1.f;
	int n = V;
	if (use_k || use_p) {
		cmp_lg = lg;
		qsort(ids, (size_t)V, sizeof *ids, cmp_best);
		if (use_k)
			n = p->top_k;
	}
	double mx = -INFINITY, total = 0, margin = INFINITY;
	for (int i = 0; i < n; i++)
		if (lg[ids[i]] > mx)
			mx = lg[ids[i]];
	for (int i = 0; i < n; i++) {
		e[i] = isnan(lg[ids[i]]) ? 0 : exp((lg[ids[i]] - mx) / p->temperature);
		total += e[i];
	}
	if (use_p) {
		double want = p->top_p * total, acc = 0;
		int keep = 0;
		while (keep < n) {
			acc += e[keep++];
			if (acc >= want)
				break;
		}
		/* the cut: the sums just before and at the kept prefix */
		margin = fmin(fabs(acc - want), fabs(acc - e[keep - 1] - want)) / total;
		n = keep;
		total = acc;
	}
	double u = wk_rand_uniform(p->seed, position) * total, acc = 0;
	for (int i = 0; i < n; i++) {
		double before = acc;
		acc += e[i];
		if (u < acc) { /* the chosen candidate: u between before and acc */
			margin = fmin(margin, fmin(acc - u, u - before) / total);
			break;
		}
	}
	free(ids);
	free(e);
	return margin;
}

typedef struct srow {
	loom_sampling p;
	uint64_t position;
} srow;

/* Runs the device sampler on rows x V logits (dt, ld) and compares with
 * wk_sample on the same (rounded) logits. Returns boundary cases. */
static int compare_rows(const char *what, kn_cuda_dtype dt, const float *lg, int rows, int V,
			int ld, const srow *rp)
{
	size_t es = kn_cuda_dtype_size(dt);
	unsigned char *h = malloc((size_t)rows * ld * es);
	kn_cuda_sample_params *par = calloc((size_t)rows, sizeof *par);
	int32_t *tok = malloc((size_t)rows * sizeof *tok);
	void *scratch = malloc(wk_sample_scratch_bytes(V));
	assert_true(h && par && tok && scratch);
	memset(h, 0xFF, (size_t)rows * ld * es); /* NaN in the padding */
	for (int r = 0; r < rows; r++) {
		for (int i = 0; i < V; i++) {
			float f = lg[(size_t)r * V + i];
			if (dt == KN_CUDA_F32) {
				memcpy(h + ((size_t)r * ld + i) * 4, &f, 4);
			} else {
				uint16_t b = dt == KN_CUDA_BF16 ? loom_f32_to_bf16(f) : loom_f32_to_f16(f);
				memcpy(h + ((size_t)r * ld + i) * 2, &b, 2);
			}
		}
		par[r].temperature = rp[r].p.temperature;
		par[r].top_k = rp[r].p.top_k;
		par[r].top_p = rp[r].p.top_p;
		par[r].seed = rp[r].p.seed;
		par[r].position = rp[r].position;
	}
	double *rounded = gt_to_double(dt, h, (size_t)rows * ld);
	void *ld_dev = gt_upload(h, (size_t)rows * ld * es);
	void *pd = gt_upload(par, (size_t)rows * sizeof *par);
	int32_t *td = gt_alloc((size_t)rows * sizeof *td);
	gt_poison(td, (size_t)rows * sizeof *td);
	GT_OK(kn_cuda_sample(td, ld_dev, dt, ld, rows, V, pd, gt.stream));
	gt_download(tok, td, (size_t)rows * sizeof *tok);
	float *row = malloc((size_t)V * sizeof *row);
	assert_non_null(row);
	int boundary = 0;
	for (int r = 0; r < rows; r++) {
		for (int i = 0; i < V; i++)
			row[i] = (float)rounded[(size_t)r * ld + i];
		int32_t want = wk_sample(row, V, &rp[r].p, rp[r].position, scratch);
		if (tok[r] == want)
			continue;
		double m = draw_margin(row, V, &rp[r].p, rp[r].position);
		if (m < 1e-6) {
			boundary++;
			continue;
		}
		fail_msg("%s row %d (T=%g top_k=%d top_p=%g seed=%llu pos=%llu): device %d, CPU %d "
			 "(draw %.3g of the mass from a boundary)", what, r,
			 (double)rp[r].p.temperature, rp[r].p.top_k, (double)rp[r].p.top_p,
			 (unsigned long long)rp[r].p.seed, (unsigned long long)rp[r].position,
			 tok[r], want, m);
	}
	free(h), free(par), free(tok), free(scratch), free(rounded), free(row);
	return boundary;
}

static void test_sample_greedy(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	gt_reset();
	enum { V = 512, R = 8 };
	float *lg = malloc((size_t)R * V * sizeof *lg);
	assert_non_null(lg);
	for (int i = 0; i < R * V; i++)
		lg[i] = (float)(gt_rnd() * 4.0);
	float *r1 = lg + V, *r2 = lg + 2 * V, *r3 = lg + 3 * V, *r4 = lg + 4 * V, *r5 = lg + 5 * V,
	      *r6 = lg + 6 * V;
	r1[7] = r1[300] = 9.f;                       /* tie: lowest id */
	r2[0] = r2[44] = NAN, r2[45] = 8.5f;         /* NaN is -inf */
	for (int i = 0; i < V; i++) {
		r3[i] = NAN;                         /* all NaN: 0 */
		r4[i] = -INFINITY;                   /* all -inf: 0 */
		r5[i] = -1.f;
	}
	r5[10] = -0.f, r5[4] = 0.f;                  /* -0 ties +0: 4 */
	r6[9] = INFINITY;                            /* +inf max, sampled: argmax */
	srow rp[R];
	memset(rp, 0, sizeof rp);
	for (int r = 0; r < R; r++) {
		rp[r].p.top_p = 1.f;
		rp[r].p.seed = gt_next();
		rp[r].position = (uint64_t)r;
	}
	rp[6].p.temperature = 1.f;                   /* sampling asked, inf max */
	rp[7].p.temperature = 0.8f, rp[7].p.top_k = 1; /* top_k 1 is greedy */
	assert_int_equal(compare_rows("greedy", KN_CUDA_F32, lg, R, V, V, rp), 0);
	/* vocab 1 */
	assert_int_equal(compare_rows("vocab 1", KN_CUDA_F32, lg, 1, 1, 3, rp), 0);
	free(lg);
}

static void draws(kn_cuda_dtype dt, int V, int ld, int rows, double spread)
{
	static const float temps[] = {0.3f, 0.7f, 1.0f, 1.6f};
	static const int ks[] = {0, 2, 5, 50, 1000, 1024, 1025, 3000, 1 << 30};
	static const float ps[] = {1.f, 0.95f, 0.5f, 0.1f, 0.f};
	float *lg = malloc((size_t)rows * V * sizeof *lg);
	srow *rp = calloc((size_t)rows, sizeof *rp);
	assert_true(lg && rp);
	for (int r = 0; r < rows; r++) {
		for (int i = 0; i < V; i++)
			lg[(size_t)r * V + i] = (float)(gt_rnd() * spread);
		if (r % 7 == 3) /* a few ties and NaNs */
			lg[(size_t)r * V + 1] = lg[(size_t)r * V + 2], lg[(size_t)r * V + 3] = NAN;
		rp[r].p.temperature = temps[gt_int(4)];
		rp[r].p.top_k = ks[gt_int((int)(sizeof ks / sizeof *ks))];
		rp[r].p.top_p = ps[gt_int(5)];
		rp[r].p.seed = gt_next();
		rp[r].position = (uint64_t)gt_int(1 << 20);
	}
	char what[64];
	snprintf(what, sizeof what, "draws %s V=%d", kn_cuda_dtype_name(dt), V);
	int b = compare_rows(what, dt, lg, rows, V, ld, rp);
	if (b > rows / 50 + 1)
		fail_msg("%s: %d of %d draws on a boundary (expected almost none)", what, b, rows);
	free(lg);
	free(rp);
}

static void test_sample_draws_f32(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	gt_reset();
	draws(KN_CUDA_F32, 512, 512, 300, 3.0);
	gt_reset();
	draws(KN_CUDA_F32, 4099, 4100, 200, 8.0);
}

static void test_sample_draws_bf16_large_vocab(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	gt_reset();
	draws(KN_CUDA_BF16, 32000, 32008, 64, 6.0);
	gt_reset();
	draws(KN_CUDA_F16, 1000, 1000, 100, 2.0);
}

static void test_sample_bad_arguments(void **state)
{
	(void)state;
	char b[16] = {0};
	kn_cuda_sample_params p = {0};
	assert_int_equal(kn_cuda_sample(NULL, b, KN_CUDA_F32, 4, 1, 4, &p, NULL), LOOM_EINVAL);
	assert_int_equal(kn_cuda_sample((int32_t *)b, b, KN_CUDA_F32, 3, 1, 4, &p, NULL),
			 LOOM_EINVAL); /* ld < vocab */
	assert_int_equal(kn_cuda_sample((int32_t *)b, b, KN_CUDA_DTYPE_COUNT, 4, 1, 4, &p, NULL),
			 LOOM_EUNSUPPORTED);
	assert_int_equal(kn_cuda_sample((int32_t *)b, b, KN_CUDA_F32, 4, 0, 4, &p, NULL), LOOM_OK);
	assert_int_equal(sizeof(kn_cuda_sample_params), 32);
}

#else
GT_CASES(GT_STUB)
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {GT_CASES(GT_ENTRY)};
	return GT_RUN("gpu/sample", tests);
}
