/*
 * common/chat_source.h — where a model's chat template comes from.
 *
 * Owns: finding the Jinja chat template a Hugging Face model folder ships
 * (chat_template.jinja, else tokenizer_config.json's "chat_template": a
 * string, or a list of {name, template} of which "default" is used) and the
 * bos_token / eos_token strings templates print (a string or an AddedToken
 * object {"content": ...}). Malformed files are errors naming the file and
 * the field; a folder without a template is not an error (template NULL).
 * Must not: compile or render templates (common/jinja.h does), tokenize.
 * Called by the bundle builder (to carry the texts into the store) and the
 * gateway (to compile the template of each model).
 */
#ifndef LOOM_CHAT_SOURCE_H
#define LOOM_CHAT_SOURCE_H

#include <stddef.h>

#include "err.h"

typedef struct loom_chat_source {
	char *template_text; /* NULL when the model ships none */
	char *bos_token;     /* "" when not named */
	char *eos_token;     /* "" when not named */
} loom_chat_source;

/*
 * Parses tokenizer_config.json text (tc, tc_len; NULL = absent) and a
 * chat_template.jinja text (jinja, NULL = absent; it wins over the config's
 * field, as in transformers). label names the source in messages. *out is
 * filled with loom_malloc'ed strings (loom_chat_source_fini frees them).
 */
loom_err loom_chat_source_parse(const char *tc, size_t tc_len, const char *jinja,
				const char *label, loom_chat_source *out);

/* Reads dir/tokenizer_config.json and dir/chat_template.jinja when present.
 * The texts themselves (NULL when absent) are returned in *tc / *jinja when
 * those are not NULL (loom_free them). */
loom_err loom_chat_source_load_dir(const char *dir, loom_chat_source *out, char **tc, char **jinja);

void loom_chat_source_fini(loom_chat_source *s);

#endif
