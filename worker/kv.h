/*
 * worker/kv.h — the paged KV cache: one block pool per model per worker,
 * and each sequence's block table.
 *
 * Owns: a pool of fixed-size blocks (block_size token positions each; every
 * block holds K and V of every layer for those positions), its free list,
 * and wk_kv, a sequence's view: its filled length and the ids of the blocks
 * it holds, in position order (position p lives in block blocks[p / bs] at
 * slot p % bs). Pool layout (float32, or BF16 for a pool made with
 * WK_KV_BF16: half the bytes, each value rounded to nearest even as it is
 * written):
 *   k[block][layer][slot][kvdim] and v[block][layer][slot][kvdim]
 * wk_kv_reserve takes blocks all-or-nothing, so the engine can preempt
 * another sequence (wk_kv_release) and retry: nothing fails because the
 * cache is full.
 * Prefix cache (on by default, wk_kvpool_set_prefix_cache): a full block
 * whose K/V are computed can be registered (wk_kv_commit) under its key —
 * the sequence's namespace (the engine's hash of model and adapter
 * content), its parent block and its token ids, so the key stands for the
 * whole prefix up to its end. A released keyed block stays cached (its
 * K/V kept) until a reservation needs the room (LRU); a new sequence takes
 * the cached or running blocks that continue its chain (wk_kv_match)
 * instead of computing them. Blocks held by several sequences are shared
 * read-only: a sequence only ever writes positions >= its len, and a
 * matched block is full. Free blocks as the engine counts them
 * (wk_kvpool_free_blocks) include the cached ones: a reservation takes
 * them (oldest first) when the free stack is empty.
 * Threading: the engine thread owns the pool and every wk_kv on it.
 * Must not: decide who is preempted (the engine's scheduler does).
 */
#ifndef WK_KV_H
#define WK_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/err.h"
#include "model.h"

#define WK_KV_BLOCK 16 /* default positions per block */

typedef struct wk_kvpool wk_kvpool;

/* What a pool's elements are. */
typedef enum wk_kv_dtype { WK_KV_F32 = 0, WK_KV_BF16 } wk_kv_dtype;

/* Pool of n_blocks blocks of block_size positions for model m (float32). */
loom_err wk_kvpool_create(const wk_model *m, int n_blocks, int block_size, wk_kvpool **out);
/* The same with elements of type dt. */
loom_err wk_kvpool_create_dt(const wk_model *m, int n_blocks, int block_size, wk_kv_dtype dt,
			     wk_kvpool **out);
wk_kv_dtype wk_kvpool_dtype(const wk_kvpool *p);
void wk_kvpool_destroy(wk_kvpool *p);
int wk_kvpool_block_size(const wk_kvpool *p);
int wk_kvpool_n_blocks(const wk_kvpool *p);
int wk_kvpool_free_blocks(const wk_kvpool *p);
/* Base of block b's K (or V) for layer l: [block_size, kvdim] floats (a
 * float32 pool only). */
float *wk_kvpool_k(const wk_kvpool *p, int32_t block, int layer);
float *wk_kvpool_v(const wk_kvpool *p, int32_t block, int layer);
/* The same for either element type ([block_size, kvdim] elements). */
void *wk_kvpool_k_raw(const wk_kvpool *p, int32_t block, int layer);
void *wk_kvpool_v_raw(const wk_kvpool *p, int32_t block, int layer);
/* Elements from block b to block b+1 of one layer (n_layers*block_size*kvdim):
 * block b of layer l is wk_kvpool_k(p, 0, l) + b * wk_kvpool_block_floats(p). */
size_t wk_kvpool_block_floats(const wk_kvpool *p);
/* Whether the pool was made for this shape (layers, kv heads, head_dim). */
bool wk_kvpool_fits(const wk_kvpool *p, const loom_model_config *c);
/* K and V bytes one position takes in a float32 pool (or one of dt) for
 * config c (for sizing). */
size_t wk_kv_bytes_per_position(const loom_model_config *c);
size_t wk_kv_bytes_per_position_dt(const loom_model_config *c, wk_kv_dtype dt);

typedef struct wk_kv {
	wk_kvpool *pool;
	int len;          /* positions filled so far */
	int capacity;     /* positions the held blocks cover (n_blocks * block_size) */
	int n_blocks;     /* blocks held */
	int cap_table;    /* entries allocated in blocks[] */
	int32_t *blocks;  /* [cap_table], first n_blocks valid */
	int own_pool;     /* 1 when created by wk_kv_create (private pool) */
	int n_keyed;      /* blocks[0 .. n_keyed) are keyed (matched or committed) */
	uint8_t ns[32];   /* prefix-cache namespace (wk_kv_set_ns); zeros = none set */
} wk_kv;

/* Binds an empty sequence to pool (no blocks taken yet). */
void wk_kv_init(wk_kv *kv, wk_kvpool *pool);
/* Ensures capacity >= len + n by taking blocks from the pool. All or
 * nothing: LOOM_EBUSY (nothing taken) when too few blocks are free;
 * LOOM_ENOMEM if the block table cannot grow. */
loom_err wk_kv_reserve(wk_kv *kv, int n);
/* Returns every block to the pool; len = 0. The kv stays bound. */
void wk_kv_release(wk_kv *kv);
/* Frees the block table, releasing any blocks still held. */
void wk_kv_fini(wk_kv *kv);
/* Copies the K and V rows ([n, kvdim] each) of positions len .. len+n-1
 * into layer l of the held blocks (len is not changed: the forward grows it
 * once after every layer is written). Needs len + n <= capacity. */
void wk_kv_write(wk_kv *kv, int layer, const float *k, const float *v, int n);

/* ---- prefix cache ---- */

/* On (the default) or off; off forgets every key (cached blocks become
 * free) and makes wk_kv_match / wk_kv_commit no-ops. */
void wk_kvpool_set_prefix_cache(wk_kvpool *p, bool on);
bool wk_kvpool_prefix_cache(const wk_kvpool *p);
typedef struct wk_kv_prefix_stats {
	int keyed;          /* blocks registered (held or cached) */
	int cached;         /* of those, held by nobody (evictable) */
	uint64_t evictions; /* cached blocks taken for new owners so far */
} wk_kv_prefix_stats;
void wk_kvpool_prefix_stats(const wk_kvpool *p, wk_kv_prefix_stats *out);

/* Sets the namespace of kv's chain: every block it matches or registers is
 * keyed under it (blocks of different namespaces never match). The kv must
 * hold no blocks. */
void wk_kv_set_ns(wk_kv *kv, const uint8_t ns[32]);
/* When kv holds exactly its keyed blocks and len is at their end: takes
 * the keyed block continuing its chain with token ids toks[block_size]
 * (shared; a cached one leaves the LRU), len grows by block_size, true.
 * False (nothing changed) on a miss, with the cache off, or when the table
 * cannot grow. */
bool wk_kv_match(wk_kv *kv, const int32_t *toks);
/* Registers block n_keyed of kv, whose K/V are written ((n_keyed + 1) *
 * block_size <= len), under its key with token ids toks[block_size]; when
 * an identical keyed block exists already (a sequence with the same
 * prefix computed it meanwhile) kv switches to that one and lets go of its
 * own. n_keyed grows by one. No-op with the cache off. */
void wk_kv_commit(wk_kv *kv, const int32_t *toks);

/* Convenience for tests and single sequences: a wk_kv with a private pool
 * big enough for capacity positions, all reserved (blocks of
 * min(capacity, WK_KV_BLOCK) positions, so capacity is exact up to 16 and
 * rounded up to whole blocks beyond). capacity <= 0 is LOOM_EINVAL.
 * wk_kv_destroy frees the pool too. */
loom_err wk_kv_create(const wk_model *m, int capacity, wk_kv **out);
/* The same with a pool of dt. */
loom_err wk_kv_create_dt(const wk_model *m, int capacity, wk_kv_dtype dt, wk_kv **out);
void wk_kv_destroy(wk_kv *kv);

#endif
