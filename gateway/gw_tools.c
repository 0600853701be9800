/*
 * gateway/gw_tools.c — tool-call syntaxes of the served families, parsed out
 * of a completion's text (the rules vLLM's hermes, llama3_json and mistral
 * tool parsers follow: a call that does not parse leaves the text as
 * content).
 */
#include "gw_tools.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

static const char HERMES_OPEN[] = "<tool_call>", HERMES_CLOSE[] = "</tool_call>";
static const char MISTRAL_MARK[] = "[TOOL_CALLS]", PYTHON_TAG[] = "<|python_tag|>";

gw_tools_fmt gw_tools_detect(const char *t)
{
	if (!t)
		return GW_TOOLS_NONE;
	if (strstr(t, HERMES_OPEN))
		return GW_TOOLS_HERMES;
	if (strstr(t, MISTRAL_MARK))
		return GW_TOOLS_MISTRAL;
	if (strstr(t, "\"parameters\": dictionary of argument name") || strstr(t, PYTHON_TAG))
		return GW_TOOLS_LLAMA3;
	return GW_TOOLS_NONE;
}

const char *gw_tools_fmt_name(gw_tools_fmt f)
{
	static const char *const names[] = {"none", "hermes", "llama3_json", "mistral"};
	return (unsigned)f < 4 ? names[f] : "?";
}

static const char *find(const char *s, size_t n, const char *needle)
{
	size_t k = strlen(needle);
	for (size_t i = 0; k <= n && i <= n - k; i++)
		if (memcmp(s + i, needle, k) == 0)
			return s + i;
	return NULL;
}

static bool blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strchr(" \t\r\n", s[i]))
			return false;
	return true;
}

/* One call object {"name": string, "arguments"|"parameters": object|string}
 * -> an OpenAI tool call appended to arr; false when it is not one. */
static bool add_call(json_t *arr, json_t *obj, unsigned long long seed, bool *oom)
{
	json_t *name = json_object_get(obj, "name");
	json_t *args = json_object_get(obj, "arguments");
	if (!args)
		args = json_object_get(obj, "parameters");
	if (!json_is_object(obj) || !json_is_string(name) ||
	    (args && !json_is_object(args) && !json_is_string(args)))
		return false;
	char *dumped = json_is_object(args) ? json_dumps(args, JSON_COMPACT) : NULL; /* malloc */
	const char *text = dumped ? dumped : json_is_string(args) ? json_string_value(args) : "{}";
	char id[48];
	snprintf(id, sizeof id, "call_%llx_%zu", seed, json_array_size(arr));
	json_t *call = (dumped || !json_is_object(args))
			       ? json_pack("{s:s,s:s,s:{s:O,s:s}}", "id", id, "type", "function",
					   "function", "name", name, "arguments", text)
			       : NULL;
	free(dumped);
	if (!call || json_array_append_new(arr, call)) {
		*oom = true;
		return false;
	}
	return true;
}

/* Parses JSON text [s, s+n) as one value; NULL when it is not exactly one. */
static json_t *parse(const char *s, size_t n)
{
	return json_loadb(s, n, 0, NULL);
}

static bool hermes(json_t *arr, const char *t, size_t n, unsigned long long seed, size_t *head,
		   bool *oom)
{
	const char *p = find(t, n, HERMES_OPEN);
	if (!p)
		return false;
	*head = (size_t)(p - t);
	while (p) {
		const char *body = p + strlen(HERMES_OPEN), *end = find(body, n - (size_t)(body - t),
									  HERMES_CLOSE);
		size_t bl = end ? (size_t)(end - body) : n - (size_t)(body - t);
		json_t *o = parse(body, bl);
		bool ok = o && add_call(arr, o, seed, oom);
		json_decref(o);
		if (!ok)
			return false;
		if (!end)
			break;
		const char *rest = end + strlen(HERMES_CLOSE);
		p = find(rest, n - (size_t)(rest - t), HERMES_OPEN);
		if (!p && !blank(rest, n - (size_t)(rest - t)))
			return false; /* text after the last call: not a tool-call answer */
		if (p && !blank(rest, (size_t)(p - rest)))
			return false;
	}
	return true;
}

static bool llama3(json_t *arr, const char *t, size_t n, unsigned long long seed, bool *oom)
{
	size_t i = 0;
	while (i < n && strchr(" \t\r\n", t[i]))
		i++;
	if (n - i >= strlen(PYTHON_TAG) && memcmp(t + i, PYTHON_TAG, strlen(PYTHON_TAG)) == 0)
		i += strlen(PYTHON_TAG);
	if (i >= n || !strchr("{ \t\r\n", t[i]))
		return false;
	/* one or more objects separated by ';' */
	while (i < n) {
		json_error_t e;
		json_t *o = json_loadb(t + i, n - i, JSON_DISABLE_EOF_CHECK, &e);
		if (!o)
			return false;
		bool ok = add_call(arr, o, seed, oom);
		json_decref(o);
		if (!ok)
			return false;
		i += (size_t)e.position;
		while (i < n && strchr(" \t\r\n", t[i]))
			i++;
		if (i < n && t[i] == ';')
			i++;
		while (i < n && strchr(" \t\r\n", t[i]))
			i++;
	}
	return json_array_size(arr) > 0;
}

static bool mistral(json_t *arr, const char *t, size_t n, unsigned long long seed, size_t *head,
		    bool *oom)
{
	const char *p = find(t, n, MISTRAL_MARK);
	if (!p)
		return false;
	*head = (size_t)(p - t);
	const char *body = p + strlen(MISTRAL_MARK);
	json_t *a = parse(body, n - (size_t)(body - t)), *o;
	size_t k;
	bool ok = json_is_array(a) && json_array_size(a) > 0;
	json_array_foreach(a, k, o)
		if (ok)
			ok = add_call(arr, o, seed, oom);
	json_decref(a);
	return ok;
}

loom_err gw_tools_parse(gw_tools_fmt f, const char *text, size_t len, unsigned long long id_seed,
			json_t **calls, char **content)
{
	json_t *arr = json_array();
	size_t head = 0;
	bool oom = !arr, ok = false;
	*calls = NULL;
	*content = NULL;
	if (!oom) {
		if (f == GW_TOOLS_HERMES)
			ok = hermes(arr, text, len, id_seed, &head, &oom);
		else if (f == GW_TOOLS_LLAMA3)
			ok = llama3(arr, text, len, id_seed, &oom);
		else if (f == GW_TOOLS_MISTRAL)
			ok = mistral(arr, text, len, id_seed, &head, &oom);
	}
	if (oom) {
		json_decref(arr);
		return loom_fail(LOOM_ENOMEM, "out of memory parsing tool calls");
	}
	if (!ok) {
		json_decref(arr);
		*content = loom_strndup(text, len);
		return *content ? LOOM_OK : loom_fail(LOOM_ENOMEM, "out of memory");
	}
	*calls = arr;
	if (head && !blank(text, head) && !(*content = loom_strndup(text, head))) {
		json_decref(arr);
		*calls = NULL;
		return loom_fail(LOOM_ENOMEM, "out of memory");
	}
	return LOOM_OK;
}

/* The start of the longest suffix of s that is a proper prefix of mark. */
static size_t partial_at(const char *s, size_t n, const char *mark)
{
	size_t k = strlen(mark);
	for (size_t l = k - 1 < n ? k - 1 : n; l > 0; l--)
		if (memcmp(s + n - l, mark, l) == 0)
			return n - l;
	return n;
}

size_t gw_tools_safe_prefix(gw_tools_fmt f, const char *text, size_t len)
{
	const char *mark = f == GW_TOOLS_HERMES ? HERMES_OPEN : f == GW_TOOLS_MISTRAL ? MISTRAL_MARK
											 : NULL;
	if (mark) {
		const char *p = find(text, len, mark);
		return p ? (size_t)(p - text) : partial_at(text, len, mark);
	}
	if (f != GW_TOOLS_LLAMA3)
		return len;
	/* Llama 3 answers a call with nothing but JSON: hold back while the
	 * output may still be one (blank so far, '{', or the python tag) */
	size_t i = 0;
	while (i < len && strchr(" \t\r\n", text[i]))
		i++;
	if (i == len || text[i] == '{')
		return 0;
	size_t tl = strlen(PYTHON_TAG), m = len - i < tl ? len - i : tl;
	if (memcmp(text + i, PYTHON_TAG, m) == 0)
		return 0;
	return len;
}
