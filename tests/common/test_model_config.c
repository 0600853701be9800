/* tests/common/test_model_config.c — config.json parsing: real configs, defaults, rejections. */
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
#include "tests/support/harness.h"

static const char *base_json =
	"{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\","
	" \"hidden_size\": 64, \"intermediate_size\": 172, \"num_hidden_layers\": 2,"
	" \"num_attention_heads\": 8, \"num_key_value_heads\": 4, \"vocab_size\": 512,"
	" \"max_position_embeddings\": 256, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0,"
	" \"hidden_act\": \"silu\", \"tie_word_embeddings\": false, \"bos_token_id\": 1,"
	" \"eos_token_id\": 2}";

/* Parses base_json with key set to value (JSON text) or removed (value NULL). */
static loom_err parse_with(const char *key, const char *value, loom_model_config *c)
{
	json_t *root = json_loads(base_json, 0, NULL);
	assert_non_null(root);
	if (value) {
		json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
		assert_non_null(v);
		json_object_set_new(root, key, v);
	} else if (key) {
		json_object_del(root, key);
	}
	char *text = json_dumps(root, 0);
	json_decref(root);
	loom_err rc = loom_model_config_parse(text, strlen(text), "some/dir/config.json", c);
	free(text);
	return rc;
}

static void real_stories260k(void **state)
{
	(void)state;
	loom_model_config c;
	assert_int_equal(loom_model_config_load(lt_shared_path("models/stories260k"), &c), LOOM_OK);
	assert_int_equal(c.hidden, 64);
	assert_int_equal(c.n_layers, 5);
	assert_int_equal(c.n_heads, 8);
	assert_int_equal(c.n_kv_heads, 4);
	assert_int_equal(c.head_dim, 8);
	assert_int_equal(c.ffn, 172);
	assert_int_equal(c.vocab, 512);
	assert_int_equal(c.max_ctx, 512);
	assert_true(c.tied);
	assert_int_equal(c.bos_id, 1);
	assert_int_equal(c.n_eos, 1);
	assert_int_equal(c.eos_ids[0], 2);
	assert_true(c.rms_eps == 1e-5f);
	assert_true(c.rope_theta == 10000.0f);
	assert_string_equal(c.model_type, "llama");
}

static void real_babyllama105(void **state)
{
	(void)state;
	loom_model_config c;
	assert_int_equal(loom_model_config_load(lt_shared_path("models/babyllama105"), &c), LOOM_OK);
	assert_int_equal(c.hidden, 128);
	assert_int_equal(c.n_layers, 5);
	assert_int_equal(c.n_heads, 8);
	assert_int_equal(c.n_kv_heads, 4);
	assert_int_equal(c.head_dim, 16);
	assert_int_equal(c.ffn, 352);
	assert_int_equal(c.vocab, 105);
	assert_int_equal(c.max_ctx, 256);
	assert_true(c.tied);
	assert_int_equal(c.n_eos, 1);
	assert_int_equal(c.eos_ids[0], 2);

	/* the TinyLLama-v0 config (no num_key_value_heads, no rope_theta) */
	assert_int_equal(loom_model_config_load(lt_shared_path("fixtures/tinyllama-v0-tokenizer"),
						&c),
			 LOOM_OK);
	assert_int_equal(c.n_heads, 16);
	assert_int_equal(c.n_kv_heads, 16);
	assert_int_equal(c.head_dim, 4);
	assert_int_equal(c.vocab, 32000);
	assert_int_equal(c.max_ctx, 2048);
	assert_true(c.rms_eps == 1e-6f);
	assert_true(c.rope_theta == 10000.0f);
}

static void defaults(void **state)
{
	(void)state;
	const char *min = "{\"model_type\": \"llama\", \"hidden_size\": 96, \"intermediate_size\": 8,"
			  " \"num_hidden_layers\": 1, \"num_attention_heads\": 6, \"vocab_size\": 9}";
	loom_model_config c;
	assert_int_equal(loom_model_config_parse(min, strlen(min), "x/config.json", &c), LOOM_OK);
	assert_int_equal(c.n_kv_heads, 6);
	assert_int_equal(c.head_dim, 16);
	assert_int_equal(c.max_ctx, 2048);
	assert_true(c.rms_eps == 1e-6f);
	assert_true(c.rope_theta == 10000.0f);
	assert_false(c.tied);
	assert_int_equal(c.bos_id, -1);
	assert_int_equal(c.n_eos, 0);

	assert_int_equal(parse_with("eos_token_id", "[2, 5, 7]", &c), LOOM_OK);
	assert_int_equal(c.n_eos, 3);
	assert_int_equal(c.eos_ids[2], 7);
	assert_int_equal(parse_with("rope_scaling", "null", &c), LOOM_OK);
	assert_int_equal(c.rope.kind, LOOM_ROPE_DEFAULT);
	assert_true(c.embed_scale == 1.0f && c.attn_softcap == 0.0f && c.final_softcap == 0.0f);
	assert_true(c.attn_scale == (float)(1.0 / sqrt(8.0)));
	assert_int_equal(c.act, LOOM_ACT_SILU);
	assert_int_equal(parse_with("head_dim", "16", &c), LOOM_OK); /* != hidden / heads: kept */
	assert_int_equal(c.head_dim, 16);
	assert_int_equal(parse_with("head_dim", "null", &c), LOOM_OK);
	assert_int_equal(c.head_dim, 8);
	assert_int_equal(parse_with("model_type", NULL, &c), LOOM_OK); /* from architectures */
	assert_string_equal(c.model_type, "llama");
	assert_int_equal(parse_with("tie_word_embeddings", "true", &c), LOOM_OK);
	assert_true(c.tied);
	assert_int_equal(parse_with("rope_theta", "500000", &c), LOOM_OK);
	assert_true(c.rope_theta == 500000.0f);

	const char *mistral =
		"{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 64,"
		" \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
		" \"num_key_value_heads\": 1, \"vocab_size\": 32, \"max_position_embeddings\": 32768,"
		" \"sliding_window\": 4096, \"eos_token_id\": 2}";
	assert_int_equal(loom_model_config_parse(mistral, strlen(mistral), "m/config.json", &c),
			 LOOM_OK);
	assert_string_equal(c.model_type, "mistral");
	assert_int_equal(c.max_ctx, 32768); /* windowed attention, not a shorter context */
	assert_int_equal(c.window, 4096);
	assert_int_equal(loom_layer_window(&c, 0), 4096);
}

/* The real configs of each family in ../shared/fixtures: the layer description. */
static void real_families(void **state)
{
	(void)state;
	loom_model_config c;

	assert_int_equal(loom_model_config_load(lt_shared_path("fixtures/llama3.2-1b-instruct"), &c),
			 LOOM_OK);
	assert_string_equal(c.model_type, "llama");
	assert_int_equal(c.rope.kind, LOOM_ROPE_LLAMA3);
	assert_true(c.rope.factor == 32.0f && c.rope.orig_max == 8192);
	assert_true(c.rope.low_freq_factor == 1.0f && c.rope.high_freq_factor == 4.0f);
	assert_int_equal(c.max_ctx, 131072);
	assert_true(c.tied);
	assert_int_equal(c.n_eos, 3); /* generation_config.json: 128001, 128008, 128009 */
	assert_int_equal(c.eos_ids[2], 128009);
	assert_false(c.qkv_bias || c.o_bias || c.mlp_bias || c.qk_norm || c.sandwich_norms);
	assert_int_equal(c.window, 0);

	assert_int_equal(loom_model_config_load(lt_shared_path("fixtures/qwen2.5-0.5b-instruct"),
						&c), LOOM_OK);
	assert_string_equal(c.model_type, "qwen2");
	assert_true(c.qkv_bias && !c.o_bias && !c.mlp_bias && !c.qk_norm);
	assert_true(c.tied);
	assert_true(c.rope_theta == 1000000.0f);
	assert_int_equal(c.window, 0); /* use_sliding_window: false */
	for (int l = 0; l < c.n_layers; l++)
		assert_int_equal(loom_layer_window(&c, l), 0);
	assert_int_equal(c.act, LOOM_ACT_SILU);

	assert_int_equal(loom_model_config_load(
				 lt_shared_path("fixtures/mistral-7b-instruct-v0.2"), &c), LOOM_OK);
	assert_string_equal(c.model_type, "mistral");
	assert_int_equal(c.window, 0); /* sliding_window: null */
	assert_int_equal(c.max_ctx, 32768);
	assert_false(c.tied);

	assert_int_equal(loom_model_config_load(lt_shared_path("fixtures/gemma-2-2b-it"), &c),
			 LOOM_OK);
	assert_string_equal(c.model_type, "gemma2");
	assert_int_equal(c.head_dim, 256);
	assert_true(c.norm_plus_one && c.sandwich_norms && !c.qkv_bias);
	assert_int_equal(c.act, LOOM_ACT_GELU_TANH);
	assert_true(c.embed_scale == (float)sqrt(2304.0));
	assert_true(c.attn_scale == (float)(1.0 / sqrt(256.0)));
	assert_true(c.attn_softcap == 50.0f && c.final_softcap == 30.0f);
	assert_int_equal(c.window, 4096);
	assert_int_equal(loom_layer_window(&c, 0), 4096);
	assert_int_equal(loom_layer_window(&c, 1), 0);
	assert_int_equal(loom_layer_window(&c, 24), 4096);
	assert_int_equal(loom_layer_window(&c, 25), 0);
	assert_true(c.tied); /* Gemma2Config's default */
	assert_int_equal(c.n_eos, 2);
}

/* Qwen3, Qwen2 with windows, layer_types, rope kinds: written out. */
static void family_fields(void **state)
{
	(void)state;
	loom_model_config c;
	const char *qwen3 =
		"{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\","
		" \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 4,"
		" \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 32,"
		" \"vocab_size\": 32, \"attention_bias\": false, \"use_sliding_window\": true,"
		" \"sliding_window\": 8, \"max_window_layers\": 2, \"rope_theta\": 1000000}";
	assert_int_equal(loom_model_config_parse(qwen3, strlen(qwen3), "q/config.json", &c), LOOM_OK);
	assert_true(c.qk_norm && !c.qkv_bias);
	assert_int_equal(c.head_dim, 32);
	assert_int_equal(loom_layer_window(&c, 0), 0);
	assert_int_equal(loom_layer_window(&c, 1), 0);
	assert_int_equal(loom_layer_window(&c, 2), 8);
	assert_int_equal(loom_layer_window(&c, 3), 8);

	assert_int_equal(parse_with("attention_bias", "true", &c), LOOM_OK);
	assert_true(c.qkv_bias && c.o_bias && !c.mlp_bias);
	assert_int_equal(parse_with("mlp_bias", "true", &c), LOOM_OK);
	assert_true(c.mlp_bias);
	assert_int_equal(parse_with("rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}", &c),
			 LOOM_OK);
	assert_int_equal(c.rope.kind, LOOM_ROPE_LINEAR);
	assert_int_equal(c.max_ctx, 512); /* 256 * 2, as vLLM derives it */
	assert_int_equal(parse_with("rope_scaling", "{\"rope_type\": \"dynamic\", \"factor\": 4}",
				    &c), LOOM_OK);
	assert_int_equal(c.rope.kind, LOOM_ROPE_DYNAMIC);
	assert_int_equal(c.rope.orig_max, 256);
	assert_int_equal(parse_with("rope_scaling",
				    "{\"rope_type\": \"yarn\", \"factor\": 4.0, "
				    "\"original_max_position_embeddings\": 128}", &c), LOOM_OK);
	assert_int_equal(c.rope.kind, LOOM_ROPE_YARN);
	assert_int_equal(c.rope.orig_max, 128);
	assert_int_equal(c.max_ctx, 512);
	assert_true(fabsf(c.rope.attn_factor - (float)(0.1 * log(4.0) + 1.0)) < 1e-7f);
	assert_int_equal(parse_with("layer_types", "[\"sliding_attention\", \"full_attention\"]",
				    &c), LOOM_EINVAL); /* no sliding_window to use */
	assert_non_null(strstr(loom_errmsg(), "layer_types"));
}


static const struct bad_case {
	const char *name;
	const char *key;
	const char *value; /* JSON text, or NULL to delete key */
	loom_err rc;
	const char *word;  /* the field the message must name */
} bad_cases[] = {
	{ "hidden_missing", "hidden_size", NULL, LOOM_EFORMAT, "hidden_size" },
	{ "hidden_zero", "hidden_size", "0", LOOM_EINVAL, "hidden_size" },
	{ "hidden_negative", "hidden_size", "-64", LOOM_EINVAL, "hidden_size" },
	{ "hidden_string", "hidden_size", "\"64\"", LOOM_EFORMAT, "hidden_size" },
	{ "hidden_huge", "hidden_size", "99999999999", LOOM_EINVAL, "hidden_size" },
	{ "ffn_missing", "intermediate_size", NULL, LOOM_EFORMAT, "intermediate_size" },
	{ "layers_float", "num_hidden_layers", "1.5", LOOM_EFORMAT, "num_hidden_layers" },
	{ "heads_zero", "num_attention_heads", "0", LOOM_EINVAL, "num_attention_heads" },
	{ "vocab_missing", "vocab_size", NULL, LOOM_EFORMAT, "vocab_size" },
	{ "kv_zero", "num_key_value_heads", "0", LOOM_EINVAL, "num_key_value_heads" },
	{ "kv_not_dividing", "num_key_value_heads", "3", LOOM_EINVAL, "num_key_value_heads" },
	{ "hidden_not_dividing", "num_attention_heads", "6", LOOM_EINVAL, "num_attention_heads" },
	{ "head_dim_odd", "head_dim", "7", LOOM_EINVAL, "head_dim" },
	{ "ctx_zero", "max_position_embeddings", "0", LOOM_EINVAL, "max_position_embeddings" },
	{ "eps_string", "rms_norm_eps", "\"1e-5\"", LOOM_EFORMAT, "rms_norm_eps" },
	{ "eps_negative", "rms_norm_eps", "-1e-5", LOOM_EINVAL, "rms_norm_eps" },
	{ "theta_zero", "rope_theta", "0", LOOM_EINVAL, "rope_theta" },
	{ "tied_string", "tie_word_embeddings", "\"true\"", LOOM_EFORMAT, "tie_word_embeddings" },
	{ "eos_string", "eos_token_id", "\"2\"", LOOM_EFORMAT, "eos_token_id" },
	{ "eos_list_bad", "eos_token_id", "[2, \"x\"]", LOOM_EFORMAT, "eos_token_id" },
	{ "eos_too_many", "eos_token_id", "[1,2,3,4,5,6,7,8,9]", LOOM_ERANGE, "eos_token_id" },
	{ "eos_past_vocab", "eos_token_id", "512", LOOM_EINVAL, "eos_token_id" },
	{ "eos_negative", "eos_token_id", "-1", LOOM_EINVAL, "eos_token_id" },
	{ "bos_string", "bos_token_id", "\"1\"", LOOM_EFORMAT, "bos_token_id" },
	{ "model_type_gpt2", "model_type", "\"gpt2\"", LOOM_EUNSUPPORTED, "model_type" },
	{ "model_type_phi3", "model_type", "\"phi3\"", LOOM_EUNSUPPORTED, "model_type" },
	{ "model_type_vs_arch", "model_type", "\"qwen2\"", LOOM_EINVAL, "architectures" },
	{ "model_type_number", "model_type", "3", LOOM_EFORMAT, "model_type" },
	{ "arch_gpt2", "architectures", "[\"GPT2LMHeadModel\"]", LOOM_EUNSUPPORTED,
	  "architectures" },
	{ "arch_not_list", "architectures", "\"LlamaForCausalLM\"", LOOM_EFORMAT, "architectures" },
	{ "rope_longrope", "rope_scaling",
	  "{\"type\": \"longrope\", \"factor\": 2.0, \"short_factor\": [1], \"long_factor\": [1]}",
	  LOOM_EUNSUPPORTED, "rope_scaling.rope_type" },
	{ "rope_no_factor", "rope_scaling", "{\"rope_type\": \"linear\"}", LOOM_EFORMAT,
	  "rope_scaling.factor" },
	{ "rope_factor_neg", "rope_scaling", "{\"rope_type\": \"linear\", \"factor\": -2}",
	  LOOM_EINVAL, "rope_scaling.factor" },
	{ "rope_llama3_partial", "rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8}",
	  LOOM_EFORMAT, "rope_scaling.original_max_position_embeddings" },
	{ "rope_not_object", "rope_scaling", "2", LOOM_EFORMAT, "rope_scaling" },
	{ "partial_rotary", "partial_rotary_factor", "0.5", LOOM_EUNSUPPORTED,
	  "partial_rotary_factor" },
	{ "act_relu", "hidden_act", "\"relu\"", LOOM_EUNSUPPORTED, "hidden_act" },
	{ "act_number", "hidden_act", "1", LOOM_EFORMAT, "hidden_act" },
	{ "attention_bias_str", "attention_bias", "\"yes\"", LOOM_EFORMAT, "attention_bias" },
	{ "llama_window", "sliding_window", "4096", LOOM_EUNSUPPORTED, "sliding_window" },
	{ "llama_softcap", "final_logit_softcapping", "30.0", LOOM_EUNSUPPORTED,
	  "final_logit_softcapping" },
	{ "too_many_layers", "num_hidden_layers", "513", LOOM_EUNSUPPORTED, "num_hidden_layers" },
};

static void rejections(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
		const struct bad_case *b = &bad_cases[i];
		loom_model_config c;
		memset(&c, 0x5a, sizeof c);
		loom_err rc = parse_with(b->key, b->value, &c);
		const char *m = loom_errmsg();
		if (rc != b->rc || !strstr(m, b->word) || !strstr(m, "some/dir/config.json"))
			fail_msg("%s: got %s \"%s\"; wanted %s naming %s", b->name, loom_strerror(rc), m,
				 loom_strerror(b->rc), b->word);
		assert_int_equal(c.hidden, 0x5a5a5a5a); /* untouched on failure */
	}
	loom_model_config c;
	const char *arr = "[1, 2]", *broken = "{\"hidden_size\": ";
	assert_int_equal(loom_model_config_parse(arr, strlen(arr), "a/config.json", &c), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "a/config.json"));
	assert_int_equal(loom_model_config_parse(broken, strlen(broken), "b/config.json", &c),
			 LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "b/config.json"));
	/* both model_type and architectures absent */
	json_t *root = json_loads(base_json, 0, NULL);
	json_object_del(root, "model_type");
	json_object_del(root, "architectures");
	char *t = json_dumps(root, 0);
	assert_int_equal(loom_model_config_parse(t, strlen(t), "c/config.json", &c), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "model_type"));
	free(t);
	json_decref(root);
}

static void write_file(const char *dir, const char *name, const char *text)
{
	char p[1024];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void generation_config(void **state)
{
	(void)state;
	char *dir = lt_tmpdir("model-config");
	loom_model_config c;

	assert_int_equal(loom_model_config_load(dir, &c), LOOM_ENOTFOUND);
	assert_non_null(strstr(loom_errmsg(), "config.json"));

	write_file(dir, "config.json", base_json);
	write_file(dir, "generation_config.json", "{\"bos_token_id\": 1, \"eos_token_id\": [2, 7]}");
	assert_int_equal(loom_model_config_load(dir, &c), LOOM_OK);
	assert_int_equal(c.n_eos, 2);
	assert_int_equal(c.eos_ids[0], 2);
	assert_int_equal(c.eos_ids[1], 7);

	/* no eos there: config.json's stays */
	write_file(dir, "generation_config.json", "{\"temperature\": 0.7}");
	assert_int_equal(loom_model_config_load(dir, &c), LOOM_OK);
	assert_int_equal(c.n_eos, 1);
	assert_int_equal(c.eos_ids[0], 2);

	write_file(dir, "generation_config.json", "{\"eos_token_id\": \"2\"}");
	assert_int_equal(loom_model_config_load(dir, &c), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "generation_config.json"));
	assert_non_null(strstr(loom_errmsg(), "eos_token_id"));

	write_file(dir, "generation_config.json", "not json");
	assert_int_equal(loom_model_config_load(dir, &c), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "generation_config.json"));

	write_file(dir, "config.json", "{\"model_type\": \"llama\"}");
	assert_int_equal(loom_model_config_load(dir, &c), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "config.json"));
	assert_non_null(strstr(loom_errmsg(), "hidden_size"));
	lt_sh("rm -rf '%s'", dir);
	loom_free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(real_stories260k), cmocka_unit_test(real_babyllama105),
		cmocka_unit_test(defaults),	    cmocka_unit_test(rejections),
		cmocka_unit_test(generation_config), cmocka_unit_test(real_families),
		cmocka_unit_test(family_fields),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
