/*
 * common/jinja_ops.c — Python's operators on template values: arithmetic
 * with int/float promotion, floor division and modulo as CPython does them,
 * overflow of 64-bit ints refused (Python's ints are unbounded, templates
 * never need that), + on strings/lists, * repetition, ~ concatenation,
 * comparisons, `in`, and slicing with PySlice_AdjustIndices' rules.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jinja_int.h"

static loom_err slice_index(jj_rs *rs, const jv *v, int64_t *out, bool *given)
{
	*given = false;
	if (!v || v->t == JV_NONE)
		return LOOM_OK;
	if (v->t != JV_INT && v->t != JV_BOOL)
		return jj_err(rs, "slice indices must be integers or None");
	*out = v->t == JV_INT ? v->i : v->b;
	*given = true;
	return LOOM_OK;
}

loom_err jj_slice(jj_rs *rs, const jv *obj, const jv *lo, const jv *hi, const jv *st,
			 jv *out)
{
	int64_t a = 0, b = 0, step = 1, len;
	bool ga, gb, gs;
	loom_err rc;
	if (obj->t == JV_UNDEF)
		return jj_undefined_err(rs, obj);
	if ((rc = slice_index(rs, st, &step, &gs)) || (rc = slice_index(rs, lo, &a, &ga)) ||
	    (rc = slice_index(rs, hi, &b, &gb)))
		return rc;
	if (!gs)
		step = 1;
	if (step == 0)
		return jj_err(rs, "slice step cannot be zero");
	if (obj->t != JV_LIST && obj->t != JV_STR) {
		*out = jv_undef(jj_hint(rs, "'%s' cannot be sliced", jj_obj_repr(obj)));
		return LOOM_OK;
	}
	const jv *items = NULL;
	size_t n;
	if (obj->t == JV_LIST) {
		items = obj->l->v;
		n = obj->l->n;
	} else if ((rc = jv_iterate(rs, obj, &items, &n))) {
		return rc;
	}
	len = (int64_t)n;
	/* Python's PySlice_AdjustIndices */
	if (!ga)
		a = step < 0 ? len - 1 : 0;
	else if (a < 0 && (a += len) < 0)
		a = step < 0 ? -1 : 0;
	else if (a >= len)
		a = step < 0 ? len - 1 : len;
	if (!gb)
		b = step < 0 ? -1 : len;
	else if (b < 0 && (b += len) < 0)
		b = step < 0 ? -1 : 0;
	else if (b >= len)
		b = step < 0 ? len - 1 : len;
	size_t cnt = 0;
	jv *res = n ? jj_alloc(&rs->arena, n * sizeof *res) : NULL;
	if (n && !res)
		return jj_oom(rs);
	for (int64_t i = a; step > 0 ? i < b : i > b;) {
		res[cnt++] = items[i];
		if (__builtin_add_overflow(i, step, &i))
			break;
	}
	if (obj->t == JV_LIST)
		return jv_make_list(rs, res, cnt, obj->l->tuple, out);
	size_t bytes = 0;
	for (size_t i = 0; i < cnt; i++)
		bytes += res[i].n;
	char *s = jj_alloc(&rs->arena, bytes + 1), *w = s;
	if (!s)
		return jj_oom(rs);
	for (size_t i = 0; i < cnt; i++) {
		memcpy(w, res[i].s, res[i].n);
		w += res[i].n;
	}
	*out = jv_str(s, bytes);
	return LOOM_OK;
}

/* ---- operators ---- */

static bool numeric(const jv *v) { return v->t == JV_INT || v->t == JV_FLOAT || v->t == JV_BOOL; }
static double fnum(const jv *v) { return v->t == JV_FLOAT ? v->f : v->t == JV_INT ? (double)v->i : v->b; }
static int64_t inum(const jv *v) { return v->t == JV_INT ? v->i : v->b; }

static loom_err type_err(jj_rs *rs, const char *op, const jv *a, const jv *b)
{
	if (a->t == JV_UNDEF)
		return jj_undefined_err(rs, a);
	if (b->t == JV_UNDEF)
		return jj_undefined_err(rs, b);
	if (a->t == JV_STR && !strcmp(op, "+"))
		return jj_err(rs, "can only concatenate str (not \"%s\") to str", jv_type_name(b));
	return jj_err(rs, "unsupported operand type(s) for %s: '%s' and '%s'", op, jv_type_name(a),
		      jv_type_name(b));
}

static loom_err repeat(jj_rs *rs, const jv *seq, int64_t times, jv *out)
{
	size_t n = seq->t == JV_STR ? seq->n : seq->l->n;
	if (times < 0)
		times = 0;
	if (n && (uint64_t)times > (size_t)LOOM_JINJA_MAX_OUTPUT / n)
		return jj_err(rs, "repetition result too large");
	size_t total = n * (size_t)times;
	if (seq->t == JV_STR) {
		char *s = jj_alloc(&rs->arena, total + 1);
		if (!s)
			return jj_oom(rs);
		for (int64_t i = 0; i < times; i++)
			memcpy(s + (size_t)i * n, seq->s, n);
		*out = jv_str(s, total);
		return LOOM_OK;
	}
	jv *items = total ? jj_alloc(&rs->arena, total * sizeof *items) : NULL;
	if (total && !items)
		return jj_oom(rs);
	for (int64_t i = 0; i < times; i++)
		memcpy(items + (size_t)i * n, seq->l->v, n * sizeof *items);
	return jv_make_list(rs, items, total, seq->l->tuple, out);
}

loom_err jj_binary(jj_rs *rs, int op, const jv *a, const jv *b, jv *out)
{
	static const char *names[] = { ['+'] = "+", ['-'] = "-", ['*'] = "*", ['/'] = "/", ['%'] = "%" };
	const char *opname = op < (int)(sizeof names / sizeof names[0]) && names[op] ? names[op] : op == JO_POW ? "** or pow()" : "//";
	if (op == '~') {
		jv x, y;
		loom_err rc;
		if ((rc = jv_to_str(rs, a, &x)) || (rc = jv_to_str(rs, b, &y)))
			return rc;
		return jv_concat(rs, x.s, x.n, y.s, y.n, out);
	}
	if (op == '+' && a->t == JV_STR && b->t == JV_STR)
		return jv_concat(rs, a->s, a->n, b->s, b->n, out);
	if (op == '+' && a->t == JV_LIST && b->t == JV_LIST && a->l->tuple == b->l->tuple) {
		size_t n = a->l->n + b->l->n;
		jv *items = n ? jj_alloc(&rs->arena, n * sizeof *items) : NULL;
		if (n && !items)
			return jj_oom(rs);
		if (a->l->n)
			memcpy(items, a->l->v, a->l->n * sizeof *items);
		if (b->l->n)
			memcpy(items + a->l->n, b->l->v, b->l->n * sizeof *items);
		return jv_make_list(rs, items, n, a->l->tuple, out);
	}
	if (op == '*' && (a->t == JV_STR || a->t == JV_LIST) && (b->t == JV_INT || b->t == JV_BOOL))
		return repeat(rs, a, inum(b), out);
	if (op == '*' && (b->t == JV_STR || b->t == JV_LIST) && (a->t == JV_INT || a->t == JV_BOOL))
		return repeat(rs, b, inum(a), out);
	if (!numeric(a) || !numeric(b)) {
		if (op == '%' && a->t == JV_STR)
			return jj_err(rs, "unsupported: printf-style string formatting with '%%'");
		return type_err(rs, opname, a, b);
	}
	bool fl = a->t == JV_FLOAT || b->t == JV_FLOAT;
	if (op == '/') {
		if (fnum(b) == 0)
			return jj_err(rs, "division by zero");
		*out = jv_float(fnum(a) / fnum(b));
		return LOOM_OK;
	}
	if (fl) {
		double x = fnum(a), y = fnum(b), r;
		switch (op) {
		case '+': r = x + y; break;
		case '-': r = x - y; break;
		case '*': r = x * y; break;
		case JO_POW:
			if (x == 0 && y < 0)
				return jj_err(rs, "0.0 cannot be raised to a negative power");
			r = pow(x, y);
			break;
		default: { /* // and %, as CPython's float_divmod */
			if (y == 0)
				return jj_err(rs, "float %s by zero", op == '%' ? "modulo" : "floor division");
			double mod = fmod(x, y), div = (x - mod) / y;
			if (mod != 0) {
				if ((y < 0) != (mod < 0)) {
					mod += y;
					div -= 1.0;
				}
			} else {
				mod = copysign(0.0, y);
			}
			double fd = copysign(0.0, x / y);
			if (div != 0) {
				fd = floor(div);
				if (div - fd > 0.5)
					fd += 1.0;
			}
			r = op == '%' ? mod : fd;
			break;
		}
		}
		*out = jv_float(r);
		return LOOM_OK;
	}
	int64_t x = inum(a), y = inum(b), r;
	switch (op) {
	case '+':
		if (__builtin_add_overflow(x, y, &r))
			return jj_err(rs, "integer overflow");
		break;
	case '-':
		if (__builtin_sub_overflow(x, y, &r))
			return jj_err(rs, "integer overflow");
		break;
	case '*':
		if (__builtin_mul_overflow(x, y, &r))
			return jj_err(rs, "integer overflow");
		break;
	case JO_POW: {
		if (y < 0) {
			if (x == 0)
				return jj_err(rs, "0.0 cannot be raised to a negative power");
			*out = jv_float(pow((double)x, (double)y));
			return LOOM_OK;
		}
		int64_t base = x;
		r = 1;
		while (y) {
			if ((y & 1) && __builtin_mul_overflow(r, base, &r))
				return jj_err(rs, "integer overflow");
			y >>= 1;
			if (y && __builtin_mul_overflow(base, base, &base))
				return jj_err(rs, "integer overflow");
		}
		break;
	}
	default:
		if (y == 0)
			return jj_err(rs, "integer %s by zero", op == '%' ? "modulo" : "division or modulo");
		if (x == INT64_MIN && y == -1)
			return jj_err(rs, "integer overflow");
		r = x % y;
		if (r != 0 && ((r < 0) != (y < 0)))
			r += y;
		if (op == JO_FLOORDIV)
			r = (x - r) / y;
		break;
	}
	*out = jv_int(r);
	return LOOM_OK;
}

static loom_err contains(jj_rs *rs, const jv *item, const jv *c, bool *out)
{
	switch (c->t) {
	case JV_STR:
		if (item->t != JV_STR)
			return jj_err(rs, "'in <string>' requires string as left operand, not %s",
				      jv_type_name(item));
		*out = item->n == 0 || memmem(c->s, c->n, item->s, item->n) != NULL;
		return LOOM_OK;
	case JV_LIST:
		*out = false;
		for (size_t i = 0; i < c->l->n && !*out; i++)
			*out = jv_equal(item, &c->l->v[i], 0);
		return LOOM_OK;
	case JV_DICT:
	case JV_NS:
		*out = jv_dict_get(c->d, item) != NULL;
		return LOOM_OK;
	case JV_UNDEF:
		return jj_undefined_err(rs, c);
	default:
		return jj_err(rs, "argument of type '%s' is not iterable", jv_type_name(c));
	}
}

loom_err jj_compare(jj_rs *rs, int op, const jv *a, const jv *b, bool *out)
{
	loom_err rc = LOOM_OK;
	switch (op) {
	case JO_EQ: *out = jv_equal(a, b, 0); break;
	case JO_NE: *out = !jv_equal(a, b, 0); break;
	case '<': rc = jv_less(rs, a, b, out); break;
	case '>': rc = jv_less(rs, b, a, out); break;
	case JO_LE: rc = jv_less(rs, b, a, out); *out = !*out; break;
	case JO_GE: rc = jv_less(rs, a, b, out); *out = !*out; break;
	default: /* in, not in */
		rc = contains(rs, a, b, out);
		if (op != JJ_CMP_IN)
			*out = !*out;
	}
	return rc;
}

