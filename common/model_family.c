/*
 * common/model_family.c — the supported families as one table, and the
 * layer description (loom_model_config's second half) filled from it and
 * from config.json, following Hugging Face transformers' modeling code:
 *
 *   llama   LlamaForCausalLM    attention_bias (q,k,v,o), mlp_bias, rope_scaling
 *   mistral MistralForCausalLM  sliding_window on every layer (default 4096, null = none)
 *   qwen2   Qwen2ForCausalLM    q,k,v biases always; sliding window only with
 *                               use_sliding_window, on layers >= max_window_layers
 *   qwen3   Qwen3ForCausalLM    q_norm/k_norm per head, attention_bias, windows as qwen2
 *   gemma2  Gemma2ForCausalLM   x*(1+w) norms, sandwich norms, sqrt(hidden) embedding
 *                               scale, hidden_activation, query_pre_attn_scalar,
 *                               attention and final soft-caps, window on even layers
 *
 * layer_types (newer configs: "full_attention" / "sliding_attention" per
 * layer) overrides the window rule of any family. A new family is a row in
 * families[] plus, if it brings a new kind of layer, a field.
 */
#include "model_config_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef enum mc_window_rule {
	WIN_NONE,  /* no sliding window field */
	WIN_ALL,   /* sliding_window applies to every layer */
	WIN_QWEN,  /* only with use_sliding_window, layers >= max_window_layers */
	WIN_EVEN,  /* layers 0, 2, 4, ... (Gemma 2) */
} mc_window_rule;

typedef struct mc_family {
	const char *type; /* model_type */
	const char *arch; /* architectures[] entry */
	bool qkv_bias;    /* q,k,v biases whatever the config says (Qwen2) */
	bool attn_bias;   /* attention_bias honoured: q,k,v,o biases */
	bool mlp_bias;    /* mlp_bias honoured */
	bool qk_norm;
	bool gemma_norms; /* (1+w) norms, sandwich norms, embedding * sqrt(hidden) */
	bool gemma_attn;  /* query_pre_attn_scalar, attn/final logit soft-capping */
	bool tied;        /* tie_word_embeddings default */
	const char *act_key;
	mc_window_rule window;
	int window_default; /* HF's default sliding_window when the key is absent */
} mc_family;

static const mc_family families[] = {
	{ "llama", "LlamaForCausalLM", .attn_bias = true, .mlp_bias = true, .act_key = "hidden_act",
	  .window = WIN_NONE },
	{ "mistral", "MistralForCausalLM", .act_key = "hidden_act", .window = WIN_ALL,
	  .window_default = 4096 },
	{ "qwen2", "Qwen2ForCausalLM", .qkv_bias = true, .act_key = "hidden_act",
	  .window = WIN_QWEN, .window_default = 4096 },
	{ "qwen3", "Qwen3ForCausalLM", .attn_bias = true, .qk_norm = true, .act_key = "hidden_act",
	  .window = WIN_QWEN, .window_default = 4096 },
	{ "gemma2", "Gemma2ForCausalLM", .attn_bias = true, .gemma_norms = true,
	  .gemma_attn = true, .tied = true, .act_key = "hidden_activation", .window = WIN_EVEN,
	  .window_default = 4096 },
};

#define N_FAM (sizeof families / sizeof *families)
#define SUPPORTED_TYPES "llama, mistral, qwen2, qwen3, gemma2"
#define SUPPORTED_ARCHS                                                                       \
	"LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, "          \
	"Gemma2ForCausalLM"

static const mc_family *by_type(const char *s)
{
	for (size_t i = 0; i < N_FAM; i++)
		if (strcmp(s, families[i].type) == 0)
			return &families[i];
	return NULL;
}

static const mc_family *by_arch(const char *s)
{
	for (size_t i = 0; i < N_FAM; i++)
		if (strcmp(s, families[i].arch) == 0)
			return &families[i];
	return NULL;
}

loom_err loom_mc_family(const char *path, json_t *root, loom_model_config *c)
{
	json_t *mt = json_object_get(root, "model_type");
	json_t *ar = json_object_get(root, "architectures");
	const mc_family *f = NULL;

	if (mt && !json_is_null(mt)) {
		if (!json_is_string(mt))
			return loom_fail(LOOM_EFORMAT, "%s: field \"model_type\" must be a string", path);
		if (!(f = by_type(json_string_value(mt))))
			return loom_fail(LOOM_EUNSUPPORTED,
					 "%s: field \"model_type\" is \"%.40s\"; supported: "
					 SUPPORTED_TYPES, path, json_string_value(mt));
	}
	if (ar && !json_is_null(ar)) {
		size_t i;
		json_t *e;
		const mc_family *fa = NULL;
		if (!json_is_array(ar))
			return loom_fail(LOOM_EFORMAT, "%s: field \"architectures\" must be a list of "
				       "strings", path);
		json_array_foreach(ar, i, e) {
			if (!json_is_string(e))
				return loom_fail(LOOM_EFORMAT,
						 "%s: field \"architectures\" must be a list of strings",
						 path);
			if (!fa)
				fa = by_arch(json_string_value(e));
		}
		if (!fa) {
			e = json_array_get(ar, 0);
			return loom_fail(LOOM_EUNSUPPORTED,
					 "%s: field \"architectures\" (%.40s) names no supported "
					 "architecture; supported: " SUPPORTED_ARCHS,
					 path, e ? json_string_value(e) : "empty list");
		}
		if (f && f != fa)
			return loom_fail(LOOM_EINVAL, "%s: field \"architectures\" (%s) contradicts "
				       "\"model_type\" (%s)", path, fa->arch, f->type);
		f = fa;
	}
	if (!f)
		return loom_fail(LOOM_EFORMAT,
				 "%s: fields \"model_type\" and \"architectures\" are both missing", path);
	snprintf(c->model_type, sizeof c->model_type, "%s", f->type);
	return LOOM_OK;
}

/* A bias flag: absent/null = false. */
static loom_err flag(const char *path, json_t *root, const char *key, const mc_family *f,
		     bool honoured, bool *out)
{
	json_t *v = json_object_get(root, key);
	if (!v || json_is_null(v))
		return LOOM_OK;
	if (!json_is_boolean(v))
		return loom_fail(LOOM_EFORMAT, "%s: field \"%s\" must be true or false", path, key);
	if (json_is_true(v) && !honoured)
		return loom_fail(LOOM_EUNSUPPORTED, "%s: field \"%s\" is true, which this family "
			       "(%s) does not have in Hugging Face's modeling code", path, key, f->type);
	*out = json_is_true(v);
	return LOOM_OK;
}

static loom_err activation(const char *path, json_t *root, const mc_family *f, loom_model_config *c)
{
	const char *key = f->act_key;
	json_t *v = json_object_get(root, key);
	if ((!v || json_is_null(v)) && strcmp(key, "hidden_act") != 0) {
		key = "hidden_act"; /* Gemma 2 configs carry both; older ones only hidden_act */
		v = json_object_get(root, key);
	}
	c->act = f->gemma_norms ? LOOM_ACT_GELU_TANH : LOOM_ACT_SILU;
	if (!v || json_is_null(v))
		return LOOM_OK;
	if (!json_is_string(v))
		return loom_fail(LOOM_EFORMAT, "%s: field \"%s\" must be a string", path, key);
	const char *s = json_string_value(v);
	if (strcmp(s, "silu") == 0 || strcmp(s, "swish") == 0)
		c->act = LOOM_ACT_SILU;
	else if (strcmp(s, "gelu_pytorch_tanh") == 0 || strcmp(s, "gelu_new") == 0 ||
		 strcmp(s, "gelu_fast") == 0)
		c->act = LOOM_ACT_GELU_TANH;
	else if (strcmp(s, "gelu") == 0)
		c->act = LOOM_ACT_GELU;
	else
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: field \"%s\" is \"%.32s\"; supported: silu, gelu_pytorch_tanh, "
				 "gelu_new, gelu",
				 path, key, s);
	return LOOM_OK;
}

static void set_sliding(loom_model_config *c, int l)
{
	c->sliding[l >> 3] |= (uint8_t)(1u << (l & 7));
}

static loom_err windows(const char *path, json_t *root, const mc_family *f, loom_model_config *c)
{
	loom_err rc;
	int w = f->window_default, max_window_layers = c->n_layers;
	bool use = f->window == WIN_ALL || f->window == WIN_EVEN;
	json_t *v = json_object_get(root, "sliding_window");
	json_t *types = json_object_get(root, "layer_types");

	memset(c->sliding, 0, sizeof c->sliding);
	c->window = 0;
	if (f->window == WIN_NONE && (!types || json_is_null(types))) {
		if (v && !json_is_null(v))
			return loom_fail(LOOM_EUNSUPPORTED, "%s: field \"sliding_window\" is set, but "
				       "%s models have no sliding-window attention", path, f->type);
		return LOOM_OK;
	}
	if (v && json_is_null(v))
		w = 0; /* explicitly none (Mistral v0.2 and later) */
	else if ((rc = loom_mc_int(path, root, "sliding_window", 0, 1, &w)))
		return rc;
	if (f->window == WIN_QWEN) {
		if ((rc = loom_mc_bool(path, root, "use_sliding_window", &use)) ||
		    (rc = loom_mc_int(path, root, "max_window_layers", 0, 0, &max_window_layers)))
			return rc;
		if (max_window_layers < 0)
			return loom_fail(LOOM_EINVAL, "%s: field \"max_window_layers\" is negative",
					 path);
	}
	if (types && !json_is_null(types)) {
		if (!json_is_array(types) || json_array_size(types) != (size_t)c->n_layers)
			return loom_fail(LOOM_EFORMAT, "%s: field \"layer_types\" must list one type "
				       "per layer (%d)", path, c->n_layers);
		size_t i;
		json_t *e;
		json_array_foreach(types, i, e) {
			const char *s = json_is_string(e) ? json_string_value(e) : "";
			if (strcmp(s, "sliding_attention") == 0) {
				if (w <= 0)
					return loom_fail(LOOM_EINVAL, "%s: field \"layer_types\" names "
						       "sliding_attention but \"sliding_window\" is not "
						       "set", path);
				set_sliding(c, (int)i);
			} else if (strcmp(s, "full_attention") != 0) {
				return loom_fail(LOOM_EUNSUPPORTED,
						 "%s: field \"layer_types\" entry %zu is not "
						 "\"full_attention\" or \"sliding_attention\"", path, i);
			}
		}
		c->window = w;
		return LOOM_OK;
	}
	if (!use || w <= 0)
		return LOOM_OK;
	for (int l = 0; l < c->n_layers; l++)
		if (f->window == WIN_ALL || (f->window == WIN_EVEN && l % 2 == 0) ||
		    (f->window == WIN_QWEN && l >= max_window_layers))
			set_sliding(c, l);
	c->window = w;
	return LOOM_OK;
}

/* A number inside rope_scaling: absent = keep *out; required = must be there. */
static loom_err rope_num(const char *path, json_t *rs, const char *key, int required, float *out)
{
	json_t *v = json_object_get(rs, key);
	if (!v || json_is_null(v)) {
		if (required)
			return loom_fail(LOOM_EFORMAT, "%s: field \"rope_scaling.%s\" is missing", path,
					 key);
		return LOOM_OK;
	}
	if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v)))
		return loom_fail(LOOM_EINVAL, "%s: field \"rope_scaling.%s\" must be a positive "
			       "number", path, key);
	*out = (float)json_number_value(v);
	return LOOM_OK;
}

static double yarn_mscale(double scale, double m)
{
	return scale <= 1.0 ? 1.0 : 0.1 * m * log(scale) + 1.0;
}

/* rope_scaling as modeling_rope_utils reads it. max_pos: max_position_embeddings. */
static loom_err rope(const char *path, json_t *root, loom_model_config *c)
{
	loom_rope_cfg *r = &c->rope;
	json_t *rs = json_object_get(root, "rope_scaling");
	float f = 0, om = 0, m = 0, mad = 0;
	loom_err rc;

	memset(r, 0, sizeof *r);
	r->kind = LOOM_ROPE_DEFAULT;
	r->factor = 1.0f;
	r->attn_factor = 1.0f;
	r->orig_max = c->max_ctx;
	json_t *prf = json_object_get(root, "partial_rotary_factor");
	if (prf && !json_is_null(prf) && !(json_is_number(prf) && json_number_value(prf) == 1.0))
		return loom_fail(LOOM_EUNSUPPORTED, "%s: field \"partial_rotary_factor\" is not 1; "
			       "partial rotary embeddings are not supported", path);
	if (!rs || json_is_null(rs))
		return LOOM_OK;
	if (!json_is_object(rs))
		return loom_fail(LOOM_EFORMAT, "%s: field \"rope_scaling\" must be an object", path);
	json_t *t = json_object_get(rs, "rope_type");
	if (!t || json_is_null(t))
		t = json_object_get(rs, "type");
	if (!json_is_string(t))
		return loom_fail(LOOM_EFORMAT, "%s: field \"rope_scaling.rope_type\" is missing or "
			       "not a string", path);
	const char *ty = json_string_value(t);
	if (strcmp(ty, "default") == 0)
		return LOOM_OK;
	if (strcmp(ty, "linear") == 0)
		r->kind = LOOM_ROPE_LINEAR;
	else if (strcmp(ty, "dynamic") == 0)
		r->kind = LOOM_ROPE_DYNAMIC;
	else if (strcmp(ty, "yarn") == 0)
		r->kind = LOOM_ROPE_YARN;
	else if (strcmp(ty, "llama3") == 0)
		r->kind = LOOM_ROPE_LLAMA3;
	else
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: field \"rope_scaling.rope_type\" is \"%.32s\"; supported: "
				 "default, linear, dynamic, yarn, llama3",
				 path, ty);
	if ((rc = rope_num(path, rs, "factor", 1, &f)))
		return rc;
	if (r->kind != LOOM_ROPE_LLAMA3 && f < 1.0f)
		return loom_fail(LOOM_EINVAL, "%s: field \"rope_scaling.factor\" must be at least 1",
				 path);
	r->factor = f;
	/* Dynamic NTK scales past max_position_embeddings whatever
	 * original_max_position_embeddings says (HF's _compute_dynamic_ntk_parameters). */
	if (r->kind != LOOM_ROPE_DYNAMIC &&
	    (rc = rope_num(path, rs, "original_max_position_embeddings",
			   r->kind == LOOM_ROPE_LLAMA3, &om)))
		return rc;
	if (om > 0)
		r->orig_max = (int)om;
	switch (r->kind) {
	case LOOM_ROPE_LLAMA3:
		if ((rc = rope_num(path, rs, "low_freq_factor", 1, &r->low_freq_factor)) ||
		    (rc = rope_num(path, rs, "high_freq_factor", 1, &r->high_freq_factor)))
			return rc;
		if (!(r->high_freq_factor > r->low_freq_factor))
			return loom_fail(LOOM_EINVAL, "%s: field \"rope_scaling.high_freq_factor\" must "
				       "exceed \"low_freq_factor\"", path);
		break; /* max_position_embeddings already names the extended context */
	case LOOM_ROPE_YARN: {
		r->beta_fast = 32.0f;
		r->beta_slow = 1.0f;
		r->truncate = true;
		float af = 0;
		if ((rc = rope_num(path, rs, "beta_fast", 0, &r->beta_fast)) ||
		    (rc = rope_num(path, rs, "beta_slow", 0, &r->beta_slow)) ||
		    (rc = rope_num(path, rs, "attention_factor", 0, &af)) ||
		    (rc = rope_num(path, rs, "mscale", 0, &m)) ||
		    (rc = rope_num(path, rs, "mscale_all_dim", 0, &mad)))
			return rc;
		json_t *tr = json_object_get(rs, "truncate");
		if (tr && !json_is_null(tr)) {
			if (!json_is_boolean(tr))
				return loom_fail(LOOM_EFORMAT, "%s: field \"rope_scaling.truncate\" must "
					       "be true or false", path);
			r->truncate = json_is_true(tr);
		}
		/* transformers 5's _compute_yarn_parameters: the scale from factor,
		 * the correction range at the original context. */
		if (af > 0)
			r->attn_factor = af;
		else if (m > 0 && mad > 0)
			r->attn_factor = (float)(yarn_mscale(f, m) / yarn_mscale(f, mad));
		else
			r->attn_factor = (float)yarn_mscale(f, 1.0);
		break;
	}
	default:
		break;
	}
	/* The context the scaled model serves, as vLLM derives max_model_len:
	 * llama3 configs already name it; the others extend the original one. */
	if (r->kind != LOOM_ROPE_LLAMA3) {
		double ext = (double)r->orig_max * f;
		if (ext > c->max_ctx)
			c->max_ctx = ext < 1e9 ? (int)ext : 1000000000;
	}
	return LOOM_OK;
}

loom_err loom_mc_layers(const char *path, json_t *root, loom_model_config *c)
{
	const mc_family *f = by_type(c->model_type);
	loom_err rc;
	float qpas = 0;

	if (!f)
		return loom_fail(LOOM_EINTERNAL, "%s: no family for \"%s\"", path, c->model_type);
	c->qkv_bias = f->qkv_bias;
	c->o_bias = c->mlp_bias = c->qk_norm = false;
	bool ab = false;
	if ((rc = flag(path, root, "attention_bias", f, f->attn_bias || f->qkv_bias, &ab)) ||
	    (rc = flag(path, root, "mlp_bias", f, f->mlp_bias, &c->mlp_bias)))
		return rc;
	if (ab && f->attn_bias)
		c->qkv_bias = c->o_bias = true;
	c->qk_norm = f->qk_norm;
	c->norm_plus_one = c->sandwich_norms = f->gemma_norms;
	c->embed_scale = f->gemma_norms ? (float)sqrt((double)c->hidden) : 1.0f;
	if ((rc = activation(path, root, f, c)))
		return rc;
	c->attn_scale = (float)(1.0 / sqrt((double)c->head_dim));
	c->attn_softcap = c->final_softcap = 0.0f;
	if (f->gemma_attn) {
		qpas = 224.0f; /* Gemma2Config's default */
		if ((rc = loom_mc_num(path, root, "query_pre_attn_scalar", &qpas)) ||
		    (rc = loom_mc_num(path, root, "attn_logit_softcapping", &c->attn_softcap)) ||
		    (rc = loom_mc_num(path, root, "final_logit_softcapping", &c->final_softcap)))
			return rc;
		c->attn_scale = (float)(1.0 / sqrt((double)qpas));
	} else {
		static const char *const gemma_only[] = { "attn_logit_softcapping",
							   "final_logit_softcapping",
							   "query_pre_attn_scalar" };
		for (size_t i = 0; i < sizeof gemma_only / sizeof *gemma_only; i++) {
			json_t *v = json_object_get(root, gemma_only[i]);
			if (v && !json_is_null(v))
				return loom_fail(LOOM_EUNSUPPORTED, "%s: field \"%s\" is set, but %s "
					       "models do not use it", path, gemma_only[i], f->type);
		}
	}
	if ((rc = windows(path, root, f, c)) || (rc = rope(path, root, c)))
		return rc;
	return LOOM_OK;
}

bool loom_mc_tied_default(const char *model_type)
{
	const mc_family *f = by_type(model_type);
	return f && f->tied;
}

void loom_rope_freqs(const loom_model_config *c, int pos, double *inv_freq, double *mscale)
{
	const loom_rope_cfg *r = &c->rope;
	int dim = c->head_dim, half = dim / 2;
	double base = c->rope_theta, f = r->factor;

	*mscale = 1.0;
	if (r->kind == LOOM_ROPE_DYNAMIC && pos + 1 > r->orig_max) {
		double len = (double)pos + 1.0;
		base *= pow(f * len / r->orig_max - (f - 1.0), (double)dim / (dim - 2));
	}
	for (int i = 0; i < half; i++)
		inv_freq[i] = 1.0 / pow(base, (double)(2 * i) / dim);
	switch (r->kind) {
	case LOOM_ROPE_LINEAR:
		for (int i = 0; i < half; i++)
			inv_freq[i] /= f;
		break;
	case LOOM_ROPE_LLAMA3: {
		double lo_wl = r->orig_max / (double)r->low_freq_factor;
		double hi_wl = r->orig_max / (double)r->high_freq_factor;
		for (int i = 0; i < half; i++) {
			double wl = 2.0 * M_PI / inv_freq[i];
			if (wl > lo_wl) {
				inv_freq[i] /= f;
			} else if (wl >= hi_wl) { /* medium band: smooth between the two */
				double s = (r->orig_max / wl - r->low_freq_factor) /
					   (r->high_freq_factor - r->low_freq_factor);
				inv_freq[i] = (1.0 - s) * inv_freq[i] / f + s * inv_freq[i];
			}
		}
		break;
	}
	case LOOM_ROPE_YARN: {
		/* find_correction_range: the dims whose rotations at orig_max fall
		 * between beta_fast and beta_slow get a linear ramp. */
		double lb = log(base);
		double lo = dim * log(r->orig_max / (r->beta_fast * 2.0 * M_PI)) / (2.0 * lb);
		double hi = dim * log(r->orig_max / (r->beta_slow * 2.0 * M_PI)) / (2.0 * lb);
		if (r->truncate) {
			lo = floor(lo);
			hi = ceil(hi);
		}
		if (lo < 0)
			lo = 0;
		if (hi > dim - 1)
			hi = dim - 1;
		if (lo == hi)
			hi += 0.001;
		for (int i = 0; i < half; i++) {
			double ramp = ((double)i - lo) / (hi - lo);
			ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
			double extra = 1.0 - ramp; /* inv_freq_extrapolation_factor */
			inv_freq[i] = inv_freq[i] / f * (1.0 - extra) + inv_freq[i] * extra;
		}
		*mscale = r->attn_factor;
		break;
	}
	default:
		break;
	}
}
