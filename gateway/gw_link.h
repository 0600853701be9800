/*
 * gateway/gw_link.h — the gateway's links to its workers, and the table of
 * requests in flight on them.
 *
 * Owns: one nng pair1 socket per worker (the gateway dials; nng redials, so
 * a worker that starts later or restarts is picked up), the heartbeat (PING
 * on connect and every 200 ms; a worker is live while it answered a PING in
 * the last second), each worker's HELLO (models it serves) and STATS,
 * routing (among live workers serving the model, the fewest requests in
 * flight), the adapters workers must know (one LOOM_MSG_ADAPTER per adapter
 * of a model the worker serves, sent on every new connection after its
 * first HELLO and before it counts as live, so no SUBMIT overtakes them),
 * and the request table (request id -> gw_req) that STEP / ERROR
 * messages are delivered through. A worker that dies (pipe gone) or stops
 * answering fails its in-flight requests with 502; late messages from a
 * dead pipe are dropped.
 * Threads: one receive thread per worker plus one heartbeat thread; nng pipe
 * callbacks only flip state under the link mutex and wake the heartbeat
 * thread. Public functions are safe from any thread.
 * Must not: know HTTP (it calls gw_req_on_step / gw_req_fail only).
 */
#ifndef GW_LINK_H
#define GW_LINK_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"
#include "common/proto.h"
#include "gw_req.h"

typedef struct gw_link gw_link;

/* An adapter that workers serving base_model are told about (all borrowed). */
typedef struct gw_link_adapter {
	const char *name;
	const char *base_model;
	const char *path;        /* absolute PEFT folder, as the worker will open it */
} gw_link_adapter;

/* Dials every url (non-blocking) and starts the threads. */
loom_err gw_link_create(const char *const *urls, size_t n_urls, gw_link **out);
/* Same, with adapters (copied) announced to every worker that serves their
 * base model: on each new connection, after the worker's first HELLO (or the
 * first that lists the base model), and before that HELLO can add the model
 * to its list. A worker not live yet becomes live only when it answers a PING
 * sent after its ADAPTERs (i.e. once it has loaded them). A worker's
 * ERROR{req 0} about an adapter is logged as a warning. */
loom_err gw_link_create_with_adapters(const char *const *urls, size_t n_urls,
				      const gw_link_adapter *ads, size_t n_ads, gw_link **out);
/* Fails what is still in flight (503), stops the threads, closes the sockets. */
void gw_link_destroy(gw_link *l);

/*
 * Routes r (sub describes it; sub->req is set to gw_req_id(r) here) to a live
 * worker serving sub->model, enters it in the request table (holding a
 * reference) and sends SUBMIT. LOOM_EBUSY: no live worker serves the model
 * (503); LOOM_ECLOSED: the send failed (502). On any other outcome the
 * request's end arrives through r (STEP, ERROR or a worker failure).
 */
loom_err gw_link_submit(gw_link *l, gw_req *r, loom_msg_submit *sub);
/* Removes request id from the table, if still there, and sends CANCEL to its worker. */
void gw_link_cancel(gw_link *l, uint64_t id);
/* True when at least one live worker serves model. */
bool gw_link_model_ready(gw_link *l, const char *model);
/* Shutdown: later submits get LOOM_EBUSY; every request in flight is closed (gw_req_close). */
void gw_link_close_all(gw_link *l);

#endif
