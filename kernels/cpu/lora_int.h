/*
 * kernels/cpu/lora_int.h — the LoRA shrink item by item, for
 * kn_gemm_shrink (gemm_w.c); private to kernels/cpu.
 *
 * An item is one row of one segment that does work (rows > 0, rank > 0),
 * numbered in segment order as kn_lora_shrink's pool tasks are; an item's
 * result does not depend on which call or thread computes it.
 */
#ifndef KN_LORA_INT_H
#define KN_LORA_INT_H

#include "../kernels.h"

/* The items of a shrink over segs. */
int kn_lora_items(const kn_lora_seg *segs, int n_segs);
/* The A matrix item i reads: *p, *bytes. */
void kn_lora_item_a(const kn_lora_seg *segs, int n_segs, int d_in, int i, const void **p,
		    size_t *bytes);
/* Items [first, first + n) of kn_lora_shrink(v, ldv, x, d_in, segs,
 * n_segs), in the calling thread. */
void kn_lora_shrink_items(float *v, int ldv, const float *x, int d_in, const kn_lora_seg *segs,
			  int n_segs, int first, int n);

#endif
