/*
 * gateway/gw_registry.h — the gateway's registry: models and adapters kept
 * in the LMDB store, mirrored into gw_models (what requests resolve) and
 * announced to workers through gw_link.
 *
 * Owns: the store handle (opened read-write: the gateway is its writer),
 * loading every record at start-up, importing (a PEFT folder: validated by
 * ad_adapter_load, serialized to loom's adapter blob; a Hugging Face folder:
 * config + tokenizer checked, weights as one model bundle, tokenizer.json as
 * its own blob), the write order (blobs, then the record; DESIGN.md's crash
 * rule), replacing (a new version with a new content hash, announced to
 * every worker before the call returns) and deleting (the store record
 * first, then the name stops resolving; requests in flight finish). The
 * upload area <store>/uploads, emptied at open so that no half-written
 * upload survives a crash.
 * Threads: an import reads and validates its folder with no lock held
 * (regular files only: a FIFO or device is refused, not waited on); then
 * every change is serialized by one mutex (admin changes are rare and their
 * order must be the order workers see), which covers only the table, store
 * and link steps, never a file of the folder; lookups go to gw_models.
 * Error convention (the admin API maps them to HTTP): LOOM_EINVAL — the
 * request's fault (bad name, rejected folder, unknown base model; the
 * message says why), LOOM_EEXIST / LOOM_EBUSY — a conflict (409),
 * LOOM_ENOTFOUND — nothing by that name (404), anything else — the store or
 * memory failed (500).
 * Must not: speak HTTP or decide who may call it (gw_admin does).
 */
#ifndef GW_REGISTRY_H
#define GW_REGISTRY_H

#include <stdbool.h>

#include "common/err.h"
#include "gw_link.h"
#include "gw_models.h"
#include "store/store.h"

typedef struct gw_registry gw_registry;

typedef enum gw_reg_mode {
	GW_REG_CREATE,   /* LOOM_EEXIST when the name is taken */
	GW_REG_REPLACE,  /* a new version even when the content is the same */
	GW_REG_SYNC,     /* start-up flags: unchanged content (and base) keeps the
			  * version; changed content makes a new one */
} gw_reg_mode;

/* Opens the store in dir (created when missing) read-write, empties
 * dir/uploads. models is borrowed and must outlive the registry. */
loom_err gw_registry_open(const char *dir, gw_models *models, gw_registry **out);
void gw_registry_close(gw_registry *r);
st_store *gw_registry_store(gw_registry *r);
/* dir/uploads: where uploads are written before they are imported. */
const char *gw_registry_upload_dir(const gw_registry *r);

/* Loads every model record, then every adapter record, into gw_models. A
 * record that cannot be loaded (its base model missing, a blob that fails)
 * is skipped with a warning; *skipped (may be NULL) counts them. */
loom_err gw_registry_load(gw_registry *r, size_t *skipped);

/* What a gw_link must announce from its start: fills o->models / o->adapters
 * (allocated; gw_registry_link_opts_fini frees them). */
loom_err gw_registry_link_opts(gw_registry *r, gw_link_opts *o);
void gw_registry_link_opts_fini(gw_link_opts *o);
/* From now on, changes are announced on l (borrowed; detach with NULL
 * before destroying l). */
void gw_registry_attach(gw_registry *r, gw_link *l);

/* Imports the Hugging Face folder dir as model name with chat template
 * tmpl. *changed (may be NULL) tells whether the store changed. */
loom_err gw_registry_import_model(gw_registry *r, const char *name, const char *dir,
				  gw_chat_tmpl tmpl, gw_reg_mode mode, bool *changed);
/*
 * Imports the PEFT folder dir as adapter name of base model base (NULL = the
 * only model). path is what /v1/models shows as its root ("" or NULL for
 * uploads). *out (may be NULL) receives the registered adapter.
 */
/* Reading an import's files (model or adapter folder) may take at most ms
 * (<= 0: no limit); past it the import fails with LOOM_ETIMEDOUT (the read
 * goes on, abandoned, on a thread of its own). Set before serving. */
void gw_registry_set_import_timeout(gw_registry *r, long ms);

loom_err gw_registry_import_adapter(gw_registry *r, const char *name, const char *base,
				    const char *dir, const char *path, gw_reg_mode mode,
				    gw_adapter *out);
loom_err gw_registry_delete_adapter(gw_registry *r, const char *name);
loom_err gw_registry_delete_model(gw_registry *r, const char *name);

#endif
