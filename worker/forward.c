/*
 * worker/forward.c — the LLaMA forward pass over a mixed batch (CPU backend).
 *
 * All T tokens of the batch move through each layer together: every linear
 * layer is one kn_gemm_p over T rows (the model's packed weights, in their
 * file's dtype, split over the scratch's thread pool), RMSNorm/RoPE/SiLU are
 * row-wise, and only attention is per sequence (each reads its own paged
 * cache, forward_attn.c). kn_gemm_p sums every output in a fixed order, so a
 * base-model token's logits are bit-identical alone or in any batch, at any
 * thread count; the remaining source of batch variance is the LoRA ops
 * (long segments go to OpenBLAS sgemm, whose rounding depends on the
 * segment's rows).
 *
 * Scratch (wk_scratch) holds the per-step activations, grown on demand to the
 * largest T and context seen; a steady-state step allocates nothing.
 */
#include "forward.h"
#include "forward_int.h"
#include "forward_lora.h"

#include <math.h>
#include <string.h>

#include "../common/alloc.h"
#include "../kernels/kernels.h"

struct wk_scratch {
	int cap_tokens;   /* rows the row buffers hold */
	int d, qdim, kvdim, ffn, half;
	float *x;         /* [T, d] residual stream */
	float *xn;        /* [T, d] normed input of a block; later the logit rows */
	float *q;         /* [T, qdim] */
	float *k;         /* [T, kvdim] */
	float *v;         /* [T, kvdim] */
	float *att;       /* [T, qdim] */
	float *gate;      /* [T, ffn] */
	float *up;        /* [T, ffn] */
	float *rcos;      /* [T, head_dim/2] */
	float *rsin;      /* [T, head_dim/2] */
	int32_t *pos;     /* [T] position of each token in its sequence */
	double *inv_freq; /* [half] RoPE inverse frequencies (all positions unless dynamic) */
	double mscale;    /* RoPE cos/sin factor */
	wk_lora_ws *lora;  /* LoRA shrink rows + descriptors (forward_lora.c), NULL until used */
	kn_pool *pool;     /* wk_forward_threads() threads, the engine thread included */
};

static int fwd_threads = 1;

void wk_forward_threads(int n)
{
	fwd_threads = n < 1 ? 1 : n;
}

loom_err wk_scratch_create(const wk_model *m, wk_scratch **out)
{
	*out = NULL;
	wk_scratch *s = loom_calloc(1, sizeof *s);
	if (!s)
		return loom_fail(LOOM_ENOMEM, "forward scratch: out of memory");
	const loom_model_config *c = &m->cfg;
	s->d = c->hidden;
	s->qdim = c->n_heads * c->head_dim;
	s->kvdim = c->n_kv_heads * c->head_dim;
	s->ffn = c->ffn;
	s->half = c->head_dim / 2;
	s->inv_freq = loom_calloc((size_t)s->half, sizeof *s->inv_freq);
	if (!s->inv_freq) {
		loom_free(s);
		return loom_fail(LOOM_ENOMEM, "forward scratch: out of memory");
	}
	loom_rope_freqs(c, 0, s->inv_freq, &s->mscale);
	if (fwd_threads > 1 && kn_pool_create(fwd_threads, &s->pool)) {
		loom_free(s->inv_freq);
		loom_free(s);
		return loom_fail(LOOM_ENOMEM, "forward scratch: cannot start %d threads",
				 fwd_threads);
	}
	*out = s;
	return LOOM_OK;
}

void wk_scratch_destroy(wk_scratch *s)
{
	if (!s)
		return;
	float **bufs[] = {&s->x, &s->xn, &s->q, &s->k, &s->v, &s->att,
			  &s->gate, &s->up, &s->rcos, &s->rsin};
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
		loom_free(*bufs[i]);
	loom_free(s->pos);
	loom_free(s->inv_freq);
	kn_pool_destroy(s->pool);
	wk_lora_ws_destroy(s->lora);
	loom_free(s);
}

static int grow(void **p, size_t bytes)
{
	void *n = loom_realloc(*p, bytes);
	if (!n)
		return -1;
	*p = n;
	return 0;
}

/* Makes room for T rows. */
static loom_err scratch_reserve(wk_scratch *s, int T)
{
	if (T > s->cap_tokens) {
		size_t t = (size_t)T;
		struct {
			void **p;
			size_t n;
		} rows[] = {
			{(void **)&s->x, t * s->d},       {(void **)&s->xn, t * s->d},
			{(void **)&s->q, t * s->qdim},    {(void **)&s->k, t * s->kvdim},
			{(void **)&s->v, t * s->kvdim},   {(void **)&s->att, t * s->qdim},
			{(void **)&s->gate, t * s->ffn},  {(void **)&s->up, t * s->ffn},
			{(void **)&s->rcos, t * s->half}, {(void **)&s->rsin, t * s->half},
			{(void **)&s->pos, t},
		};
		for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
			if (grow(rows[i].p, (rows[i].n + 1) * sizeof(float))) /* int32 pos: same size */
				return loom_fail(LOOM_ENOMEM, "forward scratch: out of memory for %d "
						 "tokens", T);
		s->cap_tokens = T;
	}
	return LOOM_OK;
}

/* Checks the batch against the model and the caches; changes nothing. */
static loom_err check_batch(const wk_model *m, const wk_batch *b)
{
	if (b->n_seqs < 0 || (b->n_seqs > 0 && (!b->seq_start || !b->kv)))
		return loom_fail(LOOM_EINVAL, "wk_forward: bad batch (n_seqs %d)", b->n_seqs);
	if (b->n_seqs > 0 && b->seq_start[0] != 0)
		return loom_fail(LOOM_EINVAL, "wk_forward: seq_start[0] is %d, not 0",
				 b->seq_start[0]);
	for (int s = 0; s < b->n_seqs; s++) {
		int n = b->seq_start[s + 1] - b->seq_start[s];
		const wk_kv *kv = b->kv[s];
		if (n <= 0)
			return loom_fail(LOOM_EINVAL, "wk_forward: sequence %d has no tokens", s);
		if (!kv || !kv->pool)
			return loom_fail(LOOM_EINVAL, "wk_forward: sequence %d has no kv cache", s);
		if (!wk_kvpool_fits(kv->pool, &m->cfg))
			return loom_fail(LOOM_EINVAL, "wk_forward: sequence %d's kv pool was made for "
					 "another model shape", s);
		if (kv->len < 0 || n > kv->capacity - kv->len)
			return loom_fail(LOOM_ERANGE,
					 "wk_forward: sequence %d: %d tokens after %d overflow its kv "
					 "capacity %d",
					 s, n, kv->len, kv->capacity);
		for (int r = 0; r < s; r++)
			if (b->kv[r] == kv)
				return loom_fail(LOOM_EINVAL,
						 "wk_forward: sequences %d and %d share one kv cache",
						 r, s);
	}
	int T = b->n_seqs > 0 ? b->seq_start[b->n_seqs] : 0;
	if (T > 0 && !b->tokens)
		return loom_fail(LOOM_EINVAL, "wk_forward: %d tokens but no token array", T);
	for (int t = 0; t < T; t++)
		if (b->tokens[t] < 0 || b->tokens[t] >= m->cfg.vocab)
			return loom_fail(LOOM_EINVAL, "wk_forward: token %d at row %d is outside the "
					 "vocabulary [0, %d)", b->tokens[t], t, m->cfg.vocab);
	return wk_lora_check(m, b);
}

/* y[T, N] (+)= x[T, K] . W^T on the packed weight. */
static void linear(wk_scratch *s, float *y, const float *x, const wk_pmat *w, int T, int N, int K,
		   int accumulate)
{
	kn_gemm_p(y, x, w->p, w->dt, T, N, K, accumulate, s->pool);
}

/* The linear layers ws[i] (y[i] [T, N[i]] (+)= x . W^T, accumulating where
 * acc[i]) of a LoRA group (targets t0.. of layer l, sharing the input x
 * [T, K]) and, when the batch adapts them, the group's LoRA shrink in the
 * same pool run (kn_gemm_shrink); the expand is left to the caller
 * (wk_lora_expand, after the biases). Returns whether there is one. */
static bool linear_group(wk_scratch *s, const wk_model *m, const wk_batch *b, int l, int t0,
			 int n, float *const *y, const float *x, const wk_pmat *const *ws,
			 const int *N, int K, const int *acc, int T)
{
	if (!wk_lora_plan(s->lora, m, b, l, t0, n)) {
		for (int i = 0; i < n; i++)
			linear(s, y[i], x, ws[i], T, N[i], K, acc[i]);
		return false;
	}
	kn_gemm_op ops[KN_FUSED_MAX];
	for (int i = 0; i < n; i++)
		ops[i] = (kn_gemm_op){.y = y[i], .x = x, .wp = ws[i]->p, .dt = ws[i]->dt, .M = T,
				      .N = N[i], .K = K, .accumulate = acc[i]};
	wk_lora_gemm_shrink(s->lora, ops, n, x, s->pool);
	return true;
}

/* A linear layer's bias, when the model has it. */
static void bias(float *y, const float *b, int T, int n)
{
	if (b)
		kn_add_bias(y, b, T, n);
}

/* Adds a block's output o ([T, d], scratch) to the residual x through the
 * post-norm w (Gemma 2's sandwich norms). */
static void post_norm_add(wk_scratch *s, const float *w, float eps, int T)
{
	kn_rmsnorm(s->xn, s->xn, w, T, s->d, eps);
	kn_add(s->x, s->xn, (size_t)T * s->d);
}

/* Attention block of layer l: x += o_proj(attn(rope(norm_qk(q)), rope(norm_qk(k)), v)),
 * the o_proj output normed first with sandwich norms. */
static void attention_block(const wk_model *m, const wk_batch *b, wk_scratch *s, int l, int T)
{
	const loom_model_config *c = &m->cfg;
	const wk_layer *L = &m->layers[l];
	kn_rmsnorm(s->xn, s->x, L->attn_norm, T, s->d, c->rms_eps);
	float *const qkv[3] = {s->q, s->k, s->v};
	const wk_pmat *const wqkv[3] = {&L->pq, &L->pk, &L->pv};
	const int nqkv[3] = {s->qdim, s->kvdim, s->kvdim}, zero[3] = {0, 0, 0};
	bool lora = linear_group(s, m, b, l, AD_Q, 3, qkv, s->xn, wqkv, nqkv, s->d, zero, T);
	bias(s->q, L->bq, T, s->qdim);
	bias(s->k, L->bk, T, s->kvdim);
	bias(s->v, L->bv, T, s->kvdim);
	if (lora)
		wk_lora_expand(s->lora, qkv, s->pool);
	if (L->q_norm) {
		kn_rmsnorm(s->q, s->q, L->q_norm, T * c->n_heads, c->head_dim, c->rms_eps);
		kn_rmsnorm(s->k, s->k, L->k_norm, T * c->n_kv_heads, c->head_dim, c->rms_eps);
	}
	kn_rope_apply(s->q, T, c->n_heads, c->head_dim, s->rcos, s->rsin);
	kn_rope_apply(s->k, T, c->n_kv_heads, c->head_dim, s->rcos, s->rsin);
	wk_attn_batch(m, b, l, s->q, s->k, s->v, s->att, s->pool);
	float *o = L->post_attn_norm ? s->xn : s->x;
	const wk_pmat *wo = &L->po;
	int acc = o == s->x;
	lora = linear_group(s, m, b, l, AD_O, 1, &o, s->att, &wo, &s->d, s->qdim, &acc, T);
	bias(o, L->bo, T, s->d);
	if (lora)
		wk_lora_expand(s->lora, &o, s->pool);
	if (L->post_attn_norm)
		post_norm_add(s, L->post_attn_norm, c->rms_eps, T);
}

/* MLP block of layer l: x += down(act(gate(xn)) * up(xn)), normed first with
 * sandwich norms. */
static void mlp_block(const wk_model *m, const wk_batch *b, wk_scratch *s, int l, int T)
{
	const loom_model_config *c = &m->cfg;
	const wk_layer *L = &m->layers[l];
	kn_rmsnorm(s->xn, s->x, L->ffn_norm, T, s->d, c->rms_eps);
	float *const gu[2] = {s->gate, s->up};
	const wk_pmat *const wgu[2] = {&L->pgate, &L->pup};
	const int ngu[2] = {s->ffn, s->ffn}, zero[2] = {0, 0};
	bool lora = linear_group(s, m, b, l, AD_GATE, 2, gu, s->xn, wgu, ngu, s->d, zero, T);
	bias(s->gate, L->b_gate, T, s->ffn);
	bias(s->up, L->b_up, T, s->ffn);
	if (lora)
		wk_lora_expand(s->lora, gu, s->pool);
	if (c->act == LOOM_ACT_SILU)
		kn_silu_mul(s->gate, s->up, (size_t)T * s->ffn);
	else
		kn_gelu_mul(s->gate, s->up, (size_t)T * s->ffn, c->act == LOOM_ACT_GELU_TANH);
	float *o = L->post_ffn_norm ? s->xn : s->x;
	const wk_pmat *wd = &L->pdown;
	int acc = o == s->x;
	lora = linear_group(s, m, b, l, AD_DOWN, 1, &o, s->gate, &wd, &s->d, s->ffn, &acc, T);
	bias(o, L->b_down, T, s->d);
	if (lora)
		wk_lora_expand(s->lora, &o, s->pool);
	if (L->post_ffn_norm)
		post_norm_add(s, L->post_ffn_norm, c->rms_eps, T);
}

/* cos/sin of every row's position (a dynamic schedule per row). */
static void rope_tables(const loom_model_config *c, wk_scratch *s, int T)
{
	if (!loom_rope_dynamic(c)) {
		kn_rope_table(s->rcos, s->rsin, s->pos, T, s->half, s->inv_freq, s->mscale);
		return;
	}
	for (int t = 0; t < T; t++) {
		double ms;
		loom_rope_freqs(c, s->pos[t], s->inv_freq, &ms);
		kn_rope_table(s->rcos + (size_t)t * s->half, s->rsin + (size_t)t * s->half,
			      s->pos + t, 1, s->half, s->inv_freq, ms);
	}
}

loom_err wk_forward(const wk_model *m, const wk_batch *b, wk_scratch *s, float *logits)
{
	loom_err rc = check_batch(m, b);
	if (rc)
		return rc;
	if (b->n_seqs == 0)
		return LOOM_OK;
	const loom_model_config *c = &m->cfg;
	int T = b->seq_start[b->n_seqs];
	rc = scratch_reserve(s, T);
	if (rc)
		return rc;
	rc = wk_lora_reserve(&s->lora, m, b);
	if (rc)
		return rc;

	for (int q = 0; q < b->n_seqs; q++)
		for (int t = b->seq_start[q]; t < b->seq_start[q + 1]; t++)
			s->pos[t] = b->kv[q]->len + (t - b->seq_start[q]);
	rope_tables(c, s, T);
	kn_embed(s->x, m->embed, b->tokens, T, s->d);
	if (c->embed_scale != 1.0f)
		kn_scale(s->x, (size_t)T * s->d, c->embed_scale);

	for (int l = 0; l < c->n_layers; l++) {
		attention_block(m, b, s, l, T);
		mlp_block(m, b, s, l, T);
	}
	for (int q = 0; q < b->n_seqs; q++)
		b->kv[q]->len += b->seq_start[q + 1] - b->seq_start[q];

	/* Final norm and LM head on the rows that produce logits only. */
	int R = b->all_logits ? T : b->n_seqs;
	if (b->all_logits) {
		kn_rmsnorm(s->xn, s->x, m->final_norm, T, s->d, c->rms_eps);
	} else {
		for (int q = 0; q < b->n_seqs; q++) {
			size_t last = (size_t)b->seq_start[q + 1] - 1;
			kn_rmsnorm(s->xn + (size_t)q * s->d, s->x + last * s->d, m->final_norm, 1,
				   s->d, c->rms_eps);
		}
	}
	linear(s, logits, s->xn, &m->p_head, R, c->vocab, s->d, 0);
	if (c->final_softcap > 0.0f)
		kn_softcap(logits, (size_t)R * c->vocab, c->final_softcap);
	return LOOM_OK;
}
