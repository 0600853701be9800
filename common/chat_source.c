/*
 * common/chat_source.c — a model folder's chat template and special-token
 * strings, as transformers finds them (PreTrainedTokenizerBase: a separate
 * chat_template.jinja overrides tokenizer_config.json's chat_template; a
 * list of named templates uses "default").
 */
#include "chat_source.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "textfile.h"

#define MAX_TOKCFG ((size_t)32 << 20)
#define MAX_TEMPLATE ((size_t)4 << 20)

/* bos_token / eos_token: absent/null = "", a string, or {"content": string}. */
static loom_err token_str(const char *label, json_t *root, const char *key, char **out)
{
	json_t *v = json_object_get(root, key);
	if (json_is_object(v))
		v = json_object_get(v, "content");
	if (!v || json_is_null(v)) {
		*out = loom_strdup("");
	} else if (!json_is_string(v)) {
		return loom_fail(LOOM_EFORMAT, "%s: field \"%s\" must be a string or an object with "
			       "a string \"content\"", label, key);
	} else {
		*out = loom_strndup(json_string_value(v), json_string_length(v));
	}
	return *out ? LOOM_OK : loom_fail(LOOM_ENOMEM, "%s: out of memory", label);
}

static loom_err template_field(const char *label, json_t *root, char **out)
{
	json_t *v = json_object_get(root, "chat_template");
	*out = NULL;
	if (!v || json_is_null(v))
		return LOOM_OK;
	if (json_is_array(v)) { /* [{"name": ..., "template": ...}, ...] */
		size_t i;
		json_t *e, *found = NULL;
		json_array_foreach(v, i, e) {
			json_t *n = json_object_get(e, "name"), *t = json_object_get(e, "template");
			if (!json_is_string(n) || !json_is_string(t))
				return loom_fail(LOOM_EFORMAT, "%s: field \"chat_template\"[%zu] must be "
					       "{\"name\": string, \"template\": string}", label, i);
			if (strcmp(json_string_value(n), "default") == 0)
				found = t;
		}
		if (!found)
			return loom_fail(LOOM_EUNSUPPORTED, "%s: field \"chat_template\" lists named "
				       "templates but none called \"default\"", label);
		v = found;
	}
	if (!json_is_string(v))
		return loom_fail(LOOM_EFORMAT, "%s: field \"chat_template\" must be a string or a "
			       "list of named templates", label);
	*out = loom_strndup(json_string_value(v), json_string_length(v));
	return *out ? LOOM_OK : loom_fail(LOOM_ENOMEM, "%s: out of memory", label);
}

loom_err loom_chat_source_parse(const char *tc, size_t tc_len, const char *jinja,
				const char *label, loom_chat_source *out)
{
	json_t *root = NULL;
	json_error_t je;
	loom_err rc = LOOM_OK;

	memset(out, 0, sizeof *out);
	if (tc) {
		/* JSON_DECODE_INT_AS_REAL: Mistral's and Gemma's model_max_length is 1e30 */
		root = json_loadb(tc, tc_len, JSON_DECODE_INT_AS_REAL, &je);
		if (!root)
			return loom_fail(LOOM_EFORMAT, "%s: not valid JSON: %s (line %d)", label,
					 je.text, je.line);
		if (!json_is_object(root)) {
			rc = loom_fail(LOOM_EFORMAT, "%s: not a JSON object", label);
			goto out;
		}
		if ((rc = token_str(label, root, "bos_token", &out->bos_token)) ||
		    (rc = token_str(label, root, "eos_token", &out->eos_token)) ||
		    (!jinja && (rc = template_field(label, root, &out->template_text))))
			goto out;
	} else if (!(out->bos_token = loom_strdup("")) || !(out->eos_token = loom_strdup(""))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", label);
		goto out;
	}
	if (jinja && !(out->template_text = loom_strdup(jinja)))
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", label);
out:
	json_decref(root);
	if (rc)
		loom_chat_source_fini(out);
	return rc;
}

/* Reads dir/name if it exists: *text NULL when it does not. */
static loom_err read_opt(const char *dir, const char *name, size_t max, char **text, size_t *len,
			 char *path, size_t path_cap)
{
	snprintf(path, path_cap, "%s/%s", dir, name);
	loom_err rc = loom_text_read(path, max, text, len);
	if (rc == LOOM_ENOTFOUND) {
		*text = NULL;
		*len = 0;
		return LOOM_OK;
	}
	return rc;
}

loom_err loom_chat_source_load_dir(const char *dir, loom_chat_source *out, char **tc_out,
				   char **jinja_out)
{
	char *tc = NULL, *jinja = NULL;
	size_t tc_len = 0, jlen = 0;
	char path[4096];
	loom_err rc;

	memset(out, 0, sizeof *out);
	if ((rc = read_opt(dir, "chat_template.jinja", MAX_TEMPLATE, &jinja, &jlen, path,
			   sizeof path)) ||
	    (rc = read_opt(dir, "tokenizer_config.json", MAX_TOKCFG, &tc, &tc_len, path,
			   sizeof path)))
		goto out;
	snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
	rc = loom_chat_source_parse(tc, tc_len, jinja, path, out);
out:
	if (!rc && tc_out) {
		*tc_out = tc;
		tc = NULL;
	}
	if (!rc && jinja_out) {
		*jinja_out = jinja;
		jinja = NULL;
	}
	loom_free(tc);
	loom_free(jinja);
	return rc;
}

void loom_chat_source_fini(loom_chat_source *s)
{
	loom_free(s->template_text);
	loom_free(s->bos_token);
	loom_free(s->eos_token);
	memset(s, 0, sizeof *s);
}
