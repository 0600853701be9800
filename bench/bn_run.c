/*
 * bench/bn_run.c — the load loop: libcurl multi, one thread, many streams.
 *
 * Each request is one easy handle (a "transfer") added to a multi handle
 * whose connection cache keeps keep-alive connections between requests.
 * The loop: launch what is due (open loop: arrivals up to now; closed loop:
 * until `concurrency` are in flight), let curl move bytes, take finished
 * transfers, redraw the progress line, sleep in curl_multi_poll until the
 * next arrival or socket activity (at most 100 ms). SSE bytes are parsed as
 * they arrive, inside curl's write callback, so the first-token time is
 * taken when the chunk is read, not when the stream ends.
 *
 * --turns: a turn that ends well queues its conversation's next turn in a
 * FIFO of follow-ups (bn_workload_follow builds it from the ids the stream
 * returned); the loop sends follow-ups before new arrivals or conversations.
 */
#include "bench/bn_run.h"

#include <curl/curl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench/bn_sse.h"
#include "bench/bn_workload.h"
#include "common/alloc.h"

#define ERRBODY_MAX 2048
#define SSE_MAX_LINE (4u << 20)

const char *bn_errkind_name(bn_errkind k)
{
	static const char *const names[BN_ERR_COUNT] = {
		"ok", "http_4xx", "http_5xx", "http_other", "transport", "timeout",
		"sse_error", "protocol",
	};
	return (unsigned)k < BN_ERR_COUNT ? names[k] : "?";
}

typedef struct run run;

/* One request in flight. */
typedef struct xfer {
	run *r;
	CURL *easy;
	struct curl_slist *hdrs;
	char *body;
	bn_sse *sse;
	bn_reqspec spec;     /* what was sent (its conversation and turn) */
	bn_ids ids;          /* --turns: the generated ids, from the stream */
	size_t idx;          /* its sample */
	int slot;            /* index in run.live */
	long status;
	int status_known;
	char *errbody;       /* first bytes of a non-200 body (ERRBODY_MAX) */
	size_t errlen;
	long usage;          /* usage.completion_tokens, -1 none */
	long cached;         /* usage.prompt_tokens_details.cached_tokens, -1 none */
	int done;            /* saw data: [DONE] */
	bn_errkind fail;     /* SSE error event or protocol problem seen in the stream */
	char msg[200];
	char curlerr[CURL_ERROR_SIZE];
} xfer;

struct run {
	const bn_config *c;
	const bn_run_opts *o;
	CURLM *multi;
	bn_workload *wl;
	char endpoint[1024];
	struct timespec t0;
	bn_result *res;
	size_t cap;
	xfer **live;         /* (n_live) transfers in flight */
	int n_live, live_cap;
	bn_reqspec next;     /* the next request to send */
	int have_next;       /* 0: the workload is exhausted or bounds reached */
	bn_reqspec *pending; /* (pending_cap) ring of follow-up turns due, t = when due */
	int pending_head, n_pending, pending_cap;
	long sent, done, errors, tokens_live;
	double last_progress;
	int tty;
	loom_err fatal;
};

static double now_s(const run *r)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - r->t0.tv_sec) + (double)(t.tv_nsec - r->t0.tv_nsec) * 1e-9;
}

static void note_example(run *r, bn_errkind k, const char *msg)
{
	if (!r->res->examples[k][0])
		snprintf(r->res->examples[k], sizeof r->res->examples[k], "%s", msg);
}

/* ---- streaming callbacks ---- */

static int on_event(void *ctx, const char *data, size_t len)
{
	xfer *x = ctx;
	bn_sample *s = &x->r->res->samples[x->idx];
	bn_chunk ch;
	if (x->done)
		return 0; /* events after [DONE] are ignored */
	bn_chunk_parse(data, len, &ch, x->spec.slot >= 0 ? &x->ids : NULL);
	switch (ch.kind) {
	case BN_CHUNK_DONE:
		x->done = 1;
		break;
	case BN_CHUNK_DATA:
		if (ch.text_len > 0) {
			if (s->chunks++ == 0)
				s->ttft = now_s(x->r) - s->t_sched;
			x->r->tokens_live++;
		}
		if (ch.completion_tokens >= 0)
			x->usage = ch.completion_tokens;
		if (ch.cached_tokens >= 0)
			x->cached = ch.cached_tokens;
		break;
	case BN_CHUNK_ERROR:
		if (x->fail == BN_OK) {
			x->fail = BN_ERR_SSE;
			snprintf(x->msg, sizeof x->msg, "SSE error event: %s", ch.message);
		}
		break;
	case BN_CHUNK_BAD:
		x->fail = BN_ERR_PROTOCOL;
		snprintf(x->msg, sizeof x->msg, "%s", ch.message);
		return 1; /* abort the transfer */
	}
	return 0;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud)
{
	xfer *x = ud;
	size_t n = size * nmemb;
	if (!x->status_known) {
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
		x->status_known = 1;
	}
	if (x->status != 200) {
		size_t take = n < ERRBODY_MAX - x->errlen ? n : ERRBODY_MAX - x->errlen;
		if (!x->errbody)
			x->errbody = loom_malloc(ERRBODY_MAX + 1);
		if (x->errbody && take) {
			memcpy(x->errbody + x->errlen, p, take);
			x->errlen += take;
			x->errbody[x->errlen] = '\0';
		}
		return n;
	}
	loom_err rc = bn_sse_feed(x->sse, p, n, on_event, x);
	if (rc == LOOM_OK)
		return n;
	if (rc != LOOM_ECANCELED && x->fail == BN_OK) {
		x->fail = BN_ERR_PROTOCOL;
		snprintf(x->msg, sizeof x->msg, "%s", loom_errmsg());
	}
	return 0; /* CURLE_WRITE_ERROR ends the transfer */
}

/* ---- transfers ---- */

static void xfer_free(xfer *x)
{
	if (!x)
		return;
	if (x->easy) {
		curl_multi_remove_handle(x->r->multi, x->easy);
		curl_easy_cleanup(x->easy);
	}
	curl_slist_free_all(x->hdrs);
	loom_free(x->body);
	loom_free(x->errbody);
	bn_ids_fini(&x->ids);
	bn_sse_destroy(x->sse);
	loom_free(x);
}

static loom_err grow_samples(run *r)
{
	if (r->res->n < r->cap)
		return LOOM_OK;
	size_t nc = r->cap ? r->cap * 2 : 1024;
	bn_sample *ns = loom_realloc(r->res->samples, nc * sizeof *ns);
	if (!ns)
		return loom_fail(LOOM_ENOMEM, "no memory for %zu samples", nc);
	r->res->samples = ns;
	r->cap = nc;
	return LOOM_OK;
}

static loom_err launch(run *r, const bn_reqspec *spec, double t_sched)
{
	const bn_config *c = r->c;
	loom_err rc;
	xfer *x = NULL;
	if ((rc = grow_samples(r)))
		return rc;
	if (r->n_live == r->live_cap) {
		int nc = r->live_cap ? r->live_cap * 2 : 64;
		xfer **nl = loom_realloc(r->live, (size_t)nc * sizeof *nl);
		if (!nl)
			return loom_fail(LOOM_ENOMEM, "no memory for %d transfers", nc);
		r->live = nl;
		r->live_cap = nc;
	}
	x = loom_calloc(1, sizeof *x);
	if (!x)
		return loom_fail(LOOM_ENOMEM, "no memory for a transfer");
	x->r = r;
	x->spec = *spec;
	x->usage = -1;
	x->cached = -1;
	if ((rc = bn_sse_create(SSE_MAX_LINE, &x->sse)) ||
	    (rc = bn_workload_body(r->wl, spec, &x->body)))
		goto fail;
	x->idx = r->res->n;
	bn_sample *s = &r->res->samples[r->res->n++];
	*s = (bn_sample){
		.t_sched = t_sched, .ttft = NAN, .latency = NAN, .t_end = NAN,
		.adapter = spec->adapter, .slo = spec->slo, .conv = spec->conv,
		.turn = spec->turn, .cached_tokens = -1,
		.prompt_tokens = spec->prompt_tokens, .max_tokens = spec->output_tokens,
	};
	x->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	x->hdrs = x->hdrs ? curl_slist_append(x->hdrs, "Accept: text/event-stream") : NULL;
	x->hdrs = x->hdrs ? curl_slist_append(x->hdrs, "Expect:") : NULL;
	if (x->hdrs && c->api_key) {
		char h[1100];
		snprintf(h, sizeof h, "Authorization: Bearer %s", c->api_key);
		x->hdrs = curl_slist_append(x->hdrs, h);
	}
	x->easy = curl_easy_init();
	if (!x->hdrs || !x->easy) {
		rc = loom_fail(LOOM_ENOMEM, "libcurl: no memory for a request");
		goto fail;
	}
	curl_easy_setopt(x->easy, CURLOPT_URL, r->endpoint);
	curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
	curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(x->body));
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
	curl_easy_setopt(x->easy, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(x->easy, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(x->easy, CURLOPT_PRIVATE, x);
	curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, x->curlerr);
	curl_easy_setopt(x->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(x->easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(x->easy, CURLOPT_TIMEOUT_MS, (long)(c->timeout_s * 1000.0));
	curl_easy_setopt(x->easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	CURLMcode mc = curl_multi_add_handle(r->multi, x->easy);
	if (mc != CURLM_OK) {
		curl_easy_cleanup(x->easy);
		x->easy = NULL;
		rc = loom_fail(LOOM_EINTERNAL, "libcurl: curl_multi_add_handle: %s (%d)",
			       curl_multi_strerror(mc), (int)mc);
		goto fail;
	}
	s->lag = now_s(r) - t_sched;
	x->slot = r->n_live;
	r->live[r->n_live++] = x;
	r->sent++;
	return LOOM_OK;
fail:
	xfer_free(x);
	return rc;
}

/* ---- bounds and follow-up turns ---- */

/* Whether the bounds still allow sending a request at time t. */
static int bounds_ok(const run *r, double t)
{
	const bn_config *c = r->c;
	if (r->o->stop && *r->o->stop)
		return 0;
	if (c->requests > 0 && r->sent >= c->requests)
		return 0;
	if (c->duration_s > 0 && t >= c->duration_s)
		return 0;
	return 1;
}

/* Whether a new request (arrival, or new conversation) may go out at t. */
static int may_send(const run *r, double t)
{
	return r->have_next && bounds_ok(r, t);
}

static loom_err push_pending(run *r, const bn_reqspec *s)
{
	if (r->n_pending == r->pending_cap) {
		int nc = r->pending_cap ? r->pending_cap * 2 : 64;
		bn_reqspec *np = loom_malloc((size_t)nc * sizeof *np);
		if (!np)
			return loom_fail(LOOM_ENOMEM, "no memory for %d follow-up turns", nc);
		for (int i = 0; i < r->n_pending; i++)
			np[i] = r->pending[(r->pending_head + i) % r->pending_cap];
		loom_free(r->pending);
		r->pending = np;
		r->pending_cap = nc;
		r->pending_head = 0;
	}
	r->pending[(r->pending_head + r->n_pending++) % r->pending_cap] = *s;
	return LOOM_OK;
}

static bn_reqspec pop_pending(run *r)
{
	bn_reqspec s = r->pending[r->pending_head];
	r->pending_head = (r->pending_head + 1) % r->pending_cap;
	r->n_pending--;
	return s;
}

/* Ends the conversations of every follow-up not sent (the bounds are reached). */
static void drop_pending(run *r)
{
	while (r->n_pending > 0) {
		bn_reqspec s = pop_pending(r);
		bn_workload_end(r->wl, &s);
	}
}

/* --turns: x ended (k) at t; queues its conversation's next turn, due at t,
 * or ends the conversation. A local failure (memory) stops the run. */
static void follow_up(run *r, xfer *x, bn_errkind k, double t)
{
	const bn_sample *s = &r->res->samples[x->idx];
	bn_reqspec next;
	if (x->spec.slot < 0)
		return;
	if (k != BN_OK || !bounds_ok(r, t) || r->fatal) {
		bn_workload_end(r->wl, &x->spec);
		return;
	}
	/* the ids exactly as generated, so the next prompt extends this one;
	 * without them, random stand-ins of the same count */
	bool have = x->ids.seen && !x->ids.bad && (x->ids.n > 0 || s->tokens == 0);
	loom_err rc = bn_workload_follow(r->wl, &x->spec, have ? x->ids.v : NULL,
					 have ? (int)x->ids.n : s->tokens, &next);
	if (rc == LOOM_ENOTFOUND)
		return;
	if (!rc && !have)
		r->res->substituted++;
	next.t = t;
	if (!rc && (rc = push_pending(r, &next)))
		bn_workload_end(r->wl, &next);
	if (rc)
		r->fatal = rc;
}

/* Sends the follow-ups due while fewer than cap requests are in flight. */
static loom_err send_follow_ups(run *r, double t, int cap)
{
	loom_err rc;
	while (r->n_pending > 0 && r->n_live < cap) {
		if (!bounds_ok(r, t)) {
			drop_pending(r);
			break;
		}
		bn_reqspec s = pop_pending(r);
		if ((rc = launch(r, &s, s.t))) {
			bn_workload_end(r->wl, &s);
			return rc;
		}
	}
	return LOOM_OK;
}

/* The "error.message" of an OpenAI-shaped error body, else its first bytes. */
static void http_error_message(const xfer *x, char *out, size_t n)
{
	json_t *j = x->errbody ? json_loads(x->errbody, 0, NULL) : NULL;
	json_t *m = json_object_get(json_object_get(j, "error"), "message");
	if (json_is_string(m))
		snprintf(out, n, "HTTP %ld: %s", x->status, json_string_value(m));
	else
		snprintf(out, n, "HTTP %ld: %.120s", x->status, x->errbody ? x->errbody : "");
	json_decref(j);
}

/* Ends a transfer: records its outcome and frees it. */
static void finish(run *r, xfer *x, CURLcode res, bn_errkind forced, const char *forced_msg)
{
	bn_sample *s = &r->res->samples[x->idx];
	char msg[200];
	double t = now_s(r);
	bn_errkind k = BN_OK;
	msg[0] = '\0';
	if (x->easy && !x->status_known)
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
	s->status = (int)x->status;
	if (forced != BN_OK) {
		k = forced;
		snprintf(msg, sizeof msg, "%s", forced_msg);
	} else if (x->fail != BN_OK) {
		k = x->fail;
		snprintf(msg, sizeof msg, "%s", x->msg);
	} else if (res == CURLE_OPERATION_TIMEDOUT) {
		k = BN_ERR_TIMEOUT;
		snprintf(msg, sizeof msg, "no complete response within --timeout %g s",
			 r->c->timeout_s);
	} else if (res != CURLE_OK) {
		k = BN_ERR_TRANSPORT;
		snprintf(msg, sizeof msg, "%.60s: %.120s", curl_easy_strerror(res),
			 x->curlerr[0] ? x->curlerr : "(no detail)");
	} else if (x->status != 200) {
		k = x->status >= 400 && x->status < 500   ? BN_ERR_HTTP_4XX
		    : x->status >= 500 && x->status < 600 ? BN_ERR_HTTP_5XX
							  : BN_ERR_HTTP_OTHER;
		http_error_message(x, msg, sizeof msg);
	} else {
		loom_err rc = bn_sse_finish(x->sse, on_event, x);
		if (x->fail != BN_OK) {
			k = x->fail;
			snprintf(msg, sizeof msg, "%s", x->msg);
		} else if (rc && rc != LOOM_ECANCELED) {
			k = BN_ERR_PROTOCOL;
			snprintf(msg, sizeof msg, "%s", loom_errmsg());
		} else if (!x->done) {
			k = BN_ERR_PROTOCOL;
			snprintf(msg, sizeof msg, "the stream ended without data: [DONE]");
		}
	}
	s->err = k;
	s->t_end = t;
	s->tokens = x->usage >= 0 ? (int)x->usage : s->chunks;
	s->cached_tokens = x->cached;
	if (k == BN_OK) {
		s->latency = t - s->t_sched;
	} else {
		r->errors++;
		note_example(r, k, msg);
	}
	r->done++;
	follow_up(r, x, k, t);
	/* swap-remove from the live list */
	r->live[x->slot] = r->live[--r->n_live];
	r->live[x->slot]->slot = x->slot;
	xfer_free(x);
}

static void take_finished(run *r)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(r->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		xfer *x = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		CURLcode res = m->data.result;
		finish(r, x, res, BN_OK, NULL);
	}
}

static void abort_all(run *r, bn_errkind k, const char *msg)
{
	while (r->n_live > 0)
		finish(r, r->live[r->n_live - 1], CURLE_OK, k, msg);
}

/* ---- progress ---- */

static void progress(run *r, double t, int final)
{
	const bn_config *c = r->c;
	double frac = -1;
	char line[256], bar[32];
	int n;
	if (c->quiet)
		return;
	if (!final && t - r->last_progress < (r->tty ? 0.2 : 1.0))
		return;
	r->last_progress = t;
	if (c->requests > 0)
		frac = (double)r->done / (double)c->requests;
	if (c->duration_s > 0 && t / c->duration_s > frac)
		frac = t / c->duration_s;
	if (c->trace && frac < 0)
		frac = (double)r->sent / (double)c->trace->n;
	n = snprintf(line, 96, "%.64s%s", r->o->tag ? r->o->tag : "", r->o->tag ? " " : "");
	if (r->tty && frac >= 0) {
		int w = 20, fill = frac > 1 ? w : (int)(frac * w);
		memset(bar, '#', (size_t)fill);
		memset(bar + fill, '.', (size_t)(w - fill));
		bar[w] = '\0';
		n += snprintf(line + n, sizeof line - (size_t)n, "[%s] ", bar);
	}
	n += snprintf(line + n, sizeof line - (size_t)n, "%6.1fs sent %ld", t, r->sent);
	if (c->requests > 0)
		n += snprintf(line + n, sizeof line - (size_t)n, "/%ld", c->requests);
	snprintf(line + n, sizeof line - (size_t)n,
		 " done %ld in flight %d | %.1f tok/s | errors %ld", r->done, r->n_live,
		 t > 0 ? (double)r->tokens_live / t : 0.0, r->errors);
	if (r->tty)
		fprintf(stderr, "\r\033[K%s%s", line, final ? "\n" : "");
	else
		fprintf(stderr, "%s\n", line);
}

/* ---- the loop ---- */

static void advance(run *r)
{
	r->have_next = bn_workload_next(r->wl, &r->next) == LOOM_OK;
	/* an open-loop arrival past the duration will never be sent */
	if (r->have_next && r->c->duration_s > 0 && r->next.t >= r->c->duration_s &&
	    (r->c->rate > 0 || r->c->trace))
		r->have_next = 0;
}

static loom_err loop(run *r)
{
	const bn_config *c = r->c;
	bool open = c->rate > 0 || c->trace;
	int cap = open ? c->max_inflight : c->concurrency;
	loom_err rc;
	advance(r);
	for (;;) {
		double t = now_s(r);
		if (r->o->stop && *r->o->stop) {
			r->res->interrupted = true;
			abort_all(r, BN_ERR_TIMEOUT, "interrupted before it finished");
			break;
		}
		/* a conversation's next turn takes the slot its last turn freed */
		if ((rc = send_follow_ups(r, t, cap)))
			return rc;
		if (open) {
			while (may_send(r, t) && r->next.t <= t && r->n_live < c->max_inflight) {
				if ((rc = launch(r, &r->next, r->next.t)))
					return rc;
				advance(r);
			}
		} else {
			while (may_send(r, t) && r->n_live < c->concurrency) {
				if ((rc = launch(r, &r->next, t)))
					return rc;
				advance(r);
			}
		}
		int running;
		CURLMcode mc = curl_multi_perform(r->multi, &running);
		if (mc != CURLM_OK)
			return loom_fail(LOOM_EINTERNAL, "libcurl: curl_multi_perform: %s (%d)",
					 curl_multi_strerror(mc), (int)mc);
		take_finished(r);
		if (r->fatal)
			return r->fatal;
		t = now_s(r);
		progress(r, t, 0);
		if (!bounds_ok(r, t))
			drop_pending(r);
		if (!may_send(r, t) && r->n_live == 0 && r->n_pending == 0)
			break;
		if (c->duration_s > 0 && t >= c->duration_s + c->grace_s && r->n_live > 0) {
			char msg[128];
			snprintf(msg, sizeof msg, "still running at --duration %g s + --grace %g s",
				 c->duration_s, c->grace_s);
			abort_all(r, BN_ERR_TIMEOUT, msg);
			break;
		}
		int wait_ms = 100; /* keeps the progress line and the stop flag live */
		if (r->n_pending > 0 && r->n_live < cap)
			continue; /* a follow-up turn is due now */
		if (open && may_send(r, t) && r->n_live < c->max_inflight) {
			double d = (r->next.t - t) * 1000.0;
			wait_ms = d <= 0 ? 0 : d < 100 ? (int)d : 100;
		} else if (!open && may_send(r, t) && r->n_live < c->concurrency) {
			continue; /* a slot just freed: refill it now */
		}
		mc = curl_multi_poll(r->multi, NULL, 0, wait_ms, NULL);
		if (mc != CURLM_OK)
			return loom_fail(LOOM_EINTERNAL, "libcurl: curl_multi_poll: %s (%d)",
					 curl_multi_strerror(mc), (int)mc);
	}
	double last = 0;
	for (size_t i = 0; i < r->res->n; i++)
		if (r->res->samples[i].t_end > last)
			last = r->res->samples[i].t_end;
	r->res->elapsed_s = last;
	progress(r, now_s(r), 1);
	return LOOM_OK;
}

void bn_result_destroy(bn_result *res)
{
	if (!res)
		return;
	loom_free(res->samples);
	loom_free(res);
}

loom_err bn_run(const bn_config *c, const bn_run_opts *o, bn_result **out)
{
	static const bn_run_opts no_opts = { NULL, NULL };
	run r;
	loom_err rc;
	size_t ul;
	*out = NULL;
	memset(&r, 0, sizeof r);
	r.c = c;
	r.o = o ? o : &no_opts;
	r.tty = isatty(STDERR_FILENO);
	ul = strlen(c->url);
	while (ul > 0 && c->url[ul - 1] == '/')
		ul--;
	if (ul + sizeof "/v1/completions" > sizeof r.endpoint)
		return loom_fail(LOOM_EINVAL, "--url: longer than %zu bytes", sizeof r.endpoint - 32);
	snprintf(r.endpoint, sizeof r.endpoint, "%.*s/v1/completions", (int)ul, c->url);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return loom_fail(LOOM_EINTERNAL, "libcurl: curl_global_init failed");
	r.res = loom_calloc(1, sizeof *r.res);
	r.multi = curl_multi_init();
	if (!r.res || !r.multi) {
		rc = loom_fail(LOOM_ENOMEM, "no memory for the run");
		goto out;
	}
	long conns = c->concurrency > c->max_inflight ? c->concurrency : c->max_inflight;
	curl_multi_setopt(r.multi, CURLMOPT_MAXCONNECTS, conns);
	if ((rc = bn_workload_create(c, &r.wl)))
		goto out;
	clock_gettime(CLOCK_MONOTONIC, &r.t0);
	rc = loop(&r);
	abort_all(&r, BN_ERR_TIMEOUT, "the run stopped on an error");
out:
	bn_workload_destroy(r.wl);
	loom_free(r.pending);
	loom_free(r.live);
	if (r.multi)
		curl_multi_cleanup(r.multi);
	curl_global_cleanup();
	if (rc) {
		bn_result_destroy(r.res);
		return rc;
	}
	*out = r.res;
	return LOOM_OK;
}
