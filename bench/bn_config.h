/*
 * bench/bn_config.h — what one loom-bench invocation asks for.
 *
 * Owns: the configuration (target, workload, bounds, output, sweep), its
 * command-line parsing and validation (every bad value is an error naming
 * the option), the SLO class mix, the per-point configuration of a sweep,
 * and the configuration as JSON (written into every report).
 * Must not: run anything or print (main.c prints errors and --help).
 * Called by bench/main.c, bn_run.c, bn_report.c and tests.
 */
#ifndef BN_CONFIG_H
#define BN_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "bench/bn_gen.h"
#include "bench/bn_trace.h"
#include "common/err.h"

#define BN_MAX_SLO 8
#define BN_MAX_SWEEP 64

typedef struct bn_slo_class {
	char name[32];
	double weight;   /* share of requests, normalized to sum 1 */
	double ttft_ms;  /* target time to first token; <= 0: none */
	double tpot_ms;  /* target time per output token; <= 0: none */
} bn_slo_class;

typedef enum bn_sweep_key {
	BN_SWEEP_NONE,
	BN_SWEEP_RATE,
	BN_SWEEP_ADAPTERS,
	BN_SWEEP_CONCURRENCY,
	BN_SWEEP_ALPHA,
	BN_SWEEP_CV,
} bn_sweep_key;

/*
 * String fields point into argv (or string literals) and are not owned;
 * names, trace and sweep_values are owned (bn_config_fini).
 */
typedef struct bn_config {
	const char *url;           /* base URL, e.g. http://127.0.0.1:8080 */
	const char *model;         /* base model name (sent when no adapter) */
	const char *label;         /* run label for plots (default: model or "loom") */
	const char *api_key;       /* sent as Authorization: Bearer, or NULL */

	double rate;               /* > 0: open loop, requests per second */
	double cv;                 /* inter-arrival coefficient of variation (1 = Poisson) */
	int concurrency;           /* > 0: closed loop with this many in flight */

	int n_adapters;            /* --adapters N: names prefix0..prefix(N-1); 0 = base */
	const char *adapter_prefix;
	const char *adapter_file;  /* --adapter-file: names from it (owned copy in names) */
	char **names;              /* (n_names) adapter names from adapter_file */
	int n_names;
	bn_pop pop;

	bn_len prompt_len, output_len;
	int vocab;                 /* prompt ids are drawn from 3..vocab-1 */
	int shared_prefix;         /* --shared-prefix N: every prompt starts with the same N
				      ids (the run's system prompt); --prompt-len is the rest */
	int turns;                 /* --turns T: conversations of T requests, each resending
				      the history (1 = independent requests) */

	const char *trace_path;    /* trace replay (arrivals, adapters, lengths) */
	bn_trace *trace;

	bn_slo_class slo[BN_MAX_SLO];
	int n_slo;
	bool send_slo;             /* --slo-mix given: send "slo_class" */

	uint64_t seed;
	long requests;             /* stop after sending this many; 0 = no bound */
	double duration_s;         /* stop sending after this; 0 = no bound */
	double grace_s;            /* await in-flight this long after duration_s */
	double timeout_s;          /* per-request timeout */
	int max_inflight;          /* open loop: cap on concurrent transfers */
	bool include_usage;        /* send stream_options.include_usage */
	bool lora_llamacpp;        /* --lora-style llamacpp: adapter i is sent as
				      "lora": [{"id": i, "scale": 1}] with "model" the base */
	double temperature;        /* --temperature T (sent when >= 0; -1 = not sent) */
	bool quiet;                /* no progress bar */
	const char *json_path;

	bn_sweep_key sweep;
	double *sweep_values;      /* (n_sweep) */
	int n_sweep;
	double sweep_value;        /* in a point of a sweep: this point's value */
	int point;                 /* in a point of a sweep: its index (0 otherwise); salts
				      the prompt ids so no point finds another's in a cache */
} bn_config;

typedef enum bn_action {
	BN_ACT_RUN,
	BN_ACT_HELP,
	BN_ACT_EXTRACT,  /* argv[extract_at] is the file, keys follow */
} bn_action;

/* Sets every default. */
void bn_config_init(bn_config *c);
void bn_config_fini(bn_config *c);

/* Parses argv[1..argc) into c (initialized by the caller with
 * bn_config_init), loads the adapter file and trace, and validates. For
 * BN_ACT_EXTRACT, *extract_at is the index of the JSON file in argv. */
loom_err bn_config_parse(bn_config *c, int argc, char **argv, bn_action *action,
			 int *extract_at);

/* Checks cross-option rules (also run by bn_config_parse). */
loom_err bn_config_validate(const bn_config *c);

/* Parses "--slo-mix" ("interactive:0.7,batch:0.3") into c->slo (with the
 * default targets: interactive 1000:200 ms, any other class none). */
loom_err bn_slo_mix_parse(bn_config *c, const char *spec);
/* Applies one "--slo-target NAME:TTFT_MS:TPOT_MS" (a target may be "none"). */
loom_err bn_slo_target_parse(bn_config *c, const char *spec);
/* Parses "--sweep KEY=V1,V2,..." into c->sweep / c->sweep_values. */
loom_err bn_sweep_parse(bn_config *c, const char *spec);
const char *bn_sweep_name(bn_sweep_key k);

/* Point i of the sweep: a shallow copy of base with the swept field set
 * (shares base's owned fields; do not fini it). */
void bn_config_point(const bn_config *base, int i, bn_config *point);
/* Number of distinct adapter names requests can name (0 = base model only). */
int bn_config_adapter_count(const bn_config *c);

/* The configuration as a new JSON object (caller decrefs), or NULL on ENOMEM. */
json_t *bn_config_json(const bn_config *c);

#endif
