/*
 * tests/worker/test_forward.c — the CPU forward pass against a naive float64
 * LLaMA written here, on real and random models.
 *
 * The reference (ref_*) shares nothing with the product but the safetensors
 * reader and the dtype converter: it reads every tensor into doubles, and
 * recomputes each sequence from scratch with plain loops (no KV cache, no
 * kn_ calls). wk_forward must match it to a relative L2 error < 1e-4 per
 * logits row in: an 8-token prefill with all logits, single-token decodes,
 * and mixed batches (one sequence's prefill chunk beside another's decode).
 * Batch invariance: the same sequence alone and inside a batch must agree
 * to 1e-5 relative; the test prints whether it was bit-identical.
 * Then stories260k must tell its known story greedily.
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
#include "common/model_config.h"
#include "common/safetensors.h"
#include "common/tokenizer.h"
#include "tests/support/harness.h"
#include "worker/forward.h"
#include "worker/model.h"
#include "worker/sample.h"

/* ---------------------------------------------------------------------- */
/* The float64 reference                                                   */
/* ---------------------------------------------------------------------- */

typedef struct ref_layer {
	double *an, *wq, *wk, *wv, *wo, *fn, *wg, *wu, *wd;
} ref_layer;

typedef struct ref_model {
	loom_model_config c;
	double *embed, *norm, *head; /* head == embed when tied */
	ref_layer *L;
} ref_model;

static double *ref_tensor(const loom_st_set *set, const char *name, size_t want)
{
	const loom_tensor *t = loom_st_set_find(set, name);
	if (!t) {
		print_error("reference: tensor %s missing\n", name);
		fail();
	}
	size_t n = loom_tensor_numel(t);
	assert_int_equal(n, want);
	float *f = malloc(n * sizeof *f);
	double *d = malloc(n * sizeof *d);
	assert_true(f && d);
	assert_int_equal(loom_to_f32(f, t->data, t->dtype, n), 0);
	for (size_t i = 0; i < n; i++)
		d[i] = f[i];
	free(f);
	return d;
}

static void ref_load(const char *dir, ref_model *r)
{
	memset(r, 0, sizeof *r);
	assert_int_equal(loom_model_config_load(dir, &r->c), LOOM_OK);
	loom_st_set *set = NULL;
	assert_int_equal(loom_st_set_open(dir, &set), LOOM_OK);
	const loom_model_config *c = &r->c;
	size_t d = c->hidden, q = (size_t)c->n_heads * c->head_dim;
	size_t kv = (size_t)c->n_kv_heads * c->head_dim, f = c->ffn, V = c->vocab;
	r->embed = ref_tensor(set, "model.embed_tokens.weight", V * d);
	r->norm = ref_tensor(set, "model.norm.weight", d);
	r->head = c->tied ? r->embed : ref_tensor(set, "lm_head.weight", V * d);
	r->L = calloc(c->n_layers, sizeof *r->L);
	for (int l = 0; l < c->n_layers; l++) {
		char nm[128];
		ref_layer *L = &r->L[l];
#define T(field, suffix, n)                                                   \
	snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix);            \
	L->field = ref_tensor(set, nm, n)
		T(an, "input_layernorm.weight", d);
		T(wq, "self_attn.q_proj.weight", q * d);
		T(wk, "self_attn.k_proj.weight", kv * d);
		T(wv, "self_attn.v_proj.weight", kv * d);
		T(wo, "self_attn.o_proj.weight", d * q);
		T(fn, "post_attention_layernorm.weight", d);
		T(wg, "mlp.gate_proj.weight", f * d);
		T(wu, "mlp.up_proj.weight", f * d);
		T(wd, "mlp.down_proj.weight", d * f);
#undef T
	}
	loom_st_set_close(set);
}

static void ref_free(ref_model *r)
{
	for (int l = 0; l < r->c.n_layers; l++) {
		ref_layer *L = &r->L[l];
		double *p[] = {L->an, L->wq, L->wk, L->wv, L->wo, L->fn, L->wg, L->wu, L->wd};
		for (size_t i = 0; i < 9; i++)
			free(p[i]);
	}
	free(r->L);
	if (r->head != r->embed)
		free(r->head);
	free(r->embed);
	free(r->norm);
}

/* y[n,out] = x[n,in] . W[out,in]^T */
static void ref_linear(double *y, const double *x, const double *w, int n, int out, int in)
{
	for (int t = 0; t < n; t++)
		for (int o = 0; o < out; o++) {
			double s = 0;
			for (int i = 0; i < in; i++)
				s += x[(size_t)t * in + i] * w[(size_t)o * in + i];
			y[(size_t)t * out + o] = s;
		}
}

static void ref_rmsnorm(double *y, const double *x, const double *w, int n, int d, double eps)
{
	for (int t = 0; t < n; t++) {
		double ss = 0;
		for (int i = 0; i < d; i++)
			ss += x[t * d + i] * x[t * d + i];
		double inv = 1.0 / sqrt(ss / d + eps);
		for (int i = 0; i < d; i++)
			y[t * d + i] = x[t * d + i] * inv * w[i];
	}
}

/* HF rotate-half on rows [n, heads*hd]; row t is at position t. */
static void ref_rope(double *x, int n, int heads, int hd, double theta)
{
	int half = hd / 2;
	for (int t = 0; t < n; t++)
		for (int h = 0; h < heads; h++) {
			double *v = x + ((size_t)t * heads + h) * hd;
			for (int i = 0; i < half; i++) {
				double a = t * pow(theta, -2.0 * i / hd);
				double x1 = v[i], x2 = v[i + half];
				v[i] = x1 * cos(a) - x2 * sin(a);
				v[i + half] = x2 * cos(a) + x1 * sin(a);
			}
		}
}

/* logits[n, vocab] for every position of tokens[n], computed from scratch. */
static void ref_forward(const ref_model *r, const int32_t *tok, int n, double *logits)
{
	const loom_model_config *c = &r->c;
	int d = c->hidden, nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;
	int qd = nh * hd, kvd = nkv * hd, f = c->ffn;
	double *x = malloc(sizeof(double) * n * d), *xn = malloc(sizeof(double) * n * d);
	double *q = malloc(sizeof(double) * n * qd), *k = malloc(sizeof(double) * n * kvd);
	double *v = malloc(sizeof(double) * n * kvd), *o = malloc(sizeof(double) * n * qd);
	double *g = malloc(sizeof(double) * n * f), *u = malloc(sizeof(double) * n * f);
	double *y = malloc(sizeof(double) * n * d), *sc = malloc(sizeof(double) * n);
	for (int t = 0; t < n; t++)
		memcpy(x + (size_t)t * d, r->embed + (size_t)tok[t] * d, sizeof(double) * d);
	for (int l = 0; l < c->n_layers; l++) {
		const ref_layer *L = &r->L[l];
		ref_rmsnorm(xn, x, L->an, n, d, c->rms_eps);
		ref_linear(q, xn, L->wq, n, qd, d);
		ref_linear(k, xn, L->wk, n, kvd, d);
		ref_linear(v, xn, L->wv, n, kvd, d);
		ref_rope(q, n, nh, hd, c->rope_theta);
		ref_rope(k, n, nkv, hd, c->rope_theta);
		for (int t = 0; t < n; t++)
			for (int h = 0; h < nh; h++) {
				int kh = h / (nh / nkv);
				double mx = -INFINITY, sum = 0;
				for (int j = 0; j <= t; j++) {
					double s = 0;
					for (int i = 0; i < hd; i++)
						s += q[t * qd + h * hd + i] * k[j * kvd + kh * hd + i];
					sc[j] = s / sqrt((double)hd);
					if (sc[j] > mx)
						mx = sc[j];
				}
				for (int j = 0; j <= t; j++)
					sum += (sc[j] = exp(sc[j] - mx));
				for (int i = 0; i < hd; i++) {
					double s = 0;
					for (int j = 0; j <= t; j++)
						s += sc[j] / sum * v[j * kvd + kh * hd + i];
					o[t * qd + h * hd + i] = s;
				}
			}
		ref_linear(y, o, L->wo, n, d, qd);
		for (int i = 0; i < n * d; i++)
			x[i] += y[i];
		ref_rmsnorm(xn, x, L->fn, n, d, c->rms_eps);
		ref_linear(g, xn, L->wg, n, f, d);
		ref_linear(u, xn, L->wu, n, f, d);
		for (int i = 0; i < n * f; i++)
			g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
		ref_linear(y, g, L->wd, n, d, f);
		for (int i = 0; i < n * d; i++)
			x[i] += y[i];
	}
	ref_rmsnorm(xn, x, r->norm, n, d, c->rms_eps);
	ref_linear(logits, xn, r->head, n, c->vocab, d);
	free(x), free(xn), free(q), free(k), free(v), free(o), free(g), free(u), free(y), free(sc);
}

/* ---------------------------------------------------------------------- */
/* Comparing                                                               */
/* ---------------------------------------------------------------------- */

typedef struct cmp_stats {
	double max_rel;  /* worst ||a-b||/||b|| over rows */
	double max_abs;  /* worst |a_i - b_i| */
	int rows;
} cmp_stats;

static void cmp_row(cmp_stats *st, const float *got, const double *want, int V)
{
	double num = 0, den = 0;
	for (int i = 0; i < V; i++) {
		double e = (double)got[i] - want[i];
		num += e * e;
		den += want[i] * want[i];
		if (!(fabs(e) <= st->max_abs))
			st->max_abs = isnan(e) ? INFINITY : fabs(e);
	}
	double rel = sqrt(num) / sqrt(den);
	if (!(rel <= st->max_rel))
		st->max_rel = isnan(rel) ? INFINITY : rel;
	st->rows++;
}

static void report(const char *model, const char *phase, const cmp_stats *st, double tol)
{
	printf("  %-14s %-28s rows %2d  max rel L2 %.3g  max abs %.3g\n", model, phase, st->rows,
	       st->max_rel, st->max_abs);
	if (!(st->max_rel < tol)) {
		print_error("%s %s: relative error %.3g >= %.0e\n", model, phase, st->max_rel, tol);
		fail();
	}
}

/* ---------------------------------------------------------------------- */
/* The scenario run on every model                                         */
/* ---------------------------------------------------------------------- */

typedef struct fwd {
	wk_model *m;
	wk_scratch *s;
	int V;
} fwd;

/* Runs one batch of n sequences given as (kv, tokens, count) triples. */
static void run_batch(fwd *f, int n, wk_kv **kv, const int32_t *const *tok, const int *cnt,
		      int all_logits, float *logits)
{
	int32_t start[8], toks[256];
	start[0] = 0;
	for (int s = 0; s < n; s++) {
		memcpy(toks + start[s], tok[s], sizeof(int32_t) * cnt[s]);
		start[s + 1] = start[s] + cnt[s];
	}
	wk_batch b = {.n_seqs = n, .seq_start = start, .tokens = toks, .kv = kv,
		      .all_logits = all_logits};
	loom_err rc = wk_forward(f->m, &b, f->s, logits);
	if (rc) {
		print_error("wk_forward: %s: %s\n", loom_strerror(rc), loom_errmsg());
		fail();
	}
}

static void check_model(const char *label, const char *dir)
{
	enum { NA = 12, NB = 10 };
	ref_model r;
	ref_load(dir, &r);
	fwd f = {0};
	loom_err rc = wk_model_load(dir, label, &f.m);
	if (rc) {
		print_error("wk_model_load %s: %s\n", dir, loom_errmsg());
		fail();
	}
	assert_int_equal(wk_scratch_create(f.m, &f.s), LOOM_OK);
	int V = f.V = r.c.vocab;
	int32_t A[NA], B[NB];
	uint64_t z = 12345;
	for (int i = 0; i < NA; i++)
		A[i] = (int32_t)((z = z * 6364136223846793005ULL + 1) >> 33) % V;
	for (int i = 0; i < NB; i++)
		B[i] = (int32_t)((z = z * 6364136223846793005ULL + 1) >> 33) % V;
	A[0] = B[0] = r.c.bos_id >= 0 && r.c.bos_id < V ? r.c.bos_id : 1;
	double *refA = malloc(sizeof(double) * NA * V), *refB = malloc(sizeof(double) * NB * V);
	ref_forward(&r, A, NA, refA);
	ref_forward(&r, B, NB, refB);

	wk_kv *ka, *kb, *ka2, *kb2;
	assert_int_equal(wk_kv_create(f.m, 32, &ka), LOOM_OK);
	assert_int_equal(wk_kv_create(f.m, 32, &kb), LOOM_OK);
	assert_int_equal(wk_kv_create(f.m, 32, &ka2), LOOM_OK);
	assert_int_equal(wk_kv_create(f.m, 32, &kb2), LOOM_OK);
	float *lg = malloc(sizeof(float) * 16 * V), *solo = malloc(sizeof(float) * 16 * V);
	cmp_stats st;
	const double tol = 1e-4;

	/* 1. prefill of 8 tokens, logits for all */
	st = (cmp_stats){0};
	run_batch(&f, 1, &ka, (const int32_t *[]){A}, (int[]){8}, 1, lg);
	for (int t = 0; t < 8; t++)
		cmp_row(&st, lg + (size_t)t * V, refA + (size_t)t * V, V);
	report(label, "prefill 8, all logits", &st, tol);

	/* 2. two decode steps */
	st = (cmp_stats){0};
	for (int t = 8; t < 10; t++) {
		run_batch(&f, 1, &ka, (const int32_t *[]){A + t}, (int[]){1}, 0, lg);
		cmp_row(&st, lg, refA + (size_t)t * V, V);
	}
	report(label, "decode x2", &st, tol);

	/* 3. B's first chunk alone, last logits only */
	st = (cmp_stats){0};
	run_batch(&f, 1, &kb, (const int32_t *[]){B}, (int[]){3}, 0, lg);
	cmp_row(&st, lg, refB + 2 * (size_t)V, V);
	report(label, "prefill 3, last logits", &st, tol);

	/* 4. mixed: A decodes A[10] while B prefills B[3..9), all logits */
	st = (cmp_stats){0};
	run_batch(&f, 2, (wk_kv *[]){ka, kb}, (const int32_t *[]){A + 10, B + 3}, (int[]){1, 6},
		  1, lg);
	cmp_row(&st, lg, refA + 10 * (size_t)V, V);
	for (int t = 0; t < 6; t++)
		cmp_row(&st, lg + (size_t)(1 + t) * V, refB + (size_t)(3 + t) * V, V);
	report(label, "mixed decode+prefill", &st, tol);
	assert_int_equal(ka->len, 11);
	assert_int_equal(kb->len, 9);

	/* batch invariance: replay A and B alone on fresh caches */
	run_batch(&f, 1, &ka2, (const int32_t *[]){A}, (int[]){8}, 1, solo);
	run_batch(&f, 1, &ka2, (const int32_t *[]){A + 8}, (int[]){1}, 0, solo);
	run_batch(&f, 1, &ka2, (const int32_t *[]){A + 9}, (int[]){1}, 0, solo);
	run_batch(&f, 1, &ka2, (const int32_t *[]){A + 10}, (int[]){1}, 0, solo);
	run_batch(&f, 1, &kb2, (const int32_t *[]){B}, (int[]){3}, 0, solo + V);
	run_batch(&f, 1, &kb2, (const int32_t *[]){B + 3}, (int[]){6}, 1, solo + V);
	double inv_rel = 0;
	int identical = 1;
	for (int row = 0; row < 7; row++) {
		double num = 0, den = 0;
		for (int i = 0; i < V; i++) {
			double a = lg[(size_t)row * V + i], b = solo[(size_t)row * V + i];
			num += (a - b) * (a - b);
			den += b * b;
			identical &= a == b;
		}
		inv_rel = fmax(inv_rel, sqrt(num / den));
	}
	printf("  %-14s %-28s max rel %.3g (%s)\n", label, "batch vs alone", inv_rel,
	       identical ? "bit-identical" : "differs in rounding");
	assert_true(inv_rel < 1e-5);

	/* 5. mixed, last logits only: B decodes B[9], A decodes A[11] */
	st = (cmp_stats){0};
	run_batch(&f, 2, (wk_kv *[]){kb, ka}, (const int32_t *[]){B + 9, A + 11}, (int[]){1, 1},
		  0, lg);
	cmp_row(&st, lg, refB + 9 * (size_t)V, V);
	cmp_row(&st, lg + V, refA + 11 * (size_t)V, V);
	report(label, "two decodes, last logits", &st, tol);

	free(lg), free(solo), free(refA), free(refB);
	wk_kv_destroy(ka), wk_kv_destroy(kb), wk_kv_destroy(ka2), wk_kv_destroy(kb2);
	wk_scratch_destroy(f.s);
	wk_model_destroy(f.m);
	ref_free(&r);
}

static void test_ref_stories260k(void **st)
{
	(void)st;
	check_model("stories260k", lt_shared_path("models/stories260k"));
}

static void test_ref_babyllama105(void **st)
{
	(void)st;
	check_model("babyllama105", lt_shared_path("models/babyllama105"));
}

static void check_random(const char *dtype)
{
	char *dir = lt_tmpdir(dtype);
	int rc = lt_sh("'%s' model --out '%s' --dtype %s --hidden 64 --ffn 160 --layers 2 "
		       "--heads 4 --kv-heads 2 --vocab 512 --ctx 128 --seed 3",
		       lt_bin_path("loom-mkmodel"), dir, dtype);
	if (rc != 0) {
		print_error("loom-mkmodel model --dtype %s failed (status %d)\n", dtype, rc);
		loom_free(dir);
		fail();
	}
	char label[32];
	snprintf(label, sizeof label, "random-%s", dtype);
	check_model(label, dir);
	lt_sh("rm -rf '%s'", dir);
	loom_free(dir);
}

/* A model loaded without float32 linear copies (what a CPU worker holds:
 * wk_model_load_ex f32_linear false) gives the same logits to the bit,
 * holds no float32 linear weights, and takes about half the bytes of the
 * float32-plus-packed load for a BF16 model (the packed copies are in the
 * file's dtype); the estimate a budget counts covers what it holds. */
static void check_packed_only(const char *label, const char *dir, double max_ratio)
{
	fwd a = {0}, b = {0};
	assert_int_equal(wk_model_load(dir, label, &a.m), LOOM_OK);
	assert_int_equal(wk_model_load_ex(dir, label, false, &b.m), LOOM_OK);
	assert_null(b.m->layers[0].wq);
	assert_null(b.m->layers[b.m->cfg.n_layers - 1].w_down);
	assert_non_null(b.m->embed);
	assert_int_equal(b.m->pk_bytes, a.m->pk_bytes);
	size_t held_a = a.m->arena_bytes + a.m->pk_bytes, held_b = b.m->arena_bytes + b.m->pk_bytes;
	printf("  %s: %zu bytes held packed-only vs %zu (%.2f)\n", label, held_b, held_a,
	       (double)held_b / (double)held_a);
	assert_true((double)held_b <= max_ratio * (double)held_a);
	assert_true(wk_model_weight_bytes_ex(&b.m->cfg, false) >= held_b);
	assert_true(wk_model_weight_bytes_ex(&b.m->cfg, false) < wk_model_weight_bytes(&b.m->cfg));
	assert_int_equal(wk_scratch_create(a.m, &a.s), LOOM_OK);
	assert_int_equal(wk_scratch_create(b.m, &b.s), LOOM_OK);
	int V = a.m->cfg.vocab;
	int32_t t[9] = {1, 5, 9, 2, 7, 3, 11, 4, 6};
	wk_kv *ka, *kb;
	assert_int_equal(wk_kv_create(a.m, 16, &ka), LOOM_OK);
	assert_int_equal(wk_kv_create(b.m, 16, &kb), LOOM_OK);
	float *la = malloc(sizeof(float) * 9 * V), *lb = malloc(sizeof(float) * 9 * V);
	run_batch(&a, 1, &ka, (const int32_t *[]){t}, (int[]){9}, 1, la);
	run_batch(&b, 1, &kb, (const int32_t *[]){t}, (int[]){9}, 1, lb);
	assert_memory_equal(la, lb, sizeof(float) * 9 * V);
	free(la);
	free(lb);
	wk_kv_destroy(ka);
	wk_kv_destroy(kb);
	wk_scratch_destroy(a.s);
	wk_scratch_destroy(b.s);
	wk_model_destroy(a.m);
	wk_model_destroy(b.m);
}

static void test_packed_only(void **st)
{
	(void)st;
	check_packed_only("stories260k", lt_shared_path("models/stories260k"), 0.75);
	char *dir = lt_tmpdir("packed-bf16");
	assert_int_equal(lt_sh("'%s' model --out '%s' --dtype bf16 --hidden 64 --ffn 160 "
			       "--layers 2 --heads 4 --kv-heads 2 --vocab 512 --ctx 128 --seed 4",
			       lt_bin_path("loom-mkmodel"), dir), 0);
	/* a BF16 model: float32 arena + BF16 packed before, BF16 packed + the
	 * float32 embedding and norms now */
	check_packed_only("random-bf16", dir, 0.5);
	lt_sh("rm -rf '%s'", dir);
	loom_free(dir);
}

static void test_ref_random_f16(void **st)
{
	(void)st;
	check_random("f16");
}

static void test_ref_random_bf16(void **st)
{
	(void)st;
	check_random("bf16");
}

/* ---------------------------------------------------------------------- */
/* stories260k tells its story; the engine-facing error contract           */
/* ---------------------------------------------------------------------- */

static void test_stories_greedy(void **st)
{
	(void)st;
	const char *dir = lt_shared_path("models/stories260k");
	wk_model *m;
	wk_scratch *s;
	wk_kv *kv;
	assert_int_equal(wk_model_load(dir, "stories", &m), LOOM_OK);
	assert_int_equal(wk_scratch_create(m, &s), LOOM_OK);
	assert_int_equal(wk_kv_create(m, 64, &kv), LOOM_OK);
	int V = m->cfg.vocab;
	float *lg = malloc(sizeof(float) * V);
	void *scr = malloc(wk_sample_scratch_bytes(V));
	loom_sampling greedy = {.temperature = 0.0f, .top_p = 1.0f};
	int32_t prompt[] = {1, 403, 407, 261, 378}, out[30];
	int32_t start[2] = {0, 5};
	wk_batch b = {.n_seqs = 1, .seq_start = start, .tokens = prompt, .kv = &kv};
	assert_int_equal(wk_forward(m, &b, s, lg), LOOM_OK);
	int n = 30;
	for (int i = 0; i < n; i++) {
		out[i] = wk_sample(lg, V, &greedy, (uint64_t)i, scr);
		start[1] = 1;
		b.tokens = &out[i];
		if (i + 1 < n)
			assert_int_equal(wk_forward(m, &b, s, lg), LOOM_OK);
	}
	printf("  greedy ids:");
	for (int i = 0; i < n; i++)
		printf(" %d", out[i]);
	printf("\n");

	/* The pieces of the text below in tokenizer.json's vocab (",", "▁there",
	 * "▁was", "▁a", ..., "▁p", "ar", "k", "."): checked without the tokenizer
	 * too, so a tokenizer bug cannot hide a forward bug or the reverse. */
	static const int32_t want_ids[] = {432, 383, 286, 261, 376, 298, 315, 421, 395,
					   317, 426, 338, 401, 396, 267, 337, 410, 408,
					   419, 292, 411, 322, 265, 282, 295, 433, 426};
	assert_memory_equal(out, want_ids, sizeof want_ids);

	const char *want = ", there was a little girl named Lily. She loved to play outside in "
			   "the park.";
	loom_tok *tok = NULL;
	char tpath[512];
	snprintf(tpath, sizeof tpath, "%s/tokenizer.json", dir);
	loom_err rc = loom_tok_load(tpath, &tok);
	if (rc) {
		print_error("loom_tok_load %s: %s\n", tpath, loom_errmsg());
		fail();
	}
	char *text = NULL;
	size_t len = 0;
	assert_int_equal(loom_tok_decode(tok, out, (size_t)n, true, &text, &len), LOOM_OK);
	printf("  greedy text: \"%s\"\n", text);
	if (strncmp(text, want, strlen(want)) != 0) {
		print_error("stories260k greedy text does not begin with \"%s\"\n", want);
		fail();
	}
	loom_free(text);
	loom_tok_free(tok);
	free(lg), free(scr);
	wk_kv_destroy(kv);
	wk_scratch_destroy(s);
	wk_model_destroy(m);
}

static void test_forward_errors(void **st)
{
	(void)st;
	wk_model *m;
	wk_scratch *s;
	wk_kv *kv, *kv2;
	assert_int_equal(wk_model_load(lt_shared_path("models/stories260k"), "s", &m), LOOM_OK);
	assert_int_equal(wk_scratch_create(m, &s), LOOM_OK);
	assert_int_equal(wk_kv_create(m, 4, &kv), LOOM_OK);
	assert_int_equal(wk_kv_create(m, 4, &kv2), LOOM_OK);
	float *lg = malloc(sizeof(float) * 8 * m->cfg.vocab);
	int32_t toks[] = {1, 2, 3, 4, 5};
	int32_t start[3] = {0, 5, 5};
	wk_batch b = {.n_seqs = 1, .seq_start = start, .tokens = toks, .kv = &kv};
	/* 5 tokens into a 4-position cache: ERANGE, cache untouched */
	assert_int_equal(wk_forward(m, &b, s, lg), LOOM_ERANGE);
	assert_non_null(strstr(loom_errmsg(), "capacity"));
	assert_int_equal(kv->len, 0);
	/* a token outside the vocabulary */
	start[1] = 2;
	toks[1] = m->cfg.vocab;
	assert_int_equal(wk_forward(m, &b, s, lg), LOOM_EINVAL);
	assert_int_equal(kv->len, 0);
	toks[1] = -1;
	assert_int_equal(wk_forward(m, &b, s, lg), LOOM_EINVAL);
	toks[1] = 2;
	/* an empty sequence, and one cache used twice */
	b.n_seqs = 2;
	b.kv = (wk_kv *[]){kv, kv2};
	start[2] = 2;
	assert_int_equal(wk_forward(m, &b, s, lg), LOOM_EINVAL);
	b.kv = (wk_kv *[]){kv, kv};
	start[2] = 3;
	assert_int_equal(wk_forward(m, &b, s, lg), LOOM_EINVAL);
	assert_int_equal(kv->len, 0);
	/* the cache fills exactly, then refuses one more */
	b.n_seqs = 1;
	b.kv = &kv;
	start[1] = 4;
	assert_int_equal(wk_forward(m, &b, s, lg), LOOM_OK);
	assert_int_equal(kv->len, 4);
	start[1] = 1;
	assert_int_equal(wk_forward(m, &b, s, lg), LOOM_ERANGE);
	assert_int_equal(kv->len, 4);
	wk_kv_destroy(kv2);
	assert_int_equal(wk_kv_create(m, 0, &kv2), LOOM_EINVAL);
	assert_null(kv2);
	free(lg);
	wk_kv_destroy(kv);
	wk_scratch_destroy(s);
	wk_model_destroy(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ref_stories260k),
		cmocka_unit_test(test_ref_babyllama105),
		cmocka_unit_test(test_ref_random_f16),
		cmocka_unit_test(test_ref_random_bf16),
		cmocka_unit_test(test_packed_only),
		cmocka_unit_test(test_stories_greedy),
		cmocka_unit_test(test_forward_errors),
	};
	return cmocka_run_group_tests_name("worker/forward", tests, NULL, NULL);
}
