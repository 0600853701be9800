/* bench/gpu/sgmv_bench.cu — times loom's SGMV shrink/expand against two
 * baselines on one GPU and prints JSON (one object) to stdout.
 *
 * Methods, for LoRA y[T, d] += scale * (x[T, d] . A^T) . Bt with one adapter
 * per request (decode: one row per request) under four adapter mixes:
 *   sgmv     kn_cuda_lora_shrink + kn_cuda_lora_expand (fp32 v, split-K)
 *   gather   per-row gather of the row's A and Bt into [T, r, d] stacks,
 *            then cublasGemmStridedBatchedEx (T GEMVs), bf16 v; the gather
 *            is timed with it (the approach of early multi-LoRA servers)
 *   grouped  cublasGemmGroupedBatchedEx, one group per segment, bf16 v
 * Mixes: distinct (every request its own adapter), uniform (drawn from 32),
 * zipf (s = 1.5 over 32), identical (one adapter). Batch sizes 1..128 and
 * one prefill-shaped case (4 segments of 128 rows). Achieved bandwidth =
 * unique adapter bytes + activations read and written, over time, next to
 * the device-to-device copy bandwidth measured here (read + write).
 * Each figure is the median of 7 runs of 20 launches after 3 warm-ups.
 * Usage: sgmv-bench [--quick] (fewer sizes). Exit 0, or 1 on a CUDA error.
 */
#include <algorithm>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "kernels/cuda/kn_cuda.h"

#define CK(x)                                                                                  \
	do {                                                                                   \
		cudaError_t e_ = (x);                                                          \
		if (e_ != cudaSuccess) {                                                       \
			fprintf(stderr, "sgmv-bench: %s: %s\n", #x, cudaGetErrorString(e_));   \
			exit(1);                                                               \
		}                                                                              \
	} while (0)
#define LK(x)                                                                                  \
	do {                                                                                   \
		loom_err r_ = (x);                                                             \
		if (r_ != LOOM_OK) {                                                           \
			fprintf(stderr, "sgmv-bench: %s: %s\n", #x, loom_errmsg());            \
			exit(1);                                                               \
		}                                                                              \
	} while (0)
#define BK(x)                                                                                  \
	do {                                                                                   \
		cublasStatus_t s_ = (x);                                                       \
		if (s_ != CUBLAS_STATUS_SUCCESS) {                                             \
			fprintf(stderr, "sgmv-bench: %s: cublas status %d\n", #x, (int)s_);     \
			exit(1);                                                               \
		}                                                                              \
	} while (0)

typedef __nv_bfloat16 bf16;

static const int D = 4096;      /* d_in = d_out (q_proj of a 7B model) */
static const int N_POOL = 128;  /* adapters resident */

static uint64_t rng = 88172645463325252ULL;
static double urand(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (double)(rng >> 11) / 9007199254740992.0;
}

static void *dalloc(size_t n)
{
	void *p;
	CK(cudaMalloc(&p, n));
	return p;
}

__global__ void fill_kernel(bf16 *p, size_t n, uint32_t seed, float scale)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x) {
		uint32_t h = (uint32_t)i * 2654435761u ^ seed;
		h ^= h >> 15, h *= 2246822519u, h ^= h >> 13;
		p[i] = __float2bfloat16(((float)(h & 0xffff) / 32768.f - 1.f) * scale);
	}
}

/* gather baseline: dst[t] = src[slot[t]] (rows of elems bf16 each) */
__global__ void gather_kernel(bf16 *dst, const bf16 *const *src, const int *slot, size_t elems)
{
	int t = blockIdx.y;
	const uint4 *s = (const uint4 *)src[slot[t]];
	uint4 *d = (uint4 *)(dst + (size_t)t * elems);
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < elems / 8;
	     i += (size_t)gridDim.x * blockDim.x)
		d[i] = s[i];
}

static float median(std::vector<float> v)
{
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

/* Median microseconds per call of f (20 calls per sample, 7 samples). */
template <typename F> static float time_us(cudaStream_t st, F f)
{
	cudaEvent_t a, b;
	CK(cudaEventCreate(&a));
	CK(cudaEventCreate(&b));
	for (int i = 0; i < 3; i++)
		f();
	CK(cudaStreamSynchronize(st));
	std::vector<float> s;
	for (int k = 0; k < 7; k++) {
		CK(cudaEventRecord(a, st));
		for (int i = 0; i < 20; i++)
			f();
		CK(cudaEventRecord(b, st));
		CK(cudaEventSynchronize(b));
		float ms;
		CK(cudaEventElapsedTime(&ms, a, b));
		s.push_back(ms * 1000.f / 20.f);
	}
	CK(cudaEventDestroy(a));
	CK(cudaEventDestroy(b));
	return median(s);
}

enum { MIX_DISTINCT, MIX_UNIFORM, MIX_ZIPF, MIX_IDENTICAL };
static const char *mix_names[] = {"distinct", "uniform", "zipf", "identical"};

/* one slot per request, requests grouped by slot (the worker orders them) */
static std::vector<int> draw_slots(int mix, int n)
{
	std::vector<int> s(n);
	double z = 0;
	for (int i = 1; i <= 32; i++)
		z += pow(i, -1.5);
	for (int i = 0; i < n; i++) {
		if (mix == MIX_DISTINCT)
			s[i] = i % N_POOL;
		else if (mix == MIX_UNIFORM)
			s[i] = (int)(urand() * 32);
		else if (mix == MIX_IDENTICAL)
			s[i] = 7;
		else {
			double u = urand() * z, acc = 0;
			s[i] = 31;
			for (int k = 1; k <= 32; k++) {
				acc += pow(k, -1.5);
				if (u < acc) {
					s[i] = k - 1;
					break;
				}
			}
		}
	}
	std::sort(s.begin(), s.end());
	return s;
}

int main(int argc, char **argv)
{
	bool quick = argc > 1 && !strcmp(argv[1], "--quick");
	int n = 0;
	LK(kn_cuda_device_count(&n));
	if (n == 0) {
		fprintf(stderr, "sgmv-bench: no CUDA device: %s\n", loom_errmsg());
		return 1;
	}
	kn_cuda_device dev;
	LK(kn_cuda_device_info(0, &dev));
	kn_cuda_ctx *ctx;
	LK(kn_cuda_ctx_create(0, 0, &ctx));
	cudaStream_t st = (cudaStream_t)kn_cuda_ctx_stream(ctx);
	cublasHandle_t blas;
	BK(cublasCreate(&blas));
	BK(cublasSetStream(blas, st));

	/* copy bandwidth: 1 GiB device to device, bytes read + written */
	size_t cb = (size_t)1 << 30;
	void *c0 = dalloc(cb), *c1 = dalloc(cb);
	float copy_us = time_us(st, [&] { CK(cudaMemcpyAsync(c1, c0, cb, cudaMemcpyDeviceToDevice, st)); });
	double copy_gbps = 2.0 * cb / (copy_us * 1e3);
	CK(cudaFree(c0));
	CK(cudaFree(c1));

	const int ranks[] = {16, 64};
	printf("{\n  \"card\": \"%s\",\n  \"sm\": \"%d.%d\",\n  \"sm_count\": %d,\n"
	       "  \"copy_GBps\": %.1f,\n  \"d\": %d,\n  \"results\": [\n", dev.name, dev.sm_major,
	       dev.sm_minor, dev.sm_count, copy_gbps, D);
	bool first = true;
	for (int r : ranks) {
		/* adapter pool: A [r, D] and Bt [r, D] per slot, bf16 */
		size_t ab = (size_t)r * D;
		bf16 *pool = (bf16 *)dalloc(2 * ab * N_POOL * sizeof(bf16));
		fill_kernel<<<1024, 256, 0, st>>>(pool, 2 * ab * N_POOL, 1234u + r, 1.f / 64.f);
		CK(cudaGetLastError());
		std::vector<kn_cuda_lora_desc> tab(N_POOL);
		std::vector<const bf16 *> a_ptr(N_POOL), b_ptr(N_POOL);
		for (int s = 0; s < N_POOL; s++) {
			memset(&tab[s], 0, sizeof tab[s]);
			a_ptr[s] = pool + 2 * ab * s;
			b_ptr[s] = pool + 2 * ab * s + ab;
			tab[s].a = a_ptr[s];
			tab[s].bt[0] = b_ptr[s];
			tab[s].rank[0] = r;
			tab[s].scale[0] = 2.f;
		}
		kn_cuda_lora_desc *tab_d = (kn_cuda_lora_desc *)dalloc(N_POOL * sizeof tab[0]);
		CK(cudaMemcpy(tab_d, tab.data(), N_POOL * sizeof tab[0], cudaMemcpyHostToDevice));
		const bf16 **a_ptr_d = (const bf16 **)dalloc(N_POOL * sizeof(void *));
		const bf16 **b_ptr_d = (const bf16 **)dalloc(N_POOL * sizeof(void *));
		CK(cudaMemcpy(a_ptr_d, a_ptr.data(), N_POOL * sizeof(void *), cudaMemcpyHostToDevice));
		CK(cudaMemcpy(b_ptr_d, b_ptr.data(), N_POOL * sizeof(void *), cudaMemcpyHostToDevice));
		kn_cuda_lora_group g = {tab_d, N_POOL, 1, D, 1, {D}, KN_CUDA_BF16};

		std::vector<int> batches = quick ? std::vector<int>{1, 32, 128}
						 : std::vector<int>{1, 4, 16, 32, 64, 128};
		batches.push_back(-512); /* prefill: 4 segments of 128 rows */
		for (int B : batches) {
			for (int mix = 0; mix < 4; mix++) {
				bool prefill = B < 0;
				int T = prefill ? -B : B;
				std::vector<int> slot_of_row;
				if (prefill) {
					std::vector<int> four = draw_slots(mix, 4);
					for (int i = 0; i < T; i++)
						slot_of_row.push_back(four[i / 128]);
				} else {
					slot_of_row = draw_slots(mix, T);
				}
				/* segments = runs of equal slots */
				std::vector<int32_t> seg_start{0}, seg_slot;
				for (int i = 0; i < T; i++)
					if (i == 0 || slot_of_row[i] != slot_of_row[i - 1]) {
						if (i)
							seg_start.push_back(i);
						seg_slot.push_back(slot_of_row[i]);
					}
				seg_start.push_back(T);
				int S = (int)seg_slot.size();
				int uniq = 0;
				{
					std::vector<int> u(slot_of_row);
					u.erase(std::unique(u.begin(), u.end()), u.end());
					uniq = (int)u.size();
				}
				size_t mb = kn_cuda_lora_meta_bytes(T, S);
				std::vector<char> mh(mb);
				int n_chunks = 0;
				LK(kn_cuda_lora_meta_pack(mh.data(), mb, seg_start.data(), seg_slot.data(), S,
							  &n_chunks));
				void *meta = dalloc(mb);
				CK(cudaMemcpy(meta, mh.data(), mb, cudaMemcpyHostToDevice));
				int ks = kn_cuda_lora_ksplit(D, n_chunks, dev.sm_count);
				bf16 *x = (bf16 *)dalloc((size_t)T * D * 2), *y = (bf16 *)dalloc((size_t)T * D * 2);
				bf16 *y2 = (bf16 *)dalloc((size_t)T * D * 2);
				fill_kernel<<<256, 256, 0, st>>>(x, (size_t)T * D, 99u, 1.f);
				CK(cudaMemsetAsync(y, 0, (size_t)T * D * 2, st));
				CK(cudaMemsetAsync(y2, 0, (size_t)T * D * 2, st));
				int r_stride = r;
				float *v = (float *)dalloc(kn_cuda_lora_v_bytes(T, r_stride, ks));
				bf16 *vb = (bf16 *)dalloc((size_t)T * r * 2);

				float sh_us = time_us(st, [&] {
					LK(kn_cuda_lora_shrink(v, T, r_stride, ks, x, D, &g, 0, meta, n_chunks, st));
				});
				float ex_us = time_us(st, [&] {
					LK(kn_cuda_lora_expand(y, KN_CUDA_BF16, D, v, T, r_stride, ks, &g, 0, meta,
							       n_chunks, st));
				});

				/* gather + strided batched GEMMs */
				bf16 *stackA = (bf16 *)dalloc((size_t)T * ab * 2), *stackB = (bf16 *)dalloc((size_t)T * ab * 2);
				int *slot_d = (int *)dalloc(T * sizeof(int));
				CK(cudaMemcpy(slot_d, slot_of_row.data(), T * sizeof(int), cudaMemcpyHostToDevice));
				float one = 1.f, zero = 0.f, two = 2.f;
				float gsh_us = time_us(st, [&] {
					gather_kernel<<<dim3(8, T), 256, 0, st>>>(stackA, a_ptr_d, slot_d, ab);
					/* v_t[1, r] = x_t[1, D] . A_t^T: column-major r x 1 = (A_t: D x r)^T x_t */
					BK(cublasGemmStridedBatchedEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, r, 1, D, &one,
								      stackA, CUDA_R_16BF, D, (long long)ab, x,
								      CUDA_R_16BF, D, D, &zero, vb, CUDA_R_16BF,
								      r, r, T, CUBLAS_COMPUTE_32F,
								      CUBLAS_GEMM_DEFAULT));
				});
				float gex_us = time_us(st, [&] {
					gather_kernel<<<dim3(8, T), 256, 0, st>>>(stackB, b_ptr_d, slot_d, ab);
					/* y_t[1, D] += 2 * v_t[1, r] . Bt_t[r, D]: column-major D x 1 = (Bt_t: D x r) x v_t */
					BK(cublasGemmStridedBatchedEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, D, 1, r, &two,
								      stackB, CUDA_R_16BF, D, (long long)ab, vb,
								      CUDA_R_16BF, r, r, &one, y2, CUDA_R_16BF, D,
								      D, T, CUBLAS_COMPUTE_32F,
								      CUBLAS_GEMM_DEFAULT));
				});

				/* grouped GEMM: one group per segment */
				std::vector<cublasOperation_t> opT(S, CUBLAS_OP_T), opN(S, CUBLAS_OP_N);
				std::vector<int> mR(S, r), mD(S, D), nM(S), kD(S, D), kR(S, r), gsz(S, 1);
				std::vector<int> ldD(S, D), ldR(S, r);
				std::vector<float> alpha1(S, 1.f), alpha2(S, 2.f), beta0(S, 0.f), beta1(S, 1.f);
				std::vector<const void *> ga(S), gx(S), gb(S), gv(S);
				std::vector<void *> gvo(S), gy(S);
				for (int s = 0; s < S; s++) {
					nM[s] = seg_start[s + 1] - seg_start[s];
					ga[s] = a_ptr[seg_slot[s]];
					gb[s] = b_ptr[seg_slot[s]];
					gx[s] = x + (size_t)seg_start[s] * D;
					gvo[s] = vb + (size_t)seg_start[s] * r;
					gv[s] = gvo[s];
					gy[s] = y2 + (size_t)seg_start[s] * D;
				}
				void **arr = (void **)dalloc(6 * S * sizeof(void *));
				CK(cudaMemcpy(arr, ga.data(), S * sizeof(void *), cudaMemcpyHostToDevice));
				CK(cudaMemcpy(arr + S, gx.data(), S * sizeof(void *), cudaMemcpyHostToDevice));
				CK(cudaMemcpy(arr + 2 * S, gvo.data(), S * sizeof(void *), cudaMemcpyHostToDevice));
				CK(cudaMemcpy(arr + 3 * S, gb.data(), S * sizeof(void *), cudaMemcpyHostToDevice));
				CK(cudaMemcpy(arr + 4 * S, gv.data(), S * sizeof(void *), cudaMemcpyHostToDevice));
				CK(cudaMemcpy(arr + 5 * S, gy.data(), S * sizeof(void *), cudaMemcpyHostToDevice));
				cublasStatus_t gst = CUBLAS_STATUS_SUCCESS;
				float grp_sh_us = time_us(st, [&] {
					cublasStatus_t s = cublasGemmGroupedBatchedEx(
						blas, opT.data(), opN.data(), mR.data(), nM.data(), kD.data(),
						alpha1.data(), (const void *const *)arr, CUDA_R_16BF, ldD.data(),
						(const void *const *)(arr + S), CUDA_R_16BF, ldD.data(),
						beta0.data(), arr + 2 * S, CUDA_R_16BF, ldR.data(), S, gsz.data(),
						CUBLAS_COMPUTE_32F);
					if (s != CUBLAS_STATUS_SUCCESS)
						gst = s;
				});
				float grp_ex_us = time_us(st, [&] {
					cublasStatus_t s = cublasGemmGroupedBatchedEx(
						blas, opN.data(), opN.data(), mD.data(), nM.data(), kR.data(),
						alpha2.data(), (const void *const *)(arr + 3 * S), CUDA_R_16BF,
						ldD.data(), (const void *const *)(arr + 4 * S), CUDA_R_16BF,
						ldR.data(), beta1.data(), arr + 5 * S, CUDA_R_16BF, ldD.data(), S,
						gsz.data(), CUBLAS_COMPUTE_32F);
					if (s != CUBLAS_STATUS_SUCCESS)
						gst = s;
				});
				CK(cudaStreamSynchronize(st));

				/* cross-check once: sgmv vs the gather path from zeroed outputs */
				CK(cudaMemsetAsync(y, 0, (size_t)T * D * 2, st));
				CK(cudaMemsetAsync(y2, 0, (size_t)T * D * 2, st));
				LK(kn_cuda_lora_shrink(v, T, r_stride, ks, x, D, &g, 0, meta, n_chunks, st));
				LK(kn_cuda_lora_expand(y, KN_CUDA_BF16, D, v, T, r_stride, ks, &g, 0, meta,
						       n_chunks, st));
				gather_kernel<<<dim3(8, T), 256, 0, st>>>(stackA, a_ptr_d, slot_d, ab);
				gather_kernel<<<dim3(8, T), 256, 0, st>>>(stackB, b_ptr_d, slot_d, ab);
				BK(cublasGemmStridedBatchedEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, r, 1, D, &one, stackA,
							      CUDA_R_16BF, D, (long long)ab, x, CUDA_R_16BF, D,
							      D, &zero, vb, CUDA_R_16BF, r, r, T,
							      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
				BK(cublasGemmStridedBatchedEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, D, 1, r, &two, stackB,
							      CUDA_R_16BF, D, (long long)ab, vb, CUDA_R_16BF,
							      r, r, &one, y2, CUDA_R_16BF, D, D, T,
							      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
				std::vector<bf16> h1((size_t)T * D), h2((size_t)T * D);
				CK(cudaMemcpyAsync(h1.data(), y, h1.size() * 2, cudaMemcpyDeviceToHost, st));
				CK(cudaMemcpyAsync(h2.data(), y2, h2.size() * 2, cudaMemcpyDeviceToHost, st));
				CK(cudaStreamSynchronize(st));
				double maxdiff = 0, maxabs = 0;
				for (size_t i = 0; i < h1.size(); i++) {
					double a = __bfloat162float(h1[i]), b = __bfloat162float(h2[i]);
					maxdiff = std::max(maxdiff, fabs(a - b));
					maxabs = std::max(maxabs, fabs(b));
				}

				/* bytes: unique adapters + x read + y read and written (+ v) */
				double shrink_bytes = (double)uniq * ab * 2 + (double)T * D * 2 + (double)T * r * 4 * ks;
				double expand_bytes = (double)uniq * ab * 2 + (double)T * D * 4 + (double)T * r * 4 * ks;
				struct {
					const char *op, *method;
					float us;
					double bytes;
				} rows[] = {
					{"shrink", "sgmv", sh_us, shrink_bytes},
					{"expand", "sgmv", ex_us, expand_bytes},
					{"shrink", "gather_bmm", gsh_us, shrink_bytes},
					{"expand", "gather_bmm", gex_us, expand_bytes},
					{"shrink", "cublas_grouped", grp_sh_us, shrink_bytes},
					{"expand", "cublas_grouped", grp_ex_us, expand_bytes},
				};
				for (auto &row : rows) {
					bool grouped_failed = gst != CUBLAS_STATUS_SUCCESS &&
							      !strcmp(row.method, "cublas_grouped");
					printf("%s    {\"op\": \"%s\", \"method\": \"%s\", \"rank\": %d, "
					       "\"rows\": %d, \"shape\": \"%s\", \"mix\": \"%s\", "
					       "\"segments\": %d, \"unique_adapters\": %d, \"ksplit\": %d, "
					       "\"us\": %.2f, \"GBps\": %.1f, \"frac_of_copy_bw\": %.3f%s",
					       first ? "" : ",\n", row.op, row.method, r, T,
					       prefill ? "prefill" : "decode", mix_names[mix], S, uniq, ks,
					       (double)row.us, row.bytes / (row.us * 1e3),
					       row.bytes / (row.us * 1e3) / copy_gbps,
					       grouped_failed ? ", \"error\": \"cublas status\"" : "");
					if (!strcmp(row.method, "sgmv") && !strcmp(row.op, "expand"))
						printf(", \"max_abs_diff_vs_gather\": %.4g, \"max_abs_out\": %.4g",
						       maxdiff, maxabs);
					printf("}");
					first = false;
				}
				fflush(stdout);
				CK(cudaFree(meta));
				CK(cudaFree(x));
				CK(cudaFree(y));
				CK(cudaFree(y2));
				CK(cudaFree(v));
				CK(cudaFree(vb));
				CK(cudaFree(stackA));
				CK(cudaFree(stackB));
				CK(cudaFree(slot_d));
				CK(cudaFree(arr));
			}
		}
		CK(cudaFree(pool));
		CK(cudaFree(tab_d));
		CK(cudaFree((void *)a_ptr_d));
		CK(cudaFree((void *)b_ptr_d));
	}
	printf("\n  ]\n}\n");
	cublasDestroy(blas);
	kn_cuda_ctx_destroy(ctx);
	return 0;
}
