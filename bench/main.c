/*
 * bench/main.c — loom-bench: load generator for OpenAI-compatible
 * /v1/completions servers (loom first). See bench/README.md.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bn_config.h"
#include "bench/bn_report.h"
#include "bench/bn_run.h"
#include "common/alloc.h"
#include "common/log.h"

static const char usage[] =
"usage: loom-bench [options]            run a benchmark (one point, or a --sweep)\n"
"       loom-bench --extract FILE.json KEY...   print report fields as columns\n"
"\n"
"target\n"
"  --url URL                 server base URL (http://127.0.0.1:8080); POSTs /v1/completions\n"
"  --model NAME              base model name, sent as \"model\" when no adapter (demo)\n"
"  --api-key KEY             sent as Authorization: Bearer KEY\n"
"  --label TEXT              name of this run in reports and plots (loom)\n"
"load (choose one; default --concurrency 1)\n"
"  --rate R                  open loop: Poisson arrivals, R requests/s\n"
"  --cv C                    with --rate: Gamma arrivals with coefficient of variation C\n"
"  --concurrency N           closed loop: N requests always in flight\n"
"  --trace FILE.csv          replay timestamp_s,adapter,prompt_tokens,output_tokens\n"
"  --max-inflight N          open loop: cap on concurrent requests (1024)\n"
"adapters (the adapter name is sent as \"model\")\n"
"  --adapters N              names PREFIX0..PREFIX(N-1); 0 = base model only (0)\n"
"  --adapter-prefix P        (lora-)\n"
"  --lora-style S            model (the adapter name is \"model\") | llamacpp (adapter i\n"
"                            as \"lora\": [{\"id\": i, \"scale\": 1}], \"model\" the base)\n"
"  --adapter-file FILE       one adapter name a line\n"
"  --popularity P            uniform | zipf:A | powerlaw:A | distinct (uniform)\n"
"requests\n"
"  --prompt-len L            fixed:N | uniform:A:B | lognormal:MU:SIGMA (fixed:32)\n"
"  --output-len L            same forms; sent as max_tokens with ignore_eos (fixed:32)\n"
"  --vocab N                 prompt token ids are drawn from 3..N-1 (256)\n"
"  --slo-mix SPEC            e.g. interactive:0.7,batch:0.3, sent as \"slo_class\"\n"
"  --slo-target C:TTFT:TPOT  ms targets per class (interactive 1000:200, others none)\n"
"  --no-usage                do not ask for stream_options.include_usage\n"
"  --temperature T           sent with every request (0 = greedy); default: not sent\n"
"  --seed N                  (1)\n"
"prefix caching workloads\n"
"  --shared-prefix N         every prompt starts with the same N ids (the run's system\n"
"                            prompt, from --seed); --prompt-len draws the rest (0)\n"
"  --turns T                 conversations of T turns: turn k resends turn k-1's prompt,\n"
"                            its generated ids (return_token_ids) and a new message of\n"
"                            --prompt-len ids; closed loop: each client runs one\n"
"                            conversation at a time; open loop: each arrival starts one,\n"
"                            later turns follow completions; --requests counts turns (1)\n"
"bounds (at least one, unless --trace)\n"
"  --requests N              send N requests\n"
"  --duration S              send for S seconds, then wait up to --grace S (10) for\n"
"                            requests in flight; those still running count as timeouts\n"
"  --timeout S               per-request timeout (300)\n"
"output\n"
"  --json FILE               full report: figures, configuration, per-request samples\n"
"  --sweep KEY=V1,V2,...     KEY: rate | adapters | concurrency | alpha | cv; one point\n"
"                            after another (the JSON is then an array of points)\n"
"  --quiet                   no progress line on stderr\n";

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static int run_all(bn_config *c)
{
	int n = c->sweep == BN_SWEEP_NONE ? 1 : c->n_sweep;
	bn_figures *figs = loom_calloc((size_t)n, sizeof *figs);
	json_t *all = c->sweep == BN_SWEEP_NONE ? NULL : json_array();
	json_t *single = NULL;
	int status = 1, done = 0;
	loom_err rc = LOOM_OK;
	if (!figs || (c->sweep != BN_SWEEP_NONE && !all)) {
		fprintf(stderr, "loom-bench: no memory\n");
		goto out;
	}
	for (int i = 0; i < n && !stop_flag; i++) {
		bn_config p;
		bn_result *res = NULL;
		json_t *pj = NULL;
		char tag[64];
		bn_config_point(c, i, &p);
		if (c->sweep != BN_SWEEP_NONE) {
			snprintf(tag, sizeof tag, "[%s=%g %d/%d]", bn_sweep_name(c->sweep),
				 p.sweep_value, i + 1, n);
			if ((rc = bn_config_validate(&p)))
				break;
		}
		bn_run_opts o = { &stop_flag, c->sweep != BN_SWEEP_NONE ? tag : NULL };
		if ((rc = bn_run(&p, &o, &res)))
			break;
		if (!(rc = bn_figures_compute(&p, res, &figs[i]))) {
			bn_report_print(stdout, &p, res, &figs[i]);
			if (c->json_path)
				rc = bn_report_json(&p, res, &figs[i], &pj);
		}
		bn_result_destroy(res);
		if (rc)
			break;
		done = i + 1;
		if (pj && all) {
			if (json_array_append_new(all, pj)) {
				rc = loom_fail(LOOM_ENOMEM, "no memory for the report");
				break;
			}
			/* rewrite after every point: a long sweep keeps what it measured */
			if ((rc = bn_write_json(c->json_path, all)))
				break;
		} else if (pj) {
			single = pj;
		}
	}
	if (rc) {
		fprintf(stderr, "loom-bench: %s: %s\n", loom_strerror(rc), loom_errmsg());
		goto out;
	}
	if (c->sweep != BN_SWEEP_NONE && done > 0)
		bn_report_sweep_table(stdout, c, figs, done);
	if (single && (rc = bn_write_json(c->json_path, single))) {
		fprintf(stderr, "loom-bench: %s\n", loom_errmsg());
		goto out;
	}
	if (c->json_path && done > 0)
		fprintf(stderr, "loom-bench: report written to %s\n", c->json_path);
	status = stop_flag ? 130 : 0;
out:
	json_decref(all);
	json_decref(single);
	loom_free(figs);
	return status;
}

int main(int argc, char **argv)
{
	bn_config c;
	bn_action act;
	int at, status;
	loom_log_init("loom-bench");
	bn_config_init(&c);
	loom_err rc = bn_config_parse(&c, argc, argv, &act, &at);
	if (rc) {
		fprintf(stderr, "loom-bench: %s\n(loom-bench --help lists the options)\n",
			loom_errmsg());
		bn_config_fini(&c);
		return 2;
	}
	if (act == BN_ACT_HELP) {
		fputs(usage, stdout);
		bn_config_fini(&c);
		return 0;
	}
	if (act == BN_ACT_EXTRACT) {
		rc = bn_extract(stdout, argv[at], argv + at + 1, argc - at - 1);
		if (rc)
			fprintf(stderr, "loom-bench: %s\n", loom_errmsg());
		bn_config_fini(&c);
		return rc ? 1 : 0;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	status = run_all(&c);
	bn_config_fini(&c);
	return status;
}
