/*
 * worker/link.h — the worker's end of the gateway link (nng pair1).
 *
 * Owns: one pair1 socket listening on the worker's URL (ipc:// or tcp://;
 * the gateway dials and redials), a receive thread that decodes each
 * message (common/proto.h) and hands SUBMIT / CANCEL to the engine,
 * answers every PING with HELLO (ping_seq = the PING's seq) then STATS, and
 * loads each ADAPTER (ad_adapter_load for the named base model's config,
 * on the receive thread) into the engine (wk_engine_add_adapter); a failed
 * one is answered by ERROR{req 0, code, "adapter NAME: reason"} and the
 * worker keeps serving.
 * When the gateway's pipe goes away (REM_POST) every request that came
 * through that pipe is canceled. A malformed message is logged (one line)
 * and ignored. NNG_OPT_RECVMAXSZ is 64 MiB.
 * Must not: know about batching (the engine does; models only through
 * wk_engine_find_model, for an adapter's base config), or block in an nng
 * pipe callback.
 *
 * Lifecycle: wk_link_create (listens) -> wk_engine_create(..., wk_link_emit,
 * link, ...) -> wk_link_start(link, engine) -> ... -> wk_link_stop (closes
 * the socket, joins the thread) -> wk_engine_destroy -> wk_link_destroy.
 */
#ifndef WK_LINK_H
#define WK_LINK_H

#include "../common/err.h"
#include "../common/proto.h"
#include "engine.h"

typedef struct wk_link wk_link;

/*
 * Opens the socket and listens on url. worker_id and the model names
 * (models[0..n_models), each shorter than LOOM_NAME_MAX) are copied for
 * HELLO. Errors (bad URL, address in use) name the URL and nng's reason.
 * *out owned by the caller, released with wk_link_destroy.
 */
loom_err wk_link_create(const char *url, const char *worker_id, const char *const *models,
			int n_models, wk_link **out);

/* A wk_emit_fn (ctx = the wk_link): encodes m and sends it to the gateway.
 * Thread-safe. Waits up to 2 s for a gateway to take it, then drops it
 * with a log line; after wk_link_stop it drops silently. */
void wk_link_emit(void *link, const loom_msg *m);

/* Starts the receive thread feeding e (borrowed; must outlive the link's
 * running time, i.e. until wk_link_stop returns). */
loom_err wk_link_start(wk_link *l, wk_engine *e);

/* Closes the socket and joins the receive thread. Idempotent. */
void wk_link_stop(wk_link *l);

/* Stops if needed and frees l. NULL is a no-op. */
void wk_link_destroy(wk_link *l);

#endif
