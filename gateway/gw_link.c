/*
 * gateway/gw_link.c — worker sockets, heartbeat and the request table.
 * (Admission and SUBMITs: gw_link_submit.c; the router: gw_link_route.c.)
 *
 * All shared state (workers' liveness, models, counters, the table) is under
 * l->mu, held only briefly and never across an nng send or a gw_req call.
 * The table is a chained hash on the request id (a few hundred entries in
 * flight; 1024 buckets). Each entry remembers the worker and the pipe the
 * request went out on, so a dead pipe loses exactly its own requests, and
 * keeps what it needs to be sent again (lk_job). Requests taken out of the
 * table on a worker's death are parked on l->to_move and resumed elsewhere
 * (or failed) by the heartbeat thread (gw_link_move.c; pipe callbacks must
 * not block), which also feeds the admission queue to workers with room and
 * times out what waited too long there.
 * Announcements (gw_link_sync.c): the receive thread sends what a HELLO's
 * worker lacks before it applies that HELLO (liveness, model list), so a
 * SUBMIT naming an adapter is only ever routed after its ADAPTER was queued
 * on the same socket. A worker that is not live yet becomes live only with a
 * HELLO answering a PING sent after them (live_after_seq): the worker
 * handles messages in order, so by then it has handled them, and a slow load
 * can neither fail requests nor count as a hang.
 */
#include "gw_link.h"

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/tlslink.h"
#include "gw_link_int.h"

#define PING_MS 200
#define DEAD_MS 1000
#define TICK_MS 50
#define RECV_MAX (64u << 20)
/* Messages queued per worker, so that non-blocking CANCEL/PING sends survive a
 * worker that is briefly slow to read. */
#define SEND_QUEUE 1024
#define QUEUE_DEFAULT 256
#define QUEUE_TIMEOUT_MS_DEFAULT 60000
#define WORKER_SLOTS_DEFAULT 64 /* loom-worker's --max-seqs default */
#define ROOM_MS_DEFAULT 250

int64_t gw_link_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool lk_is_live(const lk_worker *w, int64_t now)
{
	return w->pipe && w->last_answer_ms && now - w->last_answer_ms < DEAD_MS;
}

bool lk_serves(const lk_worker *w, const char *model)
{
	for (uint32_t i = 0; i < w->n_models; i++)
		if (!strcmp(w->models[i], model))
			return true;
	return false;
}

/* ---- table (under mu) ---- */

lk_entry **lk_slot(gw_link *l, uint64_t id)
{
	lk_entry **pp = &l->table[id % GW_LINK_BUCKETS];
	while (*pp && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

/* Uncounts e from its worker (or the queue). */
static void uncount(gw_link *l, lk_entry *e)
{
	if (e->worker < 0) {
		lk_queue_unlink(l, e);
		return;
	}
	lk_worker *w = &l->w[e->worker];
	if (w->inflight)
		w->inflight--;
	if (e->job.batch && w->batch_inflight)
		w->batch_inflight--;
	lk_perf_load(w);
	if (l->q_head)
		pthread_cond_signal(&l->cv); /* room for the batch queue, maybe */
}

void lk_table_insert(gw_link *l, lk_entry *e, int widx, uint32_t n_prompt)
{
	lk_entry **pp = &l->table[e->id % GW_LINK_BUCKETS];
	e->next = *pp;
	*pp = e;
	e->worker = -1;
	if (widx >= 0)
		lk_assign(l, e, widx, n_prompt);
}

void lk_assign(gw_link *l, lk_entry *e, int widx, uint32_t n_prompt)
{
	lk_worker *w = &l->w[widx];
	e->worker = widx;
	e->pipe = w->pipe;
	e->sent_ms = gw_link_now_ms();
	w->inflight++;
	if (e->job.batch)
		w->batch_inflight++;
	/* the tokens it will prefill there: its cached prefix is not work */
	lk_perf_submitted(w, n_prompt - lk_prefix_cached(w, &e->job));
	lk_perf_load(w);
	lk_prefix_record(w, &e->job);
}

lk_entry *lk_detach(gw_link *l, uint64_t id)
{
	lk_entry **pp = lk_slot(l, id), *e = *pp;
	if (e) {
		*pp = e->next;
		e->next = NULL;
		uncount(l, e);
	}
	return e;
}

void lk_entry_free(lk_entry *e)
{
	if (!e)
		return;
	gw_req_release(e->req);
	loom_free(e->job.sub.prompt_ids);
	loom_free(e->job.pfx);
	loom_sampling_fini(&e->job.sub.sampling);
	loom_free(e);
}

/* Moves every entry sent on (worker, pipe) — pipe 0 = any — to to_move. */
static size_t detach_worker(gw_link *l, int widx, uint32_t pipe)
{
	size_t n = 0;
	for (size_t b = 0; b < GW_LINK_BUCKETS; b++) {
		lk_entry **pp = &l->table[b];
		while (*pp) {
			lk_entry *e = *pp;
			if (e->worker == widx && (!pipe || e->pipe == pipe)) {
				*pp = e->next;
				uncount(l, e);
				e->next = l->to_move;
				l->to_move = e;
				n++;
			} else {
				pp = &e->next;
			}
		}
	}
	if (n)
		pthread_cond_signal(&l->cv);
	return n;
}

/* ---- sending ---- */

int gw_link_send_buf(lk_worker *w, const void *buf, size_t len, int flags)
{
	nng_msg *msg = NULL;
	int rv;
	if ((rv = nng_msg_alloc(&msg, 0)) == 0 && (rv = nng_msg_append(msg, buf, len)) == 0) {
		rv = nng_sendmsg(w->sock, msg, flags);
		if (rv == 0)
			msg = NULL;
	}
	if (msg)
		nng_msg_free(msg);
	return rv;
}

int gw_link_send(lk_worker *w, const loom_msg *m, int flags)
{
	void *buf = NULL;
	size_t len = 0;
	if (loom_msg_encode(m, &buf, &len) != LOOM_OK) {
		LOOM_WARN("worker %s: cannot encode %s: %s", w->url, loom_msg_type_name(m->type),
			  loom_errmsg());
		return NNG_EINVAL;
	}
	int rv = gw_link_send_buf(w, buf, len, flags);
	loom_free(buf);
	return rv;
}

void lk_send_cancel(lk_worker *w, uint64_t id)
{
	loom_msg m = {.type = LOOM_MSG_CANCEL, .u.cancel.req = id};
	pthread_mutex_lock(&w->l->mu);
	bool connected = w->pipe != 0;
	pthread_mutex_unlock(&w->l->mu);
	if (!connected)
		return; /* a gone worker forgot the request; a queued CANCEL would only linger */
	int rv = gw_link_send(w, &m, NNG_FLAG_NONBLOCK);
	if (rv)
		LOOM_DEBUG("worker %s: CANCEL %llu not sent: %s", w->url, (unsigned long long)id,
			   nng_strerror(rv));
}

/* ---- pipe events (nng threads: state flips only) ---- */

static void pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	lk_worker *w = arg;
	gw_link *l = w->l;
	uint32_t id = (uint32_t)nng_pipe_id(p);
	pthread_mutex_lock(&l->mu);
	if (ev == NNG_PIPE_EV_ADD_POST) {
		w->pipe = id;
		w->connected_ms = gw_link_now_ms();
		w->last_answer_ms = 0;
		w->was_live = false;
		w->synced = false;
		w->ping_now = true;
		w->live_after_seq = 0;
		lk_perf_reset(w);
		lk_prefix_forget(w); /* a new connection: maybe a restarted worker */
		pthread_cond_signal(&l->cv);
	} else if (ev == NNG_PIPE_EV_REM_POST) {
		/* the pipe may already have been replaced: move what went out on it either way */
		size_t n = detach_worker(l, w->idx, id);
		if (id == w->pipe) {
			if ((n || w->was_live) && !l->closed) /* not at shutdown */
				LOOM_WARN("worker %s: connection lost (%zu request(s) in flight to "
					  "resume elsewhere)", w->url, n);
			w->pipe = 0;
			w->last_answer_ms = 0;
			w->was_live = false;
			w->synced = false;
		}
		pthread_cond_signal(&l->cv);
	}
	pthread_mutex_unlock(&l->mu);
}

/* ---- receiving ---- */

static void on_hello(lk_worker *w, loom_msg_hello *h, uint32_t pipe)
{
	gw_link *l = w->l;
	if (!lk_sync(w, h, pipe))
		return; /* the next HELLO retries */
	pthread_mutex_lock(&l->mu);
	if (pipe != w->pipe) {
		pthread_mutex_unlock(&l->mu);
		return; /* the connection went away meanwhile */
	}
	if (h->ping_seq && (w->was_live || h->ping_seq > w->live_after_seq)) {
		if (!w->was_live)
			LOOM_INFO("worker %s (%s, %s) is live, serving %u model(s)", w->url, h->worker_id,
				  h->backend, h->n_models);
		w->last_answer_ms = gw_link_now_ms();
		w->was_live = true;
	}
	lk_perf_hello(w, h->ping_seq);
	snprintf(w->id, sizeof w->id, "%s", h->worker_id);
	snprintf(w->backend, sizeof w->backend, "%s", h->backend);
	loom_free(w->models);
	w->models = h->models; /* steal */
	w->n_models = h->n_models;
	h->models = NULL;
	h->n_models = 0;
	pthread_mutex_unlock(&l->mu);
}

static void on_step(lk_worker *w, const loom_msg_step *s)
{
	gw_link *l = w->l;
	for (uint32_t i = 0; i < s->n_items; i++) {
		const loom_step_item *it = &s->items[i];
		gw_req *r = NULL;
		pthread_mutex_lock(&l->mu);
		lk_entry *e = *lk_slot(l, it->req);
		if (e && e->worker == w->idx) {
			r = e->req;
			gw_req_hold(r);
		}
		pthread_mutex_unlock(&l->mu);
		if (!r)
			continue; /* finished, canceled or failed already: a late step */
		gw_step_result res = gw_req_on_step(r, it);
		if (res != GW_STEP_MORE) {
			pthread_mutex_lock(&l->mu);
			e = *lk_slot(l, it->req);
			e = e && e->worker == w->idx ? lk_detach(l, it->req) : NULL;
			if (e && res == GW_STEP_DONE)
				lk_perf_finished(w, e->sent_ms);
			pthread_mutex_unlock(&l->mu);
			if (e) {
				if (res == GW_STEP_STOPPED)
					lk_send_cancel(w, it->req);
				lk_entry_free(e);
			}
		}
		gw_req_release(r);
	}
}

static void on_error(lk_worker *w, const loom_msg_error *er)
{
	gw_link *l = w->l;
	if (er->req == 0) {
		if (er->message && (!strncmp(er->message, "adapter ", 8) ||
				    !strncmp(er->message, "model ", 6)))
			LOOM_WARN("worker %s refused %s (requests for it on this worker will fail)",
				  w->url, er->message);
		else
			LOOM_WARN("worker %s: %s: %s", w->url, loom_strerror((loom_err)er->code),
				  er->message ? er->message : "");
		return;
	}
	pthread_mutex_lock(&l->mu);
	lk_entry *e = *lk_slot(l, er->req);
	if (e && e->worker == w->idx)
		e = lk_detach(l, er->req);
	else
		e = NULL;
	pthread_mutex_unlock(&l->mu);
	if (!e)
		return;
	bool client = er->code == LOOM_EINVAL || er->code == LOOM_ERANGE;
	gw_req_fail(e->req, client ? 400 : 500, client ? "invalid_request_error" : "server_error",
		    "%s", er->message && *er->message ? er->message : loom_strerror((loom_err)er->code));
	lk_entry_free(e);
}

static void *rx_main(void *arg)
{
	lk_worker *w = arg;
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
		loom_msg m;
		if (loom_msg_decode(nng_msg_body(msg), nng_msg_len(msg), &m) != LOOM_OK) {
			LOOM_WARN("worker %s: dropped a bad message: %s", w->url, loom_errmsg());
			loom_msg_fini(&m);
			nng_msg_free(msg);
			continue;
		}
		/* deliveries hold rx_mu from the pipe check on: a request moved off a lost
		 * worker waits for them (gw_link_move.c), so its ids are final */
		bool deliver = m.type == LOOM_MSG_STEP || m.type == LOOM_MSG_ERROR;
		if (deliver)
			pthread_mutex_lock(&w->rx_mu);
		pthread_mutex_lock(&l->mu);
		bool current = pipe == w->pipe && !l->stopping;
		pthread_mutex_unlock(&l->mu);
		if (!current) {
			/* a late message from a pipe already declared dead */
		} else {
			switch (m.type) {
			case LOOM_MSG_HELLO: on_hello(w, &m.u.hello, pipe); break;
			case LOOM_MSG_STEP: on_step(w, &m.u.step); break;
			case LOOM_MSG_ERROR: on_error(w, &m.u.error); break;
			case LOOM_MSG_STATS:
				pthread_mutex_lock(&l->mu);
				/* the per-model array moves to w (fini frees nothing) */
				loom_free(w->stats.models);
				w->stats = m.u.stats;
				m.u.stats.models = NULL;
				m.u.stats.n_models = 0;
				w->has_stats = true;
				lk_perf_stats(w, &m.u.stats);
				if (l->q_head)
					pthread_cond_signal(&l->cv); /* room, maybe */
				pthread_mutex_unlock(&l->mu);
				break;
			case LOOM_MSG_FETCH: lk_on_fetch(w, &m.u.fetch); break;
			case LOOM_MSG_RESIDENCY: lk_on_residency(w, &m.u.residency); break;
			default:
				LOOM_WARN("worker %s: unexpected %s message", w->url,
					  loom_msg_type_name(m.type));
			}
		}
		if (deliver)
			pthread_mutex_unlock(&w->rx_mu);
		loom_msg_fini(&m);
		nng_msg_free(msg);
	}
	return NULL;
}

/* ---- heartbeat ---- */

static void *hb_main(void *arg)
{
	gw_link *l = arg;
	pthread_mutex_lock(&l->mu);
	while (!l->stopping) {
		int64_t now = gw_link_now_ms();
		for (size_t i = 0; i < l->n; i++) {
			lk_worker *w = &l->w[i];
			if (!w->pipe)
				continue;
			if (w->was_live && now - w->last_answer_ms >= DEAD_MS) {
				size_t n = detach_worker(l, w->idx, 0);
				LOOM_WARN("worker %s: no answer for %d ms (%zu request(s) in flight to "
					  "resume elsewhere)", w->url, DEAD_MS, n);
				w->was_live = false;
			}
			if (w->ping_now || now - w->last_ping_ms >= PING_MS) {
				loom_msg m = {.type = LOOM_MSG_PING, .u.ping.seq = ++w->ping_seq};
				w->ping_now = false;
				w->last_ping_ms = now;
				pthread_mutex_unlock(&l->mu);
				gw_link_send(w, &m, NNG_FLAG_NONBLOCK);
				pthread_mutex_lock(&l->mu);
			}
		}
		if (l->to_move) {
			pthread_mutex_unlock(&l->mu);
			lk_move_parked(l);
			pthread_mutex_lock(&l->mu);
			continue;
		}
		if (l->q_head) {
			pthread_mutex_unlock(&l->mu);
			lk_dispatch_queue(l);
			pthread_mutex_lock(&l->mu);
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

static loom_err open_worker(lk_worker *w, struct nng_tls_config *tls)
{
	nng_dialer d;
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
	/* a tls+tcp:// worker: mutual TLS, the worker's certificate checked against the CA */
	if ((rv = nng_dialer_create(&d, w->sock, w->url)) ||
	    (tls && loom_url_is_tls(w->url) && (rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tls))) ||
	    (rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK)))
		return loom_fail(LOOM_EINVAL, "--worker %s: cannot dial: %s", w->url, nng_strerror(rv));
	return LOOM_OK;
}

loom_err gw_link_create(const char *const *urls, size_t n_urls, gw_link **out)
{
	gw_link_opts o = {.urls = urls, .n_urls = n_urls};
	return gw_link_create_opts(&o, out);
}

loom_err gw_link_create_with_adapters(const char *const *urls, size_t n_urls,
				      const gw_link_adapter *ads, size_t n_ads, gw_link **out)
{
	gw_link_opts o = {.urls = urls, .n_urls = n_urls, .adapters = ads, .n_adapters = n_ads};
	return gw_link_create_opts(&o, out);
}

loom_err gw_link_create_opts(const gw_link_opts *o, gw_link **out)
{
	loom_err rc;
	*out = NULL;
	gw_link *l = loom_calloc(1, sizeof *l);
	if (!l)
		return loom_fail(LOOM_ENOMEM, "out of memory creating worker links");
	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	l->store = o->store;
	l->no_slo = o->no_slo;
	l->q_cap = o->batch_queue ? o->batch_queue : QUEUE_DEFAULT;
	l->q_timeout_ms = o->queue_timeout_ms ? o->queue_timeout_ms : QUEUE_TIMEOUT_MS_DEFAULT;
	l->batch_per_worker = o->batch_per_worker;
	l->worker_slots = o->worker_slots ? o->worker_slots : WORKER_SLOTS_DEFAULT;
	l->room_ms = o->room_ms ? o->room_ms : ROOM_MS_DEFAULT;
	l->w = loom_calloc(o->n_urls ? o->n_urls : 1, sizeof *l->w);
	if (!l->w) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory creating worker links");
		goto fail;
	}
	l->n = o->n_urls;
	for (size_t i = 0; i < l->n; i++) {
		l->w[i].l = l;
		l->w[i].idx = (int)i;
		pthread_mutex_init(&l->w[i].send_mu, NULL);
		pthread_mutex_init(&l->w[i].rx_mu, NULL);
	}
	if ((rc = lk_tables_init(l, o)))
		goto fail;
	for (size_t i = 0; i < l->n; i++) {
		lk_worker *w = &l->w[i];
		if (!(w->url = loom_strdup(o->urls[i]))) {
			rc = loom_fail(LOOM_ENOMEM, "out of memory");
			goto fail;
		}
		if ((rc = open_worker(w, o->tls)))
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
	while (l->q_head) {
		lk_entry *q = l->q_head;
		lk_detach(l, q->id);
		q->next = l->to_move;
		l->to_move = q;
	}
	lk_entry *e = l->to_move;
	l->to_move = NULL;
	pthread_mutex_unlock(&l->mu);
	while (e) {
		lk_entry *next = e->next;
		if (e->worker >= 0)
			lk_send_cancel(&l->w[e->worker], e->id);
		gw_req_close(e->req);
		lk_entry_free(e);
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
		lk_worker *w = &l->w[i];
		if (w->sock_open)
			nng_close(w->sock); /* unblocks the receive thread */
		if (w->rx_started)
			pthread_join(w->rx, NULL);
	}
	gw_link_close_all(l); /* anything a late pipe event parked */
	for (size_t i = 0; i < l->n; i++) {
		lk_worker *w = &l->w[i];
		loom_free(w->url);
		loom_free(w->models);
		loom_free(w->stats.models);
		loom_free(w->res.items);
		lk_prefix_free(w);
		pthread_mutex_destroy(&w->send_mu);
		pthread_mutex_destroy(&w->rx_mu);
	}
	lk_tables_fini(l);
	loom_free(l->w);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	loom_free(l);
}

void gw_link_cancel(gw_link *l, uint64_t id)
{
	pthread_mutex_lock(&l->mu);
	lk_entry *e = lk_detach(l, id);
	pthread_mutex_unlock(&l->mu);
	if (!e)
		return;
	if (e->worker >= 0)
		lk_send_cancel(&l->w[e->worker], id);
	lk_entry_free(e);
}

bool gw_link_model_ready(gw_link *l, const char *model)
{
	bool ok = false;
	pthread_mutex_lock(&l->mu);
	int64_t now = gw_link_now_ms();
	for (size_t i = 0; !ok && i < l->n; i++)
		ok = lk_is_live(&l->w[i], now) && lk_serves(&l->w[i], model);
	pthread_mutex_unlock(&l->mu);
	return ok;
}

bool gw_link_wait_model(gw_link *l, const char *model, int timeout_ms)
{
	int64_t end = gw_link_now_ms() + timeout_ms;
	for (;;) {
		if (gw_link_model_ready(l, model))
			return true;
		if (gw_link_now_ms() >= end)
			return false;
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

void gw_link_get_counters(gw_link *l, gw_link_counters *out)
{
	memset(out, 0, sizeof *out);
	pthread_mutex_lock(&l->mu);
	out->queued = l->q_len;
	out->queue_cap = l->q_cap;
	out->queue_timeouts = l->n_timeouts;
	out->resumed = l->n_resumed;
	out->lost = l->n_lost;
	out->no_slo = l->no_slo;
	for (size_t b = 0; b < GW_LINK_BUCKETS; b++)
		for (const lk_entry *e = l->table[b]; e; e = e->next)
			out->entries++;
	for (const lk_entry *e = l->to_move; e; e = e->next)
		out->entries++;
	pthread_mutex_unlock(&l->mu);
}

uint32_t gw_link_retry_after_s(gw_link *l)
{
	pthread_mutex_lock(&l->mu);
	uint32_t s = lk_retry_after_s(l);
	pthread_mutex_unlock(&l->mu);
	return s;
}

size_t gw_link_inflight(gw_link *l)
{
	size_t n = 0;
	pthread_mutex_lock(&l->mu);
	for (size_t i = 0; i < l->n; i++)
		n += l->w[i].inflight;
	pthread_mutex_unlock(&l->mu);
	return n;
}

loom_err gw_link_workers(gw_link *l, gw_worker_info **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	gw_worker_info *v = loom_calloc(l->n ? l->n : 1, sizeof *v);
	if (!v)
		return loom_fail(LOOM_ENOMEM, "out of memory listing workers");
	loom_err rc = LOOM_OK;
	pthread_mutex_lock(&l->mu);
	int64_t now = gw_link_now_ms();
	for (size_t i = 0; i < l->n; i++) {
		const lk_worker *w = &l->w[i];
		gw_worker_info *x = &v[i];
		snprintf(x->url, sizeof x->url, "%s", w->url);
		snprintf(x->id, sizeof x->id, "%s", w->id);
		snprintf(x->backend, sizeof x->backend, "%s", w->backend);
		x->connected = w->pipe != 0;
		x->live = lk_is_live(w, now);
		x->inflight = w->inflight;
		x->has_stats = w->has_stats;
		x->stats = w->stats;
		x->stats.models = NULL;
		x->stats.n_models = 0;
		if (w->stats.n_models) {
			size_t bytes = w->stats.n_models * sizeof *x->stats.models;
			if (!(x->stats.models = loom_malloc(bytes))) {
				rc = LOOM_ENOMEM;
				continue;
			}
			memcpy(x->stats.models, w->stats.models, bytes);
			x->stats.n_models = w->stats.n_models;
		}
		x->batch_inflight = w->batch_inflight;
		x->step_samples = w->perf.samples;
		x->step_a_ms = w->perf.a_ms;
		x->step_b_ms = w->perf.b_ms;
		x->predicted_ttft_ms = lk_predict_ttft(w, "", "", "", 1);
		x->pending_tokens = w->perf.pend_tokens;
		x->slots = w->perf.slots;
		x->request_ms = w->perf.dur_ms;
		if (w->n_models) {
			x->models = loom_malloc(w->n_models * sizeof *x->models);
			if (!x->models) {
				rc = LOOM_ENOMEM;
				continue;
			}
			memcpy(x->models, w->models, w->n_models * sizeof *x->models);
			x->n_models = w->n_models;
		}
		x->has_residency = w->has_res;
		x->res = w->res;
		x->res.items = NULL;
		x->res.n = 0;
		if (w->res.n) {
			x->res.items = loom_malloc(w->res.n * sizeof *x->res.items);
			if (!x->res.items) {
				rc = LOOM_ENOMEM;
				continue;
			}
			memcpy(x->res.items, w->res.items, w->res.n * sizeof *x->res.items);
			x->res.n = w->res.n;
		}
	}
	pthread_mutex_unlock(&l->mu);
	if (rc) {
		gw_link_workers_free(v, l->n);
		return loom_fail(LOOM_ENOMEM, "out of memory listing workers");
	}
	*out = v;
	*n = l->n;
	return LOOM_OK;
}

void gw_link_workers_free(gw_worker_info *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		loom_free(v[i].models);
		loom_free(v[i].stats.models);
		loom_free(v[i].res.items);
	}
	loom_free(v);
}
