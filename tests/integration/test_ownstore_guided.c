/*
 * tests/integration/test_ownstore_guided.c — structured outputs on a worker
 * that keeps its own store (--own-store) and is told about its model only
 * by the gateway (no --model): the MODEL message names the tokenizer's
 * blob, which the worker fetches from the gateway over nng, verifies and
 * keeps, so a guided request works there as on a worker reading the
 * gateway's store. Before, such a worker answered "this worker has no
 * tokenizer for it". A restarted worker finds the blob in its own store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

static lt_stack stack;
static lt_proc worker;
static char *tmp, wurl[600], wstore[600], wlog[600];
static bool started;

static int start_worker(void)
{
	char *argv[] = { (char *)lt_bin_path("loom-worker"), "--listen", wurl, "--own-store", wstore,
			 NULL };
	return lt_spawn(&worker, wlog, argv);
}

static int setup(void **state)
{
	(void)state;
	static char marg[600], gstore[600];
	tmp = lt_tmpdir("ownstore-guided");
	/* ipc paths must fit sun_path: /tmp */
	snprintf(wurl, sizeof wurl, "ipc:///tmp/loom-osg-%d.ipc", (int)getpid());
	snprintf(wstore, sizeof wstore, "%s/wstore", tmp);
	snprintf(gstore, sizeof gstore, "%s/gstore", tmp);
	snprintf(wlog, sizeof wlog, "%s/worker.log", tmp);
	snprintf(marg, sizeof marg, "stories=%s", lt_shared_path("models/stories260k"));
	if (start_worker())
		return -1;
	/* the gateway only: its one worker is ours */
	const char *models[] = { marg, NULL };
	const char *gw[] = { "--worker", wurl, "--store", gstore, NULL };
	if (lt_stack_start2(&stack, models, 0, gw, NULL)) {
		lt_proc_dump(&worker);
		return -1;
	}
	started = true;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (started)
		lt_stack_stop(&stack);
	lt_stop(&worker, 15, 5000);
	loom_free(tmp);
	return 0;
}

/* A guided_choice completion: its text must be one of the choices. */
static void guided(void)
{
	char url[256];
	lt_resp r;
	snprintf(url, sizeof url, "%s/v1/completions", stack.url);
	assert_int_equal(lt_http("POST", url,
				 "{\"model\":\"stories\",\"prompt\":\"Once upon a time\",\"max_tokens\":8,"
				 "\"temperature\":0.9,\"seed\":5,"
				 "\"guided_choice\":[\"a dragon\",\"a princess\",\"a cat\"]}",
				 NULL, 60000, &r), 0);
	if (r.status != 200) {
		lt_proc_dump(&worker);
		fail_msg("guided request: %ld %s", r.status, r.body);
	}
	json_t *j = json_loads(r.body, 0, NULL);
	const char *text = json_string_value(
		json_object_get(json_array_get(json_object_get(j, "choices"), 0), "text"));
	assert_non_null(text);
	assert_true(!strcmp(text, "a dragon") || !strcmp(text, "a princess") ||
		    !strcmp(text, "a cat"));
	json_decref(j);
	lt_resp_free(&r);
}

static void test_guided_on_own_store(void **state)
{
	(void)state;
	guided();
	/* the tokenizer came over the link into the worker's own store */
	assert_int_equal(lt_sh("grep -q 'fetched from the gateway, verified, kept' '%s'", wlog), 0);
	/* restarted, the worker reads it from its store */
	lt_stop(&worker, 15, 5000);
	assert_int_equal(start_worker(), 0);
	for (int t = 0; t < 100; t++) {
		char url[256];
		lt_resp r;
		snprintf(url, sizeof url, "%s/ready", stack.url);
		int ok = lt_http("GET", url, NULL, NULL, 1000, &r) == 0 && r.status == 200;
		lt_resp_free(&r);
		if (ok)
			break;
		lt_sh("sleep 0.1");
	}
	guided();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_guided_on_own_store),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
