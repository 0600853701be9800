/*
 * gateway/gw_admin_int.h — what the admin API's files share: the request
 * state and the reply helpers (gw_admin.c) and the multipart upload route
 * (gw_admin_upload.c). Not for other modules.
 */
#ifndef GW_ADMIN_INT_H
#define GW_ADMIN_INT_H

#include <limits.h>

#include "gw_admin.h"
#include "gw_multipart.h"

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
	gw_slo *slo;            /* may be NULL */
	bool public_metrics;    /* /metrics skips the admin rule */
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

/* gw_admin.c: replies */
void gwa_set_reply(gw_reply *r, int status, char *body, const char *ctype);
void gwa_err_reply(gw_reply *r, int status, const char *type, const char *param, const char *code,
		   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* A refusal decided before the body (kept until gw_admin_finish). */
void gwa_decide_err(gw_admin_req *x, int status, const char *type, const char *code,
		    const char *msg);
/* The registry's error convention -> HTTP. */
void gwa_reg_err(gw_reply *r, loom_err rc, const char *param);
/* The adapter's JSON with where it is resident. */
void gwa_adapter_reply(gw_admin *a, const gw_adapter *ga, int status, gw_reply *r);

/* gw_admin_upload.c: PUT /admin/adapters/{name} */
void gwa_upload_start(gw_admin_req *x, const gw_admin_in *in);
/* Body bytes of an upload: false when the caller should stop reading. */
bool gwa_upload_body(gw_admin_req *x, const void *data, size_t n);
void gwa_upload_finish(gw_admin_req *x, gw_reply *r);
/* Closes and removes what the upload wrote (also when it never finished). */
void gwa_upload_drop(gw_admin_req *x);

#endif
