/*
 * tests/worker/test_prefix.c — the prefix cache (worker/kv.h, the engine's
 * admission in sched.c) on the real stories260k model.
 *
 * White-box, on a pool: keys chain (a block matches only after its parent),
 * namespaces never mix, released blocks stay cached and are evicted oldest
 * first, an evicted parent orphans its children (epochs), identical blocks
 * computed twice are shared.
 * Engine: requests sharing prefixes across the base model and two adapters,
 * greedy and seeded with logprobs, give the same token ids and the same
 * logprobs to the bit with the cache on and off; a request reuses blocks
 * only of its own namespace (an adapter's request after a base one with
 * the same prompt reuses nothing); an adapter replaced under its name
 * reuses nothing of the old version; a pool too small to keep everything
 * still completes every request with the same tokens; identical prompts
 * arriving together are prefilled once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "tests/support/harness.h"
#include "worker/engine.h"
#include "worker/kv.h"
#include "worker/sample.h"

static wk_model *model;
static char *ad_root;

/* ---------------------------------------------------------------- */
/* white-box: the pool                                               */
/* ---------------------------------------------------------------- */

#define BS 4

static void toks_of(int32_t *t, int block, int salt)
{
	for (int i = 0; i < BS; i++)
		t[i] = 100 + block * BS + i + salt;
}

/* Gives kv n full blocks (len at their end) and registers them. */
static void fill(wk_kv *kv, int n, int salt)
{
	int32_t t[BS];
	assert_int_equal(wk_kv_reserve(kv, n * BS - kv->len), LOOM_OK);
	kv->len = n * BS; /* the forward's job */
	for (int j = kv->n_keyed; j < n; j++) { /* n_keyed stays with the cache off */
		toks_of(t, j, salt);
		wk_kv_commit(kv, t);
	}
}

static int match_all(wk_kv *kv, int max, int salt)
{
	int32_t t[BS];
	while (kv->n_blocks < max) {
		toks_of(t, kv->n_blocks, salt);
		if (!wk_kv_match(kv, t))
			break;
	}
	return kv->n_blocks;
}

static void test_pool_keys(void **state)
{
	(void)state;
	uint8_t ns1[32] = { 1 }, ns2[32] = { 2 };
	wk_kvpool *p;
	wk_kv a, b, c, d;
	wk_kv_prefix_stats st;

	assert_int_equal(wk_kvpool_create(model, 8, BS, &p), LOOM_OK);
	wk_kv_init(&a, p);
	wk_kv_set_ns(&a, ns1);
	fill(&a, 3, 0);
	int32_t held[3] = { a.blocks[0], a.blocks[1], a.blocks[2] };
	wk_kv_release(&a);
	wk_kvpool_prefix_stats(p, &st);
	assert_int_equal(st.keyed, 3);
	assert_int_equal(st.cached, 3);
	assert_int_equal(wk_kvpool_free_blocks(p), 8); /* cached blocks count as free */

	/* the same namespace and tokens: the same blocks, in order */
	wk_kv_init(&b, p);
	wk_kv_set_ns(&b, ns1);
	assert_int_equal(match_all(&b, 8, 0), 3);
	assert_memory_equal(b.blocks, held, sizeof held);
	assert_int_equal(b.len, 3 * BS);
	wk_kvpool_prefix_stats(p, &st);
	assert_int_equal(st.cached, 0);
	assert_int_equal(wk_kvpool_free_blocks(p), 5);

	/* another namespace: nothing; the same namespace with block 1
	 * different: block 0 only (block 2's tokens equal, its parent not) */
	wk_kv_init(&c, p);
	wk_kv_set_ns(&c, ns2);
	assert_int_equal(match_all(&c, 8, 0), 0);
	wk_kv_init(&d, p);
	wk_kv_set_ns(&d, ns1);
	int32_t t[BS];
	toks_of(t, 0, 0);
	assert_true(wk_kv_match(&d, t));
	toks_of(t, 1, 7);
	assert_false(wk_kv_match(&d, t));
	toks_of(t, 2, 0);
	assert_false(wk_kv_match(&d, t));
	assert_int_equal(d.n_blocks, 1);
	assert_int_equal(p == d.pool, 1);

	/* two sequences computing the same blocks: the second shares the first's */
	wk_kv_release(&d);
	fill(&c, 2, 50);
	wk_kv e;
	wk_kv_init(&e, p);
	wk_kv_set_ns(&e, ns2);
	fill(&e, 2, 50);
	assert_memory_equal(e.blocks, c.blocks, 2 * sizeof(int32_t));
	wk_kvpool_prefix_stats(p, &st);
	assert_int_equal(st.keyed, 5);

	/* everything released, then a sequence taking the whole pool evicts
	 * every cached block: nothing matches afterwards */
	wk_kv_release(&b);
	wk_kv_release(&c);
	wk_kv_release(&e);
	wk_kv big;
	wk_kv_init(&big, p);
	assert_int_equal(wk_kv_reserve(&big, 8 * BS), LOOM_OK);
	wk_kvpool_prefix_stats(p, &st);
	assert_int_equal(st.keyed, 0);
	assert_true(st.evictions >= 5);
	wk_kv_release(&big);
	assert_int_equal(match_all(&b, 8, 0), 0);

	/* an evicted parent orphans its child: chain of 3 cached, take exactly
	 * one block (the oldest cached is the chain's tail, then the middle
	 * one, then the head): the head survives two takes, the child does not
	 * survive its parent's eviction */
	fill(&a, 3, 0);
	wk_kv_release(&a);
	wk_kv one;
	wk_kv_init(&one, p);
	assert_int_equal(wk_kv_reserve(&one, 6 * BS), LOOM_OK); /* 5 free + the tail */
	assert_int_equal(match_all(&b, 8, 0), 2);
	wk_kv_release(&b);
	wk_kv_release(&one);
	wk_kv_fini(&a);
	wk_kv_fini(&b);
	wk_kv_fini(&c);
	wk_kv_fini(&d);
	wk_kv_fini(&e);
	wk_kv_fini(&big);
	wk_kv_fini(&one);

	/* off: no keys, nothing cached */
	wk_kvpool_set_prefix_cache(p, false);
	wk_kv_init(&a, p);
	wk_kv_set_ns(&a, ns1);
	fill(&a, 2, 0);
	wk_kv_release(&a);
	wk_kvpool_prefix_stats(p, &st);
	assert_int_equal(st.keyed, 0);
	assert_int_equal(match_all(&a, 8, 0), 0);
	wk_kv_fini(&a);
	wk_kvpool_destroy(p);
}

/* ---------------------------------------------------------------- */
/* the engine                                                        */
/* ---------------------------------------------------------------- */

#define MAX_REQ 32
#define MAX_OUT 64

typedef struct rec {
	uint64_t req;
	int32_t ids[MAX_OUT];
	float lp[MAX_OUT];
	int n;
	int finish;
	uint32_t n_cached;
	bool err;
} rec;

typedef struct coll {
	pthread_mutex_t mu;
	rec r[MAX_REQ];
	int n;
} coll;

static rec *get(coll *c, uint64_t req)
{
	for (int i = 0; i < c->n; i++)
		if (c->r[i].req == req)
			return &c->r[i];
	assert_true(c->n < MAX_REQ);
	c->r[c->n].req = req;
	c->r[c->n].finish = -1;
	return &c->r[c->n++];
}

static void on_emit(void *ctx, const loom_msg *m)
{
	coll *c = ctx;
	pthread_mutex_lock(&c->mu);
	if (m->type == LOOM_MSG_STEP) {
		for (uint32_t i = 0; i < m->u.step.n_items; i++) {
			const loom_step_item *it = &m->u.step.items[i];
			rec *r = get(c, it->req);
			for (uint32_t k = 0; k < it->n_ids && r->n < MAX_OUT; k++) {
				r->lp[r->n] = it->lp.n ? it->lp.lp[k] : 0.0f;
				r->ids[r->n++] = it->ids[k];
			}
			r->n_cached = it->n_cached;
			if (it->finish)
				r->finish = it->finish;
		}
	} else if (m->type == LOOM_MSG_ERROR) {
		get(c, m->u.error.req)->err = true;
		fprintf(stderr, "error for %llu: %s\n", (unsigned long long)m->u.error.req,
			m->u.error.message);
	}
	pthread_mutex_unlock(&c->mu);
}

typedef struct spec {
	uint64_t req;
	const char *adapter;
	int32_t prompt[200];
	uint32_t n_prompt;
	loom_sampling sp;
} spec;

static void submit(wk_engine *e, const spec *s)
{
	loom_msg_submit m;
	memset(&m, 0, sizeof m);
	m.req = s->req;
	snprintf(m.model, sizeof m.model, "stories260k");
	snprintf(m.adapter, sizeof m.adapter, "%s", s->adapter ? s->adapter : "");
	m.n_prompt = s->n_prompt;
	m.prompt_ids = (int32_t *)s->prompt;
	m.sampling = s->sp;
	assert_int_equal(wk_engine_submit(e, &m), LOOM_OK);
}

static void run_all(wk_engine *e)
{
	for (int guard = 0; guard < 20000; guard++)
		if (wk_engine_step(e) == 0)
			return;
	fail_msg("engine did not finish");
}

static const struct {
	const char *name, *args;
} ad_specs[] = {
	{ "qv", "--rank 4 --alpha 8 --targets q_proj,v_proj --seed 21" },
	{ "all", "--rank 8 --alpha 16 --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,"
		 "down_proj --seed 22" },
};

static ad_adapter *load_adapter(int i, const char *name)
{
	char dir[600];
	ad_adapter *a;
	snprintf(dir, sizeof dir, "%s/%s", ad_root, ad_specs[i].name);
	if (ad_adapter_load(dir, name, &model->cfg, &a))
		fail_msg("ad_adapter_load %s: %s", dir, loom_errmsg());
	return a;
}

static wk_engine *engine(coll *c, bool cache, int kv_blocks, int budget)
{
	wk_engine_opts o = { .manual = true, .no_prefix_cache = !cache, .kv_blocks = kv_blocks,
			     .max_batch_tokens = budget };
	wk_engine *e;
	memset(c, 0, sizeof *c);
	pthread_mutex_init(&c->mu, NULL);
	assert_int_equal(wk_engine_create(&model, 1, &o, on_emit, c, &e), LOOM_OK);
	for (int i = 0; i < 2; i++)
		assert_int_equal(wk_engine_add_adapter(e, "stories260k",
						       load_adapter(i, ad_specs[i].name)), LOOM_OK);
	return e;
}

static void fill_prompt(int32_t *p, int from, int to, uint64_t seed)
{
	for (int i = from; i < to; i++)
		p[i] = 3 + (int32_t)(wk_rand_uniform(seed, (uint64_t)i) * (model->cfg.vocab - 3));
}

/* n requests: a 50-token system prompt shared by all, then per-request
 * suffixes; pairs of requests share longer prefixes (a second turn); every
 * third uses adapter qv, every third adapter all; odd ones sample (seeded),
 * all report logprobs. Request i+1 of a pair repeats i's prompt plus more. */
static void make_specs(spec *s, int n)
{
	for (int i = 0; i < n; i++) {
		spec *x = &s[i];
		memset(x, 0, sizeof *x);
		x->req = 100 + (uint64_t)i;
		x->prompt[0] = 1;
		fill_prompt(x->prompt, 1, 50, 7);
		if (i % 2 == 1) {
			memcpy(x->prompt, s[i - 1].prompt, s[i - 1].n_prompt * sizeof(int32_t));
			fill_prompt(x->prompt, (int)s[i - 1].n_prompt, (int)s[i - 1].n_prompt + 23,
				    900 + (uint64_t)i);
			x->n_prompt = s[i - 1].n_prompt + 23;
		} else {
			x->n_prompt = 50 + 5 + (uint32_t)(i * 3) % 29;
			fill_prompt(x->prompt, 50, (int)x->n_prompt, 300 + (uint64_t)i);
		}
		x->adapter = (i / 2) % 3 == 1 ? "qv" : (i / 2) % 3 == 2 ? "all" : NULL;
		x->sp = (loom_sampling){ .temperature = i % 4 == 3 ? 0.8f : 0.0f, .top_p = 1.0f,
					 .max_tokens = 12, .seed = 5 + (uint64_t)i,
					 .ignore_eos = true, .logprobs = true };
	}
}

/* Runs the specs in waves of `wave` (each wave after the last finished). */
static void run_specs(coll *c, wk_engine *e, const spec *s, int n, int wave)
{
	for (int i = 0; i < n; i += wave) {
		for (int k = i; k < n && k < i + wave; k++)
			submit(e, &s[k]);
		run_all(e);
	}
	for (int i = 0; i < n; i++) {
		rec *r = get(c, s[i].req);
		assert_false(r->err);
		assert_int_equal(r->n, 12);
		assert_int_equal(r->finish, LOOM_FINISH_LENGTH);
	}
}

static void assert_same(coll *a, coll *b, const spec *s, int n)
{
	for (int i = 0; i < n; i++) {
		rec *x = get(a, s[i].req), *y = get(b, s[i].req);
		assert_memory_equal(x->ids, y->ids, sizeof(int32_t) * 12);
		/* bit-equal logprobs: the cached K/V are the bits a recompute gives */
		assert_memory_equal(x->lp, y->lp, sizeof(float) * 12);
	}
}

#define N_SPEC 12

static void make_adapters(void)
{
	if (ad_root)
		return;
	ad_root = lt_tmpdir("prefix-ad");
	for (int i = 0; i < 2; i++)
		if (lt_sh("'%s' adapter --model '%s' --out '%s/%s' %s >/dev/null",
			  lt_bin_path("loom-mkmodel"), lt_shared_path("models/stories260k"), ad_root,
			  ad_specs[i].name, ad_specs[i].args))
			fail_msg("loom-mkmodel adapter %s failed", ad_specs[i].name);
}

static void test_on_off_same(void **state)
{
	(void)state;
	static spec s[N_SPEC];
	coll on, off;
	wk_prefix_info pi;

	make_adapters();
	make_specs(s, N_SPEC);
	wk_engine *e_off = engine(&off, false, 0, 0);
	run_specs(&off, e_off, s, N_SPEC, 2);
	wk_engine_prefix_info(e_off, -1, &pi);
	assert_true(pi.cached_tokens == 0);
	wk_engine_destroy(e_off);

	/* one at a time, so each finds what the earlier ones left */
	wk_engine *e_on = engine(&on, true, 0, 0);
	run_specs(&on, e_on, s, N_SPEC, 1);
	assert_same(&on, &off, s, N_SPEC);
	/* the first request of each namespace reuses nothing (0: base, 2: qv,
	 * 4: all: the same 50-token system prompt each time); later ones reuse
	 * the system prompt's 3 full blocks, second turns their first turn */
	for (int i = 0; i < N_SPEC; i++) {
		rec *r = get(&on, s[i].req);
		uint32_t want = i % 2 == 1 ? s[i - 1].n_prompt / 16 * 16 : i < 6 ? 0 : 48;
		/* a second turn's prompt = the first turn's prompt + 23 new ids
		 * (not its output), so the first turn's full prompt blocks match */
		printf("  req %d (%s, %u tokens): %u cached\n", i, s[i].adapter ? s[i].adapter : "base",
		       s[i].n_prompt, r->n_cached);
		assert_int_equal(r->n_cached, want);
	}
	wk_engine_prefix_info(e_on, -1, &pi);
	assert_true(pi.cached_tokens > 0 && pi.keyed_blocks > 0);
	wk_engine_destroy(e_on);

	/* all at once, chunked prefill beside decodes: still the same */
	wk_engine *e_mix = engine(&on, true, 0, 24);
	run_specs(&on, e_mix, s, N_SPEC, N_SPEC);
	assert_same(&on, &off, s, N_SPEC);
	wk_engine_destroy(e_mix);
}

static void test_small_pool(void **state)
{
	(void)state;
	static spec s[N_SPEC];
	coll on, off;

	make_adapters();
	make_specs(s, N_SPEC);
	wk_engine *e_off = engine(&off, false, 0, 0);
	run_specs(&off, e_off, s, N_SPEC, 4);
	wk_engine_destroy(e_off);
	/* 14 blocks: the longest context needs 9; cached blocks are evicted and
	 * running ones preempted all along */
	wk_engine *e = engine(&on, true, 14, 32);
	run_specs(&on, e, s, N_SPEC, 4);
	assert_same(&on, &off, s, N_SPEC);
	printf("  14-block pool: %llu preemptions\n",
	       (unsigned long long)wk_engine_preemptions(e));
	assert_true(wk_engine_preemptions(e) > 0);
	wk_engine_destroy(e);
}

static void test_adapter_replaced(void **state)
{
	(void)state;
	static spec s[1];
	coll c, ref;

	make_adapters();
	make_specs(s, 1);
	s[0].adapter = "x";
	s[0].sp.max_tokens = 12;
	/* the reference: "x" = all's weights, fresh engine */
	wk_engine *e = engine(&ref, true, 0, 0);
	assert_int_equal(wk_engine_add_adapter(e, "stories260k", load_adapter(1, "x")), LOOM_OK);
	run_specs(&ref, e, s, 1, 1);
	wk_engine_destroy(e);

	e = engine(&c, true, 0, 0);
	assert_int_equal(wk_engine_add_adapter(e, "stories260k", load_adapter(0, "x")), LOOM_OK);
	run_specs(&c, e, s, 1, 1);
	rec *r = get(&c, s[0].req);
	assert_int_equal(r->n_cached, 0);
	wk_prefix_info before, after;
	wk_engine_prefix_info(e, 0, &before);
	assert_true(before.keyed_blocks >= 3);
	/* "x" replaced: the old version's blocks stay cached but never match */
	assert_int_equal(wk_engine_add_adapter(e, "stories260k", load_adapter(1, "x")), LOOM_OK);
	s[0].req = 777;
	run_specs(&c, e, s, 1, 1);
	r = get(&c, 777);
	assert_int_equal(r->n_cached, 0);
	wk_engine_prefix_info(e, 0, &after);
	assert_true(after.cached_tokens == before.cached_tokens);
	assert_memory_equal(r->ids, get(&ref, 100)->ids, sizeof(int32_t) * 12);
	assert_memory_equal(r->lp, get(&ref, 100)->lp, sizeof(float) * 12);
	/* the same version again: now it reuses */
	s[0].req = 778;
	run_specs(&c, e, s, 1, 1);
	assert_int_equal(get(&c, 778)->n_cached, s[0].n_prompt / 16 * 16);
	wk_engine_destroy(e);
}

static void test_prefilled_once(void **state)
{
	(void)state;
	static spec s[4];
	coll c, alone;
	wk_prefix_info pi;

	make_adapters();
	make_specs(s, 1);
	s[0].n_prompt = 70; /* 4 full blocks + 6 */
	fill_prompt(s[0].prompt, 50, 70, 31);
	for (int i = 1; i < 4; i++) {
		s[i] = s[0];
		s[i].req = 100 + (uint64_t)i;
	}
	for (int i = 0; i < 4; i++) {
		s[i].sp.temperature = 0.9f;
		s[i].sp.seed = 1000 + (uint64_t)i;
	}
	wk_engine *e = engine(&alone, false, 0, 0);
	run_specs(&alone, e, s, 4, 1);
	wk_engine_destroy(e);

	e = engine(&c, true, 0, 0);
	run_specs(&c, e, s, 4, 4);
	assert_same(&c, &alone, s, 4);
	wk_engine_prefix_info(e, -1, &pi);
	/* computed: 70 once, then 6 per other choice (its partial last block) */
	printf("  4 x 70 tokens together: %llu context tokens, %llu from the cache\n",
	       (unsigned long long)pi.ctx_tokens, (unsigned long long)pi.cached_tokens);
	assert_true(pi.ctx_tokens == 4 * 70);
	assert_true(pi.ctx_tokens - pi.cached_tokens == 70 + 3 * 6);
	wk_engine_destroy(e);
}

static int setup(void **state)
{
	(void)state;
	if (wk_model_load(lt_shared_path("models/stories260k"), "stories260k", &model)) {
		fprintf(stderr, "cannot load stories260k: %s\n", loom_errmsg());
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	wk_model_destroy(model);
	if (ad_root) {
		lt_sh("rm -rf '%s'", ad_root);
		loom_free(ad_root);
	}
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pool_keys),
		cmocka_unit_test(test_on_off_same),
		cmocka_unit_test(test_small_pool),
		cmocka_unit_test(test_adapter_replaced),
		cmocka_unit_test(test_prefilled_once),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
