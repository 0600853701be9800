/*
 * gateway/gw_guide.c — structured-output fields and tool_choice (gw_guide.h).
 *
 * Every guide is compiled here once (common/grammar.h), so a schema, regex
 * or choice list the worker's grammar would refuse is a 400 naming the
 * field the client used, with the grammar's message. The text sent to the
 * worker is canonical JSON (json_dumps, sorted keys off: the order of
 * "properties" is the order generated) so that equal schemas share the
 * worker's grammar cache.
 */
#include "gw_guide.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/grammar.h"
#include "common/proto.h"

#define BAD "invalid_request_error"

static json_t *field(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return (v && !json_is_null(v)) ? v : NULL;
}

static bool nomem(gw_api_err *e)
{
	gw_api_err_set(e, 500, "internal_error", NULL, NULL, "out of memory");
	return false;
}

/* Sets the guide (text copied), refusing a second one. */
static bool set_guide(gw_params *p, const char *param, int kind, const char *text,
		      gw_api_err *e)
{
	if (p->guide != LOOM_GUIDE_NONE) {
		gw_api_err_set(e, 400, BAD, param, NULL, "'%s' and '%s' both constrain the output; "
			       "give one of them", p->guide_param, param);
		return false;
	}
	if (text && strlen(text) >= LOOM_MAX_GUIDE) {
		gw_api_err_set(e, 400, BAD, param, NULL, "'%s' is longer than %u bytes", param,
			       LOOM_MAX_GUIDE - 1);
		return false;
	}
	p->guide = kind;
	snprintf(p->guide_param, sizeof p->guide_param, "%s", param);
	if (text && !(p->guide_text = loom_strdup(text)))
		return nomem(e);
	return true;
}

/* A schema given as an object (or a boolean) or as JSON text. */
static bool schema_guide(gw_params *p, const char *param, json_t *v, gw_api_err *e)
{
	json_t *own = NULL;
	json_error_t je;

	if (json_is_string(v)) {
		own = json_loads(json_string_value(v), JSON_DECODE_ANY, &je);
		if (!own) {
			gw_api_err_set(e, 400, BAD, param, NULL, "'%s' is not a JSON schema: invalid "
				       "JSON at column %d: %s", param, je.column, je.text);
			return false;
		}
		v = own;
	}
	if (!json_is_object(v) && !json_is_boolean(v)) {
		json_decref(own);
		gw_api_err_set(e, 400, BAD, param, NULL, "'%s' must be a JSON schema (an object)",
			       param);
		return false;
	}
	char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	json_decref(own);
	if (!text)
		return nomem(e);
	bool ok = set_guide(p, param, LOOM_GUIDE_JSON_SCHEMA, text, e);
	free(text);
	return ok;
}

static bool regex_guide(gw_params *p, const char *param, json_t *v, gw_api_err *e)
{
	if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
		gw_api_err_set(e, 400, BAD, param, NULL, "'%s' must be a string (a regex) "
			       "without NUL characters", param);
		return false;
	}
	return set_guide(p, param, LOOM_GUIDE_REGEX, json_string_value(v), e);
}

static bool choice_guide(gw_params *p, const char *param, json_t *v, gw_api_err *e)
{
	size_t i;
	json_t *x;

	if (!json_is_array(v) || !json_array_size(v)) {
		gw_api_err_set(e, 400, BAD, param, NULL, "'%s' must be a non-empty array of strings",
			       param);
		return false;
	}
	json_array_foreach(v, i, x) {
		if (!json_is_string(x)) {
			gw_api_err_set(e, 400, BAD, param, NULL, "'%s'[%zu] must be a string", param, i);
			return false;
		}
	}
	char *text = json_dumps(v, JSON_COMPACT);
	if (!text)
		return nomem(e);
	bool ok = set_guide(p, param, LOOM_GUIDE_CHOICE, text, e);
	free(text);
	return ok;
}

static bool response_format(gw_params *p, json_t *rf, gw_api_err *e)
{
	const char *P = "response_format";
	json_t *t = field(rf, "type");

	if (!json_is_object(rf) || !json_is_string(t)) {
		gw_api_err_set(e, 400, BAD, P, NULL, "'response_format' must be {\"type\": \"text\" | "
			       "\"json_object\" | \"json_schema\", ...}");
		return false;
	}
	const char *type = json_string_value(t);
	if (!strcmp(type, "text"))
		return true;
	if (!strcmp(type, "json_object"))
		return set_guide(p, P, LOOM_GUIDE_JSON_OBJECT, NULL, e);
	if (strcmp(type, "json_schema")) {
		gw_api_err_set(e, 400, BAD, P, NULL, "'response_format.type' '%s' is not supported "
			       "(text, json_object, json_schema)", type);
		return false;
	}
	json_t *js = field(rf, "json_schema");
	json_t *schema = js ? field(js, "schema") : NULL;
	if (!json_is_object(js) || !schema) {
		gw_api_err_set(e, 400, BAD, P, NULL, "'response_format' of type json_schema needs "
			       "\"json_schema\": {\"name\": ..., \"schema\": {...}}");
		return false;
	}
	json_t *strict = field(js, "strict");
	if (strict && !json_is_boolean(strict)) {
		gw_api_err_set(e, 400, BAD, P, NULL, "'response_format.json_schema.strict' must be a "
			       "boolean");
		return false;
	}
	/* strict or not, the output follows the schema (the grammar always enforces it) */
	if (json_is_string(schema)) {
		gw_api_err_set(e, 400, BAD, P, NULL, "'response_format.json_schema.schema' must be "
			       "an object");
		return false;
	}
	return schema_guide(p, P, schema, e);
}

static bool structured_outputs(gw_params *p, json_t *so, gw_api_err *e)
{
	const char *P = "structured_outputs";
	const char *known[] = { "json", "regex", "choice", "json_object" };
	const char *key;
	json_t *v;

	if (!json_is_object(so)) {
		gw_api_err_set(e, 400, BAD, P, NULL, "'structured_outputs' must be an object");
		return false;
	}
	json_object_foreach(so, key, v) {
		bool ok = json_is_null(v) || !strcmp(key, "disable_fallback") ||
			  !strcmp(key, "disable_any_whitespace") ||
			  !strcmp(key, "disable_additional_properties") || !strcmp(key, "whitespace_pattern");
		for (size_t i = 0; i < sizeof known / sizeof *known; i++)
			ok |= !strcmp(key, known[i]);
		if (!ok) {
			gw_api_err_set(e, 400, BAD, P, NULL, "'structured_outputs.%s' is not supported "
				       "(json, regex, choice, json_object)", key);
			return false;
		}
	}
	if ((v = field(so, "json")) && !schema_guide(p, "structured_outputs.json", v, e))
		return false;
	if ((v = field(so, "regex")) && !regex_guide(p, "structured_outputs.regex", v, e))
		return false;
	if ((v = field(so, "choice")) && !choice_guide(p, "structured_outputs.choice", v, e))
		return false;
	if ((v = field(so, "json_object")) && json_is_true(v) &&
	    !set_guide(p, "structured_outputs.json_object", LOOM_GUIDE_JSON_OBJECT, NULL, e))
		return false;
	return true;
}

/* Compiles the guide once: what the worker would refuse is a 400 here. */
static bool validate(gw_params *p, gw_api_err *e)
{
	loom_grammar *g = NULL;
	loom_err rc = loom_grammar_from_guide(p->guide, p->guide_text, &g);

	loom_grammar_free(g);
	if (rc == LOOM_ENOMEM)
		return nomem(e);
	if (rc) {
		gw_api_err_set(e, 400, BAD, p->guide_param, NULL, "'%s': %s", p->guide_param,
			       loom_errmsg());
		return false;
	}
	return true;
}

static bool tool_choice(json_t *root, gw_params *p, gw_api_err *e)
{
	json_t *tc = field(root, "tool_choice"), *ptc = field(root, "parallel_tool_calls");

	if (ptc) {
		if (!json_is_boolean(ptc)) {
			gw_api_err_set(e, 400, BAD, "parallel_tool_calls", NULL,
				       "'parallel_tool_calls' must be a boolean");
			return false;
		}
		p->parallel_tool_calls = json_is_true(ptc);
	}
	p->tool_choice = GW_TOOL_CHOICE_AUTO;
	if (!tc)
		return true;
	if (p->api != GW_API_CHAT) {
		gw_api_err_set(e, 400, BAD, "tool_choice", NULL,
			       "'tool_choice' is supported on /v1/chat/completions only");
		return false;
	}
	if (json_is_string(tc)) {
		const char *s = json_string_value(tc);
		if (!strcmp(s, "none"))
			p->tool_choice = GW_TOOL_CHOICE_NONE;
		else if (!strcmp(s, "auto"))
			p->tool_choice = GW_TOOL_CHOICE_AUTO;
		else if (!strcmp(s, "required"))
			p->tool_choice = GW_TOOL_CHOICE_REQUIRED;
		else {
			gw_api_err_set(e, 400, BAD, "tool_choice", NULL, "'tool_choice' must be \"none\", "
				       "\"auto\", \"required\" or {\"type\": \"function\", "
				       "\"function\": {\"name\": ...}}; got \"%s\"", s);
			return false;
		}
	} else {
		json_t *fn = json_is_object(tc) ? field(tc, "function") : NULL;
		json_t *name = fn ? field(fn, "name") : NULL;
		if (!json_is_string(name)) {
			gw_api_err_set(e, 400, BAD, "tool_choice", NULL, "'tool_choice' must be \"none\", "
				       "\"auto\", \"required\" or {\"type\": \"function\", "
				       "\"function\": {\"name\": ...}}");
			return false;
		}
		p->tool_choice = GW_TOOL_CHOICE_NAMED;
		if (!(p->tool_name = loom_strdup(json_string_value(name))))
			return nomem(e);
	}
	if (p->tool_choice == GW_TOOL_CHOICE_NONE || p->tool_choice == GW_TOOL_CHOICE_AUTO)
		return true;
	if (!p->tools || !json_array_size(p->tools)) {
		gw_api_err_set(e, 400, BAD, "tool_choice", NULL, "'tool_choice' %s needs 'tools'",
			       p->tool_choice == GW_TOOL_CHOICE_NAMED ? "naming a function"
								      : "\"required\"");
		return false;
	}
	if (p->tool_choice == GW_TOOL_CHOICE_NAMED) {
		size_t i;
		json_t *t;
		bool found = false;
		json_array_foreach(p->tools, i, t) {
			json_t *n = json_object_get(json_object_get(t, "function"), "name");
			found |= json_is_string(n) && !strcmp(json_string_value(n), p->tool_name);
		}
		if (!found) {
			gw_api_err_set(e, 400, BAD, "tool_choice", NULL, "'tool_choice' names function "
				       "'%s', which is not in 'tools'", p->tool_name);
			return false;
		}
	}
	if (p->guide != LOOM_GUIDE_NONE) {
		gw_api_err_set(e, 400, BAD, "tool_choice", NULL, "'tool_choice' %s forces a tool call "
			       "and cannot be combined with '%s'", p->tool_choice == GW_TOOL_CHOICE_NAMED
			       ? "naming a function" : "\"required\"", p->guide_param);
		return false;
	}
	return true;
}

bool gw_guide_parse(json_t *root, gw_params *p, gw_api_err *e)
{
	json_t *v;

	p->guide = LOOM_GUIDE_NONE;
	if ((v = field(root, "response_format")) && !response_format(p, v, e))
		return false;
	if ((v = field(root, "guided_json")) && !schema_guide(p, "guided_json", v, e))
		return false;
	if ((v = field(root, "guided_regex")) && !regex_guide(p, "guided_regex", v, e))
		return false;
	if ((v = field(root, "guided_choice")) && !choice_guide(p, "guided_choice", v, e))
		return false;
	if ((v = field(root, "structured_outputs")) && !structured_outputs(p, v, e))
		return false;
	if ((v = field(root, "guided_grammar"))) {
		gw_api_err_set(e, 400, BAD, "guided_grammar", NULL, "'guided_grammar' (EBNF) is not "
			       "supported; use guided_json, guided_regex or guided_choice");
		return false;
	}
	if (p->guide != LOOM_GUIDE_NONE && !validate(p, e))
		return false;
	return tool_choice(root, p, e);
}

/* ---- tool calls forced by a grammar ---- */

/* {"type":"object","properties":{"name":{"const":N},ARGS:params},"required":[...]}
 * for one function; NULL when out of memory. */
static json_t *call_schema(json_t *fn, const char *args_key)
{
	json_t *params = json_object_get(fn, "parameters");
	json_t *props = json_object(), *req = json_pack("[ss]", "name", args_key);
	json_t *o = json_pack("{s:s, s:o, s:o}", "type", "object", "properties", props,
			      "required", req);
	if (!o)
		return NULL;
	if (json_object_set_new(props, "name",
				json_pack("{s:O}", "const", json_object_get(fn, "name"))) ||
	    json_object_set_new(props, args_key, params && json_is_object(params)
							 ? json_deep_copy(params)
							 : json_pack("{s:s}", "type", "object"))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

bool gw_guide_tool_call(gw_params *p, gw_tools_fmt f, const char *model, gw_api_err *e)
{
	const char *prefix, *suffix, *args = "arguments";
	json_t *calls = json_array(), *t, *schema = NULL, *wrap = NULL;
	size_t i;
	char *text = NULL;
	bool ok = false;

	switch (f) {
	case GW_TOOLS_HERMES:
		prefix = "<tool_call>\n";
		suffix = "\n</tool_call>";
		break;
	case GW_TOOLS_LLAMA3:
		prefix = suffix = "";
		args = "parameters";
		break;
	case GW_TOOLS_MISTRAL:
		prefix = "[TOOL_CALLS] ";
		suffix = "";
		break;
	default:
		json_decref(calls);
		gw_api_err_set(e, 400, BAD, "tool_choice", NULL, "model '%s' has no tool-call format: "
			       "its chat template shows none of the syntaxes loom knows (Hermes "
			       "<tool_call>, Llama 3 JSON, Mistral [TOOL_CALLS]), so a tool call "
			       "cannot be forced; use tool_choice \"auto\" or \"none\"", model);
		return false;
	}
	if (!calls)
		return nomem(e);
	json_array_foreach(p->tools, i, t) {
		json_t *fn = json_object_get(t, "function");
		const char *name = json_string_value(json_object_get(fn, "name"));
		if (p->tool_choice == GW_TOOL_CHOICE_NAMED && strcmp(name, p->tool_name))
			continue;
		json_t *c = call_schema(fn, args);
		if (!c || json_array_append_new(calls, c))
			goto oom;
	}
	schema = json_array_size(calls) == 1 ? json_incref(json_array_get(calls, 0))
					     : json_pack("{s:O}", "anyOf", calls);
	if (!schema)
		goto oom;
	if (f == GW_TOOLS_MISTRAL) { /* an array of calls */
		json_t *arr = json_pack("{s:s, s:O, s:i}", "type", "array", "items", schema,
					"minItems", 1);
		if (!arr || (!p->parallel_tool_calls &&
			     json_object_set_new(arr, "maxItems", json_integer(1)))) {
			json_decref(arr);
			goto oom;
		}
		json_decref(schema);
		schema = arr;
	}
	wrap = json_pack("{s:s, s:O, s:s}", "prefix", prefix, "schema", schema, "suffix", suffix);
	if (!wrap || !(text = json_dumps(wrap, JSON_COMPACT)))
		goto oom;
	p->guide = LOOM_GUIDE_WRAPPED;
	snprintf(p->guide_param, sizeof p->guide_param, "tools");
	loom_free(p->guide_text);
	p->guide_text = loom_strdup(text);
	if (!p->guide_text)
		goto oom;
	ok = validate(p, e);
	goto out;
oom:
	nomem(e);
out:
	free(text);
	json_decref(wrap);
	json_decref(schema);
	json_decref(calls);
	return ok;
}
