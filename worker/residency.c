/*
 * worker/residency.c — the residency's API: registration of models and
 * adapters, pins (acquire/release, prefetch), states, figures (see
 * residency.h; res_loader.c moves things between tiers).
 */
#include "res_int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../common/alloc.h"
#include "../common/bundle.h"
#include "../common/log.h"
#include "../common/sha256.h"
#include "../common/textfile.h"

/* ------------------------------------------------------------------ */
/* helpers (under the lock unless said)                                */
/* ------------------------------------------------------------------ */

uint64_t wk_res_tick(wk_res *r)
{
	return ++r->clock;
}

static unsigned reg_hash(int model, const char *name)
{
	uint32_t h = 2166136261u ^ (uint32_t)model;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h % RES_BUCKETS;
}

static res_reg *reg_find(wk_res *r, int model, const char *name)
{
	for (res_reg *g = r->reg[reg_hash(model, name)]; g; g = g->next)
		if (g->model == model && !strcmp(g->name, name))
			return g;
	return NULL;
}

void wk_res_host_drop(wk_res *r, res_host *h)
{
	if (!h->raw)
		return;
	r->host_bytes -= h->len;
	loom_free(h->raw);
	memset(h, 0, sizeof *h);
}

void wk_res_wake_engine(wk_res *r)
{
	if (r->wake)
		r->wake(r->wake_ctx);
}

void wk_res_ad_maybe_free(wk_res *r, wk_res_ad *e)
{
	bool loading = e->state == AS_QUEUED || e->state == AS_LOADING || e->state == AS_WAIT_ROOM;

	if (e->refs > 0 || e->names > 0 || loading || e->host.busy)
		return;
	if (e->src != SRC_GIVEN && (e->dev || e->host.raw))
		return; /* still cached: eviction frees it */
	for (wk_res_ad **pp = &r->ads; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	if (e->dev && e->src != SRC_GIVEN)
		r->device_bytes -= e->dev_bytes;
	ad_adapter_destroy(e->dev);
	wk_res_host_drop(r, &e->host);
	loom_free(e->dir);
	loom_free(e);
}

void wk_res_queue(wk_res *r, wk_res_ad *e)
{
	e->state = AS_QUEUED;
	e->qnext = NULL;
	if (r->q_tail)
		r->q_tail->qnext = e;
	else
		r->q_head = e;
	r->q_tail = e;
	if (!r->has_thread && wk_res_loader_start(r)) {
		/* no thread: fail the entry rather than leave it waiting forever */
		r->q_head = r->q_tail = NULL;
		e->state = AS_FAILED;
		e->err_code = LOOM_EINTERNAL;
		snprintf(e->err, sizeof e->err, "cannot start the loader thread");
		wk_res_wake_engine(r);
		return;
	}
	pthread_cond_broadcast(&r->cv);
}

static void model_queue(wk_res *r, res_model *mo)
{
	mo->state = MS_QUEUED;
	if (!r->has_thread && wk_res_loader_start(r)) {
		mo->state = MS_FAILED;
		mo->err_code = LOOM_EINTERNAL;
		snprintf(mo->err, sizeof mo->err, "cannot start the loader thread");
		wk_res_wake_engine(r);
		return;
	}
	pthread_cond_broadcast(&r->cv);
}

/* ------------------------------------------------------------------ */
/* create / destroy                                                    */
/* ------------------------------------------------------------------ */

static uint64_t budget(uint64_t v, bool zero_is_none)
{
	return v == 0 && zero_is_none ? WK_RES_UNLIMITED : v;
}

loom_err wk_res_create(const wk_res_opts *opts, wk_res **out)
{
	wk_res *r = loom_calloc(1, sizeof *r);

	*out = NULL;
	if (!r)
		return loom_fail(LOOM_ENOMEM, "residency: out of memory");
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	r->host_budget = opts ? opts->host_budget : 0;
	r->device_budget = budget(opts ? opts->device_budget : 0, true);
	r->model_budget = budget(opts ? opts->model_budget : 0, true);
	if (opts) {
		r->store = opts->store;
		r->own_store = opts->own_store;
		r->adapter_dtype = opts->adapter_dtype;
		r->packed_models = opts->packed_models;
		r->fetch = opts->fetch;
		r->fetch_ctx = opts->fetch_ctx;
	}
	*out = r;
	return LOOM_OK;
}

void wk_res_destroy(wk_res *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	if (r->has_thread)
		pthread_join(r->thread, NULL);
	while (r->ads) {
		wk_res_ad *e = r->ads;
		r->ads = e->next;
		ad_adapter_destroy(e->dev);
		loom_free(e->host.raw);
		loom_free(e->dir);
		loom_free(e);
	}
	for (int b = 0; b < RES_BUCKETS; b++)
		while (r->reg[b]) {
			res_reg *g = r->reg[b];
			r->reg[b] = g->next;
			loom_free(g);
		}
	for (int i = 0; i < r->n_models; i++) {
		res_model *mo = r->models[i];
		if (mo->src != SRC_LENT)
			wk_model_destroy(mo->m);
		loom_free(mo->host.raw);
		loom_free(mo->dir);
		loom_free(mo);
	}
	while (r->pending) {
		res_pending *p = r->pending;
		r->pending = p->next;
		loom_free(p);
	}
	while (r->toks) {
		res_tok *t = r->toks;
		r->toks = t->next;
		loom_free(t);
	}
	pthread_cond_destroy(&r->cv);
	pthread_mutex_destroy(&r->mu);
	loom_free(r);
}

void wk_res_set_waker(wk_res *r, wk_res_wake_fn fn, void *ctx)
{
	pthread_mutex_lock(&r->mu);
	r->wake = fn;
	r->wake_ctx = ctx;
	while (r->waking > 0) /* a call to the old waker is still running */
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);
}

void wk_res_set_fetch(wk_res *r, wk_res_fetch_fn fn, void *ctx)
{
	pthread_mutex_lock(&r->mu);
	r->fetch = fn;
	r->fetch_ctx = ctx;
	pthread_mutex_unlock(&r->mu);
}

/* ------------------------------------------------------------------ */
/* models: registration                                                */
/* ------------------------------------------------------------------ */

static int find_model(const wk_res *r, const char *name)
{
	for (int i = 0; i < r->n_models; i++)
		if (!strcmp(r->models[i]->name, name))
			return i;
	return -1;
}

loom_err wk_res_model_list(wk_res *r, const char *name, int src, const char *dir,
			   const uint8_t *sha, const loom_model_config *cfg, res_model **out)
{
	res_model *mo;

	*out = NULL;
	if (strlen(name) == 0 || strlen(name) >= LOOM_NAME_MAX)
		return loom_fail(LOOM_EINVAL, "model name '%.40s' must be 1..%d bytes", name,
				 LOOM_NAME_MAX - 1);
	if (r->n_models == WK_RES_MAX_MODELS)
		return loom_fail(LOOM_ERANGE, "model %s: a worker serves at most %d models", name,
				 WK_RES_MAX_MODELS);
	if (!(mo = loom_calloc(1, sizeof *mo)) || (dir && !(mo->dir = loom_strdup(dir)))) {
		loom_free(mo);
		return loom_fail(LOOM_ENOMEM, "model %s: out of memory", name);
	}
	snprintf(mo->name, sizeof mo->name, "%s", name);
	mo->src = src;
	if (sha) {
		memcpy(mo->sha, sha, 32);
		loom_sha256_hex(sha, mo->hex);
	}
	mo->cfg = *cfg;
	mo->bytes = wk_model_weight_bytes_ex(cfg, !r->packed_models || src == SRC_LENT);
	mo->state = MS_OFF;
	r->models[r->n_models++] = mo;
	*out = mo;
	return LOOM_OK;
}

/* An existing name keeps its source: a worker serves one version of a
 * model (its operator's --model folder, or the first one announced); the
 * announcement of another source is only logged. */
static loom_err same_source(const res_model *mo, int src, const char *dir, const uint8_t *sha)
{
	char hex[LOOM_SHA_HEX] = "";

	if (mo->src == src && ((dir && mo->dir && !strcmp(dir, mo->dir)) ||
			       (sha && !memcmp(sha, mo->sha, 32))))
		return LOOM_OK;
	if (sha)
		loom_sha256_hex(sha, hex);
	LOOM_INFO("residency: model %s keeps its weights from %s%s (announced: %s)", mo->name,
		  mo->src == SRC_DIR ? mo->dir : mo->src == SRC_LENT ? "memory" : "blob ",
		  mo->src == SRC_STORE ? mo->hex : "", dir ? dir : hex);
	return LOOM_OK;
}

loom_err wk_res_model_add_dir(wk_res *r, const char *name, const char *dir)
{
	loom_model_config cfg;
	res_model *mo;
	loom_err rc;
	int i;

	if ((rc = loom_model_config_load(dir, &cfg)))
		return rc;
	if (cfg.n_layers <= 0 || cfg.hidden <= 0 || cfg.vocab <= 0)
		return loom_fail(LOOM_EFORMAT, "%s/config.json: sizes must be positive", dir);
	pthread_mutex_lock(&r->mu);
	i = find_model(r, name);
	rc = i >= 0 ? same_source(r->models[i], SRC_DIR, dir, NULL)
		    : wk_res_model_list(r, name, SRC_DIR, dir, NULL, &cfg, &mo);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

loom_err wk_res_model_set_tokenizer(wk_res *r, const char *name, const uint8_t sha[32])
{
	res_tok *t;

	pthread_mutex_lock(&r->mu);
	for (t = r->toks; t && strcmp(t->name, name); t = t->next)
		;
	if (!t && (t = loom_calloc(1, sizeof *t))) {
		snprintf(t->name, sizeof t->name, "%s", name);
		t->next = r->toks;
		r->toks = t;
	}
	if (t)
		memcpy(t->sha, sha, 32);
	pthread_mutex_unlock(&r->mu);
	return t ? LOOM_OK : loom_fail(LOOM_ENOMEM, "model %s: out of memory", name);
}

/* The tokenizer of model `name` from its announced blob: the store, or
 * fetched from the gateway and verified. LOOM_ENOTFOUND when none was
 * announced. */
static loom_err tokenizer_blob(wk_res *r, const char *name, char **json, size_t *len)
{
	uint8_t sha[32];
	bool known = false;
	st_view v;
	void *buf = NULL;
	const void *data = NULL;
	size_t n = 0;
	loom_err rc;

	pthread_mutex_lock(&r->mu);
	for (const res_tok *t = r->toks; t && !known; t = t->next)
		if (!strcmp(t->name, name)) {
			memcpy(sha, t->sha, 32);
			known = true;
		}
	pthread_mutex_unlock(&r->mu);
	if (!known)
		return LOOM_ENOTFOUND;
	if ((rc = wk_res_blob_get(r, sha, true, &v, &buf, &data, &n))) {
		char why[512];
		snprintf(why, sizeof why, "%s", loom_errmsg());
		return loom_fail(rc, "model %s: tokenizer: %s", name, why);
	}
	*json = loom_malloc(n + 1);
	if (*json) {
		memcpy(*json, data, n);
		(*json)[n] = '\0';
		*len = n;
	}
	st_view_release(&v);
	loom_free(buf);
	return *json ? LOOM_OK : loom_fail(LOOM_ENOMEM, "model %s: out of memory", name);
}

loom_err wk_res_model_tokenizer(wk_res *r, int i, char **json, size_t *len)
{
	char name[LOOM_NAME_MAX], *dir = NULL, *path = NULL;
	uint8_t sha[32];
	st_model_rec rec;
	st_view v = { 0 };
	int src;
	loom_err rc;

	*json = NULL;
	*len = 0;
	pthread_mutex_lock(&r->mu);
	if (i < 0 || i >= r->n_models) {
		pthread_mutex_unlock(&r->mu);
		return loom_fail(LOOM_ENOTFOUND, "no model %d", i);
	}
	snprintf(name, sizeof name, "%s", r->models[i]->name);
	src = r->models[i]->src;
	memcpy(sha, r->models[i]->sha, 32);
	if (src == SRC_DIR && r->models[i]->dir)
		dir = loom_strdup(r->models[i]->dir);
	pthread_mutex_unlock(&r->mu);
	if (src == SRC_DIR) {
		if (!dir || !(path = loom_malloc(strlen(dir) + sizeof "/tokenizer.json"))) {
			loom_free(dir);
			return loom_fail(LOOM_ENOMEM, "model %s: out of memory", name);
		}
		sprintf(path, "%s/tokenizer.json", dir);
		rc = loom_text_read(path, (size_t)1 << 30, json, len);
		loom_free(path);
		loom_free(dir);
		return rc;
	}
	if (src == SRC_STORE && (rc = tokenizer_blob(r, name, json, len)) != LOOM_ENOTFOUND)
		return rc;
	if (src != SRC_STORE || !r->store)
		return loom_fail(LOOM_ENOTFOUND, "model %s: this worker has no tokenizer for it (%s)",
				 name, src == SRC_LENT ? "a model lent without one"
						       : "it reads no store holding its record");
	if ((rc = st_model_get(r->store, name, &rec)) || memcmp(rec.sha, sha, 32))
		return loom_fail(LOOM_ENOTFOUND, "model %s: the store's record %s this worker's "
				 "version; its tokenizer is unknown here", name,
				 rc ? "is missing, not" : "names another version than");
	if ((rc = st_blob_get(r->store, rec.tokenizer_sha, 0, &v)))
		return loom_fail(rc, "model %s: tokenizer blob: %s", name, loom_errmsg());
	*json = loom_malloc(v.len + 1);
	if (*json) {
		memcpy(*json, v.data, v.len);
		(*json)[v.len] = '\0';
		*len = v.len;
	}
	st_view_release(&v);
	return *json ? LOOM_OK : loom_fail(LOOM_ENOMEM, "model %s: out of memory", name);
}

loom_err wk_res_model_add_blob(wk_res *r, const char *name, const uint8_t sha[32])
{
	st_view v = { 0 };
	loom_st_file *f = NULL;
	loom_model_config cfg;
	res_model *mo;
	loom_err rc;
	char hex[LOOM_SHA_HEX];
	int i;

	loom_sha256_hex(sha, hex);
	pthread_mutex_lock(&r->mu);
	i = find_model(r, name);
	rc = i >= 0 ? same_source(r->models[i], SRC_STORE, NULL, sha) : LOOM_OK;
	pthread_mutex_unlock(&r->mu);
	if (i >= 0)
		return rc;
	rc = r->store ? st_blob_get(r->store, sha, 0, &v) : LOOM_ENOTFOUND;
	if (rc == LOOM_ENOTFOUND && (r->own_store || !r->store)) {
		/* fetched by the loader (the caller may be the thread BLOBs arrive on) */
		res_pending *p = loom_calloc(1, sizeof *p);
		if (!p)
			return loom_fail(LOOM_ENOMEM, "model %s: out of memory", name);
		snprintf(p->name, sizeof p->name, "%s", name);
		memcpy(p->sha, sha, 32);
		pthread_mutex_lock(&r->mu);
		p->next = NULL;
		res_pending **pp = &r->pending;
		while (*pp)
			pp = &(*pp)->next;
		*pp = p; /* FIFO: a model before the adapters announced after it */
		rc = r->has_thread ? LOOM_OK : wk_res_loader_start(r);
		pthread_cond_broadcast(&r->cv);
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	if (rc) {
		char why[512];
		snprintf(why, sizeof why, "%s", loom_errmsg()); /* loom_fail reuses its buffer */
		return loom_fail(rc, "model %s: blob %s: %s", name, hex, why);
	}
	rc = loom_bundle_open(v.data, v.len, name, &f, &cfg);
	loom_st_close(f);
	st_view_release(&v);
	if (rc)
		return rc;
	pthread_mutex_lock(&r->mu);
	i = find_model(r, name);
	rc = i >= 0 ? same_source(r->models[i], SRC_STORE, NULL, sha)
		    : wk_res_model_list(r, name, SRC_STORE, NULL, sha, &cfg, &mo);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

loom_err wk_res_model_lend(wk_res *r, wk_model *m)
{
	res_model *mo;
	loom_err rc;

	pthread_mutex_lock(&r->mu);
	if (find_model(r, m->name) >= 0) {
		rc = loom_fail(LOOM_EINVAL, "engine: model name '%s' given twice", m->name);
	} else if (!(rc = wk_res_model_list(r, m->name, SRC_LENT, NULL, NULL, &m->cfg, &mo))) {
		mo->m = m;
		mo->bytes = m->arena_bytes;
		mo->state = MS_ON;
		r->model_bytes += mo->bytes;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

loom_err wk_res_model_preload(wk_res *r, int i)
{
	res_model *mo;
	wk_model *m = NULL;
	bool from_host;
	loom_err rc;

	pthread_mutex_lock(&r->mu);
	mo = i >= 0 && i < r->n_models ? r->models[i] : NULL;
	if (!mo || mo->state != MS_OFF || (r->model_budget != WK_RES_UNLIMITED &&
					   r->model_bytes + mo->bytes > r->model_budget)) {
		pthread_mutex_unlock(&r->mu);
		return LOOM_OK;
	}
	mo->state = MS_LOADING;
	r->model_bytes += mo->bytes;
	pthread_mutex_unlock(&r->mu);
	rc = wk_res_model_load_now(r, mo, &m, &from_host);
	pthread_mutex_lock(&r->mu);
	if (rc) {
		r->model_bytes -= mo->bytes;
		mo->state = MS_OFF;
	} else {
		mo->m = m;
		mo->state = MS_ON;
		mo->lru = wk_res_tick(r);
		r->model_loads++;
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

int wk_res_model_count(wk_res *r)
{
	int n;
	pthread_mutex_lock(&r->mu);
	n = r->n_models;
	pthread_mutex_unlock(&r->mu);
	return n;
}

int wk_res_model_find(wk_res *r, const char *name)
{
	int i;
	pthread_mutex_lock(&r->mu);
	i = find_model(r, name);
	pthread_mutex_unlock(&r->mu);
	return i;
}

void wk_res_model_info(wk_res *r, int i, char name[LOOM_NAME_MAX], loom_model_config *cfg,
		       size_t *bytes)
{
	pthread_mutex_lock(&r->mu);
	const res_model *mo = r->models[i];
	if (name)
		memcpy(name, mo->name, LOOM_NAME_MAX);
	if (cfg)
		*cfg = mo->cfg;
	if (bytes)
		*bytes = mo->bytes;
	pthread_mutex_unlock(&r->mu);
}

const wk_model *wk_res_model_lent(wk_res *r, const char *name)
{
	const wk_model *m = NULL;
	int i;

	pthread_mutex_lock(&r->mu);
	i = find_model(r, name);
	if (i >= 0 && r->models[i]->src == SRC_LENT)
		m = r->models[i]->m;
	pthread_mutex_unlock(&r->mu);
	return m;
}

int wk_res_model_names(wk_res *r, char (*names)[LOOM_NAME_MAX], int max)
{
	int n = 0;
	pthread_mutex_lock(&r->mu);
	for (int i = 0; i < r->n_models && n < max; i++)
		memcpy(names[n++], r->models[i]->name, LOOM_NAME_MAX);
	pthread_mutex_unlock(&r->mu);
	return n;
}

/* ------------------------------------------------------------------ */
/* models: pins and states                                             */
/* ------------------------------------------------------------------ */

void wk_res_model_warm_locked(wk_res *r, res_model *mo)
{
	if (mo->state != MS_OFF || mo->src == SRC_LENT ||
	    (r->model_budget != WK_RES_UNLIMITED && r->model_bytes + mo->bytes > r->model_budget))
		return;
	/* only a worker with no model on (or coming to) its device: one warm
	 * model, not every model the gateway announces */
	for (int i = 0; i < r->n_models; i++)
		if (r->models[i]->state != MS_OFF && r->models[i]->state != MS_FAILED)
			return;
	mo->warm = true;
	model_queue(r, mo);
}

void wk_res_model_warm(wk_res *r, int i)
{
	pthread_mutex_lock(&r->mu);
	if (i >= 0 && i < r->n_models)
		wk_res_model_warm_locked(r, r->models[i]);
	pthread_mutex_unlock(&r->mu);
}

void wk_res_model_acquire(wk_res *r, int i)
{
	pthread_mutex_lock(&r->mu);
	res_model *mo = r->models[i];
	mo->refs++;
	mo->lru = wk_res_tick(r);
	switch (mo->state) {
	case MS_FAILED: /* a new request makes a new attempt; the waiting join it */
	case MS_OFF:
		model_queue(r, mo);
		break;
	case MS_WANT_OUT:
		mo->state = MS_ON; /* wanted again before the engine let it go */
		pthread_cond_broadcast(&r->cv);
		break;
	case MS_DETACHING:
		mo->reload = true;
		break;
	default:
		break;
	}
	pthread_mutex_unlock(&r->mu);
}

void wk_res_model_release(wk_res *r, int i)
{
	pthread_mutex_lock(&r->mu);
	res_model *mo = r->models[i];
	if (--mo->refs == 0) {
		mo->lru = wk_res_tick(r);
		if (mo->state == MS_FAILED)
			mo->state = MS_OFF;
		r->room = true;
		pthread_cond_broadcast(&r->cv);
	}
	pthread_mutex_unlock(&r->mu);
}

wk_res_state wk_res_model_state(wk_res *r, int i, wk_model **m, loom_err *code, char *err,
				size_t n)
{
	wk_res_state st = WK_RES_LOADING;

	pthread_mutex_lock(&r->mu);
	res_model *mo = r->models[i];
	if (mo->state == MS_ON || mo->state == MS_WANT_OUT) {
		st = WK_RES_READY;
		if (m)
			*m = mo->m;
	} else if (mo->state == MS_FAILED) {
		st = WK_RES_FAILED;
		if (code)
			*code = mo->err_code;
		if (err)
			snprintf(err, n, "%s", mo->err);
	}
	pthread_mutex_unlock(&r->mu);
	return st;
}

bool wk_res_model_begin_detach(wk_res *r, int i)
{
	bool yes = false;

	pthread_mutex_lock(&r->mu);
	res_model *mo = r->models[i];
	if (mo->state == MS_WANT_OUT && mo->refs == 0) {
		mo->state = MS_DETACHING;
		yes = true;
	}
	pthread_mutex_unlock(&r->mu);
	return yes;
}

void wk_res_model_detached(wk_res *r, int i)
{
	wk_model *m;

	pthread_mutex_lock(&r->mu);
	res_model *mo = r->models[i];
	m = mo->m;
	mo->m = NULL;
	r->model_bytes -= mo->bytes;
	r->model_evictions++;
	mo->to_host = !mo->host.raw && r->host_budget > 0;
	if (mo->reload) {
		mo->reload = false;
		model_queue(r, mo);
	} else {
		mo->state = MS_OFF;
	}
	r->room = true;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
	LOOM_INFO("residency: model %s swapped out (%zu MiB of weights freed)", mo->name,
		  mo->bytes >> 20);
	wk_model_destroy(m);
}

/* ------------------------------------------------------------------ */
/* adapters: registration                                              */
/* ------------------------------------------------------------------ */

static wk_res_ad *find_entry(wk_res *r, int model, const uint8_t sha[32])
{
	for (wk_res_ad *e = r->ads; e; e = e->next)
		if (e->model == model && e->src != SRC_GIVEN && !memcmp(e->sha, sha, 32))
			return e;
	return NULL;
}

/* Points (model, name) at e (one more name for e; one less for the old). */
static loom_err bind_name(wk_res *r, int model, const char *name, wk_res_ad *e)
{
	res_reg *g = reg_find(r, model, name);
	wk_res_ad *old;

	if (!g) {
		if (!(g = loom_calloc(1, sizeof *g)))
			return loom_fail(LOOM_ENOMEM, "adapter %s: out of memory", name);
		g->model = model;
		snprintf(g->name, sizeof g->name, "%s", name);
		unsigned h = reg_hash(model, name);
		g->next = r->reg[h];
		r->reg[h] = g;
	}
	old = g->ad;
	g->ad = e;
	e->names++;
	snprintf(e->name, sizeof e->name, "%s", name);
	if (old) {
		old->names--;
		wk_res_ad_maybe_free(r, old);
	}
	return LOOM_OK;
}

static wk_res_ad *new_entry(wk_res *r, int model, const uint8_t *sha, int src)
{
	wk_res_ad *e = loom_calloc(1, sizeof *e);

	if (!e)
		return NULL;
	e->model = model;
	e->src = src;
	if (sha) {
		memcpy(e->sha, sha, 32);
		loom_sha256_hex(sha, e->hex);
	} else {
		/* an adapter given in memory has no content hash: a serial,
		 * unique in the process, stands in for it (wk_res_adapter_id) */
		static _Atomic uint64_t serial;
		uint64_t n = ++serial;
		memset(e->sha, 0xff, 32);
		memcpy(e->sha, &n, sizeof n);
	}
	e->state = AS_IDLE;
	e->next = r->ads;
	r->ads = e;
	return e;
}

void wk_res_adapter_id(const wk_res_ad *h, uint8_t id[32])
{
	memcpy(id, h->sha, 32);
}

static loom_err check_names(const char *model, const char *name)
{
	if (!name || !*name || strlen(name) >= LOOM_NAME_MAX)
		return loom_fail(LOOM_EINVAL, "adapter name '%.40s' must be 1..%d bytes",
				 name ? name : "", LOOM_NAME_MAX - 1);
	if (!model)
		return loom_fail(LOOM_EINVAL, "adapter %s: no base model", name);
	return LOOM_OK;
}

static bool pending_model(const wk_res *r, const char *model)
{
	for (const res_pending *p = r->pending; p; p = p->next)
		if (!p->base[0] && !strcmp(p->name, model))
			return true;
	return false;
}

/* Queues an adapter registration behind its model's (FIFO). Under the lock. */
static loom_err add_pending(wk_res *r, const char *name, const char *model,
			    const uint8_t sha[32])
{
	res_pending *p = loom_calloc(1, sizeof *p), **pp = &r->pending;

	if (!p)
		return loom_fail(LOOM_ENOMEM, "adapter %s: out of memory", name);
	snprintf(p->name, sizeof p->name, "%s", name);
	snprintf(p->base, sizeof p->base, "%s", model);
	memcpy(p->sha, sha, 32);
	while (*pp)
		pp = &(*pp)->next;
	*pp = p;
	return LOOM_OK;
}

loom_err wk_res_adapter_add_blob(wk_res *r, const char *model, const char *name,
				 const uint8_t sha[32])
{
	loom_err rc;
	int mi;

	if ((rc = check_names(model, name)))
		return rc;
	pthread_mutex_lock(&r->mu);
	mi = find_model(r, model);
	if (mi < 0 && pending_model(r, model)) {
		/* its base model is being fetched: registered after it */
		rc = add_pending(r, name, model, sha);
	} else if (mi < 0) {
		rc = loom_fail(LOOM_ENOTFOUND, "adapter %s: base model '%s' is not served by this "
			       "worker", name, model);
	} else {
		rc = wk_res_bind_blob(r, mi, name, sha);
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

loom_err wk_res_bind_blob(wk_res *r, int mi, const char *name, const uint8_t sha[32])
{
	wk_res_ad *e = find_entry(r, mi, sha);
	loom_err rc;

	if (!e && !(e = new_entry(r, mi, sha, SRC_STORE)))
		return loom_fail(LOOM_ENOMEM, "adapter %s: out of memory", name);
	rc = bind_name(r, mi, name, e);
	wk_res_ad_maybe_free(r, e);
	return rc;
}

loom_err wk_res_adapter_add_dir(wk_res *r, const char *model, const char *name, const char *dir)
{
	loom_model_config cfg;
	ad_adapter *a = NULL;
	void *blob = NULL;
	size_t len = 0;
	uint8_t sha[32];
	wk_res_ad *e;
	loom_err rc;
	int mi;

	if ((rc = check_names(model, name)))
		return rc;
	if ((mi = wk_res_model_find(r, model)) < 0)
		return loom_fail(LOOM_ENOTFOUND, "adapter %s: base model '%s' is not served by this "
				 "worker", name, model);
	wk_res_model_info(r, mi, NULL, &cfg, NULL);
	if ((rc = ad_adapter_load(dir, name, &cfg, &a)) ||
	    (rc = ad_adapter_serialize(a, &blob, &len)))
		goto out;
	loom_sha256(blob, len, sha);
	pthread_mutex_lock(&r->mu);
	e = find_entry(r, mi, sha);
	if (!e && !(e = new_entry(r, mi, sha, SRC_DIR))) {
		rc = loom_fail(LOOM_ENOMEM, "adapter %s: out of memory", name);
	} else {
		if (e->src == SRC_DIR && (!e->dir || strcmp(e->dir, dir))) {
			char *d = loom_strdup(dir);
			if (d) {
				loom_free(e->dir);
				e->dir = d;
			}
		}
		/* keep the bytes in RAM when they fit: the first request copies
		 * them to the device without touching the folder again */
		if (!e->host.raw && wk_res_host_room(r, len)) {
			void *raw = loom_malloc(len + 64);
			if (raw) {
				e->host.raw = raw;
				e->host.data = (const uint8_t *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
				memcpy((void *)e->host.data, blob, len);
				e->host.len = len;
				e->host.lru = wk_res_tick(r);
				r->host_bytes += len;
			}
		}
		rc = bind_name(r, mi, name, e);
		wk_res_ad_maybe_free(r, e);
	}
	pthread_mutex_unlock(&r->mu);
out:
	loom_free(blob);
	ad_adapter_destroy(a);
	return rc;
}

loom_err wk_res_adapter_give(wk_res *r, const char *model, ad_adapter *a)
{
	loom_err rc;
	wk_res_ad *e;
	int mi;

	if (!a)
		return loom_fail(LOOM_EINVAL, "engine: no adapter given for model '%s'", model);
	pthread_mutex_lock(&r->mu);
	mi = find_model(r, model);
	if (mi < 0) {
		rc = loom_fail(LOOM_ENOTFOUND, "adapter %s: base model '%s' is not served by this "
			       "worker", a->name, model);
	} else if (a->n_layers != r->models[mi]->cfg.n_layers) {
		rc = loom_fail(LOOM_EINVAL, "adapter %s: %d layers, model '%s' has %d", a->name,
			       a->n_layers, model, r->models[mi]->cfg.n_layers);
	} else if (!(e = new_entry(r, mi, NULL, SRC_GIVEN))) {
		rc = loom_fail(LOOM_ENOMEM, "adapter %s: out of memory", a->name);
	} else {
		e->dev = a;
		a = NULL;
		e->state = AS_READY;
		e->dev_lru = wk_res_tick(r);
		if ((rc = bind_name(r, mi, e->dev->name, e)))
			wk_res_ad_maybe_free(r, e);
	}
	pthread_mutex_unlock(&r->mu);
	ad_adapter_destroy(a);
	return rc;
}

/* ------------------------------------------------------------------ */
/* adapters: pins and states                                           */
/* ------------------------------------------------------------------ */

wk_res_ad *wk_res_adapter_acquire(wk_res *r, int model, const char *name)
{
	res_reg *g;
	wk_res_ad *e = NULL;

	pthread_mutex_lock(&r->mu);
	if (model >= 0 && model < r->n_models && (g = reg_find(r, model, name))) {
		e = g->ad;
		e->refs++;
		e->dev_lru = wk_res_tick(r);
		if (e->state == AS_READY) {
			r->device_hits++;
		} else {
			r->device_misses++;
			/* after a failure a new request makes a new attempt (the
			 * requests still waiting join it) */
			if (e->state == AS_IDLE || e->state == AS_FAILED)
				wk_res_queue(r, e);
		}
	}
	pthread_mutex_unlock(&r->mu);
	return e;
}

void wk_res_adapter_release(wk_res *r, wk_res_ad *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&r->mu);
	if (--e->refs == 0) {
		e->dev_lru = wk_res_tick(r);
		if (e->state == AS_FAILED)
			e->state = AS_IDLE;
		if (e->state == AS_READY && r->deferred) {
			r->room = true;
			pthread_cond_broadcast(&r->cv);
		}
		wk_res_ad_maybe_free(r, e);
	}
	pthread_mutex_unlock(&r->mu);
}

wk_res_state wk_res_adapter_state(wk_res *r, wk_res_ad *e, const ad_adapter **a, loom_err *code,
				  char *err, size_t n)
{
	wk_res_state st = WK_RES_LOADING;

	pthread_mutex_lock(&r->mu);
	if (e->state == AS_READY) {
		st = WK_RES_READY;
		if (a)
			*a = e->dev;
	} else if (e->state == AS_FAILED) {
		st = WK_RES_FAILED;
		if (code)
			*code = e->err_code;
		if (err)
			snprintf(err, n, "%s", e->err);
	}
	pthread_mutex_unlock(&r->mu);
	return st;
}

/* ------------------------------------------------------------------ */
/* figures                                                             */
/* ------------------------------------------------------------------ */

void wk_res_stats_get(wk_res *r, wk_res_stats *o)
{
	memset(o, 0, sizeof *o);
	pthread_mutex_lock(&r->mu);
	o->host_bytes = r->host_bytes;
	o->host_budget = r->host_budget;
	o->device_bytes = r->device_bytes;
	o->device_budget = r->device_budget;
	o->model_bytes = r->model_bytes;
	o->model_budget = r->model_budget;
	o->host_hits = r->host_hits;
	o->host_misses = r->host_misses;
	o->device_hits = r->device_hits;
	o->device_misses = r->device_misses;
	o->cold_loads = r->cold_loads;
	o->cold_load_ms = r->cold_ms;
	o->model_loads = r->model_loads;
	o->model_evictions = r->model_evictions;
	o->device_evictions = r->device_evictions;
	o->host_evictions = r->host_evictions;
	for (const wk_res_ad *e = r->ads; e; e = e->next) {
		o->adapters_device += e->dev != NULL;
		o->adapters_host += e->host.raw != NULL;
		o->pending_loads += e->state == AS_QUEUED || e->state == AS_LOADING ||
				    e->state == AS_WAIT_ROOM;
	}
	pthread_mutex_unlock(&r->mu);
}

static uint64_t wire_budget(uint64_t b)
{
	return b == WK_RES_UNLIMITED ? 0 : b;
}

static void item(loom_resident *it, int kind, int tier, const char *name, const char *hex,
		 uint64_t bytes)
{
	it->kind = (uint8_t)kind;
	it->tier = (uint8_t)tier;
	snprintf(it->name, sizeof it->name, "%s", name);
	snprintf(it->sha, sizeof it->sha, "%s", hex);
	it->bytes = bytes;
}

loom_err wk_res_residency(wk_res *r, loom_msg_residency *m)
{
	uint32_t n = 0, cap = 0;

	memset(m, 0, sizeof *m);
	pthread_mutex_lock(&r->mu);
	for (const wk_res_ad *e = r->ads; e; e = e->next)
		cap += (e->dev != NULL) + (e->host.raw != NULL);
	for (int i = 0; i < r->n_models; i++)
		cap += (r->models[i]->m != NULL) + (r->models[i]->host.raw != NULL);
	if (cap > LOOM_PROTO_MAX_ITEMS)
		cap = LOOM_PROTO_MAX_ITEMS;
	if (cap && !(m->items = loom_calloc(cap, sizeof *m->items))) {
		pthread_mutex_unlock(&r->mu);
		return loom_fail(LOOM_ENOMEM, "residency: out of memory for %u items", cap);
	}
	for (const wk_res_ad *e = r->ads; e && n < cap; e = e->next) {
		if (e->dev && n < cap)
			item(&m->items[n++], 0, LOOM_TIER_DEVICE, e->name, e->hex,
			     e->src == SRC_GIVEN ? e->dev->bytes : e->dev_bytes);
		if (e->host.raw && n < cap)
			item(&m->items[n++], 0, LOOM_TIER_HOST, e->name, e->hex, e->host.len);
	}
	for (int i = 0; i < r->n_models && n < cap; i++) {
		const res_model *mo = r->models[i];
		if (mo->m && n < cap)
			item(&m->items[n++], 1, LOOM_TIER_DEVICE, mo->name, mo->hex, mo->bytes);
		if (mo->host.raw && n < cap)
			item(&m->items[n++], 1, LOOM_TIER_HOST, mo->name, mo->hex, mo->host.len);
	}
	m->n = n;
	m->host_bytes = r->host_bytes;
	m->host_budget = r->host_budget;
	m->device_bytes = r->device_bytes;
	m->device_budget = wire_budget(r->device_budget);
	m->model_bytes = r->model_bytes;
	m->model_budget = wire_budget(r->model_budget);
	m->host_hits = r->host_hits;
	m->host_misses = r->host_misses;
	m->device_hits = r->device_hits;
	m->device_misses = r->device_misses;
	m->cold_loads = r->cold_loads;
	m->cold_load_ms = r->cold_ms;
	pthread_mutex_unlock(&r->mu);
	return LOOM_OK;
}

void wk_res_residency_fini(loom_msg_residency *m)
{
	loom_free(m->items);
	m->items = NULL;
	m->n = 0;
}
