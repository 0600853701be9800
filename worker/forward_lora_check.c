/*
 * worker/forward_lora_check.c — the checks of a batch plan's LoRA segments
 * (wk_lora_check, forward_lora.h), shared by the CPU and CUDA forwards.
 * Kept apart from forward_lora.c (the CPU application, which needs the
 * CPU kernels and BLAS) so that the CUDA forward links without them.
 */
#include "forward_lora.h"

#include <stdbool.h>
#include <stdio.h>

/* One adapter (float32 or BF16) against the model; who ("wk_forward:
 * segment 3") starts the messages. */
static loom_err check_adapter(const loom_model_config *c, const ad_adapter *a, const char *who)
{
	if (a->n_layers != c->n_layers || !a->mods)
		return loom_fail(LOOM_EINVAL, "%s: adapter \"%s\" has %d layers, the model %d",
				 who, a->name, a->n_layers, c->n_layers);
	for (int t = 0; t < AD_N_TARGETS; t++) {
		int din, dout, used = 0;
		ad_target_dims(c, t, &din, &dout);
		for (int l = 0; l < a->n_layers; l++) {
			const ad_module *md = ad_mod(a, l, t);
			bool held = a->bf16 ? md->a16 && md->bt16 : md->a && md->bt;
			if (md->rank < 0 || (md->rank > 0 && !held))
				return loom_fail(LOOM_EINVAL, "%s: adapter \"%s\" layer %d %s: %s %d",
						 who, a->name, l, ad_target_name(t),
						 md->rank < 0 ? "negative rank" : "no weights for rank",
						 md->rank);
			used |= md->rank > 0;
		}
		if (used && (a->d_in[t] != din || a->d_out[t] != dout))
			return loom_fail(LOOM_EINVAL, "%s: adapter \"%s\" %s is %d -> %d, the model's "
					 "is %d -> %d", who, a->name, ad_target_name(t),
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
		char who[48];
		snprintf(who, sizeof who, "wk_forward: segment %d", i);
		loom_err rc = seen ? LOOM_OK : check_adapter(&m->cfg, a, who);
		if (rc)
			return rc;
	}
	return LOOM_OK;
}

loom_err wk_lora_check_adapter(const wk_model *m, const ad_adapter *a, const char *who)
{
	return check_adapter(&m->cfg, a, who);
}
