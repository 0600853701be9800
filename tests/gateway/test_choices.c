/*
 * tests/gateway/test_choices.c — `n` > 1 at the gateway, against a fake
 * worker (loom-gateway a real process, real HTTP): a request with n = k
 * becomes k SUBMITs with their own ids, the same prompt and sampling and
 * seeds seed + i; the worker's steps for the k ids, in any order, give k
 * choices sorted by index (finish, text, ids per choice; usage: the prompt
 * once, completion tokens summed, cached tokens the fewest); streamed, every
 * chunk carries one choice with its index, [DONE] after the last choice;
 * one choice's ERROR fails the request and CANCELs the others; a client
 * that hangs up cancels all k.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <signal.h>

#include "tests/gateway/gw_proc.h"

static char *dir;

/* stories260k ids: "," " there" */
static const int32_t COMMA = 432, THERE = 383;

static void step(fake *w, uint64_t req, const int32_t *ids, uint32_t n, int finish,
		 uint32_t n_cached)
{
	loom_step_item it = {.req = req, .n_ids = n, .ids = (int32_t *)ids,
			     .finish = (uint8_t)finish, .n_prompt = 2, .n_cached = n_cached};
	loom_msg m = {.type = LOOM_MSG_STEP, .u.step = {.n_items = 1, .items = &it}};
	send_to_gateway(w, &m);
}

static void wait_submits(fake *w, int n)
{
	int64_t end = gwp_ms() + 5000;
	while (fake_nsub(w) < n && gwp_ms() < end)
		usleep(10 * 1000);
	assert_int_equal(fake_nsub(w), n);
}

static int n_cancels(fake *w)
{
	pthread_mutex_lock(&w->mu);
	int n = w->n_cancels;
	pthread_mutex_unlock(&w->mu);
	return n;
}

/* A POST run on its own thread (the test plays the worker meanwhile). */
typedef struct call {
	pthread_t th;
	gwp *g;
	const char *path, *body;
	long timeout_ms;
	long status;
	lt_resp r;
} call;

static void *call_main(void *arg)
{
	call *c = arg;
	c->status = gwp_http(c->g, "POST", c->path, c->body, c->timeout_ms, &c->r);
	return NULL;
}

static void call_start(call *c, gwp *g, const char *path, const char *body, long timeout_ms)
{
	*c = (call){.g = g, .path = path, .body = body, .timeout_ms = timeout_ms};
	assert_int_equal(pthread_create(&c->th, NULL, call_main, c), 0);
}

static void call_join(call *c)
{
	pthread_join(c->th, NULL);
}

static void start(gwp *g, fake *w)
{
	fake_start(w, "s");
	assert_int_equal(gwp_start(g, dir, w, NULL), 0);
}

static void stop(gwp *g, fake *w)
{
	assert_int_equal(lt_stop(&g->p, SIGTERM, 5000), 0);
	fake_kill(w);
}

/* n = 3: three SUBMITs (own ids, seeds 100..102, the same prompt), steps
 * answered out of order, choices sorted by index. */
static void test_fanout(void **state)
{
	(void)state;
	fake w;
	gwp g;
	start(&g, &w);
	call c;
	call_start(&c, &g, "/v1/completions", "{\"model\":\"s\",\"prompt\":\"hi\",\"n\":3,"
		   "\"seed\":100,\"max_tokens\":2,\"return_token_ids\":true}", 10000);
	wait_submits(&w, 3);
	uint64_t id[3];
	for (int i = 0; i < 3; i++) {
		id[i] = w.submits[i];
		assert_true(w.seeds[i] == 100 + (uint64_t)i);
		for (int k = 0; k < i; k++)
			assert_true(id[k] != id[i]);
	}
	assert_int_equal(w.last.sampling.max_tokens, 2);
	/* choice 2 first, choice 1 in two steps, choice 0 stops at one token */
	step(&w, id[2], &THERE, 1, LOOM_FINISH_NONE, 1);
	step(&w, id[1], &COMMA, 1, LOOM_FINISH_NONE, 1);
	step(&w, id[2], &COMMA, 1, LOOM_FINISH_LENGTH, 1);
	int32_t eos = 2;
	step(&w, id[0], &eos, 1, LOOM_FINISH_STOP, 1);
	step(&w, id[1], &THERE, 1, LOOM_FINISH_LENGTH, 1);
	call_join(&c);
	assert_int_equal(c.status, 200);
	json_t *j = json_loads(c.r.body, 0, NULL);
	assert_non_null(j);
	json_t *ch = json_object_get(j, "choices");
	assert_int_equal(json_array_size(ch), 3);
	static const char *text[] = {"", ", there", " there,"};
	static const char *fin[] = {"stop", "length", "length"};
	for (size_t i = 0; i < 3; i++) {
		json_t *x = json_array_get(ch, i);
		assert_int_equal(json_integer_value(json_object_get(x, "index")), (long long)i);
		assert_string_equal(json_string_value(json_object_get(x, "text")), text[i]);
		assert_string_equal(json_string_value(json_object_get(x, "finish_reason")), fin[i]);
		assert_int_equal(json_array_size(json_object_get(x, "token_ids")), i ? 2 : 1);
	}
	json_t *u = json_object_get(j, "usage");
	assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 5);
	/* the prompt once; cached: the fewest any choice took (not their sum) */
	assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")),
			 w.last_n_prompt);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(u,
				"prompt_tokens_details"), "cached_tokens")), 1);
	json_decref(j);
	lt_resp_free(&c.r);
	assert_int_equal(n_cancels(&w), 0);
	stop(&g, &w);
}

/* Streamed: each chunk one choice with its index, interleaved as the steps
 * come; [DONE] once, after the usage chunk, when the last choice ended. */
static void test_stream(void **state)
{
	(void)state;
	fake w;
	gwp g;
	start(&g, &w);
	call c;
	call_start(&c, &g, "/v1/chat/completions", "{\"model\":\"s\",\"messages\":[{\"role\":"
		   "\"user\",\"content\":\"hi\"}],\"n\":2,\"max_tokens\":2,\"stream\":true,"
		   "\"stream_options\":{\"include_usage\":true}}", 10000);
	wait_submits(&w, 2);
	uint64_t a = w.submits[0], b = w.submits[1];
	assert_true(w.seeds[1] == w.seeds[0] + 1); /* a drawn seed, then + 1 */
	step(&w, b, &COMMA, 1, LOOM_FINISH_NONE, 0);
	step(&w, a, &THERE, 1, LOOM_FINISH_NONE, 0);
	step(&w, b, &THERE, 1, LOOM_FINISH_LENGTH, 0);
	step(&w, a, &COMMA, 1, LOOM_FINISH_LENGTH, 0);
	call_join(&c);
	assert_int_equal(c.status, 200);
	char text[2][64] = {"", ""};
	int roles[2] = {0, 0}, fins[2] = {0, 0}, n_done = 0, usage = 0, order[8], n_order = 0;
	for (char *p = c.r.body; (p = strstr(p, "data: ")); ) {
		p += 6;
		char *end = strstr(p, "\n\n");
		assert_non_null(end);
		*end = '\0';
		if (!strcmp(p, "[DONE]")) {
			n_done++;
			p = end + 1;
			continue;
		}
		assert_int_equal(n_done, 0);
		json_t *j = json_loads(p, 0, NULL);
		assert_non_null(j);
		json_t *ch = json_object_get(j, "choices");
		if (json_array_size(ch) == 0) {
			json_t *u = json_object_get(j, "usage");
			assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 4);
			usage++;
		} else {
			assert_int_equal(json_array_size(ch), 1);
			assert_int_equal(usage, 0);
			json_t *x = json_array_get(ch, 0);
			json_t *ix = json_object_get(x, "index");
			assert_true(json_is_integer(ix));
			int i = (int)json_integer_value(ix);
			assert_true(i == 0 || i == 1);
			assert_int_equal(fins[i], 0); /* nothing after a choice's end */
			json_t *d = json_object_get(x, "delta");
			if (json_object_get(d, "role"))
				roles[i]++;
			const char *t = json_string_value(json_object_get(d, "content"));
			if (t) {
				strcat(text[i], t);
				if (n_order < 8)
					order[n_order++] = i;
			}
			if (json_is_string(json_object_get(x, "finish_reason")))
				fins[i]++;
		}
		json_decref(j);
		p = end + 1;
	}
	assert_int_equal(n_done, 1);
	assert_int_equal(usage, 1);
	assert_int_equal(roles[0], 1);
	assert_int_equal(roles[1], 1);
	assert_int_equal(fins[0], 1);
	assert_int_equal(fins[1], 1);
	assert_string_equal(text[0], " there,");
	assert_string_equal(text[1], ", there");
	assert_true(n_order >= 2 && order[0] == 1); /* as they came: choice 1 first */
	lt_resp_free(&c.r);
	stop(&g, &w);
}

/* One choice fails: the request fails, the others are canceled. */
static void test_one_fails(void **state)
{
	(void)state;
	fake w;
	gwp g;
	start(&g, &w);
	call c;
	call_start(&c, &g, "/v1/completions", "{\"model\":\"s\",\"prompt\":\"hi\",\"n\":3,"
		   "\"max_tokens\":4}", 10000);
	wait_submits(&w, 3);
	step(&w, w.submits[0], &COMMA, 1, LOOM_FINISH_NONE, 0);
	loom_msg er = {.type = LOOM_MSG_ERROR,
		       .u.error = {.req = w.submits[1], .code = LOOM_EINTERNAL, .message = "kaboom"}};
	send_to_gateway(&w, &er);
	call_join(&c);
	assert_int_equal(c.status, 500);
	assert_non_null(strstr(c.r.body, "kaboom"));
	lt_resp_free(&c.r);
	int64_t end = gwp_ms() + 3000;
	while (n_cancels(&w) < 2 && gwp_ms() < end)
		usleep(10 * 1000);
	assert_int_equal(n_cancels(&w), 2);
	assert_int_equal(fake_count(&w, true, w.submits[0]), 1);
	assert_int_equal(fake_count(&w, true, w.submits[2]), 1);
	assert_int_equal(fake_count(&w, true, w.submits[1]), 0);
	/* late steps of the canceled choices change nothing; the gateway still serves */
	step(&w, w.submits[2], &COMMA, 1, LOOM_FINISH_LENGTH, 0);
	w.auto_ids[0] = COMMA;
	w.n_auto = 1;
	w.auto_finish = LOOM_FINISH_LENGTH;
	lt_resp r;
	assert_int_equal(gwp_http(&g, "POST", "/v1/completions",
				  "{\"model\":\"s\",\"prompt\":\"hi\",\"n\":2}", 5000, &r), 200);
	lt_resp_free(&r);
	stop(&g, &w);
}

/* A client that hangs up (non-stream, then stream) cancels every choice. */
static void test_hangup(void **state)
{
	(void)state;
	fake w;
	gwp g;
	start(&g, &w);
	w.auto_ids[0] = COMMA;
	w.n_auto = 1;
	w.auto_finish = LOOM_FINISH_NONE; /* one token each, then nothing */
	lt_resp r;
	assert_int_equal(gwp_http(&g, "POST", "/v1/completions",
				  "{\"model\":\"s\",\"prompt\":\"hi\",\"n\":4}", 400, &r), 0);
	lt_resp_free(&r);
	int64_t end = gwp_ms() + 3000;
	while (n_cancels(&w) < 4 && gwp_ms() < end)
		usleep(20 * 1000);
	assert_int_equal(n_cancels(&w), 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(fake_count(&w, true, w.submits[i]), 1);
	assert_int_equal(gwp_http(&g, "POST", "/v1/completions",
				  "{\"model\":\"s\",\"prompt\":\"hi\",\"n\":3,\"stream\":true}", 400,
				  &r), 0);
	assert_non_null(strstr(r.body, "\"index\":2"));
	lt_resp_free(&r);
	end = gwp_ms() + 3000;
	while (n_cancels(&w) < 7 && gwp_ms() < end)
		usleep(20 * 1000);
	assert_int_equal(n_cancels(&w), 7);
	for (int i = 4; i < 7; i++)
		assert_int_equal(fake_count(&w, true, w.submits[i]), 1);
	stop(&g, &w);
}

/* n and best_of refusals name the field. */
static void test_refusals(void **state)
{
	(void)state;
	fake w;
	gwp g;
	start(&g, &w);
	static const struct {
		const char *body, *param;
	} bad[] = {
		{"{\"model\":\"s\",\"prompt\":\"hi\",\"n\":17}", "n"},
		{"{\"model\":\"s\",\"prompt\":\"hi\",\"n\":0}", "n"},
		{"{\"model\":\"s\",\"prompt\":\"hi\",\"n\":2,\"best_of\":3}", "best_of"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		lt_resp r;
		assert_int_equal(gwp_http(&g, "POST", "/v1/completions", bad[i].body, 5000, &r), 400);
		char want[64];
		snprintf(want, sizeof want, "\"param\":\"%s\"", bad[i].param);
		assert_non_null(strstr(r.body, want));
		lt_resp_free(&r);
	}
	assert_int_equal(fake_nsub(&w), 0);
	stop(&g, &w);
}

static int setup(void **state)
{
	(void)state;
	dir = lt_tmpdir("choices");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	loom_free(dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fanout),
		cmocka_unit_test(test_stream),
		cmocka_unit_test(test_one_fails),
		cmocka_unit_test(test_hangup),
		cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
