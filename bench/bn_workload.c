/*
 * bench/bn_workload.c — request sequence, conversations and request bodies.
 *
 * Bodies are written by hand into a growing buffer rather than through
 * jansson: a prompt is an array of up to a million ids, and this runs on
 * the client's only thread between transfers. Names are JSON-escaped.
 *
 * Conversations live in slots (a growable array; a slot and its history
 * buffer are reused once its conversation ends), found by a linear scan:
 * there are at most as many open as there are requests in flight plus
 * follow-ups waiting, and one is started per turn-1 request, never per token.
 */
#include "bench/bn_workload.h"

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

enum { STREAM_ARRIVAL = 1, STREAM_ADAPTER, STREAM_PROMPT_LEN, STREAM_OUTPUT_LEN,
       STREAM_SLO, STREAM_IDS, STREAM_PREFIX, STREAM_CONV };

/* A history never grows past this many ids (a server refuses far less). */
#define HISTORY_MAX (INT_MAX / 2)

typedef struct conv {
	int32_t *ids;      /* (n, cap) prefix, message 1, output 1, message 2, ... */
	size_t n, cap;
	bn_rng rng;        /* its own: message lengths and ids, output lengths */
	long num;          /* start order */
	int turn;          /* turns handed out so far */
	int adapter, slo;
	bool live;
} conv;

struct bn_workload {
	const bn_config *c;
	bn_rng arrival, adapter, plen, olen, slo, ids;
	bn_picker *picker;  /* NULL when requests go to the base model or a trace */
	int n_adapters;
	double t;           /* last arrival */
	size_t next_row;    /* trace */
	int32_t *prefix;    /* (c->shared_prefix) the run's shared prefix */
	conv *convs;        /* (n_slots) */
	int n_slots, n_open;
	long n_started;
	char name[512];     /* bn_workload_model's buffer */
};

/* Stream numbers salted with the sweep point (0 outside a sweep: the
 * streams of earlier loom-bench versions). */
static uint64_t salted(const bn_config *c, uint64_t stream)
{
	return stream ^ ((uint64_t)(unsigned)c->point << 40);
}

static int32_t draw_id(const bn_config *c, bn_rng *r)
{
	return (int32_t)bn_rng_range(r, 3, c->vocab - 1);
}

loom_err bn_workload_create(const bn_config *c, bn_workload **out)
{
	loom_err rc;
	bn_rng pr;
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
	bn_rng_seed(&w->ids, c->seed, salted(c, STREAM_IDS));
	bn_rng_seed(&pr, c->seed, salted(c, STREAM_PREFIX));
	w->n_adapters = c->trace ? 0 : bn_config_adapter_count(c);
	if (c->shared_prefix > 0) {
		w->prefix = loom_malloc((size_t)c->shared_prefix * sizeof *w->prefix);
		if (!w->prefix) {
			rc = loom_fail(LOOM_ENOMEM, "workload: no memory for a %d-token prefix",
				       c->shared_prefix);
			goto fail;
		}
		for (int i = 0; i < c->shared_prefix; i++)
			w->prefix[i] = draw_id(c, &pr);
	}
	if (w->n_adapters > 0 && (rc = bn_picker_create(&c->pop, w->n_adapters, &w->picker)))
		goto fail;
	*out = w;
	return LOOM_OK;
fail:
	bn_workload_destroy(w);
	return rc;
}

void bn_workload_destroy(bn_workload *w)
{
	if (!w)
		return;
	for (int i = 0; i < w->n_slots; i++)
		loom_free(w->convs[i].ids);
	loom_free(w->convs);
	loom_free(w->prefix);
	bn_picker_destroy(w->picker);
	loom_free(w);
}

long bn_workload_convs_started(const bn_workload *w)
{
	return w->n_started;
}

int bn_workload_convs_open(const bn_workload *w)
{
	return w->n_open;
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

/* ---- conversations ---- */

/* Appends n ids (from ids, or drawn from cv's stream when ids is NULL). */
static loom_err conv_append(const bn_config *c, conv *cv, const int32_t *ids, size_t n)
{
	if (cv->n + n > HISTORY_MAX)
		return loom_fail(LOOM_ERANGE, "--turns: conversation %ld passed %d tokens",
				 cv->num, HISTORY_MAX);
	if (cv->n + n > cv->cap) {
		size_t nc = cv->cap ? cv->cap : 256;
		while (nc < cv->n + n)
			nc *= 2;
		int32_t *ni = loom_realloc(cv->ids, nc * sizeof *ni);
		if (!ni)
			return loom_fail(LOOM_ENOMEM, "--turns: no memory for a %zu-token history",
					 cv->n + n);
		cv->ids = ni;
		cv->cap = nc;
	}
	for (size_t i = 0; i < n; i++)
		cv->ids[cv->n + i] = ids ? ids[i] : draw_id(c, &cv->rng);
	cv->n += n;
	return LOOM_OK;
}

/* Appends the next user message and fills *out with the turn it makes. */
static loom_err conv_turn(bn_workload *w, int slot, bn_reqspec *out)
{
	const bn_config *c = w->c;
	conv *cv = &w->convs[slot];
	int msg = bn_len_sample(&c->prompt_len, &cv->rng);
	loom_err rc = conv_append(c, cv, NULL, (size_t)msg);
	if (rc)
		return rc;
	cv->turn++;
	out->adapter = cv->adapter;
	out->slo = cv->slo;
	out->prompt_tokens = (int)cv->n;
	out->output_tokens = bn_len_sample(&c->output_len, &cv->rng);
	out->conv = cv->num;
	out->turn = cv->turn;
	out->slot = slot;
	return LOOM_OK;
}

static void conv_end(bn_workload *w, int slot)
{
	conv *cv = &w->convs[slot];
	if (!cv->live)
		return;
	cv->live = false;
	cv->n = 0; /* the buffer stays for the slot's next conversation */
	w->n_open--;
}

/* Starts a conversation with out's adapter and class; fills its turn 1. */
static loom_err conv_start(bn_workload *w, bn_reqspec *out)
{
	const bn_config *c = w->c;
	int slot = 0;
	loom_err rc;
	while (slot < w->n_slots && w->convs[slot].live)
		slot++;
	if (slot == w->n_slots) {
		int nn = w->n_slots ? w->n_slots * 2 : 16;
		conv *nc = loom_realloc(w->convs, (size_t)nn * sizeof *nc);
		if (!nc)
			return loom_fail(LOOM_ENOMEM, "--turns: no memory for %d conversations", nn);
		memset(nc + w->n_slots, 0, (size_t)(nn - w->n_slots) * sizeof *nc);
		w->convs = nc;
		w->n_slots = nn;
	}
	conv *cv = &w->convs[slot];
	cv->n = 0;
	cv->turn = 0;
	cv->num = w->n_started++;
	cv->adapter = out->adapter;
	cv->slo = out->slo;
	cv->live = true;
	w->n_open++;
	bn_rng_seed(&cv->rng, c->seed,
		    salted(c, STREAM_CONV | (uint64_t)(unsigned long)cv->num << 8));
	if ((rc = conv_append(c, cv, w->prefix, (size_t)c->shared_prefix)) ||
	    (rc = conv_turn(w, slot, out)))
		conv_end(w, slot);
	return rc;
}

static conv *conv_of(bn_workload *w, const bn_reqspec *s)
{
	if (s->slot < 0 || s->slot >= w->n_slots || !w->convs[s->slot].live ||
	    w->convs[s->slot].num != s->conv || w->convs[s->slot].turn != s->turn)
		return NULL;
	return &w->convs[s->slot];
}

loom_err bn_workload_follow(bn_workload *w, const bn_reqspec *s, const int32_t *ids,
			    int n_out, bn_reqspec *next)
{
	conv *cv = conv_of(w, s);
	loom_err rc;
	memset(next, 0, sizeof *next);
	if (!cv)
		return loom_fail(LOOM_EINVAL, "--turns: turn %d of conversation %ld is not the "
				 "open turn of a conversation", s->turn, s->conv);
	if (s->turn >= w->c->turns) {
		conv_end(w, s->slot);
		return LOOM_ENOTFOUND;
	}
	if ((rc = conv_append(w->c, cv, ids, n_out > 0 ? (size_t)n_out : 0)) ||
	    (rc = conv_turn(w, s->slot, next)))
		conv_end(w, s->slot);
	return rc;
}

void bn_workload_end(bn_workload *w, const bn_reqspec *s)
{
	if (conv_of(w, s))
		conv_end(w, s->slot);
}

/* ---- the sequence ---- */

loom_err bn_workload_next(bn_workload *w, bn_reqspec *out)
{
	const bn_config *c = w->c;
	memset(out, 0, sizeof *out);
	out->conv = -1;
	out->turn = 1;
	out->slot = -1;
	if (c->trace) {
		if (w->next_row >= c->trace->n)
			return LOOM_ENOTFOUND;
		const bn_trace_row *r = &c->trace->rows[w->next_row++];
		out->t = r->t;
		out->adapter = r->adapter;
		out->prompt_tokens = c->shared_prefix + r->prompt_tokens;
		out->output_tokens = r->output_tokens;
		out->slo = pick_slo(w);
		return LOOM_OK;
	}
	if (c->rate > 0) {
		w->t += bn_arrival_gap(&w->arrival, c->rate, c->cv);
		out->t = w->t;
	}
	out->adapter = w->picker ? bn_picker_next(w->picker, &w->adapter) : -1;
	if (c->turns > 1) {
		out->slo = pick_slo(w);
		return conv_start(w, out);
	}
	out->prompt_tokens = c->shared_prefix + bn_len_sample(&c->prompt_len, &w->plen);
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
	if (s->slot >= 0) {
		const conv *cv = conv_of(w, s);
		if (!cv || cv->n != (size_t)s->prompt_tokens) {
			loom_free(b.p);
			return loom_fail(LOOM_EINVAL, "workload: turn %d of conversation %ld is not "
					 "open", s->turn, s->conv);
		}
		for (size_t i = 0; i < cv->n; i++)
			putf(&b, i ? ",%d" : "%d", (int)cv->ids[i]);
	} else {
		int np = s->prompt_tokens < c->shared_prefix ? s->prompt_tokens : c->shared_prefix;
		for (int i = 0; i < s->prompt_tokens; i++)
			putf(&b, i ? ",%d" : "%d", i < np ? (int)w->prefix[i]
							   : (int)draw_id(c, &w->ids));
	}
	putf(&b, "],\"max_tokens\":%d,\"ignore_eos\":true,\"stream\":true", s->output_tokens);
	/* a conversation appends the generated ids themselves, not their text:
	 * text re-tokenized at the boundary could differ from what was generated,
	 * and the next prompt would then not extend this one token for token */
	if (s->slot >= 0)
		put(&b, ",\"return_token_ids\":true", 24);
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
