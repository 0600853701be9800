/*
 * worker/guide.c — preparing structured-output matchers off the engine
 * thread: vocabularies per model, an LRU of compiled grammars, replay.
 *
 * Workload: a few models, tens of distinct schemas, requests arriving at
 * the engine's rate. The cache is a small array scanned linearly (at most
 * WK_GUIDE_CACHE entries, compared by hash then text); a grammar in use by
 * a request is never evicted (reference counts), so the cache may briefly
 * hold more than WK_GUIDE_CACHE entries while they are all in use.
 * Locking: g->mu guards the job queue, request states, the cache's
 * entries and counts and the vocabularies' pointers; compiling, loading a
 * tokenizer and replaying run without it (only the guide thread, or the
 * sync caller, does them, one at a time per guide).
 */
#include "guide.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/alloc.h"
#include "../common/log.h"
#include "../common/tokenizer.h"

enum { RQ_PENDING, RQ_READY, RQ_FAILED };

typedef struct g_entry {
	uint64_t hash;
	int kind;
	char *text;
	loom_grammar *gr;
	int refs;
	uint64_t lru;
} g_entry;

struct wk_guide_req {
	wk_guide_req *next;  /* job queue link */
	int mi;
	int32_t n_vocab;
	int32_t eos[LOOM_MAX_EOS];
	int n_eos;
	int kind;
	char *text;
	int32_t *replay;
	uint32_t n_replay;
	/* under g->mu */
	int state;
	bool busy;           /* the guide thread is preparing it */
	bool released;       /* the engine dropped it while busy */
	g_entry *entry;      /* the grammar (a reference) once ready */
	loom_grammar_matcher *m;
	loom_err code;
	char err[512];
};

typedef struct g_vocab {
	const loom_grammar_vocab *v;  /* NULL = not built yet */
	loom_grammar_vocab *owned;
	bool failed;
	loom_err code;
	char err[512];
} g_vocab;

struct wk_guide {
	wk_res *res;
	bool sync;
	wk_guide_wake_fn wake;
	void *wake_ctx;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	bool has_thread, stop;
	wk_guide_req *q_head, *q_tail;
	g_vocab vocab[WK_RES_MAX_MODELS];
	g_entry *cache;      /* [cap] */
	int n_cache, cap;
	uint64_t clock;
	wk_guide_stats st;
};

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint64_t fnv(int kind, const char *s)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)kind;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ULL;
	return h;
}

/* ---- vocabularies ---- */

/* Without g->mu (the preparing thread): model mi's vocabulary, built on
 * first need; NULL with *code/err set on failure (remembered). */
static const loom_grammar_vocab *vocab_of(wk_guide *g, const wk_guide_req *r, loom_err *code,
					  char *err, size_t n)
{
	g_vocab *gv = &g->vocab[r->mi];
	char *json = NULL;
	size_t len = 0;
	loom_tok *tok = NULL;
	loom_grammar_vocab *v = NULL;
	loom_err rc;
	double t0 = now_ms();

	pthread_mutex_lock(&g->mu);
	const loom_grammar_vocab *have = gv->v;
	bool failed = gv->failed;
	if (failed) {
		*code = gv->code;
		snprintf(err, n, "%s", gv->err);
	}
	pthread_mutex_unlock(&g->mu);
	if (have || failed)
		return have;
	if (r->n_eos < 1) {
		rc = loom_fail(LOOM_EUNSUPPORTED, "the model lists no EOS id, so a constrained "
			       "output could never end");
	} else if (!(rc = wk_res_model_tokenizer(g->res, r->mi, &json, &len)) &&
		   !(rc = loom_tok_load_json(json, len, "tokenizer.json", &tok))) {
		rc = loom_grammar_vocab_from_tok(tok, r->n_vocab, r->eos, r->n_eos, &v);
	}
	loom_free(json);
	loom_tok_free(tok);
	pthread_mutex_lock(&g->mu);
	g->st.vocab_ms += now_ms() - t0;
	if (rc) {
		gv->failed = true;
		gv->code = rc;
		snprintf(gv->err, sizeof gv->err, "structured output: %s", loom_errmsg());
		*code = rc;
		snprintf(err, n, "%s", gv->err);
	} else {
		gv->owned = v;
		gv->v = v;
	}
	pthread_mutex_unlock(&g->mu);
	return v;
}

void wk_guide_set_vocab(wk_guide *g, int mi, const loom_grammar_vocab *v)
{
	if (mi < 0 || mi >= WK_RES_MAX_MODELS)
		return;
	pthread_mutex_lock(&g->mu);
	g->vocab[mi].v = v;
	g->vocab[mi].failed = false;
	pthread_mutex_unlock(&g->mu);
}

/* ---- the grammar cache ---- */

/* Under g->mu: the entry of (kind, text), referenced, or NULL. */
static g_entry *cache_find(wk_guide *g, int kind, const char *text, uint64_t h)
{
	for (int i = 0; i < g->n_cache; i++) {
		g_entry *e = &g->cache[i];
		if (e->hash == h && e->kind == kind && !strcmp(e->text, text)) {
			e->refs++;
			e->lru = ++g->clock;
			return e;
		}
	}
	return NULL;
}

/* Under g->mu: keeps gr (taking it) under (kind, text) with one reference,
 * first evicting the least recently used unreferenced entry when
 * WK_GUIDE_CACHE are live. Slots never move (requests point at them).
 * NULL when every slot is in use or out of memory: the caller keeps the
 * grammar uncached. */
static g_entry *cache_put(wk_guide *g, int kind, const char *text, uint64_t h, loom_grammar *gr)
{
	int live = 0, victim = -1, slot = -1;
	char *t;

	for (int i = 0; i < g->n_cache; i++) {
		g_entry *e = &g->cache[i];
		if (!e->gr) {
			if (slot < 0)
				slot = i;
			continue;
		}
		live++;
		if (!e->refs && (victim < 0 || e->lru < g->cache[victim].lru))
			victim = i;
	}
	if (live >= WK_GUIDE_CACHE && victim >= 0) {
		loom_grammar_free(g->cache[victim].gr);
		loom_free(g->cache[victim].text);
		memset(&g->cache[victim], 0, sizeof g->cache[victim]);
		slot = victim;
	}
	if (slot < 0 && g->n_cache < g->cap)
		slot = g->n_cache++;
	if (slot < 0 || !(t = loom_strdup(text)))
		return NULL;
	g->cache[slot] = (g_entry){ .hash = h, .kind = kind, .text = t, .gr = gr, .refs = 1,
				    .lru = ++g->clock };
	return &g->cache[slot];
}

/* Under g->mu: drops a reference; an entry outside the cache (no text) is freed. */
static void entry_release(g_entry *e)
{
	if (e && --e->refs == 0 && !e->text) {
		loom_grammar_free(e->gr);
		loom_free(e);
	}
}

/* ---- preparation ---- */

/* Without g->mu: the grammar, matcher and replay of r; sets its state. */
static void prepare(wk_guide *g, wk_guide_req *r)
{
	loom_err code = LOOM_OK;
	char err[512] = "";
	loom_grammar_matcher *m = NULL;
	g_entry *e = NULL;
	uint64_t h = fnv(r->kind, r->text);
	const loom_grammar_vocab *v = vocab_of(g, r, &code, err, sizeof err);

	if (!v)
		goto done;
	pthread_mutex_lock(&g->mu);
	e = cache_find(g, r->kind, r->text, h);
	if (e)
		g->st.hits++;
	pthread_mutex_unlock(&g->mu);
	if (!e) {
		loom_grammar *gr = NULL;
		double t0 = now_ms();
		code = loom_grammar_from_guide(r->kind, r->text, &gr);
		double dt = now_ms() - t0;
		if (code) {
			snprintf(err, sizeof err, "structured output: %s", loom_errmsg());
			goto done;
		}
		pthread_mutex_lock(&g->mu);
		g->st.compiles++;
		g->st.compile_ms += dt;
		e = cache_put(g, r->kind, r->text, h, gr);
		pthread_mutex_unlock(&g->mu);
		if (!e) { /* uncached: an entry of its own */
			e = loom_calloc(1, sizeof *e);
			if (!e) {
				loom_grammar_free(gr);
				code = loom_fail(LOOM_ENOMEM, "out of memory");
				snprintf(err, sizeof err, "worker out of memory compiling a grammar");
				goto done;
			}
			*e = (g_entry){ .hash = h, .kind = r->kind, .gr = gr, .refs = 1 };
		}
	}
	if ((code = loom_grammar_matcher_create(e->gr, v, &m))) {
		snprintf(err, sizeof err, "structured output: %s", loom_errmsg());
		goto done;
	}
	for (uint32_t i = 0; i < r->n_replay; i++) {
		if ((code = loom_grammar_matcher_accept(m, r->replay[i]))) {
			snprintf(err, sizeof err, "structured output: resumed token %" PRIu32
				 " (id %" PRId32 ") does not follow the guide", i, r->replay[i]);
			goto done;
		}
	}
done:
	pthread_mutex_lock(&g->mu);
	if (code) {
		loom_grammar_matcher_free(m);
		m = NULL;
		entry_release(e);
		e = NULL;
		r->code = code;
		snprintf(r->err, sizeof r->err, "%s", err);
		r->state = RQ_FAILED;
	} else {
		r->m = m;
		r->entry = e;
		r->state = RQ_READY;
	}
	pthread_mutex_unlock(&g->mu);
}

static void req_free_locked(wk_guide_req *r)
{
	loom_grammar_matcher_free(r->m);
	entry_release(r->entry);
	loom_free(r->text);
	loom_free(r->replay);
	loom_free(r);
}

static void *guide_main(void *arg)
{
	wk_guide *g = arg;

	pthread_mutex_lock(&g->mu);
	for (;;) {
		while (!g->stop && !g->q_head)
			pthread_cond_wait(&g->cv, &g->mu);
		if (g->stop)
			break;
		wk_guide_req *r = g->q_head;
		g->q_head = r->next;
		if (!g->q_head)
			g->q_tail = NULL;
		r->busy = true;
		pthread_mutex_unlock(&g->mu);
		prepare(g, r);
		pthread_mutex_lock(&g->mu);
		r->busy = false;
		if (r->released) {
			req_free_locked(r);
			continue;
		}
		pthread_mutex_unlock(&g->mu);
		if (g->wake)
			g->wake(g->wake_ctx);
		pthread_mutex_lock(&g->mu);
	}
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

/* ---- API ---- */

loom_err wk_guide_create(wk_res *res, bool sync, wk_guide_wake_fn wake, void *ctx,
			 wk_guide **out)
{
	wk_guide *g = loom_calloc(1, sizeof *g);

	*out = NULL;
	if (!g || !(g->cache = loom_calloc(4 * WK_GUIDE_CACHE, sizeof *g->cache))) {
		loom_free(g);
		return loom_fail(LOOM_ENOMEM, "guide: out of memory");
	}
	g->cap = 4 * WK_GUIDE_CACHE;
	g->res = res;
	g->sync = sync;
	g->wake = wake;
	g->wake_ctx = ctx;
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	*out = g;
	return LOOM_OK;
}

void wk_guide_destroy(wk_guide *g)
{
	if (!g)
		return;
	if (g->has_thread) {
		pthread_mutex_lock(&g->mu);
		g->stop = true;
		pthread_cond_signal(&g->cv);
		pthread_mutex_unlock(&g->mu);
		pthread_join(g->thread, NULL);
	}
	while (g->q_head) {
		wk_guide_req *r = g->q_head;
		g->q_head = r->next;
		req_free_locked(r);
	}
	for (int i = 0; i < g->n_cache; i++) {
		loom_grammar_free(g->cache[i].gr);
		loom_free(g->cache[i].text);
	}
	for (int i = 0; i < WK_RES_MAX_MODELS; i++)
		loom_grammar_vocab_free(g->vocab[i].owned);
	loom_free(g->cache);
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->mu);
	loom_free(g);
}

loom_err wk_guide_start(wk_guide *g, int mi, const loom_model_config *cfg,
			const loom_sampling *sp, const int32_t *replay, uint32_t n_replay,
			wk_guide_req **out)
{
	wk_guide_req *r = loom_calloc(1, sizeof *r);
	loom_err rc = LOOM_OK;

	*out = NULL;
	if (!r)
		return loom_fail(LOOM_ENOMEM, "guide: out of memory");
	r->mi = mi;
	r->n_vocab = cfg->vocab;
	r->n_eos = cfg->n_eos < LOOM_MAX_EOS ? cfg->n_eos : LOOM_MAX_EOS;
	memcpy(r->eos, cfg->eos_ids, (size_t)r->n_eos * sizeof *r->eos);
	r->kind = sp->guide;
	r->text = loom_strdup(sp->guide_text ? sp->guide_text : "");
	if (n_replay && (r->replay = loom_malloc((size_t)n_replay * sizeof *r->replay)))
		memcpy(r->replay, replay, (size_t)n_replay * sizeof *r->replay);
	r->n_replay = n_replay;
	if (!r->text || (n_replay && !r->replay)) {
		req_free_locked(r);
		return loom_fail(LOOM_ENOMEM, "guide: out of memory");
	}
	if (mi < 0 || mi >= WK_RES_MAX_MODELS) {
		r->state = RQ_FAILED;
		r->code = LOOM_EINVAL;
		snprintf(r->err, sizeof r->err, "structured output: no model %d", mi);
		*out = r;
		return LOOM_OK;
	}
	if (g->sync) {
		prepare(g, r);
		*out = r;
		return LOOM_OK;
	}
	pthread_mutex_lock(&g->mu);
	if (!g->has_thread) {
		int err = pthread_create(&g->thread, NULL, guide_main, g);
		if (err)
			rc = loom_fail(LOOM_EINTERNAL, "guide: cannot start its thread (%s)",
				       strerror(err));
		else
			g->has_thread = true;
	}
	if (!rc) {
		if (g->q_tail)
			g->q_tail->next = r;
		else
			g->q_head = r;
		g->q_tail = r;
		pthread_cond_signal(&g->cv);
	}
	pthread_mutex_unlock(&g->mu);
	if (rc) {
		req_free_locked(r);
		return rc;
	}
	*out = r;
	return LOOM_OK;
}

int wk_guide_poll(wk_guide *g, wk_guide_req *r, loom_grammar_matcher **m, loom_err *code,
		  char *err, size_t n)
{
	int st;

	pthread_mutex_lock(&g->mu);
	st = r->state;
	if (st == RQ_READY)
		*m = r->m;
	if (st == RQ_FAILED) {
		*code = r->code;
		snprintf(err, n, "%s", r->err);
	}
	pthread_mutex_unlock(&g->mu);
	return st == RQ_READY ? 1 : st == RQ_FAILED ? -1 : 0;
}

void wk_guide_release(wk_guide *g, wk_guide_req *r)
{
	if (!r)
		return;
	pthread_mutex_lock(&g->mu);
	if (r->busy) {
		r->released = true; /* the guide thread frees it when done */
	} else {
		wk_guide_req **pp = &g->q_head, *prev = NULL;
		while (*pp && *pp != r) {
			prev = *pp;
			pp = &(*pp)->next;
		}
		if (*pp) { /* still queued */
			*pp = r->next;
			if (g->q_tail == r)
				g->q_tail = prev;
		}
		req_free_locked(r);
	}
	pthread_mutex_unlock(&g->mu);
}

void wk_guide_stats_get(wk_guide *g, wk_guide_stats *out)
{
	pthread_mutex_lock(&g->mu);
	*out = g->st;
	out->cached = 0;
	for (int i = 0; i < g->n_cache; i++)
		out->cached += g->cache[i].gr != NULL;
	pthread_mutex_unlock(&g->mu);
}
