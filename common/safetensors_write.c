/*
 * common/safetensors_write.c — write a .safetensors file atomically.
 *
 * Header: a compact JSON object, "__metadata__" first when given, then the
 * tensors in the caller's order with contiguous data_offsets; padded with
 * spaces to a multiple of 8 so the data section starts aligned. The file is
 * written to "<path>.tmp.XXXXXX" in the same folder, fsync'ed, then renamed
 * over path, so readers see the old file or the whole new one.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"

/* Checks the tensor list and builds the header text (loom_malloc'ed). */
static loom_err build_header(const char *path, const loom_tensor *ts, size_t n,
			     const char *const *meta, char **text, size_t *len)
{
	json_t *root = json_object(), *m = NULL;
	uint64_t pos = 0;
	loom_err rc = LOOM_OK;
	char *s = NULL;

	*text = NULL;
	if (!root)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", path);
	if (meta) {
		if (!(m = json_object()) || json_object_set_new(root, "__metadata__", m) != 0) {
			rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", path);
			goto out;
		}
		for (size_t i = 0; meta[i]; i += 2) {
			if (!meta[i + 1]) {
				rc = loom_fail(LOOM_EINVAL, "%s: metadata key \"%s\" has no value", path,
					       meta[i]);
				goto out;
			}
			if (json_object_set_new(m, meta[i], json_string(meta[i + 1])) != 0) {
				rc = loom_fail(LOOM_EINVAL, "%s: bad metadata key \"%s\"", path, meta[i]);
				goto out;
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		const loom_tensor *t = &ts[i];
		json_t *e, *shape;
		uint64_t nbytes;

		if (!t->name || strcmp(t->name, "__metadata__") == 0 || json_object_get(root, t->name)) {
			rc = loom_fail(LOOM_EINVAL, "%s: tensor %zu: missing, reserved or duplicate name "
				       "\"%s\"", path, i, t->name ? t->name : "(null)");
			goto out;
		}
		if ((unsigned)t->dtype >= LOOM_DT_COUNT || t->ndim < 0 || t->ndim > LOOM_ST_MAX_DIMS) {
			rc = loom_fail(LOOM_EINVAL, "%s: tensor \"%s\": bad dtype or ndim", path, t->name);
			goto out;
		}
		for (int d = 0; d < t->ndim; d++) {
			if (t->shape[d] < 0) {
				rc = loom_fail(LOOM_EINVAL, "%s: tensor \"%s\": negative dim", path,
					       t->name);
				goto out;
			}
		}
		nbytes = (uint64_t)loom_tensor_numel(t) * loom_dtype_size(t->dtype);
		if (nbytes != t->nbytes) {
			rc = loom_fail(LOOM_EINVAL, "%s: tensor \"%s\": nbytes %zu, shape needs %llu",
				       path, t->name, t->nbytes, (unsigned long long)nbytes);
			goto out;
		}
		e = json_object();
		shape = json_array();
		if (!e || !shape) {
			json_decref(e);
			json_decref(shape);
			rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", path);
			goto out;
		}
		for (int d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer(t->shape[d]));
		json_object_set_new(e, "dtype", json_string(loom_dtype_name(t->dtype)));
		json_object_set_new(e, "shape", shape);
		json_object_set_new(e, "data_offsets",
				    json_pack("[II]", (json_int_t)pos, (json_int_t)(pos + nbytes)));
		if (json_object_set_new(root, t->name, e) != 0) {
			rc = loom_fail(LOOM_EINVAL, "%s: tensor name \"%s\" is not valid UTF-8", path,
				       t->name);
			goto out;
		}
		pos += nbytes;
	}
	if (!(s = json_dumps(root, JSON_COMPACT))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	size_t l = strlen(s), padded = (l + 7) & ~(size_t)7;
	if (!(*text = loom_malloc(padded))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	memcpy(*text, s, l);
	memset(*text + l, ' ', padded - l);
	*len = padded;
out:
	free(s); /* json_dumps uses jansson's allocator (malloc) */
	json_decref(root);
	return rc;
}

static loom_err put(FILE *fp, const char *tmp, const void *p, size_t n)
{
	if (n && fwrite(p, 1, n, fp) != n)
		return loom_fail(LOOM_EIO, "%s: write failed: %s", tmp, strerror(errno));
	return LOOM_OK;
}

static loom_err copy_fill(void *ctx, size_t i, void *buf)
{
	const loom_tensor *ts = ctx;
	if (ts[i].nbytes)
		memcpy(buf, ts[i].data, ts[i].nbytes);
	return LOOM_OK;
}

static loom_err write_impl(const char *path, const loom_tensor *ts, size_t n,
			   const char *const *meta, loom_st_fill_fn fill, void *ctx, int direct)
{
	char *hdr = NULL, *tmp = NULL;
	void *buf = NULL;
	size_t hlen = 0, maxb = 0;
	FILE *fp = NULL;
	int fd = -1, created = 0;
	loom_err rc;

	if ((rc = build_header(path, ts, n, meta, &hdr, &hlen)))
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (direct && ts[i].nbytes && !ts[i].data) {
			rc = loom_fail(LOOM_EINVAL, "%s: tensor \"%s\" has no data", path, ts[i].name);
			goto out;
		}
		if (ts[i].nbytes > maxb)
			maxb = ts[i].nbytes;
	}
	if (!direct && !(buf = loom_malloc(maxb))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory for a %zu-byte tensor", path, maxb);
		goto out;
	}
	size_t plen = strlen(path);
	if (!(tmp = loom_malloc(plen + 16))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp.XXXXXX", 12);
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
		rc = loom_fail(LOOM_EIO, "%s: cannot create: %s", tmp, strerror(errno));
		goto out;
	}
	created = 1;
	fchmod(fd, 0644);
	if (!(fp = fdopen(fd, "wb"))) {
		rc = loom_fail(LOOM_EIO, "%s: fdopen failed: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	unsigned char le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
	if ((rc = put(fp, tmp, le, 8)) || (rc = put(fp, tmp, hdr, hlen)))
		goto out;
	for (size_t i = 0; i < n; i++) {
		const void *src = ts[i].data;
		if (!direct) {
			if ((rc = fill(ctx, i, buf)))
				goto out;
			src = buf;
		}
		if ((rc = put(fp, tmp, src, ts[i].nbytes)))
			goto out;
	}
	if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
		rc = loom_fail(LOOM_EIO, "%s: write failed: %s", tmp, strerror(errno));
		goto out;
	}
	int crc = fclose(fp);
	fp = NULL;
	if (crc != 0) {
		rc = loom_fail(LOOM_EIO, "%s: close failed: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, path) != 0) {
		rc = loom_fail(LOOM_EIO, "%s: cannot rename into place: %s", path, strerror(errno));
		goto out;
	}
	loom_free(tmp);
	tmp = NULL;
out:
	if (fp)
		fclose(fp);
	if (fd >= 0)
		close(fd);
	if (tmp) {
		if (created)
			unlink(tmp);
		loom_free(tmp);
	}
	loom_free(buf);
	loom_free(hdr);
	return rc;
}

loom_err loom_st_write(const char *path, const loom_tensor *tensors, size_t n,
		       const char *const *meta)
{
	return write_impl(path, tensors, n, meta, copy_fill, (void *)tensors, 1);
}

loom_err loom_st_write_fill(const char *path, const loom_tensor *tensors, size_t n,
			    const char *const *meta, loom_st_fill_fn fill, void *ctx)
{
	return write_impl(path, tensors, n, meta, fill, ctx, 0);
}
