/*
 * kernels/cpu/attn.c — causal GQA attention of one sequence over its KV
 * cache, contiguous (rows = positions, n_kv_heads*head_dim floats each) or
 * paged (rows of position p in block blocks[p / block_size]).
 *
 * One pass over the keys per query, online softmax (FlashAttention's
 * rescaling) by tiles of TILE absolute positions: for a tile, the scores of
 * every query head asked for (each key row is read once for all of them:
 * the KV heads of a row are contiguous, and a GQA group's query heads share
 * theirs), the tile's max per head, the running sums and outputs rescaled
 * when the max grows, then exp(score - max) and the weighted values (each
 * value row read once likewise). Scores are scaled by `scale` and optionally soft-capped
 * (cap * tanh(s / cap), Gemma 2). Work is O(n_q * p * n_heads * head_dim)
 * with no scratch and no division per key.
 *
 * Determinism: tiles are fixed by absolute position (tile i covers
 * positions TILE*i .. TILE*i+TILE-1, clipped to the query's keys lo..p), and
 * every sum has a fixed order (8 lanes, then a fixed tree, for dot
 * products; keys in position order within a tile). A query's result
 * depends only on its own row and the cache: a sequence gives the same
 * bits alone or in any batch, chunked or not, and the contiguous and paged
 * forms give the same bits for the same cache contents (whatever the block
 * size). The loops use 8-float GCC vectors compiled twice (target_clones:
 * AVX2 and the baseline), which changes no result: no sum is reassociated
 * and the C11 build does not contract multiply-adds.
 *
 * K/V held as BF16 (a pool made with --kv-dtype bf16: half the bytes each
 * step reads) go through the same loops (attn_tmpl.h, included per element
 * type), each value widened to float exactly: the bits of float32 K/V
 * holding the rounded values.
 */
#include "../kernels.h"
#include "vec8.h"

#include <assert.h>
#include <math.h>
#include <string.h>

enum { TILE = 16, MAXH = 64, VL = 8 };

KN_INLINE void scale_row(float *y, float c, int n)
{
	int i = 0;
	for (; i + VL <= n; i += VL)
		st(y + i, ld(y + i) * c);
	for (; i < n; i++)
		y[i] *= c;
}

#define ELEM float
#define LDV(p) ld(p)
#define LDS(x) (x)
#define AT(name) name
#include "attn_tmpl.h"
#undef ELEM
#undef LDV
#undef LDS
#undef AT

#define ELEM uint16_t
#define LDV(p) ldb(p)
#define LDS(x) bf16f(x)
#define AT(name) name##_bf16
#include "attn_tmpl.h"
#undef ELEM
#undef LDV
#undef LDS
#undef AT

/* k, v: float, or uint16_t holding BF16 when bf16. */
static void attend(float *out, const float *q, int n_q, int pos0, const void *k, const void *v,
		   int bf16, const int32_t *blocks, int block_size, size_t block_stride,
		   int n_heads, int n_kv_heads, int head_dim, float scale, int window,
		   float softcap, int h0, int h1)
{
	assert(n_kv_heads > 0 && n_heads % n_kv_heads == 0);
	int group = n_heads / n_kv_heads;
	size_t qdim = (size_t)n_heads * head_dim;
	size_t kvdim = (size_t)n_kv_heads * head_dim;
	for (int t = 0; t < n_q; t++) {
		int p = pos0 + t, lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
		for (int h = h0; h < h1; h += MAXH) {
			int G = h1 - h < MAXH ? h1 - h : MAXH;
			if (bf16)
				attend_heads_bf16(out + t * qdim, q + t * qdim, p, lo, k, v, blocks,
						  block_size, block_stride, kvdim, group, h, G,
						  head_dim, scale, softcap);
			else
				attend_heads(out + t * qdim, q + t * qdim, p, lo, k, v, blocks,
					     block_size, block_stride, kvdim, group, h, G, head_dim,
					     scale, softcap);
		}
	}
}

void kn_attention(float *out, const float *q, int n_q, int pos0, const float *k,
		  const float *v, int n_heads, int n_kv_heads, int head_dim, float scale,
		  int window, float softcap)
{
	attend(out, q, n_q, pos0, k, v, 0, NULL, 1, 0, n_heads, n_kv_heads, head_dim, scale,
	       window, softcap, 0, n_heads);
}

void kn_attention_paged(float *out, const float *q, int n_q, int pos0, const float *k,
			const float *v, const int32_t *blocks, int block_size,
			size_t block_stride, int n_heads, int n_kv_heads, int head_dim,
			float scale, int window, float softcap)
{
	assert(blocks && block_size > 0);
	attend(out, q, n_q, pos0, k, v, 0, blocks, block_size, block_stride, n_heads, n_kv_heads,
	       head_dim, scale, window, softcap, 0, n_heads);
}

void kn_attention_paged_heads(float *out, const float *q, int n_q, int pos0, const float *k,
			      const float *v, const int32_t *blocks, int block_size,
			      size_t block_stride, int n_heads, int n_kv_heads, int head_dim,
			      float scale, int window, float softcap, int h0, int h1)
{
	assert(blocks && block_size > 0 && 0 <= h0 && h0 <= h1 && h1 <= n_heads);
	attend(out, q, n_q, pos0, k, v, 0, blocks, block_size, block_stride, n_heads, n_kv_heads,
	       head_dim, scale, window, softcap, h0, h1);
}

void kn_attention_paged_heads_bf16(float *out, const float *q, int n_q, int pos0,
				   const uint16_t *k, const uint16_t *v, const int32_t *blocks,
				   int block_size, size_t block_stride, int n_heads,
				   int n_kv_heads, int head_dim, float scale, int window,
				   float softcap, int h0, int h1)
{
	assert(blocks && block_size > 0 && 0 <= h0 && h0 <= h1 && h1 <= n_heads);
	attend(out, q, n_q, pos0, k, v, 1, blocks, block_size, block_stride, n_heads, n_kv_heads,
	       head_dim, scale, window, softcap, h0, h1);
}
