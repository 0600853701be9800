/*
 * worker/engine.c — the engine loop (see engine.h for the contract).
 *
 * Data: an inbox (singly linked command list, under mu) filled by any
 * thread; on the engine thread a FIFO of waiting sequences (no KV yet) and
 * an array of admitted ones (running[], admission order, each holding a
 * contiguous wk_kv of capacity prompt + max_tokens). The workload is tens of
 * running sequences and possibly thousands waiting, so running[] is scanned
 * every iteration and the waiting list only at admission / cancel.
 * All batch buffers are sized at create for max_seqs and max_batch_tokens:
 * a steady-state iteration allocates nothing but what wk_forward grows once.
 */
#include "engine.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/alloc.h"
#include "../common/log.h"
#include "forward.h"
#include "sample.h"

enum { CMD_SUBMIT, CMD_CANCEL, CMD_CANCEL_OWNER };

typedef struct cmd {
	struct cmd *next;
	int kind;
	uint64_t req;         /* CANCEL */
	uint64_t owner;       /* SUBMIT, CANCEL_OWNER */
	loom_msg_submit sub;  /* SUBMIT: owns prompt_ids and stop_ids */
} cmd;

typedef struct seq {
	struct seq *next;     /* waiting-list link */
	loom_msg_submit sub;  /* owns prompt_ids and stop_ids */
	uint64_t owner;
	int model;            /* index into e->slots */
	wk_kv *kv;            /* NULL while waiting */
	uint32_t n_prefilled; /* prompt tokens already in kv */
	uint32_t n_gen;       /* tokens generated so far */
	uint32_t limit;       /* n_gen that ends it with LENGTH */
	int32_t last;         /* last sampled id: the next decode's input */
	uint8_t finish;       /* loom_finish once decided */
	bool dead;            /* to be freed without an item (error, cancel) */
} seq;

typedef struct model_slot {
	wk_model *m;          /* borrowed */
	wk_scratch *scratch;
	float *logits;        /* [max_seqs, vocab] */
} model_slot;

struct wk_engine {
	model_slot *slots;    /* [n_models] */
	int n_models;
	int max_batch_tokens;
	int max_seqs;
	bool manual;
	wk_emit_fn emit;
	void *ctx;

	/* shared: under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	cmd *inbox_head, *inbox_tail;
	uint32_t inbox_submits;
	uint64_t inbox_tokens;
	bool stop;
	loom_msg_stats snap;  /* published by the engine thread */
	pthread_t thread;
	bool has_thread;

	/* engine thread only */
	seq *wait_head, *wait_tail;
	uint32_t n_waiting;
	seq **running;        /* [max_seqs] */
	int n_running;
	uint32_t kv_total;    /* max_seqs * largest context */
	int32_t *seq_start;   /* [max_seqs + 1] */
	int32_t *tokens;      /* [max_batch_tokens + max_seqs] */
	wk_kv **kvs;          /* [max_seqs] */
	seq **bseq;           /* [max_seqs] sequences of the batch being run */
	int32_t *bchunk;      /* [max_seqs] tokens each contributes */
	loom_step_item *items;/* [max_seqs] */
	int32_t *item_ids;    /* [max_seqs] one id per item */
	void *sample_scratch;
	double step_ms;
	uint64_t steps, tokens_out;
};

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

static void seq_free(seq *s)
{
	if (!s)
		return;
	wk_kv_destroy(s->kv);
	sub_fini(&s->sub);
	loom_free(s);
}

static void emit_error(wk_engine *e, uint64_t req, loom_err code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void emit_error(wk_engine *e, uint64_t req, loom_err code, const char *fmt, ...)
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

void wk_engine_stats(wk_engine *e, loom_msg_stats *out)
{
	pthread_mutex_lock(&e->mu);
	*out = e->snap;
	out->queued += e->inbox_submits;
	out->queued_tokens += e->inbox_tokens;
	pthread_mutex_unlock(&e->mu);
}

/* ------------------------------------------------------------------ */
/* engine thread: drain, validate, cancel                              */
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

/* Checks a request; on a problem emits ERROR and returns -1, else returns
 * the model index. */
static int validate(wk_engine *e, const loom_msg_submit *s)
{
	const loom_sampling *sp = &s->sampling;
	int mi = find_model(e, s->model);
	const loom_model_config *c;

	if (mi < 0) {
		emit_error(e, s->req, LOOM_ENOTFOUND, "model '%s' is not served by this worker",
			   s->model);
		return -1;
	}
	c = &e->slots[mi].m->cfg;
	if (s->adapter[0]) {
		emit_error(e, s->req, LOOM_EUNSUPPORTED, "adapters not supported yet");
		return -1;
	}
	if (s->n_prompt == 0) {
		emit_error(e, s->req, LOOM_EINVAL, "empty prompt");
		return -1;
	}
	for (uint32_t i = 0; i < s->n_prompt; i++) {
		if (s->prompt_ids[i] < 0 || s->prompt_ids[i] >= c->vocab) {
			emit_error(e, s->req, LOOM_EINVAL,
				   "prompt token %" PRIu32 " is id %" PRId32
				   ", outside the vocabulary of '%s' (0..%d)",
				   i, s->prompt_ids[i], s->model, c->vocab - 1);
			return -1;
		}
	}
	if ((uint64_t)s->n_prompt + sp->max_tokens > (uint64_t)c->max_ctx ||
	    s->n_prompt >= (uint32_t)c->max_ctx) {
		emit_error(e, s->req, LOOM_ERANGE,
			   "prompt (%" PRIu32 " tokens) + max_tokens (%" PRIu32
			   ") exceeds the context of '%s' (%d tokens)",
			   s->n_prompt, sp->max_tokens, s->model, c->max_ctx);
		return -1;
	}
	if (!(sp->temperature >= 0.0f) || !isfinite(sp->temperature)) {
		emit_error(e, s->req, LOOM_EINVAL, "sampling.temperature %g must be >= 0",
			   (double)sp->temperature);
		return -1;
	}
	if (!(sp->top_p > 0.0f && sp->top_p <= 1.0f)) {
		emit_error(e, s->req, LOOM_EINVAL, "sampling.top_p %g is outside (0, 1]",
			   (double)sp->top_p);
		return -1;
	}
	if (sp->top_k < 0) {
		emit_error(e, s->req, LOOM_EINVAL, "sampling.top_k %" PRId32 " is negative",
			   sp->top_k);
		return -1;
	}
	if (is_live(e, s->req)) {
		emit_error(e, s->req, LOOM_EEXIST, "request id %" PRIu64 " is already running",
			   s->req);
		return -1;
	}
	return mi;
}

static void accept_submit(wk_engine *e, cmd *c)
{
	int mi = validate(e, &c->sub);
	const loom_model_config *cfg;
	seq *s;

	if (mi < 0)
		return;
	s = loom_calloc(1, sizeof *s);
	if (!s) {
		emit_error(e, c->sub.req, LOOM_ENOMEM, "worker out of memory queueing the request");
		return;
	}
	cfg = &e->slots[mi].m->cfg;
	s->sub = c->sub;
	memset(&c->sub, 0, sizeof c->sub); /* arrays now belong to s */
	s->owner = c->owner;
	s->model = mi;
	s->limit = s->sub.sampling.max_tokens ? s->sub.sampling.max_tokens
					      : (uint32_t)cfg->max_ctx - s->sub.n_prompt;
	if (e->wait_tail)
		e->wait_tail->next = s;
	else
		e->wait_head = s;
	e->wait_tail = s;
	e->n_waiting++;
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
		seq_free(s);
	}
}

/* Frees running sequences marked dead or finished, keeping order. */
static void compact_running(wk_engine *e)
{
	int k = 0;

	for (int i = 0; i < e->n_running; i++) {
		seq *s = e->running[i];
		if (s->dead || s->finish != LOOM_FINISH_NONE)
			seq_free(s);
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
		else
			cancel(e, c->kind, c->kind == CMD_CANCEL ? c->req : c->owner);
		sub_fini(&c->sub);
		loom_free(c);
	}
}

static void admit(wk_engine *e)
{
	while (e->n_running < e->max_seqs && e->wait_head) {
		seq *s = e->wait_head;
		const wk_model *m = e->slots[s->model].m;
		loom_err rc;

		e->wait_head = s->next;
		if (!e->wait_head)
			e->wait_tail = NULL;
		s->next = NULL;
		e->n_waiting--;
		rc = wk_kv_create(m, (int)(s->sub.n_prompt + s->limit), &s->kv);
		if (rc) {
			emit_error(e, s->sub.req, rc, "cannot allocate the KV cache: %s",
				   loom_errmsg());
			seq_free(s);
			continue;
		}
		e->running[e->n_running++] = s;
	}
}

/* ------------------------------------------------------------------ */
/* engine thread: one iteration                                        */
/* ------------------------------------------------------------------ */

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

	s->n_gen++;
	e->tokens_out++;
	s->last = id;
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

/* Builds and runs model mi's batch; appends items. */
static void run_model(wk_engine *e, int mi, int *n_items)
{
	model_slot *ms = &e->slots[mi];
	int n = 0, T = 0, budget = e->max_batch_tokens;
	wk_batch b;
	loom_err rc;

	for (int i = 0; i < e->n_running; i++) {
		seq *s = e->running[i];
		if (s->model == mi && s->n_prefilled == s->sub.n_prompt)
			budget--;
	}
	if (budget < 0)
		budget = 0;
	for (int i = 0; i < e->n_running; i++) {
		seq *s = e->running[i];
		int chunk;

		if (s->model != mi)
			continue;
		if (s->n_prefilled == s->sub.n_prompt) {
			chunk = 1;
			e->tokens[T] = s->last;
		} else {
			uint32_t left = s->sub.n_prompt - s->n_prefilled;
			chunk = left < (uint32_t)budget ? (int)left : budget;
			if (chunk == 0)
				continue;
			budget -= chunk;
			memcpy(&e->tokens[T], s->sub.prompt_ids + s->n_prefilled,
			       (size_t)chunk * sizeof *e->tokens);
		}
		e->seq_start[n] = T;
		e->kvs[n] = s->kv;
		e->bseq[n] = s;
		e->bchunk[n] = chunk;
		T += chunk;
		n++;
	}
	if (n == 0)
		return;
	e->seq_start[n] = T;
	b = (wk_batch){ .n_seqs = n, .seq_start = e->seq_start, .tokens = e->tokens,
			.kv = e->kvs, .all_logits = 0 };
	rc = wk_forward(ms->m, &b, ms->scratch, ms->logits);
	if (rc) {
		char why[256];
		snprintf(why, sizeof why, "%s", loom_errmsg());
		LOOM_ERROR("engine: forward of %d sequences on '%s' failed: %s: %s", n,
			   ms->m->name, loom_strerror(rc), why);
		for (int i = 0; i < n; i++) {
			e->bseq[i]->dead = true;
			emit_error(e, e->bseq[i]->sub.req, rc, "forward pass failed: %s", why);
		}
		return;
	}
	for (int i = 0; i < n; i++) {
		seq *s = e->bseq[i];
		if (s->n_prefilled < s->sub.n_prompt) {
			s->n_prefilled += (uint32_t)e->bchunk[i];
			if (s->n_prefilled < s->sub.n_prompt)
				continue;
		}
		produce(e, s, ms->logits + (size_t)i * ms->m->cfg.vocab, n_items);
	}
}

static void publish_stats(wk_engine *e)
{
	loom_msg_stats st = { 0 };
	uint64_t used = 0;

	st.queued = e->n_waiting;
	st.running = (uint32_t)e->n_running;
	for (const seq *s = e->wait_head; s; s = s->next)
		st.queued_tokens += s->sub.n_prompt;
	for (int i = 0; i < e->n_running; i++) {
		const seq *s = e->running[i];
		st.queued_tokens += s->sub.n_prompt - s->n_prefilled;
		used += (uint64_t)s->kv->capacity;
	}
	st.kv_total = e->kv_total;
	st.kv_free = used >= e->kv_total ? 0 : e->kv_total - (uint32_t)used;
	st.step_ms = (float)e->step_ms;
	st.steps = e->steps;
	st.tokens_out = e->tokens_out;
	pthread_mutex_lock(&e->mu);
	e->snap = st;
	pthread_mutex_unlock(&e->mu);
}

static int iterate(wk_engine *e)
{
	int n_items = 0;
	double t0;

	drain(e);
	admit(e);
	if (e->n_running > 0) {
		t0 = now_ms();
		for (int mi = 0; mi < e->n_models; mi++)
			run_model(e, mi, &n_items);
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
	publish_stats(e);
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

loom_err wk_engine_create(wk_model *const *models, int n_models, const wk_engine_opts *opts,
			  wk_emit_fn emit, void *ctx, wk_engine **out)
{
	wk_engine *e = NULL;
	loom_err rc = LOOM_OK;
	size_t sample_bytes = 0;
	int max_ctx = 0, max_vocab = 0;

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
	e->n_models = n_models;
	e->slots = loom_calloc((size_t)n_models, sizeof *e->slots);
	if (!e->slots)
		goto nomem;
	for (int i = 0; i < n_models; i++) {
		model_slot *ms = &e->slots[i];
		const loom_model_config *c = &models[i]->cfg;
		ms->m = models[i];
		if ((rc = wk_scratch_create(ms->m, &ms->scratch)))
			goto out;
		ms->logits = loom_malloc((size_t)e->max_seqs * (size_t)c->vocab * sizeof(float));
		if (!ms->logits)
			goto nomem;
		if (c->max_ctx > max_ctx)
			max_ctx = c->max_ctx;
		if (c->vocab > max_vocab)
			max_vocab = c->vocab;
		if (wk_sample_scratch_bytes(c->vocab) > sample_bytes)
			sample_bytes = wk_sample_scratch_bytes(c->vocab);
	}
	{
		uint64_t total = (uint64_t)e->max_seqs * (uint64_t)max_ctx;
		e->kv_total = total > UINT32_MAX ? UINT32_MAX : (uint32_t)total;
	}
	e->running = loom_calloc((size_t)e->max_seqs, sizeof *e->running);
	e->seq_start = loom_calloc((size_t)e->max_seqs + 1, sizeof *e->seq_start);
	e->tokens = loom_calloc((size_t)e->max_batch_tokens + (size_t)e->max_seqs,
				sizeof *e->tokens);
	e->kvs = loom_calloc((size_t)e->max_seqs, sizeof *e->kvs);
	e->bseq = loom_calloc((size_t)e->max_seqs, sizeof *e->bseq);
	e->bchunk = loom_calloc((size_t)e->max_seqs, sizeof *e->bchunk);
	e->items = loom_calloc((size_t)e->max_seqs, sizeof *e->items);
	e->item_ids = loom_calloc((size_t)e->max_seqs, sizeof *e->item_ids);
	e->sample_scratch = loom_malloc(sample_bytes ? sample_bytes : 1);
	if (!e->running || !e->seq_start || !e->tokens || !e->kvs || !e->bseq || !e->bchunk ||
	    !e->items || !e->item_ids || !e->sample_scratch)
		goto nomem;
	e->snap.kv_total = e->kv_total;
	e->snap.kv_free = e->kv_total;
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
		loom_free(c);
	}
	while (e->wait_head) {
		seq *s = e->wait_head;
		e->wait_head = s->next;
		seq_free(s);
	}
	for (int i = 0; i < e->n_running; i++)
		seq_free(e->running[i]);
	for (int i = 0; e->slots && i < e->n_models; i++) {
		wk_scratch_destroy(e->slots[i].scratch);
		loom_free(e->slots[i].logits);
	}
	loom_free(e->slots);
	loom_free(e->running);
	loom_free(e->seq_start);
	loom_free(e->tokens);
	loom_free(e->kvs);
	loom_free(e->bseq);
	loom_free(e->bchunk);
	loom_free(e->items);
	loom_free(e->item_ids);
	loom_free(e->sample_scratch);
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->mu);
	loom_free(e);
}
