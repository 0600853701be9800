/*
 * tests/worker/test_invariance.c — batch invariance of the CPU forward,
 * bitwise: a sequence's logits are the same bits alone (one prefill, then
 * single-token decodes) and inside batches of every kind — prefilled in
 * chunks beside other sequences' decodes, decoding beside others' prefill
 * chunks, sharing its adapter's segment with other sequences or alone in
 * it, next to base-only and other-adapter sequences, after its cache was
 * dropped and recomputed (preemption) — for one and for two threads, on a
 * float32 model (stories260k) and on a BF16 model with adapters, with
 * float32 and with BF16 KV caches (--kv-dtype bf16).
 * Greedy ids rarely catch a 1e-7 difference, so logits are compared.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "tests/support/harness.h"
#include "worker/forward.h"
#include "worker/kv.h"
#include "worker/model.h"

#define NT 24 /* tokens of the watched sequence: 16 prompt + 8 decoded */
#define NP 16

static char *dir;
static wk_kv_dtype kv_dt = WK_KV_F32; /* the KV pools of the sequences */
static char bf16_model[600], ad_a[600], ad_b[600];

static int setup(void **state)
{
	(void)state;
	dir = lt_tmpdir("invariance");
	snprintf(bf16_model, sizeof bf16_model, "%s/m", dir);
	snprintf(ad_a, sizeof ad_a, "%s/a", dir);
	snprintf(ad_b, sizeof ad_b, "%s/b", dir);
	const char *mk = lt_bin_path("loom-mkmodel");
	if (lt_sh("'%s' model --out '%s' --family qwen2 --hidden 96 --ffn 160 --layers 2 --heads 4 "
		  "--kv-heads 2 --vocab 300 --ctx 128 --dtype bf16 --seed 3 >/dev/null", mk,
		  bf16_model) ||
	    lt_sh("'%s' adapter --model '%s' --out '%s' --rank 8 --alpha 16 --seed 4 --targets "
		  "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj >/dev/null", mk,
		  bf16_model, ad_a) ||
	    lt_sh("'%s' adapter --model '%s' --out '%s' --rank 4 --alpha 8 --seed 5 --targets "
		  "q_proj,v_proj,down_proj >/dev/null", mk, bf16_model, ad_b))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	lt_sh("rm -rf '%s'", dir);
	loom_free(dir);
	return 0;
}

typedef struct seqst {
	wk_kv *kv;
	const ad_adapter *ad;
	int32_t tok[64];
	int n, at; /* tokens, and how many are in the cache */
} seqst;

static void seq_init(seqst *q, const wk_model *m, const ad_adapter *ad, int seed, int n)
{
	memset(q, 0, sizeof *q);
	assert_int_equal(wk_kv_create_dt(m, 64, kv_dt, &q->kv), LOOM_OK);
	q->ad = ad;
	q->n = n;
	for (int i = 0; i < n; i++)
		q->tok[i] = (int32_t)((seed * 131 + i * 37 + i * i * 7) % m->cfg.vocab);
}

/*
 * One step: sequence i of qs brings cnt[i] tokens (0 = sits out). Sequences
 * are ordered as given (callers keep adapters consecutive); logits of each
 * participating sequence's last token go to out[i] ([vocab]).
 */
static void step(const wk_model *m, wk_scratch *s, seqst *qs, int nq, const int *cnt, float **out)
{
	int32_t ss[9], toks[256], sg[9];
	const ad_adapter *sa[8];
	wk_kv *kvs[8];
	int idx[8], n = 0, T = 0, nseg = 0, any_ad = 0;
	ss[0] = 0;
	for (int i = 0; i < nq; i++) {
		if (!cnt[i])
			continue;
		memcpy(toks + T, qs[i].tok + qs[i].at, sizeof(int32_t) * (size_t)cnt[i]);
		T += cnt[i];
		kvs[n] = qs[i].kv;
		idx[n++] = i;
		ss[n] = T;
		if (nseg == 0 || sa[nseg - 1] != qs[i].ad) {
			sg[nseg] = T - cnt[i];
			sa[nseg++] = qs[i].ad;
		}
		any_ad |= qs[i].ad != NULL;
	}
	sg[nseg] = T;
	float *lg = malloc(sizeof(float) * (size_t)n * m->cfg.vocab);
	wk_batch b = {.n_seqs = n, .seq_start = ss, .tokens = toks, .kv = kvs, .all_logits = 0,
		      .n_segs = any_ad ? nseg : 0, .seg_start = sg, .seg_adapter = sa};
	loom_err rc = wk_forward(m, &b, s, lg);
	if (rc)
		fail_msg("wk_forward: %s", loom_errmsg());
	for (int k = 0; k < n; k++) {
		qs[idx[k]].at += cnt[idx[k]];
		if (out && out[idx[k]])
			memcpy(out[idx[k]], lg + (size_t)k * m->cfg.vocab, sizeof(float) * m->cfg.vocab);
	}
	free(lg);
}

/* The watched sequence alone: want[0] after the prompt, want[1..] per decode. */
static void alone(const wk_model *m, const ad_adapter *ad, float *want)
{
	wk_scratch *s;
	seqst q;
	int V = m->cfg.vocab;
	assert_int_equal(wk_scratch_create(m, &s), LOOM_OK);
	seq_init(&q, m, ad, 1, NT);
	int c = NP;
	float *o[1] = {want};
	step(m, s, &q, 1, &c, o);
	for (int k = 1; k <= NT - NP; k++) {
		c = 1;
		o[0] = want + (size_t)k * V;
		step(m, s, &q, 1, &c, o);
	}
	wk_kv_destroy(q.kv);
	wk_scratch_destroy(s);
}

static void expect_same(const float *got, const float *want, int V, const char *what, int k)
{
	if (memcmp(got, want, sizeof(float) * (size_t)V) != 0) {
		int i = 0;
		while (got[i] == want[i])
			i++;
		fail_msg("%s, output %d: logit %d is %.9g, alone %.9g", what, k, i, got[i], want[i]);
	}
}

/*
 * The watched sequence (index w of 5) amid others, in batches of every
 * kind: its prompt in chunks of 5, 7 and 4 beside two sequences decoding
 * and one prefilling; then its decodes beside prefills and decodes; then its
 * cache dropped (preempted) and recomputed in one chunk with the others,
 * and its last decode.
 */
static void amid(const wk_model *m, const ad_adapter *const ads[5], int w, const float *want,
		 const char *what)
{
	wk_scratch *s;
	seqst qs[5];
	int V = m->cfg.vocab;
	float *got = malloc(sizeof(float) * (size_t)V);
	assert_int_equal(wk_scratch_create(m, &s), LOOM_OK);
	for (int i = 0; i < 5; i++)
		seq_init(&qs[i], m, ads[i], i == w ? 1 : 10 + i, i == w ? NT : 60);
	float *out[5] = {0};
	/* others get ahead a bit */
	int c0[5] = {3, 3, 3, 3, 3};
	c0[w] = 0;
	step(m, s, qs, 5, c0, NULL);
	int chunks[3] = {5, 7, 4};
	for (int k = 0; k < 3; k++) {
		int c[5] = {1, 6, 1, 2, 1};
		c[w] = chunks[k];
		out[w] = got;
		step(m, s, qs, 5, c, out);
	}
	expect_same(got, want, V, what, 0);
	for (int k = 1; k <= NT - NP - 1; k++) {
		int c[5] = {1 + (k % 3), 1, 4, 1, 2};
		c[w] = 1;
		step(m, s, qs, 5, c, out);
		expect_same(got, want + (size_t)k * V, V, what, k);
	}
	/* preempted: the cache is dropped, then the prompt and the tokens
	 * produced so far are prefilled again in one chunk beside others */
	int redo = qs[w].at;
	wk_kv_destroy(qs[w].kv);
	assert_int_equal(wk_kv_create_dt(m, 64, kv_dt, &qs[w].kv), LOOM_OK);
	qs[w].at = 0;
	int c[5] = {1, 1, 3, 1, 1};
	c[w] = redo;
	step(m, s, qs, 5, c, out);
	expect_same(got, want + (size_t)(NT - NP - 1) * V, V, what, NT - NP - 1);
	c[w] = 1;
	step(m, s, qs, 5, c, out);
	expect_same(got, want + (size_t)(NT - NP) * V, V, what, NT - NP);
	for (int i = 0; i < 5; i++)
		wk_kv_destroy(qs[i].kv);
	wk_scratch_destroy(s);
	free(got);
}

static void run_model(const char *path, int with_adapters)
{
	for (int th = 1; th <= 2; th++) {
		wk_forward_threads(th);
		wk_model *m;
		assert_int_equal(wk_model_load(path, "m", &m), LOOM_OK);
		ad_adapter *a = NULL, *b = NULL;
		if (with_adapters) {
			assert_int_equal(ad_adapter_load(ad_a, "a", &m->cfg, &a), LOOM_OK);
			assert_int_equal(ad_adapter_load(ad_b, "b", &m->cfg, &b), LOOM_OK);
		}
		int V = m->cfg.vocab;
		float *want = malloc(sizeof(float) * (size_t)(NT - NP + 1) * V);
		char what[128];
		/* base alone, amid base and adapters */
		alone(m, NULL, want);
		const ad_adapter *mix1[5] = {NULL, NULL, a, a, b};
		snprintf(what, sizeof what, "%s, %d threads, base amid base%s", path, th,
			 with_adapters ? " and adapters" : "");
		amid(m, mix1, 1, want, what);
		if (with_adapters) {
			/* on adapter a: sharing a's segment with two others, then alone in it */
			alone(m, a, want);
			const ad_adapter *mix2[5] = {NULL, a, a, a, b};
			snprintf(what, sizeof what, "%s, %d threads, adapter in a shared segment", path,
				 th);
			amid(m, mix2, 2, want, what);
			const ad_adapter *mix3[5] = {b, b, a, NULL, NULL};
			snprintf(what, sizeof what, "%s, %d threads, adapter alone in its segment", path,
				 th);
			amid(m, mix3, 2, want, what);
		}
		free(want);
		ad_adapter_destroy(a);
		ad_adapter_destroy(b);
		wk_model_destroy(m);
	}
	wk_forward_threads(1);
}

static void f32_model(void **state)
{
	(void)state;
	run_model(lt_shared_path("models/stories260k"), 0);
}

static void bf16_model_adapters(void **state)
{
	(void)state;
	run_model(bf16_model, 1);
}

/* A BF16 KV cache keeps every invariance above; its logits differ from the
 * float32 cache's (the K/V are rounded) by what that rounding allows. */
static void bf16_kv_cache(void **state)
{
	(void)state;
	kv_dt = WK_KV_BF16;
	run_model(bf16_model, 1);
	wk_model *m;
	assert_int_equal(wk_model_load(bf16_model, "m", &m), LOOM_OK);
	size_t n = (size_t)(NT - NP + 1) * m->cfg.vocab;
	float *h = malloc(sizeof(float) * n), *f = malloc(sizeof(float) * n);
	assert_true(h && f);
	alone(m, NULL, h);
	kv_dt = WK_KV_F32;
	alone(m, NULL, f);
	double worst = 0, scale = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)h[i] - f[i]);
		worst = d > worst ? d : worst;
		scale = fabs((double)f[i]) > scale ? fabs((double)f[i]) : scale;
	}
	print_message("bf16 KV: worst |logit - float32 KV's| %.3g of max |logit| %.3g\n", worst,
		      scale);
	assert_true(worst > 0);             /* the rounded cache is really used */
	assert_true(worst <= 0.02 * scale); /* and only rounds */
	free(h), free(f);
	wk_model_destroy(m);
}

/* One and two threads give the same bits too. */
static void threads_agree(void **state)
{
	(void)state;
	float *w[2];
	for (int th = 1; th <= 2; th++) {
		wk_forward_threads(th);
		wk_model *m;
		assert_int_equal(wk_model_load(bf16_model, "m", &m), LOOM_OK);
		w[th - 1] = malloc(sizeof(float) * (size_t)(NT - NP + 1) * m->cfg.vocab);
		alone(m, NULL, w[th - 1]);
		if (th == 2)
			assert_memory_equal(w[0], w[1], sizeof(float) * (NT - NP + 1) * m->cfg.vocab);
		wk_model_destroy(m);
	}
	wk_forward_threads(1);
	free(w[0]), free(w[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(f32_model),
		cmocka_unit_test(bf16_model_adapters),
		cmocka_unit_test(bf16_kv_cache),
		cmocka_unit_test(threads_agree),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
