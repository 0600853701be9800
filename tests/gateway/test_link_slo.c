/*
 * tests/gateway/test_link_slo.c — gw_link's SLO side against scripted fake
 * workers whose STATS the test sets: routing by predicted TTFT (the busy
 * worker avoided, adapter residency preferred among those that meet the
 * deadline), the SUBMIT's class fields, refusal when a refusing class's
 * deadline cannot be met (with a Retry-After) and room instead for a class
 * that queues, the bounded admission queue (429 + Retry-After when full,
 * priority then FIFO order, dispatch once a worker has room, the wait's
 * timeout, cancel while queued, shutdown; a request waiting for one model's
 * workers holding back that model only), a burst of batch requests sent at
 * once up to the worker's slots, the per-worker cap on batch requests,
 * --no-slo (no refusal, no class sent), a
 * hung worker's request moving to the other one (late steps from the hung
 * one dropped). White-box: the step-time fit and the prediction formula
 * (gw_link_int.h) on hand-made STATS, and a burst spreading over workers
 * whose predictions differ by less than the fits' noise.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/proto.h"
#include "gateway/gw_link.h"
#include "gateway/gw_link_int.h"
#include "gateway/gw_models.h"
#include "gateway/gw_req.h"
#include "tests/gateway/fake_worker.h"
#include "tests/support/harness.h"

static gw_models *models;
static const gw_model *stories;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define WAIT_FOR(cond, ms)                                                                   \
	do {                                                                                 \
		int64_t _end = now_ms() + (ms);                                              \
		while (!(cond) && now_ms() < _end)                                           \
			usleep(5000);                                                        \
		assert_true(cond);                                                           \
	} while (0)

static gw_req *new_req(bool stream)
{
	int32_t prompt[] = {1, 403, 407, 261, 378};
	gw_req_opts o = {.api = GW_API_COMPLETIONS, .model = stories, .stream = stream,
			 .prompt_ids = prompt, .n_prompt = 5};
	gw_req *r;
	assert_int_equal(gw_req_create(&o, &r), LOOM_OK);
	return r;
}

static const gw_link_slo interactive = {.name = "interactive", .ttft_ms = 1000, .tpot_ms = 200,
					.priority = 1};
static const gw_link_slo strict = {.name = "interactive", .ttft_ms = 1000, .tpot_ms = 200,
				   .priority = 1, .refuse = true};
static const gw_link_slo batch = {.name = "batch", .priority = 0};

/* Admits r for model by class c; returns the loom_err, *admit and *retry. */
static loom_err admit_to(gw_link *l, gw_req *r, const gw_link_slo *c, const char *model,
			 const char *adapter, gw_admit *ad, uint32_t *retry)
{
	int32_t prompt[] = {1, 403, 407, 261, 378};
	loom_msg_submit sub = {.n_prompt = 5, .prompt_ids = prompt};
	snprintf(sub.model, sizeof sub.model, "%s", model);
	if (adapter)
		snprintf(sub.adapter, sizeof sub.adapter, "%s", adapter);
	sub.sampling.max_tokens = 16;
	gw_link_slo s = *c;
	s.arrival_ms = gw_link_now_ms();
	return gw_link_submit_slo(l, r, &sub, NULL, &s, ad, retry);
}

static loom_err admit(gw_link *l, gw_req *r, const gw_link_slo *c, const char *adapter,
		      gw_admit *ad, uint32_t *retry)
{
	return admit_to(l, r, c, "stories", adapter, ad, retry);
}

static void step(fake *f, uint64_t req, const int32_t *ids, uint32_t n, int finish)
{
	loom_step_item it = {.req = req, .n_ids = n, .ids = (int32_t *)ids, .finish = (uint8_t)finish,
			     .n_prompt = 5};
	loom_msg m = {.type = LOOM_MSG_STEP, .u.step = {.n_items = 1, .items = &it}};
	send_to_gateway(f, &m);
}

static void set_stats(fake *f, uint32_t queued, uint64_t queued_tokens, uint32_t running)
{
	pthread_mutex_lock(&f->mu);
	f->stats.queued = queued;
	f->stats.queued_tokens = queued_tokens;
	f->stats.running = running;
	pthread_mutex_unlock(&f->mu);
}

static gw_link *link2(fake *a, fake *b, bool no_slo, size_t queue, uint32_t per_worker)
{
	const char *urls[2] = {a->url, b ? b->url : NULL};
	gw_link_opts o = {.urls = urls, .n_urls = b ? 2 : 1, .no_slo = no_slo, .batch_queue = queue,
			  .batch_per_worker = per_worker};
	gw_link *l;
	assert_int_equal(gw_link_create_opts(&o, &l), LOOM_OK);
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	usleep(300 * 1000); /* both live, and their STATS in */
	return l;
}

static void test_routes_by_prediction(void **state)
{
	(void)state;
	fake a, b;
	fake_start(&a, "stories");
	fake_start(&b, "stories");
	set_stats(&a, 40, 20000, 8); /* a backlog of 20k prompt tokens */
	gw_link *l = link2(&a, &b, false, 0, 0);
	gw_req *r[3];
	gw_admit ad;
	uint32_t retry;
	for (int i = 0; i < 3; i++) {
		r[i] = new_req(false);
		assert_int_equal(admit(l, r[i], &interactive, NULL, &ad, &retry), LOOM_OK);
		assert_int_equal(ad, GW_ADMIT_SENT);
	}
	WAIT_FOR(fake_nsub(&b) == 3, 2000);
	assert_int_equal(fake_nsub(&a), 0);
	pthread_mutex_lock(&b.mu);
	assert_string_equal(b.last.slo_class, "interactive");
	assert_true(b.last.ttft_deadline_ms > 900 && b.last.ttft_deadline_ms <= 1000);
	assert_int_equal(b.last.tpot_target_ms, 200);
	assert_int_equal(b.last.n_generated, 0);
	pthread_mutex_unlock(&b.mu);
	gw_worker_info *w;
	size_t n;
	assert_int_equal(gw_link_workers(l, &w, &n), LOOM_OK);
	assert_true(w[0].predicted_ttft_ms > 1000 && w[1].predicted_ttft_ms < 1000);
	gw_link_workers_free(w, n);

	/* among workers that meet the deadline, the adapter's residency wins */
	set_stats(&a, 0, 0, 0);
	set_stats(&b, 0, 0, 0);
	static loom_resident item = {.kind = 0, .tier = LOOM_TIER_DEVICE, .name = "ad"};
	pthread_mutex_lock(&a.mu);
	a.res.n = 1;
	a.res.items = &item;
	a.send_res = true;
	pthread_mutex_unlock(&a.mu);
	usleep(300 * 1000);
	gw_req *x[3];
	for (int i = 0; i < 3; i++) {
		x[i] = new_req(false);
		assert_int_equal(admit(l, x[i], &interactive, "ad", &ad, &retry), LOOM_OK);
	}
	WAIT_FOR(fake_nsub(&a) == 3, 2000); /* a holds "ad" on its device: all there */
	assert_int_equal(fake_nsub(&b), 3);
	gw_link_destroy(l);
	for (int i = 0; i < 3; i++) {
		gw_req_release(r[i]);
		gw_req_release(x[i]);
	}
	fake_kill(&a);
	fake_kill(&b);
}

static void test_refusal_and_batch_queue(void **state)
{
	(void)state;
	fake a;
	fake_start(&a, "stories");
	set_stats(&a, 100, 1000000, 8);
	gw_link *l = link2(&a, NULL, false, 2, 0);
	gw_admit ad;
	uint32_t retry = 0;
	/* a refusing class: nobody can give a first token within 1000 ms */
	gw_req *ri = new_req(false);
	assert_int_equal(admit(l, ri, &strict, NULL, &ad, &retry), LOOM_EBUSY);
	assert_int_equal(ad, GW_ADMIT_LATE);
	assert_true(retry >= 1);
	assert_non_null(strstr(loom_errmsg(), "interactive"));
	/* batch: waits in the queue (2 places), then 429 */
	gw_req *rb[3];
	for (int i = 0; i < 3; i++)
		rb[i] = new_req(i == 0);
	assert_int_equal(admit(l, rb[0], &batch, NULL, &ad, &retry), LOOM_OK);
	assert_int_equal(ad, GW_ADMIT_QUEUED);
	assert_int_equal(admit(l, rb[1], &batch, NULL, &ad, &retry), LOOM_OK);
	assert_int_equal(ad, GW_ADMIT_QUEUED);
	assert_int_equal(admit(l, rb[2], &batch, NULL, &ad, &retry), LOOM_EBUSY);
	assert_int_equal(ad, GW_ADMIT_FULL);
	gw_link_counters c;
	gw_link_get_counters(l, &c);
	assert_int_equal(c.queued, 2);
	assert_int_equal(c.queue_cap, 2);
	usleep(300 * 1000);
	assert_int_equal(fake_nsub(&a), 0);
	/* a client that leaves while queued: gone from the queue, never sent */
	gw_link_cancel(l, gw_req_id(rb[1]));
	gw_link_get_counters(l, &c);
	assert_int_equal(c.queued, 1);
	/* the backlog clears: the queued one goes */
	set_stats(&a, 0, 0, 0);
	WAIT_FOR(fake_nsub(&a) == 1, 2000);
	assert_int_equal(fake_count(&a, false, gw_req_id(rb[0])), 1);
	pthread_mutex_lock(&a.mu);
	assert_string_equal(a.last.slo_class, "batch");
	assert_int_equal(a.last.ttft_deadline_ms, 0);
	pthread_mutex_unlock(&a.mu);
	gw_link_get_counters(l, &c);
	assert_int_equal(c.queued, 0);
	int32_t ids[] = {432};
	step(&a, gw_req_id(rb[0]), ids, 1, LOOM_FINISH_LENGTH);
	WAIT_FOR(gw_req_done(rb[0]), 2000);
	usleep(100 * 1000);
	assert_int_equal(fake_count(&a, false, gw_req_id(rb[1])), 0);
	/* shutdown ends what still waits */
	set_stats(&a, 100, 1000000, 8);
	usleep(300 * 1000);
	gw_req *rq = new_req(false);
	assert_int_equal(admit(l, rq, &batch, NULL, &ad, &retry), LOOM_OK);
	assert_int_equal(ad, GW_ADMIT_QUEUED);
	gw_link_close_all(l);
	assert_true(gw_req_done(rq));
	gw_link_get_counters(l, &c);
	assert_int_equal(c.entries, 0);
	gw_link_destroy(l);
	gw_req_release(ri);
	for (int i = 0; i < 3; i++)
		gw_req_release(rb[i]);
	gw_req_release(rq);
	fake_kill(&a);
}

static gw_link *link_opts(fake *a, size_t queue, uint32_t timeout_ms, uint32_t slots)
{
	const char *urls[1] = {a->url};
	gw_link_opts o = {.urls = urls, .n_urls = 1, .batch_queue = queue,
			  .queue_timeout_ms = timeout_ms, .worker_slots = slots};
	gw_link *l;
	assert_int_equal(gw_link_create_opts(&o, &l), LOOM_OK);
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	usleep(300 * 1000); /* its STATS in */
	return l;
}

/* A class that queues is never refused for a missed TTFT target: it goes to
 * a worker with room (where a refusing class gets 503), else it waits. The
 * queue releases by priority, then arrival; full: 429 with a Retry-After. */
static void test_queue_instead_of_refusal(void **state)
{
	(void)state;
	fake a;
	fake_start(&a, "stories");
	set_stats(&a, 0, 0, 5000); /* so many running that no TTFT prediction meets 1000 ms */
	gw_link *l = link_opts(&a, 4, 0, 0);
	gw_admit ad;
	uint32_t retry = 0;
	gw_req *rs = new_req(false), *rq = new_req(false);
	assert_int_equal(admit(l, rs, &strict, NULL, &ad, &retry), LOOM_EBUSY);
	assert_int_equal(ad, GW_ADMIT_LATE);
	assert_int_equal(admit(l, rq, &interactive, NULL, &ad, &retry), LOOM_OK);
	assert_int_equal(ad, GW_ADMIT_SENT); /* the worker has room: the gateway does not hold it */
	WAIT_FOR(fake_count(&a, false, gw_req_id(rq)) == 1, 2000);
	/* no room (a prefill backlog): everything waits, interactive first */
	set_stats(&a, 100, 1000000, 8);
	usleep(300 * 1000);
	gw_req *q[4] = {new_req(false), new_req(true), new_req(false), new_req(true)};
	const gw_link_slo *cls[4] = {&batch, &interactive, &batch, &interactive};
	for (int i = 0; i < 4; i++) {
		assert_int_equal(admit(l, q[i], cls[i], NULL, &ad, &retry), LOOM_OK);
		assert_int_equal(ad, GW_ADMIT_QUEUED);
	}
	gw_req *full = new_req(false);
	retry = 0;
	assert_int_equal(admit(l, full, &interactive, NULL, &ad, &retry), LOOM_EBUSY);
	assert_int_equal(ad, GW_ADMIT_FULL);
	assert_true(retry >= 1 && retry <= 60);
	assert_true(gw_link_retry_after_s(l) >= 1);
	assert_non_null(strstr(loom_errmsg(), "queue is full"));
	usleep(200 * 1000);
	assert_int_equal(fake_nsub(&a), 1);
	/* room again: all four go, interactive ones first, each class in arrival order */
	set_stats(&a, 0, 0, 0);
	WAIT_FOR(fake_nsub(&a) == 5, 2000);
	uint64_t want[4] = {gw_req_id(q[1]), gw_req_id(q[3]), gw_req_id(q[0]), gw_req_id(q[2])};
	pthread_mutex_lock(&a.mu);
	for (int i = 0; i < 4; i++)
		assert_int_equal(a.submits[1 + i], want[i]);
	pthread_mutex_unlock(&a.mu);
	gw_link_counters c;
	gw_link_get_counters(l, &c);
	assert_int_equal(c.queued, 0);
	gw_link_destroy(l);
	gw_req_release(rs);
	gw_req_release(rq);
	gw_req_release(full);
	for (int i = 0; i < 4; i++)
		gw_req_release(q[i]);
	fake_kill(&a);
}

/* A request that finds no room within the queue's timeout fails with 503
 * and leaves nothing behind; the wait is not cut short. */
static void test_queue_timeout(void **state)
{
	(void)state;
	fake a;
	fake_start(&a, "stories");
	set_stats(&a, 100, 1000000, 8);
	gw_link *l = link_opts(&a, 0, 400, 0);
	gw_admit ad;
	uint32_t retry;
	gw_req *r = new_req(false);
	int64_t t0 = now_ms();
	assert_int_equal(admit(l, r, &interactive, NULL, &ad, &retry), LOOM_OK);
	assert_int_equal(ad, GW_ADMIT_QUEUED);
	WAIT_FOR(gw_req_done(r), 5000);
	assert_true(now_ms() - t0 >= 400);
	int status;
	char *body = gw_req_result(r, &status);
	assert_int_equal(status, 503);
	assert_non_null(strstr(body, "admission queue"));
	loom_free(body);
	gw_link_counters c;
	gw_link_get_counters(l, &c);
	assert_int_equal(c.queued, 0);
	assert_int_equal(c.entries, 0);
	assert_int_equal(c.queue_timeouts, 1);
	assert_int_equal(fake_nsub(&a), 0); /* never sent */
	gw_link_destroy(l);
	gw_req_release(r);
	fake_kill(&a);
}

/* Batch requests go out together, up to the worker's slots (less those
 * interactive requests used lately); the rest wait and follow as slots free. */
static void test_batch_burst_at_once(void **state)
{
	(void)state;
	fake a;
	fake_start(&a, "stories");
	gw_link *l = link_opts(&a, 0, 0, 0);
	gw_admit ad;
	uint32_t retry;
	gw_req *r[20];
	for (int i = 0; i < 20; i++) {
		r[i] = new_req(true);
		assert_int_equal(admit(l, r[i], &batch, NULL, &ad, &retry), LOOM_OK);
		assert_int_equal(ad, GW_ADMIT_SENT);
	}
	WAIT_FOR(fake_nsub(&a) == 20, 2000);
	gw_link_destroy(l);
	/* a worker of 8 slots: 8 at once, then one per end */
	fake b;
	fake_start(&b, "stories");
	l = link_opts(&b, 0, 0, 8);
	gw_req *x[10];
	for (int i = 0; i < 10; i++) {
		x[i] = new_req(true);
		assert_int_equal(admit(l, x[i], &batch, NULL, &ad, &retry), LOOM_OK);
		assert_int_equal(ad, i < 8 ? GW_ADMIT_SENT : GW_ADMIT_QUEUED);
	}
	WAIT_FOR(fake_nsub(&b) == 8, 2000);
	int32_t ids[] = {432};
	step(&b, gw_req_id(x[0]), ids, 1, LOOM_FINISH_LENGTH);
	WAIT_FOR(fake_nsub(&b) == 9, 2000);
	usleep(100 * 1000);
	assert_int_equal(fake_nsub(&b), 9);
	assert_int_equal(fake_count(&b, false, gw_req_id(x[8])), 1);
	gw_link_destroy(l);
	for (int i = 0; i < 20; i++)
		gw_req_release(r[i]);
	for (int i = 0; i < 10; i++)
		gw_req_release(x[i]);
	fake_kill(&a);
	fake_kill(&b);
}

/* A request waiting for its model's workers holds back later ones for that
 * model only: another model's request goes where there is room. */
static void test_queue_per_model(void **state)
{
	(void)state;
	fake a, b;
	fake_start(&a, "stories");
	fake_start(&b, "other");
	set_stats(&a, 100, 1000000, 8);
	set_stats(&b, 100, 1000000, 8);
	const char *urls[2] = {a.url, b.url};
	gw_link_opts o = {.urls = urls, .n_urls = 2};
	gw_link *l;
	assert_int_equal(gw_link_create_opts(&o, &l), LOOM_OK);
	WAIT_FOR(gw_link_model_ready(l, "stories") && gw_link_model_ready(l, "other"), 3000);
	usleep(300 * 1000);
	gw_admit ad;
	uint32_t retry;
	gw_req *r[4];
	const char *model[4] = {"stories", "other", "other", "stories"};
	for (int i = 0; i < 4; i++)
		r[i] = new_req(false);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(admit_to(l, r[i], &batch, model[i], NULL, &ad, &retry), LOOM_OK);
		assert_int_equal(ad, GW_ADMIT_QUEUED);
	}
	/* room on other's worker: its request goes, past the waiting head for stories */
	set_stats(&b, 0, 0, 0);
	WAIT_FOR(fake_count(&b, false, gw_req_id(r[1])) == 1, 2000);
	/* nobody waits for other: a new one goes at once; one for stories queues behind */
	assert_int_equal(admit_to(l, r[2], &batch, "other", NULL, &ad, &retry), LOOM_OK);
	assert_int_equal(ad, GW_ADMIT_SENT);
	assert_int_equal(admit_to(l, r[3], &batch, "stories", NULL, &ad, &retry), LOOM_OK);
	assert_int_equal(ad, GW_ADMIT_QUEUED);
	assert_int_equal(fake_nsub(&a), 0);
	set_stats(&a, 0, 0, 0);
	WAIT_FOR(fake_nsub(&a) == 2, 2000);
	pthread_mutex_lock(&a.mu);
	assert_int_equal(a.submits[0], gw_req_id(r[0]));
	assert_int_equal(a.submits[1], gw_req_id(r[3]));
	pthread_mutex_unlock(&a.mu);
	gw_link_destroy(l);
	for (int i = 0; i < 4; i++)
		gw_req_release(r[i]);
	fake_kill(&a);
	fake_kill(&b);
}

static void test_batch_cap_per_worker(void **state)
{
	(void)state;
	fake a;
	fake_start(&a, "stories");
	gw_link *l = link2(&a, NULL, false, 0, 2);
	gw_admit ad[3];
	uint32_t retry;
	gw_req *r[3];
	for (int i = 0; i < 3; i++) {
		r[i] = new_req(false);
		assert_int_equal(admit(l, r[i], &batch, NULL, &ad[i], &retry), LOOM_OK);
	}
	assert_int_equal(ad[0], GW_ADMIT_SENT);
	assert_int_equal(ad[1], GW_ADMIT_SENT);
	assert_int_equal(ad[2], GW_ADMIT_QUEUED); /* two batch requests there already */
	/* interactive requests are not capped */
	gw_req *ri = new_req(false);
	assert_int_equal(admit(l, ri, &interactive, NULL, &ad[0], &retry), LOOM_OK);
	assert_int_equal(ad[0], GW_ADMIT_SENT);
	WAIT_FOR(fake_nsub(&a) == 3, 2000);
	int32_t ids[] = {432};
	step(&a, gw_req_id(r[0]), ids, 1, LOOM_FINISH_LENGTH);
	WAIT_FOR(fake_count(&a, false, gw_req_id(r[2])) == 1, 2000); /* its place freed */
	gw_link_destroy(l);
	for (int i = 0; i < 3; i++)
		gw_req_release(r[i]);
	gw_req_release(ri);
	fake_kill(&a);
}

static void test_no_slo(void **state)
{
	(void)state;
	fake a;
	fake_start(&a, "stories");
	set_stats(&a, 100, 1000000, 8);
	gw_link *l = link2(&a, NULL, true, 0, 0);
	gw_admit ad;
	uint32_t retry;
	gw_req *r[2] = {new_req(false), new_req(false)};
	assert_int_equal(admit(l, r[0], &interactive, NULL, &ad, &retry), LOOM_OK);
	assert_int_equal(ad, GW_ADMIT_SENT);
	assert_int_equal(admit(l, r[1], &batch, NULL, &ad, &retry), LOOM_OK);
	assert_int_equal(ad, GW_ADMIT_SENT);
	WAIT_FOR(fake_nsub(&a) == 2, 2000);
	pthread_mutex_lock(&a.mu);
	assert_string_equal(a.last.slo_class, "");
	assert_int_equal(a.last.ttft_deadline_ms, 0);
	assert_int_equal(a.last.tpot_target_ms, 0);
	pthread_mutex_unlock(&a.mu);
	gw_link_counters c;
	gw_link_get_counters(l, &c);
	assert_true(c.no_slo);
	gw_link_destroy(l);
	gw_req_release(r[0]);
	gw_req_release(r[1]);
	fake_kill(&a);
}

/* A worker that stops answering PINGs loses its request to the other one
 * after a second; what it sends late is dropped. */
static void test_hung_worker_request_moves(void **state)
{
	(void)state;
	fake a, b;
	fake_start(&a, "stories");
	fake_start(&b, "stories");
	gw_link *l = link2(&a, &b, false, 0, 0);
	gw_req *r = new_req(true);
	gw_admit ad;
	uint32_t retry;
	set_stats(&b, 0, 5000, 4); /* a looks better */
	usleep(300 * 1000);
	assert_int_equal(admit(l, r, &interactive, NULL, &ad, &retry), LOOM_OK);
	WAIT_FOR(fake_nsub(&a) == 1, 2000);
	int32_t s1[] = {432}, s2[] = {383}, s3[] = {286};
	step(&a, gw_req_id(r), s1, 1, LOOM_FINISH_NONE);
	usleep(50 * 1000);
	int64_t t0 = now_ms();
	atomic_store(&a.answer, false);
	WAIT_FOR(fake_count(&b, false, gw_req_id(r)) == 1, 3000);
	int64_t dt = now_ms() - t0;
	assert_true(dt >= 700 && dt < 2000);
	WAIT_FOR(fake_count(&a, true, gw_req_id(r)) == 1, 2000); /* told to drop it */
	pthread_mutex_lock(&b.mu);
	assert_int_equal(b.last.n_generated, 1);
	assert_int_equal(b.last_n_prompt, 6);
	assert_int_equal(b.last_prompt[5], 432);
	assert_int_equal(b.last.ttft_deadline_ms, 0); /* its first token is out already */
	pthread_mutex_unlock(&b.mu);
	step(&a, gw_req_id(r), s2, 1, LOOM_FINISH_NONE); /* late, from the hung one: dropped */
	usleep(100 * 1000);
	step(&b, gw_req_id(r), s2, 1, LOOM_FINISH_NONE);
	step(&b, gw_req_id(r), s3, 1, LOOM_FINISH_LENGTH);
	WAIT_FOR(gw_req_done(r), 2000);
	char buf[8192];
	ssize_t n = gw_req_sse_read(r, buf, sizeof buf - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_null(strstr(buf, "\"error\""));
	const char *p = strstr(buf, "\" there\"");
	assert_non_null(p);
	assert_null(strstr(p + 1, "\" there\"")); /* once */
	assert_non_null(strstr(buf, "\"finish_reason\":\"length\""));
	gw_link_destroy(l);
	gw_req_release(r);
	fake_kill(&a);
	fake_kill(&b);
}

/* ---- white-box: the step-time model and the prediction ---- */

static void stats_sample(lk_worker *w, loom_msg_stats *st, uint64_t seq, double tokens_per_step,
			 double a, double b)
{
	st->steps += 10;
	st->tokens_out += (uint64_t)(10 * tokens_per_step);
	st->step_ms = (float)(a + b * tokens_per_step);
	lk_perf_hello(w, seq);
	lk_perf_stats(w, st);
}

static void test_step_model(void **state)
{
	(void)state;
	gw_link l;
	lk_worker w;
	memset(&l, 0, sizeof l);
	memset(&w, 0, sizeof w);
	w.l = &l;
	loom_msg_stats st = {0};
	uint64_t seq = 1;
	/* before any sample: the fixed prior, 5 ms + 0.2 ms per token */
	double p0 = lk_predict_ttft(&w, "", "", "", 10);
	assert_true(fabs(p0 - (5 + 0.2 * 10)) < 1e-6);
	/* decode-only intervals at several batch sizes, step = 2 ms + 0.5 ms/token */
	lk_perf_stats(&w, &st); /* the first STATS only sets the baseline */
	const double xs[] = {1, 8, 32, 4, 64, 16, 2, 48};
	for (int k = 0; k < 16; k++)
		stats_sample(&w, &st, ++seq, xs[k % 8], 2, 0.5);
	assert_true(fabs(w.perf.a_ms - 2) < 0.05);
	assert_true(fabs(w.perf.b_ms - 0.5) < 0.01);
	/* another worker without samples borrows the fit */
	lk_worker w2;
	memset(&w2, 0, sizeof w2);
	w2.l = &l;
	assert_true(fabs(lk_predict_ttft(&w2, "", "", "", 10) - (2 + 0.5 * 10)) < 0.2);
	/* prefill counts: 512 tokens arrive and are prefilled within one interval */
	w.ping_seq = seq;
	lk_perf_submitted(&w, 512);
	assert_int_equal(w.perf.pend_tokens, 512);
	assert_int_equal(w.perf.pend_reqs, 1);
	/* a STATS answering an older PING does not reflect it yet */
	lk_perf_hello(&w, seq);
	lk_perf_stats(&w, &st);
	assert_int_equal(w.perf.pend_tokens, 512);
	st.steps += 4;
	st.tokens_out += 4;
	st.step_ms = (float)(2 + 0.5 * (512 + 4) / 4.0);
	lk_perf_hello(&w, seq + 1);
	lk_perf_stats(&w, &st);
	assert_int_equal(w.perf.pend_tokens, 0);
	assert_true(fabs(w.perf.b_ms - 0.5) < 0.02);
	/* the formula: 512 queued + 32 own tokens in ceil(544/256) = 3 steps, each with
	 * 4 running + 1 queued riding along */
	w.has_stats = true;
	w.stats.queued_tokens = 512;
	w.stats.running = 4;
	w.stats.queued = 1;
	double a = w.perf.a_ms, b = w.perf.b_ms;
	double want = 3 * (a + b * 5) + b * 544;
	assert_true(fabs(lk_predict_ttft(&w, "", "", "", 32) - want) < 1e-6);
	/* slots: 8 running while 1 waited through steps (step_ms 0: no fit sample);
	 * one STATS alone may show a SUBMIT that just arrived */
	st.queued = 1;
	st.running = 8;
	st.step_ms = 0;
	lk_perf_stats(&w, &st);
	assert_int_equal(w.perf.slots, 0);
	st.steps += 3;
	lk_perf_stats(&w, &st);
	assert_int_equal(w.perf.slots, 8);
	w.perf.dur_ms = 800;
	w.inflight = 9;
	assert_true(fabs(lk_predict_ttft(&w, "", "", "", 32) - (want + 2 * 800.0 / 8)) < 1e-6);
}

/* A burst on two workers whose fits differ by less than their noise spreads
 * over both (fewer in flight wins a near tie); a worker clearly faster, or
 * holding the adapter, still takes the burst. White-box on lk_route_slo. */
static char stories_model[1][LOOM_NAME_MAX] = {"stories"};

/* Two live workers serving "stories" with fitted step times (b_ms per token)
 * and nothing in flight, in a link made of them alone. */
static void two_workers(gw_link *l, lk_worker w[2], double b_ms)
{
	memset(l, 0, sizeof *l);
	memset(w, 0, 2 * sizeof *w);
	l->w = w;
	l->n = 2;
	int64_t now = gw_link_now_ms();
	for (int i = 0; i < 2; i++) {
		w[i].l = l;
		w[i].pipe = 1;
		w[i].last_answer_ms = now;
		w[i].models = stories_model;
		w[i].n_models = 1;
		w[i].perf.samples = 8;
		w[i].perf.b_ms = b_ms;
	}
}

static void test_burst_spreads(void **state)
{
	(void)state;
	gw_link l;
	lk_worker w[2];
	two_workers(&l, w, 0.02); /* a tiny model: a sequence more costs next to nothing */
	lk_job j;
	memset(&j, 0, sizeof j);
	snprintf(j.sub.model, sizeof j.sub.model, "stories");
	double best;
	int count[2];
	/* worker 0 is 1 ms faster per step: within the noise band */
	w[0].perf.a_ms = 6.0;
	w[1].perf.a_ms = 7.0;
	count[0] = count[1] = 0;
	for (int k = 0; k < 6; k++) {
		int i = lk_route_slo(&l, &j, 5, 1000, false, &best);
		assert_true(i == 0 || i == 1);
		assert_true(fabs(best - lk_predict_ttft(&w[0], "stories", "", "", 5)) < 1e-9 ||
			    fabs(best - lk_predict_ttft(&w[1], "stories", "", "", 5)) < 1e-9);
		w[i].inflight++;
		lk_perf_submitted(&w[i], 5);
		count[i]++;
	}
	assert_int_equal(count[0], 3);
	assert_int_equal(count[1], 3);
	/* worker 1 is three times slower: the burst goes to worker 0 */
	for (int i = 0; i < 2; i++) {
		memset(w[i].perf.pend, 0, sizeof w[i].perf.pend);
		w[i].perf.pend_tokens = 0;
		w[i].perf.pend_reqs = 0;
		w[i].inflight = 0;
	}
	w[1].perf.a_ms = 21.0;
	count[0] = count[1] = 0;
	for (int k = 0; k < 6; k++) {
		int i = lk_route_slo(&l, &j, 5, 1000, false, &best);
		w[i].inflight++;
		lk_perf_submitted(&w[i], 5);
		count[i]++;
	}
	assert_int_equal(count[0], 6);
	/* no worker meets the budget: none */
	assert_int_equal(lk_route_slo(&l, &j, 5, 1, false, &best), -1);
	assert_true(best > 1);
}

static int setup(void **state)
{
	(void)state;
	char dir[512];
	snprintf(dir, sizeof dir, "%s", lt_shared_path("models/stories260k"));
	if (gw_models_create(&models) || gw_models_add(models, "stories", dir, GW_TMPL_PLAIN))
		return -1;
	stories = gw_models_find(models, "stories");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	gw_models_destroy(models);
	return 0;
}

/* Prefix-aware routing: requests sharing a 96-token prompt prefix follow the
 * first one to its worker while the other is as fast (within the noise
 * band), though it has more in flight; unrelated prompts still spread; a
 * worker whose load costs more than the prefill saved is passed over; the
 * plain router (--no-slo) consolidates too; keys name the adapter, so
 * another adapter's request with the same prompt finds nothing cached. */
static void test_prefix_consolidates(void **state)
{
	(void)state;
	gw_link l;
	lk_worker w[2];
	two_workers(&l, w, 0.05);
	w[0].perf.a_ms = w[1].perf.a_ms = 6.0;
	int32_t ids[4][120];
	lk_job j[4];
	for (int k = 0; k < 4; k++) {
		memset(&j[k], 0, sizeof j[k]);
		snprintf(j[k].sub.model, sizeof j[k].sub.model, "stories");
		for (int t = 0; t < 120; t++) /* 0, 1, 2 share 96 tokens; 3 shares none */
			ids[k][t] = k == 3 ? 5000 + t : t < 96 ? 7 + t : 1000 * k + t;
		j[k].sub.prompt_ids = ids[k];
		j[k].sub.n_prompt = 120;
		assert_int_equal(lk_prefix_keys(&j[k]), LOOM_OK);
		assert_int_equal(j[k].n_pfx, 7);
	}
	double best;
	int first = lk_route_slo(&l, &j[0], 120, 1000, false, &best);
	assert_true(first == 0 || first == 1);
	w[first].inflight++;
	lk_perf_submitted(&w[first], 120);
	lk_prefix_record(&w[first], &j[0]);
	/* as lk_assign does: pending tokens there less the cached estimate */
	assert_int_equal(lk_prefix_cached(&w[first], &j[1]), 96);
	assert_int_equal(lk_prefix_cached(&w[1 - first], &j[1]), 0);
	assert_int_equal(lk_prefix_cached(&w[first], &j[0]), 112); /* never the last token */
	for (int k = 1; k < 3; k++) {
		int i = lk_route_slo(&l, &j[k], 120, 1000, false, &best);
		assert_int_equal(i, first);
		w[i].inflight++;
		lk_perf_submitted(&w[i], 120 - lk_prefix_cached(&w[i], &j[k]));
		lk_prefix_record(&w[i], &j[k]);
	}
	/* an unrelated prompt: the less loaded worker */
	assert_int_equal(lk_route_slo(&l, &j[3], 120, 1000, false, &best), 1 - first);
	/* the plain router: 6 cached blocks outweigh one request more there,
	 * not three */
	assert_int_equal(lk_route_plain(&l, &j[1]), 1 - first);
	uint32_t in = w[first].inflight;
	w[first].inflight = 1;
	assert_int_equal(lk_route_plain(&l, &j[1]), first);
	assert_int_equal(lk_route_plain(&l, &j[3]), 1 - first);
	w[first].inflight = in;
	/* the holder three times slower: the prefill saved does not pay for it */
	w[first].perf.a_ms = 18.0;
	assert_int_equal(lk_route_slo(&l, &j[1], 120, 1000, false, &best), 1 - first);
	w[first].perf.a_ms = 6.0;
	/* another adapter, same prompt: nothing cached anywhere */
	lk_job o = j[1];
	snprintf(o.sub.adapter, sizeof o.sub.adapter, "sql");
	o.pfx = NULL;
	assert_int_equal(lk_prefix_keys(&o), LOOM_OK);
	assert_int_equal(lk_prefix_cached(&w[first], &o), 0);
	loom_free(o.pfx);
	/* a reconnected worker forgets */
	lk_prefix_forget(&w[first]);
	assert_int_equal(lk_prefix_cached(&w[first], &j[1]), 0);
	for (int k = 0; k < 4; k++)
		loom_free(j[k].pfx);
	for (int i = 0; i < 2; i++)
		lk_prefix_free(&w[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_step_model),
		cmocka_unit_test(test_burst_spreads),
		cmocka_unit_test(test_prefix_consolidates),
		cmocka_unit_test(test_routes_by_prediction),
		cmocka_unit_test(test_refusal_and_batch_queue),
		cmocka_unit_test(test_queue_instead_of_refusal),
		cmocka_unit_test(test_queue_timeout),
		cmocka_unit_test(test_batch_burst_at_once),
		cmocka_unit_test(test_queue_per_model),
		cmocka_unit_test(test_batch_cap_per_worker),
		cmocka_unit_test(test_no_slo),
		cmocka_unit_test(test_hung_worker_request_moves),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
