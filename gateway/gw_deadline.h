/*
 * gateway/gw_deadline.h — running a blocking step (reading files an admin
 * import names) with a deadline, so that an HTTP thread never waits on a
 * hung filesystem longer than the operator allows.
 *
 * Owns: one detached thread per call. The step cannot be interrupted (a
 * read stuck in the kernel stays stuck), so on timeout the caller answers
 * and the thread is abandoned: when the step returns at last, its results
 * are freed on that thread.
 * Must not: hold any lock of the caller's across the wait (the caller
 * must not either).
 */
#ifndef GW_DEADLINE_H
#define GW_DEADLINE_H

#include "../common/err.h"

/* The step: fills what arg points to; its result is returned. */
typedef loom_err (*gw_deadline_fn)(void *arg);
/* Frees what an abandoned step made, and arg itself (called on the step's
 * thread after a timeout, with the step's result). */
typedef void (*gw_deadline_drop_fn)(void *arg, loom_err rc);

/*
 * Runs fn(arg) on a new thread and waits at most timeout_ms (<= 0: no
 * limit, fn runs on the calling thread). Returns fn's result (its
 * loom_errmsg carried over to the calling thread); the caller keeps arg. LOOM_ETIMEDOUT when fn did not return in time: arg (which must
 * be heap memory) then belongs to the step's thread, which calls
 * drop(arg, rc) when fn returns. LOOM_ENOMEM / LOOM_EINTERNAL when the
 * thread cannot start (arg stays the caller's; fn did not run).
 */
loom_err gw_deadline_run(gw_deadline_fn fn, gw_deadline_drop_fn drop, void *arg, long timeout_ms);

#endif
