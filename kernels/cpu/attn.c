/*
 * kernels/cpu/attn.c — causal GQA attention of one sequence over its KV
 * cache, contiguous (rows = positions, n_kv_heads*head_dim floats each) or
 * paged (rows of position p in block blocks[p / block_size]).
 *
 * One pass per (query token, head): scores over keys lo..p (lo = 0, or
 * p - window + 1 with a sliding window), optionally soft-capped
 * (cap * tanh(s / cap), Gemma 2), max-subtracted softmax, weighted sum of
 * values. Work is O(n_q * p * n_heads * head_dim);
 * the result of a query depends only on its own row and the cache, so a
 * sequence gives the same output alone or inside any batch.
 */
#include "../kernels.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* Key/value row j of a cache: contiguous (blocks NULL) or paged. */
static inline const float *row(const float *base, const int32_t *blocks, int block_size,
			       size_t block_stride, size_t kvdim, int j)
{
	if (!blocks)
		return base + (size_t)j * kvdim;
	return base + (size_t)blocks[j / block_size] * block_stride +
	       (size_t)(j % block_size) * kvdim;
}

/* q . k over head_dim in 8 fixed lanes, then a fixed tree: the compiler
 * vectorises it without reassociating anything. */
static inline float dot8(const float *a, const float *b, int n)
{
	float l[8] = {0};
	int i = 0;
	for (; i + 8 <= n; i += 8)
		for (int j = 0; j < 8; j++)
			l[j] += a[i + j] * b[i + j];
	float s = ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
	for (; i < n; i++)
		s += a[i] * b[i];
	return s;
}

static void attend(float *out, const float *q, int n_q, int pos0, const float *k, const float *v,
		   const int32_t *blocks, int block_size, size_t block_stride, int n_heads,
		   int n_kv_heads, int head_dim, float scale, int window, float softcap,
		   int h0, int h1, float *scores)
{
	assert(n_kv_heads > 0 && n_heads % n_kv_heads == 0);
	int group = n_heads / n_kv_heads;
	size_t qdim = (size_t)n_heads * head_dim;
	size_t kvdim = (size_t)n_kv_heads * head_dim;
	for (int t = 0; t < n_q; t++) {
		int p = pos0 + t, lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
		int n_keys = p + 1 - lo;
		for (int h = h0; h < h1; h++) {
			const float *qh = q + t * qdim + (size_t)h * head_dim;
			size_t koff = (size_t)(h / group) * head_dim;
			float *oh = out + t * qdim + (size_t)h * head_dim;
			float mx = -INFINITY;
			for (int j = 0; j < n_keys; j++) {
				const float *kj =
					row(k, blocks, block_size, block_stride, kvdim, lo + j) + koff;
				float dot = dot8(qh, kj, head_dim) * scale;
				if (softcap > 0.0f)
					dot = softcap * tanhf(dot / softcap);
				scores[j] = dot;
				if (dot > mx)
					mx = dot;
			}
			float sum = 0.0f;
			for (int j = 0; j < n_keys; j++) {
				scores[j] = expf(scores[j] - mx);
				sum += scores[j];
			}
			float inv = 1.0f / sum;
			memset(oh, 0, sizeof(float) * (size_t)head_dim);
			for (int j = 0; j < n_keys; j++) {
				const float *vj =
					row(v, blocks, block_size, block_stride, kvdim, lo + j) + koff;
				float w = scores[j] * inv;
				for (int i = 0; i < head_dim; i++)
					oh[i] += w * vj[i];
			}
		}
	}
}

void kn_attention(float *out, const float *q, int n_q, int pos0, const float *k,
		  const float *v, int n_heads, int n_kv_heads, int head_dim, float scale,
		  int window, float softcap, float *scores)
{
	attend(out, q, n_q, pos0, k, v, NULL, 1, 0, n_heads, n_kv_heads, head_dim, scale, window,
	       softcap, 0, n_heads, scores);
}

void kn_attention_paged(float *out, const float *q, int n_q, int pos0, const float *k,
			const float *v, const int32_t *blocks, int block_size,
			size_t block_stride, int n_heads, int n_kv_heads, int head_dim,
			float scale, int window, float softcap, float *scores)
{
	assert(blocks && block_size > 0);
	/* The same arithmetic, in the same order, as kn_attention: only the
	 * address of key/value row j changes. */
	attend(out, q, n_q, pos0, k, v, blocks, block_size, block_stride, n_heads, n_kv_heads,
	       head_dim, scale, window, softcap, 0, n_heads, scores);
}

void kn_attention_paged_heads(float *out, const float *q, int n_q, int pos0, const float *k,
			      const float *v, const int32_t *blocks, int block_size,
			      size_t block_stride, int n_heads, int n_kv_heads, int head_dim,
			      float scale, int window, float softcap, int h0, int h1, float *scores)
{
	assert(blocks && block_size > 0 && 0 <= h0 && h0 <= h1 && h1 <= n_heads);
	attend(out, q, n_q, pos0, k, v, blocks, block_size, block_stride, n_heads, n_kv_heads,
	       head_dim, scale, window, softcap, h0, h1, scores);
}
