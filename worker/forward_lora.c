/*
 * worker/forward_lora.c — heterogeneous LoRA in the forward pass (see
 * forward_lora.h).
 *
 * For one group of targets sharing an input (q,k,v / gate,up / o / down)
 * of one layer, every adapter segment gets up to three slices of v: the
 * shrink output of target i sits at columns [col_i, col_i + r_i) of that
 * segment's rows, col_0 = 0 and each next slice right after. When an
 * adapter's A blocks of the group are adjacent in memory (adapters/
 * adapter.h guarantees it when all are present), their shrink descriptors
 * merge into one over the packed [r_q+r_k+r_v, d] matrix, so x is read once.
 * Ranks are exact per segment: no padding to a maximum rank. ldv, the row
 * stride of v, is the largest slice sum of this call.
 * Cost of the bookkeeping: a few descriptors per segment per layer, no
 * allocation after wk_lora_reserve.
 */
#include "forward_lora.h"

#include <stdbool.h>
#include <string.h>

#include "../common/alloc.h"
#include "../kernels/kernels.h"

struct wk_lora_ws {
	size_t cap_v;     /* floats in v */
	int cap_segs;     /* segments the descriptor tables hold */
	float *v;         /* [T, ldv] shrink output (fp32 end to end) */
	kn_lora_seg *shr; /* [3 * cap_segs] shrink descriptors of one call */
	kn_lora_seg *exp; /* [3][cap_segs] expand descriptors per target of a group */
	/* the planned group (wk_lora_plan): exp[k] starts at exp + k * S */
	int ldv, d_in, nt, ns, S, ne[3], d_out[3];
};

/* Group sizes by first target: q,k,v / o / gate,up / down. */
static int largest_slice_sum(const ad_adapter *a)
{
	static const int g0[] = {AD_Q, AD_O, AD_GATE, AD_DOWN}, gn[] = {3, 1, 2, 1};
	int best = 0;
	for (int l = 0; l < a->n_layers; l++)
		for (int g = 0; g < 4; g++) {
			int sum = 0;
			for (int k = 0; k < gn[g]; k++)
				sum += ad_mod(a, l, g0[g] + k)->rank;
			if (sum > best)
				best = sum;
		}
	return best;
}

loom_err wk_lora_reserve(wk_lora_ws **ws, const wk_model *m, const wk_batch *b)
{
	(void)m;
	int S = b->n_segs, widest = 0;
	if (b->n_seqs == 0)
		return LOOM_OK;
	for (int i = 0; i < S; i++) {
		const ad_adapter *a = b->seg_adapter[i];
		int w = 0;
		if (a && (i == 0 || b->seg_adapter[i - 1] != a))
			w = largest_slice_sum(a);
		if (w > widest)
			widest = w;
	}
	if (widest == 0)
		return LOOM_OK;
	if (!*ws && !(*ws = loom_calloc(1, sizeof **ws)))
		return loom_fail(LOOM_ENOMEM, "forward: out of memory for the LoRA workspace");
	wk_lora_ws *w = *ws;
	size_t need = (size_t)b->seq_start[b->n_seqs] * (size_t)widest;
	if (need > w->cap_v) {
		float *v = loom_realloc(w->v, need * sizeof *v);
		if (!v)
			return loom_fail(LOOM_ENOMEM, "forward: out of memory for LoRA rows (%zu "
					 "floats)", need);
		w->v = v;
		w->cap_v = need;
	}
	if (S > w->cap_segs) {
		kn_lora_seg *shr = loom_realloc(w->shr, 3 * (size_t)S * sizeof *shr);
		if (!shr)
			return loom_fail(LOOM_ENOMEM, "forward: out of memory for %d LoRA segments", S);
		w->shr = shr;
		kn_lora_seg *exp = loom_realloc(w->exp, 3 * (size_t)S * sizeof *exp);
		if (!exp)
			return loom_fail(LOOM_ENOMEM, "forward: out of memory for %d LoRA segments", S);
		w->exp = exp;
		w->cap_segs = S;
	}
	return LOOM_OK;
}

void wk_lora_ws_destroy(wk_lora_ws *ws)
{
	if (!ws)
		return;
	loom_free(ws->v);
	loom_free(ws->shr);
	loom_free(ws->exp);
	loom_free(ws);
}

bool wk_lora_plan(wk_lora_ws *ws, const wk_model *m, const wk_batch *b, int l, int t0, int nt)
{
	if (!ws)
		return false;
	ws->ldv = 0;
	int S = b->n_segs, ldv = 0;
	for (int i = 0; i < S; i++) {
		const ad_adapter *a = b->seg_adapter[i];
		if (!a)
			continue;
		int sum = 0;
		for (int k = 0; k < nt; k++)
			sum += ad_mod(a, l, t0 + k)->rank;
		if (sum > ldv)
			ldv = sum;
	}
	if (ldv == 0)
		return false;
	int d_in = 0, *d_out = ws->d_out;
	for (int k = 0; k < nt; k++)
		ad_target_dims(&m->cfg, t0 + k, &d_in, &d_out[k]);
	int ns = 0, *ne = ws->ne;
	for (int k = 0; k < 3; k++)
		ne[k] = 0;
	kn_lora_seg *exp[3] = {ws->exp, ws->exp + S, ws->exp + 2 * (size_t)S};
	for (int i = 0; i < S; i++) {
		const ad_adapter *a = b->seg_adapter[i];
		int row0 = b->seg_start[i], rows = b->seg_start[i + 1] - row0;
		if (!a || rows == 0)
			continue;
		int col = 0, first = ns;
		for (int k = 0; k < nt; k++) {
			const ad_module *md = ad_mod(a, l, t0 + k);
			if (md->rank == 0)
				continue;
			kn_lora_seg *p = ns > first ? &ws->shr[ns - 1] : NULL;
			/* packed A (one shrink over the group): the next block follows */
			bool packed = p && p->vcol + p->rank == col &&
				      (a->bf16 ? p->a16 + (size_t)p->rank * d_in == md->a16
					       : p->a + (size_t)p->rank * d_in == md->a);
			if (packed)
				p->rank += md->rank;
			else
				ws->shr[ns++] = (kn_lora_seg){.row0 = row0, .rows = rows,
							      .rank = md->rank, .vcol = col,
							      .a = md->a, .a16 = md->a16};
			exp[k][ne[k]++] = (kn_lora_seg){.row0 = row0, .rows = rows, .rank = md->rank,
							.vcol = col, .scale = md->scale,
							.bt = md->bt, .bt16 = md->bt16};
			col += md->rank;
		}
	}
	ws->ldv = ldv;
	ws->d_in = d_in;
	ws->nt = nt;
	ws->ns = ns;
	ws->S = S;
	return true;
}

void wk_lora_gemm_shrink(wk_lora_ws *ws, const kn_gemm_op *ops, int n_ops, const float *x,
			 kn_pool *pool)
{
	kn_gemm_shrink(ops, n_ops, ws->v, ws->ldv, x, ws->d_in, ws->shr, ws->ns, pool);
}

void wk_lora_expand(wk_lora_ws *ws, float *const *y, kn_pool *pool)
{
	kn_lora_out o[KN_LORA_OUTS_MAX];
	for (int k = 0; k < ws->nt; k++)
		o[k] = (kn_lora_out){.y = y[k], .d_out = ws->d_out[k],
				     .segs = ws->exp + (size_t)k * ws->S, .n_segs = ws->ne[k]};
	kn_lora_expand_n(o, ws->nt, ws->v, ws->ldv, pool);
}
