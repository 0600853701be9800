/*
 * common/model_config.h — a Hugging Face decoder-only config.json, and the
 * layer description the forward passes read.
 *
 * Owns: parsing config.json (and generation_config.json when present, for
 * EOS ids) of a model folder into loom_model_config, with strict checks
 * (positive sizes, kv heads dividing heads, a supported model_type /
 * architecture). The supported families (llama incl. Llama 3.x, mistral,
 * qwen2, qwen3, gemma2) are rows of one table in model_config.c; what makes
 * them differ is data here (norm form, biases, q/k norm, activation, scales,
 * soft-caps, sliding window per layer, RoPE scaling), which the loaders and
 * both forwards read: a family is a table row, not checks in the forwards.
 * Anything outside them (an unknown rope_type, activation, partial rotary,
 * ...) is refused naming the file and the field. Both the gateway (context
 * length, EOS, vocab) and the worker (shapes, layer description) use it.
 * Must not: read weights.
 */
#ifndef LOOM_MODEL_CONFIG_H
#define LOOM_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define LOOM_MAX_EOS 8
#define LOOM_MAX_LAYERS 512

/* MLP activation of the gate (gate_proj) before the product with up_proj. */
typedef enum loom_act {
	LOOM_ACT_SILU = 0,      /* SwiGLU: silu(g) = g / (1 + e^-g) */
	LOOM_ACT_GELU_TANH = 1, /* GeGLU, tanh approximation (gelu_pytorch_tanh, gelu_new) */
	LOOM_ACT_GELU = 2,      /* GeGLU, exact: 0.5 g (1 + erf(g / sqrt 2)) */
} loom_act;

/* RoPE frequency schedule (rope_scaling.rope_type), as Hugging Face's
 * modeling_rope_utils computes it. */
typedef enum loom_rope_kind {
	LOOM_ROPE_DEFAULT = 0, /* inv_freq[i] = theta^(-2i/head_dim) */
	LOOM_ROPE_LINEAR,      /* inv_freq / factor */
	LOOM_ROPE_DYNAMIC,     /* NTK: theta grows with the sequence length past orig_max */
	LOOM_ROPE_YARN,        /* ramp between interpolation and extrapolation, cos/sin * attn_factor */
	LOOM_ROPE_LLAMA3,      /* low frequencies / factor, smooth band between */
} loom_rope_kind;

typedef struct loom_rope_cfg {
	loom_rope_kind kind;
	float factor;          /* linear, dynamic, yarn, llama3 */
	int orig_max;          /* the trained context: original_max_position_embeddings (yarn,
				  llama3), max_position_embeddings (dynamic, as HF) */
	float low_freq_factor, high_freq_factor; /* llama3 */
	float beta_fast, beta_slow;              /* yarn (defaults 32, 1) */
	float attn_factor;     /* yarn: multiplies cos and sin; 1 otherwise */
	bool truncate;         /* yarn: floor/ceil the correction range (default true) */
} loom_rope_cfg;

typedef struct loom_model_config {
	int hidden;          /* hidden_size, d */
	int ffn;             /* intermediate_size */
	int n_layers;        /* num_hidden_layers */
	int n_heads;         /* num_attention_heads */
	int n_kv_heads;      /* num_key_value_heads (default n_heads) */
	int head_dim;        /* head_dim or hidden / n_heads */
	int vocab;           /* vocab_size */
	int max_ctx;         /* max_position_embeddings (default 2048) */
	float rms_eps;       /* rms_norm_eps (default 1e-6) */
	float rope_theta;    /* rope_theta (default 10000) */
	bool tied;           /* tie_word_embeddings (default false) */
	int32_t bos_id;      /* -1 when absent */
	int n_eos;
	int32_t eos_ids[LOOM_MAX_EOS]; /* from generation_config.json, else config.json */
	char model_type[32];

	/* The layer description: what the forwards read instead of the family. */
	bool norm_plus_one;  /* RMSNorm scales by (1 + w) (Gemma); loaders store 1 + w */
	bool sandwich_norms; /* Gemma 2: post_attention_layernorm on the attention output,
				pre_/post_feedforward_layernorm around the MLP */
	bool qkv_bias;       /* q_proj, k_proj, v_proj have .bias */
	bool o_bias;         /* o_proj has .bias */
	bool mlp_bias;       /* gate_proj, up_proj, down_proj have .bias */
	bool qk_norm;        /* Qwen3: RMSNorm over each q and k head (q_norm, k_norm) before RoPE */
	loom_act act;
	float embed_scale;   /* embedding rows multiplied by it: 1, or sqrt(hidden) (Gemma) */
	float attn_scale;    /* q.k multiplier: head_dim^-1/2 or query_pre_attn_scalar^-1/2 */
	float attn_softcap;  /* scores -> cap * tanh(scores / cap) after scaling; 0 = none */
	float final_softcap; /* logits -> cap * tanh(logits / cap); 0 = none */
	int window;          /* sliding window W: query i sees keys j with i - W < j <= i */
	uint8_t sliding[LOOM_MAX_LAYERS / 8]; /* bit l set: layer l uses the window */
	loom_rope_cfg rope;
} loom_model_config;

/* The sliding window of layer l (0 = full causal attention). */
static inline int loom_layer_window(const loom_model_config *c, int l)
{
	return c->window > 0 && (c->sliding[l >> 3] >> (l & 7) & 1) ? c->window : 0;
}

/*
 * RoPE inverse frequencies of c for a token at position pos: inv_freq[i],
 * i < head_dim/2, in double, and *mscale, the factor on cos and sin. Only
 * LOOM_ROPE_DYNAMIC depends on pos: loom gives each token the frequencies
 * Hugging Face uses when it decodes that token one at a time, i.e. the
 * sequence length max(pos + 1, orig_max) (HF's prefill instead uses the
 * whole chunk's length for every token, which would make a token's keys
 * depend on how its prompt was chunked).
 */
void loom_rope_freqs(const loom_model_config *c, int pos, double *inv_freq, double *mscale);
/* True when loom_rope_freqs depends on pos. */
static inline bool loom_rope_dynamic(const loom_model_config *c)
{
	return c->rope.kind == LOOM_ROPE_DYNAMIC;
}

/* Reads dir/config.json (+ dir/generation_config.json if present).
 * Errors name the file and the field. */
loom_err loom_model_config_load(const char *dir, loom_model_config *out);

/* Applies generation_config.json text already in memory to *c (its
 * eos_token_id, an integer or a list, replaces c's EOS ids; checked
 * against c->vocab). path is used in messages. */
loom_err loom_model_config_apply_generation(const char *json, size_t len, const char *path,
					    loom_model_config *c);

/* Parses config JSON text already in memory; path is used in messages. */
loom_err loom_model_config_parse(const char *json, size_t len, const char *path,
				 loom_model_config *out);

#endif
