/*
 * gateway/gw_link.c — worker sockets, heartbeat, routing and request table.
 *
 * All shared state (workers' liveness, models, counters, the table) is under
 * l->mu, held only briefly and never across an nng send or a gw_req call.
 * The table is a chained hash on the request id (a few hundred entries in
 * flight; 1024 buckets). Each entry remembers the worker and the pipe the
 * request went out on, so a dead pipe fails exactly its own requests.
 * Requests taken out of the table on a worker's death are parked on
 * l->to_fail and failed by the heartbeat thread (pipe callbacks must not
 * block).
 * Adapters: each worker has ad_sent[] (per adapter, under mu), cleared when a
 * new pipe appears; the receive thread sends the missing ADAPTERs for a
 * HELLO's models before it applies that HELLO (liveness, model list), so a
 * SUBMIT naming an adapter is only ever routed after its ADAPTER was queued
 * on the same socket (pair1 keeps the order). A worker that is not live yet
 * becomes live only with a HELLO answering a PING sent after its ADAPTERs
 * (live_after_seq): the worker handles messages in order, so by then it has
 * loaded them, and a slow load can neither fail requests nor count as a hang.
 */
#include "gw_link.h"

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"

#define N_BUCKETS 1024
#define PING_MS 200
#define DEAD_MS 1000
#define TICK_MS 50
#define RECV_MAX (64u << 20)
/* Messages queued per worker, so that non-blocking CANCEL/PING sends survive a
 * worker that is briefly slow to read. */
#define SEND_QUEUE 1024

typedef struct entry {
	uint64_t id;
	gw_req *req;      /* holds a reference */
	int worker;
	uint32_t pipe;
	struct entry *next;
} entry;

typedef struct worker {
	gw_link *l;
	int idx;
	char *url;
	nng_socket sock;
	bool sock_open;
	pthread_t rx;
	bool rx_started;
	/* under l->mu */
	uint32_t pipe;            /* current pipe id, 0 = none */
	int64_t connected_ms;
	int64_t last_answer_ms;   /* last HELLO answering a PING on this pipe; 0 = none yet */
	int64_t last_ping_ms;
	bool ping_now;
	bool was_live;
	uint64_t ping_seq;
	char (*models)[LOOM_NAME_MAX];
	uint32_t n_models;
	uint32_t inflight;
	loom_msg_stats stats;
	bool *ad_sent;            /* [l->n_ads] ADAPTER sent on the current pipe */
	uint64_t live_after_seq;  /* a HELLO answering a PING up to this seq cannot make the
				   * worker live (that PING went out before its ADAPTERs) */
} worker;

struct gw_link {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	worker *w;
	size_t n;
	entry *table[N_BUCKETS];
	entry *to_fail;           /* detached entries waiting for gw_req_fail */
	pthread_t hb;
	bool hb_started;
	bool stopping;            /* threads exit */
	bool closed;              /* submits refused */
	loom_msg_adapter *ads;    /* [n_ads] owned copies; read-only after create */
	size_t n_ads;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Under mu. */
static bool is_live(const worker *w, int64_t now)
{
	return w->pipe && w->last_answer_ms && now - w->last_answer_ms < DEAD_MS;
}

static bool serves(const worker *w, const char *model)
{
	for (uint32_t i = 0; i < w->n_models; i++)
		if (!strcmp(w->models[i], model))
			return true;
	return false;
}

/* ---- table (under mu) ---- */

static entry **slot(gw_link *l, uint64_t id)
{
	entry **pp = &l->table[id % N_BUCKETS];
	while (*pp && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

static entry *detach(gw_link *l, uint64_t id)
{
	entry **pp = slot(l, id), *e = *pp;
	if (e) {
		*pp = e->next;
		e->next = NULL;
		if (l->w[e->worker].inflight)
			l->w[e->worker].inflight--;
	}
	return e;
}

/* Moves every entry sent on (worker, pipe) — pipe 0 = any — to to_fail. */
static size_t detach_worker(gw_link *l, int widx, uint32_t pipe)
{
	size_t n = 0;
	for (size_t b = 0; b < N_BUCKETS; b++) {
		entry **pp = &l->table[b];
		while (*pp) {
			entry *e = *pp;
			if (e->worker == widx && (!pipe || e->pipe == pipe)) {
				*pp = e->next;
				e->next = l->to_fail;
				l->to_fail = e;
				n++;
				if (l->w[widx].inflight)
					l->w[widx].inflight--;
			} else {
				pp = &e->next;
			}
		}
	}
	return n;
}

/* ---- sending ---- */

static int send_msg(worker *w, const loom_msg *m, int flags)
{
	void *buf = NULL;
	size_t len = 0;
	nng_msg *msg = NULL;
	int rv;
	if (loom_msg_encode(m, &buf, &len) != LOOM_OK) {
		LOOM_WARN("worker %s: cannot encode %s: %s", w->url, loom_msg_type_name(m->type),
			  loom_errmsg());
		return NNG_EINVAL;
	}
	if ((rv = nng_msg_alloc(&msg, 0)) == 0 && (rv = nng_msg_append(msg, buf, len)) == 0) {
		rv = nng_sendmsg(w->sock, msg, flags);
		if (rv == 0)
			msg = NULL;
	}
	if (msg)
		nng_msg_free(msg);
	loom_free(buf);
	return rv;
}

static void send_cancel(worker *w, uint64_t id)
{
	loom_msg m = {.type = LOOM_MSG_CANCEL, .u.cancel.req = id};
	pthread_mutex_lock(&w->l->mu);
	bool connected = w->pipe != 0;
	pthread_mutex_unlock(&w->l->mu);
	if (!connected)
		return; /* a gone worker forgot the request; a queued CANCEL would only linger */
	int rv = send_msg(w, &m, NNG_FLAG_NONBLOCK);
	if (rv)
		LOOM_DEBUG("worker %s: CANCEL %llu not sent: %s", w->url, (unsigned long long)id,
			   nng_strerror(rv));
}

/* ---- pipe events (nng threads: state flips only) ---- */

static void pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	worker *w = arg;
	gw_link *l = w->l;
	uint32_t id = (uint32_t)nng_pipe_id(p);
	pthread_mutex_lock(&l->mu);
	if (ev == NNG_PIPE_EV_ADD_POST) {
		w->pipe = id;
		w->connected_ms = now_ms();
		w->last_answer_ms = 0;
		w->was_live = false;
		w->ping_now = true;
		for (size_t i = 0; i < l->n_ads; i++)
			w->ad_sent[i] = false;
		w->live_after_seq = 0;
		pthread_cond_signal(&l->cv);
	} else if (ev == NNG_PIPE_EV_REM_POST) {
		/* the pipe may already have been replaced: fail what went out on it either way */
		size_t n = detach_worker(l, w->idx, id);
		if (id == w->pipe) {
			if ((n || w->was_live) && !l->closed) /* not at shutdown */
				LOOM_WARN("worker %s: connection lost (%zu request(s) in flight failed)",
					  w->url, n);
			w->pipe = 0;
			w->last_answer_ms = 0;
			w->was_live = false;
		}
		pthread_cond_signal(&l->cv);
	}
	pthread_mutex_unlock(&l->mu);
}

/* ---- receiving ---- */

static bool hello_serves(const loom_msg_hello *h, const char *model)
{
	for (uint32_t i = 0; i < h->n_models; i++)
		if (!strcmp(h->models[i], model))
			return true;
	return false;
}

/* Receive thread: sends the ADAPTERs this HELLO's models need and that the
 * current pipe has not had yet. False when a send failed (the HELLO is then
 * not applied: the next one retries). */
static bool send_adapters(worker *w, const loom_msg_hello *h, uint32_t pipe)
{
	gw_link *l = w->l;
	size_t n = 0, *todo;
	if (!l->n_ads)
		return true;
	if (!(todo = loom_malloc(l->n_ads * sizeof *todo))) {
		LOOM_WARN("worker %s: out of memory sending adapters", w->url);
		return false;
	}
	pthread_mutex_lock(&l->mu);
	bool current = pipe == w->pipe;
	for (size_t i = 0; current && i < l->n_ads; i++) {
		if (!w->ad_sent[i] && hello_serves(h, l->ads[i].base_model)) {
			w->ad_sent[i] = true;
			todo[n++] = i;
		}
	}
	pthread_mutex_unlock(&l->mu);
	size_t k = 0;
	for (; k < n; k++) {
		loom_msg m = {.type = LOOM_MSG_ADAPTER, .u.adapter = l->ads[todo[k]]};
		int rv = send_msg(w, &m, 0);
		if (rv) {
			LOOM_WARN("worker %s: cannot send adapter %s: %s", w->url, m.u.adapter.name,
				  nng_strerror(rv));
			break;
		}
		LOOM_DEBUG("worker %s: adapter %s (%s) sent", w->url, m.u.adapter.name,
			   m.u.adapter.path);
	}
	pthread_mutex_lock(&l->mu);
	if (pipe == w->pipe) {
		if (k < n) {
			for (size_t j = k; j < n; j++)
				w->ad_sent[todo[j]] = false;
		} else if (n) {
			/* PINGs numbered from here on are queued behind the ADAPTERs */
			w->live_after_seq = w->ping_seq;
			w->ping_now = true;
			pthread_cond_signal(&l->cv);
		}
	}
	pthread_mutex_unlock(&l->mu);
	loom_free(todo);
	return k == n;
}

static void on_hello(worker *w, loom_msg_hello *h, uint32_t pipe)
{
	gw_link *l = w->l;
	if (!send_adapters(w, h, pipe))
		return;
	pthread_mutex_lock(&l->mu);
	if (pipe != w->pipe) {
		pthread_mutex_unlock(&l->mu);
		return; /* the connection went away meanwhile */
	}
	if (h->ping_seq && (w->was_live || h->ping_seq > w->live_after_seq)) {
		if (!w->was_live)
			LOOM_INFO("worker %s (%s, %s) is live, serving %u model(s)", w->url, h->worker_id,
				  h->backend, h->n_models);
		w->last_answer_ms = now_ms();
		w->was_live = true;
	}
	loom_free(w->models);
	w->models = h->models; /* steal */
	w->n_models = h->n_models;
	h->models = NULL;
	h->n_models = 0;
	pthread_mutex_unlock(&l->mu);
}

static void on_step(worker *w, const loom_msg_step *s)
{
	gw_link *l = w->l;
	for (uint32_t i = 0; i < s->n_items; i++) {
		const loom_step_item *it = &s->items[i];
		gw_req *r = NULL;
		pthread_mutex_lock(&l->mu);
		entry *e = *slot(l, it->req);
		if (e && e->worker == w->idx) {
			r = e->req;
			gw_req_hold(r);
		}
		pthread_mutex_unlock(&l->mu);
		if (!r)
			continue; /* finished, canceled or failed already: a late step */
		gw_step_result res = gw_req_on_step(r, it->ids, it->n_ids, it->finish);
		if (res != GW_STEP_MORE) {
			pthread_mutex_lock(&l->mu);
			e = detach(l, it->req);
			pthread_mutex_unlock(&l->mu);
			if (e) {
				if (res == GW_STEP_STOPPED)
					send_cancel(w, it->req);
				gw_req_release(e->req);
				loom_free(e);
			}
		}
		gw_req_release(r);
	}
}

static void on_error(worker *w, const loom_msg_error *er)
{
	gw_link *l = w->l;
	if (er->req == 0) {
		if (er->message && !strncmp(er->message, "adapter ", 8))
			LOOM_WARN("worker %s refused %s (requests for it on this worker will fail)",
				  w->url, er->message);
		else
			LOOM_WARN("worker %s: %s: %s", w->url, loom_strerror((loom_err)er->code),
				  er->message ? er->message : "");
		return;
	}
	pthread_mutex_lock(&l->mu);
	entry *e = *slot(l, er->req);
	if (e && e->worker == w->idx)
		e = detach(l, er->req);
	else
		e = NULL;
	pthread_mutex_unlock(&l->mu);
	if (!e)
		return;
	bool client = er->code == LOOM_EINVAL || er->code == LOOM_ERANGE;
	gw_req_fail(e->req, client ? 400 : 500, client ? "invalid_request_error" : "server_error",
		    "%s", er->message && *er->message ? er->message : loom_strerror((loom_err)er->code));
	gw_req_release(e->req);
	loom_free(e);
}

static void *rx_main(void *arg)
{
	worker *w = arg;
	gw_link *l = w->l;
	for (;;) {
		nng_msg *msg = NULL;
		int rv = nng_recvmsg(w->sock, &msg, 0);
		if (rv == NNG_ECLOSED)
			break;
		if (rv) {
			if (rv != NNG_ETIMEDOUT)
				LOOM_DEBUG("worker %s: receive: %s", w->url, nng_strerror(rv));
			continue;
		}
		uint32_t pipe = (uint32_t)nng_pipe_id(nng_msg_get_pipe(msg));
		pthread_mutex_lock(&l->mu);
		bool current = pipe == w->pipe && !l->stopping;
		pthread_mutex_unlock(&l->mu);
		if (!current) {
			nng_msg_free(msg);
			continue; /* a late message from a pipe already declared dead */
		}
		loom_msg m;
		if (loom_msg_decode(nng_msg_body(msg), nng_msg_len(msg), &m) != LOOM_OK) {
			LOOM_WARN("worker %s: dropped a bad message: %s", w->url, loom_errmsg());
		} else {
			switch (m.type) {
			case LOOM_MSG_HELLO: on_hello(w, &m.u.hello, pipe); break;
			case LOOM_MSG_STEP: on_step(w, &m.u.step); break;
			case LOOM_MSG_ERROR: on_error(w, &m.u.error); break;
			case LOOM_MSG_STATS:
				pthread_mutex_lock(&l->mu);
				w->stats = m.u.stats;
				pthread_mutex_unlock(&l->mu);
				break;
			default:
				LOOM_WARN("worker %s: unexpected %s message", w->url,
					  loom_msg_type_name(m.type));
			}
		}
		loom_msg_fini(&m);
		nng_msg_free(msg);
	}
	return NULL;
}

/* ---- heartbeat ---- */

static void fail_parked(gw_link *l)
{
	pthread_mutex_lock(&l->mu);
	entry *e = l->to_fail;
	l->to_fail = NULL;
	pthread_mutex_unlock(&l->mu);
	while (e) {
		entry *next = e->next;
		worker *w = &l->w[e->worker];
		gw_req_fail(e->req, 502, "server_error",
			    "worker %s failed while generating (connection lost or not answering)",
			    w->url);
		send_cancel(w, e->id); /* harmless if the worker is gone; frees it if it only hung */
		gw_req_release(e->req);
		loom_free(e);
		e = next;
	}
}

static void *hb_main(void *arg)
{
	gw_link *l = arg;
	pthread_mutex_lock(&l->mu);
	while (!l->stopping) {
		int64_t now = now_ms();
		for (size_t i = 0; i < l->n; i++) {
			worker *w = &l->w[i];
			if (!w->pipe)
				continue;
			if (w->was_live && now - w->last_answer_ms >= DEAD_MS) {
				size_t n = detach_worker(l, w->idx, 0);
				LOOM_WARN("worker %s: no answer for %d ms (%zu request(s) in flight failed)",
					  w->url, DEAD_MS, n);
				w->was_live = false;
			}
			if (w->ping_now || now - w->last_ping_ms >= PING_MS) {
				loom_msg m = {.type = LOOM_MSG_PING, .u.ping.seq = ++w->ping_seq};
				w->ping_now = false;
				w->last_ping_ms = now;
				pthread_mutex_unlock(&l->mu);
				send_msg(w, &m, NNG_FLAG_NONBLOCK);
				pthread_mutex_lock(&l->mu);
			}
		}
		if (l->to_fail) {
			pthread_mutex_unlock(&l->mu);
			fail_parked(l);
			pthread_mutex_lock(&l->mu);
			continue;
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&l->cv, &l->mu, &ts);
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

/* ---- lifecycle ---- */

static loom_err open_worker(worker *w)
{
	int rv;
	if ((rv = nng_pair1_open(&w->sock)))
		return loom_fail(LOOM_EINTERNAL, "worker %s: nng_pair1_open: %s", w->url,
				 nng_strerror(rv));
	w->sock_open = true;
	if ((rv = nng_socket_set_size(w->sock, NNG_OPT_RECVMAXSZ, RECV_MAX)) ||
	    (rv = nng_socket_set_ms(w->sock, NNG_OPT_SENDTIMEO, 2000)) ||
	    (rv = nng_socket_set_int(w->sock, NNG_OPT_SENDBUF, SEND_QUEUE)) ||
	    (rv = nng_socket_set_ms(w->sock, NNG_OPT_RECONNMINT, 50)) ||
	    (rv = nng_socket_set_ms(w->sock, NNG_OPT_RECONNMAXT, 500)) ||
	    (rv = nng_pipe_notify(w->sock, NNG_PIPE_EV_ADD_POST, pipe_cb, w)) ||
	    (rv = nng_pipe_notify(w->sock, NNG_PIPE_EV_REM_POST, pipe_cb, w)))
		return loom_fail(LOOM_EINTERNAL, "worker %s: socket options: %s", w->url,
				 nng_strerror(rv));
	if ((rv = nng_dial(w->sock, w->url, NULL, NNG_FLAG_NONBLOCK)))
		return loom_fail(LOOM_EINVAL, "--worker %s: cannot dial: %s", w->url, nng_strerror(rv));
	return LOOM_OK;
}

loom_err gw_link_create(const char *const *urls, size_t n_urls, gw_link **out)
{
	return gw_link_create_with_adapters(urls, n_urls, NULL, 0, out);
}

/* Copies ads into l->ads. */
static loom_err copy_adapters(gw_link *l, const gw_link_adapter *ads, size_t n_ads)
{
	if (!n_ads)
		return LOOM_OK;
	if (!(l->ads = loom_calloc(n_ads, sizeof *l->ads)))
		return loom_fail(LOOM_ENOMEM, "out of memory copying adapters");
	l->n_ads = n_ads;
	for (size_t i = 0; i < n_ads; i++) {
		loom_msg_adapter *a = &l->ads[i];
		if (strlen(ads[i].name) >= sizeof a->name ||
		    strlen(ads[i].base_model) >= sizeof a->base_model ||
		    strlen(ads[i].path) >= LOOM_PROTO_MAX_STR)
			return loom_fail(LOOM_EINVAL, "adapter '%s': name, base or path too long",
					 ads[i].name);
		strcpy(a->name, ads[i].name);
		strcpy(a->base_model, ads[i].base_model);
		if (!(a->path = loom_strdup(ads[i].path)))
			return loom_fail(LOOM_ENOMEM, "out of memory copying adapters");
	}
	return LOOM_OK;
}

loom_err gw_link_create_with_adapters(const char *const *urls, size_t n_urls,
				      const gw_link_adapter *ads, size_t n_ads, gw_link **out)
{
	loom_err rc;
	*out = NULL;
	gw_link *l = loom_calloc(1, sizeof *l);
	if (!l)
		return loom_fail(LOOM_ENOMEM, "out of memory creating worker links");
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	l->w = loom_calloc(n_urls ? n_urls : 1, sizeof *l->w);
	if (!l->w) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory creating worker links");
		goto fail;
	}
	l->n = n_urls;
	if ((rc = copy_adapters(l, ads, n_ads)))
		goto fail;
	for (size_t i = 0; i < n_urls; i++) {
		worker *w = &l->w[i];
		w->l = l;
		w->idx = (int)i;
		if (!(w->url = loom_strdup(urls[i])) ||
		    (n_ads && !(w->ad_sent = loom_calloc(n_ads, sizeof *w->ad_sent)))) {
			rc = loom_fail(LOOM_ENOMEM, "out of memory");
			goto fail;
		}
		if ((rc = open_worker(w)))
			goto fail;
		if (pthread_create(&w->rx, NULL, rx_main, w)) {
			rc = loom_fail(LOOM_EINTERNAL, "cannot start a receive thread");
			goto fail;
		}
		w->rx_started = true;
	}
	if (pthread_create(&l->hb, NULL, hb_main, l)) {
		rc = loom_fail(LOOM_EINTERNAL, "cannot start the heartbeat thread");
		goto fail;
	}
	l->hb_started = true;
	*out = l;
	return LOOM_OK;
fail:
	gw_link_destroy(l);
	return rc;
}

void gw_link_close_all(gw_link *l)
{
	pthread_mutex_lock(&l->mu);
	l->closed = true;
	for (size_t i = 0; i < l->n; i++)
		detach_worker(l, (int)i, 0);
	entry *e = l->to_fail;
	l->to_fail = NULL;
	pthread_mutex_unlock(&l->mu);
	while (e) {
		entry *next = e->next;
		send_cancel(&l->w[e->worker], e->id);
		gw_req_close(e->req);
		gw_req_release(e->req);
		loom_free(e);
		e = next;
	}
}

void gw_link_destroy(gw_link *l)
{
	if (!l)
		return;
	gw_link_close_all(l);
	pthread_mutex_lock(&l->mu);
	l->stopping = true;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->mu);
	if (l->hb_started)
		pthread_join(l->hb, NULL);
	for (size_t i = 0; i < l->n; i++) {
		worker *w = &l->w[i];
		if (w->sock_open)
			nng_close(w->sock); /* unblocks the receive thread */
		if (w->rx_started)
			pthread_join(w->rx, NULL);
	}
	fail_parked(l); /* anything a late pipe event parked */
	for (size_t i = 0; i < l->n; i++) {
		loom_free(l->w[i].url);
		loom_free(l->w[i].models);
		loom_free(l->w[i].ad_sent);
	}
	for (size_t i = 0; i < l->n_ads; i++)
		loom_free(l->ads[i].path);
	loom_free(l->ads);
	loom_free(l->w);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	loom_free(l);
}

loom_err gw_link_submit(gw_link *l, gw_req *r, loom_msg_submit *sub)
{
	uint64_t id = gw_req_id(r);
	entry *e = loom_calloc(1, sizeof *e);
	if (!e)
		return loom_fail(LOOM_ENOMEM, "out of memory routing a request");
	sub->req = id;
	pthread_mutex_lock(&l->mu);
	int64_t now = now_ms();
	int best = -1;
	for (size_t i = 0; !l->closed && i < l->n; i++) {
		worker *w = &l->w[i];
		if (is_live(w, now) && serves(w, sub->model) &&
		    (best < 0 || w->inflight < l->w[best].inflight))
			best = (int)i;
	}
	if (best < 0) {
		bool closed = l->closed;
		pthread_mutex_unlock(&l->mu);
		loom_free(e);
		return closed ? loom_fail(LOOM_EBUSY, "the gateway is shutting down")
			      : loom_fail(LOOM_EBUSY, "no live worker serves model '%s'", sub->model);
	}
	worker *w = &l->w[best];
	e->id = id;
	e->req = r;
	e->worker = best;
	e->pipe = w->pipe;
	gw_req_hold(r);
	entry **pp = &l->table[id % N_BUCKETS];
	e->next = *pp;
	*pp = e;
	w->inflight++;
	pthread_mutex_unlock(&l->mu);

	loom_msg m = {.type = LOOM_MSG_SUBMIT, .u.submit = *sub};
	int rv = send_msg(w, &m, 0);
	if (rv == 0)
		return LOOM_OK;
	pthread_mutex_lock(&l->mu);
	e = detach(l, id);
	pthread_mutex_unlock(&l->mu);
	if (!e)
		return LOOM_OK; /* the worker's failure already took it: r reports it */
	gw_req_release(e->req);
	loom_free(e);
	return loom_fail(LOOM_ECLOSED, "cannot send the request to worker %s: %s", w->url,
			 nng_strerror(rv));
}

void gw_link_cancel(gw_link *l, uint64_t id)
{
	pthread_mutex_lock(&l->mu);
	entry *e = detach(l, id);
	pthread_mutex_unlock(&l->mu);
	if (!e)
		return;
	send_cancel(&l->w[e->worker], id);
	gw_req_release(e->req);
	loom_free(e);
}

bool gw_link_model_ready(gw_link *l, const char *model)
{
	bool ok = false;
	pthread_mutex_lock(&l->mu);
	int64_t now = now_ms();
	for (size_t i = 0; !ok && i < l->n; i++)
		ok = is_live(&l->w[i], now) && serves(&l->w[i], model);
	pthread_mutex_unlock(&l->mu);
	return ok;
}
