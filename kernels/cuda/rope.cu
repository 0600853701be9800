/* kernels/cuda/rope.cu — rotary position embedding, HF rotate-half.
 *
 * CUDA kernels: one thread per (row, i < head_dim/2) computes the angle
 * pos * inv_freq[i] and its cos/sin in double, times mscale (as the CPU's
 * kn_rope_table does, then rounded to float), and rotates the pair
 * (x[i], x[i + hd/2]) of every head of that row. Rows on grid.x. The
 * inverse frequencies come from the host (loom_rope_freqs: the model's RoPE
 * schedule), one table for every row or one per row (a schedule that
 * depends on the position: dynamic NTK).
 * Kernel launchers: kn_cuda_rope. */
#include "kn_cuda_int.cuh"

#define ROPE_THREADS 128

/* ---- CUDA kernels ---- */

__global__ void rope_kernel(void *x, int dt, int64_t ldx, int n_heads, int head_dim,
			    const int32_t *pos, const double *inv_freq, int64_t inv_ld,
			    double mscale)
{
	int half = head_dim / 2;
	int64_t row = blockIdx.x;
	double p = (double)pos[row];
	const double *fr = inv_freq + row * inv_ld;
	for (int i = threadIdx.x; i < half; i += blockDim.x) {
		double s, c;
		sincos(p * fr[i], &s, &c);
		float cf = (float)(c * mscale), sf = (float)(s * mscale);
		for (int h = 0; h < n_heads; h++) {
			int64_t o = row * ldx + (int64_t)h * head_dim + i;
			float a = kn_ld(x, dt, o), b = kn_ld(x, dt, o + half);
			kn_st(x, dt, o, a * cf - b * sf);
			kn_st(x, dt, o + half, b * cf + a * sf);
		}
	}
}

/* ---- kernel launchers ---- */

extern "C" loom_err kn_cuda_rope(void *x, kn_cuda_dtype dt, int ldx, int rows, int n_heads,
				 int head_dim, const int32_t *pos, const double *inv_freq,
				 int inv_ld, double mscale, void *stream)
{
	if (rows < 0 || n_heads < 1 || head_dim < 2 || (head_dim & 1) ||
	    (int64_t)ldx < (int64_t)n_heads * head_dim || !inv_freq ||
	    (inv_ld != 0 && inv_ld < head_dim / 2) || !(mscale > 0.0))
		return loom_fail(LOOM_EINVAL, "rope: rows=%d n_heads=%d head_dim=%d ldx=%d "
				 "inv_ld=%d mscale=%g", rows, n_heads, head_dim, ldx, inv_ld,
				 mscale);
	if (!kn_dt_ok(dt))
		return loom_fail(LOOM_EUNSUPPORTED, "rope: dtype %d", (int)dt);
	if (rows == 0)
		return LOOM_OK;
	int threads = head_dim / 2 < ROPE_THREADS ? ((head_dim / 2 + 31) / 32) * 32 : ROPE_THREADS;
	rope_kernel<<<rows, threads, 0, (cudaStream_t)stream>>>(x, dt, ldx, n_heads, head_dim, pos,
								inv_freq, inv_ld, mscale);
	return kn_cu_launched("rope launch");
}
