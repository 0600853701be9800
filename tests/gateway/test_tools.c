/*
 * tests/gateway/test_tools.c — tool calls parsed out of model output in
 * each family's syntax, detected from the real chat templates of
 * ../shared/fixtures; what does not parse stays content; the streaming
 * hold-back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/chat_source.h"
#include "gateway/gw_tools.h"
#include "tests/support/harness.h"

static void detect_real_templates(void **state)
{
	(void)state;
	static const struct {
		const char *dir;
		gw_tools_fmt want;
	} cases[] = {
		{ "fixtures/qwen2.5-0.5b-instruct", GW_TOOLS_HERMES },
		{ "fixtures/qwen3-0.6b", GW_TOOLS_HERMES },
		{ "fixtures/llama3.2-1b-instruct", GW_TOOLS_LLAMA3 },
		{ "fixtures/mistral-7b-instruct-v0.2", GW_TOOLS_NONE }, /* v0.2 has no tools */
		{ "fixtures/gemma-2-2b-it", GW_TOOLS_NONE },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		loom_chat_source s;
		assert_int_equal(loom_chat_source_load_dir(lt_shared_path(cases[i].dir), &s, NULL,
							   NULL), LOOM_OK);
		if (gw_tools_detect(s.template_text) != cases[i].want)
			fail_msg("%s: detected %s", cases[i].dir,
				 gw_tools_fmt_name(gw_tools_detect(s.template_text)));
		loom_chat_source_fini(&s);
	}
	assert_int_equal(gw_tools_detect("{{ x }} [TOOL_CALLS] {{ y }}"), GW_TOOLS_MISTRAL);
	assert_int_equal(gw_tools_detect(NULL), GW_TOOLS_NONE);
}

typedef struct pcase {
	const char *name;
	gw_tools_fmt f;
	const char *text;
	const char *calls;   /* expected [{"name","arguments"}...] as JSON, NULL = no calls */
	const char *content; /* expected content, NULL = none */
} pcase;

static const pcase pcases[] = {
	{ "hermes one", GW_TOOLS_HERMES,
	  "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
	  "[[\"get_weather\", {\"city\": \"Paris\"}]]", NULL },
	{ "hermes two with text first", GW_TOOLS_HERMES,
	  "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n"
	  "<tool_call>\n{\"name\": \"b\", \"arguments\": {\"x\": [1, 2]}}\n</tool_call>",
	  "[[\"a\", {}], [\"b\", {\"x\": [1, 2]}]]", "Let me check.\n" },
	{ "hermes unterminated at the end", GW_TOOLS_HERMES,
	  "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"q\": 1}}", "[[\"a\", {\"q\": 1}]]", NULL },
	{ "hermes broken json stays content", GW_TOOLS_HERMES,
	  "<tool_call>\n{\"name\": \"a\", \"arguments\": {\n</tool_call>", NULL,
	  "<tool_call>\n{\"name\": \"a\", \"arguments\": {\n</tool_call>" },
	{ "hermes no name stays content", GW_TOOLS_HERMES, "<tool_call>{\"x\": 1}</tool_call>", NULL,
	  "<tool_call>{\"x\": 1}</tool_call>" },
	{ "hermes plain text", GW_TOOLS_HERMES, "Just an answer.", NULL, "Just an answer." },
	{ "llama3 json", GW_TOOLS_LLAMA3,
	  "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
	  "[[\"get_weather\", {\"city\": \"Paris\"}]]", NULL },
	{ "llama3 python tag and two", GW_TOOLS_LLAMA3,
	  "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"k\": true}}",
	  "[[\"a\", {}], [\"b\", {\"k\": true}]]", NULL },
	{ "llama3 text", GW_TOOLS_LLAMA3, "The weather is {sunny}.", NULL, "The weather is {sunny}." },
	{ "llama3 json that is no call", GW_TOOLS_LLAMA3, "{\"answer\": 42}", NULL, "{\"answer\": 42}" },
	{ "mistral", GW_TOOLS_MISTRAL,
	  "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": \"b\"}}]", "[[\"f\", {\"a\": \"b\"}]]",
	  NULL },
	{ "mistral broken", GW_TOOLS_MISTRAL, "[TOOL_CALLS] [{\"name\": ", NULL,
	  "[TOOL_CALLS] [{\"name\": " },
	{ "none format", GW_TOOLS_NONE, "<tool_call>{\"name\": \"a\"}</tool_call>", NULL,
	  "<tool_call>{\"name\": \"a\"}</tool_call>" },
};

static void parse_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof pcases / sizeof *pcases; i++) {
		const pcase *c = &pcases[i];
		json_t *calls;
		char *content;
		assert_int_equal(gw_tools_parse(c->f, c->text, strlen(c->text), 0xab, &calls, &content),
				 LOOM_OK);
		if (!c->calls) {
			if (calls)
				fail_msg("%s: unexpected calls", c->name);
		} else {
			json_t *want = json_loads(c->calls, 0, NULL);
			assert_non_null(want);
			if (!calls || json_array_size(calls) != json_array_size(want))
				fail_msg("%s: %zu calls", c->name, calls ? json_array_size(calls) : 0);
			for (size_t k = 0; k < json_array_size(want); k++) {
				json_t *got = json_array_get(calls, k), *w = json_array_get(want, k);
				json_t *fn = json_object_get(got, "function");
				json_t *args = json_loads(json_string_value(json_object_get(fn, "arguments")),
							  0, NULL);
				char id[32];
				snprintf(id, sizeof id, "call_ab_%zu", k);
				assert_string_equal(json_string_value(json_object_get(got, "id")), id);
				assert_string_equal(json_string_value(json_object_get(got, "type")),
						    "function");
				assert_string_equal(json_string_value(json_object_get(fn, "name")),
						    json_string_value(json_array_get(w, 0)));
				if (!json_equal(args, json_array_get(w, 1)))
					fail_msg("%s: call %zu arguments differ", c->name, k);
				json_decref(args);
			}
			json_decref(want);
		}
		if (c->content ? !content || strcmp(content, c->content) : content != NULL)
			fail_msg("%s: content '%s'", c->name, content ? content : "(none)");
		json_decref(calls);
		loom_free(content);
	}
}

static void stream_hold_back(void **state)
{
	(void)state;
	const char *t = "Sure. <tool_c";
	assert_int_equal(gw_tools_safe_prefix(GW_TOOLS_HERMES, t, strlen(t)), strlen("Sure. "));
	t = "Sure. <tool_call>{\"na";
	assert_int_equal(gw_tools_safe_prefix(GW_TOOLS_HERMES, t, strlen(t)), strlen("Sure. "));
	t = "Sure. <b>";
	assert_int_equal(gw_tools_safe_prefix(GW_TOOLS_HERMES, t, strlen(t)), strlen(t));
	t = "ok [TOOL";
	assert_int_equal(gw_tools_safe_prefix(GW_TOOLS_MISTRAL, t, strlen(t)), 3);
	assert_int_equal(gw_tools_safe_prefix(GW_TOOLS_LLAMA3, "  {\"na", 6), 0);
	assert_int_equal(gw_tools_safe_prefix(GW_TOOLS_LLAMA3, "<|pyth", 6), 0);
	assert_int_equal(gw_tools_safe_prefix(GW_TOOLS_LLAMA3, "  ", 2), 0);
	assert_int_equal(gw_tools_safe_prefix(GW_TOOLS_LLAMA3, "Hello", 5), 5);
	assert_int_equal(gw_tools_safe_prefix(GW_TOOLS_NONE, "<tool_call>", 11), 11);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(detect_real_templates),
		cmocka_unit_test(parse_cases),
		cmocka_unit_test(stream_hold_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
