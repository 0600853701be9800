/*
 * tests/worker/test_sched_slo.c — the engine's SLO side, in-process on the
 * real stories260k model in manual mode.
 * Resumption (SUBMIT.n_generated): a request cut after k tokens and
 * resubmitted with prompt + those k tokens gives exactly the remaining
 * tokens of the uncut run (greedy and seeded sampling; k across a KV block
 * boundary), reports the prompt proper, and bad n_generated is refused.
 * Scheduling: first tokens in TTFT-deadline order (admission-bound and
 * prefill-budget-bound); the prefill cap per iteration from a fixed step
 * model (exact counts, the interactive decode never skips an iteration)
 * and from the live fit (cap = what the published fit predicts); under KV
 * pressure the older batch-class request is preempted, not the newer
 * interactive one, and both keep their tokens.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "tests/support/harness.h"
#include "worker/engine.h"
#include "worker/kv.h"
#include "worker/sample.h"

static wk_model *model;

/* ---------------------------------------------------------------- */
/* collecting what the engine emits (manual mode: one thread)        */
/* ---------------------------------------------------------------- */

#define MAX_RECS 48
#define MAX_OUT 128

typedef struct rec {
	uint64_t req;
	int32_t ids[MAX_OUT];
	int n;
	int finish;          /* -1 while running */
	uint32_t n_prompt;
	int first_step;      /* step index of the first token, -1 = none yet */
	int last_step;       /* step index of the latest token */
	int gaps;            /* iterations without a token between two of its tokens */
	bool has_err;
	uint32_t err_code;
	char err[256];
} rec;

typedef struct coll {
	rec recs[MAX_RECS];
	int n_recs;
	int steps;           /* wk_engine_step calls so far (set by the test) */
} coll;

static rec *coll_get(coll *c, uint64_t req)
{
	for (int i = 0; i < c->n_recs; i++)
		if (c->recs[i].req == req)
			return &c->recs[i];
	assert_true(c->n_recs < MAX_RECS);
	rec *r = &c->recs[c->n_recs++];
	memset(r, 0, sizeof *r);
	r->req = req;
	r->finish = -1;
	r->first_step = -1;
	return r;
}

static void on_emit(void *ctx, const loom_msg *m)
{
	coll *c = ctx;

	if (m->type == LOOM_MSG_STEP) {
		for (uint32_t i = 0; i < m->u.step.n_items; i++) {
			const loom_step_item *it = &m->u.step.items[i];
			rec *r = coll_get(c, it->req);
			assert_true(r->finish < 0 && !r->has_err);
			if (r->first_step < 0 && it->n_ids)
				r->first_step = c->steps;
			if (it->n_ids) {
				if (r->n > 0 && c->steps != r->last_step + 1)
					r->gaps++;
				r->last_step = c->steps;
			}
			for (uint32_t k = 0; k < it->n_ids && r->n < MAX_OUT; k++)
				r->ids[r->n++] = it->ids[k];
			r->n_prompt = it->n_prompt;
			if (it->finish != LOOM_FINISH_NONE)
				r->finish = it->finish;
		}
	} else if (m->type == LOOM_MSG_ERROR) {
		rec *r = coll_get(c, m->u.error.req);
		r->has_err = true;
		r->err_code = m->u.error.code;
		snprintf(r->err, sizeof r->err, "%s", m->u.error.message);
	} else {
		fail_msg("engine emitted a %s", loom_msg_type_name(m->type));
	}
}

static rec *coll_find(coll *c, uint64_t req)
{
	for (int i = 0; i < c->n_recs; i++)
		if (c->recs[i].req == req)
			return &c->recs[i];
	fail_msg("no record of request %llu", (unsigned long long)req);
	return NULL;
}

static wk_engine *make_engine(coll *c, const wk_engine_opts *o)
{
	wk_engine_opts d = { .manual = true };
	wk_engine *e;

	memset(c, 0, sizeof *c);
	if (!o)
		o = &d;
	assert_true(o->manual);
	assert_int_equal(wk_engine_create(&model, 1, o, on_emit, c, &e), LOOM_OK);
	return e;
}

static void run_all(wk_engine *e, coll *c)
{
	for (int guard = 0; guard < 5000; guard++) {
		c->steps++;
		if (wk_engine_step(e) == 0)
			return;
	}
	fail_msg("engine did not finish");
}

/* deterministic pseudo-random prompt ids in [3, vocab) after BOS */
static void fill_prompt(int32_t *p, int n, uint64_t seed)
{
	p[0] = 1;
	for (int i = 1; i < n; i++)
		p[i] = 3 + (int32_t)(wk_rand_uniform(seed, (uint64_t)i) * (model->cfg.vocab - 3));
}

static loom_msg_submit make_submit(uint64_t req, const int32_t *prompt, uint32_t n_prompt,
				   loom_sampling sp)
{
	loom_msg_submit s;

	memset(&s, 0, sizeof s);
	s.req = req;
	snprintf(s.model, sizeof s.model, "stories260k");
	s.n_prompt = n_prompt;
	s.prompt_ids = (int32_t *)prompt;
	s.sampling = sp;
	return s;
}

static void print_ids(const char *what, const int32_t *ids, int n)
{
	fprintf(stderr, "  %s:", what);
	for (int i = 0; i < n; i++)
		fprintf(stderr, " %d", ids[i]);
	fprintf(stderr, "\n");
}

/* ---------------------------------------------------------------- */
/* fixtures                                                          */
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
	return 0;
}

/* ---------------------------------------------------------------- */
/* resumption                                                        */
/* ---------------------------------------------------------------- */

#define RES_PROMPT 9
#define RES_MAX 40

/* cut points: 7 and 23 end a KV block exactly (RES_PROMPT + k = 16, 32),
 * 8 and 24 cross into the next block */
static const uint32_t cuts[] = { 1, 2, 6, 7, 8, 15, 23, 24, 39 };
#define N_CUTS (sizeof cuts / sizeof cuts[0])

static void check_resume(const loom_sampling *sp, uint64_t prompt_seed)
{
	coll c;
	wk_engine *e = make_engine(&c, NULL);
	int32_t prompt[RES_PROMPT + RES_MAX];
	loom_msg_submit s;
	rec *full;
	int32_t want[MAX_OUT];
	int n_want, fin_want;

	fill_prompt(prompt, RES_PROMPT, prompt_seed);
	s = make_submit(1, prompt, RES_PROMPT, *sp);
	assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	run_all(e, &c);
	full = coll_find(&c, 1);
	assert_false(full->has_err);
	assert_int_equal(full->n, RES_MAX);
	assert_int_equal(full->finish, LOOM_FINISH_LENGTH);
	n_want = full->n;
	fin_want = full->finish;
	memcpy(want, full->ids, (size_t)n_want * sizeof *want);
	wk_engine_destroy(e);

	/* every cut resumed at once (batching changes no token) */
	e = make_engine(&c, NULL);
	memcpy(prompt + RES_PROMPT, want, (size_t)n_want * sizeof *want);
	for (size_t i = 0; i < N_CUTS; i++) {
		s = make_submit(100 + i, prompt, RES_PROMPT + cuts[i], *sp);
		s.n_generated = cuts[i];
		assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	}
	run_all(e, &c);
	for (size_t i = 0; i < N_CUTS; i++) {
		rec *r = coll_find(&c, 100 + i);
		int k = (int)cuts[i];
		if (r->has_err)
			fail_msg("cut %d: %s", k, r->err);
		if (r->n != n_want - k || memcmp(r->ids, want + k, (size_t)r->n * sizeof *want)) {
			fprintf(stderr, "resumed after %d tokens (temperature %g):\n", k,
				(double)sp->temperature);
			print_ids("got ", r->ids, r->n);
			print_ids("want", want + k, n_want - k);
			fail();
		}
		assert_int_equal(r->finish, fin_want);
		assert_int_equal(r->n_prompt, RES_PROMPT);
	}
	wk_engine_destroy(e);
}

static void test_resume_greedy(void **state)
{
	(void)state;
	loom_sampling sp = { .temperature = 0.0f, .top_p = 1.0f, .max_tokens = RES_MAX,
			     .seed = 7, .ignore_eos = true };
	check_resume(&sp, 11);
}

static void test_resume_sampled(void **state)
{
	(void)state;
	loom_sampling sp = { .temperature = 0.8f, .top_p = 0.9f, .max_tokens = RES_MAX,
			     .seed = 12345, .ignore_eos = true };
	check_resume(&sp, 12);
	sp.seed = 99;
	check_resume(&sp, 13);
}

static void test_resume_bad(void **state)
{
	(void)state;
	coll c;
	wk_engine *e = make_engine(&c, NULL);
	int32_t prompt[8];
	loom_sampling sp = { .temperature = 0.0f, .top_p = 1.0f, .max_tokens = 4, .seed = 1 };
	loom_msg_submit s;

	fill_prompt(prompt, 8, 3);
	s = make_submit(1, prompt, 8, sp); /* nothing left of the prompt */
	s.n_generated = 8;
	assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	s = make_submit(2, prompt, 8, sp); /* the whole max_tokens already produced */
	s.n_generated = 4;
	assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	s = make_submit(3, prompt, 8, sp); /* 3 of 4 produced: one more token */
	s.n_generated = 3;
	assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	run_all(e, &c);
	rec *r = coll_find(&c, 1);
	assert_true(r->has_err);
	assert_int_equal(r->err_code, LOOM_EINVAL);
	assert_non_null(strstr(r->err, "n_generated"));
	r = coll_find(&c, 2);
	assert_true(r->has_err);
	assert_int_equal(r->err_code, LOOM_EINVAL);
	assert_non_null(strstr(r->err, "already produced 4"));
	r = coll_find(&c, 3);
	assert_false(r->has_err);
	assert_int_equal(r->n, 1);
	assert_int_equal(r->finish, LOOM_FINISH_LENGTH);
	assert_int_equal(r->n_prompt, 5);
	wk_engine_destroy(e);
}

/* ---------------------------------------------------------------- */
/* deadline order                                                    */
/* ---------------------------------------------------------------- */

/* Five requests submitted together; the first token order must follow
 * the TTFT deadlines, the ones without a deadline last in arrival order,
 * both when admission is the bottleneck (one sequence at a time) and when
 * the prefill budget is (all admitted, 16 prefill tokens per iteration). */
static void test_edf_order(void **state)
{
	(void)state;
	static const uint32_t ttft[] = { 0, 1000, 200, 0, 500 };
	static const uint64_t want[] = { 3, 5, 2, 1, 4 }; /* req = index + 1 */
	const struct { int max_seqs, max_batch_tokens, n_prompt; } cfgs[] = {
		{ 1, 0, 5 },
		{ 8, 16, 64 },
	};

	for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++) {
		wk_engine_opts o = { .manual = true, .max_seqs = cfgs[ci].max_seqs,
				     .max_batch_tokens = cfgs[ci].max_batch_tokens };
		coll c;
		wk_engine *e = make_engine(&c, &o);
		int32_t prompt[64];
		loom_sampling sp = { .temperature = 0.0f, .top_p = 1.0f, .max_tokens = 3,
				     .seed = 1, .ignore_eos = true };

		for (int i = 0; i < 5; i++) {
			fill_prompt(prompt, cfgs[ci].n_prompt, 40 + (uint64_t)i);
			loom_msg_submit s = make_submit((uint64_t)i + 1, prompt,
							(uint32_t)cfgs[ci].n_prompt, sp);
			s.ttft_deadline_ms = ttft[i];
			s.tpot_target_ms = ttft[i] ? 1000 : 0;
			assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
		}
		run_all(e, &c);
		for (int i = 0; i < 5; i++) {
			rec *r = coll_find(&c, want[i]);
			assert_false(r->has_err);
			assert_int_equal(r->n, 3);
			if (i > 0 && r->first_step <= coll_find(&c, want[i - 1])->first_step)
				fail_msg("config %zu: request %llu (first token at step %d) is not after "
					 "request %llu (step %d)", ci, (unsigned long long)want[i],
					 r->first_step, (unsigned long long)want[i - 1],
					 coll_find(&c, want[i - 1])->first_step);
		}
		wk_engine_destroy(e);
	}
}

/* ---------------------------------------------------------------- */
/* TPOT: the iteration's prefill cap                                 */
/* ---------------------------------------------------------------- */

/* An interactive request decoding while a 300-token batch prompt arrives:
 * with the step model fixed at 1 + 0.1 * tokens ms and a 5 ms TPOT target,
 * every iteration takes at most (5 - 1) / 0.1 - 1 = 39 prefill tokens
 * (instead of the whole 255 budget) and the prefill still goes on. */
static void test_tpot_cap_fixed_model(void **state)
{
	(void)state;
	coll c;
	wk_engine_opts o = { .manual = true, .max_batch_tokens = 256 };
	wk_engine *e = make_engine(&c, &o);
	int32_t p1[8], p2[300];
	loom_sampling sp = { .temperature = 0.0f, .top_p = 1.0f, .max_tokens = 80, .seed = 1,
			     .ignore_eos = true };
	loom_msg_submit s;
	wk_sched_info si;
	int capped = 0, prefilled = 0;

	wk_engine_set_step_model(e, 1.0, 0.1);
	fill_prompt(p1, 8, 50);
	fill_prompt(p2, 300, 51);
	s = make_submit(1, p1, 8, sp);
	s.ttft_deadline_ms = 500;
	s.tpot_target_ms = 5;
	assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	c.steps++;
	wk_engine_step(e); /* prefill + first token */
	assert_int_equal(coll_find(&c, 1)->n, 1);
	s = make_submit(2, p2, 300, sp);
	assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	while (coll_find(&c, 1)->finish < 0) {
		c.steps++;
		wk_engine_step(e);
		wk_engine_sched_info(e, &si);
		assert_int_equal(si.last_decode, 1 + (prefilled >= 300));
		assert_int_equal(si.last_cap, 39 - (prefilled >= 300));
		assert_true(si.last_prefill <= si.last_cap);
		if (prefilled < 300) {
			int want = 300 - prefilled < 39 ? 300 - prefilled : 39;
			assert_int_equal(si.last_prefill, want);
			capped++;
		}
		prefilled += si.last_prefill;
	}
	assert_int_equal(prefilled, 300);
	assert_int_equal(capped, 8); /* ceil(300 / 39) */
	/* the interactive request never waited for a step */
	rec *r = coll_find(&c, 1);
	assert_int_equal(r->n, 80);
	assert_int_equal(r->gaps, 0);
	run_all(e, &c);
	assert_int_equal(coll_find(&c, 2)->n, 80);
	wk_engine_destroy(e);
}

/* The live model: every iteration's prefill stays within the cap that the
 * fit published before it predicts for the target; the fit has a >= 0,
 * b > 0 after varied iterations. */
static void test_tpot_cap_live_model(void **state)
{
	(void)state;
	coll c;
	wk_engine_opts o = { .manual = true, .max_batch_tokens = 128 };
	wk_engine *e = make_engine(&c, &o);
	int32_t p[4][200];
	loom_sampling sp = { .temperature = 0.0f, .top_p = 1.0f, .max_tokens = 40, .seed = 1,
			     .ignore_eos = true };
	wk_sched_info before, after;
	int n_live = 0;

	for (int i = 0; i < 4; i++) {
		fill_prompt(p[i], 200, 60 + (uint64_t)i);
		loom_msg_submit s = make_submit((uint64_t)i + 1, p[i], (uint32_t)(20 + 60 * i), sp);
		if (i == 0) {
			s.ttft_deadline_ms = 100;
			s.tpot_target_ms = 1;
		}
		assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	}
	for (int guard = 0; guard < 2000; guard++) {
		wk_engine_sched_info(e, &before);
		c.steps++;
		int left = wk_engine_step(e);
		wk_engine_sched_info(e, &after);
		if (after.last_cap >= 0) {
			/* the cap of this iteration came from the fit before it */
			double room = (1.0 - before.fit_a) / before.fit_b - after.last_decode;
			int cap = room <= 0 ? 0 : room >= INT32_MAX ? INT32_MAX : (int)floor(room);
			if (cap < 16 /* WK_MIN_CHUNK */ &&
			    before.fit_a + before.fit_b * after.last_decode > 1.0)
				cap = 16 /* WK_MIN_CHUNK */;
			assert_int_equal(after.last_cap, cap);
			assert_true(after.last_prefill <= after.last_cap);
			n_live++;
		}
		if (left == 0)
			break;
	}
	for (int i = 0; i < 4; i++)
		assert_int_equal(coll_find(&c, (uint64_t)i + 1)->n, 40);
	assert_true(after.fit_n > 0);
	assert_true(after.fit_a >= 0);
	assert_true(after.fit_b > 0);
	assert_true(after.step_ms > 0);
	assert_true(n_live > 0); /* the cap was in force */
	wk_engine_destroy(e);
}

/* ---------------------------------------------------------------- */
/* KV pressure: batch class preempted first                          */
/* ---------------------------------------------------------------- */

/* A pool of 5 blocks (80 positions) and two requests of 20 + 40 tokens
 * (up to 59 positions each). The batch one is admitted first (older), so
 * newest-first preemption alone would take the interactive one; the batch
 * one is preempted instead: the interactive one gets a token every
 * iteration, and both produce exactly their tokens of a run alone. */
static void run_alone(const int32_t *prompt, uint32_t n, loom_sampling sp, rec *out)
{
	coll c;
	wk_engine *e = make_engine(&c, NULL);
	loom_msg_submit s = make_submit(1, prompt, n, sp);

	assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	run_all(e, &c);
	*out = *coll_find(&c, 1);
	wk_engine_destroy(e);
}

static void test_batch_preempted_first(void **state)
{
	(void)state;
	coll c;
	wk_engine_opts o = { .manual = true, .kv_blocks = 5 };
	wk_engine *e = make_engine(&c, &o);
	int32_t pb[20], pi[20];
	loom_sampling sp = { .temperature = 0.8f, .top_p = 0.9f, .max_tokens = 40, .seed = 5,
			     .ignore_eos = true };
	loom_msg_submit s;
	static rec alone_b, alone_i;

	fill_prompt(pb, 20, 70);
	fill_prompt(pi, 20, 71);
	run_alone(pb, 20, sp, &alone_b);
	run_alone(pi, 20, sp, &alone_i);
	s = make_submit(1, pb, 20, sp);
	assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	c.steps++;
	wk_engine_step(e); /* the batch request holds its blocks first */
	s = make_submit(2, pi, 20, sp);
	s.ttft_deadline_ms = 1000;
	s.tpot_target_ms = 1000;
	assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
	run_all(e, &c);
	assert_true(wk_engine_preemptions(e) >= 1);
	rec *rb = coll_find(&c, 1), *ri = coll_find(&c, 2);
	assert_false(rb->has_err);
	assert_false(ri->has_err);
	assert_int_equal(ri->gaps, 0);
	assert_true(rb->gaps >= 1);
	assert_int_equal(rb->n, alone_b.n);
	assert_memory_equal(rb->ids, alone_b.ids, (size_t)rb->n * sizeof *rb->ids);
	assert_int_equal(ri->n, alone_i.n);
	assert_memory_equal(ri->ids, alone_i.ids, (size_t)ri->n * sizeof *ri->ids);
	wk_engine_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_resume_greedy),
		cmocka_unit_test(test_resume_sampled),
		cmocka_unit_test(test_resume_bad),
		cmocka_unit_test(test_edf_order),
		cmocka_unit_test(test_tpot_cap_fixed_model),
		cmocka_unit_test(test_tpot_cap_live_model),
		cmocka_unit_test(test_batch_preempted_first),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
