/* kernels/cuda/device.cu — device discovery and dtype names for the CUDA
 * backend (no kernels). */
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "kn_cuda_int.cuh"

extern "C" size_t kn_cuda_dtype_size(kn_cuda_dtype dt)
{
	switch (dt) {
	case KN_CUDA_F32:
		return 4;
	case KN_CUDA_BF16:
	case KN_CUDA_F16:
		return 2;
	default:
		return 0;
	}
}

extern "C" const char *kn_cuda_dtype_name(kn_cuda_dtype dt)
{
	switch (dt) {
	case KN_CUDA_F32:
		return "f32";
	case KN_CUDA_BF16:
		return "bf16";
	case KN_CUDA_F16:
		return "f16";
	default:
		return "unknown dtype";
	}
}

extern "C" loom_err kn_cuda_device_count(int *n)
{
	cudaError_t e = cudaGetDeviceCount(n);
	if (e != cudaSuccess) {
		*n = 0;
		loom_fail(LOOM_OK, "no CUDA device: %s (cuda error %d)", cudaGetErrorString(e), (int)e);
		cudaGetLastError(); /* clear the sticky-free error state */
	}
	return LOOM_OK;
}

extern "C" loom_err kn_cuda_device_info(int i, kn_cuda_device *out)
{
	cudaDeviceProp p;
	cudaError_t e = cudaGetDeviceProperties(&p, i);
	if (e != cudaSuccess)
		return loom_fail(LOOM_EINTERNAL, "cudaGetDeviceProperties(%d): %s (cuda error %d)", i,
				 cudaGetErrorString(e), (int)e);
	snprintf(out->name, sizeof out->name, "%s", p.name);
	out->sm_major = p.major;
	out->sm_minor = p.minor;
	out->mem_total = p.totalGlobalMem;
	out->sm_count = p.multiProcessorCount;
	out->smem_optin = p.sharedMemPerBlockOptin;
	return LOOM_OK;
}
