/*
 * worker/kv_int.h — the KV pool's state, shared by kv.c (blocks, free
 * list, block tables) and kv_prefix.c (the prefix cache). Nothing else
 * includes it.
 *
 * Every block is in exactly one of three states:
 *  - free: on the free stack (refs 0, no key);
 *  - held: refs > 0 (one per sequence whose table lists it), keyed or not;
 *  - cached: refs 0, keyed, on the LRU list (its K/V kept for a later
 *    prompt with the same prefix; evicted, oldest first, when a
 *    reservation finds the free stack empty).
 * A keyed block is a full block whose K/V are computed, registered in the
 * hash table under its key: (namespace = model and adapter identity, the
 * parent block's id and epoch, its block_size token ids). A block's epoch
 * changes every time it is handed out afresh, so a child keyed under an
 * evicted parent can never match again: keys are exact (every field is
 * compared on a hit), the 64-bit hash only picks the bucket.
 */
#ifndef WK_KV_INT_H
#define WK_KV_INT_H

#include "kv.h"

struct wk_kvpool {
	int n_blocks;
	int block_size;
	int n_layers;
	int kvdim;
	size_t block_floats; /* n_layers * block_size * kvdim (elements) */
	bool bf16;           /* elements are BF16 (uint16_t), else float */
	size_t esize;        /* bytes per element */
	char *k;             /* [n_blocks][n_layers][block_size][kvdim] elements */
	char *v;             /* same shape */
	int32_t *free_ids;   /* [n_blocks], first n_free valid (a stack) */
	int n_free;
	/* prefix cache (kv_prefix.c); per block unless said otherwise */
	bool cache;          /* keys are registered and looked up */
	int32_t *refs;       /* sequences holding it */
	uint32_t *epoch;     /* bumped when handed out afresh */
	uint8_t *keyed;      /* registered in the table */
	uint64_t *hkey;      /* hash of its key */
	int32_t *parent;     /* parent block id, -1 = first block of a prompt */
	uint32_t *parent_epoch;
	uint8_t (*ns)[32];   /* namespace of the chain it belongs to */
	int32_t *toks;       /* [n_blocks][block_size] its token ids */
	int32_t *hnext;      /* bucket chain */
	int32_t *bucket;     /* [n_buckets] first keyed block, -1 = none */
	uint32_t bucket_mask;
	int32_t *lru_prev, *lru_next; /* cached blocks, oldest at lru_head */
	int32_t lru_head, lru_tail;
	int n_lru;
	int n_keyed;
	uint64_t evictions;
};

/* kv.c: grows kv's block table to hold need entries; -1 when out of memory */
int wk_kv_grow_table(wk_kv *kv, int need);

/* kv_prefix.c */
loom_err wk_kvpool_prefix_alloc(wk_kvpool *p);
void wk_kvpool_prefix_free(wk_kvpool *p);
/* A block taken for a new owner (from the free stack or evicted from the
 * LRU): refs 1, a new epoch, no key. */
int32_t wk_kvpool_take(wk_kvpool *p);
/* One holder lets go of block b: at refs 0 a keyed block is cached (LRU
 * tail), any other goes back on the free stack. */
void wk_kvpool_drop(wk_kvpool *p, int32_t b);

#endif
