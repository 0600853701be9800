/*
 * tests/gateway/test_models.c — the gateway's model + adapter registry:
 * --adapter NAME=DIR[@BASE] splitting, adapter names, clashes with models
 * and adapters, the base model (given, unknown, left out with one or two
 * models), loading real PEFT folders written by loom-mkmodel (relative
 * paths stored absolute, a rejected folder leaves nothing behind), request
 * resolution (base model or adapter) and the /v1/models JSON with adapters.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "gateway/gw_models.h"
#include "gateway/gw_openai.h"
#include "tests/support/harness.h"

static char *tmp;
static char stories[PATH_MAX];

/* A registry with models "s" (and "t" when two), both stories260k. */
static gw_models *registry(int n_models)
{
	gw_models *m;
	assert_int_equal(gw_models_create(&m), LOOM_OK);
	assert_int_equal(gw_models_add(m, "s", stories, GW_TMPL_PLAIN), LOOM_OK);
	if (n_models > 1)
		assert_int_equal(gw_models_add(m, "t", stories, GW_TMPL_CHATML), LOOM_OK);
	return m;
}

static void test_split_arg(void **state)
{
	(void)state;
	static const struct {
		const char *arg;
		const char *name, *dir, *base; /* name NULL: rejected */
		const char *msg;               /* part of the message when rejected */
	} cases[] = {
		{"a=/x/ad", "a", "/x/ad", NULL, NULL},
		{"a=/x/ad@s", "a", "/x/ad", "s", NULL},
		{"a=rel/ad/@s", "a", "rel/ad/", "s", NULL},
		{"a=/x/ad@v2/more", "a", "/x/ad@v2/more", NULL, NULL}, /* '@' inside the path */
		{"a=/x/b@c/ad@s", "a", "/x/b@c/ad", "s", NULL},
		{"bad name=/x@s", "bad name", "/x", "s", NULL},       /* the name is checked later */
		{"a=b=c", "a", "b=c", NULL, NULL},
		{"/x/ad", NULL, NULL, NULL, "expected NAME=PEFT_DIR"},
		{"=/x/ad", NULL, NULL, NULL, "expected NAME=PEFT_DIR"},
		{"a=", NULL, NULL, NULL, "empty PEFT folder"},
		{"a=@s", NULL, NULL, NULL, "empty PEFT folder"},
		{"a=/x/ad@", NULL, NULL, NULL, "empty BASE"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *name, *dir, *base;
		loom_err rc = gw_adapter_split_arg(cases[i].arg, &name, &dir, &base);
		if (!cases[i].name) {
			if (rc != LOOM_EINVAL || name || dir || base ||
			    !strstr(loom_errmsg(), cases[i].msg) || !strstr(loom_errmsg(), cases[i].arg))
				fail_msg("case %zu '%s': rc %d, message '%s'", i, cases[i].arg, rc,
					 loom_errmsg());
			continue;
		}
		assert_int_equal(rc, LOOM_OK);
		assert_string_equal(name, cases[i].name);
		assert_string_equal(dir, cases[i].dir);
		if (cases[i].base)
			assert_string_equal(base, cases[i].base);
		else
			assert_null(base);
		loom_free(name);
		loom_free(dir);
		loom_free(base);
	}
}

static void test_names(void **state)
{
	(void)state;
	char longest[LOOM_NAME_MAX], too_long[LOOM_NAME_MAX + 1];
	memset(longest, 'x', sizeof longest - 1);
	longest[sizeof longest - 1] = '\0';
	memset(too_long, 'x', sizeof too_long - 1);
	too_long[sizeof too_long - 1] = '\0';
	static const char *const good[] = {"a", "Z", "0", "sql-lora", "ad_1.v2", "...", "-x-"};
	static const char *const bad[] = {"", "a b", "a/b", "a@b", "a=b", "a:b", "caf\xc3\xa9",
					  "tab\t", "a\nb"};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		if (!gw_adapter_name_ok(good[i]))
			fail_msg("'%s' should be a valid adapter name", good[i]);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (gw_adapter_name_ok(bad[i]))
			fail_msg("'%s' should not be a valid adapter name", bad[i]);
	assert_true(gw_adapter_name_ok(longest));
	assert_false(gw_adapter_name_ok(too_long));
}

static void test_check(void **state)
{
	(void)state;
	gw_models *one = registry(1), *two = registry(2);
	static const struct {
		int n_models;
		const char *name, *base;
		loom_err rc;
		const char *want;   /* expected base, or part of the message */
	} cases[] = {
		{1, "ad", NULL, LOOM_OK, "s"},          /* the only model */
		{1, "ad", "s", LOOM_OK, "s"},
		{2, "ad", "t", LOOM_OK, "t"},
		{2, "ad", NULL, LOOM_EINVAL, "give its base"},
		{1, "ad", "nope", LOOM_ENOTFOUND, "'nope' is not served"},
		{1, "s", NULL, LOOM_EEXIST, "a model already has that name"},
		{2, "t", "s", LOOM_EEXIST, "a model already has that name"},
		{1, "a b", NULL, LOOM_EINVAL, "must be 1..127 characters"},
		{1, "", NULL, LOOM_EINVAL, "must be 1..127 characters"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const gw_model *b = (const gw_model *)1;
		loom_err rc = gw_models_check_adapter(cases[i].n_models == 1 ? one : two,
						      cases[i].name, cases[i].base, &b);
		if (rc != cases[i].rc)
			fail_msg("case %zu: rc %d, want %d (%s)", i, rc, cases[i].rc, loom_errmsg());
		if (rc == LOOM_OK) {
			assert_non_null(b);
			assert_string_equal(b->name, cases[i].want);
		} else {
			assert_null(b);
			if (!strstr(loom_errmsg(), cases[i].want))
				fail_msg("case %zu: message '%s' lacks '%s'", i, loom_errmsg(),
					 cases[i].want);
		}
	}
	gw_models_destroy(one);
	gw_models_destroy(two);
}

static void test_add_and_resolve(void **state)
{
	(void)state;
	gw_models *m = registry(2);
	char cwd[PATH_MAX], dir[PATH_MAX], want[PATH_MAX];
	/* a relative folder is stored absolute */
	assert_non_null(getcwd(cwd, sizeof cwd));
	assert_int_equal(chdir(tmp), 0);
	loom_err rc = gw_models_add_adapter(m, "q-lora", "./ad-q/", "s");
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(rc, LOOM_OK);
	snprintf(dir, sizeof dir, "%s/ad-all", tmp);
	assert_int_equal(gw_models_add_adapter(m, "all.v1", dir, "t"), LOOM_OK);
	assert_int_equal(gw_models_adapter_count(m), 2);

	const gw_adapter *a = gw_models_find_adapter(m, "q-lora");
	assert_non_null(a);
	snprintf(dir, sizeof dir, "%s/ad-q", tmp);
	assert_non_null(realpath(dir, want));
	assert_string_equal(a->path, want);
	assert_string_equal(a->base->name, "s");
	assert_int_equal(a->rank, 4);
	assert_int_equal(a->max_rank, 4);
	assert_true(a->alpha == 8.0f);
	assert_int_equal(a->targets, 1u << 0 | 1u << 2); /* q_proj, v_proj */
	assert_true(a->bytes > 0);
	assert_true(a->created > 0);

	/* clashes after loading: the adapter again, a model with an adapter's name */
	assert_int_equal(gw_models_add_adapter(m, "q-lora", dir, "s"), LOOM_EEXIST);
	assert_int_equal(gw_models_add(m, "all.v1", stories, GW_TMPL_PLAIN), LOOM_EEXIST);
	assert_non_null(strstr(loom_errmsg(), "an adapter already has that name"));
	assert_int_equal(gw_models_count(m), 2);

	/* resolution: a base model, an adapter (its base), neither */
	const gw_adapter *ad = (const gw_adapter *)1;
	const gw_model *md = gw_models_resolve(m, "t", &ad);
	assert_non_null(md);
	assert_string_equal(md->name, "t");
	assert_null(ad);
	md = gw_models_resolve(m, "all.v1", &ad);
	assert_non_null(md);
	assert_string_equal(md->name, "t");
	assert_non_null(ad);
	assert_string_equal(ad->name, "all.v1");
	assert_int_equal(md->tmpl, GW_TMPL_CHATML); /* the base's chat template */
	assert_null(gw_models_resolve(m, "q-lora2", &ad));
	assert_null(ad);
	assert_null(gw_models_resolve(m, "Q-LORA", NULL)); /* names are case-sensitive */
	gw_models_destroy(m);
}

static void test_rejected_folders(void **state)
{
	(void)state;
	gw_models *m = registry(1);
	char dir[PATH_MAX];
	/* missing folder: named in the message */
	snprintf(dir, sizeof dir, "%s/nothing-here", tmp);
	assert_int_equal(gw_models_add_adapter(m, "x", dir, NULL), LOOM_ENOTFOUND);
	assert_non_null(strstr(loom_errmsg(), "nothing-here"));
	/* use_dora: the loader's reason comes through */
	snprintf(dir, sizeof dir, "%s/dora", tmp);
	assert_int_not_equal(gw_models_add_adapter(m, "x", dir, NULL), LOOM_OK);
	assert_non_null(strstr(loom_errmsg(), "dora"));
	/* an adapter for another base (shapes differ): babyllama105 adapter on stories */
	snprintf(dir, sizeof dir, "%s/ad-baby", tmp);
	assert_int_not_equal(gw_models_add_adapter(m, "x", dir, NULL), LOOM_OK);
	assert_int_equal(gw_models_adapter_count(m), 0);
	assert_null(gw_models_resolve(m, "x", NULL));
	gw_models_destroy(m);
}

static json_t *entry(json_t *data, const char *id)
{
	for (size_t i = 0; i < json_array_size(data); i++) {
		json_t *e = json_array_get(data, i);
		if (!strcmp(json_string_value(json_object_get(e, "id")), id))
			return e;
	}
	fail_msg("no entry '%s' in /v1/models", id);
	return NULL;
}

static void test_models_json(void **state)
{
	(void)state;
	gw_models *m = registry(2);
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s/ad-q", tmp);
	assert_int_equal(gw_models_add_adapter(m, "q-lora", dir, "s"), LOOM_OK);
	snprintf(dir, sizeof dir, "%s/ad-all", tmp);
	assert_int_equal(gw_models_add_adapter(m, "all.v1", dir, "t"), LOOM_OK);
	char *body = gw_openai_models_json(m);
	assert_non_null(body);
	json_t *j = json_loads(body, 0, NULL);
	loom_free(body);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "object")), "list");
	json_t *data = json_object_get(j, "data");
	assert_int_equal(json_array_size(data), 4);
	/* base models first, in order, then adapters in order */
	static const char *const order[] = {"s", "t", "q-lora", "all.v1"};
	for (size_t i = 0; i < 4; i++)
		assert_string_equal(json_string_value(json_object_get(json_array_get(data, i), "id")),
				    order[i]);
	json_t *s = entry(data, "s");
	assert_true(json_is_null(json_object_get(s, "parent")));
	assert_string_equal(json_string_value(json_object_get(s, "root")), "s");
	const gw_adapter *a = gw_models_find_adapter(m, "all.v1");
	json_t *e = entry(data, "all.v1");
	assert_string_equal(json_string_value(json_object_get(e, "object")), "model");
	assert_string_equal(json_string_value(json_object_get(e, "owned_by")), "loom");
	assert_string_equal(json_string_value(json_object_get(e, "parent")), "t");
	assert_string_equal(json_string_value(json_object_get(e, "root")), a->path);
	assert_int_equal(json_integer_value(json_object_get(e, "created")), a->created);
	assert_int_equal(json_integer_value(json_object_get(e, "max_model_len")),
			 a->base->cfg.max_ctx);
	json_t *lora = json_object_get(e, "lora");
	assert_int_equal(json_integer_value(json_object_get(lora, "rank")), 2);
	assert_int_equal(json_integer_value(json_object_get(lora, "max_rank")), 2);
	assert_true(json_real_value(json_object_get(lora, "alpha")) == 4.0);
	assert_true(json_is_false(json_object_get(lora, "use_rslora")));
	assert_int_equal(json_integer_value(json_object_get(lora, "bytes")), (json_int_t)a->bytes);
	json_t *t = json_object_get(lora, "targets");
	static const char *const all[] = {"q_proj", "k_proj", "v_proj", "o_proj",
					  "gate_proj", "up_proj", "down_proj"};
	assert_int_equal(json_array_size(t), 7);
	for (size_t i = 0; i < 7; i++)
		assert_string_equal(json_string_value(json_array_get(t, i)), all[i]);
	t = json_object_get(json_object_get(entry(data, "q-lora"), "lora"), "targets");
	assert_int_equal(json_array_size(t), 2);
	assert_string_equal(json_string_value(json_array_get(t, 1)), "v_proj");
	json_decref(j);
	gw_models_destroy(m);
}

static int setup(void **state)
{
	(void)state;
	char baby[PATH_MAX];
	tmp = lt_tmpdir("gw-models");
	if (!realpath(lt_shared_path("models/stories260k"), stories) ||
	    !realpath(lt_shared_path("models/babyllama105"), baby))
		return -1;
	const char *mk = lt_bin_path("loom-mkmodel");
	if (lt_sh("%s adapter --model %s --out %s/ad-q --rank 4 --alpha 8 --targets q_proj,v_proj "
		  ">/dev/null", mk, stories, tmp) ||
	    lt_sh("%s adapter --model %s --out %s/ad-all --rank 2 --alpha 4 --dtype bf16 --targets "
		  "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj >/dev/null",
		  mk, stories, tmp) ||
	    lt_sh("%s adapter --model %s --out %s/ad-baby --rank 2 --targets q_proj >/dev/null", mk,
		  baby, tmp) ||
	    lt_sh("cp -r %s/ad-q %s/dora && sed -i 's/\"use_dora\": *false/\"use_dora\": true/' "
		  "%s/dora/adapter_config.json", tmp, tmp, tmp))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	loom_free(tmp);
	return 0;
}

/* The registry while serving: adapters put, replaced and removed; models
 * replaced (adapters follow) and removed (not while adapters use them);
 * acquire hands out a held model that outlives its removal. */
static void test_changes(void **state)
{
	(void)state;
	gw_models *m = registry(2);
	gw_model *s = gw_models_get(m, "s");
	assert_non_null(s);
	gw_adapter a = {.base = s, .rank = 4, .version = 1};
	snprintf(a.name, sizeof a.name, "x");
	snprintf(a.sha, sizeof a.sha, "%064d", 1);
	assert_int_equal(gw_models_put_adapter(m, &a, false), LOOM_OK);
	assert_int_equal(gw_models_put_adapter(m, &a, false), LOOM_EEXIST);
	a.version = 2;
	a.rank = 8;
	assert_int_equal(gw_models_put_adapter(m, &a, true), LOOM_OK);
	gw_adapter got;
	assert_int_equal(gw_models_adapter_get(m, "x", &got), LOOM_OK);
	assert_int_equal(got.version, 2);
	assert_int_equal(got.rank, 8);
	assert_int_equal(gw_models_adapter_count(m), 1);
	/* a name taken by a model; a base not in the table */
	snprintf(a.name, sizeof a.name, "t");
	assert_int_equal(gw_models_put_adapter(m, &a, true), LOOM_EEXIST);
	gw_model *loose;
	loom_model_config cfg = s->cfg;
	assert_int_equal(gw_model_create("loose", &cfg, NULL, GW_TMPL_PLAIN, "test", &loose), LOOM_OK);
	snprintf(a.name, sizeof a.name, "y");
	a.base = loose;
	assert_int_equal(gw_models_put_adapter(m, &a, false), LOOM_ENOTFOUND);
	gw_model_release(loose);

	/* acquire: a request's view (held base, adapter copy) */
	gw_model *base;
	bool is_ad;
	assert_int_equal(gw_models_acquire(m, "x", &base, &is_ad, &got), LOOM_OK);
	assert_true(is_ad);
	assert_ptr_equal(base, s);
	assert_string_equal(got.sha, a.sha);
	gw_model_release(base);
	assert_int_equal(gw_models_acquire(m, "t", &base, &is_ad, NULL), LOOM_OK);
	assert_false(is_ad);
	assert_string_equal(base->name, "t");
	/* t goes while "held by a request": the request's reference keeps it */
	assert_int_equal(gw_models_remove(m, "t"), LOOM_OK);
	assert_null(gw_models_find(m, "t"));
	assert_string_equal(base->name, "t");
	assert_non_null(base->tok);
	gw_model_release(base);
	assert_int_equal(gw_models_acquire(m, "t", &base, &is_ad, NULL), LOOM_ENOTFOUND);
	assert_null(base);
	assert_int_equal(gw_models_remove(m, "t"), LOOM_ENOTFOUND);

	/* replacing s: its adapter moves to the new model */
	assert_int_equal(gw_models_remove(m, "s"), LOOM_EBUSY);
	assert_non_null(strstr(loom_errmsg(), "1 adapter"));
	loom_tok *tok;
	char path[PATH_MAX + 32];
	snprintf(path, sizeof path, "%s/tokenizer.json", stories);
	assert_int_equal(loom_tok_load(path, &tok), LOOM_OK);
	gw_model *s2;
	assert_int_equal(gw_model_create("s", &cfg, tok, GW_TMPL_ZEPHYR, "test", &s2), LOOM_OK);
	gw_model_hold(s2);
	assert_int_equal(gw_models_put(m, s2, false), LOOM_EEXIST); /* consumed the hold */
	assert_int_equal(gw_models_put(m, s2, true), LOOM_OK);
	assert_ptr_equal(gw_models_find(m, "s"), s2);
	assert_ptr_equal(gw_models_find_adapter(m, "x")->base, s2);
	assert_string_equal(s->name, "s"); /* the old one lives while we hold it */
	gw_model_release(s);
	/* adapters go, then the model can */
	assert_int_equal(gw_models_remove_adapter(m, "x"), LOOM_OK);
	assert_int_equal(gw_models_remove_adapter(m, "x"), LOOM_ENOTFOUND);
	assert_int_equal(gw_models_remove(m, "s"), LOOM_OK);
	assert_int_equal(gw_models_count(m), 0);
	/* a model created with bad sizes is refused (its tokenizer freed) */
	cfg.vocab = 0;
	assert_int_equal(gw_model_create("bad", &cfg, NULL, GW_TMPL_PLAIN, "cfg.json", &loose),
			 LOOM_EFORMAT);
	assert_null(loose);
	gw_models_destroy(m);
}

/* A folder with stories260k's files and the given tokenizer_config.json. */
static char *chat_folder(const char *tag, const char *tokcfg)
{
	char *dir = lt_tmpdir(tag);
	char p[PATH_MAX + 64];
	assert_int_equal(lt_sh("for f in config.json model.safetensors tokenizer.json; do ln -s "
			       "%s/$f %s/$f; done", stories, dir), 0);
	snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fputs(tokcfg, fp);
	fclose(fp);
	return dir;
}

/* The model's own template: found, compiled, used by default; its
 * eos_token becomes a stop id when the configs do not list it; a template
 * loom cannot compile leaves the model loadable with the reason kept. */
static void test_model_template(void **state)
{
	(void)state;
	gw_models *m;
	assert_int_equal(gw_models_create(&m), LOOM_OK);
	char *good = chat_folder("tmpl-good", "{\"bos_token\": {\"content\": \"<s>\"},"
				 " \"eos_token\": \"<s>\", \"chat_template\": \"{{ bos_token }}"
				 "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}\"}");
	assert_int_equal(gw_models_add(m, "g", good, GW_TMPL_AUTO), LOOM_OK);
	const gw_model *md = gw_models_find(m, "g");
	assert_int_equal(md->tmpl, GW_TMPL_MODEL);
	assert_non_null(md->jinja);
	assert_string_equal(md->bos_token, "<s>");
	assert_int_equal(md->n_extra_eos, 1); /* "<s>" is id 1; config.json's EOS is 2 */
	assert_int_equal(md->extra_eos[0], 1);
	json_t *msgs = json_loads("[{\"role\":\"user\",\"content\":\"hi\"}]", 0, NULL);
	gw_chat_ctx cx = {.messages = msgs, .add_generation_prompt = 1,
			  .bos_token = md->bos_token, .eos_token = md->eos_token};
	char *out;
	size_t len;
	assert_int_equal(gw_chat_render_jinja(md->jinja, &cx, &out, &len), LOOM_OK);
	assert_string_equal(out, "<s>[user] hi");
	loom_free(out);
	json_decref(msgs);
	assert_int_equal(gw_models_set_template(m, "g", GW_TMPL_CHATML), LOOM_OK);
	assert_int_equal(gw_models_find(m, "g")->tmpl, GW_TMPL_CHATML);
	assert_int_equal(gw_models_set_template(m, "g", GW_TMPL_AUTO), LOOM_OK);
	assert_int_equal(gw_models_find(m, "g")->tmpl, GW_TMPL_MODEL);

	char *bad = chat_folder("tmpl-bad", "{\"chat_template\": \"{{ x | wordwrap }}\"}");
	assert_int_equal(gw_models_add(m, "b", bad, GW_TMPL_AUTO), LOOM_OK);
	md = gw_models_find(m, "b");
	assert_int_equal(md->tmpl, GW_TMPL_MODEL);
	assert_null(md->jinja);
	assert_non_null(strstr(md->jinja_error, "wordwrap"));
	assert_int_equal(md->n_extra_eos, 0);

	char *none = chat_folder("tmpl-none", "{\"eos_token\": \"</s>\"}"); /* = config's */
	assert_int_equal(gw_models_add(m, "n", none, GW_TMPL_AUTO), LOOM_OK);
	assert_int_equal(gw_models_find(m, "n")->tmpl, GW_TMPL_PLAIN);
	assert_int_equal(gw_models_find(m, "n")->n_extra_eos, 0);

	char *broken = chat_folder("tmpl-broken", "{\"chat_template\": 3}");
	assert_int_equal(gw_models_add(m, "x", broken, GW_TMPL_AUTO), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "tokenizer_config.json"));
	assert_non_null(strstr(loom_errmsg(), "chat_template"));
	gw_models_destroy(m);
	char *dirs[] = { good, bad, none, broken };
	for (int i = 0; i < 4; i++) {
		lt_sh("rm -rf '%s'", dirs[i]);
		loom_free(dirs[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model_template),
		cmocka_unit_test(test_split_arg),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_check),
		cmocka_unit_test(test_add_and_resolve),
		cmocka_unit_test(test_rejected_folders),
		cmocka_unit_test(test_models_json),
		cmocka_unit_test(test_changes),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
