/*
 * bench/bn_workload.h — the sequence of requests a run sends.
 *
 * Owns: turning a configuration into requests — arrival times (Poisson /
 * Gamma gaps, or a trace), the adapter of each (popularity picker over
 * --adapters / --adapter-file names, or the trace's), prompt and output
 * lengths, the SLO class, and the JSON body of each request. Independent
 * random streams per aspect, all from --seed, so that a rate sweep sends the
 * same adapters and lengths at every point.
 * Must not: do I/O. Called by bn_run.c and tests.
 */
#ifndef BN_WORKLOAD_H
#define BN_WORKLOAD_H

#include "bench/bn_config.h"
#include "common/err.h"

typedef struct bn_reqspec {
	double t;          /* arrival, seconds after the start (open loop / trace); 0 closed */
	int adapter;       /* index of the adapter name, -1 = base model */
	int prompt_tokens; /* >= 1 */
	int output_tokens; /* >= 1, sent as max_tokens with ignore_eos */
	int slo;           /* index into config slo[] */
} bn_reqspec;

typedef struct bn_workload bn_workload;

/* c must outlive the workload. *out owned by the caller (bn_workload_destroy). */
loom_err bn_workload_create(const bn_config *c, bn_workload **out);
void bn_workload_destroy(bn_workload *w);
/* The next request; LOOM_ENOTFOUND when a trace is exhausted. */
loom_err bn_workload_next(bn_workload *w, bn_reqspec *out);
/* The "model" sent for adapter index a (-1: the base model). The pointer is
 * valid until the next call. */
const char *bn_workload_model(bn_workload *w, int adapter);
/* The JSON body for s: *json loom_malloc'ed, owned by the caller. */
loom_err bn_workload_body(bn_workload *w, const bn_reqspec *s, char **json);

#endif
