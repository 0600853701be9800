/*
 * gateway/gw_models.c — model registry: a small array, looked up by name.
 * A handful of models per gateway, so a linear scan is the right structure.
 */
#include "gw_models.h"

#include <string.h>

#include "common/alloc.h"

struct gw_models {
	gw_model **v;
	size_t n, cap;
};

loom_err gw_models_create(gw_models **out)
{
	*out = loom_calloc(1, sizeof **out);
	return *out ? LOOM_OK : loom_fail(LOOM_ENOMEM, "out of memory creating the model table");
}

static void model_free(gw_model *md)
{
	if (!md)
		return;
	if (md->tok)
		loom_tok_free(md->tok);
	loom_free(md->dir);
	loom_free(md);
}

void gw_models_destroy(gw_models *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++)
		model_free(m->v[i]);
	loom_free(m->v);
	loom_free(m);
}

loom_err gw_models_split_arg(const char *arg, char **name, char **dir)
{
	const char *eq = strchr(arg, '=');
	const char *d = eq ? eq + 1 : arg;
	*name = *dir = NULL;
	if (!*d)
		return loom_fail(LOOM_EINVAL, "--model '%s': empty folder", arg);
	if (eq) {
		*name = loom_strndup(arg, (size_t)(eq - arg));
	} else {
		size_t n = strlen(d);
		while (n > 1 && d[n - 1] == '/')
			n--;
		size_t b = n;
		while (b > 0 && d[b - 1] != '/')
			b--;
		*name = loom_strndup(d + b, n - b);
	}
	*dir = loom_strdup(d);
	if (!*name || !*dir) {
		loom_free(*name);
		loom_free(*dir);
		*name = *dir = NULL;
		return loom_fail(LOOM_ENOMEM, "out of memory");
	}
	if (!**name || strlen(*name) >= LOOM_NAME_MAX) {
		loom_err rc = loom_fail(LOOM_EINVAL, "--model '%s': model name must be 1..%d bytes",
					arg, LOOM_NAME_MAX - 1);
		loom_free(*name);
		loom_free(*dir);
		*name = *dir = NULL;
		return rc;
	}
	return LOOM_OK;
}

loom_err gw_models_add(gw_models *m, const char *name, const char *dir, gw_chat_tmpl tmpl)
{
	loom_err rc;
	char *owned_name = NULL, *owned_dir = NULL, *tok_path = NULL;
	gw_model *md = NULL;
	if (!name) {
		if ((rc = gw_models_split_arg(dir, &owned_name, &owned_dir)))
			return rc;
		name = owned_name;
	}
	if (!*name || strlen(name) >= LOOM_NAME_MAX) {
		rc = loom_fail(LOOM_EINVAL, "model name '%s' must be 1..%d bytes", name,
			       LOOM_NAME_MAX - 1);
		goto out;
	}
	if (gw_models_find(m, name)) {
		rc = loom_fail(LOOM_EEXIST, "model '%s' given twice", name);
		goto out;
	}
	md = loom_calloc(1, sizeof *md);
	tok_path = loom_malloc(strlen(dir) + sizeof "/tokenizer.json");
	if (!md || !tok_path || !(md->dir = loom_strdup(dir))) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory loading model '%s'", name);
		goto out;
	}
	strcpy(md->name, name);
	md->tmpl = tmpl;
	md->created = time(NULL);
	if ((rc = loom_model_config_load(dir, &md->cfg)))
		goto out;
	strcpy(tok_path, dir);
	strcat(tok_path, "/tokenizer.json");
	if ((rc = loom_tok_load(tok_path, &md->tok)))
		goto out;
	if (md->cfg.max_ctx <= 0 || md->cfg.vocab <= 0) {
		rc = loom_fail(LOOM_EFORMAT, "%s/config.json: context length and vocab must be positive",
			       dir);
		goto out;
	}
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 4;
		gw_model **v = loom_realloc(m->v, cap * sizeof *v);
		if (!v) {
			rc = loom_fail(LOOM_ENOMEM, "out of memory loading model '%s'", name);
			goto out;
		}
		m->v = v;
		m->cap = cap;
	}
	m->v[m->n++] = md;
	md = NULL;
	rc = LOOM_OK;
out:
	model_free(md);
	loom_free(tok_path);
	loom_free(owned_name);
	loom_free(owned_dir);
	return rc;
}

loom_err gw_models_set_template(gw_models *m, const char *name, gw_chat_tmpl tmpl)
{
	for (size_t i = 0; i < m->n; i++) {
		if (!strcmp(m->v[i]->name, name)) {
			m->v[i]->tmpl = tmpl;
			return LOOM_OK;
		}
	}
	return loom_fail(LOOM_ENOTFOUND, "--chat-template: no model named '%s'", name);
}

const gw_model *gw_models_find(const gw_models *m, const char *name)
{
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->v[i]->name, name))
			return m->v[i];
	return NULL;
}

size_t gw_models_count(const gw_models *m)
{
	return m->n;
}

const gw_model *gw_models_at(const gw_models *m, size_t i)
{
	return i < m->n ? m->v[i] : NULL;
}
