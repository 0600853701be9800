/* kernels/cuda/rmsnorm.cu — RMSNorm over rows.
 *
 * CUDA kernels: one block per row; threads stride over d, sum of squares
 * reduced with warp shuffles then through shared memory, in F32. Rows sit
 * on grid.x (up to 2^31 - 1).
 * Per-head norm (Qwen3's q_norm / k_norm): a warp per (row, head), lanes
 * over head_dim, reduced with shuffles; heads of a row on grid.y.
 * Kernel launchers: kn_cuda_rmsnorm_f32 and kn_cuda_rmsnorm (any of F32,
 * BF16, F16 for x, w and y; strided rows), kn_cuda_head_rmsnorm. */
#include "kn_cuda_int.cuh"

#define RMS_THREADS 256
#define HN_WARPS 4 /* heads per CTA of the per-head norm */

/* ---- CUDA kernels ---- */

/* Block-wide sum; every thread gets the result. red: RMS_THREADS/32 floats. */
__device__ __forceinline__ float block_sum(float v, float *red)
{
	for (int off = 16; off > 0; off >>= 1)
		v += __shfl_down_sync(0xffffffffu, v, off);
	if ((threadIdx.x & 31) == 0)
		red[threadIdx.x >> 5] = v;
	__syncthreads();
	if (threadIdx.x < 32) {
		v = threadIdx.x < (blockDim.x >> 5) ? red[threadIdx.x] : 0.f;
		for (int off = 16; off > 0; off >>= 1)
			v += __shfl_down_sync(0xffffffffu, v, off);
		if (threadIdx.x == 0)
			red[0] = v;
	}
	__syncthreads();
	return red[0];
}

__global__ void rmsnorm_f32_kernel(float *y, const float *x, const float *w, int d, float eps)
{
	__shared__ float red[RMS_THREADS / 32];
	const float *xr = x + (size_t)blockIdx.x * d;
	float *yr = y + (size_t)blockIdx.x * d;
	float ss = 0.f;
	for (int i = threadIdx.x; i < d; i += blockDim.x)
		ss += xr[i] * xr[i];
	ss = block_sum(ss, red);
	float inv = rsqrtf(ss / (float)d + eps);
	for (int i = threadIdx.x; i < d; i += blockDim.x)
		yr[i] = xr[i] * inv * w[i];
}

__global__ void rmsnorm_kernel(void *y, int ydt, int64_t ldy, const void *x, int xdt,
			       int64_t ldx, const void *w, int wdt, int d, float eps)
{
	__shared__ float red[RMS_THREADS / 32];
	int64_t xo = (int64_t)blockIdx.x * ldx, yo = (int64_t)blockIdx.x * ldy;
	float ss = 0.f;
	for (int i = threadIdx.x; i < d; i += blockDim.x) {
		float v = kn_ld(x, xdt, xo + i);
		ss += v * v;
	}
	ss = block_sum(ss, red);
	float inv = rsqrtf(ss / (float)d + eps);
	/* y may alias x: each element is read then written by the same thread */
	for (int i = threadIdx.x; i < d; i += blockDim.x)
		kn_st(y, ydt, yo + i, kn_ld(x, xdt, xo + i) * inv * kn_ld(w, wdt, i));
}

/* In place: x[row, h*hd + i] = x / rms(head h of row) * w[i]. */
__global__ void __launch_bounds__(HN_WARPS * 32)
head_rmsnorm_kernel(void *x, int dt, int64_t ldx, int n_heads, int hd, const void *w, int wdt,
		    float eps)
{
	int h = blockIdx.y * HN_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
	if (h >= n_heads) /* a whole warp leaves: no block-wide barrier below */
		return;
	int64_t o = (int64_t)blockIdx.x * ldx + (int64_t)h * hd;
	float ss = 0.f;
	for (int i = lane; i < hd; i += 32) {
		float v = kn_ld(x, dt, o + i);
		ss += v * v;
	}
	for (int off = 16; off > 0; off >>= 1)
		ss += __shfl_xor_sync(0xffffffffu, ss, off);
	float inv = rsqrtf(ss / (float)hd + eps);
	for (int i = lane; i < hd; i += 32)
		kn_st(x, dt, o + i, kn_ld(x, dt, o + i) * inv * kn_ld(w, wdt, i));
}

/* ---- kernel launchers ---- */

extern "C" loom_err kn_cuda_rmsnorm_f32(float *y, const float *x, const float *w, int T, int d,
					float eps, void *stream)
{
	if (T < 0 || d <= 0)
		return loom_fail(LOOM_EINVAL, "rmsnorm: T=%d d=%d", T, d);
	if (T == 0)
		return LOOM_OK;
	rmsnorm_f32_kernel<<<T, RMS_THREADS, 0, (cudaStream_t)stream>>>(y, x, w, d, eps);
	return kn_cu_launched("rmsnorm launch");
}

extern "C" loom_err kn_cuda_rmsnorm(void *y, kn_cuda_dtype ydt, int ldy, const void *x,
				    kn_cuda_dtype xdt, int ldx, const void *w, kn_cuda_dtype wdt,
				    int rows, int d, float eps, void *stream)
{
	if (rows < 0 || d <= 0 || ldx < d || ldy < d)
		return loom_fail(LOOM_EINVAL, "rmsnorm: rows=%d d=%d ldx=%d ldy=%d", rows, d, ldx,
				 ldy);
	if (!kn_dt_ok(ydt) || !kn_dt_ok(xdt) || !kn_dt_ok(wdt))
		return loom_fail(LOOM_EUNSUPPORTED, "rmsnorm: dtype not f32/bf16/f16");
	if (rows == 0)
		return LOOM_OK;
	rmsnorm_kernel<<<rows, RMS_THREADS, 0, (cudaStream_t)stream>>>(y, ydt, ldy, x, xdt, ldx, w,
								       wdt, d, eps);
	return kn_cu_launched("rmsnorm launch");
}

extern "C" loom_err kn_cuda_head_rmsnorm(void *x, kn_cuda_dtype dt, int ldx, int rows,
					 int n_heads, int head_dim, const void *w,
					 kn_cuda_dtype wdt, float eps, void *stream)
{
	if (rows < 0 || n_heads < 1 || head_dim < 1 ||
	    (int64_t)ldx < (int64_t)n_heads * head_dim || !w)
		return loom_fail(LOOM_EINVAL, "head rmsnorm: rows=%d n_heads=%d head_dim=%d ldx=%d",
				 rows, n_heads, head_dim, ldx);
	if (!kn_dt_ok(dt) || !kn_dt_ok(wdt))
		return loom_fail(LOOM_EUNSUPPORTED, "head rmsnorm: dtype not f32/bf16/f16");
	unsigned gy = (unsigned)((n_heads + HN_WARPS - 1) / HN_WARPS);
	if (gy > 65535)
		return loom_fail(LOOM_ERANGE, "head rmsnorm: %d heads", n_heads);
	if (rows == 0)
		return LOOM_OK;
	head_rmsnorm_kernel<<<dim3((unsigned)rows, gy), HN_WARPS * 32, 0, (cudaStream_t)stream>>>(
		x, dt, ldx, n_heads, head_dim, w, wdt, eps);
	return kn_cu_launched("head rmsnorm launch");
}
