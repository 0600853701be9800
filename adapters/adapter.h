/*
 * adapters/adapter.h — a PEFT LoRA adapter, validated and laid out for loom.
 *
 * Owns: importing a PEFT folder (adapter_config.json +
 * adapter_model.safetensors, F32/F16/BF16) for a LLaMA-family base model,
 * validating it completely against the base model's config, and holding
 * its weights in loom's layout (float32 on the CPU backend):
 *   - per layer and target module: rank r (per-module, from rank_pattern),
 *     scale = alpha / r, or alpha / sqrt(r) with use_rslora (alpha from
 *     alpha_pattern when it names the module),
 *   - A as PEFT's lora_A rows [r, d_in] (contiguous along d_in: shrink reads
 *     it row by row),
 *   - B stored TRANSPOSED, Bt [r, d_out] (expand reads each rank row
 *     contiguously, Punica's layout),
 *   - layout guarantee: within one layer the A blocks of q,k,v are adjacent
 *     in that order (so [A_q; A_k; A_v] is one packed [r_q+r_k+r_v, d]
 *     matrix when all three are present), likewise gate,up; then o, then
 *     down; then the Bt blocks. One allocation (arena) holds everything.
 * An ad_adapter is immutable after load; threads may share it.
 * Must not: know about batches, kernels or the store.
 *
 * Rejected with one clear message (loom_fail, naming the folder and the
 * reason): use_dora, modules_to_save or embedding/lm_head tensors, bias
 * other than "none", a missing half of an A/B pair, a shape mismatch with
 * the base model, NaN/Inf weights, peft_type other than LORA, an adapter
 * for another architecture (target modules loom does not know, or layer
 * indices beyond the base model), fan_in_fan_out true.
 */
#ifndef AD_ADAPTER_H
#define AD_ADAPTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/model_config.h"

typedef enum ad_target {
	AD_Q = 0, /* self_attn.q_proj: d -> n_heads*head_dim */
	AD_K,     /* self_attn.k_proj: d -> n_kv_heads*head_dim */
	AD_V,     /* self_attn.v_proj */
	AD_O,     /* self_attn.o_proj: n_heads*head_dim -> d */
	AD_GATE,  /* mlp.gate_proj: d -> ffn */
	AD_UP,    /* mlp.up_proj */
	AD_DOWN,  /* mlp.down_proj: ffn -> d */
	AD_N_TARGETS
} ad_target;

/* PEFT module name ("q_proj"), NULL if out of range. */
const char *ad_target_name(int t);
/* Input and output widths of target t for a base config. */
void ad_target_dims(const loom_model_config *c, int t, int *d_in, int *d_out);

typedef struct ad_module {
	int rank;        /* 0 = this module of this layer is not adapted */
	float scale;     /* alpha/r or alpha/sqrt(r) */
	const float *a;  /* [rank, d_in] */
	const float *bt; /* [rank, d_out] (B transposed) */
	const uint16_t *a16, *bt16; /* the same as BF16, in a BF16 adapter (a, bt NULL) */
} ad_module;

typedef struct ad_adapter {
	char name[128];
	int n_layers;                 /* = base n_layers */
	int d_in[AD_N_TARGETS];
	int d_out[AD_N_TARGETS];
	ad_module *mods;              /* [n_layers * AD_N_TARGETS]: index l*AD_N_TARGETS + t */
	unsigned targets;             /* bit t set when any layer adapts target t */
	int max_rank;
	int base_rank;                /* config "r" */
	float base_alpha;             /* config "lora_alpha" */
	int use_rslora;
	int bf16;                     /* 1: A and Bt held as BF16 only (a16, bt16) */
	size_t bytes;                 /* bytes of A and Bt held */
	void *arena;
} ad_adapter;

static inline const ad_module *ad_mod(const ad_adapter *a, int layer, int t)
{
	return &a->mods[layer * AD_N_TARGETS + t];
}

/* Loads and validates the PEFT folder dir for base model config base.
 * name is copied. *out is owned by the caller (ad_adapter_destroy). */
loom_err ad_adapter_load(const char *dir, const char *name, const loom_model_config *base,
			 ad_adapter **out);
void ad_adapter_destroy(ad_adapter *a);

/* A BF16 copy of a float32 adapter (values rounded to nearest even), the
 * form the CUDA forward reads: every module's A and Bt as BF16 (a16, bt16;
 * a and bt NULL), 64-byte aligned, bf16 = 1, bytes = the BF16 bytes held.
 * The CPU forward takes it too (the bits of a float32 adapter holding the
 * rounded values). *out is owned by the caller. */
loom_err ad_adapter_to_bf16(const ad_adapter *src, ad_adapter **out);
/* Whether every A and Bt value of a is a BF16 value (a BF16 adapter file,
 * or a BF16 copy), i.e. ad_adapter_to_bf16 would round nothing. */
bool ad_adapter_bf16_exact(const ad_adapter *a);

/*
 * The adapter blob: loom's layout as bytes, what the store keeps (content
 * addressed by its sha256). A little-endian header (magic "LOOMADP1",
 * version, n_layers, d_in/d_out per target, base_rank, base_alpha,
 * use_rslora, targets, max_rank), then the module table (rank, scale, A
 * offset, Bt offset per layer and target), then the arena exactly as
 * ad_adapter_load lays it out (64-byte aligned offsets from the blob start).
 */
/* Serializes a. *buf is loom_malloc'ed (caller frees). */
loom_err ad_adapter_serialize(const ad_adapter *a, void **buf, size_t *len);
/* Rebuilds an adapter from a blob, checking every offset and size against
 * len and the shapes against base (LOOM_EFORMAT / LOOM_EINVAL naming the
 * problem). copy = 0: zero-copy, A/Bt point into buf, which must be 64-byte
 * aligned and outlive the adapter (e.g. an LMDB view); copy = 1: one arena
 * copy (the host-RAM tier). name is copied. */
loom_err ad_adapter_from_blob(const void *buf, size_t len, const char *name,
			      const loom_model_config *base, int copy, ad_adapter **out);

#endif
