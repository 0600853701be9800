/*
 * adapters/ad_target.c — the seven LoRA targets of a LLaMA layer: their PEFT
 * module names, the block that holds them, and their shapes for a base
 * config. No I/O and no dependencies beyond the config struct, so backends
 * (worker/forward_lora.c, worker/forward_cuda.c) and the GPU bench link it
 * without the PEFT loader.
 */
#include "adapter.h"
#include "ad_int.h"

static const char *const target_names[AD_N_TARGETS] = { "q_proj",    "k_proj",  "v_proj",
							"o_proj",    "gate_proj", "up_proj",
							"down_proj" };

const char *ad_target_name(int t)
{
	return t >= 0 && t < AD_N_TARGETS ? target_names[t] : NULL;
}

const char *ad_target_block(int t)
{
	return t >= AD_GATE ? "mlp" : "self_attn";
}

void ad_target_dims(const loom_model_config *c, int t, int *d_in, int *d_out)
{
	int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
	switch (t) {
	case AD_Q: *d_in = c->hidden; *d_out = q; break;
	case AD_K:
	case AD_V: *d_in = c->hidden; *d_out = kv; break;
	case AD_O: *d_in = q; *d_out = c->hidden; break;
	case AD_GATE:
	case AD_UP: *d_in = c->hidden; *d_out = c->ffn; break;
	case AD_DOWN: *d_in = c->ffn; *d_out = c->hidden; break;
	default: *d_in = *d_out = 0; break;
	}
}
