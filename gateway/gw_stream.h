/*
 * gateway/gw_stream.h — one request's output text: incremental
 * detokenization and stop strings.
 *
 * Owns: turning generated ids into released text. Ids go through the
 * tokenizer's incremental decoder (never half a UTF-8 character, special
 * tokens skipped so an EOS id adds no text); the decoded text then passes a
 * stop-string matcher that holds back any tail that might be the start of a
 * stop string. On a match the released text ends right before the stop
 * string and the stream ignores all later input.
 * Must not: know HTTP, JSON or workers. Not thread-safe: the owner (a gw_req,
 * under its lock) serializes calls.
 */
#ifndef GW_STREAM_H
#define GW_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/tokenizer.h"

#define GW_MAX_STOP 4          /* stop strings per request (OpenAI's limit) */
#define GW_MAX_STOP_LEN 256    /* bytes per stop string */

typedef struct gw_stream gw_stream;

/*
 * tok may be NULL for a text-only stream (gw_stream_push_text; used by
 * tests). stops: n_stops non-empty strings, copied. tok must outlive s.
 */
loom_err gw_stream_create(const loom_tok *tok, const char *const *stops, size_t n_stops,
			  gw_stream **out);
void gw_stream_destroy(gw_stream *s);

/* Decodes ids and feeds their text. Ids the tokenizer cannot decode
 * (out of its range) add no text. *stopped: a stop string matched (now or
 * earlier). */
loom_err gw_stream_push_ids(gw_stream *s, const int32_t *ids, size_t n, bool *stopped);
/* Feeds already-decoded UTF-8 text. */
loom_err gw_stream_push_text(gw_stream *s, const char *text, size_t len, bool *stopped);
/* End of generation without a stop string: flushes the decoder and releases
 * everything held back. Idempotent. */
loom_err gw_stream_finish(gw_stream *s);

/* Code points decoded from the ids pushed so far (before stop strings cut
 * the text): where the next id's text starts (logprobs' text_offset). */
size_t gw_stream_decoded_cp(const gw_stream *s);

/* True once a stop string matched. */
bool gw_stream_stopped(const gw_stream *s);
/* All text released so far (NUL-terminated, owned by s, valid until the next push/finish). */
const char *gw_stream_text(const gw_stream *s, size_t *len);
/* Text released since the previous take (owned by s, same validity). */
const char *gw_stream_take(gw_stream *s, size_t *len);

#endif
