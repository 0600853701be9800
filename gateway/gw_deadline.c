/*
 * gateway/gw_deadline.c — a blocking step with a deadline (gw_deadline.h).
 *
 * A shared record with two references (the caller's and the thread's);
 * whoever lets go last frees it. The thread is detached: nobody joins a
 * thread that may never return.
 */
#include "gw_deadline.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/alloc.h"

typedef struct job {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	gw_deadline_fn fn;
	gw_deadline_drop_fn drop;
	void *arg;
	loom_err rc;
	char msg[512];       /* the step's loom_errmsg (thread-local there) */
	int refs;
	int done;
	int abandoned;
} job;

static void job_put(job *j)
{
	pthread_mutex_lock(&j->mu);
	int last = --j->refs == 0;
	pthread_mutex_unlock(&j->mu);
	if (!last)
		return;
	pthread_cond_destroy(&j->cv);
	pthread_mutex_destroy(&j->mu);
	loom_free(j);
}

static void *run(void *p)
{
	job *j = p;
	loom_err rc = j->fn(j->arg);

	pthread_mutex_lock(&j->mu);
	j->rc = rc;
	if (rc)
		snprintf(j->msg, sizeof j->msg, "%s", loom_errmsg());
	j->done = 1;
	int abandoned = j->abandoned;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
	if (abandoned)
		j->drop(j->arg, rc);
	job_put(j);
	return NULL;
}

loom_err gw_deadline_run(gw_deadline_fn fn, gw_deadline_drop_fn drop, void *arg, long timeout_ms)
{
	pthread_attr_t at;
	pthread_t t;
	struct timespec until;
	loom_err rc;
	int err;

	if (timeout_ms <= 0)
		return fn(arg);
	job *j = loom_calloc(1, sizeof *j);
	if (!j)
		return loom_fail(LOOM_ENOMEM, "out of memory starting a read");
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	j->fn = fn;
	j->drop = drop;
	j->arg = arg;
	j->refs = 2;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	err = pthread_create(&t, &at, run, j);
	pthread_attr_destroy(&at);
	if (err) {
		pthread_cond_destroy(&j->cv);
		pthread_mutex_destroy(&j->mu);
		loom_free(j);
		return loom_fail(LOOM_EINTERNAL, "cannot start a reader thread (%s)", strerror(err));
	}
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&j->mu);
	err = 0;
	while (!j->done && err != ETIMEDOUT)
		err = pthread_cond_timedwait(&j->cv, &j->mu, &until);
	if (j->done) {
		rc = j->rc;
		if (rc)
			loom_fail(rc, "%s", j->msg); /* on the caller's thread */
	} else {
		j->abandoned = 1;
		rc = LOOM_ETIMEDOUT;
	}
	pthread_mutex_unlock(&j->mu);
	job_put(j);
	return rc;
}
