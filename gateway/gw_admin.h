/*
 * gateway/gw_admin.h — the admin API over the registry, vLLM's LoRA
 * load/unload routes, and /metrics.
 *
 * Owns: the routes
 *   POST   /admin/adapters            {"name","base_model","path"}   (path on the gateway's disk)
 *   PUT    /admin/adapters/{name}     multipart/form-data: adapter_config, adapter_model, base_model
 *   GET    /admin/adapters, GET /admin/adapters/{name}, DELETE /admin/adapters/{name}
 *   POST   /admin/models              {"name","path"[,"chat_template"]}
 *   GET    /admin/models, GET /admin/models/{name}, DELETE /admin/models/{name}
 *   GET    /admin/workers
 *   POST   /v1/load_lora_adapter      {"lora_name","lora_path"}   (vLLM)
 *   POST   /v1/unload_lora_adapter    {"lora_name"}               (vLLM)
 *   GET    /metrics                   (Prometheus text: workers, gateway memory and
 *                                      queue, SLO classes via gw_slo; the admin rule
 *                                      unless public_metrics; ipc:// worker addresses
 *                                      shown as "ipc:#N", never as paths)
 * the admin authentication (gw_policy: Bearer token, else loopback only:
 * 401 / 403), the folder rule for path imports (403 outside every allowed
 * directory), the 409 / ?replace=true rule, streaming uploads into a temp
 * folder under the store (capped at max_upload bytes: 413), the JSON shapes
 * and OpenAI-shaped errors.
 * It sees a request as plain values (gw_admin_in) and answers with a
 * gw_reply, so it needs no HTTP library: gw_server feeds it and queues the
 * reply. Imports run on the calling (HTTP) thread; the registry reads their
 * folders outside its lock and serializes only the changes.
 * Must not: touch sockets or the store directly (gw_registry does).
 */
#ifndef GW_ADMIN_H
#define GW_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "common/err.h"
#include "gw_link.h"
#include "gw_models.h"
#include "gw_registry.h"
#include "gw_slo.h"

typedef struct gw_admin_opts {
	const char *token;               /* NULL or "" = loopback clients only */
	const char *const *adapter_dirs; /* folders path imports may read (realpath'ed) */
	size_t n_adapter_dirs;
	const char *const *model_dirs;   /* more folders for model imports (realpath'ed) */
	size_t n_model_dirs;
	size_t max_upload;               /* bytes of one multipart upload */
	size_t max_body;                 /* bytes of a JSON body */
	gw_registry *reg;                /* NULL: registry routes answer 503 */
	gw_models *models;
	gw_link *link;                   /* may be NULL (no workers: empty lists) */
	gw_slo *slo;                     /* /metrics per-class figures; NULL = none */
	bool public_metrics;             /* /metrics without the admin rule */
} gw_admin_opts;

typedef struct gw_admin gw_admin;

/* Copies o (the lists too); everything it points to is borrowed. */
loom_err gw_admin_create(const gw_admin_opts *o, gw_admin **out);
void gw_admin_destroy(gw_admin *a);

/* One HTTP request as the admin API sees it (all borrowed for the call). */
typedef struct gw_admin_in {
	const char *method;
	const char *url;                 /* path without the query */
	const char *authorization;       /* header value, or NULL */
	const struct sockaddr *peer;     /* client address, or NULL */
	const char *content_type;        /* header value, or NULL */
	long long content_length;        /* -1 when not given */
	const char *replace;             /* the ?replace= query value, or NULL */
} gw_admin_in;

typedef struct gw_reply {
	int status;
	char *body;                      /* loom_malloc'ed; NULL = out of memory (500) */
	const char *content_type;        /* static */
	const char *allow;               /* Allow header (405), static or NULL */
	bool www_authenticate;           /* add "WWW-Authenticate: Bearer" (401) */
} gw_reply;

typedef struct gw_admin_req gw_admin_req;

/*
 * First sight of a request: false when url is not one of these routes (the
 * caller handles it). Otherwise true and *out holds the request's state
 * (NULL only when out of memory: answer 500). A refusal decided already
 * (auth, unknown route, a declared body over the cap) is kept until
 * gw_admin_finish; gw_admin_decided tells so (the body is then dropped).
 */
bool gw_admin_begin(gw_admin *a, const gw_admin_in *in, gw_admin_req **out);
bool gw_admin_decided(const gw_admin_req *x);
/* More body bytes (streamed into the upload, or kept for JSON). Problems
 * (too large, a malformed upload) are remembered for the reply and later
 * bytes dropped; false once more than GW_ADMIN_DRAIN_MAX bytes were dropped
 * (the caller then closes the connection instead of reading on). */
#define GW_ADMIN_DRAIN_MAX (64ull << 20)
bool gw_admin_body(gw_admin_req *x, const void *data, size_t n);
/* The body is complete: runs the route and fills *out (caller frees body). */
void gw_admin_finish(gw_admin_req *x, gw_reply *out);
/* Frees the state and anything an unfinished upload left on disk. NULL is fine. */
void gw_admin_req_free(gw_admin_req *x);

/* ---- JSON and text shapes (gw_admin_json.c; pure, any thread) ---- */

/* One adapter: id, object "lora_adapter", base_model, rank, max_rank, alpha,
 * use_rslora, targets, bytes, sha256, version, created, root, and resident:
 * [{worker, url, tier "host"|"device"}] from the workers' RESIDENCY. */
char *gw_admin_adapter_json(const gw_adapter *a, const gw_worker_info *w, size_t n_w);
/* A model: id, object "model", sha256, bytes, version, created,
 * max_model_len, vocab, chat_template, adapters (n_adapters), and resident [{worker, url, tier}]. */
char *gw_admin_model_json(const gw_model *m, size_t n_adapters, const gw_worker_info *w,
			  size_t n_w);
/* GET /admin/adapters and /admin/models: {"object":"list","data":[...]}. */
char *gw_admin_adapters_json(gw_models *m, const gw_worker_info *w, size_t n_w);
char *gw_admin_models_json(gw_models *m, const gw_worker_info *w, size_t n_w);
/* GET /admin/workers. */
char *gw_admin_workers_json(const gw_worker_info *w, size_t n_w);
/* /metrics in Prometheus' text format 0.0.4: the registry and the workers
 * (liveness, load, STATS, residency, the router's step model and predictions). */
char *gw_admin_metrics_text(const gw_worker_info *w, size_t n_w, size_t inflight,
			    size_t n_models, size_t n_adapters);
/* The gateway's own families: batch queue, resumed / lost requests, link
 * entries, requests tracked, heap bytes in use and RSS (-1 = unknown). */
char *gw_admin_gateway_metrics_text(const gw_link_counters *c, long tracked, long long rss,
				    long long heap);

#endif
