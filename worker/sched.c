/*
 * worker/sched.c — one engine iteration's scheduling: admission, block
 * reservation with preemption by recompute, the batch plan (sequences
 * grouped by adapter into segments), the forward and sampling.
 *
 * Policy (vLLM's, iteration-level):
 *  - admission: the waiting queue in order; a sequence whose model is not
 *    resident or whose adapter is not on the device yet is passed over
 *    (it waits, nobody else does); one whose load failed gets an ERROR. A
 *    sequence is admitted when the free blocks of its model's pool, less
 *    those promised to sequences admitted before it in this pass, hold its
 *    whole pending context; the first one of a model that does not fit
 *    blocks that model's later ones (FIFO per model), other models go on.
 *  - per model, running sequences in admission order: decodes (1 pending
 *    token) always get a slot, prefill chunks share what is left of
 *    max_batch_tokens. Before a sequence joins the batch its blocks are
 *    reserved; when the pool is short, the most recently admitted running
 *    sequence of the model after it is preempted (blocks released, back to
 *    the front of the waiting queue), and when none is left the sequence
 *    preempts itself. The oldest sequence therefore always runs: a request
 *    never needs more than the whole pool (engine.c refuses those).
 * Work per iteration: O(running) plus O(batch^2) for grouping (batch <=
 * max_seqs, adapters few).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../common/alloc.h"
#include "../common/log.h"
#include "engine_int.h"
#include "sample.h"

static uint32_t pending(const seq *s)
{
	return seq_ctx(s) - (uint32_t)s->kv.len;
}

/* ------------------------------------------------------------------ */
/* admission                                                           */
/* ------------------------------------------------------------------ */

/* Whether s may run now: its model attached and its adapter on the device.
 * A failed load emits the request's ERROR and returns -1. */
static int ready(wk_engine *e, seq *s)
{
	model_slot *ms = &e->slots[s->model];
	char err[768];
	loom_err code = LOOM_EIO;
	wk_res_state st;

	if (ms->failed) {
		wk_engine_emit_error(e, s->sub.req, ms->err_code ? ms->err_code : LOOM_EIO, "%s",
				     ms->err);
		return -1;
	}
	if (!ms->m)
		return 0;
	if (!s->ad || s->ad_dev)
		return 1;
	st = wk_res_adapter_state(e->res, s->ad, &s->ad_dev, &code, err, sizeof err);
	if (st == WK_RES_FAILED) {
		wk_engine_emit_error(e, s->sub.req, code ? code : LOOM_EIO, "%s", err);
		return -1;
	}
	return st == WK_RES_READY;
}

void wk_sched_admit(wk_engine *e)
{
	seq **pp = &e->wait_head, *prev = NULL;
	int n_blocked = 0, n_attached = 0;

	for (int i = 0; i < e->n_models; i++) {
		e->slots[i].blocked = false;
		e->slots[i].pledged = 0;
		n_attached += e->slots[i].m != NULL || e->slots[i].failed;
	}
	while (*pp && e->n_running < e->max_seqs && n_blocked < n_attached) {
		seq *s = *pp;
		model_slot *ms = &e->slots[s->model];
		int ok = ms->blocked ? 0 : ready(e, s);

		if (ok > 0) {
			int bs = wk_kvpool_block_size(ms->pool);
			int need = (int)((seq_ctx(s) + (uint32_t)bs - 1) / (uint32_t)bs);
			if (wk_kvpool_free_blocks(ms->pool) - ms->pledged < need) {
				ms->blocked = true;
				n_blocked++;
				ok = 0;
			}
		}
		if (ok == 0) {
			prev = s;
			pp = &s->next;
			continue;
		}
		*pp = s->next;
		if (e->wait_tail == s)
			e->wait_tail = prev;
		e->n_waiting--;
		s->next = NULL;
		if (ok < 0) {
			wk_engine_seq_free(e, s);
			continue;
		}
		ms->pledged += (int)((seq_ctx(s) + (uint32_t)wk_kvpool_block_size(ms->pool) - 1) /
				     (uint32_t)wk_kvpool_block_size(ms->pool));
		if (!s->kv.pool)
			wk_kv_init(&s->kv, ms->pool);
		e->running[e->n_running++] = s;
	}
}

/* ------------------------------------------------------------------ */
/* preemption                                                          */
/* ------------------------------------------------------------------ */

/* Running index of model mi's most recently admitted sequence after
 * index after, or -1. */
static int victim(const wk_engine *e, int mi, int after)
{
	for (int j = e->n_running - 1; j > after; j--)
		if (e->running[j]->model == mi && !e->running[j]->dead)
			return j;
	return -1;
}

/* Releases running[idx]'s blocks and puts it at the front of the waiting
 * queue: it will prefill prompt + generated tokens again. */
static void preempt(wk_engine *e, int idx)
{
	seq *s = e->running[idx];

	memmove(&e->running[idx], &e->running[idx + 1],
		(size_t)(e->n_running - idx - 1) * sizeof *e->running);
	e->n_running--;
	LOOM_DEBUG("engine: KV of '%s' full: request %" PRIu64 " preempted after %" PRIu32
		   " tokens (%d blocks back)", e->slots[s->model].m->name, s->sub.req, s->n_gen,
		   s->kv.n_blocks);
	wk_kv_release(&s->kv);
	s->n_preempted++;
	e->preemptions++;
	wk_engine_wait_push_front(e, s);
}

/* Picks model mi's sequences for this iteration into bseq/bchunk (running
 * order) with their blocks reserved. Returns how many. */
static int schedule(wk_engine *e, int mi)
{
	int n = 0, budget = e->max_batch_tokens, i = 0;

	for (int k = 0; k < e->n_running; k++) {
		seq *s = e->running[k];
		if (s->model == mi && !s->dead && pending(s) == 1)
			budget--;
	}
	if (budget < 0)
		budget = 0;
	while (i < e->n_running) {
		seq *s = e->running[i];
		uint32_t pend;
		int chunk, v;
		loom_err rc;

		if (s->model != mi || s->dead) {
			i++;
			continue;
		}
		pend = pending(s);
		chunk = pend == 1 ? 1 : pend < (uint32_t)budget ? (int)pend : budget;
		if (chunk == 0) {
			i++;
			continue;
		}
		while ((rc = wk_kv_reserve(&s->kv, chunk)) == LOOM_EBUSY &&
		       (v = victim(e, mi, i)) >= 0)
			preempt(e, v);
		if (rc == LOOM_EBUSY) {
			preempt(e, i); /* the next sequence moved into index i */
			continue;
		}
		if (rc) {
			s->dead = true;
			wk_engine_emit_error(e, s->sub.req, rc, "cannot grow the KV cache: %s",
					     loom_errmsg());
			i++;
			continue;
		}
		if (pend > 1)
			budget -= chunk;
		e->bseq[n] = s;
		e->bchunk[n] = chunk;
		n++;
		i++;
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* batch plan, forward, sampling                                       */
/* ------------------------------------------------------------------ */

/* Orders the n scheduled sequences by adapter (groups in order of first
 * appearance, running order inside) into pseq/pchunk, writes their tokens,
 * seq_start, kvs and the segments. Returns the number of segments that
 * go into the batch (0 when no sequence uses an adapter). */
static int plan(wk_engine *e, int n)
{
	int np = 0, nseg = 0, T = 0;
	bool any = false;

	for (int a = 0; a < n; a++) {
		if (!e->bseq[a])
			continue;
		const wk_res_ad *g = e->bseq[a]->ad;
		e->seg_start[nseg] = T;
		e->seg_ad[nseg++] = g ? e->bseq[a]->ad_dev : NULL;
		any |= g != NULL;
		for (int b = a; b < n; b++) {
			seq *s = e->bseq[b];
			if (!s || s->ad != g)
				continue;
			int chunk = e->bchunk[b];
			e->pseq[np] = s;
			e->pchunk[np] = chunk;
			e->seq_start[np] = T;
			e->kvs[np] = &s->kv;
			for (int t = 0; t < chunk; t++)
				e->tokens[T + t] = seq_token(s, (uint32_t)(s->kv.len + t));
			T += chunk;
			np++;
			e->bseq[b] = NULL;
		}
	}
	e->seq_start[np] = T;
	e->seg_start[nseg] = T;
	return any ? nseg : 0;
}

static bool is_stop(const wk_model *m, const seq *s, int32_t id)
{
	if (!s->sub.sampling.ignore_eos)
		for (int i = 0; i < m->cfg.n_eos; i++)
			if (m->cfg.eos_ids[i] == id)
				return true;
	for (uint32_t i = 0; i < s->sub.sampling.n_stop_ids; i++)
		if (s->sub.sampling.stop_ids[i] == id)
			return true;
	return false;
}

/* Samples the next token of s from logits and records the item. */
static void produce(wk_engine *e, seq *s, const float *logits, int *n_items)
{
	const wk_model *m = e->slots[s->model].m;
	int32_t id = wk_sample(logits, m->cfg.vocab, &s->sub.sampling, s->n_gen,
			       e->sample_scratch);
	loom_step_item *it = &e->items[*n_items];

	if (s->n_gen == s->cap_gen) {
		uint32_t cap = s->cap_gen ? 2 * s->cap_gen : 16;
		if (cap > s->limit)
			cap = s->limit;
		int32_t *g = loom_realloc(s->gen, (size_t)cap * sizeof *g);
		if (!g) {
			s->dead = true;
			wk_engine_emit_error(e, s->sub.req, LOOM_ENOMEM,
					     "worker out of memory after %" PRIu32 " tokens", s->n_gen);
			return;
		}
		s->gen = g;
		s->cap_gen = cap;
	}
	s->gen[s->n_gen++] = id;
	e->tokens_out++;
	if (is_stop(m, s, id))
		s->finish = LOOM_FINISH_STOP;
	else if (s->n_gen >= s->limit)
		s->finish = LOOM_FINISH_LENGTH;
	e->item_ids[*n_items] = id;
	it->req = s->sub.req;
	it->n_ids = 1;
	it->ids = &e->item_ids[*n_items];
	it->finish = s->finish;
	it->n_prompt = s->sub.n_prompt;
	(*n_items)++;
}

void wk_sched_run_model(wk_engine *e, int mi, int *n_items)
{
	model_slot *ms = &e->slots[mi];
	int n = schedule(e, mi), nseg;
	wk_batch b;
	loom_err rc;

	if (n == 0)
		return;
	nseg = plan(e, n);
	b = (wk_batch){ .n_seqs = n, .seq_start = e->seq_start, .tokens = e->tokens,
			.kv = e->kvs, .all_logits = 0, .n_segs = nseg,
			.seg_start = e->seg_start, .seg_adapter = e->seg_ad };
	rc = wk_forward(ms->m, &b, ms->scratch, ms->logits);
	if (rc) {
		char why[256];
		snprintf(why, sizeof why, "%s", loom_errmsg());
		LOOM_ERROR("engine: forward of %d sequences on '%s' failed: %s: %s", n,
			   ms->m->name, loom_strerror(rc), why);
		for (int i = 0; i < n; i++) {
			e->pseq[i]->dead = true;
			wk_engine_emit_error(e, e->pseq[i]->sub.req, rc, "forward pass failed: %s",
					     why);
		}
		return;
	}
	for (int i = 0; i < n; i++) {
		seq *s = e->pseq[i];
		if ((uint32_t)s->kv.len == seq_ctx(s))
			produce(e, s, ms->logits + (size_t)i * ms->m->cfg.vocab, n_items);
	}
}

/* ------------------------------------------------------------------ */
/* stats                                                               */
/* ------------------------------------------------------------------ */

/* Context tokens of s still to prefill (not counting a decode's token). */
static uint32_t to_prefill(const seq *s)
{
	uint32_t p = pending(s);
	return s->n_gen > 0 && p > 0 ? p - 1 : p;
}

void wk_sched_publish_stats(wk_engine *e)
{
	loom_msg_stats st = { 0 };
	uint64_t total = 0, free_slots = 0;

	st.queued = e->n_waiting;
	st.running = (uint32_t)e->n_running;
	for (const seq *s = e->wait_head; s; s = s->next)
		st.queued_tokens += to_prefill(s);
	for (int i = 0; i < e->n_running; i++)
		st.queued_tokens += to_prefill(e->running[i]);
	for (int i = 0; i < e->n_models; i++) {
		const wk_kvpool *p = e->slots[i].pool;
		if (!p)
			continue;
		total += (uint64_t)wk_kvpool_n_blocks(p) * (uint64_t)wk_kvpool_block_size(p);
		free_slots += (uint64_t)wk_kvpool_free_blocks(p) * (uint64_t)wk_kvpool_block_size(p);
	}
	st.kv_total = total > UINT32_MAX ? UINT32_MAX : (uint32_t)total;
	st.kv_free = free_slots > UINT32_MAX ? UINT32_MAX : (uint32_t)free_slots;
	st.step_ms = (float)e->step_ms;
	st.steps = e->steps;
	st.tokens_out = e->tokens_out;
	pthread_mutex_lock(&e->mu);
	e->snap = st;
	e->snap_preemptions = e->preemptions;
	pthread_mutex_unlock(&e->mu);
}
