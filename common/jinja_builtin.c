/*
 * common/jinja_builtin.c — jinja2's filters and tests, with jinja2 3.1's
 * parameter names and semantics, plus Hugging Face's `tojson`
 * (json.dumps with ensure_ascii=False, indent, separators, sort_keys).
 * Tests are in jinja_tests.c. Filters that return generators in jinja2 (map, select, reverse, ...)
 * return lists here; templates consume them with |list, |join or a loop.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jinja_int.h"

enum {
	F_ABS, F_ATTR, F_BATCH, F_CAPITALIZE, F_CENTER, F_COUNT, F_D, F_DEFAULT, F_DICTSORT, F_E,
	F_ESCAPE, F_FIRST, F_FLOAT, F_FORCEESCAPE, F_INDENT, F_INT, F_ITEMS, F_JOIN, F_LAST,
	F_LENGTH, F_LIST, F_LOWER, F_MAP, F_MAX, F_MIN, F_REJECT, F_REJECTATTR, F_REPLACE,
	F_REVERSE, F_ROUND, F_SAFE, F_SELECT, F_SELECTATTR, F_SORT, F_STRING, F_SUM, F_TITLE,
	F_TOJSON, F_TRIM, F_UNIQUE, F_UPPER, F_WORDCOUNT, F_COUNT_
};

typedef struct fdef {
	const char *name;
	const char *params[5]; /* after the value; NULL-terminated; variadic: NULL */
	bool variadic;
} fdef;

static const fdef filters[F_COUNT_] = {
	[F_ABS] = { "abs", { NULL }, false },
	[F_ATTR] = { "attr", { "name" }, false },
	[F_BATCH] = { "batch", { "linecount", "fill_with" }, false },
	[F_CAPITALIZE] = { "capitalize", { NULL }, false },
	[F_CENTER] = { "center", { "width" }, false },
	[F_COUNT] = { "count", { NULL }, false },
	[F_D] = { "d", { "default_value", "boolean" }, false },
	[F_DEFAULT] = { "default", { "default_value", "boolean" }, false },
	[F_DICTSORT] = { "dictsort", { "case_sensitive", "by", "reverse" }, false },
	[F_E] = { "e", { NULL }, false },
	[F_ESCAPE] = { "escape", { NULL }, false },
	[F_FIRST] = { "first", { NULL }, false },
	[F_FLOAT] = { "float", { "default" }, false },
	[F_FORCEESCAPE] = { "forceescape", { NULL }, false },
	[F_INDENT] = { "indent", { "width", "first", "blank" }, false },
	[F_INT] = { "int", { "default", "base" }, false },
	[F_ITEMS] = { "items", { NULL }, false },
	[F_JOIN] = { "join", { "d", "attribute" }, false },
	[F_LAST] = { "last", { NULL }, false },
	[F_LENGTH] = { "length", { NULL }, false },
	[F_LIST] = { "list", { NULL }, false },
	[F_LOWER] = { "lower", { NULL }, false },
	[F_MAP] = { "map", { NULL }, true },
	[F_MAX] = { "max", { "case_sensitive", "attribute" }, false },
	[F_MIN] = { "min", { "case_sensitive", "attribute" }, false },
	[F_REJECT] = { "reject", { NULL }, true },
	[F_REJECTATTR] = { "rejectattr", { NULL }, true },
	[F_REPLACE] = { "replace", { "old", "new", "count" }, false },
	[F_REVERSE] = { "reverse", { NULL }, false },
	[F_ROUND] = { "round", { "precision", "method" }, false },
	[F_SAFE] = { "safe", { NULL }, false },
	[F_SELECT] = { "select", { NULL }, true },
	[F_SELECTATTR] = { "selectattr", { NULL }, true },
	[F_SORT] = { "sort", { "reverse", "case_sensitive", "attribute" }, false },
	[F_STRING] = { "string", { NULL }, false },
	[F_SUM] = { "sum", { "attribute", "start" }, false },
	[F_TITLE] = { "title", { NULL }, false },
	[F_TOJSON] = { "tojson", { "ensure_ascii", "indent", "separators", "sort_keys" }, false },
	[F_TRIM] = { "trim", { "chars" }, false },
	[F_UNIQUE] = { "unique", { "case_sensitive", "attribute" }, false },
	[F_UPPER] = { "upper", { NULL }, false },
	[F_WORDCOUNT] = { "wordcount", { NULL }, false },
};

static bool eqn(const char *a, size_t n, const char *w)
{
	return strlen(w) == n && memcmp(a, w, n) == 0;
}

int jj_filter_id(const char *name, size_t n)
{
	for (int i = 0; i < F_COUNT_; i++)
		if (eqn(name, n, filters[i].name))
			return i;
	return -1;
}

const jv *jj_arg(const jj_args *a, size_t pos, const char *name)
{
	if (pos < a->n_pos)
		return &a->pos[pos];
	for (size_t i = 0; name && i < a->n_kw; i++)
		if (!strcmp(a->kw_names[i], name))
			return &a->kw[i];
	return NULL;
}

loom_err jj_check_args(jj_rs *rs, const char *what, const jj_args *a, size_t max,
		       const char *const *names)
{
	if (a->n_pos > max)
		return jj_err(rs, "%s takes at most %zu argument(s), got %zu", what, max, a->n_pos);
	for (size_t i = 0; i < a->n_kw; i++) {
		bool ok = false;
		for (size_t k = 0; names[k] && !ok; k++)
			ok = !strcmp(names[k], a->kw_names[i]) && k >= a->n_pos;
		if (!ok)
			return jj_err(rs, "%s got an unexpected keyword argument '%s'", what,
				      a->kw_names[i]);
	}
	return LOOM_OK;
}

/* ---- helpers ---- */

static loom_err str_of(jj_rs *rs, const jv *v, jv *out)
{
	return jv_to_str(rs, v, out);
}

static loom_err buf_to_str(jj_rs *rs, jj_buf *b, jv *out)
{
	char *d = jj_strdup(&rs->arena, b->p ? b->p : "", b->n);
	if (!d)
		return jj_oom(rs);
	*out = jv_str(d, b->n);
	return LOOM_OK;
}

/* Item attribute as jinja2's make_attrgetter: dotted path, integer parts as indices. */
static loom_err attr_path(jj_rs *rs, const jv *item, const jv *attr, jv *out)
{
	if (attr->t == JV_INT)
		return jj_getitem(rs, item, attr, out);
	if (attr->t != JV_STR)
		return jj_err(rs, "attribute must be a string");
	jv cur = *item;
	size_t i = 0;
	for (;;) {
		size_t j = i;
		while (j < attr->n && attr->s[j] != '.')
			j++;
		jv part = jv_str(attr->s + i, j - i), next;
		bool digits = j > i;
		for (size_t k = i; k < j; k++)
			digits = digits && attr->s[k] >= '0' && attr->s[k] <= '9';
		if (digits)
			part = jv_int(strtoll(attr->s + i, NULL, 10));
		loom_err rc = jj_getitem(rs, &cur, &part, &next);
		if (rc)
			return rc;
		cur = next;
		if (j >= attr->n)
			break;
		i = j + 1;
	}
	*out = cur;
	return LOOM_OK;
}

/* Sort key: attribute, lower-cased strings unless case-sensitive. */
static loom_err sort_key(jj_rs *rs, const jv *item, const jv *attr, bool cs, jv *out)
{
	loom_err rc;
	jv v = *item;
	if (attr && attr->t != JV_NONE && (rc = attr_path(rs, item, attr, &v)))
		return rc;
	if (!cs && v.t == JV_STR)
		return jj_case(rs, &v, 'l', out);
	*out = v;
	return LOOM_OK;
}

/* Stable merge sort of idx by keys (errors from incomparable keys surface). */
static loom_err msort(jj_rs *rs, const jv *keys, size_t *idx, size_t *tmp, size_t n, bool rev)
{
	loom_err rc;
	if (n < 2)
		return LOOM_OK;
	size_t h = n / 2, i = 0, j = h, k = 0;
	if ((rc = msort(rs, keys, idx, tmp, h, rev)) || (rc = msort(rs, keys, idx + h, tmp, n - h, rev)))
		return rc;
	while (i < h && j < n) {
		bool lt;
		/* take from the right only when strictly before the left one */
		if (rev)
			rc = jv_less(rs, &keys[idx[i]], &keys[idx[j]], &lt);
		else
			rc = jv_less(rs, &keys[idx[j]], &keys[idx[i]], &lt);
		if (rc)
			return rc;
		tmp[k++] = lt ? idx[j++] : idx[i++];
	}
	while (i < h)
		tmp[k++] = idx[i++];
	while (j < n)
		tmp[k++] = idx[j++];
	memcpy(idx, tmp, n * sizeof *idx);
	return LOOM_OK;
}

static loom_err sorted(jj_rs *rs, const jv *items, size_t n, const jv *attr, bool cs, bool rev,
		       jv *out)
{
	jv *keys = n ? jj_alloc(&rs->arena, n * sizeof *keys) : NULL;
	size_t *idx = n ? jj_alloc(&rs->arena, 2 * n * sizeof *idx) : NULL;
	jv *res = n ? jj_alloc(&rs->arena, n * sizeof *res) : NULL;
	loom_err rc;
	if (n && (!keys || !idx || !res))
		return jj_oom(rs);
	for (size_t i = 0; i < n; i++) {
		idx[i] = i;
		if ((rc = sort_key(rs, &items[i], attr, cs, &keys[i])))
			return rc;
	}
	if ((rc = msort(rs, keys, idx, idx + n, n, rev)))
		return rc;
	for (size_t i = 0; i < n; i++)
		res[i] = items[idx[i]];
	return jv_make_list(rs, res, n, false, out);
}

static loom_err html_escape(jj_rs *rs, const jv *in, jv *out)
{
	jv s;
	jj_buf b = { .limit = LOOM_JINJA_MAX_OUTPUT };
	loom_err rc = str_of(rs, in, &s);
	for (size_t i = 0; i < s.n && !rc; i++) {
		switch (s.s[i]) {
		case '&': rc = jj_buf_put(&b, "&amp;", 5); break;
		case '<': rc = jj_buf_put(&b, "&lt;", 4); break;
		case '>': rc = jj_buf_put(&b, "&gt;", 4); break;
		case '"': rc = jj_buf_put(&b, "&#34;", 5); break;
		case '\'': rc = jj_buf_put(&b, "&#39;", 5); break;
		default: rc = jj_buf_putc(&b, s.s[i]);
		}
	}
	if (!rc && !(rc = buf_to_str(rs, &b, out)))
		out->safe = true;
	jj_buf_fini(&b);
	return rc;
}

static loom_err do_indent(jj_rs *rs, const jv *in, const jj_args *a, jv *out)
{
	const jv *w = jj_arg(a, 0, "width"), *first = jj_arg(a, 1, "first"), *blank = jj_arg(a, 2, "blank");
	jv s, lines, ind = jv_str("    ", 4);
	jj_buf b = { .limit = LOOM_JINJA_MAX_OUTPUT };
	loom_err rc;
	if (w && w->t == JV_STR) {
		ind = *w;
	} else if (w) {
		if (w->t != JV_INT || w->i < 0 || w->i > 4096)
			return jj_err(rs, "indent width must be a small integer or a string");
		char *sp = jj_alloc(&rs->arena, (size_t)w->i + 1);
		if (!sp)
			return jj_oom(rs);
		memset(sp, ' ', (size_t)w->i);
		ind = jv_str(sp, (size_t)w->i);
	}
	if ((rc = str_of(rs, in, &s)) || (rc = jv_concat(rs, s.s, s.n, "\n", 1, &s)) ||
	    (rc = jj_splitlines(rs, &s, &lines)))
		return rc;
	const jv_list *l = lines.l;
	if (first && jv_truthy(first))
		rc = jj_buf_put(&b, ind.s, ind.n);
	for (size_t i = 0; i < l->n && !rc; i++) {
		if (i) {
			rc = jj_buf_putc(&b, '\n');
			if (!rc && (blank && jv_truthy(blank) ? true : l->v[i].n > 0))
				rc = jj_buf_put(&b, ind.s, ind.n);
		}
		if (!rc)
			rc = jj_buf_put(&b, l->v[i].s, l->v[i].n);
	}
	if (!rc)
		rc = buf_to_str(rs, &b, out);
	jj_buf_fini(&b);
	return rc;
}

static loom_err do_tojson(jj_rs *rs, const jv *in, const jj_args *a, jv *out)
{
	const jv *ea = jj_arg(a, 0, "ensure_ascii"), *ind = jj_arg(a, 1, "indent"),
		 *sep = jj_arg(a, 2, "separators"), *sk = jj_arg(a, 3, "sort_keys");
	jj_json_opt o = { .indent = -1, .item_sep = ", ", .key_sep = ": ", .item_sep_n = 2, .key_sep_n = 2 };
	jj_buf b = { .limit = LOOM_JINJA_MAX_OUTPUT };
	loom_err rc;
	o.ensure_ascii = ea && jv_truthy(ea);
	o.sort_keys = sk && jv_truthy(sk);
	if (ind && ind->t != JV_NONE) {
		if (ind->t != JV_INT)
			return jj_err(rs, "unsupported: tojson indent that is not an integer");
		o.indent = ind->i < 0 ? 0 : ind->i > 64 ? 64 : (int)ind->i;
		o.item_sep = ",";
		o.item_sep_n = 1;
	}
	if (sep && sep->t != JV_NONE) {
		if (sep->t != JV_LIST || sep->l->n != 2 || sep->l->v[0].t != JV_STR ||
		    sep->l->v[1].t != JV_STR)
			return jj_err(rs, "tojson separators must be a pair of strings");
		o.item_sep = sep->l->v[0].s;
		o.item_sep_n = sep->l->v[0].n;
		o.key_sep = sep->l->v[1].s;
		o.key_sep_n = sep->l->v[1].n;
	}
	if (!(rc = jv_to_json(rs, in, &o, &b)))
		rc = buf_to_str(rs, &b, out);
	jj_buf_fini(&b);
	return rc;
}

static bool parse_int(const jv *s, int base, int64_t *out)
{
	char buf[80];
	size_t k = 0;
	size_t a = 0, b = s->n;
	while (a < b && jj_isspace((unsigned char)s->s[a]))
		a++;
	while (b > a && jj_isspace((unsigned char)s->s[b - 1]))
		b--;
	if (a == b || b - a >= sizeof buf)
		return false;
	for (size_t i = a; i < b; i++) {
		char c = s->s[i];
		if (c == '_') {
			if (i == a || i + 1 == b || s->s[i + 1] == '_')
				return false;
			continue;
		}
		buf[k++] = c;
	}
	buf[k] = '\0';
	char *end;
	if (buf[0] == '+' || buf[0] == '-') {
		if (!buf[1] || buf[1] == '+' || buf[1] == '-' || jj_isspace((unsigned char)buf[1]))
			return false;
	}
	errno = 0;
	long long v = strtoll(buf, &end, base);
	if (*end || errno)
		return false;
	*out = v;
	return true;
}

static bool parse_float(const jv *s, double *out)
{
	char buf[80];
	size_t k = 0, a = 0, b = s->n;
	while (a < b && jj_isspace((unsigned char)s->s[a]))
		a++;
	while (b > a && jj_isspace((unsigned char)s->s[b - 1]))
		b--;
	if (a == b || b - a >= sizeof buf)
		return false;
	for (size_t i = a; i < b; i++) {
		char c = s->s[i];
		if (c == 'x' || c == 'X' || c == 'p' || c == 'P')
			return false;
		if (c != '_')
			buf[k++] = c;
	}
	buf[k] = '\0';
	char *end;
	*out = strtod(buf, &end);
	return !*end;
}

static loom_err apply_test_name(jj_rs *rs, jj_frame *f, const jv *name, const jv *item,
				const jj_args *rest, bool *r)
{
	int id;
	if (name->t != JV_STR || (id = jj_test_id(name->s, name->n)) < 0)
		return jj_err(rs, "unsupported test '%.*s'", name->t == JV_STR ? (int)name->n : 1,
			      name->t == JV_STR ? name->s : "?");
	return jj_apply_test(rs, f, id, item, rest, r);
}

/* select/reject/selectattr/rejectattr */
static loom_err do_select(jj_rs *rs, jj_frame *f, int id, const jv *in, const jj_args *a, jv *out)
{
	bool attr = id == F_SELECTATTR || id == F_REJECTATTR, want = id == F_SELECT || id == F_SELECTATTR;
	const jv *items;
	size_t n, k = 0, skip = attr ? 1 : 0;
	loom_err rc;
	if (a->n_kw)
		return jj_err(rs, "%s takes no keyword arguments", filters[id].name);
	if (attr && !a->n_pos)
		return jj_err(rs, "%s needs an attribute name", filters[id].name);
	if ((rc = jv_iterate(rs, in, &items, &n)))
		return rc;
	jv *res = n ? jj_alloc(&rs->arena, n * sizeof *res) : NULL;
	if (n && !res)
		return jj_oom(rs);
	jj_args rest = { a->pos + skip + 1, a->n_pos > skip + 1 ? a->n_pos - skip - 1 : 0, NULL, NULL, 0 };
	for (size_t i = 0; i < n; i++) {
		jv v = items[i];
		bool r;
		if (attr && (rc = attr_path(rs, &items[i], &a->pos[0], &v)))
			return rc;
		if (a->n_pos > skip)
			rc = apply_test_name(rs, f, &a->pos[skip], &v, &rest, &r);
		else
			r = jv_truthy(&v);
		if (rc)
			return rc;
		if (r == want)
			res[k++] = items[i];
	}
	return jv_make_list(rs, res, k, false, out);
}

static loom_err do_map(jj_rs *rs, jj_frame *f, const jv *in, const jj_args *a, jv *out)
{
	const jv *items, *attr = jj_arg(a, SIZE_MAX, "attribute"), *def = jj_arg(a, SIZE_MAX, "default");
	size_t n;
	loom_err rc;
	int fid = -1;
	if ((rc = jv_iterate(rs, in, &items, &n)))
		return rc;
	if (!attr) {
		if (!a->n_pos || a->pos[0].t != JV_STR ||
		    (fid = jj_filter_id(a->pos[0].s, a->pos[0].n)) < 0)
			return jj_err(rs, "map needs attribute= or the name of a supported filter");
	}
	jv *res = n ? jj_alloc(&rs->arena, n * sizeof *res) : NULL;
	if (n && !res)
		return jj_oom(rs);
	jj_args rest = { a->n_pos ? a->pos + 1 : NULL, a->n_pos ? a->n_pos - 1 : 0, a->kw_names, a->kw,
			 a->n_kw };
	for (size_t i = 0; i < n; i++) {
		if (attr) {
			if ((rc = attr_path(rs, &items[i], attr, &res[i])))
				return rc;
			if (def && res[i].t == JV_UNDEF)
				res[i] = *def;
		} else if ((rc = jj_apply_filter(rs, f, fid, &items[i], &rest, &res[i]))) {
			return rc;
		}
	}
	return jv_make_list(rs, res, n, false, out);
}

static loom_err minmax(jj_rs *rs, int id, const jv *in, const jj_args *a, jv *out)
{
	const jv *items, *cs = jj_arg(a, 0, "case_sensitive"), *attr = jj_arg(a, 1, "attribute");
	size_t n, best = 0;
	loom_err rc;
	jv bk;
	if ((rc = jv_iterate(rs, in, &items, &n)))
		return rc;
	if (!n) {
		*out = jv_undef("No aggregated item, sequence was empty.");
		return LOOM_OK;
	}
	if ((rc = sort_key(rs, &items[0], attr, cs && jv_truthy(cs), &bk)))
		return rc;
	for (size_t i = 1; i < n; i++) {
		jv k;
		bool lt;
		if ((rc = sort_key(rs, &items[i], attr, cs && jv_truthy(cs), &k)) ||
		    (rc = id == F_MIN ? jv_less(rs, &k, &bk, &lt) : jv_less(rs, &bk, &k, &lt)))
			return rc;
		if (lt) {
			best = i;
			bk = k;
		}
	}
	*out = items[best];
	return LOOM_OK;
}

static loom_err do_round(jj_rs *rs, const jv *in, const jj_args *a, jv *out)
{
	const jv *p = jj_arg(a, 0, "precision"), *m = jj_arg(a, 1, "method");
	int64_t prec = p ? (p->t == JV_INT ? p->i : -999) : 0;
	char buf[400];
	if (prec < -300 || prec > 300)
		return jj_err(rs, "round precision must be a small integer");
	if (in->t == JV_UNDEF)
		return jj_err(rs, "%s", in->s ? in->s : "undefined value");
	if (in->t != JV_INT && in->t != JV_FLOAT && in->t != JV_BOOL)
		return jj_err(rs, "type %s doesn't define __round__ method", jv_type_name(in));
	double x = in->t == JV_FLOAT ? in->f : in->t == JV_INT ? (double)in->i : in->b;
	if (m && (m->t != JV_STR || (!eqn(m->s, m->n, "common") && !eqn(m->s, m->n, "ceil") &&
				     !eqn(m->s, m->n, "floor"))))
		return jj_err(rs, "method must be common, ceil or floor");
	if (m && !eqn(m->s, m->n, "common")) {
		double sc = pow(10.0, (double)prec);
		*out = jv_float((m->s[0] == 'c' ? ceil(x * sc) : floor(x * sc)) / sc);
		return LOOM_OK;
	}
	if (in->t != JV_FLOAT && prec >= 0) {
		*out = jv_int(in->t == JV_INT ? in->i : in->b);
		return LOOM_OK;
	}
	if (!isfinite(x) || prec < 0) {
		double sc = pow(10.0, (double)-prec);
		*out = jv_float(isfinite(x) ? nearbyint(x / sc) * sc : x);
		return LOOM_OK;
	}
	snprintf(buf, sizeof buf, "%.*f", (int)prec, x);
	*out = jv_float(strtod(buf, NULL));
	return LOOM_OK;
}

static loom_err do_title(jj_rs *rs, const jv *in, jv *out)
{
	jv s;
	loom_err rc = str_of(rs, in, &s);
	if (rc)
		return rc;
	char *d = jj_alloc(&rs->arena, s.n + 1);
	if (!d)
		return jj_oom(rs);
	/* jinja2 splits on runs of [-\s({[<] and capitalizes every piece */
	bool start = true;
	for (size_t i = 0; i < s.n; i++) {
		char c = s.s[i];
		d[i] = start ? (c >= 'a' && c <= 'z' ? (char)(c - 32) : c)
			     : (c >= 'A' && c <= 'Z' ? (char)(c + 32) : c);
		start = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' ||
			jj_isspace((unsigned char)c);
	}
	*out = jv_str(d, s.n);
	return LOOM_OK;
}

/* ---- filters ---- */

loom_err jj_apply_filter(jj_rs *rs, jj_frame *f, int id, const jv *in, const jj_args *a, jv *out)
{
	const fdef *fd = &filters[id];
	const jv *items;
	size_t n = 0;
	loom_err rc;
	jv s;
	if (!fd->variadic) {
		size_t max = 0;
		while (max < 5 && fd->params[max])
			max++;
		if ((rc = jj_check_args(rs, fd->name, a, max, fd->params)))
			return rc;
	}
#define P(i) jj_arg(a, i, fd->params[i])
	switch (id) {
	case F_ABS:
		if (in->t == JV_INT)
			*out = in->i == INT64_MIN ? jv_float(9.2233720368547758e18) : jv_int(in->i < 0 ? -in->i : in->i);
		else if (in->t == JV_FLOAT)
			*out = jv_float(fabs(in->f));
		else if (in->t == JV_BOOL)
			*out = jv_int(in->b);
		else
			return jj_err(rs, "bad operand type for abs(): '%s'", jv_type_name(in));
		return LOOM_OK;
	case F_ATTR: {
		const jv *nm = P(0);
		if (!nm || nm->t != JV_STR)
			return jj_err(rs, "attr needs a name");
		if (in->t == JV_DICT && jj_method_id(nm->s, nm->n) < 0) {
			*out = jv_undef("no such attribute");
			return LOOM_OK;
		}
		return jj_getattr(rs, in, nm->s, nm->n, out);
	}
	case F_BATCH: {
		const jv *lc = P(0), *fill = P(1);
		if (!lc || lc->t != JV_INT || lc->i <= 0)
			return jj_err(rs, "batch needs a positive line count");
		if ((rc = jv_iterate(rs, in, &items, &n)))
			return rc;
		size_t per = (size_t)lc->i, nb = (n + per - 1) / per;
		jv *rows = nb ? jj_alloc(&rs->arena, nb * sizeof *rows) : NULL;
		if (nb && !rows)
			return jj_oom(rs);
		for (size_t b = 0; b < nb; b++) {
			size_t cnt = n - b * per < per ? n - b * per : per;
			size_t tot = fill && fill->t != JV_NONE ? per : cnt;
			jv *row = jj_alloc(&rs->arena, tot * sizeof *row);
			if (!row)
				return jj_oom(rs);
			memcpy(row, items + b * per, cnt * sizeof *row);
			for (size_t k = cnt; k < tot; k++)
				row[k] = *fill;
			if ((rc = jv_make_list(rs, row, tot, false, &rows[b])))
				return rc;
		}
		return jv_make_list(rs, rows, nb, false, out);
	}
	case F_CAPITALIZE:
	case F_LOWER:
	case F_UPPER:
		if ((rc = str_of(rs, in, &s)))
			return rc;
		return jj_case(rs, &s, id == F_CAPITALIZE ? 'c' : id == F_LOWER ? 'l' : 'u', out);
	case F_CENTER: {
		const jv *w = P(0);
		int64_t width = w ? (w->t == JV_INT ? w->i : -1) : 80;
		if (width < 0 || width > 1 << 20)
			return jj_err(rs, "center width must be a small integer");
		if ((rc = str_of(rs, in, &s)))
			return rc;
		size_t len = jj_utf8_len(s.s, s.n);
		if ((size_t)width <= len) {
			*out = s;
			return LOOM_OK;
		}
		size_t marg = (size_t)width - len, left = marg / 2 + (marg & (size_t)width & 1);
		char *d = jj_alloc(&rs->arena, s.n + marg + 1);
		if (!d)
			return jj_oom(rs);
		memset(d, ' ', s.n + marg);
		memcpy(d + left, s.s, s.n);
		*out = jv_str(d, s.n + marg);
		return LOOM_OK;
	}
	case F_COUNT:
	case F_LENGTH:
		switch (in->t) {
		case JV_UNDEF: *out = jv_int(0); return LOOM_OK;
		case JV_STR: *out = jv_int((int64_t)jj_utf8_len(in->s, in->n)); return LOOM_OK;
		case JV_LIST: *out = jv_int((int64_t)in->l->n); return LOOM_OK;
		case JV_DICT: *out = jv_int((int64_t)in->d->n); return LOOM_OK;
		case JV_LOOP: *out = jv_int((int64_t)in->loop->n); return LOOM_OK;
		default: return jj_err(rs, "object of type '%s' has no len()", jv_type_name(in));
		}
	case F_D:
	case F_DEFAULT: {
		const jv *dv = P(0), *bo = P(1);
		bool use = in->t == JV_UNDEF || (bo && jv_truthy(bo) && !jv_truthy(in));
		*out = use ? (dv ? *dv : jv_str("", 0)) : *in;
		return LOOM_OK;
	}
	case F_DICTSORT: {
		const jv *cs = P(0), *by = P(1), *rev = P(2);
		jv pairs;
		if (in->t != JV_DICT)
			return jj_err(rs, "dictsort needs a mapping, not %s", jv_type_name(in));
		jj_args none = { 0 };
		if ((rc = jj_call_method(rs, in, jj_method_id("items", 5), "items", &none, &pairs)))
			return rc;
		int which = 0;
		if (by && by->t == JV_STR && eqn(by->s, by->n, "value"))
			which = 1;
		else if (by && !(by->t == JV_STR && eqn(by->s, by->n, "key")))
			return jj_err(rs, "You can only sort by either \"key\" or \"value\"");
		jv idx = jv_int(which);
		return sorted(rs, pairs.l->v, pairs.l->n, &idx, cs && jv_truthy(cs), rev && jv_truthy(rev),
			      out);
	}
	case F_E:
	case F_ESCAPE:
		if (in->t == JV_STR && in->safe) {
			*out = *in;
			return LOOM_OK;
		}
		return html_escape(rs, in, out);
	case F_FORCEESCAPE:
		return html_escape(rs, in, out);
	case F_FIRST:
	case F_LAST:
		if (in->t == JV_UNDEF)
			return jj_err(rs, "%s", in->s ? in->s : "undefined value");
		if ((rc = jv_iterate(rs, in, &items, &n)))
			return rc;
		*out = n ? items[id == F_FIRST ? 0 : n - 1]
			 : jv_undef(id == F_FIRST ? "No first item, sequence was empty."
						  : "No last item, sequence was empty.");
		return LOOM_OK;
	case F_FLOAT: {
		const jv *dv = P(0);
		double x;
		if (in->t == JV_UNDEF)
			return jj_err(rs, "%s", in->s ? in->s : "undefined value");
		if (in->t == JV_INT || in->t == JV_BOOL || in->t == JV_FLOAT)
			*out = jv_float(in->t == JV_FLOAT ? in->f : in->t == JV_INT ? (double)in->i : in->b);
		else if (in->t == JV_STR && parse_float(in, &x))
			*out = jv_float(x);
		else
			*out = dv ? *dv : jv_float(0.0);
		return LOOM_OK;
	}
	case F_INDENT:
		return do_indent(rs, in, a, out);
	case F_INT: {
		const jv *dv = P(0), *base = P(1);
		int64_t v;
		double x;
		int b = base && base->t == JV_INT ? (int)base->i : 10;
		if (in->t == JV_UNDEF)
			return jj_err(rs, "%s", in->s ? in->s : "undefined value");
		if (in->t == JV_INT || in->t == JV_BOOL) {
			*out = jv_int(in->t == JV_INT ? in->i : in->b);
		} else if (in->t == JV_FLOAT && isfinite(in->f) && fabs(in->f) < 9.2e18) {
			*out = jv_int((int64_t)in->f);
		} else if (in->t == JV_STR && (b == 10 || (b >= 2 && b <= 36)) && parse_int(in, b, &v)) {
			*out = jv_int(v);
		} else if (in->t == JV_STR && parse_float(in, &x) && isfinite(x) && fabs(x) < 9.2e18) {
			*out = jv_int((int64_t)x);
		} else {
			*out = dv ? *dv : jv_int(0);
		}
		return LOOM_OK;
	}
	case F_ITEMS: {
		jj_args none = { 0 };
		if (in->t == JV_UNDEF)
			return jv_make_list(rs, NULL, 0, false, out);
		if (in->t != JV_DICT)
			return jj_err(rs, "Can only get item pairs from a mapping.");
		return jj_call_method(rs, in, jj_method_id("items", 5), "items", &none, out);
	}
	case F_JOIN: {
		const jv *d = P(0), *attr = P(1);
		jv sep = jv_str("", 0);
		jj_buf b = { .limit = LOOM_JINJA_MAX_OUTPUT };
		if (d && (rc = str_of(rs, d, &sep)))
			return rc;
		if ((rc = jv_iterate(rs, in, &items, &n)))
			return rc;
		for (size_t i = 0; i < n && !rc; i++) {
			jv v = items[i];
			if (attr && attr->t != JV_NONE && (rc = attr_path(rs, &items[i], attr, &v)))
				break;
			if (i)
				rc = jj_buf_put(&b, sep.s, sep.n);
			if (!rc)
				rc = jv_to_str_buf(rs, &v, &b);
		}
		if (!rc)
			rc = buf_to_str(rs, &b, out);
		jj_buf_fini(&b);
		return rc;
	}
	case F_LIST:
		if ((rc = jv_iterate(rs, in, &items, &n)))
			return rc;
		return jv_make_list(rs, items, n, false, out);
	case F_MAP:
		return do_map(rs, f, in, a, out);
	case F_MAX:
	case F_MIN:
		return minmax(rs, id, in, a, out);
	case F_REJECT:
	case F_REJECTATTR:
	case F_SELECT:
	case F_SELECTATTR:
		return do_select(rs, f, id, in, a, out);
	case F_REPLACE: {
		const jv *o = P(0), *nw = P(1), *c = P(2);
		jv so, sn;
		if (!o || !nw)
			return jj_err(rs, "replace needs old and new");
		if (c && c->t != JV_INT && c->t != JV_NONE)
			return jj_err(rs, "replace count must be an integer");
		if ((rc = str_of(rs, in, &s)) || (rc = str_of(rs, o, &so)) || (rc = str_of(rs, nw, &sn)))
			return rc;
		return jj_replace(rs, &s, &so, &sn, c && c->t == JV_INT ? c->i : -1, out);
	}
	case F_REVERSE: {
		jv st = jv_none(), neg = jv_int(-1);
		(void)st;
		if (in->t == JV_STR || in->t == JV_LIST) {
			if ((rc = jv_iterate(rs, in, &items, &n)))
				return rc;
			jv *res = n ? jj_alloc(&rs->arena, n * sizeof *res) : NULL;
			if (n && !res)
				return jj_oom(rs);
			for (size_t i = 0; i < n; i++)
				res[i] = items[n - 1 - i];
			if (in->t == JV_LIST)
				return jv_make_list(rs, res, n, false, out);
			jj_buf b = { .limit = LOOM_JINJA_MAX_OUTPUT };
			for (size_t i = 0; i < n && !rc; i++)
				rc = jj_buf_put(&b, res[i].s, res[i].n);
			if (!rc)
				rc = buf_to_str(rs, &b, out);
			jj_buf_fini(&b);
			return rc;
		}
		(void)neg;
		if ((rc = jv_iterate(rs, in, &items, &n)))
			return rc;
		jv *res = n ? jj_alloc(&rs->arena, n * sizeof *res) : NULL;
		if (n && !res)
			return jj_oom(rs);
		for (size_t i = 0; i < n; i++)
			res[i] = items[n - 1 - i];
		return jv_make_list(rs, res, n, false, out);
	}
	case F_ROUND:
		return do_round(rs, in, a, out);
	case F_SAFE:
		if ((rc = str_of(rs, in, out)))
			return rc;
		out->safe = true;
		return LOOM_OK;
	case F_SORT: {
		const jv *rev = P(0), *cs = P(1), *attr = P(2);
		if ((rc = jv_iterate(rs, in, &items, &n)))
			return rc;
		return sorted(rs, items, n, attr, cs && jv_truthy(cs), rev && jv_truthy(rev), out);
	}
	case F_STRING:
		if (in->t == JV_STR) {
			*out = *in;
			return LOOM_OK;
		}
		return str_of(rs, in, out);
	case F_SUM: {
		const jv *attr = P(0), *start = P(1);
		jv acc = start ? *start : jv_int(0);
		if ((rc = jv_iterate(rs, in, &items, &n)))
			return rc;
		for (size_t i = 0; i < n; i++) {
			jv v = items[i];
			if (attr && attr->t != JV_NONE && (rc = attr_path(rs, &items[i], attr, &v)))
				return rc;
			bool num = (v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL) &&
				   (acc.t == JV_INT || acc.t == JV_FLOAT || acc.t == JV_BOOL);
			if (!num)
				return jj_err(rs, "unsupported operand type(s) for +: '%s' and '%s'",
					      jv_type_name(&acc), jv_type_name(&v));
			if (acc.t == JV_FLOAT || v.t == JV_FLOAT) {
				double x = acc.t == JV_FLOAT ? acc.f : acc.t == JV_INT ? (double)acc.i : acc.b;
				double y = v.t == JV_FLOAT ? v.f : v.t == JV_INT ? (double)v.i : v.b;
				acc = jv_float(x + y);
			} else {
				int64_t r, x = acc.t == JV_INT ? acc.i : acc.b, y = v.t == JV_INT ? v.i : v.b;
				if (__builtin_add_overflow(x, y, &r))
					return jj_err(rs, "integer overflow");
				acc = jv_int(r);
			}
		}
		*out = acc;
		return LOOM_OK;
	}
	case F_TITLE:
		return do_title(rs, in, out);
	case F_TOJSON:
		return do_tojson(rs, in, a, out);
	case F_TRIM:
		if ((rc = str_of(rs, in, &s)))
			return rc;
		return jj_strip(rs, &s, P(0), 3, out);
	case F_UNIQUE: {
		const jv *cs = P(0), *attr = P(1);
		if ((rc = jv_iterate(rs, in, &items, &n)))
			return rc;
		jv *keys = n ? jj_alloc(&rs->arena, n * sizeof *keys) : NULL;
		jv *res = n ? jj_alloc(&rs->arena, n * sizeof *res) : NULL;
		size_t k = 0;
		if (n && (!keys || !res))
			return jj_oom(rs);
		for (size_t i = 0; i < n; i++) {
			jv key;
			bool seen = false;
			if ((rc = sort_key(rs, &items[i], attr, cs && jv_truthy(cs), &key)))
				return rc;
			for (size_t j = 0; j < k && !seen; j++)
				seen = jv_equal(&keys[j], &key, 0);
			if (!seen) {
				keys[k] = key;
				res[k++] = items[i];
			}
		}
		return jv_make_list(rs, res, k, false, out);
	}
	case F_WORDCOUNT: {
		int64_t c = 0;
		bool in_word = false;
		if ((rc = str_of(rs, in, &s)))
			return rc;
		for (size_t i = 0; i < s.n; i++) {
			unsigned char ch = (unsigned char)s.s[i];
			bool w = ch >= 0x80 || ch == '_' || (ch >= '0' && ch <= '9') ||
				 ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z');
			if (w && !in_word)
				c++;
			in_word = w;
		}
		*out = jv_int(c);
		return LOOM_OK;
	}
	default:
		return jj_err(rs, "internal: filter %d", id);
	}
#undef P
}
