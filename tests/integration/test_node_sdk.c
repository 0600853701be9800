/*
 * tests/integration/test_node_sdk.c — the official OpenAI Node SDK against
 * loom, unchanged (issue 13's last item): a real gateway and worker on
 * loopback serving a random-weight Qwen2 model (loom-mkmodel, the real
 * Qwen2.5 tokenizer and chat template) and tests/integration/test_node_sdk.js
 * run by Node with the `openai` package scripts/setup pins into .loom/node
 * (NODE_PATH). Each case runs one mode of the script, which asserts the
 * shapes the SDK hands back, and then validates every structured output it
 * wrote with python3-jsonschema (tests/common/json_validate.py):
 *  - schema: response_format json_schema (strict; a nested object with
 *    required fields, an enum, an array with minItems) through create() and
 *    parse() (message.parsed equals the content parsed);
 *  - object: response_format json_object, plain and streamed;
 *  - tools: tool_choice required and named give finish_reason tool_calls and
 *    one call whose name is right and whose arguments validate against the
 *    function's parameters; parse() fills parsed_arguments; the returned
 *    assistant message goes back with a tool result;
 *  - stream: the same streamed, deltas reassembled from the SDK's iterator
 *    and by the SDK's stream() helper (finalChatCompletion, its events);
 *  - n: n = 2 with a seed gives choices 0 and 1, streamed equal to plain.
 * Without node or the package (setup could not install it: no npm, no
 * network) every case skips, saying why.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

#define SDK_DIR ".loom/node/node_modules" /* relative to the project root (the cwd) */

static lt_stack stack;
static char *tmp;
static char node_path[PATH_MAX];
static const char *skip_why; /* set when the SDK cannot run here */

static int setup(void **state)
{
	(void)state;
	static char qarg[600];
	char qdir[560];
	if (lt_sh("command -v node >/dev/null 2>&1")) {
		skip_why = "node is not installed";
		return 0;
	}
	json_t *pkg = json_load_file(SDK_DIR "/openai/package.json", 0, NULL);
	if (!pkg || !realpath(SDK_DIR, node_path)) {
		skip_why = "the openai npm package is not in " SDK_DIR " (scripts/setup installs it "
			   "with npm; it could not here)";
		json_decref(pkg);
		return 0;
	}
	print_message("OpenAI Node SDK %s\n", json_string_value(json_object_get(pkg, "version")));
	json_decref(pkg);
	tmp = lt_tmpdir("node-sdk");
	snprintf(qdir, sizeof qdir, "%s/q", tmp);
	if (lt_sh("%s model --out %s --family qwen2 --hidden 64 --ffn 96 --layers 2 --heads 4 "
		  "--kv-heads 2 --ctx 2048 --seed 7 --tied --tokenizer-json %s --tokenizer-config %s "
		  ">/dev/null", lt_bin_path("loom-mkmodel"), qdir,
		  lt_shared_path("fixtures/qwen2.5-0.5b-instruct/tokenizer.json"),
		  lt_shared_path("fixtures/qwen2.5-0.5b-instruct/tokenizer_config.json")))
		return -1;
	snprintf(qarg, sizeof qarg, "q=%s", qdir);
	const char *models[] = { qarg, NULL };
	const char *extra[] = { "--no-slo", NULL };
	return lt_stack_start(&stack, models, 1, extra);
}

static int teardown(void **state)
{
	(void)state;
	if (!tmp)
		return 0;
	lt_stack_stop(&stack);
	lt_sh("rm -rf '%s'", tmp);
	loom_free(tmp);
	return 0;
}

/* Runs python3-jsonschema over the cases file; fails unless it holds exactly
 * n cases and all validate. */
static void validate(const char *cases, int n)
{
	char cmd[PATH_MAX + 64], line[512];
	snprintf(cmd, sizeof cmd, "python3 tests/common/json_validate.py '%s' 2>&1", cases);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	int ok = -1, total = -1;
	while (fgets(line, sizeof line, p)) {
		fprintf(stderr, "  %s", line);
		sscanf(line, "validated %d of %d", &ok, &total);
	}
	int rc = pclose(p);
	if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) {
		print_message("SKIP: python3-jsonschema is missing (scripts/setup installs it)\n");
		skip();
	}
	if (total != n || ok != n)
		fail_msg("json_validate: %d of %d outputs valid, want %d (cases in %s)", ok, total, n,
			 cases);
}

/* Runs the script's mode against the stack; it must exit 0 and write n
 * structured outputs, all valid. */
static void run_mode(const char *mode, int n)
{
	if (skip_why) {
		print_message("SKIP: %s\n", skip_why);
		skip();
	}
	char cases[PATH_MAX];
	snprintf(cases, sizeof cases, "%s/%s.jsonl", tmp, mode);
	unlink(cases);
	int rc = lt_sh("NODE_PATH='%s' timeout 240 node tests/integration/test_node_sdk.js %s %s '%s'",
		       node_path, mode, stack.url, cases);
	if (rc != 0) {
		lt_proc_dump(&stack.gw);
		fail_msg("the Node SDK's '%s' calls failed (exit %d; its message above)", mode, rc);
	}
	validate(cases, n);
}

static void test_json_schema(void **state)
{
	(void)state;
	run_mode("schema", 2);
}

static void test_json_object(void **state)
{
	(void)state;
	run_mode("object", 2);
}

static void test_tools(void **state)
{
	(void)state;
	run_mode("tools", 4);
}

static void test_stream(void **state)
{
	(void)state;
	run_mode("stream", 5);
}

static void test_n(void **state)
{
	(void)state;
	run_mode("n", 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_schema),
		cmocka_unit_test(test_json_object),
		cmocka_unit_test(test_tools),
		cmocka_unit_test(test_stream),
		cmocka_unit_test(test_n),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
