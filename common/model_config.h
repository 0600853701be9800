/*
 * common/model_config.h — a Hugging Face LLaMA-family config.json.
 *
 * Owns: parsing config.json (and generation_config.json when present, for
 * EOS ids) of a model folder into loom_model_config, with strict checks
 * (positive sizes, heads dividing hidden, kv heads dividing heads, a
 * supported architecture / model_type: llama or mistral, silu, no biases,
 * no rope_scaling; a Mistral sliding_window below max_position_embeddings
 * caps max_ctx, where windowed attention equals full attention). Both the
 * gateway (context length, EOS, vocab) and the worker (shapes) use it.
 * Must not: read weights.
 */
#ifndef LOOM_MODEL_CONFIG_H
#define LOOM_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define LOOM_MAX_EOS 8

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
} loom_model_config;

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
