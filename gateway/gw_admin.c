/*
 * gateway/gw_admin.c — admin routes: matching, authentication, bodies
 * (JSON kept in memory up to max_body; multipart uploads streamed into
 * <store>/uploads/up-XXXXXX, never held in memory), and the handlers, which
 * call the registry and shape replies. A refusal known early (auth, route,
 * declared size) is "decided" at gw_admin_begin and the body is dropped.
 */
#include "gw_admin.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"
#include "gw_multipart.h"
#include "gw_openai.h"
#include "gw_policy.h"

typedef enum route {
	A_ADAPTERS,     /* /admin/adapters */
	A_ADAPTER,      /* /admin/adapters/{name} */
	A_MODELS,       /* /admin/models */
	A_MODEL,        /* /admin/models/{name} */
	A_WORKERS,      /* /admin/workers */
	A_VLLM_LOAD,    /* /v1/load_lora_adapter */
	A_VLLM_UNLOAD,  /* /v1/unload_lora_adapter */
	A_METRICS,      /* /metrics */
	A_UNKNOWN,      /* any other /admin/... */
} route;

struct gw_admin {
	char *token;
	char **adirs;           /* adapter imports */
	size_t n_adirs;
	char **mdirs;           /* model imports: model dirs, then adapter dirs */
	size_t n_mdirs;
	size_t max_upload, max_body;
	gw_registry *reg;
	gw_models *models;
	gw_link *link;
};

enum part { P_NONE, P_CONFIG, P_MODEL, P_BASE, P_SKIP };

struct gw_admin_req {
	gw_admin *a;
	route rt;
	char method[16];
	char name[LOOM_NAME_MAX];  /* {name} of the url; "" when too long */
	bool replace;
	bool decided;
	gw_reply reply;            /* when decided */
	/* JSON body */
	char *body;
	size_t len, cap;
	bool too_big;
	/* multipart upload */
	bool upload;
	gw_mp *mp;
	char dir[PATH_MAX];        /* temp folder, "" until made */
	int fd;
	enum part cur;
	bool have_config, have_model;
	char base[LOOM_NAME_MAX];
	size_t base_len;
	bool base_long;
	size_t total;
	size_t dropped;            /* body bytes read and dropped after a refusal */
	int up_status;             /* first upload problem: its status, 0 = none */
	char up_msg[512];
};

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

static void set_reply(gw_reply *r, int status, char *body, const char *ctype)
{
	r->status = status;
	r->body = body;
	r->content_type = ctype;
	r->allow = NULL;
	r->www_authenticate = false;
}

static void err_reply(gw_reply *r, int status, const char *type, const char *param,
		      const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void err_reply(gw_reply *r, int status, const char *type, const char *param,
		      const char *code, const char *fmt, ...)
{
	gw_api_err e;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	gw_api_err_set(&e, status, type, param, code, "%s", msg);
	set_reply(r, status, gw_openai_error_json(&e), "application/json");
}

static void decide_err(gw_admin_req *x, int status, const char *type, const char *code,
		       const char *msg)
{
	if (x->decided)
		return;
	x->decided = true;
	err_reply(&x->reply, status, type, NULL, code, "%s", msg);
}

/* The registry's error convention -> HTTP. */
static void reg_err(gw_reply *r, loom_err rc, const char *param)
{
	const char *msg = loom_errmsg();
	switch (rc) {
	case LOOM_EINVAL:
		err_reply(r, 400, "invalid_request_error", param, NULL, "%s", msg);
		break;
	case LOOM_EEXIST:
	case LOOM_EBUSY:
		err_reply(r, 409, "invalid_request_error", param, "conflict", "%s", msg);
		break;
	case LOOM_ENOTFOUND:
		err_reply(r, 404, "invalid_request_error", param, "not_found", "%s", msg);
		break;
	default:
		err_reply(r, 500, "server_error", NULL, NULL, "%s: %s", loom_strerror(rc), msg);
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

static void start_upload(gw_admin_req *x, const gw_admin_in *in);

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
	if (rt != A_METRICS) {
		char why[256];
		gw_auth au = gw_auth_check(a->token, in->authorization, in->peer, why, sizeof why);
		if (au == GW_AUTH_UNAUTHORIZED) {
			decide_err(x, 401, "authentication_error", "invalid_api_key", why);
			x->reply.www_authenticate = true;
			return true;
		}
		if (au == GW_AUTH_FORBIDDEN) {
			decide_err(x, 403, "permission_error", "forbidden", why);
			return true;
		}
	}
	if (rt == A_UNKNOWN) {
		char msg[600];
		snprintf(msg, sizeof msg, "no route for %s %.500s", in->method, in->url);
		decide_err(x, 404, "invalid_request_error", "not_found", msg);
		return true;
	}
	if (!method_ok(rt, in->method)) {
		char msg[600];
		snprintf(msg, sizeof msg, "%s is not allowed on %.400s (use %s)", in->method, in->url,
			 allowed(rt));
		decide_err(x, 405, "invalid_request_error", NULL, msg);
		x->reply.allow = allowed(rt);
		return true;
	}
	bool writes = strcmp(x->method, "GET") && strcmp(x->method, "HEAD");
	if (!a->reg && writes && rt != A_METRICS) {
		decide_err(x, 503, "service_unavailable", NULL, "the gateway runs without a store");
		return true;
	}
	if (rt == A_ADAPTER && !strcmp(x->method, "PUT")) {
		start_upload(x, in);
	} else if (writes && in->content_length > (long long)a->max_body) {
		char msg[128];
		snprintf(msg, sizeof msg, "the request body is larger than %zu bytes", a->max_body);
		decide_err(x, 413, "invalid_request_error", NULL, msg);
	}
	return true;
}

bool gw_admin_decided(const gw_admin_req *x)
{
	return x->decided;
}

/* ---- uploads ---- */

static loom_err up_fail(gw_admin_req *x, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static loom_err up_fail(gw_admin_req *x, int status, const char *fmt, ...)
{
	if (!x->up_status) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(x->up_msg, sizeof x->up_msg, fmt, ap);
		va_end(ap);
		x->up_status = status;
	}
	return loom_fail(status >= 500 ? LOOM_EIO : LOOM_EINVAL, "%s", x->up_msg);
}

static loom_err part_begin(void *ctx, const char *name, const char *filename, const char *ctype)
{
	gw_admin_req *x = ctx;
	(void)filename;
	(void)ctype;
	const char *file = NULL;
	bool *have = NULL;
	if (!strcmp(name, "adapter_config") || !strcmp(name, "adapter_config.json")) {
		x->cur = P_CONFIG;
		file = "adapter_config.json";
		have = &x->have_config;
	} else if (!strcmp(name, "adapter_model") || !strcmp(name, "adapter_model.safetensors")) {
		x->cur = P_MODEL;
		file = "adapter_model.safetensors";
		have = &x->have_model;
	} else if (!strcmp(name, "base_model")) {
		x->cur = P_BASE;
		x->base_len = 0;
		x->base_long = false;
		return LOOM_OK;
	} else {
		x->cur = P_SKIP; /* fields loom does not know are ignored */
		return LOOM_OK;
	}
	if (*have)
		return up_fail(x, 400, "part '%s' given twice", name);
	char path[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/%s", x->dir, file);
	x->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (x->fd < 0)
		return up_fail(x, 500, "cannot write the upload to %s: %s", path, strerror(errno));
	return LOOM_OK;
}

static loom_err part_data(void *ctx, const void *data, size_t n)
{
	gw_admin_req *x = ctx;
	const char *p = data;
	switch (x->cur) {
	case P_CONFIG:
	case P_MODEL:
		while (n) {
			ssize_t w = write(x->fd, p, n);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				return up_fail(x, 500, "cannot write the upload: %s",
					       w < 0 ? strerror(errno) : "short write");
			p += w;
			n -= (size_t)w;
		}
		break;
	case P_BASE:
		if (x->base_len + n >= sizeof x->base) {
			x->base_long = true;
		} else {
			memcpy(x->base + x->base_len, p, n);
			x->base_len += n;
			x->base[x->base_len] = '\0';
		}
		break;
	default:
		break;
	}
	return LOOM_OK;
}

static loom_err part_end(void *ctx)
{
	gw_admin_req *x = ctx;
	if (x->cur == P_CONFIG || x->cur == P_MODEL) {
		int rc = close(x->fd);
		x->fd = -1;
		if (rc)
			return up_fail(x, 500, "cannot write the upload: %s", strerror(errno));
		if (x->cur == P_CONFIG)
			x->have_config = true;
		else
			x->have_model = true;
	}
	x->cur = P_NONE;
	return LOOM_OK;
}

static void start_upload(gw_admin_req *x, const gw_admin_in *in)
{
	char boundary[GW_MP_BOUNDARY_MAX + 1], msg[600];
	x->upload = true;
	if (!gw_adapter_name_ok(x->name)) {
		snprintf(msg, sizeof msg, "adapter name '%.200s' must be 1..%d characters of "
					  "A-Z a-z 0-9 . _ -", x->name, LOOM_NAME_MAX - 1);
		decide_err(x, 400, "invalid_request_error", NULL, msg);
		return;
	}
	if (in->content_length > (long long)x->a->max_upload) {
		snprintf(msg, sizeof msg, "the upload is larger than %zu bytes (--max-upload-bytes)",
			 x->a->max_upload);
		decide_err(x, 413, "invalid_request_error", NULL, msg);
		return;
	}
	if (gw_mp_boundary(in->content_type, boundary)) {
		snprintf(msg, sizeof msg, "%s (upload adapter_config and adapter_model as "
					  "multipart/form-data)", loom_errmsg());
		decide_err(x, 400, "invalid_request_error", NULL, msg);
		return;
	}
	gw_mp_cbs cbs = {.part_begin = part_begin, .part_data = part_data, .part_end = part_end,
			 .ctx = x};
	snprintf(x->dir, sizeof x->dir, "%s/up-XXXXXX", gw_registry_upload_dir(x->a->reg));
	if (!mkdtemp(x->dir)) {
		snprintf(msg, sizeof msg, "cannot make an upload folder in %.400s: %s",
			 gw_registry_upload_dir(x->a->reg), strerror(errno));
		x->dir[0] = '\0';
		decide_err(x, 500, "server_error", NULL, msg);
		return;
	}
	if (gw_mp_create(boundary, &cbs, &x->mp))
		decide_err(x, 500, "server_error", NULL, loom_errmsg());
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void drop_upload(gw_admin_req *x)
{
	if (x->fd >= 0) {
		close(x->fd);
		x->fd = -1;
	}
	if (x->dir[0]) {
		nftw(x->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
		x->dir[0] = '\0';
	}
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
	if (x->upload) {
		if (x->up_status)
			return drop(x, n);
		x->total += n;
		if (x->total > x->a->max_upload) {
			up_fail(x, 413, "the upload is larger than %zu bytes (--max-upload-bytes)",
				x->a->max_upload);
			return drop(x, n);
		}
		if (gw_mp_feed(x->mp, data, n) && !x->up_status)
			up_fail(x, 400, "%s", loom_errmsg());
		return true;
	}
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
			decide_err(x, 500, "server_error", NULL, "out of memory reading the body");
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
		err_reply(r, 400, "invalid_request_error", NULL, NULL,
			  "expected a JSON object as the body");
		return false;
	}
	*j = json_loadb(x->body, x->len, JSON_REJECT_DUPLICATES, &je);
	if (!*j) {
		err_reply(r, 400, "invalid_request_error", NULL, NULL,
			  "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
			  je.column);
		return false;
	}
	if (!json_is_object(*j)) {
		json_decref(*j);
		*j = NULL;
		err_reply(r, 400, "invalid_request_error", NULL, NULL,
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
		err_reply(r, 400, "invalid_request_error", key, NULL, "'%s' is required", key);
		return false;
	}
	if (!json_is_string(v)) {
		err_reply(r, 400, "invalid_request_error", key, NULL, "'%s' must be a string", key);
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
		err_reply(r, 400, "invalid_request_error", key, NULL, "'%s' must be a boolean", key);
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

static void adapter_reply(gw_admin *a, const gw_adapter *ga, int status, gw_reply *r)
{
	gw_worker_info *w;
	size_t n;
	workers(a, &w, &n);
	set_reply(r, status, gw_admin_adapter_json(ga, w, n), "application/json");
	gw_link_workers_free(w, n);
}

static bool name_check(const char *name, const char *param, gw_reply *r)
{
	if (gw_adapter_name_ok(name))
		return true;
	err_reply(r, 400, "invalid_request_error", param, NULL,
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
		err_reply(r, 403, "permission_error", path_param, "forbidden", "%s", why);
		return -1;
	case GW_PATH_MISSING:
		err_reply(r, 400, "invalid_request_error", path_param, NULL, "%s", why);
		return -1;
	case GW_PATH_OK:
		break;
	}
	*existed = gw_models_adapter_get(a->models, name, &old) == LOOM_OK;
	loom_err rc = gw_registry_import_adapter(a->reg, name, base, abs, abs,
						 replace ? GW_REG_REPLACE : GW_REG_CREATE, ga);
	if (rc) {
		reg_err(r, rc, NULL);
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
		adapter_reply(x->a, &ga, existed ? 200 : 201, r);
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
		set_reply(r, 200, loom_strdup(msg), "text/plain; charset=utf-8");
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
			reg_err(r, rc, "lora_name");
		} else {
			char msg[256];
			snprintf(msg, sizeof msg, "Success: LoRA adapter '%s' removed successfully.",
				 name);
			set_reply(r, 200, loom_strdup(msg), "text/plain; charset=utf-8");
		}
	}
	json_decref(j);
}

static void put_adapter(gw_admin_req *x, gw_reply *r)
{
	gw_adapter ga, old;
	if (x->up_status) {
		err_reply(r, x->up_status, x->up_status >= 500 ? "server_error" : "invalid_request_error",
			  NULL, NULL, "%s", x->up_msg);
		return;
	}
	if (gw_mp_finish(x->mp)) {
		err_reply(r, 400, "invalid_request_error", NULL, NULL, "%s", loom_errmsg());
		return;
	}
	if (!x->have_config || !x->have_model) {
		err_reply(r, 400, "invalid_request_error", !x->have_config ? "adapter_config"
									   : "adapter_model",
			  NULL, "the upload has no '%s' part (send adapter_config.json as "
				"'adapter_config' and adapter_model.safetensors as 'adapter_model')",
			  !x->have_config ? "adapter_config" : "adapter_model");
		return;
	}
	if (x->base_long) {
		err_reply(r, 400, "invalid_request_error", "base_model", NULL,
			  "'base_model' is longer than %d bytes", LOOM_NAME_MAX - 1);
		return;
	}
	bool existed = gw_models_adapter_get(x->a->models, x->name, &old) == LOOM_OK;
	loom_err rc = gw_registry_import_adapter(x->a->reg, x->name, x->base_len ? x->base : NULL,
						 x->dir, "",
						 x->replace ? GW_REG_REPLACE : GW_REG_CREATE, &ga);
	if (rc)
		reg_err(r, rc, NULL);
	else
		adapter_reply(x->a, &ga, existed ? 200 : 201, r);
}

static void get_adapter(gw_admin_req *x, gw_reply *r)
{
	gw_adapter ga;
	if (gw_models_adapter_get(x->a->models, x->name, &ga))
		err_reply(r, 404, "invalid_request_error", NULL, "not_found",
			  "adapter '%.200s' does not exist", x->name);
	else
		adapter_reply(x->a, &ga, 200, r);
}

static void deleted(gw_reply *r, const char *name, const char *object)
{
	set_reply(r, 200, NULL, "application/json");
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
		reg_err(r, rc, NULL);
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
	set_reply(r, status, gw_admin_model_json(md, adapters_of(a->models, md), w, n),
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
	gw_chat_tmpl tmpl = GW_TMPL_PLAIN;
	char abs[PATH_MAX], why[512];
	if (!json_body(x, &j, r))
		return;
	if (!str_field(j, "name", true, &name, r) || !str_field(j, "path", true, &path, r) ||
	    !str_field(j, "chat_template", false, &tname, r) ||
	    !bool_field(j, "replace", &replace, r) || !name_check(name, "name", r))
		goto out;
	if (tname && gw_chat_tmpl_parse(tname, &tmpl)) {
		err_reply(r, 400, "invalid_request_error", "chat_template", NULL, "%s", loom_errmsg());
		goto out;
	}
	switch (gw_path_check((const char *const *)a->mdirs, a->n_mdirs, path, abs, why,
			      sizeof why)) {
	case GW_PATH_FORBIDDEN:
		err_reply(r, 403, "permission_error", "path", "forbidden", "%s (or --model-dir)", why);
		goto out;
	case GW_PATH_MISSING:
		err_reply(r, 400, "invalid_request_error", "path", NULL, "%s", why);
		goto out;
	case GW_PATH_OK:
		break;
	}
	bool existed = gw_models_find(a->models, name) != NULL;
	loom_err rc = gw_registry_import_model(a->reg, name, abs, tmpl,
					       replace ? GW_REG_REPLACE : GW_REG_CREATE, NULL);
	if (rc) {
		reg_err(r, rc, NULL);
		goto out;
	}
	/* answer once a worker routes it (workers list it after handling MODEL) */
	if (a->link && any_live(a) && !gw_link_wait_model(a->link, name, 10000))
		LOOM_WARN("model %s: registered, but no live worker serves it yet", name);
	gw_model *md = gw_models_get(a->models, name);
	if (md)
		model_reply(a, md, existed ? 200 : 201, r);
	else
		err_reply(r, 409, "invalid_request_error", NULL, "conflict",
			  "model '%s' was deleted meanwhile", name);
	gw_model_release(md);
out:
	json_decref(j);
}

static void get_model(gw_admin_req *x, gw_reply *r)
{
	gw_model *md = gw_models_get(x->a->models, x->name);
	if (!md) {
		err_reply(r, 404, "invalid_request_error", NULL, "not_found",
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
		reg_err(r, rc, NULL);
	else
		deleted(r, x->name, "model");
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
		body = gw_admin_metrics_text(w, n, a->link ? gw_link_inflight(a->link) : 0,
					     gw_models_count(a->models),
					     gw_models_adapter_count(a->models));
		ctype = "text/plain; version=0.0.4; charset=utf-8";
	}
	gw_link_workers_free(w, n);
	set_reply(r, 200, body, ctype);
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
		err_reply(out, 413, "invalid_request_error", NULL, NULL,
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
			put_adapter(x, out);
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
		err_reply(out, 404, "invalid_request_error", NULL, "not_found", "no such route");
		break;
	}
	if (x->upload)
		drop_upload(x); /* imported (or refused): the temp folder goes */
}

void gw_admin_req_free(gw_admin_req *x)
{
	if (!x)
		return;
	drop_upload(x);
	gw_mp_destroy(x->mp);
	loom_free(x->reply.body);
	loom_free(x->body);
	loom_free(x);
}
