/*
 * adapters/ad_int.h — what the adapters/ files share (not a public API).
 *
 * ad_config.c reads adapter_config.json and resolves it against one base
 * model into a plan: for every (layer, target) of the base, whether PEFT
 * would have put a LoRA there, with which rank and which alpha. ad_load.c
 * then checks adapter_model.safetensors against that plan and lays the
 * weights out. Module "full names" are what PEFT matches its patterns
 * against: the name of the module inside LlamaForCausalLM,
 * "model.layers.<l>.self_attn.q_proj" (tensors add "base_model.model.").
 */
#ifndef AD_INT_H
#define AD_INT_H

#include "adapter.h"

/* The resolved config for one (layer, target). */
typedef struct ad_slot_plan {
	int targeted;     /* the config puts a LoRA on this module */
	int rank;         /* r, or the rank_pattern value */
	float alpha;      /* lora_alpha, or the alpha_pattern value */
	int rank_pattern; /* 1 when rank came from rank_pattern */
} ad_slot_plan;

typedef struct ad_plan {
	int r;            /* config "r" */
	float alpha;      /* config "lora_alpha" */
	int use_rslora;
	int n_layers;     /* = base n_layers */
	ad_slot_plan *slots; /* [n_layers * AD_N_TARGETS], loom_malloc'ed */
} ad_plan;

/* Reads dir/adapter_config.json and resolves it for base into *plan
 * (caller releases with ad_plan_fini, also after a failure). Every
 * rejection is a loom_fail naming dir/adapter_config.json and the field. */
loom_err ad_plan_load(const char *dir, const loom_model_config *base, ad_plan *plan);
void ad_plan_fini(ad_plan *plan);

/* "self_attn" or "mlp" for target t. */
const char *ad_target_block(int t);

/* Comma-separated list of the seven module names, for messages. */
#define AD_TARGET_LIST "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"

#endif
