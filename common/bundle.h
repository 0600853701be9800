/*
 * common/bundle.h — the loom model bundle: a whole Hugging Face LLaMA
 * folder's weights and config as one safetensors image, the unit the store
 * keeps for a base model (content addressed by its sha256).
 *
 * Owns: building a bundle from a folder (model.safetensors or the shards of
 * model.safetensors.index.json; tensors copied unchanged, dtype kept) with
 * metadata "loom.config" = config.json text and, when present,
 * "loom.generation_config" = generation_config.json text,
 * "loom.tokenizer_config" = tokenizer_config.json text and
 * "loom.chat_template" = chat_template.jinja text (the chat template and
 * its special-token strings travel with the model); and opening a
 * bundle from memory (the safetensors reader on a buffer + the config
 * parsed from the metadata). tokenizer.json is not in the bundle (the
 * gateway keeps it as its own blob).
 * Must not: convert dtypes or interpret tensor names.
 */
#ifndef LOOM_BUNDLE_H
#define LOOM_BUNDLE_H

#include <stddef.h>

#include "err.h"
#include "model_config.h"
#include "chat_source.h"
#include "safetensors.h"

/* Builds the bundle of folder dir. *buf loom_malloc'ed (caller frees). */
loom_err loom_bundle_from_dir(const char *dir, void **buf, size_t *len);

/* Opens a bundle in memory: *f reads tensors zero-copy out of buf (which
 * must outlive *f; close with loom_st_close), *cfg is its config. name is
 * used in messages. */
loom_err loom_bundle_open(const void *buf, size_t len, const char *name, loom_st_file **f,
			  loom_model_config *cfg);

/* The chat template and bos/eos strings a bundle carries (template NULL
 * when none); *out freed with loom_chat_source_fini. */
loom_err loom_bundle_chat_source(const loom_st_file *f, const char *name, loom_chat_source *out);

#endif
