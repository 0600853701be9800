/* kernels/cuda/act.cu — the MLP gates (SiLU*mul, GELU*mul), bias add,
 * residual add, scale, soft-cap, casts, embedding gather.
 *
 * CUDA kernels: memory-bound element loops with runtime dtypes (a uniform
 * switch per element), grid-stride over 64-bit indices; the row ops put
 * rows on grid.x and columns on threads.
 * Kernel launchers: kn_cuda_silu_mul, kn_cuda_gelu_mul, kn_cuda_add_bias,
 * kn_cuda_add, kn_cuda_scale, kn_cuda_softcap, kn_cuda_cast, kn_cuda_embed. */
#include "kn_cuda_int.cuh"

#define ACT_THREADS 256
#define ACT_MAX_BLOCKS 65535

/* ---- CUDA kernels ---- */

__global__ void silu_mul_kernel(void *out, int odt, int64_t ldo, const void *gate,
				const void *up, int idt, int64_t ldi, int n)
{
	int64_t ro = (int64_t)blockIdx.x * ldo, ri = (int64_t)blockIdx.x * ldi;
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		float g = kn_ld(gate, idt, ri + i), u = kn_ld(up, idt, ri + i);
		kn_st(out, odt, ro + i, g / (1.f + expf(-g)) * u);
	}
}

/* GeGLU: gelu(g) * u, tanh approximation (gelu_pytorch_tanh) or exact erf. */
__global__ void gelu_mul_kernel(void *out, int odt, int64_t ldo, const void *gate,
				const void *up, int idt, int64_t ldi, int n, int tanh_approx)
{
	const float k0 = 0.7978845608028654f; /* sqrt(2/pi) */
	int64_t ro = (int64_t)blockIdx.x * ldo, ri = (int64_t)blockIdx.x * ldi;
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		float g = kn_ld(gate, idt, ri + i), u = kn_ld(up, idt, ri + i);
		float y = tanh_approx ? 0.5f * g * (1.f + tanhf(k0 * (g + 0.044715f * g * g * g)))
				      : 0.5f * g * (1.f + erff(g * 0.7071067811865476f));
		kn_st(out, odt, ro + i, y * u);
	}
}

__global__ void add_bias_kernel(void *y, int ydt, int64_t ldy, const void *b, int bdt, int n)
{
	int64_t ro = (int64_t)blockIdx.x * ldy;
	for (int i = threadIdx.x; i < n; i += blockDim.x)
		kn_st(y, ydt, ro + i, kn_ld(y, ydt, ro + i) + kn_ld(b, bdt, i));
}

/* x = x * s (softcap 0), or x = cap * tanh(x / cap) (softcap 1, s = cap). */
__global__ void scale_kernel(void *x, int dt, int64_t n, float s, int softcap)
{
	int64_t stride = (int64_t)gridDim.x * blockDim.x;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
		float v = kn_ld(x, dt, i);
		kn_st(x, dt, i, softcap ? s * tanhf(v / s) : v * s);
	}
}

__global__ void add_kernel(void *y, int ydt, const void *x, int xdt, int64_t n)
{
	int64_t stride = (int64_t)gridDim.x * blockDim.x;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
		kn_st(y, ydt, i, kn_ld(y, ydt, i) + kn_ld(x, xdt, i));
}

__global__ void cast_kernel(void *dst, int ddt, const void *src, int sdt, int64_t n)
{
	int64_t stride = (int64_t)gridDim.x * blockDim.x;
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
		kn_st(dst, ddt, i, kn_ld(src, sdt, i));
}

__global__ void embed_kernel(void *out, int odt, int64_t ldo, const void *table, int tdt,
			     int vocab, const int32_t *ids, int d)
{
	int64_t ro = (int64_t)blockIdx.x * ldo;
	int32_t id = ids[blockIdx.x];
	bool ok = id >= 0 && id < vocab;
	int64_t rt = ok ? (int64_t)id * d : 0;
	for (int i = threadIdx.x; i < d; i += blockDim.x)
		kn_st(out, odt, ro + i, ok ? kn_ld(table, tdt, rt + i) : 0.f);
}

/* ---- kernel launchers ---- */

static int flat_blocks(size_t n)
{
	size_t b = (n + ACT_THREADS - 1) / ACT_THREADS;
	return b > ACT_MAX_BLOCKS ? ACT_MAX_BLOCKS : (int)b;
}

static int row_threads(int n)
{
	return n < ACT_THREADS ? ((n + 31) / 32) * 32 : ACT_THREADS;
}

extern "C" loom_err kn_cuda_silu_mul(void *out, kn_cuda_dtype odt, int ldo, const void *gate,
				     const void *up, kn_cuda_dtype idt, int ldi, int rows, int n,
				     void *stream)
{
	if (rows < 0 || n < 1 || ldo < n || ldi < n)
		return loom_fail(LOOM_EINVAL, "silu_mul: rows=%d n=%d ldo=%d ldi=%d", rows, n, ldo,
				 ldi);
	if (!kn_dt_ok(odt) || !kn_dt_ok(idt))
		return loom_fail(LOOM_EUNSUPPORTED, "silu_mul: dtype not f32/bf16/f16");
	if (rows == 0)
		return LOOM_OK;
	silu_mul_kernel<<<rows, row_threads(n), 0, (cudaStream_t)stream>>>(out, odt, ldo, gate, up,
									  idt, ldi, n);
	return kn_cu_launched("silu_mul launch");
}

extern "C" loom_err kn_cuda_gelu_mul(void *out, kn_cuda_dtype odt, int ldo, const void *gate,
				     const void *up, kn_cuda_dtype idt, int ldi, int rows, int n,
				     int tanh_approx, void *stream)
{
	if (rows < 0 || n < 1 || ldo < n || ldi < n)
		return loom_fail(LOOM_EINVAL, "gelu_mul: rows=%d n=%d ldo=%d ldi=%d", rows, n, ldo,
				 ldi);
	if (!kn_dt_ok(odt) || !kn_dt_ok(idt))
		return loom_fail(LOOM_EUNSUPPORTED, "gelu_mul: dtype not f32/bf16/f16");
	if (rows == 0)
		return LOOM_OK;
	gelu_mul_kernel<<<rows, row_threads(n), 0, (cudaStream_t)stream>>>(
		out, odt, ldo, gate, up, idt, ldi, n, tanh_approx != 0);
	return kn_cu_launched("gelu_mul launch");
}

extern "C" loom_err kn_cuda_add_bias(void *y, kn_cuda_dtype ydt, int ldy, const void *b,
				     kn_cuda_dtype bdt, int rows, int n, void *stream)
{
	if (rows < 0 || n < 1 || ldy < n || !b)
		return loom_fail(LOOM_EINVAL, "add_bias: rows=%d n=%d ldy=%d", rows, n, ldy);
	if (!kn_dt_ok(ydt) || !kn_dt_ok(bdt))
		return loom_fail(LOOM_EUNSUPPORTED, "add_bias: dtype not f32/bf16/f16");
	if (rows == 0)
		return LOOM_OK;
	add_bias_kernel<<<rows, row_threads(n), 0, (cudaStream_t)stream>>>(y, ydt, ldy, b, bdt, n);
	return kn_cu_launched("add_bias launch");
}

static loom_err scale_launch(const char *op, void *x, kn_cuda_dtype dt, size_t n, float s,
			     int softcap, void *stream)
{
	if (!kn_dt_ok(dt))
		return loom_fail(LOOM_EUNSUPPORTED, "%s: dtype not f32/bf16/f16", op);
	if (softcap && !(s > 0.f))
		return loom_fail(LOOM_EINVAL, "%s: cap %g (must be > 0)", op, (double)s);
	if (n == 0)
		return LOOM_OK;
	scale_kernel<<<flat_blocks(n), ACT_THREADS, 0, (cudaStream_t)stream>>>(x, dt, (int64_t)n, s,
									     softcap);
	return kn_cu_launched(softcap ? "softcap launch" : "scale launch");
}

extern "C" loom_err kn_cuda_scale(void *x, kn_cuda_dtype dt, size_t n, float s, void *stream)
{
	return scale_launch("scale", x, dt, n, s, 0, stream);
}

extern "C" loom_err kn_cuda_softcap(void *x, kn_cuda_dtype dt, size_t n, float cap, void *stream)
{
	return scale_launch("softcap", x, dt, n, cap, 1, stream);
}

extern "C" loom_err kn_cuda_add(void *y, kn_cuda_dtype ydt, const void *x, kn_cuda_dtype xdt,
				size_t n, void *stream)
{
	if (!kn_dt_ok(ydt) || !kn_dt_ok(xdt))
		return loom_fail(LOOM_EUNSUPPORTED, "add: dtype not f32/bf16/f16");
	if (n == 0)
		return LOOM_OK;
	add_kernel<<<flat_blocks(n), ACT_THREADS, 0, (cudaStream_t)stream>>>(y, ydt, x, xdt,
									   (int64_t)n);
	return kn_cu_launched("add launch");
}

extern "C" loom_err kn_cuda_cast(void *dst, kn_cuda_dtype ddt, const void *src,
				 kn_cuda_dtype sdt, size_t n, void *stream)
{
	if (!kn_dt_ok(ddt) || !kn_dt_ok(sdt))
		return loom_fail(LOOM_EUNSUPPORTED, "cast: dtype not f32/bf16/f16");
	if (n == 0)
		return LOOM_OK;
	cast_kernel<<<flat_blocks(n), ACT_THREADS, 0, (cudaStream_t)stream>>>(dst, ddt, src, sdt,
									    (int64_t)n);
	return kn_cu_launched("cast launch");
}

extern "C" loom_err kn_cuda_embed(void *out, kn_cuda_dtype odt, int ldo, const void *table,
				  kn_cuda_dtype tdt, int vocab, const int32_t *ids, int n, int d,
				  void *stream)
{
	if (n < 0 || d < 1 || ldo < d || vocab < 1)
		return loom_fail(LOOM_EINVAL, "embed: n=%d d=%d ldo=%d vocab=%d", n, d, ldo, vocab);
	if (!kn_dt_ok(odt) || !kn_dt_ok(tdt))
		return loom_fail(LOOM_EUNSUPPORTED, "embed: dtype not f32/bf16/f16");
	if (n == 0)
		return LOOM_OK;
	embed_kernel<<<n, row_threads(d), 0, (cudaStream_t)stream>>>(out, odt, ldo, table, tdt,
								    vocab, ids, d);
	return kn_cu_launched("embed launch");
}
