/*
 * worker/forward_cuda.c — the forward pass on the CUDA op table (see
 * forward_cuda.h).
 *
 * A step: pack the batch (tokens, positions, cu_q, KV lengths, block
 * tables, SGMV metadata; per-row RoPE frequencies for a dynamic schedule)
 * into pinned staging, one async copy, then embed (times the embedding
 * scale) and per layer: RMSNorm -> fused q|k|v GEMM (+ fused q|k|v bias) ->
 * LoRA q,k,v (one shrink, one expand into the fused row) -> per-head q and
 * k norms (Qwen3) -> RoPE over q and k heads of the fused row -> KV write
 * -> paged attention (the decode kernel when every sequence brings one
 * token, else the prefill kernel; the layer's sliding window, the model's
 * query scale and score soft-cap) -> o GEMM added into the F32 residual
 * (+ o bias) -> LoRA o -> RMSNorm -> fused gate|up GEMM (+ bias) -> LoRA
 * gate,up -> SiLU*mul or GELU*mul -> down GEMM into the residual (+ bias)
 * -> LoRA down; with sandwich norms (Gemma 2) the o and down outputs go to
 * an F32 temporary, are normed, then added to the residual. Then the rows
 * that need logits are gathered (kn_cuda_embed over the residual as a
 * table), normed, the LM head writes F32 logits (soft-capped when the
 * model says so), copied back once. Everything runs on the context's
 * compute stream; the step ends with one stream sync (logits).
 * RoPE: the model's inverse frequencies (loom_rope_freqs) are computed on
 * the host and uploaded once at create; a dynamic (NTK) schedule, whose
 * frequencies depend on the position, ships one row of frequencies per
 * token with the step's metadata (the static table for positions below
 * orig_max), i.e. half * 8 bytes per token more in the step's one copy.
 * Uploads (base weights, adapters, both on the copy stream) live in
 * forward_cuda_load.c; a step waits on an adapter slot's "ready" event
 * before its first LoRA kernel when the slot was loaded since the last
 * wait, and refuses to run before the base weights are all on the device.
 */
#include "forward_cuda.h"

#ifndef LOOM_HAVE_CUDA

loom_err wk_cuda_fwd_create(const wk_model *m, const wk_kvpool *pool,
			    const wk_cuda_fwd_opts *o, wk_cuda_fwd **out)
{
	(void)m, (void)pool, (void)o;
	*out = NULL;
	return loom_fail(LOOM_EUNSUPPORTED, "this build has no CUDA backend (built with "
			 "LOOM_CUDA=OFF or without nvcc)");
}

void wk_cuda_fwd_destroy(wk_cuda_fwd *f)
{
	(void)f;
}

loom_err wk_cuda_forward(wk_cuda_fwd *f, const wk_batch *b, float *logits)
{
	(void)f, (void)b, (void)logits;
	return loom_fail(LOOM_EUNSUPPORTED, "this build has no CUDA backend");
}

loom_err wk_cuda_fwd_load(wk_cuda_fwd *f, size_t budget, int *done)
{
	(void)f, (void)budget;
	*done = 0;
	return loom_fail(LOOM_EUNSUPPORTED, "this build has no CUDA backend");
}

loom_err wk_cuda_fwd_prefetch(wk_cuda_fwd *f, const ad_adapter *a)
{
	(void)f, (void)a;
	return loom_fail(LOOM_EUNSUPPORTED, "this build has no CUDA backend");
}

int wk_cuda_fwd_resident(const wk_cuda_fwd *f, const ad_adapter *a)
{
	(void)f, (void)a;
	return 0;
}

loom_err wk_cuda_fwd_sync(wk_cuda_fwd *f)
{
	(void)f;
	return loom_fail(LOOM_EUNSUPPORTED, "this build has no CUDA backend");
}

#else

#include <stdio.h>
#include <string.h>

#include "../common/alloc.h"
#include "forward_cuda_int.h"
#include "forward_lora.h"

static void *col(void *p, size_t elems)
{
	return (char *)p + elems * BF;
}

/* Group g's input width and slice output widths. */
static void group_dims(const loom_model_config *c, int g, int *d_in, int n_out[3])
{
	for (int s = 0; s < g_nt[g]; s++) {
		int di;
		ad_target_dims(c, g_t0[g] + s, &di, &n_out[s]);
		*d_in = di;
	}
}

/* ---- set-up ---- */

/* Offsets in the per-step metadata block (bytes): the SGMV metadata first,
 * then int32 tokens, pos, cu_q, ctx_len, last rows, block tables (last, so
 * a step copies only the prefix it filled). */
typedef struct meta_off {
	size_t tok, pos, cuq, ctx, last, bt;
} meta_off;

/* Bytes of per-row RoPE frequencies a step may carry (dynamic schedules). */
static size_t rope_rows_bytes(const wk_cuda_fwd *f)
{
	if (!loom_rope_dynamic(&f->m->cfg))
		return 0;
	return (size_t)f->max_tokens * (f->m->cfg.head_dim / 2) * sizeof(double);
}

static meta_off meta_layout(const wk_cuda_fwd *f)
{
	meta_off o;
	size_t T = (size_t)f->max_tokens, S = (size_t)f->max_seqs;
	o.tok = f->lmeta_bytes;
	o.pos = o.tok + 4 * T;
	o.cuq = o.pos + 4 * T;
	o.ctx = o.cuq + 4 * (S + 1);
	o.last = o.ctx + 4 * S;
	o.bt = up256(o.last + 4 * T);
	return o;
}

static loom_err alloc_scratch(wk_cuda_fwd *f, const wk_cuda_fwd_opts *o)
{
	size_t T = (size_t)f->max_tokens, d = (size_t)f->d;
	f->lv_bytes = kn_cuda_lora_v_bytes(f->max_tokens, KN_CUDA_LORA_MAX_RSTRIDE,
					   KN_CUDA_LORA_MAX_KSPLIT);
	f->ws_ctx = f->kv.n_blocks * f->kv.block_size;
	if (f->ws_ctx > f->m->cfg.max_ctx)
		f->ws_ctx = f->m->cfg.max_ctx;
	for (;;) {
		f->attn_ws_bytes = kn_cuda_attn_decode_ws_bytes(f->max_seqs, f->m->cfg.n_heads,
								 f->m->cfg.head_dim, f->ws_ctx);
		if (f->attn_ws_bytes <= ((size_t)256 << 20) || f->ws_ctx <= 256)
			break;
		f->ws_ctx /= 2; /* longer contexts take the prefill kernel */
	}
	f->lmeta_bytes = up256(kn_cuda_lora_meta_bytes(f->max_tokens, f->max_seqs));
	f->bt_cap = f->kv.n_blocks;
	f->meta_bytes = up256(meta_layout(f).bt + (size_t)4 * f->max_seqs * f->bt_cap) +
			rope_rows_bytes(f);
	struct {
		void **p;
		size_t n;
	} bufs[] = {
		{(void **)&f->x, T * d * 4},        {(void **)&f->xl, T * d * 4},
		{(void **)&f->logits_d, T * f->vocab * 4}, {(void **)&f->lv, f->lv_bytes},
		{&f->xn, T * d * BF},               {&f->qkv, T * f->qkvw * BF},
		{&f->att, T * f->qdim * BF},        {&f->gu, T * 2 * f->ffn * BF},
		{&f->act, T * f->ffn * BF},         {&f->attn_ws, f->attn_ws_bytes},
		{&f->meta_d, f->meta_bytes},
	};
	size_t total = 4096;
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
		total += up256(bufs[i].n);
	size_t half = (size_t)f->m->cfg.head_dim / 2;
	total += up256(half * sizeof(double));
	loom_err rc = kn_cuda_arena_create("scratch", total, &f->asc);
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0] && !rc; i++)
		rc = kn_cuda_arena_alloc(f->asc, bufs[i].n, bufs[i].p);
	/* the RoPE frequencies of every position (dynamic: below orig_max), once */
	f->rope_h = loom_calloc(half, sizeof *f->rope_h);
	if (!rc && !f->rope_h)
		rc = loom_fail(LOOM_ENOMEM, "cuda forward: out of host memory");
	if (!rc)
		loom_rope_freqs(&f->m->cfg, 0, f->rope_h, &f->rope_mscale);
	if (!rc)
		rc = kn_cuda_arena_alloc(f->asc, half * sizeof(double), (void **)&f->rope_d);
	if (!rc)
		rc = kn_cuda_memcpy(f->rope_d, f->rope_h, half * sizeof(double));
	if (!rc)
		rc = kn_cuda_host_alloc(f->meta_bytes, &f->meta_h);
	if (!rc)
		rc = kn_cuda_host_alloc(T * f->vocab * 4, (void **)&f->logits_h);
	if (rc)
		return rc;

	/* adapter pool: descriptor tables, then pages */
	f->n_slots = o->adapter_slots > 0 ? o->adapter_slots : 32;
	size_t mb = o->adapter_mb ? o->adapter_mb : 256;
	size_t tab = (size_t)f->n_slots * f->L * sizeof(kn_cuda_lora_desc);
	size_t page = (size_t)1 << 20;
	int n_pages = (int)(mb * ((size_t)1 << 20) / page);
	rc = kn_cuda_arena_create("adapters", G_N * up256(tab) + (size_t)n_pages * page + 4096,
				  &f->aad);
	for (int g = 0; g < G_N && !rc; g++) {
		f->tab_h[g] = loom_calloc((size_t)f->n_slots * f->L, sizeof(kn_cuda_lora_desc));
		if (!f->tab_h[g])
			return loom_fail(LOOM_ENOMEM, "cuda forward: out of host memory");
		if (!(rc = kn_cuda_arena_alloc(f->aad, tab, (void **)&f->tab_d[g])))
			rc = kn_cuda_memcpy(f->tab_d[g], f->tab_h[g], tab);
	}
	if (!rc)
		rc = kn_cuda_pages_create(f->aad, page, n_pages, &f->pages);
	if (rc)
		return rc;
	f->slots = loom_calloc((size_t)f->n_slots, sizeof *f->slots);
	f->seg_slot = loom_calloc((size_t)f->max_seqs + 1, sizeof *f->seg_slot);
	if (!f->slots || !f->seg_slot)
		return loom_fail(LOOM_ENOMEM, "cuda forward: out of host memory");
	for (int i = 0; i < f->n_slots && !rc; i++)
		rc = kn_cuda_event_create(0, &f->slots[i].ready);
	for (int h = 0; h < 2 && !rc; h++)
		rc = kn_cuda_event_create(0, &f->stage_ev[h]);
	if (!rc)
		rc = kn_cuda_host_alloc(2 * STAGE_BYTES, (void **)&f->stage);
	return rc;
}

/* The optional tensors come in the groups the fused uploads assume
 * (worker/model.c loads them so; a hand-built model might not). */
static loom_err check_layers(const wk_model *m)
{
	for (int l = 0; l < m->cfg.n_layers; l++) {
		const wk_layer *w = &m->layers[l];
		if (!w->bq != !w->bk || !w->bq != !w->bv || !w->b_gate != !w->b_up ||
		    !w->q_norm != !w->k_norm)
			return loom_fail(LOOM_EINVAL, "cuda forward: model \"%s\" layer %d has only "
					 "part of its q/k/v biases, gate/up biases or q/k norms",
					 m->name, l);
	}
	return LOOM_OK;
}

loom_err wk_cuda_fwd_create(const wk_model *m, const wk_kvpool *pool,
			    const wk_cuda_fwd_opts *o, wk_cuda_fwd **out)
{
	*out = NULL;
	const loom_model_config *c = &m->cfg;
	loom_err crc = check_layers(m);
	if (crc)
		return crc;
	if (!o || o->max_tokens < 1 || o->max_seqs < 1)
		return loom_fail(LOOM_EINVAL, "cuda forward: max_tokens and max_seqs must be >= 1");
	if (!wk_kvpool_fits(pool, c))
		return loom_fail(LOOM_EINVAL, "cuda forward: the kv pool was made for another "
				 "model shape than \"%s\"", m->name);
	wk_cuda_fwd *f = loom_calloc(1, sizeof *f);
	if (!f)
		return loom_fail(LOOM_ENOMEM, "cuda forward: out of memory");
	f->m = m;
	f->pool = pool;
	f->d = c->hidden;
	f->qdim = c->n_heads * c->head_dim;
	f->kvdim = c->n_kv_heads * c->head_dim;
	f->ffn = c->ffn;
	f->qkvw = f->qdim + 2 * f->kvdim;
	f->vocab = c->vocab;
	f->L = c->n_layers;
	f->max_tokens = o->max_tokens;
	f->max_seqs = o->max_seqs;
	loom_err rc = LOOM_OK;
	f->layers = loom_calloc((size_t)f->L, sizeof *f->layers);
	if (!f->layers) {
		rc = loom_fail(LOOM_ENOMEM, "cuda forward: out of memory");
		goto out;
	}
	if ((rc = kn_cuda_ctx_create(o->device, 0, &f->ctx)))
		goto out;
	f->st = kn_cuda_ctx_stream(f->ctx);
	f->cst = kn_cuda_ctx_copy_stream(f->ctx);
	if ((rc = wk_cuda_plan_model(f)))
		goto out;
	f->kv = (kn_cuda_kv){.dt = KN_CUDA_BF16, .n_blocks = wk_kvpool_n_blocks(pool),
			     .n_layers = f->L, .block_size = wk_kvpool_block_size(pool),
			     .n_kv_heads = c->n_kv_heads, .head_dim = c->head_dim};
	size_t kvb = kn_cuda_kv_bytes(&f->kv);
	if ((rc = kn_cuda_arena_create("kv", 2 * up256(kvb) + 4096, &f->akv)) ||
	    (rc = kn_cuda_arena_alloc(f->akv, kvb, &f->kv.k)) ||
	    (rc = kn_cuda_arena_alloc(f->akv, kvb, &f->kv.v)))
		goto out;
	if ((rc = alloc_scratch(f, o)) || (rc = kn_cuda_event_create(0, &f->w_ev)))
		goto out;
	if (!o->defer_weights) { /* everything now, then wait for the copies */
		int done = 0;
		if (!(rc = wk_cuda_fwd_load(f, SIZE_MAX, &done)) && !done &&
		    !(rc = kn_cuda_event_sync(f->w_ev)))
			rc = wk_cuda_fwd_load(f, SIZE_MAX, &done);
	}
out:
	if (rc) {
		wk_cuda_fwd_destroy(f);
		return rc;
	}
	*out = f;
	return LOOM_OK;
}

void wk_cuda_fwd_destroy(wk_cuda_fwd *f)
{
	if (!f)
		return;
	if (f->ctx)
		kn_cuda_ctx_sync(f->ctx);
	kn_cuda_pages_destroy(f->pages);
	kn_cuda_arena_destroy(f->aad);
	kn_cuda_arena_destroy(f->asc);
	kn_cuda_arena_destroy(f->akv);
	kn_cuda_arena_destroy(f->aw);
	kn_cuda_host_free(f->meta_h);
	kn_cuda_host_free(f->logits_h);
	kn_cuda_host_free(f->stage);
	loom_free(f->rope_h);
	kn_cuda_event_destroy(f->w_ev);
	loom_free(f->wp);
	for (int h = 0; h < 2; h++)
		kn_cuda_event_destroy(f->stage_ev[h]);
	for (int i = 0; f->slots && i < f->n_slots; i++)
		kn_cuda_event_destroy(f->slots[i].ready);
	for (int g = 0; g < G_N; g++)
		loom_free(f->tab_h[g]);
	loom_free(f->slots);
	loom_free(f->seg_slot);
	loom_free(f->layers);
	kn_cuda_ctx_destroy(f->ctx);
	loom_free(f);
}

/* ---- the step ---- */

static loom_err check_batch(const wk_cuda_fwd *f, const wk_batch *b, int *max_ctx, int *max_q)
{
	const wk_model *m = f->m;
	if (b->n_seqs < 0 || (b->n_seqs > 0 && (!b->seq_start || !b->kv)))
		return loom_fail(LOOM_EINVAL, "wk_forward: bad batch (n_seqs %d)", b->n_seqs);
	if (b->n_seqs > 0 && b->seq_start[0] != 0)
		return loom_fail(LOOM_EINVAL, "wk_forward: seq_start[0] is %d, not 0",
				 b->seq_start[0]);
	*max_ctx = *max_q = 0;
	for (int s = 0; s < b->n_seqs; s++) {
		int n = b->seq_start[s + 1] - b->seq_start[s];
		const wk_kv *kv = b->kv[s];
		if (n <= 0)
			return loom_fail(LOOM_EINVAL, "wk_forward: sequence %d has no tokens", s);
		if (!kv || kv->pool != f->pool)
			return loom_fail(LOOM_EINVAL, "wk_forward: sequence %d's kv cache is not on "
					 "the pool the cuda forward mirrors", s);
		if (kv->len < 0 || n > kv->capacity - kv->len)
			return loom_fail(LOOM_ERANGE, "wk_forward: sequence %d: %d tokens after %d "
					 "overflow its kv capacity %d", s, n, kv->len, kv->capacity);
		for (int r = 0; r < s; r++)
			if (b->kv[r] == kv)
				return loom_fail(LOOM_EINVAL, "wk_forward: sequences %d and %d share "
						 "one kv cache", r, s);
		if (kv->len + n > *max_ctx)
			*max_ctx = kv->len + n;
		if (n > *max_q)
			*max_q = n;
	}
	int T = b->n_seqs > 0 ? b->seq_start[b->n_seqs] : 0;
	if (T > f->max_tokens || b->n_seqs > f->max_seqs)
		return loom_fail(LOOM_ERANGE, "wk_forward: %d tokens of %d sequences exceed the "
				 "cuda forward's %d tokens / %d sequences", T, b->n_seqs,
				 f->max_tokens, f->max_seqs);
	if (T > 0 && !b->tokens)
		return loom_fail(LOOM_EINVAL, "wk_forward: %d tokens but no token array", T);
	for (int t = 0; t < T; t++)
		if (b->tokens[t] < 0 || b->tokens[t] >= m->cfg.vocab)
			return loom_fail(LOOM_EINVAL, "wk_forward: token %d at row %d is outside the "
					 "vocabulary [0, %d)", b->tokens[t], t, m->cfg.vocab);
	return wk_lora_check(m, b);
}

typedef struct step {
	int T, R;
	const double *rope_rows; /* device [T, head_dim/2] (dynamic RoPE), else NULL */
	kn_cuda_attn_batch ab;
	bool decode;
	const void *lmeta;
	int n_chunks;
	int rsum[G_N];
} step;

static loom_err lora(wk_cuda_fwd *f, const step *s, int g, int l, const void *x, int ldx,
		     void *y, kn_cuda_dtype ydt, int ldy)
{
	if (!s->lmeta || s->rsum[g] == 0 || s->n_chunks == 0)
		return LOOM_OK;
	if (f->need_wait) { /* adapters this step loaded or prefetched */
		for (int i = 0; i < f->n_slots; i++) {
			aslot *sl = &f->slots[i];
			if (sl->ad && sl->pending && sl->last_use == f->tick) {
				loom_err rc = kn_cuda_stream_wait(f->st, sl->ready);
				if (rc)
					return rc;
				sl->pending = false;
			}
		}
		f->need_wait = false;
	}
	kn_cuda_lora_group grp = {.table = f->tab_d[g], .n_slots = f->n_slots, .n_layers = f->L,
				  .n_slices = g_nt[g], .dt = KN_CUDA_BF16};
	group_dims(&f->m->cfg, g, &grp.d_in, grp.n_out);
	int ks = kn_cuda_lora_ksplit(grp.d_in, s->n_chunks, kn_cuda_ctx_sm_count(f->ctx));
	if (kn_cuda_lora_v_bytes(s->T, s->rsum[g], ks) > f->lv_bytes)
		return loom_fail(LOOM_ERANGE, "cuda forward: LoRA v buffer too small");
	loom_err rc = kn_cuda_lora_shrink(f->lv, s->T, s->rsum[g], ks, x, ldx, &grp, l, s->lmeta,
					  s->n_chunks, f->st);
	return rc ? rc : kn_cuda_lora_expand(y, ydt, ldy, f->lv, s->T, s->rsum[g], ks, &grp, l,
					     s->lmeta, s->n_chunks, f->st);
}

/* y[T, n] (ld ldy, ydt) += b, when the layer has that bias. */
static loom_err bias(wk_cuda_fwd *f, void *y, kn_cuda_dtype ydt, int ldy, const float *b, int T,
		     int n)
{
	return b ? kn_cuda_add_bias(y, ydt, ldy, b, KN_CUDA_F32, T, n, f->st) : LOOM_OK;
}

/* Where a block's output projection writes: the F32 residual x, or with a
 * post-norm (sandwich norms) the F32 temporary xl, which post_add normalizes
 * and adds to x. */
static float *block_out(wk_cuda_fwd *f, const float *post_norm)
{
	return post_norm ? f->xl : f->x;
}

static loom_err post_add(wk_cuda_fwd *f, const float *post_norm, int T)
{
	if (!post_norm)
		return LOOM_OK;
	const kn_cuda_dtype F = KN_CUDA_F32;
	loom_err rc = kn_cuda_rmsnorm(f->xl, F, f->d, f->xl, F, f->d, post_norm, F, T, f->d,
				      f->m->cfg.rms_eps, f->st);
	return rc ? rc : kn_cuda_add(f->x, F, f->xl, F, (size_t)T * f->d, f->st);
}

/* Attention block of layer l: x += o_proj(attn(rope(norm_qk(q)), rope(norm_qk(k)), v)). */
static loom_err attention(wk_cuda_fwd *f, const step *s, int l, const int32_t *pos)
{
	const loom_model_config *c = &f->m->cfg;
	const dlayer *w = &f->layers[l];
	int T = s->T, d = f->d, hd = c->head_dim;
	const kn_cuda_dtype B = KN_CUDA_BF16, F = KN_CUDA_F32;
	float *o = block_out(f, w->post_attn_norm);
	loom_err rc;
	if ((rc = kn_cuda_rmsnorm(f->xn, B, d, f->x, F, d, w->attn_norm, F, T, d, c->rms_eps,
				  f->st)) ||
	    (rc = kn_cuda_gemm(f->ctx, f->qkv, B, f->qkvw, f->xn, B, d, w->wqkv, B, d, T, f->qkvw,
			       d, 1.0f, 0.0f, f->st)) ||
	    (rc = bias(f, f->qkv, B, f->qkvw, w->bqkv, T, f->qkvw)) ||
	    (rc = lora(f, s, G_QKV, l, f->xn, d, f->qkv, B, f->qkvw)))
		return rc;
	if (w->qk_norm &&
	    ((rc = kn_cuda_head_rmsnorm(f->qkv, B, f->qkvw, T, c->n_heads, hd, w->qk_norm, F,
					c->rms_eps, f->st)) ||
	     (rc = kn_cuda_head_rmsnorm(col(f->qkv, f->qdim), B, f->qkvw, T, c->n_kv_heads, hd,
					w->qk_norm + hd, F, c->rms_eps, f->st))))
		return rc;
	const double *inv = s->rope_rows ? s->rope_rows : f->rope_d;
	if ((rc = kn_cuda_rope(f->qkv, B, f->qkvw, T, c->n_heads + c->n_kv_heads, hd, pos, inv,
			       s->rope_rows ? hd / 2 : 0, f->rope_mscale, f->st)) ||
	    (rc = kn_cuda_kv_write(&f->kv, l, &s->ab, col(f->qkv, f->qdim),
				   col(f->qkv, (size_t)f->qdim + f->kvdim), B, f->qkvw, f->st)))
		return rc;
	int win = loom_layer_window(c, l);
	if (s->decode)
		rc = kn_cuda_attn_decode(f->att, B, f->qdim, f->qkv, B, f->qkvw, &f->kv, l, &s->ab,
					 c->n_heads, c->attn_scale, win, c->attn_softcap, f->attn_ws,
					 f->attn_ws_bytes, f->st);
	else
		rc = kn_cuda_attn_prefill(f->att, B, f->qdim, f->qkv, B, f->qkvw, &f->kv, l, &s->ab,
					  c->n_heads, c->attn_scale, win, c->attn_softcap, f->st);
	if (rc ||
	    (rc = kn_cuda_gemm(f->ctx, o, F, d, f->att, B, f->qdim, w->wo, B, f->qdim, T, d,
			       f->qdim, 1.0f, o == f->x ? 1.0f : 0.0f, f->st)) ||
	    (rc = bias(f, o, F, d, w->bo, T, d)) ||
	    (rc = lora(f, s, G_O, l, f->att, f->qdim, o, F, d)))
		return rc;
	return post_add(f, w->post_attn_norm, T);
}

/* MLP block of layer l: x += down(act(gate(xn)) * up(xn)). */
static loom_err mlp(wk_cuda_fwd *f, const step *s, int l)
{
	const loom_model_config *c = &f->m->cfg;
	const dlayer *w = &f->layers[l];
	int T = s->T, d = f->d;
	const kn_cuda_dtype B = KN_CUDA_BF16, F = KN_CUDA_F32;
	float *o = block_out(f, w->post_ffn_norm);
	loom_err rc;
	if ((rc = kn_cuda_rmsnorm(f->xn, B, d, f->x, F, d, w->ffn_norm, F, T, d, c->rms_eps,
				  f->st)) ||
	    (rc = kn_cuda_gemm(f->ctx, f->gu, B, 2 * f->ffn, f->xn, B, d, w->wgu, B, d, T,
			       2 * f->ffn, d, 1.0f, 0.0f, f->st)) ||
	    (rc = bias(f, f->gu, B, 2 * f->ffn, w->bgu, T, 2 * f->ffn)) ||
	    (rc = lora(f, s, G_GU, l, f->xn, d, f->gu, B, 2 * f->ffn)))
		return rc;
	if (c->act == LOOM_ACT_SILU)
		rc = kn_cuda_silu_mul(f->act, B, f->ffn, f->gu, col(f->gu, f->ffn), B, 2 * f->ffn, T,
				      f->ffn, f->st);
	else
		rc = kn_cuda_gelu_mul(f->act, B, f->ffn, f->gu, col(f->gu, f->ffn), B, 2 * f->ffn, T,
				      f->ffn, c->act == LOOM_ACT_GELU_TANH, f->st);
	if (rc ||
	    (rc = kn_cuda_gemm(f->ctx, o, F, d, f->act, B, f->ffn, w->wdown, B, f->ffn, T, d,
			       f->ffn, 1.0f, o == f->x ? 1.0f : 0.0f, f->st)) ||
	    (rc = bias(f, o, F, d, w->bdown, T, d)) ||
	    (rc = lora(f, s, G_DOWN, l, f->act, f->ffn, o, F, d)))
		return rc;
	return post_add(f, w->post_ffn_norm, T);
}

/* Per-row RoPE frequencies of a dynamic schedule into host rows[T, half]:
 * the static table up to orig_max, loom_rope_freqs past it. */
static loom_err rope_rows(const wk_cuda_fwd *f, const int32_t *pos, int T, double *rows)
{
	const loom_model_config *c = &f->m->cfg;
	size_t half = (size_t)c->head_dim / 2;
	for (int t = 0; t < T; t++) {
		double *r = rows + (size_t)t * half, ms = f->rope_mscale;
		if (pos[t] + 1 <= c->rope.orig_max)
			memcpy(r, f->rope_h, half * sizeof *r);
		else
			loom_rope_freqs(c, pos[t], r, &ms);
		if (ms != f->rope_mscale) /* kn_cuda_rope takes one factor for all rows */
			return loom_fail(LOOM_EINTERNAL, "cuda forward: a rope schedule whose cos/sin "
					 "factor depends on the position");
	}
	return LOOM_OK;
}

loom_err wk_cuda_forward(wk_cuda_fwd *f, const wk_batch *b, float *logits)
{
	int max_ctx = 0, max_q = 0;
	if (!f->w_ready)
		return loom_fail(LOOM_EBUSY, "cuda forward: the weights of \"%s\" are still "
				 "uploading (wk_cuda_fwd_load)", f->m->name);
	loom_err rc = check_batch(f, b, &max_ctx, &max_q);
	if (rc || b->n_seqs == 0)
		return rc;
	const loom_model_config *c = &f->m->cfg;
	step s = {.T = b->seq_start[b->n_seqs]};
	s.R = b->all_logits ? s.T : b->n_seqs;
	f->tick++;
	f->need_wait = false;

	/* pack the step's metadata */
	meta_off o = meta_layout(f);
	char *h = f->meta_h, *dv = f->meta_d;
	int32_t *tok = (int32_t *)(h + o.tok), *pos = (int32_t *)(h + o.pos);
	int32_t *cuq = (int32_t *)(h + o.cuq), *ctx = (int32_t *)(h + o.ctx);
	int32_t *last = (int32_t *)(h + o.last), *bt = (int32_t *)(h + o.bt);
	int bts = 1;
	for (int q = 0; q < b->n_seqs; q++)
		if (b->kv[q]->n_blocks > bts)
			bts = b->kv[q]->n_blocks;
	memcpy(tok, b->tokens, (size_t)s.T * sizeof *tok);
	for (int q = 0; q < b->n_seqs; q++) {
		int t0 = b->seq_start[q], n = b->seq_start[q + 1] - t0;
		const wk_kv *kv = b->kv[q];
		for (int t = 0; t < n; t++)
			pos[t0 + t] = kv->len + t;
		cuq[q] = t0;
		ctx[q] = kv->len + n;
		if (!b->all_logits)
			last[q] = t0 + n - 1;
		memcpy(bt + (size_t)q * bts, kv->blocks, (size_t)kv->n_blocks * sizeof *bt);
		for (int j = kv->n_blocks; j < bts; j++)
			bt[(size_t)q * bts + j] = -1;
	}
	cuq[b->n_seqs] = s.T;
	if (b->all_logits)
		for (int t = 0; t < s.T; t++)
			last[t] = t;
	if (b->n_segs > 0) {
		if ((rc = wk_cuda_map_adapters(f, b, s.rsum)) ||
		    (rc = kn_cuda_lora_meta_pack(h, f->lmeta_bytes, b->seg_start, f->seg_slot,
						 b->n_segs, &s.n_chunks)))
			return rc;
		s.lmeta = dv;
	}
	size_t used = o.bt + (size_t)4 * b->n_seqs * bts;
	if (loom_rope_dynamic(c)) { /* after the block tables this step filled */
		size_t ro = up256(used);
		if ((rc = rope_rows(f, pos, s.T, (double *)(h + ro))))
			return rc;
		s.rope_rows = (const double *)(dv + ro);
		used = ro + (size_t)s.T * (c->head_dim / 2) * sizeof(double);
	}
	if ((rc = kn_cuda_memcpy_async(dv, h, used, f->st)))
		return rc;
	s.ab = (kn_cuda_attn_batch){.n_seqs = b->n_seqs, .n_tokens = s.T, .max_q_len = max_q,
				    .max_ctx_len = max_ctx, .cu_q = (const int32_t *)(dv + o.cuq),
				    .ctx_len = (const int32_t *)(dv + o.ctx),
				    .block_tables = (const int32_t *)(dv + o.bt), .bt_stride = bts};
	s.decode = max_q == 1 && max_ctx <= f->ws_ctx;

	int d = f->d;
	const kn_cuda_dtype B = KN_CUDA_BF16, F = KN_CUDA_F32;
	rc = kn_cuda_embed(f->x, F, d, f->embed, B, f->vocab, (const int32_t *)(dv + o.tok), s.T,
			   d, f->st);
	if (!rc && c->embed_scale != 1.0f)
		rc = kn_cuda_scale(f->x, F, (size_t)s.T * d, c->embed_scale, f->st);
	for (int l = 0; l < f->L && !rc; l++)
		if (!(rc = attention(f, &s, l, (const int32_t *)(dv + o.pos))))
			rc = mlp(f, &s, l);
	/* logits rows: gather (the residual as an embedding table), norm, head */
	if (!rc)
		rc = kn_cuda_embed(f->xl, F, d, f->x, F, s.T, (const int32_t *)(dv + o.last), s.R, d,
				   f->st);
	if (!rc)
		rc = kn_cuda_rmsnorm(f->xn, B, d, f->xl, F, d, f->final_norm, F, s.R, d, c->rms_eps,
				     f->st);
	if (!rc)
		rc = kn_cuda_gemm(f->ctx, f->logits_d, F, f->vocab, f->xn, B, d, f->lm_head, B, d,
				  s.R, f->vocab, d, 1.0f, 0.0f, f->st);
	if (!rc && c->final_softcap > 0.0f)
		rc = kn_cuda_softcap(f->logits_d, F, (size_t)s.R * f->vocab, c->final_softcap,
				     f->st);
	size_t lb = (size_t)s.R * f->vocab * sizeof(float);
	if (!rc)
		rc = kn_cuda_memcpy_async(f->logits_h, f->logits_d, lb, f->st);
	loom_err rs = kn_cuda_stream_sync(f->st); /* also frees the staging for the next step */
	if (!rc)
		rc = rs;
	if (rc)
		return rc;
	memcpy(logits, f->logits_h, lb);
	for (int q = 0; q < b->n_seqs; q++)
		b->kv[q]->len += b->seq_start[q + 1] - b->seq_start[q];
	return LOOM_OK;
}

#endif
