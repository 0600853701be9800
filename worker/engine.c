/*
 * worker/engine.c — the engine's inbox, request validation, adapters, thread
 * and lifecycle (see engine.h for the contract; sched.c runs the
 * iterations' admission, preemption, batch plan and sampling).
 *
 * Data: an inbox (singly linked command list, under mu) filled by any
 * thread; on the engine thread a FIFO of waiting sequences (no KV blocks)
 * and an array of admitted ones (running[], admission order, each holding
 * blocks of its model's pool). The workload is tens of running sequences
 * and possibly thousands waiting, so running[] is scanned every iteration
 * and the waiting list at admission (until every model is blocked) and
 * cancel. Adapters: a short list per model, looked up by name per SUBMIT.
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
	loom_free(s->sampling.stop_ids);
	s->prompt_ids = NULL;
	s->sampling.stop_ids = NULL;
}

static void adref_put(wk_engine *e, int mi, adref *r)
{
	if (!r || --r->refs > 0 || !r->retired)
		return;
	for (adref **pp = &e->slots[mi].adapters; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			break;
		}
	}
	ad_adapter_destroy(r->a);
	loom_free(r);
}

void wk_engine_seq_free(wk_engine *e, seq *s)
{
	if (!s)
		return;
	wk_kv_fini(&s->kv);
	adref_put(e, s->model, s->ad);
	sub_fini(&s->sub);
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

static int find_model(const wk_engine *e, const char *name)
{
	for (int i = 0; i < e->n_models; i++)
		if (!strcmp(e->slots[i].m->name, name))
			return i;
	return -1;
}

const wk_model *wk_engine_find_model(const wk_engine *e, const char *name)
{
	int mi = find_model(e, name);
	return mi < 0 ? NULL : e->slots[mi].m;
}

static adref *find_adapter(const wk_engine *e, int mi, const char *name)
{
	for (adref *r = e->slots[mi].adapters; r; r = r->next)
		if (!r->retired && !strcmp(r->a->name, name))
			return r;
	return NULL;
}

void wk_engine_wait_push_front(wk_engine *e, seq *s)
{
	s->next = e->wait_head;
	e->wait_head = s;
	if (!e->wait_tail)
		e->wait_tail = s;
	e->n_waiting++;
}

static void wait_push_back(wk_engine *e, seq *s)
{
	s->next = NULL;
	if (e->wait_tail)
		e->wait_tail->next = s;
	else
		e->wait_head = s;
	e->wait_tail = s;
	e->n_waiting++;
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
	c->sub.prompt_ids = dup_ids(s->prompt_ids, s->n_prompt, &fail);
	c->sub.sampling.stop_ids = dup_ids(s->sampling.stop_ids, s->sampling.n_stop_ids, &fail);
	if (fail) {
		sub_fini(&c->sub);
		loom_free(c);
		return loom_fail(LOOM_ENOMEM, "engine: out of memory copying request %" PRIu64,
				 s->req);
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
	int mi = find_model(e, model_name);
	loom_err rc;
	cmd *c;

	if (!a)
		return loom_fail(LOOM_EINVAL, "engine: no adapter given for model '%s'", model_name);
	if (mi < 0) {
		rc = loom_fail(LOOM_ENOTFOUND, "adapter %s: base model '%s' is not served by this "
			       "worker", a->name, model_name);
		goto out;
	}
	if (a->n_layers != e->slots[mi].m->cfg.n_layers) {
		rc = loom_fail(LOOM_EINVAL, "adapter %s: %d layers, model '%s' has %d", a->name,
			       a->n_layers, model_name, e->slots[mi].m->cfg.n_layers);
		goto out;
	}
	c = loom_calloc(1, sizeof *c);
	if (!c) {
		rc = loom_fail(LOOM_ENOMEM, "adapter %s: out of memory queueing it", a->name);
		goto out;
	}
	c->kind = CMD_ADAPTER;
	c->model = mi;
	c->ad = a;
	inbox_push(e, c);
	return LOOM_OK;
out:
	ad_adapter_destroy(a);
	return rc;
}

void wk_engine_stats(wk_engine *e, loom_msg_stats *out)
{
	pthread_mutex_lock(&e->mu);
	*out = e->snap;
	out->queued += e->inbox_submits;
	out->queued_tokens += e->inbox_tokens;
	pthread_mutex_unlock(&e->mu);
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

/* KV positions s can ever hold: the last sampled token is never fed. */
static uint64_t max_positions(const loom_msg_submit *s, uint32_t limit)
{
	return (uint64_t)s->n_prompt + limit - 1;
}

/* Checks a request; on a problem emits ERROR and returns -1, else returns
 * the model index and sets *ad (NULL for the base model). */
static int validate(wk_engine *e, const loom_msg_submit *s, adref **ad)
{
	const loom_sampling *sp = &s->sampling;
	int mi = find_model(e, s->model);
	const loom_model_config *c;
	uint64_t slots;
	uint32_t limit;

	*ad = NULL;
	if (mi < 0) {
		wk_engine_emit_error(e, s->req, LOOM_ENOTFOUND,
				     "model '%s' is not served by this worker", s->model);
		return -1;
	}
	c = &e->slots[mi].m->cfg;
	if (s->adapter[0] && !(*ad = find_adapter(e, mi, s->adapter))) {
		wk_engine_emit_error(e, s->req, LOOM_ENOTFOUND, "adapter %.*s is not loaded",
				     LOOM_NAME_MAX - 1, s->adapter);
		return -1;
	}
	if (s->n_prompt == 0) {
		wk_engine_emit_error(e, s->req, LOOM_EINVAL, "empty prompt");
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
	if ((uint64_t)s->n_prompt + sp->max_tokens > (uint64_t)c->max_ctx ||
	    s->n_prompt >= (uint32_t)c->max_ctx) {
		wk_engine_emit_error(e, s->req, LOOM_ERANGE,
				     "prompt (%" PRIu32 " tokens) + max_tokens (%" PRIu32
				     ") exceeds the context of '%s' (%d tokens)",
				     s->n_prompt, sp->max_tokens, s->model, c->max_ctx);
		return -1;
	}
	limit = sp->max_tokens ? sp->max_tokens : (uint32_t)c->max_ctx - s->n_prompt;
	slots = (uint64_t)wk_kvpool_n_blocks(e->slots[mi].pool) *
		(uint64_t)wk_kvpool_block_size(e->slots[mi].pool);
	if (max_positions(s, limit) > slots) {
		wk_engine_emit_error(e, s->req, LOOM_ERANGE,
				     "prompt (%" PRIu32 " tokens) + max_tokens (%" PRIu32
				     ") needs %" PRIu64 " KV positions, more than the whole KV "
				     "cache of '%s' (%" PRIu64 " positions; see --kv-blocks)",
				     s->n_prompt, limit, max_positions(s, limit), s->model, slots);
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
	if (is_live(e, s->req)) {
		wk_engine_emit_error(e, s->req, LOOM_EEXIST, "request id %" PRIu64
				     " is already running", s->req);
		return -1;
	}
	return mi;
}

static void accept_submit(wk_engine *e, cmd *c)
{
	adref *ad;
	int mi = validate(e, &c->sub, &ad);
	const loom_model_config *cfg;
	seq *s;

	if (mi < 0)
		return;
	s = loom_calloc(1, sizeof *s);
	if (!s) {
		wk_engine_emit_error(e, c->sub.req, LOOM_ENOMEM,
				     "worker out of memory queueing the request");
		return;
	}
	cfg = &e->slots[mi].m->cfg;
	s->sub = c->sub;
	memset(&c->sub, 0, sizeof c->sub); /* arrays now belong to s */
	s->owner = c->owner;
	s->model = mi;
	s->ad = ad;
	if (ad)
		ad->refs++;
	wk_kv_init(&s->kv, e->slots[mi].pool);
	s->limit = s->sub.sampling.max_tokens ? s->sub.sampling.max_tokens
					      : (uint32_t)cfg->max_ctx - s->sub.n_prompt;
	wait_push_back(e, s);
}

static void accept_adapter(wk_engine *e, cmd *c)
{
	model_slot *ms = &e->slots[c->model];
	adref *r = loom_calloc(1, sizeof *r), *old;

	if (!r) {
		/* no request to answer: the worker log is the only place */
		LOOM_ERROR("engine: out of memory registering adapter %s; it is not loaded",
			   c->ad->name);
		ad_adapter_destroy(c->ad);
		c->ad = NULL;
		return;
	}
	old = find_adapter(e, c->model, c->ad->name);
	r->a = c->ad;
	c->ad = NULL;
	r->next = ms->adapters;
	ms->adapters = r;
	if (old) {
		old->retired = true;
		old->refs++; /* put drops it now if no sequence holds it */
		adref_put(e, c->model, old);
	}
	LOOM_DEBUG("engine: adapter %s of '%s' loaded (max rank %d, %zu bytes)%s", r->a->name,
		  ms->m->name, r->a->max_rank, r->a->bytes, old ? ", replacing the old one" : "");
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
	pthread_mutex_unlock(&e->mu);
	for (; c; c = next) {
		next = c->next;
		if (c->kind == CMD_SUBMIT)
			accept_submit(e, c);
		else if (c->kind == CMD_ADAPTER)
			accept_adapter(e, c);
		else
			cancel(e, c->kind, c->kind == CMD_CANCEL ? c->req : c->owner);
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
	wk_sched_admit(e);
	if (e->n_running > 0) {
		t0 = now_ms();
		for (int mi = 0; mi < e->n_models; mi++)
			wk_sched_run_model(e, mi, &n_items);
		if (n_items > 0) {
			loom_msg m = { .type = LOOM_MSG_STEP };
			m.u.step.n_items = (uint32_t)n_items;
			m.u.step.items = e->items;
			e->emit(e->ctx, &m);
		}
		compact_running(e);
		double ms = now_ms() - t0;
		e->step_ms = e->steps ? 0.8 * e->step_ms + 0.2 * ms : ms;
		e->steps++;
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
		while (!e->stop && !e->inbox_head && e->n_waiting == 0 && e->n_running == 0)
			pthread_cond_wait(&e->cv, &e->mu);
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

int wk_engine_default_kv_blocks(const wk_model *m, int max_seqs, int kv_mb)
{
	const loom_model_config *c = &m->cfg;
	uint64_t per = wk_kv_bytes_per_position(c), bs = WK_KV_BLOCK;
	uint64_t ctx_blocks = ((uint64_t)c->max_ctx + bs - 1) / bs, blocks;

	if (kv_mb > 0) {
		blocks = ((uint64_t)kv_mb << 20) / (per * bs);
	} else {
		uint64_t cap = m->arena_bytes > ((uint64_t)256 << 20) ? m->arena_bytes
								      : (uint64_t)256 << 20;
		blocks = (uint64_t)(max_seqs > 0 ? max_seqs : 64) * ctx_blocks;
		if (blocks * bs * per > cap)
			blocks = cap / (bs * per);
		if (blocks < ctx_blocks)
			blocks = ctx_blocks;
	}
	if (blocks < 1)
		blocks = 1;
	return blocks > (uint64_t)INT32_MAX / bs ? INT32_MAX / WK_KV_BLOCK : (int)blocks;
}

static loom_err create_slot(wk_engine *e, model_slot *ms, wk_model *m, const wk_engine_opts *o)
{
	int blocks = o && o->kv_blocks > 0
			     ? o->kv_blocks
			     : wk_engine_default_kv_blocks(m, e->max_seqs, o ? o->kv_mb : 0);
	loom_err rc;

	ms->m = m;
	if ((rc = wk_scratch_create(m, &ms->scratch)))
		return rc;
	if ((rc = wk_kvpool_create(m, blocks, WK_KV_BLOCK, &ms->pool))) {
		char why[256];
		snprintf(why, sizeof why, "%s", loom_errmsg());
		return loom_fail(rc, "engine: KV cache of '%s': %s", m->name, why);
	}
	ms->logits = loom_malloc((size_t)e->max_seqs * (size_t)m->cfg.vocab * sizeof(float));
	if (!ms->logits)
		return loom_fail(LOOM_ENOMEM, "engine: out of memory for the logits of '%s'",
				 m->name);
	LOOM_DEBUG("engine: '%s': KV cache of %d blocks x %d positions (%zu MiB)", m->name, blocks,
		  WK_KV_BLOCK,
		  (size_t)blocks * WK_KV_BLOCK * wk_kv_bytes_per_position(&m->cfg) >> 20);
	return LOOM_OK;
}

loom_err wk_engine_create(wk_model *const *models, int n_models, const wk_engine_opts *opts,
			  wk_emit_fn emit, void *ctx, wk_engine **out)
{
	wk_engine *e = NULL;
	loom_err rc = LOOM_OK;
	size_t sample_bytes = 0;
	size_t ms;

	*out = NULL;
	if (n_models <= 0 || !emit)
		return loom_fail(LOOM_EINVAL, "engine: need at least one model and an emit callback");
	for (int i = 0; i < n_models; i++)
		for (int j = 0; j < i; j++)
			if (!strcmp(models[i]->name, models[j]->name))
				return loom_fail(LOOM_EINVAL, "engine: model name '%s' given twice",
						 models[i]->name);
	e = loom_calloc(1, sizeof *e);
	if (!e)
		return loom_fail(LOOM_ENOMEM, "engine: out of memory");
	e->max_batch_tokens = opts && opts->max_batch_tokens > 0 ? opts->max_batch_tokens : 256;
	e->max_seqs = opts && opts->max_seqs > 0 ? opts->max_seqs : 64;
	e->manual = opts && opts->manual;
	e->emit = emit;
	e->ctx = ctx;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	e->slots = loom_calloc((size_t)n_models, sizeof *e->slots);
	if (!e->slots)
		goto nomem;
	e->n_models = n_models;
	for (int i = 0; i < n_models; i++) {
		if ((rc = create_slot(e, &e->slots[i], models[i], opts)))
			goto out;
		if (wk_sample_scratch_bytes(models[i]->cfg.vocab) > sample_bytes)
			sample_bytes = wk_sample_scratch_bytes(models[i]->cfg.vocab);
	}
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
	e->sample_scratch = loom_malloc(sample_bytes ? sample_bytes : 1);
	if (!e->running || !e->seq_start || !e->tokens || !e->kvs || !e->bseq || !e->bchunk ||
	    !e->pseq || !e->pchunk || !e->seg_start || !e->seg_ad || !e->items || !e->item_ids ||
	    !e->sample_scratch)
		goto nomem;
	wk_sched_publish_stats(e);
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
	for (c = e->inbox_head; c; c = next) {
		next = c->next;
		sub_fini(&c->sub);
		ad_adapter_destroy(c->ad);
		loom_free(c);
	}
	while (e->wait_head) {
		seq *s = e->wait_head;
		e->wait_head = s->next;
		wk_engine_seq_free(e, s);
	}
	for (int i = 0; i < e->n_running; i++)
		wk_engine_seq_free(e, e->running[i]);
	for (int i = 0; e->slots && i < e->n_models; i++) {
		model_slot *ms = &e->slots[i];
		while (ms->adapters) {
			adref *r = ms->adapters;
			ms->adapters = r->next;
			ad_adapter_destroy(r->a);
			loom_free(r);
		}
		wk_scratch_destroy(ms->scratch);
		wk_kvpool_destroy(ms->pool);
		loom_free(ms->logits);
	}
	loom_free(e->slots);
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
	loom_free(e->sample_scratch);
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->mu);
	loom_free(e);
}
