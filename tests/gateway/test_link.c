/*
 * tests/gateway/test_link.c — gw_link + gw_req against scripted fake
 * workers: real nng pair1 sockets in this process that answer PINGs (or
 * stop answering), record SUBMIT/CANCEL and send STEP/ERROR on demand.
 * Covers routing, delivery, stop strings -> CANCEL, ERROR status mapping,
 * a worker that dies (socket closed: its requests resume on the other one)
 * or hangs (no PING answers; alone, so its request fails), late messages,
 * shutdown, and ADAPTER announcements (before the worker is live,
 * only for the models it serves, again after a reconnect; live only once it
 * has loaded them, however long that takes).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/proto.h"
#include "common/sha256.h"
#include "gateway/gw_link.h"
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

static gw_req *new_req(bool stream, const char *stop)
{
	int32_t prompt[] = {1, 403, 407, 261, 378};
	const char *stops[] = {stop};
	gw_req_opts o = {.api = GW_API_COMPLETIONS, .model = stories, .stream = stream,
			 .stops = stops, .n_stops = stop ? 1 : 0, .prompt_ids = prompt,
			 .n_prompt = 5};
	gw_req *r;
	assert_int_equal(gw_req_create(&o, &r), LOOM_OK);
	return r;
}

static loom_err submit(gw_link *l, gw_req *r, const char *model)
{
	loom_msg_submit sub = {.n_prompt = 0};
	snprintf(sub.model, sizeof sub.model, "%s", model);
	snprintf(sub.slo_class, sizeof sub.slo_class, "interactive");
	sub.sampling.max_tokens = 16;
	return gw_link_submit(l, r, &sub);
}

static void step(fake *f, uint64_t req, const int32_t *ids, uint32_t n, int finish)
{
	loom_step_item it = {.req = req, .n_ids = n, .ids = (int32_t *)ids, .finish = (uint8_t)finish,
			     .n_prompt = 5};
	loom_msg m = {.type = LOOM_MSG_STEP, .u.step = {.n_items = 1, .items = &it}};
	send_to_gateway(f, &m);
}

static json_t *result(gw_req *r, int *status)
{
	char *body = gw_req_result(r, status);
	assert_non_null(body);
	json_t *j = json_loads(body, 0, NULL);
	loom_free(body);
	assert_non_null(j);
	return j;
}

static gw_link *link_to(fake *a, fake *b)
{
	const char *urls[2] = {a->url, b ? b->url : NULL};
	gw_link *l;
	assert_int_equal(gw_link_create(urls, b ? 2 : 1, &l), LOOM_OK);
	return l;
}

static void test_routing_and_delivery(void **state)
{
	(void)state;
	fake a, b;
	fake_start(&a, "stories");
	fake_start(&b, "stories");
	gw_link *l = link_to(&a, &b);
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	assert_false(gw_link_model_ready(l, "other"));
	/* let both workers become live */
	usleep(300 * 1000);

	gw_req *r[4];
	for (int i = 0; i < 4; i++) {
		r[i] = new_req(false, NULL);
		assert_int_equal(submit(l, r[i], "stories"), LOOM_OK);
	}
	WAIT_FOR(a.n_submits + b.n_submits == 4, 2000);
	assert_int_equal(a.n_submits, 2); /* fewest in flight: spread evenly */
	assert_int_equal(b.n_submits, 2);
	assert_true(a.last.sampling.max_tokens == 16);
	assert_string_equal(a.last.slo_class, "interactive");

	/* a model nobody serves */
	gw_req *x = new_req(false, NULL);
	assert_int_equal(submit(l, x, "other"), LOOM_EBUSY);
	gw_req_release(x);

	/* deliver ", there was" in two steps, then EOS (id 2): text excludes EOS, usage counts it */
	fake *w0 = fake_count(&a, false, gw_req_id(r[0])) ? &a : &b;
	int32_t s1[] = {432, 383}, s2[] = {286, 2};
	step(w0, gw_req_id(r[0]), s1, 2, LOOM_FINISH_NONE);
	step(w0, gw_req_id(r[0]), s2, 2, LOOM_FINISH_STOP);
	WAIT_FOR(gw_req_done(r[0]), 2000);
	int st;
	json_t *j = result(r[0], &st);
	assert_int_equal(st, 200);
	json_t *c = json_array_get(json_object_get(j, "choices"), 0);
	assert_string_equal(json_string_value(json_object_get(c, "text")), ", there was");
	assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "stop");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"),
							    "completion_tokens")), 4);
	json_decref(j);

	/* a stream with a stop string: ends before it and CANCELs on the worker */
	gw_req *sr = new_req(true, " was");
	assert_int_equal(submit(l, sr, "stories"), LOOM_OK);
	fake *ws = NULL;
	WAIT_FOR((ws = fake_count(&a, false, gw_req_id(sr)) ? &a : fake_count(&b, false, gw_req_id(sr)) ? &b
											   : NULL),
		 2000);
	step(ws, gw_req_id(sr), s1, 2, LOOM_FINISH_NONE);
	step(ws, gw_req_id(sr), s2, 1, LOOM_FINISH_NONE);
	WAIT_FOR(gw_req_done(sr), 2000);
	WAIT_FOR(fake_count(ws, true, gw_req_id(sr)) == 1, 2000);
	char buf[8192];
	ssize_t n = gw_req_sse_read(sr, buf, sizeof buf - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "\"text\":\", there\""));
	assert_null(strstr(buf, " was"));
	assert_non_null(strstr(buf, "\"finish_reason\":\"stop\""));
	assert_non_null(strstr(buf, "data: [DONE]\n\n"));
	/* a late step for it is dropped */
	step(ws, gw_req_id(sr), s1, 2, LOOM_FINISH_LENGTH);

	/* ERROR mapping: EINVAL -> 400, anything else -> 500 */
	fake *w1 = fake_count(&a, false, gw_req_id(r[1])) ? &a : &b;
	loom_msg er = {.type = LOOM_MSG_ERROR,
		       .u.error = {.req = gw_req_id(r[1]), .code = LOOM_EINVAL, .message = "bad prompt"}};
	send_to_gateway(w1, &er);
	fake *w2 = fake_count(&a, false, gw_req_id(r[2])) ? &a : &b;
	er.u.error.req = gw_req_id(r[2]);
	er.u.error.code = LOOM_EINTERNAL;
	er.u.error.message = "kaboom";
	send_to_gateway(w2, &er);
	WAIT_FOR(gw_req_done(r[1]) && gw_req_done(r[2]), 2000);
	j = result(r[1], &st);
	assert_int_equal(st, 400);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "message")),
			    "bad prompt");
	json_decref(j);
	j = result(r[2], &st);
	assert_int_equal(st, 500);
	json_decref(j);

	/* explicit cancel (client went away) reaches the worker */
	fake *w3 = fake_count(&a, false, gw_req_id(r[3])) ? &a : &b;
	gw_link_cancel(l, gw_req_id(r[3]));
	WAIT_FOR(fake_count(w3, true, gw_req_id(r[3])) == 1, 2000);

	gw_link_destroy(l);
	for (int i = 0; i < 4; i++)
		gw_req_release(r[i]);
	gw_req_release(sr);
	fake_kill(&a);
	fake_kill(&b);
}

/* A worker that dies: its requests resume on the other worker from the last
 * token received (SUBMIT with prompt + ids so far, n_generated), and the
 * client sees one whole answer; with no worker left a request fails (502). */
static void test_worker_dies(void **state)
{
	(void)state;
	fake a, b;
	fake_start(&a, "stories");
	fake_start(&b, "stories");
	gw_link *l = link_to(&a, &b);
	usleep(400 * 1000);
	assert_true(gw_link_model_ready(l, "stories"));
	gw_req *r1 = new_req(false, NULL), *r2 = new_req(true, NULL);
	int32_t prompt[] = {1, 403, 407, 261, 378};
	loom_msg_submit sub = {.n_prompt = 5, .prompt_ids = prompt};
	snprintf(sub.model, sizeof sub.model, "stories");
	sub.sampling.max_tokens = 16;
	sub.sampling.seed = 77;
	sub.sampling.temperature = 0.5f;
	assert_int_equal(gw_link_submit(l, r1, &sub), LOOM_OK);
	assert_int_equal(gw_link_submit(l, r2, &sub), LOOM_OK);
	WAIT_FOR(a.n_submits == 1 && b.n_submits == 1, 2000);
	gw_req *on_a = fake_count(&a, false, gw_req_id(r1)) ? r1 : r2;
	gw_req *on_b = on_a == r1 ? r2 : r1;
	/* two tokens from a, then it dies */
	int32_t s1[] = {432, 383}, s2[] = {286, 2};
	step(&a, gw_req_id(on_a), s1, 2, LOOM_FINISH_NONE);
	usleep(100 * 1000);
	int64_t t0 = now_ms();
	fake_kill(&a);
	WAIT_FOR(fake_count(&b, false, gw_req_id(on_a)) == 1, 2000);
	assert_true(now_ms() - t0 < 1000); /* the pipe event, not the heartbeat */
	assert_false(gw_req_done(on_a));
	pthread_mutex_lock(&b.mu);
	assert_int_equal(b.last.req, gw_req_id(on_a));
	assert_int_equal(b.last.n_generated, 2);
	assert_int_equal(b.last_n_prompt, 7);
	assert_memory_equal(b.last_prompt, prompt, sizeof prompt);
	assert_int_equal(b.last_prompt[5], 432);
	assert_int_equal(b.last_prompt[6], 383);
	assert_true(b.last.sampling.seed == 77 && b.last.sampling.max_tokens == 16);
	assert_true(b.last.sampling.temperature == 0.5f);
	pthread_mutex_unlock(&b.mu);
	/* b goes on from there; the client gets one answer without a seam */
	step(&b, gw_req_id(on_a), s2, 2, LOOM_FINISH_STOP);
	WAIT_FOR(gw_req_done(on_a), 2000);
	int st;
	if (on_a == r1) {
		json_t *j = result(r1, &st);
		assert_int_equal(st, 200);
		json_t *c = json_array_get(json_object_get(j, "choices"), 0);
		assert_string_equal(json_string_value(json_object_get(c, "text")), ", there was");
		assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"),
								    "completion_tokens")), 4);
		json_decref(j);
	} else {
		char buf[8192];
		ssize_t n = gw_req_sse_read(r2, buf, sizeof buf - 1);
		assert_true(n > 0);
		buf[n] = '\0';
		assert_null(strstr(buf, "\"error\""));
		assert_non_null(strstr(buf, "\"text\":\",\""));
		assert_non_null(strstr(buf, "\"text\":\" there\""));
		assert_non_null(strstr(buf, "\"text\":\" was\""));
		assert_non_null(strstr(buf, "data: [DONE]\n\n"));
	}
	assert_false(gw_req_done(on_b));
	/* the last worker dies: nobody can take its requests */
	gw_req *r3 = new_req(false, NULL);
	assert_int_equal(submit(l, r3, "stories"), LOOM_OK);
	WAIT_FOR(fake_count(&b, false, gw_req_id(r3)) == 1, 2000);
	fake_kill(&b);
	WAIT_FOR(gw_req_done(on_b) && gw_req_done(r3), 2000);
	json_t *j = result(r3, &st);
	assert_int_equal(st, 502);
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"),
								 "message")), "no other live worker"));
	json_decref(j);
	WAIT_FOR(!gw_link_model_ready(l, "stories"), 2000);
	gw_req *r4 = new_req(false, NULL);
	assert_int_equal(submit(l, r4, "stories"), LOOM_EBUSY);
	gw_link_counters c;
	gw_link_get_counters(l, &c);
	assert_true(c.resumed == 1 && c.lost == 2 && c.entries == 0);
	gw_link_destroy(l);
	gw_req_release(r1);
	gw_req_release(r2);
	gw_req_release(r3);
	gw_req_release(r4);
}

static void test_worker_hangs_and_recovers(void **state)
{
	(void)state;
	fake a;
	fake_start(&a, "stories");
	gw_link *l = link_to(&a, NULL);
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	gw_req *r = new_req(false, NULL);
	assert_int_equal(submit(l, r, "stories"), LOOM_OK);
	WAIT_FOR(a.n_submits == 1, 2000);
	int64_t t0 = now_ms();
	atomic_store(&a.answer, false);
	WAIT_FOR(gw_req_done(r), 3000);
	int64_t dt = now_ms() - t0;
	assert_true(dt >= 700 && dt < 2000);
	int st;
	json_t *j = result(r, &st);
	assert_int_equal(st, 502);
	json_decref(j);
	assert_false(gw_link_model_ready(l, "stories"));
	WAIT_FOR(fake_count(&a, true, gw_req_id(r)) == 1, 2000); /* the hung worker is told to drop it */
	/* steps that arrive late for the failed request are dropped */
	int32_t ids[] = {432};
	step(&a, gw_req_id(r), ids, 1, LOOM_FINISH_LENGTH);
	atomic_store(&a.answer, true);
	WAIT_FOR(gw_link_model_ready(l, "stories"), 2000);
	gw_link_destroy(l);
	gw_req_release(r);
	fake_kill(&a);
}

static void test_worker_starts_late_and_shutdown(void **state)
{
	(void)state;
	fake a;
	char url[128];
	snprintf(url, sizeof url, "ipc:///tmp/loom-gwt-%d-late.ipc", (int)getpid());
	const char *urls[] = {url};
	gw_link *l;
	assert_int_equal(gw_link_create(urls, 1, &l), LOOM_OK);
	usleep(200 * 1000);
	assert_false(gw_link_model_ready(l, "stories"));
	/* now the worker starts listening at that url: the redial finds it */
	fake_start_at(&a, "stories", url);
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	/* shutdown: what is in flight ends with 503, later submits are refused */
	gw_req *r = new_req(true, NULL);
	assert_int_equal(submit(l, r, "stories"), LOOM_OK);
	WAIT_FOR(a.n_submits == 1, 2000);
	gw_link_close_all(l);
	assert_true(gw_req_done(r));
	WAIT_FOR(fake_count(&a, true, gw_req_id(r)) == 1, 2000);
	gw_req *r2 = new_req(false, NULL);
	assert_int_equal(submit(l, r2, "stories"), LOOM_EBUSY);
	gw_link_destroy(l);
	gw_req_release(r);
	gw_req_release(r2);
	fake_kill(&a);
}

static void test_adapters_announced(void **state)
{
	(void)state;
	fake a;
	fake_start(&a, "stories");
	const gw_link_adapter ads[] = {
		{.name = "ad-q", .base_model = "stories", .path = "/abs/ad-q"},
		{.name = "other-ad", .base_model = "other", .path = "/abs/other-ad"},
		{.name = "ad-v", .base_model = "stories", .path = "/abs/ad-v"},
	};
	const char *urls[] = {a.url};
	gw_link *l;
	assert_int_equal(gw_link_create_with_adapters(urls, 1, ads, 3, &l), LOOM_OK);
	/* the first SUBMIT leaves the moment the worker is live: its ADAPTERs precede it */
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	gw_req *r = new_req(false, NULL);
	loom_msg_submit sub = {.sampling.max_tokens = 4};
	snprintf(sub.model, sizeof sub.model, "stories");
	snprintf(sub.adapter, sizeof sub.adapter, "ad-v");
	assert_int_equal(gw_link_submit(l, r, &sub), LOOM_OK);
	WAIT_FOR(a.n_submits == 1, 2000);
	assert_string_equal(a.last.adapter, "ad-v");
	assert_string_equal(a.last.model, "stories");
	assert_int_equal(a.n_adapters, 2); /* not other-ad: that worker does not serve "other" */
	assert_string_equal(a.ad_name[0], "ad-q");
	assert_string_equal(a.ad_name[1], "ad-v");
	for (int i = 0; i < 2; i++) {
		assert_string_equal(a.ad_base[i], "stories");
		assert_int_equal(a.ad_after_submits[i], 0);
	}
	assert_string_equal(a.ad_path[1], "/abs/ad-v");
	/* later HELLOs (every 200 ms) do not repeat them */
	usleep(500 * 1000);
	assert_int_equal(a.n_adapters, 2);
	/* a worker's ERROR{req 0} about an adapter is only a warning */
	loom_msg er = {.type = LOOM_MSG_ERROR,
		       .u.error = {.req = 0, .code = LOOM_EFORMAT,
				   .message = "adapter ad-q: /abs/ad-q: no such folder"}};
	send_to_gateway(&a, &er);
	int32_t ids[] = {432};
	step(&a, gw_req_id(r), ids, 1, LOOM_FINISH_LENGTH);
	WAIT_FOR(gw_req_done(r), 2000);
	int st;
	json_decref(result(r, &st));
	assert_int_equal(st, 200);
	/* a new connection (the worker restarted) gets them again before it is live */
	char url[128];
	snprintf(url, sizeof url, "%s", a.url);
	fake_kill(&a);
	WAIT_FOR(!gw_link_model_ready(l, "stories"), 2000);
	fake b;
	fake_start_at(&b, "stories", url);
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	gw_req *r2 = new_req(false, NULL);
	assert_int_equal(gw_link_submit(l, r2, &sub), LOOM_OK);
	WAIT_FOR(b.n_submits == 1, 2000);
	assert_int_equal(b.n_adapters, 2);
	assert_int_equal(b.ad_after_submits[1], 0);
	gw_link_destroy(l);
	gw_req_release(r);
	gw_req_release(r2);
	fake_kill(&b);
}

/* A worker that takes longer than the liveness timeout to load its adapters
 * is neither routed to while loading nor taken for hung. */
static void test_slow_adapter_load(void **state)
{
	(void)state;
	fake a;
	fake_start(&a, "stories");
	a.adapter_delay_ms = 700;
	const gw_link_adapter ads[] = {
		{.name = "ad-1", .base_model = "stories", .path = "/abs/ad-1"},
		{.name = "ad-2", .base_model = "stories", .path = "/abs/ad-2"},
	};
	const char *urls[] = {a.url};
	gw_link *l;
	int64_t t0 = now_ms();
	assert_int_equal(gw_link_create_with_adapters(urls, 1, ads, 2, &l), LOOM_OK);
	WAIT_FOR(a.n_adapters >= 1, 2000);
	while (a.n_adapters < 2 && now_ms() - t0 < 3000) {
		assert_false(gw_link_model_ready(l, "stories"));
		usleep(10 * 1000);
	}
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	assert_true(now_ms() - t0 >= 1300);
	gw_req *r = new_req(false, NULL);
	assert_int_equal(submit(l, r, "stories"), LOOM_OK);
	WAIT_FOR(a.n_submits == 1, 2000);
	int32_t ids[] = {432};
	step(&a, gw_req_id(r), ids, 1, LOOM_FINISH_LENGTH);
	WAIT_FOR(gw_req_done(r), 2000);
	int st;
	json_decref(result(r, &st));
	assert_int_equal(st, 200);
	gw_link_destroy(l);
	gw_req_release(r);
	fake_kill(&a);
}

/* ---- registrations at run time, models, FETCH, RESIDENCY ---- */

static const char sha_a[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char sha_b[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static int adapter_msgs(fake *f, const char *name, char *last_sha)
{
	int n = 0;
	pthread_mutex_lock(&f->mu);
	for (int i = 0; i < f->n_adapters; i++) {
		if (!strcmp(f->ad_name[i], name)) {
			n++;
			if (last_sha)
				strcpy(last_sha, f->ad_sha[i]);
		}
	}
	pthread_mutex_unlock(&f->mu);
	return n;
}

/* An adapter registered (or replaced) while a worker is live reaches it before
 * gw_link_put_adapter returns, so the next SUBMIT follows it. */
static void test_put_adapter_live(void **state)
{
	(void)state;
	fake a, b;
	fake_start(&a, "stories");
	fake_start(&b, "other");
	const char *urls[] = {a.url, b.url};
	gw_link *l;
	assert_int_equal(gw_link_create(urls, 2, &l), LOOM_OK);
	WAIT_FOR(gw_link_model_ready(l, "stories") && gw_link_model_ready(l, "other"), 3000);
	assert_int_equal(a.n_adapters, 0);
	gw_link_adapter ad = {.name = "late", .base_model = "stories", .sha = sha_a};
	assert_int_equal(gw_link_put_adapter(l, &ad), LOOM_OK);
	/* queued before the call returned: a SUBMIT sent now arrives after it */
	gw_req *r = new_req(false, NULL);
	loom_msg_submit sub = {.sampling.max_tokens = 4};
	snprintf(sub.model, sizeof sub.model, "stories");
	snprintf(sub.adapter, sizeof sub.adapter, "late");
	assert_int_equal(gw_link_submit(l, r, &sub), LOOM_OK);
	WAIT_FOR(a.n_submits == 1, 2000);
	char sha[LOOM_SHA_HEX];
	assert_int_equal(adapter_msgs(&a, "late", sha), 1);
	assert_string_equal(sha, sha_a);
	assert_int_equal(a.ad_after_submits[0], 0);
	assert_string_equal(a.ad_path[0], "");
	assert_int_equal(adapter_msgs(&b, "late", NULL), 0); /* b does not serve stories */
	/* a replacement: the new version before the next SUBMIT */
	ad.sha = sha_b;
	assert_int_equal(gw_link_put_adapter(l, &ad), LOOM_OK);
	gw_req *r2 = new_req(false, NULL);
	assert_int_equal(gw_link_submit(l, r2, &sub), LOOM_OK);
	WAIT_FOR(a.n_submits == 2, 2000);
	assert_int_equal(adapter_msgs(&a, "late", sha), 2);
	assert_string_equal(sha, sha_b);
	assert_int_equal(a.ad_after_submits[1], 1);
	/* later HELLOs do not repeat it; a removed adapter is not told to new connections */
	usleep(300 * 1000);
	assert_int_equal(adapter_msgs(&a, "late", NULL), 2);
	gw_link_remove_adapter(l, "late");
	char url[128];
	snprintf(url, sizeof url, "%s", a.url);
	fake_kill(&a);
	WAIT_FOR(!gw_link_model_ready(l, "stories"), 2000);
	fake c;
	fake_start_at(&c, "stories", url);
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	assert_int_equal(c.n_adapters, 0);
	/* bad input */
	gw_link_adapter bad = {.name = "x", .base_model = "stories", .sha = "123"};
	assert_int_equal(gw_link_put_adapter(l, &bad), LOOM_EINVAL);
	gw_link_destroy(l);
	gw_req_release(r);
	gw_req_release(r2);
	fake_kill(&b);
	fake_kill(&c);
}

/* MODEL: sent to workers that do not list the model (before its adapters),
 * not to one that does; a model registered later goes to every worker and
 * the worker is routed to once it lists it. */
static void test_models_announced(void **state)
{
	(void)state;
	fake a;
	fake_start(&a, "stories");
	const gw_link_model ms[] = {{.name = "stories", .sha = sha_a}, {.name = "m2", .sha = sha_b}};
	const gw_link_adapter ads[] = {{.name = "ad2", .base_model = "m2", .sha = sha_a},
				       {.name = "ad1", .base_model = "stories", .sha = sha_b}};
	const char *urls[] = {a.url};
	gw_link_opts o = {.urls = urls, .n_urls = 1, .models = ms, .n_models = 2, .adapters = ads,
			  .n_adapters = 2};
	gw_link *l;
	assert_int_equal(gw_link_create_opts(&o, &l), LOOM_OK);
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	WAIT_FOR(gw_link_model_ready(l, "m2"), 3000);
	pthread_mutex_lock(&a.mu);
	assert_int_equal(a.n_model_msgs, 1);
	assert_string_equal(a.mod_name[0], "m2");
	assert_string_equal(a.mod_sha[0], sha_b);
	assert_int_equal(a.n_adapters, 2); /* ad2 too: its base was just announced */
	pthread_mutex_unlock(&a.mu);
	/* a model registered while the worker is live */
	gw_link_model m3 = {.name = "m3", .sha = sha_a};
	assert_int_equal(gw_link_put_model(l, &m3), LOOM_OK);
	assert_true(gw_link_wait_model(l, "m3", 3000));
	assert_int_equal(a.n_model_msgs, 2);
	/* replacing a model the worker listed by itself sends it too */
	gw_link_model st = {.name = "stories", .sha = sha_b};
	assert_int_equal(gw_link_put_model(l, &st), LOOM_OK);
	WAIT_FOR(a.n_model_msgs == 3, 2000);
	assert_string_equal(a.mod_name[2], "stories");
	gw_link_remove_model(l, "m3");
	assert_false(gw_link_wait_model(l, "nope", 100));
	gw_link_destroy(l);
	fake_kill(&a);
}

static void test_fetch(void **state)
{
	(void)state;
	char *dir = lt_tmpdir("link-fetch");
	st_store *st;
	assert_int_equal(st_open(dir, 0, &st), LOOM_OK);
	size_t n = 2 * LOOM_BLOB_CHUNK + 12345;
	uint8_t *data = loom_malloc(n), sha[32];
	assert_non_null(data);
	for (size_t i = 0; i < n; i++)
		data[i] = (uint8_t)(i * 2654435761u >> 13);
	assert_int_equal(st_blob_put(st, data, n, sha), LOOM_OK);
	fake a;
	fake_start(&a, "stories");
	a.blob_buf = loom_calloc(1, n);
	a.blob_cap = n;
	const char *urls[] = {a.url};
	gw_link_opts o = {.urls = urls, .n_urls = 1, .store = st};
	gw_link *l;
	assert_int_equal(gw_link_create_opts(&o, &l), LOOM_OK);
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	/* chunk by chunk, as a worker asks */
	loom_msg f = {.type = LOOM_MSG_FETCH};
	loom_sha256_hex(sha, f.u.fetch.sha);
	uint64_t off = 0;
	int chunks = 0;
	while (off < n) {
		f.u.fetch.offset = off;
		int before = a.n_blobs;
		send_to_gateway(&a, &f);
		WAIT_FOR(a.n_blobs == before + 1, 3000);
		assert_int_equal(a.blob_total, n);
		assert_int_equal(a.blob_offset, off);
		assert_true(a.blob_len > 0 && a.blob_len <= LOOM_BLOB_CHUNK);
		off += a.blob_len;
		chunks++;
	}
	assert_int_equal(chunks, 3);
	assert_memory_equal(a.blob_buf, data, n);
	/* past the end: no bytes; an unknown blob: total 0 */
	f.u.fetch.offset = n;
	send_to_gateway(&a, &f);
	WAIT_FOR(a.n_blobs == 4, 3000);
	assert_int_equal(a.blob_len, 0);
	assert_int_equal(a.blob_total, n);
	snprintf(f.u.fetch.sha, sizeof f.u.fetch.sha, "%s", sha_a);
	f.u.fetch.offset = 0;
	send_to_gateway(&a, &f);
	WAIT_FOR(a.n_blobs == 5, 3000);
	assert_int_equal(a.blob_total, 0);
	assert_int_equal(a.blob_len, 0);
	gw_link_destroy(l);
	fake_kill(&a);
	loom_free(a.blob_buf);
	loom_free(data);
	st_close(st);
	loom_free(dir);
}

/* RESIDENCY is kept per worker (snapshots) and routing prefers where the
 * adapter's version is resident, then load. */
static void test_residency_routing(void **state)
{
	(void)state;
	fake a, b;
	fake_start(&a, "stories");
	fake_start(&b, "stories");
	loom_resident items[] = {
		{.kind = 0, .tier = LOOM_TIER_DEVICE, .name = "hot", .bytes = 1000},
		{.kind = 1, .tier = LOOM_TIER_DEVICE, .name = "stories", .bytes = 5000},
	};
	snprintf(items[0].sha, sizeof items[0].sha, "%s", sha_a);
	loom_resident model_only = items[1];
	pthread_mutex_lock(&b.mu);
	b.res = (loom_msg_residency){.n = 2, .items = items, .host_budget = 1 << 20,
				     .device_bytes = 1000, .cold_loads = 3, .cold_load_ms = 1.5};
	b.send_res = true;
	pthread_mutex_unlock(&b.mu);
	pthread_mutex_lock(&a.mu);
	a.res = (loom_msg_residency){.n = 1, .items = &model_only};
	a.send_res = true;
	pthread_mutex_unlock(&a.mu);
	const char *urls[] = {a.url, b.url};
	gw_link *l;
	assert_int_equal(gw_link_create(urls, 2, &l), LOOM_OK);
	WAIT_FOR(gw_link_model_ready(l, "stories"), 3000);
	gw_worker_info *w = NULL;
	size_t n = 0;
	for (int64_t end = now_ms() + 3000; now_ms() < end; usleep(20000)) {
		gw_link_workers_free(w, n);
		assert_int_equal(gw_link_workers(l, &w, &n), LOOM_OK);
		if (w[0].has_residency && w[1].has_residency && w[0].live && w[1].live)
			break;
	}
	assert_int_equal(n, 2);
	assert_true(w[1].has_residency);
	assert_int_equal(w[1].res.n, 2);
	assert_string_equal(w[1].res.items[0].name, "hot");
	assert_int_equal(w[1].res.cold_loads, 3);
	assert_string_equal(w[1].id, "fake");
	assert_string_equal(w[1].backend, "cpu");
	assert_int_equal(w[1].n_models, 1);
	gw_link_workers_free(w, n);
	/* "hot" (that version) is on b's device: b, even with a request in flight there
	 * less than a cold load costs... then the load decides */
	loom_msg_submit sub = {.sampling.max_tokens = 4};
	snprintf(sub.model, sizeof sub.model, "stories");
	snprintf(sub.adapter, sizeof sub.adapter, "hot");
	gw_req *r[3];
	for (int i = 0; i < 3; i++)
		r[i] = new_req(false, NULL);
	assert_int_equal(gw_link_submit_to(l, r[0], &sub, sha_a), LOOM_OK);
	WAIT_FOR(b.n_submits == 1, 2000);
	assert_int_equal(a.n_submits, 0);
	/* another version of "hot" is resident nowhere: the least loaded (a) */
	assert_int_equal(gw_link_submit_to(l, r[1], &sub, sha_b), LOOM_OK);
	WAIT_FOR(a.n_submits == 1, 2000);
	/* the resident version again: b has 1 in flight (cost 4), a 1 + cold (cost 7) */
	assert_int_equal(gw_link_submit_to(l, r[2], &sub, sha_a), LOOM_OK);
	WAIT_FOR(b.n_submits == 2, 2000);
	assert_int_equal(gw_link_inflight(l), 3);
	gw_link_destroy(l);
	for (int i = 0; i < 3; i++)
		gw_req_release(r[i]);
	fake_kill(&a);
	fake_kill(&b);
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routing_and_delivery),
		cmocka_unit_test(test_worker_dies),
		cmocka_unit_test(test_worker_hangs_and_recovers),
		cmocka_unit_test(test_worker_starts_late_and_shutdown),
		cmocka_unit_test(test_adapters_announced),
		cmocka_unit_test(test_slow_adapter_load),
		cmocka_unit_test(test_put_adapter_live),
		cmocka_unit_test(test_models_announced),
		cmocka_unit_test(test_fetch),
		cmocka_unit_test(test_residency_routing),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
