/*
 * gateway/gw_openai.c — OpenAI request parsing (jansson) and response shaping.
 *
 * Parsing walks the known fields one by one; each checker returns false after
 * filling the error, so the first problem found is the one reported.
 */
#include "gw_openai.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "gw_guide.h"

#define BAD "invalid_request_error"

/* Writes msg into out (n bytes) with each ipc:// address (a worker's socket,
 * a path on the gateway's disk) shown as "ipc:(hidden)". */
static void hide_ipc_paths(const char *msg, char *out, size_t n)
{
	static const char mark[] = "ipc://", shown[] = "ipc:(hidden)";
	size_t o = 0;
	while (*msg && o + 1 < n) {
		if (strncmp(msg, mark, sizeof mark - 1)) {
			out[o++] = *msg++;
			continue;
		}
		msg += sizeof mark - 1;
		while (*msg && !strchr(" \t\n'\",;)", *msg))
			msg++;
		for (const char *s = shown; *s && o + 1 < n; s++)
			out[o++] = *s;
	}
	out[o] = '\0';
}

loom_err gw_api_err_set(gw_api_err *e, int status, const char *type, const char *param,
			const char *code, const char *fmt, ...)
{
	va_list ap;
	char msg[sizeof e->message];
	e->status = status;
	e->type = type;
	e->code = code;
	snprintf(e->param, sizeof e->param, "%s", param ? param : "");
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	hide_ipc_paths(msg, e->message, sizeof e->message);
	return LOOM_EINVAL;
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "object";
	case JSON_ARRAY: return "array";
	case JSON_STRING: return "string";
	case JSON_INTEGER: return "integer";
	case JSON_REAL: return "number";
	case JSON_TRUE:
	case JSON_FALSE: return "boolean";
	default: return "null";
	}
}

/* The field, or NULL when absent or null. */
static json_t *field(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return (v && !json_is_null(v)) ? v : NULL;
}

static bool wrong_type(gw_api_err *e, const char *k, const char *want, const json_t *v)
{
	gw_api_err_set(e, 400, BAD, k, NULL, "'%s' must be %s, got %s", k, want, type_name(v));
	return false;
}

static bool get_bool(json_t *o, const char *k, bool *out, gw_api_err *e)
{
	json_t *v = field(o, k);
	if (!v)
		return true;
	if (!json_is_boolean(v))
		return wrong_type(e, k, "a boolean", v);
	*out = json_is_true(v);
	return true;
}

/* Integer (or a number with an integral value). *set tells whether it was given. */
static bool get_int(json_t *o, const char *k, long long *out, bool *set, gw_api_err *e)
{
	json_t *v = field(o, k);
	if (set)
		*set = false;
	if (!v)
		return true;
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
	} else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
		   fabs(json_real_value(v)) < 9.2e18) {
		*out = (long long)json_real_value(v);
	} else {
		return wrong_type(e, k, "an integer", v);
	}
	if (set)
		*set = true;
	return true;
}

static bool get_num(json_t *o, const char *k, double *out, bool *set, gw_api_err *e)
{
	json_t *v = field(o, k);
	*set = false;
	if (!v)
		return true;
	if (!json_is_number(v))
		return wrong_type(e, k, "a number", v);
	*out = json_number_value(v);
	*set = true;
	return true;
}

static bool nomem(gw_api_err *e)
{
	gw_api_err_set(e, 500, "internal_error", NULL, NULL, "out of memory");
	return false;
}

static bool parse_model(json_t *root, gw_params *p, gw_api_err *e)
{
	json_t *v = field(root, "model");
	if (!v) {
		gw_api_err_set(e, 400, BAD, "model", NULL, "'model' is required");
		return false;
	}
	if (!json_is_string(v))
		return wrong_type(e, "model", "a string", v);
	if (json_string_length(v) == 0 || json_string_length(v) >= LOOM_NAME_MAX) {
		gw_api_err_set(e, 400, BAD, "model", NULL, "'model' must be 1..%d bytes",
			       LOOM_NAME_MAX - 1);
		return false;
	}
	memcpy(p->model, json_string_value(v), json_string_length(v) + 1);
	return true;
}

/* An array of token ids (each 0..INT32_MAX) into *ids and *n. */
static bool parse_ids(json_t *arr, const char *k, int32_t **ids, size_t *n, gw_api_err *e)
{
	size_t cnt = json_array_size(arr);
	if (cnt > LOOM_PROTO_MAX_IDS) {
		gw_api_err_set(e, 400, BAD, k, NULL, "'%s' has %zu token ids, more than %u", k, cnt,
			       LOOM_PROTO_MAX_IDS);
		return false;
	}
	*ids = loom_malloc((cnt ? cnt : 1) * sizeof **ids);
	if (!*ids)
		return nomem(e);
	for (size_t i = 0; i < cnt; i++) {
		json_t *x = json_array_get(arr, i);
		if (!json_is_integer(x)) {
			gw_api_err_set(e, 400, BAD, k, NULL,
				       "'%s' must be a string or an array of token ids; item %zu is %s",
				       k, i, type_name(x));
			return false;
		}
		json_int_t id = json_integer_value(x);
		if (id < 0 || id > INT32_MAX) {
			gw_api_err_set(e, 400, BAD, k, NULL, "'%s': token id %lld at %zu is out of range",
				       k, (long long)id, i);
			return false;
		}
		(*ids)[i] = (int32_t)id;
	}
	*n = cnt;
	return true;
}

static bool parse_prompt(json_t *root, const char *k, bool allow_ids, gw_params *p, gw_api_err *e)
{
	json_t *v = field(root, k);
	if (!v) {
		gw_api_err_set(e, 400, BAD, k, NULL, "'%s' is required", k);
		return false;
	}
	if (json_is_array(v) && json_array_size(v) >= 1 &&
	    (json_is_string(json_array_get(v, 0)) || json_is_array(json_array_get(v, 0)))) {
		if (json_array_size(v) > 1) {
			gw_api_err_set(e, 400, BAD, k, NULL,
				       "'%s' holds %zu prompts; only one prompt per request is supported",
				       k, json_array_size(v));
			return false;
		}
		v = json_array_get(v, 0); /* a batch of one */
	}
	if (json_is_string(v)) {
		p->prompt = loom_strndup(json_string_value(v), json_string_length(v));
		if (!p->prompt)
			return nomem(e);
		if (strlen(p->prompt) != json_string_length(v)) {
			gw_api_err_set(e, 400, BAD, k, NULL, "'%s' must not contain NUL characters", k);
			return false;
		}
		return true;
	}
	if (allow_ids && json_is_array(v)) {
		if (json_array_size(v) == 0) {
			gw_api_err_set(e, 400, BAD, k, NULL, "'%s' must not be empty", k);
			return false;
		}
		return parse_ids(v, k, &p->prompt_ids, &p->n_prompt_ids, e);
	}
	return wrong_type(e, k, allow_ids ? "a string or an array of token ids" : "a string", v);
}

/* content: a string or an array of {"type":"text","text":...} parts (joined). */
static bool parse_content(json_t *c, size_t i, char **out, gw_api_err *e)
{
	if (json_is_string(c)) {
		*out = loom_strndup(json_string_value(c), json_string_length(c));
		return *out ? true : nomem(e);
	}
	if (!json_is_array(c)) {
		gw_api_err_set(e, 400, BAD, "messages", NULL,
			       "messages[%zu].content must be a string or an array of text parts, got %s",
			       i, c ? type_name(c) : "nothing");
		return false;
	}
	size_t total = 0, k;
	json_t *part;
	json_array_foreach(c, k, part) {
		json_t *t = json_object_get(part, "type"), *tx = json_object_get(part, "text");
		if (!json_is_object(part) || !json_is_string(t) ||
		    strcmp(json_string_value(t), "text") != 0 || !json_is_string(tx)) {
			gw_api_err_set(e, 400, BAD, "messages", NULL,
				       "messages[%zu].content[%zu]: only {\"type\":\"text\",\"text\":...} "
				       "parts are supported",
				       i, k);
			return false;
		}
		total += json_string_length(tx);
	}
	*out = loom_malloc(total + 1);
	if (!*out)
		return nomem(e);
	size_t at = 0;
	json_array_foreach(c, k, part) {
		json_t *tx = json_object_get(part, "text");
		memcpy(*out + at, json_string_value(tx), json_string_length(tx));
		at += json_string_length(tx);
	}
	(*out)[at] = '\0';
	return true;
}

static bool chat_json(json_t *m, size_t i, const gw_chat_msg *msg, json_t *arr, gw_api_err *e);

static bool parse_messages(json_t *root, gw_params *p, gw_api_err *e)
{
	json_t *v = field(root, "messages");
	if (!v) {
		gw_api_err_set(e, 400, BAD, "messages", NULL, "'messages' is required");
		return false;
	}
	if (!json_is_array(v))
		return wrong_type(e, "messages", "an array", v);
	size_t n = json_array_size(v);
	if (n == 0) {
		gw_api_err_set(e, 400, BAD, "messages", NULL, "'messages' must not be empty");
		return false;
	}
	p->msgs = loom_calloc(n, sizeof *p->msgs);
	p->chat_messages = json_array();
	if (!p->msgs || !p->chat_messages)
		return nomem(e);
	for (size_t i = 0; i < n; i++) {
		json_t *m = json_array_get(v, i);
		if (!json_is_object(m)) {
			gw_api_err_set(e, 400, BAD, "messages", NULL,
				       "messages[%zu] must be an object, got %s", i, type_name(m));
			return false;
		}
		json_t *role = json_object_get(m, "role");
		if (!json_is_string(role) ||
		    gw_chat_role_parse(json_string_value(role), &p->msgs[i].role) != LOOM_OK) {
			gw_api_err_set(e, 400, BAD, "messages", NULL,
				       "messages[%zu].role must be \"system\", \"user\", \"assistant\" "
				       "or \"tool\"",
				       i);
			return false;
		}
		json_t *c = json_object_get(m, "content");
		if (!c || json_is_null(c)) {
			if (p->msgs[i].role != GW_ROLE_ASSISTANT) {
				gw_api_err_set(e, 400, BAD, "messages", NULL,
					       "messages[%zu].content is required", i);
				return false;
			}
			p->msgs[i].content = loom_strdup("");
			if (!p->msgs[i].content)
				return nomem(e);
		} else if (!parse_content(c, i, &p->msgs[i].content, e)) {
			return false;
		}
		p->n_msgs = i + 1;
		if (!chat_json(m, i, &p->msgs[i], p->chat_messages, e))
			return false;
	}
	return true;
}

/* One tool call of an assistant message, copied with its arguments parsed
 * into an object when they are a JSON object text (what templates expect:
 * transformers users pass dicts; OpenAI clients send strings). */
static json_t *tool_call_json(json_t *tc, size_t i, size_t k, gw_api_err *e)
{
	json_t *fn = json_object_get(tc, "function");
	json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
	if (!json_is_object(tc) || !json_is_object(fn) || !json_is_string(name) ||
	    (args && !json_is_string(args) && !json_is_object(args))) {
		gw_api_err_set(e, 400, BAD, "messages", NULL,
			       "messages[%zu].tool_calls[%zu] must be {\"type\": \"function\", "
			       "\"function\": {\"name\": string, \"arguments\": string}}", i, k);
		return NULL;
	}
	json_t *out = json_deep_copy(tc);
	if (!out)
		return nomem(e), NULL;
	if (json_is_string(args)) {
		json_t *parsed = json_loadb(json_string_value(args), json_string_length(args), 0, NULL);
		if (json_is_object(parsed))
			json_object_set(json_object_get(out, "function"), "arguments", parsed);
		json_decref(parsed);
	}
	return out;
}

/* The message as a model template sees it: role, content (a string), name,
 * tool_calls, tool_call_id. Appended to arr. */
static bool chat_json(json_t *m, size_t i, const gw_chat_msg *msg, json_t *arr, gw_api_err *e)
{
	json_t *o = json_object();
	if (!o || json_array_append_new(arr, o) ||
	    json_object_set_new(o, "role", json_string(gw_chat_role_name(msg->role))) ||
	    json_object_set_new(o, "content", json_string(msg->content)))
		return nomem(e);
	static const char *const strs[] = { "name", "tool_call_id" };
	for (size_t k = 0; k < sizeof strs / sizeof *strs; k++) {
		json_t *v = field(m, strs[k]);
		if (!v)
			continue;
		if (!json_is_string(v)) {
			gw_api_err_set(e, 400, BAD, "messages", NULL,
				       "messages[%zu].%s must be a string", i, strs[k]);
			return false;
		}
		if (json_object_set(o, strs[k], v))
			return nomem(e);
	}
	json_t *tcs = field(m, "tool_calls");
	if (!tcs)
		return true;
	if (!json_is_array(tcs) || msg->role != GW_ROLE_ASSISTANT) {
		gw_api_err_set(e, 400, BAD, "messages", NULL,
			       "messages[%zu].tool_calls must be an array, on an assistant message", i);
		return false;
	}
	json_t *copy = json_array(), *tc;
	size_t k;
	if (!copy || json_object_set_new(o, "tool_calls", copy))
		return nomem(e);
	json_array_foreach(tcs, k, tc) {
		json_t *c = tool_call_json(tc, i, k, e);
		if (!c || json_array_append_new(copy, c))
			return c ? nomem(e) : false;
	}
	return true;
}

/* tools, chat_template_kwargs, add_generation_prompt (vLLM's names): what a
 * model template is rendered with besides the messages. */
static bool parse_chat_extras(json_t *root, gw_params *p, gw_api_err *e)
{
	json_t *t = field(root, "tools"), *kw = field(root, "chat_template_kwargs"), *x;
	size_t i;
	p->add_generation_prompt = true;
	if (!get_bool(root, "add_generation_prompt", &p->add_generation_prompt, e))
		return false;
	if (t) {
		if (!json_is_array(t))
			return wrong_type(e, "tools", "an array", t);
		json_array_foreach(t, i, x) {
			json_t *fn = json_object_get(x, "function");
			if (!json_is_object(x) || !json_is_object(fn) ||
			    !json_is_string(json_object_get(fn, "name"))) {
				gw_api_err_set(e, 400, BAD, "tools", NULL,
					       "tools[%zu] must be {\"type\": \"function\", \"function\": "
					       "{\"name\": string, ...}}", i);
				return false;
			}
		}
		p->tools = json_incref(t);
	}
	if (kw) {
		if (!json_is_object(kw))
			return wrong_type(e, "chat_template_kwargs", "an object", kw);
		p->chat_kwargs = json_incref(kw);
	}
	return true;
}

static bool parse_stop(json_t *root, gw_params *p, gw_api_err *e)
{
	json_t *v = field(root, "stop");
	json_t *one[1];
	json_t **items = one;
	size_t n;
	if (!v)
		return true;
	if (json_is_string(v)) {
		one[0] = v;
		n = 1;
	} else if (json_is_array(v)) {
		n = json_array_size(v);
		if (n > GW_MAX_STOP) {
			gw_api_err_set(e, 400, BAD, "stop", NULL, "'stop' holds %zu strings; at most %d",
				       n, GW_MAX_STOP);
			return false;
		}
	} else {
		return wrong_type(e, "stop", "a string or an array of strings", v);
	}
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_is_array(v) ? json_array_get(v, i) : items[i];
		if (!json_is_string(s)) {
			gw_api_err_set(e, 400, BAD, "stop", NULL, "'stop' item %zu must be a string, got %s",
				       i, type_name(s));
			return false;
		}
		size_t l = json_string_length(s);
		if (l == 0)
			continue; /* an empty stop string would end every request at once: ignore it */
		if (l > GW_MAX_STOP_LEN || strlen(json_string_value(s)) != l) {
			gw_api_err_set(e, 400, BAD, "stop", NULL,
				       "'stop' strings must be at most %d bytes without NUL characters",
				       GW_MAX_STOP_LEN);
			return false;
		}
		p->stop[p->n_stop] = loom_strdup(json_string_value(s));
		if (!p->stop[p->n_stop])
			return nomem(e);
		p->n_stop++;
	}
	return true;
}

/* A number field within [lo, hi] (lo_open: lo excluded) into *out. */
static bool get_range(json_t *o, const char *k, double lo, double hi, bool lo_open, float *out,
		      gw_api_err *e)
{
	double d;
	bool set;
	if (!get_num(o, k, &d, &set, e))
		return false;
	if (!set)
		return true;
	if (!(lo_open ? d > lo : d >= lo) || !(d <= hi)) {
		gw_api_err_set(e, 400, BAD, k, NULL, "'%s' must be in %c%g, %g], got %g", k,
			       lo_open ? '(' : '[', lo, hi, d);
		return false;
	}
	*out = (float)d;
	return true;
}

/* An integer field within [0, LOOM_MAX_LOGPROBS]; *out untouched when absent. */
static bool get_k(json_t *o, const char *k, int *out, bool *set, gw_api_err *e)
{
	long long v;
	if (!get_int(o, k, &v, set, e))
		return false;
	if (*set && (v < 0 || v > LOOM_MAX_LOGPROBS)) {
		gw_api_err_set(e, 400, BAD, k, NULL, "'%s' must be between 0 and %d, got %lld", k,
			       LOOM_MAX_LOGPROBS, v);
		return false;
	}
	if (*set)
		*out = (int)v;
	return true;
}

/* logit_bias: {"token id": bias, ...}, ids as decimal strings. */
static bool parse_logit_bias(json_t *root, gw_params *p, gw_api_err *e)
{
	json_t *v = field(root, "logit_bias"), *b;
	const char *key;
	size_t n;
	if (!v)
		return true;
	if (!json_is_object(v))
		return wrong_type(e, "logit_bias", "an object of token id -> bias", v);
	n = json_object_size(v);
	if (n > LOOM_MAX_LOGIT_BIAS) {
		gw_api_err_set(e, 400, BAD, "logit_bias", NULL,
			       "'logit_bias' has %zu entries; at most %d", n, LOOM_MAX_LOGIT_BIAS);
		return false;
	}
	if (n == 0)
		return true;
	p->bias_ids = loom_malloc(n * sizeof *p->bias_ids);
	p->bias = loom_malloc(n * sizeof *p->bias);
	if (!p->bias_ids || !p->bias)
		return nomem(e);
	json_object_foreach(v, key, b) {
		char *end;
		long long id = strtoll(key, &end, 10);
		if (!*key || *end || key[0] == '-' || key[0] == '+' || id > INT32_MAX) {
			gw_api_err_set(e, 400, BAD, "logit_bias", NULL,
				       "'logit_bias' keys must be token ids, got \"%.32s\"", key);
			return false;
		}
		if (!json_is_number(b) || !(fabs(json_number_value(b)) <= 100.0)) {
			gw_api_err_set(e, 400, BAD, "logit_bias", NULL,
				       "'logit_bias' values must be numbers in [-100, 100] (token %s)",
				       key);
			return false;
		}
		for (size_t i = 0; i < p->n_bias; i++) {
			if (p->bias_ids[i] == (int32_t)id) {
				gw_api_err_set(e, 400, BAD, "logit_bias", NULL,
					       "'logit_bias' names token %lld twice", id);
				return false;
			}
		}
		p->bias_ids[p->n_bias] = (int32_t)id;
		p->bias[p->n_bias++] = (float)json_number_value(b);
	}
	return true;
}

/* The sampling controls beyond temperature/top_p/top_k (issue 13). */
static bool parse_controls(json_t *root, gw_params *p, gw_api_err *e)
{
	long long i;
	bool set;
	p->repetition_penalty = 1.0f;
	if (!get_range(root, "presence_penalty", -2, 2, false, &p->presence_penalty, e) ||
	    !get_range(root, "frequency_penalty", -2, 2, false, &p->frequency_penalty, e) ||
	    !get_range(root, "repetition_penalty", 0, 1e6, true, &p->repetition_penalty, e) ||
	    !get_range(root, "min_p", 0, 1, false, &p->min_p, e))
		return false;
	if (!get_int(root, "min_tokens", &i, &set, e))
		return false;
	if (set) {
		if (i < 0 || i > UINT32_MAX) {
			gw_api_err_set(e, 400, BAD, "min_tokens", NULL,
				       "'min_tokens' must be a non-negative integer, got %lld", i);
			return false;
		}
		p->min_tokens = (uint32_t)i;
	}
	json_t *st = field(root, "stop_token_ids");
	if (st) {
		if (!json_is_array(st))
			return wrong_type(e, "stop_token_ids", "an array of token ids", st);
		if (json_array_size(st) > LOOM_MAX_LOGIT_BIAS) {
			gw_api_err_set(e, 400, BAD, "stop_token_ids", NULL,
				       "'stop_token_ids' has %zu ids; at most %d",
				       json_array_size(st), LOOM_MAX_LOGIT_BIAS);
			return false;
		}
		if (!parse_ids(st, "stop_token_ids", &p->stop_token_ids, &p->n_stop_token_ids, e))
			return false;
	}
	return parse_logit_bias(root, p, e);
}

/* logprobs, top_logprobs, echo, prompt_logprobs. */
static bool parse_logprobs(json_t *root, gw_params *p, gw_api_err *e)
{
	bool set;
	json_t *lp = field(root, "logprobs");
	p->prompt_logprobs = -1;
	if (p->api == GW_API_CHAT) {
		if (lp && !json_is_boolean(lp))
			return wrong_type(e, "logprobs", "a boolean", lp);
		p->logprobs = lp && json_is_true(lp);
		if (!get_k(root, "top_logprobs", &p->top_logprobs, &set, e))
			return false;
		if (set && !p->logprobs) {
			gw_api_err_set(e, 400, BAD, "top_logprobs", NULL,
				       "'top_logprobs' needs 'logprobs': true");
			return false;
		}
	} else if (lp) {
		if (json_is_boolean(lp))
			return wrong_type(e, "logprobs", "an integer", lp);
		if (!get_k(root, "logprobs", &p->top_logprobs, &set, e))
			return false;
		p->logprobs = true;
	}
	if (!get_bool(root, "echo", &p->echo, e))
		return false;
	if (p->echo && p->api == GW_API_CHAT) {
		gw_api_err_set(e, 400, BAD, "echo", NULL,
			       "'echo' is supported on /v1/completions only");
		return false;
	}
	return get_k(root, "prompt_logprobs", &p->prompt_logprobs, &set, e);
}

/* Fields of OpenAI's completion and chat request schemas that loom does not
 * implement: given with a value that asks for something (anything but null
 * or the value listed as harmless) they are a 400 naming them, never
 * ignored. user, metadata, safety_identifier and prompt_cache_key are
 * accepted: they ask for nothing a server computes. */
static const struct {
	const char *key;
	const char *ok1, *ok2; /* JSON texts accepted as asking for nothing */
	const char *why;
} not_implemented[] = {
	{"suffix", "\"\"", NULL, "insertion after a suffix is not supported"},
	{"audio", NULL, NULL, "audio output is not supported"},
	{"modalities", "[\"text\"]", NULL, "only the text modality is supported"},
	{"prediction", NULL, NULL, "predicted outputs are not supported"},
	{"web_search_options", NULL, NULL, "web search is not supported"},
	{"functions", NULL, NULL, "the deprecated 'functions' is not supported; use 'tools'"},
	{"function_call", NULL, NULL, "the deprecated 'function_call' is not supported; use "
	 "'tool_choice'"},
	{"reasoning_effort", NULL, NULL, "reasoning effort is not supported; a template that "
	 "thinks takes 'chat_template_kwargs' (e.g. {\"enable_thinking\": false})"},
	{"verbosity", NULL, NULL, "verbosity is not supported"},
	{"store", "false", NULL, "stored completions are not supported"},
	{"service_tier", "\"auto\"", "\"default\"", "only the default service tier exists"},
};

static bool is_json(json_t *v, const char *text)
{
	json_t *w = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
	bool eq = w && json_equal(v, w);
	json_decref(w);
	return eq;
}

/* Options we do not implement: given with a non-default value -> 400 naming
 * them; n (p->n) and best_of (only equal to n). */
static bool parse_unsupported(json_t *root, gw_params *p, gw_api_err *e)
{
	long long n = 1;
	bool set;
	for (size_t i = 0; i < sizeof not_implemented / sizeof *not_implemented; i++) {
		json_t *v = field(root, not_implemented[i].key);
		if (v && !is_json(v, not_implemented[i].ok1) && !is_json(v, not_implemented[i].ok2)) {
			gw_api_err_set(e, 400, BAD, not_implemented[i].key, NULL, "'%s': %s",
				       not_implemented[i].key, not_implemented[i].why);
			return false;
		}
	}
	if (!get_int(root, "n", &n, &set, e))
		return false;
	if (set && (n < 1 || n > GW_MAX_N)) {
		gw_api_err_set(e, 400, BAD, "n", NULL, "'n' must be between 1 and %d (got %lld)",
			       GW_MAX_N, n);
		return false;
	}
	p->n = (int)n;
	/* best_of = n asks for nothing more: every choice generated is returned */
	long long best_of = n;
	if (!get_int(root, "best_of", &best_of, &set, e))
		return false;
	if (set && best_of != n) {
		gw_api_err_set(e, 400, BAD, "best_of", NULL, "'best_of' other than 'n' is not "
			       "supported (got %lld with n = %lld): every generated choice is "
			       "returned", best_of, n);
		return false;
	}
	return true;
}

static bool parse_sampling(json_t *root, gw_params *p, gw_api_err *e)
{
	double d;
	long long i;
	bool set;
	if (!get_num(root, "temperature", &d, &set, e))
		return false;
	if (set) {
		if (d < 0 || d > 2) {
			gw_api_err_set(e, 400, BAD, "temperature", NULL,
				       "'temperature' must be between 0 and 2, got %g", d);
			return false;
		}
		p->temperature = (float)d;
	}
	if (!get_num(root, "top_p", &d, &set, e))
		return false;
	if (set) {
		if (!(d > 0 && d <= 1)) {
			gw_api_err_set(e, 400, BAD, "top_p", NULL,
				       "'top_p' must be in (0, 1], got %g", d);
			return false;
		}
		p->top_p = (float)d;
	}
	if (!get_int(root, "top_k", &i, &set, e))
		return false;
	if (set) {
		if (i < -1 || i > INT32_MAX) {
			gw_api_err_set(e, 400, BAD, "top_k", NULL,
				       "'top_k' must be -1 or 0 (off) or a positive integer, got %lld", i);
			return false;
		}
		p->top_k = i <= 0 ? 0 : (int32_t)i;
	}
	if (!get_int(root, "seed", &i, &p->has_seed, e))
		return false;
	if (p->has_seed)
		p->seed = (uint64_t)i;
	const char *mt = "max_tokens";
	if (p->api == GW_API_CHAT && field(root, "max_completion_tokens")) {
		long long old = 0;
		bool both = false;
		if (!get_int(root, "max_tokens", &old, &both, e))
			return false;
		mt = "max_completion_tokens";
		if (!get_int(root, mt, &i, &p->has_max_tokens, e))
			return false;
		if (both && old != i) {
			gw_api_err_set(e, 400, BAD, mt, NULL,
				       "'max_completion_tokens' (%lld) and 'max_tokens' (%lld) differ; "
				       "give one of them", i, old);
			return false;
		}
	}
	if (!get_int(root, mt, &i, &p->has_max_tokens, e))
		return false;
	if (p->has_max_tokens) {
		if (i < 1) {
			gw_api_err_set(e, 400, BAD, mt, NULL, "'%s' must be at least 1, got %lld", mt, i);
			return false;
		}
		p->max_tokens = i;
	}
	if (!get_bool(root, "stream", &p->stream, e) || !get_bool(root, "ignore_eos", &p->ignore_eos, e) ||
	    !get_bool(root, "return_token_ids", &p->return_token_ids, e))
		return false;
	json_t *so = field(root, "stream_options");
	if (so) {
		if (!json_is_object(so))
			return wrong_type(e, "stream_options", "an object", so);
		json_t *iu = field(so, "include_usage");
		if (iu && !json_is_boolean(iu))
			return wrong_type(e, "stream_options.include_usage", "a boolean", iu);
		p->include_usage = iu && json_is_true(iu);
	}
	json_t *slo = field(root, "slo_class");
	if (slo) {
		if (!json_is_string(slo))
			return wrong_type(e, "slo_class", "a string", slo);
		if (json_string_length(slo) == 0 || json_string_length(slo) >= sizeof p->slo_class ||
		    strlen(json_string_value(slo)) != json_string_length(slo)) {
			gw_api_err_set(e, 400, BAD, "slo_class", NULL, "'slo_class' must be 1..%zu bytes "
				       "without NUL characters", sizeof p->slo_class - 1);
			return false;
		}
		memcpy(p->slo_class, json_string_value(slo), json_string_length(slo) + 1);
	}
	return parse_stop(root, p, e) && parse_controls(root, p, e) &&
	       parse_logprobs(root, p, e) && parse_unsupported(root, p, e) &&
	       gw_guide_parse(root, p, e);
}

loom_err gw_openai_parse(gw_api api, const char *body, size_t len, gw_params *p, gw_api_err *e)
{
	json_error_t je;
	bool ok = false;
	memset(p, 0, sizeof *p);
	memset(e, 0, sizeof *e);
	p->api = api;
	p->n = 1;
	p->temperature = 1.0f;
	p->top_p = 1.0f;
	p->repetition_penalty = 1.0f;
	p->prompt_logprobs = -1;
	p->add_special = true;
	p->parallel_tool_calls = true;
	json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY,
				  &je);
	if (!root) {
		gw_api_err_set(e, 400, BAD, NULL, NULL,
			       "invalid JSON body at line %d, column %d: %s", je.line, je.column,
			       je.text);
		return LOOM_EINVAL;
	}
	if (!json_is_object(root)) {
		gw_api_err_set(e, 400, BAD, NULL, NULL, "the request body must be a JSON object, got %s",
			       type_name(root));
		goto out;
	}
	if (!parse_model(root, p, e))
		goto out;
	switch (api) {
	case GW_API_COMPLETIONS:
		ok = parse_prompt(root, "prompt", true, p, e) && parse_sampling(root, p, e);
		break;
	case GW_API_CHAT:
		ok = parse_messages(root, p, e) && parse_chat_extras(root, p, e) &&
		     parse_sampling(root, p, e);
		break;
	case GW_API_TOKENIZE:
		/* vLLM's two shapes: {prompt} or {messages} (rendered as a chat
		 * request would be; then no special tokens are added by default). */
		if (field(root, "messages")) {
			if (field(root, "prompt")) {
				gw_api_err_set(e, 400, BAD, "messages", NULL,
					       "give either 'prompt' or 'messages', not both");
				break;
			}
			p->add_special_given = field(root, "add_special_tokens") != NULL;
			ok = parse_messages(root, p, e) && parse_chat_extras(root, p, e) &&
			     get_bool(root, "add_special_tokens", &p->add_special, e);
			break;
		}
		ok = parse_prompt(root, "prompt", false, p, e) &&
		     get_bool(root, "add_special_tokens", &p->add_special, e);
		break;
	case GW_API_DETOKENIZE: {
		json_t *t = field(root, "tokens");
		if (!t) {
			gw_api_err_set(e, 400, BAD, "tokens", NULL, "'tokens' is required");
			break;
		}
		if (!json_is_array(t)) {
			wrong_type(e, "tokens", "an array of token ids", t);
			break;
		}
		ok = parse_ids(t, "tokens", &p->prompt_ids, &p->n_prompt_ids, e);
		break;
	}
	}
out:
	json_decref(root);
	if (ok)
		return LOOM_OK;
	return e->status == 500 ? LOOM_ENOMEM : LOOM_EINVAL;
}

void gw_params_fini(gw_params *p)
{
	loom_free(p->prompt);
	loom_free(p->prompt_ids);
	for (size_t i = 0; i < p->n_msgs; i++)
		loom_free(p->msgs[i].content);
	loom_free(p->msgs);
	for (size_t i = 0; i < p->n_stop; i++)
		loom_free(p->stop[i]);
	loom_free(p->bias_ids);
	loom_free(p->bias);
	loom_free(p->stop_token_ids);
	json_decref(p->chat_messages);
	json_decref(p->tools);
	json_decref(p->chat_kwargs);
	loom_free(p->guide_text);
	loom_free(p->tool_name);
	memset(p, 0, sizeof *p);
}

/* ---- output ---- */

/* Serializes and steals root; result loom_malloc'ed. */
static char *dump(json_t *root)
{
	char *out = NULL;
	if (root) {
		char *s = json_dumps(root, JSON_COMPACT);
		if (s) {
			out = loom_strdup(s);
			free(s); /* jansson's default allocator */
		}
		json_decref(root);
	}
	return out;
}

static json_t *str_or_null(const char *s)
{
	return (s && *s) ? json_string(s) : json_null();
}

char *gw_openai_error_json(const gw_api_err *e)
{
	return dump(json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", e->message, "type",
			      e->type ? e->type : BAD, "param", str_or_null(e->param), "code",
			      str_or_null(e->code)));
}

static json_t *ids_array(const int32_t *ids, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n; i++) {
		if (json_array_append_new(a, json_integer(ids[i]))) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static json_t *text_value(const gw_result *r)
{
	/* text is valid UTF-8 (the decoder guarantees it); NULL here means out of memory */
	return json_stringn(r->text ? r->text : "", r->text ? r->text_len : 0);
}

static json_t *usage(const gw_result *r)
{
	return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)r->prompt_tokens,
			 "completion_tokens", (json_int_t)r->completion_tokens, "total_tokens",
			 (json_int_t)(r->prompt_tokens + r->completion_tokens),
			 "prompt_tokens_details", "cached_tokens", (json_int_t)r->cached_tokens);
}

static json_t *head(const gw_result *r, const char *object)
{
	return json_pack("{s:s, s:s, s:I, s:s}", "id", r->id, "object", object, "created",
			 (json_int_t)r->created, "model", r->model);
}

/* ---- logprobs ---- */

/* JSON has no -inf: vLLM's stand-in. */
static json_t *lp_num(float x)
{
	return json_real(isfinite(x) ? (double)x : -9999.0);
}

static json_t *piece_str(const gw_result *r, int32_t id)
{
	size_t n = 0;
	const char *s = r->piece(r->piece_ctx, id, &n);
	return s ? json_stringn(s, n) : NULL;
}

static json_t *piece_bytes(const gw_result *r, int32_t id)
{
	size_t n = 0;
	const char *s = r->piece(r->piece_ctx, id, &n);
	json_t *a = s ? json_array() : NULL;
	for (size_t i = 0; a && i < n; i++) {
		if (json_array_append_new(a, json_integer((unsigned char)s[i]))) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

/* Appends v (stolen) to a; false when out of memory. */
static bool push(json_t *a, json_t *v)
{
	return v && !json_array_append_new(a, v);
}

/* The legacy top_logprobs map of one token: its k best and itself. */
static json_t *legacy_top(const gw_result *r, const gw_lp_view *v, size_t row, int32_t id,
			  float lp)
{
	json_t *m = json_object();
	size_t k = (size_t)r->lp_k < v->stride ? (size_t)r->lp_k : v->stride;
	for (size_t j = 0; m && j < k; j++) {
		size_t n = 0;
		const char *s = r->piece(r->piece_ctx, v->top_ids[row * v->stride + j], &n);
		char *key = s ? loom_strndup(s, n) : NULL;
		if (!key || (!json_object_get(m, key) &&
			     json_object_set_new(m, key, lp_num(v->top_lp[row * v->stride + j])))) {
			loom_free(key);
			json_decref(m);
			return NULL;
		}
		loom_free(key);
	}
	size_t n = 0;
	const char *s = m ? r->piece(r->piece_ctx, id, &n) : NULL;
	char *key = s ? loom_strndup(s, n) : NULL;
	if (!key || (!json_object_get(m, key) && json_object_set_new(m, key, lp_num(lp)))) {
		loom_free(key);
		json_decref(m);
		return NULL;
	}
	loom_free(key);
	return m;
}

/* Appends view v's tokens to the legacy arrays; prompt: ids[0] has none. */
static bool legacy_add(const gw_result *r, const gw_lp_view *v, bool prompt, json_t *toks,
		       json_t *lps, json_t *tops, json_t *offs)
{
	for (size_t i = 0; i < v->n; i++) {
		bool none = prompt && i == 0;
		size_t row = prompt ? i - 1 : i;
		if (!push(toks, piece_str(r, v->ids[i])) ||
		    !push(lps, none ? json_null() : lp_num(v->lp[row])) ||
		    !push(tops, none ? json_null() : legacy_top(r, v, row, v->ids[i], v->lp[row])) ||
		    !push(offs, json_integer((json_int_t)(v->offset_base +
							  (v->offsets ? v->offsets[i] : 0)))))
			return false;
	}
	return true;
}

/* completions: {tokens, token_logprobs, top_logprobs, text_offset}. */
static json_t *legacy_logprobs(const gw_result *r)
{
	json_t *toks = json_array(), *lps = json_array(), *tops = json_array(),
	       *offs = json_array();
	json_t *o = json_pack("{s:o, s:o, s:o, s:o}", "tokens", toks, "token_logprobs", lps,
			      "top_logprobs", tops, "text_offset", offs);
	if (!o)
		return NULL;
	if ((r->echo_lp && !legacy_add(r, &r->plp, true, toks, lps, tops, offs)) ||
	    !legacy_add(r, &r->lp, false, toks, lps, tops, offs)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *chat_entry(const gw_result *r, int32_t id, float lp)
{
	return json_pack("{s:o, s:o, s:o}", "token", piece_str(r, id), "logprob", lp_num(lp),
			 "bytes", piece_bytes(r, id));
}

/* chat: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}. */
static json_t *chat_logprobs(const gw_result *r)
{
	const gw_lp_view *v = &r->lp;
	size_t k = (size_t)r->lp_k < v->stride ? (size_t)r->lp_k : v->stride;
	json_t *content = json_array();
	json_t *o = json_pack("{s:o, s:n}", "content", content, "refusal");
	for (size_t i = 0; o && i < v->n; i++) {
		json_t *e = chat_entry(r, v->ids[i], v->lp[i]), *top = json_array();
		if (!e || !top || json_object_set_new(e, "top_logprobs", top) ||
		    json_array_append_new(content, e))
			goto fail;
		for (size_t j = 0; j < k; j++)
			if (!push(top, chat_entry(r, v->top_ids[i * v->stride + j],
						  v->top_lp[i * v->stride + j])))
				goto fail;
	}
	return o;
fail:
	json_decref(o);
	return NULL;
}

static json_t *vllm_entry(const gw_result *r, int32_t id, float lp, int rank)
{
	size_t n = 0;
	const char *s = r->piece(r->piece_ctx, id, &n);
	json_t *o = json_pack("{s:o, s:s%}", "logprob", lp_num(lp), "decoded_token", s ? s : "",
			      s ? n : 0);
	if (o && rank > 0 && json_object_set_new(o, "rank", json_integer(rank))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* vLLM's prompt_logprobs: [null, {"id": {logprob, rank, decoded_token}}, ...]
 * with the prompt token and its prompt_lp_k best (rank known for those). */
static json_t *vllm_prompt_logprobs(const gw_result *r)
{
	const gw_lp_view *v = &r->plp;
	size_t k = (size_t)r->prompt_lp_k < v->stride ? (size_t)r->prompt_lp_k : v->stride;
	json_t *a = json_array();
	char key[16];
	if (!a || json_array_append_new(a, json_null()))
		goto fail;
	for (size_t i = 1; i < v->n; i++) {
		json_t *m = json_object();
		int rank = 0;
		if (!m || json_array_append_new(a, m))
			goto fail;
		for (size_t j = 0; j < v->stride; j++)
			if (v->top_ids[(i - 1) * v->stride + j] == v->ids[i])
				rank = (int)j + 1;
		snprintf(key, sizeof key, "%d", v->ids[i]);
		if (json_object_set_new(m, key, vllm_entry(r, v->ids[i], v->lp[i - 1], rank)))
			goto fail;
		for (size_t j = 0; j < k; j++) {
			int32_t id = v->top_ids[(i - 1) * v->stride + j];
			snprintf(key, sizeof key, "%d", id);
			if (id != v->ids[i] &&
			    json_object_set_new(m, key, vllm_entry(r, id,
								   v->top_lp[(i - 1) * v->stride + j],
								   (int)j + 1)))
				goto fail;
		}
	}
	return a;
fail:
	json_decref(a);
	return NULL;
}

/* Sets choice.logprobs (and, completions, choice.prompt_logprobs; chat: the
 * caller puts prompt_logprobs at the top level). */
static bool add_logprobs(const gw_result *r, json_t *choice)
{
	bool chat = r->api == GW_API_CHAT;
	if (r->with_lp &&
	    json_object_set_new(choice, "logprobs", chat ? chat_logprobs(r) : legacy_logprobs(r)))
		return false;
	if (!chat && r->with_prompt_lp && r->plp.n &&
	    json_object_set_new(choice, "prompt_logprobs", vllm_prompt_logprobs(r)))
		return false;
	return true;
}

static bool add_chat_prompt_logprobs(const gw_result *r, json_t *root)
{
	if (r->api != GW_API_CHAT || !r->with_prompt_lp || !r->plp.n)
		return true;
	return !json_object_set_new(root, "prompt_logprobs", vllm_prompt_logprobs(r));
}

/* One choice of a response: {index, text | message, logprobs, finish_reason, ...}. */
static json_t *response_choice(const gw_result *r)
{
	bool chat = r->api == GW_API_CHAT;
	json_t *choice;
	if (chat)
		choice = json_pack("{s:i, s:{s:s, s:o}, s:n, s:s}", "index", r->index, "message",
				   "role", "assistant", "content", text_value(r), "logprobs",
				   "finish_reason", r->finish ? r->finish : "stop");
	else
		choice = json_pack("{s:i, s:o, s:n, s:s}", "index", r->index, "text", text_value(r),
				   "logprobs", "finish_reason", r->finish ? r->finish : "stop");
	if (!choice)
		return NULL;
	if (chat && r->tool_calls) {
		json_t *msg = json_object_get(choice, "message");
		if ((!r->text_len && json_object_set_new(msg, "content", json_null())) ||
		    json_object_set_new(msg, "tool_calls", json_deep_copy(r->tool_calls)))
			goto fail;
	}
	if (r->with_ids && json_object_set_new(choice, "token_ids", ids_array(r->ids, r->n_ids)))
		goto fail;
	if (!add_logprobs(r, choice))
		goto fail;
	return choice;
fail:
	json_decref(choice);
	return NULL;
}

char *gw_openai_response_json(const gw_result *r)
{
	return gw_openai_response_json_n(r, 1);
}

char *gw_openai_response_json_n(const gw_result *r, size_t n)
{
	bool chat = r->api == GW_API_CHAT;
	json_t *root = head(r, chat ? "chat.completion" : "text_completion");
	json_t *choices = json_array();
	if (!root || !choices)
		goto fail;
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(choices, response_choice(&r[i])))
			goto fail;
	if (!add_chat_prompt_logprobs(r, root))
		goto fail;
	if (json_object_set_new(root, "choices", choices)) {
		choices = NULL;
		goto fail;
	}
	choices = NULL;
	if (json_object_set_new(root, "usage", usage(r)))
		goto fail;
	if (r->with_ids &&
	    json_object_set_new(root, "prompt_token_ids", ids_array(r->prompt_ids, r->n_prompt)))
		goto fail;
	return dump(root);
fail:
	json_decref(choices);
	json_decref(root);
	return NULL;
}

char *gw_openai_chunk_json(const gw_result *r, bool role_only)
{
	bool chat = r->api == GW_API_CHAT;
	json_t *root = head(r, chat ? "chat.completion.chunk" : "text_completion");
	json_t *choice = json_pack("{s:i, s:n}", "index", r->index, "logprobs");
	if (!root || !choice)
		goto fail;
	if (chat) {
		json_t *delta = role_only ? json_pack("{s:s}", "role", "assistant")
			      : (r->text_len ? json_pack("{s:o}", "content", text_value(r))
					     : json_object());
		if (json_object_set_new(choice, "delta", delta))
			goto fail;
		if (!role_only && r->tool_calls) {
			json_t *tc = json_deep_copy(r->tool_calls), *x;
			size_t i;
			json_array_foreach(tc, i, x)
				json_object_set_new(x, "index", json_integer((json_int_t)i));
			if (json_object_set_new(delta, "tool_calls", tc))
				goto fail;
		}
	} else if (json_object_set_new(choice, "text", text_value(r))) {
		goto fail;
	}
	if (json_object_set_new(choice, "finish_reason", r->finish ? json_string(r->finish)
								   : json_null()))
		goto fail;
	if (r->with_ids && !role_only &&
	    json_object_set_new(choice, "token_ids", ids_array(r->ids, r->n_ids)))
		goto fail;
	if (!role_only && !add_logprobs(r, choice))
		goto fail;
	if (!add_chat_prompt_logprobs(r, root))
		goto fail;
	if (json_object_set_new(root, "choices", json_pack("[o]", choice))) {
		choice = NULL;
		goto fail;
	}
	choice = NULL;
	if (r->with_ids && r->prompt_ids &&
	    json_object_set_new(root, "prompt_token_ids", ids_array(r->prompt_ids, r->n_prompt)))
		goto fail;
	return dump(root);
fail:
	json_decref(choice);
	json_decref(root);
	return NULL;
}

char *gw_openai_usage_chunk_json(const gw_result *r)
{
	bool chat = r->api == GW_API_CHAT;
	json_t *root = head(r, chat ? "chat.completion.chunk" : "text_completion");
	if (!root || json_object_set_new(root, "choices", json_array()) ||
	    json_object_set_new(root, "usage", usage(r))) {
		json_decref(root);
		return NULL;
	}
	return dump(root);
}

char *gw_openai_tokens_json(const int32_t *ids, size_t n, int max_model_len)
{
	return dump(json_pack("{s:o, s:I, s:i}", "tokens", ids_array(ids, n), "count",
			      (json_int_t)n, "max_model_len", max_model_len));
}

char *gw_openai_detok_json(const char *text, size_t len)
{
	return dump(json_pack("{s:o}", "prompt", json_stringn(text, len)));
}

/* The loom-specific "lora" object of an adapter entry. */
static json_t *lora_json(const gw_adapter *a)
{
	json_t *t = json_array();
	for (int i = 0; t && i < AD_N_TARGETS; i++) {
		if ((a->targets & (1u << i)) && json_array_append_new(t, json_string(ad_target_name(i)))) {
			json_decref(t);
			return NULL;
		}
	}
	return json_pack("{s:i, s:i, s:f, s:b, s:o, s:I}", "rank", a->rank, "max_rank", a->max_rank,
			 "alpha", (double)a->alpha, "use_rslora", a->use_rslora, "targets", t,
			 "bytes", (json_int_t)a->bytes);
}

char *gw_openai_models_json(const gw_models *cm)
{
	gw_models *m = (gw_models *)cm;
	json_t *data = json_array();
	gw_models_rdlock(m);
	for (size_t i = 0; data && i < gw_models_count_locked(m); i++) {
		const gw_model *md = gw_models_at_locked(m, i);
		if (json_array_append_new(
			    data, json_pack("{s:s, s:s, s:I, s:s, s:s, s:n, s:i}", "id", md->name,
					    "object", "model", "created", (json_int_t)md->created,
					    "owned_by", "loom", "root", md->name, "parent",
					    "max_model_len", md->cfg.max_ctx))) {
			json_decref(data);
			data = NULL;
		}
	}
	/* vLLM's shape for LoRA modules: root = the adapter's folder, parent = its base */
	for (size_t i = 0; data && i < gw_models_adapter_count_locked(m); i++) {
		const gw_adapter *a = gw_models_adapter_at_locked(m, i);
		if (json_array_append_new(
			    data, json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:i, s:o}", "id", a->name,
					    "object", "model", "created", (json_int_t)a->created,
					    "owned_by", "loom", "root", a->path[0] ? a->path : a->name,
					    "parent", a->base->name, "max_model_len",
					    a->base->cfg.max_ctx, "lora", lora_json(a)))) {
			json_decref(data);
			data = NULL;
		}
	}
	gw_models_unlock(m);
	if (!data)
		return NULL;
	return dump(json_pack("{s:s, s:o}", "object", "list", "data", data));
}

char *gw_openai_ready_json(bool ready, const char *const *missing, size_t n_missing)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n_missing; i++) {
		if (json_array_append_new(a, json_string(missing[i]))) {
			json_decref(a);
			return NULL;
		}
	}
	return dump(json_pack("{s:s, s:o}", "status", ready ? "ready" : "not_ready",
			      "models_without_workers", a));
}
