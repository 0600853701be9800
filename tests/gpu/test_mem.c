/*
 * tests/gpu/test_mem.c — the CUDA backend's memory plumbing
 * (kernels/cuda/mem.cu): arenas (alignment, exhaustion with a clear
 * message, mark/reset), the page allocator of the adapter pool (runs,
 * fragmentation, reuse), pinned staging, and the copy stream overlapping
 * the compute stream through events (no device-wide sync).
 */
#include "gpu_test.h"

#define GT_CASES(X)                                                                            \
	X(test_mem_context)                                                                    \
	X(test_mem_arena)                                                                      \
	X(test_mem_pages)                                                                      \
	X(test_mem_copy_stream_events)

#ifdef LOOM_HAVE_CUDA

static void test_mem_context(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	assert_true(kn_cuda_ctx_sm_count(gt.ctx) > 0);
	void *s = kn_cuda_ctx_stream(gt.ctx), *cs = kn_cuda_ctx_copy_stream(gt.ctx);
	assert_non_null(s);
	assert_non_null(cs);
	assert_ptr_not_equal(s, cs);
	GT_OK(kn_cuda_ctx_sync(gt.ctx));
}

static void test_mem_arena(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	kn_cuda_arena *a = NULL;
	GT_OK(kn_cuda_arena_create("weights", 4096, &a));
	assert_int_equal(kn_cuda_arena_capacity(a), 4096);
	void *p1, *p2, *p3;
	GT_OK(kn_cuda_arena_alloc(a, 10, &p1));
	GT_OK(kn_cuda_arena_alloc(a, 1, &p2));
	assert_int_equal((uintptr_t)p1 % 256, 0);
	assert_int_equal((uintptr_t)p2 % 256, 0);
	assert_int_equal((char *)p2 - (char *)p1, 256);
	size_t mark = kn_cuda_arena_mark(a);
	GT_OK(kn_cuda_arena_alloc(a, 3000, &p3));
	assert_int_equal(kn_cuda_arena_alloc(a, 1024, &p3), LOOM_ENOMEM);
	assert_null(p3);
	assert_non_null(strstr(loom_errmsg(), "weights"));
	kn_cuda_arena_reset(a, mark);
	assert_int_equal(kn_cuda_arena_used(a), mark);
	GT_OK(kn_cuda_arena_alloc(a, 1024, &p3));
	/* the memory is real device memory */
	unsigned char h[1024], back[1024];
	for (int i = 0; i < 1024; i++)
		h[i] = (unsigned char)(i * 7);
	GT_OK(kn_cuda_memcpy(p3, h, sizeof h));
	GT_OK(kn_cuda_memcpy(back, p3, sizeof back));
	assert_memory_equal(h, back, sizeof h);
	kn_cuda_arena_destroy(a);
	assert_int_equal(kn_cuda_arena_create("huge", (size_t)1 << 50, &a), LOOM_ENOMEM);
	assert_null(a);
}

static void test_mem_pages(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	gt_reset();
	kn_cuda_pages *p = NULL;
	GT_OK(kn_cuda_pages_create(gt.arena, 1000, 8, &p));
	assert_int_equal(kn_cuda_pages_page_bytes(p), 1024);
	assert_int_equal(kn_cuda_pages_free_count(p), 8);
	int f1, f2, f3, f4;
	void *a, *b, *c, *d;
	GT_OK(kn_cuda_pages_alloc(p, 3, &f1, &a));
	GT_OK(kn_cuda_pages_alloc(p, 2, &f2, &b));
	GT_OK(kn_cuda_pages_alloc(p, 3, &f3, &c));
	assert_int_equal(f1, 0);
	assert_int_equal(f2, 3);
	assert_int_equal(f3, 5);
	assert_int_equal((char *)b - (char *)a, 3 * 1024);
	assert_int_equal(kn_cuda_pages_alloc(p, 1, &f4, &d), LOOM_EBUSY);
	kn_cuda_pages_free(p, f1, 3);
	kn_cuda_pages_free(p, f3, 3);
	assert_int_equal(kn_cuda_pages_free_count(p), 6);
	/* 6 free pages in two runs of 3: a run of 4 does not fit */
	assert_int_equal(kn_cuda_pages_alloc(p, 4, &f4, &d), LOOM_EBUSY);
	assert_non_null(strstr(loom_errmsg(), "fragmented"));
	GT_OK(kn_cuda_pages_alloc(p, 3, &f4, &d));
	assert_int_equal(f4, 0);
	assert_ptr_equal(d, a);
	assert_int_equal(kn_cuda_pages_alloc(p, 0, &f4, &d), LOOM_EINVAL);
	kn_cuda_pages_destroy(p);
}

/* Host data staged in pinned memory, copied on the copy stream; the compute
 * stream waits on the event (no host wait) and converts it; the result
 * comes back through pinned memory. */
static void test_mem_copy_stream_events(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	gt_reset();
	size_t n = (size_t)8 << 20; /* 32 MiB of f32: the copy takes a while */
	float *pin = NULL;
	uint16_t *pout = NULL;
	GT_OK(kn_cuda_host_alloc(n * sizeof(float), (void **)&pin));
	GT_OK(kn_cuda_host_alloc(n * sizeof(uint16_t), (void **)&pout));
	for (size_t i = 0; i < n; i++)
		pin[i] = (float)(i % 1000) * 0.25f;
	float *src = gt_alloc(n * sizeof(float));
	uint16_t *dst = gt_alloc(n * sizeof(uint16_t));
	kn_cuda_event *loaded = NULL, *t0 = NULL, *t1 = NULL;
	GT_OK(kn_cuda_event_create(0, &loaded));
	GT_OK(kn_cuda_event_create(1, &t0));
	GT_OK(kn_cuda_event_create(1, &t1));
	void *cs = kn_cuda_ctx_copy_stream(gt.ctx), *s = gt.stream;
	GT_OK(kn_cuda_event_record(t0, cs));
	GT_OK(kn_cuda_memcpy_async(src, pin, n * sizeof(float), cs));
	GT_OK(kn_cuda_event_record(loaded, cs));
	GT_OK(kn_cuda_event_record(t1, cs));
	GT_OK(kn_cuda_stream_wait(s, loaded));
	GT_OK(kn_cuda_cast(dst, KN_CUDA_BF16, src, KN_CUDA_F32, n, s));
	GT_OK(kn_cuda_memcpy_async(pout, dst, n * sizeof(uint16_t), s));
	GT_OK(kn_cuda_stream_sync(s));
	int done = 0;
	GT_OK(kn_cuda_event_query(loaded, &done));
	assert_int_equal(done, 1);
	float ms = -1.f;
	GT_OK(kn_cuda_event_elapsed(t0, t1, &ms));
	assert_true(ms >= 0.f);
	fprintf(stderr, "gpu tests: pinned H2D %zu MiB in %.3f ms (%.1f GB/s)\n",
		n * sizeof(float) >> 20, (double)ms, (double)(n * sizeof(float)) / (ms * 1e6));
	for (size_t i = 0; i < n; i += 997)
		if (pout[i] != loom_f32_to_bf16(pin[i]))
			fail_msg("element %zu: 0x%04x, want 0x%04x (the compute stream ran before "
				 "the copy finished?)", i, pout[i], loom_f32_to_bf16(pin[i]));
	kn_cuda_event_destroy(loaded);
	kn_cuda_event_destroy(t0);
	kn_cuda_event_destroy(t1);
	kn_cuda_host_free(pin);
	kn_cuda_host_free(pout);
}

#else
GT_CASES(GT_STUB)
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {GT_CASES(GT_ENTRY)};
	return GT_RUN("gpu/mem", tests);
}
