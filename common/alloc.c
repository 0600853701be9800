/* common/alloc.c — allocator wrapper with N-th-allocation fault injection. */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static atomic_long fail_countdown; /* 0 = off; else allocations left before failing */

static int should_fail(void)
{
	long v = atomic_load(&fail_countdown);
	if (v == 0)
		return 0;
	if (v == 1)
		return 1; /* stays at 1: every later allocation fails too */
	atomic_fetch_sub(&fail_countdown, 1);
	return 0;
}

void *loom_malloc(size_t n)
{
	return should_fail() ? NULL : malloc(n ? n : 1);
}

void *loom_calloc(size_t count, size_t size)
{
	return should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1);
}

void *loom_realloc(void *p, size_t n)
{
	return should_fail() ? NULL : realloc(p, n ? n : 1);
}

char *loom_strndup(const char *s, size_t n)
{
	char *d = loom_malloc(n + 1);
	if (!d)
		return NULL;
	if (n)
		memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

char *loom_strdup(const char *s)
{
	return loom_strndup(s, strlen(s));
}

void loom_free(void *p)
{
	free(p);
}

void loom_alloc_fail_after(long n)
{
	atomic_store(&fail_countdown, n);
}

void loom_alloc_fail_reset(void)
{
	atomic_store(&fail_countdown, 0);
}
