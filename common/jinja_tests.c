/*
 * common/jinja_tests.c — jinja2's tests (`x is defined`, `n is odd`,
 * `v is equalto 1`, ...), each under all of jinja2 3.1's names.
 */
#include <math.h>
#include <string.h>

#include "common/jinja_int.h"

enum {
	T_BOOLEAN, T_CALLABLE, T_DEFINED, T_DIVISIBLEBY, T_EQ, T_ESCAPED, T_EVEN, T_FALSE,
	T_FILTER, T_FLOAT, T_GE, T_GT, T_IN, T_INTEGER, T_ITERABLE, T_LE, T_LOWER, T_LT,
	T_MAPPING, T_NE, T_NONE, T_NUMBER, T_ODD, T_SAMEAS, T_SEQUENCE, T_STRING, T_TEST, T_TRUE,
	T_UNDEFINED, T_UPPER
};

static const struct {
	const char *name;
	int id;
} tests[] = {
	{ "boolean", T_BOOLEAN },   { "callable", T_CALLABLE }, { "defined", T_DEFINED },
	{ "divisibleby", T_DIVISIBLEBY }, { "eq", T_EQ },	{ "equalto", T_EQ },
	{ "==", T_EQ },		    { "escaped", T_ESCAPED },	{ "even", T_EVEN },
	{ "false", T_FALSE },	    { "filter", T_FILTER },	{ "float", T_FLOAT },
	{ "ge", T_GE },		    { ">=", T_GE },		{ "gt", T_GT },
	{ "greaterthan", T_GT },    { ">", T_GT },		{ "in", T_IN },
	{ "integer", T_INTEGER },   { "iterable", T_ITERABLE }, { "le", T_LE },
	{ "<=", T_LE },		    { "lower", T_LOWER },	{ "lt", T_LT },
	{ "lessthan", T_LT },	    { "<", T_LT },		{ "mapping", T_MAPPING },
	{ "ne", T_NE },		    { "!=", T_NE },		{ "none", T_NONE },
	{ "number", T_NUMBER },	    { "odd", T_ODD },		{ "sameas", T_SAMEAS },
	{ "sequence", T_SEQUENCE }, { "string", T_STRING },	{ "test", T_TEST },
	{ "true", T_TRUE },	    { "undefined", T_UNDEFINED }, { "upper", T_UPPER },
};

static bool eqn(const char *a, size_t n, const char *w)
{
	return strlen(w) == n && memcmp(a, w, n) == 0;
}

int jj_test_id(const char *name, size_t n)
{
	for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
		if (eqn(name, n, tests[i].name))
			return tests[i].id;
	return -1;
}

/* ---- tests ---- */

loom_err jj_apply_test(jj_rs *rs, jj_frame *f, int id, const jv *in, const jj_args *a, bool *r)
{
	const jv *x = jj_arg(a, 0, NULL);
	loom_err rc = LOOM_OK;
	(void)f;
	switch (id) {
	case T_BOOLEAN: *r = in->t == JV_BOOL; break;
	case T_CALLABLE: *r = in->t == JV_MACRO || in->t == JV_FUNC || in->t == JV_METHOD; break;
	case T_DEFINED: *r = in->t != JV_UNDEF; break;
	case T_UNDEFINED: *r = in->t == JV_UNDEF; break;
	case T_NONE: *r = in->t == JV_NONE; break;
	case T_FALSE: *r = in->t == JV_BOOL && !in->b; break;
	case T_TRUE: *r = in->t == JV_BOOL && in->b; break;
	case T_INTEGER: *r = in->t == JV_INT; break;
	case T_FLOAT: *r = in->t == JV_FLOAT; break;
	case T_NUMBER: *r = in->t == JV_INT || in->t == JV_FLOAT || in->t == JV_BOOL; break;
	case T_STRING: *r = in->t == JV_STR; break;
	case T_MAPPING: *r = in->t == JV_DICT; break;
	case T_ITERABLE:
		*r = in->t == JV_STR || in->t == JV_LIST || in->t == JV_DICT || in->t == JV_UNDEF ||
		     in->t == JV_LOOP;
		break;
	case T_SEQUENCE:
		*r = in->t == JV_STR || in->t == JV_LIST || in->t == JV_DICT || in->t == JV_UNDEF;
		break;
	case T_ESCAPED: *r = in->t == JV_STR && in->safe; break;
	case T_LOWER:
	case T_UPPER: {
		jv s, m;
		if ((rc = jv_to_str(rs, in, &s)) ||
		    (rc = jj_call_method(rs, &s, jj_method_id(id == T_LOWER ? "islower" : "isupper", 7),
					 NULL, a, &m)))
			return rc;
		*r = m.b;
		break;
	}
	case T_ODD:
	case T_EVEN:
	case T_DIVISIBLEBY: {
		jv two = jv_int(2), res;
		const jv *d = id == T_DIVISIBLEBY ? x : &two;
		if (!d)
			return jj_err(rs, "divisibleby needs a number");
		if (in->t == JV_UNDEF)
			return jj_err(rs, "%s", in->s ? in->s : "undefined value");
		bool ok_in = in->t == JV_INT || in->t == JV_FLOAT || in->t == JV_BOOL;
		bool ok_d = d->t == JV_INT || d->t == JV_FLOAT || d->t == JV_BOOL;
		if (!ok_in || !ok_d)
			return jj_err(rs, "unsupported operand type(s) for %%: '%s' and '%s'",
				      jv_type_name(in), jv_type_name(d));
		double dv = d->t == JV_FLOAT ? d->f : d->t == JV_INT ? (double)d->i : d->b;
		if (dv == 0)
			return jj_err(rs, "integer division or modulo by zero");
		if (in->t == JV_FLOAT || d->t == JV_FLOAT) {
			double xv = in->t == JV_FLOAT ? in->f : in->t == JV_INT ? (double)in->i : in->b;
			double m = fmod(xv, dv);
			if (m != 0 && ((m < 0) != (dv < 0)))
				m += dv;
			res = jv_float(m);
			*r = id == T_ODD ? m == 1 : m == 0;
		} else {
			int64_t xv = in->t == JV_INT ? in->i : in->b, y = d->t == JV_INT ? d->i : d->b;
			int64_t m = (xv == INT64_MIN && y == -1) ? 0 : xv % y;
			if (m != 0 && ((m < 0) != (y < 0)))
				m += y;
			res = jv_int(m);
			*r = id == T_ODD ? m == 1 : m == 0;
		}
		(void)res;
		break;
	}
	case T_EQ:
	case T_NE:
	case T_LT:
	case T_LE:
	case T_GT:
	case T_GE:
		if (!x)
			return jj_err(rs, "test needs an argument");
		if (id == T_EQ || id == T_NE) {
			*r = jv_equal(in, x, 0) == (id == T_EQ);
		} else if (id == T_LT || id == T_GE) {
			rc = jv_less(rs, in, x, r);
			if (id == T_GE)
				*r = !*r;
		} else {
			rc = jv_less(rs, x, in, r);
			if (id == T_LE)
				*r = !*r;
		}
		break;
	case T_IN: {
		if (!x)
			return jj_err(rs, "in needs a container");
		if (x->t == JV_STR) {
			if (in->t != JV_STR)
				return jj_err(rs, "'in <string>' requires string as left operand, not %s",
					      jv_type_name(in));
			*r = !in->n || memmem(x->s, x->n, in->s, in->n);
		} else if (x->t == JV_LIST) {
			*r = false;
			for (size_t i = 0; i < x->l->n && !*r; i++)
				*r = jv_equal(in, &x->l->v[i], 0);
		} else if (x->t == JV_DICT) {
			*r = jv_dict_get(x->d, in) != NULL;
		} else if (x->t == JV_UNDEF) {
			return jj_err(rs, "%s", x->s ? x->s : "undefined value");
		} else {
			return jj_err(rs, "argument of type '%s' is not iterable", jv_type_name(x));
		}
		break;
	}
	case T_SAMEAS:
		if (!x)
			return jj_err(rs, "sameas needs an argument");
		if (in->t != x->t)
			*r = false;
		else if (in->t == JV_NONE || in->t == JV_UNDEF)
			*r = true;
		else if (in->t == JV_BOOL)
			*r = in->b == x->b;
		else if (in->t == JV_INT)
			*r = in->i == x->i && in->i >= -5 && in->i <= 256;
		else
			*r = in->t == JV_LIST ? in->l == x->l
			     : in->t == JV_DICT || in->t == JV_NS ? in->d == x->d
			     : in->t == JV_STR ? in->s == x->s && in->n == x->n : false;
		break;
	case T_FILTER:
	case T_TEST:
		*r = in->t == JV_STR && (id == T_FILTER ? jj_filter_id(in->s, in->n)
							 : jj_test_id(in->s, in->n)) >= 0;
		break;
	default:
		return jj_err(rs, "internal: test %d", id);
	}
	return rc;
}
