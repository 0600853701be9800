/*
 * bench/bn_sse.c — SSE event splitting and completion chunk classification.
 *
 * The splitter keeps the current partial line and the data of the current
 * event; a blank line dispatches the event. Per the SSE spec "data:" may be
 * followed by one optional space, and several data lines join with '\n'.
 */
#include "bench/bn_sse.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

struct bn_sse {
	size_t max_line;
	char *line;   /* (line_cap) current partial line */
	size_t line_len, line_cap;
	char *data;   /* (data_cap) data of the current event, NUL-terminated */
	size_t data_len, data_cap;
	int has_data; /* the current event had a data field */
};

loom_err bn_sse_create(size_t max_line, bn_sse **out)
{
	bn_sse *s = loom_calloc(1, sizeof *s);
	*out = NULL;
	if (!s)
		return loom_fail(LOOM_ENOMEM, "sse: no memory");
	s->max_line = max_line;
	*out = s;
	return LOOM_OK;
}

void bn_sse_destroy(bn_sse *s)
{
	if (!s)
		return;
	loom_free(s->line);
	loom_free(s->data);
	loom_free(s);
}

static int reserve(char **buf, size_t *cap, size_t need)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap : 256;
	while (nc < need)
		nc *= 2;
	char *nb = loom_realloc(*buf, nc);
	if (!nb)
		return -1;
	*buf = nb;
	*cap = nc;
	return 0;
}

static loom_err dispatch(bn_sse *s, bn_sse_cb cb, void *ctx)
{
	int stop = 0;
	if (s->has_data)
		stop = cb(ctx, s->data ? s->data : "", s->data_len);
	s->has_data = 0;
	s->data_len = 0;
	if (s->data)
		s->data[0] = '\0';
	return stop ? LOOM_ECANCELED : LOOM_OK;
}

/* One complete line (without its terminator). */
static loom_err take_line(bn_sse *s, const char *l, size_t n, bn_sse_cb cb, void *ctx)
{
	if (n > 0 && l[n - 1] == '\r')
		n--;
	if (n == 0)
		return dispatch(s, cb, ctx);
	if (n < 5 || memcmp(l, "data:", 5))
		return LOOM_OK; /* comment, event:, id:, retry: */
	l += 5;
	n -= 5;
	if (n > 0 && *l == ' ') {
		l++;
		n--;
	}
	size_t need = s->data_len + (s->has_data ? 1 : 0) + n + 1;
	if (reserve(&s->data, &s->data_cap, need))
		return loom_fail(LOOM_ENOMEM, "sse: no memory for an event of %zu bytes", need);
	if (s->has_data)
		s->data[s->data_len++] = '\n';
	memcpy(s->data + s->data_len, l, n);
	s->data_len += n;
	s->data[s->data_len] = '\0';
	s->has_data = 1;
	return LOOM_OK;
}

loom_err bn_sse_feed(bn_sse *s, const char *p, size_t n, bn_sse_cb cb, void *ctx)
{
	loom_err rc;
	while (n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) : n;
		if (s->line_len + take > s->max_line)
			return loom_fail(LOOM_ERANGE, "sse: a line longer than %zu bytes", s->max_line);
		if (s->line_len == 0 && nl) {
			rc = take_line(s, p, take, cb, ctx); /* whole line in this piece */
		} else {
			if (reserve(&s->line, &s->line_cap, s->line_len + take + 1))
				return loom_fail(LOOM_ENOMEM, "sse: no memory for a line");
			memcpy(s->line + s->line_len, p, take);
			s->line_len += take;
			rc = LOOM_OK;
			if (nl) {
				rc = take_line(s, s->line, s->line_len, cb, ctx);
				s->line_len = 0;
			}
		}
		if (rc)
			return rc;
		if (!nl)
			break;
		p = nl + 1;
		n -= take + 1;
	}
	return LOOM_OK;
}

loom_err bn_sse_finish(bn_sse *s, bn_sse_cb cb, void *ctx)
{
	loom_err rc = LOOM_OK;
	if (s->line_len > 0) {
		rc = take_line(s, s->line, s->line_len, cb, ctx);
		s->line_len = 0;
	}
	if (!rc && s->has_data)
		rc = dispatch(s, cb, ctx);
	return rc;
}

void bn_ids_fini(bn_ids *ids)
{
	loom_free(ids->v);
	memset(ids, 0, sizeof *ids);
}

static void take_ids(bn_ids *ids, const json_t *arr)
{
	size_t i;
	json_t *v;
	ids->seen = true;
	if (ids->bad)
		return;
	size_t need = ids->n + json_array_size(arr);
	if (need > ids->cap) {
		size_t nc = ids->cap ? ids->cap : 64;
		while (nc < need)
			nc *= 2;
		int32_t *nv = loom_realloc(ids->v, nc * sizeof *nv);
		if (!nv) {
			ids->bad = true;
			return;
		}
		ids->v = nv;
		ids->cap = nc;
	}
	json_array_foreach(arr, i, v) {
		json_int_t x = json_integer_value(v);
		if (!json_is_integer(v) || x < 0 || x > INT32_MAX) {
			ids->bad = true;
			return;
		}
		ids->v[ids->n++] = (int32_t)x;
	}
}

void bn_chunk_parse(const char *data, size_t len, bn_chunk *out, bn_ids *ids)
{
	json_error_t e;
	json_t *j, *c, *text, *usage, *err, *tok;
	memset(out, 0, sizeof *out);
	out->completion_tokens = -1;
	out->cached_tokens = -1;
	while (len > 0 && (data[len - 1] == ' ' || data[len - 1] == '\n'))
		len--;
	if (len == 6 && !memcmp(data, "[DONE]", 6)) {
		out->kind = BN_CHUNK_DONE;
		return;
	}
	j = json_loadb(data, len, JSON_ALLOW_NUL, &e); /* text may hold U+0000 */
	if (!j || !json_is_object(j)) {
		out->kind = BN_CHUNK_BAD;
		snprintf(out->message, sizeof out->message, "SSE data is not a JSON object: %.100s",
			 j ? "other JSON value" : e.text);
		json_decref(j);
		return;
	}
	if ((err = json_object_get(j, "error"))) {
		json_t *m = json_object_get(err, "message");
		out->kind = BN_CHUNK_ERROR;
		snprintf(out->message, sizeof out->message, "%s",
			 json_is_string(m) ? json_string_value(m)
			 : json_is_string(err) ? json_string_value(err) : "error event");
		json_decref(j);
		return;
	}
	out->kind = BN_CHUNK_DATA;
	c = json_array_get(json_object_get(j, "choices"), 0);
	text = json_object_get(c, "text");
	if (!text)
		text = json_object_get(json_object_get(c, "delta"), "content");
	if (json_is_string(text))
		out->text_len = json_string_length(text);
	tok = json_object_get(c, "token_ids");
	if (ids && json_is_array(tok))
		take_ids(ids, tok);
	usage = json_object_get(j, "usage");
	if (json_is_object(usage)) {
		json_t *ct = json_object_get(usage, "completion_tokens");
		json_t *cached = json_object_get(json_object_get(usage, "prompt_tokens_details"),
						 "cached_tokens");
		if (json_is_integer(ct) && json_integer_value(ct) >= 0)
			out->completion_tokens = (long)json_integer_value(ct);
		if (json_is_integer(cached) && json_integer_value(cached) >= 0)
			out->cached_tokens = (long)json_integer_value(cached);
	}
	json_decref(j);
}
