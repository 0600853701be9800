/*
 * tests/integration/test_link_tls.c — mutual TLS on the gateway <-> worker
 * link (issue 15 item 5, tls+tcp://), real processes on loopback with three
 * throw-away CAs (tests/support/mkcerts): gwca signs gateway certificates
 * (what workers trust), wkca signs worker certificates (what the gateway
 * trusts), evil signs both kinds of impostor.
 * - the right pair: the worker (--own-store, so the model's blob itself is
 *   fetched over the TLS link) comes live, a completion passes;
 * - a worker refuses, one after the other, a gateway with another CA's
 *   certificate, a gateway holding a worker's certificate (its CA is not the
 *   gateways' CA), and a plain tcp:// gateway; then the right gateway gets in;
 * - a gateway refuses a worker with another CA's certificate and a worker
 *   holding a gateway's certificate; then the right worker comes live at the
 *   same address;
 *   (a refusal: no /ready and no "is live" in the gateway's log for 3 s,
 *   where the right pair comes live within about 0.5 s);
 * - flag errors: tls+tcp:// without the TLS flags, the flags with a tcp://
 *   or ipc:// address, a partial set (exit 2); a key nng refuses (exit 1).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

static char *tmp;
static char pki[PATH_MAX], stories[PATH_MAX];
static int seq;

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* pki/NAME.EXT into buf. */
static const char *pem(char *buf, size_t n, const char *name, const char *ext)
{
	snprintf(buf, n, "%s/%s.%s", pki, name, ext);
	return buf;
}

/* A worker on url with certificate NAME (signed by some CA) trusting ca
 * (NULL: no TLS flags), its own empty store. */
static void worker_start(lt_proc *p, const char *url, const char *name, const char *ca)
{
	char bin[512], store[PATH_MAX + 32], log[PATH_MAX + 32], c[PATH_MAX + 32], k[PATH_MAX + 32],
		a[PATH_MAX + 32], id[32];
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-worker"));
	snprintf(store, sizeof store, "%s/wstore-%d", tmp, seq);
	snprintf(log, sizeof log, "%s/worker-%d.log", tmp, seq);
	snprintf(id, sizeof id, "wk%d", seq++);
	char *argv[] = {bin, "--listen", (char *)url, "--own-store", store, "--id", id,
			"--tls-cert", (char *)pem(c, sizeof c, name, "pem"),
			"--tls-key", (char *)pem(k, sizeof k, name, "key"),
			"--tls-ca", (char *)pem(a, sizeof a, ca ? ca : "", "pem"), NULL};
	if (!ca)
		argv[7] = NULL;
	assert_int_equal(lt_spawn(p, log, argv), 0);
}

/* A gateway serving stories260k with worker url, certificate NAME and
 * trusting ca (NULL: no link TLS flags). *port gets its HTTP port. */
static void gateway_start(lt_proc *p, int *port, const char *url, const char *name,
			  const char *ca)
{
	char bin[512], store[PATH_MAX + 32], log[PATH_MAX + 32], c[PATH_MAX + 32], k[PATH_MAX + 32],
		a[PATH_MAX + 32], model[PATH_MAX + 16], ports[16];
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-gateway"));
	snprintf(store, sizeof store, "%s/gstore-%d", tmp, seq);
	snprintf(log, sizeof log, "%s/gateway-%d.log", tmp, seq++);
	snprintf(model, sizeof model, "stories=%s", stories);
	*port = lt_free_port();
	snprintf(ports, sizeof ports, "%d", *port);
	char *argv[] = {bin, "--port", ports, "--store", store, "--model", model,
			"--worker", (char *)url,
			"--link-tls-cert", (char *)pem(c, sizeof c, name, "pem"),
			"--link-tls-key", (char *)pem(k, sizeof k, name, "key"),
			"--link-tls-ca", (char *)pem(a, sizeof a, ca ? ca : "", "pem"), NULL};
	if (!ca)
		argv[9] = NULL;
	assert_int_equal(lt_spawn(p, log, argv), 0);
}

/* True when GET /ready answers 200 within ms. */
static bool ready_within(int port, long ms)
{
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/ready", port);
	for (long end = now_ms() + ms; now_ms() < end; usleep(100 * 1000)) {
		lt_resp r;
		long st = lt_http("GET", url, NULL, NULL, 2000, &r) == 0 ? r.status : 0;
		lt_resp_free(&r);
		if (st == 200)
			return true;
	}
	return false;
}

/* No worker ever came live at gateway p (the handshake never passed). */
static void assert_never_live(const lt_proc *p, const char *what)
{
	if (!lt_sh("grep -q 'is live' %s", p->log)) {
		lt_proc_dump(p);
		fail_msg("%s: a worker came live", what);
	}
}

static void complete(int port)
{
	char url[64];
	lt_resp r;
	snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/completions", port);
	assert_int_equal(lt_http("POST", url, "{\"model\":\"stories\",\"prompt\":\"Once\","
				 "\"max_tokens\":6}", NULL, 20000, &r), 0);
	if (r.status != 200)
		fail_msg("completion over the TLS link: %ld %s", r.status, r.body);
	lt_resp_free(&r);
}

static void tls_url(char *buf, size_t n, const char *scheme)
{
	snprintf(buf, n, "%s://127.0.0.1:%d", scheme, lt_free_port());
}

static void test_mutual_ok(void **state)
{
	(void)state;
	lt_proc wk, gw;
	int port;
	char url[64];
	tls_url(url, sizeof url, "tls+tcp");
	worker_start(&wk, url, "wk", "gwca");
	gateway_start(&gw, &port, url, "gw", "wkca");
	if (!ready_within(port, 60000)) {
		lt_proc_dump(&gw);
		lt_proc_dump(&wk);
		fail_msg("the worker did not come live over mutual TLS");
	}
	complete(port);
	assert_int_equal(lt_stop(&gw, SIGTERM, 5000), 0);
	assert_int_equal(lt_stop(&wk, SIGTERM, 5000), 0);
}

static void test_worker_refuses_gateway(void **state)
{
	(void)state;
	lt_proc wk, gw;
	int port;
	char url[64], plain[64];
	tls_url(url, sizeof url, "tls+tcp");
	snprintf(plain, sizeof plain, "tcp://%s", url + strlen("tls+tcp://"));
	worker_start(&wk, url, "wk", "gwca");
	static const struct {
		const char *cert, *ca, *url_kind;
	} bad[] = {
		{"evilgw", "wkca", "tls"}, /* another CA's certificate */
		{"wk", "wkca", "tls"},     /* a worker's certificate: not a gateway's */
		{NULL, NULL, "plain"},     /* no TLS at all */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		gateway_start(&gw, &port, bad[i].url_kind[0] == 't' ? url : plain,
			      bad[i].cert ? bad[i].cert : "gw", bad[i].ca);
		if (ready_within(port, 3000)) {
			lt_proc_dump(&gw);
			fail_msg("the worker took gateway %zu (%s)", i, bad[i].cert ? bad[i].cert
										  : "plain tcp");
		}
		assert_never_live(&gw, bad[i].cert ? bad[i].cert : "plain tcp");
		assert_int_equal(lt_stop(&gw, SIGTERM, 5000), 0);
	}
	gateway_start(&gw, &port, url, "gw", "wkca");
	if (!ready_within(port, 60000)) {
		lt_proc_dump(&gw);
		lt_proc_dump(&wk);
		fail_msg("the right gateway did not get in after the refused ones");
	}
	complete(port);
	assert_int_equal(lt_stop(&gw, SIGTERM, 5000), 0);
	assert_int_equal(lt_stop(&wk, SIGTERM, 5000), 0);
}

static void test_gateway_refuses_worker(void **state)
{
	(void)state;
	lt_proc wk, gw;
	int port;
	char url[64];
	tls_url(url, sizeof url, "tls+tcp");
	gateway_start(&gw, &port, url, "gw", "wkca");
	static const char *const bad[] = {"evilwk", "gw"}; /* another CA's; a gateway's */
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		worker_start(&wk, url, bad[i], "gwca");
		if (ready_within(port, 3000)) {
			lt_proc_dump(&wk);
			fail_msg("the gateway took worker certificate %s", bad[i]);
		}
		assert_never_live(&gw, bad[i]);
		assert_int_equal(lt_stop(&wk, SIGTERM, 5000), 0);
	}
	worker_start(&wk, url, "wk", "gwca");
	if (!ready_within(port, 60000)) {
		lt_proc_dump(&gw);
		lt_proc_dump(&wk);
		fail_msg("the right worker did not come live after the refused ones");
	}
	complete(port);
	assert_int_equal(lt_stop(&gw, SIGTERM, 5000), 0);
	assert_int_equal(lt_stop(&wk, SIGTERM, 5000), 0);
}

/* Exit status of a program run with args, its output to log. */
static int run(const char *prog, const char *args, const char *log)
{
	return lt_sh("cd %s && %s %s > %s 2>&1", pki, lt_bin_path(prog), args, log);
}

static void test_flag_errors(void **state)
{
	(void)state;
	char log[PATH_MAX + 16], args[PATH_MAX + 1024];
	const char *gw = "--port 0 --store gs --model stories=%s --worker %s %s";
	snprintf(log, sizeof log, "%s/flags.log", tmp);
	static const struct {
		const char *worker, *flags, *msg;
		int status;
	} g[] = {
		{"tls+tcp://127.0.0.1:1", "", "tls+tcp:// needs --link-tls-cert", 2},
		{"tcp://127.0.0.1:1", "--link-tls-cert gw.pem --link-tls-key gw.key --link-tls-ca wkca.pem",
		 "must be tls+tcp://", 2},
		{"tls+tcp://127.0.0.1:1", "--link-tls-cert gw.pem --link-tls-key gw.key",
		 "go together", 2},
		{"tls+tcp://127.0.0.1:1", "--link-tls-cert gw.pem --link-tls-key gw.pem "
		 "--link-tls-ca wkca.pem", "--link-tls-key gw.pem", 1},
		{"tls+tcp://127.0.0.1:1", "--link-tls-cert gw.pem --link-tls-key gw.key "
		 "--link-tls-ca none.pem", "none.pem", 1},
	};
	for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
		snprintf(args, sizeof args, gw, stories, g[i].worker, g[i].flags);
		int st = run("loom-gateway", args, log);
		if (st != g[i].status || lt_sh("grep -q -- '%s' %s", g[i].msg, log)) {
			lt_sh("cat %s >&2", log);
			fail_msg("gateway %s %s: expected exit %d with '%s', got %d", g[i].worker,
				 g[i].flags, g[i].status, g[i].msg, st);
		}
	}
	static const struct {
		const char *listen, *flags, *msg;
		int status;
	} w[] = {
		{"tls+tcp://127.0.0.1:1", "", "needs --tls-cert", 2},
		{"tcp://127.0.0.1:1", "--tls-cert wk.pem --tls-key wk.key --tls-ca gwca.pem",
		 "need a tls+tcp://", 2},
		{"ipc:///tmp/none.ipc", "--tls-cert wk.pem --tls-key wk.key --tls-ca gwca.pem",
		 "need a tls+tcp://", 2},
		{"tls+tcp://127.0.0.1:1", "--tls-cert wk.pem --tls-ca gwca.pem", "go together", 2},
		{"tls+tcp://127.0.0.1:1", "--tls-cert wk.pem --tls-key wk.pem --tls-ca gwca.pem",
		 "--tls-key wk.pem", 1},
	};
	for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
		snprintf(args, sizeof args, "--listen %s --model stories=%s %s", w[i].listen, stories,
			 w[i].flags);
		int st = run("loom-worker", args, log);
		if (st != w[i].status || lt_sh("grep -q -- '%s' %s", w[i].msg, log)) {
			lt_sh("cat %s >&2", log);
			fail_msg("worker %s %s: expected exit %d with '%s', got %d", w[i].listen,
				 w[i].flags, w[i].status, w[i].msg, st);
		}
	}
}

static int setup(void **state)
{
	(void)state;
	if (!realpath(lt_shared_path("models/stories260k"), stories))
		return -1;
	tmp = lt_tmpdir("link-tls");
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	return lt_sh("tests/support/mkcerts %s gwca gw && tests/support/mkcerts %s wkca wk && "
		     "tests/support/mkcerts %s evil evilgw evilwk", pki, pki, pki) ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	loom_free(tmp);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mutual_ok),
		cmocka_unit_test(test_worker_refuses_gateway),
		cmocka_unit_test(test_gateway_refuses_worker),
		cmocka_unit_test(test_flag_errors),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
