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
 * Adapters held as BF16 (a16 / bt16: half the bytes streamed per step)
 * go through the same loops (lora_tmpl.h, included per weight type), each
 * weight widened to float exactly on load.
 *
 * The order of every sum is fixed (lanes, then a fixed tree), so a row
 * gives the same bits whatever else is in the batch, on one machine. Rows
 * of one segment are independent, so a segment's result never depends on
 * the others (batch invariance).
 */
#include "../kernels.h"
#include "vec8.h"
#include "lora_int.h"

#include <assert.h>
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));

KN_INLINE float hsum(const v8 *xp)
{
	const v8 x = *xp;
	float s4[4];
	for (int i = 0; i < 4; i++)
		s4[i] = x[i] + x[i + 4];
	return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));

/* 8 BF16 weights widened to floats (exact: a BF16 is a float's top half). */
#define ldb(p)                                                                              \
	(__extension__({                                                                    \
		u16x8 h_;                                                                   \
		memcpy(&h_, (p), sizeof h_);                                                \
		u32x8 w_ = __builtin_convertvector(h_, u32x8) << 16;                        \
		v8 r_;                                                                      \
		memcpy(&r_, &w_, sizeof r_);                                                \
		r_;                                                                         \
	}))

KN_INLINE float bf16f(uint16_t h)
{
	uint32_t w = (uint32_t)h << 16;
	float f;
	memcpy(&f, &w, sizeof f);
	return f;
}

/* AVX-512: 16-float vectors (32 registers hold dot4's accumulators),
 * chosen at run time (kn_isa_get) where the CPU has it. Its lanes and
 * trees differ from the 8-float loops', so the two round differently; one
 * machine always runs one of them (batch invariance holds within it). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KN_HAVE_512 1
#define KN_T512 __attribute__((target("avx512f")))
#define ld16(p) (__extension__({ v16 r_; memcpy(&r_, (p), sizeof r_); r_; }))
#define st16(p, x) (__extension__({ v16 x_ = (x); memcpy((p), &x_, sizeof x_); }))
/* 16 BF16 weights widened to floats: one vpmovzxwd from memory and a shift
 * (GCC 12 builds __builtin_convertvector of 16 halves from two 8-lane
 * widenings and an insert, which bound these loops on the shuffle port). */
#define ldb16(p) ((v16)_mm512_castsi512_ps(_mm512_slli_epi32(                              \
	_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(p))), 16)))

static inline __attribute__((always_inline)) KN_T512 float hsum16(const v16 *xp)
{
	const v16 x = *xp;
	v8 h;
	for (int i = 0; i < 8; i++)
		h[i] = x[i] + x[i + 8];
	return hsum(&h);
}
#endif

/* the 8-float loops (AVX2 clone, baseline fallback) */
#define VT v8
#define VL 8
#define LDX(p) ld(p)
#define STX(p, x) st(p, x)
#define HSUM(p) hsum(p)
#define MAC(acc, x, w) ((acc) += (x) * (w))
#define FN KN_CLONES
#define HELPER KN_INLINE

#define ELEM float
#define LDV(p) ld(p)
#define LDS(w) (w)
#define LT(name) name
#include "lora_tmpl.h"
#undef ELEM
#undef LDV
#undef LDS
#undef LT

#define ELEM uint16_t
#define LDV(p) ldb(p)
#define LDS(w) bf16f(w)
#define LT(name) name##_bf16
#include "lora_tmpl.h"
#undef ELEM
#undef LDV
#undef LDS
#undef LT

#undef VT
#undef VL
#undef LDX
#undef STX
#undef HSUM
#undef MAC
#undef FN
#undef HELPER

#ifdef KN_HAVE_512
#define VT v16
#define VL 16
#define LDX(p) ld16(p)
#define STX(p, x) st16(p, x)
#define HSUM(p) hsum16(p)
#define MAC(acc, x, w) ((acc) = (v16)_mm512_fmadd_ps((__m512)(x), (__m512)(w), (__m512)(acc)))
#define FN KN_T512
#define HELPER KN_INLINE KN_T512

#define ELEM float
#define LDV(p) ld16(p)
#define LDS(w) (w)
#define LT(name) name##_512
#include "lora_tmpl.h"
#undef ELEM
#undef LDV
#undef LDS
#undef LT

#define ELEM uint16_t
#define LDV(p) ldb16(p)
#define LDS(w) bf16f(w)
#define LT(name) name##_bf16_512
#include "lora_tmpl.h"
#undef ELEM
#undef LDV
#undef LDS
#undef LT
#endif

/* A pool run over every (segment, row) pair: task t is row t - first[s]
 * of the segment s whose rows hold it (found by a scan: few segments). */
typedef struct lora_job {
	float *out;          /* v (shrink) or y (expand) */
	int ld_out, ld_in;   /* ldv / d_out, and d_in / ldv */
	const float *in;     /* x (shrink) or v (expand) */
	const kn_lora_seg *segs;
	int n_segs, shrink;
	int wide;            /* the AVX-512 loops (kn_isa_get) */
} lora_job;

/* Item t: the segment whose rows hold it (found by a scan: few segments)
 * and, in *row, its row in x, v and y. */
static const kn_lora_seg *item(const kn_lora_seg *segs, int n_segs, int t, int *row)
{
	for (int s = 0; s < n_segs; s++) {
		const kn_lora_seg *c = &segs[s];
		if (c->rows <= 0 || c->rank <= 0)
			continue;
		if (t < c->rows) {
			*row = c->row0 + t;
			return c;
		}
		t -= c->rows;
	}
	assert(0);
	return NULL;
}

static void lora_task(void *ctx, int t)
{
	const lora_job *j = ctx;
	int row;
	const kn_lora_seg *g = item(j->segs, j->n_segs, t, &row);
	float *out = j->out + (size_t)row * j->ld_out;
	const float *in = j->in + (size_t)row * j->ld_in;
#ifdef KN_HAVE_512
	if (j->wide) {
		if (j->shrink && g->a16)
			shrink_rows_bf16_512(out + g->vcol, j->ld_out, in, j->ld_in, g->a16, g->rank,
					     1);
		else if (j->shrink)
			shrink_rows_512(out + g->vcol, j->ld_out, in, j->ld_in, g->a, g->rank, 1);
		else if (g->bt16)
			expand_rows_bf16_512(out, j->ld_out, in + g->vcol, j->ld_in, g->bt16, g->rank,
					     g->scale, 1);
		else
			expand_rows_512(out, j->ld_out, in + g->vcol, j->ld_in, g->bt, g->rank,
					g->scale, 1);
		return;
	}
#endif
	if (j->shrink && g->a16)
		shrink_rows_bf16(out + g->vcol, j->ld_out, in, j->ld_in, g->a16, g->rank, 1);
	else if (j->shrink)
		shrink_rows(out + g->vcol, j->ld_out, in, j->ld_in, g->a, g->rank, 1);
	else if (g->bt16)
		expand_rows_bf16(out, j->ld_out, in + g->vcol, j->ld_in, g->bt16, g->rank, g->scale,
				 1);
	else
		expand_rows(out, j->ld_out, in + g->vcol, j->ld_in, g->bt, g->rank, g->scale, 1);
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
		       ((segs[s].a || segs[s].a16) && segs[s].vcol >= 0 &&
			segs[s].vcol + segs[s].rank <= ldv));
	lora_job j = {.out = v, .ld_out = ldv, .ld_in = d_in, .in = x, .segs = segs,
		      .n_segs = n_segs, .shrink = 1, .wide = kn_isa_get() == KN_ISA_AVX512};
	kn_pool_run(pool, work_rows(segs, n_segs), lora_task, &j);
}

void kn_lora_expand(float *y, int d_out, const float *v, int ldv, const kn_lora_seg *segs,
		    int n_segs, kn_pool *pool)
{
	assert(d_out > 0 && n_segs >= 0);
	for (int s = 0; s < n_segs; s++)
		assert(segs[s].rows <= 0 || segs[s].rank <= 0 ||
		       ((segs[s].bt || segs[s].bt16) && segs[s].vcol >= 0 &&
			segs[s].vcol + segs[s].rank <= ldv));
	lora_job j = {.out = y, .ld_out = d_out, .ld_in = ldv, .in = v, .segs = segs,
		      .n_segs = n_segs, .shrink = 0, .wide = kn_isa_get() == KN_ISA_AVX512};
	kn_pool_run(pool, work_rows(segs, n_segs), lora_task, &j);
}

/* ---- item access for kn_gemm_shrink (lora_int.h) ---- */

int kn_lora_items(const kn_lora_seg *segs, int n_segs)
{
	return work_rows(segs, n_segs);
}

void kn_lora_item_a(const kn_lora_seg *segs, int n_segs, int d_in, int i, const void **p,
		    size_t *bytes)
{
	int row;
	const kn_lora_seg *g = item(segs, n_segs, i, &row);
	*p = g->a16 ? (const void *)g->a16 : (const void *)g->a;
	*bytes = (size_t)g->rank * (size_t)d_in * (g->a16 ? 2 : 4);
}

void kn_lora_shrink_items(float *v, int ldv, const float *x, int d_in, const kn_lora_seg *segs,
			  int n_segs, int first, int n)
{
	lora_job j = {.out = v, .ld_out = ldv, .ld_in = d_in, .in = x, .segs = segs,
		      .n_segs = n_segs, .shrink = 1, .wide = kn_isa_get() == KN_ISA_AVX512};
	for (int i = first; i < first + n; i++)
		lora_task(&j, i);
}
