/*
 * tests/gpu/emu/emu_rt.cc — the launcher of the CPU emulation (blocks in
 * turn, the block's threads as fibers switched at barriers) and the CUDA
 * runtime and cuBLAS entry points the backend calls, done on the host:
 * device memory is host memory, streams and events are no-ops (everything
 * completes in order), cublasGemmEx is a reference loop in fp32. One
 * "device": "CPU emulator", sm_90, 132 SMs, 227 KiB opt-in shared memory.
 * Launch checks as on a device: block <= 1024 threads, grid.y/z <= 65535,
 * dynamic shared memory over 48 KiB only after cudaFuncSetAttribute.
 */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <functional>
#include <set>
#include <stdio.h>
#include <stdlib.h>
#include "emu.h"

uint3 emu_tid, emu_bid;
dim3 emu_bdim, emu_gdim;
emu_block_state *emu_blk;
unsigned char *emu_dyn_smem;
static cudaError_t last_err = cudaSuccess;
static std::set<std::pair<const void *, int>> smem_attr;

void emu_note_launch_error(cudaError_t e) { if (last_err == cudaSuccess) last_err = e; }

struct fiber {
	ucontext_t uc;
	jmp_buf jb;
	std::vector<char> stack;
	int started = 0, done = 0;
	uint3 tid;
};
static jmp_buf sched_jb;
static ucontext_t sched_uc;
static fiber *cur;
static const std::function<void()> *cur_body;

void emu_yield(void)
{
	if (!_setjmp(cur->jb))
		_longjmp(sched_jb, 1);
	emu_tid = cur->tid;
}

void emu_bar_wait(emu_fiber_bar *b, int live)
{
	long g = b->gen;
	if (++b->arrived >= live) {
		b->arrived = 0;
		b->gen++;
		return;
	}
	while (b->gen == g)
		emu_yield();
}

/* a fiber leaving the kernel: it no longer counts for barriers; a barrier
 * that only waited for it completes */
static void leave(unsigned t)
{
	emu_blk->live--;
	if (emu_blk->bar.arrived > 0 && emu_blk->bar.arrived >= emu_blk->live) {
		emu_blk->bar.arrived = 0;
		emu_blk->bar.gen++;
	}
	emu_warp &w = emu_blk->warps[t / 32];
	w.live--;
	if (w.bar.arrived > 0 && w.bar.arrived >= w.live) {
		w.bar.arrived = 0;
		w.bar.gen++;
	}
}

static void fiber_main(void)
{
	fiber *f = cur;
	unsigned t = f->tid.x + f->tid.y * emu_bdim.x + f->tid.z * emu_bdim.x * emu_bdim.y;
	for (;;) { /* one block per round; the scheduler resumes us for the next */
		(*cur_body)();
		leave(t);
		cur->done = 1;
		emu_yield();
		f = cur;
	}
}

void emu_run(dim3 grid, dim3 block, size_t smem, const void *fn, const std::function<void()> &body)
{
	unsigned nt = block.x * block.y * block.z;
	if (nt == 0 || nt > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
	    grid.z > 65535 || block.z > 64) {
		fprintf(stderr, "emu: bad launch grid (%u,%u,%u) block (%u,%u,%u)\n", grid.x, grid.y, grid.z,
			block.x, block.y, block.z);
		emu_note_launch_error(cudaErrorInvalidConfiguration);
		return;
	}
	if (smem > 48 * 1024) {
		bool ok = false;
		for (auto &p : smem_attr)
			if (p.first == fn && (size_t)p.second >= smem)
				ok = true;
		if (!ok || smem > 232448) {
			fprintf(stderr, "emu: %zu bytes of dynamic shared memory without opt-in\n", smem);
			emu_note_launch_error(cudaErrorInvalidValue);
			return;
		}
	}
	std::vector<unsigned char> dyn(smem + 16);
	emu_dyn_smem = dyn.data();
	emu_block_state st;
	st.warps = std::vector<emu_warp>((nt + 31) / 32);
	emu_blk = &st;
	emu_bdim = block;
	emu_gdim = grid;
	cur_body = &body;
	std::vector<fiber> fs(nt);
	for (unsigned t = 0; t < nt; t++) {
		fs[t].stack.resize(256 * 1024);
		fs[t].tid.x = t % block.x;
		fs[t].tid.y = (t / block.x) % block.y;
		fs[t].tid.z = t / (block.x * block.y);
	}
	for (unsigned bz = 0; bz < grid.z; bz++)
		for (unsigned by = 0; by < grid.y; by++)
			for (unsigned bx = 0; bx < grid.x; bx++) {
				emu_bid.x = bx, emu_bid.y = by, emu_bid.z = bz;
				st.live = (int)nt;
				st.bar = emu_fiber_bar();
				for (size_t w = 0; w < st.warps.size(); w++) {
					st.warps[w].live = (int)std::min<unsigned>(32, nt - (unsigned)w * 32);
					st.warps[w].bar = emu_fiber_bar();
				}
				memset(dyn.data(), 0xFF, dyn.size());
				for (auto &f : fs)
					f.done = 0;
				unsigned left = nt;
				while (left) {
					for (unsigned t = 0; t < nt; t++) {
						fiber *f = &fs[t];
						if (f->done)
							continue;
						cur = f;
						emu_tid = f->tid;
						if (!_setjmp(sched_jb)) {
							if (!f->started) {
								f->started = 1;
								getcontext(&f->uc);
								f->uc.uc_stack.ss_sp = f->stack.data();
								f->uc.uc_stack.ss_size = f->stack.size();
								f->uc.uc_link = NULL;
								makecontext(&f->uc, fiber_main, 0);
								swapcontext(&sched_uc, &f->uc);
							} else {
								_longjmp(f->jb, 1);
							}
						}
						if (f->done)
							left--;
					}
				}
			}
}

extern "C" {
cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
cudaError_t cudaGetDeviceProperties_v2(cudaDeviceProp *p, int) {
	memset(p, 0, sizeof *p); strcpy(p->name, "CPU emulator"); p->major = 9; p->minor = 0;
	p->totalGlobalMem = 8ull << 30; p->multiProcessorCount = 132; p->sharedMemPerBlockOptin = 232448;
	return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) { return cudaGetDeviceProperties_v2(p, d); }
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDevice(int *d) { *d = 0; return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) {
	*v = a == cudaDevAttrMaxSharedMemoryPerBlockOptin ? 232448 : 0; return cudaSuccess; }
cudaError_t cudaFuncSetAttribute(const void *f, cudaFuncAttribute a, int v) {
	if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) smem_attr.insert({f, v});
	return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated error"; }
cudaError_t cudaGetLastError(void) { cudaError_t e = last_err; last_err = cudaSuccess; return e; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) { static int x[16]; static int i; *s = (cudaStream_t)&x[i++ % 16]; return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
cudaError_t cudaMalloc(void **p, size_t n) {
	if (n > (64ull << 30)) { *p = NULL; return cudaErrorMemoryAllocation; }
	*p = aligned_alloc(256, (n + 255) / 256 * 256); if (*p) memset(*p, 0xA5, n); return *p ? cudaSuccess : cudaErrorMemoryAllocation; }
cudaError_t cudaFree(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned) { *p = aligned_alloc(256, (n + 255) / 256 * 256); return cudaSuccess; }
cudaError_t cudaFreeHost(void *p) { free(p); return cudaSuccess; }
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, cudaMemcpyKind) { memmove(d, s, n); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t) { memmove(d, s, n); return cudaSuccess; }
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t) { memset(d, v, n); return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) { *e = (cudaEvent_t)malloc(8); return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t e) { free(e); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t, cudaEvent_t) { *ms = 1.f; return cudaSuccess; }

struct cublasContext { int x; };
cublasStatus_t cublasCreate_v2(cublasHandle_t *h) { *h = new cublasContext(); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasDestroy_v2(cublasHandle_t h) { delete h; return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream_v2(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace_v2(cublasHandle_t, void *, size_t) { return CUBLAS_STATUS_SUCCESS; }
static float ldv(const void *p, cudaDataType t, size_t i) {
	if (t == CUDA_R_16BF) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
	if (t == CUDA_R_16F) return __half2float(((const __half *)p)[i]);
	return ((const float *)p)[i]; }
static void stv(void *p, cudaDataType t, size_t i, float v) {
	if (t == CUDA_R_16BF) ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
	else if (t == CUDA_R_16F) ((__half *)p)[i] = __float2half_rn(v);
	else ((float *)p)[i] = v; }
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
	const void *alpha, const void *A, cudaDataType at, int lda, const void *B, cudaDataType bt, int ldb,
	const void *beta, void *C, cudaDataType ct, int ldc, cublasComputeType_t, cublasGemmAlgo_t) {
	float al = *(const float *)alpha, be = *(const float *)beta;
	for (int j = 0; j < n; j++) for (int i = 0; i < m; i++) {
		float acc = 0;
		for (int q = 0; q < k; q++) {
			float a = ta == CUBLAS_OP_N ? ldv(A, at, (size_t)q * lda + i) : ldv(A, at, (size_t)i * lda + q);
			float b = tb == CUBLAS_OP_N ? ldv(B, bt, (size_t)j * ldb + q) : ldv(B, bt, (size_t)q * ldb + j);
			acc += a * b; }
		float c = be != 0.f ? be * ldv(C, ct, (size_t)j * ldc + i) : 0.f;
		stv(C, ct, (size_t)j * ldc + i, al * acc + c); }
	return CUBLAS_STATUS_SUCCESS; }
}
