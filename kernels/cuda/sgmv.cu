/* kernels/cuda/sgmv.cu — segmented LoRA shrink and expand (SGMV, v1 on
 * CUDA cores; KERNELS.md sections 1-4).
 *
 * Work unit: a chunk = up to KN_CUDA_LORA_CHUNK consecutive rows of one
 * adapted segment (chunks are built on the host, base-model segments have
 * none). Ranks are read per (slot, layer) from the device descriptor table,
 * so one launch mixes any ranks with no padding.
 *
 * Shrink: grid.x = chunks x ksplit, 256 threads. The CTA stages its rows'
 * slice of x (<= SH_KC columns) in shared memory, then warp w computes A
 * rows w, w+8, ...: lanes stream the A row with 16-byte loads, every row of
 * the chunk reuses the loaded A values, fp32 accumulators are reduced with
 * xor shuffles, and partial[ks][row][j] is written once. A one-row segment
 * reads its A exactly once. No atomics.
 * Expand: grid = (chunk, n-tile of 1024 output columns), 128 threads of 8
 * consecutive columns. The CTA sums the ksplit partials of its rows into
 * fp32 shared memory (fixed order: deterministic), then for k < r loads
 * Bt[k][n..n+8] once and updates every row's accumulators; the epilogue
 * y = round(y + scale * acc) is the one read-modify-write of each element.
 * Vector paths need 16-byte aligned bases and widths divisible by 8; the
 * scalar paths handle the rest (stories260k's FFN of 172, odd widths).
 * Rows are templated per CTA (1, 2, 4, 8) so decode pays for one row. */
#include <string.h>

#include "kn_cuda_int.cuh"

#define CHUNK KN_CUDA_LORA_CHUNK
#define SH_THREADS 256
#define SH_WARPS (SH_THREADS / 32)
#define SH_KC 2048 /* columns of x per shrink CTA: CHUNK*SH_KC*2 = 32 KiB */
#define EX_THREADS 128
#define EX_COLS 8
#define META_HDR 8

/* Kernel-side copy of a group (passed by value). */
struct lora_args {
	const kn_cuda_lora_desc *table;
	int n_slots, n_layers, layer;
	int d_in;
	int n_slices;
	int n_out[KN_CUDA_LORA_SLICES];
	int n_total;
};

struct chunk_info {
	const kn_cuda_lora_desc *d;
	int row0, len;
};

/* ---- CUDA kernels ---- */

/* Resolves CTA chunk c to its descriptor and rows; false when the chunk is
 * beyond the device-side count, belongs to the base model, or is unusable. */
__device__ __forceinline__ bool chunk_lookup(const int32_t *meta, int c, const lora_args &g,
					     int64_t v_rows, chunk_info *ci)
{
	int n_seg = meta[1], n_chunks = meta[2];
	if (c >= n_chunks)
		return false;
	const int32_t *seg_slot = meta + META_HDR;
	const int32_t *chunk_seg = seg_slot + n_seg;
	const int32_t *chunk_row0 = chunk_seg + n_chunks;
	const int32_t *chunk_len = chunk_row0 + n_chunks;
	int seg = chunk_seg[c];
	if (seg < 0 || seg >= n_seg)
		return false;
	int slot = seg_slot[seg];
	if (slot < 0 || slot >= g.n_slots)
		return false;
	ci->row0 = chunk_row0[c];
	ci->len = chunk_len[c];
	if (ci->row0 < 0 || ci->len < 1 || ci->len > CHUNK || ci->row0 + (int64_t)ci->len > v_rows)
		return false;
	ci->d = g.table + ((int64_t)slot * g.n_layers + g.layer);
	return true;
}

/* Total rank of the group's slices, -1 if any is negative. */
__device__ __forceinline__ int total_rank(const kn_cuda_lora_desc *d, int n_slices)
{
	int r = 0;
	for (int s = 0; s < n_slices; s++) {
		if (d->rank[s] < 0)
			return -1;
		r += d->rank[s];
	}
	return r;
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
	for (int off = 16; off > 0; off >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, off);
	return v;
}

/* Warp-per-A-row dot products of CT staged rows of x against A rows j. */
template <typename T, int CT>
__device__ __forceinline__ void shrink_rows(float *v, int64_t v_rows, int r_stride, int ks,
					    const T *xs, const T *a, int64_t d_in, int kw,
					    int k0, int R, int row0, int len, bool vec)
{
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	for (int j = warp; j < R; j += SH_WARPS) {
		const T *arow = a + (int64_t)j * d_in + k0;
		float acc[CT];
#pragma unroll
		for (int m = 0; m < CT; m++)
			acc[m] = 0.f;
		if (vec) {
			for (int k = lane * 8; k < kw; k += 32 * 8) {
				float af[8];
				kn_unpack8<T>(*reinterpret_cast<const uint4 *>(arow + k), af);
#pragma unroll
				for (int m = 0; m < CT; m++) {
					float xf[8];
					kn_unpack8<T>(*reinterpret_cast<const uint4 *>(xs + m * SH_KC + k),
						      xf);
#pragma unroll
					for (int i = 0; i < 8; i++)
						acc[m] = fmaf(af[i], xf[i], acc[m]);
				}
			}
		} else {
			for (int k = lane; k < kw; k += 32) {
				float af = kn_to_f(arow[k]);
#pragma unroll
				for (int m = 0; m < CT; m++)
					acc[m] = fmaf(af, kn_to_f(xs[m * SH_KC + k]), acc[m]);
			}
		}
#pragma unroll
		for (int m = 0; m < CT; m++) {
			float s = warp_sum(acc[m]);
			if (lane == m && m < len)
				v[((int64_t)ks * v_rows + row0 + m) * r_stride + j] = s;
		}
	}
}

template <typename T>
__global__ void __launch_bounds__(SH_THREADS)
lora_shrink_kernel(float *v, int64_t v_rows, int r_stride, int ksplit, int kc, const T *x,
		   int64_t ldx, bool x_vec, lora_args g, const int32_t *meta)
{
	__shared__ __align__(16) T xs[CHUNK * SH_KC];
	int c = blockIdx.x / ksplit, ks = blockIdx.x % ksplit;
	chunk_info ci;
	if (!chunk_lookup(meta, c, g, v_rows, &ci))
		return;
	const T *a = (const T *)ci.d->a;
	int R = total_rank(ci.d, g.n_slices);
	if (!a || R <= 0 || R > r_stride)
		return;
	int k0 = ks * kc;
	int k1 = min(g.d_in, k0 + kc);
	int kw = max(0, k1 - k0);

	/* stage x[row0 .. row0+len)[k0 .. k1) */
	int cpad = ci.len <= 1 ? 1 : ci.len <= 2 ? 2 : ci.len <= 4 ? 4 : 8;
	if (x_vec) {
		int n8 = kw / 8;
		for (int i = threadIdx.x; i < ci.len * n8; i += SH_THREADS) {
			int m = i / n8, k = (i % n8) * 8;
			*reinterpret_cast<uint4 *>(xs + m * SH_KC + k) = *reinterpret_cast<const uint4 *>(
				x + (int64_t)(ci.row0 + m) * ldx + k0 + k);
		}
	} else {
		for (int i = threadIdx.x; i < ci.len * kw; i += SH_THREADS) {
			int m = i / kw, k = i % kw;
			xs[m * SH_KC + k] = x[(int64_t)(ci.row0 + m) * ldx + k0 + k];
		}
	}
	/* rows len .. cpad-1 are computed but never stored: keep them finite */
	for (int i = threadIdx.x; i < (cpad - ci.len) * kw; i += SH_THREADS)
		xs[(ci.len + i / kw) * SH_KC + i % kw] = kn_from_f<T>(0.f);
	__syncthreads();

	/* xs rows are 16-byte aligned at every multiple of 8 columns whatever
	 * the staging path, so only A decides */
	bool vec = kn_aligned16(a) && (g.d_in % 8) == 0;
	if (cpad == 1)
		shrink_rows<T, 1>(v, v_rows, r_stride, ks, xs, a, g.d_in, kw, k0, R, ci.row0, ci.len,
				  vec);
	else if (cpad == 2)
		shrink_rows<T, 2>(v, v_rows, r_stride, ks, xs, a, g.d_in, kw, k0, R, ci.row0, ci.len,
				  vec);
	else if (cpad == 4)
		shrink_rows<T, 4>(v, v_rows, r_stride, ks, xs, a, g.d_in, kw, k0, R, ci.row0, ci.len,
				  vec);
	else
		shrink_rows<T, 8>(v, v_rows, r_stride, ks, xs, a, g.d_in, kw, k0, R, ci.row0, ci.len,
				  vec);
}

/* Slice of fused output column n: index (-1 if none), its first column,
 * its width and its first v column (ranks before it). Unrolled over the
 * constant slice count so the by-value args stay in registers. */
__device__ __forceinline__ int find_slice(const lora_args &g, const kn_cuda_lora_desc *d, int n,
					  int *off, int *width, int *vcol)
{
	int o = 0, vc = 0;
#pragma unroll
	for (int s = 0; s < KN_CUDA_LORA_SLICES; s++) {
		if (s < g.n_slices) {
			if (n < o + g.n_out[s]) {
				*off = o;
				*width = g.n_out[s];
				*vcol = vc;
				return s;
			}
			o += g.n_out[s];
			vc += d->rank[s];
		}
	}
	return -1;
}

template <typename T, typename Y, int CT>
__device__ __forceinline__ void expand_cols(Y *y, int64_t ldy, const float *vs,
					    int r_stride, const lora_args &g,
					    const kn_cuda_lora_desc *d, int n, int row0, int len)
{
	int off, no, vcol;
	int s = find_slice(g, d, n, &off, &no, &vcol);
	if (s < 0)
		return;
	int r = d->rank[s];
	const T *bt = (const T *)d->bt[s];
	float scale = d->scale[s];
	bool vec = (no % 8) == 0 && ((n - off) % 8) == 0 && n - off + EX_COLS <= no &&
		   kn_aligned16(bt);
	if (vec) {
		if (r <= 0 || !bt)
			return;
		float acc[CT][EX_COLS];
#pragma unroll
		for (int m = 0; m < CT; m++)
#pragma unroll
			for (int i = 0; i < EX_COLS; i++)
				acc[m][i] = 0.f;
		const T *b = bt + (n - off);
		for (int k = 0; k < r; k++) {
			float bf[8];
			kn_unpack8<T>(*reinterpret_cast<const uint4 *>(b + (int64_t)k * no), bf);
#pragma unroll
			for (int m = 0; m < CT; m++) {
				float vv = vs[m * r_stride + vcol + k];
#pragma unroll
				for (int i = 0; i < EX_COLS; i++)
					acc[m][i] = fmaf(vv, bf[i], acc[m][i]);
			}
		}
#pragma unroll
		for (int m = 0; m < CT; m++) {
			if (m < len) {
				Y *yp = y + (int64_t)(row0 + m) * ldy + n;
#pragma unroll
				for (int i = 0; i < EX_COLS; i++)
					yp[i] = kn_from_f<Y>(kn_to_f(yp[i]) + scale * acc[m][i]);
			}
		}
		return;
	}
	/* scalar: each of the 8 columns on its own (they may span slices) */
	for (int i = 0; i < EX_COLS && n + i < g.n_total; i++) {
		int col = n + i;
		int no2;
		int s2 = find_slice(g, d, col, &off, &no2, &vcol);
		if (s2 < 0)
			return;
		int r2 = d->rank[s2];
		const T *bt2 = (const T *)d->bt[s2];
		if (r2 <= 0 || !bt2)
			continue;
		float acc[CT];
#pragma unroll
		for (int m = 0; m < CT; m++)
			acc[m] = 0.f;
		for (int k = 0; k < r2; k++) {
			float b = kn_to_f(bt2[(int64_t)k * no2 + (col - off)]);
#pragma unroll
			for (int m = 0; m < CT; m++)
				acc[m] = fmaf(vs[m * r_stride + vcol + k], b, acc[m]);
		}
		float sc = d->scale[s2];
#pragma unroll
		for (int m = 0; m < CT; m++) {
			if (m < len) {
				Y *yp = y + (int64_t)(row0 + m) * ldy + col;
				*yp = kn_from_f<Y>(kn_to_f(*yp) + sc * acc[m]);
			}
		}
	}
}

template <typename T, typename Y>
__global__ void __launch_bounds__(EX_THREADS)
lora_expand_kernel(Y *y, int64_t ldy, const float *v, int64_t v_rows, int r_stride,
		   int ksplit, lora_args g, const int32_t *meta)
{
	__shared__ float vs[CHUNK * KN_CUDA_LORA_MAX_RSTRIDE];
	chunk_info ci;
	if (!chunk_lookup(meta, blockIdx.x, g, v_rows, &ci))
		return;
	const kn_cuda_lora_desc *d = ci.d;
	int R = total_rank(d, g.n_slices);
	if (R <= 0 || R > r_stride)
		return;
	/* vs[m][j] = sum over splits, in split order */
	for (int i = threadIdx.x; i < ci.len * R; i += EX_THREADS) {
		int m = i / R, j = i % R;
		float s = 0.f;
		for (int ks = 0; ks < ksplit; ks++)
			s += v[((int64_t)ks * v_rows + ci.row0 + m) * r_stride + j];
		vs[m * r_stride + j] = s;
	}
	int cpad = ci.len <= 1 ? 1 : ci.len <= 2 ? 2 : ci.len <= 4 ? 4 : 8;
	for (int i = threadIdx.x; i < (cpad - ci.len) * R; i += EX_THREADS)
		vs[(ci.len + i / R) * r_stride + i % R] = 0.f;
	__syncthreads();
	int n = (blockIdx.y * EX_THREADS + threadIdx.x) * EX_COLS;
	if (n >= g.n_total)
		return;
	if (cpad == 1)
		expand_cols<T, Y, 1>(y, ldy, vs, r_stride, g, d, n, ci.row0, ci.len);
	else if (cpad == 2)
		expand_cols<T, Y, 2>(y, ldy, vs, r_stride, g, d, n, ci.row0, ci.len);
	else if (cpad == 4)
		expand_cols<T, Y, 4>(y, ldy, vs, r_stride, g, d, n, ci.row0, ci.len);
	else
		expand_cols<T, Y, 8>(y, ldy, vs, r_stride, g, d, n, ci.row0, ci.len);
}

/* ---- kernel launchers ---- */

static int max_chunks(int max_rows, int max_segments)
{
	return max_segments + max_rows / CHUNK;
}

extern "C" size_t kn_cuda_lora_meta_bytes(int max_rows, int max_segments)
{
	if (max_rows < 0)
		max_rows = 0;
	if (max_segments < 0)
		max_segments = 0;
	size_t c = (size_t)max_chunks(max_rows, max_segments);
	return (META_HDR + (size_t)max_segments + 3 * c) * sizeof(int32_t);
}

extern "C" loom_err kn_cuda_lora_meta_pack(void *host, size_t cap, const int32_t *seg_start,
					   const int32_t *seg_slot, int n_segments, int *n_chunks)
{
	*n_chunks = 0;
	if (n_segments < 0 || (n_segments > 0 && (!seg_start || !seg_slot)))
		return loom_fail(LOOM_EINVAL, "lora meta: %d segments without arrays", n_segments);
	int S = n_segments;
	if (S > 0 && seg_start[0] < 0)
		return loom_fail(LOOM_EINVAL, "lora meta: seg_start[0] = %d", seg_start[0]);
	int64_t C = 0;
	for (int i = 0; i < S; i++) {
		if (seg_start[i + 1] < seg_start[i])
			return loom_fail(LOOM_EINVAL, "lora meta: seg_start[%d] = %d after %d (must "
					 "not decrease)", i + 1, seg_start[i + 1], seg_start[i]);
		if (seg_slot[i] < -1)
			return loom_fail(LOOM_EINVAL, "lora meta: seg_slot[%d] = %d", i, seg_slot[i]);
		if (seg_slot[i] >= 0)
			C += (seg_start[i + 1] - seg_start[i] + CHUNK - 1) / CHUNK;
	}
	int n_rows = S > 0 ? seg_start[S] : 0;
	size_t need = (META_HDR + (size_t)S + 3 * (size_t)C) * sizeof(int32_t);
	if (need > cap)
		return loom_fail(LOOM_ERANGE, "lora meta: %d segments, %lld chunks need %zu bytes, "
				 "buffer has %zu", S, (long long)C, need, cap);
	int32_t *w = (int32_t *)host;
	memset(w, 0, META_HDR * sizeof(int32_t));
	w[0] = n_rows;
	w[1] = S;
	w[2] = (int32_t)C;
	int32_t *slot = w + META_HDR, *cseg = slot + S, *crow = cseg + C, *clen = crow + C;
	int64_t c = 0;
	for (int i = 0; i < S; i++) {
		slot[i] = seg_slot[i];
		if (seg_slot[i] < 0)
			continue;
		for (int r = seg_start[i]; r < seg_start[i + 1]; r += CHUNK) {
			cseg[c] = i;
			crow[c] = r;
			clen[c] = seg_start[i + 1] - r < CHUNK ? seg_start[i + 1] - r : CHUNK;
			c++;
		}
	}
	*n_chunks = (int)C;
	return LOOM_OK;
}

extern "C" int kn_cuda_lora_ksplit(int d_in, int n_chunks, int sm_count)
{
	if (d_in < 1)
		return 1;
	int ks = (d_in + SH_KC - 1) / SH_KC;
	if (n_chunks < 1)
		n_chunks = 1;
	if (sm_count < 1)
		sm_count = 1;
	int64_t target = 2 * (int64_t)sm_count;
	while (ks < KN_CUDA_LORA_MAX_KSPLIT && (int64_t)n_chunks * ks < target &&
	       (d_in + ks) / (ks + 1) >= 1024)
		ks++;
	return ks < KN_CUDA_LORA_MAX_KSPLIT ? ks : KN_CUDA_LORA_MAX_KSPLIT;
}

extern "C" size_t kn_cuda_lora_v_bytes(int rows, int r_stride, int ksplit)
{
	if (rows < 0 || r_stride < 0 || ksplit < 0)
		return 0;
	return (size_t)ksplit * (size_t)rows * (size_t)r_stride * sizeof(float);
}

static loom_err check_group(const char *op, const kn_cuda_lora_group *g, int layer, int r_stride,
			    int ksplit, int v_rows, int grid_chunks, lora_args *a)
{
	if (!g || !g->table)
		return loom_fail(LOOM_EINVAL, "%s: no descriptor table", op);
	if (g->n_slices < 1 || g->n_slices > KN_CUDA_LORA_SLICES)
		return loom_fail(LOOM_EINVAL, "%s: n_slices = %d (1..%d)", op, g->n_slices,
				 KN_CUDA_LORA_SLICES);
	if (g->n_slots < 1 || g->n_layers < 1 || layer < 0 || layer >= g->n_layers)
		return loom_fail(LOOM_EINVAL, "%s: layer %d of %d, %d slots", op, layer, g->n_layers,
				 g->n_slots);
	if (g->d_in < 1 || g->d_in > KN_CUDA_LORA_MAX_DIN)
		return loom_fail(LOOM_EUNSUPPORTED, "%s: d_in = %d (1..%d)", op, g->d_in,
				 KN_CUDA_LORA_MAX_DIN);
	if (!kn_dt_half(g->dt))
		return loom_fail(LOOM_EUNSUPPORTED, "%s: dtype %s (bf16 or f16)", op,
				 kn_cuda_dtype_name(g->dt));
	if (r_stride < 1 || r_stride > KN_CUDA_LORA_MAX_RSTRIDE)
		return loom_fail(LOOM_EUNSUPPORTED, "%s: r_stride = %d (1..%d)", op, r_stride,
				 KN_CUDA_LORA_MAX_RSTRIDE);
	if (ksplit < 1 || ksplit > KN_CUDA_LORA_MAX_KSPLIT)
		return loom_fail(LOOM_EINVAL, "%s: ksplit = %d (1..%d)", op, ksplit,
				 KN_CUDA_LORA_MAX_KSPLIT);
	if (v_rows < 0 || grid_chunks < 0 || (int64_t)grid_chunks * ksplit > INT32_MAX)
		return loom_fail(LOOM_EINVAL, "%s: v_rows = %d grid_chunks = %d", op, v_rows,
				 grid_chunks);
	int64_t tot = 0;
	for (int s = 0; s < g->n_slices; s++) {
		if (g->n_out[s] < 0)
			return loom_fail(LOOM_EINVAL, "%s: n_out[%d] = %d", op, s, g->n_out[s]);
		tot += g->n_out[s];
	}
	if (tot > INT32_MAX - EX_COLS * EX_THREADS)
		return loom_fail(LOOM_ERANGE, "%s: output width %lld", op, (long long)tot);
	memset(a, 0, sizeof *a);
	a->table = g->table;
	a->n_slots = g->n_slots;
	a->n_layers = g->n_layers;
	a->layer = layer;
	a->d_in = g->d_in;
	a->n_slices = g->n_slices;
	for (int s = 0; s < g->n_slices; s++)
		a->n_out[s] = g->n_out[s];
	a->n_total = (int)tot;
	return LOOM_OK;
}

extern "C" loom_err kn_cuda_lora_shrink(float *v, int v_rows, int r_stride, int ksplit,
					const void *x, int ldx, const kn_cuda_lora_group *g,
					int layer, const void *meta, int grid_chunks, void *stream)
{
	lora_args a = {};
	loom_err rc = check_group("lora shrink", g, layer, r_stride, ksplit, v_rows, grid_chunks,
				  &a);
	if (rc)
		return rc;
	if (ldx < g->d_in)
		return loom_fail(LOOM_EINVAL, "lora shrink: ldx = %d < d_in = %d", ldx, g->d_in);
	int kc = (((g->d_in + ksplit - 1) / ksplit) + 7) / 8 * 8;
	if (kc > SH_KC)
		return loom_fail(LOOM_EINVAL, "lora shrink: d_in = %d in %d splits gives %d columns "
				 "per CTA (max %d): use kn_cuda_lora_ksplit", g->d_in, ksplit, kc,
				 SH_KC);
	if (grid_chunks == 0 || v_rows == 0)
		return LOOM_OK;
	bool x_vec = kn_aligned16(x) && ldx % 8 == 0 && g->d_in % 8 == 0;
	unsigned grid = (unsigned)grid_chunks * (unsigned)ksplit;
	cudaStream_t st = (cudaStream_t)stream;
	if (g->dt == KN_CUDA_BF16)
		lora_shrink_kernel<__nv_bfloat16><<<grid, SH_THREADS, 0, st>>>(
			v, v_rows, r_stride, ksplit, kc, (const __nv_bfloat16 *)x, ldx, x_vec, a,
			(const int32_t *)meta);
	else
		lora_shrink_kernel<__half><<<grid, SH_THREADS, 0, st>>>(
			v, v_rows, r_stride, ksplit, kc, (const __half *)x, ldx, x_vec, a,
			(const int32_t *)meta);
	return kn_cu_launched("lora shrink launch");
}

extern "C" loom_err kn_cuda_lora_expand(void *y, kn_cuda_dtype ydt, int ldy, const float *v,
					int v_rows, int r_stride, int ksplit,
					const kn_cuda_lora_group *g, int layer, const void *meta,
					int grid_chunks, void *stream)
{
	lora_args a = {};
	loom_err rc = check_group("lora expand", g, layer, r_stride, ksplit, v_rows, grid_chunks,
				  &a);
	if (rc)
		return rc;
	if (ldy < a.n_total)
		return loom_fail(LOOM_EINVAL, "lora expand: ldy = %d < output width %d", ldy,
				 a.n_total);
	if (ydt != g->dt && ydt != KN_CUDA_F32)
		return loom_fail(LOOM_EUNSUPPORTED, "lora expand: y dtype %s with weights %s",
				 kn_cuda_dtype_name(ydt), kn_cuda_dtype_name(g->dt));
	if (grid_chunks == 0 || v_rows == 0 || a.n_total == 0)
		return LOOM_OK;
	dim3 grid((unsigned)grid_chunks,
		  (unsigned)((a.n_total + EX_THREADS * EX_COLS - 1) / (EX_THREADS * EX_COLS)));
	if (grid.y > 65535)
		return loom_fail(LOOM_ERANGE, "lora expand: output width %d too wide", a.n_total);
	cudaStream_t st = (cudaStream_t)stream;
	const int32_t *m = (const int32_t *)meta;
	if (g->dt == KN_CUDA_BF16) {
		if (ydt == KN_CUDA_F32)
			lora_expand_kernel<__nv_bfloat16, float><<<grid, EX_THREADS, 0, st>>>(
				(float *)y, ldy, v, v_rows, r_stride, ksplit, a, m);
		else
			lora_expand_kernel<__nv_bfloat16, __nv_bfloat16><<<grid, EX_THREADS, 0, st>>>(
				(__nv_bfloat16 *)y, ldy, v, v_rows, r_stride, ksplit, a, m);
	} else {
		if (ydt == KN_CUDA_F32)
			lora_expand_kernel<__half, float><<<grid, EX_THREADS, 0, st>>>(
				(float *)y, ldy, v, v_rows, r_stride, ksplit, a, m);
		else
			lora_expand_kernel<__half, __half><<<grid, EX_THREADS, 0, st>>>(
				(__half *)y, ldy, v, v_rows, r_stride, ksplit, a, m);
	}
	return kn_cu_launched("lora expand launch");
}
