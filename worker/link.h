/*
 * worker/link.h — the worker's end of the gateway link (nng pair1).
 *
 * Owns: one pair1 socket listening on the worker's URL (ipc:// or tcp://;
 * the gateway dials and redials), a receive thread that decodes each
 * message (common/proto.h) and hands SUBMIT / CANCEL to the engine,
 * answers every PING with HELLO (ping_seq = the PING's seq; the models are
 * every model the engine's residency lists) then STATS then RESIDENCY,
 * registers each ADAPTER and MODEL with the residency (a PEFT folder is
 * loaded and validated on the receive thread; a store blob is only
 * recorded), and collects BLOB chunks for wk_link_fetch. A failed
 * registration is answered by ERROR{req 0, code, "adapter NAME: reason"}
 * (or "model NAME: ...") and the worker keeps serving.
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
 * Opens the socket and listens on url. worker_id is copied for HELLO; the
 * model names (models[0..n_models), each shorter than LOOM_NAME_MAX) are
 * only checked and kept for older callers: HELLO lists the models of the
 * engine's residency. tls (NULL = none; the listener takes a reference) is
 * the server side of mutual TLS for a tls+tcp:// url (common/tlslink.h):
 * only a gateway whose certificate chains to its CA gets in. Errors (bad
 * URL, address in use) name the URL and nng's reason.
 * *out owned by the caller, released with wk_link_destroy.
 */
struct nng_tls_config;
loom_err wk_link_create(const char *url, const char *worker_id, const char *const *models,
			int n_models, struct nng_tls_config *tls, wk_link **out);

/* A wk_emit_fn (ctx = the wk_link): encodes m and sends it to the gateway.
 * Thread-safe. Waits up to 2 s for a gateway to take it, then drops it
 * with a log line; after wk_link_stop it drops silently. */
void wk_link_emit(void *link, const loom_msg *m);

/*
 * A wk_res_fetch_fn (ctx = the wk_link): asks the gateway for store blob
 * hex with FETCH{hex, offset} and assembles the BLOB answers (each chunk's
 * offset must follow the last; the first sets the total) into *buf
 * (loom_malloc'ed, caller frees; not verified: the caller hashes it).
 * LOOM_ENOTFOUND when the gateway answers total 0, LOOM_ETIMEDOUT after
 * 30 s without a chunk, LOOM_ECLOSED once the link stops, LOOM_EPROTO for
 * inconsistent chunks. One fetch at a time; never call it on the receive
 * thread (which delivers the chunks).
 */
loom_err wk_link_fetch(void *link, const char *hex, void **buf, size_t *len);

/* Starts the receive thread feeding e (borrowed; must outlive the link's
 * running time, i.e. until wk_link_stop returns). */
loom_err wk_link_start(wk_link *l, wk_engine *e);

/* Closes the socket and joins the receive thread. Idempotent. */
void wk_link_stop(wk_link *l);

/* Stops if needed and frees l. NULL is a no-op. */
void wk_link_destroy(wk_link *l);

#endif
