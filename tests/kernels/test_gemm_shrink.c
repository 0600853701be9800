/*
 * tests/kernels/test_gemm_shrink.c — kn_gemm_shrink (the base linear layers
 * of a LoRA group and the group's shrink in one pool run, each GEMM task
 * prefetching and computing a share of the shrink rows) gives, to the bit,
 * what kn_gemm_p for each layer and then kn_lora_shrink give: for every ISA
 * path this CPU runs, F32 and BF16 weights and adapters, one and two
 * threads, row counts below, at and above a tile (1, 7, 40), more shrink
 * rows than GEMM tasks and fewer, prefill segments (many rows on one A)
 * beside decode rows and base-only segments, and accumulating layers.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/dtype.h"

#include "kernels/kernels.h"

static uint64_t rng = 0x243f6a8885a308d3ULL;

static float rnd(void)
{
	rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((double)(rng >> 11) / 4503599627370496.0 - 1.0);
}

static float *rand_vec(size_t n)
{
	float *v = malloc((n ? n : 1) * sizeof *v);
	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		v[i] = rnd();
	return v;
}

#define NOPS 3

/* One case: T rows in segments of rows[] (rank 0: base-only), three
 * layers of widths N[] over K inputs, the last accumulating. */
static void run(int T, const int *rows, const int *ranks, int n_segs, const int *N, int K,
		kn_wdt dt, int bf16_ad, kn_pool *pool)
{
	float *x = rand_vec((size_t)T * K);
	void *wp[NOPS];
	float *y1[NOPS], *y2[NOPS];
	kn_gemm_op ops[NOPS];
	for (int i = 0; i < NOPS; i++) {
		float *w = rand_vec((size_t)N[i] * K);
		assert_non_null(wp[i] = malloc(kn_pack_bytes(dt, N[i], K)));
		assert_int_equal(kn_pack(wp[i], dt, w, KN_W_F32, N[i], K), 0);
		free(w);
		y1[i] = rand_vec((size_t)T * N[i]);
		assert_non_null(y2[i] = malloc((size_t)T * N[i] * sizeof(float)));
		memcpy(y2[i], y1[i], (size_t)T * N[i] * sizeof(float));
		ops[i] = (kn_gemm_op){.y = y2[i], .x = x, .wp = wp[i], .dt = dt, .M = T,
				      .N = N[i], .K = K, .accumulate = i == NOPS - 1};
	}
	kn_lora_seg segs[8];
	float *a[8] = {0};
	uint16_t *a16[8] = {0};
	int ldv = 0, row0 = 0;
	for (int s = 0; s < n_segs; s++) {
		int r = ranks[s];
		ldv = r > ldv ? r : ldv;
		segs[s] = (kn_lora_seg){.row0 = row0, .rows = rows[s], .rank = r};
		row0 += rows[s];
		if (r == 0)
			continue;
		a[s] = rand_vec((size_t)r * K);
		if (bf16_ad) {
			assert_non_null(a16[s] = malloc((size_t)r * K * sizeof *a16[s]));
			for (size_t i = 0; i < (size_t)r * K; i++)
				a16[s][i] = loom_f32_to_bf16(a[s][i]);
			segs[s].a16 = a16[s];
		} else {
			segs[s].a = a[s];
		}
	}
	assert_int_equal(row0, T);
	float *v1 = malloc((size_t)T * ldv * sizeof *v1), *v2 = malloc((size_t)T * ldv * sizeof *v2);
	assert_true(v1 && v2);
	for (size_t i = 0; i < (size_t)T * ldv; i++)
		v1[i] = v2[i] = NAN;

	for (int i = 0; i < NOPS; i++)
		kn_gemm_p(y1[i], x, wp[i], dt, T, N[i], K, i == NOPS - 1, pool);
	kn_lora_shrink(v1, ldv, x, K, segs, n_segs, pool);
	kn_gemm_shrink(ops, NOPS, v2, ldv, x, K, segs, n_segs, pool);

	for (int i = 0; i < NOPS; i++)
		assert_memory_equal(y1[i], y2[i], (size_t)T * N[i] * sizeof(float));
	assert_memory_equal(v1, v2, (size_t)T * ldv * sizeof *v1);
	for (int i = 0; i < NOPS; i++) {
		free(wp[i]);
		free(y1[i]);
		free(y2[i]);
	}
	for (int s = 0; s < n_segs; s++) {
		free(a[s]);
		free(a16[s]);
	}
	free(x);
	free(v1);
	free(v2);
}

static void test_bits(void **state)
{
	(void)state;
	kn_pool *two = NULL;
	assert_int_equal(kn_pool_create(2, &two), 0);
	/* decode rows over distinct adapters, a base segment, a prefill segment */
	static const int rows_a[] = {1, 1, 1, 1, 1, 1, 1}, ranks_a[] = {16, 8, 0, 48, 1, 5, 16};
	static const int rows_b[] = {33, 1, 5, 1}, ranks_b[] = {24, 0, 7, 16};
	static const int rows_c[] = {1}, ranks_c[] = {48};
	static const int wide[NOPS] = {200, 72, 72}, narrow[NOPS] = {17, 40, 9};
	for (int isa = (int)kn_isa_detect(); isa >= 0; isa--) {
		assert_int_equal(kn_isa_set((kn_isa)isa), 0);
		for (int p = 0; p < 2; p++) {
			kn_pool *pool = p ? two : NULL;
			for (int bf = 0; bf < 2; bf++) {
				kn_wdt dt = bf ? KN_W_BF16 : KN_W_F32;
				run(7, rows_a, ranks_a, 7, wide, 96, dt, bf, pool);   /* items ~ tasks */
				run(7, rows_a, ranks_a, 7, narrow, 130, dt, bf, pool); /* items > tasks */
				run(40, rows_b, ranks_b, 4, wide, 64, dt, bf, pool);
				run(1, rows_c, ranks_c, 1, wide, 768, dt, bf, pool); /* tasks > items */
			}
		}
	}
	assert_int_equal(kn_isa_set(kn_isa_detect()), 0);
	kn_pool_destroy(two);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bits),
	};
	return cmocka_run_group_tests_name("kernels/gemm_shrink", tests, NULL, NULL);
}
