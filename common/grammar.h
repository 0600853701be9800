/*
 * common/grammar.h — the grammar engine behind structured outputs (OpenAI
 * `response_format`, vLLM's guided_json / guided_regex / guided_choice).
 *
 * Owns: compiling a JSON Schema subset, "any JSON object", a regex subset or
 * a list of choices into a grammar over bytes (rules made of sequences,
 * alternations, repetitions, byte classes and rule references), and matching
 * a generation against it: per request, a pushdown automaton over bytes
 * says at each decoding step which token ids of the model's vocabulary may
 * come next (a bitmask the sampler applies), and advances by the chosen one.
 * The masks come from a byte trie of the vocabulary walked once per
 * automaton position and cached (XGrammar's adaptive token mask cache: the
 * tokens a position accepts or rejects whatever lies below it on the stack,
 * plus the few "uncertain" ones checked against the full stack each step).
 * Must not: know about models, requests or sampling; hang or grow without
 * bound on any schema, regex or token sequence (depth, size and state limits
 * turn hostile input into errors).
 * Called by: the worker's sampler (masks) and the gateway (compiling the
 * request's response_format once, refusing what is unsupported with 400).
 *
 * Supported JSON Schema subset (anything else is LOOM_EUNSUPPORTED with a
 * message naming the keyword and its JSON pointer, e.g. "json_schema:
 * unsupported keyword 'patternProperties' at /properties/a"):
 *   type (object, array, string, number, integer, boolean, null, or a list),
 *   properties (generated in the order given) / required (must appear;
 *   optional ones may be skipped) / additionalProperties (false, true or a
 *   schema; extra keys are plain strings other than the listed names; when
 *   `properties` is given and additionalProperties is absent, no extra keys
 *   are generated — XGrammar's strict mode), enum, const, items,
 *   minItems / maxItems (at most 256), anyOf / oneOf (as alternation: a
 *   oneOf whose branches overlap may produce a value matching several),
 *   $ref to #, #/$defs/... or #/definitions/... (recursion allowed), $defs /
 *   definitions, pattern (the regex subset below, anchored at both ends),
 *   minLength / maxLength (at most 1024, not together with pattern), format
 *   date (days 01-28 only), time, date-time, uuid, email, integer minimum /
 *   maximum / exclusiveMinimum / exclusiveMaximum (numeric forms), and the
 *   annotations description, title, default, examples, $schema, $id,
 *   $comment (ignored). A schema `true` / `{}` is any JSON value.
 * Bounded output: integer parts at most 16 digits, fractions at most 16,
 *   exponents at most 2; any-JSON values nest at most 16 levels; between
 *   JSON tokens at most one whitespace run: nothing, one space, or a newline
 *   followed by up to 32 spaces (compact and indented styles both fit, and
 *   a model cannot loop on whitespace forever). No whitespace before or
 *   after the top-level value.
 * Regex subset (guided_regex, pattern): literals, escapes (\n \t \r \f \v
 *   \xHH \uHHHH and escaped metacharacters), `.` (any character but \n),
 *   classes [...] with ranges and negation, \d \w \s \D \W \S (ASCII),
 *   groups ( ) (?: ) (?<name> ) (?P<name> ), alternation |, quantifiers
 *   * + ? {m} {m,} {m,n} (m, n <= 1000; lazy/possessive suffixes are the
 *   same language), ^ at the start and $ at the end only. Refused:
 *   backreferences, lookaround, \b \B \A \z, inline flags, \p{..}. Matching
 *   is on Unicode code points encoded as UTF-8 (output is always valid UTF-8).
 */
#ifndef LOOM_GRAMMAR_H
#define LOOM_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/err.h"

/* A compiled grammar: immutable once compiled (but for the token mask cache
 * inside it, which matchers fill under a lock), so shareable between threads.
 * Must outlive every matcher made from it. */
typedef struct loom_grammar loom_grammar;
/* The byte strings of one tokenizer's ids: immutable, shareable. Must outlive
 * every matcher made with it. */
typedef struct loom_grammar_vocab loom_grammar_vocab;
/* One request's automaton state: used by one thread at a time. */
typedef struct loom_grammar_matcher loom_grammar_matcher;

/* Limits (compile errors LOOM_ERANGE past them). */
#define LOOM_GRAMMAR_MAX_STATES 200000   /* automaton states of one grammar */
#define LOOM_GRAMMAR_MAX_DEPTH 64        /* schema / regex nesting */
#define LOOM_GRAMMAR_JSON_DEPTH 16       /* nesting of any-JSON values */

/*
 * Compilers. On success *out is a grammar the caller owns (loom_grammar_free);
 * on failure *out is NULL and the result is LOOM_EUNSUPPORTED (a keyword or
 * construct outside the subset, named in the message with its JSON pointer
 * or regex offset), LOOM_EINVAL (malformed: a bad type name, an unresolvable
 * $ref, a regex syntax error, a schema nothing satisfies), LOOM_ERANGE (a
 * limit), LOOM_ENOMEM.
 */
loom_err loom_grammar_from_json_schema(const json_t *schema, loom_grammar **out);
/*
 * A value of schema between two literal texts: the output is prefix (plen
 * bytes), a JSON value of schema, then suffix (slen bytes) — e.g. a tool
 * call in a model family's syntax, "<tool_call>\n" {...} "\n</tool_call>".
 * Errors as loom_grammar_from_json_schema.
 */
loom_err loom_grammar_from_json_schema_wrapped(const json_t *schema, const char *prefix,
					       size_t plen, const char *suffix, size_t slen,
					       loom_grammar **out);
/* Any JSON object ({"type": "json_object"}). */
loom_err loom_grammar_any_json_object(loom_grammar **out);
/* re: len bytes of UTF-8 (need not be NUL-terminated); the whole output must match. */
loom_err loom_grammar_from_regex(const char *re, size_t len, loom_grammar **out);
/* The output is exactly one of the n (>= 1) strings choices[i] (lens[i] bytes each, UTF-8). */
loom_err loom_grammar_from_choices(const char *const *choices, const size_t *lens, size_t n,
				   loom_grammar **out);
/*
 * The grammar of a request's guide as the wire carries it (common/proto.h:
 * kind is a loom_guide, text its NUL-terminated text; NULL = ""): a schema
 * as JSON text, any JSON object, a regex, a JSON array of choice strings,
 * or JSON {"prefix": s, "schema": {...}, "suffix": s}. Errors as the
 * compilers above; LOOM_EINVAL for text that is not the JSON its kind
 * needs or an unknown kind. The gateway compiles each request's guide once
 * to refuse what the worker would.
 */
loom_err loom_grammar_from_guide(int kind, const char *text, loom_grammar **out);
/* Frees g (NULL is fine). */
void loom_grammar_free(loom_grammar *g);

/*
 * Builds the vocabulary of one tokenizer: bytes[id] (lens[id] bytes, copied)
 * is what id decodes to on its own, for id in [0, n_vocab). A NULL bytes[id]
 * marks an id that is never allowed (special tokens, holes); so is an id of
 * zero length. eos_ids (n_eos >= 1) are allowed exactly when the output is
 * complete. On success *out is owned by the caller (loom_grammar_vocab_free).
 * LOOM_EINVAL for n_vocab < 1, an eos id out of range; LOOM_ENOMEM.
 */
loom_err loom_grammar_vocab_create(const char *const *bytes, const size_t *lens, int32_t n_vocab,
				   const int32_t *eos_ids, int n_eos, loom_grammar_vocab **out);
void loom_grammar_vocab_free(loom_grammar_vocab *v);
/*
 * The vocabulary of a model of n_vocab ids whose tokenizer is t (the
 * embedding may have more rows than t has ids: those are never allowed):
 * each id's bytes as loom_tok_id_bytes gives them; special tokens other
 * than the eos_ids (and holes) are never allowed. Errors as
 * loom_grammar_vocab_create.
 */
struct loom_tok;
loom_err loom_grammar_vocab_from_tok(const struct loom_tok *t, int32_t n_vocab,
				     const int32_t *eos_ids, int n_eos, loom_grammar_vocab **out);
/* Number of ids (the mask has (n + 31) / 32 words). */
int32_t loom_grammar_vocab_size(const loom_grammar_vocab *v);

/* A matcher at the start of the output. *out owned by the caller. LOOM_ENOMEM. */
loom_err loom_grammar_matcher_create(const loom_grammar *g, const loom_grammar_vocab *v,
				     loom_grammar_matcher **out);
/*
 * Fills mask[(n_vocab + 31) / 32]: bit (id % 32) of word id / 32 is set when
 * id may come next. EOS ids are set exactly when the output is complete.
 * After EOS was accepted no bit is set. LOOM_ERANGE when the automaton
 * outgrows its limits (the request should be failed), LOOM_ENOMEM.
 */
loom_err loom_grammar_matcher_fill_mask(loom_grammar_matcher *m, uint32_t *mask);
/*
 * Advances by id. LOOM_EINVAL (state unchanged) when id is not allowed
 * now (or out of range); LOOM_ERANGE as for fill_mask.
 */
loom_err loom_grammar_matcher_accept(loom_grammar_matcher *m, int32_t id);
/* True when the output is complete and nothing but EOS may follow, or EOS was accepted. */
bool loom_grammar_matcher_done(const loom_grammar_matcher *m);
/* True when the output so far is complete (EOS allowed now). */
bool loom_grammar_matcher_can_end(const loom_grammar_matcher *m);
void loom_grammar_matcher_free(loom_grammar_matcher *m);

#endif
