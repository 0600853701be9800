/* kernels/cuda/rmsnorm.cu — RMSNorm over rows, fp32.
 *
 * CUDA kernels: one block per row; threads stride over d, sum of squares
 * reduced with warp shuffles then through shared memory.
 * Kernel launchers: kn_cuda_rmsnorm_f32 (checks the launch). */
#include <cuda_runtime.h>

#include "kn_cuda.h"

#define RMS_THREADS 256

__global__ void rmsnorm_f32_kernel(float *y, const float *x, const float *w, int d, float eps)
{
	__shared__ float warp_sums[RMS_THREADS / 32];
	const float *xr = x + (size_t)blockIdx.x * d;
	float *yr = y + (size_t)blockIdx.x * d;
	float ss = 0.f;
	for (int i = threadIdx.x; i < d; i += blockDim.x)
		ss += xr[i] * xr[i];
	for (int off = 16; off > 0; off >>= 1)
		ss += __shfl_down_sync(0xffffffffu, ss, off);
	if ((threadIdx.x & 31) == 0)
		warp_sums[threadIdx.x >> 5] = ss;
	__syncthreads();
	if (threadIdx.x < 32) {
		ss = threadIdx.x < (blockDim.x >> 5) ? warp_sums[threadIdx.x] : 0.f;
		for (int off = 16; off > 0; off >>= 1)
			ss += __shfl_down_sync(0xffffffffu, ss, off);
		if (threadIdx.x == 0)
			warp_sums[0] = ss;
	}
	__syncthreads();
	float inv = rsqrtf(warp_sums[0] / (float)d + eps);
	for (int i = threadIdx.x; i < d; i += blockDim.x)
		yr[i] = xr[i] * inv * w[i];
}

extern "C" loom_err kn_cuda_rmsnorm_f32(float *y, const float *x, const float *w, int T, int d,
					float eps, void *stream)
{
	if (T <= 0 || d <= 0)
		return loom_fail(LOOM_EINVAL, "rmsnorm: T=%d d=%d", T, d);
	rmsnorm_f32_kernel<<<T, RMS_THREADS, 0, (cudaStream_t)stream>>>(y, x, w, d, eps);
	cudaError_t e = cudaGetLastError();
	if (e != cudaSuccess)
		return loom_fail(LOOM_EINTERNAL, "rmsnorm launch: %s (cuda error %d)",
				 cudaGetErrorString(e), (int)e);
	return LOOM_OK;
}
