/*
 * gateway/gw_models.h — the models and LoRA adapters this gateway serves.
 *
 * Owns: for each model a name, its folder, its tokenizer (tokenizer.json),
 * its config (config.json: context length, vocab), its chat template and the
 * time it was loaded; for each adapter a name, its absolute PEFT folder, its
 * base model and the metadata /v1/models shows (rank, alpha, targets,
 * bytes). Model and adapter names share one namespace: a request's "model"
 * names either (vLLM's convention). Loaded once at start-up, read-only
 * afterwards, so any thread may read it without locks. Must not: talk to
 * workers, keep adapter weights (they are loaded once to validate, then freed).
 * Called by main (load) and the HTTP routes (lookup).
 */
#ifndef GW_MODELS_H
#define GW_MODELS_H

#include <stdbool.h>
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

/* A LoRA adapter of a served base model (metadata only). */
typedef struct gw_adapter {
	char name[LOOM_NAME_MAX];
	char *path;               /* absolute (realpath) PEFT folder, sent to workers */
	const gw_model *base;     /* owned by the same gw_models */
	int rank;                 /* config "r" */
	int max_rank;             /* largest rank of any module (rank_pattern) */
	float alpha;              /* config "lora_alpha" */
	bool use_rslora;
	unsigned targets;         /* bit ad_target set when some layer adapts it */
	size_t bytes;             /* bytes of A and B (float32, as a worker holds them) */
	time_t created;
} gw_adapter;

typedef struct gw_models gw_models;

loom_err gw_models_create(gw_models **out);
void gw_models_destroy(gw_models *m);

/*
 * Loads dir/config.json and dir/tokenizer.json as model name (NULL = the
 * folder's base name). Errors name the file; a name already taken by a
 * model or an adapter is LOOM_EEXIST.
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

/* ---- adapters ---- */

/* True when name is a valid adapter name: [A-Za-z0-9._-]{1,127}. */
bool gw_adapter_name_ok(const char *name);

/*
 * Splits an --adapter "NAME=DIR[@BASE]" argument. BASE follows the last '@'
 * when that part is non-empty and holds no '/' (otherwise the '@' belongs to
 * DIR). *name, *dir and *base (NULL when not given) are loom_malloc'ed; all
 * are NULL after a failure (LOOM_EINVAL naming the argument: no '=', empty
 * NAME or DIR, empty BASE after '@'). The name itself is checked by
 * gw_models_check_adapter.
 */
loom_err gw_adapter_split_arg(const char *arg, char **name, char **dir, char **base);

/*
 * What can be checked without reading the folder: name syntax (LOOM_EINVAL),
 * a name already taken by a model or an adapter (LOOM_EEXIST), the base
 * model (base NULL: the only model served, LOOM_EINVAL when there are
 * several; a base not served: LOOM_ENOTFOUND). *base_out (may be NULL) gets
 * the base model. A failure here is a usage error.
 */
loom_err gw_models_check_adapter(const gw_models *m, const char *name, const char *base,
				 const gw_model **base_out);

/*
 * Adds adapter name from PEFT folder dir (relative paths are resolved with
 * realpath against the current directory) for base model base (NULL = the
 * only model): gw_models_check_adapter, then ad_adapter_load validates the
 * folder against the base model's config and is freed again. A rejected
 * adapter returns ad_adapter_load's error and message (loom_errmsg()).
 */
loom_err gw_models_add_adapter(gw_models *m, const char *name, const char *dir, const char *base);

/* The adapter called name, or NULL. Valid until gw_models_destroy. */
const gw_adapter *gw_models_find_adapter(const gw_models *m, const char *name);
size_t gw_models_adapter_count(const gw_models *m);
const gw_adapter *gw_models_adapter_at(const gw_models *m, size_t i);

/*
 * Resolves a request's "model": a base model (then *ad = NULL) or an adapter
 * (then *ad is it and the result is its base model). NULL when neither has
 * that name. ad may be NULL.
 */
const gw_model *gw_models_resolve(const gw_models *m, const char *name, const gw_adapter **ad);

#endif
