/*
 * common/err.h — loom's one error type.
 *
 * Owns: the loom_err codes every fallible function returns (0 = success),
 * their names, and a per-thread "last error detail" string that the failing
 * function fills with a sentence a user can act on (file name, field, the
 * original library code). Callers print loom_errmsg() next to loom_strerror().
 * Must not: allocate, log, or terminate the process.
 */
#ifndef LOOM_ERR_H
#define LOOM_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum loom_err {
	LOOM_OK = 0,
	LOOM_ENOMEM,      /* allocation failed */
	LOOM_EINVAL,      /* bad argument or bad input value */
	LOOM_EIO,         /* read/write/open failed (errno in the detail) */
	LOOM_EFORMAT,     /* malformed file or bytes (JSON, safetensors, msgpack) */
	LOOM_ENOTFOUND,   /* named thing does not exist */
	LOOM_ERANGE,      /* value outside the allowed range (e.g. context length) */
	LOOM_EPROTO,      /* wire protocol violation */
	LOOM_ECLOSED,     /* peer or link gone */
	LOOM_ETIMEDOUT,
	LOOM_EUNSUPPORTED,/* valid input we do not handle (dtype, architecture) */
	LOOM_EBUSY,       /* resource exhausted for now; retry later */
	LOOM_ECANCELED,
	LOOM_EEXIST,
	LOOM_EINTERNAL,   /* a library we call failed in a way input cannot explain */
	LOOM_ERR_COUNT
} loom_err;

/* Static name of the code ("invalid argument"). Never NULL. */
const char *loom_strerror(loom_err rc);

/* Sets this thread's detail message (printf format) and returns rc, so that
 * `return loom_fail(LOOM_EFORMAT, "%s: header too short", path);` reads well. */
loom_err loom_fail(loom_err rc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* This thread's last detail message, "" when none. Valid until the next
 * loom_fail() on this thread. */
const char *loom_errmsg(void);

/* Clears this thread's detail message. */
void loom_errclear(void);

#ifdef __cplusplus
}
#endif

#endif
