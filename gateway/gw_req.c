/*
 * gateway/gw_req.c — request output state and the suspend/resume handshake.
 *
 * Invariant (under mu): `suspended` is true exactly when this code suspended
 * r->conn and nobody resumed it yet; wake() resumes only then, so every
 * MHD_resume_connection matches one MHD_suspend_connection.
 * `recorded` turns true at the one place the SLO outcome is written: the
 * first transition out of ST_RUNNING (end()), or the last release.
 *
 * Choices (n > 1): the request holds one gw_choice per choice (its text,
 * ids, logprobs, finish, tool calls); the link knows each choice by a handle
 * (a gw_req with `head` set: an id of its own, a reference on the head, no
 * state) and everything a handle is given lands in its choice, under the
 * head's mu. With n = 1 the request is its own handle for choice 0.
 * The request ends (ST_OK) when its last running choice finishes; any
 * choice's failure fails the request, and its other choices are then told
 * to stop (GW_STEP_STOPPED at their next step; the server also CANCELs
 * those gw_req_live_choices names).
 */
#include "gw_req.h"

#include <assert.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/alloc.h"
#include "common/proto.h"
#include "gw_stream.h"

enum { ST_RUNNING, ST_OK, ST_ERROR };

/* One choice's output (under the request's mu). */
typedef struct gw_choice {
	uint64_t id;         /* the id its SUBMIT goes under; 0 = no handle made yet */
	gw_stream *out;
	size_t n_cached;     /* prompt tokens the worker's prefix cache held (the
			      * first item's figure) */
	int32_t *ids;        /* [n_ids] every generated id */
	size_t n_ids, cap_ids;
	float *lp;           /* [cap_ids] with_lp: each id's logprob */
	int32_t *top_ids;    /* [cap_ids * lp_stride] */
	float *top_lp;
	size_t *offs;        /* [cap_ids] with_lp: text_offset (code points, decoded) */
	bool started;        /* stream: its first chunk went out (chat: the role chunk) */
	bool sent_echo;
	bool ended;          /* finished, or failed or stopped through its handle: the
			      * link holds it no more */
	const char *finish;  /* "stop" | "length" | "tool_calls" once finished */
	size_t tool_sent;    /* stream: bytes of the text already sent as content */
	json_t *tool_calls;  /* once finished: the calls, or NULL */
	char *tool_content;  /* once finished with calls: the text outside them, or NULL */
} gw_choice;

struct gw_req {
	pthread_mutex_t mu;
	atomic_int refs;
	uint64_t id;
	gw_req *head;        /* a choice's handle: its request (held), else NULL */
	size_t index;        /* a handle: its choice */
	char id_str[48];
	long long created;
	gw_api api;
	bool stream, include_usage, with_ids;
	const gw_model *model;
	char model_name[LOOM_NAME_MAX]; /* the response's "model" */
	int32_t *prompt_ids; /* [n_prompt] */
	size_t n_prompt;
	/* logprobs: set at create */
	bool with_lp, with_plp, echo;
	int lp_k, plp_k;     /* shown alternatives (top_logprobs, prompt_logprobs) */
	size_t lp_stride;    /* alternatives per token the worker sends (= lp_k) */
	char *echo_text;     /* [echo_len] the prompt's text (echo) */
	size_t echo_len, echo_cp;
	size_t *p_offs;      /* [n_prompt] echo: text_offset of each prompt token */
	char *piece;         /* piece_fn's buffer */
	size_t piece_cap;
	/* under mu */
	gw_choice *ch;       /* [n_ch] */
	size_t n_ch;
	size_t n_running;    /* choices not finished */
	loom_logprobs plp;   /* the prompt's, once received (owned copies) */
	int state;
	gw_api_err err;      /* once ST_ERROR */
	bool sent_first;     /* stream: the first chunk went out (prompt_token_ids and
			      * chat's prompt_logprobs go in it) */
	char *sse;           /* stream bytes not yet given to MHD: [sse_off, sse_len) */
	size_t sse_len, sse_cap, sse_off;
	bool sse_oom;
	struct MHD_Connection *conn;
	bool suspended;
	bool closing;
	/* SLO accounting */
	gw_slo *slo;
	int slo_class;
	int64_t arrival_ms;
	int64_t first_ms;    /* first token (stream: first chunk with text); 0 = none yet */
	bool recorded;
	/* tool calls (tools_fmt != NONE) */
	gw_tools_fmt tools_fmt;
	bool parallel_tools;
};

static atomic_uint_fast64_t next_id = 1;
static atomic_long n_tracked;
static uint32_t id_nonce; /* random per process, makes response ids unique across restarts */
static pthread_once_t nonce_once = PTHREAD_ONCE_INIT;

static void nonce_init(void)
{
	if (getrandom(&id_nonce, sizeof id_nonce, 0) != sizeof id_nonce)
		id_nonce = (uint32_t)time(NULL);
}

int64_t gw_req_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long gw_req_tracked(void)
{
	return atomic_load(&n_tracked);
}

/* Tokens generated over all choices (usage's completion_tokens). */
static size_t total_ids(const gw_req *r)
{
	size_t n = 0;
	for (size_t i = 0; i < r->n_ch; i++)
		n += r->ch[i].n_ids;
	return n;
}

/* usage's cached_tokens: the fewest prompt tokens any choice took from the
 * prefix cache, i.e. what earlier requests left there (the blocks later
 * choices take from the first one's prefill are not counted). */
static size_t min_cached(const gw_req *r)
{
	size_t m = r->n_ch ? r->ch[0].n_cached : 0;
	for (size_t i = 1; i < r->n_ch; i++)
		m = r->ch[i].n_cached < m ? r->ch[i].n_cached : m;
	return m;
}

/* The request a handle belongs to and its choice (*ci); r itself with
 * choice 0 for a one-choice request; with n > 1 the request itself carries
 * no choice (*ci = SIZE_MAX). */
static gw_req *owner(gw_req *r, size_t *ci)
{
	if (r->head) {
		*ci = r->index;
		return r->head;
	}
	*ci = r->n_ch == 1 ? 0 : SIZE_MAX;
	return r;
}

/* Under mu (or from the last release): writes the SLO outcome once. */
static void record(gw_req *r, int status)
{
	if (r->recorded || !r->slo)
		return;
	r->recorded = true;
	int64_t now = gw_req_now_ms();
	size_t longest = 0;
	for (size_t i = 0; i < r->n_ch; i++)
		longest = r->ch[i].n_ids > longest ? r->ch[i].n_ids : longest;
	gw_slo_outcome o = {.status = status, .tokens = total_ids(r)};
	if (r->first_ms) {
		o.has_ttft = true;
		o.ttft_ms = (double)(r->first_ms - r->arrival_ms);
		/* choices decode side by side: the time per token is the longest one's */
		if (longest >= 2) {
			o.has_tpot = true;
			o.tpot_ms = (double)(now - r->first_ms) / (double)(longest - 1);
		}
	}
	gw_slo_record(r->slo, r->slo_class, &o);
}

/* gw_piece_fn: one id's text, decoded alone (not at the start of a text,
 * special tokens kept). */
static const char *piece_fn(void *ctx, int32_t id, size_t *len)
{
	gw_req *r = ctx;
	loom_tok_stream *st = NULL;
	const char *a = NULL, *b = NULL;
	size_t na = 0, nb = 0;

	*len = 0;
	if (loom_tok_stream_create(r->model->tok, false, false, &st))
		return NULL;
	loom_err rc = loom_tok_stream_push(st, id, &a, &na);
	if (rc == LOOM_ERANGE || rc == LOOM_EINVAL) {
		rc = LOOM_OK; /* an id the tokenizer does not know: "" */
		na = 0;
	}
	if (!rc && na + 1 > r->piece_cap) {
		char *p = loom_realloc(r->piece, na + 64);
		if (p) {
			r->piece = p;
			r->piece_cap = na + 64;
		} else {
			rc = LOOM_ENOMEM;
		}
	}
	if (!rc) {
		memcpy(r->piece, a ? a : "", na);
		rc = loom_tok_stream_finish(st, &b, &nb);
	}
	if (!rc && na + nb + 1 > r->piece_cap) {
		char *p = loom_realloc(r->piece, na + nb + 64);
		if (p) {
			r->piece = p;
			r->piece_cap = na + nb + 64;
		} else {
			rc = LOOM_ENOMEM;
		}
	}
	if (!rc) {
		memcpy(r->piece + na, b ? b : "", nb);
		r->piece[na + nb] = '\0';
		*len = na + nb;
	}
	loom_tok_stream_destroy(st);
	return rc ? NULL : r->piece;
}

/* Code points in s[0..n). */
static size_t cp_count(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += ((unsigned char)s[i] & 0xc0) != 0x80;
	return c;
}

/* The logprobs state: echo text and its tokens' offsets. */
static loom_err lp_setup(gw_req *r, const gw_req_opts *o)
{
	loom_tok_stream *st = NULL;
	loom_err rc = LOOM_OK;
	size_t at = 0;

	r->with_lp = o->logprobs;
	r->lp_k = o->top_logprobs;
	r->lp_stride = o->logprobs ? (size_t)o->top_logprobs : 0;
	r->with_plp = o->prompt_logprobs;
	r->plp_k = o->prompt_top_logprobs;
	r->echo = o->echo;
	if (!r->echo)
		return LOOM_OK;
	if (o->echo_text) {
		r->echo_text = loom_strndup(o->echo_text, o->echo_len);
		r->echo_len = o->echo_len;
		if (!r->echo_text)
			return loom_fail(LOOM_ENOMEM, "out of memory creating a request");
	} else if ((rc = loom_tok_decode(r->model->tok, r->prompt_ids, r->n_prompt, true,
					 &r->echo_text, &r->echo_len))) {
		return rc;
	}
	r->echo_cp = cp_count(r->echo_text, r->echo_len);
	r->p_offs = loom_calloc(r->n_prompt ? r->n_prompt : 1, sizeof *r->p_offs);
	if (!r->p_offs)
		return loom_fail(LOOM_ENOMEM, "out of memory creating a request");
	if ((rc = loom_tok_stream_create(r->model->tok, true, true, &st)))
		return rc;
	for (size_t i = 0; i < r->n_prompt; i++) {
		const char *t = NULL;
		size_t tl = 0;
		r->p_offs[i] = at;
		rc = loom_tok_stream_push(st, r->prompt_ids[i], &t, &tl);
		if (rc == LOOM_ERANGE || rc == LOOM_EINVAL)
			rc = LOOM_OK;
		else if (rc)
			break;
		at += cp_count(t, tl);
	}
	loom_tok_stream_destroy(st);
	return rc;
}

loom_err gw_req_create(const gw_req_opts *o, gw_req **out)
{
	loom_err rc;
	*out = NULL;
	pthread_once(&nonce_once, nonce_init);
	gw_req *r = loom_calloc(1, sizeof *r);
	if (!r)
		return loom_fail(LOOM_ENOMEM, "out of memory creating a request");
	pthread_mutex_init(&r->mu, NULL);
	atomic_init(&r->refs, 1);
	atomic_fetch_add(&n_tracked, 1);
	r->id = atomic_fetch_add(&next_id, 1);
	r->slo = o->slo;
	r->slo_class = o->slo_class;
	r->arrival_ms = o->arrival_ms ? o->arrival_ms : gw_req_now_ms();
	snprintf(r->id_str, sizeof r->id_str, "%s-%08x%016llx",
		 o->api == GW_API_CHAT ? "chatcmpl" : "cmpl", id_nonce, (unsigned long long)r->id);
	r->created = (long long)time(NULL);
	r->api = o->api;
	r->stream = o->stream;
	r->include_usage = o->include_usage;
	r->with_ids = o->return_token_ids;
	r->tools_fmt = o->api == GW_API_CHAT ? o->tools_fmt : GW_TOOLS_NONE;
	r->parallel_tools = o->parallel_tool_calls;
	r->model = o->model;
	gw_model_hold(r->model);
	snprintf(r->model_name, sizeof r->model_name, "%s", o->model_name ? o->model_name
									 : o->model->name);
	r->state = ST_RUNNING;
	r->prompt_ids = loom_malloc((o->n_prompt ? o->n_prompt : 1) * sizeof *r->prompt_ids);
	if (!r->prompt_ids) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory creating a request");
		goto fail;
	}
	memcpy(r->prompt_ids, o->prompt_ids, o->n_prompt * sizeof *r->prompt_ids);
	r->n_prompt = o->n_prompt;
	size_t n_ch = o->n_choices ? o->n_choices : 1;
	if (n_ch > GW_MAX_N) {
		rc = loom_fail(LOOM_EINVAL, "%zu choices asked, at most %d", n_ch, GW_MAX_N);
		goto fail;
	}
	r->ch = loom_calloc(n_ch, sizeof *r->ch);
	if (!r->ch) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory creating a request");
		goto fail;
	}
	r->n_ch = r->n_running = n_ch;
	if (r->n_ch == 1)
		r->ch[0].id = r->id;
	for (size_t i = 0; i < r->n_ch; i++)
		if ((rc = gw_stream_create(o->model->tok, o->stops, o->n_stops, &r->ch[i].out)))
			goto fail;
	if ((rc = lp_setup(r, o)))
		goto fail;
	*out = r;
	return LOOM_OK;
fail:
	gw_req_release(r);
	return rc;
}

loom_err gw_req_choice(gw_req *r, size_t i, gw_req **out)
{
	*out = NULL;
	assert(!r->head && i < r->n_ch);
	if (r->n_ch == 1) {
		gw_req_hold(r);
		*out = r;
		return LOOM_OK;
	}
	gw_req *h = loom_calloc(1, sizeof *h);
	if (!h)
		return loom_fail(LOOM_ENOMEM, "out of memory creating a request");
	pthread_mutex_init(&h->mu, NULL);
	atomic_init(&h->refs, 1);
	h->id = atomic_fetch_add(&next_id, 1);
	h->head = r;
	h->index = i;
	gw_req_hold(r);
	pthread_mutex_lock(&r->mu);
	r->ch[i].id = h->id;
	pthread_mutex_unlock(&r->mu);
	*out = h;
	return LOOM_OK;
}

size_t gw_req_live_choices(gw_req *r, uint64_t *ids)
{
	size_t n = 0;
	pthread_mutex_lock(&r->mu);
	for (size_t i = 0; i < r->n_ch; i++)
		if (r->ch[i].id && !r->ch[i].ended)
			ids[n++] = r->ch[i].id;
	pthread_mutex_unlock(&r->mu);
	return n;
}

void gw_req_hold(gw_req *r)
{
	atomic_fetch_add(&r->refs, 1);
}

void gw_req_release(gw_req *r)
{
	if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
		return;
	if (r->head) { /* a choice's handle */
		gw_req_release(r->head);
		pthread_mutex_destroy(&r->mu);
		loom_free(r);
		return;
	}
	if (r->state == ST_RUNNING)
		record(r, 500); /* never ended: a miss */
	for (size_t i = 0; i < r->n_ch; i++) {
		gw_choice *c = &r->ch[i];
		gw_stream_destroy(c->out);
		loom_free(c->ids);
		loom_free(c->lp);
		loom_free(c->top_ids);
		loom_free(c->top_lp);
		loom_free(c->offs);
		json_decref(c->tool_calls);
		loom_free(c->tool_content);
	}
	loom_free(r->ch);
	gw_model_release(r->model);
	loom_free(r->prompt_ids);
	loom_free(r->plp.lp);
	loom_free(r->plp.top_ids);
	loom_free(r->plp.top_lp);
	loom_free(r->echo_text);
	loom_free(r->p_offs);
	loom_free(r->piece);
	loom_free(r->sse);
	pthread_mutex_destroy(&r->mu);
	loom_free(r);
	atomic_fetch_sub(&n_tracked, 1);
}

uint64_t gw_req_id(const gw_req *r)
{
	return r->id;
}

const int32_t *gw_req_prompt(const gw_req *r, size_t *n)
{
	if (r->head)
		r = r->head;
	*n = r->n_prompt;
	return r->prompt_ids;
}

/* Under mu. */
static void wake(gw_req *r)
{
	if (r->suspended) {
		r->suspended = false;
		MHD_resume_connection(r->conn);
	}
}

/* Under mu: appends "data: <json>\n\n" (takes json, NULL = out of memory). */
static void sse_event(gw_req *r, char *json, const char *raw)
{
	const char *body = json ? json : raw;
	if (!body) {
		r->sse_oom = true;
		return;
	}
	size_t n = strlen(body), need = r->sse_len + n + 8 + 1;
	if (need > r->sse_cap) {
		size_t cap = r->sse_cap ? r->sse_cap : 512;
		while (cap < need)
			cap *= 2;
		char *p = loom_realloc(r->sse, cap);
		if (!p) {
			r->sse_oom = true;
			loom_free(json);
			return;
		}
		r->sse = p;
		r->sse_cap = cap;
	}
	r->sse_len += (size_t)sprintf(r->sse + r->sse_len, "data: %s\n\n", body);
	loom_free(json);
}

/* Choice ci's result: the request's fields, the choice's output, usage
 * over all choices. */
static gw_result result_base(const gw_req *r, size_t ci)
{
	const gw_choice *c = &r->ch[ci];
	gw_result res = {
		.api = r->api,
		.id = r->id_str,
		.created = r->created,
		.model = r->model_name,
		.index = (int)ci,
		.with_ids = r->with_ids,
		.prompt_tokens = r->n_prompt,
		.cached_tokens = min_cached(r),
		.completion_tokens = total_ids(r),
		.with_lp = r->with_lp,
		.lp_k = r->lp_k,
		.lp = { .ids = c->ids, .lp = c->lp, .top_ids = c->top_ids, .top_lp = c->top_lp,
			.stride = r->lp_stride, .offsets = c->offs, .offset_base = r->echo_cp },
		.echo_lp = r->echo && r->with_lp,
		/* without the worker's prompt logprobs (a 1-token prompt) only the
		 * first prompt token, which has none, can be shown */
		.plp = { .n = r->plp.n ? r->n_prompt : (r->n_prompt ? 1 : 0),
			 .ids = r->prompt_ids, .lp = r->plp.lp, .top_ids = r->plp.top_ids,
			 .top_lp = r->plp.top_lp, .stride = r->plp.k, .offsets = r->p_offs },
		.with_prompt_lp = r->with_plp,
		.prompt_lp_k = r->plp_k,
		.piece = piece_fn,
		.piece_ctx = (void *)r,
	};
	return res;
}

/* The view of ids [from, from + n) of the logprobs. */
static gw_lp_view lp_slice(gw_lp_view v, size_t from, size_t n)
{
	v.n = n;
	if (v.ids)
		v.ids += from;
	if (v.lp)
		v.lp += from;
	if (v.top_ids)
		v.top_ids += from * v.stride;
	if (v.top_lp)
		v.top_lp += from * v.stride;
	if (v.offsets)
		v.offsets += from;
	return v;
}

/* Under mu, when choice c finishes: splits its text into content and tool
 * calls (the calls' ids are drawn from the choice's id). */
static void tools_split(gw_req *r, gw_choice *c)
{
	size_t len;
	const char *text = gw_stream_text(c->out, &len);
	json_t *calls = NULL;
	char *content = NULL;

	if (gw_tools_parse(r->tools_fmt, text, len, (unsigned long long)c->id, &calls, &content))
		return; /* out of memory: the text stays content */
	if (!calls) {
		loom_free(content);
		return;
	}
	while (!r->parallel_tools && json_array_size(calls) > 1)
		json_array_remove(calls, json_array_size(calls) - 1);
	c->tool_calls = calls;
	c->tool_content = content;
	c->finish = "tool_calls";
}

/* Under mu, stream with tools: res gets the content of choice c that may go
 * out now (what no tool call can start in; at the end, the rest of the
 * content). */
static void tools_text(gw_req *r, gw_choice *c, bool done, gw_result *res)
{
	size_t len;
	const char *all = gw_stream_text(c->out, &len);

	res->text = all + c->tool_sent;
	res->text_len = 0;
	if (done && c->tool_calls) {
		size_t cl = c->tool_content ? strlen(c->tool_content) : 0;
		/* what was sent came before any call: the content starts with it */
		if (cl > c->tool_sent) {
			res->text = c->tool_content + c->tool_sent;
			res->text_len = cl - c->tool_sent;
		}
		c->tool_sent = cl > c->tool_sent ? cl : c->tool_sent;
		return;
	}
	size_t safe = done ? len : gw_tools_safe_prefix(r->tools_fmt, all, len);
	if (safe > c->tool_sent) {
		res->text_len = safe - c->tool_sent;
		c->tool_sent = safe;
	}
}

/* Under mu, stream: choice ci's chunk for this step's new text and ids (+
 * its end): the last n of its ids. Every chunk carries one choice, with its
 * index. A choice's first chunk is chat's role chunk, or carries
 * completions' prompt_logprobs; with echo, a chunk with the prompt's text
 * (and its logprobs) comes first. The request's first chunk carries
 * prompt_token_ids (chat: and prompt_logprobs). all: every choice has
 * finished (usage, [DONE]). */
static void stream_step(gw_req *r, size_t ci, size_t n, bool done, bool all)
{
	gw_choice *c = &r->ch[ci];
	bool chat = r->api == GW_API_CHAT;
	gw_result res = result_base(r, ci);
	res.lp = lp_slice(res.lp, c->n_ids - n, n);
	res.echo_lp = false;
	res.with_prompt_lp = r->with_plp && (chat ? !r->sent_first : !c->started);
	res.ids = c->ids + (c->n_ids - n);
	res.n_ids = n;
	res.finish = done ? c->finish : NULL;
	if (!r->sent_first) {
		res.prompt_ids = r->prompt_ids;
		res.n_prompt = r->n_prompt;
	}
	if (chat && !c->started) {
		sse_event(r, gw_openai_chunk_json(&res, true), NULL);
		res.prompt_ids = NULL;
		res.with_prompt_lp = false;
		c->started = r->sent_first = true;
	}
	if (r->echo && !c->sent_echo) {
		gw_result er = res;
		er.text = r->echo_text;
		er.text_len = r->echo_len;
		er.ids = NULL;
		er.n_ids = 0;
		er.finish = NULL;
		er.lp.n = 0;
		er.echo_lp = r->with_lp;
		sse_event(r, gw_openai_chunk_json(&er, false), NULL);
		res.prompt_ids = NULL;
		res.with_prompt_lp = false;
		c->sent_echo = c->started = r->sent_first = true;
	}
	res.text = gw_stream_take(c->out, &res.text_len);
	if (r->tools_fmt != GW_TOOLS_NONE)
		tools_text(r, c, done, &res);
	if (res.text_len && !r->first_ms)
		r->first_ms = gw_req_now_ms();
	if (done && c->tool_calls) {
		/* the rest of the content, the calls, then the end */
		gw_result t = res;
		t.finish = NULL;
		if (t.text_len)
			sse_event(r, gw_openai_chunk_json(&t, false), NULL);
		t.text_len = 0;
		t.ids = NULL;
		t.n_ids = 0;
		t.lp.n = 0;
		t.with_ids = false;
		t.with_lp = false;
		t.tool_calls = c->tool_calls;
		sse_event(r, gw_openai_chunk_json(&t, false), NULL);
		res.text_len = 0;
	}
	if (res.text_len || done || ((r->with_ids || r->with_lp) && n)) {
		sse_event(r, gw_openai_chunk_json(&res, false), NULL);
		c->started = r->sent_first = true;
	}
	if (all) {
		if (r->include_usage)
			sse_event(r, gw_openai_usage_chunk_json(&res), NULL);
		sse_event(r, NULL, "[DONE]");
	}
}

/* Grows *p to cap elements of size sz. */
static bool grow(void **p, size_t cap, size_t sz)
{
	void *q = loom_realloc(*p, (cap ? cap : 1) * sz);
	if (!q)
		return false;
	*p = q;
	return true;
}

/* Appends the item's ids (and logprobs when asked) to choice c. */
static loom_err append_ids(gw_req *r, gw_choice *c, const loom_step_item *it)
{
	size_t n = it->n_ids, k = r->lp_stride;
	if (r->with_lp && n && (it->lp.n != n || it->lp.k != k))
		return loom_fail(LOOM_EPROTO, "the worker sent no or other logprobs than asked "
				 "(%" PRIu32 " x %" PRIu32 " for %zu x %zu)", it->lp.n, it->lp.k, n, k);
	if (c->n_ids + n > c->cap_ids) {
		size_t cap = c->cap_ids ? c->cap_ids : 64;
		while (cap < c->n_ids + n)
			cap *= 2;
		if (!grow((void **)&c->ids, cap, sizeof *c->ids) ||
		    (r->with_lp && (!grow((void **)&c->lp, cap, sizeof *c->lp) ||
				    !grow((void **)&c->offs, cap, sizeof *c->offs) ||
				    !grow((void **)&c->top_ids, cap * k, sizeof *c->top_ids) ||
				    !grow((void **)&c->top_lp, cap * k, sizeof *c->top_lp))))
			return loom_fail(LOOM_ENOMEM, "out of memory storing generated ids");
		c->cap_ids = cap;
	}
	if (n)
		memcpy(c->ids + c->n_ids, it->ids, n * sizeof *it->ids);
	if (r->with_lp && n) {
		memcpy(c->lp + c->n_ids, it->lp.lp, n * sizeof *c->lp);
		if (k) {
			memcpy(c->top_ids + c->n_ids * k, it->lp.top_ids, n * k * sizeof *c->top_ids);
			memcpy(c->top_lp + c->n_ids * k, it->lp.top_lp, n * k * sizeof *c->top_lp);
		}
	}
	c->n_ids += n;
	return LOOM_OK;
}

/* Keeps the prompt's logprobs (sent once per choice, with its first token;
 * the first choice's are kept: they depend on the prompt only). */
static loom_err keep_prompt_lp(gw_req *r, const loom_logprobs *p)
{
	if (!p->n || r->plp.n)
		return LOOM_OK;
	size_t nk = (size_t)p->n * p->k;
	loom_free(r->plp.lp);
	loom_free(r->plp.top_ids);
	loom_free(r->plp.top_lp);
	r->plp.lp = loom_malloc(p->n * sizeof *r->plp.lp);
	r->plp.top_ids = loom_malloc((nk ? nk : 1) * sizeof *r->plp.top_ids);
	r->plp.top_lp = loom_malloc((nk ? nk : 1) * sizeof *r->plp.top_lp);
	if (!r->plp.lp || !r->plp.top_ids || !r->plp.top_lp)
		return loom_fail(LOOM_ENOMEM, "out of memory storing prompt logprobs");
	if (p->n + 1 != r->n_prompt)
		return loom_fail(LOOM_EPROTO, "the worker sent prompt logprobs for %" PRIu32
				 " tokens of a %zu-token prompt", p->n + 1, r->n_prompt);
	memcpy(r->plp.lp, p->lp, p->n * sizeof *r->plp.lp);
	if (nk) {
		memcpy(r->plp.top_ids, p->top_ids, nk * sizeof *r->plp.top_ids);
		memcpy(r->plp.top_lp, p->top_lp, nk * sizeof *r->plp.top_lp);
	}
	r->plp.k = p->k;
	r->plp.n = p->n;
	return LOOM_OK;
}

/* Decodes choice c's last n ids into its text, recording each one's
 * text_offset; with finish STOP the last id (the stop token) adds none. */
static loom_err push_text(gw_req *r, gw_choice *c, size_t n, int finish, bool *stopped)
{
	size_t base = c->n_ids - n;
	loom_err rc;
	for (size_t i = 0; i < n; i++) {
		if (r->with_lp)
			c->offs[base + i] = gw_stream_decoded_cp(c->out);
		if (finish == LOOM_FINISH_STOP && i + 1 == n)
			break;
		if ((rc = gw_stream_push_ids(c->out, &c->ids[base + i], 1, stopped)))
			return rc;
	}
	*stopped = gw_stream_stopped(c->out);
	return LOOM_OK;
}

/* Under mu. */
static void fail_locked(gw_req *r, int status, const char *type, const char *msg)
{
	if (r->state != ST_RUNNING)
		return;
	r->state = ST_ERROR;
	record(r, status);
	gw_api_err_set(&r->err, status, type, NULL, NULL, "%s", msg);
	if (r->stream) {
		if (r->api == GW_API_CHAT && !r->sent_first) {
			gw_result res = result_base(r, 0);
			sse_event(r, gw_openai_chunk_json(&res, true), NULL);
			r->sent_first = true;
		}
		sse_event(r, gw_openai_error_json(&r->err), NULL);
		sse_event(r, NULL, "[DONE]");
	}
	wake(r);
}

gw_step_result gw_req_on_step(gw_req *h, const loom_step_item *it)
{
	size_t n = it->n_ids, ci;
	int finish = it->finish;
	gw_step_result ret = GW_STEP_MORE;
	bool stopped = false;
	gw_req *r = owner(h, &ci);
	assert(ci < r->n_ch);
	gw_choice *c = &r->ch[ci];
	pthread_mutex_lock(&r->mu);
	if (c->ended) {
		ret = GW_STEP_DONE;
		goto out;
	}
	if (r->state != ST_RUNNING) {
		/* the request ended (failed, closed) while this choice ran: stop it */
		c->ended = true;
		ret = finish != LOOM_FINISH_NONE ? GW_STEP_DONE : GW_STEP_STOPPED;
		goto out;
	}
	if (finish == LOOM_FINISH_ABORT) {
		c->ended = true;
		fail_locked(r, 500, "server_error", "the worker aborted the request");
		ret = GW_STEP_DONE;
		goto out;
	}
	if (c->n_ids == 0 && n > 0)
		c->n_cached = it->n_cached < r->n_prompt ? it->n_cached : r->n_prompt;
	if (append_ids(r, c, it) || keep_prompt_lp(r, &it->prompt_lp) ||
	    push_text(r, c, n, finish, &stopped) ||
	    (!stopped && finish != LOOM_FINISH_NONE && gw_stream_finish(c->out))) {
		c->ended = true;
		fail_locked(r, 500, "server_error", loom_errmsg());
		ret = finish != LOOM_FINISH_NONE ? GW_STEP_DONE : GW_STEP_STOPPED;
		goto out;
	}
	stopped = gw_stream_stopped(c->out);
	bool done = stopped || finish != LOOM_FINISH_NONE;
	if (done) {
		c->finish = (stopped || finish == LOOM_FINISH_STOP) ? "stop" : "length";
		if (r->tools_fmt != GW_TOOLS_NONE)
			tools_split(r, c);
		c->ended = true;
		r->n_running--;
		ret = (stopped && finish == LOOM_FINISH_NONE) ? GW_STEP_STOPPED : GW_STEP_DONE;
	}
	bool all = done && r->n_running == 0;
	if (all)
		r->state = ST_OK;
	if (!r->stream && n && !r->first_ms)
		r->first_ms = gw_req_now_ms();
	if (r->stream) {
		stream_step(r, ci, n, done, all);
		if (r->sse_oom && !all) {
			fail_locked(r, 500, "server_error", "out of memory");
			if (!done) {
				c->ended = true;
				ret = GW_STEP_STOPPED;
			}
		}
	}
	if (all)
		record(r, 200);
	if (all || r->stream)
		wake(r);
out:
	pthread_mutex_unlock(&r->mu);
	return ret;
}

void gw_req_fail(gw_req *h, int status, const char *type, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	size_t ci;
	gw_req *r = owner(h, &ci);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&r->mu);
	if (ci < r->n_ch)
		r->ch[ci].ended = true; /* whoever fails a choice holds it no more */
	fail_locked(r, status, type, msg);
	pthread_mutex_unlock(&r->mu);
}

void gw_req_close(gw_req *h)
{
	size_t ci;
	gw_req *r = owner(h, &ci);
	pthread_mutex_lock(&r->mu);
	r->closing = true;
	fail_locked(r, 503, "service_unavailable", "the gateway is shutting down");
	wake(r);
	pthread_mutex_unlock(&r->mu);
}

bool gw_req_done(gw_req *h)
{
	size_t ci;
	gw_req *r = owner(h, &ci);
	pthread_mutex_lock(&r->mu);
	bool d = r->state != ST_RUNNING || (h->head && r->ch[ci].ended);
	pthread_mutex_unlock(&r->mu);
	return d;
}

bool gw_req_park(gw_req *r, struct MHD_Connection *c)
{
	bool done;
	pthread_mutex_lock(&r->mu);
	done = r->state != ST_RUNNING;
	if (!done) {
		r->conn = c;
		r->suspended = true;
		MHD_suspend_connection(c);
	}
	pthread_mutex_unlock(&r->mu);
	return done;
}

loom_err gw_req_generated(gw_req *h, int32_t **ids, size_t *n)
{
	loom_err rc = LOOM_OK;
	size_t ci;
	gw_req *r = owner(h, &ci);
	assert(ci < r->n_ch);
	gw_choice *c = &r->ch[ci];
	*ids = NULL;
	*n = 0;
	pthread_mutex_lock(&r->mu);
	if (r->state != ST_RUNNING || c->ended) {
		rc = LOOM_ECANCELED;
	} else if (c->n_ids) {
		*ids = loom_malloc(c->n_ids * sizeof **ids);
		if (*ids) {
			memcpy(*ids, c->ids, c->n_ids * sizeof **ids);
			*n = c->n_ids;
		} else {
			rc = loom_fail(LOOM_ENOMEM, "out of memory resuming a request");
		}
	}
	pthread_mutex_unlock(&r->mu);
	return rc == LOOM_ECANCELED ? loom_fail(rc, "the request already ended") : rc;
}

/* Under mu, ST_OK: choice ci's part of the response in *res; *joined gets
 * the echo + text buffer to free (false: out of memory). */
static bool result_choice(gw_req *r, size_t ci, gw_result *res, char **joined)
{
	gw_choice *c = &r->ch[ci];
	*res = result_base(r, ci);
	*joined = NULL;
	res->text = gw_stream_text(c->out, &res->text_len);
	if (r->echo) {
		*joined = loom_malloc(r->echo_len + res->text_len + 1);
		if (!*joined)
			return false;
		memcpy(*joined, r->echo_text, r->echo_len);
		memcpy(*joined + r->echo_len, res->text, res->text_len);
		res->text_len += r->echo_len;
		res->text = *joined;
	}
	res->finish = c->finish;
	if (c->tool_calls) {
		res->tool_calls = c->tool_calls;
		res->text = c->tool_content;
		res->text_len = c->tool_content ? strlen(c->tool_content) : 0;
	}
	res->ids = c->ids;
	res->n_ids = c->n_ids;
	res->lp.n = c->n_ids;
	res->prompt_ids = r->prompt_ids;
	res->n_prompt = r->n_prompt;
	return true;
}

char *gw_req_result(gw_req *r, int *status)
{
	char *body = NULL;
	pthread_mutex_lock(&r->mu);
	if (r->state == ST_OK) {
		gw_result res[GW_MAX_N];
		char *joined[GW_MAX_N] = { NULL };
		bool ok = true;
		for (size_t i = 0; ok && i < r->n_ch; i++)
			ok = result_choice(r, i, &res[i], &joined[i]);
		*status = 200;
		if (ok)
			body = gw_openai_response_json_n(res, r->n_ch);
		for (size_t i = 0; i < r->n_ch; i++)
			loom_free(joined[i]);
	} else {
		if (r->state == ST_RUNNING)
			gw_api_err_set(&r->err, 500, "server_error", NULL, NULL,
				       "the request has not finished");
		*status = r->err.status;
		body = gw_openai_error_json(&r->err);
	}
	pthread_mutex_unlock(&r->mu);
	return body;
}

void gw_req_attach(gw_req *r, struct MHD_Connection *c)
{
	pthread_mutex_lock(&r->mu);
	r->conn = c;
	pthread_mutex_unlock(&r->mu);
}

ssize_t gw_req_sse_read(gw_req *r, char *buf, size_t max)
{
	ssize_t ret;
	pthread_mutex_lock(&r->mu);
	if (r->sse_off < r->sse_len) {
		size_t n = r->sse_len - r->sse_off;
		if (n > max)
			n = max;
		memcpy(buf, r->sse + r->sse_off, n);
		r->sse_off += n;
		if (r->sse_off == r->sse_len)
			r->sse_off = r->sse_len = 0;
		ret = (ssize_t)n;
	} else if (r->state != ST_RUNNING) {
		ret = r->sse_oom ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
	} else if (r->closing || !r->conn) {
		ret = MHD_CONTENT_READER_END_WITH_ERROR;
	} else {
		r->suspended = true;
		MHD_suspend_connection(r->conn);
		ret = 0;
	}
	pthread_mutex_unlock(&r->mu);
	return ret;
}
