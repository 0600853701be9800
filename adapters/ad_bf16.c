/*
 * adapters/ad_bf16.c — an adapter's BF16 copy (ad_adapter_to_bf16), the
 * form a GPU forward reads: made once, off the serving thread (the
 * residency's loader), so that putting the adapter on the device is a copy,
 * not a conversion.
 */
#include <stdint.h>
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

loom_err ad_adapter_to_bf16(const ad_adapter *src, ad_adapter **out)
{
	size_t n_mods = (size_t)src->n_layers * AD_N_TARGETS, elems = 0;
	ad_adapter *a = NULL;
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
	    !(a->arena = loom_malloc(elems * sizeof(uint16_t) + 64)))
		goto oom;
	a->bf16 = 1;
	a->bytes = 0;
	uint16_t *p = (uint16_t *)(((uintptr_t)a->arena + 63) & ~(uintptr_t)63);
	for (size_t i = 0; i < n_mods; i++) {
		const ad_module *m = &src->mods[i];
		ad_module *d = &a->mods[i];
		int t = (int)(i % AD_N_TARGETS);
		d->rank = m->rank;
		d->scale = m->scale;
		if (m->rank <= 0)
			continue;
		size_t na = (size_t)m->rank * (size_t)src->d_in[t];
		size_t nb = (size_t)m->rank * (size_t)src->d_out[t];
		convert(p, m->a, na);
		d->a16 = p;
		p += up(na);
		convert(p, m->bt, nb);
		d->bt16 = p;
		p += up(nb);
		a->bytes += (na + nb) * sizeof(uint16_t);
	}
	*out = a;
	a = NULL;
	goto out;
oom:
	rc = loom_fail(LOOM_ENOMEM, "adapter %s: out of memory for its BF16 copy (%zu bytes)",
		       src->name, elems * sizeof(uint16_t));
out:
	if (a) {
		loom_free(a->arena);
		loom_free(a->mods);
		loom_free(a);
	}
	return rc;
}
