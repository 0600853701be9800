/*
 * tests/gateway/test_policy.c — who may use the admin API and which folders
 * it may import from: loopback detection (IPv4, IPv6, v4-mapped), the
 * token rule (401 missing / malformed / wrong, 403 non-loopback without a
 * configured token), constant-time comparison, lexical normalization, and
 * the folder rule on a real tree with "..", symlinked folders, symlinked
 * files inside a folder, prefix look-alikes ("/allowed-evil") and missing
 * folders inside and outside the allowed directories.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "gateway/gw_policy.h"
#include "tests/support/harness.h"

static struct sockaddr_storage addr(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &a->sin_addr), 1);
	}
	return ss;
}

static void test_loopback(void **state)
{
	(void)state;
	static const struct {
		const char *ip;
		bool loop;
	} cases[] = {
		{"127.0.0.1", true},   {"127.1.2.3", true},        {"10.0.0.1", false},
		{"128.0.0.1", false},  {"0.0.0.0", false},         {"::1", true},
		{"::2", false},        {"::ffff:127.0.0.1", true}, {"::ffff:10.0.0.1", false},
		{"fe80::1", false},    {"::", false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct sockaddr_storage ss = addr(cases[i].ip);
		if (gw_addr_is_loopback((struct sockaddr *)&ss) != cases[i].loop)
			fail_msg("%s: loopback should be %d", cases[i].ip, cases[i].loop);
	}
	assert_false(gw_addr_is_loopback(NULL));
}

static void test_auth(void **state)
{
	(void)state;
	struct sockaddr_storage lo = addr("127.0.0.1"), far = addr("192.0.2.7"),
				lo6 = addr("::1");
	static const struct {
		const char *name;
		const char *token;
		const char *header;
		int peer;         /* 0 loopback, 1 remote, 2 ::1 */
		gw_auth want;
		const char *why;  /* part of the explanation when refused */
	} cases[] = {
		{"no token, loopback", NULL, NULL, 0, GW_AUTH_OK, NULL},
		{"no token, ::1", "", NULL, 2, GW_AUTH_OK, NULL},
		{"no token, loopback ignores a header", NULL, "Bearer x", 0, GW_AUTH_OK, NULL},
		{"no token, remote", NULL, NULL, 1, GW_AUTH_FORBIDDEN, "loopback"},
		{"no token, remote with a header", "", "Bearer x", 1, GW_AUTH_FORBIDDEN, "loopback"},
		{"token, right", "s3cret", "Bearer s3cret", 1, GW_AUTH_OK, NULL},
		{"token, right, scheme case", "s3cret", "bearer s3cret", 1, GW_AUTH_OK, NULL},
		{"token, right, spaces", "s3cret", "  Bearer   s3cret  ", 0, GW_AUTH_OK, NULL},
		{"token, missing (loopback too)", "s3cret", NULL, 0, GW_AUTH_UNAUTHORIZED, "missing"},
		{"token, wrong", "s3cret", "Bearer s3cre", 1, GW_AUTH_UNAUTHORIZED, "incorrect"},
		{"token, longer", "s3cret", "Bearer s3cretX", 1, GW_AUTH_UNAUTHORIZED, "incorrect"},
		{"token, empty", "s3cret", "Bearer ", 1, GW_AUTH_UNAUTHORIZED, "incorrect"},
		{"token, basic", "s3cret", "Basic czNjcmV0", 1, GW_AUTH_UNAUTHORIZED, "Bearer"},
		{"token, no space", "s3cret", "Bearers3cret", 1, GW_AUTH_UNAUTHORIZED, "Bearer"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char why[256] = "";
		const struct sockaddr *peer = (const struct sockaddr *)(cases[i].peer == 0 ? &lo
								       : cases[i].peer == 1 ? &far
											    : &lo6);
		gw_auth got = gw_auth_check(cases[i].token, cases[i].header, peer, why, sizeof why);
		if (got != cases[i].want || (cases[i].why && !strstr(why, cases[i].why)))
			fail_msg("%s: got %d (%s), want %d", cases[i].name, got, why, cases[i].want);
	}
	/* no peer address (unknown) is not loopback */
	char why[256];
	assert_int_equal(gw_auth_check(NULL, NULL, NULL, why, sizeof why), GW_AUTH_FORBIDDEN);
}

static void test_secret_equal(void **state)
{
	(void)state;
	assert_true(gw_secret_equal("", ""));
	assert_true(gw_secret_equal("abc", "abc"));
	assert_false(gw_secret_equal("abc", "abd"));
	assert_false(gw_secret_equal("abc", "ab"));
	assert_false(gw_secret_equal("ab", "abc"));
	assert_false(gw_secret_equal("", "a"));
	assert_false(gw_secret_equal("a", ""));
}

static void test_normalize(void **state)
{
	(void)state;
	char cwd[PATH_MAX], want[PATH_MAX + 8], out[PATH_MAX];
	assert_non_null(getcwd(cwd, sizeof cwd));
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"/a/b/c", "/a/b/c"},  {"/a//b/", "/a/b"},   {"/a/./b", "/a/b"},
		{"/a/b/../c", "/a/c"}, {"/a/../../b", "/b"}, {"/..", "/"},
		{"/", "/"},            {"/a/b/..", "/a"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		assert_true(gw_path_normalize(cases[i].in, out));
		if (strcmp(out, cases[i].out))
			fail_msg("'%s' -> '%s', want '%s'", cases[i].in, out, cases[i].out);
	}
	assert_true(gw_path_normalize("x/./y/../z", out));
	snprintf(want, sizeof want, "%s/x/z", strcmp(cwd, "/") ? cwd : "");
	assert_string_equal(out, want);
}

static void test_paths(void **state)
{
	(void)state;
	char *t = lt_tmpdir("policy");
	char root[PATH_MAX], allowed[PATH_MAX + 16], p[PATH_MAX + 64], abs[PATH_MAX], why[512];
	assert_non_null(realpath(t, root));
	/* allowed/ad (a folder), allowed/link-out -> outside/ad, allowed/bad (a file link
	 * leading out), allowed/ok-link -> allowed/ad, outside/ad, allowed-evil/ad */
	assert_int_equal(lt_sh("cd %s && mkdir -p allowed/ad allowed/bad allowed/sub outside/ad "
			       "allowed-evil/ad && echo x > outside/secret && "
			       "ln -s ../outside/ad allowed/link-out && "
			       "ln -s ../../outside/secret allowed/bad/adapter_config.json && "
			       "ln -s ad allowed/ok-link && echo y > allowed/ad/adapter_config.json && "
			       "ln -s adapter_config.json allowed/ad/alias.json", root), 0);
	snprintf(allowed, sizeof allowed, "%s/allowed", root);
	const char *dirs[] = {allowed};
	static const struct {
		const char *name;
		const char *rel;   /* relative to root; "" = root itself */
		gw_path_rc want;
		const char *abs;   /* resolved, relative to root, when OK */
	} cases[] = {
		{"a folder", "allowed/ad", GW_PATH_OK, "allowed/ad"},
		{"trailing slash", "allowed/ad/", GW_PATH_OK, "allowed/ad"},
		{"an empty folder", "allowed/sub", GW_PATH_OK, "allowed/sub"},
		{"the allowed dir, holding a link out", "allowed", GW_PATH_FORBIDDEN, NULL},
		{"a link that stays inside", "allowed/ok-link", GW_PATH_OK, "allowed/ad"},
		{"'..' back inside", "allowed/sub/../ad", GW_PATH_OK, "allowed/ad"},
		{"'..' out", "allowed/../outside/ad", GW_PATH_FORBIDDEN, NULL},
		{"'..' out of a missing folder", "allowed/nope/../../outside", GW_PATH_FORBIDDEN, NULL},
		{"a symlinked folder leading out", "allowed/link-out", GW_PATH_FORBIDDEN, NULL},
		{"a file link leading out", "allowed/bad", GW_PATH_FORBIDDEN, NULL},
		{"outside", "outside/ad", GW_PATH_FORBIDDEN, NULL},
		{"a prefix look-alike", "allowed-evil/ad", GW_PATH_FORBIDDEN, NULL},
		{"missing inside", "allowed/nope", GW_PATH_MISSING, NULL},
		{"missing outside", "outside/nope", GW_PATH_FORBIDDEN, NULL},
		{"a file, not a folder", "allowed/ad/adapter_config.json", GW_PATH_MISSING, NULL},
		{"the root", "", GW_PATH_FORBIDDEN, NULL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		snprintf(p, sizeof p, "%s/%s", root, cases[i].rel);
		why[0] = '\0';
		gw_path_rc rc = gw_path_check(dirs, 1, p, abs, why, sizeof why);
		if (rc != cases[i].want)
			fail_msg("%s: got %d (%s), want %d", cases[i].name, rc, why, cases[i].want);
		if (rc == GW_PATH_OK) {
			snprintf(p, sizeof p, "%s/%s", root, cases[i].abs);
			assert_string_equal(abs, p);
		} else {
			assert_string_equal(abs, "");
			assert_true(why[0] != '\0');
		}
	}
	/* no allowed directory: everything is refused */
	snprintf(p, sizeof p, "%s/allowed/ad", root);
	assert_int_equal(gw_path_check(dirs, 0, p, abs, why, sizeof why), GW_PATH_FORBIDDEN);
	assert_non_null(strstr(why, "--adapter-dir"));
	/* "/" allows everything; an empty path is missing */
	const char *slash[] = {"/"};
	assert_int_equal(gw_path_check(slash, 1, p, abs, why, sizeof why), GW_PATH_OK);
	assert_int_equal(gw_path_check(dirs, 1, "", abs, why, sizeof why), GW_PATH_MISSING);
	/* a relative path is resolved against the current directory */
	char cwd[PATH_MAX];
	assert_non_null(getcwd(cwd, sizeof cwd));
	assert_int_equal(chdir(root), 0);
	assert_int_equal(gw_path_check(dirs, 1, "allowed/ad", abs, why, sizeof why), GW_PATH_OK);
	assert_int_equal(gw_path_check(dirs, 1, "outside/ad", abs, why, sizeof why),
			 GW_PATH_FORBIDDEN);
	assert_int_equal(chdir(cwd), 0);
	loom_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loopback),
		cmocka_unit_test(test_auth),
		cmocka_unit_test(test_secret_equal),
		cmocka_unit_test(test_normalize),
		cmocka_unit_test(test_paths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
