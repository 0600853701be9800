/*
 * store/store.h — loom's LMDB store: content-addressed blobs, adapter and
 * model records.
 *
 * Owns: one LMDB environment per host (a directory, `--store DIR`), with
 * named databases
 *   "blobs"    sha256 (32 bytes) -> bytes (adapter blobs in loom's layout,
 *              model bundles, tokenizer.json texts)
 *   "adapters" name -> st_adapter_rec
 *   "models"   name -> st_model_rec
 * Write order (DESIGN.md): blobs are written and committed first, the
 * record last, in its own transaction, so a crash at any point leaves
 * either the old record or the new one; blobs no record references are
 * leftovers, swept by st_sweep() (st_open does it in read-write mode).
 * One writer process (the gateway, or a remote worker for its own copy);
 * many readers (workers on the same host open it read-only and read blobs
 * zero-copy out of the map).
 * Names are unique across adapters and models.
 * Threading: an st_store may be used from several threads (MDB_NOTLS);
 * writes are serialized by LMDB.
 * Must not: parse adapter or model contents (adapters/ and worker/ do).
 */
#ifndef ST_STORE_H
#define ST_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define ST_NAME_MAX 128

typedef struct st_store st_store;

typedef struct st_adapter_rec {
	char name[ST_NAME_MAX];
	char base_model[ST_NAME_MAX];
	uint8_t sha[32];          /* the adapter blob (ad_adapter_serialize) */
	uint32_t rank;            /* config r */
	uint32_t max_rank;
	float alpha;
	uint32_t targets;         /* bit t = ad_target t adapted somewhere */
	uint32_t use_rslora;
	uint64_t bytes;           /* blob size */
	uint32_t version;         /* 1 on first registration, +1 per replace */
	int64_t created;          /* unix seconds of this version */
} st_adapter_rec;

typedef struct st_model_rec {
	char name[ST_NAME_MAX];
	uint8_t sha[32];          /* the model bundle blob */
	uint8_t tokenizer_sha[32];/* the tokenizer.json blob */
	uint64_t bytes;           /* bundle size */
	uint32_t version;
	int64_t created;
} st_model_rec;

/* ST_NOSWEEP: a read-write open that keeps leftover blobs (a worker that
 * keeps fetched blobs in its own store without records, as a cache). */
enum { ST_RDONLY = 1, ST_NOSWEEP = 2 };

/* Opens (creating in read-write mode) the store in dir. flags: ST_RDONLY,
 * or 0 / ST_NOSWEEP. Read-write open clears stale reader slots and sweeps
 * leftovers (unless ST_NOSWEEP). Opening one dir several times in a process
 * shares one LMDB environment (LMDB forbids two); a read-write open fails
 * with LOOM_EBUSY while the dir is open read-only in the process. Never use
 * a store across fork(): the child opens its own. */
loom_err st_open(const char *dir, int flags, st_store **out);
void st_close(st_store *s);
const char *st_dir(const st_store *s);

/* ---- blobs ---- */

/* Stores len bytes; *sha receives their sha256. Idempotent (an existing
 * blob is not rewritten). Committed (durable) when it returns. */
loom_err st_blob_put(st_store *s, const void *data, size_t len, uint8_t sha[32]);
/* Like st_blob_put but the caller fills the bytes: fill(ctx, dst, len)
 * writes exactly len bytes into dst (LMDB MDB_RESERVE), and sha must be
 * given (computed by the caller beforehand). */
loom_err st_blob_put_fill(st_store *s, const uint8_t sha[32], size_t len,
			  void (*fill)(void *ctx, void *dst, size_t len), void *ctx);
int st_blob_has(st_store *s, const uint8_t sha[32]);

/* A zero-copy view of a blob: data points into the LMDB map and stays
 * valid until st_view_release (the view holds a read transaction). */
typedef struct st_view {
	const void *data;
	size_t len;
	void *txn;                /* private */
} st_view;
/* LOOM_ENOTFOUND when absent. With verify != 0 the bytes are re-hashed and
 * a mismatch is LOOM_EFORMAT. */
loom_err st_blob_get(st_store *s, const uint8_t sha[32], int verify, st_view *v);
void st_view_release(st_view *v);

/* ---- records ---- */

/* Registers or (replace != 0) replaces adapter r->name. Fails with
 * LOOM_EEXIST when the name exists (as adapter or model) and !replace; the
 * blob r->sha must already be in the store (LOOM_ENOTFOUND otherwise).
 * Sets version (previous + 1) and created. The previous blob becomes a
 * leftover unless another record references it. */
loom_err st_adapter_put(st_store *s, st_adapter_rec *r, int replace);
loom_err st_adapter_get(st_store *s, const char *name, st_adapter_rec *out);
loom_err st_adapter_del(st_store *s, const char *name);
/* Calls fn for every adapter in name order; stops early when fn returns
 * non-zero. */
loom_err st_adapter_each(st_store *s, int (*fn)(void *ctx, const st_adapter_rec *r), void *ctx);

loom_err st_model_put(st_store *s, st_model_rec *r, int replace);
loom_err st_model_get(st_store *s, const char *name, st_model_rec *out);
loom_err st_model_del(st_store *s, const char *name);
loom_err st_model_each(st_store *s, int (*fn)(void *ctx, const st_model_rec *r), void *ctx);

/* Deletes blobs no record references. *removed (may be NULL) counts them. */
loom_err st_sweep(st_store *s, size_t *removed);

#endif
