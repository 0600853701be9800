/*
 * kernels/cpu/lora.c — segmented LoRA shrink (d -> r) and expand (r -> d).
 *
 * Workload: at decode a segment is one row (one sequence), so shrink is a
 * GEMV over A [r, d_in] and expand a GEMV over Bt [r, d_out]; with 32
 * distinct adapters every step streams all their A and Bt from memory once
 * (flops per byte ~0.5), so these loops only have to keep the memory bus
 * busy. Every segment, of any length, goes through the loops below (a
 * prefill segment reuses A/Bt from cache across its rows): OpenBLAS sgemm
 * for long segments was faster for prefill but rounds differently with
 * the segment's row count, which made a sequence's logits depend on which
 * other sequences shared its adapter in the step.
 *
 * The loops use GCC vector extensions of 8 floats (one AVX2 register) and
 * are compiled twice with target_clones (AVX2, baseline SSE2), picked at
 * load time by the CPU: the build has no -march flag, and at -O2 GCC
 * neither vectorises float reductions (no reassociation) nor emits AVX.
 * Measured on the 2-core Zen 4 VM (which exposes AVX2, not AVX-512), 32
 * adapters x 12 layers, interleaved runs: 16-float vectors made GCC 12 keep
 * the accumulators on the stack (shrink 6.3 GB/s vs 8.7 for per-segment
 * cblas_sgemv); 8-float vectors with 2 accumulators per A row (shrink) and
 * 8 Bt rows per pass over y (expand) match or beat sgemv (~11 and ~13 GB/s
 * against sgemv's ~10 and ~12 under the same load). No FMA: the C11 build
 * does not contract, and it made no difference (memory bound). The
 * baseline clone splits each vector in two and is slower; it is only a
 * fallback for CPUs without AVX2.
 *
 * The order of every sum is fixed (lanes, then a fixed tree), so a row
 * gives the same bits whatever else is in the batch, on one machine. Rows
 * of one segment are independent, so a segment's result never depends on
 * the others (batch invariance).
 */
#include "../kernels.h"

#include <assert.h>
#include <string.h>

enum { VL = 8 };

typedef float v8 __attribute__((vector_size(32)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define KN_CLONES
#endif
#define KN_INLINE static inline __attribute__((always_inline))

/* Unaligned 32-byte load and store (macros: passing vectors by value to
 * functions is an ABI change GCC warns about without AVX). */
#define ld(p) (__extension__({ v8 r_; memcpy(&r_, (p), sizeof r_); r_; }))
#define st(p, x) (__extension__({ v8 x_ = (x); memcpy((p), &x_, sizeof x_); }))

KN_INLINE float hsum(const v8 *xp)
{
	const v8 x = *xp;
	float s4[4];
	for (int i = 0; i < 4; i++)
		s4[i] = x[i] + x[i + 4];
	return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

/* v[j] = x . a[j, :] for 4 consecutive rows of a (row stride K); two
 * accumulators per row (16 floats per step). */
KN_INLINE void dot4(float *v, const float *x, const float *a, int K)
{
	const float *a0 = a, *a1 = a + K, *a2 = a + 2 * (size_t)K, *a3 = a + 3 * (size_t)K;
	v8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, u0 = {0}, u1 = {0}, u2 = {0}, u3 = {0};
	int k = 0;
	for (; k + 2 * VL <= K; k += 2 * VL) {
		v8 x0 = ld(x + k), x1 = ld(x + k + VL);
		s0 += x0 * ld(a0 + k);
		u0 += x1 * ld(a0 + k + VL);
		s1 += x0 * ld(a1 + k);
		u1 += x1 * ld(a1 + k + VL);
		s2 += x0 * ld(a2 + k);
		u2 += x1 * ld(a2 + k + VL);
		s3 += x0 * ld(a3 + k);
		u3 += x1 * ld(a3 + k + VL);
	}
	for (; k + VL <= K; k += VL) {
		v8 x0 = ld(x + k);
		s0 += x0 * ld(a0 + k);
		s1 += x0 * ld(a1 + k);
		s2 += x0 * ld(a2 + k);
		s3 += x0 * ld(a3 + k);
	}
	s0 += u0;
	s1 += u1;
	s2 += u2;
	s3 += u3;
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

/* The same sum for one row (same order as each row of dot4). */
KN_INLINE float dot1(const float *x, const float *a, int K)
{
	v8 s = {0}, u = {0};
	int k = 0;
	for (; k + 2 * VL <= K; k += 2 * VL) {
		s += ld(x + k) * ld(a + k);
		u += ld(x + k + VL) * ld(a + k + VL);
	}
	for (; k + VL <= K; k += VL)
		s += ld(x + k) * ld(a + k);
	s += u;
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

/* yi[n] += sum of the m (<= 8) products c[j] * b[j][n], in a fixed tree. */
KN_INLINE void axpy_rows(float *yi, const float *const *b, const float *c, int m, int N)
{
	int n = 0;
	if (m == 8) {
		for (; n + VL <= N; n += VL) {
			v8 p = ld(b[0] + n) * c[0] + ld(b[1] + n) * c[1];
			v8 q = ld(b[2] + n) * c[2] + ld(b[3] + n) * c[3];
			v8 u = ld(b[4] + n) * c[4] + ld(b[5] + n) * c[5];
			v8 w = ld(b[6] + n) * c[6] + ld(b[7] + n) * c[7];
			st(yi + n, ld(yi + n) + ((p + q) + (u + w)));
		}
		for (; n < N; n++)
			yi[n] += ((b[0][n] * c[0] + b[1][n] * c[1]) + (b[2][n] * c[2] + b[3][n] * c[3])) +
				 ((b[4][n] * c[4] + b[5][n] * c[5]) + (b[6][n] * c[6] + b[7][n] * c[7]));
	} else if (m == 4) {
		for (; n + VL <= N; n += VL) {
			v8 p = ld(b[0] + n) * c[0] + ld(b[1] + n) * c[1];
			v8 q = ld(b[2] + n) * c[2] + ld(b[3] + n) * c[3];
			st(yi + n, ld(yi + n) + (p + q));
		}
		for (; n < N; n++)
			yi[n] += (b[0][n] * c[0] + b[1][n] * c[1]) + (b[2][n] * c[2] + b[3][n] * c[3]);
	} else {
		for (; n + VL <= N; n += VL)
			st(yi + n, ld(yi + n) + ld(b[0] + n) * c[0]);
		for (; n < N; n++)
			yi[n] += b[0][n] * c[0];
	}
}

/* y[i, :] += sum_j (scale * v[i, j]) * bt[j, :] for i < R: eight (then four,
 * then one) Bt rows per pass over y, so y is loaded and stored ~r/8 times
 * and each Bt row streamed once per row of y. */
KN_CLONES static void expand_rows(float *y, int N, const float *v, int ldv, const float *bt,
				  int r, float scale, int R)
{
	for (int i = 0; i < R; i++) {
		float *yi = y + (size_t)i * N;
		const float *vi = v + (size_t)i * ldv;
		int j = 0;
		while (j < r) {
			int m = r - j >= 8 ? 8 : r - j >= 4 ? 4 : 1;
			const float *b[8];
			float c[8];
			for (int k = 0; k < m; k++) {
				b[k] = bt + (size_t)(j + k) * N;
				c[k] = scale * vi[j + k];
			}
			axpy_rows(yi, b, c, m, N);
			j += m;
		}
	}
}

/* A pool run over every (segment, row) pair: task t is row t - first[s]
 * of the segment s whose rows hold it (found by a scan: few segments). */
typedef struct lora_job {
	float *out;          /* v (shrink) or y (expand) */
	int ld_out, ld_in;   /* ldv / d_out, and d_in / ldv */
	const float *in;     /* x (shrink) or v (expand) */
	const kn_lora_seg *segs;
	int n_segs, shrink;
} lora_job;

static void lora_task(void *ctx, int t)
{
	const lora_job *j = ctx;
	const kn_lora_seg *g = NULL;
	for (int s = 0; s < j->n_segs && !g; s++) {
		const kn_lora_seg *c = &j->segs[s];
		if (c->rows <= 0 || c->rank <= 0)
			continue;
		if (t < c->rows)
			g = c;
		else
			t -= c->rows;
	}
	assert(g);
	int row = g->row0 + t;
	if (j->shrink)
		shrink_rows(j->out + (size_t)row * j->ld_out + g->vcol, j->ld_out,
			    j->in + (size_t)row * j->ld_in, j->ld_in, g->a, g->rank, 1);
	else
		expand_rows(j->out + (size_t)row * j->ld_out, j->ld_out,
			    j->in + (size_t)row * j->ld_in + g->vcol, j->ld_in, g->bt, g->rank,
			    g->scale, 1);
}

/* Rows of the segments that do work (rows > 0 and rank > 0). */
static int work_rows(const kn_lora_seg *segs, int n_segs)
{
	int n = 0;
	for (int s = 0; s < n_segs; s++)
		if (segs[s].rows > 0 && segs[s].rank > 0)
			n += segs[s].rows;
	return n;
}

void kn_lora_shrink(float *v, int ldv, const float *x, int d_in, const kn_lora_seg *segs,
		    int n_segs, kn_pool *pool)
{
	assert(d_in > 0 && n_segs >= 0);
	for (int s = 0; s < n_segs; s++)
		assert(segs[s].rows <= 0 || segs[s].rank <= 0 ||
		       (segs[s].a && segs[s].vcol >= 0 && segs[s].vcol + segs[s].rank <= ldv));
	lora_job j = {.out = v, .ld_out = ldv, .ld_in = d_in, .in = x, .segs = segs,
		      .n_segs = n_segs, .shrink = 1};
	kn_pool_run(pool, work_rows(segs, n_segs), lora_task, &j);
}

void kn_lora_expand(float *y, int d_out, const float *v, int ldv, const kn_lora_seg *segs,
		    int n_segs, kn_pool *pool)
{
	assert(d_out > 0 && n_segs >= 0);
	for (int s = 0; s < n_segs; s++)
		assert(segs[s].rows <= 0 || segs[s].rank <= 0 ||
		       (segs[s].bt && segs[s].vcol >= 0 && segs[s].vcol + segs[s].rank <= ldv));
	lora_job j = {.out = y, .ld_out = d_out, .ld_in = ldv, .in = v, .segs = segs,
		      .n_segs = n_segs, .shrink = 0};
	kn_pool_run(pool, work_rows(segs, n_segs), lora_task, &j);
}
