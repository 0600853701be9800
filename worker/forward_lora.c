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

#include <string.h>

#include "../common/alloc.h"
#include "../kernels/kernels.h"

struct wk_lora_ws {
	size_t cap_v;     /* floats in v */
	int cap_segs;     /* segments the descriptor tables hold */
	float *v;         /* [T, ldv] shrink output (fp32 end to end) */
	kn_lora_seg *shr; /* [3 * cap_segs] shrink descriptors of one call */
	kn_lora_seg *exp; /* [3][cap_segs] expand descriptors per target of a group */
};

/* Input and output widths of target t in the base model. */
static void target_dims(const loom_model_config *c, int t, int *d_in, int *d_out)
{
	int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
	switch (t) {
	case AD_Q:
		*d_in = c->hidden, *d_out = q;
		break;
	case AD_K:
	case AD_V:
		*d_in = c->hidden, *d_out = kv;
		break;
	case AD_O:
		*d_in = q, *d_out = c->hidden;
		break;
	case AD_DOWN:
		*d_in = c->ffn, *d_out = c->hidden;
		break;
	default: /* gate, up */
		*d_in = c->hidden, *d_out = c->ffn;
		break;
	}
}

static const char *const tname[AD_N_TARGETS] = {"q_proj", "k_proj", "v_proj", "o_proj",
						"gate_proj", "up_proj", "down_proj"};

/* One adapter against the model; i is the segment for messages. */
static loom_err check_adapter(const loom_model_config *c, const ad_adapter *a, int i)
{
	if (a->n_layers != c->n_layers || !a->mods)
		return loom_fail(LOOM_EINVAL, "wk_forward: segment %d: adapter \"%s\" has %d layers, "
				 "the model %d", i, a->name, a->n_layers, c->n_layers);
	for (int t = 0; t < AD_N_TARGETS; t++) {
		int din, dout, used = 0;
		target_dims(c, t, &din, &dout);
		for (int l = 0; l < a->n_layers; l++) {
			const ad_module *md = ad_mod(a, l, t);
			if (md->rank < 0 || (md->rank > 0 && (!md->a || !md->bt)))
				return loom_fail(LOOM_EINVAL, "wk_forward: segment %d: adapter \"%s\" "
						 "layer %d %s: %s %d", i, a->name, l, tname[t],
						 md->rank < 0 ? "negative rank" : "no weights for rank",
						 md->rank);
			used |= md->rank > 0;
		}
		if (used && (a->d_in[t] != din || a->d_out[t] != dout))
			return loom_fail(LOOM_EINVAL, "wk_forward: segment %d: adapter \"%s\" %s is "
					 "%d -> %d, the model's is %d -> %d", i, a->name, tname[t],
					 a->d_in[t], a->d_out[t], din, dout);
	}
	return LOOM_OK;
}

loom_err wk_lora_check(const wk_model *m, const wk_batch *b)
{
	int S = b->n_segs;
	if (S == 0)
		return LOOM_OK;
	if (S < 0 || !b->seg_start || !b->seg_adapter)
		return loom_fail(LOOM_EINVAL, "wk_forward: bad segments (n_segs %d%s)", S,
				 S < 0 ? "" : ", missing seg_start or seg_adapter");
	int T = b->n_seqs > 0 ? b->seq_start[b->n_seqs] : 0;
	if (b->seg_start[0] != 0 || b->seg_start[S] != T)
		return loom_fail(LOOM_EINVAL, "wk_forward: segments cover [%d, %d), the batch "
				 "[0, %d)", b->seg_start[0], b->seg_start[S], T);
	int q = 0; /* walks seq_start along the segment boundaries */
	for (int i = 0; i < S; i++) {
		int s0 = b->seg_start[i], s1 = b->seg_start[i + 1];
		if (s1 < s0)
			return loom_fail(LOOM_EINVAL, "wk_forward: segment %d ends at %d before it "
					 "starts at %d", i, s1, s0);
		while (q < b->n_seqs && b->seq_start[q] < s1)
			q++;
		if ((b->n_seqs > 0 ? b->seq_start[q] : 0) != s1)
			return loom_fail(LOOM_EINVAL, "wk_forward: segment %d ends at row %d, inside "
					 "a sequence (segments hold whole sequences)", i, s1);
		const ad_adapter *a = b->seg_adapter[i];
		if (!a)
			continue;
		int seen = 0;
		for (int j = 0; j < i && !seen; j++)
			seen = b->seg_adapter[j] == a;
		loom_err rc = seen ? LOOM_OK : check_adapter(&m->cfg, a, i);
		if (rc)
			return rc;
	}
	return LOOM_OK;
}

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

void wk_lora_add(wk_lora_ws *ws, const wk_model *m, const wk_batch *b, int l, int t0, int nt,
		 const float *x, float *const *y)
{
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
		return;
	int d_in = 0, d_out[3] = {0, 0, 0};
	for (int k = 0; k < nt; k++)
		target_dims(&m->cfg, t0 + k, &d_in, &d_out[k]);
	int ns = 0, ne[3] = {0, 0, 0};
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
			if (p && p->a + (size_t)p->rank * d_in == md->a && p->vcol + p->rank == col)
				p->rank += md->rank; /* packed A: one shrink over the group */
			else
				ws->shr[ns++] = (kn_lora_seg){.row0 = row0, .rows = rows,
							      .rank = md->rank, .vcol = col,
							      .a = md->a};
			exp[k][ne[k]++] = (kn_lora_seg){.row0 = row0, .rows = rows, .rank = md->rank,
							.vcol = col, .scale = md->scale,
							.bt = md->bt};
			col += md->rank;
		}
	}
	kn_lora_shrink(ws->v, ldv, x, d_in, ws->shr, ns);
	for (int k = 0; k < nt; k++)
		kn_lora_expand(y[k], d_out[k], ws->v, ldv, exp[k], ne[k]);
}
