/*
 * worker/kv.c — a sequence's contiguous KV cache for the CPU forward pass.
 *
 * One allocation per sequence: K then V, each [n_layers, capacity, kv_dim]
 * floats, kv_dim = n_kv_heads*head_dim. The engine owns the cache; the
 * forward pass appends at len and grows len. (The paged cache of DESIGN.md
 * replaces this once the engine has a block pool.)
 */
#include <stdint.h>

#include "../common/alloc.h"
#include "forward.h"

loom_err wk_kv_create(const wk_model *m, int capacity, wk_kv **out)
{
	*out = NULL;
	if (capacity <= 0)
		return loom_fail(LOOM_EINVAL, "kv cache: capacity %d must be positive", capacity);
	const loom_model_config *c = &m->cfg;
	size_t per = (size_t)c->n_layers * (size_t)capacity * (size_t)c->n_kv_heads *
		     (size_t)c->head_dim;
	if (per > SIZE_MAX / 2 / sizeof(float))
		return loom_fail(LOOM_ERANGE, "kv cache: capacity %d is too large", capacity);
	wk_kv *kv = loom_calloc(1, sizeof *kv);
	float *buf = loom_malloc(2 * per * sizeof(float));
	if (!kv || !buf) {
		loom_free(kv);
		loom_free(buf);
		return loom_fail(LOOM_ENOMEM, "kv cache: cannot allocate %zu bytes for %d positions",
				 2 * per * sizeof(float), capacity);
	}
	kv->capacity = capacity;
	kv->len = 0;
	kv->k = buf;
	kv->v = buf + per;
	*out = kv;
	return LOOM_OK;
}

void wk_kv_destroy(wk_kv *kv)
{
	if (!kv)
		return;
	loom_free(kv->k);
	loom_free(kv);
}
