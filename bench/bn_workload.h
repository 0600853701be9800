/*
 * bench/bn_workload.h — the sequence of requests a run sends.
 *
 * Owns: turning a configuration into requests — arrival times (Poisson /
 * Gamma gaps, or a trace), the adapter of each (popularity picker over
 * --adapters / --adapter-file names, or the trace's), prompt and output
 * lengths, the SLO class, the run's shared prefix (--shared-prefix), the
 * token history of each conversation (--turns), and the JSON body of each
 * request. Independent random streams per aspect, all from --seed, so that
 * a rate sweep sends the same adapters and lengths at every point (prompt
 * ids are salted with the point's index, so no point finds another's
 * prompts in a server's prefix cache).
 * Must not: do I/O. Called by bn_run.c and tests.
 *
 * Conversations (--turns T > 1): bn_workload_next starts one and returns
 * its turn 1 (prompt = shared prefix + message 1). When a turn succeeds the
 * caller hands its generated ids to bn_workload_follow, which appends them
 * and a new message and returns the next turn, whose prompt therefore
 * extends the previous prompt + output exactly. A conversation holds one
 * adapter and one SLO class for all its turns. Each conversation draws its
 * message lengths, message ids and output lengths from its own stream
 * (seed, conversation number), so its content does not depend on timing.
 */
#ifndef BN_WORKLOAD_H
#define BN_WORKLOAD_H

#include <stdint.h>

#include "bench/bn_config.h"
#include "common/err.h"

typedef struct bn_reqspec {
	double t;          /* arrival, seconds after the start (open loop / trace); 0 closed */
	int adapter;       /* index of the adapter name, -1 = base model */
	int prompt_tokens; /* >= 1: the whole prompt, shared prefix and history included */
	int output_tokens; /* >= 1, sent as max_tokens with ignore_eos */
	int slo;           /* index into config slo[] */
	long conv;         /* --turns: conversation number in start order; -1 otherwise */
	int turn;          /* 1-based turn of its conversation; 1 without --turns */
	int slot;          /* --turns: the conversation's history in the workload; -1 otherwise */
} bn_reqspec;

typedef struct bn_workload bn_workload;

/* c must outlive the workload. *out owned by the caller (bn_workload_destroy). */
loom_err bn_workload_create(const bn_config *c, bn_workload **out);
/* Frees the workload and every conversation still open. */
void bn_workload_destroy(bn_workload *w);
/* The next request (with --turns: turn 1 of a new conversation);
 * LOOM_ENOTFOUND when a trace is exhausted. */
loom_err bn_workload_next(bn_workload *w, bn_reqspec *out);
/*
 * --turns: s (a turn of an open conversation) succeeded and generated
 * ids[0..n_out). Appends them to the history, then a new message, and
 * returns the next turn in *next (its t is 0: the caller schedules it).
 * ids == NULL: the server did not return its ids; n_out random ids stand in
 * (the history keeps its length, but the server cannot find the previous
 * output in its cache). LOOM_ENOTFOUND when s was the last turn: the
 * conversation is over and its slot freed. On any other error the
 * conversation is ended too.
 */
loom_err bn_workload_follow(bn_workload *w, const bn_reqspec *s, const int32_t *ids,
			    int n_out, bn_reqspec *next);
/* --turns: ends s's conversation before its last turn (a turn failed, or
 * the run stops sending). No-op for a request outside a conversation. */
void bn_workload_end(bn_workload *w, const bn_reqspec *s);
/* Conversations started, and open now. */
long bn_workload_convs_started(const bn_workload *w);
int bn_workload_convs_open(const bn_workload *w);
/* The "model" sent for adapter index a (-1: the base model). The pointer is
 * valid until the next call. */
const char *bn_workload_model(bn_workload *w, int adapter);
/* The JSON body for s (before s's conversation, if any, is followed or
 * ended): *json loom_malloc'ed, owned by the caller. */
loom_err bn_workload_body(bn_workload *w, const bn_reqspec *s, char **json);

#endif
