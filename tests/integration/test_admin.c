/*
 * tests/integration/test_admin.c — the admin API against a real gateway and
 * worker (stories260k, adapters written by loom-mkmodel, the worker reading
 * the gateway's store). For each way in — the path route (POST
 * /admin/adapters), the upload route (PUT /admin/adapters/{name}, multipart
 * encoded by libcurl) and vLLM's load/unload_lora_adapter — register -> list
 * -> complete with it -> 409 without replace -> replace -> the new version
 * answers (tokens differ from the old version's and equal what a fresh
 * gateway serving that folder gives) -> delete -> 404. Also: paths outside
 * --adapter-dir ("..", a symlinked folder, a folder holding a link out,
 * plain outside) -> 403, a DoRA adapter -> 400 with its reason (path and
 * upload), residency shown per adapter, /admin/workers and /metrics, a second
 * base model registered, served and deleted (409 while adapters use a
 * model), a stream in flight when its adapter is deleted finishing while new
 * requests 404, and the Bearer token (none / wrong -> 401, right -> 201, also from
 * LOOM_ADMIN_TOKEN), with non-loopback clients refused (403) when no token
 * is configured (when this host has a non-loopback address).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>

#include "tests/gateway/admin_stack.h"

#define NTOK 12

static char *tmp;
static char root[PATH_MAX];
static char allowed[PATH_MAX + 16], outside[PATH_MAX + 16], stories[PATH_MAX];
static char models_dir[PATH_MAX];
static ad_node node;
static char base_ids[256], v1_ids[256], v2_ids[256]; /* v2_ids: from a fresh gateway */

/* Writes a random adapter for stories260k into dir. */
static int mk_adapter(const char *dir, int seed, const char *targets)
{
	return lt_sh("%s adapter --model %s --out %s --rank 8 --alpha 16 --targets %s --seed %d "
		     ">/dev/null", lt_bin_path("loom-mkmodel"), stories, dir, targets, seed);
}

static int setup(void **state)
{
	(void)state;
	char dir[3 * PATH_MAX];
	tmp = lt_tmpdir("admin");
	if (!realpath(tmp, root) || !realpath(lt_shared_path("models/stories260k"), stories) ||
	    !realpath(lt_shared_path("models"), models_dir))
		return -1;
	snprintf(allowed, sizeof allowed, "%s/allowed", root);
	snprintf(outside, sizeof outside, "%s/outside", root);
	const char *all = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
	snprintf(dir, sizeof dir, "%s/a1", allowed);
	if (mk_adapter(dir, 101, all))
		return -1;
	snprintf(dir, sizeof dir, "%s/a2", allowed);
	if (mk_adapter(dir, 202, all))
		return -1;
	snprintf(dir, sizeof dir, "%s/o1", outside);
	if (mk_adapter(dir, 303, "q_proj,v_proj"))
		return -1;
	/* a DoRA copy, a symlink leading out, a folder whose file links lead out */
	if (lt_sh("cd %s && cp -r allowed/a1 allowed/dora && sed -i 's/\"use_dora\": *false/"
		  "\"use_dora\": true/' allowed/dora/adapter_config.json && grep -q '\"use_dora\": "
		  "*true' allowed/dora/adapter_config.json && ln -s ../outside/o1 allowed/escape && "
		  "mkdir allowed/linked && ln -s ../../outside/o1/adapter_config.json "
		  "allowed/linked/adapter_config.json && ln -s "
		  "../../outside/o1/adapter_model.safetensors allowed/linked/adapter_model.safetensors",
		  root))
		return -1;

	/* the oracle for "the new version answers": a fresh gateway serving a2 */
	ad_node fresh;
	char flag[3 * PATH_MAX], model[3 * PATH_MAX];
	snprintf(flag, sizeof flag, "fresh=%s/a2", allowed);
	snprintf(model, sizeof model, "stories=%s", stories);
	const char *fx[] = {"--model", model, "--adapter", flag, NULL};
	ad_node_init(&fresh, root, "fresh");
	if (ad_worker_start(&fresh, NULL) || ad_gateway_start(&fresh, fx, "ready"))
		return -1;
	long st = ad_complete(&fresh, "fresh", NTOK, v2_ids, sizeof v2_ids);
	ad_node_stop(&fresh);
	if (st != 200 || !v2_ids[0])
		return -1;

	/* the node under test: no token (loopback only), bound to every address */
	const char *gx[] = {"--model", model, "--adapter-dir", allowed, "--model-dir", models_dir,
			    "--host", "0.0.0.0", NULL};
	ad_node_init(&node, root, "main");
	if (ad_worker_start(&node, NULL) || ad_gateway_start(&node, gx, "ready"))
		return -1;
	if (ad_complete(&node, "stories", NTOK, base_ids, sizeof base_ids) != 200)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ad_node_stop(&node);
	loom_free(tmp);
	return 0;
}

/* GET /admin/adapters/NAME: status; fields into sha/version (may be NULL). */
static long get_adapter(const char *name, char *sha, char *version)
{
	char path[256], *body;
	snprintf(path, sizeof path, "/admin/adapters/%s", name);
	long st = ad_json(&node, "GET", path, NULL, NULL, &body);
	if (sha)
		ad_field(body, "sha256", sha, 65);
	if (version)
		ad_field(body, "version", version, 16);
	loom_free(body);
	return st;
}

static bool listed(const char *name)
{
	char *body;
	assert_int_equal(ad_json(&node, "GET", "/admin/adapters", NULL, NULL, &body), 200);
	json_t *j = json_loads(body, 0, NULL);
	loom_free(body);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "object")), "list");
	bool found = false;
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(j, "data"), i, e)
		found |= !strcmp(json_string_value(json_object_get(e, "id")), name);
	json_decref(j);
	return found;
}

/* The checks every route shares after registering NAME as version 1 (a1). */
static void check_v1(const char *name, char *sha1)
{
	char ids[256], version[16];
	assert_int_equal(get_adapter(name, sha1, version), 200);
	assert_int_equal(strlen(sha1), 64);
	assert_string_equal(version, "1");
	assert_true(listed(name));
	assert_int_equal(ad_complete(&node, name, NTOK, ids, sizeof ids), 200);
	assert_string_not_equal(ids, base_ids);
	if (!v1_ids[0])
		snprintf(v1_ids, sizeof v1_ids, "%s", ids);
	assert_string_equal(ids, v1_ids); /* a1 by any route: the same content, same tokens */
}

/* ... after replacing it with a2: version 2, a new hash, a2's tokens. */
static void check_v2(const char *name, const char *sha1)
{
	char ids[256], sha2[65], version[16];
	assert_int_equal(get_adapter(name, sha2, version), 200);
	assert_string_equal(version, "2");
	assert_string_not_equal(sha1, sha2);
	assert_int_equal(ad_complete(&node, name, NTOK, ids, sizeof ids), 200);
	assert_string_not_equal(ids, v1_ids);
	assert_string_equal(ids, v2_ids);
}

static void check_gone(const char *name)
{
	char ids[256];
	assert_int_equal(ad_complete(&node, name, NTOK, ids, sizeof ids), 404);
	assert_int_equal(get_adapter(name, NULL, NULL), 404);
	assert_false(listed(name));
}

static void test_path_route(void **state)
{
	(void)state;
	char body[3 * PATH_MAX], sha1[65], *resp;
	snprintf(body, sizeof body, "{\"name\":\"pa\",\"base_model\":\"stories\",\"path\":\"%s/a1\"}",
		 allowed);
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters", body, NULL, &resp), 201);
	json_t *j = json_loads(resp, 0, NULL);
	loom_free(resp);
	assert_string_equal(json_string_value(json_object_get(j, "base_model")), "stories");
	assert_int_equal(json_integer_value(json_object_get(j, "rank")), 8);
	assert_int_equal(json_array_size(json_object_get(j, "targets")), 7);
	assert_true(json_integer_value(json_object_get(j, "bytes")) > 0);
	assert_true(json_integer_value(json_object_get(j, "created")) > 0);
	json_decref(j);
	check_v1("pa", sha1);
	/* the same name again: 409, nothing changes */
	snprintf(body, sizeof body, "{\"name\":\"pa\",\"path\":\"%s/a2\"}", allowed);
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters", body, NULL, &resp), 409);
	assert_non_null(strstr(resp, "\"error\""));
	loom_free(resp);
	char same[65];
	assert_int_equal(get_adapter("pa", same, NULL), 200);
	assert_string_equal(same, sha1);
	/* ?replace=true: a new version, served as soon as the call returns */
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters?replace=true", body, NULL, NULL),
			 200);
	check_v2("pa", sha1);
	/* delete: new requests 404 */
	assert_int_equal(ad_json(&node, "DELETE", "/admin/adapters/pa", NULL, NULL, &resp), 200);
	assert_non_null(strstr(resp, "\"deleted\":true"));
	loom_free(resp);
	check_gone("pa");
	assert_int_equal(ad_json(&node, "DELETE", "/admin/adapters/pa", NULL, NULL, NULL), 404);
}

static void test_upload_route(void **state)
{
	(void)state;
	char a1[3 * PATH_MAX], a2[3 * PATH_MAX], sha1[65], *resp;
	snprintf(a1, sizeof a1, "%s/a1", allowed);
	snprintf(a2, sizeof a2, "%s/a2", allowed);
	assert_int_equal(ad_upload(&node, "ua", a1, "stories", false, NULL, &resp), 201);
	assert_non_null(strstr(resp, "\"id\":\"ua\""));
	loom_free(resp);
	check_v1("ua", sha1);
	assert_int_equal(ad_upload(&node, "ua", a2, "stories", false, NULL, NULL), 409);
	/* no base_model field: the only model */
	assert_int_equal(ad_upload(&node, "ua", a2, NULL, true, NULL, NULL), 200);
	check_v2("ua", sha1);
	assert_int_equal(ad_json(&node, "DELETE", "/admin/adapters/ua", NULL, NULL, NULL), 200);
	check_gone("ua");
	/* nothing is left in the upload area */
	assert_int_equal(lt_sh("test -z \"$(ls -A %s/uploads)\"", node.store), 0);
	/* a malformed upload and a missing part */
	assert_int_equal(ad_http(&node, "PUT", "/admin/adapters/ub", "--x\r\nno", 8,
				 "multipart/form-data; boundary=x", NULL, &resp), 400);
	assert_non_null(strstr(resp, "multipart"));
	loom_free(resp);
	assert_int_equal(ad_http(&node, "PUT", "/admin/adapters/ub", "{}", 2, NULL, NULL, &resp),
			 400);
	assert_non_null(strstr(resp, "multipart/form-data"));
	loom_free(resp);
	static const char only_base[] = "--x\r\nContent-Disposition: form-data; name=\"base_model\""
					"\r\n\r\nstories\r\n--x--\r\n";
	assert_int_equal(ad_http(&node, "PUT", "/admin/adapters/ub", only_base,
				 sizeof only_base - 1, "multipart/form-data; boundary=x", NULL, &resp),
			 400);
	assert_non_null(strstr(resp, "adapter_config"));
	loom_free(resp);
	assert_int_equal(get_adapter("ub", NULL, NULL), 404);
	assert_int_equal(ad_upload(&node, "bad%20name", a1, NULL, false, NULL, NULL), 400);
}

static void test_vllm_aliases(void **state)
{
	(void)state;
	char body[3 * PATH_MAX], sha1[65], *resp;
	snprintf(body, sizeof body, "{\"lora_name\":\"va\",\"lora_path\":\"%s/a1\"}", allowed);
	assert_int_equal(ad_json(&node, "POST", "/v1/load_lora_adapter", body, NULL, &resp), 200);
	assert_non_null(strstr(resp, "Success"));
	loom_free(resp);
	check_v1("va", sha1);
	/* /v1/models lists it with its base, as vLLM does */
	assert_int_equal(ad_json(&node, "GET", "/v1/models", NULL, NULL, &resp), 200);
	assert_non_null(strstr(resp, "\"id\":\"va\""));
	assert_non_null(strstr(resp, "\"parent\":\"stories\""));
	loom_free(resp);
	snprintf(body, sizeof body, "{\"lora_name\":\"va\",\"lora_path\":\"%s/a2\"}", allowed);
	assert_int_equal(ad_json(&node, "POST", "/v1/load_lora_adapter", body, NULL, NULL), 409);
	snprintf(body, sizeof body, "{\"lora_name\":\"va\",\"lora_path\":\"%s/a2\","
		 "\"load_inplace\":true}", allowed);
	assert_int_equal(ad_json(&node, "POST", "/v1/load_lora_adapter", body, NULL, NULL), 200);
	check_v2("va", sha1);
	assert_int_equal(ad_json(&node, "POST", "/v1/unload_lora_adapter", "{\"lora_name\":\"va\"}",
				 NULL, &resp), 200);
	assert_non_null(strstr(resp, "Success"));
	loom_free(resp);
	check_gone("va");
	assert_int_equal(ad_json(&node, "POST", "/v1/unload_lora_adapter", "{\"lora_name\":\"va\"}",
				 NULL, NULL), 404);
	assert_int_equal(ad_json(&node, "POST", "/v1/load_lora_adapter", "{\"lora_name\":\"x\"}",
				 NULL, &resp), 400);
	assert_non_null(strstr(resp, "lora_path"));
	loom_free(resp);
}

static void test_forbidden_paths(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		const char *fmt;   /* with root */
		long status;
	} cases[] = {
		{"outside", "%s/outside/o1", 403},
		{"'..' out", "%s/allowed/../outside/o1", 403},
		{"'..' out of a missing folder", "%s/allowed/nope/../../outside/o1", 403},
		{"a symlinked folder leading out", "%s/allowed/escape", 403},
		{"files linking out", "%s/allowed/linked", 403},
		{"the root", "/", 403},
		{"missing inside", "%s/allowed/nope", 400},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char path[2 * PATH_MAX], body[3 * PATH_MAX], *resp;
		snprintf(path, sizeof path, cases[i].fmt, root);
		for (int vllm = 0; vllm < 2; vllm++) {
			snprintf(body, sizeof body,
				 vllm ? "{\"lora_name\":\"fp\",\"lora_path\":\"%s\"}"
				      : "{\"name\":\"fp\",\"path\":\"%s\"}", path);
			long st = ad_json(&node, "POST", vllm ? "/v1/load_lora_adapter" : "/admin/adapters",
					  body, NULL, &resp);
			if (st != cases[i].status || !strstr(resp, "\"error\""))
				fail_msg("%s (%s): %ld %s", cases[i].name, vllm ? "vLLM" : "admin", st,
					 resp);
			loom_free(resp);
		}
	}
	assert_int_equal(get_adapter("fp", NULL, NULL), 404);
	/* models follow the same rule (their folders: --model-dir or --adapter-dir) */
	char body[3 * PATH_MAX];
	snprintf(body, sizeof body, "{\"name\":\"m2\",\"path\":\"%s/outside\"}", root);
	assert_int_equal(ad_json(&node, "POST", "/admin/models", body, NULL, NULL), 403);
}

static void test_bad_adapter(void **state)
{
	(void)state;
	char body[3 * PATH_MAX], dora[2 * PATH_MAX], *resp;
	snprintf(dora, sizeof dora, "%s/dora", allowed);
	snprintf(body, sizeof body, "{\"name\":\"dora\",\"path\":\"%s\"}", dora);
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters", body, NULL, &resp), 400);
	json_t *j = json_loads(resp, 0, NULL);
	const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
	assert_non_null(msg);
	assert_non_null(strcasestr(msg, "dora"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "type")),
			    "invalid_request_error");
	json_decref(j);
	loom_free(resp);
	assert_int_equal(ad_upload(&node, "dora", dora, "stories", false, NULL, &resp), 400);
	assert_non_null(strcasestr(resp, "dora"));
	loom_free(resp);
	assert_int_equal(get_adapter("dora", NULL, NULL), 404);
	/* bad names and bases */
	snprintf(body, sizeof body, "{\"name\":\"a b\",\"path\":\"%s/a1\"}", allowed);
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters", body, NULL, NULL), 400);
	snprintf(body, sizeof body, "{\"name\":\"stories\",\"path\":\"%s/a1\"}", allowed);
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters", body, NULL, NULL), 409);
	snprintf(body, sizeof body, "{\"name\":\"x\",\"base_model\":\"nope\",\"path\":\"%s/a1\"}",
		 allowed);
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters", body, NULL, &resp), 400);
	assert_non_null(strstr(resp, "nope"));
	loom_free(resp);
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters", "{\"name\":1}", NULL, NULL), 400);
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters", "not json", NULL, NULL), 400);
	assert_int_equal(ad_json(&node, "PATCH", "/admin/adapters", "{}", NULL, NULL), 405);
	assert_int_equal(ad_json(&node, "GET", "/admin/nothing", NULL, NULL, NULL), 404);
}

/* Residency per adapter, the workers' list and /metrics. */
static void test_residency_and_metrics(void **state)
{
	(void)state;
	char body[3 * PATH_MAX], ids[256], *resp;
	snprintf(body, sizeof body, "{\"name\":\"rs\",\"path\":\"%s/a1\"}", allowed);
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters", body, NULL, NULL), 201);
	assert_int_equal(ad_complete(&node, "rs", 4, ids, sizeof ids), 200);
	/* RESIDENCY comes with the worker's STATS: poll */
	bool seen = false;
	for (long end = ad_ms() + 5000; !seen && ad_ms() < end; usleep(50000)) {
		assert_int_equal(ad_json(&node, "GET", "/admin/adapters/rs", NULL, NULL, &resp), 200);
		json_t *j = json_loads(resp, 0, NULL);
		json_t *r0 = json_array_get(json_object_get(j, "resident"), 0);
		if (r0) {
			const char *tier = json_string_value(json_object_get(r0, "tier"));
			assert_true(!strcmp(tier, "device") || !strcmp(tier, "host"));
			assert_string_equal(json_string_value(json_object_get(r0, "worker")), "wk0");
			seen = true;
		}
		json_decref(j);
		loom_free(resp);
	}
	assert_true(seen);
	assert_int_equal(ad_json(&node, "GET", "/admin/workers", NULL, NULL, &resp), 200);
	json_t *j = json_loads(resp, 0, NULL);
	loom_free(resp);
	json_t *w = json_array_get(json_object_get(j, "data"), 0);
	assert_string_equal(json_string_value(json_object_get(w, "id")), "wk0");
	assert_true(json_is_true(json_object_get(w, "live")));
	assert_string_equal(json_string_value(json_object_get(w, "backend")), "cpu");
	json_t *res = json_object_get(w, "residency");
	assert_true(json_is_object(res));
	assert_true(json_integer_value(json_object_get(res, "cold_loads")) >= 1);
	assert_true(json_integer_value(json_object_get(res, "host_budget")) > 0);
	json_decref(j);
	assert_int_equal(ad_json(&node, "GET", "/metrics", NULL, NULL, &resp), 200);
	static const char *const want[] = {
		"loom_requests_in_flight 0", "loom_worker_up{worker=\"wk0\"",
		"loom_worker_cold_loads_total{", "loom_worker_cold_load_ms_total{",
		"loom_worker_cache_hits_total{", "tier=\"device\"", "loom_worker_cache_misses_total{",
		"loom_worker_resident_bytes{", "loom_worker_budget_bytes{", "# TYPE",
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		if (!strstr(resp, want[i]))
			fail_msg("/metrics lacks '%s':\n%s", want[i], resp);
	loom_free(resp);
	assert_int_equal(ad_json(&node, "DELETE", "/admin/adapters/rs", NULL, NULL, NULL), 200);
}

/* A second base model through the admin API, served by the same worker. */
static void test_models(void **state)
{
	(void)state;
	char body[3 * PATH_MAX], ids[256], *resp;
	snprintf(body, sizeof body, "{\"name\":\"baby\",\"path\":\"%s/babyllama105\"}", models_dir);
	assert_int_equal(ad_json(&node, "POST", "/admin/models", body, NULL, &resp), 201);
	assert_non_null(strstr(resp, "\"sha256\":\""));
	loom_free(resp);
	assert_int_equal(ad_json(&node, "POST", "/admin/models", body, NULL, NULL), 409);
	assert_int_equal(ad_complete(&node, "baby", 6, ids, sizeof ids), 200);
	assert_int_equal(ad_json(&node, "GET", "/admin/models", NULL, NULL, &resp), 200);
	assert_non_null(strstr(resp, "\"id\":\"baby\""));
	assert_non_null(strstr(resp, "\"id\":\"stories\""));
	loom_free(resp);
	/* a model with adapters cannot go; one without can */
	snprintf(body, sizeof body, "{\"name\":\"keep\",\"path\":\"%s/a1\"}", allowed);
	/* two models now: the base must be named */
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters", body, NULL, NULL), 400);
	snprintf(body, sizeof body, "{\"name\":\"keep\",\"base_model\":\"stories\",\"path\":\"%s/a1\"}",
		 allowed);
	assert_int_equal(ad_json(&node, "POST", "/admin/adapters", body, NULL, NULL), 201);
	assert_int_equal(ad_json(&node, "DELETE", "/admin/models/stories", NULL, NULL, NULL), 409);
	assert_int_equal(ad_json(&node, "DELETE", "/admin/adapters/keep", NULL, NULL, NULL), 200);
	assert_int_equal(ad_json(&node, "DELETE", "/admin/models/baby", NULL, NULL, NULL), 200);
	assert_int_equal(ad_complete(&node, "baby", 6, ids, sizeof ids), 404);
	assert_int_equal(ad_json(&node, "GET", "/admin/models/baby", NULL, NULL, NULL), 404);
}

/* A request in flight when its adapter is deleted finishes; the next one 404s. */
typedef struct stream_ctx {
	const char *url;
	char *buf;
	size_t len;
	atomic_int got_data;
	atomic_int done;
	long status;
} stream_ctx;

static size_t stream_sink(void *d, size_t sz, size_t nm, void *ud)
{
	stream_ctx *s = ud;
	size_t add = sz * nm;
	char *p = loom_realloc(s->buf, s->len + add + 1);
	if (!p)
		return 0;
	memcpy(p + s->len, d, add);
	s->len += add;
	p[s->len] = '\0';
	s->buf = p;
	atomic_store(&s->got_data, 1);
	return add;
}

static void *stream_main(void *arg)
{
	stream_ctx *s = arg;
	CURL *c = curl_easy_init();
	struct curl_slist *hs = curl_slist_append(NULL, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, s->url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS,
			 "{\"model\":\"fly\",\"prompt\":\"Once upon a time\",\"max_tokens\":400,"
			 "\"temperature\":0,\"ignore_eos\":true,\"stream\":true}");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_sink);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
	if (curl_easy_perform(c) == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &s->status);
	curl_slist_free_all(hs);
	curl_easy_cleanup(c);
	atomic_store(&s->got_data, 1);
	atomic_store(&s->done, 1);
	return NULL;
}

static void test_delete_in_flight(void **state)
{
	(void)state;
	char body[3 * PATH_MAX], url[128], ids[256];
	snprintf(url, sizeof url, "%s/v1/completions", node.url);
	/* the DELETE (a store commit) must land while 400 tokens stream: on a loaded
	 * machine it may not, so a few tries */
	bool overlapped = false;
	for (int attempt = 0; attempt < 5 && !overlapped; attempt++) {
		snprintf(body, sizeof body, "{\"name\":\"fly\",\"path\":\"%s/a1\"}", allowed);
		assert_int_equal(ad_json(&node, "POST", "/admin/adapters", body, NULL, NULL), 201);
		stream_ctx s = {.url = url};
		atomic_init(&s.got_data, 0);
		atomic_init(&s.done, 0);
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, stream_main, &s), 0);
		while (!atomic_load(&s.got_data))
			usleep(1000);
		assert_int_equal(ad_json(&node, "DELETE", "/admin/adapters/fly", NULL, NULL, NULL),
				 200);
		overlapped = !atomic_load(&s.done);
		assert_int_equal(ad_complete(&node, "fly", 4, ids, sizeof ids), 404);
		pthread_join(th, NULL);
		assert_int_equal(s.status, 200);
		assert_non_null(s.buf);
		assert_non_null(strstr(s.buf, "\"finish_reason\":\"length\""));
		assert_non_null(strstr(s.buf, "data: [DONE]"));
		assert_null(strstr(s.buf, "\"error\""));
		loom_free(s.buf);
	}
	if (!overlapped)
		fprintf(stderr, "(every stream ended before its DELETE did: the in-flight case "
				"was not exercised on this loaded machine)\n");
}

/* A non-loopback address of this host, or false. */
static bool other_address(char *ip, size_t n)
{
	struct ifaddrs *ifs, *i;
	bool found = false;
	if (getifaddrs(&ifs))
		return false;
	for (i = ifs; i && !found; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
			continue;
		const struct sockaddr_in *a = (const struct sockaddr_in *)i->ifa_addr;
		if ((ntohl(a->sin_addr.s_addr) >> 24) == 127)
			continue;
		found = inet_ntop(AF_INET, &a->sin_addr, ip, (socklen_t)n) != NULL;
	}
	freeifaddrs(ifs);
	return found;
}

static void test_auth(void **state)
{
	(void)state;
	char ip[64], *resp;
	/* no token configured: a client on another address is refused */
	if (other_address(ip, sizeof ip)) {
		ad_node far = node;
		snprintf(far.url, sizeof far.url, "http://%.40s:%d", ip, node.port);
		assert_int_equal(ad_json(&far, "GET", "/admin/adapters", NULL, NULL, &resp), 403);
		assert_non_null(strstr(resp, "loopback"));
		loom_free(resp);
		/* the OpenAI routes stay open */
		assert_int_equal(ad_json(&far, "GET", "/v1/models", NULL, NULL, NULL), 200);
	} else {
		fprintf(stderr, "(no non-loopback address here: the 403 case is left to the unit "
				"tests)\n");
	}
	/* a gateway with a token (no worker needed to register) */
	ad_node tok;
	char model[3 * PATH_MAX], body[3 * PATH_MAX];
	snprintf(model, sizeof model, "stories=%s", stories);
	const char *gx[] = {"--model", model, "--adapter-dir", allowed, "--admin-token", "s3cret",
			    NULL};
	ad_node_init(&tok, root, "token");
	assert_int_equal(ad_gateway_start(&tok, gx, "health"), 0);
	snprintf(body, sizeof body, "{\"name\":\"t1\",\"path\":\"%s/a1\"}", allowed);
	assert_int_equal(ad_json(&tok, "POST", "/admin/adapters", body, NULL, &resp), 401);
	assert_non_null(strstr(resp, "\"error\""));
	loom_free(resp);
	assert_int_equal(ad_json(&tok, "POST", "/admin/adapters", body, "Bearer nope", NULL), 401);
	assert_int_equal(ad_json(&tok, "GET", "/admin/workers", NULL, "Bearer s3cre", NULL), 401);
	assert_int_equal(ad_json(&tok, "POST", "/v1/load_lora_adapter",
				 "{\"lora_name\":\"t\",\"lora_path\":\"/x\"}", "Basic czNjcmV0", NULL),
			 401);
	char a1[3 * PATH_MAX];
	snprintf(a1, sizeof a1, "%s/a1", allowed);
	assert_int_equal(ad_upload(&tok, "t2", a1, NULL, false, "Bearer bad", NULL), 401);
	assert_int_equal(ad_json(&tok, "GET", "/admin/adapters/t1", NULL, "Bearer s3cret", NULL),
			 404);
	assert_int_equal(ad_json(&tok, "POST", "/admin/adapters", body, "Bearer s3cret", NULL), 201);
	assert_int_equal(ad_upload(&tok, "t2", a1, NULL, false, "Bearer s3cret", NULL), 201);
	assert_int_equal(ad_json(&tok, "GET", "/admin/adapters", NULL, "Bearer s3cret", &resp), 200);
	assert_non_null(strstr(resp, "\"id\":\"t2\""));
	loom_free(resp);
	/* /metrics follows the admin rule */
	assert_int_equal(ad_json(&tok, "GET", "/metrics", NULL, NULL, NULL), 401);
	assert_int_equal(ad_json(&tok, "GET", "/metrics", NULL, "Bearer s3cret", NULL), 200);
	lt_stop(&tok.gw, SIGTERM, 5000);
	/* the token from the environment; the registrations survived the restart */
	setenv("LOOM_ADMIN_TOKEN", "envtok", 1);
	const char *gx2[] = {"--model", model, NULL};
	assert_int_equal(ad_gateway_start(&tok, gx2, "health"), 0);
	unsetenv("LOOM_ADMIN_TOKEN");
	assert_int_equal(ad_json(&tok, "GET", "/admin/adapters/t1", NULL, "Bearer s3cret", NULL),
			 401);
	assert_int_equal(ad_json(&tok, "GET", "/admin/adapters/t1", NULL, "Bearer envtok", NULL),
			 200);
	assert_int_equal(ad_json(&tok, "GET", "/admin/adapters/t2", NULL, "Bearer envtok", NULL),
			 200);
	ad_node_stop(&tok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_route),
		cmocka_unit_test(test_upload_route),
		cmocka_unit_test(test_vllm_aliases),
		cmocka_unit_test(test_forbidden_paths),
		cmocka_unit_test(test_bad_adapter),
		cmocka_unit_test(test_residency_and_metrics),
		cmocka_unit_test(test_models),
		cmocka_unit_test(test_delete_in_flight),
		cmocka_unit_test(test_auth),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
