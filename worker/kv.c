/*
 * worker/kv.c — the paged KV cache (see kv.h).
 *
 * Pool: one allocation, K blocks then V blocks, each block
 * [n_layers][block_size][kvdim] elements (float32, or BF16 for a pool made
 * with WK_KV_BF16: rounded to nearest even as written), so one layer of one block is a
 * contiguous [block_size, kvdim] slab and block b of layer l sits at
 * base + b * block_floats + l * block_size * kvdim. Free blocks are a LIFO
 * stack of ids (a freed block is the next one handed out, still warm in
 * cache). The workload: tens of sequences taking a block every block_size
 * decode steps and giving all of theirs back at once when they finish or are
 * preempted, so both ends are O(blocks moved). Blocks change hands through
 * wk_kvpool_take / wk_kvpool_drop (kv_prefix.c), which keep the reference
 * counts and the prefix cache's LRU.
 */
#include "kv_int.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "../common/alloc.h"
#include "../common/dtype.h"


size_t wk_kv_bytes_per_position(const loom_model_config *c)
{
	return wk_kv_bytes_per_position_dt(c, WK_KV_F32);
}

size_t wk_kv_bytes_per_position_dt(const loom_model_config *c, wk_kv_dtype dt)
{
	return 2 * (size_t)c->n_layers * (size_t)c->n_kv_heads * (size_t)c->head_dim *
	       (dt == WK_KV_BF16 ? sizeof(uint16_t) : sizeof(float));
}

loom_err wk_kvpool_create(const wk_model *m, int n_blocks, int block_size, wk_kvpool **out)
{
	return wk_kvpool_create_dt(m, n_blocks, block_size, WK_KV_F32, out);
}

loom_err wk_kvpool_create_dt(const wk_model *m, int n_blocks, int block_size, wk_kv_dtype dt,
			     wk_kvpool **out)
{
	const loom_model_config *c = &m->cfg;
	wk_kvpool *p;
	size_t per_pos = wk_kv_bytes_per_position_dt(c, dt);

	*out = NULL;
	if (n_blocks <= 0 || block_size <= 0)
		return loom_fail(LOOM_EINVAL, "kv pool: %d blocks of %d positions: both must be "
				 "positive", n_blocks, block_size);
	if ((size_t)block_size > SIZE_MAX / per_pos ||
	    (size_t)n_blocks > SIZE_MAX / 2 / ((size_t)block_size * per_pos))
		return loom_fail(LOOM_ERANGE, "kv pool: %d blocks of %d positions is too large",
				 n_blocks, block_size);
	p = loom_calloc(1, sizeof *p);
	if (!p)
		return loom_fail(LOOM_ENOMEM, "kv pool: out of memory");
	p->n_blocks = n_blocks;
	p->block_size = block_size;
	p->n_layers = c->n_layers;
	p->kvdim = c->n_kv_heads * c->head_dim;
	p->block_floats = (size_t)p->n_layers * (size_t)block_size * (size_t)p->kvdim;
	p->bf16 = dt == WK_KV_BF16;
	p->esize = p->bf16 ? sizeof(uint16_t) : sizeof(float);
	p->k = loom_malloc(2 * (size_t)n_blocks * p->block_floats * p->esize);
	p->free_ids = loom_malloc((size_t)n_blocks * sizeof *p->free_ids);
	if (!p->k || !p->free_ids) {
		size_t bytes = (size_t)n_blocks * (size_t)block_size * per_pos;
		wk_kvpool_destroy(p);
		return loom_fail(LOOM_ENOMEM, "kv pool: cannot allocate %zu MiB for %d blocks of "
				 "%d positions", bytes >> 20, n_blocks, block_size);
	}
	if (wk_kvpool_prefix_alloc(p)) {
		wk_kvpool_destroy(p);
		return loom_fail(LOOM_ENOMEM, "kv pool: out of memory for the prefix cache of "
				 "%d blocks", n_blocks);
	}
	p->v = p->k + (size_t)n_blocks * p->block_floats * p->esize;
	/* popped from the top: block 0 first */
	for (int i = 0; i < n_blocks; i++)
		p->free_ids[i] = n_blocks - 1 - i;
	p->n_free = n_blocks;
	*out = p;
	return LOOM_OK;
}

void wk_kvpool_destroy(wk_kvpool *p)
{
	if (!p)
		return;
	loom_free(p->k);
	loom_free(p->free_ids);
	wk_kvpool_prefix_free(p);
	loom_free(p);
}

int wk_kvpool_block_size(const wk_kvpool *p)
{
	return p->block_size;
}

int wk_kvpool_n_blocks(const wk_kvpool *p)
{
	return p->n_blocks;
}

int wk_kvpool_free_blocks(const wk_kvpool *p)
{
	return p->n_free + p->n_lru;
}

size_t wk_kvpool_block_floats(const wk_kvpool *p)
{
	return p->block_floats;
}

bool wk_kvpool_fits(const wk_kvpool *p, const loom_model_config *c)
{
	return p->n_layers == c->n_layers && p->kvdim == c->n_kv_heads * c->head_dim;
}

wk_kv_dtype wk_kvpool_dtype(const wk_kvpool *p)
{
	return p->bf16 ? WK_KV_BF16 : WK_KV_F32;
}

/* Element offset of block b, layer l. */
static size_t slab(const wk_kvpool *p, int32_t block, int layer)
{
	assert(block >= 0 && block < p->n_blocks && layer >= 0 && layer < p->n_layers);
	return (size_t)block * p->block_floats +
	       (size_t)layer * (size_t)p->block_size * (size_t)p->kvdim;
}

void *wk_kvpool_k_raw(const wk_kvpool *p, int32_t block, int layer)
{
	return p->k + slab(p, block, layer) * p->esize;
}

void *wk_kvpool_v_raw(const wk_kvpool *p, int32_t block, int layer)
{
	return p->v + slab(p, block, layer) * p->esize;
}

float *wk_kvpool_k(const wk_kvpool *p, int32_t block, int layer)
{
	assert(!p->bf16);
	return wk_kvpool_k_raw(p, block, layer);
}

float *wk_kvpool_v(const wk_kvpool *p, int32_t block, int layer)
{
	assert(!p->bf16);
	return wk_kvpool_v_raw(p, block, layer);
}

/* ------------------------------------------------------------------ */
/* a sequence's block table                                            */
/* ------------------------------------------------------------------ */

void wk_kv_init(wk_kv *kv, wk_kvpool *pool)
{
	memset(kv, 0, sizeof *kv);
	kv->pool = pool;
}

int wk_kv_grow_table(wk_kv *kv, int need)
{
	int cap = kv->cap_table ? kv->cap_table : 4;
	int32_t *t;

	while (cap < need)
		cap *= 2;
	if (cap <= kv->cap_table)
		return 0;
	t = loom_realloc(kv->blocks, (size_t)cap * sizeof *t);
	if (!t)
		return -1;
	kv->blocks = t;
	kv->cap_table = cap;
	return 0;
}

loom_err wk_kv_reserve(wk_kv *kv, int n)
{
	wk_kvpool *p = kv->pool;
	int bs, need, more;

	if (n < 0 || !p)
		return loom_fail(LOOM_EINVAL, "kv reserve: %d positions on %s", n,
				 p ? "a bound cache" : "a cache with no pool");
	if ((long long)kv->len + n <= kv->capacity)
		return LOOM_OK;
	bs = p->block_size;
	if ((long long)kv->len + n > (long long)p->n_blocks * bs)
		return loom_fail(LOOM_EBUSY, "kv reserve: %d positions after %d exceed the whole "
				 "pool (%d blocks of %d)", n, kv->len, p->n_blocks, bs);
	need = (kv->len + n + bs - 1) / bs;
	more = need - kv->n_blocks;
	if (more > p->n_free + p->n_lru)
		return loom_fail(LOOM_EBUSY, "kv reserve: %d more blocks needed, %d free", more,
				 p->n_free + p->n_lru);
	if (need > kv->cap_table && wk_kv_grow_table(kv, need))
		return loom_fail(LOOM_ENOMEM, "kv reserve: out of memory growing a block "
				 "table to %d entries", need);
	for (int i = 0; i < more; i++)
		kv->blocks[kv->n_blocks++] = wk_kvpool_take(p);
	kv->capacity = kv->n_blocks * bs;
	return LOOM_OK;
}

void wk_kv_release(wk_kv *kv)
{
	wk_kvpool *p = kv->pool;

	/* in reverse: a re-reserve gets the same free ids in the same order,
	 * and a cached chain's tail is older than its head */
	for (int i = kv->n_blocks - 1; i >= 0; i--)
		wk_kvpool_drop(p, kv->blocks[i]);
	kv->n_blocks = 0;
	kv->n_keyed = 0;
	kv->capacity = 0;
	kv->len = 0;
}

void wk_kv_fini(wk_kv *kv)
{
	if (kv->pool && kv->n_blocks)
		wk_kv_release(kv);
	loom_free(kv->blocks);
	kv->blocks = NULL;
	kv->cap_table = 0;
}

/* n floats of src into the pool's elements at dst (rounded for BF16). */
static void put(const wk_kvpool *p, void *dst, const float *src, size_t n)
{
	if (!p->bf16) {
		memcpy(dst, src, n * sizeof(float));
		return;
	}
	(void)loom_from_f32(dst, src, LOOM_DT_BF16, n); /* cannot fail for BF16 */
}

void wk_kv_write(wk_kv *kv, int layer, const float *k, const float *v, int n)
{
	const wk_kvpool *p = kv->pool;
	int pos = kv->len, bs = p->block_size;

	assert(pos + n <= kv->capacity);
	while (n > 0) {
		int32_t b = kv->blocks[pos / bs];
		int slot = pos % bs, take = bs - slot < n ? bs - slot : n;
		size_t at = (size_t)slot * p->kvdim * p->esize, cnt = (size_t)take * p->kvdim;
		put(p, (char *)wk_kvpool_k_raw(p, b, layer) + at, k, cnt);
		put(p, (char *)wk_kvpool_v_raw(p, b, layer) + at, v, cnt);
		k += (size_t)take * p->kvdim;
		v += (size_t)take * p->kvdim;
		pos += take;
		n -= take;
	}
}

/* ------------------------------------------------------------------ */
/* single sequences with a private pool                                */
/* ------------------------------------------------------------------ */

loom_err wk_kv_create(const wk_model *m, int capacity, wk_kv **out)
{
	return wk_kv_create_dt(m, capacity, WK_KV_F32, out);
}

loom_err wk_kv_create_dt(const wk_model *m, int capacity, wk_kv_dtype dt, wk_kv **out)
{
	wk_kvpool *pool = NULL;
	wk_kv *kv = NULL;
	loom_err rc;
	int bs = capacity < WK_KV_BLOCK ? capacity : WK_KV_BLOCK;

	*out = NULL;
	if (capacity <= 0)
		return loom_fail(LOOM_EINVAL, "kv cache: capacity %d must be positive", capacity);
	rc = wk_kvpool_create_dt(m, (capacity + bs - 1) / bs, bs, dt, &pool);
	if (rc)
		return rc;
	kv = loom_malloc(sizeof *kv);
	if (!kv) {
		rc = loom_fail(LOOM_ENOMEM, "kv cache: out of memory");
		goto out;
	}
	wk_kv_init(kv, pool);
	kv->own_pool = 1;
	rc = wk_kv_reserve(kv, capacity);
	if (rc)
		goto out;
	*out = kv;
	return LOOM_OK;
out:
	if (kv)
		wk_kv_fini(kv);
	loom_free(kv);
	wk_kvpool_destroy(pool);
	return rc;
}

void wk_kv_destroy(wk_kv *kv)
{
	if (!kv)
		return;
	wk_kvpool *pool = kv->own_pool ? kv->pool : NULL;
	wk_kv_fini(kv);
	wk_kvpool_destroy(pool);
	loom_free(kv);
}
