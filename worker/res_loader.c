/*
 * worker/res_loader.c — the residency's loader thread: swaps base models in
 * (evicting idle ones through the engine), brings adapters from tier 0 or
 * the host tier to the device tier, keeps host copies under their budget,
 * fetches what an own store lacks from the gateway.
 *
 * One thread, one job at a time, in this order: model swap-ins (a model
 * blocks every request for it), own-store model registrations, adapter
 * loads (FIFO: the order requests arrived in), host copies of evicted
 * models. The lock is dropped around every read, fetch, conversion and big
 * copy; bytes are reserved in a tier's accounting before, and released on
 * failure, so no tier ever holds more than its budget.
 */
#include "res_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/alloc.h"
#include "../common/bundle.h"
#include "../common/log.h"
#include "../common/sha256.h"

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Calls the engine's waker with the lock dropped (the engine locks its own
 * mutex in it). r->waking keeps wk_res_set_waker from returning while a
 * call is in flight. Lock held on entry and exit. */
static void wake_engine_unlocked(wk_res *r)
{
	wk_res_wake_fn fn = r->wake;
	void *ctx = r->wake_ctx;

	if (!fn)
		return;
	r->waking++;
	pthread_mutex_unlock(&r->mu);
	fn(ctx);
	pthread_mutex_lock(&r->mu);
	r->waking--;
	pthread_cond_broadcast(&r->cv);
}

loom_err wk_res_loader_start(wk_res *r)
{
	int err = pthread_create(&r->thread, NULL, wk_res_loader_main, r);

	if (err)
		return loom_fail(LOOM_EINTERNAL, "residency: cannot start the loader thread (%s)",
				 strerror(err));
	r->has_thread = true;
	return LOOM_OK;
}

/* ------------------------------------------------------------------ */
/* tiers (under the lock)                                              */
/* ------------------------------------------------------------------ */

bool wk_res_host_room(wk_res *r, uint64_t len)
{
	if (len > r->host_budget)
		return false;
	while (r->host_bytes + len > r->host_budget) {
		res_host *victim = NULL;
		wk_res_ad *va = NULL;
		for (wk_res_ad *e = r->ads; e; e = e->next)
			if (e->host.raw && !e->host.busy && (!victim || e->host.lru < victim->lru)) {
				victim = &e->host;
				va = e;
			}
		for (int i = 0; i < r->n_models; i++) {
			res_model *mo = r->models[i];
			if (mo->host.raw && !mo->host.busy && (!victim || mo->host.lru < victim->lru)) {
				victim = &mo->host;
				va = NULL;
			}
		}
		if (!victim)
			return false;
		wk_res_host_drop(r, victim);
		r->host_evictions++;
		if (va)
			wk_res_ad_maybe_free(r, va);
	}
	return true;
}

/* Evicts idle device adapters (LRU) until len more bytes fit. */
static bool device_room(wk_res *r, uint64_t len)
{
	if (r->device_budget == WK_RES_UNLIMITED)
		return true;
	while (r->device_bytes + len > r->device_budget) {
		wk_res_ad *v = NULL;
		for (wk_res_ad *e = r->ads; e; e = e->next)
			if (e->dev && e->src != SRC_GIVEN && e->refs == 0 && e->state == AS_READY &&
			    (!v || e->dev_lru < v->dev_lru))
				v = e;
		if (!v)
			return false;
		ad_adapter_destroy(v->dev);
		v->dev = NULL;
		r->device_bytes -= v->dev_bytes;
		v->dev_bytes = 0;
		v->state = AS_IDLE;
		r->device_evictions++;
		wk_res_ad_maybe_free(r, v);
	}
	return true;
}

/* ------------------------------------------------------------------ */
/* tier 0                                                              */
/* ------------------------------------------------------------------ */

loom_err wk_res_blob_get(wk_res *r, const uint8_t sha[32], bool verify, st_view *v, void **buf,
			 const void **data, size_t *len)
{
	char hex[LOOM_SHA_HEX], got_hex[LOOM_SHA_HEX];
	wk_res_fetch_fn fetch;
	void *fctx, *b = NULL;
	uint8_t got[32];
	size_t n = 0;
	loom_err rc = LOOM_ENOTFOUND;

	*buf = NULL;
	memset(v, 0, sizeof *v);
	loom_sha256_hex(sha, hex);
	if (r->store) {
		rc = st_blob_get(r->store, sha, verify, v);
		if (rc == LOOM_OK) {
			*data = v->data;
			*len = v->len;
			return LOOM_OK;
		}
		if (rc != LOOM_ENOTFOUND || !r->own_store)
			return rc; /* the store's message names the blob and the store */
	}
	/* an own store that lacks it, or no store at all: ask the gateway */
	pthread_mutex_lock(&r->mu);
	fetch = r->fetch;
	fctx = r->fetch_ctx;
	pthread_mutex_unlock(&r->mu);
	if (!fetch)
		return loom_fail(LOOM_ENOTFOUND, "blob %s: not in %s and no gateway to fetch it "
				 "from", hex, r->store ? st_dir(r->store) : "a store (none given)");
	if ((rc = fetch(fctx, hex, &b, &n))) {
		char why[512];
		snprintf(why, sizeof why, "%s", loom_errmsg()); /* loom_fail reuses its buffer */
		return loom_fail(rc, "blob %s: fetching it from the gateway: %s", hex, why);
	}
	loom_sha256(b, n, got);
	if (memcmp(got, sha, 32)) {
		loom_sha256_hex(got, got_hex);
		loom_free(b);
		return loom_fail(LOOM_EFORMAT, "blob %s fetched from the gateway (%zu bytes) hashes "
				 "to %s: refused", hex, n, got_hex);
	}
	if (!r->store)
		LOOM_INFO("residency: blob %s (%zu bytes) fetched from the gateway and verified",
			  hex, n);
	else if ((rc = st_blob_put(r->store, b, n, got)))
		LOOM_WARN("residency: blob %s verified but not kept in the own store: %s", hex,
			  loom_errmsg());
	else
		LOOM_INFO("residency: blob %s (%zu bytes) fetched from the gateway, verified, kept "
			  "in %s", hex, n, st_dir(r->store));
	*buf = b;
	*data = b;
	*len = n;
	return LOOM_OK;
}

/* The blob bytes of adapter e from tier 0 (lock not held). */
static loom_err adapter_source(wk_res *r, const wk_res_ad *e, const char *name,
			       const loom_model_config *cfg, st_view *v, void **buf,
			       const void **data, size_t *len)
{
	ad_adapter *a = NULL;
	uint8_t sha[32];
	loom_err rc;

	if (e->src == SRC_STORE)
		return wk_res_blob_get(r, e->sha, true, v, buf, data, len);
	memset(v, 0, sizeof *v);
	if ((rc = ad_adapter_load(e->dir, name, cfg, &a)))
		return rc;
	rc = ad_adapter_serialize(a, buf, len);
	ad_adapter_destroy(a);
	if (rc)
		return rc;
	loom_sha256(*buf, *len, sha);
	if (memcmp(sha, e->sha, 32)) {
		loom_free(*buf);
		*buf = NULL;
		return loom_fail(LOOM_EINVAL, "the folder %s changed since the adapter was "
				 "registered; register it again", e->dir);
	}
	*data = *buf;
	return LOOM_OK;
}

/* ------------------------------------------------------------------ */
/* adapters                                                            */
/* ------------------------------------------------------------------ */

static void ad_fail(wk_res *r, wk_res_ad *e, const char *name, loom_err code, const char *why)
{
	e->state = e->refs > 0 ? AS_FAILED : AS_IDLE;
	e->retry = false;
	e->err_code = code;
	snprintf(e->err, sizeof e->err, "adapter %s: %s", name, why);
	LOOM_WARN("residency: %s", e->err);
	wk_res_ad_maybe_free(r, e);
}

/* Brings e (popped from the queue) to the device tier. Lock held. */
static void load_adapter(wk_res *r, wk_res_ad *e)
{
	char name[LOOM_NAME_MAX], why[400];
	loom_model_config cfg;
	st_view v = { 0 };
	void *buf = NULL;
	const void *data = NULL;
	size_t len = 0;
	bool host_src = false, cold = false;
	double t0 = now_ms();
	ad_adapter *a = NULL;
	loom_err rc;

	if (e->refs == 0) { /* the request went away before its prefetch ran */
		e->state = AS_IDLE;
		wk_res_ad_maybe_free(r, e);
		return;
	}
	/* a retry knows its size: no room, no read */
	if (e->size && (r->device_budget == WK_RES_UNLIMITED || e->size <= r->device_budget) &&
	    !device_room(r, e->size)) {
		e->state = AS_WAIT_ROOM;
		e->qnext = r->deferred;
		r->deferred = e;
		return;
	}
	e->state = AS_LOADING;
	memcpy(name, e->name, sizeof name);
	cfg = r->models[e->model]->cfg;
	if (e->host.raw) {
		r->host_hits += !e->retry;
		e->host.busy++;
		e->host.lru = wk_res_tick(r);
		data = e->host.data;
		len = e->host.len;
		host_src = true;
	} else {
		r->host_misses += !e->retry;
		cold = true;
		pthread_mutex_unlock(&r->mu);
		rc = adapter_source(r, e, name, &cfg, &v, &buf, &data, &len);
		if (rc)
			snprintf(why, sizeof why, "%s", loom_errmsg());
		pthread_mutex_lock(&r->mu);
		if (rc) {
			ad_fail(r, e, name, rc, why);
			goto done;
		}
		/* keep a host copy when it fits (copied under the lock: adapters
		 * are megabytes) */
		if (!e->host.raw && wk_res_host_room(r, len)) {
			void *raw = loom_malloc(len + 64);
			if (raw) {
				e->host.raw = raw;
				e->host.data = (const uint8_t *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
				memcpy((void *)e->host.data, data, len);
				e->host.len = len;
				e->host.lru = wk_res_tick(r);
				r->host_bytes += len;
			}
		}
	}
	/* a BF16 copy holds the float32 blob's weights in half its bytes; under
	 * WK_AD_AUTO whether it is one is known after the first load (the entry
	 * is one content: its size stays) */
	uint64_t half = (len + 1) / 2;
	uint64_t need = r->adapter_dtype == WK_AD_BF16 ? half
			: r->adapter_dtype == WK_AD_AUTO && e->size == half ? half : len;
	e->size = need;
	if (r->device_budget != WK_RES_UNLIMITED && need > r->device_budget) {
		snprintf(why, sizeof why, "%llu bytes, more than the whole device adapter pool (%llu "
			 "bytes, --device-adapter-mb)", (unsigned long long)need,
			 (unsigned long long)r->device_budget);
		ad_fail(r, e, name, LOOM_ERANGE, why);
		goto done;
	}
	if (!device_room(r, need)) {
		/* every resident adapter is pinned: wait for a release */
		e->state = AS_WAIT_ROOM;
		e->retry = true;
		e->qnext = r->deferred;
		r->deferred = e;
		goto done;
	}
	r->device_bytes += need;
	pthread_mutex_unlock(&r->mu);
	/* the BF16 copy is converted straight from the blob (a zero-copy view:
	 * data stays valid until done), here on the loader thread, not on the
	 * engine's; under WK_AD_AUTO only when that rounds nothing (a BF16
	 * adapter file), else the float32 values get a copy of their own */
	bool to16 = r->adapter_dtype != WK_AD_F32;
	bool view = to16 && (uintptr_t)data % sizeof(float) == 0;
	rc = ad_adapter_from_blob(data, len, name, &cfg, !view, &a);
	if (!rc && r->adapter_dtype == WK_AD_AUTO && !ad_adapter_bf16_exact(a)) {
		to16 = false;
		if (view) {
			ad_adapter_destroy(a);
			a = NULL;
			rc = ad_adapter_from_blob(data, len, name, &cfg, 1, &a);
		}
	}
	if (!rc && to16) {
		ad_adapter *b = NULL;
		rc = ad_adapter_to_bf16(a, &b);
		ad_adapter_destroy(a);
		a = b;
	}
	if (rc)
		snprintf(why, sizeof why, "%s", loom_errmsg());
	pthread_mutex_lock(&r->mu);
	if (rc) {
		r->device_bytes -= need;
		ad_fail(r, e, name, rc, why);
		goto done;
	}
	/* what it holds: half the blob as BF16 (AUTO reserved the whole blob
	 * the first time) */
	uint64_t held = to16 ? half : len;
	r->device_bytes = r->device_bytes - need + held;
	e->size = held;
	need = held;
	e->dev = a;
	e->retry = false;
	e->dev_bytes = need;
	e->dev_lru = wk_res_tick(r);
	e->state = AS_READY;
	if (e->refs == 0 && r->deferred)
		r->room = true;
done:
	if (cold) {
		r->cold_loads++;
		r->cold_ms += now_ms() - t0;
	}
	if (host_src) {
		e->host.busy--;
		wk_res_ad_maybe_free(r, e);
	}
	if (v.txn || buf) {
		pthread_mutex_unlock(&r->mu);
		st_view_release(&v);
		loom_free(buf);
		pthread_mutex_lock(&r->mu);
	}
	wake_engine_unlocked(r);
}

/* ------------------------------------------------------------------ */
/* models                                                              */
/* ------------------------------------------------------------------ */

loom_err wk_res_model_load_now(wk_res *r, res_model *mo, wk_model **out, bool *from_host)
{
	const void *data;
	size_t len;
	st_view v;
	void *buf;
	loom_err rc;

	*from_host = false;
	pthread_mutex_lock(&r->mu);
	if (mo->host.raw) {
		mo->host.busy++;
		mo->host.lru = wk_res_tick(r);
		*from_host = true;
	}
	pthread_mutex_unlock(&r->mu);
	if (*from_host) {
		rc = wk_model_load_bundle_ex(mo->host.data, mo->host.len, mo->name,
					     !r->packed_models, out);
		pthread_mutex_lock(&r->mu);
		mo->host.busy--;
		pthread_mutex_unlock(&r->mu);
		return rc;
	}
	if (mo->src == SRC_DIR)
		return wk_model_load_ex(mo->dir, mo->name, !r->packed_models, out);
	if ((rc = wk_res_blob_get(r, mo->sha, false, &v, &buf, &data, &len)))
		return rc;
	rc = wk_model_load_bundle_ex(data, len, mo->name, !r->packed_models, out);
	st_view_release(&v);
	loom_free(buf);
	return rc;
}

/* Swaps model mo in, evicting idle models first when the budget needs it.
 * Lock held. */
static void load_model(wk_res *r, res_model *mo)
{
	wk_model *m = NULL;
	bool from_host;
	char why[400];
	loom_err rc;

	for (;;) {
		res_model *victim = NULL;
		bool leaving = false;

		if (r->stop)
			return;
		if (mo->refs == 0 && !mo->warm) {
			mo->state = MS_OFF;
			return;
		}
		if (r->model_budget != WK_RES_UNLIMITED && mo->bytes > r->model_budget) {
			mo->state = MS_FAILED;
			mo->err_code = LOOM_ERANGE;
			snprintf(mo->err, sizeof mo->err, "model %s: %zu bytes of weights, more than "
				 "the device model budget (%llu bytes, --device-model-mb)", mo->name,
				 mo->bytes, (unsigned long long)r->model_budget);
			LOOM_WARN("residency: %s", mo->err);
			wake_engine_unlocked(r);
			return;
		}
		if (r->model_budget == WK_RES_UNLIMITED ||
		    r->model_bytes + mo->bytes <= r->model_budget)
			break;
		if (mo->refs == 0) { /* a warm load takes free room only */
			mo->warm = false;
			mo->state = MS_OFF;
			return;
		}
		for (int i = 0; i < r->n_models; i++) {
			res_model *x = r->models[i];
			if (x == mo)
				continue;
			if (x->state == MS_WANT_OUT || x->state == MS_DETACHING)
				leaving = true;
			if (x->state == MS_ON && x->refs == 0 && x->src != SRC_LENT &&
			    (!victim || x->lru < victim->lru))
				victim = x;
		}
		if (!leaving && !victim) {
			mo->state = MS_WAIT_ROOM; /* retried when a model goes idle */
			return;
		}
		if (!leaving) {
			victim->state = MS_WANT_OUT;
			LOOM_INFO("residency: swapping model %s out for %s", victim->name, mo->name);
			wake_engine_unlocked(r);
			continue; /* the lock was dropped: look again before waiting */
		}
		/* the engine detaches at its next iteration; the timeout only
		 * guards against a lost wake-up */
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&r->cv, &r->mu, &ts);
	}
	mo->state = MS_LOADING;
	mo->warm = false;
	r->model_bytes += mo->bytes;
	pthread_mutex_unlock(&r->mu);
	double t0 = now_ms();
	rc = wk_res_model_load_now(r, mo, &m, &from_host);
	if (rc)
		snprintf(why, sizeof why, "%s", loom_errmsg());
	double ms = now_ms() - t0;
	pthread_mutex_lock(&r->mu);
	if (rc) {
		r->model_bytes -= mo->bytes;
		mo->state = mo->refs > 0 ? MS_FAILED : MS_OFF;
		mo->err_code = rc;
		snprintf(mo->err, sizeof mo->err, "model %s: %s", mo->name, why);
		LOOM_WARN("residency: %s", mo->err);
	} else {
		mo->m = m;
		mo->state = MS_ON;
		mo->lru = wk_res_tick(r);
		r->model_loads++;
		LOOM_INFO("residency: model %s swapped in from %s in %.0f ms", mo->name,
			  from_host ? "host RAM" : mo->src == SRC_DIR ? "its folder" : "the store", ms);
	}
	wake_engine_unlocked(r);
}

/* Keeps an evicted model's bundle in host RAM when the budget allows.
 * Lock held. */
static void model_to_host(wk_res *r, res_model *mo)
{
	const void *data = NULL;
	void *buf = NULL, *raw = NULL;
	size_t len = 0;
	st_view v = { 0 };
	loom_err rc;

	mo->to_host = false;
	if (mo->host.raw || mo->src == SRC_LENT)
		return;
	mo->host.busy++; /* nobody else makes its copy meanwhile */
	pthread_mutex_unlock(&r->mu);
	if (mo->src == SRC_DIR) {
		rc = loom_bundle_from_dir(mo->dir, &buf, &len);
		data = buf;
	} else {
		rc = wk_res_blob_get(r, mo->sha, false, &v, &buf, &data, &len);
	}
	pthread_mutex_lock(&r->mu);
	if (rc) {
		LOOM_WARN("residency: model %s not kept in host RAM: %s", mo->name, loom_errmsg());
	} else if (wk_res_host_room(r, len)) {
		r->host_bytes += len; /* reserved before the copy */
		pthread_mutex_unlock(&r->mu);
		if (mo->src == SRC_DIR) {
			raw = buf; /* the bundle is already a private copy */
			buf = NULL;
		} else if ((raw = loom_malloc(len ? len : 1))) {
			memcpy(raw, data, len);
		}
		pthread_mutex_lock(&r->mu);
		if (raw) {
			mo->host.raw = raw;
			mo->host.data = raw;
			mo->host.len = len;
			mo->host.lru = wk_res_tick(r);
		} else {
			r->host_bytes -= len;
		}
	}
	mo->host.busy--;
	pthread_mutex_unlock(&r->mu);
	st_view_release(&v);
	loom_free(buf);
	pthread_mutex_lock(&r->mu);
}

/* A pending registration (lock held): a model whose bundle must be
 * fetched first (then listed), or an adapter of such a model (registered
 * once the model is listed). */
static void register_pending(wk_res *r, res_pending *p)
{
	const void *data;
	size_t len;
	st_view v;
	void *buf = NULL;
	loom_st_file *f = NULL;
	loom_model_config cfg;
	res_model *mo;
	loom_err rc = LOOM_OK;
	int mi = -1;

	if (p->base[0]) {
		for (int i = 0; i < r->n_models; i++)
			if (!strcmp(r->models[i]->name, p->base))
				mi = i;
		rc = mi < 0 ? loom_fail(LOOM_ENOTFOUND, "its base model %s could not be listed",
					p->base)
			    : wk_res_bind_blob(r, mi, p->name, p->sha);
		if (rc)
			LOOM_ERROR("residency: adapter %s is not served: %s", p->name, loom_errmsg());
		loom_free(p);
		return;
	}
	pthread_mutex_unlock(&r->mu);
	rc = wk_res_blob_get(r, p->sha, true, &v, &buf, &data, &len);
	if (!rc) {
		rc = loom_bundle_open(data, len, p->name, &f, &cfg);
		loom_st_close(f);
		st_view_release(&v);
		loom_free(buf);
	}
	pthread_mutex_lock(&r->mu);
	for (int i = 0; !rc && i < r->n_models; i++)
		if (!strcmp(r->models[i]->name, p->name))
			rc = loom_fail(LOOM_EEXIST, "model %s is already listed", p->name);
	if (!rc)
		rc = wk_res_model_list(r, p->name, SRC_STORE, NULL, p->sha, &cfg, &mo);
	if (rc) {
		LOOM_ERROR("residency: model %s is not served: %s", p->name, loom_errmsg());
	} else {
		LOOM_INFO("residency: model %s listed (its bundle fetched from the gateway)",
			  p->name);
		wk_res_model_warm_locked(r, mo);
	}
	loom_free(p);
}

/* ------------------------------------------------------------------ */
/* the thread                                                          */
/* ------------------------------------------------------------------ */

static res_model *next_model(wk_res *r, int state)
{
	for (int i = 0; i < r->n_models; i++)
		if (r->models[i]->state == state)
			return r->models[i];
	return NULL;
}

void *wk_res_loader_main(void *arg)
{
	wk_res *r = arg;
	res_model *mo;

	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		if (r->room) {
			r->room = false;
			while (r->deferred) {
				wk_res_ad *e = r->deferred;
				r->deferred = e->qnext;
				wk_res_queue(r, e);
			}
			for (int i = 0; i < r->n_models; i++)
				if (r->models[i]->state == MS_WAIT_ROOM)
					r->models[i]->state = MS_QUEUED;
		}
		if ((mo = next_model(r, MS_QUEUED))) {
			load_model(r, mo);
		} else if (r->pending) {
			res_pending *p = r->pending;
			r->pending = p->next;
			register_pending(r, p);
		} else if (r->q_head) {
			wk_res_ad *e = r->q_head;
			r->q_head = e->qnext;
			if (!r->q_head)
				r->q_tail = NULL;
			e->qnext = NULL;
			load_adapter(r, e);
		} else {
			res_model *h = NULL;
			for (int i = 0; i < r->n_models && !h; i++)
				if (r->models[i]->to_host && r->models[i]->state == MS_OFF)
					h = r->models[i];
			if (h)
				model_to_host(r, h);
			else
				pthread_cond_wait(&r->cv, &r->mu);
		}
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}
