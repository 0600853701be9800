/*
 * kernels/cpu/gemm_w.c — linear layers over packed F32, BF16 or F16
 * weights with a fixed summation order (batch invariance), split over the
 * thread pool.
 *
 * Layout: a weight W[N,K] (Hugging Face's out x in) is packed once, at
 * model load, into panels of 16 output columns: panel p holds
 * W[16p .. 16p+15, k] for k = 0..K-1, k-major (16 consecutive values per
 * k), the last panel padded with zeros. The microkernel keeps a vector of
 * 16 outputs per row, broadcasts x[m,k] and adds x[m,k] * panel[k][0..15]
 * for k = 0, 1, ..., K-1 in that order: every y[m,n] is a plain sequential
 * sum over k, whatever M, the other rows, the tile shape, the thread count
 * or the ISA path (16 lanes on AVX-512, two 8-lane halves on AVX2, 16
 * scalars portable: the same FMAs in the same order — the portable path
 * uses fmaf, so all paths give the same bits where the C library's fmaf is
 * exact, which glibc's is). Tiles are up to 8 rows x 2 panels (16
 * accumulators of the 32 AVX-512 registers), so a loaded weight vector
 * feeds up to 8 FMAs and a broadcast x feeds 2; decode (M = 1) streams each
 * weight once, at memory bandwidth. 8 rows, not 6: 32 decode rows are four
 * full tiles instead of five and a 2-row rest, and each weight vector is
 * widened for 8 FMAs instead of 6 (AVX-512 BF16, 2 threads, Intel VM:
 * 16 x 2048 x 768 0.43-0.52 -> 0.28-0.30 ms, 64 x 2048 x 768 1.09 ->
 * 0.84-1.02 ms, 256 x 2048 x 2048 unchanged).
 *
 * Weights are widened to float32 in registers (BF16: shift left 16; F16:
 * vcvtph2ps) and multiplied with float32 activations, accumulating in
 * float32: a BF16/F16 model keeps its own precision, only half the bytes
 * are read. (vdpbf16ps would also round the activations; it is not used.)
 * Paths are built with target attributes, so the build needs no -march;
 * kn_isa_set forces one.
 *
 * kn_gemm_shrink runs a LoRA group's GEMMs and its shrink in one pool run:
 * the full tiles of each task also request, one line per 8 k steps, the A
 * rows of the shrink rows that task computes after its tiles (so they are
 * in its core's L2 then); the requests change nothing the tiles compute.
 */
#include "../kernels.h"
#include "lora_int.h"

#include <assert.h>
#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#define P 16      /* columns per panel */
#define TR 8      /* rows per tile */
#define TP 2      /* panels per tile */
#define TASK_P 4  /* panels per pool task */
#define PF_MAX 4  /* ranges a task prefetches */
#define TR2 2     /* rows per tile on AVX2 */

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

/* ---- element conversions ---- */

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

/* Round-to-nearest-even float32 -> bfloat16 (NaN kept quiet). */
static inline uint16_t f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40);
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

/* Round-to-nearest-even float32 -> IEEE half (overflow to infinity). */
static inline uint16_t f32_to_f16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	uint32_t s = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
	if (a > 0x7f800000u)
		return (uint16_t)(s | 0x7e00);
	if (a >= 0x477ff000u) /* rounds to >= 65520: infinity */
		return (uint16_t)(s | 0x7c00);
	if (a < 0x38800000u) { /* below 2^-14: subnormal half */
		int shift = 113 - (int)(a >> 23);
		if (shift > 24)
			return (uint16_t)s;
		uint32_t m = (a & 0x7fffff) | 0x800000;
		uint32_t r = m >> (shift + 13), rem = m & ((1u << (shift + 13)) - 1);
		uint32_t half = 1u << (shift + 12);
		if (rem > half || (rem == half && (r & 1)))
			r++;
		return (uint16_t)(s | r);
	}
	uint32_t r = ((a >> 13) - (112u << 10)), rem = a & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
		r++;
	return (uint16_t)(s | r);
}

static inline float wval(const void *w, kn_wdt dt, size_t i)
{
	switch (dt) {
	case KN_W_BF16: return bf16_to_f32(((const uint16_t *)w)[i]);
	case KN_W_F16: return f16_to_f32(((const uint16_t *)w)[i]);
	default: return ((const float *)w)[i];
	}
}

static size_t esize(kn_wdt dt)
{
	return dt == KN_W_F32 ? 4 : 2;
}

/* ---- packing ---- */

size_t kn_pack_bytes(kn_wdt dt, int N, int K)
{
	return (size_t)((N + P - 1) / P) * P * (size_t)K * esize(dt);
}

int kn_pack(void *dst, kn_wdt dt, const void *src, kn_wdt src_dt, int N, int K)
{
	if ((dt == KN_W_BF16 && src_dt == KN_W_F16) || (dt == KN_W_F16 && src_dt == KN_W_BF16))
		return -1;
	int np = (N + P - 1) / P;
	size_t es = esize(dt);
	for (int p = 0; p < np; p++)
		for (int k = 0; k < K; k++)
			for (int c = 0; c < P; c++) {
				int n = p * P + c;
				size_t d = ((size_t)p * K + k) * P + c;
				if (n >= N) {
					memset((char *)dst + d * es, 0, es);
					continue;
				}
				size_t s = (size_t)n * K + k;
				if (dt == src_dt) {
					memcpy((char *)dst + d * es, (const char *)src + s * es, es);
				} else if (dt == KN_W_F32) {
					((float *)dst)[d] = wval(src, src_dt, s);
				} else if (dt == KN_W_BF16) {
					((uint16_t *)dst)[d] = f32_to_bf16(((const float *)src)[s]);
				} else {
					((uint16_t *)dst)[d] = f32_to_f16(((const float *)src)[s]);
				}
			}
	return 0;
}

float kn_pack_get(const void *wp, kn_wdt dt, int K, int n, int k)
{
	return wval(wp, dt, ((size_t)(n / P) * K + k) * P + (size_t)(n % P));
}

/* ---- prefetching while computing (kn_gemm_shrink) ---- */

/* Lines to request into L2 while a task's tiles compute: one per block of
 * 8 k steps, so the requests spread over the compute instead of queueing
 * in a burst; lines beyond the task's blocks are left to the shrink's own
 * reads. cur / end (the next line, the end of range r) stay in registers
 * in the tiles' loops, which copy the cursor into a local; the ranges are
 * read only when one is done. cur is NULL when none is left. */
typedef struct pf_cur {
	const char *cur, *end;
	int r, nr;
	const char *p[PF_MAX]; /* the ranges */
	size_t n[PF_MAX];      /* their lines */
} pf_cur;

#define PF_STEP(c)                                                                          \
	do {                                                                                \
		if ((c).cur) {                                                              \
			__builtin_prefetch((c).cur, 0, 2);                                  \
			if (((c).cur += 64) >= (c).end) {                                   \
				if (++(c).r < (c).nr) {                                     \
					(c).cur = (c).p[(c).r];                             \
					(c).end = (c).cur + 64 * (c).n[(c).r];              \
				} else {                                                    \
					(c).cur = NULL;                                     \
				}                                                           \
			}                                                                   \
		}                                                                           \
	} while (0)

/* The k loop of a tile's full case, step(k) one k step: with the prefetch
 * side stream (pf), blocks of 8 k steps with one PF_STEP of the cursor c
 * each, then the rest; without it, a plain loop. */
#define K_LOOP(step)                                                                        \
	do {                                                                                \
		int k_ = 0;                                                                 \
		if (pf)                                                                     \
			for (; k_ + 8 <= K; k_ += 8) {                                      \
				PF_STEP(c);                                                 \
				_Pragma("GCC unroll 8") for (int i_ = 0; i_ < 8; i_++)      \
					step(k_ + i_);                                      \
			}                                                                   \
		for (; k_ < K; k_++)                                                        \
			step(k_);                                                           \
	} while (0)

/* ---- portable ---- */

/* Rows r < mr, panels q < tp of the tile starting at panel p0. */
static void tile_portable(float *out, const float *x, size_t ldx, int mr, const void *wp,
			  kn_wdt dt, size_t p_off, int tp, int K)
{
	float a[TR][TP * P];
	memset(a, 0, sizeof a);
	for (int k = 0; k < K; k++)
		for (int q = 0; q < tp; q++) {
			size_t base = p_off + ((size_t)q * K + k) * P;
			for (int c = 0; c < P; c++) {
				float w = wval(wp, dt, base + c);
				for (int r = 0; r < mr; r++)
					a[r][q * P + c] = fmaf(x[(size_t)r * ldx + k], w, a[r][q * P + c]);
			}
		}
	for (int r = 0; r < mr; r++)
		memcpy(out + r * TP * P, a[r], sizeof(float) * (size_t)tp * P);
}

/* ---- AVX2 + FMA + F16C: a panel is two 8-lane halves ---- */

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

/* AVX2 has 16 registers: tiles of up to 2 rows x 2 panels (8 accumulators
 * of 8 lanes, 4 weight vectors, a broadcast). */
__attribute__((target("avx2,fma,f16c"), always_inline)) static inline void
tile_avx2_body(float *out, const float *x, size_t ldx, int mr, const void *wp, kn_wdt dt,
	       size_t p_off, int tp, int K, pf_cur *pc, const int pf)
{
	size_t p1 = p_off + (size_t)K * P;
	for (int r0 = 0; r0 < mr; r0 += TR2) {
		int rr = mr - r0 < TR2 ? mr - r0 : TR2;
		const float *xr = x + (size_t)r0 * ldx;
		__m256 a[TR2][4];
#pragma GCC unroll 8
		for (int i = 0; i < TR2 * 4; i++)
			a[i / 4][i % 4] = _mm256_setzero_ps();
		if (rr == TR2 && tp == TP) {
			pf_cur c = *pc;
#define KSTEP256(k)                                                                         \
	do {                                                                                \
		__m256 w0 = ld8(wp, dt, p_off + (size_t)(k) * P);                           \
		__m256 w1 = ld8(wp, dt, p_off + (size_t)(k) * P + 8);                       \
		__m256 w2 = ld8(wp, dt, p1 + (size_t)(k) * P);                              \
		__m256 w3 = ld8(wp, dt, p1 + (size_t)(k) * P + 8);                          \
		__m256 x0 = _mm256_broadcast_ss(xr + (k)), x1 = _mm256_broadcast_ss(xr + ldx + (k)); \
		a[0][0] = _mm256_fmadd_ps(x0, w0, a[0][0]);                                 \
		a[0][1] = _mm256_fmadd_ps(x0, w1, a[0][1]);                                 \
		a[0][2] = _mm256_fmadd_ps(x0, w2, a[0][2]);                                 \
		a[0][3] = _mm256_fmadd_ps(x0, w3, a[0][3]);                                 \
		a[1][0] = _mm256_fmadd_ps(x1, w0, a[1][0]);                                 \
		a[1][1] = _mm256_fmadd_ps(x1, w1, a[1][1]);                                 \
		a[1][2] = _mm256_fmadd_ps(x1, w2, a[1][2]);                                 \
		a[1][3] = _mm256_fmadd_ps(x1, w3, a[1][3]);                                 \
	} while (0)
			K_LOOP(KSTEP256);
#undef KSTEP256
			*pc = c;
		} else if (tp == TP) { /* one row, two panels: decode */
			for (int k = 0; k < K; k++) {
				__m256 x0 = _mm256_broadcast_ss(xr + k);
				a[0][0] = _mm256_fmadd_ps(x0, ld8(wp, dt, p_off + (size_t)k * P), a[0][0]);
				a[0][1] = _mm256_fmadd_ps(x0, ld8(wp, dt, p_off + (size_t)k * P + 8),
							  a[0][1]);
				a[0][2] = _mm256_fmadd_ps(x0, ld8(wp, dt, p1 + (size_t)k * P), a[0][2]);
				a[0][3] = _mm256_fmadd_ps(x0, ld8(wp, dt, p1 + (size_t)k * P + 8), a[0][3]);
			}
		} else { /* the last, odd panel */
			for (int k = 0; k < K; k++) {
				__m256 w0 = ld8(wp, dt, p_off + (size_t)k * P);
				__m256 w1 = ld8(wp, dt, p_off + (size_t)k * P + 8);
				for (int r = 0; r < rr; r++) {
					__m256 xb = _mm256_broadcast_ss(xr + (size_t)r * ldx + k);
					a[r][0] = _mm256_fmadd_ps(xb, w0, a[r][0]);
					a[r][1] = _mm256_fmadd_ps(xb, w1, a[r][1]);
				}
			}
		}
		for (int r = 0; r < rr; r++)
			for (int h = 0; h < 2 * tp; h++)
				_mm256_storeu_ps(out + (size_t)(r0 + r) * TP * P + h * 8, a[r][h]);
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

__attribute__((target("avx512f"), always_inline)) static inline void
tile_avx512_body(float *out, const float *x, size_t ldx, int mr, const void *wp, kn_wdt dt,
		 size_t p_off, int tp, int K, pf_cur *pc, const int pf)
{
	__m512 a[TR][TP];
	for (int r = 0; r < TR; r++)
		a[r][0] = a[r][1] = _mm512_setzero_ps();
	size_t p1 = p_off + (size_t)K * P;
	if (mr == TR && tp == TP) { /* the common case, unrolled into registers */
		pf_cur c = *pc;
#define KSTEP512(k)                                                                         \
	do {                                                                                \
		__m512 w0 = ld16(wp, dt, p_off + (size_t)(k) * P);                          \
		__m512 w1 = ld16(wp, dt, p1 + (size_t)(k) * P);                             \
		_Pragma("GCC unroll 8") for (int r = 0; r < TR; r++)                        \
		{                                                                           \
			__m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + (k)]);               \
			a[r][0] = _mm512_fmadd_ps(xb, w0, a[r][0]);                         \
			a[r][1] = _mm512_fmadd_ps(xb, w1, a[r][1]);                         \
		}                                                                           \
	} while (0)
		K_LOOP(KSTEP512);
#undef KSTEP512
		*pc = c;
	} else if (tp == TP) {
		for (int k = 0; k < K; k++) {
			__m512 w0 = ld16(wp, dt, p_off + (size_t)k * P);
			__m512 w1 = ld16(wp, dt, p1 + (size_t)k * P);
			for (int r = 0; r < mr; r++) {
				__m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k]);
				a[r][0] = _mm512_fmadd_ps(xb, w0, a[r][0]);
				a[r][1] = _mm512_fmadd_ps(xb, w1, a[r][1]);
			}
		}
	} else {
		for (int k = 0; k < K; k++) {
			__m512 w0 = ld16(wp, dt, p_off + (size_t)k * P);
			for (int r = 0; r < mr; r++)
				a[r][0] = _mm512_fmadd_ps(_mm512_set1_ps(x[(size_t)r * ldx + k]), w0,
							  a[r][0]);
		}
	}
	for (int r = 0; r < mr; r++)
		for (int q = 0; q < tp; q++)
			_mm512_storeu_ps(out + (size_t)r * TP * P + q * P, a[r][q]);
}

/* The tiles as functions: with a prefetch side stream, and without (no
 * cursor code in the loop of a plain GEMM), each with the weight type a
 * constant (no per-k test of it in the loops). */
#define TILE_DISPATCH(body)                                                                 \
	do {                                                                                \
		if (pc->nr && dt == KN_W_BF16)                                              \
			body(out, x, ldx, mr, wp, KN_W_BF16, p_off, tp, K, pc, 1);          \
		else if (pc->nr && dt == KN_W_F16)                                          \
			body(out, x, ldx, mr, wp, KN_W_F16, p_off, tp, K, pc, 1);           \
		else if (pc->nr)                                                            \
			body(out, x, ldx, mr, wp, KN_W_F32, p_off, tp, K, pc, 1);           \
		else if (dt == KN_W_BF16)                                                   \
			body(out, x, ldx, mr, wp, KN_W_BF16, p_off, tp, K, pc, 0);          \
		else if (dt == KN_W_F16)                                                    \
			body(out, x, ldx, mr, wp, KN_W_F16, p_off, tp, K, pc, 0);           \
		else                                                                        \
			body(out, x, ldx, mr, wp, KN_W_F32, p_off, tp, K, pc, 0);           \
	} while (0)

__attribute__((target("avx2,fma,f16c"))) static void tile_avx2(float *out, const float *x,
							       size_t ldx, int mr, const void *wp,
							       kn_wdt dt, size_t p_off, int tp, int K,
							       pf_cur *pc)
{
	TILE_DISPATCH(tile_avx2_body);
}

__attribute__((target("avx512f"))) static void tile_avx512(float *out, const float *x,
							   size_t ldx, int mr, const void *wp,
							   kn_wdt dt, size_t p_off, int tp, int K,
							   pf_cur *pc)
{
	TILE_DISPATCH(tile_avx512_body);
}

/* ---- the GEMM over the pool ---- */

typedef struct gemm_job {
	float *y;
	const float *x;
	const void *wp;
	kn_wdt dt;
	int M, N, K, acc;
	kn_isa isa;
} gemm_job;

/* Task t of job j (panels [t * TASK_P, ...) for every row), requesting pc's
 * lines meanwhile. */
static void gemm_run(const gemm_job *j, int t, pf_cur *pc)
{
	int np = (j->N + P - 1) / P;
	int pa = t * TASK_P, pb = pa + TASK_P < np ? pa + TASK_P : np;
	float out[TR * TP * P];
	for (int p = pa; p < pb; p += TP) {
		int tp = pb - p < TP ? pb - p : TP;
		size_t p_off = (size_t)p * j->K * P;
		for (int m = 0; m < j->M; m += TR) {
			int mr = j->M - m < TR ? j->M - m : TR;
			const float *x = j->x + (size_t)m * j->K;
			if (j->isa == KN_ISA_AVX512)
				tile_avx512(out, x, (size_t)j->K, mr, j->wp, j->dt, p_off, tp, j->K, pc);
			else if (j->isa == KN_ISA_AVX2)
				tile_avx2(out, x, (size_t)j->K, mr, j->wp, j->dt, p_off, tp, j->K, pc);
			else
				tile_portable(out, x, (size_t)j->K, mr, j->wp, j->dt, p_off, tp, j->K);
			int n0 = p * P, nn = (j->N - n0 < tp * P ? j->N - n0 : tp * P);
			for (int r = 0; r < mr; r++) {
				float *yr = j->y + (size_t)(m + r) * j->N + n0;
				const float *o = out + (size_t)r * TP * P;
				if (j->acc)
					for (int c = 0; c < nn; c++)
						yr[c] += o[c];
				else
					memcpy(yr, o, sizeof(float) * (size_t)nn);
			}
		}
	}
}

static int gemm_tasks(int N)
{
	int np = (N + P - 1) / P;
	return (np + TASK_P - 1) / TASK_P;
}

static void gemm_task(void *ctx, int t)
{
	pf_cur none = {0};
	gemm_run(ctx, t, &none);
}

void kn_gemm_p(float *y, const float *x, const void *wp, kn_wdt dt, int M, int N, int K,
	       int accumulate, kn_pool *pool)
{
	if (M <= 0 || N <= 0)
		return;
	gemm_job j = {.y = y, .x = x, .wp = wp, .dt = dt, .M = M, .N = N, .K = K,
		      .acc = accumulate, .isa = kn_isa_get()};
	kn_pool_run(pool, gemm_tasks(N), gemm_task, &j);
}

/* ---- kn_gemm_shrink ---- */

typedef struct fused_job {
	gemm_job g[KN_FUSED_MAX];
	int first[KN_FUSED_MAX + 1]; /* first task of each GEMM; first[n_g] = all */
	int n_g, items;
	float *v;
	int ldv, d_in;
	const float *x;
	const kn_lora_seg *segs;
	int n_segs;
} fused_job;

static void fused_task(void *ctx, int t)
{
	const fused_job *f = ctx;
	int T = f->first[f->n_g], gi = 0;
	while (t >= f->first[gi + 1])
		gi++;
	const gemm_job *j = &f->g[gi];
	/* this task's share of the items: their A rows come in while it computes */
	int i0 = (int)((long)f->items * t / T), i1 = (int)((long)f->items * (t + 1) / T);
	pf_cur c = {0};
	for (int i = i0; i < i1; i++) {
		const void *p;
		size_t bytes;
		kn_lora_item_a(f->segs, f->n_segs, f->d_in, i, &p, &bytes);
		if (c.nr > 0 && c.p[c.nr - 1] == p)
			continue; /* rows of one segment share A */
		if (c.nr == PF_MAX)
			break;
		c.p[c.nr] = p;
		c.n[c.nr++] = (bytes + 63) / 64;
	}
	if (c.nr) {
		c.cur = c.p[0];
		c.end = c.cur + 64 * c.n[0];
	}
	gemm_run(j, t - f->first[gi], &c);
	kn_lora_shrink_items(f->v, f->ldv, f->x, f->d_in, f->segs, f->n_segs, i0, i1 - i0);
}

void kn_gemm_shrink(const kn_gemm_op *ops, int n_ops, float *v, int ldv, const float *x,
		    int d_in, const kn_lora_seg *segs, int n_segs, kn_pool *pool)
{
	fused_job f = {.n_g = 0, .v = v, .ldv = ldv, .d_in = d_in, .x = x, .segs = segs,
		       .n_segs = n_segs};
	assert(n_ops >= 1 && n_ops <= KN_FUSED_MAX);
	for (int i = 0; i < n_ops; i++) {
		const kn_gemm_op *o = &ops[i];
		if (o->M <= 0 || o->N <= 0)
			continue;
		f.g[f.n_g] = (gemm_job){.y = o->y, .x = o->x, .wp = o->wp, .dt = o->dt, .M = o->M,
					 .N = o->N, .K = o->K, .acc = o->accumulate,
					 .isa = kn_isa_get()};
		f.first[f.n_g + 1] = f.first[f.n_g] + gemm_tasks(o->N);
		f.n_g++;
	}
	f.items = kn_lora_items(segs, n_segs);
	if (f.n_g == 0) {
		kn_lora_shrink(v, ldv, x, d_in, segs, n_segs, pool);
		return;
	}
	kn_pool_run(pool, f.first[f.n_g], fused_task, &f);
}
