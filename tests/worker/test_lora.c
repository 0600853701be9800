/*
 * tests/worker/test_lora.c — LoRA in the forward pass, against the issue's
 * oracle: applying an adapter on the fly must equal running the base model
 * with merged weights W + scale * B A (logits, relative L2 error < 1e-4 per
 * row).
 *
 * The base is a random GQA model from loom-mkmodel (hidden 96, 2 layers),
 * adapters are random PEFT folders from loom-mkmodel adapter (B non-zero).
 * The merged model is a second wk_model_load of the same folder with
 * scale * Bt^T A added to its float32 weights, computed in double. Adapters
 * are built here straight from the safetensors file (hand_adapter), in the
 * layout adapters/adapter.h promises (q,k,v and gate,up A blocks adjacent),
 * or deliberately scattered to take the unfused path; modules can come
 * from several files at different ranks, which is what rank_pattern and
 * layers_to_transform produce.
 * The same oracle runs on adapters from the real PEFT import
 * (ad_adapter_load), including rank_pattern, alpha_pattern and
 * layers_to_transform, whose ranks and scales are checked as the forward sees
 * them. Also: a batch mixing three adapters of different ranks and targets with a
 * base-only sequence gives each sequence the logits it gets alone (1e-5
 * relative), bad segment plans are LOOM_EINVAL with nothing changed, and a
 * steady-state LoRA step allocates nothing.
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
#include "common/dtype.h"
#include "common/safetensors.h"
#include "tests/support/harness.h"
#include "worker/forward.h"
#include "worker/kv.h"
#include "worker/model.h"

static const char *const tnames[AD_N_TARGETS] = {"q_proj",    "k_proj",  "v_proj",
						 "o_proj",    "gate_proj", "up_proj",
						 "down_proj"};
static const char *const tblock[AD_N_TARGETS] = {"self_attn", "self_attn", "self_attn",
						 "self_attn", "mlp",       "mlp",
						 "mlp"};
#define ALL7 0x7fu

/* ---------------------------------------------------------------------- */
/* fixtures                                                                */
/* ---------------------------------------------------------------------- */

static struct {
	char *dir;
	char base[512];
	wk_model *m;
} fx;

/* A PEFT folder made by loom-mkmodel adapter. */
typedef struct mkad {
	const char *name;
	int rank;
	double alpha;
	const char *targets;
	const char *dtype;
	const char *layers; /* "--layers" value or NULL */
	char path[512];
} mkad;

static mkad ads[] = {
	{"r1-f32", 1, 4, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "f32", NULL, ""},
	{"r1-bf16", 1, 2, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "bf16", NULL, ""},
	{"r8-f32", 8, 16, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "f32", NULL, ""},
	{"r8-bf16", 8, 16, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "bf16", NULL, ""},
	{"r64-f32", 64, 32, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "f32", NULL, ""},
	{"r64-bf16", 64, 128, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "bf16",
	 NULL, ""},
	{"r4-qv", 4, 8, "q_proj,v_proj", "f32", NULL, ""},
	{"r16-l1", 16, 32, "k_proj,o_proj,up_proj,down_proj", "bf16", "1", ""},
	{"r3-gd", 3, 6, "gate_proj,down_proj", "f16", NULL, ""},
};
enum { A_R1F, A_R1B, A_R8F, A_R8B, A_R64F, A_R64B, A_R4QV, A_R16L1, A_R3GD, N_ADS };

static int setup(void **state)
{
	(void)state;
	fx.dir = lt_tmpdir("lora");
	snprintf(fx.base, sizeof fx.base, "%s/base", fx.dir);
	if (lt_sh("'%s' model --out '%s' --hidden 96 --ffn 200 --layers 2 --heads 4 "
		  "--kv-heads 2 --vocab 300 --ctx 128 --seed 7 >/dev/null",
		  lt_bin_path("loom-mkmodel"), fx.base))
		return -1;
	for (int i = 0; i < N_ADS; i++) {
		mkad *a = &ads[i];
		snprintf(a->path, sizeof a->path, "%s/%s", fx.dir, a->name);
		char layers[32] = "";
		if (a->layers)
			snprintf(layers, sizeof layers, "--layers %s", a->layers);
		if (lt_sh("'%s' adapter --model '%s' --out '%s' --rank %d --alpha %g --targets %s "
			  "--dtype %s --seed %d %s >/dev/null",
			  lt_bin_path("loom-mkmodel"), fx.base, a->path, a->rank, a->alpha,
			  a->targets, a->dtype, 100 + i, layers))
			return -1;
	}
	if (wk_model_load(fx.base, "base", &fx.m))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	wk_model_destroy(fx.m);
	lt_sh("rm -rf '%s'", fx.dir);
	loom_free(fx.dir);
	return 0;
}

/* ---------------------------------------------------------------------- */
/* adapters built by hand from the safetensors file                        */
/* ---------------------------------------------------------------------- */

/* Modules of targets in mask come from PEFT folder ad (its rank and alpha);
 * a layer the file lacks stays rank 0. */
typedef struct src {
	const mkad *ad;
	unsigned mask;
} src;

static void dims(const loom_model_config *c, int t, int *din, int *dout)
{
	int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
	int in[] = {c->hidden, c->hidden, c->hidden, q, c->hidden, c->hidden, c->ffn};
	int out[] = {q, kv, kv, c->hidden, c->ffn, c->ffn, c->hidden};
	*din = in[t];
	*dout = out[t];
}

static void hand_free(ad_adapter *a)
{
	if (!a)
		return;
	free(a->arena);
	free(a->mods);
	free(a);
}

/*
 * packed: A blocks in the order q,k,v,gate,up,o,down per layer, adjacent (the
 * adapter.h layout); 0: a gap of 16 floats after every block, so no group
 * can be fused.
 */
static ad_adapter *hand_adapter(const char *name, const src *srcs, int n_src, int packed)
{
	static const int order[AD_N_TARGETS] = {AD_Q, AD_K, AD_V, AD_GATE, AD_UP, AD_O, AD_DOWN};
	const loom_model_config *c = &fx.m->cfg;
	ad_adapter *a = calloc(1, sizeof *a);
	assert_non_null(a);
	snprintf(a->name, sizeof a->name, "%s", name);
	a->n_layers = c->n_layers;
	a->mods = calloc((size_t)c->n_layers * AD_N_TARGETS, sizeof *a->mods);
	assert_non_null(a->mods);
	for (int t = 0; t < AD_N_TARGETS; t++)
		dims(c, t, &a->d_in[t], &a->d_out[t]);
	loom_st_file *f[8] = {0};
	assert_true(n_src <= 8);
	for (int i = 0; i < n_src; i++) {
		char p[600];
		snprintf(p, sizeof p, "%s/adapter_model.safetensors", srcs[i].ad->path);
		assert_int_equal(loom_st_open(p, &f[i]), LOOM_OK);
	}
	/* pass 0 sizes the arena, pass 1 fills it */
	size_t total = 0;
	for (int pass = 0; pass < 2; pass++) {
		size_t off = 0;
		float *arena = pass ? a->arena : NULL;
		for (int l = 0; l < c->n_layers; l++)
			for (int half = 0; half < 2; half++) /* A blocks, then Bt blocks */
				for (int oi = 0; oi < AD_N_TARGETS; oi++) {
					int t = order[oi], din, dout;
					dims(c, t, &din, &dout);
					const loom_tensor *ta = NULL, *tb = NULL;
					const src *s = NULL;
					for (int i = 0; i < n_src && !ta; i++) {
						if (!(srcs[i].mask >> t & 1))
							continue;
						char nm[160];
						snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.%s."
							 "lora_A.weight", l, tblock[t], tnames[t]);
						ta = loom_st_find(f[i], nm);
						snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.%s."
							 "lora_B.weight", l, tblock[t], tnames[t]);
						tb = loom_st_find(f[i], nm);
						s = &srcs[i];
					}
					if (!ta)
						continue;
					assert_non_null(tb);
					int r = s->ad->rank;
					size_t n = (size_t)r * (half ? dout : din);
					if (pass) {
						ad_module *md = &a->mods[l * AD_N_TARGETS + t];
						md->rank = r;
						md->scale = (float)(s->ad->alpha / r);
						float *dst = arena + off;
						if (!half) {
							assert_int_equal(ta->shape[0], r);
							assert_int_equal(ta->shape[1], din);
							assert_int_equal(loom_to_f32(dst, ta->data, ta->dtype, n), 0);
							md->a = dst;
						} else {
							float *b = malloc(n * sizeof *b); /* [dout, r] */
							assert_non_null(b);
							assert_int_equal(tb->shape[0], dout);
							assert_int_equal(loom_to_f32(b, tb->data, tb->dtype, n), 0);
							for (int j = 0; j < r; j++)
								for (int o = 0; o < dout; o++)
									dst[(size_t)j * dout + o] = b[(size_t)o * r + j];
							free(b);
							md->bt = dst;
						}
						a->targets |= 1u << t;
						if (r > a->max_rank)
							a->max_rank = r;
					}
					off += n + (packed ? 0 : 16);
				}
		if (!pass) {
			total = off;
			a->arena = malloc((total + 1) * sizeof(float));
			assert_non_null(a->arena);
		}
	}
	a->bytes = total * sizeof(float);
	for (int i = 0; i < n_src; i++)
		loom_st_close(f[i]);
	return a;
}

/* A second copy of the base with every adapted W += scale * Bt^T A. */
static wk_model *merged_model(const ad_adapter *a)
{
	wk_model *mm = NULL;
	assert_int_equal(wk_model_load(fx.base, "merged", &mm), LOOM_OK);
	const loom_model_config *c = &mm->cfg;
	for (int l = 0; l < c->n_layers; l++) {
		wk_layer *L = &mm->layers[l];
		float *w[AD_N_TARGETS] = {L->wq, L->wk, L->wv, L->wo, L->w_gate, L->w_up, L->w_down};
		for (int t = 0; t < AD_N_TARGETS; t++) {
			const ad_module *md = ad_mod(a, l, t);
			int din, dout;
			dims(c, t, &din, &dout);
			for (int o = 0; o < dout && md->rank; o++)
				for (int i = 0; i < din; i++) {
					double s = 0;
					for (int j = 0; j < md->rank; j++)
						s += (double)md->bt[(size_t)j * dout + o] *
						     md->a[(size_t)j * din + i];
					float *p = &w[t][(size_t)o * din + i];
					*p = (float)((double)*p + (double)md->scale * s);
				}
		}
	}
	wk_model_repack(mm); /* the CPU forward reads the packed copies */
	return mm;
}

/* ---------------------------------------------------------------------- */
/* running sequences                                                       */
/* ---------------------------------------------------------------------- */

static double rel_l2(const float *got, const float *want, int n)
{
	double e = 0, w = 0;
	for (int i = 0; i < n; i++) {
		double d = (double)got[i] - want[i];
		e += d * d;
		w += (double)want[i] * want[i];
	}
	return sqrt(e / (w > 0 ? w : 1e-300));
}

static void tokens_for(int seed, int32_t *tok, int n)
{
	for (int i = 0; i < n; i++)
		tok[i] = (int32_t)((seed * 131 + i * 37 + i * i * 7) % fx.m->cfg.vocab);
}

/* Runs one sequence of the given tokens through m in steps: a prefill of
 * n_pre tokens (all logits), then single-token decodes of the rest.
 * logits: [n, vocab]. a: adapter or NULL. */
static void run_seq(const wk_model *m, const ad_adapter *a, const int32_t *tok, int n, int n_pre,
		    float *logits)
{
	wk_kv *kv = NULL;
	wk_scratch *s = NULL;
	assert_int_equal(wk_kv_create(m, n + 4, &kv), LOOM_OK);
	assert_int_equal(wk_scratch_create(m, &s), LOOM_OK);
	int V = m->cfg.vocab;
	for (int at = 0; at < n;) {
		int cnt = at == 0 ? n_pre : 1;
		int32_t ss[2] = {0, cnt}, sg[2] = {0, cnt};
		const ad_adapter *sa[1] = {a};
		wk_batch b = {.n_seqs = 1, .seq_start = ss, .tokens = tok + at, .kv = &kv,
			      .all_logits = 1, .n_segs = a ? 1 : 0, .seg_start = sg,
			      .seg_adapter = sa};
		loom_err rc = wk_forward(m, &b, s, logits + (size_t)at * V);
		if (rc)
			print_error("wk_forward: %s\n", loom_errmsg());
		assert_int_equal(rc, LOOM_OK);
		at += cnt;
	}
	wk_scratch_destroy(s);
	wk_kv_destroy(kv);
}

/* On the fly vs merged, prefill of n_pre then decodes; returns the smallest
 * relative distance between adapter and base logits (the adapter matters). */
static double check_oracle(const char *what, const ad_adapter *a, int n, int n_pre)
{
	int V = fx.m->cfg.vocab;
	int32_t tok[64];
	tokens_for(3, tok, n);
	float *got = malloc(sizeof(float) * n * V), *want = malloc(sizeof(float) * n * V);
	float *base = malloc(sizeof(float) * n * V);
	assert_true(got && want && base);
	wk_model *mm = merged_model(a);
	run_seq(fx.m, a, tok, n, n_pre, got);
	run_seq(mm, NULL, tok, n, n_pre, want);
	run_seq(fx.m, NULL, tok, n, n_pre, base);
	double worst = 0, effect = INFINITY;
	for (int t = 0; t < n; t++) {
		double e = rel_l2(got + (size_t)t * V, want + (size_t)t * V, V);
		double d = rel_l2(base + (size_t)t * V, want + (size_t)t * V, V);
		if (!(e <= worst))
			worst = isnan(e) ? INFINITY : e;
		if (d < effect)
			effect = d;
	}
	printf("  %-24s prefill %2d + %d decodes: max rel err %.2e (adapter moves logits by "
	       ">= %.2f)\n", what, n_pre, n - n_pre, worst, effect);
	if (!(worst < 1e-4)) {
		print_error("%s: on-the-fly LoRA vs merged weights: rel error %.3g >= 1e-4\n", what,
			    worst);
		fail();
	}
	wk_model_destroy(mm);
	free(got);
	free(want);
	free(base);
	return effect;
}

/* ---------------------------------------------------------------------- */
/* cases                                                                   */
/* ---------------------------------------------------------------------- */

typedef struct ocase {
	const char *name;
	src srcs[3];
	int n_src;
	int packed;
} ocase;

static const ocase ocases[] = {
	{"rank 1, f32, all 7", {{&ads[A_R1F], ALL7}}, 1, 1},
	{"rank 1, bf16, all 7", {{&ads[A_R1B], ALL7}}, 1, 1},
	{"rank 8, f32, all 7", {{&ads[A_R8F], ALL7}}, 1, 1},
	{"rank 8, bf16, all 7", {{&ads[A_R8B], ALL7}}, 1, 1},
	{"rank 64, f32, all 7", {{&ads[A_R64F], ALL7}}, 1, 1},
	{"rank 64, bf16, all 7", {{&ads[A_R64B], ALL7}}, 1, 1},
	{"rank 8, bf16, unpacked", {{&ads[A_R8B], ALL7}}, 1, 0},
	{"rank 4, q+v only", {{&ads[A_R4QV], ALL7}}, 1, 1},
	{"rank 16, layer 1 only", {{&ads[A_R16L1], ALL7}}, 1, 1},
	{"rank 3, f16, gate+down", {{&ads[A_R3GD], ALL7}}, 1, 0},
	/* rank_pattern-like: q from rank 1, k/v from rank 64, gate/up/down rank 8 */
	{"per-module ranks", {{&ads[A_R1B], 1u << AD_Q}, {&ads[A_R64F], 3u << AD_K},
			      {&ads[A_R8F], 7u << AD_GATE}}, 3, 1},
};

static void test_merged_oracle(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof ocases / sizeof ocases[0]; i++) {
		const ocase *oc = &ocases[i];
		ad_adapter *a = hand_adapter(oc->name, oc->srcs, oc->n_src, oc->packed);
		/* 9-token prefill: the vector loops; 20: sgemm; then decodes */
		double e1 = check_oracle(oc->name, a, 11, 9);
		double e2 = check_oracle(oc->name, a, 22, 20);
		if (e1 < 1e-3 || e2 < 1e-3) {
			print_error("%s: the adapter barely changes the logits (%.2e): the oracle "
				    "would not see a missing delta\n", oc->name, e1 < e2 ? e1 : e2);
			fail();
		}
		hand_free(a);
	}
	/* the same oracle through the real PEFT import, whose layout must keep
	 * q,k,v and gate,up A blocks adjacent (the forward fuses their shrink) */
	for (int i = A_R1F; i <= A_R64B; i++) {
		ad_adapter *a = NULL;
		loom_err rc = ad_adapter_load(ads[i].path, ads[i].name, &fx.m->cfg, &a);
		if (rc)
			print_error("ad_adapter_load %s: %s\n", ads[i].path, loom_errmsg());
		assert_int_equal(rc, LOOM_OK);
		int d = fx.m->cfg.hidden, r = ads[i].rank;
		for (int l = 0; l < a->n_layers; l++) {
			assert_ptr_equal(ad_mod(a, l, AD_Q)->a + (size_t)r * d, ad_mod(a, l, AD_K)->a);
			assert_ptr_equal(ad_mod(a, l, AD_K)->a + (size_t)r * d, ad_mod(a, l, AD_V)->a);
			assert_ptr_equal(ad_mod(a, l, AD_GATE)->a + (size_t)r * d,
					 ad_mod(a, l, AD_UP)->a);
		}
		char what[64];
		snprintf(what, sizeof what, "%s (loader)", ads[i].name);
		check_oracle(what, a, 11, 9);
		ad_adapter_destroy(a);
	}
}

/*
 * Five sequences, three adapters of different ranks and targets plus a
 * base-only one: [s0 s1] adapter r8 (all 7), [s2] r4 q/v, [s3] base,
 * [s4] r16 layer 1 only. A prefill step with mixed lengths, a step mixing a
 * prefill chunk with decodes, then decodes; each sequence's logits must
 * match its run alone to 1e-5 relative.
 */
static void test_batch_invariance(void **state)
{
	(void)state;
	const wk_model *m = fx.m;
	int V = m->cfg.vocab;
	src s8 = {&ads[A_R8B], ALL7}, s4 = {&ads[A_R4QV], ALL7}, s16 = {&ads[A_R16L1], ALL7};
	ad_adapter *A8 = hand_adapter("r8", &s8, 1, 1), *A4 = hand_adapter("r4", &s4, 1, 1);
	ad_adapter *A16 = hand_adapter("r16", &s16, 1, 1);
	enum { NS = 5, STEPS = 4 };
	const ad_adapter *who[NS] = {A8, A8, A4, NULL, A16};
	/* tokens each sequence contributes per step */
	static const int chunk[STEPS][NS] = {
		{5, 17, 3, 4, 6}, {1, 1, 7, 1, 1}, {1, 1, 1, 1, 1}, {1, 1, 1, 1, 1}};
	int len[NS] = {0};
	for (int st = 0; st < STEPS; st++)
		for (int q = 0; q < NS; q++)
			len[q] += chunk[st][q];
	int32_t tok[NS][40];
	for (int q = 0; q < NS; q++)
		tokens_for(q + 1, tok[q], len[q]);

	/* batched */
	wk_kv *kv[NS];
	wk_scratch *s = NULL;
	for (int q = 0; q < NS; q++)
		assert_int_equal(wk_kv_create(m, 48, &kv[q]), LOOM_OK);
	assert_int_equal(wk_scratch_create(m, &s), LOOM_OK);
	float *lg = malloc(sizeof(float) * NS * V), *alone = malloc(sizeof(float) * 40 * V);
	float *batched[STEPS];
	int done[NS] = {0};
	for (int st = 0; st < STEPS; st++) {
		int32_t ss[NS + 1] = {0}, flat[64], sg[5] = {0};
		int T = 0;
		for (int q = 0; q < NS; q++) {
			memcpy(flat + T, tok[q] + done[q], sizeof(int32_t) * chunk[st][q]);
			T += chunk[st][q];
			ss[q + 1] = T;
		}
		sg[1] = ss[2], sg[2] = ss[3], sg[3] = ss[4], sg[4] = ss[5];
		const ad_adapter *sa[4] = {A8, A4, NULL, A16};
		wk_batch b = {.n_seqs = NS, .seq_start = ss, .tokens = flat, .kv = kv,
			      .all_logits = 0, .n_segs = 4, .seg_start = sg, .seg_adapter = sa};
		assert_int_equal(wk_forward(m, &b, s, lg), LOOM_OK);
		batched[st] = malloc(sizeof(float) * NS * V);
		memcpy(batched[st], lg, sizeof(float) * NS * V);
		for (int q = 0; q < NS; q++)
			done[q] += chunk[st][q];
	}
	/* alone, same chunking */
	double worst = 0;
	for (int q = 0; q < NS; q++) {
		wk_kv *k1 = NULL;
		wk_scratch *s1 = NULL;
		assert_int_equal(wk_kv_create(m, 48, &k1), LOOM_OK);
		assert_int_equal(wk_scratch_create(m, &s1), LOOM_OK);
		int at = 0;
		for (int st = 0; st < STEPS; st++) {
			int32_t ss[2] = {0, chunk[st][q]}, sg[2] = {0, chunk[st][q]};
			const ad_adapter *sa[1] = {who[q]};
			wk_batch b = {.n_seqs = 1, .seq_start = ss, .tokens = tok[q] + at, .kv = &k1,
				      .n_segs = who[q] ? 1 : 0, .seg_start = sg, .seg_adapter = sa};
			assert_int_equal(wk_forward(m, &b, s1, alone), LOOM_OK);
			at += chunk[st][q];
			double e = rel_l2(batched[st] + (size_t)q * V, alone, V);
			if (!(e <= worst))
				worst = isnan(e) ? INFINITY : e;
			if (!(e < 1e-5)) {
				print_error("sequence %d step %d: batched vs alone rel %.3g\n", q, st, e);
				fail();
			}
		}
		wk_scratch_destroy(s1);
		wk_kv_destroy(k1);
	}
	printf("  batched vs alone: max rel %.2e\n", worst);
	for (int st = 0; st < STEPS; st++)
		free(batched[st]);
	for (int q = 0; q < NS; q++)
		wk_kv_destroy(kv[q]);
	wk_scratch_destroy(s);
	free(lg);
	free(alone);
	hand_free(A8);
	hand_free(A4);
	hand_free(A16);
}

/*
 * Through the real PEFT import (ad_adapter_load): a folder whose config says
 * r 4, alpha 8, rank_pattern {k_proj: 16, down_proj: 16}, alpha_pattern
 * {down_proj: 64}, layers_to_transform [1], with the matching tensors (q at
 * rank 4, k and down at rank 16, layer 1 only). The adapter the forward
 * sees has exactly those ranks and scales (q 8/4, k 8/16, down 64/16), no
 * module in layer 0, and on-the-fly LoRA equals the merged model.
 */
static void test_peft_patterns(void **state)
{
	(void)state;
	char dir[600], p[700];
	snprintf(dir, sizeof dir, "%s/patterns", fx.dir);
	assert_int_equal(lt_sh("mkdir -p '%s'", dir), 0);
	struct {
		int ad, t;
	} take[] = {{A_R4QV, AD_Q}, {A_R16L1, AD_K}, {A_R16L1, AD_DOWN}};
	loom_st_file *f[2] = {NULL, NULL};
	snprintf(p, sizeof p, "%s/adapter_model.safetensors", ads[A_R4QV].path);
	assert_int_equal(loom_st_open(p, &f[0]), LOOM_OK);
	snprintf(p, sizeof p, "%s/adapter_model.safetensors", ads[A_R16L1].path);
	assert_int_equal(loom_st_open(p, &f[1]), LOOM_OK);
	loom_tensor ts[6];
	char names[6][160];
	for (int i = 0; i < 3; i++)
		for (int h = 0; h < 2; h++) {
			int t = take[i].t;
			snprintf(names[2 * i + h], sizeof names[0],
				 "base_model.model.model.layers.1.%s.%s.lora_%s.weight", tblock[t],
				 tnames[t], h ? "B" : "A");
			const loom_tensor *src =
				loom_st_find(f[take[i].ad == A_R4QV ? 0 : 1], names[2 * i + h]);
			assert_non_null(src);
			ts[2 * i + h] = *src;
			ts[2 * i + h].name = names[2 * i + h];
		}
	snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
	assert_int_equal(loom_st_write(p, ts, 6, NULL), LOOM_OK);
	loom_st_close(f[0]);
	loom_st_close(f[1]);
	snprintf(p, sizeof p, "%s/adapter_config.json", dir);
	FILE *cf = fopen(p, "w");
	assert_non_null(cf);
	fprintf(cf, "{\"peft_type\": \"LORA\", \"task_type\": \"CAUSAL_LM\", \"r\": 4, "
		"\"lora_alpha\": 8, \"target_modules\": [\"q_proj\", \"k_proj\", \"down_proj\"], "
		"\"rank_pattern\": {\"k_proj\": 16, \"down_proj\": 16}, "
		"\"alpha_pattern\": {\"down_proj\": 64}, \"layers_to_transform\": [1], "
		"\"bias\": \"none\", \"use_rslora\": false, \"use_dora\": false, "
		"\"fan_in_fan_out\": false, \"modules_to_save\": null}\n");
	fclose(cf);

	ad_adapter *a = NULL;
	loom_err rc = ad_adapter_load(dir, "patterns", &fx.m->cfg, &a);
	if (rc)
		print_error("ad_adapter_load: %s\n", loom_errmsg());
	assert_int_equal(rc, LOOM_OK);
	for (int t = 0; t < AD_N_TARGETS; t++) {
		assert_int_equal(ad_mod(a, 0, t)->rank, 0);
		int want = t == AD_Q ? 4 : (t == AD_K || t == AD_DOWN) ? 16 : 0;
		float scale = t == AD_Q ? 2.0f : t == AD_K ? 0.5f : 4.0f;
		assert_int_equal(ad_mod(a, 1, t)->rank, want);
		if (want)
			assert_true(fabsf(ad_mod(a, 1, t)->scale - scale) < 1e-6f);
	}
	double e = check_oracle("PEFT patterns (loader)", a, 11, 9);
	assert_true(e > 1e-3);
	check_oracle("PEFT patterns (loader)", a, 22, 20);
	ad_adapter_destroy(a);
}

/* Bad plans: LOOM_EINVAL naming the problem, kv lengths unchanged. */
static void test_bad_segments(void **state)
{
	(void)state;
	const wk_model *m = fx.m;
	src s8 = {&ads[A_R8F], ALL7};
	ad_adapter *A = hand_adapter("good", &s8, 1, 1);
	ad_adapter *wrong_layers = hand_adapter("layers", &s8, 1, 1);
	wrong_layers->n_layers = 3;
	ad_adapter *wrong_dim = hand_adapter("dims", &s8, 1, 1);
	wrong_dim->d_in[AD_DOWN] = 96;
	ad_adapter *no_w = hand_adapter("noweights", &s8, 1, 1);
	no_w->mods[1 * AD_N_TARGETS + AD_UP].bt = NULL;
	ad_adapter *neg = hand_adapter("negative", &s8, 1, 1);
	neg->mods[AD_V].rank = -2;
	ad_adapter *half = NULL; /* the CUDA forward's form */
	assert_int_equal(ad_adapter_to_bf16(A, &half), LOOM_OK);

	wk_kv *kv[2];
	wk_scratch *s = NULL;
	for (int q = 0; q < 2; q++)
		assert_int_equal(wk_kv_create(m, 16, &kv[q]), LOOM_OK);
	assert_int_equal(wk_scratch_create(m, &s), LOOM_OK);
	float *lg = malloc(sizeof(float) * 2 * m->cfg.vocab);
	int32_t ss[3] = {0, 3, 5}, tok[5] = {1, 2, 3, 4, 5};
	struct {
		const char *name, *needle;
		int n_segs;
		int32_t seg[4];
		const ad_adapter *ad[3];
	} cases[] = {
		{"negative n_segs", "n_segs", -1, {0}, {NULL}},
		{"short cover", "cover", 1, {0, 3}, {A}},
		{"not from 0", "cover", 1, {1, 5}, {A}},
		{"splits a sequence", "inside a sequence", 2, {0, 2, 5}, {A, NULL}},
		{"decreasing", "before it starts", 3, {0, 3, 2, 5}, {A, NULL, A}},
		{"layers", "layers", 2, {0, 3, 5}, {NULL, wrong_layers}},
		{"dims", "down_proj", 1, {0, 5}, {wrong_dim}},
		{"no weights", "no weights for rank 8", 1, {0, 5}, {no_w}},
		{"negative rank", "negative rank -2", 2, {0, 3, 5}, {A, neg}},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		wk_batch b = {.n_seqs = 2, .seq_start = ss, .tokens = tok, .kv = kv,
			      .n_segs = cases[i].n_segs, .seg_start = cases[i].seg,
			      .seg_adapter = cases[i].ad};
		loom_err rc = wk_forward(m, &b, s, lg);
		if (rc != LOOM_EINVAL || !strstr(loom_errmsg(), cases[i].needle)) {
			print_error("%s: rc %d, message \"%s\" (want EINVAL with \"%s\")\n",
				    cases[i].name, rc, loom_errmsg(), cases[i].needle);
			fail();
		}
		assert_int_equal(kv[0]->len, 0);
		assert_int_equal(kv[1]->len, 0);
	}
	/* empty segments are fine */
	int32_t sg[4] = {0, 0, 3, 5};
	const ad_adapter *sa[3] = {A, NULL, A};
	wk_batch b = {.n_seqs = 2, .seq_start = ss, .tokens = tok, .kv = kv, .n_segs = 3,
		      .seg_start = sg, .seg_adapter = sa};
	assert_int_equal(wk_forward(m, &b, s, lg), LOOM_OK);
	for (int q = 0; q < 2; q++)
		wk_kv_destroy(kv[q]);
	wk_scratch_destroy(s);
	free(lg);
	hand_free(A);
	hand_free(wrong_layers);
	hand_free(wrong_dim);
	hand_free(no_w);
	hand_free(neg);
	ad_adapter_destroy(half);
}

/* A BF16 adapter (ad_adapter_to_bf16: half the bytes per step) on the CPU
 * forward gives, to the bit, the logits of a float32 adapter holding the
 * same rounded values, batched with another BF16 adapter and the base; the
 * rounding itself moves this tiny model's logits by a few percent at most
 * (random rank-8 adapters with scale 2 change them a lot; BF16 keeps 8
 * bits), a sanity bound: the float32 path has the merged-weights oracle. */
static void test_bf16_adapter_bits(void **state)
{
	(void)state;
	const wk_model *m = fx.m;
	const int V = m->cfg.vocab;
	src s8 = {&ads[A_R8F], ALL7}, s64 = {&ads[A_R64F], ALL7};
	ad_adapter *A = hand_adapter("a", &s8, 1, 1), *R = hand_adapter("a-rounded", &s8, 1, 1);
	ad_adapter *B = hand_adapter("b", &s64, 1, 1), *half = NULL, *halfb = NULL;
	assert_int_equal(ad_adapter_to_bf16(A, &half), LOOM_OK);
	assert_int_equal(ad_adapter_to_bf16(B, &halfb), LOOM_OK);
	assert_true(half->bf16 && half->bytes * 2 == A->bytes);
	/* R: A's values rounded to BF16, held as float32 */
	for (int l = 0; l < R->n_layers; l++)
		for (int t = 0; t < AD_N_TARGETS; t++) {
			ad_module *md = &R->mods[l * AD_N_TARGETS + t];
			size_t na = (size_t)md->rank * R->d_in[t], nb = (size_t)md->rank * R->d_out[t];
			for (size_t i = 0; i < na; i++)
				((float *)md->a)[i] = loom_bf16_to_f32(loom_f32_to_bf16(md->a[i]));
			for (size_t i = 0; i < nb; i++)
				((float *)md->bt)[i] = loom_bf16_to_f32(loom_f32_to_bf16(md->bt[i]));
		}
	/* three sequences of 5, 4 and 3 tokens: the adapter, B (rounded the same
	 * way in both runs) and the base */
	int32_t ss[4] = {0, 5, 9, 12}, tok[12] = {1, 2, 3, 4, 5, 9, 8, 7, 6, 11, 12, 13};
	const ad_adapter *run_h[3] = {half, halfb, NULL}, *run_r[3] = {R, halfb, NULL};
	const ad_adapter *run_f[3] = {A, halfb, NULL};
	float *lg[3];
	for (int r = 0; r < 3; r++) {
		wk_kv *kv[3];
		wk_scratch *sc = NULL;
		for (int q = 0; q < 3; q++)
			assert_int_equal(wk_kv_create(m, 16, &kv[q]), LOOM_OK);
		assert_int_equal(wk_scratch_create(m, &sc), LOOM_OK);
		lg[r] = malloc(sizeof(float) * 12 * V);
		assert_non_null(lg[r]);
		wk_batch b = {.n_seqs = 3, .seq_start = ss, .tokens = tok, .kv = kv, .n_segs = 3,
			      .seg_start = ss, .all_logits = 1,
			      .seg_adapter = r == 0 ? run_h : r == 1 ? run_r : run_f};
		assert_int_equal(wk_forward(m, &b, sc, lg[r]), LOOM_OK);
		for (int q = 0; q < 3; q++)
			wk_kv_destroy(kv[q]);
		wk_scratch_destroy(sc);
	}
	assert_memory_equal(lg[0], lg[1], sizeof(float) * 12 * V);
	double worst = 0;
	for (int i = 0; i < 5 * V; i++) {
		double d = fabs((double)lg[0][i] - lg[2][i]) / (fabs((double)lg[2][i]) + 1);
		worst = d > worst ? d : worst;
	}
	printf("  bf16 adapter vs float32: worst logit change %.2e (relative, +1)\n", worst);
	assert_true(worst > 0 && worst < 0.1);
	for (int r = 0; r < 3; r++)
		free(lg[r]);
	hand_free(A);
	hand_free(R);
	hand_free(B);
	ad_adapter_destroy(half);
	ad_adapter_destroy(halfb);
}

/* After one step has grown the scratch, a same-shaped LoRA step allocates
 * nothing; a failing allocation while growing is a clean LOOM_ENOMEM. */
static void test_no_alloc_steady(void **state)
{
	(void)state;
	const wk_model *m = fx.m;
	src s64 = {&ads[A_R64F], ALL7}, s1 = {&ads[A_R1F], ALL7};
	ad_adapter *A = hand_adapter("a", &s64, 1, 1), *B = hand_adapter("b", &s1, 1, 1);
	wk_kv *kv[3];
	wk_scratch *s = NULL;
	for (int q = 0; q < 3; q++)
		assert_int_equal(wk_kv_create(m, 16, &kv[q]), LOOM_OK);
	assert_int_equal(wk_scratch_create(m, &s), LOOM_OK);
	float *lg = malloc(sizeof(float) * 3 * m->cfg.vocab);
	int32_t ss[4] = {0, 1, 2, 3}, sg[4] = {0, 1, 2, 3}, tok[3] = {7, 8, 9};
	const ad_adapter *sa[3] = {A, NULL, B};
	wk_batch b = {.n_seqs = 3, .seq_start = ss, .tokens = tok, .kv = kv, .n_segs = 3,
		      .seg_start = sg, .seg_adapter = sa};
	loom_alloc_fail_after(1);
	loom_err rc = wk_forward(m, &b, s, lg);
	loom_alloc_fail_reset();
	assert_int_equal(rc, LOOM_ENOMEM);
	assert_int_equal(kv[0]->len, 0);
	/* grow once with a longer batch on other caches, then decode allocates nothing */
	wk_kv *kw[3];
	for (int q = 0; q < 3; q++)
		assert_int_equal(wk_kv_create(m, 16, &kw[q]), LOOM_OK);
	int32_t ws[4] = {0, 4, 8, 12}, wg[4] = {0, 4, 8, 12}, wt[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
	wk_batch w = {.n_seqs = 3, .seq_start = ws, .tokens = wt, .kv = kw, .n_segs = 3,
		      .seg_start = wg, .seg_adapter = sa};
	assert_int_equal(wk_forward(m, &w, s, lg), LOOM_OK);
	for (int q = 0; q < 3; q++)
		wk_kv_destroy(kw[q]);
	loom_alloc_fail_after(1);
	rc = wk_forward(m, &b, s, lg);
	loom_alloc_fail_reset();
	assert_int_equal(rc, LOOM_OK);
	for (int q = 0; q < 3; q++)
		wk_kv_destroy(kv[q]);
	wk_scratch_destroy(s);
	free(lg);
	hand_free(A);
	hand_free(B);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_merged_oracle),
		cmocka_unit_test(test_batch_invariance),
		cmocka_unit_test(test_peft_patterns),
		cmocka_unit_test(test_bad_segments),
		cmocka_unit_test(test_bf16_adapter_bits),
		cmocka_unit_test(test_no_alloc_steady),
	};
	return cmocka_run_group_tests_name("worker/lora", tests, setup, teardown);
}
