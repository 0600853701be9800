/*
 * worker/forward_attn.c — the KV part of a layer: write the batch's K/V
 * into each sequence's blocks, then paged attention, one pool task per
 * (sequence, run of KV heads): a task reads each key and value row of its
 * heads once (contiguous), so the runs are as long as the threads allow —
 * one per sequence when there are twice as many sequences as threads, down
 * to one KV head per task for a lone sequence; tasks write disjoint heads
 * of att. A head's arithmetic does not depend on the runs.
 *
 * A sequence's queries read only its own cache, so its attention output
 * does not depend on the rest of the batch or on the threads (bit for bit).
 */
#include "forward_int.h"

#include "../kernels/kernels.h"
#include "kv.h"

typedef struct attn_job {
	const wk_model *m;
	const wk_batch *b;
	int l, window;
	const float *q;
	float *att;
	int runs;                /* tasks per sequence (runs of KV heads) */
} attn_job;

static void attn_task(void *ctx, int t)
{
	const attn_job *j = ctx;
	const loom_model_config *c = &j->m->cfg;
	int s = t / j->runs, r = t % j->runs, group = c->n_heads / c->n_kv_heads;
	int g0 = r * c->n_kv_heads / j->runs, g1 = (r + 1) * c->n_kv_heads / j->runs;
	wk_kv *kv = j->b->kv[s];
	const wk_kvpool *p = kv->pool;
	int t0 = j->b->seq_start[s], n = j->b->seq_start[s + 1] - t0;
	size_t qdim = (size_t)c->n_heads * c->head_dim;
	if (wk_kvpool_dtype(p) == WK_KV_BF16)
		kn_attention_paged_heads_bf16(j->att + (size_t)t0 * qdim, j->q + (size_t)t0 * qdim,
					      n, kv->len, wk_kvpool_k_raw(p, 0, j->l),
					      wk_kvpool_v_raw(p, 0, j->l), kv->blocks,
					      wk_kvpool_block_size(p), wk_kvpool_block_floats(p),
					      c->n_heads, c->n_kv_heads, c->head_dim, c->attn_scale,
					      j->window, c->attn_softcap, g0 * group, g1 * group);
	else
		kn_attention_paged_heads(j->att + (size_t)t0 * qdim, j->q + (size_t)t0 * qdim, n,
					 kv->len, wk_kvpool_k(p, 0, j->l), wk_kvpool_v(p, 0, j->l),
					 kv->blocks, wk_kvpool_block_size(p),
					 wk_kvpool_block_floats(p), c->n_heads, c->n_kv_heads,
					 c->head_dim, c->attn_scale, j->window, c->attn_softcap,
					 g0 * group, g1 * group);
}

void wk_attn_batch(const wk_model *m, const wk_batch *b, int l, const float *q, const float *k,
		   const float *v, float *att, kn_pool *pool)
{
	const loom_model_config *c = &m->cfg;
	size_t kvdim = (size_t)c->n_kv_heads * c->head_dim;
	/* the cache first (kv->len moves once after the whole step), then every
	 * (sequence, KV head) as a task */
	for (int s = 0; s < b->n_seqs; s++) {
		int t0 = b->seq_start[s], n = b->seq_start[s + 1] - t0;
		wk_kv_write(b->kv[s], l, k + (size_t)t0 * kvdim, v + (size_t)t0 * kvdim, n);
	}
	int runs = b->n_seqs ? (2 * (pool ? kn_pool_threads(pool) : 1) + b->n_seqs - 1) / b->n_seqs
			     : 1;
	runs = runs < 1 ? 1 : runs > c->n_kv_heads ? c->n_kv_heads : runs;
	attn_job j = {.m = m, .b = b, .l = l, .window = loom_layer_window(c, l), .q = q,
		      .att = att, .runs = runs};
	kn_pool_run(pool, b->n_seqs * runs, attn_task, &j);
}
