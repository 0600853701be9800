/*
 * tests/gpu/test_attn.c — paged KV writes and causal GQA attention
 * (kernels/cuda/attn.cu, decode and prefill kernels) against a dense
 * float64 reference written here.
 *
 * Each case builds a KV pool poisoned with NaN (a read of a slot nobody
 * wrote fails the comparison), hands sequences shuffled, non-contiguous
 * block tables, writes the cached context in one step and this step's rows
 * in another (both through kn_cuda_kv_write, from a fused q|k|v buffer),
 * fills layer 0 with other values (a wrong layer offset shows), runs both
 * attention kernels into a poisoned output with padded rows, and compares
 * with softmax(q k^T * scale) v in float64 over the same rounded values;
 * with a sliding window W only keys p-W+1..p count (the cache slots before
 * every window of a sequence are poisoned again after the writes, so a
 * kernel that reads one fails), with a soft-cap the scaled scores become
 * cap * tanh(s / cap) before the softmax.
 * Shapes: context 1, decode at and just past block boundaries, chunked
 * prefill (context before the chunk), prompts of 3, 7, 133, decode over
 * 600 positions (split KV + merge), GQA ratios 1, 2, 4, 8, 12, head_dim 8
 * (stories260k), 32, 64, 128, 256, block sizes 1, 16, 32; windows shorter
 * than, equal to and longer than contexts (decode with split KV inside the
 * window, prefill tiles crossing it), soft-caps with large scores.
 */
#include "gpu_test.h"

#define GT_CASES(X)                                                                            \
	X(test_attn_bad_arguments)                                                             \
	X(test_attn_gqa1_hd64_bs16)                                                            \
	X(test_attn_gqa4_hd128_bs32_f16)                                                       \
	X(test_attn_gqa8_hd128_long_decode)                                                    \
	X(test_attn_stories_hd8)                                                               \
	X(test_attn_hd256_gqa2)                                                                \
	X(test_attn_gqa12_partial_groups)                                                      \
	X(test_attn_block_size_1)                                                              \
	X(test_attn_window)                                                                    \
	X(test_attn_window_long_decode)                                                        \
	X(test_attn_softcap)                                                                   \
	X(test_attn_softcap_window_gemma)

#ifdef LOOM_HAVE_CUDA

#define MAX_SEQS 16
#define N_LAYERS 2
#define LAYER 1

typedef struct acfg {
	const char *name;
	kn_cuda_dtype kvdt, qdt, odt;
	int n_kv, G, hd, bs;
	int n_seqs;
	int q_len[MAX_SEQS], ctx[MAX_SEQS];
	int window;      /* 0 = none */
	float softcap;   /* 0 = none */
	float scale;     /* 0 = head_dim^-1/2 */
} acfg;

/* The first position sequence i's rows see (its first query row's window). */
static int first_key(const acfg *c, int i)
{
	int p = c->ctx[i] - c->q_len[i] - c->window + 1;
	return c->window > 0 && p > 0 ? p : 0;
}

typedef struct abuild {
	int T, nh, kvd, ldq, ldo, bt_stride, n_blocks, max_q, max_ctx;
	int32_t cu[MAX_SEQS + 1];
	int32_t *bt;             /* [n_seqs * bt_stride] */
	double *qv;              /* [T, ldq] fused q|k|v of this step (rounded) */
	double *hk, *hv;         /* per seq history: [ctx - q_len, kvd] concatenated */
	size_t hoff[MAX_SEQS];   /* offset of seq i's history rows */
	kn_cuda_kv kv;
	kn_cuda_attn_batch b;
} abuild;

static void upload_batch(kn_cuda_attn_batch *b, int n_seqs, const int32_t *cu,
			 const int32_t *ctx, const int32_t *bt, int bt_stride, int max_q,
			 int max_ctx)
{
	b->n_seqs = n_seqs;
	b->n_tokens = cu[n_seqs];
	b->max_q_len = max_q;
	b->max_ctx_len = max_ctx;
	b->cu_q = gt_upload(cu, (size_t)(n_seqs + 1) * sizeof *cu);
	b->ctx_len = gt_upload(ctx, (size_t)(n_seqs ? n_seqs : 1) * sizeof *ctx);
	b->block_tables = gt_upload(bt, (size_t)(n_seqs ? n_seqs : 1) * bt_stride * sizeof *bt);
	b->bt_stride = bt_stride;
}

/* Random rows of kv dtype in a [rows, ld] host buffer at column col. */
static void fill_rows(kn_cuda_dtype dt, void *h, double *d, int rows, int ld, int col, int n)
{
	size_t es = kn_cuda_dtype_size(dt);
	for (int r = 0; r < rows; r++) {
		double *vals;
		void *t = gt_rand_tensor(dt, (size_t)n, 1.0, &vals);
		memcpy((char *)h + ((size_t)r * ld + col) * es, t, (size_t)n * es);
		if (d)
			memcpy(d + (size_t)r * ld + col, vals, (size_t)n * sizeof *d);
		free(t);
		free(vals);
	}
}

/* Pool, block tables, cached history (written through kv_write) and this
 * step's rows (written too); returns the device fused q|k|v buffer. */
static void *build(const acfg *c, abuild *a)
{
	memset(a, 0, sizeof *a);
	a->nh = c->n_kv * c->G;
	a->kvd = c->n_kv * c->hd;
	a->ldq = (a->nh + 2 * c->n_kv) * c->hd;
	a->ldo = a->nh * c->hd + 5;
	int need = 0, hist_rows = 0;
	for (int i = 0; i < c->n_seqs; i++) {
		int nb = (c->ctx[i] + c->bs - 1) / c->bs;
		need += nb;
		if (nb + 1 > a->bt_stride)
			a->bt_stride = nb + 1;
		a->cu[i + 1] = a->cu[i] + c->q_len[i];
		a->hoff[i] = (size_t)hist_rows * a->kvd;
		hist_rows += c->ctx[i] - c->q_len[i];
		if (c->q_len[i] > a->max_q)
			a->max_q = c->q_len[i];
		if (c->ctx[i] > a->max_ctx)
			a->max_ctx = c->ctx[i];
	}
	a->T = a->cu[c->n_seqs];
	a->n_blocks = need + 7;
	/* shuffled block ids, unused table entries -1 */
	int *perm = malloc((size_t)a->n_blocks * sizeof *perm);
	assert_non_null(perm);
	for (int i = 0; i < a->n_blocks; i++)
		perm[i] = i;
	for (int i = a->n_blocks - 1; i > 0; i--) {
		int j = gt_int(i + 1), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	a->bt = malloc((size_t)c->n_seqs * a->bt_stride * sizeof *a->bt);
	assert_non_null(a->bt);
	int next = 0;
	for (int i = 0; i < c->n_seqs; i++)
		for (int b = 0; b < a->bt_stride; b++)
			a->bt[i * a->bt_stride + b] =
				b < (c->ctx[i] + c->bs - 1) / c->bs ? perm[next++] : -1;
	free(perm);

	a->kv.dt = c->kvdt;
	a->kv.n_blocks = a->n_blocks;
	a->kv.n_layers = N_LAYERS;
	a->kv.block_size = c->bs;
	a->kv.n_kv_heads = c->n_kv;
	a->kv.head_dim = c->hd;
	size_t kvb = kn_cuda_kv_bytes(&a->kv);
	a->kv.k = gt_alloc(kvb);
	a->kv.v = gt_alloc(kvb);
	gt_poison(a->kv.k, kvb);
	gt_poison(a->kv.v, kvb);

	size_t es = kn_cuda_dtype_size(c->kvdt);
	/* history: one step whose rows are every cached position */
	int32_t hcu[MAX_SEQS + 1] = {0}, hctx[MAX_SEQS];
	for (int i = 0; i < c->n_seqs; i++) {
		hctx[i] = c->ctx[i] - c->q_len[i];
		hcu[i + 1] = hcu[i] + hctx[i];
	}
	a->hk = malloc(((size_t)hist_rows * a->kvd + 1) * sizeof *a->hk);
	a->hv = malloc(((size_t)hist_rows * a->kvd + 1) * sizeof *a->hv);
	void *hh = malloc((size_t)(hist_rows ? hist_rows : 1) * 2 * a->kvd * es);
	assert_true(a->hk && a->hv && hh);
	if (hist_rows) {
		double *tmp = malloc((size_t)hist_rows * 2 * a->kvd * sizeof *tmp);
		assert_non_null(tmp);
		fill_rows(c->kvdt, hh, tmp, hist_rows, 2 * a->kvd, 0, 2 * a->kvd);
		for (int r = 0; r < hist_rows; r++) {
			memcpy(a->hk + (size_t)r * a->kvd, tmp + (size_t)r * 2 * a->kvd,
			       (size_t)a->kvd * sizeof(double));
			memcpy(a->hv + (size_t)r * a->kvd, tmp + (size_t)r * 2 * a->kvd + a->kvd,
			       (size_t)a->kvd * sizeof(double));
		}
		free(tmp);
		char *hd = gt_upload(hh, (size_t)hist_rows * 2 * a->kvd * es);
		kn_cuda_attn_batch hb;
		upload_batch(&hb, c->n_seqs, hcu, hctx, a->bt, a->bt_stride, 0, 0);
		GT_OK(kn_cuda_kv_write(&a->kv, LAYER, &hb, hd, hd + (size_t)a->kvd * es, c->kvdt,
				       2 * a->kvd, gt.stream));
		/* layer 0 gets other values at the same positions */
		fill_rows(c->kvdt, hh, NULL, hist_rows, 2 * a->kvd, 0, 2 * a->kvd);
		char *h0 = gt_upload(hh, (size_t)hist_rows * 2 * a->kvd * es);
		GT_OK(kn_cuda_kv_write(&a->kv, 0, &hb, h0, h0 + (size_t)a->kvd * es, c->kvdt,
				       2 * a->kvd, gt.stream));
	}
	free(hh);
	/* positions before every window of a sequence: poison again */
	for (int i = 0; i < c->n_seqs; i++)
		for (int p = 0; p < first_key(c, i); p++) {
			size_t blk = (size_t)a->bt[i * a->bt_stride + p / c->bs];
			size_t off = ((blk * N_LAYERS + LAYER) * c->bs + (size_t)(p % c->bs)) *
				     (size_t)a->kvd * es;
			gt_poison((char *)a->kv.k + off, (size_t)a->kvd * es);
			gt_poison((char *)a->kv.v + off, (size_t)a->kvd * es);
		}

	/* this step: fused q|k|v rows; q in qdt, k and v in the kv dtype */
	int32_t ctx[MAX_SEQS];
	for (int i = 0; i < c->n_seqs; i++)
		ctx[i] = c->ctx[i];
	upload_batch(&a->b, c->n_seqs, a->cu, ctx, a->bt, a->bt_stride, a->max_q, a->max_ctx);
	a->qv = calloc((size_t)a->T * a->ldq + 1, sizeof *a->qv);
	assert_non_null(a->qv);
	size_t qs = kn_cuda_dtype_size(c->qdt);
	void *qh = malloc((size_t)(a->T ? a->T : 1) * a->ldq * qs);
	assert_non_null(qh);
	/* the fused buffer holds one dtype: q's; k and v are drawn in the kv
	 * dtype, then stored as q's dtype (exact when q is f32 or equal) */
	fill_rows(c->qdt, qh, a->qv, a->T, a->ldq, 0, a->nh * c->hd);
	for (int r = 0; r < a->T; r++) {
		for (int i = 0; i < 2 * a->kvd; i++) {
			double v = gt_round(c->kvdt, gt_rnd());
			if (c->qdt != c->kvdt && c->qdt != KN_CUDA_F32)
				v = gt_round(c->kvdt, gt_round(c->qdt, v));
			size_t at = (size_t)r * a->ldq + a->nh * c->hd + i;
			a->qv[at] = v;
			if (c->qdt == KN_CUDA_F32) {
				float f = (float)v;
				memcpy((char *)qh + at * 4, &f, 4);
			} else {
				uint16_t h = c->qdt == KN_CUDA_BF16 ? loom_f32_to_bf16((float)v)
								    : loom_f32_to_f16((float)v);
				memcpy((char *)qh + at * 2, &h, 2);
			}
		}
	}
	char *qd = gt_upload(qh, (size_t)(a->T ? a->T : 1) * a->ldq * qs);
	free(qh);
	GT_OK(kn_cuda_kv_write(&a->kv, LAYER, &a->b, qd + (size_t)a->nh * c->hd * qs,
			       qd + (size_t)(a->nh * c->hd + a->kvd) * qs, c->qdt, a->ldq,
			       gt.stream));
	return qd;
}

static void free_build(abuild *a)
{
	free(a->bt);
	free(a->qv);
	free(a->hk);
	free(a->hv);
}

/* Dense float64 attention of the step's rows: want[T, ldo] (pads NaN). */
static double *reference(const acfg *c, const abuild *a, float scale)
{
	double *want = malloc(((size_t)a->T * a->ldo + 1) * sizeof *want);
	double *p = malloc(((size_t)a->max_ctx + 1) * sizeof *p);
	assert_true(want && p);
	for (size_t i = 0; i < (size_t)a->T * a->ldo; i++)
		want[i] = NAN;
	for (int s = 0; s < c->n_seqs; s++) {
		int hist = c->ctx[s] - c->q_len[s];
		for (int j = 0; j < c->q_len[s]; j++) {
			int t = a->cu[s] + j, pos = hist + j;
			for (int h = 0; h < a->nh; h++) {
				int kvh = h / c->G;
				const double *q = a->qv + (size_t)t * a->ldq + (size_t)h * c->hd;
				double mx = -INFINITY, sum = 0;
				int lo = c->window > 0 && pos - c->window + 1 > 0 ? pos - c->window + 1
										   : 0;
				for (int k = lo; k <= pos; k++) {
					const double *kr =
						k < hist ? a->hk + a->hoff[s] + (size_t)k * a->kvd
							 : a->qv + (size_t)(a->cu[s] + k - hist) * a->ldq +
								   a->nh * c->hd;
					double dot = 0;
					for (int d = 0; d < c->hd; d++)
						dot += q[d] * kr[kvh * c->hd + d];
					p[k] = dot * scale;
					if (c->softcap > 0)
						p[k] = c->softcap * tanh(p[k] / c->softcap);
					if (p[k] > mx)
						mx = p[k];
				}
				for (int k = lo; k <= pos; k++) {
					p[k] = exp(p[k] - mx);
					sum += p[k];
				}
				for (int d = 0; d < c->hd; d++) {
					double o = 0;
					for (int k = lo; k <= pos; k++) {
						const double *vr =
							k < hist ? a->hv + a->hoff[s] + (size_t)k * a->kvd
								 : a->qv + (size_t)(a->cu[s] + k - hist) *
										   a->ldq +
									   a->nh * c->hd + a->kvd;
						o += p[k] * vr[kvh * c->hd + d];
					}
					want[(size_t)t * a->ldo + (size_t)h * c->hd + d] = o / sum;
				}
			}
		}
	}
	free(p);
	return want;
}

static void check_out(const acfg *c, const abuild *a, const void *oh, const double *want,
		      const char *kernel)
{
	size_t n = (size_t)a->T * a->ldo, os = kn_cuda_dtype_size(c->odt);
	double *got = gt_to_double(c->odt, oh, n);
	double rtol, atol;
	gt_tol(c->odt, &rtol, &atol);
	if (c->odt == KN_CUDA_F32) {
		rtol = 5e-4;
		atol = 5e-4;
	}
	char what[160];
	snprintf(what, sizeof what, "%s %s", c->name, kernel);
	/* pad columns keep the poison (0xFF bytes) */
	for (int t = 0; t < a->T; t++)
		for (int col = a->nh * c->hd; col < a->ldo; col++) {
			const unsigned char *e = (const unsigned char *)oh + ((size_t)t * a->ldo + col) * os;
			for (size_t k = 0; k < os; k++)
				if (e[k] != 0xFF)
					fail_msg("%s: pad column %d of row %d written", what, col, t);
		}
	double *g2 = malloc((n + 1) * sizeof *g2), *w2 = malloc((n + 1) * sizeof *w2);
	assert_true(g2 && w2);
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (!isnan(want[i])) {
			g2[m] = got[i];
			w2[m++] = want[i];
		}
	gt_expect_close(what, g2, w2, m, rtol, atol);
	free(g2);
	free(w2);
	free(got);
}

static void run_case(const acfg *c)
{
	gt_reset();
	abuild a;
	const void *qd = build(c, &a);
	float scale = c->scale > 0 ? c->scale : (float)(1.0 / sqrt((double)c->hd));
	double *want = reference(c, &a, scale);
	size_t ob = (size_t)a.T * a.ldo * kn_cuda_dtype_size(c->odt);
	void *out = gt_alloc(ob), *oh = malloc(ob ? ob : 1);
	assert_non_null(oh);

	size_t wsb = kn_cuda_attn_decode_ws_bytes(a.T, a.nh, c->hd, a.max_ctx);
	void *ws = wsb ? gt_alloc(wsb) : NULL;
	if (ws)
		gt_poison(ws, wsb);
	gt_poison(out, ob);
	GT_OK(kn_cuda_attn_decode(out, c->odt, a.ldo, qd, c->qdt, a.ldq, &a.kv, LAYER, &a.b, a.nh,
				  scale, c->window, c->softcap, ws, wsb, gt.stream));
	gt_download(oh, out, ob);
	check_out(c, &a, oh, want, wsb ? "decode (split KV)" : "decode");

	gt_poison(out, ob);
	GT_OK(kn_cuda_attn_prefill(out, c->odt, a.ldo, qd, c->qdt, a.ldq, &a.kv, LAYER, &a.b, a.nh,
				   scale, c->window, c->softcap, gt.stream));
	gt_download(oh, out, ob);
	check_out(c, &a, oh, want, "prefill");

	free(oh);
	free(want);
	free_build(&a);
}

static void test_attn_gqa1_hd64_bs16(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	acfg c = {"gqa1 hd64 bs16 bf16", KN_CUDA_BF16, KN_CUDA_BF16, KN_CUDA_BF16, 4, 1, 64, 16, 8,
		  {1, 1, 1, 7, 3, 133, 16, 1}, {1, 16, 17, 7, 40, 133, 32, 300}, 0, 0.f, 0.f};
	run_case(&c);
}

static void test_attn_gqa4_hd128_bs32_f16(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	acfg c = {"gqa4 hd128 bs32 f16 -> f32", KN_CUDA_F16, KN_CUDA_F16, KN_CUDA_F32, 2, 4, 128, 32,
		  6, {1, 33, 1, 32, 3, 7}, {600, 100, 32, 64, 3, 70}, 0, 0.f, 0.f};
	run_case(&c);
}

static void test_attn_gqa8_hd128_long_decode(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	acfg c = {"gqa8 hd128 bs16 decode", KN_CUDA_BF16, KN_CUDA_BF16, KN_CUDA_BF16, 1, 8, 128, 16,
		  5, {1, 1, 1, 1, 1}, {513, 1, 256, 257, 1000}, 0, 0.f, 0.f};
	run_case(&c);
}

static void test_attn_stories_hd8(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	acfg c = {"stories260k shape hd8 gqa2", KN_CUDA_BF16, KN_CUDA_F32, KN_CUDA_F32, 4, 2, 8, 16,
		  4, {5, 1, 20, 133}, {5, 6, 40, 133}, 0, 0.f, 0.f};
	run_case(&c);
}

static void test_attn_hd256_gqa2(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	acfg c = {"hd256 gqa2 (shared memory opt-in)", KN_CUDA_BF16, KN_CUDA_BF16, KN_CUDA_BF16, 2,
		  2, 256, 16, 3, {17, 1, 5}, {50, 77, 5}, 0, 0.f, 0.f};
	run_case(&c);
}

static void test_attn_gqa12_partial_groups(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	acfg c = {"gqa12 hd64 (partial head groups)", KN_CUDA_F16, KN_CUDA_F16, KN_CUDA_F16, 2, 12,
		  64, 16, 3, {1, 9, 2}, {30, 9, 290}, 0, 0.f, 0.f};
	run_case(&c);
}

static void test_attn_block_size_1(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	acfg c = {"block size 1 hd32", KN_CUDA_BF16, KN_CUDA_BF16, KN_CUDA_BF16, 2, 2, 32, 1, 3,
		  {4, 1, 7}, {4, 9, 20}, 0, 0.f, 0.f};
	run_case(&c);
}

/* Sliding windows: shorter than the contexts (16 < prompts of 40 and 133,
 * chunked prefill after 37 cached positions), equal (7 and 16), longer (5
 * positions in a window of 16); decodes right at and past the window. */
static void test_attn_window(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	acfg c = {"window 16 gqa4 hd64 bs16", KN_CUDA_BF16, KN_CUDA_BF16, KN_CUDA_BF16, 2, 4, 64, 16,
		  8, {1, 1, 1, 40, 133, 7, 5, 16}, {16, 17, 50, 40, 133, 44, 5, 16}, .window = 16};
	run_case(&c);
	acfg c2 = {"window 5 gqa2 hd8 bs4 f16 -> f32", KN_CUDA_F16, KN_CUDA_F16, KN_CUDA_F32, 2, 2,
		   8, 4, 3, {9, 1, 33}, {9, 30, 40}, .window = 5};
	run_case(&c2);
}

/* A window of 300 over contexts of 600 and 1000: the decode kernel's
 * splits start at the window (two of them), merged. */
static void test_attn_window_long_decode(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	acfg c = {"window 300 gqa8 hd128 decode", KN_CUDA_BF16, KN_CUDA_BF16, KN_CUDA_BF16, 1, 8, 128,
		  16, 4, {1, 1, 1, 1}, {600, 1000, 299, 301}, .window = 300};
	run_case(&c);
}

/* Soft-capped scores (Gemma 2: cap 50) with a large query scale, so the
 * raw scores go well past the cap. */
static void test_attn_softcap(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	acfg c = {"softcap 5 scale 2 gqa2 hd32", KN_CUDA_BF16, KN_CUDA_BF16, KN_CUDA_F32, 2, 2, 32,
		  16, 4, {1, 20, 3, 1}, {1, 20, 50, 300}, .softcap = 5.f, .scale = 2.f};
	run_case(&c);
}

/* Gemma 2's sliding layers: window, soft-cap and query_pre_attn_scalar
 * together. */
static void test_attn_softcap_window_gemma(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	acfg c = {"gemma2-like window 16 softcap 50 hd64", KN_CUDA_BF16, KN_CUDA_BF16, KN_CUDA_BF16,
		  1, 2, 64, 16, 3, {40, 1, 17}, {40, 45, 17}, .window = 16, .softcap = 50.f,
		  .scale = 0.25f};
	run_case(&c);
}

/* Argument checks happen before anything touches the device. */
static void test_attn_bad_arguments(void **state)
{
	(void)state;
	int32_t dummy[4] = {0, 1, 1, 0};
	char buf[64] = {0};
	kn_cuda_kv kv = {buf, buf, KN_CUDA_BF16, 4, 2, 16, 2, 64};
	kn_cuda_attn_batch b = {1, 1, 1, 1, dummy, dummy, dummy, 1};
	assert_int_equal(kn_cuda_attn_prefill(buf, KN_CUDA_BF16, 256, buf, KN_CUDA_BF16, 256, &kv,
					      2, &b, 4, 1.f, 0, 0.f, NULL), LOOM_EINVAL); /* layer */
	assert_int_equal(kn_cuda_attn_prefill(buf, KN_CUDA_BF16, 256, buf, KN_CUDA_BF16, 256, &kv,
					      0, &b, 5, 1.f, 0, 0.f, NULL), LOOM_EINVAL); /* 5 % 2 */
	assert_int_equal(kn_cuda_attn_prefill(buf, KN_CUDA_BF16, 100, buf, KN_CUDA_BF16, 256, &kv,
					      0, &b, 4, 1.f, 0, 0.f, NULL), LOOM_EINVAL); /* ldo */
	kv.head_dim = 300;
	assert_int_equal(kn_cuda_attn_decode(buf, KN_CUDA_BF16, 4096, buf, KN_CUDA_BF16, 4096, &kv,
					     0, &b, 4, 1.f, 0, 0.f, NULL, 0, NULL), LOOM_EINVAL);
	kv.head_dim = 64;
	kv.dt = KN_CUDA_F32;
	assert_int_equal(kn_cuda_kv_write(&kv, 0, &b, buf, buf, KN_CUDA_BF16, 128, NULL),
			 LOOM_EUNSUPPORTED);
	kv.dt = KN_CUDA_BF16;
	assert_int_equal(kn_cuda_kv_write(&kv, 0, &b, buf, buf, KN_CUDA_BF16, 100, NULL),
			 LOOM_EINVAL); /* ld < kv_dim */
	b.max_ctx_len = 1000;
	assert_int_equal(kn_cuda_attn_decode(buf, KN_CUDA_BF16, 256, buf, KN_CUDA_BF16, 256, &kv, 0,
					     &b, 4, 1.f, 0, 0.f, NULL, 0, NULL), LOOM_EINVAL); /* no ws */
	assert_int_equal(kn_cuda_attn_decode(buf, KN_CUDA_BF16, 256, buf, KN_CUDA_BF16, 256, &kv, 0,
					     &b, 4, 1.f, -1, 0.f, NULL, 0, NULL), LOOM_EINVAL);
	assert_int_equal(kn_cuda_attn_prefill(buf, KN_CUDA_BF16, 256, buf, KN_CUDA_BF16, 256, &kv,
					      0, &b, 4, 1.f, 0, -1.f, NULL), LOOM_EINVAL);
	assert_true(kn_cuda_attn_decode_ws_bytes(1, 4, 64, 1000) > 0);
	assert_int_equal(kn_cuda_attn_decode_ws_bytes(8, 4, 64, 256), 0);
	b.n_tokens = 0;
	assert_int_equal(kn_cuda_attn_prefill(buf, KN_CUDA_BF16, 256, buf, KN_CUDA_BF16, 256, &kv,
					      0, &b, 4, 1.f, 0, 0.f, NULL), LOOM_OK); /* nothing to do */
	assert_int_equal(kn_cuda_kv_bytes(&kv), (size_t)4 * 2 * 16 * 2 * 64 * 2);
}

#else
GT_CASES(GT_STUB)
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {GT_CASES(GT_ENTRY)};
	return GT_RUN("gpu/attn", tests);
}
