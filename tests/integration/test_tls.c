/*
 * tests/integration/test_tls.c — HTTPS on the gateway (issue 15 item 5), with
 * a test CA and certificates made at test time (tests/support/mkcerts,
 * openssl), a real gateway (--tls-cert/--tls-key, an API key) and worker:
 * - libcurl verifying the server against the test CA (by 127.0.0.1 and by
 *   localhost): /health, a completion with the key, a 401 without it, an SSE
 *   stream to its [DONE];
 * - the same client trusting another CA refuses the server; plain HTTP to
 *   the port gets no HTTP answer; TLS 1.1 is refused;
 * - Node (when installed) with NODE_EXTRA_CA_CERTS: the OpenAI SDK when
 *   require('openai') resolves (NODE_PATH: the SDK scripts/setup installs in
 *   .loom/node, required when it is there), else Node's fetch, completes over
 *   HTTPS; without the CA it fails;
 * - start-up refusals: --tls-cert without --tls-key (2), a key of another
 *   certificate, a missing file, a key given as the certificate (1).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/integration/http_ex.h"

#define KEY "sk-tls-test-4242"

static char *tmp;
static char pki[PATH_MAX], ca[PATH_MAX + 16], evil_ca[PATH_MAX + 16];
static char stories[PATH_MAX];
static lt_proc gw, wk;
static int port;

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static long https(const char *host, const char *path, const char *body, const char *auth,
		  const char *cafile, lt_resp *r, char *err, size_t n_err)
{
	char url[256];
	snprintf(url, sizeof url, "https://%s:%d%s", host, port, path);
	hx_req q = {.url = url, .body = body, .auth = auth, .cafile = cafile, .timeout_ms = 20000};
	long st = hx_do(&q, r);
	if (err)
		snprintf(err, n_err, "%s", q.err);
	return st;
}

static void test_https_verified(void **state)
{
	(void)state;
	lt_resp r;
	char err[CURL_ERROR_SIZE];
	const char *hosts[] = {"127.0.0.1", "localhost"};
	for (int i = 0; i < 2; i++) {
		if (https(hosts[i], "/health", NULL, NULL, ca, &r, err, sizeof err) != 200)
			fail_msg("https://%s/health: %s", hosts[i], err);
		assert_string_equal(r.body, "{\"status\":\"ok\"}");
		lt_resp_free(&r);
	}
	const char *body = "{\"model\":\"stories\",\"prompt\":\"Once upon\",\"max_tokens\":8}";
	if (https("127.0.0.1", "/v1/completions", body, "Bearer " KEY, ca, &r, err, sizeof err) != 200)
		fail_msg("completion over HTTPS: %ld %s %s", r.status, r.body, err);
	assert_non_null(strstr(r.body, "\"text_completion\""));
	lt_resp_free(&r);
	assert_int_equal(https("127.0.0.1", "/v1/completions", body, NULL, ca, &r, err, sizeof err),
			 401);
	lt_resp_free(&r);
	const char *sbody = "{\"model\":\"stories\",\"prompt\":\"Once upon\",\"max_tokens\":24,"
			    "\"stream\":true}";
	assert_int_equal(https("localhost", "/v1/completions", sbody, "Bearer " KEY, ca, &r, err,
			       sizeof err), 200);
	assert_non_null(strstr(r.body, "data: {"));
	assert_non_null(strstr(r.body, "data: [DONE]"));
	lt_resp_free(&r);
}

static void test_untrusted_refused(void **state)
{
	(void)state;
	lt_resp r;
	char err[CURL_ERROR_SIZE], url[128];
	/* a client trusting another CA */
	assert_int_equal(https("127.0.0.1", "/health", NULL, NULL, evil_ca, &r, err, sizeof err), 0);
	if (!strstr(err, "certificate") && !strstr(err, "issuer"))
		fail_msg("expected a certificate error, got '%s'", err);
	lt_resp_free(&r);
	/* plain HTTP to the HTTPS port */
	snprintf(url, sizeof url, "http://127.0.0.1:%d/health", port);
	hx_req q = {.url = url, .timeout_ms = 5000};
	assert_int_equal(hx_do(&q, &r), 0);
	lt_resp_free(&r);
	/* TLS 1.1 */
	assert_int_equal(lt_sh("curl -s -o /dev/null --cacert %s --tls-max 1.1 "
			       "https://127.0.0.1:%d/health", ca, port) == 0, 0);
	/* the gateway is still serving */
	assert_int_equal(https("127.0.0.1", "/health", NULL, NULL, ca, &r, err, sizeof err), 200);
	lt_resp_free(&r);
}

static void test_node_client(void **state)
{
	(void)state;
	if (lt_sh("command -v node >/dev/null 2>&1"))
		skip();
	char js[PATH_MAX + 16];
	snprintf(js, sizeof js, "%s/client.js", tmp);
	FILE *f = fopen(js, "w");
	assert_non_null(f);
	fprintf(f,
		"const base = 'https://localhost:%d/v1', key = '%s';\n"
		"let OpenAI = null;\n"
		"try { OpenAI = require('openai'); OpenAI = OpenAI.OpenAI || OpenAI.default || OpenAI; }"
		" catch (e) {}\n"
		"(async () => {\n"
		"  if (process.env.REQUIRE_SDK && !OpenAI) { console.error('no OpenAI SDK'); process.exit(4); }\n"
		"  let text;\n"
		"  if (OpenAI) {\n"
		"    const c = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0 });\n"
		"    const r = await c.completions.create({ model: 'stories', prompt: 'Once upon',"
		" max_tokens: 6 });\n"
		"    text = r.choices[0].text;\n"
		"  } else {\n"
		"    const r = await fetch(base + '/completions', { method: 'POST', headers: {"
		" 'Authorization': 'Bearer ' + key, 'Content-Type': 'application/json' }, body:"
		" JSON.stringify({ model: 'stories', prompt: 'Once upon', max_tokens: 6 }) });\n"
		"    if (r.status !== 200) throw new Error('status ' + r.status);\n"
		"    text = (await r.json()).choices[0].text;\n"
		"  }\n"
		"  console.error('node client (' + (OpenAI ? 'OpenAI SDK' : 'fetch') + '): ' +"
		" JSON.stringify(text));\n"
		"  process.exit(typeof text === 'string' && text.length ? 0 : 1);\n"
		"})().catch(e => { console.error('node client: ' + (e.cause || e)); process.exit(3); });\n",
		port, KEY);
	fclose(f);
	/* the SDK scripts/setup installs (.loom/node, from the project root, the
	 * cwd): when it is there, the client must be the SDK */
	const char *sdk = ".loom/node/node_modules";
	int have_sdk = lt_sh("test -f %s/openai/package.json", sdk) == 0;
	assert_int_equal(lt_sh("NODE_PATH=%s %s NODE_EXTRA_CA_CERTS=%s node %s", sdk,
			       have_sdk ? "REQUIRE_SDK=1" : "", ca, js), 0);
	/* without the test CA, Node refuses the server */
	assert_int_equal(lt_sh("NODE_PATH=%s node %s", sdk, js) == 0, 0);
}

/* Exit status of loom-gateway with args (after "--store DIR --worker URL"). */
static int gw_exit(const char *const *args, const char *log)
{
	char cmd[4096];
	int n = snprintf(cmd, sizeof cmd, "%s --port 0 --store %s/bad-store --worker ipc:///tmp/none",
			 lt_bin_path("loom-gateway"), tmp);
	for (int i = 0; args[i]; i++)
		n += snprintf(cmd + n, sizeof cmd - (size_t)n, " %s", args[i]);
	snprintf(cmd + n, sizeof cmd - (size_t)n, " > %s 2>&1", log);
	int st = lt_sh("%s", cmd);
	return st;
}

static void test_bad_tls_args(void **state)
{
	(void)state;
	char cert[PATH_MAX + 16], key[PATH_MAX + 16], other_key[PATH_MAX + 16], log[PATH_MAX + 16];
	snprintf(cert, sizeof cert, "%s/gw.pem", pki);
	snprintf(key, sizeof key, "%s/gw.key", pki);
	snprintf(other_key, sizeof other_key, "%s/evilgw.key", pki);
	snprintf(log, sizeof log, "%s/bad.log", tmp);
	const char *only_cert[] = {"--tls-cert", cert, NULL};
	assert_int_equal(gw_exit(only_cert, log), 2);
	assert_int_equal(lt_sh("grep -q 'go together' %s", log), 0);
	const char *mismatch[] = {"--tls-cert", cert, "--tls-key", other_key, NULL};
	assert_int_equal(gw_exit(mismatch, log), 1);
	assert_int_equal(lt_sh("grep -q 'cannot start HTTPS' %s", log), 0);
	const char *missing[] = {"--tls-cert", "/nonexistent/cert.pem", "--tls-key", key, NULL};
	assert_int_equal(gw_exit(missing, log), 1);
	assert_int_equal(lt_sh("grep -q '/nonexistent/cert.pem' %s", log), 0);
	const char *swapped[] = {"--tls-cert", key, "--tls-key", key, NULL};
	assert_int_equal(gw_exit(swapped, log), 1);
	assert_int_equal(lt_sh("grep -q 'not a PEM certificate' %s", log), 0);
}

static int setup(void **state)
{
	(void)state;
	char store[PATH_MAX + 16], model[PATH_MAX + 16], wurl[128], ports[16], log[PATH_MAX + 16];
	char cert[PATH_MAX + 16], key[PATH_MAX + 16];
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!realpath(lt_shared_path("models/stories260k"), stories))
		return -1;
	tmp = lt_tmpdir("tls");
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	if (lt_sh("tests/support/mkcerts %s ca gw && tests/support/mkcerts %s evil evilgw", pki,
		  pki))
		return -1;
	snprintf(ca, sizeof ca, "%s/ca.pem", pki);
	snprintf(evil_ca, sizeof evil_ca, "%s/evil.pem", pki);
	snprintf(cert, sizeof cert, "%s/gw.pem", pki);
	snprintf(key, sizeof key, "%s/gw.key", pki);
	snprintf(store, sizeof store, "%s/store", tmp);
	snprintf(model, sizeof model, "stories=%s", stories);
	snprintf(wurl, sizeof wurl, "ipc:///tmp/loom-tls-%d.ipc", (int)getpid());
	port = lt_free_port();
	snprintf(ports, sizeof ports, "%d", port);
	char gbin[512], wbin[512];
	snprintf(gbin, sizeof gbin, "%s", lt_bin_path("loom-gateway"));
	snprintf(wbin, sizeof wbin, "%s", lt_bin_path("loom-worker"));
	char *gargv[] = {gbin, "--port", ports, "--store", store, "--model", model, "--worker", wurl,
			 "--tls-cert", cert, "--tls-key", key, "--api-key", KEY, NULL};
	snprintf(log, sizeof log, "%s/gateway.log", tmp);
	if (lt_spawn(&gw, log, gargv))
		return -1;
	/* the gateway creates the store; the worker reads it */
	char err[CURL_ERROR_SIZE];
	lt_resp r;
	long end = now_ms() + 30000, st = 0;
	while (now_ms() < end &&
	       (st = https("127.0.0.1", "/health", NULL, NULL, ca, &r, err, sizeof err)) != 200) {
		lt_resp_free(&r);
		usleep(50 * 1000);
	}
	lt_resp_free(&r);
	if (st != 200) {
		fprintf(stderr, "the HTTPS gateway did not answer: %s\n", err);
		lt_proc_dump(&gw);
		return -1;
	}
	char *wargv[] = {wbin, "--listen", wurl, "--store", store, "--model", model, NULL};
	snprintf(log, sizeof log, "%s/worker.log", tmp);
	if (lt_spawn(&wk, log, wargv))
		return -1;
	for (end = now_ms() + 60000; now_ms() < end; usleep(50 * 1000)) {
		st = https("127.0.0.1", "/ready", NULL, NULL, ca, &r, err, sizeof err);
		lt_resp_free(&r);
		if (st == 200)
			return 0;
	}
	fprintf(stderr, "the HTTPS gateway did not become ready\n");
	lt_proc_dump(&gw);
	lt_proc_dump(&wk);
	return -1;
}

static int teardown(void **state)
{
	(void)state;
	if (gw.pid > 0 && lt_stop(&gw, SIGTERM, 5000) != 0)
		fprintf(stderr, "the gateway did not exit cleanly\n");
	if (wk.pid > 0)
		lt_stop(&wk, SIGTERM, 5000);
	char path[160];
	snprintf(path, sizeof path, "/tmp/loom-tls-%d.ipc", (int)getpid());
	unlink(path);
	loom_free(tmp);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_https_verified),
		cmocka_unit_test(test_untrusted_refused),
		cmocka_unit_test(test_node_client),
		cmocka_unit_test(test_bad_tls_args),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
