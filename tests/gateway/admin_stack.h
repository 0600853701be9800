/*
 * tests/gateway/admin_stack.h — what the registry's black-box tests share: a
 * "node" (one loom-gateway with --store and, optionally, one loom-worker
 * reading that store), HTTP with an Authorization header and binary bodies,
 * multipart uploads through libcurl's own encoder, and a greedy completion
 * returning its token ids. Header-only (static functions), like
 * fake_worker.h, so each test program that needs it includes it.
 */
#ifndef TESTS_GATEWAY_ADMIN_STACK_H
#define TESTS_GATEWAY_ADMIN_STACK_H

#include <curl/curl.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "store/store.h"
#include "tests/support/harness.h"

typedef struct ad_node {
	lt_proc gw, wk;
	int port;
	char url[64];        /* http://127.0.0.1:PORT */
	char wurl[128];      /* the worker's ipc:// address */
	char store[PATH_MAX];
	char dir[PATH_MAX];   /* logs */
	int runs;            /* gateway starts so far (log names) */
} ad_node;

static inline long ad_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* A node whose files live in dir (store in dir/store). Creates the store, so
 * that a worker can open it read-only before the gateway runs. */
static inline void ad_node_init(ad_node *n, const char *dir, const char *tag)
{
	static int seq;
	memset(n, 0, sizeof *n);
	snprintf(n->dir, sizeof n->dir, "%.3900s", dir);
	snprintf(n->store, sizeof n->store, "%.3900s/store-%.64s", dir, tag);
	snprintf(n->wurl, sizeof n->wurl, "ipc:///tmp/loom-adm-%d-%d.ipc", (int)getpid(), seq++);
	st_store *s;
	if (st_open(n->store, 0, &s) != LOOM_OK) {
		fprintf(stderr, "cannot create the store %s: %s\n", n->store, loom_errmsg());
		abort();
	}
	st_close(s);
}

/* Starts the worker (--store, read-only) with extra arguments (NULL-terminated or NULL). */
static inline int ad_worker_start(ad_node *n, const char *const *extra)
{
	char *argv[24], bin[512], log[2 * PATH_MAX];
	int k = 0;
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-worker"));
	argv[k++] = bin;
	argv[k++] = "--listen";
	argv[k++] = n->wurl;
	argv[k++] = "--store";
	argv[k++] = n->store;
	argv[k++] = "--id";
	argv[k++] = "wk0";
	for (int i = 0; extra && extra[i] && k < 23; i++)
		argv[k++] = (char *)extra[i];
	argv[k] = NULL;
	snprintf(log, sizeof log, "%s/worker-%s.log", n->dir, strrchr(n->store, '/') + 1);
	return lt_spawn(&n->wk, log, argv);
}

static inline long ad_get_status(const char *url)
{
	lt_resp r;
	long st = lt_http("GET", url, NULL, NULL, 1000, &r) == 0 ? r.status : 0;
	lt_resp_free(&r);
	return st;
}

/*
 * Starts the gateway on a fresh port (--store, one --worker, extra arguments).
 * wait: "ready" (GET /ready 200), "health" (GET /health 200) or NULL. 0, or -1
 * after printing its log.
 */
static inline int ad_gateway_start(ad_node *n, const char *const *extra, const char *wait)
{
	char *argv[40], bin[512], log[2 * PATH_MAX], port[16];
	int k = 0;
	n->port = lt_free_port();
	snprintf(n->url, sizeof n->url, "http://127.0.0.1:%d", n->port);
	snprintf(port, sizeof port, "%d", n->port);
	snprintf(bin, sizeof bin, "%s", lt_bin_path("loom-gateway"));
	argv[k++] = bin;
	argv[k++] = "--port";
	argv[k++] = port;
	argv[k++] = "--store";
	argv[k++] = n->store;
	argv[k++] = "--worker";
	argv[k++] = n->wurl;
	for (int i = 0; extra && extra[i] && k < 39; i++)
		argv[k++] = (char *)extra[i];
	argv[k] = NULL;
	snprintf(log, sizeof log, "%s/gateway-%s.log", n->dir, strrchr(n->store, '/') + 1);
	n->runs++;
	if (lt_spawn(&n->gw, log, argv))
		return -1;
	if (!wait)
		return 0;
	char url[128];
	snprintf(url, sizeof url, "%s/%s", n->url, wait);
	long end = ad_ms() + 30000;
	while (ad_ms() < end) {
		if (ad_get_status(url) == 200)
			return 0;
		if (waitpid(n->gw.pid, NULL, WNOHANG) == n->gw.pid) {
			n->gw.pid = 0;
			break;
		}
		usleep(20000);
	}
	fprintf(stderr, "gateway at %s did not answer %s\n", n->url, wait);
	lt_proc_dump(&n->gw);
	if (n->wk.pid)
		lt_proc_dump(&n->wk);
	return -1;
}

static inline void ad_node_stop(ad_node *n)
{
	if (n->gw.pid > 0)
		lt_stop(&n->gw, SIGTERM, 5000);
	if (n->wk.pid > 0)
		lt_stop(&n->wk, SIGTERM, 5000);
	unlink(n->wurl + strlen("ipc://"));
}

/* ---- HTTP ---- */

static inline size_t ad_sink(void *d, size_t sz, size_t nm, void *ud)
{
	char **b = ud;
	size_t old = *b ? strlen(*b) : 0, add = sz * nm;
	char *p = loom_realloc(*b, old + add + 1);
	if (!p)
		return 0;
	memcpy(p + old, d, add);
	p[old + add] = '\0';
	*b = p;
	return add;
}

/* One request: body (len bytes, may be NULL), auth = a whole Authorization
 * value or NULL, ctype NULL = application/json. Returns the status (0 when no
 * answer); *out (may be NULL) gets the body (loom_free). */
static inline long ad_http(const ad_node *n, const char *method, const char *path, const char *body,
			   size_t len, const char *ctype, const char *auth, char **out)
{
	char url[512], h1[300], h2[600];
	char *resp = NULL;
	long st = 0;
	struct curl_slist *hs = NULL;
	CURL *c = curl_easy_init();
	if (out)
		*out = NULL;
	if (!c) {
		if (out)
			*out = loom_strdup("");
		return 0;
	}
	snprintf(url, sizeof url, "%s%s", n->url, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ad_sink);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
	hs = curl_slist_append(hs, "Expect:");
	if (body) {
		snprintf(h1, sizeof h1, "Content-Type: %s", ctype ? ctype : "application/json");
		hs = curl_slist_append(hs, h1);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len);
	}
	if (auth) {
		snprintf(h2, sizeof h2, "Authorization: %s", auth);
		hs = curl_slist_append(hs, h2);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
	curl_slist_free_all(hs);
	curl_easy_cleanup(c);
	if (out)
		*out = resp ? resp : loom_strdup("");
	else
		loom_free(resp);
	return st;
}

/* A JSON request (body a C string or NULL). */
static inline long ad_json(const ad_node *n, const char *method, const char *path, const char *body,
			   const char *auth, char **out)
{
	return ad_http(n, method, path, body, body ? strlen(body) : 0, NULL, auth, out);
}

/* PUT /admin/adapters/NAME[?replace=true] as multipart/form-data, built by
 * libcurl from the PEFT folder dir; base NULL = no base_model field. */
static inline long ad_upload(const ad_node *n, const char *name, const char *dir, const char *base,
			     bool replace, const char *auth, char **out)
{
	char url[512], f1[600], f2[600], h[600];
	char *resp = NULL;
	long st = 0;
	struct curl_slist *hs = NULL;
	CURL *c = curl_easy_init();
	if (out)
		*out = NULL;
	if (!c) {
		if (out)
			*out = loom_strdup("");
		return 0;
	}
	snprintf(url, sizeof url, "%s/admin/adapters/%s%s", n->url, name,
		 replace ? "?replace=true" : "");
	snprintf(f1, sizeof f1, "%s/adapter_config.json", dir);
	snprintf(f2, sizeof f2, "%s/adapter_model.safetensors", dir);
	curl_mime *m = curl_mime_init(c);
	curl_mimepart *p = curl_mime_addpart(m);
	curl_mime_name(p, "adapter_config");
	curl_mime_filedata(p, f1);
	p = curl_mime_addpart(m);
	curl_mime_name(p, "adapter_model");
	curl_mime_filedata(p, f2);
	if (base) {
		p = curl_mime_addpart(m);
		curl_mime_name(p, "base_model");
		curl_mime_data(p, base, CURL_ZERO_TERMINATED);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_MIMEPOST, m);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "PUT");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, ad_sink);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
	hs = curl_slist_append(hs, "Expect:");
	if (auth) {
		snprintf(h, sizeof h, "Authorization: %s", auth);
		hs = curl_slist_append(hs, h);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
	curl_mime_free(m);
	curl_slist_free_all(hs);
	curl_easy_cleanup(c);
	if (out)
		*out = resp ? resp : loom_strdup("");
	else
		loom_free(resp);
	return st;
}

/* A greedy completion of "Once upon a time" (max_tokens tokens, EOS ignored)
 * on model; its token ids as compact JSON go to ids (n bytes). Returns the
 * HTTP status. */
static inline long ad_complete(const ad_node *n, const char *model, int max_tokens, char *ids,
			       size_t cap)
{
	char body[512], *resp = NULL;
	snprintf(body, sizeof body,
		 "{\"model\":\"%s\",\"prompt\":\"Once upon a time\",\"max_tokens\":%d,"
		 "\"temperature\":0,\"ignore_eos\":true,\"return_token_ids\":true}",
		 model, max_tokens);
	long st = ad_json(n, "POST", "/v1/completions", body, NULL, &resp);
	ids[0] = '\0';
	if (st == 200) {
		json_t *j = json_loads(resp, 0, NULL);
		json_t *t = json_object_get(json_array_get(json_object_get(j, "choices"), 0),
					    "token_ids");
		char *s = t ? json_dumps(t, JSON_COMPACT) : NULL;
		snprintf(ids, cap, "%s", s ? s : "");
		free(s);
		json_decref(j);
	} else if (st != 404) {
		fprintf(stderr, "completion on %s: %ld %s\n", model, st, resp);
	}
	loom_free(resp);
	return st;
}

/* A string member of a JSON object body ("" when absent); out has n bytes. */
static inline void ad_field(const char *body, const char *key, char *out, size_t n)
{
	json_t *j = json_loads(body, 0, NULL);
	json_t *v = json_object_get(j, key);
	if (json_is_string(v))
		snprintf(out, n, "%s", json_string_value(v));
	else if (json_is_integer(v))
		snprintf(out, n, "%lld", (long long)json_integer_value(v));
	else
		out[0] = '\0';
	json_decref(j);
}

#endif
