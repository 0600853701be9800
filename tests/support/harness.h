/*
 * tests/support/harness.h — what loom's tests share: paths to fixtures and
 * built programs, temp dirs, real child processes, and a real HTTP client
 * (libcurl). Integration tests start loom-gateway and loom-worker as real
 * processes on loopback through lt_stack_start and speak HTTP to them.
 *
 * Environment (set by ctest; defaults work when a test runs by hand from the
 * project root): LOOM_SHARED (../shared), LOOM_BIN_DIR (build/bin),
 * LOOM_TMP (build/tmp).
 */
#ifndef LT_HARNESS_H
#define LT_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

/* Path under ../shared, e.g. lt_shared_path("models/stories260k"). Returns a
 * pointer into a small rotating static buffer set (8 slots); copy to keep. */
const char *lt_shared_path(const char *rel);
/* Path of a built program, e.g. lt_bin_path("loom-mkmodel"). Same buffers. */
const char *lt_bin_path(const char *prog);
/* Creates a fresh empty directory under LOOM_TMP named after tag and the pid;
 * returns a loom_malloc'ed path (free with loom_free). Aborts the test on failure. */
char *lt_tmpdir(const char *tag);

/* Runs a shell command line; returns its exit status (or -1). Output goes to
 * the test's stderr. */
int lt_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A child process (fork+exec, never nng-in-fork), stdout+stderr to log. */
typedef struct lt_proc {
	pid_t pid;       /* 0 when not running */
	char log[512];
} lt_proc;
/* Starts argv[0] (a path) with argv; output appended to log_path. 0 or -1. */
int lt_spawn(lt_proc *p, const char *log_path, char *const argv[]);
/* Sends sig (if running) and waits up to timeout_ms, then SIGKILLs.
 * Returns the exit status (or 128+signal). */
int lt_stop(lt_proc *p, int sig, int timeout_ms);
/* Prints the last lines of the process log to stderr (for failures). */
void lt_proc_dump(const lt_proc *p);

/* A TCP port free on 0.0.0.0 right now, below the ephemeral range (no
 * connection takes it as its source port before a server binds it). */
int lt_free_port(void);

/* One HTTP exchange. */
typedef struct lt_resp {
	long status;     /* 0 if the request failed at the transport level */
	char *body;      /* NUL-terminated, loom_malloc'ed */
	size_t len;
	char *headers;   /* raw response headers, NUL-terminated */
} lt_resp;
/* method "GET"/"POST"/...; body may be NULL; content_type NULL = application/json.
 * timeout_ms 0 = 60 s. Returns 0 when an HTTP status was received. */
int lt_http(const char *method, const char *url, const char *body, const char *content_type,
	    long timeout_ms, lt_resp *out);
void lt_resp_free(lt_resp *r);

/* A running loom: one gateway and n workers on loopback. */
#define LT_MAX_WORKERS 4
typedef struct lt_stack {
	lt_proc gw;
	lt_proc wk[LT_MAX_WORKERS];
	int n_workers;
	int port;
	char url[64];               /* http://127.0.0.1:PORT */
	char worker_url[LT_MAX_WORKERS][128]; /* ipc://... */
	char *dir;                  /* temp dir holding logs and ipc files */
} lt_stack;
/*
 * Starts n_workers loom-worker processes, each with every --model given in
 * models (a NULL-terminated list of "NAME=DIR"), and a loom-gateway on a free
 * port with the same models, the workers, and extra_gw_args (a
 * NULL-terminated argv fragment or NULL). Waits until GET /ready says 200
 * (up to 60 s). Returns 0, or -1 after printing the logs.
 */
int lt_stack_start(lt_stack *s, const char *const *models, int n_workers,
		   const char *const *extra_gw_args);
/* Same, with extra_wk_args (NULL-terminated or NULL) given to every worker.
 * n_workers 0 starts the gateway alone (the caller's --worker URLs in
 * extra_gw_args, its workers started by the caller).
 * The gateway starts first with --store (the caller's, else one in the
 * stack's temp dir); workers get the same --store (read-only) unless
 * extra_wk_args gives --store or --own-store. */
int lt_stack_start2(lt_stack *s, const char *const *models, int n_workers,
		    const char *const *extra_gw_args, const char *const *extra_wk_args);
/* Stops everything (SIGTERM, then SIGKILL) and removes nothing (logs stay). */
void lt_stack_stop(lt_stack *s);

#endif
