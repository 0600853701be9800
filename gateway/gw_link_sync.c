/*
 * gateway/gw_link_sync.c — what workers are told (MODEL / ADAPTER), what
 * they ask for (FETCH -> BLOB from the store) and what they report
 * (RESIDENCY), plus the residency lookups routing uses.
 *
 * The announced tables are arrays of lk_item pointers (a few models, up to
 * thousands of adapters), each with one "sent on pipe" slot per worker:
 * a new version resets the slots, a new pipe id makes every old slot stale,
 * so "what does this worker lack" is one pass over the tables. A worker is
 * told an adapter only when it serves (or was just told) its base model.
 */
#include <nng/nng.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/sha256.h"
#include "gw_link_int.h"

void lk_item_free(lk_item *it)
{
	if (!it)
		return;
	if (it->msg.type == LOOM_MSG_ADAPTER)
		loom_free(it->msg.u.adapter.path);
	else
		loom_free(it->msg.u.model.path);
	loom_free(it->sent);
	loom_free(it);
}

static const char *or_empty(const char *s)
{
	return s ? s : "";
}

static loom_err check_sha(const char *what, const char *name, const char *sha)
{
	uint8_t b[32];
	if (*or_empty(sha) && (strlen(sha) != 64 || loom_sha256_parse(sha, b)))
		return loom_fail(LOOM_EINVAL, "%s '%s': sha '%s' is not 64 hex digits", what, name,
				 sha);
	return LOOM_OK;
}

static loom_err new_adapter_item(const gw_link *l, const gw_link_adapter *a, lk_item **out)
{
	*out = NULL;
	loom_err rc;
	if (strlen(a->name) >= LOOM_NAME_MAX || strlen(a->base_model) >= LOOM_NAME_MAX ||
	    strlen(or_empty(a->path)) >= LOOM_PROTO_MAX_STR)
		return loom_fail(LOOM_EINVAL, "adapter '%s': name, base or path too long", a->name);
	if ((rc = check_sha("adapter", a->name, a->sha)))
		return rc;
	lk_item *it = loom_calloc(1, sizeof *it);
	if (!it)
		return loom_fail(LOOM_ENOMEM, "out of memory announcing adapter '%s'", a->name);
	it->msg.type = LOOM_MSG_ADAPTER;
	loom_msg_adapter *m = &it->msg.u.adapter;
	strcpy(m->name, a->name);
	strcpy(m->base_model, a->base_model);
	snprintf(m->sha, sizeof m->sha, "%s", or_empty(a->sha));
	m->path = loom_strdup(or_empty(a->path));
	it->sent = loom_calloc(l->n ? l->n : 1, sizeof *it->sent);
	if (!m->path || !it->sent) {
		lk_item_free(it);
		return loom_fail(LOOM_ENOMEM, "out of memory announcing adapter '%s'", a->name);
	}
	*out = it;
	return LOOM_OK;
}

static loom_err new_model_item(const gw_link *l, const gw_link_model *md, lk_item **out)
{
	*out = NULL;
	loom_err rc;
	if (strlen(md->name) >= LOOM_NAME_MAX || strlen(or_empty(md->path)) >= LOOM_PROTO_MAX_STR)
		return loom_fail(LOOM_EINVAL, "model '%s': name or path too long", md->name);
	if ((rc = check_sha("model", md->name, md->sha)))
		return rc;
	lk_item *it = loom_calloc(1, sizeof *it);
	if (!it)
		return loom_fail(LOOM_ENOMEM, "out of memory announcing model '%s'", md->name);
	it->msg.type = LOOM_MSG_MODEL;
	loom_msg_model *m = &it->msg.u.model;
	strcpy(m->name, md->name);
	snprintf(m->sha, sizeof m->sha, "%s", or_empty(md->sha));
	if (md->tokenizer_sha && !check_sha("model", md->name, md->tokenizer_sha))
		snprintf(m->tokenizer_sha, sizeof m->tokenizer_sha, "%s", md->tokenizer_sha);
	m->path = loom_strdup(or_empty(md->path));
	it->sent = loom_calloc(l->n ? l->n : 1, sizeof *it->sent);
	if (!m->path || !it->sent) {
		lk_item_free(it);
		return loom_fail(LOOM_ENOMEM, "out of memory announcing model '%s'", md->name);
	}
	*out = it;
	return LOOM_OK;
}

static const char *msg_name(const loom_msg *m)
{
	return m->type == LOOM_MSG_ADAPTER ? m->u.adapter.name : m->u.model.name;
}

static const char *item_name(const lk_item *it)
{
	return msg_name(&it->msg);
}

/* Under mu (or before threads run): index of name in v, or -1. */
static long find_item(lk_item *const *v, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(item_name(v[i]), name))
			return (long)i;
	return -1;
}

/* Puts it into (v, n, cap), replacing an item of the same name (freed). */
static loom_err put_item(lk_item ***v, size_t *n, size_t *cap, lk_item *it)
{
	long i = find_item(*v, *n, item_name(it));
	if (i >= 0) {
		lk_item_free((*v)[i]);
		(*v)[i] = it;
		return LOOM_OK;
	}
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		lk_item **p = loom_realloc(*v, c * sizeof *p);
		if (!p) {
			lk_item_free(it);
			return loom_fail(LOOM_ENOMEM, "out of memory announcing '%s'", item_name(it));
		}
		*v = p;
		*cap = c;
	}
	(*v)[(*n)++] = it;
	return LOOM_OK;
}

static void remove_item(lk_item **v, size_t *n, const char *name)
{
	long i = find_item(v, *n, name);
	if (i < 0)
		return;
	lk_item_free(v[i]);
	memmove(&v[i], &v[i + 1], (*n - (size_t)i - 1) * sizeof *v);
	(*n)--;
}

loom_err lk_tables_init(gw_link *l, const gw_link_opts *o)
{
	loom_err rc;
	lk_item *it;
	for (size_t i = 0; i < o->n_models; i++) {
		if ((rc = new_model_item(l, &o->models[i], &it)))
			return rc;
		it->fresh = true;
		if ((rc = put_item(&l->mods, &l->n_mods, &l->cap_mods, it)))
			return rc;
	}
	for (size_t i = 0; i < o->n_adapters; i++) {
		if ((rc = new_adapter_item(l, &o->adapters[i], &it)) ||
		    (rc = put_item(&l->ads, &l->n_ads, &l->cap_ads, it)))
			return rc;
	}
	return LOOM_OK;
}

void lk_tables_fini(gw_link *l)
{
	for (size_t i = 0; i < l->n_mods; i++)
		lk_item_free(l->mods[i]);
	for (size_t i = 0; i < l->n_ads; i++)
		lk_item_free(l->ads[i]);
	loom_free(l->mods);
	loom_free(l->ads);
	l->mods = l->ads = NULL;
	l->n_mods = l->n_ads = 0;
}

/* ---- syncing one worker ---- */

static bool listed(char (*models)[LOOM_NAME_MAX], uint32_t n, const char *name)
{
	for (uint32_t i = 0; i < n; i++)
		if (!strcmp(models[i], name))
			return true;
	return false;
}

/* Under mu: the worker serves or was told model name on pipe. */
static bool knows_model(const gw_link *l, const lk_worker *w, char (*models)[LOOM_NAME_MAX],
			uint32_t n_models, const char *name, uint32_t pipe)
{
	if (listed(models, n_models, name))
		return true;
	long i = find_item(l->mods, l->n_mods, name);
	return i >= 0 && l->mods[i]->sent[w->idx] == pipe;
}

/* A shallow copy of an item's message whose path is a fresh copy. */
static bool copy_msg(const lk_item *it, loom_msg *out)
{
	*out = it->msg;
	char **p = out->type == LOOM_MSG_ADAPTER ? &out->u.adapter.path : &out->u.model.path;
	*p = loom_strdup(*p);
	return *p != NULL;
}

static void free_msg(loom_msg *m)
{
	loom_free(m->type == LOOM_MSG_ADAPTER ? m->u.adapter.path : m->u.model.path);
}

/* Under mu: clears the "sent" mark of the item m came from, when it is still
 * that version (so the next HELLO retries it). */
static void unmark(gw_link *l, lk_worker *w, const loom_msg *m, uint32_t pipe)
{
	bool ad = m->type == LOOM_MSG_ADAPTER;
	lk_item **v = ad ? l->ads : l->mods;
	size_t n = ad ? l->n_ads : l->n_mods;
	long i = find_item(v, n, ad ? m->u.adapter.name : m->u.model.name);
	if (i < 0 || v[i]->sent[w->idx] != pipe)
		return;
	const char *sha = ad ? v[i]->msg.u.adapter.sha : v[i]->msg.u.model.sha;
	if (!strcmp(sha, ad ? m->u.adapter.sha : m->u.model.sha))
		v[i]->sent[w->idx] = 0;
}

bool lk_sync(lk_worker *w, const loom_msg_hello *h, uint32_t pipe)
{
	gw_link *l = w->l;
	loom_msg *todo = NULL;
	size_t n = 0, k = 0;
	bool ok = true;
	pthread_mutex_lock(&w->send_mu);
	pthread_mutex_lock(&l->mu);
	if (!pipe || pipe != w->pipe || l->stopping || (!h && !w->synced))
		goto unlock; /* gone, or its first HELLO will sync it */
	char (*models)[LOOM_NAME_MAX] = h ? h->models : w->models;
	uint32_t n_models = h ? h->n_models : w->n_models;
	/* most HELLOs find nothing to send: allocate only when something is */
	size_t max = 0;
	for (size_t i = 0; i < l->n_mods; i++)
		max += l->mods[i]->sent[w->idx] != pipe;
	for (size_t i = 0; i < l->n_ads; i++) {
		const char *base = l->ads[i]->msg.u.adapter.base_model;
		max += l->ads[i]->sent[w->idx] != pipe &&
		       (listed(models, n_models, base) || find_item(l->mods, l->n_mods, base) >= 0);
	}
	if (max && !(todo = loom_malloc(max * sizeof *todo))) {
		LOOM_WARN("worker %s: out of memory announcing models and adapters", w->url);
		ok = false;
		goto unlock;
	}
	for (size_t i = 0; i < l->n_mods; i++) {
		lk_item *it = l->mods[i];
		if (it->sent[w->idx] == pipe)
			continue;
		if (!w->synced && it->fresh && listed(models, n_models, item_name(it))) {
			it->sent[w->idx] = pipe; /* the worker has its own copy */
			continue;
		}
		if (!copy_msg(it, &todo[n]))
			break;
		it->sent[w->idx] = pipe;
		n++;
	}
	for (size_t i = 0; i < l->n_ads; i++) {
		lk_item *it = l->ads[i];
		if (it->sent[w->idx] == pipe ||
		    !knows_model(l, w, models, n_models, it->msg.u.adapter.base_model, pipe))
			continue;
		if (!copy_msg(it, &todo[n]))
			break;
		it->sent[w->idx] = pipe;
		n++;
	}
	if (h)
		w->synced = true;
	pthread_mutex_unlock(&l->mu);

	for (; k < n; k++) {
		int rv = gw_link_send(w, &todo[k], 0);
		if (rv) {
			LOOM_WARN("worker %s: cannot send %s %s: %s", w->url,
				  loom_msg_type_name(todo[k].type), msg_name(&todo[k]),
				  nng_strerror(rv));
			break;
		}
		LOOM_DEBUG("worker %s: %s %s sent", w->url, loom_msg_type_name(todo[k].type),
			   msg_name(&todo[k]));
	}
	pthread_mutex_lock(&l->mu);
	if (pipe == w->pipe) {
		for (size_t j = k; j < n; j++)
			unmark(l, w, &todo[j], pipe);
		if (k == n && n && !w->was_live) {
			/* PINGs numbered from here on are queued behind the announcements */
			w->live_after_seq = w->ping_seq;
			w->ping_now = true;
			pthread_cond_signal(&l->cv);
		}
	}
	ok = k == n;
unlock:
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_unlock(&w->send_mu);
	for (size_t j = 0; j < n; j++)
		free_msg(&todo[j]);
	loom_free(todo);
	return ok;
}

/* Syncs every worker after a change of the tables. */
static void sync_all(gw_link *l)
{
	for (size_t i = 0; i < l->n; i++) {
		lk_worker *w = &l->w[i];
		pthread_mutex_lock(&l->mu);
		uint32_t pipe = w->synced ? w->pipe : 0;
		pthread_mutex_unlock(&l->mu);
		if (pipe)
			lk_sync(w, NULL, pipe);
	}
}

loom_err gw_link_put_adapter(gw_link *l, const gw_link_adapter *a)
{
	lk_item *it;
	loom_err rc = new_adapter_item(l, a, &it);
	if (rc)
		return rc;
	pthread_mutex_lock(&l->mu);
	rc = put_item(&l->ads, &l->n_ads, &l->cap_ads, it);
	pthread_mutex_unlock(&l->mu);
	if (!rc)
		sync_all(l);
	return rc;
}

void gw_link_remove_adapter(gw_link *l, const char *name)
{
	pthread_mutex_lock(&l->mu);
	remove_item(l->ads, &l->n_ads, name);
	pthread_mutex_unlock(&l->mu);
}

loom_err gw_link_put_model(gw_link *l, const gw_link_model *m)
{
	lk_item *it;
	loom_err rc = new_model_item(l, m, &it);
	if (rc)
		return rc;
	pthread_mutex_lock(&l->mu);
	rc = put_item(&l->mods, &l->n_mods, &l->cap_mods, it);
	pthread_mutex_unlock(&l->mu);
	if (!rc)
		sync_all(l);
	return rc;
}

void gw_link_remove_model(gw_link *l, const char *name)
{
	pthread_mutex_lock(&l->mu);
	remove_item(l->mods, &l->n_mods, name);
	pthread_mutex_unlock(&l->mu);
}

/* ---- FETCH / RESIDENCY ---- */

void lk_on_fetch(lk_worker *w, const loom_msg_fetch *f)
{
	gw_link *l = w->l;
	loom_msg m = {.type = LOOM_MSG_BLOB};
	loom_msg_blob *b = &m.u.blob;
	st_view v = {0};
	uint8_t sha[32];
	bool have = false;
	snprintf(b->sha, sizeof b->sha, "%s", f->sha);
	b->offset = f->offset;
	if (l->store && !loom_sha256_parse(f->sha, sha)) {
		loom_err rc = st_blob_get(l->store, sha, 0, &v);
		if (rc == LOOM_OK)
			have = true;
		else if (rc != LOOM_ENOTFOUND)
			LOOM_WARN("worker %s: FETCH %.12s: %s", w->url, f->sha, loom_errmsg());
	}
	if (have) {
		b->total = v.len;
		if (f->offset < v.len) {
			uint64_t left = v.len - f->offset;
			b->len = (uint32_t)(left < LOOM_BLOB_CHUNK ? left : LOOM_BLOB_CHUNK);
			b->data = (uint8_t *)v.data + f->offset;
		}
	}
	int rv = gw_link_send(w, &m, 0);
	if (rv)
		LOOM_WARN("worker %s: BLOB %.12s@%llu not sent: %s", w->url, f->sha,
			  (unsigned long long)f->offset, nng_strerror(rv));
	else
		LOOM_DEBUG("worker %s: BLOB %.12s@%llu: %u of %llu bytes", w->url, f->sha,
			   (unsigned long long)f->offset, b->len, (unsigned long long)b->total);
	if (have)
		st_view_release(&v);
}

void lk_on_residency(lk_worker *w, loom_msg_residency *r)
{
	gw_link *l = w->l;
	pthread_mutex_lock(&l->mu);
	loom_free(w->res.items);
	w->res = *r;
	w->has_res = true;
	r->items = NULL; /* stolen */
	r->n = 0;
	pthread_mutex_unlock(&l->mu);
}

int lk_adapter_tier(const lk_worker *w, const char *name, const char *sha)
{
	int best = LOOM_TIER_STORE;
	for (uint32_t i = 0; i < w->res.n; i++) {
		const loom_resident *it = &w->res.items[i];
		if (it->kind != 0 || strcmp(it->name, name) || (sha && *sha && strcmp(it->sha, sha)))
			continue;
		if (it->tier > best)
			best = it->tier;
	}
	return best;
}

int lk_model_tier(const lk_worker *w, const char *name)
{
	int best = LOOM_TIER_STORE;
	for (uint32_t i = 0; i < w->res.n; i++) {
		const loom_resident *it = &w->res.items[i];
		if (it->kind == 1 && !strcmp(it->name, name) && it->tier > best)
			best = it->tier;
	}
	return best;
}
