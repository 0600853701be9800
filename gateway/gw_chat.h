/*
 * gateway/gw_chat.h — chat templates: OpenAI messages -> one prompt string.
 *
 * Owns: the message struct the chat API parses into, the template names a
 * model can be configured with, and rendering. The rendered text is later
 * tokenized with the model's post-processor (add_special), so templates
 * never write the leading BOS themselves. Must not: tokenize or know HTTP.
 * Called by gw_openai (roles), gw_models (template names) and the chat route.
 */
#ifndef GW_CHAT_H
#define GW_CHAT_H

#include <stddef.h>

#include "common/err.h"

typedef enum gw_chat_role { GW_ROLE_SYSTEM, GW_ROLE_USER, GW_ROLE_ASSISTANT } gw_chat_role;

typedef struct gw_chat_msg {
	gw_chat_role role;
	char *content; /* NUL-terminated UTF-8, owned by whoever owns the array */
} gw_chat_msg;

typedef enum gw_chat_tmpl {
	GW_TMPL_PLAIN,  /* "<role>: <content>\n" ... "assistant:" */
	GW_TMPL_CHATML, /* <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n */
	GW_TMPL_LLAMA2, /* [INST] <<SYS>>\n..\n<</SYS>>\n\nuser [/INST] answer </s><s>[INST] ... */
	GW_TMPL_ZEPHYR, /* <|system|>\n..</s>\n<|user|>\n..</s>\n<|assistant|>\n */
} gw_chat_tmpl;

/* "plain" | "chatml" | "llama2" | "zephyr" -> *out; else LOOM_EINVAL. */
loom_err gw_chat_tmpl_parse(const char *name, gw_chat_tmpl *out);
/* Static name of t. */
const char *gw_chat_tmpl_name(gw_chat_tmpl t);
/* "system" | "user" | "assistant" (also "developer" = system) -> *out. */
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

#endif
