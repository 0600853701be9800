/*
 * bench/engine/loom_gemm_bench.c — loom-gemm-bench: the CPU linear layer,
 * OpenBLAS (kn_gemm: sgemv for M = 1, sgemm otherwise, float32 weights)
 * against kn_gemm_p (packed, fixed-order, F32/BF16/F16 weights, every ISA
 * path this CPU runs), at decode and prefill shapes of the CPU-speed issue's model
 * (hidden 768, FFN 2048) and of a 1-2B model (2048 x 2048, 8192 x 2048).
 *
 * Each (shape, variant) is timed as the median of --reps calls after
 * warm-up; the variants of a shape run interleaved round by round so a busy
 * machine hits them alike. Prints one line per variant (ms, GB/s of weight
 * bytes, GFLOP/s, ratio to OpenBLAS at the same thread count) and, with
 * --json FILE, writes them. --threads N: the pool size (and OpenBLAS's).
 */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"

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
	int blas;  /* 1: kn_gemm (OpenBLAS, f32) */
	kn_wdt dt;
	kn_isa isa;
	double *t; /* [reps] */
} variant;

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
	kn_pool *pool = NULL;
	if (kn_pool_create(threads, &pool))
		return 1;
	static const int shapes[][3] = {
		{1, 2048, 768}, {16, 2048, 768}, {1, 768, 2048}, {16, 768, 2048}, {64, 2048, 768},
		{1, 2048, 2048}, {1, 8192, 2048}, {4, 8192, 2048}, {256, 2048, 2048},
	};
	variant v[16];
	int nv = 0;
	v[nv++] = (variant){"openblas-f32", 1, KN_W_F32, KN_ISA_PORTABLE, NULL};
	static const char *const dn[] = {"f32", "bf16", "f16"};
	static char names[16][32];
	for (int isa = (int)kn_isa_detect(); isa >= 1; isa--)
		for (int dt = 0; dt < 3; dt++) {
			snprintf(names[nv], sizeof names[nv], "%s-%s", kn_isa_name((kn_isa)isa), dn[dt]);
			v[nv] = (variant){names[nv], 0, (kn_wdt)dt, (kn_isa)isa, NULL};
			nv++;
		}
	FILE *jf = json ? fopen(json, "w") : NULL;
	if (jf)
		fprintf(jf, "{\"threads\": %d, \"isa\": \"%s\", \"results\": [", threads,
			kn_isa_name(kn_isa_detect()));
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
		for (int r = -3; r < reps; r++) {
			for (int i = 0; i < nv; i++) {
				const void *w = v[i].dt == KN_W_F32 ? p32 : p16;
				double t0 = now_ms();
				if (v[i].blas) {
					kn_gemm(y, x, w32, M, N, K, 0);
				} else {
					kn_isa_set(v[i].isa);
					kn_gemm_p(y, x, w, v[i].dt, M, N, K, 0, pool);
				}
				double dt = now_ms() - t0;
				if (r >= 0)
					v[i].t[r] = dt;
			}
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
					"\"speedup_vs_openblas\": %.3f}", first ? "" : ", ", M, N, K,
					v[i].name, ms, bytes / (ms * 1e6), gflops, base / ms);
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
	return 0;
}
