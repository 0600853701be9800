/*
 * tools/mkmodel/main.c — loom-mkmodel's command line.
 *
 *   loom-mkmodel model --out DIR [--hidden 64] [--ffn 172] [--layers 2] [--heads 4]
 *        [--kv-heads 2] [--vocab 512] [--ctx 256] [--dtype f32|f16|bf16] [--tied]
 *        [--tokenizer sp|bytelevel] [--seed 1] [--rope-theta 10000] [--rms-eps 1e-5]
 *        [--shards 1] [--family llama|llama3|qwen2|qwen3|mistral|gemma2] [--head-dim N]
 *        [--rope-scaling linear|dynamic|yarn|llama3] [--rope-factor F]
 *        [--rope-original-max N] [--sliding-window N] [--max-window-layers N]
 *        [--attention-bias] [--mlp-bias] [--tokenizer-json PATH] [--tokenizer-config PATH]
 *   loom-mkmodel adapter --model DIR --out DIR [--rank 8] [--alpha 16]
 *        [--targets q_proj,v_proj] [--dtype f32] [--seed 1] [--rslora] [--layers 0,2]
 *
 * --family picks the Hugging Face family whose config fields and tensors are
 * written (mk_model.h); its defaults (tokenizer shape, rope_theta, rms_eps,
 * tied, head_dim, windows) apply to whatever flags leave out.
 *
 * Exit status: 0 done; 2 usage error (one line on stderr); 1 I/O or other
 * failure (one line naming the path). Options take "--name value" or
 * "--name=value".
 */
#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "mk_model.h"

static const char usage[] =
	"usage: loom-mkmodel model --out DIR [--hidden 64] [--ffn 172] [--layers 2] [--heads 4]\n"
	"           [--kv-heads 2] [--vocab 512] [--ctx 256] [--dtype f32|f16|bf16] [--tied]\n"
	"           [--tokenizer sp|bytelevel] [--seed 1] [--rope-theta 10000] [--rms-eps 1e-5]\n"
	"           [--shards 1] [--family llama|llama3|qwen2|qwen3|mistral|gemma2]\n"
	"           [--head-dim N] [--rope-scaling linear|dynamic|yarn|llama3] [--rope-factor F]\n"
	"           [--rope-original-max N] [--sliding-window N] [--max-window-layers N]\n"
	"           [--attention-bias] [--mlp-bias] [--tokenizer-json PATH]\n"
	"           [--tokenizer-config PATH]\n"
	"       loom-mkmodel adapter --model DIR --out DIR [--rank 8] [--alpha 16]\n"
	"           [--targets q_proj,v_proj] [--dtype f32] [--seed 1] [--rslora]\n"
	"           [--layers 0,2]\n";

/* Prints one line and returns exit status 2. */
__attribute__((format(printf, 1, 2))) static int bad_usage(const char *fmt, ...)
{
	va_list ap;
	fputs("loom-mkmodel: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs(" (see loom-mkmodel --help)\n", stderr);
	return 2;
}

static int parse_int(const char *opt, const char *s, int lo, int hi, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return bad_usage("%s needs an integer in %d..%d, got \"%s\"", opt, lo, hi, s);
	*out = (int)v;
	return 0;
}

static int parse_u64(const char *opt, const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return bad_usage("%s needs a non-negative integer, got \"%s\"", opt, s);
	*out = v;
	return 0;
}

static int parse_pos_double(const char *opt, const char *s, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v > 0) || v > 1e300)
		return bad_usage("%s needs a positive number, got \"%s\"", opt, s);
	*out = v;
	return 0;
}

/* names[i] -> i (the enum's order); families and ropes below. */
static int parse_enum(const char *opt, const char *s, const char *const *names, int n, int *out)
{
	for (int i = 0; i < n; i++)
		if (names[i] && strcmp(s, names[i]) == 0) {
			*out = i;
			return 0;
		}
	char list[256];
	size_t o = 0;
	for (int i = 0; i < n; i++)
		if (names[i])
			o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "",
					      names[i]);
	return bad_usage("%s must be one of %s, got \"%s\"", opt, list, s);
}

/* In mk_family / mk_rope order. */
static const char *const families[] = { "llama", "llama3", "qwen2", "qwen3", "mistral", "gemma2" };
static const char *const ropes[] = { NULL, "linear", "dynamic", "yarn", "llama3" };

static int parse_dtype(const char *s, loom_dtype *out)
{
	if (strcmp(s, "f32") == 0)
		*out = LOOM_DT_F32;
	else if (strcmp(s, "f16") == 0)
		*out = LOOM_DT_F16;
	else if (strcmp(s, "bf16") == 0)
		*out = LOOM_DT_BF16;
	else
		return bad_usage("--dtype must be f32, f16 or bf16, got \"%s\"", s);
	return 0;
}

/* Splits "a,b,c" in place into at most max non-empty items. */
static int split_list(const char *opt, char *s, char **items, int max, int *n)
{
	*n = 0;
	for (char *tok = s;; ) {
		char *comma = strchr(tok, ',');
		if (comma)
			*comma = '\0';
		if (!*tok)
			return bad_usage("%s has an empty item", opt);
		if (*n == max)
			return bad_usage("%s lists more than %d items", opt, max);
		items[(*n)++] = tok;
		if (!comma)
			return 0;
		tok = comma + 1;
	}
}

/* Walks argv: on "--name[=value]" sets *name and *val (NULL for a flag
 * that is followed by another option or nothing). Returns the next index. */
struct arg {
	char name[64];
	char *val;
};

static int next_arg(int argc, char **argv, int i, struct arg *a, int *rc)
{
	const char *s = argv[i];
	*rc = 0;
	if (strncmp(s, "--", 2) != 0 || !s[2]) {
		*rc = bad_usage("unexpected argument \"%s\"", s);
		return i + 1;
	}
	const char *eq = strchr(s, '=');
	size_t len = eq ? (size_t)(eq - s) : strlen(s);
	if (len >= sizeof a->name) {
		*rc = bad_usage("unknown option \"%.60s\"", s);
		return i + 1;
	}
	memcpy(a->name, s, len);
	a->name[len] = '\0';
	if (eq) {
		a->val = (char *)eq + 1;
		return i + 1;
	}
	if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
		a->val = argv[i + 1];
		return i + 2;
	}
	a->val = NULL;
	return i + 1;
}

static int is_flag(const char *name)
{
	return strcmp(name, "--tied") == 0 || strcmp(name, "--rslora") == 0 ||
	       strcmp(name, "--attention-bias") == 0 || strcmp(name, "--mlp-bias") == 0;
}

/* Checks value presence for a; returns 0 or a usage status. */
static int check_val(const struct arg *a)
{
	if (is_flag(a->name) && a->val)
		return bad_usage("%s takes no value", a->name);
	if (!is_flag(a->name) && !a->val)
		return bad_usage("%s needs a value", a->name);
	return 0;
}

static int finish(loom_err rc)
{
	if (rc == LOOM_OK)
		return 0;
	fprintf(stderr, "loom-mkmodel: %s\n", loom_errmsg()[0] ? loom_errmsg() : loom_strerror(rc));
	return rc == LOOM_EINVAL ? 2 : 1;
}

static int cmd_model(int argc, char **argv)
{
	mk_model_opts o = { .hidden = 64, .ffn = 172, .layers = 2, .heads = 4, .kv_heads = 2,
			    .vocab = 512, .ctx = 256, .shards = 1, .dtype = LOOM_DT_F32,
			    .tok = MK_TOK_SP, .seed = 1, .max_window_layers = -1 };
	const int big = 1 << 20;
	struct arg a;
	int rc;

	for (int i = 2; i < argc;) {
		i = next_arg(argc, argv, i, &a, &rc);
		if (!rc && strcmp(a.name, "--help") == 0) {
			fputs(usage, stdout);
			return 0;
		}
		if (rc || (rc = check_val(&a)))
			return rc;
		if (strcmp(a.name, "--out") == 0)
			o.out = a.val;
		else if (strcmp(a.name, "--hidden") == 0)
			rc = parse_int(a.name, a.val, 1, big, &o.hidden);
		else if (strcmp(a.name, "--ffn") == 0)
			rc = parse_int(a.name, a.val, 1, big, &o.ffn);
		else if (strcmp(a.name, "--layers") == 0)
			rc = parse_int(a.name, a.val, 1, 4096, &o.layers);
		else if (strcmp(a.name, "--heads") == 0)
			rc = parse_int(a.name, a.val, 1, big, &o.heads);
		else if (strcmp(a.name, "--kv-heads") == 0)
			rc = parse_int(a.name, a.val, 1, big, &o.kv_heads);
		else if (strcmp(a.name, "--vocab") == 0) {
			rc = parse_int(a.name, a.val, 1, 1 << 24, &o.vocab);
			o.vocab_set = true;
		}
		else if (strcmp(a.name, "--ctx") == 0)
			rc = parse_int(a.name, a.val, 1, 1 << 24, &o.ctx);
		else if (strcmp(a.name, "--shards") == 0)
			rc = parse_int(a.name, a.val, 1, 99999, &o.shards);
		else if (strcmp(a.name, "--dtype") == 0)
			rc = parse_dtype(a.val, &o.dtype);
		else if (strcmp(a.name, "--tied") == 0)
			o.tied = true;
		else if (strcmp(a.name, "--tokenizer") == 0) {
			o.tok_set = true;
			if (strcmp(a.val, "sp") == 0)
				o.tok = MK_TOK_SP;
			else if (strcmp(a.val, "bytelevel") == 0)
				o.tok = MK_TOK_BYTELEVEL;
			else
				rc = bad_usage("--tokenizer must be sp or bytelevel, got \"%s\"", a.val);
		} else if (strcmp(a.name, "--seed") == 0)
			rc = parse_u64(a.name, a.val, &o.seed);
		else if (strcmp(a.name, "--rope-theta") == 0)
			rc = parse_pos_double(a.name, a.val, &o.rope_theta);
		else if (strcmp(a.name, "--rms-eps") == 0)
			rc = parse_pos_double(a.name, a.val, &o.rms_eps);
		else if (strcmp(a.name, "--family") == 0)
			rc = parse_enum(a.name, a.val, families, 6, (int *)&o.family);
		else if (strcmp(a.name, "--head-dim") == 0)
			rc = parse_int(a.name, a.val, 2, big, &o.head_dim);
		else if (strcmp(a.name, "--rope-scaling") == 0)
			rc = parse_enum(a.name, a.val, ropes, 5, (int *)&o.rope);
		else if (strcmp(a.name, "--rope-factor") == 0)
			rc = parse_pos_double(a.name, a.val, &o.rope_factor);
		else if (strcmp(a.name, "--rope-original-max") == 0)
			rc = parse_int(a.name, a.val, 1, 1 << 24, &o.rope_orig_max);
		else if (strcmp(a.name, "--sliding-window") == 0)
			rc = parse_int(a.name, a.val, 1, 1 << 24, &o.sliding_window);
		else if (strcmp(a.name, "--max-window-layers") == 0)
			rc = parse_int(a.name, a.val, 0, 4096, &o.max_window_layers);
		else if (strcmp(a.name, "--attention-bias") == 0)
			o.attn_bias = true;
		else if (strcmp(a.name, "--mlp-bias") == 0)
			o.mlp_bias = true;
		else if (strcmp(a.name, "--tokenizer-json") == 0)
			o.tokenizer_json = a.val;
		else if (strcmp(a.name, "--tokenizer-config") == 0)
			o.tokenizer_config = a.val;
		else
			rc = bad_usage("unknown option %s for model", a.name);
		if (rc)
			return rc;
	}
	if (!o.out || !o.out[0])
		return bad_usage("model needs --out DIR");
	if (o.tokenizer_config && !o.tokenizer_json)
		return bad_usage("--tokenizer-config needs --tokenizer-json");
	if (o.tokenizer_json && o.tok_set)
		return bad_usage("--tokenizer and --tokenizer-json exclude each other");
	return finish(mk_model_write(&o));
}

static int cmd_adapter(int argc, char **argv)
{
	mk_adapter_opts *o = loom_calloc(1, sizeof *o);
	char *items[MK_MAX_LAYERS];
	int n, rc = 0;
	struct arg a;

	if (!o) {
		fputs("loom-mkmodel: out of memory\n", stderr);
		return 1;
	}
	o->rank = 8;
	o->alpha = 16;
	o->dtype = LOOM_DT_F32;
	o->seed = 1;
	o->n_targets = 2;
	o->targets[0] = "q_proj";
	o->targets[1] = "v_proj";
	for (int i = 2; i < argc && !rc;) {
		i = next_arg(argc, argv, i, &a, &rc);
		if (!rc && strcmp(a.name, "--help") == 0) {
			fputs(usage, stdout);
			loom_free(o);
			return 0;
		}
		if (rc || (rc = check_val(&a)))
			break;
		if (strcmp(a.name, "--out") == 0)
			o->out = a.val;
		else if (strcmp(a.name, "--model") == 0)
			o->model = a.val;
		else if (strcmp(a.name, "--rank") == 0)
			rc = parse_int(a.name, a.val, 1, 65536, &o->rank);
		else if (strcmp(a.name, "--alpha") == 0)
			rc = parse_pos_double(a.name, a.val, &o->alpha);
		else if (strcmp(a.name, "--dtype") == 0)
			rc = parse_dtype(a.val, &o->dtype);
		else if (strcmp(a.name, "--seed") == 0)
			rc = parse_u64(a.name, a.val, &o->seed);
		else if (strcmp(a.name, "--rslora") == 0)
			o->rslora = true;
		else if (strcmp(a.name, "--targets") == 0) {
			if (!(rc = split_list(a.name, a.val, items, MK_MAX_TARGETS, &n))) {
				for (int k = 0; k < n && !rc; k++) {
					if (!mk_target_known(items[k]))
						rc = bad_usage("--targets: unknown module \"%s\" (q_proj, "
							       "k_proj, v_proj, o_proj, gate_proj, "
							       "up_proj, down_proj)", items[k]);
					for (int j = 0; j < k && !rc; j++)
						if (strcmp(items[j], items[k]) == 0)
							rc = bad_usage("--targets lists %s twice",
								       items[k]);
					o->targets[k] = items[k];
				}
				o->n_targets = n;
			}
		} else if (strcmp(a.name, "--layers") == 0) {
			if (!(rc = split_list(a.name, a.val, items, MK_MAX_LAYERS, &n))) {
				for (int k = 0; k < n && !rc; k++) {
					rc = parse_int(a.name, items[k], 0, MK_MAX_LAYERS - 1,
						       &o->layers[k]);
					for (int j = 0; j < k && !rc; j++)
						if (o->layers[j] == o->layers[k])
							rc = bad_usage("--layers lists %d twice",
								       o->layers[k]);
				}
				o->n_layers = n;
			}
		} else {
			rc = bad_usage("unknown option %s for adapter", a.name);
		}
	}
	if (!rc && (!o->model || !o->model[0]))
		rc = bad_usage("adapter needs --model DIR");
	if (!rc && (!o->out || !o->out[0]))
		rc = bad_usage("adapter needs --out DIR");
	if (!rc)
		rc = finish(mk_adapter_write(o));
	loom_free(o);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return bad_usage("missing command: model or adapter");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(usage, stdout);
		return 0;
	}
	if (strcmp(argv[1], "model") == 0)
		return cmd_model(argc, argv);
	if (strcmp(argv[1], "adapter") == 0)
		return cmd_adapter(argc, argv);
	return bad_usage("unknown command \"%s\": model or adapter", argv[1]);
}
