/*
 * gateway/gw_models.c — model and adapter registry: two arrays of pointers
 * (so entries never move while a reader holds one), looked up by name under
 * a read-write lock. A handful of models and up to a few thousand adapters,
 * looked up once per request: a linear scan is the right structure.
 * The table holds one reference on each model; every adapter entry holds
 * one on its base model, so adapter->base stays valid while it is listed.
 */
#include "gw_models.h"

#include "common/log.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter.h"
#include "common/alloc.h"

struct gw_models {
	pthread_rwlock_t lock;
	gw_model **v;
	size_t n, cap;
	gw_adapter **ads;
	size_t n_ads, cap_ads;
};

/* The lock is logically mutable: lookups take it on a const table. */
static void rd(const gw_models *m)
{
	pthread_rwlock_rdlock(&((gw_models *)m)->lock);
}

static void wr(gw_models *m)
{
	pthread_rwlock_wrlock(&m->lock);
}

static void un(const gw_models *m)
{
	pthread_rwlock_unlock(&((gw_models *)m)->lock);
}

loom_err gw_models_create(gw_models **out)
{
	*out = loom_calloc(1, sizeof **out);
	if (!*out)
		return loom_fail(LOOM_ENOMEM, "out of memory creating the model table");
	pthread_rwlock_init(&(*out)->lock, NULL);
	return LOOM_OK;
}

void gw_model_hold(const gw_model *md)
{
	atomic_fetch_add(&((gw_model *)md)->refs, 1);
}

void gw_model_release(const gw_model *cmd)
{
	gw_model *md = (gw_model *)cmd;
	if (!md || atomic_fetch_sub(&md->refs, 1) != 1)
		return;
	if (md->tok)
		loom_tok_free(md->tok);
	loom_jinja_free(md->jinja);
	loom_free(md->jinja_error);
	loom_free(md->bos_token);
	loom_free(md->eos_token);
	loom_free(md->dir);
	loom_free(md);
}

void gw_models_destroy(gw_models *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_ads; i++) {
		gw_model_release(m->ads[i]->base);
		loom_free(m->ads[i]);
	}
	for (size_t i = 0; i < m->n; i++)
		gw_model_release(m->v[i]);
	loom_free(m->v);
	loom_free(m->ads);
	pthread_rwlock_destroy(&m->lock);
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

/* ---- lookups without the lock (callers hold it) ---- */

static gw_model *find_model(const gw_models *m, const char *name, size_t *idx)
{
	for (size_t i = 0; i < m->n; i++) {
		if (!strcmp(m->v[i]->name, name)) {
			if (idx)
				*idx = i;
			return m->v[i];
		}
	}
	return NULL;
}

static gw_adapter *find_adapter(const gw_models *m, const char *name, size_t *idx)
{
	for (size_t i = 0; i < m->n_ads; i++) {
		if (!strcmp(m->ads[i]->name, name)) {
			if (idx)
				*idx = i;
			return m->ads[i];
		}
	}
	return NULL;
}

static bool grow(void **v, size_t *cap, size_t n, size_t first)
{
	if (n < *cap)
		return true;
	size_t c = *cap ? *cap * 2 : first;
	void *p = loom_realloc(*v, c * sizeof(void *));
	if (!p)
		return false;
	*v = p;
	*cap = c;
	return true;
}

/* ---- models ---- */

loom_err gw_model_create(const char *name, const loom_model_config *cfg, loom_tok *tok,
			 gw_chat_tmpl tmpl, const char *what_for, gw_model **out)
{
	*out = NULL;
	if (!*name || strlen(name) >= LOOM_NAME_MAX) {
		if (tok)
			loom_tok_free(tok);
		return loom_fail(LOOM_EINVAL, "model name '%s' must be 1..%d bytes", name,
				 LOOM_NAME_MAX - 1);
	}
	if (cfg->max_ctx <= 0 || cfg->vocab <= 0) {
		if (tok)
			loom_tok_free(tok);
		return loom_fail(LOOM_EFORMAT, "%s: context length and vocab must be positive",
				 what_for);
	}
	gw_model *md = loom_calloc(1, sizeof *md);
	if (!md) {
		if (tok)
			loom_tok_free(tok);
		return loom_fail(LOOM_ENOMEM, "out of memory loading model '%s'", name);
	}
	snprintf(md->name, sizeof md->name, "%s", name);
	md->cfg = *cfg;
	md->tok = tok;
	md->created = time(NULL);
	atomic_init(&md->refs, 1);
	loom_err rc = gw_model_set_chat(md, NULL, tmpl);
	if (rc) {
		gw_model_release(md);
		return rc;
	}
	*out = md;
	return LOOM_OK;
}

loom_err gw_model_set_chat(gw_model *md, const loom_chat_source *src, gw_chat_tmpl tmpl)
{
	loom_jinja *j = NULL;
	char *err = NULL, *bos, *eos;
	bool has = src && src->template_text;
	loom_err crc = has ? loom_jinja_compile(src->template_text, strlen(src->template_text), &j)
			   : LOOM_OK;
	if (crc) {
		if (crc == LOOM_ENOMEM)
			return loom_fail(LOOM_ENOMEM, "out of memory compiling the chat template of "
					 "model '%s'", md->name);
		LOOM_WARN("model %s: its chat template cannot be used: %s", md->name, loom_errmsg());
		err = loom_strdup(loom_errmsg());
	}
	bos = loom_strdup(src && src->bos_token ? src->bos_token : "");
	eos = loom_strdup(src && src->eos_token ? src->eos_token : "");
	if (!bos || !eos || (has && !j && !err)) {
		loom_jinja_free(j);
		loom_free(err), loom_free(bos), loom_free(eos);
		return loom_fail(LOOM_ENOMEM, "out of memory loading model '%s'", md->name);
	}
	loom_jinja_free(md->jinja);
	loom_free(md->jinja_error), loom_free(md->bos_token), loom_free(md->eos_token);
	md->jinja = j;
	md->jinja_error = err;
	md->bos_token = bos;
	md->eos_token = eos;
	md->n_extra_eos = 0;
	int32_t id = *eos && md->tok ? loom_tok_id(md->tok, eos) : -1;
	for (int i = 0; id >= 0 && i < md->cfg.n_eos; i++)
		if (md->cfg.eos_ids[i] == id)
			id = -1;
	if (id >= 0)
		md->extra_eos[md->n_extra_eos++] = id;
	md->tmpl = tmpl != GW_TMPL_AUTO ? tmpl : has ? GW_TMPL_MODEL : GW_TMPL_PLAIN;
	md->tools_fmt = md->tmpl == GW_TMPL_MODEL && j ? gw_tools_detect(src->template_text)
						       : GW_TOOLS_NONE;
	return LOOM_OK;
}

loom_err gw_model_chat_from_dir(gw_model *md, const char *dir, gw_chat_tmpl tmpl)
{
	loom_chat_source src;
	loom_err rc = loom_chat_source_load_dir(dir, &src, NULL, NULL);
	if (rc)
		return rc;
	rc = gw_model_set_chat(md, &src, tmpl);
	loom_chat_source_fini(&src);
	return rc;
}

loom_err gw_models_add(gw_models *m, const char *name, const char *dir, gw_chat_tmpl tmpl)
{
	loom_err rc;
	char *owned_name = NULL, *owned_dir = NULL, *tok_path = NULL;
	loom_model_config cfg;
	loom_tok *tok = NULL;
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
	if (!(tok_path = loom_malloc(strlen(dir) + sizeof "/tokenizer.json"))) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory loading model '%s'", name);
		goto out;
	}
	if ((rc = loom_model_config_load(dir, &cfg)))
		goto out;
	strcpy(tok_path, dir);
	strcat(tok_path, "/tokenizer.json");
	if ((rc = loom_tok_load(tok_path, &tok)))
		goto out;
	char what[PATH_MAX + 32];
	snprintf(what, sizeof what, "%s/config.json", dir);
	rc = gw_model_create(name, &cfg, tok, tmpl, what, &md);
	tok = NULL;
	if (rc)
		goto out;
	if ((rc = gw_model_chat_from_dir(md, dir, tmpl)))
		goto out;
	if (!(md->dir = loom_strdup(dir))) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory loading model '%s'", name);
		goto out;
	}
	rc = gw_models_put(m, md, false);
	md = NULL;
out:
	gw_model_release(md);
	if (tok)
		loom_tok_free(tok);
	loom_free(tok_path);
	loom_free(owned_name);
	loom_free(owned_dir);
	return rc;
}

loom_err gw_models_put(gw_models *m, gw_model *md, bool replace)
{
	loom_err rc = LOOM_OK;
	size_t idx;
	wr(m);
	gw_model *old = find_model(m, md->name, &idx);
	if (find_adapter(m, md->name, NULL)) {
		rc = loom_fail(LOOM_EEXIST, "model '%s': an adapter already has that name", md->name);
	} else if (old && !replace) {
		rc = loom_fail(LOOM_EEXIST, "model '%s' given twice", md->name);
	} else if (old) {
		m->v[idx] = md;
		for (size_t i = 0; i < m->n_ads; i++) {
			if (m->ads[i]->base == old) {
				m->ads[i]->base = md;
				gw_model_hold(md);
				gw_model_release(old); /* the table still holds old: never the last */
			}
		}
		md = old; /* the table's reference on old is dropped below */
	} else if (!grow((void **)&m->v, &m->cap, m->n, 4)) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory adding model '%s'", md->name);
	} else {
		m->v[m->n++] = md;
		md = NULL;
	}
	un(m);
	gw_model_release(md);
	return rc;
}

loom_err gw_models_remove(gw_models *m, const char *name)
{
	loom_err rc = LOOM_OK;
	size_t idx;
	gw_model *md = NULL;
	wr(m);
	gw_model *found = find_model(m, name, &idx);
	size_t users = 0;
	for (size_t i = 0; found && i < m->n_ads; i++)
		users += m->ads[i]->base == found;
	if (!found) {
		rc = loom_fail(LOOM_ENOTFOUND, "model '%s' does not exist", name);
	} else if (users) {
		rc = loom_fail(LOOM_EBUSY, "model '%s' is the base of %zu adapter(s): delete them first",
			       name, users);
	} else {
		md = found;
		memmove(&m->v[idx], &m->v[idx + 1], (m->n - idx - 1) * sizeof *m->v);
		m->n--;
	}
	un(m);
	gw_model_release(md);
	return rc;
}

loom_err gw_models_set_template(gw_models *m, const char *name, gw_chat_tmpl tmpl)
{
	loom_err rc = LOOM_OK;
	wr(m);
	gw_model *md = find_model(m, name, NULL);
	if (md)
		md->tmpl = tmpl != GW_TMPL_AUTO		       ? tmpl
			   : md->jinja || md->jinja_error ? GW_TMPL_MODEL
							  : GW_TMPL_PLAIN;
	else
		rc = loom_fail(LOOM_ENOTFOUND, "--chat-template: no model named '%s'", name);
	un(m);
	return rc;
}

const gw_model *gw_models_find(const gw_models *m, const char *name)
{
	rd(m);
	const gw_model *md = find_model(m, name, NULL);
	un(m);
	return md;
}

gw_model *gw_models_get(gw_models *m, const char *name)
{
	rd(m);
	gw_model *md = find_model(m, name, NULL);
	if (md)
		gw_model_hold(md);
	un(m);
	return md;
}

size_t gw_models_count(const gw_models *m)
{
	rd(m);
	size_t n = m->n;
	un(m);
	return n;
}

const gw_model *gw_models_at(const gw_models *m, size_t i)
{
	rd(m);
	const gw_model *md = i < m->n ? m->v[i] : NULL;
	un(m);
	return md;
}

void gw_models_rdlock(gw_models *m)
{
	rd(m);
}

void gw_models_unlock(gw_models *m)
{
	un(m);
}

size_t gw_models_count_locked(const gw_models *m)
{
	return m->n;
}

const gw_model *gw_models_at_locked(const gw_models *m, size_t i)
{
	return i < m->n ? m->v[i] : NULL;
}

size_t gw_models_adapter_count_locked(const gw_models *m)
{
	return m->n_ads;
}

const gw_adapter *gw_models_adapter_at_locked(const gw_models *m, size_t i)
{
	return i < m->n_ads ? m->ads[i] : NULL;
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

/* Under the lock: the base model of adapter name. */
static loom_err base_of(const gw_models *m, const char *name, const char *base, gw_model **out)
{
	*out = NULL;
	if (base) {
		if (!(*out = find_model(m, base, NULL)))
			return loom_fail(LOOM_ENOTFOUND, "adapter '%s': base model '%s' is not served",
					 name, base);
	} else if (m->n == 1) {
		*out = m->v[0];
	} else if (m->n == 0) {
		return loom_fail(LOOM_ENOTFOUND, "adapter '%s': no base model is served", name);
	} else {
		return loom_fail(LOOM_EINVAL,
				 "adapter '%s': %zu models are served, give its base as NAME=DIR@BASE",
				 name, m->n);
	}
	return LOOM_OK;
}

loom_err gw_models_check_adapter(const gw_models *m, const char *name, const char *base,
				 const gw_model **base_out)
{
	loom_err rc;
	gw_model *b = NULL;
	if (base_out)
		*base_out = NULL;
	if (!gw_adapter_name_ok(name))
		return loom_fail(LOOM_EINVAL,
				 "adapter name '%s' must be 1..%d characters of A-Z a-z 0-9 . _ -",
				 name, LOOM_NAME_MAX - 1);
	rd(m);
	if (find_model(m, name, NULL))
		rc = loom_fail(LOOM_EEXIST, "adapter '%s': a model already has that name", name);
	else if (find_adapter(m, name, NULL))
		rc = loom_fail(LOOM_EEXIST, "adapter '%s' given twice", name);
	else
		rc = base_of(m, name, base, &b);
	un(m);
	if (!rc && base_out)
		*base_out = b;
	return rc;
}

loom_err gw_models_adapter_base(gw_models *m, const char *name, const char *base,
				gw_model **base_out)
{
	rd(m);
	loom_err rc = base_of(m, name, base, base_out);
	if (!rc)
		gw_model_hold(*base_out);
	un(m);
	return rc;
}

loom_err gw_models_add_adapter(gw_models *m, const char *name, const char *dir, const char *base)
{
	loom_err rc;
	const gw_model *b;
	ad_adapter *ad = NULL;
	char abs[PATH_MAX];
	if ((rc = gw_models_check_adapter(m, name, base, &b)))
		return rc;
	if (!realpath(dir, abs))
		return loom_fail(errno == ENOENT || errno == ENOTDIR ? LOOM_ENOTFOUND : LOOM_EIO,
				 "%s: %s", dir, strerror(errno));
	if ((rc = ad_adapter_load(abs, name, &b->cfg, &ad)))
		return rc;
	gw_adapter ga = {.base = b,
			 .rank = ad->base_rank,
			 .max_rank = ad->max_rank,
			 .alpha = ad->base_alpha,
			 .use_rslora = ad->use_rslora != 0,
			 .targets = ad->targets,
			 .bytes = ad->bytes,
			 .created = time(NULL)};
	snprintf(ga.name, sizeof ga.name, "%s", name);
	if (strlen(abs) < sizeof ga.path) /* else unknown: only shown by /v1/models */
		strcpy(ga.path, abs);
	ad_adapter_destroy(ad);
	return gw_models_put_adapter(m, &ga, false);
}

static bool is_model(const gw_models *m, const gw_model *md)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i] == md)
			return true;
	return false;
}

loom_err gw_models_put_adapter(gw_models *m, const gw_adapter *a, bool replace)
{
	loom_err rc = LOOM_OK;
	gw_adapter *copy = loom_malloc(sizeof *copy);
	if (!copy)
		return loom_fail(LOOM_ENOMEM, "out of memory adding adapter '%s'", a->name);
	*copy = *a;
	wr(m);
	gw_adapter *old = find_adapter(m, a->name, NULL);
	if (!is_model(m, a->base)) {
		rc = loom_fail(LOOM_ENOTFOUND, "adapter '%s': its base model is not served", a->name);
	} else if (find_model(m, a->name, NULL)) {
		rc = loom_fail(LOOM_EEXIST, "adapter '%s': a model already has that name", a->name);
	} else if (old && !replace) {
		rc = loom_fail(LOOM_EEXIST, "adapter '%s' already exists", a->name);
	} else if (old) {
		gw_model_hold(a->base);
		gw_model_release(old->base); /* still in the table (or held by requests) */
		*old = *copy;
	} else if (!grow((void **)&m->ads, &m->cap_ads, m->n_ads, 8)) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory adding adapter '%s'", a->name);
	} else {
		gw_model_hold(a->base);
		m->ads[m->n_ads++] = copy;
		copy = NULL;
	}
	un(m);
	loom_free(copy);
	return rc;
}

loom_err gw_models_remove_adapter(gw_models *m, const char *name)
{
	size_t idx;
	gw_adapter *a;
	wr(m);
	if (!(a = find_adapter(m, name, &idx))) {
		un(m);
		return loom_fail(LOOM_ENOTFOUND, "adapter '%s' does not exist", name);
	}
	memmove(&m->ads[idx], &m->ads[idx + 1], (m->n_ads - idx - 1) * sizeof *m->ads);
	m->n_ads--;
	un(m);
	gw_model_release(a->base);
	loom_free(a);
	return LOOM_OK;
}

loom_err gw_models_adapter_get(gw_models *m, const char *name, gw_adapter *out)
{
	rd(m);
	const gw_adapter *a = find_adapter(m, name, NULL);
	if (a)
		*out = *a;
	un(m);
	return a ? LOOM_OK : loom_fail(LOOM_ENOTFOUND, "adapter '%s' does not exist", name);
}

const gw_adapter *gw_models_find_adapter(const gw_models *m, const char *name)
{
	rd(m);
	const gw_adapter *a = find_adapter(m, name, NULL);
	un(m);
	return a;
}

size_t gw_models_adapter_count(const gw_models *m)
{
	rd(m);
	size_t n = m->n_ads;
	un(m);
	return n;
}

const gw_adapter *gw_models_adapter_at(const gw_models *m, size_t i)
{
	rd(m);
	const gw_adapter *a = i < m->n_ads ? m->ads[i] : NULL;
	un(m);
	return a;
}

const gw_model *gw_models_resolve(const gw_models *m, const char *name, const gw_adapter **ad)
{
	rd(m);
	const gw_model *md = find_model(m, name, NULL);
	const gw_adapter *a = md ? NULL : find_adapter(m, name, NULL);
	un(m);
	if (ad)
		*ad = a;
	return md ? md : a ? a->base : NULL;
}

loom_err gw_models_acquire(gw_models *m, const char *name, gw_model **base, bool *is_ad,
			   gw_adapter *ad)
{
	*base = NULL;
	*is_ad = false;
	rd(m);
	gw_model *md = find_model(m, name, NULL);
	const gw_adapter *a = md ? NULL : find_adapter(m, name, NULL);
	if (a) {
		md = (gw_model *)a->base;
		*is_ad = true;
		if (ad)
			*ad = *a;
	}
	if (md)
		gw_model_hold(md);
	un(m);
	*base = md;
	return md ? LOOM_OK : loom_fail(LOOM_ENOTFOUND, "The model '%s' does not exist", name);
}
