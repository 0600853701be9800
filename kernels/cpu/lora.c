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

/* Lines to request while a loop runs: from p (a line boundary) to end,
 * `per` lines per step, so the requests spread over the loop; into L2
 * (prefetcht1): a 32-adapter q/k/v expand from memory took 113 us against
 * 128 us with prefetcht0 (2 threads, Intel VM, bench as in the README). */
typedef struct kn_pf {
	const char *p, *end;
	int per;
} kn_pf;

KN_INLINE kn_pf kn_pf_make(const void *p, size_t bytes, int steps)
{
	kn_pf f = {NULL, NULL, 0};
	if (!p || bytes == 0 || steps <= 0)
		return f;
	f.p = (const char *)((uintptr_t)p & ~(uintptr_t)63);
	f.end = (const char *)p + bytes;
	size_t lines = (size_t)(f.end - f.p + 63) / 64;
	f.per = (int)((lines + (size_t)steps - 1) / (size_t)steps);
	return f;
}

#define KN_PF_STEP(f)                                                                       \
	do {                                                                                \
		for (int q_ = 0; q_ < (f).per && (f).p < (f).end; q_++, (f).p += 64)        \
			__builtin_prefetch((f).p, 0, 2);                                    \
	} while (0)


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

/* Item t of segs (a row of a segment that does work): the segment whose
 * rows hold it (found by a scan: few segments) and, in *row, its row in
 * x, v and y. */
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

/* Rows of the segments that do work (rows > 0 and rank > 0). */
static int work_rows(const kn_lora_seg *segs, int n_segs)
{
	int n = 0;
	for (int s = 0; s < n_segs; s++)
		if (segs[s].rows > 0 && segs[s].rank > 0)
			n += segs[s].rows;
	return n;
}

/* ---- shrink: a pool run over every (segment, row) pair ---- */

typedef struct shrink_job {
	float *v;
	int ldv, d_in;
	const float *x;
	const kn_lora_seg *segs;
	int n_segs;
	int wide;            /* the AVX-512 loops (kn_isa_get) */
} shrink_job;

static void shrink_task(void *ctx, int t)
{
	const shrink_job *j = ctx;
	int row;
	const kn_lora_seg *g = item(j->segs, j->n_segs, t, &row);
	float *out = j->v + (size_t)row * j->ldv + g->vcol;
	const float *in = j->x + (size_t)row * j->d_in;
#ifdef KN_HAVE_512
	if (j->wide) {
		if (g->a16)
			shrink_rows_bf16_512(out, j->ldv, in, j->d_in, g->a16, g->rank, 1);
		else
			shrink_rows_512(out, j->ldv, in, j->d_in, g->a, g->rank, 1);
		return;
	}
#endif
	if (g->a16)
		shrink_rows_bf16(out, j->ldv, in, j->d_in, g->a16, g->rank, 1);
	else
		shrink_rows(out, j->ldv, in, j->d_in, g->a, g->rank, 1);
}

void kn_lora_shrink(float *v, int ldv, const float *x, int d_in, const kn_lora_seg *segs,
		    int n_segs, kn_pool *pool)
{
	assert(d_in > 0 && n_segs >= 0);
	for (int s = 0; s < n_segs; s++)
		assert(segs[s].rows <= 0 || segs[s].rank <= 0 ||
		       ((segs[s].a || segs[s].a16) && segs[s].vcol >= 0 &&
			segs[s].vcol + segs[s].rank <= ldv));
	shrink_job j = {.v = v, .ldv = ldv, .d_in = d_in, .x = x, .segs = segs,
			.n_segs = n_segs, .wide = kn_isa_get() == KN_ISA_AVX512};
	kn_pool_run(pool, work_rows(segs, n_segs), shrink_task, &j);
}

/* ---- expand: chunks of items, each item requesting the next one's rows ---- */

typedef struct expand_job {
	const kn_lora_out *outs;
	int n_outs;
	int first[KN_LORA_OUTS_MAX + 1]; /* first item of each output; first[n_outs] = all */
	const float *v;
	int ldv, chunk;
	int wide;
} expand_job;

/* Item i of the job: output *k, segment (returned), row *row. */
static const kn_lora_seg *expand_item(const expand_job *j, int i, int *k, int *row)
{
	int o = 0;
	while (i >= j->first[o + 1])
		o++;
	*k = o;
	return item(j->outs[o].segs, j->outs[o].n_segs, i - j->first[o], row);
}

static void expand_one(const expand_job *j, const kn_lora_out *o, const kn_lora_seg *g, int row,
		       const void *then, size_t tb)
{
	float *y = o->y + (size_t)row * o->d_out;
	const float *vi = j->v + (size_t)row * j->ldv + g->vcol;
#ifdef KN_HAVE_512
	if (j->wide) {
		if (g->bt16)
			expand_rows_bf16_512(y, o->d_out, vi, j->ldv, g->bt16, g->rank, g->scale, 1,
					     then, tb);
		else
			expand_rows_512(y, o->d_out, vi, j->ldv, g->bt, g->rank, g->scale, 1, then,
					tb);
		return;
	}
#endif
	if (g->bt16)
		expand_rows_bf16(y, o->d_out, vi, j->ldv, g->bt16, g->rank, g->scale, 1, then, tb);
	else
		expand_rows(y, o->d_out, vi, j->ldv, g->bt, g->rank, g->scale, 1, then, tb);
}

static void expand_task(void *ctx, int t)
{
	const expand_job *j = ctx;
	int n = j->first[j->n_outs];
	int i0 = t * j->chunk, i1 = i0 + j->chunk < n ? i0 + j->chunk : n;
	int k, row, nk = 0, nrow = 0;
	const kn_lora_seg *g = expand_item(j, i0, &k, &row), *ng = NULL;
	for (int i = i0; i < i1; i++, g = ng, k = nk, row = nrow) {
		const void *then = NULL;
		size_t tb = 0;
		if (i + 1 < i1) {
			/* the next item's first pass (8 Bt rows) comes in during this one's last */
			ng = expand_item(j, i + 1, &nk, &nrow);
			int pr = ng->rank < 8 ? ng->rank : 8;
			size_t es = ng->bt16 ? sizeof(uint16_t) : sizeof(float);
			then = ng->bt16 ? (const void *)ng->bt16 : (const void *)ng->bt;
			tb = (size_t)pr * (size_t)j->outs[nk].d_out * es;
		}
		expand_one(j, &j->outs[k], g, row, then, tb);
	}
}

void kn_lora_expand_n(const kn_lora_out *outs, int n_outs, const float *v, int ldv,
		      kn_pool *pool)
{
	assert(n_outs >= 0 && n_outs <= KN_LORA_OUTS_MAX);
	expand_job j = {.outs = outs, .n_outs = n_outs, .v = v, .ldv = ldv,
			.wide = kn_isa_get() == KN_ISA_AVX512};
	for (int o = 0; o < n_outs; o++) {
		assert(outs[o].d_out > 0 && outs[o].n_segs >= 0);
		for (int s = 0; s < outs[o].n_segs; s++) {
			const kn_lora_seg *g = &outs[o].segs[s];
			assert(g->rows <= 0 || g->rank <= 0 ||
			       ((g->bt || g->bt16) && g->vcol >= 0 && g->vcol + g->rank <= ldv));
			(void)g;
		}
		j.first[o + 1] = j.first[o] + work_rows(outs[o].segs, outs[o].n_segs);
	}
	int n = j.first[n_outs];
	if (n == 0)
		return;
	/* a few chunks per thread: each chunk's items stream back to back,
	 * and a thread that finishes early takes another chunk */
	int threads = pool ? kn_pool_threads(pool) : 1, chunks = threads * 4;
	j.chunk = (n + chunks - 1) / chunks;
	kn_pool_run(pool, (n + j.chunk - 1) / j.chunk, expand_task, &j);
}

void kn_lora_expand(float *y, int d_out, const float *v, int ldv, const kn_lora_seg *segs,
		    int n_segs, kn_pool *pool)
{
	kn_lora_out o = {.y = y, .d_out = d_out, .segs = segs, .n_segs = n_segs};
	kn_lora_expand_n(&o, 1, v, ldv, pool);
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
	shrink_job j = {.v = v, .ldv = ldv, .d_in = d_in, .x = x, .segs = segs,
			.n_segs = n_segs, .wide = kn_isa_get() == KN_ISA_AVX512};
	for (int i = first; i < first + n; i++)
		shrink_task(&j, i);
}
