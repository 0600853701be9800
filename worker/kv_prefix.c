/*
 * worker/kv_prefix.c — the KV pool's prefix cache (see kv.h and the block
 * states in kv_int.h).
 *
 * Data: per block its key fields, a bucket chain (hnext) of a hash table
 * with a power-of-two number of buckets >= 2 * n_blocks, and a doubly
 * linked LRU list of cached blocks. The workload: a new sequence looks up
 * its prompt block by block (one hash and one bucket walk each); a forward
 * registers the blocks it filled; a finished sequence's blocks move to the
 * LRU tail, last block first, so a chain's tail is evicted before its
 * head (a head without its tail still serves shorter prompts; a tail
 * without its head serves nobody). All O(1) per block.
 * Threading: the engine thread owns the pool (kv.h).
 */
#include "kv_int.h"

#include <assert.h>
#include <string.h>

#include "../common/alloc.h"

loom_err wk_kvpool_prefix_alloc(wk_kvpool *p)
{
	size_t nb = (size_t)p->n_blocks;
	uint32_t nbk = 1;

	while (nbk < 2 * nb && nbk < (1u << 30))
		nbk <<= 1;
	p->refs = loom_calloc(nb, sizeof *p->refs);
	p->epoch = loom_calloc(nb, sizeof *p->epoch);
	p->keyed = loom_calloc(nb, sizeof *p->keyed);
	p->hkey = loom_calloc(nb, sizeof *p->hkey);
	p->parent = loom_calloc(nb, sizeof *p->parent);
	p->parent_epoch = loom_calloc(nb, sizeof *p->parent_epoch);
	p->ns = loom_calloc(nb, sizeof *p->ns);
	p->toks = loom_calloc(nb * (size_t)p->block_size, sizeof *p->toks);
	p->hnext = loom_calloc(nb, sizeof *p->hnext);
	p->lru_prev = loom_calloc(nb, sizeof *p->lru_prev);
	p->lru_next = loom_calloc(nb, sizeof *p->lru_next);
	p->bucket = loom_malloc(nbk * sizeof *p->bucket);
	if (!p->refs || !p->epoch || !p->keyed || !p->hkey || !p->parent || !p->parent_epoch ||
	    !p->ns || !p->toks || !p->hnext || !p->lru_prev || !p->lru_next || !p->bucket)
		return LOOM_ENOMEM;
	for (uint32_t i = 0; i < nbk; i++)
		p->bucket[i] = -1;
	p->bucket_mask = nbk - 1;
	p->lru_head = p->lru_tail = -1;
	p->cache = true;
	return LOOM_OK;
}

void wk_kvpool_prefix_free(wk_kvpool *p)
{
	loom_free(p->refs);
	loom_free(p->epoch);
	loom_free(p->keyed);
	loom_free(p->hkey);
	loom_free(p->parent);
	loom_free(p->parent_epoch);
	loom_free(p->ns);
	loom_free(p->toks);
	loom_free(p->hnext);
	loom_free(p->lru_prev);
	loom_free(p->lru_next);
	loom_free(p->bucket);
}

/* ------------------------------------------------------------------ */
/* keys                                                                */
/* ------------------------------------------------------------------ */

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t key_hash(const wk_kvpool *p, const uint8_t ns[32], int32_t parent,
			 uint32_t parent_epoch, const int32_t *toks)
{
	uint64_t h, n;

	memcpy(&n, ns, sizeof n);
	h = mix64(n ^ ((uint64_t)(uint32_t)parent << 32 | parent_epoch));
	for (int i = 0; i < p->block_size; i++)
		h = (h ^ (uint32_t)toks[i]) * 0x100000001b3ull;
	return mix64(h);
}

/* The keyed block with exactly this key, or -1. */
static int32_t find(const wk_kvpool *p, uint64_t h, const uint8_t ns[32], int32_t parent,
		    uint32_t parent_epoch, const int32_t *toks)
{
	size_t row = (size_t)p->block_size * sizeof *toks;

	for (int32_t b = p->bucket[h & p->bucket_mask]; b >= 0; b = p->hnext[b])
		if (p->hkey[b] == h && p->parent[b] == parent &&
		    p->parent_epoch[b] == parent_epoch && !memcmp(p->ns[b], ns, 32) &&
		    !memcmp(p->toks + (size_t)b * p->block_size, toks, row))
			return b;
	return -1;
}

static void unkey(wk_kvpool *p, int32_t b)
{
	int32_t *pp = &p->bucket[p->hkey[b] & p->bucket_mask];

	while (*pp != b)
		pp = &p->hnext[*pp];
	*pp = p->hnext[b];
	p->keyed[b] = 0;
	p->n_keyed--;
}

/* ------------------------------------------------------------------ */
/* LRU of cached blocks                                                */
/* ------------------------------------------------------------------ */

static void lru_remove(wk_kvpool *p, int32_t b)
{
	int32_t pv = p->lru_prev[b], nx = p->lru_next[b];

	if (pv >= 0)
		p->lru_next[pv] = nx;
	else
		p->lru_head = nx;
	if (nx >= 0)
		p->lru_prev[nx] = pv;
	else
		p->lru_tail = pv;
	p->n_lru--;
}

static void lru_append(wk_kvpool *p, int32_t b)
{
	p->lru_prev[b] = p->lru_tail;
	p->lru_next[b] = -1;
	if (p->lru_tail >= 0)
		p->lru_next[p->lru_tail] = b;
	else
		p->lru_head = b;
	p->lru_tail = b;
	p->n_lru++;
}

/* ------------------------------------------------------------------ */
/* blocks changing hands                                               */
/* ------------------------------------------------------------------ */

int32_t wk_kvpool_take(wk_kvpool *p)
{
	int32_t b;

	if (p->n_free > 0) {
		b = p->free_ids[--p->n_free];
	} else {
		assert(p->n_lru > 0);
		b = p->lru_head;
		lru_remove(p, b);
		unkey(p, b);
		p->evictions++;
	}
	p->refs[b] = 1;
	p->epoch[b]++;
	return b;
}

void wk_kvpool_drop(wk_kvpool *p, int32_t b)
{
	assert(p->refs[b] > 0);
	if (--p->refs[b] > 0)
		return;
	if (p->keyed[b])
		lru_append(p, b);
	else
		p->free_ids[p->n_free++] = b;
}

/* ------------------------------------------------------------------ */
/* public                                                              */
/* ------------------------------------------------------------------ */

void wk_kvpool_set_prefix_cache(wk_kvpool *p, bool on)
{
	p->cache = on;
	if (on)
		return;
	/* forget every key: cached blocks become free, held ones plain */
	while (p->n_lru > 0) {
		int32_t b = p->lru_head;
		lru_remove(p, b);
		unkey(p, b);
		p->free_ids[p->n_free++] = b;
	}
	for (int32_t b = 0; b < p->n_blocks; b++)
		if (p->keyed[b])
			unkey(p, b);
}

bool wk_kvpool_prefix_cache(const wk_kvpool *p)
{
	return p->cache;
}

void wk_kvpool_prefix_stats(const wk_kvpool *p, wk_kv_prefix_stats *out)
{
	out->keyed = p->n_keyed;
	out->cached = p->n_lru;
	out->evictions = p->evictions;
}

void wk_kv_set_ns(wk_kv *kv, const uint8_t ns[32])
{
	assert(kv->n_blocks == 0);
	memcpy(kv->ns, ns, 32);
}

/* The parent fields of block j of kv's chain. */
static void parent_of(const wk_kv *kv, int j, int32_t *parent, uint32_t *epoch)
{
	*parent = j > 0 ? kv->blocks[j - 1] : -1;
	*epoch = j > 0 ? kv->pool->epoch[*parent] : 0;
}

bool wk_kv_match(wk_kv *kv, const int32_t *toks)
{
	wk_kvpool *p = kv->pool;
	int j = kv->n_blocks, bs = p->block_size;
	int32_t parent, b;
	uint32_t pe;

	if (!p->cache || kv->len != j * bs || kv->n_keyed != j)
		return false;
	if (j == kv->cap_table && wk_kv_grow_table(kv, j + 1))
		return false;
	parent_of(kv, j, &parent, &pe);
	b = find(p, key_hash(p, kv->ns, parent, pe, toks), kv->ns, parent, pe, toks);
	if (b < 0)
		return false;
	if (p->refs[b]++ == 0)
		lru_remove(p, b);
	kv->blocks[kv->n_blocks++] = b;
	kv->n_keyed++;
	kv->capacity = kv->n_blocks * bs;
	kv->len = kv->capacity;
	return true;
}

void wk_kv_commit(wk_kv *kv, const int32_t *toks)
{
	wk_kvpool *p = kv->pool;
	int j = kv->n_keyed, bs = p->block_size;
	int32_t parent, own, b;
	uint32_t pe;
	uint64_t h;

	assert((j + 1) * bs <= kv->len && j < kv->n_blocks);
	if (!p->cache)
		return;
	own = kv->blocks[j];
	parent_of(kv, j, &parent, &pe);
	h = key_hash(p, kv->ns, parent, pe, toks);
	b = find(p, h, kv->ns, parent, pe, toks);
	kv->n_keyed++;
	if (b == own)
		return;
	if (b >= 0) {
		/* the same block computed by another sequence meanwhile: share
		 * it, so the chain goes on through one block */
		if (p->refs[b]++ == 0)
			lru_remove(p, b);
		kv->blocks[j] = b;
		wk_kvpool_drop(p, own);
		return;
	}
	if (p->keyed[own]) /* never: a held block is keyed only by its chain */
		return;
	p->keyed[own] = 1;
	p->n_keyed++;
	p->hkey[own] = h;
	p->parent[own] = parent;
	p->parent_epoch[own] = pe;
	memcpy(p->ns[own], kv->ns, 32);
	memcpy(p->toks + (size_t)own * bs, toks, (size_t)bs * sizeof *toks);
	p->hnext[own] = p->bucket[h & p->bucket_mask];
	p->bucket[h & p->bucket_mask] = own;
}
