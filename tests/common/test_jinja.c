/* tests/common/test_jinja.c — the chat-template interpreter: each construct
 * with its expected text, compile and runtime errors, limits against hostile
 * templates, allocation failures, and every real fixture template rendered
 * byte-identically to Debian's jinja2 configured as transformers does
 * (tests/common/jinja_oracle.py) over a set of conversations. */
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

#include "common/alloc.h"
#include "common/jinja.h"
#include "tests/support/harness.h"

/* Renders tpl with ctx (JSON text, NULL = {}); *out is loom_malloc'ed or NULL. */
static loom_err render(const char *tpl, const char *ctx, char **out)
{
	loom_jinja *t;
	size_t len;
	json_t *c = NULL;
	loom_err rc = loom_jinja_compile(tpl, strlen(tpl), &t);
	*out = NULL;
	if (rc)
		return rc;
	if (ctx) {
		json_error_t e;
		c = json_loads(ctx, 0, &e);
		if (!c)
			fail_msg("bad test context JSON: %s", e.text);
	}
	rc = loom_jinja_render(t, c, out, &len);
	if (!rc)
		assert_int_equal(len, strlen(*out));
	json_decref(c);
	loom_jinja_free(t);
	return rc;
}

typedef struct jcase {
	const char *tpl, *ctx, *want;
} jcase;

static void run_cases(const jcase *cs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char *out;
		loom_err rc = render(cs[i].tpl, cs[i].ctx, &out);
		if (rc)
			fail_msg("case %zu %s: %s: %s", i, cs[i].tpl, loom_strerror(rc), loom_errmsg());
		if (strcmp(out, cs[i].want))
			fail_msg("case %zu %s:\n got [%s]\nwant [%s]", i, cs[i].tpl, out, cs[i].want);
		loom_free(out);
	}
}
#define RUN(cases) run_cases(cases, sizeof cases / sizeof cases[0])

static void expect_err(const char *tpl, const char *ctx, loom_err code, const char *sub)
{
	char *out;
	loom_err rc = render(tpl, ctx, &out);
	if (rc != code)
		fail_msg("%s: got %s (%s), want %s", tpl, loom_strerror(rc), rc ? loom_errmsg() : out,
			 loom_strerror(code));
	assert_null(out);
	if (sub && !strstr(loom_errmsg(), sub))
		fail_msg("%s: message [%s] lacks [%s]", tpl, loom_errmsg(), sub);
}

static void whitespace(void **state)
{
	(void)state;
	static const jcase cs[] = {
		{ "plain text\n", NULL, "plain text" }, /* one trailing newline dropped */
		{ "a\n\n", NULL, "a\n" },
		{ "a\r\nb\rc", NULL, "a\nb\nc" },
		{ "{# comment #}x", NULL, "x" },
		{ "a  {{- 'b' -}}  \n c", NULL, "abc" },
		{ "a  {%- if true -%}  b  {%- endif -%}  c", NULL, "abc" },
		{ "{% if true %}\nx\n{% endif %}\ny", NULL, "x\ny" },  /* trim_blocks */
		{ "  {% if true %}x{% endif %}", NULL, "x" },           /* lstrip_blocks */
		{ "a\n    {% if true %}\n    x\n    {% endif %}\nb", NULL, "a\n    x\nb" },
		{ "  {{ 'v' }}", NULL, "  v" },                         /* not before {{ */
		{ "  {%+ if true %}x{% endif %}", NULL, "  x" },
		{ "x  {% if true %}y{% endif %}", NULL, "x  y" },       /* not at line start */
		{ "{% if true +%}\nx{% endif %}", NULL, "\nx" },
		{ "a\n  {# c #}\nb", NULL, "a\nb" },
		{ "{{ 'a' }}\n{{ 'b' }}", NULL, "a\nb" },
		{ "{% raw %}{{ x }}{% endraw %}", NULL, "{{ x }}" },
		{ "{{ '{{' }}", NULL, "{{" },
		{ "{{ {'a': 1}['a'] }}", NULL, "1" },
	};
	RUN(cs);
}

static void expressions(void **state)
{
	(void)state;
	static const jcase cs[] = {
		{ "{{ 'a\\tb\\n\\'\\\"\\x41\\u00e9\\\\' }}", NULL, "a\tb\n'\"A\xc3\xa9\\" },
		{ "{{ \"x\" 'y' }}", NULL, "xy" },
		{ "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }}", NULL, "7 9 64 4" },
		{ "{{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 1.5 * 2 }}", NULL,
		  "3.5 3 -4 1 2 3.0" },
		{ "{{ 0.1 + 0.2 }} {{ 1e20 }} {{ 1e-5 }} {{ 100.0 }} {{ 1_000 }} {{ 0x1f }}", NULL,
		  "0.30000000000000004 1e+20 1e-05 100.0 1000 31" },
		{ "{{ 'a' ~ 1 ~ none ~ true ~ x }}", NULL, "a1NoneTrue" },
		{ "{{ 'ab' * 2 }} {{ [1] * 2 }} {{ [1] + [2] }}", NULL, "abab [1, 1] [1, 2]" },
		{ "{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }}", NULL,
		  "True False True True" },
		{ "{{ 'b' in 'abc' }} {{ 2 not in [1, 2] }} {{ 'k' in {'k': 1} }}", NULL, "True False True" },
		{ "{{ not 0 }} {{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' and 1 }}|", NULL, "True x y |" },
		{ "{{ 'y' if 1 else 'n' }}{{ 'y' if 0 else 'n' }}[{{ 'y' if 0 }}]", NULL, "yn[]" },
		{ "{{ [1, 'a', none, true, 1.5, {'k': [2]}, (3,), ('x', 4)] }}", NULL,
		  "[1, 'a', None, True, 1.5, {'k': [2]}, (3,), ('x', 4)]" },
		{ "{{ \"it's\" }} {{ [\"it's\", 'q\"', 'a\\nb'] }}", NULL, "it's [\"it's\", 'q\"', 'a\\nb']" },
		{ "{{ m.a }} {{ m['b'] }} {{ m.c[1] }} {{ m.c[-1] }} [{{ m.zz }}] [{{ m.c[9] }}]",
		  "{\"m\": {\"a\": 1, \"b\": \"B\", \"c\": [1, 2, 3]}}", "1 B 2 3 [] []" },
		{ "{{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ [1,2,3,4][1:] }} {{ [1,2,3,4][::2] }} {{ 'h\xc3\xa9llo'[1] }}",
		  NULL, "el olleh [2, 3, 4] [1, 3] \xc3\xa9" },
		{ "{{ x }}|{{ none }}|{{ true }}|{{ False }}", NULL, "|None|True|False" },
		{ "{{ 3 is odd }}{{ 4 is even }}{{ 9 is divisibleby 3 }}{{ x is defined }}{{ x is undefined }}",
		  NULL, "TrueTrueTrueFalseTrue" },
		{ "{{ none is none }}{{ 1 is number }}{{ 1 is integer }}{{ 1.0 is float }}{{ true is boolean }}",
		  NULL, "TrueTrueTrueTrueTrue" },
		{ "{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}{{ 'a' is sequence }}{{ 1 is not string }}",
		  NULL, "TrueTrueTrueTrueTrue" },
		{ "{{ 1 is eq 1 }}{{ 1 is equalto 2 }}{{ 1 is lt 2 }}{{ 2 is gt 1 }}{{ 1 is in [1] }}{{ 1 is ne 1 }}",
		  NULL, "TrueFalseTrueTrueTrueFalse" },
		{ "{{ true is true }}{{ 0 is false }}{{ false is false }}", NULL, "TrueFalseTrue" },
	};
	RUN(cs);
}

static void statements(void **state)
{
	(void)state;
	static const jcase cs[] = {
		{ "{% if 0 %}a{% elif 1 %}b{% else %}c{% endif %}", NULL, "b" },
		{ "{% for x in [1, 2, 3] %}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", NULL, "1,2,3" },
		{ "{% for x in 'ab' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}"
		  "{{ loop.first }}{{ loop.length }}[{{ loop.previtem }}|{{ loop.nextitem }}]{% endfor %}",
		  NULL, "1021True2[|b]2110False2[a|]" },
		{ "{% for x in [] %}a{% else %}empty{% endfor %}", NULL, "empty" },
		{ "{% for x in range(10) if x is odd %}{{ x }}:{{ loop.length }} {% endfor %}", NULL,
		  "1:5 3:5 5:5 7:5 9:5 " },
		{ "{% for x in range(10) %}{% if x == 3 %}{% break %}{% endif %}{% if x is odd %}{% continue %}{% endif %}{{ x }}{% endfor %}",
		  NULL, "02" },
		{ "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}", NULL, "a=1;b=2;" },
		{ "{% for k in {'a': 1, 'b': 2} %}{{ k }}{% endfor %}", NULL, "ab" },
		{ "{% for a, b in [[1, 2], (3, 4)] %}{{ a + b }}{% endfor %}", NULL, "37" },
		{ "{% for x in [1] %}{% for y in [2] %}{{ loop.depth }}{{ x }}{{ y }}{% endfor %}{% endfor %}",
		  NULL, "212" },
		{ "{% for x in [1,2,3] %}{{ loop.cycle('a', 'b') }}{% endfor %}", NULL, "aba" },
		/* sets inside loops do not leak; namespaces carry state out */
		{ "{% set x = 'o' %}{% for i in [1, 2] %}{{ x }}{% set x = i %}{{ x }}{% endfor %}{{ x }}",
		  NULL, "o1o2o" },
		{ "{% set ns = namespace(n=0, s='') %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
		  NULL, "6" },
		{ "{% set ns = namespace() %}{% set ns.a = 'x' %}{{ ns.a }}", NULL, "x" },
		{ "{% if true %}{% set y = 1 %}{% endif %}{{ y }}", NULL, "1" },
		{ "{% set a, b = 1, 2 %}{{ a }}{{ b }}", NULL, "12" },
		{ "{% set t %}in {{ 'block' }}{% endset %}[{{ t }}]", NULL, "[in block]" },
		{ "{% set messages = messages[1:] %}{{ messages|length }}", "{\"messages\": [1, 2, 3]}", "2" },
		{ "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }}",
		  NULL, "Hi A! Hi B?" },
		{ "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}", NULL, "321" },
		{ "{% macro g(a) %}[{{ a }}]{% endmacro %}{{ g() }}", NULL, "[]" },
	};
	RUN(cs);
}

static void filters(void **state)
{
	(void)state;
	static const jcase cs[] = {
		{ "[{{ '  a b \\n'|trim }}] [{{ 'xxaxx'|trim('x') }}]", NULL, "[a b] [a]" },
		{ "{{ {'b': 1, 'a': [1, 'x\xc3\xa9']}|tojson }}", NULL, "{\"b\": 1, \"a\": [1, \"x\xc3\xa9\"]}" },
		{ "{{ {'a': [1, 2], 'b': {}}|tojson(indent=2) }}", NULL,
		  "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {}\n}" },
		{ "{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} {{ 'x\"<\\n'|tojson }} {{ [1.0, none, true]|tojson }}",
		  NULL, "{\"a\": 2, \"b\": 1} \"x\\\"<\\n\" [1.0, null, true]" },
		{ "{{ [1, 2]|tojson(separators=(',', ':')) }} {{ 'é'|tojson(ensure_ascii=true) }}", NULL,
		  "[1,2] \"\\u00e9\"" },
		{ "{{ [1, 2, 3]|length }} {{ 'h\xc3\xa9'|length }} {{ {'a': 1}|count }} {{ x|length }}", NULL, "3 2 1 0" },
		{ "{{ 'aB'|upper }} {{ 'aB'|lower }} {{ 'hELLO wORLD'|capitalize }} {{ 'hello big-world(x'|title }}",
		  NULL, "AB ab Hello world Hello Big-World(X" },
		{ "{{ 'aaa'|replace('a', 'b') }} {{ 'aaa'|replace('a', 'b', 2) }}", NULL, "bbb bba" },
		{ "{{ [1, 2, 3]|join(', ') }} {{ [{'n': 'a'}, {'n': 'b'}]|join('-', attribute='n') }}", NULL, "1, 2, 3 a-b" },
		{ "{{ [1, 2]|first }} {{ [1, 2]|last }} {{ 'abc'|list }} {{ [3, 1]|list }}", NULL, "1 2 ['a', 'b', 'c'] [3, 1]" },
		{ "{{ 1|string ~ 'x' }} {{ '42'|int + 1 }} {{ '4.5'|float }} {{ 'zz'|int }} {{ 3.9|int }} {{ 2|float }}",
		  NULL, "1x 43 4.5 0 3 2.0" },
		{ "{{ x|default('d') }} {{ ''|default('d') }} {{ ''|default('d', true) }} {{ x|d('e') }}", NULL, "d  d e" },
		{ "{{ ms|selectattr('role', 'equalto', 'user')|list|length }} {{ ms|rejectattr('role', 'eq', 'user')|map(attribute='role')|list }}",
		  "{\"ms\": [{\"role\": \"user\"}, {\"role\": \"assistant\"}, {\"role\": \"user\"}]}", "2 ['assistant']" },
		{ "{{ ['a', 'code_interpreter', 'b']|reject('equalto', 'code_interpreter')|join(', ') }} {{ [0, 1, 2]|select|list }} {{ [1, 2, 3]|select('odd')|list }}",
		  NULL, "a, b [1, 2] [1, 3]" },
		{ "{{ ['a', 'b']|map('upper')|list }} {{ ms|map(attribute='x', default='?')|list }}",
		  "{\"ms\": [{\"x\": 1}, {}]}", "['A', 'B'] [1, '?']" },
		{ "{% for k, v in {'a': 1}|items %}{{ k }}{{ v }}{% endfor %} {{ {'b': 1, 'A': 2}|dictsort }}", NULL,
		  "a1 [('A', 2), ('b', 1)]" },
		{ "{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A']|sort(case_sensitive=true) }} {{ [1, 2]|sort(reverse=true) }}",
		  NULL, "[1, 2, 3] ['A', 'b', 'c'] ['A', 'b'] [2, 1]" },
		{ "{{ [{'n': 2}, {'n': 1}]|sort(attribute='n')|map(attribute='n')|list }}", NULL, "[1, 2]" },
		{ "{{ [1, 2, 1, 'A', 'a']|unique|list }} {{ [1, 2]|reverse|list }} {{ 'ab'|reverse }}", NULL,
		  "[1, 2, 'A'] [2, 1] ba" },
		{ "{{ '<a href=\"x\">&\\'</a>'|e }} {{ '<b>'|safe }} {{ '<i>'|escape }}", NULL,
		  "&lt;a href=&#34;x&#34;&gt;&amp;&#39;&lt;/a&gt; <b> &lt;i&gt;" },
		{ "{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(1, blank=true) }}", NULL,
		  "a\n    b\n\n    c|  a\n  b|a\n \n b" },
		{ "{{ -3|abs }} {{ 2.5|round }} {{ 3.5|round }} {{ 2.675|round(2) }} {{ 2.1|round(0, 'ceil') }} {{ 7|round }}",
		  NULL, "3 2.0 4.0 2.67 3.0 7" },
		{ "{{ [3, 1, 2]|min }} {{ [3, 1, 2]|max }} {{ [1, 2, 3]|sum }} {{ [{'v': 1}, {'v': 2}]|sum(attribute='v') }}",
		  NULL, "1 3 6 3" },
		{ "{{ [1, 2, 3]|batch(2)|list }} {{ 'a b c'|wordcount }} {{ 'x'|center(5) }}|", NULL,
		  "[[1, 2], [3]] 3   x  |" },
	};
	RUN(cs);
}

static void methods(void **state)
{
	(void)state;
	static const jcase cs[] = {
		{ "[{{ '  a  '.strip() }}][{{ '  a  '.lstrip() }}][{{ '  a  '.rstrip() }}][{{ '\\n\\nx\\n'.strip('\\n') }}]",
		  NULL, "[a][a  ][  a][x]" },
		{ "{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith('bc') }}{{ 'abc'.startswith(('x', 'a')) }}", NULL,
		  "TrueTrueTrue" },
		{ "{{ 'a b  c '.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a,b,c'.rsplit(',', 1) }}",
		  NULL, "['a', 'b', 'c'] ['a', 'b', '', 'c'] ['a', 'b,c'] ['a,b', 'c']" },
		{ "{{ 'x</think>y'.split('</think>')[-1] }} {{ 'aB'.upper() }}{{ 'aB'.lower() }} {{ 'hi there'.title() }} {{ 'hI'.capitalize() }}",
		  NULL, "y ABab Hi There Hi" },
		{ "{{ 'aaa'.replace('a', 'bb') }} {{ 'abcb'.find('b') }} {{ 'abcb'.rfind('b') }} {{ 'abcb'.count('b') }} {{ '-'.join(['a', 'b']) }}",
		  NULL, "bbbbbb 1 3 2 a-b" },
		{ "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 5) }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }}",
		  "{\"d\": {\"a\": 1}}", "1 None 5 ['a'] [1] [('a', 1)]" },
		{ "{{ '12'.isdigit() }}{{ 'ab'.isalpha() }}{{ [1, 2, 1].count(1) }}{{ [1, 2].index(2) }}", NULL,
		  "TrueTrue21" },
	};
	RUN(cs);
}

static void errors(void **state)
{
	(void)state;
	/* compile: syntax errors name their line, unknown names are refused */
	expect_err("a\nb\n{% if %}", NULL, LOOM_EFORMAT, "line 3");
	expect_err("{% for x in y %}", NULL, LOOM_EFORMAT, "endfor");
	expect_err("{{ 1 + }}", NULL, LOOM_EFORMAT, "line 1");
	expect_err("{{ 'abc }}", NULL, LOOM_EFORMAT, "unterminated");
	expect_err("x\n{{ s|wordwrap }}", NULL, LOOM_EUNSUPPORTED, "line 2: unsupported filter 'wordwrap'");
	expect_err("{{ s is foo }}", NULL, LOOM_EUNSUPPORTED, "unsupported test 'foo'");
	expect_err("{{ s.frobnicate() }}", NULL, LOOM_EUNSUPPORTED, "unsupported method 'frobnicate'");
	expect_err("{{ lipsum() }}", NULL, LOOM_EUNSUPPORTED, "unsupported function 'lipsum'");
	expect_err("{% include 'x' %}", NULL, LOOM_EUNSUPPORTED, "unsupported tag 'include'");
	expect_err("{% endif %}", NULL, LOOM_EFORMAT, "endif");
	expect_err("{# open", NULL, LOOM_EFORMAT, "comment");
	/* runtime: LOOM_EINVAL with the message */
	expect_err("x\n{{ raise_exception('Roles must alternate') }}", NULL, LOOM_EINVAL,
		   "line 2: Roles must alternate");
	expect_err("{{ x.y }}", NULL, LOOM_EINVAL, "'x' is undefined");
	expect_err("{{ d.a.b }}", "{\"d\": {}}", LOOM_EINVAL, "has no attribute 'a'");
	expect_err("{{ 'a' + 1 }}", NULL, LOOM_EINVAL, "concatenate");
	expect_err("{{ 1 / 0 }}", NULL, LOOM_EINVAL, "division by zero");
	expect_err("{% for x in none %}{% endfor %}", NULL, LOOM_EINVAL, "not iterable");
	expect_err("{% set l = [] %}{{ l.append(1) }}", NULL, LOOM_EINVAL, "unsafe");
	expect_err("{% set x = 1 %}{% set x.a = 2 %}", NULL, LOOM_EINVAL, "namespace");
	expect_err("{{ undefined_thing|tojson }}", NULL, LOOM_EINVAL, "JSON serializable");
	expect_err("{{ 1 < 'a' }}", NULL, LOOM_EINVAL, "not supported");
	char *out;
	assert_int_equal(render("x", "[1]", &out), LOOM_EINVAL); /* context not an object */
}

static void limits(void **state)
{
	(void)state;
	char *src, *out;
	size_t n = 20000;
	/* range is capped as jinja2's sandbox caps it */
	expect_err("{% for i in range(100000000) %}{% endfor %}", NULL, LOOM_EINVAL, "Range too big");
	/* a loop that runs too long stops on the step budget */
	expect_err("{% set r = range(100000) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
		   NULL, LOOM_EINVAL, "steps");
	/* or on memory, when each step makes values */
	expect_err("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
		   NULL, LOOM_EINVAL, "MiB");
	/* endless recursion */
	expect_err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, LOOM_EINVAL, "nested");
	/* output size */
	expect_err("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", NULL, LOOM_EINVAL, "output");
	/* memory: a string doubling in a loop */
	expect_err("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
		   NULL, LOOM_EINVAL, NULL);
	/* deep nesting fails to compile instead of overflowing the stack */
	src = malloc(2 * n + 16);
	assert_non_null(src);
	size_t k = (size_t)sprintf(src, "{{ ");
	memset(src + k, '(', n);
	k += n;
	src[k++] = '1';
	memset(src + k, ')', n);
	k += n;
	strcpy(src + k, " }}");
	assert_int_equal(render(src, NULL, &out), LOOM_EFORMAT);
	k = 0;
	for (size_t i = 0; i < 300; i++)
		k += (size_t)sprintf(src + k, "{%% if true %%}");
	assert_int_equal(render(src, NULL, &out), LOOM_EFORMAT);
	/* a nested value printed */
	expect_err("{% set ns = namespace(v=[]) %}{% for i in range(5000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v }}",
		   NULL, LOOM_EINVAL, "deeply");
	free(src);
}

/* ---- every N-th allocation fails: errors, never crashes or leaks ---- */

static char *read_text(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long len;
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	fseek(f, 0, SEEK_SET);
	b = malloc((size_t)len + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
	b[len] = '\0';
	fclose(f);
	*n = (size_t)len;
	return b;
}

static void alloc_failures(void **state)
{
	(void)state;
	size_t n;
	char *src = read_text(lt_shared_path("fixtures/chat-templates/Qwen-Qwen3-0.6B.jinja"), &n);
	json_t *ctx = json_loads("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"},"
				 "{\"role\": \"assistant\", \"content\": \"<think>r</think>ok\"}],"
				 "\"add_generation_prompt\": true}", 0, NULL);
	int ok = 0;
	assert_non_null(ctx);
	for (long k = 1; k < 400; k++) {
		loom_jinja *t = NULL;
		char *out = NULL;
		size_t len;
		loom_alloc_fail_after(k);
		loom_err rc = loom_jinja_compile(src, n, &t);
		if (!rc) {
			rc = loom_jinja_render(t, ctx, &out, &len);
			loom_jinja_free(t);
		}
		loom_alloc_fail_reset();
		assert_true(rc == LOOM_OK || rc == LOOM_ENOMEM);
		if (!rc)
			ok++;
		loom_free(out);
	}
	assert_true(ok > 0);
	json_decref(ctx);
	free(src);
}

/* ---- the real templates against jinja2 ---- */

typedef struct fixture {
	const char *path;  /* under LOOM_SHARED */
	const char *bos, *eos; /* NULL: not passed (the tokenizer has none) */
	bool tokenizer_config; /* path is a tokenizer_config.json */
} fixture;

static const fixture fixtures[] = {
	{ "fixtures/chat-templates/Qwen-Qwen2.5-7B-Instruct.jinja", NULL, "<|im_end|>", false },
	{ "fixtures/chat-templates/Qwen-Qwen3-0.6B.jinja", NULL, "<|im_end|>", false },
	{ "fixtures/chat-templates/google-gemma-2-2b-it.jinja", "<bos>", "<eos>", false },
	{ "fixtures/chat-templates/meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", false },
	{ "fixtures/chat-templates/meta-llama-Llama-3.2-3B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>", false },
	{ "fixtures/chat-templates/microsoft-Phi-3.5-mini-instruct.jinja", "<s>", "<|endoftext|>", false },
	{ "fixtures/chat-templates/mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>", false },
	{ "fixtures/llama3.2-1b-instruct/tokenizer_config.json", NULL, NULL, true },
	{ "fixtures/qwen2.5-0.5b-instruct/tokenizer_config.json", NULL, NULL, true },
	{ "fixtures/qwen3-0.6b/tokenizer_config.json", NULL, NULL, true },
	{ "fixtures/mistral-7b-instruct-v0.2/tokenizer_config.json", NULL, NULL, true },
	{ "fixtures/gemma-2-2b-it/tokenizer_config.json", NULL, NULL, true },
	{ "fixtures/phi-3-mini-4k-instruct/tokenizer_config.json", NULL, NULL, true },
};

#define TOOLS                                                                                      \
	"\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\","          \
	" \"description\": \"Current weather in a city\", \"parameters\": {\"type\": \"object\","  \
	" \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"City name, e.g. Paris\"},"\
	" \"unit\": {\"type\": \"string\", \"enum\": [\"celsius\", \"fahrenheit\"]}},"            \
	" \"required\": [\"city\"]}, \"return\": {\"type\": \"number\"}}}]"
#define TOOL_CALL                                                                                  \
	"{\"role\": \"assistant\", \"content\": \"\", \"tool_calls\": [{\"id\": \"call12345\","   \
	" \"type\": \"function\", \"function\": {\"name\": \"get_weather\","                       \
	" \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}}]}"
#define TOOL_RESULT "{\"role\": \"tool\", \"tool_call_id\": \"call12345\", \"content\": \"22.5\"}"
#define U(s) "{\"role\": \"user\", \"content\": \"" s "\"}"
#define A(s) "{\"role\": \"assistant\", \"content\": \"" s "\"}"
#define S(s) "{\"role\": \"system\", \"content\": \"" s "\"}"

/* Conversations: the "messages" and other keys of the context (without the braces). */
static const char *const convs[] = {
	"\"messages\": [" U("Hello!") "], \"add_generation_prompt\": true",
	"\"messages\": [" U("Hello!") "], \"add_generation_prompt\": false",
	"\"messages\": [" S("You are a helpful assistant.") ", " U("What is 2+2?") "], \"add_generation_prompt\": true",
	"\"messages\": [" U("Hi") ", " A("Hello! How can I help?") ", " U("Tell me a joke.") "], \"add_generation_prompt\": true",
	"\"messages\": [" S("  Be brief.\\n") ", " U("  Hi  ") ", " A("Hey.") ", " U("Caf\xc3\xa9 \xe2\x9c\x93 \\\"quoted\\\" {{ not a tag }}\\nline2") ", " A("Done\\n") "], \"add_generation_prompt\": false",
	"\"messages\": [" U("Weather in Paris?") "], \"add_generation_prompt\": true, " TOOLS,
	"\"messages\": [" U("Weather in Paris?") ", " TOOL_CALL ", " TOOL_RESULT "], \"add_generation_prompt\": true, " TOOLS,
	"\"messages\": [" S("sys") ", " U("Weather in Paris?") ", " TOOL_CALL ", " TOOL_RESULT ", " A("It is 22.5 C.") ", " U("Thanks") "], \"add_generation_prompt\": false, " TOOLS,
	"\"messages\": [" U("a") ", " U("b") "], \"add_generation_prompt\": true",
	"\"messages\": [" A("I start") ", " U("ok") "], \"add_generation_prompt\": true",
	"\"messages\": [" U("q") ", " A("<think>\\nreasoning here\\n</think>\\n\\nanswer") ", " U("q2") "], \"add_generation_prompt\": true, \"enable_thinking\": false",
	"\"messages\": [" U("q") ", " A("<think>r</think>final") "], \"add_generation_prompt\": false, \"tools\": null",
	"\"messages\": [" U("q") ", {\"role\": \"assistant\", \"content\": \"a\", \"reasoning_content\": \"why\"}, " U("more") "], \"add_generation_prompt\": true",
	"\"messages\": [" U("Weather?") ", " TOOL_CALL ", {\"role\": \"tool\", \"tool_call_id\": \"call12345\", \"content\": {\"temp\": 22.5, \"sky\": \"clear\"}}], \"add_generation_prompt\": true",
	"\"messages\": [], \"add_generation_prompt\": true",
	"\"messages\": [" U("no date given") "], \"add_generation_prompt\": true, \"no_date\": true",
};

static bool oracle_available(void)
{
	return system("/usr/bin/python3 -c 'import jinja2' >/dev/null 2>&1") == 0;
}

/* The template text of a fixture, and its bos/eos from the tokenizer_config. */
static char *fixture_template(const fixture *fx, const char **bos, const char **eos, json_t **cfg)
{
	size_t n;
	char *text = read_text(lt_shared_path(fx->path), &n);
	*cfg = NULL;
	*bos = fx->bos;
	*eos = fx->eos;
	if (!fx->tokenizer_config)
		return text;
	*cfg = json_loads(text, JSON_DECODE_INT_AS_REAL, NULL); /* model_max_length: 1e30 */
	free(text);
	assert_non_null(*cfg);
	const char *t = json_string_value(json_object_get(*cfg, "chat_template"));
	assert_non_null(t);
	*bos = json_string_value(json_object_get(*cfg, "bos_token"));
	*eos = json_string_value(json_object_get(*cfg, "eos_token"));
	return strdup(t);
}

static void write_text(const char *path, const char *s, size_t n)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(s, 1, n, f), n);
	fclose(f);
}

static char *ctx_text(size_t c, const char *bos, const char *eos)
{
	json_t *o;
	char buf[8192];
	snprintf(buf, sizeof buf, "{%s}", convs[c]);
	o = json_loads(buf, 0, NULL);
	if (!o)
		fail_msg("conversation %zu is not JSON", c);
	if (bos)
		json_object_set_new(o, "bos_token", json_string(bos));
	if (eos)
		json_object_set_new(o, "eos_token", json_string(eos));
	if (json_object_get(o, "no_date"))
		json_object_del(o, "no_date"); /* strftime_now decides: compared the same day */
	else
		json_object_set_new(o, "date_string", json_string("26 Jul 2024"));
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

static void fixtures_vs_jinja2(void **state)
{
	(void)state;
	const size_t nc = sizeof convs / sizeof convs[0];
	size_t total_same = 0;
	if (!oracle_available()) {
		print_message("SKIPPED: /usr/bin/python3 cannot import jinja2 (apt-get install python3-jinja2)\n");
		skip();
	}
	for (size_t f = 0; f < sizeof fixtures / sizeof fixtures[0]; f++) {
		const char *bos, *eos;
		json_t *cfg;
		char *tpl = fixture_template(&fixtures[f], &bos, &eos, &cfg), path[1024];
		char *dir = lt_tmpdir("jinja");
		loom_jinja *t;
		size_t same = 0, both_fail = 0;
		snprintf(path, sizeof path, "%s/template.jinja", dir);
		write_text(path, tpl, strlen(tpl));
		for (size_t c = 0; c < nc; c++) {
			char *ctx = ctx_text(c, bos, eos);
			snprintf(path, sizeof path, "%s/c%02zu.json", dir, c);
			write_text(path, ctx, strlen(ctx));
			free(ctx);
		}
		time_t day0 = time(NULL) / 86400;
		if (lt_sh("/usr/bin/python3 tests/common/jinja_oracle.py '%s/template.jinja' '%s'", dir, dir))
			fail_msg("%s: the oracle failed", fixtures[f].path);
		assert_int_equal(loom_jinja_compile(tpl, strlen(tpl), &t), LOOM_OK);
		for (size_t c = 0; c < nc; c++) {
			char *ctx = ctx_text(c, bos, eos), *out = NULL, *want;
			json_t *cj = json_loads(ctx, 0, NULL);
			size_t len, wn;
			struct stat st;
			loom_err rc = loom_jinja_render(t, cj, &out, &len);
			snprintf(path, sizeof path, "%s/c%02zu.out", dir, c);
			if (stat(path, &st) == 0) {
				want = read_text(path, &wn);
				if (rc != LOOM_OK)
					fail_msg("%s conversation %zu: jinja2 renders, loom fails: %s\n%s",
						 fixtures[f].path, c, loom_errmsg(), ctx);
				if (len != wn || memcmp(out, want, wn)) {
					if (time(NULL) / 86400 != day0)
						print_message("%s conversation %zu: differs across midnight, ignored\n",
							      fixtures[f].path, c);
					else
						fail_msg("%s conversation %zu differs:\n--- jinja2 ---\n%s\n--- loom ---\n%s\n--- context ---\n%s",
							 fixtures[f].path, c, want, out, ctx);
				} else {
					same++;
				}
				free(want);
			} else {
				snprintf(path, sizeof path, "%s/c%02zu.out.err", dir, c);
				want = read_text(path, &wn);
				if (rc != LOOM_EINVAL)
					fail_msg("%s conversation %zu: jinja2 raises [%s], loom gives %s\n%s",
						 fixtures[f].path, c, want, rc ? loom_strerror(rc) : out, ctx);
				both_fail++;
				free(want);
			}
			loom_free(out);
			json_decref(cj);
			free(ctx);
		}
		print_message("%-70s %2zu identical, %2zu raise in both\n", fixtures[f].path, same, both_fail);
		assert_true(same >= 6);
		total_same += same;
		loom_jinja_free(t);
		lt_sh("rm -rf '%s'", dir);
		loom_free(dir);
		free(tpl);
		json_decref(cfg);
	}
	assert_true(total_same >= 6 * (sizeof fixtures / sizeof fixtures[0]));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(whitespace), cmocka_unit_test(expressions),
		cmocka_unit_test(statements), cmocka_unit_test(filters),
		cmocka_unit_test(methods),    cmocka_unit_test(errors),
		cmocka_unit_test(limits),     cmocka_unit_test(alloc_failures),
		cmocka_unit_test(fixtures_vs_jinja2),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
