/*
 * common/safetensors.h — read and write the safetensors format.
 *
 * Owns: mapping a .safetensors file read-only and validating its header
 * strictly (8-byte little-endian header length, JSON object of
 * name -> {dtype, shape, data_offsets}, optional "__metadata__" of strings;
 * offsets contiguous, in bounds, matching dtype x shape; no duplicates), and
 * writing such files. Tensor data is handed out zero-copy as pointers into
 * the mapping (possibly unaligned for dtype; use loom_to_f32 to convert).
 * Must not: interpret tensor names (that is the model/adapter loaders' job).
 * Errors name the file and the problem via loom_fail().
 */
#ifndef LOOM_SAFETENSORS_H
#define LOOM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "err.h"

#define LOOM_ST_MAX_DIMS 8

typedef struct loom_tensor {
	const char *name;        /* NUL-terminated, owned by the file/caller */
	loom_dtype dtype;
	int ndim;
	int64_t shape[LOOM_ST_MAX_DIMS];
	const void *data;        /* ndim==0 means a scalar of one element */
	size_t nbytes;
} loom_tensor;

typedef struct loom_st_file loom_st_file;

/* Opens and validates path. On success *out owns the mapping; every
 * loom_tensor it hands out lives until loom_st_close(). */
loom_err loom_st_open(const char *path, loom_st_file **out);
void loom_st_close(loom_st_file *f);
/* Same validation over len bytes in memory (no copy: buf must outlive *out).
 * name is used in messages in place of a path. */
loom_err loom_st_open_mem(const void *buf, size_t len, const char *name, loom_st_file **out);

size_t loom_st_count(const loom_st_file *f);
/* i-th tensor in file order (order of data offsets). */
const loom_tensor *loom_st_at(const loom_st_file *f, size_t i);
/* Tensor by exact name, or NULL. */
const loom_tensor *loom_st_find(const loom_st_file *f, const char *name);
/* Value of a "__metadata__" key, or NULL. */
const char *loom_st_meta(const loom_st_file *f, const char *key);
const char *loom_st_path(const loom_st_file *f);

/* Number of elements of t (product of shape; 1 for a scalar). */
size_t loom_tensor_numel(const loom_tensor *t);

/* Writes n tensors (data taken from each .data, .nbytes must equal
 * numel*size) to path atomically (temp file + rename). meta: NULL or a
 * NULL-terminated list of key, value, key, value, ... strings. */
loom_err loom_st_write(const char *path, const loom_tensor *tensors, size_t n,
		       const char *const *meta);

/* Produces tensor i's nbytes into buf (malloc-aligned). A non-zero return
 * aborts the write and is returned by loom_st_write_fill. */
typedef loom_err (*loom_st_fill_fn)(void *ctx, size_t i, void *buf);
/* Like loom_st_write, but tensors[i].data is ignored and each tensor's bytes
 * come from fill(ctx, i, buf) in order, so only one tensor is held in memory
 * at a time (for writing big random models). */
loom_err loom_st_write_fill(const char *path, const loom_tensor *tensors, size_t n,
			    const char *const *meta, loom_st_fill_fn fill, void *ctx);

/*
 * A model's weights: one file, or the shards listed in an index
 * (model.safetensors.index.json "weight_map"). loom_st_set_open(dir) tries
 * dir/model.safetensors, then dir/model.safetensors.index.json.
 */
typedef struct loom_st_set loom_st_set;
loom_err loom_st_set_open(const char *dir, loom_st_set **out);
void loom_st_set_close(loom_st_set *s);
/* Tensor by name across all shards, or NULL. */
const loom_tensor *loom_st_set_find(const loom_st_set *s, const char *name);
/* Path of the file that holds name (for error messages), or the dir. */
const char *loom_st_set_where(const loom_st_set *s, const char *name);

#endif
