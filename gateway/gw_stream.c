/*
 * gateway/gw_stream.c — incremental detokenization + stop-string hold-back.
 *
 * Data: `out` holds every released byte (the final text for a non-stream
 * response, and `taken` marks what SSE chunks already carried); `held` holds
 * decoded bytes not yet released. Invariant after every push: no stop string
 * occurs in out+held, and held is the longest suffix of out+held that is a
 * proper prefix of some stop string. So any later match starts inside held,
 * and searching held alone is enough. A held suffix always starts on a UTF-8
 * character boundary because stop strings never start with a continuation
 * byte.
 */
#include "gw_stream.h"

#include <string.h>

#include "common/alloc.h"

typedef struct buf {
	char *p;
	size_t len, cap;
} buf;

struct gw_stream {
	loom_tok_stream *dec; /* NULL for text-only streams */
	size_t n_stops;
	char *stops[GW_MAX_STOP];
	size_t stop_len[GW_MAX_STOP];
	buf out;
	size_t taken;
	buf held;
	size_t dec_cp;        /* code points the decoder produced */
	bool stopped;
	bool finished;
};

static loom_err buf_put(buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = loom_realloc(b->p, cap);
		if (!p)
			return loom_fail(LOOM_ENOMEM, "out of memory in output text");
		b->p = p;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return LOOM_OK;
}

loom_err gw_stream_create(const loom_tok *tok, const char *const *stops, size_t n_stops,
			  gw_stream **out)
{
	loom_err rc;
	*out = NULL;
	if (n_stops > GW_MAX_STOP)
		return loom_fail(LOOM_EINVAL, "at most %d stop strings", GW_MAX_STOP);
	gw_stream *s = loom_calloc(1, sizeof *s);
	if (!s)
		return loom_fail(LOOM_ENOMEM, "out of memory creating an output stream");
	for (size_t i = 0; i < n_stops; i++) {
		size_t n = strlen(stops[i]);
		if (n == 0 || n > GW_MAX_STOP_LEN) {
			rc = loom_fail(LOOM_EINVAL, "stop string %zu must be 1..%d bytes", i,
				       GW_MAX_STOP_LEN);
			goto fail;
		}
		s->stops[i] = loom_strdup(stops[i]);
		if (!s->stops[i]) {
			rc = loom_fail(LOOM_ENOMEM, "out of memory copying stop strings");
			goto fail;
		}
		s->stop_len[i] = n;
		s->n_stops = i + 1;
	}
	if ((rc = buf_put(&s->out, "", 0)) || (rc = buf_put(&s->held, "", 0)))
		goto fail;
	if (tok && (rc = loom_tok_stream_create(tok, true, false, &s->dec)))
		goto fail;
	*out = s;
	return LOOM_OK;
fail:
	gw_stream_destroy(s);
	return rc;
}

void gw_stream_destroy(gw_stream *s)
{
	if (!s)
		return;
	if (s->dec)
		loom_tok_stream_destroy(s->dec);
	for (size_t i = 0; i < s->n_stops; i++)
		loom_free(s->stops[i]);
	loom_free(s->out.p);
	loom_free(s->held.p);
	loom_free(s);
}

/* Moves the first n bytes of held to out. */
static loom_err release(gw_stream *s, size_t n)
{
	loom_err rc = buf_put(&s->out, s->held.p, n);
	if (rc)
		return rc;
	memmove(s->held.p, s->held.p + n, s->held.len - n);
	s->held.len -= n;
	s->held.p[s->held.len] = '\0';
	return LOOM_OK;
}

/* Length of the longest suffix of held that is a proper prefix of a stop string. */
static size_t holdback(const gw_stream *s)
{
	size_t best = 0;
	for (size_t i = 0; i < s->n_stops; i++) {
		size_t l = s->stop_len[i] - 1;
		if (l > s->held.len)
			l = s->held.len;
		for (; l > best; l--) {
			if (!memcmp(s->held.p + s->held.len - l, s->stops[i], l)) {
				best = l;
				break;
			}
		}
	}
	return best;
}

loom_err gw_stream_push_text(gw_stream *s, const char *text, size_t len, bool *stopped)
{
	loom_err rc;
	if (s->stopped || s->finished || len == 0)
		goto out;
	if ((rc = buf_put(&s->held, text, len)))
		return rc;
	if (s->n_stops == 0) {
		if ((rc = release(s, s->held.len)))
			return rc;
		goto out;
	}
	size_t first = SIZE_MAX;
	for (size_t i = 0; i < s->n_stops; i++) {
		const char *hit = memmem(s->held.p, s->held.len, s->stops[i], s->stop_len[i]);
		if (hit && (size_t)(hit - s->held.p) < first)
			first = (size_t)(hit - s->held.p);
	}
	if (first != SIZE_MAX) {
		if ((rc = release(s, first)))
			return rc;
		s->held.len = 0;
		s->held.p[0] = '\0';
		s->stopped = true;
		goto out;
	}
	if ((rc = release(s, s->held.len - holdback(s))))
		return rc;
out:
	if (stopped)
		*stopped = s->stopped;
	return LOOM_OK;
}

loom_err gw_stream_push_ids(gw_stream *s, const int32_t *ids, size_t n, bool *stopped)
{
	loom_err rc;
	for (size_t i = 0; i < n && !s->stopped && !s->finished; i++) {
		const char *t = NULL;
		size_t tl = 0;
		if (!s->dec)
			return loom_fail(LOOM_EINVAL, "stream has no tokenizer");
		rc = loom_tok_stream_push(s->dec, ids[i], &t, &tl);
		if (rc == LOOM_ERANGE || rc == LOOM_EINVAL)
			continue; /* an id the tokenizer does not know: no text */
		if (rc)
			return rc;
		for (size_t k = 0; k < tl; k++)
			s->dec_cp += ((unsigned char)t[k] & 0xc0) != 0x80;
		if ((rc = gw_stream_push_text(s, t, tl, NULL)))
			return rc;
	}
	if (stopped)
		*stopped = s->stopped;
	return LOOM_OK;
}

loom_err gw_stream_finish(gw_stream *s)
{
	loom_err rc;
	if (s->finished || s->stopped)
		return LOOM_OK;
	if (s->dec) {
		const char *t = NULL;
		size_t tl = 0;
		if ((rc = loom_tok_stream_finish(s->dec, &t, &tl)))
			return rc;
		if ((rc = gw_stream_push_text(s, t, tl, NULL)))
			return rc;
		if (s->stopped)
			return LOOM_OK;
	}
	if ((rc = release(s, s->held.len)))
		return rc;
	s->finished = true;
	return LOOM_OK;
}

size_t gw_stream_decoded_cp(const gw_stream *s)
{
	return s->dec_cp;
}

bool gw_stream_stopped(const gw_stream *s)
{
	return s->stopped;
}

const char *gw_stream_text(const gw_stream *s, size_t *len)
{
	*len = s->out.len;
	return s->out.p;
}

const char *gw_stream_take(gw_stream *s, size_t *len)
{
	const char *p = s->out.p + s->taken;
	*len = s->out.len - s->taken;
	s->taken = s->out.len;
	return p;
}
