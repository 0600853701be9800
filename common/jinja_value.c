/*
 * common/jinja_value.c — the render arena, the output buffer, and what
 * values do as Python objects: str() and repr() (as jinja2 prints them),
 * json.dumps, ==, <, truth, iteration, and conversion from JSON.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jinja_int.h"

/* ---- arena ---- */

struct jj_chunk {
	jj_chunk *next;
	size_t cap, used;
	_Alignas(16) unsigned char data[];
};

void *jj_alloc(jj_arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (!n)
		n = 16;
	jj_chunk *c = a->head;
	if (!c || c->cap - c->used < n) {
		size_t cap = n > 65536 ? n : 65536;
		if (a->limit && a->total + cap > a->limit) {
			a->over = true;
			return NULL;
		}
		c = loom_malloc(sizeof *c + cap);
		if (!c)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = a->head;
		a->head = c;
		a->total += cap;
	}
	void *p = c->data + c->used;
	c->used += n;
	memset(p, 0, n);
	return p;
}

char *jj_strdup(jj_arena *a, const char *s, size_t n)
{
	char *d = jj_alloc(a, n + 1);
	if (d && n)
		memcpy(d, s, n);
	return d;
}

void jj_arena_fini(jj_arena *a)
{
	jj_chunk *c = a->head;
	while (c) {
		jj_chunk *next = c->next;
		loom_free(c);
		c = next;
	}
	a->head = NULL;
	a->total = 0;
}

/* ---- buffer ---- */

loom_err jj_buf_put(jj_buf *b, const char *s, size_t n)
{
	if (b->limit && b->n + n > b->limit)
		return loom_fail(LOOM_EINVAL, "chat template: output larger than %zu bytes", b->limit);
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *p = loom_realloc(b->p, cap);
		if (!p)
			return loom_fail(LOOM_ENOMEM, "chat template: out of memory");
		b->p = p;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = '\0';
	return LOOM_OK;
}

loom_err jj_buf_putc(jj_buf *b, char c)
{
	return jj_buf_put(b, &c, 1);
}

loom_err jj_buf_printf(jj_buf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (k < 0)
		k = 0;
	return jj_buf_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

void jj_buf_fini(jj_buf *b)
{
	loom_free(b->p);
	b->p = NULL;
	b->n = b->cap = 0;
}

/* ---- UTF-8 ---- */

uint32_t jj_utf8_dec(const char *s, size_t n, size_t *adv)
{
	const unsigned char *u = (const unsigned char *)s;
	uint32_t c = u[0];
	size_t k = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
	if (k > n)
		k = 1;
	if (k == 1) {
		*adv = 1;
		return c;
	}
	uint32_t cp = c & (0x3f >> (k - 1));
	for (size_t i = 1; i < k; i++) {
		if ((u[i] & 0xc0) != 0x80) {
			*adv = 1;
			return c;
		}
		cp = (cp << 6) | (u[i] & 0x3f);
	}
	*adv = k;
	return cp;
}

size_t jj_utf8_len(const char *s, size_t n)
{
	size_t k = 0, i = 0, adv;
	/* counts what jj_utf8_dec steps over, so invalid bytes count as one each */
	while (i < n) {
		if ((unsigned char)s[i] < 0x80) {
			i++;
		} else {
			jj_utf8_dec(s + i, n - i, &adv);
			i += adv;
		}
		k++;
	}
	return k;
}

size_t jj_utf8_off(const char *s, size_t n, size_t cp)
{
	size_t i = 0, k = 0;
	while (i < n && k < cp) {
		size_t adv;
		jj_utf8_dec(s + i, n - i, &adv);
		i += adv;
		k++;
	}
	return i;
}

bool jj_isspace(uint32_t c)
{
	return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
	       c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
	       c == 0x202f || c == 0x205f || c == 0x3000;
}

/* Not printable for Python's repr (approximation of Unicode Cc/Cf/Z*\space/Co/Cs). */
static bool nonprintable(uint32_t c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad || (c >= 0x600 && c <= 0x605) ||
	       c == 0x61c || c == 0x6dd || c == 0x70f || c == 0x1680 || c == 0x180e ||
	       (c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f) ||
	       (c >= 0x205f && c <= 0x2064) || (c >= 0x2066 && c <= 0x206f) || c == 0x3000 ||
	       (c >= 0xd800 && c <= 0xf8ff) || c == 0xfeff || (c >= 0xfff9 && c <= 0xfffb) ||
	       c == 0xfffe || c == 0xffff || c >= 0xe0000;
}

/* ---- numbers ---- */

void jj_float_repr(double f, char *buf, size_t cap)
{
	char tmp[48], digs[24];
	int prec, e;
	if (isnan(f)) {
		snprintf(buf, cap, "nan");
		return;
	}
	if (isinf(f)) {
		snprintf(buf, cap, f < 0 ? "-inf" : "inf");
		return;
	}
	for (prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
		if (strtod(tmp, NULL) == f)
			break;
	}
	/* tmp: [-]d[.ddd]e[+-]XX */
	const char *p = tmp;
	bool neg = *p == '-';
	size_t nd = 0;
	if (neg)
		p++;
	while (*p && *p != 'e') {
		if (*p != '.')
			digs[nd++] = *p;
		p++;
	}
	e = atoi(p + 1);
	while (nd > 1 && digs[nd - 1] == '0')
		nd--;
	digs[nd] = '\0';
	char *o = buf, *end = buf + cap - 1;
#define PUT(ch) do { if (o < end) *o++ = (ch); } while (0)
	if (neg)
		PUT('-');
	if (e >= -4 && e < 16) {
		if (e < 0) {
			PUT('0');
			PUT('.');
			for (int i = 0; i < -e - 1; i++)
				PUT('0');
			for (size_t i = 0; i < nd; i++)
				PUT(digs[i]);
		} else {
			for (int i = 0; i <= e; i++)
				PUT((size_t)i < nd ? digs[i] : '0');
			PUT('.');
			if ((size_t)e + 1 >= nd)
				PUT('0');
			for (size_t i = (size_t)e + 1; i < nd; i++)
				PUT(digs[i]);
		}
		*o = '\0';
	} else {
		PUT(digs[0]);
		if (nd > 1) {
			PUT('.');
			for (size_t i = 1; i < nd; i++)
				PUT(digs[i]);
		}
		*o = '\0';
		snprintf(o, (size_t)(end - o) + 1, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
	}
#undef PUT
}

const char *jv_type_name(const jv *v)
{
	switch (v->t) {
	case JV_UNDEF: return "Undefined";
	case JV_NONE: return "NoneType";
	case JV_BOOL: return "bool";
	case JV_INT: return "int";
	case JV_FLOAT: return "float";
	case JV_STR: return "str";
	case JV_LIST: return v->l->tuple ? "tuple" : "list";
	case JV_DICT: return "dict";
	case JV_NS: return "Namespace";
	case JV_MACRO: return "Macro";
	case JV_LOOP: return "LoopContext";
	default: return "builtin_function_or_method";
	}
}

bool jv_truthy(const jv *v)
{
	switch (v->t) {
	case JV_UNDEF:
	case JV_NONE: return false;
	case JV_BOOL: return v->b;
	case JV_INT: return v->i != 0;
	case JV_FLOAT: return v->f != 0;
	case JV_STR: return v->n > 0;
	case JV_LIST: return v->l->n > 0;
	case JV_DICT: return v->d->n > 0;
	default: return true;
	}
}

loom_err jv_concat(jj_rs *rs, const char *s, size_t n, const char *t, size_t m, jv *out)
{
	char *d = jj_alloc(&rs->arena, n + m + 1);
	if (!d)
		return jj_oom(rs);
	if (n)
		memcpy(d, s, n);
	if (m)
		memcpy(d + n, t, m);
	*out = jv_str(d, n + m);
	return LOOM_OK;
}

/* ---- repr / str ---- */

static loom_err repr_str(jj_buf *b, const char *s, size_t n)
{
	bool sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
	char q = sq && !dq ? '"' : '\'';
	loom_err rc = jj_buf_putc(b, q);
	for (size_t i = 0; i < n && !rc;) {
		size_t adv;
		uint32_t c = jj_utf8_dec(s + i, n - i, &adv);
		if (c == (uint32_t)q || c == '\\') {
			char e[2] = { '\\', (char)c };
			rc = jj_buf_put(b, e, 2);
		} else if (c == '\n') {
			rc = jj_buf_put(b, "\\n", 2);
		} else if (c == '\r') {
			rc = jj_buf_put(b, "\\r", 2);
		} else if (c == '\t') {
			rc = jj_buf_put(b, "\\t", 2);
		} else if (nonprintable(c)) {
			if (c < 0x100)
				rc = jj_buf_printf(b, "\\x%02x", c);
			else if (c < 0x10000)
				rc = jj_buf_printf(b, "\\u%04x", c);
			else
				rc = jj_buf_printf(b, "\\U%08x", c);
		} else {
			rc = jj_buf_put(b, s + i, adv);
		}
		i += adv;
	}
	return rc ? rc : jj_buf_putc(b, q);
}

loom_err jv_repr_buf(jj_rs *rs, const jv *v, jj_buf *b, int depth)
{
	loom_err rc = LOOM_OK;
	if (depth > JJ_MAX_VALUE_DEPTH)
		return jj_err(rs, "value nested too deeply to print");
	switch (v->t) {
	case JV_STR:
		return repr_str(b, v->s, v->n);
	case JV_UNDEF:
		return jj_buf_put(b, "Undefined", 9);
	case JV_LIST: {
		const jv_list *l = v->l;
		rc = jj_buf_putc(b, l->tuple ? '(' : '[');
		for (size_t i = 0; i < l->n && !rc; i++) {
			if (i)
				rc = jj_buf_put(b, ", ", 2);
			if (!rc)
				rc = jv_repr_buf(rs, &l->v[i], b, depth + 1);
		}
		if (!rc && l->tuple && l->n == 1)
			rc = jj_buf_putc(b, ',');
		return rc ? rc : jj_buf_putc(b, l->tuple ? ')' : ']');
	}
	case JV_DICT:
	case JV_NS: {
		const jv_dict *d = v->d;
		if (v->t == JV_NS)
			rc = jj_buf_put(b, "<Namespace ", 11);
		if (!rc)
			rc = jj_buf_putc(b, '{');
		for (size_t i = 0; i < d->n && !rc; i++) {
			if (i)
				rc = jj_buf_put(b, ", ", 2);
			if (!rc)
				rc = jv_repr_buf(rs, &d->k[i], b, depth + 1);
			if (!rc)
				rc = jj_buf_put(b, ": ", 2);
			if (!rc)
				rc = jv_repr_buf(rs, &d->v[i], b, depth + 1);
		}
		if (!rc)
			rc = jj_buf_putc(b, '}');
		if (!rc && v->t == JV_NS)
			rc = jj_buf_putc(b, '>');
		return rc;
	}
	default:
		return jv_to_str_buf(rs, v, b);
	}
}

loom_err jv_to_str_buf(jj_rs *rs, const jv *v, jj_buf *b)
{
	char tmp[64];
	switch (v->t) {
	case JV_UNDEF: return LOOM_OK;
	case JV_NONE: return jj_buf_put(b, "None", 4);
	case JV_BOOL: return v->b ? jj_buf_put(b, "True", 4) : jj_buf_put(b, "False", 5);
	case JV_INT: return jj_buf_printf(b, "%lld", (long long)v->i);
	case JV_FLOAT:
		jj_float_repr(v->f, tmp, sizeof tmp);
		return jj_buf_put(b, tmp, strlen(tmp));
	case JV_STR: return jj_buf_put(b, v->s, v->n);
	case JV_LIST:
	case JV_DICT:
	case JV_NS: return jv_repr_buf(rs, v, b, 0);
	case JV_MACRO:
		return jj_buf_printf(b, "<Macro '%.*s'>", (int)v->macro->name_n, v->macro->name);
	case JV_LOOP:
		return jj_buf_printf(b, "<LoopContext %zu/%zu>", v->loop->i + 1, v->loop->n);
	default: return jj_buf_put(b, "<built-in function>", 19);
	}
}

loom_err jv_to_str(jj_rs *rs, const jv *v, jv *out)
{
	jj_buf b = { 0 };
	loom_err rc;
	if (v->t == JV_STR) {
		*out = *v;
		out->safe = false;
		return LOOM_OK;
	}
	if (v->t == JV_UNDEF) {
		*out = jv_str("", 0);
		return LOOM_OK;
	}
	if ((rc = jv_to_str_buf(rs, v, &b)))
		goto out;
	char *s = jj_strdup(&rs->arena, b.p ? b.p : "", b.n);
	if (!s) {
		rc = jj_oom(rs);
		goto out;
	}
	*out = jv_str(s, b.n);
out:
	jj_buf_fini(&b);
	return rc;
}

/* ---- json.dumps ---- */

static loom_err json_str(const jj_json_opt *o, jj_buf *b, const char *s, size_t n)
{
	loom_err rc = jj_buf_putc(b, '"');
	for (size_t i = 0; i < n && !rc;) {
		size_t adv;
		uint32_t c = jj_utf8_dec(s + i, n - i, &adv);
		switch (c) {
		case '"': rc = jj_buf_put(b, "\\\"", 2); break;
		case '\\': rc = jj_buf_put(b, "\\\\", 2); break;
		case '\n': rc = jj_buf_put(b, "\\n", 2); break;
		case '\r': rc = jj_buf_put(b, "\\r", 2); break;
		case '\t': rc = jj_buf_put(b, "\\t", 2); break;
		case '\b': rc = jj_buf_put(b, "\\b", 2); break;
		case '\f': rc = jj_buf_put(b, "\\f", 2); break;
		default:
			if (c < 0x20 || (o->ensure_ascii && c >= 0x7f)) {
				if (c >= 0x10000) {
					uint32_t v = c - 0x10000;
					rc = jj_buf_printf(b, "\\u%04x\\u%04x", 0xd800 + (v >> 10),
							   0xdc00 + (v & 0x3ff));
				} else {
					rc = jj_buf_printf(b, "\\u%04x", c);
				}
			} else {
				rc = jj_buf_put(b, s + i, adv);
			}
		}
		i += adv;
	}
	return rc ? rc : jj_buf_putc(b, '"');
}

static loom_err json_newline(const jj_json_opt *o, jj_buf *b, int level)
{
	loom_err rc = jj_buf_putc(b, '\n');
	for (int i = 0; i < level * o->indent && !rc; i++)
		rc = jj_buf_putc(b, ' ');
	return rc;
}

static loom_err json_key(jj_rs *rs, const jj_json_opt *o, const jv *k, jj_buf *b)
{
	char tmp[64];
	switch (k->t) {
	case JV_STR: return json_str(o, b, k->s, k->n);
	case JV_INT: return jj_buf_printf(b, "\"%lld\"", (long long)k->i);
	case JV_FLOAT:
		jj_float_repr(k->f, tmp, sizeof tmp);
		return jj_buf_printf(b, "\"%s\"", tmp);
	case JV_BOOL: return jj_buf_printf(b, "\"%s\"", k->b ? "true" : "false");
	case JV_NONE: return jj_buf_put(b, "\"null\"", 6);
	default:
		return jj_err(rs, "keys must be str, int, float, bool or None, not %s",
			      jv_type_name(k));
	}
}

static int key_cmp(const void *a, const void *b)
{
	const jv *x = *(const jv *const *)a, *y = *(const jv *const *)b;
	if (x->t != JV_STR || y->t != JV_STR)
		return 0;
	size_t n = x->n < y->n ? x->n : y->n;
	int c = memcmp(x->s, y->s, n);
	return c ? c : (x->n > y->n) - (x->n < y->n);
}

static loom_err json_val(jj_rs *rs, const jv *v, const jj_json_opt *o, jj_buf *b, int level)
{
	char tmp[64];
	loom_err rc = LOOM_OK;
	if (level > JJ_MAX_VALUE_DEPTH)
		return jj_err(rs, "value nested too deeply for tojson");
	switch (v->t) {
	case JV_NONE: return jj_buf_put(b, "null", 4);
	case JV_BOOL: return v->b ? jj_buf_put(b, "true", 4) : jj_buf_put(b, "false", 5);
	case JV_INT: return jj_buf_printf(b, "%lld", (long long)v->i);
	case JV_FLOAT:
		if (isnan(v->f))
			return jj_buf_put(b, "NaN", 3);
		if (isinf(v->f))
			return v->f < 0 ? jj_buf_put(b, "-Infinity", 9) : jj_buf_put(b, "Infinity", 8);
		jj_float_repr(v->f, tmp, sizeof tmp);
		return jj_buf_put(b, tmp, strlen(tmp));
	case JV_STR: return json_str(o, b, v->s, v->n);
	case JV_LIST: {
		const jv_list *l = v->l;
		if (!l->n)
			return jj_buf_put(b, "[]", 2);
		rc = jj_buf_putc(b, '[');
		for (size_t i = 0; i < l->n && !rc; i++) {
			if (i)
				rc = jj_buf_put(b, o->item_sep, o->item_sep_n);
			if (!rc && o->indent >= 0)
				rc = json_newline(o, b, level + 1);
			if (!rc)
				rc = json_val(rs, &l->v[i], o, b, level + 1);
		}
		if (!rc && o->indent >= 0)
			rc = json_newline(o, b, level);
		return rc ? rc : jj_buf_putc(b, ']');
	}
	case JV_DICT: {
		const jv_dict *d = v->d;
		const jv **order;
		if (!d->n)
			return jj_buf_put(b, "{}", 2);
		order = jj_alloc(&rs->arena, d->n * sizeof *order);
		if (!order)
			return jj_oom(rs);
		for (size_t i = 0; i < d->n; i++)
			order[i] = &d->k[i];
		if (o->sort_keys)
			qsort(order, d->n, sizeof *order, key_cmp);
		rc = jj_buf_putc(b, '{');
		for (size_t i = 0; i < d->n && !rc; i++) {
			size_t k = (size_t)(order[i] - d->k);
			if (i)
				rc = jj_buf_put(b, o->item_sep, o->item_sep_n);
			if (!rc && o->indent >= 0)
				rc = json_newline(o, b, level + 1);
			if (!rc)
				rc = json_key(rs, o, &d->k[k], b);
			if (!rc)
				rc = jj_buf_put(b, o->key_sep, o->key_sep_n);
			if (!rc)
				rc = json_val(rs, &d->v[k], o, b, level + 1);
		}
		if (!rc && o->indent >= 0)
			rc = json_newline(o, b, level);
		return rc ? rc : jj_buf_putc(b, '}');
	}
	default:
		return jj_err(rs, "Object of type %s is not JSON serializable", jv_type_name(v));
	}
}

loom_err jv_to_json(jj_rs *rs, const jv *v, const jj_json_opt *o, jj_buf *b)
{
	return json_val(rs, v, o, b, 0);
}

/* ---- comparison ---- */

static bool is_num(const jv *v) { return v->t == JV_BOOL || v->t == JV_INT || v->t == JV_FLOAT; }
static double num(const jv *v)
{
	return v->t == JV_FLOAT ? v->f : v->t == JV_INT ? (double)v->i : (double)v->b;
}
static int64_t inum(const jv *v) { return v->t == JV_INT ? v->i : (int64_t)v->b; }

const jv *jv_dict_gets(const jv_dict *d, const char *s, size_t n)
{
	for (size_t i = 0; i < d->n; i++)
		if (d->k[i].t == JV_STR && d->k[i].n == n && memcmp(d->k[i].s, s, n) == 0)
			return &d->v[i];
	return NULL;
}

const jv *jv_dict_get(const jv_dict *d, const jv *key)
{
	if (key->t == JV_STR)
		return jv_dict_gets(d, key->s, key->n);
	for (size_t i = 0; i < d->n; i++)
		if (jv_equal(&d->k[i], key, 0))
			return &d->v[i];
	return NULL;
}

bool jv_equal(const jv *a, const jv *b, int depth)
{
	if (depth > JJ_MAX_VALUE_DEPTH)
		return false;
	if (is_num(a) && is_num(b)) {
		if (a->t == JV_FLOAT || b->t == JV_FLOAT)
			return num(a) == num(b);
		return inum(a) == inum(b);
	}
	if (a->t != b->t)
		return false;
	switch (a->t) {
	case JV_UNDEF:
	case JV_NONE: return true;
	case JV_STR: return a->n == b->n && (!a->n || memcmp(a->s, b->s, a->n) == 0);
	case JV_LIST:
		if (a->l->tuple != b->l->tuple || a->l->n != b->l->n)
			return false;
		for (size_t i = 0; i < a->l->n; i++)
			if (!jv_equal(&a->l->v[i], &b->l->v[i], depth + 1))
				return false;
		return true;
	case JV_DICT:
		if (a->d->n != b->d->n)
			return false;
		for (size_t i = 0; i < a->d->n; i++) {
			const jv *o = jv_dict_get(b->d, &a->d->k[i]);
			if (!o || !jv_equal(&a->d->v[i], o, depth + 1))
				return false;
		}
		return true;
	case JV_NS: return a->d == b->d;
	case JV_MACRO: return a->macro == b->macro;
	case JV_FUNC: return a->i == b->i;
	case JV_LOOP: return a->loop == b->loop;
	default: return false;
	}
}

static loom_err less_d(jj_rs *rs, const jv *a, const jv *b, bool *lt, int depth)
{
	if (depth > JJ_MAX_VALUE_DEPTH)
		return jj_err(rs, "value nested too deeply to compare");
	if (is_num(a) && is_num(b)) {
		if (a->t == JV_FLOAT || b->t == JV_FLOAT)
			*lt = num(a) < num(b);
		else
			*lt = inum(a) < inum(b);
		return LOOM_OK;
	}
	if (a->t == JV_STR && b->t == JV_STR) {
		size_t n = a->n < b->n ? a->n : b->n;
		int c = n ? memcmp(a->s, b->s, n) : 0;
		*lt = c < 0 || (c == 0 && a->n < b->n);
		return LOOM_OK;
	}
	if (a->t == JV_LIST && b->t == JV_LIST && a->l->tuple == b->l->tuple) {
		for (size_t i = 0; i < a->l->n && i < b->l->n; i++) {
			if (jv_equal(&a->l->v[i], &b->l->v[i], depth + 1))
				continue;
			return less_d(rs, &a->l->v[i], &b->l->v[i], lt, depth + 1);
		}
		*lt = a->l->n < b->l->n;
		return LOOM_OK;
	}
	if (a->t == JV_UNDEF)
		return jj_err(rs, "%s", a->s ? a->s : "undefined value");
	if (b->t == JV_UNDEF)
		return jj_err(rs, "%s", b->s ? b->s : "undefined value");
	return jj_err(rs, "'<' not supported between instances of '%s' and '%s'", jv_type_name(a),
		      jv_type_name(b));
}

loom_err jv_less(jj_rs *rs, const jv *a, const jv *b, bool *lt)
{
	return less_d(rs, a, b, lt, 0);
}

/* ---- construction ---- */

loom_err jv_make_list(jj_rs *rs, const jv *v, size_t n, bool tuple, jv *out)
{
	jv_list *l = jj_alloc(&rs->arena, sizeof *l);
	jv *items = n ? jj_alloc(&rs->arena, n * sizeof *items) : NULL;
	if (!l || (n && !items))
		return jj_oom(rs);
	if (n)
		memcpy(items, v, n * sizeof *items);
	l->v = items;
	l->n = n;
	l->tuple = tuple;
	out->t = JV_LIST;
	out->safe = false;
	out->l = l;
	return LOOM_OK;
}

loom_err jv_from_json(jj_rs *rs, const json_t *j, jv *out, int depth)
{
	loom_err rc;
	if (depth > JJ_MAX_VALUE_DEPTH)
		return jj_err(rs, "context JSON nested too deeply");
	switch (json_typeof(j)) {
	case JSON_OBJECT: {
		size_t n = json_object_size(j), i = 0;
		jv_dict *d = jj_alloc(&rs->arena, sizeof *d);
		if (!d || (n && (!(d->k = jj_alloc(&rs->arena, n * sizeof(jv))) ||
				 !(d->v = jj_alloc(&rs->arena, n * sizeof(jv))))))
			return jj_oom(rs);
		const char *key;
		json_t *val;
		json_object_foreach((json_t *)j, key, val) {
			size_t kn = strlen(key);
			const char *ks = jj_strdup(&rs->arena, key, kn);
			if (!ks)
				return jj_oom(rs);
			d->k[i] = jv_str(ks, kn);
			if ((rc = jv_from_json(rs, val, &d->v[i], depth + 1)))
				return rc;
			i++;
		}
		d->n = d->cap = i;
		out->t = JV_DICT;
		out->safe = false;
		out->d = d;
		return LOOM_OK;
	}
	case JSON_ARRAY: {
		size_t n = json_array_size(j);
		jv *items = n ? jj_alloc(&rs->arena, n * sizeof *items) : NULL;
		if (n && !items)
			return jj_oom(rs);
		for (size_t i = 0; i < n; i++)
			if ((rc = jv_from_json(rs, json_array_get(j, i), &items[i], depth + 1)))
				return rc;
		jv_list *l = jj_alloc(&rs->arena, sizeof *l);
		if (!l)
			return jj_oom(rs);
		l->v = items;
		l->n = n;
		out->t = JV_LIST;
		out->safe = false;
		out->l = l;
		return LOOM_OK;
	}
	case JSON_STRING: {
		size_t n = json_string_length(j);
		const char *s = jj_strdup(&rs->arena, json_string_value(j), n);
		if (!s)
			return jj_oom(rs);
		*out = jv_str(s, n);
		return LOOM_OK;
	}
	case JSON_INTEGER: *out = jv_int((int64_t)json_integer_value(j)); return LOOM_OK;
	case JSON_REAL: *out = jv_float(json_real_value(j)); return LOOM_OK;
	case JSON_TRUE: *out = jv_bool(true); return LOOM_OK;
	case JSON_FALSE: *out = jv_bool(false); return LOOM_OK;
	default: *out = jv_none(); return LOOM_OK;
	}
}

loom_err jv_iterate(jj_rs *rs, const jv *v, const jv **items, size_t *n)
{
	switch (v->t) {
	case JV_UNDEF:
		*items = NULL;
		*n = 0;
		return LOOM_OK;
	case JV_LIST:
		*items = v->l->v;
		*n = v->l->n;
		return LOOM_OK;
	case JV_DICT:
		*items = v->d->k;
		*n = v->d->n;
		return LOOM_OK;
	case JV_STR: {
		size_t k = jj_utf8_len(v->s, v->n), i = 0, j = 0;
		jv *out = k ? jj_alloc(&rs->arena, k * sizeof *out) : NULL;
		if (k && !out)
			return jj_oom(rs);
		while (i < v->n) {
			size_t adv;
			jj_utf8_dec(v->s + i, v->n - i, &adv);
			out[j++] = jv_str(v->s + i, adv);
			i += adv;
		}
		*items = out;
		*n = j;
		return LOOM_OK;
	}
	default:
		return jj_err(rs, "'%s' object is not iterable", jv_type_name(v));
	}
}

loom_err jv_ns_set(jj_rs *rs, jv_dict *d, const char *name, size_t n, const jv *val)
{
	for (size_t i = 0; i < d->n; i++)
		if (d->k[i].n == n && memcmp(d->k[i].s, name, n) == 0) {
			d->v[i] = *val;
			return LOOM_OK;
		}
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 4;
		jv *k = jj_alloc(&rs->arena, cap * sizeof *k), *v = jj_alloc(&rs->arena, cap * sizeof *v);
		if (!k || !v)
			return jj_oom(rs);
		if (d->n) {
			memcpy(k, d->k, d->n * sizeof *k);
			memcpy(v, d->v, d->n * sizeof *v);
		}
		d->k = k;
		d->v = v;
		d->cap = cap;
	}
	d->k[d->n] = jv_str(name, n);
	d->v[d->n++] = *val;
	return LOOM_OK;
}
