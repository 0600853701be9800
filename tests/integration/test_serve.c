/*
 * tests/integration/test_serve.c — scripts/serve as a newcomer uses it: it
 * starts loom (generating the demo model when none is given), prints curl
 * examples, every printed example answers 200 with JSON or SSE and no error,
 * and SIGTERM (like SIGINT) stops the gateway and its workers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = loom_malloc((size_t)n + 1);
	n = (long)fread(buf, 1, (size_t)n, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* Number of processes whose command line contains needle. */
static int count_procs(const char *needle)
{
	char cmd[256], line[64];
	int n = -1;
	snprintf(cmd, sizeof cmd, "pgrep -c -f -- '%s'", needle);
	FILE *f = popen(cmd, "r");
	if (!f)
		return -1;
	if (fgets(line, sizeof line, f))
		n = atoi(line);
	pclose(f);
	return n;
}

static void run_examples(const char *log, const char *dir)
{
	const char *p = log;
	int n = 0;
	while ((p = strstr(p, "\n  curl ")) != NULL) {
		/* one example: this line plus backslash-continued lines */
		const char *start = p + 1, *end = start;
		for (;;) {
			const char *nl = strchr(end, '\n');
			if (!nl)
				nl = end + strlen(end);
			int cont = nl > end && nl[-1] == '\\';
			end = nl;
			if (!cont || !*nl)
				break;
			end = nl + 1;
		}
		char *ex = loom_strndup(start, (size_t)(end - start));
		char script[600];
		snprintf(script, sizeof script, "%s/example%d.sh", dir, n);
		FILE *f = fopen(script, "w");
		assert_non_null(f);
		fprintf(f, "%s -o %s/out%d -w '%%{http_code}' > %s/code%d\n", ex, dir, n, dir, n);
		fclose(f);
		fprintf(stderr, "example %d: %s\n", n, ex);
		assert_int_equal(lt_sh("bash %s", script), 0);
		char path[600];
		snprintf(path, sizeof path, "%s/code%d", dir, n);
		char *code = read_file(path);
		snprintf(path, sizeof path, "%s/out%d", dir, n);
		char *out = read_file(path);
		fprintf(stderr, "  -> %s %.200s\n", code, out);
		assert_string_equal(code, "200");
		assert_null(strstr(out, "\"error\""));
		assert_true(out[0] == '{' || !strncmp(out, "data: ", 6));
		loom_free(code);
		loom_free(out);
		loom_free(ex);
		p = end;
		n++;
	}
	assert_true(n >= 4);
}

/* Starts scripts/serve with cmd (a shell command that execs it, run from
 * the project root), runs its examples, stops it with SIGTERM and checks
 * that the gateway and the workers are gone. */
static void serve_and_check(const char *dir, int port, const char *cmd)
{
	char log[600], needle[96], wneedle[96];
	lt_proc sv;
	snprintf(log, sizeof log, "%s/serve.log", dir);
	char *argv[] = { "/bin/sh", "-c", (char *)cmd, NULL };
	assert_int_equal(lt_spawn(&sv, log, argv), 0);

	/* wait for the examples (the demo model may be generated first) */
	char *out = NULL;
	for (int i = 0; i < 1200; i++) {
		loom_free(out);
		out = read_file(log);
		if (out && strstr(out, "Ctrl-C stops loom"))
			break;
		if (waitpid(sv.pid, NULL, WNOHANG) == sv.pid) {
			sv.pid = 0;
			break;
		}
		usleep(100000);
	}
	if (!out || !strstr(out, "Ctrl-C stops loom"))
		lt_proc_dump(&sv);
	assert_non_null(out);
	assert_non_null(strstr(out, "Ctrl-C stops loom"));
	run_examples(out, dir);
	loom_free(out);

	/* SIGTERM stops scripts/serve, the gateway and the worker */
	snprintf(needle, sizeof needle, "loom-gatewa[y].*--port %d", port);
	snprintf(wneedle, sizeof wneedle, "loom-worke[r].*loom-serve-%d/", (int)sv.pid);
	assert_int_equal(count_procs(needle), 1);
	assert_true(count_procs(wneedle) >= 1);
	assert_int_equal(lt_stop(&sv, SIGTERM, 15000), 0);
	usleep(300000);
	assert_int_equal(count_procs(needle), 0);
	assert_int_equal(count_procs(wneedle), 0);
}

/* No model given: the demo model is generated (once) and served. */
static void test_serve_demo(void **state)
{
	(void)state;
	char *dir = lt_tmpdir("serve");
	char cmd[256];
	int p = lt_free_port();
	snprintf(cmd, sizeof cmd, "exec scripts/serve --port %d --store %s/store", p, dir);
	serve_and_check(dir, p, cmd);
	loom_free(dir);
}

/* A real model and an adapter given by paths relative to the directory
 * serve is run from, two workers: the adapter example answers too. */
static void test_serve_model_adapter(void **state)
{
	(void)state;
	char *dir = lt_tmpdir("serve-ad");
	char root[512], model[512], cmd[2048];
	int p = lt_free_port();
	assert_non_null(getcwd(root, sizeof root));
	assert_non_null(realpath(lt_shared_path("models/stories260k"), model));
	assert_int_equal(lt_sh("ln -s %s %s/stories && %s adapter --model %s --out %s/myad --rank 4 "
			       "--targets q_proj,v_proj >/dev/null",
			       model, dir, lt_bin_path("loom-mkmodel"), model, dir), 0);
	snprintf(cmd, sizeof cmd,
		 "cd %s && exec %s/scripts/serve --port %d --workers 2 --store store --model stories "
		 "--adapter tales=myad@stories",
		 dir, root, p);
	serve_and_check(dir, p, cmd);
	char log[600];
	snprintf(log, sizeof log, "%s/serve.log", dir);
	char *out = read_file(log);
	assert_non_null(strstr(out, "\"model\": \"tales\""));
	loom_free(out);
	loom_free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_serve_demo),
		cmocka_unit_test(test_serve_model_adapter),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
