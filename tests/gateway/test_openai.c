/*
 * tests/gateway/test_openai.c — request parsing/validation (every 400 the
 * body alone can cause) and the JSON shapes of responses, chunks and errors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/gw_openai.h"

typedef struct bad_case {
	const char *name;
	gw_api api;
	const char *body;
	int status;
	const char *param; /* NULL = JSON null */
	const char *in_message;
} bad_case;

static const bad_case bad[] = {
	{"malformed json", GW_API_COMPLETIONS, "{\"model\":\"m\",", 400, NULL, "line 1, column"},
	{"empty body", GW_API_COMPLETIONS, "", 400, NULL, "invalid JSON"},
	{"top-level array", GW_API_COMPLETIONS, "[1,2]", 400, NULL, "JSON object"},
	{"top-level string", GW_API_COMPLETIONS, "\"x\"", 400, NULL, "JSON object"},
	{"duplicate key", GW_API_COMPLETIONS, "{\"model\":\"m\",\"model\":\"n\",\"prompt\":\"x\"}", 400,
	 NULL, "duplicate"},
	{"missing model", GW_API_COMPLETIONS, "{\"prompt\":\"x\"}", 400, "model", "required"},
	{"null model", GW_API_COMPLETIONS, "{\"model\":null,\"prompt\":\"x\"}", 400, "model", "required"},
	{"model not string", GW_API_COMPLETIONS, "{\"model\":3,\"prompt\":\"x\"}", 400, "model",
	 "string"},
	{"empty model", GW_API_COMPLETIONS, "{\"model\":\"\",\"prompt\":\"x\"}", 400, "model", NULL},
	{"missing prompt", GW_API_COMPLETIONS, "{\"model\":\"m\"}", 400, "prompt", "required"},
	{"prompt number", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":12}", 400, "prompt", NULL},
	{"prompt object", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":{}}", 400, "prompt", NULL},
	{"prompt empty ids", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[]}", 400, "prompt",
	 "empty"},
	{"prompt negative id", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[1,-2]}", 400, "prompt",
	 "out of range"},
	{"prompt float id", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[1,2.5]}", 400, "prompt",
	 NULL},
	{"prompt two strings", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", 400,
	 "prompt", "one prompt"},
	{"max_tokens string", GW_API_COMPLETIONS,
	 "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":\"ten\"}", 400, "max_tokens", "integer"},
	{"max_tokens zero", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":0}",
	 400, "max_tokens", "at least 1"},
	{"max_tokens fraction", GW_API_COMPLETIONS,
	 "{\"model\":\"m\",\"prompt\":\"x\",\"max_tokens\":1.5}", 400, "max_tokens", NULL},
	{"temperature string", GW_API_COMPLETIONS,
	 "{\"model\":\"m\",\"prompt\":\"x\",\"temperature\":\"hot\"}", 400, "temperature", "number"},
	{"temperature high", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"temperature\":2.5}",
	 400, "temperature", "between 0 and 2"},
	{"temperature negative", GW_API_COMPLETIONS,
	 "{\"model\":\"m\",\"prompt\":\"x\",\"temperature\":-0.1}", 400, "temperature", NULL},
	{"top_p zero", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"top_p\":0}", 400,
	 "top_p", NULL},
	{"top_p above one", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"top_p\":1.01}", 400,
	 "top_p", NULL},
	{"top_p bool", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"top_p\":true}", 400,
	 "top_p", NULL},
	{"top_k -2", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"top_k\":-2}", 400, "top_k",
	 NULL},
	{"top_k string", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"top_k\":\"5\"}", 400,
	 "top_k", NULL},
	{"seed string", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"seed\":\"7\"}", 400,
	 "seed", NULL},
	{"stream number", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"stream\":3}", 400,
	 "stream", "boolean"},
	{"stream_options not object", GW_API_COMPLETIONS,
	 "{\"model\":\"m\",\"prompt\":\"x\",\"stream_options\":true}", 400, "stream_options", NULL},
	{"include_usage not bool", GW_API_COMPLETIONS,
	 "{\"model\":\"m\",\"prompt\":\"x\",\"stream_options\":{\"include_usage\":1}}", 400,
	 "stream_options.include_usage", NULL},
	{"ignore_eos string", GW_API_COMPLETIONS,
	 "{\"model\":\"m\",\"prompt\":\"x\",\"ignore_eos\":\"yes\"}", 400, "ignore_eos", NULL},
	{"return_token_ids number", GW_API_COMPLETIONS,
	 "{\"model\":\"m\",\"prompt\":\"x\",\"return_token_ids\":1}", 400, "return_token_ids", NULL},
	{"stop number", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"stop\":7}", 400, "stop",
	 NULL},
	{"stop five", GW_API_COMPLETIONS,
	 "{\"model\":\"m\",\"prompt\":\"x\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop",
	 "at most 4"},
	{"stop item number", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"stop\":[\"a\",1]}",
	 400, "stop", NULL},
	{"n 17", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"n\":17}", 400, "n",
	 "between 1 and 16"},
	{"n 1.5", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	 "\"content\":\"x\"}],\"n\":1.5}", 400, "n", NULL},
	{"n zero", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"n\":0}", 400, "n", NULL},
	{"n string", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"n\":\"1\"}", 400, "n",
	 NULL},
	{"chat echo", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"echo\":true}", 400, "echo", "completions"},
	{"echo string", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"echo\":\"no\"}", 400,
	 "echo", NULL},
	{"logprobs 21", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":21}", 400, "logprobs", NULL},
	{"logprobs -1", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":-1}", 400, "logprobs", NULL},
	{"logprobs bool", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"logprobs\":true}", 400, "logprobs", NULL},
	{"prompt_logprobs 21", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"prompt_logprobs\":21}", 400, "prompt_logprobs", NULL},
	{"presence_penalty 3", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"presence_penalty\":3}", 400, "presence_penalty", NULL},
	{"frequency_penalty -2.5", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"frequency_penalty\":-2.5}", 400, "frequency_penalty", NULL},
	{"frequency_penalty string", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"frequency_penalty\":\"1\"}", 400, "frequency_penalty", NULL},
	{"repetition_penalty 0", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"repetition_penalty\":0}", 400, "repetition_penalty", NULL},
	{"min_p 1.5", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"min_p\":1.5}", 400, "min_p", NULL},
	{"min_tokens -1", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"min_tokens\":-1}", 400, "min_tokens", NULL},
	{"min_tokens float", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"min_tokens\":1.5}", 400, "min_tokens", NULL},
	{"stop_token_ids string", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"stop_token_ids\":\"2\"}", 400, "stop_token_ids", NULL},
	{"stop_token_ids negative", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"stop_token_ids\":[-2]}", 400, "stop_token_ids", NULL},
	{"logit_bias array", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":[1]}", 400, "logit_bias", NULL},
	{"logit_bias key", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":{\"abc\":1}}", 400, "logit_bias", NULL},
	{"logit_bias negative key", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":{\"-3\":1}}", 400, "logit_bias", NULL},
	{"logit_bias 101", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":{\"3\":101}}", 400, "logit_bias", NULL},
	{"logit_bias string value", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"logit_bias\":{\"3\":\"1\"}}", 400, "logit_bias", NULL},
	{"best_of 2", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"best_of\":2}", 400,
	 "best_of", NULL},
	{"best_of 4 n 2", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"n\":2,"
	 "\"best_of\":4}", 400, "best_of", "other than 'n'"},
	/* fields of OpenAI's schemas loom does not implement: refused by name */
	{"suffix", GW_API_COMPLETIONS, "{\"model\":\"m\",\"prompt\":\"x\",\"suffix\":\"end\"}", 400,
	 "suffix", "not supported"},
	{"audio", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	 "\"audio\":{\"voice\":\"alloy\",\"format\":\"wav\"}}", 400, "audio", NULL},
	{"modalities audio", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	 "\"content\":\"x\"}],\"modalities\":[\"text\",\"audio\"]}", 400, "modalities", NULL},
	{"prediction", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	 "\"prediction\":{\"type\":\"content\",\"content\":\"y\"}}", 400, "prediction", NULL},
	{"functions", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	 "\"functions\":[{\"name\":\"f\"}]}", 400, "functions", "tools"},
	{"function_call", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	 "\"content\":\"x\"}],\"function_call\":\"auto\"}", 400, "function_call", NULL},
	{"reasoning_effort", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	 "\"content\":\"x\"}],\"reasoning_effort\":\"low\"}", 400, "reasoning_effort",
	 "chat_template_kwargs"},
	{"web_search_options", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	 "\"content\":\"x\"}],\"web_search_options\":{}}", 400, "web_search_options", NULL},
	{"store true", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	 "\"content\":\"x\"}],\"store\":true}", 400, "store", NULL},
	{"service_tier flex", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\","
	 "\"content\":\"x\"}],\"service_tier\":\"flex\"}", 400, "service_tier", NULL},
	{"chat missing messages", GW_API_CHAT, "{\"model\":\"m\"}", 400, "messages", "required"},
	{"chat messages string", GW_API_CHAT, "{\"model\":\"m\",\"messages\":\"hi\"}", 400, "messages",
	 NULL},
	{"chat messages empty", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[]}", 400, "messages",
	 "empty"},
	{"chat message not object", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[1]}", 400, "messages",
	 NULL},
	{"chat bad role", GW_API_CHAT,
	 "{\"model\":\"m\",\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400, "messages",
	 "role"},
	{"chat missing content", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}", 400,
	 "messages", "content"},
	{"chat content number", GW_API_CHAT,
	 "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", 400, "messages", NULL},
	{"chat image part", GW_API_CHAT,
	 "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
	 400, "messages", "text"},
	{"chat max_completion_tokens 0", GW_API_CHAT,
	 "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	 "\"max_completion_tokens\":0}",
	 400, "max_completion_tokens", NULL},
	{"chat logprobs 5", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":5}", 400, "logprobs", NULL},
	{"chat top_logprobs alone", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", 400, "top_logprobs", NULL},
	{"chat top_logprobs 21", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":21}", 400, "top_logprobs", NULL},
	{"chat max tokens differ", GW_API_CHAT, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":5,\"max_completion_tokens\":6}", 400, "max_completion_tokens", "differ"},
	{"tokenize ids", GW_API_TOKENIZE, "{\"model\":\"m\",\"prompt\":[1,2]}", 400, "prompt", NULL},
	{"tokenize add_special string", GW_API_TOKENIZE,
	 "{\"model\":\"m\",\"prompt\":\"x\",\"add_special_tokens\":\"no\"}", 400, "add_special_tokens",
	 NULL},
	{"detokenize missing", GW_API_DETOKENIZE, "{\"model\":\"m\"}", 400, "tokens", NULL},
	{"detokenize string", GW_API_DETOKENIZE, "{\"model\":\"m\",\"tokens\":\"1 2\"}", 400, "tokens",
	 NULL},
	{"detokenize negative", GW_API_DETOKENIZE, "{\"model\":\"m\",\"tokens\":[-1]}", 400, "tokens",
	 NULL},
};

static void test_bad_requests(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		const bad_case *c = &bad[i];
		gw_params p;
		gw_api_err e;
		loom_err rc = gw_openai_parse(c->api, c->body, strlen(c->body), &p, &e);
		if (rc == LOOM_OK || e.status != c->status ||
		    strcmp(e.param, c->param ? c->param : "") != 0 ||
		    (c->in_message && !strstr(e.message, c->in_message)))
			fail_msg("case '%s': rc %d status %d param '%s' message '%s'", c->name, rc,
				 e.status, e.param, e.message);
		gw_params_fini(&p);
		/* the error renders as OpenAI's shape */
		char *js = gw_openai_error_json(&e);
		json_t *j = json_loads(js, 0, NULL);
		json_t *err = json_object_get(j, "error");
		assert_non_null(err);
		assert_string_equal(json_string_value(json_object_get(err, "message")), e.message);
		assert_string_equal(json_string_value(json_object_get(err, "type")),
				    "invalid_request_error");
		if (c->param)
			assert_string_equal(json_string_value(json_object_get(err, "param")), c->param);
		else
			assert_true(json_is_null(json_object_get(err, "param")));
		assert_true(json_is_null(json_object_get(err, "code")));
		json_decref(j);
		loom_free(js);
	}
}

static void test_completion_defaults_and_fields(void **state)
{
	(void)state;
	gw_params p;
	gw_api_err e;
	const char *body = "{\"model\":\"m\",\"prompt\":\"hello\",\"extra\":{\"a\":[1]},\"user\":\"u\"}";
	assert_int_equal(gw_openai_parse(GW_API_COMPLETIONS, body, strlen(body), &p, &e), LOOM_OK);
	assert_string_equal(p.model, "m");
	assert_string_equal(p.prompt, "hello");
	assert_false(p.has_max_tokens);
	assert_true(p.temperature == 1.0f);
	assert_true(p.top_p == 1.0f);
	assert_int_equal(p.top_k, 0);
	assert_false(p.has_seed);
	assert_false(p.stream);
	assert_int_equal(p.n_stop, 0);
	gw_params_fini(&p);

	body = "{\"model\":\"m\",\"prompt\":[[1,2,3]],\"max_tokens\":7,\"temperature\":0,"
	       "\"top_p\":0.5,\"top_k\":-1,\"seed\":-3,\"stop\":[\"a\",\"\",\"bc\"],\"stream\":true,"
	       "\"stream_options\":{\"include_usage\":true},\"ignore_eos\":true,"
	       "\"return_token_ids\":true,\"n\":1,\"echo\":false,\"logprobs\":null,\"best_of\":1,"
	       "\"suffix\":null,\"store\":false,\"service_tier\":\"auto\",\"metadata\":{\"k\":\"v\"},"
	       "\"safety_identifier\":\"s\",\"prompt_cache_key\":\"p\",\"modalities\":[\"text\"]}";
	assert_int_equal(gw_openai_parse(GW_API_COMPLETIONS, body, strlen(body), &p, &e), LOOM_OK);
	assert_null(p.prompt);
	assert_int_equal(p.n_prompt_ids, 3);
	assert_int_equal(p.prompt_ids[2], 3);
	assert_true(p.has_max_tokens);
	assert_int_equal(p.max_tokens, 7);
	assert_true(p.temperature == 0.0f);
	assert_true(p.top_p == 0.5f);
	assert_int_equal(p.top_k, 0);
	assert_true(p.has_seed);
	assert_true(p.seed == (uint64_t)-3);
	assert_int_equal(p.n_stop, 2); /* the empty stop string is dropped */
	assert_string_equal(p.stop[1], "bc");
	assert_true(p.stream && p.include_usage && p.ignore_eos && p.return_token_ids);
	gw_params_fini(&p);

	body = "{\"model\":\"m\",\"prompt\":[\"one\"],\"stop\":\"END\",\"top_k\":5}";
	assert_int_equal(gw_openai_parse(GW_API_COMPLETIONS, body, strlen(body), &p, &e), LOOM_OK);
	assert_string_equal(p.prompt, "one");
	assert_int_equal(p.n_stop, 1);
	assert_string_equal(p.stop[0], "END");
	assert_int_equal(p.top_k, 5);
	assert_int_equal(p.n, 1);
	gw_params_fini(&p);

	/* n choices; best_of equal to n asks for nothing more */
	body = "{\"model\":\"m\",\"prompt\":\"x\",\"n\":16,\"best_of\":16}";
	assert_int_equal(gw_openai_parse(GW_API_COMPLETIONS, body, strlen(body), &p, &e), LOOM_OK);
	assert_int_equal(p.n, 16);
	gw_params_fini(&p);
	body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n\":3}";
	assert_int_equal(gw_openai_parse(GW_API_CHAT, body, strlen(body), &p, &e), LOOM_OK);
	assert_int_equal(p.n, 3);
	gw_params_fini(&p);
}

static void test_chat_parse(void **state)
{
	(void)state;
	gw_params p;
	gw_api_err e;
	const char *body =
		"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
		"{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
		"{\"type\":\"text\",\"text\":\"b\"}]},{\"role\":\"assistant\",\"content\":null},"
		"{\"role\":\"developer\",\"content\":\"d\"}],\"max_completion_tokens\":9}";
	assert_int_equal(gw_openai_parse(GW_API_CHAT, body, strlen(body), &p, &e), LOOM_OK);
	assert_int_equal(p.n_msgs, 4);
	assert_int_equal(p.msgs[0].role, GW_ROLE_SYSTEM);
	assert_string_equal(p.msgs[1].content, "ab");
	assert_string_equal(p.msgs[2].content, "");
	assert_int_equal(p.msgs[3].role, GW_ROLE_SYSTEM);
	assert_true(p.has_max_tokens);
	assert_int_equal(p.max_tokens, 9);
	gw_params_fini(&p);
}

static void test_tokenize_parse(void **state)
{
	(void)state;
	gw_params p;
	gw_api_err e;
	const char *body = "{\"model\":\"m\",\"prompt\":\"hi\",\"add_special_tokens\":false}";
	assert_int_equal(gw_openai_parse(GW_API_TOKENIZE, body, strlen(body), &p, &e), LOOM_OK);
	assert_false(p.add_special);
	gw_params_fini(&p);
	body = "{\"model\":\"m\",\"tokens\":[5,6]}";
	assert_int_equal(gw_openai_parse(GW_API_DETOKENIZE, body, strlen(body), &p, &e), LOOM_OK);
	assert_int_equal(p.n_prompt_ids, 2);
	gw_params_fini(&p);
}

static json_t *load(char *s)
{
	assert_non_null(s);
	json_t *j = json_loads(s, 0, NULL);
	loom_free(s);
	assert_non_null(j);
	return j;
}

static void test_controls_parse(void **state)
{
	(void)state;
	gw_params p;
	gw_api_err e;
	const char *body = "{\"model\":\"m\",\"prompt\":\"x\"}";
	assert_int_equal(gw_openai_parse(GW_API_COMPLETIONS, body, strlen(body), &p, &e), LOOM_OK);
	assert_true(p.repetition_penalty == 1.0f && p.presence_penalty == 0 && p.min_p == 0);
	assert_int_equal(p.n_bias, 0);
	assert_false(p.logprobs || p.echo);
	assert_int_equal(p.prompt_logprobs, -1);
	gw_params_fini(&p);
	body = "{\"model\":\"m\",\"prompt\":\"x\",\"presence_penalty\":-2,\"frequency_penalty\":1.5,"
	       "\"repetition_penalty\":1.2,\"min_p\":0.1,\"min_tokens\":4,\"stop_token_ids\":[7,9],"
	       "\"logit_bias\":{\"5\":-100,\"0\":2.5},\"logprobs\":3,\"echo\":true,"
	       "\"prompt_logprobs\":0}";
	assert_int_equal(gw_openai_parse(GW_API_COMPLETIONS, body, strlen(body), &p, &e), LOOM_OK);
	assert_true(p.presence_penalty == -2.0f && p.frequency_penalty == 1.5f);
	assert_true(p.repetition_penalty == 1.2f && p.min_p == 0.1f);
	assert_int_equal(p.min_tokens, 4);
	assert_int_equal(p.n_stop_token_ids, 2);
	assert_int_equal(p.stop_token_ids[1], 9);
	assert_int_equal(p.n_bias, 2);
	assert_int_equal(p.bias_ids[0] + p.bias_ids[1], 5);
	assert_true(p.bias[p.bias_ids[0] == 5 ? 0 : 1] == -100.0f);
	assert_true(p.logprobs && p.echo);
	assert_int_equal(p.top_logprobs, 3);
	assert_int_equal(p.prompt_logprobs, 0);
	gw_params_fini(&p);
	body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
	       "\"logprobs\":true,\"top_logprobs\":20,\"max_tokens\":6,\"max_completion_tokens\":6}";
	assert_int_equal(gw_openai_parse(GW_API_CHAT, body, strlen(body), &p, &e), LOOM_OK);
	assert_true(p.logprobs);
	assert_int_equal(p.top_logprobs, 20);
	assert_int_equal(p.max_tokens, 6);
	gw_params_fini(&p);
}

static const char *fake_piece(void *ctx, int32_t id, size_t *len)
{
	static char buf[16];
	(void)ctx;
	*len = (size_t)snprintf(buf, sizeof buf, "<%d>", id);
	return buf;
}

static void test_logprobs_shapes(void **state)
{
	(void)state;
	int32_t ids[] = {5, 6}, prompt[] = {1, 9, 4};
	float lp[] = {-0.5f, -INFINITY}, top_lp[] = {-0.5f, -1.0f, -0.25f, -3.0f};
	int32_t top[] = {5, 7, 8, 6};
	float plp[] = {-2.0f, -1.0f}, ptop_lp[] = {-1.5f, -0.5f};
	int32_t ptop[] = {3, 4};
	size_t offs[] = {0, 3}, poffs[] = {0, 0, 3};
	gw_result r = {.api = GW_API_COMPLETIONS, .id = "cmpl-x", .model = "m", .text = "ab",
		       .text_len = 2, .finish = "length", .ids = ids, .n_ids = 2,
		       .with_lp = true, .lp_k = 2,
		       .lp = {.n = 2, .ids = ids, .lp = lp, .top_ids = top, .top_lp = top_lp,
			      .stride = 2, .offsets = offs, .offset_base = 10},
		       .echo_lp = true,
		       .plp = {.n = 3, .ids = prompt, .lp = plp, .top_ids = ptop, .top_lp = ptop_lp,
			       .stride = 1, .offsets = poffs},
		       .with_prompt_lp = true, .prompt_lp_k = 1,
		       .piece = fake_piece};
	json_t *j = load(gw_openai_response_json(&r));
	json_t *c = json_array_get(json_object_get(j, "choices"), 0);
	json_t *l = json_object_get(c, "logprobs");
	json_t *toks = json_object_get(l, "tokens"), *tl = json_object_get(l, "token_logprobs");
	json_t *tops = json_object_get(l, "top_logprobs"), *to = json_object_get(l, "text_offset");
	assert_int_equal(json_array_size(toks), 5);
	assert_string_equal(json_string_value(json_array_get(toks, 0)), "<1>");
	assert_string_equal(json_string_value(json_array_get(toks, 4)), "<6>");
	assert_true(json_is_null(json_array_get(tl, 0)));
	assert_true(json_real_value(json_array_get(tl, 2)) == -1.0);
	assert_true(json_real_value(json_array_get(tl, 3)) == -0.5);
	assert_true(json_real_value(json_array_get(tl, 4)) == -9999.0); /* -inf */
	assert_true(json_is_null(json_array_get(tops, 0)));
	/* prompt rows show k = 2 alternatives of the 1 sent, plus the token */
	assert_int_equal(json_object_size(json_array_get(tops, 1)), 2);
	json_t *t3 = json_array_get(tops, 3); /* token 5: its best 2 (5 itself and 7) */
	assert_int_equal(json_object_size(t3), 2);
	assert_true(json_real_value(json_object_get(t3, "<7>")) == -1.0);
	json_t *t4 = json_array_get(tops, 4); /* token 6: 8, 6 */
	assert_int_equal(json_object_size(t4), 2);
	assert_int_equal(json_integer_value(json_array_get(to, 2)), 3);
	assert_int_equal(json_integer_value(json_array_get(to, 4)), 13);
	json_t *pl = json_object_get(c, "prompt_logprobs");
	assert_int_equal(json_array_size(pl), 3);
	assert_true(json_is_null(json_array_get(pl, 0)));
	json_t *e1 = json_object_get(json_array_get(pl, 1), "9");
	assert_true(json_real_value(json_object_get(e1, "logprob")) == -2.0);
	assert_string_equal(json_string_value(json_object_get(e1, "decoded_token")), "<9>");
	json_t *e2 = json_object_get(json_array_get(pl, 2), "4");
	assert_int_equal(json_integer_value(json_object_get(e2, "rank")), 1);
	assert_non_null(json_object_get(json_array_get(pl, 1), "3"));
	json_decref(j);

	/* chat: content entries with bytes and exactly k alternatives */
	r.api = GW_API_CHAT;
	r.with_prompt_lp = false;
	j = load(gw_openai_response_json(&r));
	c = json_array_get(json_object_get(j, "choices"), 0);
	json_t *content = json_object_get(json_object_get(c, "logprobs"), "content");
	assert_int_equal(json_array_size(content), 2);
	json_t *c0 = json_array_get(content, 0);
	assert_string_equal(json_string_value(json_object_get(c0, "token")), "<5>");
	assert_int_equal(json_array_size(json_object_get(c0, "bytes")), 3);
	assert_int_equal(json_integer_value(json_array_get(json_object_get(c0, "bytes"), 0)), '<');
	json_t *tl0 = json_object_get(c0, "top_logprobs");
	assert_int_equal(json_array_size(tl0), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(tl0, 1), "token")),
			    "<7>");
	assert_null(json_object_get(j, "prompt_logprobs"));
	json_decref(j);
}

static void test_response_shapes(void **state)
{
	(void)state;
	int32_t ids[] = {5, 6, 2}, prompt[] = {1, 9};
	gw_result r = {.api = GW_API_COMPLETIONS, .id = "cmpl-x", .created = 1700000000,
		       .model = "m", .text = "hi \"there\"", .text_len = 10, .finish = "stop",
		       .with_ids = true, .ids = ids, .n_ids = 3, .prompt_ids = prompt, .n_prompt = 2,
		       .prompt_tokens = 2, .completion_tokens = 3};
	json_t *j = load(gw_openai_response_json(&r));
	assert_string_equal(json_string_value(json_object_get(j, "id")), "cmpl-x");
	assert_string_equal(json_string_value(json_object_get(j, "object")), "text_completion");
	assert_int_equal(json_integer_value(json_object_get(j, "created")), 1700000000);
	assert_string_equal(json_string_value(json_object_get(j, "model")), "m");
	json_t *c = json_array_get(json_object_get(j, "choices"), 0);
	assert_int_equal(json_integer_value(json_object_get(c, "index")), 0);
	assert_string_equal(json_string_value(json_object_get(c, "text")), "hi \"there\"");
	assert_true(json_is_null(json_object_get(c, "logprobs")));
	assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "stop");
	assert_int_equal(json_array_size(json_object_get(c, "token_ids")), 3);
	assert_int_equal(json_array_size(json_object_get(j, "prompt_token_ids")), 2);
	json_t *u = json_object_get(j, "usage");
	assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 2);
	assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 3);
	assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 5);
	json_decref(j);

	r.with_ids = false;
	r.api = GW_API_CHAT;
	r.finish = "length";
	j = load(gw_openai_response_json(&r));
	assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion");
	c = json_array_get(json_object_get(j, "choices"), 0);
	assert_null(json_object_get(c, "token_ids"));
	assert_null(json_object_get(j, "prompt_token_ids"));
	json_t *m = json_object_get(c, "message");
	assert_string_equal(json_string_value(json_object_get(m, "role")), "assistant");
	assert_string_equal(json_string_value(json_object_get(m, "content")), "hi \"there\"");
	assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "length");
	json_decref(j);
}

static void test_chunk_shapes(void **state)
{
	(void)state;
	int32_t ids[] = {7};
	gw_result r = {.api = GW_API_COMPLETIONS, .id = "cmpl-x", .created = 1, .model = "m",
		       .text = "ab", .text_len = 2, .with_ids = true, .ids = ids, .n_ids = 1};
	json_t *j = load(gw_openai_chunk_json(&r, false));
	json_t *c = json_array_get(json_object_get(j, "choices"), 0);
	assert_string_equal(json_string_value(json_object_get(j, "object")), "text_completion");
	assert_string_equal(json_string_value(json_object_get(c, "text")), "ab");
	assert_true(json_is_null(json_object_get(c, "finish_reason")));
	assert_int_equal(json_integer_value(json_array_get(json_object_get(c, "token_ids"), 0)), 7);
	assert_null(json_object_get(j, "usage"));
	json_decref(j);

	r.api = GW_API_CHAT;
	r.with_ids = false;
	j = load(gw_openai_chunk_json(&r, true));
	assert_string_equal(json_string_value(json_object_get(j, "object")), "chat.completion.chunk");
	c = json_array_get(json_object_get(j, "choices"), 0);
	json_t *d = json_object_get(c, "delta");
	assert_string_equal(json_string_value(json_object_get(d, "role")), "assistant");
	assert_null(json_object_get(d, "content"));
	json_decref(j);

	j = load(gw_openai_chunk_json(&r, false));
	d = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta");
	assert_string_equal(json_string_value(json_object_get(d, "content")), "ab");
	assert_null(json_object_get(d, "role"));
	json_decref(j);

	r.text_len = 0;
	r.finish = "stop";
	j = load(gw_openai_chunk_json(&r, false));
	c = json_array_get(json_object_get(j, "choices"), 0);
	assert_int_equal(json_object_size(json_object_get(c, "delta")), 0);
	assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "stop");
	json_decref(j);

	r.prompt_tokens = 4;
	r.completion_tokens = 6;
	j = load(gw_openai_usage_chunk_json(&r));
	assert_int_equal(json_array_size(json_object_get(j, "choices")), 0);
	assert_true(json_is_array(json_object_get(j, "choices")));
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"),
							    "total_tokens")), 10);
	json_decref(j);
}

/* n choices: one choice object per result, each with its index, the
 * top-level fields and usage from the first; a chunk carries its index. */
static void test_choices_shapes(void **state)
{
	(void)state;
	int32_t a[] = {5, 6}, b[] = {7}, prompt[] = {1, 9};
	gw_result r[3];
	for (int i = 0; i < 3; i++)
		r[i] = (gw_result){.api = GW_API_COMPLETIONS, .id = "cmpl-x", .created = 1,
				   .model = "m", .index = i, .with_ids = true,
				   .prompt_ids = prompt, .n_prompt = 2, .prompt_tokens = 2,
				   .cached_tokens = 1, .completion_tokens = 5};
	r[0].text = "ab", r[0].text_len = 2, r[0].finish = "length", r[0].ids = a, r[0].n_ids = 2;
	r[1].text = "c", r[1].text_len = 1, r[1].finish = "stop", r[1].ids = b, r[1].n_ids = 1;
	r[2].text = "de", r[2].text_len = 2, r[2].finish = "length", r[2].ids = a, r[2].n_ids = 2;
	json_t *j = load(gw_openai_response_json_n(r, 3));
	json_t *ch = json_object_get(j, "choices");
	assert_int_equal(json_array_size(ch), 3);
	for (int i = 0; i < 3; i++) {
		json_t *c = json_array_get(ch, (size_t)i);
		assert_int_equal(json_integer_value(json_object_get(c, "index")), i);
		assert_string_equal(json_string_value(json_object_get(c, "text")), r[i].text);
		assert_string_equal(json_string_value(json_object_get(c, "finish_reason")),
				    r[i].finish);
		assert_int_equal(json_array_size(json_object_get(c, "token_ids")), r[i].n_ids);
	}
	json_t *u = json_object_get(j, "usage");
	assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 2);
	assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 5);
	assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 7);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(u,
				"prompt_tokens_details"), "cached_tokens")), 1);
	assert_int_equal(json_array_size(json_object_get(j, "prompt_token_ids")), 2);
	json_decref(j);

	/* chat: a message per choice */
	for (int i = 0; i < 3; i++)
		r[i].api = GW_API_CHAT;
	j = load(gw_openai_response_json_n(r, 3));
	json_t *m = json_object_get(json_array_get(json_object_get(j, "choices"), 2), "message");
	assert_string_equal(json_string_value(json_object_get(m, "content")), "de");
	json_decref(j);

	/* a chunk: one choice, its index (the role chunk too) */
	j = load(gw_openai_chunk_json(&r[2], false));
	ch = json_object_get(j, "choices");
	assert_int_equal(json_array_size(ch), 1);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(ch, 0), "index")), 2);
	json_decref(j);
	j = load(gw_openai_chunk_json(&r[1], true));
	assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(j,
				"choices"), 0), "index")), 1);
	json_decref(j);
}

/* Client errors never show a worker's ipc:// socket path. */
static void test_error_hides_ipc_paths(void **state)
{
	(void)state;
	gw_api_err e;
	gw_api_err_set(&e, 502, "server_error", NULL, NULL, "worker %s failed while generating and "
		       "no other live worker serves model '%s'", "ipc:///tmp/loom/worker-0.ipc", "m");
	assert_string_equal(e.message, "worker ipc:(hidden) failed while generating and no other "
			    "live worker serves model 'm'");
	gw_api_err_set(&e, 502, "server_error", NULL, NULL, "cannot send to 'ipc:///a/b': closed; "
		       "ipc:///c");
	assert_string_equal(e.message, "cannot send to 'ipc:(hidden)': closed; ipc:(hidden)");
	gw_api_err_set(&e, 400, "invalid_request_error", NULL, NULL, "tcp://h:1 and ipc:/x stay");
	assert_string_equal(e.message, "tcp://h:1 and ipc:/x stay");
}

static void test_misc_bodies(void **state)
{
	(void)state;
	int32_t ids[] = {1, 2};
	json_t *j = load(gw_openai_tokens_json(ids, 2, 512));
	assert_int_equal(json_integer_value(json_object_get(j, "count")), 2);
	assert_int_equal(json_integer_value(json_object_get(j, "max_model_len")), 512);
	assert_int_equal(json_array_size(json_object_get(j, "tokens")), 2);
	json_decref(j);
	j = load(gw_openai_detok_json("a\nb", 3));
	assert_string_equal(json_string_value(json_object_get(j, "prompt")), "a\nb");
	json_decref(j);
	const char *missing[] = {"x"};
	j = load(gw_openai_ready_json(false, missing, 1));
	assert_string_equal(json_string_value(json_object_get(j, "status")), "not_ready");
	json_decref(j);
	gw_api_err e;
	gw_api_err_set(&e, 404, "invalid_request_error", "model", "model_not_found", "no %s", "m");
	j = load(gw_openai_error_json(&e));
	json_t *err = json_object_get(j, "error");
	assert_string_equal(json_string_value(json_object_get(err, "code")), "model_not_found");
	assert_string_equal(json_string_value(json_object_get(err, "message")), "no m");
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_completion_defaults_and_fields),
		cmocka_unit_test(test_chat_parse),
		cmocka_unit_test(test_tokenize_parse),
		cmocka_unit_test(test_response_shapes),
		cmocka_unit_test(test_controls_parse),
		cmocka_unit_test(test_logprobs_shapes),
		cmocka_unit_test(test_chunk_shapes),
		cmocka_unit_test(test_choices_shapes),
		cmocka_unit_test(test_misc_bodies),
		cmocka_unit_test(test_error_hides_ipc_paths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
