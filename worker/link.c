/*
 * worker/link.c — nng pair1 link to the gateway (see link.h).
 *
 * Threads: the receive thread (decode, dispatch, answer PINGs, register
 * adapters and models: a PEFT folder is loaded here, a slow load delays the
 * next message, never the engine; hand BLOB chunks to a waiting fetch), the
 * engine thread (wk_link_emit), the residency's loader (wk_link_fetch:
 * FETCH, then waits for the BLOBs the receive thread collects), and nng's
 * own threads (pipe callbacks, which only log and queue a cancel). nng
 * sockets are thread-safe, so the senders share the socket without a lock.
 */
#include "link.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "../adapters/adapter.h"
#include "../common/alloc.h"
#include "../common/log.h"
#include "../common/sha256.h"
#include "residency.h"

#define RECV_MAX_BYTES ((size_t)64 << 20)
#define SEND_TIMEOUT_MS 2000
#define SEND_BUFFER_MSGS 1024
#define FETCH_IDLE_MS 30000           /* no BLOB for this long: the fetch fails */
#define FETCH_MAX_BYTES ((uint64_t)1 << 40)

/* The one fetch in flight (the residency's loader fetches one blob at a
 * time; `one` serializes callers anyway). Guarded by mu. */
typedef struct fetch_state {
	pthread_mutex_t one;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool active, done;
	char hex[LOOM_SHA_HEX];
	uint8_t *buf;
	uint64_t total, got;
	loom_err status;
	char why[256];
} fetch_state;

struct wk_link {
	nng_socket sock;
	bool sock_open;
	char url[256];
	char worker_id[LOOM_NAME_MAX];
	int n_models;
	char (*models)[LOOM_NAME_MAX];  /* [n_models] */
	uint64_t device_mem;            /* host RAM bytes, reported in HELLO */
	_Atomic(wk_engine *) engine;    /* set by wk_link_start */
	atomic_bool stopping;
	atomic_int sending;             /* send_msg calls past their stopping check */
	pthread_t thread;
	bool has_thread;
	fetch_state fetch;
	char names[WK_RES_MAX_MODELS][LOOM_NAME_MAX]; /* HELLO's list (receive thread) */
	loom_prefix_model prefix[WK_RES_MAX_MODELS]; /* STATS' per-model figures (same) */
};

static void send_msg(wk_link *l, const loom_msg *m)
{
	void *buf;
	size_t len;
	loom_err rc;
	int rv;

	/* counted before the check, so wk_link_stop, which sets stopping first,
	 * then waits for the count to drop, never closes the socket under a
	 * send */
	atomic_fetch_add(&l->sending, 1);
	if (atomic_load(&l->stopping)) {
		atomic_fetch_sub(&l->sending, 1);
		return;
	}
	rc = loom_msg_encode(m, &buf, &len);
	if (rc) {
		atomic_fetch_sub(&l->sending, 1);
		LOOM_ERROR("link: cannot encode %s: %s", loom_msg_type_name(m->type), loom_errmsg());
		return;
	}
	rv = nng_send(l->sock, buf, len, 0); /* at most SEND_TIMEOUT_MS */
	atomic_fetch_sub(&l->sending, 1);
	loom_free(buf);
	if (rv && !atomic_load(&l->stopping))
		LOOM_WARN("link: %s to the gateway dropped: %s", loom_msg_type_name(m->type),
			  nng_strerror(rv));
}

void wk_link_emit(void *link, const loom_msg *m)
{
	send_msg(link, m);
}

static void answer_ping(wk_link *l, wk_engine *e, uint64_t seq)
{
	loom_msg h = { .type = LOOM_MSG_HELLO };
	loom_msg s = { .type = LOOM_MSG_STATS };
	loom_msg rm = { .type = LOOM_MSG_RESIDENCY };
	wk_res *res = wk_engine_residency(e);

	snprintf(h.u.hello.worker_id, sizeof h.u.hello.worker_id, "%s", l->worker_id);
	snprintf(h.u.hello.backend, sizeof h.u.hello.backend, "%s",
		 wk_backend_name(wk_engine_backend(e)));
	h.u.hello.proto_version = LOOM_PROTO_VERSION;
	h.u.hello.ping_seq = seq;
	h.u.hello.device_mem = l->device_mem;
	/* every model the worker can serve, resident or not */
	h.u.hello.n_models = (uint32_t)wk_res_model_names(res, l->names, WK_RES_MAX_MODELS);
	h.u.hello.models = l->names;
	send_msg(l, &h);
	wk_engine_stats(e, &s.u.stats);
	for (uint32_t i = 0; i < h.u.hello.n_models; i++) {
		wk_prefix_info pi;
		wk_engine_prefix_info(e, (int)i, &pi);
		memcpy(l->prefix[i].name, l->names[i], LOOM_NAME_MAX);
		l->prefix[i].prompt_tokens = pi.ctx_tokens;
		l->prefix[i].cached_tokens = pi.cached_tokens;
		l->prefix[i].cached_blocks = pi.keyed_blocks;
	}
	s.u.stats.n_models = h.u.hello.n_models;
	s.u.stats.models = l->prefix;
	send_msg(l, &s);
	if (wk_res_residency(res, &rm.u.residency) == LOOM_OK) {
		send_msg(l, &rm);
		wk_res_residency_fini(&rm.u.residency);
	}
}

static void send_error(wk_link *l, uint64_t req, loom_err code, const char *text)
{
	loom_msg err = { .type = LOOM_MSG_ERROR };

	err.u.error.req = req;
	err.u.error.code = code;
	err.u.error.message = (char *)text;
	send_msg(l, &err);
}

/* "WHAT NAME: reason" from the last error, without doubling a prefix the
 * message already has. */
static void why_text(char *text, size_t n, const char *what, const char *name)
{
	const char *why = loom_errmsg();
	size_t wl = strlen(what), nl = strlen(name);

	if (!strncmp(why, what, wl) && why[wl] == ' ' && !strncmp(why + wl + 1, name, nl) &&
	    !strncmp(why + wl + 1 + nl, ": ", 2))
		snprintf(text, n, "%s", why);
	else
		snprintf(text, n, "%s %s: %s", what, name, why);
}

/* Registers an adapter: a PEFT folder is loaded and validated here, on the
 * receive thread (the engine goes on stepping meanwhile); a store blob is
 * only recorded (the residency loads it when a request wants it). A
 * failure is an ERROR{req 0} "adapter NAME: reason"; the worker keeps
 * serving. */
static void load_adapter(wk_link *l, wk_engine *e, const loom_msg_adapter *a)
{
	wk_res *res = wk_engine_residency(e);
	char text[768];
	uint8_t sha[32];
	loom_err rc;

	if (a->sha[0]) {
		rc = loom_sha256_parse(a->sha, sha)
			     ? loom_fail(LOOM_EPROTO, "sha '%.64s' is not 64 hex digits", a->sha)
			     : wk_res_adapter_add_blob(res, a->base_model, a->name, sha);
	} else {
		rc = wk_res_adapter_add_dir(res, a->base_model, a->name, a->path);
	}
	if (rc) {
		why_text(text, sizeof text, "adapter", a->name);
		LOOM_WARN("link: %s", text);
		send_error(l, 0, rc, text);
		return;
	}
	LOOM_INFO("link: adapter %s of '%s' registered (%s%s)", a->name, a->base_model,
		  a->sha[0] ? "blob " : "", a->sha[0] ? a->sha : a->path);
}

/* Registers a base model (a folder, or a store bundle); loaded on demand. */
static void load_model(wk_link *l, wk_engine *e, const loom_msg_model *m)
{
	wk_res *res = wk_engine_residency(e);
	char text[768];
	uint8_t sha[32];
	loom_err rc;

	if (m->tokenizer_sha[0] && !loom_sha256_parse(m->tokenizer_sha, sha))
		(void)wk_res_model_set_tokenizer(res, m->name, sha); /* before the model lists */
	if (m->sha[0])
		rc = loom_sha256_parse(m->sha, sha)
			     ? loom_fail(LOOM_EPROTO, "sha '%.64s' is not 64 hex digits", m->sha)
			     : wk_res_model_add_blob(res, m->name, sha);
	else
		rc = wk_res_model_add_dir(res, m->name, m->path);
	if (rc) {
		why_text(text, sizeof text, "model", m->name);
		LOOM_WARN("link: %s", text);
		send_error(l, 0, rc, text);
		return;
	}
	wk_res_model_warm(res, wk_res_model_find(res, m->name)); /* listed: not a pending fetch */
	LOOM_INFO("link: model %s registered (%s%s)", m->name, m->sha[0] ? "blob " : "",
		  m->sha[0] ? m->sha : m->path);
}

/* ------------------------------------------------------------------ */
/* fetching store blobs from the gateway                               */
/* ------------------------------------------------------------------ */

static void send_fetch(wk_link *l, const char *hex, uint64_t offset)
{
	loom_msg m = { .type = LOOM_MSG_FETCH };

	snprintf(m.u.fetch.sha, sizeof m.u.fetch.sha, "%s", hex);
	m.u.fetch.offset = offset;
	send_msg(l, &m);
}

/* Ends the fetch in flight. Under f->mu. */
static void fetch_end(fetch_state *f, loom_err status, const char *why)
{
	f->status = status;
	snprintf(f->why, sizeof f->why, "%s", why);
	f->done = true;
	pthread_cond_broadcast(&f->cv);
}

/* Receive thread: one BLOB chunk. */
static void on_blob(wk_link *l, const loom_msg_blob *b)
{
	fetch_state *f = &l->fetch;
	uint64_t next = 0;
	char hex[LOOM_SHA_HEX];

	pthread_mutex_lock(&f->mu);
	if (!f->active || f->done || strcmp(b->sha, f->hex) || b->offset != f->got) {
		pthread_mutex_unlock(&f->mu);
		LOOM_WARN("link: ignored a BLOB chunk (%.16s.. at %" PRIu64 ") nobody waits for",
			  b->sha, b->offset);
		return;
	}
	if (b->total == 0) {
		fetch_end(f, LOOM_ENOTFOUND, "the gateway does not have it");
	} else if (b->total > FETCH_MAX_BYTES || (f->got > 0 && b->total != f->total) ||
		   b->len > b->total - f->got || (b->len == 0 && f->got < b->total)) {
		fetch_end(f, LOOM_EPROTO, "the gateway sent an inconsistent BLOB chunk");
	} else {
		if (f->got == 0 && !(f->buf = loom_malloc((size_t)b->total))) {
			fetch_end(f, LOOM_ENOMEM, "out of memory for the blob");
		} else {
			f->total = b->total;
			memcpy(f->buf + f->got, b->data, b->len);
			f->got += b->len;
			if (f->got == f->total)
				fetch_end(f, LOOM_OK, "");
			else
				next = f->got;
			pthread_cond_broadcast(&f->cv);
		}
	}
	snprintf(hex, sizeof hex, "%s", f->hex);
	pthread_mutex_unlock(&f->mu);
	if (next)
		send_fetch(l, hex, next);
}

loom_err wk_link_fetch(void *link, const char *hex, void **buf, size_t *len)
{
	wk_link *l = link;
	fetch_state *f = &l->fetch;
	loom_err rc;

	*buf = NULL;
	*len = 0;
	pthread_mutex_lock(&f->one);
	pthread_mutex_lock(&f->mu);
	f->active = true;
	f->done = false;
	f->buf = NULL;
	f->total = f->got = 0;
	snprintf(f->hex, sizeof f->hex, "%s", hex);
	pthread_mutex_unlock(&f->mu);
	send_fetch(l, hex, 0);
	pthread_mutex_lock(&f->mu);
	while (!f->done) {
		uint64_t got = f->got;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += FETCH_IDLE_MS / 1000;
		if (atomic_load(&l->stopping)) {
			fetch_end(f, LOOM_ECLOSED, "the worker is stopping");
			break;
		}
		if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) && !f->done && f->got == got)
			fetch_end(f, LOOM_ETIMEDOUT, "no BLOB from the gateway for 30 s");
	}
	rc = f->status;
	if (rc) {
		rc = loom_fail(rc, "%s", f->why);
		loom_free(f->buf);
	} else {
		*buf = f->buf;
		*len = (size_t)f->total;
	}
	f->buf = NULL;
	f->active = false;
	pthread_mutex_unlock(&f->mu);
	pthread_mutex_unlock(&f->one);
	return rc;
}

static void dispatch(wk_link *l, wk_engine *e, const void *body, size_t len, uint32_t pipe)
{
	loom_msg m;
	loom_err rc = loom_msg_decode(body, len, &m);

	if (rc) {
		LOOM_WARN("link: ignored a malformed message of %zu bytes from the gateway: %s", len,
			  loom_errmsg());
		return;
	}
	switch (m.type) {
	case LOOM_MSG_SUBMIT:
		rc = wk_engine_submit_from(e, &m.u.submit, pipe);
		if (rc)
			send_error(l, m.u.submit.req, rc, loom_errmsg());
		break;
	case LOOM_MSG_ADAPTER:
		load_adapter(l, e, &m.u.adapter);
		break;
	case LOOM_MSG_MODEL:
		load_model(l, e, &m.u.model);
		break;
	case LOOM_MSG_BLOB:
		on_blob(l, &m.u.blob);
		break;
	case LOOM_MSG_CANCEL:
		wk_engine_cancel(e, m.u.cancel.req);
		break;
	case LOOM_MSG_PING:
		answer_ping(l, e, m.u.ping.seq);
		break;
	default:
		LOOM_WARN("link: ignored a %s message (a worker takes SUBMIT, CANCEL, PING, "
			  "ADAPTER, MODEL and BLOB)",
			  loom_msg_type_name(m.type));
		break;
	}
	loom_msg_fini(&m);
}

static void *recv_main(void *arg)
{
	wk_link *l = arg;
	wk_engine *e = atomic_load(&l->engine);

	for (;;) {
		nng_msg *msg;
		int rv = nng_recvmsg(l->sock, &msg, 0);

		if (rv == NNG_ECLOSED || atomic_load(&l->stopping)) {
			if (rv == 0)
				nng_msg_free(msg);
			break;
		}
		if (rv) {
			LOOM_WARN("link: receive failed: %s", nng_strerror(rv));
			continue;
		}
		dispatch(l, e, nng_msg_body(msg), nng_msg_len(msg),
			 nng_pipe_id(nng_msg_get_pipe(msg)));
		nng_msg_free(msg);
	}
	return NULL;
}

/* Runs on an nng thread: must not block. Cancels what the pipe sent. */
static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	wk_link *l = arg;
	wk_engine *e;

	if (ev == NNG_PIPE_EV_ADD_POST) {
		LOOM_INFO("link: gateway connected (pipe %d)", nng_pipe_id(p));
		return;
	}
	if (ev != NNG_PIPE_EV_REM_POST || atomic_load(&l->stopping))
		return;
	LOOM_INFO("link: gateway disconnected (pipe %d); canceling its requests", nng_pipe_id(p));
	e = atomic_load(&l->engine);
	if (e)
		wk_engine_cancel_owner(e, (uint32_t)nng_pipe_id(p));
}

loom_err wk_link_create(const char *url, const char *worker_id, const char *const *models,
			int n_models, struct nng_tls_config *tls, wk_link **out)
{
	nng_listener ls;
	wk_link *l;
	loom_err rc = LOOM_OK;
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	int rv;

	*out = NULL;
	if (strlen(url) >= sizeof l->url)
		return loom_fail(LOOM_EINVAL, "link: URL '%.64s...' is too long", url);
	if (strlen(worker_id) >= LOOM_NAME_MAX)
		return loom_fail(LOOM_EINVAL, "link: worker id '%.32s...' is %zu bytes (max %d)",
				 worker_id, strlen(worker_id), LOOM_NAME_MAX - 1);
	l = loom_calloc(1, sizeof *l);
	if (!l)
		return loom_fail(LOOM_ENOMEM, "link: out of memory");
	pthread_mutex_init(&l->fetch.one, NULL);
	pthread_mutex_init(&l->fetch.mu, NULL);
	pthread_cond_init(&l->fetch.cv, NULL);
	snprintf(l->url, sizeof l->url, "%s", url);
	snprintf(l->worker_id, sizeof l->worker_id, "%s", worker_id);
	l->device_mem = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
	if (n_models > 0) {
		l->models = loom_calloc((size_t)n_models, sizeof *l->models);
		if (!l->models) {
			rc = loom_fail(LOOM_ENOMEM, "link: out of memory");
			goto out;
		}
	}
	for (int i = 0; i < n_models; i++) {
		if (strlen(models[i]) >= LOOM_NAME_MAX) {
			rc = loom_fail(LOOM_EINVAL, "link: model name '%.32s...' is too long",
				       models[i]);
			goto out;
		}
		snprintf(l->models[i], LOOM_NAME_MAX, "%s", models[i]);
	}
	l->n_models = n_models;
	if ((rv = nng_pair1_open(&l->sock))) {
		rc = loom_fail(LOOM_EINTERNAL, "link: cannot open an nng pair1 socket: %s",
			       nng_strerror(rv));
		goto out;
	}
	l->sock_open = true;
	if ((rv = nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, RECV_MAX_BYTES)) ||
	    (rv = nng_socket_set_ms(l->sock, NNG_OPT_SENDTIMEO, SEND_TIMEOUT_MS)) ||
	    (rv = nng_pipe_notify(l->sock, NNG_PIPE_EV_ADD_POST, on_pipe, l)) ||
	    (rv = nng_pipe_notify(l->sock, NNG_PIPE_EV_REM_POST, on_pipe, l))) {
		rc = loom_fail(LOOM_EINTERNAL, "link: cannot configure the nng socket: %s",
			       nng_strerror(rv));
		goto out;
	}
	/* a deeper send queue rides out a slow gateway; optional */
	nng_socket_set_int(l->sock, NNG_OPT_SENDBUF, SEND_BUFFER_MSGS);
	/* (nng itself replaces a stale ipc socket file nobody accepts on) */
	if ((rv = nng_listener_create(&ls, l->sock, url)) ||
	    (tls && (rv = nng_listener_set_ptr(ls, NNG_OPT_TLS_CONFIG, tls))) ||
	    (rv = nng_listener_start(ls, 0))) {
		rc = loom_fail(rv == NNG_EADDRINUSE ? LOOM_EBUSY : LOOM_EINVAL,
			       "link: cannot listen on '%s': %s", url, nng_strerror(rv));
		goto out;
	}
	*out = l;
	return LOOM_OK;
out:
	wk_link_destroy(l);
	return rc;
}

loom_err wk_link_start(wk_link *l, wk_engine *e)
{
	int err;

	atomic_store(&l->engine, e);
	err = pthread_create(&l->thread, NULL, recv_main, l);
	if (err)
		return loom_fail(LOOM_EINTERNAL, "link: cannot start the receive thread (%s)",
				 strerror(err));
	l->has_thread = true;
	return LOOM_OK;
}

void wk_link_stop(wk_link *l)
{
	if (!l)
		return;
	atomic_store(&l->stopping, true);
	pthread_mutex_lock(&l->fetch.mu);
	pthread_cond_broadcast(&l->fetch.cv); /* a fetch in flight gives up */
	pthread_mutex_unlock(&l->fetch.mu);
	if (l->sock_open) {
		/* the sends in flight end within their timeout; nng 1.5.2's
		 * nng_close of a pair1 socket under a concurrent nng_send now and
		 * then never returned (a busy worker ignored SIGTERM) */
		for (int i = 0; i < SEND_TIMEOUT_MS / 5 + 100 && atomic_load(&l->sending) > 0; i++)
			usleep(5000);
		nng_close(l->sock);
		l->sock_open = false;
	}
	if (l->has_thread) {
		pthread_join(l->thread, NULL);
		l->has_thread = false;
	}
}

void wk_link_destroy(wk_link *l)
{
	if (!l)
		return;
	wk_link_stop(l);
	loom_free(l->models);
	pthread_cond_destroy(&l->fetch.cv);
	pthread_mutex_destroy(&l->fetch.mu);
	pthread_mutex_destroy(&l->fetch.one);
	loom_free(l);
}
