/*
 * bench/bn_sse.h — reading an OpenAI-style completion stream.
 *
 * Owns: an incremental Server-Sent Events splitter (bytes in any pieces ->
 * one callback per event with its data lines joined by '\n'; comments and
 * other fields ignored; LF or CRLF), and the classification of one event's
 * data as a completion chunk: text, usage, error event or [DONE].
 * Must not: know about timing or HTTP. Called by bn_run.c and tests.
 */
#ifndef BN_SSE_H
#define BN_SSE_H

#include <stddef.h>

#include "common/err.h"

typedef struct bn_sse bn_sse;

/* Called once per complete event; data is NUL-terminated and valid only
 * during the call. Return nonzero to stop feeding (bn_sse_feed then
 * returns LOOM_ECANCELED). */
typedef int (*bn_sse_cb)(void *ctx, const char *data, size_t len);

/* *out owned by the caller (bn_sse_destroy). Lines are capped at max_line
 * bytes (an over-long line fails the feed with LOOM_ERANGE). */
loom_err bn_sse_create(size_t max_line, bn_sse **out);
void bn_sse_destroy(bn_sse *s);
/* Feeds n bytes; calls cb for each event completed by them. */
loom_err bn_sse_feed(bn_sse *s, const char *p, size_t n, bn_sse_cb cb, void *ctx);
/* At the end of the stream: delivers a last event not closed by a blank line. */
loom_err bn_sse_finish(bn_sse *s, bn_sse_cb cb, void *ctx);

typedef enum bn_chunk_kind {
	BN_CHUNK_DONE,   /* data: [DONE] */
	BN_CHUNK_DATA,   /* a completion chunk (text_len may be 0; usage may be set) */
	BN_CHUNK_ERROR,  /* {"error": {...}} */
	BN_CHUNK_BAD,    /* not JSON, or not an object */
} bn_chunk_kind;

typedef struct bn_chunk {
	bn_chunk_kind kind;
	size_t text_len;        /* bytes of choices[0].text (or .delta.content) */
	long completion_tokens; /* usage.completion_tokens, -1 when absent */
	char message[160];      /* ERROR/BAD: what went wrong */
} bn_chunk;

/* Classifies one event's data. Never fails; BAD carries the reason. */
void bn_chunk_parse(const char *data, size_t len, bn_chunk *out);

#endif
