/*
 * worker/forward_lora.h — LoRA in the forward pass (forward_lora.c); private
 * to worker/forward*.c.
 *
 * After each linear layer the forward calls wk_lora_add for that layer's
 * targets; for every segment of the batch plan whose adapter adapts one of
 * them it adds scale * (x_seg A^T) Bt to the layer's output: ad_module ->
 * kn_lora_seg descriptors, one segmented shrink per group (q/k/v and
 * gate/up read x once when the adapter's A blocks are packed, as
 * adapters/adapter.h lays them out), one expand per target.
 * Threading: a wk_lora_ws belongs to one wk_scratch (one thread at a time).
 */
#ifndef WK_FORWARD_LORA_H
#define WK_FORWARD_LORA_H

#include "forward.h"

/* Shrink output v [T, ldv] and descriptor tables, grown on demand. */
typedef struct wk_lora_ws wk_lora_ws;

/* Checks b's segments against b's sequences and m: they cover [0, T) in
 * order, each boundary is a sequence boundary, and every adapter matches
 * the model (n_layers, d_in/d_out of each adapted target, ranks >= 0 with
 * weights, float32 or BF16: both forwards read both). LOOM_EINVAL naming
 * the segment and the field; changes nothing. Call after the sequences
 * themselves were checked. */
loom_err wk_lora_check(const wk_model *m, const wk_batch *b);
/* The adapter part of wk_lora_check for one adapter outside a batch (a
 * prefetch); who starts the messages ("cuda prefetch"). */
loom_err wk_lora_check_adapter(const wk_model *m, const ad_adapter *a, const char *who);

/* Makes *ws (created on first use) big enough for the checked batch b, so
 * that wk_lora_add cannot fail. No-op when b has no adapter. */
loom_err wk_lora_reserve(wk_lora_ws **ws, const wk_model *m, const wk_batch *b);
void wk_lora_ws_destroy(wk_lora_ws *ws);

/*
 * Adds the LoRA deltas of targets t0 .. t0+nt-1 (ad_target; a group with
 * one input: q,k,v or gate,up, or o or down alone) of layer l:
 * y[i] [T, d_out(t0+i)] += per segment scale * (x A^T) Bt, x [T, d_in]
 * the input those layers share. Does nothing for base-only segments or
 * adapters without those modules in layer l. ws from wk_lora_reserve for b.
 */
void wk_lora_add(wk_lora_ws *ws, const wk_model *m, const wk_batch *b, int l, int t0, int nt,
		 const float *x, float *const *y, kn_pool *pool);

#endif
