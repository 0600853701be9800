/*
 * common/model_config_int.h — shared by common/model_config.c (sizes, EOS,
 * files) and common/model_family.c (the family table and the layer
 * description); nothing else includes it.
 */
#ifndef LOOM_MODEL_CONFIG_INT_H
#define LOOM_MODEL_CONFIG_INT_H

#include <jansson.h>

#include "model_config.h"

/* JSON field readers: an absent or null field leaves *out untouched.
 * Messages name path and key. */
loom_err loom_mc_int(const char *path, json_t *root, const char *key, int required, int positive,
		     int *out);
loom_err loom_mc_num(const char *path, json_t *root, const char *key, float *out);
loom_err loom_mc_bool(const char *path, json_t *root, const char *key, bool *out);

/* Finds the family (model_type / architectures) and fills c->model_type. */
loom_err loom_mc_family(const char *path, json_t *root, loom_model_config *c);

/* Fills the layer description of c (sizes already parsed, max_ctx as
 * max_position_embeddings): biases, norms, activation, scales, soft-caps,
 * sliding windows, rope scaling; may extend c->max_ctx for rope scaling. */
loom_err loom_mc_layers(const char *path, json_t *root, loom_model_config *c);

/* tie_word_embeddings' default for the family (Gemma 2: true). */
bool loom_mc_tied_default(const char *model_type);

#endif
