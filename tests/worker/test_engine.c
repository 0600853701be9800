/*
 * tests/worker/test_engine.c — the engine loop in-process on the real
 * stories260k model: results equal a hand-driven wk_forward + wk_sample
 * loop, batching (concurrent, staggered, chunked prefill) changes no token,
 * finish reasons, cancel, bad requests, stats, the threaded mode.
 * Paged KV: with a pool a third of what the requests need, preemption by
 * recompute still gives every request its tokens (greedy and seeded
 * sampling); a request bigger than the pool is refused. Adapters: random
 * PEFT adapters (loom-mkmodel) of mixed ranks and targets plus base-only
 * requests in one staggered run give each request the tokens it gets
 * alone; replacing an adapter keeps running requests on the old one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "tests/support/harness.h"
#include "worker/engine.h"
#include "worker/forward.h"
#include "worker/sample.h"

static wk_model *model;
static char *ad_root; /* random adapters, written by the first test needing them */

/* ---------------------------------------------------------------- */
/* collecting what the engine emits                                  */
/* ---------------------------------------------------------------- */

#define MAX_RECS 64
#define MAX_OUT 600

typedef struct rec {
	uint64_t req;
	int32_t ids[MAX_OUT];
	int n;
	int finish;          /* -1 while running */
	int after_finish;    /* items seen after a finishing one (must stay 0) */
	int bad_items;       /* items with != 1 id that were not ABORT */
	uint32_t n_prompt;
	int first_step;      /* collector step index of the first token */
	bool has_err;
	uint32_t err_code;
	char err[256];
} rec;

typedef struct coll {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	rec recs[MAX_RECS];
	int n_recs;
	int steps;           /* STEP messages */
	int max_items;       /* largest STEP */
	int done;            /* finished or errored requests */
} coll;

static void coll_init(coll *c)
{
	memset(c, 0, sizeof *c);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
}

static void coll_fini(coll *c)
{
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
}

static rec *coll_get(coll *c, uint64_t req)
{
	for (int i = 0; i < c->n_recs; i++)
		if (c->recs[i].req == req)
			return &c->recs[i];
	assert_true(c->n_recs < MAX_RECS);
	rec *r = &c->recs[c->n_recs++];
	r->req = req;
	r->finish = -1;
	r->first_step = -1;
	return r;
}

static rec *coll_find(coll *c, uint64_t req)
{
	for (int i = 0; i < c->n_recs; i++)
		if (c->recs[i].req == req)
			return &c->recs[i];
	return NULL;
}

static void on_emit(void *ctx, const loom_msg *m)
{
	coll *c = ctx;

	pthread_mutex_lock(&c->mu);
	if (m->type == LOOM_MSG_STEP) {
		c->steps++;
		if ((int)m->u.step.n_items > c->max_items)
			c->max_items = (int)m->u.step.n_items;
		for (uint32_t i = 0; i < m->u.step.n_items; i++) {
			const loom_step_item *it = &m->u.step.items[i];
			rec *r = coll_get(c, it->req);
			if (r->finish >= 0 || r->has_err) {
				r->after_finish++;
				continue;
			}
			if (it->n_ids != 1 && it->finish != LOOM_FINISH_ABORT)
				r->bad_items++;
			if (r->first_step < 0 && it->n_ids)
				r->first_step = c->steps;
			for (uint32_t k = 0; k < it->n_ids && r->n < MAX_OUT; k++)
				r->ids[r->n++] = it->ids[k];
			r->n_prompt = it->n_prompt;
			if (it->finish != LOOM_FINISH_NONE) {
				r->finish = it->finish;
				c->done++;
			}
		}
	} else if (m->type == LOOM_MSG_ERROR) {
		rec *r = coll_get(c, m->u.error.req);
		if (r->finish >= 0 || r->has_err) {
			r->after_finish++;
		} else {
			r->has_err = true;
			r->err_code = m->u.error.code;
			snprintf(r->err, sizeof r->err, "%s", m->u.error.message);
			c->done++;
		}
	} else {
		fail_msg("engine emitted a %s", loom_msg_type_name(m->type));
	}
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

/* ---------------------------------------------------------------- */
/* requests and the hand-driven reference                            */
/* ---------------------------------------------------------------- */

static const int32_t once_upon[] = { 1, 403, 407, 261, 378 };

typedef struct req_spec {
	uint64_t req;
	const char *model;
	const char *adapter;
	const int32_t *prompt;
	uint32_t n_prompt;
	loom_sampling sp;
} req_spec;

static loom_sampling greedy(uint32_t max_tokens)
{
	return (loom_sampling){ .temperature = 0.0f, .top_p = 1.0f, .max_tokens = max_tokens,
				.seed = 1 };
}

static loom_msg_submit make_submit(const req_spec *r)
{
	loom_msg_submit s;
	memset(&s, 0, sizeof s);
	s.req = r->req;
	snprintf(s.model, sizeof s.model, "%s", r->model ? r->model : "stories260k");
	snprintf(s.adapter, sizeof s.adapter, "%s", r->adapter ? r->adapter : "");
	s.n_prompt = r->n_prompt;
	s.prompt_ids = (int32_t *)r->prompt;
	s.sampling = r->sp;
	return s;
}

static void submit(wk_engine *e, const req_spec *r)
{
	loom_msg_submit s = make_submit(r);
	assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
}

static bool stops_at(const wk_model *m, const loom_sampling *sp, int32_t id)
{
	if (!sp->ignore_eos)
		for (int i = 0; i < m->cfg.n_eos; i++)
			if (m->cfg.eos_ids[i] == id)
				return true;
	for (uint32_t i = 0; i < sp->n_stop_ids; i++)
		if (sp->stop_ids[i] == id)
			return true;
	return false;
}

/* wk_forward + wk_sample by hand, one sequence alone, whole prompt at once.
 * Returns the number of ids written; *finish gets the reason. */
static int reference(const wk_model *m, const int32_t *prompt, int n_prompt,
		     const loom_sampling *sp, int32_t *out, int *finish)
{
	int limit = sp->max_tokens ? (int)sp->max_tokens : m->cfg.max_ctx - n_prompt;
	wk_kv *kv;
	wk_scratch *scr;
	float *logits = loom_malloc((size_t)m->cfg.vocab * sizeof(float));
	void *ss = loom_malloc(wk_sample_scratch_bytes(m->cfg.vocab));
	int32_t start[2] = { 0, n_prompt };
	int n = 0;

	assert_int_equal(wk_kv_create(m, n_prompt + limit, &kv), LOOM_OK);
	assert_int_equal(wk_scratch_create(m, &scr), LOOM_OK);
	wk_batch b = { .n_seqs = 1, .seq_start = start, .tokens = prompt, .kv = &kv };
	assert_int_equal(wk_forward(m, &b, scr, logits), LOOM_OK);
	*finish = LOOM_FINISH_NONE;
	for (;;) {
		int32_t id = wk_sample(logits, m->cfg.vocab, sp, (uint64_t)n, ss);
		out[n++] = id;
		if (stops_at(m, sp, id)) {
			*finish = LOOM_FINISH_STOP;
			break;
		}
		if (n >= limit) {
			*finish = LOOM_FINISH_LENGTH;
			break;
		}
		start[1] = 1;
		b.tokens = &out[n - 1];
		assert_int_equal(wk_forward(m, &b, scr, logits), LOOM_OK);
	}
	wk_kv_destroy(kv);
	wk_scratch_destroy(scr);
	loom_free(logits);
	loom_free(ss);
	return n;
}

static void assert_rec_matches(const rec *r, const int32_t *want, int n_want, int finish)
{
	if (r->n != n_want || memcmp(r->ids, want, (size_t)n_want * sizeof *want) != 0) {
		fprintf(stderr, "req %llu: got %d ids, want %d\n  got :", (unsigned long long)r->req,
			r->n, n_want);
		for (int i = 0; i < r->n; i++)
			fprintf(stderr, " %d", r->ids[i]);
		fprintf(stderr, "\n  want:");
		for (int i = 0; i < n_want; i++)
			fprintf(stderr, " %d", want[i]);
		fprintf(stderr, "\n");
		fail();
	}
	assert_int_equal(r->finish, finish);
	assert_int_equal(r->after_finish, 0);
	assert_int_equal(r->bad_items, 0);
	assert_false(r->has_err);
}

static wk_engine *make_engine_kv(coll *c, int max_batch_tokens, int max_seqs, int kv_blocks,
				 bool manual)
{
	wk_engine_opts o = { .max_batch_tokens = max_batch_tokens, .max_seqs = max_seqs,
			     .kv_blocks = kv_blocks, .manual = manual };
	wk_engine *e;
	coll_init(c);
	assert_int_equal(wk_engine_create(&model, 1, &o, on_emit, c, &e), LOOM_OK);
	return e;
}

static wk_engine *make_engine(coll *c, int max_batch_tokens, int max_seqs, bool manual)
{
	return make_engine_kv(c, max_batch_tokens, max_seqs, 0, manual);
}

static void run_all(wk_engine *e)
{
	for (int guard = 0; guard < 5000; guard++)
		if (wk_engine_step(e) == 0)
			return;
	fail_msg("engine did not finish");
}

/* deterministic pseudo-random prompt ids in [3, vocab) */
static void fill_prompt(int32_t *p, int n, uint64_t seed)
{
	p[0] = 1;
	for (int i = 1; i < n; i++)
		p[i] = 3 + (int32_t)(wk_rand_uniform(seed, (uint64_t)i) * (model->cfg.vocab - 3));
}

/* ---------------------------------------------------------------- */
/* tests                                                             */
/* ---------------------------------------------------------------- */

static int setup(void **state)
{
	(void)state;
	loom_err rc = wk_model_load(lt_shared_path("models/stories260k"), "stories260k", &model);
	if (rc) {
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

static void test_greedy_matches_by_hand(void **state)
{
	(void)state;
	coll c;
	wk_engine *e = make_engine(&c, 0, 0, true);
	req_spec r = { .req = 1, .prompt = once_upon, .n_prompt = 5, .sp = greedy(20) };
	int32_t want[64];
	int fin, n = reference(model, once_upon, 5, &r.sp, want, &fin);

	submit(e, &r);
	run_all(e);
	rec *got = coll_find(&c, 1);
	assert_non_null(got);
	assert_rec_matches(got, want, n, fin);
	assert_int_equal(got->n_prompt, 5);
	assert_int_equal(n, 20); /* the story does not end within 20 tokens */
	assert_int_equal(fin, LOOM_FINISH_LENGTH);
	assert_int_equal(c.steps, 20); /* one token per iteration */
	wk_engine_destroy(e);
	coll_fini(&c);
}

#define N_CONC 8

static void conc_specs(req_spec *rs, int32_t prompts[N_CONC][40])
{
	for (int i = 0; i < N_CONC; i++) {
		int len = 1 + (i * 5) % 37;
		fill_prompt(prompts[i], len, 100 + (uint64_t)i);
		rs[i] = (req_spec){ .req = 1000 + (uint64_t)i, .prompt = prompts[i],
				    .n_prompt = (uint32_t)len, .sp = greedy(12 + (uint32_t)i * 3) };
		if (i % 2) { /* half of them sample */
			rs[i].sp.temperature = 0.9f;
			rs[i].sp.top_k = i % 4 == 1 ? 40 : 0;
			rs[i].sp.top_p = i % 4 == 3 ? 0.9f : 1.0f;
			rs[i].sp.seed = 77 + (uint64_t)i;
		}
		rs[i].sp.ignore_eos = i % 3 == 0;
	}
}

static void test_concurrent_same_as_alone(void **state)
{
	(void)state;
	req_spec rs[N_CONC];
	int32_t prompts[N_CONC][40];
	int32_t want[N_CONC][64];
	int n_want[N_CONC], fin[N_CONC];
	coll c;

	conc_specs(rs, prompts);
	for (int i = 0; i < N_CONC; i++) {
		/* alone through an engine of its own, and by hand */
		wk_engine *e = make_engine(&c, 0, 0, true);
		n_want[i] = reference(model, rs[i].prompt, (int)rs[i].n_prompt, &rs[i].sp, want[i],
				      &fin[i]);
		submit(e, &rs[i]);
		run_all(e);
		assert_rec_matches(coll_find(&c, rs[i].req), want[i], n_want[i], fin[i]);
		wk_engine_destroy(e);
		coll_fini(&c);
	}

	/* together, submitted in three waves while others run */
	wk_engine *e = make_engine(&c, 0, 0, true);
	for (int i = 0; i < 3; i++)
		submit(e, &rs[i]);
	wk_engine_step(e);
	wk_engine_step(e);
	for (int i = 3; i < 5; i++)
		submit(e, &rs[i]);
	for (int k = 0; k < 4; k++)
		wk_engine_step(e);
	for (int i = 5; i < N_CONC; i++)
		submit(e, &rs[i]);
	run_all(e);
	for (int i = 0; i < N_CONC; i++)
		assert_rec_matches(coll_find(&c, rs[i].req), want[i], n_want[i], fin[i]);
	assert_true(c.max_items >= 5); /* they really shared iterations */
	wk_engine_destroy(e);
	coll_fini(&c);
}

static void test_max_tokens_length(void **state)
{
	(void)state;
	coll c;
	wk_engine *e = make_engine(&c, 0, 0, true);
	req_spec r = { .req = 5, .prompt = once_upon, .n_prompt = 5, .sp = greedy(3) };
	int32_t want[8];
	int fin, n = reference(model, once_upon, 5, &r.sp, want, &fin);

	submit(e, &r);
	run_all(e);
	assert_int_equal(n, 3);
	assert_rec_matches(coll_find(&c, 5), want, 3, LOOM_FINISH_LENGTH);

	/* max_tokens 1: the first token already finishes it */
	r.req = 6;
	r.sp.max_tokens = 1;
	submit(e, &r);
	run_all(e);
	assert_rec_matches(coll_find(&c, 6), want, 1, LOOM_FINISH_LENGTH);

	/* max_tokens 0: until the context is full */
	int32_t long_prompt[500];
	fill_prompt(long_prompt, 500, 5);
	r = (req_spec){ .req = 7, .prompt = long_prompt, .n_prompt = 500, .sp = greedy(0) };
	r.sp.ignore_eos = true;
	submit(e, &r);
	run_all(e);
	rec *g = coll_find(&c, 7);
	assert_int_equal(g->n, model->cfg.max_ctx - 500);
	assert_int_equal(g->finish, LOOM_FINISH_LENGTH);
	wk_engine_destroy(e);
	coll_fini(&c);
}

static void test_eos_and_ignore_eos(void **state)
{
	(void)state;
	req_spec r = { .req = 1, .prompt = once_upon, .n_prompt = 5, .sp = greedy(20) };
	int32_t want[64];
	int fin, n = reference(model, once_upon, 5, &r.sp, want, &fin);
	assert_int_equal(n, 20);

	/* A copy of the model whose EOS id is the 6th greedy token. */
	wk_model *m2;
	assert_int_equal(wk_model_load(lt_shared_path("models/stories260k"), "eos6", &m2), LOOM_OK);
	m2->cfg.n_eos = 1;
	m2->cfg.eos_ids[0] = want[5];
	int first = 0;
	while (want[first] != want[5])
		first++;

	wk_model *both[2] = { model, m2 };
	coll c;
	coll_init(&c);
	wk_engine_opts o = { .manual = true };
	wk_engine *e;
	assert_int_equal(wk_engine_create(both, 2, &o, on_emit, &c, &e), LOOM_OK);
	req_spec a = r, b = r, base = r;
	a.req = 2;
	a.model = "eos6";
	b.req = 3;
	b.model = "eos6";
	b.sp.ignore_eos = true;
	base.req = 4;
	submit(e, &a);
	submit(e, &b);
	submit(e, &base);
	run_all(e);
	assert_rec_matches(coll_find(&c, 2), want, first + 1, LOOM_FINISH_STOP);
	assert_rec_matches(coll_find(&c, 3), want, 20, LOOM_FINISH_LENGTH);
	assert_rec_matches(coll_find(&c, 4), want, 20, LOOM_FINISH_LENGTH);
	wk_engine_destroy(e);
	coll_fini(&c);
	wk_model_destroy(m2);
}

static void test_stop_ids(void **state)
{
	(void)state;
	coll c;
	wk_engine *e = make_engine(&c, 0, 0, true);
	req_spec r = { .req = 1, .prompt = once_upon, .n_prompt = 5, .sp = greedy(20) };
	int32_t want[64];
	int fin;
	reference(model, once_upon, 5, &r.sp, want, &fin);

	int32_t stops[2] = { 511, want[8] };
	int first = 0;
	while (want[first] != want[8])
		first++;
	r.sp.n_stop_ids = 2;
	r.sp.stop_ids = stops;
	submit(e, &r);
	run_all(e);
	assert_rec_matches(coll_find(&c, 1), want, first + 1, LOOM_FINISH_STOP);
	wk_engine_destroy(e);
	coll_fini(&c);
}

static void test_cancel(void **state)
{
	(void)state;
	coll c;
	wk_engine *e = make_engine(&c, 0, 2, true);
	req_spec a = { .req = 10, .prompt = once_upon, .n_prompt = 5, .sp = greedy(30) };
	req_spec b = a, w = a;
	int32_t want[64];
	int fin, n = reference(model, once_upon, 5, &a.sp, want, &fin);

	b.req = 11;
	w.req = 12; /* waits: max_seqs is 2 */
	submit(e, &a);
	submit(e, &b);
	submit(e, &w);
	for (int k = 0; k < 4; k++)
		wk_engine_step(e);
	loom_msg_stats st;
	wk_engine_stats(e, &st);
	assert_int_equal(st.running, 2);
	assert_int_equal(st.queued, 1);

	wk_engine_cancel(e, 10);
	wk_engine_cancel(e, 12);
	wk_engine_cancel(e, 999); /* unknown: ignored */
	run_all(e);
	rec *ra = coll_find(&c, 10), *rw = coll_find(&c, 12);
	assert_int_equal(ra->finish, LOOM_FINISH_ABORT);
	assert_int_equal(ra->n, 4);
	assert_memory_equal(ra->ids, want, 4 * sizeof(int32_t));
	assert_int_equal(ra->after_finish, 0);
	assert_int_equal(rw->finish, LOOM_FINISH_ABORT);
	assert_int_equal(rw->n, 0);
	assert_null(coll_find(&c, 999));
	assert_rec_matches(coll_find(&c, 11), want, n, fin);

	/* cancel_owner drops everything of that owner, silently */
	loom_msg_submit s1 = make_submit(&a), s2 = make_submit(&b);
	s1.req = 20;
	s2.req = 21;
	assert_int_equal(wk_engine_submit_from(e, &s1, 7), LOOM_OK);
	assert_int_equal(wk_engine_submit_from(e, &s2, 8), LOOM_OK);
	wk_engine_step(e);
	wk_engine_cancel_owner(e, 7);
	run_all(e);
	rec *r20 = coll_find(&c, 20);
	assert_int_equal(r20->n, 1);
	assert_int_equal(r20->finish, -1);
	assert_rec_matches(coll_find(&c, 21), want, n, fin);
	wk_engine_stats(e, &st);
	assert_int_equal(st.running, 0);
	assert_int_equal(st.kv_free, st.kv_total);
	wk_engine_destroy(e);
	coll_fini(&c);
}

static void test_chunked_prefill(void **state)
{
	(void)state;
	int32_t prompt[300];
	int32_t want[64];
	int fin;
	fill_prompt(prompt, 300, 42);
	req_spec r = { .req = 3, .prompt = prompt, .n_prompt = 300, .sp = greedy(16) };
	r.sp.ignore_eos = true;
	int n = reference(model, prompt, 300, &r.sp, want, &fin);
	const int budgets[] = { 7, 64, 256, 1000 };

	for (size_t k = 0; k < sizeof budgets / sizeof budgets[0]; k++) {
		coll c;
		wk_engine *e = make_engine(&c, budgets[k], 0, true);
		req_spec other = { .req = 4, .prompt = once_upon, .n_prompt = 5, .sp = greedy(400) };
		other.sp.ignore_eos = true; /* decodes through the whole prefill */
		submit(e, &other);
		wk_engine_step(e);
		submit(e, &r);
		run_all(e);
		rec *g = coll_find(&c, 3);
		assert_rec_matches(g, want, n, fin);
		/* the prompt took ceil(300 / budget left after the decode) iterations */
		int per = budgets[k] - 1;
		int chunks = (300 + per - 1) / per;
		assert_int_equal(g->first_step, 1 + chunks);
		wk_engine_destroy(e);
		coll_fini(&c);
	}
}

static void test_bad_requests(void **state)
{
	(void)state;
	coll c;
	wk_engine *e = make_engine(&c, 0, 0, true);
	int32_t bad_hi[] = { 1, 512 }, bad_neg[] = { 1, -1 };
	int32_t big[500];
	fill_prompt(big, 500, 9);
	const struct {
		req_spec r;
		const char *adapter;
		loom_err code;
		const char *needle;
	} cases[] = {
		{ { .req = 1, .model = "nope", .prompt = once_upon, .n_prompt = 5, .sp = greedy(4) },
		  "", LOOM_ENOTFOUND, "nope" },
		{ { .req = 2, .prompt = once_upon, .n_prompt = 5, .sp = greedy(4) },
		  "my-lora", LOOM_ENOTFOUND, "adapter my-lora is not loaded" },
		{ { .req = 3, .prompt = once_upon, .n_prompt = 0, .sp = greedy(4) },
		  "", LOOM_EINVAL, "empty prompt" },
		{ { .req = 4, .prompt = bad_hi, .n_prompt = 2, .sp = greedy(4) },
		  "", LOOM_EINVAL, "512" },
		{ { .req = 5, .prompt = bad_neg, .n_prompt = 2, .sp = greedy(4) },
		  "", LOOM_EINVAL, "-1" },
		{ { .req = 6, .prompt = big, .n_prompt = 500, .sp = greedy(13) },
		  "", LOOM_ERANGE, "context" },
		{ { .req = 7, .prompt = once_upon, .n_prompt = 5,
		    .sp = { .top_p = 0.0f, .max_tokens = 4 } },
		  "", LOOM_EINVAL, "top_p" },
		{ { .req = 8, .prompt = once_upon, .n_prompt = 5,
		    .sp = { .temperature = -1.0f, .top_p = 1.0f, .max_tokens = 4 } },
		  "", LOOM_EINVAL, "temperature" },
		{ { .req = 9, .prompt = once_upon, .n_prompt = 5,
		    .sp = { .top_k = -2, .top_p = 1.0f, .max_tokens = 4 } },
		  "", LOOM_EINVAL, "top_k" },
	};
	const size_t n_cases = sizeof cases / sizeof cases[0];

	req_spec good = { .req = 100, .prompt = once_upon, .n_prompt = 5, .sp = greedy(6) };
	submit(e, &good);
	for (size_t i = 0; i < n_cases; i++) {
		loom_msg_submit s = make_submit(&cases[i].r);
		snprintf(s.adapter, sizeof s.adapter, "%s", cases[i].adapter);
		assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	}
	submit(e, &good); /* duplicate of a live id */
	run_all(e);
	for (size_t i = 0; i < n_cases; i++) {
		rec *r = coll_find(&c, cases[i].r.req);
		assert_non_null(r);
		assert_true(r->has_err);
		assert_int_equal(r->err_code, cases[i].code);
		if (!strstr(r->err, cases[i].needle))
			fail_msg("case %zu: '%s' lacks '%s'", i, r->err, cases[i].needle);
		assert_int_equal(r->n, 0);
		assert_int_equal(r->after_finish, 0);
	}
	/* the duplicate's ERROR arrives for the live id; the first one runs on */
	rec *g = coll_find(&c, 100);
	assert_true(g->has_err);
	assert_int_equal(g->err_code, LOOM_EEXIST);
	wk_engine_destroy(e);
	coll_fini(&c);
}

static void test_threaded(void **state)
{
	(void)state;
	req_spec rs[N_CONC];
	int32_t prompts[N_CONC][40];
	int32_t want[N_CONC][64];
	int n_want[N_CONC], fin[N_CONC];
	coll c;
	uint64_t total = 0;

	conc_specs(rs, prompts);
	for (int i = 0; i < N_CONC; i++) {
		n_want[i] = reference(model, rs[i].prompt, (int)rs[i].n_prompt, &rs[i].sp, want[i],
				      &fin[i]);
		total += (uint64_t)n_want[i];
	}
	wk_engine *e = make_engine(&c, 0, 0, false);
	assert_int_equal(wk_engine_step(e), -1);
	for (int i = 0; i < N_CONC; i++) {
		submit(e, &rs[i]);
		if (i == 3) {
			struct timespec ts = { 0, 2000000 };
			nanosleep(&ts, NULL);
		}
	}
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 20;
	pthread_mutex_lock(&c.mu);
	while (c.done < N_CONC)
		if (pthread_cond_timedwait(&c.cv, &c.mu, &dl))
			break;
	pthread_mutex_unlock(&c.mu);
	assert_int_equal(c.done, N_CONC);
	for (int i = 0; i < N_CONC; i++)
		assert_rec_matches(coll_find(&c, rs[i].req), want[i], n_want[i], fin[i]);

	/* stats settle to idle */
	loom_msg_stats st;
	for (int k = 0; k < 200; k++) {
		wk_engine_stats(e, &st);
		if (st.running == 0 && st.queued == 0)
			break;
		struct timespec ts = { 0, 5000000 };
		nanosleep(&ts, NULL);
	}
	assert_int_equal(st.running, 0);
	assert_int_equal(st.queued, 0);
	assert_int_equal(st.queued_tokens, 0);
	assert_true(st.tokens_out == total);
	assert_true(st.steps > 0);
	assert_true(st.step_ms >= 0.0f);
	assert_int_equal(st.kv_total, 64 * model->cfg.max_ctx);
	assert_int_equal(st.kv_free, st.kv_total);
	wk_engine_destroy(e);
	coll_fini(&c);
}

static void test_stats_and_queue(void **state)
{
	(void)state;
	coll c;
	wk_engine *e = make_engine(&c, 0, 2, true);
	req_spec r = { .prompt = once_upon, .n_prompt = 5, .sp = greedy(10) };
	loom_msg_stats st;

	for (int i = 0; i < 3; i++) {
		r.req = 50 + (uint64_t)i;
		submit(e, &r);
	}
	wk_engine_stats(e, &st); /* still in the inbox */
	assert_int_equal(st.queued, 3);
	assert_int_equal(st.queued_tokens, 15);
	assert_int_equal(wk_engine_step(e), 3);
	wk_engine_stats(e, &st);
	assert_int_equal(st.running, 2);
	assert_int_equal(st.queued, 1);
	assert_int_equal(st.queued_tokens, 5);
	assert_int_equal(st.kv_total, 2 * model->cfg.max_ctx);
	assert_int_equal(st.kv_free, st.kv_total - 2 * WK_KV_BLOCK); /* a block each */
	assert_true(st.steps == 1);
	assert_true(st.tokens_out == 2);
	run_all(e);
	wk_engine_stats(e, &st);
	assert_true(st.tokens_out == 30);
	for (int i = 0; i < 3; i++)
		assert_int_equal(coll_find(&c, 50 + (uint64_t)i)->n, 10);
	wk_engine_destroy(e);
	coll_fini(&c);
}

/* ---------------------------------------------------------------- */
/* paged KV: exhaustion and preemption                               */
/* ---------------------------------------------------------------- */

#define N_KV 8

/* 8 requests, 8..40 prompt tokens, 40..61 new tokens (ignore_eos, so their
 * KV need is known), half of them sampled with their own seeds. */
static int kv_specs(req_spec *rs, int32_t prompts[N_KV][48])
{
	int blocks = 0;
	for (int i = 0; i < N_KV; i++) {
		int len = 8 + (i * 13) % 33;
		fill_prompt(prompts[i], len, 300 + (uint64_t)i);
		rs[i] = (req_spec){ .req = 2000 + (uint64_t)i, .prompt = prompts[i],
				    .n_prompt = (uint32_t)len, .sp = greedy(40 + 3 * (uint32_t)i) };
		rs[i].sp.ignore_eos = true;
		if (i % 2) {
			rs[i].sp.temperature = 0.8f;
			rs[i].sp.top_k = 50;
			rs[i].sp.seed = 900 + (uint64_t)i;
		}
		blocks += (len + (int)rs[i].sp.max_tokens - 1 + WK_KV_BLOCK - 1) / WK_KV_BLOCK;
	}
	return blocks;
}

static void test_kv_exhaustion(void **state)
{
	(void)state;
	req_spec rs[N_KV];
	int32_t prompts[N_KV][48];
	int32_t want[N_KV][64];
	int n_want[N_KV], fin[N_KV];
	int need = kv_specs(rs, prompts), pool = need / 3;
	const int budgets[] = { 0, 16 };

	for (int i = 0; i < N_KV; i++) {
		n_want[i] = reference(model, rs[i].prompt, (int)rs[i].n_prompt, &rs[i].sp, want[i],
				      &fin[i]);
		assert_true(rs[i].n_prompt + rs[i].sp.max_tokens - 1 <= (uint32_t)pool * WK_KV_BLOCK);
	}
	for (size_t k = 0; k < sizeof budgets / sizeof budgets[0]; k++) {
		coll c;
		wk_engine *e = make_engine_kv(&c, budgets[k], 0, pool, true);
		loom_msg_stats st;
		int peak_running = 0;

		/* half at once, the rest while they run */
		for (int i = 0; i < N_KV / 2; i++)
			submit(e, &rs[i]);
		for (int guard = 0; guard < 5000; guard++) {
			if (guard == 3)
				for (int i = N_KV / 2; i < N_KV; i++)
					submit(e, &rs[i]);
			int left = wk_engine_step(e);
			wk_engine_stats(e, &st);
			assert_int_equal(st.kv_total, pool * WK_KV_BLOCK);
			assert_true(st.kv_free <= st.kv_total);
			if ((int)st.running > peak_running)
				peak_running = (int)st.running;
			if (left == 0 && guard > 3)
				break;
		}
		for (int i = 0; i < N_KV; i++)
			assert_rec_matches(coll_find(&c, rs[i].req), want[i], n_want[i], fin[i]);
		uint64_t pre = wk_engine_preemptions(e);
		printf("  pool %d blocks (requests need %d), budget %d: %d running at most, "
		       "%llu preemptions\n", pool, need, budgets[k] ? budgets[k] : 256, peak_running,
		       (unsigned long long)pre);
		assert_true(pre > 0);
		assert_true(peak_running >= 2);
		wk_engine_stats(e, &st);
		assert_int_equal(st.kv_free, st.kv_total);
		assert_int_equal(st.queued_tokens, 0);
		wk_engine_destroy(e);
		coll_fini(&c);
	}
}

static void test_kv_request_too_big(void **state)
{
	(void)state;
	coll c;
	wk_engine *e = make_engine_kv(&c, 0, 0, 4, true); /* 64 positions */
	int32_t prompt[60];
	int32_t want[8];
	int fin;
	fill_prompt(prompt, 60, 17);
	req_spec big = { .req = 1, .prompt = prompt, .n_prompt = 60, .sp = greedy(6) };
	req_spec fits = { .req = 2, .prompt = prompt, .n_prompt = 60, .sp = greedy(5) };
	req_spec all = { .req = 3, .prompt = once_upon, .n_prompt = 5, .sp = greedy(0) };
	int n = reference(model, prompt, 60, &fits.sp, want, &fin);

	submit(e, &big);  /* 65 positions */
	submit(e, &fits); /* 64: exactly the pool */
	submit(e, &all);  /* max_tokens 0: a whole context of 512 */
	run_all(e);
	rec *r = coll_find(&c, 1);
	assert_true(r->has_err);
	assert_int_equal(r->err_code, LOOM_ERANGE);
	if (!strstr(r->err, "whole KV cache"))
		fail_msg("'%s' does not explain the KV limit", r->err);
	r = coll_find(&c, 3);
	assert_true(r->has_err);
	assert_int_equal(r->err_code, LOOM_ERANGE);
	assert_rec_matches(coll_find(&c, 2), want, n, fin);
	wk_engine_destroy(e);
	coll_fini(&c);
}

/* ---------------------------------------------------------------- */
/* adapters                                                          */
/* ---------------------------------------------------------------- */

static const struct {
	const char *name, *args;
} ad_specs[] = {
	{ "r1-qv", "--rank 1 --alpha 4 --targets q_proj,v_proj --seed 11" },
	{ "r8-all", "--rank 8 --alpha 16 --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,"
		    "down_proj --seed 12" },
	{ "r16-kod", "--rank 16 --alpha 32 --targets k_proj,o_proj,down_proj --dtype bf16 "
		     "--seed 13" },
	{ "r4-mlp", "--rank 4 --alpha 8 --targets gate_proj,up_proj --rslora --layers 0,2 "
		    "--seed 14" },
};
#define N_AD (int)(sizeof ad_specs / sizeof ad_specs[0])

/* Writes the adapters once per run (under LOOM_TMP). */
static void make_adapters(void)
{
	if (ad_root)
		return;
	ad_root = lt_tmpdir("engine-ad");
	for (int i = 0; i < N_AD; i++) {
		int rc = lt_sh("'%s' adapter --model '%s' --out '%s/%s' %s >/dev/null",
			       lt_bin_path("loom-mkmodel"), lt_shared_path("models/stories260k"),
			       ad_root, ad_specs[i].name, ad_specs[i].args);
		if (rc != 0)
			fail_msg("loom-mkmodel adapter %s failed (status %d)", ad_specs[i].name, rc);
	}
}

/* A fresh copy of adapter i, named name (NULL: its own name). */
static ad_adapter *load_adapter(int i, const char *name)
{
	char dir[600];
	ad_adapter *a;
	snprintf(dir, sizeof dir, "%s/%s", ad_root, ad_specs[i].name);
	loom_err rc = ad_adapter_load(dir, name ? name : ad_specs[i].name, &model->cfg, &a);
	if (rc)
		fail_msg("ad_adapter_load %s: %s", dir, loom_errmsg());
	return a;
}

static void add_all_adapters(wk_engine *e)
{
	for (int i = 0; i < N_AD; i++)
		assert_int_equal(wk_engine_add_adapter(e, "stories260k", load_adapter(i, NULL)),
				 LOOM_OK);
}

#define N_MIX 10

static void mix_specs(req_spec *rs, int32_t prompts[N_MIX][40])
{
	/* 0..3 and 6, 8, 9: adapters; 4, 7: base; 5 repeats 4's prompt with an adapter */
	static const int which[N_MIX] = { 0, 1, 2, 3, -1, 1, 0, -1, 3, 2 };
	for (int i = 0; i < N_MIX; i++) {
		int src = i == 5 ? 4 : i, len = 3 + (src * 7) % 31;
		fill_prompt(prompts[i], len, 500 + (uint64_t)src);
		rs[i] = (req_spec){ .req = 3000 + (uint64_t)i, .prompt = prompts[i],
				    .n_prompt = (uint32_t)len, .sp = greedy(10 + (uint32_t)i) };
		rs[i].adapter = which[i] >= 0 ? ad_specs[which[i]].name : NULL;
		rs[i].sp.ignore_eos = true;
		if (i % 3 == 2) {
			rs[i].sp.temperature = 0.7f;
			rs[i].sp.top_p = 0.9f;
			rs[i].sp.seed = 40 + (uint64_t)i;
		}
	}
}

/* Runs r alone in an engine holding every adapter. */
static int alone(const req_spec *r, int32_t *out)
{
	coll c;
	wk_engine *e = make_engine(&c, 0, 0, true);
	add_all_adapters(e);
	submit(e, r);
	run_all(e);
	rec *g = coll_find(&c, r->req);
	assert_non_null(g);
	if (g->has_err)
		fail_msg("request %llu alone: %s", (unsigned long long)r->req, g->err);
	assert_int_equal(g->finish, LOOM_FINISH_LENGTH);
	memcpy(out, g->ids, sizeof(int32_t) * (size_t)g->n);
	int n = g->n;
	wk_engine_destroy(e);
	coll_fini(&c);
	return n;
}

static void run_mix(const req_spec *rs, int32_t want[N_MIX][64], const int *n_want,
		    int kv_blocks, int budget, int min_items)
{
	coll c;
	wk_engine *e = make_engine_kv(&c, budget, 0, kv_blocks, true);
	add_all_adapters(e);
	for (int i = 0; i < 4; i++)
		submit(e, &rs[i]);
	wk_engine_step(e);
	for (int i = 4; i < 7; i++)
		submit(e, &rs[i]);
	wk_engine_step(e);
	wk_engine_step(e);
	for (int i = 7; i < N_MIX; i++)
		submit(e, &rs[i]);
	run_all(e);
	for (int i = 0; i < N_MIX; i++)
		assert_rec_matches(coll_find(&c, rs[i].req), want[i], n_want[i], LOOM_FINISH_LENGTH);
	printf("  %d requests over %d adapters + base, budget %d, kv %d blocks: up to %d in one "
	       "step, %llu preemptions\n", N_MIX, N_AD, budget ? budget : 256,
	       kv_blocks ? kv_blocks : 2048, c.max_items,
	       (unsigned long long)wk_engine_preemptions(e));
	assert_true(c.max_items >= min_items); /* base and adapters shared iterations */
	if (kv_blocks)
		assert_true(wk_engine_preemptions(e) > 0);
	wk_engine_destroy(e);
	coll_fini(&c);
}

static void test_adapters_mixed_batch(void **state)
{
	(void)state;
	req_spec rs[N_MIX];
	int32_t prompts[N_MIX][40];
	int32_t want[N_MIX][64];
	int n_want[N_MIX];

	make_adapters();
	mix_specs(rs, prompts);
	for (int i = 0; i < N_MIX; i++)
		n_want[i] = alone(&rs[i], want[i]);
	/* the base request by hand equals the engine alone */
	{
		int32_t ref[64];
		int fin, n = reference(model, rs[4].prompt, (int)rs[4].n_prompt, &rs[4].sp, ref, &fin);
		assert_int_equal(n, n_want[4]);
		assert_memory_equal(ref, want[4], sizeof(int32_t) * (size_t)n);
	}
	/* the adapter changes the story (same prompt, same sampling) */
	assert_int_equal(rs[4].n_prompt, rs[5].n_prompt);
	assert_memory_equal(rs[4].prompt, rs[5].prompt, sizeof(int32_t) * rs[4].n_prompt);
	assert_true(memcmp(want[4], want[5], sizeof(int32_t) * 10) != 0);

	run_mix(rs, want, n_want, 0, 0, 8);
	run_mix(rs, want, n_want, 0, 7, 4);  /* chunked prefill across adapter groups */
	run_mix(rs, want, n_want, 12, 0, 3); /* and under KV pressure (preemption) */
}

static void test_adapter_replace_and_errors(void **state)
{
	(void)state;
	int32_t want_old[64], want_new[64];
	make_adapters();
	req_spec a = { .req = 1, .adapter = ad_specs[0].name, .prompt = once_upon, .n_prompt = 5,
		       .sp = greedy(24) };
	a.sp.ignore_eos = true;
	req_spec b = a;
	b.req = 2;
	int n_old = alone(&a, want_old);
	req_spec a2 = a;
	a2.adapter = ad_specs[1].name;
	int n_new = alone(&a2, want_new);
	assert_true(memcmp(want_old, want_new, sizeof(int32_t) * 24) != 0);

	coll c;
	wk_engine *e = make_engine(&c, 0, 0, true);
	/* r1-qv's weights under the name "x" */
	assert_int_equal(wk_engine_add_adapter(e, "stories260k", load_adapter(0, "x")), LOOM_OK);
	a.adapter = "x";
	submit(e, &a);
	for (int k = 0; k < 5; k++)
		wk_engine_step(e);
	/* "x" now names r8-all's weights: a keeps the old ones, b gets the new */
	assert_int_equal(wk_engine_add_adapter(e, "stories260k", load_adapter(1, "x")), LOOM_OK);
	b.adapter = "x";
	submit(e, &b);
	req_spec u = a;
	u.req = 3;
	u.adapter = "nope";
	submit(e, &u);
	run_all(e);
	assert_rec_matches(coll_find(&c, 1), want_old, n_old, LOOM_FINISH_LENGTH);
	assert_rec_matches(coll_find(&c, 2), want_new, n_new, LOOM_FINISH_LENGTH);
	rec *r = coll_find(&c, 3);
	assert_true(r->has_err);
	assert_int_equal(r->err_code, LOOM_ENOTFOUND);
	assert_string_equal(r->err, "adapter nope is not loaded");
	/* replaced again while idle: the old one goes at once (no leak under
	 * cmocka's checks would show; ASan builds do) */
	assert_int_equal(wk_engine_add_adapter(e, "stories260k", load_adapter(2, "x")), LOOM_OK);
	run_all(e);

	/* the engine takes the adapter even when it refuses it */
	assert_int_equal(wk_engine_add_adapter(e, "no-model", load_adapter(0, NULL)),
			 LOOM_ENOTFOUND);
	assert_non_null(strstr(loom_errmsg(), "no-model"));
	ad_adapter *bad = load_adapter(0, NULL);
	bad->n_layers = 3;
	assert_int_equal(wk_engine_add_adapter(e, "stories260k", bad), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "layers"));
	assert_int_equal(wk_engine_add_adapter(e, "stories260k", NULL), LOOM_EINVAL);
	wk_engine_destroy(e);
	coll_fini(&c);
}

static void test_create_rejects(void **state)
{
	(void)state;
	wk_engine *e = (wk_engine *)1;
	coll c;
	wk_model *twice[2] = { model, model };
	coll_init(&c);
	assert_int_equal(wk_engine_create(twice, 2, NULL, on_emit, &c, &e), LOOM_EINVAL);
	assert_null(e);
	assert_int_equal(wk_engine_create(&model, 0, NULL, on_emit, &c, &e), LOOM_EINVAL);
	/* allocation failures at every point unwind cleanly */
	for (long n = 1; n < 40; n++) {
		wk_engine_opts o = { .manual = true };
		loom_alloc_fail_after(n);
		loom_err rc = wk_engine_create(&model, 1, &o, on_emit, &c, &e);
		loom_alloc_fail_reset();
		if (rc == LOOM_OK) {
			wk_engine_destroy(e);
			break;
		}
		assert_int_equal(rc, LOOM_ENOMEM);
		assert_null(e);
	}
	coll_fini(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greedy_matches_by_hand),
		cmocka_unit_test(test_concurrent_same_as_alone),
		cmocka_unit_test(test_max_tokens_length),
		cmocka_unit_test(test_eos_and_ignore_eos),
		cmocka_unit_test(test_stop_ids),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_chunked_prefill),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_threaded),
		cmocka_unit_test(test_stats_and_queue),
		cmocka_unit_test(test_create_rejects),
		cmocka_unit_test(test_kv_exhaustion),
		cmocka_unit_test(test_kv_request_too_big),
		cmocka_unit_test(test_adapters_mixed_batch),
		cmocka_unit_test(test_adapter_replace_and_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
