/*
 * tests/gpu/test_sgmv.c — segmented LoRA shrink + expand (kernels/cuda/
 * sgmv.cu) against a float64 reference written here.
 *
 * Every run draws fresh inputs (seed printed), poisons v with NaN, starts y
 * from random "base GEMM" values and checks: adapted rows within the
 * output dtype's tolerance of y0 + scale * (x . A^T) . Bt in float64;
 * base-model rows, unadapted slices and the padding columns bit-identical
 * to y0; a second run bit-identical to the first (deterministic split-K).
 * Shapes: token counts 1, 3, 7, 133; adapter mixes distinct, uniform,
 * Zipf(1.5), identical; ranks mixed per slot and slice (1 .. 128); fused
 * q|k|v with GQA widths, LLaMA-7B o/down, stories260k's 64/172 (scalar
 * paths), an odd 2049 with misaligned x and y; layer 1 of 2.
 */
#include "gpu_test.h"

#define GT_CASES(X)                                                                            \
	X(test_sgmv_meta_pack)                                                                 \
	X(test_sgmv_bad_arguments)                                                             \
	X(test_sgmv_qkv_bf16)                                                                  \
	X(test_sgmv_o_f16_into_f32)                                                            \
	X(test_sgmv_down_11008)                                                                \
	X(test_sgmv_stories_shapes)                                                            \
	X(test_sgmv_odd_2049_misaligned)                                                       \
	X(test_sgmv_rank_extremes)                                                             \
	X(test_sgmv_forced_splits)                                                             \
	X(test_sgmv_batch_invariance)                                                          \
	X(test_sgmv_base_and_empty)

#ifdef LOOM_HAVE_CUDA

#define N_SLOTS 6
#define N_LAYERS 2
#define LAYER 1

enum { MIX_DISTINCT, MIX_UNIFORM, MIX_ZIPF, MIX_IDENTICAL, MIX_COUNT };
static const char *const mix_name[MIX_COUNT] = {"distinct", "uniform", "zipf", "identical"};
static const int token_counts[] = {1, 3, 7, 133};

typedef struct lcfg {
	const char *name;
	kn_cuda_dtype dt, ydt;
	int d_in, n_slices, n_out[KN_CUDA_LORA_SLICES];
	int x_pad, y_pad;   /* extra columns in ldx / ldy */
	int misalign;       /* x and y start one element past a 16-byte boundary */
	const int *ranks;   /* drawn per (slot, layer, slice) */
	int n_ranks;
	int zero_pct;       /* percent of slices left unadapted (rank 0) */
	int ksplit;         /* 0 = kn_cuda_lora_ksplit */
} lcfg;

/* One adapter's weights at layer LAYER, as the device sees them. */
typedef struct lw {
	int rank[KN_CUDA_LORA_SLICES];
	float scale[KN_CUDA_LORA_SLICES];
	double *a;                          /* [R, d_in] */
	double *bt[KN_CUDA_LORA_SLICES];    /* [rank, n_out] */
} lw;

typedef struct lset {
	lw w[N_SLOTS];
	kn_cuda_lora_group g;
	int r_max;                          /* largest total rank at LAYER and elsewhere */
	size_t mark;                        /* arena mark after the adapters */
} lset;

static int total_out(const lcfg *c)
{
	int n = 0;
	for (int s = 0; s < c->n_slices; s++)
		n += c->n_out[s];
	return n;
}

/* Uploads random adapters for every (slot, layer) and the descriptor table. */
static void make_adapters(const lcfg *c, lset *L)
{
	memset(L, 0, sizeof *L);
	kn_cuda_lora_desc *tab = calloc((size_t)N_SLOTS * N_LAYERS, sizeof *tab);
	assert_non_null(tab);
	size_t es = kn_cuda_dtype_size(c->dt);
	for (int slot = 0; slot < N_SLOTS; slot++) {
		for (int l = 0; l < N_LAYERS; l++) {
			kn_cuda_lora_desc *d = &tab[slot * N_LAYERS + l];
			int R = 0;
			for (int s = 0; s < c->n_slices; s++) {
				int r = gt_int(100) < c->zero_pct ? 0 : c->ranks[gt_int(c->n_ranks)];
				d->rank[s] = r;
				d->scale[s] = (float)(0.5 + (gt_rnd() + 1.0) * 0.75);
				R += r;
			}
			if (R > L->r_max)
				L->r_max = R;
			double *av = NULL;
			void *ah = gt_rand_tensor(c->dt, (size_t)(R ? R : 1) * c->d_in,
						  1.0 / sqrt((double)c->d_in), &av);
			d->a = R ? gt_upload(ah, (size_t)R * c->d_in * es) : NULL;
			free(ah);
			if (l == LAYER) {
				L->w[slot].a = av;
				for (int s = 0; s < c->n_slices; s++) {
					L->w[slot].rank[s] = d->rank[s];
					L->w[slot].scale[s] = d->scale[s];
				}
			} else {
				free(av);
			}
			for (int s = 0; s < c->n_slices; s++) {
				int r = d->rank[s];
				double *bv = NULL;
				void *bh = gt_rand_tensor(c->dt, (size_t)(r ? r : 1) * c->n_out[s],
							  1.0 / sqrt((double)(r ? r : 1)), &bv);
				d->bt[s] = r ? gt_upload(bh, (size_t)r * c->n_out[s] * es) : NULL;
				free(bh);
				if (l == LAYER)
					L->w[slot].bt[s] = bv;
				else
					free(bv);
			}
		}
	}
	L->g.table = gt_upload(tab, (size_t)N_SLOTS * N_LAYERS * sizeof *tab);
	free(tab);
	L->g.n_slots = N_SLOTS;
	L->g.n_layers = N_LAYERS;
	L->g.d_in = c->d_in;
	L->g.n_slices = c->n_slices;
	for (int s = 0; s < c->n_slices; s++)
		L->g.n_out[s] = c->n_out[s];
	L->g.dt = c->dt;
	L->mark = kn_cuda_arena_mark(gt.arena);
}

static void free_adapters(lset *L)
{
	for (int slot = 0; slot < N_SLOTS; slot++) {
		free(L->w[slot].a);
		for (int s = 0; s < KN_CUDA_LORA_SLICES; s++)
			free(L->w[slot].bt[s]);
	}
}

/* Segments for T rows under a mix: slot -1 is the base model. */
static int make_segments(int mix, int T, int32_t *start, int32_t *slot)
{
	int S = 0;
	start[0] = 0;
	if (mix == MIX_DISTINCT) { /* every row its own segment */
		for (int t = 0; t < T; t++) {
			slot[S] = (t % (N_SLOTS + 1)) - 1;
			start[++S] = t + 1;
		}
		return S;
	}
	if (mix == MIX_IDENTICAL) {
		slot[0] = 2;
		start[1] = T;
		return 1;
	}
	int count[N_SLOTS + 1] = {0}; /* index 0 = base */
	for (int t = 0; t < T; t++) {
		int k;
		if (mix == MIX_UNIFORM) {
			k = gt_int(N_SLOTS + 1);
		} else { /* Zipf 1.5 over the slots, base rows 1 in 8 */
			if (gt_int(8) == 0) {
				k = 0;
			} else {
				double z = 0, u, acc = 0;
				for (int i = 1; i <= N_SLOTS; i++)
					z += pow(i, -1.5);
				u = (gt_rnd() + 1.0) / 2.0 * z;
				k = N_SLOTS;
				for (int i = 1; i <= N_SLOTS; i++) {
					acc += pow(i, -1.5);
					if (u < acc) {
						k = i;
						break;
					}
				}
			}
		}
		count[k]++;
	}
	int row = 0;
	int empty_at = gt_int(N_SLOTS + 1);
	for (int k = 0; k <= N_SLOTS; k++) {
		if (k == empty_at) { /* an empty segment somewhere */
			slot[S] = gt_int(N_SLOTS);
			start[++S] = row;
		}
		if (!count[k])
			continue;
		slot[S] = k - 1;
		row += count[k];
		start[++S] = row;
	}
	return S;
}

typedef struct lrun {
	int T, ldx, ldy, r_stride, ksplit, grid_extra;
	void *xh;          /* host x, dt */
	double *x;         /* [T, ldx] */
	void *y0h;         /* host y0, ydt */
	void *yh;          /* host result */
	size_t ybytes;
} lrun;

/* Runs shrink + expand on the device for the given segments into r->yh. */
static void device_run(const lcfg *c, lset *L, lrun *r, const int32_t *start,
		       const int32_t *slot, int S)
{
	size_t es = kn_cuda_dtype_size(c->dt), ys = kn_cuda_dtype_size(c->ydt);
	size_t mbytes = kn_cuda_lora_meta_bytes(r->T, S);
	void *mh = malloc(mbytes);
	int n_chunks = 0;
	assert_non_null(mh);
	GT_OK(kn_cuda_lora_meta_pack(mh, mbytes, start, slot, S, &n_chunks));
	void *meta = gt_upload(mh, mbytes);
	free(mh);
	int ksplit = r->ksplit ? r->ksplit : c->ksplit ? c->ksplit
				 : kn_cuda_lora_ksplit(c->d_in, n_chunks, gt.sm_count);
	size_t xoff = c->misalign ? es : 0, yoff = c->misalign ? ys : 0;
	char *x = (char *)gt_alloc((size_t)r->T * r->ldx * es + 16) + xoff;
	char *y = (char *)gt_alloc(r->ybytes + 16) + yoff;
	GT_OK(kn_cuda_memcpy(x, r->xh, (size_t)r->T * r->ldx * es));
	GT_OK(kn_cuda_memcpy(y, r->y0h, r->ybytes));
	size_t vb = kn_cuda_lora_v_bytes(r->T, r->r_stride, ksplit);
	float *v = gt_alloc(vb);
	gt_poison(v, vb);
	GT_OK(kn_cuda_lora_shrink(v, r->T, r->r_stride, ksplit, x, r->ldx, &L->g, LAYER, meta,
				  n_chunks + r->grid_extra, gt.stream));
	GT_OK(kn_cuda_lora_expand(y, c->ydt, r->ldy, v, r->T, r->r_stride, ksplit, &L->g, LAYER,
				  meta, n_chunks + r->grid_extra, gt.stream));
	gt_download(r->yh, y, r->ybytes);
}

/* Checks r->yh against the float64 reference for the segments. */
static void check_run(const lcfg *c, lset *L, const lrun *r, const int32_t *start,
		      const int32_t *slot, int S, const char *what)
{
	int n_total = total_out(c);
	double *y0 = gt_to_double(c->ydt, r->y0h, (size_t)r->T * r->ldy);
	double *got = gt_to_double(c->ydt, r->yh, (size_t)r->T * r->ldy);
	double *want = malloc((size_t)r->T * r->ldy * sizeof *want);
	unsigned char *touched = calloc((size_t)r->T * r->ldy, 1);
	double *v = malloc(((size_t)L->r_max + 1) * sizeof *v);
	assert_non_null(want);
	assert_non_null(touched);
	assert_non_null(v);
	memcpy(want, y0, (size_t)r->T * r->ldy * sizeof *want);
	for (int i = 0; i < S; i++) {
		if (slot[i] < 0)
			continue;
		const lw *w = &L->w[slot[i]];
		int R = 0;
		for (int s = 0; s < c->n_slices; s++)
			R += w->rank[s];
		for (int t = start[i]; t < start[i + 1]; t++) {
			const double *xr = r->x + (size_t)t * r->ldx;
			for (int j = 0; j < R; j++) {
				double acc = 0;
				const double *ar = w->a + (size_t)j * c->d_in;
				for (int k = 0; k < c->d_in; k++)
					acc += xr[k] * ar[k];
				v[j] = acc;
			}
			int off = 0, vcol = 0;
			for (int s = 0; s < c->n_slices; s++) {
				for (int n = 0; n < c->n_out[s] && w->rank[s] > 0; n++) {
					double acc = 0;
					for (int k = 0; k < w->rank[s]; k++)
						acc += v[vcol + k] * w->bt[s][(size_t)k * c->n_out[s] + n];
					size_t at = (size_t)t * r->ldy + off + n;
					want[at] += (double)w->scale[s] * acc;
					touched[at] = 1;
				}
				off += c->n_out[s];
				vcol += w->rank[s];
			}
		}
	}
	/* untouched elements must be the exact bits of y0 */
	size_t ys = kn_cuda_dtype_size(c->ydt);
	for (size_t i = 0; i < (size_t)r->T * r->ldy; i++) {
		if (touched[i])
			continue;
		if (memcmp((const char *)r->yh + i * ys, (const char *)r->y0h + i * ys, ys) != 0)
			fail_msg("%s: row %zu column %zu changed but belongs to no adapted slice "
				 "(got %.9g, y0 %.9g)", what, i / r->ldy, i % r->ldy, got[i], y0[i]);
	}
	double rtol, atol;
	gt_tol(c->ydt, &rtol, &atol);
	if (c->ydt == KN_CUDA_F32) {
		rtol = 1e-4;
		atol = 2e-4;
	}
	(void)n_total;
	gt_expect_close(what, got, want, (size_t)r->T * r->ldy, rtol, atol);
	free(y0);
	free(got);
	free(want);
	free(touched);
	free(v);
}

static void new_run(const lcfg *c, lset *L, lrun *r, int T)
{
	memset(r, 0, sizeof *r);
	r->T = T;
	r->ldx = c->d_in + c->x_pad;
	r->ldy = total_out(c) + c->y_pad;
	r->r_stride = L->r_max + 3;
	r->xh = gt_rand_tensor(c->dt, (size_t)T * r->ldx, 1.0, &r->x);
	r->y0h = gt_rand_tensor(c->ydt, (size_t)T * r->ldy, 1.0, NULL);
	r->ybytes = (size_t)T * r->ldy * kn_cuda_dtype_size(c->ydt);
	r->yh = malloc(r->ybytes);
	assert_non_null(r->yh);
}

static void free_run(lrun *r)
{
	free(r->xh);
	free(r->x);
	free(r->y0h);
	free(r->yh);
}

/* Every token count x every mix, each run checked and repeated. */
static void sweep(const lcfg *c)
{
	lset L;
	gt_reset();
	make_adapters(c, &L);
	for (size_t ti = 0; ti < sizeof token_counts / sizeof *token_counts; ti++) {
		for (int mix = 0; mix < MIX_COUNT; mix++) {
			int T = token_counts[ti];
			int32_t start[2 * 133 + 16], slot[2 * 133 + 16];
			int S = make_segments(mix, T, start, slot);
			char what[160];
			snprintf(what, sizeof what, "%s T=%d %s", c->name, T, mix_name[mix]);
			lrun r;
			new_run(c, &L, &r, T);
			device_run(c, &L, &r, start, slot, S);
			check_run(c, &L, &r, start, slot, S, what);
			void *first = malloc(r.ybytes);
			assert_non_null(first);
			memcpy(first, r.yh, r.ybytes);
			device_run(c, &L, &r, start, slot, S);
			if (memcmp(first, r.yh, r.ybytes) != 0)
				fail_msg("%s: second run differs from the first (not deterministic)",
					 what);
			free(first);
			free_run(&r);
			kn_cuda_arena_reset(gt.arena, L.mark);
		}
	}
	free_adapters(&L);
}

static const int ranks_mixed[] = {4, 8, 12, 16, 32, 64};
static const int ranks_small[] = {1, 3, 4, 8};
static const int ranks_extreme[] = {1, 3, 12, 128};

static void test_sgmv_qkv_bf16(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	lcfg c = {"qkv bf16 4096->4096|1024|1024", KN_CUDA_BF16, KN_CUDA_BF16, 4096, 3,
		  {4096, 1024, 1024}, 0, 0, 0, ranks_mixed, 6, 10, 0};
	sweep(&c);
}

static void test_sgmv_o_f16_into_f32(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	lcfg c = {"o f16 -> f32 residual", KN_CUDA_F16, KN_CUDA_F32, 4096, 1, {4096}, 8, 8, 0,
		  ranks_mixed, 6, 0, 0};
	sweep(&c);
}

static void test_sgmv_down_11008(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	lcfg c = {"down bf16 11008->4096", KN_CUDA_BF16, KN_CUDA_BF16, 11008, 1, {4096}, 0, 0, 0,
		  ranks_mixed, 6, 0, 0};
	sweep(&c);
}

static void test_sgmv_stories_shapes(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	lcfg qkv = {"stories qkv 64->64|32|32", KN_CUDA_BF16, KN_CUDA_BF16, 64, 3, {64, 32, 32},
		    0, 0, 0, ranks_small, 4, 20, 0};
	lcfg gu = {"stories gate|up 64->172|172", KN_CUDA_BF16, KN_CUDA_F32, 64, 2, {172, 172},
		   0, 0, 0, ranks_small, 4, 0, 0};
	lcfg down = {"stories down 172->64", KN_CUDA_F16, KN_CUDA_F16, 172, 1, {64}, 0, 0, 0,
		     ranks_small, 4, 0, 0};
	sweep(&qkv);
	sweep(&gu);
	sweep(&down);
}

static void test_sgmv_odd_2049_misaligned(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	lcfg c = {"odd 2049->2049 misaligned", KN_CUDA_BF16, KN_CUDA_BF16, 2049, 1, {2049}, 3, 5,
		  1, ranks_mixed, 6, 0, 0};
	sweep(&c);
}

static void test_sgmv_rank_extremes(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	lcfg c = {"ranks 1..128 x3 slices", KN_CUDA_F16, KN_CUDA_F16, 1024, 3, {1024, 256, 256},
		  0, 0, 0, ranks_extreme, 4, 15, 0};
	sweep(&c);
}

static void test_sgmv_forced_splits(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	lcfg many = {"4096 in 16 splits", KN_CUDA_BF16, KN_CUDA_BF16, 4096, 1, {1024}, 0, 0, 0,
		     ranks_mixed, 6, 0, 16};
	lcfg empty = {"100 in 16 splits (some empty)", KN_CUDA_BF16, KN_CUDA_BF16, 100, 1, {96},
		      0, 0, 0, ranks_small, 4, 0, 16};
	lcfg one = {"2048 in 1 split", KN_CUDA_F16, KN_CUDA_F16, 2048, 1, {512}, 0, 0, 0,
		    ranks_mixed, 6, 0, 1};
	sweep(&many);
	sweep(&empty);
	sweep(&one);
}

/* Each segment computed alone gives the same bits as inside the batch. */
static void test_sgmv_batch_invariance(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	lcfg c = {"batch invariance", KN_CUDA_BF16, KN_CUDA_BF16, 4096, 3, {2048, 512, 512}, 0,
		  0, 0, ranks_mixed, 6, 0, 4};
	lset L;
	gt_reset();
	make_adapters(&c, &L);
	int T = 37;
	int32_t start[64], slot[64];
	int S = make_segments(MIX_UNIFORM, T, start, slot);
	lrun r;
	new_run(&c, &L, &r, T);
	device_run(&c, &L, &r, start, slot, S);
	check_run(&c, &L, &r, start, slot, S, "batch invariance: whole batch");
	void *whole = malloc(r.ybytes);
	assert_non_null(whole);
	memcpy(whole, r.yh, r.ybytes);
	size_t row_bytes = (size_t)r.ldy * kn_cuda_dtype_size(c.ydt);
	for (int i = 0; i < S; i++) {
		if (slot[i] < 0 || start[i] == start[i + 1])
			continue;
		kn_cuda_arena_reset(gt.arena, L.mark);
		int32_t one_start[2] = {start[i], start[i + 1]}, one_slot[1] = {slot[i]};
		device_run(&c, &L, &r, one_start, one_slot, 1);
		for (int t = start[i]; t < start[i + 1]; t++)
			if (memcmp((char *)whole + t * row_bytes, (char *)r.yh + t * row_bytes,
				   row_bytes) != 0)
				fail_msg("batch invariance: row %d (slot %d) differs alone vs in "
					 "the batch", t, slot[i]);
	}
	free(whole);
	free_run(&r);
	free_adapters(&L);
}

/* All-base batches, empty segments, no segments, and a capture-sized grid
 * larger than the chunk count. */
static void test_sgmv_base_and_empty(void **state)
{
	(void)state;
	GT_REQUIRE_DEVICE();
	lcfg c = {"base and empty", KN_CUDA_BF16, KN_CUDA_BF16, 512, 2, {512, 128}, 0, 0, 0,
		  ranks_mixed, 6, 0, 0};
	lset L;
	gt_reset();
	make_adapters(&c, &L);
	int T = 19;
	struct {
		const char *what;
		int S;
		int32_t start[6], slot[5];
		int grid_extra;
	} cases[] = {
		{"all base", 2, {0, 7, 19}, {-1, -1}, 0},
		{"no segments", 0, {0}, {0}, 0},
		{"empty segments around one", 4, {0, 0, 0, 19, 19}, {3, -1, 1, 4}, 0},
		{"grid bucket larger than the chunks", 3, {0, 5, 6, 19}, {0, -1, 5}, 9},
	};
	for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
		lrun r;
		new_run(&c, &L, &r, T);
		r.grid_extra = cases[k].grid_extra;
		device_run(&c, &L, &r, cases[k].start, cases[k].slot, cases[k].S);
		check_run(&c, &L, &r, cases[k].start, cases[k].slot, cases[k].S, cases[k].what);
		free_run(&r);
		kn_cuda_arena_reset(gt.arena, L.mark);
	}
	free_adapters(&L);
}

/* Host-side: needs no device. */
static void test_sgmv_meta_pack(void **state)
{
	(void)state;
	int32_t buf[256];
	int nc = -1;
	int32_t st[] = {0, 20, 21, 21, 30}, sl[] = {3, -1, 2, 0};
	assert_int_equal(kn_cuda_lora_meta_pack(buf, sizeof buf, st, sl, 4, &nc), LOOM_OK);
	/* 20 rows -> 8, 8, 4; base -> none; empty -> none; 9 rows -> 8, 1 */
	assert_int_equal(nc, 5);
	assert_int_equal(buf[0], 30);
	assert_int_equal(buf[1], 4);
	assert_int_equal(buf[2], 5);
	const int32_t *slot = buf + 8, *cseg = slot + 4, *crow = cseg + 5, *clen = crow + 5;
	const int32_t want_seg[] = {0, 0, 0, 3, 3}, want_row[] = {0, 8, 16, 21, 29},
		      want_len[] = {8, 8, 4, 8, 1};
	for (int i = 0; i < 4; i++)
		assert_int_equal(slot[i], sl[i]);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(cseg[i], want_seg[i]);
		assert_int_equal(crow[i], want_row[i]);
		assert_int_equal(clen[i], want_len[i]);
	}
	assert_true(kn_cuda_lora_meta_bytes(30, 4) >= (8 + 4 + 3 * 5) * sizeof(int32_t));

	int32_t dec[] = {0, 5, 3}, ok1[] = {0, 1};
	assert_int_equal(kn_cuda_lora_meta_pack(buf, sizeof buf, dec, ok1, 2, &nc), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "seg_start[2]"));
	int32_t st2[] = {0, 4}, bad_slot[] = {-2};
	assert_int_equal(kn_cuda_lora_meta_pack(buf, sizeof buf, st2, bad_slot, 1, &nc),
			 LOOM_EINVAL);
	assert_int_equal(kn_cuda_lora_meta_pack(buf, 20, st, sl, 4, &nc), LOOM_ERANGE);
	assert_int_equal(kn_cuda_lora_meta_pack(buf, sizeof buf, NULL, NULL, 0, &nc), LOOM_OK);
	assert_int_equal(nc, 0);

	/* split-K choice: slices of <= 2048 columns, toward 2x the SMs, >= 1024 */
	assert_int_equal(kn_cuda_lora_ksplit(64, 1, 132), 1);
	assert_int_equal(kn_cuda_lora_ksplit(4096, 32, 132), 4);
	assert_int_equal(kn_cuda_lora_ksplit(4096, 1000, 132), 2);
	assert_true(kn_cuda_lora_ksplit(11008, 32, 132) >= 6);
	assert_true(kn_cuda_lora_ksplit(32768, 1, 132) <= KN_CUDA_LORA_MAX_KSPLIT);
	assert_int_equal(kn_cuda_lora_v_bytes(10, 48, 3), 10 * 48 * 3 * sizeof(float));
}

/* Argument checks happen before anything touches the device. */
static void test_sgmv_bad_arguments(void **state)
{
	(void)state;
	kn_cuda_lora_desc fake = {0};
	kn_cuda_lora_group g = {&fake, 2, 2, 4096, 1, {4096}, KN_CUDA_BF16};
	float *v = (float *)&fake;
	const void *m = &fake;
	assert_int_equal(kn_cuda_lora_shrink(v, 4, 16, 1, v, 4096, &g, 0, m, 1, NULL),
			 LOOM_EINVAL); /* 4096 columns in one split > 2048 */
	assert_int_equal(kn_cuda_lora_shrink(v, 4, 0, 2, v, 4096, &g, 0, m, 1, NULL),
			 LOOM_EUNSUPPORTED);
	assert_int_equal(kn_cuda_lora_shrink(v, 4, 16, 2, v, 4096, &g, 2, m, 1, NULL),
			 LOOM_EINVAL); /* layer out of range */
	assert_int_equal(kn_cuda_lora_shrink(v, 4, 16, 0, v, 4096, &g, 0, m, 1, NULL),
			 LOOM_EINVAL);
	assert_int_equal(kn_cuda_lora_shrink(v, 4, 16, 2, v, 100, &g, 0, m, 1, NULL),
			 LOOM_EINVAL); /* ldx < d_in */
	g.n_slices = 4;
	assert_int_equal(kn_cuda_lora_expand(v, KN_CUDA_BF16, 4096, v, 4, 16, 2, &g, 0, m, 1, NULL),
			 LOOM_EINVAL);
	g.n_slices = 1;
	g.dt = KN_CUDA_F32;
	assert_int_equal(kn_cuda_lora_expand(v, KN_CUDA_F32, 4096, v, 4, 16, 2, &g, 0, m, 1, NULL),
			 LOOM_EUNSUPPORTED);
	g.dt = KN_CUDA_BF16;
	assert_int_equal(kn_cuda_lora_expand(v, KN_CUDA_F16, 4096, v, 4, 16, 2, &g, 0, m, 1, NULL),
			 LOOM_EUNSUPPORTED); /* y neither the weights' dtype nor f32 */
	assert_int_equal(kn_cuda_lora_expand(v, KN_CUDA_BF16, 100, v, 4, 16, 2, &g, 0, m, 1, NULL),
			 LOOM_EINVAL); /* ldy < width */
	/* nothing to do is not an error, and launches nothing */
	assert_int_equal(kn_cuda_lora_shrink(v, 4, 16, 2, v, 4096, &g, 0, m, 0, NULL), LOOM_OK);
	g.table = NULL;
	assert_int_equal(kn_cuda_lora_shrink(v, 4, 16, 2, v, 4096, &g, 0, m, 1, NULL),
			 LOOM_EINVAL);
}

#else
GT_CASES(GT_STUB)
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {GT_CASES(GT_ENTRY)};
	return GT_RUN("gpu/sgmv", tests);
}
