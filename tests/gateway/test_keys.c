/*
 * tests/gateway/test_keys.c — gw_keys: the keys file's line format and its
 * refusals (never echoing a secret), lookup by Bearer header, the token
 * bucket on a clock the test moves, concurrency slots, the model/adapter
 * patterns and the /v1/models filter.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/gw_keys.h"
#include "tests/support/harness.h"

static void test_lines(void **state)
{
	(void)state;
	gw_keys *k;
	assert_int_equal(gw_keys_create(&k), LOOM_OK);
	assert_int_equal(gw_keys_add_line(k, "sk-a", "t"), LOOM_OK);
	assert_int_equal(gw_keys_add_line(k, "  sk-b name=bee models=m1,m* adapters= rpm=60 "
				       "burst=3 concurrency=2\t", "t"), LOOM_OK);
	assert_int_equal(gw_keys_count(k), 2);
	assert_int_equal(gw_keys_count_limited(k), 1);
	static const struct {
		const char *line;
		loom_err rc;
		const char *msg;
	} bad[] = {
		{"sk-a", LOOM_EEXIST, "given already (key #1)"},
		{"sk-c rpm=0", LOOM_EINVAL, "rpm: expected an integer"},
		{"sk-c rpm=-1", LOOM_EINVAL, "rpm: expected an integer"},
		{"sk-c rpm=12x", LOOM_EINVAL, "rpm: expected an integer"},
		{"sk-c burst=4", LOOM_EINVAL, "burst= needs rpm="},
		{"sk-c models=a models=b", LOOM_EINVAL, "given twice"},
		{"sk-c models=a,", LOOM_EINVAL, "empty name"},
		{"sk-c models=a/b", LOOM_EINVAL, "is not a name or pattern"},
		{"sk-c colour=red", LOOM_EINVAL, "unknown setting 'colour'"},
		{"sk-c secret-part", LOOM_EINVAL, "not a setting"},
		{"sk-c name=a*", LOOM_EINVAL, "name: expected"},
		{"", LOOM_EINVAL, "empty API key"},
		{"sk-\x01", LOOM_EINVAL, "printable ASCII"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		loom_err rc = gw_keys_add_line(k, bad[i].line, "FILE line 7");
		if (rc != bad[i].rc || !strstr(loom_errmsg(), bad[i].msg) ||
		    !strstr(loom_errmsg(), "FILE line 7") || strstr(loom_errmsg(), "sk-") ||
		    strstr(loom_errmsg(), "secret-part"))
			fail_msg("'%s': got %d '%s'", bad[i].line, rc, loom_errmsg());
	}
	assert_int_equal(gw_keys_count(k), 2);
	/* LOOM_API_KEY's list */
	assert_int_equal(gw_keys_add_list(k, " sk-x , sk-y,,", "LOOM_API_KEY"), LOOM_OK);
	assert_int_equal(gw_keys_count(k), 4);
	assert_int_equal(gw_keys_add_list(k, " , ", "LOOM_API_KEY"), LOOM_EINVAL);
	assert_int_equal(gw_keys_add_list(k, "sk-z x", "LOOM_API_KEY"), LOOM_EINVAL);
	assert_null(strstr(loom_errmsg(), "sk-z"));
	assert_string_equal(gw_key_label(gw_keys_find(k, "Bearer sk-y")), "#4");
	assert_string_equal(gw_key_label(gw_keys_find(k, "Bearer sk-b")), "bee");
	assert_null(gw_keys_find(k, "Bearer sk-"));
	assert_null(gw_keys_find(k, "Bearer sk-bb"));
	assert_null(gw_keys_find(k, "Basic sk-b"));
	assert_null(gw_keys_find(k, "sk-b"));
	assert_null(gw_keys_find(k, NULL));
	assert_non_null(gw_keys_find(k, " bEaReR \tsk-b  "));
	gw_keys_destroy(k);
}

static void test_file(void **state)
{
	(void)state;
	char *dir = lt_tmpdir("keys");
	char path[600];
	snprintf(path, sizeof path, "%s/keys", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("# keys\n\n  # indented comment\nsk-1 name=one\r\nsk-2 rpm=5\nsk-3 oops\n", f);
	fclose(f);
	gw_keys *k;
	assert_int_equal(gw_keys_create(&k), LOOM_OK);
	assert_int_equal(gw_keys_load_file(k, path), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "keys line 6"));
	gw_keys_destroy(k);
	f = fopen(path, "w");
	fputs("# nothing\n", f);
	fclose(f);
	assert_int_equal(gw_keys_create(&k), LOOM_OK);
	assert_int_equal(gw_keys_load_file(k, path), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "no API key"));
	snprintf(path, sizeof path, "%s/none", dir);
	assert_int_equal(gw_keys_load_file(k, path), LOOM_ENOTFOUND);
	gw_keys_destroy(k);
	loom_free(dir);
}

static void test_bucket_and_slots(void **state)
{
	(void)state;
	gw_keys *k;
	gw_keys_grant g[4];
	gw_api_err e;
	uint32_t ra;
	assert_int_equal(gw_keys_create(&k), LOOM_OK);
	assert_int_equal(gw_keys_add_line(k, "sk-r rpm=6 burst=2", "t"), LOOM_OK);
	assert_int_equal(gw_keys_add_line(k, "sk-c concurrency=2", "t"), LOOM_OK);
	assert_false(gw_keys_admit(k, NULL, false, 0, &g[0], &e, &ra));
	assert_int_equal(e.status, 401);
	assert_string_equal(e.code, "invalid_api_key");
	assert_string_equal(e.type, "invalid_request_error");
	assert_false(gw_keys_admit(k, "Bearer sk-q", false, 0, &g[0], &e, &ra));
	assert_int_equal(e.status, 401);
	/* 2 at once, then one every 10 s */
	assert_true(gw_keys_admit(k, "Bearer sk-r", true, 1000, &g[0], &e, &ra));
	assert_false(g[0].slot);
	assert_true(gw_keys_admit(k, "Bearer sk-r", false, 1000, &g[1], &e, &ra));
	assert_false(gw_keys_admit(k, "Bearer sk-r", false, 1000, &g[2], &e, &ra));
	assert_int_equal(e.status, 429);
	assert_string_equal(e.code, "rate_limit_exceeded");
	assert_int_equal(ra, 10);
	assert_null(g[2].key);
	assert_false(gw_keys_admit(k, "Bearer sk-r", false, 7500, &g[2], &e, &ra));
	assert_int_equal(ra, 4); /* 0.65 of a token: 3.5 s more, rounded up */
	assert_true(gw_keys_admit(k, "Bearer sk-r", false, 11001, &g[2], &e, &ra));
	assert_false(gw_keys_admit(k, "Bearer sk-r", false, 11001, &g[3], &e, &ra));
	/* a long pause refills no more than burst */
	assert_true(gw_keys_admit(k, "Bearer sk-r", false, 1000000, &g[3], &e, &ra));
	assert_true(gw_keys_admit(k, "Bearer sk-r", false, 1000000, &g[3], &e, &ra));
	assert_false(gw_keys_admit(k, "Bearer sk-r", false, 1000000, &g[3], &e, &ra));
	/* a clock that goes back takes nothing */
	assert_false(gw_keys_admit(k, "Bearer sk-r", false, 5, &g[3], &e, &ra));
	for (int i = 0; i < 4; i++)
		gw_keys_release(k, &g[i]);
	/* slots: generations only */
	assert_true(gw_keys_admit(k, "Bearer sk-c", true, 0, &g[0], &e, &ra));
	assert_true(g[0].slot);
	assert_true(gw_keys_admit(k, "Bearer sk-c", true, 0, &g[1], &e, &ra));
	assert_false(gw_keys_admit(k, "Bearer sk-c", true, 0, &g[2], &e, &ra));
	assert_int_equal(e.status, 429);
	assert_int_equal(ra, 1);
	assert_non_null(strstr(e.message, "at most 2 at once"));
	assert_true(gw_keys_admit(k, "Bearer sk-c", false, 0, &g[2], &e, &ra));
	gw_keys_release(k, &g[2]);
	gw_keys_release(k, &g[0]);
	assert_null(g[0].key);
	gw_keys_release(k, &g[0]); /* twice: nothing */
	assert_true(gw_keys_admit(k, "Bearer sk-c", true, 0, &g[0], &e, &ra));
	assert_false(gw_keys_admit(k, "Bearer sk-c", true, 0, &g[2], &e, &ra));
	gw_keys_release(k, &g[0]);
	gw_keys_release(k, &g[1]);
	gw_keys_destroy(k);
}

static void test_lists(void **state)
{
	(void)state;
	gw_keys *k;
	assert_int_equal(gw_keys_create(&k), LOOM_OK);
	assert_int_equal(gw_keys_add_line(k, "sk-all", "t"), LOOM_OK);
	assert_int_equal(gw_keys_add_line(k, "sk-t models=base adapters=acme-*,x?", "t"), LOOM_OK);
	assert_int_equal(gw_keys_add_line(k, "sk-n models= adapters=", "t"), LOOM_OK);
	const gw_key *all = gw_keys_find(k, "Bearer sk-all"), *t = gw_keys_find(k, "Bearer sk-t"),
		     *n = gw_keys_find(k, "Bearer sk-n");
	assert_true(gw_key_may_use(NULL, "anything", true));
	assert_true(gw_key_may_use(all, "anything", true));
	assert_true(gw_key_may_use(t, "base", false));
	assert_false(gw_key_may_use(t, "base2", false));
	assert_true(gw_key_may_use(t, "acme-1", true));
	assert_true(gw_key_may_use(t, "x1", true));
	assert_false(gw_key_may_use(t, "x12", true));
	assert_false(gw_key_may_use(t, "acme-1", false)); /* a base model called so */
	assert_false(gw_key_may_use(n, "base", false));
	assert_false(gw_key_may_use(n, "acme-1", true));
	const char *models = "{\"object\":\"list\",\"data\":["
			     "{\"id\":\"base\",\"parent\":null},{\"id\":\"other\",\"parent\":null},"
			     "{\"id\":\"acme-1\",\"parent\":\"base\"},{\"id\":\"b-1\",\"parent\":\"base\"}]}";
	char *j = gw_keys_filter_models(t, loom_strdup(models));
	assert_string_equal(j, "{\"object\":\"list\",\"data\":[{\"id\":\"base\",\"parent\":null},"
			       "{\"id\":\"acme-1\",\"parent\":\"base\"}]}");
	loom_free(j);
	j = gw_keys_filter_models(n, loom_strdup(models));
	assert_string_equal(j, "{\"object\":\"list\",\"data\":[]}");
	loom_free(j);
	j = gw_keys_filter_models(all, loom_strdup(models));
	assert_string_equal(j, models);
	loom_free(j);
	assert_null(gw_keys_filter_models(t, NULL));
	gw_keys_destroy(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines),
		cmocka_unit_test(test_file),
		cmocka_unit_test(test_bucket_and_slots),
		cmocka_unit_test(test_lists),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
