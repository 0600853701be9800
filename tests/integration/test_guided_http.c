/*
 * tests/integration/test_guided_http.c — structured outputs and tool calls
 * (issue 13 items 4-5) through real HTTP: a gateway and a worker on
 * loopback serving a random-weight Qwen2 model (loom-mkmodel, the real
 * Qwen2.5 tokenizer and chat template, two random adapters), whose
 * unconstrained output is noise, and stories260k (no chat template).
 *  - schemas (nested objects, arrays with min/maxItems, enums, anyOf,
 *    string patterns, integer ranges, $ref): every output of concurrent
 *    chat and completions requests, streamed and not, on the base model and
 *    both adapters, mixed with unconstrained requests, parses and validates
 *    against its schema with python3-jsonschema (tests/common/json_validate.py);
 *  - an unconstrained greedy request's tokens are the same alone and next to
 *    constrained ones;
 *  - guided_regex outputs match the regex (PCRE2), guided_choice outputs are
 *    one of the choices, json_object outputs are JSON objects;
 *  - tool_choice required / named: message.tool_calls (and streamed
 *    delta.tool_calls) whose arguments validate against the function's
 *    parameters, finish_reason tool_calls; auto: a tool call written by the
 *    model (forced here with guided_regex) is parsed, streamed and not;
 *  - refusals: two guides, a schema or regex the grammar refuses, a bad
 *    response_format, tool_choice required on a model without tool syntax,
 *    a named function not in tools.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

static lt_stack stack;
static char *tmp;

static int setup(void **state)
{
	(void)state;
	static char marg[600], sarg[600], a1[600], a2[600], dir[512];
	char sdir[512];
	tmp = lt_tmpdir("guided-http");
	snprintf(dir, sizeof dir, "%s/q", tmp);
	if (!realpath(lt_shared_path("models/stories260k"), sdir))
		return -1;
	if (lt_sh("%s model --out %s --family qwen2 --hidden 64 --ffn 96 --layers 2 --heads 4 "
		  "--kv-heads 2 --ctx 2048 --seed 7 --tied --tokenizer-json %s --tokenizer-config %s "
		  ">/dev/null", lt_bin_path("loom-mkmodel"), dir,
		  lt_shared_path("fixtures/qwen2.5-0.5b-instruct/tokenizer.json"),
		  lt_shared_path("fixtures/qwen2.5-0.5b-instruct/tokenizer_config.json")) ||
	    lt_sh("%s adapter --model %s --out %s/a1 --rank 4 --alpha 8 --seed 3 >/dev/null && "
		  "%s adapter --model %s --out %s/a2 --rank 8 --alpha 16 --seed 4 "
		  "--targets q_proj,v_proj,down_proj >/dev/null",
		  lt_bin_path("loom-mkmodel"), dir, tmp, lt_bin_path("loom-mkmodel"), dir, tmp))
		return -1;
	snprintf(marg, sizeof marg, "q=%s", dir);
	snprintf(sarg, sizeof sarg, "stories=%s", sdir);
	snprintf(a1, sizeof a1, "q-a1=%s/a1@q", tmp);
	snprintf(a2, sizeof a2, "q-a2=%s/a2@q", tmp);
	const char *models[] = { marg, sarg, NULL };
	const char *extra[] = { "--adapter", a1, "--adapter", a2, "--no-slo", NULL };
	return lt_stack_start(&stack, models, 1, extra);
}

static int teardown(void **state)
{
	(void)state;
	lt_stack_stop(&stack);
	lt_sh("rm -rf '%s'", tmp);
	return 0;
}

/* ---- HTTP ---- */

typedef struct call {
	char path[32];
	char *body;          /* request (owned) */
	long status;
	char *resp;          /* response body (owned) */
} call;

static void do_call(call *c)
{
	char url[256];
	lt_resp r;
	snprintf(url, sizeof url, "%s%s", stack.url, c->path);
	if (lt_http("POST", url, c->body, NULL, 120000, &r)) {
		c->status = 0;
		c->resp = strdup("");
		return;
	}
	c->status = r.status;
	c->resp = strdup(r.body ? r.body : "");
	lt_resp_free(&r);
}

static void *call_main(void *arg)
{
	do_call(arg);
	return NULL;
}

/* Runs n calls at once. */
static void run_all(call *cs, int n)
{
	pthread_t *t = calloc((size_t)n, sizeof *t);
	for (int i = 0; i < n; i++)
		assert_int_equal(pthread_create(&t[i], NULL, call_main, &cs[i]), 0);
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	free(t);
}

static void call_free(call *c)
{
	free(c->body);
	free(c->resp);
	memset(c, 0, sizeof *c);
}

static json_t *post(const char *path, const char *body, long *status)
{
	call c = { 0 };
	snprintf(c.path, sizeof c.path, "%s", path);
	c.body = strdup(body);
	do_call(&c);
	*status = c.status;
	json_t *j = json_loads(c.resp, 0, NULL);
	if (!j)
		fprintf(stderr, "not JSON (%ld): %s\n", c.status, c.resp);
	call_free(&c);
	assert_non_null(j);
	return j;
}

/* A streamed response: the concatenated content / text, the finish reason,
 * the ids (return_token_ids) and the tool calls of delta.tool_calls. */
typedef struct streamed {
	char text[65536];
	size_t len;
	char finish[32];
	json_t *tool_calls;  /* array (owned) */
	int32_t ids[4096];
	int n_ids;
} streamed;

static void parse_stream(const char *body, streamed *s)
{
	memset(s, 0, sizeof *s);
	s->tool_calls = json_array();
	for (const char *p = body; (p = strstr(p, "data: ")); ) {
		p += 6;
		const char *end = strstr(p, "\n\n");
		if (!end)
			break;
		if (!strncmp(p, "[DONE]", 6))
			break;
		json_t *j = json_loadb(p, (size_t)(end - p), 0, NULL);
		assert_non_null(j);
		json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
		if (ch) {
			json_t *d = json_object_get(ch, "delta");
			json_t *t = d ? json_object_get(d, "content") : json_object_get(ch, "text");
			if (json_is_string(t)) {
				memcpy(s->text + s->len, json_string_value(t), json_string_length(t));
				s->len += json_string_length(t);
			}
			json_t *tc = d ? json_object_get(d, "tool_calls") : NULL;
			size_t i;
			json_t *x;
			json_array_foreach(tc, i, x)
				json_array_append(s->tool_calls, x);
			json_t *f = json_object_get(ch, "finish_reason");
			if (json_is_string(f))
				snprintf(s->finish, sizeof s->finish, "%s", json_string_value(f));
			json_t *ids = json_object_get(ch, "token_ids");
			json_array_foreach(ids, i, x)
				s->ids[s->n_ids++] = (int32_t)json_integer_value(x);
		}
		json_decref(j);
		p = end;
	}
	s->text[s->len] = '\0';
}

/* The output text (chat content or completions text) and finish of a
 * non-streamed response (or of a stream). Returns a malloc'ed string. */
static char *output_of(const call *c, bool stream, char *finish, size_t fcap)
{
	if (c->status != 200)
		fail_msg("HTTP %ld for %s: %s", c->status, c->body, c->resp);
	if (stream) {
		streamed *s = malloc(sizeof *s);
		parse_stream(c->resp, s);
		snprintf(finish, fcap, "%s", s->finish);
		char *t = strdup(s->text);
		json_decref(s->tool_calls);
		free(s);
		return t;
	}
	json_t *j = json_loads(c->resp, 0, NULL);
	assert_non_null(j);
	json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
	json_t *m = json_object_get(ch, "message");
	json_t *t = m ? json_object_get(m, "content") : json_object_get(ch, "text");
	snprintf(finish, fcap, "%s", json_string_value(json_object_get(ch, "finish_reason")));
	char *out = strdup(json_is_string(t) ? json_string_value(t) : "");
	json_decref(j);
	return out;
}

/* ---- the independent validator ---- */

static FILE *cases_open(char *path, size_t n, const char *tag)
{
	snprintf(path, n, "%s/%s.jsonl", tmp, tag);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	return f;
}

static void case_add(FILE *f, const char *name, const char *schema, const char *out)
{
	json_t *s = json_loads(schema, 0, NULL);
	assert_non_null(s);
	json_t *o = json_pack("{s:s, s:o, s:s}", "name", name, "schema", s, "output", out);
	char *line = json_dumps(o, JSON_COMPACT);
	fprintf(f, "%s\n", line);
	free(line);
	json_decref(o);
}

/* Runs json_validate.py on path; fails unless all `total` cases validate. */
static void validate_all(const char *path, int total)
{
	char cmd[1024], line[512];
	snprintf(cmd, sizeof cmd, "python3 tests/common/json_validate.py '%s' 2>&1", path);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	int validated = -1;
	while (fgets(line, sizeof line, p)) {
		fprintf(stderr, "  %s", line);
		sscanf(line, "validated %d", &validated);
	}
	int rc = pclose(p);
	if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) {
		print_message("SKIP validation: python3-jsonschema missing (scripts/setup installs it)\n");
		return;
	}
	if (validated != total)
		fail_msg("json_validate: %d of %d outputs valid (cases in %s)", validated, total, path);
	print_message("%d outputs validated by python3-jsonschema\n", validated);
}

/* ---- schemas ---- */

static const char *const schemas[] = {
	/* nested object, integers with ranges, bounded strings */
	"{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":12},"
	"\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":130},\"address\":{\"type\":\"object\","
	"\"properties\":{\"city\":{\"type\":\"string\",\"maxLength\":10},\"zip\":{\"type\":\"string\","
	"\"pattern\":\"^[0-9]{5}$\"}},\"required\":[\"city\",\"zip\"]}},"
	"\"required\":[\"name\",\"age\",\"address\"],\"additionalProperties\":false}",
	/* arrays with min/maxItems, enums */
	"{\"type\":\"object\",\"properties\":{\"tags\":{\"type\":\"array\",\"items\":{\"enum\":[\"red\","
	"\"green\",\"blue\"]},\"minItems\":2,\"maxItems\":4},\"scores\":{\"type\":\"array\",\"items\":"
	"{\"type\":\"integer\",\"minimum\":-5,\"maximum\":99},\"minItems\":1,\"maxItems\":3}},"
	"\"required\":[\"tags\",\"scores\"]}",
	/* anyOf, const, boolean, null */
	"{\"type\":\"object\",\"properties\":{\"kind\":{\"const\":\"event\"},\"value\":{\"anyOf\":["
	"{\"type\":\"integer\",\"minimum\":1,\"maximum\":9},{\"type\":\"boolean\"},{\"type\":\"null\"},"
	"{\"enum\":[\"low\",\"high\"]}]},\"ok\":{\"type\":\"boolean\"}},\"required\":[\"kind\",\"value\","
	"\"ok\"]}",
	/* string patterns and formats */
	"{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{2}-[0-9]{3}$\"},"
	"\"email\":{\"type\":\"string\",\"pattern\":\"^[a-z]{1,6}@[a-z]{1,6}\\\\.com$\"},\"day\":{\"type\":"
	"\"string\",\"format\":\"date\"}},\"required\":[\"id\",\"email\",\"day\"]}",
	/* an array of objects, $ref */
	"{\"$defs\":{\"item\":{\"type\":\"object\",\"properties\":{\"sku\":{\"type\":\"string\","
	"\"pattern\":\"^[a-z]{3}$\"},\"qty\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":20}},"
	"\"required\":[\"sku\",\"qty\"],\"additionalProperties\":false}},\"type\":\"array\",\"items\":"
	"{\"$ref\":\"#/$defs/item\"},\"minItems\":1,\"maxItems\":3}",
};
#define N_SCHEMAS (sizeof schemas / sizeof schemas[0])

static const char *const model_of[] = { "q", "q-a1", "q-a2" };

/* The body of request k for schema i: chat with response_format or
 * completions with guided_json / structured_outputs, streamed or not. */
static char *guided_body(size_t i, int k, bool *stream, bool *chat)
{
	char *b = NULL;
	*stream = k & 1;
	*chat = (k & 2) == 0;
	const char *model = model_of[(i + (size_t)k) % 3];
	int r;
	if (*chat)
		r = asprintf(&b, "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":"
			     "\"give me data %d\"}],\"max_tokens\":400,\"seed\":%d,\"stream\":%s,"
			     "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":"
			     "\"s%zu\",\"strict\":true,\"schema\":%s}}}", model, k, 100 + k,
			     *stream ? "true" : "false", i, schemas[i]);
	else if (k & 4)
		r = asprintf(&b, "{\"model\":\"%s\",\"prompt\":\"data %d:\",\"max_tokens\":400,"
			     "\"seed\":%d,\"stream\":%s,\"structured_outputs\":{\"json\":%s}}", model,
			     k, 100 + k, *stream ? "true" : "false", schemas[i]);
	else {
		/* guided_json as JSON text */
		json_t *s = json_string(schemas[i]);
		char *sq = json_dumps(s, JSON_ENCODE_ANY);
		r = asprintf(&b, "{\"model\":\"%s\",\"prompt\":\"data %d:\",\"max_tokens\":400,"
			     "\"seed\":%d,\"stream\":%s,\"guided_json\":%s}", model, k, 100 + k,
			     *stream ? "true" : "false", sq);
		free(sq);
		json_decref(s);
	}
	assert_true(r > 0);
	return b;
}

static const char UNCON[] =
	"{\"model\":\"q\",\"prompt\":\"The weather today\",\"max_tokens\":24,\"temperature\":0,"
	"\"ignore_eos\":true,\"return_token_ids\":true}";

static void ids_of(const char *resp, int32_t *ids, int *n)
{
	json_t *j = json_loads(resp, 0, NULL);
	assert_non_null(j);
	json_t *t = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "token_ids");
	size_t i;
	json_t *x;
	*n = 0;
	json_array_foreach(t, i, x)
		ids[(*n)++] = (int32_t)json_integer_value(x);
	json_decref(j);
}

static void test_schemas_mixed(void **state)
{
	(void)state;
	enum { PER = 8, N_UNC = 6 };
	const int n = (int)N_SCHEMAS * PER + N_UNC;
	call *cs = calloc((size_t)n, sizeof *cs);
	bool stream[N_SCHEMAS * PER], chat[N_SCHEMAS * PER];

	/* the unconstrained request alone first */
	long st;
	call alone = { 0 };
	snprintf(alone.path, sizeof alone.path, "/v1/completions");
	alone.body = strdup(UNCON);
	do_call(&alone);
	assert_int_equal(alone.status, 200);
	int32_t want[64], got[64];
	int nw, ng;
	ids_of(alone.resp, want, &nw);
	assert_int_equal(nw, 24);
	(void)st;

	for (size_t i = 0; i < N_SCHEMAS; i++)
		for (int k = 0; k < PER; k++) {
			call *c = &cs[i * PER + (size_t)k];
			c->body = guided_body(i, k, &stream[i * PER + (size_t)k], &chat[i * PER + (size_t)k]);
			snprintf(c->path, sizeof c->path, "%s",
				 chat[i * PER + (size_t)k] ? "/v1/chat/completions" : "/v1/completions");
		}
	for (int u = 0; u < N_UNC; u++) {
		call *c = &cs[N_SCHEMAS * PER + (size_t)u];
		snprintf(c->path, sizeof c->path, "/v1/completions");
		if (u % 2 == 0) {
			c->body = strdup(UNCON);
		} else {
			int r = asprintf(&c->body, "{\"model\":\"%s\",\"prompt\":\"noise %d\",\"max_tokens\":"
					 "30,\"seed\":%d}", model_of[u % 3], u, u);
			assert_true(r > 0);
		}
	}
	run_all(cs, n);

	char path[600];
	FILE *f = cases_open(path, sizeof path, "schemas");
	int total = 0;
	for (size_t i = 0; i < N_SCHEMAS; i++)
		for (int k = 0; k < PER; k++) {
			call *c = &cs[i * PER + (size_t)k];
			char finish[32], name[64];
			char *out = output_of(c, stream[i * PER + (size_t)k], finish, sizeof finish);
			if (strcmp(finish, "stop"))
				fail_msg("schema %zu request %d: finish %s: %s", i, k, finish, out);
			snprintf(name, sizeof name, "schema%zu/%s%s/%d", i,
				 chat[i * PER + (size_t)k] ? "chat" : "cmpl",
				 stream[i * PER + (size_t)k] ? "-stream" : "", k);
			case_add(f, name, schemas[i], out);
			if (k == 0)
				print_message("schema %zu: %s\n", i, out);
			free(out);
			total++;
		}
	fclose(f);
	validate_all(path, total);
	/* unconstrained neighbours: the greedy ones equal the request alone */
	for (int u = 0; u < N_UNC; u += 2) {
		call *c = &cs[N_SCHEMAS * PER + (size_t)u];
		assert_int_equal(c->status, 200);
		ids_of(c->resp, got, &ng);
		assert_int_equal(ng, nw);
		assert_memory_equal(got, want, (size_t)nw * sizeof *want);
	}
	for (int u = 1; u < N_UNC; u += 2)
		assert_int_equal(cs[N_SCHEMAS * PER + (size_t)u].status, 200);
	for (int i = 0; i < n; i++)
		call_free(&cs[i]);
	call_free(&alone);
	free(cs);
}

static void test_regex_choice_object(void **state)
{
	(void)state;
	const char *re = "[a-z]{3,8}@[a-z]{2,6}\\.(com|org)";
	enum { N = 12 };
	call cs[N] = { 0 };
	for (int k = 0; k < N; k++) {
		int r;
		snprintf(cs[k].path, sizeof cs[k].path, "/v1/completions");
		if (k % 3 == 0)
			r = asprintf(&cs[k].body, "{\"model\":\"%s\",\"prompt\":\"mail %d\",\"max_tokens\":"
				     "60,\"seed\":%d,\"stream\":%s,\"guided_regex\":\"%s\"}",
				     model_of[k % 3], k, k, k & 1 ? "true" : "false",
				     "[a-z]{3,8}@[a-z]{2,6}\\\\.(com|org)");
		else if (k % 3 == 1)
			r = asprintf(&cs[k].body, "{\"model\":\"%s\",\"prompt\":\"pick %d\",\"max_tokens\":"
				     "20,\"seed\":%d,\"stream\":%s,\"guided_choice\":[\"yes\",\"no\","
				     "\"maybe not\",\"\\u00e9t\\u00e9\"]}", model_of[k % 3], k, k,
				     k & 1 ? "true" : "false");
		else
			r = asprintf(&cs[k].body, "{\"model\":\"%s\",\"prompt\":\"obj %d\",\"max_tokens\":"
				     "300,\"seed\":%d,\"stream\":%s,\"response_format\":{\"type\":"
				     "\"json_object\"},\"logit_bias\":{\"92\":12,\"1\":12}}",
				     model_of[k % 3], k, k, k & 1 ? "true" : "false");
		assert_true(r > 0);
	}
	run_all(cs, N);
	int err;
	PCRE2_SIZE off;
	pcre2_code *code = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED,
					 PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF, &err, &off, NULL);
	assert_non_null(code);
	pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
	for (int k = 0; k < N; k++) {
		char finish[32];
		char *out = output_of(&cs[k], k & 1, finish, sizeof finish);
		if (k % 3 == 0) {
			int rc = pcre2_match(code, (PCRE2_SPTR)out, strlen(out), 0, 0, md, NULL);
			if (rc < 0)
				fail_msg("guided_regex output %d does not match: '%s'", k, out);
			assert_string_equal(finish, "stop");
		} else if (k % 3 == 1) {
			if (strcmp(out, "yes") && strcmp(out, "no") && strcmp(out, "maybe not") &&
			    strcmp(out, "\xc3\xa9t\xc3\xa9"))
				fail_msg("guided_choice output %d is not a choice: '%s'", k, out);
			assert_string_equal(finish, "stop");
		} else {
			json_t *j = json_loads(out, 0, NULL);
			if (!json_is_object(j) || strcmp(finish, "stop"))
				fail_msg("json_object output %d (finish %s) is not a JSON object: '%s'", k,
					 finish, out);
			json_decref(j);
		}
		print_message("%d: %s\n", k, out);
		free(out);
		call_free(&cs[k]);
	}
	pcre2_match_data_free(md);
	pcre2_code_free(code);
}

/* ---- tools ---- */

static const char TOOLS[] =
	"[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\","
	"\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\","
	"\"maxLength\":10},\"days\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":7},\"unit\":"
	"{\"enum\":[\"C\",\"F\"]}},\"required\":[\"city\",\"days\"]}}},"
	"{\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"parameters\":{\"type\":"
	"\"object\",\"properties\":{\"tz\":{\"type\":\"string\",\"pattern\":\"^[A-Z]{3}$\"}},"
	"\"required\":[\"tz\"],\"additionalProperties\":false}}}]";

/* The parameters schema of function name in TOOLS (JSON text, malloc'ed). */
static char *params_of(const char *name)
{
	json_t *t = json_loads(TOOLS, 0, NULL), *x;
	size_t i;
	char *s = NULL;
	json_array_foreach(t, i, x) {
		json_t *fn = json_object_get(x, "function");
		if (!strcmp(json_string_value(json_object_get(fn, "name")), name))
			s = json_dumps(json_object_get(fn, "parameters"), JSON_COMPACT);
	}
	json_decref(t);
	assert_non_null(s);
	return s;
}

static int check_calls(FILE *f, const char *tag, json_t *calls, const char *only)
{
	size_t i;
	json_t *c;
	if (!json_is_array(calls) || json_array_size(calls) != 1)
		fail_msg("%s: want one tool call, got %s", tag, json_dumps(calls, 0));
	json_array_foreach(calls, i, c) {
		json_t *fn = json_object_get(c, "function");
		const char *name = json_string_value(json_object_get(fn, "name"));
		const char *args = json_string_value(json_object_get(fn, "arguments"));
		assert_non_null(name);
		assert_non_null(args);
		assert_string_equal(json_string_value(json_object_get(c, "type")), "function");
		assert_true(json_is_string(json_object_get(c, "id")));
		if (only)
			assert_string_equal(name, only);
		char *ps = params_of(name), cname[64];
		snprintf(cname, sizeof cname, "%s/%s", tag, name);
		case_add(f, cname, ps, args);
		print_message("%s: %s(%s)\n", tag, name, args);
		free(ps);
	}
	return 1;
}

static void test_tools_forced(void **state)
{
	(void)state;
	enum { N = 12 };
	call cs[N] = { 0 };
	for (int k = 0; k < N; k++) {
		snprintf(cs[k].path, sizeof cs[k].path, "/v1/chat/completions");
		const char *choice = k % 3 == 0 ? "\"required\""
				   : k % 3 == 1 ? "{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}"
						: "{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}";
		int r = asprintf(&cs[k].body, "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\","
				 "\"content\":\"weather %d?\"}],\"max_tokens\":300,\"seed\":%d,"
				 "\"stream\":%s,\"tools\":%s,\"tool_choice\":%s%s}", model_of[k % 3], k, k,
				 k & 1 ? "true" : "false", TOOLS, choice,
				 k == 3 ? ",\"parallel_tool_calls\":false" : "");
		assert_true(r > 0);
	}
	run_all(cs, N);
	char path[600];
	FILE *f = cases_open(path, sizeof path, "tools");
	for (int k = 0; k < N; k++) {
		char tag[32];
		const char *only = k % 3 == 1 ? "get_time" : k % 3 == 2 ? "get_weather" : NULL;
		snprintf(tag, sizeof tag, "call%d", k);
		if (cs[k].status != 200)
			fail_msg("tools %d: HTTP %ld: %s", k, cs[k].status, cs[k].resp);
		if (k & 1) {
			streamed *s = malloc(sizeof *s);
			parse_stream(cs[k].resp, s);
			assert_string_equal(s->finish, "tool_calls");
			assert_int_equal(s->len, 0);
			assert_int_equal(json_integer_value(json_object_get(json_array_get(s->tool_calls, 0),
									    "index")), 0);
			check_calls(f, tag, s->tool_calls, only);
			json_decref(s->tool_calls);
			free(s);
		} else {
			json_t *j = json_loads(cs[k].resp, 0, NULL);
			json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
			json_t *m = json_object_get(ch, "message");
			assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")),
					    "tool_calls");
			assert_true(json_is_null(json_object_get(m, "content")));
			check_calls(f, tag, json_object_get(m, "tool_calls"), only);
			json_decref(j);
		}
		call_free(&cs[k]);
	}
	fclose(f);
	validate_all(path, N);
}

/* tool_choice auto: the model's own tool call is parsed. A random model
 * never writes one, so guided_regex makes it write one (and some content
 * before it, streamed as content). */
static void test_tools_auto(void **state)
{
	(void)state;
	const char *re = "Sure\\\\.\\n<tool_call>\\n\\\\{\\\"name\\\": \\\"get_time\\\", "
			 "\\\"arguments\\\": \\\\{\\\"tz\\\": \\\"(UTC|CET)\\\"\\\\}\\\\}\\n</tool_call>";
	for (int stream = 0; stream < 2; stream++) {
		char *body;
		int r = asprintf(&body, "{\"model\":\"q\",\"messages\":[{\"role\":\"user\",\"content\":"
				 "\"time?\"}],\"max_tokens\":100,\"stream\":%s,\"tools\":%s,"
				 "\"guided_regex\":\"%s\"}", stream ? "true" : "false", TOOLS, re);
		assert_true(r > 0);
		call c = { 0 };
		snprintf(c.path, sizeof c.path, "/v1/chat/completions");
		c.body = body;
		do_call(&c);
		if (c.status != 200)
			fail_msg("auto: HTTP %ld: %s", c.status, c.resp);
		json_t *calls;
		char content[65536] = "", finish[32] = "";
		json_t *j = NULL;
		streamed *s = NULL;
		if (stream) {
			s = malloc(sizeof *s);
			parse_stream(c.resp, s);
			calls = s->tool_calls;
			snprintf(content, sizeof content, "%.60000s", s->text);
			snprintf(finish, sizeof finish, "%s", s->finish);
		} else {
			j = json_loads(c.resp, 0, NULL);
			json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
			json_t *m = json_object_get(ch, "message");
			calls = json_object_get(m, "tool_calls");
			snprintf(content, sizeof content, "%s",
				 json_string_value(json_object_get(m, "content")));
			snprintf(finish, sizeof finish, "%s",
				 json_string_value(json_object_get(ch, "finish_reason")));
		}
		assert_string_equal(finish, "tool_calls");
		/* the content outside the call (the template's whitespace may stay around it) */
		assert_non_null(strstr(content, "Sure."));
		assert_null(strstr(content, "tool_call"));
		assert_int_equal(json_array_size(calls), 1);
		json_t *fn = json_object_get(json_array_get(calls, 0), "function");
		assert_string_equal(json_string_value(json_object_get(fn, "name")), "get_time");
		json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments")), 0, NULL);
		assert_non_null(args);
		const char *tz = json_string_value(json_object_get(args, "tz"));
		assert_true(!strcmp(tz, "UTC") || !strcmp(tz, "CET"));
		json_decref(args);
		if (s) {
			json_decref(s->tool_calls);
			free(s);
		}
		json_decref(j);
		call_free(&c);
	}
	/* without a call in the output, auto gives plain content and "length"/"stop" */
	long st;
	char *body;
	assert_true(asprintf(&body, "{\"model\":\"q\",\"messages\":[{\"role\":\"user\",\"content\":"
			     "\"hi\"}],\"max_tokens\":8,\"tools\":%s}", TOOLS) > 0);
	json_t *j = post("/v1/chat/completions", body, &st);
	assert_int_equal(st, 200);
	json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
	assert_null(json_object_get(json_object_get(ch, "message"), "tool_calls"));
	assert_string_not_equal(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls");
	json_decref(j);
	free(body);
}

/* ---- refusals ---- */

static void expect_400(const char *path, const char *body, const char *param, const char *needle)
{
	long st;
	json_t *j = post(path, body, &st);
	json_t *e = json_object_get(j, "error");
	const char *msg = json_string_value(json_object_get(e, "message"));
	if (st != 400 || !msg || strcmp(json_string_value(json_object_get(e, "param")), param) ||
	    !strstr(msg, needle))
		fail_msg("want 400 param %s with '%s'; got %ld: %s", param, needle, st,
			 json_dumps(j, 0));
	json_decref(j);
}

static void test_refusals(void **state)
{
	(void)state;
	const char *C = "/v1/completions", *H = "/v1/chat/completions";
	expect_400(C, "{\"model\":\"q\",\"prompt\":\"x\",\"guided_regex\":\"a+\","
		   "\"guided_choice\":[\"a\"]}", "guided_choice", "give one of them");
	expect_400(C, "{\"model\":\"q\",\"prompt\":\"x\",\"response_format\":{\"type\":\"json_object\"},"
		   "\"guided_json\":{\"type\":\"object\"}}", "guided_json", "give one of them");
	expect_400(C, "{\"model\":\"q\",\"prompt\":\"x\",\"response_format\":{\"type\":\"json_schema\","
		   "\"json_schema\":{\"name\":\"a\",\"schema\":{\"type\":\"object\",\"patternProperties\":"
		   "{}}}}}", "response_format", "patternProperties");
	expect_400(C, "{\"model\":\"q\",\"prompt\":\"x\",\"guided_regex\":\"(a)\\\\1\"}", "guided_regex",
		   "guided_regex");
	expect_400(C, "{\"model\":\"q\",\"prompt\":\"x\",\"response_format\":{\"type\":\"yaml\"}}",
		   "response_format", "yaml");
	expect_400(C, "{\"model\":\"q\",\"prompt\":\"x\",\"guided_json\":\"{not json\"}", "guided_json",
		   "not a JSON schema");
	expect_400(C, "{\"model\":\"q\",\"prompt\":\"x\",\"guided_choice\":[]}", "guided_choice",
		   "non-empty");
	expect_400(C, "{\"model\":\"q\",\"prompt\":\"x\",\"structured_outputs\":{\"grammar\":\"x\"}}",
		   "structured_outputs", "grammar");
	char *b;
	assert_true(asprintf(&b, "{\"model\":\"stories\",\"messages\":[{\"role\":\"user\",\"content\":"
			     "\"x\"}],\"tools\":%s,\"tool_choice\":\"required\"}", TOOLS) > 0);
	expect_400(H, b, "tool_choice", "no tool-call format");
	free(b);
	assert_true(asprintf(&b, "{\"model\":\"q\",\"messages\":[{\"role\":\"user\",\"content\":"
			     "\"x\"}],\"tools\":%s,\"tool_choice\":{\"type\":\"function\",\"function\":"
			     "{\"name\":\"nope\"}}}", TOOLS) > 0);
	expect_400(H, b, "tool_choice", "not in 'tools'");
	free(b);
	expect_400(H, "{\"model\":\"q\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
		   "\"tool_choice\":\"required\"}", "tool_choice", "needs 'tools'");
	/* text is the default: no constraint */
	long st;
	json_t *j = post(C, "{\"model\":\"q\",\"prompt\":\"x\",\"max_tokens\":3,\"response_format\":"
			 "{\"type\":\"text\"}}", &st);
	assert_int_equal(st, 200);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_regex_choice_object),
		cmocka_unit_test(test_schemas_mixed),
		cmocka_unit_test(test_tools_forced),
		cmocka_unit_test(test_tools_auto),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
