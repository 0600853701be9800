/*
 * tests/fuzz/fuzz_st.h — checks shared by the targets that open a
 * safetensors image (fuzz_safetensors, fuzz_bundle). Header-only.
 */
#ifndef LOOM_FUZZ_ST_H
#define LOOM_FUZZ_ST_H

#include <stdint.h>
#include <string.h>

#include "common/dtype.h"
#include "common/safetensors.h"
#include "tests/fuzz/fuzz.h"

/* Checks and touches everything f hands out for an image at [buf, buf+len):
 * tensors inside the buffer, in offset order without overlap, nbytes =
 * numel x dtype size, each found by its own name; float data converts. */
static inline void fuzz_st_walk(const loom_st_file *f, const unsigned char *buf, size_t len)
{
	const unsigned char *prev_end = buf;
	size_t n = loom_st_count(f);

	(void)loom_st_path(f);
	FUZZ_CHECK(loom_st_at(f, n) == NULL, "at(count) is not NULL");
	for (size_t i = 0; i < n; i++) {
		const loom_tensor *t = loom_st_at(f, i);
		const unsigned char *d;
		size_t numel;

		FUZZ_CHECK(t && t->name, "tensor %zu missing", i);
		FUZZ_CHECK(t->dtype >= 0 && t->dtype < LOOM_DT_COUNT, "%s: dtype %d", t->name,
			   (int)t->dtype);
		FUZZ_CHECK(t->ndim >= 0 && t->ndim <= LOOM_ST_MAX_DIMS, "%s: ndim %d", t->name,
			   t->ndim);
		numel = loom_tensor_numel(t);
		FUZZ_CHECK(t->nbytes == numel * loom_dtype_size(t->dtype),
			   "%s: %zu bytes for %zu elements of %s", t->name, t->nbytes, numel,
			   loom_dtype_name(t->dtype));
		d = t->data;
		FUZZ_CHECK(t->nbytes == 0 ||
				   (d >= buf && d <= buf + len && t->nbytes <= (size_t)(buf + len - d)),
			   "%s: data outside the image", t->name);
		if (t->nbytes) {
			FUZZ_CHECK(d >= prev_end, "%s: overlaps the tensor before it", t->name);
			prev_end = d + t->nbytes;
		}
		fuzz_touch(d, t->nbytes);
		if (t->nbytes && (t->dtype == LOOM_DT_F32 || t->dtype == LOOM_DT_F16 ||
				  t->dtype == LOOM_DT_BF16)) {
			float tmp[64];
			FUZZ_CHECK(loom_to_f32(tmp, d, t->dtype, numel < 64 ? numel : 64) == 0,
				   "%s: to_f32 failed", t->name);
		}
		const loom_tensor *g = loom_st_find(f, t->name);
		FUZZ_CHECK(g == t, "tensor %zu \"%s\" is found as %s", i, t->name,
			   g ? "another tensor of the same name" : "nothing");
	}
	(void)loom_st_find(f, "");
	(void)loom_st_find(f, "model.embed_tokens.weight");
	(void)loom_st_meta(f, "format");
	(void)loom_st_meta(f, "loom.config");
}

/* A copy of data at an odd address when size is odd (else data itself), so
 * that a reader assuming alignment trips UBSan. *to_free: free() it after. */
static inline const unsigned char *fuzz_st_place(const uint8_t *data, size_t size,
						 unsigned char **to_free)
{
	*to_free = NULL;
	if (!(size & 1))
		return data;
	unsigned char *c = malloc(size + 1);
	if (!c)
		abort();
	memcpy(c + 1, data, size);
	*to_free = c;
	return c + 1;
}

#endif
