/*
 * tests/kernels/test_cpu_ops.c — the CPU kn_ ops against naive float64 loops.
 *
 * Every case draws fresh random inputs, poisons the output with NaN, runs
 * the kernel and compares with a reference written here from the formula
 * (no kn_ calls). Shapes are awkward on purpose (odd sizes, M = 1 for the
 * GEMV path, GQA ratios 1, 2 and 4).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/dtype.h"
#include "kernels/kernels.h"

static uint64_t rng_state = 0x1234567;

static double rnd(void) /* uniform in [-1, 1) */
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(rng_state >> 11) / 4503599627370496.0 - 1.0;
}

static float *rand_vec(size_t n, double scale)
{
	float *v = malloc(n * sizeof *v);
	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		v[i] = (float)(rnd() * scale);
	return v;
}

static float *poisoned(size_t n)
{
	float *v = malloc(n * sizeof *v);
	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		v[i] = NAN;
	return v;
}

/* Max |got - want| / (atol + rtol*|want|) must stay <= 1. */
static void expect_close(const char *what, const float *got, const double *want, size_t n,
			 double rtol, double atol)
{
	double worst = 0.0, maxabs = 0.0;
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		double e = fabs((double)got[i] - want[i]);
		double r = e / (atol + rtol * fabs(want[i]));
		if (!(r <= worst)) { /* NaN lands here too */
			worst = isnan(r) ? INFINITY : r;
			at = i;
		}
		if (e > maxabs)
			maxabs = e;
	}
	if (worst > 1.0) {
		print_error("%s: element %zu got %.9g want %.9g (max abs diff %.3g)\n", what, at,
			    got[at], want[at], maxabs);
		fail();
	}
}

static void gemm_case(int M, int N, int K, int accumulate)
{
	float *x = rand_vec((size_t)M * K, 1.0), *w = rand_vec((size_t)N * K, 0.5);
	float *y = accumulate ? rand_vec((size_t)M * N, 1.0) : poisoned((size_t)M * N);
	double *ref = malloc(sizeof(double) * M * N);
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++) {
			double acc = accumulate ? y[(size_t)i * N + j] : 0.0;
			for (int k = 0; k < K; k++)
				acc += (double)x[(size_t)i * K + k] * w[(size_t)j * K + k];
			ref[(size_t)i * N + j] = acc;
		}
	kn_gemm(y, x, w, M, N, K, accumulate);
	char what[64];
	snprintf(what, sizeof what, "gemm M=%d N=%d K=%d acc=%d", M, N, K, accumulate);
	expect_close(what, y, ref, (size_t)M * N, 1e-5, 1e-5 * sqrt(K));
	free(x), free(w), free(y), free(ref);
}

static void test_gemm_m1(void **st)
{
	(void)st;
	gemm_case(1, 37, 64, 0);
	gemm_case(1, 512, 172, 0);
	gemm_case(1, 33, 17, 1);
}

static void test_gemm_batched(void **st)
{
	(void)st;
	gemm_case(2, 64, 64, 0);
	gemm_case(7, 172, 64, 0);
	gemm_case(133, 31, 45, 0);
	gemm_case(5, 64, 172, 1);
}

static void test_rmsnorm(void **st)
{
	(void)st;
	int rows = 5, d = 67;
	float eps = 1e-5f;
	float *x = rand_vec((size_t)rows * d, 3.0), *w = rand_vec(d, 1.0);
	float *y = poisoned((size_t)rows * d);
	double *ref = malloc(sizeof(double) * rows * d);
	for (int r = 0; r < rows; r++) {
		double ss = 0;
		for (int i = 0; i < d; i++)
			ss += (double)x[r * d + i] * x[r * d + i];
		double inv = 1.0 / sqrt(ss / d + eps);
		for (int i = 0; i < d; i++)
			ref[r * d + i] = x[r * d + i] * inv * w[i];
	}
	kn_rmsnorm(y, x, w, rows, d, eps);
	expect_close("rmsnorm", y, ref, (size_t)rows * d, 1e-6, 1e-6);
	kn_rmsnorm(x, x, w, rows, d, eps); /* in place */
	expect_close("rmsnorm in place", x, ref, (size_t)rows * d, 1e-6, 1e-6);
	free(x), free(w), free(y), free(ref);
}

static void test_rope(void **st)
{
	(void)st;
	int rows = 4, heads = 3, hd = 16, half = hd / 2;
	float theta = 10000.0f;
	int32_t pos[] = {0, 1, 17, 511};
	float *x = rand_vec((size_t)rows * heads * hd, 1.0);
	float *c = poisoned((size_t)rows * half), *s = poisoned((size_t)rows * half);
	double *ref = malloc(sizeof(double) * rows * heads * hd);
	for (int r = 0; r < rows; r++)
		for (int h = 0; h < heads; h++)
			for (int i = 0; i < hd; i++) {
				/* HF: x*cos + rotate_half(x)*sin, cos/sin repeated over both halves */
				int f = i % half;
				double a = pos[r] / pow(theta, 2.0 * f / hd);
				const float *xh = x + (r * heads + h) * hd;
				double rot = i < half ? -xh[i + half] : xh[i - half];
				ref[(r * heads + h) * hd + i] = xh[i] * cos(a) + rot * sin(a);
			}
	double inv_freq[8];
	for (int i = 0; i < half; i++)
		inv_freq[i] = pow(theta, -2.0 * i / hd);
	kn_rope_table(c, s, pos, rows, half, inv_freq, 1.0);
	kn_rope_apply(x, rows, heads, hd, c, s);
	expect_close("rope", x, ref, (size_t)rows * heads * hd, 1e-6, 1e-6);
	free(x), free(c), free(s), free(ref);
}

static void test_silu_mul(void **st)
{
	(void)st;
	size_t n = 1001;
	float *g = rand_vec(n, 8.0), *u = rand_vec(n, 2.0);
	double *ref = malloc(sizeof(double) * n);
	for (size_t i = 0; i < n; i++)
		ref[i] = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
	kn_silu_mul(g, u, n);
	expect_close("silu_mul", g, ref, n, 1e-6, 1e-7);
	free(g), free(u), free(ref);
}

static void test_embed_add(void **st)
{
	(void)st;
	int vocab = 11, d = 9;
	int32_t ids[] = {3, 0, 10, 3};
	float *table = rand_vec((size_t)vocab * d, 1.0), *out = poisoned(4 * (size_t)d);
	kn_embed(out, table, ids, 4, d);
	for (int i = 0; i < 4; i++)
		assert_memory_equal(out + i * d, table + ids[i] * d, sizeof(float) * d);
	float *y = rand_vec(5, 1.0), *x = rand_vec(5, 1.0);
	double ref[5];
	for (int i = 0; i < 5; i++)
		ref[i] = (double)y[i] + x[i];
	kn_add(y, x, 5);
	expect_close("add", y, ref, 5, 1e-7, 0);
	free(table), free(out), free(y), free(x);
}

/* window > 0: keys p-window+1..p only; softcap > 0: cap*tanh(s/cap) on the
 * scaled scores (Gemma 2). */
static void test_gelu_bias_softcap(void **st)
{
	(void)st;
	size_t n = 1001;
	float *g = rand_vec(n, 8.0), *u = rand_vec(n, 2.0), *g2 = malloc(sizeof(float) * n);
	double *ref = malloc(sizeof(double) * n);
	memcpy(g2, g, sizeof(float) * n);
	for (size_t i = 0; i < n; i++) {
		double x = g[i];
		ref[i] = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))) * u[i];
	}
	kn_gelu_mul(g, u, n, 1);
	expect_close("gelu_tanh_mul", g, ref, n, 1e-5, 1e-6);
	for (size_t i = 0; i < n; i++) {
		double x = g2[i];
		ref[i] = 0.5 * x * (1 + erf(x / sqrt(2.0))) * u[i];
	}
	kn_gelu_mul(g2, u, n, 0);
	expect_close("gelu_mul", g2, ref, n, 1e-5, 1e-6);
	/* bias over 3 rows of 7, soft-cap, scale */
	float *y = rand_vec(21, 1.0), *b = rand_vec(7, 1.0), *z = rand_vec(21, 90.0);
	for (int i = 0; i < 21; i++)
		ref[i] = (double)y[i] + b[i % 7];
	kn_add_bias(y, b, 3, 7);
	expect_close("add_bias", y, ref, 21, 1e-7, 0);
	for (int i = 0; i < 21; i++)
		ref[i] = 30.0 * tanh((double)z[i] / 30.0);
	kn_softcap(z, 21, 30.0f);
	expect_close("softcap", z, ref, 21, 1e-6, 1e-6);
	for (int i = 0; i < 21; i++)
		ref[i] = (double)z[i] * 2.5;
	kn_scale(z, 21, 2.5f);
	expect_close("scale", z, ref, 21, 1e-7, 0);
	free(g), free(g2), free(u), free(ref), free(y), free(b), free(z);
}

static void attn_case_opt(int n_heads, int n_kv, int hd, int pos0, int n_q, int window,
			  double softcap)
{
	int ctx = pos0 + n_q, qdim = n_heads * hd, kvdim = n_kv * hd;
	float *q = rand_vec((size_t)n_q * qdim, 2.0);
	float *k = rand_vec((size_t)ctx * kvdim, 2.0), *v = rand_vec((size_t)ctx * kvdim, 1.0);
	float *out = poisoned((size_t)n_q * qdim);
	double *ref = calloc((size_t)n_q * qdim, sizeof(double));
	double *sc = malloc(sizeof(double) * ctx);
	double scale = 1.0 / sqrt(hd);
	for (int t = 0; t < n_q; t++)
		for (int h = 0; h < n_heads; h++) {
			int g = h / (n_heads / n_kv), p = pos0 + t;
			double mx = -INFINITY, sum = 0;
			int lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
			for (int j = lo; j <= p; j++) {
				double dot = 0;
				for (int i = 0; i < hd; i++)
					dot += (double)q[t * qdim + h * hd + i] * k[j * kvdim + g * hd + i];
				sc[j] = dot * scale;
				if (softcap > 0)
					sc[j] = softcap * tanh(sc[j] / softcap);
				mx = fmax(mx, sc[j]);
			}
			for (int j = lo; j <= p; j++)
				sum += (sc[j] = exp(sc[j] - mx));
			for (int j = lo; j <= p; j++)
				for (int i = 0; i < hd; i++)
					ref[t * qdim + h * hd + i] += sc[j] / sum * v[j * kvdim + g * hd + i];
		}
	kn_attention(out, q, n_q, pos0, k, v, n_heads, n_kv, hd, (float)scale, window,
		     (float)softcap);
	char what[120];
	snprintf(what, sizeof what, "attention heads=%d kv=%d hd=%d pos0=%d n_q=%d window=%d cap=%g",
		 n_heads, n_kv, hd, pos0, n_q, window, softcap);
	expect_close(what, out, ref, (size_t)n_q * qdim, 1e-5, 1e-6);
	free(q), free(k), free(v), free(out), free(ref), free(sc);
}

static void attn_case(int n_heads, int n_kv, int hd, int pos0, int n_q)
{
	attn_case_opt(n_heads, n_kv, hd, pos0, n_q, 0, 0);
}

static void test_attention_window_softcap(void **st)
{
	(void)st;
	attn_case_opt(8, 2, 16, 0, 12, 5, 0);   /* prefill crossing a window of 5 */
	attn_case_opt(8, 2, 16, 20, 1, 7, 0);   /* decode far past the window */
	attn_case_opt(4, 4, 8, 3, 6, 4, 0.5);   /* window and a cap the scores reach */
	attn_case_opt(6, 1, 10, 9, 3, 0, 0.3);  /* soft-cap alone */
	attn_case_opt(4, 2, 8, 0, 3, 16, 0);    /* window longer than the sequence */
}

static void test_attention_gqa(void **st)
{
	(void)st;
	attn_case(8, 2, 16, 0, 1);   /* first token: attends to itself only */
	attn_case(8, 2, 16, 5, 4);   /* chunk after a prefix, GQA 4 */
	attn_case(8, 4, 8, 0, 9);    /* prefill, GQA 2 */
	attn_case(4, 4, 32, 40, 1);  /* decode, MHA */
	attn_case(6, 1, 10, 3, 3);   /* MQA, odd head_dim/2 */
}

/* The paged forms give the contiguous form's bits for the same cache
 * (blocks of 3, 16 and 40 positions in a shuffled order), whole or split
 * by heads at any boundary; a chunk of queries gives each query the bits
 * it gets alone (online softmax tiles are fixed by absolute position). */
static void test_attention_paged_bits(void **st)
{
	(void)st;
	const int H = 8, KV = 2, hd = 24, pos0 = 37, n_q = 5, ctx = pos0 + n_q;
	const int qdim = H * hd, kvdim = KV * hd;
	float *q = rand_vec((size_t)n_q * qdim, 2.0), *k = rand_vec((size_t)ctx * kvdim, 2.0);
	float *v = rand_vec((size_t)ctx * kvdim, 1.0), *ref = poisoned((size_t)n_q * qdim);
	kn_attention(ref, q, n_q, pos0, k, v, H, KV, hd, 0.2f, 0, 0);
	static const int sizes[] = {3, 16, 40};
	for (int si = 0; si < 3; si++) {
		int bs = sizes[si], nb = (ctx + bs - 1) / bs, nblk = nb + 3;
		size_t stride = (size_t)bs * kvdim;
		float *pk = poisoned((size_t)nblk * stride), *pv = poisoned((size_t)nblk * stride);
		int32_t blocks[64];
		for (int b = 0; b < nb; b++)
			blocks[b] = (int32_t)((b * 7 + 2) % nblk); /* a permutation for nb < nblk */
		for (int p = 0; p < ctx; p++) {
			memcpy(pk + (size_t)blocks[p / bs] * stride + (size_t)(p % bs) * kvdim,
			       k + (size_t)p * kvdim, sizeof(float) * kvdim);
			memcpy(pv + (size_t)blocks[p / bs] * stride + (size_t)(p % bs) * kvdim,
			       v + (size_t)p * kvdim, sizeof(float) * kvdim);
		}
		float *out = poisoned((size_t)n_q * qdim);
		kn_attention_paged(out, q, n_q, pos0, pk, pv, blocks, bs, stride, H, KV, hd, 0.2f, 0,
				   0);
		assert_memory_equal(out, ref, sizeof(float) * n_q * qdim);
		float *parts = poisoned((size_t)n_q * qdim);
		kn_attention_paged_heads(parts, q, n_q, pos0, pk, pv, blocks, bs, stride, H, KV, hd,
					 0.2f, 0, 0, 0, 3);
		kn_attention_paged_heads(parts, q, n_q, pos0, pk, pv, blocks, bs, stride, H, KV, hd,
					 0.2f, 0, 0, 3, H);
		assert_memory_equal(parts, ref, sizeof(float) * n_q * qdim);
		for (int t = 0; t < n_q; t++) {
			float *one = poisoned(qdim);
			kn_attention_paged(one, q + (size_t)t * qdim, 1, pos0 + t, pk, pv, blocks, bs,
					   stride, H, KV, hd, 0.2f, 0, 0);
			assert_memory_equal(one, ref + (size_t)t * qdim, sizeof(float) * qdim);
			free(one);
		}
		free(pk), free(pv), free(out), free(parts);
	}
	free(q), free(k), free(v), free(ref);
}

/* BF16 K/V (kn_attention_paged_heads_bf16, a --kv-dtype bf16 pool): the
 * bits of the float32 kernel over K/V holding the rounded values, with
 * GQA, a window and a soft-cap, block sizes 3 and 16, head ranges, a
 * head_dim with a tail (not a multiple of 8); and a NaN-free answer whose
 * distance to the unrounded float32 one is what BF16 rounding allows. */
static void test_attention_bf16_bits(void **st)
{
	(void)st;
	const int H = 6, KV = 3, hd = 20, pos0 = 41, n_q = 3, ctx = pos0 + n_q;
	const int qdim = H * hd, kvdim = KV * hd;
	float *q = rand_vec((size_t)n_q * qdim, 2.0), *k = rand_vec((size_t)ctx * kvdim, 2.0);
	float *v = rand_vec((size_t)ctx * kvdim, 1.0);
	static const int sizes[] = {3, 16};
	static const int windows[] = {0, 9};
	static const float caps[] = {0.0f, 5.0f};
	for (int si = 0; si < 2; si++)
		for (int wi = 0; wi < 2; wi++) {
			int bs = sizes[si], nb = (ctx + bs - 1) / bs, nblk = nb + 2;
			size_t stride = (size_t)bs * kvdim;
			float *pk = poisoned((size_t)nblk * stride), *pv = poisoned((size_t)nblk * stride);
			float *fk = poisoned((size_t)nblk * stride), *fv = poisoned((size_t)nblk * stride);
			uint16_t *hk = malloc((size_t)nblk * stride * 2), *hv = malloc((size_t)nblk * stride * 2);
			assert_true(hk && hv);
			int32_t blocks[64];
			for (int b = 0; b < nb; b++)
				blocks[b] = (int32_t)((b * 5 + 1) % nblk);
			for (int p = 0; p < ctx; p++)
				for (int i = 0; i < kvdim; i++) {
					size_t at = (size_t)blocks[p / bs] * stride + (size_t)(p % bs) * kvdim + i;
					float kk = k[(size_t)p * kvdim + i], vv = v[(size_t)p * kvdim + i];
					hk[at] = loom_f32_to_bf16(kk);
					hv[at] = loom_f32_to_bf16(vv);
					pk[at] = loom_bf16_to_f32(hk[at]); /* the rounded values */
					pv[at] = loom_bf16_to_f32(hv[at]);
					fk[at] = kk;
					fv[at] = vv;
				}
			float *want = poisoned((size_t)n_q * qdim), *got = poisoned((size_t)n_q * qdim);
			float *full = poisoned((size_t)n_q * qdim);
			kn_attention_paged_heads(want, q, n_q, pos0, pk, pv, blocks, bs, stride, H, KV, hd,
						 0.2f, windows[wi], caps[wi], 0, H);
			kn_attention_paged_heads_bf16(got, q, n_q, pos0, hk, hv, blocks, bs, stride, H,
						      KV, hd, 0.2f, windows[wi], caps[wi], 0, 2);
			kn_attention_paged_heads_bf16(got, q, n_q, pos0, hk, hv, blocks, bs, stride, H,
						      KV, hd, 0.2f, windows[wi], caps[wi], 2, H);
			assert_memory_equal(got, want, sizeof(float) * n_q * qdim);
			kn_attention_paged_heads(full, q, n_q, pos0, fk, fv, blocks, bs, stride, H, KV, hd,
						 0.2f, windows[wi], caps[wi], 0, H);
			for (int i = 0; i < n_q * qdim; i++)
				assert_true(fabsf(got[i] - full[i]) <= 0.05f);
			free(pk), free(pv), free(fk), free(fv), free(hk), free(hv);
			free(want), free(got), free(full);
		}
	free(q), free(k), free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gemm_m1),
		cmocka_unit_test(test_gemm_batched),
		cmocka_unit_test(test_rmsnorm),
		cmocka_unit_test(test_rope),
		cmocka_unit_test(test_silu_mul),
		cmocka_unit_test(test_embed_add),
		cmocka_unit_test(test_attention_gqa),
		cmocka_unit_test(test_attention_paged_bits),
		cmocka_unit_test(test_attention_bf16_bits),
		cmocka_unit_test(test_attention_window_softcap),
		cmocka_unit_test(test_gelu_bias_softcap),
	};
	return cmocka_run_group_tests_name("kernels/cpu_ops", tests, NULL, NULL);
}
