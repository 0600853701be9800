/*
 * tests/gpu/gpu_test.h — what the GPU kernel tests share (header-only,
 * static): a seeded RNG, half-precision conversions, device set-up that
 * turns "no device" into cmocka skips, device buffers from one scratch
 * arena, poisoning, and a tolerance check against float64 references.
 *
 * Built in two ways: with LOOM_HAVE_CUDA defined (the test links
 * loom_kernels_cuda; CMake defines it for targets that link the CUDA
 * backend) the cases run on device 0, or are reported SKIPPED when no
 * device or driver exists; without it (a build where the CUDA backend is
 * not linked) every case is SKIPPED and nothing CUDA is referenced.
 */
#ifndef GPU_TEST_H
#define GPU_TEST_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common/dtype.h"
#include "common/err.h"

#ifdef LOOM_HAVE_CUDA
#include "kernels/cuda/kn_cuda.h"
#endif

/* ---- random numbers (fresh per run, printed so a failure can be replayed) ---- */

static uint64_t gt_rng __attribute__((unused)) = 0;

static inline void gt_seed(void)
{
	const char *s = getenv("LOOM_TEST_SEED");
	gt_rng = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) * 2654435761ULL;
	fprintf(stderr, "gpu tests: LOOM_TEST_SEED=%llu\n", (unsigned long long)gt_rng);
}

static inline uint64_t gt_next(void)
{
	gt_rng += 0x9e3779b97f4a7c15ULL;
	uint64_t z = gt_rng;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* uniform in [-1, 1) */
static inline double gt_rnd(void)
{
	return (double)(gt_next() >> 11) / 4503599627370496.0 - 1.0;
}

/* integer in [0, n) */
static inline int gt_int(int n)
{
	return (int)(gt_next() % (uint64_t)n);
}

#ifdef LOOM_HAVE_CUDA

/* ---- host tensors with a dtype ---- */

/* Converts v to dt and back: the value the device actually sees. */
static inline double gt_round(kn_cuda_dtype dt, double v)
{
	switch (dt) {
	case KN_CUDA_BF16:
		return loom_bf16_to_f32(loom_f32_to_bf16((float)v));
	case KN_CUDA_F16:
		return loom_f16_to_f32(loom_f32_to_f16((float)v));
	default:
		return (float)v;
	}
}

/* n random values in [-scale, scale) stored as dt in a new host buffer;
 * *vals (if not NULL) receives the exact values as doubles. */
static inline void *gt_rand_tensor(kn_cuda_dtype dt, size_t n, double scale, double **vals)
{
	size_t es = kn_cuda_dtype_size(dt);
	unsigned char *h = malloc(n * es + 1);
	double *d = vals ? malloc((n + 1) * sizeof *d) : NULL;
	assert_non_null(h);
	for (size_t i = 0; i < n; i++) {
		float f = (float)(gt_rnd() * scale);
		if (dt == KN_CUDA_BF16) {
			uint16_t b = loom_f32_to_bf16(f);
			memcpy(h + i * 2, &b, 2);
			f = loom_bf16_to_f32(b);
		} else if (dt == KN_CUDA_F16) {
			uint16_t b = loom_f32_to_f16(f);
			memcpy(h + i * 2, &b, 2);
			f = loom_f16_to_f32(b);
		} else {
			memcpy(h + i * 4, &f, 4);
		}
		if (d)
			d[i] = f;
	}
	if (vals)
		*vals = d;
	return h;
}

/* Host buffer of n dt elements -> doubles. */
static inline double *gt_to_double(kn_cuda_dtype dt, const void *h, size_t n)
{
	double *d = malloc((n + 1) * sizeof *d);
	assert_non_null(d);
	const unsigned char *p = h;
	for (size_t i = 0; i < n; i++) {
		if (dt == KN_CUDA_BF16) {
			uint16_t b;
			memcpy(&b, p + i * 2, 2);
			d[i] = loom_bf16_to_f32(b);
		} else if (dt == KN_CUDA_F16) {
			uint16_t b;
			memcpy(&b, p + i * 2, 2);
			d[i] = loom_f16_to_f32(b);
		} else {
			float f;
			memcpy(&f, p + i * 4, 4);
			d[i] = f;
		}
	}
	return d;
}

/* ---- device ---- */

typedef struct gt_dev {
	int present;
	kn_cuda_ctx *ctx;
	kn_cuda_arena *arena;
	void *stream;
	char name[256];
	int sm_count;
} gt_dev;

static gt_dev gt __attribute__((unused));

#define GT_ARENA_BYTES ((size_t)512 << 20)

/* Group set-up: a context and a scratch arena on device 0, or nothing (and
 * every case skips) when there is no device. Never fails the group. */
static int gt_group_setup(void **state)
{
	(void)state;
	gt_seed();
	int n = 0;
	kn_cuda_device_count(&n);
	if (n == 0) {
		fprintf(stderr, "gpu tests: SKIPPED, %s\n",
			*loom_errmsg() ? loom_errmsg() : "no CUDA device");
		return 0;
	}
	kn_cuda_device info;
	if (kn_cuda_device_info(0, &info) != LOOM_OK ||
	    kn_cuda_ctx_create(0, 0, &gt.ctx) != LOOM_OK ||
	    kn_cuda_arena_create("test scratch", GT_ARENA_BYTES, &gt.arena) != LOOM_OK) {
		fprintf(stderr, "gpu tests: device set-up failed: %s\n", loom_errmsg());
		return -1;
	}
	snprintf(gt.name, sizeof gt.name, "%s", info.name);
	gt.sm_count = info.sm_count;
	gt.stream = kn_cuda_ctx_stream(gt.ctx);
	gt.present = 1;
	fprintf(stderr, "gpu tests: device 0 = %s (sm_%d%d, %d SMs)\n", info.name, info.sm_major,
		info.sm_minor, info.sm_count);
	return 0;
}

static int gt_group_teardown(void **state)
{
	(void)state;
	kn_cuda_arena_destroy(gt.arena);
	kn_cuda_ctx_destroy(gt.ctx);
	memset(&gt, 0, sizeof gt);
	return 0;
}

/* First line of every case: skips when no device. */
#define GT_REQUIRE_DEVICE()                                                                    \
	do {                                                                                   \
		if (!gt.present)                                                               \
			skip();                                                                \
	} while (0)

#define GT_OK(call)                                                                            \
	do {                                                                                   \
		loom_err rc_ = (call);                                                         \
		if (rc_ != LOOM_OK)                                                            \
			fail_msg("%s -> %s: %s", #call, loom_strerror(rc_), loom_errmsg());    \
	} while (0)

/* Device buffer of bytes from the scratch arena (released by gt_reset). */
static inline void *gt_alloc(size_t bytes)
{
	void *p = NULL;
	GT_OK(kn_cuda_arena_alloc(gt.arena, bytes ? bytes : 1, &p));
	return p;
}

static inline void *gt_upload(const void *host, size_t bytes)
{
	void *d = gt_alloc(bytes);
	GT_OK(kn_cuda_memcpy(d, host, bytes));
	return d;
}

static inline void gt_download(void *host, const void *dev, size_t bytes)
{
	GT_OK(kn_cuda_stream_sync(gt.stream));
	GT_OK(kn_cuda_memcpy(host, dev, bytes));
}

/* 0xFF bytes: NaN in f32, bf16 and f16 alike. */
static inline void gt_poison(void *dev, size_t bytes)
{
	GT_OK(kn_cuda_memset_async(dev, 0xFF, bytes, gt.stream));
}

static inline void gt_reset(void)
{
	GT_OK(kn_cuda_ctx_sync(gt.ctx));
	kn_cuda_arena_reset(gt.arena, 0);
}

/* Max |got - want| / (atol + rtol*|want|) must stay <= 1 (NaN fails). */
static inline void gt_expect_close(const char *what, const double *got, const double *want, size_t n,
			    double rtol, double atol)
{
	double worst = 0.0;
	size_t at = 0;
	for (size_t i = 0; i < n; i++) {
		double r = fabs(got[i] - want[i]) / (atol + rtol * fabs(want[i]));
		if (!(r <= worst)) {
			worst = isnan(r) ? INFINITY : r;
			at = i;
		}
	}
	if (worst > 1.0)
		fail_msg("%s: element %zu got %.9g want %.9g (error %.3g x tolerance, rtol %g atol "
			 "%g, seed via LOOM_TEST_SEED above)", what, at, got[at], want[at], worst,
			 rtol, atol);
}

/* Tolerances per output dtype (KERNELS.md section 5: fp32 accumulation,
 * one rounding of the output). */
static inline void gt_tol(kn_cuda_dtype dt, double *rtol, double *atol)
{
	switch (dt) {
	case KN_CUDA_BF16:
		*rtol = 1.6e-2;
		*atol = 1e-2;
		break;
	case KN_CUDA_F16:
		*rtol = 2e-3;
		*atol = 2e-3;
		break;
	default:
		*rtol = 1e-4;
		*atol = 1e-5;
		break;
	}
}

#define GT_RUN(name, tests) cmocka_run_group_tests_name(name, tests, gt_group_setup, gt_group_teardown)

#else /* no CUDA backend linked: every case is reported skipped */

static int gt_group_setup(void **state)
{
	(void)state;
	fprintf(stderr, "gpu tests: SKIPPED, built without the CUDA backend (LOOM_HAVE_CUDA)\n");
	return 0;
}
#define GT_RUN(name, tests) cmocka_run_group_tests_name(name, tests, gt_group_setup, NULL)

#endif

/* A test file lists its cases once: #define GT_CASES(X) X(test_a) X(test_b);
 * without the backend each becomes a stub that skips. */
#define GT_ENTRY(f) cmocka_unit_test(f),
#define GT_STUB(f)                                                                             \
	static void f(void **state)                                                            \
	{                                                                                      \
		(void)state;                                                                   \
		skip();                                                                        \
	}

#endif
