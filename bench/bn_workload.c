/*
 * bench/bn_workload.c — request sequence and request bodies.
 *
 * Bodies are written by hand into a growing buffer rather than through
 * jansson: a prompt is an array of up to a million ids, and this runs on
 * the client's only thread between transfers. Names are JSON-escaped.
 */
#include "bench/bn_workload.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

enum { STREAM_ARRIVAL = 1, STREAM_ADAPTER, STREAM_PROMPT_LEN, STREAM_OUTPUT_LEN,
       STREAM_SLO, STREAM_IDS };

struct bn_workload {
	const bn_config *c;
	bn_rng arrival, adapter, plen, olen, slo, ids;
	bn_picker *picker;  /* NULL when requests go to the base model or a trace */
	int n_adapters;
	double t;           /* last arrival */
	size_t next_row;    /* trace */
	char name[512];     /* bn_workload_model's buffer */
};

loom_err bn_workload_create(const bn_config *c, bn_workload **out)
{
	loom_err rc;
	bn_workload *w = loom_calloc(1, sizeof *w);
	*out = NULL;
	if (!w)
		return loom_fail(LOOM_ENOMEM, "workload: no memory");
	w->c = c;
	bn_rng_seed(&w->arrival, c->seed, STREAM_ARRIVAL);
	bn_rng_seed(&w->adapter, c->seed, STREAM_ADAPTER);
	bn_rng_seed(&w->plen, c->seed, STREAM_PROMPT_LEN);
	bn_rng_seed(&w->olen, c->seed, STREAM_OUTPUT_LEN);
	bn_rng_seed(&w->slo, c->seed, STREAM_SLO);
	bn_rng_seed(&w->ids, c->seed, STREAM_IDS);
	w->n_adapters = c->trace ? 0 : bn_config_adapter_count(c);
	if (w->n_adapters > 0 && (rc = bn_picker_create(&c->pop, w->n_adapters, &w->picker))) {
		loom_free(w);
		return rc;
	}
	*out = w;
	return LOOM_OK;
}

void bn_workload_destroy(bn_workload *w)
{
	if (!w)
		return;
	bn_picker_destroy(w->picker);
	loom_free(w);
}

static int pick_slo(bn_workload *w)
{
	const bn_config *c = w->c;
	if (c->n_slo <= 1)
		return 0;
	double u = bn_rng_uniform(&w->slo), acc = 0;
	for (int k = 0; k < c->n_slo - 1; k++) {
		acc += c->slo[k].weight;
		if (u < acc)
			return k;
	}
	return c->n_slo - 1;
}

loom_err bn_workload_next(bn_workload *w, bn_reqspec *out)
{
	const bn_config *c = w->c;
	memset(out, 0, sizeof *out);
	if (c->trace) {
		if (w->next_row >= c->trace->n)
			return LOOM_ENOTFOUND;
		const bn_trace_row *r = &c->trace->rows[w->next_row++];
		out->t = r->t;
		out->adapter = r->adapter;
		out->prompt_tokens = r->prompt_tokens;
		out->output_tokens = r->output_tokens;
		out->slo = pick_slo(w);
		return LOOM_OK;
	}
	if (c->rate > 0) {
		w->t += bn_arrival_gap(&w->arrival, c->rate, c->cv);
		out->t = w->t;
	}
	out->adapter = w->picker ? bn_picker_next(w->picker, &w->adapter) : -1;
	out->prompt_tokens = bn_len_sample(&c->prompt_len, &w->plen);
	out->output_tokens = bn_len_sample(&c->output_len, &w->olen);
	out->slo = pick_slo(w);
	return LOOM_OK;
}

const char *bn_workload_model(bn_workload *w, int adapter)
{
	const bn_config *c = w->c;
	if (adapter < 0)
		return c->model;
	if (c->trace)
		return c->trace->names[adapter];
	if (c->adapter_file)
		return c->names[adapter];
	snprintf(w->name, sizeof w->name, "%s%d", c->adapter_prefix, adapter);
	return w->name;
}

/* ---- body ---- */

typedef struct buf {
	char *p;
	size_t len, cap;
	int oom;
} buf;

static void put(buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 1024;
		while (nc < b->len + n + 1)
			nc *= 2;
		char *np = loom_realloc(b->p, nc);
		if (!np) {
			b->oom = 1;
			return;
		}
		b->p = np;
		b->cap = nc;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void putf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(buf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > 0)
		put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void put_json_string(buf *b, const char *s)
{
	put(b, "\"", 1);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			char e[2] = { '\\', (char)ch };
			put(b, e, 2);
		} else if (ch < 0x20) {
			putf(b, "\\u%04x", ch);
		} else {
			put(b, (const char *)&ch, 1);
		}
	}
	put(b, "\"", 1);
}

loom_err bn_workload_body(bn_workload *w, const bn_reqspec *s, char **json)
{
	const bn_config *c = w->c;
	buf b = { 0 };
	*json = NULL;
	put(&b, "{\"model\":", 9);
	put_json_string(&b, c->lora_llamacpp ? c->model : bn_workload_model(w, s->adapter));
	if (c->lora_llamacpp && s->adapter >= 0)
		putf(&b, ",\"lora\":[{\"id\":%d,\"scale\":1.0}]", s->adapter);
	if (c->temperature >= 0)
		putf(&b, ",\"temperature\":%g", c->temperature);
	put(&b, ",\"prompt\":[", 11);
	for (int i = 0; i < s->prompt_tokens; i++)
		putf(&b, i ? ",%ld" : "%ld", bn_rng_range(&w->ids, 3, c->vocab - 1));
	putf(&b, "],\"max_tokens\":%d,\"ignore_eos\":true,\"stream\":true", s->output_tokens);
	if (c->include_usage)
		put(&b, ",\"stream_options\":{\"include_usage\":true}", 40);
	if (c->send_slo) {
		put(&b, ",\"slo_class\":", 13);
		put_json_string(&b, c->slo[s->slo].name);
	}
	put(&b, "}", 1);
	if (b.oom) {
		loom_free(b.p);
		return loom_fail(LOOM_ENOMEM, "workload: no memory for a %d-token prompt",
				 s->prompt_tokens);
	}
	*json = b.p;
	return LOOM_OK;
}
