/*
 * gateway/gw_server.h — the HTTP side: libmicrohttpd daemon and routes.
 *
 * Owns: the MHD daemon (internal epoll thread pool, suspend/resume; HTTPS
 * through GnuTLS when given a certificate), its
 * connection limits (total, per client address) and inactivity timeout, request
 * body accumulation with a size cap, routing (/v1/completions,
 * /v1/chat/completions, /v1/models, /tokenize, /detokenize, /health,
 * /ready; the admin API, vLLM's LoRA routes and /metrics are handed to
 * gw_admin), resolving a request's "model" (a base model or an adapter, which
 * runs on its base model: SUBMIT{model = base, adapter = name}, while the
 * response names what the client sent), turning a parsed request into a
 * gw_req submitted through gw_link, and writing the result (JSON, or SSE
 * through the gw_req reader). Handlers
 * answer on the second call (keep-alive) and never block waiting for tokens:
 * a waiting connection is suspended and the link thread resumes it. A client
 * that goes away cancels its request on the worker.
 * SLO: a request's class is its body's "slo_class", else the header
 * X-Loom-SLO-Class, else the table's default; an unknown class is a 400
 * naming slo_class. gw_link admits it: sent, or waiting in the admission
 * queue (a stream gets its 200 only once it leaves it; a wait that times out
 * is a 503 with Retry-After), a 429 with Retry-After when the queue is full,
 * a 503 with Retry-After at once when a refusing class's TTFT target cannot
 * be met.
 * API keys (gw_keys, when configured): every route but /health, /ready and
 * gw_admin's needs a known key (401) within its limits (429 + Retry-After),
 * checked from the headers before the body is read; a model or adapter the
 * key may not use is a 404 like an unknown one, and /v1/models lists only
 * what it may use.
 * Must not: talk to nng directly or shape JSON itself (gw_openai does).
 */
#ifndef GW_SERVER_H
#define GW_SERVER_H

#include <stddef.h>

#include "common/err.h"
#include "gw_admin.h"
#include "gw_keys.h"
#include "gw_link.h"
#include "gw_models.h"
#include "gw_slo.h"

typedef struct gw_server gw_server;

typedef struct gw_server_opts {
	const char *host;     /* address to bind, e.g. "127.0.0.1" */
	int port;             /* 0 = any free port (see gw_server_port) */
	size_t max_body;      /* bytes; larger bodies get 413 */
	int threads;          /* MHD thread pool size, >= 1 */
	gw_models *models;    /* borrowed, must outlive the server */
	gw_link *link;        /* borrowed, must outlive the server */
	gw_admin *admin;      /* borrowed; NULL = no admin routes */
	gw_slo *slo;          /* borrowed, must outlive the server; NULL = the default classes */
	gw_keys *keys;        /* borrowed, must outlive the server; NULL = no API keys: the
			       * API routes are open */
	/* Connections (see gw_server_start): 0 = GW_SERVER_MAX_CONNS for max_conns,
	 * no cap / no timeout for the other two. */
	unsigned max_conns;        /* open at once, all clients together */
	unsigned max_conns_per_ip; /* open at once from one client address */
	unsigned conn_timeout_s;   /* a connection with no byte read or written this long is closed */
	/* HTTPS: PEM text of the certificate (chain) and its private key, both
	 * or neither (NULL = plain HTTP); borrowed, must outlive the server */
	const char *tls_cert;
	const char *tls_key;
} gw_server_opts;

#define GW_SERVER_MAX_CONNS 4096
/* File descriptors kept out of the connection limit: worker links, the
 * store, imports, logs. */
#define GW_SERVER_FD_RESERVE 256

/*
 * Starts the daemon. The connection limit is clamped to the process's
 * open-file limit (RLIMIT_NOFILE, soft) less GW_SERVER_FD_RESERVE, so that
 * accept() never takes the last descriptors the gateway needs elsewhere.
 */
loom_err gw_server_start(const gw_server_opts *o, gw_server **out);
/* The bound port. */
int gw_server_port(const gw_server *s);
/* Stops accepting, ends every request still attached to a connection
 * (resuming suspended ones), then stops the daemon and frees s. */
void gw_server_stop(gw_server *s);

#endif
