/*
 * bench/engine/grammar_bench.c — grammar-bench: the cost of structured
 * outputs (common/grammar.h) on a real vocabulary.
 *
 * Usage: grammar-bench [tokenizer.json] [outputs per schema]
 * (default ../shared/fixtures/llama3.2-1b-instruct/tokenizer.json, 20).
 * Workload: the vocabulary is built once (timed); then for each schema of
 * a fixed set (JSON Schemas of the shapes tool calls and extraction use,
 * any JSON object, a regex) the compile time (median of 20) and, over
 * `outputs` generated outputs (random walks: at each step fill_mask, a
 * random allowed token, EOS as soon as allowed with p = 1/2, tokens starting
 * with " } ] preferred after 40 steps), every fill_mask call is timed. The
 * first output runs on an empty mask cache (a fresh grammar: what the first
 * request with a new schema sees), the others on the cache it left (what
 * later requests with the same schema see). Reports mean / p50 / p99 / max
 * per step for both, in ms.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/grammar.h"
#include "common/tokenizer.h"

static double bn_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bn_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

typedef struct bn_times {
	double *v;
	size_t n, cap;
} bn_times;

static void bn_add(bn_times *t, double x)
{
	if (t->n == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 1024;
		t->v = realloc(t->v, t->cap * sizeof *t->v);
		if (!t->v)
			abort();
	}
	t->v[t->n++] = x;
}

static void bn_print(const char *name, const char *what, bn_times *t)
{
	if (!t->n)
		return;
	qsort(t->v, t->n, sizeof *t->v, bn_cmp);
	double sum = 0;
	for (size_t i = 0; i < t->n; i++)
		sum += t->v[i];
	size_t p99 = (size_t)ceil(0.99 * (double)t->n) - 1;
	printf("  %-12s %-5s steps %6zu  mean %7.3f  p50 %7.3f  p99 %7.3f  max %7.3f ms\n", name, what, t->n,
	       sum / (double)t->n * 1e3, t->v[t->n / 2] * 1e3, t->v[p99] * 1e3, t->v[t->n - 1] * 1e3);
}

static const struct {
	const char *name, *kind, *text;
} bn_cases[] = {
	{ "tool_call", "schema",
	  "{\"type\":\"object\",\"properties\":{\"name\":{\"enum\":[\"get_weather\",\"search\",\"send_mail\"]},"
	  "\"arguments\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"units\":{\"enum\":"
	  "[\"C\",\"F\"]},\"days\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":14}},\"required\":[\"city\"]}},"
	  "\"required\":[\"name\",\"arguments\"],\"additionalProperties\":false}" },
	{ "extraction", "schema",
	  "{\"type\":\"object\",\"properties\":{\"people\":{\"type\":\"array\",\"items\":{\"type\":\"object\","
	  "\"properties\":{\"name\":{\"type\":\"string\"},\"age\":{\"type\":[\"integer\",\"null\"]},\"email\":"
	  "{\"type\":\"string\",\"format\":\"email\"},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},"
	  "\"maxItems\":4}},\"required\":[\"name\",\"age\"]},\"maxItems\":5},\"summary\":{\"type\":\"string\","
	  "\"maxLength\":200},\"score\":{\"type\":\"number\"},\"done\":{\"type\":\"boolean\"}},"
	  "\"required\":[\"people\",\"summary\",\"score\",\"done\"]}" },
	{ "recursive", "schema",
	  "{\"$defs\":{\"node\":{\"type\":\"object\",\"properties\":{\"label\":{\"type\":\"string\"},\"kids\":"
	  "{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/node\"},\"maxItems\":3}},\"required\":[\"label\"]}},"
	  "\"$ref\":\"#/$defs/node\"}" },
	{ "json_object", "object", NULL },
	{ "regex_date", "regex", "\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}(:\\d{2})?Z" },
};

static uint64_t bn_rng = 88172645463325252ull;
static uint32_t bn_rand(void)
{
	bn_rng ^= bn_rng << 13;
	bn_rng ^= bn_rng >> 7;
	bn_rng ^= bn_rng << 17;
	return (uint32_t)(bn_rng >> 11);
}

static loom_err bn_compile(int k, loom_grammar **g)
{
	if (!strcmp(bn_cases[k].kind, "object"))
		return loom_grammar_any_json_object(g);
	if (!strcmp(bn_cases[k].kind, "regex"))
		return loom_grammar_from_regex(bn_cases[k].text, strlen(bn_cases[k].text), g);
	json_t *s = json_loads(bn_cases[k].text, 0, NULL);
	loom_err rc = loom_grammar_from_json_schema(s, g);
	json_decref(s);
	return rc;
}

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "../shared/fixtures/llama3.2-1b-instruct/tokenizer.json";
	int outputs = argc > 2 ? atoi(argv[2]) : 20;
	loom_tok *t;
	if (loom_tok_load(path, &t)) {
		fprintf(stderr, "grammar-bench: %s: %s\n", path, loom_errmsg());
		return 1;
	}
	int32_t n = loom_tok_n_vocab(t);
	const char **bytes = calloc((size_t)n, sizeof *bytes);
	size_t *lens = calloc((size_t)n, sizeof *lens);
	int32_t eos[2];
	int n_eos = 0;
	for (int32_t id = 0; id < n; id++) {
		const char *p;
		size_t len;
		if (loom_tok_is_special(t, id) || !loom_tok_id_bytes(t, id, &p, &len))
			continue;
		bytes[id] = p;
		lens[id] = len;
	}
	const char *eos_names[] = { "<|eot_id|>", "<|end_of_text|>", "</s>", "<|endoftext|>", "<|im_end|>" };
	for (int i = 0; i < 5 && n_eos < 2; i++)
		if (loom_tok_id(t, eos_names[i]) >= 0)
			eos[n_eos++] = loom_tok_id(t, eos_names[i]);
	loom_grammar_vocab *v;
	double t0 = bn_now();
	if (!n_eos || loom_grammar_vocab_create(bytes, lens, n, eos, n_eos, &v)) {
		fprintf(stderr, "grammar-bench: vocab: %s\n", loom_errmsg());
		return 1;
	}
	printf("grammar-bench: %s: %d ids, vocab built in %.1f ms\n", path, n, (bn_now() - t0) * 1e3);
	uint32_t *mask = calloc(((size_t)n + 31) / 32, 4);
	int32_t *allowed = malloc((size_t)n * sizeof *allowed), *closing = malloc((size_t)n * sizeof *closing);
	for (size_t k = 0; k < sizeof bn_cases / sizeof *bn_cases; k++) {
		double ct[20];
		loom_grammar *g = NULL;
		for (int r = 0; r < 20; r++) {
			loom_grammar_free(g);
			double a = bn_now();
			if (bn_compile((int)k, &g)) {
				fprintf(stderr, "grammar-bench: %s: %s\n", bn_cases[k].name, loom_errmsg());
				return 1;
			}
			ct[r] = bn_now() - a;
		}
		qsort(ct, 20, sizeof *ct, bn_cmp);
		bn_times cold = { 0 }, warm = { 0 };
		size_t out_bytes = 0;
		for (int o = 0; o < outputs; o++) {
			loom_grammar_matcher *m;
			if (loom_grammar_matcher_create(g, v, &m))
				return 1;
			for (int step = 0; step < 4000; step++) {
				double a = bn_now();
				if (loom_grammar_matcher_fill_mask(m, mask)) {
					fprintf(stderr, "grammar-bench: fill_mask: %s\n", loom_errmsg());
					return 1;
				}
				bn_add(o ? &warm : &cold, bn_now() - a);
				int32_t na = 0, nc = 0;
				bool can_end = false;
				for (int32_t id = 0; id < n; id++) {
					if (!(mask[id >> 5] >> (id & 31) & 1))
						continue;
					if (id == eos[0] || (n_eos > 1 && id == eos[1])) {
						can_end = true;
						continue;
					}
					allowed[na++] = id;
					if (lens[id] && strchr("\"}]", bytes[id][0]) && bytes[id][0])
						closing[nc++] = id;
				}
				int32_t pick = can_end && (!na || bn_rand() % 2) ? eos[0]
					       : nc && (step >= 40 ? bn_rand() % 4 != 0 : bn_rand() % 4 == 0)
						       ? closing[bn_rand() % (uint32_t)nc]
						       : allowed[bn_rand() % (uint32_t)na];
				if (loom_grammar_matcher_accept(m, pick))
					return 1;
				if (pick == eos[0])
					break;
				out_bytes += lens[pick];
			}
			loom_grammar_matcher_free(m);
		}
		printf("%s (%s): compile median %.3f ms (min %.3f), %d outputs, %zu bytes\n", bn_cases[k].name,
		       bn_cases[k].kind, ct[10] * 1e3, ct[0] * 1e3, outputs, out_bytes);
		bn_print(bn_cases[k].name, "cold", &cold);
		bn_print(bn_cases[k].name, "warm", &warm);
		free(cold.v);
		free(warm.v);
		loom_grammar_free(g);
	}
	free(mask);
	free(allowed);
	free(closing);
	free(bytes);
	free(lens);
	loom_grammar_vocab_free(v);
	loom_tok_free(t);
	return 0;
}
