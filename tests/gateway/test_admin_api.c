/*
 * tests/gateway/test_admin_api.c — gw_admin in-process, over a real
 * registry (a store in a temp dir, stories260k, loom-mkmodel adapters) and
 * no workers: which URLs are its routes, 401 / 403 / 404 / 405 / 413, the
 * path route's 201 -> 409 -> replace -> GET -> DELETE -> 404 cycle, an upload
 * fed in pieces (its temp folder gone afterwards, also when the request is
 * abandoned), an upload over --max-upload-bytes, a DoRA upload refused with
 * its reason, vLLM's load/unload, the models routes, and the JSON and
 * Prometheus shapes built from worker snapshots (resident tiers, label
 * escaping).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/gw_admin.h"
#include "tests/support/harness.h"

static char *tmp;
static char root[PATH_MAX], allowed[PATH_MAX + 16], stories[PATH_MAX];
static gw_models *models;
static gw_registry *reg;
static gw_admin *open_admin, *tok_admin, *pub_admin; /* pub: token and --public-metrics */
static struct sockaddr_in lo, far;

#define MAX_UPLOAD 200000

static int setup(void **state)
{
	(void)state;
	char store[PATH_MAX + 16];
	tmp = lt_tmpdir("admin-api");
	if (!realpath(tmp, root) || !realpath(lt_shared_path("models/stories260k"), stories))
		return -1;
	snprintf(allowed, sizeof allowed, "%s/allowed", root);
	if (lt_sh("%s adapter --model %s --out %s/a1 --rank 4 --seed 1 >/dev/null && "
		  "%s adapter --model %s --out %s/a2 --rank 4 --seed 2 >/dev/null && "
		  "cp -r %s/a1 %s/dora && sed -i 's/\"use_dora\": *false/\"use_dora\": true/' "
		  "%s/dora/adapter_config.json && mkdir -p %s/outside",
		  lt_bin_path("loom-mkmodel"), stories, allowed, lt_bin_path("loom-mkmodel"), stories,
		  allowed, allowed, allowed, allowed, root))
		return -1;
	snprintf(store, sizeof store, "%s/store", root);
	if (gw_models_create(&models) || gw_registry_open(store, models, &reg) ||
	    gw_registry_import_model(reg, "stories", stories, GW_TMPL_PLAIN, GW_REG_SYNC, NULL))
		return -1;
	const char *dirs[] = {allowed};
	gw_admin_opts o = {.adapter_dirs = dirs, .n_adapter_dirs = 1, .max_upload = MAX_UPLOAD,
			   .max_body = 4096, .reg = reg, .models = models};
	if (gw_admin_create(&o, &open_admin))
		return -1;
	o.token = "tok";
	if (gw_admin_create(&o, &tok_admin))
		return -1;
	o.public_metrics = true;
	if (gw_admin_create(&o, &pub_admin))
		return -1;
	lo.sin_family = far.sin_family = AF_INET;
	inet_pton(AF_INET, "127.0.0.1", &lo.sin_addr);
	inet_pton(AF_INET, "198.51.100.3", &far.sin_addr);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	gw_admin_destroy(open_admin);
	gw_admin_destroy(tok_admin);
	gw_admin_destroy(pub_admin);
	gw_registry_close(reg);
	gw_models_destroy(models);
	loom_free(tmp);
	return 0;
}

typedef struct call {
	gw_admin *a;             /* NULL = open_admin */
	const char *method, *url;
	const char *body;        /* NULL = none */
	size_t len;              /* 0 = strlen(body) */
	const char *ctype;
	const char *auth;
	bool remote;
	const char *replace;
	long long declared;      /* Content-Length; 0 = the body's length, -2 = absent */
	size_t piece;            /* feed the body in pieces of this size (0 = whole) */
} call;

/* Runs one request; -1 when it is not an admin route. *r holds the reply. */
static int run(const call *c, gw_reply *r)
{
	size_t len = c->body ? (c->len ? c->len : strlen(c->body)) : 0;
	gw_admin_in in = {.method = c->method, .url = c->url, .authorization = c->auth,
			  .peer = (const struct sockaddr *)(c->remote ? &far : &lo),
			  .content_type = c->ctype, .replace = c->replace,
			  .content_length = c->declared == -2 ? -1 : c->declared ? c->declared
										  : (long long)len};
	gw_admin_req *x;
	memset(r, 0, sizeof *r);
	if (!gw_admin_begin(c->a ? c->a : open_admin, &in, &x))
		return -1;
	assert_non_null(x);
	for (size_t off = 0; off < len;) {
		size_t n = c->piece && c->piece < len - off ? c->piece : len - off;
		gw_admin_body(x, c->body + off, n);
		off += n;
	}
	gw_admin_finish(x, r);
	gw_admin_req_free(x);
	return r->status;
}

static int status_of(const call *c)
{
	gw_reply r;
	int st = run(c, &r);
	loom_free(r.body);
	return st;
}

static void test_routes_and_auth(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		call c;
		int status;
	} cases[] = {
		{"not ours", {.method = "POST", .url = "/v1/completions"}, -1},
		{"look-alike", {.method = "GET", .url = "/adminx"}, -1},
		{"look-alike 2", {.method = "GET", .url = "/metricsx"}, -1},
		{"unknown admin route", {.method = "GET", .url = "/admin"}, 404},
		{"unknown admin route 2", {.method = "GET", .url = "/admin/adapters/x/y"}, 404},
		{"bad method", {.method = "PATCH", .url = "/admin/adapters"}, 405},
		{"bad method 2", {.method = "POST", .url = "/admin/workers"}, 405},
		{"bad method 3", {.method = "PUT", .url = "/admin/models/x"}, 405},
		{"list", {.method = "GET", .url = "/admin/adapters"}, 200},
		{"HEAD list", {.method = "HEAD", .url = "/admin/models"}, 200},
		{"workers, none", {.method = "GET", .url = "/admin/workers"}, 200},
		{"remote, no token", {.method = "GET", .url = "/admin/adapters", .remote = true}, 403},
		{"remote, vLLM route", {.method = "POST", .url = "/v1/unload_lora_adapter",
					.body = "{\"lora_name\":\"x\"}", .remote = true}, 403},
		{"remote, metrics: the admin rule", {.method = "GET", .url = "/metrics", .remote = true},
		 403},
		{"local, metrics", {.method = "GET", .url = "/metrics"}, 200},
		{"token: none", {.a = NULL, .method = "GET", .url = "/admin/adapters"}, 200},
		{"missing adapter", {.method = "GET", .url = "/admin/adapters/nope"}, 404},
		{"missing model", {.method = "GET", .url = "/admin/models/nope"}, 404},
		{"delete missing", {.method = "DELETE", .url = "/admin/adapters/nope"}, 404},
		{"declared too big", {.method = "POST", .url = "/admin/adapters", .body = "{}",
				      .declared = 5000}, 413},
		{"not JSON", {.method = "POST", .url = "/admin/adapters", .body = "nope"}, 400},
		{"not an object", {.method = "POST", .url = "/admin/adapters", .body = "[1]"}, 400},
		{"no name", {.method = "POST", .url = "/admin/adapters", .body = "{\"path\":\"/x\"}"},
		 400},
		{"name not a string", {.method = "POST", .url = "/admin/adapters",
				       .body = "{\"name\":1,\"path\":\"/x\"}"}, 400},
		{"bad name", {.method = "POST", .url = "/admin/adapters",
			      .body = "{\"name\":\"a/b\",\"path\":\"/x\"}"}, 400},
		{"replace not a bool", {.method = "POST", .url = "/admin/adapters",
					.body = "{\"name\":\"a\",\"path\":\"/x\",\"replace\":1}"}, 400},
		{"forbidden path", {.method = "POST", .url = "/admin/adapters",
				    .body = "{\"name\":\"a\",\"path\":\"/etc\"}"}, 403},
		{"empty body", {.method = "POST", .url = "/admin/adapters", .body = ""}, 400},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		gw_reply r;
		int st = run(&cases[i].c, &r);
		if (st != cases[i].status)
			fail_msg("%s: %d, want %d: %s", cases[i].name, st, cases[i].status,
				 r.body ? r.body : "");
		if (st >= 400) {
			/* OpenAI's error shape */
			json_t *j = json_loads(r.body, 0, NULL);
			json_t *e = json_object_get(j, "error");
			if (!json_is_string(json_object_get(e, "message")) ||
			    !json_is_string(json_object_get(e, "type")))
				fail_msg("%s: not an OpenAI error: %s", cases[i].name, r.body);
			json_decref(j);
		}
		if (st == 405)
			assert_non_null(r.allow);
		loom_free(r.body);
	}
	/* the token: 401 with WWW-Authenticate, whatever the client's address */
	call c = {.a = tok_admin, .method = "GET", .url = "/admin/adapters"};
	gw_reply r;
	assert_int_equal(run(&c, &r), 401);
	assert_true(r.www_authenticate);
	assert_non_null(strstr(r.body, "authentication_error"));
	loom_free(r.body);
	c.auth = "Bearer nope";
	assert_int_equal(status_of(&c), 401);
	c.auth = "Bearer tok";
	assert_int_equal(status_of(&c), 200);
	/* /metrics: the token too, unless public */
	call m = {.a = tok_admin, .method = "GET", .url = "/metrics"};
	assert_int_equal(status_of(&m), 401);
	m.auth = "Bearer tok";
	assert_int_equal(status_of(&m), 200);
	call pm = {.a = pub_admin, .method = "GET", .url = "/metrics", .remote = true};
	assert_int_equal(status_of(&pm), 200);
	pm.url = "/admin/workers";
	assert_int_equal(status_of(&pm), 401);
	c.remote = true;
	assert_int_equal(status_of(&c), 200);
	c.auth = NULL;
	assert_int_equal(status_of(&c), 401);
	/* a refused request whose body goes on and on: the connection is dropped */
	gw_admin_in in = {.method = "POST", .url = "/admin/adapters", .authorization = "Bearer x",
			  .peer = (const struct sockaddr *)&lo, .content_length = -1};
	gw_admin_req *x;
	assert_true(gw_admin_begin(tok_admin, &in, &x));
	assert_true(gw_admin_decided(x));
	char *junk = loom_calloc(1, GW_ADMIN_DRAIN_MAX / 2 + 1);
	assert_true(gw_admin_body(x, junk, GW_ADMIN_DRAIN_MAX / 2 + 1));
	assert_false(gw_admin_body(x, junk, GW_ADMIN_DRAIN_MAX / 2 + 1));
	loom_free(junk);
	gw_admin_req_free(x);
	/* an undeclared body over the cap */
	static char big[6000];
	memset(big, ' ', sizeof big - 1);
	call b = {.method = "POST", .url = "/admin/models", .body = big, .declared = -2,
		  .piece = 1000};
	assert_int_equal(status_of(&b), 413);
}

static void field(const char *body, const char *key, char *out, size_t n)
{
	json_t *j = json_loads(body, 0, NULL);
	json_t *v = json_object_get(j, key);
	if (json_is_string(v))
		snprintf(out, n, "%s", json_string_value(v));
	else
		snprintf(out, n, "%lld", (long long)json_integer_value(v));
	json_decref(j);
}

static void test_path_cycle(void **state)
{
	(void)state;
	char body[PATH_MAX + 100], v[80];
	gw_reply r;
	snprintf(body, sizeof body, "{\"name\":\"p1\",\"base_model\":\"stories\",\"path\":\"%s/a1\"}",
		 allowed);
	call c = {.method = "POST", .url = "/admin/adapters", .body = body};
	assert_int_equal(run(&c, &r), 201);
	field(r.body, "version", v, sizeof v);
	assert_string_equal(v, "1");
	field(r.body, "object", v, sizeof v);
	assert_string_equal(v, "lora_adapter");
	field(r.body, "root", v, sizeof v);
	assert_true(strstr(v, "/allowed/a1") != NULL);
	char sha1[80];
	field(r.body, "sha256", sha1, sizeof sha1);
	assert_int_equal(strlen(sha1), 64);
	assert_non_null(strstr(r.body, "\"resident\":[]"));
	loom_free(r.body);
	assert_int_equal(status_of(&c), 409);
	snprintf(body, sizeof body, "{\"name\":\"p1\",\"path\":\"%s/a2\"}", allowed);
	c.replace = "true";
	assert_int_equal(run(&c, &r), 200);
	field(r.body, "version", v, sizeof v);
	assert_string_equal(v, "2");
	field(r.body, "sha256", v, sizeof v);
	assert_string_not_equal(v, sha1);
	loom_free(r.body);
	/* "replace": true in the body works as well */
	c.replace = NULL;
	snprintf(body, sizeof body, "{\"name\":\"p1\",\"path\":\"%s/a1\",\"replace\":true}", allowed);
	assert_int_equal(status_of(&c), 200);
	call g = {.method = "GET", .url = "/admin/adapters/p1"};
	assert_int_equal(run(&g, &r), 200);
	field(r.body, "version", v, sizeof v);
	assert_string_equal(v, "3");
	field(r.body, "sha256", v, sizeof v);
	assert_string_equal(v, sha1); /* content-addressed: a1 again */
	loom_free(r.body);
	call d = {.method = "DELETE", .url = "/admin/adapters/p1"};
	assert_int_equal(status_of(&d), 200);
	assert_int_equal(status_of(&g), 404);
	assert_int_equal(status_of(&d), 404);
	/* a missing folder inside the allowed one, a DoRA folder */
	snprintf(body, sizeof body, "{\"name\":\"p2\",\"path\":\"%s/nope\"}", allowed);
	c.replace = NULL;
	assert_int_equal(status_of(&c), 400);
	snprintf(body, sizeof body, "{\"name\":\"p2\",\"path\":\"%s/dora\"}", allowed);
	assert_int_equal(run(&c, &r), 400);
	assert_non_null(strcasestr(r.body, "dora"));
	loom_free(r.body);
	/* vLLM */
	snprintf(body, sizeof body, "{\"lora_name\":\"v1\",\"lora_path\":\"%s/a1\"}", allowed);
	call l = {.method = "POST", .url = "/v1/load_lora_adapter", .body = body};
	assert_int_equal(run(&l, &r), 200);
	assert_string_equal(r.content_type, "text/plain; charset=utf-8");
	loom_free(r.body);
	assert_int_equal(status_of(&l), 409);
	call u = {.method = "POST", .url = "/v1/unload_lora_adapter", .body = "{\"lora_name\":\"v1\"}"};
	assert_int_equal(status_of(&u), 200);
	assert_int_equal(status_of(&u), 404);
}

/* A multipart body for the files of PEFT folder dir (+ optional extra part). */
static char *multipart(const char *dir, const char *base, size_t junk, size_t *len)
{
	char path[PATH_MAX + 64];
	const char *files[] = {"adapter_config.json", "adapter_model.safetensors"};
	const char *parts[] = {"adapter_config", "adapter_model"};
	size_t cap = 1 << 20, n = 0;
	char *b = loom_malloc(cap + junk);
	assert_non_null(b);
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, files[i]);
		FILE *f = fopen(path, "rb");
		assert_non_null(f);
		n += (size_t)sprintf(b + n, "--BnD\r\nContent-Disposition: form-data; name=\"%s\"; "
					    "filename=\"%s\"\r\nContent-Type: application/octet-stream"
					    "\r\n\r\n", parts[i], files[i]);
		n += fread(b + n, 1, cap - n - 1024, f);
		fclose(f);
		n += (size_t)sprintf(b + n, "\r\n");
	}
	if (base)
		n += (size_t)sprintf(b + n, "--BnD\r\nContent-Disposition: form-data; "
					    "name=\"base_model\"\r\n\r\n%s\r\n", base);
	if (junk) {
		n += (size_t)sprintf(b + n, "--BnD\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n");
		memset(b + n, 'j', junk);
		n += junk;
		n += (size_t)sprintf(b + n, "\r\n");
	}
	n += (size_t)sprintf(b + n, "--BnD--\r\n");
	*len = n;
	return b;
}

static bool uploads_empty(void)
{
	return lt_sh("test -z \"$(ls -A %s/store/uploads)\"", root) == 0;
}

static void test_uploads(void **state)
{
	(void)state;
	char dir[PATH_MAX + 64];
	size_t len;
	gw_reply r;
	snprintf(dir, sizeof dir, "%s/a1", allowed);
	char *body = multipart(dir, "stories", 0, &len);
	call c = {.method = "PUT", .url = "/admin/adapters/u1", .body = body, .len = len,
		  .ctype = "multipart/form-data; boundary=BnD", .piece = 777};
	assert_int_equal(run(&c, &r), 201);
	assert_non_null(strstr(r.body, "\"root\":null"));
	loom_free(r.body);
	assert_true(uploads_empty());
	assert_int_equal(status_of(&c), 409);
	c.replace = "1";
	c.piece = 1;
	assert_int_equal(status_of(&c), 200);
	assert_true(uploads_empty());
	/* abandoned half way: the temp folder goes with the request */
	gw_admin_in in = {.method = "PUT", .url = "/admin/adapters/u2", .peer = (void *)&lo,
			  .content_type = c.ctype, .content_length = (long long)len};
	gw_admin_req *x;
	assert_true(gw_admin_begin(open_admin, &in, &x));
	gw_admin_body(x, body, len / 2);
	assert_false(uploads_empty());
	gw_admin_req_free(x);
	assert_true(uploads_empty());
	loom_free(body);
	/* over --max-upload-bytes: declared, and streamed without a length */
	body = multipart(dir, NULL, MAX_UPLOAD, &len);
	c = (call){.method = "PUT", .url = "/admin/adapters/u3", .body = body, .len = len,
		   .ctype = "multipart/form-data; boundary=BnD", .piece = 4096};
	assert_int_equal(run(&c, &r), 413);
	assert_non_null(strstr(r.body, "max-upload-bytes"));
	loom_free(r.body);
	c.declared = -2;
	assert_int_equal(status_of(&c), 413);
	assert_true(uploads_empty());
	loom_free(body);
	/* a DoRA upload: 400 with the reason; missing parts; no multipart */
	snprintf(dir, sizeof dir, "%s/dora", allowed);
	body = multipart(dir, NULL, 0, &len);
	c = (call){.method = "PUT", .url = "/admin/adapters/u4", .body = body, .len = len,
		   .ctype = "multipart/form-data; boundary=BnD"};
	assert_int_equal(run(&c, &r), 400);
	assert_non_null(strcasestr(r.body, "dora"));
	loom_free(r.body);
	loom_free(body);
	static const char only_base[] = "--BnD\r\nContent-Disposition: form-data; name=\"base_model\""
					"\r\n\r\nstories\r\n--BnD--\r\n";
	c = (call){.method = "PUT", .url = "/admin/adapters/u4", .body = only_base,
		   .ctype = "multipart/form-data; boundary=BnD"};
	assert_int_equal(run(&c, &r), 400);
	assert_non_null(strstr(r.body, "adapter_config"));
	loom_free(r.body);
	c.ctype = "application/json";
	assert_int_equal(status_of(&c), 400);
	c.ctype = "multipart/form-data; boundary=BnD";
	c.body = "--BnD\r\nContent-Disposition: form-data; name=\"adapter_config\"\r\n\r\n{";
	assert_int_equal(run(&c, &r), 400);
	assert_non_null(strstr(r.body, "closing boundary"));
	loom_free(r.body);
	c.url = "/admin/adapters/bad%20name";
	assert_int_equal(status_of(&c), 400);
	assert_true(uploads_empty());
	call d = {.method = "DELETE", .url = "/admin/adapters/u1"};
	assert_int_equal(status_of(&d), 200);
}

static void test_models_routes(void **state)
{
	(void)state;
	gw_reply r;
	call c = {.method = "GET", .url = "/admin/models/stories"};
	assert_int_equal(run(&c, &r), 200);
	json_t *j = json_loads(r.body, 0, NULL);
	assert_int_equal(json_integer_value(json_object_get(j, "max_model_len")), 512);
	assert_int_equal(strlen(json_string_value(json_object_get(j, "sha256"))), 64);
	assert_int_equal(json_integer_value(json_object_get(j, "version")), 1);
	json_decref(j);
	loom_free(r.body);
	/* model folders are only read under the allowed folders */
	char body[PATH_MAX + 100];
	snprintf(body, sizeof body, "{\"name\":\"s2\",\"path\":\"%s\"}", stories);
	call p = {.method = "POST", .url = "/admin/models", .body = body};
	assert_int_equal(status_of(&p), 403);
	snprintf(body, sizeof body, "{\"name\":\"s2\",\"path\":\"%s/a1\"}", allowed);
	assert_int_equal(run(&p, &r), 400); /* an adapter folder is no model */
	assert_non_null(strstr(r.body, "config.json"));
	loom_free(r.body);
	snprintf(body, sizeof body, "{\"name\":\"s2\",\"path\":\"%s/a1\",\"chat_template\":\"x\"}",
		 allowed);
	assert_int_equal(status_of(&p), 400);
	call d = {.method = "DELETE", .url = "/admin/models/nope"};
	assert_int_equal(status_of(&d), 404);
	/* another model under the name: 409 without replace; with replace, 409 while
	 * adapters made for the old shapes use it */
	assert_int_equal(lt_sh("cp -r %s %s/baby", lt_shared_path("models/babyllama105"), allowed), 0);
	snprintf(body, sizeof body, "{\"name\":\"keep\",\"path\":\"%s/a1\"}", allowed);
	call k = {.method = "POST", .url = "/admin/adapters", .body = body};
	assert_int_equal(status_of(&k), 201);
	char mb[PATH_MAX + 100];
	snprintf(mb, sizeof mb, "{\"name\":\"stories\",\"path\":\"%s/baby\"}", allowed);
	call m = {.method = "POST", .url = "/admin/models", .body = mb};
	assert_int_equal(status_of(&m), 409);
	m.replace = "true";
	assert_int_equal(run(&m, &r), 409);
	assert_non_null(strstr(r.body, "other shapes"));
	loom_free(r.body);
	call kd = {.method = "DELETE", .url = "/admin/adapters/keep"};
	assert_int_equal(status_of(&kd), 200);
	/* a new model by its own name; deleted again */
	snprintf(mb, sizeof mb, "{\"name\":\"baby\",\"path\":\"%s/baby\"}", allowed);
	m.replace = NULL;
	assert_int_equal(run(&m, &r), 201);
	assert_non_null(strstr(r.body, "\"vocab\":105"));
	loom_free(r.body);
	/* two models: a new adapter must name its base; a new version keeps it */
	snprintf(body, sizeof body, "{\"name\":\"k2\",\"path\":\"%s/a1\"}", allowed);
	assert_int_equal(status_of(&k), 400);
	snprintf(body, sizeof body, "{\"name\":\"k2\",\"base_model\":\"stories\",\"path\":\"%s/a1\"}",
		 allowed);
	assert_int_equal(status_of(&k), 201);
	snprintf(body, sizeof body, "{\"name\":\"k2\",\"path\":\"%s/a2\"}", allowed);
	k.replace = "true";
	assert_int_equal(run(&k, &r), 200);
	assert_non_null(strstr(r.body, "\"base_model\":\"stories\""));
	loom_free(r.body);
	call k2d = {.method = "DELETE", .url = "/admin/adapters/k2"};
	assert_int_equal(status_of(&k2d), 200);
	call bd = {.method = "DELETE", .url = "/admin/models/baby"};
	assert_int_equal(status_of(&bd), 200);
	assert_int_equal(status_of(&bd), 404);
}

static void test_shapes(void **state)
{
	(void)state;
	loom_resident items[] = {
		{.kind = 0, .tier = LOOM_TIER_HOST, .name = "ad", .bytes = 10},
		{.kind = 0, .tier = LOOM_TIER_DEVICE, .name = "ad", .bytes = 10},
		{.kind = 0, .tier = LOOM_TIER_DEVICE, .name = "other", .bytes = 10},
		{.kind = 1, .tier = LOOM_TIER_DEVICE, .name = "stories", .bytes = 99},
	};
	for (int i = 0; i < 4; i++)
		snprintf(items[i].sha, sizeof items[i].sha, "%064d", i == 2 ? 7 : 1);
	gw_worker_info w[2];
	memset(w, 0, sizeof w);
	snprintf(w[0].url, sizeof w[0].url, "ipc:///a\"b\\c");
	snprintf(w[0].id, sizeof w[0].id, "w\"0");
	w[0].live = w[0].has_residency = w[0].has_stats = true;
	w[0].res = (loom_msg_residency){.n = 4, .items = items, .host_bytes = 10, .host_budget = 100,
					.device_bytes = 20, .device_budget = 50, .model_bytes = 99,
					.host_hits = 5, .device_misses = 2, .cold_loads = 2,
					.cold_load_ms = 1.25};
	w[0].stats.tokens_out = 42;
	snprintf(w[1].url, sizeof w[1].url, "tcp://h:1");
	gw_adapter a = {.rank = 4, .max_rank = 4, .alpha = 8, .targets = 3, .bytes = 10,
			.version = 2, .created = 5};
	gw_model *base = gw_models_get(models, "stories");
	a.base = base;
	snprintf(a.name, sizeof a.name, "ad");
	snprintf(a.sha, sizeof a.sha, "%064d", 1);
	char *s = gw_admin_adapter_json(&a, w, 2);
	json_t *j = json_loads(s, 0, NULL);
	json_t *res = json_object_get(j, "resident");
	assert_int_equal(json_array_size(res), 1); /* the best tier per worker */
	assert_string_equal(json_string_value(json_object_get(json_array_get(res, 0), "tier")),
			    "device");
	assert_string_equal(json_string_value(json_object_get(json_array_get(res, 0), "worker")),
			    "w\"0");
	assert_string_equal(json_string_value(json_array_get(json_object_get(j, "targets"), 1)),
			    "k_proj");
	assert_true(json_is_null(json_object_get(j, "root")));
	json_decref(j);
	loom_free(s);
	/* another version is not resident anywhere */
	snprintf(a.sha, sizeof a.sha, "%064d", 3);
	s = gw_admin_adapter_json(&a, w, 2);
	assert_non_null(strstr(s, "\"resident\":[]"));
	loom_free(s);
	s = gw_admin_model_json(base, 3, w, 2);
	assert_non_null(strstr(s, "\"adapters\":3"));
	assert_non_null(strstr(s, "\"tier\":\"device\""));
	loom_free(s);
	s = gw_admin_workers_json(w, 2);
	j = json_loads(s, 0, NULL);
	json_t *w0 = json_array_get(json_object_get(j, "data"), 0);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(w0, "residency"),
							    "host_budget")), 100);
	assert_int_equal(json_array_size(json_object_get(json_object_get(w0, "residency"), "items")),
			 4);
	assert_true(json_is_null(json_object_get(json_array_get(json_object_get(j, "data"), 1),
						 "residency")));
	json_decref(j);
	loom_free(s);
	s = gw_admin_metrics_text(w, 2, 3, 1, 7);
	static const char *const want[] = {
		"loom_requests_in_flight 3\n",
		"loom_adapters_registered 7\n",
		"loom_worker_up{worker=\"w\\\"0\",url=\"ipc:///a\\\"b\\\\c\"} 1\n",
		"loom_worker_up{worker=\"tcp://h:1\",url=\"tcp://h:1\"} 0\n",
		"# TYPE loom_worker_cache_hits_total counter\n",
		"loom_worker_cache_hits_total{worker=\"w\\\"0\",url=\"ipc:///a\\\"b\\\\c\",tier=\"host\"} 5\n",
		"loom_worker_cache_misses_total{worker=\"w\\\"0\",url=\"ipc:///a\\\"b\\\\c\",tier=\"device\"} 2\n",
		"loom_worker_cold_load_ms_total{worker=\"w\\\"0\",url=\"ipc:///a\\\"b\\\\c\"} 1.250\n",
		"loom_worker_resident_bytes{worker=\"w\\\"0\",url=\"ipc:///a\\\"b\\\\c\",tier=\"model\"} 99\n",
		"loom_worker_budget_bytes{worker=\"w\\\"0\",url=\"ipc:///a\\\"b\\\\c\",tier=\"device\"} 50\n",
		"loom_worker_tokens_generated_total{worker=\"w\\\"0\",url=\"ipc:///a\\\"b\\\\c\"} 42\n",
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		if (!strstr(s, want[i]))
			fail_msg("metrics lack %s\n%s", want[i], s);
	assert_null(strstr(s, "tcp://h:1\",tier")); /* no residency lines without RESIDENCY */
	loom_free(s);
	gw_model_release(base);
}

/* A model's chat template travels in its store bundle: imported with a
 * tokenizer_config.json, it is the model's template again after the
 * registry is reopened from the store alone (the folder gone). Runs last:
 * it reopens the registry. */
static void test_template_in_store(void **state)
{
	(void)state;
	char dir[PATH_MAX + 32], store[PATH_MAX + 16];
	snprintf(dir, sizeof dir, "%s/chatty", root);
	snprintf(store, sizeof store, "%s/store", root);
	assert_int_equal(lt_sh("mkdir -p %s && cp %s/config.json %s/model.safetensors "
			       "%s/tokenizer.json %s/ && printf '%%s' '{\"bos_token\": \"<s>\", "
			       "\"chat_template\": \"{{ bos_token }}{{ messages[0].content }}!\"}' "
			       "> %s/tokenizer_config.json", dir, stories, stories, stories, dir, dir),
			 0);
	assert_int_equal(gw_registry_import_model(reg, "chatty", dir, GW_TMPL_AUTO, GW_REG_CREATE,
						  NULL), LOOM_OK);
	assert_int_equal(gw_models_find(models, "chatty")->tmpl, GW_TMPL_MODEL);
	assert_int_equal(lt_sh("rm -rf %s", dir), 0);
	gw_registry_close(reg);
	gw_models_destroy(models);
	assert_int_equal(gw_models_create(&models), LOOM_OK);
	assert_int_equal(gw_registry_open(store, models, &reg), LOOM_OK);
	assert_int_equal(gw_registry_load(reg, NULL), LOOM_OK);
	const gw_model *md = gw_models_find(models, "chatty");
	assert_non_null(md);
	assert_int_equal(md->tmpl, GW_TMPL_MODEL);
	assert_non_null(md->jinja);
	assert_string_equal(md->bos_token, "<s>");
	json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
	gw_chat_ctx cx = {.messages = msgs, .bos_token = md->bos_token, .eos_token = ""};
	char *out;
	size_t len;
	assert_int_equal(gw_chat_render_jinja(md->jinja, &cx, &out, &len), LOOM_OK);
	assert_string_equal(out, "<s>hi!");
	loom_free(out);
	json_decref(msgs);
	/* stories260k, imported without one, still has none */
	assert_int_equal(gw_models_find(models, "stories")->tmpl, GW_TMPL_PLAIN);
	assert_null(gw_models_find(models, "stories")->jinja);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes_and_auth),
		cmocka_unit_test(test_path_cycle),
		cmocka_unit_test(test_uploads),
		cmocka_unit_test(test_models_routes),
		cmocka_unit_test(test_shapes),
		cmocka_unit_test(test_template_in_store),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
