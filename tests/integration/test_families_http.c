/*
 * tests/integration/test_families_http.c — the model families through the
 * real HTTP API: one worker serves a random Llama 3 (llama3 rope scaling,
 * the real Llama 3 tokenizer and chat template), a Qwen2.5 (q/k/v biases,
 * the real Qwen2.5 tokenizer and template), a Qwen3 (q/k norms, head_dim !=
 * hidden/heads, Qwen3's template), a Mistral (a 16-token sliding window,
 * the real Mistral tokenizer and template) and a Gemma 2 model (its
 * template; a tokenizer loom-mkmodel trains) at once, each with a PEFT
 * adapter of every target. Mixed concurrent greedy requests must give the
 * float64 reference's tokens (tests/support/ref_llm.c, written from the
 * Hugging Face modeling code), and /tokenize with messages must give the
 * ids of Debian's python3-jinja2 rendering of the model's own template
 * (tests/common/jinja_oracle.py, configured as transformers does).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tests/support/harness.h"
#include "tests/support/ref_llm.h"

#define N_MODELS 5
#define PROMPT 40 /* crosses llama3's original context of 32 */
#define GEN 6

typedef struct fam {
	const char *name, *family, *tok_json, *tok_cfg, *extra;
	char dir[512], adir[512];
} fam;

static fam fams[N_MODELS] = {
	{ "l3", "llama3", "fixtures/llama3.2-1b-instruct/tokenizer.json",
	  "fixtures/llama3.2-1b-instruct/tokenizer_config.json", "--tied", "", "" },
	{ "q25", "qwen2", "fixtures/qwen2.5-0.5b-instruct/tokenizer.json",
	  "fixtures/qwen2.5-0.5b-instruct/tokenizer_config.json", "--tied", "", "" },
	{ "q3", "qwen3", "fixtures/qwen2.5-0.5b-instruct/tokenizer.json",
	  "fixtures/qwen3-0.6b/tokenizer_config.json", "", "", "" },
	{ "mi", "mistral", "fixtures/mistral-7b-instruct-v0.2/tokenizer.json",
	  "fixtures/mistral-7b-instruct-v0.2/tokenizer_config.json", "", "", "" },
	/* Gemma's 256k tokenizer.json is not in ../shared: loom-mkmodel trains one */
	{ "g2", "gemma2", NULL, "fixtures/gemma-2-2b-it/tokenizer_config.json", "", "", "" },
};

static lt_stack stack;
static char *tmp;

static int setup(void **state)
{
	(void)state;
	static char margs[N_MODELS][600], aargs[N_MODELS][600];
	const char *models[N_MODELS + 1];
	const char *extra[2 * N_MODELS + 2];
	int ne = 0;
	tmp = lt_tmpdir("families-http");
	for (int i = 0; i < N_MODELS; i++) {
		fam *f = &fams[i];
		snprintf(f->dir, sizeof f->dir, "%s/%s", tmp, f->name);
		snprintf(f->adir, sizeof f->adir, "%s/%s-lora", tmp, f->name);
		char tj[600] = "", tc[512];
		if (f->tok_json)
			snprintf(tj, sizeof tj, "--tokenizer-json %s", lt_shared_path(f->tok_json));
		snprintf(tc, sizeof tc, "%s", lt_shared_path(f->tok_cfg));
		if (lt_sh("%s model --out %s --family %s --hidden 64 --ffn 96 --layers 2 --heads 4 "
			  "--kv-heads 2 --ctx 512 --seed %d %s %s%s%s >/dev/null",
			  lt_bin_path("loom-mkmodel"), f->dir, f->family, 11 + i, f->extra, tj,
			  f->tok_json ? " --tokenizer-config " : "", f->tok_json ? tc : "") ||
		    (!f->tok_json && lt_sh("cp %s %s/", tc, f->dir)) ||
		    lt_sh("%s adapter --model %s --out %s --rank 4 --alpha 8 --seed %d "
			  "--targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj "
			  ">/dev/null",
			  lt_bin_path("loom-mkmodel"), f->dir, f->adir, 21 + i))
			return -1;
		snprintf(margs[i], sizeof margs[i], "%s=%s", f->name, f->dir);
		snprintf(aargs[i], sizeof aargs[i], "%s-lora=%s@%s", f->name, f->adir, f->name);
		models[i] = margs[i];
		extra[ne++] = "--adapter";
		extra[ne++] = aargs[i];
	}
	models[N_MODELS] = NULL;
	extra[ne++] = "--no-slo";
	extra[ne] = NULL;
	return lt_stack_start(&stack, models, 1, extra);
}

static int teardown(void **state)
{
	(void)state;
	lt_stack_stop(&stack);
	lt_sh("rm -rf '%s'", tmp);
	loom_free(tmp);
	return 0;
}

static json_t *post(const char *path, const char *body, long *status)
{
	char url[256];
	lt_resp r;
	snprintf(url, sizeof url, "%s%s", stack.url, path);
	assert_int_equal(lt_http("POST", url, body, NULL, 120000, &r), 0);
	*status = r.status;
	json_t *j = json_loads(r.body, 0, NULL);
	if (!j || r.status != 200)
		fprintf(stderr, "%s -> %ld: %s\n", path, r.status, r.body);
	lt_resp_free(&r);
	assert_non_null(j);
	return j;
}

/* ---- mixed concurrent greedy requests vs the reference ---- */

typedef struct job {
	int fam;
	int lora;
	int32_t prompt[PROMPT];
	int32_t got[GEN];
	int n_got;
	long status;
} job;

static void *run_job(void *arg)
{
	job *j = arg;
	char body[4096], url[256];
	int at = snprintf(body, sizeof body, "{\"model\":\"%s%s\",\"prompt\":[", fams[j->fam].name,
			  j->lora ? "-lora" : "");
	for (int i = 0; i < PROMPT; i++)
		at += snprintf(body + at, sizeof body - at, "%s%d", i ? "," : "", j->prompt[i]);
	snprintf(body + at, sizeof body - at, "],\"max_tokens\":%d,\"temperature\":0,"
		 "\"ignore_eos\":true,\"return_token_ids\":true}", GEN);
	snprintf(url, sizeof url, "%s/v1/completions", stack.url);
	lt_resp r;
	if (lt_http("POST", url, body, NULL, 120000, &r) != 0)
		return NULL;
	j->status = r.status;
	json_t *root = json_loads(r.body, 0, NULL);
	json_t *ids = json_object_get(json_array_get(json_object_get(root, "choices"), 0),
				      "token_ids");
	size_t i;
	json_t *v;
	json_array_foreach(ids, i, v)
		if (i < GEN)
			j->got[j->n_got++] = (int32_t)json_integer_value(v);
	if (r.status != 200)
		fprintf(stderr, "job %s%s: %ld %s\n", fams[j->fam].name, j->lora ? "-lora" : "",
			r.status, r.body);
	json_decref(root);
	lt_resp_free(&r);
	return NULL;
}

/* Loom's tokens against the reference's argmax after the same prefix. A
 * differing token is accepted only at a near-tie of the reference (gap
 * below 1e-4 of the logits' scale), after which the sequences may part. */
static void check_job(const job *j)
{
	const fam *f = &fams[j->fam];
	ref_llm *r = NULL;
	if (ref_llm_load(f->dir, j->lora ? f->adir : NULL, &r))
		fail_msg("reference %s: %s", f->name, ref_llm_errmsg());
	int V = ref_llm_vocab(r), n = PROMPT + GEN;
	int32_t seq[PROMPT + GEN];
	memcpy(seq, j->prompt, sizeof j->prompt);
	memcpy(seq + PROMPT, j->got, sizeof j->got);
	double *lg = malloc(sizeof(double) * (size_t)n * V);
	assert_non_null(lg);
	assert_int_equal(ref_llm_forward(r, seq, n, lg), 0);
	for (int k = 0; k < GEN; k++) {
		const double *row = lg + (size_t)(PROMPT - 1 + k) * V;
		int best = 0;
		double scale = 0;
		for (int v = 0; v < V; v++) {
			if (row[v] > row[best])
				best = v;
			scale = fmax(scale, fabs(row[v]));
		}
		if (j->got[k] == best)
			continue;
		double gap = row[best] - row[j->got[k]];
		if (gap > 1e-4 * scale)
			fail_msg("%s%s: token %d is %d, the reference's greedy token is %d (gap %g)",
				 f->name, j->lora ? "-lora" : "", k, j->got[k], best, gap);
		break; /* a near-tie: the rest follows another path */
	}
	free(lg);
	ref_llm_free(r);
}

static void test_mixed_greedy(void **state)
{
	(void)state;
	enum { N_JOBS = 2 * N_MODELS * 2 };
	job jobs[N_JOBS];
	pthread_t th[N_JOBS];
	unsigned seed = 7;
	memset(jobs, 0, sizeof jobs);
	for (int i = 0; i < N_JOBS; i++) {
		jobs[i].fam = i % N_MODELS;
		jobs[i].lora = (i / N_MODELS) % 2;
		for (int t = 0; t < PROMPT; t++)
			jobs[i].prompt[t] = (int32_t)(rand_r(&seed) % 500); /* every vocab */
	}
	for (int i = 0; i < N_JOBS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, run_job, &jobs[i]), 0);
	for (int i = 0; i < N_JOBS; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < N_JOBS; i++) {
		assert_int_equal(jobs[i].status, 200);
		assert_int_equal(jobs[i].n_got, GEN);
	}
	for (int i = 0; i < N_JOBS; i++)
		check_job(&jobs[i]);
	/* the adapters change the output (the test would see one ignored) */
	int differ = 0;
	for (int i = 0; i < N_MODELS; i++)
		differ += memcmp(jobs[i].got, jobs[i + N_MODELS].got, sizeof jobs[i].got) != 0;
	assert_true(differ >= 1);
}

/* ---- chat templates: /tokenize with messages = the oracle's rendering ---- */

/* Mistral's and Gemma's templates refuse a system turn. */
static const char *conversation_nosys =
	"[{\"role\":\"user\",\"content\":\"Capital of France? \\u00e9t\\u00e9\"},"
	"{\"role\":\"assistant\",\"content\":\"Paris.\"},"
	"{\"role\":\"user\",\"content\":\" And of Japan? \"}]";

static const char *conversation =
	"[{\"role\":\"system\",\"content\":\"You answer in one word.\"},"
	"{\"role\":\"user\",\"content\":\"Capital of France? \\u00e9t\\u00e9 \\ud83d\\ude00\"},"
	"{\"role\":\"assistant\",\"content\":\"Paris.\"},"
	"{\"role\":\"user\",\"content\":\"And of Japan?\"}]";

/* Renders fam f's template (tokenizer_config.json's chat_template) with the
 * oracle; returns the text (malloc'ed). */
static char *oracle_render(const fam *f, const char *messages, const char *kwargs)
{
	char tpl[600], ctx[600], out[600];
	snprintf(tpl, sizeof tpl, "%s/%s.jinja", tmp, f->name);
	snprintf(ctx, sizeof ctx, "%s/%s.ctx.json", tmp, f->name);
	snprintf(out, sizeof out, "%s/%s.out", tmp, f->name);
	json_t *tc = json_load_file(lt_shared_path(f->tok_cfg), JSON_DECODE_INT_AS_REAL, NULL);
	assert_non_null(tc);
	FILE *fp = fopen(tpl, "w");
	assert_non_null(fp);
	fputs(json_string_value(json_object_get(tc, "chat_template")), fp);
	fclose(fp);
	json_t *c = json_loads(kwargs, 0, NULL);
	json_t *bos = json_object_get(tc, "bos_token"), *eos = json_object_get(tc, "eos_token");
	json_object_set_new(c, "messages", json_loads(messages, 0, NULL));
	json_object_set_new(c, "add_generation_prompt", json_true());
	json_object_set_new(c, "bos_token", json_string(json_is_string(bos) ? json_string_value(bos)
									    : ""));
	json_object_set_new(c, "eos_token", json_string(json_is_string(eos) ? json_string_value(eos)
									    : ""));
	assert_int_equal(json_dump_file(c, ctx, 0), 0);
	json_decref(c);
	json_decref(tc);
	int rc = lt_sh("/usr/bin/python3 tests/common/jinja_oracle.py %s %s %s", tpl, ctx, out);
	if (rc == 4 << 8 || rc == 4)
		return NULL; /* no python3-jinja2 */
	assert_int_equal(rc, 0);
	fp = fopen(out, "rb");
	assert_non_null(fp);
	char *text = calloc(1, 1 << 20);
	fread(text, 1, (1 << 20) - 1, fp);
	fclose(fp);
	return text;
}

static json_t *ids_of(json_t *j)
{
	json_t *t = json_object_get(j, "tokens");
	assert_true(json_is_array(t));
	return t;
}

static void test_tokenize_messages(void **state)
{
	(void)state;
	const char *kwargs = "{\"date_string\":\"26 Jul 2024\"}";
	for (int i = 0; i < N_MODELS; i++) {
		const fam *f = &fams[i];
		const char *conv = i >= 3 ? conversation_nosys : conversation;
		char *text = oracle_render(f, conv, kwargs);
		if (!text)
			skip();
		long st;
		char *body = malloc(strlen(conv) + 256);
		sprintf(body, "{\"model\":\"%s\",\"messages\":%s,\"chat_template_kwargs\":%s}", f->name,
			conv, kwargs);
		json_t *a = post("/tokenize", body, &st);
		assert_int_equal(st, 200);
		json_t *req = json_pack("{s:s,s:s,s:b}", "model", f->name, "prompt", text,
					"add_special_tokens", 0);
		char *b2 = json_dumps(req, 0);
		json_t *b = post("/tokenize", b2, &st);
		assert_int_equal(st, 200);
		if (!json_equal(ids_of(a), ids_of(b)))
			fail_msg("%s: /tokenize with messages differs from the oracle's rendering:\n%s",
				 f->name, text);
		if (i == 0) { /* Llama 3 writes <|begin_of_text|> itself, once */
			assert_int_equal(json_integer_value(json_array_get(ids_of(a), 0)), 128000);
			assert_int_not_equal(json_integer_value(json_array_get(ids_of(a), 1)), 128000);
		}
		/* a chat request sends the model exactly those ids */
		sprintf(body, "{\"model\":\"%s-lora\",\"messages\":%s,\"chat_template_kwargs\":%s,"
			"\"max_tokens\":2,\"temperature\":0}", f->name, conv, kwargs);
		json_t *c = post("/v1/chat/completions", body, &st);
		assert_int_equal(st, 200);
		assert_int_equal(json_integer_value(json_object_get(json_object_get(c, "usage"),
								    "prompt_tokens")),
				 json_array_size(ids_of(a)));
		json_decref(a), json_decref(b), json_decref(c), json_decref(req);
		free(b2), free(body), free(text);
	}
}

/* /tokenize over HTTP with the real Llama 3 and Qwen2.5 tokenizer.json
 * files gives the independent encoder's ids (tests/common/bpe_oracle.py)
 * on the whole tokenizer corpus (emoji, CJK, accents, digits, code, runs
 * of whitespace, special tokens in text). */
static void test_tokenize_corpus(void **state)
{
	(void)state;
	for (int i = 0; i < 2; i++) {
		const fam *f = &fams[i];
		char cmd[1024], line[1 << 16];
		snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/common/bpe_oracle.py --tsv %s "
			 "< tests/common/corpus_tokenizer.txt 2>/dev/null", lt_shared_path(f->tok_json));
		FILE *p = popen(cmd, "r");
		assert_non_null(p);
		int n = 0;
		while (fgets(line, sizeof line, p)) {
			char *hex = line, *want = strchr(line, '\t'), *end;
			assert_non_null(want);
			*want++ = '\0';
			if ((end = strchr(want, '\t')))
				*end = '\0';
			size_t hl = strlen(hex);
			char *text = calloc(1, hl / 2 + 1);
			for (size_t k = 0; k < hl / 2; k++)
				sscanf(hex + 2 * k, "%2hhx", (unsigned char *)&text[k]);
			json_t *ps = json_stringn(text, hl / 2); /* NUL kept; NULL if not UTF-8 */
			if (!ps) {
				free(text);
				continue;
			}
			json_t *req = json_pack("{s:s,s:o}", "model", f->name, "prompt", ps);
			char *body = json_dumps(req, 0);
			long st;
			json_t *got = post("/tokenize", body, &st);
			assert_int_equal(st, 200);
			char ids[1 << 15];
			size_t at = 0, k;
			json_t *v;
			ids[0] = '\0';
			json_array_foreach(ids_of(got), k, v)
				at += (size_t)snprintf(ids + at, sizeof ids - at, "%s%lld", k ? " " : "",
						       (long long)json_integer_value(v));
			if (strcmp(ids, want) != 0)
				fail_msg("%s: line %d: loom %s, reference %s", f->name, n, ids, want);
			json_decref(got), json_decref(req);
			free(body), free(text);
			n++;
		}
		int rc = pclose(p);
		if (n == 0 && rc != 0)
			skip(); /* no /usr/bin/python3 with regex */
		assert_true(n > 200);
	}
}

/* A template's raise_exception is a 400 naming messages; the built-in
 * styles refuse the tool role. */
static void test_template_errors(void **state)
{
	(void)state;
	long st;
	json_t *j;
	/* Llama 3.2's template raises on parallel tool calls */
	j = post("/v1/chat/completions",
		 "{\"model\":\"l3\",\"max_tokens\":1,\"messages\":["
		 "{\"role\":\"user\",\"content\":\"both?\"},{\"role\":\"assistant\",\"tool_calls\":["
		 "{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}},"
		 "{\"id\":\"b\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}]}",
		 &st);
	assert_int_equal(st, 400);
	json_t *err = json_object_get(j, "error");
	assert_string_equal(json_string_value(json_object_get(err, "param")), "messages");
	assert_non_null(strstr(json_string_value(json_object_get(err, "message")),
			       "single tool-calls"));
	json_decref(j);
	/* one tool call and its result render (arguments given as a JSON string) */
	j = post("/tokenize",
		 "{\"model\":\"l3\",\"messages\":["
		 "{\"role\":\"user\",\"content\":\"weather?\"},{\"role\":\"assistant\",\"tool_calls\":["
		 "{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
		 "\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},"
		 "{\"role\":\"tool\",\"tool_call_id\":\"a\",\"content\":\"20 C\"}]}", &st);
	assert_int_equal(st, 200);
	json_decref(j);
	/* tools reach the template: Qwen2.5's lists them in the system turn */
	j = post("/tokenize",
		 "{\"model\":\"q25\",\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}],"
		 "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
		 "\"parameters\":{\"type\":\"object\"}}}]}", &st);
	assert_int_equal(st, 200);
	json_t *with = json_incref(ids_of(j));
	json_decref(j);
	j = post("/tokenize",
		 "{\"model\":\"q25\",\"messages\":[{\"role\":\"user\",\"content\":\"weather?\"}]}",
		 &st);
	assert_true(json_array_size(with) > json_array_size(ids_of(j)) + 10);
	json_decref(with);
	json_decref(j);
	j = post("/tokenize", "{\"model\":\"g2\",\"messages\":[{\"role\":\"system\",\"content\":\"x\"},"
		 "{\"role\":\"user\",\"content\":\"y\"}]}", &st);
	assert_int_equal(st, 400);
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"),
								    "message")),
			       "System role not supported"));
	json_decref(j);
	j = post("/tokenize", "{\"model\":\"q25\",\"messages\":[],\"prompt\":\"x\"}", &st);
	assert_int_equal(st, 400);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mixed_greedy),
		cmocka_unit_test(test_tokenize_messages),
		cmocka_unit_test(test_template_errors),
		cmocka_unit_test(test_tokenize_corpus),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
