/*
 * bench/engine/loom_guided_bench.c — what structured outputs cost on the CPU
 * worker engine (issue 13 item 4): the decode step time of a batch of
 * unconstrained requests vs one where half or all of them are held to a
 * grammar, and the grammar compile time per schema.
 *
 * Model: a random loom-mkmodel model with a real tokenizer (default the
 * Llama 3.2 one, 128,256 ids, so masks cover a real vocabulary), generated
 * once into --cache. Three engines in manual mode (worker/engine.h) run
 * round-robin, one step each per round, B sequences each (8 by default,
 * 8-token random prompts, temperature 1, seeded): "base" (none guided),
 * "half" (B/2 under a guide), "all" (every one under it). The guide is an
 * array of at least 40 objects of the "nested" schema below (strings,
 * bounded integers, a pattern, nested objects: a random model stays inside
 * it for the whole run), or with --schema N one of the schemas alone.
 * A step counts when every engine emitted B tokens in it (nobody finished);
 * step times are medians, ratios paired per round (guided / base).
 * Then, per schema: compile time (median of 5), the first mask of a fresh
 * grammar (cold cache) and the vocabulary build.
 *
 * Usage: loom-guided-bench [--steps N] [--seqs B] [--threads N]
 *        [--tokenizer FILE] [--cache DIR] [--json FILE] [--smoke]
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/grammar.h"
#include "common/proto.h"
#include "common/tokenizer.h"
#include "worker/engine.h"
#include "worker/forward.h"
#include "worker/model.h"

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	if (n <= 0)
		return 0;
	qsort(v, (size_t)n, sizeof *v, cmp_d);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static const char *const schemas[] = {
	"{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":12},"
	"\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":130},\"address\":{\"type\":\"object\","
	"\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":10},\"zip\":{\"type\":\"string\","
	"\"pattern\":\"^[0-9]{5}$\"}},\"required\":[\"city\",\"zip\"]}},"
	"\"required\":[\"name\",\"age\",\"address\"],\"additionalProperties\":false}",
	"{\"type\":\"object\",\"properties\":{\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"red\","
	"\"green\",\"blue\"]},\"minItems\":2,\"maxItems\":4},\"scores\":{\"type\":\"array\",\"items\":"
	"{\"type\":\"integer\",\"minimum\":-5,\"maximum\":99},\"minItems\":1,\"maxItems\":3}},"
	"\"required\":[\"tags\",\"scores\"]}",
	"{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"event\"},\"value\":{\"anyOf\":["
	"{\"type\":\"integer\",\"minimum\":1,\"maximum\":9},{\"type\":\"boolean\"},{\"type\":\"null\"},"
	"{\"enum\":[\"low\",\"high\"]}]},\"ok\":{\"type\":\"boolean\"}},\"required\":[\"kind\",\"value\","
	"\"ok\"]}",
	"{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-[0-9]{3}$\"},"
	"\"email\":{\"type\":\"string\",\"pattern\":\"^[a-z]{1,6}@[a-z]{1,6}\\\\.com$\"},\"day\":{\"type\":"
	"\"string\",\"format\":\"date\"}},\"required\":[\"id\",\"email\",\"day\"]}",
	"{\"$defs\":{\"item\":{\"type\":\"object\",\"properties\":{\"sku\":{\"type\":\"string\","
	"\"pattern\":\"^[a-z]{3}$\"},\"qty\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":20}},"
	"\"required\":[\"sku\",\"qty\"],\"additionalProperties\":false}},\"type\":\"array\",\"items\":"
	"{\"$ref\":\"#/$defs/item\"},\"minItems\":1,\"maxItems\":3}",
};
static const char *const schema_names[] = { "nested", "arrays+enum", "anyOf", "patterns",
					    "ref-array" };
#define N_SCHEMAS 5

/* ---- engines ---- */

typedef struct scen {
	const char *name;
	wk_engine *e;
	int guided;          /* sequences under the guide */
	int items;           /* tokens emitted by the last step */
	double *ms;          /* [steps] */
	int n_ms;
} scen;

static void on_emit(void *ctx, const loom_msg *m)
{
	scen *s = ctx;
	if (m->type == LOOM_MSG_STEP)
		s->items += (int)m->u.step.n_items;
	else if (m->type == LOOM_MSG_ERROR)
		fprintf(stderr, "loom-guided-bench: %s: request %llu: %s\n", s->name,
			(unsigned long long)m->u.error.req, m->u.error.message);
}

static int start(scen *s, wk_model *m, const loom_grammar_vocab *v, int B, int max_tokens,
		 int kind, const char *text, int steps)
{
	wk_engine_opts eo = { .max_batch_tokens = 256, .max_seqs = B, .manual = true,
			      .kv_blocks = B * ((8 + max_tokens) / WK_KV_BLOCK + 2) };
	wk_model *const ms[1] = { m };
	if (wk_engine_create(ms, 1, &eo, on_emit, s, &s->e) ||
	    wk_engine_set_guide_vocab(s->e, m->name, v)) {
		fprintf(stderr, "loom-guided-bench: engine: %s\n", loom_errmsg());
		return -1;
	}
	s->ms = loom_calloc((size_t)steps, sizeof *s->ms);
	for (int i = 0; i < B; i++) {
		int32_t prompt[8];
		for (int k = 0; k < 8; k++)
			prompt[k] = 1000 + (i * 7919 + k * 104729) % 20000;
		loom_msg_submit sub = { .req = (uint64_t)i + 1, .n_prompt = 8, .prompt_ids = prompt };
		snprintf(sub.model, sizeof sub.model, "%s", m->name);
		sub.sampling = (loom_sampling){ .temperature = 1.0f, .top_p = 1.0f,
						.seed = (uint64_t)i + 7, .max_tokens = (uint32_t)max_tokens,
						.ignore_eos = true };
		if (i < s->guided) {
			sub.sampling.guide = (uint8_t)kind;
			sub.sampling.guide_text = (char *)text;
		}
		if (wk_engine_submit(s->e, &sub))
			return -1;
	}
	return 0;
}

/* ---- model ---- */

static int make_model(const char *cache, const char *tok, char *dir, size_t n)
{
	char cmd[4 * PATH_MAX], bin[PATH_MAX] = "";
	const char *env = getenv("LOOM_BIN_DIR");
	if (env && *env) {
		snprintf(bin, sizeof bin, "%s/loom-mkmodel", env);
	} else {
		ssize_t k = readlink("/proc/self/exe", bin, sizeof bin - 32);
		if (k > 0) {
			bin[k] = 0;
			char *sl = strrchr(bin, '/');
			if (sl)
				strcpy(sl, "/loom-mkmodel");
		}
	}
	snprintf(dir, n, "%s/guided-llama3", cache);
	snprintf(cmd, sizeof cmd, "test -f '%s/.done' || (mkdir -p '%s' && '%s' model --out '%s' "
		 "--family llama3 --hidden 256 --ffn 512 --layers 4 --heads 4 --kv-heads 2 --ctx 1024 "
		 "--seed 3 --tied --tokenizer-json '%s' >/dev/null && touch '%s/.done')",
		 dir, cache, bin, dir, tok, dir);
	if (system(cmd)) {
		fprintf(stderr, "loom-guided-bench: loom-mkmodel failed (%s)\n", cmd);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	int steps = 48, B = 8, threads = 1, schema = -1;
	bool smoke = false;
	const char *tok_path = "../shared/fixtures/llama3.2-1b-instruct/tokenizer.json";
	const char *cache = "build/bench-cache", *json_path = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--steps") && v)
			steps = atoi(argv[++i]);
		else if (!strcmp(a, "--seqs") && v)
			B = atoi(argv[++i]);
		else if (!strcmp(a, "--threads") && v)
			threads = atoi(argv[++i]);
		else if (!strcmp(a, "--schema") && v)
			schema = atoi(argv[++i]);
		else if (!strcmp(a, "--tokenizer") && v)
			tok_path = argv[++i];
		else if (!strcmp(a, "--cache") && v)
			cache = argv[++i];
		else if (!strcmp(a, "--json") && v)
			json_path = argv[++i];
		else if (!strcmp(a, "--smoke"))
			smoke = true;
		else {
			fprintf(stderr, "usage: loom-guided-bench [--steps N] [--seqs B] [--threads N] "
				"[--schema 0..4] [--tokenizer FILE] [--cache DIR] [--json FILE] [--smoke]\n");
			return 2;
		}
	}
	if (smoke)
		steps = 4, B = 2;
	if (B < 2 || steps < 1 || schema >= N_SCHEMAS)
		return 2;
	wk_forward_threads(threads);
	char dir[PATH_MAX];
	wk_model *m = NULL;
	loom_tok *tok = NULL;
	loom_grammar_vocab *v = NULL;
	if (make_model(cache, tok_path, dir, sizeof dir) || wk_model_load(dir, "guided", &m) ||
	    loom_tok_load(tok_path, &tok)) {
		fprintf(stderr, "loom-guided-bench: %s\n", loom_errmsg());
		return 1;
	}
	double t0 = now_ms();
	if (loom_grammar_vocab_from_tok(tok, m->cfg.vocab, m->cfg.eos_ids, m->cfg.n_eos, &v)) {
		fprintf(stderr, "loom-guided-bench: vocab: %s\n", loom_errmsg());
		return 1;
	}
	double vocab_ms = now_ms() - t0;
	char *long_schema = NULL;
	if (asprintf(&long_schema, "{\"type\":\"array\",\"items\":%s,\"minItems\":40}",
		     schemas[0]) < 0)
		return 1;
	int kind = LOOM_GUIDE_JSON_SCHEMA;
	const char *text = schema < 0 ? long_schema : schemas[schema];

	/* ---- steps ---- */
	scen sc[3] = { { .name = "base", .guided = 0 }, { .name = "half", .guided = B / 2 },
		       { .name = "all", .guided = B } };
	int max_tokens = steps + 4;
	for (int k = 0; k < 3; k++)
		if (start(&sc[k], m, v, B, max_tokens, kind, text, steps))
			return 1;
	for (int k = 0; k < 3; k++) /* the prefill step */
		wk_engine_step(sc[k].e);
	double *ratio_half = loom_calloc((size_t)steps, sizeof(double));
	double *ratio_all = loom_calloc((size_t)steps, sizeof(double));
	int n_r = 0;
	for (int r = 0; r < steps; r++) {
		double t[3];
		bool full = true;
		for (int k = 0; k < 3; k++) {
			sc[k].items = 0;
			double a = now_ms();
			wk_engine_step(sc[k].e);
			t[k] = now_ms() - a;
			full &= sc[k].items == B;
		}
		if (!full)
			continue;
		for (int k = 0; k < 3; k++)
			sc[k].ms[sc[k].n_ms++] = t[k];
		ratio_half[n_r] = t[1] / t[0];
		ratio_all[n_r++] = t[2] / t[0];
	}
	double med[3];
	for (int k = 0; k < 3; k++)
		med[k] = median(sc[k].ms, sc[k].n_ms);
	double rh = median(ratio_half, n_r), ra = median(ratio_all, n_r);
	printf("loom-guided-bench: random llama3 model (hidden 256, 4 layers, vocab %d), %d seqs, "
	       "guide %s, %d threads\n", m->cfg.vocab, B, schema < 0 ? "40+ nested" : schema_names[schema],
	       threads);
	printf("  decode step (median of %d full steps): base %.2f ms, half guided %.2f ms (x%.3f), "
	       "all guided %.2f ms (x%.3f)\n", n_r, med[0], med[1], rh, med[2], ra);
	printf("  per guided sequence per step: %.3f ms\n",
	       n_r ? (med[2] - med[0]) / B : 0.0);
	wk_guide_stats gs;
	wk_engine_guide_stats(sc[2].e, &gs);

	/* ---- compile times ---- */
	printf("  vocabulary build: %.1f ms\n", vocab_ms);
	double cms[N_SCHEMAS + 1], first[N_SCHEMAS + 1];
	uint32_t *mask = loom_malloc(((size_t)m->cfg.vocab + 31) / 32 * 4);
	for (int i = 0; i <= N_SCHEMAS; i++) {
		int kd = i < N_SCHEMAS ? LOOM_GUIDE_JSON_SCHEMA : LOOM_GUIDE_JSON_OBJECT;
		const char *tx = i < N_SCHEMAS ? schemas[i] : "";
		double c[5];
		loom_grammar *g = NULL;
		for (int k = 0; k < 5; k++) {
			loom_grammar_free(g);
			double a = now_ms();
			if (loom_grammar_from_guide(kd, tx, &g)) {
				fprintf(stderr, "loom-guided-bench: compile: %s\n", loom_errmsg());
				return 1;
			}
			c[k] = now_ms() - a;
		}
		cms[i] = median(c, 5);
		loom_grammar_matcher *gm;
		double a = now_ms();
		if (loom_grammar_matcher_create(g, v, &gm) || loom_grammar_matcher_fill_mask(gm, mask))
			return 1;
		first[i] = now_ms() - a;
		loom_grammar_matcher_free(gm);
		loom_grammar_free(g);
		printf("  compile %-12s %8.3f ms, first mask (cold) %8.3f ms\n",
		       i < N_SCHEMAS ? schema_names[i] : "json_object", cms[i], first[i]);
	}
	if (json_path) {
		FILE *f = fopen(json_path, "w");
		if (!f) {
			fprintf(stderr, "loom-guided-bench: %s: %s\n", json_path, strerror(errno));
			return 1;
		}
		fprintf(f, "{\"model\": {\"family\": \"llama3\", \"hidden\": 256, \"layers\": 4, "
			"\"vocab\": %d}, \"seqs\": %d, \"threads\": %d, \"guide\": \"%s\", "
			"\"full_steps\": %d, \"step_ms\": {\"base\": %.4f, \"half\": %.4f, \"all\": %.4f}, "
			"\"ratio\": {\"half\": %.4f, \"all\": %.4f}, \"vocab_ms\": %.3f, \"compile_ms\": {",
			m->cfg.vocab, B, threads, schema < 0 ? "40+ nested" : schema_names[schema], n_r,
			med[0], med[1], med[2], rh, ra, vocab_ms);
		for (int i = 0; i <= N_SCHEMAS; i++)
			fprintf(f, "%s\"%s\": {\"compile\": %.4f, \"first_mask\": %.4f}", i ? ", " : "",
				i < N_SCHEMAS ? schema_names[i] : "json_object", cms[i], first[i]);
		fprintf(f, "}}\n");
		fclose(f);
	}
	printf("guided_step_ratio=%.4f\n", ra);
	for (int k = 0; k < 3; k++) {
		wk_engine_destroy(sc[k].e);
		loom_free(sc[k].ms);
	}
	loom_free(mask);
	loom_free(ratio_half);
	loom_free(ratio_all);
	free(long_schema);
	loom_grammar_vocab_free(v);
	loom_tok_free(tok);
	wk_model_destroy(m);
	(void)gs;
	return 0;
}
