/*
 * gateway/gw_registry.c — store-backed registry. An import first reads,
 * validates and hashes its folder with no lock held (files may be large, or
 * on a slow disk); then the change runs under r->mu in the order: the
 * checks that depend on the tables (names, versions, the base model), blobs,
 * record (the commit that makes the new state visible after a crash),
 * gw_models (what requests resolve), then the workers (gw_link_put_*, which
 * returns once every connected worker has the message queued). No file of
 * an import is opened under r->mu.
 */
#include "gw_registry.h"
#include "gw_deadline.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "common/bundle.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/textfile.h"

struct gw_registry {
	pthread_mutex_t mu;
	st_store *st;
	gw_models *models;   /* borrowed */
	gw_link *link;       /* borrowed, under mu; NULL = nothing to announce to */
	char *dir;
	char *uploads;
	long import_timeout_ms; /* reading an import's files; <= 0 = no limit */
};

void gw_registry_set_import_timeout(gw_registry *r, long ms)
{
	r->import_timeout_ms = ms;
}

/* The error of an import whose files did not read in time. */
static loom_err read_timeout(const gw_registry *r, const char *what, const char *dir)
{
	return loom_fail(LOOM_ETIMEDOUT, "%s: reading %s did not finish within %ld s (a hung or very "
			 "slow filesystem?); the import is abandoned", what, dir,
			 (r->import_timeout_ms + 999) / 1000);
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	if (ftw->level > 0 && remove(path))
		LOOM_WARN("cannot remove %s: %s", path, strerror(errno));
	return 0;
}

/* Empties folder path (keeps it). */
static void empty_dir(const char *path)
{
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

loom_err gw_registry_open(const char *dir, gw_models *models, gw_registry **out)
{
	loom_err rc;
	*out = NULL;
	gw_registry *r = loom_calloc(1, sizeof *r);
	if (!r)
		return loom_fail(LOOM_ENOMEM, "out of memory opening the registry");
	pthread_mutex_init(&r->mu, NULL);
	r->models = models;
	size_t n = strlen(dir);
	if (!(r->dir = loom_strdup(dir)) || !(r->uploads = loom_malloc(n + sizeof "/uploads"))) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory opening the registry");
		goto fail;
	}
	snprintf(r->uploads, n + sizeof "/uploads", "%s/uploads", dir);
	if (mkdir(dir, 0755) && errno != EEXIST) {
		rc = loom_fail(LOOM_EIO, "--store %s: cannot create it: %s", dir, strerror(errno));
		goto fail;
	}
	if ((rc = st_open(dir, 0, &r->st)))
		goto fail;
	if (mkdir(r->uploads, 0700) && errno != EEXIST) {
		rc = loom_fail(LOOM_EIO, "%s: cannot create it: %s", r->uploads, strerror(errno));
		goto fail;
	}
	empty_dir(r->uploads); /* uploads a crash interrupted */
	*out = r;
	return LOOM_OK;
fail:
	gw_registry_close(r);
	return rc;
}

void gw_registry_close(gw_registry *r)
{
	if (!r)
		return;
	if (r->st)
		st_close(r->st);
	loom_free(r->dir);
	loom_free(r->uploads);
	pthread_mutex_destroy(&r->mu);
	loom_free(r);
}

st_store *gw_registry_store(gw_registry *r)
{
	return r->st;
}

const char *gw_registry_upload_dir(const gw_registry *r)
{
	return r->uploads;
}

void gw_registry_attach(gw_registry *r, gw_link *l)
{
	pthread_mutex_lock(&r->mu);
	r->link = l;
	pthread_mutex_unlock(&r->mu);
}

/* ---- records -> gw_models ---- */

static void hex(const uint8_t sha[32], char out[LOOM_SHA_HEX])
{
	loom_sha256_hex(sha, out);
}

/* Builds the gw_model of a model record (tokenizer and config from its blobs). */
static loom_err model_from_rec(gw_registry *r, const st_model_rec *rec, gw_chat_tmpl tmpl,
			       gw_model **out)
{
	loom_err rc;
	st_view v = {0};
	loom_tok *tok = NULL;
	loom_st_file *f = NULL;
	loom_model_config cfg;
	char what[LOOM_NAME_MAX + 64];
	*out = NULL;
	snprintf(what, sizeof what, "model %s: tokenizer.json", rec->name);
	if ((rc = st_blob_get(r->st, rec->tokenizer_sha, 0, &v)))
		return rc;
	rc = loom_tok_load_json(v.data, v.len, what, &tok);
	st_view_release(&v);
	if (rc)
		return rc;
	if ((rc = st_blob_get(r->st, rec->sha, 0, &v))) {
		loom_tok_free(tok);
		return rc;
	}
	loom_chat_source chat = {0};
	rc = loom_bundle_open(v.data, v.len, rec->name, &f, &cfg);
	if (!rc)
		rc = loom_bundle_chat_source(f, rec->name, &chat);
	if (f)
		loom_st_close(f);
	st_view_release(&v);
	if (rc) {
		loom_tok_free(tok);
		return rc;
	}
	snprintf(what, sizeof what, "model %s", rec->name);
	if (!(rc = gw_model_create(rec->name, &cfg, tok, tmpl, what, out)) &&
	    (rc = gw_model_set_chat(*out, &chat, tmpl))) {
		gw_model_release(*out);
		*out = NULL;
	}
	loom_chat_source_fini(&chat);
	if (rc)
		return rc;
	hex(rec->sha, (*out)->sha);
	hex(rec->tokenizer_sha, (*out)->tok_sha);
	(*out)->bytes = rec->bytes;
	(*out)->version = rec->version;
	(*out)->created = (time_t)rec->created;
	return LOOM_OK;
}

static void adapter_from_rec(const st_adapter_rec *rec, const gw_model *base, const char *path,
			     gw_adapter *a)
{
	memset(a, 0, sizeof *a);
	snprintf(a->name, sizeof a->name, "%s", rec->name);
	if (path && strlen(path) < sizeof a->path)
		strcpy(a->path, path);
	a->base = base;
	a->rank = (int)rec->rank;
	a->max_rank = (int)rec->max_rank;
	a->alpha = rec->alpha;
	a->use_rslora = rec->use_rslora != 0;
	a->targets = rec->targets;
	a->bytes = (size_t)rec->bytes;
	a->created = (time_t)rec->created;
	hex(rec->sha, a->sha);
	a->version = rec->version;
}

typedef struct recs {
	void *v;
	size_t n, cap, size;
	bool oom;
} recs;

static int collect(recs *c, const void *rec)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		void *p = loom_realloc(c->v, cap * c->size);
		if (!p) {
			c->oom = true;
			return 1;
		}
		c->v = p;
		c->cap = cap;
	}
	memcpy((char *)c->v + c->n++ * c->size, rec, c->size);
	return 0;
}

static int collect_model(void *ctx, const st_model_rec *rec)
{
	return collect(ctx, rec);
}

static int collect_adapter(void *ctx, const st_adapter_rec *rec)
{
	return collect(ctx, rec);
}

loom_err gw_registry_load(gw_registry *r, size_t *skipped)
{
	loom_err rc;
	size_t bad = 0;
	recs ms = {.size = sizeof(st_model_rec)}, as = {.size = sizeof(st_adapter_rec)};
	pthread_mutex_lock(&r->mu);
	if ((rc = st_model_each(r->st, collect_model, &ms)) ||
	    (rc = st_adapter_each(r->st, collect_adapter, &as)))
		goto out;
	if (ms.oom || as.oom) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory loading the registry");
		goto out;
	}
	for (size_t i = 0; i < ms.n; i++) {
		const st_model_rec *rec = &((st_model_rec *)ms.v)[i];
		gw_model *md;
		if ((rc = model_from_rec(r, rec, GW_TMPL_AUTO, &md)) ||
		    (rc = gw_models_put(r->models, md, true))) {
			LOOM_WARN("store %s: model %s skipped: %s", r->dir, rec->name, loom_errmsg());
			bad++;
		}
	}
	for (size_t i = 0; i < as.n; i++) {
		const st_adapter_rec *rec = &((st_adapter_rec *)as.v)[i];
		gw_model *base = gw_models_get(r->models, rec->base_model);
		gw_adapter a;
		if (!base) {
			LOOM_WARN("store %s: adapter %s skipped: its base model %s is not registered",
				  r->dir, rec->name, rec->base_model);
			bad++;
			continue;
		}
		adapter_from_rec(rec, base, NULL, &a);
		if (gw_models_put_adapter(r->models, &a, true)) {
			LOOM_WARN("store %s: adapter %s skipped: %s", r->dir, rec->name, loom_errmsg());
			bad++;
		}
		gw_model_release(base);
	}
	rc = LOOM_OK;
	LOOM_DEBUG("store %s: %zu model(s), %zu adapter(s)", r->dir, ms.n, as.n);
out:
	pthread_mutex_unlock(&r->mu);
	loom_free(ms.v);
	loom_free(as.v);
	if (skipped)
		*skipped = bad;
	return rc;
}

/* ---- link announcements ---- */

loom_err gw_registry_link_opts(gw_registry *r, gw_link_opts *o)
{
	o->models = NULL;
	o->adapters = NULL;
	o->n_models = o->n_adapters = 0;
	o->store = r->st;
	gw_models_rdlock(r->models);
	size_t nm = gw_models_count_locked(r->models), na = gw_models_adapter_count_locked(r->models);
	/* one allocation each: the structs, then the strings they point to */
	gw_link_model *ms = loom_calloc(nm ? nm : 1, sizeof *ms + 2 * LOOM_SHA_HEX + LOOM_NAME_MAX);
	gw_link_adapter *as = loom_calloc(na ? na : 1,
					  sizeof *as + LOOM_SHA_HEX + 2 * LOOM_NAME_MAX);
	if (!ms || !as) {
		gw_models_unlock(r->models);
		loom_free(ms);
		loom_free(as);
		return loom_fail(LOOM_ENOMEM, "out of memory starting the worker links");
	}
	char *s = (char *)(ms + nm);
	for (size_t i = 0; i < nm; i++, s += 2 * LOOM_SHA_HEX + LOOM_NAME_MAX) {
		const gw_model *md = gw_models_at_locked(r->models, i);
		strcpy(s, md->name);
		strcpy(s + LOOM_NAME_MAX, md->sha);
		strcpy(s + LOOM_NAME_MAX + LOOM_SHA_HEX, md->tok_sha);
		ms[i] = (gw_link_model){.name = s, .path = "", .sha = s + LOOM_NAME_MAX,
					.tokenizer_sha = s + LOOM_NAME_MAX + LOOM_SHA_HEX};
	}
	s = (char *)(as + na);
	for (size_t i = 0; i < na; i++, s += LOOM_SHA_HEX + 2 * LOOM_NAME_MAX) {
		const gw_adapter *a = gw_models_adapter_at_locked(r->models, i);
		strcpy(s, a->name);
		strcpy(s + LOOM_NAME_MAX, a->base->name);
		strcpy(s + 2 * LOOM_NAME_MAX, a->sha);
		as[i] = (gw_link_adapter){.name = s, .base_model = s + LOOM_NAME_MAX,
					  .path = a->sha[0] ? "" : a->path,
					  .sha = s + 2 * LOOM_NAME_MAX};
	}
	gw_models_unlock(r->models);
	o->models = ms;
	o->n_models = nm;
	o->adapters = as;
	o->n_adapters = na;
	return LOOM_OK;
}

void gw_registry_link_opts_fini(gw_link_opts *o)
{
	loom_free((void *)o->models);
	loom_free((void *)o->adapters);
	o->models = NULL;
	o->adapters = NULL;
}

/* ---- imports ---- */

/* A validation failure is the request's fault: LOOM_EINVAL, same message. */
static loom_err input_fail(void)
{
	char msg[1024]; /* the detail buffer is reused by loom_fail */
	snprintf(msg, sizeof msg, "%s", loom_errmsg());
	return loom_fail(LOOM_EINVAL, "%s", msg);
}

/* The shapes an adapter is validated against (and a model's adapters rely on). */
static bool same_shapes(const loom_model_config *a, const loom_model_config *b)
{
	return a->hidden == b->hidden && a->ffn == b->ffn && a->n_layers == b->n_layers &&
	       a->n_heads == b->n_heads && a->n_kv_heads == b->n_kv_heads &&
	       a->head_dim == b->head_dim;
}

/* A replaced model keeps its adapters: refused when its shapes change under them. */
static loom_err shapes_kept(gw_registry *r, const char *name, const loom_model_config *c)
{
	loom_err rc = LOOM_OK;
	size_t users = 0;
	gw_models_rdlock(r->models);
	const gw_model *old = NULL;
	for (size_t i = 0; i < gw_models_count_locked(r->models); i++)
		if (!strcmp(gw_models_at_locked(r->models, i)->name, name))
			old = gw_models_at_locked(r->models, i);
	for (size_t i = 0; old && i < gw_models_adapter_count_locked(r->models); i++)
		users += gw_models_adapter_at_locked(r->models, i)->base == old;
	if (users && !same_shapes(&old->cfg, c))
		rc = loom_fail(LOOM_EBUSY, "model '%s': the new folder has other shapes, and %zu "
			       "adapter(s) were made for the old ones: delete them first", name, users);
	gw_models_unlock(r->models);
	return rc;
}

/* A model folder read and checked, before anything is written. */
typedef struct model_in {
	char *text;            /* [text_len] tokenizer.json */
	size_t text_len;
	void *bundle;          /* [bundle_len] the model bundle */
	size_t bundle_len;
	loom_model_config cfg;
	gw_model *md;          /* built from the folder, not in a table yet */
	uint8_t sha[32], tok_sha[32];
} model_in;

/* Reads, validates and hashes folder dir (no lock held: the files may be
 * large or slow). Errors are the request's fault (LOOM_EINVAL) but memory. */
static loom_err model_read(const char *name, const char *dir, gw_chat_tmpl tmpl, model_in *in)
{
	loom_err rc;
	loom_tok *tok = NULL;
	char *tok_path = loom_malloc(strlen(dir) + sizeof "/tokenizer.json");
	memset(in, 0, sizeof *in);
	if (!tok_path)
		return loom_fail(LOOM_ENOMEM, "out of memory importing model '%s'", name);
	sprintf(tok_path, "%s/tokenizer.json", dir);
	if ((rc = loom_model_config_load(dir, &in->cfg)) ||
	    (rc = loom_text_read(tok_path, (size_t)1 << 30, &in->text, &in->text_len)) ||
	    (rc = loom_tok_load_json(in->text, in->text_len, tok_path, &tok)) ||
	    (rc = loom_bundle_from_dir(dir, &in->bundle, &in->bundle_len))) {
		rc = rc == LOOM_ENOMEM ? rc : input_fail();
		goto out;
	}
	loom_sha256(in->bundle, in->bundle_len, in->sha);
	loom_sha256(in->text, in->text_len, in->tok_sha);
	/* served under its name: messages that reach clients (tokenize errors)
	 * must not show the server's folders */
	if ((rc = loom_tok_set_name(tok, "model %s: tokenizer.json", name)))
		goto out;
	rc = gw_model_create(name, &in->cfg, tok, tmpl, dir, &in->md);
	tok = NULL;
	if (rc || (rc = gw_model_chat_from_dir(in->md, dir, tmpl)))
		goto out;
	if (!(in->md->dir = loom_strdup(dir)))
		rc = loom_fail(LOOM_ENOMEM, "out of memory importing model '%s'", name);
out:
	loom_tok_free(tok);
	loom_free(tok_path);
	return rc;
}

static void model_in_fini(model_in *in)
{
	gw_model_release(in->md);
	loom_free(in->text);
	loom_free(in->bundle);
}

/* model_read as a step with a deadline (gw_deadline.h). */
typedef struct model_job {
	char *name, *dir;
	gw_chat_tmpl tmpl;
	model_in in;
} model_job;

static loom_err model_job_run(void *p)
{
	model_job *j = p;
	return model_read(j->name, j->dir, j->tmpl, &j->in);
}

static void model_job_free(void *p, loom_err rc)
{
	model_job *j = p;
	(void)rc;
	model_in_fini(&j->in);
	loom_free(j->name);
	loom_free(j->dir);
	loom_free(j);
}

loom_err gw_registry_import_model(gw_registry *r, const char *name, const char *dir,
				  gw_chat_tmpl tmpl, gw_reg_mode mode, bool *changed)
{
	loom_err rc;
	model_in in;
	st_model_rec rec, old;
	bool had;
	if (changed)
		*changed = false;
	if (!*name || strlen(name) >= LOOM_NAME_MAX)
		return loom_fail(LOOM_EINVAL, "model name '%s' must be 1..%d bytes", name,
				 LOOM_NAME_MAX - 1);
	/* the folder is read outside r->mu: a slow or huge one holds up no other
	 * change; and within the deadline: a hung one does not hold the caller */
	model_job *job = loom_calloc(1, sizeof *job);
	if (!job || !(job->name = loom_strdup(name)) || !(job->dir = loom_strdup(dir))) {
		if (job)
			model_job_free(job, LOOM_ENOMEM);
		return loom_fail(LOOM_ENOMEM, "out of memory importing model '%s'", name);
	}
	job->tmpl = tmpl;
	rc = gw_deadline_run(model_job_run, model_job_free, job, r->import_timeout_ms);
	if (rc == LOOM_ETIMEDOUT) /* the job is the reader thread's now */
		return read_timeout(r, name, dir);
	in = job->in;
	memset(&job->in, 0, sizeof job->in);
	model_job_free(job, rc);
	if (rc) {
		model_in_fini(&in);
		return rc;
	}
	pthread_mutex_lock(&r->mu);
	if (gw_models_find_adapter(r->models, name)) {
		rc = loom_fail(LOOM_EEXIST, "model '%s': an adapter already has that name", name);
		goto out;
	}
	rc = st_model_get(r->st, name, &old);
	if (rc && rc != LOOM_ENOTFOUND)
		goto out;
	had = rc == LOOM_OK;
	if (had && mode == GW_REG_CREATE) {
		rc = loom_fail(LOOM_EEXIST, "model '%s' already exists (replace it to make a new "
			       "version)", name);
		goto out;
	}
	if ((rc = shapes_kept(r, name, &in.cfg)))
		goto out;
	memset(&rec, 0, sizeof rec);
	memcpy(rec.sha, in.sha, 32);
	memcpy(rec.tokenizer_sha, in.tok_sha, 32);
	if (had && mode == GW_REG_SYNC && !memcmp(old.sha, rec.sha, 32) &&
	    !memcmp(old.tokenizer_sha, rec.tokenizer_sha, 32) && gw_models_find(r->models, name)) {
		rc = gw_models_set_template(r->models, name, tmpl); /* unchanged */
		goto out;
	}
	snprintf(rec.name, sizeof rec.name, "%s", name);
	if ((rc = st_blob_put(r->st, in.bundle, in.bundle_len, rec.sha)) ||
	    (rc = st_blob_put(r->st, in.text, in.text_len, rec.tokenizer_sha)))
		goto out;
	rec.bytes = in.bundle_len;
	if ((rc = st_model_put(r->st, &rec, mode != GW_REG_CREATE)))
		goto out;
	if (changed)
		*changed = true;
	gw_model *md = in.md;
	hex(rec.sha, md->sha);
	hex(rec.tokenizer_sha, md->tok_sha);
	md->bytes = rec.bytes;
	md->version = rec.version;
	md->created = (time_t)rec.created;
	gw_model_hold(md);
	if ((rc = gw_models_put(r->models, md, true))) {
		gw_model_release(md);
		goto out;
	}
	if (r->link)
		rc = gw_link_put_model(r->link, &(gw_link_model){.name = name, .path = "",
								 .sha = md->sha,
								 .tokenizer_sha = md->tok_sha});
	loom_log(mode == GW_REG_SYNC ? LOOM_LOG_DEBUG : LOOM_LOG_INFO,
		 "model %s v%u registered from %s (%zu bytes, sha256 %.12s)", name, rec.version, dir,
		 in.bundle_len, md->sha);
out:
	pthread_mutex_unlock(&r->mu);
	model_in_fini(&in);
	return rc;
}

/* The base model (held) an adapter called name goes on: base, else the one
 * its registered version has, else the only model. Input errors: LOOM_EINVAL. */
/* ad_adapter_load + serialize as a step with a deadline (gw_deadline.h). */
typedef struct adapter_job {
	char *name, *dir;
	loom_model_config cfg; /* the base's shapes (a copy: the base may go) */
	ad_adapter *ad;
	void *blob;
	size_t len;
} adapter_job;

static loom_err adapter_job_run(void *p)
{
	adapter_job *j = p;
	loom_err rc = ad_adapter_load(j->dir, j->name, &j->cfg, &j->ad);
	if (rc)
		return rc == LOOM_ENOMEM ? rc : input_fail();
	return ad_adapter_serialize(j->ad, &j->blob, &j->len);
}

static void adapter_job_free(void *p, loom_err rc)
{
	adapter_job *j = p;
	(void)rc;
	if (j->ad)
		ad_adapter_destroy(j->ad);
	loom_free(j->blob);
	loom_free(j->name);
	loom_free(j->dir);
	loom_free(j);
}

static loom_err adapter_base(gw_registry *r, const char *name, const char *base, gw_model **bm)
{
	gw_adapter old;
	bool is_ad = false;
	*bm = NULL;
	/* the held base of a registered adapter of that name (the table may change
	 * meanwhile: the caller checks again under r->mu) */
	if (!base && !gw_models_acquire(r->models, name, bm, &is_ad, &old)) {
		if (is_ad)
			return LOOM_OK;
		gw_model_release(*bm);
		*bm = NULL;
	}
	if (gw_models_adapter_base(r->models, name, base, bm))
		return input_fail();
	return LOOM_OK;
}

loom_err gw_registry_import_adapter(gw_registry *r, const char *name, const char *base,
				    const char *dir, const char *path, gw_reg_mode mode,
				    gw_adapter *out)
{
	loom_err rc;
	gw_model *bm = NULL, *now = NULL;
	ad_adapter *ad = NULL;
	void *blob = NULL;
	size_t len = 0;
	gw_adapter old, ga;
	st_adapter_rec rec;
	bool had;
	char sha[LOOM_SHA_HEX];
	if (!gw_adapter_name_ok(name))
		return loom_fail(LOOM_EINVAL,
				 "adapter name '%s' must be 1..%d characters of A-Z a-z 0-9 . _ -",
				 name, LOOM_NAME_MAX - 1);
	/* read, validated against the base model and serialized outside r->mu: a
	 * slow or huge folder holds up no other change */
	if ((rc = adapter_base(r, name, base, &bm)))
		return rc;
	adapter_job *job = loom_calloc(1, sizeof *job);
	if (!job || !(job->name = loom_strdup(name)) || !(job->dir = loom_strdup(dir))) {
		if (job)
			adapter_job_free(job, LOOM_ENOMEM);
		rc = loom_fail(LOOM_ENOMEM, "out of memory importing adapter '%s'", name);
		goto out_unlocked;
	}
	job->cfg = bm->cfg;
	rc = gw_deadline_run(adapter_job_run, adapter_job_free, job, r->import_timeout_ms);
	if (rc == LOOM_ETIMEDOUT) { /* the job is the reader thread's now */
		rc = read_timeout(r, name, dir);
		goto out_unlocked;
	}
	ad = job->ad;
	blob = job->blob;
	len = job->len;
	job->ad = NULL;
	job->blob = NULL;
	adapter_job_free(job, rc);
	if (rc)
		goto out_unlocked;
	memset(&rec, 0, sizeof rec);
	loom_sha256(blob, len, rec.sha);
	hex(rec.sha, sha);

	pthread_mutex_lock(&r->mu);
	if (gw_models_find(r->models, name)) {
		rc = loom_fail(LOOM_EEXIST, "adapter '%s': a model already has that name", name);
		goto out;
	}
	had = gw_models_adapter_get(r->models, name, &old) == LOOM_OK;
	if (had && mode == GW_REG_CREATE) {
		rc = loom_fail(LOOM_EEXIST, "adapter '%s' already exists (add ?replace=true to make a "
			       "new version)", name);
		goto out;
	}
	/* the base again, now that the table holds still (it changes only under
	 * r->mu, so old.base is still listed); the folder was validated against
	 * bm's shapes */
	if ((rc = gw_models_adapter_base(r->models, name, base ? base : had ? old.base->name : NULL,
					 &now))) {
		rc = input_fail();
		goto out;
	}
	if (now != bm && !same_shapes(&now->cfg, &bm->cfg)) {
		rc = loom_fail(LOOM_EBUSY, "adapter '%s': base model '%s' changed while its folder was "
			       "read; try again", name, now->name);
		goto out;
	}
	if (had && mode == GW_REG_SYNC && !strcmp(old.sha, sha) && old.base == now) {
		/* unchanged: keep the version, learn where it came from */
		ga = old;
		ga.path[0] = '\0';
		if (path && strlen(path) < sizeof ga.path)
			strcpy(ga.path, path);
		rc = gw_models_put_adapter(r->models, &ga, true);
		if (out && !rc)
			*out = ga;
		goto out;
	}
	if ((rc = st_blob_put(r->st, blob, len, rec.sha)))
		goto out;
	snprintf(rec.name, sizeof rec.name, "%s", name);
	snprintf(rec.base_model, sizeof rec.base_model, "%s", now->name);
	rec.rank = (uint32_t)ad->base_rank;
	rec.max_rank = (uint32_t)ad->max_rank;
	rec.alpha = ad->base_alpha;
	rec.targets = ad->targets;
	rec.use_rslora = (uint32_t)ad->use_rslora;
	rec.bytes = len;
	if ((rc = st_adapter_put(r->st, &rec, mode != GW_REG_CREATE)))
		goto out;
	adapter_from_rec(&rec, now, path, &ga);
	if ((rc = gw_models_put_adapter(r->models, &ga, true)))
		goto out;
	if (r->link)
		rc = gw_link_put_adapter(r->link, &(gw_link_adapter){.name = name,
								     .base_model = now->name,
								     .path = "", .sha = ga.sha});
	if (out)
		*out = ga;
	loom_log(mode == GW_REG_SYNC ? LOOM_LOG_DEBUG : LOOM_LOG_INFO,
		 "adapter %s v%u of %s registered (r %d, %zu bytes, sha256 %.12s)", name,
		 rec.version, now->name, ga.rank, len, sha);
out:
	pthread_mutex_unlock(&r->mu);
out_unlocked:
	if (ad)
		ad_adapter_destroy(ad);
	loom_free(blob);
	gw_model_release(now);
	gw_model_release(bm);
	return rc;
}

loom_err gw_registry_delete_adapter(gw_registry *r, const char *name)
{
	loom_err rc;
	gw_adapter a;
	pthread_mutex_lock(&r->mu);
	if ((rc = gw_models_adapter_get(r->models, name, &a)))
		goto out;
	if ((rc = st_adapter_del(r->st, name)) && rc != LOOM_ENOTFOUND)
		goto out;
	rc = gw_models_remove_adapter(r->models, name);
	if (r->link)
		gw_link_remove_adapter(r->link, name);
	LOOM_INFO("adapter %s deleted", name);
out:
	pthread_mutex_unlock(&r->mu);
	return rc;
}

loom_err gw_registry_delete_model(gw_registry *r, const char *name)
{
	loom_err rc = LOOM_OK;
	size_t users = 0;
	pthread_mutex_lock(&r->mu);
	gw_models_rdlock(r->models);
	bool found = false;
	for (size_t i = 0; i < gw_models_count_locked(r->models); i++)
		found |= !strcmp(gw_models_at_locked(r->models, i)->name, name);
	for (size_t i = 0; i < gw_models_adapter_count_locked(r->models); i++)
		users += !strcmp(gw_models_adapter_at_locked(r->models, i)->base->name, name);
	gw_models_unlock(r->models);
	if (!found) {
		rc = loom_fail(LOOM_ENOTFOUND, "model '%s' does not exist", name);
		goto out;
	}
	if (users) {
		rc = loom_fail(LOOM_EBUSY, "model '%s' is the base of %zu adapter(s): delete them first",
			       name, users);
		goto out;
	}
	if ((rc = st_model_del(r->st, name)) && rc != LOOM_ENOTFOUND)
		goto out;
	if ((rc = gw_models_remove(r->models, name)))
		goto out;
	if (r->link)
		gw_link_remove_model(r->link, name);
	LOOM_INFO("model %s deleted", name);
out:
	pthread_mutex_unlock(&r->mu);
	return rc;
}
