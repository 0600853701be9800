/*
 * common/tokenizer_config.c — the pipeline sections of tokenizer.json:
 * normalizer, pre_tokenizer, post_processor and decoder. Each known
 * component becomes a step in loom_tok; anything else is refused at load
 * with LOOM_EUNSUPPORTED naming the component, rather than silently
 * tokenizing differently from Hugging Face.
 */
#include <jansson.h>
#include <string.h>

#include "alloc.h"
#include "tokenizer_int.h"

/* GPT-2's split regex, as the ByteLevel pre-tokenizer uses it (use_regex). */
static const char gpt2_re[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static const char *type_of(json_t *o)
{
	const char *s = json_string_value(json_object_get(o, "type"));
	return s ? s : "";
}

static loom_err unsupported(loom_tok *t, const char *section, json_t *o)
{
	return loom_fail(LOOM_EUNSUPPORTED, "%s: %s type \"%.40s\" is not supported", t->name, section,
			 type_of(o));
}

static loom_err compile_re(loom_tok *t, const char *pat, size_t len, bool literal, pcre2_code **out)
{
	int err;
	PCRE2_SIZE off;
	uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, opts, &err, &off, NULL);
	if (!re) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(err, msg, sizeof msg);
		return loom_fail(LOOM_EFORMAT, "%s: pre_tokenizer regex does not compile at offset %zu: %s",
				 t->name, (size_t)off, (const char *)msg);
	}
	(void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
	*out = re;
	return LOOM_OK;
}

/* ---- normalizer ---- */

static loom_err norm_step(loom_tok *t, json_t *n)
{
	const char *ty = type_of(n);
	if (!strcmp(ty, "Sequence")) {
		json_t *list = json_object_get(n, "normalizers"), *v;
		size_t i;
		loom_err rc;
		json_array_foreach(list, i, v)
			if ((rc = norm_step(t, v)))
				return rc;
		return LOOM_OK;
	}
	if (t->n_norm == TK_MAX_STEPS)
		return loom_fail(LOOM_EUNSUPPORTED, "%s: more than %d normalizer steps", t->name, TK_MAX_STEPS);
	tk_norm *s = &t->norm[t->n_norm];
	if (!strcmp(ty, "NFC")) {
		s->kind = TK_NORM_NFC;
		s->pat = s->with = NULL;
		t->n_norm++;
		return LOOM_OK;
	}
	if (!strcmp(ty, "Prepend")) {
		json_t *p = json_object_get(n, "prepend");
		if (!json_is_string(p))
			return loom_fail(LOOM_EFORMAT, "%s: normalizer Prepend has no \"prepend\" string", t->name);
		s->kind = TK_NORM_PREPEND;
		s->with = loom_strdup(json_string_value(p));
		s->with_len = json_string_length(p);
		if (!s->with)
			return loom_fail(LOOM_ENOMEM, "%s: out of memory", t->name);
		t->n_norm++;
		return LOOM_OK;
	}
	if (!strcmp(ty, "Replace")) {
		json_t *pat = json_object_get(json_object_get(n, "pattern"), "String");
		json_t *with = json_object_get(n, "content");
		if (!json_is_string(pat) || !json_string_length(pat) || !json_is_string(with))
			return loom_fail(LOOM_EUNSUPPORTED, "%s: normalizer Replace needs a non-empty \"String\" pattern and a \"content\" (regex patterns are not supported)",
					 t->name);
		s->kind = TK_NORM_REPLACE;
		s->pat = loom_strdup(json_string_value(pat));
		s->with = loom_strdup(json_string_value(with));
		s->pat_len = json_string_length(pat);
		s->with_len = json_string_length(with);
		t->n_norm++;
		if (!s->pat || !s->with)
			return loom_fail(LOOM_ENOMEM, "%s: out of memory", t->name);
		return LOOM_OK;
	}
	return unsupported(t, "normalizer", n);
}

loom_err tk_load_normalizer(loom_tok *t, json_t *norm)
{
	if (!norm || json_is_null(norm))
		return LOOM_OK;
	if (!json_is_object(norm))
		return loom_fail(LOOM_EFORMAT, "%s: normalizer is not an object", t->name);
	return norm_step(t, norm);
}

/* ---- pre-tokenizer ---- */

static loom_err pre_metaspace(loom_tok *t, json_t *p, tk_pre *s)
{
	const char *r = json_string_value(json_object_get(p, "replacement"));
	const char *scheme = json_string_value(json_object_get(p, "prepend_scheme"));
	json_t *aps = json_object_get(p, "add_prefix_space");
	if (!r)
		r = "\xe2\x96\x81";
	if (strlen(r) >= sizeof s->repl)
		return loom_fail(LOOM_EFORMAT, "%s: Metaspace replacement too long", t->name);
	strcpy(s->repl, r);
	s->kind = TK_PRE_METASPACE;
	s->split = !json_is_false(json_object_get(p, "split"));
	if (scheme && !strcmp(scheme, "first"))
		s->scheme = TK_PREPEND_FIRST;
	else if (scheme && !strcmp(scheme, "never"))
		s->scheme = TK_PREPEND_NEVER;
	else if (!scheme && json_is_false(aps))
		s->scheme = TK_PREPEND_NEVER;
	else
		s->scheme = TK_PREPEND_ALWAYS;
	return LOOM_OK;
}

static loom_err pre_step(loom_tok *t, json_t *p)
{
	const char *ty = type_of(p);
	loom_err rc;
	if (!strcmp(ty, "Sequence")) {
		json_t *list = json_object_get(p, "pretokenizers"), *v;
		size_t i;
		json_array_foreach(list, i, v)
			if ((rc = pre_step(t, v)))
				return rc;
		return LOOM_OK;
	}
	if (t->n_pre == TK_MAX_STEPS)
		return loom_fail(LOOM_EUNSUPPORTED, "%s: more than %d pre_tokenizer steps", t->name, TK_MAX_STEPS);
	tk_pre *s = &t->pre[t->n_pre];
	memset(s, 0, sizeof *s);
	if (!strcmp(ty, "ByteLevel")) {
		s->kind = TK_PRE_BYTELEVEL;
		s->add_prefix_space = json_is_true(json_object_get(p, "add_prefix_space"));
		if (!json_is_false(json_object_get(p, "use_regex")) &&
		    (rc = compile_re(t, gpt2_re, sizeof gpt2_re - 1, false, &s->re)))
			return rc;
		t->byte_level = true;
	} else if (!strcmp(ty, "Split")) {
		json_t *pat = json_object_get(p, "pattern");
		json_t *re = json_object_get(pat, "Regex"), *str = json_object_get(pat, "String");
		const char *beh = json_string_value(json_object_get(p, "behavior"));
		if (json_is_true(json_object_get(p, "invert")))
			return loom_fail(LOOM_EUNSUPPORTED, "%s: Split pre_tokenizer with invert is not supported", t->name);
		if (!beh || (strcmp(beh, "Isolated") && strcmp(beh, "Removed")))
			return loom_fail(LOOM_EUNSUPPORTED, "%s: Split pre_tokenizer behavior \"%s\" is not supported (Isolated, Removed)",
					 t->name, beh ? beh : "(none)");
		s->kind = TK_PRE_SPLIT;
		s->mode = !strcmp(beh, "Isolated") ? TK_SPLIT_ISOLATED : TK_SPLIT_REMOVED;
		if (json_is_string(re))
			rc = compile_re(t, json_string_value(re), json_string_length(re), false, &s->re);
		else if (json_is_string(str) && json_string_length(str))
			rc = compile_re(t, json_string_value(str), json_string_length(str), true, &s->re);
		else
			rc = loom_fail(LOOM_EFORMAT, "%s: Split pre_tokenizer has no Regex or String pattern", t->name);
		if (rc)
			return rc;
	} else if (!strcmp(ty, "Metaspace")) {
		if ((rc = pre_metaspace(t, p, s)))
			return rc;
	} else if (!strcmp(ty, "Digits")) {
		s->kind = TK_PRE_DIGITS;
		s->individual = json_is_true(json_object_get(p, "individual_digits"));
	} else {
		return unsupported(t, "pre_tokenizer", p);
	}
	t->n_pre++;
	return LOOM_OK;
}

loom_err tk_load_pretok(loom_tok *t, json_t *pre)
{
	if (!pre || json_is_null(pre))
		return LOOM_OK;
	if (!json_is_object(pre))
		return loom_fail(LOOM_EFORMAT, "%s: pre_tokenizer is not an object", t->name);
	return pre_step(t, pre);
}

/* ---- post-processor ---- */

static loom_err push_ids(loom_tok *t, int32_t **arr, size_t *n, json_t *ids, const char *name)
{
	size_t i;
	json_t *v;
	if (!json_is_array(ids) || !json_array_size(ids))
		return loom_fail(LOOM_EFORMAT, "%s: post_processor special token \"%.40s\" has no ids", t->name, name);
	int32_t *p = loom_realloc(*arr, (*n + json_array_size(ids)) * sizeof *p);
	if (!p)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", t->name);
	*arr = p;
	json_array_foreach(ids, i, v) {
		json_int_t id = json_integer_value(v);
		if (!json_is_integer(v) || id < 0 || id >= t->n_vocab || (t->flags[id] & TK_HOLE))
			return loom_fail(LOOM_EFORMAT, "%s: post_processor special token \"%.40s\" has an id outside the vocab",
					 t->name, name);
		p[(*n)++] = (int32_t)id;
	}
	return LOOM_OK;
}

static loom_err post_template(loom_tok *t, json_t *p)
{
	json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens"), *e;
	bool seen_seq = false;
	size_t i;
	loom_err rc;
	if (!json_is_array(single))
		return loom_fail(LOOM_EFORMAT, "%s: TemplateProcessing has no \"single\" template", t->name);
	json_array_foreach(single, i, e) {
		json_t *sp = json_object_get(e, "SpecialToken");
		if (json_object_get(e, "Sequence")) {
			if (seen_seq)
				return loom_fail(LOOM_EFORMAT, "%s: TemplateProcessing single has two sequences", t->name);
			seen_seq = true;
			continue;
		}
		const char *name = json_string_value(json_object_get(sp, "id"));
		if (!name)
			return loom_fail(LOOM_EFORMAT, "%s: TemplateProcessing single[%zu] is neither SpecialToken nor Sequence",
					 t->name, i);
		json_t *ids = json_object_get(json_object_get(specials, name), "ids");
		if (seen_seq)
			rc = push_ids(t, &t->suffix, &t->n_suffix, ids, name);
		else
			rc = push_ids(t, &t->prefix, &t->n_prefix, ids, name);
		if (rc)
			return rc;
	}
	return LOOM_OK;
}

static loom_err post_step(loom_tok *t, json_t *p)
{
	const char *ty = type_of(p);
	if (!strcmp(ty, "Sequence")) {
		json_t *list = json_object_get(p, "processors"), *v;
		size_t i;
		loom_err rc;
		json_array_foreach(list, i, v)
			if ((rc = post_step(t, v)))
				return rc;
		return LOOM_OK;
	}
	if (!strcmp(ty, "ByteLevel"))
		return LOOM_OK; /* only trims offsets: ids are unchanged */
	if (!strcmp(ty, "TemplateProcessing"))
		return post_template(t, p);
	return unsupported(t, "post_processor", p);
}

loom_err tk_load_post(loom_tok *t, json_t *post)
{
	if (!post || json_is_null(post))
		return LOOM_OK;
	if (!json_is_object(post))
		return loom_fail(LOOM_EFORMAT, "%s: post_processor is not an object", t->name);
	return post_step(t, post);
}

/* ---- decoder ---- */

static loom_err dec_step(loom_tok *t, json_t *d)
{
	const char *ty = type_of(d);
	if (!strcmp(ty, "Sequence")) {
		json_t *list = json_object_get(d, "decoders"), *v;
		size_t i;
		loom_err rc;
		json_array_foreach(list, i, v)
			if ((rc = dec_step(t, v)))
				return rc;
		return LOOM_OK;
	}
	if (!strcmp(ty, "Replace")) {
		const char *pat = json_string_value(json_object_get(json_object_get(d, "pattern"), "String"));
		const char *with = json_string_value(json_object_get(d, "content"));
		if (!pat || !with || strcmp(pat, "\xe2\x96\x81") || strcmp(with, " "))
			return loom_fail(LOOM_EUNSUPPORTED, "%s: decoder Replace other than \"\xe2\x96\x81\" -> \" \" is not supported",
					 t->name);
		t->dec_meta = true;
	} else if (!strcmp(ty, "ByteFallback")) {
		t->dec_byte_fallback = true;
	} else if (!strcmp(ty, "Fuse")) {
		/* concatenation is what decoding does anyway */
	} else if (!strcmp(ty, "Strip")) {
		const char *c = json_string_value(json_object_get(d, "content"));
		json_int_t start = json_integer_value(json_object_get(d, "start"));
		json_int_t stop = json_integer_value(json_object_get(d, "stop"));
		if (!c || strcmp(c, " ") || start > 1 || stop != 0)
			return loom_fail(LOOM_EUNSUPPORTED, "%s: decoder Strip other than one leading space is not supported",
					 t->name);
		t->dec_strip_space = start == 1;
	} else if (!strcmp(ty, "ByteLevel")) {
		t->dec_byte_level = true;
	} else if (!strcmp(ty, "Metaspace")) {
		const char *r = json_string_value(json_object_get(d, "replacement"));
		const char *scheme = json_string_value(json_object_get(d, "prepend_scheme"));
		if (r && strcmp(r, "\xe2\x96\x81"))
			return loom_fail(LOOM_EUNSUPPORTED, "%s: Metaspace decoder replacement must be \xe2\x96\x81", t->name);
		t->dec_meta = true;
		t->dec_strip_space = scheme ? strcmp(scheme, "never") != 0
					    : !json_is_false(json_object_get(d, "add_prefix_space"));
	} else {
		return unsupported(t, "decoder", d);
	}
	return LOOM_OK;
}

loom_err tk_load_decoder(loom_tok *t, json_t *dec)
{
	if (!dec || json_is_null(dec))
		return LOOM_OK;
	if (!json_is_object(dec))
		return loom_fail(LOOM_EFORMAT, "%s: decoder is not an object", t->name);
	return dec_step(t, dec);
}

void tk_config_fini(loom_tok *t)
{
	for (int i = 0; i < t->n_norm; i++) {
		loom_free(t->norm[i].pat);
		loom_free(t->norm[i].with);
	}
	for (int i = 0; i < t->n_pre; i++)
		if (t->pre[i].re)
			pcre2_code_free(t->pre[i].re);
	t->n_norm = t->n_pre = 0;
}
