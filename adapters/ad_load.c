/*
 * adapters/ad_load.c — adapter_model.safetensors: check every tensor against
 * the plan from adapter_config.json and the base model, then lay it out.
 *
 * Three passes over the mapped file, so that the message a user sees names
 * the most fundamental problem first, whatever the tensor order:
 *   1. names: every tensor must be a LoRA A or B weight of one of the seven
 *      LLaMA projections of a layer the base has. PEFT writes
 *      "base_model.model.model.layers.<l>.<self_attn|mlp>.<mod>.lora_<A|B>.weight"
 *      (".lora_A.default.weight" is accepted too). Embedding/lm_head rows,
 *      DoRA magnitudes, modules_to_save copies, biases and norms are
 *      rejected by name; a module LLaMA does not have (query_key_value,
 *      c_attn, W_pack, ...) means an adapter for another architecture.
 *   2. pairs and shapes, in layer/target order: both halves present, the
 *      module targeted by the config, dtype F32/F16/BF16, A [r, d_in] and
 *      B [d_out, r] with r the module's configured rank.
 *   3. values: converted to float32 into the arena (B transposed through a
 *      scratch row block); NaN/Inf rejected naming the tensor.
 *
 * Arena layout per layer (see adapter.h): A_q A_k A_v | A_gate A_up | A_o |
 * A_down | Bt_q Bt_k Bt_v Bt_gate Bt_up Bt_o Bt_down, where "|" starts a
 * 64-byte aligned block and the A blocks inside a fused group are packed
 * back to back (they share d_in). Absent modules take no space.
 */
#include "ad_int.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/safetensors.h"

#define ALIGN_FLOATS 16 /* 64 bytes */
#define PREFIX "base_model.model."


/* Arena order of the A blocks; a new aligned block starts before each
 * entry whose flag is set. */
static const struct {
	int t, new_block;
} a_order[AD_N_TARGETS] = {
	{ AD_Q, 1 },	{ AD_K, 0 },  { AD_V, 0 },    { AD_GATE, 1 },
	{ AD_UP, 0 },	{ AD_O, 1 },  { AD_DOWN, 1 },
};

/* The two tensors of one (layer, target), from the file. */
typedef struct pair {
	const loom_tensor *a, *b;
	size_t a_off, bt_off; /* in floats from the aligned arena start */
} pair;

typedef struct loader {
	const char *dir;
	const loom_model_config *base;
	ad_plan plan;
	loom_st_file *st;
	pair *pairs; /* [n_layers * AD_N_TARGETS] */
	size_t n_floats, max_b;
} loader;

/* ---- pass 1: names ---- */

static int ends_with(const char *s, size_t n, const char *suf)
{
	size_t k = strlen(suf);
	return n >= k && memcmp(s + n - k, suf, k) == 0;
}

/* comp occurs in name as a whole dot-separated component. */
static int has_component(const char *name, const char *comp)
{
	size_t k = strlen(comp);
	for (const char *p = strstr(name, comp); p; p = strstr(p + 1, comp))
		if ((p == name || p[-1] == '.') && (p[k] == '\0' || p[k] == '.'))
			return 1;
	return 0;
}

/* Tensors PEFT writes for features loom does not serve. */
static loom_err reject_foreign(const char *dir, const char *name)
{
	if (strstr(name, "lora_magnitude_vector"))
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: tensor %s is a DoRA magnitude vector; DoRA adapters are not "
				 "supported",
				 dir, name);
	if (strstr(name, "lora_embedding_A") || strstr(name, "lora_embedding_B"))
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: tensor %s is a LoRA on an embedding layer; it carries "
				 "embedding/lm_head weights, which loom does not serve",
				 dir, name);
	if (has_component(name, "embed_tokens") || has_component(name, "lm_head") ||
	    strstr(name, "trainable_tokens_"))
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: tensor %s carries embedding/lm_head weights (added tokens or "
				 "trainable embeddings), which loom does not serve",
				 dir, name);
	if (has_component(name, "modules_to_save"))
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: tensor %s is a modules_to_save copy; fully trained modules are "
				 "not served",
				 dir, name);
	return LOOM_OK;
}

/* Splits a LoRA tensor name into layer, target and half (0 = A, 1 = B). */
static loom_err parse_name(const char *dir, const char *name, int n_layers, int *layer, int *t,
			   int *half)
{
	static const char *const sufs[4] = { ".lora_A.weight", ".lora_B.weight",
					     ".lora_A.default.weight", ".lora_B.default.weight" };
	size_t n = strlen(name), plen = strlen(PREFIX);
	loom_err rc;

	if ((rc = reject_foreign(dir, name)))
		return rc;
	*half = -1;
	for (int i = 0; i < 4 && *half < 0; i++)
		if (ends_with(name, n, sufs[i])) {
			*half = i & 1;
			n -= strlen(sufs[i]);
		}
	if (*half < 0) {
		if (ends_with(name, n, ".lora_A.bias") || ends_with(name, n, ".lora_B.bias"))
			return loom_fail(LOOM_EUNSUPPORTED,
					 "%s: tensor %s is a LoRA bias (lora_bias); not supported", dir,
					 name);
		if (ends_with(name, n, ".bias"))
			return loom_fail(LOOM_EUNSUPPORTED,
					 "%s: tensor %s is a bias; trained biases are not served (bias "
					 "must be \"none\")",
					 dir, name);
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: tensor %s is not a LoRA A/B weight; loom serves LoRA weights "
				 "only, not base-model weights such as norms",
				 dir, name);
	}
	if (n <= plen || memcmp(name, PREFIX, plen) != 0)
		return loom_fail(LOOM_EFORMAT,
				 "%s: tensor %s is not named as PEFT names LoRA weights "
				 "(" PREFIX "<module>.lora_A.weight)",
				 dir, name);
	/* module path = name[plen, n); its last component is the module */
	const char *mp = name + plen, *end = name + n, *mod = end;
	while (mod > mp && mod[-1] != '.')
		mod--;
	int mlen = (int)(end - mod);
	*t = -1;
	for (int i = 0; i < AD_N_TARGETS; i++)
		if ((size_t)mlen == strlen(ad_target_name(i)) &&
		    memcmp(mod, ad_target_name(i), (size_t)mlen) == 0)
			*t = i;
	if (*t < 0)
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: adapter for another architecture: tensor %s adapts module "
				 "\"%.*s\", which a LLaMA model does not have (" AD_TARGET_LIST ")",
				 dir, name, mlen, mod);
	/* model.layers.<l>.<block>.<mod> */
	static const char lp[] = "model.layers.";
	const char *p = mp, *blk = ad_target_block(*t);
	long l = -1;
	int ok = (size_t)(end - p) > sizeof lp - 1 && memcmp(p, lp, sizeof lp - 1) == 0;
	if (ok) {
		p += sizeof lp - 1;
		if (*p >= '0' && *p <= '9') {
			l = 0;
			while (*p >= '0' && *p <= '9' && l < 100000000)
				l = l * 10 + (*p++ - '0');
		}
		size_t bl = strlen(blk);
		ok = l >= 0 && *p == '.' && strncmp(p + 1, blk, bl) == 0 && p + 1 + bl == mod - 1;
	}
	if (!ok)
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: adapter for another architecture: tensor %s: module path "
				 "\"%.*s\" is not LLaMA's model.layers.<n>.%s.%s",
				 dir, name, (int)(end - mp), mp, blk, ad_target_name(*t));
	if (l >= n_layers)
		return loom_fail(LOOM_EINVAL,
				 "%s: tensor %s is for layer %ld, but the base model has %d layers "
				 "(0..%d)",
				 dir, name, l, n_layers, n_layers - 1);
	*layer = (int)l;
	return LOOM_OK;
}

static loom_err collect(loader *ld)
{
	size_t n = loom_st_count(ld->st);
	for (size_t i = 0; i < n; i++) {
		const loom_tensor *x = loom_st_at(ld->st, i);
		int l = 0, t = 0, half = 0;
		loom_err rc = parse_name(ld->dir, x->name, ld->base->n_layers, &l, &t, &half);
		if (rc)
			return rc;
		pair *p = &ld->pairs[l * AD_N_TARGETS + t];
		const loom_tensor **slot = half ? &p->b : &p->a;
		if (*slot)
			return loom_fail(LOOM_EFORMAT, "%s: tensor %s duplicates tensor %s", ld->dir,
					 x->name, (*slot)->name);
		*slot = x;
	}
	return LOOM_OK;
}

/* ---- pass 2: pairs, dtypes, shapes; layout ---- */

static void fmt_shape(const loom_tensor *x, char *buf, size_t n)
{
	size_t o = (size_t)snprintf(buf, n, "[");
	for (int i = 0; i < x->ndim && o < n; i++)
		o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? "," : "", (long long)x->shape[i]);
	if (o < n)
		snprintf(buf + o, n - o, "]");
}

static loom_err check_tensor(loader *ld, const loom_tensor *x, int l, int t, int64_t d0,
			     int64_t d1)
{
	const ad_slot_plan *s = &ld->plan.slots[l * AD_N_TARGETS + t];
	int d_in, d_out;
	char shp[128];

	if (x->dtype != LOOM_DT_F32 && x->dtype != LOOM_DT_F16 && x->dtype != LOOM_DT_BF16)
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: tensor %s has dtype %s; F32, F16 and BF16 are supported",
				 ld->dir, x->name, loom_dtype_name(x->dtype));
	if (x->ndim == 2 && x->shape[0] == d0 && x->shape[1] == d1)
		return LOOM_OK;
	ad_target_dims(ld->base, t, &d_in, &d_out);
	fmt_shape(x, shp, sizeof shp);
	return loom_fail(LOOM_EINVAL,
			 "%s: tensor %s has shape %s, expected [%lld,%lld] (rank %d from %s; the "
			 "base model's %s maps %d -> %d)",
			 ld->dir, x->name, shp, (long long)d0, (long long)d1, s->rank,
			 s->rank_pattern ? "rank_pattern" : "\"r\"", ad_target_name(t), d_in, d_out);
}

static size_t align_up(size_t n)
{
	return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS;
}

static loom_err check_pair(loader *ld, int l, int t)
{
	pair *p = &ld->pairs[l * AD_N_TARGETS + t];
	const ad_slot_plan *s = &ld->plan.slots[l * AD_N_TARGETS + t];
	int d_in, d_out;
	loom_err rc;

	if (!p->a || !p->b)
		return loom_fail(LOOM_EINVAL,
				 "%s: tensor %s has no matching %s (a missing half of an A/B pair)",
				 ld->dir, (p->a ? p->a : p->b)->name, p->a ? "lora_B" : "lora_A");
	if (!s->targeted)
		return loom_fail(LOOM_EINVAL,
				 "%s: tensor %s is for model.layers.%d.%s.%s, which "
				 "adapter_config.json does not target (target_modules, "
				 "layers_to_transform, exclude_modules)",
				 ld->dir, p->a->name, l, ad_target_block(t), ad_target_name(t));
	ad_target_dims(ld->base, t, &d_in, &d_out);
	if ((rc = check_tensor(ld, p->a, l, t, s->rank, d_in)) ||
	    (rc = check_tensor(ld, p->b, l, t, d_out, s->rank)))
		return rc;
	if ((size_t)d_out * (size_t)s->rank > ld->max_b)
		ld->max_b = (size_t)d_out * (size_t)s->rank;
	return LOOM_OK;
}

static loom_err check_and_place(loader *ld)
{
	size_t off = 0;
	int any = 0;
	loom_err rc;

	for (int l = 0; l < ld->base->n_layers; l++) {
		pair *row = &ld->pairs[l * AD_N_TARGETS];
		for (int t = 0; t < AD_N_TARGETS; t++) {
			if (!row[t].a && !row[t].b)
				continue;
			if ((rc = check_pair(ld, l, t)))
				return rc;
			any = 1;
		}
		for (int k = 0; k < AD_N_TARGETS; k++) {
			int t = a_order[k].t;
			if (a_order[k].new_block)
				off = align_up(off);
			if (!row[t].a)
				continue;
			row[t].a_off = off;
			off += loom_tensor_numel(row[t].a);
		}
		for (int t = 0; t < AD_N_TARGETS; t++) {
			if (!row[t].b)
				continue;
			off = align_up(off);
			row[t].bt_off = off;
			off += loom_tensor_numel(row[t].b);
		}
	}
	if (!any)
		return loom_fail(LOOM_EINVAL, "%s: adapter_model.safetensors holds no LoRA tensors",
				 ld->dir);
	ld->n_floats = off;
	return LOOM_OK;
}

/* ---- pass 3: values ---- */

static loom_err convert(loader *ld, const loom_tensor *x, float *dst)
{
	size_t n = loom_tensor_numel(x);
	loom_to_f32(dst, x->data, x->dtype, n); /* dtype checked in pass 2 */
	for (size_t i = 0; i < n; i++)
		if (!isfinite(dst[i]))
			return loom_fail(LOOM_EINVAL,
					 "%s: tensor %s holds %s at element %zu (row %zu); weights must "
					 "be finite",
					 ld->dir, x->name, isnan(dst[i]) ? "NaN" : "an infinite value",
					 i, i / (size_t)x->shape[1]);
	return LOOM_OK;
}

static loom_err fill(loader *ld, ad_adapter *a, float *base, float *scratch)
{
	loom_err rc;
	for (int l = 0; l < a->n_layers; l++) {
		for (int t = 0; t < AD_N_TARGETS; t++) {
			const pair *p = &ld->pairs[l * AD_N_TARGETS + t];
			const ad_slot_plan *s = &ld->plan.slots[l * AD_N_TARGETS + t];
			ad_module *m = &a->mods[l * AD_N_TARGETS + t];
			if (!p->a)
				continue;
			int r = s->rank, d_out = a->d_out[t];
			float *bt = base + p->bt_off;
			if ((rc = convert(ld, p->a, base + p->a_off)) || (rc = convert(ld, p->b, scratch)))
				return rc;
			for (int j = 0; j < d_out; j++) /* B [d_out, r] -> Bt [r, d_out] */
				for (int k = 0; k < r; k++)
					bt[(size_t)k * d_out + j] = scratch[(size_t)j * r + k];
			m->rank = r;
			m->scale = (float)(ld->plan.use_rslora ? s->alpha / sqrt((double)r)
							       : (double)s->alpha / r);
			m->a = base + p->a_off;
			m->bt = bt;
			a->targets |= 1u << t;
			if (r > a->max_rank)
				a->max_rank = r;
			a->bytes += (loom_tensor_numel(p->a) + loom_tensor_numel(p->b)) * sizeof(float);
		}
	}
	return LOOM_OK;
}

static loom_err build(loader *ld, const char *name, ad_adapter **out)
{
	ad_adapter *a = NULL;
	float *scratch = NULL;
	loom_err rc = LOOM_ENOMEM;

	if (!(a = loom_calloc(1, sizeof *a)) ||
	    !(a->mods = loom_calloc((size_t)ld->base->n_layers * AD_N_TARGETS, sizeof *a->mods)) ||
	    !(a->arena = loom_malloc(ld->n_floats * sizeof(float) + 64)) ||
	    !(scratch = loom_malloc(ld->max_b * sizeof(float)))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory (%zu bytes of adapter weights)",
			       ld->dir, ld->n_floats * sizeof(float));
		goto out;
	}
	snprintf(a->name, sizeof a->name, "%s", name);
	a->n_layers = ld->base->n_layers;
	for (int t = 0; t < AD_N_TARGETS; t++)
		ad_target_dims(ld->base, t, &a->d_in[t], &a->d_out[t]);
	a->base_rank = ld->plan.r;
	a->base_alpha = ld->plan.alpha;
	a->use_rslora = ld->plan.use_rslora;
	float *base = (float *)(((uintptr_t)a->arena + 63) & ~(uintptr_t)63);
	memset(base, 0, ld->n_floats * sizeof(float)); /* alignment gaps */
	rc = fill(ld, a, base, scratch);
out:
	loom_free(scratch);
	if (rc) {
		ad_adapter_destroy(a);
		a = NULL;
	}
	*out = a;
	return rc;
}

/* ---- entry points ---- */

static loom_err open_weights(loader *ld)
{
	size_t n = strlen(ld->dir) + sizeof "/adapter_model.safetensors";
	char *path = loom_malloc(n);
	struct stat sb;
	loom_err rc;

	if (!path)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", ld->dir);
	snprintf(path, n, "%s/adapter_model.safetensors", ld->dir);
	if (stat(path, &sb) == 0) {
		rc = loom_st_open(path, &ld->st);
	} else {
		snprintf(path, n, "%s/adapter_model.bin", ld->dir);
		if (stat(path, &sb) == 0)
			rc = loom_fail(LOOM_EUNSUPPORTED,
				       "%s: has adapter_model.bin (a PyTorch pickle) but no "
				       "adapter_model.safetensors; save the adapter with safe "
				       "serialization",
				       ld->dir);
		else
			rc = loom_fail(LOOM_EINVAL, "%s: adapter_model.safetensors is missing",
				       ld->dir);
	}
	loom_free(path);
	return rc;
}

loom_err ad_adapter_load(const char *dir, const char *name, const loom_model_config *base,
			 ad_adapter **out)
{
	loader ld;
	struct stat sb;
	loom_err rc;

	memset(&ld, 0, sizeof ld);
	ld.dir = dir;
	ld.base = base;
	*out = NULL;
	if (!dir || !name || !base || base->n_layers <= 0)
		return loom_fail(LOOM_EINVAL, "ad_adapter_load: missing folder, name or base config");
	if (strlen(name) >= sizeof((ad_adapter *)0)->name)
		return loom_fail(LOOM_EINVAL, "%s: adapter name \"%.40s...\" is longer than %zu bytes",
				 dir, name, sizeof((ad_adapter *)0)->name - 1);
	if (stat(dir, &sb) != 0)
		return loom_fail(LOOM_EINVAL, "%s: no such adapter folder (%s)", dir, strerror(errno));
	if (!S_ISDIR(sb.st_mode))
		return loom_fail(LOOM_EINVAL, "%s: not a folder (a PEFT adapter is a folder)", dir);
	if ((rc = ad_plan_load(dir, base, &ld.plan)) || (rc = open_weights(&ld)))
		goto out;
	if (!(ld.pairs = loom_calloc((size_t)base->n_layers * AD_N_TARGETS, sizeof *ld.pairs))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
		goto out;
	}
	if ((rc = collect(&ld)) || (rc = check_and_place(&ld)))
		goto out;
	rc = build(&ld, name, out);
out:
	loom_free(ld.pairs);
	loom_st_close(ld.st);
	ad_plan_fini(&ld.plan);
	return rc;
}

void ad_adapter_destroy(ad_adapter *a)
{
	if (!a)
		return;
	loom_free(a->arena);
	loom_free(a->mods);
	loom_free(a);
}
