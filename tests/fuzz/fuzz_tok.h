/*
 * tests/fuzz/fuzz_tok.h — checks shared by the tokenizer targets
 * (fuzz_tokenizer_json, fuzz_tokenizer_input). Header-only.
 *
 * What any loaded tokenizer must do with any ids and any text:
 *   - encode gives ids inside the vocabulary (or an error for bad UTF-8);
 *   - decode of in-range ids succeeds and gives valid UTF-8;
 *   - the stream decoder, fed one id at a time (at_start, so it strips like
 *     decode), gives whole UTF-8 chunks whose concatenation plus finish()
 *     equals decode, with and without skip_special;
 *   - an out-of-range id is LOOM_ERANGE for both.
 */
#ifndef LOOM_FUZZ_TOK_H
#define LOOM_FUZZ_TOK_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/tokenizer.h"
#include "tests/fuzz/fuzz.h"

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static inline bool fuzz_utf8_ok(const char *p, size_t n)
{
	const unsigned char *s = (const unsigned char *)p;
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t k;
		unsigned char lo = 0x80, hi = 0xbf;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			k = 2;
		else if (c >= 0xe0 && c <= 0xef)
			k = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
		else if (c >= 0xf0 && c <= 0xf4)
			k = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
		else
			return false;
		if (i + k > n)
			return false;
		for (size_t j = 1; j < k; j++) {
			if (s[i + j] < lo || s[i + j] > hi)
				return false;
			lo = 0x80;
			hi = 0xbf;
		}
		i += k;
	}
	return true;
}

/* Streams ids and compares with want (what decode gave). */
static inline void fuzz_tok_stream_check(const loom_tok *t, const int32_t *ids, size_t n, bool skip,
					 const char *want, size_t want_len)
{
	loom_tok_stream *s;
	size_t got = 0;
	loom_err rc = loom_tok_stream_create(t, skip, true, &s);
	if (rc == LOOM_ENOMEM)
		return;
	FUZZ_CHECK(rc == LOOM_OK, "stream_create: %s", loom_errmsg());
	for (size_t i = 0; i <= n; i++) {
		const char *out;
		size_t k;
		rc = i < n ? loom_tok_stream_push(s, ids[i], &out, &k)
			   : loom_tok_stream_finish(s, &out, &k);
		FUZZ_CHECK(rc == LOOM_OK, "stream %s of id %d failed: %s", i < n ? "push" : "finish",
			   i < n ? ids[i] : -1, loom_errmsg());
		FUZZ_CHECK(fuzz_utf8_ok(out, k), "stream chunk %zu (id %d) is not whole UTF-8", i,
			   i < n ? ids[i] : -1);
		FUZZ_CHECK(got + k <= want_len && memcmp(want + got, out, k) == 0,
			   "stream chunk %zu (id %d, skip_special %d) differs from decode at byte %zu",
			   i, i < n ? ids[i] : -1, skip, got);
		got += k;
	}
	FUZZ_CHECK(got == want_len, "stream gave %zu bytes, decode %zu (skip_special %d)", got,
		   want_len, skip);
	loom_tok_stream_destroy(s);
}

/* Decodes ids (all in range) both ways and streams them. If text is given,
 * returns in *text the skip_special=false decode (caller loom_free's). */
static inline void fuzz_tok_decode_check(const loom_tok *t, const int32_t *ids, size_t n,
					 char **text, size_t *text_len)
{
	if (text)
		*text = NULL;
	for (int skip = 0; skip < 2; skip++) {
		char *s;
		size_t len;
		loom_err rc = loom_tok_decode(t, ids, n, skip, &s, &len);
		if (rc == LOOM_ENOMEM)
			continue;
		FUZZ_CHECK(rc == LOOM_OK, "decode of %zu in-range ids failed: %s", n, loom_errmsg());
		FUZZ_CHECK(s[len] == '\0', "decode not NUL-terminated");
		FUZZ_CHECK(fuzz_utf8_ok(s, len), "decode gave invalid UTF-8");
		fuzz_tok_stream_check(t, ids, n, skip, s, len);
		if (!skip && text) {
			*text = s;
			*text_len = len;
		} else {
			loom_free(s);
		}
	}
}

/* Encodes text (len bytes, not NUL-terminated) with and without
 * add_special; checks the ids and decodes them. Returns the encode result
 * without add_special; *ids (if ids) gets those ids (caller loom_free's). */
static inline loom_err fuzz_tok_encode_check(const loom_tok *t, const char *text, size_t len,
					     int32_t **ids_out, size_t *n_out)
{
	int32_t nv = loom_tok_n_vocab(t);
	loom_err first = LOOM_OK;
	if (ids_out)
		*ids_out = NULL;
	for (int sp = 0; sp < 2; sp++) {
		int32_t *ids;
		size_t n;
		loom_err rc = loom_tok_encode(t, text, len, sp, &ids, &n);
		if (sp == 0)
			first = rc;
		if (rc) {
			FUZZ_CHECK(rc == LOOM_EINVAL || rc == LOOM_ENOMEM || rc == LOOM_ERANGE,
				   "encode: unexpected error %d: %s", rc, loom_errmsg());
			continue;
		}
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv, "encode gave id %d (vocab %d)", ids[i],
				   nv);
		fuzz_tok_decode_check(t, ids, n, NULL, NULL);
		if (sp == 0 && ids_out) {
			*ids_out = ids;
			*n_out = n;
		} else {
			loom_free(ids);
		}
	}
	return first;
}

/* Ids out of range are refused by decode and by the stream. */
static inline void fuzz_tok_range_check(const loom_tok *t, int32_t bad)
{
	char *s = NULL;
	size_t len;
	loom_tok_stream *st;
	const char *out;
	size_t k;
	FUZZ_CHECK(loom_tok_decode(t, &bad, 1, false, &s, &len) == LOOM_ERANGE,
		   "decode of id %d (vocab %d) is not ERANGE", bad, loom_tok_n_vocab(t));
	loom_free(s);
	if (loom_tok_stream_create(t, false, true, &st) == LOOM_OK) {
		FUZZ_CHECK(loom_tok_stream_push(st, bad, &out, &k) == LOOM_ERANGE,
			   "stream push of id %d is not ERANGE", bad);
		loom_tok_stream_destroy(st);
	}
}

#endif
