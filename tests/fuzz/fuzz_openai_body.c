/*
 * tests/fuzz/fuzz_openai_body.c — the gateway's OpenAI request parser
 * (gw_openai_parse, gateway/gw_openai.h) on any HTTP body, for all four
 * routes (completions, chat, tokenize, detokenize), then what the gateway
 * does next with what a client controls:
 *   - a refusal: a 4xx/5xx whose error JSON is valid and carries the message;
 *   - chat: every template renders the messages (or refuses them cleanly);
 *   - stop strings: the stop matcher (gw_stream) over the prompt text fed in
 *     uneven pieces releases a prefix of it that contains no stop string,
 *     all of it when none matched;
 *   - echoed text (model name, prompt as output text): the response,
 *     chunk, usage and detokenize JSON parse back to the same strings.
 * No model table is needed: parsing checks only what a body alone can tell.
 */
#include <jansson.h>
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/gw_chat.h"
#include "gateway/gw_openai.h"
#include "gateway/gw_stream.h"
#include "tests/fuzz/fuzz.h"

/* Parses js (loom_malloc'ed, freed here) as JSON; aborts when it is not. */
static json_t *fuzz_oa_json(char *js, const char *what)
{
	json_error_t je;
	if (!js)
		return NULL; /* out of memory */
	json_t *j = json_loads(js, 0, &je);
	FUZZ_CHECK(j != NULL, "%s is not valid JSON (%s): %.300s", what, je.text, js);
	loom_free(js);
	return j;
}

static void fuzz_oa_refusal(const gw_api_err *e)
{
	FUZZ_CHECK(e->status >= 400 && e->status <= 599, "refusal with status %d", e->status);
	FUZZ_CHECK(e->type != NULL, "refusal without a type");
	FUZZ_CHECK(memchr(e->message, '\0', sizeof e->message) && e->message[0],
		   "refusal without a message");
	FUZZ_CHECK(memchr(e->param, '\0', sizeof e->param), "param not terminated");
	json_t *j = fuzz_oa_json(gw_openai_error_json(e), "error JSON");
	if (!j)
		return;
	json_t *m = json_object_get(json_object_get(j, "error"), "message");
	FUZZ_CHECK(json_is_string(m) && strcmp(json_string_value(m), e->message) == 0,
		   "error JSON message differs from \"%s\"", e->message);
	json_decref(j);
}

static void fuzz_oa_chat(const gw_params *p)
{
	static const gw_chat_tmpl tmpls[] = { GW_TMPL_PLAIN, GW_TMPL_CHATML, GW_TMPL_LLAMA2,
					      GW_TMPL_ZEPHYR };
	FUZZ_CHECK(p->n_msgs >= 1 && p->msgs, "chat parsed without messages");
	for (size_t i = 0; i < p->n_msgs; i++)
		FUZZ_CHECK(p->msgs[i].content != NULL, "message %zu without content", i);
	for (size_t i = 0; i < sizeof tmpls / sizeof tmpls[0]; i++) {
		char *out = NULL;
		size_t len = 0;
		loom_err rc = gw_chat_render(tmpls[i], p->msgs, p->n_msgs, &out, &len);
		if (rc == LOOM_OK) {
			FUZZ_CHECK(out && out[len] == '\0', "render %s: not NUL-terminated",
				   gw_chat_tmpl_name(tmpls[i]));
			loom_free(out);
		} else {
			FUZZ_CHECK(rc == LOOM_EINVAL || rc == LOOM_ENOMEM, "render %s: %d",
				   gw_chat_tmpl_name(tmpls[i]), rc);
		}
	}
}

/* Feeds text to a stop matcher in pieces of about 1, 2, 3, ... bytes (whole characters). */
static void fuzz_oa_stops(const gw_params *p, const char *text, size_t len)
{
	gw_stream *s;
	bool stopped = false;
	const char *stops[GW_MAX_STOP];
	loom_err rc;

	for (size_t i = 0; i < p->n_stop; i++)
		stops[i] = p->stop[i];
	rc = gw_stream_create(NULL, stops, p->n_stop, &s);
	if (rc == LOOM_ENOMEM)
		return;
	FUZZ_CHECK(rc == LOOM_OK, "stop strings the parser accepted are refused by gw_stream_create: %s",
		   loom_errmsg());
	for (size_t at = 0, k = 1; at < len && !stopped; k++) {
		size_t n = k < len - at ? k : len - at;
		while (at + n < len && ((unsigned char)text[at + n] & 0xc0) == 0x80)
			n++; /* whole characters: push_text takes decoded text */
		rc = gw_stream_push_text(s, text + at, n, &stopped);
		FUZZ_CHECK(rc == LOOM_OK || rc == LOOM_ENOMEM, "push_text: %s", loom_errmsg());
		if (rc)
			goto out;
		at += n;
	}
	FUZZ_CHECK(gw_stream_finish(s) == LOOM_OK, "finish: %s", loom_errmsg());
	size_t got;
	const char *out = gw_stream_text(s, &got);
	FUZZ_CHECK(got <= len && memcmp(out, text, got) == 0,
		   "released text is not a prefix of what was fed");
	for (size_t i = 0; i < p->n_stop; i++) {
		size_t sl = strlen(p->stop[i]);
		FUZZ_CHECK(!sl || !memmem(out, got, p->stop[i], sl),
			   "released text contains stop string %zu", i);
	}
	if (gw_stream_stopped(s)) {
		int starts = 0;
		for (size_t i = 0; i < p->n_stop; i++) {
			size_t sl = strlen(p->stop[i]);
			starts |= sl && sl <= len - got && memcmp(text + got, p->stop[i], sl) == 0;
		}
		FUZZ_CHECK(starts, "stopped, but no stop string follows the released text");
	} else {
		FUZZ_CHECK(got == len, "not stopped, yet %zu of %zu bytes released", got, len);
	}
out:
	gw_stream_destroy(s);
}

/* The success shapes echo client text: they must be valid JSON that gives it back. */
static void fuzz_oa_shapes(const gw_params *p, const char *text, size_t len)
{
	static const int32_t ids[3] = { 5, 0, 2147483647 };
	gw_result r = { .api = p->api == GW_API_CHAT ? GW_API_CHAT : GW_API_COMPLETIONS,
			.id = "cmpl-fuzz", .created = 1700000000, .model = p->model, .text = text,
			.text_len = len, .finish = "stop", .with_ids = p->return_token_ids,
			.ids = ids, .n_ids = 3, .prompt_ids = p->prompt_ids,
			.n_prompt = p->n_prompt_ids, .prompt_tokens = p->n_prompt_ids,
			.completion_tokens = 3 };
	json_t *j = fuzz_oa_json(gw_openai_response_json(&r), "response");
	if (j) {
		FUZZ_CHECK(json_is_string(json_object_get(j, "model")) &&
				   strcmp(json_string_value(json_object_get(j, "model")), p->model) == 0,
			   "response model differs");
		json_decref(j);
	}
	json_decref(fuzz_oa_json(gw_openai_chunk_json(&r, false), "chunk"));
	json_decref(fuzz_oa_json(gw_openai_chunk_json(&r, true), "role chunk"));
	json_decref(fuzz_oa_json(gw_openai_usage_chunk_json(&r), "usage chunk"));
	j = fuzz_oa_json(gw_openai_detok_json(text, len), "detokenize");
	if (j) {
		json_t *v = json_object_get(j, "prompt");
		if (v)
			FUZZ_CHECK(json_is_string(v) && json_string_length(v) == len &&
					   memcmp(json_string_value(v), text, len) == 0,
				   "detokenize JSON does not give the text back");
		json_decref(j);
	}
	if (p->prompt_ids)
		json_decref(fuzz_oa_json(gw_openai_tokens_json(p->prompt_ids, p->n_prompt_ids, 512),
					 "tokens"));
}

static void fuzz_oa_one(gw_api api, const char *body, size_t len)
{
	gw_params p;
	gw_api_err e;
	loom_err rc = gw_openai_parse(api, body, len, &p, &e);

	if (rc) {
		FUZZ_CHECK(rc == LOOM_EINVAL || rc == LOOM_ENOMEM, "parse returned %d", rc);
		fuzz_oa_refusal(&e);
		gw_params_fini(&p);
		return;
	}
	fuzz_accepted = 1;
	FUZZ_CHECK(p.api == api, "api %d parsed as %d", api, p.api);
	FUZZ_CHECK(p.model[0] && memchr(p.model, '\0', sizeof p.model), "model empty or unterminated");
	FUZZ_CHECK(p.n_stop <= GW_MAX_STOP, "%zu stop strings", p.n_stop);
	if (api == GW_API_COMPLETIONS || api == GW_API_CHAT) {
		FUZZ_CHECK(p.temperature >= 0 && p.temperature <= 2, "temperature %g", p.temperature);
		FUZZ_CHECK(p.top_p > 0 && p.top_p <= 1, "top_p %g", p.top_p);
		FUZZ_CHECK(p.top_k >= -1, "top_k %d", p.top_k);
		FUZZ_CHECK(!p.has_max_tokens || p.max_tokens >= 1, "max_tokens %lld",
			   (long long)p.max_tokens);
	}
	for (size_t i = 0; i < p.n_prompt_ids; i++)
		FUZZ_CHECK(p.prompt_ids[i] >= 0, "prompt id %d", p.prompt_ids[i]);
	if (api == GW_API_CHAT)
		fuzz_oa_chat(&p);
	const char *text = p.prompt ? p.prompt : p.n_msgs ? p.msgs[p.n_msgs - 1].content : "";
	size_t tlen = strlen(text);
	if (p.n_stop)
		fuzz_oa_stops(&p, text, tlen);
	fuzz_oa_shapes(&p, text, tlen);
	gw_params_fini(&p);
}

int fuzz_openai_body(const uint8_t *data, size_t size)
{
	static const gw_api apis[] = { GW_API_COMPLETIONS, GW_API_CHAT, GW_API_TOKENIZE,
				       GW_API_DETOKENIZE };
	for (size_t i = 0; i < sizeof apis / sizeof apis[0]; i++)
		fuzz_oa_one(apis[i], (const char *)data, size);
	return 0;
}

void fuzz_openai_body_seeds(fuzz_seeds *s)
{
	fuzz_seed_str(s, "{\"model\":\"stories\",\"prompt\":\"Once upon a time\",\"max_tokens\":16,"
			 "\"temperature\":0,\"top_p\":0.9,\"top_k\":40,\"seed\":7,\"stream\":true,"
			 "\"stream_options\":{\"include_usage\":true},\"stop\":[\"\\n\",\"Lily\"],"
			 "\"ignore_eos\":false,\"return_token_ids\":true}");
	fuzz_seed_str(s, "{\"model\":\"stories:sql-lora\",\"prompt\":[1,403,407,261,378],"
			 "\"max_tokens\":null,\"stop\":\"aba\",\"n\":1,\"echo\":false}");
	fuzz_seed_str(s, "{\"model\":\"m\",\"prompt\":\"abababab caf\\u00e9 \\ud83d\\ude42\","
			 "\"stop\":[\"abab\",\"ba\",\"\\u00e9\"]}");
	fuzz_seed_str(s, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
			 "{\"role\":\"user\",\"content\":\"Hi\"},"
			 "{\"role\":\"assistant\",\"content\":\"Hello\"},"
			 "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Tell \"},"
			 "{\"type\":\"text\",\"text\":\"me a story\"}]}],\"max_tokens\":32,"
			 "\"stop\":[\"</s>\"],\"stream\":false}");
	fuzz_seed_str(s, "{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":\"x\"},"
			 "{\"role\":\"user\",\"content\":\"\"}],\"temperature\":2,\"top_p\":1e-9}");
	fuzz_seed_str(s, "{\"model\":\"m\",\"prompt\":\"tok me\",\"add_special_tokens\":false}");
	fuzz_seed_str(s, "{\"model\":\"m\",\"tokens\":[1,2,3,0]}");
	fuzz_seed_str(s, "{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":null,\"user\":\"u\","
			 "\"presence_penalty\":0,\"frequency_penalty\":0.0,\"logit_bias\":{}}");
}

const fuzz_word fuzz_openai_body_dict[] = {
	FUZZ_W("\"model\""), FUZZ_W("\"prompt\""), FUZZ_W("\"messages\""), FUZZ_W("\"role\""),
	FUZZ_W("\"content\""), FUZZ_W("\"system\""), FUZZ_W("\"user\""), FUZZ_W("\"assistant\""),
	FUZZ_W("\"developer\""), FUZZ_W("\"type\""), FUZZ_W("\"text\""), FUZZ_W("\"max_tokens\""),
	FUZZ_W("\"max_completion_tokens\""), FUZZ_W("\"temperature\""), FUZZ_W("\"top_p\""),
	FUZZ_W("\"top_k\""), FUZZ_W("\"seed\""), FUZZ_W("\"stop\""), FUZZ_W("\"stream\""),
	FUZZ_W("\"stream_options\""), FUZZ_W("\"include_usage\""), FUZZ_W("\"ignore_eos\""),
	FUZZ_W("\"return_token_ids\""), FUZZ_W("\"add_special_tokens\""), FUZZ_W("\"tokens\""),
	FUZZ_W("\"n\""), FUZZ_W("\"echo\""), FUZZ_W("\"logprobs\""), FUZZ_W("\"best_of\""),
	FUZZ_W("\"suffix\""), FUZZ_W("\"tools\""), FUZZ_W("\"response_format\""), FUZZ_W("null"),
	FUZZ_W("true"), FUZZ_W("false"), FUZZ_W("[]"), FUZZ_W("{}"), FUZZ_W("-1"), FUZZ_W("0"),
	FUZZ_W("1e309"), FUZZ_W("-0"), FUZZ_W("2147483648"), FUZZ_W("18446744073709551616"),
	FUZZ_W("0.5"), FUZZ_W("\"\\u0000\""), FUZZ_W("\"\\ud800\""), FUZZ_W("\"\\ud83d\\ude42\""),
	FUZZ_W("\\n"),
	{ NULL, 0 },
};
