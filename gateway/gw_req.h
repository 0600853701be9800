/*
 * gateway/gw_req.h — one in-flight generation request (completions or chat).
 *
 * Owns: the request's output state — ids received, text (through a
 * gw_stream: detokenization + stop strings), finish reason or error — and
 * the bridge to its HTTP connection: the SSE bytes not yet written, and the
 * suspended-connection handshake (a handler or SSE reader with nothing to do
 * parks the connection; the link thread that produces output resumes it).
 * Threads: the link threads call gw_req_on_step / gw_req_fail; MHD threads
 * call park / read / result. Every entry point takes the request's mutex;
 * MHD_suspend/resume are called under it so a wake-up is never lost.
 * Lifetime: reference counted (gw_req_hold / gw_req_release); the creator,
 * the link's request table and an SSE response each hold one.
 * Choices (n > 1, opts.n_choices): one request, k outputs. The link carries
 * each choice as a SUBMIT of its own under its own id, through a handle
 * (gw_req_choice: a gw_req the link uses like any other, whose steps,
 * failures and resumption go to its choice of the request). Each choice has
 * its own text, stop strings, logprobs, finish reason and tool calls; the
 * request ends when all have finished, and fails as a whole when one fails
 * (the others then get GW_STEP_STOPPED at their next step). Streamed, each
 * chunk carries one choice with its index, in the order they come; the
 * response lists the choices by index; usage counts the prompt once, the
 * completion tokens of all choices, and as cached tokens the fewest any
 * choice took from the prefix cache. With n = 1 the request is its own
 * handle, as before choices existed.
 * SLO accounting: a request created with a gw_slo records its outcome there
 * exactly once, when it ends (or, never ended, when its last reference goes):
 * TTFT from opts.arrival_ms to the first token (a stream: the first chunk
 * with text), TPOT, tokens, status.
 * Must not: know workers or sockets (gw_link does), parse JSON (gw_openai).
 */
#ifndef GW_REQ_H
#define GW_REQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"
#include "common/proto.h"
#include "gw_models.h"
#include "gw_openai.h"
#include "gw_slo.h"
#include "gw_tools.h"

struct MHD_Connection;

typedef struct gw_req gw_req;

typedef struct gw_req_opts {
	gw_api api;                  /* GW_API_COMPLETIONS or GW_API_CHAT */
	const gw_model *model;       /* the request holds a reference (an adapter's base model) */
	const char *model_name;      /* the response's "model" (the name the client sent,
				      * e.g. an adapter's); NULL = model->name; copied */
	bool stream;
	bool include_usage;
	bool return_token_ids;
	const char *const *stops;    /* copied */
	size_t n_stops;
	const int32_t *prompt_ids;   /* copied (usage, prompt_token_ids) */
	size_t n_prompt;
	gw_slo *slo;                 /* borrowed, must outlive the request; NULL = no accounting */
	int slo_class;               /* index in slo */
	int64_t arrival_ms;          /* gw_req_now_ms() when the request arrived; 0 = at create */
	/* logprobs: what the response shows (the SUBMIT must ask the worker
	 * for at least as much: logprobs with top_logprobs alternatives, and
	 * prompt logprobs with max(echo && logprobs ? top_logprobs : 0,
	 * prompt_top_logprobs) for echo + logprobs or prompt_logprobs) */
	bool logprobs;
	int top_logprobs;
	bool echo;                   /* completions: the prompt text comes first */
	const char *echo_text;       /* its text (copied); NULL = decode prompt_ids */
	size_t echo_len;
	bool prompt_logprobs;        /* vLLM's field, with prompt_top_logprobs shown */
	int prompt_top_logprobs;
	/* chat with tools rendered: the output is split into content and
	 * tool calls in this syntax (gw_tools.h) when it ends; a stream holds
	 * back text a call may start in (gw_tools_safe_prefix) and sends the
	 * calls as delta.tool_calls at the end, finish_reason "tool_calls".
	 * GW_TOOLS_NONE: plain content. */
	gw_tools_fmt tools_fmt;
	bool parallel_tool_calls;    /* false: only the first call is kept */
	size_t n_choices;            /* "n": 1..GW_MAX_N (more: LOOM_EINVAL); 0 = 1 */
} gw_req_opts;

/* CLOCK_MONOTONIC in ms (the clock of arrival_ms; the same as gw_link_now_ms). */
int64_t gw_req_now_ms(void);
/* Requests alive in this process (created and not yet freed). */
long gw_req_tracked(void);

/* Creates a request with a fresh process-unique id; *out holds one reference. */
loom_err gw_req_create(const gw_req_opts *o, gw_req **out);
void gw_req_hold(gw_req *r);
/* What the link carries choice i (< n_choices) as: *out is a new reference
 * (release it once submitted; the link holds its own). With one choice, r
 * itself; otherwise a handle with an id of its own (call once per choice).
 * r must be a request, not a handle. */
loom_err gw_req_choice(gw_req *r, size_t i, gw_req **out);
/* The ids of r's choices that are still with the link (handles made, not
 * finished, failed or stopped): those to CANCEL when the client leaves or
 * the request failed. Writes up to GW_MAX_N ids; returns how many. */
size_t gw_req_live_choices(gw_req *r, uint64_t *ids);
/* Drops a reference; the last one frees the request. NULL is fine. */
void gw_req_release(gw_req *r);

/* The request's id (a handle: its choice's, the SUBMIT's req). */
uint64_t gw_req_id(const gw_req *r);
const int32_t *gw_req_prompt(const gw_req *r, size_t *n);

typedef enum gw_step_result {
	GW_STEP_MORE,    /* still generating */
	GW_STEP_DONE,    /* finished (the worker said so, or the request had already ended) */
	GW_STEP_STOPPED, /* a stop string ended it: the caller must CANCEL it on the worker */
} gw_step_result;

/* Link thread: a STEP item (its new ids, the worker's loom_finish for
 * them, their logprobs and, once, the prompt's) for r's choice. With finish
 * STOP the last id is the stop token (EOS or a stop id): it counts, but adds
 * no text. GW_STEP_STOPPED also when the request ended otherwise (failed,
 * closed) while this choice still ran. */
gw_step_result gw_req_on_step(gw_req *r, const loom_step_item *it);
/* Ends the request with an error (no-op when it already ended); through a
 * handle, its choice counts as no longer with the link. type: OpenAI error
 * type ("server_error", ...). */
void gw_req_fail(gw_req *r, int status, const char *type, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Server shutdown: streams end at the next read, parked handlers wake up. */
void gw_req_close(gw_req *r);

/* The request ended; for a handle of n > 1: its choice or the request. */
bool gw_req_done(gw_req *r);

/* The ids a choice (r: its handle) generated so far, for resuming it
 * elsewhere: *ids (loom_malloc'ed, caller frees; NULL when n is 0) and *n.
 * LOOM_ECANCELED when the request or the choice already ended (nothing to
 * resume). */
loom_err gw_req_generated(gw_req *r, int32_t **ids, size_t *n);

/* MHD thread, non-stream: true when the request already ended; otherwise the
 * connection is suspended (inside the access handler) until it ends. */
bool gw_req_park(gw_req *r, struct MHD_Connection *c);
/* The final body of a non-stream request that ended (loom_malloc'ed) and its
 * HTTP status; NULL when out of memory. */
char *gw_req_result(gw_req *r, int *status);

/* MHD thread, stream: binds the connection the SSE reader runs on. */
void gw_req_attach(gw_req *r, struct MHD_Connection *c);
/* The MHD content-reader: copies pending SSE bytes; suspends the connection
 * and returns 0 when there are none yet; MHD_CONTENT_READER_END_* at the end. */
ssize_t gw_req_sse_read(gw_req *r, char *buf, size_t max);

#endif
