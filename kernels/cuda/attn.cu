/* kernels/cuda/attn.cu — paged KV writes and causal GQA attention over the
 * paged cache (KERNELS.md section 6; scalar v1, fp32 math).
 *
 * Cache: k[block][layer][slot][kv_dim] (and v), the layout of worker/kv.h;
 * a key's row offset is block * block_stride + layer_off + slot * kv_dim +
 * kv_head * head_dim, all int64. Block ids outside the pool (or positions
 * beyond a sequence's block table) are treated as absent keys, never read.
 *
 * Decode: one CTA per (query row, KV head, split of DEC_PART positions);
 * the query heads of the GQA group (up to DEC_G per CTA) share every K/V
 * row the CTA loads. Scores go to shared memory, softmax per head within
 * the split, then P.V with each V element read once for all heads. With
 * more than one split, (m, l, unnormalized o) per split go to a workspace
 * and a merge kernel combines them (vLLM paged_attention_v2 style).
 * Prefill: a CTA takes a 16-row tile of (query row, head) pairs of one
 * sequence and one KV head, walks 32-key tiles up to its last query's
 * position with the causal mask kv_pos <= q_pos, online softmax in fp32
 * (exponent base 0 for a row with only -inf so far: no NaN). Tiles are
 * mapped to sequences by binary search on cu_q[s] / rows_per_tile + s.
 * Query rows sit on grid.x everywhere (no 65535 limit on tokens).
 * Both kernels take a sliding window W (0 = none: query at position p sees
 * keys p-W+1..p; decode splits start at the first visible key, prefill
 * skips the key tiles before its first row's window) and a soft-cap of
 * the scaled scores (cap * tanh(s / cap) before the softmax; 0 = none). */
#include "kn_cuda_int.cuh"

#define KVW_THREADS 128
#define DEC_THREADS 128
#define DEC_WARPS (DEC_THREADS / 32)
#define DEC_PART 256
#define DEC_G 8
#define HD_MAX 256
#define MAX_GQA 64
#define PF_THREADS 128
#define PF_ROWS 16
#define PF_BK 32
#define PF_TPR (PF_THREADS / PF_ROWS) /* threads per row: 8 */
#define PF_CPT (PF_BK / PF_TPR)       /* key columns per thread: 4 */

struct kv_args {
	const void *k, *v;
	int n_blocks, bs, kv_dim, hd;
	int64_t block_stride, layer_off;
};

/* What a score goes through: times scale, soft-capped (softcap > 0), and
 * masked outside the sliding window (window > 0). */
struct attn_mask {
	float scale, softcap;
	int window;
};

struct batch_args {
	int S;
	const int32_t *cu_q, *ctx_len, *bt;
	int bt_stride;
};

/* ---- CUDA kernels ---- */

/* Gemma 2's score soft-cap. */
__device__ __forceinline__ float softcap_f(float s, float cap)
{
	return cap * tanhf(s / cap);
}

/* The sequence owning query row t: the largest s with cu_q[s] <= t. */
__device__ __forceinline__ int seq_of_row(const int32_t *cu_q, int S, int t)
{
	int lo = 0, hi = S - 1;
	while (lo < hi) {
		int mid = (lo + hi + 1) >> 1;
		if (cu_q[mid] <= t)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

/* Row offset (elements) of position p of sequence s for kv head 0, or -1
 * when the block table has no valid block there. */
__device__ __forceinline__ int64_t kv_row(const kv_args &kv, const batch_args &b, int s, int p)
{
	int bi = p / kv.bs;
	if (p < 0 || bi >= b.bt_stride)
		return -1;
	int blk = b.bt[(int64_t)s * b.bt_stride + bi];
	if (blk < 0 || blk >= kv.n_blocks)
		return -1;
	return (int64_t)blk * kv.block_stride + kv.layer_off + (int64_t)(p % kv.bs) * kv.kv_dim;
}

/* Position of query row t and the KV length it sees (<= what the block
 * table covers); kv_len 0 for malformed metadata. */
__device__ __forceinline__ void row_pos(const batch_args &b, const kv_args &kv, int t, int *s,
					int *pos, int *kv_len)
{
	int sq = seq_of_row(b.cu_q, b.S, t);
	if (t >= b.cu_q[b.S]) { /* n_tokens beyond cu_q[n_seqs]: no such row */
		*s = sq;
		*pos = -1;
		*kv_len = 0;
		return;
	}
	int q_len = b.cu_q[sq + 1] - b.cu_q[sq];
	int p = b.ctx_len[sq] - q_len + (t - b.cu_q[sq]);
	int64_t cap = (int64_t)b.bt_stride * kv.bs;
	*s = sq;
	*pos = p;
	*kv_len = p < 0 ? 0 : (int)min((int64_t)p + 1, cap);
}

template <typename KT>
__global__ void __launch_bounds__(KVW_THREADS)
kv_write_kernel(kv_args kv, batch_args b, const void *k, const void *v, int sdt, int64_t ld)
{
	int t = blockIdx.x;
	int s, pos, kv_len;
	row_pos(b, kv, t, &s, &pos, &kv_len);
	if (pos < 0)
		return;
	int64_t dst = kv_row(kv, b, s, pos);
	if (dst < 0)
		return;
	KT *kc = (KT *)kv.k, *vc = (KT *)kv.v;
	for (int i = threadIdx.x; i < kv.kv_dim; i += KVW_THREADS) {
		kc[dst + i] = kn_from_f<KT>(kn_ld(k, sdt, (int64_t)t * ld + i));
		vc[dst + i] = kn_from_f<KT>(kn_ld(v, sdt, (int64_t)t * ld + i));
	}
}

template <typename KT>
__global__ void __launch_bounds__(DEC_THREADS)
attn_decode_kernel(void *out, int odt, int64_t ldo, const void *q, int qdt, int64_t ldq,
		   kv_args kv, batch_args b, int G, int hgroups, attn_mask mk, int nsplit,
		   float *ws_o, float *ws_ml)
{
	__shared__ float qs[DEC_G * HD_MAX];
	__shared__ float sc[DEC_G * DEC_PART];
	__shared__ int64_t roff[DEC_PART];
	__shared__ float msh[DEC_G], lsh[DEC_G];

	int t = blockIdx.x;
	int kvh = blockIdx.y / hgroups, g0 = (blockIdx.y % hgroups) * DEC_G;
	int sp = blockIdx.z;
	int gn = min(DEC_G, G - g0);
	int hd = kv.hd;
	int n_heads = G * (kv.kv_dim / hd);
	int s, pos, kv_len;
	row_pos(b, kv, t, &s, &pos, &kv_len);
	int p0 = (mk.window > 0 ? max(0, pos - mk.window + 1) : 0) + sp * DEC_PART;
	int np = max(0, min(kv_len, p0 + DEC_PART) - p0);
	const KT *kc = (const KT *)kv.k, *vc = (const KT *)kv.v;
	int64_t head_off = (int64_t)kvh * hd;

	for (int i = threadIdx.x; i < gn * hd; i += DEC_THREADS) {
		int g = i / hd, d = i % hd;
		int64_t o = (int64_t)t * ldq + (int64_t)(kvh * G + g0 + g) * hd + d;
		qs[g * HD_MAX + d] = kn_ld(q, qdt, o) * mk.scale;
	}
	for (int i = threadIdx.x; i < np; i += DEC_THREADS) {
		int64_t r = kv_row(kv, b, s, p0 + i);
		roff[i] = r < 0 ? -1 : r + head_off;
	}
	__syncthreads();

	/* scores: warp per position, lanes over head_dim */
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	for (int i = warp; i < np; i += DEC_WARPS) {
		int64_t r = roff[i];
		float dot[DEC_G];
#pragma unroll
		for (int g = 0; g < DEC_G; g++)
			dot[g] = 0.f;
		if (r >= 0) {
			for (int d = lane; d < hd; d += 32) {
				float kf = kn_to_f(kc[r + d]);
#pragma unroll
				for (int g = 0; g < DEC_G; g++)
					if (g < gn)
						dot[g] = fmaf(qs[g * HD_MAX + d], kf, dot[g]);
			}
		}
#pragma unroll
		for (int g = 0; g < DEC_G; g++) {
			float v = dot[g];
			for (int off = 16; off > 0; off >>= 1)
				v += __shfl_xor_sync(0xffffffffu, v, off);
			if (mk.softcap > 0.f)
				v = softcap_f(v, mk.softcap);
			if (lane == 0 && g < gn)
				sc[g * DEC_PART + i] = r >= 0 ? v : -INFINITY;
		}
	}
	__syncthreads();

	/* softmax within the split: warp per head */
	for (int g = warp; g < gn; g += DEC_WARPS) {
		float m = -INFINITY;
		for (int i = lane; i < np; i += 32)
			m = fmaxf(m, sc[g * DEC_PART + i]);
		for (int off = 16; off > 0; off >>= 1)
			m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
		float base = m == -INFINITY ? 0.f : m;
		float l = 0.f;
		for (int i = lane; i < np; i += 32) {
			float e = __expf(sc[g * DEC_PART + i] - base);
			sc[g * DEC_PART + i] = e;
			l += e;
		}
		for (int off = 16; off > 0; off >>= 1)
			l += __shfl_xor_sync(0xffffffffu, l, off);
		if (lane == 0) {
			msh[g] = m;
			lsh[g] = l;
		}
	}
	__syncthreads();

	/* o[g][d] = sum_i p[g][i] * V[i][d]: thread per d, every V element read once */
	for (int d = threadIdx.x; d < hd; d += DEC_THREADS) {
		float acc[DEC_G];
#pragma unroll
		for (int g = 0; g < DEC_G; g++)
			acc[g] = 0.f;
		for (int i = 0; i < np; i++) {
			int64_t r = roff[i];
			if (r < 0)
				continue;
			float vf = kn_to_f(vc[r + d]);
#pragma unroll
			for (int g = 0; g < DEC_G; g++)
				if (g < gn)
					acc[g] = fmaf(sc[g * DEC_PART + i], vf, acc[g]);
		}
#pragma unroll
		for (int g = 0; g < DEC_G; g++) {
			if (g >= gn)
				break;
			int head = kvh * G + g0 + g;
			if (nsplit == 1) {
				float l = lsh[g];
				kn_st(out, odt, (int64_t)t * ldo + (int64_t)head * hd + d,
				      l > 0.f ? acc[g] / l : 0.f);
			} else {
				int64_t w = ((int64_t)t * n_heads + head) * nsplit + sp;
				ws_o[w * hd + d] = acc[g];
				if (d == 0) {
					ws_ml[2 * w] = msh[g];
					ws_ml[2 * w + 1] = lsh[g];
				}
			}
		}
	}
}

__global__ void __launch_bounds__(DEC_THREADS)
attn_merge_kernel(void *out, int odt, int64_t ldo, int hd, int nsplit, const float *ws_o,
		  const float *ws_ml)
{
	int t = blockIdx.x, head = blockIdx.y, n_heads = gridDim.y;
	int64_t w0 = ((int64_t)t * n_heads + head) * nsplit;
	float M = -INFINITY;
	for (int sp = 0; sp < nsplit; sp++)
		M = fmaxf(M, ws_ml[2 * (w0 + sp)]);
	for (int d = threadIdx.x; d < hd; d += DEC_THREADS) {
		float L = 0.f, o = 0.f;
		if (M != -INFINITY) {
			for (int sp = 0; sp < nsplit; sp++) {
				float m = ws_ml[2 * (w0 + sp)];
				if (m == -INFINITY)
					continue;
				float wgt = __expf(m - M);
				L += ws_ml[2 * (w0 + sp) + 1] * wgt;
				o += ws_o[(w0 + sp) * hd + d] * wgt;
			}
		}
		kn_st(out, odt, (int64_t)t * ldo + (int64_t)head * hd + d, L > 0.f ? o / L : 0.f);
	}
}

/* Dynamic shared memory of the prefill kernel for head_dim hd. */
__host__ __device__ static inline size_t pf_smem(int hd)
{
	return sizeof(float) * ((size_t)PF_ROWS * (hd + 1) + (size_t)PF_BK * (hd + 1) +
				(size_t)PF_BK * hd + (size_t)PF_ROWS * PF_BK) +
	       sizeof(int64_t) * PF_BK;
}

template <typename KT, int HDV>
__global__ void __launch_bounds__(PF_THREADS)
attn_prefill_kernel(void *out, int odt, int64_t ldo, const void *q, int qdt, int64_t ldq,
		    kv_args kv, batch_args b, int G, int gpb, int tpt, int hgroups, attn_mask mk)
{
	extern __shared__ __align__(16) unsigned char pf_raw[];
	int hd = kv.hd;
	int64_t *koff = (int64_t *)pf_raw;
	float *qs = (float *)(koff + PF_BK);     /* [PF_ROWS][hd+1] */
	float *ks = qs + PF_ROWS * (hd + 1);     /* [PF_BK][hd+1] */
	float *vs = ks + PF_BK * (hd + 1);       /* [PF_BK][hd] */
	float *ps = vs + PF_BK * hd;             /* [PF_ROWS][PF_BK] */

	/* which sequence and which rows */
	int tile = blockIdx.x;
	int lo = 0, hi = b.S - 1;
	while (lo < hi) {
		int mid = (lo + hi + 1) >> 1;
		if (b.cu_q[mid] / tpt + mid <= tile)
			lo = mid;
		else
			hi = mid - 1;
	}
	int s = lo;
	int q_begin = b.cu_q[s], q_len = b.cu_q[s + 1] - q_begin;
	int tok0 = (tile - (q_begin / tpt + s)) * tpt;
	if (tok0 < 0 || tok0 >= q_len)
		return;
	int ntok = min(tpt, q_len - tok0);
	int kvh = blockIdx.y / hgroups, g0 = (blockIdx.y % hgroups) * gpb;
	int gn = min(gpb, G - g0);
	int pos_base = b.ctx_len[s] - q_len + tok0; /* position of the tile's first row */
	int64_t cap = (int64_t)b.bt_stride * kv.bs;
	int kv_end = (int)max((int64_t)0, min((int64_t)pos_base + ntok, cap));
	/* the first key any row of the tile sees (its first row's window) */
	int kv_begin = mk.window > 0 ? max(0, pos_base - mk.window + 1) : 0;
	int64_t head_off = (int64_t)kvh * hd;

	/* this thread's row and key columns */
	int r = threadIdx.x / PF_TPR, c8 = threadIdx.x % PF_TPR;
	int rtok = r / gpb, rg = r % gpb;
	bool rvalid = rtok < ntok && rg < gn;
	int rpos = pos_base + rtok;
	int rlo = mk.window > 0 ? rpos - mk.window + 1 : 0; /* this row's first key */

	for (int i = threadIdx.x; i < PF_ROWS * hd; i += PF_THREADS) {
		int rr = i / hd, d = i % hd;
		int tk = rr / gpb, g = rr % gpb;
		float v = 0.f;
		if (tk < ntok && g < gn)
			v = kn_ld(q, qdt, (int64_t)(q_begin + tok0 + tk) * ldq +
					       (int64_t)(kvh * G + g0 + g) * hd + d) * mk.scale;
		qs[rr * (hd + 1) + d] = v;
	}

	const KT *kc = (const KT *)kv.k, *vc = (const KT *)kv.v;
	float m = -INFINITY, l = 0.f;
	float acc[HDV / PF_TPR];
#pragma unroll
	for (int j = 0; j < HDV / PF_TPR; j++)
		acc[j] = 0.f;

	for (int kt = kv_begin; kt < kv_end; kt += PF_BK) {
		int nk = min(PF_BK, kv_end - kt);
		__syncthreads(); /* previous tile's ks/vs/ps fully consumed (and qs written) */
		if (threadIdx.x < nk) {
			int64_t o = kv_row(kv, b, s, kt + threadIdx.x);
			koff[threadIdx.x] = o < 0 ? -1 : o + head_off;
		}
		__syncthreads();
		for (int i = threadIdx.x; i < nk * hd; i += PF_THREADS) {
			int c = i / hd, d = i % hd;
			int64_t o = koff[c];
			ks[c * (hd + 1) + d] = o < 0 ? 0.f : kn_to_f(kc[o + d]);
			vs[c * hd + d] = o < 0 ? 0.f : kn_to_f(vc[o + d]);
		}
		__syncthreads();

		float sv[PF_CPT];
		float tmax = -INFINITY;
#pragma unroll
		for (int cc = 0; cc < PF_CPT; cc++) {
			int c = c8 + PF_TPR * cc;
			float v = -INFINITY;
			if (rvalid && c < nk && koff[c] >= 0 && kt + c <= rpos && kt + c >= rlo) {
				float dot = 0.f;
				const float *qr = qs + r * (hd + 1), *kr = ks + c * (hd + 1);
				for (int d = 0; d < hd; d++)
					dot = fmaf(qr[d], kr[d], dot);
				v = mk.softcap > 0.f ? softcap_f(dot, mk.softcap) : dot;
			}
			sv[cc] = v;
			tmax = fmaxf(tmax, v);
		}
		/* the 8 threads of a row are 8 consecutive lanes */
#pragma unroll
		for (int off = 1; off < PF_TPR; off <<= 1)
			tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, off));
		float mn = fmaxf(m, tmax);
		float base = mn == -INFINITY ? 0.f : mn;
		float alpha = __expf(m - base);
		float psum = 0.f;
#pragma unroll
		for (int cc = 0; cc < PF_CPT; cc++) {
			float p = __expf(sv[cc] - base);
			ps[r * PF_BK + c8 + PF_TPR * cc] = p;
			psum += p;
		}
#pragma unroll
		for (int off = 1; off < PF_TPR; off <<= 1)
			psum += __shfl_xor_sync(0xffffffffu, psum, off);
		l = l * alpha + psum;
		m = mn;
		__syncwarp(); /* a row's ps entries come from lanes of this warp */
#pragma unroll
		for (int j = 0; j < HDV / PF_TPR; j++)
			acc[j] *= alpha;
		for (int c = 0; c < nk; c++) {
			float p = ps[r * PF_BK + c];
			const float *vr = vs + c * hd;
#pragma unroll
			for (int j = 0; j < HDV / PF_TPR; j++) {
				int d = c8 + PF_TPR * j;
				if (d < hd)
					acc[j] = fmaf(p, vr[d], acc[j]);
			}
		}
	}

	if (!rvalid)
		return;
	int64_t orow = (int64_t)(q_begin + tok0 + rtok) * ldo + (int64_t)(kvh * G + g0 + rg) * hd;
	float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
	for (int j = 0; j < HDV / PF_TPR; j++) {
		int d = c8 + PF_TPR * j;
		if (d < hd)
			kn_st(out, odt, orow + d, acc[j] * inv);
	}
}

/* ---- kernel launchers ---- */

extern "C" size_t kn_cuda_kv_bytes(const kn_cuda_kv *kv)
{
	if (!kv || kv->n_blocks < 0 || kv->n_layers < 0 || kv->block_size < 0 ||
	    kv->n_kv_heads < 0 || kv->head_dim < 0)
		return 0;
	return (size_t)kv->n_blocks * kv->n_layers * kv->block_size * kv->n_kv_heads *
	       kv->head_dim * kn_cuda_dtype_size(kv->dt);
}

static loom_err check_kv(const char *op, const kn_cuda_kv *kv, int layer,
			 const kn_cuda_attn_batch *b, kv_args *ka, batch_args *ba)
{
	if (!kv || !kv->k || !kv->v || !b)
		return loom_fail(LOOM_EINVAL, "%s: NULL cache or batch", op);
	if (!kn_dt_half(kv->dt))
		return loom_fail(LOOM_EUNSUPPORTED, "%s: KV dtype %s (bf16 or f16)", op,
				 kn_cuda_dtype_name(kv->dt));
	if (kv->n_blocks < 1 || kv->n_layers < 1 || kv->block_size < 1 || kv->n_kv_heads < 1 ||
	    kv->head_dim < 1 || kv->head_dim > HD_MAX)
		return loom_fail(LOOM_EINVAL, "%s: KV pool blocks=%d layers=%d block_size=%d "
				 "kv_heads=%d head_dim=%d (head_dim <= %d)", op, kv->n_blocks,
				 kv->n_layers, kv->block_size, kv->n_kv_heads, kv->head_dim, HD_MAX);
	if (layer < 0 || layer >= kv->n_layers)
		return loom_fail(LOOM_EINVAL, "%s: layer %d of %d", op, layer, kv->n_layers);
	if (b->n_seqs < 0 || b->n_tokens < 0 || (b->n_seqs > 0 && (!b->cu_q || !b->ctx_len ||
								   !b->block_tables)) ||
	    b->bt_stride < 1 || b->max_q_len < 0 || b->max_ctx_len < 0)
		return loom_fail(LOOM_EINVAL, "%s: batch n_seqs=%d n_tokens=%d bt_stride=%d", op,
				 b->n_seqs, b->n_tokens, b->bt_stride);
	if (b->n_tokens > 0 && b->n_seqs == 0)
		return loom_fail(LOOM_EINVAL, "%s: %d tokens in no sequence", op, b->n_tokens);
	int64_t kv_dim = (int64_t)kv->n_kv_heads * kv->head_dim;
	if (kv_dim > INT32_MAX)
		return loom_fail(LOOM_ERANGE, "%s: kv_dim %lld", op, (long long)kv_dim);
	ka->k = kv->k;
	ka->v = kv->v;
	ka->n_blocks = kv->n_blocks;
	ka->bs = kv->block_size;
	ka->kv_dim = (int)kv_dim;
	ka->hd = kv->head_dim;
	ka->block_stride = (int64_t)kv->n_layers * kv->block_size * kv_dim;
	ka->layer_off = (int64_t)layer * kv->block_size * kv_dim;
	ba->S = b->n_seqs;
	ba->cu_q = b->cu_q;
	ba->ctx_len = b->ctx_len;
	ba->bt = b->block_tables;
	ba->bt_stride = b->bt_stride;
	return LOOM_OK;
}

extern "C" loom_err kn_cuda_kv_write(const kn_cuda_kv *kv, int layer, const kn_cuda_attn_batch *b,
				     const void *k, const void *v, kn_cuda_dtype dt, int ld,
				     void *stream)
{
	kv_args ka = {};
	batch_args ba = {};
	loom_err rc = check_kv("kv write", kv, layer, b, &ka, &ba);
	if (rc)
		return rc;
	if (!kn_dt_ok(dt) || ld < ka.kv_dim || !k || !v)
		return loom_fail(LOOM_EINVAL, "kv write: source dtype %s ld %d (kv_dim %d)",
				 kn_cuda_dtype_name(dt), ld, ka.kv_dim);
	if (b->n_tokens == 0)
		return LOOM_OK;
	cudaStream_t st = (cudaStream_t)stream;
	if (kv->dt == KN_CUDA_BF16)
		kv_write_kernel<__nv_bfloat16><<<b->n_tokens, KVW_THREADS, 0, st>>>(ka, ba, k, v, dt,
										  ld);
	else
		kv_write_kernel<__half><<<b->n_tokens, KVW_THREADS, 0, st>>>(ka, ba, k, v, dt, ld);
	return kn_cu_launched("kv write launch");
}

static loom_err check_attn(const char *op, const kn_cuda_kv *kv, int n_heads, kn_cuda_dtype odt,
			   int ldo, kn_cuda_dtype qdt, int ldq, const void *out, const void *q)
{
	if (!out || !q)
		return loom_fail(LOOM_EINVAL, "%s: NULL q or out", op);
	if (n_heads < 1 || n_heads % kv->n_kv_heads != 0 || n_heads / kv->n_kv_heads > MAX_GQA)
		return loom_fail(LOOM_EINVAL, "%s: %d query heads over %d KV heads (a multiple, at "
				 "most %d per KV head)", op, n_heads, kv->n_kv_heads, MAX_GQA);
	int64_t width = (int64_t)n_heads * kv->head_dim;
	if (ldq < width || ldo < width)
		return loom_fail(LOOM_EINVAL, "%s: ldq=%d ldo=%d < n_heads*head_dim=%lld", op, ldq,
				 ldo, (long long)width);
	if (!kn_dt_ok(odt) || !kn_dt_ok(qdt))
		return loom_fail(LOOM_EUNSUPPORTED, "%s: q/out dtype not f32/bf16/f16", op);
	return LOOM_OK;
}

static loom_err check_mask(const char *op, int window, float softcap)
{
	if (window < 0 || !(softcap >= 0.f))
		return loom_fail(LOOM_EINVAL, "%s: window %d softcap %g (>= 0; 0 = none)", op,
				 window, (double)softcap);
	return LOOM_OK;
}

static int decode_splits(int max_ctx_len)
{
	return max_ctx_len <= DEC_PART ? 1 : (max_ctx_len + DEC_PART - 1) / DEC_PART;
}

extern "C" size_t kn_cuda_attn_decode_ws_bytes(int n_tokens, int n_heads, int head_dim,
					       int max_ctx_len)
{
	int ns = decode_splits(max_ctx_len);
	if (ns == 1 || n_tokens <= 0 || n_heads <= 0 || head_dim <= 0)
		return 0;
	return (size_t)n_tokens * n_heads * ns * ((size_t)head_dim + 2) * sizeof(float);
}

extern "C" loom_err kn_cuda_attn_decode(void *out, kn_cuda_dtype odt, int ldo, const void *q,
					kn_cuda_dtype qdt, int ldq, const kn_cuda_kv *kv,
					int layer, const kn_cuda_attn_batch *b, int n_heads,
					float scale, int window, float softcap, void *ws,
					size_t ws_bytes, void *stream)
{
	kv_args ka = {};
	batch_args ba = {};
	loom_err rc = check_kv("attn decode", kv, layer, b, &ka, &ba);
	if (!rc)
		rc = check_attn("attn decode", kv, n_heads, odt, ldo, qdt, ldq, out, q);
	if (!rc)
		rc = check_mask("attn decode", window, softcap);
	if (rc)
		return rc;
	if (b->n_tokens == 0)
		return LOOM_OK;
	int G = n_heads / kv->n_kv_heads;
	int hgroups = (G + DEC_G - 1) / DEC_G;
	/* a window bounds the keys a row sees: fewer splits, less workspace */
	attn_mask mk = {scale, softcap, window};
	int span = window > 0 && window < b->max_ctx_len ? window : b->max_ctx_len;
	int ns = decode_splits(span);
	if (ns > 65535)
		return loom_fail(LOOM_ERANGE, "attn decode: context %d too long", b->max_ctx_len);
	size_t need = kn_cuda_attn_decode_ws_bytes(b->n_tokens, n_heads, kv->head_dim, span);
	if (need > 0 && (!ws || ws_bytes < need))
		return loom_fail(LOOM_EINVAL, "attn decode: workspace of %zu bytes, %zu needed",
				 ws ? ws_bytes : 0, need);
	float *ws_o = (float *)ws;
	float *ws_ml = need ? ws_o + (size_t)b->n_tokens * n_heads * ns * kv->head_dim : NULL;
	dim3 grid((unsigned)b->n_tokens, (unsigned)(kv->n_kv_heads * hgroups), (unsigned)ns);
	if (grid.y > 65535)
		return loom_fail(LOOM_ERANGE, "attn decode: %d KV heads x %d head groups", kv->n_kv_heads,
				 hgroups);
	cudaStream_t st = (cudaStream_t)stream;
	if (kv->dt == KN_CUDA_BF16)
		attn_decode_kernel<__nv_bfloat16><<<grid, DEC_THREADS, 0, st>>>(
			out, odt, ldo, q, qdt, ldq, ka, ba, G, hgroups, mk, ns, ws_o, ws_ml);
	else
		attn_decode_kernel<__half><<<grid, DEC_THREADS, 0, st>>>(
			out, odt, ldo, q, qdt, ldq, ka, ba, G, hgroups, mk, ns, ws_o, ws_ml);
	if ((rc = kn_cu_launched("attn decode launch")) != LOOM_OK || ns == 1)
		return rc;
	attn_merge_kernel<<<dim3((unsigned)b->n_tokens, (unsigned)n_heads), DEC_THREADS, 0, st>>>(
		out, odt, ldo, kv->head_dim, ns, ws_o, ws_ml);
	return kn_cu_launched("attn merge launch");
}

template <typename KT, int HDV>
static loom_err launch_prefill(dim3 grid, size_t smem, cudaStream_t st, void *out, int odt,
			       int64_t ldo, const void *q, int qdt, int64_t ldq, kv_args ka,
			       batch_args ba, int G, int gpb, int tpt, int hgroups, attn_mask mk)
{
	if (smem > 48 * 1024) {
		loom_err rc = kn_cu_check(cudaFuncSetAttribute(attn_prefill_kernel<KT, HDV>,
				cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
				"attn prefill: shared memory opt-in");
		if (rc)
			return rc;
	}
	attn_prefill_kernel<KT, HDV><<<grid, PF_THREADS, smem, st>>>(out, odt, ldo, q, qdt, ldq, ka,
								     ba, G, gpb, tpt, hgroups, mk);
	return kn_cu_launched("attn prefill launch");
}

extern "C" loom_err kn_cuda_attn_prefill(void *out, kn_cuda_dtype odt, int ldo, const void *q,
					 kn_cuda_dtype qdt, int ldq, const kn_cuda_kv *kv,
					 int layer, const kn_cuda_attn_batch *b, int n_heads,
					 float scale, int window, float softcap, void *stream)
{
	kv_args ka = {};
	batch_args ba = {};
	loom_err rc = check_kv("attn prefill", kv, layer, b, &ka, &ba);
	if (!rc)
		rc = check_attn("attn prefill", kv, n_heads, odt, ldo, qdt, ldq, out, q);
	if (!rc)
		rc = check_mask("attn prefill", window, softcap);
	if (rc)
		return rc;
	if (b->n_tokens == 0)
		return LOOM_OK;
	int G = n_heads / kv->n_kv_heads;
	int gpb = G < PF_ROWS ? G : PF_ROWS;
	int tpt = PF_ROWS / gpb;
	int hgroups = (G + gpb - 1) / gpb;
	int64_t tiles = (int64_t)b->n_tokens / tpt + b->n_seqs;
	if (tiles > INT32_MAX || (int64_t)kv->n_kv_heads * hgroups > 65535)
		return loom_fail(LOOM_ERANGE, "attn prefill: grid too large");
	dim3 grid((unsigned)tiles, (unsigned)(kv->n_kv_heads * hgroups));
	size_t smem = pf_smem(kv->head_dim);
	int dev = 0, optin = 0;
	if ((rc = kn_cu_check(cudaGetDevice(&dev), "cudaGetDevice")) != LOOM_OK ||
	    (rc = kn_cu_check(cudaDeviceGetAttribute(&optin,
			cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "device attribute")) != LOOM_OK)
		return rc;
	if (smem > (size_t)optin)
		return loom_fail(LOOM_EUNSUPPORTED, "attn prefill: head_dim %d needs %zu bytes of "
				 "shared memory, device allows %d", kv->head_dim, smem, optin);
	cudaStream_t st = (cudaStream_t)stream;
	int hd = kv->head_dim;
	bool bf = kv->dt == KN_CUDA_BF16;
	attn_mask mk = {scale, softcap, window};
#define PF_ARGS grid, smem, st, out, odt, ldo, q, qdt, ldq, ka, ba, G, gpb, tpt, hgroups, mk
	if (hd <= 64)
		return bf ? launch_prefill<__nv_bfloat16, 64>(PF_ARGS)
			  : launch_prefill<__half, 64>(PF_ARGS);
	if (hd <= 128)
		return bf ? launch_prefill<__nv_bfloat16, 128>(PF_ARGS)
			  : launch_prefill<__half, 128>(PF_ARGS);
	return bf ? launch_prefill<__nv_bfloat16, 256>(PF_ARGS) : launch_prefill<__half, 256>(PF_ARGS);
#undef PF_ARGS
}
