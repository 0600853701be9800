/*
 * gateway/gw_slo.c — the SLO class table and per-class accounting.
 *
 * A handful of classes (at most GW_SLO_MAX_CLASSES) in a fixed array; the
 * counters sit beside them under one mutex, taken once per request end and
 * once per /metrics scrape. Goodput over a sliding window keeps one bucket
 * of good tokens per second for the last GOODPUT_S seconds.
 */
#include "gw_slo.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"

#define GOODPUT_S 10

/* Histogram bounds, seconds. */
static const double ttft_le[] = {0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double tpot_le[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5};
#define N_TTFT (sizeof ttft_le / sizeof ttft_le[0])
#define N_TPOT (sizeof tpot_le / sizeof tpot_le[0])

typedef struct acct {
	gw_slo_figures f;
	uint64_t ttft_n[N_TTFT + 1]; /* per bucket (not cumulative); last = +Inf */
	uint64_t tpot_n[N_TPOT + 1];
	uint64_t ttft_count, tpot_count;
	double ttft_sum, tpot_sum;   /* seconds */
	uint64_t good_win[GOODPUT_S]; /* good tokens per second, by second % GOODPUT_S */
	int64_t win_sec[GOODPUT_S];   /* the second each bucket holds */
} acct;

struct gw_slo {
	gw_slo_class cls[GW_SLO_MAX_CLASSES];
	size_t n;
	pthread_mutex_t mu;
	acct acct[GW_SLO_MAX_CLASSES]; /* under mu */
};

static int64_t now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec;
}

loom_err gw_slo_create(gw_slo **out)
{
	gw_slo *s = loom_calloc(1, sizeof *s);
	*out = NULL;
	if (!s)
		return loom_fail(LOOM_ENOMEM, "out of memory creating the SLO classes");
	pthread_mutex_init(&s->mu, NULL);
	s->cls[0] = (gw_slo_class){.name = "interactive", .ttft_ms = 1000, .tpot_ms = 200,
				   .priority = 1};
	s->cls[1] = (gw_slo_class){.name = "batch", .priority = 0};
	s->n = 2;
	*out = s;
	return LOOM_OK;
}

void gw_slo_destroy(gw_slo *s)
{
	if (!s)
		return;
	pthread_mutex_destroy(&s->mu);
	loom_free(s);
}

static bool name_ok(const char *n)
{
	size_t len = strlen(n);
	if (len == 0 || len >= GW_SLO_NAME_MAX)
		return false;
	for (const char *p = n; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
			return false;
	return true;
}

loom_err gw_slo_put(gw_slo *s, const gw_slo_class *c)
{
	if (!name_ok(c->name))
		return loom_fail(LOOM_EINVAL, "SLO class name '%s' must be 1..%d characters of "
				 "A-Z a-z 0-9 . _ -", c->name, GW_SLO_NAME_MAX - 1);
	if (c->priority < 0 || c->priority > 1000)
		return loom_fail(LOOM_EINVAL, "SLO class '%s': priority %d is outside 0..1000",
				 c->name, c->priority);
	int i = gw_slo_find(s, c->name);
	if (i < 0) {
		if (s->n == GW_SLO_MAX_CLASSES)
			return loom_fail(LOOM_EINVAL, "SLO class '%s': at most %d classes", c->name,
					 GW_SLO_MAX_CLASSES);
		i = (int)s->n++;
	}
	s->cls[i] = *c;
	return LOOM_OK;
}

/* A target in ms: an integer 0..3600000, or "none" (= 0). */
static bool parse_target(const char *t, size_t len, uint32_t *out)
{
	char buf[16];
	if (len == 0 || len >= sizeof buf)
		return false;
	memcpy(buf, t, len);
	buf[len] = '\0';
	if (!strcmp(buf, "none")) {
		*out = 0;
		return true;
	}
	char *end;
	long v = strtol(buf, &end, 10);
	if (*end || v < 0 || v > 3600000)
		return false;
	*out = (uint32_t)v;
	return true;
}

loom_err gw_slo_parse_arg(gw_slo *s, const char *spec, const char *what)
{
	gw_slo_class c = {0};
	const char *eq = strchr(spec, '=');
	const char *c1 = eq ? strchr(eq + 1, ':') : NULL;
	const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	if (!eq || !c1 || !c2 || (size_t)(eq - spec) >= sizeof c.name)
		return loom_fail(LOOM_EINVAL, "%s '%s': expected NAME=TTFT_MS:TPOT_MS:PRIORITY"
				 "[:refuse|:queue] (a target may be 'none')", what, spec);
	memcpy(c.name, spec, (size_t)(eq - spec));
	char *end;
	long prio = strtol(c2 + 1, &end, 10);
	bool no_prio = end == c2 + 1;
	if (*end == ':') {
		if (!strcmp(end + 1, "refuse"))
			c.refuse = true;
		else if (strcmp(end + 1, "queue"))
			return loom_fail(LOOM_EINVAL, "%s '%s': the policy after the priority must be "
					 "'refuse' or 'queue'", what, spec);
		end += strlen(end);
	}
	if (!parse_target(eq + 1, (size_t)(c1 - eq - 1), &c.ttft_ms) ||
	    !parse_target(c1 + 1, (size_t)(c2 - c1 - 1), &c.tpot_ms) || !c2[1] || *end ||
	    no_prio || prio < 0 || prio > 1000)
		return loom_fail(LOOM_EINVAL, "%s '%s': targets must be milliseconds 0..3600000 "
				 "or 'none', the priority an integer 0..1000", what, spec);
	c.priority = (int)prio;
	loom_err rc = gw_slo_put(s, &c);
	if (rc) {
		char why[256];
		snprintf(why, sizeof why, "%s", loom_errmsg()); /* the detail is rewritten below */
		return loom_fail(rc, "%s '%s': %s", what, spec, why);
	}
	return LOOM_OK;
}

/* One "ttft_ms" / "tpot_ms" value: a non-negative integer or null (= none). */
static loom_err json_target(json_t *o, const char *key, const char *where, const char *name,
			    uint32_t *out)
{
	json_t *v = json_object_get(o, key);
	*out = 0;
	if (!v || json_is_null(v))
		return LOOM_OK;
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 3600000)
		return loom_fail(LOOM_EINVAL, "%s: slo_classes.%s.%s must be milliseconds "
				 "0..3600000 or null", where, name, key);
	*out = (uint32_t)json_integer_value(v);
	return LOOM_OK;
}

loom_err gw_slo_load_json(gw_slo *s, const char *json, const char *where)
{
	json_error_t je;
	loom_err rc = LOOM_OK;
	json_t *root = json_loads(json, JSON_DECODE_ANY, &je);
	const char *name, *k;
	json_t *v, *x;
	if (!root)
		return loom_fail(LOOM_EINVAL, "%s: slo_classes: %s", where, je.text);
	if (!json_is_object(root)) {
		rc = loom_fail(LOOM_EINVAL, "%s: 'slo_classes' must be an object of "
			       "NAME: {ttft_ms, tpot_ms, priority}", where);
		goto out;
	}
	json_object_foreach(root, name, v) {
		gw_slo_class c = {0};
		if (!json_is_object(v)) {
			rc = loom_fail(LOOM_EINVAL, "%s: slo_classes.%s must be an object", where, name);
			goto out;
		}
		json_object_foreach(v, k, x) {
			if (strcmp(k, "ttft_ms") && strcmp(k, "tpot_ms") && strcmp(k, "priority") &&
			    strcmp(k, "on_miss")) {
				rc = loom_fail(LOOM_EINVAL, "%s: slo_classes.%s: unknown key '%s' "
					       "(expected ttft_ms, tpot_ms, priority, on_miss)", where,
					       name, k);
				goto out;
			}
		}
		x = json_object_get(v, "on_miss");
		if (x && (!json_is_string(x) || (strcmp(json_string_value(x), "refuse") &&
						 strcmp(json_string_value(x), "queue")))) {
			rc = loom_fail(LOOM_EINVAL, "%s: slo_classes.%s.on_miss must be \"queue\" or "
				       "\"refuse\"", where, name);
			goto out;
		}
		c.refuse = x && !strcmp(json_string_value(x), "refuse");
		if ((rc = json_target(v, "ttft_ms", where, name, &c.ttft_ms)) ||
		    (rc = json_target(v, "tpot_ms", where, name, &c.tpot_ms)))
			goto out;
		x = json_object_get(v, "priority");
		if (x && (!json_is_integer(x) || json_integer_value(x) < 0 ||
			  json_integer_value(x) > 1000)) {
			rc = loom_fail(LOOM_EINVAL, "%s: slo_classes.%s.priority must be an integer "
				       "0..1000", where, name);
			goto out;
		}
		c.priority = x ? (int)json_integer_value(x) : 0;
		snprintf(c.name, sizeof c.name, "%s", name);
		if (strlen(name) >= sizeof c.name || (rc = gw_slo_put(s, &c))) {
			char why[256];
			snprintf(why, sizeof why, "%s", rc ? loom_errmsg() : "name too long");
			rc = loom_fail(LOOM_EINVAL, "%s: slo_classes.%s: %s", where, name, why);
			goto out;
		}
	}
out:
	json_decref(root);
	return rc;
}

size_t gw_slo_count(const gw_slo *s)
{
	return s->n;
}

const gw_slo_class *gw_slo_at(const gw_slo *s, size_t i)
{
	return i < s->n ? &s->cls[i] : NULL;
}

int gw_slo_find(const gw_slo *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (!strcmp(s->cls[i].name, name))
			return (int)i;
	return -1;
}

int gw_slo_default(const gw_slo *s)
{
	int i = gw_slo_find(s, "interactive");
	return i >= 0 ? i : 0;
}

uint32_t gw_slo_min_ttft(const gw_slo *s)
{
	uint32_t m = 0;
	for (size_t i = 0; i < s->n; i++)
		if (s->cls[i].ttft_ms && (!m || s->cls[i].ttft_ms < m))
			m = s->cls[i].ttft_ms;
	return m;
}

void gw_slo_names(const gw_slo *s, char *buf, size_t n)
{
	size_t o = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < s->n && o < n; i++)
		o += (size_t)snprintf(buf + o, n - o, "%s%s", i ? ", " : "", s->cls[i].name);
}

/* ---- accounting ---- */

static void bucket(uint64_t *counts, const double *le, size_t n, double v)
{
	size_t i = 0;
	while (i < n && v > le[i])
		i++;
	counts[i]++;
}

void gw_slo_record(gw_slo *s, int cls, const gw_slo_outcome *o)
{
	if (cls < 0 || (size_t)cls >= s->n)
		return;
	const gw_slo_class *c = &s->cls[cls];
	bool ok = o->status == 200;
	bool ttft_ok = ok && o->has_ttft && (!c->ttft_ms || o->ttft_ms <= c->ttft_ms);
	bool tpot_ok = ok && (!c->tpot_ms || !o->has_tpot || o->tpot_ms <= c->tpot_ms);
	int64_t sec = now_s();
	pthread_mutex_lock(&s->mu);
	acct *a = &s->acct[cls];
	a->f.requests++;
	a->f.ttft_met += ttft_ok;
	a->f.tpot_met += tpot_ok;
	if (o->status == 503)
		a->f.refused_503++;
	else if (o->status == 429)
		a->f.refused_429++;
	else if (!ok)
		a->f.failed++;
	if (ok)
		a->f.tokens += o->tokens;
	if (ttft_ok && tpot_ok) {
		a->f.met++;
		a->f.good_tokens += o->tokens;
		int b = (int)(sec % GOODPUT_S);
		if (a->win_sec[b] != sec) {
			a->win_sec[b] = sec;
			a->good_win[b] = 0;
		}
		a->good_win[b] += o->tokens;
	}
	if (ok && o->has_ttft) {
		bucket(a->ttft_n, ttft_le, N_TTFT, o->ttft_ms / 1000.0);
		a->ttft_count++;
		a->ttft_sum += o->ttft_ms / 1000.0;
	}
	if (ok && o->has_tpot) {
		bucket(a->tpot_n, tpot_le, N_TPOT, o->tpot_ms / 1000.0);
		a->tpot_count++;
		a->tpot_sum += o->tpot_ms / 1000.0;
	}
	pthread_mutex_unlock(&s->mu);
}

void gw_slo_figures_get(gw_slo *s, int cls, gw_slo_figures *out)
{
	memset(out, 0, sizeof *out);
	if (cls < 0 || (size_t)cls >= s->n)
		return;
	pthread_mutex_lock(&s->mu);
	*out = s->acct[cls].f;
	pthread_mutex_unlock(&s->mu);
}

/* ---- /metrics ---- */

typedef struct text {
	char *p;
	size_t len, cap;
	bool oom;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...)
{
	if (t->oom)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(t->p ? t->p + t->len : NULL, t->p ? t->cap - t->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->oom = true;
			return;
		}
		if (t->p && t->len + (size_t)n < t->cap) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap : 4096;
		while (cap <= t->len + (size_t)n)
			cap *= 2;
		char *p = loom_realloc(t->p, cap);
		if (!p) {
			t->oom = true;
			return;
		}
		t->p = p;
		t->cap = cap;
	}
}

static void family(text *t, const char *name, const char *type, const char *help)
{
	put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void histogram(text *t, const char *name, const char *cls, const uint64_t *n,
		      const double *le, size_t nb, uint64_t count, double sum)
{
	uint64_t cum = 0;
	for (size_t i = 0; i < nb; i++) {
		cum += n[i];
		put(t, "%s_bucket{class=\"%s\",le=\"%g\"} %llu\n", name, cls, le[i],
		    (unsigned long long)cum);
	}
	put(t, "%s_bucket{class=\"%s\",le=\"+Inf\"} %llu\n", name, cls, (unsigned long long)count);
	put(t, "%s_sum{class=\"%s\"} %.6f\n", name, cls, sum);
	put(t, "%s_count{class=\"%s\"} %llu\n", name, cls, (unsigned long long)count);
}

/* Counters of every class for one field of gw_slo_figures. */
static void counters(text *t, const acct *a, const gw_slo_class *c, size_t n, const char *name,
		     const char *help, size_t off)
{
	family(t, name, "counter", help);
	for (size_t i = 0; i < n; i++)
		put(t, "%s{class=\"%s\"} %llu\n", name, c[i].name,
		    (unsigned long long)*(const uint64_t *)((const char *)&a[i].f + off));
}

char *gw_slo_metrics_text(gw_slo *s)
{
	text t = {0};
	int64_t sec = now_s();
	pthread_mutex_lock(&s->mu);
	const acct *a = s->acct;
	const gw_slo_class *c = s->cls;
	family(&t, "loom_slo_target_seconds", "gauge",
	       "SLO class targets (kind ttft or tpot); absent = no target.");
	for (size_t i = 0; i < s->n; i++) {
		if (c[i].ttft_ms)
			put(&t, "loom_slo_target_seconds{class=\"%s\",kind=\"ttft\"} %g\n", c[i].name,
			    c[i].ttft_ms / 1000.0);
		if (c[i].tpot_ms)
			put(&t, "loom_slo_target_seconds{class=\"%s\",kind=\"tpot\"} %g\n", c[i].name,
			    c[i].tpot_ms / 1000.0);
	}
	counters(&t, a, c, s->n, "loom_slo_requests_total",
		 "Requests of the class that ended (served, failed or refused).",
		 offsetof(gw_slo_figures, requests));
	counters(&t, a, c, s->n, "loom_slo_ttft_met_total",
		 "Requests that succeeded within the class's TTFT target.",
		 offsetof(gw_slo_figures, ttft_met));
	counters(&t, a, c, s->n, "loom_slo_tpot_met_total",
		 "Requests that succeeded within the class's TPOT target.",
		 offsetof(gw_slo_figures, tpot_met));
	counters(&t, a, c, s->n, "loom_slo_met_total",
		 "Requests that succeeded within both targets.", offsetof(gw_slo_figures, met));
	family(&t, "loom_slo_refused_total", "counter",
	       "Requests refused at admission: 503 (no worker can meet the TTFT deadline of a "
	       "refusing class, none serves the model, or the wait in the admission queue timed "
	       "out), 429 (the admission queue is full).");
	for (size_t i = 0; i < s->n; i++) {
		put(&t, "loom_slo_refused_total{class=\"%s\",status=\"503\"} %llu\n", c[i].name,
		    (unsigned long long)a[i].f.refused_503);
		put(&t, "loom_slo_refused_total{class=\"%s\",status=\"429\"} %llu\n", c[i].name,
		    (unsigned long long)a[i].f.refused_429);
	}
	counters(&t, a, c, s->n, "loom_slo_failed_total",
		 "Requests that ended with an error other than a refusal.",
		 offsetof(gw_slo_figures, failed));
	family(&t, "loom_slo_attainment", "gauge",
	       "Fraction of the class's requests that met both targets (kind all), or the TTFT / "
	       "TPOT target alone.");
	for (size_t i = 0; i < s->n; i++) {
		double n = (double)a[i].f.requests;
		if (!a[i].f.requests)
			continue;
		put(&t, "loom_slo_attainment{class=\"%s\",kind=\"all\"} %.6f\n", c[i].name,
		    (double)a[i].f.met / n);
		put(&t, "loom_slo_attainment{class=\"%s\",kind=\"ttft\"} %.6f\n", c[i].name,
		    (double)a[i].f.ttft_met / n);
		put(&t, "loom_slo_attainment{class=\"%s\",kind=\"tpot\"} %.6f\n", c[i].name,
		    (double)a[i].f.tpot_met / n);
	}
	counters(&t, a, c, s->n, "loom_slo_good_tokens_total",
		 "Completion tokens of requests that met both targets.",
		 offsetof(gw_slo_figures, good_tokens));
	counters(&t, a, c, s->n, "loom_slo_tokens_total", "Completion tokens of served requests.",
		 offsetof(gw_slo_figures, tokens));
	family(&t, "loom_slo_goodput_tokens_per_second", "gauge",
	       "Completion tokens per second of requests that met both targets, over the last "
	       "10 s.");
	for (size_t i = 0; i < s->n; i++) {
		uint64_t sum = 0;
		for (int b = 0; b < GOODPUT_S; b++)
			if (sec - a[i].win_sec[b] < GOODPUT_S)
				sum += a[i].good_win[b];
		put(&t, "loom_slo_goodput_tokens_per_second{class=\"%s\"} %.3f\n", c[i].name,
		    (double)sum / GOODPUT_S);
	}
	family(&t, "loom_slo_ttft_seconds", "histogram", "Time to first token of served requests.");
	for (size_t i = 0; i < s->n; i++)
		histogram(&t, "loom_slo_ttft_seconds", c[i].name, a[i].ttft_n, ttft_le, N_TTFT,
			  a[i].ttft_count, a[i].ttft_sum);
	family(&t, "loom_slo_tpot_seconds", "histogram",
	       "Time per output token after the first, of served requests with 2+ tokens.");
	for (size_t i = 0; i < s->n; i++)
		histogram(&t, "loom_slo_tpot_seconds", c[i].name, a[i].tpot_n, tpot_le, N_TPOT,
			  a[i].tpot_count, a[i].tpot_sum);
	pthread_mutex_unlock(&s->mu);
	if (t.oom || !t.p) {
		loom_free(t.p);
		return NULL;
	}
	return t.p;
}
