/*
 * common/jinja_eval.c — compiling (lex + parse) and rendering: statements,
 * expressions, scopes, attribute and item access, operators and calls.
 *
 * Scopes follow jinja2's: the template's top level is one frame (the
 * context's keys, then what top-level `set`s assign); every iteration of a
 * for loop gets a fresh child frame, so a `set` inside a loop is gone when
 * the iteration ends (templates carry state out through namespace());
 * `if` opens no scope; a macro call runs in a frame whose parent is the top
 * level. Each evaluated node costs one step of JJ_MAX_STEPS. Operators
 * and slicing are in jinja_ops.c.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jinja_int.h"

loom_err jj_err(jj_rs *rs, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return loom_fail(LOOM_EINVAL, "chat template line %d: %s", rs->line, msg);
}

loom_err jj_oom(jj_rs *rs)
{
	if (rs->arena.over)
		return jj_err(rs, "rendering needs more than %zu MiB", rs->arena.limit >> 20);
	return loom_fail(LOOM_ENOMEM, "chat template: out of memory");
}

/* ---- frames ---- */

static jj_frame *frame_new(jj_rs *rs, jj_frame *parent)
{
	jj_frame *f = jj_alloc(&rs->arena, sizeof *f);
	if (f)
		f->parent = parent;
	return f;
}

static loom_err frame_set(jj_rs *rs, jj_frame *f, const char *name, size_t n, const jv *v)
{
	for (size_t i = 0; i < f->n; i++)
		if (f->name_n[i] == n && memcmp(f->names[i], name, n) == 0) {
			f->vals[i] = *v;
			return LOOM_OK;
		}
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : 4;
		const char **names = jj_alloc(&rs->arena, cap * sizeof *names);
		size_t *nn = jj_alloc(&rs->arena, cap * sizeof *nn);
		jv *vals = jj_alloc(&rs->arena, cap * sizeof *vals);
		if (!names || !nn || !vals)
			return jj_oom(rs);
		if (f->n) {
			memcpy(names, f->names, f->n * sizeof *names);
			memcpy(nn, f->name_n, f->n * sizeof *nn);
			memcpy(vals, f->vals, f->n * sizeof *vals);
		}
		f->names = names;
		f->name_n = nn;
		f->vals = vals;
		f->cap = cap;
	}
	f->names[f->n] = name;
	f->name_n[f->n] = n;
	f->vals[f->n++] = *v;
	return LOOM_OK;
}

static const jv *frame_get(const jj_frame *f, const char *name, size_t n)
{
	for (; f; f = f->parent)
		for (size_t i = f->n; i-- > 0;)
			if (f->name_n[i] == n && memcmp(f->names[i], name, n) == 0)
				return &f->vals[i];
	return NULL;
}

const char *jj_hint(jj_rs *rs, const char *fmt, ...)
{
	char msg[200];
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (k < 0)
		k = 0;
	const char *s = jj_strdup(&rs->arena, msg, (size_t)k < sizeof msg ? (size_t)k : sizeof msg - 1);
	return s ? s : "undefined value";
}

static loom_err lookup(jj_rs *rs, jj_frame *f, const char *name, size_t n, jv *out)
{
	const jv *v = frame_get(f, name, n);
	int id;
	if (v) {
		*out = *v;
		return LOOM_OK;
	}
	if ((id = jj_func_id(name, n)) >= 0) {
		*out = (jv){ .t = JV_FUNC };
		out->i = id;
		return LOOM_OK;
	}
	*out = jv_undef(jj_hint(rs, "'%.*s' is undefined", (int)(n > 60 ? 60 : n), name));
	return LOOM_OK;
}

loom_err jj_undefined_err(jj_rs *rs, const jv *v)
{
	return jj_err(rs, "%s", v->s ? v->s : "undefined value");
}

/* ---- attributes and items ---- */

const char *jj_obj_repr(const jv *v)
{
	switch (v->t) {
	case JV_NONE: return "None";
	case JV_STR: return "str object";
	case JV_LIST: return v->l->tuple ? "tuple object" : "list object";
	case JV_DICT: return "dict object";
	case JV_INT: return "int object";
	case JV_FLOAT: return "float object";
	case JV_BOOL: return "bool object";
	default: return "object";
	}
}

static loom_err loop_attr(jj_rs *rs, const jj_loop *l, const char *name, size_t n, jv *out)
{
#define IS(w) (n == sizeof(w) - 1 && memcmp(name, w, n) == 0)
	int64_t i = (int64_t)l->i, len = (int64_t)l->n;
	if (IS("index"))
		*out = jv_int(i + 1);
	else if (IS("index0"))
		*out = jv_int(i);
	else if (IS("revindex"))
		*out = jv_int(len - i);
	else if (IS("revindex0"))
		*out = jv_int(len - i - 1);
	else if (IS("first"))
		*out = jv_bool(i == 0);
	else if (IS("last"))
		*out = jv_bool(i == len - 1);
	else if (IS("length"))
		*out = jv_int(len);
	else if (IS("depth"))
		*out = jv_int((int64_t)l->depth);
	else if (IS("depth0"))
		*out = jv_int((int64_t)l->depth - 1);
	else if (IS("previtem"))
		*out = i > 0 ? l->items[i - 1] : jv_undef("there is no previous item");
	else if (IS("nextitem"))
		*out = i + 1 < len ? l->items[i + 1] : jv_undef("there is no next item");
	else
		*out = jv_undef(jj_hint(rs, "'LoopContext object' has no attribute '%.*s'",
				     (int)(n > 60 ? 60 : n), name));
	return LOOM_OK;
#undef IS
}

loom_err jj_getattr(jj_rs *rs, const jv *obj, const char *name, size_t n, jv *out)
{
	int id;
	const jv *v;
	if (obj->t == JV_UNDEF)
		return jj_undefined_err(rs, obj);
	if (obj->t == JV_LOOP)
		return loop_attr(rs, obj->loop, name, n, out);
	if (n && name[0] == '_') {
		*out = jv_undef(jj_hint(rs, "access to attribute '%.*s' of '%s' object is unsafe.",
				     (int)(n > 60 ? 60 : n), name, jv_type_name(obj)));
		return LOOM_OK;
	}
	if ((obj->t == JV_STR || obj->t == JV_DICT || obj->t == JV_LIST) &&
	    (id = jj_method_id(name, n)) >= 0) {
		jv_method *m = jj_alloc(&rs->arena, sizeof *m);
		if (!m)
			return jj_oom(rs);
		m->obj = *obj;
		m->id = id;
		/* a method only some types have falls through to item lookup below */
		if (obj->t != JV_DICT || !jv_dict_gets(obj->d, name, n) || jj_method_id(name, n) >= 0) {
			out->t = JV_METHOD;
			out->safe = false;
			out->m = m;
			return LOOM_OK;
		}
	}
	if ((obj->t == JV_DICT || obj->t == JV_NS) && (v = jv_dict_gets(obj->d, name, n))) {
		*out = *v;
		return LOOM_OK;
	}
	*out = jv_undef(jj_hint(rs, "'%s' has no attribute '%.*s'", jj_obj_repr(obj),
			     (int)(n > 60 ? 60 : n), name));
	return LOOM_OK;
}

loom_err jj_getitem(jj_rs *rs, const jv *obj, const jv *key, jv *out)
{
	if (obj->t == JV_UNDEF)
		return jj_undefined_err(rs, obj);
	if (obj->t == JV_DICT || obj->t == JV_NS) {
		const jv *v = jv_dict_get(obj->d, key);
		if (v) {
			*out = *v;
			return LOOM_OK;
		}
	} else if ((obj->t == JV_LIST || obj->t == JV_STR) &&
		   (key->t == JV_INT || key->t == JV_BOOL)) {
		int64_t i = key->t == JV_INT ? key->i : key->b;
		int64_t len = obj->t == JV_LIST ? (int64_t)obj->l->n
						: (int64_t)jj_utf8_len(obj->s, obj->n);
		if (i < 0)
			i += len;
		if (i >= 0 && i < len) {
			if (obj->t == JV_LIST) {
				*out = obj->l->v[i];
			} else {
				size_t off = jj_utf8_off(obj->s, obj->n, (size_t)i), adv;
				jj_utf8_dec(obj->s + off, obj->n - off, &adv);
				*out = jv_str(obj->s + off, adv);
			}
			return LOOM_OK;
		}
		*out = jv_undef(jj_hint(rs, "'%s' has no element %lld", jj_obj_repr(obj),
				     (long long)(key->t == JV_INT ? key->i : key->b)));
		return LOOM_OK;
	}
	if (key->t == JV_STR && obj->t != JV_DICT && obj->t != JV_NS)
		return jj_getattr(rs, obj, key->s, key->n, out);
	if (key->t == JV_STR && obj->t == JV_DICT && jj_method_id(key->s, key->n) >= 0)
		return jj_getattr(rs, obj, key->s, key->n, out);
	jj_buf b = { 0 };
	loom_err rc = jv_repr_buf(rs, key, &b, 0);
	if (!rc)
		*out = jv_undef(jj_hint(rs, "'%s' has no attribute %.80s", jj_obj_repr(obj), b.p ? b.p : ""));
	jj_buf_fini(&b);
	return rc;
}

static bool numeric(const jv *v) { return v->t == JV_INT || v->t == JV_FLOAT || v->t == JV_BOOL; }
static int64_t inum(const jv *v) { return v->t == JV_INT ? v->i : v->b; }

/* ---- calls ---- */

typedef struct evargs {
	jv pos[16];
	const char *kwn[16];
	jv kw[16];
	size_t n_pos, n_kw;
	char names[16][64];
} evargs;

static loom_err eval_args(jj_rs *rs, jj_frame *f, const jj_node *n, evargs *ea)
{
	loom_err rc;
	if (n->args.n > 16 || n->kw.n > 16)
		return jj_err(rs, "too many arguments (at most 16)");
	ea->n_pos = n->args.n;
	ea->n_kw = n->kw.n;
	for (size_t i = 0; i < n->args.n; i++)
		if ((rc = jj_eval(rs, f, n->args.v[i], &ea->pos[i])))
			return rc;
	for (size_t i = 0; i < n->kw.n; i++) {
		const jj_node *k = n->kw.v[i];
		size_t len = k->name_n < 63 ? k->name_n : 63;
		memcpy(ea->names[i], k->name, len);
		ea->names[i][len] = '\0';
		ea->kwn[i] = ea->names[i];
		if ((rc = jj_eval(rs, f, k->a, &ea->kw[i])))
			return rc;
	}
	return LOOM_OK;
}

static loom_err exec_body(jj_rs *rs, jj_frame *f, const jj_nodes *body, int *ctl);

static loom_err call_macro(jj_rs *rs, const jj_node *m, const jj_args *a, jv *out)
{
	loom_err rc;
	jj_buf buf = { .limit = LOOM_JINJA_MAX_OUTPUT }, *saved = rs->out;
	jj_frame *f = frame_new(rs, rs->root);
	int ctl = 0;
	if (!f)
		return jj_oom(rs);
	if (rs->call_depth >= JJ_MAX_CALL_DEPTH)
		return jj_err(rs, "macro calls nested deeper than %d", JJ_MAX_CALL_DEPTH);
	if (a->n_pos > m->args.n)
		return jj_err(rs, "macro '%.*s' takes not more than %zu argument(s)", (int)m->name_n,
			      m->name, m->args.n);
	for (size_t k = 0; k < a->n_kw; k++) {
		bool ok = false;
		for (size_t i = 0; i < m->args.n && !ok; i++)
			ok = strlen(a->kw_names[k]) == m->args.v[i]->name_n &&
			     !memcmp(a->kw_names[k], m->args.v[i]->name, m->args.v[i]->name_n);
		if (!ok)
			return jj_err(rs, "macro '%.*s' takes no keyword argument '%s'", (int)m->name_n,
				      m->name, a->kw_names[k]);
	}
	for (size_t i = 0; i < m->args.n; i++) {
		const jj_node *prm = m->args.v[i], *def = m->kw.v[i];
		jv v;
		const jv *given = i < a->n_pos ? &a->pos[i] : NULL;
		for (size_t k = 0; k < a->n_kw && !given; k++)
			if (strlen(a->kw_names[k]) == prm->name_n &&
			    !memcmp(a->kw_names[k], prm->name, prm->name_n))
				given = &a->kw[k];
		if (given)
			v = *given;
		else if (def->kind != N_KWARG) {
			if ((rc = jj_eval(rs, f, def, &v)))
				return rc;
		} else
			v = jv_undef(jj_hint(rs, "parameter '%.*s' was not provided", (int)prm->name_n,
					  prm->name));
		if ((rc = frame_set(rs, f, prm->name, prm->name_n, &v)))
			return rc;
	}
	rs->call_depth++;
	rs->out = &buf;
	rc = exec_body(rs, f, &m->body, &ctl);
	rs->out = saved;
	rs->call_depth--;
	if (!rc) {
		char *s = jj_strdup(&rs->arena, buf.p ? buf.p : "", buf.n);
		if (!s)
			rc = jj_oom(rs);
		else {
			*out = jv_str(s, buf.n);
			out->safe = true;
		}
	}
	jj_buf_fini(&buf);
	return rc;
}

loom_err jj_call_value(jj_rs *rs, jj_frame *f, const jv *fn, const jv *args, size_t n_args,
		       const char *const *kw_names, const jv *kw_vals, size_t n_kw, jv *out)
{
	(void)f;
	jj_args a = { args, n_args, kw_names, kw_vals, n_kw };
	switch (fn->t) {
	case JV_MACRO: return call_macro(rs, fn->macro, &a, out);
	case JV_FUNC: return jj_call_func(rs, (int)fn->i, &a, out);
	case JV_METHOD: return jj_call_method(rs, &fn->m->obj, fn->m->id, NULL, &a, out);
	case JV_UNDEF: return jj_undefined_err(rs, fn);
	default: return jj_err(rs, "'%s' object is not callable", jv_type_name(fn));
	}
}

static loom_err eval_call(jj_rs *rs, jj_frame *f, const jj_node *n, jv *out)
{
	evargs ea;
	jv fn, obj;
	loom_err rc;
	if (n->a->kind == N_ATTR && n->op >= 0) {
		if ((rc = jj_eval(rs, f, n->a->a, &obj)))
			return rc;
		if (obj.t == JV_UNDEF)
			return jj_undefined_err(rs, &obj);
		if (obj.t == JV_STR || obj.t == JV_DICT || obj.t == JV_LIST || obj.t == JV_LOOP) {
			if ((rc = eval_args(rs, f, n, &ea)))
				return rc;
			jj_args a = { ea.pos, ea.n_pos, ea.kwn, ea.kw, ea.n_kw };
			return jj_call_method(rs, &obj, n->op, n->a->name, &a, out);
		}
		if ((rc = jj_getattr(rs, &obj, n->a->name, n->a->name_n, &fn)))
			return rc;
	} else if ((rc = jj_eval(rs, f, n->a, &fn))) {
		return rc;
	}
	if ((rc = eval_args(rs, f, n, &ea)))
		return rc;
	return jj_call_value(rs, f, &fn, ea.pos, ea.n_pos, ea.kwn, ea.kw, ea.n_kw, out);
}

/* ---- expressions ---- */

static loom_err eval_seq(jj_rs *rs, jj_frame *f, const jj_nodes *v, jv **out)
{
	loom_err rc;
	*out = v->n ? jj_alloc(&rs->arena, v->n * sizeof **out) : NULL;
	if (v->n && !*out)
		return jj_oom(rs);
	for (size_t i = 0; i < v->n; i++)
		if ((rc = jj_eval(rs, f, v->v[i], &(*out)[i])))
			return rc;
	return LOOM_OK;
}

loom_err jj_eval(jj_rs *rs, jj_frame *f, const jj_node *n, jv *out)
{
	loom_err rc;
	jv a, b;
	jv *items;
	if (++rs->steps > JJ_MAX_STEPS)
		return jj_err(rs, "template ran more than %llu steps", (unsigned long long)JJ_MAX_STEPS);
	rs->line = n->line;
	switch (n->kind) {
	case N_CONST:
		*out = n->value;
		return LOOM_OK;
	case N_NAME:
		return lookup(rs, f, n->name, n->name_n, out);
	case N_LIST:
	case N_TUPLE:
		if ((rc = eval_seq(rs, f, &n->args, &items)))
			return rc;
		return jv_make_list(rs, items, n->args.n, n->kind == N_TUPLE, out);
	case N_DICT: {
		jv *keys, *vals;
		jv_dict *d = jj_alloc(&rs->arena, sizeof *d);
		if (!d)
			return jj_oom(rs);
		if ((rc = eval_seq(rs, f, &n->args, &keys)) || (rc = eval_seq(rs, f, &n->kw, &vals)))
			return rc;
		d->k = keys;
		d->v = vals;
		for (size_t i = 0; i < n->args.n; i++) {
			if (keys[i].t == JV_LIST && !keys[i].l->tuple)
				return jj_err(rs, "unhashable type: 'list'");
			if (keys[i].t == JV_DICT || keys[i].t == JV_UNDEF)
				return jj_err(rs, "unhashable type: '%s'", jv_type_name(&keys[i]));
			size_t j = 0;
			while (j < d->n && !jv_equal(&d->k[j], &keys[i], 0))
				j++;
			if (j < d->n) {
				d->v[j] = vals[i];
			} else {
				d->k[d->n] = keys[i];
				d->v[d->n++] = vals[i];
			}
		}
		d->cap = d->n;
		*out = (jv){ .t = JV_DICT };
		out->d = d;
		return LOOM_OK;
	}
	case N_ATTR:
		if ((rc = jj_eval(rs, f, n->a, &a)))
			return rc;
		rs->line = n->line;
		return jj_getattr(rs, &a, n->name, n->name_n, out);
	case N_ITEM:
		if ((rc = jj_eval(rs, f, n->a, &a)) || (rc = jj_eval(rs, f, n->b, &b)))
			return rc;
		rs->line = n->line;
		return jj_getitem(rs, &a, &b, out);
	case N_SLICE: {
		jv lo, hi, st;
		if ((rc = jj_eval(rs, f, n->a, &a)) || (n->b && (rc = jj_eval(rs, f, n->b, &lo))) ||
		    (n->c && (rc = jj_eval(rs, f, n->c, &hi))) ||
		    (n->d && (rc = jj_eval(rs, f, n->d, &st))))
			return rc;
		rs->line = n->line;
		return jj_slice(rs, &a, n->b ? &lo : NULL, n->c ? &hi : NULL, n->d ? &st : NULL, out);
	}
	case N_CALL:
		rc = eval_call(rs, f, n, out);
		return rc;
	case N_FILTER:
	case N_TEST: {
		evargs ea;
		if ((rc = jj_eval(rs, f, n->a, &a)) || (rc = eval_args(rs, f, n, &ea)))
			return rc;
		rs->line = n->line;
		jj_args args = { ea.pos, ea.n_pos, ea.kwn, ea.kw, ea.n_kw };
		if (n->kind == N_FILTER)
			return jj_apply_filter(rs, f, n->op, &a, &args, out);
		bool r;
		if ((rc = jj_apply_test(rs, f, n->op, &a, &args, &r)))
			return rc;
		*out = jv_bool(r);
		return LOOM_OK;
	}
	case N_NOT:
		if ((rc = jj_eval(rs, f, n->a, &a)))
			return rc;
		*out = jv_bool(!jv_truthy(&a));
		return LOOM_OK;
	case N_NEG:
	case N_POS:
		if ((rc = jj_eval(rs, f, n->a, &a)))
			return rc;
		rs->line = n->line;
		if (a.t == JV_UNDEF)
			return jj_undefined_err(rs, &a);
		if (!numeric(&a))
			return jj_err(rs, "bad operand type for unary %c: '%s'", n->kind == N_NEG ? '-' : '+',
				      jv_type_name(&a));
		if (n->kind == N_POS)
			*out = a.t == JV_BOOL ? jv_int(a.b) : a;
		else if (a.t == JV_FLOAT)
			*out = jv_float(-a.f);
		else if (inum(&a) == INT64_MIN)
			return jj_err(rs, "integer overflow");
		else
			*out = jv_int(-inum(&a));
		return LOOM_OK;
	case N_BIN:
		if ((rc = jj_eval(rs, f, n->a, &a)) || (rc = jj_eval(rs, f, n->b, &b)))
			return rc;
		rs->line = n->line;
		return jj_binary(rs, n->op, &a, &b, out);
	case N_AND:
	case N_OR:
		if ((rc = jj_eval(rs, f, n->a, &a)))
			return rc;
		if (jv_truthy(&a) == (n->kind == N_OR)) {
			*out = a;
			return LOOM_OK;
		}
		return jj_eval(rs, f, n->b, out);
	case N_CMP: {
		if ((rc = jj_eval(rs, f, n->a, &a)))
			return rc;
		for (size_t i = 0; i < n->args.n; i++) {
			bool r;
			if ((rc = jj_eval(rs, f, n->args.v[i], &b)))
				return rc;
			rs->line = n->line;
			if ((rc = jj_compare(rs, n->ops[i], &a, &b, &r)))
				return rc;
			if (!r) {
				*out = jv_bool(false);
				return LOOM_OK;
			}
			a = b;
		}
		*out = jv_bool(true);
		return LOOM_OK;
	}
	case N_COND:
		if ((rc = jj_eval(rs, f, n->a, &a)))
			return rc;
		if (jv_truthy(&a))
			return jj_eval(rs, f, n->b, out);
		if (n->c)
			return jj_eval(rs, f, n->c, out);
		*out = jv_undef("the inline if-expression evaluated to false and no else section was defined.");
		return LOOM_OK;
	default:
		return jj_err(rs, "internal: node kind %d is not an expression", n->kind);
	}
}

/* ---- statements ---- */

static loom_err assign(jj_rs *rs, jj_frame *f, const jj_node *target, const jv *v)
{
	if (target->kind == N_NAME)
		return frame_set(rs, f, target->name, target->name_n, v);
	const jv *items;
	size_t n;
	loom_err rc;
	if (v->t == JV_UNDEF)
		return jj_undefined_err(rs, v);
	if ((rc = jv_iterate(rs, v, &items, &n)))
		return rc;
	if (n != target->args.n)
		return jj_err(rs, "%s values to unpack (expected %zu, got %zu)",
			      n < target->args.n ? "not enough" : "too many", target->args.n, n);
	for (size_t i = 0; i < n; i++)
		if ((rc = frame_set(rs, f, target->args.v[i]->name, target->args.v[i]->name_n, &items[i])))
			return rc;
	return LOOM_OK;
}

static loom_err exec_for(jj_rs *rs, jj_frame *f, const jj_node *n)
{
	jv seq;
	const jv *items;
	size_t count;
	loom_err rc;
	if ((rc = jj_eval(rs, f, n->a, &seq)))
		return rc;
	rs->line = n->line;
	if (seq.t == JV_NONE)
		return jj_err(rs, "'NoneType' object is not iterable");
	if ((rc = jv_iterate(rs, &seq, &items, &count)))
		return rc;
	if (n->c && count) { /* for x in y if cond: filter first (loop.length counts the kept) */
		jv *kept = jj_alloc(&rs->arena, count * sizeof *kept);
		size_t k = 0;
		if (!kept)
			return jj_oom(rs);
		jj_frame *tf = frame_new(rs, f);
		if (!tf)
			return jj_oom(rs);
		for (size_t i = 0; i < count; i++) {
			jv c;
			tf->n = 0; /* nothing keeps a frame after its iteration: reuse it */
			if ((rc = assign(rs, tf, n->b, &items[i])) || (rc = jj_eval(rs, tf, n->c, &c)))
				return rc;
			if (jv_truthy(&c))
				kept[k++] = items[i];
		}
		items = kept;
		count = k;
	}
	jj_loop *loop = jj_alloc(&rs->arena, sizeof *loop);
	if (!loop)
		return jj_oom(rs);
	const jv *outer = frame_get(f, "loop", 4);
	loop->items = items;
	loop->n = count;
	loop->depth = outer && outer->t == JV_LOOP ? outer->loop->depth + 1 : 1;
	jv lv = { .t = JV_LOOP };
	lv.loop = loop;
	jj_frame *it = frame_new(rs, f);
	if (!it)
		return jj_oom(rs);
	for (size_t i = 0; i < count; i++) {
		int ctl = 0;
		it->n = 0; /* each iteration starts with an empty scope, in the same memory */
		if (++rs->steps > JJ_MAX_STEPS)
			return jj_err(rs, "template ran more than %llu steps",
				      (unsigned long long)JJ_MAX_STEPS);
		loop->i = i;
		if ((rc = frame_set(rs, it, "loop", 4, &lv)) || (rc = assign(rs, it, n->b, &items[i])) ||
		    (rc = exec_body(rs, it, &n->body, &ctl)))
			return rc;
		if (ctl == 1)
			break;
	}
	if (!count && n->orelse.n) {
		int ctl = 0;
		return exec_body(rs, it, &n->orelse, &ctl);
	}
	return LOOM_OK;
}

static loom_err exec_body(jj_rs *rs, jj_frame *f, const jj_nodes *body, int *ctl)
{
	loom_err rc = LOOM_OK;
	jv v;
	for (size_t i = 0; i < body->n && !rc && !*ctl; i++) {
		const jj_node *n = body->v[i];
		rs->line = n->line;
		if (++rs->steps > JJ_MAX_STEPS)
			return jj_err(rs, "template ran more than %llu steps",
				      (unsigned long long)JJ_MAX_STEPS);
		switch (n->kind) {
		case N_TEXT:
			rc = jj_buf_put(rs->out, n->value.s, n->value.n);
			break;
		case N_OUTPUT:
			if (!(rc = jj_eval(rs, f, n->a, &v)))
				rc = jv_to_str_buf(rs, &v, rs->out);
			break;
		case N_IF:
			if (!(rc = jj_eval(rs, f, n->a, &v)))
				rc = exec_body(rs, f, jv_truthy(&v) ? &n->body : &n->orelse, ctl);
			break;
		case N_FOR:
			rc = exec_for(rs, f, n);
			break;
		case N_SET:
			if ((rc = jj_eval(rs, f, n->a, &v)))
				break;
			rs->line = n->line;
			if (n->b->kind == N_ATTR) {
				const jv *ns = frame_get(f, n->b->a->name, n->b->a->name_n);
				if (!ns || ns->t != JV_NS)
					rc = jj_err(rs, "cannot assign attribute on non-namespace object");
				else
					rc = jv_ns_set(rs, ns->d, n->b->name, n->b->name_n, &v);
			} else {
				rc = assign(rs, f, n->b, &v);
			}
			break;
		case N_SETBLOCK: {
			jj_buf buf = { .limit = LOOM_JINJA_MAX_OUTPUT }, *saved = rs->out;
			int c2 = 0;
			rs->out = &buf;
			rc = exec_body(rs, f, &n->body, &c2);
			rs->out = saved;
			if (!rc) {
				char *s = jj_strdup(&rs->arena, buf.p ? buf.p : "", buf.n);
				if (!s) {
					rc = jj_oom(rs);
				} else {
					v = jv_str(s, buf.n);
					v.safe = true;
					rc = assign(rs, f, n->b, &v);
				}
			}
			jj_buf_fini(&buf);
			break;
		}
		case N_MACRO:
			v = (jv){ .t = JV_MACRO };
			v.macro = n;
			rc = frame_set(rs, f, n->name, n->name_n, &v);
			break;
		case N_BREAK:
			*ctl = 1;
			break;
		case N_CONTINUE:
			*ctl = 2;
			break;
		default:
			rc = jj_err(rs, "internal: node kind %d is not a statement", n->kind);
		}
	}
	return rc;
}

/* ---- public ---- */

loom_err loom_jinja_compile(const char *src, size_t len, loom_jinja **out)
{
	loom_jinja *t = NULL;
	jj_toks toks = { 0 };
	loom_err rc;
	*out = NULL;
	if (!src && len)
		return loom_fail(LOOM_EINVAL, "chat template: no source");
	if (len > (size_t)64 << 20) {
		rc = loom_fail(LOOM_EINVAL, "chat template: %zu bytes is too long", len);
		goto out;
	}
	t = loom_calloc(1, sizeof *t);
	if (!t) {
		rc = loom_fail(LOOM_ENOMEM, "chat template: out of memory");
		goto out;
	}
	if ((rc = jj_lex(src ? src : "", len, &t->arena, &toks)) ||
	    (rc = jj_parse(&toks, &t->arena, &t->root)))
		goto out;
	*out = t;
	t = NULL;
out:
	loom_free(toks.v);
	loom_jinja_free(t);
	return rc;
}

void loom_jinja_free(loom_jinja *t)
{
	if (!t)
		return;
	jj_arena_fini(&t->arena);
	loom_free(t);
}

loom_err loom_jinja_render(const loom_jinja *t, const json_t *ctx, char **out, size_t *len)
{
	jj_rs rs = { .arena = { .limit = JJ_MAX_ARENA }, .line = 1 };
	jj_buf buf = { .limit = LOOM_JINJA_MAX_OUTPUT };
	loom_err rc = LOOM_OK;
	int ctl = 0;
	*out = NULL;
	if (len)
		*len = 0;
	if (ctx && !json_is_object(ctx)) {
		rc = loom_fail(LOOM_EINVAL, "chat template: the context must be a JSON object");
		goto out;
	}
	if (!(rs.root = frame_new(&rs, NULL))) {
		rc = jj_oom(&rs);
		goto out;
	}
	if (ctx) {
		const char *key;
		json_t *val;
		json_object_foreach((json_t *)ctx, key, val) {
			jv v;
			size_t kn = strlen(key);
			const char *k = jj_strdup(&rs.arena, key, kn);
			if (!k) {
				rc = jj_oom(&rs);
				goto out;
			}
			if ((rc = jv_from_json(&rs, val, &v, 0)) || (rc = frame_set(&rs, rs.root, k, kn, &v)))
				goto out;
		}
	}
	rs.out = &buf;
	if ((rc = exec_body(&rs, rs.root, &t->root->body, &ctl)))
		goto out;
	if (!buf.p && (rc = jj_buf_put(&buf, "", 0)))
		goto out;
	*out = buf.p;
	if (len)
		*len = buf.n;
	buf.p = NULL;
out:
	jj_buf_fini(&buf);
	jj_arena_fini(&rs.arena);
	return rc;
}
