/* tests/support/harness.c — paths, temp dirs, child processes, HTTP (libcurl)
 * and a whole gateway+workers stack for loom's tests. See harness.h. */
#include "harness.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"

static char bufs[8][1024];
static int buf_next;

static char *next_buf(void)
{
	char *b = bufs[buf_next];
	buf_next = (buf_next + 1) % 8;
	return b;
}

static const char *env_or(const char *name, const char *dflt)
{
	const char *v = getenv(name);
	return (v && *v) ? v : dflt;
}

const char *lt_shared_path(const char *rel)
{
	char *b = next_buf();
	snprintf(b, sizeof bufs[0], "%s/%s", env_or("LOOM_SHARED", "../shared"), rel);
	return b;
}

const char *lt_bin_path(const char *prog)
{
	char *b = next_buf();
	snprintf(b, sizeof bufs[0], "%s/%s", env_or("LOOM_BIN_DIR", "build/bin"), prog);
	return b;
}

char *lt_tmpdir(const char *tag)
{
	static int seq;
	const char *base = env_or("LOOM_TMP", "build/tmp");
	char path[512];
	mkdir(base, 0755);
	snprintf(path, sizeof path, "%s/%s-%d-%d", base, tag, (int)getpid(), seq++);
	if (lt_sh("rm -rf '%s' && mkdir -p '%s'", path, path) != 0) {
		fprintf(stderr, "lt_tmpdir: cannot create %s\n", path);
		abort();
	}
	return loom_strdup(path);
}

int lt_sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	int st;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof cmd, fmt, ap);
	va_end(ap);
	fflush(stdout);
	fflush(stderr);
	st = system(cmd);
	if (st == -1)
		return -1;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}

int lt_spawn(lt_proc *p, const char *log_path, char *const argv[])
{
	pid_t pid;
	snprintf(p->log, sizeof p->log, "%s", log_path);
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execv(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	p->pid = pid;
	return 0;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int lt_stop(lt_proc *p, int sig, int timeout_ms)
{
	int st = 0;
	long deadline = now_ms() + timeout_ms;
	if (p->pid <= 0)
		return -1;
	kill(p->pid, sig);
	for (;;) {
		pid_t r = waitpid(p->pid, &st, WNOHANG);
		if (r == p->pid)
			break;
		if (r < 0) {
			p->pid = 0;
			return -1;
		}
		if (now_ms() > deadline) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &st, 0);
			break;
		}
		usleep(10000);
	}
	p->pid = 0;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}

void lt_proc_dump(const lt_proc *p)
{
	char cmd[700];
	fprintf(stderr, "---- last lines of %s ----\n", p->log);
	snprintf(cmd, sizeof cmd, "tail -n 30 '%s' >&2", p->log);
	if (system(cmd) != 0)
		fprintf(stderr, "(no log)\n");
}

/* Whether port is free on 0.0.0.0 (where the gateway listens) right now. */
static int port_free(int port)
{
	struct sockaddr_in a = { 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
	if (fd < 0)
		return 0;
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_ANY);
	a.sin_port = htons((uint16_t)port);
	ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
	close(fd);
	return ok;
}

/* A port below the kernel's ephemeral range: an ephemeral port handed out
 * here could become some connection's source port before the server that
 * was given it binds it (integration/test_admin once failed so: "cannot
 * listen on 0.0.0.0:52273"). Random in [10000, low end of
 * ip_local_port_range), free when checked, never the same twice in a
 * process; the ephemeral way as the fallback. */
int lt_free_port(void)
{
	static int given[256], n_given;
	int lo = 32768;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	if (f) {
		if (fscanf(f, "%d", &lo) != 1)
			lo = 32768;
		fclose(f);
	}
	unsigned seed = (unsigned)getpid() * 2654435761u ^ (unsigned)time(NULL) ^ (unsigned)n_given;
	for (int attempt = 0; lo > 11000 && attempt < 500; attempt++) {
		seed = seed * 1103515245u + 12345u;
		int port = 10000 + (int)((seed >> 8) % (unsigned)(lo - 10000)), seen = 0;
		for (int i = 0; i < n_given; i++)
			seen |= given[i] == port;
		if (seen || !port_free(port))
			continue;
		if (n_given < (int)(sizeof given / sizeof given[0]))
			given[n_given++] = port;
		return port;
	}
	struct sockaddr_in a = { 0 };
	socklen_t len = sizeof a;
	int port = -1;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* ---- HTTP ---- */

struct growbuf {
	char *p;
	size_t n, cap;
};

static size_t grow_append(void *data, size_t sz, size_t nm, void *ud)
{
	struct growbuf *g = ud;
	size_t add = sz * nm;
	if (g->n + add + 1 > g->cap) {
		size_t cap = (g->cap ? g->cap * 2 : 4096);
		while (cap < g->n + add + 1)
			cap *= 2;
		char *np = loom_realloc(g->p, cap);
		if (!np)
			return 0;
		g->p = np;
		g->cap = cap;
	}
	memcpy(g->p + g->n, data, add);
	g->n += add;
	g->p[g->n] = '\0';
	return add;
}

int lt_http(const char *method, const char *url, const char *body, const char *content_type,
	    long timeout_ms, lt_resp *out)
{
	static int inited;
	struct growbuf b = { 0 }, h = { 0 };
	struct curl_slist *hdrs = NULL;
	char ct[256];
	CURLcode cc;
	CURL *c;

	memset(out, 0, sizeof *out);
	if (!inited) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		inited = 1;
	}
	c = curl_easy_init();
	if (!c)
		return -1;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms ? timeout_ms : 60000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, grow_append);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, grow_append);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
	if (body) {
		snprintf(ct, sizeof ct, "Content-Type: %s",
			 content_type ? content_type : "application/json");
		hdrs = curl_slist_append(hdrs, ct);
		hdrs = curl_slist_append(hdrs, "Expect:");
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	out->body = b.p ? b.p : loom_strdup("");
	out->len = b.n;
	out->headers = h.p ? h.p : loom_strdup("");
	return cc == CURLE_OK ? 0 : -1;
}

void lt_resp_free(lt_resp *r)
{
	loom_free(r->body);
	loom_free(r->headers);
	memset(r, 0, sizeof *r);
}

/* ---- stack ---- */

int lt_stack_start(lt_stack *s, const char *const *models, int n_workers,
		   const char *const *extra_gw_args)
{
	return lt_stack_start2(s, models, n_workers, extra_gw_args, NULL);
}

/* Value following flag in a NULL-terminated argv fragment, or NULL. */
static const char *arg_value(const char *const *args, const char *flag)
{
	for (int j = 0; args && args[j]; j++)
		if (!strcmp(args[j], flag))
			return args[j + 1];
	return NULL;
}

static int has_arg(const char *const *args, const char *flag)
{
	for (int j = 0; args && args[j]; j++)
		if (!strcmp(args[j], flag))
			return 1;
	return 0;
}

/*
 * The gateway starts first: it creates the store (its own --store, else
 * DIR/store in the stack's temp dir) that the workers then open read-only
 * with the same --store, unless the caller gives workers --store or
 * --own-store itself.
 */
int lt_stack_start2(lt_stack *s, const char *const *models, int n_workers,
		    const char *const *extra_gw_args, const char *const *extra_wk_args)
{
	char *argv[64];
	char log[600], url[160], store[600];
	int argc, i, j;
	long deadline;
	static int stack_seq; /* two stacks in one second must not share ipc paths */

	memset(s, 0, sizeof *s);
	if (n_workers < 0 || n_workers > LT_MAX_WORKERS) /* 0: workers of the caller's */
		return -1;
	s->dir = lt_tmpdir("stack");
	s->n_workers = n_workers;
	for (i = 0; i < n_workers; i++)
		/* ipc paths must fit sun_path (~107 bytes): keep them in /tmp */
		snprintf(s->worker_url[i], sizeof s->worker_url[i], "ipc:///tmp/loom-t%d-%ld-%d-%d.ipc",
			 (int)getpid(), (long)time(NULL) % 100000, stack_seq, i);
	stack_seq++;
	if (arg_value(extra_gw_args, "--store"))
		snprintf(store, sizeof store, "%s", arg_value(extra_gw_args, "--store"));
	else
		snprintf(store, sizeof store, "%s/store", s->dir);

	s->port = lt_free_port();
	snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
	{
		char port[16], bin[512];
		argc = 0;
		snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-gateway"));
		snprintf(port, sizeof port, "%d", s->port);
		argv[argc++] = bin;
		argv[argc++] = "--port";
		argv[argc++] = port;
		if (!has_arg(extra_gw_args, "--store")) {
			argv[argc++] = "--store";
			argv[argc++] = store;
		}
		for (i = 0; i < n_workers; i++) {
			argv[argc++] = "--worker";
			argv[argc++] = s->worker_url[i];
		}
		for (j = 0; models[j] && argc < 40; j++) {
			argv[argc++] = "--model";
			argv[argc++] = (char *)models[j];
		}
		for (j = 0; extra_gw_args && extra_gw_args[j] && argc < 62; j++)
			argv[argc++] = (char *)extra_gw_args[j];
		argv[argc] = NULL;
		snprintf(log, sizeof log, "%s/gateway.log", s->dir);
		if (lt_spawn(&s->gw, log, argv) != 0)
			goto fail;
	}
	/* the store exists once the gateway has opened it */
	{
		char mdb[700];
		snprintf(mdb, sizeof mdb, "%s/data.mdb", store);
		deadline = now_ms() + 30000;
		while (access(mdb, F_OK) != 0 && now_ms() < deadline) {
			if (waitpid(s->gw.pid, NULL, WNOHANG) == s->gw.pid) {
				s->gw.pid = 0;
				goto fail;
			}
			usleep(20000);
		}
	}
	for (i = 0; i < n_workers; i++) {
		char bin[512];
		argc = 0;
		snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-worker"));
		argv[argc++] = bin;
		argv[argc++] = "--listen";
		argv[argc++] = s->worker_url[i];
		if (!has_arg(extra_wk_args, "--store") && !has_arg(extra_wk_args, "--own-store")) {
			argv[argc++] = "--store";
			argv[argc++] = store;
		}
		for (j = 0; models[j] && argc < 40; j++) {
			argv[argc++] = "--model";
			argv[argc++] = (char *)models[j];
		}
		for (j = 0; extra_wk_args && extra_wk_args[j] && argc < 62; j++)
			argv[argc++] = (char *)extra_wk_args[j];
		argv[argc] = NULL;
		snprintf(log, sizeof log, "%s/worker%d.log", s->dir, i);
		if (lt_spawn(&s->wk[i], log, argv) != 0)
			goto fail;
	}
	deadline = now_ms() + 60000;
	snprintf(url, sizeof url, "%s/ready", s->url);
	while (now_ms() < deadline) {
		lt_resp r;
		int ok = lt_http("GET", url, NULL, NULL, 1000, &r) == 0 && r.status == 200;
		lt_resp_free(&r);
		if (ok)
			return 0;
		if (waitpid(s->gw.pid, NULL, WNOHANG) == s->gw.pid) {
			s->gw.pid = 0;
			break;
		}
		usleep(50000);
	}
fail:
	fprintf(stderr, "lt_stack_start: stack did not become ready\n");
	lt_proc_dump(&s->gw);
	for (i = 0; i < n_workers; i++)
		lt_proc_dump(&s->wk[i]);
	lt_stack_stop(s);
	return -1;
}

void lt_stack_stop(lt_stack *s)
{
	int i;
	if (s->gw.pid > 0)
		lt_stop(&s->gw, SIGTERM, 5000);
	for (i = 0; i < s->n_workers; i++) {
		if (s->wk[i].pid > 0)
			lt_stop(&s->wk[i], SIGTERM, 5000);
		if (!strncmp(s->worker_url[i], "ipc://", 6))
			unlink(s->worker_url[i] + 6);
	}
	loom_free(s->dir);
	s->dir = NULL;
}
