/*
 * kernels/cpu/pool.c — the persistent worker threads a forward step's ops
 * are split over.
 *
 * One pool per engine (created with the engine, never per step). A run
 * hands out task indices [0, n_tasks) through one atomic counter; the
 * calling thread works too and returns when every task is done. Which
 * thread runs a task never changes what the task computes (tasks write
 * disjoint outputs in a fixed order), so results do not depend on the
 * thread count or on scheduling. Workers sleep on a condition variable
 * between runs (a step's ops come in bursts of tens of microseconds; a
 * short spin before sleeping keeps the wake-up cost off small ops).
 */
#include "../kernels.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define SPIN 20000

struct kn_pool {
	int n;                 /* threads in all, the caller included */
	pthread_t *th;         /* [n - 1] */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	atomic_uint gen;       /* the current run (wake-up signal) */
	/* (gen << 32) | next task index: a worker claims a task of run g only
	 * while the high half still says g, so one that wakes late can never
	 * take a task of a later run with the earlier run's function */
	_Atomic uint64_t next;
	atomic_int done;       /* tasks finished in the current run */
	atomic_int n_tasks;
	_Atomic(kn_task_fn) fn;
	_Atomic(void *) ctx;
	atomic_int stop;
};

/* Claims and runs tasks of run g until it has none left. After a claim
 * succeeds the run cannot end (its task is not done), so fn/ctx are the
 * run's own. */
static void work(kn_pool *p, uint32_t g)
{
	for (;;) {
		uint64_t v = atomic_load(&p->next);
		if ((uint32_t)(v >> 32) != g || (uint32_t)v >= (uint32_t)atomic_load(&p->n_tasks))
			return;
		if (!atomic_compare_exchange_weak(&p->next, &v, v + 1))
			continue;
		atomic_load(&p->fn)(atomic_load(&p->ctx), (int)(uint32_t)v);
		atomic_fetch_add(&p->done, 1);
	}
}

static void *worker(void *arg)
{
	kn_pool *p = arg;
	unsigned seen = 0;
	for (;;) {
		unsigned g;
		int spins = 0;
		while ((g = atomic_load(&p->gen)) == seen && ++spins < SPIN)
			;
		if (g == seen) {
			pthread_mutex_lock(&p->mu);
			while ((g = atomic_load(&p->gen)) == seen)
				pthread_cond_wait(&p->cv, &p->mu);
			pthread_mutex_unlock(&p->mu);
		}
		seen = g;
		if (atomic_load(&p->stop))
			return NULL;
		work(p, g);
	}
}

int kn_pool_create(int n_threads, kn_pool **out)
{
	kn_pool *p = calloc(1, sizeof *p);
	*out = NULL;
	if (!p || n_threads < 1)
		goto fail;
	p->n = n_threads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	if (n_threads > 1 && !(p->th = calloc((size_t)n_threads - 1, sizeof *p->th)))
		goto fail;
	for (int i = 0; i < n_threads - 1; i++) {
		if (pthread_create(&p->th[i], NULL, worker, p) != 0) {
			p->n = i + 1; /* the ones started are joined by destroy */
			kn_pool_destroy(p);
			return -1;
		}
	}
	*out = p;
	return 0;
fail:
	if (p)
		free(p->th);
	free(p);
	return -1;
}

void kn_pool_destroy(kn_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->stop, 1);
	atomic_fetch_add(&p->gen, 1);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 0; i < p->n - 1; i++)
		pthread_join(p->th[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->th);
	free(p);
}

int kn_pool_threads(const kn_pool *p)
{
	return p ? p->n : 1;
}

void kn_pool_run(kn_pool *p, int n_tasks, kn_task_fn fn, void *ctx)
{
	if (n_tasks <= 0)
		return;
	if (!p || p->n == 1 || n_tasks == 1) {
		for (int t = 0; t < n_tasks; t++)
			fn(ctx, t);
		return;
	}
	uint32_t g = atomic_load(&p->gen) + 1;
	/* next first: a thread still in the previous run's claim loop must see
	 * the new generation before fn, ctx and n_tasks change. (Stored after
	 * them, a worker holding the previous run's last index could pass the
	 * new n_tasks check and claim it with the new fn: a task run twice —
	 * an accumulating GEMM or a LoRA expand added twice — and the run
	 * counted done early; seen as 1 in 600 worker/test_invariance runs.) */
	atomic_store(&p->next, (uint64_t)g << 32);
	atomic_store(&p->fn, fn);
	atomic_store(&p->ctx, ctx);
	atomic_store(&p->n_tasks, n_tasks);
	atomic_store(&p->done, 0);
	pthread_mutex_lock(&p->mu);
	atomic_store(&p->gen, g);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	work(p, g);
	while (atomic_load(&p->done) < n_tasks)
		;
}
