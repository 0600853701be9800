/*
 * tests/gateway/test_deadline.c — gw_deadline_run: a step that returns in
 * time gives its result and error message on the caller's thread; one that
 * hangs past the deadline gives LOOM_ETIMEDOUT at the deadline (not when it
 * returns) and is freed by its own thread when it does; no limit runs it
 * inline; several abandoned steps at once each free their own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "gateway/gw_deadline.h"

static atomic_int dropped;

typedef struct step {
	int sleep_ms;
	loom_err rc;
	int ran_on_caller;
	pthread_t caller;
	int *out;
} step;

static loom_err run(void *p)
{
	step *s = p;
	s->ran_on_caller = pthread_equal(pthread_self(), s->caller);
	usleep((useconds_t)s->sleep_ms * 1000);
	if (s->out)
		*s->out = 42;
	return s->rc ? loom_fail(s->rc, "step failed after %d ms", s->sleep_ms) : LOOM_OK;
}

static void drop(void *p, loom_err rc)
{
	(void)rc;
	loom_free(p);
	atomic_fetch_add(&dropped, 1);
}

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static step *mk(int sleep_ms, loom_err rc)
{
	step *s = loom_calloc(1, sizeof *s);
	assert_non_null(s);
	s->sleep_ms = sleep_ms;
	s->rc = rc;
	s->caller = pthread_self();
	return s;
}

static void test_in_time(void **state)
{
	(void)state;
	int v = 0;
	step *s = mk(10, LOOM_OK);
	s->out = &v;
	assert_int_equal(gw_deadline_run(run, drop, s, 5000), LOOM_OK);
	assert_int_equal(v, 42);
	assert_false(s->ran_on_caller);
	loom_free(s);
	/* a failure: its code and message, here */
	s = mk(10, LOOM_EINVAL);
	loom_fail(LOOM_OK, "stale");
	assert_int_equal(gw_deadline_run(run, drop, s, 5000), LOOM_EINVAL);
	assert_string_equal(loom_errmsg(), "step failed after 10 ms");
	loom_free(s);
	assert_int_equal(atomic_load(&dropped), 0);
}

static void test_no_limit_inline(void **state)
{
	(void)state;
	step *s = mk(0, LOOM_OK);
	assert_int_equal(gw_deadline_run(run, drop, s, 0), LOOM_OK);
	assert_true(s->ran_on_caller);
	loom_free(s);
}

static void test_timeout(void **state)
{
	(void)state;
	int before = atomic_load(&dropped);
	double t0 = now_ms();
	/* three hung steps: each answered at its deadline */
	for (int i = 0; i < 3; i++)
		assert_int_equal(gw_deadline_run(run, drop, mk(800, i ? LOOM_EIO : LOOM_OK), 100),
				 LOOM_ETIMEDOUT);
	double took = now_ms() - t0;
	assert_true(took >= 300 && took < 750); /* not 3 x 800 */
	assert_int_equal(atomic_load(&dropped), before);
	/* each is freed by its own thread when it returns */
	for (int t = 0; t < 300 && atomic_load(&dropped) < before + 3; t++)
		usleep(10000);
	assert_int_equal(atomic_load(&dropped), before + 3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_in_time),
		cmocka_unit_test(test_no_limit_inline),
		cmocka_unit_test(test_timeout),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
