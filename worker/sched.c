/*
 * worker/sched.c — one engine iteration's scheduling: admission, block
 * reservation with preemption by recompute, the batch plan (sequences
 * grouped by adapter into segments), the forward and sampling.
 *
 * Policy (vLLM's iteration-level batching, ordered by SLO):
 *  - order: the waiting queue is kept in TTFT-deadline order (arrival +
 *    ttft_deadline_ms, earliest first; no deadline after, FCFS by arrival);
 *    a preempted sequence goes back to its place in that order.
 *  - admission: the waiting queue in order; a sequence whose model is not
 *    resident or whose adapter is not on the device yet is passed over
 *    (it waits, nobody else does); one whose load failed gets an ERROR. A
 *    sequence first takes the cached blocks of its prefix (prefix cache,
 *    kv.h), then is admitted when the free blocks of its model's pool,
 *    less those promised to sequences admitted before it in this pass,
 *    hold the rest of its context; the first one of a model that does not
 *    fit blocks that model's later ones (FIFO per model), other models go
 *    on. One whose next block a running sequence is still prefilling is
 *    passed over until that block is registered (it then takes it).
 *  - per model, candidates interactive class first (a TTFT deadline or a
 *    TPOT target), then batch; decodes (1 pending token) before prefills;
 *    then deadline order. Decodes always get a slot, prefill chunks share
 *    what is left of max_batch_tokens and of the iteration's prefill cap:
 *    with interactive decodes running, a + b * tokens (the step-time model,
 *    least squares over the last WK_FIT_WINDOW iterations) must stay within
 *    their smallest tpot_target_ms (WK_MIN_CHUNK allowed when the decodes
 *    alone exceed it; no cap before 4 iterations were measured). Before a
 *    sequence joins the batch its blocks are reserved; when the pool is
 *    short a sequence not in the batch yet is preempted, batch class first,
 *    newest first (blocks released, back to the waiting queue), and when
 *    it is the sequence itself (or none is left) it preempts itself. The
 *    first candidate therefore always runs: a request never needs more
 *    than the whole pool (engine.c refuses those).
 * Work per iteration: O(running^2) for ordering candidates and O(batch^2)
 * for grouping (batch <=
 * max_seqs, adapters few).
 */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
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
/* order                                                               */
/* ------------------------------------------------------------------ */

bool wk_sched_before(const seq *a, const seq *b)
{
	if (a->deadline_ms < b->deadline_ms)
		return true;
	if (a->deadline_ms > b->deadline_ms)
		return false;
	return a->order < b->order;
}

void wk_sched_classify(wk_engine *e, seq *s, double arrival_ms)
{
	s->deadline_ms = s->sub.ttft_deadline_ms ? arrival_ms + s->sub.ttft_deadline_ms : INFINITY;
	s->order = e->n_arrived++;
	s->batch = s->sub.ttft_deadline_ms == 0 && s->sub.tpot_target_ms == 0;
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
	if (s->guide && !s->gm) {
		int g = wk_guide_poll(e->guide, s->guide, &s->gm, &code, err, sizeof err);
		if (g < 0) {
			wk_engine_emit_error(e, s->sub.req, code ? code : LOOM_EINVAL, "%s", err);
			return -1;
		}
		if (g == 0)
			return 0;
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
	/* once, when it becomes ready: the CUDA backend starts the upload on its
	 * copy stream now, overlapping the steps before this one runs (a refusal
	 * only means the step that uses it will load it) */
	if (st == WK_RES_READY && ms->fwd)
		(void)wk_fwd_prefetch(ms->fwd, s->ad_dev);
	return st == WK_RES_READY;
}

/* Token ids of block j of s's context into toks[block_size]. */
static void block_tokens(const seq *s, int j, int bs, int32_t *toks)
{
	for (int t = 0; t < bs; t++)
		toks[t] = seq_token(s, (uint32_t)(j * bs + t));
}

/* Whether a running sequence of s's namespace is still to register block
 * j of the same context (it is prefilling it): s then waits and takes it
 * once registered instead of computing it too. */
static bool computed_elsewhere(const wk_engine *e, const seq *s, int j, int bs)
{
	uint32_t end = (uint32_t)(j + 1) * (uint32_t)bs;

	for (int i = 0; i < e->n_running; i++) {
		const seq *r = e->running[i];
		uint32_t t = 0;
		if (r == s || r->dead || r->model != s->model || r->kv.n_keyed > j ||
		    seq_ctx(r) < end || memcmp(r->ns, s->ns, 32))
			continue;
		while (t < end && seq_token(r, t) == seq_token(s, t))
			t++;
		if (t == end)
			return true;
	}
	return false;
}

/* Binds s to its model's pool and takes the cached blocks of its prefix
 * (never its last context token, whose logits it needs; none with prompt
 * logprobs pending: their rows need computing). Then 1 when the free
 * blocks less the pledged ones hold the rest (pledged now), 0 when not,
 * 2 when a running sequence is computing its next block; on 0 and 2 s
 * holds nothing. */
static int take_blocks(wk_engine *e, seq *s, model_slot *ms)
{
	int bs = wk_kvpool_block_size(ms->pool), total, m;
	uint32_t ctx = seq_ctx(s);
	int32_t toks[WK_KV_BLOCK];
	bool cache = bs == WK_KV_BLOCK && wk_kvpool_prefix_cache(ms->pool) && !s->plp_pending;

	if (!s->kv.pool) {
		wk_kv_init(&s->kv, ms->pool);
		wk_kv_set_ns(&s->kv, s->ns);
	}
	if (cache) {
		while ((uint32_t)(s->kv.n_blocks + 1) * (uint32_t)bs < ctx) {
			block_tokens(s, s->kv.n_blocks, bs, toks);
			if (!wk_kv_match(&s->kv, toks))
				break;
		}
	}
	m = s->kv.n_blocks;
	total = (int)((ctx + (uint32_t)bs - 1) / (uint32_t)bs);
	if (wk_kvpool_free_blocks(ms->pool) - ms->pledged < total - m) {
		wk_kv_release(&s->kv);
		return 0;
	}
	if (cache && (uint32_t)(m + 1) * (uint32_t)bs < ctx && computed_elsewhere(e, s, m, bs)) {
		wk_kv_release(&s->kv);
		return 2;
	}
	ms->pledged += total - m;
	ms->prefix.ctx_tokens += ctx;
	ms->prefix.cached_tokens += (uint64_t)s->kv.len;
	if (!s->admitted)
		s->n_cached = (uint32_t)s->kv.len < s->sub.n_prompt ? (uint32_t)s->kv.len
								   : s->sub.n_prompt;
	s->admitted = true;
	return 1;
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
			int t = take_blocks(e, s, ms);
			if (t == 0) {
				ms->blocked = true;
				n_blocked++;
			}
			ok = t == 1;
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
		s->waiting = false;
		if (ok < 0) {
			wk_engine_seq_free(e, s);
			continue;
		}
		e->running[e->n_running++] = s;
	}
}

/* ------------------------------------------------------------------ */
/* preemption                                                          */
/* ------------------------------------------------------------------ */

/* Model mi's running sequence to preempt for more blocks: one not in the
 * batch being built, batch class before interactive, newest first; NULL
 * when none is left. */
static seq *victim(const wk_engine *e, int mi)
{
	seq *best = NULL;

	for (int j = 0; j < e->n_running; j++) {
		seq *s = e->running[j];
		if (s->model != mi || s->dead || s->in_batch)
			continue;
		if (!best || (s->batch && !best->batch) ||
		    (s->batch == best->batch && s->order > best->order))
			best = s;
	}
	return best;
}

/* Releases s's blocks, takes it out of running[] and puts it back on the
 * waiting queue: it will prefill prompt + generated tokens again. */
static void preempt(wk_engine *e, seq *s)
{
	int idx = 0;

	while (idx < e->n_running && e->running[idx] != s)
		idx++;
	memmove(&e->running[idx], &e->running[idx + 1],
		(size_t)(e->n_running - idx - 1) * sizeof *e->running);
	e->n_running--;
	LOOM_DEBUG("engine: KV of '%s' full: %s request %" PRIu64 " preempted after %" PRIu32
		   " tokens (%d blocks back)", e->slots[s->model].m->name,
		   s->batch ? "batch" : "interactive", s->sub.req, s->n_gen, s->kv.n_blocks);
	wk_kv_release(&s->kv);
	s->n_preempted++;
	e->preemptions++;
	wk_engine_wait_insert(e, s);
}

/* Order of the candidates of one model's batch: interactive before batch
 * class (so their blocks are reserved first), decodes before prefills,
 * then deadline and arrival order. */
static bool cand_before(const seq *a, const seq *b)
{
	bool da = pending(a) == 1, db = pending(b) == 1;

	if (a->batch != b->batch)
		return !a->batch;
	if (da != db)
		return da;
	return wk_sched_before(a, b);
}

/* Picks model mi's sequences for this iteration into bseq/bchunk with
 * their blocks reserved. Returns how many. */
static int schedule(wk_engine *e, int mi)
{
	int n = 0, nc = 0, budget = e->max_batch_tokens;
	seq **cand = e->pseq; /* free until plan() */

	for (int k = 0; k < e->n_running; k++) {
		seq *s = e->running[k];
		if (s->model != mi)
			continue;
		s->in_batch = false;
		if (s->dead)
			continue;
		if (pending(s) == 1)
			budget--;
		/* insertion sort: tens of sequences */
		int j = nc++;
		while (j > 0 && cand_before(s, cand[j - 1])) {
			cand[j] = cand[j - 1];
			j--;
		}
		cand[j] = s;
	}
	if (budget < 0)
		budget = 0;
	if (budget > e->it_prefill_cap)
		budget = e->it_prefill_cap;
	for (int k = 0; k < nc; k++) {
		seq *s = cand[k], *v;
		uint32_t pend;
		int chunk;
		loom_err rc;

		if (s->waiting) /* preempted for an earlier candidate */
			continue;
		pend = pending(s);
		chunk = pend == 1 ? 1 : pend < (uint32_t)budget ? (int)pend : budget;
		if (chunk == 0)
			continue;
		while ((rc = wk_kv_reserve(&s->kv, chunk)) == LOOM_EBUSY && (v = victim(e, mi)) &&
		       v != s)
			preempt(e, v);
		if (rc == LOOM_EBUSY) {
			preempt(e, s);
			continue;
		}
		if (rc) {
			s->dead = true;
			wk_engine_emit_error(e, s->sub.req, rc, "cannot grow the KV cache: %s",
					     loom_errmsg());
			continue;
		}
		if (pend > 1) {
			budget -= chunk;
			e->it_prefill_cap -= chunk;
			e->it_prefill += chunk;
		} else {
			e->it_decode++;
		}
		s->in_batch = true;
		e->bseq[n] = s;
		e->bchunk[n] = chunk;
		n++;
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

static bool is_eos(const wk_model *m, int32_t id)
{
	for (int i = 0; i < m->cfg.n_eos; i++)
		if (m->cfg.eos_ids[i] == id)
			return true;
	return false;
}

/* Structured output: the ids s's grammar does not allow next get -inf in
 * logits[vocab] (after the penalties, before logprobs and temperature).
 * When min_tokens leaves nothing (the output is complete, EOS masked), the
 * grammar wins: EOS gets logit 0. False (ERROR emitted, s dead) when no
 * token can continue or the automaton outgrew its limits. */
static bool guide_mask(wk_engine *e, seq *s, const wk_model *m, float *logits, int vocab)
{
	size_t words = ((size_t)vocab + 31) / 32;
	bool any = false;
	loom_err rc;

	if (e->guide_words < words) {
		uint32_t *g = loom_realloc(e->guide_mask, words * sizeof *g);
		if (!g) {
			rc = loom_fail(LOOM_ENOMEM, "out of memory");
			goto fail;
		}
		e->guide_mask = g;
		e->guide_words = words;
	}
	if ((rc = loom_grammar_matcher_fill_mask(s->gm, e->guide_mask)))
		goto fail;
	for (size_t w = 0; w < words; w++) {
		uint32_t b = e->guide_mask[w];
		int32_t base = (int32_t)(w * 32), end = base + 32 < vocab ? base + 32 : vocab;
		for (int32_t id = base; id < end; id++) {
			if (!(b >> (id - base) & 1))
				logits[id] = -INFINITY;
			else if (logits[id] > -INFINITY)
				any = true;
		}
	}
	if (!any && loom_grammar_matcher_can_end(s->gm) && m->cfg.n_eos > 0) {
		logits[m->cfg.eos_ids[0]] = 0.0f;
		any = true;
	}
	if (any)
		return true;
	rc = loom_fail(LOOM_EINVAL, "no token of the vocabulary can continue the output");
fail:
	s->dead = true;
	wk_engine_emit_error(e, s->sub.req, rc, "structured output after %" PRIu32 " tokens: %s",
			     s->n_gen, loom_errmsg());
	return false;
}

/* Samples the next token of s from its logits row (processed in place by
 * the sampling controls and, with a guide, its grammar's mask) and records
 * the item, with the token's logprobs and, once, the prompt's. */
static void produce(wk_engine *e, seq *s, float *logits, int *n_items)
{
	const wk_model *m = e->slots[s->model].m;
	const loom_sampling *sp = &s->sub.sampling;
	loom_step_item *it = &e->items[*n_items];
	int32_t id;

	wk_sample_process(logits, m->cfg.vocab, sp, &s->hist, s->n_gen, m->cfg.eos_ids,
			  m->cfg.n_eos);
	if (s->gm && !guide_mask(e, s, m, logits, m->cfg.vocab))
		return;
	id = wk_sample(logits, m->cfg.vocab, sp, s->n_gen, e->sample_scratch);
	if (s->gm && loom_grammar_matcher_accept(s->gm, id)) {
		s->dead = true;
		wk_engine_emit_error(e, s->sub.req, LOOM_EINTERNAL, "structured output: sampled id "
				     "%" PRId32 " outside its grammar's mask: %s", id, loom_errmsg());
		return;
	}
	*it = (loom_step_item){ 0 };
	if (sp->logprobs) {
		int n = *n_items;
		wk_logprobs(logits, m->cfg.vocab, id, (int)sp->top_logprobs, &e->item_lp[n],
			    &e->item_top_ids[(size_t)n * LOOM_MAX_LOGPROBS],
			    &e->item_top_lp[(size_t)n * LOOM_MAX_LOGPROBS]);
		it->lp = (loom_logprobs){ .n = 1, .k = sp->top_logprobs, .lp = &e->item_lp[n],
					  .top_ids = &e->item_top_ids[(size_t)n * LOOM_MAX_LOGPROBS],
					  .top_lp = &e->item_top_lp[(size_t)n * LOOM_MAX_LOGPROBS] };
	}
	if (s->plp_pending) {
		it->prompt_lp = s->plp; /* s outlives the STEP's emission */
		s->plp_pending = false;
	}

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
	wk_hist_add(&s->hist, id);
	e->tokens_out++;
	if (is_stop(m, s, id) || (s->gm && is_eos(m, id))) /* a guide ends at EOS, ignore_eos or not */
		s->finish = LOOM_FINISH_STOP;
	else if (s->n_gen >= s->limit)
		s->finish = LOOM_FINISH_LENGTH;
	e->item_ids[*n_items] = id;
	it->req = s->sub.req;
	it->n_ids = 1;
	it->ids = &e->item_ids[*n_items];
	it->finish = s->finish;
	it->n_prompt = s->sub.n_prompt;
	it->n_cached = s->n_cached;
	(*n_items)++;
}

/* Whether a sequence of the plan prefills prompt rows whose logits its
 * prompt logprobs need (positions before n_prompt - 1). */
static bool wants_rows(const wk_engine *e, int n)
{
	for (int i = 0; i < n; i++) {
		const seq *s = e->pseq[i];
		if (s->plp_pending && (uint32_t)s->kv.len + 1 < s->sub.n_prompt)
			return true;
	}
	return false;
}

/* After an all-rows forward: the prompt logprobs of each sequence's rows
 * (raw logits: no penalties apply to the prompt). Row t of sequence i is
 * position kv.len - chunk + t and predicts the prompt token after it. */
static void prompt_logprobs(wk_engine *e, model_slot *ms, int n)
{
	int vocab = ms->m->cfg.vocab;

	for (int i = 0; i < n; i++) {
		seq *s = e->pseq[i];
		int chunk = e->seq_start[i + 1] - e->seq_start[i];
		if (!s->plp_pending)
			continue;
		for (int t = 0; t < chunk; t++) {
			uint32_t pos = (uint32_t)(s->kv.len - chunk + t);
			if (pos + 1 >= s->sub.n_prompt)
				break;
			const float *row = ms->all_logits + (size_t)(e->seq_start[i] + t) * vocab;
			size_t k = s->plp.k;
			wk_logprobs(row, vocab, s->sub.prompt_ids[pos + 1], (int)k, &s->plp.lp[pos],
				    s->plp.top_ids + pos * k, s->plp.top_lp + pos * k);
		}
	}
}

/* Registers s's blocks that the forward filled (prefix cache). */
static void commit_blocks(seq *s)
{
	int32_t toks[WK_KV_BLOCK];

	while ((s->kv.n_keyed + 1) * WK_KV_BLOCK <= s->kv.len) {
		block_tokens(s, s->kv.n_keyed, WK_KV_BLOCK, toks);
		wk_kv_commit(&s->kv, toks);
	}
}

void wk_sched_run_model(wk_engine *e, int mi, int *n_items)
{
	model_slot *ms = &e->slots[mi];
	int n = schedule(e, mi), nseg, vocab;
	bool all;
	wk_batch b;
	loom_err rc;

	if (n == 0)
		return;
	nseg = plan(e, n);
	vocab = ms->m->cfg.vocab;
	all = wants_rows(e, n);
	if (all && !ms->all_logits) {
		size_t rows = (size_t)e->max_batch_tokens + (size_t)e->max_seqs;
		ms->all_logits = loom_malloc(rows * (size_t)vocab * sizeof(float));
		if (!ms->all_logits) {
			all = false;
			for (int i = 0; i < n; i++) {
				seq *s = e->pseq[i];
				if (!s->plp_pending || s->dead)
					continue;
				s->dead = true;
				wk_engine_emit_error(e, s->sub.req, LOOM_ENOMEM,
						     "worker out of memory for prompt logprobs");
			}
		}
	}
	b = (wk_batch){ .n_seqs = n, .seq_start = e->seq_start, .tokens = e->tokens,
			.kv = e->kvs, .all_logits = all, .n_segs = nseg,
			.seg_start = e->seg_start, .seg_adapter = e->seg_ad };
	rc = wk_fwd_run(ms->fwd, &b, all ? ms->all_logits : ms->logits);
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
	if (all)
		prompt_logprobs(e, ms, n);
	if (wk_kvpool_prefix_cache(ms->pool) && wk_kvpool_block_size(ms->pool) == WK_KV_BLOCK)
		for (int i = 0; i < n; i++)
			commit_blocks(e->pseq[i]);
	for (int i = 0; i < n; i++) {
		seq *s = e->pseq[i];
		size_t row = all ? (size_t)e->seq_start[i + 1] - 1 : (size_t)i;
		if ((uint32_t)s->kv.len == seq_ctx(s) && !s->dead)
			produce(e, s, (all ? ms->all_logits : ms->logits) + row * vocab, n_items);
	}
}

/* ------------------------------------------------------------------ */
/* step-time model and the iteration's prefill cap                     */
/* ------------------------------------------------------------------ */

/* Least squares of ms on tokens over the window. With (almost) one token
 * count in the window the slope cannot be seen: the last slope is kept
 * and only the intercept follows. The slope is never negative. */
static void fit(wk_engine *e)
{
	double sx = 0, sy = 0, sxx = 0, sxy = 0, n = e->fit_n, mx, my, vx;

	for (int i = 0; i < e->fit_n; i++) {
		sx += e->fit_x[i];
		sy += e->fit_y[i];
	}
	mx = sx / n;
	my = sy / n;
	for (int i = 0; i < e->fit_n; i++) {
		double dx = e->fit_x[i] - mx;
		sxx += dx * dx;
		sxy += dx * (e->fit_y[i] - my);
	}
	vx = sxx / n;
	if (vx > 1.0 && e->fit_n >= 3)
		e->fit_b = sxy / sxx;
	if (e->fit_b < 0)
		e->fit_b = 0;
	e->fit_a = my - e->fit_b * mx;
	if (e->fit_a < 0) {
		/* keep a + b * mx = my with a >= 0 */
		e->fit_a = 0;
		e->fit_b = mx > 0 ? my / mx : 0;
	}
}

void wk_sched_begin(wk_engine *e)
{
	int decodes = 0;
	uint32_t tpot = 0;

	e->it_prefill = e->it_decode = 0;
	e->it_prefill_cap = INT32_MAX;
	e->it_cap = -1;
	for (int i = 0; i < e->n_running; i++) {
		const seq *s = e->running[i];
		if (s->dead || pending(s) != 1)
			continue;
		decodes++;
		if (s->sub.tpot_target_ms && (!tpot || s->sub.tpot_target_ms < tpot))
			tpot = s->sub.tpot_target_ms;
	}
	if (!tpot || e->fit_b <= 0 || (!e->fit_frozen && e->fit_n < 4))
		return; /* nothing to protect, or no model yet */
	/* a + b * (decodes + cap) <= tpot */
	double room = ((double)tpot - e->fit_a) / e->fit_b - decodes;
	int cap = room <= 0 ? 0 : room >= INT32_MAX ? INT32_MAX : (int)floor(room);
	/* the decodes alone miss it already: holding prefills back would only
	 * delay everyone else */
	if (cap < WK_MIN_CHUNK && e->fit_a + e->fit_b * decodes > (double)tpot)
		cap = WK_MIN_CHUNK;
	e->it_prefill_cap = cap;
	e->it_cap = cap;
}

void wk_sched_end(wk_engine *e, double ms)
{
	int tokens = e->it_prefill + e->it_decode;

	e->step_ms = e->steps ? 0.8 * e->step_ms + 0.2 * ms : ms;
	e->steps++;
	if (tokens == 0 || e->fit_frozen)
		return;
	e->fit_x[e->fit_pos] = tokens;
	e->fit_y[e->fit_pos] = ms;
	e->fit_pos = (e->fit_pos + 1) % WK_FIT_WINDOW;
	if (e->fit_n < WK_FIT_WINDOW)
		e->fit_n++;
	fit(e);
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
	wk_sched_info si = { 0 };
	uint64_t total = 0, free_slots = 0;

	st.queued = e->n_waiting;
	st.running = (uint32_t)e->n_running;
	for (const seq *s = e->wait_head; s; s = s->next)
		*(s->batch ? &si.queued_tokens_batch : &si.queued_tokens_slo) += to_prefill(s);
	for (int i = 0; i < e->n_running; i++) {
		const seq *s = e->running[i];
		*(s->batch ? &si.queued_tokens_batch : &si.queued_tokens_slo) += to_prefill(s);
	}
	st.queued_tokens = si.queued_tokens_batch + si.queued_tokens_slo;
	si.step_ms = e->step_ms;
	si.fit_a = e->fit_a;
	si.fit_b = e->fit_b;
	si.fit_n = e->fit_frozen ? WK_FIT_WINDOW : e->fit_n;
	si.last_decode = e->it_decode;
	si.last_prefill = e->it_prefill;
	si.last_cap = e->it_cap;
	for (int i = 0; i < e->n_models; i++) {
		const wk_kvpool *p = e->slots[i].pool;
		if (!p)
			continue;
		total += (uint64_t)wk_kvpool_n_blocks(p) * (uint64_t)wk_kvpool_block_size(p);
		free_slots += (uint64_t)wk_kvpool_free_blocks(p) * (uint64_t)wk_kvpool_block_size(p);
	}
	for (int i = 0; i < e->n_models; i++) {
		model_slot *ms = &e->slots[i];
		wk_kv_prefix_stats ps = { 0 };
		if (ms->pool)
			wk_kvpool_prefix_stats(ms->pool, &ps);
		ms->prefix.keyed_blocks = (uint32_t)ps.keyed;
		ms->prefix.cached_blocks = (uint32_t)ps.cached;
		st.prompt_tokens += ms->prefix.ctx_tokens;
		st.cached_tokens += ms->prefix.cached_tokens;
		st.cached_blocks += ms->prefix.keyed_blocks;
	}
	st.kv_total = total > UINT32_MAX ? UINT32_MAX : (uint32_t)total;
	st.kv_free = free_slots > UINT32_MAX ? UINT32_MAX : (uint32_t)free_slots;
	st.step_ms = (float)e->step_ms;
	st.steps = e->steps;
	st.tokens_out = e->tokens_out;
	pthread_mutex_lock(&e->mu);
	e->snap = st;
	e->snap_preemptions = e->preemptions;
	e->snap_sched = si;
	for (int i = 0; i < e->n_models; i++)
		e->snap_prefix[i] = e->slots[i].prefix;
	pthread_mutex_unlock(&e->mu);
}
