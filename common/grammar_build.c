/*
 * common/grammar_build.c — expression trees to the compiled automaton.
 *
 * Each rule's tree becomes a Thompson NFA (states with byte-range, rule
 * reference and epsilon edges); epsilon edges are then removed (a state
 * gets the edges and the final flag of its epsilon closure), states no
 * longer reachable from the rule's start are dropped, and the rules are
 * laid out one after another as the grammar's positions. Sizes are checked
 * against LOOM_GRAMMAR_MAX_STATES as states are made, so a hostile
 * repetition count fails early instead of allocating.
 */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/grammar_int.h"

/* ---- arena and constructors ---- */

struct gx_chunk {
	gx_chunk *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

static void *gx_alloc(gx_builder *b, size_t n)
{
	if (b->oom)
		return NULL;
	n = (n + 15) & ~(size_t)15;
	gx_chunk *c = b->arena;
	if (!c || c->cap - c->used < n) {
		size_t cap = n > 65536 ? n : 65536;
		c = loom_malloc(sizeof *c + cap);
		if (!c) {
			b->oom = true;
			return NULL;
		}
		c->next = b->arena;
		c->used = 0;
		c->cap = cap;
		b->arena = c;
		b->arena_bytes += cap;
	}
	void *p = c->data + c->used;
	c->used += n;
	memset(p, 0, n);
	return p;
}

void gx_builder_init(gx_builder *b)
{
	memset(b, 0, sizeof *b);
}

void gx_builder_fini(gx_builder *b)
{
	for (gx_chunk *c = b->arena, *n; c; c = n) {
		n = c->next;
		loom_free(c);
	}
	loom_free(b->rules);
	memset(b, 0, sizeof *b);
}

static gx *node(gx_builder *b, gx_kind k)
{
	if (++b->n_nodes > GX_MAX_NODES) {
		b->oom = true;
		return NULL;
	}
	gx *x = gx_alloc(b, sizeof *x);
	if (x)
		x->k = k;
	return x;
}

gx *gx_empty(gx_builder *b)
{
	return node(b, GX_EMPTY);
}

gx *gx_bytes(gx_builder *b, uint8_t lo, uint8_t hi)
{
	gx *x = node(b, GX_BYTES);
	if (x)
		for (unsigned c = lo; c <= hi; c++)
			x->set[c >> 6] |= (uint64_t)1 << (c & 63);
	return x;
}

static gx *list(gx_builder *b, gx_kind k, gx *const *kids, int n)
{
	if (n == 1)
		return kids[0];
	if (n == 0)
		return k == GX_SEQ ? gx_empty(b) : NULL;
	for (int i = 0; i < n; i++)
		if (!kids[i])
			return NULL;
	gx *x = node(b, k);
	if (!x || !(x->kid = gx_alloc(b, (size_t)n * sizeof *x->kid)))
		return NULL;
	memcpy(x->kid, kids, (size_t)n * sizeof *kids);
	x->n = n;
	return x;
}

gx *gx_seq(gx_builder *b, gx *const *kids, int n)
{
	return list(b, GX_SEQ, kids, n);
}

gx *gx_alt(gx_builder *b, gx *const *kids, int n)
{
	return list(b, GX_ALT, kids, n);
}

gx *gx_seq2(gx_builder *b, gx *x, gx *y)
{
	gx *k[2] = { x, y };
	return list(b, GX_SEQ, k, 2);
}

gx *gx_seq3(gx_builder *b, gx *x, gx *y, gx *z)
{
	gx *k[3] = { x, y, z };
	return list(b, GX_SEQ, k, 3);
}

gx *gx_alt2(gx_builder *b, gx *x, gx *y)
{
	gx *k[2] = { x, y };
	return list(b, GX_ALT, k, 2);
}

gx *gx_lit(gx_builder *b, const char *s, size_t n)
{
	if (n == 0)
		return gx_empty(b);
	if (n > 1u << 20)
		return NULL;
	gx **k = gx_alloc(b, n * sizeof *k);
	if (!k)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!(k[i] = gx_bytes(b, (uint8_t)s[i], (uint8_t)s[i])))
			return NULL;
	return gx_seq(b, k, (int)n);
}

gx *gx_rep(gx_builder *b, gx *x, int min, int max)
{
	if (!x)
		return NULL;
	/* (x*){m,n} and (x*)* are x*: keeps `\w*{1000}` from becoming a
	 * thousand interleaved loops */
	if (x->k == GX_REP && x->min == 0 && x->max < 0)
		return x;
	if (x->k == GX_REP && x->max < 0 && min >= 1 && (long)x->min * min <= GX_MAX_REPEAT) {
		int m = x->min * min;
		x = x->kid[0];
		min = m;
		max = -1;
	}
	gx *r = node(b, GX_REP);
	if (!r || !(r->kid = gx_alloc(b, sizeof *r->kid)))
		return NULL;
	r->kid[0] = x;
	r->min = min;
	r->max = max;
	return r;
}

gx *gx_ref(gx_builder *b, int rule)
{
	gx *x = node(b, GX_REF);
	if (x)
		x->rule = rule;
	return x;
}

int gx_rule_new(gx_builder *b)
{
	if (b->oom || b->n_rules >= GX_MAX_RULES)
		return -1;
	if (b->n_rules == b->cap_rules) {
		int cap = b->cap_rules ? 2 * b->cap_rules : 64;
		gx_rule *r = loom_realloc(b->rules, (size_t)cap * sizeof *r);
		if (!r) {
			b->oom = true;
			return -1;
		}
		b->rules = r;
		b->cap_rules = cap;
	}
	b->rules[b->n_rules].body = NULL;
	return b->n_rules++;
}

/* ---- code point sets ---- */

loom_err gx_cpset_add(gx_cpset *s, uint32_t lo, uint32_t hi)
{
	if (lo > hi)
		return LOOM_OK;
	/* insert then merge overlapping / adjacent ranges */
	if (s->n == s->cap) {
		int cap = s->cap ? 2 * s->cap : 8;
		gx_cprange *r = loom_realloc(s->r, (size_t)cap * sizeof *r);
		if (!r)
			return LOOM_ENOMEM;
		s->r = r;
		s->cap = cap;
	}
	int i = 0;
	while (i < s->n && s->r[i].lo < lo)
		i++;
	memmove(s->r + i + 1, s->r + i, (size_t)(s->n - i) * sizeof *s->r);
	s->r[i] = (gx_cprange){ lo, hi };
	s->n++;
	int o = 0;
	for (int j = 1; j < s->n; j++) {
		if (s->r[j].lo <= s->r[o].hi + 1) {
			if (s->r[j].hi > s->r[o].hi)
				s->r[o].hi = s->r[j].hi;
		} else {
			s->r[++o] = s->r[j];
		}
	}
	s->n = o + 1;
	return LOOM_OK;
}

loom_err gx_cpset_negate(gx_cpset *s)
{
	gx_cpset t = { 0 };
	uint32_t next = 0;
	for (int i = 0; i < s->n; i++) {
		if (s->r[i].lo > next && gx_cpset_add(&t, next, s->r[i].lo - 1))
			goto oom;
		next = s->r[i].hi + 1;
	}
	if (next <= 0x10FFFF && gx_cpset_add(&t, next, 0x10FFFF))
		goto oom;
	gx_cpset_fini(s);
	*s = t;
	return LOOM_OK;
oom:
	gx_cpset_fini(&t);
	return LOOM_ENOMEM;
}

void gx_cpset_fini(gx_cpset *s)
{
	loom_free(s->r);
	memset(s, 0, sizeof *s);
}

/* ---- code points to UTF-8 byte trees (the regex-syntax utf8 split) ---- */

static int utf8_enc(uint32_t c, uint8_t *o)
{
	if (c < 0x80) {
		o[0] = (uint8_t)c;
		return 1;
	}
	if (c < 0x800) {
		o[0] = (uint8_t)(0xC0 | c >> 6);
		o[1] = (uint8_t)(0x80 | (c & 63));
		return 2;
	}
	if (c < 0x10000) {
		o[0] = (uint8_t)(0xE0 | c >> 12);
		o[1] = (uint8_t)(0x80 | (c >> 6 & 63));
		o[2] = (uint8_t)(0x80 | (c & 63));
		return 3;
	}
	o[0] = (uint8_t)(0xF0 | c >> 18);
	o[1] = (uint8_t)(0x80 | (c >> 12 & 63));
	o[2] = (uint8_t)(0x80 | (c >> 6 & 63));
	o[3] = (uint8_t)(0x80 | (c & 63));
	return 4;
}

/* lo..hi encode to the same length. Appends alternatives to alts. */
static bool utf8_range(gx_builder *b, uint32_t lo, uint32_t hi, gx **alts, int *n, int cap)
{
	uint8_t a[4], z[4];
	int len = utf8_enc(lo, a);
	for (int i = 1; i < len; i++) {
		uint32_t m = ((uint32_t)1 << (6 * i)) - 1;
		if ((lo & ~m) != (hi & ~m)) {
			if ((lo & m) != 0)
				return utf8_range(b, lo, lo | m, alts, n, cap) &&
				       utf8_range(b, (lo | m) + 1, hi, alts, n, cap);
			if ((hi & m) != m)
				return utf8_range(b, lo, (hi & ~m) - 1, alts, n, cap) &&
				       utf8_range(b, hi & ~m, hi, alts, n, cap);
		}
	}
	utf8_enc(hi, z);
	gx *k[4];
	for (int i = 0; i < len; i++)
		k[i] = gx_bytes(b, a[i], z[i]);
	if (*n >= cap)
		return false;
	alts[(*n)++] = gx_seq(b, k, len);
	return alts[*n - 1] != NULL;
}

static bool utf8_any(gx_builder *b, uint32_t lo, uint32_t hi, gx **alts, int *n, int cap)
{
	static const uint32_t ends[] = { 0x7F, 0x7FF, 0xD7FF, 0xDFFF, 0xFFFF, 0x10FFFF };
	uint32_t start = lo;
	for (int i = 0; i < 6 && start <= hi; i++) {
		uint32_t e = ends[i] < hi ? ends[i] : hi;
		if (start > e)
			continue;
		if (ends[i] != 0xDFFF && !utf8_range(b, start, e, alts, n, cap))
			return false;
		start = e + 1;
	}
	return true;
}

gx *gx_from_cpset(gx_builder *b, const gx_cpset *s, bool json)
{
	enum { CAP = 4096 };
	gx **alts = gx_alloc(b, CAP * sizeof *alts);
	int n = 0;
	if (!alts)
		return NULL;
	for (int i = 0; i < s->n; i++) {
		uint32_t lo = s->r[i].lo, hi = s->r[i].hi;
		if (json) {
			/* the escaped members one by one, the rest as plain UTF-8 */
			for (uint32_t c = lo; c <= hi && c < 0x20; c++) {
				static const char short_esc[] = "\b\f\n\r\t";
				static const char short_chr[] = "bfnrt";
				char e[8];
				const char *p = strchr(short_esc, (int)c);
				size_t el;
				if (c && p) {
					e[0] = '\\';
					e[1] = short_chr[p - short_esc];
					el = 2;
				} else {
					memcpy(e, "\\u00", 4);
					e[4] = "0123456789abcdef"[c >> 4];
					e[5] = "0123456789abcdef"[c & 15];
					el = 6;
				}
				if (n >= CAP || !(alts[n++] = gx_lit(b, e, el)))
					return NULL;
			}
			if (lo < 0x20)
				lo = 0x20;
			if (lo > hi)
				continue;
			for (uint32_t q = '"'; q <= '\\'; q += '\\' - '"') {
				if (q < lo || q > hi)
					continue;
				char e[2] = { '\\', (char)q };
				if (n >= CAP || !(alts[n++] = gx_lit(b, e, 2)))
					return NULL;
			}
			/* plain: [lo,hi] minus '"' and '\\' */
			uint32_t cuts[2] = { '"', '\\' };
			uint32_t st = lo;
			for (int k = 0; k < 2; k++) {
				if (cuts[k] >= st && cuts[k] <= hi) {
					if (cuts[k] > st && !utf8_any(b, st, cuts[k] - 1, alts, &n, CAP))
						return NULL;
					st = cuts[k] + 1;
				}
			}
			if (st <= hi && !utf8_any(b, st, hi, alts, &n, CAP))
				return NULL;
		} else if (!utf8_any(b, lo, hi, alts, &n, CAP)) {
			return NULL;
		}
	}
	if (n == 0)
		return NULL;
	/* merge single-byte alternatives into one byte class */
	gx *one = NULL;
	int o = 0;
	for (int i = 0; i < n; i++) {
		if (alts[i]->k == GX_BYTES) {
			if (!one)
				alts[o++] = one = alts[i];
			else
				for (int w = 0; w < 4; w++)
					one->set[w] |= alts[i]->set[w];
		} else {
			alts[o++] = alts[i];
		}
	}
	return gx_alt(b, alts, o);
}

/* ---- Thompson NFA of one rule ---- */

enum { NE_EPS, NE_BYTE, NE_REF };
typedef struct nedge {
	int32_t from, to;
	uint8_t kind, lo, hi;
	int32_t rule;
} nedge;

typedef struct nfa {
	nedge *e;
	size_t n_e, cap_e;
	int32_t n_s;
	size_t total;   /* states of all rules so far, the limit's count */
	bool over, oom;
} nfa;

static int32_t nstate(nfa *a)
{
	if (++a->total > LOOM_GRAMMAR_MAX_STATES) {
		a->over = true;
		return -1;
	}
	return a->n_s++;
}

static void nedge_add(nfa *a, int32_t from, int32_t to, int kind, uint8_t lo, uint8_t hi, int32_t rule)
{
	if (a->over || a->oom || from < 0 || to < 0)
		return;
	if (a->n_e == a->cap_e) {
		size_t cap = a->cap_e ? 2 * a->cap_e : 256;
		nedge *e = loom_realloc(a->e, cap * sizeof *e);
		if (!e) {
			a->oom = true;
			return;
		}
		a->e = e;
		a->cap_e = cap;
	}
	a->e[a->n_e++] = (nedge){ from, to, (uint8_t)kind, lo, hi, rule };
}

/* Builds x from state s; returns the end state (-1 on failure). */
static int32_t thompson(nfa *a, const gx *x, int32_t s, int depth)
{
	if (s < 0 || a->over || a->oom || depth > 4 * LOOM_GRAMMAR_MAX_DEPTH + 64) {
		a->over = a->over || depth > 4 * LOOM_GRAMMAR_MAX_DEPTH + 64;
		return -1;
	}
	switch (x->k) {
	case GX_EMPTY:
		return s;
	case GX_BYTES: {
		int32_t t = nstate(a);
		for (int c = 0; c < 256;) {
			if (!(x->set[c >> 6] >> (c & 63) & 1)) {
				c++;
				continue;
			}
			int d = c;
			while (d + 1 < 256 && (x->set[(d + 1) >> 6] >> ((d + 1) & 63) & 1))
				d++;
			nedge_add(a, s, t, NE_BYTE, (uint8_t)c, (uint8_t)d, 0);
			c = d + 1;
		}
		return t;
	}
	case GX_SEQ:
		for (int i = 0; i < x->n; i++)
			s = thompson(a, x->kid[i], s, depth + 1);
		return s;
	case GX_ALT: {
		int32_t t = nstate(a);
		for (int i = 0; i < x->n; i++) {
			int32_t u = nstate(a);
			nedge_add(a, s, u, NE_EPS, 0, 0, 0);
			nedge_add(a, thompson(a, x->kid[i], u, depth + 1), t, NE_EPS, 0, 0, 0);
		}
		return t;
	}
	case GX_REP: {
		for (int i = 0; i < x->min; i++)
			s = thompson(a, x->kid[0], s, depth + 1);
		if (x->max < 0) {
			int32_t l = nstate(a);
			nedge_add(a, s, l, NE_EPS, 0, 0, 0);
			nedge_add(a, thompson(a, x->kid[0], l, depth + 1), l, NE_EPS, 0, 0, 0);
			return l;
		}
		int32_t t = nstate(a);
		nedge_add(a, s, t, NE_EPS, 0, 0, 0);
		for (int i = x->min; i < x->max; i++) {
			s = thompson(a, x->kid[0], s, depth + 1);
			nedge_add(a, s, t, NE_EPS, 0, 0, 0);
		}
		return t;
	}
	case GX_REF: {
		int32_t t = nstate(a);
		nedge_add(a, s, t, NE_REF, 0, 0, x->rule);
		return t;
	}
	}
	return -1;
}

/* ---- epsilon removal and layout ---- */

typedef struct growbuf {
	void *p;
	size_t n, cap, esz;
} growbuf;

static void *gb_push(growbuf *g)
{
	if (g->n == g->cap) {
		size_t cap = g->cap ? 2 * g->cap : 256;
		void *p = loom_realloc(g->p, cap * g->esz);
		if (!p)
			return NULL;
		g->p = p;
		g->cap = cap;
	}
	return (char *)g->p + g->esz * g->n++;
}

static int cmp_nedge(const void *x, const void *y)
{
	const nedge *a = x, *b = y;
	if (a->from != b->from)
		return a->from < b->from ? -1 : 1;
	if (a->kind != b->kind)
		return a->kind < b->kind ? -1 : 1;
	if (a->lo != b->lo)
		return a->lo < b->lo ? -1 : 1;
	if (a->hi != b->hi)
		return a->hi < b->hi ? -1 : 1;
	if (a->rule != b->rule)
		return a->rule < b->rule ? -1 : 1;
	return a->to < b->to ? -1 : a->to > b->to;
}

typedef struct layout {
	growbuf be, re;      /* gm_bedge, gm_redge */
	growbuf be_off, re_off, fin; /* uint32_t, uint32_t, uint8_t per position */
	int32_t n_pos;
	size_t total_edges;
} layout;

#define GM_MAX_EDGES ((size_t)4 << 20)

/* Removes epsilons from the rule NFA a (start 0, final f) and appends its
 * reachable states to the layout. Returns the rule's start position or -1. */
static int32_t lay_rule(nfa *a, int32_t f, layout *L, loom_err *rc)
{
	int32_t ns = a->n_s;
	int32_t *first = NULL, *stack = NULL, *clo = NULL, *mark = NULL, *newid = NULL, *order = NULL;
	growbuf out = { .esz = sizeof(nedge) };
	int32_t start = -1;
	*rc = LOOM_ENOMEM;
	if (a->n_e > 1)
		qsort(a->e, a->n_e, sizeof *a->e, cmp_nedge);
	first = loom_malloc(((size_t)ns + 1) * sizeof *first);
	stack = loom_malloc(((size_t)ns + 1) * sizeof *stack);
	clo = loom_malloc(((size_t)ns + 1) * sizeof *clo);
	mark = loom_calloc((size_t)ns + 1, sizeof *mark);
	newid = loom_malloc(((size_t)ns + 1) * sizeof *newid);
	order = loom_malloc(((size_t)ns + 1) * sizeof *order);
	if (!first || !stack || !clo || !mark || !newid || !order)
		goto out;
	for (int32_t s = 0, j = 0; s <= ns; s++) {
		while ((size_t)j < a->n_e && a->e[j].from < s)
			j++;
		first[s] = j;
	}
	/* reachable states in BFS order over the epsilon-free edges, built lazily */
	for (int32_t s = 0; s < ns; s++)
		newid[s] = -1;
	int32_t n_order = 0;
	newid[0] = 0;
	order[n_order++] = 0;
	uint8_t *fin = NULL;
	for (int32_t qi = 0; qi < n_order; qi++) {
		int32_t q = order[qi], nc = 0, sp = 0;
		bool is_final = false;
		stack[sp++] = q;
		mark[q] = qi + 1;
		while (sp) {
			int32_t x = stack[--sp];
			clo[nc++] = x;
			if (x == f)
				is_final = true;
			for (int32_t j = first[x]; j < first[x + 1] && a->e[j].kind == NE_EPS; j++) {
				int32_t y = a->e[j].to;
				if (mark[y] != qi + 1) {
					mark[y] = qi + 1;
					stack[sp++] = y;
				}
			}
		}
		size_t o0 = out.n;
		for (int32_t c = 0; c < nc; c++) {
			int32_t x = clo[c];
			for (int32_t j = first[x]; j < first[x + 1]; j++) {
				if (a->e[j].kind == NE_EPS)
					continue;
				nedge *e = gb_push(&out);
				if (!e)
					goto out;
				*e = a->e[j];
				e->from = qi;
				if (newid[e->to] < 0) {
					newid[e->to] = n_order;
					order[n_order++] = e->to;
				}
				e->to = newid[e->to];
			}
		}
		if (out.n - o0 > 1)
			qsort((nedge *)out.p + o0, out.n - o0, sizeof(nedge), cmp_nedge);
		if (out.n > 8 * (size_t)ns + 10000) {
			*rc = loom_fail(LOOM_ERANGE, "grammar too ambiguous to match quickly (a rule of %d states"
				       " has over %zu edges once epsilon moves are removed: nested optional"
				       " repetitions?)", ns, out.n - 1);
			goto out;
		}
		if ((L->total_edges += out.n - o0) > GM_MAX_EDGES) {
			*rc = loom_fail(LOOM_ERANGE, "grammar too large (over %zu automaton edges)",
					GM_MAX_EDGES);
			goto out;
		}
		if (!(fin = gb_push(&L->fin)))
			goto out;
		*fin = is_final;
	}
	/* emit: positions L->n_pos + qi */
	int32_t base = L->n_pos;
	nedge *E = out.p;
	size_t j = 0;
	for (int32_t qi = 0; qi < n_order; qi++) {
		uint32_t *bo = gb_push(&L->be_off), *ro = gb_push(&L->re_off);
		if (!bo || !ro)
			goto out;
		*bo = (uint32_t)L->be.n;
		*ro = (uint32_t)L->re.n;
		nedge *prev = NULL;
		for (; j < out.n && E[j].from == qi; j++) {
			if (prev && !cmp_nedge(prev, &E[j]))
				continue; /* duplicate */
			prev = &E[j];
			if (E[j].kind == NE_BYTE) {
				gm_bedge *b = gb_push(&L->be);
				if (!b)
					goto out;
				*b = (gm_bedge){ E[j].lo, E[j].hi, base + E[j].to };
			} else {
				gm_redge *r = gb_push(&L->re);
				if (!r)
					goto out;
				*r = (gm_redge){ E[j].rule, base + E[j].to };
			}
		}
	}
	L->n_pos += n_order;
	start = base;
	*rc = LOOM_OK;
out:
	loom_free(first);
	loom_free(stack);
	loom_free(clo);
	loom_free(mark);
	loom_free(newid);
	loom_free(order);
	loom_free(out.p);
	if (*rc == LOOM_ENOMEM)
		loom_fail(LOOM_ENOMEM, "grammar: out of memory");
	return start;
}

loom_err gx_compile(gx_builder *b, int root, loom_grammar **out)
{
	loom_err rc = LOOM_OK;
	loom_grammar *g = NULL;
	nfa a = { 0 };
	layout L = { .be = { .esz = sizeof(gm_bedge) }, .re = { .esz = sizeof(gm_redge) },
		     .be_off = { .esz = 4 }, .re_off = { .esz = 4 }, .fin = { .esz = 1 } };
	*out = NULL;
	if (b->oom) {
		rc = b->n_nodes > GX_MAX_NODES
			     ? loom_fail(LOOM_ERANGE, "grammar too large (over %d nodes)", GX_MAX_NODES)
			     : loom_fail(LOOM_ENOMEM, "grammar: out of memory");
		goto out;
	}
	g = loom_calloc(1, sizeof *g);
	if (!g || !(g->rule_start = loom_malloc((size_t)b->n_rules * sizeof *g->rule_start))) {
		rc = loom_fail(LOOM_ENOMEM, "grammar: out of memory");
		goto out;
	}
	g->n_rules = b->n_rules;
	g->root = root;
	for (int r = 0; r < b->n_rules; r++) {
		if (!b->rules[r].body) {
			rc = loom_fail(LOOM_EINTERNAL, "grammar: rule %d has no body", r);
			goto out;
		}
		a.n_e = 0;
		a.n_s = 0;
		int32_t s = nstate(&a);
		int32_t f = thompson(&a, b->rules[r].body, s, 0);
		if (a.over) {
			rc = loom_fail(LOOM_ERANGE, "grammar too large (over %d states)",
				       LOOM_GRAMMAR_MAX_STATES);
			goto out;
		}
		if (a.oom) {
			rc = loom_fail(LOOM_ENOMEM, "grammar: out of memory");
			goto out;
		}
		g->rule_start[r] = lay_rule(&a, f, &L, &rc);
		if (rc)
			goto out;
	}
	uint32_t *bo = gb_push(&L.be_off), *ro = gb_push(&L.re_off);
	if (!bo || !ro) {
		rc = loom_fail(LOOM_ENOMEM, "grammar: out of memory");
		goto out;
	}
	*bo = (uint32_t)L.be.n;
	*ro = (uint32_t)L.re.n;
	/* ref edges name rules; the matcher wants their start positions too, so
	 * keep rule ids (rule_start maps them) */
	g->n_pos = L.n_pos;
	g->be = L.be.p;
	g->re = L.re.p;
	g->be_off = L.be_off.p;
	g->re_off = L.re_off.p;
	g->final = L.fin.p;
	memset(&L, 0, sizeof L);
	if (pthread_mutex_init(&g->lock, NULL)) {
		rc = loom_fail(LOOM_EINTERNAL, "grammar: pthread_mutex_init failed");
		goto out;
	}
	*out = g;
	g = NULL;
out:
	loom_free(a.e);
	loom_free(L.be.p);
	loom_free(L.re.p);
	loom_free(L.be_off.p);
	loom_free(L.re_off.p);
	loom_free(L.fin.p);
	if (g) {
		loom_free(g->rule_start);
		loom_free(g->be);
		loom_free(g->re);
		loom_free(g->be_off);
		loom_free(g->re_off);
		loom_free(g->final);
		loom_free(g);
	}
	return rc;
}
