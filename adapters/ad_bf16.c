/*
 * adapters/ad_bf16.c — an adapter's BF16 copy (ad_adapter_to_bf16), the
 * form a GPU forward reads: made once, off the serving thread (the
 * residency's loader), so that putting the adapter on the device is a copy,
 * not a conversion. The copy keeps the source's block order (the q, k, v
 * A blocks of a layer adjacent, adapter.h), so the forward still shrinks a
 * group with one packed A.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "common/alloc.h"
#include "common/dtype.h"

#define ALIGN_ELEMS 32 /* 64 bytes of BF16 */

static size_t up(size_t n)
{
	return (n + ALIGN_ELEMS - 1) & ~(size_t)(ALIGN_ELEMS - 1);
}

static void convert(uint16_t *dst, const float *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = loom_f32_to_bf16(src[i]);
}

/* A weight block of the source and where its copy's pointer goes. */
typedef struct block {
	const float *src;
	size_t n;
	const uint16_t **dst;
} block;

static int by_src(const void *x, const void *y)
{
	uintptr_t a = (uintptr_t)((const block *)x)->src, b = (uintptr_t)((const block *)y)->src;
	return a < b ? -1 : a > b;
}

bool ad_adapter_bf16_exact(const ad_adapter *a)
{
	if (a->bf16)
		return true;
	size_t n_mods = (size_t)a->n_layers * AD_N_TARGETS;
	for (size_t i = 0; a->mods && i < n_mods; i++) {
		const ad_module *m = &a->mods[i];
		int t = (int)(i % AD_N_TARGETS);
		if (m->rank <= 0)
			continue;
		const float *w[2] = {m->a, m->bt};
		size_t n[2] = {(size_t)m->rank * (size_t)a->d_in[t],
			       (size_t)m->rank * (size_t)a->d_out[t]};
		for (int h = 0; h < 2; h++) {
			uint32_t low = 0;
			for (size_t k = 0; k < n[h]; k++) {
				uint32_t u;
				memcpy(&u, &w[h][k], sizeof u);
				low |= u & 0xffffu;
			}
			if (low)
				return false;
		}
	}
	return true;
}

loom_err ad_adapter_to_bf16(const ad_adapter *src, ad_adapter **out)
{
	size_t n_mods = (size_t)src->n_layers * AD_N_TARGETS, elems = 0;
	ad_adapter *a = NULL;
	block *blocks = NULL;
	loom_err rc = LOOM_OK;

	*out = NULL;
	if (src->bf16 || !src->mods) {
		rc = loom_fail(LOOM_EINVAL, "adapter %s: %s", src->name,
			       src->bf16 ? "already BF16" : "no modules");
		goto out;
	}
	for (size_t i = 0; i < n_mods; i++) {
		const ad_module *m = &src->mods[i];
		int t = (int)(i % AD_N_TARGETS);
		if (m->rank > 0)
			elems += up((size_t)m->rank * (size_t)src->d_in[t]) +
				 up((size_t)m->rank * (size_t)src->d_out[t]);
	}
	if (!(a = loom_malloc(sizeof *a)))
		goto oom;
	*a = *src;
	a->mods = NULL;
	a->arena = NULL;
	if (!(a->mods = loom_calloc(n_mods, sizeof *a->mods)) ||
	    !(a->arena = loom_malloc(elems * sizeof(uint16_t) + 64)) ||
	    !(blocks = loom_malloc(2 * n_mods * sizeof *blocks)))
		goto oom;
	a->bf16 = 1;
	a->bytes = 0;
	size_t nb = 0;
	for (size_t i = 0; i < n_mods; i++) {
		const ad_module *m = &src->mods[i];
		ad_module *d = &a->mods[i];
		int t = (int)(i % AD_N_TARGETS);
		d->rank = m->rank;
		d->scale = m->scale;
		if (m->rank <= 0)
			continue;
		blocks[nb++] = (block){m->a, (size_t)m->rank * (size_t)src->d_in[t], &d->a16};
		blocks[nb++] = (block){m->bt, (size_t)m->rank * (size_t)src->d_out[t], &d->bt16};
	}
	qsort(blocks, nb, sizeof *blocks, by_src);
	uint16_t *p = (uint16_t *)(((uintptr_t)a->arena + 63) & ~(uintptr_t)63);
	for (size_t i = 0; i < nb; i++) {
		convert(p, blocks[i].src, blocks[i].n);
		*blocks[i].dst = p;
		p += up(blocks[i].n);
		a->bytes += blocks[i].n * sizeof(uint16_t);
	}
	*out = a;
	a = NULL;
	goto out;
oom:
	rc = loom_fail(LOOM_ENOMEM, "adapter %s: out of memory for its BF16 copy (%zu bytes)",
		       src->name, elems * sizeof(uint16_t));
out:
	loom_free(blocks);
	if (a) {
		loom_free(a->arena);
		loom_free(a->mods);
		loom_free(a);
	}
	return rc;
}
