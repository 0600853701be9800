/*
 * kernels/cpu/gemm_w.c — linear layers with F32, BF16 or F16 weights and a
 * fixed summation order (batch invariance), split over the thread pool.
 *
 * Every y[m,n] is one dot product of x row m and weight row n, summed the
 * same way whatever M is: 32-float chunks of k into two vector accumulators
 * (lanes fixed by k mod the vector width), the K % 32 tail in scalar
 * order, then the accumulators reduced in a fixed tree. Rows are computed
 * four at a time so each weight chunk is loaded once for four rows (decode
 * batches reuse it from registers, prefill from L1/L2 across the row
 * groups of a column block), but a row's arithmetic is the same alone or
 * in a group. The pool splits the N columns into blocks: a column is
 * computed by exactly one thread, in the same order, so the thread count
 * does not change the bits either. The result does depend on the ISA path
 * (lane counts differ), which is chosen once per process.
 *
 * Weights are widened to float32 in registers (BF16: shift left 16; F16:
 * vcvtph2ps) and multiplied with float32 activations, accumulating in
 * float32: BF16/F16 models keep their own precision (the float64
 * reference still holds to < 1e-4), only half the bytes are read. The
 * BF16 dot instruction (vdpbf16ps) would round the activations to BF16
 * too; it is not used.
 *
 * Paths: AVX-512F (16 lanes), AVX2+FMA+F16C (8 lanes), portable C (8
 * scalar lanes, no FMA). Built with target attributes, so the build needs
 * no -march and every path compiles everywhere; kn_isa_set forces one.
 */
#include "../kernels.h"

#include <immintrin.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#define MR 4      /* rows per group */
#define NB 16     /* columns per pool task */
#define KC 32     /* floats per chunk */

/* ---- ISA selection ---- */

static atomic_int isa_cur = -1;

kn_isa kn_isa_detect(void)
{
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		return KN_ISA_AVX512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
	    __builtin_cpu_supports("f16c"))
		return KN_ISA_AVX2;
	return KN_ISA_PORTABLE;
}

kn_isa kn_isa_get(void)
{
	int v = atomic_load(&isa_cur);
	if (v < 0) {
		v = (int)kn_isa_detect();
		atomic_store(&isa_cur, v);
	}
	return (kn_isa)v;
}

int kn_isa_set(kn_isa isa)
{
	if ((int)isa < 0 || isa > kn_isa_detect())
		return -1;
	atomic_store(&isa_cur, (int)isa);
	return 0;
}

const char *kn_isa_name(kn_isa isa)
{
	static const char *const n[] = {"portable", "avx2", "avx512"};
	return (unsigned)isa < 3 ? n[isa] : "?";
}

/* ---- portable ---- */

static inline float bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline float f16_to_f32(uint16_t h)
{
	uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
	if (e == 0) {
		if (m == 0) {
			u = s;
		} else { /* subnormal: normalise */
			e = 127 - 15 + 1;
			while (!(m & 0x400)) {
				m <<= 1;
				e--;
			}
			u = s | (e << 23) | ((m & 0x3ff) << 13);
		}
	} else if (e == 31) {
		u = s | 0x7f800000u | (m << 13);
	} else {
		u = s | ((e + 127 - 15) << 23) | (m << 13);
	}
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline float wval(const void *w, kn_wdt dt, size_t i)
{
	switch (dt) {
	case KN_W_BF16: return bf16_to_f32(((const uint16_t *)w)[i]);
	case KN_W_F16: return f16_to_f32(((const uint16_t *)w)[i]);
	default: return ((const float *)w)[i];
	}
}

static float dot_portable(const float *x, const void *w, kn_wdt dt, size_t off, int K)
{
	float a[8] = {0};
	int k = 0;
	for (; k + KC <= K; k += KC)
		for (int j = 0; j < KC; j++)
			a[j & 7] += x[k + j] * wval(w, dt, off + (size_t)(k + j));
	float s = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
	for (; k < K; k++)
		s += x[k] * wval(w, dt, off + (size_t)k);
	return s;
}

/* ---- AVX2 + FMA + F16C ---- */

__attribute__((target("avx2,fma,f16c"))) static inline __m256 ld8(const void *w, kn_wdt dt,
								    size_t i)
{
	if (dt == KN_W_F32)
		return _mm256_loadu_ps((const float *)w + i);
	__m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
	if (dt == KN_W_F16)
		return _mm256_cvtph_ps(h);
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2,fma,f16c"))) static inline float hsum8(__m256 v)
{
	__m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
	lo = _mm_add_ps(lo, hi);
	lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
	lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
	return _mm_cvtss_f32(lo);
}

/* mr rows of x (stride ldx) against weight row n: out[r] = dot. */
__attribute__((target("avx2,fma,f16c"))) static void dots_avx2(float *out, const float *x,
							       size_t ldx, int mr, const void *w,
							       kn_wdt dt, size_t off, int K)
{
	__m256 a[MR][4];
	for (int r = 0; r < MR; r++)
		for (int j = 0; j < 4; j++)
			a[r][j] = _mm256_setzero_ps();
	int k = 0;
	for (; k + KC <= K; k += KC) {
		__m256 w0 = ld8(w, dt, off + (size_t)k), w1 = ld8(w, dt, off + (size_t)k + 8);
		__m256 w2 = ld8(w, dt, off + (size_t)k + 16), w3 = ld8(w, dt, off + (size_t)k + 24);
		for (int r = 0; r < mr; r++) {
			const float *xr = x + (size_t)r * ldx + k;
			a[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xr), w0, a[r][0]);
			a[r][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 8), w1, a[r][1]);
			a[r][2] = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 16), w2, a[r][2]);
			a[r][3] = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 24), w3, a[r][3]);
		}
	}
	for (int r = 0; r < mr; r++) {
		__m256 s = _mm256_add_ps(_mm256_add_ps(a[r][0], a[r][2]),
					 _mm256_add_ps(a[r][1], a[r][3]));
		float t = hsum8(s);
		const float *xr = x + (size_t)r * ldx;
		for (int kk = k; kk < K; kk++)
			t += xr[kk] * wval(w, dt, off + (size_t)kk);
		out[r] = t;
	}
}

/* ---- AVX-512F ---- */

__attribute__((target("avx512f"))) static inline __m512 ld16(const void *w, kn_wdt dt, size_t i)
{
	if (dt == KN_W_F32)
		return _mm512_loadu_ps((const float *)w + i);
	__m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
	if (dt == KN_W_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx512f"))) static void dots_avx512(float *out, const float *x,
							   size_t ldx, int mr, const void *w,
							   kn_wdt dt, size_t off, int K)
{
	__m512 a[MR][2];
	for (int r = 0; r < MR; r++)
		a[r][0] = a[r][1] = _mm512_setzero_ps();
	int k = 0;
	for (; k + KC <= K; k += KC) {
		__m512 w0 = ld16(w, dt, off + (size_t)k), w1 = ld16(w, dt, off + (size_t)k + 16);
		for (int r = 0; r < mr; r++) {
			const float *xr = x + (size_t)r * ldx + k;
			a[r][0] = _mm512_fmadd_ps(_mm512_loadu_ps(xr), w0, a[r][0]);
			a[r][1] = _mm512_fmadd_ps(_mm512_loadu_ps(xr + 16), w1, a[r][1]);
		}
	}
	for (int r = 0; r < mr; r++) {
		float t = _mm512_reduce_add_ps(_mm512_add_ps(a[r][0], a[r][1]));
		const float *xr = x + (size_t)r * ldx;
		for (int kk = k; kk < K; kk++)
			t += xr[kk] * wval(w, dt, off + (size_t)kk);
		out[r] = t;
	}
}

/* ---- the GEMM over the pool ---- */

typedef struct gemm_job {
	float *y;
	const float *x;
	const void *w;
	kn_wdt dt;
	int M, N, K, acc;
	kn_isa isa;
} gemm_job;

static void gemm_task(void *ctx, int t)
{
	const gemm_job *j = ctx;
	int n0 = t * NB, n1 = n0 + NB < j->N ? n0 + NB : j->N;
	float out[MR];
	for (int m = 0; m < j->M; m += MR) {
		int mr = j->M - m < MR ? j->M - m : MR;
		const float *x = j->x + (size_t)m * j->K;
		for (int n = n0; n < n1; n++) {
			size_t off = (size_t)n * j->K;
			if (j->isa == KN_ISA_AVX512) {
				dots_avx512(out, x, (size_t)j->K, mr, j->w, j->dt, off, j->K);
			} else if (j->isa == KN_ISA_AVX2) {
				dots_avx2(out, x, (size_t)j->K, mr, j->w, j->dt, off, j->K);
			} else {
				for (int r = 0; r < mr; r++)
					out[r] = dot_portable(x + (size_t)r * j->K, j->w, j->dt, off, j->K);
			}
			for (int r = 0; r < mr; r++) {
				float *yp = j->y + (size_t)(m + r) * j->N + n;
				*yp = j->acc ? *yp + out[r] : out[r];
			}
		}
	}
}

void kn_gemm_w(float *y, const float *x, const void *w, kn_wdt wdt, int M, int N, int K,
	       int accumulate, kn_pool *pool)
{
	if (M <= 0 || N <= 0)
		return;
	gemm_job j = {.y = y, .x = x, .w = w, .dt = wdt, .M = M, .N = N, .K = K,
		      .acc = accumulate, .isa = kn_isa_get()};
	kn_pool_run(pool, (N + NB - 1) / NB, gemm_task, &j);
}
