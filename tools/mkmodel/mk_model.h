/*
 * tools/mkmodel/mk_model.h — what loom-mkmodel's CLI (main.c) asks of
 * mk_model.c: write a random-weight HF LLaMA folder, or a random PEFT LoRA
 * adapter for one. Options arrive validated for form (numbers parse, names
 * are known); mk_model.c checks what needs the model (shapes, layers) and
 * returns LOOM_EINVAL for bad option values (the CLI exits 2) or another
 * code for I/O trouble (exit 1), with a one-line message naming the path.
 */
#ifndef MK_MODEL_H
#define MK_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/dtype.h"
#include "common/err.h"
#include "mk.h"

#define MK_MAX_TARGETS 7
#define MK_MAX_LAYERS 1024

typedef struct mk_model_opts {
	const char *out;
	int hidden, ffn, layers, heads, kv_heads, vocab, ctx, shards;
	loom_dtype dtype;      /* F32, F16 or BF16 */
	bool tied;
	mk_tok_kind tok;
	uint64_t seed;
	double rope_theta, rms_eps;
} mk_model_opts;

/* Writes config.json, tokenizer.json and the weights into o->out (created
 * if missing; files there are replaced). */
loom_err mk_model_write(const mk_model_opts *o);

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
