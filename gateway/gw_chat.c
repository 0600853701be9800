/*
 * gateway/gw_chat.c — chat template rendering into a growing buffer.
 */
#include "gw_chat.h"

#include <stdbool.h>
#include <string.h>

#include "common/alloc.h"

static const char *const tmpl_names[] = {"plain", "chatml", "llama2", "zephyr", "model", "auto"};
static const char *const role_names[] = {"system", "user", "assistant", "tool"};
#define N_TMPL (sizeof tmpl_names / sizeof tmpl_names[0])
#define N_ROLE (sizeof role_names / sizeof role_names[0])

loom_err gw_chat_tmpl_parse(const char *name, gw_chat_tmpl *out)
{
	for (size_t i = 0; i < N_TMPL; i++) {
		if (!strcmp(name, tmpl_names[i])) {
			*out = (gw_chat_tmpl)i;
			return LOOM_OK;
		}
	}
	return loom_fail(LOOM_EINVAL,
			 "unknown chat template '%s' (expected model, auto, plain, chatml, llama2 or "
			 "zephyr)", name);
}

const char *gw_chat_tmpl_name(gw_chat_tmpl t)
{
	return (unsigned)t < N_TMPL ? tmpl_names[t] : "?";
}

loom_err gw_chat_role_parse(const char *name, gw_chat_role *out)
{
	for (size_t i = 0; i < N_ROLE; i++) {
		if (!strcmp(name, role_names[i])) {
			*out = (gw_chat_role)i;
			return LOOM_OK;
		}
	}
	if (!strcmp(name, "developer")) {
		*out = GW_ROLE_SYSTEM;
		return LOOM_OK;
	}
	return loom_fail(LOOM_EINVAL, "unknown role '%s' (expected system, user, assistant or tool)",
			 name);
}

const char *gw_chat_role_name(gw_chat_role r)
{
	return (unsigned)r < N_ROLE ? role_names[r] : "?";
}

typedef struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = loom_realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void puts_(sbuf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* Content without leading/trailing ASCII whitespace (llama2 strips it). */
static void put_stripped(sbuf *b, const char *s)
{
	size_t n = strlen(s);
	while (n && strchr(" \t\r\n", s[0])) {
		s++;
		n--;
	}
	while (n && strchr(" \t\r\n", s[n - 1]))
		n--;
	put(b, s, n);
}

static loom_err render_llama2(sbuf *b, const gw_chat_msg *m, size_t n)
{
	size_t i = 0;
	const char *sys = NULL;
	if (m[0].role == GW_ROLE_SYSTEM) {
		sys = m[0].content;
		i = 1;
	}
	if (i == n)
		return loom_fail(LOOM_EINVAL, "llama2 chat template needs a user message");
	for (size_t k = 0; i < n; i++, k++) {
		gw_chat_role want = (k % 2 == 0) ? GW_ROLE_USER : GW_ROLE_ASSISTANT;
		if (m[i].role != want)
			return loom_fail(LOOM_EINVAL,
					 "llama2 chat template: message %zu must have role '%s' "
					 "(roles alternate user/assistant after one optional system message)",
					 i, gw_chat_role_name(want));
		if (want == GW_ROLE_USER) {
			if (k > 0)
				puts_(b, "<s>");
			puts_(b, "[INST] ");
			if (k == 0 && sys) {
				puts_(b, "<<SYS>>\n");
				put_stripped(b, sys);
				puts_(b, "\n<</SYS>>\n\n");
			}
			put_stripped(b, m[i].content);
			puts_(b, " [/INST]");
		} else {
			puts_(b, " ");
			put_stripped(b, m[i].content);
			puts_(b, " </s>");
		}
	}
	if (m[n - 1].role != GW_ROLE_USER)
		return loom_fail(LOOM_EINVAL, "llama2 chat template: the last message must be from the user");
	return LOOM_OK;
}

loom_err gw_chat_render(gw_chat_tmpl t, const gw_chat_msg *m, size_t n, char **out, size_t *len)
{
	sbuf b = {0};
	loom_err rc = LOOM_OK;
	*out = NULL;
	*len = 0;
	if (n == 0)
		return loom_fail(LOOM_EINVAL, "no messages to render");
	for (size_t i = 0; i < n; i++)
		if (m[i].role == GW_ROLE_TOOL)
			return loom_fail(LOOM_EINVAL, "the %s chat template has no tool role (message "
					 "%zu); a model template that supports tools does",
					 gw_chat_tmpl_name(t), i);
	switch (t) {
	case GW_TMPL_PLAIN:
		for (size_t i = 0; i < n; i++) {
			puts_(&b, gw_chat_role_name(m[i].role));
			puts_(&b, ": ");
			puts_(&b, m[i].content);
			puts_(&b, "\n");
		}
		puts_(&b, "assistant:");
		break;
	case GW_TMPL_CHATML:
		for (size_t i = 0; i < n; i++) {
			puts_(&b, "<|im_start|>");
			puts_(&b, gw_chat_role_name(m[i].role));
			puts_(&b, "\n");
			puts_(&b, m[i].content);
			puts_(&b, "<|im_end|>\n");
		}
		puts_(&b, "<|im_start|>assistant\n");
		break;
	case GW_TMPL_LLAMA2:
		rc = render_llama2(&b, m, n);
		break;
	case GW_TMPL_ZEPHYR:
		for (size_t i = 0; i < n; i++) {
			puts_(&b, "<|");
			puts_(&b, gw_chat_role_name(m[i].role));
			puts_(&b, "|>\n");
			puts_(&b, m[i].content);
			puts_(&b, "</s>\n");
		}
		puts_(&b, "<|assistant|>\n");
		break;
	default:
		rc = loom_fail(LOOM_EINVAL, "unknown chat template %d", (int)t);
	}
	if (rc == LOOM_OK && b.oom)
		rc = loom_fail(LOOM_ENOMEM, "out of memory rendering a chat prompt");
	if (rc != LOOM_OK) {
		loom_free(b.p);
		return rc;
	}
	if (!b.p) /* cannot happen with n >= 1, but keep *out valid */
		b.p = loom_strdup("");
	*out = b.p;
	*len = b.len;
	return LOOM_OK;
}

loom_err gw_chat_render_jinja(const loom_jinja *t, const gw_chat_ctx *x, char **out, size_t *len)
{
	loom_err rc = LOOM_OK;
	json_t *ctx = json_object();
	*out = NULL;
	*len = 0;
	if (!ctx)
		return loom_fail(LOOM_ENOMEM, "out of memory rendering a chat prompt");
	if (x->kwargs) { /* first, so the request's own fields win */
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)x->kwargs, k, v)
			if (json_object_set(ctx, k, v))
				rc = LOOM_ENOMEM;
	}
	if (json_object_set(ctx, "messages", (json_t *)x->messages) ||
	    (x->tools && json_object_set(ctx, "tools", (json_t *)x->tools)) ||
	    json_object_set_new(ctx, "add_generation_prompt",
				json_boolean(x->add_generation_prompt)) ||
	    json_object_set_new(ctx, "bos_token", json_string(x->bos_token ? x->bos_token : "")) ||
	    json_object_set_new(ctx, "eos_token", json_string(x->eos_token ? x->eos_token : "")))
		rc = LOOM_ENOMEM;
	if (rc)
		rc = loom_fail(LOOM_ENOMEM, "out of memory rendering a chat prompt");
	else
		rc = loom_jinja_render(t, ctx, out, len);
	json_decref(ctx);
	return rc;
}
