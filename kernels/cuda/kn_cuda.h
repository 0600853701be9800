/*
 * kernels/cuda/kn_cuda.h — the CUDA backend's C entry points (so far).
 *
 * Owns: device discovery and the first device ops. Built only when nvcc is
 * found (LOOM_CUDA). Every launcher takes a stream, checks the launch and
 * returns loom_err with the CUDA error text in loom_errmsg(); nothing here
 * exits. The full kn_ op table for the worker (SGMV, paged attention,
 * cuBLAS GEMMs) is issue 7; today only what is listed below exists.
 */
#ifndef KN_CUDA_H
#define KN_CUDA_H

#include <stddef.h>

#include "common/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_cuda_device {
	char name[256];
	int sm_major, sm_minor;
	size_t mem_total;
} kn_cuda_device;

/* Number of usable devices in *n. No driver / no device: *n = 0 and
 * LOOM_OK (the reason is kept in loom_errmsg()). */
loom_err kn_cuda_device_count(int *n);
loom_err kn_cuda_device_info(int i, kn_cuda_device *out);

/* y[t, :] = x[t, :] / rms(x[t, :]) * w, for T rows of d floats, on device
 * memory, launched on stream (a cudaStream_t, NULL = default). */
loom_err kn_cuda_rmsnorm_f32(float *y, const float *x, const float *w, int T, int d, float eps,
			     void *stream);

#ifdef __cplusplus
}
#endif

#endif
