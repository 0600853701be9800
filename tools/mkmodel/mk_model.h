/*
 * tools/mkmodel/mk_model.h — what loom-mkmodel's CLI (main.c) asks of
 * mk_model.c: write a random-weight HF folder of one model family (LLaMA,
 * Llama 3, Qwen2, Qwen3, Mistral, Gemma 2), or a random PEFT LoRA adapter
 * for one. Options arrive validated for form (numbers parse, names
 * are known); mk_model.c checks what needs the model (shapes, layers) and
 * returns LOOM_EINVAL for bad option values (the CLI exits 2) or another
 * code for I/O trouble (exit 1), with a one-line message naming the path.
 */
#ifndef MK_MODEL_H
#define MK_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/dtype.h"
#include "common/err.h"
#include "mk.h"

#define MK_MAX_TARGETS 7
#define MK_MAX_LAYERS 1024

/* The Hugging Face model families loom-mkmodel writes (--family). */
typedef enum mk_family {
	MK_FAM_LLAMA = 0, /* LlamaForCausalLM as before --family existed (the default) */
	MK_FAM_LLAMA3,    /* llama + rope_scaling llama3, head_dim, EOS list */
	MK_FAM_QWEN2,     /* q/k/v biases, tied, use_sliding_window/max_window_layers */
	MK_FAM_QWEN3,     /* explicit head_dim, per-head q_norm/k_norm */
	MK_FAM_MISTRAL,   /* sliding_window on every layer */
	MK_FAM_GEMMA2,    /* (1+w) norms, sandwich norms, GELU, soft-capping, alternate windows */
} mk_family;

/* rope_scaling's rope_type (--rope-scaling); NONE writes no rope_scaling. */
typedef enum mk_rope {
	MK_ROPE_NONE = 0,
	MK_ROPE_LINEAR,
	MK_ROPE_DYNAMIC,
	MK_ROPE_YARN,
	MK_ROPE_LLAMA3,
} mk_rope;

typedef struct mk_model_opts {
	const char *out;
	int hidden, ffn, layers, heads, kv_heads, vocab, ctx, shards;
	loom_dtype dtype;      /* F32, F16 or BF16 */
	bool tied;
	mk_tok_kind tok;
	uint64_t seed;
	double rope_theta, rms_eps; /* 0 = the family's default */
	mk_family family;
	bool tok_set;          /* --tokenizer given (else the family's usual shape) */
	bool vocab_set;        /* --vocab given (else 512, or the copied tokenizer's size) */
	int head_dim;          /* 0 = the family's default */
	mk_rope rope;          /* MK_ROPE_NONE = the family's default (llama3 for llama3) */
	double rope_factor;    /* 0 = default: 8 for llama3, 4 otherwise */
	int rope_orig_max;     /* original_max_position_embeddings; 0 = 32 */
	int sliding_window;    /* 0 = the family's default (mistral, gemma2: 16; qwen: off) */
	int max_window_layers; /* qwen2/qwen3; -1 = default */
	bool attn_bias, mlp_bias;
	const char *tokenizer_json;   /* copy this tokenizer.json instead of training one */
	const char *tokenizer_config; /* copy this tokenizer_config.json too */
} mk_model_opts;

/* Writes config.json, tokenizer.json (and tokenizer_config.json when
 * asked) and the weights into o->out (created if missing; files there are
 * replaced). */
loom_err mk_model_write(const mk_model_opts *o);

/* Copies in to *out with the family's defaults filled in (tokenizer shape,
 * rope_theta, rms_eps, tied, head_dim, rope and window settings).
 * mk_config.c. */
void mk_model_resolve(const mk_model_opts *in, mk_model_opts *out);

/* The config.json of o's family (o resolved: no zero defaults left), with
 * bos and n_eos EOS ids (a list when n_eos > 1). NULL when out of memory.
 * mk_config.c. */
json_t *mk_config_json(const mk_model_opts *o, int32_t bos, const int32_t *eos, int n_eos);

/* The shapes an adapter needs, read from a model folder's config.json
 * without loom's parser (any family mkmodel writes). mk_config.c. */
typedef struct mk_base_shape {
	int hidden, ffn, layers, heads, kv_heads, head_dim;
} mk_base_shape;
loom_err mk_base_shape_load(const char *dir, mk_base_shape *out);

typedef struct mk_adapter_opts {
	const char *model, *out;
	int rank;
	double alpha;
	int n_targets;
	const char *targets[MK_MAX_TARGETS]; /* q_proj .. down_proj, no repeats */
	loom_dtype dtype;
	uint64_t seed;
	bool rslora;
	int n_layers;                        /* 0 = all layers (layers_to_transform null) */
	int layers[MK_MAX_LAYERS];
} mk_adapter_opts;

/* Writes adapter_config.json + adapter_model.safetensors into o->out,
 * shapes taken from o->model's config.json. */
loom_err mk_adapter_write(const mk_adapter_opts *o);

/* 1 if name is a LLaMA projection LoRA can target (q_proj ... down_proj). */
int mk_target_known(const char *name);

#endif
