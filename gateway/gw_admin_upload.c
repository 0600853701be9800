/*
 * gateway/gw_admin_upload.c — PUT /admin/adapters/{name}: a multipart/form-data
 * upload (parts adapter_config, adapter_model, field base_model) streamed by
 * gw_multipart into a fresh folder <store>/uploads/up-XXXXXX — never held in
 * memory, capped at --max-upload-bytes — then imported like a folder on disk
 * and removed. The registry empties the upload area at start-up, so a crash
 * mid-upload leaves nothing behind either.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "gw_admin_int.h"

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

void gwa_upload_start(gw_admin_req *x, const gw_admin_in *in)
{
	char boundary[GW_MP_BOUNDARY_MAX + 1], msg[600];
	x->upload = true;
	if (!gw_adapter_name_ok(x->name)) {
		snprintf(msg, sizeof msg, "adapter name '%.200s' must be 1..%d characters of "
					  "A-Z a-z 0-9 . _ -", x->name, LOOM_NAME_MAX - 1);
		gwa_decide_err(x, 400, "invalid_request_error", NULL, msg);
		return;
	}
	if (in->content_length > (long long)x->a->max_upload) {
		snprintf(msg, sizeof msg, "the upload is larger than %zu bytes (--max-upload-bytes)",
			 x->a->max_upload);
		gwa_decide_err(x, 413, "invalid_request_error", NULL, msg);
		return;
	}
	if (gw_mp_boundary(in->content_type, boundary)) {
		snprintf(msg, sizeof msg, "%s (upload adapter_config and adapter_model as "
					  "multipart/form-data)", loom_errmsg());
		gwa_decide_err(x, 400, "invalid_request_error", NULL, msg);
		return;
	}
	gw_mp_cbs cbs = {.part_begin = part_begin, .part_data = part_data, .part_end = part_end,
			 .ctx = x};
	snprintf(x->dir, sizeof x->dir, "%s/up-XXXXXX", gw_registry_upload_dir(x->a->reg));
	if (!mkdtemp(x->dir)) {
		snprintf(msg, sizeof msg, "cannot make an upload folder in %.400s: %s",
			 gw_registry_upload_dir(x->a->reg), strerror(errno));
		x->dir[0] = '\0';
		gwa_decide_err(x, 500, "server_error", NULL, msg);
		return;
	}
	if (gw_mp_create(boundary, &cbs, &x->mp))
		gwa_decide_err(x, 500, "server_error", NULL, loom_errmsg());
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void gwa_upload_drop(gw_admin_req *x)
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

bool gwa_upload_body(gw_admin_req *x, const void *data, size_t n)
{
	if (!x->up_status) {
		x->total += n;
		if (x->total > x->a->max_upload)
			up_fail(x, 413, "the upload is larger than %zu bytes (--max-upload-bytes)",
				x->a->max_upload);
		else if (gw_mp_feed(x->mp, data, n) && !x->up_status)
			up_fail(x, 400, "%s", loom_errmsg());
		if (!x->up_status)
			return true;
	}
	x->dropped += n; /* past a refusal */
	return x->dropped <= GW_ADMIN_DRAIN_MAX;
}

void gwa_upload_finish(gw_admin_req *x, gw_reply *r)
{
	gw_adapter ga, old;
	if (x->up_status) {
		gwa_err_reply(r, x->up_status, x->up_status >= 500 ? "server_error" : "invalid_request_error",
			  NULL, NULL, "%s", x->up_msg);
		return;
	}
	if (gw_mp_finish(x->mp)) {
		gwa_err_reply(r, 400, "invalid_request_error", NULL, NULL, "%s", loom_errmsg());
		return;
	}
	if (!x->have_config || !x->have_model) {
		gwa_err_reply(r, 400, "invalid_request_error", !x->have_config ? "adapter_config"
									   : "adapter_model",
			  NULL, "the upload has no '%s' part (send adapter_config.json as "
				"'adapter_config' and adapter_model.safetensors as 'adapter_model')",
			  !x->have_config ? "adapter_config" : "adapter_model");
		return;
	}
	if (x->base_long) {
		gwa_err_reply(r, 400, "invalid_request_error", "base_model", NULL,
			  "'base_model' is longer than %d bytes", LOOM_NAME_MAX - 1);
		return;
	}
	bool existed = gw_models_adapter_get(x->a->models, x->name, &old) == LOOM_OK;
	loom_err rc = gw_registry_import_adapter(x->a->reg, x->name, x->base_len ? x->base : NULL,
						 x->dir, "",
						 x->replace ? GW_REG_REPLACE : GW_REG_CREATE, &ga);
	if (rc)
		gwa_reg_err(r, rc, NULL);
	else
		gwa_adapter_reply(x->a, &ga, existed ? 200 : 201, r);
}

