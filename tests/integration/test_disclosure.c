/*
 * tests/integration/test_disclosure.c — what the gateway tells clients about
 * its host (a real gateway and worker serving stories260k):
 * - /metrics follows the admin rule: with --admin-token, no token or a wrong
 *   one is a 401 in OpenAI's shape, the token gets 200; with none, loopback
 *   clients get it; --public-metrics opens it to everyone;
 * - /metrics names workers by id and an ipc:// worker as "ipc:#N", never by
 *   its socket path;
 * - /detokenize and /tokenize errors name the model, not the server's
 *   tokenizer.json path (nor any folder of the server);
 * - a request whose worker is lost (a fake worker here, closed mid-request)
 *   gets a 502 that does not show the worker's ipc:// socket path.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>

#include <pthread.h>

#include "tests/gateway/admin_stack.h"
#include "tests/gateway/gw_proc.h"

static char stories[PATH_MAX], shared[PATH_MAX];

/* GET /metrics of stack s with Authorization auth (NULL = none). */
static long get_metrics(const lt_stack *s, const char *auth, char **body)
{
	ad_node n;
	memset(&n, 0, sizeof n);
	snprintf(n.url, sizeof n.url, "%s", s->url);
	return ad_json(&n, "GET", "/metrics", NULL, auth, body);
}

static void assert_no_server_paths(const char *what, const char *body)
{
	if (strstr(body, stories) || strstr(body, shared) || strstr(body, "/tokenizer.json") ||
	    strstr(body, "ipc:///") || strstr(body, "/tmp/"))
		fail_msg("%s shows a path of the server:\n%s", what, body);
}

static void test_metrics_admin_rule(void **state)
{
	(void)state;
	lt_stack s;
	char model[PATH_MAX + 16], *body;
	snprintf(model, sizeof model, "stories=%s", stories);
	const char *models[] = {model, NULL};
	const char *gx[] = {"--admin-token", "s3cret", NULL};
	assert_int_equal(lt_stack_start(&s, models, 1, gx), 0);
	assert_int_equal(get_metrics(&s, NULL, &body), 401);
	assert_non_null(strstr(body, "\"type\":\"authentication_error\""));
	assert_non_null(strstr(body, "\"code\":\"invalid_api_key\""));
	loom_free(body);
	assert_int_equal(get_metrics(&s, "Bearer wrong", &body), 401);
	loom_free(body);
	assert_int_equal(get_metrics(&s, "Bearer s3cret", &body), 200);
	assert_non_null(strstr(body, "loom_worker_up{"));
	assert_non_null(strstr(body, "url=\"ipc:#0\""));
	assert_null(strstr(body, s.worker_url[0] + strlen("ipc://")));
	assert_no_server_paths("/metrics", body);
	loom_free(body);
	lt_stack_stop(&s);

	/* no token: loopback clients; --public-metrics: everyone, token or not */
	const char *gx2[] = {NULL};
	assert_int_equal(lt_stack_start(&s, models, 1, gx2), 0);
	assert_int_equal(get_metrics(&s, NULL, &body), 200);
	assert_no_server_paths("/metrics", body);
	loom_free(body);
	lt_stack_stop(&s);
	const char *gx3[] = {"--admin-token", "s3cret", "--public-metrics", NULL};
	assert_int_equal(lt_stack_start(&s, models, 1, gx3), 0);
	assert_int_equal(get_metrics(&s, NULL, &body), 200);
	assert_no_server_paths("/metrics", body);
	loom_free(body);
	/* the admin API itself still wants the token */
	ad_node n;
	memset(&n, 0, sizeof n);
	snprintf(n.url, sizeof n.url, "%s", s.url);
	assert_int_equal(ad_json(&n, "GET", "/admin/workers", NULL, NULL, NULL), 401);
	lt_stack_stop(&s);
}

static void test_tokenizer_errors(void **state)
{
	(void)state;
	lt_stack s;
	char model[PATH_MAX + 16], url[128];
	snprintf(model, sizeof model, "stories=%s", stories);
	const char *models[] = {model, NULL};
	assert_int_equal(lt_stack_start(&s, models, 1, NULL), 0);
	static const struct {
		const char *path, *body;
	} bad[] = {
		{"/detokenize", "{\"model\":\"stories\",\"tokens\":[1, 999999]}"},
		{"/detokenize", "{\"model\":\"stories\",\"tokens\":[-3]}"},
		{"/tokenize", "{\"model\":\"stories\",\"prompt\":5}"},
		{"/tokenize", "{\"model\":\"nope\",\"prompt\":\"hi\"}"},
		{"/v1/completions", "{\"model\":\"stories\",\"prompt\":[1, 999999]}"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		lt_resp r;
		snprintf(url, sizeof url, "%s%s", s.url, bad[i].path);
		assert_int_equal(lt_http("POST", url, bad[i].body, NULL, 10000, &r), 0);
		if (r.status < 400 || r.status >= 500 || !strstr(r.body, "\"error\""))
			fail_msg("%s %s: expected a 4xx error, got %ld %s", bad[i].path, bad[i].body,
				 r.status, r.body);
		assert_no_server_paths(bad[i].path, r.body);
		lt_resp_free(&r);
	}
	/* the out-of-range id is named, with the model */
	lt_resp r;
	snprintf(url, sizeof url, "%s/detokenize", s.url);
	assert_int_equal(lt_http("POST", url, bad[0].body, NULL, 10000, &r), 0);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "999999"));
	assert_non_null(strstr(r.body, "model stories"));
	lt_resp_free(&r);
	lt_stack_stop(&s);
}

typedef struct call {
	char url[128];
	long status;
	char body[2048];
} call;

static void *complete_main(void *arg)
{
	call *c = arg;
	lt_resp r;
	c->status = lt_http("POST", c->url, "{\"model\":\"s\",\"prompt\":\"hi\"}", NULL, 10000,
			    &r) == 0 ? r.status : 0;
	snprintf(c->body, sizeof c->body, "%s", r.body ? r.body : "");
	lt_resp_free(&r);
	return NULL;
}

static void test_worker_loss_error(void **state)
{
	(void)state;
	char *dir = lt_tmpdir("disclosure");
	fake w;
	fake_start(&w, "s");
	w.auto_ids[0] = 432;
	w.n_auto = 1;
	w.auto_finish = LOOM_FINISH_NONE; /* one token, then the worker goes */
	gwp g;
	assert_int_equal(gwp_start(&g, dir, &w, NULL), 0);
	call c;
	pthread_t th;
	snprintf(c.url, sizeof c.url, "%s/v1/completions", g.url);
	assert_int_equal(pthread_create(&th, NULL, complete_main, &c), 0);
	for (int64_t end = gwp_ms() + 5000; fake_nsub(&w) < 1 && gwp_ms() < end;)
		usleep(20 * 1000);
	assert_int_equal(fake_nsub(&w), 1);
	fake_kill(&w);
	pthread_join(th, NULL);
	assert_int_equal(c.status, 502);
	assert_non_null(strstr(c.body, "ipc:(hidden)"));
	assert_no_server_paths("the lost worker's 502", c.body);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	loom_free(dir);
}

static int setup(void **state)
{
	(void)state;
	if (!realpath(lt_shared_path("models/stories260k"), stories) ||
	    !realpath(lt_shared_path(""), shared))
		return -1;
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_metrics_admin_rule),
		cmocka_unit_test(test_tokenizer_errors),
		cmocka_unit_test(test_worker_loss_error),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
