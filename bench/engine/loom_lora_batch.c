/*
 * bench/engine/loom_lora_batch.c — loom-lora-batch: decode throughput of
 * heterogeneous multi-LoRA batches on the CPU backend (issue 3).
 *
 * Workload: n_seqs sequences (32) with random prompts of `prompt` tokens
 * (64) on a random model (hidden 768, 12 layers, 12 heads, FFN 2048, vocab
 * 32000, untied head by default), prefilled, then decoded greedily; the
 * decode steps are timed in four scenarios:
 *   base      every sequence on the base model
 *   one       every sequence on one adapter (rank 16, alpha 32, q,k,v,o)
 *   distinct  32 distinct rank-16 adapters (alpha 32) on q,k,v,o
 *   mixed     32 distinct adapters of ranks 8, 16, 32, 64 (alpha 2r) on q,k,v,o
 * Each scenario is one worker engine (worker/engine.h, manual mode) over the
 * same model: its adapters added with wk_engine_add_adapter, its requests
 * submitted as SUBMITs naming them, so the batch plan (grouping by adapter
 * into segments), chunked prefill, sampling and the STEP emission are all in
 * the timed wk_engine_step. Prefill is not timed. The four engines then run
 * round-robin, one decode step each per round (all n_seqs sequences decode
 * in every step), so the noise of a shared machine hits them alike. A
 * scenario's step time is the median over its measured steps; its ratio is
 * paired, the median over rounds of (base step time / its step time in the
 * same round), which cancels contention that lasts longer than a round. The
 * last line is lora_batch_ratio=<that ratio for distinct> (= distinct
 * tokens/s / base tokens/s).
 *
 * Model and adapters come from loom-mkmodel (found beside this program or in
 * $LOOM_BIN_DIR), cached under --cache DIR (default build/bench-cache) keyed
 * by shape and seed, so a second run starts in seconds.
 */
#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "common/proto.h"
#include "worker/engine.h"
#include "worker/forward.h"
#include "worker/kv.h"
#include "worker/model.h"
#include "worker/residency.h"

extern char **environ;

typedef struct opts {
	int hidden, layers, heads, kv_heads, ffn, vocab;
	int seqs, prompt, steps, warmup, threads, rank;
	wk_ad_dtype adapter_dtype; /* how adapters are held, as a worker's
				    * --adapter-dtype (default auto: BF16 when that
				    * rounds nothing, as for these BF16 files) */
	wk_kv_dtype kv_dtype;      /* --kv-dtype: the KV pools' elements */
	const char *cache, *json;
} opts;

enum { SC_BASE, SC_ONE, SC_DISTINCT, SC_MIXED, N_SC };
static const char *const sc_name[N_SC] = {"base", "one", "distinct", "mixed"};
static const char *const sc_desc[N_SC] = {
	"base only", "all on one adapter (r16 q,k,v,o)", "distinct r16 adapters (q,k,v,o)",
	"distinct, ranks 8-64 (q,k,v,o)"};

/* One scenario: an engine and what its emit callback counts. */
typedef struct scen {
	wk_engine *e;
	int n_seqs;
	uint64_t req0;        /* requests are req0 + 0 .. req0 + n_seqs - 1 */
	int *got;             /* [n_seqs] tokens each request has produced */
	long step_tokens;     /* tokens emitted by the last step */
	int finished;         /* requests that ended */
	int errors;
	char err[256];
	double *ms;           /* [steps] measured step times */
	int short_steps;      /* measured steps where not every sequence decoded */
	size_t lora_bytes;    /* A + Bt bytes of its distinct adapters (read per step) */
	int n_adapters;
	double med_ms, tok_s;
	double ratio;         /* median over rounds of base step ms / this step ms */
} scen;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
	double *c = loom_malloc(sizeof(double) * (size_t)n);
	if (!c)
		return v[0];
	memcpy(c, v, sizeof(double) * (size_t)n);
	qsort(c, (size_t)n, sizeof *c, cmp_double);
	double m = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
	loom_free(c);
	return m;
}

/* Adapters held as BF16 / float32 (add_adapter): what --adapter-dtype made. */
static int held_bf16, held_f32;

static const char *held_dtype(void)
{
	return held_f32 == 0 ? "bf16" : held_bf16 == 0 ? "f32" : "mixed bf16/f32";
}

/* ---- model and adapter generation (cached) ---- */

static char mkmodel[PATH_MAX + 32];

static int find_mkmodel(void)
{
	const char *bin = getenv("LOOM_BIN_DIR");
	if (bin && *bin) {
		snprintf(mkmodel, sizeof mkmodel, "%s/loom-mkmodel", bin);
		if (access(mkmodel, X_OK) == 0)
			return 0;
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n > 0) {
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = 0;
			snprintf(mkmodel, sizeof mkmodel, "%s/loom-mkmodel", self);
			if (access(mkmodel, X_OK) == 0)
				return 0;
		}
	}
	fprintf(stderr, "loom-lora-batch: loom-mkmodel not found beside this program or in "
		"$LOOM_BIN_DIR (build it: cmake --build build --target loom-mkmodel)\n");
	return -1;
}

static int mkdir_p(const char *path)
{
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s", path);
	for (char *s = p + 1; *s; s++)
		if (*s == '/') {
			*s = 0;
			if (mkdir(p, 0755) && errno != EEXIST)
				return -1;
			*s = '/';
		}
	return mkdir(p, 0755) && errno != EEXIST ? -1 : 0;
}

/* Runs loom-mkmodel with argv (argv[0] unused) into out, through out.tmp
 * renamed at the end so that an interrupted run leaves no half folder.
 * Reuses out when it already exists. */
static int generate(const char *out, char **argv)
{
	char probe[PATH_MAX + 32];
	snprintf(probe, sizeof probe, "%s/.done", out);
	if (access(probe, F_OK) == 0)
		return 0;
	char tmp[PATH_MAX + 8];
	snprintf(tmp, sizeof tmp, "%s.tmp", out);
	int i = 0;
	while (argv[i])
		i++;
	argv[0] = mkmodel;
	argv[i - 1] = tmp; /* the last argument is the --out value */
	pid_t pid;
	int st = 0;
	if (posix_spawn(&pid, mkmodel, NULL, NULL, argv, environ) ||
	    waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "loom-lora-batch: loom-mkmodel %s failed for %s\n", argv[1], out);
		return -1;
	}
	char cmd[3 * PATH_MAX];
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mv '%s' '%s' && touch '%s'", out, tmp, out,
		 probe);
	if (system(cmd)) {
		fprintf(stderr, "loom-lora-batch: cannot move %s into place\n", tmp);
		return -1;
	}
	return 0;
}

static int make_model(const opts *o, char *dir, size_t n)
{
	snprintf(dir, n, "%s/model-h%d-l%d-a%d-k%d-f%d-v%d", o->cache, o->hidden, o->layers,
		 o->heads, o->kv_heads, o->ffn, o->vocab);
	char h[16], l[16], a[16], k[16], f[16], v[16];
	snprintf(h, sizeof h, "%d", o->hidden);
	snprintf(l, sizeof l, "%d", o->layers);
	snprintf(a, sizeof a, "%d", o->heads);
	snprintf(k, sizeof k, "%d", o->kv_heads);
	snprintf(f, sizeof f, "%d", o->ffn);
	snprintf(v, sizeof v, "%d", o->vocab);
	char *argv[] = {"", "model", "--hidden", h, "--layers", l, "--heads", a, "--kv-heads", k,
			"--ffn", f, "--vocab", v, "--ctx", "4096", "--dtype", "bf16", "--seed",
			"11", "--out", "", NULL};
	return generate(dir, argv);
}

static loom_err make_adapter(const opts *o, const char *model_dir, const wk_model *m, int rank,
			     int seed, ad_adapter **out)
{
	char dir[PATH_MAX + 64], r[16], al[16], s[16], name[64];
	snprintf(dir, sizeof dir, "%s-ad-r%d-s%d", model_dir, rank, seed);
	snprintf(r, sizeof r, "%d", rank);
	snprintf(al, sizeof al, "%d", 2 * rank);
	snprintf(s, sizeof s, "%d", seed);
	char *argv[] = {"", "adapter", "--model", (char *)model_dir, "--rank", r, "--alpha", al,
			"--targets", "q_proj,k_proj,v_proj,o_proj", "--dtype", "bf16", "--seed", s,
			"--out", "", NULL};
	(void)o;
	if (generate(dir, argv))
		return LOOM_EIO;
	snprintf(name, sizeof name, "r%d-s%d", rank, seed);
	return ad_adapter_load(dir, name, &m->cfg, out);
}

/* ---- scenarios ---- */

static void on_emit(void *ctx, const loom_msg *m)
{
	scen *s = ctx;
	if (m->type == LOOM_MSG_STEP) {
		for (uint32_t i = 0; i < m->u.step.n_items; i++) {
			const loom_step_item *it = &m->u.step.items[i];
			s->step_tokens += it->n_ids;
			if (it->req >= s->req0 && it->req < s->req0 + (uint64_t)s->n_seqs)
				s->got[it->req - s->req0] += (int)it->n_ids;
			if (it->finish)
				s->finished++;
		}
	} else if (m->type == LOOM_MSG_ERROR) {
		if (!s->errors++)
			snprintf(s->err, sizeof s->err, "request %" PRIu64 ": %s", m->u.error.req,
				 m->u.error.message ? m->u.error.message : "");
	}
}

/* One engine iteration; -1 (message printed) on an ERROR or a finished
 * request, which the workload never expects. */
static int step(scen *s, const char *name)
{
	s->step_tokens = 0;
	wk_engine_step(s->e);
	if (s->errors || s->finished) {
		fprintf(stderr, "loom-lora-batch: %s: %s\n", name,
			s->errors ? s->err : "a request ended early");
		return -1;
	}
	return 0;
}

/* Adds the adapter at rank/seed to s's engine (ownership passes to it). */
static int add_adapter(const opts *o, const char *mdir, const wk_model *m, scen *s, int rank,
		       int seed, char *name, size_t n)
{
	ad_adapter *a = NULL;
	loom_err e = make_adapter(o, mdir, m, rank, seed, &a);
	bool to16 = !e && (o->adapter_dtype == WK_AD_BF16 ||
			   (o->adapter_dtype == WK_AD_AUTO && ad_adapter_bf16_exact(a)));
	if (!e) {
		if (to16)
			held_bf16++;
		else
			held_f32++;
	}
	if (to16) {
		ad_adapter *h = NULL;
		e = ad_adapter_to_bf16(a, &h);
		ad_adapter_destroy(a);
		a = h;
	}
	if (!e) {
		snprintf(name, n, "%s", a->name);
		s->lora_bytes += a->bytes;
		s->n_adapters++;
		e = wk_engine_add_adapter(s->e, m->name, a);
	}
	if (e)
		fprintf(stderr, "loom-lora-batch: adapter rank %d seed %d: %s\n", rank, seed,
			loom_errmsg());
	return e ? -1 : 0;
}

/* Creates scenario k's engine, its adapters and its n_seqs requests, and
 * runs it until every request has its first token (prefill done). */
static int scen_start(const opts *o, const char *mdir, wk_model *m, int k, scen *s,
		      const int32_t *prompts)
{
	static const int mixed_ranks[] = {8, 16, 32, 64};
	const int S = o->seqs, budget = S > 256 ? S : 256;
	/* sequences prefilled first decode while the others prefill (chunked) */
	const int max_tokens = o->warmup + o->steps + 8 + (S * o->prompt + budget - 1) / budget;
	const int per_seq = o->prompt + max_tokens + 1;
	s->n_seqs = S;
	s->req0 = 1 + (uint64_t)k * 1000000;
	s->got = loom_calloc((size_t)S, sizeof *s->got);
	s->ms = loom_calloc((size_t)o->steps, sizeof *s->ms);
	if (!s->got || !s->ms)
		return -1;
	wk_engine_opts eo = {.max_batch_tokens = budget, .max_seqs = S,
			     .kv_dtype = o->kv_dtype,
			     .kv_blocks = S * ((per_seq + WK_KV_BLOCK - 1) / WK_KV_BLOCK + 1),
			     .manual = true};
	wk_model *const ms[1] = {m};
	if (wk_engine_create(ms, 1, &eo, on_emit, s, &s->e)) {
		fprintf(stderr, "loom-lora-batch: engine: %s\n", loom_errmsg());
		return -1;
	}
	char one[LOOM_NAME_MAX] = "";
	char (*names)[LOOM_NAME_MAX] = loom_calloc((size_t)S, LOOM_NAME_MAX);
	if (!names)
		return -1;
	int rc = 0;
	if (k == SC_ONE)
		rc = add_adapter(o, mdir, m, s, o->rank, 1000, one, sizeof one);
	for (int q = 0; q < S && !rc; q++) {
		if (k == SC_ONE)
			snprintf(names[q], LOOM_NAME_MAX, "%s", one);
		else if (k == SC_DISTINCT)
			rc = add_adapter(o, mdir, m, s, o->rank, 1 + q, names[q], LOOM_NAME_MAX);
		else if (k == SC_MIXED)
			rc = add_adapter(o, mdir, m, s, mixed_ranks[q % 4], 2001 + q, names[q],
					 LOOM_NAME_MAX);
	}
	for (int q = 0; q < S && !rc; q++) {
		loom_msg_submit sub = {
			.req = s->req0 + (uint64_t)q,
			.n_prompt = (uint32_t)o->prompt,
			.prompt_ids = (int32_t *)(prompts + (size_t)q * o->prompt),
			.sampling = {.temperature = 0, .top_p = 1, .seed = (uint64_t)q + 1,
				     .max_tokens = (uint32_t)max_tokens,
				     .ignore_eos = true},
		};
		snprintf(sub.model, sizeof sub.model, "%s", m->name);
		snprintf(sub.adapter, sizeof sub.adapter, "%s", names[q]);
		if (wk_engine_submit(s->e, &sub))
			rc = -1;
	}
	loom_free(names);
	for (int it = 0; !rc; it++) {
		int all = 1;
		for (int q = 0; q < S; q++)
			all &= s->got[q] > 0;
		if (all)
			break;
		if (it > 4 * S * o->prompt) {
			fprintf(stderr, "loom-lora-batch: %s: prefill does not finish\n", sc_name[k]);
			return -1;
		}
		rc = step(s, sc_name[k]);
	}
	return rc;
}

static void scen_fini(scen *s)
{
	wk_engine_destroy(s->e);
	loom_free(s->got);
	loom_free(s->ms);
}

static const char usage[] =
	"usage: loom-lora-batch [--steps 32] [--threads N] [--json FILE] [--cache DIR]\n"
	"           [--seqs 32] [--prompt 64] [--hidden 768] [--layers 12] [--heads 12]\n"
	"           [--kv-heads 12] [--ffn 2048] [--vocab 32000] [--rank 16]\n"
	"           [--adapter-dtype auto|f32|bf16 (auto)] [--kv-dtype f32|bf16 (f32)] [--smoke]\n";

static int parse(int argc, char **argv, opts *o)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	*o = (opts){.hidden = 768, .layers = 12, .heads = 12, .kv_heads = 12, .ffn = 2048,
		    .vocab = 32000, .seqs = 32, .prompt = 64, .steps = 32, .warmup = 2,
		    .threads = ncpu > 0 ? (int)ncpu : 1, .rank = 16,
		    .cache = "build/bench-cache", .adapter_dtype = WK_AD_AUTO};
	struct {
		const char *name;
		int *v, lo, hi;
	} ints[] = {
		{"--steps", &o->steps, 1, 100000},  {"--threads", &o->threads, 1, 1024},
		{"--seqs", &o->seqs, 1, 4096},      {"--prompt", &o->prompt, 1, 4096},
		{"--hidden", &o->hidden, 8, 65536}, {"--layers", &o->layers, 1, 1024},
		{"--heads", &o->heads, 1, 1024},    {"--kv-heads", &o->kv_heads, 1, 1024},
		{"--ffn", &o->ffn, 8, 262144},      {"--vocab", &o->vocab, 16, 1 << 20},
		{"--rank", &o->rank, 1, 1024},
	};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(usage, stdout);
			exit(0);
		}
		if (!strcmp(a, "--smoke")) {
			o->hidden = 64, o->layers = 2, o->heads = 4, o->kv_heads = 2, o->ffn = 128;
			o->vocab = 300, o->seqs = 8, o->prompt = 8, o->steps = 2, o->warmup = 1;
			continue;
		}
		if (i + 1 >= argc)
			goto bad;
		const char *v = argv[++i];
		if (!strcmp(a, "--json")) {
			o->json = v;
			continue;
		}
		if (!strcmp(a, "--cache")) {
			o->cache = v;
			continue;
		}
		if (!strcmp(a, "--kv-dtype")) {
			if (strcmp(v, "f32") && strcmp(v, "bf16")) {
				fprintf(stderr, "loom-lora-batch: --kv-dtype is f32 or bf16, got \"%s\"\n",
					v);
				return 2;
			}
			o->kv_dtype = !strcmp(v, "bf16") ? WK_KV_BF16 : WK_KV_F32;
			continue;
		}
		if (!strcmp(a, "--adapter-dtype")) {
			if (strcmp(v, "f32") && strcmp(v, "bf16") && strcmp(v, "auto")) {
				fprintf(stderr, "loom-lora-batch: --adapter-dtype is auto, f32 or bf16, "
					"got \"%s\"\n", v);
				return 2;
			}
			o->adapter_dtype = !strcmp(v, "bf16") ? WK_AD_BF16
					   : !strcmp(v, "f32") ? WK_AD_F32 : WK_AD_AUTO;
			continue;
		}
		size_t k = 0;
		for (; k < sizeof ints / sizeof ints[0]; k++)
			if (!strcmp(a, ints[k].name))
				break;
		if (k == sizeof ints / sizeof ints[0])
			goto bad;
		char *end;
		errno = 0;
		long x = strtol(v, &end, 10);
		if (errno || *end || end == v || x < ints[k].lo || x > ints[k].hi) {
			fprintf(stderr, "loom-lora-batch: %s needs an integer in %d..%d, got \"%s\"\n",
				a, ints[k].lo, ints[k].hi, v);
			return 2;
		}
		*ints[k].v = (int)x;
		continue;
bad:
		fprintf(stderr, "loom-lora-batch: unknown or incomplete option \"%s\"\n%s", a, usage);
		return 2;
	}
	if (o->heads % o->kv_heads || o->hidden % o->heads) {
		fprintf(stderr, "loom-lora-batch: heads must divide hidden and be a multiple of "
			"kv-heads\n");
		return 2;
	}
	return 0;
}

static size_t base_weight_bytes(const loom_model_config *c)
{
	size_t d = c->hidden, q = (size_t)c->n_heads * c->head_dim;
	size_t kv = (size_t)c->n_kv_heads * c->head_dim, f = c->ffn;
	size_t layer = d * q * 2 + d * kv * 2 + 3 * d * f;
	return sizeof(float) * ((size_t)c->n_layers * layer + (size_t)c->vocab * d);
}

static int write_json(const opts *o, const wk_model *m, const scen *sc, double ratio)
{
	json_t *root = json_object(), *arr = json_array();
	json_object_set_new(root, "benchmark", json_string("loom-lora-batch"));
	json_object_set_new(root, "backend", json_string("cpu"));
	json_object_set_new(root, "threads", json_integer(o->threads));
	json_object_set_new(root, "adapter_dtype", json_string(held_dtype()));
	json_object_set_new(root, "kv_dtype", json_string(o->kv_dtype == WK_KV_BF16 ? "bf16" : "f32"));
	json_object_set_new(root, "adapter_dtype_option",
			    json_string(o->adapter_dtype == WK_AD_BF16  ? "bf16"
					: o->adapter_dtype == WK_AD_F32 ? "f32"
									: "auto"));
	json_object_set_new(root, "seqs", json_integer(o->seqs));
	json_object_set_new(root, "prompt", json_integer(o->prompt));
	json_object_set_new(root, "steps", json_integer(o->steps));
	json_t *mo = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:I}", "hidden", m->cfg.hidden,
			       "layers", m->cfg.n_layers, "heads", m->cfg.n_heads, "kv_heads",
			       m->cfg.n_kv_heads, "ffn", m->cfg.ffn, "vocab", m->cfg.vocab,
			       "weight_bytes", (json_int_t)base_weight_bytes(&m->cfg));
	json_object_set_new(root, "model", mo);
	for (int i = 0; i < N_SC; i++)
		json_array_append_new(arr, json_pack("{s:s, s:s, s:f, s:f, s:f, s:I}", "name",
						     sc_name[i], "desc", sc_desc[i],
						     "tokens_per_s", sc[i].tok_s, "step_ms",
						     sc[i].med_ms, "ratio",
						     sc[i].ratio, "lora_bytes",
						     (json_int_t)sc[i].lora_bytes));
	json_object_set_new(root, "scenarios", arr);
	json_object_set_new(root, "lora_batch_ratio", json_real(ratio));
	int rc = json_dump_file(root, o->json, JSON_INDENT(2));
	json_decref(root);
	if (rc)
		fprintf(stderr, "loom-lora-batch: cannot write %s\n", o->json);
	return rc ? -1 : 0;
}

int main(int argc, char **argv)
{
	opts o;
	int st = parse(argc, argv, &o);
	if (st)
		return st;
	if (find_mkmodel())
		return 1;
	if (mkdir_p(o.cache)) {
		fprintf(stderr, "loom-lora-batch: cannot create %s: %s\n", o.cache, strerror(errno));
		return 1;
	}
	openblas_set_num_threads(o.threads);
	wk_forward_threads(o.threads); /* the forward's pool, as loom-worker --threads sets it */

	int rc = 1;
	char mdir[PATH_MAX];
	wk_model *m = NULL;
	scen sc[N_SC];
	memset(sc, 0, sizeof sc);
	int32_t *prompts = NULL;
	const int S = o.seqs;
	double t0 = now_ms();

	if (make_model(&o, mdir, sizeof mdir))
		goto out;
	if (wk_model_load(mdir, "base", &m)) {
		fprintf(stderr, "loom-lora-batch: %s\n", loom_errmsg());
		goto out;
	}
	prompts = loom_malloc(sizeof(int32_t) * (size_t)S * o.prompt);
	if (!prompts)
		goto oom;
	uint64_t x = 0x2545f4914f6cdd1dULL;
	for (int i = 0; i < S * o.prompt; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		prompts[i] = (int32_t)(x % (uint64_t)m->cfg.vocab);
	}
	for (int k = 0; k < N_SC; k++)
		if (scen_start(&o, mdir, m, k, &sc[k], prompts))
			goto out;
	double t_setup = now_ms() - t0;
	for (int w = 0; w < o.warmup; w++)
		for (int k = 0; k < N_SC; k++)
			if (step(&sc[k], sc_name[k]))
				goto out;
	for (int i = 0; i < o.steps; i++)
		for (int k = 0; k < N_SC; k++) {
			/* rotate the order so no scenario always follows the same one */
			int j = (k + i) % N_SC;
			scen *s = &sc[j];
			double a = now_ms();
			if (step(s, sc_name[j]))
				goto out;
			s->ms[i] = now_ms() - a;
			s->short_steps += s->step_tokens != S;
		}

	printf("loom-lora-batch: CPU, %d thread(s); model hidden %d, %d layers, %d/%d "
	       "heads, FFN %d, vocab %d (%.1f MB of f32 weights read per step); %s adapters\n",
	       o.threads, m->cfg.hidden, m->cfg.n_layers, m->cfg.n_heads, m->cfg.n_kv_heads,
	       m->cfg.ffn, m->cfg.vocab, base_weight_bytes(&m->cfg) / 1e6,
	       held_dtype());
	printf("KV cache: %s\n", o.kv_dtype == WK_KV_BF16 ? "BF16" : "float32");
	printf("%d sequences, prompt %d, %d measured engine decode steps per scenario (median); "
	       "%.1f s to set up and prefill\n\n", S, o.prompt, o.steps,
	       t_setup / 1e3);
	printf("%-36s %10s %9s %7s %10s\n", "scenario", "tokens/s", "step ms", "ratio",
	       "LoRA MB");
	for (int k = 0; k < N_SC; k++) {
		sc[k].med_ms = median(sc[k].ms, o.steps);
		sc[k].tok_s = S / (sc[k].med_ms / 1e3);
		double *r = loom_malloc(sizeof(double) * (size_t)o.steps);
		if (!r)
			goto oom;
		for (int i = 0; i < o.steps; i++)
			r[i] = sc[SC_BASE].ms[i] / sc[k].ms[i];
		sc[k].ratio = median(r, o.steps);
		loom_free(r);
	}
	for (int k = 0; k < N_SC; k++) {
		printf("%-36s %10.1f %9.2f %7.3f %10.1f\n", sc_desc[k], sc[k].tok_s, sc[k].med_ms,
		       sc[k].ratio, sc[k].lora_bytes / 1e6);
		if (sc[k].short_steps)
			printf("  (%d measured steps of %s decoded fewer than %d sequences)\n",
			       sc[k].short_steps, sc_name[k], S);
	}
	double ratio = sc[SC_DISTINCT].ratio;
	if (o.json && write_json(&o, m, sc, ratio))
		goto out;
	printf("lora_batch_ratio=%.3f\n", ratio);
	rc = 0;
	goto out;
oom:
	fprintf(stderr, "loom-lora-batch: out of memory\n");
out:
	for (int k = 0; k < N_SC; k++)
		scen_fini(&sc[k]);
	loom_free(prompts);
	wk_model_destroy(m);
	return rc;
}
