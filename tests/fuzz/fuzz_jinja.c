/*
 * tests/fuzz/fuzz_jinja.c — the chat-template interpreter (common/jinja.h)
 * on any template text: templates come with models people upload, and
 * messages reach them from requests.
 *
 * Input: the template source. It is compiled, and when it compiles it is
 * rendered with a fixed conversation (system, user, assistant with a tool
 * call, tool result, a tools list, bos/eos, add_generation_prompt), once as
 * it is and once with the conversation's text fields replaced by awkward
 * strings (quotes, braces, control bytes, invalid UTF-8).
 * Invariants: a refusal carries a message and leaves *out NULL; compile
 * errors are LOOM_EFORMAT / LOOM_EUNSUPPORTED / LOOM_EINVAL / LOOM_ENOMEM,
 * render errors LOOM_EINVAL / LOOM_ENOMEM; output is NUL-terminated at
 * its length and within LOOM_JINJA_MAX_OUTPUT; rendering twice gives the
 * same bytes (no hidden state; templates using strftime_now excepted).
 */
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "common/alloc.h"
#include "common/jinja.h"
#include "tests/fuzz/fuzz.h"

static const char fuzz_jinja_ctx_text[] =
	"{\"messages\": ["
	"{\"role\": \"system\", \"content\": \"Be brief.\"},"
	"{\"role\": \"user\", \"content\": \"Weather in Paris?\"},"
	"{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"id\": \"call12345\","
	" \"type\": \"function\", \"function\": {\"name\": \"get_weather\","
	" \"arguments\": {\"city\": \"Paris\"}}}]},"
	"{\"role\": \"tool\", \"tool_call_id\": \"call12345\", \"content\": \"22\"},"
	"{\"role\": \"assistant\", \"content\": \"<think>r</think>It is 22 C.\"},"
	"{\"role\": \"user\", \"content\": \"Thanks\"}],"
	" \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\","
	" \"description\": \"weather\", \"parameters\": {\"type\": \"object\", \"properties\":"
	" {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}],"
	" \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_generation_prompt\": true,"
	" \"date_string\": \"26 Jul 2024\", \"n\": 3, \"f\": 0.5, \"nothing\": null}";

static const char *const fuzz_jinja_awkward[] = {
	"", "\"'{{ x }}{% if %}\\", "\x01\x7f\xc3\x28\xff", "  \n\t ", "</tool_response>",
	"\xe2\x80\xa8\xc2\xa0\xf0\x9f\x99\x82",
};

static json_t *fuzz_jinja_ctx(int variant)
{
	json_t *c = json_loads(fuzz_jinja_ctx_text, 0, NULL);
	if (!c)
		abort();
	if (variant) { /* every message's content replaced (raw bytes, jansson allows them) */
		json_t *msgs = json_object_get(c, "messages"), *m;
		size_t i;
		json_array_foreach(msgs, i, m) {
			const char *s = fuzz_jinja_awkward[i % (sizeof fuzz_jinja_awkward /
							       sizeof fuzz_jinja_awkward[0])];
			json_object_set_new(m, "content", json_stringn_nocheck(s, strlen(s)));
		}
	}
	return c;
}

static void fuzz_jinja_render_check(const loom_jinja *t, json_t *ctx, int uses_time)
{
	char *out = NULL, *again = NULL;
	size_t len = 0, len2 = 0;
	loom_err rc = loom_jinja_render(t, ctx, &out, &len);
	if (rc) {
		FUZZ_CHECK(rc == LOOM_EINVAL || rc == LOOM_ENOMEM, "render error %d: %s", rc,
			   loom_errmsg());
		FUZZ_CHECK(out == NULL, "render error %d but *out set", rc);
		FUZZ_CHECK(loom_errmsg()[0] != '\0', "render error %d without a message", rc);
		return;
	}
	fuzz_accepted = 1;
	FUZZ_CHECK(out != NULL && out[len] == '\0', "output of %zu bytes not terminated", len);
	FUZZ_CHECK(len <= LOOM_JINJA_MAX_OUTPUT, "output of %zu bytes", len);
	fuzz_touch(out, len);
	if (!uses_time) {
		loom_err rc2 = loom_jinja_render(t, ctx, &again, &len2);
		FUZZ_CHECK(rc2 == LOOM_OK && len2 == len && memcmp(out, again, len) == 0,
			   "a second rendering differs (%d, %zu vs %zu bytes)", rc2, len2, len);
	}
	loom_free(again);
	loom_free(out);
}

int fuzz_jinja(const uint8_t *data, size_t size)
{
	loom_jinja *t = (loom_jinja *)1;
	loom_err rc = loom_jinja_compile((const char *)data, size, &t);
	if (rc) {
		FUZZ_CHECK(rc == LOOM_EFORMAT || rc == LOOM_EUNSUPPORTED || rc == LOOM_EINVAL ||
				   rc == LOOM_ENOMEM,
			   "compile error %d: %s", rc, loom_errmsg());
		FUZZ_CHECK(t == NULL, "compile error %d but *out set", rc);
		FUZZ_CHECK(loom_errmsg()[0] != '\0', "compile error %d without a message", rc);
		return 0;
	}
	int uses_time = size >= 12 && memmem(data, size, "strftime_now", 12) != NULL;
	for (int v = 0; v < 2; v++) {
		json_t *ctx = fuzz_jinja_ctx(v);
		fuzz_jinja_render_check(t, ctx, uses_time);
		json_decref(ctx);
	}
	loom_jinja_free(t);
	return 0;
}

void fuzz_jinja_seeds(fuzz_seeds *s)
{
	static const char *const files[] = {
		"fixtures/chat-templates/Qwen-Qwen2.5-7B-Instruct.jinja",
		"fixtures/chat-templates/Qwen-Qwen3-0.6B.jinja",
		"fixtures/chat-templates/google-gemma-2-2b-it.jinja",
		"fixtures/chat-templates/meta-llama-Llama-3.1-8B-Instruct.jinja",
		"fixtures/chat-templates/meta-llama-Llama-3.2-3B-Instruct.jinja",
		"fixtures/chat-templates/microsoft-Phi-3.5-mini-instruct.jinja",
		"fixtures/chat-templates/mistralai-Mistral-Nemo-Instruct-2407.jinja",
	};
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
		if (fuzz_seed_file(s, fuzz_shared_path(files[i])))
			abort();
	fuzz_seed_str(s, "{% for m in messages %}{{ m.role|upper }}: {{ m.content|trim }}\n"
			 "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}");
	fuzz_seed_str(s, "{% set ns = namespace(i=0) %}{% for k, v in tools[0].function.items() %}"
			 "{% set ns.i = ns.i + 1 %}{{ k }}={{ v|tojson(indent=2) }}{% endfor %}{{ ns.i }}");
	fuzz_seed_str(s, "{% macro f(x, y='d') %}[{{ x ~ y }}]{% endmacro %}{{ f(1) }}{{ f(2, y=3) }}"
			 "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(', ') }}");
	fuzz_seed_str(s, "{{ 'abc'[::-1] }}{{ [1, 2, 3][1:] }}{{ {'a': [1, 2.5, none, true]} }}"
			 "{{ 7 // 2 }}{{ 2 ** 10 }}{{ 'x' * 3 }}{{ n is odd }}{{ f|round(1) }}"
			 "{{ messages[-1].content.split(' ')|length }}{% raw %}{{ raw }}{% endraw %}");
	fuzz_seed_str(s, "  {%- if nothing is none -%}\n  a\n  {% else %}\nb{% endif %}\n{# c #}\n"
			 "{% for i in range(n) if i is even %}{{ loop.index }}{% else %}e{% endfor %}");
}

const fuzz_word fuzz_jinja_dict[] = {
	FUZZ_W("{{"), FUZZ_W("}}"), FUZZ_W("{%"), FUZZ_W("%}"), FUZZ_W("{#"), FUZZ_W("#}"),
	FUZZ_W("{%-"), FUZZ_W("-%}"), FUZZ_W("{{-"), FUZZ_W("-}}"), FUZZ_W("{%+"),
	FUZZ_W("for "), FUZZ_W(" in "), FUZZ_W("endfor"), FUZZ_W("if "), FUZZ_W("elif "),
	FUZZ_W("else"), FUZZ_W("endif"), FUZZ_W("set "), FUZZ_W("endset"), FUZZ_W("macro "),
	FUZZ_W("endmacro"), FUZZ_W("break"), FUZZ_W("continue"), FUZZ_W("raw"), FUZZ_W("endraw"),
	FUZZ_W("namespace("), FUZZ_W("range("), FUZZ_W("raise_exception("), FUZZ_W("loop."),
	FUZZ_W("messages"), FUZZ_W("tools"), FUZZ_W("|tojson"), FUZZ_W("|trim"), FUZZ_W("|length"),
	FUZZ_W("|join"), FUZZ_W("|map(attribute="), FUZZ_W("|selectattr("), FUZZ_W("|indent"),
	FUZZ_W("|default"), FUZZ_W("|sort"), FUZZ_W("|items"), FUZZ_W(" is defined"),
	FUZZ_W(" is not none"), FUZZ_W(" is string"), FUZZ_W(".split("), FUZZ_W(".strip("),
	FUZZ_W(".items()"), FUZZ_W(".get("), FUZZ_W("[::-1]"), FUZZ_W("[1:]"), FUZZ_W("**"),
	FUZZ_W("//"), FUZZ_W(" ~ "), FUZZ_W(" and "), FUZZ_W(" or "), FUZZ_W("not "),
	FUZZ_W("'\\n'"), FUZZ_W("\"\\u00e9\""), FUZZ_W("none"), FUZZ_W("true"), FUZZ_W("(1, 2)"),
	FUZZ_W("{'a': 1}"), FUZZ_W("[1, 2]"), FUZZ_W("9999999999"), FUZZ_W("100000"),
	{ NULL, 0 }
};
