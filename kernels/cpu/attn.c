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
 */
#include "../kernels.h"
#include "vec8.h"

#include <assert.h>
#include <math.h>
#include <string.h>

enum { TILE = 16, MAXH = 64, VL = 8 };

/* a . b over n floats: 8 lanes, then a fixed tree, then the tail. */
KN_INLINE float dot(const float *a, const float *b, int n)
{
	v8 s = {0};
	int i = 0;
	for (; i + VL <= n; i += VL)
		s += ld(a + i) * ld(b + i);
	float r = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
	for (; i < n; i++)
		r += a[i] * b[i];
	return r;
}

/* y[i] += w * x[i] for i < n. */
KN_INLINE void axpy(float *y, float w, const float *x, int n)
{
	int i = 0;
	for (; i + VL <= n; i += VL)
		st(y + i, ld(y + i) + ld(x + i) * w);
	for (; i < n; i++)
		y[i] += w * x[i];
}

KN_INLINE void scale_row(float *y, float c, int n)
{
	int i = 0;
	for (; i + VL <= n; i += VL)
		st(y + i, ld(y + i) * c);
	for (; i < n; i++)
		y[i] *= c;
}

/* Where the key/value rows of positions j0 .. j1 are: rows[j - j0]. */
KN_INLINE void tile_rows(const float **rows, const float *base, const int32_t *blocks,
			 int block_size, size_t block_stride, size_t kvdim, size_t off, int j0,
			 int j1)
{
	if (!blocks) {
		for (int j = j0; j <= j1; j++)
			rows[j - j0] = base + (size_t)j * kvdim + off;
		return;
	}
	int b = j0 / block_size, slot = j0 % block_size;
	for (int j = j0; j <= j1; j++) {
		rows[j - j0] = base + (size_t)blocks[b] * block_stride + (size_t)slot * kvdim + off;
		if (++slot == block_size) {
			slot = 0;
			b++;
		}
	}
}

/* Query heads hs .. hs+G-1 (G <= MAXH; any KV groups) of the query at
 * position p (q, out: its rows), keys lo .. p: each key and value row is
 * read once for all G heads (the span of their KV heads is contiguous). */
KN_CLONES static void attend_heads(float *out, const float *q, int p, int lo, const float *k,
				   const float *v, const int32_t *blocks, int block_size,
				   size_t block_stride, size_t kvdim, int group, int hs, int G,
				   int head_dim, float scale, float softcap)
{
	float m[MAXH], l[MAXH], s[MAXH][TILE];
	const float *kr[TILE], *vr[TILE];
	size_t off = (size_t)(hs / group) * head_dim;

	for (int g = 0; g < G; g++) {
		m[g] = -INFINITY;
		l[g] = 0.0f;
		memset(out + (size_t)(hs + g) * head_dim, 0, sizeof(float) * (size_t)head_dim);
	}
	for (int tb = lo / TILE; tb <= p / TILE; tb++) {
		int j0 = tb * TILE > lo ? tb * TILE : lo;
		int j1 = tb * TILE + TILE - 1 < p ? tb * TILE + TILE - 1 : p, n = j1 - j0 + 1;
		tile_rows(kr, k, blocks, block_size, block_stride, kvdim, off, j0, j1);
		tile_rows(vr, v, blocks, block_size, block_stride, kvdim, off, j0, j1);
		for (int j = 0; j < n; j++)
			for (int g = 0; g < G; g++) {
				size_t kv = (size_t)((hs + g) / group - hs / group) * head_dim;
				float d = dot(q + (size_t)(hs + g) * head_dim, kr[j] + kv, head_dim) *
					  scale;
				s[g][j] = softcap > 0.0f ? softcap * tanhf(d / softcap) : d;
			}
		for (int g = 0; g < G; g++) {
			float mx = -INFINITY, sum = 0.0f;
			for (int j = 0; j < n; j++)
				mx = s[g][j] > mx ? s[g][j] : mx;
			/* a larger max rescales what was summed so far */
			if (mx > m[g]) {
				float c = m[g] == -INFINITY ? 0.0f : expf(m[g] - mx);
				m[g] = mx;
				if (c != 1.0f) {
					l[g] *= c;
					scale_row(out + (size_t)(hs + g) * head_dim, c, head_dim);
				}
			}
			for (int j = 0; j < n; j++) {
				s[g][j] = expf(s[g][j] - m[g]);
				sum += s[g][j];
			}
			l[g] += sum;
		}
		for (int j = 0; j < n; j++)
			for (int g = 0; g < G; g++) {
				size_t kv = (size_t)((hs + g) / group - hs / group) * head_dim;
				axpy(out + (size_t)(hs + g) * head_dim, s[g][j], vr[j] + kv, head_dim);
			}
	}
	for (int g = 0; g < G; g++)
		scale_row(out + (size_t)(hs + g) * head_dim, 1.0f / l[g], head_dim);
}

static void attend(float *out, const float *q, int n_q, int pos0, const float *k, const float *v,
		   const int32_t *blocks, int block_size, size_t block_stride, int n_heads,
		   int n_kv_heads, int head_dim, float scale, int window, float softcap,
		   int h0, int h1)
{
	assert(n_kv_heads > 0 && n_heads % n_kv_heads == 0);
	int group = n_heads / n_kv_heads;
	size_t qdim = (size_t)n_heads * head_dim;
	size_t kvdim = (size_t)n_kv_heads * head_dim;
	for (int t = 0; t < n_q; t++) {
		int p = pos0 + t, lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
		for (int h = h0; h < h1; h += MAXH) {
			int G = h1 - h < MAXH ? h1 - h : MAXH;
			attend_heads(out + t * qdim, q + t * qdim, p, lo, k, v, blocks, block_size,
				     block_stride, kvdim, group, h, G, head_dim, scale, softcap);
		}
	}
}

void kn_attention(float *out, const float *q, int n_q, int pos0, const float *k,
		  const float *v, int n_heads, int n_kv_heads, int head_dim, float scale,
		  int window, float softcap)
{
	attend(out, q, n_q, pos0, k, v, NULL, 1, 0, n_heads, n_kv_heads, head_dim, scale, window,
	       softcap, 0, n_heads);
}

void kn_attention_paged(float *out, const float *q, int n_q, int pos0, const float *k,
			const float *v, const int32_t *blocks, int block_size,
			size_t block_stride, int n_heads, int n_kv_heads, int head_dim,
			float scale, int window, float softcap)
{
	assert(blocks && block_size > 0);
	attend(out, q, n_q, pos0, k, v, blocks, block_size, block_stride, n_heads, n_kv_heads,
	       head_dim, scale, window, softcap, 0, n_heads);
}

void kn_attention_paged_heads(float *out, const float *q, int n_q, int pos0, const float *k,
			      const float *v, const int32_t *blocks, int block_size,
			      size_t block_stride, int n_heads, int n_kv_heads, int head_dim,
			      float scale, int window, float softcap, int h0, int h1)
{
	assert(blocks && block_size > 0 && 0 <= h0 && h0 <= h1 && h1 <= n_heads);
	attend(out, q, n_q, pos0, k, v, blocks, block_size, block_stride, n_heads, n_kv_heads,
	       head_dim, scale, window, softcap, h0, h1);
}
