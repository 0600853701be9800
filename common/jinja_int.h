/*
 * common/jinja_int.h — what the Jinja interpreter's own files share (private).
 *
 * Pipeline: jinja_lex.c turns the source into tokens (whitespace control,
 * trim_blocks and lstrip_blocks are applied there, as jinja2's lexer does);
 * jinja_parse.c builds a tree of jj_node (statements and expressions) in the
 * template's arena and resolves filter/test/method names to ids, refusing
 * unknown ones; jinja_eval.c walks the tree with values of type jv;
 * jinja_builtin.c holds the filters, tests, methods and global functions;
 * jinja_value.c the value helpers (Python str()/repr(), json.dumps,
 * equality, ordering, truth).
 *
 * Memory: a compiled template is one arena (tokens are dropped after
 * parsing). A render has its own arena holding every value it makes; values
 * are never freed one by one, the arena goes at the end of the render. Lists
 * and dicts are immutable once built (the sandbox forbids mutation), so
 * values share them freely; only namespace() objects change.
 */
#ifndef LOOM_JINJA_INT_H
#define LOOM_JINJA_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/jinja.h"

/* ---- limits ---- */
#define JJ_MAX_PARSE_DEPTH 256     /* parser recursion (about 8 per nested parenthesis) */
#define JJ_MAX_CALL_DEPTH 48       /* nested macro calls */
#define JJ_MAX_VALUE_DEPTH 256     /* nesting printed/compared/converted */
#define JJ_MAX_STEPS 20000000ull   /* nodes evaluated per render */
#define JJ_MAX_ARENA ((size_t)256 << 20) /* bytes of values per render */
#define JJ_MAX_RANGE 100000        /* jinja2's sandbox MAX_RANGE */

/* ---- arena ---- */
typedef struct jj_chunk jj_chunk;
typedef struct jj_arena {
	jj_chunk *head;
	size_t total; /* bytes of all chunks */
	size_t limit; /* 0 = none */
	bool over;    /* an allocation was refused for the limit */
} jj_arena;

/* Zeroed, 16-aligned; NULL when out of memory or past the limit. */
void *jj_alloc(jj_arena *a, size_t n);
char *jj_strdup(jj_arena *a, const char *s, size_t n); /* NUL-terminated copy */
void jj_arena_fini(jj_arena *a);

/* ---- growable byte buffer (loom_realloc) ---- */
typedef struct jj_buf {
	char *p;
	size_t n, cap;
	size_t limit; /* 0 = none */
} jj_buf;
loom_err jj_buf_put(jj_buf *b, const char *s, size_t n);
loom_err jj_buf_putc(jj_buf *b, char c);
loom_err jj_buf_printf(jj_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void jj_buf_fini(jj_buf *b);

/* ---- tokens ---- */
enum jj_tok {
	JT_EOF,
	JT_DATA,        /* template text, s/n (after whitespace control) */
	JT_VAR_BEGIN,   /* {{ */
	JT_VAR_END,     /* }} */
	JT_BLOCK_BEGIN, /* {% */
	JT_BLOCK_END,   /* %} */
	JT_NAME,        /* s/n */
	JT_STRING,      /* s/n: the decoded value */
	JT_INT,         /* i */
	JT_FLOAT,       /* f */
	JT_OP           /* op: a char, or one of JO_* */
};
enum jj_op2 { JO_FLOORDIV = 256, JO_POW, JO_EQ, JO_NE, JO_LE, JO_GE };

typedef struct jj_token {
	int type;
	int line;
	int op;
	const char *s;
	size_t n;
	int64_t i;
	double f;
} jj_token;

typedef struct jj_toks {
	jj_token *v;
	size_t n, cap;
} jj_toks;

/* Tokenizes src into toks (strings in a). LOOM_EFORMAT with a line on error. */
loom_err jj_lex(const char *src, size_t len, jj_arena *a, jj_toks *toks);

/* ---- values ---- */
enum jv_type {
	JV_UNDEF,
	JV_NONE,
	JV_BOOL,
	JV_INT,
	JV_FLOAT,
	JV_STR,
	JV_LIST,   /* also tuples (l->tuple) */
	JV_DICT,
	JV_NS,     /* namespace(): the one mutable object */
	JV_MACRO,
	JV_FUNC,   /* a global function: JF_* in i */
	JV_METHOD, /* obj.method not yet called: m */
	JV_LOOP
};

typedef struct jv_list jv_list;
typedef struct jv_dict jv_dict;
typedef struct jv_method jv_method;
typedef struct jj_loop jj_loop;
typedef struct jj_node jj_node;

typedef struct jv {
	uint8_t t;
	bool safe; /* a Markup string (from |safe, |escape, a macro): printed as is */
	union {
		bool b;
		int64_t i;
		double f;
		struct {
			const char *s; /* JV_STR; JV_UNDEF: the hint ("'x' is undefined") */
			size_t n;
		};
		jv_list *l;
		jv_dict *d; /* JV_DICT, JV_NS */
		const jj_node *macro;
		jv_method *m;
		jj_loop *loop;
	};
} jv;

struct jv_list {
	jv *v;
	size_t n;
	bool tuple;
};

struct jv_dict {
	jv *k, *v;
	size_t n, cap; /* cap only grows for namespaces */
};

struct jv_method {
	jv obj;
	int id; /* JM_* */
};

/* A for loop's state, reachable from templates as `loop`. */
struct jj_loop {
	const jv *items;
	size_t n, i;
	jj_loop *parent; /* depth */
	size_t depth;
};

static inline jv jv_undef(const char *hint)
{
	jv v = { .t = JV_UNDEF };
	v.s = hint;
	v.n = 0;
	return v;
}
static inline jv jv_none(void) { return (jv){ .t = JV_NONE }; }
static inline jv jv_bool(bool b) { jv v = { .t = JV_BOOL }; v.b = b; return v; }
static inline jv jv_int(int64_t i) { jv v = { .t = JV_INT }; v.i = i; return v; }
static inline jv jv_float(double f) { jv v = { .t = JV_FLOAT }; v.f = f; return v; }
static inline jv jv_str(const char *s, size_t n)
{
	jv v = { .t = JV_STR };
	v.s = s;
	v.n = n;
	return v;
}

/* ---- AST ---- */
enum jj_kind {
	/* expressions */
	N_CONST,   /* value */
	N_NAME,    /* name */
	N_LIST,    /* args */
	N_TUPLE,   /* args */
	N_DICT,    /* args: keys, kwv: values (same count) */
	N_ATTR,    /* a.name */
	N_ITEM,    /* a[b] */
	N_SLICE,   /* a[b:c:d], each of b/c/d may be NULL */
	N_CALL,    /* a(args, kw...) */
	N_FILTER,  /* a|name(args, kw): id = JFL_* */
	N_TEST,    /* a is name(args): id = JT_* */
	N_NOT,     /* not a */
	N_NEG,     /* -a */
	N_POS,     /* +a */
	N_BIN,     /* a op b: op in + - * / // % ** ~ */
	N_AND,
	N_OR,
	N_CMP,     /* a then ops[i] args[i] chained */
	N_COND,    /* b if a else c (c may be NULL) */
	/* statements */
	N_TEXT,    /* value (a string) */
	N_OUTPUT,  /* {{ a }} */
	N_IF,      /* if a: body else orelse */
	N_FOR,     /* for target(b) in a [if c]: body else orelse */
	N_SET,     /* set target(b) = a */
	N_SETBLOCK,/* set name: body */
	N_MACRO,   /* macro name(params = args, defaults in kwv): body */
	N_BREAK,
	N_CONTINUE,
	N_KWARG    /* name=a, inside args lists */
};

typedef struct jj_nodes {
	jj_node **v;
	size_t n, cap;
} jj_nodes;

struct jj_node {
	int kind;
	int line;
	int op;      /* N_BIN operator; N_FILTER/N_TEST/N_CALL: builtin id */
	const char *name;
	size_t name_n;
	jj_node *a, *b, *c, *d;
	jj_nodes args;   /* positional args; list items; dict keys; statements of a body */
	jj_nodes kw;     /* keyword args (N_KWARG); dict values; macro defaults */
	jj_nodes body, orelse;
	int *ops;        /* N_CMP: one per args entry */
	jv value;        /* N_CONST, N_TEXT */
};

struct loom_jinja {
	jj_arena arena;
	jj_node *root; /* N_IF-less statement list in body */
};

/* Parses toks into a statement list; names resolved. */
loom_err jj_parse(jj_toks *toks, jj_arena *a, jj_node **root);

/* ---- builtins (ids resolved at parse time) ---- */
/* Filter id of name, or -1. */
int jj_filter_id(const char *name, size_t n);
/* Test id, or -1. */
int jj_test_id(const char *name, size_t n);
/* Method id if name is a method of str, dict, list or loop (any), or -1. */
int jj_method_id(const char *name, size_t n);
/* Global function id (range, namespace, ...), or -1. */
int jj_func_id(const char *name, size_t n);

/* ---- render state ---- */
typedef struct jj_frame jj_frame;
struct jj_frame {
	jj_frame *parent;
	const char **names;
	size_t *name_n;
	jv *vals;
	size_t n, cap;
};

typedef struct jj_rs {
	jj_arena arena;
	jj_buf *out;        /* where output goes now (a macro call swaps it) */
	uint64_t steps;
	int call_depth;
	int line;           /* of the node being evaluated, for messages */
	jj_frame *root;
} jj_rs;

/* Fails with LOOM_EINVAL "chat template line N: ..." */
loom_err jj_err(jj_rs *rs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
loom_err jj_oom(jj_rs *rs);

/* evaluation (jinja_eval.c) */
loom_err jj_eval(jj_rs *rs, jj_frame *f, const jj_node *n, jv *out);
/* Calls a callable value (macro, function, method) with evaluated args. */
loom_err jj_call_value(jj_rs *rs, jj_frame *f, const jv *fn, const jv *args, size_t n_args,
		       const char *const *kw_names, const jv *kw_vals, size_t n_kw, jv *out);
/* obj.name as jinja2's sandboxed getattr does (attribute, then item). */
loom_err jj_getattr(jj_rs *rs, const jv *obj, const char *name, size_t n, jv *out);
/* obj[key] as jinja2's getitem does (item, then attribute for strings keys). */
loom_err jj_getitem(jj_rs *rs, const jv *obj, const jv *key, jv *out);

/* An undefined value's hint, formatted into the render arena. */
const char *jj_hint(jj_rs *rs, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Fails with the hint of undefined value v. */
loom_err jj_undefined_err(jj_rs *rs, const jv *v);
/* "dict object", "None", ... as jinja2 names objects in messages. */
const char *jj_obj_repr(const jv *v);

/* operators (jinja_ops.c) */
#define JJ_CMP_IN 512    /* N_CMP ops beyond the JO_* comparisons */
#define JJ_CMP_NOTIN 513
/* a op b for + - * / // % ** ~ */
loom_err jj_binary(jj_rs *rs, int op, const jv *a, const jv *b, jv *out);
/* a op b for == != < > <= >= in, not in */
loom_err jj_compare(jj_rs *rs, int op, const jv *a, const jv *b, bool *out);
/* obj[lo:hi:st], each NULL when not given */
loom_err jj_slice(jj_rs *rs, const jv *obj, const jv *lo, const jv *hi, const jv *st, jv *out);

/* builtins (jinja_builtin.c, jinja_tests.c, jinja_methods.c) */
typedef struct jj_args {
	const jv *pos;
	size_t n_pos;
	const char *const *kw_names;
	const jv *kw;
	size_t n_kw;
} jj_args;
loom_err jj_apply_filter(jj_rs *rs, jj_frame *f, int id, const jv *in, const jj_args *a, jv *out);
loom_err jj_apply_test(jj_rs *rs, jj_frame *f, int id, const jv *in, const jj_args *a, bool *out);
loom_err jj_call_method(jj_rs *rs, const jv *obj, int id, const char *name, const jj_args *a,
			jv *out);
loom_err jj_call_func(jj_rs *rs, int id, const jj_args *a, jv *out);
/* Arg i of a (positional index pos, or keyword name), NULL when absent. */
const jv *jj_arg(const jj_args *a, size_t pos, const char *name);
/* Fails when a holds more positional args than max or a keyword not in names (NULL-terminated). */
loom_err jj_check_args(jj_rs *rs, const char *what, const jj_args *a, size_t max,
		       const char *const *names);

/* string helpers (jinja_methods.c) */
/* strip: mode 1 left, 2 right, 3 both; chars NULL/None = whitespace */
loom_err jj_strip(jj_rs *rs, const jv *s, const jv *chars, int mode, jv *out);
/* mode 'u' upper, 'l' lower, 't' str.title(), 'c' str.capitalize() (ASCII letters) */
loom_err jj_case(jj_rs *rs, const jv *s, int mode, jv *out);
loom_err jj_replace(jj_rs *rs, const jv *s, const jv *old, const jv *new, int64_t count, jv *out);
loom_err jj_splitlines(jj_rs *rs, const jv *s, jv *out);

/* values (jinja_value.c) */
bool jv_truthy(const jv *v);
/* A fresh string value of s+t. */
loom_err jv_concat(jj_rs *rs, const char *s, size_t n, const char *t, size_t m, jv *out);
/* Python str(v) appended to b. */
loom_err jv_to_str_buf(jj_rs *rs, const jv *v, jj_buf *b);
/* str(v) as a value (strings returned as they are). */
loom_err jv_to_str(jj_rs *rs, const jv *v, jv *out);
/* Python repr(v) appended to b. */
loom_err jv_repr_buf(jj_rs *rs, const jv *v, jj_buf *b, int depth);
/* json.dumps(v, ensure_ascii, indent (< 0: None), separators, sort_keys). */
typedef struct jj_json_opt {
	bool ensure_ascii;
	bool sort_keys;
	int indent; /* < 0: none */
	const char *item_sep, *key_sep;
	size_t item_sep_n, key_sep_n;
} jj_json_opt;
loom_err jv_to_json(jj_rs *rs, const jv *v, const jj_json_opt *o, jj_buf *b);
/* Python ==. */
bool jv_equal(const jv *a, const jv *b, int depth);
/* Python <: *lt set; fails (TypeError) for incomparable types. */
loom_err jv_less(jj_rs *rs, const jv *a, const jv *b, bool *lt);
/* Python float repr. */
void jj_float_repr(double f, char *buf, size_t cap);
/* type name as Python says it ('str', 'int', 'dict', ...). */
const char *jv_type_name(const jv *v);
/* value from JSON */
loom_err jv_from_json(jj_rs *rs, const json_t *j, jv *out, int depth);
/* Length in code points of UTF-8 s. */
size_t jj_utf8_len(const char *s, size_t n);
/* Byte offset of code point index cp (cp <= length). */
size_t jj_utf8_off(const char *s, size_t n, size_t cp);
/* Decodes one code point at s (n > 0 bytes left); *adv bytes used (>= 1). */
uint32_t jj_utf8_dec(const char *s, size_t n, size_t *adv);
/* Python str.isspace() for a code point. */
bool jj_isspace(uint32_t cp);
/* a list value of n items from v (copied into the arena) */
loom_err jv_make_list(jj_rs *rs, const jv *v, size_t n, bool tuple, jv *out);
/* The items of an iterable (list, tuple, dict keys, string chars, undefined = none). */
loom_err jv_iterate(jj_rs *rs, const jv *v, const jv **items, size_t *n);
/* Namespace attribute set. */
loom_err jv_ns_set(jj_rs *rs, jv_dict *d, const char *name, size_t n, const jv *val);
/* Dict lookup by key; NULL when absent. */
const jv *jv_dict_get(const jv_dict *d, const jv *key);
const jv *jv_dict_gets(const jv_dict *d, const char *s, size_t n);

#endif
