/* kernels/cuda/device.cu — device discovery for the CUDA backend. */
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "kn_cuda.h"

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
	return LOOM_OK;
}
