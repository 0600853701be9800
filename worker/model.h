/*
 * worker/model.h — a LLaMA-family base model's weights in worker memory.
 *
 * Owns: loading a Hugging Face folder (config.json via loom_model_config,
 * model.safetensors or the shards of model.safetensors.index.json; F32, F16
 * and BF16 tensors) into float32 arrays for the CPU backend, checking every
 * tensor's name, dtype and shape against the config; tied or separate
 * lm_head. Immutable after load: many engine threads may read one model.
 * Must not: keep the safetensors files open after load, or know about
 * requests. Errors name the file and the tensor (loom_fail).
 */
#ifndef WK_MODEL_H
#define WK_MODEL_H

#include <stddef.h>

#include "../common/err.h"
#include "../common/model_config.h"

typedef struct wk_layer {
	float *attn_norm;   /* [d] */
	float *wq;          /* [n_heads*head_dim, d]   (HF layout: out x in) */
	float *wk;          /* [n_kv_heads*head_dim, d] */
	float *wv;          /* [n_kv_heads*head_dim, d] */
	float *wo;          /* [d, n_heads*head_dim] */
	float *ffn_norm;    /* [d] */
	float *w_gate;      /* [ffn, d] */
	float *w_up;        /* [ffn, d] */
	float *w_down;      /* [d, ffn] */
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
} wk_model;

/* Loads the folder dir. name: API name (copied). *out owned by the caller,
 * released with wk_model_destroy. */
loom_err wk_model_load(const char *dir, const char *name, wk_model **out);
void wk_model_destroy(wk_model *m);

/* Loads a model from a loom model bundle in memory (common/bundle.h: one
 * safetensors image whose metadata carries config.json); the bytes may be
 * an LMDB view and need not outlive the call. */
loom_err wk_model_load_bundle(const void *buf, size_t len, const char *name, wk_model **out);

/* The bytes of the float32 arena a model with config c takes once loaded
 * (= wk_model.arena_bytes), known before loading it: what a device model
 * budget counts. */
size_t wk_model_weight_bytes(const loom_model_config *c);

#endif
