/*
 * tests/support/ref_llm.c — the float64 reference forward (ref_llm.h).
 *
 * Each step names the transformers function it follows. Weights are
 * doubles in HF's layout ([out, in] for a Linear); a forward recomputes
 * every position from the embeddings with plain loops.
 */
#include "ref_llm.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dtype.h"
#include "common/safetensors.h"

enum { FAM_LLAMA, FAM_MISTRAL, FAM_QWEN2, FAM_QWEN3, FAM_GEMMA2 };
enum { ROPE_DEFAULT, ROPE_LINEAR, ROPE_DYNAMIC, ROPE_YARN, ROPE_LLAMA3 };
enum { ACT_SILU, ACT_GELU_TANH };

typedef struct ref_layer {
	double *an;                 /* [d] input_layernorm */
	double *wq, *wk, *wv, *wo;  /* [qd,d] [kvd,d] [kvd,d] [d,qd] */
	double *bq, *bk, *bv, *bo;  /* biases or NULL */
	double *qn, *kn;            /* [hd] Qwen3 q_norm / k_norm, or NULL */
	double *pa;                 /* [d] Gemma 2 post_attention_layernorm (on the attention output) */
	double *fn;                 /* [d] norm before the MLP: Llama's post_attention_layernorm,
				       Gemma 2's pre_feedforward_layernorm */
	double *pf;                 /* [d] Gemma 2 post_feedforward_layernorm */
	double *wg, *wu, *wd;       /* [f,d] [f,d] [d,f] */
	double *bg, *bu, *bd;       /* mlp biases or NULL */
	int window;                 /* 0 = full attention */
} ref_layer;

struct ref_llm {
	char type[32];
	int fam;
	int d, f, L, nh, nkv, hd, V, max_pos;
	double eps, theta;
	int tied, act;
	/* rope_scaling */
	int rope;
	double factor, low_ff, high_ff, attn_factor, beta_fast, beta_slow;
	int orig_max, truncate;
	/* Gemma 2 */
	double qpas, attn_cap, final_cap; /* query_pre_attn_scalar; caps 0 = none */
	double *embed;              /* [V, d] */
	double *norm;               /* [d] */
	double *head;               /* [V, d]; == embed when tied */
	ref_layer *layers;          /* [L] */
	unsigned ablate;
};

static char errbuf[512];

const char *ref_llm_errmsg(void)
{
	return errbuf;
}

__attribute__((format(printf, 1, 2))) static int err(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(errbuf, sizeof errbuf, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---------------------------------------------------------------------- */
/* config.json                                                             */
/* ---------------------------------------------------------------------- */

/* A number field (null or absent: dflt). */
static double num(json_t *o, const char *key, double dflt)
{
	json_t *v = json_object_get(o, key);
	return json_is_number(v) ? json_number_value(v) : dflt;
}

static int boolean(json_t *o, const char *key, int dflt)
{
	json_t *v = json_object_get(o, key);
	return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int parse_rope(ref_llm *r, json_t *rs)
{
	r->rope = ROPE_DEFAULT;
	if (!json_is_object(rs))
		return 0;
	json_t *t = json_object_get(rs, "rope_type");
	if (!json_is_string(t))
		t = json_object_get(rs, "type"); /* HF: "type" is the older spelling */
	const char *s = json_string_value(t);
	if (!s || !strcmp(s, "default"))
		return 0;
	static const char *const names[] = { "default", "linear", "dynamic", "yarn", "llama3" };
	r->rope = -1;
	for (int i = 0; i < 5; i++)
		if (!strcmp(s, names[i]))
			r->rope = i;
	if (r->rope < 0)
		return err("rope_scaling type %s is not in the reference", s);
	r->factor = num(rs, "factor", 0);
	r->low_ff = num(rs, "low_freq_factor", 1);
	r->high_ff = num(rs, "high_freq_factor", 4);
	r->orig_max = (int)num(rs, "original_max_position_embeddings", r->max_pos);
	r->attn_factor = num(rs, "attention_factor", 0);
	/* _compute_yarn_parameters: `get("beta_fast") or 32` (0 counts as unset) */
	r->beta_fast = num(rs, "beta_fast", 0) ? num(rs, "beta_fast", 0) : 32;
	r->beta_slow = num(rs, "beta_slow", 0) ? num(rs, "beta_slow", 0) : 1;
	r->truncate = boolean(rs, "truncate", 1);
	if (r->rope == ROPE_YARN && r->factor == 0)
		r->factor = (double)r->max_pos / r->orig_max;
	if (!(r->factor > 0))
		return err("rope_scaling: factor missing");
	if (r->rope == ROPE_YARN && r->attn_factor == 0) {
		/* get_mscale(factor[, mscale]) / get_mscale(factor, mscale_all_dim) */
		double ms = num(rs, "mscale", 0), msa = num(rs, "mscale_all_dim", 0);
#define MSCALE(s, m) ((s) <= 1 ? 1.0 : 0.1 * (m) * log(s) + 1.0)
		r->attn_factor = ms && msa ? MSCALE(r->factor, ms) / MSCALE(r->factor, msa)
					   : MSCALE(r->factor, 1.0);
#undef MSCALE
	}
	return 0;
}

/* Windows per layer: configuration_*.py's layer_types when present, else
 * each family's rule. */
static int parse_windows(ref_llm *r, json_t *c)
{
	json_t *sw = json_object_get(c, "sliding_window"), *lt = json_object_get(c, "layer_types");
	int window = json_is_integer(sw) ? (int)json_integer_value(sw) : 0;
	if (r->fam == FAM_QWEN2 || r->fam == FAM_QWEN3) {
		/* Qwen2Config: sliding_window = sliding_window if use_sliding_window else None */
		if (!boolean(c, "use_sliding_window", 0))
			window = 0;
	}
	if (r->fam == FAM_LLAMA)
		window = 0;
	if (json_is_array(lt)) {
		if ((int)json_array_size(lt) != r->L)
			return err("layer_types has %zu entries for %d layers", json_array_size(lt),
				   r->L);
		for (int l = 0; l < r->L; l++) {
			const char *s = json_string_value(json_array_get(lt, (size_t)l));
			r->layers[l].window = s && !strcmp(s, "sliding_attention") ? window : 0;
		}
		return 0;
	}
	int mwl = (int)num(c, "max_window_layers", 28); /* Qwen2Config's default */
	for (int l = 0; l < r->L; l++) {
		int w = 0;
		if (r->fam == FAM_MISTRAL)
			w = window; /* MistralModel: every layer when sliding_window is set */
		else if (r->fam == FAM_QWEN2 || r->fam == FAM_QWEN3)
			w = l >= mwl ? window : 0; /* "sliding_attention" if i >= max_window_layers */
		else if (r->fam == FAM_GEMMA2)
			w = l % 2 == 0 ? window : 0; /* Gemma2Config: sliding if (i + 1) % 2 */
		r->layers[l].window = w;
	}
	return 0;
}

static int parse_config(ref_llm *r, const char *dir)
{
	char path[1024];
	json_error_t e;
	snprintf(path, sizeof path, "%s/config.json", dir);
	json_t *c = json_load_file(path, 0, &e);
	if (!c)
		return err("%s: %s", path, e.text);
	int rc = -1;
	const char *mt = json_string_value(json_object_get(c, "model_type"));
	snprintf(r->type, sizeof r->type, "%s", mt ? mt : "");
	if (!strcmp(r->type, "llama"))
		r->fam = FAM_LLAMA;
	else if (!strcmp(r->type, "mistral"))
		r->fam = FAM_MISTRAL;
	else if (!strcmp(r->type, "qwen2"))
		r->fam = FAM_QWEN2;
	else if (!strcmp(r->type, "qwen3"))
		r->fam = FAM_QWEN3;
	else if (!strcmp(r->type, "gemma2"))
		r->fam = FAM_GEMMA2;
	else {
		err("%s: model_type \"%s\" is not in the reference", path, r->type);
		goto out;
	}
	r->d = (int)num(c, "hidden_size", 0);
	r->f = (int)num(c, "intermediate_size", 0);
	r->L = (int)num(c, "num_hidden_layers", 0);
	r->nh = (int)num(c, "num_attention_heads", 0);
	r->nkv = (int)num(c, "num_key_value_heads", r->nh);
	r->V = (int)num(c, "vocab_size", 0);
	if (r->d <= 0 || r->f <= 0 || r->L <= 0 || r->nh <= 0 || r->nkv <= 0 || r->V <= 0 ||
	    r->nh % r->nkv) {
		err("%s: bad or missing sizes", path);
		goto out;
	}
	/* getattr(config, "head_dim", None) or hidden_size // num_attention_heads */
	r->hd = (int)num(c, "head_dim", r->d / r->nh);
	r->max_pos = (int)num(c, "max_position_embeddings", 2048);
	r->eps = num(c, "rms_norm_eps", 1e-6);
	r->theta = num(c, "rope_theta", 10000);
	/* PretrainedConfig defaults: tied for Gemma 2, untied for the others */
	r->tied = boolean(c, "tie_word_embeddings", r->fam == FAM_GEMMA2);
	const char *act = json_string_value(json_object_get(c, r->fam == FAM_GEMMA2 ?
								    "hidden_activation" : "hidden_act"));
	if (!act)
		act = r->fam == FAM_GEMMA2 ? "gelu_pytorch_tanh" : "silu";
	if (!strcmp(act, "silu"))
		r->act = ACT_SILU;
	else if (!strcmp(act, "gelu_pytorch_tanh"))
		r->act = ACT_GELU_TANH;
	else {
		err("%s: activation %s is not in the reference", path, act);
		goto out;
	}
	if (r->fam == FAM_GEMMA2) {
		r->qpas = num(c, "query_pre_attn_scalar", 256);
		r->attn_cap = num(c, "attn_logit_softcapping", 0);
		r->final_cap = num(c, "final_logit_softcapping", 0);
	}
	if (!(r->layers = calloc((size_t)r->L, sizeof *r->layers))) {
		err("out of memory");
		goto out;
	}
	if (parse_rope(r, json_object_get(c, "rope_scaling")) || parse_windows(r, c))
		goto out;
	rc = 0;
out:
	json_decref(c);
	return rc;
}

/* ---------------------------------------------------------------------- */
/* Weights                                                                 */
/* ---------------------------------------------------------------------- */

/* Tensor name as doubles, numel checked; NULL when absent and optional. */
static double *tensor(const loom_st_set *set, const char *name, size_t want, int optional,
		      int *bad)
{
	const loom_tensor *t = loom_st_set_find(set, name);
	if (!t) {
		if (!optional) {
			err("tensor %s missing", name);
			*bad = 1;
		}
		return NULL;
	}
	size_t n = loom_tensor_numel(t);
	if (n != want) {
		err("tensor %s has %zu values, want %zu", name, n, want);
		*bad = 1;
		return NULL;
	}
	float *fl = malloc(n * sizeof *fl);
	double *d = malloc(n * sizeof *d);
	if (!fl || !d || loom_to_f32(fl, t->data, t->dtype, n) != 0) {
		free(fl);
		free(d);
		err("tensor %s: cannot convert", name);
		*bad = 1;
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		d[i] = fl[i];
	free(fl);
	return d;
}

static int load_weights(ref_llm *r, const char *dir)
{
	loom_st_set *set = NULL;
	if (loom_st_set_open(dir, &set) != 0)
		return err("%s: cannot open the weights", dir);
	size_t d = (size_t)r->d, q = (size_t)r->nh * r->hd, kv = (size_t)r->nkv * r->hd;
	size_t f = (size_t)r->f, V = (size_t)r->V, hd = (size_t)r->hd;
	int bad = 0, gemma = r->fam == FAM_GEMMA2;
	char nm[160];
	r->embed = tensor(set, "model.embed_tokens.weight", V * d, 0, &bad);
	r->norm = tensor(set, "model.norm.weight", d, 0, &bad);
	r->head = r->tied ? r->embed : tensor(set, "lm_head.weight", V * d, 0, &bad);
	for (int l = 0; l < r->L && !bad; l++) {
		ref_layer *L = &r->layers[l];
#define T(field, suffix, n, opt)                                              \
	snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix);            \
	L->field = tensor(set, nm, n, opt, &bad)
		T(an, "input_layernorm.weight", d, 0);
		T(wq, "self_attn.q_proj.weight", q * d, 0);
		T(wk, "self_attn.k_proj.weight", kv * d, 0);
		T(wv, "self_attn.v_proj.weight", kv * d, 0);
		T(wo, "self_attn.o_proj.weight", d * q, 0);
		/* biases: Qwen2 always has q/k/v; Llama/Qwen3/Gemma 2 with
		 * attention_bias; Llama with mlp_bias. Read whatever is there:
		 * a bias the config does not announce would be loaded by HF too
		 * (strictly, HF would refuse it; mkmodel never writes one). */
		T(bq, "self_attn.q_proj.bias", q, 1);
		T(bk, "self_attn.k_proj.bias", kv, 1);
		T(bv, "self_attn.v_proj.bias", kv, 1);
		T(bo, "self_attn.o_proj.bias", d, 1);
		T(wg, "mlp.gate_proj.weight", f * d, 0);
		T(wu, "mlp.up_proj.weight", f * d, 0);
		T(wd, "mlp.down_proj.weight", d * f, 0);
		T(bg, "mlp.gate_proj.bias", f, 1);
		T(bu, "mlp.up_proj.bias", f, 1);
		T(bd, "mlp.down_proj.bias", d, 1);
		if (r->fam == FAM_QWEN3) {
			T(qn, "self_attn.q_norm.weight", hd, 0);
			T(kn, "self_attn.k_norm.weight", hd, 0);
		}
		if (gemma) {
			T(pa, "post_attention_layernorm.weight", d, 0);
			T(fn, "pre_feedforward_layernorm.weight", d, 0);
			T(pf, "post_feedforward_layernorm.weight", d, 0);
		} else {
			T(fn, "post_attention_layernorm.weight", d, 0);
		}
#undef T
		if (r->fam == FAM_QWEN2 && !bad && !(L->bq && L->bk && L->bv)) {
			err("qwen2 layer %d: q/k/v biases missing", l);
			bad = 1;
		}
	}
	loom_st_set_close(set);
	return bad ? -1 : 0;
}

/* ---------------------------------------------------------------------- */
/* PEFT LoRA, merged                                                       */
/* ---------------------------------------------------------------------- */

static double *st_doubles(const loom_st_file *f, const char *name, int64_t *rows, int64_t *cols)
{
	const loom_tensor *t = loom_st_find(f, name);
	if (!t || t->ndim != 2)
		return NULL;
	size_t n = loom_tensor_numel(t);
	float *fl = malloc(n * sizeof *fl);
	double *d = malloc(n * sizeof *d);
	if (!fl || !d || loom_to_f32(fl, t->data, t->dtype, n) != 0) {
		free(fl);
		free(d);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		d[i] = fl[i];
	free(fl);
	*rows = t->shape[0];
	*cols = t->shape[1];
	return d;
}

/* peft LoraLayer: scaling = lora_alpha / r (use_rslora: / sqrt(r));
 * merge (get_delta_weight): W += scaling * B @ A, for every module whose
 * lora_A/lora_B pair is in adapter_model.safetensors. */
static int merge_adapter(ref_llm *r, const char *dir)
{
	char path[1024];
	json_error_t e;
	snprintf(path, sizeof path, "%s/adapter_config.json", dir);
	json_t *c = json_load_file(path, 0, &e);
	if (!c)
		return err("%s: %s", path, e.text);
	double rank = num(c, "r", 0), alpha = num(c, "lora_alpha", 0);
	int rslora = boolean(c, "use_rslora", 0);
	int patterns = json_object_size(json_object_get(c, "rank_pattern")) +
		       json_object_size(json_object_get(c, "alpha_pattern"));
	json_decref(c);
	if (!(rank > 0) || patterns)
		return err("%s: r missing, or rank/alpha patterns (not in the reference)", path);
	double scale = alpha / (rslora ? sqrt(rank) : rank);

	loom_st_file *f = NULL;
	snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
	if (loom_st_open(path, &f) != 0)
		return err("%s: cannot open", path);
	static const char *const mods[] = { "self_attn.q_proj", "self_attn.k_proj",
					    "self_attn.v_proj", "self_attn.o_proj",
					    "mlp.gate_proj",    "mlp.up_proj",
					    "mlp.down_proj" };
	int merged = 0, rc = 0;
	for (int l = 0; l < r->L && !rc; l++) {
		ref_layer *L = &r->layers[l];
		double *w[] = { L->wq, L->wk, L->wv, L->wo, L->wg, L->wu, L->wd };
		const int64_t q = (int64_t)r->nh * r->hd, kv = (int64_t)r->nkv * r->hd;
		const int64_t wout[] = { q, kv, kv, r->d, r->f, r->f, r->d };
		const int64_t win[] = { r->d, r->d, r->d, q, r->d, r->d, r->f };
		for (int m = 0; m < 7 && !rc; m++) {
			char na[200], nb[200];
			int64_t ar, ac, br, bc;
			snprintf(na, sizeof na, "base_model.model.model.layers.%d.%s.lora_A.weight", l,
				 mods[m]);
			snprintf(nb, sizeof nb, "base_model.model.model.layers.%d.%s.lora_B.weight", l,
				 mods[m]);
			double *A = st_doubles(f, na, &ar, &ac), *B = st_doubles(f, nb, &br, &bc);
			if (!A && !B)
				continue;
			/* W is [out = br, in = ac] */
			if (!A || !B || ar != (int64_t)rank || bc != ar) {
				rc = err("%s: %s: A/B pair incomplete or rank != r", path, na);
			} else if (br != wout[m] || ac != win[m]) {
				rc = err("%s: %s: shape does not fit the model", path, na);
			} else {
				for (int64_t o = 0; o < br; o++)
					for (int64_t i = 0; i < ac; i++) {
						double s = 0;
						for (int64_t k = 0; k < ar; k++)
							s += B[o * bc + k] * A[k * ac + i];
						w[m][o * ac + i] += scale * s;
					}
				merged++;
			}
			free(A);
			free(B);
		}
	}
	loom_st_close(f);
	if (!rc && !merged)
		rc = err("%s: no LoRA pair for this model", path);
	return rc;
}

int ref_llm_load(const char *model_dir, const char *adapter_dir, ref_llm **out)
{
	ref_llm *r = calloc(1, sizeof *r);
	*out = NULL;
	if (!r)
		return err("out of memory");
	if (parse_config(r, model_dir) || load_weights(r, model_dir) ||
	    (adapter_dir && merge_adapter(r, adapter_dir))) {
		ref_llm_free(r);
		return -1;
	}
	*out = r;
	return 0;
}

void ref_llm_free(ref_llm *r)
{
	if (!r)
		return;
	for (int l = 0; r->layers && l < r->L; l++) {
		ref_layer *L = &r->layers[l];
		double *p[] = { L->an, L->wq, L->wk, L->wv, L->wo, L->bq, L->bk, L->bv, L->bo,
				L->qn, L->kn, L->pa, L->fn, L->pf, L->wg, L->wu, L->wd, L->bg,
				L->bu, L->bd };
		for (size_t i = 0; i < sizeof p / sizeof *p; i++)
			free(p[i]);
	}
	free(r->layers);
	if (r->head != r->embed)
		free(r->head);
	free(r->embed);
	free(r->norm);
	free(r);
}

int ref_llm_vocab(const ref_llm *r)
{
	return r->V;
}

const char *ref_llm_type(const ref_llm *r)
{
	return r->type;
}

int ref_llm_window(const ref_llm *r, int layer)
{
	return r->layers[layer].window;
}

void ref_llm_ablate(ref_llm *r, unsigned flags)
{
	r->ablate = flags;
}

/* ---------------------------------------------------------------------- */
/* Forward                                                                 */
/* ---------------------------------------------------------------------- */

/* nn.Linear: y[n,out] = x[n,in] W[out,in]^T + b */
static void linear(double *y, const double *x, const double *w, const double *b, int n, int out,
		   int in)
{
	for (int t = 0; t < n; t++)
		for (int o = 0; o < out; o++) {
			double s = b ? b[o] : 0;
			for (int i = 0; i < in; i++)
				s += x[(size_t)t * in + i] * w[(size_t)o * in + i];
			y[(size_t)t * out + o] = s;
		}
}

/* LlamaRMSNorm.forward: w * x / sqrt(mean(x^2) + eps);
 * Gemma2RMSNorm.forward: x / sqrt(mean(x^2) + eps) * (1 + w).
 * rows of length d, in place allowed. */
static void rmsnorm(double *y, const double *x, const double *w, int n, int d, double eps,
		    int one_plus)
{
	for (int t = 0; t < n; t++) {
		const double *xr = x + (size_t)t * d;
		double ss = 0;
		for (int i = 0; i < d; i++)
			ss += xr[i] * xr[i];
		double inv = 1.0 / sqrt(ss / d + eps);
		for (int i = 0; i < d; i++)
			y[(size_t)t * d + i] = xr[i] * inv * (one_plus ? 1.0 + w[i] : w[i]);
	}
}

/* inv_freq[hd/2] for a token at position pos, and the cos/sin factor
 * (modeling_rope_utils.py ROPE_INIT_FUNCTIONS). */
static double rope_inv_freq(const ref_llm *r, int pos, double *inv)
{
	const int dim = r->hd, half = dim / 2;
	int kind = r->ablate & REF_NO_ROPE_SCALING ? ROPE_DEFAULT : r->rope;
	double base = r->theta;

	if (kind == ROPE_DYNAMIC) {
		/* _compute_dynamic_ntk_parameters with seq_len = max(pos + 1,
		 * max_position_embeddings) (dynamic_rope_update at decode):
		 * base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2)) */
		double seq = pos + 1 > r->max_pos ? pos + 1 : r->max_pos;
		base = base * pow(r->factor * seq / r->max_pos - (r->factor - 1),
				  (double)dim / (dim - 2));
	}
	/* _compute_default_rope_parameters: 1 / base ** (arange(0, dim, 2) / dim) */
	for (int i = 0; i < half; i++)
		inv[i] = 1.0 / pow(base, 2.0 * i / dim);
	if (kind == ROPE_LINEAR) {
		/* _compute_linear_scaling_rope_parameters: inv_freq /= factor */
		for (int i = 0; i < half; i++)
			inv[i] /= r->factor;
	} else if (kind == ROPE_LLAMA3) {
		/* _compute_llama3_parameters */
		double lo_wl = r->orig_max / r->low_ff, hi_wl = r->orig_max / r->high_ff;
		for (int i = 0; i < half; i++) {
			double wl = 2 * M_PI / inv[i], v = inv[i];
			if (wl > lo_wl) {
				v = inv[i] / r->factor;
			} else if (!(wl < hi_wl)) {
				double sm = (r->orig_max / wl - r->low_ff) / (r->high_ff - r->low_ff);
				v = (1 - sm) * inv[i] / r->factor + sm * inv[i];
			}
			inv[i] = v;
		}
	} else if (kind == ROPE_YARN) {
		/* _compute_yarn_parameters: find_correction_range(beta_fast,
		 * beta_slow, dim, base, original_max_position_embeddings, truncate) */
#define CORR_DIM(rot) (dim * log(r->orig_max / ((rot) * 2 * M_PI)) / (2 * log(base)))
		double lo = CORR_DIM(r->beta_fast), hi = CORR_DIM(r->beta_slow);
#undef CORR_DIM
		if (r->truncate) {
			lo = floor(lo);
			hi = ceil(hi);
		}
		if (lo < 0)
			lo = 0;
		if (hi > dim - 1)
			hi = dim - 1;
		if (lo == hi)
			hi += 0.001; /* linear_ramp_factor: prevent singularity */
		for (int i = 0; i < half; i++) {
			double ramp = (i - lo) / (hi - lo);
			ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
			double extra = 1 - ramp; /* inv_freq_extrapolation_factor */
			double interp = inv[i] / r->factor;
			inv[i] = interp * (1 - extra) + inv[i] * extra;
		}
		return r->attn_factor; /* cos = cos * attention_scaling, sin too */
	}
	return 1.0;
}

/* apply_rotary_pos_emb (rotate_half): x[..., :h], x[..., h:] rotated by
 * angle pos * inv_freq[i], cos/sin scaled by af. rows [heads, hd]. */
static void rope_row(double *x, int heads, int hd, int pos, const double *inv, double af)
{
	int half = hd / 2;
	for (int h = 0; h < heads; h++) {
		double *v = x + (size_t)h * hd;
		for (int i = 0; i < half; i++) {
			double a = pos * inv[i], c = cos(a) * af, s = sin(a) * af;
			double x1 = v[i], x2 = v[i + half];
			v[i] = x1 * c - x2 * s;
			v[i + half] = x2 * c + x1 * s;
		}
	}
}

/* ACT2FN: silu(x) = x * sigmoid(x); gelu_pytorch_tanh(x) =
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
static double act(const ref_llm *r, double x)
{
	if (r->act == ACT_SILU || (r->ablate & REF_SILU))
		return x / (1.0 + exp(-x));
	return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* One layer's attention for all n positions (eager_attention_forward):
 * scores q.k * scaling, Gemma 2's tanh soft-cap, then the causal (and
 * sliding-window) mask, softmax, weighted sum of v. GQA: query head h reads
 * kv head h / (nh / nkv) (repeat_kv). */
static void attention(const ref_llm *r, const ref_layer *L, const double *q, const double *k,
		      const double *v, double *o, int n, double *sc)
{
	const int nh = r->nh, nkv = r->nkv, hd = r->hd, qd = nh * hd, kvd = nkv * hd;
	const int window = r->ablate & REF_NO_WINDOW ? 0 : L->window;
	const double cap = r->ablate & REF_NO_ATTN_SOFTCAP ? 0 : r->attn_cap;
	/* LlamaAttention: head_dim ** -0.5; Gemma2Attention: query_pre_attn_scalar ** -0.5 */
	const double scaling = r->fam == FAM_GEMMA2 && !(r->ablate & REF_HEAD_DIM_SCALE)
				       ? 1.0 / sqrt(r->qpas) : 1.0 / sqrt((double)hd);
	for (int t = 0; t < n; t++)
		for (int h = 0; h < nh; h++) {
			int kh = h / (nh / nkv);
			/* sliding_window_causal mask: kv_idx > q_idx - window */
			int j0 = window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
			double mx = -INFINITY, sum = 0;
			for (int j = j0; j <= t; j++) {
				double s = 0;
				for (int i = 0; i < hd; i++)
					s += q[(size_t)t * qd + h * hd + i] * k[(size_t)j * kvd + kh * hd + i];
				s *= scaling;
				if (cap > 0)
					s = tanh(s / cap) * cap;
				sc[j] = s;
				if (s > mx)
					mx = s;
			}
			for (int j = j0; j <= t; j++)
				sum += (sc[j] = exp(sc[j] - mx));
			for (int i = 0; i < hd; i++) {
				double s = 0;
				for (int j = j0; j <= t; j++)
					s += sc[j] / sum * v[(size_t)j * kvd + kh * hd + i];
				o[(size_t)t * qd + h * hd + i] = s;
			}
		}
}

int ref_llm_forward(const ref_llm *r, const int32_t *tok, int n, double *logits)
{
	const int d = r->d, nh = r->nh, nkv = r->nkv, hd = r->hd, f = r->f;
	const int qd = nh * hd, kvd = nkv * hd, gemma = r->fam == FAM_GEMMA2;
	const int one_plus = gemma && !(r->ablate & REF_PLAIN_NORM);
	const int bias = !(r->ablate & REF_NO_BIAS);
	for (int t = 0; t < n; t++)
		if (tok[t] < 0 || tok[t] >= r->V)
			return err("token %d outside the vocabulary", tok[t]);
	double *x = malloc(sizeof(double) * n * d), *xn = malloc(sizeof(double) * n * d);
	double *q = malloc(sizeof(double) * n * qd), *k = malloc(sizeof(double) * n * kvd);
	double *v = malloc(sizeof(double) * n * kvd), *o = malloc(sizeof(double) * n * qd);
	double *g = malloc(sizeof(double) * n * f), *u = malloc(sizeof(double) * n * f);
	double *y = malloc(sizeof(double) * n * d), *sc = malloc(sizeof(double) * n);
	double *inv = malloc(sizeof(double) * hd);
	int rc = 0;
	if (!x || !xn || !q || !k || !v || !o || !g || !u || !y || !sc || !inv) {
		rc = err("out of memory");
		goto out;
	}

	/* embed_tokens; Gemma2Model: hidden_states * hidden_size ** 0.5 */
	double emb_scale = gemma && !(r->ablate & REF_NO_EMBED_SCALE) ? sqrt((double)d) : 1.0;
	for (int t = 0; t < n; t++)
		for (int i = 0; i < d; i++)
			x[(size_t)t * d + i] = r->embed[(size_t)tok[t] * d + i] * emb_scale;

	for (int l = 0; l < r->L; l++) {
		const ref_layer *L = &r->layers[l];
		/* *DecoderLayer.forward: input_layernorm -> self_attn */
		rmsnorm(xn, x, L->an, n, d, r->eps, one_plus);
		linear(q, xn, L->wq, bias ? L->bq : NULL, n, qd, d);
		linear(k, xn, L->wk, bias ? L->bk : NULL, n, kvd, d);
		linear(v, xn, L->wv, bias ? L->bv : NULL, n, kvd, d);
		if (L->qn && !(r->ablate & REF_NO_QK_NORM)) {
			/* Qwen3Attention: q_norm / k_norm over each head's head_dim,
			 * before the rotary embedding */
			rmsnorm(q, q, L->qn, n * nh, hd, r->eps, 0);
			rmsnorm(k, k, L->kn, n * nkv, hd, r->eps, 0);
		}
		for (int t = 0; t < n; t++) {
			double af = rope_inv_freq(r, t, inv);
			rope_row(q + (size_t)t * qd, nh, hd, t, inv, af);
			rope_row(k + (size_t)t * kvd, nkv, hd, t, inv, af);
		}
		attention(r, L, q, k, v, o, n, sc);
		linear(y, o, L->wo, bias ? L->bo : NULL, n, d, qd);
		if (gemma && !(r->ablate & REF_NO_SANDWICH))
			rmsnorm(y, y, L->pa, n, d, r->eps, one_plus); /* post_attention_layernorm */
		for (size_t i = 0; i < (size_t)n * d; i++)
			x[i] += y[i];
		/* Llama: post_attention_layernorm -> mlp; Gemma 2:
		 * pre_feedforward_layernorm -> mlp -> post_feedforward_layernorm */
		rmsnorm(xn, x, L->fn, n, d, r->eps, one_plus);
		linear(g, xn, L->wg, bias ? L->bg : NULL, n, f, d);
		linear(u, xn, L->wu, bias ? L->bu : NULL, n, f, d);
		/* *MLP.forward: down_proj(act_fn(gate_proj(x)) * up_proj(x)) */
		for (size_t i = 0; i < (size_t)n * f; i++)
			g[i] = act(r, g[i]) * u[i];
		linear(y, g, L->wd, bias ? L->bd : NULL, n, d, f);
		if (gemma && !(r->ablate & REF_NO_SANDWICH))
			rmsnorm(y, y, L->pf, n, d, r->eps, one_plus);
		for (size_t i = 0; i < (size_t)n * d; i++)
			x[i] += y[i];
	}
	/* model.norm, lm_head; Gemma2ForCausalLM: tanh(logits / cap) * cap */
	rmsnorm(xn, x, r->norm, n, d, r->eps, one_plus);
	linear(logits, xn, r->head, NULL, n, r->V, d);
	if (r->final_cap > 0 && !(r->ablate & REF_NO_FINAL_SOFTCAP))
		for (size_t i = 0; i < (size_t)n * r->V; i++)
			logits[i] = tanh(logits[i] / r->final_cap) * r->final_cap;
out:
	free(x), free(xn), free(q), free(k), free(v), free(o), free(g), free(u), free(y), free(sc);
	free(inv);
	return rc;
}
