/*
 * common/model_config.c — parse a Hugging Face config.json: sizes, EOS and
 * BOS ids, files; the family and its layer description are model_family.c's.
 *
 * Wrong JSON types are LOOM_EFORMAT, impossible values LOOM_EINVAL,
 * valid-but-unhandled models LOOM_EUNSUPPORTED; every message names the file
 * and the field. generation_config.json, when present, overrides the EOS ids.
 */
#include "model_config.h"
#include "model_config_int.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "textfile.h"

/* v absent or null: *out untouched, *present = 0. */
loom_err loom_mc_int(const char *path, json_t *root, const char *key, int required, int positive,
		     int *out)
{
	json_t *v = json_object_get(root, key);
	if (!v || json_is_null(v)) {
		if (required)
			return loom_fail(LOOM_EFORMAT, "%s: field \"%s\" is missing", path, key);
		return LOOM_OK;
	}
	if (!json_is_integer(v))
		return loom_fail(LOOM_EFORMAT, "%s: field \"%s\" must be an integer", path, key);
	json_int_t x = json_integer_value(v);
	if (positive && x <= 0)
		return loom_fail(LOOM_EINVAL, "%s: field \"%s\" must be positive, got %lld", path, key,
				 (long long)x);
	if (x > INT_MAX || x < INT_MIN)
		return loom_fail(LOOM_EINVAL, "%s: field \"%s\" is out of range (%lld)", path, key,
				 (long long)x);
	*out = (int)x;
	return LOOM_OK;
}

loom_err loom_mc_num(const char *path, json_t *root, const char *key, float *out)
{
	json_t *v = json_object_get(root, key);
	if (!v || json_is_null(v))
		return LOOM_OK;
	if (!json_is_number(v))
		return loom_fail(LOOM_EFORMAT, "%s: field \"%s\" must be a number", path, key);
	double x = json_number_value(v);
	if (!(x > 0))
		return loom_fail(LOOM_EINVAL, "%s: field \"%s\" must be positive, got %g", path, key, x);
	*out = (float)x;
	return LOOM_OK;
}

loom_err loom_mc_bool(const char *path, json_t *root, const char *key, bool *out)
{
	json_t *v = json_object_get(root, key);
	if (!v || json_is_null(v))
		return LOOM_OK;
	if (!json_is_boolean(v))
		return loom_fail(LOOM_EFORMAT, "%s: field \"%s\" must be true or false", path, key);
	*out = json_is_true(v);
	return LOOM_OK;
}

/* eos_token_id: an integer or a list of integers (null = absent). */
static loom_err get_eos(const char *path, json_t *root, loom_model_config *c)
{
	json_t *v = json_object_get(root, "eos_token_id");
	if (!v || json_is_null(v))
		return LOOM_OK;
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
			return loom_fail(LOOM_EINVAL, "%s: field \"eos_token_id\" is out of range", path);
		c->n_eos = 1;
		c->eos_ids[0] = (int32_t)json_integer_value(v);
		return LOOM_OK;
	}
	if (!json_is_array(v))
		return loom_fail(LOOM_EFORMAT,
				 "%s: field \"eos_token_id\" must be an integer or a list of integers",
				 path);
	if (json_array_size(v) > LOOM_MAX_EOS)
		return loom_fail(LOOM_ERANGE, "%s: field \"eos_token_id\" lists %zu ids (at most %d)",
				 path, json_array_size(v), LOOM_MAX_EOS);
	size_t i;
	json_t *e;
	json_array_foreach(v, i, e) {
		if (!json_is_integer(e))
			return loom_fail(LOOM_EFORMAT,
					 "%s: field \"eos_token_id\" must be an integer or a list of "
					 "integers",
					 path);
		if (json_integer_value(e) < 0 || json_integer_value(e) > INT32_MAX)
			return loom_fail(LOOM_EINVAL, "%s: field \"eos_token_id\" is out of range", path);
		c->eos_ids[i] = (int32_t)json_integer_value(e);
	}
	c->n_eos = (int)json_array_size(v);
	return LOOM_OK;
}

static loom_err parse_root(const char *path, json_t *root, loom_model_config *c)
{
	loom_err rc;

	if ((rc = loom_mc_family(path, root, c)))
		return rc;
	c->tied = loom_mc_tied_default(c->model_type);
	if ((rc = loom_mc_int(path, root, "hidden_size", 1, 1, &c->hidden)) ||
	    (rc = loom_mc_int(path, root, "intermediate_size", 1, 1, &c->ffn)) ||
	    (rc = loom_mc_int(path, root, "num_hidden_layers", 1, 1, &c->n_layers)) ||
	    (rc = loom_mc_int(path, root, "num_attention_heads", 1, 1, &c->n_heads)) ||
	    (rc = loom_mc_int(path, root, "vocab_size", 1, 1, &c->vocab)))
		return rc;
	c->n_kv_heads = c->n_heads;
	c->head_dim = 0;
	if ((rc = loom_mc_int(path, root, "num_key_value_heads", 0, 1, &c->n_kv_heads)) ||
	    (rc = loom_mc_int(path, root, "head_dim", 0, 1, &c->head_dim)) ||
	    (rc = loom_mc_int(path, root, "max_position_embeddings", 0, 1, &c->max_ctx)) ||
	    (rc = loom_mc_num(path, root, "rms_norm_eps", &c->rms_eps)) ||
	    (rc = loom_mc_num(path, root, "rope_theta", &c->rope_theta)) ||
	    (rc = loom_mc_bool(path, root, "tie_word_embeddings", &c->tied)) ||
	    (rc = loom_mc_int(path, root, "bos_token_id", 0, 0, &c->bos_id)) || (rc = get_eos(path, root, c)))
		return rc;
	if (c->bos_id < -1)
		return loom_fail(LOOM_EINVAL, "%s: field \"bos_token_id\" is negative", path);
	if (c->head_dim == 0) {
		if (c->hidden % c->n_heads != 0)
			return loom_fail(LOOM_EINVAL,
					 "%s: field \"hidden_size\" (%d) is not divisible by "
					 "\"num_attention_heads\" (%d)",
					 path, c->hidden, c->n_heads);
		c->head_dim = c->hidden / c->n_heads;
	}
	if (c->head_dim % 2 != 0)
		return loom_fail(LOOM_EINVAL, "%s: field \"head_dim\" (%d) must be even for rotary "
			       "embeddings", path, c->head_dim);
	if (c->n_heads % c->n_kv_heads != 0)
		return loom_fail(LOOM_EINVAL,
				 "%s: field \"num_attention_heads\" (%d) is not divisible by "
				 "\"num_key_value_heads\" (%d)",
				 path, c->n_heads, c->n_kv_heads);
	if (c->n_layers > LOOM_MAX_LAYERS)
		return loom_fail(LOOM_EUNSUPPORTED, "%s: field \"num_hidden_layers\" (%d) exceeds "
			       "loom's limit of %d layers", path, c->n_layers, LOOM_MAX_LAYERS);
	if ((rc = loom_mc_layers(path, root, c)))
		return rc;
	for (int i = 0; i < c->n_eos; i++)
		if (c->eos_ids[i] >= c->vocab)
			return loom_fail(LOOM_EINVAL, "%s: field \"eos_token_id\" (%d) is not below "
				       "\"vocab_size\" (%d)", path, c->eos_ids[i], c->vocab);
	if (c->bos_id >= c->vocab)
		return loom_fail(LOOM_EINVAL, "%s: field \"bos_token_id\" (%d) is not below "
			       "\"vocab_size\" (%d)", path, c->bos_id, c->vocab);
	return LOOM_OK;
}

static void defaults(loom_model_config *c)
{
	memset(c, 0, sizeof *c);
	c->max_ctx = 2048;
	c->rms_eps = 1e-6f;
	c->rope_theta = 10000.0f;
	c->tied = false;
	c->bos_id = -1;
}

loom_err loom_model_config_parse(const char *json, size_t len, const char *path,
				 loom_model_config *out)
{
	json_error_t jerr;
	loom_model_config c;
	loom_err rc;
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);

	defaults(&c);
	if (!root)
		return loom_fail(LOOM_EFORMAT, "%s: not valid JSON: %s (line %d, column %d)", path,
				 jerr.text, jerr.line, jerr.column);
	if (!json_is_object(root))
		rc = loom_fail(LOOM_EFORMAT, "%s: not a JSON object", path);
	else
		rc = parse_root(path, root, &c);
	json_decref(root);
	if (rc == LOOM_OK)
		*out = c;
	return rc;
}

static loom_err join(const char *dir, const char *name, char **out)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	if (!(*out = loom_malloc(n)))
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
	snprintf(*out, n, "%s/%s", dir, name);
	return LOOM_OK;
}

/* generation_config.json: only eos_token_id matters; it overrides config.json's.
 * Takes root (NULL when it did not parse: jerr says why). */
static loom_err apply_generation(const char *path, json_t *root, const json_error_t *jerr,
				 loom_model_config *c)
{
	loom_model_config g;
	loom_err rc = LOOM_OK;

	if (!root)
		return loom_fail(LOOM_EFORMAT, "%s: not valid JSON: %s (line %d)", path, jerr->text,
				 jerr->line);
	if (!json_is_object(root)) {
		rc = loom_fail(LOOM_EFORMAT, "%s: not a JSON object", path);
		goto out;
	}
	g.n_eos = 0;
	if ((rc = get_eos(path, root, &g)))
		goto out;
	for (int i = 0; i < g.n_eos; i++) {
		if (g.eos_ids[i] >= c->vocab) {
			rc = loom_fail(LOOM_EINVAL, "%s: field \"eos_token_id\" (%d) is not below the "
				       "vocab size (%d)", path, g.eos_ids[i], c->vocab);
			goto out;
		}
	}
	if (g.n_eos > 0) {
		c->n_eos = g.n_eos;
		memcpy(c->eos_ids, g.eos_ids, sizeof c->eos_ids);
	}
out:
	json_decref(root);
	return rc;
}

static loom_err load_generation(const char *path, loom_model_config *c)
{
	json_error_t jerr;
	return apply_generation(path, loom_json_load_file(path, JSON_REJECT_DUPLICATES, &jerr),
				&jerr, c);
}

loom_err loom_model_config_apply_generation(const char *json, size_t len, const char *path,
					    loom_model_config *c)
{
	json_error_t jerr;
	return apply_generation(path, json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr), &jerr,
				c);
}

loom_err loom_model_config_load(const char *dir, loom_model_config *out)
{
	char *path = NULL, *gpath = NULL, *text = NULL;
	size_t len = 0;
	struct stat st;
	loom_model_config c;
	loom_err rc;

	if ((rc = join(dir, "config.json", &path)) || (rc = loom_text_read(path, (size_t)64 << 20, &text, &len)) ||
	    (rc = loom_model_config_parse(text, len, path, &c)) ||
	    (rc = join(dir, "generation_config.json", &gpath)))
		goto out;
	if (stat(gpath, &st) == 0 && (rc = load_generation(gpath, &c)))
		goto out;
	*out = c;
out:
	loom_free(text);
	loom_free(path);
	loom_free(gpath);
	return rc;
}
