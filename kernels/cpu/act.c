/* kernels/cpu/act.c — the MLP gates (SwiGLU, GeGLU) and element-wise ops. */
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

void kn_gelu_mul(float *gate, const float *up, size_t n, int tanh_approx)
{
	const float k0 = 0.7978845608028654f; /* sqrt(2/pi) */
	for (size_t i = 0; i < n; i++) {
		float g = gate[i];
		float y = tanh_approx ? 0.5f * g * (1.0f + tanhf(k0 * (g + 0.044715f * g * g * g)))
				      : 0.5f * g * (1.0f + erff(g * 0.7071067811865476f));
		gate[i] = y * up[i];
	}
}

void kn_add_bias(float *y, const float *b, int rows, int n)
{
	for (int r = 0; r < rows; r++) {
		float *yr = y + (size_t)r * n;
		for (int i = 0; i < n; i++)
			yr[i] += b[i];
	}
}

void kn_softcap(float *x, size_t n, float cap)
{
	for (size_t i = 0; i < n; i++)
		x[i] = cap * tanhf(x[i] / cap);
}

void kn_scale(float *x, size_t n, float s)
{
	for (size_t i = 0; i < n; i++)
		x[i] *= s;
}
