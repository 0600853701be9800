/*
 * kernels/cpu/gemm.c — linear layers on OpenBLAS.
 *
 * y = x . W^T with W row-major [N, K] is cblas_sgemm(RowMajor, NoTrans,
 * Trans). For M == 1 (decode of a single sequence) cblas_sgemv over W
 * [N, K] NoTrans is 3-4x faster in OpenBLAS 0.3.21 (STACK.md).
 * The thread count is the program's choice; nothing global is set here.
 */
#include "../kernels.h"

#include <assert.h>
#include <cblas.h>

void kn_gemm(float *y, const float *x, const float *w, int M, int N, int K, int accumulate)
{
	assert(M >= 0 && N > 0 && K > 0);
	if (M == 0)
		return;
	float beta = accumulate ? 1.0f : 0.0f;
	if (M == 1) {
		cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, 1.0f, w, K, x, 1, beta, y, 1);
		return;
	}
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, beta, y,
		    N);
}
