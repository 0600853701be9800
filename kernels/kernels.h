/*
 * kernels/kernels.h — the kn_ op set the LLaMA forward pass is built from.
 *
 * Owns: the numerical ops (GEMM, RMSNorm, RoPE, SiLU*mul, embedding gather,
 * causal GQA attention, residual add) with their shapes and layouts. The CPU
 * implementations declared here live in kernels/cpu/ (C + OpenBLAS, float32
 * compute); a CUDA backend (kernels/cuda/) will implement the same ops over
 * device memory with the same layouts so that one batch plan drives both.
 * Must not: allocate, log, keep state between calls, or change global
 * OpenBLAS settings (the program's main decides the thread count).
 *
 * Conventions: every matrix is row-major and dense; a "row" is one token.
 * Linear weights keep the Hugging Face layout W[out, in], so a linear layer
 * is y[M,N] = x[M,K] . W[N,K]^T. Shapes are trusted (programmer errors are
 * asserts): the forward pass checks its inputs before calling these.
 *
 * The LoRA ops (kn_lora_shrink / kn_lora_expand, KERNELS.md) take the same
 * row layout plus per-segment descriptors (kn_lora_seg), so that
 * y[seg] += scale * (x[seg] . A^T) . Bt, added to the output of kn_gemm.
 */
#ifndef KN_KERNELS_H
#define KN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/*
 * y[M,N] (+)= x[M,K] . w[N,K]^T. accumulate 0: y is overwritten; 1: added
 * to. M == 1 takes the GEMV path (3-4x faster than GEMM with M = 1 in
 * OpenBLAS 0.3.21). y must not alias x or w. OpenBLAS rounds differently
 * with M, so the forward uses kn_gemm_p; this stays as the baseline
 * loom-gemm-bench measures kn_gemm_p against.
 */
void kn_gemm(float *y, const float *x, const float *w, int M, int N, int K, int accumulate);

/*
 * The worker thread pool a step's ops run on (kernels/cpu/pool.c): n_threads
 * threads in all, the caller included (n_threads - 1 are started). Created
 * once per engine; kn_pool_run(p, n, fn, ctx) calls fn(ctx, t) for every t
 * in [0, n) on some thread and returns when all are done (p NULL or one
 * thread: in the caller, in order). Tasks must write disjoint memory; which
 * thread runs a task must not change what it computes. One run at a time
 * per pool. create returns 0, or -1 when threads cannot be started.
 */
typedef struct kn_pool kn_pool;
typedef void (*kn_task_fn)(void *ctx, int task);
int kn_pool_create(int n_threads, kn_pool **out);
void kn_pool_destroy(kn_pool *p);
int kn_pool_threads(const kn_pool *p);
void kn_pool_run(kn_pool *p, int n_tasks, kn_task_fn fn, void *ctx);

/* Weight element types of kn_gemm_w (a model keeps its file's dtype). */
typedef enum kn_wdt { KN_W_F32 = 0, KN_W_BF16 = 1, KN_W_F16 = 2 } kn_wdt;

/* The instruction-set paths of the fixed-order kernels, chosen at run time
 * (process-wide; the one global setting of this module). kn_isa_set forces
 * a path the CPU supports (tests, benchmarks): 0, or -1 if it does not. */
typedef enum kn_isa { KN_ISA_PORTABLE = 0, KN_ISA_AVX2 = 1, KN_ISA_AVX512 = 2 } kn_isa;
kn_isa kn_isa_detect(void);
kn_isa kn_isa_get(void);
int kn_isa_set(kn_isa isa);
const char *kn_isa_name(kn_isa isa);

/*
 * Packed weights for kn_gemm_p: W[N,K] in panels of 16 output columns, each
 * k-major (16 values per k), the last panel zero-padded; kn_pack_bytes
 * bytes. kn_pack converts src (type src_dt, row-major [N,K]) into dst of
 * type dt: the same type is copied, F32 -> BF16 or F16 rounds to nearest
 * even (exact for values that came from that type), BF16/F16 -> F32
 * widens; BF16 <-> F16 is refused (-1).
 * kn_pack_get reads element (n, k) back as float.
 */
size_t kn_pack_bytes(kn_wdt dt, int N, int K);
int kn_pack(void *dst, kn_wdt dt, const void *src, kn_wdt src_dt, int N, int K);
float kn_pack_get(const void *wp, kn_wdt dt, int K, int n, int k);

/*
 * y[M,N] (+)= x[M,K] . W[N,K]^T with W packed (kn_pack) of type dt, widened
 * to float32, float32 accumulation, split over pool's threads by column
 * panels. Each y[m,n] is the sequential fused multiply-add sum over k = 0..
 * K-1: bit-identical whatever M, the other rows, the thread count and the
 * ISA path (batch invariance). With accumulate, y[m,n] += that sum. y must
 * not alias x or W.
 */
void kn_gemm_p(float *y, const float *x, const void *wp, kn_wdt dt, int M, int N, int K,
	       int accumulate, kn_pool *pool);


/* y[rows,d] = x / sqrt(mean(x^2) + eps) * w[d], the mean of squares
 * accumulated in double. y may equal x. */
void kn_rmsnorm(float *y, const float *x, const float *w, int rows, int d, float eps);

/*
 * RoPE tables for HF's rotary embeddings: for row t and i < half (=
 * head_dim/2), angle = pos[t] * inv_freq[i]; cos_t/sin_t are [rows, half],
 * cos(angle) * mscale and sin(angle) * mscale (mscale: YaRN's attention
 * factor, else 1). Computed in double, stored as float. inv_freq comes from
 * the model's RoPE schedule (loom_rope_freqs).
 */
void kn_rope_table(float *cos_t, float *sin_t, const int32_t *pos, int rows, int half,
		   const double *inv_freq, double mscale);

/*
 * Rotates x[rows, n_heads*head_dim] in place, rotate-half convention: for
 * each head, x[i] pairs with x[i + head_dim/2]:
 *   x'[i]        = x[i]*cos[i] - x[i+h/2]*sin[i]
 *   x'[i + h/2]  = x[i+h/2]*cos[i] + x[i]*sin[i]
 * cos_t/sin_t from kn_rope_table for the same rows.
 */
void kn_rope_apply(float *x, int rows, int n_heads, int head_dim, const float *cos_t,
		   const float *sin_t);

/* gate[i] = silu(gate[i]) * up[i] for i < n (in place in gate). */
void kn_silu_mul(float *gate, const float *up, size_t n);

/* gate[i] = gelu(gate[i]) * up[i]: tanh approximation (HF's
 * gelu_pytorch_tanh: 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))) when
 * tanh_approx, else exact (0.5 g (1 + erf(g / sqrt 2))). */
void kn_gelu_mul(float *gate, const float *up, size_t n, int tanh_approx);

/* y[r, i] += b[i] for r < rows, i < n (a linear layer's bias). */
void kn_add_bias(float *y, const float *b, int rows, int n);

/* x[i] = cap * tanh(x[i] / cap) for i < n (logit soft-capping). */
void kn_softcap(float *x, size_t n, float cap);

/* x[i] *= s for i < n. */
void kn_scale(float *x, size_t n, float s);

/* out[n,d] = table[ids[i], :]. ids are trusted to be in range. */
void kn_embed(float *out, const float *table, const int32_t *ids, int n, int d);

/* y[i] += x[i] for i < n. */
void kn_add(float *y, const float *x, size_t n);

/*
 * Causal GQA attention of one sequence against its contiguous KV cache.
 *   q:   [n_q, n_heads*head_dim], the queries at positions pos0 .. pos0+n_q-1
 *   k,v: [>= pos0+n_q, n_kv_heads*head_dim] rows of the cache (row = position),
 *        already holding the keys/values of these n_q tokens
 *   out: [n_q, n_heads*head_dim]
 * Query head j uses kv head j / (n_heads / n_kv_heads); query at position p
 * sees keys 0..p, or p-window+1..p when window > 0 (sliding window); scores
 * scaled by `scale`, then soft-capped to softcap*tanh(s/softcap) when
 * softcap > 0, softmax (online, by tiles of 16 positions), all in float.
 */
void kn_attention(float *out, const float *q, int n_q, int pos0, const float *k,
		  const float *v, int n_heads, int n_kv_heads, int head_dim, float scale,
		  int window, float softcap);

/*
 * kn_attention over a paged KV cache (worker/kv.h): the key row of position
 * p is k + blocks[p / block_size] * block_stride + (p % block_size) * kvdim
 * (kvdim = n_kv_heads*head_dim), likewise v. blocks must cover the positions
 * read (pos0+n_q-window .. pos0+n_q-1 with a window, else from 0). Same arithmetic in the same order as kn_attention, so
 * both give bit-identical outputs for the same cache contents.
 */
void kn_attention_paged(float *out, const float *q, int n_q, int pos0, const float *k,
			const float *v, const int32_t *blocks, int block_size,
			size_t block_stride, int n_heads, int n_kv_heads, int head_dim,
			float scale, int window, float softcap);

/* kn_attention_paged for the query heads [h0, h1) only (the rest of out is
 * not written): the same arithmetic per head, so heads may be split over
 * threads (the forward gives a task one KV head's group, which shares its
 * key/value reads). */
void kn_attention_paged_heads(float *out, const float *q, int n_q, int pos0, const float *k,
			      const float *v, const int32_t *blocks, int block_size,
			      size_t block_stride, int n_heads, int n_kv_heads, int head_dim,
			      float scale, int window, float softcap, int h0, int h1);
/* kn_attention_paged_heads over K/V held as BF16 (uint16_t, the top half
 * of a float; block_stride in elements): the bits kn_attention_paged_heads
 * gives for float32 K/V holding the same values. */
void kn_attention_paged_heads_bf16(float *out, const float *q, int n_q, int pos0,
				   const uint16_t *k, const uint16_t *v, const int32_t *blocks,
				   int block_size, size_t block_stride, int n_heads,
				   int n_kv_heads, int head_dim, float scale, int window,
				   float softcap, int h0, int h1);

/*
 * LoRA over segments (KERNELS.md; Punica's SGMV, rank-exact, no padding).
 * A segment is a run of consecutive rows that share one adapter; one
 * kn_lora_seg describes one (fused) module of one segment. The forward
 * translates its adapters into these, so kernels know no adapter type.
 * Rows and ranks may be 0 (nothing done). Offsets are computed in size_t.
 */
typedef struct kn_lora_seg {
	int row0;        /* first row of the segment in x, v and y */
	int rows;        /* rows in the segment */
	int rank;        /* r of this module (or r_q+r_k+r_v for a packed A) */
	int vcol;        /* first column of v holding this module's slice */
	float scale;     /* expand only: alpha/r (or alpha/sqrt(r)) */
	const float *a;  /* shrink: A [rank, d_in], PEFT's lora_A rows */
	const float *bt; /* expand: B transposed, [rank, d_out] */
	const uint16_t *a16, *bt16; /* the same held as BF16 (then a / bt unused):
				     * the bits of a float32 A / Bt of those values */
} kn_lora_seg;

/*
 * Shrink (d_in -> r): for each segment s and row i < s.rows,
 *   v[s.row0+i, s.vcol+j] = sum_k x[s.row0+i, k] * s.a[j, k]   (j < s.rank)
 * x: [rows, d_in]; v: [rows, ldv]. Only those columns of v are written (the
 * rest keep their values), so several segments may cover the same rows at
 * different vcol (q, k, v of one adapter). Each row is its own fixed-order
 * dot products (a row's result does not depend on the segment's length);
 * rows are split over pool (NULL: the caller alone).
 */
void kn_lora_shrink(float *v, int ldv, const float *x, int d_in, const kn_lora_seg *segs,
		    int n_segs, kn_pool *pool);

/*
 * Expand (r -> d_out), accumulating: for each segment s and row i,
 *   y[s.row0+i, n] += s.scale * sum_j v[s.row0+i, s.vcol+j] * s.bt[j, n]
 * y: [rows, d_out], added to (the output of kn_gemm); v as in shrink.
 * Segments must not overlap in rows (each y row belongs to one segment).
 */
void kn_lora_expand(float *y, int d_out, const float *v, int ldv, const kn_lora_seg *segs,
		    int n_segs, kn_pool *pool);

/*
 * The expands of a group's outputs (q, k, v) in one pool run, as
 * kn_lora_expand of each: the items (rows of each output's segments) run
 * in chunks, each item requesting the next one's first Bt rows while it
 * computes, so the short Bt streams of many adapters follow each other
 * without a cold start each. Every output has the bits of kn_lora_expand.
 */
#define KN_LORA_OUTS_MAX 3
typedef struct kn_lora_out {
	float *y;                /* [rows, d_out] */
	int d_out;
	const kn_lora_seg *segs; /* this output's expand segments */
	int n_segs;
} kn_lora_out;
void kn_lora_expand_n(const kn_lora_out *outs, int n_outs, const float *v, int ldv,
		      kn_pool *pool);

/*
 * kn_gemm_p of each ops[i] (up to KN_FUSED_MAX, e.g. q, k and v) and
 * kn_lora_shrink(v, ldv, x, d_in, segs, n_segs) of the LoRA group that
 * reads the same input, in one pool run: each GEMM task requests its share
 * of the shrink's A matrices into its core's L2 while it computes (the
 * GEMM is compute-bound at batch sizes, the shrink memory-bound), then
 * computes those shrink rows. Every output has the bits the two separate
 * calls give.
 */
#define KN_FUSED_MAX 3
typedef struct kn_gemm_op {
	float *y;
	const float *x;
	const void *wp;
	kn_wdt dt;
	int M, N, K, accumulate;
} kn_gemm_op;
void kn_gemm_shrink(const kn_gemm_op *ops, int n_ops, float *v, int ldv, const float *x,
		    int d_in, const kn_lora_seg *segs, int n_segs, kn_pool *pool);

#endif
