/*
 * bench/engine/loom_gemm_bench.c — loom-gemm-bench: the CPU linear layer,
 * OpenBLAS (kn_gemm: sgemv for M = 1, sgemm otherwise, float32 weights)
 * against kn_gemm_p (packed, fixed-order, F32/BF16/F16 weights, every ISA
 * path this CPU runs), at decode and prefill shapes of the CPU-speed issue's model
 * (hidden 768, FFN 2048) and of a 1-2B model (2048 x 2048, 8192 x 2048).
 *
 * Each (shape, variant) is timed as the median of --reps consecutive
 * calls after 3 warm-up calls, each call on its own copy of the weights,
 * and FLUSH_BYTES (more than this VM's 480 MiB of L3) written between the
 * copying and the calls: at decode a model's weights come from memory, not
 * from cache; each library's threads (loom's pool,
 * OpenBLAS's, oneDNN's OpenMP team) stay awake through its own calls and
 * have gone idle before the next variant's (interleaving them call by call
 * had each one's spinning threads take the cores from the next). Prints one line per variant (ms, GB/s of weight
 * bytes, GFLOP/s, ratio to OpenBLAS at the same thread count) and, with
 * --json FILE, writes them. --threads N: the pool size (and OpenBLAS's).
 *
 * Built where Debian's libdnnl-dev is installed, it also times oneDNN's
 * matmul (dnnl/gemm_dnnl.c) with float32 and with BF16 weights, and
 * checks for each what loom's kernels guarantee: the first row's bits
 * with the same row alone (M = 1) — batch invariance — and the largest
 * difference from kn_gemm_p's float32 result relative to its largest
 * magnitude.
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bn_report.h"
#include "kernels/kernels.h"
#ifdef LOOM_HAVE_DNNL
#include "dnnl/gemm_dnnl.h"
#endif

#define FLUSH_BYTES ((size_t)768 << 20)

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

typedef struct variant {
	const char *name;
	int blas;  /* 1: kn_gemm (OpenBLAS, f32); 2: oneDNN f32, 3: oneDNN BF16 */
	void *dnnl; /* gd_mm of the current shape */
	double err; /* oneDNN: max |diff| / max |y| against kn_gemm_p f32 */
	int inv;    /* oneDNN: row 0 bit-equal computed alone (1) or not (0) */
	kn_wdt dt;
	kn_isa isa;
	double *t; /* [reps] */
} variant;

#ifdef LOOM_HAVE_DNNL
/* Prints how the oneDNN variants' results for this shape compare with
 * kn_gemm_p's float32 one: the largest |difference| over the largest
 * |value|, and whether the first row is bit-equal to the same row computed
 * alone (M = 1). */
static int dnnl_check(variant *v, int nv, int M, int N, int K, const float *w32,
			const float *x, const void *p32, kn_pool *pool, int threads)
{
	float *ref = malloc(sizeof(float) * M * N), *y = malloc(sizeof(float) * M * N);
	float *y1 = malloc(sizeof(float) * N);
	int rc = -1;
	if (!ref || !y || !y1)
		goto out;
	kn_isa_set(kn_isa_detect());
	kn_gemm_p(ref, x, p32, KN_W_F32, M, N, K, 0, pool);
	double top = 0;
	for (size_t i = 0; i < (size_t)M * N; i++)
		top = fabs(ref[i]) > top ? fabs(ref[i]) : top;
	for (int i = 0; i < nv; i++) {
		if (v[i].blas < 2)
			continue;
		gd_mm *all = NULL, *one = NULL;
		int bad = gd_create(&all, M, N, K, v[i].blas == 3, w32, 1, threads) ||
			  gd_create(&one, 1, N, K, v[i].blas == 3, w32, 1, threads) ||
			  gd_run(all, 0, x, y) || gd_run(one, 0, x, y1);
		gd_destroy(all);
		gd_destroy(one);
		if (bad)
			goto out;
		double err = 0;
		for (size_t e = 0; e < (size_t)M * N; e++)
			err = fabs(y[e] - ref[e]) > err ? fabs(y[e] - ref[e]) : err;
		v[i].err = err / top;
		v[i].inv = !memcmp(y, y1, sizeof(float) * N);
		printf("M=%-4d N=%-5d K=%-5d %-14s max |diff| / max |y| vs loom f32: %.1e; row 0 "
		       "%s with M = 1\n", M, N, K, v[i].name, v[i].err,
		       v[i].inv ? "bit-equal" : "DIFFERS");
	}
	rc = 0;
out:
	free(ref), free(y), free(y1);
	return rc;
}
#endif

int main(int argc, char **argv)
{
	int threads = 1, reps = 30;
	const char *json = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			threads = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
			reps = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--json") && i + 1 < argc)
			json = argv[++i];
		else {
			fprintf(stderr, "usage: loom-gemm-bench [--threads N] [--reps N] [--json FILE]\n");
			return 2;
		}
	}
	if (threads < 1 || reps < 3)
		return 2;
	openblas_set_num_threads(threads);
	char *flush = malloc(FLUSH_BYTES);
	if (!flush)
		return 1;
	kn_pool *pool = NULL;
	if (kn_pool_create(threads, &pool))
		return 1;
	static const int shapes[][3] = {
		{1, 2048, 768}, {16, 2048, 768}, {1, 768, 2048}, {16, 768, 2048}, {64, 2048, 768},
		{1, 2048, 2048}, {1, 8192, 2048}, {4, 8192, 2048}, {256, 2048, 2048},
	};
	variant v[16];
	int nv = 0;
	v[nv++] = (variant){.name = "openblas-f32", .blas = 1, .dt = KN_W_F32};
#ifdef LOOM_HAVE_DNNL
	printf("oneDNN variants: %s\n", gd_version());
	v[nv++] = (variant){.name = "onednn-f32", .blas = 2, .dt = KN_W_F32};
	v[nv++] = (variant){.name = "onednn-bf16", .blas = 3, .dt = KN_W_BF16};
#endif
	static const char *const dn[] = {"f32", "bf16", "f16"};
	static char names[16][32];
	for (int isa = (int)kn_isa_detect(); isa >= 1; isa--)
		for (int dt = 0; dt < 3; dt++) {
			snprintf(names[nv], sizeof names[nv], "%s-%s", kn_isa_name((kn_isa)isa), dn[dt]);
			v[nv] = (variant){.name = names[nv], .dt = (kn_wdt)dt, .isa = (kn_isa)isa};
			nv++;
		}
	FILE *jf = json ? fopen(json, "w") : NULL;
	char cpu[256];
	bn_cpu_model(cpu, sizeof cpu);
	printf("loom-gemm-bench: %s, %d thread(s)\n", cpu, threads);
	if (jf)
		fprintf(jf, "{\"cpu_model\": \"%s\", \"threads\": %d, \"isa\": \"%s\", "
			"\"results\": [", cpu, threads, kn_isa_name(kn_isa_detect()));
	int first = 1;
	for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
		int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
		size_t nw = (size_t)N * K;
		float *x = malloc(sizeof(float) * M * K), *y = malloc(sizeof(float) * M * N);
		float *w32 = malloc(sizeof(float) * nw);
		uint16_t *w16 = malloc(2 * nw);
		void *p32 = malloc(kn_pack_bytes(KN_W_F32, N, K)), *p16 = malloc(kn_pack_bytes(KN_W_BF16, N, K));
		for (size_t i = 0; i < (size_t)M * K; i++)
			x[i] = (float)rand() / RAND_MAX - 0.5f;
		for (size_t i = 0; i < nw; i++) {
			w32[i] = (float)rand() / RAND_MAX - 0.5f;
			w16[i] = (uint16_t)(0x3c00 ^ (rand() & 0x83ff)); /* valid halves and bf16s */
		}
		kn_pack(p32, KN_W_F32, w32, KN_W_F32, N, K);
		kn_pack(p16, KN_W_BF16, w16, KN_W_BF16, N, K); /* same bits serve F16 */
		for (int i = 0; i < nv; i++)
			v[i].t = calloc((size_t)reps, sizeof(double));
#ifdef LOOM_HAVE_DNNL
		if (dnnl_check(v, nv, M, N, K, w32, x, p32, pool, threads))
			return 1;
#endif
		for (int i = 0; i < nv; i++) {
			/* a copy of the weights per call, none in cache when timing starts */
			size_t wb = v[i].blas == 1 ? 4 * nw : kn_pack_bytes(v[i].dt, N, K);
			int nc = reps + 3;
			char *cp = NULL;
			if (v[i].blas >= 2) {
#ifdef LOOM_HAVE_DNNL
				if (gd_create((gd_mm **)&v[i].dnnl, M, N, K, v[i].blas == 3, w32, nc,
					      threads))
					return 1;
#endif
			} else if (!(cp = malloc(wb * (size_t)nc))) {
				return 1;
			} else {
				const void *src = v[i].blas == 1 ? (const void *)w32
						  : v[i].dt == KN_W_F32 ? p32 : p16;
				for (int c = 0; c < nc; c++)
					memcpy(cp + wb * (size_t)c, src, wb);
			}
			memset(flush, i, FLUSH_BYTES);
			for (int r = -3; r < reps; r++) {
				int c = r + 3;
				const void *w = cp ? cp + wb * (size_t)c : NULL;
				double t0 = now_ms();
				if (v[i].blas == 1) {
					kn_gemm(y, x, w, M, N, K, 0);
#ifdef LOOM_HAVE_DNNL
				} else if (v[i].blas) {
					gd_run(v[i].dnnl, c, x, y);
#endif
				} else {
					kn_isa_set(v[i].isa);
					kn_gemm_p(y, x, w, v[i].dt, M, N, K, 0, pool);
				}
				double dt = now_ms() - t0;
				if (r >= 0)
					v[i].t[r] = dt;
			}
			free(cp);
#ifdef LOOM_HAVE_DNNL
			gd_destroy(v[i].dnnl);
			v[i].dnnl = NULL;
#endif
		}
		double base = 0;
		for (int i = 0; i < nv; i++) {
			qsort(v[i].t, (size_t)reps, sizeof(double), cmp);
			double ms = v[i].t[reps / 2];
			double bytes = (double)nw * (v[i].dt == KN_W_F32 ? 4 : 2);
			double gflops = 2.0 * M * N * K / (ms * 1e6);
			if (i == 0)
				base = ms;
			printf("M=%-4d N=%-5d K=%-5d %-14s %8.3f ms %7.1f GB/s %7.1f GFLOP/s  x%.2f vs "
			       "openblas\n", M, N, K, v[i].name, ms, bytes / (ms * 1e6), gflops,
			       base / ms);
			if (jf)
				fprintf(jf, "%s{\"M\": %d, \"N\": %d, \"K\": %d, \"variant\": \"%s\", "
					"\"ms\": %.4f, \"gbps\": %.2f, \"gflops\": %.2f, "
					"\"speedup_vs_openblas\": %.3f", first ? "" : ", ", M, N, K,
					v[i].name, ms, bytes / (ms * 1e6), gflops, base / ms);
			if (jf && v[i].blas >= 2)
				fprintf(jf, ", \"rel_diff_vs_loom_f32\": %.2e, \"row0_equal_alone\": %s",
					v[i].err, v[i].inv ? "true" : "false");
			if (jf)
				fputc('}', jf);
			first = 0;
			free(v[i].t);
		}
		free(x), free(y), free(w32), free(w16), free(p32), free(p16);
	}
	if (jf) {
		fprintf(jf, "]}\n");
		fclose(jf);
	}
	kn_isa_set(kn_isa_detect());
	kn_pool_destroy(pool);
	free(flush);
	return 0;
}
