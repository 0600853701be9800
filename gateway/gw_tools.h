/*
 * gateway/gw_tools.h — tool calls in a model's output text.
 *
 * Owns: recognising the tool-call syntax the instruct families loom serves
 * were trained to write (their chat templates ask for it), and splitting a
 * completion into plain content and OpenAI tool calls:
 *   - GW_TOOLS_HERMES: <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>,
 *     repeated (Qwen2.5, Qwen3 and Hermes-style templates);
 *   - GW_TOOLS_LLAMA3: the whole output is one JSON object {"name": ...,
 *     "parameters": {...}} (or "arguments"), optionally after <|python_tag|>,
 *     several separated by ';' (Llama 3.1 / 3.2 JSON tool calling);
 *   - GW_TOOLS_MISTRAL: [TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]
 *     (Mistral v0.3 and Nemo).
 * The format of a model is chosen from its chat template text (the markers it
 * writes). Output that does not parse as a tool call stays content: a model
 * that merely mentions a marker is not turned into a call.
 * Must not: know HTTP or requests; it works on text.
 */
#ifndef GW_TOOLS_H
#define GW_TOOLS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

typedef enum gw_tools_fmt {
	GW_TOOLS_NONE = 0, /* the template shows no tool-call syntax loom knows */
	GW_TOOLS_HERMES,
	GW_TOOLS_LLAMA3,
	GW_TOOLS_MISTRAL,
} gw_tools_fmt;

/* The format a chat template teaches (NULL template: NONE). */
gw_tools_fmt gw_tools_detect(const char *template_text);
const char *gw_tools_fmt_name(gw_tools_fmt f);

/*
 * Splits text (len bytes) written in format f. On LOOM_OK, *calls is NULL
 * when the text holds no tool call (then the whole text is content), else
 * a JSON array of OpenAI tool calls [{"id": "call_<id_seed>_<i>", "type":
 * "function", "function": {"name": string, "arguments": JSON text}}] the
 * caller owns; *content (loom_malloc'ed, NUL-terminated, may be "") is the
 * text outside the calls, or NULL when there is none. LOOM_ENOMEM only.
 */
loom_err gw_tools_parse(gw_tools_fmt f, const char *text, size_t len, unsigned long long id_seed,
			json_t **calls, char **content);

/*
 * While streaming: the number of leading bytes of text (len bytes so far)
 * that can be sent as content now, because no tool call can start inside
 * them (a marker, or for LLAMA3 a leading '{', holds back the rest until
 * the end, when gw_tools_parse decides).
 */
size_t gw_tools_safe_prefix(gw_tools_fmt f, const char *text, size_t len);

#endif
