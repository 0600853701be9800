/*
 * bench/bn_config.c — loom-bench's options: defaults, parsing, validation,
 * sweeps and the configuration as JSON.
 *
 * Options are "--name VALUE" or "--name=VALUE"; parsing is table-free but
 * linear and strict: an unknown option, a missing value or a value out of
 * range is an error naming the option and the accepted form.
 */
#include "bench/bn_config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

void bn_config_init(bn_config *c)
{
	memset(c, 0, sizeof *c);
	c->url = "http://127.0.0.1:8080";
	c->model = "demo";
	c->cv = 1.0;
	c->adapter_prefix = "lora-";
	c->pop = (bn_pop){ BN_POP_UNIFORM, 0 };
	c->prompt_len = (bn_len){ BN_LEN_FIXED, 32, 0 };
	c->output_len = (bn_len){ BN_LEN_FIXED, 32, 0 };
	c->vocab = 256;
	c->turns = 1;
	c->n_slo = 1;
	snprintf(c->slo[0].name, sizeof c->slo[0].name, "interactive");
	c->slo[0].weight = 1.0;
	c->slo[0].ttft_ms = 1000;
	c->slo[0].tpot_ms = 200;
	c->seed = 1;
	c->grace_s = 10;
	c->timeout_s = 300;
	c->max_inflight = 1024;
	c->include_usage = true;
	c->temperature = -1;
	c->sweep_value = NAN;
}

void bn_config_fini(bn_config *c)
{
	bn_names_free(c->names, c->n_names);
	bn_trace_destroy(c->trace);
	loom_free(c->sweep_values);
	c->names = NULL;
	c->n_names = 0;
	c->trace = NULL;
	c->sweep_values = NULL;
	c->n_sweep = 0;
}

/* ---- value parsing ---- */

static loom_err num(const char *opt, const char *v, double lo, double hi, double *out)
{
	char *e;
	errno = 0;
	double d = v ? strtod(v, &e) : NAN;
	if (!v || !*v || *e || errno || !isfinite(d) || d < lo || d > hi)
		return loom_fail(LOOM_EINVAL, "%s '%s': expected a number in [%g, %g]", opt,
				 v ? v : "", lo, hi);
	*out = d;
	return LOOM_OK;
}

static loom_err integer(const char *opt, const char *v, long lo, long hi, long *out)
{
	char *e;
	errno = 0;
	long d = v ? strtol(v, &e, 10) : 0;
	if (!v || !*v || *e || errno || d < lo || d > hi)
		return loom_fail(LOOM_EINVAL, "%s '%s': expected an integer in [%ld, %ld]", opt,
				 v ? v : "", lo, hi);
	*out = d;
	return LOOM_OK;
}

static int class_name_ok(const char *s, size_t n)
{
	if (n == 0 || n >= sizeof ((bn_slo_class *)0)->name)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
			return 0;
	return 1;
}

loom_err bn_slo_mix_parse(bn_config *c, const char *spec)
{
	bn_slo_class cls[BN_MAX_SLO];
	int n = 0;
	double sum = 0;
	const char *p = spec;
	if (!spec || !*spec)
		return loom_fail(LOOM_EINVAL, "--slo-mix: empty (expected NAME:WEIGHT,...)");
	while (*p) {
		const char *comma = strchr(p, ',');
		const char *end = comma ? comma : p + strlen(p);
		const char *colon = memchr(p, ':', (size_t)(end - p));
		char w[64];
		double weight;
		if (n == BN_MAX_SLO)
			return loom_fail(LOOM_EINVAL, "--slo-mix '%s': at most %d classes", spec,
					 BN_MAX_SLO);
		if (!colon || !class_name_ok(p, (size_t)(colon - p)) ||
		    (size_t)(end - colon - 1) >= sizeof w)
			return loom_fail(LOOM_EINVAL,
					 "--slo-mix '%s': expected NAME:WEIGHT,... with names of "
					 "letters, digits, '_' or '-' (up to 31)", spec);
		memcpy(w, colon + 1, (size_t)(end - colon - 1));
		w[end - colon - 1] = '\0';
		if (num("--slo-mix weight", w, 0, 1e9, &weight) || weight <= 0)
			return loom_fail(LOOM_EINVAL, "--slo-mix '%s': weight '%s' must be a number > 0",
					 spec, w);
		memset(&cls[n], 0, sizeof cls[n]);
		memcpy(cls[n].name, p, (size_t)(colon - p));
		for (int k = 0; k < n; k++)
			if (!strcmp(cls[k].name, cls[n].name))
				return loom_fail(LOOM_EINVAL, "--slo-mix '%s': class '%s' twice", spec,
						 cls[n].name);
		cls[n].weight = weight;
		if (!strcmp(cls[n].name, "interactive")) {
			cls[n].ttft_ms = 1000;
			cls[n].tpot_ms = 200;
		}
		sum += weight;
		n++;
		if (!comma)
			break;
		p = comma + 1;
	}
	for (int k = 0; k < n; k++)
		cls[k].weight /= sum;
	memcpy(c->slo, cls, sizeof cls[0] * (size_t)n);
	c->n_slo = n;
	c->send_slo = true;
	return LOOM_OK;
}

static int target_value(const char *s, size_t n, double *out)
{
	char tmp[64], *e;
	if (n == 0 || n >= sizeof tmp)
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	if (!strcmp(tmp, "none") || !strcmp(tmp, "-")) {
		*out = 0;
		return 0;
	}
	errno = 0;
	double d = strtod(tmp, &e);
	if (*e || errno || !isfinite(d) || d <= 0)
		return -1;
	*out = d;
	return 0;
}

loom_err bn_slo_target_parse(bn_config *c, const char *spec)
{
	const char *a = spec ? strchr(spec, ':') : NULL;
	const char *b = a ? strchr(a + 1, ':') : NULL;
	double ttft, tpot;
	if (!a || !b || strchr(b + 1, ':') ||
	    target_value(a + 1, (size_t)(b - a - 1), &ttft) ||
	    target_value(b + 1, strlen(b + 1), &tpot))
		return loom_fail(LOOM_EINVAL,
				 "--slo-target '%s': expected NAME:TTFT_MS:TPOT_MS (a target > 0 "
				 "or 'none')", spec ? spec : "");
	for (int k = 0; k < c->n_slo; k++) {
		if (strlen(c->slo[k].name) == (size_t)(a - spec) &&
		    !strncmp(c->slo[k].name, spec, (size_t)(a - spec))) {
			c->slo[k].ttft_ms = ttft;
			c->slo[k].tpot_ms = tpot;
			return LOOM_OK;
		}
	}
	return loom_fail(LOOM_EINVAL,
			 "--slo-target '%s': class '%.*s' is not in the SLO mix (give --slo-mix "
			 "before --slo-target)", spec, (int)(a - spec), spec);
}

const char *bn_sweep_name(bn_sweep_key k)
{
	switch (k) {
	case BN_SWEEP_RATE: return "rate";
	case BN_SWEEP_ADAPTERS: return "adapters";
	case BN_SWEEP_CONCURRENCY: return "concurrency";
	case BN_SWEEP_ALPHA: return "alpha";
	case BN_SWEEP_CV: return "cv";
	case BN_SWEEP_NONE: break;
	}
	return "none";
}

loom_err bn_sweep_parse(bn_config *c, const char *spec)
{
	static const bn_sweep_key keys[] = { BN_SWEEP_RATE, BN_SWEEP_ADAPTERS,
					     BN_SWEEP_CONCURRENCY, BN_SWEEP_ALPHA, BN_SWEEP_CV };
	const char *eq = spec ? strchr(spec, '=') : NULL;
	bn_sweep_key key = BN_SWEEP_NONE;
	double vals[BN_MAX_SWEEP];
	int n = 0;
	if (eq)
		for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
			if (strlen(bn_sweep_name(keys[i])) == (size_t)(eq - spec) &&
			    !strncmp(spec, bn_sweep_name(keys[i]), (size_t)(eq - spec)))
				key = keys[i];
	if (key == BN_SWEEP_NONE || !eq[1])
		return loom_fail(LOOM_EINVAL,
				 "--sweep '%s': expected KEY=V1,V2,... with KEY one of rate, "
				 "adapters, concurrency, alpha, cv", spec ? spec : "");
	for (const char *p = eq + 1;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);
		char tmp[64];
		loom_err rc;
		if (n == BN_MAX_SWEEP)
			return loom_fail(LOOM_EINVAL, "--sweep '%s': at most %d values", spec,
					 BN_MAX_SWEEP);
		if (len >= sizeof tmp)
			len = sizeof tmp - 1;
		memcpy(tmp, p, len);
		tmp[len] = '\0';
		if (key == BN_SWEEP_ADAPTERS || key == BN_SWEEP_CONCURRENCY) {
			long v;
			rc = integer("--sweep value", tmp, key == BN_SWEEP_ADAPTERS ? 0 : 1, 1000000, &v);
			vals[n] = (double)v;
		} else {
			rc = num("--sweep value", tmp, key == BN_SWEEP_ALPHA ? 0 : 1e-9, 1e6, &vals[n]);
		}
		if (rc) {
			char why[160];
			snprintf(why, sizeof why, "%s", loom_errmsg()); /* loom_fail overwrites it */
			return loom_fail(rc, "--sweep '%s': %s", spec, why);
		}
		n++;
		if (!comma)
			break;
		p = comma + 1;
	}
	double *v = loom_malloc(sizeof *v * (size_t)n);
	if (!v)
		return loom_fail(LOOM_ENOMEM, "--sweep: no memory");
	memcpy(v, vals, sizeof *v * (size_t)n);
	loom_free(c->sweep_values);
	c->sweep_values = v;
	c->n_sweep = n;
	c->sweep = key;
	return LOOM_OK;
}

/* ---- argv ---- */

enum { GIVEN_POP = 1, GIVEN_PLEN = 2, GIVEN_OLEN = 4, GIVEN_ADAPTERS = 8, GIVEN_CV = 16 };

/* Matches argv[*i] against --name; takes the value ("--name=V" or the next
 * argument). Returns 1 on a match (with *val set), 0 otherwise, -1 when the
 * value is missing. */
static int opt(int argc, char **argv, int *i, const char *name, const char **val)
{
	const char *a = argv[*i];
	size_t n = strlen(name);
	if (strncmp(a, name, n))
		return 0;
	if (a[n] == '=') {
		*val = a + n + 1;
		return 1;
	}
	if (a[n])
		return 0;
	if (*i + 1 >= argc)
		return -1;
	*val = argv[++*i];
	return 1;
}

static loom_err parse_args(bn_config *c, int argc, char **argv, bn_action *action,
			   int *extract_at, unsigned *given)
{
	const char *targets[BN_MAX_SLO * 2];
	int n_targets = 0;
	loom_err rc = LOOM_OK;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		long l;
		int m;
#define OPT(name) ((m = opt(argc, argv, &i, name, &v)) < 0 \
		   ? (rc = loom_fail(LOOM_EINVAL, "%s needs a value", name)), 1 : m)
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			*action = BN_ACT_HELP;
			return LOOM_OK;
		} else if (!strcmp(a, "--extract")) {
			if (i + 1 >= argc)
				return loom_fail(LOOM_EINVAL, "--extract needs FILE.json KEY...");
			*action = BN_ACT_EXTRACT;
			*extract_at = i + 1;
			return LOOM_OK;
		} else if (!strcmp(a, "--no-usage")) {
			c->include_usage = false;
		} else if (!strcmp(a, "--quiet")) {
			c->quiet = true;
		} else if (OPT("--url")) {
			c->url = v;
		} else if (OPT("--model")) {
			c->model = v;
		} else if (OPT("--label")) {
			c->label = v;
		} else if (OPT("--api-key")) {
			c->api_key = v;
		} else if (OPT("--rate")) {
			if (!rc && !(rc = num("--rate", v, 1e-6, 1e6, &c->rate)) && c->rate <= 0)
				rc = loom_fail(LOOM_EINVAL, "--rate must be > 0");
		} else if (OPT("--cv")) {
			*given |= GIVEN_CV;
			if (!rc)
				rc = num("--cv", v, 1e-3, 100, &c->cv);
		} else if (OPT("--concurrency")) {
			if (!rc && !(rc = integer("--concurrency", v, 1, 100000, &l)))
				c->concurrency = (int)l;
		} else if (OPT("--adapters")) {
			*given |= GIVEN_ADAPTERS;
			if (!rc && !(rc = integer("--adapters", v, 0, 1000000, &l)))
				c->n_adapters = (int)l;
		} else if (OPT("--adapter-prefix")) {
			c->adapter_prefix = v;
		} else if (OPT("--lora-style")) {
			if (!rc && !strcmp(v, "llamacpp"))
				c->lora_llamacpp = true;
			else if (!rc && strcmp(v, "model"))
				rc = loom_fail(LOOM_EINVAL, "--lora-style must be model or llamacpp");
		} else if (OPT("--temperature")) {
			if (!rc)
				rc = num("--temperature", v, 0, 2, &c->temperature);
		} else if (OPT("--adapter-file")) {
			c->adapter_file = v;
		} else if (OPT("--popularity")) {
			*given |= GIVEN_POP;
			if (!rc)
				rc = bn_pop_parse(v, &c->pop);
		} else if (OPT("--prompt-len")) {
			*given |= GIVEN_PLEN;
			if (!rc)
				rc = bn_len_parse(v, "--prompt-len", &c->prompt_len);
		} else if (OPT("--output-len")) {
			*given |= GIVEN_OLEN;
			if (!rc)
				rc = bn_len_parse(v, "--output-len", &c->output_len);
		} else if (OPT("--vocab")) {
			if (!rc && !(rc = integer("--vocab", v, 4, 100000000, &l)))
				c->vocab = (int)l;
		} else if (OPT("--shared-prefix")) {
			if (!rc && !(rc = integer("--shared-prefix", v, 0, BN_LEN_MAX, &l)))
				c->shared_prefix = (int)l;
		} else if (OPT("--turns")) {
			if (!rc && !(rc = integer("--turns", v, 1, 10000, &l)))
				c->turns = (int)l;
		} else if (OPT("--trace")) {
			c->trace_path = v;
		} else if (OPT("--slo-mix")) {
			if (!rc)
				rc = bn_slo_mix_parse(c, v);
		} else if (OPT("--slo-target")) {
			if (n_targets == BN_MAX_SLO * 2)
				rc = loom_fail(LOOM_EINVAL, "--slo-target given more than %d times",
					       BN_MAX_SLO * 2);
			else
				targets[n_targets++] = v;
		} else if (OPT("--seed")) {
			if (!rc && !(rc = integer("--seed", v, 0, LONG_MAX, &l)))
				c->seed = (uint64_t)l;
		} else if (OPT("--requests")) {
			if (!rc && !(rc = integer("--requests", v, 0, 100000000, &l)))
				c->requests = l;
		} else if (OPT("--duration")) {
			if (!rc)
				rc = num("--duration", v, 0, 1e7, &c->duration_s);
		} else if (OPT("--grace")) {
			if (!rc)
				rc = num("--grace", v, 0, 1e6, &c->grace_s);
		} else if (OPT("--timeout")) {
			if (!rc)
				rc = num("--timeout", v, 0.001, 1e6, &c->timeout_s);
		} else if (OPT("--max-inflight")) {
			if (!rc && !(rc = integer("--max-inflight", v, 1, 100000, &l)))
				c->max_inflight = (int)l;
		} else if (OPT("--json")) {
			c->json_path = v;
		} else if (OPT("--sweep")) {
			if (!rc)
				rc = bn_sweep_parse(c, v);
		} else {
			return loom_fail(LOOM_EINVAL, "unknown option '%s' (see --help)", a);
		}
#undef OPT
		if (rc)
			return rc;
	}
	/* targets apply after the mix, whatever their order on the line */
	for (int k = 0; k < n_targets; k++)
		if ((rc = bn_slo_target_parse(c, targets[k])))
			return rc;
	return LOOM_OK;
}

int bn_config_adapter_count(const bn_config *c)
{
	if (c->trace)
		return c->trace->n_names;
	if (c->adapter_file)
		return c->n_names;
	return c->n_adapters;
}

loom_err bn_config_validate(const bn_config *c)
{
	bool open = c->rate > 0 || c->sweep == BN_SWEEP_RATE;
	bool closed = c->concurrency > 0 || c->sweep == BN_SWEEP_CONCURRENCY;
	if (strncmp(c->url, "http://", 7) && strncmp(c->url, "https://", 8))
		return loom_fail(LOOM_EINVAL, "--url '%s': expected http://HOST:PORT", c->url);
	if (!*c->model)
		return loom_fail(LOOM_EINVAL, "--model: empty name");
	if (open && closed)
		return loom_fail(LOOM_EINVAL, "--rate (open loop) and --concurrency (closed loop) "
				 "exclude each other");
	if (c->trace_path && closed)
		return loom_fail(LOOM_EINVAL, "--trace replays its own arrival times: drop "
				 "--concurrency");
	if (c->trace_path && open)
		return loom_fail(LOOM_EINVAL, "--trace replays its own arrival times: drop --rate");
	if (c->cv != 1.0 && !open)
		return loom_fail(LOOM_EINVAL, "--cv shapes open-loop arrivals: give --rate too");
	if (c->adapter_file && c->n_adapters > 0)
		return loom_fail(LOOM_EINVAL, "--adapters and --adapter-file exclude each other");
	if (c->trace_path && (c->adapter_file || c->n_adapters > 0))
		return loom_fail(LOOM_EINVAL, "--trace names its own adapters: drop --adapters / "
				 "--adapter-file");
	if (c->trace_path && c->turns > 1)
		return loom_fail(LOOM_EINVAL, "--turns: a trace's rows are independent requests; "
				 "drop --turns or --trace");
	if (!c->trace_path && c->requests == 0 && c->duration_s == 0)
		return loom_fail(LOOM_EINVAL, "give --requests N or --duration S (or both) to "
				 "bound the run");
	switch (c->sweep) {
	case BN_SWEEP_NONE:
	case BN_SWEEP_RATE:
	case BN_SWEEP_CONCURRENCY:
		break;
	case BN_SWEEP_CV:
		if (!open)
			return loom_fail(LOOM_EINVAL, "--sweep cv=...: needs --rate (open loop)");
		break;
	case BN_SWEEP_ADAPTERS:
		if (c->adapter_file || c->trace_path)
			return loom_fail(LOOM_EINVAL, "--sweep adapters=...: names come from "
					 "--adapter-prefix; drop --adapter-file / --trace");
		break;
	case BN_SWEEP_ALPHA:
		if (c->pop.kind != BN_POP_ZIPF && c->pop.kind != BN_POP_POWERLAW)
			return loom_fail(LOOM_EINVAL, "--sweep alpha=...: needs --popularity "
					 "zipf:A or powerlaw:A");
		if (c->pop.kind == BN_POP_POWERLAW)
			for (int i = 0; i < c->n_sweep; i++)
				if (c->sweep_values[i] <= 0)
					return loom_fail(LOOM_EINVAL, "--sweep alpha=...: powerlaw "
							 "needs alpha > 0");
		break;
	}
	return LOOM_OK;
}

loom_err bn_config_parse(bn_config *c, int argc, char **argv, bn_action *action, int *extract_at)
{
	unsigned given = 0;
	loom_err rc;
	*action = BN_ACT_RUN;
	*extract_at = 0;
	if ((rc = parse_args(c, argc, argv, action, extract_at, &given)) ||
	    *action != BN_ACT_RUN)
		return rc;
	if (c->trace_path && (given & (GIVEN_POP | GIVEN_PLEN | GIVEN_OLEN)))
		return loom_fail(LOOM_EINVAL, "--trace gives each request's adapter and lengths: "
				 "drop --popularity / --prompt-len / --output-len");
	if (c->rate == 0 && c->concurrency == 0 && !c->trace_path &&
	    c->sweep != BN_SWEEP_RATE && c->sweep != BN_SWEEP_CONCURRENCY)
		c->concurrency = 1; /* default: one request at a time */
	if ((rc = bn_config_validate(c)))
		return rc;
	if (c->adapter_file && (rc = bn_names_load(c->adapter_file, &c->names, &c->n_names)))
		return rc;
	if (c->trace_path && (rc = bn_trace_load(c->trace_path, &c->trace)))
		return rc;
	return LOOM_OK;
}

void bn_config_point(const bn_config *base, int i, bn_config *p)
{
	*p = *base;
	if (base->sweep == BN_SWEEP_NONE || i < 0 || i >= base->n_sweep)
		return;
	double v = base->sweep_values[i];
	p->sweep_value = v;
	p->point = i;
	switch (base->sweep) {
	case BN_SWEEP_RATE: p->rate = v; p->concurrency = 0; break;
	case BN_SWEEP_ADAPTERS: p->n_adapters = (int)v; break;
	case BN_SWEEP_CONCURRENCY: p->concurrency = (int)v; p->rate = 0; break;
	case BN_SWEEP_ALPHA: p->pop.alpha = v; break;
	case BN_SWEEP_CV: p->cv = v; break;
	case BN_SWEEP_NONE: break;
	}
}

/* ---- JSON ---- */

static json_t *str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

json_t *bn_config_json(const bn_config *c)
{
	char pop[64], plen[64], olen[64];
	json_t *j = json_object(), *slo = json_object(), *sw = NULL;
	bn_pop_format(&c->pop, pop, sizeof pop);
	bn_len_format(&c->prompt_len, plen, sizeof plen);
	bn_len_format(&c->output_len, olen, sizeof olen);
	if (!j || !slo)
		goto fail;
	for (int k = 0; k < c->n_slo; k++) {
		json_t *o = json_pack("{s:f, s:o, s:o}", "weight", c->slo[k].weight,
				      "ttft_ms", c->slo[k].ttft_ms > 0 ? json_real(c->slo[k].ttft_ms)
				      : json_null(),
				      "tpot_ms", c->slo[k].tpot_ms > 0 ? json_real(c->slo[k].tpot_ms)
				      : json_null());
		if (!o || json_object_set_new(slo, c->slo[k].name, o))
			goto fail;
	}
	if (json_object_set_new(j, "slo_classes", slo)) {
		slo = NULL;
		goto fail;
	}
	slo = NULL;
	if (c->sweep != BN_SWEEP_NONE) {
		sw = json_pack("{s:s, s:[]}", "key", bn_sweep_name(c->sweep), "values");
		if (!sw)
			goto fail;
		for (int i = 0; i < c->n_sweep; i++)
			if (json_array_append_new(json_object_get(sw, "values"),
						  json_real(c->sweep_values[i])))
				goto fail;
	}
	if (json_object_set_new(j, "sweep", sw ? sw : json_null())) {
		sw = NULL;
		goto fail;
	}
	sw = NULL;
	const char *mode = c->trace ? "trace" : c->rate > 0 ? "open" : "closed";
	const char *arrivals = c->trace ? "trace" : c->rate <= 0 ? "closed"
			       : c->cv == 1.0 ? "poisson" : "gamma";
	if (json_object_set_new(j, "url", json_string(c->url)) ||
	    json_object_set_new(j, "model", json_string(c->model)) ||
	    json_object_set_new(j, "label", str_or_null(c->label)) ||
	    json_object_set_new(j, "mode", json_string(mode)) ||
	    json_object_set_new(j, "arrivals", json_string(arrivals)) ||
	    json_object_set_new(j, "rate", json_real(c->rate)) ||
	    json_object_set_new(j, "cv", json_real(c->cv)) ||
	    json_object_set_new(j, "concurrency", json_integer(c->concurrency)) ||
	    json_object_set_new(j, "adapters", json_integer(bn_config_adapter_count(c))) ||
	    json_object_set_new(j, "adapter_prefix", c->adapter_file || c->trace ? json_null()
				: json_string(c->adapter_prefix)) ||
	    json_object_set_new(j, "adapter_file", str_or_null(c->adapter_file)) ||
	    json_object_set_new(j, "popularity", json_string(pop)) ||
	    json_object_set_new(j, "alpha", json_real(c->pop.alpha)) ||
	    json_object_set_new(j, "prompt_len", c->trace ? json_null() : json_string(plen)) ||
	    json_object_set_new(j, "output_len", c->trace ? json_null() : json_string(olen)) ||
	    json_object_set_new(j, "vocab", json_integer(c->vocab)) ||
	    json_object_set_new(j, "shared_prefix", json_integer(c->shared_prefix)) ||
	    json_object_set_new(j, "turns", json_integer(c->turns)) ||
	    json_object_set_new(j, "trace", str_or_null(c->trace_path)) ||
	    json_object_set_new(j, "send_slo_class", json_boolean(c->send_slo)) ||
	    json_object_set_new(j, "seed", json_integer((json_int_t)c->seed)) ||
	    json_object_set_new(j, "requests", json_integer(c->requests)) ||
	    json_object_set_new(j, "duration_s", json_real(c->duration_s)) ||
	    json_object_set_new(j, "grace_s", json_real(c->grace_s)) ||
	    json_object_set_new(j, "timeout_s", json_real(c->timeout_s)) ||
	    json_object_set_new(j, "max_inflight", json_integer(c->max_inflight)) ||
	    json_object_set_new(j, "include_usage", json_boolean(c->include_usage)) ||
	    json_object_set_new(j, "lora_style", json_string(c->lora_llamacpp ? "llamacpp"
									: "model")) ||
	    json_object_set_new(j, "temperature", c->temperature >= 0 ? json_real(c->temperature)
								      : json_null()))
		goto fail;
	return j;
fail:
	json_decref(j);
	json_decref(slo);
	json_decref(sw);
	return NULL;
}
