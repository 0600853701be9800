/*
 * worker/forward_int.h — pieces of the forward pass shared by its own files
 * (forward.c, forward_attn.c); nothing outside worker/forward*.c includes it.
 */
#ifndef WK_FORWARD_INT_H
#define WK_FORWARD_INT_H

#include "forward.h"

/*
 * The attention of layer l for every sequence of b: appends each sequence's
 * K and V rows (k, v: [T, kvdim], already roped) to its paged cache at
 * positions kv->len .. (kv->len is not advanced), then causal GQA attention
 * of its queries (q: [T, qdim], roped) over the whole cache into att
 * ([T, qdim]), split over pool by (sequence, run of KV heads). The batch
 * was checked by wk_forward (capacity, pool shape).
 */
void wk_attn_batch(const wk_model *m, const wk_batch *b, int l, const float *q, const float *k,
		   const float *v, float *att, kn_pool *pool);

#endif
