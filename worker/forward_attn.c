/*
 * worker/forward_attn.c — the KV part of a layer: write the batch's K/V
 * into each sequence's blocks, then paged attention per sequence.
 *
 * A sequence's queries read only its own cache, so its attention output
 * does not depend on the rest of the batch (bit for bit).
 */
#include "forward_int.h"

#include "../kernels/kernels.h"
#include "kv.h"

void wk_attn_batch(const wk_model *m, const wk_batch *b, int l, const float *q, const float *k,
		   const float *v, float *att, float *scores)
{
	const loom_model_config *c = &m->cfg;
	size_t qdim = (size_t)c->n_heads * c->head_dim;
	size_t kvdim = (size_t)c->n_kv_heads * c->head_dim;
	int window = loom_layer_window(c, l);

	for (int s = 0; s < b->n_seqs; s++) {
		wk_kv *kv = b->kv[s];
		const wk_kvpool *p = kv->pool;
		int t0 = b->seq_start[s], n = b->seq_start[s + 1] - t0;

		wk_kv_write(kv, l, k + (size_t)t0 * kvdim, v + (size_t)t0 * kvdim, n);
		kn_attention_paged(att + (size_t)t0 * qdim, q + (size_t)t0 * qdim, n, kv->len,
				   wk_kvpool_k(p, 0, l), wk_kvpool_v(p, 0, l), kv->blocks,
				   wk_kvpool_block_size(p), wk_kvpool_block_floats(p), c->n_heads,
				   c->n_kv_heads, c->head_dim, c->attn_scale, window, c->attn_softcap,
				   scores);
	}
}
