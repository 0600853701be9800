/*
 * gateway/gw_link_submit.c — a request's way into the link: its entry (a
 * copy of the SUBMIT that can be sent again: later from the admission queue, or
 * to another worker after a loss), admission by the SLO rules or the plain
 * router, and the SUBMIT's encoding (the remaining TTFT budget is computed
 * when it is sent).
 */
#include <math.h>
#include <nng/nng.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "gw_link_int.h"

/* A new entry for r whose job is a copy of sub (prompt and sampling arrays too). */
static loom_err new_entry(gw_req *r, const loom_msg_submit *sub, const char *sha, lk_entry **out)
{
	*out = NULL;
	lk_entry *e = loom_calloc(1, sizeof *e);
	if (!e)
		return loom_fail(LOOM_ENOMEM, "out of memory routing a request");
	e->id = sub->req;
	e->job.sub = *sub;
	e->job.sub.prompt_ids = NULL;
	e->job.sub.sampling = (loom_sampling){ 0 };
	if (sub->n_prompt) {
		e->job.sub.prompt_ids = loom_malloc(sub->n_prompt * sizeof *sub->prompt_ids);
		if (!e->job.sub.prompt_ids)
			goto oom;
		memcpy(e->job.sub.prompt_ids, sub->prompt_ids, sub->n_prompt * sizeof *sub->prompt_ids);
	}
	if (loom_sampling_copy(&e->job.sub.sampling, &sub->sampling))
		goto oom;
	snprintf(e->job.sha, sizeof e->job.sha, "%s", sha ? sha : "");
	if (lk_prefix_keys(&e->job))
		goto oom;
	e->req = r;
	gw_req_hold(r);
	*out = e;
	return LOOM_OK;
oom:
	lk_entry_free(e);
	return loom_fail(LOOM_ENOMEM, "out of memory routing a request");
}

loom_err lk_encode_submit(gw_link *l, const lk_entry *e, const int32_t *gen, uint32_t n_gen,
			  void **buf, size_t *len)
{
	(void)l;
	loom_msg m = {.type = LOOM_MSG_SUBMIT, .u.submit = e->job.sub};
	loom_msg_submit *s = &m.u.submit;
	int32_t *ids = NULL;
	if (n_gen) {
		ids = loom_malloc((s->n_prompt + n_gen) * sizeof *ids);
		if (!ids)
			return loom_fail(LOOM_ENOMEM, "out of memory resuming a request");
		if (s->n_prompt)
			memcpy(ids, s->prompt_ids, s->n_prompt * sizeof *ids);
		memcpy(ids + s->n_prompt, gen, n_gen * sizeof *ids);
		s->prompt_ids = ids;
		s->n_prompt += n_gen;
		s->n_generated = n_gen;
	}
	if (e->job.slo) {
		s->tpot_target_ms = e->job.tpot_ms;
		s->ttft_deadline_ms = 0;
		if (e->job.ttft_ms && !n_gen) {
			int64_t left = e->job.ttft_ms - (gw_link_now_ms() - e->job.arrival_ms);
			s->ttft_deadline_ms = left < 1 ? 1 : (uint32_t)left;
		}
	}
	loom_err rc = loom_msg_encode(&m, buf, len);
	loom_free(ids);
	return rc;
}

/* Under mu: takes id out of the table when it is still the entry sent to
 * (widx, pipe); NULL when something else (a worker loss, a cancel) took it. */
static lk_entry *detach_if_on(gw_link *l, uint64_t id, int widx, uint32_t pipe)
{
	lk_entry *e = *lk_slot(l, id);
	return e && e->worker == widx && e->pipe == pipe ? lk_detach(l, id) : NULL;
}

/* Routes e (under mu, not in the table yet): *admit and, for LATE and FULL,
 * *retry_s. A request that may wait joins the queue behind those of its
 * priority or higher instead of overtaking them. */
static int route_new(gw_link *l, lk_entry *e, gw_admit *admit, uint32_t *retry_s)
{
	const lk_job *j = &e->job;
	double best_pred;
	int widx;
	if (!j->slo) {
		widx = lk_route_plain(l, j);
		*admit = widx >= 0 ? GW_ADMIT_SENT : GW_ADMIT_NO_WORKER;
		return widx;
	}
	bool behind = j->queueable && lk_queue_ahead(l, j->priority, j->sub.model);
	widx = behind ? -1 : lk_route_admit(l, j, j->sub.n_prompt, true, &best_pred);
	if (behind) /* only whether a live worker serves the model */
		lk_route_slo(l, j, j->sub.n_prompt, -1, false, &best_pred);
	if (widx >= 0) {
		*admit = GW_ADMIT_SENT;
	} else if (best_pred < 0) {
		*admit = GW_ADMIT_NO_WORKER;
	} else if (j->queueable) {
		*admit = l->q_len >= l->q_cap ? GW_ADMIT_FULL : GW_ADMIT_QUEUED;
		if (*admit == GW_ADMIT_FULL)
			*retry_s = lk_retry_after_s(l);
	} else {
		/* the backlog must drain by the excess before a fresh request fits */
		double s = ceil((best_pred - (double)j->ttft_ms) / 1000.0);
		*retry_s = s < 1 ? 1 : s > 3600 ? 3600 : (uint32_t)s;
		*admit = GW_ADMIT_LATE;
		LOOM_DEBUG("request %llu (%s): refused, predicted TTFT %.0f ms > target %u ms",
			   (unsigned long long)e->id, j->sub.slo_class, best_pred, j->ttft_ms);
	}
	return widx;
}

static loom_err submit(gw_link *l, gw_req *r, loom_msg_submit *sub, const char *sha,
		       const gw_link_slo *slo, gw_admit *admit, uint32_t *retry_s)
{
	lk_entry *e;
	void *buf = NULL;
	size_t len = 0;
	loom_err rc;
	*admit = GW_ADMIT_ERROR;
	sub->req = gw_req_id(r);
	if (slo && l->no_slo) {
		/* all of it off: the workers see no class either */
		sub->slo_class[0] = '\0';
		sub->ttft_deadline_ms = 0;
		sub->tpot_target_ms = 0;
	} else if (slo) {
		snprintf(sub->slo_class, sizeof sub->slo_class, "%s", slo->name);
	}
	if ((rc = new_entry(r, sub, sha, &e)))
		return rc;
	if (slo && !l->no_slo) {
		e->job.slo = true;
		e->job.batch = slo->ttft_ms == 0;
		e->job.queueable = e->job.batch || !slo->refuse;
		e->job.ttft_ms = slo->ttft_ms;
		e->job.tpot_ms = slo->tpot_ms;
		e->job.priority = slo->priority;
		e->job.arrival_ms = slo->arrival_ms ? slo->arrival_ms : gw_link_now_ms();
	}
	pthread_mutex_lock(&l->mu);
	int widx = l->closed ? -1 : route_new(l, e, admit, retry_s);
	if (l->closed)
		*admit = GW_ADMIT_NO_WORKER;
	if (widx < 0) {
		bool closed = l->closed;
		if (*admit == GW_ADMIT_QUEUED) {
			lk_table_insert(l, e, -1, 0);
			e->queued_ms = gw_link_now_ms();
			lk_queue_push(l, e);
			pthread_cond_signal(&l->cv); /* the head may go now */
			size_t waiting = l->q_len;
			pthread_mutex_unlock(&l->mu);
			LOOM_DEBUG("request %llu (%s): queued (%zu waiting)", (unsigned long long)sub->req,
				   sub->slo_class, waiting);
			return LOOM_OK;
		}
		pthread_mutex_unlock(&l->mu);
		lk_entry_free(e);
		if (closed)
			return loom_fail(LOOM_EBUSY, "the gateway is shutting down");
		if (*admit == GW_ADMIT_FULL)
			return loom_fail(LOOM_EBUSY, "every worker is busy and the admission queue is "
					 "full (%zu requests waiting); retry in %u s", l->q_cap,
					 *retry_s);
		if (*admit == GW_ADMIT_LATE)
			return loom_fail(LOOM_EBUSY, "no worker can give the first token within the "
					 "'%s' class's %u ms; retry in %u s", sub->slo_class,
					 slo->ttft_ms, *retry_s);
		return loom_fail(LOOM_EBUSY, "no live worker serves model '%s'", sub->model);
	}
	lk_table_insert(l, e, widx, sub->n_prompt);
	lk_worker *w = &l->w[widx];
	uint32_t pipe = e->pipe;
	rc = lk_encode_submit(l, e, NULL, 0, &buf, &len);
	pthread_mutex_unlock(&l->mu);
	int rv = rc ? NNG_ENOMEM : gw_link_send_buf(w, buf, len, 0);
	loom_free(buf);
	if (rv == 0)
		return LOOM_OK;
	pthread_mutex_lock(&l->mu);
	e = detach_if_on(l, sub->req, widx, pipe);
	pthread_mutex_unlock(&l->mu);
	if (!e)
		return LOOM_OK; /* the worker's loss already took it: r reports what becomes of it */
	lk_entry_free(e);
	if (rc)
		return rc; /* lk_encode_submit said why */
	return loom_fail(LOOM_ECLOSED, "cannot send the request to worker %s: %s", w->url,
			 nng_strerror(rv));
}

loom_err gw_link_submit(gw_link *l, gw_req *r, loom_msg_submit *sub)
{
	return gw_link_submit_to(l, r, sub, NULL);
}

loom_err gw_link_submit_to(gw_link *l, gw_req *r, loom_msg_submit *sub, const char *adapter_sha)
{
	gw_admit admit;
	uint32_t retry;
	return submit(l, r, sub, adapter_sha, NULL, &admit, &retry);
}

loom_err gw_link_submit_slo(gw_link *l, gw_req *r, loom_msg_submit *sub, const char *adapter_sha,
			    const gw_link_slo *slo, gw_admit *admit, uint32_t *retry_after_s)
{
	*retry_after_s = 0;
	return submit(l, r, sub, adapter_sha, slo, admit, retry_after_s);
}

