/*
 * common/tokenizer.h — Hugging Face tokenizer.json BPE, both shapes in use.
 *
 * Owns: loading tokenizer.json (model.type "BPE"; merges as "a b" strings or
 * ["a","b"] pairs) in the two shapes models ship today:
 *   - SentencePiece style: normalizer Prepend("▁") + Replace(" " -> "▁"),
 *     no pre-tokenizer, byte_fallback (<0xNN> pieces), decoder
 *     Replace/ByteFallback/Fuse/Strip (Llama-2, Mistral, TinyLlama);
 *   - byte-level: ByteLevel pre-tokenizer with its split regex (GPT-2's,
 *     or a Split pre-tokenizer with Llama-3/Qwen's regex) run through PCRE2,
 *     bytes mapped to printable chars, ByteLevel decoder;
 * added/special tokens (matched before the model runs, longest first), the
 * TemplateProcessing / ByteLevel post-processor (e.g. BOS prepended), and
 * an incremental decoder that never emits part of a UTF-8 character.
 * A loom_tok is immutable after load and safe to share between threads.
 * Must not: know about models or requests.
 *
 * Also accepted: the Metaspace pre-tokenizer/decoder form of SentencePiece
 * files, Digits, an NFC normalizer (Qwen2/2.5/3; tokenizer_nfc.c).
 * Other components are refused at load (LOOM_EUNSUPPORTED), never ignored.
 * Encoding matches Hugging Face tokenizers (checked against its Rust library
 * on the fixtures, and by tests/common/test_tokenizer_real.c against an
 * independent reference encoder over a corpus), including where it matches "normalized": true added
 * tokens (in the normalized text). Known differences: skip_special drops
 * every special added token (HF 0.23 keeps "normalized": true ones); with no
 * decoder, pieces are concatenated (HF joins them with spaces); truncation and
 * padding sections are ignored; \p{L}/\p{N} follow PCRE2's Unicode tables
 * and NFC the Unicode version of tokenizer_nfc_tab.h, so characters added in
 * recent Unicode versions may split or normalize differently.
 */
#ifndef LOOM_TOKENIZER_H
#define LOOM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct loom_tok loom_tok;

/* Loads path (a tokenizer.json). Errors name the file and the problem. */
loom_err loom_tok_load(const char *path, loom_tok **out);
/* Same from JSON text in memory; name is used in messages. */
loom_err loom_tok_load_json(const char *json, size_t len, const char *name, loom_tok **out);
/* Renames t for the messages of later calls (printf format), e.g. a file path
 * that must not reach a server's clients. LOOM_ENOMEM leaves the old name. */
loom_err loom_tok_set_name(loom_tok *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void loom_tok_free(loom_tok *t);

/* Number of ids (vocab plus added tokens beyond it). */
int32_t loom_tok_n_vocab(const loom_tok *t);
/* Id of an exact token string (vocab or added), or -1. */
int32_t loom_tok_id(const loom_tok *t, const char *piece);
/* True if id is an added token marked special (e.g. <s>, <|endoftext|>). */
bool loom_tok_is_special(const loom_tok *t, int32_t id);
/*
 * The bytes id decodes to on its own, without the decoder's whole-text
 * steps (no leading-space strip): byte-level pieces mapped back to bytes,
 * SentencePiece "▁" as a space, "<0xNN>" as byte NN, added and special
 * tokens as their text. *p points into t (valid while t lives), *len bytes
 * (may be 0; not NUL-terminated). False (and *p NULL, *len 0) for an id out
 * of range or a hole in the id space.
 */
bool loom_tok_id_bytes(const loom_tok *t, int32_t id, const char **p, size_t *len);

/*
 * Encodes len bytes of UTF-8 text. add_special: apply the post-processor
 * (BOS for Llama). Invalid UTF-8 is an error (LOOM_EINVAL). On success
 * *ids (loom_malloc'ed, caller frees with loom_free) holds *n ids.
 */
loom_err loom_tok_encode(const loom_tok *t, const char *text, size_t len, bool add_special,
			 int32_t **ids, size_t *n);

/*
 * Decodes ids to UTF-8 text (loom_malloc'ed, NUL-terminated, caller frees).
 * skip_special drops special added tokens. Ids out of range: LOOM_ERANGE.
 * Byte sequences that are not valid UTF-8 come out as U+FFFD.
 */
loom_err loom_tok_decode(const loom_tok *t, const int32_t *ids, size_t n, bool skip_special,
			 char **text, size_t *len);

/*
 * Incremental decoder for one generation stream. push() appends one id and
 * returns in *out and *out_len (pointer into the stream's buffer, valid until the
 * next call) the text that became complete: never half a UTF-8 character;
 * the concatenation of all outputs plus finish() equals loom_tok_decode() of
 * all ids pushed. The stream starts as a continuation of a prompt (no
 * SentencePiece leading-space strip) unless at_start is true.
 */
typedef struct loom_tok_stream loom_tok_stream;
loom_err loom_tok_stream_create(const loom_tok *t, bool skip_special, bool at_start,
				loom_tok_stream **out);
loom_err loom_tok_stream_push(loom_tok_stream *s, int32_t id, const char **out, size_t *out_len);
/* Flushes held bytes (an incomplete UTF-8 tail becomes U+FFFD). */
loom_err loom_tok_stream_finish(loom_tok_stream *s, const char **out, size_t *out_len);
void loom_tok_stream_destroy(loom_tok_stream *s);

#endif
