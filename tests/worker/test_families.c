/*
 * tests/worker/test_families.c — loom's CPU forward on every model family
 * it loads (Llama, Llama 3 and the other rope scalings, Qwen2, Qwen3,
 * Mistral, Gemma 2), held against the independent float64 reference of
 * tests/support/ref_llm (written from HF transformers' modeling code).
 *
 * Each case writes a random model of its family with loom-mkmodel (and a
 * random q,k,v,o,gate,up,down LoRA adapter for it), then:
 *   1. proves the family differs from plain Llama where it claims to: the
 *      reference with one feature ablated (bias, q/k norm, window, soft
 *      caps, rope scaling, ...) must move the logits by > 1e-2 relative,
 *      so a forward that ignored the field would fail step 2;
 *   2. runs loom (wk_model_load, wk_forward on a paged cache of 4-position
 *      blocks) over a 40-token prompt, which crosses the 16-token windows
 *      and the 32-position original_max_position_embeddings: as one
 *      prefill with all logits, and as chunks 13 + 17 then single-token
 *      decodes; every logits row must match the reference to a relative
 *      L2 error < 1e-4; then the same with the adapter (batch segments),
 *      against the reference with the adapter merged.
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

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "tests/support/harness.h"
#include "tests/support/ref_llm.h"
#include "worker/forward.h"
#include "worker/kv.h"
#include "worker/model.h"

enum { N_TOK = 40, BLOCK = 4 };

typedef struct fam_case {
	const char *name;
	const char *args;        /* loom-mkmodel model flags after --out */
	unsigned must_matter[8]; /* ablations, one at a time, that must change the logits */
} fam_case;

#define SHAPE "--hidden 64 --ffn 96 --layers 2 --heads 4 --kv-heads 2 --vocab 300 --seed 5"

static const fam_case cases[] = {
	{ "llama", "--family llama " SHAPE " --ctx 128", { 0 } },
	{ "llama-bias", "--family llama " SHAPE " --ctx 128 --attention-bias --mlp-bias",
	  { REF_NO_BIAS } },
	{ "llama3", "--family llama3 " SHAPE " --ctx 256 --tied", { REF_NO_ROPE_SCALING } },
	{ "llama-linear", "--family llama " SHAPE " --ctx 128 --rope-scaling linear --rope-factor 4",
	  { REF_NO_ROPE_SCALING } },
	/* HF's dynamic NTK scales past max_position_embeddings: keep it = the
	 * original 32 so the 40-token prompt crosses it */
	{ "llama-dynamic",
	  "--family llama " SHAPE " --ctx 32 --rope-scaling dynamic --rope-factor 4 "
	  "--rope-original-max 32",
	  { REF_NO_ROPE_SCALING } },
	/* yarn: max_position_embeddings = factor x original, so every HF
	 * version derives the same factor */
	{ "llama-yarn",
	  "--family llama " SHAPE " --ctx 128 --rope-scaling yarn --rope-factor 4 "
	  "--rope-original-max 32",
	  { REF_NO_ROPE_SCALING } },
	{ "qwen2", "--family qwen2 " SHAPE " --ctx 128", { REF_NO_BIAS } },
	{ "qwen2-window", "--family qwen2 " SHAPE " --ctx 128 --sliding-window 16 --max-window-layers 1",
	  { REF_NO_BIAS, REF_NO_WINDOW } },
	{ "qwen3", "--family qwen3 " SHAPE " --ctx 128", { REF_NO_QK_NORM } },
	{ "mistral", "--family mistral " SHAPE " --ctx 128 --sliding-window 16", { REF_NO_WINDOW } },
	{ "gemma2", "--family gemma2 " SHAPE " --ctx 128",
	  { REF_NO_WINDOW, REF_NO_ATTN_SOFTCAP, REF_NO_FINAL_SOFTCAP, REF_PLAIN_NORM,
	    REF_NO_EMBED_SCALE, REF_NO_SANDWICH, REF_SILU, REF_HEAD_DIM_SCALE } },
};

static const char *ablation_name(unsigned a)
{
	switch (a) {
	case REF_NO_BIAS: return "biases";
	case REF_NO_QK_NORM: return "q_norm/k_norm";
	case REF_NO_WINDOW: return "sliding window";
	case REF_NO_ATTN_SOFTCAP: return "attention soft-cap";
	case REF_NO_FINAL_SOFTCAP: return "final soft-cap";
	case REF_NO_ROPE_SCALING: return "rope scaling";
	case REF_PLAIN_NORM: return "(1+w) norms";
	case REF_NO_EMBED_SCALE: return "embedding x sqrt(d)";
	case REF_NO_SANDWICH: return "sandwich norms";
	case REF_SILU: return "gelu_pytorch_tanh";
	case REF_HEAD_DIM_SCALE: return "query_pre_attn_scalar";
	default: return "?";
	}
}

/* Worst relative L2 distance of a row of a from the same row of b. */
static double rows_rel(const double *a, const double *b, int n, int V)
{
	double worst = 0;
	for (int t = 0; t < n; t++) {
		double num = 0, den = 0;
		for (int i = 0; i < V; i++) {
			double e = a[(size_t)t * V + i] - b[(size_t)t * V + i];
			num += e * e;
			den += b[(size_t)t * V + i] * b[(size_t)t * V + i];
		}
		double rel = sqrt(num / den);
		worst = rel > worst || isnan(rel) ? rel : worst;
	}
	return worst;
}

static double rows_rel_f(const float *got, const double *want, int n, int V)
{
	double worst = 0;
	for (int t = 0; t < n; t++) {
		double num = 0, den = 0;
		for (int i = 0; i < V; i++) {
			double e = (double)got[(size_t)t * V + i] - want[(size_t)t * V + i];
			num += e * e;
			den += want[(size_t)t * V + i] * want[(size_t)t * V + i];
		}
		double rel = sqrt(num / den);
		worst = rel > worst || isnan(rel) ? rel : worst;
	}
	return worst;
}

static ref_llm *ref_or_fail(const char *dir, const char *adapter)
{
	ref_llm *r = NULL;
	if (ref_llm_load(dir, adapter, &r) != 0) {
		print_error("ref_llm_load %s: %s\n", dir, ref_llm_errmsg());
		fail();
	}
	return r;
}

/* Step 1: every listed feature moves the reference's logits. */
static void check_features(const fam_case *fc, ref_llm *r, const int32_t *tok,
			   const double *want)
{
	int V = ref_llm_vocab(r);
	double *alt = malloc(sizeof(double) * N_TOK * V);
	assert_non_null(alt);
	for (int i = 0; i < 8 && fc->must_matter[i]; i++) {
		unsigned a = fc->must_matter[i];
		ref_llm_ablate(r, a);
		assert_int_equal(ref_llm_forward(r, tok, N_TOK, alt), 0);
		double d = rows_rel(alt, want, N_TOK, V);
		printf("  %-14s without %-24s logits move by %.3g\n", fc->name, ablation_name(a), d);
		if (!(d > 1e-2)) {
			print_error("%s: the %s do not change the logits (%.3g): the test could not "
				    "catch a forward that ignores them\n", fc->name, ablation_name(a), d);
			fail();
		}
		if (a == REF_NO_FINAL_SOFTCAP) {
			/* the cap (30) must bend the logits, not sit far above them */
			double mx = 0;
			for (size_t k = 0; k < (size_t)N_TOK * V; k++)
				mx = fmax(mx, fabs(alt[k]));
			printf("  %-14s largest uncapped logit / 30 = %.2f\n", fc->name, mx / 30);
			assert_true(mx / 30 > 0.5);
		}
	}
	ref_llm_ablate(r, 0);
	free(alt);
}

/* Runs tok[from..to) through loom as one batch, all logits, into lg rows. */
static void loom_chunk(const wk_model *m, wk_scratch *s, wk_kv *kv, const ad_adapter *a,
		       const int32_t *tok, int from, int to, float *lg)
{
	int cnt = to - from, V = m->cfg.vocab;
	int32_t ss[2] = { 0, cnt }, sg[2] = { 0, cnt };
	const ad_adapter *sa[1] = { a };
	wk_kv *kvs[1] = { kv };
	assert_int_equal(wk_kv_reserve(kv, cnt), LOOM_OK);
	wk_batch b = { .n_seqs = 1, .seq_start = ss, .tokens = tok + from, .kv = kvs,
		       .all_logits = 1, .n_segs = a ? 1 : 0, .seg_start = sg, .seg_adapter = sa };
	loom_err rc = wk_forward(m, &b, s, lg + (size_t)from * V);
	if (rc) {
		print_error("wk_forward [%d, %d): %s: %s\n", from, to, loom_strerror(rc),
			    loom_errmsg());
		fail();
	}
}

/* Step 2: loom against the reference, one prefill and chunks + decodes. */
static void check_loom(const char *label, const wk_model *m, const ad_adapter *a,
		       const int32_t *tok, const double *want)
{
	const int V = m->cfg.vocab;
	wk_kvpool *pool = NULL;
	wk_scratch *s = NULL;
	wk_kv kv;
	float *lg = malloc(sizeof(float) * N_TOK * V);
	assert_non_null(lg);
	assert_int_equal(wk_kvpool_create(m, 2 * N_TOK / BLOCK + 2, BLOCK, &pool), LOOM_OK);
	assert_int_equal(wk_scratch_create(m, &s), LOOM_OK);

	wk_kv_init(&kv, pool);
	loom_chunk(m, s, &kv, a, tok, 0, N_TOK, lg);
	double one = rows_rel_f(lg, want, N_TOK, V);
	wk_kv_fini(&kv);

	memset(lg, 0xff, sizeof(float) * N_TOK * V); /* NaN poison */
	wk_kv_init(&kv, pool);
	loom_chunk(m, s, &kv, a, tok, 0, 13, lg);
	loom_chunk(m, s, &kv, a, tok, 13, 30, lg);
	for (int t = 30; t < N_TOK; t++)
		loom_chunk(m, s, &kv, a, tok, t, t + 1, lg);
	double chunked = rows_rel_f(lg, want, N_TOK, V);
	wk_kv_fini(&kv);

	printf("  %-22s prefill %d: max rel L2 %.3g   13+17+decodes: max rel L2 %.3g\n", label,
	       N_TOK, one, chunked);
	wk_scratch_destroy(s);
	wk_kvpool_destroy(pool);
	free(lg);
	if (!(one < 1e-4) || !(chunked < 1e-4)) {
		print_error("%s: loom differs from the reference (%.3g, %.3g >= 1e-4)\n", label,
			    one, chunked);
		fail();
	}
}

static void run_case(void **state)
{
	const fam_case *fc = *state;
	char *dir = lt_tmpdir(fc->name);
	char model[600], adapter[600], label[64];
	snprintf(model, sizeof model, "%s/model", dir);
	snprintf(adapter, sizeof adapter, "%s/adapter", dir);
	const char *mk = lt_bin_path("loom-mkmodel");
	if (lt_sh("'%s' model --out '%s' %s", mk, model, fc->args) != 0 ||
	    lt_sh("'%s' adapter --model '%s' --out '%s' --rank 8 --alpha 16 --seed 9 "
		  "--targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
		  mk, model, adapter) != 0) {
		print_error("%s: loom-mkmodel failed\n", fc->name);
		fail();
	}

	ref_llm *r = ref_or_fail(model, NULL), *ra = ref_or_fail(model, adapter);
	const int V = ref_llm_vocab(r);
	printf("  %-14s %s, windows:", fc->name, ref_llm_type(r));
	for (int l = 0; l < 2; l++)
		printf(" %d", ref_llm_window(r, l));
	printf("\n");
	int32_t tok[N_TOK];
	uint64_t z = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < N_TOK; i++)
		tok[i] = (int32_t)((z = z * 6364136223846793005ull + 1442695040888963407ull) >> 33) % V;
	double *want = malloc(sizeof(double) * N_TOK * V), *want_a = malloc(sizeof(double) * N_TOK * V);
	assert_true(want && want_a);
	assert_int_equal(ref_llm_forward(r, tok, N_TOK, want), 0);
	assert_int_equal(ref_llm_forward(ra, tok, N_TOK, want_a), 0);
	check_features(fc, r, tok, want);
	double da = rows_rel(want_a, want, N_TOK, V);
	printf("  %-14s the adapter moves the logits by %.3g\n", fc->name, da);
	assert_true(da > 1e-2);

	wk_model *m = NULL;
	loom_err rc = wk_model_load(model, fc->name, &m);
	if (rc) {
		print_error("%s: wk_model_load: %s: %s\n", fc->name, loom_strerror(rc), loom_errmsg());
		fail();
	}
	assert_int_equal(m->cfg.vocab, V);
	snprintf(label, sizeof label, "%s base", fc->name);
	check_loom(label, m, NULL, tok, want);

	ad_adapter *a = NULL;
	rc = ad_adapter_load(adapter, "lora", &m->cfg, &a);
	if (rc) {
		print_error("%s: ad_adapter_load: %s: %s\n", fc->name, loom_strerror(rc),
			    loom_errmsg());
		fail();
	}
	snprintf(label, sizeof label, "%s + adapter", fc->name);
	check_loom(label, m, a, tok, want_a);

	ad_adapter_destroy(a);
	wk_model_destroy(m);
	ref_llm_free(r);
	ref_llm_free(ra);
	free(want);
	free(want_a);
	lt_sh("rm -rf '%s'", dir);
	loom_free(dir);
}

int main(void)
{
	struct CMUnitTest tests[sizeof cases / sizeof *cases];
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
		tests[i] = (struct CMUnitTest){ .name = cases[i].name, .test_func = run_case,
						.initial_state = (void *)&cases[i] };
	return cmocka_run_group_tests_name("worker/families", tests, NULL, NULL);
}
