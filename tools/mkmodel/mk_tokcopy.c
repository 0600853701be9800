/*
 * tools/mkmodel/mk_tokcopy.c — a real tokenizer.json (and its
 * tokenizer_config.json) copied into a random model folder
 * (--tokenizer-json, --tokenizer-config): its size and special ids, so
 * the config.json written beside it names the same BOS/EOS.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "mk.h"

loom_err mk_read_file(const char *path, char **buf, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *b = NULL;
	long n;

	*buf = NULL;
	*len = 0;
	if (!fp)
		return loom_fail(LOOM_EIO, "%s: cannot open: %s", path, strerror(errno));
	if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
		fclose(fp);
		return loom_fail(LOOM_EIO, "%s: cannot read: %s", path, strerror(errno));
	}
	if (!(b = loom_malloc((size_t)n + 1))) {
		fclose(fp);
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", path);
	}
	if (fread(b, 1, (size_t)n, fp) != (size_t)n) {
		fclose(fp);
		loom_free(b);
		return loom_fail(LOOM_EIO, "%s: short read", path);
	}
	fclose(fp);
	b[n] = '\0';
	*buf = b;
	*len = (size_t)n;
	return LOOM_OK;
}

/* The id of piece s in tokenizer.json (added_tokens, then model.vocab), or -1. */
static int32_t find_id(json_t *tok, const char *s)
{
	json_t *v;
	size_t i;
	json_array_foreach(json_object_get(tok, "added_tokens"), i, v) {
		const char *c = json_string_value(json_object_get(v, "content"));
		if (c && strcmp(c, s) == 0)
			return (int32_t)json_integer_value(json_object_get(v, "id"));
	}
	v = json_object_get(json_object_get(json_object_get(tok, "model"), "vocab"), s);
	return json_is_integer(v) ? (int32_t)json_integer_value(v) : -1;
}

/* tokenizer_config's "bos_token"/"eos_token": a string or {"content": ...}. */
static const char *special(json_t *cfg, const char *key)
{
	json_t *v = json_object_get(cfg, key);
	if (json_is_object(v))
		v = json_object_get(v, "content");
	return json_string_value(v);
}

static void add_eos(int32_t *eos, int *n, int32_t id)
{
	if (id < 0 || *n == MK_MAX_EOS)
		return;
	for (int i = 0; i < *n; i++)
		if (eos[i] == id)
			return;
	eos[(*n)++] = id;
}

loom_err mk_tokenizer_read(const char *json_path, const char *config_path, char **text,
			   size_t *len, int *n_ids, int32_t *bos, int32_t *eos, int *n_eos)
{
	static const char *const bos_names[] = { "<s>", "<|begin_of_text|>", "<bos>" };
	static const char *const eos_names[] = { "</s>",	  "<|end_of_text|>", "<|eom_id|>",
						 "<|eot_id|>",	  "<|endoftext|>",   "<|im_end|>",
						 "<eos>",	  "<end_of_turn>" };
	json_t *tok = NULL, *cfg = NULL, *v;
	json_error_t e;
	const char *k;
	size_t i;
	loom_err rc;

	*bos = -1;
	*n_eos = 0;
	*n_ids = 0;
	if ((rc = mk_read_file(json_path, text, len)))
		return rc;
	if (!(tok = json_loadb(*text, *len, 0, &e)) || !json_is_object(tok)) {
		rc = loom_fail(LOOM_EINVAL, "%s: not a tokenizer.json: %s", json_path,
			       tok ? "not an object" : e.text);
		goto out;
	}
	json_object_foreach(json_object_get(json_object_get(tok, "model"), "vocab"), k, v)
		if (json_integer_value(v) >= *n_ids)
			*n_ids = (int)json_integer_value(v) + 1;
	json_array_foreach(json_object_get(tok, "added_tokens"), i, v) {
		json_int_t id = json_integer_value(json_object_get(v, "id"));
		if (id >= *n_ids)
			*n_ids = (int)id + 1;
	}
	if (*n_ids <= 0) {
		rc = loom_fail(LOOM_EINVAL, "%s: no model.vocab or added_tokens ids", json_path);
		goto out;
	}
	if (config_path) {
		/* INT_AS_REAL: Mistral's and Gemma's model_max_length is 1e30 */
		cfg = json_load_file(config_path, JSON_DECODE_INT_AS_REAL, &e);
		if (!cfg || !json_is_object(cfg)) {
			rc = loom_fail(LOOM_EINVAL, "%s: not a tokenizer_config.json: %s",
				       config_path, cfg ? "not an object" : e.text);
			goto out;
		}
		if (special(cfg, "bos_token"))
			*bos = find_id(tok, special(cfg, "bos_token"));
		if (special(cfg, "eos_token"))
			add_eos(eos, n_eos, find_id(tok, special(cfg, "eos_token")));
	}
	for (i = 0; *bos < 0 && i < sizeof bos_names / sizeof *bos_names; i++)
		*bos = find_id(tok, bos_names[i]);
	for (i = 0; i < sizeof eos_names / sizeof *eos_names; i++)
		add_eos(eos, n_eos, find_id(tok, eos_names[i]));
out:
	json_decref(tok);
	json_decref(cfg);
	if (rc) {
		loom_free(*text);
		*text = NULL;
		*len = 0;
	}
	return rc;
}
