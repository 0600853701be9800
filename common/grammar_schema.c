/*
 * common/grammar_schema.c — JSON Schema (the subset of grammar.h) to rules.
 *
 * Every subschema becomes one rule (memoized by its json_t, so a $ref cycle
 * is a rule referring to itself); a property's value, an array's item and an
 * anyOf branch are references to their subschema's rule. Shared rules:
 * the generic string, and the any-JSON value at each
 * nesting depth. Numbers, literals, formats and patterns are inline trees,
 * most of them written as regexes and compiled by grammar_regex.c.
 *
 * Objects: with properties p1..pn in order, "nothing emitted yet" is an
 * alternation over the first property emitted (any one up to the first
 * required), and after it a flat sequence of the rest, optional ones
 * wrapped in `( ws "," ws kv )?`: O(n^2) in the optional properties before
 * the first required one, bounded by the state limit.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/grammar_int.h"

#define SC_MAX_ITEMS 256
#define SC_MAX_LENGTH 1024
#define SC_INT_BOUND 9999999999999999LL /* 16 digits */

typedef struct sc {
	gx_builder *b;
	const json_t *root;
	const json_t **memo_k;
	int *memo_v;
	int n_memo, cap_memo;
	int r_string;
	int r_value[LOOM_GRAMMAR_JSON_DEPTH + 2];
	char path[1024];
	size_t plen;
	int depth;
	loom_err rc;
} sc;

static const char RX_STRING_CHAR[] =
	"(?:[^\"\\\\\\x00-\\x1f]|\\\\(?:[\"\\\\/bfnrt]|u(?:[0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}"
	"|[dD][0-7][0-9a-fA-F]{2})))";
static const char RX_INT[] = "-?(?:0|[1-9][0-9]{0,15})";
static const char RX_NUMBER[] = "-?(?:0|[1-9][0-9]{0,15})(?:\\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,2})?";

static const struct {
	const char *name, *re;
} sc_formats[] = {
	{ "date", "[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])" },
	{ "time", "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?"
		  "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])" },
	{ "date-time", "[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])T"
		       "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?"
		       "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])" },
	{ "uuid", "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}" },
	{ "email", "[a-zA-Z0-9](?:[a-zA-Z0-9._+-]{0,30}[a-zA-Z0-9])?@[a-z0-9](?:[a-z0-9-]{0,30}"
		   "[a-z0-9])?(?:\\.[a-z]{2,8}){1,3}" },
};

static const char *const sc_known[] = {
	"type", "properties", "required", "additionalProperties", "enum", "const", "items",
	"minItems", "maxItems", "anyOf", "oneOf", "$ref", "$defs", "definitions", "pattern",
	"minLength", "maxLength", "format", "minimum", "maximum", "exclusiveMinimum",
	"exclusiveMaximum", "description", "title", "default", "examples", "$schema", "$id",
	"$comment",
};
static const char *const sc_annotations[] = {
	"description", "title", "default", "examples", "$schema", "$id", "$comment", "$defs",
	"definitions",
};

static bool in_list(const char *k, const char *const *l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(k, l[i]))
			return true;
	return false;
}

/* ---- errors and paths ---- */

static const char *sc_ptr(sc *c)
{
	return c->plen ? c->path : "(root)";
}

static gx *sc_fail(sc *c, loom_err code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static gx *sc_fail(sc *c, loom_err code, const char *fmt, ...)
{
	if (!c->rc) {
		char msg[512];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof msg, fmt, ap);
		va_end(ap);
		c->rc = loom_fail(code, "json_schema: %s at %s", msg, sc_ptr(c));
	}
	return NULL;
}

static gx *sc_oom(sc *c)
{
	if (!c->rc)
		c->rc = c->b->n_nodes > GX_MAX_NODES
				? loom_fail(LOOM_ERANGE, "json_schema: grammar too large")
				: loom_fail(LOOM_ENOMEM, "json_schema: out of memory");
	return NULL;
}

/* Appends "/seg" (JSON pointer escaped); returns the old length to restore. */
static size_t path_push(sc *c, const char *seg)
{
	size_t old = c->plen;
	if (c->plen + 1 < sizeof c->path)
		c->path[c->plen++] = '/';
	for (const char *s = seg; *s && c->plen + 2 < sizeof c->path; s++) {
		if (*s == '~' || *s == '/') {
			c->path[c->plen++] = '~';
			c->path[c->plen++] = *s == '~' ? '0' : '1';
		} else {
			c->path[c->plen++] = *s;
		}
	}
	c->path[c->plen] = '\0';
	return old;
}

static size_t path_push_i(sc *c, size_t i)
{
	char b[24];
	snprintf(b, sizeof b, "%zu", i);
	return path_push(c, b);
}

static void path_pop(sc *c, size_t old)
{
	c->plen = old;
	c->path[old] = '\0';
}

/* ---- small pieces ---- */

static gx *sc_regex(sc *c, const char *re, bool json)
{
	gx *x;
	char what[1100];
	snprintf(what, sizeof what, "json_schema: pattern at %s", sc_ptr(c));
	loom_err rc = gx_regex(c->b, re, strlen(re), json, what, &x);
	if (rc) {
		if (!c->rc)
			c->rc = rc;
		return NULL;
	}
	return x;
}

static gx *lit(sc *c, const char *s)
{
	gx *x = gx_lit(c->b, s, strlen(s));
	return x ? x : sc_oom(c);
}

static gx *ref(sc *c, int rule)
{
	if (rule < 0)
		return NULL;
	gx *x = gx_ref(c->b, rule);
	return x ? x : sc_oom(c);
}

static int new_rule(sc *c)
{
	int r = gx_rule_new(c->b);
	if (r < 0 && c->b->oom)
		sc_oom(c);
	else if (r < 0)
		sc_fail(c, LOOM_ERANGE, "too many rules");
	return r;
}

/* Whitespace between JSON tokens: nothing, one space, or a newline and up to
 * 32 spaces. Inline in the caller's rule (34 states), so what follows it is
 * known there and the mask cache judges tokens like " the" or "\n    }"
 * without looking at the stack. */
static gx *ws(sc *c)
{
	gx *k[2] = { gx_bytes(c->b, ' ', ' '),
		     gx_seq2(c->b, gx_bytes(c->b, '\n', '\n'), gx_rep(c->b, gx_bytes(c->b, ' ', ' '), 0, 32)) };
	gx *x = gx_rep(c->b, gx_alt(c->b, k, 2), 0, 1);
	return x ? x : sc_oom(c);
}

static gx *string_rule(sc *c)
{
	if (c->r_string < 0) {
		char re[256];
		snprintf(re, sizeof re, "\"%s*\"", RX_STRING_CHAR);
		if ((c->r_string = new_rule(c)) < 0)
			return NULL;
		if (!(c->b->rules[c->r_string].body = sc_regex(c, re, false)))
			return NULL;
	}
	return ref(c, c->r_string);
}

/* Literal JSON text of v (compact). */
static gx *json_lit(sc *c, const json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!s)
		return sc_oom(c);
	gx *x = lit(c, s);
	free(s);
	return x;
}

/* The generic value at nesting depth d (1 = top). */
static gx *any_value(sc *c, int d);

static gx *any_object(sc *c, int d)
{
	gx *k = string_rule(c);
	gx *member = gx_seq(c->b, (gx *[]){ k, ws(c), lit(c, ":"), ws(c), any_value(c, d + 1) }, 5);
	gx *more = gx_rep(c->b, gx_seq(c->b, (gx *[]){ ws(c), lit(c, ","), ws(c), member }, 4), 0, -1);
	gx *body = gx_rep(c->b, gx_seq2(c->b, member, more), 0, 1);
	gx *x = gx_seq(c->b, (gx *[]){ lit(c, "{"), ws(c), body, ws(c), lit(c, "}") }, 5);
	return x ? x : sc_oom(c);
}

static gx *any_array(sc *c, int d)
{
	gx *v = any_value(c, d + 1);
	gx *more = gx_rep(c->b, gx_seq(c->b, (gx *[]){ ws(c), lit(c, ","), ws(c), v }, 4), 0, -1);
	gx *body = gx_rep(c->b, gx_seq2(c->b, v, more), 0, 1);
	gx *x = gx_seq(c->b, (gx *[]){ lit(c, "["), ws(c), body, ws(c), lit(c, "]") }, 5);
	return x ? x : sc_oom(c);
}

static gx *any_value(sc *c, int d)
{
	if (d > LOOM_GRAMMAR_JSON_DEPTH + 1)
		d = LOOM_GRAMMAR_JSON_DEPTH + 1;
	if (c->r_value[d] < 0) {
		int r = c->r_value[d] = new_rule(c);
		if (r < 0)
			return NULL;
		gx *k[7] = { string_rule(c), sc_regex(c, RX_NUMBER, false), lit(c, "true"),
			     lit(c, "false"), lit(c, "null") };
		int n = 5;
		if (d <= LOOM_GRAMMAR_JSON_DEPTH) {
			k[n++] = any_object(c, d);
			k[n++] = any_array(c, d);
		}
		if (!(c->b->rules[r].body = gx_alt(c->b, k, n)))
			return c->rc ? NULL : sc_oom(c);
	}
	return ref(c, c->r_value[d]);
}

static bool num_of(const json_t *v, double *out)
{
	if (!json_is_number(v))
		return false;
	*out = json_number_value(v);
	return isfinite(*out);
}

static gx *integer(sc *c, const json_t *s)
{
	long long lo = -SC_INT_BOUND, hi = SC_INT_BOUND;
	bool bounded = false;
	static const char *const keys[4] = { "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum" };
	for (int k = 0; k < 4; k++) {
		const json_t *v = json_object_get(s, keys[k]);
		double x;
		if (!v)
			continue;
		if (!num_of(v, &x))
			return sc_fail(c, LOOM_EUNSUPPORTED, "'%s' that is not a number", keys[k]);
		if (x < -1e17 || x > 1e17)
			continue; /* beyond the 16-digit output bound anyway */
		long long b = k < 2 ? (long long)ceil(x) : (long long)floor(x);
		if (k == 1 && (double)b == x)
			b++;
		if (k == 3 && (double)b == x)
			b--;
		if (k < 2 && b > lo)
			lo = b;
		if (k >= 2 && b < hi)
			hi = b;
		bounded = true;
	}
	if (!bounded)
		return sc_regex(c, RX_INT, false);
	if (lo > hi)
		return sc_fail(c, LOOM_EINVAL, "no integer between minimum and maximum");
	char *re = gx_int_range_re(lo, hi);
	gx *x = re ? sc_regex(c, re, false) : sc_oom(c);
	loom_free(re);
	return x;
}

/* ---- strings ---- */

static bool get_count(sc *c, const json_t *s, const char *key, long max, long *out)
{
	const json_t *v = json_object_get(s, key);
	if (!v)
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		sc_fail(c, LOOM_EINVAL, "'%s' must be a non-negative integer", key);
		return false;
	}
	if (json_integer_value(v) > max) {
		sc_fail(c, LOOM_EUNSUPPORTED, "'%s' over %ld", key, max);
		return false;
	}
	*out = (long)json_integer_value(v);
	return true;
}

static gx *string(sc *c, const json_t *s)
{
	const json_t *pat = json_object_get(s, "pattern"), *fmt = json_object_get(s, "format");
	long minl = 0, maxl = -1;
	bool has_len = json_object_get(s, "minLength") || json_object_get(s, "maxLength");
	if (!get_count(c, s, "minLength", SC_MAX_LENGTH, &minl) ||
	    !get_count(c, s, "maxLength", SC_MAX_LENGTH, &maxl))
		return NULL;
	if ((pat != NULL) + (fmt != NULL) + has_len > 1)
		return sc_fail(c, LOOM_EUNSUPPORTED, "pattern, format and minLength/maxLength combined");
	gx *inner;
	if (pat) {
		if (!json_is_string(pat))
			return sc_fail(c, LOOM_EINVAL, "'pattern' must be a string");
		size_t old = path_push(c, "pattern");
		gx *x;
		char what[1100];
		snprintf(what, sizeof what, "json_schema: pattern at %s", sc_ptr(c));
		loom_err rc = gx_regex(c->b, json_string_value(pat), json_string_length(pat), true, what, &x);
		path_pop(c, old);
		if (rc) {
			c->rc = c->rc ? c->rc : rc;
			return NULL;
		}
		inner = x;
	} else if (fmt) {
		const char *f = json_is_string(fmt) ? json_string_value(fmt) : "";
		inner = NULL;
		for (size_t i = 0; i < sizeof sc_formats / sizeof sc_formats[0]; i++)
			if (!strcmp(f, sc_formats[i].name))
				inner = sc_regex(c, sc_formats[i].re, true);
		if (!inner)
			return c->rc ? NULL : sc_fail(c, LOOM_EUNSUPPORTED, "unsupported format '%s'", f);
	} else if (has_len) {
		if (maxl >= 0 && maxl < minl)
			return sc_fail(c, LOOM_EINVAL, "maxLength below minLength");
		inner = gx_rep(c->b, sc_regex(c, RX_STRING_CHAR, false), (int)minl, (int)maxl);
	} else {
		return string_rule(c);
	}
	gx *x = gx_seq3(c->b, lit(c, "\""), inner, lit(c, "\""));
	return x ? x : c->rc ? NULL : sc_oom(c);
}

/* ---- arrays ---- */

static int schema_rule(sc *c, const json_t *s);

static gx *array(sc *c, const json_t *s)
{
	const json_t *items = json_object_get(s, "items");
	long mn = 0, mx = -1;
	if (!get_count(c, s, "minItems", SC_MAX_ITEMS, &mn) || !get_count(c, s, "maxItems", SC_MAX_ITEMS, &mx))
		return NULL;
	if (mx >= 0 && mx < mn)
		return sc_fail(c, LOOM_EINVAL, "maxItems below minItems");
	gx *item;
	if (items) {
		if (json_is_array(items))
			return sc_fail(c, LOOM_EUNSUPPORTED, "unsupported keyword 'items' as an array");
		size_t old = path_push(c, "items");
		item = ref(c, schema_rule(c, items));
		path_pop(c, old);
	} else {
		item = any_value(c, 2);
	}
	if (!item)
		return NULL;
	gx *body;
	if (mx == 0) {
		body = gx_empty(c->b);
	} else {
		gx *more = gx_rep(c->b, gx_seq(c->b, (gx *[]){ ws(c), lit(c, ","), ws(c), item }, 4),
				  mn > 0 ? (int)mn - 1 : 0, mx > 0 ? (int)mx - 1 : -1);
		body = gx_seq2(c->b, item, more);
		if (mn == 0)
			body = gx_rep(c->b, body, 0, 1);
	}
	gx *x = gx_seq(c->b, (gx *[]){ lit(c, "["), ws(c), body, ws(c), lit(c, "]") }, 5);
	return x ? x : c->rc ? NULL : sc_oom(c);
}

/* ---- objects ---- */

typedef struct sc_prop {
	const char *name;
	size_t len;
	bool req;
	gx *kv; /* "name" ws : ws value (a tree; reused by reference in several places) */
} sc_prop;

/* Plain key characters (no escapes): anything but '"', '\\' and controls. */
static bool plain_set(gx_cpset *s)
{
	return !gx_cpset_add(s, 0x20, 0x21) && !gx_cpset_add(s, 0x23, 0x5B) &&
	       !gx_cpset_add(s, 0x5D, 0x10FFFF);
}

static uint32_t utf8_cp(const char *s, size_t n, size_t *len)
{
	const unsigned char *u = (const unsigned char *)s;
	uint32_t c = u[0];
	size_t l = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
	if (l > n)
		l = n;
	if (l > 1)
		c &= 0x3F >> (l - 1);
	for (size_t k = 1; k < l; k++)
		c = c << 6 | (u[k] & 0x3F);
	*len = l;
	return c;
}

/* Key content (after the opening quote, through the closing one) that is
 * none of names[0..n) (sorted, all plain), each at offset off. */
static gx *key_excl(sc *c, sc_prop **names, int n, size_t off, int depth)
{
	gx_cpset others = { 0 };
	gx **alts = loom_malloc(((size_t)n + 2) * sizeof *alts);
	int na = 0;
	gx *res = NULL;
	if (!alts || !plain_set(&others)) {
		sc_oom(c);
		goto out;
	}
	if (depth > 100) {
		sc_fail(c, LOOM_EUNSUPPORTED, "property name over 100 characters with additionalProperties");
		goto out;
	}
	bool terminal = false;
	for (int i = 0; i < n;) {
		if (names[i]->len == off) {
			terminal = true;
			i++;
			continue;
		}
		size_t cl;
		uint32_t cp = utf8_cp(names[i]->name + off, names[i]->len - off, &cl);
		int j = i;
		while (j < n && names[j]->len > off && names[j]->len - off >= cl &&
		       !memcmp(names[j]->name + off, names[i]->name + off, cl))
			j++;
		/* remove cp from others */
		gx_cpset one = { 0 };
		if (gx_cpset_add(&one, cp, cp) || gx_cpset_negate(&one)) {
			gx_cpset_fini(&one);
			sc_oom(c);
			goto out;
		}
		gx_cpset keep = { 0 };
		bool oom = false;
		for (int a = 0; a < others.n; a++)
			for (int b = 0; b < one.n; b++) {
				uint32_t lo = others.r[a].lo > one.r[b].lo ? others.r[a].lo : one.r[b].lo;
				uint32_t hi = others.r[a].hi < one.r[b].hi ? others.r[a].hi : one.r[b].hi;
				oom |= gx_cpset_add(&keep, lo, hi) != LOOM_OK;
			}
		gx_cpset_fini(&one);
		gx_cpset_fini(&others);
		others = keep;
		if (oom) {
			sc_oom(c);
			goto out;
		}
		gx *rest = key_excl(c, names + i, j - i, off + cl, depth + 1);
		if (!rest)
			goto out;
		alts[na++] = gx_seq2(c->b, gx_lit(c->b, names[i]->name + off, cl), rest);
		i = j;
	}
	if (!terminal)
		alts[na++] = lit(c, "\"");
	gx_cpset plain = { 0 };
	if (!plain_set(&plain)) {
		gx_cpset_fini(&plain);
		sc_oom(c);
		goto out;
	}
	gx *any = gx_from_cpset(c->b, &plain, false);
	gx_cpset_fini(&plain);
	gx *first = others.n ? gx_from_cpset(c->b, &others, false) : NULL;
	if (first)
		alts[na++] = gx_seq3(c->b, first, gx_rep(c->b, any, 0, -1), lit(c, "\""));
	if (!(res = gx_alt(c->b, alts, na)))
		sc_oom(c);
out:
	gx_cpset_fini(&others);
	loom_free(alts);
	return res;
}

static int cmp_prop(const void *a, const void *b)
{
	const sc_prop *x = *(sc_prop *const *)a, *y = *(sc_prop *const *)b;
	size_t n = x->len < y->len ? x->len : y->len;
	int r = memcmp(x->name, y->name, n);
	return r ? r : x->len < y->len ? -1 : x->len > y->len;
}

static gx *object(sc *c, const json_t *s)
{
	const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
	const json_t *addl = json_object_get(s, "additionalProperties");
	sc_prop *p = NULL;
	sc_prop **plain = NULL;
	gx **alts = NULL, **seq = NULL;
	gx *res = NULL, *extra = NULL;
	int n = 0;
	if (props && !json_is_object(props))
		return sc_fail(c, LOOM_EINVAL, "'properties' must be an object");
	if (req && !json_is_array(req))
		return sc_fail(c, LOOM_EINVAL, "'required' must be an array");
	if (addl && !json_is_boolean(addl) && !json_is_object(addl))
		return sc_fail(c, LOOM_EINVAL, "'additionalProperties' must be a boolean or a schema");
	if (!props && !addl && !req)
		return any_object(c, 1);
	int np = props ? (int)json_object_size(props) : 0;
	p = loom_calloc((size_t)np + 1, sizeof *p);
	plain = loom_calloc((size_t)np + 1, sizeof *plain);
	alts = loom_calloc((size_t)np + 2, sizeof *alts);
	seq = loom_calloc((size_t)np + 2, sizeof *seq);
	if (!p || !plain || !alts || !seq) {
		sc_oom(c);
		goto out;
	}
	/* properties in document order (jansson keeps insertion order) */
	const char *key;
	json_t *sub;
	size_t old = path_push(c, "properties");
	json_object_foreach((json_t *)props, key, sub) {
		size_t o2 = path_push(c, key);
		json_t *kj = json_string(key);
		gx *kl = kj ? json_lit(c, kj) : sc_oom(c);
		json_decref(kj);
		gx *v = ref(c, schema_rule(c, sub));
		path_pop(c, o2);
		if (!kl || !v)
			break;
		p[n] = (sc_prop){ key, strlen(key), false,
				  gx_seq(c->b, (gx *[]){ kl, ws(c), lit(c, ":"), ws(c), v }, 5) };
		if (!p[n++].kv)
			break;
	}
	path_pop(c, old);
	if (c->rc || n < np) {
		if (!c->rc)
			sc_oom(c);
		goto out;
	}
	size_t i;
	json_t *r;
	json_array_foreach((json_t *)req, i, r) {
		int k = 0;
		if (!json_is_string(r)) {
			sc_fail(c, LOOM_EINVAL, "'required' holds a non-string");
			goto out;
		}
		while (k < n && strcmp(p[k].name, json_string_value(r)))
			k++;
		if (k == n) {
			sc_fail(c, LOOM_EUNSUPPORTED, "required property '%s' not in properties",
				json_string_value(r));
			goto out;
		}
		p[k].req = true;
	}
	/* additional properties: only when asked for (strict mode otherwise) */
	if (addl && !json_is_false(addl)) {
		size_t o2 = path_push(c, "additionalProperties");
		gx *v = json_is_true(addl) ? any_value(c, 2) : ref(c, schema_rule(c, addl));
		path_pop(c, o2);
		int npl = 0;
		for (int k = 0; k < n; k++) {
			bool ok = true;
			for (size_t q = 0; q < p[k].len; q++)
				ok &= (unsigned char)p[k].name[q] >= 0x20 && p[k].name[q] != '"' &&
				      p[k].name[q] != '\\';
			if (ok)
				plain[npl++] = &p[k];
		}
		qsort(plain, (size_t)npl, sizeof *plain, cmp_prop);
		gx *kx = key_excl(c, plain, npl, 0, 0);
		if (!v || !kx)
			goto out;
		extra = gx_seq(c->b, (gx *[]){ lit(c, "\""), kx, ws(c), lit(c, ":"), ws(c), v }, 6);
		if (!extra) {
			sc_oom(c);
			goto out;
		}
	}
	/* tail(j): after something was emitted, properties j..n-1 then extras */
	int first_req = n;
	for (int k = n - 1; k >= 0; k--)
		if (p[k].req)
			first_req = k;
	gx *sep_extra = extra ? gx_rep(c->b, gx_seq(c->b, (gx *[]){ ws(c), lit(c, ","), ws(c), extra }, 4), 0, -1)
			      : gx_empty(c->b);
	int na = 0;
	for (int j = 0; j <= first_req && j < n; j++) {
		int ns = 0;
		seq[ns++] = p[j].kv;
		for (int k = j + 1; k < n; k++) {
			gx *one = gx_seq(c->b, (gx *[]){ ws(c), lit(c, ","), ws(c), p[k].kv }, 4);
			seq[ns++] = p[k].req ? one : gx_rep(c->b, one, 0, 1);
		}
		seq[ns++] = sep_extra;
		alts[na++] = gx_seq(c->b, seq, ns);
	}
	if (first_req == n) /* nothing required: no listed property at all */
		alts[na++] = extra ? gx_rep(c->b, gx_seq2(c->b, extra, sep_extra), 0, 1) : gx_empty(c->b);
	gx *members = gx_alt(c->b, alts, na);
	res = gx_seq(c->b, (gx *[]){ lit(c, "{"), ws(c), members, ws(c), lit(c, "}") }, 5);
	if (!res && !c->rc)
		sc_oom(c);
out:
	loom_free(p);
	loom_free(plain);
	loom_free(alts);
	loom_free(seq);
	return c->rc ? NULL : res;
}

/* ---- schemas ---- */

static bool type_ok(const char *t, const json_t *v)
{
	if (!strcmp(t, "null"))
		return json_is_null(v);
	if (!strcmp(t, "boolean"))
		return json_is_boolean(v);
	if (!strcmp(t, "integer"))
		return json_is_integer(v) || (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)));
	if (!strcmp(t, "number"))
		return json_is_number(v);
	if (!strcmp(t, "string"))
		return json_is_string(v);
	if (!strcmp(t, "array"))
		return json_is_array(v);
	if (!strcmp(t, "object"))
		return json_is_object(v);
	return false;
}

static const char *const sc_types[] = { "object", "array", "string", "number", "integer", "boolean", "null" };

static gx *of_type(sc *c, const char *t, const json_t *s)
{
	if (!strcmp(t, "null"))
		return lit(c, "null");
	if (!strcmp(t, "boolean"))
		return gx_alt2(c->b, lit(c, "true"), lit(c, "false"));
	if (!strcmp(t, "integer"))
		return integer(c, s);
	if (!strcmp(t, "number")) {
		static const char *const k[4] = { "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum" };
		for (int i = 0; i < 4; i++)
			if (json_object_get(s, k[i]))
				return sc_fail(c, LOOM_EUNSUPPORTED, "unsupported keyword '%s' on a number", k[i]);
		return sc_regex(c, RX_NUMBER, false);
	}
	if (!strcmp(t, "string"))
		return string(c, s);
	if (!strcmp(t, "array"))
		return array(c, s);
	return object(c, s);
}

static const json_t *resolve(sc *c, const char *r)
{
	if (!strcmp(r, "#"))
		return c->root;
	const char *pre = NULL;
	if (!strncmp(r, "#/$defs/", 8))
		pre = "$defs";
	else if (!strncmp(r, "#/definitions/", 14))
		pre = "definitions";
	if (!pre) {
		sc_fail(c, LOOM_EUNSUPPORTED, "unsupported $ref '%s' (only #, #/$defs/... and #/definitions/...)", r);
		return NULL;
	}
	const char *name = r + strlen(pre) + 3;
	char buf[512];
	size_t o = 0;
	for (const char *q = name; *q && o + 1 < sizeof buf; q++) {
		if (*q == '/') {
			sc_fail(c, LOOM_EUNSUPPORTED, "unsupported $ref '%s' (nested pointer)", r);
			return NULL;
		}
		if (*q == '~' && (q[1] == '0' || q[1] == '1')) {
			buf[o++] = q[1] == '0' ? '~' : '/';
			q++;
		} else {
			buf[o++] = *q;
		}
	}
	buf[o] = '\0';
	const json_t *t = json_object_get(json_object_get(c->root, pre), buf);
	if (!t)
		sc_fail(c, LOOM_EINVAL, "$ref '%s' does not resolve", r);
	return t;
}

static gx *schema_expr(sc *c, const json_t *s)
{
	if (json_is_true(s))
		return any_value(c, 1);
	if (json_is_false(s))
		return sc_fail(c, LOOM_EINVAL, "schema false admits no value");
	if (!json_is_object(s))
		return sc_fail(c, LOOM_EINVAL, "a schema must be an object or a boolean");
	const char *key;
	json_t *v;
	bool has_ref = false, has_alt = false;
	int constraints = 0;
	json_object_foreach((json_t *)s, key, v) {
		if (!in_list(key, sc_known, sizeof sc_known / sizeof *sc_known))
			return sc_fail(c, LOOM_EUNSUPPORTED, "unsupported keyword '%s'", key);
		has_ref |= !strcmp(key, "$ref");
		has_alt |= !strcmp(key, "anyOf") || !strcmp(key, "oneOf");
		constraints += !in_list(key, sc_annotations, sizeof sc_annotations / sizeof *sc_annotations);
	}
	if ((has_ref || has_alt) && constraints > 1)
		return sc_fail(c, LOOM_EUNSUPPORTED, "%s combined with other keywords",
			       has_ref ? "$ref" : "anyOf/oneOf");
	if (has_ref) {
		const json_t *r = json_object_get(s, "$ref");
		if (!json_is_string(r))
			return sc_fail(c, LOOM_EINVAL, "'$ref' must be a string");
		const json_t *t = resolve(c, json_string_value(r));
		if (!t)
			return NULL;
		/* the target is compiled (once) under its own pointer */
		char saved[sizeof c->path];
		size_t saved_len = c->plen;
		memcpy(saved, c->path, saved_len + 1);
		path_pop(c, 0);
		const char *rs = json_string_value(r);
		if (strcmp(rs, "#")) {
			size_t n = strlen(rs + 1) < sizeof c->path - 1 ? strlen(rs + 1) : sizeof c->path - 1;
			memcpy(c->path, rs + 1, n); /* already a JSON pointer */
			c->path[c->plen = n] = '\0';
		}
		gx *x = ref(c, schema_rule(c, t));
		memcpy(c->path, saved, saved_len + 1);
		c->plen = saved_len;
		return x;
	}
	if (has_alt) {
		const char *k = json_object_get(s, "anyOf") ? "anyOf" : "oneOf";
		const json_t *l = json_object_get(s, k);
		if (!json_is_array(l) || !json_array_size(l))
			return sc_fail(c, LOOM_EINVAL, "'%s' must be a non-empty array", k);
		size_t n = json_array_size(l);
		gx **alts = loom_malloc(n * sizeof *alts);
		if (!alts)
			return sc_oom(c);
		size_t old = path_push(c, k);
		for (size_t i = 0; i < n; i++) {
			size_t o2 = path_push_i(c, i);
			alts[i] = ref(c, schema_rule(c, json_array_get(l, i)));
			path_pop(c, o2);
		}
		path_pop(c, old);
		gx *x = c->rc ? NULL : gx_alt(c->b, alts, (int)n);
		loom_free(alts);
		return x ? x : c->rc ? NULL : sc_oom(c);
	}
	/* the types allowed */
	bool want[7] = { 0 };
	const json_t *t = json_object_get(s, "type");
	bool typed = t != NULL;
	if (json_is_string(t) || json_is_array(t)) {
		size_t n = json_is_array(t) ? json_array_size(t) : 1;
		for (size_t i = 0; i < n; i++) {
			const json_t *e = json_is_array(t) ? json_array_get(t, i) : t;
			int k = 0;
			while (k < 7 && !(json_is_string(e) && !strcmp(json_string_value(e), sc_types[k])))
				k++;
			if (k == 7)
				return sc_fail(c, LOOM_EINVAL, "bad type %s",
					       json_is_string(e) ? json_string_value(e) : "(not a string)");
			want[k] = true;
		}
	} else if (t) {
		return sc_fail(c, LOOM_EINVAL, "'type' must be a string or an array");
	}
	const json_t *cv = json_object_get(s, "const"), *ev = json_object_get(s, "enum");
	if (cv || ev) {
		if (ev && !json_is_array(ev))
			return sc_fail(c, LOOM_EINVAL, "'enum' must be an array");
		size_t n = cv ? 1 : json_array_size(ev), na = 0;
		gx **alts = loom_malloc((n + 1) * sizeof *alts);
		if (!alts)
			return sc_oom(c);
		for (size_t i = 0; i < n; i++) {
			const json_t *e = cv ? cv : json_array_get(ev, i);
			bool ok = !typed;
			for (int k = 0; k < 7; k++)
				ok |= want[k] && type_ok(sc_types[k], e);
			if (ok)
				alts[na++] = json_lit(c, e);
		}
		gx *x = c->rc || !na ? NULL : gx_alt(c->b, alts, (int)na);
		loom_free(alts);
		if (!na)
			return sc_fail(c, LOOM_EINVAL, "no %s value matches the type", cv ? "const" : "enum");
		return x ? x : c->rc ? NULL : sc_oom(c);
	}
	if (!typed) {
		/* infer from the keywords */
		if (json_object_get(s, "properties") || json_object_get(s, "required") ||
		    json_object_get(s, "additionalProperties"))
			want[0] = true;
		if (json_object_get(s, "items") || json_object_get(s, "minItems") || json_object_get(s, "maxItems"))
			want[1] = true;
		if (json_object_get(s, "pattern") || json_object_get(s, "format") ||
		    json_object_get(s, "minLength") || json_object_get(s, "maxLength"))
			want[2] = true;
		if (json_object_get(s, "minimum") || json_object_get(s, "maximum") ||
		    json_object_get(s, "exclusiveMinimum") || json_object_get(s, "exclusiveMaximum"))
			want[4] = true;
		if (!want[0] && !want[1] && !want[2] && !want[4])
			return any_value(c, 1);
	}
	gx *alts[7];
	int na = 0;
	for (int k = 0; k < 7; k++)
		if (want[k] && !(want[k] && k == 4 && want[3]) && !(alts[na++] = of_type(c, sc_types[k], s)))
			return c->rc ? NULL : sc_oom(c);
	gx *x = gx_alt(c->b, alts, na);
	return x ? x : sc_oom(c);
}

/* The rule of schema s (made once per json_t). */
static int schema_rule(sc *c, const json_t *s)
{
	if (c->rc)
		return -1;
	for (int i = 0; i < c->n_memo; i++)
		if (c->memo_k[i] == s)
			return c->memo_v[i];
	if (c->depth >= LOOM_GRAMMAR_MAX_DEPTH) {
		sc_fail(c, LOOM_ERANGE, "schema nested too deeply");
		return -1;
	}
	int r = new_rule(c);
	if (r < 0)
		return -1;
	if (c->n_memo == c->cap_memo) {
		int cap = c->cap_memo ? 2 * c->cap_memo : 32;
		const json_t **k = loom_realloc(c->memo_k, (size_t)cap * sizeof *k);
		if (k)
			c->memo_k = k;
		int *v = loom_realloc(c->memo_v, (size_t)cap * sizeof *v);
		if (v)
			c->memo_v = v;
		if (!k || !v) {
			sc_oom(c);
			return -1;
		}
		c->cap_memo = cap;
	}
	c->memo_k[c->n_memo] = s;
	c->memo_v[c->n_memo++] = r;
	c->depth++;
	gx *x = schema_expr(c, s);
	c->depth--;
	if (!x) {
		if (!c->rc)
			sc_oom(c);
		return -1;
	}
	c->b->rules[r].body = x;
	return r;
}

/* wrap: NULL, or the literal texts around the value ({prefix, plen, suffix, slen}). */
typedef struct sc_wrap {
	const char *prefix, *suffix;
	size_t plen, slen;
} sc_wrap;

static loom_err compile(const json_t *schema, bool any_object_only, const sc_wrap *wrap,
			loom_grammar **out)
{
	gx_builder b;
	sc c = { .b = &b, .root = schema, .r_string = -1 };
	loom_err rc;
	*out = NULL;
	for (int d = 0; d < LOOM_GRAMMAR_JSON_DEPTH + 2; d++)
		c.r_value[d] = -1;
	gx_builder_init(&b);
	int root;
	if (any_object_only) {
		root = new_rule(&c);
		if (root >= 0)
			b.rules[root].body = any_object(&c, 1);
	} else {
		if (!schema) {
			rc = loom_fail(LOOM_EINVAL, "json_schema: no schema");
			goto out;
		}
		root = schema_rule(&c, schema);
		if (wrap && root >= 0 && !c.rc) {
			int value = root;
			root = new_rule(&c);
			if (root >= 0) {
				gx *x = gx_seq3(&b, gx_lit(&b, wrap->prefix, wrap->plen), gx_ref(&b, value),
						gx_lit(&b, wrap->suffix, wrap->slen));
				b.rules[root].body = x ? x : sc_oom(&c);
			}
		}
	}
	if (c.rc || root < 0 || !b.rules[root].body) {
		rc = c.rc ? c.rc : loom_fail(LOOM_ENOMEM, "json_schema: out of memory");
		goto out;
	}
	rc = gx_compile(&b, root, out);
out:
	loom_free(c.memo_k);
	loom_free(c.memo_v);
	gx_builder_fini(&b);
	return rc;
}

loom_err loom_grammar_from_json_schema(const json_t *schema, loom_grammar **out)
{
	return compile(schema, false, NULL, out);
}

loom_err loom_grammar_from_json_schema_wrapped(const json_t *schema, const char *prefix,
					       size_t plen, const char *suffix, size_t slen,
					       loom_grammar **out)
{
	sc_wrap w = { .prefix = prefix ? prefix : "", .plen = prefix ? plen : 0,
		      .suffix = suffix ? suffix : "", .slen = suffix ? slen : 0 };
	return compile(schema, false, &w, out);
}

loom_err loom_grammar_any_json_object(loom_grammar **out)
{
	return compile(NULL, true, NULL, out);
}
