/*
 * gateway/gw_openai.h — the OpenAI-compatible JSON: request parsing and
 * validation, response / stream-chunk / error shaping.
 *
 * Owns: every JSON shape the HTTP API reads or writes. Parsing checks what a
 * body alone can tell (JSON syntax, types, ranges, unsupported options) and
 * reports the first problem as an OpenAI error (status, type, param,
 * message). What needs a model (unknown model, vocab, context length) is
 * checked by the caller with gw_api_err_set. Unknown fields are ignored and
 * JSON null means "not given".
 * Must not: tokenize, touch sockets or MHD. Pure functions; any thread.
 */
#ifndef GW_OPENAI_H
#define GW_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/proto.h"
#include "gw_chat.h"
#include "gw_models.h"
#include "gw_stream.h"

typedef enum gw_api {
	GW_API_COMPLETIONS, /* POST /v1/completions */
	GW_API_CHAT,        /* POST /v1/chat/completions */
	GW_API_TOKENIZE,    /* POST /tokenize */
	GW_API_DETOKENIZE,  /* POST /detokenize */
} gw_api;

#define GW_MAX_N 16 /* choices per request ("n") at most */

/* An OpenAI error: {"error":{"message","type","param","code"}} with an HTTP status. */
typedef struct gw_api_err {
	int status;
	const char *type;  /* static: "invalid_request_error", "service_unavailable", ... */
	const char *code;  /* static or NULL (JSON null) */
	char param[64];    /* "" = JSON null */
	char message[512];
} gw_api_err;

/* Fills e (param/code may be NULL). Returns LOOM_EINVAL for `return gw_api_err_set(...)`.
 * Every error a client sees is made here: an ipc:// address in the message (a
 * worker's socket path, e.g. from a lost worker) is shown as "ipc:(hidden)". */
loom_err gw_api_err_set(gw_api_err *e, int status, const char *type, const char *param,
			const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Chat's tool_choice (gw_guide.h). AUTO is the default (with tools: the
 * model may call them, its output is parsed); NONE renders no tools. */
typedef enum gw_tool_choice {
	GW_TOOL_CHOICE_AUTO = 0,
	GW_TOOL_CHOICE_NONE,
	GW_TOOL_CHOICE_REQUIRED, /* one call of any of the tools, forced by a grammar */
	GW_TOOL_CHOICE_NAMED,    /* one call of tool_name, forced by a grammar */
} gw_tool_choice;

/* A parsed request. Everything is owned by the struct; gw_params_fini frees it. */
typedef struct gw_params {
	gw_api api;
	char model[LOOM_NAME_MAX];
	char *prompt;           /* string prompt (completions, tokenize), or NULL */
	int32_t *prompt_ids;    /* id prompt (completions) / tokens (detokenize), or NULL */
	size_t n_prompt_ids;
	gw_chat_msg *msgs;      /* chat, tokenize with messages */
	size_t n_msgs;
	json_t *chat_messages;  /* the same messages as a model template sees them */
	json_t *tools;          /* chat: "tools", or NULL */
	json_t *chat_kwargs;    /* "chat_template_kwargs", or NULL */
	bool add_generation_prompt; /* default true */
	int n;                  /* choices, 1..GW_MAX_N (default 1; best_of may only equal it) */
	bool has_max_tokens;
	int64_t max_tokens;     /* >= 1 when has_max_tokens */
	float temperature;      /* [0,2], default 1 */
	float top_p;            /* (0,1], default 1 */
	int32_t top_k;          /* 0 = off */
	bool has_seed;
	uint64_t seed;
	/* sampling controls (0 = off; worker/sample.h has their order) */
	float presence_penalty;   /* [-2, 2] */
	float frequency_penalty;  /* [-2, 2] */
	float repetition_penalty; /* > 0; 1 (default) = off */
	float min_p;              /* [0, 1] */
	uint32_t min_tokens;      /* <= max_tokens (checked with the model) */
	int32_t *bias_ids;        /* logit_bias: [n_bias] ids (vocab checked with the model) */
	float *bias;              /* [n_bias] in [-100, 100] */
	size_t n_bias;
	int32_t *stop_token_ids;  /* [n_stop_token_ids] (vocab checked with the model) */
	size_t n_stop_token_ids;
	/* logprobs: completions "logprobs": k, chat "logprobs": true +
	 * "top_logprobs": k; "echo" (completions); vLLM's "prompt_logprobs": k */
	bool logprobs;
	int top_logprobs;         /* 0..LOOM_MAX_LOGPROBS */
	bool echo;
	int prompt_logprobs;      /* -1 = not asked, else 0..LOOM_MAX_LOGPROBS */
	char *stop[GW_MAX_STOP];
	size_t n_stop;
	bool stream;
	bool include_usage;
	bool ignore_eos;
	bool return_token_ids;
	bool add_special;       /* tokenize: add_special_tokens, default true */
	bool add_special_given; /* tokenize with messages: it was given (else the chat
				   route's choice: none for a model template, which
				   writes its own, the post-processor's for built-ins) */
	char slo_class[64];     /* "slo_class" (loom extension); "" = not given */
	/* structured outputs (gw_guide.h): one of response_format, guided_json,
	 * guided_regex, guided_choice, structured_outputs */
	int guide;                /* loom_guide; LOOM_GUIDE_NONE = unconstrained */
	char *guide_text;         /* its text (loom_malloc'ed), NULL = "" */
	char guide_param[32];     /* the field it came from, for errors */
	/* tools (chat) */
	gw_tool_choice tool_choice;
	char *tool_name;          /* GW_TOOL_CHOICE_NAMED: the function (loom_malloc'ed) */
	bool parallel_tool_calls; /* default true; false keeps at most one parsed call */
} gw_params;

/*
 * Parses body (len bytes) for api. LOOM_OK: *p filled. Otherwise LOOM_EINVAL
 * (or LOOM_ENOMEM) and *e describes the 400. Always release p with
 * gw_params_fini (also after a failure).
 */
loom_err gw_openai_parse(gw_api api, const char *body, size_t len, gw_params *p, gw_api_err *e);
void gw_params_fini(gw_params *p);

/* {"error":{...}} — loom_malloc'ed, NUL-terminated; NULL only when out of memory. */
char *gw_openai_error_json(const gw_api_err *e);

/* The text of one token id for logprobs (decoded alone, special tokens
 * included, an incomplete UTF-8 character as U+FFFD); valid until the
 * next call. */
typedef const char *(*gw_piece_fn)(void *ctx, int32_t id, size_t *len);

/* Logprobs of n tokens as the worker sent them (loom_logprobs): lp[n],
 * top_ids/top_lp[n * stride] best first. */
typedef struct gw_lp_view {
	size_t n;
	const int32_t *ids;       /* [n] the tokens */
	const float *lp;          /* [n] */
	const int32_t *top_ids;   /* [n * stride] */
	const float *top_lp;
	size_t stride;
	const size_t *offsets;    /* [n] text_offset (code points), or NULL */
	size_t offset_base;       /* added to offsets */
} gw_lp_view;

/* One response or stream chunk (everything borrowed). */
typedef struct gw_result {
	gw_api api;               /* COMPLETIONS or CHAT */
	const char *id;           /* "cmpl-…" / "chatcmpl-…" */
	long long created;        /* unix seconds */
	const char *model;
	int index;                /* the choice's "index" (0 with n = 1) */
	const char *text;         /* this chunk's / the whole text; may be NULL when text_len 0 */
	size_t text_len;
	const char *finish;       /* "stop" | "length" | NULL (chunk before the last) */
	bool with_ids;            /* return_token_ids */
	const int32_t *ids;       /* completion ids (this chunk's, or all) */
	size_t n_ids;
	const int32_t *prompt_ids;/* for "prompt_token_ids" (full response / first chunk) */
	size_t n_prompt;
	size_t prompt_tokens;     /* usage */
	size_t cached_tokens;     /* usage.prompt_tokens_details: of prompt_tokens, those
				   * whose KV the worker's prefix cache held */
	size_t completion_tokens;
	/* logprobs (completions: the legacy object; chat: "content") */
	bool with_lp;
	int lp_k;                 /* alternatives shown per token */
	gw_lp_view lp;            /* the completion tokens of this response / chunk */
	bool echo_lp;             /* completions echo: the prompt tokens come first */
	gw_lp_view plp;           /* the prompt: n ids, ids[0] has no logprob, lp[i-1]
				     and top row i-1 are ids[i]'s (i >= 1) */
	bool with_prompt_lp;      /* vLLM's "prompt_logprobs" */
	int prompt_lp_k;          /* alternatives shown per prompt token */
	gw_piece_fn piece;
	void *piece_ctx;
	/* chat: OpenAI tool calls [{id, type, function: {name, arguments}}]
	 * (borrowed), or NULL. Response: message.tool_calls (content null when
	 * text_len is 0); chunk: delta.tool_calls, each with its "index". */
	const json_t *tool_calls;
} gw_result;

/* Non-stream response (text_completion / chat.completion) with usage. */
char *gw_openai_response_json(const gw_result *r);
/* The same with n choices: r[i] gives choice i (its index, text, finish,
 * ids, logprobs, tool calls), r[0] the rest (id, model, usage: the caller
 * puts the request's totals there, prompt_token_ids, chat prompt_logprobs). */
char *gw_openai_response_json_n(const gw_result *r, size_t n);
/* A stream chunk. Chat: role_only gives delta {"role":"assistant"}; otherwise
 * delta {"content": text} ({} when there is no text). */
char *gw_openai_chunk_json(const gw_result *r, bool role_only);
/* The include_usage chunk: "choices":[] and usage. */
char *gw_openai_usage_chunk_json(const gw_result *r);

/* Small bodies for the other routes (loom_malloc'ed, NULL = out of memory). */
char *gw_openai_tokens_json(const int32_t *ids, size_t n, int max_model_len);
char *gw_openai_detok_json(const char *text, size_t len);
/* GET /ready: {"status":"ready"|"not_ready","models_without_workers":[...]}. */
char *gw_openai_ready_json(bool ready, const char *const *missing, size_t n_missing);
/* GET /v1/models: the base models ("parent": null), then one entry per adapter
 * ("root": its folder, "parent": its base, "lora": {rank, max_rank, alpha,
 * use_rslora, targets, bytes}). */
char *gw_openai_models_json(const gw_models *m);

#endif
