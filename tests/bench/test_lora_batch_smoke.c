/*
 * tests/bench/test_lora_batch_smoke.c — loom-lora-batch runs (a few steps
 * on a tiny model, --smoke) and keeps its output contract: the last stdout
 * line is exactly lora_batch_ratio=<x.xxx>, the JSON file parses and holds
 * the four scenarios and the same ratio; bad options exit 2. Figures are
 * not checked: they belong to the README, not to a timed test.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

static char *dir;

static int setup(void **state)
{
	(void)state;
	dir = lt_tmpdir("lora-batch");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	lt_sh("rm -rf '%s'", dir);
	loom_free(dir);
	return 0;
}

/* The last non-empty line of file path, into buf. */
static void last_line(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	char line[1024];
	buf[0] = 0;
	while (fgets(line, sizeof line, f))
		if (line[0] != '\n') {
			size_t k = strlen(line) < n - 1 ? strlen(line) : n - 1;
			memcpy(buf, line, k);
			buf[k] = 0;
		}
	fclose(f);
}

static void test_smoke_runs(void **state)
{
	(void)state;
	const char *bin = lt_bin_path("loom-lora-batch");
	char out[600], json[600];
	snprintf(out, sizeof out, "%s/out.txt", dir);
	snprintf(json, sizeof json, "%s/r.json", dir);
	int rc = lt_sh("'%s' --smoke --threads 1 --cache '%s/cache' --json '%s' > '%s'", bin, dir,
		       json, out);
	if (rc) {
		lt_sh("cat '%s' >&2", out);
		print_error("loom-lora-batch --smoke exited %d (is it built? cmake --build build "
			    "--target loom-lora-batch)\n", rc);
		fail();
	}
	char last[256];
	last_line(out, last, sizeof last);
	/* lora_batch_ratio=<digits>.<3 digits>: the smoke run's two steps take
	 * microseconds, so on a loaded machine the ratio may well reach 10 */
	const char *v = last + strlen("lora_batch_ratio=");
	size_t nd = strspn(v, "0123456789");
	if (strncmp(last, "lora_batch_ratio=", strlen("lora_batch_ratio=")) || nd == 0 ||
	    v[nd] != '.' || strspn(v + nd + 1, "0123456789") != 3 || strcmp(v + nd + 4, "\n")) {
		print_error("last line is \"%s\", not lora_batch_ratio=<x.xxx>\n", last);
		fail();
	}
	double ratio = strtod(v, NULL);

	json_error_t err;
	json_t *root = json_load_file(json, 0, &err);
	if (!root) {
		print_error("%s: %s (line %d)\n", json, err.text, err.line);
		fail();
	}
	json_t *r = json_object_get(root, "lora_batch_ratio");
	assert_true(json_is_number(r));
	assert_true(fabs(json_number_value(r) - ratio) <= 0.0006);
	json_t *sc = json_object_get(root, "scenarios");
	assert_true(json_is_array(sc));
	assert_int_equal(json_array_size(sc), 4);
	static const char *const names[] = {"base", "one", "distinct", "mixed"};
	for (size_t i = 0; i < 4; i++) {
		json_t *s = json_array_get(sc, i);
		assert_string_equal(json_string_value(json_object_get(s, "name")), names[i]);
		double tps = json_number_value(json_object_get(s, "tokens_per_s"));
		assert_true(tps > 0 && isfinite(tps));
		assert_true(json_number_value(json_object_get(s, "step_ms")) > 0);
	}
	assert_true(json_is_object(json_object_get(root, "model")));
	json_decref(root);

	/* a second run reuses the cached model and adapters */
	rc = lt_sh("'%s' --smoke --threads 1 --cache '%s/cache' > '%s'", bin, dir, out);
	assert_int_equal(rc, 0);
	last_line(out, last, sizeof last);
	assert_non_null(strstr(last, "lora_batch_ratio="));
}

static void test_bad_options(void **state)
{
	(void)state;
	const char *bin = lt_bin_path("loom-lora-batch");
	static const char *const bad[] = {"--steps 0", "--threads x", "--frobnicate 1",
					  "--steps", "--heads 5 --kv-heads 2"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int rc = lt_sh("'%s' %s --cache '%s/cache' 2>/dev/null >/dev/null", bin, bad[i], dir);
		if (rc != 2) {
			print_error("loom-lora-batch %s: exit %d, want 2\n", bad[i], rc);
			fail();
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_smoke_runs),
		cmocka_unit_test(test_bad_options),
	};
	return cmocka_run_group_tests_name("bench/lora_batch_smoke", tests, setup, teardown);
}
