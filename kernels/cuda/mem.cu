/* kernels/cuda/mem.cu — context, device arenas, pages, pinned host memory,
 * copies and events (no kernels).
 *
 * Arena: one cudaMalloc per lifetime class, handed out by a bump pointer in
 * 256-byte steps (cuBLAS and 16-byte vector loads both want aligned bases);
 * scratch is rewound to a mark each step. Pages: a first-fit run allocator
 * over a byte map, for the adapter pool where adapters come and go. */
#include <stdio.h>
#include <string.h>

extern "C" { /* common/alloc.h has no C++ guards */
#include "common/alloc.h"
}
#include "kn_cuda_int.cuh"

#define ARENA_ALIGN 256
#define DEFAULT_BLAS_WS ((size_t)32 << 20)

/* ---- context ---- */

extern "C" loom_err kn_cuda_ctx_create(int device, size_t cublas_workspace, kn_cuda_ctx **out)
{
	*out = NULL;
	loom_err rc = LOOM_OK;
	cudaError_t e;
	cublasStatus_t s;
	kn_cuda_ctx *c = (kn_cuda_ctx *)loom_calloc(1, sizeof *c);
	if (!c)
		return loom_fail(LOOM_ENOMEM, "cuda context: out of host memory");
	c->device = device;
	if ((e = cudaSetDevice(device)) != cudaSuccess) {
		rc = kn_cu_fail(e, "cudaSetDevice");
		goto out;
	}
	cudaDeviceProp p;
	if ((e = cudaGetDeviceProperties(&p, device)) != cudaSuccess) {
		rc = kn_cu_fail(e, "cudaGetDeviceProperties");
		goto out;
	}
	c->sm_count = p.multiProcessorCount;
	c->smem_optin = p.sharedMemPerBlockOptin;
	if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
		rc = kn_cu_fail(e, "compute stream");
		goto out;
	}
	if ((e = cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking)) != cudaSuccess) {
		rc = kn_cu_fail(e, "copy stream");
		goto out;
	}
	c->blas_ws_bytes = cublas_workspace ? cublas_workspace : DEFAULT_BLAS_WS;
	if ((e = cudaMalloc(&c->blas_ws, c->blas_ws_bytes)) != cudaSuccess) {
		rc = kn_cu_fail(e, "cuBLAS workspace");
		goto out;
	}
	if ((s = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS) {
		c->blas = NULL;
		rc = loom_fail(LOOM_EINTERNAL, "cublasCreate failed (cublas status %d)", (int)s);
		goto out;
	}
	if ((s = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS ||
	    (s = cublasSetWorkspace(c->blas, c->blas_ws, c->blas_ws_bytes)) != CUBLAS_STATUS_SUCCESS) {
		rc = loom_fail(LOOM_EINTERNAL, "cuBLAS stream/workspace set-up failed (cublas "
			       "status %d)", (int)s);
		goto out;
	}
	*out = c;
	c = NULL;
out:
	kn_cuda_ctx_destroy(c);
	return rc;
}

extern "C" void kn_cuda_ctx_destroy(kn_cuda_ctx *c)
{
	if (!c)
		return;
	if (c->stream)
		cudaStreamSynchronize(c->stream);
	if (c->copy_stream)
		cudaStreamSynchronize(c->copy_stream);
	if (c->blas)
		cublasDestroy(c->blas);
	if (c->blas_ws)
		cudaFree(c->blas_ws);
	if (c->copy_stream)
		cudaStreamDestroy(c->copy_stream);
	if (c->stream)
		cudaStreamDestroy(c->stream);
	loom_free(c);
}

extern "C" void *kn_cuda_ctx_stream(const kn_cuda_ctx *c)
{
	return (void *)c->stream;
}

extern "C" void *kn_cuda_ctx_copy_stream(const kn_cuda_ctx *c)
{
	return (void *)c->copy_stream;
}

extern "C" int kn_cuda_ctx_sm_count(const kn_cuda_ctx *c)
{
	return c->sm_count;
}

extern "C" loom_err kn_cuda_ctx_sync(kn_cuda_ctx *c)
{
	loom_err rc = kn_cu_check(cudaStreamSynchronize(c->copy_stream), "copy stream sync");
	if (rc)
		return rc;
	return kn_cu_check(cudaStreamSynchronize(c->stream), "compute stream sync");
}

/* ---- arenas ---- */

struct kn_cuda_arena {
	char name[32];
	char *base;
	size_t cap, used;
};

extern "C" loom_err kn_cuda_arena_create(const char *name, size_t bytes, kn_cuda_arena **out)
{
	*out = NULL;
	if (bytes == 0)
		return loom_fail(LOOM_EINVAL, "arena %s: size 0", name ? name : "?");
	kn_cuda_arena *a = (kn_cuda_arena *)loom_calloc(1, sizeof *a);
	if (!a)
		return loom_fail(LOOM_ENOMEM, "arena: out of host memory");
	snprintf(a->name, sizeof a->name, "%s", name ? name : "arena");
	cudaError_t e = cudaMalloc((void **)&a->base, bytes);
	if (e != cudaSuccess) {
		loom_free(a);
		cudaGetLastError();
		return loom_fail(e == cudaErrorMemoryAllocation ? LOOM_ENOMEM : LOOM_EINTERNAL,
				 "arena %s: cudaMalloc of %zu bytes: %s (cuda error %d)",
				 name ? name : "arena", bytes, cudaGetErrorString(e), (int)e);
	}
	a->cap = bytes;
	*out = a;
	return LOOM_OK;
}

extern "C" void kn_cuda_arena_destroy(kn_cuda_arena *a)
{
	if (!a)
		return;
	cudaFree(a->base);
	loom_free(a);
}

extern "C" loom_err kn_cuda_arena_alloc(kn_cuda_arena *a, size_t bytes, void **out)
{
	*out = NULL;
	size_t at = (a->used + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (at > a->cap || bytes > a->cap - at)
		return loom_fail(LOOM_ENOMEM, "arena %s: %zu bytes requested, %zu of %zu free",
				 a->name, bytes, at > a->cap ? 0 : a->cap - at, a->cap);
	*out = a->base + at;
	a->used = at + bytes;
	return LOOM_OK;
}

extern "C" size_t kn_cuda_arena_mark(const kn_cuda_arena *a)
{
	return a->used;
}

extern "C" void kn_cuda_arena_reset(kn_cuda_arena *a, size_t mark)
{
	if (mark <= a->used)
		a->used = mark;
}

extern "C" size_t kn_cuda_arena_used(const kn_cuda_arena *a)
{
	return a->used;
}

extern "C" size_t kn_cuda_arena_capacity(const kn_cuda_arena *a)
{
	return a->cap;
}

/* ---- pages ---- */

struct kn_cuda_pages {
	char *base;
	size_t page;
	int n, n_free;
	unsigned char *used; /* [n]: 1 = taken */
};

extern "C" loom_err kn_cuda_pages_create(kn_cuda_arena *a, size_t page_bytes, int n_pages,
					 kn_cuda_pages **out)
{
	*out = NULL;
	if (page_bytes == 0 || n_pages < 1)
		return loom_fail(LOOM_EINVAL, "pages: page_bytes=%zu n_pages=%d", page_bytes, n_pages);
	size_t page = (page_bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
	if (page > SIZE_MAX / (size_t)n_pages)
		return loom_fail(LOOM_ERANGE, "pages: %d pages of %zu bytes overflow", n_pages, page);
	kn_cuda_pages *p = (kn_cuda_pages *)loom_calloc(1, sizeof *p);
	unsigned char *used = (unsigned char *)loom_calloc((size_t)n_pages, 1);
	void *base = NULL;
	loom_err rc;
	if (!p || !used) {
		rc = loom_fail(LOOM_ENOMEM, "pages: out of host memory");
		goto fail;
	}
	if ((rc = kn_cuda_arena_alloc(a, page * (size_t)n_pages, &base)) != LOOM_OK)
		goto fail;
	p->base = (char *)base;
	p->page = page;
	p->n = p->n_free = n_pages;
	p->used = used;
	*out = p;
	return LOOM_OK;
fail:
	loom_free(used);
	loom_free(p);
	return rc;
}

extern "C" void kn_cuda_pages_destroy(kn_cuda_pages *p)
{
	if (!p)
		return;
	loom_free(p->used);
	loom_free(p);
}

extern "C" loom_err kn_cuda_pages_alloc(kn_cuda_pages *p, int n, int *first, void **ptr)
{
	*ptr = NULL;
	*first = -1;
	if (n < 1)
		return loom_fail(LOOM_EINVAL, "pages: run of %d pages", n);
	if (n > p->n_free)
		return loom_fail(LOOM_EBUSY, "pages: %d pages wanted, %d free", n, p->n_free);
	int run = 0;
	for (int i = 0; i < p->n; i++) {
		run = p->used[i] ? 0 : run + 1;
		if (run == n) {
			int f = i - n + 1;
			memset(p->used + f, 1, (size_t)n);
			p->n_free -= n;
			*first = f;
			*ptr = p->base + (size_t)f * p->page;
			return LOOM_OK;
		}
	}
	return loom_fail(LOOM_EBUSY, "pages: no run of %d free pages (%d free, fragmented)", n,
			 p->n_free);
}

extern "C" void kn_cuda_pages_free(kn_cuda_pages *p, int first, int n)
{
	if (first < 0 || n < 1 || first > p->n - n)
		return;
	for (int i = first; i < first + n; i++) {
		if (p->used[i]) {
			p->used[i] = 0;
			p->n_free++;
		}
	}
}

extern "C" int kn_cuda_pages_free_count(const kn_cuda_pages *p)
{
	return p->n_free;
}

extern "C" size_t kn_cuda_pages_page_bytes(const kn_cuda_pages *p)
{
	return p->page;
}

/* ---- pinned host memory and copies ---- */

extern "C" loom_err kn_cuda_host_alloc(size_t bytes, void **out)
{
	*out = NULL;
	cudaError_t e = cudaHostAlloc(out, bytes ? bytes : 1, cudaHostAllocPortable);
	if (e != cudaSuccess) {
		*out = NULL;
		cudaGetLastError();
		return loom_fail(e == cudaErrorMemoryAllocation ? LOOM_ENOMEM : LOOM_EINTERNAL,
				 "pinned host alloc of %zu bytes: %s (cuda error %d)", bytes,
				 cudaGetErrorString(e), (int)e);
	}
	return LOOM_OK;
}

extern "C" void kn_cuda_host_free(void *p)
{
	if (p)
		cudaFreeHost(p);
}

extern "C" loom_err kn_cuda_memcpy_async(void *dst, const void *src, size_t bytes, void *stream)
{
	if (bytes == 0)
		return LOOM_OK;
	return kn_cu_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault,
					   (cudaStream_t)stream), "cudaMemcpyAsync");
}

extern "C" loom_err kn_cuda_memset_async(void *dst, int byte, size_t bytes, void *stream)
{
	if (bytes == 0)
		return LOOM_OK;
	return kn_cu_check(cudaMemsetAsync(dst, byte, bytes, (cudaStream_t)stream),
			   "cudaMemsetAsync");
}

extern "C" loom_err kn_cuda_memcpy(void *dst, const void *src, size_t bytes)
{
	if (bytes == 0)
		return LOOM_OK;
	return kn_cu_check(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault), "cudaMemcpy");
}

extern "C" loom_err kn_cuda_stream_sync(void *stream)
{
	return kn_cu_check(cudaStreamSynchronize((cudaStream_t)stream), "cudaStreamSynchronize");
}

/* ---- events ---- */

struct kn_cuda_event {
	cudaEvent_t ev;
};

extern "C" loom_err kn_cuda_event_create(int timing, kn_cuda_event **out)
{
	*out = NULL;
	kn_cuda_event *e = (kn_cuda_event *)loom_calloc(1, sizeof *e);
	if (!e)
		return loom_fail(LOOM_ENOMEM, "event: out of host memory");
	cudaError_t ce = cudaEventCreateWithFlags(&e->ev, timing ? cudaEventDefault
							  : cudaEventDisableTiming);
	if (ce != cudaSuccess) {
		loom_free(e);
		return kn_cu_fail(ce, "cudaEventCreate");
	}
	*out = e;
	return LOOM_OK;
}

extern "C" void kn_cuda_event_destroy(kn_cuda_event *e)
{
	if (!e)
		return;
	cudaEventDestroy(e->ev);
	loom_free(e);
}

extern "C" loom_err kn_cuda_event_record(kn_cuda_event *e, void *stream)
{
	return kn_cu_check(cudaEventRecord(e->ev, (cudaStream_t)stream), "cudaEventRecord");
}

extern "C" loom_err kn_cuda_stream_wait(void *stream, kn_cuda_event *e)
{
	return kn_cu_check(cudaStreamWaitEvent((cudaStream_t)stream, e->ev, 0),
			   "cudaStreamWaitEvent");
}

extern "C" loom_err kn_cuda_event_query(kn_cuda_event *e, int *done)
{
	cudaError_t ce = cudaEventQuery(e->ev);
	if (ce == cudaErrorNotReady) {
		*done = 0;
		return LOOM_OK;
	}
	*done = ce == cudaSuccess;
	return kn_cu_check(ce, "cudaEventQuery");
}

extern "C" loom_err kn_cuda_event_sync(kn_cuda_event *e)
{
	return kn_cu_check(cudaEventSynchronize(e->ev), "cudaEventSynchronize");
}

extern "C" loom_err kn_cuda_event_elapsed(kn_cuda_event *start, kn_cuda_event *end, float *ms)
{
	return kn_cu_check(cudaEventElapsedTime(ms, start->ev, end->ev), "cudaEventElapsedTime");
}
