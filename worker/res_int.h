/*
 * worker/res_int.h — the residency's state, shared by residency.c (API:
 * registration, pins, figures) and res_loader.c (the loader thread: tier
 * moves, eviction, fetching). Nothing else includes it.
 *
 * Everything here is guarded by wk_res.mu except what a comment gives to
 * the loader thread. The loader reads bytes and builds copies outside the
 * lock; before it does, it reserves the bytes in the tier's accounting (so
 * a budget is never exceeded, not even for a moment) and marks the source
 * busy (so no one evicts it meanwhile).
 *
 * Workload: up to thousands of adapter entries, a handful of models. LRU
 * victims are found by a scan over the entries (eviction is rare next to a
 * forward pass); names resolve through a small chained hash table.
 */
#ifndef WK_RES_INT_H
#define WK_RES_INT_H

#include <pthread.h>

#include "residency.h"

enum { SRC_STORE, SRC_DIR, SRC_GIVEN, SRC_LENT };

/* A host-tier copy: raw is the allocation, data its 64-byte aligned start. */
typedef struct res_host {
	void *raw;            /* NULL = not in the host tier */
	const uint8_t *data;
	size_t len;
	uint64_t lru;
	int busy;             /* the loader reads it outside the lock */
} res_host;

/* adapter entry states */
enum {
	AS_IDLE,      /* not on the device, no load asked */
	AS_QUEUED,    /* in the load queue */
	AS_LOADING,   /* the loader works on it */
	AS_WAIT_ROOM, /* deferred: the device pool is full of pinned entries */
	AS_READY,     /* on the device (dev set) */
	AS_FAILED,    /* err says why; back to IDLE once unpinned */
};

struct wk_res_ad {
	wk_res_ad *next;      /* r->ads: every entry */
	wk_res_ad *qnext;     /* load queue or deferred list */
	int model;
	uint8_t sha[32];
	char hex[LOOM_SHA_HEX];
	char name[LOOM_NAME_MAX]; /* the newest name registered for it */
	int src;              /* SRC_STORE, SRC_DIR, SRC_GIVEN */
	char *dir;            /* SRC_DIR: the PEFT folder */
	int names;            /* registrations resolving to it */
	int refs;             /* pins (sequences) */
	int state;
	bool retry;           /* deferred once: host hit/miss already counted */
	uint64_t size;        /* device tier bytes (wk_res_dev_bytes of the blob), once read
			       * (0 = not known yet) */
	ad_adapter *dev;      /* device tier (owned) */
	uint64_t dev_bytes;   /* counted in device_bytes (0 for SRC_GIVEN) */
	uint64_t dev_lru;
	res_host host;
	loom_err err_code;
	char err[768];
};

/* name -> newest entry of (model, name) */
typedef struct res_reg {
	struct res_reg *next;
	int model;
	char name[LOOM_NAME_MAX];
	wk_res_ad *ad;
} res_reg;

/* model states */
enum {
	MS_OFF,       /* not resident */
	MS_QUEUED,    /* swap-in asked */
	MS_LOADING,   /* the loader loads it (bytes reserved) */
	MS_WAIT_ROOM, /* deferred: every resident model is busy */
	MS_ON,        /* resident (m set); the engine attaches it */
	MS_WANT_OUT,  /* resident, to be evicted once the engine detaches it */
	MS_DETACHING, /* the engine is dropping its slot */
	MS_FAILED,    /* err says why; back to OFF once unpinned */
};

/* A model's tokenizer.json as a store blob (MODEL.tokenizer_sha). */
typedef struct res_tok {
	struct res_tok *next;
	char name[LOOM_NAME_MAX];
	uint8_t sha[32];
} res_tok;

typedef struct res_model res_model;
/* residency.c (lock held): queues a warm load of mo (wk_res_model_warm). */
void wk_res_model_warm_locked(wk_res *r, res_model *mo);

typedef struct res_model {
	char name[LOOM_NAME_MAX];
	int src;              /* SRC_DIR, SRC_STORE, SRC_LENT */
	char *dir;
	uint8_t sha[32];
	char hex[LOOM_SHA_HEX];
	loom_model_config cfg;
	size_t bytes;         /* float32 weights once loaded */
	int state;
	wk_model *m;          /* owned unless SRC_LENT */
	int refs;
	uint64_t lru;
	bool reload;          /* pinned again while detaching */
	bool to_host;         /* detached: the loader keeps its bytes in RAM */
	bool warm;            /* queued by wk_res_model_warm: loaded with no request
			       * waiting, only into free room (it evicts nothing) */
	res_host host;
	loom_err err_code;
	char err[768];
} res_model;

/* A model registration waiting for its bundle to be fetched (base ""), or
 * an adapter registration waiting for its base model's (base = that
 * model). FIFO, processed by the loader. */
typedef struct res_pending {
	struct res_pending *next;
	char name[LOOM_NAME_MAX];
	char base[LOOM_NAME_MAX];
	uint8_t sha[32];
} res_pending;

#define RES_BUCKETS 256

struct wk_res {
	pthread_mutex_t mu;
	pthread_cond_t cv;        /* loader: work or room; waits for detaches */
	pthread_t thread;
	bool has_thread;
	bool stop;

	uint64_t host_budget, device_budget, model_budget; /* WK_RES_UNLIMITED = none */
	uint64_t host_bytes, device_bytes, model_bytes;
	st_store *store;
	bool own_store;
	wk_ad_dtype adapter_dtype; /* how the device tier holds adapters (wk_res_opts) */
	bool packed_models;       /* models loaded without float32 linear copies (CPU) */
	wk_res_fetch_fn fetch;
	void *fetch_ctx;
	wk_res_wake_fn wake;
	void *wake_ctx;
	int waking;               /* waker calls in flight (lock dropped) */

	res_model *models[WK_RES_MAX_MODELS];
	int n_models;
	res_pending *pending;
	res_tok *toks;            /* tokenizer blobs by model name (wk_res_model_set_tokenizer) */

	wk_res_ad *ads;
	res_reg *reg[RES_BUCKETS];
	wk_res_ad *q_head, *q_tail; /* adapter loads, FIFO */
	wk_res_ad *deferred;        /* AS_WAIT_ROOM entries */
	bool room;                  /* something became evictable or was freed */
	uint64_t clock;             /* LRU stamps */

	uint64_t host_hits, host_misses, device_hits, device_misses;
	uint64_t cold_loads, model_loads, model_evictions, device_evictions, host_evictions;
	double cold_ms;
};

/* residency.c */
uint64_t wk_res_tick(wk_res *r);
/* Frees e when no tier, pin, registration or load holds it. */
void wk_res_ad_maybe_free(wk_res *r, wk_res_ad *e);
/* Appends e to the load queue (state AS_QUEUED) and starts/wakes the loader. */
void wk_res_queue(wk_res *r, wk_res_ad *e);
void wk_res_wake_engine(wk_res *r);
void wk_res_host_drop(wk_res *r, res_host *h);
/* Registers adapter name of model index mi as blob sha. Under the lock. */
loom_err wk_res_bind_blob(wk_res *r, int mi, const char *name, const uint8_t sha[32]);
/* Lists a model (a fetched own-store registration). Under the lock. */
loom_err wk_res_model_list(wk_res *r, const char *name, int src, const char *dir,
			   const uint8_t *sha, const loom_model_config *cfg, res_model **out);

/* res_loader.c */
loom_err wk_res_loader_start(wk_res *r);
void *wk_res_loader_main(void *arg);
/* Makes room for len bytes in the host tier, evicting LRU copies nobody
 * reads; false when it cannot (len over the budget). Under the lock. */
bool wk_res_host_room(wk_res *r, uint64_t len);
/* Loads model mo on the calling thread (lock not held; bytes reserved). */
loom_err wk_res_model_load_now(wk_res *r, res_model *mo, wk_model **out, bool *from_host);
/* The store blob sha: a view (*v set, *buf NULL) or, on an own store that
 * lacked it, the fetched and verified bytes (*buf loom_malloc'ed, also
 * put into the store). Lock not held. */
loom_err wk_res_blob_get(wk_res *r, const uint8_t sha[32], bool verify, st_view *v, void **buf,
			 const void **data, size_t *len);

#endif
