/*
 * worker/model.c — loading a Hugging Face LLaMA folder into one float32 arena.
 *
 * Two passes over the tensors: first every expected tensor is looked up and
 * its dtype and shape checked against config.json (so a bad folder fails
 * before the big allocation), then the arena is allocated once and each
 * tensor converted into its slot with loom_to_f32. The safetensors set is
 * closed before returning; the model keeps no file open. A model bundle
 * (common/bundle.h) goes through the same passes with its one in-memory
 * safetensors image as the tensor source.
 */
#include "model.h"

#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "../common/alloc.h"
#include "../common/bundle.h"
#include "../common/dtype.h"
#include "../common/log.h"
#include "../common/safetensors.h"

/* One expected tensor: its HF name, shape and where its floats go. */
typedef struct wk_slot {
	char name[96];
	int ndim;
	int64_t shape[2];
	float **dst;
	int norm; /* a norm weight: stored as 1 + w when cfg.norm_plus_one */
	wk_pmat *pm; /* a linear weight: its packed copy, else NULL */
	int head;    /* the untied lm_head (packed as p_head) */
	const loom_tensor *t;
} wk_slot;

static void slot_set(wk_slot *s, const char *name, int64_t rows, int64_t cols, float **dst)
{
	snprintf(s->name, sizeof s->name, "%s", name);
	s->ndim = cols ? 2 : 1;
	s->shape[0] = rows;
	s->shape[1] = cols;
	s->dst = dst;
	s->norm = 0;
	s->pm = NULL;
	s->t = NULL;
}

static void shape_str(char *buf, size_t n, const int64_t *shape, int ndim)
{
	size_t off = 0;
	off += (size_t)snprintf(buf + off, n - off, "[");
	for (int i = 0; i < ndim && off < n; i++)
		off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? "," : "",
					(long long)shape[i]);
	if (off < n)
		snprintf(buf + off, n - off, "]");
}

/* Where tensors come from: a folder's safetensors set, or one in-memory
 * image (a bundle) named label in messages. */
typedef struct wk_src {
	const loom_st_set *set;
	const loom_st_file *file;
	const char *label;
} wk_src;

static const loom_tensor *src_find(const wk_src *src, const char *name)
{
	return src->set ? loom_st_set_find(src->set, name) : loom_st_find(src->file, name);
}

static const char *src_where(const wk_src *src, const char *name)
{
	return src->set ? loom_st_set_where(src->set, name) : src->label;
}

/* Finds s->name in the source and checks dtype and shape. */
static loom_err slot_check(const wk_src *src, wk_slot *s)
{
	const loom_tensor *t = src_find(src, s->name);
	const char *where = src_where(src, s->name);
	if (!t)
		return loom_fail(LOOM_ENOTFOUND, "%s: tensor %s is missing", where, s->name);
	if (t->dtype != LOOM_DT_F32 && t->dtype != LOOM_DT_F16 && t->dtype != LOOM_DT_BF16)
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: tensor %s has dtype %s, expected F32, F16 or BF16", where,
				 s->name, loom_dtype_name(t->dtype));
	int same = t->ndim == s->ndim;
	for (int i = 0; same && i < s->ndim; i++)
		same = t->shape[i] == s->shape[i];
	if (!same) {
		char got[128], want[64];
		shape_str(got, sizeof got, t->shape, t->ndim);
		shape_str(want, sizeof want, s->shape, s->ndim);
		return loom_fail(LOOM_EFORMAT, "%s: tensor %s has shape %s, expected %s", where,
				 s->name, got, want);
	}
	s->t = t;
	return LOOM_OK;
}

static size_t slot_numel(const wk_slot *s)
{
	return (size_t)s->shape[0] * (size_t)(s->ndim == 2 ? s->shape[1] : 1);
}

/* Checks the config for what the forward pass needs beyond config.json's own
 * rules. dir names the folder (or bundle) in messages. */
static loom_err check_config(const char *dir, const loom_model_config *c)
{
	if (c->hidden <= 0 || c->ffn <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
	    c->n_kv_heads <= 0 || c->head_dim <= 0 || c->vocab <= 0)
		return loom_fail(LOOM_EFORMAT, "%s/config.json: sizes must be positive", dir);
	if (c->n_heads % c->n_kv_heads)
		return loom_fail(LOOM_EFORMAT,
				 "%s/config.json: num_attention_heads %d is not a multiple of "
				 "num_key_value_heads %d",
				 dir, c->n_heads, c->n_kv_heads);
	if (c->head_dim % 2)
		return loom_fail(LOOM_EUNSUPPORTED, "%s/config.json: head_dim %d is odd (RoPE needs "
				 "an even head_dim)", dir, c->head_dim);
	if (!(c->rope_theta > 0.0f) || !(c->rms_eps >= 0.0f))
		return loom_fail(LOOM_EFORMAT, "%s/config.json: rope_theta and rms_norm_eps must be "
				 "positive", dir);
	return LOOM_OK;
}

static size_t wk_model_f32_bytes(const loom_model_config *c);

/* The packed copies of the linear weights: (N, K) of each, in order. */
static size_t linear_shapes(const loom_model_config *c, int shapes[][2])
{
	int d = c->hidden, q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
	int f = c->ffn;
	int per[7][2] = {{q, d}, {kv, d}, {kv, d}, {d, q}, {f, d}, {f, d}, {d, f}};
	size_t n = 0;
	for (int l = 0; l < c->n_layers; l++)
		for (int i = 0; i < 7; i++, n++)
			if (shapes)
				shapes[n][0] = per[i][0], shapes[n][1] = per[i][1];
	if (shapes)
		shapes[n][0] = c->vocab, shapes[n][1] = d;
	return n + 1;
}

static size_t packed_f32_bytes(const loom_model_config *c)
{
	size_t n = linear_shapes(c, NULL), total = 0;
	int(*sh)[2] = loom_calloc(n, sizeof *sh);
	if (!sh)
		return SIZE_MAX / 4;
	linear_shapes(c, sh);
	for (size_t i = 0; i < n; i++)
		total += (kn_pack_bytes(KN_W_F32, sh[i][0], sh[i][1]) + 63) & ~(size_t)63;
	loom_free(sh);
	return total;
}

size_t wk_model_weight_bytes(const loom_model_config *c)
{
	return wk_model_f32_bytes(c) + packed_f32_bytes(c);
}

size_t wk_model_weight_bytes_ex(const loom_model_config *c, bool f32_linear)
{
	if (f32_linear)
		return wk_model_weight_bytes(c);
	/* the float32 arena less the linear weights and an untied head */
	size_t d = (size_t)c->hidden, q = (size_t)c->n_heads * (size_t)c->head_dim;
	size_t kvd = (size_t)c->n_kv_heads * (size_t)c->head_dim, f = (size_t)c->ffn;
	size_t lin = ((q * d + 2 * kvd * d + d * q + 3 * f * d) * (size_t)c->n_layers +
		      (c->tied ? 0 : (size_t)c->vocab * d)) * sizeof(float);
	return wk_model_f32_bytes(c) - lin + packed_f32_bytes(c);
}

static size_t wk_model_f32_bytes(const loom_model_config *c)
{
	size_t d = (size_t)c->hidden, q = (size_t)c->n_heads * (size_t)c->head_dim;
	size_t kvd = (size_t)c->n_kv_heads * (size_t)c->head_dim, f = (size_t)c->ffn;
	size_t per_layer = 2 * d + q * d + 2 * kvd * d + d * q + 3 * f * d;
	if (c->qkv_bias)
		per_layer += q + 2 * kvd;
	if (c->o_bias)
		per_layer += d;
	if (c->mlp_bias)
		per_layer += 2 * f + d;
	if (c->qk_norm)
		per_layer += 2 * (size_t)c->head_dim;
	if (c->sandwich_norms)
		per_layer += 2 * d;
	size_t n = (size_t)c->vocab * d * (c->tied ? 1 : 2) + d + per_layer * (size_t)c->n_layers;

	return n * sizeof(float);
}

/* Optional tensors present in the file but not in the config's layer
 * description would be silently dropped, computing another model: refused. */
static loom_err check_unexpected(const wk_src *src, const loom_model_config *c)
{
	static const struct {
		const char *suffix;
		size_t flag; /* offset of the bool in loom_model_config that expects it */
	} opt[] = {
		{ "self_attn.q_proj.bias", offsetof(loom_model_config, qkv_bias) },
		{ "self_attn.k_proj.bias", offsetof(loom_model_config, qkv_bias) },
		{ "self_attn.v_proj.bias", offsetof(loom_model_config, qkv_bias) },
		{ "self_attn.o_proj.bias", offsetof(loom_model_config, o_bias) },
		{ "mlp.gate_proj.bias", offsetof(loom_model_config, mlp_bias) },
		{ "mlp.down_proj.bias", offsetof(loom_model_config, mlp_bias) },
		{ "self_attn.q_norm.weight", offsetof(loom_model_config, qk_norm) },
		{ "pre_feedforward_layernorm.weight", offsetof(loom_model_config, sandwich_norms) },
		{ "post_feedforward_layernorm.weight", offsetof(loom_model_config, sandwich_norms) },
	};
	char nm[96];
	for (size_t i = 0; i < sizeof opt / sizeof *opt; i++) {
		if (*(const bool *)((const char *)c + opt[i].flag))
			continue;
		snprintf(nm, sizeof nm, "model.layers.0.%s", opt[i].suffix);
		if (src_find(src, nm))
			return loom_fail(LOOM_EUNSUPPORTED,
					 "%s: tensor %s is present but config.json (model_type %s) "
					 "does not describe it; refusing to compute another model",
					 src_where(src, nm), nm, c->model_type);
	}
	return LOOM_OK;
}

static kn_wdt wdt_of(loom_dtype t)
{
	return t == LOOM_DT_BF16 ? KN_W_BF16 : t == LOOM_DT_F16 ? KN_W_F16 : KN_W_F32;
}

/* The packed copies (kn_pack) of every linear weight and the LM head, each
 * in its file's dtype, from the float32 arrays (which hold those values
 * exactly) or, without them (f32_linear false), from the file's data; in
 * one arena. */
static loom_err pack_linear(wk_model *m, const wk_slot *slots, size_t n, const char *label)
{
	size_t total = 0;
	loom_dtype head_dt = LOOM_DT_F32;
	const loom_tensor *head_t = NULL; /* the untied head's tensor */
	for (size_t i = 0; i < n; i++) {
		if (strcmp(slots[i].name, m->cfg.tied ? "model.embed_tokens.weight"
						      : "lm_head.weight") == 0)
			head_dt = slots[i].t->dtype;
		if (slots[i].head)
			head_t = slots[i].t;
		if (slots[i].pm)
			slots[i].pm->dt = wdt_of(slots[i].t->dtype);
	}
	m->p_head.dt = wdt_of(head_dt);
	for (int pass = 0; pass < 2; pass++) {
		char *at = m->pk_arena;
		for (size_t i = 0; i <= n; i++) {
			wk_pmat *pm = i < n ? slots[i].pm : &m->p_head;
			int N = i < n ? (int)slots[i].shape[0] : m->cfg.vocab;
			int K = i < n ? (int)slots[i].shape[1] : m->cfg.hidden;
			if (!pm)
				continue;
			/* the float32 copy, or the file's data in its own dtype */
			const void *src = i < n ? (const void *)*slots[i].dst : m->lm_head;
			kn_wdt src_dt = KN_W_F32;
			if (!src) {
				const loom_tensor *t = i < n ? slots[i].t : head_t;
				src = t->data;
				src_dt = wdt_of(t->dtype);
			}
			size_t b = (kn_pack_bytes(pm->dt, N, K) + 63) & ~(size_t)63;
			if (pass == 0) {
				total += b;
				continue;
			}
			kn_pack(at, pm->dt, src, src_dt, N, K);
			pm->p = at;
			at += b;
		}
		if (pass == 0) {
			m->pk_bytes = total;
			if (!(m->pk_arena = loom_malloc(total)))
				return loom_fail(LOOM_ENOMEM, "%s: cannot allocate %zu bytes for the "
						 "packed weights", label, total);
		}
	}
	return LOOM_OK;
}

void wk_model_repack(wk_model *m)
{
	assert(m->f32_linear);
	const loom_model_config *c = &m->cfg;
	int d = c->hidden, q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
	for (int l = 0; l < c->n_layers; l++) {
		wk_layer *L = &m->layers[l];
		struct {
			wk_pmat *pm;
			const float *w;
			int N, K;
		} t[7] = {{&L->pq, L->wq, q, d},	  {&L->pk, L->wk, kv, d},
			  {&L->pv, L->wv, kv, d},	  {&L->po, L->wo, d, q},
			  {&L->pgate, L->w_gate, c->ffn, d}, {&L->pup, L->w_up, c->ffn, d},
			  {&L->pdown, L->w_down, d, c->ffn}};
		for (int i = 0; i < 7; i++)
			kn_pack((void *)t[i].pm->p, t[i].pm->dt, t[i].w, KN_W_F32, t[i].N, t[i].K);
	}
	kn_pack((void *)m->p_head.p, m->p_head.dt, m->lm_head, KN_W_F32, c->vocab, d);
}

/* Fills m (name and cfg set, cfg checked) from src: checks every tensor,
 * then converts them into one arena. label names the source in messages. */
static loom_err load_tensors(wk_model *m, const wk_src *src, const char *label)
{
	const loom_model_config *c = &m->cfg;
	size_t n_slots = 3 + 20 * (size_t)c->n_layers, n = 0, total = 0;
	wk_slot *slots = loom_calloc(n_slots, sizeof *slots);
	loom_err rc = LOOM_OK;

	m->layers = loom_calloc((size_t)c->n_layers, sizeof *m->layers);
	if (!m->layers || !slots) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", label);
		goto out;
	}
	int64_t d = c->hidden, q = (int64_t)c->n_heads * c->head_dim;
	int64_t kvd = (int64_t)c->n_kv_heads * c->head_dim, f = c->ffn;
	slot_set(&slots[n++], "model.embed_tokens.weight", c->vocab, d, &m->embed);
	slot_set(&slots[n++], "model.norm.weight", d, 0, &m->final_norm);
	slots[n - 1].norm = 1;
	int tied = c->tied;
	if (!tied) {
		slot_set(&slots[n++], "lm_head.weight", c->vocab, d, &m->lm_head);
		slots[n - 1].head = 1;
		if (!src_find(src, "lm_head.weight")) {
			rc = loom_fail(LOOM_ENOTFOUND,
				       "%s: tensor lm_head.weight is missing and config.json does "
				       "not set tie_word_embeddings",
				       src_where(src, "lm_head.weight"));
			goto out;
		}
	}
	for (int l = 0; l < c->n_layers; l++) {
		wk_layer *L = &m->layers[l];
		char nm[96];
#define LAYER(suffix, rows, cols, field)                                        \
	do {                                                                   \
		snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix);      \
		slot_set(&slots[n++], nm, rows, cols, &L->field);              \
	} while (0)
#define NORM(suffix, rows, field)                                               \
	do {                                                                   \
		LAYER(suffix, rows, 0, field);                                 \
		slots[n - 1].norm = 1;                                         \
	} while (0)
#define LINEAR(suffix, rows, cols, field, packed)                               \
	do {                                                                   \
		LAYER(suffix, rows, cols, field);                              \
		slots[n - 1].pm = &L->packed;                                  \
	} while (0)
		NORM("input_layernorm.weight", d, attn_norm);
		LINEAR("self_attn.q_proj.weight", q, d, wq, pq);
		LINEAR("self_attn.k_proj.weight", kvd, d, wk, pk);
		LINEAR("self_attn.v_proj.weight", kvd, d, wv, pv);
		LINEAR("self_attn.o_proj.weight", d, q, wo, po);
		LINEAR("mlp.gate_proj.weight", f, d, w_gate, pgate);
		LINEAR("mlp.up_proj.weight", f, d, w_up, pup);
		LINEAR("mlp.down_proj.weight", d, f, w_down, pdown);
#undef LINEAR
		if (c->sandwich_norms) {
			NORM("post_attention_layernorm.weight", d, post_attn_norm);
			NORM("pre_feedforward_layernorm.weight", d, ffn_norm);
			NORM("post_feedforward_layernorm.weight", d, post_ffn_norm);
		} else {
			NORM("post_attention_layernorm.weight", d, ffn_norm);
		}
		if (c->qkv_bias) {
			LAYER("self_attn.q_proj.bias", q, 0, bq);
			LAYER("self_attn.k_proj.bias", kvd, 0, bk);
			LAYER("self_attn.v_proj.bias", kvd, 0, bv);
		}
		if (c->o_bias)
			LAYER("self_attn.o_proj.bias", d, 0, bo);
		if (c->mlp_bias) {
			LAYER("mlp.gate_proj.bias", f, 0, b_gate);
			LAYER("mlp.up_proj.bias", f, 0, b_up);
			LAYER("mlp.down_proj.bias", d, 0, b_down);
		}
		if (c->qk_norm) {
			NORM("self_attn.q_norm.weight", c->head_dim, q_norm);
			NORM("self_attn.k_norm.weight", c->head_dim, k_norm);
		}
#undef NORM
#undef LAYER
	}
	if ((rc = check_unexpected(src, c)))
		goto out;
	for (size_t i = 0; i < n; i++) {
		rc = slot_check(src, &slots[i]);
		if (rc)
			goto out;
		if (m->f32_linear || !(slots[i].pm || slots[i].head))
			total += slot_numel(&slots[i]);
	}
	m->arena_bytes = total * sizeof(float);
	m->arena = loom_malloc(m->arena_bytes);
	if (!m->arena) {
		rc = loom_fail(LOOM_ENOMEM, "%s: cannot allocate %zu bytes for the weights", label,
			       m->arena_bytes);
		goto out;
	}
	float *p = m->arena;
	for (size_t i = 0; i < n; i++) {
		size_t k = slot_numel(&slots[i]);
		if (!m->f32_linear && (slots[i].pm || slots[i].head))
			continue; /* packed straight from the file (pack_linear) */
		if (loom_to_f32(p, slots[i].t->data, slots[i].t->dtype, k) != 0) {
			rc = loom_fail(LOOM_EINTERNAL, "%s: tensor %s: conversion to F32 failed",
				       src_where(src, slots[i].name), slots[i].name);
			goto out;
		}
		if (slots[i].norm && c->norm_plus_one)
			for (size_t j = 0; j < k; j++)
				p[j] += 1.0f; /* Gemma: x * (1 + w), in float32 as HF computes it */
		*slots[i].dst = p;
		p += k;
	}
	if (tied)
		m->lm_head = m->embed;
	if ((rc = pack_linear(m, slots, n, label)))
		goto out;
	LOOM_DEBUG("model %s: %s, %.1f MiB of float32 weights%s", m->name, label,
		   m->arena_bytes / 1048576.0, tied ? ", tied embeddings" : "");
out:
	loom_free(slots);
	return rc;
}

loom_err wk_model_load(const char *dir, const char *name, wk_model **out)
{
	return wk_model_load_ex(dir, name, true, out);
}

loom_err wk_model_load_ex(const char *dir, const char *name, bool f32_linear, wk_model **out)
{
	loom_err rc;
	wk_model *m = NULL;
	loom_st_set *set = NULL;
	*out = NULL;

	m = loom_calloc(1, sizeof *m);
	if (!m)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
	m->f32_linear = f32_linear;
	snprintf(m->name, sizeof m->name, "%s", name ? name : "");
	if ((rc = loom_model_config_load(dir, &m->cfg)) || (rc = check_config(dir, &m->cfg)) ||
	    (rc = loom_st_set_open(dir, &set)))
		goto out;
	wk_src src = { .set = set, .label = dir };
	if ((rc = load_tensors(m, &src, dir)))
		goto out;
	*out = m;
	m = NULL;
out:
	loom_st_set_close(set);
	wk_model_destroy(m);
	return rc;
}

loom_err wk_model_load_bundle(const void *buf, size_t len, const char *name, wk_model **out)
{
	return wk_model_load_bundle_ex(buf, len, name, true, out);
}

loom_err wk_model_load_bundle_ex(const void *buf, size_t len, const char *name, bool f32_linear,
				 wk_model **out)
{
	char label[160];
	loom_st_file *f = NULL;
	wk_model *m = NULL;
	loom_err rc;

	*out = NULL;
	snprintf(label, sizeof label, "bundle %s", name ? name : "");
	m = loom_calloc(1, sizeof *m);
	if (!m)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", label);
	m->f32_linear = f32_linear;
	snprintf(m->name, sizeof m->name, "%s", name ? name : "");
	if ((rc = loom_bundle_open(buf, len, label, &f, &m->cfg)) ||
	    (rc = check_config(label, &m->cfg)))
		goto out;
	wk_src src = { .file = f, .label = label };
	if ((rc = load_tensors(m, &src, label)))
		goto out;
	*out = m;
	m = NULL;
out:
	loom_st_close(f);
	wk_model_destroy(m);
	return rc;
}

void wk_model_destroy(wk_model *m)
{
	if (!m)
		return;
	loom_free(m->arena);
	loom_free(m->pk_arena);
	loom_free(m->layers);
	loom_free(m);
}
