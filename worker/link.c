/*
 * worker/link.c — nng pair1 link to the gateway (see link.h).
 *
 * Threads: the receive thread (decode, dispatch, answer PINGs, load
 * adapters: a slow load delays the next message, never the engine), the engine
 * thread (wk_link_emit), and nng's own threads (pipe callbacks, which only
 * log and queue a cancel). nng sockets are thread-safe, so both senders
 * share the socket without a lock.
 */
#include "link.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "../adapters/adapter.h"
#include "../common/alloc.h"
#include "../common/log.h"

#define RECV_MAX_BYTES ((size_t)64 << 20)
#define SEND_TIMEOUT_MS 2000
#define SEND_BUFFER_MSGS 1024

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
	pthread_t thread;
	bool has_thread;
};

static void send_msg(wk_link *l, const loom_msg *m)
{
	void *buf;
	size_t len;
	loom_err rc;
	int rv;

	if (atomic_load(&l->stopping))
		return;
	rc = loom_msg_encode(m, &buf, &len);
	if (rc) {
		LOOM_ERROR("link: cannot encode %s: %s", loom_msg_type_name(m->type), loom_errmsg());
		return;
	}
	rv = nng_send(l->sock, buf, len, 0);
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

	snprintf(h.u.hello.worker_id, sizeof h.u.hello.worker_id, "%s", l->worker_id);
	snprintf(h.u.hello.backend, sizeof h.u.hello.backend, "cpu");
	h.u.hello.proto_version = LOOM_PROTO_VERSION;
	h.u.hello.ping_seq = seq;
	h.u.hello.device_mem = l->device_mem;
	h.u.hello.n_models = (uint32_t)l->n_models;
	h.u.hello.models = l->models;
	send_msg(l, &h);
	wk_engine_stats(e, &s.u.stats);
	send_msg(l, &s);
}

static void send_error(wk_link *l, uint64_t req, loom_err code, const char *text)
{
	loom_msg err = { .type = LOOM_MSG_ERROR };

	err.u.error.req = req;
	err.u.error.code = code;
	err.u.error.message = (char *)text;
	send_msg(l, &err);
}

/* Loads and validates the adapter here, on the receive thread (the engine
 * goes on stepping meanwhile), then hands it to the engine. A failure is an
 * ERROR{req 0} "adapter NAME: reason"; the worker keeps serving. */
static void load_adapter(wk_link *l, wk_engine *e, const loom_msg_adapter *a)
{
	const wk_model *base = wk_engine_find_model(e, a->base_model);
	ad_adapter *ad = NULL;
	char text[768];
	loom_err rc;

	if (!base) {
		rc = LOOM_ENOTFOUND;
		snprintf(text, sizeof text, "adapter %s: base model '%s' is not served by this worker",
			 a->name, a->base_model);
		goto fail;
	}
	rc = ad_adapter_load(a->path, a->name, &base->cfg, &ad);
	if (!rc)
		rc = wk_engine_add_adapter(e, a->base_model, ad); /* takes ad */
	if (rc) {
		const char *why = loom_errmsg();
		size_t n = strlen(a->name);
		/* engine messages already start with "adapter NAME: " */
		if (!strncmp(why, "adapter ", 8) && !strncmp(why + 8, a->name, n) &&
		    !strncmp(why + 8 + n, ": ", 2))
			snprintf(text, sizeof text, "%s", why);
		else
			snprintf(text, sizeof text, "adapter %s: %s", a->name, why);
		goto fail;
	}
	LOOM_INFO("link: adapter %s of '%s' loaded from %s", a->name, a->base_model, a->path);
	return;
fail:
	LOOM_WARN("link: %s", text);
	send_error(l, 0, rc, text);
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
	case LOOM_MSG_CANCEL:
		wk_engine_cancel(e, m.u.cancel.req);
		break;
	case LOOM_MSG_PING:
		answer_ping(l, e, m.u.ping.seq);
		break;
	default:
		LOOM_WARN("link: ignored a %s message (a worker takes SUBMIT, CANCEL, PING and "
			  "ADAPTER)",
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
			int n_models, wk_link **out)
{
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
	if ((rv = nng_listen(l->sock, url, NULL, 0))) {
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
	if (l->sock_open) {
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
	loom_free(l);
}
