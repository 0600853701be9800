/*
 * gateway/gw_chat.h — chat templates: OpenAI messages -> one prompt string.
 *
 * Owns: the message struct the chat API parses into, the template names a
 * model can be configured with, and rendering: the four built-in styles
 * (their text is tokenized with the model's post-processor, add_special, so
 * they never write the leading BOS themselves) and a model's own Jinja
 * template (common/jinja.h; it writes bos_token itself, so its text is
 * tokenized without special tokens, as transformers' apply_chat_template
 * does). Must not: tokenize or know HTTP.
 * Called by gw_openai (roles), gw_models (template names) and the chat route.
 */
#ifndef GW_CHAT_H
#define GW_CHAT_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"
#include "common/jinja.h"

typedef enum gw_chat_role {
	GW_ROLE_SYSTEM,
	GW_ROLE_USER,
	GW_ROLE_ASSISTANT,
	GW_ROLE_TOOL, /* a tool's result: model templates only */
} gw_chat_role;

typedef struct gw_chat_msg {
	gw_chat_role role;
	char *content; /* NUL-terminated UTF-8, owned by whoever owns the array */
} gw_chat_msg;

typedef enum gw_chat_tmpl {
	GW_TMPL_PLAIN,  /* "<role>: <content>\n" ... "assistant:" */
	GW_TMPL_CHATML, /* <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n */
	GW_TMPL_LLAMA2, /* [INST] <<SYS>>\n..\n<</SYS>>\n\nuser [/INST] answer </s><s>[INST] ... */
	GW_TMPL_ZEPHYR, /* <|system|>\n..</s>\n<|user|>\n..</s>\n<|assistant|>\n */
	GW_TMPL_MODEL,  /* the model's own Jinja chat_template (tokenizer_config.json) */
	GW_TMPL_AUTO,   /* not chosen: the model's template when it ships one, else plain */
} gw_chat_tmpl;

/* "plain" | "chatml" | "llama2" | "zephyr" | "model" | "auto" -> *out; else
 * LOOM_EINVAL. */
loom_err gw_chat_tmpl_parse(const char *name, gw_chat_tmpl *out);
/* Static name of t. */
const char *gw_chat_tmpl_name(gw_chat_tmpl t);
/* "system" | "user" | "assistant" | "tool" (also "developer" = system) -> *out. */
loom_err gw_chat_role_parse(const char *name, gw_chat_role *out);
const char *gw_chat_role_name(gw_chat_role r);

/*
 * Renders n messages (n >= 1) with template t, ending with the cue for the
 * assistant's next turn. *out is loom_malloc'ed and NUL-terminated (caller
 * loom_free's), *len its length. LOOM_EINVAL when the messages do not fit
 * the template (llama2: roles must alternate user/assistant after an
 * optional leading system message, and the last must be user).
 */
loom_err gw_chat_render(gw_chat_tmpl t, const gw_chat_msg *msgs, size_t n, char **out, size_t *len);

/* What a model template is rendered with (transformers' apply_chat_template
 * variables). messages: the request's messages as JSON objects (role,
 * content as a string, tool_calls with arguments as objects, tool_call_id,
 * name); tools: NULL or the request's tools; kwargs: NULL or extra
 * variables (chat_template_kwargs, e.g. enable_thinking). */
typedef struct gw_chat_ctx {
	const json_t *messages;
	const json_t *tools;
	const json_t *kwargs;
	int add_generation_prompt;
	const char *bos_token, *eos_token;
} gw_chat_ctx;

/* Renders x with the compiled model template t. *out loom_malloc'ed, NUL-
 * terminated. A template error (raise_exception, a type error, a limit) is
 * LOOM_EINVAL with the template's message. */
loom_err gw_chat_render_jinja(const loom_jinja *t, const gw_chat_ctx *x, char **out, size_t *len);

#endif
