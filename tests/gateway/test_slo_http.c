/*
 * tests/gateway/test_slo_http.c — SLO classes through the loom-gateway
 * program over real HTTP, against a fake worker in this process whose STATS
 * the test sets: the class from "slo_class" or X-Loom-SLO-Class (the body
 * wins; unknown -> 400 naming slo_class; none -> interactive) reaching the
 * worker in SUBMIT; a busy worker -> a refusing interactive class 503 with
 * Retry-After, batch queued (the request waits, then completes once the
 * worker has room) and 429 with Retry-After past --batch-queue; by default
 * (no SLO configuration) a busy worker never gets a request refused for its
 * TTFT: it waits in the admission queue (429 + Retry-After when full, 503 +
 * Retry-After after --queue-timeout-ms, as a real HTTP status for streams
 * too), a client that hangs up while queued leaves the queue and is never
 * sent, a queued stream streams once there is room; classes from --slo-class and the
 * config's "slo_classes" in /metrics; bad ones refused at start (exit 2 /
 * exit 1, one line); --no-slo (no refusal, no class sent).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "tests/gateway/fake_worker.h"
#include "tests/support/harness.h"

static char *dir;
static char stories[512];

static int64_t ms_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct gw {
	lt_proc p;
	char url[64];
	char log[600];
} gw;

/* Starts loom-gateway serving model "s" with worker w, the config members
 * extra_cfg (",\"slo_classes\":{...}" or "") and the arguments extra
 * (NULL-terminated, at most 8). wait: until /ready; else until it exits,
 * returning its status. */
static int gw_run(gw *g, fake *w, const char *extra_cfg, const char *const *extra, bool wait)
{
	char cfg[600], port[16], bin[512], store[600];
	int pt = lt_free_port();
	snprintf(cfg, sizeof cfg, "%s/gw-%d.json", dir, pt);
	FILE *f = fopen(cfg, "w");
	assert_non_null(f);
	fprintf(f, "{\"models\":{\"s\":{\"path\":\"%s\"}},\"workers\":[\"%s\"]%s}", stories,
		w ? w->url : "ipc:///tmp/nobody", extra_cfg);
	fclose(f);
	snprintf(g->log, sizeof g->log, "%s/gw-%d.log", dir, pt);
	snprintf(port, sizeof port, "%d", pt);
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-gateway"));
	snprintf(store, sizeof store, "%s/store-%d", dir, pt);
	char *argv[20] = {bin, "--port", port, "--config", cfg, "--store", store, NULL};
	for (int i = 0; extra && extra[i] && i < 8; i++)
		argv[7 + i] = (char *)extra[i];
	assert_int_equal(lt_spawn(&g->p, g->log, argv), 0);
	snprintf(g->url, sizeof g->url, "http://127.0.0.1:%d", pt);
	if (!wait)
		return lt_stop(&g->p, 0, 10000);
	char ready[128];
	snprintf(ready, sizeof ready, "%s/ready", g->url);
	int64_t end = ms_now() + 10000;
	for (;;) {
		lt_resp r;
		if (lt_http("GET", ready, NULL, NULL, 1000, &r) == 0 && r.status == 200) {
			lt_resp_free(&r);
			break;
		}
		lt_resp_free(&r);
		if (ms_now() > end) {
			lt_proc_dump(&g->p);
			fail_msg("gateway did not become ready");
		}
		usleep(50 * 1000);
	}
	usleep(300 * 1000); /* a STATS or two in */
	return 0;
}

/* POST /v1/completions with body and an optional X-Loom-SLO-Class header
 * (curl through lt_sh: lt_http sends no custom headers), giving up (hanging
 * up) after max_s seconds. Returns the status (0 when it gave up);
 * *hdrs / *out (loom_malloc'ed) get the headers and the body. */
static long post_m(const gw *g, const char *body, const char *cls, char **hdrs, char **out,
		   double max_s)
{
	char hpath[700], bpath[700], code[32] = {0};
	static int seq;
	int k = __atomic_fetch_add(&seq, 1, __ATOMIC_RELAXED);
	snprintf(hpath, sizeof hpath, "%s/h%d.txt", dir, k);
	snprintf(bpath, sizeof bpath, "%s/b%d.txt", dir, k);
	char hdr[128] = "";
	if (cls)
		snprintf(hdr, sizeof hdr, "-H 'X-Loom-SLO-Class: %s'", cls);
	char cpath[700];
	snprintf(cpath, sizeof cpath, "%s/c%d.txt", dir, k);
	int st = lt_sh("curl -s -N -m %g -D %s -o %s -w '%%{http_code}' -H 'Content-Type: "
		       "application/json' %s -d '%s' %s/v1/completions > %s",
		       max_s, hpath, bpath, hdr, body, g->url, cpath);
	if (max_s >= 20)
		assert_int_equal(st, 0);
	FILE *f = fopen(cpath, "r");
	assert_non_null(f);
	assert_non_null(fgets(code, sizeof code, f));
	fclose(f);
	const char *paths[2] = {hpath, bpath};
	char **dst[2] = {hdrs, out};
	for (int i = 0; i < 2; i++) {
		if (!dst[i])
			continue;
		f = fopen(paths[i], "r");
		*dst[i] = loom_calloc(1, 65536);
		if (f) {
			size_t n = fread(*dst[i], 1, 65535, f);
			(*dst[i])[n] = '\0';
			fclose(f);
		}
	}
	return atol(code);
}

static long post(const gw *g, const char *body, const char *cls, char **hdrs, char **out)
{
	return post_m(g, body, cls, hdrs, out, 20);
}

static void fake_answering(fake *w)
{
	fake_start(w, "s");
	w->auto_ids[0] = 432;
	w->n_auto = 1;
	w->auto_finish = LOOM_FINISH_LENGTH;
}

static void set_stats(fake *f, uint32_t queued, uint64_t queued_tokens, uint32_t running)
{
	pthread_mutex_lock(&f->mu);
	f->stats.queued = queued;
	f->stats.queued_tokens = queued_tokens;
	f->stats.running = running;
	pthread_mutex_unlock(&f->mu);
}

static char *last_class(fake *f)
{
	static char c[64];
	pthread_mutex_lock(&f->mu);
	snprintf(c, sizeof c, "%s", f->last.slo_class);
	pthread_mutex_unlock(&f->mu);
	return c;
}

static void test_class_from_body_or_header(void **state)
{
	(void)state;
	fake w;
	fake_answering(&w);
	gw g;
	gw_run(&g, &w, "", NULL, true);
	char *b;
	const char *base = "{\"model\":\"s\",\"prompt\":\"hi\",\"max_tokens\":1";
	char body[256];
	/* no class: interactive */
	snprintf(body, sizeof body, "%s}", base);
	assert_int_equal(post(&g, body, NULL, NULL, NULL), 200);
	assert_string_equal(last_class(&w), "interactive");
	/* the header */
	assert_int_equal(post(&g, body, "batch", NULL, NULL), 200);
	assert_string_equal(last_class(&w), "batch");
	/* the body wins over the header */
	snprintf(body, sizeof body, "%s,\"slo_class\":\"interactive\"}", base);
	assert_int_equal(post(&g, body, "batch", NULL, NULL), 200);
	assert_string_equal(last_class(&w), "interactive");
	/* unknown: 400 naming slo_class, nothing sent */
	int before = fake_nsub(&w);
	snprintf(body, sizeof body, "%s,\"slo_class\":\"gold\"}", base);
	assert_int_equal(post(&g, body, NULL, NULL, &b), 400);
	assert_non_null(strstr(b, "\"param\":\"slo_class\""));
	assert_non_null(strstr(b, "'gold'"));
	loom_free(b);
	snprintf(body, sizeof body, "%s}", base);
	assert_int_equal(post(&g, body, "gold", NULL, &b), 400);
	assert_non_null(strstr(b, "X-Loom-SLO-Class"));
	loom_free(b);
	snprintf(body, sizeof body, "%s,\"slo_class\":7}", base);
	assert_int_equal(post(&g, body, NULL, NULL, &b), 400);
	assert_non_null(strstr(b, "\"param\":\"slo_class\""));
	loom_free(b);
	assert_int_equal(fake_nsub(&w), before);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

typedef struct waiter {
	const gw *g;
	long status;
	char *body;
} waiter;

static void *wait_batch(void *arg)
{
	waiter *x = arg;
	x->status = post(x->g, "{\"model\":\"s\",\"prompt\":\"hi\",\"max_tokens\":1,"
			 "\"slo_class\":\"batch\"}", NULL, NULL, &x->body);
	return NULL;
}

static double metric(const gw *g, const char *sample)
{
	char url[128];
	lt_resp r;
	snprintf(url, sizeof url, "%s/metrics", g->url);
	assert_int_equal(lt_http("GET", url, NULL, NULL, 5000, &r), 0);
	const char *p = strstr(r.body, sample);
	double v = p ? strtod(p + strlen(sample), NULL) : -1;
	lt_resp_free(&r);
	return v;
}

static void test_refusals_and_queue(void **state)
{
	(void)state;
	fake w;
	fake_answering(&w);
	set_stats(&w, 200, 2000000, 8); /* hours of backlog */
	gw g;
	const char *extra[] = {"--batch-queue", "1", "--slo-class", "interactive=1000:200:1:refuse",
			       NULL};
	gw_run(&g, &w, "", extra, true);
	char *h, *b;
	assert_int_equal(post(&g, "{\"model\":\"s\",\"prompt\":\"hi\"}", NULL, &h, &b), 503);
	const char *ra = strcasestr(h, "Retry-After: ");
	assert_non_null(ra);
	assert_true(atol(ra + 13) >= 1);
	assert_non_null(strstr(b, "interactive"));
	loom_free(h);
	loom_free(b);
	/* batch: the first waits in the queue, the second finds it full */
	waiter x = {.g = &g};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, wait_batch, &x), 0);
	int64_t end = ms_now() + 5000;
	while (metric(&g, "\nloom_gateway_batch_queue_length ") != 1 && ms_now() < end)
		usleep(20 * 1000);
	assert_true(metric(&g, "\nloom_gateway_batch_queue_length ") == 1);
	assert_int_equal(post(&g, "{\"model\":\"s\",\"prompt\":\"hi\",\"slo_class\":\"batch\"}", NULL,
			      &h, &b), 429);
	assert_non_null(strcasestr(h, "Retry-After: "));
	assert_non_null(strstr(b, "queue is full"));
	loom_free(h);
	loom_free(b);
	assert_int_equal(fake_nsub(&w), 0);
	/* room again: the queued one is sent and completes */
	set_stats(&w, 0, 0, 0);
	pthread_join(th, NULL);
	assert_int_equal(x.status, 200);
	loom_free(x.body);
	assert_int_equal(fake_nsub(&w), 1);
	assert_true(metric(&g, "\nloom_slo_refused_total{class=\"interactive\",status=\"503\"} ") == 1);
	assert_true(metric(&g, "\nloom_slo_refused_total{class=\"batch\",status=\"429\"} ") == 1);
	assert_true(metric(&g, "\nloom_slo_requests_total{class=\"batch\"} ") == 2);
	assert_true(metric(&g, "\nloom_slo_met_total{class=\"batch\"} ") == 1);
	/* the gateway lets go of a request when libmicrohttpd reports it done,
	 * which can come just after the client has read the whole answer */
	end = ms_now() + 5000;
	while (metric(&g, "\nloom_gateway_requests_tracked ") != 0 && ms_now() < end)
		usleep(20 * 1000);
	assert_true(metric(&g, "\nloom_gateway_requests_tracked ") == 0);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

typedef struct client {
	const gw *g;
	const char *body;
	double max_s;
	long status;
	char *hdrs, *out;
	int64_t ms;         /* how long it took */
} client;

static void *client_main(void *arg)
{
	client *c = arg;
	int64_t t0 = ms_now();
	c->status = post_m(c->g, c->body, NULL, &c->hdrs, &c->out, c->max_s);
	c->ms = ms_now() - t0;
	return NULL;
}

static void wait_queue(const gw *g, double n)
{
	int64_t end = ms_now() + 5000;
	while (metric(g, "\nloom_gateway_batch_queue_length ") != n && ms_now() < end)
		usleep(20 * 1000);
	assert_true(metric(g, "\nloom_gateway_batch_queue_length ") == n);
}

/* Defaults (no SLO configuration) on a worker far too busy for any TTFT
 * target: nothing is refused for lateness. Requests wait in the admission
 * queue: 429 + Retry-After when it is full, 503 + Retry-After when the wait
 * times out (a stream too: its 200 waits for its first token), a client that
 * hangs up leaves the queue and is never sent, and one that finds room
 * streams. The queue's limits come from the config file. */
static void test_default_queues(void **state)
{
	(void)state;
	fake w;
	fake_answering(&w);
	set_stats(&w, 200, 2000000, 8); /* hours of backlog: no room, no deadline met */
	gw g;
	gw_run(&g, &w, ",\"queue_max\":2,\"queue_timeout_ms\":1500", NULL, true);
	const char *plain = "{\"model\":\"s\",\"prompt\":\"hi\",\"max_tokens\":1}";
	const char *stream = "{\"model\":\"s\",\"prompt\":\"hi\",\"max_tokens\":1,\"stream\":true}";
	client a = {.g = &g, .body = plain, .max_s = 20}, b = {.g = &g, .body = stream, .max_s = 20};
	pthread_t ta, tb;
	assert_int_equal(pthread_create(&ta, NULL, client_main, &a), 0);
	wait_queue(&g, 1);
	assert_int_equal(pthread_create(&tb, NULL, client_main, &b), 0);
	wait_queue(&g, 2);
	/* full */
	char *h, *body;
	assert_int_equal(post(&g, plain, NULL, &h, &body), 429);
	const char *ra = strcasestr(h, "Retry-After: ");
	assert_non_null(ra);
	assert_true(atol(ra + 13) >= 1);
	assert_non_null(strstr(body, "queue is full"));
	loom_free(h);
	loom_free(body);
	/* the two waited their 1.5 s, then 503 + Retry-After, the stream too */
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	client *cs[2] = {&a, &b};
	for (int i = 0; i < 2; i++) {
		if (cs[i]->status != 503)
			fail_msg("client %d: status %ld: %s", i, cs[i]->status, cs[i]->out);
		assert_true(cs[i]->ms >= 1400);
		ra = strcasestr(cs[i]->hdrs, "Retry-After: ");
		assert_non_null(ra);
		assert_true(atol(ra + 13) >= 1);
		assert_non_null(strstr(cs[i]->out, "admission queue"));
		assert_null(strstr(cs[i]->hdrs, "text/event-stream"));
		loom_free(cs[i]->hdrs);
		loom_free(cs[i]->out);
	}
	assert_int_equal(fake_nsub(&w), 0);
	assert_true(metric(&g, "\nloom_slo_refused_total{class=\"interactive\",status=\"503\"} ") == 2);
	assert_true(metric(&g, "\nloom_slo_refused_total{class=\"interactive\",status=\"429\"} ") == 1);
	/* a client that hangs up while queued: out of the queue, nothing left */
	client e = {.g = &g, .body = stream, .max_s = 0.5};
	pthread_t te;
	assert_int_equal(pthread_create(&te, NULL, client_main, &e), 0);
	pthread_join(te, NULL);
	assert_int_equal(e.status, 0);
	loom_free(e.hdrs);
	loom_free(e.out);
	wait_queue(&g, 0);
	int64_t end = ms_now() + 3000;
	while ((metric(&g, "\nloom_gateway_link_entries ") != 0 ||
		metric(&g, "\nloom_gateway_requests_tracked ") != 0) && ms_now() < end)
		usleep(20 * 1000);
	assert_true(metric(&g, "\nloom_gateway_link_entries ") == 0);
	assert_true(metric(&g, "\nloom_gateway_requests_tracked ") == 0);
	/* a queued stream that finds room streams; the one that left is never sent */
	client d = {.g = &g, .body = stream, .max_s = 20};
	pthread_t td;
	assert_int_equal(pthread_create(&td, NULL, client_main, &d), 0);
	wait_queue(&g, 1);
	set_stats(&w, 0, 0, 0);
	pthread_join(td, NULL);
	assert_int_equal(d.status, 200);
	assert_non_null(strstr(d.hdrs, "text/event-stream"));
	assert_non_null(strstr(d.out, "data: [DONE]"));
	assert_null(strstr(d.out, "\"error\""));
	loom_free(d.hdrs);
	loom_free(d.out);
	usleep(300 * 1000);
	assert_int_equal(fake_nsub(&w), 1);
	assert_true(metric(&g, "\nloom_gateway_requests_tracked ") == 0);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

static void test_no_slo(void **state)
{
	(void)state;
	fake w;
	fake_answering(&w);
	set_stats(&w, 200, 2000000, 8);
	gw g;
	const char *extra[] = {"--no-slo", NULL};
	gw_run(&g, &w, "", extra, true);
	assert_int_equal(post(&g, "{\"model\":\"s\",\"prompt\":\"hi\"}", NULL, NULL, NULL), 200);
	assert_int_equal(post(&g, "{\"model\":\"s\",\"prompt\":\"hi\",\"slo_class\":\"batch\"}", NULL,
			      NULL, NULL), 200);
	assert_string_equal(last_class(&w), "");
	pthread_mutex_lock(&w.mu);
	assert_int_equal(w.last.ttft_deadline_ms, 0);
	pthread_mutex_unlock(&w.mu);
	assert_true(metric(&g, "\nloom_gateway_slo_routing ") == 0);
	assert_true(metric(&g, "\nloom_slo_requests_total{class=\"batch\"} ") == 1);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

static void test_classes_configured(void **state)
{
	(void)state;
	fake w;
	fake_answering(&w);
	gw g;
	const char *extra[] = {"--slo-class", "interactive=500:100:3", "--slo-class=bulk=0:0:0", NULL};
	gw_run(&g, &w, ",\"slo_classes\":{\"gold\":{\"ttft_ms\":250,\"priority\":9},"
		       "\"interactive\":{\"ttft_ms\":2000}}", extra, true);
	/* the flag replaced the config's interactive */
	assert_true(metric(&g, "\nloom_slo_target_seconds{class=\"interactive\",kind=\"ttft\"} ") ==
		    0.5);
	assert_true(metric(&g, "\nloom_slo_target_seconds{class=\"gold\",kind=\"ttft\"} ") == 0.25);
	assert_true(metric(&g, "\nloom_slo_requests_total{class=\"bulk\"} ") == 0);
	assert_int_equal(post(&g, "{\"model\":\"s\",\"prompt\":\"hi\",\"max_tokens\":1,"
			      "\"slo_class\":\"gold\"}", NULL, NULL, NULL), 200);
	assert_string_equal(last_class(&w), "gold");
	pthread_mutex_lock(&w.mu);
	assert_true(w.last.ttft_deadline_ms > 0 && w.last.ttft_deadline_ms <= 250);
	pthread_mutex_unlock(&w.mu);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
	/* bad ones stop the start: a usage error (2) for a flag, 1 for the config */
	gw bad;
	const char *flag[] = {"--slo-class", "gold=fast:1:1", NULL};
	assert_int_equal(gw_run(&bad, NULL, "", flag, false), 2);
	assert_int_equal(lt_sh("grep -q \"slo-class 'gold=fast:1:1'\" %s", bad.log), 0);
	assert_int_equal(gw_run(&bad, NULL, ",\"slo_classes\":{\"gold\":{\"ttft\":1}}", NULL, false),
			 1);
	assert_int_equal(lt_sh("grep -q \"slo_classes.gold: unknown key 'ttft'\" %s", bad.log), 0);
	assert_int_equal(lt_sh("test $(wc -l < %s) -eq 1", bad.log), 0);
}

static int setup(void **state)
{
	(void)state;
	dir = lt_tmpdir("slohttp");
	if (!realpath(lt_shared_path("models/stories260k"), stories))
		return -1;
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
		cmocka_unit_test(test_class_from_body_or_header),
		cmocka_unit_test(test_refusals_and_queue),
		cmocka_unit_test(test_default_queues),
		cmocka_unit_test(test_no_slo),
		cmocka_unit_test(test_classes_configured),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
