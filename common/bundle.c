/*
 * common/bundle.c — a model folder as one safetensors image (see bundle.h).
 *
 * Image: the safetensors format, tensors in name order (strcmp) whatever the
 * folder's file or shard layout, header keys sorted, so one model's weights
 * and config always give the same bytes and so the same sha256 in the
 * store. Metadata: "loom.config" = config.json text, and
 * "loom.generation_config" = generation_config.json text when present.
 * The folder's config is validated (loom_model_config_load) before anything
 * is built, so a bundle in the store always opens.
 */
#include "bundle.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "textfile.h"
#include "chat_source.h"

#define META_CONFIG "loom.config"
#define META_GENERATION "loom.generation_config"
#define META_TOKCFG "loom.tokenizer_config"
#define META_TEMPLATE "loom.chat_template"

/* The folder's texts a bundle carries, in this order (NULL = absent). */
static const char *const meta_keys[] = { META_CONFIG, META_GENERATION, META_TOKCFG,
					  META_TEMPLATE };
#define N_META (sizeof meta_keys / sizeof *meta_keys)
#define MAX_TEXT (16u << 20)

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = loom_malloc(n);
	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

static int exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp((*(const loom_tensor *const *)a)->name, (*(const loom_tensor *const *)b)->name);
}

/* The folder's weights: every tensor of model.safetensors, or every tensor
 * the shard index's weight_map names. *ts (loom_malloc'ed) points into *one
 * or *set, which the caller closes. */
static loom_err gather(const char *dir, loom_st_file **one, loom_st_set **set,
		       const loom_tensor ***ts, size_t *n)
{
	char *single = join(dir, "model.safetensors"), *index = join(dir,
								      "model.safetensors.index.json");
	json_t *root = NULL;
	json_error_t jerr;
	loom_err rc = LOOM_OK;

	*one = NULL;
	*set = NULL;
	*ts = NULL;
	*n = 0;
	if (!single || !index) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
		goto out;
	}
	if (exists(single)) {
		if ((rc = loom_st_open(single, one)))
			goto out;
		*n = loom_st_count(*one);
		if (!(*ts = loom_calloc(*n + 1, sizeof **ts))) {
			rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", single);
			goto out;
		}
		for (size_t i = 0; i < *n; i++)
			(*ts)[i] = loom_st_at(*one, i);
		goto out;
	}
	if (!exists(index)) {
		rc = loom_fail(LOOM_ENOTFOUND,
			       "%s: no model.safetensors or model.safetensors.index.json", dir);
		goto out;
	}
	if ((rc = loom_st_set_open(dir, set)))
		goto out;
	/* loom_st_set_open validated the index; here only its names are read */
	json_t *wm;
	if (!(root = loom_json_load_file(index, JSON_REJECT_DUPLICATES, &jerr)) ||
	    !json_is_object(wm = json_object_get(root, "weight_map"))) {
		rc = loom_fail(LOOM_EFORMAT, "%s: no \"weight_map\" object", index);
		goto out;
	}
	if (!(*ts = loom_calloc(json_object_size(wm) + 1, sizeof **ts))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", index);
		goto out;
	}
	const char *k;
	json_t *v;
	json_object_foreach(wm, k, v) {
		const loom_tensor *t = loom_st_set_find(*set, k);
		if (!t) {
			rc = loom_fail(LOOM_EFORMAT, "%s: tensor \"%s\" is in no shard", index, k);
			goto out;
		}
		(*ts)[(*n)++] = t;
	}
out:
	json_decref(root);
	loom_free(single);
	loom_free(index);
	return rc;
}

/* Builds the padded header text (loom_malloc'ed) for ts in order. */
static loom_err header(const char *dir, const loom_tensor *const *ts, size_t n,
		       const char *const *texts, char **text, size_t *len)
{
	json_t *root = json_object(), *meta = json_object();
	char *s = NULL;
	uint64_t pos = 0;
	loom_err rc = LOOM_OK;

	*text = NULL;
	if (!root || !meta) {
		json_decref(meta);
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
		goto out;
	}
	/* json_object_set_new takes the value's reference even when it fails */
	int bad = json_object_set_new(root, "__metadata__", meta) != 0;
	for (size_t i = 0; i < N_META && !bad; i++)
		bad = texts[i] && json_object_set_new(meta, meta_keys[i], json_string(texts[i])) != 0;
	if (bad) {
		rc = loom_fail(LOOM_EFORMAT, "%s: config texts are not valid UTF-8 (or out of memory)",
			       dir);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const loom_tensor *t = ts[i];
		json_t *e = json_object(), *shape = json_array();
		if (!e || !shape) {
			json_decref(e);
			json_decref(shape);
			rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
			goto out;
		}
		if (json_object_set_new(root, t->name, e) != 0) {
			json_decref(shape);
			rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
			goto out;
		}
		for (int d = 0; d < t->ndim; d++)
			json_array_append_new(shape, json_integer(t->shape[d]));
		if (json_object_set_new(e, "dtype", json_string(loom_dtype_name(t->dtype))) ||
		    json_object_set_new(e, "shape", shape) ||
		    json_object_set_new(e, "data_offsets",
					json_pack("[II]", (json_int_t)pos,
						  (json_int_t)(pos + t->nbytes)))) {
			rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
			goto out;
		}
		pos += t->nbytes;
	}
	if (!(s = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
		goto out;
	}
	size_t l = strlen(s), padded = (l + 7) & ~(size_t)7;
	if (!(*text = loom_malloc(padded))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
		goto out;
	}
	memcpy(*text, s, l);
	memset(*text + l, ' ', padded - l);
	*len = padded;
out:
	free(s); /* json_dumps allocates with jansson's allocator (malloc) */
	json_decref(root);
	return rc;
}

loom_err loom_bundle_from_dir(const char *dir, void **buf, size_t *len)
{
	loom_model_config cfg;
	loom_st_file *one = NULL;
	loom_st_set *set = NULL;
	const loom_tensor **ts = NULL;
	char *cpath = NULL, *gpath = NULL, *config = NULL, *generation = NULL, *hdr = NULL;
	char *tokcfg = NULL, *jinja = NULL;
	loom_chat_source chat = {0};
	size_t n = 0, hlen = 0, tlen = 0, total;
	unsigned char *out = NULL;
	loom_err rc;

	*buf = NULL;
	*len = 0;
	if ((rc = loom_model_config_load(dir, &cfg)))
		goto out;
	if (!(cpath = join(dir, "config.json")) || !(gpath = join(dir, "generation_config.json"))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
		goto out;
	}
	if ((rc = loom_text_read(cpath, MAX_TEXT, &config, &tlen)) ||
	    (exists(gpath) && (rc = loom_text_read(gpath, MAX_TEXT, &generation, &tlen))) ||
	    (rc = loom_chat_source_load_dir(dir, &chat, &tokcfg, &jinja)))
		goto out;
	if ((rc = gather(dir, &one, &set, &ts, &n)))
		goto out;
	if (n)
		qsort(ts, n, sizeof *ts, by_name);
	const char *texts[N_META] = { config, generation, tokcfg, jinja };
	if ((rc = header(dir, ts, n, texts, &hdr, &hlen)))
		goto out;
	total = 8 + hlen;
	for (size_t i = 0; i < n; i++)
		total += ts[i]->nbytes;
	if (!(out = loom_malloc(total))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory for a %zu-byte bundle", dir, total);
		goto out;
	}
	for (int i = 0; i < 8; i++)
		out[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
	memcpy(out + 8, hdr, hlen);
	unsigned char *p = out + 8 + hlen;
	for (size_t i = 0; i < n; i++) {
		if (ts[i]->nbytes)
			memcpy(p, ts[i]->data, ts[i]->nbytes);
		p += ts[i]->nbytes;
	}
	*buf = out;
	*len = total;
	out = NULL;
out:
	loom_free(out);
	loom_free(hdr);
	loom_free(ts);
	loom_st_close(one);
	loom_st_set_close(set);
	loom_free(config);
	loom_free(generation);
	loom_free(tokcfg);
	loom_free(jinja);
	loom_chat_source_fini(&chat);
	loom_free(cpath);
	loom_free(gpath);
	return rc;
}

loom_err loom_bundle_open(const void *buf, size_t len, const char *name, loom_st_file **f,
			  loom_model_config *cfg)
{
	loom_st_file *sf = NULL;
	loom_model_config c;
	char label[512];
	const char *text;
	loom_err rc;

	*f = NULL;
	if (!name)
		name = "(bundle)";
	if ((rc = loom_st_open_mem(buf, len, name, &sf)))
		return rc;
	if (!(text = loom_st_meta(sf, META_CONFIG))) {
		rc = loom_fail(LOOM_EFORMAT,
			       "%s: not a loom model bundle: no \"" META_CONFIG "\" in its metadata",
			       name);
		goto out;
	}
	snprintf(label, sizeof label, "%s: " META_CONFIG, name);
	if ((rc = loom_model_config_parse(text, strlen(text), label, &c)))
		goto out;
	if ((text = loom_st_meta(sf, META_GENERATION))) {
		snprintf(label, sizeof label, "%s: " META_GENERATION, name);
		if ((rc = loom_model_config_apply_generation(text, strlen(text), label, &c)))
			goto out;
	}
	*f = sf;
	*cfg = c;
	sf = NULL;
out:
	loom_st_close(sf);
	return rc;
}

loom_err loom_bundle_chat_source(const loom_st_file *f, const char *name, loom_chat_source *out)
{
	const char *tc = loom_st_meta(f, META_TOKCFG);
	char label[512];
	snprintf(label, sizeof label, "%s: " META_TOKCFG, name ? name : "(bundle)");
	return loom_chat_source_parse(tc, tc ? strlen(tc) : 0, loom_st_meta(f, META_TEMPLATE), label,
				      out);
}
