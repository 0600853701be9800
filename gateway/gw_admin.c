/*
 * gateway/gw_admin.c — admin routes: matching, authentication, bodies (JSON
 * kept in memory up to max_body; multipart uploads go to gw_admin_upload.c),
 * and the handlers, which call the registry and shape replies. A refusal
 * known early (auth, route, declared size) is "decided" at gw_admin_begin and
 * the body is dropped.
 */
#include "gw_admin_int.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "gw_openai.h"
#include "gw_policy.h"
#include "gw_req.h"

/* ---- creation ---- */

static void free_list(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		loom_free(v[i]);
	loom_free(v);
}

static char **copy_list(const char *const *a, size_t na, const char *const *b, size_t nb)
{
	char **v = loom_calloc(na + nb + 1, sizeof *v);
	for (size_t i = 0; v && i < na + nb; i++) {
		if (!(v[i] = loom_strdup(i < na ? a[i] : b[i - na]))) {
			free_list(v, na + nb);
			return NULL;
		}
	}
	return v;
}

loom_err gw_admin_create(const gw_admin_opts *o, gw_admin **out)
{
	*out = NULL;
	gw_admin *a = loom_calloc(1, sizeof *a);
	if (!a)
		return loom_fail(LOOM_ENOMEM, "out of memory starting the admin API");
	a->adirs = copy_list(o->adapter_dirs, o->n_adapter_dirs, NULL, 0);
	a->n_adirs = o->n_adapter_dirs;
	a->mdirs = copy_list(o->model_dirs, o->n_model_dirs, o->adapter_dirs, o->n_adapter_dirs);
	a->n_mdirs = o->n_model_dirs + o->n_adapter_dirs;
	a->token = o->token && *o->token ? loom_strdup(o->token) : NULL;
	if (!a->adirs || !a->mdirs || (o->token && *o->token && !a->token)) {
		gw_admin_destroy(a);
		return loom_fail(LOOM_ENOMEM, "out of memory starting the admin API");
	}
	a->max_upload = o->max_upload;
	a->max_body = o->max_body;
	a->reg = o->reg;
	a->models = o->models;
	a->link = o->link;
	a->slo = o->slo;
	a->public_metrics = o->public_metrics;
	*out = a;
	return LOOM_OK;
}

void gw_admin_destroy(gw_admin *a)
{
	if (!a)
		return;
	free_list(a->adirs, a->n_adirs);
	free_list(a->mdirs, a->n_mdirs);
	loom_free(a->token);
	loom_free(a);
}

/* ---- replies ---- */

void gwa_set_reply(gw_reply *r, int status, char *body, const char *ctype)
{
	r->status = status;
	r->body = body;
	r->content_type = ctype;
	r->allow = NULL;
	r->www_authenticate = false;
}

void gwa_err_reply(gw_reply *r, int status, const char *type, const char *param,
		      const char *code, const char *fmt, ...)
{
	gw_api_err e;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	gw_api_err_set(&e, status, type, param, code, "%s", msg);
	gwa_set_reply(r, status, gw_openai_error_json(&e), "application/json");
}

void gwa_decide_err(gw_admin_req *x, int status, const char *type, const char *code,
		       const char *msg)
{
	if (x->decided)
		return;
	x->decided = true;
	gwa_err_reply(&x->reply, status, type, NULL, code, "%s", msg);
}

void gwa_reg_err(gw_reply *r, loom_err rc, const char *param)
{
	const char *msg = loom_errmsg();
	switch (rc) {
	case LOOM_EINVAL:
		gwa_err_reply(r, 400, "invalid_request_error", param, NULL, "%s", msg);
		break;
	case LOOM_EEXIST:
	case LOOM_EBUSY:
		gwa_err_reply(r, 409, "invalid_request_error", param, "conflict", "%s", msg);
		break;
	case LOOM_ENOTFOUND:
		gwa_err_reply(r, 404, "invalid_request_error", param, "not_found", "%s", msg);
		break;
	case LOOM_ETIMEDOUT:
		gwa_err_reply(r, 504, "server_error", param, "import_timeout", "%s", msg);
		break;
	default:
		gwa_err_reply(r, 500, "server_error", NULL, NULL, "%s: %s", loom_strerror(rc), msg);
	}
}

/* ---- begin ---- */

static bool parse_route(const char *url, route *rt, const char **name)
{
	static const struct {
		const char *prefix;
		route one, many;
	} tab[] = {
		{"/admin/adapters", A_ADAPTER, A_ADAPTERS},
		{"/admin/models", A_MODEL, A_MODELS},
	};
	*name = NULL;
	if (!strcmp(url, "/metrics")) {
		*rt = A_METRICS;
		return true;
	}
	if (!strcmp(url, "/v1/load_lora_adapter")) {
		*rt = A_VLLM_LOAD;
		return true;
	}
	if (!strcmp(url, "/v1/unload_lora_adapter")) {
		*rt = A_VLLM_UNLOAD;
		return true;
	}
	if (strncmp(url, "/admin", 6) || (url[6] && url[6] != '/'))
		return false;
	*rt = A_UNKNOWN;
	if (!strcmp(url, "/admin/workers")) {
		*rt = A_WORKERS;
		return true;
	}
	for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
		size_t n = strlen(tab[i].prefix);
		if (strncmp(url, tab[i].prefix, n))
			continue;
		if (!url[n] || !strcmp(url + n, "/")) {
			*rt = tab[i].many;
		} else if (url[n] == '/' && !strchr(url + n + 1, '/')) {
			*rt = tab[i].one;
			*name = url + n + 1;
		}
		break;
	}
	return true;
}

/* The methods each route takes (for 405's Allow header). */
static const char *allowed(route rt)
{
	switch (rt) {
	case A_ADAPTERS: return "GET, POST";
	case A_ADAPTER: return "GET, PUT, DELETE";
	case A_MODELS: return "GET, POST";
	case A_MODEL: return "GET, DELETE";
	case A_WORKERS: return "GET";
	case A_VLLM_LOAD:
	case A_VLLM_UNLOAD: return "POST";
	case A_METRICS: return "GET";
	case A_UNKNOWN: break;
	}
	return NULL;
}

static bool method_ok(route rt, const char *m)
{
	const char *list = allowed(rt);
	if (!list)
		return true;
	if (!strcmp(m, "HEAD"))
		m = "GET";
	size_t n = strlen(m);
	for (const char *p = list; (p = strstr(p, m)); p += n)
		if ((p == list || p[-1] == ' ') && (!p[n] || p[n] == ','))
			return true;
	return false;
}

static bool truthy(const char *v)
{
	return v && (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"));
}


bool gw_admin_begin(gw_admin *a, const gw_admin_in *in, gw_admin_req **out)
{
	route rt;
	const char *name;
	*out = NULL;
	if (!parse_route(in->url, &rt, &name))
		return false;
	gw_admin_req *x = loom_calloc(1, sizeof *x);
	if (!x)
		return true;
	*out = x;
	x->a = a;
	x->rt = rt;
	x->fd = -1;
	snprintf(x->method, sizeof x->method, "%s", in->method);
	if (name && strlen(name) < sizeof x->name)
		strcpy(x->name, name);
	x->replace = truthy(in->replace);
	if (rt != A_METRICS || !a->public_metrics) {
		char why[256];
		gw_auth au = gw_auth_check(a->token, in->authorization, in->peer, why, sizeof why);
		if (au == GW_AUTH_UNAUTHORIZED) {
			gwa_decide_err(x, 401, "authentication_error", "invalid_api_key", why);
			x->reply.www_authenticate = true;
			return true;
		}
		if (au == GW_AUTH_FORBIDDEN) {
			gwa_decide_err(x, 403, "permission_error", "forbidden", why);
			return true;
		}
	}
	if (rt == A_UNKNOWN) {
		char msg[600];
		snprintf(msg, sizeof msg, "no route for %s %.500s", in->method, in->url);
		gwa_decide_err(x, 404, "invalid_request_error", "not_found", msg);
		return true;
	}
	if (!method_ok(rt, in->method)) {
		char msg[600];
		snprintf(msg, sizeof msg, "%s is not allowed on %.400s (use %s)", in->method, in->url,
			 allowed(rt));
		gwa_decide_err(x, 405, "invalid_request_error", NULL, msg);
		x->reply.allow = allowed(rt);
		return true;
	}
	bool writes = strcmp(x->method, "GET") && strcmp(x->method, "HEAD");
	if (!a->reg && writes && rt != A_METRICS) {
		gwa_decide_err(x, 503, "service_unavailable", NULL, "the gateway runs without a store");
		return true;
	}
	if (rt == A_ADAPTER && !strcmp(x->method, "PUT")) {
		gwa_upload_start(x, in);
	} else if (writes && in->content_length > (long long)a->max_body) {
		char msg[128];
		snprintf(msg, sizeof msg, "the request body is larger than %zu bytes", a->max_body);
		gwa_decide_err(x, 413, "invalid_request_error", NULL, msg);
	}
	return true;
}

bool gw_admin_decided(const gw_admin_req *x)
{
	return x->decided;
}

/* ---- bodies ---- */

static bool drop(gw_admin_req *x, size_t n)
{
	x->dropped += n;
	return x->dropped <= GW_ADMIN_DRAIN_MAX;
}

bool gw_admin_body(gw_admin_req *x, const void *data, size_t n)
{
	if (!n)
		return true;
	if (x->decided)
		return drop(x, n);
	if (x->upload)
		return gwa_upload_body(x, data, n);
	if (x->too_big || x->len + n > x->a->max_body) {
		x->too_big = true;
		return drop(x, n);
	}
	if (x->len + n + 1 > x->cap) {
		size_t cap = x->cap ? x->cap : 1024;
		while (cap < x->len + n + 1)
			cap *= 2;
		char *p = loom_realloc(x->body, cap);
		if (!p) {
			gwa_decide_err(x, 500, "server_error", NULL, "out of memory reading the body");
			return true;
		}
		x->body = p;
		x->cap = cap;
	}
	memcpy(x->body + x->len, data, n);
	x->len += n;
	x->body[x->len] = '\0';
	return true;
}

/* ---- JSON bodies ---- */

/* Parses the body as an object; *j (decref) or a 400 in r. */
static bool json_body(gw_admin_req *x, json_t **j, gw_reply *r)
{
	json_error_t je;
	*j = NULL;
	if (!x->len) {
		gwa_err_reply(r, 400, "invalid_request_error", NULL, NULL,
			  "expected a JSON object as the body");
		return false;
	}
	*j = json_loadb(x->body, x->len, JSON_REJECT_DUPLICATES, &je);
	if (!*j) {
		gwa_err_reply(r, 400, "invalid_request_error", NULL, NULL,
			  "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
			  je.column);
		return false;
	}
	if (!json_is_object(*j)) {
		json_decref(*j);
		*j = NULL;
		gwa_err_reply(r, 400, "invalid_request_error", NULL, NULL,
			  "expected a JSON object as the body");
		return false;
	}
	return true;
}

/* A string field: required or optional (NULL and JSON null = absent). */
static bool str_field(json_t *j, const char *key, bool required, const char **out, gw_reply *r)
{
	json_t *v = json_object_get(j, key);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (!required)
			return true;
		gwa_err_reply(r, 400, "invalid_request_error", key, NULL, "'%s' is required", key);
		return false;
	}
	if (!json_is_string(v)) {
		gwa_err_reply(r, 400, "invalid_request_error", key, NULL, "'%s' must be a string", key);
		return false;
	}
	*out = json_string_value(v);
	return true;
}

static bool bool_field(json_t *j, const char *key, bool *out, gw_reply *r)
{
	json_t *v = json_object_get(j, key);
	if (!v || json_is_null(v))
		return true;
	if (!json_is_boolean(v)) {
		gwa_err_reply(r, 400, "invalid_request_error", key, NULL, "'%s' must be a boolean", key);
		return false;
	}
	*out = json_is_true(v);
	return true;
}

/* ---- handlers ---- */

static void workers(gw_admin *a, gw_worker_info **w, size_t *n)
{
	*w = NULL;
	*n = 0;
	if (a->link && gw_link_workers(a->link, w, n)) {
		*w = NULL;
		*n = 0;
	}
}

void gwa_adapter_reply(gw_admin *a, const gw_adapter *ga, int status, gw_reply *r)
{
	gw_worker_info *w;
	size_t n;
	workers(a, &w, &n);
	gwa_set_reply(r, status, gw_admin_adapter_json(ga, w, n), "application/json");
	gw_link_workers_free(w, n);
}

static bool name_check(const char *name, const char *param, gw_reply *r)
{
	if (gw_adapter_name_ok(name))
		return true;
	gwa_err_reply(r, 400, "invalid_request_error", param, NULL,
		  "name '%.200s' must be 1..%d characters of A-Z a-z 0-9 . _ -", name,
		  LOOM_NAME_MAX - 1);
	return false;
}

/* Imports adapter name from folder path (checked against the allowed
 * folders). Fills *ga and returns 0, or fills r and returns -1. *existed
 * tells 201 from 200. */
static int import_path(gw_admin *a, const char *name, const char *base, const char *path,
		       bool replace, const char *path_param, gw_adapter *ga, bool *existed,
		       gw_reply *r)
{
	char abs[PATH_MAX], why[512];
	gw_adapter old;
	switch (gw_path_check((const char *const *)a->adirs, a->n_adirs, path, abs, why,
			      sizeof why)) {
	case GW_PATH_FORBIDDEN:
		gwa_err_reply(r, 403, "permission_error", path_param, "forbidden", "%s", why);
		return -1;
	case GW_PATH_MISSING:
		gwa_err_reply(r, 400, "invalid_request_error", path_param, NULL, "%s", why);
		return -1;
	case GW_PATH_OK:
		break;
	}
	*existed = gw_models_adapter_get(a->models, name, &old) == LOOM_OK;
	loom_err rc = gw_registry_import_adapter(a->reg, name, base, abs, abs,
						 replace ? GW_REG_REPLACE : GW_REG_CREATE, ga);
	if (rc) {
		gwa_reg_err(r, rc, NULL);
		return -1;
	}
	return 0;
}

static void post_adapter(gw_admin_req *x, gw_reply *r)
{
	json_t *j;
	const char *name, *base, *path;
	bool replace = x->replace, existed;
	gw_adapter ga;
	if (!json_body(x, &j, r))
		return;
	if (str_field(j, "name", true, &name, r) && str_field(j, "base_model", false, &base, r) &&
	    str_field(j, "path", true, &path, r) && bool_field(j, "replace", &replace, r) &&
	    name_check(name, "name", r) &&
	    !import_path(x->a, name, base, path, replace, "path", &ga, &existed, r))
		gwa_adapter_reply(x->a, &ga, existed ? 200 : 201, r);
	json_decref(j);
}

static void vllm_load(gw_admin_req *x, gw_reply *r)
{
	json_t *j;
	const char *name, *path, *base;
	bool replace = x->replace, existed;
	gw_adapter ga;
	if (!json_body(x, &j, r))
		return;
	if (str_field(j, "lora_name", true, &name, r) && str_field(j, "lora_path", true, &path, r) &&
	    str_field(j, "base_model_name", false, &base, r) &&
	    bool_field(j, "load_inplace", &replace, r) && name_check(name, "lora_name", r) &&
	    !import_path(x->a, name, base, path, replace, "lora_path", &ga, &existed, r)) {
		char msg[256];
		snprintf(msg, sizeof msg, "Success: LoRA adapter '%s' added successfully.", name);
		gwa_set_reply(r, 200, loom_strdup(msg), "text/plain; charset=utf-8");
	}
	json_decref(j);
}

static void vllm_unload(gw_admin_req *x, gw_reply *r)
{
	json_t *j;
	const char *name;
	if (!json_body(x, &j, r))
		return;
	if (str_field(j, "lora_name", true, &name, r)) {
		loom_err rc = gw_registry_delete_adapter(x->a->reg, name);
		if (rc) {
			gwa_reg_err(r, rc, "lora_name");
		} else {
			char msg[256];
			snprintf(msg, sizeof msg, "Success: LoRA adapter '%s' removed successfully.",
				 name);
			gwa_set_reply(r, 200, loom_strdup(msg), "text/plain; charset=utf-8");
		}
	}
	json_decref(j);
}

static void get_adapter(gw_admin_req *x, gw_reply *r)
{
	gw_adapter ga;
	if (gw_models_adapter_get(x->a->models, x->name, &ga))
		gwa_err_reply(r, 404, "invalid_request_error", NULL, "not_found",
			  "adapter '%.200s' does not exist", x->name);
	else
		gwa_adapter_reply(x->a, &ga, 200, r);
}

static void deleted(gw_reply *r, const char *name, const char *object)
{
	gwa_set_reply(r, 200, NULL, "application/json");
	json_t *j = json_pack("{s:s, s:s, s:b}", "id", name, "object", object, "deleted", 1);
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	r->body = s ? loom_strdup(s) : NULL;
	free(s);
}

static void delete_adapter(gw_admin_req *x, gw_reply *r)
{
	loom_err rc = gw_registry_delete_adapter(x->a->reg, x->name);
	if (rc)
		gwa_reg_err(r, rc, NULL);
	else
		deleted(r, x->name, "lora_adapter");
}

static size_t adapters_of(gw_models *m, const gw_model *md)
{
	size_t n = 0;
	gw_models_rdlock(m);
	for (size_t i = 0; i < gw_models_adapter_count_locked(m); i++)
		n += gw_models_adapter_at_locked(m, i)->base == md;
	gw_models_unlock(m);
	return n;
}

static void model_reply(gw_admin *a, const gw_model *md, int status, gw_reply *r)
{
	gw_worker_info *w;
	size_t n;
	workers(a, &w, &n);
	gwa_set_reply(r, status, gw_admin_model_json(md, adapters_of(a->models, md), w, n),
		  "application/json");
	gw_link_workers_free(w, n);
}

static bool any_live(gw_admin *a)
{
	gw_worker_info *w;
	size_t n;
	bool live = false;
	workers(a, &w, &n);
	for (size_t i = 0; i < n; i++)
		live |= w[i].live;
	gw_link_workers_free(w, n);
	return live;
}

static void post_model(gw_admin_req *x, gw_reply *r)
{
	gw_admin *a = x->a;
	json_t *j;
	const char *name, *path, *tname;
	bool replace = x->replace;
	gw_chat_tmpl tmpl = GW_TMPL_AUTO;
	char abs[PATH_MAX], why[512];
	if (!json_body(x, &j, r))
		return;
	if (!str_field(j, "name", true, &name, r) || !str_field(j, "path", true, &path, r) ||
	    !str_field(j, "chat_template", false, &tname, r) ||
	    !bool_field(j, "replace", &replace, r) || !name_check(name, "name", r))
		goto out;
	if (tname && gw_chat_tmpl_parse(tname, &tmpl)) {
		gwa_err_reply(r, 400, "invalid_request_error", "chat_template", NULL, "%s", loom_errmsg());
		goto out;
	}
	switch (gw_path_check((const char *const *)a->mdirs, a->n_mdirs, path, abs, why,
			      sizeof why)) {
	case GW_PATH_FORBIDDEN:
		gwa_err_reply(r, 403, "permission_error", "path", "forbidden", "%s (or --model-dir)", why);
		goto out;
	case GW_PATH_MISSING:
		gwa_err_reply(r, 400, "invalid_request_error", "path", NULL, "%s", why);
		goto out;
	case GW_PATH_OK:
		break;
	}
	bool existed = gw_models_find(a->models, name) != NULL;
	loom_err rc = gw_registry_import_model(a->reg, name, abs, tmpl,
					       replace ? GW_REG_REPLACE : GW_REG_CREATE, NULL);
	if (rc) {
		gwa_reg_err(r, rc, NULL);
		goto out;
	}
	/* answer once a worker routes it (workers list it after handling MODEL) */
	if (a->link && any_live(a) && !gw_link_wait_model(a->link, name, 10000))
		LOOM_WARN("model %s: registered, but no live worker serves it yet", name);
	gw_model *md = gw_models_get(a->models, name);
	if (md)
		model_reply(a, md, existed ? 200 : 201, r);
	else
		gwa_err_reply(r, 409, "invalid_request_error", NULL, "conflict",
			  "model '%s' was deleted meanwhile", name);
	gw_model_release(md);
out:
	json_decref(j);
}

static void get_model(gw_admin_req *x, gw_reply *r)
{
	gw_model *md = gw_models_get(x->a->models, x->name);
	if (!md) {
		gwa_err_reply(r, 404, "invalid_request_error", NULL, "not_found",
			  "model '%.200s' does not exist", x->name);
		return;
	}
	model_reply(x->a, md, 200, r);
	gw_model_release(md);
}

static void delete_model(gw_admin_req *x, gw_reply *r)
{
	loom_err rc = gw_registry_delete_model(x->a->reg, x->name);
	if (rc)
		gwa_reg_err(r, rc, NULL);
	else
		deleted(r, x->name, "model");
}

/* This process's resident set (bytes) from /proc/self/statm; -1 when unknown. */
static long long rss_bytes(void)
{
	long long pages = -1, res = -1;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f)
		return -1;
	if (fscanf(f, "%lld %lld", &pages, &res) != 2)
		res = -1;
	fclose(f);
	return res < 0 ? -1 : res * sysconf(_SC_PAGESIZE);
}

/* The whole /metrics text (loom_malloc'ed; NULL = out of memory). */
static char *metrics(gw_admin *a, const gw_worker_info *w, size_t n)
{
	gw_link_counters c = {0};
	if (a->link)
		gw_link_get_counters(a->link, &c);
	struct mallinfo2 mi = mallinfo2();
	char *parts[3] = {
		gw_admin_metrics_text(w, n, a->link ? gw_link_inflight(a->link) : 0,
				      gw_models_count(a->models), gw_models_adapter_count(a->models)),
		gw_admin_gateway_metrics_text(&c, gw_req_tracked(), rss_bytes(),
					      (long long)mi.uordblks),
		a->slo ? gw_slo_metrics_text(a->slo) : loom_strdup(""),
	};
	char *all = NULL;
	if (parts[0] && parts[1] && parts[2]) {
		size_t l0 = strlen(parts[0]), l1 = strlen(parts[1]), l2 = strlen(parts[2]);
		if ((all = loom_malloc(l0 + l1 + l2 + 1))) {
			memcpy(all, parts[0], l0);
			memcpy(all + l0, parts[1], l1);
			memcpy(all + l0 + l1, parts[2], l2 + 1);
		}
	}
	for (int i = 0; i < 3; i++)
		loom_free(parts[i]);
	return all;
}

/* An ipc:// worker address is a path on the gateway's disk: /metrics shows
 * it as "ipc:#N" (N: its place in the worker list); the worker's id tells
 * workers apart. Network addresses stay. */
static void hide_paths(gw_worker_info *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strncmp(w[i].url, "ipc://", 6))
			snprintf(w[i].url, sizeof w[i].url, "ipc:#%zu", i);
}

static void list_reply(gw_admin *a, route rt, gw_reply *r)
{
	gw_worker_info *w;
	size_t n;
	char *body = NULL;
	const char *ctype = "application/json";
	workers(a, &w, &n);
	if (rt == A_ADAPTERS) {
		body = gw_admin_adapters_json(a->models, w, n);
	} else if (rt == A_MODELS) {
		body = gw_admin_models_json(a->models, w, n);
	} else if (rt == A_WORKERS) {
		body = gw_admin_workers_json(w, n);
	} else {
		hide_paths(w, n);
		body = metrics(a, w, n);
		ctype = "text/plain; version=0.0.4; charset=utf-8";
	}
	gw_link_workers_free(w, n);
	gwa_set_reply(r, 200, body, ctype);
}

void gw_admin_finish(gw_admin_req *x, gw_reply *out)
{
	memset(out, 0, sizeof *out);
	if (x->decided) {
		*out = x->reply;
		x->reply.body = NULL;
		return;
	}
	if (x->too_big) {
		gwa_err_reply(out, 413, "invalid_request_error", NULL, NULL,
			  "the request body is larger than %zu bytes", x->a->max_body);
		return;
	}
	bool get = !strcmp(x->method, "GET") || !strcmp(x->method, "HEAD");
	switch (x->rt) {
	case A_ADAPTERS:
		if (get)
			list_reply(x->a, x->rt, out);
		else
			post_adapter(x, out);
		break;
	case A_ADAPTER:
		if (get)
			get_adapter(x, out);
		else if (!strcmp(x->method, "PUT"))
			gwa_upload_finish(x, out);
		else
			delete_adapter(x, out);
		break;
	case A_MODELS:
		if (get)
			list_reply(x->a, x->rt, out);
		else
			post_model(x, out);
		break;
	case A_MODEL:
		if (get)
			get_model(x, out);
		else
			delete_model(x, out);
		break;
	case A_WORKERS:
	case A_METRICS:
		list_reply(x->a, x->rt, out);
		break;
	case A_VLLM_LOAD:
		vllm_load(x, out);
		break;
	case A_VLLM_UNLOAD:
		vllm_unload(x, out);
		break;
	case A_UNKNOWN:
		gwa_err_reply(out, 404, "invalid_request_error", NULL, "not_found", "no such route");
		break;
	}
	if (x->upload)
		gwa_upload_drop(x); /* imported (or refused): the temp folder goes */
}

void gw_admin_req_free(gw_admin_req *x)
{
	if (!x)
		return;
	gwa_upload_drop(x);
	gw_mp_destroy(x->mp);
	loom_free(x->reply.body);
	loom_free(x->body);
	loom_free(x);
}
