/*
 * worker/engine.c — the engine's inbox, request validation, adapters, thread
 * and lifecycle (see engine.h for the contract; sched.c runs the
 * iterations' admission, preemption, batch plan and sampling).
 *
 * Data: an inbox (singly linked command list, under mu) filled by any
 * thread; on the engine thread a list of waiting sequences (no KV blocks;
 * deadline order, sched.c)
 * and an array of admitted ones (running[], admission order, each holding
 * blocks of its model's pool). The workload is tens of running sequences
 * and possibly thousands waiting, so running[] is scanned every iteration
 * and the waiting list at admission (until every model is blocked) and
 * cancel. Models and adapters belong to the residency (residency.h): a
 * SUBMIT pins its model and adapter on the caller's thread (which starts
 * their loads: prefetch), and its sequence waits until both are on the
 * device; the engine attaches resident models to slots (engine_models.c).
 * All batch buffers are sized at create for max_seqs and max_batch_tokens:
 * a steady-state iteration allocates nothing but a sequence's growing
 * token list and what wk_forward grows once.
 */
#include "engine_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/alloc.h"
#include "../common/log.h"
#include "../common/sha256.h"
#include "sample.h"

/* ------------------------------------------------------------------ */
/* helpers                                                             */
/* ------------------------------------------------------------------ */

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sub_fini(loom_msg_submit *s)
{
	loom_free(s->prompt_ids);
	loom_sampling_fini(&s->sampling);
	s->prompt_ids = NULL;
}

void wk_engine_seq_free(wk_engine *e, seq *s)
{
	if (!s)
		return;
	wk_kv_fini(&s->kv);
	wk_res_adapter_release(e->res, s->ad);
	wk_res_model_release(e->res, s->model);
	sub_fini(&s->sub);
	wk_hist_fini(&s->hist);
	wk_guide_release(e->guide, s->guide);
	loom_free(s->plp.lp);
	loom_free(s->plp.top_ids);
	loom_free(s->plp.top_lp);
	loom_free(s->gen);
	loom_free(s);
}

void wk_engine_emit_error(wk_engine *e, uint64_t req, loom_err code, const char *fmt, ...)
{
	char text[512];
	va_list ap;
	loom_msg m = { .type = LOOM_MSG_ERROR };

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	m.u.error.req = req;
	m.u.error.code = (uint32_t)code;
	m.u.error.message = text;
	e->emit(e->ctx, &m);
}

static void emit_abort(wk_engine *e, const seq *s)
{
	loom_step_item it = { .req = s->sub.req, .finish = LOOM_FINISH_ABORT,
			      .n_prompt = s->sub.n_prompt };
	loom_msg m = { .type = LOOM_MSG_STEP };

	m.u.step.n_items = 1;
	m.u.step.items = &it;
	e->emit(e->ctx, &m);
}

const wk_model *wk_engine_find_model(const wk_engine *e, const char *name)
{
	return wk_res_model_lent(e->res, name);
}

wk_res *wk_engine_residency(wk_engine *e)
{
	return e->res;
}

void wk_engine_wait_insert(wk_engine *e, seq *s)
{
	seq **pp = &e->wait_head;

	/* the common case, FCFS arrivals of one class, appends at once */
	if (e->wait_tail && !wk_sched_before(s, e->wait_tail))
		pp = &e->wait_tail->next;
	while (*pp && !wk_sched_before(s, *pp))
		pp = &(*pp)->next;
	s->next = *pp;
	*pp = s;
	if (!s->next)
		e->wait_tail = s;
	s->waiting = true;
	e->n_waiting++;
}

void wk_engine_seq_ns(wk_engine *e, seq *s)
{
	/* "loom.kv.1", the model's name (its pool is the model's own: a model
	 * replaced under its name gets a new pool) and the adapter's identity */
	uint8_t buf[10 + LOOM_NAME_MAX + 1 + 32] = "loom.kv.1";

	snprintf((char *)buf + 10, LOOM_NAME_MAX, "%s", e->slots[s->model].name);
	if (s->ad) {
		buf[10 + LOOM_NAME_MAX] = 1;
		wk_res_adapter_id(s->ad, buf + 10 + LOOM_NAME_MAX + 1);
	}
	loom_sha256(buf, sizeof buf, s->ns);
}

void wk_engine_prefix_info(wk_engine *e, int mi, wk_prefix_info *out)
{
	*out = (wk_prefix_info){ 0 };
	pthread_mutex_lock(&e->mu);
	for (int i = 0; i < WK_RES_MAX_MODELS; i++) {
		const wk_prefix_info *p = &e->snap_prefix[i];
		if (mi >= 0 && i != mi)
			continue;
		out->ctx_tokens += p->ctx_tokens;
		out->cached_tokens += p->cached_tokens;
		out->keyed_blocks += p->keyed_blocks;
		out->cached_blocks += p->cached_blocks;
	}
	pthread_mutex_unlock(&e->mu);
}

/* ------------------------------------------------------------------ */
/* inbox (any thread)                                                  */
/* ------------------------------------------------------------------ */

static void inbox_push(wk_engine *e, cmd *c)
{
	pthread_mutex_lock(&e->mu);
	if (e->inbox_tail)
		e->inbox_tail->next = c;
	else
		e->inbox_head = c;
	e->inbox_tail = c;
	if (c->kind == CMD_SUBMIT) {
		e->inbox_submits++;
		e->inbox_tokens += c->sub.n_prompt;
	}
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

static int32_t *dup_ids(const int32_t *ids, uint32_t n, bool *fail)
{
	int32_t *p;

	if (n == 0)
		return NULL;
	p = loom_malloc((size_t)n * sizeof *p);
	if (!p) {
		*fail = true;
		return NULL;
	}
	memcpy(p, ids, (size_t)n * sizeof *p);
	return p;
}

loom_err wk_engine_submit_from(wk_engine *e, const loom_msg_submit *s, uint64_t owner)
{
	bool fail = false;
	cmd *c = loom_calloc(1, sizeof *c);

	if (!c)
		return loom_fail(LOOM_ENOMEM, "engine: out of memory queueing request %" PRIu64,
				 s->req);
	c->kind = CMD_SUBMIT;
	c->owner = owner;
	c->sub = *s;
	c->model = -1;
	c->arrival_ms = now_ms();
	c->sub.prompt_ids = dup_ids(s->prompt_ids, s->n_prompt, &fail);
	if (loom_sampling_copy(&c->sub.sampling, &s->sampling))
		fail = true;
	if (fail) {
		sub_fini(&c->sub);
		loom_free(c);
		return loom_fail(LOOM_ENOMEM, "engine: out of memory copying request %" PRIu64,
				 s->req);
	}
	/* pin the model and the adapter now: their loads start with the
	 * request's arrival, not when it is scheduled */
	c->model = wk_res_model_find(e->res, s->model);
	if (c->model >= 0) {
		wk_res_model_acquire(e->res, c->model);
		if (s->adapter[0])
			c->ad = wk_res_adapter_acquire(e->res, c->model, s->adapter);
	}
	inbox_push(e, c);
	return LOOM_OK;
}

loom_err wk_engine_submit(wk_engine *e, const loom_msg_submit *s)
{
	return wk_engine_submit_from(e, s, 0);
}

static void push_simple(wk_engine *e, int kind, uint64_t req, uint64_t owner)
{
	cmd *c = loom_calloc(1, sizeof *c);

	if (!c) {
		LOOM_ERROR("engine: out of memory queueing a cancel; request %" PRIu64
			   " keeps running", req);
		return;
	}
	c->kind = kind;
	c->req = req;
	c->owner = owner;
	inbox_push(e, c);
}

void wk_engine_cancel(wk_engine *e, uint64_t req)
{
	push_simple(e, CMD_CANCEL, req, 0);
}

void wk_engine_cancel_owner(wk_engine *e, uint64_t owner)
{
	push_simple(e, CMD_CANCEL_OWNER, 0, owner);
}

loom_err wk_engine_add_adapter(wk_engine *e, const char *model_name, ad_adapter *a)
{
	return wk_res_adapter_give(e->res, model_name, a);
}

void wk_engine_stats(wk_engine *e, loom_msg_stats *out)
{
	pthread_mutex_lock(&e->mu);
	*out = e->snap;
	out->queued += e->inbox_submits;
	out->queued_tokens += e->inbox_tokens;
	out->fit_a_ms = e->snap_sched.fit_n ? (float)e->snap_sched.fit_a : 0.f;
	out->fit_b_ms = e->snap_sched.fit_n ? (float)e->snap_sched.fit_b : 0.f;
	out->queued_tokens_slo = e->snap_sched.queued_tokens_slo;
	pthread_mutex_unlock(&e->mu);
}

wk_backend_kind wk_engine_backend(const wk_engine *e)
{
	return e->backend;
}

void wk_engine_sched_info(wk_engine *e, wk_sched_info *out)
{
	pthread_mutex_lock(&e->mu);
	*out = e->snap_sched;
	pthread_mutex_unlock(&e->mu);
}

void wk_engine_set_step_model(wk_engine *e, double a, double b)
{
	e->fit_frozen = b > 0;
	if (b > 0) {
		e->fit_a = a;
		e->fit_b = b;
	}
}

uint64_t wk_engine_preemptions(wk_engine *e)
{
	uint64_t n;

	pthread_mutex_lock(&e->mu);
	n = e->snap_preemptions;
	pthread_mutex_unlock(&e->mu);
	return n;
}

/* ------------------------------------------------------------------ */
/* engine thread: drain, validate, cancel, adapters                    */
/* ------------------------------------------------------------------ */

static bool is_live(const wk_engine *e, uint64_t req)
{
	for (int i = 0; i < e->n_running; i++)
		if (e->running[i]->sub.req == req && !e->running[i]->dead)
			return true;
	for (const seq *s = e->wait_head; s; s = s->next)
		if (s->sub.req == req)
			return true;
	return false;
}

/* Prompt tokens of s proper: a resumed request's prompt_ids end with the
 * n_generated tokens it already produced (checked < n_prompt first). */
static uint32_t own_prompt(const loom_msg_submit *s)
{
	return s->n_prompt - s->n_generated;
}

/* KV positions s can ever hold: the last sampled token is never fed. */
static uint64_t max_positions(const loom_msg_submit *s, uint32_t limit)
{
	return (uint64_t)own_prompt(s) + limit - 1;
}

/* The sampling controls of version 2 (penalties, min_p, min_tokens,
 * logit_bias, logprobs); false after emitting the ERROR. */
static bool check_controls(wk_engine *e, const loom_msg_submit *s, const loom_model_config *c,
			   uint32_t limit)
{
	const loom_sampling *sp = &s->sampling;
	const char *bad = NULL;

	if (!(fabsf(sp->presence_penalty) <= 2.0f))
		bad = "sampling.presence_penalty must be in [-2, 2]";
	else if (!(fabsf(sp->frequency_penalty) <= 2.0f))
		bad = "sampling.frequency_penalty must be in [-2, 2]";
	else if (!(sp->repetition_penalty >= 0.0f) || !isfinite(sp->repetition_penalty))
		bad = "sampling.repetition_penalty must be > 0 (0 = off)";
	else if (!(sp->min_p >= 0.0f && sp->min_p <= 1.0f))
		bad = "sampling.min_p must be in [0, 1]";
	else if (sp->min_tokens > limit)
		bad = "sampling.min_tokens exceeds the token limit";
	if (bad) {
		wk_engine_emit_error(e, s->req, LOOM_EINVAL, "%s", bad);
		return false;
	}
	for (uint32_t i = 0; i < sp->n_bias; i++) {
		if (sp->bias_ids[i] < 0 || sp->bias_ids[i] >= c->vocab ||
		    !(fabsf(sp->bias[i]) <= 100.0f)) {
			wk_engine_emit_error(e, s->req, LOOM_EINVAL,
					     "sampling.logit_bias: id %" PRId32 " (bias %g) must be "
					     "in 0..%d with a bias in [-100, 100]", sp->bias_ids[i],
					     (double)sp->bias[i], c->vocab - 1);
			return false;
		}
	}
	return true;
}

/* Checks a request (its pins already taken by submit); on a problem emits
 * ERROR and returns -1, else returns the model index. */
static int validate(wk_engine *e, const cmd *cm)
{
	const loom_msg_submit *s = &cm->sub;
	const loom_sampling *sp = &s->sampling;
	int mi = cm->model;
	const loom_model_config *c;
	uint64_t slots;
	uint32_t limit, np;

	if (mi < 0 || mi >= e->n_models) {
		wk_engine_emit_error(e, s->req, LOOM_ENOTFOUND,
				     "model '%s' is not served by this worker", s->model);
		return -1;
	}
	c = &e->slots[mi].cfg;
	if (s->adapter[0] && !cm->ad) {
		wk_engine_emit_error(e, s->req, LOOM_ENOTFOUND, "adapter %.*s is not loaded",
				     LOOM_NAME_MAX - 1, s->adapter);
		return -1;
	}
	if (s->n_prompt == 0) {
		wk_engine_emit_error(e, s->req, LOOM_EINVAL, "empty prompt");
		return -1;
	}
	if (s->n_generated >= s->n_prompt) {
		wk_engine_emit_error(e, s->req, LOOM_EINVAL,
				     "n_generated %" PRIu32 " leaves no prompt of the %" PRIu32
				     " prompt ids", s->n_generated, s->n_prompt);
		return -1;
	}
	for (uint32_t i = 0; i < s->n_prompt; i++) {
		if (s->prompt_ids[i] < 0 || s->prompt_ids[i] >= c->vocab) {
			wk_engine_emit_error(e, s->req, LOOM_EINVAL,
					     "prompt token %" PRIu32 " is id %" PRId32
					     ", outside the vocabulary of '%s' (0..%d)",
					     i, s->prompt_ids[i], s->model, c->vocab - 1);
			return -1;
		}
	}
	np = own_prompt(s);
	if ((uint64_t)np + sp->max_tokens > (uint64_t)c->max_ctx || np >= (uint32_t)c->max_ctx) {
		wk_engine_emit_error(e, s->req, LOOM_ERANGE,
				     "prompt (%" PRIu32 " tokens) + max_tokens (%" PRIu32
				     ") exceeds the context of '%s' (%d tokens)",
				     np, sp->max_tokens, s->model, c->max_ctx);
		return -1;
	}
	limit = sp->max_tokens ? sp->max_tokens : (uint32_t)c->max_ctx - np;
	if (s->n_generated >= limit) {
		wk_engine_emit_error(e, s->req, LOOM_EINVAL,
				     "resumed request already produced %" PRIu32
				     " tokens, its whole limit of %" PRIu32, s->n_generated, limit);
		return -1;
	}
	slots = (uint64_t)e->slots[mi].kv_blocks * WK_KV_BLOCK;
	if (max_positions(s, limit) > slots) {
		wk_engine_emit_error(e, s->req, LOOM_ERANGE,
				     "prompt (%" PRIu32 " tokens) + max_tokens (%" PRIu32
				     ") needs %" PRIu64 " KV positions, more than the whole KV "
				     "cache of '%s' (%" PRIu64 " positions; see --kv-blocks)",
				     np, limit, max_positions(s, limit), s->model, slots);
		return -1;
	}
	if (!(sp->temperature >= 0.0f) || !isfinite(sp->temperature)) {
		wk_engine_emit_error(e, s->req, LOOM_EINVAL, "sampling.temperature %g must be >= 0",
				     (double)sp->temperature);
		return -1;
	}
	if (!(sp->top_p > 0.0f && sp->top_p <= 1.0f)) {
		wk_engine_emit_error(e, s->req, LOOM_EINVAL, "sampling.top_p %g is outside (0, 1]",
				     (double)sp->top_p);
		return -1;
	}
	if (sp->top_k < 0) {
		wk_engine_emit_error(e, s->req, LOOM_EINVAL, "sampling.top_k %" PRId32
				     " is negative", sp->top_k);
		return -1;
	}
	if (!check_controls(e, s, c, limit))
		return -1;
	if (is_live(e, s->req)) {
		wk_engine_emit_error(e, s->req, LOOM_EEXIST, "request id %" PRIu64
				     " is already running", s->req);
		return -1;
	}
	return mi;
}

/* Drops the pins a command holds (a request that does not become a seq). */
static void cmd_unpin(wk_engine *e, cmd *c)
{
	wk_res_adapter_release(e->res, c->ad);
	c->ad = NULL;
	if (c->model >= 0)
		wk_res_model_release(e->res, c->model);
	c->model = -1;
}

/* The per-sequence state the controls need, allocated once: the penalties'
 * token counts (from the prompt proper and the k resumed tokens: the same
 * counts as the uncut run) and the prompt logprobs (a new request only:
 * a resumed one reported them from its first worker). */
static loom_err seq_extras(seq *s, const loom_model_config *cfg, uint32_t k)
{
	const loom_sampling *sp = &s->sub.sampling;
	uint64_t seen = (uint64_t)s->sub.n_prompt + s->limit;
	loom_err rc;

	if ((rc = wk_hist_init(&s->hist, sp, s->sub.prompt_ids, s->sub.n_prompt, s->gen, k,
			       seen < (uint64_t)cfg->vocab ? (uint32_t)seen : (uint32_t)cfg->vocab)))
		return rc;
	if (!sp->prompt_logprobs || k > 0 || s->sub.n_prompt < 2)
		return LOOM_OK;
	size_t n = s->sub.n_prompt - 1, nk = n * sp->prompt_top_logprobs;
	s->plp.n = (uint32_t)n;
	s->plp.k = sp->prompt_top_logprobs;
	s->plp.lp = loom_calloc(n, sizeof *s->plp.lp);
	s->plp.top_ids = loom_calloc(nk ? nk : 1, sizeof *s->plp.top_ids);
	s->plp.top_lp = loom_calloc(nk ? nk : 1, sizeof *s->plp.top_lp);
	if (!s->plp.lp || !s->plp.top_ids || !s->plp.top_lp)
		return LOOM_ENOMEM;
	s->plp_pending = true;
	return LOOM_OK;
}

static void accept_submit(wk_engine *e, cmd *c)
{
	int mi = validate(e, c);
	const loom_model_config *cfg;
	uint32_t k = c->sub.n_generated;
	seq *s;

	if (mi < 0) {
		cmd_unpin(e, c);
		return;
	}
	s = loom_calloc(1, sizeof *s);
	if (s && k > 0 && !(s->gen = loom_malloc((size_t)k * sizeof *s->gen))) {
		loom_free(s);
		s = NULL;
	}
	if (!s) {
		wk_engine_emit_error(e, c->sub.req, LOOM_ENOMEM,
				     "worker out of memory queueing the request");
		cmd_unpin(e, c);
		return;
	}
	cfg = &e->slots[mi].cfg;
	s->sub = c->sub;
	memset(&c->sub, 0, sizeof c->sub); /* arrays now belong to s */
	s->owner = c->owner;
	s->model = mi; /* the pins move to s */
	s->ad = c->ad;
	c->ad = NULL;
	c->model = -1;
	/* resumption: the tokens already produced become generated ones, so
	 * the context is the same, sampling goes on at position k and items
	 * report the prompt proper (prompt_ids keeps its tail, unused) */
	if (k > 0) {
		s->sub.n_prompt -= k;
		memcpy(s->gen, s->sub.prompt_ids + s->sub.n_prompt, (size_t)k * sizeof *s->gen);
		s->n_gen = s->cap_gen = k;
	}
	s->limit = s->sub.sampling.max_tokens ? s->sub.sampling.max_tokens
					      : (uint32_t)cfg->max_ctx - s->sub.n_prompt;
	if (seq_extras(s, cfg, k) ||
	    (s->sub.sampling.guide != LOOM_GUIDE_NONE &&
	     wk_guide_start(e->guide, mi, cfg, &s->sub.sampling, s->gen, k, &s->guide))) {
		wk_engine_emit_error(e, s->sub.req, LOOM_ENOMEM,
				     "worker out of memory queueing the request");
		wk_engine_seq_free(e, s);
		return;
	}
	wk_engine_seq_ns(e, s);
	wk_sched_classify(e, s, c->arrival_ms);
	wk_engine_wait_insert(e, s);
}

/* Removes from the waiting list every seq matching (req or owner); frees
 * them, emitting ABORT when by req. */
static void cancel_waiting(wk_engine *e, int kind, uint64_t key)
{
	seq **pp = &e->wait_head, *prev = NULL;

	while (*pp) {
		seq *s = *pp;
		bool hit = kind == CMD_CANCEL ? s->sub.req == key : s->owner == key;
		if (!hit) {
			prev = s;
			pp = &s->next;
			continue;
		}
		*pp = s->next;
		if (e->wait_tail == s)
			e->wait_tail = prev;
		e->n_waiting--;
		if (kind == CMD_CANCEL)
			emit_abort(e, s);
		wk_engine_seq_free(e, s);
	}
}

/* Frees running sequences marked dead or finished, keeping order. */
static void compact_running(wk_engine *e)
{
	int k = 0;

	for (int i = 0; i < e->n_running; i++) {
		seq *s = e->running[i];
		if (s->dead || s->finish != LOOM_FINISH_NONE)
			wk_engine_seq_free(e, s);
		else
			e->running[k++] = s;
	}
	e->n_running = k;
}

static void cancel(wk_engine *e, int kind, uint64_t key)
{
	for (int i = 0; i < e->n_running; i++) {
		seq *s = e->running[i];
		if (s->dead || (kind == CMD_CANCEL ? s->sub.req != key : s->owner != key))
			continue;
		s->dead = true;
		if (kind == CMD_CANCEL)
			emit_abort(e, s);
	}
	compact_running(e);
	cancel_waiting(e, kind, key);
}

static void drain(wk_engine *e)
{
	cmd *c, *next;

	pthread_mutex_lock(&e->mu);
	c = e->inbox_head;
	e->inbox_head = e->inbox_tail = NULL;
	e->inbox_submits = 0;
	e->inbox_tokens = 0;
	e->wake = false;
	pthread_mutex_unlock(&e->mu);
	/* every model a queued SUBMIT pinned was listed before it was queued */
	wk_engine_slots_sync(e);
	for (; c; c = next) {
		next = c->next;
		if (c->kind == CMD_SUBMIT)
			accept_submit(e, c);
		else
			cancel(e, c->kind, c->kind == CMD_CANCEL ? c->req : c->owner);
		cmd_unpin(e, c);
		sub_fini(&c->sub);
		loom_free(c);
	}
}

/* ------------------------------------------------------------------ */
/* engine thread: one iteration                                        */
/* ------------------------------------------------------------------ */

static int iterate(wk_engine *e)
{
	int n_items = 0;
	double t0;

	drain(e);
	wk_engine_models_sync(e);
	wk_sched_admit(e);
	wk_sched_begin(e);
	/* with nothing running, whatever waits waits for a load */
	e->stalled = e->n_running == 0 && e->n_waiting > 0;
	if (e->n_running > 0) {
		t0 = now_ms();
		for (int mi = 0; mi < e->n_models; mi++)
			if (e->slots[mi].m)
				wk_sched_run_model(e, mi, &n_items);
		if (n_items > 0) {
			loom_msg m = { .type = LOOM_MSG_STEP };
			m.u.step.n_items = (uint32_t)n_items;
			m.u.step.items = e->items;
			e->emit(e->ctx, &m);
		}
		compact_running(e);
		wk_sched_end(e, now_ms() - t0);
	}
	wk_sched_publish_stats(e);
	return (int)e->n_waiting + e->n_running;
}

int wk_engine_step(wk_engine *e)
{
	if (!e->manual)
		return -1;
	return iterate(e);
}

static void *engine_main(void *arg)
{
	wk_engine *e = arg;

	pthread_mutex_lock(&e->mu);
	for (;;) {
		while (!e->stop && !e->inbox_head && !e->wake && e->n_running == 0 &&
		       e->n_loading == 0 && (e->n_waiting == 0 || e->stalled)) {
			if (e->n_waiting == 0) {
				pthread_cond_wait(&e->cv, &e->mu);
				continue;
			}
			/* waiting for loads: the residency wakes us; the timeout
			 * only guards against a lost wake-up */
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 200 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			if (pthread_cond_timedwait(&e->cv, &e->mu, &ts))
				break;
		}
		if (e->stop)
			break;
		pthread_mutex_unlock(&e->mu);
		iterate(e);
		pthread_mutex_lock(&e->mu);
	}
	pthread_mutex_unlock(&e->mu);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* create / destroy                                                    */
/* ------------------------------------------------------------------ */

loom_err wk_engine_set_guide_vocab(wk_engine *e, const char *model,
				   const loom_grammar_vocab *v)
{
	int mi = wk_res_model_find(e->res, model);

	if (mi < 0)
		return loom_fail(LOOM_ENOTFOUND, "model '%s' is not served by this engine", model);
	wk_guide_set_vocab(e->guide, mi, v);
	return LOOM_OK;
}

void wk_engine_guide_stats(wk_engine *e, wk_guide_stats *out)
{
	wk_guide_stats_get(e->guide, out);
}

int wk_engine_default_kv_blocks(const wk_model *m, int max_seqs, int kv_mb)
{
	return wk_engine_kv_blocks_for(&m->cfg, m->arena_bytes, max_seqs, kv_mb, WK_KV_F32);
}

static void engine_wake(void *ctx)
{
	wk_engine *e = ctx;

	pthread_mutex_lock(&e->mu);
	e->wake = true;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

/* Gives the residency the lent models and attaches them. */
static loom_err lend_models(wk_engine *e, wk_model *const *models, int n_models)
{
	loom_err rc;

	for (int i = 0; i < n_models; i++)
		if ((rc = wk_res_model_lend(e->res, models[i])))
			return rc;
	wk_engine_slots_sync(e);
	for (int i = 0; i < e->n_models; i++) {
		wk_model *m = NULL;
		if (wk_res_model_state(e->res, i, &m, NULL, NULL, 0) == WK_RES_READY && !e->slots[i].m &&
		    (rc = wk_engine_attach(e, i, m)))
			return rc;
	}
	return LOOM_OK;
}

loom_err wk_engine_create(wk_model *const *models, int n_models, const wk_engine_opts *opts,
			  wk_emit_fn emit, void *ctx, wk_engine **out)
{
	wk_engine *e = NULL;
	loom_err rc = LOOM_OK;
	size_t ms;

	*out = NULL;
	if (n_models < 0 || (n_models == 0 && !(opts && opts->res)) || !emit)
		return loom_fail(LOOM_EINVAL, "engine: need at least one model and an emit callback");
	e = loom_calloc(1, sizeof *e);
	if (!e)
		return loom_fail(LOOM_ENOMEM, "engine: out of memory");
	e->max_batch_tokens = opts && opts->max_batch_tokens > 0 ? opts->max_batch_tokens : 256;
	e->max_seqs = opts && opts->max_seqs > 0 ? opts->max_seqs : 64;
	e->kv_blocks_opt = opts ? opts->kv_blocks : 0;
	e->kv_mb_opt = opts ? opts->kv_mb : 0;
	e->kv_dtype = opts ? opts->kv_dtype : WK_KV_F32;
	e->backend = opts ? opts->backend : WK_BACKEND_CPU;
	e->prefix_cache = !(opts && opts->no_prefix_cache);
	e->manual = opts && opts->manual;
	e->it_cap = -1;
	e->emit = emit;
	e->ctx = ctx;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	e->slots = loom_calloc(WK_RES_MAX_MODELS, sizeof *e->slots);
	e->snap_prefix = loom_calloc(WK_RES_MAX_MODELS, sizeof *e->snap_prefix);
	if (!e->slots || !e->snap_prefix)
		goto nomem;
	if (opts && opts->res) {
		e->res = opts->res;
	} else {
		if ((rc = wk_res_create(NULL, &e->res)))
			goto out;
		e->own_res = true;
	}
	if ((rc = wk_guide_create(e->res, e->manual, engine_wake, e, &e->guide)) ||
	    (rc = lend_models(e, models, n_models)))
		goto out;
	ms = (size_t)e->max_seqs;
	e->running = loom_calloc(ms, sizeof *e->running);
	e->seq_start = loom_calloc(ms + 1, sizeof *e->seq_start);
	e->tokens = loom_calloc((size_t)e->max_batch_tokens + ms, sizeof *e->tokens);
	e->kvs = loom_calloc(ms, sizeof *e->kvs);
	e->bseq = loom_calloc(ms, sizeof *e->bseq);
	e->bchunk = loom_calloc(ms, sizeof *e->bchunk);
	e->pseq = loom_calloc(ms, sizeof *e->pseq);
	e->pchunk = loom_calloc(ms, sizeof *e->pchunk);
	e->seg_start = loom_calloc(ms + 1, sizeof *e->seg_start);
	e->seg_ad = loom_calloc(ms, sizeof *e->seg_ad);
	e->items = loom_calloc(ms, sizeof *e->items);
	e->item_ids = loom_calloc(ms, sizeof *e->item_ids);
	e->item_lp = loom_calloc(ms, sizeof *e->item_lp);
	e->item_top_ids = loom_calloc(ms * LOOM_MAX_LOGPROBS, sizeof *e->item_top_ids);
	e->item_top_lp = loom_calloc(ms * LOOM_MAX_LOGPROBS, sizeof *e->item_top_lp);
	if (!e->running || !e->seq_start || !e->tokens || !e->kvs || !e->bseq || !e->bchunk ||
	    !e->pseq || !e->pchunk || !e->seg_start || !e->seg_ad || !e->items || !e->item_ids ||
	    !e->item_lp || !e->item_top_ids || !e->item_top_lp)
		goto nomem;
	wk_sched_publish_stats(e);
	wk_res_set_waker(e->res, engine_wake, e);
	if (!e->manual) {
		int err = pthread_create(&e->thread, NULL, engine_main, e);
		if (err) {
			rc = loom_fail(LOOM_EINTERNAL, "engine: cannot start its thread (%s)",
				       strerror(err));
			goto out;
		}
		e->has_thread = true;
	}
	*out = e;
	return LOOM_OK;
nomem:
	rc = loom_fail(LOOM_ENOMEM, "engine: out of memory allocating batch buffers for %d sequences",
		       e->max_seqs);
out:
	wk_engine_destroy(e);
	return rc;
}

void wk_engine_destroy(wk_engine *e)
{
	cmd *c, *next;

	if (!e)
		return;
	if (e->has_thread) {
		pthread_mutex_lock(&e->mu);
		e->stop = true;
		pthread_cond_signal(&e->cv);
		pthread_mutex_unlock(&e->mu);
		pthread_join(e->thread, NULL);
	}
	if (e->res)
		wk_res_set_waker(e->res, NULL, NULL);
	for (c = e->inbox_head; c; c = next) {
		next = c->next;
		cmd_unpin(e, c);
		sub_fini(&c->sub);
		loom_free(c);
	}
	while (e->wait_head) {
		seq *s = e->wait_head;
		e->wait_head = s->next;
		wk_engine_seq_free(e, s);
	}
	for (int i = 0; i < e->n_running; i++)
		wk_engine_seq_free(e, e->running[i]);
	for (int i = 0; e->slots && i < e->n_models; i++)
		wk_engine_detach(e, i);
	wk_guide_destroy(e->guide);
	loom_free(e->guide_mask);
	if (e->own_res)
		wk_res_destroy(e->res);
	loom_free(e->slots);
	loom_free(e->snap_prefix);
	loom_free(e->running);
	loom_free(e->seq_start);
	loom_free(e->tokens);
	loom_free(e->kvs);
	loom_free(e->bseq);
	loom_free(e->bchunk);
	loom_free(e->pseq);
	loom_free(e->pchunk);
	loom_free(e->seg_start);
	loom_free(e->seg_ad);
	loom_free(e->items);
	loom_free(e->item_ids);
	loom_free(e->item_lp);
	loom_free(e->item_top_ids);
	loom_free(e->item_top_lp);
	loom_free(e->sample_scratch);
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->mu);
	loom_free(e);
}
