/*
 * common/alloc.h — the one allocator wrapper of every loom process.
 *
 * Owns: loom_malloc/calloc/realloc/strdup/free and a fault-injection knob so
 * tests can make the N-th allocation fail (SQLite style). All loom code
 * allocates through here; memory from these is released with loom_free().
 * Must not: abort on failure — callers turn NULL into LOOM_ENOMEM.
 */
#ifndef LOOM_ALLOC_H
#define LOOM_ALLOC_H

#include <stddef.h>

void *loom_malloc(size_t n);
void *loom_calloc(size_t count, size_t size);
void *loom_realloc(void *p, size_t n);
char *loom_strdup(const char *s);
char *loom_strndup(const char *s, size_t n);
void loom_free(void *p);

/* Tests only: the n-th allocation from now (1 = the next) and every one after
 * it fails, until loom_alloc_fail_reset(). n = 0 disables. Process-wide. */
void loom_alloc_fail_after(long n);
void loom_alloc_fail_reset(void);

#endif
