/*
 * tools/mkmodel/mk_config.c — each family's defaults and config.json, and
 * the shapes of a base model read back for an adapter.
 *
 * The fields are those of the families' real configs (see
 * ../shared/fixtures/<model>/config.json) at loom-mkmodel's small shapes.
 * The llama family writes exactly the keys, in the order, it wrote before
 * --family existed, so old invocations give byte-identical folders; every
 * other family starts from the same keys and adds its own.
 */
#include <stdio.h>
#include <string.h>

#include "mk_model.h"

/* Defaults that depend on the family (anything 0 / unset in o). */
void mk_model_resolve(const mk_model_opts *in, mk_model_opts *o)
{
	const mk_family f = in->family;
	*o = *in;
	if (!o->tok_set && (f == MK_FAM_LLAMA3 || f == MK_FAM_QWEN2 || f == MK_FAM_QWEN3))
		o->tok = MK_TOK_BYTELEVEL;
	if (o->rope_theta == 0)
		o->rope_theta = f == MK_FAM_LLAMA3 ? 500000.0
			      : f == MK_FAM_QWEN2 || f == MK_FAM_QWEN3 || f == MK_FAM_MISTRAL ? 1e6
											: 10000.0;
	if (o->rms_eps == 0)
		o->rms_eps = f == MK_FAM_LLAMA || f == MK_FAM_LLAMA3 || f == MK_FAM_MISTRAL ? 1e-5 : 1e-6;
	if (f == MK_FAM_QWEN2 || f == MK_FAM_GEMMA2)
		o->tied = true;
	if (o->head_dim == 0 && o->heads > 0)
		o->head_dim = (f == MK_FAM_QWEN3 || f == MK_FAM_GEMMA2 ? 2 : 1) * o->hidden / o->heads;
	if (o->rope == MK_ROPE_NONE && f == MK_FAM_LLAMA3)
		o->rope = MK_ROPE_LLAMA3;
	if (o->rope_factor == 0)
		o->rope_factor = o->rope == MK_ROPE_LLAMA3 ? 8.0 : 4.0;
	if (o->rope_orig_max == 0)
		o->rope_orig_max = 32;
	if (o->sliding_window == 0 && (f == MK_FAM_MISTRAL || f == MK_FAM_GEMMA2))
		o->sliding_window = 16;
	if (o->max_window_layers < 0)
		o->max_window_layers = o->sliding_window ? o->layers / 2 : o->layers;
}

static json_t *rope_scaling(const mk_model_opts *o)
{
	static const char *const names[] = { "default", "linear", "dynamic", "yarn", "llama3" };
	json_t *r = json_object();
	json_object_set_new(r, "rope_type", json_string(names[o->rope]));
	json_object_set_new(r, "factor", json_real(o->rope_factor));
	if (o->rope == MK_ROPE_LLAMA3) {
		json_object_set_new(r, "low_freq_factor", json_real(1.0));
		json_object_set_new(r, "high_freq_factor", json_real(4.0));
	}
	/* linear ignores it; dynamic (HF) scales from max_position_embeddings,
	 * which the caller keeps equal to it when crossing it matters */
	json_object_set_new(r, "original_max_position_embeddings", json_integer(o->rope_orig_max));
	return r;
}

static json_t *eos_value(const int32_t *eos, int n_eos)
{
	if (n_eos == 1)
		return json_integer(eos[0]);
	json_t *a = json_array();
	for (int i = 0; i < n_eos; i++)
		json_array_append_new(a, json_integer(eos[i]));
	return a;
}

static const char *torch_dtype(loom_dtype dt)
{
	return dt == LOOM_DT_F16 ? "float16" : dt == LOOM_DT_BF16 ? "bfloat16" : "float32";
}

json_t *mk_config_json(const mk_model_opts *o, int32_t bos, const int32_t *eos, int n_eos)
{
	static const char *const arch[] = { "LlamaForCausalLM", "LlamaForCausalLM",
					    "Qwen2ForCausalLM", "Qwen3ForCausalLM",
					    "MistralForCausalLM", "Gemma2ForCausalLM" };
	static const char *const type[] = { "llama", "llama", "qwen2", "qwen3", "mistral", "gemma2" };
	const mk_family f = o->family;
	const bool gemma = f == MK_FAM_GEMMA2, qwen = f == MK_FAM_QWEN2 || f == MK_FAM_QWEN3;
	json_t *c = json_object();
	if (!c)
		return NULL;

	json_object_set_new(c, "architectures", json_pack("[s]", arch[f]));
	json_object_set_new(c, "model_type", json_string(type[f]));
	json_object_set_new(c, "hidden_size", json_integer(o->hidden));
	json_object_set_new(c, "intermediate_size", json_integer(o->ffn));
	json_object_set_new(c, "num_hidden_layers", json_integer(o->layers));
	json_object_set_new(c, "num_attention_heads", json_integer(o->heads));
	json_object_set_new(c, "num_key_value_heads", json_integer(o->kv_heads));
	json_object_set_new(c, "vocab_size", json_integer(o->vocab));
	json_object_set_new(c, "max_position_embeddings", json_integer(o->ctx));
	json_object_set_new(c, "rms_norm_eps", json_real(o->rms_eps));
	json_object_set_new(c, "rope_theta", json_real(o->rope_theta));
	json_object_set_new(c, "hidden_act", json_string(gemma ? "gelu_pytorch_tanh" : "silu"));
	json_object_set_new(c, "tie_word_embeddings", json_boolean(o->tied));
	if (bos >= 0)
		json_object_set_new(c, "bos_token_id", json_integer(bos));
	if (n_eos > 0)
		json_object_set_new(c, "eos_token_id", eos_value(eos, n_eos));
	json_object_set_new(c, "torch_dtype", json_string(torch_dtype(o->dtype)));

	/* what the plain llama family wrote ends here */
	if (o->head_dim * o->heads != o->hidden || f == MK_FAM_LLAMA3 || f == MK_FAM_QWEN3 || gemma)
		json_object_set_new(c, "head_dim", json_integer(o->head_dim));
	if (f != MK_FAM_LLAMA || o->attn_bias)
		if (f != MK_FAM_QWEN2 && f != MK_FAM_MISTRAL)
			json_object_set_new(c, "attention_bias", json_boolean(o->attn_bias));
	if ((f == MK_FAM_LLAMA || f == MK_FAM_LLAMA3) && (f == MK_FAM_LLAMA3 || o->mlp_bias))
		json_object_set_new(c, "mlp_bias", json_boolean(o->mlp_bias));
	if (o->rope != MK_ROPE_NONE)
		json_object_set_new(c, "rope_scaling", rope_scaling(o));
	else if (qwen)
		json_object_set_new(c, "rope_scaling", json_null());
	if (f != MK_FAM_LLAMA && f != MK_FAM_LLAMA3)
		json_object_set_new(c, "attention_dropout", json_real(0.0));
	if (qwen) {
		/* HF: sliding_window counts only with use_sliding_window, on
		 * layers >= max_window_layers; off, the real configs still
		 * carry a window (Qwen2.5: = max_position_embeddings) */
		json_object_set_new(c, "use_sliding_window", json_boolean(o->sliding_window > 0));
		json_object_set_new(c, "sliding_window",
				    json_integer(o->sliding_window ? o->sliding_window : o->ctx));
		json_object_set_new(c, "max_window_layers", json_integer(o->max_window_layers));
	} else if (f == MK_FAM_MISTRAL || gemma) {
		if (o->sliding_window > 0)
			json_object_set_new(c, "sliding_window", json_integer(o->sliding_window));
		else
			json_object_set_new(c, "sliding_window", json_null());
	}
	if (gemma) {
		json_object_set_new(c, "hidden_activation", json_string("gelu_pytorch_tanh"));
		/* deliberately != head_dim, so a forward that scales by
		 * 1/sqrt(head_dim) is caught */
		json_object_set_new(c, "query_pre_attn_scalar", json_integer(o->head_dim * 3 / 4));
		json_object_set_new(c, "attn_logit_softcapping", json_real(50.0));
		json_object_set_new(c, "final_logit_softcapping", json_real(30.0));
		json_object_set_new(c, "cache_implementation", json_string("hybrid"));
	}
	return c;
}

/* ---- reading a base model's shapes back ---- */

static loom_err get_int(const char *path, json_t *root, const char *key, int dflt, int *out)
{
	json_t *v = json_object_get(root, key);
	if (!v || json_is_null(v)) {
		if (dflt < 0)
			return loom_fail(LOOM_EFORMAT, "%s: \"%s\" missing", path, key);
		*out = dflt;
		return LOOM_OK;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > (1 << 24))
		return loom_fail(LOOM_EFORMAT, "%s: \"%s\" is not a positive integer", path, key);
	*out = (int)json_integer_value(v);
	return LOOM_OK;
}

loom_err mk_base_shape_load(const char *dir, mk_base_shape *s)
{
	char path[4200];
	json_error_t e;
	loom_err rc;

	snprintf(path, sizeof path, "%s/config.json", dir);
	json_t *root = json_load_file(path, 0, &e);
	if (!root)
		return loom_fail(LOOM_EIO, "%s: %s", path, e.text);
	if (!json_is_object(root)) {
		json_decref(root);
		return loom_fail(LOOM_EFORMAT, "%s: not a JSON object", path);
	}
	memset(s, 0, sizeof *s);
	if (!(rc = get_int(path, root, "hidden_size", -1, &s->hidden)) &&
	    !(rc = get_int(path, root, "intermediate_size", -1, &s->ffn)) &&
	    !(rc = get_int(path, root, "num_hidden_layers", -1, &s->layers)) &&
	    !(rc = get_int(path, root, "num_attention_heads", -1, &s->heads)) &&
	    !(rc = get_int(path, root, "num_key_value_heads", s->heads, &s->kv_heads)))
		rc = get_int(path, root, "head_dim", s->hidden / s->heads, &s->head_dim);
	json_decref(root);
	return rc;
}
