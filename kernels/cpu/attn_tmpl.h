/*
 * kernels/cpu/attn_tmpl.h — kernels/cpu/attn.c's per-query loops, included
 * once per K/V element type: ELEM (float, or uint16_t holding BF16), LDV(p)
 * (8 values from p as a v8), LDS(x) (one value as a float), AT(name) (the
 * name with the variant's suffix). A BF16 value widens to float exactly and
 * every sum keeps its order, so BF16 K/V give the bits of float32 K/V
 * holding the same (rounded) values. Only attn.c includes it.
 */
/* a . b over n values: 8 lanes, then a fixed tree, then the tail. */
KN_INLINE float AT(dot)(const float *a, const ELEM *b, int n)
{
	v8 s = {0};
	int i = 0;
	for (; i + VL <= n; i += VL)
		s += ld(a + i) * LDV(b + i);
	float r = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
	for (; i < n; i++)
		r += a[i] * LDS(b[i]);
	return r;
}

/* y[i] += w * x[i] for i < n. */
KN_INLINE void AT(axpy)(float *y, float w, const ELEM *x, int n)
{
	int i = 0;
	for (; i + VL <= n; i += VL)
		st(y + i, ld(y + i) + LDV(x + i) * w);
	for (; i < n; i++)
		y[i] += w * LDS(x[i]);
}

/* Where the key/value rows of positions j0 .. j1 are: rows[j - j0]. */
KN_INLINE void AT(tile_rows)(const ELEM **rows, const ELEM *base, const int32_t *blocks,
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
KN_CLONES static void AT(attend_heads)(float *out, const float *q, int p, int lo,
				       const ELEM *k, const ELEM *v, const int32_t *blocks,
				       int block_size,
				   size_t block_stride, size_t kvdim, int group, int hs, int G,
				   int head_dim, float scale, float softcap)
{
	float m[MAXH], l[MAXH], s[MAXH][TILE];
	const ELEM *kr[TILE], *vr[TILE];
	size_t off = (size_t)(hs / group) * head_dim;

	for (int g = 0; g < G; g++) {
		m[g] = -INFINITY;
		l[g] = 0.0f;
		memset(out + (size_t)(hs + g) * head_dim, 0, sizeof(float) * (size_t)head_dim);
	}
	for (int tb = lo / TILE; tb <= p / TILE; tb++) {
		int j0 = tb * TILE > lo ? tb * TILE : lo;
		int j1 = tb * TILE + TILE - 1 < p ? tb * TILE + TILE - 1 : p, n = j1 - j0 + 1;
		AT(tile_rows)(kr, k, blocks, block_size, block_stride, kvdim, off, j0, j1);
		AT(tile_rows)(vr, v, blocks, block_size, block_stride, kvdim, off, j0, j1);
		for (int j = 0; j < n; j++)
			for (int g = 0; g < G; g++) {
				size_t kv = (size_t)((hs + g) / group - hs / group) * head_dim;
				float d = AT(dot)(q + (size_t)(hs + g) * head_dim, kr[j] + kv, head_dim) *
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
				AT(axpy)(out + (size_t)(hs + g) * head_dim, s[g][j], vr[j] + kv, head_dim);
			}
	}
	for (int g = 0; g < G; g++)
		scale_row(out + (size_t)(hs + g) * head_dim, 1.0f / l[g], head_dim);
}

