/*
 * worker/model.h — a LLaMA-family base model's weights in worker memory.
 *
 * Owns: loading a Hugging Face folder (config.json via loom_model_config,
 * model.safetensors or the shards of model.safetensors.index.json; F32, F16
 * and BF16 tensors) into float32 arrays for the CPU backend, checking every
 * tensor's name, dtype and shape against the config; tied or separate
 * lm_head; the optional tensors the layer description names (biases, q/k
 * norms, Gemma 2's sandwich norms). Norm weights of a norm_plus_one family
 * are stored as 1 + w, so every forward computes x / rms * w. Immutable after load: many engine threads may read one model.
 * Must not: keep the safetensors files open after load, or know about
 * requests. Errors name the file and the tensor (loom_fail).
 */
#ifndef WK_MODEL_H
#define WK_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/err.h"
#include "../common/model_config.h"
#include "../kernels/kernels.h"

/* A linear weight packed for kn_gemm_p (16-column panels) in the dtype the
 * model's file has it in (F32, BF16 or F16: never rounded). */
typedef struct wk_pmat {
	const void *p;
	kn_wdt dt;
} wk_pmat;

typedef struct wk_layer {
	float *attn_norm;   /* [d] input_layernorm */
	float *wq;          /* [n_heads*head_dim, d]   (HF layout: out x in) */
	float *wk;          /* [n_kv_heads*head_dim, d] */
	float *wv;          /* [n_kv_heads*head_dim, d] */
	float *wo;          /* [d, n_heads*head_dim] */
	float *ffn_norm;    /* [d] before the MLP: post_attention_layernorm, or
			       pre_feedforward_layernorm with sandwich_norms */
	float *w_gate;      /* [ffn, d] */
	float *w_up;        /* [ffn, d] */
	float *w_down;      /* [d, ffn] */
	/* Optional, NULL unless the config's layer description has them. */
	float *bq, *bk, *bv; /* [qdim], [kvdim], [kvdim]: q/k/v biases (qkv_bias) */
	float *bo;           /* [d] (o_bias) */
	float *b_gate, *b_up, *b_down; /* [ffn], [ffn], [d] (mlp_bias) */
	float *q_norm, *k_norm;        /* [head_dim] per-head RMSNorm weights (qk_norm) */
	float *post_attn_norm;         /* [d] on the attention output (sandwich_norms) */
	float *post_ffn_norm;          /* [d] on the MLP output (sandwich_norms) */
	/* The CPU forward's copies of wq..w_down, packed (kn_pack). */
	wk_pmat pq, pk, pv, po, pgate, pup, pdown;
} wk_layer;

typedef struct wk_model {
	char name[128];
	loom_model_config cfg;
	float *embed;       /* [vocab, d] */
	wk_layer *layers;   /* [n_layers] */
	float *final_norm;  /* [d] */
	float *lm_head;     /* [vocab, d]; == embed when cfg.tied */
	void *arena;        /* one allocation backing every array above */
	size_t arena_bytes;
	wk_pmat p_head;     /* lm_head packed (the embedding's dtype when tied) */
	void *pk_arena;     /* backs every wk_pmat */
	size_t pk_bytes;
	bool f32_linear;    /* wq .. w_down and an untied lm_head are held as float32
			       too; false (a CPU worker): NULL, only their packed
			       copies in the file's dtype are held, about half the
			       bytes of a BF16/F16 model */
} wk_model;

/* Loads the folder dir. name: API name (copied). *out owned by the caller,
 * released with wk_model_destroy. */
loom_err wk_model_load(const char *dir, const char *name, wk_model **out);
void wk_model_destroy(wk_model *m);

/* Loads a model from a loom model bundle in memory (common/bundle.h: one
 * safetensors image whose metadata carries config.json); the bytes may be
 * an LMDB view and need not outlive the call. */
loom_err wk_model_load_bundle(const void *buf, size_t len, const char *name, wk_model **out);
/* The same with f32_linear false: the linear weights and an untied LM head
 * are packed straight from the file (their float32 arrays NULL), what the
 * CPU forward reads; the CUDA upload, wk_model_repack and the tests that
 * read the float32 weights need f32_linear true (the plain loaders). */
loom_err wk_model_load_ex(const char *dir, const char *name, bool f32_linear, wk_model **out);
loom_err wk_model_load_bundle_ex(const void *buf, size_t len, const char *name, bool f32_linear,
				 wk_model **out);

/* The bytes a model with config c takes once loaded at most (its float32
 * arena, wk_model.arena_bytes, plus the packed linear weights at float32
 * size; BF16/F16 models pack to half that), known before loading it: what
 * a model budget counts. */
size_t wk_model_weight_bytes(const loom_model_config *c);
/* The same for a model loaded with f32_linear as given. */
size_t wk_model_weight_bytes_ex(const loom_model_config *c, bool f32_linear);

/* Packs the linear weights again from the float32 arrays (after a caller
 * changed them, e.g. a test merging LoRA weights), into the same dtypes
 * (values a BF16/F16 weight cannot hold are rounded). Needs f32_linear. */
void wk_model_repack(wk_model *m);

#endif
