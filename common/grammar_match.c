/*
 * common/grammar_match.c — the pushdown automaton over bytes and its token masks.
 *
 * A stack is a chain of frames (position, parent), hash-consed in the
 * matcher's node pool so equal stacks are one node id and a set of stacks
 * is a set of ints. The matcher's state is the set of stacks alive after
 * the output so far, closed under epsilon moves: a frame at a position with
 * a rule-reference edge pushes that rule's start (the frame below continues
 * at the edge's target when the rule returns); a frame at a final position
 * pops. Only stacks whose top can read a byte are kept; a pop past the
 * bottom sets the set's `end` flag (for the matcher: the output may end
 * here).
 *
 * Masks (XGrammar's adaptive token mask cache). For a position p, the
 * vocabulary trie is walked once from the lone frame (p, BOTTOM): a token
 * is *accepted* when some stack survives its bytes without needing what is
 * below p, *rejected* when every stack dies inside p's rule (or rules it
 * pushed), and *uncertain* when it reads past a return from p's rule (then
 * the frames below decide). Each step, the mask is the union over the tops
 * of the current stacks of their accepted sets, plus the uncertain tokens
 * that survive a walk from the real stacks. Entries are kept per (grammar,
 * vocabulary) in the grammar, filled lazily and shared by every matcher
 * (atomic pointers, never changed once set), so a string's content state
 * is walked once per process, not once per request.
 */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/grammar_int.h"

#define GM_NONE (-1)    /* parent of the root frame */
#define GM_BOTTOM (-2)  /* parent of the frame a cache walk starts from */
#define GM_MAX_STACK 512
#define GM_MAX_SET 8192
#define GM_MAX_NODES (1 << 23)
#define GM_COMPACT_NODES (1 << 20)
#define GM_CACHE_LIMIT ((size_t)512 << 20) /* bytes of cached entries per (grammar, vocab) */

typedef struct gm_entry {
	int32_t n_acc;
	bool rej;       /* acc holds the ids NOT accepted (of those ever allowed) */
	int32_t *acc;
	int32_t n_unc;
	int32_t *unc;   /* uncertain tokens, as indexes into the vocab's sorted order */
} gm_entry;

struct gm_cache {
	gm_cache *next;
	uint64_t serial;
	gm_entry **e;   /* [n_pos], atomic */
	size_t bytes;   /* atomic */
};

typedef struct gm_pool {
	int32_t *pos, *parent;
	uint16_t *depth;
	uint32_t *mark;
	int32_t n, cap;
	int32_t *slot;  /* hash table of node ids, -1 = empty */
	uint32_t hcap;  /* power of two */
	uint32_t stamp;
} gm_pool;

typedef struct gm_ibuf {
	int32_t *p;
	size_t n, cap;
} gm_ibuf;

struct loom_grammar_matcher {
	const loom_grammar *g;
	const loom_grammar_vocab *v;
	gm_cache *cache;
	gm_pool pool;
	gm_ibuf cur;           /* the live stacks (node ids) */
	bool complete;         /* the output so far may end here */
	bool eos_done;
	/* walk levels: level k = stacks after k bytes of the current prefix */
	gm_ibuf lv;
	uint32_t *lv_start;    /* [max_len + 2] */
	uint8_t *lv_end, *lv_seen;
	gm_ibuf cstack;        /* closure work stack */
	gm_ibuf acc, unc, tmp;
	uint32_t *bits;        /* [words] scratch */
	uint32_t *universe;    /* [words] ids ever allowed */
	int words;
	loom_err err;          /* sticky: set when a limit or allocation failed mid-walk */
};

static bool ib_push(gm_ibuf *b, int32_t x)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 256;
		int32_t *p = loom_realloc(b->p, cap * sizeof *p);
		if (!p)
			return false;
		b->p = p;
		b->cap = cap;
	}
	b->p[b->n++] = x;
	return true;
}

static loom_err m_fail(loom_grammar_matcher *m, loom_err rc)
{
	if (!m->err)
		m->err = rc == LOOM_ENOMEM ? loom_fail(rc, "grammar matcher: out of memory")
					   : loom_fail(rc, "grammar matcher: the automaton outgrew its limits"
							   " (%d stacks, %d nodes)", GM_MAX_SET, GM_MAX_NODES);
	return m->err;
}

/* ---- node pool ---- */

static uint32_t hash2(int32_t a, int32_t b)
{
	uint64_t x = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (uint32_t)x;
}

static bool pool_grow(gm_pool *p)
{
	int32_t cap = p->cap ? 2 * p->cap : 1024;
	int32_t *pos = loom_realloc(p->pos, (size_t)cap * sizeof *pos);
	if (pos)
		p->pos = pos;
	int32_t *par = loom_realloc(p->parent, (size_t)cap * sizeof *par);
	if (par)
		p->parent = par;
	uint16_t *d = loom_realloc(p->depth, (size_t)cap * sizeof *d);
	if (d)
		p->depth = d;
	uint32_t *mk = loom_realloc(p->mark, (size_t)cap * sizeof *mk);
	if (mk)
		p->mark = mk;
	int32_t *slot = loom_malloc((size_t)cap * 2 * sizeof *slot);
	if (!pos || !par || !d || !mk || !slot) {
		loom_free(slot);
		return false;
	}
	memset(p->mark + p->cap, 0, (size_t)(cap - p->cap) * sizeof *mk);
	memset(slot, 0xff, (size_t)cap * 2 * sizeof *slot);
	p->hcap = (uint32_t)cap * 2;
	for (int32_t i = 0; i < p->n; i++) {
		uint32_t h = hash2(p->pos[i], p->parent[i]) & (p->hcap - 1);
		while (slot[h] >= 0)
			h = (h + 1) & (p->hcap - 1);
		slot[h] = i;
	}
	loom_free(p->slot);
	p->slot = slot;
	p->cap = cap;
	return true;
}

/* The node (pos, parent); -1 on a limit or out of memory (m->err set). */
static int32_t cons(loom_grammar_matcher *m, int32_t pos, int32_t parent)
{
	gm_pool *p = &m->pool;
	if (p->hcap) {
		uint32_t h = hash2(pos, parent) & (p->hcap - 1);
		for (int32_t s; (s = p->slot[h]) >= 0; h = (h + 1) & (p->hcap - 1))
			if (p->pos[s] == pos && p->parent[s] == parent)
				return s;
	}
	if (p->n >= GM_MAX_NODES) {
		m_fail(m, LOOM_ERANGE);
		return -1;
	}
	if (p->n == p->cap && !pool_grow(p)) {
		m_fail(m, LOOM_ENOMEM);
		return -1;
	}
	int32_t id = p->n++;
	p->pos[id] = pos;
	p->parent[id] = parent;
	p->depth[id] = (uint16_t)(parent >= 0 ? p->depth[parent] + 1 : 1);
	uint32_t h = hash2(pos, parent) & (p->hcap - 1);
	while (p->slot[h] >= 0)
		h = (h + 1) & (p->hcap - 1);
	p->slot[h] = id;
	return id;
}

/* ---- steps ---- */

/* Adds the epsilon closure of node x to out (stacks that can read a byte);
 * a pop below the bottom sets *end. Uses pool.stamp for dedup. */
static void closure(loom_grammar_matcher *m, int32_t x, gm_ibuf *out, bool *end)
{
	const loom_grammar *g = m->g;
	gm_pool *p = &m->pool;
	m->cstack.n = 0;
	if (!ib_push(&m->cstack, x)) {
		m_fail(m, LOOM_ENOMEM);
		return;
	}
	while (m->cstack.n) {
		x = m->cstack.p[--m->cstack.n];
		if (p->mark[x] == p->stamp)
			continue;
		p->mark[x] = p->stamp;
		int32_t pos = p->pos[x], par = p->parent[x];
		if (g->be_off[pos] != g->be_off[pos + 1]) {
			if (out->n >= GM_MAX_SET) {
				m_fail(m, LOOM_ERANGE);
				return;
			}
			if (!ib_push(out, x)) {
				m_fail(m, LOOM_ENOMEM);
				return;
			}
		}
		for (uint32_t j = g->re_off[pos]; j < g->re_off[pos + 1]; j++) {
			if (p->depth[x] >= GM_MAX_STACK)
				break; /* (left) recursion past the depth limit: this branch dies */
			int32_t below = cons(m, g->re[j].to, par);
			int32_t top = below < 0 ? -1 : cons(m, g->rule_start[g->re[j].rule], below);
			if (top < 0)
				return;
			if (p->mark[top] != p->stamp && !ib_push(&m->cstack, top)) {
				m_fail(m, LOOM_ENOMEM);
				return;
			}
		}
		if (g->final[pos]) {
			if (par < 0)
				*end = true;
			else if (p->mark[par] != p->stamp && !ib_push(&m->cstack, par)) {
				m_fail(m, LOOM_ENOMEM);
				return;
			}
		}
	}
}

/* Reads byte c from the n stacks in[] (in[] may point into out's buffer:
 * it is copied first when so). Appends the survivors to out. */
static void step(loom_grammar_matcher *m, size_t in_off, size_t n, uint8_t c, gm_ibuf *out, bool *end)
{
	const loom_grammar *g = m->g;
	gm_pool *p = &m->pool;
	p->stamp++;
	for (size_t i = 0; i < n && !m->err; i++) {
		int32_t x = out->p[in_off + i];
		int32_t pos = p->pos[x];
		for (uint32_t j = g->be_off[pos]; j < g->be_off[pos + 1]; j++) {
			const gm_bedge *e = &g->be[j];
			if (c < e->lo)
				break;
			if (c > e->hi)
				continue;
			int32_t y = cons(m, e->to, p->parent[x]);
			if (y < 0)
				return;
			closure(m, y, out, end);
		}
	}
}

/* ---- trie walk ---- */

typedef enum { W_CACHE, W_FULL } walk_mode;

static uint32_t tok_len(const loom_grammar_vocab *v, int32_t id)
{
	return v->off[id + 1] - v->off[id];
}

/* Common prefix of the tokens at sorted indexes a and b. */
static uint32_t lcp2(const loom_grammar_vocab *v, int32_t a, int32_t b)
{
	int32_t x = v->sorted[a], y = v->sorted[b];
	uint32_t lx = tok_len(v, x), ly = tok_len(v, y), l = 0;
	const uint8_t *px = v->bytes + v->off[x], *py = v->bytes + v->off[y];
	while (l < lx && l < ly && px[l] == py[l])
		l++;
	return l;
}

/*
 * Walks the tokens list[0..n) (sorted indexes, ascending; list NULL = all)
 * from the stacks init[0..n_init). Accepted ids go to mask (bits) when mask
 * is set, else to m->acc; in W_CACHE mode, uncertain tokens (sorted
 * indexes) go to m->unc.
 */
static loom_err walk(loom_grammar_matcher *m, const int32_t *init, size_t n_init, const int32_t *list,
		     int32_t n, walk_mode mode, uint32_t *mask)
{
	const loom_grammar_vocab *v = m->v;
	m->lv.n = 0;
	for (size_t i = 0; i < n_init; i++)
		if (!ib_push(&m->lv, init[i]))
			return m_fail(m, LOOM_ENOMEM);
	m->lv_start[0] = 0;
	m->lv_start[1] = (uint32_t)n_init;
	m->lv_end[0] = m->lv_seen[0] = 0;
	uint32_t valid = 0;
	for (int32_t i = 0; i < n; i++) {
		int32_t si = list ? list[i] : i, id = v->sorted[si];
		const uint8_t *b = v->bytes + v->off[id];
		uint32_t L = tok_len(v, id);
		uint32_t l = i == 0 ? 0 : list ? lcp2(v, list[i - 1], si) : v->lcp[si];
		uint32_t k = l < valid ? l : valid;
		bool dead = false;
		while (k < L) {
			bool end = false;
			m->lv.n = m->lv_start[k + 1];
			step(m, m->lv_start[k], m->lv_start[k + 1] - m->lv_start[k], b[k], &m->lv, &end);
			if (m->err)
				return m->err;
			k++;
			m->lv_start[k + 1] = (uint32_t)m->lv.n;
			m->lv_end[k] = end;
			m->lv_seen[k] = m->lv_seen[k - 1] | end;
			if (m->lv_start[k + 1] == m->lv_start[k] && !(k == L && end)) {
				dead = true;
				break;
			}
		}
		valid = k;
		if (!dead) {
			if (mask)
				mask[id >> 5] |= 1u << (id & 31);
			else if (!ib_push(&m->acc, id))
				return m_fail(m, LOOM_ENOMEM);
			continue;
		}
		/* the prefix of length k is dead: so is every token sharing it */
		bool unc = mode == W_CACHE && m->lv_seen[k];
		for (;;) {
			if (unc && !ib_push(&m->unc, si))
				return m_fail(m, LOOM_ENOMEM);
			if (i + 1 >= n)
				break;
			int32_t sj = list ? list[i + 1] : i + 1;
			uint32_t lj = list ? lcp2(v, si, sj) : v->lcp[sj];
			if (lj < k)
				break;
			i++;
			si = sj;
		}
	}
	return LOOM_OK;
}

/* ---- the cache ---- */

static void entry_free(gm_entry *e)
{
	if (e) {
		loom_free(e->acc);
		loom_free(e->unc);
		loom_free(e);
	}
}

static size_t entry_bytes(const gm_entry *e)
{
	return sizeof *e + ((size_t)e->n_acc + (size_t)e->n_unc) * sizeof(int32_t);
}

/* The entry of position pos: cached, or computed now (*own set when the
 * caller must free it: the cache is full). */
static gm_entry *entry_get(loom_grammar_matcher *m, int32_t pos, bool *own)
{
	const loom_grammar_vocab *v = m->v;
	*own = false;
	gm_entry *e = __atomic_load_n(&m->cache->e[pos], __ATOMIC_ACQUIRE);
	if (e)
		return e;
	int32_t start = cons(m, pos, GM_BOTTOM);
	if (start < 0)
		return NULL;
	m->acc.n = m->unc.n = 0;
	if (walk(m, &start, 1, NULL, v->n_sorted, W_CACHE, NULL))
		return NULL;
	if (!(e = loom_calloc(1, sizeof *e)))
		goto oom;
	if (m->acc.n > (size_t)v->n_sorted / 2) {
		/* store the complement */
		memset(m->bits, 0, (size_t)m->words * 4);
		for (size_t i = 0; i < m->acc.n; i++)
			m->bits[m->acc.p[i] >> 5] |= 1u << (m->acc.p[i] & 31);
		e->rej = true;
		e->n_acc = v->n_sorted - (int32_t)m->acc.n;
		if (e->n_acc && !(e->acc = loom_malloc((size_t)e->n_acc * sizeof *e->acc)))
			goto oom;
		int32_t o = 0;
		for (int32_t i = 0; i < v->n_sorted; i++) {
			int32_t id = v->sorted[i];
			if (!(m->bits[id >> 5] >> (id & 31) & 1))
				e->acc[o++] = id;
		}
	} else {
		e->n_acc = (int32_t)m->acc.n;
		if (e->n_acc && !(e->acc = loom_malloc((size_t)e->n_acc * sizeof *e->acc)))
			goto oom;
		if (e->n_acc)
			memcpy(e->acc, m->acc.p, (size_t)e->n_acc * sizeof *e->acc);
	}
	e->n_unc = (int32_t)m->unc.n;
	if (e->n_unc && !(e->unc = loom_malloc((size_t)e->n_unc * sizeof *e->unc)))
		goto oom;
	if (e->n_unc)
		memcpy(e->unc, m->unc.p, (size_t)e->n_unc * sizeof *e->unc);
	size_t sz = entry_bytes(e);
	if (__atomic_add_fetch(&m->cache->bytes, sz, __ATOMIC_RELAXED) > GM_CACHE_LIMIT) {
		__atomic_sub_fetch(&m->cache->bytes, sz, __ATOMIC_RELAXED);
		*own = true;
		return e;
	}
	gm_entry *expect = NULL;
	if (!__atomic_compare_exchange_n(&m->cache->e[pos], &expect, e, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		__atomic_sub_fetch(&m->cache->bytes, sz, __ATOMIC_RELAXED);
		entry_free(e);
		e = expect;
	}
	return e;
oom:
	entry_free(e);
	m_fail(m, LOOM_ENOMEM);
	return NULL;
}

static void cache_free(gm_cache *c, int32_t n_pos)
{
	for (int32_t i = 0; i < n_pos; i++)
		entry_free(c->e[i]);
	loom_free(c->e);
	loom_free(c);
}

void loom_grammar_free(loom_grammar *g)
{
	if (!g)
		return;
	for (gm_cache *c = g->caches, *n; c; c = n) {
		n = c->next;
		cache_free(c, g->n_pos);
	}
	pthread_mutex_destroy(&g->lock);
	loom_free(g->rule_start);
	loom_free(g->be);
	loom_free(g->re);
	loom_free(g->be_off);
	loom_free(g->re_off);
	loom_free(g->final);
	loom_free(g);
}

/* ---- the matcher ---- */

/* Rebuilds the pool with only the stacks of m->cur (walks leave garbage). */
static loom_err compact(loom_grammar_matcher *m)
{
	gm_pool old = m->pool;
	int32_t *map = loom_malloc((size_t)old.n * sizeof *map);
	int32_t *chain = loom_malloc(GM_MAX_STACK * 2 * sizeof *chain);
	loom_err rc = LOOM_OK;
	if (!map || !chain) {
		rc = m_fail(m, LOOM_ENOMEM);
		goto out;
	}
	memset(map, 0xff, (size_t)old.n * sizeof *map);
	memset(&m->pool, 0, sizeof m->pool);
	for (size_t i = 0; i < m->cur.n; i++) {
		int32_t x = m->cur.p[i], nc = 0;
		while (x >= 0 && map[x] < 0 && nc < GM_MAX_STACK * 2) {
			chain[nc++] = x;
			x = old.parent[x];
		}
		int32_t below = x >= 0 ? map[x] : x;
		while (nc) {
			int32_t y = chain[--nc];
			if ((below = map[y] = cons(m, old.pos[y], below)) < 0) {
				rc = m->err;
				goto out;
			}
		}
		m->cur.p[i] = map[m->cur.p[i]];
	}
out:
	if (rc) {
		loom_free(m->pool.pos);
		loom_free(m->pool.parent);
		loom_free(m->pool.depth);
		loom_free(m->pool.mark);
		loom_free(m->pool.slot);
		m->pool = old;
	} else {
		loom_free(old.pos);
		loom_free(old.parent);
		loom_free(old.depth);
		loom_free(old.mark);
		loom_free(old.slot);
	}
	loom_free(map);
	loom_free(chain);
	return rc;
}

static gm_cache *cache_for(loom_grammar *g, const loom_grammar_vocab *v)
{
	gm_cache *c;
	pthread_mutex_lock(&g->lock);
	for (c = g->caches; c; c = c->next)
		if (c->serial == v->serial)
			goto out;
	if ((c = loom_calloc(1, sizeof *c))) {
		if (!(c->e = loom_calloc((size_t)g->n_pos, sizeof *c->e))) {
			loom_free(c);
			c = NULL;
			goto out;
		}
		c->serial = v->serial;
		c->next = g->caches;
		g->caches = c;
	}
out:
	pthread_mutex_unlock(&g->lock);
	return c;
}

loom_err loom_grammar_matcher_create(const loom_grammar *g, const loom_grammar_vocab *v,
				     loom_grammar_matcher **out)
{
	loom_grammar_matcher *m = loom_calloc(1, sizeof *m);
	loom_err rc;
	*out = NULL;
	if (!m)
		return loom_fail(LOOM_ENOMEM, "grammar matcher: out of memory");
	m->g = g;
	m->v = v;
	m->words = (v->n_vocab + 31) / 32;
	m->lv_start = loom_malloc(((size_t)v->max_len + 2) * sizeof *m->lv_start);
	m->lv_end = loom_malloc((size_t)v->max_len + 2);
	m->lv_seen = loom_malloc((size_t)v->max_len + 2);
	m->bits = loom_malloc((size_t)m->words * 4);
	m->universe = loom_calloc((size_t)m->words, 4);
	m->cache = cache_for((loom_grammar *)g, v); /* the cache is the grammar's only mutable part */
	if (!m->lv_start || !m->lv_end || !m->lv_seen || !m->bits || !m->universe || !m->cache) {
		rc = loom_fail(LOOM_ENOMEM, "grammar matcher: out of memory");
		goto fail;
	}
	for (int32_t i = 0; i < v->n_sorted; i++)
		m->universe[v->sorted[i] >> 5] |= 1u << (v->sorted[i] & 31);
	int32_t root = cons(m, g->rule_start[g->root], GM_NONE);
	if (root < 0) {
		rc = m->err;
		goto fail;
	}
	m->pool.stamp++;
	closure(m, root, &m->cur, &m->complete);
	if (m->err) {
		rc = m->err;
		goto fail;
	}
	*out = m;
	return LOOM_OK;
fail:
	loom_grammar_matcher_free(m);
	return rc;
}

void loom_grammar_matcher_free(loom_grammar_matcher *m)
{
	if (!m)
		return;
	loom_free(m->pool.pos);
	loom_free(m->pool.parent);
	loom_free(m->pool.depth);
	loom_free(m->pool.mark);
	loom_free(m->pool.slot);
	loom_free(m->cur.p);
	loom_free(m->lv.p);
	loom_free(m->lv_start);
	loom_free(m->lv_end);
	loom_free(m->lv_seen);
	loom_free(m->cstack.p);
	loom_free(m->acc.p);
	loom_free(m->unc.p);
	loom_free(m->tmp.p);
	loom_free(m->bits);
	loom_free(m->universe);
	loom_free(m);
}

static int cmp_by_pos(const void *a, const void *b, void *ctx)
{
	const gm_pool *p = ctx;
	int32_t x = p->pos[*(const int32_t *)a], y = p->pos[*(const int32_t *)b];
	return x < y ? -1 : x > y;
}

loom_err loom_grammar_matcher_fill_mask(loom_grammar_matcher *m, uint32_t *mask)
{
	const loom_grammar_vocab *v = m->v;
	memset(mask, 0, (size_t)m->words * 4);
	if (m->err)
		return loom_fail(m->err, "grammar matcher: failed earlier");
	if (m->eos_done)
		return LOOM_OK;
	if (m->pool.n > GM_COMPACT_NODES && compact(m))
		return m->err;
	/* group the stacks by their top position */
	m->tmp.n = 0;
	for (size_t i = 0; i < m->cur.n; i++)
		if (!ib_push(&m->tmp, m->cur.p[i]))
			return m_fail(m, LOOM_ENOMEM);
	if (m->tmp.n > 1)
		qsort_r(m->tmp.p, m->tmp.n, sizeof *m->tmp.p, cmp_by_pos, &m->pool);
	for (size_t i = 0; i < m->tmp.n;) {
		int32_t pos = m->pool.pos[m->tmp.p[i]];
		size_t j = i;
		while (j < m->tmp.n && m->pool.pos[m->tmp.p[j]] == pos)
			j++;
		bool own;
		gm_entry *e = entry_get(m, pos, &own);
		if (!e)
			return m->err;
		if (e->rej) {
			memcpy(m->bits, m->universe, (size_t)m->words * 4);
			for (int32_t k = 0; k < e->n_acc; k++)
				m->bits[e->acc[k] >> 5] &= ~(1u << (e->acc[k] & 31));
			for (int w = 0; w < m->words; w++)
				mask[w] |= m->bits[w];
		} else {
			for (int32_t k = 0; k < e->n_acc; k++)
				mask[e->acc[k] >> 5] |= 1u << (e->acc[k] & 31);
		}
		loom_err rc = LOOM_OK;
		if (e->n_unc)
			rc = walk(m, m->tmp.p + i, j - i, e->unc, e->n_unc, W_FULL, mask);
		if (own)
			entry_free(e);
		if (rc)
			return rc;
		i = j;
	}
	if (m->complete)
		for (int k = 0; k < v->n_eos; k++)
			mask[v->eos[k] >> 5] |= 1u << (v->eos[k] & 31);
	return LOOM_OK;
}

loom_err loom_grammar_matcher_accept(loom_grammar_matcher *m, int32_t id)
{
	const loom_grammar_vocab *v = m->v;
	if (m->err)
		return loom_fail(m->err, "grammar matcher: failed earlier");
	if (id < 0 || id >= v->n_vocab)
		return loom_fail(LOOM_EINVAL, "grammar: token id %d out of range", id);
	if (m->eos_done)
		return loom_fail(LOOM_EINVAL, "grammar: token %d after the end of the output", id);
	if (v->is_eos[id]) {
		if (!m->complete)
			return loom_fail(LOOM_EINVAL, "grammar: EOS before the output is complete");
		m->eos_done = true;
		m->cur.n = 0;
		return LOOM_OK;
	}
	uint32_t L = tok_len(v, id);
	const uint8_t *b = v->bytes + v->off[id];
	if (L == 0)
		return loom_fail(LOOM_EINVAL, "grammar: token %d is never allowed", id);
	if (m->pool.n > GM_COMPACT_NODES && compact(m))
		return m->err;
	/* level buffer: cur, then each byte's survivors after it */
	m->lv.n = 0;
	for (size_t i = 0; i < m->cur.n; i++)
		if (!ib_push(&m->lv, m->cur.p[i]))
			return m_fail(m, LOOM_ENOMEM);
	size_t s0 = 0, n0 = m->cur.n;
	bool end = false;
	for (uint32_t k = 0; k < L; k++) {
		size_t s1 = m->lv.n;
		end = false;
		step(m, s0, n0, b[k], &m->lv, &end);
		if (m->err)
			return m->err;
		s0 = s1;
		n0 = m->lv.n - s1;
		if (!n0 && !(k + 1 == L && end))
			return loom_fail(LOOM_EINVAL, "grammar: token %d is not allowed here", id);
	}
	m->cur.n = 0;
	for (size_t i = 0; i < n0; i++)
		ib_push(&m->cur, m->lv.p[s0 + i]); /* cannot fail: cur had room for more before? */
	if (m->cur.n != n0)
		return m_fail(m, LOOM_ENOMEM);
	m->complete = end;
	return LOOM_OK;
}

bool loom_grammar_matcher_done(const loom_grammar_matcher *m)
{
	return m->eos_done || (m->complete && m->cur.n == 0);
}

bool loom_grammar_matcher_can_end(const loom_grammar_matcher *m)
{
	return !m->eos_done && m->complete;
}
