/*
 * kernels/cuda/kn_cuda.h — the CUDA backend's C entry points (the one header).
 *
 * Owns: device discovery; a context (device, compute stream, copy stream,
 * cuBLAS handle and its workspace); device memory arenas (one cudaMalloc per
 * lifetime class: base weights, KV pool, adapter pool, scratch; nothing is
 * allocated on the device while serving); pinned host staging; events; and
 * the device ops of the forward pass: cuBLAS GEMM, segmented LoRA
 * shrink/expand (SGMV), paged attention (decode and prefill, sliding window,
 * soft-capped scores), KV writes, RMSNorm (rows and per head), RoPE from
 * host-computed frequencies, SiLU*mul and GELU*mul, bias add, embedding
 * gather, residual add, scale, soft-cap, casts, sampling.
 * Built only when nvcc is found (LOOM_CUDA).
 * Must not: exit, print, or allocate device memory outside the arena and
 * context constructors. Every launcher takes a stream (a cudaStream_t passed
 * as void *, NULL = the legacy default stream), checks its arguments and the
 * launch, and returns loom_err with the CUDA error text in loom_errmsg().
 * A launch error is reported at the launch; a fault inside a kernel shows up
 * at the next synchronizing call (kn_cuda_stream_sync, kn_cuda_memcpy).
 * Callers: the worker's CUDA forward, tests/gpu, bench/gpu.
 *
 * Conventions (the same as kernels/kernels.h): matrices are row-major, a row
 * is one token, linear weights keep the HF layout W[out, in], and every
 * matrix argument has a leading dimension ld (elements between rows) so that
 * ops can read and write column slices of fused buffers (q|k|v, gate|up).
 * Offsets are computed in 64 bits. Pointers given as "device" must point into
 * device memory (arena), "host" into host memory; pinned host memory works
 * wherever host memory is accepted.
 *
 * Supported dtypes (kn_cuda_dtype): activations, weights, KV cache and logits
 * in BF16 or F16 (F32 accepted where listed), accumulation always in F32.
 * LoRA ranks: any r >= 1 per module slice, total rank of a fused group <=
 * KN_CUDA_LORA_MAX_RSTRIDE, d_in <= KN_CUDA_LORA_MAX_DIN. Attention head_dim
 * <= 256, any block size >= 1, query heads per KV head <= 64.
 */
#ifndef KN_CUDA_H
#define KN_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- dtypes ---- */

typedef enum kn_cuda_dtype {
	KN_CUDA_F32 = 0,
	KN_CUDA_BF16,
	KN_CUDA_F16,
	KN_CUDA_DTYPE_COUNT
} kn_cuda_dtype;

/* Bytes per element (0 for an unknown dtype) and a static name ("bf16"). */
size_t kn_cuda_dtype_size(kn_cuda_dtype dt);
const char *kn_cuda_dtype_name(kn_cuda_dtype dt);

/* ---- devices ---- */

typedef struct kn_cuda_device {
	char name[256];
	int sm_major, sm_minor;
	size_t mem_total;
	int sm_count;        /* streaming multiprocessors */
	size_t smem_optin;   /* max dynamic shared memory per block after opt-in */
} kn_cuda_device;

/* Number of usable devices in *n. No driver / no device: *n = 0 and
 * LOOM_OK (the reason is kept in loom_errmsg()). */
loom_err kn_cuda_device_count(int *n);
loom_err kn_cuda_device_info(int i, kn_cuda_device *out);

/* ---- context: one per device per worker ---- */

typedef struct kn_cuda_ctx kn_cuda_ctx;

/* Makes device `device` current on the calling thread and creates a
 * non-blocking compute stream, a non-blocking copy stream (adapter and
 * model loads run there and overlap compute) and a cuBLAS handle whose
 * workspace (cublas_workspace bytes, 0 = 32 MiB) is allocated here, once.
 * *out is owned by the caller (kn_cuda_ctx_destroy). The context is used by
 * one thread at a time. */
loom_err kn_cuda_ctx_create(int device, size_t cublas_workspace, kn_cuda_ctx **out);
void kn_cuda_ctx_destroy(kn_cuda_ctx *c);
void *kn_cuda_ctx_stream(const kn_cuda_ctx *c);      /* compute stream */
void *kn_cuda_ctx_copy_stream(const kn_cuda_ctx *c); /* copy stream */
int kn_cuda_ctx_sm_count(const kn_cuda_ctx *c);
/* Waits for both streams (tests, shutdown; never inside a step). */
loom_err kn_cuda_ctx_sync(kn_cuda_ctx *c);

/* ---- arenas: one device allocation per lifetime class ---- */

typedef struct kn_cuda_arena kn_cuda_arena;

/* One cudaMalloc of `bytes` on the current device; name ("weights", "kv",
 * "adapters", "scratch") is copied and used in messages. */
loom_err kn_cuda_arena_create(const char *name, size_t bytes, kn_cuda_arena **out);
void kn_cuda_arena_destroy(kn_cuda_arena *a);
/* Bump allocation, 256-byte aligned, never calls cudaMalloc. LOOM_ENOMEM
 * (naming the arena, the request and what is left) when it does not fit;
 * *out = NULL then. bytes = 0 gives a valid, distinct-or-not pointer. */
loom_err kn_cuda_arena_alloc(kn_cuda_arena *a, size_t bytes, void **out);
/* mark/reset: scratch is reused per step by resetting to a mark; pointers
 * handed out after the mark become invalid. */
size_t kn_cuda_arena_mark(const kn_cuda_arena *a);
void kn_cuda_arena_reset(kn_cuda_arena *a, size_t mark);
size_t kn_cuda_arena_used(const kn_cuda_arena *a);
size_t kn_cuda_arena_capacity(const kn_cuda_arena *a);

/* Fixed-size pages carved from an arena (the adapter pool: adapters come
 * and go, pages keep fragmentation bounded). Not thread-safe. */
typedef struct kn_cuda_pages kn_cuda_pages;

/* Takes n_pages * page_bytes (page_bytes rounded up to 256) from arena a
 * (which must outlive the pager). */
loom_err kn_cuda_pages_create(kn_cuda_arena *a, size_t page_bytes, int n_pages,
			      kn_cuda_pages **out);
void kn_cuda_pages_destroy(kn_cuda_pages *p);
/* n contiguous pages (first fit): *first is the first page's index and *ptr
 * its device address. LOOM_EBUSY when no run of n free pages exists (the
 * caller evicts and retries), LOOM_EINVAL for n < 1. */
loom_err kn_cuda_pages_alloc(kn_cuda_pages *p, int n, int *first, void **ptr);
/* Returns pages first .. first+n-1 (must have come from one alloc). */
void kn_cuda_pages_free(kn_cuda_pages *p, int first, int n);
int kn_cuda_pages_free_count(const kn_cuda_pages *p);
size_t kn_cuda_pages_page_bytes(const kn_cuda_pages *p);

/* ---- pinned host memory, copies, events ---- */

/* Page-locked host memory (staging for async copies). Freed with
 * kn_cuda_host_free. Allocate at start-up: cudaHostAlloc synchronizes. */
loom_err kn_cuda_host_alloc(size_t bytes, void **out);
void kn_cuda_host_free(void *p);

/* Async copy in any direction (unified addressing); host memory must be
 * pinned for the copy to be asynchronous, and must stay untouched until the
 * copy is known complete (an event). */
loom_err kn_cuda_memcpy_async(void *dst, const void *src, size_t bytes, void *stream);
loom_err kn_cuda_memset_async(void *dst, int byte, size_t bytes, void *stream);
/* Synchronous copy (set-up and tests only: it waits for the device). */
loom_err kn_cuda_memcpy(void *dst, const void *src, size_t bytes);
loom_err kn_cuda_stream_sync(void *stream);

typedef struct kn_cuda_event kn_cuda_event;

/* timing = 1 allows kn_cuda_event_elapsed (benchmarks); 0 is cheaper. */
loom_err kn_cuda_event_create(int timing, kn_cuda_event **out);
void kn_cuda_event_destroy(kn_cuda_event *e);
loom_err kn_cuda_event_record(kn_cuda_event *e, void *stream);
/* Work queued on stream after this call waits for e (no host wait). */
loom_err kn_cuda_stream_wait(void *stream, kn_cuda_event *e);
/* *done = 1 when everything before the record has completed. */
loom_err kn_cuda_event_query(kn_cuda_event *e, int *done);
loom_err kn_cuda_event_sync(kn_cuda_event *e);
/* Milliseconds between two recorded timing events. */
loom_err kn_cuda_event_elapsed(kn_cuda_event *start, kn_cuda_event *end, float *ms);

/* ---- GEMM (cuBLAS) ---- */

/*
 * y[M,N] = alpha * x[M,K] . w[N,K]^T + beta * y, row-major with leading
 * dimensions ldy >= N, ldx >= K, ldw >= K (elements). x and w: both BF16,
 * both F16 or both F32; y: the same dtype or F32. Accumulates in F32
 * (cublasGemmEx, CUBLAS_COMPUTE_32F). beta = 1 with an F32 y adds into a
 * residual stream. Runs on `stream` with c's handle and workspace.
 */
loom_err kn_cuda_gemm(kn_cuda_ctx *c, void *y, kn_cuda_dtype ydt, int ldy, const void *x,
		      kn_cuda_dtype xdt, int ldx, const void *w, kn_cuda_dtype wdt, int ldw,
		      int M, int N, int K, float alpha, float beta, void *stream);

/* ---- segmented LoRA (SGMV): KERNELS.md sections 1-4 ---- */

#define KN_CUDA_LORA_SLICES 3          /* q,k,v (or gate,up) share one shrink */
#define KN_CUDA_LORA_MAX_RSTRIDE 512   /* columns of v: total rank of a group */
#define KN_CUDA_LORA_MAX_DIN 32768     /* d_in of a shrink */
#define KN_CUDA_LORA_CHUNK 8           /* rows per chunk (one CTA) */
#define KN_CUDA_LORA_MAX_KSPLIT 16

/*
 * One adapter's weights for one layer of one module group (e.g. q,k,v).
 * Lives in a device table, rewritten only on adapter load/evict: entry
 * (slot, layer) is table[slot * n_layers + layer]. Slices s < n_slices of
 * the group: A rows of slice s follow those of slices before it in `a`
 * (PEFT lora_A rows, packed [A_q; A_k; A_v]); bt[s] is B_s transposed.
 * rank[s] = 0 (or a/bt NULL) means slice s of this layer is not adapted.
 * 16-byte aligned pointers and dims divisible by 8 take the vector path;
 * anything else takes a scalar path (still correct).
 */
typedef struct kn_cuda_lora_desc {
	const void *a;                        /* [sum rank[s], d_in] */
	const void *bt[KN_CUDA_LORA_SLICES];  /* [rank[s], n_out[s]] */
	int32_t rank[KN_CUDA_LORA_SLICES];
	float scale[KN_CUDA_LORA_SLICES];     /* alpha/r (or alpha/sqrt(r)), fp32 */
} kn_cuda_lora_desc;

/* A module group as launched: its table and the model's shape. */
typedef struct kn_cuda_lora_group {
	const kn_cuda_lora_desc *table;       /* device, [n_slots * n_layers] */
	int n_slots, n_layers;
	int d_in;                             /* width of x */
	int n_slices;                         /* 1..KN_CUDA_LORA_SLICES */
	int n_out[KN_CUDA_LORA_SLICES];       /* output width of each slice */
	kn_cuda_dtype dt;                     /* of x, A and Bt: BF16 or F16 */
} kn_cuda_lora_group;

/*
 * Per-iteration metadata, packed on the host into pinned staging and
 * copied once per step to a fixed device buffer (one cudaMemcpyAsync).
 * Segments: rows seg_start[i] .. seg_start[i+1]-1 use adapter slot
 * seg_slot[i] (-1 = base model only: those rows are left untouched).
 * Segments must be in increasing row order and must not overlap; empty
 * segments are allowed. Chunks (<= KN_CUDA_LORA_CHUNK rows of one
 * segment) are computed here. Layout: int32 header {n_tokens, n_segments,
 * n_chunks, 0...} (8 words), seg_slot[S], chunk_seg[C], chunk_row0[C],
 * chunk_len[C].
 */
size_t kn_cuda_lora_meta_bytes(int max_rows, int max_segments);
loom_err kn_cuda_lora_meta_pack(void *host, size_t cap, const int32_t *seg_start,
				const int32_t *seg_slot, int n_segments, int *n_chunks);

/* Split of d_in for a shrink of n_chunks chunks on sm_count SMs: the
 * smallest count whose slices fit a CTA (<= 2048 columns), raised toward
 * 2-4x the SM count while slices stay >= 1024 columns. */
int kn_cuda_lora_ksplit(int d_in, int n_chunks, int sm_count);
/* Bytes of the fp32 v buffer: [ksplit][rows][r_stride]. */
size_t kn_cuda_lora_v_bytes(int rows, int r_stride, int ksplit);

/*
 * Shrink: for each chunk of a segment with slot s (desc = table entry for
 * (s, layer)), R = sum of its ranks, and each split ks,
 *   v[ks][row][j] = sum over k in split ks of x[row, k] * a[j, k]   (j < R)
 * in F32. Writes columns j < R of the rows of adapted segments only; a
 * segment whose R > r_stride is skipped (never written out of bounds).
 * The splits are summed (in a fixed order: deterministic, batch-invariant)
 * by kn_cuda_lora_expand. grid_chunks >= the packed n_chunks (a capture
 * bucket for CUDA graphs; CTAs beyond the device-side count exit).
 *   x:    device [rows, ldx] of g->dt;   v: device, kn_cuda_lora_v_bytes
 *   meta: device copy of kn_cuda_lora_meta_pack's bytes
 */
loom_err kn_cuda_lora_shrink(float *v, int v_rows, int r_stride, int ksplit, const void *x,
			     int ldx, const kn_cuda_lora_group *g, int layer, const void *meta,
			     int grid_chunks, void *stream);

/*
 * Expand: for each row of an adapted segment and each slice s with rank
 * r_s > 0, over that slice's output columns [off_s, off_s + n_out[s]) of y
 * (off_s = n_out of the slices before it),
 *   y[row, off_s + n] = round(y + scale_s * sum_k vsum[row][vcol_s + k] * bt_s[k, n])
 * where vsum sums the ksplit partials and vcol_s = ranks before s. One
 * read-modify-write per element, no atomics. y: device [rows, ldy] of ydt
 * (g->dt or F32). Rows of base segments and unadapted slices untouched.
 */
loom_err kn_cuda_lora_expand(void *y, kn_cuda_dtype ydt, int ldy, const float *v, int v_rows,
			     int r_stride, int ksplit, const kn_cuda_lora_group *g, int layer,
			     const void *meta, int grid_chunks, void *stream);

/* ---- paged KV cache and attention: KERNELS.md section 6 ---- */

/*
 * Device KV pool, the layout of worker/kv.h in BF16/F16:
 *   k[block][layer][slot][n_kv_heads * head_dim], v likewise.
 * Position p of a sequence lives in block table[p / block_size] at slot
 * p % block_size. Offsets in 64 bits.
 */
typedef struct kn_cuda_kv {
	void *k, *v;            /* device */
	kn_cuda_dtype dt;       /* BF16 or F16 */
	int n_blocks, n_layers, block_size, n_kv_heads, head_dim;
} kn_cuda_kv;

/* Bytes of k (and again of v) for the pool shape in kv. */
size_t kn_cuda_kv_bytes(const kn_cuda_kv *kv);

/*
 * A batch of sequences for one step (mixed prefill chunks and decodes):
 * sequence i owns query rows cu_q[i] .. cu_q[i+1]-1; its KV length after
 * this step is ctx_len[i] (>= its query count), so its query row j sits at
 * position ctx_len[i] - q_len + j and sees keys 0 .. that position.
 * Block table of sequence i: block_tables[i * bt_stride + b].
 * max_q_len / max_ctx_len are host-side bounds used to size grids.
 */
typedef struct kn_cuda_attn_batch {
	int n_seqs, n_tokens;
	int max_q_len, max_ctx_len;
	const int32_t *cu_q;         /* device [n_seqs + 1], cu_q[0] = 0 */
	const int32_t *ctx_len;      /* device [n_seqs] */
	const int32_t *block_tables; /* device [n_seqs * bt_stride] */
	int bt_stride;
} kn_cuda_attn_batch;

/* Writes this step's K and V rows (device [n_tokens, ld] of dt, head-major
 * kv_dim = n_kv_heads*head_dim columns) into layer `layer` of the pool at
 * their positions. Block ids outside the pool are skipped. */
loom_err kn_cuda_kv_write(const kn_cuda_kv *kv, int layer, const kn_cuda_attn_batch *b,
			  const void *k, const void *v, kn_cuda_dtype dt, int ld, void *stream);

/*
 * Causal GQA attention over the paged cache (whose rows for this step are
 * already written). q: device [n_tokens, ldq] of qdt, head j at columns
 * j*head_dim; out: device [n_tokens, ldo] of odt. Query head j uses KV head
 * j / (n_heads / n_kv_heads). Scores times scale, then soft-capped to
 * softcap * tanh(s / softcap) when softcap > 0 (Gemma 2), softmax in F32.
 * window > 0: a sliding window, the query at position p sees keys
 * p-window+1 .. p only (0: keys 0 .. p); the kernels read no key outside it.
 * _decode: one CTA per (query row, KV head, KV split of 256 positions),
 *   splits merged in a second pass; best for one query row per sequence.
 *   ws: device scratch of kn_cuda_attn_decode_ws_bytes bytes (for
 *   max_ctx_len; a window needs no more).
 * _prefill: 16-row tiles of (query row, head) pairs, online softmax over
 *   32-key tiles; best for prompts. Both accept any batch.
 */
size_t kn_cuda_attn_decode_ws_bytes(int n_tokens, int n_heads, int head_dim, int max_ctx_len);
loom_err kn_cuda_attn_decode(void *out, kn_cuda_dtype odt, int ldo, const void *q,
			     kn_cuda_dtype qdt, int ldq, const kn_cuda_kv *kv, int layer,
			     const kn_cuda_attn_batch *b, int n_heads, float scale, int window,
			     float softcap, void *ws, size_t ws_bytes, void *stream);
loom_err kn_cuda_attn_prefill(void *out, kn_cuda_dtype odt, int ldo, const void *q,
			      kn_cuda_dtype qdt, int ldq, const kn_cuda_kv *kv, int layer,
			      const kn_cuda_attn_batch *b, int n_heads, float scale, int window,
			      float softcap, void *stream);

/* ---- elementwise ops (dtypes: F32, BF16, F16 in any combination) ---- */

/* y[t, :] = x[t, :] / rms(x[t, :]) * w, for T rows of d floats, on device
 * memory, launched on stream (a cudaStream_t, NULL = default). */
loom_err kn_cuda_rmsnorm_f32(float *y, const float *x, const float *w, int T, int d, float eps,
			     void *stream);
/* The same over dtypes and strides: y[t, i] = x[t, i] / sqrt(mean_i(x^2) + eps) * w[i],
 * sum of squares in F32. y may equal x (same ld and dtype). */
loom_err kn_cuda_rmsnorm(void *y, kn_cuda_dtype ydt, int ldy, const void *x, kn_cuda_dtype xdt,
			 int ldx, const void *w, kn_cuda_dtype wdt, int rows, int d, float eps,
			 void *stream);

/* Per-head RMSNorm in place (Qwen3's q_norm / k_norm): for row t and head
 * h < n_heads, the head_dim values at x[t, h*head_dim ..] are divided by
 * their rms (F32, + eps) and multiplied by w[0 .. head_dim). x: device
 * [rows, ldx] (e.g. the q or the k columns of a fused q|k|v row); w: device
 * [head_dim]. */
loom_err kn_cuda_head_rmsnorm(void *x, kn_cuda_dtype dt, int ldx, int rows, int n_heads,
			      int head_dim, const void *w, kn_cuda_dtype wdt, float eps,
			      void *stream);

/* RoPE in place, HF rotate-half: for row t, head h < n_heads and i < hd/2,
 * angle = pos[t] * inv_freq[t * inv_ld + i] (in double), cos and sin times
 * mscale (YaRN's attention factor, else 1) rounded to float, x[i], x[i+hd/2]
 * rotated. x: device [rows, ldx]; head h at columns h*head_dim (pass
 * n_heads = n_q + n_kv on a fused q|k|v row to rotate q and k at once).
 * pos: device int32 [rows]. inv_freq: device double, the model's inverse
 * frequencies (loom_rope_freqs): [hd/2] shared by every row when inv_ld =
 * 0, else [rows, inv_ld >= hd/2], one schedule per row (dynamic NTK, where
 * the frequencies depend on the position). head_dim even. */
loom_err kn_cuda_rope(void *x, kn_cuda_dtype dt, int ldx, int rows, int n_heads, int head_dim,
		      const int32_t *pos, const double *inv_freq, int inv_ld, double mscale,
		      void *stream);

/* out[t, i] = silu(gate[t, i]) * up[t, i], i < n; gate and up: device rows
 * with leading dimension ldi (e.g. the halves of a fused gate|up GEMM). */
loom_err kn_cuda_silu_mul(void *out, kn_cuda_dtype odt, int ldo, const void *gate,
			  const void *up, kn_cuda_dtype idt, int ldi, int rows, int n,
			  void *stream);

/* The same with GeGLU: out = gelu(gate) * up, gelu the tanh approximation
 * (HF gelu_pytorch_tanh: 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))))
 * when tanh_approx, else exact (0.5 g (1 + erf(g / sqrt 2))). */
loom_err kn_cuda_gelu_mul(void *out, kn_cuda_dtype odt, int ldo, const void *gate,
			  const void *up, kn_cuda_dtype idt, int ldi, int rows, int n,
			  int tanh_approx, void *stream);

/* y[t, i] += b[i] for t < rows, i < n (a linear layer's bias; in F32, then
 * rounded to ydt). y: device [rows, ldy]; b: device [n]. */
loom_err kn_cuda_add_bias(void *y, kn_cuda_dtype ydt, int ldy, const void *b,
			  kn_cuda_dtype bdt, int rows, int n, void *stream);

/* out[i, :] = table[ids[i], :] (d columns); ids outside [0, vocab) give a
 * row of zeros. ids: device int32 [n]. */
loom_err kn_cuda_embed(void *out, kn_cuda_dtype odt, int ldo, const void *table,
		       kn_cuda_dtype tdt, int vocab, const int32_t *ids, int n, int d,
		       void *stream);

/* y[i] += x[i] (in F32, then rounded to ydt), i < n. */
loom_err kn_cuda_add(void *y, kn_cuda_dtype ydt, const void *x, kn_cuda_dtype xdt, size_t n,
		     void *stream);
/* x[i] *= s, i < n (e.g. Gemma's embedding scale). */
loom_err kn_cuda_scale(void *x, kn_cuda_dtype dt, size_t n, float s, void *stream);
/* x[i] = cap * tanh(x[i] / cap), i < n (final-logit soft-capping); cap > 0. */
loom_err kn_cuda_softcap(void *x, kn_cuda_dtype dt, size_t n, float cap, void *stream);
/* dst[i] = src[i] converted (round to nearest even), i < n. */
loom_err kn_cuda_cast(void *dst, kn_cuda_dtype ddt, const void *src, kn_cuda_dtype sdt,
		      size_t n, void *stream);

/* ---- sampling ---- */

/* Per-row parameters, the semantics of worker/sample.c: temperature <= 0 or
 * top_k == 1 is greedy (argmax, lowest id on ties, NaN counts as -inf);
 * top_k > 0 keeps the k best; top_p < 1 keeps the shortest best-first prefix
 * holding top_p of the mass; the draw is kn_cuda_rand_uniform(seed,
 * position). */
typedef struct kn_cuda_sample_params {
	float temperature;
	int32_t top_k;
	float top_p;
	int32_t pad_;
	uint64_t seed;
	uint64_t position;
} kn_cuda_sample_params;

/* The uniform draw in [0,1) for (seed, position): the same pure function
 * as wk_rand_uniform in worker/sample.c (host twin of the device code). */
double kn_cuda_rand_uniform(uint64_t seed, uint64_t position);

/*
 * tokens[i] = the token drawn from logits row i (device [rows, ld] of dt,
 * F32/BF16/F16), params: device [rows]. One CTA per row. Greedy is exact.
 * Sampled draws follow the CPU's order (sorted best-first with a filter,
 * id order without) over probabilities held as 40-bit fixed point of
 * exp((l - max)/T): deterministic, equal to the CPU's draw except when u
 * lands within ~2^-40 of a boundary of the cumulative mass.
 */
loom_err kn_cuda_sample(int32_t *tokens, const void *logits, kn_cuda_dtype dt, int ld, int rows,
			int vocab, const kn_cuda_sample_params *params, void *stream);

#ifdef __cplusplus
}
#endif

#endif
