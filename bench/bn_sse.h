/*
 * bench/bn_sse.h — reading an OpenAI-style completion stream.
 *
 * Owns: an incremental Server-Sent Events splitter (bytes in any pieces ->
 * one callback per event with its data lines joined by '\n'; comments and
 * other fields ignored; LF or CRLF), and the classification of one event's
 * data as a completion chunk: text, usage (completion and cached prompt
 * tokens), the chunk's token ids, error event or [DONE].
 * Must not: know about timing or HTTP. Called by bn_run.c and tests.
 */
#ifndef BN_SSE_H
#define BN_SSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
	long cached_tokens;     /* usage.prompt_tokens_details.cached_tokens, -1 when absent */
	char message[160];      /* ERROR/BAD: what went wrong */
} bn_chunk;

/*
 * The generated token ids of one stream, in order: choices[0].token_ids of
 * every chunk (vLLM's and loom's "return_token_ids"). Owned by the caller,
 * zero-initialized; v is loom_malloc'ed (bn_ids_fini frees it).
 */
typedef struct bn_ids {
	int32_t *v;  /* (n) */
	size_t n, cap;
	bool seen;   /* some chunk carried a token_ids array */
	bool bad;    /* an id that is not an int32 >= 0, or no memory: unusable */
} bn_ids;

void bn_ids_fini(bn_ids *ids);

/* Classifies one event's data. Never fails; BAD carries the reason. When
 * ids is not NULL, a DATA chunk's choices[0].token_ids are appended to it. */
void bn_chunk_parse(const char *data, size_t len, bn_chunk *out, bn_ids *ids);

#endif
