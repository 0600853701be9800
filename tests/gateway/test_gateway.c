/*
 * tests/gateway/test_gateway.c — the loom-gateway program: command line
 * (usage errors exit 2, a bad model folder exits 1 with one line naming the
 * file), --config, SIGTERM exits 0, and over real HTTP against a fake
 * worker in this process: a client that hangs up (stream or not) makes the
 * gateway CANCEL its request on the worker.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tests/gateway/fake_worker.h"
#include "tests/support/harness.h"

static char *dir;
static char stories[512];

static int64_t ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs loom-gateway with args (NULL-terminated) to completion; returns its
 * exit status and leaves its output in *log (loom_malloc'ed). */
static int run_gateway(const char *const *args, char **log)
{
	char *argv[32], bin[512], path[600];
	int n = 0;
	static int seq;
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-gateway"));
	argv[n++] = bin;
	for (; *args && n < 31; args++)
		argv[n++] = (char *)*args;
	argv[n] = NULL;
	snprintf(path, sizeof path, "%s/run%d.log", dir, seq++);
	lt_proc p;
	assert_int_equal(lt_spawn(&p, path, argv), 0);
	int st = lt_stop(&p, 0, 10000); /* signal 0: just wait */
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	*log = loom_calloc(1, 65536);
	size_t got = fread(*log, 1, 65535, f);
	(*log)[got] = '\0';
	fclose(f);
	return st;
}

static void test_usage_errors(void **state)
{
	(void)state;
	char *log;
	const char *bogus[] = {"--bogus", NULL};
	assert_int_equal(run_gateway(bogus, &log), 2);
	assert_non_null(strstr(log, "usage:"));
	assert_non_null(strstr(log, "--bogus"));
	loom_free(log);
	const char *no_worker[] = {"--model", stories, NULL};
	assert_int_equal(run_gateway(no_worker, &log), 2);
	loom_free(log);
	const char *bad_port[] = {"--port", "99999", "--worker", "ipc:///tmp/x", "--model", stories,
				  NULL};
	assert_int_equal(run_gateway(bad_port, &log), 2);
	loom_free(log);
	char tmpl[600];
	snprintf(tmpl, sizeof tmpl, "--chat-template=stories260k=jinja");
	const char *bad_tmpl[] = {"--worker", "ipc:///tmp/x", "--model", stories, tmpl, NULL};
	assert_int_equal(run_gateway(bad_tmpl, &log), 2);
	assert_non_null(strstr(log, "jinja"));
	loom_free(log);
}

static void test_bad_model_folder(void **state)
{
	(void)state;
	char *log;
	char missing[600];
	snprintf(missing, sizeof missing, "m=%s/nothing-here", dir);
	const char *args[] = {"--worker", "ipc:///tmp/x", "--model", missing, NULL};
	assert_int_equal(run_gateway(args, &log), 1);
	assert_non_null(strstr(log, "nothing-here"));
	assert_non_null(strstr(log, "config.json"));
	assert_int_equal(strchr(log, '\n') - log + 1, (long)strlen(log)); /* one line */
	loom_free(log);
	/* a folder whose tokenizer.json is broken */
	char bad[600];
	assert_int_equal(lt_sh("mkdir -p %s/badtok && cp %s/config.json %s/badtok/ && "
			       "echo '{\"model\":' > %s/badtok/tokenizer.json",
			       dir, stories, dir, dir), 0);
	snprintf(bad, sizeof bad, "%s/badtok", dir);
	const char *args2[] = {"--worker", "ipc:///tmp/x", "--model", bad, NULL};
	assert_int_equal(run_gateway(args2, &log), 1);
	assert_non_null(strstr(log, "tokenizer.json"));
	loom_free(log);
	/* a config file that is not JSON */
	char cfg[600];
	snprintf(cfg, sizeof cfg, "%s/bad.json", dir);
	assert_int_equal(lt_sh("echo '{models' > %s", cfg), 0);
	const char *args3[] = {"--config", cfg, NULL};
	assert_int_equal(run_gateway(args3, &log), 1);
	assert_non_null(strstr(log, "bad.json"));
	loom_free(log);
}

/* A gateway process started from a --config naming the fake worker. */
typedef struct gw {
	lt_proc p;
	char url[64];
} gw;

static void gw_start(gw *g, fake *w, const char *tmpl)
{
	char cfg[600], log[600], port[16], bin[512];
	int pt = lt_free_port();
	snprintf(cfg, sizeof cfg, "%s/gw-%d.json", dir, pt);
	FILE *f = fopen(cfg, "w");
	assert_non_null(f);
	fprintf(f, "{\"models\":{\"s\":{\"path\":\"%s\",\"chat_template\":\"%s\"}},\"workers\":[\"%s\"]}",
		stories, tmpl, w->url);
	fclose(f);
	snprintf(log, sizeof log, "%s/gw-%d.log", dir, pt);
	snprintf(port, sizeof port, "%d", pt);
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-gateway"));
	char *argv[] = {bin, "--port", port, "--config", cfg, "--threads", "1", NULL};
	setenv("LOOM_LOG", "debug", 1);
	assert_int_equal(lt_spawn(&g->p, log, argv), 0);
	unsetenv("LOOM_LOG");
	snprintf(g->url, sizeof g->url, "http://127.0.0.1:%d", pt);
	char ready[128];
	snprintf(ready, sizeof ready, "%s/ready", g->url);
	int64_t end = ms_now() + 10000;
	for (;;) {
		lt_resp r;
		if (lt_http("GET", ready, NULL, NULL, 1000, &r) == 0 && r.status == 200) {
			lt_resp_free(&r);
			break;
		}
		lt_resp_free(&r);
		if (ms_now() > end) {
			lt_proc_dump(&g->p);
			fail_msg("gateway did not become ready");
		}
		usleep(50 * 1000);
	}
}

static long post(gw *g, const char *path, const char *body, long timeout_ms, lt_resp *r)
{
	char url[256];
	snprintf(url, sizeof url, "%s%s", g->url, path);
	if (lt_http("POST", url, body, NULL, timeout_ms, r) != 0)
		return 0;
	return r->status;
}

static void test_config_and_sigterm(void **state)
{
	(void)state;
	fake w;
	fake_start(&w, "s");
	w.auto_ids[0] = 432; /* "," */
	w.auto_ids[1] = 383; /* " there" */
	w.n_auto = 2;
	w.auto_finish = LOOM_FINISH_LENGTH;
	gw g;
	gw_start(&g, &w, "chatml");
	lt_resp r;
	char url[128];
	snprintf(url, sizeof url, "%s/v1/models", g.url);
	assert_int_equal(lt_http("GET", url, NULL, NULL, 5000, &r), 0);
	assert_non_null(strstr(r.body, "\"id\":\"s\""));
	lt_resp_free(&r);
	assert_int_equal(post(&g, "/v1/chat/completions",
			      "{\"model\":\"s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
			      10000, &r), 200);
	json_t *j = json_loads(r.body, 0, NULL);
	assert_non_null(j);
	json_t *m = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
	assert_string_equal(json_string_value(json_object_get(m, "content")), ", there");
	json_decref(j);
	lt_resp_free(&r);
	/* chat default max_tokens = the rest of the context; the chatml prompt is longer than plain */
	assert_true(w.last.sampling.max_tokens + w.last_n_prompt == 512);
	assert_true(w.last_n_prompt > 10);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

static void test_client_hangs_up(void **state)
{
	(void)state;
	fake w;
	fake_start(&w, "s");
	w.auto_ids[0] = 432;
	w.n_auto = 1;
	w.auto_finish = LOOM_FINISH_NONE; /* one token, then nothing: the request stays open */
	gw g;
	gw_start(&g, &w, "plain");
	lt_resp r;
	/* non-stream: the client gives up after 400 ms */
	assert_int_equal(post(&g, "/v1/completions", "{\"model\":\"s\",\"prompt\":\"hi\"}", 400, &r), 0);
	lt_resp_free(&r);
	int64_t end = ms_now() + 3000;
	while (w.n_cancels < 1 && ms_now() < end)
		usleep(20 * 1000);
	assert_int_equal(w.n_cancels, 1);
	assert_int_equal(w.cancels[0], w.submits[0]);
	/* stream: a chunk arrives, then the client hangs up */
	assert_int_equal(post(&g, "/v1/completions",
			      "{\"model\":\"s\",\"prompt\":\"hi\",\"stream\":true}", 400, &r), 0);
	assert_non_null(strstr(r.body, "data: {"));
	lt_resp_free(&r);
	end = ms_now() + 3000;
	while (w.n_cancels < 2 && ms_now() < end)
		usleep(20 * 1000);
	assert_int_equal(w.n_cancels, 2);
	assert_int_equal(w.cancels[1], w.submits[1]);
	/* the gateway still serves */
	w.auto_finish = LOOM_FINISH_LENGTH;
	assert_int_equal(post(&g, "/v1/completions", "{\"model\":\"s\",\"prompt\":\"hi\"}", 5000, &r),
			 200);
	lt_resp_free(&r);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

static int setup(void **state)
{
	(void)state;
	dir = lt_tmpdir("gateway");
	snprintf(stories, sizeof stories, "%s", lt_shared_path("models/stories260k"));
	signal(SIGPIPE, SIG_IGN);
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
		cmocka_unit_test(test_usage_errors),
		cmocka_unit_test(test_bad_model_folder),
		cmocka_unit_test(test_config_and_sigterm),
		cmocka_unit_test(test_client_hangs_up),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
