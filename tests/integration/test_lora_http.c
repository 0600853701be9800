/*
 * tests/integration/test_lora_http.c — heterogeneous multi-LoRA batching
 * through the real HTTP API: a real gateway and worker serving
 * ../shared/models/stories260k with eight random adapters of mixed ranks,
 * targets and dtypes. Oracle: batch invariance — every request yields the
 * same greedy tokens alone as inside a mixed batch with staggered arrivals
 * (small per-iteration token budget, so prefill chunks and decodes mix).
 * Also: /v1/models lists adapters with their parent; a bad adapter at start
 * is refused with its reason.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

#define N_AD 8
static const struct {
	int rank;
	int alpha;
	const char *targets;
	const char *dtype;
} ads[N_AD] = {
	{ 1, 2, "q_proj,v_proj", "f32" },
	{ 2, 4, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "bf16" },
	{ 4, 8, "o_proj,down_proj", "f32" },
	{ 8, 16, "k_proj", "f16" },
	{ 16, 32, "gate_proj,up_proj", "bf16" },
	{ 32, 32, "q_proj,k_proj,v_proj,o_proj", "f32" },
	{ 8, 8, "v_proj,down_proj", "f32" },
	{ 64, 64, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "f32" },
};

static lt_stack stack;
static char *tmp;

static int setup(void **state)
{
	(void)state;
	static char margs[1][600];
	static char gw_args[2 * N_AD + 1][700];
	const char *gw[2 * N_AD + 1];
	char abs[512];
	tmp = lt_tmpdir("lora-http");
	if (!realpath(lt_shared_path("models/stories260k"), abs))
		return -1;
	for (int i = 0; i < N_AD; i++) {
		if (lt_sh("%s adapter --model %s --out %s/ad%d --rank %d --alpha %d --targets %s "
			  "--dtype %s --seed %d >/dev/null",
			  lt_bin_path("loom-mkmodel"), abs, tmp, i, ads[i].rank, ads[i].alpha,
			  ads[i].targets, ads[i].dtype, 100 + i) != 0)
			return -1;
		snprintf(gw_args[2 * i], sizeof gw_args[0], "--adapter");
		snprintf(gw_args[2 * i + 1], sizeof gw_args[0], "ad%d=%s/ad%d@stories", i, tmp, i);
		gw[2 * i] = gw_args[2 * i];
		gw[2 * i + 1] = gw_args[2 * i + 1];
	}
	gw[2 * N_AD] = NULL;
	snprintf(margs[0], sizeof margs[0], "stories=%s", abs);
	const char *models[] = { margs[0], NULL };
	const char *wk[] = { "--max-batch-tokens", "48", NULL };
	return lt_stack_start2(&stack, models, 1, gw, wk);
}

static int teardown(void **state)
{
	(void)state;
	lt_stack_stop(&stack);
	loom_free(tmp);
	return 0;
}

/* A request of the mix: adapter index (-1 = base model) and prompt. */
typedef struct job {
	int ad;
	const char *prompt;
} job;

static const job jobs[] = {
	{ 0, "Once upon a time, there was a little dog named Max. Max liked to run in the park" },
	{ 1, "The sun was shining and the birds were singing" },
	{ -1, "Tom had a big red ball. He loved to play with it every day" },
	{ 2, "One day, a girl named Sue went to the store with her mom" },
	{ 3, "The cat sat on the mat and looked at the fish in the bowl" },
	{ 4, "Lily and Ben were best friends. They liked to build castles in the sand" },
	{ -1, "Once upon a time" },
	{ 5, "There was a big tree in the garden. Every day, a bird came to sing" },
	{ 6, "Mom said, \\\"It is time for bed.\\\" But Tim wanted to play more" },
	{ 7, "The little boat went on the water. The wind was strong" },
	{ 0, "A happy frog lived by the pond" },
	{ 7, "Anna found a shiny key under the bed" },
	{ -1, "The king had a golden crown and a kind heart. One morning" },
	{ 5, "It was a cold winter day" },
};
#define N_JOBS ((int)(sizeof jobs / sizeof jobs[0]))

static void body_of(int i, char *buf, size_t n)
{
	char model[32];
	if (jobs[i].ad < 0)
		snprintf(model, sizeof model, "stories");
	else
		snprintf(model, sizeof model, "ad%d", jobs[i].ad);
	snprintf(buf, n,
		 "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":24,\"temperature\":0,"
		 "\"ignore_eos\":true,\"return_token_ids\":true}",
		 model, jobs[i].prompt);
}

/* Runs job i; writes its token ids as text into out. 0 on success. */
static int run_job(int i, char *out, size_t n)
{
	char body[1024], url[256];
	lt_resp r;
	int rc = -1;
	body_of(i, body, sizeof body);
	snprintf(url, sizeof url, "%s/v1/completions", stack.url);
	if (lt_http("POST", url, body, NULL, 120000, &r) != 0 || r.status != 200) {
		fprintf(stderr, "job %d: status %ld: %s\n", i, r.status, r.body);
		goto out;
	}
	json_t *j = json_loads(r.body, 0, NULL);
	json_t *ids = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "token_ids");
	if (json_is_array(ids) && json_array_size(ids) == 24) {
		char *s = json_dumps(ids, JSON_COMPACT);
		snprintf(out, n, "%s", s);
		free(s);
		rc = 0;
	}
	json_decref(j);
out:
	lt_resp_free(&r);
	return rc;
}

static void test_models_lists_adapters(void **state)
{
	(void)state;
	char url[256];
	lt_resp r;
	snprintf(url, sizeof url, "%s/v1/models", stack.url);
	assert_int_equal(lt_http("GET", url, NULL, NULL, 5000, &r), 0);
	assert_int_equal(r.status, 200);
	json_t *j = json_loads(r.body, 0, NULL);
	assert_non_null(j);
	json_t *data = json_object_get(j, "data");
	int seen = 0, base = 0;
	for (size_t k = 0; k < json_array_size(data); k++) {
		json_t *m = json_array_get(data, k);
		const char *id = json_string_value(json_object_get(m, "id"));
		json_t *parent = json_object_get(m, "parent");
		if (!strcmp(id, "stories")) {
			base++;
			assert_true(json_is_null(parent));
		} else if (!strncmp(id, "ad", 2)) {
			seen++;
			assert_string_equal(json_string_value(parent), "stories");
		}
	}
	assert_int_equal(base, 1);
	assert_int_equal(seen, N_AD);
	json_decref(j);
	lt_resp_free(&r);
}

static void test_adapters_change_output(void **state)
{
	(void)state;
	/* the same prompt on the base and on a rank-64 all-target adapter differ */
	char a[512], b[512];
	assert_int_equal(run_job(6, a, sizeof a), 0); /* base */
	lt_resp r;
	char url[256];
	snprintf(url, sizeof url, "%s/v1/completions", stack.url);
	assert_int_equal(lt_http("POST", url,
				 "{\"model\":\"ad7\",\"prompt\":\"Once upon a time\",\"max_tokens\":24,"
				 "\"temperature\":0,\"ignore_eos\":true,\"return_token_ids\":true}",
				 NULL, 60000, &r), 0);
	assert_int_equal(r.status, 200);
	json_t *j = json_loads(r.body, 0, NULL);
	char *s = json_dumps(json_object_get(json_array_get(json_object_get(j, "choices"), 0),
					     "token_ids"), JSON_COMPACT);
	snprintf(b, sizeof b, "%s", s);
	free(s);
	json_decref(j);
	lt_resp_free(&r);
	assert_string_not_equal(a, b);
}

static void test_batch_invariance(void **state)
{
	(void)state;
	static char alone[N_JOBS][512];
	for (int i = 0; i < N_JOBS; i++)
		assert_int_equal(run_job(i, alone[i], sizeof alone[i]), 0);

	/* all at once, staggered by 15 ms: children report mismatches by exit code */
	pid_t kids[N_JOBS];
	for (int i = 0; i < N_JOBS; i++) {
		kids[i] = fork();
		assert_true(kids[i] >= 0);
		if (kids[i] == 0) {
			char got[512];
			usleep((useconds_t)i * 15000);
			if (run_job(i, got, sizeof got) != 0)
				_exit(2);
			if (strcmp(got, alone[i]) != 0) {
				fprintf(stderr, "job %d (adapter %d): alone %s\n  batched %s\n", i,
					jobs[i].ad, alone[i], got);
				_exit(1);
			}
			_exit(0);
		}
	}
	int bad = 0;
	for (int i = 0; i < N_JOBS; i++) {
		int ws;
		waitpid(kids[i], &ws, 0);
		if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
			bad++;
	}
	if (bad)
		lt_proc_dump(&stack.wk[0]);
	assert_int_equal(bad, 0);
}

/* A gateway given an adapter that must be rejected exits non-zero with one
 * line giving the reason. */
static void test_bad_adapter_refused(void **state)
{
	(void)state;
	char cmd[2048];
	char abs[512];
	assert_non_null(realpath(lt_shared_path("models/stories260k"), abs));
	assert_int_equal(lt_sh("cp -r %s/ad0 %s/dora && sed -i 's/\"use_dora\": *false/\"use_dora\": "
			       "true/' %s/dora/adapter_config.json && grep -q '\"use_dora\": *true' "
			       "%s/dora/adapter_config.json", tmp, tmp, tmp, tmp), 0);
	snprintf(cmd, sizeof cmd,
		 "%s --port %d --store %s/badstore --worker ipc:///tmp/loom-nothing-%d.ipc "
		 "--model stories=%s --adapter dora=%s/dora > %s/bad.log 2>&1",
		 lt_bin_path("loom-gateway"), lt_free_port(), tmp, (int)getpid(), abs, tmp, tmp);
	int rc = lt_sh("%s", cmd);
	lt_sh("cat %s/bad.log >&2", tmp);
	assert_true(rc != 0);
	assert_int_equal(lt_sh("grep -qi 'dora' %s/bad.log", tmp), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_models_lists_adapters),
		cmocka_unit_test(test_adapters_change_output),
		cmocka_unit_test(test_batch_invariance),
		cmocka_unit_test(test_bad_adapter_refused),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
