/*
 * adapters/ad_config.c — adapter_config.json, resolved against a base model.
 *
 * PEFT decides per module, by its full name inside LlamaForCausalLM
 * ("model.layers.3.self_attn.q_proj"), whether it gets a LoRA and with which
 * rank and alpha. We replay those rules for the 7 x n_layers modules of the
 * base model and keep the answers (ad_plan); no pattern outlives the load.
 *
 * The rules, as PEFT (tuners_utils.check_target_module_exists and
 * utils.get_pattern_key) applies them:
 *   - target_modules as a list: a module is targeted when its full name
 *     equals an entry, or ends with "." + entry; in the suffix case only if
 *     its layer is in layers_to_transform (int or list; null or [] = all).
 *     "all-linear" means the seven LLaMA projections. Absent or null: PEFT's
 *     LLaMA default, q_proj and v_proj.
 *   - target_modules as any other string: a regex that must match the whole
 *     full name (re.fullmatch); layers_to_transform does not apply (as in
 *     PEFT).
 *   - exclude_modules (list or regex string) removes modules the same way
 *     (without the layer rule).
 *   - rank_pattern / alpha_pattern: the first key, in file order, for which
 *     the regex "(.*\.)?(KEY)$" matches the full name from its start gives
 *     the value; otherwise r / lora_alpha.
 * Patterns are Python `re` regexes; we run them with PCRE2, whose syntax is
 * the Perl one Python's follows (\d, \w, non-greedy, (?P<n>...)), rather
 * than POSIX ERE, which would misread the common "layers\.\d+\." forms.
 * layers_pattern is ignored: LLaMA's layer list is "layers" anyway.
 *
 * Defaults follow PEFT's LoraConfig: r 8, lora_alpha 8, use_rslora false.
 * peft_type must be "LORA"; an absent peft_type is accepted only when both
 * r and lora_alpha are present (an older or hand-written LoRA config).
 * Rejected: bias other than "none", use_dora, non-empty modules_to_save,
 * fan_in_fan_out, layer_replication, lora_bias, trainable_token_indices,
 * target_parameters, targets on lm_head/embed_tokens, target_modules that
 * match no LLaMA module (another architecture), layers_to_transform beyond
 * the base's layers. Unknown keys are ignored.
 */
#include "ad_int.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/alloc.h"
#include "common/textfile.h"

#define MAX_CONFIG_BYTES (16u << 20)

/* One compiled regex and the match data it uses. */
typedef struct rx {
	pcre2_code *code;
	pcre2_match_data *md;
} rx;

/* A target_modules / exclude_modules value. */
typedef struct modset {
	int present;
	const char **names; /* list form: borrowed strings (json or static) */
	size_t n;
	int is_regex;       /* string form other than "all-linear" */
	const char *text;   /* regex text, for messages */
	rx re;
} modset;

/* A rank_pattern / alpha_pattern entry. */
typedef struct pat {
	const char *key; /* borrowed from the json */
	double v;
	rx re;
} pat;

typedef struct cfg {
	const char *path; /* dir/adapter_config.json */
	json_t *root;
	pcre2_general_context *gctx;
	pcre2_compile_context *cctx;
	int n_layers;
	unsigned char *layer_on; /* [n_layers] or NULL = all layers */
	modset target, exclude;
	pat *ranks, *alphas;
	size_t n_ranks, n_alphas;
} cfg;

static const char *const all_linear[] = { "q_proj",    "k_proj",  "v_proj",   "o_proj",
					  "gate_proj", "up_proj", "down_proj" };
static const char *const peft_llama_default[] = { "q_proj", "v_proj" };

static void *rx_malloc(PCRE2_SIZE n, void *data)
{
	(void)data;
	return loom_malloc(n);
}

static void rx_free_mem(void *p, void *data)
{
	(void)data;
	loom_free(p);
}

static void rx_fini(rx *r)
{
	pcre2_match_data_free(r->md);
	pcre2_code_free(r->code);
	r->md = NULL;
	r->code = NULL;
}

/* Compiles pattern (made from the Python regex shown, a "what" of field) with opts. */
static loom_err rx_compile(cfg *c, const char *field, const char *what, const char *shown,
			   const char *pattern, uint32_t opts, rx *out)
{
	int ec;
	PCRE2_SIZE at;
	out->code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &ec, &at,
				  c->cctx);
	if (!out->code) {
		if (ec == PCRE2_ERROR_HEAP_FAILED)
			return loom_fail(LOOM_ENOMEM, "%s: out of memory", c->path);
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(ec, msg, sizeof msg);
		if (shown != pattern && at >= 8)
			at -= 8; /* past the "(.*\.)?(" we wrapped around a key */
		return loom_fail(LOOM_EINVAL,
				 "%s: field \"%s\": %s \"%.80s\" is not a valid regular expression: "
				 "%s at offset %zu",
				 c->path, field, what, shown, (const char *)msg, (size_t)at);
	}
	out->md = pcre2_match_data_create_from_pattern(out->code, c->gctx);
	if (!out->md)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", c->path);
	return LOOM_OK;
}

/* *hit = whether r matches s (anchoring is part of the compiled options). */
static loom_err rx_match(cfg *c, rx *r, const char *s, int *hit)
{
	int n = pcre2_match(r->code, (PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, 0, 0, r->md, NULL);
	if (n >= 0 || n == PCRE2_ERROR_NOMATCH) {
		*hit = n >= 0;
		return LOOM_OK;
	}
	if (n == PCRE2_ERROR_NOMEMORY)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", c->path);
	PCRE2_UCHAR msg[160];
	pcre2_get_error_message(n, msg, sizeof msg);
	return loom_fail(LOOM_EINVAL, "%s: matching a pattern against \"%s\" failed: %s", c->path, s,
			 (const char *)msg);
}

/* ---- reading the file ---- */

static loom_err slurp(const char *dir, const char *path, char **text, size_t *len)
{
	loom_err rc = loom_text_read(path, MAX_CONFIG_BYTES, text, len);
	if (rc == LOOM_ENOTFOUND)
		return loom_fail(LOOM_EINVAL,
				 "%s: adapter_config.json is missing (not a PEFT adapter folder)", dir);
	if (rc == LOOM_EIO || rc == LOOM_EINVAL) {
		char msg[1024]; /* the message buffer is reused by loom_fail */
		snprintf(msg, sizeof msg, "%s", loom_errmsg());
		return loom_fail(LOOM_EINVAL, "%s", msg);
	}
	return rc;
}

/* ---- scalar fields ---- */

/* Absent or null: returns 0 and leaves *out. */
static loom_err get_bool(cfg *c, const char *key, int *out)
{
	json_t *v = json_object_get(c->root, key);
	if (!v || json_is_null(v))
		return LOOM_OK;
	if (!json_is_boolean(v))
		return loom_fail(LOOM_EFORMAT, "%s: field \"%s\" must be true or false", c->path, key);
	*out = json_is_true(v);
	return LOOM_OK;
}

static loom_err get_rank(cfg *c, const char *field, const char *key, json_t *v, int *out)
{
	if (!json_is_integer(v))
		return loom_fail(LOOM_EFORMAT, "%s: field \"%s\"%s%s%s must be an integer", c->path,
				 field, key ? " key \"" : "", key ? key : "", key ? "\"" : "");
	json_int_t x = json_integer_value(v);
	if (x < 1 || x > INT_MAX)
		return loom_fail(LOOM_EINVAL, "%s: field \"%s\"%s%s%s must be a rank >= 1, got %lld",
				 c->path, field, key ? " key \"" : "", key ? key : "",
				 key ? "\"" : "", (long long)x);
	*out = (int)x;
	return LOOM_OK;
}

static loom_err get_alpha(cfg *c, const char *field, const char *key, json_t *v, double *out)
{
	if (!json_is_number(v))
		return loom_fail(LOOM_EFORMAT, "%s: field \"%s\"%s%s%s must be a number", c->path,
				 field, key ? " key \"" : "", key ? key : "", key ? "\"" : "");
	double x = json_number_value(v);
	if (!(x > 0) || x > 1e30)
		return loom_fail(LOOM_EINVAL, "%s: field \"%s\"%s%s%s must be positive, got %g",
				 c->path, field, key ? " key \"" : "", key ? key : "",
				 key ? "\"" : "", x);
	*out = x;
	return LOOM_OK;
}

static loom_err check_type(cfg *c, int *have_r, int *have_alpha)
{
	json_t *pt = json_object_get(c->root, "peft_type");
	*have_r = json_object_get(c->root, "r") != NULL;
	*have_alpha = json_object_get(c->root, "lora_alpha") != NULL;
	if (!pt || json_is_null(pt)) {
		if (*have_r && *have_alpha)
			return LOOM_OK;
		return loom_fail(LOOM_EFORMAT,
				 "%s: no \"peft_type\" and no \"r\"/\"lora_alpha\": not a LoRA adapter "
				 "config",
				 c->path);
	}
	if (!json_is_string(pt))
		return loom_fail(LOOM_EFORMAT, "%s: field \"peft_type\" must be a string", c->path);
	if (strcmp(json_string_value(pt), "LORA") != 0)
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: peft_type is \"%.40s\"; loom serves LoRA adapters (\"LORA\") only",
				 c->path, json_string_value(pt));
	return LOOM_OK;
}

/* Features PEFT can train that loom does not serve: one message each. */
static loom_err check_unsupported(cfg *c)
{
	json_t *v;
	int b = 0;
	loom_err rc;

	v = json_object_get(c->root, "bias");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v))
			return loom_fail(LOOM_EFORMAT, "%s: field \"bias\" must be a string", c->path);
		if (strcmp(json_string_value(v), "none") != 0)
			return loom_fail(LOOM_EUNSUPPORTED,
					 "%s: bias is \"%.40s\"; loom serves bias \"none\" only (trained "
					 "biases are not applied)",
					 c->path, json_string_value(v));
	}
	if ((rc = get_bool(c, "use_dora", &b)))
		return rc;
	if (b)
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: use_dora is true; DoRA adapters are not supported", c->path);
	v = json_object_get(c->root, "modules_to_save");
	if (v && !json_is_null(v)) {
		if (json_is_string(v))
			return loom_fail(LOOM_EUNSUPPORTED,
					 "%s: modules_to_save names \"%.60s\"; fully trained modules "
					 "(modules_to_save) are not served",
					 c->path, json_string_value(v));
		if (!json_is_array(v))
			return loom_fail(LOOM_EFORMAT,
					 "%s: field \"modules_to_save\" must be a list of strings",
					 c->path);
		if (json_array_size(v) > 0) {
			json_t *e = json_array_get(v, 0);
			return loom_fail(LOOM_EUNSUPPORTED,
					 "%s: modules_to_save names \"%.60s\"; fully trained modules "
					 "(modules_to_save) are not served",
					 c->path, json_is_string(e) ? json_string_value(e) : "?");
		}
	}
	if ((rc = get_bool(c, "fan_in_fan_out", &b)))
		return rc;
	if (b)
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: fan_in_fan_out is true; that is the Conv1D (GPT-2) weight layout, "
				 "not LLaMA's",
				 c->path);
	b = 0;
	if ((rc = get_bool(c, "lora_bias", &b)))
		return rc;
	if (b)
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: lora_bias is true; LoRA B biases are not supported", c->path);
	static const char *const nonnull[] = { "layer_replication", "trainable_token_indices",
					       "target_parameters" };
	static const char *const why[] = {
		"layer replication changes the base model's layers",
		"trainable embedding rows (added tokens) are not served",
		"LoRA on bare parameters is not supported",
	};
	for (size_t i = 0; i < sizeof nonnull / sizeof *nonnull; i++) {
		v = json_object_get(c->root, nonnull[i]);
		if (!v || json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0) ||
		    (json_is_object(v) && json_object_size(v) == 0))
			continue;
		return loom_fail(LOOM_EUNSUPPORTED, "%s: %s is set; %s", c->path, nonnull[i],
				 why[i]);
	}
	return LOOM_OK;
}

/* ---- layers_to_transform ---- */

static loom_err layer_on(cfg *c, json_t *e)
{
	if (!json_is_integer(e))
		return loom_fail(LOOM_EFORMAT,
				 "%s: field \"layers_to_transform\" must be an integer or a list of "
				 "integers",
				 c->path);
	json_int_t x = json_integer_value(e);
	if (x < 0 || x >= c->n_layers)
		return loom_fail(LOOM_EINVAL,
				 "%s: layers_to_transform lists layer %lld, but the base model has %d "
				 "layers (0..%d)",
				 c->path, (long long)x, c->n_layers, c->n_layers - 1);
	c->layer_on[x] = 1;
	return LOOM_OK;
}

static loom_err get_layers(cfg *c)
{
	json_t *v = json_object_get(c->root, "layers_to_transform");
	if (!v || json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0))
		return LOOM_OK;
	if (!json_is_integer(v) && !json_is_array(v))
		return loom_fail(LOOM_EFORMAT,
				 "%s: field \"layers_to_transform\" must be an integer or a list of "
				 "integers",
				 c->path);
	if (!(c->layer_on = loom_calloc((size_t)c->n_layers, 1)))
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", c->path);
	if (json_is_integer(v))
		return layer_on(c, v);
	size_t i;
	json_t *e;
	json_array_foreach(v, i, e) {
		loom_err rc = layer_on(c, e);
		if (rc)
			return rc;
	}
	return LOOM_OK;
}

/* ---- target_modules / exclude_modules ---- */

static loom_err get_modset(cfg *c, const char *field, modset *m)
{
	json_t *v = json_object_get(c->root, field);
	if (!v || json_is_null(v))
		return LOOM_OK;
	m->present = 1;
	if (json_is_string(v)) {
		m->text = json_string_value(v);
		if (strcasecmp(m->text, "all-linear") == 0 && strcmp(field, "target_modules") == 0) {
			m->names = (const char **)all_linear;
			m->n = sizeof all_linear / sizeof *all_linear;
			return LOOM_OK;
		}
		m->is_regex = 1;
		/* re.fullmatch: anchored at both ends, alternatives backtrack */
		return rx_compile(c, field, "regex", m->text, m->text, PCRE2_ANCHORED | PCRE2_ENDANCHORED,
				  &m->re);
	}
	if (!json_is_array(v))
		return loom_fail(LOOM_EFORMAT, "%s: field \"%s\" must be a list of strings or a string",
				 c->path, field);
	m->n = json_array_size(v);
	if (!(m->names = loom_calloc(m->n ? m->n : 1, sizeof *m->names)))
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", c->path);
	for (size_t i = 0; i < m->n; i++) {
		json_t *e = json_array_get(v, i);
		if (!json_is_string(e))
			return loom_fail(LOOM_EFORMAT,
					 "%s: field \"%s\" must be a list of strings or a string",
					 c->path, field);
		m->names[i] = json_string_value(e);
	}
	return LOOM_OK;
}

static int ends_with_component(const char *full, const char *name)
{
	size_t lf = strlen(full), ln = strlen(name);
	return ln < lf && full[lf - ln - 1] == '.' && memcmp(full + lf - ln, name, ln) == 0;
}

/* PEFT's match of module full (in layer, -1 for none) against m. use_layers:
 * the target_modules rule that suffix matches honour layers_to_transform. */
static loom_err modset_match(cfg *c, modset *m, const char *full, int layer, int use_layers,
			     int *hit)
{
	*hit = 0;
	if (!m->present)
		return LOOM_OK;
	if (m->is_regex)
		return rx_match(c, &m->re, full, hit);
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(full, m->names[i]) == 0) {
			*hit = 1;
			return LOOM_OK;
		}
	for (size_t i = 0; i < m->n; i++)
		if (ends_with_component(full, m->names[i]))
			*hit = 1;
	if (*hit && use_layers && c->layer_on)
		*hit = layer >= 0 && c->layer_on[layer];
	return LOOM_OK;
}

/* ---- rank_pattern / alpha_pattern ---- */

static loom_err get_patterns(cfg *c, const char *field, int ranks, pat **out, size_t *n)
{
	json_t *v = json_object_get(c->root, field);
	const char *key;
	json_t *val;
	size_t i = 0;
	loom_err rc;

	if (!v || json_is_null(v) || (json_is_object(v) && json_object_size(v) == 0))
		return LOOM_OK;
	if (!json_is_object(v))
		return loom_fail(LOOM_EFORMAT, "%s: field \"%s\" must be an object", c->path, field);
	if (!(*out = loom_calloc(json_object_size(v), sizeof **out)))
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", c->path);
	json_object_foreach(v, key, val) {
		pat *p = &(*out)[i];
		if (ranks) {
			int r;
			if ((rc = get_rank(c, field, key, val, &r)))
				return rc;
			p->v = r;
		} else if ((rc = get_alpha(c, field, key, val, &p->v))) {
			return rc;
		}
		size_t len = strlen(key) + 16;
		char *re = loom_malloc(len);
		if (!re)
			return loom_fail(LOOM_ENOMEM, "%s: out of memory", c->path);
		snprintf(re, len, "(.*\\.)?(%s)$", key);
		p->key = key;
		rc = rx_compile(c, field, "key", key, re, PCRE2_ANCHORED, &p->re); /* re.match */
		loom_free(re);
		*n = ++i;
		if (rc)
			return rc;
	}
	return LOOM_OK;
}

/* First pattern matching full, or NULL. */
static loom_err pattern_for(cfg *c, pat *ps, size_t n, const char *full, const pat **out)
{
	*out = NULL;
	for (size_t i = 0; i < n; i++) {
		int hit;
		loom_err rc = rx_match(c, &ps[i].re, full, &hit);
		if (rc)
			return rc;
		if (hit) {
			*out = &ps[i];
			return LOOM_OK;
		}
	}
	return LOOM_OK;
}

/* ---- resolution ---- */

static void describe_targets(cfg *c, char *buf, size_t n)
{
	size_t o = 0;
	if (c->target.is_regex) {
		snprintf(buf, n, "regex \"%.80s\"", c->target.text);
		return;
	}
	o += (size_t)snprintf(buf, n, "[");
	for (size_t i = 0; i < c->target.n && o < n; i++)
		o += (size_t)snprintf(buf + o, n - o, "%s\"%.40s\"", i ? ", " : "",
				      c->target.names[i]);
	if (o < n)
		snprintf(buf + o, n - o, "]");
}

/* The embedding and the head: PEFT could put a LoRA there; loom won't. */
static loom_err check_not_embeddings(cfg *c)
{
	static const char *const full[] = { "model.embed_tokens", "lm_head" };
	for (size_t i = 0; i < 2; i++) {
		int hit, ex;
		loom_err rc;
		if ((rc = modset_match(c, &c->target, full[i], -1, 1, &hit)) ||
		    (rc = modset_match(c, &c->exclude, full[i], -1, 0, &ex)))
			return rc;
		if (hit && !ex)
			return loom_fail(LOOM_EUNSUPPORTED,
					 "%s: target_modules covers %s; LoRA on embedding/lm_head "
					 "layers is not served",
					 c->path, full[i]);
	}
	return LOOM_OK;
}

static loom_err resolve(cfg *c, ad_plan *plan)
{
	char full[96];
	int any_hit = 0, any = 0;
	loom_err rc;

	if ((rc = check_not_embeddings(c)))
		return rc;
	for (int l = 0; l < c->n_layers; l++) {
		for (int t = 0; t < AD_N_TARGETS; t++) {
			ad_slot_plan *s = &plan->slots[l * AD_N_TARGETS + t];
			const pat *p;
			int hit, ex;
			snprintf(full, sizeof full, "model.layers.%d.%s.%s", l, ad_target_block(t),
				 ad_target_name(t));
			if ((rc = modset_match(c, &c->target, full, l, 1, &hit)))
				return rc;
			if (!hit)
				continue;
			any_hit = 1;
			if ((rc = modset_match(c, &c->exclude, full, l, 0, &ex)))
				return rc;
			if (ex)
				continue;
			s->targeted = any = 1;
			s->rank = plan->r;
			s->alpha = plan->alpha;
			if ((rc = pattern_for(c, c->ranks, c->n_ranks, full, &p)))
				return rc;
			if (p) {
				s->rank = (int)p->v;
				s->rank_pattern = 1;
			}
			if ((rc = pattern_for(c, c->alphas, c->n_alphas, full, &p)))
				return rc;
			if (p)
				s->alpha = (float)p->v;
		}
	}
	if (!any_hit) {
		char what[256];
		describe_targets(c, what, sizeof what);
		return loom_fail(LOOM_EUNSUPPORTED,
				 "%s: adapter for another architecture: target_modules %s matches no "
				 "module of this LLaMA model (%s)",
				 c->path, what, AD_TARGET_LIST);
	}
	if (!any)
		return loom_fail(LOOM_EINVAL,
				 "%s: exclude_modules removes every module target_modules names", c->path);
	return LOOM_OK;
}

static void cfg_fini(cfg *c)
{
	for (size_t i = 0; i < c->n_ranks; i++)
		rx_fini(&c->ranks[i].re);
	for (size_t i = 0; i < c->n_alphas; i++)
		rx_fini(&c->alphas[i].re);
	loom_free(c->ranks);
	loom_free(c->alphas);
	rx_fini(&c->target.re);
	rx_fini(&c->exclude.re);
	if (c->target.names != (const char **)all_linear &&
	    c->target.names != (const char **)peft_llama_default)
		loom_free(c->target.names);
	loom_free(c->exclude.names);
	loom_free(c->layer_on);
	pcre2_compile_context_free(c->cctx);
	pcre2_general_context_free(c->gctx);
	json_decref(c->root);
}

static loom_err parse(cfg *c, ad_plan *plan)
{
	int have_r, have_alpha;
	double alpha = 8;
	loom_err rc;

	if (!json_is_object(c->root))
		return loom_fail(LOOM_EFORMAT, "%s: not a JSON object", c->path);
	if ((rc = check_type(c, &have_r, &have_alpha)))
		return rc;
	plan->r = 8;
	if (have_r && (rc = get_rank(c, "r", NULL, json_object_get(c->root, "r"), &plan->r)))
		return rc;
	if (have_alpha &&
	    (rc = get_alpha(c, "lora_alpha", NULL, json_object_get(c->root, "lora_alpha"), &alpha)))
		return rc;
	plan->alpha = (float)alpha;
	if ((rc = get_bool(c, "use_rslora", &plan->use_rslora)) || (rc = check_unsupported(c)) ||
	    (rc = get_layers(c)) || (rc = get_modset(c, "target_modules", &c->target)) ||
	    (rc = get_modset(c, "exclude_modules", &c->exclude)) ||
	    (rc = get_patterns(c, "rank_pattern", 1, &c->ranks, &c->n_ranks)) ||
	    (rc = get_patterns(c, "alpha_pattern", 0, &c->alphas, &c->n_alphas)))
		return rc;
	if (!c->target.present) {
		c->target.present = 1;
		c->target.names = (const char **)peft_llama_default;
		c->target.n = sizeof peft_llama_default / sizeof *peft_llama_default;
	}
	if (!(plan->slots = loom_calloc((size_t)plan->n_layers * AD_N_TARGETS, sizeof *plan->slots)))
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", c->path);
	return resolve(c, plan);
}

loom_err ad_plan_load(const char *dir, const loom_model_config *base, ad_plan *plan)
{
	cfg c;
	char *path = NULL, *text = NULL;
	size_t len = 0, plen = strlen(dir) + sizeof "/adapter_config.json";
	json_error_t je;
	loom_err rc;

	memset(plan, 0, sizeof *plan);
	memset(&c, 0, sizeof c);
	plan->n_layers = c.n_layers = base->n_layers;
	if (!(path = loom_malloc(plen))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", dir);
		goto out;
	}
	snprintf(path, plen, "%s/adapter_config.json", dir);
	c.path = path;
	if ((rc = slurp(dir, path, &text, &len)))
		goto out;
	if (!(c.root = json_loadb(text, len, 0, &je))) {
		rc = json_error_code(&je) == json_error_out_of_memory
			     ? loom_fail(LOOM_ENOMEM, "%s: out of memory", path)
			     : loom_fail(LOOM_EFORMAT, "%s: not valid JSON: %s (line %d, column %d)",
					 path, je.text, je.line, je.column);
		goto out;
	}
	if (!(c.gctx = pcre2_general_context_create(rx_malloc, rx_free_mem, NULL)) ||
	    !(c.cctx = pcre2_compile_context_create(c.gctx))) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	rc = parse(&c, plan);
out:
	cfg_fini(&c);
	loom_free(text);
	loom_free(path);
	return rc;
}

void ad_plan_fini(ad_plan *plan)
{
	loom_free(plan->slots);
	plan->slots = NULL;
}
