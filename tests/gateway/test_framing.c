/*
 * tests/gateway/test_framing.c — HTTP framing (RFC 9112 section 6.3) over raw
 * sockets against a loom-gateway process (fake worker): every request whose
 * body length is ambiguous gets a 400 and the connection closed —
 * - two Content-Length headers with different values (MHD took the first: a
 *   request could be smuggled past a proxy that honours the other), also
 *   when the second request hides in the "body";
 * - a Transfer-Encoding other than a single "chunked" (gzip, identity,
 *   xchunked, "gzip, chunked", chunked twice), with or without a
 *   Content-Length (these got no answer at all), and chunked with a
 *   Content-Length;
 * - a negative or malformed Content-Length (libmicrohttpd answers these
 *   itself, before the gateway sees the request; 0.9.75 repeats its header
 *   block inside the reply's body, which a client reads as a 400 with a
 *   garbled body);
 * while equal duplicate Content-Lengths, a chunked body and keep-alive still
 * work.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>

#include "tests/gateway/gw_proc.h"

static char *dir;
static fake w;
static gwp g;

/* Sends req on a fresh connection and reads until the gateway closes it
 * (at most 3 s). The reply goes to buf; true when the connection ended. */
static bool exchange(const char *req, char *buf, size_t cap)
{
	int fd = gwp_connect(g.port, NULL, 0);
	assert_true(fd >= 0);
	assert_true(gwp_send(fd, req, strlen(req)));
	bool eof;
	gwp_read_all(fd, buf, cap, 3000, &eof);
	close(fd);
	return eof;
}

static int count(const char *s, const char *what)
{
	int n = 0;
	for (const char *p = s; (p = strstr(p, what)); p += strlen(what))
		n++;
	return n;
}

/* A 400 from the gateway: one reply, OpenAI's error shape, connection closed. */
static void expect_refused(const char *name, const char *req, const char *why)
{
	char buf[8192];
	bool eof = exchange(req, buf, sizeof buf);
	if (strncmp(buf, "HTTP/1.1 400 ", 13) || !eof || !strstr(buf, "\r\nConnection: close\r\n") ||
	    count(buf, "HTTP/1.1 ") != 1 || !strstr(buf, "\"type\":\"invalid_request_error\"") ||
	    !strstr(buf, why))
		fail_msg("%s: expected one 400 naming '%s' and the connection closed%s, got:\n%s",
			 name, why, eof ? "" : " (it stayed open)", buf);
}

static void test_conflicting_lengths(void **state)
{
	(void)state;
	static const char why[] = "Content-Length headers with different values";
	expect_refused("5 then 7", "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
		       "Content-Length: 7\r\nContent-Type: application/json\r\n\r\n{\"a\":1}", why);
	/* 0 then 44: a second request in what one reading calls the body */
	expect_refused("smuggled", "POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
		       "Content-Length: 44\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", why);
}

static void test_transfer_encodings(void **state)
{
	(void)state;
	static const char why[] = "only a single 'chunked' is accepted";
	static const char *const te[] = {"gzip", "identity", "xchunked", "gzip, chunked",
					 "chunked, chunked", "Chunked2"};
	char req[512], name[64];
	for (size_t i = 0; i < sizeof te / sizeof te[0]; i++) {
		snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
			 "Transfer-Encoding: %s\r\nContent-Length: 2\r\n\r\n{}", te[i]);
		snprintf(name, sizeof name, "%s with Content-Length", te[i]);
		expect_refused(name, req, why);
		snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
			 "Transfer-Encoding: %s\r\n\r\n2\r\n{}\r\n0\r\n\r\n", te[i]);
		expect_refused(te[i], req, why);
	}
	expect_refused("two headers", "POST /tokenize HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
		       "chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", why);
	expect_refused("on a GET", "GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
		       why);
	expect_refused("chunked with Content-Length", "POST /tokenize HTTP/1.1\r\nHost: x\r\n"
		       "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		       "both Transfer-Encoding and Content-Length");
}

static void test_malformed_lengths(void **state)
{
	(void)state;
	static const char *const cl[] = {"-5", "12abc", "2, 2", "+2", "", "0x10"};
	char req[512], buf[8192];
	for (size_t i = 0; i < sizeof cl / sizeof cl[0]; i++) {
		snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
			 "Content-Length: %s\r\n\r\n{}", cl[i]);
		bool eof = exchange(req, buf, sizeof buf);
		/* libmicrohttpd's own reply: a 400 whose first header block says close */
		char *end = strstr(buf, "\r\n\r\n");
		if (strncmp(buf, "HTTP/1.1 400 ", 13) || !eof || !end ||
		    !strstr(buf, "\r\nConnection: close\r\n") ||
		    strstr(buf, "\r\nConnection: close\r\n") > end)
			fail_msg("Content-Length '%s': expected a 400 and the connection closed, got:\n%s",
				 cl[i], buf);
	}
}

static void test_sound_framing_still_works(void **state)
{
	(void)state;
	char buf[8192];
	static const char body[] = "{\"model\":\"s\",\"prompt\":\"hi\"}";
	char req[1024];
	/* equal duplicates are one length (RFC 9110 section 8.6) */
	snprintf(req, sizeof req, "POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: "
		 "application/json\r\nContent-Length: %zu\r\nContent-Length: %zu\r\n"
		 "Connection: close\r\n\r\n%s", strlen(body), strlen(body), body);
	exchange(req, buf, sizeof buf);
	assert_int_equal(strncmp(buf, "HTTP/1.1 200 ", 13), 0);
	assert_non_null(strstr(buf, "\"tokens\""));
	/* chunked */
	snprintf(req, sizeof req, "POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: "
		 "application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
		 "%zx\r\n%s\r\n0\r\n\r\n", strlen(body), body);
	exchange(req, buf, sizeof buf);
	assert_int_equal(strncmp(buf, "HTTP/1.1 200 ", 13), 0);
	assert_non_null(strstr(buf, "\"tokens\""));
	/* keep-alive: two requests on one connection, both answered, still open */
	int fd = gwp_connect(g.port, NULL, 0);
	assert_true(fd >= 0);
	snprintf(req, sizeof req, "POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Type: "
		 "application/json\r\nContent-Length: %zu\r\n\r\n%sGET /health HTTP/1.1\r\n"
		 "Host: x\r\n\r\n", strlen(body), body);
	assert_true(gwp_send(fd, req, strlen(req)));
	bool eof;
	buf[0] = '\0';
	for (int64_t end = gwp_ms() + 3000; count(buf, "HTTP/1.1 200 ") < 2 && gwp_ms() < end;)
		gwp_read_all(fd, buf + strlen(buf), sizeof buf - strlen(buf), 200, &eof);
	assert_int_equal(count(buf, "HTTP/1.1 200 "), 2);
	assert_false(gwp_closed(fd));
	close(fd);
}

static int setup(void **state)
{
	(void)state;
	dir = lt_tmpdir("framing");
	signal(SIGPIPE, SIG_IGN);
	fake_start(&w, "s");
	return gwp_start(&g, dir, &w, NULL);
}

static int teardown(void **state)
{
	(void)state;
	int st = lt_stop(&g.p, SIGTERM, 5000);
	fake_kill(&w);
	loom_free(dir);
	return st == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conflicting_lengths),
		cmocka_unit_test(test_transfer_encodings),
		cmocka_unit_test(test_malformed_lengths),
		cmocka_unit_test(test_sound_framing_still_works),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
