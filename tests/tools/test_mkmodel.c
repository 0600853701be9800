/* tests/tools/test_mkmodel.c — the real loom-mkmodel program: models of every family, shards,
 * adapters, real tokenizers copied in, bad args. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "tests/support/harness.h"

static char *tmp;

/* Runs loom-mkmodel with args; stderr goes to tmp/err. Returns the status. */
static int mk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int mk(const char *fmt, ...)
{
	char args[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(args, sizeof args, fmt, ap);
	va_end(ap);
	return lt_sh("'%s' %s >/dev/null 2>'%s/err'", lt_bin_path("loom-mkmodel"), args, tmp);
}

static char *sub(const char *name)
{
	char *p = loom_malloc(strlen(tmp) + strlen(name) + 2);
	assert_non_null(p);
	sprintf(p, "%s/%s", tmp, name);
	return p;
}

static void expect_tensor(const loom_st_set *s, const char *name, loom_dtype dt, int64_t d0,
			  int64_t d1)
{
	const loom_tensor *t = loom_st_set_find(s, name);
	if (!t)
		fail_msg("tensor %s missing", name);
	assert_int_equal(t->dtype, dt);
	assert_int_equal(t->ndim, d1 ? 2 : 1);
	assert_int_equal(t->shape[0], d0);
	if (d1)
		assert_int_equal(t->shape[1], d1);
}

/* Checks every HF tensor of a model made with hidden 64, ffn 96, heads 4,
 * kv-heads 2, vocab V, L layers. */
static void expect_llama(const char *dir, loom_dtype dt, int vocab, int layers, int tied)
{
	loom_model_config c;
	loom_st_set *s;
	char nm[128];

	if (loom_model_config_load(dir, &c) != LOOM_OK)
		fail_msg("%s", loom_errmsg());
	assert_int_equal(c.hidden, 64);
	assert_int_equal(c.ffn, 96);
	assert_int_equal(c.n_layers, layers);
	assert_int_equal(c.n_heads, 4);
	assert_int_equal(c.n_kv_heads, 2);
	assert_int_equal(c.head_dim, 16);
	assert_int_equal(c.vocab, vocab);
	assert_int_equal(c.tied, tied);
	assert_string_equal(c.model_type, "llama");
	assert_true(c.bos_id >= 0 && c.bos_id < vocab);
	assert_int_equal(c.n_eos, 1);
	assert_true(c.eos_ids[0] >= 0 && c.eos_ids[0] < vocab && c.eos_ids[0] != c.bos_id);
	if (loom_st_set_open(dir, &s) != LOOM_OK)
		fail_msg("%s", loom_errmsg());
	expect_tensor(s, "model.embed_tokens.weight", dt, vocab, 64);
	expect_tensor(s, "model.norm.weight", dt, 64, 0);
	for (int i = 0; i < layers; i++) {
		static const struct {
			const char *n;
			int64_t r, c;
		} w[] = {
			{ "self_attn.q_proj", 64, 64 }, { "self_attn.k_proj", 32, 64 },
			{ "self_attn.v_proj", 32, 64 }, { "self_attn.o_proj", 64, 64 },
			{ "mlp.gate_proj", 96, 64 },	{ "mlp.up_proj", 96, 64 },
			{ "mlp.down_proj", 64, 96 },
		};
		for (size_t k = 0; k < sizeof w / sizeof *w; k++) {
			snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", i, w[k].n);
			expect_tensor(s, nm, dt, w[k].r, w[k].c);
		}
		snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", i);
		expect_tensor(s, nm, dt, 64, 0);
		snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", i);
		expect_tensor(s, nm, dt, 64, 0);
	}
	if (tied)
		assert_null(loom_st_set_find(s, "lm_head.weight"));
	else
		expect_tensor(s, "lm_head.weight", dt, vocab, 64);
	loom_st_set_close(s);
}

static json_t *load_json(const char *dir, const char *name)
{
	char p[1024];
	json_error_t e;
	snprintf(p, sizeof p, "%s/%s", dir, name);
	json_t *j = json_load_file(p, 0, &e);
	if (!j)
		fail_msg("%s: %s", p, e.text);
	return j;
}

/* The tokenizer.json holds exactly vocab distinct ids (model.vocab + added_tokens). */
static void expect_tokenizer(const char *dir, int vocab, int32_t bos, int32_t eos,
			     const char *bos_text, const char *eos_text)
{
	json_t *j = load_json(dir, "tokenizer.json"), *v, *added = json_object_get(j, "added_tokens");
	json_t *model = json_object_get(j, "model"), *vmap = json_object_get(model, "vocab");
	char *seen = calloc((size_t)vocab, 1);
	const char *k;
	size_t i;
	int n = 0;

	assert_true(json_is_object(vmap));
	json_object_foreach(vmap, k, v) {
		json_int_t id = json_integer_value(v);
		assert_true(id >= 0 && id < vocab);
		n += !seen[id];
		seen[id] = 1;
	}
	json_array_foreach(added, i, v) {
		json_int_t id = json_integer_value(json_object_get(v, "id"));
		const char *content = json_string_value(json_object_get(v, "content"));
		assert_true(id >= 0 && id < vocab);
		n += !seen[id];
		seen[id] = 1;
		if (id == bos && bos_text)
			assert_string_equal(content, bos_text);
		if (id == eos && eos_text)
			assert_string_equal(content, eos_text);
	}
	assert_int_equal(n, vocab);
	free(seen);
	json_decref(j);
}

static void model_each_dtype(void **state)
{
	(void)state;
	static const struct {
		const char *flag, *torch;
		loom_dtype dt;
	} cases[] = {
		{ "f32", "float32", LOOM_DT_F32 },
		{ "f16", "float16", LOOM_DT_F16 },
		{ "bf16", "bfloat16", LOOM_DT_BF16 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char *dir = sub(cases[i].flag);
		assert_int_equal(mk("model --out '%s' --dtype %s --hidden 64 --ffn 96 --layers 2 "
				    "--heads 4 --kv-heads 2 --vocab 400 --ctx 128 --seed 7",
				    dir, cases[i].flag),
				 0);
		expect_llama(dir, cases[i].dt, 400, 2, 0);
		json_t *c = load_json(dir, "config.json");
		assert_string_equal(json_string_value(json_object_get(c, "torch_dtype")),
				    cases[i].torch);
		assert_string_equal(json_string_value(json_array_get(
					    json_object_get(c, "architectures"), 0)),
				    "LlamaForCausalLM");
		assert_int_equal(json_integer_value(json_object_get(c, "max_position_embeddings")),
				 128);
		json_decref(c);
		loom_free(dir);
	}

	/* the same seed gives the same values in every dtype (up to rounding) */
	char *d32 = sub("f32"), *d16 = sub("bf16");
	loom_st_set *a, *b;
	assert_int_equal(loom_st_set_open(d32, &a), LOOM_OK);
	assert_int_equal(loom_st_set_open(d16, &b), LOOM_OK);
	const loom_tensor *ta = loom_st_set_find(a, "model.layers.1.mlp.up_proj.weight");
	const loom_tensor *tb = loom_st_set_find(b, "model.layers.1.mlp.up_proj.weight");
	size_t n = loom_tensor_numel(ta);
	float *fa = malloc(n * 4), *fb = malloc(n * 4);
	loom_to_f32(fa, ta->data, ta->dtype, n);
	loom_to_f32(fb, tb->data, tb->dtype, n);
	double ss = 0;
	for (size_t i = 0; i < n; i++) {
		assert_true(isfinite(fa[i]));
		assert_true(fabsf(fa[i] - fb[i]) <= fabsf(fa[i]) * (1.0f / 128));
		ss += (double)fa[i] * fa[i];
	}
	/* ~ N(0, 1/64): standard deviation near 0.125 */
	double sd = sqrt(ss / (double)n);
	assert_true(sd > 0.1 && sd < 0.15);
	const loom_tensor *nt = loom_st_set_find(a, "model.norm.weight");
	loom_to_f32(fa, nt->data, LOOM_DT_F32, 64);
	for (int i = 0; i < 64; i++)
		assert_true(fa[i] > 0.7f && fa[i] < 1.3f);
	free(fa);
	free(fb);
	loom_st_set_close(a);
	loom_st_set_close(b);
	loom_free(d32);
	loom_free(d16);
}

static void tokenizers_and_tied(void **state)
{
	(void)state;
	char *sp = sub("sp"), *bl = sub("bl");
	loom_model_config c;

	assert_int_equal(mk("model --out '%s' --tokenizer sp --tied --hidden 64 --ffn 96 --layers 1 "
			    "--heads 4 --kv-heads 2 --vocab 512",
			    sp),
			 0);
	expect_llama(sp, LOOM_DT_F32, 512, 1, 1);
	assert_int_equal(loom_model_config_load(sp, &c), LOOM_OK);
	assert_int_equal(c.bos_id, 1);
	assert_int_equal(c.eos_ids[0], 2);
	expect_tokenizer(sp, 512, c.bos_id, c.eos_ids[0], "<s>", "</s>");

	assert_int_equal(mk("model --out '%s' --tokenizer bytelevel --hidden 64 --ffn 96 --layers 3 "
			    "--heads 4 --kv-heads 2 --vocab 600 --rope-theta 500000 --rms-eps 1e-6",
			    bl),
			 0);
	expect_llama(bl, LOOM_DT_F32, 600, 3, 0);
	assert_int_equal(loom_model_config_load(bl, &c), LOOM_OK);
	assert_true(c.rope_theta == 500000.0f);
	assert_true(c.rms_eps == 1e-6f);
	expect_tokenizer(bl, 600, c.bos_id, c.eos_ids[0], "<|begin_of_text|>", "<|end_of_text|>");
	loom_free(sp);
	loom_free(bl);
}

static void deterministic_and_sharded(void **state)
{
	(void)state;
	char *a = sub("det-a"), *b = sub("det-b"), *c = sub("det-c"), *sh = sub("sharded");
	const char *shape = "--hidden 64 --ffn 96 --layers 2 --heads 4 --kv-heads 2 --vocab 400";

	assert_int_equal(mk("model --out '%s' %s --seed 11", a, shape), 0);
	assert_int_equal(mk("model --out '%s' %s --seed 11", b, shape), 0);
	assert_int_equal(mk("model --out '%s' %s --seed 12", c, shape), 0);
	assert_int_equal(lt_sh("cmp -s '%s/model.safetensors' '%s/model.safetensors'", a, b), 0);
	assert_int_equal(lt_sh("cmp -s '%s/tokenizer.json' '%s/tokenizer.json'", a, b), 0);
	assert_int_not_equal(lt_sh("cmp -s '%s/model.safetensors' '%s/model.safetensors'", a, c), 0);

	assert_int_equal(mk("model --out '%s' %s --seed 11 --shards 3", sh, shape), 0);
	for (int i = 1; i <= 3; i++)
		assert_int_equal(lt_sh("test -f '%s/model-%05d-of-00003.safetensors'", sh, i), 0);
	assert_int_equal(lt_sh("test -f '%s/model.safetensors'", sh), 1);
	expect_llama(sh, LOOM_DT_F32, 400, 2, 0);

	loom_st_set *one, *many;
	assert_int_equal(loom_st_set_open(a, &one), LOOM_OK);
	assert_int_equal(loom_st_set_open(sh, &many), LOOM_OK);
	assert_non_null(strstr(loom_st_set_where(many, "model.embed_tokens.weight"), "00001-of"));
	assert_non_null(strstr(loom_st_set_where(many, "lm_head.weight"), "00003-of"));
	static const char *const names[] = { "model.embed_tokens.weight",
					     "model.layers.1.self_attn.v_proj.weight",
					     "model.layers.0.mlp.down_proj.weight", "lm_head.weight" };
	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		const loom_tensor *x = loom_st_set_find(one, names[i]);
		const loom_tensor *y = loom_st_set_find(many, names[i]);
		assert_int_equal(x->nbytes, y->nbytes);
		assert_memory_equal(x->data, y->data, x->nbytes);
	}
	loom_st_set_close(one);
	loom_st_set_close(many);
	json_t *idx = load_json(sh, "model.safetensors.index.json");
	assert_int_equal(json_object_size(json_object_get(idx, "weight_map")), 2 + 9 * 2 + 1);
	assert_true(json_integer_value(json_object_get(json_object_get(idx, "metadata"),
						       "total_size")) > 0);
	json_decref(idx);
	loom_free(a);
	loom_free(b);
	loom_free(c);
	loom_free(sh);
}

static void expect_lora(const loom_st_file *f, int layer, const char *block, const char *mod,
			loom_dtype dt, int64_t r, int64_t in, int64_t out)
{
	char nm[160];
	snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.%s.lora_A.weight", layer, block,
		 mod);
	const loom_tensor *a = loom_st_find(f, nm);
	if (!a)
		fail_msg("%s missing", nm);
	assert_int_equal(a->dtype, dt);
	assert_int_equal(a->ndim, 2);
	assert_int_equal(a->shape[0], r);
	assert_int_equal(a->shape[1], in);
	snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.%s.lora_B.weight", layer, block,
		 mod);
	const loom_tensor *b = loom_st_find(f, nm);
	if (!b)
		fail_msg("%s missing", nm);
	assert_int_equal(b->shape[0], out);
	assert_int_equal(b->shape[1], r);
	/* B is not zero (unlike PEFT's init) */
	size_t n = loom_tensor_numel(b), nz = 0;
	float *v = malloc(n * 4);
	loom_to_f32(v, b->data, b->dtype, n);
	for (size_t i = 0; i < n; i++)
		nz += v[i] != 0;
	assert_true(nz > n / 2);
	free(v);
}

static void adapters(void **state)
{
	(void)state;
	char *m = sub("base"), *a1 = sub("lora1"), *a2 = sub("lora2");
	loom_st_file *f;
	char p[1100];

	assert_int_equal(mk("model --out '%s' --hidden 64 --ffn 96 --layers 3 --heads 4 --kv-heads 2 "
			    "--vocab 400",
			    m),
			 0);
	assert_int_equal(mk("adapter --model '%s' --out '%s'", m, a1), 0);
	json_t *c = load_json(a1, "adapter_config.json");
	assert_string_equal(json_string_value(json_object_get(c, "peft_type")), "LORA");
	assert_string_equal(json_string_value(json_object_get(c, "task_type")), "CAUSAL_LM");
	assert_string_equal(json_string_value(json_object_get(c, "bias")), "none");
	assert_string_equal(json_string_value(json_object_get(c, "base_model_name_or_path")), m);
	assert_int_equal(json_integer_value(json_object_get(c, "r")), 8);
	assert_true(json_number_value(json_object_get(c, "lora_alpha")) == 16.0);
	assert_true(json_number_value(json_object_get(c, "lora_dropout")) == 0.0);
	assert_true(json_is_false(json_object_get(c, "use_rslora")));
	assert_true(json_is_false(json_object_get(c, "use_dora")));
	assert_true(json_is_false(json_object_get(c, "fan_in_fan_out")));
	assert_true(json_is_null(json_object_get(c, "modules_to_save")));
	assert_true(json_is_null(json_object_get(c, "layers_to_transform")));
	assert_true(json_is_object(json_object_get(c, "rank_pattern")));
	assert_true(json_is_object(json_object_get(c, "alpha_pattern")));
	json_t *tm = json_object_get(c, "target_modules");
	assert_int_equal(json_array_size(tm), 2);
	assert_string_equal(json_string_value(json_array_get(tm, 0)), "q_proj");
	assert_string_equal(json_string_value(json_array_get(tm, 1)), "v_proj");
	json_decref(c);
	snprintf(p, sizeof p, "%s/adapter_model.safetensors", a1);
	assert_int_equal(loom_st_open(p, &f), LOOM_OK);
	assert_int_equal(loom_st_count(f), 3 * 2 * 2);
	for (int l = 0; l < 3; l++) {
		expect_lora(f, l, "self_attn", "q_proj", LOOM_DT_F32, 8, 64, 64);
		expect_lora(f, l, "self_attn", "v_proj", LOOM_DT_F32, 8, 64, 32);
	}
	loom_st_close(f);

	assert_int_equal(mk("adapter --model '%s' --out '%s' --rank 4 --alpha 8 --rslora --dtype bf16 "
			    "--targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj "
			    "--layers 0,2 --seed 3",
			    m, a2),
			 0);
	c = load_json(a2, "adapter_config.json");
	assert_int_equal(json_integer_value(json_object_get(c, "r")), 4);
	assert_true(json_is_true(json_object_get(c, "use_rslora")));
	json_t *lt = json_object_get(c, "layers_to_transform");
	assert_int_equal(json_array_size(lt), 2);
	assert_int_equal(json_integer_value(json_array_get(lt, 1)), 2);
	assert_int_equal(json_array_size(json_object_get(c, "target_modules")), 7);
	json_decref(c);
	snprintf(p, sizeof p, "%s/adapter_model.safetensors", a2);
	assert_int_equal(loom_st_open(p, &f), LOOM_OK);
	assert_int_equal(loom_st_count(f), 2 * 7 * 2);
	for (int l = 0; l <= 2; l += 2) {
		expect_lora(f, l, "self_attn", "q_proj", LOOM_DT_BF16, 4, 64, 64);
		expect_lora(f, l, "self_attn", "k_proj", LOOM_DT_BF16, 4, 64, 32);
		expect_lora(f, l, "self_attn", "v_proj", LOOM_DT_BF16, 4, 64, 32);
		expect_lora(f, l, "self_attn", "o_proj", LOOM_DT_BF16, 4, 64, 64);
		expect_lora(f, l, "mlp", "gate_proj", LOOM_DT_BF16, 4, 64, 96);
		expect_lora(f, l, "mlp", "up_proj", LOOM_DT_BF16, 4, 64, 96);
		expect_lora(f, l, "mlp", "down_proj", LOOM_DT_BF16, 4, 96, 64);
	}
	assert_null(loom_st_find(f, "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"));
	loom_st_close(f);
	loom_free(m);
	loom_free(a1);
	loom_free(a2);
}

/* ---- families ---- */

static double jnum(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_number(v))
		fail_msg("config.json: \"%s\" is not a number", key);
	return json_number_value(v);
}

static const char *jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	if (!s)
		fail_msg("config.json: \"%s\" is not a string", key);
	return s;
}

/* Mean of a 1-D tensor (norm weights). */
static double tensor_mean(const loom_st_set *s, const char *name)
{
	const loom_tensor *t = loom_st_set_find(s, name);
	if (!t)
		fail_msg("tensor %s missing", name);
	size_t n = loom_tensor_numel(t);
	float *v = malloc(n * sizeof *v);
	loom_to_f32(v, t->data, t->dtype, n);
	double m = 0, sd = 0;
	for (size_t i = 0; i < n; i++)
		m += v[i] / (double)n;
	for (size_t i = 0; i < n; i++)
		sd += (v[i] - m) * (v[i] - m) / (double)n;
	free(v);
	assert_true(sd > 1e-6); /* random, not constant */
	return m;
}

/* The layer tensors every family has; q is heads x head_dim wide. */
static void expect_core(const loom_st_set *s, int layers, int64_t q, int64_t kv)
{
	char nm[128];
	for (int i = 0; i < layers; i++) {
		const struct {
			const char *n;
			int64_t r, c;
		} w[] = {
			{ "self_attn.q_proj.weight", q, 64 },  { "self_attn.k_proj.weight", kv, 64 },
			{ "self_attn.v_proj.weight", kv, 64 }, { "self_attn.o_proj.weight", 64, q },
			{ "mlp.gate_proj.weight", 96, 64 },    { "mlp.up_proj.weight", 96, 64 },
			{ "mlp.down_proj.weight", 64, 96 },    { "input_layernorm.weight", 64, 0 },
			{ "post_attention_layernorm.weight", 64, 0 },
		};
		for (size_t k = 0; k < sizeof w / sizeof *w; k++) {
			snprintf(nm, sizeof nm, "model.layers.%d.%s", i, w[k].n);
			expect_tensor(s, nm, LOOM_DT_F32, w[k].r, w[k].c);
		}
	}
}

static int count_tensors(const char *dir)
{
	char p[1100];
	loom_st_file *f;
	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	assert_int_equal(loom_st_open(p, &f), LOOM_OK);
	int n = (int)loom_st_count(f);
	loom_st_close(f);
	return n;
}

#define FSHAPE "--hidden 64 --ffn 96 --layers 2 --heads 4 --kv-heads 2 --vocab 400"

static void family_llama3_and_rope(void **state)
{
	(void)state;
	char *d = sub("llama3"), *y = sub("yarn"), *b = sub("llama-bias");
	loom_st_set *s;
	assert_int_equal(mk("model --family llama3 --out '%s' " FSHAPE, d), 0);
	json_t *c = load_json(d, "config.json");
	assert_string_equal(jstr(c, "model_type"), "llama");
	assert_int_equal(jnum(c, "head_dim"), 16);
	assert_true(jnum(c, "rope_theta") == 500000.0);
	json_t *rs = json_object_get(c, "rope_scaling");
	assert_string_equal(jstr(rs, "rope_type"), "llama3");
	assert_true(jnum(rs, "factor") == 8.0 && jnum(rs, "low_freq_factor") == 1.0 &&
		    jnum(rs, "high_freq_factor") == 4.0);
	assert_int_equal(jnum(rs, "original_max_position_embeddings"), 32);
	json_t *eos = json_object_get(c, "eos_token_id");
	assert_int_equal(json_array_size(eos), 3);
	assert_true(json_is_false(json_object_get(c, "attention_bias")));
	json_decref(c);
	assert_int_equal(loom_st_set_open(d, &s), LOOM_OK); /* the same tensors as llama */
	expect_core(s, 2, 64, 32);
	expect_tensor(s, "lm_head.weight", LOOM_DT_F32, 400, 64);
	loom_st_set_close(s);
	assert_int_equal(count_tensors(d), 3 + 2 * 9);
	/* byte-level tokenizer: <|begin_of_text|> is the BOS */
	expect_tokenizer(d, 400, 398, 399, "<|begin_of_text|>", "<|end_of_text|>");

	assert_int_equal(mk("model --out '%s' " FSHAPE " --rope-scaling yarn --rope-factor 4 "
			    "--rope-original-max 64 --ctx 256",
			    y),
			 0);
	c = load_json(y, "config.json");
	rs = json_object_get(c, "rope_scaling");
	assert_string_equal(jstr(rs, "rope_type"), "yarn");
	assert_true(jnum(rs, "factor") == 4.0);
	assert_int_equal(jnum(rs, "original_max_position_embeddings"), 64);
	assert_null(json_object_get(c, "head_dim")); /* llama: only when it is not hidden/heads */
	json_decref(c);

	assert_int_equal(mk("model --out '%s' " FSHAPE " --attention-bias --mlp-bias", b), 0);
	c = load_json(b, "config.json");
	assert_true(json_is_true(json_object_get(c, "attention_bias")));
	assert_true(json_is_true(json_object_get(c, "mlp_bias")));
	json_decref(c);
	assert_int_equal(loom_st_set_open(b, &s), LOOM_OK);
	expect_tensor(s, "model.layers.1.self_attn.q_proj.bias", LOOM_DT_F32, 64, 0);
	expect_tensor(s, "model.layers.1.self_attn.k_proj.bias", LOOM_DT_F32, 32, 0);
	expect_tensor(s, "model.layers.1.self_attn.o_proj.bias", LOOM_DT_F32, 64, 0);
	expect_tensor(s, "model.layers.1.mlp.gate_proj.bias", LOOM_DT_F32, 96, 0);
	expect_tensor(s, "model.layers.1.mlp.down_proj.bias", LOOM_DT_F32, 64, 0);
	loom_st_set_close(s);
	loom_free(d);
	loom_free(y);
	loom_free(b);
}

static void family_qwen(void **state)
{
	(void)state;
	char *q2 = sub("qwen2"), *q3 = sub("qwen3"), *a3 = sub("qwen3-lora");
	loom_st_set *s;
	char p[1100];

	assert_int_equal(mk("model --family qwen2 --out '%s' " FSHAPE, q2), 0);
	json_t *c = load_json(q2, "config.json");
	assert_string_equal(jstr(c, "model_type"), "qwen2");
	assert_string_equal(json_string_value(json_array_get(json_object_get(c, "architectures"), 0)),
			    "Qwen2ForCausalLM");
	assert_true(json_is_true(json_object_get(c, "tie_word_embeddings")));
	assert_true(json_is_false(json_object_get(c, "use_sliding_window")));
	assert_true(json_is_integer(json_object_get(c, "sliding_window")));
	assert_true(json_is_integer(json_object_get(c, "max_window_layers")));
	assert_true(jnum(c, "rope_theta") == 1e6);
	json_decref(c);
	assert_int_equal(loom_st_set_open(q2, &s), LOOM_OK);
	expect_core(s, 2, 64, 32);
	for (int l = 0; l < 2; l++) {
		char nm[96];
		snprintf(nm, sizeof nm, "model.layers.%d.self_attn.q_proj.bias", l);
		expect_tensor(s, nm, LOOM_DT_F32, 64, 0);
		assert_true(fabs(tensor_mean(s, nm)) < 0.3);
		snprintf(nm, sizeof nm, "model.layers.%d.self_attn.k_proj.bias", l);
		expect_tensor(s, nm, LOOM_DT_F32, 32, 0);
		snprintf(nm, sizeof nm, "model.layers.%d.self_attn.v_proj.bias", l);
		expect_tensor(s, nm, LOOM_DT_F32, 32, 0);
		snprintf(nm, sizeof nm, "model.layers.%d.self_attn.o_proj.bias", l);
		assert_null(loom_st_set_find(s, nm));
	}
	assert_null(loom_st_set_find(s, "lm_head.weight"));
	loom_st_set_close(s);
	assert_int_equal(count_tensors(q2), 2 + 2 * 12);

	assert_int_equal(mk("model --family qwen3 --out '%s' " FSHAPE, q3), 0);
	c = load_json(q3, "config.json");
	assert_string_equal(jstr(c, "model_type"), "qwen3");
	assert_string_equal(json_string_value(json_array_get(json_object_get(c, "architectures"), 0)),
			    "Qwen3ForCausalLM");
	assert_int_equal(jnum(c, "head_dim"), 32); /* != 64 / 4 */
	assert_true(json_is_false(json_object_get(c, "attention_bias")));
	json_decref(c);
	assert_int_equal(loom_st_set_open(q3, &s), LOOM_OK);
	expect_core(s, 2, 128, 64);
	expect_tensor(s, "model.layers.0.self_attn.q_norm.weight", LOOM_DT_F32, 32, 0);
	expect_tensor(s, "model.layers.1.self_attn.k_norm.weight", LOOM_DT_F32, 32, 0);
	assert_true(fabs(tensor_mean(s, "model.layers.1.self_attn.k_norm.weight") - 1) < 0.1);
	assert_null(loom_st_set_find(s, "model.layers.0.self_attn.q_proj.bias"));
	loom_st_set_close(s);

	/* an adapter's shapes follow head_dim, not hidden / heads */
	assert_int_equal(mk("adapter --model '%s' --out '%s' --rank 4 "
			    "--targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
			    q3, a3),
			 0);
	loom_st_file *f;
	snprintf(p, sizeof p, "%s/adapter_model.safetensors", a3);
	assert_int_equal(loom_st_open(p, &f), LOOM_OK);
	expect_lora(f, 1, "self_attn", "q_proj", LOOM_DT_F32, 4, 64, 128);
	expect_lora(f, 1, "self_attn", "k_proj", LOOM_DT_F32, 4, 64, 64);
	expect_lora(f, 1, "self_attn", "o_proj", LOOM_DT_F32, 4, 128, 64);
	expect_lora(f, 1, "mlp", "down_proj", LOOM_DT_F32, 4, 96, 64);
	loom_st_close(f);
	loom_free(q2);
	loom_free(q3);
	loom_free(a3);
}

static void family_mistral_gemma2(void **state)
{
	(void)state;
	char *mi = sub("mistral"), *mi8 = sub("mistral8"), *g = sub("gemma2");
	loom_st_set *s;

	assert_int_equal(mk("model --family mistral --out '%s' " FSHAPE, mi), 0);
	assert_int_equal(mk("model --family mistral --out '%s' " FSHAPE " --sliding-window 8", mi8),
			 0);
	json_t *c = load_json(mi, "config.json");
	assert_string_equal(jstr(c, "model_type"), "mistral");
	assert_string_equal(json_string_value(json_array_get(json_object_get(c, "architectures"), 0)),
			    "MistralForCausalLM");
	assert_int_equal(jnum(c, "sliding_window"), 16);
	json_decref(c);
	c = load_json(mi8, "config.json");
	assert_int_equal(jnum(c, "sliding_window"), 8);
	json_decref(c);
	assert_int_equal(count_tensors(mi), 3 + 2 * 9);

	assert_int_equal(mk("model --family gemma2 --out '%s' " FSHAPE, g), 0);
	c = load_json(g, "config.json");
	assert_string_equal(jstr(c, "model_type"), "gemma2");
	assert_string_equal(json_string_value(json_array_get(json_object_get(c, "architectures"), 0)),
			    "Gemma2ForCausalLM");
	assert_int_equal(jnum(c, "head_dim"), 32);
	assert_string_equal(jstr(c, "hidden_activation"), "gelu_pytorch_tanh");
	assert_true(jnum(c, "query_pre_attn_scalar") != 32);
	assert_true(jnum(c, "attn_logit_softcapping") == 50.0);
	assert_true(jnum(c, "final_logit_softcapping") == 30.0);
	assert_int_equal(jnum(c, "sliding_window"), 16);
	assert_true(json_is_true(json_object_get(c, "tie_word_embeddings")));
	assert_int_equal(json_array_size(json_object_get(c, "eos_token_id")), 2);
	json_decref(c);
	assert_int_equal(loom_st_set_open(g, &s), LOOM_OK);
	expect_core(s, 2, 128, 64);
	static const char *const norms[] = { "input_layernorm", "post_attention_layernorm",
					     "pre_feedforward_layernorm",
					     "post_feedforward_layernorm" };
	for (size_t k = 0; k < 4; k++) {
		char nm[96];
		snprintf(nm, sizeof nm, "model.layers.1.%s.weight", norms[k]);
		expect_tensor(s, nm, LOOM_DT_F32, 64, 0);
		assert_true(fabs(tensor_mean(s, nm)) < 0.1); /* Gemma: x (1 + w), w around 0 */
	}
	assert_null(loom_st_set_find(s, "lm_head.weight"));
	loom_st_set_close(s);
	assert_int_equal(count_tensors(g), 2 + 2 * 11);
	loom_free(mi);
	loom_free(mi8);
	loom_free(g);
}

/* A real tokenizer copied in: the files unchanged, vocab and special ids from them. */
static void real_tokenizer(void **state)
{
	(void)state;
	char *d = sub("llama3-real-tok"), tj[600], tc[600];
	snprintf(tj, sizeof tj, "%s", lt_shared_path("fixtures/llama3.2-1b-instruct/tokenizer.json"));
	snprintf(tc, sizeof tc, "%s",
		 lt_shared_path("fixtures/llama3.2-1b-instruct/tokenizer_config.json"));
	assert_int_equal(mk("model --family llama3 --out '%s' --hidden 64 --ffn 96 --layers 1 "
			    "--heads 4 --kv-heads 2 --tied --dtype bf16 --tokenizer-json '%s' "
			    "--tokenizer-config '%s'",
			    d, tj, tc),
			 0);
	assert_int_equal(lt_sh("cmp -s '%s' '%s/tokenizer.json'", tj, d), 0);
	assert_int_equal(lt_sh("cmp -s '%s' '%s/tokenizer_config.json'", tc, d), 0);
	json_t *c = load_json(d, "config.json");
	assert_int_equal(jnum(c, "vocab_size"), 128256);
	assert_int_equal(jnum(c, "bos_token_id"), 128000);
	json_t *eos = json_object_get(c, "eos_token_id");
	int has_eot = 0, has_eot_text = 0;
	size_t i;
	json_t *v;
	json_array_foreach(eos, i, v) {
		has_eot |= json_integer_value(v) == 128009;      /* <|eot_id|> */
		has_eot_text |= json_integer_value(v) == 128001; /* <|end_of_text|> */
	}
	assert_true(has_eot && has_eot_text);
	json_decref(c);
	loom_free(d);
}

/* Bad arguments: a non-zero exit and exactly one line on stderr. */
static void bad_args(void **state)
{
	(void)state;
	char *m = sub("base-bad");
	assert_int_equal(mk("model --out '%s' --layers 2 --vocab 400", m), 0);
	const struct {
		const char *args;
		int status;
	} cases[] = {
		{ "", 2 },
		{ "frobnicate", 2 },
		{ "model", 2 },
		{ "model --out", 2 },
		{ "model --out X --hidden 0", 2 },
		{ "model --out X --hidden sixty", 2 },
		{ "model --out X --heads 3", 2 },
		{ "model --out X --kv-heads 3", 2 },
		{ "model --out X --dtype f8", 2 },
		{ "model --out X --tokenizer wordpiece", 2 },
		{ "model --out X --vocab 5", 2 },
		{ "model --out X --shards 0", 2 },
		{ "model --out X --shards 500", 2 },
		{ "model --out X --rms-eps -1", 2 },
		{ "model --out X --tied yes", 2 },
		{ "model --out X --bogus 1", 2 },
		{ "model --out /proc/loom-no/x", 1 },
		{ "adapter --out X", 2 },
		{ "adapter --model M", 2 },
		{ "adapter --model M --out X --targets q_proj,lm_head", 2 },
		{ "adapter --model M --out X --targets q_proj,q_proj", 2 },
		{ "adapter --model M --out X --rank 0", 2 },
		{ "adapter --model M --out X --layers 0,9", 2 },
		{ "adapter --model M --out X --layers 1,,2", 2 },
		{ "adapter --model /nonexistent/loom-model --out X", 1 },
		{ "model --out X --family gpt2", 2 },
		{ "model --out X --rope-scaling ntk", 2 },
		{ "model --out X --rope-factor 0", 2 },
		{ "model --out X --head-dim 7", 2 },
		{ "model --out X --family qwen2 --attention-bias", 2 },
		{ "model --out X --family mistral --mlp-bias", 2 },
		{ "model --out X --sliding-window 8", 2 },
		{ "model --out X --family gemma2 --rope-scaling linear", 2 },
		{ "model --out X --family qwen2 --sliding-window 8 --max-window-layers 9", 2 },
		{ "model --out X --tokenizer-config /dev/null", 2 },
		{ "model --out X --tokenizer-json /nonexistent/tokenizer.json", 1 },
		{ "model --out X --tokenizer-json /dev/null", 2 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char args[512], err[1200], line[600];
		const char *s = cases[i].args;
		size_t o = 0;
		/* X = a fresh output dir, M = the model */
		for (; *s && o < sizeof args - 300; s++) {
			if (*s == 'X' && (s[1] == '\0' || s[1] == ' ') && s > cases[i].args && s[-1] == ' ')
				o += (size_t)snprintf(args + o, sizeof args - o, "'%s/bad-out'", tmp);
			else if (*s == 'M' && (s[1] == '\0' || s[1] == ' ') && s > cases[i].args && s[-1] == ' ')
				o += (size_t)snprintf(args + o, sizeof args - o, "'%s'", m);
			else
				args[o++] = *s;
		}
		args[o] = '\0';
		int st = mk("%s", args);
		snprintf(err, sizeof err, "%s/err", tmp);
		FILE *fp = fopen(err, "r");
		assert_non_null(fp);
		int lines = 0;
		line[0] = '\0';
		while (fgets(line, sizeof line, fp))
			lines++;
		fclose(fp);
		if (st != cases[i].status || lines != 1)
			fail_msg("\"%s\": status %d (wanted %d), %d stderr lines, last: %s",
				 cases[i].args, st, cases[i].status, lines, line);
	}
	assert_int_equal(mk("--help"), 0);
	loom_free(m);
}

static int setup(void **state)
{
	(void)state;
	tmp = lt_tmpdir("test-mkmodel");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	lt_sh("rm -rf '%s'", tmp);
	loom_free(tmp);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(model_each_dtype),
		cmocka_unit_test(tokenizers_and_tied),
		cmocka_unit_test(deterministic_and_sharded),
		cmocka_unit_test(adapters),
		cmocka_unit_test(family_llama3_and_rope),
		cmocka_unit_test(family_qwen),
		cmocka_unit_test(family_mistral_gemma2),
		cmocka_unit_test(real_tokenizer),
		cmocka_unit_test(bad_args),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
