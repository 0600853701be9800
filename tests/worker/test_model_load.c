/*
 * tests/worker/test_model_load.c — wk_model_load on good and broken folders.
 *
 * Each case writes a tiny LLaMA folder (config.json + model.safetensors, or
 * shards with an index) into a temp dir, with one thing wrong or one variant
 * to accept, and checks the loaded floats or the error: a non-zero loom_err
 * whose message names the file and, where one is at fault, the tensor.
 * wk_model_load_bundle: the bundle of a folder (and of the real
 * stories260k) loads the same floats as the folder; a cut bundle is an
 * error naming the bundle; wk_model_weight_bytes bounds the arenas.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/bundle.h"
#include "common/dtype.h"
#include "common/safetensors.h"
#include "tests/support/harness.h"
#include "worker/model.h"

/* tiny shapes: d 8, ffn 12, 2 layers, 2 heads of 4, 1 kv head, vocab 16 */
#define ANY_ERR (-1)

enum { D = 8, F = 12, NL = 2, NH = 2, HD = 4, NKV = 1, V = 16, MAXT = 3 + 9 * NL };

typedef struct spec {
	const char *label;
	loom_dtype dtype;        /* of every tensor */
	int tied;                /* tie_word_embeddings in config.json */
	int write_lm_head;       /* lm_head.weight in the file */
	const char *drop;        /* tensor left out */
	const char *reshape;     /* tensor written transposed ([in,out]) */
	const char *int_tensor;  /* tensor written as I32 */
	int truncate;            /* cut the safetensors file short */
	int shards;              /* write two shards + model.safetensors.index.json */
	const char *config;      /* config.json text override */
	/* expected: LOOM_OK, a code, or ANY_ERR (the code is another module's choice) */
	int rc;
	const char *msg1, *msg2; /* substrings of loom_errmsg() */
} spec;

typedef struct tw {
	char name[96];
	int64_t rows, cols;
	float *f; /* values as float32 */
} tw;

static int n_tw;
static tw tws[MAXT + 1];

static void add(const char *name, int64_t rows, int64_t cols)
{
	tw *t = &tws[n_tw++];
	snprintf(t->name, sizeof t->name, "%s", name);
	t->rows = rows;
	t->cols = cols;
	size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
	t->f = malloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++) /* exact in F16 and BF16: multiples of 1/16 */
		t->f[i] = (float)((int)((i * 7 + (size_t)n_tw * 13) % 33) - 16) / 16.0f;
}

static void build_tensors(void)
{
	n_tw = 0;
	add("model.embed_tokens.weight", V, D);
	add("model.norm.weight", D, 0);
	add("lm_head.weight", V, D);
	for (int l = 0; l < NL; l++) {
		char nm[96];
#define L(suffix, r, c)                                                \
	snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix);     \
	add(nm, r, c)
		L("input_layernorm.weight", D, 0);
		L("self_attn.q_proj.weight", NH * HD, D);
		L("self_attn.k_proj.weight", NKV * HD, D);
		L("self_attn.v_proj.weight", NKV * HD, D);
		L("self_attn.o_proj.weight", D, NH * HD);
		L("post_attention_layernorm.weight", D, 0);
		L("mlp.gate_proj.weight", F, D);
		L("mlp.up_proj.weight", F, D);
		L("mlp.down_proj.weight", D, F);
#undef L
	}
}

static void free_tensors(void)
{
	for (int i = 0; i < n_tw; i++)
		free(tws[i].f);
	n_tw = 0;
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void write_config(const char *dir, const spec *sp)
{
	char path[512], text[1024];
	snprintf(path, sizeof path, "%s/config.json", dir);
	if (sp->config) {
		write_text(path, sp->config);
		return;
	}
	snprintf(text, sizeof text,
		 "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\","
		 "\"hidden_size\":%d,\"intermediate_size\":%d,\"num_hidden_layers\":%d,"
		 "\"num_attention_heads\":%d,\"num_key_value_heads\":%d,\"vocab_size\":%d,"
		 "\"max_position_embeddings\":64,\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,"
		 "\"tie_word_embeddings\":%s,\"bos_token_id\":1,\"eos_token_id\":2}",
		 D, F, NL, NH, NKV, V, sp->tied ? "true" : "false");
	write_text(path, text);
}

/* Writes tensors [from, to) of the list to path, applying the spec's faults. */
static void write_st(const char *path, const spec *sp, int from, int to, char *index,
		     size_t index_cap, const char *file)
{
	loom_tensor ts[MAXT] = {0};
	void *bufs[MAXT] = {0};
	int n = 0;
	for (int i = from; i < to; i++) {
		tw *t = &tws[i];
		if (sp->drop && !strcmp(t->name, sp->drop))
			continue;
		if (!sp->write_lm_head && !strcmp(t->name, "lm_head.weight"))
			continue;
		loom_tensor *o = &ts[n];
		memset(o, 0, sizeof *o);
		o->name = t->name;
		o->dtype = sp->int_tensor && !strcmp(t->name, sp->int_tensor) ? LOOM_DT_I32
									       : sp->dtype;
		o->ndim = t->cols ? 2 : 1;
		o->shape[0] = t->rows;
		o->shape[1] = t->cols;
		if (sp->reshape && !strcmp(t->name, sp->reshape)) {
			o->shape[0] = t->cols;
			o->shape[1] = t->rows;
		}
		size_t numel = (size_t)t->rows * (size_t)(t->cols ? t->cols : 1);
		o->nbytes = numel * loom_dtype_size(o->dtype);
		bufs[n] = calloc(1, o->nbytes);
		if (o->dtype != LOOM_DT_I32)
			assert_int_equal(loom_from_f32(bufs[n], t->f, o->dtype, numel), 0);
		o->data = bufs[n];
		if (index) {
			size_t len = strlen(index);
			snprintf(index + len, index_cap - len, "%s\"%s\":\"%s\"",
				 strchr(index, ':') ? "," : "", t->name, file);
		}
		n++;
	}
	loom_err rc = loom_st_write(path, ts, (size_t)n, NULL);
	if (rc) {
		print_error("loom_st_write %s: %s\n", path, loom_errmsg());
		fail();
	}
	for (int i = 0; i < n; i++)
		free(bufs[i]);
}

static void make_folder(const char *dir, const spec *sp)
{
	char path[512];
	build_tensors();
	write_config(dir, sp);
	if (!sp->shards) {
		snprintf(path, sizeof path, "%s/model.safetensors", dir);
		write_st(path, sp, 0, n_tw, NULL, 0, NULL);
		if (sp->truncate)
			assert_int_equal(lt_sh("truncate -s -100 '%s'", path), 0);
		return;
	}
	char index[8192] = "";
	int half = n_tw / 2;
	snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
	write_st(path, sp, 0, half, index, sizeof index, "model-00001-of-00002.safetensors");
	snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
	write_st(path, sp, half, n_tw, index, sizeof index, "model-00002-of-00002.safetensors");
	char text[9000];
	snprintf(text, sizeof text, "{\"metadata\":{},\"weight_map\":{%s}}", index);
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
	write_text(path, text);
}

/* Each loaded array equals the written values (exact: they fit every dtype). */
static void check_values(const wk_model *m, const spec *sp)
{
	const float *got[MAXT];
	got[0] = m->embed;
	got[1] = m->final_norm;
	got[2] = m->lm_head;
	for (int l = 0; l < NL; l++) {
		const wk_layer *L = &m->layers[l];
		const float *p[] = {L->attn_norm, L->wq, L->wk, L->wv, L->wo,
				    L->ffn_norm, L->w_gate, L->w_up, L->w_down};
		for (int i = 0; i < 9; i++)
			got[3 + 9 * l + i] = p[i];
	}
	for (int i = 0; i < n_tw; i++) {
		const float *want = tws[i].f;
		if (i == 2 && sp->tied) {
			assert_ptr_equal(m->lm_head, m->embed);
			continue;
		}
		size_t n = (size_t)tws[i].rows * (size_t)(tws[i].cols ? tws[i].cols : 1);
		assert_memory_equal(got[i], want, n * sizeof(float));
	}
}

static void run_case(void **state)
{
	const spec *sp = *state;
	char *dir = lt_tmpdir("model_load");
	make_folder(dir, sp);
	wk_model *m = (wk_model *)0x1;
	loom_err rc = wk_model_load(dir, sp->label, &m);
	if (sp->rc == ANY_ERR ? rc == LOOM_OK : (int)rc != sp->rc) {
		print_error("%s: rc %s (%s), expected %s\n", sp->label, loom_strerror(rc),
			    loom_errmsg(), sp->rc == ANY_ERR ? "an error" : loom_strerror(sp->rc));
		fail();
	}
	if (rc == LOOM_OK) {
		assert_string_equal(m->name, sp->label);
		assert_int_equal(m->cfg.hidden, D);
		check_values(m, sp);
		wk_model_destroy(m);
	} else {
		assert_null(m);
		const char *msg = loom_errmsg();
		printf("  %-22s -> %s: %s\n", sp->label, loom_strerror(rc), msg);
		if ((sp->msg1 && !strstr(msg, sp->msg1)) || (sp->msg2 && !strstr(msg, sp->msg2))) {
			print_error("%s: message \"%s\" lacks \"%s\" / \"%s\"\n", sp->label, msg,
				    sp->msg1, sp->msg2 ? sp->msg2 : "");
			fail();
		}
	}
	free_tensors();
	lt_sh("rm -rf '%s'", dir);
	loom_free(dir);
}

/* Every allocation failing in turn: a clean LOOM_ENOMEM-style error, no leak, no crash. */
static void test_alloc_failures(void **state)
{
	(void)state;
	static const spec sp = {.label = "alloc", .dtype = LOOM_DT_BF16, .tied = 1};
	char *dir = lt_tmpdir("model_alloc");
	make_folder(dir, &sp);
	int ok_at = 0;
	for (long n = 1; n < 200 && !ok_at; n++) {
		wk_model *m = NULL;
		loom_alloc_fail_after(n);
		loom_err rc = wk_model_load(dir, "alloc", &m);
		loom_alloc_fail_reset();
		if (rc == LOOM_OK) {
			ok_at = (int)n;
			wk_model_destroy(m);
		} else {
			assert_null(m);
			assert_true(loom_errmsg()[0] != '\0');
		}
	}
	assert_true(ok_at > 1);
	free_tensors();
	lt_sh("rm -rf '%s'", dir);
	loom_free(dir);
}

static void assert_same_model(const wk_model *a, const wk_model *b)
{
	assert_int_equal(a->arena_bytes, b->arena_bytes);
	/* the budget's figure bounds the float32 arena plus the packed copies
	 * (equal for a float32 model) */
	assert_true(a->arena_bytes + a->pk_bytes <= wk_model_weight_bytes(&a->cfg));
	assert_int_equal(a->pk_bytes, b->pk_bytes);
	assert_memory_equal(a->arena, b->arena, a->arena_bytes);
	assert_memory_equal(a->pk_arena, b->pk_arena, a->pk_bytes);
	assert_int_equal(a->cfg.vocab, b->cfg.vocab);
	assert_int_equal(a->cfg.n_layers, b->cfg.n_layers);
	assert_int_equal(a->cfg.tied, b->cfg.tied);
	assert_true((a->lm_head == a->embed) == (b->lm_head == b->embed));
}

/* A bundle loads what its folder loads; every cut of it is an error. */
static void test_bundle(void **state)
{
	(void)state;
	static const spec sp = {.label = "bundle", .dtype = LOOM_DT_BF16, .write_lm_head = 1,
				.shards = 1};
	char *dir = lt_tmpdir("model_bundle");
	wk_model *f = NULL, *b = NULL;
	void *buf;
	size_t len;

	make_folder(dir, &sp);
	assert_int_equal(wk_model_load(dir, "m", &f), LOOM_OK);
	assert_int_equal(loom_bundle_from_dir(dir, &buf, &len), LOOM_OK);
	assert_int_equal(wk_model_load_bundle(buf, len, "m", &b), LOOM_OK);
	assert_string_equal(b->name, "m");
	assert_same_model(f, b);
	wk_model_destroy(b);
	for (size_t cut = 0; cut < len; cut += len / 97 + 1) {
		b = (wk_model *)1;
		assert_true(wk_model_load_bundle(buf, cut, "cut", &b) != LOOM_OK);
		assert_null(b);
		assert_non_null(strstr(loom_errmsg(), "cut"));
	}
	wk_model_destroy(f);
	loom_free(buf);
	free_tensors();
	/* the real model */
	assert_int_equal(wk_model_load(lt_shared_path("models/stories260k"), "s", &f), LOOM_OK);
	assert_int_equal(loom_bundle_from_dir(lt_shared_path("models/stories260k"), &buf, &len),
			 LOOM_OK);
	assert_int_equal(wk_model_load_bundle(buf, len, "s", &b), LOOM_OK);
	assert_same_model(f, b);
	wk_model_destroy(b);
	wk_model_destroy(f);
	loom_free(buf);
	lt_sh("rm -rf '%s'", dir);
	loom_free(dir);
}

#define W(l, s) "model.layers." #l "." s
static const spec cases[] = {
	{.label = "f32 tied", .dtype = LOOM_DT_F32, .tied = 1},
	{.label = "f16 untied", .dtype = LOOM_DT_F16, .write_lm_head = 1},
	{.label = "bf16 tied, extra head", .dtype = LOOM_DT_BF16, .tied = 1, .write_lm_head = 1},
	{.label = "bf16 sharded", .dtype = LOOM_DT_BF16, .write_lm_head = 1, .shards = 1},
	{.label = "truncated file", .dtype = LOOM_DT_F32, .tied = 1, .truncate = 1,
	 .rc = ANY_ERR, .msg1 = "model.safetensors"},
	{.label = "missing tensor", .dtype = LOOM_DT_F32, .tied = 1,
	 .drop = W(1, "mlp.up_proj.weight"), .rc = LOOM_ENOTFOUND,
	 .msg1 = "model.safetensors", .msg2 = W(1, "mlp.up_proj.weight")},
	{.label = "missing in shard", .dtype = LOOM_DT_F16, .tied = 1, .shards = 1,
	 .drop = W(0, "self_attn.k_proj.weight"), .rc = LOOM_ENOTFOUND,
	 .msg2 = W(0, "self_attn.k_proj.weight")},
	{.label = "untied, no lm_head", .dtype = LOOM_DT_F32, .rc = LOOM_ENOTFOUND,
	 .msg1 = "model.safetensors", .msg2 = "lm_head.weight"},
	{.label = "wrong shape", .dtype = LOOM_DT_F32, .tied = 1,
	 .reshape = W(1, "mlp.up_proj.weight"), .rc = LOOM_EFORMAT,
	 .msg1 = "model.safetensors: tensor " W(1, "mlp.up_proj.weight"),
	 .msg2 = "has shape [8,12], expected [12,8]"},
	{.label = "int tensor", .dtype = LOOM_DT_F32, .tied = 1,
	 .int_tensor = W(0, "self_attn.o_proj.weight"), .rc = LOOM_EUNSUPPORTED,
	 .msg1 = "model.safetensors", .msg2 = W(0, "self_attn.o_proj.weight")},
	{.label = "config not json", .dtype = LOOM_DT_F32, .tied = 1, .config = "{\"hidden_size\":",
	 .rc = ANY_ERR, .msg1 = "config.json"},
	{.label = "config wrong sizes", .dtype = LOOM_DT_F32, .tied = 1,
	 .config = "{\"model_type\":\"llama\",\"architectures\":[\"LlamaForCausalLM\"],"
		   "\"hidden_size\":8,\"intermediate_size\":12,\"num_hidden_layers\":2,"
		   "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"vocab_size\":17,"
		   "\"tie_word_embeddings\":true}",
	 .rc = LOOM_EFORMAT, .msg1 = "model.safetensors", .msg2 = "model.embed_tokens.weight"},
};
#undef W

int main(void)
{
	struct CMUnitTest tests[sizeof cases / sizeof cases[0] + 2];
	size_t n = 0;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		tests[n] = (struct CMUnitTest){cases[i].label, run_case, NULL, NULL,
					       (void *)&cases[i]};
		n++;
	}
	tests[n++] = (struct CMUnitTest){"alloc failures", test_alloc_failures, NULL, NULL, NULL};
	tests[n++] = (struct CMUnitTest){"bundle", test_bundle, NULL, NULL, NULL};
	return _cmocka_run_group_tests("worker/model_load", tests, n, NULL, NULL);
}
