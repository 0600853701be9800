/*
 * common/jinja_methods.c — Python methods templates call on values
 * (str.strip, str.split, dict.items, ...), loop.cycle, and the global
 * functions (range, namespace, dict, raise_exception, strftime_now).
 *
 * Mutating methods (list.append, dict.update, ...) fail as jinja2's
 * ImmutableSandboxedEnvironment makes them fail (SecurityError). Case
 * mapping is ASCII-only: other letters keep their case.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/jinja_int.h"

enum {
	JM_STRIP, JM_LSTRIP, JM_RSTRIP, JM_STARTSWITH, JM_ENDSWITH, JM_SPLIT, JM_RSPLIT,
	JM_SPLITLINES, JM_UPPER, JM_LOWER, JM_TITLE, JM_CAPITALIZE, JM_REPLACE, JM_FIND,
	JM_RFIND, JM_COUNT, JM_JOIN, JM_ISDIGIT, JM_ISALPHA, JM_ISALNUM, JM_ISSPACE, JM_ISUPPER,
	JM_ISLOWER, JM_ZFILL, JM_ITEMS, JM_KEYS, JM_VALUES, JM_GET, JM_COPY, JM_INDEX, JM_CYCLE,
	JM_UNSAFE /* first of the mutators */
};

static const char *const method_names[] = {
	"strip", "lstrip", "rstrip", "startswith", "endswith", "split", "rsplit", "splitlines",
	"upper", "lower", "title", "capitalize", "replace", "find", "rfind", "count", "join",
	"isdigit", "isalpha", "isalnum", "isspace", "isupper", "islower", "zfill", "items", "keys",
	"values", "get", "copy", "index", "cycle",
	/* refused by the sandbox */
	"append", "extend", "insert", "pop", "remove", "clear", "reverse", "sort", "update",
	"setdefault", "popitem", NULL
};

static bool eqn(const char *a, size_t n, const char *w)
{
	return strlen(w) == n && memcmp(a, w, n) == 0;
}

int jj_method_id(const char *name, size_t n)
{
	for (int i = 0; method_names[i]; i++)
		if (eqn(name, n, method_names[i]))
			return i;
	return -1;
}

/* ---- string helpers ---- */

static bool in_set(uint32_t c, const jv *chars)
{
	for (size_t i = 0; i < chars->n;) {
		size_t adv;
		if (jj_utf8_dec(chars->s + i, chars->n - i, &adv) == c)
			return true;
		i += adv;
	}
	return false;
}

/* mode 1: left, 2: right, 3: both. chars NULL or None: whitespace. */
loom_err jj_strip(jj_rs *rs, const jv *s, const jv *chars, int mode, jv *out)
{
	size_t a = 0, b = s->n;
	if (chars && chars->t != JV_NONE && chars->t != JV_STR)
		return jj_err(rs, "strip arg must be None or str");
	bool ws = !chars || chars->t == JV_NONE;
	if (mode & 1)
		while (a < b) {
			size_t adv;
			uint32_t c = jj_utf8_dec(s->s + a, b - a, &adv);
			if (ws ? !jj_isspace(c) : !in_set(c, chars))
				break;
			a += adv;
		}
	if (mode & 2)
		while (b > a) {
			size_t i = b - 1, adv;
			while (i > a && ((unsigned char)s->s[i] & 0xc0) == 0x80)
				i--;
			uint32_t c = jj_utf8_dec(s->s + i, b - i, &adv);
			if (ws ? !jj_isspace(c) : !in_set(c, chars))
				break;
			b = i;
		}
	*out = jv_str(s->s + a, b - a);
	return LOOM_OK;
}

static bool isalpha_a(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static char up(char c) { return c >= 'a' && c <= 'z' ? (char)(c - 32) : c; }
static char low(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }

/* mode 'u' upper, 'l' lower, 't' str.title, 'c' capitalize */
loom_err jj_case(jj_rs *rs, const jv *s, int mode, jv *out)
{
	char *d = jj_alloc(&rs->arena, s->n + 1);
	bool prev_cased = false;
	if (!d)
		return jj_oom(rs);
	for (size_t i = 0; i < s->n; i++) {
		char c = s->s[i];
		switch (mode) {
		case 'u': d[i] = up(c); break;
		case 'l': d[i] = low(c); break;
		case 't':
			d[i] = prev_cased ? low(c) : up(c);
			prev_cased = isalpha_a(c);
			break;
		default: d[i] = i == 0 ? up(c) : low(c);
		}
	}
	*out = jv_str(d, s->n);
	return LOOM_OK;
}

/* s.replace(old, new, count) */
loom_err jj_replace(jj_rs *rs, const jv *s, const jv *old, const jv *new, int64_t count, jv *out)
{
	jj_buf b = { .limit = LOOM_JINJA_MAX_OUTPUT };
	loom_err rc = LOOM_OK;
	size_t i = 0;
	int64_t done = 0;
	if (!old->n) { /* inserted before every char and at the end */
		while (!rc && (count < 0 || done < count)) {
			rc = jj_buf_put(&b, new->s, new->n);
			done++;
			if (i >= s->n)
				break;
			size_t adv;
			jj_utf8_dec(s->s + i, s->n - i, &adv);
			if (!rc)
				rc = jj_buf_put(&b, s->s + i, adv);
			i += adv;
		}
	} else {
		while (!rc && (count < 0 || done < count)) {
			const char *p = memmem(s->s + i, s->n - i, old->s, old->n);
			if (!p)
				break;
			size_t at = (size_t)(p - s->s);
			if (!(rc = jj_buf_put(&b, s->s + i, at - i)))
				rc = jj_buf_put(&b, new->s, new->n);
			i = at + old->n;
			done++;
		}
	}
	if (!rc && i < s->n)
		rc = jj_buf_put(&b, s->s + i, s->n - i);
	if (!rc) {
		char *d = jj_strdup(&rs->arena, b.p ? b.p : "", b.n);
		if (!d)
			rc = jj_oom(rs);
		else
			*out = jv_str(d, b.n);
	}
	jj_buf_fini(&b);
	return rc;
}

static loom_err push_item(jj_rs *rs, jv **v, size_t *n, size_t *cap, jv item)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 8;
		jv *nv = jj_alloc(&rs->arena, c * sizeof *nv);
		if (!nv)
			return jj_oom(rs);
		if (*n)
			memcpy(nv, *v, *n * sizeof *nv);
		*v = nv;
		*cap = c;
	}
	(*v)[(*n)++] = item;
	return LOOM_OK;
}

static loom_err split(jj_rs *rs, const jv *s, const jv *sep, int64_t maxsplit, bool right, jv *out)
{
	jv *v = NULL;
	size_t n = 0, cap = 0;
	loom_err rc = LOOM_OK;
	if (sep && sep->t == JV_NONE)
		sep = NULL;
	if (sep && sep->t != JV_STR)
		return jj_err(rs, "must be str or None, not %s", jv_type_name(sep));
	if (sep && !sep->n)
		return jj_err(rs, "empty separator");
	if (right && sep) { /* from the right: collect pieces reversed */
		size_t end = s->n;
		while (!rc && (maxsplit < 0 || (int64_t)n < maxsplit)) {
			const char *p = NULL;
			for (size_t i = end; i >= sep->n && !p; i--)
				if (!memcmp(s->s + i - sep->n, sep->s, sep->n))
					p = s->s + i - sep->n;
			if (!p)
				break;
			size_t at = (size_t)(p - s->s);
			rc = push_item(rs, &v, &n, &cap, jv_str(p + sep->n, end - at - sep->n));
			end = at;
		}
		if (!rc)
			rc = push_item(rs, &v, &n, &cap, jv_str(s->s, end));
		for (size_t i = 0; i < n / 2 && !rc; i++) {
			jv t = v[i];
			v[i] = v[n - 1 - i];
			v[n - 1 - i] = t;
		}
	} else if (sep) {
		size_t i = 0;
		while (!rc && (maxsplit < 0 || (int64_t)n < maxsplit)) {
			const char *p = memmem(s->s + i, s->n - i, sep->s, sep->n);
			if (!p)
				break;
			rc = push_item(rs, &v, &n, &cap, jv_str(s->s + i, (size_t)(p - s->s) - i));
			i = (size_t)(p - s->s) + sep->n;
		}
		if (!rc)
			rc = push_item(rs, &v, &n, &cap, jv_str(s->s + i, s->n - i));
	} else {
		if (right)
			return jj_err(rs, "unsupported: rsplit() without a separator");
		size_t i = 0;
		int64_t splits = 0;
		for (;;) {
			size_t adv;
			while (i < s->n && jj_isspace(jj_utf8_dec(s->s + i, s->n - i, &adv)))
				i += adv;
			if (i >= s->n)
				break;
			if (maxsplit >= 0 && splits >= maxsplit) {
				/* the rest, trailing whitespace kept */
				rc = push_item(rs, &v, &n, &cap, jv_str(s->s + i, s->n - i));
				break;
			}
			size_t j = i;
			while (j < s->n && !jj_isspace(jj_utf8_dec(s->s + j, s->n - j, &adv)))
				j += adv;
			if ((rc = push_item(rs, &v, &n, &cap, jv_str(s->s + i, j - i))))
				break;
			splits++;
			i = j;
		}
	}
	if (rc)
		return rc;
	return jv_make_list(rs, v, n, false, out);
}

static loom_err splitlines(jj_rs *rs, const jv *s, jv *out)
{
	jv *v = NULL;
	size_t n = 0, cap = 0, i = 0, start = 0;
	loom_err rc = LOOM_OK;
	while (i < s->n && !rc) {
		size_t adv;
		uint32_t c = jj_utf8_dec(s->s + i, s->n - i, &adv);
		if (c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e) ||
		    c == 0x85 || c == 0x2028 || c == 0x2029) {
			rc = push_item(rs, &v, &n, &cap, jv_str(s->s + start, i - start));
			i += adv;
			if (c == '\r' && i < s->n && s->s[i] == '\n')
				i++;
			start = i;
		} else {
			i += adv;
		}
	}
	if (!rc && start < s->n)
		rc = push_item(rs, &v, &n, &cap, jv_str(s->s + start, s->n - start));
	return rc ? rc : jv_make_list(rs, v, n, false, out);
}

loom_err jj_splitlines(jj_rs *rs, const jv *s, jv *out)
{
	return splitlines(rs, s, out);
}

static bool affix(const jv *s, const jv *p, bool end)
{
	return p->n <= s->n && !memcmp(end ? s->s + s->n - p->n : s->s, p->s, p->n);
}

static loom_err starts_ends(jj_rs *rs, const jv *s, const jv *arg, bool end, jv *out)
{
	if (arg && arg->t == JV_STR) {
		*out = jv_bool(affix(s, arg, end));
		return LOOM_OK;
	}
	if (arg && arg->t == JV_LIST && arg->l->tuple) {
		bool r = false;
		for (size_t i = 0; i < arg->l->n && !r; i++) {
			if (arg->l->v[i].t != JV_STR)
				return jj_err(rs, "tuple for %swith must only contain str",
					      end ? "ends" : "starts");
			r = affix(s, &arg->l->v[i], end);
		}
		*out = jv_bool(r);
		return LOOM_OK;
	}
	return jj_err(rs, "%swith first arg must be str or a tuple of str", end ? "ends" : "starts");
}

static loom_err str_method(jj_rs *rs, const jv *s, int id, const jj_args *a, jv *out)
{
	const jv *a0 = jj_arg(a, 0, NULL), *a1 = jj_arg(a, 1, NULL), *a2 = jj_arg(a, 2, NULL);
	loom_err rc;
	switch (id) {
	case JM_STRIP: return jj_strip(rs, s, a0, 3, out);
	case JM_LSTRIP: return jj_strip(rs, s, a0, 1, out);
	case JM_RSTRIP: return jj_strip(rs, s, a0, 2, out);
	case JM_STARTSWITH: return starts_ends(rs, s, a0, false, out);
	case JM_ENDSWITH: return starts_ends(rs, s, a0, true, out);
	case JM_SPLIT:
	case JM_RSPLIT: {
		const jv *sep = jj_arg(a, 0, "sep"), *mx = jj_arg(a, 1, "maxsplit");
		if (mx && mx->t != JV_INT)
			return jj_err(rs, "maxsplit must be an integer");
		return split(rs, s, sep, mx ? mx->i : -1, id == JM_RSPLIT, out);
	}
	case JM_SPLITLINES: return splitlines(rs, s, out);
	case JM_UPPER: return jj_case(rs, s, 'u', out);
	case JM_LOWER: return jj_case(rs, s, 'l', out);
	case JM_TITLE: return jj_case(rs, s, 't', out);
	case JM_CAPITALIZE: return jj_case(rs, s, 'c', out);
	case JM_REPLACE:
		if (!a0 || !a1 || a0->t != JV_STR || a1->t != JV_STR || (a2 && a2->t != JV_INT))
			return jj_err(rs, "replace() takes two strings and an optional count");
		return jj_replace(rs, s, a0, a1, a2 ? a2->i : -1, out);
	case JM_FIND:
	case JM_RFIND:
	case JM_COUNT: {
		if (!a0 || a0->t != JV_STR || a1)
			return jj_err(rs, "unsupported: %s() takes exactly one string here",
				      method_names[id]);
		if (id == JM_COUNT) {
			int64_t c = 0;
			if (!a0->n) {
				*out = jv_int((int64_t)jj_utf8_len(s->s, s->n) + 1);
				return LOOM_OK;
			}
			for (const char *p = s->s, *e = s->s + s->n;
			     (p = memmem(p, (size_t)(e - p), a0->s, a0->n)); p += a0->n)
				c++;
			*out = jv_int(c);
			return LOOM_OK;
		}
		const char *hit = NULL;
		if (id == JM_FIND) {
			hit = memmem(s->s, s->n, a0->s, a0->n);
		} else {
			for (size_t i = s->n + 1; i-- > 0 && !hit;)
				if (i + a0->n <= s->n && !memcmp(s->s + i, a0->s, a0->n))
					hit = s->s + i;
		}
		*out = jv_int(hit ? (int64_t)jj_utf8_len(s->s, (size_t)(hit - s->s)) : -1);
		return LOOM_OK;
	}
	case JM_JOIN: {
		const jv *items;
		size_t n;
		jj_buf b = { .limit = LOOM_JINJA_MAX_OUTPUT };
		if (!a0)
			return jj_err(rs, "join() takes exactly one argument");
		if ((rc = jv_iterate(rs, a0, &items, &n)))
			return rc;
		for (size_t i = 0; i < n && !rc; i++) {
			if (items[i].t != JV_STR) {
				rc = jj_err(rs, "sequence item %zu: expected str instance, %s found", i,
					    jv_type_name(&items[i]));
				break;
			}
			if (i)
				rc = jj_buf_put(&b, s->s, s->n);
			if (!rc)
				rc = jj_buf_put(&b, items[i].s, items[i].n);
		}
		if (!rc) {
			char *d = jj_strdup(&rs->arena, b.p ? b.p : "", b.n);
			if (!d)
				rc = jj_oom(rs);
			else
				*out = jv_str(d, b.n);
		}
		jj_buf_fini(&b);
		return rc;
	}
	case JM_ISDIGIT:
	case JM_ISALPHA:
	case JM_ISALNUM:
	case JM_ISSPACE:
	case JM_ISUPPER:
	case JM_ISLOWER: {
		bool r = s->n > 0, cased = false;
		for (size_t i = 0; i < s->n && r; i++) {
			char c = s->s[i];
			bool d = c >= '0' && c <= '9', al = isalpha_a(c);
			switch (id) {
			case JM_ISDIGIT: r = d; break;
			case JM_ISALPHA: r = al; break;
			case JM_ISALNUM: r = d || al; break;
			case JM_ISSPACE: r = jj_isspace((unsigned char)c); break;
			case JM_ISUPPER: r = !(c >= 'a' && c <= 'z'); cased |= c >= 'A' && c <= 'Z'; break;
			default: r = !(c >= 'A' && c <= 'Z'); cased |= c >= 'a' && c <= 'z'; break;
			}
		}
		if (id == JM_ISUPPER || id == JM_ISLOWER)
			r = r && cased;
		*out = jv_bool(r);
		return LOOM_OK;
	}
	case JM_ZFILL: {
		if (!a0 || a0->t != JV_INT)
			return jj_err(rs, "zfill() takes an integer");
		size_t len = jj_utf8_len(s->s, s->n);
		if (a0->i <= (int64_t)len) {
			*out = *s;
			return LOOM_OK;
		}
		if (a0->i > (int64_t)LOOM_JINJA_MAX_OUTPUT)
			return jj_err(rs, "zfill() width too large");
		size_t pad = (size_t)a0->i - len, sign = s->n && (s->s[0] == '-' || s->s[0] == '+');
		char *d = jj_alloc(&rs->arena, s->n + pad + 1);
		if (!d)
			return jj_oom(rs);
		memcpy(d, s->s, sign);
		memset(d + sign, '0', pad);
		memcpy(d + sign + pad, s->s + sign, s->n - sign);
		*out = jv_str(d, s->n + pad);
		return LOOM_OK;
	}
	default: return -1;
	}
}

static loom_err dict_method(jj_rs *rs, const jv *obj, int id, const jj_args *a, jv *out)
{
	const jv_dict *d = obj->d;
	loom_err rc;
	switch (id) {
	case JM_ITEMS: {
		jv *pairs = d->n ? jj_alloc(&rs->arena, d->n * sizeof *pairs) : NULL;
		if (d->n && !pairs)
			return jj_oom(rs);
		for (size_t i = 0; i < d->n; i++) {
			jv kv[2] = { d->k[i], d->v[i] };
			if ((rc = jv_make_list(rs, kv, 2, true, &pairs[i])))
				return rc;
		}
		return jv_make_list(rs, pairs, d->n, false, out);
	}
	case JM_KEYS: return jv_make_list(rs, d->k, d->n, false, out);
	case JM_VALUES: return jv_make_list(rs, d->v, d->n, false, out);
	case JM_COPY: *out = *obj; return LOOM_OK;
	case JM_GET: {
		const jv *k = jj_arg(a, 0, NULL), *def = jj_arg(a, 1, NULL), *v;
		if (!k)
			return jj_err(rs, "get expected at least 1 argument, got 0");
		v = jv_dict_get(d, k);
		*out = v ? *v : def ? *def : jv_none();
		return LOOM_OK;
	}
	default: return -1;
	}
}

loom_err jj_call_method(jj_rs *rs, const jv *obj, int id, const char *name, const jj_args *a,
			jv *out)
{
	loom_err rc = -1;
	(void)name;
	if (id >= JM_UNSAFE)
		return jj_err(rs, "access to attribute '%s' of '%s' object is unsafe.",
			      method_names[id], jv_type_name(obj));
	if (obj->t == JV_STR)
		rc = str_method(rs, obj, id, a, out);
	else if (obj->t == JV_DICT)
		rc = dict_method(rs, obj, id, a, out);
	else if (obj->t == JV_LIST && (id == JM_INDEX || id == JM_COUNT)) {
		const jv *x = jj_arg(a, 0, NULL);
		int64_t c = 0, at = -1;
		if (!x)
			return jj_err(rs, "%s() takes exactly one argument", method_names[id]);
		for (size_t i = 0; i < obj->l->n; i++)
			if (jv_equal(&obj->l->v[i], x, 0)) {
				c++;
				if (at < 0)
					at = (int64_t)i;
			}
		if (id == JM_INDEX && at < 0)
			return jj_err(rs, "value is not in list");
		*out = jv_int(id == JM_INDEX ? at : c);
		return LOOM_OK;
	} else if (obj->t == JV_LOOP && id == JM_CYCLE) {
		if (!a->n_pos)
			return jj_err(rs, "no items for cycling given");
		*out = a->pos[obj->loop->i % a->n_pos];
		return LOOM_OK;
	}
	if (rc == (loom_err)-1)
		return jj_err(rs, "'%s object' has no attribute '%s'", jv_type_name(obj),
			      method_names[id]);
	return rc;
}

/* ---- global functions ---- */

enum { JF_RANGE, JF_NAMESPACE, JF_DICT, JF_RAISE, JF_STRFTIME };
static const char *const func_names[] = { "range", "namespace", "dict", "raise_exception",
					  "strftime_now", NULL };

int jj_func_id(const char *name, size_t n)
{
	for (int i = 0; func_names[i]; i++)
		if (eqn(name, n, func_names[i]))
			return i;
	return -1;
}

static loom_err make_dict(jj_rs *rs, const jj_args *a, int type, jv *out)
{
	jv_dict *d = jj_alloc(&rs->arena, sizeof *d);
	loom_err rc;
	if (!d)
		return jj_oom(rs);
	if (a->n_pos > 1)
		return jj_err(rs, "%s expected at most 1 argument, got %zu",
			      type == JV_NS ? "Namespace" : "dict", a->n_pos);
	if (a->n_pos) {
		const jv *src = &a->pos[0];
		if (src->t != JV_DICT && src->t != JV_NS)
			return jj_err(rs, "unsupported: %s() from a %s", type == JV_NS ? "namespace" : "dict",
				      jv_type_name(src));
		for (size_t i = 0; i < src->d->n; i++)
			if ((rc = jv_ns_set(rs, d, src->d->k[i].s, src->d->k[i].n, &src->d->v[i])))
				return rc;
	}
	for (size_t i = 0; i < a->n_kw; i++) {
		size_t n = strlen(a->kw_names[i]);
		const char *k = jj_strdup(&rs->arena, a->kw_names[i], n);
		if (!k)
			return jj_oom(rs);
		if ((rc = jv_ns_set(rs, d, k, n, &a->kw[i])))
			return rc;
	}
	*out = (jv){ .t = (uint8_t)type };
	out->d = d;
	return LOOM_OK;
}

loom_err jj_call_func(jj_rs *rs, int id, const jj_args *a, jv *out)
{
	switch (id) {
	case JF_RANGE: {
		int64_t v[3] = { 0, 0, 1 };
		if (!a->n_pos || a->n_pos > 3 || a->n_kw)
			return jj_err(rs, "range expected 1 to 3 integer arguments");
		for (size_t i = 0; i < a->n_pos; i++) {
			if (a->pos[i].t != JV_INT && a->pos[i].t != JV_BOOL)
				return jj_err(rs, "'%s' object cannot be interpreted as an integer",
					      jv_type_name(&a->pos[i]));
			v[a->n_pos == 1 ? 1 : i] = a->pos[i].t == JV_INT ? a->pos[i].i : a->pos[i].b;
		}
		if (!v[2])
			return jj_err(rs, "range() arg 3 must not be zero");
		double cnt = v[2] > 0 ? ((double)v[1] - (double)v[0]) / (double)v[2]
				      : ((double)v[0] - (double)v[1]) / (double)-v[2];
		if (cnt > JJ_MAX_RANGE)
			return jj_err(rs, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (%d).",
				      JJ_MAX_RANGE);
		size_t n = 0;
		jv *items = jj_alloc(&rs->arena, (cnt > 0 ? (size_t)cnt + 1 : 1) * sizeof *items);
		if (!items)
			return jj_oom(rs);
		for (int64_t x = v[0]; v[2] > 0 ? x < v[1] : x > v[1]; x += v[2])
			items[n++] = jv_int(x);
		return jv_make_list(rs, items, n, false, out);
	}
	case JF_NAMESPACE: return make_dict(rs, a, JV_NS, out);
	case JF_DICT: return make_dict(rs, a, JV_DICT, out);
	case JF_RAISE: {
		const jv *m = jj_arg(a, 0, "message");
		jv s;
		loom_err rc;
		if (!m)
			return jj_err(rs, "raise_exception() missing 1 required positional argument: 'message'");
		if ((rc = jv_to_str(rs, m, &s)))
			return rc;
		return loom_fail(LOOM_EINVAL, "chat template line %d: %.*s", rs->line,
				 (int)(s.n > 400 ? 400 : s.n), s.s);
	}
	case JF_STRFTIME: {
		const jv *f = jj_arg(a, 0, "format");
		char fmt[256], buf[1024];
		struct tm tm;
		time_t now = time(NULL);
		if (!f || f->t != JV_STR || f->n >= sizeof fmt)
			return jj_err(rs, "strftime_now() takes one format string (under 256 bytes)");
		memcpy(fmt, f->s, f->n);
		fmt[f->n] = '\0';
		localtime_r(&now, &tm);
		size_t n = strftime(buf, sizeof buf, fmt, &tm);
		if (!n && f->n)
			return jj_err(rs, "strftime_now(): result too long");
		char *d = jj_strdup(&rs->arena, buf, n);
		if (!d)
			return jj_oom(rs);
		*out = jv_str(d, n);
		return LOOM_OK;
	}
	default: return jj_err(rs, "internal: function %d", id);
	}
}
