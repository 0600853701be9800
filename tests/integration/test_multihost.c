/*
 * tests/integration/test_multihost.c — a gateway and two workers on hosts of
 * their own (issue 15 item 6): three network namespaces on a private bridge
 * (tests/support/netns: 10.231.0.1 gateway, .2 and .3 workers), the link
 * over tls+tcp:// with mutual TLS (a CA for the gateway's certificate, one
 * for the workers', each certificate naming its host's address), every
 * worker with its own store (--own-store, no --model: the model's blob and
 * the adapters' come from the gateway over the link). The test is an HTTP
 * client on the gateway's host, though not on its loopback: the admin API
 * and /metrics take the admin token. A single-host stack (one worker over
 * ipc://, the gateway's store read directly) gives the reference tokens.
 *  - placement: gateway and workers run in three namespaces apart from the
 *    test's starting one; each worker received the model's bytes over its
 *    eth0 and holds the model's blob in its own store;
 *  - a request set (greedy prompts streamed and not, one seeded sampled)
 *    gives the single-host tokens, with both workers generating;
 *  - worker loss: one worker SIGKILLed mid-stream: every request completes
 *    with the reference tokens, at least one resumed mid-generation on the
 *    other host; the worker restarts (its store kept) and is live again.
 *    It comes back cold (a worker without --model loads a model when a
 *    request first needs it), and the SLO router, which ranks a model's
 *    residency before the load, gives it nothing while the warm worker
 *    meets the TTFT budget; so the next set usually runs on the warm one;
 *  - partition: the worker with the requests has its cable unplugged at the
 *    switch mid-stream (no FIN, no RST: the heartbeat gives up after a
 *    second): the same, the requests now resuming on the restarted worker
 *    when it was the warm one that had them; plugged back, the worker is
 *    live again on its old connection;
 *  - registry replace: an adapter imported through the admin API gives the
 *    reference tokens of its weights on both workers, each of which fetched
 *    its blob into its own store; replaced (?replace=true) by other weights,
 *    the next requests give the new weights' reference on both workers and
 *    both stores hold the new blob.
 * Skipped, with the reason, where the machine allows no network namespaces
 * (not root, no iproute2, a container without CAP_NET_ADMIN).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "store/store.h"
#include "tests/integration/http_ex.h"
#include "tests/support/harness.h"
#include "tests/support/netns.h"

#define N_REQ 6
#define LONG_TOKENS 440 /* the loss cases: long enough to be cut mid-stream */
#define SHORT_TOKENS 48
#define TOKEN "multihost-admin-token"
#define AUTH "Bearer " TOKEN
#define WK_PORT 5555

static lt_net net;
static const char *const nodes[] = {"gw", "w0", "w1"};
static char skip_why[512];
static char tmp[PATH_MAX], pki[PATH_MAX + 8], stories[PATH_MAX], model_arg[PATH_MAX + 16];
static char base[64];                 /* http://10.231.0.1:8080 */
static lt_proc gw, wk[2];
static char wk_store[2][PATH_MAX + 16];
static lt_stack ref;                  /* single host: the reference */
static bool ref_up;
static ino_t start_ns;                /* the namespace the test started in */

/* The request set: [i] prompt, stream?, sampled? */
static const struct {
	const char *prompt;
	bool stream;
	bool sampled;
} reqs[N_REQ] = {
	{"Once upon a time", true, false},
	{"The little dog", true, false},
	{"Lily and Tom went to the park", false, false},
	{"One day, a bird", true, false},
	{"The sun was hot and", false, false},
	{"Once upon a time", true, true}, /* temperature 0.8, top_p 0.9, seed 42 */
};

typedef struct run {
	const char *url;       /* the gateway */
	const char *model;
	int max_tokens;
	int i;
	int32_t ids[LONG_TOKENS + 8];
	size_t n;
	char err[512];         /* "" = fine */
} run;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define SKIP_WITHOUT_NET()                                               \
	do {                                                             \
		if (skip_why[0]) {                                       \
			print_message("skipped: %s\n", skip_why);        \
			skip();                                          \
		}                                                        \
	} while (0)

/* ---- requests ---- */

static void append_ids(run *r, json_t *arr)
{
	size_t k;
	json_t *v;
	json_array_foreach(arr, k, v) {
		if (r->n < sizeof r->ids / sizeof r->ids[0])
			r->ids[r->n] = (int32_t)json_integer_value(v);
		r->n++;
	}
}

/* An SSE body: the token ids of every data event in order; an error event,
 * a finish other than "length" or no [DONE] is an error. */
static void parse_stream(run *r, const char *body)
{
	bool done = false;
	const char *finish = NULL;
	for (const char *p = body; (p = strstr(p, "data: "));) {
		p += 6;
		const char *end = strstr(p, "\n\n");
		if (!end)
			end = p + strlen(p);
		if (!strncmp(p, "[DONE]", 6)) {
			done = true;
			p = end;
			continue;
		}
		json_t *j = json_loadb(p, (size_t)(end - p), 0, NULL);
		if (!j || json_object_get(j, "error")) {
			snprintf(r->err, sizeof r->err, "bad or error event: %.200s", p);
			json_decref(j);
			return;
		}
		json_t *c = json_array_get(json_object_get(j, "choices"), 0);
		append_ids(r, json_object_get(c, "token_ids"));
		const char *f = json_string_value(json_object_get(c, "finish_reason"));
		if (f)
			finish = f[0] == 'l' ? "length" : "other";
		json_decref(j);
		p = end;
	}
	if (!done)
		snprintf(r->err, sizeof r->err, "the stream did not end with data: [DONE]");
	else if (!finish || strcmp(finish, "length"))
		snprintf(r->err, sizeof r->err, "finish_reason %s, want length",
			 finish ? finish : "none");
}

static void *run_one(void *arg)
{
	run *r = arg;
	char body[700], url[128];
	lt_resp resp;
	snprintf(body, sizeof body,
		 "{\"model\":\"%s\",\"prompt\":\"%s\",\"max_tokens\":%d,\"ignore_eos\":true,"
		 "\"return_token_ids\":true,\"stream\":%s,%s}",
		 r->model, reqs[r->i].prompt, r->max_tokens, reqs[r->i].stream ? "true" : "false",
		 reqs[r->i].sampled ? "\"temperature\":0.8,\"top_p\":0.9,\"seed\":42"
				    : "\"temperature\":0");
	snprintf(url, sizeof url, "%s/v1/completions", r->url);
	r->n = 0;
	r->err[0] = '\0';
	if (lt_http("POST", url, body, NULL, 60000, &resp) != 0) {
		snprintf(r->err, sizeof r->err, "transport failure");
	} else if (resp.status != 200) {
		snprintf(r->err, sizeof r->err, "HTTP %ld: %.300s", resp.status, resp.body);
	} else if (reqs[r->i].stream) {
		parse_stream(r, resp.body);
	} else {
		json_t *j = json_loads(resp.body, 0, NULL);
		json_t *c = json_array_get(json_object_get(j, "choices"), 0);
		append_ids(r, json_object_get(c, "token_ids"));
		const char *f = json_string_value(json_object_get(c, "finish_reason"));
		if (!j || !f || strcmp(f, "length"))
			snprintf(r->err, sizeof r->err, "bad response: %.300s", resp.body);
		json_decref(j);
	}
	lt_resp_free(&resp);
	return NULL;
}

/* Starts the whole set against url, each request in a thread of its own. */
static void start_set(run *runs, pthread_t *th, const char *url, const char *model, int max_tokens)
{
	for (int i = 0; i < N_REQ; i++) {
		runs[i].url = url;
		runs[i].model = model;
		runs[i].max_tokens = max_tokens;
		runs[i].i = i;
		assert_int_equal(pthread_create(&th[i], NULL, run_one, &runs[i]), 0);
	}
}

static void join_set(pthread_t *th)
{
	for (int i = 0; i < N_REQ; i++)
		pthread_join(th[i], NULL);
}

static void run_set(run *runs, const char *url, const char *model, int max_tokens)
{
	pthread_t th[N_REQ];
	start_set(runs, th, url, model, max_tokens);
	join_set(th);
	for (int i = 0; i < N_REQ; i++)
		if (runs[i].err[0])
			fail_msg("%s, %s, request %d (%s): %s", url, model, i, reqs[i].prompt,
				 runs[i].err);
}

/* Every run has exactly the reference's tokens. */
static void expect_same(const run *runs, const run *want, const char *what)
{
	for (int i = 0; i < N_REQ; i++) {
		if (runs[i].err[0])
			fail_msg("%s, request %d (%s): %s", what, i, reqs[i].prompt, runs[i].err);
		if (runs[i].n != want[i].n)
			fail_msg("%s, request %d (%s): %zu tokens, the single-host run had %zu", what,
				 i, reqs[i].prompt, runs[i].n, want[i].n);
		for (size_t k = 0; k < runs[i].n; k++)
			if (runs[i].ids[k] != want[i].ids[k])
				fail_msg("%s, request %d (%s): token %zu is %d, the single-host run "
					 "had %d", what, i, reqs[i].prompt, k, runs[i].ids[k],
					 want[i].ids[k]);
	}
}

/* ---- the admin API and /metrics, with the token (the client is not on loopback) ---- */

static long admin(const char *method, const char *path, const char *body, lt_resp *r)
{
	char url[256];
	snprintf(url, sizeof url, "%s%s", base, path);
	hx_req q = {.method = method, .url = url, .body = body, .auth = AUTH, .timeout_ms = 30000};
	long st = hx_do(&q, r);
	if (!st)
		fail_msg("%s %s: %s", method, path, q.err);
	return st;
}

static char *metrics(void)
{
	lt_resp r;
	if (admin("GET", "/metrics", NULL, &r) != 200)
		fail_msg("GET /metrics: %ld %s", r.status, r.body);
	char *t = r.body;
	r.body = NULL;
	lt_resp_free(&r);
	return t;
}

/* The first sample of family name whose labels contain label (NULL: one
 * without labels), or -1. */
static double metric_in(const char *text, const char *name, const char *label)
{
	size_t nl = strlen(name);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, name, nl) || (p[nl] != ' ' && p[nl] != '{'))
			continue;
		const char *sp = p + nl, *eol = strchr(p, '\n');
		if (*sp == '{') {
			const char *close = strchr(sp, '}');
			if (!label || !close || (eol && close > eol))
				continue;
			char lab[512];
			snprintf(lab, sizeof lab, "%.*s", (int)(close - sp), sp);
			if (!strstr(lab, label))
				continue;
			sp = close + 1;
		} else if (label) {
			continue;
		}
		return strtod(sp, NULL);
	}
	return -1;
}

static double metric(const char *name, const char *label)
{
	char *t = metrics();
	double v = metric_in(t, name, label);
	loom_free(t);
	return v;
}

static const char *wlabel(int i)
{
	static char buf[2][32];
	snprintf(buf[i], sizeof buf[i], "worker=\"wk%d\"", i);
	return buf[i];
}

static void wait_up(int i, bool up, int timeout_ms)
{
	for (int64_t end = now_ms() + timeout_ms; now_ms() < end; usleep(50 * 1000))
		if ((metric("loom_worker_up", wlabel(i)) == 1) == up)
			return;
	lt_proc_dump(&gw);
	lt_proc_dump(&wk[i]);
	fail_msg("worker %d did not become %s within %d ms", i, up ? "live" : "dead", timeout_ms);
}

/* Tokens each worker generated, once STATS (sent with the heartbeat) have
 * caught up: the same over 0.5 s. */
static void tokens_settled(double t[2])
{
	for (int k = 0; k < 40; k++) {
		double u[2];
		char *m = metrics();
		for (int i = 0; i < 2; i++)
			t[i] = metric_in(m, "loom_worker_tokens_generated_total", wlabel(i));
		loom_free(m);
		usleep(500 * 1000);
		m = metrics();
		for (int i = 0; i < 2; i++)
			u[i] = metric_in(m, "loom_worker_tokens_generated_total", wlabel(i));
		loom_free(m);
		if (t[0] == u[0] && t[1] == u[1])
			return;
	}
	fail_msg("the workers' token counters never settled");
}

/* The worker to take down while the set runs: one with requests in flight
 * while the other has some too (the router spreads a burst over equal
 * workers), else, after 150 ms, whichever has some (a worker that came back
 * cold gets nothing while a warm one meets the TTFT budget: the SLO router
 * ranks the model's residency first). */
static int wait_victim(int prefer)
{
	for (int64_t t0 = now_ms(); now_ms() < t0 + 10000; usleep(5 * 1000)) {
		char *t = metrics();
		bool busy[2];
		for (int i = 0; i < 2; i++)
			busy[i] = metric_in(t, "loom_worker_requests_in_flight", wlabel(i)) >= 1;
		loom_free(t);
		if (busy[0] && busy[1])
			return prefer;
		if (now_ms() > t0 + 150 && (busy[0] || busy[1])) {
			fprintf(stderr, "the requests run on worker %d alone\n", busy[0] ? 0 : 1);
			return busy[0] ? 0 : 1;
		}
	}
	fail_msg("no request ever ran on a worker");
	return -1;
}

/* Resumptions the gateway logged after more than 0 tokens. */
static int resumed_mid_stream(void)
{
	char line[1024];
	int n = 0;
	FILE *f = fopen(gw.log, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f)) {
		const char *p = strstr(line, "resumed on worker");
		const char *a = p ? strstr(p, " after ") : NULL;
		n += a && atoi(a + 7) > 0;
	}
	fclose(f);
	return n;
}

/* The sha256 (hex) of what GET path lists under name. */
static void listed_sha(const char *path, const char *name, char hex[65])
{
	lt_resp r;
	assert_int_equal(admin("GET", path, NULL, &r), 200);
	json_t *j = json_loads(r.body, 0, NULL);
	json_t *list = json_is_array(j) ? j : json_object_get(j, "data");
	size_t k;
	json_t *v;
	hex[0] = '\0';
	json_array_foreach(list, k, v) {
		const char *n = json_string_value(json_object_get(v, "name"));
		if (!n)
			n = json_string_value(json_object_get(v, "id"));
		const char *s = json_string_value(json_object_get(v, "sha256"));
		if (n && s && !strcmp(n, name) && strlen(s) == 64)
			snprintf(hex, 65, "%s", s);
	}
	if (!hex[0])
		fail_msg("GET %s lists no sha256 for %s: %.500s", path, name, r.body);
	json_decref(j);
	lt_resp_free(&r);
}

/* True when worker i's own store holds the blob. */
static bool store_has(int i, const char *hex)
{
	uint8_t sha[32];
	for (int k = 0; k < 32; k++) {
		unsigned b;
		sscanf(hex + 2 * k, "%2x", &b);
		sha[k] = (uint8_t)b;
	}
	st_store *s;
	if (st_open(wk_store[i], ST_RDONLY | ST_NOSWEEP, &s))
		fail_msg("cannot open worker %d's store %s", i, wk_store[i]);
	int has = st_blob_has(s, sha);
	st_close(s);
	return has == 1;
}

/* ---- the hosts ---- */

static int file_ino(const char *path, ino_t *ino)
{
	struct stat st;
	if (stat(path, &st))
		return -1;
	*ino = st.st_ino;
	return 0;
}

static void worker_start(int i, const char *log_name)
{
	char bin[512], url[64], id[16], log[PATH_MAX + 64], c[PATH_MAX + 32], k[PATH_MAX + 32],
		a[PATH_MAX + 32];
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-worker"));
	snprintf(url, sizeof url, "tls+tcp://%s:%d", net.addr[1 + i], WK_PORT);
	snprintf(id, sizeof id, "wk%d", i);
	snprintf(log, sizeof log, "%s/%s", tmp, log_name);
	snprintf(c, sizeof c, "%s/wk%d.pem", pki, i);
	snprintf(k, sizeof k, "%s/wk%d.key", pki, i);
	snprintf(a, sizeof a, "%s/gwca.pem", pki);
	char *argv[] = {bin, "--listen", url, "--own-store", wk_store[i], "--id", id,
			"--tls-cert", c, "--tls-key", k, "--tls-ca", a, NULL};
	assert_int_equal(lt_net_spawn(&net, 1 + i, &wk[i], log, argv), 0);
}

static int gateway_start(void)
{
	char bin[512], store[PATH_MAX + 16], log[PATH_MAX + 16], w0[64], w1[64], c[PATH_MAX + 32],
		k[PATH_MAX + 32], a[PATH_MAX + 32];
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-gateway"));
	snprintf(store, sizeof store, "%s/gstore", tmp);
	snprintf(log, sizeof log, "%s/gateway.log", tmp);
	snprintf(w0, sizeof w0, "tls+tcp://%s:%d", net.addr[1], WK_PORT);
	snprintf(w1, sizeof w1, "tls+tcp://%s:%d", net.addr[2], WK_PORT);
	snprintf(c, sizeof c, "%s/gw.pem", pki);
	snprintf(k, sizeof k, "%s/gw.key", pki);
	snprintf(a, sizeof a, "%s/wkca.pem", pki);
	char *argv[] = {bin, "--host", net.addr[0], "--port", "8080", "--store", store,
			"--model", model_arg, "--worker", w0, "--worker", w1,
			"--link-tls-cert", c, "--link-tls-key", k, "--link-tls-ca", a,
			"--admin-token", TOKEN, "--adapter-dir", tmp, NULL};
	return lt_net_spawn(&net, 0, &gw, log, argv);
}

static bool ready_within(long ms)
{
	char url[96];
	snprintf(url, sizeof url, "%s/ready", base);
	for (int64_t end = now_ms() + ms; now_ms() < end; usleep(100 * 1000)) {
		lt_resp r;
		long st = lt_http("GET", url, NULL, NULL, 2000, &r) == 0 ? r.status : 0;
		lt_resp_free(&r);
		if (st == 200)
			return true;
	}
	return false;
}

static int setup(void **state)
{
	(void)state;
	char *t = lt_tmpdir("multihost");
	bool ok = realpath(t, tmp) && realpath(lt_shared_path("models/stories260k"), stories);
	loom_free(t);
	if (!ok)
		return -1;
	snprintf(model_arg, sizeof model_arg, "stories=%s", stories);
	if (file_ino("/proc/self/ns/net", &start_ns))
		return -1;
	if (lt_net_create(&net, nodes, 3, skip_why, sizeof skip_why)) {
		fprintf(stderr, "test_multihost: skipped: %s\n", skip_why);
		if (!skip_why[0])
			snprintf(skip_why, sizeof skip_why, "no network namespaces");
		return 0;
	}
	/* from here on, the test is a client on the gateway's host */
	if (lt_net_enter(&net, 0))
		return -1;
	snprintf(base, sizeof base, "http://%s:8080", net.addr[0]);
	snprintf(pki, sizeof pki, "%s/pki", tmp);
	for (int i = 0; i < 2; i++)
		snprintf(wk_store[i], sizeof wk_store[i], "%s/wstore%d", tmp, i);
	if (lt_sh("MKCERTS_SAN=IP:%s tests/support/mkcerts %s gwca gw && "
		  "MKCERTS_SAN=IP:%s tests/support/mkcerts %s wkca wk0 && "
		  "MKCERTS_SAN=IP:%s tests/support/mkcerts %s wkca wk1",
		  net.addr[0], pki, net.addr[1], pki, net.addr[2], pki))
		return -1;
	for (int i = 0; i < 2; i++)
		if (lt_sh("'%s' adapter --model '%s' --out '%s/ad%d' --rank 8 --alpha 16 "
			  "--targets q_proj,k_proj,v_proj,o_proj --seed %d >/dev/null",
			  lt_bin_path("loom-mkmodel"), stories, tmp, i, 70 + i))
			return -1;
	/* the reference: the same model and adapters on one host, over ipc:// */
	const char *models[] = {model_arg, NULL};
	const char *ref_gw[] = {"--adapter-dir", tmp, NULL};
	if (lt_stack_start2(&ref, models, 1, ref_gw, NULL))
		return -1;
	ref_up = true;
	for (int i = 0; i < 2; i++) {
		char url[128], body[PATH_MAX + 128];
		lt_resp r;
		snprintf(url, sizeof url, "%s/admin/adapters", ref.url);
		snprintf(body, sizeof body,
			 "{\"name\":\"v%d\",\"base_model\":\"stories\",\"path\":\"%s/ad%d\"}", i + 1,
			 tmp, i);
		int rc = lt_http("POST", url, body, NULL, 30000, &r);
		long st = r.status;
		lt_resp_free(&r);
		if (rc || (st != 200 && st != 201))
			return -1;
	}
	/* the hosts: workers first (they listen), then the gateway */
	for (int i = 0; i < 2; i++) {
		char log[32];
		snprintf(log, sizeof log, "worker%d.log", i);
		worker_start(i, log);
	}
	if (gateway_start() || !ready_within(60000)) {
		lt_proc_dump(&gw);
		lt_proc_dump(&wk[0]);
		lt_proc_dump(&wk[1]);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (gw.pid > 0)
		lt_stop(&gw, SIGTERM, 5000);
	for (int i = 0; i < 2; i++)
		if (wk[i].pid > 0)
			lt_stop(&wk[i], SIGTERM, 5000);
	if (ref_up)
		lt_stack_stop(&ref);
	if (!skip_why[0])
		lt_net_destroy(&net);
	return 0;
}

/* ---- cases ---- */

static run ref_long[N_REQ]; /* the reference set at LONG_TOKENS */

static void test_hosts_apart(void **state)
{
	(void)state;
	SKIP_WITHOUT_NET();
	wait_up(0, true, 30000);
	wait_up(1, true, 30000);
	char path[64];
	ino_t self, ns[3];
	assert_int_equal(file_ino("/proc/self/ns/net", &self), 0);
	const lt_proc *procs[3] = {&gw, &wk[0], &wk[1]};
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "/proc/%d/ns/net", (int)procs[i]->pid);
		assert_int_equal(file_ino(path, &ns[i]), 0);
		assert_true(ns[i] != start_ns);
	}
	assert_true(ns[0] == self);
	assert_true(ns[1] != ns[0] && ns[2] != ns[0] && ns[1] != ns[2]);
	/* the reference for the loss cases, while the machine is quiet */
	run_set(ref_long, ref.url, "stories", LONG_TOKENS);
	assert_memory_not_equal(ref_long[0].ids, ref_long[5].ids, 16 * sizeof(int32_t));
}

static void test_both_workers_give_the_reference(void **state)
{
	(void)state;
	SKIP_WITHOUT_NET();
	static run runs[N_REQ];
	double t0[2], t1[2];
	tokens_settled(t0);
	run_set(runs, base, "stories", LONG_TOKENS);
	expect_same(runs, ref_long, "undisturbed");
	tokens_settled(t1);
	fprintf(stderr, "tokens generated: worker 0 %g, worker 1 %g\n", t1[0] - t0[0],
		t1[1] - t0[1]);
	assert_true(t1[0] > t0[0] && t1[1] > t0[1]);
	assert_true(t1[0] - t0[0] + t1[1] - t0[1] >= N_REQ * LONG_TOKENS);
	/* each worker had the model's bytes come through its cable (the blob is
	 * fetched once the gateway, connected, announces the model) and keeps
	 * the blob in its store */
	struct stat st;
	char file[PATH_MAX + 32], hex[65];
	snprintf(file, sizeof file, "%s/model.safetensors", stories);
	assert_int_equal(stat(file, &st), 0);
	listed_sha("/admin/models", "stories", hex);
	for (int i = 0; i < 2; i++) {
		unsigned long long rx, tx;
		assert_int_equal(lt_net_bytes(wk[i].pid, &rx, &tx), 0);
		fprintf(stderr, "worker %d (%s): eth0 received %llu bytes, sent %llu\n", i,
			net.addr[1 + i], rx, tx);
		assert_true(rx >= (unsigned long long)st.st_size);
		assert_true(store_has(i, hex));
	}
}

static void test_worker_killed(void **state)
{
	(void)state;
	SKIP_WITHOUT_NET();
	static run runs[N_REQ];
	pthread_t th[N_REQ];
	double resumed0 = metric("loom_gateway_requests_resumed_total", NULL);
	int mid0 = resumed_mid_stream();
	start_set(runs, th, base, "stories", LONG_TOKENS);
	int v = wait_victim(0);
	usleep(60 * 1000); /* some tokens out */
	int64_t t0 = now_ms();
	assert_int_equal(kill(wk[v].pid, SIGKILL), 0);
	join_set(th);
	fprintf(stderr, "worker %d (%s) killed; the requests completed %lld ms later\n", v,
		net.addr[1 + v], (long long)(now_ms() - t0));
	lt_stop(&wk[v], SIGKILL, 1000);
	expect_same(runs, ref_long, "a worker killed");
	double resumed = metric("loom_gateway_requests_resumed_total", NULL) - resumed0;
	int mid = resumed_mid_stream() - mid0;
	fprintf(stderr, "%g request(s) resumed on the other host, %d mid-stream\n", resumed, mid);
	assert_true(resumed >= 1 && mid >= 1);
	assert_true(metric("loom_gateway_requests_lost_total", NULL) == 0);
	wait_up(v, false, 3000);
	/* restarted on its host with the store it had: it is live again (cold) */
	worker_start(v, v ? "worker1-restarted.log" : "worker0-restarted.log");
	wait_up(v, true, 30000);
}

static void test_worker_partitioned(void **state)
{
	(void)state;
	SKIP_WITHOUT_NET();
	static run runs[N_REQ];
	pthread_t th[N_REQ];
	double resumed0 = metric("loom_gateway_requests_resumed_total", NULL);
	start_set(runs, th, base, "stories", LONG_TOKENS);
	int v = wait_victim(1);
	usleep(60 * 1000);
	int64_t t0 = now_ms();
	assert_int_equal(lt_net_cable(&net, 1 + v, false), 0);
	join_set(th);
	int64_t dt = now_ms() - t0;
	fprintf(stderr, "worker %d (%s) unplugged; the requests completed %lld ms later\n", v,
		net.addr[1 + v], (long long)dt);
	bool frozen_out = metric("loom_worker_up", wlabel(v)) == 0;
	assert_int_equal(lt_net_cable(&net, 1 + v, true), 0);
	expect_same(runs, ref_long, "a worker unplugged");
	assert_true(frozen_out);
	assert_true(metric("loom_gateway_requests_resumed_total", NULL) - resumed0 >= 1);
	assert_true(dt >= 900); /* its requests waited for the heartbeat to give up */
	/* plugged back: its connection carries PINGs again, it is live */
	int64_t t1 = now_ms();
	wait_up(v, true, 30000);
	fprintf(stderr, "worker %d live again %lld ms after the cable went back\n", v,
		(long long)(now_ms() - t1));
	assert_int_equal(kill(wk[v].pid, 0), 0);
}

/* Imports tmp/DIR as adapter "x" on the multi-host gateway. */
static void import_x(const char *dir, bool replace)
{
	char body[PATH_MAX + 128];
	lt_resp r;
	snprintf(body, sizeof body,
		 "{\"name\":\"x\",\"base_model\":\"stories\",\"path\":\"%s/%s\"}", tmp, dir);
	long st = admin("POST", replace ? "/admin/adapters?replace=true" : "/admin/adapters", body,
			&r);
	if (st != 200 && st != 201)
		fail_msg("import %s as x: %ld %s", dir, st, r.body);
	lt_resp_free(&r);
}

/* The set over adapter x equals the reference version's on both workers,
 * which both hold x's blob in their own stores. */
static void x_on_both(const run *want, const char *what, char hex[65])
{
	static run runs[N_REQ];
	double t0[2], t1[2];
	for (int round = 0;; round++) {
		tokens_settled(t0);
		run_set(runs, base, "x", SHORT_TOKENS);
		expect_same(runs, want, what);
		tokens_settled(t1);
		if (t1[0] > t0[0] && t1[1] > t0[1])
			break;
		/* the router may keep a short burst on one worker: run it again */
		fprintf(stderr, "%s: only worker %d generated; again\n", what,
			t1[0] > t0[0] ? 0 : 1);
		if (round == 3)
			fail_msg("%s: the set never ran on both workers", what);
	}
	listed_sha("/admin/adapters", "x", hex);
	for (int i = 0; i < 2; i++)
		if (!store_has(i, hex))
			fail_msg("%s: worker %d's own store lacks x's blob %.16s..", what, i, hex);
}

static void test_registry_replace(void **state)
{
	(void)state;
	SKIP_WITHOUT_NET();
	static run want1[N_REQ], want2[N_REQ];
	char hex1[65], hex2[65];
	run_set(want1, ref.url, "v1", SHORT_TOKENS);
	run_set(want2, ref.url, "v2", SHORT_TOKENS);
	assert_memory_not_equal(want1[0].ids, want2[0].ids, 16 * sizeof(int32_t));
	import_x("ad0", false);
	x_on_both(want1, "adapter x, version 1", hex1);
	import_x("ad1", true);
	x_on_both(want2, "adapter x replaced", hex2);
	assert_string_not_equal(hex1, hex2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hosts_apart),
		cmocka_unit_test(test_both_workers_give_the_reference),
		cmocka_unit_test(test_worker_killed),
		cmocka_unit_test(test_worker_partitioned),
		cmocka_unit_test(test_registry_replace),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
