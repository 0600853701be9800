/*
 * worker/model.c — loading a Hugging Face LLaMA folder into one float32 arena.
 *
 * Two passes over the tensors: first every expected tensor is looked up and
 * its dtype and shape checked against config.json (so a bad folder fails
 * before the big allocation), then the arena is allocated once and each
 * tensor converted into its slot with loom_to_f32. The safetensors set is
 * closed before returning; the model keeps no file open.
 */
#include "model.h"

#include <stdio.h>
#include <string.h>

#include "../common/alloc.h"
#include "../common/dtype.h"
#include "../common/log.h"
#include "../common/safetensors.h"

/* One expected tensor: its HF name, shape and where its floats go. */
typedef struct wk_slot {
	char name[96];
	int ndim;
	int64_t shape[2];
	float **dst;
	const loom_tensor *t;
} wk_slot;

static void slot_set(wk_slot *s, const char *name, int64_t rows, int64_t cols, float **dst)
{
	snprintf(s->name, sizeof s->name, "%s", name);
	s->ndim = cols ? 2 : 1;
	s->shape[0] = rows;
	s->shape[1] = cols;
	s->dst = dst;
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

/* Finds s->name in set and checks dtype and shape. */
static loom_err slot_check(const loom_st_set *set, wk_slot *s)
{
	const loom_tensor *t = loom_st_set_find(set, s->name);
	const char *where = loom_st_set_where(set, s->name);
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

/* Checks the config for what the forward pass needs beyond config.json's own rules. */
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

loom_err wk_model_load(const char *dir, const char *name, wk_model **out)
{
	loom_err rc;
	wk_model *m = NULL;
	loom_st_set *set = NULL;
	wk_slot *slots = NULL;
	*out = NULL;

	m = loom_calloc(1, sizeof *m);
	if (!m)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
	snprintf(m->name, sizeof m->name, "%s", name ? name : "");
	rc = loom_model_config_load(dir, &m->cfg);
	if (rc)
		goto out;
	rc = check_config(dir, &m->cfg);
	if (rc)
		goto out;
	const loom_model_config *c = &m->cfg;
	m->layers = loom_calloc((size_t)c->n_layers, sizeof *m->layers);
	size_t n_slots = 3 + 9 * (size_t)c->n_layers;
	slots = loom_calloc(n_slots, sizeof *slots);
	if (!m->layers || !slots) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
		goto out;
	}
	rc = loom_st_set_open(dir, &set);
	if (rc)
		goto out;

	int64_t d = c->hidden, q = (int64_t)c->n_heads * c->head_dim;
	int64_t kvd = (int64_t)c->n_kv_heads * c->head_dim, f = c->ffn;
	size_t n = 0;
	slot_set(&slots[n++], "model.embed_tokens.weight", c->vocab, d, &m->embed);
	slot_set(&slots[n++], "model.norm.weight", d, 0, &m->final_norm);
	int tied = c->tied;
	if (!tied) {
		slot_set(&slots[n++], "lm_head.weight", c->vocab, d, &m->lm_head);
		if (!loom_st_set_find(set, "lm_head.weight")) {
			rc = loom_fail(LOOM_ENOTFOUND,
				       "%s: tensor lm_head.weight is missing and config.json does "
				       "not set tie_word_embeddings",
				       loom_st_set_where(set, "lm_head.weight"));
			goto out;
		}
	}
	for (int l = 0; l < c->n_layers; l++) {
		wk_layer *L = &m->layers[l];
		char nm[96];
#define LAYER(suffix, rows, cols, field)                                        \
	snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix);              \
	slot_set(&slots[n++], nm, rows, cols, &L->field)
		LAYER("input_layernorm.weight", d, 0, attn_norm);
		LAYER("self_attn.q_proj.weight", q, d, wq);
		LAYER("self_attn.k_proj.weight", kvd, d, wk);
		LAYER("self_attn.v_proj.weight", kvd, d, wv);
		LAYER("self_attn.o_proj.weight", d, q, wo);
		LAYER("post_attention_layernorm.weight", d, 0, ffn_norm);
		LAYER("mlp.gate_proj.weight", f, d, w_gate);
		LAYER("mlp.up_proj.weight", f, d, w_up);
		LAYER("mlp.down_proj.weight", d, f, w_down);
#undef LAYER
	}

	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		rc = slot_check(set, &slots[i]);
		if (rc)
			goto out;
		total += slot_numel(&slots[i]);
	}
	m->arena_bytes = total * sizeof(float);
	m->arena = loom_malloc(m->arena_bytes);
	if (!m->arena) {
		rc = loom_fail(LOOM_ENOMEM, "%s: cannot allocate %zu bytes for the weights", dir,
			       m->arena_bytes);
		goto out;
	}
	float *p = m->arena;
	for (size_t i = 0; i < n; i++) {
		size_t k = slot_numel(&slots[i]);
		if (loom_to_f32(p, slots[i].t->data, slots[i].t->dtype, k) != 0) {
			rc = loom_fail(LOOM_EINTERNAL, "%s: tensor %s: conversion to F32 failed",
				       loom_st_set_where(set, slots[i].name), slots[i].name);
			goto out;
		}
		*slots[i].dst = p;
		p += k;
	}
	if (tied)
		m->lm_head = m->embed;
	LOOM_DEBUG("model %s: %s, %.1f MiB of float32 weights%s", m->name, dir,
		   m->arena_bytes / 1048576.0, tied ? ", tied embeddings" : "");
	*out = m;
	m = NULL;
	rc = LOOM_OK;
out:
	loom_st_set_close(set);
	loom_free(slots);
	wk_model_destroy(m);
	return rc;
}

void wk_model_destroy(wk_model *m)
{
	if (!m)
		return;
	loom_free(m->arena);
	loom_free(m->layers);
	loom_free(m);
}
