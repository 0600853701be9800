/*
 * worker/forward_lora.h — LoRA in the forward pass (forward_lora.c); private
 * to worker/forward*.c.
 *
 * For each group of linear layers sharing an input the forward plans the
 * group's LoRA (wk_lora_plan), runs the base layers together with the
 * shrink (wk_lora_gemm_shrink) and adds the expand (wk_lora_expand): for
 * every segment of the batch plan whose adapter adapts one of them it adds
 * scale * (x_seg A^T) Bt to the layer's output: ad_module -> kn_lora_seg
 * descriptors, one segmented shrink per group (q/k/v and gate/up read x
 * once when the adapter's A blocks are packed, as adapters/adapter.h lays
 * them out), one expand per target.
 * Threading: a wk_lora_ws belongs to one wk_scratch (one thread at a time).
 */
#ifndef WK_FORWARD_LORA_H
#define WK_FORWARD_LORA_H

#include <stdbool.h>

#include "forward.h"
#include "../kernels/kernels.h"

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
 * that the calls below cannot fail. No-op when b has no adapter. */
loom_err wk_lora_reserve(wk_lora_ws **ws, const wk_model *m, const wk_batch *b);
void wk_lora_ws_destroy(wk_lora_ws *ws);

/*
 * The LoRA deltas of targets t0 .. t0+nt-1 (ad_target; a group with one
 * input: q,k,v or gate,up, or o or down alone) of layer l, in three calls:
 * wk_lora_plan lays out the group's descriptors for b (false: the group
 * has no LoRA work, nothing else to call); wk_lora_gemm_shrink runs the
 * group's base linear layers ops (kn_gemm_shrink) together with the shrink
 * of x [T, d_in], the input they share; wk_lora_expand then adds
 * y[i] [T, d_out(t0+i)] += per segment scale * (x A^T) Bt. Nothing for
 * base-only segments or adapters without those modules in layer l. ws
 * from wk_lora_reserve for b.
 */
bool wk_lora_plan(wk_lora_ws *ws, const wk_model *m, const wk_batch *b, int l, int t0, int nt);
void wk_lora_gemm_shrink(wk_lora_ws *ws, const kn_gemm_op *ops, int n_ops, const float *x,
			 kn_pool *pool);
void wk_lora_expand(wk_lora_ws *ws, float *const *y, kn_pool *pool);

#endif
