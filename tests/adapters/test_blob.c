/*
 * tests/adapters/test_blob.c — the adapter blob (ad_adapter_serialize /
 * ad_adapter_from_blob): a round trip gives the loaded adapter bit for bit
 * (copy and zero-copy, all seven targets and a sparse rslora/bf16 one),
 * serializing again gives the same bytes, every truncation and every
 * corrupted byte of the header, the module table and the offsets is an
 * error (never a crash; each blob sits in an exact-size allocation so a
 * sanitizer build sees any over-read), a blob for another base model is
 * refused, NaN weights are refused, allocation failures unwind; the BF16
 * copy (ad_adapter_to_bf16) rounds each value as loom_f32_to_bf16 does.
 *
 * Adapters are made here with loom-mkmodel adapter for stories260k.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "common/dtype.h"
#include "common/model_config.h"
#include "tests/support/harness.h"

static char *tmp;
static loom_model_config base, other;
static ad_adapter *full, *sparse;

static ad_adapter *make(const char *tag, const char *args)
{
	char dir[800];
	ad_adapter *a = NULL;

	snprintf(dir, sizeof dir, "%s/%s", tmp, tag);
	if (lt_sh("'%s' adapter --model '%s' --out '%s' %s >&2", lt_bin_path("loom-mkmodel"),
		  lt_shared_path("models/stories260k"), dir, args) != 0)
		return NULL;
	if (ad_adapter_load(dir, tag, &base, &a)) {
		fprintf(stderr, "%s\n", loom_errmsg());
		return NULL;
	}
	return a;
}

static int setup(void **state)
{
	(void)state;
	tmp = lt_tmpdir("blob");
	if (loom_model_config_load(lt_shared_path("models/stories260k"), &base) ||
	    loom_model_config_load(lt_shared_path("models/babyllama105"), &other))
		return -1;
	full = make("full", "--rank 8 --alpha 16 --seed 3 "
		    "--targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj");
	sparse = make("sparse", "--rank 4 --alpha 8 --seed 5 --targets q_proj,v_proj,down_proj "
		      "--layers 0,3 --rslora --dtype bf16");
	return full && sparse ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	ad_adapter_destroy(full);
	ad_adapter_destroy(sparse);
	loom_free(tmp);
	return 0;
}

/* ---- helpers ---- */

static void assert_same(const ad_adapter *x, const ad_adapter *y)
{
	assert_int_equal(x->n_layers, y->n_layers);
	assert_memory_equal(x->d_in, y->d_in, sizeof x->d_in);
	assert_memory_equal(x->d_out, y->d_out, sizeof x->d_out);
	assert_int_equal(x->targets, y->targets);
	assert_int_equal(x->max_rank, y->max_rank);
	assert_int_equal(x->base_rank, y->base_rank);
	assert_memory_equal(&x->base_alpha, &y->base_alpha, sizeof(float));
	assert_int_equal(x->use_rslora, y->use_rslora);
	assert_int_equal(x->bytes, y->bytes);
	for (int l = 0; l < x->n_layers; l++)
		for (int t = 0; t < AD_N_TARGETS; t++) {
			const ad_module *p = ad_mod(x, l, t), *q = ad_mod(y, l, t);
			assert_int_equal(p->rank, q->rank);
			if (!p->rank)
				continue;
			assert_memory_equal(&p->scale, &q->scale, sizeof(float));
			assert_memory_equal(p->a, q->a, (size_t)p->rank * x->d_in[t] * sizeof(float));
			assert_memory_equal(p->bt, q->bt, (size_t)p->rank * x->d_out[t] * sizeof(float));
		}
}

/* A fresh exact-size copy of len bytes of b. */
static uint8_t *dup_exact(const void *b, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);
	assert_non_null(p);
	memcpy(p, b, len);
	return p;
}

static size_t data_off(const uint8_t *b)
{
	size_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (size_t)b[104 + i] << (8 * i);
	return v;
}

/* ---- cases ---- */

static void round_trip(const ad_adapter *src)
{
	void *blob, *again;
	size_t len, len2;
	ad_adapter *c = NULL, *z = NULL;

	assert_int_equal(ad_adapter_serialize(src, &blob, &len), LOOM_OK);
	assert_int_equal(ad_adapter_from_blob(blob, len, "copy", &base, 1, &c), LOOM_OK);
	assert_string_equal(c->name, "copy");
	assert_same(src, c);
	/* the copy owns its arena: the blob may go */
	assert_non_null(c->arena);
	assert_int_equal(ad_adapter_serialize(c, &again, &len2), LOOM_OK);
	assert_int_equal(len, len2);
	assert_memory_equal(blob, again, len);
	loom_free(again);
	/* zero-copy: the weights are the blob's bytes */
	assert_int_equal(ad_adapter_from_blob(blob, len, "view", &base, 0, &z), LOOM_OK);
	assert_null(z->arena);
	assert_same(src, z);
	for (int i = 0; i < z->n_layers * AD_N_TARGETS; i++)
		if (z->mods[i].rank)
			assert_true((const uint8_t *)z->mods[i].a >= (const uint8_t *)blob &&
				    (const uint8_t *)z->mods[i].bt < (const uint8_t *)blob + len);
	/* the packed q/k/v A blocks stay adjacent (forward_lora.c fuses them) */
	for (int l = 0; l < z->n_layers; l++) {
		const ad_module *q = ad_mod(z, l, AD_Q), *k = ad_mod(z, l, AD_K);
		if (q->rank && k->rank)
			assert_ptr_equal(q->a + (size_t)q->rank * z->d_in[AD_Q], k->a);
	}
	ad_adapter_destroy(z);
	ad_adapter_destroy(c);
	loom_free(blob);
}

static void round_trip_full(void **state)
{
	(void)state;
	round_trip(full);
}

static void round_trip_sparse(void **state)
{
	(void)state;
	assert_true(sparse->use_rslora);
	round_trip(sparse);
}

/* LMDB values are 16-byte aligned: zero-copy works there; an unaligned
 * buffer is refused. */
static void zero_copy_alignment(void **state)
{
	(void)state;
	void *blob;
	size_t len;
	ad_adapter *z = NULL;
	uint8_t *raw;

	assert_int_equal(ad_adapter_serialize(full, &blob, &len), LOOM_OK);
	raw = malloc(len + 64);
	assert_non_null(raw);
	uint8_t *at16 = (uint8_t *)(((uintptr_t)raw + 63) & ~(uintptr_t)63) + 16;
	uint8_t *at2 = at16 - 14;
	memcpy(at16, blob, len);
	assert_int_equal(ad_adapter_from_blob(at16, len, "v16", &base, 0, &z), LOOM_OK);
	assert_same(full, z);
	ad_adapter_destroy(z);
	memmove(at2, at16, len);
	assert_int_equal(ad_adapter_from_blob(at2, len, "v2", &base, 0, &z), LOOM_EINVAL);
	assert_null(z);
	assert_non_null(strstr(loom_errmsg(), "aligned"));
	/* copy mode takes any alignment */
	assert_int_equal(ad_adapter_from_blob(at2, len, "c2", &base, 1, &z), LOOM_OK);
	assert_same(full, z);
	ad_adapter_destroy(z);
	free(raw);
	loom_free(blob);
}

static void truncations(void **state)
{
	(void)state;
	void *blob;
	size_t len;

	assert_int_equal(ad_adapter_serialize(full, &blob, &len), LOOM_OK);
	for (size_t n = 0; n < len; n++) {
		uint8_t *p = dup_exact(blob, n);
		ad_adapter *a = (ad_adapter *)1;
		for (int copy = 0; copy < 2; copy++) {
			loom_err rc = ad_adapter_from_blob(p, n, "t", &base, copy, &a);
			if (rc == LOOM_OK)
				fail_msg("a blob cut to %zu of %zu bytes was accepted", n, len);
			assert_int_equal(rc, LOOM_EFORMAT);
			assert_null(a);
		}
		free(p);
	}
	/* and one byte too many */
	uint8_t *p = malloc(len + 1);
	ad_adapter *a;
	memcpy(p, blob, len);
	p[len] = 0;
	assert_int_equal(ad_adapter_from_blob(p, len + 1, "t", &base, 1, &a), LOOM_EFORMAT);
	free(p);
	loom_free(blob);
}

/* Bytes whose change may still be a valid adapter (a value, not a size or
 * an offset): base_rank, base_alpha, use_rslora, and each entry's scale. */
static bool value_byte(size_t i)
{
	if (i >= 72 && i < 84)
		return true;
	return i >= 128 && (i - 128) % 24 >= 4 && (i - 128) % 24 < 8;
}

static void corruption_one(const void *blob, size_t len, const char *what)
{
	static const uint8_t masks[] = { 0xff, 0x01, 0x80, 0x10 };
	size_t end = data_off(blob);

	for (size_t i = 0; i < end; i++) {
		for (size_t k = 0; k < sizeof masks; k++) {
			uint8_t *p = dup_exact(blob, len);
			ad_adapter *a = NULL;
			p[i] ^= masks[k];
			for (int copy = 0; copy < 2; copy++) {
				loom_err rc = ad_adapter_from_blob(p, len, "c", &base, copy, &a);
				if (rc == LOOM_OK) {
					if (!value_byte(i))
						fail_msg("%s: byte %zu ^ 0x%02x was accepted", what, i,
							 masks[k]);
					ad_adapter_destroy(a);
				} else {
					assert_true(rc == LOOM_EFORMAT || rc == LOOM_EINVAL);
					assert_null(a);
					assert_non_null(strstr(loom_errmsg(), "adapter blob c"));
				}
			}
			free(p);
		}
	}
}

static void corruptions(void **state)
{
	(void)state;
	void *blob;
	size_t len;

	assert_int_equal(ad_adapter_serialize(full, &blob, &len), LOOM_OK);
	corruption_one(blob, len, "full");
	loom_free(blob);
	assert_int_equal(ad_adapter_serialize(sparse, &blob, &len), LOOM_OK);
	corruption_one(blob, len, "sparse");
	loom_free(blob);
}

static void wrong_base_and_values(void **state)
{
	(void)state;
	void *blob;
	size_t len;
	ad_adapter *a = NULL;
	loom_model_config deeper = base;

	assert_int_equal(ad_adapter_serialize(full, &blob, &len), LOOM_OK);
	/* babyllama105: same layer count, other widths */
	assert_int_equal(ad_adapter_from_blob(blob, len, "w", &other, 1, &a), LOOM_EINVAL);
	assert_null(a);
	assert_non_null(strstr(loom_errmsg(), "q_proj maps 64 -> 64"));
	deeper.n_layers = 6;
	assert_int_equal(ad_adapter_from_blob(blob, len, "w", &deeper, 0, &a), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "n_layers 5"));
	/* a NaN weight */
	uint8_t *p = dup_exact(blob, len);
	float nan = NAN;
	memcpy(p + len - 4, &nan, 4);
	assert_int_equal(ad_adapter_from_blob(p, len, "nan", &base, 1, &a), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "non-finite"));
	assert_int_equal(ad_adapter_from_blob(p, len, "nan", &base, 0, &a), LOOM_EFORMAT);
	free(p);
	/* a name too long, no buffer */
	char longname[200];
	memset(longname, 'n', sizeof longname - 1);
	longname[sizeof longname - 1] = 0;
	assert_int_equal(ad_adapter_from_blob(blob, len, longname, &base, 1, &a), LOOM_EINVAL);
	assert_int_equal(ad_adapter_from_blob(NULL, 0, "x", &base, 1, &a), LOOM_EINVAL);
	loom_free(blob);
}

static void alloc_failures(void **state)
{
	(void)state;
	void *blob = NULL;
	size_t len = 0;
	ad_adapter *a = NULL;
	bool ok = false;

	for (long n = 1; n < 20 && !ok; n++) {
		loom_alloc_fail_after(n);
		loom_err rc = ad_adapter_serialize(full, &blob, &len);
		loom_alloc_fail_reset();
		ok = rc == LOOM_OK;
		if (!ok) {
			assert_int_equal(rc, LOOM_ENOMEM);
			assert_null(blob);
		}
	}
	assert_true(ok);
	for (int copy = 0; copy < 2; copy++) {
		ok = false;
		for (long n = 1; n < 20 && !ok; n++) {
			loom_alloc_fail_after(n);
			loom_err rc = ad_adapter_from_blob(blob, len, "f", &base, copy, &a);
			loom_alloc_fail_reset();
			ok = rc == LOOM_OK;
			if (!ok) {
				assert_int_equal(rc, LOOM_ENOMEM);
				assert_null(a);
			}
		}
		assert_true(ok);
		ad_adapter_destroy(a);
	}
	loom_free(blob);
}

/* The BF16 copy (ad_adapter_to_bf16): every value rounded to nearest even
 * (exact for an adapter made from BF16 tensors, within half a BF16 step
 * otherwise), ranks, scales and shapes kept, half the bytes, 64-byte
 * aligned, float32 pointers gone; a BF16 adapter is not converted twice;
 * allocation failures unwind. */
static void check_bf16(const ad_adapter *src, bool exact)
{
	ad_adapter *b = NULL;
	assert_int_equal(ad_adapter_to_bf16(src, &b), LOOM_OK);
	assert_int_equal(b->bf16, 1);
	assert_int_equal(b->bytes * 2, src->bytes);
	assert_int_equal(b->n_layers, src->n_layers);
	assert_int_equal(b->targets, src->targets);
	assert_int_equal(b->max_rank, src->max_rank);
	assert_string_equal(b->name, src->name);
	size_t n = 0;
	for (int l = 0; l < src->n_layers; l++)
		for (int t = 0; t < AD_N_TARGETS; t++) {
			const ad_module *m = ad_mod(src, l, t), *d = ad_mod(b, l, t);
			assert_int_equal(d->rank, m->rank);
			assert_true(d->scale == m->scale);
			assert_null(d->a);
			assert_null(d->bt);
			if (m->rank == 0) {
				assert_null(d->a16);
				continue;
			}
			assert_int_equal((uintptr_t)d->a16 % 64, 0);
			assert_int_equal((uintptr_t)d->bt16 % 64, 0);
			size_t na = (size_t)m->rank * src->d_in[t];
			size_t nb = (size_t)m->rank * src->d_out[t];
			for (size_t i = 0; i < na + nb; i++) {
				float v = i < na ? m->a[i] : m->bt[i - na];
				uint16_t h = i < na ? d->a16[i] : d->bt16[i - na];
				float back = loom_bf16_to_f32(h);
				assert_int_equal(h, loom_f32_to_bf16(v));
				if (exact)
					assert_true(back == v);
				else
					assert_true(fabsf(back - v) <= fabsf(v) * (1.0f / 256));
			}
			n += na + nb;
		}
	assert_int_equal(n * 2, b->bytes);
	/* the source's block order is kept: A blocks adjacent there (q, k, v of
	 * a layer, adapter.h) are adjacent in the copy, so the forward still
	 * shrinks them as one packed A */
	int adjacent = 0;
	for (int l = 0; l < src->n_layers; l++)
		for (int t = AD_Q; t < AD_V; t++) {
			const ad_module *m = ad_mod(src, l, t), *m1 = ad_mod(src, l, t + 1);
			if (m->rank == 0 || m1->rank == 0 ||
			    m->a + (size_t)m->rank * src->d_in[t] != m1->a)
				continue;
			const ad_module *d = ad_mod(b, l, t), *d1 = ad_mod(b, l, t + 1);
			assert_ptr_equal(d->a16 + (size_t)d->rank * src->d_in[t], d1->a16);
			adjacent++;
		}
	assert_true(adjacent > 0 || !(src->targets & (1u << AD_K)));
	/* exact: every value survives the rounding (what --adapter-dtype auto
	 * asks before holding an adapter as BF16) */
	assert_int_equal(ad_adapter_bf16_exact(src), exact);
	assert_true(ad_adapter_bf16_exact(b));
	ad_adapter *again = NULL;
	assert_int_equal(ad_adapter_to_bf16(b, &again), LOOM_EINVAL);
	assert_null(again);
	ad_adapter_destroy(b);
}

static void bf16_copy(void **state)
{
	(void)state;
	check_bf16(full, false);
	check_bf16(sparse, true); /* made from BF16 tensors */
	bool ok = false;
	for (long n = 1; n < 10 && !ok; n++) {
		ad_adapter *b = NULL;
		loom_alloc_fail_after(n);
		loom_err rc = ad_adapter_to_bf16(full, &b);
		loom_alloc_fail_reset();
		ok = rc == LOOM_OK;
		if (!ok) {
			assert_int_equal(rc, LOOM_ENOMEM);
			assert_null(b);
		}
		ad_adapter_destroy(b);
	}
	assert_true(ok);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip_full),
		cmocka_unit_test(round_trip_sparse),
		cmocka_unit_test(zero_copy_alignment),
		cmocka_unit_test(truncations),
		cmocka_unit_test(corruptions),
		cmocka_unit_test(wrong_base_and_values),
		cmocka_unit_test(alloc_failures),
		cmocka_unit_test(bf16_copy),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
