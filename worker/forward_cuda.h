/*
 * worker/forward_cuda.h — the LLaMA forward pass on the CUDA backend
 * (kernels/cuda/kn_cuda.h), with the contract of wk_forward (forward.h).
 *
 * Owns, per model: a CUDA context, the base weights uploaded once (at
 * create, or piecewise on the copy stream: wk_cuda_fwd_load) to a
 * "weights" arena as BF16 (q|k|v and gate|up fused into one GEMM each; norms
 * kept F32), a device KV pool with the host pool's shape and block ids (the
 * host wk_kvpool keeps the accounting and block tables; the device pool is
 * the storage), an adapter pool (pages of an "adapters" arena, slots with
 * SGMV descriptor tables, LRU over adapters not in the current batch,
 * filled on the copy stream: wk_cuda_fwd_prefetch), and a "scratch" arena
 * for the activations of max_tokens rows. Every device allocation happens
 * in wk_cuda_fwd_create: a step allocates nothing.
 * Per step: the batch metadata is packed into pinned staging and copied
 * once; logits come back to host memory (the host sampler draws).
 * Numerics: activations BF16, residual stream F32, GEMMs BF16 in / F32
 * accumulate, attention softmax F32, KV cache BF16.
 * Built with LOOM_HAVE_CUDA only; without it create fails with
 * LOOM_EUNSUPPORTED ("this build has no CUDA backend").
 * Threading: one thread at a time per wk_cuda_fwd (the engine thread).
 */
#ifndef WK_FORWARD_CUDA_H
#define WK_FORWARD_CUDA_H

#include "../common/err.h"
#include "forward.h"

typedef struct wk_cuda_fwd wk_cuda_fwd;

typedef struct wk_cuda_fwd_opts {
	int device;          /* CUDA device index (0) */
	int max_tokens;      /* rows of one step (all sequences' tokens) */
	int max_seqs;        /* sequences of one step */
	int adapter_slots;   /* adapters resident on the device at once; 0 = 32 */
	size_t adapter_mb;   /* adapter pool MiB; 0 = 256 */
	int defer_weights;   /* 1: create only plans the weights upload, which
				wk_cuda_fwd_load then sends piecewise; 0: create
				uploads them all and waits for the copies */
} wk_cuda_fwd_opts;

/* Uploads m (borrowed; must outlive the forward) and sizes the device KV
 * pool like pool (borrowed: its blocks are the ids the batches use).
 * *out owned by the caller (wk_cuda_fwd_destroy). */
loom_err wk_cuda_fwd_create(const wk_model *m, const wk_kvpool *pool,
			    const wk_cuda_fwd_opts *o, wk_cuda_fwd **out);
void wk_cuda_fwd_destroy(wk_cuda_fwd *f);

/* Sends up to budget more bytes (device bytes: BF16 weights, F32 norms)
 * of the base weights on the copy stream: BF16 conversion into the pinned
 * staging on this thread, copies overlapping whatever the compute streams
 * run (the engine calls it once per iteration while other models serve).
 * *done = 1 once every copy is known complete (an event query: it never
 * waits for the device). Until then wk_cuda_forward answers LOOM_EBUSY. */
loom_err wk_cuda_fwd_load(wk_cuda_fwd *f, size_t budget, int *done);

/* wk_forward's contract on the device (logits: host memory, F32). Also
 * LOOM_ERANGE when the batch exceeds max_tokens / max_seqs, LOOM_EBUSY when
 * the adapters of one batch do not fit the adapter pool. */
loom_err wk_cuda_forward(wk_cuda_fwd *f, const wk_batch *b, float *logits);

/* Starts uploading adapter a (borrowed; must stay valid while the forward
 * may use it, as for a batch) to the adapter pool on the copy stream, so
 * that the step that first uses it finds it there or waits only for the
 * rest of its copy. a is a BF16 adapter (ad_adapter_to_bf16: what a CUDA
 * worker's residency holds; its bytes are copied into the pinned staging)
 * or a float32 one (converted into it). Returns once that host part is done; the copies overlap whatever the compute stream
 * runs next. Call between steps (same thread as wk_cuda_forward). Already
 * resident: marks it recently used. Never evicts an adapter of the latest
 * step: LOOM_EBUSY then (nothing changed; the step that needs it loads
 * it). LOOM_EINVAL when a does not fit the model's shapes. */
loom_err wk_cuda_fwd_prefetch(wk_cuda_fwd *f, const ad_adapter *a);
/* Whether a holds a slot of the adapter pool (loaded or loading). */
int wk_cuda_fwd_resident(const wk_cuda_fwd *f, const ad_adapter *a);
/* Waits for both streams (tests and benchmarks; never inside serving). */
loom_err wk_cuda_fwd_sync(wk_cuda_fwd *f);

#endif
