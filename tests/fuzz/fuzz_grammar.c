/*
 * tests/fuzz/fuzz_grammar.c — the grammar engine (common/grammar.h) on any
 * schema, regex or choice list: response_format / guided_* come straight
 * from requests.
 *
 * Input: byte 0 picks the compiler ('r': regex, 'c': choices split at '\n',
 * anything else: the whole input as a JSON Schema; input that is not JSON
 * ends there). What compiles is walked for up to 48 tokens over a small
 * byte-level vocabulary (256 bytes, a few multi-byte pieces, a special id,
 * EOS), the picks drawn from a PRNG seeded by the input.
 * Invariants: a refusal is one of the documented codes, carries a message
 * and leaves *out NULL; at each step the EOS bit equals can_end, every
 * allowed id is accepted, a disallowed one is refused with LOOM_EINVAL and
 * changes nothing, the special id is never allowed; after done only EOS
 * (or nothing) is allowed.
 */
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/grammar.h"
#include "tests/fuzz/fuzz.h"

static const char *const fuzz_grammar_pieces[] = {
	"{\"", "\":", "\", \"", "\"}", "},", "[\"", "\"]", "true", "null", "12", "-0.", "e+",
	"\\u00", "\n  ", "\xc3\xa9", "\xe2\x82", "\xac", "ab",
};
#define FUZZ_GRAMMAR_NP (sizeof fuzz_grammar_pieces / sizeof fuzz_grammar_pieces[0])
#define FUZZ_GRAMMAR_N (256 + (int32_t)FUZZ_GRAMMAR_NP + 2)

static loom_grammar_vocab *fuzz_grammar_vocab(void)
{
	static loom_grammar_vocab *v;
	static char one[256];
	if (v)
		return v;
	const char *bytes[FUZZ_GRAMMAR_N];
	size_t lens[FUZZ_GRAMMAR_N];
	for (int i = 0; i < 256; i++) {
		one[i] = (char)i;
		bytes[i] = &one[i];
		lens[i] = 1;
	}
	for (size_t i = 0; i < FUZZ_GRAMMAR_NP; i++) {
		bytes[256 + i] = fuzz_grammar_pieces[i];
		lens[256 + i] = strlen(fuzz_grammar_pieces[i]);
	}
	bytes[FUZZ_GRAMMAR_N - 2] = NULL; /* special */
	lens[FUZZ_GRAMMAR_N - 2] = 0;
	bytes[FUZZ_GRAMMAR_N - 1] = "</s>";
	lens[FUZZ_GRAMMAR_N - 1] = 4;
	int32_t eos = FUZZ_GRAMMAR_N - 1;
	if (loom_grammar_vocab_create(bytes, lens, FUZZ_GRAMMAR_N, &eos, 1, &v))
		abort();
	return v;
}

static int fuzz_grammar_bit(const uint32_t *mask, int32_t id)
{
	return mask[id >> 5] >> (id & 31) & 1;
}

static void fuzz_grammar_walk(const loom_grammar *g, uint64_t seed)
{
	loom_grammar_matcher *m = NULL;
	uint32_t mask[(FUZZ_GRAMMAR_N + 31) / 32];
	int32_t allowed[FUZZ_GRAMMAR_N];
	const int32_t eos = FUZZ_GRAMMAR_N - 1;
	loom_err rc = loom_grammar_matcher_create(g, fuzz_grammar_vocab(), &m);
	if (rc) {
		FUZZ_CHECK(rc == LOOM_ENOMEM || rc == LOOM_ERANGE, "matcher_create %d: %s", rc, loom_errmsg());
		return;
	}
	for (int step = 0; step < 48; step++) {
		rc = loom_grammar_matcher_fill_mask(m, mask);
		if (rc) {
			FUZZ_CHECK(rc == LOOM_ENOMEM || rc == LOOM_ERANGE, "fill_mask %d: %s", rc, loom_errmsg());
			break;
		}
		FUZZ_CHECK(fuzz_grammar_bit(mask, eos) == loom_grammar_matcher_can_end(m),
			   "EOS bit %d but can_end %d", fuzz_grammar_bit(mask, eos),
			   loom_grammar_matcher_can_end(m));
		FUZZ_CHECK(!fuzz_grammar_bit(mask, FUZZ_GRAMMAR_N - 2), "special id allowed");
		int32_t na = 0;
		for (int32_t id = 0; id < FUZZ_GRAMMAR_N; id++)
			if (fuzz_grammar_bit(mask, id))
				allowed[na++] = id;
		if (loom_grammar_matcher_done(m))
			FUZZ_CHECK(na <= 1, "%d ids allowed after done", na);
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		int32_t bad = (int32_t)((seed >> 33) % FUZZ_GRAMMAR_N);
		if (!fuzz_grammar_bit(mask, bad)) {
			rc = loom_grammar_matcher_accept(m, bad);
			FUZZ_CHECK(rc == LOOM_EINVAL, "disallowed id %d: accept gave %d", bad, rc);
		}
		if (!na)
			break;
		int32_t pick = allowed[(seed >> 17) % (uint64_t)na];
		rc = loom_grammar_matcher_accept(m, pick);
		if (rc) {
			FUZZ_CHECK(rc == LOOM_ENOMEM || rc == LOOM_ERANGE, "allowed id %d refused: %d: %s", pick,
				   rc, loom_errmsg());
			break;
		}
		if (pick == eos) {
			FUZZ_CHECK(loom_grammar_matcher_done(m), "EOS accepted but not done");
			break;
		}
	}
	loom_grammar_matcher_free(m);
}

int fuzz_grammar(const uint8_t *data, size_t size)
{
	loom_grammar *g = (loom_grammar *)1;
	loom_err rc;
	if (size && data[0] == 'r') {
		rc = loom_grammar_from_regex((const char *)data + 1, size - 1, &g);
	} else if (size && data[0] == 'c') {
		const char *ch[64];
		size_t lens[64], n = 0, start = 1;
		for (size_t i = 1; i <= size && n < 64; i++)
			if (i == size || data[i] == '\n') {
				ch[n] = (const char *)data + start;
				lens[n++] = i - start;
				start = i + 1;
			}
		rc = loom_grammar_from_choices(ch, lens, n, &g);
	} else {
		json_t *s = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
		if (!s)
			return 0;
		rc = loom_grammar_from_json_schema(s, &g);
		json_decref(s);
	}
	if (rc) {
		FUZZ_CHECK(rc == LOOM_EUNSUPPORTED || rc == LOOM_EINVAL || rc == LOOM_ERANGE ||
				   rc == LOOM_ENOMEM,
			   "compile error %d: %s", rc, loom_errmsg());
		FUZZ_CHECK(g == NULL, "compile error %d but *out set", rc);
		FUZZ_CHECK(loom_errmsg()[0] != '\0', "compile error %d without a message", rc);
		return 0;
	}
	fuzz_accepted = 1;
	uint64_t seed = 1469598103934665603ull;
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 1099511628211ull;
	fuzz_grammar_walk(g, seed);
	fuzz_grammar_walk(g, seed + 1);
	loom_grammar_free(g);
	return 0;
}

void fuzz_grammar_seeds(fuzz_seeds *s)
{
	fuzz_seed_str(s, "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":8},"
			 "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":150},\"tags\":{\"type\":\"array\","
			 "\"items\":{\"enum\":[\"a\",\"b\",null]},\"minItems\":1,\"maxItems\":3}},\"required\":[\"name\"],"
			 "\"additionalProperties\":false}");
	fuzz_seed_str(s, "{\"$defs\":{\"n\":{\"type\":\"object\",\"properties\":{\"v\":{\"anyOf\":[{\"type\":\"number\"},"
			 "{\"type\":\"null\"}]},\"k\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"}}}}},"
			 "\"$ref\":\"#/$defs/n\"}");
	fuzz_seed_str(s, "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}\\\\d+$\"},"
			 "\"d\":{\"type\":\"string\",\"format\":\"date-time\"}},\"additionalProperties\":{\"type\":\"boolean\"}}");
	fuzz_seed_str(s, "{\"type\":[\"string\",\"integer\",\"null\"],\"const\":\"x\"}");
	fuzz_seed_str(s, "{}");
	fuzz_seed_str(s, "r[a-z]{2,5}@(x|yz)+\\.(com|org)");
	fuzz_seed_str(s, "r(?:caf\xc3\xa9|[^\\n\\d]|\\u00e9){1,4}\\s?\\w*-?\\d{0,3}");
	fuzz_seed_str(s, "cyes\nno\nmaybe\n\xc3\xa9t\xc3\xa9");
}

const fuzz_word fuzz_grammar_dict[] = {
	FUZZ_W("\"type\""), FUZZ_W("\"object\""), FUZZ_W("\"array\""), FUZZ_W("\"string\""),
	FUZZ_W("\"integer\""), FUZZ_W("\"number\""), FUZZ_W("\"boolean\""), FUZZ_W("\"null\""),
	FUZZ_W("\"properties\""), FUZZ_W("\"required\""), FUZZ_W("\"additionalProperties\""),
	FUZZ_W("\"items\""), FUZZ_W("\"minItems\""), FUZZ_W("\"maxItems\""), FUZZ_W("\"enum\""),
	FUZZ_W("\"const\""), FUZZ_W("\"anyOf\""), FUZZ_W("\"oneOf\""), FUZZ_W("\"$ref\""),
	FUZZ_W("\"#/$defs/n\""), FUZZ_W("\"$defs\""), FUZZ_W("\"pattern\""), FUZZ_W("\"minLength\""),
	FUZZ_W("\"maxLength\""), FUZZ_W("\"format\""), FUZZ_W("\"minimum\""), FUZZ_W("\"maximum\""),
	FUZZ_W("\"exclusiveMinimum\""), FUZZ_W("\"uuid\""), FUZZ_W("\"date\""), FUZZ_W("true"),
	FUZZ_W("false"), FUZZ_W("{}"), FUZZ_W("[]"), FUZZ_W("1000"), FUZZ_W("-9999999999999999"),
	FUZZ_W("(?:"), FUZZ_W("(?="), FUZZ_W("[^"), FUZZ_W("\\d"), FUZZ_W("\\w"), FUZZ_W("\\s"),
	FUZZ_W("{2,"), FUZZ_W("{1000}"), FUZZ_W("{0,}"), FUZZ_W("*"), FUZZ_W("+?"), FUZZ_W("|"),
	FUZZ_W("\\u00e9"), FUZZ_W("\\x7f"), FUZZ_W("\\1"), FUZZ_W("."),
	{ NULL, 0 }
};
