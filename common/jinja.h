/*
 * common/jinja.h — a Jinja2 interpreter for Hugging Face chat templates.
 *
 * Owns: compiling a chat template (the `chat_template` of a model's
 * tokenizer_config.json) once, and rendering it with a conversation. The
 * semantics are those of Python's jinja2 3.1 configured as transformers
 * configures it: ImmutableSandboxedEnvironment(trim_blocks=True,
 * lstrip_blocks=True, extensions=[loopcontrols]), `tojson` as
 * json.dumps(x, ensure_ascii=False, ...), globals raise_exception(msg) and
 * strftime_now(fmt). Output is meant to be byte-identical to jinja2's.
 * Must not: touch files, the network or global state; crash, hang or grow
 * without bound on any template or context (step, depth, memory and output
 * limits turn hostile input into errors).
 * Called by: the gateway, which renders chat requests into prompts.
 */
#ifndef LOOM_JINJA_H
#define LOOM_JINJA_H

#include <stddef.h>

#include <jansson.h>

#include "common/err.h"

/* A compiled template: immutable, so one may be rendered by many threads at once. */
typedef struct loom_jinja loom_jinja;

/* Output larger than this is refused (LOOM_EINVAL). */
#define LOOM_JINJA_MAX_OUTPUT ((size_t)16 << 20)

/*
 * Compiles src (len bytes, UTF-8; need not be NUL-terminated). On success
 * *out is a template the caller owns (loom_jinja_free). On failure *out is
 * NULL and the result is LOOM_EFORMAT (a syntax error) or LOOM_EUNSUPPORTED
 * (a construct, filter, test or method this interpreter lacks), with a
 * message naming the line: "chat template line 12: unsupported filter
 * 'wordwrap'"; LOOM_ENOMEM.
 */
loom_err loom_jinja_compile(const char *src, size_t len, loom_jinja **out);

/* Frees t (NULL is fine). */
void loom_jinja_free(loom_jinja *t);

/*
 * Renders t with ctx, a JSON object whose keys become the template's
 * variables (messages, tools, add_generation_prompt, bos_token, eos_token,
 * and any others; NULL = none). On success *out is a NUL-terminated
 * loom_malloc'ed string the caller frees with loom_free, *len its length.
 * A runtime error — raise_exception(msg) (the message is msg), a type
 * error, an undefined value used where jinja2 raises, a call jinja2's
 * sandbox refuses, a limit reached — is LOOM_EINVAL with a message; then
 * *out is NULL. LOOM_ENOMEM when memory runs out.
 */
loom_err loom_jinja_render(const loom_jinja *t, const json_t *ctx, char **out, size_t *len);

#endif
