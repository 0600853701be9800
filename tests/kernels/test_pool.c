/*
 * tests/kernels/test_pool.c — kn_pool_run runs every task of a run exactly
 * once and returns only when all of them are done, back to back over runs
 * of different sizes and functions (the case that once let a thread still
 * claiming in one run take a task of the next with its new function: the
 * task ran twice and the run ended early).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "kernels/kernels.h"

#define MAXT 16

typedef struct run_ctx {
	atomic_int hits[MAXT];
	int id;
} run_ctx;

static void count(void *ctx, int t)
{
	run_ctx *c = ctx;
	atomic_fetch_add(&c->hits[t], 1);
}

static void count_twice_as_much(void *ctx, int t) /* another function, same effect */
{
	count(ctx, t);
}

static void test_each_task_once(void **state)
{
	(void)state;
	for (int threads = 2; threads <= 3; threads++) {
		kn_pool *p = NULL;
		assert_int_equal(kn_pool_create(threads, &p), 0);
		for (int r = 0; r < 200000; r++) {
			run_ctx c = {.id = r};
			for (int t = 0; t < MAXT; t++)
				atomic_init(&c.hits[t], 0);
			/* alternate small and large runs: a late thread of a small
			 * run sees a large run's n_tasks */
			int n = (r & 1) ? 2 + r % (MAXT - 2) : 2;
			kn_pool_run(p, n, (r & 2) ? count : count_twice_as_much, &c);
			for (int t = 0; t < MAXT; t++) {
				int h = atomic_load(&c.hits[t]);
				if (h != (t < n)) {
					print_error("%d threads, run %d of %d tasks: task %d ran %d times "
						    "by the time kn_pool_run returned\n", threads, r, n, t, h);
					fail();
				}
			}
		}
		kn_pool_destroy(p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_each_task_once),
	};
	return cmocka_run_group_tests_name("kernels/pool", tests, NULL, NULL);
}
