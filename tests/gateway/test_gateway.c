/*
 * tests/gateway/test_gateway.c — the loom-gateway program: command line
 * (usage errors exit 2, a bad model folder exits 1 with one line naming the
 * file), --config, SIGTERM exits 0, and over real HTTP against a fake
 * worker in this process: a client that hangs up (stream or not) makes the
 * gateway CANCEL its request on the worker. Adapters: --adapter usage errors
 * exit 2 with one line, a rejected folder exits 1 with one line; adapters from
 * flags and --config are registered into the store (--store), listed by
 * /v1/models, announced to the worker by content hash, and a request naming
 * one runs on its base model.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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

/* Runs loom-gateway with args (NULL-terminated) to completion; returns its
 * exit status and leaves its output in *log (loom_malloc'ed). */
static int run_gateway(const char *const *args, char **log)
{
	char *argv[32], bin[512], path[600], store[600];
	int n = 0;
	static int seq;
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-gateway"));
	argv[n++] = bin;
	if (*args && strcmp(*args, "--bogus")) { /* every run its own empty store */
		snprintf(store, sizeof store, "%s/store-run%d", dir, seq);
		argv[n++] = "--store";
		argv[n++] = store;
	}
	for (; *args && n < 31; args++)
		argv[n++] = (char *)*args;
	argv[n] = NULL;
	snprintf(path, sizeof path, "%s/run%d.log", dir, seq++);
	lt_proc p;
	assert_int_equal(lt_spawn(&p, path, argv), 0);
	int st = lt_stop(&p, 0, 10000); /* signal 0: just wait */
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	*log = loom_calloc(1, 65536);
	size_t got = fread(*log, 1, 65535, f);
	(*log)[got] = '\0';
	fclose(f);
	return st;
}

static void test_usage_errors(void **state)
{
	(void)state;
	char *log;
	const char *bogus[] = {"--bogus", NULL};
	assert_int_equal(run_gateway(bogus, &log), 2);
	assert_non_null(strstr(log, "usage:"));
	assert_non_null(strstr(log, "--bogus"));
	loom_free(log);
	const char *no_worker[] = {"--model", stories, NULL};
	assert_int_equal(run_gateway(no_worker, &log), 2);
	loom_free(log);
	const char *bad_port[] = {"--port", "99999", "--worker", "ipc:///tmp/x", "--model", stories,
				  NULL};
	assert_int_equal(run_gateway(bad_port, &log), 2);
	loom_free(log);
	char tmpl[600];
	snprintf(tmpl, sizeof tmpl, "--chat-template=stories260k=jinja");
	const char *bad_tmpl[] = {"--worker", "ipc:///tmp/x", "--model", stories, tmpl, NULL};
	assert_int_equal(run_gateway(bad_tmpl, &log), 2);
	assert_non_null(strstr(log, "jinja"));
	loom_free(log);
}

static void test_bad_model_folder(void **state)
{
	(void)state;
	char *log;
	char missing[600];
	snprintf(missing, sizeof missing, "m=%s/nothing-here", dir);
	const char *args[] = {"--worker", "ipc:///tmp/x", "--model", missing, NULL};
	assert_int_equal(run_gateway(args, &log), 1);
	assert_non_null(strstr(log, "nothing-here"));
	assert_non_null(strstr(log, "config.json"));
	assert_int_equal(strchr(log, '\n') - log + 1, (long)strlen(log)); /* one line */
	loom_free(log);
	/* a folder whose tokenizer.json is broken */
	char bad[600];
	assert_int_equal(lt_sh("mkdir -p %s/badtok && cp %s/config.json %s/badtok/ && "
			       "echo '{\"model\":' > %s/badtok/tokenizer.json",
			       dir, stories, dir, dir), 0);
	snprintf(bad, sizeof bad, "%s/badtok", dir);
	const char *args2[] = {"--worker", "ipc:///tmp/x", "--model", bad, NULL};
	assert_int_equal(run_gateway(args2, &log), 1);
	assert_non_null(strstr(log, "tokenizer.json"));
	loom_free(log);
	/* a config file that is not JSON */
	char cfg[600];
	snprintf(cfg, sizeof cfg, "%s/bad.json", dir);
	assert_int_equal(lt_sh("echo '{models' > %s", cfg), 0);
	const char *args3[] = {"--config", cfg, NULL};
	assert_int_equal(run_gateway(args3, &log), 1);
	assert_non_null(strstr(log, "bad.json"));
	loom_free(log);
}

/* A gateway process started from a --config naming the fake worker. */
typedef struct gw {
	lt_proc p;
	char url[64];
} gw;

/* extra_cfg: more members of the config object (",\"adapters\":{...}") or "";
 * extra: more arguments (NULL-terminated, at most 8) or NULL. */
static void gw_start2(gw *g, fake *w, const char *tmpl, const char *extra_cfg,
		      const char *const *extra)
{
	char cfg[600], log[600], port[16], bin[512];
	int pt = lt_free_port();
	snprintf(cfg, sizeof cfg, "%s/gw-%d.json", dir, pt);
	FILE *f = fopen(cfg, "w");
	assert_non_null(f);
	fprintf(f, "{\"models\":{\"s\":{\"path\":\"%s\",\"chat_template\":\"%s\"}},"
		"\"workers\":[\"%s\"]%s}", stories, tmpl, w->url, extra_cfg);
	fclose(f);
	snprintf(log, sizeof log, "%s/gw-%d.log", dir, pt);
	snprintf(port, sizeof port, "%d", pt);
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-gateway"));
	char store[600];
	snprintf(store, sizeof store, "%s/store-gw%d", dir, pt);
	char *argv[20] = {bin, "--port", port, "--config", cfg, "--threads", "1", "--store", store,
			  NULL};
	for (int i = 0; extra && extra[i] && i < 8; i++)
		argv[9 + i] = (char *)extra[i];
	setenv("LOOM_LOG", "debug", 1);
	assert_int_equal(lt_spawn(&g->p, log, argv), 0);
	unsetenv("LOOM_LOG");
	snprintf(g->url, sizeof g->url, "http://127.0.0.1:%d", pt);
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
}

static void gw_start(gw *g, fake *w, const char *tmpl)
{
	gw_start2(g, w, tmpl, "", NULL);
}

static long post(gw *g, const char *path, const char *body, long timeout_ms, lt_resp *r)
{
	char url[256];
	snprintf(url, sizeof url, "%s%s", g->url, path);
	if (lt_http("POST", url, body, NULL, timeout_ms, r) != 0)
		return 0;
	return r->status;
}

static void test_config_and_sigterm(void **state)
{
	(void)state;
	fake w;
	fake_start(&w, "s");
	w.auto_ids[0] = 432; /* "," */
	w.auto_ids[1] = 383; /* " there" */
	w.n_auto = 2;
	w.auto_finish = LOOM_FINISH_LENGTH;
	gw g;
	gw_start(&g, &w, "chatml");
	lt_resp r;
	char url[128];
	snprintf(url, sizeof url, "%s/v1/models", g.url);
	assert_int_equal(lt_http("GET", url, NULL, NULL, 5000, &r), 0);
	assert_non_null(strstr(r.body, "\"id\":\"s\""));
	lt_resp_free(&r);
	assert_int_equal(post(&g, "/v1/chat/completions",
			      "{\"model\":\"s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
			      10000, &r), 200);
	json_t *j = json_loads(r.body, 0, NULL);
	assert_non_null(j);
	json_t *m = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
	assert_string_equal(json_string_value(json_object_get(m, "content")), ", there");
	json_decref(j);
	lt_resp_free(&r);
	/* chat default max_tokens = the rest of the context; the chatml prompt is longer than plain */
	assert_true(w.last.sampling.max_tokens + w.last_n_prompt == 512);
	assert_true(w.last_n_prompt > 10);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

static void test_client_hangs_up(void **state)
{
	(void)state;
	fake w;
	fake_start(&w, "s");
	w.auto_ids[0] = 432;
	w.n_auto = 1;
	w.auto_finish = LOOM_FINISH_NONE; /* one token, then nothing: the request stays open */
	gw g;
	gw_start(&g, &w, "plain");
	lt_resp r;
	/* non-stream: the client gives up after 400 ms */
	assert_int_equal(post(&g, "/v1/completions", "{\"model\":\"s\",\"prompt\":\"hi\"}", 400, &r), 0);
	lt_resp_free(&r);
	int64_t end = ms_now() + 3000;
	while (w.n_cancels < 1 && ms_now() < end)
		usleep(20 * 1000);
	assert_int_equal(w.n_cancels, 1);
	assert_int_equal(w.cancels[0], w.submits[0]);
	/* stream: a chunk arrives, then the client hangs up */
	assert_int_equal(post(&g, "/v1/completions",
			      "{\"model\":\"s\",\"prompt\":\"hi\",\"stream\":true}", 400, &r), 0);
	assert_non_null(strstr(r.body, "data: {"));
	lt_resp_free(&r);
	end = ms_now() + 3000;
	while (w.n_cancels < 2 && ms_now() < end)
		usleep(20 * 1000);
	assert_int_equal(w.n_cancels, 2);
	assert_int_equal(w.cancels[1], w.submits[1]);
	/* the gateway still serves */
	w.auto_finish = LOOM_FINISH_LENGTH;
	assert_int_equal(post(&g, "/v1/completions", "{\"model\":\"s\",\"prompt\":\"hi\"}", 5000, &r),
			 200);
	lt_resp_free(&r);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

/* Writes a random PEFT adapter for stories260k into dir/name; returns its absolute path. */
static const char *make_adapter(const char *name, const char *more)
{
	static char out[4][600];
	static int k;
	char *p = out[k++ % 4];
	snprintf(p, sizeof out[0], "%s/%s", dir, name);
	assert_int_equal(lt_sh("test -d %s || %s adapter --model %s --out %s %s >/dev/null", p,
			       lt_bin_path("loom-mkmodel"), stories, p, more), 0);
	char abs[600];
	assert_non_null(realpath(p, abs));
	snprintf(p, sizeof out[0], "%s", abs);
	return p;
}

/* path relative to the current directory (which the gateway inherits). */
static void relative(const char *abs, char *out, size_t n)
{
	char cwd[512];
	assert_non_null(getcwd(cwd, sizeof cwd));
	size_t len = 0;
	out[0] = '\0';
	for (const char *c = cwd; *c; c++)
		if (*c == '/' && c[1])
			len += (size_t)snprintf(out + len, n - len, "../");
	if (strcmp(cwd, "/"))
		len += (size_t)snprintf(out + len, n - len, "../");
	snprintf(out + len, n - len, "%s", abs + 1);
}

static bool one_line(const char *log)
{
	const char *nl = strchr(log, '\n');
	return nl && (size_t)(nl - log + 1) == strlen(log);
}

static void test_adapter_errors(void **state)
{
	(void)state;
	const char *ad = make_adapter("ad-q", "--rank 4 --targets q_proj,v_proj");
	char a1[700], a2[700], m2[600], dora[600], missing[600], cfg[600];
	static const struct {
		const char *name;
		const char *adapter;  /* printf format with the folder (%1$s) */
		bool two_models;
		int status;
		const char *want;
	} cases[] = {
		{"bad name", "bad name=%s", false, 2, "'bad name' must be"},
		{"slash", "a/b=%s", false, 2, "'a/b' must be"},
		{"no '='", "%s", false, 2, "expected NAME=PEFT_DIR"},
		{"empty base", "x=%s@", false, 2, "empty BASE"},
		{"model's name", "stories260k=%s", false, 2, "a model already has that name"},
		{"unknown base", "x=%s@nope", false, 2, "'nope' is not served"},
		{"base left out", "x=%s", true, 2, "give its base"},
		{"base given", "x=%s@m2", true, 0, NULL},
	};
	/* a port held here, so that a valid start-up ends at binding it */
	int busy = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof sa;
	assert_int_equal(bind(busy, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(busy, 1), 0);
	assert_int_equal(getsockname(busy, (struct sockaddr *)&sa, &sl), 0);
	char port[16];
	snprintf(port, sizeof port, "%d", ntohs(sa.sin_port));
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *log;
		snprintf(a1, sizeof a1, cases[i].adapter, ad);
		snprintf(m2, sizeof m2, "m2=%s", stories);
		const char *args[] = {"--port", port, "--worker", "ipc:///tmp/x", "--model", stories,
				      "--adapter", a1, cases[i].two_models ? "--model" : NULL, m2,
				      NULL};
		int st = run_gateway(args, &log);
		if (cases[i].status == 0) {
			/* valid: it gets as far as binding the busy port */
			if (st != 1 || !strstr(log, "cannot listen"))
				fail_msg("%s: status %d: %s", cases[i].name, st, log);
		} else if (st != cases[i].status || !strstr(log, cases[i].want) || !one_line(log)) {
			fail_msg("%s: status %d, want %d and one line with '%s': %s", cases[i].name,
				 st, cases[i].status, cases[i].want, log);
		}
		loom_free(log);
	}
	close(busy);
	/* the same name twice */
	char *log;
	snprintf(a1, sizeof a1, "x=%s", ad);
	const char *twice[] = {"--worker", "ipc:///tmp/x", "--model", stories, "--adapter", a1,
			       "--adapter", a1, NULL};
	assert_int_equal(run_gateway(twice, &log), 2);
	assert_non_null(strstr(log, "adapter 'x' given twice"));
	assert_true(one_line(log));
	loom_free(log);
	/* a clash between --config and --adapter */
	snprintf(cfg, sizeof cfg, "%s/ad-clash.json", dir);
	assert_int_equal(lt_sh("printf '{\"adapters\":{\"x\":{\"path\":\"%s\"}}}' > %s", ad, cfg), 0);
	const char *clash[] = {"--worker", "ipc:///tmp/x", "--model", stories, "--config", cfg,
			       "--adapter", a1, NULL};
	assert_int_equal(run_gateway(clash, &log), 2);
	assert_non_null(strstr(log, "given twice"));
	loom_free(log);
	/* bad "adapters" in --config: exit 1 naming the file */
	assert_int_equal(lt_sh("printf '{\"adapters\":{\"x\":{\"path\":1}}}' > %s", cfg), 0);
	const char *badcfg[] = {"--worker", "ipc:///tmp/x", "--model", stories, "--config", cfg,
				NULL};
	assert_int_equal(run_gateway(badcfg, &log), 1);
	assert_non_null(strstr(log, "adapters.x needs a string 'path'"));
	loom_free(log);
	/* rejected folders: exit 1, one line "adapter NAME (DIR): reason" */
	snprintf(dora, sizeof dora, "%s/dora", dir);
	assert_int_equal(lt_sh("rm -rf %s && cp -r %s %s && sed -i 's/\"use_dora\": *false/"
			       "\"use_dora\": true/' %s/adapter_config.json", dora, ad, dora, dora), 0);
	snprintf(a1, sizeof a1, "dora=%s", dora);
	snprintf(missing, sizeof missing, "%s/nothing-here", dir);
	snprintf(a2, sizeof a2, "gone=%s", missing);
	const char *rej[] = {"--worker", "ipc:///tmp/x", "--model", stories, "--adapter", a1, NULL};
	assert_int_equal(run_gateway(rej, &log), 1);
	snprintf(a1, sizeof a1, "loom-gateway: adapter dora (%s): ", dora);
	assert_non_null(strstr(log, a1));
	assert_non_null(strstr(log + strlen(a1), "dora"));
	assert_true(one_line(log));
	loom_free(log);
	const char *gone[] = {"--worker", "ipc:///tmp/x", "--model", stories, "--adapter", a2, NULL};
	assert_int_equal(run_gateway(gone, &log), 1);
	assert_non_null(strstr(log, "adapter gone ("));
	assert_non_null(strstr(log, "nothing-here"));
	assert_true(one_line(log));
	loom_free(log);
}

static void test_adapter_requests(void **state)
{
	(void)state;
	const char *ad_q = make_adapter("ad-q", "--rank 4 --targets q_proj,v_proj");
	const char *ad_all = make_adapter("ad-all", "--rank 2 --dtype bf16 --targets "
					  "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj");
	char cfg[700], rel[600], flag[700];
	snprintf(cfg, sizeof cfg, ",\"adapters\":{\"cfg-ad\":{\"path\":\"%s\",\"base\":\"s\"}}",
		 ad_all);
	relative(ad_q, rel, sizeof rel);
	assert_true(rel[0] == '.');
	snprintf(flag, sizeof flag, "rel-ad=%s", rel);
	const char *extra[] = {"--adapter", flag, NULL};
	fake w;
	fake_start(&w, "s");
	w.auto_ids[0] = 432;
	w.n_auto = 1;
	w.auto_finish = LOOM_FINISH_LENGTH;
	gw g;
	gw_start2(&g, &w, "plain", cfg, extra);
	/* the worker was told about both, as store blobs, before it was live; it lists the
	 * model already, so no MODEL was sent */
	assert_int_equal(w.n_adapters, 2);
	assert_string_equal(w.ad_name[0], "cfg-ad");
	assert_string_equal(w.ad_path[0], "");
	assert_int_equal(strlen(w.ad_sha[0]), 64);
	assert_string_equal(w.ad_name[1], "rel-ad");
	assert_string_equal(w.ad_path[1], "");
	assert_int_equal(strlen(w.ad_sha[1]), 64);
	assert_string_not_equal(w.ad_sha[0], w.ad_sha[1]);
	assert_string_equal(w.ad_base[1], "s");
	assert_int_equal(w.n_model_msgs, 0);

	lt_resp r;
	char url[128];
	snprintf(url, sizeof url, "%s/v1/models", g.url);
	assert_int_equal(lt_http("GET", url, NULL, NULL, 5000, &r), 0);
	json_t *j = json_loads(r.body, 0, NULL);
	lt_resp_free(&r);
	json_t *data = json_object_get(j, "data");
	assert_int_equal(json_array_size(data), 3);
	json_t *e = json_array_get(data, 2);
	assert_string_equal(json_string_value(json_object_get(e, "id")), "rel-ad");
	assert_string_equal(json_string_value(json_object_get(e, "parent")), "s");
	assert_string_equal(json_string_value(json_object_get(e, "root")), ad_q);
	json_decref(j);

	/* a request naming an adapter runs on its base; the response names the adapter */
	assert_int_equal(post(&g, "/v1/completions", "{\"model\":\"rel-ad\",\"prompt\":\"hi\"}",
			      5000, &r), 200);
	assert_non_null(strstr(r.body, "\"model\":\"rel-ad\""));
	lt_resp_free(&r);
	assert_string_equal(w.last.model, "s");
	assert_string_equal(w.last.adapter, "rel-ad");
	assert_int_equal(post(&g, "/v1/chat/completions",
			      "{\"model\":\"cfg-ad\",\"stream\":true,\"messages\":[{\"role\":"
			      "\"user\",\"content\":\"hi\"}]}", 5000, &r), 200);
	assert_non_null(strstr(r.body, "\"model\":\"cfg-ad\""));
	assert_null(strstr(r.body, "\"model\":\"s\""));
	lt_resp_free(&r);
	assert_string_equal(w.last.adapter, "cfg-ad");
	assert_true(w.last.sampling.max_tokens + w.last_n_prompt == 512); /* the base's context */
	assert_int_equal(post(&g, "/v1/completions", "{\"model\":\"s\",\"prompt\":\"hi\"}", 5000,
			      &r), 200);
	lt_resp_free(&r);
	assert_string_equal(w.last.adapter, "");
	assert_int_equal(post(&g, "/v1/completions", "{\"model\":\"rel-ad2\",\"prompt\":\"hi\"}",
			      5000, &r), 404);
	lt_resp_free(&r);

	/* /tokenize and /detokenize take adapter names (the base's tokenizer) */
	char base_toks[256];
	assert_int_equal(post(&g, "/tokenize", "{\"model\":\"s\",\"prompt\":\"Once upon\"}",
			      5000, &r), 200);
	snprintf(base_toks, sizeof base_toks, "%s", r.body);
	lt_resp_free(&r);
	assert_int_equal(post(&g, "/tokenize", "{\"model\":\"rel-ad\",\"prompt\":\"Once upon\"}",
			      5000, &r), 200);
	assert_string_equal(r.body, base_toks);
	lt_resp_free(&r);
	assert_int_equal(post(&g, "/detokenize", "{\"model\":\"cfg-ad\",\"tokens\":[432]}", 5000,
			      &r), 200);
	assert_non_null(strstr(r.body, "\"prompt\":\",\""));
	lt_resp_free(&r);
	assert_int_equal(lt_stop(&g.p, SIGTERM, 5000), 0);
	fake_kill(&w);
}

static int setup(void **state)
{
	(void)state;
	dir = lt_tmpdir("gateway");
	snprintf(stories, sizeof stories, "%s", lt_shared_path("models/stories260k"));
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
		cmocka_unit_test(test_usage_errors),
		cmocka_unit_test(test_bad_model_folder),
		cmocka_unit_test(test_config_and_sigterm),
		cmocka_unit_test(test_client_hangs_up),
		cmocka_unit_test(test_adapter_errors),
		cmocka_unit_test(test_adapter_requests),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
