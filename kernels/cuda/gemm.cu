/* kernels/cuda/gemm.cu — the base-model GEMMs through cuBLAS.
 *
 * Row-major y[M,N] = x[M,K] . w[N,K]^T is, in cuBLAS's column-major terms,
 * y^T (N x M, ld ldy) = w^T-as-stored (op T on a K x N column-major matrix
 * with ld ldw) times x^T (K x M, ld ldx): cublasGemmEx(T, N, m=N, n=M, k=K).
 * The handle, its stream binding and its workspace come from the context. */
#include "kn_cuda_int.cuh"

static const char *blas_text(cublasStatus_t s)
{
	switch (s) {
	case CUBLAS_STATUS_NOT_INITIALIZED:
		return "not initialized";
	case CUBLAS_STATUS_ALLOC_FAILED:
		return "alloc failed";
	case CUBLAS_STATUS_INVALID_VALUE:
		return "invalid value";
	case CUBLAS_STATUS_ARCH_MISMATCH:
		return "arch mismatch";
	case CUBLAS_STATUS_EXECUTION_FAILED:
		return "execution failed";
	case CUBLAS_STATUS_INTERNAL_ERROR:
		return "internal error";
	case CUBLAS_STATUS_NOT_SUPPORTED:
		return "not supported";
	default:
		return "error";
	}
}

static cudaDataType_t cuda_type(kn_cuda_dtype dt)
{
	switch (dt) {
	case KN_CUDA_BF16:
		return CUDA_R_16BF;
	case KN_CUDA_F16:
		return CUDA_R_16F;
	default:
		return CUDA_R_32F;
	}
}

extern "C" loom_err kn_cuda_gemm(kn_cuda_ctx *c, void *y, kn_cuda_dtype ydt, int ldy,
				 const void *x, kn_cuda_dtype xdt, int ldx, const void *w,
				 kn_cuda_dtype wdt, int ldw, int M, int N, int K, float alpha,
				 float beta, void *stream)
{
	if (!c || !y || !x || !w)
		return loom_fail(LOOM_EINVAL, "gemm: NULL context or matrix");
	if (M < 0 || N < 0 || K < 0)
		return loom_fail(LOOM_EINVAL, "gemm: negative size M=%d N=%d K=%d", M, N, K);
	if (ldy < N || ldx < K || ldw < K || ldy < 1 || ldx < 1 || ldw < 1)
		return loom_fail(LOOM_EINVAL, "gemm: leading dimensions ldy=%d ldx=%d ldw=%d too "
				 "small for M=%d N=%d K=%d", ldy, ldx, ldw, M, N, K);
	if (xdt != wdt || !kn_dt_ok(xdt) || !(ydt == xdt || ydt == KN_CUDA_F32))
		return loom_fail(LOOM_EUNSUPPORTED, "gemm: dtypes x=%s w=%s y=%s (x and w must "
				 "match; y is the same or f32)", kn_cuda_dtype_name(xdt),
				 kn_cuda_dtype_name(wdt), kn_cuda_dtype_name(ydt));
	if (M == 0 || N == 0)
		return LOOM_OK;
	cublasStatus_t s = cublasSetStream(c->blas, (cudaStream_t)stream);
	if (s != CUBLAS_STATUS_SUCCESS)
		return loom_fail(LOOM_EINTERNAL, "gemm: cublasSetStream: %s (cublas status %d)",
				 blas_text(s), (int)s);
	/* cublasSetStream resets the workspace to the default pool: give ours
	 * back so cuBLAS never allocates while serving. */
	s = cublasSetWorkspace(c->blas, c->blas_ws, c->blas_ws_bytes);
	if (s != CUBLAS_STATUS_SUCCESS)
		return loom_fail(LOOM_EINTERNAL, "gemm: cublasSetWorkspace: %s (cublas status %d)",
				 blas_text(s), (int)s);
	s = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, w, cuda_type(wdt),
			 ldw, x, cuda_type(xdt), ldx, &beta, y, cuda_type(ydt), ldy,
			 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
	if (s != CUBLAS_STATUS_SUCCESS)
		return loom_fail(LOOM_EINTERNAL, "gemm: cublasGemmEx M=%d N=%d K=%d %s: %s (cublas "
				 "status %d)", M, N, K, kn_cuda_dtype_name(xdt), blas_text(s), (int)s);
	return kn_cu_launched("gemm");
}
