/*
 * tests/support/ref_llm.h — an independent float64 forward pass of the
 * decoder-only families loom serves, written from Hugging Face
 * transformers' modeling code (modeling_llama.py, modeling_mistral.py,
 * modeling_qwen2.py, modeling_qwen3.py, modeling_gemma2.py and
 * modeling_rope_utils.py), for tests to hold loom's forward against.
 *
 * Owns: reading a model folder (config.json parsed here with jansson, NOT
 * through loom's common/model_config; tensors through common/safetensors
 * into doubles) and optionally a PEFT LoRA folder merged into the weights
 * (W += scale B A, in double), and recomputing every position of a token
 * sequence from scratch with plain loops: no KV cache, no kn_ kernels.
 * Must not: share code with the product beyond the safetensors reader and
 * the dtype converter, or be fast (shapes are tiny).
 *
 * Families: llama (incl. Llama 3 rope scaling, attention_bias, mlp_bias),
 * mistral (sliding_window on every layer), qwen2 (q/k/v bias; windows with
 * use_sliding_window on layers >= max_window_layers), qwen3 (per-head
 * q_norm/k_norm, explicit head_dim), gemma2 ((1+w) RMSNorm, embedding x
 * sqrt(hidden), sandwich norms, gelu_pytorch_tanh, query_pre_attn_scalar,
 * attention and final logit soft-capping, windows on even layers or as
 * layer_types says). RoPE: default, linear, dynamic, yarn, llama3.
 * Dynamic NTK follows what HF gives a token decoded one at a time: the
 * token at position p rotates with seq_len = max(p + 1,
 * max_position_embeddings), the scaling threshold HF uses.
 */
#ifndef LT_REF_LLM_H
#define LT_REF_LLM_H

#include <stdint.h>

typedef struct ref_llm ref_llm;

/* Loads model_dir (config.json + model.safetensors or its shards) and, if
 * adapter_dir is not NULL, the PEFT adapter there merged into the weights.
 * Returns 0 and *out (free with ref_llm_free), or -1 with *out NULL and a
 * message in ref_llm_errmsg(). */
int ref_llm_load(const char *model_dir, const char *adapter_dir, ref_llm **out);
void ref_llm_free(ref_llm *r);
/* The last load error (a static buffer; one thread). */
const char *ref_llm_errmsg(void);

int ref_llm_vocab(const ref_llm *r);
/* The model_type read from config.json. */
const char *ref_llm_type(const ref_llm *r);
/* Layer l's attention window: 0 = full causal attention, else key j is
 * visible from query i iff i - j < window. */
int ref_llm_window(const ref_llm *r, int layer);

/* Causal forward of tok[0..n) at positions 0..n-1; logits: [n, vocab].
 * Returns 0, or -1 for a token outside the vocabulary. */
int ref_llm_forward(const ref_llm *r, const int32_t *tok, int n, double *logits);

/*
 * Ablations, for tests that prove a family's feature matters: each flag
 * turns one feature off (the reference then computes what a forward that
 * ignores that config field or tensor would), so comparing against it
 * shows the test would catch a product that drops it. 0 restores.
 */
enum {
	REF_NO_BIAS = 1 << 0,          /* ignore every projection bias */
	REF_NO_QK_NORM = 1 << 1,       /* Qwen3: skip q_norm / k_norm */
	REF_NO_WINDOW = 1 << 2,        /* full attention on every layer */
	REF_NO_ATTN_SOFTCAP = 1 << 3,  /* Gemma 2 */
	REF_NO_FINAL_SOFTCAP = 1 << 4, /* Gemma 2 */
	REF_NO_ROPE_SCALING = 1 << 5,  /* default RoPE whatever rope_scaling says */
	REF_PLAIN_NORM = 1 << 6,       /* Gemma 2: w x / rms instead of (1 + w) x / rms */
	REF_NO_EMBED_SCALE = 1 << 7,   /* Gemma 2: no x sqrt(hidden) */
	REF_NO_SANDWICH = 1 << 8,      /* Gemma 2: skip post_attention/post_feedforward norms */
	REF_SILU = 1 << 9,             /* SiLU instead of the configured activation */
	REF_HEAD_DIM_SCALE = 1 << 10,  /* 1/sqrt(head_dim) instead of query_pre_attn_scalar */
};
void ref_llm_ablate(ref_llm *r, unsigned flags);

#endif
