/*
 * tests/fuzz/fuzz_ad.h — what the adapter targets share (fuzz_peft_config,
 * fuzz_adapter_blob). Header-only.
 *
 * A tiny LLaMA base (hidden 16, 2 layers, 4 heads / 2 KV heads of 4, FFN
 * 24) and PEFT weight files for it, written once into the process's temp
 * folder:
 *   variant 0: q_proj, v_proj        rank 4, both layers (PEFT's default targets)
 *   variant 1: all seven projections rank 2, both layers
 *   variant 2: q_proj rank 4 on layer 0, v_proj rank 2 and down_proj rank 3 on layer 1
 * Values are small, deterministic and finite.
 * And the checks of a loaded adapter: shapes, ranks, every weight finite,
 * and serialize -> from_blob -> serialize giving the same bytes.
 */
#ifndef LOOM_FUZZ_AD_H
#define LOOM_FUZZ_AD_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "tests/fuzz/fuzz.h"

#define FUZZ_AD_VARIANTS 3

static const char fuzz_ad_base_json[] =
	"{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 16,"
	" \"intermediate_size\": 24, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
	" \"num_key_value_heads\": 2, \"vocab_size\": 32, \"hidden_act\": \"silu\"}";

/* The tiny base config (parsed once). */
static inline const loom_model_config *fuzz_ad_base(void)
{
	static loom_model_config c;
	static int done;
	if (!done) {
		if (loom_model_config_parse(fuzz_ad_base_json, strlen(fuzz_ad_base_json), "fuzz-base",
					    &c)) {
			fprintf(stderr, "fuzz: base config: %s\n", loom_errmsg());
			abort();
		}
		done = 1;
	}
	return &c;
}

/* rank of (variant, layer, target), 0 = no tensors. */
static inline int fuzz_ad_rank(int v, int l, int t)
{
	if (v == 0)
		return t == AD_Q || t == AD_V ? 4 : 0;
	if (v == 1)
		return 2;
	if (l == 0)
		return t == AD_Q ? 4 : 0;
	return t == AD_V ? 2 : t == AD_DOWN ? 3 : 0;
}

/* Writes variant v's adapter_model.safetensors into dir. */
static inline void fuzz_ad_write_weights(const char *dir, int v)
{
	const loom_model_config *b = fuzz_ad_base();
	loom_tensor ts[2 * 2 * AD_N_TARGETS];
	char names[2 * 2 * AD_N_TARGETS][128];
	float *bufs[2 * 2 * AD_N_TARGETS];
	size_t n = 0;
	char path[1024];
	uint32_t x = 12345u + (uint32_t)v;

	for (int l = 0; l < b->n_layers; l++) {
		for (int t = 0; t < AD_N_TARGETS; t++) {
			int r = fuzz_ad_rank(v, l, t), din, dout;
			if (!r)
				continue;
			ad_target_dims(b, t, &din, &dout);
			for (int ab = 0; ab < 2; ab++) {
				int64_t d0 = ab ? dout : r, d1 = ab ? r : din;
				float *p = malloc((size_t)(d0 * d1) * sizeof *p);
				if (!p)
					abort();
				for (int64_t i = 0; i < d0 * d1; i++) {
					x = x * 1664525u + 1013904223u;
					p[i] = (float)((int)(x >> 20) - 2048) / 8192.0f;
				}
				snprintf(names[n], sizeof names[n],
					 "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", l,
					 t <= AD_O ? "self_attn" : "mlp", ad_target_name(t),
					 ab ? 'B' : 'A');
				memset(&ts[n], 0, sizeof ts[n]);
				ts[n].name = names[n];
				ts[n].dtype = LOOM_DT_F32;
				ts[n].ndim = 2;
				ts[n].shape[0] = d0;
				ts[n].shape[1] = d1;
				ts[n].data = p;
				ts[n].nbytes = (size_t)(d0 * d1) * sizeof *p;
				bufs[n++] = p;
			}
		}
	}
	snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
	if (loom_st_write(path, ts, n, NULL)) {
		fprintf(stderr, "fuzz: %s\n", loom_errmsg());
		abort();
	}
	for (size_t i = 0; i < n; i++)
		free(bufs[i]);
}

/* The folder of variant v under the temp folder (made with its weights on first use). */
static inline const char *fuzz_ad_dir(int v)
{
	static char dirs[FUZZ_AD_VARIANTS][512];
	if (!dirs[v][0]) {
		snprintf(dirs[v], sizeof dirs[v], "%s/peft-%d", fuzz_tmpdir(), v);
		if (mkdir(dirs[v], 0755) != 0 && errno != EEXIST) {
			fprintf(stderr, "fuzz: mkdir %s: %s\n", dirs[v], strerror(errno));
			abort();
		}
		fuzz_ad_write_weights(dirs[v], v);
	}
	return dirs[v];
}

/* A config that loads with variant v's weights. */
static inline const char *fuzz_ad_config(int v)
{
	switch (v) {
	case 0:
		return "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": "
		       "[\"q_proj\", \"v_proj\"], \"bias\": \"none\", \"task_type\": \"CAUSAL_LM\"}";
	case 1:
		return "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 16, \"use_rslora\": true, "
		       "\"target_modules\": \"all-linear\", \"lora_dropout\": 0.05, "
		       "\"modules_to_save\": null, \"fan_in_fan_out\": false}";
	default:
		return "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, \"target_modules\": "
		       "\"model\\\\.layers\\\\.(0\\\\.self_attn\\\\.q_proj|"
		       "1\\\\.(self_attn\\\\.v_proj|mlp\\\\.down_proj))\", "
		       "\"rank_pattern\": {\"v_proj\": 2, \"layers.1.mlp.down_proj\": 3}, "
		       "\"alpha_pattern\": {\"down_proj\": 1.5}}";
	}
}

/* Checks a loaded adapter against the base; touches every weight; and
 * serialize -> from_blob (zero-copy) -> serialize is a fixed point. */
static inline void fuzz_ad_check(const ad_adapter *a, const loom_model_config *b)
{
	size_t bytes = 0;
	FUZZ_CHECK(a->n_layers == b->n_layers, "n_layers %d, base %d", a->n_layers, b->n_layers);
	FUZZ_CHECK(a->max_rank >= 0, "max_rank %d", a->max_rank);
	for (int l = 0; l < a->n_layers; l++) {
		for (int t = 0; t < AD_N_TARGETS; t++) {
			const ad_module *m = ad_mod(a, l, t);
			int din, dout;
			ad_target_dims(b, t, &din, &dout);
			FUZZ_CHECK(a->d_in[t] == din && a->d_out[t] == dout, "target %d dims", t);
			FUZZ_CHECK(m->rank >= 0 && m->rank <= a->max_rank,
				   "layer %d target %d rank %d (max %d)",
				   l, t, m->rank, a->max_rank);
			if (!m->rank)
				continue;
			FUZZ_CHECK(a->targets & (1u << t), "target %d adapted but not in targets", t);
			FUZZ_CHECK(isfinite(m->scale), "layer %d target %d scale %g", l, t, m->scale);
			FUZZ_CHECK(m->a && m->bt, "layer %d target %d without weights", l, t);
			for (size_t i = 0; i < (size_t)m->rank * (size_t)din; i++)
				FUZZ_CHECK(isfinite(m->a[i]), "layer %d target %d A[%zu] not finite",
					   l, t, i);
			for (size_t i = 0; i < (size_t)m->rank * (size_t)dout; i++)
				FUZZ_CHECK(isfinite(m->bt[i]), "layer %d target %d Bt[%zu] not finite", l, t,
					   i);
			bytes += (size_t)m->rank * (size_t)(din + dout) * sizeof(float);
		}
	}
	FUZZ_CHECK(a->bytes >= bytes, "bytes %zu < the %zu its modules hold", a->bytes, bytes);

	void *b1 = NULL, *b2 = NULL;
	size_t n1, n2;
	ad_adapter *c = NULL;
	loom_err rc = ad_adapter_serialize(a, &b1, &n1);
	if (rc == LOOM_ENOMEM)
		return;
	FUZZ_CHECK(rc == LOOM_OK, "serialize: %s", loom_errmsg());
	rc = ad_adapter_from_blob(b1, n1, a->name, b, 0, &c);
	FUZZ_CHECK(rc == LOOM_OK || rc == LOOM_ENOMEM, "the serialized adapter does not load: %s",
		   loom_errmsg());
	if (c) {
		rc = ad_adapter_serialize(c, &b2, &n2);
		FUZZ_CHECK(rc == LOOM_OK || rc == LOOM_ENOMEM, "serialize again: %s", loom_errmsg());
		FUZZ_CHECK(!b2 || (n1 == n2 && memcmp(b1, b2, n1) == 0),
			   "serialize(from_blob(serialize(a))) differs from serialize(a)");
		ad_adapter_destroy(c);
	}
	loom_free(b1);
	loom_free(b2);
}

#endif
