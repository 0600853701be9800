/*
 * tools/mkmodel/mk_model.c — random model folders (every family of
 * mk_model.h; their config.json in mk_config.c) and PEFT LoRA adapters.
 *
 * Weights: every tensor draws from its own xoshiro256** stream seeded by
 * (--seed, tensor name), so a tensor's values do not depend on dtype,
 * sharding or which other tensors exist. Scales keep a forward pass sane:
 * projections ~ N(0, 1/fan_in); o_proj and down_proj further / sqrt(2 L) so
 * the residual stream stays O(1) after L layers; norms 1 + N(0, 0.05^2)
 * (Gemma 2, whose norms scale by 1 + w: N(0, 0.1^2)); biases N(0, 0.3^2);
 * embeddings and lm_head ~ N(0, (2/sqrt(hidden))^2), which puts logits
 * (normalised hidden . row) at a standard deviation of about 2: peaked but
 * not degenerate, tied or not.
 *
 * LoRA: A ~ N(0, 1/in); B ~ N(0, s^2) with s chosen so scale * B A x has a
 * standard deviation of about 0.5 for unit x (PEFT zero-inits B; we do not,
 * so tests see an effect).
 *
 * Tensors are streamed to disk one at a time (loom_st_write_fill), so big
 * benchmark models need no more memory than their largest tensor.
 */
#include "mk_model.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/safetensors.h"

/* ---- random numbers ---- */

typedef struct rng {
	uint64_t s[4];
	int has_spare;
	double spare;
} rng;

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void rng_init(rng *r, uint64_t seed, const char *name)
{
	uint64_t h = 1469598103934665603ull ^ seed;
	for (const char *p = name; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix(&h);
	r->has_spare = 0;
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r)
{
	uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

/* Standard normal (Box-Muller). */
static double rng_normal(rng *r)
{
	if (r->has_spare) {
		r->has_spare = 0;
		return r->spare;
	}
	double u1 = ((double)(rng_next(r) >> 11) + 1.0) * 0x1p-53; /* (0, 1] */
	double u2 = (double)(rng_next(r) >> 11) * 0x1p-53;
	double m = sqrt(-2.0 * log(u1));
	r->spare = m * sin(2 * M_PI * u2);
	r->has_spare = 1;
	return m * cos(2 * M_PI * u2);
}

/* ---- tensor specs and streaming fill ---- */

typedef struct spec {
	char name[128];
	int ndim;
	int64_t shape[2];
	double mean, std; /* values ~ mean + std * N(0, 1) */
} spec;

typedef struct gen {
	const spec *specs;    /* [n] of the file being written */
	const loom_tensor *ts;
	uint64_t seed;
} gen;

static loom_err fill_tensor(void *ctx, size_t i, void *buf)
{
	const gen *g = ctx;
	const spec *sp = &g->specs[i];
	loom_dtype dt = g->ts[i].dtype;
	size_t n = loom_tensor_numel(&g->ts[i]), es = loom_dtype_size(dt);
	float block[1024];
	rng r;

	rng_init(&r, g->seed, sp->name);
	for (size_t k = 0; k < n; k += 1024) {
		size_t m = n - k < 1024 ? n - k : 1024;
		for (size_t j = 0; j < m; j++)
			block[j] = (float)(sp->mean + sp->std * rng_normal(&r));
		loom_from_f32((char *)buf + k * es, block, dt, m);
	}
	return LOOM_OK;
}

static void spec_set(spec *s, const char *name, int64_t rows, int64_t cols, double mean,
		     double std)
{
	snprintf(s->name, sizeof s->name, "%s", name);
	s->ndim = cols ? 2 : 1;
	s->shape[0] = rows;
	s->shape[1] = cols;
	s->mean = mean;
	s->std = std;
}

static void to_tensor(const spec *s, loom_dtype dt, loom_tensor *t)
{
	memset(t, 0, sizeof *t);
	t->name = s->name;
	t->dtype = dt;
	t->ndim = s->ndim;
	t->shape[0] = s->shape[0];
	t->shape[1] = s->shape[1];
	t->nbytes = loom_tensor_numel(t) * loom_dtype_size(dt);
}

/* Writes specs[0..n) to path with values from seed. */
static loom_err write_specs(const char *path, const spec *specs, size_t n, loom_dtype dt,
			    uint64_t seed)
{
	loom_tensor *ts = loom_calloc(n + 1, sizeof *ts);
	const char *meta[] = { "format", "pt", NULL };
	loom_err rc;

	if (!ts)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", path);
	for (size_t i = 0; i < n; i++)
		to_tensor(&specs[i], dt, &ts[i]);
	gen g = { .specs = specs, .ts = ts, .seed = seed };
	rc = loom_st_write_fill(path, ts, n, meta, fill_tensor, &g);
	loom_free(ts);
	return rc;
}

/* ---- files ---- */

static loom_err mkdir_p(const char *dir)
{
	char p[4096];
	size_t n = strlen(dir);
	if (n == 0 || n >= sizeof p)
		return loom_fail(LOOM_EINVAL, "bad output directory \"%s\"", dir);
	memcpy(p, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		char c = p[i];
		p[i] = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST)
			return loom_fail(LOOM_EIO, "%s: cannot create directory: %s", p, strerror(errno));
		p[i] = c;
	}
	struct stat st;
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return loom_fail(LOOM_EIO, "%s: not a directory", dir);
	return LOOM_OK;
}

static void join(char *buf, size_t cap, const char *dir, const char *name)
{
	snprintf(buf, cap, "%s/%s", dir, name);
}

/* Writes len bytes to dir/name through a temp file + rename. */
static loom_err write_file(const char *dir, const char *name, const char *text, size_t len)
{
	char path[4096], tmp[4200];
	join(path, sizeof path, dir, name);
	snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
	FILE *fp = fopen(tmp, "wb");
	if (!fp)
		return loom_fail(LOOM_EIO, "%s: cannot create: %s", tmp, strerror(errno));
	int bad = fwrite(text, 1, len, fp) != len;
	bad |= fclose(fp) != 0;
	if (bad || rename(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		return loom_fail(LOOM_EIO, "%s: cannot write: %s", path, strerror(e));
	}
	return LOOM_OK;
}

static loom_err write_json(const char *dir, const char *name, json_t *root, size_t flags)
{
	char *s = root ? json_dumps(root, flags | JSON_INDENT(2) | JSON_REAL_PRECISION(15)) : NULL;
	loom_err rc;
	if (!s)
		return loom_fail(LOOM_ENOMEM, "%s/%s: cannot build JSON", dir, name);
	size_t n = strlen(s);
	char *t = loom_malloc(n + 2);
	if (!t) {
		free(s);
		return loom_fail(LOOM_ENOMEM, "%s/%s: out of memory", dir, name);
	}
	memcpy(t, s, n);
	t[n] = '\n';
	free(s);
	rc = write_file(dir, name, t, n + 1);
	loom_free(t);
	return rc;
}

/* ---- models ---- */

/* Most tensors one layer can have (7 projections, 4 attention and 3 MLP
 * biases, 4 norms, q_norm and k_norm). */
#define MK_PER_LAYER 20

static void spec_layer(spec *s, size_t *n, int layer, const char *suffix, int64_t rows,
		       int64_t cols, double mean, double std)
{
	char nm[128];
	snprintf(nm, sizeof nm, "model.layers.%d.%s", layer, suffix);
	spec_set(&s[(*n)++], nm, rows, cols, mean, std);
}

/* The HF tensor list of o's family and shapes, in HF's usual order. The
 * plain llama family keeps exactly its old list. */
static size_t model_specs(const mk_model_opts *o, spec *s)
{
	const int hd = o->head_dim, L = o->layers;
	const mk_family f = o->family;
	const bool gemma = f == MK_FAM_GEMMA2;
	const double d = o->hidden, res = 1.0 / sqrt(2.0 * L);
	const double emb = 2.0 / sqrt(d);
	/* Gemma 2: norms are x (1 + w), so w is drawn around 0; q and k are
	 * drawn 4x larger so that attention logits reach the soft cap (50) */
	const double norm_mean = gemma ? 0.0 : 1.0, norm_std = gemma ? 0.1 : 0.05;
	const double qk_gain = gemma ? 4.0 : 1.0, bias_std = 0.3;
	const bool qkv_bias = f == MK_FAM_QWEN2 || o->attn_bias, o_bias = o->attn_bias;
	char nm[64]; /* a layer tensor's name after "model.layers.N." */
	size_t n = 0;

	spec_set(&s[n++], "model.embed_tokens.weight", o->vocab, o->hidden, 0, emb);
	for (int i = 0; i < L; i++) {
		static const char *const sub[] = { "self_attn.q_proj", "self_attn.k_proj",
						   "self_attn.v_proj", "self_attn.o_proj",
						   "mlp.gate_proj",    "mlp.up_proj",
						   "mlp.down_proj" };
		const int64_t rows[] = { (int64_t)o->heads * hd, (int64_t)o->kv_heads * hd,
					 (int64_t)o->kv_heads * hd, o->hidden, o->ffn, o->ffn,
					 o->hidden };
		const int64_t cols[] = { o->hidden, o->hidden, o->hidden, (int64_t)o->heads * hd,
					 o->hidden, o->hidden, o->ffn };
		for (int k = 0; k < 7; k++) {
			double std = 1.0 / sqrt((double)cols[k]) * (k == 3 || k == 6 ? res : 1.0);
			if (k < 2)
				std *= qk_gain;
			snprintf(nm, sizeof nm, "%s.weight", sub[k]);
			spec_layer(s, &n, i, nm, rows[k], cols[k], 0, std);
			bool bias = k < 3 ? qkv_bias : k == 3 ? o_bias : o->mlp_bias;
			if (bias) {
				snprintf(nm, sizeof nm, "%s.bias", sub[k]);
				spec_layer(s, &n, i, nm, rows[k], 0, 0, bias_std);
			}
		}
		if (f == MK_FAM_QWEN3) {
			spec_layer(s, &n, i, "self_attn.q_norm.weight", hd, 0, 1.0, 0.1);
			spec_layer(s, &n, i, "self_attn.k_norm.weight", hd, 0, 1.0, 0.1);
		}
		spec_layer(s, &n, i, "input_layernorm.weight", o->hidden, 0, norm_mean, norm_std);
		spec_layer(s, &n, i, "post_attention_layernorm.weight", o->hidden, 0, norm_mean,
			   norm_std);
		if (gemma) {
			spec_layer(s, &n, i, "pre_feedforward_layernorm.weight", o->hidden, 0,
				   norm_mean, norm_std);
			spec_layer(s, &n, i, "post_feedforward_layernorm.weight", o->hidden, 0,
				   norm_mean, norm_std);
		}
	}
	/* Gemma 2: a final norm of about 1 + 7 = 8 puts logits (tied, about 2
	 * before it) well into the final soft cap (30) */
	spec_set(&s[n++], "model.norm.weight", o->hidden, 0, gemma ? 7.0 : 1.0, norm_std);
	if (!o->tied)
		spec_set(&s[n++], "lm_head.weight", o->vocab, o->hidden, 0, emb);
	return n;
}

/* Splits specs into o->shards contiguous, non-empty runs of similar bytes
 * and writes them plus the index. */
static loom_err write_shards(const mk_model_opts *o, const spec *s, size_t n)
{
	const int N = o->shards;
	size_t es = loom_dtype_size(o->dtype);
	uint64_t total = 0, acc = 0;
	int *shard = loom_calloc(n, sizeof *shard);
	json_t *root = NULL, *wm;
	char name[64], path[4200];
	loom_err rc = LOOM_OK;

	if (!shard)
		return loom_fail(LOOM_ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		total += (uint64_t)s[i].shape[0] * (uint64_t)(s[i].ndim == 2 ? s[i].shape[1] : 1) * es;
	int cur = 0;
	size_t in_cur = 0;
	for (size_t i = 0; i < n; i++) {
		if (in_cur > 0 && cur < N - 1 &&
		    (acc >= total * (uint64_t)(cur + 1) / (uint64_t)N || n - i == (size_t)(N - 1 - cur))) {
			cur++;
			in_cur = 0;
		}
		shard[i] = cur;
		in_cur++;
		acc += (uint64_t)s[i].shape[0] * (uint64_t)(s[i].ndim == 2 ? s[i].shape[1] : 1) * es;
	}
	root = json_object();
	wm = json_object();
	json_object_set_new(root, "metadata", json_pack("{s:I}", "total_size", (json_int_t)total));
	json_object_set(root, "weight_map", wm);
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i; j < n && shard[j] == shard[i]; j++) {
		}
		snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", shard[i] + 1, N);
		join(path, sizeof path, o->out, name);
		if ((rc = write_specs(path, s + i, j - i, o->dtype, o->seed)))
			goto out;
		for (size_t k = i; k < j; k++)
			json_object_set_new(wm, s[k].name, json_string(name));
	}
	rc = write_json(o->out, "model.safetensors.index.json", root, JSON_SORT_KEYS);
out:
	json_decref(wm);
	json_decref(root);
	loom_free(shard);
	return rc;
}

/* Checks what the shape flags must satisfy for o's family (resolved). */
static loom_err check_shape(const mk_model_opts *o, const mk_model_opts *given)
{
	const mk_family f = o->family;
	if (!given->head_dim && (o->hidden % o->heads != 0 || (o->hidden / o->heads) % 2 != 0))
		return loom_fail(LOOM_EINVAL, "--hidden %d must be a multiple of 2 x --heads %d",
				 o->hidden, o->heads);
	if (o->head_dim % 2 != 0)
		return loom_fail(LOOM_EINVAL, "--head-dim %d must be even (rotary halves)",
				 o->head_dim);
	if (o->kv_heads > o->heads || o->heads % o->kv_heads != 0)
		return loom_fail(LOOM_EINVAL, "--heads %d must be a multiple of --kv-heads %d",
				 o->heads, o->kv_heads);
	if (o->attn_bias && (f == MK_FAM_QWEN2 || f == MK_FAM_MISTRAL))
		return loom_fail(LOOM_EINVAL, "--attention-bias: the %s family has fixed biases",
				 f == MK_FAM_QWEN2 ? "qwen2" : "mistral");
	if (o->mlp_bias && f != MK_FAM_LLAMA && f != MK_FAM_LLAMA3)
		return loom_fail(LOOM_EINVAL, "--mlp-bias is a llama option (mlp_bias)");
	if (given->sliding_window && (f == MK_FAM_LLAMA || f == MK_FAM_LLAMA3))
		return loom_fail(LOOM_EINVAL, "--sliding-window: llama has no sliding window "
				 "(mistral, qwen2, qwen3, gemma2 do)");
	if (o->rope != MK_ROPE_NONE && f == MK_FAM_GEMMA2)
		return loom_fail(LOOM_EINVAL, "--rope-scaling: gemma2 has no rope_scaling");
	if (o->max_window_layers > o->layers)
		return loom_fail(LOOM_EINVAL, "--max-window-layers %d is beyond --layers %d",
				 o->max_window_layers, o->layers);
	return LOOM_OK;
}

/* The EOS ids a family lists: the tokenizer's EOS, then (llama3: 3 in all,
 * gemma2: 2, like their real configs) the highest other ids. */
static int eos_list(const mk_model_opts *o, int32_t bos, int32_t eos, int32_t *out)
{
	int want = o->family == MK_FAM_LLAMA3 ? 3 : o->family == MK_FAM_GEMMA2 ? 2 : 1, n = 0;
	if (eos >= 0)
		out[n++] = eos;
	for (int32_t id = o->vocab - 1; id >= 0 && n < want; id--)
		if (id != bos && id != eos)
			out[n++] = id;
	return n;
}

loom_err mk_model_write(const mk_model_opts *given)
{
	mk_model_opts ro, *o = &ro;
	char *tok = NULL, *tok_cfg = NULL;
	size_t tok_len = 0, cfg_len = 0, n;
	int32_t bos = -1, eos[MK_MAX_EOS];
	int n_eos = 0;
	spec *specs = NULL;
	json_t *cfg = NULL;
	char path[4200];
	loom_err rc;

	mk_model_resolve(given, o);
	if ((rc = check_shape(o, given)))
		return rc;
	if (o->tokenizer_json) {
		int n_ids = 0;
		if ((rc = mk_tokenizer_read(o->tokenizer_json, o->tokenizer_config, &tok, &tok_len,
					    &n_ids, &bos, eos, &n_eos)))
			return rc;
		if (!o->vocab_set)
			o->vocab = n_ids;
		if (o->vocab < n_ids) {
			rc = loom_fail(LOOM_EINVAL, "--vocab %d is smaller than the %d ids of %s",
				       o->vocab, n_ids, o->tokenizer_json);
			goto out;
		}
		if (o->family != MK_FAM_LLAMA3 && o->family != MK_FAM_GEMMA2 && n_eos > 1)
			n_eos = 1;
	} else {
		int32_t e = -1;
		if ((rc = mk_tokenizer_json(o->tok, o->vocab, &tok, &tok_len, &bos, &e)))
			return rc;
		n_eos = eos_list(o, bos, e, eos);
	}
	if (!(specs = loom_calloc(3 + MK_PER_LAYER * (size_t)o->layers, sizeof *specs))) {
		rc = loom_fail(LOOM_ENOMEM, "out of memory");
		goto out;
	}
	n = model_specs(o, specs);
	if (o->shards < 1 || (size_t)o->shards > n || o->shards > 99999) {
		rc = loom_fail(LOOM_EINVAL, "--shards %d must be between 1 and %zu (the tensor count)",
			       o->shards, n);
		goto out;
	}
	if (o->tokenizer_config && (rc = mk_read_file(o->tokenizer_config, &tok_cfg, &cfg_len)))
		goto out;
	if (!(cfg = mk_config_json(o, bos, eos, n_eos))) {
		rc = loom_fail(LOOM_ENOMEM, "config.json: out of memory");
		goto out;
	}
	if ((rc = mkdir_p(o->out)) || (rc = write_file(o->out, "tokenizer.json", tok, tok_len)) ||
	    (tok_cfg && (rc = write_file(o->out, "tokenizer_config.json", tok_cfg, cfg_len))) ||
	    (rc = write_json(o->out, "config.json", cfg, 0)))
		goto out;
	if (o->shards == 1) {
		join(path, sizeof path, o->out, "model.safetensors");
		rc = write_specs(path, specs, n, o->dtype, o->seed);
	} else {
		rc = write_shards(o, specs, n);
	}
out:
	json_decref(cfg);
	loom_free(specs);
	loom_free(tok_cfg);
	loom_free(tok);
	return rc;
}

/* ---- adapters ---- */

static const struct {
	const char *name, *block;
} targets[] = {
	{ "q_proj", "self_attn" }, { "k_proj", "self_attn" }, { "v_proj", "self_attn" },
	{ "o_proj", "self_attn" }, { "gate_proj", "mlp" },    { "up_proj", "mlp" },
	{ "down_proj", "mlp" },
};

int mk_target_known(const char *name)
{
	for (size_t i = 0; i < sizeof targets / sizeof *targets; i++)
		if (strcmp(name, targets[i].name) == 0)
			return 1;
	return 0;
}

/* in/out features of target t in model c (q is n_heads x head_dim, which
 * differs from hidden in Qwen3 and Gemma 2). */
static void target_dims(const mk_base_shape *c, const char *t, int64_t *in, int64_t *out)
{
	int64_t q = (int64_t)c->heads * c->head_dim, kv = (int64_t)c->kv_heads * c->head_dim;
	*in = c->hidden;
	if (strcmp(t, "q_proj") == 0) {
		*out = q;
	} else if (strcmp(t, "k_proj") == 0 || strcmp(t, "v_proj") == 0) {
		*out = kv;
	} else if (strcmp(t, "o_proj") == 0) {
		*in = q;
		*out = c->hidden;
	} else if (strcmp(t, "down_proj") == 0) {
		*in = c->ffn;
		*out = c->hidden;
	} else {
		*out = c->ffn; /* gate_proj, up_proj */
	}
}

static const char *target_block(const char *t)
{
	for (size_t i = 0; i < sizeof targets / sizeof *targets; i++)
		if (strcmp(t, targets[i].name) == 0)
			return targets[i].block;
	return "self_attn";
}

static loom_err write_adapter_config(const mk_adapter_opts *o)
{
	json_t *c = json_object(), *tm = json_array(), *layers = json_null();
	loom_err rc;

	for (int i = 0; i < o->n_targets; i++)
		json_array_append_new(tm, json_string(o->targets[i]));
	if (o->n_layers > 0) {
		json_decref(layers);
		layers = json_array();
		for (int i = 0; i < o->n_layers; i++)
			json_array_append_new(layers, json_integer(o->layers[i]));
	}
	json_object_set_new(c, "alpha_pattern", json_object());
	json_object_set_new(c, "base_model_name_or_path", json_string(o->model));
	json_object_set_new(c, "bias", json_string("none"));
	json_object_set_new(c, "fan_in_fan_out", json_false());
	json_object_set_new(c, "inference_mode", json_true());
	json_object_set_new(c, "init_lora_weights", json_true());
	json_object_set_new(c, "layers_pattern", json_null());
	json_object_set_new(c, "layers_to_transform", layers);
	if (o->alpha == floor(o->alpha) && fabs(o->alpha) < 1e15)
		json_object_set_new(c, "lora_alpha", json_integer((json_int_t)o->alpha));
	else
		json_object_set_new(c, "lora_alpha", json_real(o->alpha));
	json_object_set_new(c, "lora_dropout", json_real(0.0));
	json_object_set_new(c, "modules_to_save", json_null());
	json_object_set_new(c, "peft_type", json_string("LORA"));
	json_object_set_new(c, "r", json_integer(o->rank));
	json_object_set_new(c, "rank_pattern", json_object());
	json_object_set_new(c, "revision", json_null());
	json_object_set_new(c, "target_modules", tm);
	json_object_set_new(c, "task_type", json_string("CAUSAL_LM"));
	json_object_set_new(c, "use_dora", json_false());
	json_object_set_new(c, "use_rslora", json_boolean(o->rslora));
	rc = write_json(o->out, "adapter_config.json", c, 0);
	json_decref(c);
	return rc;
}

loom_err mk_adapter_write(const mk_adapter_opts *o)
{
	mk_base_shape c;
	spec *specs = NULL;
	char path[4200], nm[128];
	size_t n = 0;
	loom_err rc;

	if ((rc = mk_base_shape_load(o->model, &c))) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", loom_errmsg());
		/* a bad model is not a usage error: keep EINVAL for our options */
		return rc == LOOM_EINVAL ? loom_fail(LOOM_EFORMAT, "%s", msg) : rc;
	}
	for (int i = 0; i < o->n_layers; i++)
		if (o->layers[i] < 0 || o->layers[i] >= c.layers)
			return loom_fail(LOOM_EINVAL, "--layers: layer %d is not in the model's 0..%d",
					 o->layers[i], c.layers - 1);
	int nl = o->n_layers ? o->n_layers : c.layers;
	if (!(specs = loom_calloc((size_t)nl * (size_t)o->n_targets * 2 + 1, sizeof *specs)))
		return loom_fail(LOOM_ENOMEM, "out of memory");
	double scale = o->alpha / (o->rslora ? sqrt((double)o->rank) : (double)o->rank);
	double std_b = 0.5 / (fabs(scale) * sqrt((double)o->rank) + 1e-30);
	for (int li = 0; li < nl; li++) {
		int layer = o->n_layers ? o->layers[li] : li;
		for (int k = 0; k < o->n_targets; k++) {
			int64_t in, out;
			const char *t = o->targets[k];
			target_dims(&c, t, &in, &out);
			snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.%s.lora_A.weight",
				 layer, target_block(t), t);
			spec_set(&specs[n++], nm, o->rank, in, 0, 1.0 / sqrt((double)in));
			snprintf(nm, sizeof nm, "base_model.model.model.layers.%d.%s.%s.lora_B.weight",
				 layer, target_block(t), t);
			spec_set(&specs[n++], nm, out, o->rank, 0, std_b);
		}
	}
	if ((rc = mkdir_p(o->out)) || (rc = write_adapter_config(o)))
		goto out;
	join(path, sizeof path, o->out, "adapter_model.safetensors");
	rc = write_specs(path, specs, n, o->dtype, o->seed);
out:
	loom_free(specs);
	return rc;
}
