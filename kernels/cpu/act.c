/* kernels/cpu/act.c — SwiGLU's gate: silu(gate) * up. */
#include "../kernels.h"

#include <math.h>

void kn_silu_mul(float *gate, const float *up, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		float g = gate[i];
		gate[i] = g / (1.0f + expf(-g)) * up[i];
	}
}

void kn_add(float *y, const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		y[i] += x[i];
}
