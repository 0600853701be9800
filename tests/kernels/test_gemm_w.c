/*
 * tests/kernels/test_gemm_w.c — the packed fixed-order GEMM with F32, BF16
 * and F16 weights on every ISA path this CPU runs (forced one by one, the
 * portable path always): against a float64 reference of the same (widened)
 * weights, bit-identical for a row alone and inside batches of any size,
 * for one or two pool threads, and across ISA paths; packing round-trips;
 * the portable F16 conversion against F16C.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

static uint64_t rng = 88172645463325252ull;
static double urand(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

static uint16_t to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static double bf16_val(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* IEEE half -> double, written independently of the kernel's conversion. */
static double f16_val(uint16_t h)
{
	int e = (h >> 10) & 31, m = h & 1023;
	double s = (h & 0x8000) ? -1 : 1;
	if (e == 0)
		return s * ldexp(m, -24);
	if (e == 31)
		return m ? NAN : s * INFINITY;
	return s * ldexp(1024 + m, e - 25);
}

/* A random weight matrix of type dt and its exact values in double. */
static void *weights(kn_wdt dt, int N, int K, double *exact)
{
	size_t n = (size_t)N * K;
	void *w = malloc(n * (dt == KN_W_F32 ? 4 : 2));
	for (size_t i = 0; i < n; i++) {
		float v = (float)(urand() * 2 - 1);
		if (dt == KN_W_F32) {
			((float *)w)[i] = v;
			exact[i] = v;
		} else if (dt == KN_W_BF16) {
			((uint16_t *)w)[i] = to_bf16(v);
			exact[i] = bf16_val(((uint16_t *)w)[i]);
		} else {
			/* a random half in about [-2, 2]: sign, exponent 5..15 (subnormals
			 * below), mantissa */
			int e = (int)(urand() * 11) + 5 - (urand() < 0.05 ? 5 : 0);
			uint16_t h = (uint16_t)((v < 0 ? 0x8000 : 0) | (e << 10) |
						 (int)(urand() * 1024));
			((uint16_t *)w)[i] = h;
			exact[i] = f16_val(h);
		}
	}
	return w;
}

/* Packs w (row-major, type dt) into a new buffer. */
static void *packed(const void *w, kn_wdt dt, int N, int K)
{
	void *p = malloc(kn_pack_bytes(dt, N, K));
	assert_int_equal(kn_pack(p, dt, w, dt, N, K), 0);
	return p;
}

static void check_shape(kn_pool *pool, kn_wdt dt, int M, int N, int K)
{
	double *ex = malloc(sizeof(double) * N * K);
	void *wr = weights(dt, N, K, ex), *w = packed(wr, dt, N, K);
	for (int n = 0; n < N; n += 7)
		for (int k = 0; k < K; k += 5)
			assert_true(kn_pack_get(w, dt, K, n, k) == (float)ex[(size_t)n * K + k]);
	float *x = malloc(sizeof(float) * M * K), *y = malloc(sizeof(float) * M * N);
	float *y1 = malloc(sizeof(float) * N);
	for (int i = 0; i < M * K; i++)
		x[i] = (float)(urand() * 2 - 1);
	for (int i = 0; i < M * N; i++)
		y[i] = NAN;
	kn_gemm_p(y, x, w, dt, M, N, K, 0, pool);
	for (int m = 0; m < M; m++) {
		for (int n = 0; n < N; n++) {
			double r = 0, a = 0;
			for (int k = 0; k < K; k++) {
				r += (double)x[m * K + k] * ex[(size_t)n * K + k];
				a += fabs((double)x[m * K + k] * ex[(size_t)n * K + k]);
			}
			if (!(fabs(y[m * N + n] - r) <= 1e-6 * a + 1e-30))
				fail_msg("%s dt %d M %d N %d K %d: y[%d,%d] = %g, want %g",
					 kn_isa_name(kn_isa_get()), dt, M, N, K, m, n, y[m * N + n], r);
		}
		/* the same row alone: the same bits */
		kn_gemm_p(y1, x + (size_t)m * K, w, dt, 1, N, K, 0, NULL);
		if (memcmp(y1, y + (size_t)m * N, sizeof(float) * N) != 0)
			fail_msg("%s dt %d M %d N %d K %d: row %d differs alone",
				 kn_isa_name(kn_isa_get()), dt, M, N, K, m);
	}
	/* accumulate adds exactly the same dot */
	memcpy(y1, y, sizeof(float) * N);
	kn_gemm_p(y1, x, w, dt, 1, N, K, 1, pool);
	for (int n = 0; n < N; n++)
		assert_true(y1[n] == y[n] + y[n]);
	free(ex), free(w), free(wr), free(x), free(y), free(y1);
}

/* The same inputs on every ISA path: the same bits (fused multiply-adds in
 * the same order everywhere). */
static void paths_agree(void **state)
{
	(void)state;
	int M = 11, N = 45, K = 83;
	for (int dt = 0; dt < 3; dt++) {
		double *ex = malloc(sizeof(double) * N * K);
		void *wr = weights((kn_wdt)dt, N, K, ex), *w = packed(wr, (kn_wdt)dt, N, K);
		float *x = malloc(sizeof(float) * M * K), *a = malloc(sizeof(float) * M * N);
		float *b = malloc(sizeof(float) * M * N);
		for (int i = 0; i < M * K; i++)
			x[i] = (float)(urand() * 2 - 1);
		assert_int_equal(kn_isa_set(KN_ISA_PORTABLE), 0);
		kn_gemm_p(a, x, w, (kn_wdt)dt, M, N, K, 0, NULL);
		for (int isa = 1; isa <= (int)kn_isa_detect(); isa++) {
			assert_int_equal(kn_isa_set((kn_isa)isa), 0);
			kn_gemm_p(b, x, w, (kn_wdt)dt, M, N, K, 0, NULL);
			if (memcmp(a, b, sizeof(float) * M * N) != 0)
				fail_msg("dt %d: %s differs from portable", dt, kn_isa_name((kn_isa)isa));
		}
		free(ex), free(wr), free(w), free(x), free(a), free(b);
	}
	assert_int_equal(kn_isa_set(kn_isa_detect()), 0);
}

/* F32 -> BF16 packing rounds to nearest even; F16 is never rounded to. */
static void pack_conversions(void **state)
{
	(void)state;
	float src[3] = {1.0f, 1.00390625f /* 1 + 2^-8: a tie, even is 1.0 */, 3.14159265f};
	void *p = malloc(kn_pack_bytes(KN_W_BF16, 3, 1));
	assert_int_equal(kn_pack(p, KN_W_BF16, src, KN_W_F32, 3, 1), 0);
	assert_true(kn_pack_get(p, KN_W_BF16, 1, 0, 0) == 1.0f);
	assert_true(kn_pack_get(p, KN_W_BF16, 1, 1, 0) == 1.0f);
	assert_true(kn_pack_get(p, KN_W_BF16, 1, 2, 0) == 3.140625f);
	uint16_t one = 0x3c00;
	assert_int_equal(kn_pack(p, KN_W_F16, &one, KN_W_BF16, 1, 1), -1);
	free(p);
	/* F32 -> F16 -> F32 is exact for every finite half (F32 holding an F16
	 * model's weights), and rounds as F16C does in between */
	uint16_t pk[16];
	for (uint32_t h = 0; h < 65536; h++) {
		if (((h >> 10) & 31) == 31)
			continue;
		float f = (float)f16_val((uint16_t)h);
		assert_int_equal(kn_pack(pk, KN_W_F16, &f, KN_W_F32, 1, 1), 0);
		if (kn_pack_get(pk, KN_W_F16, 1, 0, 0) != f)
			fail_msg("f16 %04x did not round-trip", h);
	}
}

static void every_path(void **state)
{
	(void)state;
	kn_pool *two;
	assert_int_equal(kn_pool_create(2, &two), 0);
	kn_isa best = kn_isa_detect();
	fprintf(stderr, "paths: portable..%s\n", kn_isa_name(best));
	for (int isa = 0; isa <= (int)best; isa++) {
		assert_int_equal(kn_isa_set((kn_isa)isa), 0);
		for (int dt = 0; dt < 3; dt++) {
			check_shape(two, (kn_wdt)dt, 7, 37, 100);  /* K tail, N tail, M tail */
			check_shape(NULL, (kn_wdt)dt, 1, 16, 64);
			check_shape(two, (kn_wdt)dt, 9, 70, 31);   /* K < one chunk */
			check_shape(two, (kn_wdt)dt, 4, 33, 768);
		}
	}
	assert_int_equal(kn_isa_set(best), 0);
	assert_int_equal(kn_isa_set((kn_isa)7), -1);
	kn_pool_destroy(two);
}

/* Thread count and batch makeup never change a row's bits. */
static void threads_and_batches(void **state)
{
	(void)state;
	int M = 13, N = 300, K = 257;
	double *ex = malloc(sizeof(double) * N * K);
	void *w = weights(KN_W_BF16, N, K, ex);
	float *x = malloc(sizeof(float) * M * K), *a = malloc(sizeof(float) * M * N);
	float *b = malloc(sizeof(float) * M * N);
	void *wr = w;
	w = packed(wr, KN_W_BF16, N, K);
	for (int i = 0; i < M * K; i++)
		x[i] = (float)(urand() * 2 - 1);
	kn_pool *p1, *p2;
	assert_int_equal(kn_pool_create(1, &p1), 0);
	assert_int_equal(kn_pool_create(2, &p2), 0);
	for (int rep = 0; rep < 50; rep++) { /* many runs: the pool's hand-over */
		kn_gemm_p(a, x, w, KN_W_BF16, M, N, K, 0, p1);
		kn_gemm_p(b, x, w, KN_W_BF16, M, N, K, 0, p2);
		assert_memory_equal(a, b, sizeof(float) * M * N);
		/* rows 5..12 as their own batch */
		kn_gemm_p(b, x + 5 * K, w, KN_W_BF16, M - 5, N, K, 0, p2);
		assert_memory_equal(a + 5 * N, b, sizeof(float) * (M - 5) * N);
	}
	kn_pool_destroy(p1);
	kn_pool_destroy(p2);
	free(ex), free(w), free(wr), free(x), free(a), free(b);
}

/* The portable F16 widening equals F16C's on all 65536 halves. */
__attribute__((target("f16c"))) static float hw_f16(uint16_t h)
{
	return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}

static void f16_all_values(void **state)
{
	(void)state;
	if (!__builtin_cpu_supports("f16c"))
		skip();
	assert_int_equal(kn_isa_set(KN_ISA_PORTABLE), 0);
	float x[1] = {1.0f}, y[1];
	for (uint32_t h = 0; h < 65536; h++) {
		uint16_t v = (uint16_t)h;
		uint16_t pk[16];
		assert_int_equal(kn_pack(pk, KN_W_F16, &v, KN_W_F16, 1, 1), 0);
		kn_gemm_p(y, x, pk, KN_W_F16, 1, 1, 1, 0, NULL);
		float want = hw_f16(v);
		if (!(want == y[0] || (isnan(want) && isnan(y[0])))) /* 0 + -0 is +0 */
			fail_msg("f16 %04x: %g, F16C says %g", h, y[0], want);
	}
	assert_int_equal(kn_isa_set(kn_isa_detect()), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_path),
		cmocka_unit_test(threads_and_batches),
		cmocka_unit_test(paths_agree),
		cmocka_unit_test(pack_conversions),
		cmocka_unit_test(f16_all_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
