/*
 * bench/bn_report.h — what a run's samples add up to, and how it is shown.
 *
 * Owns: the per-point figures (throughput, TTFT/TPOT/latency summaries, SLO
 * attainment per class, errors by kind, prompt tokens the server reported
 * cached, and with --turns the same per turn index), the summary table on a FILE, the
 * JSON report (figures + full configuration + per-request samples, one
 * object per point; an array of them for a sweep), its atomic write, and
 * the --extract helper that prints JSON fields as columns for bench/plot.
 * Must not: send requests. Called by bench/main.c and tests.
 *
 * Definitions (bench/README.md repeats them):
 *   TTFT    = first chunk with text - intended send time
 *   latency = end of stream - intended send time (successful requests)
 *   TPOT    = (latency - TTFT) / (tokens - 1), requests with >= 2 tokens
 *   a request attains its class's SLO when it succeeded, TTFT <= the TTFT
 *   target and TPOT <= the TPOT target (a missing target always holds;
 *   a 1-token request has no TPOT and meets any TPOT target)
 *   throughput = successful requests (their output tokens) / elapsed, where
 *   elapsed runs from the start to the end of the last request
 *   cached tokens = usage.prompt_tokens_details.cached_tokens of successful
 *   requests whose usage carried it (OpenAI's field); cached fraction =
 *   those tokens / the prompt tokens of the same requests
 * Times in the report are milliseconds, except *_s fields (seconds).
 */
#ifndef BN_REPORT_H
#define BN_REPORT_H

#include <jansson.h>
#include <stdio.h>

#include "bench/bn_config.h"
#include "bench/bn_run.h"
#include "bench/bn_stats.h"
#include "common/err.h"

typedef struct bn_slo_stat {
	long requests, attained;
} bn_slo_stat;

typedef struct bn_figures {
	long sent, completed, errors;
	long by_kind[BN_ERR_COUNT];
	double elapsed_s;
	double requests_per_s, output_tokens_per_s;
	long output_tokens, prompt_tokens;   /* of successful requests */
	bn_summary ttft, tpot, latency, lag; /* ms */
	bn_slo_stat slo[BN_MAX_SLO];
	bn_slo_stat slo_all;
	int adapters_used;                   /* distinct adapters among sent requests */
	long cached_tokens;                  /* sum over successful requests reporting it */
	long cached_reported;                /* successful requests whose usage had it */
	long cached_prompt_tokens;           /* prompt tokens of those requests */
} bn_figures;

/* Computes the figures of one point. */
loom_err bn_figures_compute(const bn_config *c, const bn_result *r, bn_figures *out);

/* One point as a new JSON object (caller decrefs): figures, "config",
 * "host", "sweep" ({key, value} or null) and "samples" (columns). */
loom_err bn_report_json(const bn_config *c, const bn_result *r, const bn_figures *f,
			json_t **out);

/* The human summary of one point. */
void bn_report_print(FILE *out, const bn_config *c, const bn_result *r, const bn_figures *f);
/* One line per point of a sweep (f: n points of base's sweep). */
void bn_report_sweep_table(FILE *out, const bn_config *base, const bn_figures *f, int n);

/* --turns: one object per turn index 1.. (the largest sent), in a new JSON
 * array (caller decrefs): turn, sent, completed, prompt_tokens_mean,
 * cached_tokens (sum, or null when no response of that turn reported it),
 * ttft and latency summaries (ms) of its successful requests. */
loom_err bn_turns_json(const bn_result *r, json_t **out);
/* --turns: the same as a table, one row per turn index. */
void bn_turns_print(FILE *out, const bn_result *r);

/* Writes j to path (through a temporary file renamed into place). */
loom_err bn_write_json(const char *path, const json_t *j);

/*
 * --extract: loads the report at path (one point or an array of points) and
 * prints, tab-separated, the values of keys (dot paths such as
 * "throughput.output_tokens_per_s", "sweep.value", "slo.interactive.attainment";
 * "@index" is the point's index; "@keys:PATH" the member names of the object
 * at PATH joined by ',', e.g. "@keys:slo"). One line per point; when a key names an
 * array (e.g. "samples.latency_ms") each point prints one line per element
 * and points are separated by two blank lines (gnuplot's index blocks).
 * Missing values and nulls print as NaN.
 */
loom_err bn_extract(FILE *out, const char *path, char *const *keys, int n_keys);

/* The CPU's model name from /proc/cpuinfo ("unknown" when absent). */
void bn_cpu_model(char *buf, size_t n);

#endif
