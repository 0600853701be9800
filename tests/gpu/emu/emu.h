/*
 * tests/gpu/emu/emu.h — a CPU emulation of the CUDA execution model, enough
 * for the kernels/cuda sources: included (by cu2cpp) right after the CUDA headers
 * when a kernel file is compiled as host C++. Blocks run one after another;
 * the threads of a block are fibers on one OS thread, switched at barriers
 * (__syncthreads, __syncwarp, the warp shuffles), so shared memory, barriers
 * and shuffles behave as on a device while everything runs in order.
 * Not emulated: timing, the memory model, independent warp scheduling,
 * alignment faults, the runtime's own rules beyond launch limits.
 */
#ifndef EMU_H
#define EMU_H
#include <algorithm>
#include <cmath>
#include <cstring>
#include <setjmp.h>
#include <ucontext.h>
#include <tuple>
#include <functional>
#include <vector>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#undef __align__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

using std::isfinite;
using std::max;
using std::min;

/* Fibers: the threads of a block are user-level contexts on one OS thread,
 * switched at barriers; a barrier completes when every live thread of its
 * scope (block or warp) has arrived. */
struct emu_fiber_bar {
	int arrived = 0;
	long gen = 0;
};
struct emu_warp {
	emu_fiber_bar bar;
	int live = 32;
	unsigned long long buf[32];
};
struct emu_block_state {
	emu_fiber_bar bar;
	int live = 0;
	std::vector<emu_warp> warps;
};

extern uint3 emu_tid, emu_bid;
extern dim3 emu_bdim, emu_gdim;
extern emu_block_state *emu_blk;
extern unsigned char *emu_dyn_smem;
void emu_note_launch_error(cudaError_t e);
void emu_yield(void);
void emu_bar_wait(emu_fiber_bar *b, int live);

#define threadIdx emu_tid
#define blockIdx emu_bid
#define blockDim emu_bdim
#define gridDim emu_gdim

static inline void __syncthreads() { emu_bar_wait(&emu_blk->bar, emu_blk->live); }
static inline void __syncwarp(unsigned = 0xffffffffu)
{
	unsigned t = emu_tid.x + emu_tid.y * emu_bdim.x;
	emu_warp &w = emu_blk->warps[t / 32];
	emu_bar_wait(&w.bar, w.live);
}

template <typename T> static inline T emu_shfl(T v, int src, bool in_range)
{
	unsigned t = emu_tid.x + emu_tid.y * emu_bdim.x;
	emu_warp &w = emu_blk->warps[t / 32];
	unsigned long long bits = 0;
	memcpy(&bits, &v, sizeof v);
	w.buf[t % 32] = bits;
	emu_bar_wait(&w.bar, w.live);
	T r = v;
	if (in_range)
		memcpy(&r, &w.buf[src], sizeof r);
	emu_bar_wait(&w.bar, w.live);
	return r;
}
template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int off)
{
	int lane = (emu_tid.x + emu_tid.y * emu_bdim.x) % 32;
	return emu_shfl(v, lane ^ off, (lane ^ off) < 32);
}
template <typename T> static inline T __shfl_down_sync(unsigned, T v, unsigned off)
{
	int lane = (emu_tid.x + emu_tid.y * emu_bdim.x) % 32;
	return emu_shfl(v, lane + (int)off, lane + (int)off < 32);
}

/* one OS thread: atomics are plain read-modify-writes */
template <typename T> static inline T atomicAdd(T *p, T v)
{
	T o = *p;
	*p = o + v;
	return o;
}
static inline unsigned __float_as_uint(float f)
{
	unsigned u;
	memcpy(&u, &f, 4);
	return u;
}
static inline float emu_expf(float x) { return expf(x); }
#define __expf emu_expf
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

void emu_run(dim3 grid, dim3 block, size_t smem, const void *fn,
	     const std::function<void()> &body);

template <typename... KA, typename... A>
static void emu_launch(void (*k)(KA...), dim3 grid, dim3 block, size_t smem, cudaStream_t,
		       A &&...args)
{
	std::tuple<KA...> t(std::forward<A>(args)...);
	emu_run(grid, block, smem, (const void *)k, [&] { std::apply(k, t); });
}
#endif
