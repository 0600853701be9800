/*
 * worker/kv.h — the paged KV cache: one block pool per model per worker,
 * and each sequence's block table.
 *
 * Owns: a pool of fixed-size blocks (block_size token positions each; every
 * block holds K and V of every layer for those positions), its free list,
 * and wk_kv, a sequence's view: its filled length and the ids of the blocks
 * it holds, in position order (position p lives in block blocks[p / bs] at
 * slot p % bs). Pool layout (float32):
 *   k[block][layer][slot][kvdim] and v[block][layer][slot][kvdim]
 * wk_kv_reserve takes blocks all-or-nothing, so the engine can preempt
 * another sequence (wk_kv_release) and retry: nothing fails because the
 * cache is full.
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

/* Pool of n_blocks blocks of block_size positions for model m. */
loom_err wk_kvpool_create(const wk_model *m, int n_blocks, int block_size, wk_kvpool **out);
void wk_kvpool_destroy(wk_kvpool *p);
int wk_kvpool_block_size(const wk_kvpool *p);
int wk_kvpool_n_blocks(const wk_kvpool *p);
int wk_kvpool_free_blocks(const wk_kvpool *p);
/* Base of block b's K (or V) for layer l: [block_size, kvdim] floats. */
float *wk_kvpool_k(const wk_kvpool *p, int32_t block, int layer);
float *wk_kvpool_v(const wk_kvpool *p, int32_t block, int layer);
/* Floats from block b to block b+1 of one layer (n_layers*block_size*kvdim):
 * block b of layer l is wk_kvpool_k(p, 0, l) + b * wk_kvpool_block_floats(p). */
size_t wk_kvpool_block_floats(const wk_kvpool *p);
/* Whether the pool was made for this shape (layers, kv heads, head_dim). */
bool wk_kvpool_fits(const wk_kvpool *p, const loom_model_config *c);
/* K and V bytes one position takes in a pool for config c (for sizing). */
size_t wk_kv_bytes_per_position(const loom_model_config *c);

typedef struct wk_kv {
	wk_kvpool *pool;
	int len;          /* positions filled so far */
	int capacity;     /* positions the held blocks cover (n_blocks * block_size) */
	int n_blocks;     /* blocks held */
	int cap_table;    /* entries allocated in blocks[] */
	int32_t *blocks;  /* [cap_table], first n_blocks valid */
	int own_pool;     /* 1 when created by wk_kv_create (private pool) */
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

/* Convenience for tests and single sequences: a wk_kv with a private pool
 * big enough for capacity positions, all reserved (blocks of
 * min(capacity, WK_KV_BLOCK) positions, so capacity is exact up to 16 and
 * rounded up to whole blocks beyond). capacity <= 0 is LOOM_EINVAL.
 * wk_kv_destroy frees the pool too. */
loom_err wk_kv_create(const wk_model *m, int capacity, wk_kv **out);
void wk_kv_destroy(wk_kv *kv);

#endif
