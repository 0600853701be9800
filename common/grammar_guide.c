/*
 * common/grammar_guide.c — a grammar from a request's guide as the wire
 * carries it (loom_guide kind + text, common/proto.h).
 */
#include "common/grammar.h"

#include <string.h>

#include "common/alloc.h"
#include "common/proto.h"

static loom_err from_choices(json_t *a, loom_grammar **out)
{
	size_t n = json_is_array(a) ? json_array_size(a) : 0;
	const char **c;
	size_t *lens;
	loom_err rc;

	if (!n)
		return loom_fail(LOOM_EINVAL, "choice: need a non-empty array of strings");
	c = loom_calloc(n, sizeof *c);
	lens = loom_calloc(n, sizeof *lens);
	if (!c || !lens) {
		rc = loom_fail(LOOM_ENOMEM, "choice: out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(a, i);
		if (!json_is_string(s)) {
			rc = loom_fail(LOOM_EINVAL, "choice: item %zu is not a string", i);
			goto out;
		}
		c[i] = json_string_value(s);
		lens[i] = json_string_length(s);
	}
	rc = loom_grammar_from_choices(c, lens, n, out);
out:
	loom_free(c);
	loom_free(lens);
	return rc;
}

loom_err loom_grammar_from_guide(int kind, const char *text, loom_grammar **out)
{
	json_error_t je;
	json_t *j = NULL;
	loom_err rc;

	*out = NULL;
	if (!text)
		text = "";
	switch (kind) {
	case LOOM_GUIDE_JSON_OBJECT:
		return loom_grammar_any_json_object(out);
	case LOOM_GUIDE_REGEX:
		return loom_grammar_from_regex(text, strlen(text), out);
	case LOOM_GUIDE_JSON_SCHEMA:
	case LOOM_GUIDE_CHOICE:
	case LOOM_GUIDE_WRAPPED:
		break;
	default:
		return loom_fail(LOOM_EINVAL, "guide: unknown kind %d", kind);
	}
	if (!(j = json_loads(text, JSON_DECODE_ANY, &je)))
		return loom_fail(LOOM_EINVAL, "guide: not JSON (line %d: %s)", je.line, je.text);
	if (kind == LOOM_GUIDE_JSON_SCHEMA) {
		rc = loom_grammar_from_json_schema(j, out);
	} else if (kind == LOOM_GUIDE_CHOICE) {
		rc = from_choices(j, out);
	} else {
		json_t *p = json_object_get(j, "prefix"), *s = json_object_get(j, "schema"),
		       *x = json_object_get(j, "suffix");
		if (!json_is_string(p) || !s || !json_is_string(x))
			rc = loom_fail(LOOM_EINVAL, "guide: a wrapped schema needs \"prefix\", "
				       "\"schema\" and \"suffix\"");
		else
			rc = loom_grammar_from_json_schema_wrapped(s, json_string_value(p),
								   json_string_length(p),
								   json_string_value(x),
								   json_string_length(x), out);
	}
	json_decref(j);
	return rc;
}
