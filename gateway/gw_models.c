/*
 * gateway/gw_models.c — model and adapter registry: two small arrays of
 * pointers (so entries never move), looked up by name. A handful of models
 * and at most a few hundred adapters per gateway, looked up once per
 * request: a linear scan is the right structure.
 */
#include "gw_models.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter.h"
#include "common/alloc.h"

struct gw_models {
	gw_model **v;
	size_t n, cap;
	gw_adapter **ads;
	size_t n_ads, cap_ads;
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

static void adapter_free(gw_adapter *a)
{
	if (!a)
		return;
	loom_free(a->path);
	loom_free(a);
}

void gw_models_destroy(gw_models *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++)
		model_free(m->v[i]);
	for (size_t i = 0; i < m->n_ads; i++)
		adapter_free(m->ads[i]);
	loom_free(m->v);
	loom_free(m->ads);
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
	if (gw_models_find_adapter(m, name)) {
		rc = loom_fail(LOOM_EEXIST, "model '%s': an adapter already has that name", name);
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

/* ---- adapters ---- */

bool gw_adapter_name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n >= LOOM_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

loom_err gw_adapter_split_arg(const char *arg, char **name, char **dir, char **base)
{
	*name = *dir = *base = NULL;
	const char *eq = strchr(arg, '=');
	if (!eq || eq == arg)
		return loom_fail(LOOM_EINVAL, "--adapter '%s': expected NAME=PEFT_DIR[@BASE]", arg);
	const char *d = eq + 1, *end = d + strlen(d);
	const char *at = strrchr(d, '@');
	if (at && strchr(at + 1, '/'))
		at = NULL; /* part of the folder's path */
	if (at && !at[1])
		return loom_fail(LOOM_EINVAL, "--adapter '%s': empty BASE after '@'", arg);
	const char *dend = at ? at : end;
	if (dend == d)
		return loom_fail(LOOM_EINVAL, "--adapter '%s': empty PEFT folder", arg);
	*name = loom_strndup(arg, (size_t)(eq - arg));
	*dir = loom_strndup(d, (size_t)(dend - d));
	if (at)
		*base = loom_strdup(at + 1);
	if (!*name || !*dir || (at && !*base)) {
		loom_free(*name);
		loom_free(*dir);
		loom_free(*base);
		*name = *dir = *base = NULL;
		return loom_fail(LOOM_ENOMEM, "out of memory");
	}
	return LOOM_OK;
}

loom_err gw_models_check_adapter(const gw_models *m, const char *name, const char *base,
				 const gw_model **base_out)
{
	const gw_model *b = NULL;
	if (base_out)
		*base_out = NULL;
	if (!gw_adapter_name_ok(name))
		return loom_fail(LOOM_EINVAL,
				 "adapter name '%s' must be 1..%d characters of A-Z a-z 0-9 . _ -",
				 name, LOOM_NAME_MAX - 1);
	if (gw_models_find(m, name))
		return loom_fail(LOOM_EEXIST, "adapter '%s': a model already has that name", name);
	if (gw_models_find_adapter(m, name))
		return loom_fail(LOOM_EEXIST, "adapter '%s' given twice", name);
	if (base) {
		if (!(b = gw_models_find(m, base)))
			return loom_fail(LOOM_ENOTFOUND, "adapter '%s': base model '%s' is not served",
					 name, base);
	} else if (m->n == 1) {
		b = m->v[0];
	} else {
		return loom_fail(LOOM_EINVAL,
				 "adapter '%s': %zu models are served, give its base as NAME=DIR@BASE",
				 name, m->n);
	}
	if (base_out)
		*base_out = b;
	return LOOM_OK;
}

loom_err gw_models_add_adapter(gw_models *m, const char *name, const char *dir, const char *base)
{
	loom_err rc;
	const gw_model *b;
	ad_adapter *ad = NULL;
	gw_adapter *ga = NULL;
	char abs[PATH_MAX];
	if ((rc = gw_models_check_adapter(m, name, base, &b)))
		return rc;
	if (!realpath(dir, abs))
		return loom_fail(errno == ENOENT || errno == ENOTDIR ? LOOM_ENOTFOUND : LOOM_EIO,
				 "%s: %s", dir, strerror(errno));
	if ((rc = ad_adapter_load(abs, name, &b->cfg, &ad)))
		return rc;
	ga = loom_calloc(1, sizeof *ga);
	if (!ga || !(ga->path = loom_strdup(abs))) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory adding adapter '%s'", name);
		goto out;
	}
	snprintf(ga->name, sizeof ga->name, "%s", name);
	ga->base = b;
	ga->rank = ad->base_rank;
	ga->max_rank = ad->max_rank;
	ga->alpha = ad->base_alpha;
	ga->use_rslora = ad->use_rslora != 0;
	ga->targets = ad->targets;
	ga->bytes = ad->bytes;
	ga->created = time(NULL);
	if (m->n_ads == m->cap_ads) {
		size_t cap = m->cap_ads ? m->cap_ads * 2 : 8;
		gw_adapter **v = loom_realloc(m->ads, cap * sizeof *v);
		if (!v) {
			rc = loom_fail(LOOM_ENOMEM, "out of memory adding adapter '%s'", name);
			goto out;
		}
		m->ads = v;
		m->cap_ads = cap;
	}
	m->ads[m->n_ads++] = ga;
	ga = NULL;
	rc = LOOM_OK;
out:
	adapter_free(ga);
	if (ad)
		ad_adapter_destroy(ad);
	return rc;
}

const gw_adapter *gw_models_find_adapter(const gw_models *m, const char *name)
{
	for (size_t i = 0; i < m->n_ads; i++)
		if (!strcmp(m->ads[i]->name, name))
			return m->ads[i];
	return NULL;
}

size_t gw_models_adapter_count(const gw_models *m)
{
	return m->n_ads;
}

const gw_adapter *gw_models_adapter_at(const gw_models *m, size_t i)
{
	return i < m->n_ads ? m->ads[i] : NULL;
}

const gw_model *gw_models_resolve(const gw_models *m, const char *name, const gw_adapter **ad)
{
	const gw_model *md = gw_models_find(m, name);
	const gw_adapter *a = md ? NULL : gw_models_find_adapter(m, name);
	if (ad)
		*ad = a;
	return md ? md : a ? a->base : NULL;
}
