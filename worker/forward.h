/*
 * worker/forward.h — the LLaMA forward pass over a batch of sequences.
 *
 * Owns: one forward step for T tokens drawn from several sequences at once
 * (prefill chunks and single decode tokens mixed): embedding, per layer
 * RMSNorm -> q/k/v projections (one GEMM each over all T tokens) -> RoPE
 * (HF rotate-half) -> KV append -> causal GQA attention against each
 * sequence's own cache -> o_proj -> residual -> RMSNorm -> SwiGLU MLP ->
 * residual; final RMSNorm and the LM head only for the rows that need
 * logits. Uses the kn_ ops of kernels/kernels.h (CPU backend).
 * LoRA: for every linear layer an adapter targets, the tokens of each
 * segment add scale * (x_seg A^T) Bt (shrink d->r, expand r->d, the kn_lora
 * ops), different adapters and ranks in one batch, no padding.
 * KV: each sequence's paged cache (worker/kv.h, wk_kv): K/V rows are
 * written into its blocks and attention reads them through its block table.
 * Must not: sample, schedule, or allocate per call beyond wk_scratch growth.
 * Threading: one thread calls wk_forward at a time per wk_scratch.
 */
#ifndef WK_FORWARD_H
#define WK_FORWARD_H

#include <stdint.h>

#include "../common/err.h"
#include "../adapters/adapter.h"
#include "kv.h"
#include "model.h"

/*
 * A batch: n_seqs sequences, sequence s contributing tokens
 * [seq_start[s], seq_start[s+1]) of tokens[], which continue its cache at
 * position kv[s]->len (positions kv->len, kv->len+1, ...). After the call
 * each kv[s]->len has grown by its token count.
 */
typedef struct wk_batch {
	int n_seqs;
	const int32_t *seq_start;  /* [n_seqs+1], seq_start[0]=0, nondecreasing */
	const int32_t *tokens;     /* [seq_start[n_seqs]] */
	wk_kv *const *kv;          /* [n_seqs] */
	int all_logits;            /* 0: logits of each sequence's last token;
				      1: logits of every token (tests) */
	/* LoRA segments (the batch plan): tokens grouped by adapter. n_segs = 0
	 * means no adapter anywhere. Otherwise segments cover [0, T) in order,
	 * each is a union of whole consecutive sequences, and seg_adapter[i]
	 * (NULL = base model only) applies to tokens [seg_start[i],
	 * seg_start[i+1]). The engine orders sequences so that each adapter's
	 * sequences are consecutive. */
	int n_segs;
	const int32_t *seg_start;            /* [n_segs+1] */
	const ad_adapter *const *seg_adapter; /* [n_segs] */
} wk_batch;

typedef struct wk_scratch wk_scratch;
/* Threads a scratch created from now on runs its ops on (the calling thread
 * included; default 1). The worker sets it from --threads at start. */
void wk_forward_threads(int n);
loom_err wk_scratch_create(const wk_model *m, wk_scratch **out);
void wk_scratch_destroy(wk_scratch *s);

/*
 * Runs the batch. logits: [n_seqs, vocab] (all_logits=0) or [T, vocab]
 * (all_logits=1), written by the call. Fails with LOOM_ERANGE (nothing
 * changed) if a sequence would overflow its kv capacity (the caller
 * reserves blocks first with wk_kv_reserve); token ids outside [0, vocab),
 * segments that split a sequence or do not cover the batch, or an adapter
 * whose shapes do not match the model are LOOM_EINVAL.
 */
loom_err wk_forward(const wk_model *m, const wk_batch *b, wk_scratch *s, float *logits);

#endif
