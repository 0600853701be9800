/*
 * tests/integration/test_invariance_http.c — batch invariance through the
 * real HTTP API: 16 greedy requests over 8 adapters and the base model (a
 * BF16 model, a worker with 2 threads), each first run alone, then all 16
 * at once with staggered starts (so prefills land beside decodes and
 * adapters share steps in changing mixes): every request gets the same
 * token ids and the same logprobs, to the bit (the logprob of each token
 * and its top 5, compared as the JSON numbers printed from doubles).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

#define N_REQ 16
#define N_AD 8

static lt_stack stack;
static char *tmp;

static int setup(void **state)
{
	(void)state;
	static char marg[600], aargs[N_AD][600];
	const char *extra[2 * N_AD + 2];
	int ne = 0;
	char model[512];
	tmp = lt_tmpdir("invariance-http");
	snprintf(model, sizeof model, "%s/m", tmp);
	if (lt_sh("%s model --out %s --family llama --hidden 128 --ffn 256 --layers 3 --heads 4 "
		  "--kv-heads 2 --vocab 512 --ctx 512 --dtype bf16 --seed 9 >/dev/null",
		  lt_bin_path("loom-mkmodel"), model))
		return -1;
	for (int i = 0; i < N_AD; i++) {
		char ad[560];
		snprintf(ad, sizeof ad, "%s/a%d", tmp, i);
		if (lt_sh("%s adapter --model %s --out %s --rank %d --alpha 16 --seed %d "
			  "--targets q_proj,k_proj,v_proj,o_proj,down_proj >/dev/null",
			  lt_bin_path("loom-mkmodel"), model, ad, 4 + 4 * (i % 3), 30 + i))
			return -1;
		snprintf(aargs[i], sizeof aargs[i], "a%d=%s@m", i, ad);
		extra[ne++] = "--adapter";
		extra[ne++] = aargs[i];
	}
	extra[ne++] = "--no-slo";
	extra[ne] = NULL;
	snprintf(marg, sizeof marg, "m=%s", model);
	const char *models[] = { marg, NULL };
	const char *wk[] = { "--threads", "2", "--max-batch-tokens", "48", NULL };
	return lt_stack_start2(&stack, models, 1, extra, wk);
}

static int teardown(void **state)
{
	(void)state;
	lt_stack_stop(&stack);
	lt_sh("rm -rf '%s'", tmp);
	loom_free(tmp);
	return 0;
}

typedef struct req {
	int i;
	int delay_ms;
	char *ids, *lps; /* the choice's token_ids and logprobs, as JSON text */
} req;

static void *run(void *arg)
{
	req *r = arg;
	char body[2048], url[256], model[8];
	usleep((useconds_t)r->delay_ms * 1000);
	if (r->i % 2 == 0)
		snprintf(model, sizeof model, "m");
	else
		snprintf(model, sizeof model, "a%d", (r->i / 2) % N_AD);
	int at = snprintf(body, sizeof body, "{\"model\":\"%s\",\"prompt\":[", model);
	int n = 6 + (r->i * 7) % 30; /* prompts of 6..35 tokens */
	for (int t = 0; t < n; t++)
		at += snprintf(body + at, sizeof body - at, "%s%d", t ? "," : "",
			       3 + (r->i * 131 + t * 17) % 500);
	snprintf(body + at, sizeof body - at,
		 "],\"max_tokens\":12,\"temperature\":0,\"ignore_eos\":true,"
		 "\"return_token_ids\":true,\"logprobs\":5}");
	snprintf(url, sizeof url, "%s/v1/completions", stack.url);
	lt_resp resp;
	if (lt_http("POST", url, body, NULL, 120000, &resp) != 0 || resp.status != 200) {
		fprintf(stderr, "request %d: %ld %s\n", r->i, resp.status, resp.body);
		return NULL;
	}
	json_t *j = json_loads(resp.body, 0, NULL);
	json_t *c = json_array_get(json_object_get(j, "choices"), 0);
	r->ids = json_dumps(json_object_get(c, "token_ids"), JSON_COMPACT);
	r->lps = json_dumps(json_object_get(c, "logprobs"), JSON_COMPACT | JSON_REAL_PRECISION(17));
	json_decref(j);
	lt_resp_free(&resp);
	return NULL;
}

static void staggered_equals_alone(void **state)
{
	(void)state;
	req alone[N_REQ], mixed[N_REQ];
	pthread_t th[N_REQ];
	memset(alone, 0, sizeof alone);
	memset(mixed, 0, sizeof mixed);
	for (int i = 0; i < N_REQ; i++) {
		alone[i].i = mixed[i].i = i;
		run(&alone[i]);
		assert_non_null(alone[i].ids);
		assert_non_null(alone[i].lps);
	}
	for (int i = 0; i < N_REQ; i++) {
		mixed[i].delay_ms = (i * 37) % 150; /* staggered arrivals */
		assert_int_equal(pthread_create(&th[i], NULL, run, &mixed[i]), 0);
	}
	for (int i = 0; i < N_REQ; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < N_REQ; i++) {
		assert_non_null(mixed[i].ids);
		if (strcmp(alone[i].ids, mixed[i].ids) != 0)
			fail_msg("request %d: ids alone %s, in the batch %s", i, alone[i].ids,
				 mixed[i].ids);
		if (strcmp(alone[i].lps, mixed[i].lps) != 0)
			fail_msg("request %d: logprobs differ alone / in the batch:\n%s\n%s", i,
				 alone[i].lps, mixed[i].lps);
	}
	for (int i = 0; i < N_REQ; i++) {
		free(alone[i].ids), free(alone[i].lps);
		free(mixed[i].ids), free(mixed[i].lps);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(staggered_equals_alone),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
