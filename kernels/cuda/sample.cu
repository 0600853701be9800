/* kernels/cuda/sample.cu — next-token sampling, one CTA per logits row,
 * with the semantics of worker/sample.c.
 *
 * Order: a candidate's 64-bit key is (order-preserving bits of its logit,
 * NaN as -inf and -0 as +0) << 32 | (2^32-1 - id), so a larger key ranks
 * better and ties break toward the lower id, as the CPU's comparator does.
 * Without a filter the CPU walks candidates in id order; there the key is
 * just 2^32-1 - id.
 * Selection without sorting: a radix select over the key, 8 bits per pass,
 * finds the element at which a running weight summed best-first reaches a
 * target; the weight is 1 (top_k: the k-th best) or the probability mass
 * (top_p: the cut; the draw: the chosen token). Masses are exp((l - max)/T)
 * in double, held as 40-bit fixed point so every sum is an exact, order-free
 * integer (deterministic whatever the thread schedule). A top_k list of up
 * to CAND_MAX candidates is compacted into shared memory first. */
#include "kn_cuda_int.cuh"

#define SMP_THREADS 512
#define CAND_MAX 1024
#define FIX_ONE 1099511627776.0 /* 2^40 */

typedef unsigned long long u64;

struct smp_shared {
	u64 hist[256];
	u64 red[SMP_THREADS / 32];
	u64 bcast[3];
	int n_cand;
	u64 ckey[CAND_MAX];
	u64 cmass[CAND_MAX];
};

/* ---- CUDA kernels ---- */

/* splitmix64 finalizer and the (seed, position) draw: worker/sample.c. */
__host__ __device__ static inline uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

__host__ __device__ static inline double rand_uniform(uint64_t seed, uint64_t position)
{
	uint64_t z = mix64(seed + 0x9e3779b97f4a7c15ULL);
	z = mix64(z ^ (position * 0xd1b54a32d192ed03ULL + 0x9e3779b97f4a7c15ULL));
	return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

__device__ __forceinline__ u64 full_key(float l, int id)
{
	if (l != l)
		l = -INFINITY;
	if (l == 0.f)
		l = 0.f; /* -0 ranks with +0 */
	uint32_t u = __float_as_uint(l);
	u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
	return ((u64)u << 32) | (u64)(0xFFFFFFFFu - (uint32_t)id);
}

__device__ __forceinline__ u64 id_key(int id)
{
	return (u64)(0xFFFFFFFFu - (uint32_t)id);
}

__device__ __forceinline__ int key_id(u64 key)
{
	return (int)(0xFFFFFFFFu - (uint32_t)(key & 0xFFFFFFFFu));
}

__device__ __forceinline__ u64 mass_of(float l, float mx, double inv_t)
{
	if (l != l)
		return 0;
	double e = exp(((double)l - (double)mx) * inv_t);
	return (u64)(e * FIX_ONE);
}

__device__ __forceinline__ u64 block_max(u64 v, smp_shared *sh)
{
	for (int off = 16; off > 0; off >>= 1) {
		u64 o = __shfl_xor_sync(0xffffffffu, v, off);
		v = o > v ? o : v;
	}
	__syncthreads(); /* red may still be read from a previous reduction */
	if ((threadIdx.x & 31) == 0)
		sh->red[threadIdx.x >> 5] = v;
	__syncthreads();
	v = 0;
	for (int w = 0; w < SMP_THREADS / 32; w++)
		v = sh->red[w] > v ? sh->red[w] : v;
	return v;
}

__device__ __forceinline__ u64 block_sum(u64 v, smp_shared *sh)
{
	for (int off = 16; off > 0; off >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, off);
	__syncthreads();
	if ((threadIdx.x & 31) == 0)
		sh->red[threadIdx.x >> 5] = v;
	__syncthreads();
	v = 0;
	for (int w = 0; w < SMP_THREADS / 32; w++)
		v += sh->red[w];
	return v;
}

struct smp_row {
	const void *lg;
	int dt;
	int64_t off;
	int vocab;
	float mx;
	double inv_t;
};

/*
 * The key of the candidate (key >= lo) at which the weight summed in key
 * order, best first, first reaches target (>= target, or > target when
 * strict). Weight: 1 per candidate, or its mass. Candidates come from the
 * compacted list when compact, else from the whole row (id_mode: id keys).
 * *ok = false if no candidate reaches the target (caller falls back).
 */
__device__ __forceinline__ u64 radix_select(const smp_row &r, smp_shared *sh, bool compact, bool id_mode,
			    bool use_mass, u64 lo, u64 target, bool strict, bool *ok)
{
	u64 prefix = 0;
	bool found = true;
	for (int shift = 56; shift >= 0; shift -= 8) {
		u64 hi_mask = shift == 56 ? 0ULL : (~0ULL << (shift + 8));
		for (int b = threadIdx.x; b < 256; b += SMP_THREADS)
			sh->hist[b] = 0;
		__syncthreads();
		int n = compact ? sh->n_cand : r.vocab;
		for (int i = threadIdx.x; i < n; i += SMP_THREADS) {
			u64 key, w;
			if (compact) {
				key = sh->ckey[i];
				if (key < lo || ((key ^ prefix) & hi_mask))
					continue;
				w = use_mass ? sh->cmass[i] : 1;
			} else {
				float l = kn_ld(r.lg, r.dt, r.off + i);
				key = id_mode ? id_key(i) : full_key(l, i);
				if (key < lo || ((key ^ prefix) & hi_mask))
					continue;
				w = use_mass ? mass_of(l, r.mx, r.inv_t) : 1;
			}
			if (w)
				atomicAdd(&sh->hist[(key >> shift) & 255], w);
		}
		__syncthreads();
		if (threadIdx.x == 0) {
			u64 cum = 0;
			int pick = -1;
			for (int b = 255; b >= 0; b--) {
				u64 h = sh->hist[b];
				if (strict ? cum + h > target : cum + h >= target) {
					pick = b;
					break;
				}
				cum += h;
			}
			if (pick < 0) {
				sh->bcast[2] = 1;
				pick = 0;
			}
			sh->bcast[0] = prefix | ((u64)pick << shift);
			sh->bcast[1] = target - cum;
		}
		__syncthreads();
		prefix = sh->bcast[0];
		target = sh->bcast[1];
	}
	found = sh->bcast[2] == 0;
	*ok = found;
	return prefix;
}

__global__ void __launch_bounds__(SMP_THREADS, 1)
sample_kernel(int32_t *tokens, const void *logits, int dt, int64_t ld, int vocab,
	      const kn_cuda_sample_params *params)
{
	__shared__ smp_shared sh;
	int row = blockIdx.x;
	kn_cuda_sample_params p = params[row];
	smp_row r;
	r.lg = logits;
	r.dt = dt;
	r.off = (int64_t)row * ld;
	r.vocab = vocab;
	if (threadIdx.x == 0) {
		sh.bcast[2] = 0;
		sh.n_cand = 0;
	}

	/* argmax (greedy, and the max for the softmax) */
	u64 best = 0;
	for (int i = threadIdx.x; i < vocab; i += SMP_THREADS) {
		u64 k = full_key(kn_ld(logits, dt, r.off + i), i);
		best = k > best ? k : best;
	}
	best = block_max(best, &sh);
	int arg = key_id(best);
	float mx = kn_ld(logits, dt, r.off + arg);
	bool greedy = !(p.temperature > 0.f) || p.top_k == 1 || vocab <= 1 || !isfinite(mx);
	if (greedy) {
		if (threadIdx.x == 0)
			tokens[row] = vocab <= 1 ? 0 : arg;
		return;
	}
	r.mx = mx;
	r.inv_t = 1.0 / (double)p.temperature;
	bool use_k = p.top_k > 0 && p.top_k < vocab;
	bool use_p = p.top_p < 1.f;
	bool sorted = use_k || use_p;
	bool compact = false, ok = true;
	u64 lo = 0;

	if (use_k) {
		lo = radix_select(r, &sh, false, false, false, 0, (u64)p.top_k, false, &ok);
		if (ok && p.top_k <= CAND_MAX) {
			for (int i = threadIdx.x; i < vocab; i += SMP_THREADS) {
				float l = kn_ld(logits, dt, r.off + i);
				u64 k = full_key(l, i);
				if (k >= lo) {
					int at = atomicAdd(&sh.n_cand, 1);
					if (at < CAND_MAX) {
						sh.ckey[at] = k;
						sh.cmass[at] = mass_of(l, mx, r.inv_t);
					}
				}
			}
			__syncthreads();
			compact = sh.n_cand <= CAND_MAX;
		}
	}

	/* total mass of the candidates */
	u64 total = 0;
	if (compact) {
		for (int i = threadIdx.x; i < sh.n_cand; i += SMP_THREADS)
			total += sh.cmass[i];
	} else {
		for (int i = threadIdx.x; i < vocab; i += SMP_THREADS) {
			float l = kn_ld(logits, dt, r.off + i);
			if (full_key(l, i) >= lo)
				total += mass_of(l, mx, r.inv_t);
		}
	}
	total = block_sum(total, &sh);

	if (ok && use_p && total > 0) {
		double want_d = ceil((double)p.top_p * (double)total);
		u64 want = want_d < 1.0 ? 1 : want_d >= (double)total ? total : (u64)want_d;
		lo = radix_select(r, &sh, compact, false, true, lo, want, false, &ok);
		u64 t2 = 0;
		if (compact) {
			for (int i = threadIdx.x; i < sh.n_cand; i += SMP_THREADS)
				if (sh.ckey[i] >= lo)
					t2 += sh.cmass[i];
		} else {
			for (int i = threadIdx.x; i < vocab; i += SMP_THREADS) {
				float l = kn_ld(logits, dt, r.off + i);
				if (full_key(l, i) >= lo)
					t2 += mass_of(l, mx, r.inv_t);
			}
		}
		total = block_sum(t2, &sh);
	}

	int tok = arg;
	if (ok && total > 0) {
		double u = rand_uniform(p.seed, p.position);
		double ud = u * (double)total;
		u64 ui = ud >= (double)total ? total - 1 : (u64)ud;
		u64 key = radix_select(r, &sh, compact, !sorted, true, sorted ? lo : 0, ui, true,
				       &ok);
		if (ok)
			tok = key_id(key);
	}
	if (threadIdx.x == 0)
		tokens[row] = tok;
}

/* ---- kernel launchers ---- */

extern "C" double kn_cuda_rand_uniform(uint64_t seed, uint64_t position)
{
	return rand_uniform(seed, position);
}

extern "C" loom_err kn_cuda_sample(int32_t *tokens, const void *logits, kn_cuda_dtype dt, int ld,
				   int rows, int vocab, const kn_cuda_sample_params *params,
				   void *stream)
{
	if (!tokens || !logits || !params)
		return loom_fail(LOOM_EINVAL, "sample: NULL tokens, logits or params");
	if (rows < 0 || vocab < 1 || ld < vocab)
		return loom_fail(LOOM_EINVAL, "sample: rows=%d vocab=%d ld=%d", rows, vocab, ld);
	if (!kn_dt_ok(dt))
		return loom_fail(LOOM_EUNSUPPORTED, "sample: logits dtype %d", (int)dt);
	if (rows == 0)
		return LOOM_OK;
	sample_kernel<<<rows, SMP_THREADS, 0, (cudaStream_t)stream>>>(tokens, logits, dt, ld, vocab,
								      params);
	return kn_cu_launched("sample launch");
}
