/* tests/common/test_bundle.c — model bundles: folder -> one image -> back. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/bundle.h"
#include "common/model_config.h"
#include "common/safetensors.h"
#include "tests/support/harness.h"

static char *tmp; /* this run's temp dir */

static const char *tpath(const char *name)
{
	static char buf[4][1024];
	static int k;
	char *b = buf[k++ % 4];
	snprintf(b, sizeof buf[0], "%s/%s", tmp, name);
	return b;
}

#define OK(expr)                                                                             \
	do {                                                                                  \
		loom_err rc_ = (expr);                                                        \
		if (rc_ != LOOM_OK)                                                           \
			fail_msg("%s: %s: %s", #expr, loom_strerror(rc_), loom_errmsg());     \
	} while (0)

static void mkmodel(const char *out, const char *args)
{
	assert_int_equal(lt_sh("'%s' model --out '%s' %s", lt_bin_path("loom-mkmodel"), out, args),
			 0);
}

static void write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void same_config(const loom_model_config *a, const loom_model_config *b)
{
	assert_int_equal(a->hidden, b->hidden);
	assert_int_equal(a->ffn, b->ffn);
	assert_int_equal(a->n_layers, b->n_layers);
	assert_int_equal(a->n_heads, b->n_heads);
	assert_int_equal(a->n_kv_heads, b->n_kv_heads);
	assert_int_equal(a->head_dim, b->head_dim);
	assert_int_equal(a->vocab, b->vocab);
	assert_int_equal(a->max_ctx, b->max_ctx);
	assert_true(a->rms_eps == b->rms_eps);
	assert_true(a->rope_theta == b->rope_theta);
	assert_int_equal(a->tied, b->tied);
	assert_int_equal(a->bos_id, b->bos_id);
	assert_int_equal(a->n_eos, b->n_eos);
	for (int i = 0; i < a->n_eos; i++)
		assert_int_equal(a->eos_ids[i], b->eos_ids[i]);
	assert_string_equal(a->model_type, b->model_type);
}

/* Bundles dir, opens the bundle (at a misaligned address too) and checks
 * every tensor of the folder byte for byte, the count, and the config. */
static void check_round_trip(const char *dir, int sharded, void **img, size_t *img_len)
{
	void *buf;
	size_t len;
	loom_st_file *b;
	loom_model_config cfg, want;

	OK(loom_bundle_from_dir(dir, &buf, &len));
	OK(loom_model_config_load(dir, &want));
	for (size_t shift = 0; shift < 2; shift++) {
		unsigned char *copy = loom_malloc(len + 1);
		assert_non_null(copy);
		memcpy(copy + shift, buf, len);
		OK(loom_bundle_open(copy + shift, len, "test bundle", &b, &cfg));
		same_config(&cfg, &want);
		assert_non_null(loom_st_meta(b, "loom.config"));

		/* every tensor of the folder is in the bundle, unchanged */
		size_t n_folder = 0;
		if (sharded) {
			loom_st_set *set;
			OK(loom_st_set_open(dir, &set));
			for (size_t i = 0; i < loom_st_count(b); i++) {
				const loom_tensor *t = loom_st_at(b, i), *o;
				assert_non_null(o = loom_st_set_find(set, t->name));
				assert_int_equal(o->dtype, t->dtype);
				assert_int_equal(o->ndim, t->ndim);
				for (int d = 0; d < o->ndim; d++)
					assert_int_equal(o->shape[d], t->shape[d]);
				assert_int_equal(o->nbytes, t->nbytes);
				assert_memory_equal(o->data, t->data, o->nbytes);
				n_folder++;
			}
			loom_st_set_close(set);
		} else {
			char path[1100];
			loom_st_file *o;
			snprintf(path, sizeof path, "%s/model.safetensors", dir);
			OK(loom_st_open(path, &o));
			n_folder = loom_st_count(o);
			for (size_t i = 0; i < n_folder; i++) {
				const loom_tensor *x = loom_st_at(o, i), *t;
				assert_non_null(t = loom_st_find(b, x->name));
				assert_int_equal(x->dtype, t->dtype);
				assert_int_equal(x->ndim, t->ndim);
				for (int d = 0; d < x->ndim; d++)
					assert_int_equal(x->shape[d], t->shape[d]);
				assert_int_equal(x->nbytes, t->nbytes);
				assert_memory_equal(x->data, t->data, x->nbytes);
			}
			loom_st_close(o);
		}
		assert_int_equal(loom_st_count(b), n_folder);
		assert_true(n_folder > 0);
		/* tensors in name order */
		for (size_t i = 1; i < loom_st_count(b); i++)
			assert_true(strcmp(loom_st_at(b, i - 1)->name, loom_st_at(b, i)->name) < 0);
		loom_st_close(b);
		loom_free(copy);
	}
	/* deterministic: the same folder gives the same bytes */
	void *again;
	size_t again_len;
	OK(loom_bundle_from_dir(dir, &again, &again_len));
	assert_int_equal(again_len, len);
	assert_memory_equal(again, buf, len);
	loom_free(again);
	if (img) {
		*img = buf;
		*img_len = len;
	} else {
		loom_free(buf);
	}
}

static void single_f16(void **state)
{
	(void)state;
	mkmodel(tpath("f16"), "--dtype f16 --layers 2");
	check_round_trip(tpath("f16"), 0, NULL, NULL);
}

static void sharded_bf16(void **state)
{
	(void)state;
	void *a, *b;
	size_t la, lb;
	mkmodel(tpath("bf16"), "--dtype bf16 --layers 3 --shards 3 --tied");
	check_round_trip(tpath("bf16"), 1, &a, &la);

	/* the same weights as one file give the same bundle (name order, not
	 * file order) */
	loom_st_set *set;
	loom_st_file *img;
	loom_model_config cfg;
	OK(loom_bundle_open(a, la, "a", &img, &cfg));
	size_t n = loom_st_count(img);
	loom_tensor *ts = loom_calloc(n, sizeof *ts);
	assert_non_null(ts);
	for (size_t i = 0; i < n; i++)
		ts[n - 1 - i] = *loom_st_at(img, i); /* reversed file order */
	assert_int_equal(lt_sh("mkdir -p '%s' && cp '%s/config.json' '%s/'", tpath("bf16-one"),
			       tpath("bf16"), tpath("bf16-one")),
			 0);
	char path[1100];
	snprintf(path, sizeof path, "%s/model.safetensors", tpath("bf16-one"));
	OK(loom_st_write(path, ts, n, NULL));
	loom_free(ts);
	loom_st_close(img);
	OK(loom_st_set_open(tpath("bf16-one"), &set)); /* sanity: a valid folder */
	loom_st_set_close(set);
	check_round_trip(tpath("bf16-one"), 0, &b, &lb);
	assert_int_equal(la, lb);
	assert_memory_equal(a, b, la);
	loom_free(a);
	loom_free(b);
}

static void real_model(void **state)
{
	(void)state;
	check_round_trip(lt_shared_path("models/stories260k"), 0, NULL, NULL);
}

/* generation_config.json travels in the bundle and overrides the EOS ids. */
static void generation_config(void **state)
{
	(void)state;
	void *buf;
	size_t len;
	loom_st_file *b;
	loom_model_config cfg;
	const char *dir = tpath("gen");

	mkmodel(dir, "--layers 1");
	char path[1100];
	snprintf(path, sizeof path, "%s/generation_config.json", dir);
	write_text(path, "{\"bos_token_id\": 1, \"eos_token_id\": [2, 7]}");
	check_round_trip(dir, 0, &buf, &len);
	OK(loom_bundle_open(buf, len, "gen", &b, &cfg));
	assert_int_equal(cfg.n_eos, 2);
	assert_int_equal(cfg.eos_ids[0], 2);
	assert_int_equal(cfg.eos_ids[1], 7);
	assert_non_null(strstr(loom_st_meta(b, "loom.generation_config"), "[2, 7]"));
	loom_st_close(b);
	loom_free(buf);
}

/* An image with the given metadata (NULL-terminated key, value list) and one
 * small tensor; *len its size. */
static void *image_with(const char *const *meta, size_t *len)
{
	float w[4] = { 1, 2, 3, 4 };
	loom_tensor t = { .name = "w", .dtype = LOOM_DT_F32, .ndim = 1, .shape = { 4 }, .data = w,
			  .nbytes = sizeof w };
	const char *path = tpath("img.safetensors");
	OK(loom_st_write(path, &t, 1, meta));
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	*len = (size_t)ftell(fp);
	fseek(fp, 0, SEEK_SET);
	void *b = loom_malloc(*len);
	assert_int_equal(fread(b, 1, *len, fp), *len);
	fclose(fp);
	return b;
}

static const char good_config[] =
	"{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": 64,"
	" \"intermediate_size\": 172, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
	" \"num_key_value_heads\": 2, \"vocab_size\": 512, \"hidden_act\": \"silu\"}";

static const struct bad_bundle {
	const char *name;
	const char *meta[5];
	loom_err rc;
	const char *word;
} bad_bundles[] = {
	{ "no metadata", { NULL }, LOOM_EFORMAT, "loom.config" },
	{ "other metadata", { "format", "pt", NULL }, LOOM_EFORMAT, "not a loom model bundle" },
	{ "config not json", { "loom.config", "{\"hidden_size\": ", NULL }, LOOM_EFORMAT,
	  "loom.config" },
	{ "config not object", { "loom.config", "[1]", NULL }, LOOM_EFORMAT, "loom.config" },
	{ "config gpt2",
	  { "loom.config", "{\"model_type\": \"gpt2\", \"architectures\": [\"GPT2LMHeadModel\"]}",
	    NULL },
	  LOOM_EUNSUPPORTED, "loom.config" },
	{ "generation not json", { "loom.config", good_config, "loom.generation_config", "{", NULL },
	  LOOM_EFORMAT, "loom.generation_config" },
	{ "generation eos past vocab",
	  { "loom.config", good_config, "loom.generation_config", "{\"eos_token_id\": 512}", NULL },
	  LOOM_EINVAL, "vocab" },
	{ "generation eos string",
	  { "loom.config", good_config, "loom.generation_config", "{\"eos_token_id\": \"2\"}", NULL },
	  LOOM_EFORMAT, "eos_token_id" },
};

static void bad_bundles_open(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof bad_bundles / sizeof *bad_bundles; i++) {
		const struct bad_bundle *c = &bad_bundles[i];
		size_t len;
		void *img = image_with(c->meta[0] ? c->meta : NULL, &len);
		loom_st_file *f = (loom_st_file *)0x1;
		loom_model_config cfg;
		loom_err rc = loom_bundle_open(img, len, "blob 0badc0de", &f, &cfg);
		if (rc != c->rc || !strstr(loom_errmsg(), "blob 0badc0de") ||
		    !strstr(loom_errmsg(), c->word))
			fail_msg("%s: got %s \"%s\", want %s mentioning \"%s\"", c->name,
				 loom_strerror(rc), loom_errmsg(), loom_strerror(c->rc), c->word);
		assert_null(f);
		loom_free(img);
	}
	/* the good config opens */
	const char *meta[] = { "loom.config", good_config, NULL };
	size_t len;
	void *img = image_with(meta, &len);
	loom_st_file *f;
	loom_model_config cfg;
	OK(loom_bundle_open(img, len, "good", &f, &cfg));
	assert_int_equal(cfg.hidden, 64);
	loom_st_close(f);
	/* not safetensors at all */
	memset(img, 0xff, len);
	assert_int_equal(loom_bundle_open(img, len, "junk", &f, &cfg), LOOM_EFORMAT);
	assert_null(f);
	assert_int_equal(loom_bundle_open(img, 3, "short", &f, &cfg), LOOM_EFORMAT);
	loom_free(img);
}

static void bad_folders(void **state)
{
	(void)state;
	void *buf = (void *)0x1;
	size_t len = 7;
	char path[1100];

	assert_int_equal(loom_bundle_from_dir(tpath("no-such-dir"), &buf, &len), LOOM_ENOTFOUND);
	assert_null(buf);
	assert_int_equal(len, 0);
	assert_non_null(strstr(loom_errmsg(), "config.json"));

	/* config but no weights */
	assert_int_equal(lt_sh("mkdir -p '%s'", tpath("noweights")), 0);
	snprintf(path, sizeof path, "%s/config.json", tpath("noweights"));
	write_text(path, good_config);
	assert_int_equal(loom_bundle_from_dir(tpath("noweights"), &buf, &len), LOOM_ENOTFOUND);
	assert_non_null(strstr(loom_errmsg(), "model.safetensors"));
	assert_null(buf);

	/* a bad config.json is refused before any weights are read */
	mkmodel(tpath("badcfg"), "--layers 1");
	snprintf(path, sizeof path, "%s/config.json", tpath("badcfg"));
	write_text(path, "{\"model_type\": \"llama\", \"hidden_size\": -4}");
	loom_err rc = loom_bundle_from_dir(tpath("badcfg"), &buf, &len);
	assert_true(rc == LOOM_EINVAL || rc == LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "config.json"));
	assert_null(buf);

	/* a broken generation_config.json too */
	mkmodel(tpath("badgen"), "--layers 1");
	snprintf(path, sizeof path, "%s/generation_config.json", tpath("badgen"));
	write_text(path, "{\"eos_token_id\": ");
	assert_int_equal(loom_bundle_from_dir(tpath("badgen"), &buf, &len), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "generation_config.json"));

	/* a shard the index names is missing */
	mkmodel(tpath("lostshard"), "--layers 2 --shards 2");
	assert_int_equal(lt_sh("rm '%s/model-00002-of-00002.safetensors'", tpath("lostshard")), 0);
	assert_int_equal(loom_bundle_from_dir(tpath("lostshard"), &buf, &len), LOOM_ENOTFOUND);
	assert_non_null(strstr(loom_errmsg(), "model-00002-of-00002.safetensors"));
	assert_null(buf);
}

/* Every allocation failure while bundling or opening is a clean ENOMEM. */
static void alloc_failures(void **state)
{
	(void)state;
	const char *dir = tpath("alloc");
	mkmodel(dir, "--layers 1 --shards 2");
	int built = 0, opened = 0;
	void *img = NULL;
	size_t len = 0;
	for (long n = 1; n < 2000 && !built; n++) {
		void *buf = NULL;
		size_t l = 0;
		loom_alloc_fail_after(n);
		loom_err rc = loom_bundle_from_dir(dir, &buf, &l);
		loom_alloc_fail_reset();
		if (rc == LOOM_OK) {
			built = 1;
			img = buf;
			len = l;
		} else {
			assert_int_equal(rc, LOOM_ENOMEM);
			assert_null(buf);
		}
	}
	assert_true(built);
	for (long n = 1; n < 2000 && !opened; n++) {
		loom_st_file *f = NULL;
		loom_model_config cfg;
		loom_alloc_fail_after(n);
		loom_err rc = loom_bundle_open(img, len, "alloc", &f, &cfg);
		loom_alloc_fail_reset();
		if (rc == LOOM_OK) {
			opened = 1;
			loom_st_close(f);
		} else {
			assert_int_equal(rc, LOOM_ENOMEM);
			assert_null(f);
		}
	}
	assert_true(opened);
	loom_free(img);
}

static int setup(void **state)
{
	(void)state;
	tmp = lt_tmpdir("test-bundle");
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
		cmocka_unit_test(single_f16),	     cmocka_unit_test(sharded_bf16),
		cmocka_unit_test(real_model),	     cmocka_unit_test(generation_config),
		cmocka_unit_test(bad_bundles_open),  cmocka_unit_test(bad_folders),
		cmocka_unit_test(alloc_failures),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
