/*
 * tests/gateway/gw_proc.h — a loom-gateway process in front of a fake worker
 * (fake_worker.h), and raw TCP clients for the tests that must send exact
 * bytes or hold connections open: bound to a chosen loopback source address
 * (127.0.0.2 is another client address to the gateway), reading with a
 * deadline, telling whether the gateway closed the connection. Header-only
 * (static functions), like fake_worker.h.
 */
#ifndef TESTS_GATEWAY_GW_PROC_H
#define TESTS_GATEWAY_GW_PROC_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tests/gateway/fake_worker.h"
#include "tests/support/harness.h"

typedef struct gwp {
	lt_proc p;
	int port;
	char url[64];
} gwp;

static inline int64_t gwp_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Starts loom-gateway in dir on a free port with model "s" (stories260k's
 * folder, plain template), the fake worker w, and extra arguments
 * (NULL-terminated or NULL, at most 16). Waits for /ready. 0 or -1 (log
 * printed).
 */
static inline int gwp_start(gwp *g, const char *dir, fake *w, const char *const *extra)
{
	char log[600], port[16], bin[512], store[600], model[600], worker[160];
	char *argv[40];
	int k = 0;
	static int seq;
	g->port = lt_free_port();
	snprintf(port, sizeof port, "%d", g->port);
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-gateway"));
	snprintf(store, sizeof store, "%s/store-%d-%d", dir, g->port, seq);
	snprintf(log, sizeof log, "%s/gw-%d-%d.log", dir, g->port, seq++);
	snprintf(model, sizeof model, "s=%s", lt_shared_path("models/stories260k"));
	snprintf(worker, sizeof worker, "%s", w->url);
	argv[k++] = bin;
	argv[k++] = "--port";
	argv[k++] = port;
	argv[k++] = "--store";
	argv[k++] = store;
	argv[k++] = "--worker";
	argv[k++] = worker;
	argv[k++] = "--model";
	argv[k++] = model;
	argv[k++] = "--chat-template";
	argv[k++] = "s=plain";
	for (int i = 0; extra && extra[i] && i < 16; i++)
		argv[k++] = (char *)extra[i];
	argv[k] = NULL;
	if (lt_spawn(&g->p, log, argv))
		return -1;
	snprintf(g->url, sizeof g->url, "http://127.0.0.1:%d", g->port);
	char ready[128];
	snprintf(ready, sizeof ready, "%s/ready", g->url);
	int64_t end = gwp_ms() + 15000;
	for (;;) {
		lt_resp r;
		int ok = lt_http("GET", ready, NULL, NULL, 1000, &r) == 0 && r.status == 200;
		lt_resp_free(&r);
		if (ok)
			return 0;
		if (gwp_ms() > end) {
			lt_proc_dump(&g->p);
			return -1;
		}
		usleep(50 * 1000);
	}
}

/* HTTP status of method path (body may be NULL) within timeout_ms; 0 = none. */
static inline long gwp_http(gwp *g, const char *method, const char *path, const char *body,
			    long timeout_ms, lt_resp *r)
{
	char url[256];
	snprintf(url, sizeof url, "%s%s", g->url, path);
	if (lt_http(method, url, body, NULL, timeout_ms, r) != 0)
		return 0;
	return r->status;
}

/* Raises this process's soft open-file limit to at least want (up to the
 * hard limit). False when the hard limit is lower. */
static inline bool gwp_fd_limit(rlim_t want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl))
		return false;
	if (rl.rlim_cur >= want)
		return true;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
		return false;
	rl.rlim_cur = want;
	return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

/* A TCP connection to 127.0.0.1:port from source address src (NULL =
 * any), optionally with a receive buffer of rcvbuf bytes (0 = default).
 * The fd, or -1. */
static inline int gwp_connect(int port, const char *src, int rcvbuf)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	if (src) {
		struct sockaddr_in a = {.sin_family = AF_INET};
		inet_pton(AF_INET, src, &a.sin_addr);
		if (bind(fd, (struct sockaddr *)&a, sizeof a)) {
			close(fd);
			return -1;
		}
	}
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&to, sizeof to)) {
		close(fd);
		return -1;
	}
	return fd;
}

static inline bool gwp_send(int fd, const char *data, size_t n)
{
	while (n) {
		ssize_t k = send(fd, data, n, MSG_NOSIGNAL);
		if (k <= 0)
			return false;
		data += k;
		n -= (size_t)k;
	}
	return true;
}

/* True when the peer has closed (or reset) fd: a read without waiting
 * sees the end. Data still pending is read and dropped. */
static inline bool gwp_closed(int fd)
{
	char b[4096];
	for (;;) {
		ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
		if (n == 0)
			return true;
		if (n < 0)
			return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
	}
}

/*
 * Reads from fd into buf (cap bytes, NUL-terminated) until the peer closes
 * or timeout_ms passes. Returns the bytes read; *eof tells whether the peer
 * closed (a reset counts as closed).
 */
static inline size_t gwp_read_all(int fd, char *buf, size_t cap, long timeout_ms, bool *eof)
{
	size_t n = 0;
	int64_t end = gwp_ms() + timeout_ms;
	*eof = false;
	while (n + 1 < cap) {
		int64_t left = end - gwp_ms();
		if (left <= 0)
			break;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, (int)left) <= 0)
			break;
		ssize_t k = recv(fd, buf + n, cap - 1 - n, 0);
		if (k <= 0) {
			*eof = true;
			break;
		}
		n += (size_t)k;
	}
	buf[n] = '\0';
	return n;
}

#endif
