/*
 * tests/worker/test_kv.c — the paged KV cache (worker/kv.h) and paged
 * attention (kn_attention_paged).
 *
 * Block accounting: all-or-nothing reserve, release, free counts, block
 * table growth, the whole-pool limit, allocation failures. Paged attention
 * against kn_attention over a contiguous copy of the same cache (it must be
 * bit-identical: same arithmetic, same order) on awkward lengths 1, 15, 16,
 * 17, 33, with the sequence's blocks scattered through the pool. Then
 * wk_forward on stories260k through one shared pool with interleaved
 * sequences equals the same steps through private caches.
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

#include "common/alloc.h"
#include "common/dtype.h"
#include "kernels/kernels.h"
#include "tests/support/harness.h"
#include "worker/forward.h"
#include "worker/kv.h"

/* A model with only the shape filled in: enough for a pool. */
static wk_model shape_model(int n_layers, int n_heads, int n_kv_heads, int head_dim)
{
	wk_model m;
	memset(&m, 0, sizeof m);
	m.cfg.n_layers = n_layers;
	m.cfg.n_heads = n_heads;
	m.cfg.n_kv_heads = n_kv_heads;
	m.cfg.head_dim = head_dim;
	m.cfg.hidden = n_heads * head_dim;
	return m;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static float rnd(void) /* uniform in [-1, 1) */
{
	rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((double)(rng_state >> 11) / 4503599627370496.0 - 1.0);
}

/* ---------------------------------------------------------------- */
/* block accounting                                                  */
/* ---------------------------------------------------------------- */

static void test_reserve_release(void **state)
{
	(void)state;
	wk_model m = shape_model(2, 4, 2, 8);
	wk_kvpool *p;
	wk_kv a, b;

	assert_int_equal(wk_kvpool_create(&m, 10, 16, &p), LOOM_OK);
	assert_int_equal(wk_kvpool_n_blocks(p), 10);
	assert_int_equal(wk_kvpool_block_size(p), 16);
	assert_int_equal(wk_kvpool_free_blocks(p), 10);
	assert_true(wk_kvpool_fits(p, &m.cfg));
	wk_kv_init(&a, p);
	wk_kv_init(&b, p);

	/* nothing needed: no block taken */
	assert_int_equal(wk_kv_reserve(&a, 0), LOOM_OK);
	assert_int_equal(a.n_blocks, 0);
	/* 1 position -> 1 block; 16 -> still 1; 17 -> 2 */
	assert_int_equal(wk_kv_reserve(&a, 1), LOOM_OK);
	assert_int_equal(a.n_blocks, 1);
	assert_int_equal(a.capacity, 16);
	assert_int_equal(wk_kv_reserve(&a, 16), LOOM_OK);
	assert_int_equal(a.n_blocks, 1);
	assert_int_equal(wk_kv_reserve(&a, 17), LOOM_OK);
	assert_int_equal(a.n_blocks, 2);
	assert_int_equal(wk_kvpool_free_blocks(p), 8);
	/* reserve counts from len */
	a.len = 30;
	assert_int_equal(wk_kv_reserve(&a, 3), LOOM_OK); /* 33 positions: 3 blocks */
	assert_int_equal(a.n_blocks, 3);
	assert_int_equal(a.capacity, 48);

	/* b wants 8 blocks, 7 are free: all or nothing */
	assert_int_equal(wk_kv_reserve(&b, 8 * 16), LOOM_EBUSY);
	assert_int_equal(b.n_blocks, 0);
	assert_int_equal(b.capacity, 0);
	assert_int_equal(wk_kvpool_free_blocks(p), 7);
	assert_int_equal(wk_kv_reserve(&b, 7 * 16), LOOM_OK);
	assert_int_equal(wk_kvpool_free_blocks(p), 0);
	assert_int_equal(wk_kv_reserve(&a, 18), LOOM_OK);    /* 48: still 3 blocks */
	assert_int_equal(wk_kv_reserve(&a, 19), LOOM_EBUSY); /* 49: a 4th block */
	assert_int_equal(a.n_blocks, 3);

	/* every block id is handed out once */
	int seen[10] = { 0 };
	for (int i = 0; i < a.n_blocks; i++)
		seen[a.blocks[i]]++;
	for (int i = 0; i < b.n_blocks; i++)
		seen[b.blocks[i]]++;
	for (int i = 0; i < 10; i++)
		assert_int_equal(seen[i], 1);

	/* release gives all back and empties the sequence; it stays bound */
	wk_kv_release(&a);
	assert_int_equal(a.len, 0);
	assert_int_equal(a.n_blocks, 0);
	assert_int_equal(a.capacity, 0);
	assert_int_equal(wk_kvpool_free_blocks(p), 3);
	assert_int_equal(wk_kv_reserve(&a, 40), LOOM_OK);
	assert_int_equal(wk_kvpool_free_blocks(p), 0);

	/* more than the whole pool can ever hold: EBUSY with a message */
	wk_kv_release(&b);
	assert_int_equal(wk_kv_reserve(&b, 10 * 16 + 1), LOOM_EBUSY);
	assert_non_null(strstr(loom_errmsg(), "whole pool"));
	assert_int_equal(wk_kv_reserve(&b, -1), LOOM_EINVAL);

	wk_kv_fini(&a); /* fini releases what is still held */
	wk_kv_fini(&b);
	assert_int_equal(wk_kvpool_free_blocks(p), 10);
	wk_kvpool_destroy(p);
}

static void test_table_growth(void **state)
{
	(void)state;
	wk_model m = shape_model(1, 2, 1, 4);
	wk_kvpool *p;
	wk_kv kv;
	const int bs = 4, total = 100;

	assert_int_equal(wk_kvpool_create(&m, total, bs, &p), LOOM_OK);
	wk_kv_init(&kv, p);
	/* one position at a time, as decoding does */
	for (int len = 0; len < total * bs; len++) {
		assert_int_equal(wk_kv_reserve(&kv, 1), LOOM_OK);
		kv.len++;
		assert_int_equal(kv.n_blocks, (kv.len + bs - 1) / bs);
		assert_int_equal(kv.capacity, kv.n_blocks * bs);
		assert_true(kv.cap_table >= kv.n_blocks);
	}
	assert_int_equal(wk_kvpool_free_blocks(p), 0);
	assert_true(kv.cap_table >= total);
	assert_int_equal(wk_kv_reserve(&kv, 1), LOOM_EBUSY);
	/* a fresh pool hands blocks out in order */
	for (int i = 0; i < total; i++)
		assert_int_equal(kv.blocks[i], i);
	wk_kv_fini(&kv);
	wk_kvpool_destroy(p);
}

static void test_bad_args_and_alloc_faults(void **state)
{
	(void)state;
	wk_model m = shape_model(2, 4, 2, 8);
	wk_kvpool *p = (wk_kvpool *)1;
	wk_kv *kv = (wk_kv *)1;

	assert_int_equal(wk_kvpool_create(&m, 0, 16, &p), LOOM_EINVAL);
	assert_null(p);
	assert_int_equal(wk_kvpool_create(&m, 4, 0, &p), LOOM_EINVAL);
	assert_int_equal(wk_kvpool_create(&m, 1 << 30, 1 << 30, &p), LOOM_ERANGE);
	assert_null(p);
	assert_int_equal(wk_kv_create(&m, 0, &kv), LOOM_EINVAL);
	assert_null(kv);

	/* capacity exact up to a block, rounded to blocks beyond */
	const struct {
		int want, got;
	} caps[] = { { 1, 1 }, { 4, 4 }, { 16, 16 }, { 17, 32 }, { 33, 48 } };
	for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++) {
		assert_int_equal(wk_kv_create(&m, caps[i].want, &kv), LOOM_OK);
		assert_int_equal(kv->capacity, caps[i].got);
		assert_int_equal(kv->len, 0);
		wk_kv_destroy(kv);
	}
	wk_kv_destroy(NULL);
	wk_kvpool_destroy(NULL);

	/* every allocation of create may fail: clean ENOMEM, nothing leaks */
	for (long n = 1; n < 20; n++) {
		loom_alloc_fail_after(n);
		loom_err rc = wk_kv_create(&m, 40, &kv);
		loom_alloc_fail_reset();
		if (rc == LOOM_OK) {
			wk_kv_destroy(kv);
			break;
		}
		assert_int_equal(rc, LOOM_ENOMEM);
		assert_null(kv);
	}

	/* a block table that cannot grow: ENOMEM, nothing taken */
	wk_kv s;
	assert_int_equal(wk_kvpool_create(&m, 64, 1, &p), LOOM_OK);
	wk_kv_init(&s, p);
	assert_int_equal(wk_kv_reserve(&s, 4), LOOM_OK);
	loom_alloc_fail_after(1);
	assert_int_equal(wk_kv_reserve(&s, 5), LOOM_ENOMEM);
	loom_alloc_fail_reset();
	assert_int_equal(s.n_blocks, 4);
	assert_int_equal(wk_kvpool_free_blocks(p), 60);
	wk_kv_fini(&s);
	wk_kvpool_destroy(p);
}

/* wk_kv_write puts position p's rows at slot p % bs of block blocks[p / bs]. */
static void test_write_layout(void **state)
{
	(void)state;
	wk_model m = shape_model(3, 4, 2, 2); /* kvdim 4 */
	wk_kvpool *p;
	wk_kv other, kv;
	const int kvdim = 4, bs = 4;
	float k[40 * 4], v[40 * 4];

	assert_int_equal(wk_kvpool_create(&m, 12, bs, &p), LOOM_OK);
	wk_kv_init(&other, p);
	wk_kv_init(&kv, p);
	/* interleave so kv's blocks are not consecutive */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(wk_kv_reserve(&other, bs), LOOM_OK);
		other.len += bs;
		assert_int_equal(wk_kv_reserve(&kv, bs), LOOM_OK);
		kv.len += bs;
	}
	kv.len = 0;
	for (int i = 0; i < 40 * kvdim; i++) {
		k[i] = (float)i;
		v[i] = -(float)i;
	}
	/* chunks that start and end mid-block, on layer 1 */
	const int chunks[] = { 1, 2, 6, 5, 1, 5 }; /* 20 positions */
	int at = 0;
	for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
		wk_kv_write(&kv, 1, k + at * kvdim, v + at * kvdim, chunks[c]);
		kv.len += chunks[c];
		at += chunks[c];
	}
	assert_int_equal(kv.len, 20);
	for (int pos = 0; pos < 20; pos++) {
		const float *kr = wk_kvpool_k(p, kv.blocks[pos / bs], 1) + (pos % bs) * kvdim;
		const float *vr = wk_kvpool_v(p, kv.blocks[pos / bs], 1) + (pos % bs) * kvdim;
		assert_memory_equal(kr, k + pos * kvdim, kvdim * sizeof(float));
		assert_memory_equal(vr, v + pos * kvdim, kvdim * sizeof(float));
	}
	/* the documented stride */
	for (int b = 0; b < 12; b++)
		assert_ptr_equal(wk_kvpool_k(p, b, 2),
				 wk_kvpool_k(p, 0, 2) + (size_t)b * wk_kvpool_block_floats(p));
	wk_kv_fini(&other);
	wk_kv_fini(&kv);
	wk_kvpool_destroy(p);
}

/* A BF16 pool (--kv-dtype bf16): half the bytes per position, each value
 * written rounded to nearest even (common/dtype.h), at the same slots and
 * strides (in elements) as a float32 pool. */
static void test_write_bf16(void **state)
{
	(void)state;
	wk_model m = shape_model(3, 4, 2, 2); /* kvdim 4 */
	const int kvdim = 4, bs = 4;
	assert_int_equal(wk_kv_bytes_per_position_dt(&m.cfg, WK_KV_BF16) * 2,
			 wk_kv_bytes_per_position(&m.cfg));
	wk_kvpool *p;
	assert_int_equal(wk_kvpool_create_dt(&m, 6, bs, WK_KV_BF16, &p), LOOM_OK);
	assert_int_equal(wk_kvpool_dtype(p), WK_KV_BF16);
	wk_kv kv;
	wk_kv_init(&kv, p);
	assert_int_equal(wk_kv_reserve(&kv, 10), LOOM_OK);
	float k[10 * 4], v[10 * 4];
	for (int i = 0; i < 10 * kvdim; i++) {
		k[i] = 1.0f + (float)i / 300.0f; /* not BF16 values: they round */
		v[i] = -3.0f * k[i];
	}
	wk_kv_write(&kv, 2, k, v, 3);
	kv.len = 3;
	wk_kv_write(&kv, 2, k + 3 * kvdim, v + 3 * kvdim, 7);
	kv.len = 10;
	int rounded = 0;
	for (int pos = 0; pos < 10; pos++) {
		const uint16_t *kr = (const uint16_t *)wk_kvpool_k_raw(p, kv.blocks[pos / bs], 2) +
				     (pos % bs) * kvdim;
		const uint16_t *vr = (const uint16_t *)wk_kvpool_v_raw(p, kv.blocks[pos / bs], 2) +
				     (pos % bs) * kvdim;
		for (int i = 0; i < kvdim; i++) {
			assert_int_equal(kr[i], loom_f32_to_bf16(k[pos * kvdim + i]));
			assert_int_equal(vr[i], loom_f32_to_bf16(v[pos * kvdim + i]));
			rounded += loom_bf16_to_f32(kr[i]) != k[pos * kvdim + i];
		}
	}
	assert_true(rounded > 0);
	for (int b = 0; b < 6; b++)
		assert_ptr_equal(wk_kvpool_k_raw(p, b, 1),
				 (const uint16_t *)wk_kvpool_k_raw(p, 0, 1) +
					 (size_t)b * wk_kvpool_block_floats(p));
	wk_kv_fini(&kv);
	wk_kvpool_destroy(p);
}

/* ---------------------------------------------------------------- */
/* paged attention vs the contiguous kernel                          */
/* ---------------------------------------------------------------- */

/* One sequence of n_ctx positions whose last n_q are queries, over a pool
 * shared with a filler sequence (blocks scattered). */
static void paged_vs_contiguous(int n_ctx, int n_q, int n_heads, int n_kv, int hd, int bs)
{
	wk_model m = shape_model(2, n_heads, n_kv, hd);
	int kvdim = n_kv * hd, qdim = n_heads * hd, pos0 = n_ctx - n_q;
	int n_blocks = 2 * ((n_ctx + bs - 1) / bs) + 2;
	wk_kvpool *p;
	wk_kv kv, filler;
	float *k = malloc(sizeof(float) * n_ctx * kvdim), *v = malloc(sizeof(float) * n_ctx * kvdim);
	float *q = malloc(sizeof(float) * n_q * qdim);
	float *want = malloc(sizeof(float) * n_q * qdim), *got = malloc(sizeof(float) * n_q * qdim);
	float scale = 1.0f / sqrtf((float)hd);

	for (int i = 0; i < n_ctx * kvdim; i++) {
		k[i] = rnd() * 2.0f;
		v[i] = rnd();
	}
	for (int i = 0; i < n_q * qdim; i++)
		q[i] = rnd() * 2.0f;
	assert_int_equal(wk_kvpool_create(&m, n_blocks, bs, &p), LOOM_OK);
	wk_kv_init(&kv, p);
	wk_kv_init(&filler, p);
	/* the filler takes a block first, then every other one */
	for (int pos = 0; pos < n_ctx; pos += bs) {
		assert_int_equal(wk_kv_reserve(&filler, bs), LOOM_OK);
		filler.len += bs;
		int n = n_ctx - pos < bs ? n_ctx - pos : bs;
		assert_int_equal(wk_kv_reserve(&kv, n), LOOM_OK);
		wk_kv_write(&kv, 1, k + (size_t)pos * kvdim, v + (size_t)pos * kvdim, n);
		kv.len += n;
	}
	kn_attention(want, q, n_q, pos0, k, v, n_heads, n_kv, hd, scale, 0, 0.0f);
	for (int i = 0; i < n_q * qdim; i++)
		got[i] = NAN;
	kn_attention_paged(got, q, n_q, pos0, wk_kvpool_k(p, 0, 1), wk_kvpool_v(p, 0, 1), kv.blocks,
			   bs, wk_kvpool_block_floats(p), n_heads, n_kv, hd, scale, 0, 0.0f);
	if (memcmp(got, want, sizeof(float) * n_q * qdim) != 0) {
		for (int i = 0; i < n_q * qdim; i++)
			if (got[i] != want[i])
				fail_msg("ctx %d, %d queries, bs %d: out[%d] = %.9g, contiguous %.9g",
					 n_ctx, n_q, bs, i, (double)got[i], (double)want[i]);
	}
	wk_kv_fini(&kv);
	wk_kv_fini(&filler);
	wk_kvpool_destroy(p);
	free(k), free(v), free(q), free(want), free(got);
}

static void test_paged_attention(void **state)
{
	(void)state;
	static const int lens[] = { 1, 15, 16, 17, 33 };
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		int n = lens[i];
		paged_vs_contiguous(n, 1, 4, 2, 8, 16);      /* decode, GQA 2 */
		paged_vs_contiguous(n, n, 4, 4, 8, 16);      /* whole prefill, MHA */
		paged_vs_contiguous(n, (n + 1) / 2, 8, 2, 6, 16); /* a chunk after a chunk */
		paged_vs_contiguous(n, 1, 4, 1, 8, 5);       /* odd block size */
		paged_vs_contiguous(n, n, 2, 2, 4, 1);       /* one position per block */
	}
}

/* ---------------------------------------------------------------- */
/* the forward pass through a shared pool                            */
/* ---------------------------------------------------------------- */

static void step(const wk_model *m, wk_scratch *s, wk_kv **kvs, int n, const int32_t *toks,
		 const int32_t *start, float *logits)
{
	wk_batch b = { .n_seqs = n, .seq_start = start, .tokens = toks, .kv = kvs };
	loom_err rc = wk_forward(m, &b, s, logits);
	if (rc)
		fail_msg("wk_forward: %s: %s", loom_strerror(rc), loom_errmsg());
}

static void test_forward_shared_pool(void **state)
{
	(void)state;
	wk_model *m;
	wk_scratch *s;
	wk_kvpool *pool;
	wk_kv a, b, *pa, *pb;
	int V;

	assert_int_equal(wk_model_load(lt_shared_path("models/stories260k"), "s", &m), LOOM_OK);
	V = m->cfg.vocab;
	assert_int_equal(wk_scratch_create(m, &s), LOOM_OK);
	assert_int_equal(wk_kvpool_create(m, 16, WK_KV_BLOCK, &pool), LOOM_OK);
	assert_int_equal(wk_kv_create(m, 80, &pa), LOOM_OK);
	assert_int_equal(wk_kv_create(m, 80, &pb), LOOM_OK);
	wk_kv_init(&a, pool);
	wk_kv_init(&b, pool);
	float *lg = malloc(sizeof(float) * 2 * V), *ref = malloc(sizeof(float) * 2 * V);
	int32_t ta[80], tb[80];
	for (int i = 0; i < 80; i++) {
		ta[i] = 3 + (i * 37) % (V - 3);
		tb[i] = 3 + (i * 91 + 5) % (V - 3);
	}
	ta[0] = tb[0] = 1;

	/* chunks of 7 and 5 so both cross block boundaries at different steps
	 * and their blocks interleave in the pool */
	int la = 0, lb = 0;
	while (la < 70) {
		int na = 7, nb = 5;
		int32_t toks[12], start[3] = { 0, na, na + nb };
		memcpy(toks, ta + la, sizeof(int32_t) * na);
		memcpy(toks + na, tb + lb, sizeof(int32_t) * nb);
		assert_int_equal(wk_kv_reserve(&a, na), LOOM_OK);
		assert_int_equal(wk_kv_reserve(&b, nb), LOOM_OK);
		step(m, s, (wk_kv *[]){ &a, &b }, 2, toks, start, lg);
		step(m, s, (wk_kv *[]){ pa, pb }, 2, toks, start, ref);
		assert_memory_equal(lg, ref, sizeof(float) * 2 * V);
		la += na;
		lb += nb;
	}
	assert_int_equal(a.len, 70);
	assert_int_equal(b.len, 50);
	assert_int_equal(wk_kvpool_free_blocks(pool), 16 - 5 - 4);

	/* a sequence without blocks for its tokens: ERANGE, nothing changed */
	int32_t one[1] = { 5 }, st1[2] = { 0, 1 };
	wk_kv c;
	wk_kv_init(&c, pool);
	wk_batch bad = { .n_seqs = 1, .seq_start = st1, .tokens = one, .kv = (wk_kv *[]){ &c } };
	assert_int_equal(wk_forward(m, &bad, s, lg), LOOM_ERANGE);
	/* a pool of another shape */
	wk_model other = shape_model(2, 4, 2, 8);
	wk_kvpool *op;
	wk_kv o;
	assert_int_equal(wk_kvpool_create(&other, 2, 16, &op), LOOM_OK);
	wk_kv_init(&o, op);
	assert_int_equal(wk_kv_reserve(&o, 1), LOOM_OK);
	bad.kv = (wk_kv *[]){ &o };
	assert_int_equal(wk_forward(m, &bad, s, lg), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "another model shape"));
	wk_kv_fini(&o);
	wk_kvpool_destroy(op);

	free(lg), free(ref);
	wk_kv_fini(&a);
	wk_kv_fini(&b);
	wk_kv_fini(&c);
	wk_kv_destroy(pa);
	wk_kv_destroy(pb);
	wk_kvpool_destroy(pool);
	wk_scratch_destroy(s);
	wk_model_destroy(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reserve_release),
		cmocka_unit_test(test_table_growth),
		cmocka_unit_test(test_bad_args_and_alloc_faults),
		cmocka_unit_test(test_write_layout),
		cmocka_unit_test(test_write_bf16),
		cmocka_unit_test(test_paged_attention),
		cmocka_unit_test(test_forward_shared_pool),
	};
	return cmocka_run_group_tests_name("worker/kv", tests, NULL, NULL);
}
