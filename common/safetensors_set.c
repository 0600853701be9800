/*
 * common/safetensors_set.c — a model's weights as one file or a shard set.
 *
 * dir/model.safetensors wins; else dir/model.safetensors.index.json, whose
 * "weight_map" maps tensor name -> shard file name (a plain file name in
 * dir). Each shard is opened once; every mapped tensor must exist in its
 * shard. Lookups go through a hash of the weight_map names (a 7B model has
 * ~300 tensors in 2-3 shards, a 70B one ~700 in ~30), pointing straight at
 * the loom_tensor inside the shard's mapping.
 */
#include "safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "textfile.h"

struct set_ent {
	const loom_tensor *t; /* NULL = empty slot; t->name is the key */
	size_t file;
};

struct loom_st_set {
	char *dir;
	loom_st_file **files; /* [n_files] */
	size_t n_files;
	struct set_ent *ents; /* [cap], only for an index; a single file uses loom_st_find */
	size_t cap;
};

static uint64_t hash_name(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static char *join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = loom_malloc(a + b + 2);
	if (!p)
		return NULL;
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}

static int exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* Opens shard `name` of s unless already open; *idx receives its index. */
static loom_err open_shard(loom_st_set *s, const char *index_path, const char *name, size_t *idx)
{
	char *path;
	loom_err rc;

	for (size_t i = 0; i < s->n_files; i++) {
		const char *p = loom_st_path(s->files[i]);
		size_t dl = strlen(s->dir);
		if (strcmp(p + dl + 1, name) == 0) {
			*idx = i;
			return LOOM_OK;
		}
	}
	if (!name[0] || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return loom_fail(LOOM_EFORMAT, "%s: weight_map names shard \"%s\", not a file name",
				 index_path, name);
	loom_st_file **nf = loom_realloc(s->files, (s->n_files + 1) * sizeof *nf);
	if (!nf)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", index_path);
	s->files = nf;
	if (!(path = join(s->dir, name)))
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", index_path);
	rc = loom_st_open(path, &s->files[s->n_files]);
	if (rc == LOOM_ENOTFOUND)
		rc = loom_fail(LOOM_ENOTFOUND, "%s: shard %s listed in %s does not exist", path, name,
			       index_path);
	loom_free(path);
	if (rc)
		return rc;
	*idx = s->n_files++;
	return LOOM_OK;
}

static loom_err open_index(loom_st_set *s, const char *index_path)
{
	json_error_t jerr;
	json_t *root = loom_json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr), *wm, *v;
	const char *k;
	loom_err rc = LOOM_OK;

	if (!root) {
		rc = loom_fail(LOOM_EFORMAT, "%s: not valid JSON: %s (line %d)", index_path, jerr.text,
			       jerr.line);
		goto out;
	}
	wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
	if (!json_is_object(wm)) {
		rc = loom_fail(LOOM_EFORMAT, "%s: no \"weight_map\" object", index_path);
		goto out;
	}
	if (json_object_size(wm) == 0) {
		rc = loom_fail(LOOM_EFORMAT, "%s: weight_map is empty", index_path);
		goto out;
	}
	s->cap = 16;
	while (s->cap < 2 * json_object_size(wm))
		s->cap *= 2;
	if (!(s->ents = loom_calloc(s->cap, sizeof *s->ents))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", index_path);
		goto out;
	}
	json_object_foreach(wm, k, v) {
		size_t fi = 0;
		const loom_tensor *t;

		if (!json_is_string(v)) {
			rc = loom_fail(LOOM_EFORMAT, "%s: weight_map[\"%s\"] is not a string", index_path,
				       k);
			goto out;
		}
		if ((rc = open_shard(s, index_path, json_string_value(v), &fi)))
			goto out;
		if (!(t = loom_st_find(s->files[fi], k))) {
			rc = loom_fail(LOOM_EFORMAT, "%s: weight_map puts \"%s\" in %s, which lacks it",
				       index_path, k, loom_st_path(s->files[fi]));
			goto out;
		}
		size_t j = hash_name(k) & (s->cap - 1);
		while (s->ents[j].t)
			j = (j + 1) & (s->cap - 1);
		s->ents[j].t = t;
		s->ents[j].file = fi;
	}
out:
	json_decref(root);
	return rc;
}

loom_err loom_st_set_open(const char *dir, loom_st_set **out)
{
	loom_st_set *s = loom_calloc(1, sizeof *s);
	char *single = NULL, *index = NULL;
	loom_err rc = LOOM_OK;

	*out = NULL;
	if (!s || !(s->dir = loom_strdup(dir)) || !(single = join(dir, "model.safetensors")) ||
	    !(index = join(dir, "model.safetensors.index.json"))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
		goto out;
	}
	if (exists(single)) {
		if (!(s->files = loom_calloc(1, sizeof *s->files))) {
			rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
			goto out;
		}
		if ((rc = loom_st_open(single, &s->files[0])))
			goto out;
		s->n_files = 1;
	} else if (exists(index)) {
		if ((rc = open_index(s, index)))
			goto out;
	} else {
		rc = loom_fail(LOOM_ENOTFOUND,
			       "%s: no weights (neither model.safetensors nor "
			       "model.safetensors.index.json)",
			       dir);
		goto out;
	}
	*out = s;
	s = NULL;
out:
	loom_free(single);
	loom_free(index);
	loom_st_set_close(s);
	return rc;
}

void loom_st_set_close(loom_st_set *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n_files; i++)
		loom_st_close(s->files[i]);
	loom_free(s->files);
	loom_free(s->ents);
	loom_free(s->dir);
	loom_free(s);
}

static const struct set_ent *lookup(const loom_st_set *s, const char *name)
{
	size_t j = hash_name(name) & (s->cap - 1);
	while (s->ents[j].t) {
		if (strcmp(s->ents[j].t->name, name) == 0)
			return &s->ents[j];
		j = (j + 1) & (s->cap - 1);
	}
	return NULL;
}

const loom_tensor *loom_st_set_find(const loom_st_set *s, const char *name)
{
	if (!s->ents)
		return s->n_files ? loom_st_find(s->files[0], name) : NULL;
	const struct set_ent *e = lookup(s, name);
	return e ? e->t : NULL;
}

const char *loom_st_set_where(const loom_st_set *s, const char *name)
{
	if (!s->ents)
		return s->n_files ? loom_st_path(s->files[0]) : s->dir;
	const struct set_ent *e = lookup(s, name);
	return e ? loom_st_path(s->files[e->file]) : s->dir;
}
