/*
 * bench/bn_run.h — running one benchmark point against a server.
 *
 * Owns: the load loop — one thread, libcurl's multi interface driving every
 * concurrent streaming POST /v1/completions — the per-request measurements
 * (time to first text chunk, end-to-end latency, tokens, error kind), the
 * stopping rules (--requests, --duration + --grace, a stop flag) and the
 * live progress line on stderr.
 * Must not: print results (bn_report does) or exit.
 * Called by bench/main.c and the integration test.
 *
 * Conversations (--turns): when a turn succeeds, the next turn of its
 * conversation is due at once (t_sched = the moment the turn ended) and is
 * sent before any new conversation: in a closed loop each of the N clients
 * runs its conversation's turns one after another, then starts another; in
 * an open loop every arrival starts a conversation whose later turns follow
 * their predecessors' completions (still bounded by --max-inflight). A turn
 * that fails ends its conversation. --requests and --duration count turns.
 *
 * Times: every request has an intended send time t_sched (its arrival in
 * an open loop or trace; the moment a slot freed in a closed loop). TTFT and
 * latency are measured from t_sched, so a client that falls behind its
 * schedule (or an open loop held back by --max-inflight) shows in the
 * figures instead of hiding server delay; the lag itself is recorded.
 */
#ifndef BN_RUN_H
#define BN_RUN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "bench/bn_config.h"
#include "common/err.h"

typedef enum bn_errkind {
	BN_OK = 0,
	BN_ERR_HTTP_4XX,   /* HTTP status 400..499 */
	BN_ERR_HTTP_5XX,   /* HTTP status 500..599 */
	BN_ERR_HTTP_OTHER, /* any other status than 200 */
	BN_ERR_TRANSPORT,  /* connect/send/receive failed (curl error) */
	BN_ERR_TIMEOUT,    /* --timeout, or still running at --duration + --grace */
	BN_ERR_SSE,        /* an SSE error event: data: {"error": ...} */
	BN_ERR_PROTOCOL,   /* bad SSE data, or a stream without data: [DONE] */
	BN_ERR_COUNT
} bn_errkind;

/* "ok", "http_4xx", "http_5xx", "http_other", "transport", "timeout",
 * "sse_error", "protocol". */
const char *bn_errkind_name(bn_errkind k);

typedef struct bn_sample {
	double t_sched;      /* s after the start: intended send time */
	double lag;          /* s: actual send time - t_sched */
	double ttft;         /* s from t_sched to the first chunk with text; NaN if none */
	double latency;      /* s from t_sched to the end of the stream; NaN on error */
	double t_end;        /* s after the start: when the request ended */
	int adapter;         /* adapter index, -1 = base model */
	long conv;           /* --turns: conversation number; -1 otherwise */
	int turn;            /* 1-based turn in its conversation (1 without --turns) */
	long cached_tokens;  /* usage.prompt_tokens_details.cached_tokens; -1 not reported */
	int slo;             /* SLO class index */
	int prompt_tokens;
	int max_tokens;
	int tokens;          /* output tokens: usage.completion_tokens, else text chunks */
	int chunks;          /* chunks carrying text */
	int status;          /* HTTP status, 0 if none */
	bn_errkind err;
} bn_sample;

typedef struct bn_result {
	bn_sample *samples;  /* (n) in send order */
	size_t n;
	double elapsed_s;    /* start to the last request's end */
	bool interrupted;    /* stopped by the stop flag */
	long substituted;    /* --turns: turns whose output ids the server did not return
				(the next turn's history holds random ids in their place) */
	char examples[BN_ERR_COUNT][200]; /* first message seen per error kind */
} bn_result;

typedef struct bn_run_opts {
	const volatile sig_atomic_t *stop; /* nonzero: stop now (SIGINT); may be NULL */
	const char *tag;     /* progress line prefix, e.g. "rate=2" (may be NULL) */
} bn_run_opts;

/* Runs one point of c. *out owned by the caller (bn_result_destroy). Fails
 * only for local reasons (memory, libcurl setup); a server that refuses
 * every request still gives a result full of errors. */
loom_err bn_run(const bn_config *c, const bn_run_opts *o, bn_result **out);
void bn_result_destroy(bn_result *r);

#endif
