/*
 * gateway/gw_server.c — libmicrohttpd daemon, routing and request dispatch.
 *
 * A connection's per-request state is a conn_ctx (MHD's *con_cls), created
 * on the handler's first call and freed in the request-completed callback.
 * Contexts holding a generation request sit on s->active (under s->mu) so
 * that shutdown can end them all before MHD_stop_daemon, which aborts the
 * process if any connection is still suspended.
 */
#include "gw_server.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "gw_admin.h"
#include "gw_guide.h"
#include "gw_keys.h"
#include "gw_openai.h"
#include "gw_req.h"

/* Bodies over the cap but at most this long are read and dropped before the 413. */
#define DRAIN_MAX (64ull << 20)
/* How often suspended connections are checked for a client that hung up. */
#define WATCH_MS 250

typedef enum route {
	R_NOT_FOUND,
	R_BAD_METHOD,
	R_HEALTH,
	R_READY,
	R_MODELS,
	R_COMPLETIONS,
	R_CHAT,
	R_TOKENIZE,
	R_DETOKENIZE,
	R_ADMIN,       /* gw_admin's routes (admin API, vLLM LoRA routes, /metrics) */
} route;

typedef struct conn_ctx {
	route rt;
	const char *allow;     /* R_BAD_METHOD: the Allow header */
	char *body;            /* [len] accumulated upload */
	size_t len, cap;
	bool too_big;
	gw_req *req;           /* generation in flight (one reference), or NULL */
	bool held;             /* req is a stream that waited in the admission queue: its
				* response (status, headers) waits for its first token */
	gw_admin_req *adm;     /* R_ADMIN: the admin request's state */
	int64_t arrival_ms;    /* gw_req_now_ms() at the handler's first call */
	gw_keys_grant grant;   /* the request's API key (and its slot), when keys are set */
	bool denied;           /* refused by the API key rule: deny is the reply, the body
				* is dropped (len counts it) */
	uint32_t deny_retry;   /* the refusal's Retry-After (s), 0 = none */
	gw_api_err deny;
	struct MHD_Connection *conn;
	struct conn_ctx *prev, *next; /* on s->active while req is set */
} conn_ctx;

struct gw_server {
	struct MHD_Daemon *d;
	gw_models *models;
	gw_link *link;
	gw_admin *admin;       /* NULL: no admin routes */
	gw_slo *slo;           /* the classes (borrowed, or own_slo) */
	gw_slo *own_slo;
	gw_keys *keys;         /* NULL: the API routes are open */
	atomic_bool starting;  /* MHD_start_daemon runs: mhd_log keeps its last message */
	char start_err[256];
	size_t max_body;
	int port;
	pthread_mutex_t mu;
	conn_ctx *active;
	bool stopping;
	pthread_t watcher;     /* notices clients that hang up while suspended */
	bool watcher_started;
	pthread_cond_t cv;
};

static const struct {
	const char *path;
	const char *method;
	route rt;
} routes[] = {
	{"/v1/completions", "POST", R_COMPLETIONS},
	{"/v1/chat/completions", "POST", R_CHAT},
	{"/v1/models", "GET", R_MODELS},
	{"/tokenize", "POST", R_TOKENIZE},
	{"/detokenize", "POST", R_DETOKENIZE},
	{"/health", "GET", R_HEALTH},
	{"/ready", "GET", R_READY},
};

static route route_of(const char *url, const char *method, const char **allow)
{
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
		if (strcmp(url, routes[i].path) != 0)
			continue;
		if (!strcmp(method, routes[i].method) ||
		    (!strcmp(method, "HEAD") && !strcmp(routes[i].method, "GET")))
			return routes[i].rt;
		*allow = routes[i].method;
		return R_BAD_METHOD;
	}
	return R_NOT_FOUND;
}

/* ---- replies ---- */

/* Queues body (taken; NULL = out of memory -> 500) with status and content
 * type ctype (NULL = application/json). */
static enum MHD_Result reply_as(struct MHD_Connection *c, int status, char *body, const char *allow,
				const char *ctype, bool www_auth)
{
	static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\","
				  "\"param\":null,\"code\":null}}";
	struct MHD_Response *resp;
	const char *type = body && ctype ? ctype : "application/json";
	if (body) {
		resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
		loom_free(body);
	} else {
		status = 500;
		resp = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom,
						       MHD_RESPMEM_PERSISTENT);
	}
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	if (www_auth)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result reply(struct MHD_Connection *c, int status, char *body, const char *allow)
{
	return reply_as(c, status, body, allow, NULL, false);
}

static enum MHD_Result reply_err(struct MHD_Connection *c, const gw_api_err *e)
{
	return reply(c, e->status, gw_openai_error_json(e), NULL);
}

static enum MHD_Result reply_errf(struct MHD_Connection *c, int status, const char *type,
				  const char *param, const char *code, const char *allow,
				  const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static enum MHD_Result reply_errf(struct MHD_Connection *c, int status, const char *type,
				  const char *param, const char *code, const char *allow,
				  const char *fmt, ...)
{
	gw_api_err e;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	gw_api_err_set(&e, status, type, param, code, "%s", msg);
	return reply(c, status, gw_openai_error_json(&e), allow);
}

/* An error body (taken) with a Retry-After header (seconds; 0 = none). */
static enum MHD_Result reply_retry_body(struct MHD_Connection *c, int status, char *body,
					uint32_t retry_s)
{
	char ra[16];
	if (!body)
		return reply(c, 500, NULL, NULL);
	struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body,
								    MHD_RESPMEM_MUST_COPY);
	loom_free(body);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	if (retry_s) {
		snprintf(ra, sizeof ra, "%u", retry_s);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
	}
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* A refusal with a Retry-After header (seconds). */
static enum MHD_Result reply_retry(struct MHD_Connection *c, int status, uint32_t retry_s,
				   const char *msg)
{
	gw_api_err e;
	gw_api_err_set(&e, status, status == 429 ? "rate_limit_error" : "service_unavailable", NULL,
		       NULL, "%s", msg);
	return reply_retry_body(c, status, gw_openai_error_json(&e), retry_s);
}

/* The final reply of a request that ended before its response began (a
 * 503 / 429 says when to retry). */
static enum MHD_Result reply_ended(gw_server *s, struct MHD_Connection *c, gw_req *r)
{
	int status;
	char *body = gw_req_result(r, &status);
	bool retry = status == 503 || status == 429;
	return reply_retry_body(c, status, body, retry ? gw_link_retry_after_s(s->link) : 0);
}

static enum MHD_Result reply_literal(struct MHD_Connection *c, int status, const char *json)
{
	return reply(c, status, loom_strdup(json), NULL);
}

/* ---- simple routes ---- */

/* /ready stays open to probes; with API keys it names the models without
 * workers only to a key, and only those the key may use. */
static enum MHD_Result do_ready(gw_server *s, struct MHD_Connection *c)
{
	const gw_key *key = s->keys ? gw_keys_find(s->keys, MHD_lookup_connection_value(
						   c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION))
				    : NULL;
	size_t n_missing = 0;
	/* names copied under the table's lock: models may be deleted meanwhile */
	gw_models_rdlock(s->models);
	size_t n = gw_models_count_locked(s->models), k = 0;
	char (*names)[LOOM_NAME_MAX] = loom_calloc(n ? n : 1, sizeof *names);
	for (size_t i = 0; names && i < n; i++)
		strcpy(names[i], gw_models_at_locked(s->models, i)->name);
	gw_models_unlock(s->models);
	const char **missing = loom_calloc(n ? n : 1, sizeof *missing);
	if (!missing || !names) {
		loom_free(names);
		loom_free(missing);
		return reply(c, 500, NULL, NULL);
	}
	for (size_t i = 0; i < n; i++) {
		if (gw_link_model_ready(s->link, names[i]))
			continue;
		n_missing++;
		if (!s->keys || (key && gw_key_may_use(key, names[i], false)))
			missing[k++] = names[i];
	}
	bool ready = n_missing == 0 && !s->stopping;
	char *body = gw_openai_ready_json(ready, missing, k);
	loom_free(missing);
	loom_free(names);
	return reply(c, ready ? 200 : 503, body, NULL);
}

/* The base model of a request's "model", which names a base model or an
 * adapter (then *is_ad is set and *ad, when not NULL, gets a copy). The
 * model comes with a reference: the caller releases it (gw_model_release).
 * One the API key may not use is answered as one that does not exist. */
static gw_model *find_model(gw_server *s, const gw_key *key, const gw_params *p, gw_api_err *e,
			    bool *is_ad, gw_adapter *ad)
{
	gw_model *m;
	bool dummy, *adp = is_ad ? is_ad : &dummy;
	if (!gw_models_acquire(s->models, p->model, &m, adp, ad) &&
	    !gw_key_may_use(key, p->model, *adp)) {
		gw_model_release(m);
		m = NULL;
	}
	if (!m)
		gw_api_err_set(e, 404, "invalid_request_error", "model", "model_not_found",
			       "The model '%s' does not exist", p->model);
	return m;
}

/* The prompt text of a chat request (or /tokenize with messages), and
 * whether its tokenization adds the post-processor's special tokens: a
 * model's Jinja template writes them itself (apply_chat_template's
 * add_special_tokens=False), the built-in styles do not. */
static bool render_chat(const gw_model *m, const gw_params *p, char **text, size_t *len,
			bool *add_special, gw_api_err *e)
{
	*add_special = m->tmpl != GW_TMPL_MODEL;
	if (m->tmpl != GW_TMPL_MODEL) {
		if (gw_chat_render(m->tmpl, p->msgs, p->n_msgs, text, len) == LOOM_OK)
			return true;
	} else if (!m->jinja) {
		gw_api_err_set(e, 400, "invalid_request_error", "messages", NULL,
			       "model '%s' has no usable chat template: %s", m->name,
			       m->jinja_error ? m->jinja_error : "it ships none");
		return false;
	} else {
		gw_chat_ctx cx = {.messages = p->chat_messages, .tools = p->tools,
				  .kwargs = p->chat_kwargs,
				  .add_generation_prompt = p->add_generation_prompt,
				  .bos_token = m->bos_token, .eos_token = m->eos_token};
		if (gw_chat_render_jinja(m->jinja, &cx, text, len) == LOOM_OK)
			return true;
	}
	bool oom = strstr(loom_errmsg(), "out of memory") != NULL;
	gw_api_err_set(e, oom ? 500 : 400, oom ? "server_error" : "invalid_request_error",
		       "messages", NULL, "chat template of model '%s': %s", m->name, loom_errmsg());
	return false;
}

static enum MHD_Result do_tokenize(gw_server *s, struct MHD_Connection *c, conn_ctx *x)
{
	gw_params p;
	gw_api_err e;
	int32_t *ids = NULL;
	size_t n = 0;
	enum MHD_Result ret;
	gw_model *m = NULL;
	char *chat = NULL;
	size_t chat_len = 0;
	bool add = true;
	if (gw_openai_parse(GW_API_TOKENIZE, x->body, x->len, &p, &e) ||
	    !(m = find_model(s, x->grant.key, &p, &e, NULL, NULL)) ||
	    (p.n_msgs && !render_chat(m, &p, &chat, &chat_len, &add, &e))) {
		ret = reply_err(c, &e);
	} else if (loom_tok_encode(m->tok, chat ? chat : p.prompt, chat ? chat_len : strlen(p.prompt),
				   !chat || p.add_special_given ? p.add_special : add, &ids, &n)) {
		ret = reply_errf(c, 400, "invalid_request_error", chat ? "messages" : "prompt", NULL,
				 NULL, "cannot tokenize the %s: %s", chat ? "rendered messages" :
				 "'prompt'", loom_errmsg());
	} else {
		ret = reply(c, 200, gw_openai_tokens_json(ids, n, m->cfg.max_ctx), NULL);
	}
	gw_model_release(m);
	loom_free(ids);
	loom_free(chat);
	gw_params_fini(&p);
	return ret;
}

static enum MHD_Result do_detokenize(gw_server *s, struct MHD_Connection *c, conn_ctx *x)
{
	gw_params p;
	gw_api_err e;
	char *text = NULL;
	size_t n = 0;
	enum MHD_Result ret;
	gw_model *m = NULL;
	if (gw_openai_parse(GW_API_DETOKENIZE, x->body, x->len, &p, &e) ||
	    !(m = find_model(s, x->grant.key, &p, &e, NULL, NULL))) {
		ret = reply_err(c, &e);
	} else if (loom_tok_decode(m->tok, p.prompt_ids, p.n_prompt_ids, true, &text, &n)) {
		ret = reply_errf(c, 400, "invalid_request_error", "tokens", NULL, NULL,
				 "cannot detokenize 'tokens': %s", loom_errmsg());
	} else {
		ret = reply(c, 200, gw_openai_detok_json(text, n), NULL);
	}
	gw_model_release(m);
	loom_free(text);
	gw_params_fini(&p);
	return ret;
}

/* ---- generation ---- */

/* Tokenized prompt of a completions/chat request (checks vocab and context).
 * *max_tokens gets the effective limit. */
static bool build_prompt(const gw_model *m, const gw_params *p, int32_t **ids, size_t *n,
			 uint32_t *max_tokens, gw_api_err *e)
{
	char *chat = NULL;
	size_t chat_len = 0;
	bool add = true;
	*ids = NULL;
	*n = 0;
	if (p->api == GW_API_CHAT && !render_chat(m, p, &chat, &chat_len, &add, e))
		return false;
	if (chat || p->prompt) {
		const char *t = chat ? chat : p->prompt;
		loom_err rc = loom_tok_encode(m->tok, t, chat ? chat_len : strlen(t), add, ids, n);
		loom_free(chat);
		if (rc) {
			gw_api_err_set(e, rc == LOOM_ENOMEM ? 500 : 400,
				       rc == LOOM_ENOMEM ? "server_error" : "invalid_request_error",
				       p->api == GW_API_CHAT ? "messages" : "prompt", NULL,
				       "cannot tokenize the prompt: %s", loom_errmsg());
			return false;
		}
	} else {
		for (size_t i = 0; i < p->n_prompt_ids; i++) {
			if (p->prompt_ids[i] >= m->cfg.vocab) {
				gw_api_err_set(e, 400, "invalid_request_error", "prompt", NULL,
					       "'prompt': token id %d at %zu is outside the vocabulary "
					       "of model '%s' (%d ids)",
					       p->prompt_ids[i], i, m->name, m->cfg.vocab);
				return false;
			}
		}
		*ids = loom_malloc(p->n_prompt_ids * sizeof **ids);
		if (!*ids) {
			gw_api_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
			return false;
		}
		memcpy(*ids, p->prompt_ids, p->n_prompt_ids * sizeof **ids);
		*n = p->n_prompt_ids;
	}
	long long ctx = m->cfg.max_ctx;
	long long want = p->has_max_tokens ? p->max_tokens
		       : p->api == GW_API_CHAT ? ctx - (long long)*n : 16;
	if ((long long)*n >= ctx || (long long)*n + want > ctx) {
		gw_api_err_set(e, 400, "invalid_request_error",
			       (long long)*n >= ctx ? (p->api == GW_API_CHAT ? "messages" : "prompt")
						    : (p->api == GW_API_CHAT && !p->has_max_tokens
							       ? "messages" : "max_tokens"),
			       NULL,
			       "This model's maximum context length is %lld tokens. However, you "
			       "requested %lld tokens (%zu in the prompt, %lld for the completion). "
			       "Please reduce the prompt or max_tokens.",
			       ctx, (long long)*n + (want > 0 ? want : 0), *n, want > 0 ? want : 0);
		loom_free(*ids);
		*ids = NULL;
		return false;
	}
	*max_tokens = (uint32_t)want;
	return true;
}

/* What the sampling controls need the model for: logit_bias and
 * stop_token_ids within its vocabulary, min_tokens <= max_tokens. *stops
 * (loom_malloc'ed, caller frees) gets the stop ids the worker ends on: the
 * tokenizer's eos_token when the configs do not list it (unless
 * ignore_eos) and stop_token_ids (even with ignore_eos, as vLLM). */
static bool check_controls(const gw_model *m, const gw_params *p, uint32_t max_tokens,
			   int32_t **stops, uint32_t *n_stops, gw_api_err *e)
{
	size_t n_eos = p->ignore_eos ? 0 : m->n_extra_eos;
	*stops = NULL;
	*n_stops = 0;
	for (size_t i = 0; i < p->n_bias; i++) {
		if (p->bias_ids[i] >= m->cfg.vocab) {
			gw_api_err_set(e, 400, "invalid_request_error", "logit_bias", NULL,
				       "'logit_bias': token id %d is outside the vocabulary of model "
				       "'%s' (%d ids)", p->bias_ids[i], m->name, m->cfg.vocab);
			return false;
		}
	}
	for (size_t i = 0; i < p->n_stop_token_ids; i++) {
		if (p->stop_token_ids[i] >= m->cfg.vocab) {
			gw_api_err_set(e, 400, "invalid_request_error", "stop_token_ids", NULL,
				       "'stop_token_ids': token id %d is outside the vocabulary of "
				       "model '%s' (%d ids)", p->stop_token_ids[i], m->name,
				       m->cfg.vocab);
			return false;
		}
	}
	if (p->min_tokens > max_tokens) {
		gw_api_err_set(e, 400, "invalid_request_error", "min_tokens", NULL,
			       "'min_tokens' (%u) must not exceed max_tokens (%u)", p->min_tokens,
			       max_tokens);
		return false;
	}
	if (n_eos + p->n_stop_token_ids == 0)
		return true;
	*stops = loom_malloc((n_eos + p->n_stop_token_ids) * sizeof **stops);
	if (!*stops) {
		gw_api_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
		return false;
	}
	if (n_eos)
		memcpy(*stops, m->extra_eos, n_eos * sizeof **stops);
	if (p->n_stop_token_ids)
		memcpy(*stops + n_eos, p->stop_token_ids, p->n_stop_token_ids * sizeof **stops);
	*n_stops = (uint32_t)(n_eos + p->n_stop_token_ids);
	return true;
}

static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	(void)pos;
	return gw_req_sse_read(cls, buf, max);
}

static void sse_free(void *cls)
{
	gw_req_release(cls);
}

/* CANCELs on the workers the choices of r that the link still holds. */
static void cancel_choices(gw_server *s, gw_req *r)
{
	uint64_t ids[GW_MAX_N];
	size_t n = gw_req_live_choices(r, ids);
	for (size_t i = 0; i < n; i++)
		gw_link_cancel(s->link, ids[i]);
}

/* Sends r's n choices, each a SUBMIT of its own: choice i samples with
 * seed + i (vLLM's derivation: choice 0 is the request with n = 1). The
 * workers' prefix cache prefills their common prompt once. *admit: QUEUED
 * when one waits in the admission queue. On failure, *admit and *retry_s
 * say why, and the choices already sent are canceled. */
static loom_err submit_choices(gw_server *s, gw_req *r, size_t n, loom_msg_submit *sub,
			       const char *sha, const gw_link_slo *slo, gw_admit *admit,
			       uint32_t *retry_s)
{
	uint64_t seed = sub->sampling.seed;
	bool queued = false;
	loom_err rc = LOOM_OK;
	for (size_t i = 0; i < n && !rc; i++) {
		gw_req *h;
		*admit = GW_ADMIT_ERROR;
		if ((rc = gw_req_choice(r, i, &h)))
			break;
		sub->sampling.seed = seed + i;
		rc = gw_link_submit_slo(s->link, h, sub, sha, slo, admit, retry_s);
		queued |= !rc && *admit == GW_ADMIT_QUEUED;
		gw_req_release(h);
	}
	if (rc)
		cancel_choices(s, r);
	else if (queued)
		*admit = GW_ADMIT_QUEUED;
	return rc;
}

/* Queues x->req's SSE response. */
static enum MHD_Result start_sse(gw_server *s, struct MHD_Connection *c, conn_ctx *x)
{
	struct MHD_Response *resp = MHD_create_response_from_callback(
		MHD_SIZE_UNKNOWN, 16384, sse_reader, x->req, sse_free);
	if (!resp) {
		cancel_choices(s, x->req);
		return MHD_NO;
	}
	gw_req_hold(x->req); /* the response's reference, dropped by sse_free */
	gw_req_attach(x->req, c);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* A queued stream whose first output (or end) came: streams, or replies
 * with the error that ended it in the queue (a timeout: 503 + Retry-After). */
static enum MHD_Result start_held(gw_server *s, struct MHD_Connection *c, conn_ctx *x)
{
	x->held = false;
	if (gw_req_done(x->req)) {
		int status;
		char *body = gw_req_result(x->req, &status);
		loom_free(body);
		if (status != 200)
			return reply_ended(s, c, x->req);
	}
	return start_sse(s, c, x);
}

static void activate(gw_server *s, conn_ctx *x, struct MHD_Connection *c, gw_req *r)
{
	pthread_mutex_lock(&s->mu);
	x->req = r;
	x->conn = c;
	x->prev = NULL;
	x->next = s->active;
	if (s->active)
		s->active->prev = x;
	s->active = x;
	if (s->stopping)
		gw_req_close(r);
	pthread_mutex_unlock(&s->mu);
}

static void deactivate(gw_server *s, conn_ctx *x)
{
	pthread_mutex_lock(&s->mu);
	if (x->prev)
		x->prev->next = x->next;
	else if (s->active == x)
		s->active = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->prev = x->next = NULL;
	pthread_mutex_unlock(&s->mu);
}

/* The request's SLO class: body "slo_class", else the X-Loom-SLO-Class
 * header, else the default. -1 and *e (400 naming slo_class) when unknown. */
static int find_class(gw_server *s, struct MHD_Connection *c, const gw_params *p, gw_api_err *e)
{
	const char *name = p->slo_class[0] ? p->slo_class
					   : MHD_lookup_connection_value(c, MHD_HEADER_KIND,
									 "X-Loom-SLO-Class");
	if (!name || !*name)
		return gw_slo_default(s->slo);
	int i = gw_slo_find(s->slo, name);
	if (i < 0) {
		char known[512];
		gw_slo_names(s->slo, known, sizeof known);
		gw_api_err_set(e, 400, "invalid_request_error", "slo_class", NULL,
			       "unknown slo_class '%.64s'%s (known: %s)", name,
			       p->slo_class[0] ? "" : " in the X-Loom-SLO-Class header", known);
	}
	return i;
}

/* tool_choice with the model known: "none" renders no tools; "required" or
 * a named function becomes a grammar for a call in the model's syntax. */
static bool tools_setup(const gw_model *m, gw_params *p, gw_api_err *e)
{
	if (p->api != GW_API_CHAT || !p->tools)
		return true;
	if (p->tool_choice == GW_TOOL_CHOICE_NONE) {
		json_decref(p->tools);
		p->tools = NULL;
		return true;
	}
	if (p->tool_choice == GW_TOOL_CHOICE_AUTO)
		return true;
	return gw_guide_tool_call(p, m->tools_fmt, m->name, e);
}

static enum MHD_Result do_generate(gw_server *s, struct MHD_Connection *c, conn_ctx *x, gw_api api)
{
	gw_params p;
	gw_api_err e;
	int32_t *ids = NULL;
	size_t n = 0;
	uint32_t max_tokens = 0;
	gw_req *r = NULL;
	enum MHD_Result ret;
	gw_model *m = NULL;
	bool is_ad = false;
	gw_adapter ad;
	int cls = -1;
	int32_t *stops = NULL;
	uint32_t n_stops = 0;
	if (gw_openai_parse(api, x->body, x->len, &p, &e) || (cls = find_class(s, c, &p, &e)) < 0 ||
	    !(m = find_model(s, x->grant.key, &p, &e, &is_ad, &ad)) || !tools_setup(m, &p, &e) ||
	    !build_prompt(m, &p, &ids, &n, &max_tokens, &e) ||
	    !check_controls(m, &p, max_tokens, &stops, &n_stops, &e)) {
		ret = reply_err(c, &e);
		goto out;
	}
	const gw_slo_class *sc = gw_slo_at(s->slo, (size_t)cls);
	gw_req_opts o = {
		.api = api,
		.model = m,
		.model_name = p.model,
		.stream = p.stream,
		.include_usage = p.include_usage,
		.return_token_ids = p.return_token_ids,
		.stops = (const char *const *)p.stop,
		.n_stops = p.n_stop,
		.prompt_ids = ids,
		.n_prompt = n,
		.slo = s->slo,
		.slo_class = cls,
		.arrival_ms = x->arrival_ms,
		.logprobs = p.logprobs,
		.top_logprobs = p.top_logprobs,
		.echo = p.echo,
		.echo_text = p.prompt,
		.echo_len = p.prompt ? strlen(p.prompt) : 0,
		.prompt_logprobs = p.prompt_logprobs >= 0,
		.prompt_top_logprobs = p.prompt_logprobs,
		/* tool calls are parsed out of the output whenever tools were rendered */
		.tools_fmt = api == GW_API_CHAT && p.tools ? m->tools_fmt : GW_TOOLS_NONE,
		.parallel_tool_calls = p.parallel_tool_calls,
		.n_choices = (size_t)p.n,
	};
	/* the worker computes the prompt's logprobs once for echo and prompt_logprobs */
	int plp_k = p.prompt_logprobs;
	if (p.echo && p.logprobs && p.top_logprobs > plp_k)
		plp_k = p.top_logprobs;
	if (gw_req_create(&o, &r)) {
		ret = reply_errf(c, 500, "server_error", NULL, NULL, NULL, "%s", loom_errmsg());
		goto out;
	}
	loom_msg_submit sub = {
		.n_prompt = (uint32_t)n,
		.prompt_ids = ids,
		.sampling = {
			.temperature = p.temperature,
			.top_p = p.top_p,
			.top_k = p.top_k,
			.seed = p.seed,
			.max_tokens = max_tokens,
			.ignore_eos = p.ignore_eos,
			.n_stop_ids = n_stops,
			.stop_ids = stops,
			.presence_penalty = p.presence_penalty,
			.frequency_penalty = p.frequency_penalty,
			.repetition_penalty = p.repetition_penalty == 1.0f ? 0.0f
									  : p.repetition_penalty,
			.min_p = p.min_p,
			.min_tokens = p.min_tokens,
			.n_bias = (uint32_t)p.n_bias,
			.bias_ids = p.bias_ids,
			.bias = p.bias,
			.logprobs = p.logprobs,
			.top_logprobs = (uint32_t)p.top_logprobs,
			.prompt_logprobs = plp_k >= 0,
			.prompt_top_logprobs = plp_k < 0 ? 0 : (uint32_t)plp_k,
			.guide = (uint8_t)p.guide,
			.guide_text = p.guide_text,
		},
	};
	if (!p.has_seed && getrandom(&sub.sampling.seed, sizeof sub.sampling.seed, 0) < 0)
		sub.sampling.seed = (uint64_t)time(NULL) ^ gw_req_id(r);
	snprintf(sub.model, sizeof sub.model, "%s", m->name);
	if (is_ad)
		snprintf(sub.adapter, sizeof sub.adapter, "%s", ad.name);
	gw_link_slo slo = {.name = sc->name, .ttft_ms = sc->ttft_ms, .tpot_ms = sc->tpot_ms,
			   .priority = sc->priority, .refuse = sc->refuse,
			   .arrival_ms = x->arrival_ms};
	gw_admit admit;
	uint32_t retry_s = 0;
	activate(s, x, c, r); /* x takes the creator's reference */
	loom_err rc = submit_choices(s, r, (size_t)p.n, &sub, is_ad ? ad.sha : NULL, &slo, &admit,
				     &retry_s);
	if (rc) {
		int status = admit == GW_ADMIT_FULL ? 429
			   : rc == LOOM_EBUSY ? 503 : rc == LOOM_ECLOSED ? 502 : 500;
		char msg[512];
		snprintf(msg, sizeof msg, "%s", loom_errmsg());
		deactivate(s, x);
		gw_req_fail(r, status, "server_error", "%s", msg); /* accounted as a miss */
		x->req = NULL; /* r still holds the creator's reference, dropped at out */
		if (admit == GW_ADMIT_LATE || admit == GW_ADMIT_FULL)
			ret = reply_retry(c, status, retry_s ? retry_s : 1, msg);
		else if (status == 503)
			ret = reply_errf(c, 503, "service_unavailable", NULL, NULL, NULL, "%s", msg);
		else
			ret = reply_errf(c, status, "server_error", NULL, NULL, NULL, "%s", msg);
		goto out;
	}
	r = NULL;
	if (p.stream && admit == GW_ADMIT_QUEUED) {
		/* no 200 yet: a wait that times out is still a 503 the client can retry */
		x->held = true;
		ret = gw_req_park(x->req, c) ? start_held(s, c, x) : MHD_YES;
	} else if (p.stream) {
		ret = start_sse(s, c, x);
	} else if (gw_req_park(x->req, c)) {
		int status;
		char *body = gw_req_result(x->req, &status);
		ret = reply(c, status, body, NULL);
	} else {
		ret = MHD_YES; /* suspended; the link thread resumes us when it ends */
	}
out:
	gw_req_release(r);
	gw_model_release(m);
	loom_free(ids);
	loom_free(stops);
	gw_params_fini(&p);
	return ret;
}

/* ---- admin routes (gw_admin) ---- */

static enum MHD_Result do_admin(struct MHD_Connection *c, conn_ctx *x, const char *method)
{
	gw_reply r;
	if (!x->adm)
		return reply(c, 500, NULL, NULL);
	/* an import of a large folder may run longer than the inactivity timeout:
	 * without this MHD would close the connection right after the handler
	 * returns, before the reply is written. Only for an admin write that was
	 * let in (a refusal is decided early): the connection keeps no timeout
	 * from then on, which only an authorized client gets. */
	if (strcmp(method, "GET") && strcmp(method, "HEAD") && !gw_admin_decided(x->adm))
		MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
	gw_admin_finish(x->adm, &r);
	return reply_as(c, r.status, r.body, r.allow, r.content_type, r.www_authenticate);
}

/* First call: hands the request to gw_admin when it is one of its routes.
 * False when it is not. */
static bool admin_begin(gw_server *s, struct MHD_Connection *c, conn_ctx *x, const char *url,
			const char *method, long long content_length)
{
	if (!s->admin)
		return false;
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	gw_admin_in in = {
		.method = method,
		.url = url,
		.authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							     MHD_HTTP_HEADER_AUTHORIZATION),
		.peer = ci ? ci->client_addr : NULL,
		.content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							    MHD_HTTP_HEADER_CONTENT_TYPE),
		.content_length = content_length,
		.replace = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "replace"),
	};
	if (!gw_admin_begin(s->admin, &in, &x->adm))
		return false;
	x->rt = R_ADMIN;
	return true;
}

/* ---- HTTP framing (RFC 9112 section 6.3) ---- */

typedef struct framing {
	int n_cl, n_te;
	const char *cl;        /* the first Content-Length value */
	bool cl_differ;        /* another Content-Length with another value */
	bool te_other;         /* a Transfer-Encoding other than exactly "chunked" */
} framing;

static enum MHD_Result framing_header(void *cls, enum MHD_ValueKind kind, const char *key,
				      const char *value)
{
	framing *f = cls;
	(void)kind;
	if (!key || !value)
		return MHD_YES;
	if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
		if (f->n_cl++ == 0)
			f->cl = value;
		else if (strcmp(value, f->cl))
			f->cl_differ = true;
	} else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
		size_t n = strlen(value);
		while (n && (value[n - 1] == ' ' || value[n - 1] == '\t'))
			n--;
		f->n_te++;
		f->te_other |= n != 7 || strncasecmp(value, "chunked", 7);
	}
	return MHD_YES;
}

/*
 * NULL when the request's body length is unambiguous, else why not. What
 * libmicrohttpd 0.9.75 lets through, and a proxy in front may read another
 * way (request smuggling): two Content-Length headers with different values
 * (MHD takes the first), a Transfer-Encoding other than a single "chunked"
 * (gzip, identity, "gzip, chunked", ...: MHD then reads the body up to the
 * connection's end, so such a request got no answer at all), and both
 * Transfer-Encoding and Content-Length. Each is a 400 and the connection is
 * closed. A malformed or negative Content-Length MHD answers itself (400
 * and close) before the gateway sees the request.
 */
static const char *bad_framing(struct MHD_Connection *c)
{
	framing f = {0};
	MHD_get_connection_values(c, MHD_HEADER_KIND, framing_header, &f);
	if (f.cl_differ)
		return "the request has Content-Length headers with different values";
	if (f.n_te > 1 || f.te_other)
		return "unsupported Transfer-Encoding: only a single 'chunked' is accepted";
	if (f.n_te && f.n_cl)
		return "the request has both Transfer-Encoding and Content-Length";
	return NULL;
}

/* A 400 for unsound framing; the connection is closed after it (whatever
 * follows on it cannot be told apart from this request's body). */
static enum MHD_Result reply_bad_framing(struct MHD_Connection *c, const char *why)
{
	gw_api_err e;
	gw_api_err_set(&e, 400, "invalid_request_error", NULL, NULL, "%s", why);
	char *body = gw_openai_error_json(&e);
	if (!body)
		return MHD_NO;
	struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(body), body,
								    MHD_RESPMEM_MUST_COPY);
	loom_free(body);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_BAD_REQUEST, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* ---- API keys (gw_keys) ---- */

/* First call of a request to a route other than /health, /ready and the
 * admin routes: with API keys configured, its key must be known and within
 * its limits. False when refused (x->deny is the reply). */
static bool keys_admit(gw_server *s, struct MHD_Connection *c, conn_ctx *x)
{
	if (!s->keys || x->rt == R_HEALTH || x->rt == R_READY)
		return true;
	const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						       MHD_HTTP_HEADER_AUTHORIZATION);
	if (gw_keys_admit(s->keys, auth, x->rt == R_COMPLETIONS || x->rt == R_CHAT, x->arrival_ms,
			  &x->grant, &x->deny, &x->deny_retry))
		return true;
	x->denied = true;
	return false;
}

/* ---- MHD callbacks ---- */

static enum MHD_Result dispatch(gw_server *s, struct MHD_Connection *c, conn_ctx *x,
				const char *method, const char *url)
{
	if (x->rt == R_ADMIN)
		return do_admin(c, x, method);
	if (x->denied)
		return x->deny.status == 401
		       ? reply_as(c, 401, gw_openai_error_json(&x->deny), NULL, NULL, true)
		       : reply_retry_body(c, x->deny.status, gw_openai_error_json(&x->deny),
					  x->deny_retry);
	if (x->too_big)
		return reply_errf(c, 413, "invalid_request_error", NULL, NULL, NULL,
				  "the request body is larger than %zu bytes", s->max_body);
	switch (x->rt) {
	case R_NOT_FOUND:
		return reply_errf(c, 404, "invalid_request_error", NULL, NULL, NULL,
				  "no route for %s %s", method, url);
	case R_BAD_METHOD:
		return reply_errf(c, 405, "invalid_request_error", NULL, NULL, x->allow,
				  "%s is not allowed on %s (use %s)", method, url, x->allow);
	case R_HEALTH:
		return reply_literal(c, 200, "{\"status\":\"ok\"}");
	case R_READY:
		return do_ready(s, c);
	case R_MODELS:
		return reply(c, 200, gw_keys_filter_models(x->grant.key,
							   gw_openai_models_json(s->models)), NULL);
	case R_TOKENIZE:
		return do_tokenize(s, c, x);
	case R_DETOKENIZE:
		return do_detokenize(s, c, x);
	case R_COMPLETIONS:
		return do_generate(s, c, x, GW_API_COMPLETIONS);
	case R_CHAT:
		return do_generate(s, c, x, GW_API_CHAT);
	case R_ADMIN:
		break;
	}
	return MHD_NO;
}

static bool body_append(gw_server *s, conn_ctx *x, const char *data, size_t n)
{
	if (x->too_big || x->len + n > s->max_body) {
		x->too_big = true;
		return true;
	}
	if (x->len + n + 1 > x->cap) {
		size_t cap = x->cap ? x->cap : 1024;
		while (cap < x->len + n + 1)
			cap *= 2;
		char *p = loom_realloc(x->body, cap);
		if (!p)
			return false;
		x->body = p;
		x->cap = cap;
	}
	memcpy(x->body + x->len, data, n);
	x->len += n;
	x->body[x->len] = '\0';
	return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	gw_server *s = cls;
	conn_ctx *x = *con_cls;
	(void)version;
	if (!x) {
		x = loom_calloc(1, sizeof *x);
		if (!x)
			return MHD_NO;
		*con_cls = x;
		x->arrival_ms = gw_req_now_ms();
		const char *why = bad_framing(c);
		if (why) {
			x->rt = R_NOT_FOUND; /* nothing runs: the reply is queued now */
			return reply_bad_framing(c, why);
		}
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							     MHD_HTTP_HEADER_CONTENT_LENGTH);
		unsigned long long want = cl ? strtoull(cl, NULL, 10) : 0;
		if (admin_begin(s, c, x, url, method, cl ? (long long)want : -1)) {
			/* a refusal decided before the body: a huge body is not read */
			if (x->adm && gw_admin_decided(x->adm) && want > DRAIN_MAX)
				return do_admin(c, x, method);
			return MHD_YES;
		}
		x->rt = route_of(url, method, &x->allow);
		if (!keys_admit(s, c, x) && want > DRAIN_MAX)
			return dispatch(s, c, x, method, url);
		if (want > s->max_body) {
			x->too_big = true;
			/* a huge body is refused before it is read (MHD then closes the
			 * connection); a moderately large one is drained so that the client,
			 * still sending, reliably reads the 413 instead of a reset */
			if (want > DRAIN_MAX)
				return dispatch(s, c, x, method, url);
		}
		return MHD_YES; /* answer on a later call: keeps the connection alive */
	}
	if (*upload_size) {
		size_t n = *upload_size;
		*upload_size = 0;
		if (x->rt == R_ADMIN) {
			/* past a refusal, a body that goes on and on closes the connection */
			return !x->adm || gw_admin_body(x->adm, upload, n) ? MHD_YES : MHD_NO;
		}
		if (x->denied) /* dropped; one that goes on and on closes the connection */
			return (x->len += n) <= DRAIN_MAX ? MHD_YES : MHD_NO;
		return body_append(s, x, upload, n) ? MHD_YES : MHD_NO;
	}
	if (x->req && x->held) /* resumed: a queued stream left the queue */
		return start_held(s, c, x);
	if (x->req) /* resumed: the non-stream request ended */
		return reply_ended(s, c, x->req);
	if (s->stopping)
		return reply_errf(c, 503, "service_unavailable", NULL, NULL, NULL,
				  "the gateway is shutting down");
	return dispatch(s, c, x, method, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	gw_server *s = cls;
	conn_ctx *x = *con_cls;
	(void)c;
	if (!x)
		return;
	if (x->req) {
		deactivate(s, x);
		bool done = gw_req_done(x->req);
		if (!done)
			LOOM_DEBUG("request %llu: client went away (code %d), canceling",
				   (unsigned long long)gw_req_id(x->req), (int)toe);
		/* all of them when the client left; a failed request's other choices */
		cancel_choices(s, x->req);
		if (!done)
			gw_req_close(x->req);
		gw_req_release(x->req);
	}
	gw_keys_release(s->keys, &x->grant);
	gw_admin_req_free(x->adm);
	loom_free(x->body);
	loom_free(x);
	*con_cls = NULL;
}

/* True when the peer of connection c closed or reset its socket. A suspended
 * connection is out of MHD's poll set, so MHD itself would notice only at the
 * next write (for a non-stream request: after the whole generation). */
static bool client_gone(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	char b;
	if (!ci)
		return false;
	/* a TLS client's close_notify alert stays unread ahead of its FIN: the
	 * peer's shutdown shows as POLLRDHUP whatever is still queued */
	struct pollfd pfd = {.fd = ci->connect_fd, .events = POLLRDHUP};
	if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
		return true;
	ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void *watch_main(void *arg)
{
	gw_server *s = arg;
	pthread_mutex_lock(&s->mu);
	while (!s->stopping) {
		for (conn_ctx *x = s->active; x; x = x->next) {
			if (!gw_req_done(x->req) && client_gone(x->conn)) {
				LOOM_DEBUG("request %llu: client hung up, canceling",
					   (unsigned long long)gw_req_id(x->req));
				cancel_choices(s, x->req);
				gw_req_fail(x->req, 499, "invalid_request_error", "client closed the request");
			}
		}
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += WATCH_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&s->cv, &s->mu, &ts);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	gw_server *s = cls;
	char msg[512];
	vsnprintf(msg, sizeof msg, fmt, ap);
	size_t n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	if (atomic_load(&s->starting)) /* why the start failed (a bad certificate) */
		snprintf(s->start_err, sizeof s->start_err, "%s", msg);
	LOOM_DEBUG("microhttpd: %s", msg);
}

/*
 * The connection limit MHD gets: want, clamped to the open-file limit less
 * GW_SERVER_FD_RESERVE, and at least one connection per pool thread (MHD
 * splits the limit between them).
 *
 * Why this keeps /health and /metrics reachable under pressure: an HTTP
 * server cannot tell a health probe from an idle connection before it has
 * read the request, so nothing can be reserved per route. What kept them
 * out before was the fd limit and MHD's default limit (FD_SETSIZE - 4):
 * at either, MHD stops accepting, new connections wait in the listen
 * backlog, and idle connections never left. Now the limit sits below the
 * fd limit (accept never fails for lack of descriptors and the worker links
 * and the store keep theirs), one client address can hold only its share
 * (max_conns_per_ip), and connections that neither send nor read for
 * conn_timeout_s are closed, so the slots of idle, half-sent or stalled
 * connections come back. Suspended connections (a request waiting for its
 * tokens) are exempt from the timeout: MHD restarts it when they resume.
 */
static unsigned conn_limit(unsigned want, unsigned pool)
{
	struct rlimit rl;
	unsigned threads = pool ? pool : 1;
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur != RLIM_INFINITY) {
		rlim_t room = rl.rlim_cur > GW_SERVER_FD_RESERVE + threads
			    ? rl.rlim_cur - GW_SERVER_FD_RESERVE : threads;
		if (want > room) {
			LOOM_WARN("connection limit %u lowered to %llu: the open-file limit is %llu "
				  "(raise it with ulimit -n / LimitNOFILE)", want,
				  (unsigned long long)room, (unsigned long long)rl.rlim_cur);
			want = (unsigned)room;
		}
	}
	return want < threads ? threads : want;
}

loom_err gw_server_start(const gw_server_opts *o, gw_server **out)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV | AI_PASSIVE};
	struct addrinfo *ai = NULL;
	char port[16];
	loom_err rc;
	*out = NULL;
	gw_server *s = loom_calloc(1, sizeof *s);
	if (!s)
		return loom_fail(LOOM_ENOMEM, "out of memory starting the HTTP server");
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	s->models = o->models;
	s->link = o->link;
	s->admin = o->admin;
	s->slo = o->slo;
	s->keys = o->keys;
	if (!s->slo) {
		if ((rc = gw_slo_create(&s->own_slo)))
			goto fail;
		s->slo = s->own_slo;
	}
	s->max_body = o->max_body;
	snprintf(port, sizeof port, "%d", o->port);
	int gai = getaddrinfo(o->host, port, &hints, &ai);
	if (gai) {
		rc = loom_fail(LOOM_EINVAL, "--host %s: %s", o->host, gai_strerror(gai));
		goto fail;
	}
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/* a pool of 1 is MHD's single internal thread (it warns about a pool of 1) */
	unsigned pool = o->threads > 1 ? (unsigned)o->threads : 0;
	unsigned limit = conn_limit(o->max_conns ? o->max_conns : GW_SERVER_MAX_CONNS, pool);
	/* HTTPS: GnuTLS through libmicrohttpd, TLS 1.2 and 1.3 only */
	struct MHD_OptionItem tls[] = {
		{MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)o->tls_cert},
		{MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)o->tls_key},
		{MHD_OPTION_HTTPS_PRIORITIES, 0, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"},
		{MHD_OPTION_END, 0, NULL},
	};
	if (o->tls_cert) {
		if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
			rc = loom_fail(LOOM_EUNSUPPORTED, "this libmicrohttpd is built without TLS: "
				       "HTTPS (--tls-cert) is not available");
			goto fail;
		}
		flags |= MHD_USE_TLS;
	} else {
		tls[0].option = MHD_OPTION_END;
	}
	atomic_store(&s->starting, true);
	s->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_request, s,
				MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
				MHD_OPTION_ARRAY, tls,
				MHD_OPTION_SOCK_ADDR, ai->ai_addr,
				MHD_OPTION_THREAD_POOL_SIZE, pool,
				MHD_OPTION_CONNECTION_LIMIT, limit,
				MHD_OPTION_PER_IP_CONNECTION_LIMIT, o->max_conns_per_ip,
				MHD_OPTION_CONNECTION_TIMEOUT, o->conn_timeout_s,
				MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
				MHD_OPTION_END);
	atomic_store(&s->starting, false);
	if (!s->d && o->tls_cert) {
		rc = loom_fail(LOOM_EIO, "cannot start HTTPS on %s:%d: %s (is the address free, and "
			       "--tls-key the private key of --tls-cert's first certificate?)",
			       o->host, o->port, s->start_err[0] ? s->start_err : "libmicrohttpd failed");
		goto fail;
	}
	if (!s->d) {
		rc = loom_fail(LOOM_EIO, "cannot listen on %s:%d (address in use or not allowed)",
			       o->host, o->port);
		goto fail;
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	s->port = di && di->port ? di->port : o->port;
	freeaddrinfo(ai);
	ai = NULL;
	if (pthread_create(&s->watcher, NULL, watch_main, s)) {
		rc = loom_fail(LOOM_EINTERNAL, "cannot start the connection watcher thread");
		goto fail;
	}
	s->watcher_started = true;
	*out = s;
	return LOOM_OK;
fail:
	if (ai)
		freeaddrinfo(ai);
	if (s->d)
		MHD_stop_daemon(s->d);
	gw_slo_destroy(s->own_slo);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	loom_free(s);
	return rc;
}

int gw_server_port(const gw_server *s)
{
	return s->port;
}

void gw_server_stop(gw_server *s)
{
	if (!s)
		return;
	/* the listen socket is ours after quiesce, but the pool threads drop it from
	 * their epoll sets on their next turn: closing it before MHD_stop_daemon
	 * made that fail (MHD panics, the process aborts) */
	MHD_socket lfd = MHD_quiesce_daemon(s->d);
	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	pthread_cond_signal(&s->cv);
	for (conn_ctx *x = s->active; x; x = x->next)
		gw_req_close(x->req);
	pthread_mutex_unlock(&s->mu);
	if (s->watcher_started)
		pthread_join(s->watcher, NULL);
	/* let resumed streams write their last event before the daemon closes them */
	for (int i = 0; i < 50; i++) {
		const union MHD_DaemonInfo *di =
			MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
		pthread_mutex_lock(&s->mu);
		bool busy = s->active != NULL;
		pthread_mutex_unlock(&s->mu);
		if (!busy || (di && di->num_connections == 0))
			break;
		usleep(10000);
	}
	MHD_stop_daemon(s->d);
	if (lfd != MHD_INVALID_SOCKET)
		close(lfd);
	gw_slo_destroy(s->own_slo);
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	loom_free(s);
}
