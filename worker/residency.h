/*
 * worker/residency.h — where a worker's adapters and base models live, and
 * moving them between tiers by demand (S-LoRA / dLoRA / MuxServe style).
 *
 * Tiers: 0 the source (the LMDB store, read zero-copy; or a folder on disk
 * in path mode; or the gateway: a blob an own store lacks, or any blob of a
 * worker without a store, is fetched, its sha256 verified, and kept in the
 * own store if there is one); 1 host
 * RAM, an LRU cache with a byte budget (adapter blobs and model bundles);
 * 2 the device: an adapter pool with a byte budget (on the CPU backend an
 * arena per adapter with the same accounting: the ad_adapter the forward
 * reads) and the resident base models (float32 weights) under their own
 * byte budget.
 *
 * Adapters are entries keyed by (base model, content sha256): a replaced
 * adapter is a new entry, and a name resolves to its newest entry only, so
 * an old version is never handed to a new request. Requests pin entries
 * (acquire/release, reference counts); eviction takes the least recently
 * used entry nobody pins and never lets a tier exceed its budget (an entry
 * that cannot fit even in an empty tier fails the requests that want it).
 * Models are pinned by their waiting and running sequences; an idle model
 * is evicted to host RAM (its bundle bytes), then dropped from RAM when the
 * host budget needs the room.
 *
 * Loads run on one loader thread (started on first need), never on the
 * caller's: acquire only queues a load (prefetch at SUBMIT) and returns.
 * Resident models are attached to and detached from the engine by the
 * engine thread itself (it owns their KV pools): the residency asks by
 * state (wk_res_model_state) and wakes the engine through the waker.
 *
 * Threads: every function is safe from any thread (one mutex); the waker
 * and the fetch callback run on the loader thread without that mutex.
 * Must not: know about sequences, batches or sockets.
 */
#ifndef WK_RESIDENCY_H
#define WK_RESIDENCY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../adapters/adapter.h"
#include "../common/err.h"
#include "../common/proto.h"
#include "../store/store.h"
#include "model.h"

#define WK_RES_UNLIMITED UINT64_MAX
#define WK_RES_MAX_MODELS 64

typedef struct wk_res wk_res;
/* An adapter entry (one content hash for one base model). */
typedef struct wk_res_ad wk_res_ad;

/* Fetches blob hex (64 lowercase hex digits) from the gateway: *buf
 * (loom_malloc'ed, caller frees) of *len bytes, not yet verified.
 * LOOM_ENOTFOUND when the gateway does not have it. May block (seconds). */
typedef loom_err (*wk_res_fetch_fn)(void *ctx, const char *hex, void **buf, size_t *len);
/* Tells the engine that a load finished, failed, or that a model waits to
 * be detached. Must not block or call back into the residency. */
typedef void (*wk_res_wake_fn)(void *ctx);

/* How the device tier holds adapters (wk_res_opts.adapter_dtype). */
typedef enum wk_ad_dtype { WK_AD_F32 = 0, WK_AD_BF16, WK_AD_AUTO } wk_ad_dtype;

typedef struct wk_res_opts {
	uint64_t host_budget;   /* bytes of host RAM cache; 0 = no host cache */
	uint64_t device_budget; /* bytes of the device adapter pool; 0 = unlimited */
	uint64_t model_budget;  /* bytes of resident base models; 0 = unlimited */
	st_store *store;        /* borrowed, may be NULL (path mode only) */
	bool own_store;         /* store is this worker's own: fetch what it lacks */
	bool packed_models;     /* the CPU backend: models are loaded without float32
				 * copies of their linear weights (wk_model_load_ex
				 * f32_linear false: about half the bytes of a BF16
				 * model), and counted so in model_budget */
	wk_ad_dtype adapter_dtype; /* how the device tier holds adapters: WK_AD_BF16,
				 * BF16 copies made by the loader (ad_adapter_to_bf16,
				 * the CUDA forward's form), counted at half the blob;
				 * WK_AD_AUTO, BF16 when that rounds nothing
				 * (ad_adapter_bf16_exact), else as WK_AD_F32 */
	wk_res_fetch_fn fetch;  /* with own_store */
	void *fetch_ctx;
} wk_res_opts;

/* opts NULL: no host cache, unlimited device tiers, no store. */
loom_err wk_res_create(const wk_res_opts *opts, wk_res **out);
/* Joins the loader and frees everything; nothing may be pinned any more
 * (the engine using it is destroyed first). NULL is a no-op. */
void wk_res_destroy(wk_res *r);
/* Sets (or, fn NULL, clears) the engine's waker. */
void wk_res_set_waker(wk_res *r, wk_res_wake_fn fn, void *ctx);
/* Sets the fetch callback (own-store mode), e.g. once the link exists. */
void wk_res_set_fetch(wk_res *r, wk_res_fetch_fn fn, void *ctx);

/* ---- base models ---- */

typedef enum wk_res_state {
	WK_RES_LOADING = 0, /* not usable yet (queued, loading, or waiting for room) */
	WK_RES_READY = 1,   /* on the device */
	WK_RES_FAILED = 2,  /* the load failed; err says why */
} wk_res_state;

/* Registers model name whose weights are in folder dir: reads and checks
 * config.json now, loads nothing. A name already listed keeps the source
 * it has (a worker serves one version of a model: the operator's --model
 * folder or the first announcement); another source is only logged. */
loom_err wk_res_model_add_dir(wk_res *r, const char *name, const char *dir);
/* Registers model name whose weights are the store bundle sha (the config
 * comes from the bundle's metadata). When the blob is not at hand (an own
 * store lacking it, or no store) the registration completes on the loader
 * thread after fetching it; the model is listed from then on, and adapters
 * announced for it meanwhile are registered right after it. */
loom_err wk_res_model_add_blob(wk_res *r, const char *name, const uint8_t sha[32]);
/* Lends a loaded model (borrowed: outlives the residency): always resident,
 * never evicted; its bytes count towards the model tier. */
loom_err wk_res_model_lend(wk_res *r, wk_model *m);
/* Loads model i now, on the calling thread, if it fits the model budget
 * without evicting anything (start-up; errors as wk_model_load). */
loom_err wk_res_model_preload(wk_res *r, int i);

/* Models listed so far (indexes are stable: 0 .. count-1). */
int wk_res_model_count(wk_res *r);
/* Index of name, or -1. */
int wk_res_model_find(wk_res *r, const char *name);
/* Name, config and weight bytes of model i (copied out). */
void wk_res_model_info(wk_res *r, int i, char name[LOOM_NAME_MAX], loom_model_config *cfg,
		       size_t *bytes);
/* The lent model called name, or NULL. */
const wk_model *wk_res_model_lent(wk_res *r, const char *name);

/* The tokenizer.json text of model i (structured outputs need each id's
 * bytes): a folder's tokenizer.json, the blob announced for it
 * (wk_res_model_set_tokenizer), or the store blob its model record names
 * (a store this worker reads, whose record holds the same bundle).
 * *json loom_malloc'ed (NUL-terminated, caller frees), *len bytes.
 * LOOM_ENOTFOUND (with a message) for a lent model, a worker without the
 * gateway's store, or a record of another version. May read a file: call
 * it off the engine thread. */
loom_err wk_res_model_tokenizer(wk_res *r, int i, char **json, size_t *len);

/* Names the store blob holding model name's tokenizer.json (the MODEL
 * message's tokenizer_sha): wk_res_model_tokenizer then reads it from the
 * store, or fetches it from the gateway (verified, kept in an own store),
 * so a worker with its own store or none can serve structured outputs. */
loom_err wk_res_model_set_tokenizer(wk_res *r, const char *name, const uint8_t sha[32]);

/* Brings model i onto the device on the loader thread with no request
 * waiting for it, when the worker has no model on its device (nor coming)
 * and it fits the model budget (it evicts nothing): a worker started or
 * restarted without --model serves its first request warm, and the
 * gateway's router, which prefers workers holding a model, sees it there.
 * A model whose bundle is still being fetched is warmed once listed. */
void wk_res_model_warm(wk_res *r, int i);

/* Pins model i for one sequence and, unless it is resident, queues its
 * swap-in. */
void wk_res_model_acquire(wk_res *r, int i);
void wk_res_model_release(wk_res *r, int i);
/* READY sets *m (valid until the engine detaches it); FAILED copies the
 * reason into err and its code into *code (either may be NULL). */
wk_res_state wk_res_model_state(wk_res *r, int i, wk_model **m, loom_err *code, char *err,
				size_t n);
/* Engine thread: true when model i (attached, nobody pinning it) is to be
 * evicted now; the engine then drops what it holds for it and calls
 * wk_res_model_detached. */
bool wk_res_model_begin_detach(wk_res *r, int i);
void wk_res_model_detached(wk_res *r, int i);

/* ---- adapters ---- */

/* Registers adapter name of base model `model` as store blob sha (loaded
 * when first asked for: from the store, or fetched from the gateway when
 * the worker has no store or its own store lacks it). LOOM_ENOTFOUND when
 * the model is unknown. */
loom_err wk_res_adapter_add_blob(wk_res *r, const char *model, const char *name,
				 const uint8_t sha[32]);
/* Registers the PEFT folder dir: loads and validates it now (on the calling
 * thread; errors as ad_adapter_load), keeps its blob in the host tier when
 * it fits; the folder is its tier 0. */
loom_err wk_res_adapter_add_dir(wk_res *r, const char *model, const char *name, const char *dir);
/* Registers an adapter already in memory (takes ownership of a in every
 * case): always on the device, outside the pool's budget, never evicted;
 * freed once replaced and unpinned. */
loom_err wk_res_adapter_give(wk_res *r, const char *model, ad_adapter *a);

/* Pins the current entry of (model i, name) for one sequence and, unless
 * it is on the device, queues its load (prefetch). NULL when no such
 * adapter is registered. */
wk_res_ad *wk_res_adapter_acquire(wk_res *r, int model, const char *name);
void wk_res_adapter_release(wk_res *r, wk_res_ad *h);
/* The entry's identity: its content sha256 (a store blob or a folder's
 * blob), or for an adapter given in memory a value no other entry of the
 * process has. Two entries with equal ids hold the same weights. */
void wk_res_adapter_id(const wk_res_ad *h, uint8_t id[32]);
/* READY sets *a (valid while pinned); FAILED copies the reason and code
 * (LOOM_ERANGE: larger than a whole tier). */
wk_res_state wk_res_adapter_state(wk_res *r, wk_res_ad *h, const ad_adapter **a, loom_err *code,
				  char *err, size_t n);

/* ---- figures ---- */

typedef struct wk_res_stats {
	uint64_t host_bytes, host_budget;     /* budget WK_RES_UNLIMITED = none */
	uint64_t device_bytes, device_budget;
	uint64_t model_bytes, model_budget;
	uint64_t host_hits, host_misses;      /* adapter loads to the device: host copy
						 found or not (once per load, however
						 often it waits for room) */
	uint64_t device_hits, device_misses;  /* adapter acquires: on the device or not */
	uint64_t cold_loads;                  /* adapter reads from tier 0 */
	double cold_load_ms;
	uint64_t model_loads, model_evictions;
	uint64_t device_evictions, host_evictions;
	uint32_t adapters_device, adapters_host;
	uint32_t pending_loads;               /* queued or loading */
} wk_res_stats;
void wk_res_stats_get(wk_res *r, wk_res_stats *out);

/* Fills a RESIDENCY message (items loom_malloc'ed: free with
 * wk_res_residency_fini). Budgets without a limit are sent as 0. */
loom_err wk_res_residency(wk_res *r, loom_msg_residency *out);
void wk_res_residency_fini(loom_msg_residency *m);

/* Names of the listed models into names[0..max) (HELLO). Returns the count. */
int wk_res_model_names(wk_res *r, char (*names)[LOOM_NAME_MAX], int max);

#endif
