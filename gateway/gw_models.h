/*
 * gateway/gw_models.h — the models this gateway serves.
 *
 * Owns: for each model a name, its folder, its tokenizer (tokenizer.json),
 * its config (config.json: context length, vocab), its chat template and the
 * time it was loaded. Loaded once at start-up, read-only afterwards, so any
 * thread may read it without locks. Must not: talk to workers.
 * Called by main (load) and the HTTP routes (lookup).
 */
#ifndef GW_MODELS_H
#define GW_MODELS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/err.h"
#include "common/model_config.h"
#include "common/proto.h"
#include "common/tokenizer.h"
#include "gw_chat.h"

typedef struct gw_model {
	char name[LOOM_NAME_MAX];
	char *dir;
	loom_tok *tok;
	loom_model_config cfg;
	gw_chat_tmpl tmpl;
	time_t created;
} gw_model;

typedef struct gw_models gw_models;

loom_err gw_models_create(gw_models **out);
void gw_models_destroy(gw_models *m);

/*
 * Loads dir/config.json and dir/tokenizer.json as model name (NULL = the
 * folder's base name). Errors name the file; a duplicate name is LOOM_EEXIST.
 */
loom_err gw_models_add(gw_models *m, const char *name, const char *dir, gw_chat_tmpl tmpl);
/* Sets the chat template of a loaded model; LOOM_ENOTFOUND if none has that name. */
loom_err gw_models_set_template(gw_models *m, const char *name, gw_chat_tmpl tmpl);

/* The model called name, or NULL. Valid until gw_models_destroy. */
const gw_model *gw_models_find(const gw_models *m, const char *name);
size_t gw_models_count(const gw_models *m);
const gw_model *gw_models_at(const gw_models *m, size_t i);

/* Splits a "[NAME=]DIR" argument: *name (loom_malloc'ed) is NAME or the base
 * name of DIR without trailing slashes; *dir (loom_malloc'ed) is DIR. */
loom_err gw_models_split_arg(const char *arg, char **name, char **dir);

#endif
