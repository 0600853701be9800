/* tests/common/test_grammar.c — the grammar engine (common/grammar.h):
 * random walks over the real Llama 3 vocabulary (128k ids) and over a small
 * byte-level vocabulary, every output checked by an independent judge:
 * JSON Schema outputs by Debian's python3-jsonschema
 * (tests/common/json_validate.py), regex outputs by PCRE2, choice outputs
 * by string equality, json_object outputs by jansson. Plus the refusals
 * (unsupported keywords named with their pointer, disallowed tokens),
 * hostile inputs hitting limits, and allocation failures. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/alloc.h"
#include "common/grammar.h"
#include "common/tokenizer.h"
#include "tests/support/harness.h"

/* ---- vocabularies ---- */

typedef struct tvocab {
	loom_grammar_vocab *v;
	int32_t n;
	const char **bytes; /* [n] (into tok's arena or static), NULL = special */
	size_t *lens;
	int32_t eos, eos2; /* eos2: a second EOS id (-1 none) */
	loom_tok *tok;
} tvocab;

static tvocab llama, small;
static bool have_llama;

/* 256 single bytes, a few JSON-ish multi-byte pieces, one special, EOS last. */
static const char *const small_pieces[] = {
	"{\"", "\":", "\": ", "\", \"", "\",\"", "\"}", "},", "}}", "]}", "[\"", "\"]", "true", "false",
	"null", "12", "0.", "e+", "\\n", "\\u00", "\n  ", "  ", "ab", "name", "\xc3\xa9", "\xe2\x82",
	"\xac", "\xf0\x9f\x98\x80", "-1", "20", "T1",
};

static void make_small(void)
{
	int32_t n = 256 + (int32_t)(sizeof small_pieces / sizeof *small_pieces) + 2;
	small.n = n;
	small.bytes = calloc((size_t)n, sizeof *small.bytes);
	small.lens = calloc((size_t)n, sizeof *small.lens);
	static char one[256];
	for (int i = 0; i < 256; i++) {
		one[i] = (char)i;
		small.bytes[i] = &one[i];
		small.lens[i] = 1;
	}
	for (size_t i = 0; i < sizeof small_pieces / sizeof *small_pieces; i++) {
		small.bytes[256 + i] = small_pieces[i];
		small.lens[256 + i] = strlen(small_pieces[i]);
	}
	small.bytes[n - 2] = NULL; /* a special token */
	small.eos = n - 1;
	small.eos2 = -1;
	small.bytes[n - 1] = "</s>";
	small.lens[n - 1] = 4;
	assert_int_equal(loom_grammar_vocab_create(small.bytes, small.lens, n, &small.eos, 1, &small.v),
			 LOOM_OK);
}

static void make_llama(void)
{
	const char *path = lt_shared_path("fixtures/llama3.2-1b-instruct/tokenizer.json");
	if (loom_tok_load(path, &llama.tok)) {
		print_message("skip llama3 walks: %s: %s\n", path, loom_errmsg());
		return;
	}
	loom_tok *t = llama.tok;
	int32_t n = loom_tok_n_vocab(t);
	llama.n = n;
	llama.bytes = calloc((size_t)n, sizeof *llama.bytes);
	llama.lens = calloc((size_t)n, sizeof *llama.lens);
	for (int32_t id = 0; id < n; id++) {
		const char *p;
		size_t len;
		if (loom_tok_is_special(t, id) || !loom_tok_id_bytes(t, id, &p, &len))
			continue;
		llama.bytes[id] = p;
		llama.lens[id] = len;
	}
	int32_t eos[2] = { loom_tok_id(t, "<|eot_id|>"), loom_tok_id(t, "<|end_of_text|>") };
	assert_true(eos[0] >= 0 && eos[1] >= 0);
	llama.eos = eos[0];
	llama.eos2 = eos[1];
	/* the tokenizer's own vocabulary builder (specials but EOS never allowed) */
	assert_int_equal(loom_grammar_vocab_from_tok(t, n, eos, 2, &llama.v), LOOM_OK);
	have_llama = true;
}

static int setup(void **state)
{
	(void)state;
	make_small();
	make_llama();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	loom_grammar_vocab_free(small.v);
	loom_grammar_vocab_free(llama.v);
	loom_tok_free(llama.tok);
	free(small.bytes);
	free(small.lens);
	free(llama.bytes);
	free(llama.lens);
	return 0;
}

/* ---- random walks ---- */

static uint64_t rng_state;
static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 11);
}

typedef struct walk_stats {
	long steps;
	double mask_s, max_mask_s;
	int outputs;
} walk_stats;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Tokens the walk prefers when it should end: JSON ones starting with " } ]
 * (they close strings and containers); for regexes, ones holding @ . ! - )
 * (the separators the test regexes need to leave their loops). */
static const char *walk_closers = "\"}]";
static bool walk_any_byte;

static bool closing_byte(const tvocab *tv, int32_t id)
{
	size_t n = walk_any_byte ? tv->lens[id] : tv->lens[id] > 0;
	for (size_t i = 0; i < n; i++)
		if (tv->bytes[id][i] && strchr(walk_closers, tv->bytes[id][i]))
			return true;
	return false;
}

/* Walks g over tv until done; returns the output (malloc'ed) in *out. The
 * picks: EOS when allowed (p = 1/2), after `soft` tokens (or with p = 1/4)
 * a token starting with " } or ] when one is allowed, else uniform. */
static void walk(const loom_grammar *g, const tvocab *tv, uint64_t seed, int soft, char **out,
		 size_t *out_len, walk_stats *st)
{
	loom_grammar_matcher *m;
	uint32_t *mask = calloc(((size_t)tv->n + 31) / 32, 4);
	int32_t *allowed = malloc((size_t)tv->n * sizeof *allowed), *closing = malloc((size_t)tv->n * 4);
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	rng_state = seed * 0x9E3779B97F4A7C15ull + 1;
	assert_int_equal(loom_grammar_matcher_create(g, tv->v, &m), LOOM_OK);
	for (int steps = 0;; steps++) {
		if (steps > 5000)
			fail_msg("walk did not end after 5000 tokens: %.*s", (int)(len < 300 ? len : 300), buf);
		double t0 = now_s();
		loom_err rc = loom_grammar_matcher_fill_mask(m, mask);
		double dt = now_s() - t0;
		if (rc)
			fail_msg("fill_mask: %s: %s", loom_strerror(rc), loom_errmsg());
		st->steps++;
		st->mask_s += dt;
		if (dt > st->max_mask_s)
			st->max_mask_s = dt;
		int32_t na = 0, nc = 0;
		bool eos = false;
		for (int32_t id = 0; id < tv->n; id++) {
			if (!(mask[id >> 5] >> (id & 31) & 1))
				continue;
			if (id == tv->eos || id == tv->eos2) {
				eos = true;
				continue;
			}
			if (!tv->bytes[id]) /* special tokens never */
				fail_msg("special id %d in the mask after [%.*s]", id, (int)len, buf);
			allowed[na++] = id;
			if (closing_byte(tv, id))
				closing[nc++] = id;
		}
		assert_int_equal(eos, loom_grammar_matcher_can_end(m));
		if (!na && !eos)
			fail_msg("no token allowed and not complete after: %.*s", (int)len, buf);
		int32_t pick;
		if (eos && (!na || rnd() % 2 == 0))
			pick = tv->eos;
		else if (nc && (steps >= soft ? rnd() % 4 != 0 : rnd() % 4 == 0))
			pick = closing[rnd() % (uint32_t)nc];
		else
			pick = allowed[rnd() % (uint32_t)na];
		/* a token not in the mask is refused (and changes nothing) */
		int32_t bad = (int32_t)(rnd() % (uint32_t)tv->n);
		if (!(mask[bad >> 5] >> (bad & 31) & 1))
			assert_int_equal(loom_grammar_matcher_accept(m, bad), LOOM_EINVAL);
		rc = loom_grammar_matcher_accept(m, pick);
		if (rc)
			fail_msg("accept %d: %s: %s", pick, loom_strerror(rc), loom_errmsg());
		if (pick == tv->eos)
			break;
		while (len + tv->lens[pick] + 1 > cap)
			buf = realloc(buf, cap *= 2);
		memcpy(buf + len, tv->bytes[pick], tv->lens[pick]);
		len += tv->lens[pick];
	}
	assert_true(loom_grammar_matcher_done(m));
	assert_int_equal(loom_grammar_matcher_fill_mask(m, mask), LOOM_OK);
	for (int32_t w = 0; w < (tv->n + 31) / 32; w++)
		assert_int_equal(mask[w], 0);
	loom_grammar_matcher_free(m);
	free(mask);
	free(allowed);
	free(closing);
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	st->outputs++;
}

/* ---- JSON Schema walks, judged by python3-jsonschema ---- */

static const char *const schemas[] = {
	/* 0 flat object, all required, every scalar type */
	"{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":\"integer\"},"
	"\"score\":{\"type\":\"number\"},\"ok\":{\"type\":\"boolean\"},\"none\":{\"type\":\"null\"}},"
	"\"required\":[\"name\",\"age\",\"score\",\"ok\",\"none\"],\"additionalProperties\":false}",
	/* 1 optional properties, nested object */
	"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"object\","
	"\"properties\":{\"x\":{\"type\":\"boolean\"},\"y\":{\"type\":\"string\",\"maxLength\":5}},"
	"\"required\":[\"y\"]},\"c\":{\"type\":\"string\",\"minLength\":2,\"maxLength\":8}},\"required\":[\"c\"]}",
	/* 2 arrays with min/maxItems, enum */
	"{\"type\":\"object\",\"properties\":{\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"red\",\"green\","
	"\"blue\",1,null]},\"minItems\":1,\"maxItems\":4},\"n\":{\"type\":\"array\",\"items\":{\"type\":\"integer\","
	"\"minimum\":-50,\"maximum\":1234},\"maxItems\":3}},\"required\":[\"tags\",\"n\"],"
	"\"additionalProperties\":false}",
	/* 3 anyOf, const, $ref with recursion */
	"{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"v\":{\"anyOf\":[{\"type\":\"integer\"},"
	"{\"type\":\"string\",\"maxLength\":3}]},\"kids\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"},"
	"\"maxItems\":2}},\"required\":[\"v\"]}},\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"tree\"},"
	"\"root\":{\"$ref\":\"#/$defs/node\"}},\"required\":[\"kind\",\"root\"]}",
	/* 4 string patterns and formats */
	"{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-\\\\d{3,5}$\"},"
	"\"q\":{\"type\":\"string\",\"pattern\":\"a\\\"b\\\\\\\\c[^x]\"},\"d\":{\"type\":\"string\",\"format\":\"date\"},"
	"\"u\":{\"type\":\"string\",\"format\":\"uuid\"},\"t\":{\"type\":\"string\",\"format\":\"date-time\"},"
	"\"e\":{\"type\":\"string\",\"format\":\"email\"}},\"required\":[\"id\",\"q\",\"d\",\"u\",\"t\",\"e\"]}",
	/* 5 additionalProperties as a schema, type list */
	"{\"type\":\"object\",\"properties\":{\"k\":{\"type\":[\"integer\",\"null\"]}},"
	"\"additionalProperties\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":9}}",
	/* 6 definitions, oneOf of disjoint types, top-level array */
	"{\"definitions\":{\"pt\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"},"
	"\"y\":{\"type\":\"number\"}},\"required\":[\"x\",\"y\"],\"additionalProperties\":false}},"
	"\"type\":\"array\",\"items\":{\"oneOf\":[{\"$ref\":\"#/definitions/pt\"},{\"type\":\"string\","
	"\"enum\":[\"origin\"]}]},\"minItems\":2,\"maxItems\":5}",
	/* 7 all optional (may be {}), additionalProperties true */
	"{\"type\":\"object\",\"properties\":{\"p\":{\"type\":\"integer\",\"exclusiveMinimum\":10},"
	"\"q\":{\"type\":\"boolean\"}},\"additionalProperties\":true,\"title\":\"t\",\"description\":\"d\"}",
	/* 8 anything (nested any-JSON) */
	"{}",
	/* 9 integer range across digit counts and signs */
	"{\"type\":\"integer\",\"minimum\":-1000,\"maximum\":999999}",
	/* 10 key names needing escapes and unicode */
	"{\"type\":\"object\",\"properties\":{\"caf\\u00e9\":{\"type\":\"string\",\"maxLength\":3},"
	"\"a\\\"b\":{\"type\":\"boolean\"},\"\":{\"type\":\"null\"}},\"required\":[\"caf\\u00e9\",\"a\\\"b\",\"\"],"
	"\"additionalProperties\":false}",
	/* 11 a string at top level with unicode pattern */
	"{\"type\":\"string\",\"pattern\":\"^(caf\\u00e9|\\u00fc[a-c]{2}|.\\\\.)+$\"}",
};
#define N_SCHEMAS (sizeof schemas / sizeof *schemas)

static void append_case(FILE *f, const char *name, const char *schema, const char *out, size_t len)
{
	json_t *o = json_pack("{s:s, s:o, s:s%}", "name", name, "schema", json_loads(schema, 0, NULL), "output",
			      out, len);
	assert_non_null(o);
	char *s = json_dumps(o, JSON_COMPACT);
	fprintf(f, "%s\n", s);
	free(s);
	json_decref(o);
}

static int run_validator(const char *path, int *validated)
{
	char cmd[1024], line[4096];
	snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/common/json_validate.py %s 2>&1", path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(line, sizeof line, p)) {
		fputs(line, stderr);
		sscanf(line, "validated %d", validated);
	}
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void report(const char *what, const walk_stats *st, double compile_s)
{
	print_message("%s: %d outputs, %ld steps, compile %.2f ms, mask mean %.3f ms max %.3f ms\n", what,
		      st->outputs, st->steps, compile_s * 1e3, st->steps ? st->mask_s / (double)st->steps * 1e3 : 0,
		      st->max_mask_s * 1e3);
}

static void schema_walks(const tvocab *tv, const char *tag, int per_schema, int soft)
{
	char path[512];
	const char *tmp = getenv("LOOM_TMP") ? getenv("LOOM_TMP") : "/tmp";
	mkdir(tmp, 0777);
	snprintf(path, sizeof path, "%s/grammar_%s_%d.jsonl", tmp, tag, (int)getpid());
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	int total = 0;
	for (size_t i = 0; i < N_SCHEMAS; i++) {
		json_error_t e;
		json_t *s = json_loads(schemas[i], 0, &e);
		if (!s)
			fail_msg("schema %zu: %s", i, e.text);
		loom_grammar *g;
		double t0 = now_s();
		loom_err rc = loom_grammar_from_json_schema(s, &g);
		double ct = now_s() - t0;
		if (rc)
			fail_msg("schema %zu: %s: %s", i, loom_strerror(rc), loom_errmsg());
		walk_stats st = { 0 };
		for (int k = 0; k < per_schema; k++) {
			char *out, name[64];
			size_t len;
			walk(g, tv, i * 1000 + (size_t)k, soft, &out, &len, &st);
			snprintf(name, sizeof name, "%s/schema%zu/walk%d", tag, i, k);
			append_case(f, name, schemas[i], out, len);
			free(out);
			total++;
		}
		char what[64];
		snprintf(what, sizeof what, "%s schema %zu", tag, i);
		report(what, &st, ct);
		loom_grammar_free(g);
		json_decref(s);
	}
	fclose(f);
	int validated = -1;
	int rc = run_validator(path, &validated);
	if (rc == 77) {
		print_message("SKIP validation: python3-jsonschema missing (scripts/setup installs it)\n");
		unlink(path);
		return;
	}
	if (rc != 0 || validated != total)
		fail_msg("json_validate: %d of %d outputs valid (cases in %s)", validated, total, path);
	print_message("%s: %d outputs validated by python3-jsonschema\n", tag, validated);
	unlink(path);
}

static void json_schema_small_vocab(void **state)
{
	(void)state;
	schema_walks(&small, "small", 12, 60);
}

static void json_schema_llama3(void **state)
{
	(void)state;
	if (!have_llama)
		skip();
	schema_walks(&llama, "llama3", 8, 40);
}

/* A length cap: once past it the walk must close quickly (every schema can end). */
static void json_schema_length_cap(void **state)
{
	(void)state;
	schema_walks(&small, "capped", 4, 0);
}

/* A schema between literal texts (a Hermes tool call): every walk is the
 * prefix, a value the validator accepts, then the suffix. */
static void json_schema_wrapped(void **state)
{
	(void)state;
	const char *pre = "<tool_call>\n", *suf = "\n</tool_call>";
	const char *schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"const\":\"get_weather\"},"
			     "\"arguments\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
			     "\"string\",\"maxLength\":12},\"days\":{\"type\":\"integer\",\"minimum\":1,"
			     "\"maximum\":7}},\"required\":[\"city\",\"days\"]}},\"required\":[\"name\","
			     "\"arguments\"]}";
	json_error_t je;
	json_t *s = json_loads(schema, 0, &je);
	assert_non_null(s);
	loom_grammar *g;
	assert_int_equal(loom_grammar_from_json_schema_wrapped(s, pre, strlen(pre), suf, strlen(suf), &g),
			 LOOM_OK);
	char path[512];
	const char *tmp = getenv("LOOM_TMP") ? getenv("LOOM_TMP") : "/tmp";
	mkdir(tmp, 0777);
	snprintf(path, sizeof path, "%s/grammar_wrapped_%d.jsonl", tmp, (int)getpid());
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	walk_stats st = { 0 };
	for (int k = 0; k < 10; k++) {
		char *out, name[64];
		size_t len;
		walk(g, &small, (size_t)k + 99, 40, &out, &len, &st);
		if (len < strlen(pre) + strlen(suf) || memcmp(out, pre, strlen(pre)) ||
		    memcmp(out + len - strlen(suf), suf, strlen(suf)))
			fail_msg("wrapped walk %d: %s", k, out);
		snprintf(name, sizeof name, "wrapped/walk%d", k);
		append_case(f, name, schema, out + strlen(pre), len - strlen(pre) - strlen(suf));
		free(out);
	}
	fclose(f);
	int validated = -1, rc = run_validator(path, &validated);
	unlink(path);
	if (rc == 77) {
		print_message("SKIP validation: python3-jsonschema missing\n");
	} else if (rc != 0 || validated != 10) {
		fail_msg("json_validate: %d of 10 wrapped outputs valid", validated);
	}
	/* a bad schema inside is refused like the plain one */
	json_t *bad = json_loads("{\"type\":\"object\",\"patternProperties\":{}}", 0, &je);
	assert_int_equal(loom_grammar_from_json_schema_wrapped(bad, "a", 1, "b", 1, &g),
			 LOOM_EUNSUPPORTED);
	assert_null(g);
	json_decref(bad);
	json_decref(s);
	loom_grammar_free(g);
}

/* ---- regex walks, judged by PCRE2 ---- */

static const char *const regexes[] = {
	"[a-z]{3,8}@[a-z]+\\.(com|org)",
	"\\d{4}-\\d{2}-\\d{2}",
	"(ab|cd)*e?",
	"[^a-z\\n]{1,6}x",
	"(?:caf\xc3\xa9|na\xc3\xafve|.)+!",
	"-?(0|[1-9][0-9]*)(\\.[0-9]+)?",
	"\\w+\\s\\w+",
	"^(\\(\\d{3}\\) )?\\d{3}-\\d{4}$",
	"[\\x41-\\x43\\u00e9-\\u00eb]{2}",
	"(a|ab)(c|bcd)(d*)",
};

static void regex_walks_on(const tvocab *tv, const char *tag, int per)
{
	for (size_t i = 0; i < sizeof regexes / sizeof *regexes; i++) {
		loom_grammar *g;
		double t0 = now_s();
		loom_err rc = loom_grammar_from_regex(regexes[i], strlen(regexes[i]), &g);
		double ct = now_s() - t0;
		if (rc)
			fail_msg("regex %s: %s: %s", regexes[i], loom_strerror(rc), loom_errmsg());
		int ec;
		PCRE2_SIZE eo;
		pcre2_code *re = pcre2_compile((PCRE2_SPTR)regexes[i], PCRE2_ZERO_TERMINATED,
					       PCRE2_UTF | PCRE2_ALT_BSUX | PCRE2_ANCHORED | PCRE2_ENDANCHORED, &ec, &eo, NULL);
		assert_non_null(re);
		pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
		walk_stats st = { 0 };
		for (int k = 0; k < per; k++) {
			char *out;
			size_t len;
			walk(g, tv, i * 100 + (size_t)k, 400, &out, &len, &st);
			int r = pcre2_match(re, (PCRE2_SPTR)out, len, 0, 0, md, NULL);
			if (r < 0)
				fail_msg("regex %s: output [%s] does not match (pcre2 %d)", regexes[i], out, r);
			free(out);
		}
		char what[96];
		snprintf(what, sizeof what, "%s regex %zu", tag, i);
		report(what, &st, ct);
		pcre2_match_data_free(md);
		pcre2_code_free(re);
		loom_grammar_free(g);
	}
}

static void regex_walks(void **state)
{
	(void)state;
	walk_closers = "@.!-)";
	walk_any_byte = true;
	regex_walks_on(&small, "small", 20);
	if (have_llama)
		regex_walks_on(&llama, "llama3", 10);
	walk_closers = "\"}]";
	walk_any_byte = false;
}

/* ---- choices and json_object ---- */

static void choice_walks(void **state)
{
	(void)state;
	const char *ch[] = { "yes", "no", "maybe", "y", "no way", "caf\xc3\xa9" };
	size_t lens[6];
	for (int i = 0; i < 6; i++)
		lens[i] = strlen(ch[i]);
	loom_grammar *g;
	assert_int_equal(loom_grammar_from_choices(ch, lens, 6, &g), LOOM_OK);
	const tvocab *tvs[2] = { &small, &llama };
	walk_stats st = { 0 };
	int seen = 0;
	for (int v = 0; v < (have_llama ? 2 : 1); v++)
		for (int k = 0; k < 40; k++) {
			char *out;
			size_t len;
			walk(g, tvs[v], (size_t)k, 100, &out, &len, &st);
			int j = 0;
			while (j < 6 && strcmp(out, ch[j]))
				j++;
			if (j == 6)
				fail_msg("choice output [%s] is none of the choices", out);
			seen |= 1 << j;
			free(out);
		}
	report("choices", &st, 0);
	assert_true(__builtin_popcount((unsigned)seen) >= 4);
	loom_grammar_free(g);
}

static void json_object_walks(void **state)
{
	(void)state;
	loom_grammar *g;
	double t0 = now_s();
	assert_int_equal(loom_grammar_any_json_object(&g), LOOM_OK);
	double ct = now_s() - t0;
	const tvocab *tvs[2] = { &small, &llama };
	for (int v = 0; v < (have_llama ? 2 : 1); v++) {
		walk_stats st = { 0 };
		for (int k = 0; k < 30; k++) {
			char *out;
			size_t len;
			json_error_t e;
			walk(g, tvs[v], (size_t)k + 7, 60, &out, &len, &st);
			json_t *j = json_loadb(out, len, JSON_REJECT_DUPLICATES, &e);
			if (!j || !json_is_object(j)) {
				/* duplicate keys are allowed by the grammar: only reject other errors */
				j = json_loadb(out, len, 0, &e);
				if (!j || !json_is_object(j))
					fail_msg("json_object output is not an object: %s: [%s]", e.text, out);
			}
			json_decref(j);
			free(out);
		}
		report(v ? "llama3 json_object" : "small json_object", &st, ct);
	}
	loom_grammar_free(g);
}

/* ---- refusals ---- */

static void expect_schema_err(const char *text, loom_err code, const char *sub)
{
	json_error_t e;
	json_t *s = json_loads(text, JSON_DECODE_ANY, &e);
	if (!s)
		fail_msg("bad test JSON %s: %s", text, e.text);
	loom_grammar *g = (loom_grammar *)1;
	loom_err rc = loom_grammar_from_json_schema(s, &g);
	json_decref(s);
	if (rc != code)
		fail_msg("%s: got %s (%s), want %s", text, loom_strerror(rc), loom_errmsg(), loom_strerror(code));
	if (!rc) {
		loom_grammar_free(g);
		return;
	}
	assert_null(g);
	if (sub && !strstr(loom_errmsg(), sub))
		fail_msg("%s: message [%s] lacks [%s]", text, loom_errmsg(), sub);
}

static void schema_refusals(void **state)
{
	(void)state;
	expect_schema_err("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"object\",\"patternProperties\":{}}}}",
			  LOOM_EUNSUPPORTED, "json_schema: unsupported keyword 'patternProperties' at /properties/a");
	expect_schema_err("{\"allOf\":[{}]}", LOOM_EUNSUPPORTED, "unsupported keyword 'allOf' at (root)");
	expect_schema_err("{\"type\":\"array\",\"items\":{\"type\":\"string\",\"contentEncoding\":\"base64\"}}",
			  LOOM_EUNSUPPORTED, "'contentEncoding' at /items");
	expect_schema_err("{\"$defs\":{\"a/b\":{\"not\":{}}},\"$ref\":\"#/$defs/a~1b\"}", LOOM_EUNSUPPORTED,
			  "'not' at /$defs/a~1b");
	expect_schema_err("{\"anyOf\":[{\"type\":\"integer\"},{\"uniqueItems\":true}]}", LOOM_EUNSUPPORTED,
			  "'uniqueItems' at /anyOf/1");
	expect_schema_err("{\"type\":\"number\",\"minimum\":0.5}", LOOM_EUNSUPPORTED, "'minimum' on a number");
	expect_schema_err("{\"type\":\"string\",\"format\":\"ipv4\"}", LOOM_EUNSUPPORTED, "format 'ipv4'");
	expect_schema_err("{\"type\":\"string\",\"pattern\":\"(a)\\\\1\"}", LOOM_EUNSUPPORTED, "backreference");
	expect_schema_err("{\"type\":\"string\",\"pattern\":\"a(?=b)\"}", LOOM_EUNSUPPORTED, "lookaround");
	expect_schema_err("{\"$ref\":\"#/$defs/missing\"}", LOOM_EINVAL, "does not resolve");
	expect_schema_err("{\"$ref\":\"http://x/y\"}", LOOM_EUNSUPPORTED, "$ref");
	expect_schema_err("{\"type\":\"strin\"}", LOOM_EINVAL, "bad type");
	expect_schema_err("{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", LOOM_EINVAL, "no integer");
	expect_schema_err("{\"type\":\"array\",\"minItems\":100000}", LOOM_EUNSUPPORTED, "'minItems' over");
	expect_schema_err("{\"enum\":[1,2],\"type\":\"string\"}", LOOM_EINVAL, "no enum value");
	expect_schema_err("false", LOOM_EINVAL, "admits no value");
	expect_schema_err("{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", LOOM_EUNSUPPORTED,
			  "required property 'b'");
}

static void expect_regex_err(const char *re, loom_err code, const char *sub)
{
	loom_grammar *g = (loom_grammar *)1;
	loom_err rc = loom_grammar_from_regex(re, strlen(re), &g);
	if (rc != code)
		fail_msg("%s: got %s (%s), want %s", re, loom_strerror(rc), loom_errmsg(), loom_strerror(code));
	assert_null(g);
	if (sub && !strstr(loom_errmsg(), sub))
		fail_msg("%s: message [%s] lacks [%s]", re, loom_errmsg(), sub);
}

static void regex_refusals(void **state)
{
	(void)state;
	expect_regex_err("(a)\\1", LOOM_EUNSUPPORTED, "backreference at offset 4");
	expect_regex_err("a(?!b)", LOOM_EUNSUPPORTED, "lookaround");
	expect_regex_err("(?<=a)b", LOOM_EUNSUPPORTED, "lookaround");
	expect_regex_err("\\bword", LOOM_EUNSUPPORTED, "assertion");
	expect_regex_err("a^b", LOOM_EUNSUPPORTED, "anchor");
	expect_regex_err("\\p{L}", LOOM_EUNSUPPORTED, "escape");
	expect_regex_err("(ab", LOOM_EINVAL, "missing )");
	expect_regex_err("ab)", LOOM_EINVAL, "unbalanced");
	expect_regex_err("[z-a]", LOOM_EINVAL, "range");
	expect_regex_err("*a", LOOM_EINVAL, "nothing to repeat");
	expect_regex_err("a{5,2}", LOOM_EINVAL, "repetition");
	expect_regex_err("a{1001}", LOOM_ERANGE, "over 1000");
	expect_regex_err("[^\\x00-\\x{10FFFF}]", LOOM_EINVAL, NULL);
}

/* ---- hostile inputs hit limits, quickly ---- */

static void limits(void **state)
{
	(void)state;
	double t0 = now_s();
	expect_regex_err("((a{1000}){1000}){1000}", LOOM_ERANGE, "too large");
	expect_regex_err("(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((a)))))))))))))))))))))))"
			 "))))))))))))))))))))))))))))))))))))))))))))", LOOM_ERANGE, "nested");
	/* a schema nested 100 deep */
	char deep[4096] = "";
	for (int i = 0; i < 100; i++)
		strcat(deep, "{\"type\":\"array\",\"items\":");
	strcat(deep, "{}");
	for (int i = 0; i < 100; i++)
		strcat(deep, "}");
	expect_schema_err(deep, LOOM_ERANGE, "nested too deeply");
	/* huge bounded repetitions of objects */
	expect_schema_err("{\"type\":\"array\",\"maxItems\":256,\"items\":{\"type\":\"string\",\"maxLength\":1024}}",
			  LOOM_OK, NULL);
	/* left recursion through $ref compiles; the matcher's depth limit cuts it off */
	json_t *s = json_loads("{\"$defs\":{\"a\":{\"anyOf\":[{\"$ref\":\"#/$defs/a\"},{\"const\":1}]}},"
			       "\"$ref\":\"#/$defs/a\"}", 0, NULL);
	loom_grammar *g;
	assert_int_equal(loom_grammar_from_json_schema(s, &g), LOOM_OK);
	json_decref(s);
	loom_grammar_matcher *m;
	uint32_t *mask = calloc(((size_t)small.n + 31) / 32, 4);
	loom_err rc = loom_grammar_matcher_create(g, small.v, &m);
	if (rc == LOOM_OK) {
		assert_int_equal(loom_grammar_matcher_fill_mask(m, mask), LOOM_OK);
		assert_true(mask['1' >> 5] >> ('1' & 31) & 1);
		assert_int_equal(loom_grammar_matcher_accept(m, '1'), LOOM_OK);
		assert_true(loom_grammar_matcher_can_end(m));
		loom_grammar_matcher_free(m);
	} else {
		assert_int_equal(rc, LOOM_ERANGE);
	}
	loom_grammar_free(g);
	free(mask);
	double dt = now_s() - t0;
	print_message("limits: %.2f s\n", dt);
	assert_true(dt < 20);
}

/* ---- details ---- */

static void accept_and_done(void **state)
{
	(void)state;
	loom_grammar *g;
	assert_int_equal(loom_grammar_from_regex("ab|abc", 6, &g), LOOM_OK);
	loom_grammar_matcher *m;
	assert_int_equal(loom_grammar_matcher_create(g, small.v, &m), LOOM_OK);
	assert_int_equal(loom_grammar_matcher_accept(m, 'b'), LOOM_EINVAL);
	assert_int_equal(loom_grammar_matcher_accept(m, small.eos), LOOM_EINVAL);
	assert_int_equal(loom_grammar_matcher_accept(m, small.n - 2), LOOM_EINVAL); /* special */
	assert_int_equal(loom_grammar_matcher_accept(m, -1), LOOM_EINVAL);
	assert_int_equal(loom_grammar_matcher_accept(m, small.n), LOOM_EINVAL);
	assert_int_equal(loom_grammar_matcher_accept(m, 256 + 21), LOOM_OK); /* "ab" */
	assert_true(loom_grammar_matcher_can_end(m));
	assert_false(loom_grammar_matcher_done(m)); /* "c" may follow */
	assert_int_equal(loom_grammar_matcher_accept(m, 'c'), LOOM_OK);
	assert_true(loom_grammar_matcher_done(m));
	assert_int_equal(loom_grammar_matcher_accept(m, 'c'), LOOM_EINVAL);
	assert_int_equal(loom_grammar_matcher_accept(m, small.eos), LOOM_OK);
	assert_int_equal(loom_grammar_matcher_accept(m, small.eos), LOOM_EINVAL);
	loom_grammar_matcher_free(m);
	loom_grammar_free(g);
}

/* Masks agree with accept: every id in the mask is accepted by a fresh
 * matcher at the same point, every id outside refused. */
static void mask_matches_accept(void **state)
{
	(void)state;
	json_t *s = json_loads(schemas[2], 0, NULL);
	loom_grammar *g;
	assert_int_equal(loom_grammar_from_json_schema(s, &g), LOOM_OK);
	json_decref(s);
	const char *prefix = "{\"tags\": [\"red\", 1, nu";
	loom_grammar_matcher *m;
	uint32_t *mask = calloc(((size_t)small.n + 31) / 32, 4);
	assert_int_equal(loom_grammar_matcher_create(g, small.v, &m), LOOM_OK);
	for (size_t i = 0; prefix[i]; i++) {
		assert_int_equal(loom_grammar_matcher_fill_mask(m, mask), LOOM_OK);
		for (int32_t id = 0; id < small.n; id++) {
			loom_grammar_matcher *m2;
			assert_int_equal(loom_grammar_matcher_create(g, small.v, &m2), LOOM_OK);
			for (size_t j = 0; j < i; j++)
				assert_int_equal(loom_grammar_matcher_accept(m2, (unsigned char)prefix[j]), LOOM_OK);
			bool in = mask[id >> 5] >> (id & 31) & 1;
			loom_err rc = loom_grammar_matcher_accept(m2, id);
			if (in != (rc == LOOM_OK))
				fail_msg("after %zu bytes, id %d: mask %d, accept %s", i, id, in, loom_strerror(rc));
			loom_grammar_matcher_free(m2);
		}
		assert_int_equal(loom_grammar_matcher_accept(m, (unsigned char)prefix[i]), LOOM_OK);
	}
	loom_grammar_matcher_free(m);
	loom_grammar_free(g);
	free(mask);
}

static void alloc_failures(void **state)
{
	(void)state;
	json_t *s = json_loads(schemas[3], 0, NULL);
	int ok = 0;
	for (long n = 1; n < 400; n += 3) {
		loom_grammar *g = NULL;
		loom_grammar_matcher *m = NULL;
		uint32_t mask[(300 + 31) / 32 + 8];
		loom_alloc_fail_after(n);
		loom_err rc = loom_grammar_from_json_schema(s, &g);
		if (!rc)
			rc = loom_grammar_matcher_create(g, small.v, &m);
		if (!rc)
			rc = loom_grammar_matcher_fill_mask(m, mask);
		if (!rc)
			rc = loom_grammar_matcher_accept(m, '{');
		loom_alloc_fail_reset();
		if (rc != LOOM_OK && rc != LOOM_ENOMEM)
			fail_msg("allocation %ld failing: %s: %s", n, loom_strerror(rc), loom_errmsg());
		ok += rc == LOOM_OK;
		loom_grammar_matcher_free(m);
		loom_grammar_free(g);
	}
	assert_true(ok > 0);
	json_decref(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(accept_and_done),
		cmocka_unit_test(mask_matches_accept),
		cmocka_unit_test(schema_refusals),
		cmocka_unit_test(regex_refusals),
		cmocka_unit_test(limits),
		cmocka_unit_test(alloc_failures),
		cmocka_unit_test(choice_walks),
		cmocka_unit_test(regex_walks),
		cmocka_unit_test(json_object_walks),
		cmocka_unit_test(json_schema_small_vocab),
		cmocka_unit_test(json_schema_length_cap),
		cmocka_unit_test(json_schema_llama3),
		cmocka_unit_test(json_schema_wrapped),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
