/*
 * gateway/gw_guide.h — structured outputs and tool choice in a request body.
 *
 * Owns: reading the fields that constrain a completion — OpenAI's
 * response_format ({"type": "text" | "json_object" | "json_schema"}), vLLM's
 * guided_json / guided_regex / guided_choice and structured_outputs
 * ({"json" | "regex" | "choice": ...}) — into one guide (common/proto.h's
 * loom_guide kind + text), compiling it once (common/grammar.h) so that
 * what the worker would refuse is a 400 naming the field; and chat's
 * tool_choice / parallel_tool_calls. Building the grammar of a tool call
 * in a model family's syntax (tool_choice "required" or a named function)
 * from the tools' parameter schemas.
 * Must not: tokenize or know workers; pure functions, any thread.
 */
#ifndef GW_GUIDE_H
#define GW_GUIDE_H

#include <stdbool.h>

#include <jansson.h>

#include "gw_openai.h"
#include "gw_tools.h"

/* Reads the guide fields and tool_choice of root into p (p->api and
 * p->tools already set). False with e filled (400 naming the field). */
bool gw_guide_parse(json_t *root, gw_params *p, gw_api_err *e);

/* With tool_choice "required" or a named function: the guide that makes
 * the output one tool call in format f whose arguments follow the called
 * function's "parameters" schema (an object of any shape when it has
 * none). Sets p->guide / p->guide_text. False with e filled: a format loom
 * cannot force (GW_TOOLS_NONE: the model's template shows no tool-call
 * syntax), a parameters schema the grammar refuses. */
bool gw_guide_tool_call(gw_params *p, gw_tools_fmt f, const char *model, gw_api_err *e);

#endif
