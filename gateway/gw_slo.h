/*
 * gateway/gw_slo.h — SLO classes (name -> TTFT target, TPOT target,
 * priority) and the gateway's accounting of how well each class is served.
 *
 * Owns: the class table (defaults `interactive` 1000 ms / 200 ms / priority
 * 1 and `batch` with no targets / priority 0, both queueing on a miss;
 * --slo-class NAME=TTFT:TPOT:PRIO[:refuse|queue] and the config's
 * "slo_classes" add or replace classes), and per class:
 * requests ended, TTFT / TPOT / both met, refusals by status, completion
 * tokens of requests that met both targets (goodput), and TTFT / TPOT
 * histograms. The table is fixed once the gateway serves (lookups take no
 * lock); the accounting is under one mutex, from any thread.
 *
 * Attainment is defined as loom-bench defines it, so the two report the
 * same figures: a request meets its class when it succeeded with TTFT <=
 * the TTFT target and TPOT <= the TPOT target; a missing target always
 * holds; a one-token completion has no TPOT and meets any TPOT target;
 * refused and failed requests are misses. TTFT runs from the request's
 * arrival to its first token (for a stream: the first chunk with text),
 * TPOT = (end - first token) / (tokens - 1).
 * Must not: know HTTP or workers (gw_server and gw_req call it).
 */
#ifndef GW_SLO_H
#define GW_SLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define GW_SLO_MAX_CLASSES 16
#define GW_SLO_NAME_MAX 32   /* = sizeof loom_msg_submit.slo_class */

typedef struct gw_slo_class {
	char name[GW_SLO_NAME_MAX];
	uint32_t ttft_ms;    /* 0 = no TTFT target (the class waits instead of being refused) */
	uint32_t tpot_ms;    /* 0 = no TPOT target */
	int priority;        /* higher first; 0..1000 */
	bool refuse;         /* when no worker can meet the TTFT target: refuse at once
			      * (503 + Retry-After) instead of waiting in the admission
			      * queue (the default); meaningless without a TTFT target */
} gw_slo_class;

typedef struct gw_slo gw_slo;

/* A table holding the two default classes. */
loom_err gw_slo_create(gw_slo **out);
void gw_slo_destroy(gw_slo *s);

/* Adds or replaces (by name) a class from
 * "NAME=TTFT_MS:TPOT_MS:PRIORITY[:refuse|:queue]" (a target of 0 or "none" =
 * no target; the policy on a missed TTFT target defaults to queue). what
 * names the source in errors ("--slo-class"). */
loom_err gw_slo_parse_arg(gw_slo *s, const char *spec, const char *what);
/* Adds or replaces a class from values already parsed. */
loom_err gw_slo_put(gw_slo *s, const gw_slo_class *c);
/* Adds or replaces classes from a config's "slo_classes" JSON text: an
 * object {"NAME": {"ttft_ms": N|null, "tpot_ms": N|null, "priority": N,
 * "on_miss": "queue"|"refuse"}}. where names the file in errors. */
loom_err gw_slo_load_json(gw_slo *s, const char *json, const char *where);

size_t gw_slo_count(const gw_slo *s);
const gw_slo_class *gw_slo_at(const gw_slo *s, size_t i);
/* Index of class name, or -1. */
int gw_slo_find(const gw_slo *s, const char *name);
/* The class of a request that names none: `interactive`, else the first. */
int gw_slo_default(const gw_slo *s);
/* The smallest TTFT target of any class, 0 when none has one. */
uint32_t gw_slo_min_ttft(const gw_slo *s);
/* "interactive, batch" into buf (n bytes), for error messages. */
void gw_slo_names(const gw_slo *s, char *buf, size_t n);

/* ---- accounting ---- */

/* How one request ended. */
typedef struct gw_slo_outcome {
	int status;          /* 200, or the HTTP status of the error / refusal */
	bool has_ttft;       /* a first token arrived */
	double ttft_ms;
	bool has_tpot;       /* at least 2 tokens */
	double tpot_ms;
	uint64_t tokens;     /* completion tokens */
} gw_slo_outcome;

/* Counts one request of class cls (out of range: ignored). */
void gw_slo_record(gw_slo *s, int cls, const gw_slo_outcome *o);

/* Figures of one class (a snapshot). */
typedef struct gw_slo_figures {
	uint64_t requests, ttft_met, tpot_met, met, refused_503, refused_429, failed;
	uint64_t good_tokens, tokens;
} gw_slo_figures;
void gw_slo_figures_get(gw_slo *s, int cls, gw_slo_figures *out);

/* The SLO families of /metrics (Prometheus text 0.0.4), loom_malloc'ed;
 * NULL when out of memory. */
char *gw_slo_metrics_text(gw_slo *s);

#endif
