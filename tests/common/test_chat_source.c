/*
 * tests/common/test_chat_source.c — finding a model's chat template and its
 * bos/eos strings in the real tokenizer_config.json files of ../shared
 * (Mistral's and Gemma's carry a 1e30 integer), chat_template.jinja
 * winning, named template lists, and malformed files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/chat_source.h"
#include "tests/support/harness.h"

static void real_files(void **state)
{
	(void)state;
	static const struct {
		const char *dir, *bos, *eos, *in_template;
	} cases[] = {
		{ "fixtures/llama3.2-1b-instruct", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>" },
		{ "fixtures/qwen2.5-0.5b-instruct", "", "<|im_end|>", "<|im_start|>" },
		{ "fixtures/qwen3-0.6b", "", "<|im_end|>", "<think>" },
		{ "fixtures/mistral-7b-instruct-v0.2", "<s>", "</s>", "[INST]" },
		{ "fixtures/gemma-2-2b-it", "<bos>", "<eos>", "<start_of_turn>" },
		{ "fixtures/phi-3-mini-4k-instruct", "<s>", "<|endoftext|>", "<|assistant|>" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		loom_chat_source s;
		if (loom_chat_source_load_dir(lt_shared_path(cases[i].dir), &s, NULL, NULL))
			fail_msg("%s: %s", cases[i].dir, loom_errmsg());
		assert_non_null(s.template_text);
		if (strcmp(s.bos_token, cases[i].bos) || strcmp(s.eos_token, cases[i].eos) ||
		    !strstr(s.template_text, cases[i].in_template))
			fail_msg("%s: bos '%s' eos '%s'", cases[i].dir, s.bos_token, s.eos_token);
		loom_chat_source_fini(&s);
	}
	loom_chat_source s; /* a model folder without any */
	assert_int_equal(loom_chat_source_load_dir(lt_shared_path("models/stories260k"), &s, NULL,
						   NULL), LOOM_OK);
	assert_null(s.template_text);
	assert_string_equal(s.eos_token, "");
	loom_chat_source_fini(&s);
}

static void shapes_and_errors(void **state)
{
	(void)state;
	loom_chat_source s;
	const char *named = "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"},"
			    " {\"name\": \"default\", \"template\": \"D\"}], \"eos_token\": "
			    "{\"content\": \"</s>\", \"lstrip\": false}}";
	assert_int_equal(loom_chat_source_parse(named, strlen(named), NULL, "x", &s), LOOM_OK);
	assert_string_equal(s.template_text, "D");
	assert_string_equal(s.eos_token, "</s>");
	loom_chat_source_fini(&s);
	/* chat_template.jinja wins over the config's field */
	assert_int_equal(loom_chat_source_parse(named, strlen(named), "J", "x", &s), LOOM_OK);
	assert_string_equal(s.template_text, "J");
	loom_chat_source_fini(&s);
	static const struct {
		const char *json, *word;
		loom_err rc;
	} bad[] = {
		{ "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}]}", "default",
		  LOOM_EUNSUPPORTED },
		{ "{\"chat_template\": [{\"name\": 1}]}", "chat_template", LOOM_EFORMAT },
		{ "{\"chat_template\": 7}", "chat_template", LOOM_EFORMAT },
		{ "{\"bos_token\": 7}", "bos_token", LOOM_EFORMAT },
		{ "[1]", "not a JSON object", LOOM_EFORMAT },
		{ "{\"chat_template\": ", "not valid JSON", LOOM_EFORMAT },
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		memset(&s, 0x5a, sizeof s);
		loom_err rc = loom_chat_source_parse(bad[i].json, strlen(bad[i].json), NULL,
						     "dir/tokenizer_config.json", &s);
		if (rc != bad[i].rc || !strstr(loom_errmsg(), bad[i].word) ||
		    !strstr(loom_errmsg(), "dir/tokenizer_config.json"))
			fail_msg("case %zu: %d %s", i, rc, loom_errmsg());
		assert_null(s.template_text);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(real_files),
		cmocka_unit_test(shapes_and_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
