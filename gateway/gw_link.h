/*
 * gateway/gw_link.h — the gateway's links to its workers, and the table of
 * requests in flight on them.
 *
 * Owns: one nng pair1 socket per worker (the gateway dials; nng redials, so
 * a worker that starts later or restarts is picked up), the heartbeat (PING
 * on connect and every 200 ms; a worker is live while it answered a PING in
 * the last second), each worker's HELLO (models it serves), STATS and
 * RESIDENCY, routing (among live workers serving the model: where the
 * adapter and the model are already resident, then the fewest requests in
 * flight), the models and adapters workers must know, and the request
 * table (request id -> gw_req) that STEP / ERROR messages are delivered
 * through; late messages from a dead pipe are dropped.
 *
 * SLO routing (gw_link_submit_slo; gw_link_route.c): for each live worker
 * serving the model, a predicted TTFT (its queued prompt tokens through a
 * step-time model fitted online from its STATS, plus adapter / model load
 * when not resident, plus the request's own prefill); a request with a TTFT
 * target goes to a worker whose prediction meets its remaining budget,
 * preferring the adapter's residency, then the lowest prediction. When none
 * can, a class that refuses (gw_link_slo.refuse) is refused at once
 * (GW_ADMIT_LATE, with a Retry-After from the predictions); any other request
 * goes to a worker with room, and when none has room it waits in the
 * admission queue.
 *
 * Room: a worker has room when the requests the gateway has in flight there
 * are fewer than its slots (the sequences it runs at once: opts.worker_slots)
 * and the prompt tokens waiting there fit in a few iterations. A request without
 * a TTFT target (batch) needs more: the slots that requests with a TTFT
 * target took there lately stay free for them, at most opts.batch_per_worker
 * batch requests (0 = no cap) run there, and while requests with a TTFT
 * target run there, its predicted TTFT is within opts.room_ms (batch yields
 * to their latency). A burst of batch requests thus goes out at once, up to
 * the workers' room, and the worker batches it.
 *
 * The admission queue (one for all classes, at most opts.batch_queue
 * requests): ordered by class priority, then arrival. A request whose class
 * could queue joins it behind waiting requests for its model of its
 * priority or higher rather than overtake them. The heartbeat thread sends
 * queued requests, in order, to workers that meet their remaining TTFT
 * budget or have room, as soon as one does (a request ends, a STATS arrives,
 * a request joins); a request that must wait holds back the later ones for
 * its model (nobody overtakes it), not those for other models, whose
 * workers may have room. Full: GW_ADMIT_FULL (429). A request that waited
 * opts.queue_timeout_ms fails with 503 ("retry"; gw_link_retry_after_s says
 * when). A request canceled while queued (the client left) leaves the queue
 * and is never sent. With opts.no_slo every request goes at once to the
 * least loaded worker (the plain router): no queue, no refusal.
 *
 * Worker loss: a worker whose pipe goes, or that answers no PING for a
 * second, loses its requests to the heartbeat thread, which resumes each on
 * another live worker from the last token the gateway received: SUBMIT
 * with prompt_ids = the original prompt + the ids generated so far,
 * n_generated = their count, the same sampling (seed) and max_tokens; the
 * client's stream just goes on. Only when no live worker serves the model
 * does the request fail (502).
 *
 * Announcements: the link keeps a table of models (MODEL messages) and
 * adapters (ADAPTER messages). On each new connection, after the worker's
 * first HELLO and before it counts as live, it sends every MODEL the worker
 * does not list already, then every ADAPTER whose base the worker serves
 * (listed or just announced); later HELLOs that list a new base model get
 * that model's adapters. gw_link_put_adapter / gw_link_put_model change the
 * table at run time and send the message to every connected worker that
 * had its first HELLO before they return, so a SUBMIT routed afterwards
 * follows it on the same socket (pair1 keeps the order) and never meets a
 * replaced version. A worker not live yet becomes live only when it answers
 * a PING sent after those messages (i.e. once it has handled them).
 * FETCH{sha, offset} from a worker is answered with one BLOB chunk read from
 * the store (total 0 when the store lacks the blob).
 *
 * Threads: one receive thread per worker plus one heartbeat thread; nng pipe
 * callbacks only flip state under the link mutex and wake the heartbeat
 * thread. Public functions are safe from any thread.
 * Must not: know HTTP (it calls gw_req_on_step / gw_req_fail only) or write
 * to the store.
 */
#ifndef GW_LINK_H
#define GW_LINK_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "common/proto.h"
#include "gw_req.h"
#include "store/store.h"

typedef struct gw_link gw_link;

/* An adapter that workers serving base_model are told about (all borrowed,
 * copied by the link). */
typedef struct gw_link_adapter {
	const char *name;
	const char *base_model;
	const char *path;        /* absolute PEFT folder (path mode), or "" / NULL */
	const char *sha;         /* store blob (64 hex digits), or "" / NULL = path mode */
} gw_link_adapter;

/* A base model that workers are told about (MODEL). */
typedef struct gw_link_model {
	const char *name;
	const char *path;        /* Hugging Face folder (path mode), or "" / NULL */
	const char *sha;         /* store bundle blob, or "" / NULL */
	const char *tokenizer_sha; /* store blob of its tokenizer.json, or "" / NULL */
} gw_link_model;

typedef struct gw_link_opts {
	const char *const *urls;
	size_t n_urls;
	const gw_link_model *models;   /* announced from the start */
	size_t n_models;
	const gw_link_adapter *adapters;
	size_t n_adapters;
	st_store *store;               /* answers FETCH; borrowed, may be NULL */
	bool no_slo;                   /* plain least-loaded routing, no refusals, no queue */
	size_t batch_queue;            /* requests the admission queue holds (0 = 256) */
	uint32_t batch_per_worker;     /* requests without a TTFT target in flight per worker
					* at most (0 = no cap but the worker's room) */
	uint32_t queue_timeout_ms;     /* the longest wait in the admission queue (0 = 60000) */
	uint32_t worker_slots;         /* sequences a worker runs at once (0 = 64, loom-worker's
					* --max-seqs default) */
	uint32_t room_ms;              /* a request without a TTFT target starts on a worker
					* running requests with one only where a request would
					* get its first token within this (0 = 250) */
	struct nng_tls_config *tls;    /* tls+tcp:// workers: the client side of mutual TLS
					* (common/tlslink.h; each dialer takes a reference);
					* NULL = none */
} gw_link_opts;

/* Dials every url (non-blocking) and starts the threads. */
loom_err gw_link_create_opts(const gw_link_opts *o, gw_link **out);
/* Same with urls only / urls and adapters (the earlier forms). */
loom_err gw_link_create(const char *const *urls, size_t n_urls, gw_link **out);
loom_err gw_link_create_with_adapters(const char *const *urls, size_t n_urls,
				      const gw_link_adapter *ads, size_t n_ads, gw_link **out);
/* Fails what is still in flight (503), stops the threads, closes the sockets. */
void gw_link_destroy(gw_link *l);

/*
 * Adds or replaces (by name) an adapter and sends its ADAPTER to every
 * connected worker that had its first HELLO and serves its base model. When
 * it returns, those messages are queued on the sockets. A send that fails
 * is retried with the worker's next HELLO.
 */
loom_err gw_link_put_adapter(gw_link *l, const gw_link_adapter *a);
/* Forgets an adapter (new connections are not told about it). Workers keep
 * what they loaded; the gateway stops routing the name itself. */
void gw_link_remove_adapter(gw_link *l, const char *name);
/* Adds or replaces a model and sends MODEL to every worker that had its
 * first HELLO (also to those that list the name: the content changed). */
loom_err gw_link_put_model(gw_link *l, const gw_link_model *m);
void gw_link_remove_model(gw_link *l, const char *name);
/* Waits up to timeout_ms until a live worker serves model; true if one does. */
bool gw_link_wait_model(gw_link *l, const char *model, int timeout_ms);

/*
 * Routes r (sub describes it; sub->req is set to gw_req_id(r) here) to a live
 * worker serving sub->model, enters it in the request table (holding a
 * reference) and sends SUBMIT. LOOM_EBUSY: no live worker serves the model
 * (503); LOOM_ECLOSED: the send failed (502). On any other outcome the
 * request's end arrives through r (STEP, ERROR or a worker failure).
 */
loom_err gw_link_submit(gw_link *l, gw_req *r, loom_msg_submit *sub);
/* The same, preferring workers where the adapter version adapter_sha (hex,
 * may be NULL or "") and the model are resident (RESIDENCY), then load. */
loom_err gw_link_submit_to(gw_link *l, gw_req *r, loom_msg_submit *sub, const char *adapter_sha);
/* The SLO class of a request, as the router sees it (borrowed). */
typedef struct gw_link_slo {
	const char *name;          /* SUBMIT.slo_class */
	uint32_t ttft_ms;          /* 0 = no TTFT target (batch: starts where there is room) */
	uint32_t tpot_ms;          /* SUBMIT.tpot_target_ms; 0 = none */
	int priority;              /* admission queue order: higher first */
	bool refuse;               /* no worker meets the TTFT target: refuse (GW_ADMIT_LATE)
				    * instead of waiting for room */
	int64_t arrival_ms;        /* gw_link_now_ms() when the request arrived */
} gw_link_slo;

typedef enum gw_admit {
	GW_ADMIT_SENT,       /* routed to a worker */
	GW_ADMIT_QUEUED,     /* waits in the admission queue; its end arrives through r
			      * (503 when the wait times out) */
	GW_ADMIT_NO_WORKER,  /* no live worker serves the model, or shutting down (503) */
	GW_ADMIT_LATE,       /* a refusing class: no worker can meet the TTFT deadline
			      * (503 + Retry-After) */
	GW_ADMIT_FULL,       /* the admission queue is full (429 + Retry-After) */
	GW_ADMIT_ERROR,      /* out of memory (500) or the send failed (502): see the code */
} gw_admit;

/*
 * Admits r by its class (see above). sub as for gw_link_submit (its
 * slo_class, ttft_deadline_ms and tpot_target_ms are filled here: the
 * remaining TTFT budget when sent; all empty with no_slo). LOOM_OK with
 * *admit SENT or QUEUED: the request's end arrives through r. Otherwise
 * LOOM_EBUSY (NO_WORKER, LATE, FULL; *retry_after_s set for LATE and FULL,
 * seconds >= 1), LOOM_ENOMEM or LOOM_ECLOSED (ERROR), with a message.
 */
loom_err gw_link_submit_slo(gw_link *l, gw_req *r, loom_msg_submit *sub, const char *adapter_sha,
			    const gw_link_slo *slo, gw_admit *admit, uint32_t *retry_after_s);
/* Seconds after which a request refused for want of room (the queue full, a
 * wait timed out) may try again: the time the queue now needs to drain, from
 * the requests' mean duration and the workers' slots; 1..60. */
uint32_t gw_link_retry_after_s(gw_link *l);
/* Removes request id from the table, if still there, and sends CANCEL to its worker. */
void gw_link_cancel(gw_link *l, uint64_t id);
/* True when at least one live worker serves model. */
bool gw_link_model_ready(gw_link *l, const char *model);
/* Shutdown: later submits get LOOM_EBUSY; every request in flight is closed (gw_req_close). */
void gw_link_close_all(gw_link *l);

/* ---- what the admin API and /metrics show ---- */

typedef struct gw_worker_info {
	char url[256];
	char id[LOOM_NAME_MAX];         /* HELLO worker_id, "" before the first HELLO */
	char backend[16];
	bool connected;
	bool live;
	uint32_t inflight;              /* requests routed there and not finished */
	uint32_t n_models;
	char (*models)[LOOM_NAME_MAX];  /* [n_models] owned: the last HELLO's list */
	bool has_stats;
	loom_msg_stats stats;
	bool has_residency;
	loom_msg_residency res;         /* items owned */
	/* the router's view */
	uint32_t batch_inflight;        /* requests without a TTFT target routed there */
	double step_a_ms, step_b_ms;    /* fitted step time = a + b * tokens */
	uint32_t step_samples;          /* STATS samples behind the fit (0 = prior) */
	double predicted_ttft_ms;       /* for a 1-token base-model request now */
	uint64_t pending_tokens;        /* prompt tokens sent that STATS does not show yet */
	uint32_t slots;                 /* sequences it runs at once, as learned (0 = unknown) */
	double request_ms;              /* mean time a request spends there (0 = none yet) */
} gw_worker_info;

/* A snapshot of every worker. *out (free with gw_link_workers_free) has *n entries. */
loom_err gw_link_workers(gw_link *l, gw_worker_info **out, size_t *n);
void gw_link_workers_free(gw_worker_info *v, size_t n);
/* Requests in flight on all workers. */
size_t gw_link_inflight(gw_link *l);

typedef struct gw_link_counters {
	size_t queued;          /* in the admission queue now */
	size_t queue_cap;
	uint64_t queue_timeouts; /* requests failed after waiting queue_timeout_ms */
	size_t entries;         /* requests the link holds (in flight + queued + being moved) */
	uint64_t resumed;       /* requests resumed on another worker after a worker loss */
	uint64_t lost;          /* requests failed because no live worker could take them */
	bool no_slo;
} gw_link_counters;
void gw_link_get_counters(gw_link *l, gw_link_counters *out);

#endif
