/*
 * gateway/gw_link_prefix.c — the router's record of which worker holds which
 * prompt prefix (prefix-aware routing, as llm-d's prefix scorer does outside
 * an engine; here the gateway keeps it itself, no worker reports needed).
 *
 * A prompt's full blocks of LK_PFX_BLOCK tokens (the workers' KV block,
 * worker/kv.h WK_KV_BLOCK) are named by a hash chain: block 0 hashes the
 * request's namespace (model, adapter name and version) and its tokens,
 * block i the hash of block i-1 and its tokens — so a key stands for the
 * whole prefix up to its block's end, as the workers' prefix cache keys
 * do. When a request is sent to a worker, its keys are recorded in that
 * worker's table; a later request's estimate of cached tokens there is the
 * run of its leading keys found (never its last token: the worker computes
 * that one). The workers' caches evict under their own pressure, so this is
 * an estimate: the table is a set-associative cache (LK_PFX_WAYS ways, the
 * least recently used way replaced), about as forgetful as a worker whose
 * pool holds LK_PFX_SETS * LK_PFX_WAYS blocks.
 * Threads: everything under the link's mu.
 */
#include <string.h>

#include "common/alloc.h"
#include "gw_link_int.h"

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t str_hash(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
	return mix64(h ^ 0xff);
}

loom_err lk_prefix_keys(lk_job *j)
{
	uint32_t n = j->sub.n_prompt / LK_PFX_BLOCK;
	uint64_t h = str_hash(str_hash(str_hash(0xcbf29ce484222325ull, j->sub.model),
				       j->sub.adapter), j->sha);

	if (n > LK_PFX_MAX_BLOCKS)
		n = LK_PFX_MAX_BLOCKS;
	j->n_pfx = 0;
	if (!n)
		return LOOM_OK;
	j->pfx = loom_malloc(n * sizeof *j->pfx);
	if (!j->pfx)
		return loom_fail(LOOM_ENOMEM, "out of memory routing a request");
	for (uint32_t b = 0; b < n; b++) {
		for (int t = 0; t < LK_PFX_BLOCK; t++)
			h = (h ^ (uint32_t)j->sub.prompt_ids[b * LK_PFX_BLOCK + t]) *
			    0x100000001b3ull;
		h = mix64(h);
		j->pfx[b] = h ? h : 1; /* 0 marks an empty way */
	}
	j->n_pfx = n;
	return LOOM_OK;
}

void lk_prefix_free(lk_worker *w)
{
	loom_free(w->pfx_keys);
	loom_free(w->pfx_used);
	w->pfx_keys = NULL;
	w->pfx_used = NULL;
}

static uint32_t set_of(uint64_t key)
{
	return (uint32_t)(key >> 40) & (LK_PFX_SETS - 1);
}

static bool has(const lk_worker *w, uint64_t key)
{
	const uint64_t *k = w->pfx_keys + (size_t)set_of(key) * LK_PFX_WAYS;
	if (!w->pfx_keys)
		return false;
	for (int i = 0; i < LK_PFX_WAYS; i++)
		if (k[i] == key)
			return true;
	return false;
}

uint32_t lk_prefix_cached(const lk_worker *w, const lk_job *j)
{
	uint32_t b = 0, t;
	while (b < j->n_pfx && has(w, j->pfx[b]))
		b++;
	t = b * LK_PFX_BLOCK;
	return t < j->sub.n_prompt ? t : j->sub.n_prompt ? j->sub.n_prompt - 1 : 0;
}

void lk_prefix_record(lk_worker *w, const lk_job *j)
{
	if (!j->n_pfx)
		return;
	if (!w->pfx_keys) {
		size_t n = (size_t)LK_PFX_SETS * LK_PFX_WAYS;
		w->pfx_keys = loom_calloc(n, sizeof *w->pfx_keys);
		w->pfx_used = loom_calloc(n, sizeof *w->pfx_used);
		if (!w->pfx_keys || !w->pfx_used) {
			lk_prefix_free(w); /* routing goes on without the estimate */
			return;
		}
	}
	for (uint32_t b = 0; b < j->n_pfx; b++) {
		size_t base = (size_t)set_of(j->pfx[b]) * LK_PFX_WAYS;
		uint64_t *k = w->pfx_keys + base;
		uint32_t *u = w->pfx_used + base;
		int pick = 0;
		w->pfx_clock++;
		for (int i = 0; i < LK_PFX_WAYS; i++) {
			if (k[i] == j->pfx[b]) {
				pick = i;
				break;
			}
			if (u[i] < u[pick])
				pick = i;
		}
		k[pick] = j->pfx[b];
		u[pick] = w->pfx_clock;
	}
}

void lk_prefix_forget(lk_worker *w)
{
	if (w->pfx_keys)
		memset(w->pfx_keys, 0, (size_t)LK_PFX_SETS * LK_PFX_WAYS * sizeof *w->pfx_keys);
}
