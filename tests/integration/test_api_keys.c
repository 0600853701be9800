/*
 * tests/integration/test_api_keys.c — API keys on the inference routes
 * (issue 15 item 4), against a real gateway and worker serving stories260k
 * with two adapters (acme-1, other-1), the keys from --api-keys-file and
 * --api-key:
 * - no key, a wrong key or another scheme: 401 in OpenAI's shape
 *   (invalid_request_error, param null, code invalid_api_key) with
 *   WWW-Authenticate on every API route (an unknown one too), a huge body
 *   included; /health and /ready stay open; the admin API keeps its own rule;
 * - the right key: 200 (a key from the file, one from --api-key);
 * - a key limited to adapters acme-*: the other adapter and the base model
 *   are a 404 with the very body of a model that does not exist, on
 *   completions, chat and /tokenize; /v1/models lists only acme-1;
 * - rpm=120 burst=2: the third quick request is a 429 (rate_limit_exceeded,
 *   Retry-After 1), and after Retry-After it passes again;
 * - concurrency=1 (a fake worker that holds the request): a second
 *   completion of that key is a 429 with Retry-After while /v1/models and
 *   another key's completion pass; once the first ends, it passes;
 * - neither the keys nor the wrong keys sent appear in the gateway's log
 *   (LOOM_LOG=debug), which names keys by their labels.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include "common/textfile.h"
#include "tests/gateway/gw_proc.h"
#include "tests/integration/http_ex.h"

static char stories[PATH_MAX];
static char *tmp;
static lt_stack stack;
static char keys_file[PATH_MAX + 32];

static const char *const secrets[] = {
	"sk-full-9f8e7d6c5b4a", "sk-tenant-1a2b3c4d5e", "sk-rate-0a0b0c0d0e",
	"sk-flag-77aa88bb99cc", "sk-conc-5e4d3c2b1a", "sk-free-1234567890",
	"sk-wrong-zzzzzzzzzz",
};

static long call(const char *path, const char *body, const char *key, lt_resp *r)
{
	char url[256], auth[256];
	hx_req q = {.url = url, .body = body, .auth = key ? auth : NULL, .timeout_ms = 20000};
	snprintf(url, sizeof url, "%s%s", stack.url, path);
	snprintf(auth, sizeof auth, "Bearer %s", key ? key : "");
	long st = hx_do(&q, r);
	if (!st)
		fail_msg("%s: no HTTP answer: %s", path, q.err);
	return st;
}

static void assert_401(const lt_resp *r, const char *what)
{
	char v[64];
	if (r->status != 401 || !strstr(r->body, "\"type\":\"invalid_request_error\"") ||
	    !strstr(r->body, "\"code\":\"invalid_api_key\"") || !strstr(r->body, "\"param\":null") ||
	    !hx_header(r, "WWW-Authenticate", v, sizeof v) || strcmp(v, "Bearer"))
		fail_msg("%s: expected a 401 invalid_api_key, got %ld %s\n%s", what, r->status, r->body,
			 r->headers);
}

static void test_missing_or_wrong_key(void **state)
{
	(void)state;
	static const struct {
		const char *path, *body;
	} routes[] = {
		{"/v1/completions", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":2}"},
		{"/v1/chat/completions", "{\"model\":\"stories\",\"max_tokens\":2,"
					 "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"},
		{"/v1/models", NULL},
		{"/tokenize", "{\"model\":\"stories\",\"prompt\":\"hi\"}"},
		{"/detokenize", "{\"model\":\"stories\",\"tokens\":[1]}"},
		{"/v1/nothing-here", NULL},
	};
	lt_resp r;
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
		call(routes[i].path, routes[i].body, NULL, &r);
		assert_401(&r, routes[i].path);
		assert_non_null(strstr(r.body, "You didn't provide an API key"));
		lt_resp_free(&r);
		call(routes[i].path, routes[i].body, secrets[6], &r);
		assert_401(&r, routes[i].path);
		assert_non_null(strstr(r.body, "Incorrect API key provided"));
		assert_null(strstr(r.body, secrets[6]));
		lt_resp_free(&r);
	}
	/* LOOM_API_KEY is not read when --api-key is given */
	call("/v1/models", NULL, "sk-env-not-used", &r);
	assert_401(&r, "LOOM_API_KEY's key");
	lt_resp_free(&r);
	/* another scheme, an empty token, a key's prefix */
	static const char *const bad[] = {"Basic c2stZnVsbA==", "Bearer", "Bearer   ",
					  "Bearer sk-full-9f8e7d6c5b4", "sk-full-9f8e7d6c5b4a"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char url[256];
		snprintf(url, sizeof url, "%s/v1/models", stack.url);
		hx_req q = {.url = url, .auth = bad[i]};
		assert_int_equal(hx_do(&q, &r), 401);
		assert_401(&r, bad[i]);
		lt_resp_free(&r);
	}
	/* a body over --max-body-bytes without a key: 401, not 413 */
	size_t big = 3u << 20;
	char *body = loom_malloc(big + 1);
	assert_non_null(body);
	memset(body, ' ', big);
	body[big] = '\0';
	call("/v1/completions", body, NULL, &r);
	assert_401(&r, "a 3 MiB body");
	lt_resp_free(&r);
	loom_free(body);
	/* open routes; the admin API keeps its rule (loopback, no admin token) */
	assert_int_equal(call("/health", NULL, NULL, &r), 200);
	lt_resp_free(&r);
	assert_int_equal(call("/ready", NULL, NULL, &r), 200);
	lt_resp_free(&r);
	assert_int_equal(call("/admin/workers", NULL, NULL, &r), 200);
	lt_resp_free(&r);
	assert_int_equal(call("/admin/workers", NULL, secrets[0], &r), 200);
	lt_resp_free(&r);
}

static void test_right_key(void **state)
{
	(void)state;
	lt_resp r;
	const char *keys[] = {secrets[0], secrets[3]}; /* from the file, from --api-key */
	for (size_t i = 0; i < 2; i++) {
		if (call("/v1/completions", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":3}",
			 keys[i], &r) != 200)
			fail_msg("completion with key %zu: %ld %s", i, r.status, r.body);
		assert_non_null(strstr(r.body, "\"text_completion\""));
		lt_resp_free(&r);
		/* the bearer scheme is case-insensitive, blanks around the token allowed */
		char auth[128], url[256];
		snprintf(auth, sizeof auth, "bearer  %s ", keys[i]);
		snprintf(url, sizeof url, "%s/v1/models", stack.url);
		hx_req q = {.url = url, .auth = auth};
		assert_int_equal(hx_do(&q, &r), 200);
		assert_non_null(strstr(r.body, "\"id\":\"stories\""));
		assert_non_null(strstr(r.body, "\"id\":\"acme-1\""));
		assert_non_null(strstr(r.body, "\"id\":\"other-1\""));
		lt_resp_free(&r);
	}
	assert_int_equal(call("/v1/completions",
			      "{\"model\":\"other-1\",\"prompt\":\"Once\",\"max_tokens\":2}",
			      secrets[0], &r), 200);
	lt_resp_free(&r);
	assert_int_equal(call("/tokenize", "{\"model\":\"stories\",\"prompt\":\"hi\"}", secrets[0],
			      &r), 200);
	lt_resp_free(&r);
}

/* The body of path for model name, with name replaced by NAME. */
static char *as_unknown(const char *path, const char *fmt, const char *key, const char *name,
			long *status)
{
	char body[512];
	lt_resp r;
	snprintf(body, sizeof body, fmt, name);
	*status = call(path, body, key, &r);
	char *out = loom_malloc(strlen(r.body) + 8), *o = out;
	for (const char *p = r.body; *p;) {
		if (!strncmp(p, name, strlen(name))) {
			o += sprintf(o, "NAME");
			p += strlen(name);
		} else {
			*o++ = *p++;
		}
	}
	*o = '\0';
	lt_resp_free(&r);
	return out;
}

static void test_model_lists(void **state)
{
	(void)state;
	const char *key = secrets[1]; /* models= adapters=acme-* */
	lt_resp r;
	assert_int_equal(call("/v1/models", NULL, key, &r), 200);
	assert_non_null(strstr(r.body, "\"id\":\"acme-1\""));
	assert_null(strstr(r.body, "other-1"));
	assert_null(strstr(r.body, "\"id\":\"stories\""));
	lt_resp_free(&r);
	if (call("/v1/completions", "{\"model\":\"acme-1\",\"prompt\":\"Once\",\"max_tokens\":2}",
		 key, &r) != 200)
		fail_msg("acme-1: %ld %s", r.status, r.body);
	lt_resp_free(&r);
	static const struct {
		const char *path, *fmt;
	} uses[] = {
		{"/v1/completions", "{\"model\":\"%s\",\"prompt\":\"Once\",\"max_tokens\":2}"},
		{"/v1/chat/completions", "{\"model\":\"%s\",\"max_tokens\":2,"
					 "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"},
		{"/tokenize", "{\"model\":\"%s\",\"prompt\":\"hi\"}"},
		{"/detokenize", "{\"model\":\"%s\",\"tokens\":[1]}"},
	};
	for (size_t i = 0; i < sizeof uses / sizeof uses[0]; i++) {
		long st_none, st;
		char *none = as_unknown(uses[i].path, uses[i].fmt, key, "no-such-model", &st_none);
		assert_int_equal(st_none, 404);
		assert_non_null(strstr(none, "model_not_found"));
		const char *hidden[] = {"other-1", "stories"};
		for (size_t k = 0; k < 2; k++) {
			char *b = as_unknown(uses[i].path, uses[i].fmt, key, hidden[k], &st);
			if (st != 404 || strcmp(b, none))
				fail_msg("%s %s: expected the unknown model's 404 %s, got %ld %s",
					 uses[i].path, hidden[k], none, st, b);
			loom_free(b);
		}
		loom_free(none);
	}
}

static void test_rate_limit(void **state)
{
	(void)state;
	const char *key = secrets[2]; /* rpm=120 burst=2 */
	lt_resp r;
	char ra[32];
	assert_int_equal(call("/v1/models", NULL, key, &r), 200);
	lt_resp_free(&r);
	assert_int_equal(call("/tokenize", "{\"model\":\"stories\",\"prompt\":\"hi\"}", key, &r), 200);
	lt_resp_free(&r);
	assert_int_equal(call("/v1/models", NULL, key, &r), 429);
	assert_non_null(strstr(r.body, "\"code\":\"rate_limit_exceeded\""));
	assert_non_null(strstr(r.body, "120 requests per minute"));
	assert_true(hx_header(&r, "Retry-After", ra, sizeof ra));
	assert_string_equal(ra, "1");
	lt_resp_free(&r);
	/* another key is not limited by this one's bucket */
	assert_int_equal(call("/v1/models", NULL, secrets[0], &r), 200);
	lt_resp_free(&r);
	sleep((unsigned)atoi(ra));
	if (call("/v1/completions", "{\"model\":\"stories\",\"prompt\":\"Once\",\"max_tokens\":2}",
		 key, &r) != 200)
		fail_msg("after Retry-After: %ld %s", r.status, r.body);
	lt_resp_free(&r);
}

typedef struct bg {
	char url[160];
	const char *key;
	long status;
} bg;

static void *bg_main(void *arg)
{
	bg *b = arg;
	char auth[128];
	lt_resp r;
	snprintf(auth, sizeof auth, "Bearer %s", b->key);
	hx_req q = {.url = b->url, .auth = auth, .timeout_ms = 20000,
		    .body = "{\"model\":\"s\",\"prompt\":\"hi\",\"max_tokens\":4}"};
	b->status = hx_do(&q, &r);
	lt_resp_free(&r);
	return NULL;
}

/* Ends the fake's held request id with one token and finish stop. */
static void finish(fake *w, uint64_t id)
{
	int32_t tok = 432;
	loom_step_item it = {.req = id, .n_ids = 1, .ids = &tok, .finish = LOOM_FINISH_STOP,
			     .n_prompt = 1};
	loom_msg m = {.type = LOOM_MSG_STEP, .u.step = {.n_items = 1, .items = &it}};
	send_to_gateway(w, &m);
}

static void wait_submits(fake *w, int n)
{
	for (int64_t end = gwp_ms() + 5000; fake_nsub(w) < n && gwp_ms() < end;)
		usleep(10 * 1000);
	assert_int_equal(fake_nsub(w), n);
}

static void test_concurrency_limit(void **state)
{
	(void)state;
	fake w;
	gwp g;
	char conc[64], url[160], auth[64], ra[32];
	snprintf(conc, sizeof conc, "%s concurrency=1", secrets[4]);
	const char *extra[] = {"--api-key", conc, "--api-key", secrets[5], NULL};
	fake_start(&w, "s");
	assert_int_equal(gwp_start(&g, tmp, &w, extra), 0);
	snprintf(url, sizeof url, "%s/v1/completions", g.url);
	snprintf(auth, sizeof auth, "Bearer %s", secrets[4]);
	bg a = {.key = secrets[4]}, c = {.key = secrets[5]};
	snprintf(a.url, sizeof a.url, "%s", url);
	snprintf(c.url, sizeof c.url, "%s", url);
	pthread_t ta, tc;
	assert_int_equal(pthread_create(&ta, NULL, bg_main, &a), 0);
	wait_submits(&w, 1); /* held by the fake */
	lt_resp r;
	hx_req q = {.url = url, .auth = auth, .body = "{\"model\":\"s\",\"prompt\":\"hi\"}"};
	assert_int_equal(hx_do(&q, &r), 429);
	assert_non_null(strstr(r.body, "\"code\":\"rate_limit_exceeded\""));
	assert_non_null(strstr(r.body, "at most 1 at once"));
	assert_true(hx_header(&r, "Retry-After", ra, sizeof ra));
	assert_string_equal(ra, "1");
	lt_resp_free(&r);
	assert_int_equal(fake_nsub(&w), 1);
	/* /v1/models is no generation; another key has its own slots */
	char murl[160];
	snprintf(murl, sizeof murl, "%s/v1/models", g.url);
	hx_req qm = {.url = murl, .auth = auth};
	assert_int_equal(hx_do(&qm, &r), 200);
	lt_resp_free(&r);
	assert_int_equal(pthread_create(&tc, NULL, bg_main, &c), 0);
	wait_submits(&w, 2);
	pthread_mutex_lock(&w.mu);
	uint64_t id_a = w.submits[0], id_c = w.submits[1];
	pthread_mutex_unlock(&w.mu);
	finish(&w, id_a);
	finish(&w, id_c);
	pthread_join(ta, NULL);
	pthread_join(tc, NULL);
	assert_int_equal(a.status, 200);
	assert_int_equal(c.status, 200);
	/* the slot is back */
	w.auto_ids[0] = 432;
	w.n_auto = 1;
	w.auto_finish = LOOM_FINISH_STOP;
	assert_int_equal(hx_do(&q, &r), 200);
	lt_resp_free(&r);
	assert_int_equal(fake_nsub(&w), 3);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
	/* no key in this gateway's log either */
	char *log = NULL;
	size_t len;
	assert_int_equal(loom_text_read(g.p.log, 64u << 20, &log, &len), LOOM_OK);
	for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
		if (strstr(log, secrets[i]))
			fail_msg("the gateway's log shows key %s", secrets[i]);
	loom_free(log);
}

/* Runs last: everything above went through this gateway's log. */
static void test_keys_not_logged(void **state)
{
	(void)state;
	char *log = NULL;
	size_t len;
	assert_int_equal(loom_text_read(stack.gw.log, 64u << 20, &log, &len), LOOM_OK);
	assert_non_null(strstr(log, "API keys: 4 (2 with model lists or limits)"));
	assert_non_null(strstr(log, "API key rate: rate limit")); /* the label, at debug */
	for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++)
		if (strstr(log, secrets[i]))
			fail_msg("the gateway's log shows key %s", secrets[i]);
	loom_free(log);
}

static int setup(void **state)
{
	(void)state;
	static char ad1[PATH_MAX + 64], ad2[PATH_MAX + 64], model[PATH_MAX + 16];
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!realpath(lt_shared_path("models/stories260k"), stories))
		return -1;
	tmp = lt_tmpdir("api-keys");
	for (int i = 0; i < 2; i++)
		if (lt_sh("%s adapter --model %s --out %s/ad%d --rank 4 --seed %d >/dev/null",
			  lt_bin_path("loom-mkmodel"), stories, tmp, i, 10 + i))
			return -1;
	snprintf(keys_file, sizeof keys_file, "%s/keys", tmp);
	FILE *f = fopen(keys_file, "w");
	if (!f)
		return -1;
	fprintf(f, "# API keys of the test\n\n%s name=full\n"
		   "  %s name=tenant models= adapters=acme-*\n"
		   "%s name=rate rpm=120 burst=2\n", secrets[0], secrets[1], secrets[2]);
	fclose(f);
	chmod(keys_file, 0600);
	snprintf(model, sizeof model, "stories=%s", stories);
	snprintf(ad1, sizeof ad1, "acme-1=%s/ad0@stories", tmp);
	snprintf(ad2, sizeof ad2, "other-1=%s/ad1@stories", tmp);
	const char *models[] = {model, NULL};
	const char *gx[] = {"--api-keys-file", keys_file, "--api-key", secrets[3],
			    "--adapter", ad1, "--adapter", ad2, NULL};
	setenv("LOOM_LOG", "debug", 1);
	setenv("LOOM_API_KEY", "sk-env-not-used", 1); /* --api-key given: not read */
	int rc = lt_stack_start(&stack, models, 1, gx);
	unsetenv("LOOM_API_KEY");
	return rc;
}

static int teardown(void **state)
{
	(void)state;
	lt_stack_stop(&stack);
	loom_free(tmp);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_missing_or_wrong_key),
		cmocka_unit_test(test_right_key),
		cmocka_unit_test(test_model_lists),
		cmocka_unit_test(test_rate_limit),
		cmocka_unit_test(test_concurrency_limit),
		cmocka_unit_test(test_keys_not_logged),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
