/*
 * common/jinja_parse.c — tokens to a tree of jj_node, following the
 * grammar (and precedence) of jinja2 3.1's parser:
 *
 *   expr    := or ['if' or ['else' expr]]
 *   or/and/not, compare (== != < <= > >= in, not in; chained),
 *   + -, ~, * / // %, **, unary - +, then primary with postfix . [] ()
 *   and the filter/test tail (| name(args), is [not] name arg).
 *
 * Names of filters, tests, methods and global functions are resolved here,
 * so a template using one this interpreter lacks fails to compile with
 * LOOM_EUNSUPPORTED naming it and its line. Nesting is bounded
 * (JJ_MAX_PARSE_DEPTH) so hostile templates cannot exhaust the stack.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jinja_int.h"

typedef struct ps {
	jj_token *t;
	size_t n, i;
	jj_arena *a;
	int depth;
	jj_nodes calls;  /* N_CALL nodes with a plain name callee, checked at the end */
	jj_nodes macros; /* N_MACRO nodes */
} ps;

static loom_err ps_fail(ps *p, loom_err code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static loom_err ps_fail(ps *p, loom_err code, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return loom_fail(code, "chat template line %d: %s", p->t[p->i].line, msg);
}

static loom_err ps_oom(void)
{
	return loom_fail(LOOM_ENOMEM, "chat template: out of memory");
}

static const jj_token *cur(const ps *p) { return &p->t[p->i]; }
static const jj_token *peek(const ps *p)
{
	return p->i + 1 < p->n ? &p->t[p->i + 1] : &p->t[p->n - 1];
}
static void next(ps *p)
{
	if (p->i + 1 < p->n)
		p->i++;
}

static bool is_name(const jj_token *t, const char *w)
{
	return t->type == JT_NAME && t->n == strlen(w) && memcmp(t->s, w, t->n) == 0;
}
static bool is_op(const jj_token *t, int op) { return t->type == JT_OP && t->op == op; }

static const char *describe(const jj_token *t, char *buf, size_t cap)
{
	switch (t->type) {
	case JT_EOF: return "end of template";
	case JT_DATA: return "template data";
	case JT_VAR_BEGIN: return "'{{'";
	case JT_VAR_END: return "end of print statement";
	case JT_BLOCK_BEGIN: return "'{%'";
	case JT_BLOCK_END: return "end of statement block";
	case JT_NAME: snprintf(buf, cap, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s); return buf;
	case JT_STRING: return "string";
	case JT_INT: return "integer";
	case JT_FLOAT: return "float";
	default:
		if (t->op < 256)
			snprintf(buf, cap, "'%c'", t->op);
		else
			snprintf(buf, cap, "'%s'", t->op == JO_FLOORDIV ? "//" : t->op == JO_POW ? "**"
					       : t->op == JO_EQ ? "==" : t->op == JO_NE ? "!="
					       : t->op == JO_LE ? "<=" : ">=");
		return buf;
	}
}

static loom_err unexpected(ps *p, const char *wanted)
{
	char b[64];
	return ps_fail(p, LOOM_EFORMAT, "expected %s, got %s", wanted, describe(cur(p), b, sizeof b));
}

static loom_err expect_op(ps *p, int op)
{
	char w[8];
	if (!is_op(cur(p), op)) {
		snprintf(w, sizeof w, "'%c'", op);
		return unexpected(p, w);
	}
	next(p);
	return LOOM_OK;
}

static loom_err expect_type(ps *p, int type, const char *what)
{
	if (cur(p)->type != type)
		return unexpected(p, what);
	next(p);
	return LOOM_OK;
}

static jj_node *mk(ps *p, int kind)
{
	jj_node *n = jj_alloc(p->a, sizeof *n);
	if (n) {
		n->kind = kind;
		n->line = cur(p)->line;
	}
	return n;
}

static loom_err push(ps *p, jj_nodes *v, jj_node *n)
{
	if (!n)
		return ps_oom();
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 4;
		jj_node **nv = jj_alloc(p->a, cap * sizeof *nv);
		if (!nv)
			return ps_oom();
		if (v->n)
			memcpy(nv, v->v, v->n * sizeof *nv);
		v->v = nv;
		v->cap = cap;
	}
	v->v[v->n++] = n;
	return LOOM_OK;
}

static loom_err parse_expr(ps *p, bool condexpr, jj_node **out);
static loom_err parse_tuple(ps *p, int mode, bool explicit_paren, const char *extra_end,
			    jj_node **out);
static loom_err parse_unary(ps *p, bool with_filter, jj_node **out);
static loom_err parse_primary(ps *p, jj_node **out);
static loom_err parse_postfix(ps *p, jj_node **node);

#define ENTER(p)                                                                             \
	do {                                                                                 \
		if (++(p)->depth > JJ_MAX_PARSE_DEPTH)                                       \
			return ps_fail(p, LOOM_EFORMAT, "template nested too deeply");        \
	} while (0)

/* (args, name=kw, ...) after the callee; fills n->args and n->kw. */
static loom_err parse_call_args(ps *p, jj_node *n)
{
	loom_err rc = expect_op(p, '(');
	while (!rc && !is_op(cur(p), ')')) {
		if (n->args.n || n->kw.n) {
			if ((rc = expect_op(p, ',')))
				return rc;
			if (is_op(cur(p), ')'))
				break;
		}
		if (is_op(cur(p), '*'))
			return ps_fail(p, LOOM_EUNSUPPORTED, "unsupported *args/**kwargs in a call");
		jj_node *e;
		if (cur(p)->type == JT_NAME && is_op(peek(p), '=')) {
			jj_node *kw = mk(p, N_KWARG);
			if (!kw)
				return ps_oom();
			kw->name = cur(p)->s;
			kw->name_n = cur(p)->n;
			next(p);
			next(p);
			if ((rc = parse_expr(p, true, &kw->a)) || (rc = push(p, &n->kw, kw)))
				return rc;
		} else {
			if (n->kw.n)
				return ps_fail(p, LOOM_EFORMAT, "invalid syntax for function call expression");
			if ((rc = parse_expr(p, true, &e)) || (rc = push(p, &n->args, e)))
				return rc;
		}
	}
	if (rc)
		return rc;
	return expect_op(p, ')');
}

/* A dotted name (filter and test names may be dotted). */
static loom_err dotted_name(ps *p, const char **s, size_t *n)
{
	if (cur(p)->type != JT_NAME)
		return unexpected(p, "a name");
	*s = cur(p)->s;
	*n = cur(p)->n;
	next(p);
	while (is_op(cur(p), '.') && peek(p)->type == JT_NAME) {
		next(p);
		*n = (size_t)(cur(p)->s + cur(p)->n - *s);
		next(p);
	}
	return LOOM_OK;
}

static loom_err parse_filter(ps *p, jj_node **node)
{
	loom_err rc;
	jj_node *f = mk(p, N_FILTER);
	if (!f)
		return ps_oom();
	next(p); /* | */
	f->line = cur(p)->line;
	if ((rc = dotted_name(p, &f->name, &f->name_n)))
		return rc;
	f->op = jj_filter_id(f->name, f->name_n);
	if (f->op < 0) {
		p->i--;
		return ps_fail(p, LOOM_EUNSUPPORTED, "unsupported filter '%.*s'", (int)f->name_n,
			       f->name);
	}
	f->a = *node;
	if (is_op(cur(p), '(') && (rc = parse_call_args(p, f)))
		return rc;
	*node = f;
	return LOOM_OK;
}

static loom_err parse_test(ps *p, jj_node **node)
{
	loom_err rc;
	bool neg = false;
	jj_node *t = mk(p, N_TEST);
	if (!t)
		return ps_oom();
	next(p); /* is */
	if (is_name(cur(p), "not")) {
		neg = true;
		next(p);
	}
	if ((rc = dotted_name(p, &t->name, &t->name_n)))
		return rc;
	t->op = jj_test_id(t->name, t->name_n);
	if (t->op < 0) {
		p->i--;
		return ps_fail(p, LOOM_EUNSUPPORTED, "unsupported test '%.*s'", (int)t->name_n,
			       t->name);
	}
	t->a = *node;
	const jj_token *c = cur(p);
	if (is_op(c, '(')) {
		if ((rc = parse_call_args(p, t)))
			return rc;
	} else if ((c->type == JT_NAME || c->type == JT_STRING || c->type == JT_INT ||
		    c->type == JT_FLOAT || is_op(c, '[') || is_op(c, '{')) &&
		   !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
		jj_node *arg;
		if (is_name(c, "is"))
			return ps_fail(p, LOOM_EFORMAT, "You cannot chain multiple tests with is");
		if ((rc = parse_primary(p, &arg)) || (rc = parse_postfix(p, &arg)) ||
		    (rc = push(p, &t->args, arg)))
			return rc;
	}
	if (neg) {
		jj_node *n = mk(p, N_NOT);
		if (!n)
			return ps_oom();
		n->a = t;
		t = n;
	}
	*node = t;
	return LOOM_OK;
}

/* Inside [ ]: an expression or a slice. */
static loom_err parse_subscribed(ps *p, jj_node *base, jj_node **out)
{
	loom_err rc;
	jj_node *parts[3] = { NULL, NULL, NULL };
	if (!is_op(cur(p), ':')) {
		if ((rc = parse_expr(p, true, &parts[0])))
			return rc;
		if (!is_op(cur(p), ':')) {
			jj_node *n = mk(p, N_ITEM);
			if (!n)
				return ps_oom();
			n->a = base;
			n->b = parts[0];
			*out = n;
			return LOOM_OK;
		}
	}
	next(p); /* first : */
	if (!is_op(cur(p), ':') && !is_op(cur(p), ']') && !is_op(cur(p), ',') &&
	    (rc = parse_expr(p, true, &parts[1])))
		return rc;
	if (is_op(cur(p), ':')) {
		next(p);
		if (!is_op(cur(p), ']') && !is_op(cur(p), ',') && (rc = parse_expr(p, true, &parts[2])))
			return rc;
	}
	jj_node *n = mk(p, N_SLICE);
	if (!n)
		return ps_oom();
	n->a = base;
	n->b = parts[0];
	n->c = parts[1];
	n->d = parts[2];
	*out = n;
	return LOOM_OK;
}

static loom_err parse_postfix(ps *p, jj_node **node)
{
	loom_err rc;
	for (;;) {
		const jj_token *c = cur(p);
		if (is_op(c, '.')) {
			next(p);
			c = cur(p);
			if (c->type == JT_NAME) {
				jj_node *n = mk(p, N_ATTR);
				if (!n)
					return ps_oom();
				n->a = *node;
				n->name = c->s;
				n->name_n = c->n;
				next(p);
				*node = n;
			} else if (c->type == JT_INT) {
				jj_node *n = mk(p, N_ITEM), *k = mk(p, N_CONST);
				if (!n || !k)
					return ps_oom();
				k->value = jv_int(c->i);
				n->a = *node;
				n->b = k;
				next(p);
				*node = n;
			} else {
				return unexpected(p, "a name or number after '.'");
			}
		} else if (is_op(c, '[')) {
			next(p);
			jj_nodes items = { 0 };
			while (!is_op(cur(p), ']')) {
				jj_node *e = NULL;
				if (items.n && (rc = expect_op(p, ',')))
					return rc;
				if ((rc = parse_subscribed(p, *node, &e)) || (rc = push(p, &items, e)))
					return rc;
			}
			if ((rc = expect_op(p, ']')))
				return rc;
			if (items.n != 1)
				return ps_fail(p, LOOM_EUNSUPPORTED, "unsupported tuple subscript");
			*node = items.v[0];
		} else if (is_op(c, '(')) {
			jj_node *n = mk(p, N_CALL);
			if (!n)
				return ps_oom();
			n->a = *node;
			n->op = -1;
			if ((rc = parse_call_args(p, n)))
				return rc;
			if (n->a->kind == N_ATTR) {
				n->op = jj_method_id(n->a->name, n->a->name_n);
				if (n->op < 0) {
					p->i--;
					return ps_fail(p, LOOM_EUNSUPPORTED, "unsupported method '%.*s'",
						       (int)n->a->name_n, n->a->name);
				}
			} else if (n->a->kind == N_NAME) {
				n->op = jj_func_id(n->a->name, n->a->name_n);
				if (n->op < 0 && (rc = push(p, &p->calls, n)))
					return rc;
			}
			*node = n;
		} else {
			return LOOM_OK;
		}
	}
}

static loom_err parse_seq(ps *p, int kind, int close, jj_node **out)
{
	loom_err rc;
	jj_node *n = mk(p, kind);
	if (!n)
		return ps_oom();
	next(p);
	while (!is_op(cur(p), close)) {
		jj_node *e;
		if (n->args.n) {
			if ((rc = expect_op(p, ',')))
				return rc;
			if (is_op(cur(p), close))
				break;
		}
		if ((rc = parse_expr(p, true, &e)) || (rc = push(p, &n->args, e)))
			return rc;
		if (kind == N_DICT) {
			if ((rc = expect_op(p, ':')) || (rc = parse_expr(p, true, &e)) ||
			    (rc = push(p, &n->kw, e)))
				return rc;
		}
	}
	next(p);
	*out = n;
	return LOOM_OK;
}

static loom_err parse_primary(ps *p, jj_node **out)
{
	const jj_token *c = cur(p);
	loom_err rc;
	jj_node *n;
	ENTER(p);
	if (c->type == JT_NAME) {
		n = mk(p, N_CONST);
		if (!n)
			return ps_oom();
		if (is_name(c, "true") || is_name(c, "True")) {
			n->value = jv_bool(true);
		} else if (is_name(c, "false") || is_name(c, "False")) {
			n->value = jv_bool(false);
		} else if (is_name(c, "none") || is_name(c, "None")) {
			n->value = jv_none();
		} else {
			n->kind = N_NAME;
			n->name = c->s;
			n->name_n = c->n;
		}
		next(p);
	} else if (c->type == JT_STRING) {
		/* adjacent literals concatenate */
		size_t total = 0, k = p->i;
		while (k < p->n && p->t[k].type == JT_STRING)
			total += p->t[k++].n;
		char *s = jj_alloc(p->a, total + 1), *w = s;
		n = mk(p, N_CONST);
		if (!s || !n)
			return ps_oom();
		while (cur(p)->type == JT_STRING) {
			memcpy(w, cur(p)->s, cur(p)->n);
			w += cur(p)->n;
			next(p);
		}
		n->value = jv_str(s, total);
	} else if (c->type == JT_INT || c->type == JT_FLOAT) {
		n = mk(p, N_CONST);
		if (!n)
			return ps_oom();
		n->value = c->type == JT_INT ? jv_int(c->i) : jv_float(c->f);
		next(p);
	} else if (is_op(c, '(')) {
		next(p);
		if ((rc = parse_tuple(p, 0, true, NULL, &n)) || (rc = expect_op(p, ')')))
			return rc;
	} else if (is_op(c, '[')) {
		if ((rc = parse_seq(p, N_LIST, ']', &n)))
			return rc;
	} else if (is_op(c, '{')) {
		if ((rc = parse_seq(p, N_DICT, '}', &n)))
			return rc;
	} else {
		char b[64];
		return ps_fail(p, LOOM_EFORMAT, "unexpected %s", describe(c, b, sizeof b));
	}
	p->depth--;
	*out = n;
	return LOOM_OK;
}

static loom_err parse_unary(ps *p, bool with_filter, jj_node **out)
{
	loom_err rc;
	jj_node *n;
	ENTER(p);
	if (is_op(cur(p), '-') || is_op(cur(p), '+')) {
		n = mk(p, is_op(cur(p), '-') ? N_NEG : N_POS);
		if (!n)
			return ps_oom();
		next(p);
		if ((rc = parse_unary(p, false, &n->a)))
			return rc;
	} else if ((rc = parse_primary(p, &n))) {
		return rc;
	}
	if ((rc = parse_postfix(p, &n)))
		return rc;
	while (with_filter) {
		if (is_op(cur(p), '|'))
			rc = parse_filter(p, &n);
		else if (is_name(cur(p), "is"))
			rc = parse_test(p, &n);
		else if (is_op(cur(p), '('))
			rc = parse_postfix(p, &n);
		else
			break;
		if (rc)
			return rc;
	}
	p->depth--;
	*out = n;
	return LOOM_OK;
}

static loom_err binop(ps *p, int kind, int op, jj_node *l, jj_node *r, jj_node **out)
{
	jj_node *n = mk(p, kind);
	if (!n)
		return ps_oom();
	n->op = op;
	n->a = l;
	n->b = r;
	*out = n;
	return LOOM_OK;
}

/* level 0: pow, 1: * / // %, 2: ~, 3: + - */
static loom_err parse_math(ps *p, int level, jj_node **out)
{
	static const int ops[4][5] = { { JO_POW }, { '*', '/', JO_FLOORDIV, '%' }, { '~' }, { '+', '-' } };
	loom_err rc;
	jj_node *l, *r;
	ENTER(p);
	if ((rc = level ? parse_math(p, level - 1, &l) : parse_unary(p, true, &l)))
		return rc;
	for (;;) {
		int op = 0;
		for (int k = 0; k < 5 && ops[level][k]; k++)
			if (is_op(cur(p), ops[level][k]))
				op = ops[level][k];
		if (!op)
			break;
		next(p);
		if ((rc = level ? parse_math(p, level - 1, &r) : parse_unary(p, true, &r)) ||
		    (rc = binop(p, N_BIN, op, l, r, &l)))
			return rc;
	}
	p->depth--;
	*out = l;
	return LOOM_OK;
}



static loom_err parse_compare(ps *p, jj_node **out)
{
	loom_err rc;
	jj_node *l, *n = NULL;
	if ((rc = parse_math(p, 3, &l)))
		return rc;
	int ops[64], k = 0;
	jj_nodes rhs = { 0 };
	for (;;) {
		const jj_token *c = cur(p);
		int op = 0;
		if (c->type == JT_OP && (c->op == JO_EQ || c->op == JO_NE || c->op == '<' ||
					 c->op == '>' || c->op == JO_LE || c->op == JO_GE)) {
			op = c->op;
			next(p);
		} else if (is_name(c, "in")) {
			op = JJ_CMP_IN;
			next(p);
		} else if (is_name(c, "not") && is_name(peek(p), "in")) {
			op = JJ_CMP_NOTIN;
			next(p);
			next(p);
		} else {
			break;
		}
		jj_node *r;
		if (k == 64)
			return ps_fail(p, LOOM_EFORMAT, "comparison chain too long");
		if ((rc = parse_math(p, 3, &r)) || (rc = push(p, &rhs, r)))
			return rc;
		ops[k++] = op;
	}
	if (!k) {
		*out = l;
		return LOOM_OK;
	}
	n = mk(p, N_CMP);
	if (!n || !(n->ops = jj_alloc(p->a, (size_t)k * sizeof(int))))
		return ps_oom();
	memcpy(n->ops, ops, (size_t)k * sizeof(int));
	n->a = l;
	n->args = rhs;
	*out = n;
	return LOOM_OK;
}

static loom_err parse_not(ps *p, jj_node **out)
{
	loom_err rc;
	ENTER(p);
	if (is_name(cur(p), "not")) {
		jj_node *n = mk(p, N_NOT);
		if (!n)
			return ps_oom();
		next(p);
		if ((rc = parse_not(p, &n->a)))
			return rc;
		*out = n;
	} else if ((rc = parse_compare(p, out))) {
		return rc;
	}
	p->depth--;
	return LOOM_OK;
}

static loom_err parse_andor(ps *p, bool is_or, jj_node **out)
{
	loom_err rc;
	jj_node *l, *r;
	if ((rc = is_or ? parse_andor(p, false, &l) : parse_not(p, &l)))
		return rc;
	while (is_name(cur(p), is_or ? "or" : "and")) {
		next(p);
		if ((rc = is_or ? parse_andor(p, false, &r) : parse_not(p, &r)) ||
		    (rc = binop(p, is_or ? N_OR : N_AND, 0, l, r, &l)))
			return rc;
	}
	*out = l;
	return LOOM_OK;
}

static loom_err parse_expr(ps *p, bool condexpr, jj_node **out)
{
	loom_err rc;
	jj_node *e;
	ENTER(p);
	if ((rc = parse_andor(p, true, &e)))
		return rc;
	while (condexpr && is_name(cur(p), "if")) {
		jj_node *n = mk(p, N_COND);
		if (!n)
			return ps_oom();
		next(p);
		n->b = e;
		if ((rc = parse_andor(p, true, &n->a)))
			return rc;
		if (is_name(cur(p), "else")) {
			next(p);
			if ((rc = parse_expr(p, true, &n->c)))
				return rc;
		}
		e = n;
	}
	p->depth--;
	*out = e;
	return LOOM_OK;
}

static bool tuple_end(ps *p, const char *extra_end)
{
	const jj_token *c = cur(p);
	return c->type == JT_VAR_END || c->type == JT_BLOCK_END || is_op(c, ')') ||
	       c->type == JT_EOF || (extra_end && is_name(c, extra_end));
}

/* mode 0: full expressions, 1: no conditional expressions, 2: primaries (assign targets). */
static loom_err parse_tuple(ps *p, int mode, bool explicit_paren, const char *extra_end,
			    jj_node **out)
{
	loom_err rc;
	jj_node *t = mk(p, N_TUPLE);
	bool is_tuple = false;
	if (!t)
		return ps_oom();
	for (;;) {
		jj_node *e;
		if (t->args.n && (rc = expect_op(p, ',')))
			return rc;
		if (tuple_end(p, extra_end))
			break;
		rc = mode == 2 ? parse_primary(p, &e) : parse_expr(p, mode == 0, &e);
		if (rc || (rc = push(p, &t->args, e)))
			return rc;
		if (is_op(cur(p), ','))
			is_tuple = true;
		else
			break;
	}
	if (!is_tuple) {
		if (t->args.n) {
			*out = t->args.v[0];
			return LOOM_OK;
		}
		if (!explicit_paren)
			return unexpected(p, "an expression");
	}
	*out = t;
	return LOOM_OK;
}

/* ---- statements ---- */

static loom_err parse_body(ps *p, const char *const *ends, jj_nodes *body, int *which);

static loom_err end_block(ps *p)
{
	return expect_type(p, JT_BLOCK_END, "end of statement block");
}

static loom_err check_target(ps *p, jj_node *t)
{
	if (t->kind == N_NAME)
		return LOOM_OK;
	if (t->kind == N_TUPLE) {
		for (size_t i = 0; i < t->args.n; i++)
			if (t->args.v[i]->kind != N_NAME)
				return ps_fail(p, LOOM_EUNSUPPORTED, "unsupported nested assignment target");
		return LOOM_OK;
	}
	return ps_fail(p, LOOM_EFORMAT, "can't assign to this expression");
}

static loom_err parse_for(ps *p, jj_node *n)
{
	static const char *const ends1[] = { "endfor", "else", NULL };
	static const char *const ends2[] = { "endfor", NULL };
	loom_err rc;
	int which;
	if ((rc = parse_tuple(p, 2, false, "in", &n->b)) || (rc = check_target(p, n->b)))
		return rc;
	if (!is_name(cur(p), "in"))
		return unexpected(p, "'in'");
	next(p);
	if ((rc = parse_tuple(p, 1, false, "recursive", &n->a)))
		return rc;
	if (is_name(cur(p), "if")) {
		next(p);
		if ((rc = parse_expr(p, true, &n->c)))
			return rc;
	}
	if (is_name(cur(p), "recursive"))
		return ps_fail(p, LOOM_EUNSUPPORTED, "unsupported recursive for loop");
	if ((rc = end_block(p)) || (rc = parse_body(p, ends1, &n->body, &which)))
		return rc;
	if (which == 1) {
		next(p);
		if ((rc = end_block(p)) || (rc = parse_body(p, ends2, &n->orelse, &which)))
			return rc;
	}
	next(p);
	return end_block(p);
}

static loom_err parse_if(ps *p, jj_node *n)
{
	static const char *const ends[] = { "elif", "else", "endif", NULL };
	static const char *const ends2[] = { "endif", NULL };
	loom_err rc;
	int which;
	if ((rc = parse_tuple(p, 1, false, NULL, &n->a)) || (rc = end_block(p)) ||
	    (rc = parse_body(p, ends, &n->body, &which)))
		return rc;
	if (which == 0) { /* elif: a nested if in orelse */
		jj_node *e = mk(p, N_IF);
		next(p);
		if ((rc = push(p, &n->orelse, e)))
			return rc;
		return parse_if(p, e);
	}
	if (which == 1) {
		next(p);
		if ((rc = end_block(p)) || (rc = parse_body(p, ends2, &n->orelse, &which)))
			return rc;
	}
	next(p);
	return end_block(p);
}

static loom_err parse_set(ps *p, jj_node *n)
{
	static const char *const ends[] = { "endset", NULL };
	loom_err rc;
	int which;
	if (cur(p)->type == JT_NAME && is_op(peek(p), '.')) {
		n->b = mk(p, N_ATTR);
		jj_node *base = mk(p, N_NAME);
		if (!n->b || !base)
			return ps_oom();
		base->name = cur(p)->s;
		base->name_n = cur(p)->n;
		next(p);
		next(p);
		if (cur(p)->type != JT_NAME)
			return unexpected(p, "a name");
		n->b->a = base;
		n->b->name = cur(p)->s;
		n->b->name_n = cur(p)->n;
		next(p);
	} else if ((rc = parse_tuple(p, 2, false, NULL, &n->b)) || (rc = check_target(p, n->b))) {
		return rc;
	}
	if (is_op(cur(p), '=')) {
		next(p);
		if ((rc = parse_tuple(p, 0, false, NULL, &n->a)))
			return rc;
		return end_block(p);
	}
	if (n->b->kind != N_NAME)
		return unexpected(p, "'='");
	if (is_op(cur(p), '|'))
		return ps_fail(p, LOOM_EUNSUPPORTED, "unsupported filter on a set block");
	n->kind = N_SETBLOCK;
	if ((rc = end_block(p)) || (rc = parse_body(p, ends, &n->body, &which)))
		return rc;
	next(p);
	return end_block(p);
}

static loom_err parse_macro(ps *p, jj_node *n)
{
	static const char *const ends[] = { "endmacro", NULL };
	loom_err rc;
	int which;
	if (cur(p)->type != JT_NAME)
		return unexpected(p, "a macro name");
	n->name = cur(p)->s;
	n->name_n = cur(p)->n;
	next(p);
	if ((rc = expect_op(p, '(')))
		return rc;
	while (!is_op(cur(p), ')')) {
		if (n->args.n && (rc = expect_op(p, ',')))
			return rc;
		if (cur(p)->type != JT_NAME)
			return unexpected(p, "a parameter name");
		jj_node *prm = mk(p, N_NAME), *def = NULL;
		if (!prm)
			return ps_oom();
		prm->name = cur(p)->s;
		prm->name_n = cur(p)->n;
		next(p);
		if (is_op(cur(p), '=')) {
			next(p);
			if ((rc = parse_expr(p, true, &def)))
				return rc;
		} else if (n->kw.n && n->kw.v[n->kw.n - 1]->kind != N_KWARG) {
			return ps_fail(p, LOOM_EFORMAT, "non-default argument follows default argument");
		}
		if ((rc = push(p, &n->args, prm)))
			return rc;
		if (!def) { /* a NULL default: push through the vector by hand */
			def = mk(p, N_NAME);
			if (!def)
				return ps_oom();
			def->kind = N_KWARG; /* marks "no default" */
		}
		if ((rc = push(p, &n->kw, def)))
			return rc;
	}
	next(p);
	if ((rc = end_block(p)) || (rc = parse_body(p, ends, &n->body, &which)))
		return rc;
	next(p);
	if ((rc = end_block(p)))
		return rc;
	return push(p, &p->macros, n);
}

static loom_err parse_statement(ps *p, jj_node **out)
{
	static const char *const unsupported[] = { "call",   "filter",	   "with",  "include",
						   "import", "from",	   "extends", "block",
						   "autoescape", "do",	   "print", NULL };
	const jj_token *c = cur(p);
	loom_err rc;
	jj_node *n = mk(p, N_TEXT);
	if (!n)
		return ps_oom();
	if (c->type != JT_NAME)
		return unexpected(p, "a tag name");
	next(p);
	ENTER(p);
	if (is_name(c, "for")) {
		n->kind = N_FOR;
		rc = parse_for(p, n);
	} else if (is_name(c, "if")) {
		n->kind = N_IF;
		rc = parse_if(p, n);
	} else if (is_name(c, "set")) {
		n->kind = N_SET;
		rc = parse_set(p, n);
	} else if (is_name(c, "macro")) {
		n->kind = N_MACRO;
		rc = parse_macro(p, n);
	} else if (is_name(c, "break") || is_name(c, "continue")) {
		n->kind = is_name(c, "break") ? N_BREAK : N_CONTINUE;
		rc = end_block(p);
	} else {
		p->i--;
		for (int k = 0; unsupported[k]; k++)
			if (is_name(c, unsupported[k]))
				return ps_fail(p, LOOM_EUNSUPPORTED, "unsupported tag '%s'", unsupported[k]);
		return ps_fail(p, LOOM_EFORMAT, "unknown tag '%.*s'", (int)(c->n > 40 ? 40 : c->n),
			       c->s);
	}
	p->depth--;
	*out = n;
	return rc;
}

/*
 * Statements up to a block tag named in ends (NULL-terminated; NULL = up to
 * the end of the template). Leaves the tag name current, *which its index.
 */
static loom_err parse_body(ps *p, const char *const *ends, jj_nodes *body, int *which)
{
	loom_err rc;
	for (;;) {
		const jj_token *c = cur(p);
		jj_node *n = NULL;
		if (c->type == JT_EOF) {
			if (!ends)
				return LOOM_OK;
			return ps_fail(p, LOOM_EFORMAT,
				       "unexpected end of template; looking for the tag '%s'", ends[0]);
		}
		if (c->type == JT_DATA) {
			if (!(n = mk(p, N_TEXT)))
				return ps_oom();
			n->value = jv_str(c->s, c->n);
			next(p);
		} else if (c->type == JT_VAR_BEGIN) {
			next(p);
			if (!(n = mk(p, N_OUTPUT)))
				return ps_oom();
			if ((rc = parse_tuple(p, 0, false, NULL, &n->a)) ||
			    (rc = expect_type(p, JT_VAR_END, "end of print statement")))
				return rc;
		} else if (c->type == JT_BLOCK_BEGIN) {
			next(p);
			for (int k = 0; ends && ends[k]; k++)
				if (is_name(cur(p), ends[k])) {
					*which = k;
					return LOOM_OK;
				}
			const jj_token *t = cur(p);
			if (t->type == JT_NAME && t->n >= 3 &&
			    (memcmp(t->s, "end", 3) == 0 || is_name(t, "else") || is_name(t, "elif")))
				return ps_fail(p, LOOM_EFORMAT, "unexpected tag '%.*s'%s%s%s",
					       (int)(t->n > 40 ? 40 : t->n), t->s,
					       ends ? "; looking for '" : "", ends ? ends[0] : "",
					       ends ? "'" : "");
			if ((rc = parse_statement(p, &n)))
				return rc;
		} else {
			return unexpected(p, "template data or a tag");
		}
		if ((rc = push(p, body, n)))
			return rc;
	}
}

loom_err jj_parse(jj_toks *toks, jj_arena *a, jj_node **root)
{
	ps p = { .t = toks->v, .n = toks->n, .a = a };
	loom_err rc;
	jj_node *r = jj_alloc(a, sizeof *r);
	if (!r)
		return ps_oom();
	if ((rc = parse_body(&p, NULL, &r->body, NULL)))
		return rc;
	/* calls of plain names: a macro of this template or refused */
	for (size_t i = 0; i < p.calls.n; i++) {
		const jj_node *c = p.calls.v[i];
		bool found = false;
		for (size_t m = 0; m < p.macros.n && !found; m++)
			found = p.macros.v[m]->name_n == c->a->name_n &&
				memcmp(p.macros.v[m]->name, c->a->name, c->a->name_n) == 0;
		if (!found)
			return loom_fail(LOOM_EUNSUPPORTED, "chat template line %d: unsupported function '%.*s'",
					 c->line, (int)c->a->name_n, c->a->name);
	}
	*root = r;
	return LOOM_OK;
}
