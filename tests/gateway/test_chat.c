/*
 * tests/gateway/test_chat.c — chat templates render the documented text.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "common/alloc.h"
#include "gateway/gw_chat.h"

#define SYS {GW_ROLE_SYSTEM, (char *)"Be nice."}
#define USR(x) {GW_ROLE_USER, (char *)x}
#define AST(x) {GW_ROLE_ASSISTANT, (char *)x}

typedef struct chat_case {
	const char *name;
	gw_chat_tmpl tmpl;
	gw_chat_msg msgs[6];
	size_t n;
	const char *want; /* NULL = must fail with LOOM_EINVAL */
} chat_case;

static const chat_case cases[] = {
	{"plain one user", GW_TMPL_PLAIN, {USR("Hi")}, 1, "user: Hi\nassistant:"},
	{"plain full", GW_TMPL_PLAIN, {SYS, USR("Hi"), AST("Hello!"), USR("Story?")}, 4,
	 "system: Be nice.\nuser: Hi\nassistant: Hello!\nuser: Story?\nassistant:"},
	{"chatml", GW_TMPL_CHATML, {SYS, USR("Hi")}, 2,
	 "<|im_start|>system\nBe nice.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
	 "<|im_start|>assistant\n"},
	{"llama2 with system", GW_TMPL_LLAMA2, {SYS, USR(" Hi "), AST("Hello!"), USR("Story?")}, 4,
	 "[INST] <<SYS>>\nBe nice.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Story? [/INST]"},
	{"llama2 user only", GW_TMPL_LLAMA2, {USR("Hi")}, 1, "[INST] Hi [/INST]"},
	{"llama2 two users in a row", GW_TMPL_LLAMA2, {USR("a"), USR("b")}, 2, NULL},
	{"llama2 ends with assistant", GW_TMPL_LLAMA2, {USR("a"), AST("b")}, 2, NULL},
	{"llama2 system only", GW_TMPL_LLAMA2, {SYS}, 1, NULL},
	{"zephyr", GW_TMPL_ZEPHYR, {SYS, USR("Hi")}, 2,
	 "<|system|>\nBe nice.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"},
	{"no messages", GW_TMPL_PLAIN, {USR("x")}, 0, NULL},
	{"chatml has no tool role", GW_TMPL_CHATML, {USR("x"), {GW_ROLE_TOOL, (char *)"42"}}, 2,
	 NULL},
};

static void test_render(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const chat_case *c = &cases[i];
		char *out = NULL;
		size_t len = 0;
		loom_err rc = gw_chat_render(c->tmpl, c->msgs, c->n, &out, &len);
		if (!c->want) {
			if (rc != LOOM_EINVAL)
				fail_msg("case '%s': want LOOM_EINVAL, got %d", c->name, rc);
			assert_null(out);
			continue;
		}
		if (rc != LOOM_OK || strcmp(out, c->want) != 0)
			fail_msg("case '%s': rc %d\n got: %s\nwant: %s", c->name, rc, out ? out : "",
				 c->want);
		assert_int_equal(len, strlen(c->want));
		loom_free(out);
	}
}

static void test_names(void **state)
{
	(void)state;
	const char *names[] = {"plain", "chatml", "llama2", "zephyr"};
	for (size_t i = 0; i < 4; i++) {
		gw_chat_tmpl t;
		assert_int_equal(gw_chat_tmpl_parse(names[i], &t), LOOM_OK);
		assert_string_equal(gw_chat_tmpl_name(t), names[i]);
	}
	gw_chat_tmpl t;
	assert_int_equal(gw_chat_tmpl_parse("jinja", &t), LOOM_EINVAL);
	gw_chat_role r;
	assert_int_equal(gw_chat_role_parse("assistant", &r), LOOM_OK);
	assert_int_equal(r, GW_ROLE_ASSISTANT);
	assert_int_equal(gw_chat_role_parse("developer", &r), LOOM_OK);
	assert_int_equal(r, GW_ROLE_SYSTEM);
	assert_int_equal(gw_chat_role_parse("tool", &r), LOOM_OK);
	assert_int_equal(r, GW_ROLE_TOOL);
	assert_int_equal(gw_chat_role_parse("function", &r), LOOM_EINVAL);
	assert_int_equal(gw_chat_tmpl_parse("model", &t), LOOM_OK);
	assert_int_equal(t, GW_TMPL_MODEL);
	assert_int_equal(gw_chat_tmpl_parse("auto", &t), LOOM_OK);
	assert_int_equal(t, GW_TMPL_AUTO);
}

static void test_alloc_failure(void **state)
{
	(void)state;
	gw_chat_msg m[] = {USR("hello")};
	char *out = (char *)1;
	size_t len;
	loom_alloc_fail_after(1);
	loom_err rc = gw_chat_render(GW_TMPL_CHATML, m, 1, &out, &len);
	loom_alloc_fail_reset();
	assert_int_equal(rc, LOOM_ENOMEM);
	assert_null(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_render),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_alloc_failure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
