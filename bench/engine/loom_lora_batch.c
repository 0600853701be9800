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
 * All four keep their own KV caches and run round-robin, one decode step
 * each per round, so the noise of a shared machine hits them alike; a
 * scenario's step time is the median over its measured steps. The last line
 * is lora_batch_ratio=<distinct tokens/s / base tokens/s>.
 *
 * Batches are built the way the engine's batch plan builds them (sequences
 * ordered by adapter, one segment per run of equal adapters) and run
 * through wk_forward; timing covers wk_forward only.
 * TODO(issue 3): drive worker/engine.h in manual mode (wk_engine_add_adapter,
 * SUBMIT.adapter) once the engine takes adapters.
 *
 * Model and adapters come from loom-mkmodel (found beside this program),
 * cached under --cache DIR (default build/bench-cache) keyed by shape and
 * seed, so a second run starts in seconds.
 */
#include <cblas.h>
#include <errno.h>
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
#include "worker/forward.h"
#include "worker/kv.h"
#include "worker/model.h"

extern char **environ;

typedef struct opts {
	int hidden, layers, heads, kv_heads, ffn, vocab;
	int seqs, prompt, steps, warmup, threads, rank;
	const char *cache, *json;
} opts;

enum { SC_BASE, SC_ONE, SC_DISTINCT, SC_MIXED, N_SC };
static const char *const sc_name[N_SC] = {"base", "one", "distinct", "mixed"};
static const char *const sc_desc[N_SC] = {
	"base only", "all on one adapter (r16 q,k,v,o)", "distinct r16 adapters (q,k,v,o)",
	"distinct, ranks 8-64 (q,k,v,o)"};

typedef struct scen {
	const ad_adapter **seq_ad; /* [seqs] adapter of each sequence (NULL = base) */
	wk_kv **kv;                /* [seqs] */
	int32_t *tok;              /* [seqs] next input token */
	int n_segs;
	int32_t *seg_start;        /* [seqs + 1] */
	const ad_adapter **seg_ad; /* [seqs] */
	double *ms;                /* [steps] measured step times */
	size_t lora_bytes;         /* A + Bt bytes read per decode step */
	double med_ms, tok_s;
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

static size_t lora_bytes(const ad_adapter *a)
{
	return a ? a->bytes : 0;
}

/* Segments: one per run of consecutive sequences with the same adapter. */
static void plan_segments(scen *s, int seqs, int per_seq_tokens)
{
	s->n_segs = 0;
	for (int q = 0; q < seqs; q++) {
		if (q == 0 || s->seq_ad[q] != s->seq_ad[q - 1]) {
			s->seg_start[s->n_segs] = q * per_seq_tokens;
			s->seg_ad[s->n_segs++] = s->seq_ad[q];
		}
	}
	s->seg_start[s->n_segs] = seqs * per_seq_tokens;
	if (s->n_segs == 1 && !s->seg_ad[0])
		s->n_segs = 0; /* base only: no plan */
}

static int argmax(const float *v, int n)
{
	int best = 0;
	for (int i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}

/* One forward over every sequence of s with tokens tok ([seqs * per] flat,
 * per tokens each); sets each sequence's next token from its logits. */
static loom_err run_step(const wk_model *m, const opts *o, scen *s, wk_scratch *ws,
			 const int32_t *tok, int per, int32_t *seq_start, float *logits)
{
	for (int q = 0; q <= o->seqs; q++)
		seq_start[q] = q * per;
	plan_segments(s, o->seqs, per);
	wk_batch b = {.n_seqs = o->seqs, .seq_start = seq_start, .tokens = tok, .kv = s->kv,
		      .n_segs = s->n_segs, .seg_start = s->seg_start, .seg_adapter = s->seg_ad};
	loom_err rc = wk_forward(m, &b, ws, logits);
	if (rc)
		return rc;
	for (int q = 0; q < o->seqs; q++)
		s->tok[q] = argmax(logits + (size_t)q * m->cfg.vocab, m->cfg.vocab);
	return LOOM_OK;
}

/* ---- command line ---- */

static const char usage[] =
	"usage: loom-lora-batch [--steps 32] [--threads N] [--json FILE] [--cache DIR]\n"
	"           [--seqs 32] [--prompt 64] [--hidden 768] [--layers 12] [--heads 12]\n"
	"           [--kv-heads 12] [--ffn 2048] [--vocab 32000] [--rank 16] [--smoke]\n";

static int parse(int argc, char **argv, opts *o)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	*o = (opts){.hidden = 768, .layers = 12, .heads = 12, .kv_heads = 12, .ffn = 2048,
		    .vocab = 32000, .seqs = 32, .prompt = 64, .steps = 32, .warmup = 2,
		    .threads = ncpu > 0 ? (int)ncpu : 1, .rank = 16,
		    .cache = "build/bench-cache"};
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
						     sc[i].tok_s / sc[SC_BASE].tok_s, "lora_bytes",
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
	if (find_mkmodel() || mkdir_p(o.cache)) {
		if (errno)
			fprintf(stderr, "loom-lora-batch: cannot create %s: %s\n", o.cache,
				strerror(errno));
		return 1;
	}
	openblas_set_num_threads(o.threads);

	int rc = 1;
	char mdir[PATH_MAX];
	wk_model *m = NULL;
	wk_scratch *ws = NULL;
	ad_adapter *one = NULL, **dist = NULL, **mixd = NULL;
	scen sc[N_SC];
	memset(sc, 0, sizeof sc);
	int32_t *seq_start = NULL, *prompt = NULL;
	float *logits = NULL;
	const int S = o.seqs, cap = o.prompt + o.warmup + o.steps + 1;
	double t0 = now_ms();

	if (make_model(&o, mdir, sizeof mdir))
		goto out;
	if (wk_model_load(mdir, "base", &m)) {
		fprintf(stderr, "loom-lora-batch: %s\n", loom_errmsg());
		goto out;
	}
	dist = loom_calloc((size_t)S, sizeof *dist);
	mixd = loom_calloc((size_t)S, sizeof *mixd);
	if (!dist || !mixd)
		goto oom;
	static const int mixed_ranks[] = {8, 16, 32, 64};
	loom_err e = make_adapter(&o, mdir, m, o.rank, 1000, &one);
	for (int i = 0; i < S && !e; i++)
		e = make_adapter(&o, mdir, m, o.rank, 1 + i, &dist[i]);
	for (int i = 0; i < S && !e; i++)
		e = make_adapter(&o, mdir, m, mixed_ranks[i % 4], 2001 + i, &mixd[i]);
	if (e) {
		fprintf(stderr, "loom-lora-batch: adapter: %s\n", loom_errmsg());
		goto out;
	}
	if (wk_scratch_create(m, &ws))
		goto oom;
	seq_start = loom_malloc(sizeof(int32_t) * (size_t)(S + 1));
	prompt = loom_malloc(sizeof(int32_t) * (size_t)S * o.prompt);
	logits = loom_malloc(sizeof(float) * (size_t)S * m->cfg.vocab);
	if (!seq_start || !prompt || !logits)
		goto oom;
	uint64_t x = 0x2545f4914f6cdd1dULL;
	for (int i = 0; i < S * o.prompt; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		prompt[i] = (int32_t)(x % (uint64_t)m->cfg.vocab);
	}
	for (int k = 0; k < N_SC; k++) {
		scen *s = &sc[k];
		s->seq_ad = loom_calloc((size_t)S, sizeof *s->seq_ad);
		s->kv = loom_calloc((size_t)S, sizeof *s->kv);
		s->tok = loom_calloc((size_t)S, sizeof *s->tok);
		s->seg_start = loom_calloc((size_t)S + 1, sizeof *s->seg_start);
		s->seg_ad = loom_calloc((size_t)S, sizeof *s->seg_ad);
		s->ms = loom_calloc((size_t)o.steps, sizeof *s->ms);
		if (!s->seq_ad || !s->kv || !s->tok || !s->seg_start || !s->seg_ad || !s->ms)
			goto oom;
		for (int q = 0; q < S; q++) {
			s->seq_ad[q] = k == SC_ONE ? one : k == SC_DISTINCT ? dist[q]
						   : k == SC_MIXED ? mixd[q] : NULL;
			if (wk_kv_create(m, cap, &s->kv[q]))
				goto oom;
		}
		for (int q = 0; q < S; q++) {
			int dup = 0;
			for (int r = 0; r < q && !dup; r++)
				dup = s->seq_ad[r] == s->seq_ad[q];
			if (!dup)
				s->lora_bytes += lora_bytes(s->seq_ad[q]);
		}
	}
	double t_setup = now_ms() - t0;

	/* prefill (not timed for the ratio), then warm-up decodes */
	double t_pre = now_ms();
	for (int k = 0; k < N_SC; k++)
		if ((e = run_step(m, &o, &sc[k], ws, prompt, o.prompt, seq_start, logits)))
			goto fail;
	t_pre = now_ms() - t_pre;
	for (int w = 0; w < o.warmup; w++)
		for (int k = 0; k < N_SC; k++)
			if ((e = run_step(m, &o, &sc[k], ws, sc[k].tok, 1, seq_start, logits)))
				goto fail;
	for (int st_i = 0; st_i < o.steps; st_i++)
		for (int k = 0; k < N_SC; k++) {
			/* rotate the order so no scenario always follows the same one */
			scen *s = &sc[(k + st_i) % N_SC];
			double a = now_ms();
			if ((e = run_step(m, &o, s, ws, s->tok, 1, seq_start, logits)))
				goto fail;
			s->ms[st_i] = now_ms() - a;
		}

	printf("loom-lora-batch: CPU, %d OpenBLAS thread(s); model hidden %d, %d layers, %d/%d "
	       "heads, FFN %d, vocab %d (%.1f MB of f32 weights read per step)\n",
	       o.threads, m->cfg.hidden, m->cfg.n_layers, m->cfg.n_heads, m->cfg.n_kv_heads,
	       m->cfg.ffn, m->cfg.vocab, base_weight_bytes(&m->cfg) / 1e6);
	printf("%d sequences, prompt %d, %d measured decode steps per scenario (median), "
	       "setup %.1f s, prefill %.1f s\n\n", S, o.prompt, o.steps, t_setup / 1e3,
	       t_pre / 1e3);
	printf("%-36s %10s %9s %7s %10s\n", "scenario", "tokens/s", "step ms", "ratio",
	       "LoRA MB");
	for (int k = 0; k < N_SC; k++) {
		sc[k].med_ms = median(sc[k].ms, o.steps);
		sc[k].tok_s = S / (sc[k].med_ms / 1e3);
	}
	for (int k = 0; k < N_SC; k++)
		printf("%-36s %10.1f %9.2f %7.3f %10.1f\n", sc_desc[k], sc[k].tok_s, sc[k].med_ms,
		       sc[k].tok_s / sc[SC_BASE].tok_s, sc[k].lora_bytes / 1e6);
	double ratio = sc[SC_DISTINCT].tok_s / sc[SC_BASE].tok_s;
	if (o.json && write_json(&o, m, sc, ratio))
		goto out;
	printf("lora_batch_ratio=%.3f\n", ratio);
	rc = 0;
	goto out;
fail:
	fprintf(stderr, "loom-lora-batch: forward: %s: %s\n", loom_strerror(e), loom_errmsg());
	goto out;
oom:
	fprintf(stderr, "loom-lora-batch: out of memory\n");
out:
	for (int k = 0; k < N_SC; k++) {
		for (int q = 0; sc[k].kv && q < S; q++)
			wk_kv_destroy(sc[k].kv[q]);
		loom_free(sc[k].seq_ad);
		loom_free(sc[k].kv);
		loom_free(sc[k].tok);
		loom_free(sc[k].seg_start);
		loom_free(sc[k].seg_ad);
		loom_free(sc[k].ms);
	}
	for (int i = 0; i < S; i++) {
		if (dist)
			ad_adapter_destroy(dist[i]);
		if (mixd)
			ad_adapter_destroy(mixd[i]);
	}
	ad_adapter_destroy(one);
	loom_free(dist);
	loom_free(mixd);
	loom_free(seq_start);
	loom_free(prompt);
	loom_free(logits);
	wk_scratch_destroy(ws);
	wk_model_destroy(m);
	return rc;
}
