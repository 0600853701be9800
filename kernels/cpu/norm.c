/* kernels/cpu/norm.c — RMSNorm over rows (LLaMA: no mean subtraction, no bias). */
#include "../kernels.h"

#include <math.h>

void kn_rmsnorm(float *y, const float *x, const float *w, int rows, int d, float eps)
{
	for (int r = 0; r < rows; r++) {
		const float *xr = x + (size_t)r * d;
		float *yr = y + (size_t)r * d;
		double ss = 0.0;
		for (int i = 0; i < d; i++)
			ss += (double)xr[i] * xr[i];
		float inv = (float)(1.0 / sqrt(ss / d + (double)eps));
		for (int i = 0; i < d; i++)
			yr[i] = xr[i] * inv * w[i];
	}
}
