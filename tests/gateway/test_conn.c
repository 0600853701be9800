/*
 * tests/gateway/test_conn.c — the gateway's connection limits over real TCP
 * (a loom-gateway process, a fake worker in this process):
 * - 1,500 idle connections from one client address (127.0.0.2) with the
 *   default settings: /health and a completion from another address still
 *   answer within 1 s, and the connections past the per-address cap (1024)
 *   are closed at once;
 * - --connection-timeout-s: an idle connection and a half-sent request are
 *   closed after it; with --max-connections full of idle connections, a new
 *   client gets in once the timeout has closed them;
 * - --max-connections-per-ip: the next connection from a full address is
 *   closed while another address is served;
 * - a stream whose client stops reading is ended by the timeout (the
 *   gateway cancels the request on the worker) instead of held forever.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>

#include "tests/gateway/gw_proc.h"

#define FLOOD 1500
#define PER_IP_DEFAULT 1024

static char *dir;

static const char completion[] = "{\"model\":\"s\",\"prompt\":\"hi\",\"max_tokens\":2}";

/* Of the connections fds, those the gateway has closed. */
static int count_closed(const int *fds, int n)
{
	int closed = 0;
	for (int i = 0; i < n; i++)
		closed += fds[i] >= 0 && gwp_closed(fds[i]);
	return closed;
}

static void close_all(int *fds, int n)
{
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static void test_idle_flood(void **state)
{
	(void)state;
	if (!gwp_fd_limit(FLOOD + 256))
		skip(); /* the hard open-file limit is below what the test needs */
	fake w;
	fake_start(&w, "s");
	w.auto_ids[0] = 432;
	w.auto_ids[1] = 383;
	w.n_auto = 2;
	w.auto_finish = LOOM_FINISH_LENGTH;
	gwp g;
	assert_int_equal(gwp_start(&g, dir, &w, NULL), 0); /* default limits */
	static int fds[FLOOD];
	for (int i = 0; i < FLOOD; i++) {
		fds[i] = gwp_connect(g.port, "127.0.0.2", 0);
		assert_true(fds[i] >= 0);
	}
	/* the gateway accepts them all and closes those over the per-address cap
	 * (checked below, after the requests that must get through) */
	int closed = 0;
	for (int64_t end = gwp_ms() + 3000; gwp_ms() < end; usleep(100 * 1000))
		if ((closed = count_closed(fds, FLOOD)) >= FLOOD - PER_IP_DEFAULT)
			break;
	lt_resp r;
	int64_t t0 = gwp_ms();
	assert_int_equal(gwp_http(&g, "GET", "/health", NULL, 1000, &r), 200);
	lt_resp_free(&r);
	assert_true(gwp_ms() - t0 < 1000);
	t0 = gwp_ms();
	assert_int_equal(gwp_http(&g, "POST", "/v1/completions", completion, 1000, &r), 200);
	assert_non_null(strstr(r.body, "\"text\":\", there\""));
	lt_resp_free(&r);
	assert_true(gwp_ms() - t0 < 1000);
	/* those over the cap were closed, the idle ones within it are still open
	 * (no timeout yet) */
	assert_int_equal(count_closed(fds, FLOOD), FLOOD - PER_IP_DEFAULT);
	close_all(fds, FLOOD);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

/* Waits up to ms for the gateway to close fd; true when it did. */
static bool closed_within(int fd, long ms)
{
	for (int64_t end = gwp_ms() + ms; gwp_ms() < end; usleep(50 * 1000))
		if (gwp_closed(fd))
			return true;
	return false;
}

static void test_timeout_and_caps(void **state)
{
	(void)state;
	fake w;
	fake_start(&w, "s");
	gwp g;
	const char *args[] = {"--threads", "1", "--connection-timeout-s", "1",
			      "--max-connections", "6", "--max-connections-per-ip", "3", NULL};
	assert_int_equal(gwp_start(&g, dir, &w, args), 0);
	/* idle, and half-sent: closed after about a second */
	int idle = gwp_connect(g.port, NULL, 0), half = gwp_connect(g.port, NULL, 0);
	assert_true(idle >= 0 && half >= 0);
	static const char partial[] = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
				      "Content-Length: 100\r\n\r\n{\"model\":";
	assert_true(gwp_send(half, partial, sizeof partial - 1));
	int64_t t0 = gwp_ms();
	assert_true(closed_within(idle, 4000));
	assert_true(closed_within(half, 4000));
	assert_true(gwp_ms() - t0 >= 500);
	close(idle);
	close(half);
	/* per address: the 4th connection from 127.0.0.2 is closed at once */
	int a[4];
	for (int i = 0; i < 3; i++)
		assert_true((a[i] = gwp_connect(g.port, "127.0.0.2", 0)) >= 0);
	usleep(200 * 1000);
	assert_true((a[3] = gwp_connect(g.port, "127.0.0.2", 0)) >= 0);
	assert_true(closed_within(a[3], 500));
	for (int i = 0; i < 3; i++)
		assert_false(gwp_closed(a[i]));
	lt_resp r;
	assert_int_equal(gwp_http(&g, "GET", "/health", NULL, 1000, &r), 200);
	lt_resp_free(&r);
	/* all 6 taken (3 + 3 from two addresses): a new client waits until the
	 * timeout frees slots, then gets in */
	int b[3];
	for (int i = 0; i < 3; i++)
		assert_true((b[i] = gwp_connect(g.port, "127.0.0.3", 0)) >= 0);
	usleep(200 * 1000);
	t0 = gwp_ms();
	assert_int_equal(gwp_http(&g, "GET", "/health", NULL, 5000, &r), 200);
	lt_resp_free(&r);
	assert_true(gwp_ms() - t0 < 4000);
	close_all(a, 4);
	close_all(b, 3);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

/* Sends n STEPs of 64 tokens each for request req (about 550 bytes of SSE each). */
static void push_tokens(fake *w, uint64_t req, int n)
{
	int32_t ids[64];
	for (int i = 0; i < 64; i++)
		ids[i] = 383; /* " there" */
	for (int i = 0; i < n; i++) {
		loom_step_item it = {.req = req, .n_ids = 64, .ids = ids,
				     .finish = LOOM_FINISH_NONE, .n_prompt = w->last_n_prompt};
		loom_msg m = {.type = LOOM_MSG_STEP, .u.step = {.n_items = 1, .items = &it}};
		send_to_gateway(w, &m);
	}
}

static void test_stalled_stream(void **state)
{
	(void)state;
	fake w;
	fake_start(&w, "s");
	gwp g;
	const char *args[] = {"--connection-timeout-s", "2", NULL};
	assert_int_equal(gwp_start(&g, dir, &w, args), 0);
	/* a client with a small receive window that reads nothing after the request */
	int fd = gwp_connect(g.port, NULL, 4096);
	assert_true(fd >= 0);
	char req[512], body[] = "{\"model\":\"s\",\"prompt\":\"hi\",\"stream\":true,"
				"\"max_tokens\":500}";
	snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
		 "application/json\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
	assert_true(gwp_send(fd, req, strlen(req)));
	for (int64_t end = gwp_ms() + 3000; fake_nsub(&w) < 1 && gwp_ms() < end;)
		usleep(20 * 1000);
	assert_int_equal(fake_nsub(&w), 1);
	/* far more than the socket buffers hold (the kernel grows the gateway's
	 * send buffer up to tcp_wmem's 4 MiB), and never the end: its writes stall
	 * (the gateway leaves max_tokens to the worker) */
	push_tokens(&w, w.submits[0], 12000);
	int64_t t0 = gwp_ms();
	while (fake_count(&w, true, w.submits[0]) == 0 && gwp_ms() - t0 < 8000)
		usleep(50 * 1000);
	assert_int_equal(fake_count(&w, true, w.submits[0]), 1);
	/* the gateway closed it: whatever was buffered, then the end without [DONE] */
	static char buf[1 << 16];
	bool eof = false, done = false;
	for (int64_t end = gwp_ms() + 10000; !eof && gwp_ms() < end;)
		done |= gwp_read_all(fd, buf, sizeof buf, 1000, &eof) && strstr(buf, "[DONE]");
	assert_true(eof);
	assert_false(done);
	close(fd);
	lt_resp r;
	assert_int_equal(gwp_http(&g, "GET", "/health", NULL, 1000, &r), 200);
	lt_resp_free(&r);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

static int setup(void **state)
{
	(void)state;
	dir = lt_tmpdir("conn");
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	loom_free(dir);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_idle_flood),
		cmocka_unit_test(test_timeout_and_caps),
		cmocka_unit_test(test_stalled_stream),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
