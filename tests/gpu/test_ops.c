/*
 * tests/gpu/test_ops.c — the CUDA backend's dense ops (cuBLAS GEMM,
 * RMSNorm, per-head RMSNorm, RoPE over host-given frequencies (shared and
 * per row, with a cos/sin factor), SiLU*mul, GELU*mul (tanh and erf), bias
 * add, embedding gather, add, scale, soft-cap, casts) against float64
 * references written here, over dtypes and strided (fused) buffers.
 *
 * Fresh random inputs each run, outputs poisoned with NaN first, row
 * counts 1, 3, 7, 133; padding columns of strided outputs must keep the
 * poison. Casts must round exactly as common/dtype.h does (RNE).
 */
#include "gpu_test.h"

#define GT_CASES(X)                                                                            \
	X(test_ops_bad_arguments)                                                              \
	X(test_gemm)                                                                           \
	X(test_rmsnorm)                                                                        \
	X(test_head_rmsnorm)                                                                   \
	X(test_rope)                                                                           \
	X(test_silu_mul)                                                                       \
	X(test_gelu_mul)                                                                       \
	X(test_add_bias)                                                                       \
	X(test_scale_softcap)                                                                  \
	X(test_embed)                                                                          \
	X(test_add_cast)

#ifdef LOOM_HAVE_CUDA

static const int rows_set[] = {1, 3, 7, 133};
#define N_ROWS ((int)(sizeof rows_set / sizeof *rows_set))
static const kn_cuda_dtype all_dt[] = {KN_CUDA_F32, KN_CUDA_BF16, KN_CUDA_F16};

/* Tolerance for an output of dtype dt computed from inputs of dtype idt. */
static void op_tol(kn_cuda_dtype dt, double *rtol, double *atol)
{
	gt_tol(dt, rtol, atol);
	if (dt == KN_CUDA_F32) {
		*rtol = 2e-5;
		*atol = 2e-5;
	}
}

/* Padding columns [w, ld) of a [rows, ld] host buffer still hold 0xFF. */
static void expect_pad_poison(const char *what, const void *h, kn_cuda_dtype dt, int rows, int w,
			      int ld)
{
	size_t es = kn_cuda_dtype_size(dt);
	for (int r = 0; r < rows; r++)
		for (int c = w; c < ld; c++)
			for (size_t k = 0; k < es; k++)
				if (((const unsigned char *)h)[((size_t)r * ld + c) * es + k] != 0xFF)
					fail_msg("%s: padding column %d of row %d was written", what,
						 c, r);
}

static void test_gemm(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	struct {
		kn_cuda_dtype in, out;
		int N, K, pad;
		float beta;
	} cases[] = {
		{KN_CUDA_BF16, KN_CUDA_BF16, 1024, 4096, 0, 0.f},
		{KN_CUDA_BF16, KN_CUDA_F32, 4096, 1024, 8, 1.f}, /* into an f32 residual */
		{KN_CUDA_F16, KN_CUDA_F16, 172, 64, 3, 0.f},
		{KN_CUDA_BF16, KN_CUDA_BF16, 64, 172, 0, 0.f},
		{KN_CUDA_F32, KN_CUDA_F32, 512, 2049, 1, 0.f},
		{KN_CUDA_BF16, KN_CUDA_BF16, 32000, 64, 0, 0.f},
	};
	for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
		for (int ri = 0; ri < N_ROWS; ri++) {
			gt_reset();
			int M = rows_set[ri], N = cases[k].N, K = cases[k].K;
			int ldx = K + cases[k].pad, ldw = K + cases[k].pad, ldy = N + cases[k].pad;
			kn_cuda_dtype in = cases[k].in, out = cases[k].out;
			double *x, *w;
			void *xh = gt_rand_tensor(in, (size_t)M * ldx, 1.0, &x);
			void *wh = gt_rand_tensor(in, (size_t)N * ldw, 1.0 / sqrt((double)K), &w);
			double *y0 = NULL;
			void *y0h = gt_rand_tensor(out, (size_t)M * ldy, 1.0, &y0);
			size_t es = kn_cuda_dtype_size(in), os = kn_cuda_dtype_size(out);
			void *xd = gt_upload(xh, (size_t)M * ldx * es);
			void *wd = gt_upload(wh, (size_t)N * ldw * es);
			void *yd = gt_alloc((size_t)M * ldy * os);
			if (cases[k].beta != 0.f)
				GT_OK(kn_cuda_memcpy(yd, y0h, (size_t)M * ldy * os));
			else
				gt_poison(yd, (size_t)M * ldy * os);
			GT_OK(kn_cuda_gemm(gt.ctx, yd, out, ldy, xd, in, ldx, wd, in, ldw, M, N, K,
					   1.f, cases[k].beta, gt.stream));
			void *yh = malloc((size_t)M * ldy * os);
			assert_non_null(yh);
			gt_download(yh, yd, (size_t)M * ldy * os);
			double *got = gt_to_double(out, yh, (size_t)M * ldy);
			double *want = malloc((size_t)M * N * sizeof *want);
			double *g2 = malloc((size_t)M * N * sizeof *g2);
			assert_true(want && g2);
			for (int i = 0; i < M; i++)
				for (int j = 0; j < N; j++) {
					double acc = cases[k].beta != 0.f ? y0[(size_t)i * ldy + j] : 0;
					for (int q = 0; q < K; q++)
						acc += x[(size_t)i * ldx + q] * w[(size_t)j * ldw + q];
					want[(size_t)i * N + j] = acc;
					g2[(size_t)i * N + j] = got[(size_t)i * ldy + j];
				}
			double rtol, atol;
			op_tol(out, &rtol, &atol);
			if (out == KN_CUDA_F32) { /* fp32 accumulation over K terms */
				rtol = 1e-4;
				atol = 1e-4;
			}
			char what[128];
			snprintf(what, sizeof what, "gemm %s->%s M=%d N=%d K=%d beta=%g",
				 kn_cuda_dtype_name(in), kn_cuda_dtype_name(out), M, N, K,
				 (double)cases[k].beta);
			gt_expect_close(what, g2, want, (size_t)M * N, rtol, atol);
			if (cases[k].beta == 0.f)
				expect_pad_poison(what, yh, out, M, N, ldy);
			free(xh), free(wh), free(y0h), free(yh), free(x), free(w), free(y0);
			free(got), free(want), free(g2);
		}
	}
}

static void test_rmsnorm(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	const int dims[] = {64, 4096, 2049};
	for (int di = 0; di < 3; di++) {
		for (int xi = 0; xi < 3; xi++) {
			for (int yi = 0; yi < 3; yi++) {
				gt_reset();
				int T = rows_set[(di + xi + yi) % N_ROWS], d = dims[di];
				kn_cuda_dtype xdt = all_dt[xi], ydt = all_dt[yi], wdt = all_dt[(xi + 1) % 3];
				int ldx = d + 3, ldy = d + 5;
				double *x, *w;
				void *xh = gt_rand_tensor(xdt, (size_t)T * ldx, 2.0, &x);
				void *wh = gt_rand_tensor(wdt, (size_t)d, 1.5, &w);
				void *xd = gt_upload(xh, (size_t)T * ldx * kn_cuda_dtype_size(xdt));
				void *wd = gt_upload(wh, (size_t)d * kn_cuda_dtype_size(wdt));
				size_t yb = (size_t)T * ldy * kn_cuda_dtype_size(ydt);
				void *yd = gt_alloc(yb), *yh = malloc(yb);
				assert_non_null(yh);
				gt_poison(yd, yb);
				GT_OK(kn_cuda_rmsnorm(yd, ydt, ldy, xd, xdt, ldx, wd, wdt, T, d, 1e-5f,
						      gt.stream));
				gt_download(yh, yd, yb);
				double *got = gt_to_double(ydt, yh, (size_t)T * ldy);
				double *want = malloc((size_t)T * d * sizeof *want);
				double *g2 = malloc((size_t)T * d * sizeof *g2);
				assert_true(want && g2);
				for (int t = 0; t < T; t++) {
					double ss = 0;
					for (int i = 0; i < d; i++)
						ss += x[(size_t)t * ldx + i] * x[(size_t)t * ldx + i];
					double inv = 1.0 / sqrt(ss / d + 1e-5);
					for (int i = 0; i < d; i++) {
						want[(size_t)t * d + i] = x[(size_t)t * ldx + i] * inv * w[i];
						g2[(size_t)t * d + i] = got[(size_t)t * ldy + i];
					}
				}
				double rtol, atol;
				op_tol(ydt, &rtol, &atol);
				char what[96];
				snprintf(what, sizeof what, "rmsnorm %s*%s->%s T=%d d=%d",
					 kn_cuda_dtype_name(xdt), kn_cuda_dtype_name(wdt),
					 kn_cuda_dtype_name(ydt), T, d);
				gt_expect_close(what, g2, want, (size_t)T * d, rtol, atol);
				expect_pad_poison(what, yh, ydt, T, d, ldy);
				free(xh), free(wh), free(yh), free(x), free(w), free(got), free(want),
					free(g2);
			}
		}
	}
	/* the f32 entry point, in place */
	gt_reset();
	int T = 7, d = 96;
	double *x, *w;
	void *xh = gt_rand_tensor(KN_CUDA_F32, (size_t)T * d, 1.0, &x);
	void *wh = gt_rand_tensor(KN_CUDA_F32, (size_t)d, 1.0, &w);
	float *xd = gt_upload(xh, (size_t)T * d * 4), *wd = gt_upload(wh, (size_t)d * 4);
	GT_OK(kn_cuda_rmsnorm_f32(xd, xd, wd, T, d, 1e-6f, gt.stream));
	float *yh = malloc((size_t)T * d * 4);
	assert_non_null(yh);
	gt_download(yh, xd, (size_t)T * d * 4);
	double *got = gt_to_double(KN_CUDA_F32, yh, (size_t)T * d), *want = malloc(T * d * 8);
	assert_non_null(want);
	for (int t = 0; t < T; t++) {
		double ss = 0;
		for (int i = 0; i < d; i++)
			ss += x[t * d + i] * x[t * d + i];
		for (int i = 0; i < d; i++)
			want[t * d + i] = x[t * d + i] / sqrt(ss / d + 1e-6) * w[i];
	}
	gt_expect_close("rmsnorm_f32 in place", got, want, (size_t)T * d, 2e-5, 2e-5);
	free(xh), free(wh), free(x), free(w), free(yh), free(got), free(want);
}

static void test_rope(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	/* per_row: a table of frequencies per row (theta drawn per row, as a
	 * dynamic NTK schedule gives); factor divides them (linear scaling);
	 * mscale multiplies cos and sin (YaRN) */
	struct {
		kn_cuda_dtype dt;
		int nq, nk, hd;
		double theta, factor, mscale;
		int per_row;
	} cases[] = {
		{KN_CUDA_F32, 8, 4, 8, 10000., 1., 1., 0},   /* stories260k */
		{KN_CUDA_BF16, 32, 32, 128, 10000., 1., 1., 0},
		{KN_CUDA_F16, 4, 1, 64, 500000., 8., 1., 0},
		{KN_CUDA_F32, 3, 1, 256, 10000., 1., 1.25, 0},
		{KN_CUDA_F32, 4, 2, 16, 10000., 1., 1., 1},
		{KN_CUDA_BF16, 2, 1, 64, 1e6, 4., 0.9, 1},
	};
	for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
		for (int ri = 0; ri < N_ROWS; ri++) {
			gt_reset();
			int T = rows_set[ri], hd = cases[k].hd, nh = cases[k].nq + cases[k].nk;
			int ld = (cases[k].nq + 2 * cases[k].nk) * hd; /* fused q|k|v: v untouched */
			kn_cuda_dtype dt = cases[k].dt;
			size_t es = kn_cuda_dtype_size(dt);
			double *x;
			void *xh = gt_rand_tensor(dt, (size_t)T * ld, 1.0, &x);
			int32_t *pos = malloc((size_t)T * sizeof *pos);
			assert_non_null(pos);
			for (int t = 0; t < T; t++)
				pos[t] = t == 0 ? 0 : gt_int(8192);
			int half = hd / 2, inv_ld = cases[k].per_row ? half + 3 : 0;
			int nrow = cases[k].per_row ? T : 1;
			double *inv = malloc((size_t)nrow * (half + 3) * sizeof *inv);
			assert_non_null(inv);
			for (int t = 0; t < nrow; t++) {
				double th = cases[k].theta * (cases[k].per_row ? 1 + 3 * fabs(gt_rnd()) : 1);
				for (int i = 0; i < half; i++)
					inv[(size_t)t * (half + 3) + i] =
						pow(th, -2.0 * i / hd) / cases[k].factor;
			}
			void *xd = gt_upload(xh, (size_t)T * ld * es);
			int32_t *pd = gt_upload(pos, (size_t)T * sizeof *pos);
			double *invd = gt_upload(inv, (size_t)nrow * (half + 3) * sizeof *inv);
			GT_OK(kn_cuda_rope(xd, dt, ld, T, nh, hd, pd, invd, inv_ld, cases[k].mscale,
					   gt.stream));
			void *yh = malloc((size_t)T * ld * es);
			assert_non_null(yh);
			gt_download(yh, xd, (size_t)T * ld * es);
			double *got = gt_to_double(dt, yh, (size_t)T * ld);
			double *want = malloc((size_t)T * ld * sizeof *want);
			assert_non_null(want);
			memcpy(want, x, (size_t)T * ld * sizeof *want);
			for (int t = 0; t < T; t++)
				for (int h = 0; h < nh; h++)
					for (int i = 0; i < hd / 2; i++) {
						double a = pos[t] * inv[(size_t)(inv_ld ? t : 0) * (half + 3) + i];
						double c = (float)(cos(a) * cases[k].mscale);
						double s = (float)(sin(a) * cases[k].mscale);
						size_t o = (size_t)t * ld + (size_t)h * hd + i;
						want[o] = x[o] * c - x[o + hd / 2] * s;
						want[o + hd / 2] = x[o + hd / 2] * c + x[o] * s;
					}
			double rtol, atol;
			op_tol(dt, &rtol, &atol);
			char what[96];
			snprintf(what, sizeof what, "rope %s T=%d heads=%d hd=%d%s",
				 kn_cuda_dtype_name(dt), T, nh, hd, inv_ld ? " per-row" : "");
			gt_expect_close(what, got, want, (size_t)T * ld, rtol, atol);
			/* the v columns are bit-identical */
			for (int t = 0; t < T; t++)
				if (memcmp((char *)yh + ((size_t)t * ld + nh * hd) * es,
					   (char *)xh + ((size_t)t * ld + nh * hd) * es,
					   (size_t)cases[k].nk * hd * es) != 0)
					fail_msg("%s: v columns of row %d changed", what, t);
			free(xh), free(x), free(pos), free(yh), free(got), free(want), free(inv);
		}
	}
}

static void test_silu_mul(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	const int widths[] = {172, 11008, 1};
	for (int wi = 0; wi < 3; wi++) {
		for (int di = 0; di < 3; di++) {
			gt_reset();
			int T = rows_set[(wi + di) % N_ROWS], F = widths[wi];
			kn_cuda_dtype idt = all_dt[di], odt = all_dt[(di + 1) % 3];
			int ldi = 2 * F, ldo = F + 2; /* gate|up fused */
			double *g;
			void *gh = gt_rand_tensor(idt, (size_t)T * ldi, 6.0, &g);
			void *gd = gt_upload(gh, (size_t)T * ldi * kn_cuda_dtype_size(idt));
			size_t ob = (size_t)T * ldo * kn_cuda_dtype_size(odt);
			void *od = gt_alloc(ob), *oh = malloc(ob);
			assert_non_null(oh);
			gt_poison(od, ob);
			GT_OK(kn_cuda_silu_mul(od, odt, ldo, gd,
					       (char *)gd + (size_t)F * kn_cuda_dtype_size(idt), idt,
					       ldi, T, F, gt.stream));
			gt_download(oh, od, ob);
			double *got = gt_to_double(odt, oh, (size_t)T * ldo);
			double *want = malloc((size_t)T * F * 8), *g2 = malloc((size_t)T * F * 8);
			assert_true(want && g2);
			for (int t = 0; t < T; t++)
				for (int i = 0; i < F; i++) {
					double a = g[(size_t)t * ldi + i], u = g[(size_t)t * ldi + F + i];
					want[(size_t)t * F + i] = a / (1 + exp(-a)) * u;
					g2[(size_t)t * F + i] = got[(size_t)t * ldo + i];
				}
			double rtol, atol;
			op_tol(odt, &rtol, &atol);
			char what[96];
			snprintf(what, sizeof what, "silu_mul %s->%s T=%d F=%d", kn_cuda_dtype_name(idt),
				 kn_cuda_dtype_name(odt), T, F);
			gt_expect_close(what, g2, want, (size_t)T * F, rtol, atol);
			expect_pad_poison(what, oh, odt, T, F, ldo);
			free(gh), free(g), free(oh), free(got), free(want), free(g2);
		}
	}
}

static void test_embed(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	for (int di = 0; di < 3; di++) {
		gt_reset();
		int V = 512, d = 64 + di * 100, n = 133, ldo = d + 1;
		kn_cuda_dtype tdt = all_dt[di], odt = all_dt[(di + 2) % 3];
		double *tab;
		void *th = gt_rand_tensor(tdt, (size_t)V * d, 1.0, &tab);
		int32_t ids[133];
		for (int i = 0; i < n; i++)
			ids[i] = i % 17 == 5 ? (i % 2 ? -1 : V + i) : gt_int(V);
		void *td = gt_upload(th, (size_t)V * d * kn_cuda_dtype_size(tdt));
		int32_t *idd = gt_upload(ids, sizeof ids);
		size_t ob = (size_t)n * ldo * kn_cuda_dtype_size(odt);
		void *od = gt_alloc(ob), *oh = malloc(ob);
		assert_non_null(oh);
		gt_poison(od, ob);
		GT_OK(kn_cuda_embed(od, odt, ldo, td, tdt, V, idd, n, d, gt.stream));
		gt_download(oh, od, ob);
		double *got = gt_to_double(odt, oh, (size_t)n * ldo);
		for (int i = 0; i < n; i++)
			for (int j = 0; j < d; j++) {
				double want = ids[i] >= 0 && ids[i] < V
						      ? gt_round(odt, tab[(size_t)ids[i] * d + j])
						      : 0.0;
				if (got[(size_t)i * ldo + j] != want)
					fail_msg("embed %s->%s: row %d (id %d) column %d got %g want %g",
						 kn_cuda_dtype_name(tdt), kn_cuda_dtype_name(odt), i,
						 ids[i], j, got[(size_t)i * ldo + j], want);
			}
		expect_pad_poison("embed", oh, odt, n, d, ldo);
		free(th), free(tab), free(oh), free(got);
	}
}

static void test_add_cast(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	size_t n = 100003;
	for (int si = 0; si < 3; si++) {
		for (int di = 0; di < 3; di++) {
			gt_reset();
			kn_cuda_dtype sdt = all_dt[si], ddt = all_dt[di];
			double *s, *y;
			void *sh = gt_rand_tensor(sdt, n, 100.0, &s);
			void *yh0 = gt_rand_tensor(ddt, n, 100.0, &y);
			size_t ss = kn_cuda_dtype_size(sdt), ds = kn_cuda_dtype_size(ddt);
			void *sd = gt_upload(sh, n * ss);
			void *cd = gt_alloc(n * ds), *yd = gt_upload(yh0, n * ds);
			gt_poison(cd, n * ds);
			GT_OK(kn_cuda_cast(cd, ddt, sd, sdt, n, gt.stream));
			GT_OK(kn_cuda_add(yd, ddt, sd, sdt, n, gt.stream));
			void *ch = malloc(n * ds), *yh = malloc(n * ds);
			assert_true(ch && yh);
			gt_download(ch, cd, n * ds);
			gt_download(yh, yd, n * ds);
			double *cg = gt_to_double(ddt, ch, n), *yg = gt_to_double(ddt, yh, n);
			for (size_t i = 0; i < n; i++) {
				/* the sum is formed in f32 and rounded once */
				double want_c = gt_round(ddt, s[i]);
				double want_y = gt_round(ddt, (double)(float)(y[i] + s[i]));
				if (cg[i] != want_c)
					fail_msg("cast %s->%s: element %zu got %.9g want %.9g",
						 kn_cuda_dtype_name(sdt), kn_cuda_dtype_name(ddt), i,
						 cg[i], want_c);
				if (yg[i] != want_y)
					fail_msg("add %s+=%s: element %zu got %.9g want %.9g",
						 kn_cuda_dtype_name(ddt), kn_cuda_dtype_name(sdt), i,
						 yg[i], want_y);
			}
			free(sh), free(yh0), free(s), free(y), free(ch), free(yh), free(cg), free(yg);
		}
	}
}

/* q and k heads of a fused q|k|v row normed in place (Qwen3): the v columns
 * and the padding stay bit-identical. */
static void test_head_rmsnorm(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	struct {
		kn_cuda_dtype dt, wdt;
		int nh, hd, other;
	} cases[] = {
		{KN_CUDA_BF16, KN_CUDA_F32, 4, 8, 16},   /* hd < one warp */
		{KN_CUDA_F32, KN_CUDA_F32, 5, 64, 64},   /* a partial CTA of heads */
		{KN_CUDA_F16, KN_CUDA_BF16, 2, 128, 0},
		{KN_CUDA_BF16, KN_CUDA_F32, 9, 256, 3},
	};
	for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
		for (int ri = 0; ri < N_ROWS; ri++) {
			gt_reset();
			int T = rows_set[ri], nh = cases[k].nh, hd = cases[k].hd;
			int ld = nh * hd + cases[k].other;
			kn_cuda_dtype dt = cases[k].dt, wdt = cases[k].wdt;
			size_t es = kn_cuda_dtype_size(dt);
			double *x, *w;
			void *xh = gt_rand_tensor(dt, (size_t)T * ld, 3.0, &x);
			void *wh = gt_rand_tensor(wdt, (size_t)hd, 1.5, &w);
			void *xd = gt_upload(xh, (size_t)T * ld * es);
			void *wd = gt_upload(wh, (size_t)hd * kn_cuda_dtype_size(wdt));
			GT_OK(kn_cuda_head_rmsnorm(xd, dt, ld, T, nh, hd, wd, wdt, 1e-6f, gt.stream));
			void *yh = malloc((size_t)T * ld * es);
			assert_non_null(yh);
			gt_download(yh, xd, (size_t)T * ld * es);
			double *got = gt_to_double(dt, yh, (size_t)T * ld);
			double *want = malloc((size_t)T * ld * sizeof *want);
			assert_non_null(want);
			memcpy(want, x, (size_t)T * ld * sizeof *want);
			for (int t = 0; t < T; t++)
				for (int h = 0; h < nh; h++) {
					double *xr = want + (size_t)t * ld + (size_t)h * hd, ss = 0;
					for (int i = 0; i < hd; i++)
						ss += xr[i] * xr[i];
					double inv = 1.0 / sqrt(ss / hd + 1e-6);
					for (int i = 0; i < hd; i++)
						xr[i] = xr[i] * inv * w[i];
				}
			double rtol, atol;
			op_tol(dt, &rtol, &atol);
			char what[96];
			snprintf(what, sizeof what, "head rmsnorm %s*%s T=%d heads=%d hd=%d",
				 kn_cuda_dtype_name(dt), kn_cuda_dtype_name(wdt), T, nh, hd);
			gt_expect_close(what, got, want, (size_t)T * ld, rtol, atol);
			for (int t = 0; t < T; t++)
				if (memcmp((char *)yh + ((size_t)t * ld + nh * hd) * es,
					   (char *)xh + ((size_t)t * ld + nh * hd) * es,
					   (size_t)cases[k].other * es) != 0)
					fail_msg("%s: columns past the heads of row %d changed", what, t);
			free(xh), free(wh), free(x), free(w), free(yh), free(got), free(want);
		}
	}
}

static double gelu_ref(double g, int tanh_approx)
{
	if (tanh_approx)
		return 0.5 * g * (1 + tanh(sqrt(2 / M_PI) * (g + 0.044715 * g * g * g)));
	return 0.5 * g * (1 + erf(g / sqrt(2.0)));
}

static void test_gelu_mul(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	const int widths[] = {172, 4099, 1};
	for (int ta = 0; ta < 2; ta++) {
		for (int wi = 0; wi < 3; wi++) {
			gt_reset();
			int di = (wi + ta) % 3;
			int T = rows_set[(wi + 2 * ta) % N_ROWS], F = widths[wi];
			kn_cuda_dtype idt = all_dt[di], odt = all_dt[(di + 1) % 3];
			int ldi = 2 * F, ldo = F + 2; /* gate|up fused */
			double *g;
			void *gh = gt_rand_tensor(idt, (size_t)T * ldi, 6.0, &g);
			void *gd = gt_upload(gh, (size_t)T * ldi * kn_cuda_dtype_size(idt));
			size_t ob = (size_t)T * ldo * kn_cuda_dtype_size(odt);
			void *od = gt_alloc(ob), *oh = malloc(ob);
			assert_non_null(oh);
			gt_poison(od, ob);
			GT_OK(kn_cuda_gelu_mul(od, odt, ldo, gd,
					       (char *)gd + (size_t)F * kn_cuda_dtype_size(idt), idt,
					       ldi, T, F, ta, gt.stream));
			gt_download(oh, od, ob);
			double *got = gt_to_double(odt, oh, (size_t)T * ldo);
			double *want = malloc((size_t)T * F * 8), *g2 = malloc((size_t)T * F * 8);
			assert_true(want && g2);
			for (int t = 0; t < T; t++)
				for (int i = 0; i < F; i++) {
					double a = g[(size_t)t * ldi + i], u = g[(size_t)t * ldi + F + i];
					want[(size_t)t * F + i] = gelu_ref(a, ta) * u;
					g2[(size_t)t * F + i] = got[(size_t)t * ldo + i];
				}
			double rtol, atol;
			op_tol(odt, &rtol, &atol);
			char what[96];
			snprintf(what, sizeof what, "gelu_mul (%s) %s->%s T=%d F=%d",
				 ta ? "tanh" : "erf", kn_cuda_dtype_name(idt), kn_cuda_dtype_name(odt),
				 T, F);
			gt_expect_close(what, g2, want, (size_t)T * F, rtol, atol);
			expect_pad_poison(what, oh, odt, T, F, ldo);
			free(gh), free(g), free(oh), free(got), free(want), free(g2);
		}
	}
	/* the two approximations differ (a kernel ignoring the flag fails above) */
	assert_true(fabs(gelu_ref(-2.5, 1) - gelu_ref(-2.5, 0)) > 4e-4);
}

/* y[t, :n] += b over strided rows; columns past n untouched. */
static void test_add_bias(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	const int widths[] = {96, 5000, 3};
	for (int wi = 0; wi < 3; wi++) {
		for (int di = 0; di < 3; di++) {
			gt_reset();
			int T = rows_set[(wi + di) % N_ROWS], n = widths[wi], ld = n + 7;
			kn_cuda_dtype ydt = all_dt[di], bdt = all_dt[(di + wi) % 3];
			size_t ys = kn_cuda_dtype_size(ydt);
			double *y, *bv;
			void *yh0 = gt_rand_tensor(ydt, (size_t)T * ld, 2.0, &y);
			void *bh = gt_rand_tensor(bdt, (size_t)n, 1.0, &bv);
			void *yd = gt_upload(yh0, (size_t)T * ld * ys);
			void *bd = gt_upload(bh, (size_t)n * kn_cuda_dtype_size(bdt));
			GT_OK(kn_cuda_add_bias(yd, ydt, ld, bd, bdt, T, n, gt.stream));
			void *yh = malloc((size_t)T * ld * ys);
			assert_non_null(yh);
			gt_download(yh, yd, (size_t)T * ld * ys);
			double *got = gt_to_double(ydt, yh, (size_t)T * ld);
			double *want = malloc((size_t)T * ld * sizeof *want);
			assert_non_null(want);
			for (int t = 0; t < T; t++)
				for (int i = 0; i < ld; i++)
					want[(size_t)t * ld + i] =
						y[(size_t)t * ld + i] + (i < n ? bv[i] : 0.0);
			double rtol, atol;
			op_tol(ydt, &rtol, &atol);
			char what[96];
			snprintf(what, sizeof what, "add_bias %s+=%s T=%d n=%d", kn_cuda_dtype_name(ydt),
				 kn_cuda_dtype_name(bdt), T, n);
			gt_expect_close(what, got, want, (size_t)T * ld, rtol, atol);
			for (int t = 0; t < T; t++)
				if (memcmp((char *)yh + ((size_t)t * ld + n) * ys,
					   (char *)yh0 + ((size_t)t * ld + n) * ys, 7 * ys) != 0)
					fail_msg("%s: padding of row %d changed", what, t);
			free(yh0), free(bh), free(y), free(bv), free(yh), free(got), free(want);
		}
	}
}

/* x *= s (the embedding scale) and x = cap * tanh(x / cap) (logit soft-cap). */
static void test_scale_softcap(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	const size_t sizes[] = {1, 1000, 70001};
	for (int si = 0; si < 3; si++) {
		for (int di = 0; di < 3; di++) {
			for (int cap = 0; cap < 2; cap++) {
				gt_reset();
				size_t n = sizes[si];
				kn_cuda_dtype dt = all_dt[di];
				size_t es = kn_cuda_dtype_size(dt);
				double *x;
				void *xh = gt_rand_tensor(dt, n, 40.0, &x);
				void *xd = gt_upload(xh, n * es);
				float s = cap ? 30.f : 8.f;
				if (cap)
					GT_OK(kn_cuda_softcap(xd, dt, n, s, gt.stream));
				else
					GT_OK(kn_cuda_scale(xd, dt, n, s, gt.stream));
				void *yh = malloc(n * es);
				assert_non_null(yh);
				gt_download(yh, xd, n * es);
				double *got = gt_to_double(dt, yh, n);
				double *want = malloc(n * sizeof *want);
				assert_non_null(want);
				for (size_t i = 0; i < n; i++)
					want[i] = cap ? s * tanh(x[i] / s) : x[i] * s;
				double rtol, atol;
				op_tol(dt, &rtol, &atol);
				char what[96];
				snprintf(what, sizeof what, "%s %s n=%zu", cap ? "softcap" : "scale",
					 kn_cuda_dtype_name(dt), n);
				gt_expect_close(what, got, want, n, rtol, atol);
				free(xh), free(x), free(yh), free(got), free(want);
			}
		}
	}
}

/* Argument checks happen before anything touches the device. */
static void test_ops_bad_arguments(void **state)
{
	(void)state;
	char b[16] = {0};
	int32_t pos[1] = {0};
	assert_int_equal(kn_cuda_rmsnorm(b, KN_CUDA_BF16, 4, b, KN_CUDA_BF16, 8, b, KN_CUDA_BF16, 1,
					 8, 1e-5f, NULL), LOOM_EINVAL); /* ldy < d */
	assert_int_equal(kn_cuda_rmsnorm(b, (kn_cuda_dtype)7, 8, b, KN_CUDA_BF16, 8, b,
					 KN_CUDA_BF16, 1, 8, 1e-5f, NULL), LOOM_EUNSUPPORTED);
	const double *inv = (const double *)b;
	assert_int_equal(kn_cuda_rope(b, KN_CUDA_BF16, 64, 1, 8, 7, pos, inv, 0, 1., NULL),
			 LOOM_EINVAL);
	assert_int_equal(kn_cuda_rope(b, KN_CUDA_BF16, 63, 1, 8, 8, pos, inv, 0, 1., NULL),
			 LOOM_EINVAL);
	assert_int_equal(kn_cuda_rope(b, KN_CUDA_BF16, 64, 1, 8, 8, pos, inv, 3, 1., NULL),
			 LOOM_EINVAL); /* inv_ld < head_dim / 2 */
	assert_int_equal(kn_cuda_rope(b, KN_CUDA_BF16, 64, 1, 8, 8, pos, NULL, 0, 1., NULL),
			 LOOM_EINVAL);
	assert_int_equal(kn_cuda_head_rmsnorm(b, KN_CUDA_BF16, 63, 1, 8, 8, b, KN_CUDA_F32, 1e-6f,
					      NULL), LOOM_EINVAL); /* ldx < heads * head_dim */
	assert_int_equal(kn_cuda_gelu_mul(b, KN_CUDA_BF16, 4, b, b, KN_CUDA_BF16, 8, 1, 8, 1, NULL),
			 LOOM_EINVAL);
	assert_int_equal(kn_cuda_add_bias(b, KN_CUDA_BF16, 4, b, KN_CUDA_F32, 1, 8, NULL),
			 LOOM_EINVAL); /* ldy < n */
	assert_int_equal(kn_cuda_softcap(b, KN_CUDA_F32, 4, 0.f, NULL), LOOM_EINVAL);
	assert_int_equal(kn_cuda_scale(b, KN_CUDA_DTYPE_COUNT, 4, 2.f, NULL), LOOM_EUNSUPPORTED);
	assert_int_equal(kn_cuda_silu_mul(b, KN_CUDA_BF16, 4, b, b, KN_CUDA_BF16, 8, 1, 8, NULL),
			 LOOM_EINVAL);
	assert_int_equal(kn_cuda_embed(b, KN_CUDA_BF16, 8, b, KN_CUDA_BF16, 0, pos, 1, 8, NULL),
			 LOOM_EINVAL);
	assert_int_equal(kn_cuda_cast(b, KN_CUDA_DTYPE_COUNT, b, KN_CUDA_F32, 4, NULL),
			 LOOM_EUNSUPPORTED);
	assert_int_equal(kn_cuda_add(b, KN_CUDA_F32, b, KN_CUDA_F32, 0, NULL), LOOM_OK);
	assert_int_equal(kn_cuda_gemm(NULL, b, KN_CUDA_BF16, 8, b, KN_CUDA_BF16, 8, b, KN_CUDA_BF16,
				      8, 1, 8, 8, 1.f, 0.f, NULL), LOOM_EINVAL);
	assert_int_equal(kn_cuda_dtype_size(KN_CUDA_BF16), 2);
	assert_int_equal(kn_cuda_dtype_size(KN_CUDA_DTYPE_COUNT), 0);
	assert_string_equal(kn_cuda_dtype_name(KN_CUDA_F16), "f16");
	if (gt.present) {
		assert_int_equal(kn_cuda_gemm(gt.ctx, b, KN_CUDA_F16, 8, b, KN_CUDA_BF16, 8, b,
					      KN_CUDA_BF16, 8, 1, 8, 8, 1.f, 0.f, NULL),
				 LOOM_EUNSUPPORTED);
		assert_int_equal(kn_cuda_gemm(gt.ctx, b, KN_CUDA_BF16, 8, b, KN_CUDA_BF16, 4, b,
					      KN_CUDA_BF16, 8, 1, 8, 8, 1.f, 0.f, NULL),
				 LOOM_EINVAL);
	}
}

#else
GT_CASES(GT_STUB)
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {GT_CASES(GT_ENTRY)};
	return GT_RUN("gpu/ops", tests);
}
