/*
 * tests/kernels/test_lora_ops.c — segmented LoRA shrink/expand against naive
 * float64 loops.
 *
 * Each case lays out segments of awkward row counts (1, 3, 7, 133 rows in
 * all; segments of 1 row for the decode loops and >= 16 rows for the sgemm
 * path) over adapters of mixed ranks (1..64), picked per segment by a mix:
 * distinct (one adapter per segment), uniform and zipf (drawn from a pool),
 * identical (all one adapter), with base-model segments (rank 0) between
 * them. Shrink output v is poisoned with NaN first: every cell a segment
 * owns must come back equal to the reference, every other cell must still
 * be NaN. Expand accumulates into a random y: rows of base segments must
 * keep their exact bits. Error bound per element: |got - want| <=
 * 1e-5 * sum |terms| (float32 summation of random signs).
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

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static double rnd(void) /* uniform in [-1, 1) */
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(rng_state >> 11) / 4503599627370496.0 - 1.0;
}

static float *rand_vec(size_t n)
{
	float *v = malloc((n ? n : 1) * sizeof *v);
	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		v[i] = (float)rnd();
	return v;
}

static float *nan_vec(size_t n)
{
	float *v = malloc((n ? n : 1) * sizeof *v);
	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		v[i] = NAN;
	return v;
}

enum mix { DISTINCT, UNIFORM, ZIPF, IDENTICAL };
static const char *const mix_name[] = {"distinct", "uniform", "zipf", "identical"};

#define MAXS 12

typedef struct lcase {
	const char *name;
	int d_in, d_out;
	int n_segs;
	int rows[MAXS];  /* rows per segment */
	int base[MAXS];  /* 1: base-model segment (no adapter) */
	int ranks[MAXS]; /* pool of adapter ranks; adapter i has rank ranks[i] */
	int n_pool;
} lcase;

/* One adapter of the pool: A [r, d_in], Bt [r, d_out]. */
typedef struct pool_ad {
	int r;
	float scale;
	float *a, *bt;
} pool_ad;

/* Which pool adapter segment s uses under mix m. */
static int pick(int m, int s, int n_pool)
{
	switch (m) {
	case DISTINCT:
		return s % n_pool;
	case IDENTICAL:
		return 0;
	case UNIFORM:
		return (int)((rnd() + 1.0) * 0.5 * n_pool) % n_pool;
	default: { /* zipf, exponent 1.5 */
		double w[MAXS], tot = 0;
		for (int k = 0; k < n_pool; k++)
			tot += (w[k] = pow(k + 1.0, -1.5));
		double u = (rnd() + 1.0) * 0.5 * tot;
		for (int k = 0; k < n_pool; k++)
			if ((u -= w[k]) < 0)
				return k;
		return n_pool - 1;
	}
	}
}

/* |got - want| <= 1e-5 * sumabs + 1e-30; NaN fails. */
static void check_cell(const char *what, const char *cs, int row, int col, float got,
		       double want, double sumabs)
{
	double e = fabs((double)got - want);
	if (!(e <= 1e-5 * sumabs + 1e-30)) {
		print_error("%s (%s): row %d col %d: got %.9g want %.9g (|terms| %.3g)\n", what,
			    cs, row, col, (double)got, want, sumabs);
		fail();
	}
}

static void run_case(const lcase *c, int m)
{
	char cs[96];
	snprintf(cs, sizeof cs, "%s/%s", c->name, mix_name[m]);
	int T = 0;
	for (int s = 0; s < c->n_segs; s++)
		T += c->rows[s];
	pool_ad pool[MAXS];
	int maxr = 1;
	for (int p = 0; p < c->n_pool; p++) {
		pool[p].r = c->ranks[p];
		pool[p].scale = (float)(2.0 / c->ranks[p]);
		pool[p].a = rand_vec((size_t)c->ranks[p] * c->d_in);
		pool[p].bt = rand_vec((size_t)c->ranks[p] * c->d_out);
		if (c->ranks[p] > maxr)
			maxr = c->ranks[p];
	}
	int ldv = maxr + 3; /* strided, with a column offset per row below */
	kn_lora_seg segs[MAXS];
	int n = 0, row = 0;
	int *owner = calloc((size_t)T + 1, sizeof *owner); /* pool index per row, -1 base */
	assert_non_null(owner);
	for (int s = 0; s < c->n_segs; s++) {
		int p = pick(m, s, c->n_pool);
		for (int i = 0; i < c->rows[s]; i++)
			owner[row + i] = c->base[s] ? -1 : p;
		if (!c->base[s])
			segs[n++] = (kn_lora_seg){.row0 = row, .rows = c->rows[s], .rank = pool[p].r,
						  .vcol = 2, .scale = pool[p].scale,
						  .a = pool[p].a, .bt = pool[p].bt};
		row += c->rows[s];
	}
	/* vcol + rank must fit ldv: vcol 2 works for every rank <= maxr + 1 */
	float *x = rand_vec((size_t)T * c->d_in);
	float *v = nan_vec((size_t)T * ldv);
	float *y = rand_vec((size_t)T * c->d_out);
	float *y0 = malloc(((size_t)T * c->d_out + 1) * sizeof *y0);
	assert_non_null(y0);
	memcpy(y0, y, (size_t)T * c->d_out * sizeof *y0);

	kn_lora_shrink(v, ldv, x, c->d_in, segs, n, NULL);
	for (int t = 0; t < T; t++) {
		int p = owner[t];
		for (int j = 0; j < ldv; j++) {
			float got = v[(size_t)t * ldv + j];
			int mine = p >= 0 && j >= 2 && j < 2 + pool[p].r;
			if (!mine) {
				if (!isnan(got)) {
					print_error("shrink (%s): row %d col %d outside every segment "
						    "was written (%g)\n", cs, t, j, (double)got);
					fail();
				}
				continue;
			}
			const float *a = pool[p].a + (size_t)(j - 2) * c->d_in;
			const float *xr = x + (size_t)t * c->d_in;
			double want = 0, sa = 0;
			for (int k = 0; k < c->d_in; k++) {
				want += (double)xr[k] * a[k];
				sa += fabs((double)xr[k] * a[k]);
			}
			check_cell("shrink", cs, t, j, got, want, sa);
		}
	}

	kn_lora_expand(y, c->d_out, v, ldv, segs, n, NULL);
	for (int t = 0; t < T; t++) {
		int p = owner[t];
		for (int o = 0; o < c->d_out; o++) {
			float got = y[(size_t)t * c->d_out + o];
			float before = y0[(size_t)t * c->d_out + o];
			if (p < 0) {
				if (memcmp(&got, &before, sizeof got) != 0) {
					print_error("expand (%s): base row %d col %d changed\n", cs, t, o);
					fail();
				}
				continue;
			}
			double want = before, sa = fabs((double)before);
			for (int j = 0; j < pool[p].r; j++) {
				double term = (double)pool[p].scale * v[(size_t)t * ldv + 2 + j] *
					      pool[p].bt[(size_t)j * c->d_out + o];
				want += term;
				sa += fabs(term);
			}
			check_cell("expand", cs, t, o, got, want, sa);
		}
	}
	for (int p = 0; p < c->n_pool; p++) {
		free(pool[p].a);
		free(pool[p].bt);
	}
	free(owner);
	free(x);
	free(v);
	free(y);
	free(y0);
}

static const lcase cases[] = {
	{"1 row r1", 64, 64, 1, {1}, {0}, {1}, 1},
	{"1 row r64 odd dims", 67, 131, 1, {1}, {0}, {64}, 1},
	{"3 rows decode", 128, 96, 3, {1, 1, 1}, {0}, {8, 3, 16}, 3},
	{"3 rows base between", 128, 80, 3, {1, 1, 1}, {0, 1, 0}, {5, 12}, 2},
	{"7 rows mixed", 97, 33, 5, {1, 2, 1, 1, 2}, {0, 0, 1, 0, 0}, {1, 4, 7, 64, 13}, 5},
	{"133 rows prefill+decode", 256, 200, 8,
	 {1, 17, 1, 64, 1, 1, 40, 8}, {0, 0, 0, 0, 1, 0, 0, 0},
	 {16, 64, 1, 8, 12, 3, 33, 4}, 8},
	{"133 rows one segment", 160, 48, 1, {133}, {0}, {24}, 1},
	{"wide tails", 2049, 17, 3, {1, 1, 1}, {0}, {5, 1, 64}, 3},
	{"narrow out", 768, 3, 3, {1, 15, 16}, {0}, {16, 2, 9}, 3},
};

static void test_mixes(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		for (int m = DISTINCT; m <= IDENTICAL; m++)
			run_case(&cases[i], m);
}

/* A packed A [r_q+r_k+r_v, d] as one descriptor must give the same bits as
 * three descriptors at vcol 0, r_q, r_q+r_k (the forward fuses q/k/v). */
static void test_packed_equals_split(void **state)
{
	(void)state;
	const int d = 200, rq = 7, rk = 16, rv = 1, R = rq + rk + rv;
	for (int rows = 1; rows <= 20; rows += 19) {
		float *a = rand_vec((size_t)R * d), *x = rand_vec((size_t)rows * d);
		float *v1 = nan_vec((size_t)rows * R), *v2 = nan_vec((size_t)rows * R);
		kn_lora_seg fused = {.row0 = 0, .rows = rows, .rank = R, .vcol = 0, .a = a};
		kn_lora_seg split[3] = {
			{.row0 = 0, .rows = rows, .rank = rq, .vcol = 0, .a = a},
			{.row0 = 0, .rows = rows, .rank = rk, .vcol = rq, .a = a + (size_t)rq * d},
			{.row0 = 0, .rows = rows, .rank = rv, .vcol = rq + rk,
			 .a = a + (size_t)(rq + rk) * d},
		};
		kn_lora_shrink(v1, R, x, d, &fused, 1, NULL);
		kn_lora_shrink(v2, R, x, d, split, 3, NULL);
		if (rows < 16) /* the loops; sgemm blocks by N, so only close there */
			assert_memory_equal(v1, v2, (size_t)rows * R * sizeof *v1);
		for (size_t i = 0; i < (size_t)rows * R; i++)
			assert_true(fabsf(v1[i] - v2[i]) <= 1e-4f * (1.0f + fabsf(v1[i])));
		free(a);
		free(x);
		free(v1);
		free(v2);
	}
}

/* A row's result does not depend on the other segments (same path). */
static void test_row_independent(void **state)
{
	(void)state;
	const int d = 320, N = 96, r = 16, T = 9;
	float *a = rand_vec((size_t)r * d), *bt = rand_vec((size_t)r * N);
	float *x = rand_vec((size_t)T * d), *v = nan_vec((size_t)T * r);
	float *y = calloc((size_t)T * N, sizeof *y), *v1 = nan_vec(r), *y1 = calloc(N, sizeof *y1);
	assert_true(y && y1);
	kn_lora_seg all = {.row0 = 0, .rows = T, .rank = r, .scale = 0.5f, .a = a, .bt = bt};
	kn_lora_shrink(v, r, x, d, &all, 1, NULL);
	kn_lora_expand(y, N, v, r, &all, 1, NULL);
	for (int t = 0; t < T; t++) {
		kn_lora_seg one = {.row0 = 0, .rows = 1, .rank = r, .scale = 0.5f, .a = a, .bt = bt};
		memset(y1, 0, N * sizeof *y1);
		kn_lora_shrink(v1, r, x + (size_t)t * d, d, &one, 1, NULL);
		kn_lora_expand(y1, N, v1, r, &one, 1, NULL);
		assert_memory_equal(v1, v + (size_t)t * r, r * sizeof *v1);
		assert_memory_equal(y1, y + (size_t)t * N, N * sizeof *y1);
	}
	free(a);
	free(bt);
	free(x);
	free(v);
	free(y);
	free(v1);
	free(y1);
}

/* BF16 weights (a16 / bt16) give, to the bit, what float32 weights holding
 * the same rounded values give, for every rank remainder (r % 8 and % 4
 * paths), odd widths (the scalar tails) and several rows. */
static void test_bf16_bits(void **state)
{
	(void)state;
	static const int ranks[] = {1, 3, 4, 5, 8, 13, 16, 33};
	const int d = 203, N = 77, T = 3;
	for (size_t ri = 0; ri < sizeof ranks / sizeof ranks[0]; ri++) {
		int r = ranks[ri];
		float *a = rand_vec((size_t)r * d), *bt = rand_vec((size_t)r * N);
		uint16_t *a16 = malloc((size_t)r * d * sizeof *a16);
		uint16_t *bt16 = malloc((size_t)r * N * sizeof *bt16);
		assert_true(a16 && bt16);
		for (size_t i = 0; i < (size_t)r * d; i++) {
			a16[i] = loom_f32_to_bf16(a[i]);
			a[i] = loom_bf16_to_f32(a16[i]);
		}
		for (size_t i = 0; i < (size_t)r * N; i++) {
			bt16[i] = loom_f32_to_bf16(bt[i]);
			bt[i] = loom_bf16_to_f32(bt16[i]);
		}
		float *x = rand_vec((size_t)T * d), *v = nan_vec((size_t)T * r);
		float *v16 = nan_vec((size_t)T * r), *y = rand_vec((size_t)T * N);
		float *y16 = malloc((size_t)T * N * sizeof *y16);
		assert_non_null(y16);
		memcpy(y16, y, (size_t)T * N * sizeof *y);
		kn_lora_seg f = {.rows = T, .rank = r, .scale = 0.75f, .a = a, .bt = bt};
		kn_lora_seg h = {.rows = T, .rank = r, .scale = 0.75f, .a16 = a16, .bt16 = bt16};
		kn_lora_shrink(v, r, x, d, &f, 1, NULL);
		kn_lora_shrink(v16, r, x, d, &h, 1, NULL);
		assert_memory_equal(v, v16, (size_t)T * r * sizeof *v);
		kn_lora_expand(y, N, v, r, &f, 1, NULL);
		kn_lora_expand(y16, N, v, r, &h, 1, NULL);
		assert_memory_equal(y, y16, (size_t)T * N * sizeof *y);
		free(a);
		free(bt);
		free(a16);
		free(bt16);
		free(x);
		free(v);
		free(v16);
		free(y);
		free(y16);
	}
}

/* n values of a generator seeded with seed (the same start twice). */
static void fill_seeded(float *p, size_t n, uint64_t seed)
{
	uint64_t keep = rng_state;
	rng_state = seed;
	for (size_t i = 0; i < n; i++)
		p[i] = (float)rnd();
	rng_state = keep;
}

/* kn_lora_expand_n (q, k, v in one pool run, chunks of items requesting
 * the next item's rows) gives each output the bits of its own
 * kn_lora_expand in the caller alone, for 1-3 threads: outputs of
 * different widths (GQA), F32 and BF16 Bt, an adapter without a k module
 * (absent from that output's segments), prefill rows beside decodes. */
static void test_expand_n(void **state)
{
	(void)state;
	enum { NO = 3, NS = 6 };
	const int d_out[NO] = {96, 32, 40}, rows[NS] = {1, 1, 3, 1, 17, 1};
	const int rank[NS][NO] = {{16, 16, 16}, {8, 0, 4}, {1, 3, 64},
				  {16, 16, 16}, {5, 7, 9}, {33, 1, 2}};
	int T = 0, ldv = 0;
	for (int s = 0; s < NS; s++) {
		T += rows[s];
		int w = rank[s][0] + rank[s][1] + rank[s][2];
		ldv = w > ldv ? w : ldv;
	}
	kn_lora_seg segs[NO][NS];
	int ns[NO] = {0, 0, 0};
	void *mem[NO][NS];
	float *v = rand_vec((size_t)T * ldv), *y[NO], *want[NO];
	for (int o = 0; o < NO; o++) {
		want[o] = malloc((size_t)T * d_out[o] * sizeof *want[o]);
		y[o] = malloc((size_t)T * d_out[o] * sizeof *y[o]);
		assert_true(want[o] && y[o]);
	}
	for (int s = 0, row = 0; s < NS; row += rows[s++]) {
		int col = 0;
		for (int o = 0; o < NO; o++) {
			int r = rank[s][o];
			size_t n = (size_t)r * d_out[o];
			mem[o][s] = NULL;
			if (r == 0)
				continue;
			kn_lora_seg g = {.row0 = row, .rows = rows[s], .rank = r, .vcol = col,
					 .scale = 0.5f + (float)s};
			if ((s + o) % 2) {
				uint16_t *b = malloc(n * sizeof *b);
				assert_non_null(b);
				for (size_t i = 0; i < n; i++)
					b[i] = loom_f32_to_bf16((float)rnd());
				g.bt16 = b;
				mem[o][s] = b;
			} else {
				float *b = rand_vec(n);
				g.bt = b;
				mem[o][s] = b;
			}
			segs[o][ns[o]++] = g;
			col += r;
		}
	}
	/* want: each output's own kn_lora_expand, in the caller alone */
	for (int o = 0; o < NO; o++) {
		fill_seeded(want[o], (size_t)T * d_out[o], 0x5eedULL + (uint64_t)o);
		kn_lora_expand(want[o], d_out[o], v, ldv, segs[o], ns[o], NULL);
	}
	for (int threads = 1; threads <= 3; threads++) {
		kn_pool *pool = NULL;
		assert_int_equal(kn_pool_create(threads, &pool), 0);
		kn_lora_out outs[NO];
		for (int o = 0; o < NO; o++) {
			fill_seeded(y[o], (size_t)T * d_out[o], 0x5eedULL + (uint64_t)o);
			outs[o] = (kn_lora_out){.y = y[o], .d_out = d_out[o], .segs = segs[o],
						.n_segs = ns[o]};
		}
		kn_lora_expand_n(outs, NO, v, ldv, pool);
		for (int o = 0; o < NO; o++)
			assert_memory_equal(y[o], want[o], (size_t)T * d_out[o] * sizeof *y[o]);
		kn_pool_destroy(pool);
	}
	for (int o = 0; o < NO; o++) {
		for (int s = 0; s < NS; s++)
			free(mem[o][s]);
		free(y[o]);
		free(want[o]);
	}
	free(v);
}

/* No segments, empty segments and rank 0 touch nothing. */
static void test_empty(void **state)
{
	(void)state;
	float *x = rand_vec(64), *v = nan_vec(8), *y = rand_vec(64), *y0 = malloc(64 * 4);
	assert_non_null(y0);
	memcpy(y0, y, 64 * 4);
	kn_lora_seg segs[2] = {{.row0 = 0, .rows = 0, .rank = 4, .a = x, .bt = x},
			       {.row0 = 0, .rows = 1, .rank = 0}};
	kn_lora_shrink(v, 8, x, 64, NULL, 0, NULL);
	kn_lora_shrink(v, 8, x, 64, segs, 2, NULL);
	kn_lora_expand(y, 64, v, 8, segs, 2, NULL);
	for (int i = 0; i < 8; i++)
		assert_true(isnan(v[i]));
	assert_memory_equal(y, y0, 64 * 4);
	free(x);
	free(v);
	free(y);
	free(y0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mixes),
		cmocka_unit_test(test_packed_equals_split),
		cmocka_unit_test(test_row_independent),
		cmocka_unit_test(test_bf16_bits),
		cmocka_unit_test(test_expand_n),
		cmocka_unit_test(test_empty),
	};
	return cmocka_run_group_tests_name("kernels/lora_ops", tests, NULL, NULL);
}
