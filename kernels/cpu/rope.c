/*
 * kernels/cpu/rope.c — rotary position embedding, Hugging Face rotate-half.
 *
 * HF LlamaRotaryEmbedding: inv_freq[i] = theta^(-2i/h), i < h/2, or a scaled
 * schedule (common/model_config.h, loom_rope_freqs); the cos/sin of
 * pos*inv_freq (times YaRN's attention factor) are repeated over both halves
 * of the head, and
 * q' = q*cos + rotate_half(q)*sin with rotate_half(x) = [-x2, x1]. So x[i]
 * pairs with x[i+h/2] (not the interleaved pairs of Meta's original code).
 * Angles are computed in double: HF's float32 product pos*inv_freq loses
 * about 3e-5 rad at position 500; the double value is the exact one.
 */
#include "../kernels.h"

#include <assert.h>
#include <math.h>

void kn_rope_table(float *cos_t, float *sin_t, const int32_t *pos, int rows, int half,
		   const double *inv_freq, double mscale)
{
	for (int r = 0; r < rows; r++) {
		for (int i = 0; i < half; i++) {
			double a = (double)pos[r] * inv_freq[i];
			cos_t[(size_t)r * half + i] = (float)(cos(a) * mscale);
			sin_t[(size_t)r * half + i] = (float)(sin(a) * mscale);
		}
	}
}

void kn_rope_apply(float *x, int rows, int n_heads, int head_dim, const float *cos_t,
		   const float *sin_t)
{
	int half = head_dim / 2;
	for (int r = 0; r < rows; r++) {
		const float *c = cos_t + (size_t)r * half;
		const float *s = sin_t + (size_t)r * half;
		for (int h = 0; h < n_heads; h++) {
			float *xh = x + ((size_t)r * n_heads + h) * head_dim;
			for (int i = 0; i < half; i++) {
				float a = xh[i], b = xh[i + half];
				xh[i] = a * c[i] - b * s[i];
				xh[i + half] = b * c[i] + a * s[i];
			}
		}
	}
}
