/*
 * bench/bn_report.c — figures of a point, the summary table, the JSON report.
 *
 * Samples go into the JSON as columns (one array per field) rather than one
 * object per request: a few times smaller, and bench/plot reads a column with
 * one --extract key.
 */
#include "bench/bn_report.h"
#include "bench/bn_report_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"

/* ---- figures ---- */

static int slo_met(const bn_slo_class *k, const bn_sample *s, double tpot_ms)
{
	if (s->err != BN_OK)
		return 0;
	if (k->ttft_ms > 0 && !(s->ttft * 1000.0 <= k->ttft_ms))
		return 0;
	if (k->tpot_ms > 0 && !isnan(tpot_ms) && tpot_ms > k->tpot_ms)
		return 0;
	return 1;
}

static double sample_tpot_ms(const bn_sample *s)
{
	if (s->err != BN_OK || s->tokens < 2 || isnan(s->ttft))
		return NAN;
	return (s->latency - s->ttft) * 1000.0 / (double)(s->tokens - 1);
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

loom_err bn_figures_compute(const bn_config *c, const bn_result *r, bn_figures *f)
{
	size_t n = r->n;
	double *ttft = NULL, *tpot = NULL, *lat = NULL, *lag = NULL;
	int *ad = NULL;
	loom_err rc = LOOM_OK;
	memset(f, 0, sizeof *f);
	f->sent = (long)n;
	f->elapsed_s = r->elapsed_s;
	size_t m = n ? n : 1;
	ttft = loom_malloc(m * sizeof *ttft);
	tpot = loom_malloc(m * sizeof *tpot);
	lat = loom_malloc(m * sizeof *lat);
	lag = loom_malloc(m * sizeof *lag);
	ad = loom_malloc(m * sizeof *ad);
	if (!ttft || !tpot || !lat || !lag || !ad) {
		rc = loom_fail(LOOM_ENOMEM, "report: no memory for %zu samples", n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		const bn_sample *s = &r->samples[i];
		double tp = sample_tpot_ms(s);
		int k = s->slo >= 0 && s->slo < c->n_slo ? s->slo : 0;
		f->by_kind[s->err]++;
		ttft[i] = s->err == BN_OK ? s->ttft * 1000.0 : NAN;
		tpot[i] = tp;
		lat[i] = s->err == BN_OK ? s->latency * 1000.0 : NAN;
		lag[i] = s->lag * 1000.0;
		ad[i] = s->adapter;
		if (s->err == BN_OK) {
			f->completed++;
			f->output_tokens += s->tokens;
			f->prompt_tokens += s->prompt_tokens;
			if (s->cached_tokens >= 0) {
				f->cached_tokens += s->cached_tokens;
				f->cached_reported++;
				f->cached_prompt_tokens += s->prompt_tokens;
			}
		}
		f->slo[k].requests++;
		f->slo_all.requests++;
		if (slo_met(&c->slo[k], s, tp)) {
			f->slo[k].attained++;
			f->slo_all.attained++;
		}
	}
	f->errors = f->sent - f->completed;
	if (f->elapsed_s > 0) {
		f->requests_per_s = (double)f->completed / f->elapsed_s;
		f->output_tokens_per_s = (double)f->output_tokens / f->elapsed_s;
	}
	if ((rc = bn_summarize(ttft, n, &f->ttft)) || (rc = bn_summarize(tpot, n, &f->tpot)) ||
	    (rc = bn_summarize(lat, n, &f->latency)) || (rc = bn_summarize(lag, n, &f->lag)))
		goto out;
	qsort(ad, n, sizeof *ad, cmp_int);
	for (size_t i = 0; i < n; i++)
		if (ad[i] >= 0 && (i == 0 || ad[i] != ad[i - 1]))
			f->adapters_used++;
out:
	loom_free(ttft);
	loom_free(tpot);
	loom_free(lat);
	loom_free(lag);
	loom_free(ad);
	return rc;
}

/* ---- JSON ---- */

json_t *bn_num_or_null(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

json_t *bn_summary_json(const bn_summary *s)
{
	json_t *j = json_object();
	if (!j || json_object_set_new(j, "count", json_integer((json_int_t)s->count)) ||
	    json_object_set_new(j, "mean", bn_num_or_null(s->mean)) ||
	    json_object_set_new(j, "stddev", bn_num_or_null(s->stddev)) ||
	    json_object_set_new(j, "min", bn_num_or_null(s->min)) ||
	    json_object_set_new(j, "p50", bn_num_or_null(s->p50)) ||
	    json_object_set_new(j, "p90", bn_num_or_null(s->p90)) ||
	    json_object_set_new(j, "p99", bn_num_or_null(s->p99)) ||
	    json_object_set_new(j, "max", bn_num_or_null(s->max))) {
		json_decref(j);
		return NULL;
	}
	return j;
}

void bn_cpu_model(char *buf, size_t n)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];
	snprintf(buf, n, "unknown");
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		char *colon = strchr(line, ':');
		if (!strncmp(line, "model name", 10) && colon) {
			colon++;
			while (*colon == ' ' || *colon == '\t')
				colon++;
			colon[strcspn(colon, "\n")] = '\0';
			snprintf(buf, n, "%s", colon);
			break;
		}
	}
	fclose(f);
}

static json_t *host_json(void)
{
	struct utsname u;
	char cpu[256], os[400];
	bn_cpu_model(cpu, sizeof cpu);
	if (uname(&u) == 0)
		snprintf(os, sizeof os, "%s %s %s", u.sysname, u.release, u.machine);
	else
		snprintf(os, sizeof os, "unknown");
	return json_pack("{s:I, s:s, s:s}", "cpus", (json_int_t)sysconf(_SC_NPROCESSORS_ONLN),
			 "cpu_model", cpu, "os", os);
}

static json_t *samples_json(const bn_result *r)
{
	static const char *const cols[] = { "t_s", "adapter", "slo", "prompt_tokens",
		"max_tokens", "output_tokens", "ttft_ms", "tpot_ms", "latency_ms", "lag_ms",
		"status", "error", "conv", "turn", "cached_tokens" };
	enum { NC = sizeof cols / sizeof cols[0] };
	json_t *j = json_object(), *a[NC];
	int bad = !j;
	for (int k = 0; k < NC; k++) {
		a[k] = json_array();
		if (!a[k] || (j && json_object_set_new(j, cols[k], a[k])))
			bad = 1;
	}
	for (size_t i = 0; i < r->n && !bad; i++) {
		const bn_sample *s = &r->samples[i];
		json_t *v[NC] = {
			json_real(s->t_sched), json_integer(s->adapter), json_integer(s->slo),
			json_integer(s->prompt_tokens), json_integer(s->max_tokens),
			json_integer(s->tokens),
			bn_num_or_null(s->err == BN_OK ? s->ttft * 1000.0 : NAN),
			bn_num_or_null(sample_tpot_ms(s)),
			bn_num_or_null(s->err == BN_OK ? s->latency * 1000.0 : NAN),
			bn_num_or_null(s->lag * 1000.0), json_integer(s->status),
			s->err == BN_OK ? json_null() : json_string(bn_errkind_name(s->err)),
			json_integer(s->conv), json_integer(s->turn),
			s->cached_tokens >= 0 ? json_integer(s->cached_tokens) : json_null(),
		};
		for (int k = 0; k < NC; k++)
			if (json_array_append_new(a[k], v[k]))
				bad = 1;
	}
	if (bad) {
		json_decref(j);
		return NULL;
	}
	return j;
}

loom_err bn_report_json(const bn_config *c, const bn_result *r, const bn_figures *f,
			json_t **out)
{
	json_t *j = json_object(), *errs = json_object(), *ex = json_object(), *slo = json_object();
	char when[64];
	time_t now = time(NULL);
	struct tm tm;
	*out = NULL;
	strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	if (!j || !errs || !ex || !slo)
		goto fail;
	if (json_object_set_new(errs, "total", json_integer(f->errors)))
		goto fail;
	for (int k = 1; k < BN_ERR_COUNT; k++) {
		if (json_object_set_new(errs, bn_errkind_name((bn_errkind)k),
					json_integer(f->by_kind[k])))
			goto fail;
		if (r->examples[k][0] &&
		    json_object_set_new(ex, bn_errkind_name((bn_errkind)k),
					json_string(r->examples[k])))
			goto fail;
	}
	if (json_object_set(errs, "examples", ex))
		goto fail;
	for (int k = 0; k < c->n_slo; k++) {
		const bn_slo_stat *s = &f->slo[k];
		json_t *o = json_pack("{s:o, s:o, s:I, s:I, s:o}",
				      "ttft_ms", bn_num_or_null(c->slo[k].ttft_ms > 0 ? c->slo[k].ttft_ms : NAN),
				      "tpot_ms", bn_num_or_null(c->slo[k].tpot_ms > 0 ? c->slo[k].tpot_ms : NAN),
				      "requests", (json_int_t)s->requests,
				      "attained", (json_int_t)s->attained,
				      "attainment", bn_num_or_null(s->requests ? (double)s->attained /
								(double)s->requests : NAN));
		if (!o || json_object_set_new(slo, c->slo[k].name, o))
			goto fail;
	}
	json_t *sweep = c->sweep == BN_SWEEP_NONE ? json_null()
			: json_pack("{s:s, s:f}", "key", bn_sweep_name(c->sweep),
				    "value", c->sweep_value);
	const char *label = c->label ? c->label : "loom";
	if (json_object_set_new(j, "label", json_string(label)) ||
	    json_object_set_new(j, "sweep", sweep) ||
	    json_object_set_new(j, "started_at", json_string(when)) ||
	    json_object_set_new(j, "elapsed_s", json_real(f->elapsed_s)) ||
	    json_object_set_new(j, "interrupted", json_boolean(r->interrupted)) ||
	    json_object_set_new(j, "sent", json_integer(f->sent)) ||
	    json_object_set_new(j, "completed", json_integer(f->completed)) ||
	    json_object_set(j, "errors", errs) ||
	    json_object_set_new(j, "output_tokens", json_integer(f->output_tokens)) ||
	    json_object_set_new(j, "prompt_tokens", json_integer(f->prompt_tokens)) ||
	    json_object_set_new(j, "throughput",
				json_pack("{s:f, s:f}", "requests_per_s", f->requests_per_s,
					  "output_tokens_per_s", f->output_tokens_per_s)) ||
	    json_object_set_new(j, "ttft", bn_summary_json(&f->ttft)) ||
	    json_object_set_new(j, "tpot", bn_summary_json(&f->tpot)) ||
	    json_object_set_new(j, "latency", bn_summary_json(&f->latency)) ||
	    json_object_set_new(j, "lag", bn_summary_json(&f->lag)) ||
	    json_object_set(j, "slo", slo) ||
	    json_object_set_new(j, "slo_attainment",
				bn_num_or_null(f->slo_all.requests ? (double)f->slo_all.attained /
					    (double)f->slo_all.requests : NAN)) ||
	    json_object_set_new(j, "adapters_used", json_integer(f->adapters_used)) ||
	    json_object_set_new(j, "cached_tokens", json_integer(f->cached_tokens)) ||
	    json_object_set_new(j, "cached_tokens_reported", json_integer(f->cached_reported)) ||
	    json_object_set_new(j, "cached_fraction",
				bn_num_or_null(f->cached_prompt_tokens > 0
					       ? (double)f->cached_tokens /
						 (double)f->cached_prompt_tokens : NAN)) ||
	    json_object_set_new(j, "config", bn_config_json(c)) ||
	    json_object_set_new(j, "host", host_json()) ||
	    json_object_set_new(j, "samples", samples_json(r)))
		goto fail;
	json_t *turns = NULL; /* bn_turns_json leaves it NULL on failure */
	if (c->turns > 1 &&
	    (bn_turns_json(r, &turns) || json_object_set_new(j, "per_turn", turns) ||
	     json_object_set_new(j, "history_substituted", json_integer(r->substituted))))
		goto fail;
	json_decref(errs);
	json_decref(ex);
	json_decref(slo);
	*out = j;
	return LOOM_OK;
fail:
	json_decref(j);
	json_decref(errs);
	json_decref(ex);
	json_decref(slo);
	return loom_fail(LOOM_ENOMEM, "report: no memory for the JSON report");
}

loom_err bn_write_json(const char *path, const json_t *j)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >= (int)sizeof tmp)
		return loom_fail(LOOM_EINVAL, "--json '%s': path too long", path);
	if (json_dump_file(j, tmp, JSON_INDENT(1) | JSON_REAL_PRECISION(10)) != 0) {
		int e = errno;
		unlink(tmp);
		return loom_fail(LOOM_EIO, "%s: cannot write: %s", tmp, strerror(e));
	}
	if (rename(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		return loom_fail(LOOM_EIO, "%s: cannot rename into place: %s", path, strerror(e));
	}
	return LOOM_OK;
}

/* ---- table ---- */

static void target(char *buf, size_t n, double v)
{
	if (v > 0)
		snprintf(buf, n, "%g", v);
	else
		snprintf(buf, n, "-");
}

static void summary_row(FILE *out, const char *name, const bn_summary *s)
{
	if (s->count == 0) {
		fprintf(out, "  %-10s %10s\n", name, "(none)");
		return;
	}
	fprintf(out, "  %-10s %10.1f %10.1f %10.1f %10.1f %10.1f\n", name, s->mean, s->p50,
		s->p90, s->p99, s->max);
}

void bn_report_print(FILE *out, const bn_config *c, const bn_result *r, const bn_figures *f)
{
	char pop[64], plen[64], olen[64], a[32], b[32];
	bn_pop_format(&c->pop, pop, sizeof pop);
	bn_len_format(&c->prompt_len, plen, sizeof plen);
	bn_len_format(&c->output_len, olen, sizeof olen);
	fprintf(out, "\n== loom-bench: %s", c->url);
	if (c->sweep != BN_SWEEP_NONE)
		fprintf(out, "  [%s=%g]", bn_sweep_name(c->sweep), c->sweep_value);
	fprintf(out, "\n   ");
	if (c->trace)
		fprintf(out, "trace %s (%zu requests)", c->trace_path, c->trace->n);
	else if (c->rate > 0)
		fprintf(out, "%s arrivals at %g req/s%s", c->cv == 1.0 ? "Poisson" : "Gamma", c->rate,
			c->cv == 1.0 ? "" : " (cv set)");
	else
		fprintf(out, "closed loop, concurrency %d", c->concurrency);
	if (c->trace)
		fprintf(out, "; %d adapters named in the trace", bn_config_adapter_count(c));
	else if (bn_config_adapter_count(c) > 0)
		fprintf(out, "; %d adapters, %s", bn_config_adapter_count(c), pop);
	else
		fprintf(out, "; base model %s", c->model);
	if (!c->trace)
		fprintf(out, "; prompt %s, output %s", plen, olen);
	if (c->shared_prefix > 0)
		fprintf(out, "; shared prefix %d", c->shared_prefix);
	if (c->turns > 1)
		fprintf(out, "; %d-turn conversations", c->turns);
	fprintf(out, "\n");
	fprintf(out, "  %-10s %ld sent, %ld completed, %ld errors in %.2f s%s\n", "requests",
		f->sent, f->completed, f->errors, f->elapsed_s, r->interrupted ? " (interrupted)" : "");
	fprintf(out, "  %-10s %.3f req/s, %.1f output tok/s (%ld output tokens)\n", "throughput",
		f->requests_per_s, f->output_tokens_per_s, f->output_tokens);
	fprintf(out, "  %-10s %10s %10s %10s %10s %10s\n", "ms", "mean", "p50", "p90", "p99", "max");
	summary_row(out, "TTFT", &f->ttft);
	summary_row(out, "TPOT", &f->tpot);
	summary_row(out, "latency", &f->latency);
	if (f->cached_reported > 0)
		fprintf(out, "  %-10s %ld of %ld prompt tokens (%.1f%%), reported by %ld of %ld "
			"requests\n", "cached", f->cached_tokens, f->cached_prompt_tokens,
			f->cached_prompt_tokens ? 100.0 * (double)f->cached_tokens /
			(double)f->cached_prompt_tokens : 0.0, f->cached_reported, f->completed);
	else if (c->shared_prefix > 0 || c->turns > 1)
		fprintf(out, "  %-10s not reported (no usage.prompt_tokens_details.cached_tokens)\n",
			"cached");
	if (c->turns > 1)
		bn_turns_print(out, r);
	fprintf(out, "  %-12s %8s %8s %10s %10s\n", "SLO class", "TTFT<=", "TPOT<=", "attained",
		"of");
	for (int k = 0; k < c->n_slo; k++) {
		const bn_slo_stat *s = &f->slo[k];
		target(a, sizeof a, c->slo[k].ttft_ms);
		target(b, sizeof b, c->slo[k].tpot_ms);
		fprintf(out, "  %-12s %8s %8s %9.1f%% %10ld\n", c->slo[k].name, a, b,
			s->requests ? 100.0 * (double)s->attained / (double)s->requests : 0.0,
			s->requests);
	}
	if (f->errors > 0) {
		fprintf(out, "  errors    ");
		for (int k = 1; k < BN_ERR_COUNT; k++)
			if (f->by_kind[k])
				fprintf(out, " %s %ld", bn_errkind_name((bn_errkind)k), f->by_kind[k]);
		fprintf(out, "\n");
		for (int k = 1; k < BN_ERR_COUNT; k++)
			if (r->examples[k][0])
				fprintf(out, "    %s: %s\n", bn_errkind_name((bn_errkind)k),
					r->examples[k]);
	}
	if (r->substituted > 0)
		fprintf(out, "  note: %ld turns came back without token_ids (return_token_ids "
			"unsupported?): random ids stood in for their output in the next prompt\n",
			r->substituted);
	if (f->lag.count && f->lag.max > 100)
		fprintf(out, "  note: sends lagged their schedule by up to %.0f ms (client busy or "
			"--max-inflight reached)\n", f->lag.max);
	fflush(out);
}

void bn_report_sweep_table(FILE *out, const bn_config *base, const bn_figures *f, int n)
{
	fprintf(out, "\n== sweep over %s\n", bn_sweep_name(base->sweep));
	fprintf(out, "  %10s %9s %10s %9s %9s %9s %9s %9s %7s %6s\n", bn_sweep_name(base->sweep),
		"req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "lat p50", "lat p99",
		"SLO %", "errors");
	for (int i = 0; i < n; i++) {
		const bn_figures *p = &f[i];
		fprintf(out, "  %10g %9.3f %10.1f %9.1f %9.1f %9.1f %9.1f %9.1f %7.1f %6ld\n",
			base->sweep_values[i], p->requests_per_s, p->output_tokens_per_s,
			p->ttft.p50, p->ttft.p99, p->tpot.p50, p->latency.p50, p->latency.p99,
			p->slo_all.requests ? 100.0 * (double)p->slo_all.attained /
			(double)p->slo_all.requests : 0.0, p->errors);
	}
	fflush(out);
}
