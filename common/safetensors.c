/*
 * common/safetensors.c — map and validate one .safetensors file, or the same
 * image already in memory.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON, then the data
 * section. A file is mmap'ed read-only and tensors point into the mapping;
 * an image in memory (a store blob, loom_st_open_mem) goes through the same
 * parser and tensors point into the caller's buffer (no mapping to unmap).
 * Validation is strict (see safetensors.h); anything odd is LOOM_EFORMAT
 * (LOOM_EUNSUPPORTED for valid files we do not handle: exotic dtypes, more
 * than LOOM_ST_MAX_DIMS dims) with a message that names the file.
 *
 * Lookup: tensors are kept in data-offset order (loom_st_at) plus an
 * open-addressing hash of their names (FNV-1a, load <= 1/2), because model
 * loaders look up every one of ~300-1000 tensors by name.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "textfile.h"

#define MAX_HEADER (100u * 1024 * 1024)

struct loom_st_file {
	char *path;
	void *map;
	size_t map_len;
	const unsigned char *data; /* start of the data section */
	size_t data_len;
	size_t n;
	loom_tensor *t;            /* [n], in data-offset order; names owned here */
	uint32_t *slots;           /* [cap], index+1 into t, 0 = empty */
	size_t cap;
	size_t n_meta;
	char **meta;               /* [2*n_meta] key, value, ... owned here */
};

static uint64_t hash_name(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

size_t loom_tensor_numel(const loom_tensor *t)
{
	size_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= (size_t)t->shape[i];
	return n;
}

/* Dtypes the format defines that loom does not convert. */
static int known_unsupported(const char *s)
{
	static const char *const names[] = { "U16", "U32", "U64", "F8_E4M3", "F8_E5M2",
					     "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64" };
	for (size_t i = 0; i < sizeof names / sizeof *names; i++)
		if (strcmp(s, names[i]) == 0)
			return 1;
	return 0;
}

struct span {
	uint64_t begin, end;
	size_t idx;
};

static int span_cmp(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

static loom_err parse_meta(loom_st_file *f, json_t *m)
{
	const char *k;
	json_t *v;

	if (!json_is_object(m))
		return loom_fail(LOOM_EFORMAT, "%s: __metadata__ is not a JSON object", f->path);
	f->meta = loom_calloc(2 * json_object_size(m) + 1, sizeof(char *));
	if (!f->meta)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", f->path);
	json_object_foreach(m, k, v) {
		if (!json_is_string(v))
			return loom_fail(LOOM_EFORMAT, "%s: __metadata__ value of \"%s\" is not a string",
					 f->path, k);
		f->meta[2 * f->n_meta] = loom_strdup(k);
		f->meta[2 * f->n_meta + 1] = loom_strdup(json_string_value(v));
		f->n_meta++;
		if (!f->meta[2 * f->n_meta - 2] || !f->meta[2 * f->n_meta - 1])
			return loom_fail(LOOM_ENOMEM, "%s: out of memory", f->path);
	}
	return LOOM_OK;
}

static loom_err get_u64(const loom_st_file *f, const char *name, const char *field, json_t *v,
			uint64_t *out)
{
	if (!json_is_integer(v))
		return loom_fail(LOOM_EFORMAT, "%s: tensor \"%s\": %s holds a non-integer", f->path,
				 name, field);
	if (json_integer_value(v) < 0)
		return loom_fail(LOOM_EFORMAT, "%s: tensor \"%s\": %s holds a negative value %lld",
				 f->path, name, field, (long long)json_integer_value(v));
	*out = (uint64_t)json_integer_value(v);
	return LOOM_OK;
}

/* Fills t from the entry {dtype, shape, data_offsets}; span gets the offsets. */
static loom_err parse_entry(const loom_st_file *f, const char *name, json_t *e, loom_tensor *t,
			    struct span *sp)
{
	json_t *dt, *shape, *offs;
	loom_err rc;
	uint64_t numel = 1, nbytes;

	if (!json_is_object(e))
		return loom_fail(LOOM_EFORMAT, "%s: tensor \"%s\" is not a JSON object", f->path, name);
	dt = json_object_get(e, "dtype");
	shape = json_object_get(e, "shape");
	offs = json_object_get(e, "data_offsets");
	if (!dt || !shape || !offs)
		return loom_fail(LOOM_EFORMAT, "%s: tensor \"%s\" lacks \"%s\"", f->path, name,
				 !dt ? "dtype" : !shape ? "shape" : "data_offsets");
	if (!json_is_string(dt))
		return loom_fail(LOOM_EFORMAT, "%s: tensor \"%s\": dtype is not a string", f->path,
				 name);
	if (loom_dtype_parse(json_string_value(dt), json_string_length(dt), &t->dtype) != 0) {
		const char *s = json_string_value(dt);
		if (known_unsupported(s))
			return loom_fail(LOOM_EUNSUPPORTED, "%s: tensor \"%s\": dtype %s is not supported",
					 f->path, name, s);
		return loom_fail(LOOM_EFORMAT, "%s: tensor \"%s\": unknown dtype \"%.32s\"", f->path,
				 name, s);
	}
	if (!json_is_array(shape))
		return loom_fail(LOOM_EFORMAT, "%s: tensor \"%s\": shape is not an array", f->path,
				 name);
	if (json_array_size(shape) > LOOM_ST_MAX_DIMS)
		return loom_fail(LOOM_EUNSUPPORTED, "%s: tensor \"%s\" has %zu dims (at most %d)",
				 f->path, name, json_array_size(shape), LOOM_ST_MAX_DIMS);
	t->ndim = (int)json_array_size(shape);
	for (int i = 0; i < t->ndim; i++) {
		uint64_t d;
		if ((rc = get_u64(f, name, "shape", json_array_get(shape, (size_t)i), &d)))
			return rc;
		t->shape[i] = (int64_t)d;
		if (__builtin_mul_overflow(numel, d, &numel))
			return loom_fail(LOOM_EFORMAT, "%s: tensor \"%s\": shape overflows", f->path,
					 name);
	}
	if (!json_is_array(offs) || json_array_size(offs) != 2)
		return loom_fail(LOOM_EFORMAT, "%s: tensor \"%s\": data_offsets is not [begin, end]",
				 f->path, name);
	if ((rc = get_u64(f, name, "data_offsets", json_array_get(offs, 0), &sp->begin)) ||
	    (rc = get_u64(f, name, "data_offsets", json_array_get(offs, 1), &sp->end)))
		return rc;
	if (sp->end < sp->begin || sp->end > f->data_len)
		return loom_fail(LOOM_EFORMAT,
				 "%s: tensor \"%s\": data_offsets [%llu, %llu] outside the %zu-byte "
				 "data section",
				 f->path, name, (unsigned long long)sp->begin,
				 (unsigned long long)sp->end, f->data_len);
	if (__builtin_mul_overflow(numel, (uint64_t)loom_dtype_size(t->dtype), &nbytes) ||
	    nbytes != sp->end - sp->begin)
		return loom_fail(LOOM_EFORMAT,
				 "%s: tensor \"%s\": %llu bytes in data_offsets, but %s x shape "
				 "needs %llu",
				 f->path, name, (unsigned long long)(sp->end - sp->begin),
				 loom_dtype_name(t->dtype), (unsigned long long)nbytes);
	t->data = f->data + sp->begin;
	t->nbytes = (size_t)nbytes;
	return LOOM_OK;
}

static loom_err build_index(loom_st_file *f)
{
	f->cap = 16;
	while (f->cap < 2 * f->n)
		f->cap *= 2;
	f->slots = loom_calloc(f->cap, sizeof *f->slots);
	if (!f->slots)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", f->path);
	for (size_t i = 0; i < f->n; i++) {
		size_t j = hash_name(f->t[i].name) & (f->cap - 1);
		while (f->slots[j])
			j = (j + 1) & (f->cap - 1);
		f->slots[j] = (uint32_t)(i + 1);
	}
	return LOOM_OK;
}

/* Parses the header JSON and fills f->t in data order. */
static loom_err parse_header(loom_st_file *f, const char *text, size_t len)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	struct span *sp = NULL;
	loom_tensor *tmp = NULL;
	const char *k;
	json_t *v;
	size_t n = 0;
	loom_err rc = LOOM_OK;

	if (!root) {
		rc = loom_fail(LOOM_EFORMAT, "%s: header is not valid JSON: %s (line %d, column %d)",
			       f->path, jerr.text, jerr.line, jerr.column);
		goto out;
	}
	if (!json_is_object(root)) {
		rc = loom_fail(LOOM_EFORMAT, "%s: header is not a JSON object", f->path);
		goto out;
	}
	size_t cap = json_object_size(root);
	if (cap >= UINT32_MAX / 4) {
		rc = loom_fail(LOOM_EFORMAT, "%s: too many tensors", f->path);
		goto out;
	}
	tmp = loom_calloc(cap + 1, sizeof *tmp);
	sp = loom_calloc(cap + 1, sizeof *sp);
	f->t = loom_calloc(cap + 1, sizeof *f->t);
	if (!tmp || !sp || !f->t) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", f->path);
		goto out;
	}
	json_object_foreach(root, k, v) {
		if (strcmp(k, "__metadata__") == 0) {
			if ((rc = parse_meta(f, v)))
				goto out;
			continue;
		}
		if ((rc = parse_entry(f, k, v, &tmp[n], &sp[n])))
			goto out;
		if (!(tmp[n].name = loom_strdup(k))) {
			rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", f->path);
			goto out;
		}
		sp[n].idx = n;
		n++;
	}
	qsort(sp, n, sizeof *sp, span_cmp);
	uint64_t pos = 0;
	for (size_t i = 0; i < n; i++) {
		const char *name = tmp[sp[i].idx].name;
		if (sp[i].begin < pos) {
			rc = loom_fail(LOOM_EFORMAT, "%s: tensor \"%s\" overlaps tensor \"%s\"", f->path,
				       name, tmp[sp[i - 1].idx].name);
			goto out;
		}
		if (sp[i].begin > pos) {
			rc = loom_fail(LOOM_EFORMAT,
				       "%s: %llu unused bytes before tensor \"%s\" in the data section",
				       f->path, (unsigned long long)(sp[i].begin - pos), name);
			goto out;
		}
		pos = sp[i].end;
	}
	if (pos != f->data_len) {
		rc = loom_fail(LOOM_EFORMAT,
			       "%s: data section is %zu bytes but the tensors cover %llu", f->path,
			       f->data_len, (unsigned long long)pos);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		f->t[i] = tmp[sp[i].idx];
		tmp[sp[i].idx].name = NULL;
		f->n = i + 1;
	}
	rc = build_index(f);
out:
	if (tmp) {
		for (size_t i = 0; i < n; i++)
			loom_free((char *)tmp[i].name);
	}
	loom_free(tmp);
	loom_free(sp);
	json_decref(root);
	return rc;
}

/* Validates the image p[0..len) (header length, header, data section) into
 * f; tensors point into p. what is "file" or "buffer", for messages. */
static loom_err parse_image(loom_st_file *f, const unsigned char *p, size_t len, const char *what)
{
	uint64_t hlen = 0;

	if (len < 8)
		return loom_fail(LOOM_EFORMAT, "%s: %s is %zu bytes, shorter than the 8-byte header "
				 "length", f->path, what, len);
	for (int i = 7; i >= 0; i--)
		hlen = (hlen << 8) | p[i];
	if (hlen > MAX_HEADER)
		return loom_fail(LOOM_EFORMAT, "%s: header length %llu is absurd (limit %u bytes)",
				 f->path, (unsigned long long)hlen, MAX_HEADER);
	if (hlen > len - 8)
		return loom_fail(LOOM_EFORMAT, "%s: header length %llu exceeds the %s size %zu",
				 f->path, (unsigned long long)hlen, what, len);
	f->data = p + 8 + hlen;
	f->data_len = len - 8 - (size_t)hlen;
	return parse_header(f, (const char *)p + 8, (size_t)hlen);
}

loom_err loom_st_open(const char *path, loom_st_file **out)
{
	loom_st_file *f = NULL;
	struct stat st;
	int fd = -1;
	loom_err rc = LOOM_OK;

	*out = NULL;
	f = loom_calloc(1, sizeof *f);
	if (!f || !(f->path = loom_strdup(path))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	if ((rc = loom_file_open(path, &fd, &st.st_size)))
		goto out;
	if (st.st_size < 8) {
		rc = loom_fail(LOOM_EFORMAT, "%s: file is %lld bytes, shorter than the 8-byte header "
			       "length", path, (long long)st.st_size);
		goto out;
	}
	f->map_len = (size_t)st.st_size;
	f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f->map == MAP_FAILED) {
		f->map = NULL;
		rc = loom_fail(LOOM_EIO, "%s: mmap failed: %s", path, strerror(errno));
		goto out;
	}
	if ((rc = parse_image(f, f->map, f->map_len, "file")))
		goto out;
	*out = f;
	f = NULL;
out:
	if (fd >= 0)
		close(fd);
	loom_st_close(f);
	return rc;
}

loom_err loom_st_open_mem(const void *buf, size_t len, const char *name, loom_st_file **out)
{
	loom_st_file *f = NULL;
	loom_err rc;

	*out = NULL;
	if (!name)
		name = "(memory)";
	if (!buf && len)
		return loom_fail(LOOM_EINVAL, "%s: NULL buffer of %zu bytes", name, len);
	f = loom_calloc(1, sizeof *f);
	if (!f || !(f->path = loom_strdup(name))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", name);
		goto out;
	}
	if ((rc = parse_image(f, buf, len, "buffer")))
		goto out;
	*out = f;
	f = NULL;
out:
	loom_st_close(f);
	return rc;
}

void loom_st_close(loom_st_file *f)
{
	if (!f)
		return;
	if (f->map)
		munmap(f->map, f->map_len);
	for (size_t i = 0; i < f->n; i++)
		loom_free((char *)f->t[i].name);
	loom_free(f->t);
	loom_free(f->slots);
	if (f->meta) {
		for (size_t i = 0; i < 2 * f->n_meta; i++)
			loom_free(f->meta[i]);
		loom_free(f->meta);
	}
	loom_free(f->path);
	loom_free(f);
}

size_t loom_st_count(const loom_st_file *f)
{
	return f->n;
}

const loom_tensor *loom_st_at(const loom_st_file *f, size_t i)
{
	return i < f->n ? &f->t[i] : NULL;
}

const loom_tensor *loom_st_find(const loom_st_file *f, const char *name)
{
	if (!f->slots)
		return NULL;
	size_t j = hash_name(name) & (f->cap - 1);
	while (f->slots[j]) {
		const loom_tensor *t = &f->t[f->slots[j] - 1];
		if (strcmp(t->name, name) == 0)
			return t;
		j = (j + 1) & (f->cap - 1);
	}
	return NULL;
}

const char *loom_st_meta(const loom_st_file *f, const char *key)
{
	for (size_t i = 0; i < f->n_meta; i++)
		if (strcmp(f->meta[2 * i], key) == 0)
			return f->meta[2 * i + 1];
	return NULL;
}

const char *loom_st_path(const loom_st_file *f)
{
	return f->path;
}
