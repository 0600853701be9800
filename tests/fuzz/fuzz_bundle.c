/*
 * tests/fuzz/fuzz_bundle.c — loom_bundle_open (common/bundle.h) on any
 * bytes: a model bundle is a store blob a worker may receive from the
 * gateway, so it is parsed as untrusted (safetensors image + the config
 * JSON in its metadata).
 *
 * Invariants on success: the config is one a worker can size buffers from
 * (positive sizes, heads dividing, EOS ids in range of count), and the
 * image passes the safetensors walk (fuzz_st.h).
 */
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/bundle.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_st.h"

static void fuzz_bundle_check_config(const loom_model_config *c)
{
	FUZZ_CHECK(c->hidden > 0 && c->ffn > 0 && c->n_layers > 0 && c->n_heads > 0 &&
			   c->n_kv_heads > 0 && c->head_dim > 0 && c->vocab > 0 && c->max_ctx > 0,
		   "non-positive size: hidden %d ffn %d layers %d heads %d kv %d head_dim %d "
		   "vocab %d ctx %d",
		   c->hidden, c->ffn, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab,
		   c->max_ctx);
	FUZZ_CHECK(c->n_heads % c->n_kv_heads == 0, "kv heads %d do not divide heads %d",
		   c->n_kv_heads, c->n_heads);
	FUZZ_CHECK(c->n_eos >= 0 && c->n_eos <= LOOM_MAX_EOS, "n_eos %d", c->n_eos);
	FUZZ_CHECK(memchr(c->model_type, '\0', sizeof c->model_type) != NULL,
		   "model_type not terminated");
}

int fuzz_bundle(const uint8_t *data, size_t size)
{
	unsigned char *copy;
	const unsigned char *buf = fuzz_st_place(data, size, &copy);
	loom_st_file *f = NULL;
	loom_model_config cfg;
	loom_err rc;

	memset(&cfg, 0, sizeof cfg);
	rc = loom_bundle_open(buf, size, "fuzz-bundle", &f, &cfg);
	if (rc == LOOM_OK) {
		fuzz_accepted = 1;
		fuzz_bundle_check_config(&cfg);
		fuzz_st_walk(f, buf, size);
		FUZZ_CHECK(loom_st_meta(f, "loom.config") != NULL, "bundle without loom.config");
		loom_st_close(f);
	} else {
		FUZZ_CHECK(f == NULL, "error %d but *f set", rc);
		FUZZ_CHECK(loom_errmsg()[0] != '\0', "error %d without a message", rc);
	}
	free(copy);
	return 0;
}

/* ---- seeds: bundles of small folders (real configs, tiny tensors) ---- */

/* Makes folder tag with config.json = config (and generation_config.json
 * when gen), two tiny tensors of dtype dt, bundles it and adds the bundle. */
static void fuzz_bundle_seed(fuzz_seeds *s, const char *tag, const char *config, size_t config_len,
			     const char *gen, loom_dtype dt)
{
	static const uint16_t h[6] = { 0x3c00, 0x4000, 0x4200, 0x3f80, 0x0000, 0xbc00 };
	static const float f[6] = { 1, 2, 3, 4, 5, 6 };
	char dir[512], path[1024];
	loom_tensor t[2];
	void *b;
	size_t n;

	snprintf(dir, sizeof dir, "%s/bundle-%s", fuzz_tmpdir(), tag);
	if (mkdir(dir, 0755) != 0 && errno != EEXIST)
		abort();
	snprintf(path, sizeof path, "%s/config.json", dir);
	fuzz_write_file(path, config, config_len);
	if (gen) {
		snprintf(path, sizeof path, "%s/generation_config.json", dir);
		fuzz_write_file(path, gen, strlen(gen));
	}
	memset(t, 0, sizeof t);
	t[0] = (loom_tensor){ .name = "model.norm.weight", .dtype = dt, .ndim = 1, .shape = { 3 },
			      .data = dt == LOOM_DT_F32 ? (const void *)f : (const void *)h,
			      .nbytes = 3 * loom_dtype_size(dt) };
	t[1] = (loom_tensor){ .name = "lm_head.weight", .dtype = dt, .ndim = 2, .shape = { 1, 3 },
			      .data = dt == LOOM_DT_F32 ? (const void *)(f + 3) : (const void *)(h + 3),
			      .nbytes = 3 * loom_dtype_size(dt) };
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	if (loom_st_write(path, t, 2, NULL) || loom_bundle_from_dir(dir, &b, &n)) {
		fprintf(stderr, "fuzz_bundle: seed %s: %s\n", tag, loom_errmsg());
		abort();
	}
	fuzz_seed_add(s, b, n);
	loom_free(b);
}

void fuzz_bundle_seeds(fuzz_seeds *s)
{
	static const char *const real[] = { "models/stories260k/config.json",
					     "models/babyllama105/config.json",
					     "fixtures/tinyllama-v0-tokenizer/config.json" };
	static const char mistral[] =
		"{\"architectures\": [\"MistralForCausalLM\"], \"model_type\": \"mistral\","
		" \"hidden_size\": 64, \"intermediate_size\": 172, \"num_hidden_layers\": 2,"
		" \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16,"
		" \"vocab_size\": 512, \"hidden_act\": \"silu\", \"sliding_window\": 256,"
		" \"max_position_embeddings\": 4096, \"rope_theta\": 1e6, \"rms_norm_eps\": 1e-5,"
		" \"eos_token_id\": [2, 7], \"bos_token_id\": null, \"tie_word_embeddings\": false}";

	for (size_t i = 0; i < sizeof real / sizeof real[0]; i++) {
		size_t n;
		char tag[16];
		char *text = fuzz_read_file(fuzz_shared_path(real[i]), &n);
		if (!text) {
			fprintf(stderr, "fuzz_bundle: cannot read %s\n", fuzz_shared_path(real[i]));
			abort();
		}
		snprintf(tag, sizeof tag, "real%zu", i);
		fuzz_bundle_seed(s, tag, text, n, i == 0 ? NULL : "{\"eos_token_id\": [2, 3]}",
				 i == 1 ? LOOM_DT_BF16 : LOOM_DT_F32);
		free(text);
	}
	fuzz_bundle_seed(s, "mistral", mistral, strlen(mistral), "{\"eos_token_id\": 5}",
			 LOOM_DT_F16);
}

const fuzz_word fuzz_bundle_dict[] = {
	FUZZ_W("\"loom.config\""), FUZZ_W("\"loom.generation_config\""), FUZZ_W("\"__metadata__\""),
	FUZZ_W("\"architectures\""), FUZZ_W("\"model_type\""), FUZZ_W("\"llama\""),
	FUZZ_W("\"mistral\""), FUZZ_W("\"hidden_size\""), FUZZ_W("\"intermediate_size\""),
	FUZZ_W("\"num_hidden_layers\""), FUZZ_W("\"num_attention_heads\""),
	FUZZ_W("\"num_key_value_heads\""), FUZZ_W("\"head_dim\""), FUZZ_W("\"vocab_size\""),
	FUZZ_W("\"max_position_embeddings\""), FUZZ_W("\"rms_norm_eps\""), FUZZ_W("\"rope_theta\""),
	FUZZ_W("\"rope_scaling\""), FUZZ_W("\"hidden_act\""), FUZZ_W("\"silu\""),
	FUZZ_W("\"sliding_window\""), FUZZ_W("\"tie_word_embeddings\""), FUZZ_W("\"bos_token_id\""),
	FUZZ_W("\"eos_token_id\""), FUZZ_W("\"attention_bias\""), FUZZ_W("\"mlp_bias\""),
	FUZZ_W("\\\""), FUZZ_W("\\\\"), FUZZ_W("\\u0000"), FUZZ_W("-1"), FUZZ_W("0"),
	FUZZ_W("2147483648"), FUZZ_W("1e400"), FUZZ_W("null"), FUZZ_W("[]"), FUZZ_W("{}"),
	FUZZ_W("true"),
	{ NULL, 0 },
};
