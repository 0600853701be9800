/*
 * bench/bn_report_turns.c — the figures of a --turns run per turn index.
 *
 * A prefix cache shows itself as the gap between turn 1 (a cold history,
 * apart from the shared prefix) and later turns (whose prompt extends one
 * the server has just seen). The samples are bucketed by turn with a
 * counting sort (O(n + turns)), then each bucket is summarized.
 */
#include <math.h>
#include <string.h>

#include "bench/bn_report.h"
#include "bench/bn_report_int.h"
#include "common/alloc.h"

typedef struct turn_stat {
	long sent, completed;
	double prompt_mean;   /* prompt tokens of the requests sent */
	long cached;          /* sum of cached_tokens over successful requests reporting it */
	long cached_reported;
	bn_summary ttft, latency; /* ms, successful requests */
} turn_stat;

/* The turn index's slice of the samples, in send order. */
typedef struct buckets {
	int max_turn;
	size_t *start;   /* (max_turn + 2) bucket t is order[start[t] .. start[t+1]) */
	size_t *order;   /* (n) sample indices */
} buckets;

static void buckets_fini(buckets *b)
{
	loom_free(b->start);
	loom_free(b->order);
}

static loom_err buckets_make(const bn_result *r, buckets *b)
{
	memset(b, 0, sizeof *b);
	for (size_t i = 0; i < r->n; i++)
		if (r->samples[i].turn > b->max_turn)
			b->max_turn = r->samples[i].turn;
	b->start = loom_calloc((size_t)b->max_turn + 2, sizeof *b->start);
	b->order = loom_malloc((r->n ? r->n : 1) * sizeof *b->order);
	if (!b->start || !b->order) {
		buckets_fini(b);
		return loom_fail(LOOM_ENOMEM, "report: no memory for %d turns", b->max_turn);
	}
	for (size_t i = 0; i < r->n; i++)
		if (r->samples[i].turn >= 1)
			b->start[r->samples[i].turn + 1]++;
	for (int t = 1; t <= b->max_turn; t++)
		b->start[t + 1] += b->start[t];
	size_t *fill = loom_calloc((size_t)b->max_turn + 1, sizeof *fill);
	if (!fill) {
		buckets_fini(b);
		return loom_fail(LOOM_ENOMEM, "report: no memory for %d turns", b->max_turn);
	}
	for (size_t i = 0; i < r->n; i++) {
		int t = r->samples[i].turn;
		if (t >= 1)
			b->order[b->start[t] + fill[t]++] = i;
	}
	loom_free(fill);
	return LOOM_OK;
}

/* Summarizes bucket t; x is scratch for n doubles. */
static loom_err turn_stat_of(const bn_result *r, const buckets *b, int t, double *x,
			     turn_stat *st)
{
	const size_t *idx = b->order + b->start[t];
	size_t n = b->start[t + 1] - b->start[t];
	double prompt = 0;
	loom_err rc;
	memset(st, 0, sizeof *st);
	st->sent = (long)n;
	for (size_t k = 0; k < n; k++) {
		const bn_sample *s = &r->samples[idx[k]];
		prompt += s->prompt_tokens;
		if (s->err != BN_OK)
			continue;
		st->completed++;
		if (s->cached_tokens >= 0) {
			st->cached += s->cached_tokens;
			st->cached_reported++;
		}
	}
	st->prompt_mean = n ? prompt / (double)n : NAN;
	for (size_t k = 0; k < n; k++) {
		const bn_sample *s = &r->samples[idx[k]];
		x[k] = s->err == BN_OK ? s->ttft * 1000.0 : NAN;
	}
	if ((rc = bn_summarize(x, n, &st->ttft)))
		return rc;
	for (size_t k = 0; k < n; k++) {
		const bn_sample *s = &r->samples[idx[k]];
		x[k] = s->err == BN_OK ? s->latency * 1000.0 : NAN;
	}
	return bn_summarize(x, n, &st->latency);
}

static json_t *turn_json(int t, const turn_stat *st)
{
	json_t *j = json_object();
	if (!j || json_object_set_new(j, "turn", json_integer(t)) ||
	    json_object_set_new(j, "sent", json_integer(st->sent)) ||
	    json_object_set_new(j, "completed", json_integer(st->completed)) ||
	    json_object_set_new(j, "prompt_tokens_mean", bn_num_or_null(st->prompt_mean)) ||
	    json_object_set_new(j, "cached_tokens", st->cached_reported
				? json_integer(st->cached) : json_null()) ||
	    json_object_set_new(j, "ttft", bn_summary_json(&st->ttft)) ||
	    json_object_set_new(j, "latency", bn_summary_json(&st->latency))) {
		json_decref(j);
		return NULL;
	}
	return j;
}

loom_err bn_turns_json(const bn_result *r, json_t **out)
{
	buckets b;
	double *x = NULL;
	json_t *arr = NULL;
	loom_err rc;
	*out = NULL;
	if ((rc = buckets_make(r, &b)))
		return rc;
	x = loom_malloc((r->n ? r->n : 1) * sizeof *x);
	arr = json_array();
	if (!x || !arr) {
		rc = loom_fail(LOOM_ENOMEM, "report: no memory for the turns");
		goto out;
	}
	for (int t = 1; t <= b.max_turn; t++) {
		turn_stat st;
		if ((rc = turn_stat_of(r, &b, t, x, &st)))
			goto out;
		if (json_array_append_new(arr, turn_json(t, &st))) {
			rc = loom_fail(LOOM_ENOMEM, "report: no memory for the turns");
			goto out;
		}
	}
	*out = arr;
	arr = NULL;
out:
	json_decref(arr);
	loom_free(x);
	buckets_fini(&b);
	return rc;
}

void bn_turns_print(FILE *out, const bn_result *r)
{
	buckets b;
	double *x;
	if (buckets_make(r, &b))
		return;
	x = loom_malloc((r->n ? r->n : 1) * sizeof *x);
	fprintf(out, "  %-6s %6s %6s %9s %9s %10s %10s %10s\n", "turn", "sent", "done", "prompt",
		"cached", "TTFT p50", "TTFT p99", "lat p50");
	for (int t = 1; x && t <= b.max_turn; t++) {
		turn_stat st;
		char cached[32];
		if (turn_stat_of(r, &b, t, x, &st))
			break;
		if (st.cached_reported)
			snprintf(cached, sizeof cached, "%.1f",
				 (double)st.cached / (double)st.cached_reported);
		else
			snprintf(cached, sizeof cached, "-");
		fprintf(out, "  %-6d %6ld %6ld %9.1f %9s %10.1f %10.1f %10.1f\n", t, st.sent,
			st.completed, st.prompt_mean, cached, st.ttft.p50, st.ttft.p99,
			st.latency.p50);
	}
	fprintf(out, "  (per turn: prompt = mean prompt tokens sent, cached = mean cached "
		"tokens reported)\n");
	loom_free(x);
	buckets_fini(&b);
}
