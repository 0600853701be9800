/*
 * gateway/gw_req.c — request output state and the suspend/resume handshake.
 *
 * Invariant (under mu): `suspended` is true exactly when this code suspended
 * r->conn and nobody resumed it yet; wake() resumes only then, so every
 * MHD_resume_connection matches one MHD_suspend_connection.
 * `recorded` turns true at the one place the SLO outcome is written: the
 * first transition out of ST_RUNNING (end()), or the last release.
 */
#include "gw_req.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/alloc.h"
#include "common/proto.h"
#include "gw_stream.h"

enum { ST_RUNNING, ST_OK, ST_ERROR };

struct gw_req {
	pthread_mutex_t mu;
	atomic_int refs;
	uint64_t id;
	char id_str[48];
	long long created;
	gw_api api;
	bool stream, include_usage, with_ids;
	const gw_model *model;
	char model_name[LOOM_NAME_MAX]; /* the response's "model" */
	int32_t *prompt_ids; /* [n_prompt] */
	size_t n_prompt;
	/* under mu */
	gw_stream *out;
	int32_t *ids;        /* [n_ids] every generated id */
	size_t n_ids, cap_ids;
	int state;
	const char *finish;  /* "stop" | "length" once ST_OK */
	gw_api_err err;      /* once ST_ERROR */
	bool sent_first;     /* stream: prompt_token_ids go in the first chunk */
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

/* Under mu (or from the last release): writes the SLO outcome once. */
static void record(gw_req *r, int status)
{
	if (r->recorded || !r->slo)
		return;
	r->recorded = true;
	int64_t now = gw_req_now_ms();
	gw_slo_outcome o = {.status = status, .tokens = r->n_ids};
	if (r->first_ms) {
		o.has_ttft = true;
		o.ttft_ms = (double)(r->first_ms - r->arrival_ms);
		if (r->n_ids >= 2) {
			o.has_tpot = true;
			o.tpot_ms = (double)(now - r->first_ms) / (double)(r->n_ids - 1);
		}
	}
	gw_slo_record(r->slo, r->slo_class, &o);
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
	if ((rc = gw_stream_create(o->model->tok, o->stops, o->n_stops, &r->out)))
		goto fail;
	*out = r;
	return LOOM_OK;
fail:
	gw_req_release(r);
	return rc;
}

void gw_req_hold(gw_req *r)
{
	atomic_fetch_add(&r->refs, 1);
}

void gw_req_release(gw_req *r)
{
	if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
		return;
	if (r->state == ST_RUNNING)
		record(r, 500); /* never ended: a miss */
	gw_stream_destroy(r->out);
	gw_model_release(r->model);
	loom_free(r->prompt_ids);
	loom_free(r->ids);
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

static gw_result result_base(const gw_req *r)
{
	gw_result res = {
		.api = r->api,
		.id = r->id_str,
		.created = r->created,
		.model = r->model_name,
		.with_ids = r->with_ids,
		.prompt_tokens = r->n_prompt,
		.completion_tokens = r->n_ids,
	};
	return res;
}

/* Under mu, stream: the chunk for this step's new text and ids (+ the end). */
static void stream_step(gw_req *r, const int32_t *ids, size_t n, bool done)
{
	gw_result res = result_base(r);
	res.text = gw_stream_take(r->out, &res.text_len);
	if (res.text_len && !r->first_ms)
		r->first_ms = gw_req_now_ms();
	res.ids = ids;
	res.n_ids = n;
	res.finish = done ? r->finish : NULL;
	if (!r->sent_first) {
		res.prompt_ids = r->prompt_ids;
		res.n_prompt = r->n_prompt;
	}
	if (r->api == GW_API_CHAT && !r->sent_first) {
		sse_event(r, gw_openai_chunk_json(&res, true), NULL);
		res.prompt_ids = NULL;
		r->sent_first = true;
	}
	if (res.text_len || done || (r->with_ids && n)) {
		sse_event(r, gw_openai_chunk_json(&res, false), NULL);
		r->sent_first = true;
	}
	if (done) {
		if (r->include_usage)
			sse_event(r, gw_openai_usage_chunk_json(&res), NULL);
		sse_event(r, NULL, "[DONE]");
	}
}

static loom_err append_ids(gw_req *r, const int32_t *ids, size_t n)
{
	if (r->n_ids + n > r->cap_ids) {
		size_t cap = r->cap_ids ? r->cap_ids : 64;
		while (cap < r->n_ids + n)
			cap *= 2;
		int32_t *p = loom_realloc(r->ids, cap * sizeof *p);
		if (!p)
			return loom_fail(LOOM_ENOMEM, "out of memory storing generated ids");
		r->ids = p;
		r->cap_ids = cap;
	}
	memcpy(r->ids + r->n_ids, ids, n * sizeof *ids);
	r->n_ids += n;
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
			gw_result res = result_base(r);
			sse_event(r, gw_openai_chunk_json(&res, true), NULL);
			r->sent_first = true;
		}
		sse_event(r, gw_openai_error_json(&r->err), NULL);
		sse_event(r, NULL, "[DONE]");
	}
	wake(r);
}

gw_step_result gw_req_on_step(gw_req *r, const int32_t *ids, size_t n, int finish)
{
	gw_step_result ret = GW_STEP_MORE;
	bool stopped = false;
	pthread_mutex_lock(&r->mu);
	if (r->state != ST_RUNNING) {
		ret = GW_STEP_DONE;
		goto out;
	}
	if (finish == LOOM_FINISH_ABORT) {
		fail_locked(r, 500, "server_error", "the worker aborted the request");
		ret = GW_STEP_DONE;
		goto out;
	}
	if (append_ids(r, ids, n) || gw_stream_push_ids(r->out, ids, n, &stopped) ||
	    (!stopped && finish != LOOM_FINISH_NONE && gw_stream_finish(r->out))) {
		fail_locked(r, 500, "server_error", loom_errmsg());
		ret = finish != LOOM_FINISH_NONE ? GW_STEP_DONE : GW_STEP_STOPPED;
		goto out;
	}
	stopped = gw_stream_stopped(r->out);
	bool done = stopped || finish != LOOM_FINISH_NONE;
	if (done) {
		r->finish = (stopped || finish == LOOM_FINISH_STOP) ? "stop" : "length";
		r->state = ST_OK;
		ret = (stopped && finish == LOOM_FINISH_NONE) ? GW_STEP_STOPPED : GW_STEP_DONE;
	}
	if (!r->stream && n && !r->first_ms)
		r->first_ms = gw_req_now_ms();
	if (r->stream) {
		stream_step(r, ids, n, done);
		if (r->sse_oom && !done) {
			fail_locked(r, 500, "server_error", "out of memory");
			ret = GW_STEP_STOPPED;
		}
	}
	if (done)
		record(r, 200);
	if (done || r->stream)
		wake(r);
out:
	pthread_mutex_unlock(&r->mu);
	return ret;
}

void gw_req_fail(gw_req *r, int status, const char *type, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&r->mu);
	fail_locked(r, status, type, msg);
	pthread_mutex_unlock(&r->mu);
}

void gw_req_close(gw_req *r)
{
	pthread_mutex_lock(&r->mu);
	r->closing = true;
	fail_locked(r, 503, "service_unavailable", "the gateway is shutting down");
	wake(r);
	pthread_mutex_unlock(&r->mu);
}

bool gw_req_done(gw_req *r)
{
	pthread_mutex_lock(&r->mu);
	bool d = r->state != ST_RUNNING;
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

loom_err gw_req_generated(gw_req *r, int32_t **ids, size_t *n)
{
	loom_err rc = LOOM_OK;
	*ids = NULL;
	*n = 0;
	pthread_mutex_lock(&r->mu);
	if (r->state != ST_RUNNING) {
		rc = LOOM_ECANCELED;
	} else if (r->n_ids) {
		*ids = loom_malloc(r->n_ids * sizeof **ids);
		if (*ids) {
			memcpy(*ids, r->ids, r->n_ids * sizeof **ids);
			*n = r->n_ids;
		} else {
			rc = loom_fail(LOOM_ENOMEM, "out of memory resuming a request");
		}
	}
	pthread_mutex_unlock(&r->mu);
	return rc == LOOM_ECANCELED ? loom_fail(rc, "the request already ended") : rc;
}

char *gw_req_result(gw_req *r, int *status)
{
	char *body;
	pthread_mutex_lock(&r->mu);
	if (r->state == ST_OK) {
		gw_result res = result_base(r);
		res.text = gw_stream_text(r->out, &res.text_len);
		res.finish = r->finish;
		res.ids = r->ids;
		res.n_ids = r->n_ids;
		res.prompt_ids = r->prompt_ids;
		res.n_prompt = r->n_prompt;
		*status = 200;
		body = gw_openai_response_json(&res);
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
