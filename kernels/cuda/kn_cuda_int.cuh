/*
 * kernels/cuda/kn_cuda_int.cuh — helpers shared by the .cu files of the
 * CUDA backend only (never included from C): CUDA error translation, the
 * launch check, dtype load/store, and the context struct.
 */
#ifndef KN_CUDA_INT_CUH
#define KN_CUDA_INT_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kn_cuda.h"

struct kn_cuda_ctx {
	int device;
	int sm_count;
	size_t smem_optin;
	cudaStream_t stream;      /* compute */
	cudaStream_t copy_stream; /* adapter / model loads */
	cublasHandle_t blas;
	void *blas_ws;            /* cuBLAS workspace, one cudaMalloc at create */
	size_t blas_ws_bytes;
};

/* Translates a CUDA error into loom_err with "what: text (cuda error N)". */
static inline loom_err kn_cu_fail(cudaError_t e, const char *what)
{
	loom_err rc = e == cudaErrorMemoryAllocation ? LOOM_ENOMEM : LOOM_EINTERNAL;
	return loom_fail(rc, "%s: %s (cuda error %d)", what, cudaGetErrorString(e), (int)e);
}

static inline loom_err kn_cu_check(cudaError_t e, const char *what)
{
	return e == cudaSuccess ? LOOM_OK : kn_cu_fail(e, what);
}

/* After a <<<>>> launch: the launch's own error (bad configuration, too
 * much shared memory) or a sticky error of an earlier kernel. */
static inline loom_err kn_cu_launched(const char *what)
{
	return kn_cu_check(cudaGetLastError(), what);
}

static inline bool kn_dt_ok(kn_cuda_dtype dt)
{
	return dt == KN_CUDA_F32 || dt == KN_CUDA_BF16 || dt == KN_CUDA_F16;
}

static inline bool kn_dt_half(kn_cuda_dtype dt)
{
	return dt == KN_CUDA_BF16 || dt == KN_CUDA_F16;
}

__host__ __device__ static inline bool kn_aligned16(const void *p)
{
	return ((uintptr_t)p & 15u) == 0;
}

/* ---- device-side element access ---- */

__device__ __forceinline__ float kn_to_f(float v) { return v; }
__device__ __forceinline__ float kn_to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float kn_to_f(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T kn_from_f(float v);
template <> __device__ __forceinline__ float kn_from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 kn_from_f<__nv_bfloat16>(float v)
{
	return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half kn_from_f<__half>(float v)
{
	return __float2half_rn(v);
}

/* Runtime-typed access for the small memory-bound ops (the switch is
 * uniform across a launch). */
__device__ __forceinline__ float kn_ld(const void *p, int dt, int64_t i)
{
	switch (dt) {
	case KN_CUDA_BF16:
		return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
	case KN_CUDA_F16:
		return __half2float(((const __half *)p)[i]);
	default:
		return ((const float *)p)[i];
	}
}

__device__ __forceinline__ void kn_st(void *p, int dt, int64_t i, float v)
{
	switch (dt) {
	case KN_CUDA_BF16:
		((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
		break;
	case KN_CUDA_F16:
		((__half *)p)[i] = __float2half_rn(v);
		break;
	default:
		((float *)p)[i] = v;
		break;
	}
}

/* 8 half-precision values from 16 aligned bytes, as floats. */
template <typename T> __device__ __forceinline__ void kn_unpack8(uint4 u, float f[8]);
template <> __device__ __forceinline__ void kn_unpack8<__nv_bfloat16>(uint4 u, float f[8])
{
	const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __bfloat1622float2(h[i]);
		f[2 * i] = t.x;
		f[2 * i + 1] = t.y;
	}
}
template <> __device__ __forceinline__ void kn_unpack8<__half>(uint4 u, float f[8])
{
	const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 t = __half22float2(h[i]);
		f[2 * i] = t.x;
		f[2 * i + 1] = t.y;
	}
}

#endif
