/*
 * kernels/cpu/lora.c — segmented LoRA shrink (d -> r) and expand (r -> d).
 *
 * Workload: at decode a segment is one row (one sequence), so shrink is a
 * GEMV over A [r, d_in] and expand a GEMV over Bt [r, d_out]; with 32
 * distinct adapters every step streams all their A and Bt from memory once
 * (flops per byte ~0.5), so these loops only have to keep the memory bus
 * busy. Tiny OpenBLAS calls cost more than they do (per-call overhead and
 * its threading on 16-row x 768 problems), so segments shorter than
 * GEMM_ROWS use the loops below; longer ones (prefill) call sgemm, which
 * reuses each A/Bt block from cache across rows.
 *
 * The loops use GCC vector extensions (16 floats, 64 bytes) and are
 * compiled three times with target_clones (AVX-512F, AVX2, baseline SSE2),
 * picked at load time by the CPU: the build has no -march flag, and at -O2
 * GCC neither vectorises float reductions (no reassociation) nor emits
 * AVX. The order of every sum is fixed (lanes, then a fixed tree), so a row
 * gives the same bits whatever else is in the batch, on one machine.
 *
 * Rows of one segment are independent, so a segment's result never depends
 * on the others (batch invariance), except through the loop-vs-sgemm choice
 * by segment length.
 */
#include "../kernels.h"

#include <assert.h>
#include <cblas.h>
#include <string.h>

enum { GEMM_ROWS = 16, VL = 16 };

typedef float v16 __attribute__((vector_size(64)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KN_CLONES
#endif
#define KN_INLINE static inline __attribute__((always_inline))

/* Unaligned 64-byte load and store (macros: passing a 64-byte vector by value
 * to a function is an ABI change GCC warns about without AVX-512). */
#define ld(p) (__extension__({ v16 r_; memcpy(&r_, (p), sizeof r_); r_; }))
#define st(p, x) (__extension__({ v16 x_ = (x); memcpy((p), &x_, sizeof x_); }))

KN_INLINE float hsum(const v16 *xp)
{
	const v16 x = *xp;
	/* fixed tree: (0..7)+(8..15), then halves again */
	float s8[8], s4[4];
	for (int i = 0; i < 8; i++)
		s8[i] = x[i] + x[i + 8];
	for (int i = 0; i < 4; i++)
		s4[i] = s8[i] + s8[i + 4];
	return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

/* v[j] = x . a[j, :] for 4 consecutive rows of a (row stride K). */
KN_INLINE void dot4(float *v, const float *x, const float *a, int K)
{
	const float *a0 = a, *a1 = a + K, *a2 = a + 2 * (size_t)K, *a3 = a + 3 * (size_t)K;
	v16 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
	int k = 0;
	for (; k + VL <= K; k += VL) {
		v16 xv = ld(x + k);
		s0 += xv * ld(a0 + k);
		s1 += xv * ld(a1 + k);
		s2 += xv * ld(a2 + k);
		s3 += xv * ld(a3 + k);
	}
	float t0 = hsum(&s0), t1 = hsum(&s1), t2 = hsum(&s2), t3 = hsum(&s3);
	for (; k < K; k++) {
		t0 += x[k] * a0[k];
		t1 += x[k] * a1[k];
		t2 += x[k] * a2[k];
		t3 += x[k] * a3[k];
	}
	v[0] = t0;
	v[1] = t1;
	v[2] = t2;
	v[3] = t3;
}

KN_INLINE float dot1(const float *x, const float *a, int K)
{
	v16 s = {0};
	int k = 0;
	for (; k + VL <= K; k += VL)
		s += ld(x + k) * ld(a + k);
	float t = hsum(&s);
	for (; k < K; k++)
		t += x[k] * a[k];
	return t;
}

/* v[i, j] = x[i, :] . a[j, :] for i < R, j < r. */
KN_CLONES static void shrink_rows(float *v, int ldv, const float *x, int K, const float *a,
				  int r, int R)
{
	for (int i = 0; i < R; i++) {
		const float *xi = x + (size_t)i * K;
		float *vi = v + (size_t)i * ldv;
		int j = 0;
		for (; j + 4 <= r; j += 4)
			dot4(vi + j, xi, a + (size_t)j * K, K);
		for (; j < r; j++)
			vi[j] = dot1(xi, a + (size_t)j * K, K);
	}
}

/* y[i, :] += sum_j (scale * v[i, j]) * bt[j, :] for i < R, four Bt rows per pass
 * over y so that y is loaded and stored r/4 times, Bt streamed once per row. */
KN_CLONES static void expand_rows(float *y, int N, const float *v, int ldv, const float *bt,
				  int r, float scale, int R)
{
	for (int i = 0; i < R; i++) {
		float *yi = y + (size_t)i * N;
		const float *vi = v + (size_t)i * ldv;
		int j = 0;
		for (; j + 4 <= r; j += 4) {
			const float *b0 = bt + (size_t)j * N, *b1 = b0 + N, *b2 = b1 + N,
				    *b3 = b2 + N;
			float c0 = scale * vi[j], c1 = scale * vi[j + 1];
			float c2 = scale * vi[j + 2], c3 = scale * vi[j + 3];
			int n = 0;
			for (; n + VL <= N; n += VL) {
				v16 acc = ld(b0 + n) * c0 + ld(b1 + n) * c1;
				acc += ld(b2 + n) * c2 + ld(b3 + n) * c3;
				st(yi + n, ld(yi + n) + acc);
			}
			for (; n < N; n++)
				yi[n] += (b0[n] * c0 + b1[n] * c1) + (b2[n] * c2 + b3[n] * c3);
		}
		for (; j < r; j++) {
			const float *b0 = bt + (size_t)j * N;
			float c0 = scale * vi[j];
			int n = 0;
			for (; n + VL <= N; n += VL)
				st(yi + n, ld(yi + n) + ld(b0 + n) * c0);
			for (; n < N; n++)
				yi[n] += b0[n] * c0;
		}
	}
}

void kn_lora_shrink(float *v, int ldv, const float *x, int d_in, const kn_lora_seg *segs,
		    int n_segs)
{
	assert(d_in > 0 && n_segs >= 0);
	for (int s = 0; s < n_segs; s++) {
		const kn_lora_seg *g = &segs[s];
		if (g->rows <= 0 || g->rank <= 0)
			continue;
		assert(g->a && g->vcol >= 0 && g->vcol + g->rank <= ldv);
		float *vs = v + (size_t)g->row0 * ldv + g->vcol;
		const float *xs = x + (size_t)g->row0 * d_in;
		if (g->rows >= GEMM_ROWS)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->rows, g->rank, d_in,
				    1.0f, xs, d_in, g->a, d_in, 0.0f, vs, ldv);
		else
			shrink_rows(vs, ldv, xs, d_in, g->a, g->rank, g->rows);
	}
}

void kn_lora_expand(float *y, int d_out, const float *v, int ldv, const kn_lora_seg *segs,
		    int n_segs)
{
	assert(d_out > 0 && n_segs >= 0);
	for (int s = 0; s < n_segs; s++) {
		const kn_lora_seg *g = &segs[s];
		if (g->rows <= 0 || g->rank <= 0)
			continue;
		assert(g->bt && g->vcol >= 0 && g->vcol + g->rank <= ldv);
		float *ys = y + (size_t)g->row0 * d_out;
		const float *vs = v + (size_t)g->row0 * ldv + g->vcol;
		if (g->rows >= GEMM_ROWS)
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->rows, d_out,
				    g->rank, g->scale, vs, ldv, g->bt, d_out, 1.0f, ys, d_out);
		else
			expand_rows(ys, d_out, vs, ldv, g->bt, g->rank, g->scale, g->rows);
	}
}
