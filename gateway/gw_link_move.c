/*
 * gateway/gw_link_move.c — the heartbeat thread's two jobs besides PINGs:
 * resuming the requests of a lost worker on another one, and the admission
 * queue: sending its requests to workers that meet their TTFT budget or have
 * room, head first, and failing those that waited too long (503).
 *
 * Resuming. An entry reaches l->to_move out of the table (a pipe event or
 * the heartbeat detached it), so no later STEP can reach it; a barrier on
 * the old worker's rx_mu waits out a delivery that found it just before.
 * The gw_req then holds exactly the ids the client has been given (or will
 * be, from its SSE buffer), and the SUBMIT sent elsewhere carries the
 * original prompt + those ids with n_generated = their count: the worker
 * prefills them and samples on from that position with the same seed, so
 * the client sees neither a gap nor a repeat. The old worker is told to
 * CANCEL (a hung one may wake up; a dead one ignores it).
 *
 * After an entry is back in the table and the lock dropped, a cancel or
 * another loss may free or move it: past that point it is named by id only.
 */
#include <nng/nng.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "gw_link_int.h"

#define DISPATCH_MAX 64 /* queued requests looked at per heartbeat tick at most */
#define BLOCKED_MAX 16  /* models held back per tick at most (the rest wait a tick) */

/* Not under mu: takes id out of the table if it is still on (widx, pipe)
 * and fails it with status and message. */
static void fail_if_on(gw_link *l, uint64_t id, int widx, uint32_t pipe, int status,
		       const char *msg)
{
	pthread_mutex_lock(&l->mu);
	lk_entry *e = *lk_slot(l, id);
	e = e && e->worker == widx && e->pipe == pipe ? lk_detach(l, id) : NULL;
	pthread_mutex_unlock(&l->mu);
	if (!e)
		return;
	gw_req_fail(e->req, status, "server_error", "%s", msg);
	lk_entry_free(e);
}

static void move_one(gw_link *l, lk_entry *e)
{
	lk_worker *old = &l->w[e->worker];
	int32_t *gen = NULL;
	size_t n_gen = 0;
	void *buf = NULL;
	size_t len = 0;
	lk_send_cancel(old, e->id); /* harmless if it is gone; frees it if it only hung */
	if (gw_req_generated(e->req, &gen, &n_gen)) {
		/* ended meanwhile (the client left), or out of memory */
		if (!gw_req_done(e->req))
			gw_req_fail(e->req, 500, "server_error", "%s", loom_errmsg());
		lk_entry_free(e);
		return;
	}
	uint32_t n_prompt = e->job.sub.n_prompt + (uint32_t)n_gen;
	pthread_mutex_lock(&l->mu);
	int widx = -1;
	if (!l->closed && e->job.slo) {
		lk_job j = e->job;
		double best;
		j.batch = false; /* admitted already: any live worker will do */
		widx = lk_route_slo(l, &j, n_prompt, -1, false, &best);
	} else if (!l->closed) {
		widx = lk_route_plain(l, &e->job);
	}
	if (widx < 0 && l->closed) {
		pthread_mutex_unlock(&l->mu);
		gw_req_close(e->req);
		lk_entry_free(e);
		loom_free(gen);
		return;
	}
	if (widx < 0) {
		l->n_lost++;
		pthread_mutex_unlock(&l->mu);
		LOOM_WARN("request %llu: worker %s lost after %zu token(s) and no other live worker "
			  "serves model '%s'", (unsigned long long)e->id, old->url, n_gen,
			  e->job.sub.model);
		gw_req_fail(e->req, 502, "server_error",
			    "worker %s failed while generating (connection lost or not answering) "
			    "and no other live worker serves model '%s'", old->url, e->job.sub.model);
		lk_entry_free(e);
		loom_free(gen);
		return;
	}
	uint64_t id = e->id;
	e->job.moves++;
	l->n_resumed++;
	lk_table_insert(l, e, widx, n_prompt);
	lk_worker *w = &l->w[widx];
	uint32_t pipe = e->pipe;
	loom_err rc = lk_encode_submit(l, e, gen, (uint32_t)n_gen, &buf, &len);
	pthread_mutex_unlock(&l->mu);
	loom_free(gen);
	if (rc) {
		fail_if_on(l, id, widx, pipe, 500, "out of memory resuming the request");
		return;
	}
	int rv = gw_link_send_buf(w, buf, len, NNG_FLAG_NONBLOCK);
	loom_free(buf);
	if (rv) {
		char msg[512];
		snprintf(msg, sizeof msg, "worker %s failed while generating and the request could "
			 "not be sent to worker %s: %s", old->url, w->url, nng_strerror(rv));
		fail_if_on(l, id, widx, pipe, 502, msg);
		return;
	}
	LOOM_INFO("request %llu: resumed on worker %s after %zu token(s) (worker %s lost)",
		  (unsigned long long)id, w->url, n_gen, old->url);
}

void lk_move_parked(gw_link *l)
{
	pthread_mutex_lock(&l->mu);
	lk_entry *list = l->to_move;
	l->to_move = NULL;
	pthread_mutex_unlock(&l->mu);
	while (list) {
		lk_entry *e = list;
		list = e->next;
		e->next = NULL;
		/* a delivery to e that began before it left the table is over after this */
		pthread_mutex_lock(&l->w[e->worker].rx_mu);
		pthread_mutex_unlock(&l->w[e->worker].rx_mu);
		move_one(l, e);
	}
}

/* Fails what waited in the queue for q_timeout_ms. */
static void expire_queue(gw_link *l)
{
	lk_entry *gone = NULL;
	pthread_mutex_lock(&l->mu);
	int64_t now = gw_link_now_ms();
	uint32_t retry = 0;
	for (lk_entry *e = l->q_head, *next; e; e = next) {
		next = e->qnext;
		if (now - e->queued_ms < (int64_t)l->q_timeout_ms)
			continue;
		if (!gone)
			retry = lk_retry_after_s(l);
		lk_detach(l, e->id);
		e->next = gone;
		gone = e;
		l->n_timeouts++;
	}
	uint32_t timeout = l->q_timeout_ms;
	pthread_mutex_unlock(&l->mu);
	while (gone) {
		lk_entry *e = gone;
		gone = e->next;
		LOOM_DEBUG("request %llu (%s): no worker had room for %u ms", (unsigned long long)e->id,
			   e->job.sub.slo_class, timeout);
		gw_req_fail(e->req, 503, "service_unavailable",
			    "every worker stayed busy: the request waited %u ms in the admission "
			    "queue (the gateway's --queue-timeout-ms); retry in %u s", timeout, retry);
		lk_entry_free(e);
	}
}

/* Under mu: the first queued entry whose model is not in blocked[n]. */
static lk_entry *next_unblocked(gw_link *l, char (*blocked)[LOOM_NAME_MAX], int n)
{
	for (lk_entry *e = l->q_head; e; e = e->qnext) {
		int k = 0;
		while (k < n && strcmp(blocked[k], e->job.sub.model))
			k++;
		if (k == n)
			return e;
	}
	return NULL;
}

void lk_dispatch_queue(gw_link *l)
{
	char blocked[BLOCKED_MAX][LOOM_NAME_MAX]; /* models whose first waiting request has no room */
	int n_blocked = 0;
	expire_queue(l);
	for (int k = 0; k < DISPATCH_MAX; k++) {
		void *buf = NULL;
		size_t len = 0;
		double best;
		pthread_mutex_lock(&l->mu);
		lk_entry *e = l->closed ? NULL : next_unblocked(l, blocked, n_blocked);
		if (!e) {
			pthread_mutex_unlock(&l->mu);
			return;
		}
		int widx = lk_route_admit(l, &e->job, e->job.sub.n_prompt, true, &best);
		if (widx < 0 && best >= 0) {
			/* it waits for room, and nobody behind it for its model overtakes it */
			snprintf(blocked[n_blocked++], LOOM_NAME_MAX, "%s", e->job.sub.model);
			pthread_mutex_unlock(&l->mu);
			if (n_blocked == BLOCKED_MAX)
				return;
			continue;
		}
		uint64_t id = e->id;
		if (widx < 0) {
			/* no live worker serves its model any more */
			e = lk_detach(l, id);
			pthread_mutex_unlock(&l->mu);
			gw_req_fail(e->req, 503, "service_unavailable",
				    "no live worker serves model '%s'", e->job.sub.model);
			lk_entry_free(e);
			continue;
		}
		lk_queue_unlink(l, e);
		lk_assign(l, e, widx, e->job.sub.n_prompt);
		lk_worker *w = &l->w[widx];
		uint32_t pipe = e->pipe;
		loom_err rc = lk_encode_submit(l, e, NULL, 0, &buf, &len);
		pthread_mutex_unlock(&l->mu);
		int rv = rc ? NNG_ENOMEM : gw_link_send_buf(w, buf, len, NNG_FLAG_NONBLOCK);
		loom_free(buf);
		if (rv) {
			char msg[512];
			snprintf(msg, sizeof msg, "cannot send the request to worker %s: %s", w->url,
				 rc ? loom_errmsg() : nng_strerror(rv));
			fail_if_on(l, id, widx, pipe, rc ? 500 : 502, msg);
		}
	}
}
