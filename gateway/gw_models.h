/*
 * gateway/gw_models.h — the models and LoRA adapters this gateway serves
 * (the registry as the HTTP routes see it).
 *
 * Owns: for each model a name, its tokenizer, its config (context length,
 * vocab, EOS), its chat template, the time it was registered and, when it
 * comes from the store, its bundle's sha256, size and version; for each
 * adapter a name, its base model, the metadata /v1/models and the admin API
 * show (rank, alpha, targets, bytes, sha256, version, created) and the folder
 * it was imported from ("" when uploaded or loaded from the store). Model and
 * adapter names share one namespace: a request's "model" names either
 * (vLLM's convention).
 * Mutable while serving (the admin API adds, replaces and removes entries):
 * a read-write lock guards the tables. Models are reference counted: a
 * request holds its base model (gw_model_hold) until it ends, so removing a
 * model never frees one in use. Adapters are small value records: callers
 * take copies (gw_models_acquire, gw_models_adapter_get); pointers returned
 * by the *_find / *_at functions stay valid only while nobody removes or
 * replaces that entry (start-up code and tests), or under gw_models_rdlock.
 * Must not: talk to workers or the store (gw_registry does), keep adapter
 * weights. Called by main, gw_registry (changes) and the HTTP routes (lookups).
 */
#ifndef GW_MODELS_H
#define GW_MODELS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/chat_source.h"
#include "common/err.h"
#include "common/model_config.h"
#include "common/proto.h"
#include "common/tokenizer.h"
#include "gw_chat.h"
#include "gw_tools.h"

typedef struct gw_model {
	char name[LOOM_NAME_MAX];
	char *dir;                /* folder it was loaded from, or NULL (from the store) */
	loom_tok *tok;
	loom_model_config cfg;
	gw_chat_tmpl tmpl;        /* never GW_TMPL_AUTO once the model is created */
	loom_jinja *jinja;        /* the model's own chat template, compiled; NULL if none */
	char *jinja_error;        /* why the template it ships cannot be used, or NULL */
	char *bos_token;          /* tokenizer_config's strings templates print ("" if none) */
	char *eos_token;
	int32_t extra_eos[2];     /* eos_token's id when config/generation_config do not
				     list it (an instruct model's end-of-turn): a stop id */
	int n_extra_eos;
	gw_tools_fmt tools_fmt;   /* the tool-call syntax its chat template teaches */
	time_t created;
	char sha[LOOM_SHA_HEX];   /* store bundle, "" when not from the store */
	char tok_sha[LOOM_SHA_HEX]; /* store blob of its tokenizer.json, "" = none */
	uint64_t bytes;           /* bundle bytes (0 when not from the store) */
	uint32_t version;         /* store version (0 when not from the store) */
	atomic_int refs;          /* private: gw_model_hold / gw_model_release */
} gw_model;

/* A LoRA adapter of a served base model (metadata only; a value type). */
typedef struct gw_adapter {
	char name[LOOM_NAME_MAX];
	char path[1024];          /* absolute PEFT folder it came from, "" if unknown */
	const gw_model *base;     /* valid while this adapter is registered */
	int rank;                 /* config "r" */
	int max_rank;             /* largest rank of any module (rank_pattern) */
	float alpha;              /* config "lora_alpha" */
	bool use_rslora;
	unsigned targets;         /* bit ad_target set when some layer adapts it */
	size_t bytes;             /* bytes of A and B (float32, as a worker holds them) */
	time_t created;
	char sha[LOOM_SHA_HEX];   /* store blob, "" when not from the store */
	uint32_t version;         /* store version (0 when not from the store) */
} gw_adapter;

typedef struct gw_models gw_models;

loom_err gw_models_create(gw_models **out);
/* Drops the table's references (models still held by requests live on). */
void gw_models_destroy(gw_models *m);

/* References on a model (any thread). release frees the model (tokenizer
 * included) when the last reference goes. NULL is fine for release. */
void gw_model_hold(const gw_model *md);
void gw_model_release(const gw_model *md);

/*
 * Creates a model that is not in any table yet: name, config, tokenizer
 * (taken: freed with the model, also on failure), template. *out holds one
 * reference. Checks positive context length and vocab (LOOM_EFORMAT naming
 * what_for, e.g. the folder or the store record).
 */
loom_err gw_model_create(const char *name, const loom_model_config *cfg, loom_tok *tok,
			 gw_chat_tmpl tmpl, const char *what_for, gw_model **out);

/*
 * Gives md (not yet in a table) its chat template from src: compiles the
 * template text (a construct loom's Jinja lacks is logged as a warning
 * naming it and kept in md->jinja_error, so chat requests get a 400 saying
 * so, while completions still work), copies bos/eos, and sets md->tmpl to
 * tmpl, GW_TMPL_AUTO resolved to GW_TMPL_MODEL when src has a template,
 * else GW_TMPL_PLAIN. src NULL = no template. LOOM_ENOMEM only.
 */
loom_err gw_model_set_chat(gw_model *md, const loom_chat_source *src, gw_chat_tmpl tmpl);
/* gw_model_set_chat with dir's tokenizer_config.json / chat_template.jinja
 * (errors name the file). */
loom_err gw_model_chat_from_dir(gw_model *md, const char *dir, gw_chat_tmpl tmpl);

/*
 * Loads dir/config.json and dir/tokenizer.json as model name (NULL = the
 * folder's base name). Errors name the file; a name already taken by a
 * model or an adapter is LOOM_EEXIST.
 */
loom_err gw_models_add(gw_models *m, const char *name, const char *dir, gw_chat_tmpl tmpl);
/*
 * Enters md (the table takes the caller's reference, also on failure).
 * A name taken by an adapter is LOOM_EEXIST; one taken by a model is
 * LOOM_EEXIST unless replace, which swaps the entry (requests holding the
 * old one finish on it; the adapters of the old one move to md).
 */
loom_err gw_models_put(gw_models *m, gw_model *md, bool replace);
/* Removes model name: LOOM_ENOTFOUND, or LOOM_EBUSY while adapters use it. */
loom_err gw_models_remove(gw_models *m, const char *name);
/* Sets the chat template of a loaded model (GW_TMPL_AUTO resolves as in
 * gw_model_set_chat); LOOM_ENOTFOUND if none has that name. */
loom_err gw_models_set_template(gw_models *m, const char *name, gw_chat_tmpl tmpl);

/* The model called name, or NULL (see the lifetime rule above). */
const gw_model *gw_models_find(const gw_models *m, const char *name);
size_t gw_models_count(const gw_models *m);
const gw_model *gw_models_at(const gw_models *m, size_t i);
/* The model called name with a reference (gw_model_release), or NULL. */
gw_model *gw_models_get(gw_models *m, const char *name);

/* Read lock around iterations with *_count / *_at from threads that run
 * while the tables may change. Not recursive with the functions above that
 * lock themselves (*_find, *_count, *_at, *_get, acquire, adapter_get do). */
void gw_models_rdlock(gw_models *m);
void gw_models_unlock(gw_models *m);
/* Iteration under gw_models_rdlock (these do not lock). */
size_t gw_models_count_locked(const gw_models *m);
const gw_model *gw_models_at_locked(const gw_models *m, size_t i);
size_t gw_models_adapter_count_locked(const gw_models *m);
const gw_adapter *gw_models_adapter_at_locked(const gw_models *m, size_t i);

/* Splits a "[NAME=]DIR" argument: *name (loom_malloc'ed) is NAME or the base
 * name of DIR without trailing slashes; *dir (loom_malloc'ed) is DIR. */
loom_err gw_models_split_arg(const char *arg, char **name, char **dir);

/* ---- adapters ---- */

/* True when name is a valid adapter or model name for the admin API:
 * [A-Za-z0-9._-]{1,127} (127: names travel in 128-byte fields with their NUL). */
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
/* Like gw_models_check_adapter without the "name taken" check: the base
 * model (held, gw_model_release) for an adapter called name. */
loom_err gw_models_adapter_base(gw_models *m, const char *name, const char *base,
				gw_model **base_out);

/*
 * Adds adapter name from PEFT folder dir (relative paths are resolved with
 * realpath against the current directory) for base model base (NULL = the
 * only model): gw_models_check_adapter, then ad_adapter_load validates the
 * folder against the base model's config and is freed again. A rejected
 * adapter returns ad_adapter_load's error and message (loom_errmsg()).
 * (The path-only form, without the store: tests and tools.)
 */
loom_err gw_models_add_adapter(gw_models *m, const char *name, const char *dir, const char *base);

/*
 * Enters a copy of a. a->base must be a model of this table (LOOM_ENOTFOUND
 * otherwise). A name taken by a model is LOOM_EEXIST; one taken by an adapter
 * is LOOM_EEXIST unless replace (which overwrites that entry).
 */
loom_err gw_models_put_adapter(gw_models *m, const gw_adapter *a, bool replace);
/* Removes adapter name (LOOM_ENOTFOUND when there is none). */
loom_err gw_models_remove_adapter(gw_models *m, const char *name);
/* Copies adapter name into *out; LOOM_ENOTFOUND when there is none. */
loom_err gw_models_adapter_get(gw_models *m, const char *name, gw_adapter *out);

/* The adapter called name, or NULL (see the lifetime rule above). */
const gw_adapter *gw_models_find_adapter(const gw_models *m, const char *name);
size_t gw_models_adapter_count(const gw_models *m);
const gw_adapter *gw_models_adapter_at(const gw_models *m, size_t i);

/*
 * Resolves a request's "model": a base model (then *ad = NULL) or an adapter
 * (then *ad is it and the result is its base model). NULL when neither has
 * that name. ad may be NULL. (Lifetime rule above; the server uses acquire.)
 */
const gw_model *gw_models_resolve(const gw_models *m, const char *name, const gw_adapter **ad);
/*
 * The same for threads that run while the tables change: *base gets the base
 * model with a reference (gw_model_release); when name is an adapter, *is_ad
 * is set and *ad (may be NULL) receives a copy. LOOM_ENOTFOUND when neither.
 */
loom_err gw_models_acquire(gw_models *m, const char *name, gw_model **base, bool *is_ad,
			   gw_adapter *ad);

#endif
