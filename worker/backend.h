/*
 * worker/backend.h — which backend runs a worker's forward passes, and one
 * model's forward on either of them behind one handle.
 *
 * Owns: parsing/picking `--backend cpu|cuda` (default: cuda when this build
 * has the CUDA backend and kn_cuda_device_count finds a device, else cpu),
 * and wk_fwd: the per-model forward state the engine holds while a model is
 * attached (CPU: a wk_scratch; CUDA: a wk_cuda_fwd with its device weights,
 * KV pool mirror, adapter pool and scratch, all allocated at create).
 * Must not: schedule or sample (the engine does; logits come back to host
 * memory on both backends).
 * Threading: a wk_fwd is used by one thread at a time (the engine thread).
 */
#ifndef WK_BACKEND_H
#define WK_BACKEND_H

#include "../common/err.h"
#include "forward.h"
#include "kv.h"
#include "model.h"

typedef enum wk_backend_kind {
	WK_BACKEND_CPU = 0,
	WK_BACKEND_CUDA,
} wk_backend_kind;

/* "cpu" / "cuda" (the HELLO backend string). */
const char *wk_backend_name(wk_backend_kind k);

/* Whether this build has the CUDA backend (LOOM_HAVE_CUDA). */
int wk_backend_cuda_built(void);

/* Resolves a --backend value: "cpu", "cuda", or NULL/"" for the default.
 * "cuda" is refused with LOOM_EUNSUPPORTED and one line in loom_errmsg()
 * when the build has no CUDA backend or no device is found; any other
 * string is LOOM_EINVAL. */
loom_err wk_backend_pick(const char *req, wk_backend_kind *out);

typedef struct wk_fwd wk_fwd;

/* The forward of model m (borrowed, outlives the handle) over pool
 * (borrowed; the CUDA backend mirrors its shape and block ids on the
 * device) for steps of at most max_tokens rows and max_seqs sequences.
 * adapter_mb: the CUDA backend's device adapter pool (the worker passes
 * --device-adapter-mb, the budget the residency counts adapters against;
 * 0 = 256), with max(32, max_seqs) slots. *out owned by the caller
 * (wk_fwd_destroy). */
loom_err wk_fwd_create(wk_backend_kind k, const wk_model *m, const wk_kvpool *pool,
		       int max_tokens, int max_seqs, size_t adapter_mb, wk_fwd **out);
void wk_fwd_destroy(wk_fwd *f);
wk_backend_kind wk_fwd_kind(const wk_fwd *f);

/* The CUDA backend creates the forward with its weights still on the host
 * and sends them piecewise: each call sends up to budget more bytes on the
 * copy stream (overlapping other models' steps) and sets *done = 1 once
 * they are all on the device; wk_fwd_run refuses until then (LOOM_EBUSY).
 * The CPU backend reads the host weights: always done. */
loom_err wk_fwd_load(wk_fwd *f, size_t budget, int *done);

/* wk_forward's contract (forward.h) on f's backend; logits in host memory. */
loom_err wk_fwd_run(wk_fwd *f, const wk_batch *b, float *logits);

/* A hint that adapter a (borrowed, as for a batch) will run soon: the CUDA
 * backend starts its upload on the copy stream (wk_cuda_fwd_prefetch); the
 * CPU backend reads adapters where they are and does nothing. A refusal
 * (pool busy with the latest step's adapters) is not an error: the step
 * that uses a loads it. Returns LOOM_OK or the reason it was not started. */
loom_err wk_fwd_prefetch(wk_fwd *f, const ad_adapter *a);

#endif
