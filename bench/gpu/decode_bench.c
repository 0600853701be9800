/*
 * bench/gpu/decode_bench.c — end-to-end decode timing of the worker's CUDA
 * forward (worker/forward_cuda.h), the path loom-worker --backend cuda runs
 * each engine step through. Prints JSON (one object) to stdout or --json.
 *
 * The model is LLaMA-shaped with random weights, by default 7B-shaped
 * (hidden 4096, 32 layers, 32 heads, FFN 11008, vocab 32000). To keep the
 * host side small, every layer's float32 host arrays are the same ones (the
 * forward converts and uploads each layer separately, so the device holds
 * L distinct BF16 copies and a step reads all of them, as a real model's
 * would); embedding and LM head are separate arrays (untied, as LLaMA-2).
 * Adapters: --adapters distinct rank --rank adapters on --targets (default
 * 32, rank 16, q,k,v,o), built in memory (scale alpha/r = 2), sharing host
 * arrays the same way; each is uploaded to the adapter pool separately.
 *
 * Between the base and the LoRA modes every adapter is sent to the device
 * pool with wk_cuda_fwd_prefetch (through the pinned staging, copies on the
 * copy stream), timed to the end of the copies. The adapters are BF16 copies,
 * as a CUDA worker's residency hands them over (ad_adapter_to_bf16 on its
 * loader thread); --f32-adapters hands over float32 ones instead, converted
 * on upload (the engine thread's cost before).
 * For each mode — "base" (no adapter), "lora-identical" (every sequence the
 * same adapter: one segment), "lora-distinct" (sequence i its own adapter,
 * --batch segments) — fresh sequences are prefilled with the same random
 * prompts (chunks of whole sequences up to --prefill-tokens rows per step),
 * then --warmup decode steps and --steps timed decode steps of --batch
 * tokens run. A step is timed on the host around wk_cuda_forward, which
 * includes the metadata copy, every kernel, the logits copy back and the
 * stream sync: what the engine waits for. The next token of each sequence is the argmax of its
 * logits (untimed). Reported per mode: step milliseconds (median, p10, p90,
 * mean), decode tokens/s (batch / median), prefill tokens/s, and the bytes a
 * step must read (weights + KV context + unique adapter bytes) over the
 * median: the achieved bandwidth a memory-bound decode is judged by.
 * Checks (exit 1 when they fail): every logit finite, and the first decode
 * logits of sequence 0 differ between base and LoRA modes (the adapters are
 * applied at all). This is a timing program, not the correctness oracle:
 * tests/gpu/test_e2e compares the CUDA forward with the CPU one.
 *
 * Usage: loom-decode-bench [--hidden N] [--layers N] [--heads N]
 *          [--kv-heads N] [--ffn N] [--vocab N] [--batch N] [--prompt N]
 *          [--steps N] [--warmup N] [--adapters N] [--rank N]
 *          [--targets q,k,v,o,gate,up,down] [--prefill-tokens N]
 *          [--seed N] [--device N] [--f32-adapters] [--json PATH]
 * Exit: 0 done, 1 a failure (one line on stderr), 2 no CUDA device / no
 * CUDA backend in this build, or a bad argument.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/adapter.h"
#include "bench/bn_stats.h"
#include "common/alloc.h"
#include "common/dtype.h"
#include "common/err.h"
#include "kernels/cuda/kn_cuda.h"
#include "worker/forward_cuda.h"
#include "worker/kv.h"
#include "worker/model.h"

#define MAX_ADAPTERS 1024

typedef struct opts {
	int hidden, layers, heads, kv_heads, ffn, vocab;
	int batch, prompt, steps, warmup, adapters, rank, prefill_tokens, device;
	unsigned targets;
	uint64_t seed;
	const char *json;
	int f32_adapters;        /* hand the forward float32 adapters (converted on upload) */
} opts;

typedef struct mode_result {
	const char *name;
	int n_adapters;          /* distinct adapters used */
	double med, p10, p90, mean; /* ms per decode step */
	double prefill_ms;
	double bytes_per_step;   /* weights + kv + adapters read by a decode step */
	float *first_logits;     /* [vocab]: sequence 0, first decode step */
} mode_result;

/* ---- random fill ---- */

static uint64_t rng_state;

static inline uint64_t rng_next(void)
{
	uint64_t x = rng_state;
	x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
	rng_state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* n floats uniform in [-a, a]. */
static void fill(float *p, size_t n, float a)
{
	for (size_t i = 0; i < n; i++)
		p[i] = a * (2.0f * (float)(rng_next() >> 40) / 16777216.0f - 1.0f);
}

static float *rand_array(size_t n, float a)
{
	float *p = loom_malloc(n * sizeof *p);
	if (p)
		fill(p, n, a);
	return p;
}

/* ---- the model and adapters, in memory ---- */

typedef struct host_model {
	wk_model m;
	float *layer_w[9]; /* shared by every layer */
	float *ones;
} host_model;

static loom_err model_build(const opts *o, host_model *h)
{
	memset(h, 0, sizeof *h);
	wk_model *m = &h->m;
	loom_model_config *c = &m->cfg;
	snprintf(m->name, sizeof m->name, "random-%dx%d", o->layers, o->hidden);
	*c = (loom_model_config){.hidden = o->hidden, .ffn = o->ffn, .n_layers = o->layers,
				 .n_heads = o->heads, .n_kv_heads = o->kv_heads,
				 .head_dim = o->hidden / o->heads, .vocab = o->vocab,
				 .max_ctx = 4096, .rms_eps = 1e-5f, .rope_theta = 10000.0f,
				 .tied = false, .bos_id = 1, .n_eos = 1, .eos_ids = {2}};
	/* the layer description of plain Llama, as common/model_family.c fills it */
	c->act = LOOM_ACT_SILU;
	c->embed_scale = 1.0f;
	c->attn_scale = (float)(1.0 / sqrt((double)c->head_dim));
	c->rope = (loom_rope_cfg){.kind = LOOM_ROPE_DEFAULT, .factor = 1.0f, .attn_factor = 1.0f,
				  .orig_max = c->max_ctx};
	snprintf(c->model_type, sizeof c->model_type, "llama");
	size_t d = (size_t)o->hidden, q = (size_t)c->n_heads * c->head_dim,
	       kv = (size_t)c->n_kv_heads * c->head_dim, f = (size_t)o->ffn;
	/* uniform +-a with a = sqrt(3/fan_in): unit-variance outputs for
	 * unit-variance inputs, so activations stay O(1) through the layers */
	const size_t n[9] = {0, q * d, kv * d, kv * d, d * q, 0, f * d, f * d, d * f};
	const size_t fan[9] = {0, d, d, d, q, 0, d, d, f};
	h->ones = loom_malloc((d > f ? d : f) * sizeof(float));
	m->layers = loom_calloc((size_t)o->layers, sizeof *m->layers);
	m->embed = rand_array((size_t)o->vocab * d, 1.0f);
	m->lm_head = rand_array((size_t)o->vocab * d, sqrtf(3.0f / (float)d));
	if (!h->ones || !m->layers || !m->embed || !m->lm_head)
		return loom_fail(LOOM_ENOMEM, "decode-bench: out of host memory for the model");
	for (size_t i = 0; i < (d > f ? d : f); i++)
		h->ones[i] = 1.0f;
	for (int i = 0; i < 9; i++) {
		if (!n[i])
			continue;
		if (!(h->layer_w[i] = rand_array(n[i], sqrtf(3.0f / (float)fan[i]))))
			return loom_fail(LOOM_ENOMEM, "decode-bench: out of host memory for the model");
	}
	m->final_norm = h->ones;
	for (int l = 0; l < o->layers; l++)
		m->layers[l] = (wk_layer){.attn_norm = h->ones, .wq = h->layer_w[1],
					  .wk = h->layer_w[2], .wv = h->layer_w[3],
					  .wo = h->layer_w[4], .ffn_norm = h->ones,
					  .w_gate = h->layer_w[6], .w_up = h->layer_w[7],
					  .w_down = h->layer_w[8]};
	return LOOM_OK;
}

static void model_free(host_model *h)
{
	for (int i = 0; i < 9; i++)
		loom_free(h->layer_w[i]);
	loom_free(h->ones);
	loom_free(h->m.layers);
	loom_free(h->m.embed);
	loom_free(h->m.lm_head);
}

typedef struct host_adapters {
	ad_adapter *ad;         /* [n] */
	ad_module *mods;        /* [n * layers * AD_N_TARGETS] */
	float *a[AD_N_TARGETS], *bt[AD_N_TARGETS];
	uint16_t *a16[AD_N_TARGETS], *bt16[AD_N_TARGETS]; /* their BF16 copies */
	size_t bf16_bytes;      /* one adapter's A and Bt as BF16 */
	int n;
} host_adapters;

/* A BF16 copy of n floats (NULL: out of memory). */
static uint16_t *to_bf16(const float *x, size_t n)
{
	uint16_t *y = loom_malloc(n * sizeof *y);
	for (size_t i = 0; y && i < n; i++)
		y[i] = loom_f32_to_bf16(x[i]);
	return y;
}

static loom_err adapters_build(const opts *o, const loom_model_config *c, host_adapters *h)
{
	memset(h, 0, sizeof *h);
	h->n = o->adapters;
	size_t per = (size_t)o->layers * AD_N_TARGETS;
	h->ad = loom_calloc((size_t)h->n, sizeof *h->ad);
	h->mods = loom_calloc((size_t)h->n * per, sizeof *h->mods);
	if (!h->ad || !h->mods)
		return loom_fail(LOOM_ENOMEM, "decode-bench: out of host memory for adapters");
	size_t bytes = 0;
	for (int t = 0; t < AD_N_TARGETS; t++) {
		if (!(o->targets & (1u << t)))
			continue;
		int din, dout;
		ad_target_dims(c, t, &din, &dout);
		size_t na = (size_t)o->rank * din, nb = (size_t)o->rank * dout;
		h->a[t] = rand_array(na, sqrtf(3.0f / (float)din));
		h->bt[t] = rand_array(nb, 0.05f);
		if (!h->a[t] || !h->bt[t] || !(h->a16[t] = to_bf16(h->a[t], na)) ||
		    !(h->bt16[t] = to_bf16(h->bt[t], nb)))
			return loom_fail(LOOM_ENOMEM, "decode-bench: out of host memory for adapters");
		bytes += (size_t)o->layers * o->rank * (size_t)(din + dout) * sizeof(float);
	}
	for (int i = 0; i < h->n; i++) {
		ad_adapter *a = &h->ad[i];
		snprintf(a->name, sizeof a->name, "bench-%d", i);
		a->n_layers = o->layers;
		a->mods = h->mods + (size_t)i * per;
		a->targets = o->targets;
		a->max_rank = a->base_rank = o->rank;
		a->base_alpha = 2.0f * (float)o->rank;
		/* as a CUDA worker's residency hands them over: BF16 copies made
		 * off the engine thread (unless --f32-adapters) */
		a->bf16 = !o->f32_adapters;
		a->bytes = a->bf16 ? bytes / 2 : bytes;
		for (int t = 0; t < AD_N_TARGETS; t++) {
			ad_target_dims(c, t, &a->d_in[t], &a->d_out[t]);
			if (!(o->targets & (1u << t)))
				continue;
			for (int l = 0; l < o->layers; l++)
				a->mods[l * AD_N_TARGETS + t] = a->bf16 ?
					(ad_module){.rank = o->rank, .scale = 2.0f, .a16 = h->a16[t],
						    .bt16 = h->bt16[t]} :
					(ad_module){.rank = o->rank, .scale = 2.0f, .a = h->a[t],
						    .bt = h->bt[t]};
		}
	}
	h->bf16_bytes = bytes / 2;
	return LOOM_OK;
}

static void adapters_free(host_adapters *h)
{
	for (int t = 0; t < AD_N_TARGETS; t++) {
		loom_free(h->a[t]);
		loom_free(h->bt[t]);
		loom_free(h->a16[t]);
		loom_free(h->bt16[t]);
	}
	loom_free(h->ad);
	loom_free(h->mods);
}

/* ---- timing ---- */

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* ---- one mode ---- */

typedef struct bench {
	const opts *o;
	const wk_model *m;
	wk_kvpool *pool;
	wk_cuda_fwd *f;
	wk_kv *kv;              /* [batch] */
	int32_t *prompts;       /* [batch * prompt] */
	int32_t *tok, *seq_start, *seg_start;
	const ad_adapter **seg_ad;
	wk_kv **kvp;            /* [batch]: &kv[i] */
	float *logits;          /* [batch, vocab] */
} bench;

/* The greedy next token of each of n rows; LOOM_EINTERNAL on a non-finite
 * logit. */
static loom_err argmax_rows(const bench *b, int n, int32_t *out)
{
	int V = b->m->cfg.vocab;
	for (int s = 0; s < n; s++) {
		const float *r = b->logits + (size_t)s * V;
		int best = 0;
		for (int v = 0; v < V; v++) {
			if (!isfinite(r[v]))
				return loom_fail(LOOM_EINTERNAL, "decode-bench: logit %d of row %d is "
						 "%g", v, s, (double)r[v]);
			if (r[v] > r[best])
				best = v;
		}
		out[s] = best;
	}
	return LOOM_OK;
}

/* Runs sequences [s0, s0+n) with tok[] rows laid out per seq_start. ad:
 * the adapter of each sequence of the batch (NULL entries = base), or NULL
 * for a base-only batch. */
static loom_err step(bench *b, int s0, int n, const ad_adapter *const *ad, double *ms)
{
	wk_batch bt = {.n_seqs = n, .seq_start = b->seq_start, .tokens = b->tok,
		       .kv = b->kvp + s0};
	if (ad) { /* one segment per run of equal adapters */
		int S = 0;
		for (int i = 0; i < n; i++) {
			if (S > 0 && b->seg_ad[S - 1] == ad[s0 + i])
				continue;
			b->seg_start[S] = b->seq_start[i];
			b->seg_ad[S++] = ad[s0 + i];
		}
		b->seg_start[S] = b->seq_start[n];
		bt.n_segs = S;
		bt.seg_start = b->seg_start;
		bt.seg_adapter = b->seg_ad;
	}
	double t0 = now_ms();
	loom_err rc = wk_cuda_forward(b->f, &bt, b->logits);
	*ms = now_ms() - t0;
	return rc;
}

static loom_err run_mode(bench *b, mode_result *r, const ad_adapter *const *ad)
{
	const opts *o = b->o;
	const loom_model_config *c = &b->m->cfg;
	int B = o->batch, P = o->prompt;
	loom_err rc = LOOM_OK;
	double *t = loom_malloc((size_t)o->steps * sizeof *t);
	int32_t *next = loom_malloc((size_t)B * sizeof *next);
	if (!t || !next) {
		rc = loom_fail(LOOM_ENOMEM, "decode-bench: out of host memory");
		goto out;
	}
	for (int s = 0; s < B; s++) {
		wk_kv_release(&b->kv[s]);
		if ((rc = wk_kv_reserve(&b->kv[s], P + o->warmup + o->steps)))
			goto out;
	}
	/* prefill: chunks of whole sequences */
	r->prefill_ms = 0;
	int per = o->prefill_tokens / P;
	if (per < 1)
		per = 1;
	for (int s0 = 0; s0 < B; s0 += per) {
		int n = B - s0 < per ? B - s0 : per;
		for (int i = 0; i <= n; i++)
			b->seq_start[i] = i * P;
		memcpy(b->tok, b->prompts + (size_t)s0 * P, (size_t)n * P * sizeof *b->tok);
		double ms;
		if ((rc = step(b, s0, n, ad, &ms)) || (rc = argmax_rows(b, n, next + s0)))
			goto out;
		r->prefill_ms += ms;
	}
	/* decode */
	for (int i = 0; i <= B; i++)
		b->seq_start[i] = i;
	for (int it = 0; it < o->warmup + o->steps; it++) {
		memcpy(b->tok, next, (size_t)B * sizeof *next);
		double ms;
		if ((rc = step(b, 0, B, ad, &ms)))
			goto out;
		if (it == 0)
			memcpy(r->first_logits, b->logits, (size_t)c->vocab * sizeof(float));
		if ((rc = argmax_rows(b, B, next)))
			goto out;
		if (it >= o->warmup)
			t[it - o->warmup] = ms;
	}
	qsort(t, (size_t)o->steps, sizeof *t, cmp_double);
	r->med = bn_percentile(t, (size_t)o->steps, 50);
	r->p10 = bn_percentile(t, (size_t)o->steps, 10);
	r->p90 = bn_percentile(t, (size_t)o->steps, 90);
	r->mean = 0;
	for (int i = 0; i < o->steps; i++)
		r->mean += t[i] / o->steps;
	/* bytes one timed decode step reads, at the mean context of the timed
	 * steps: BF16 weights except the embedding (a gather of B rows), the
	 * K and V of every context position, and each distinct adapter once */
	double d = c->hidden, qd = (double)c->n_heads * c->head_dim,
	       kvd = (double)c->n_kv_heads * c->head_dim, f = c->ffn;
	double w = c->n_layers * (d * (qd + 2 * kvd) + qd * d + 3 * d * f) + (double)c->vocab * d;
	double ctx = P + o->warmup + (o->steps + 1) / 2.0;
	double kvb = (double)B * ctx * c->n_layers * 2 * kvd;
	double adb = 0;
	if (ad && r->n_adapters > 0)
		adb = (double)r->n_adapters * (double)ad[0]->bytes / 2; /* F32 host -> BF16 */
	r->bytes_per_step = 2 * (w + kvb) + adb;
out:
	loom_free(t);
	loom_free(next);
	return rc;
}

/* ---- arguments ---- */

static const char *const tnames[AD_N_TARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};

static int parse_targets(const char *s, unsigned *out)
{
	unsigned m = 0;
	char buf[128];
	snprintf(buf, sizeof buf, "%s", s);
	for (char *p = strtok(buf, ","); p; p = strtok(NULL, ",")) {
		int t = -1;
		for (int i = 0; i < AD_N_TARGETS; i++)
			if (!strcmp(p, tnames[i]) || !strcmp(p, ad_target_name(i)))
				t = i;
		if (t < 0)
			return -1;
		m |= 1u << t;
	}
	*out = m;
	return m ? 0 : -1;
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out)
{
	char *end;
	long x = v ? strtol(v, &end, 10) : 0;
	if (!v || *end || end == v || x < lo || x > hi) {
		fprintf(stderr, "decode-bench: %s wants an integer in [%d, %d], got \"%s\"\n", flag,
			lo, hi, v ? v : "");
		return -1;
	}
	*out = (int)x;
	return 0;
}

static int parse_args(int argc, char **argv, opts *o)
{
	*o = (opts){.hidden = 4096, .layers = 32, .heads = 32, .kv_heads = 32, .ffn = 11008,
		    .vocab = 32000, .batch = 32, .prompt = 128, .steps = 64, .warmup = 8,
		    .adapters = 32, .rank = 16, .prefill_tokens = 1024, .device = 0,
		    .targets = 0xf, .seed = 1};
	static const struct {
		const char *flag;
		size_t off;
		int lo, hi;
	} ints[] = {
		{"--hidden", offsetof(opts, hidden), 8, 65536},
		{"--layers", offsetof(opts, layers), 1, 1024},
		{"--heads", offsetof(opts, heads), 1, 1024},
		{"--kv-heads", offsetof(opts, kv_heads), 1, 1024},
		{"--ffn", offsetof(opts, ffn), 8, 262144},
		{"--vocab", offsetof(opts, vocab), 8, 1 << 20},
		{"--batch", offsetof(opts, batch), 1, 4096},
		{"--prompt", offsetof(opts, prompt), 1, 65536},
		{"--steps", offsetof(opts, steps), 1, 100000},
		{"--warmup", offsetof(opts, warmup), 0, 100000},
		{"--adapters", offsetof(opts, adapters), 1, MAX_ADAPTERS},
		{"--rank", offsetof(opts, rank), 1, 512},
		{"--prefill-tokens", offsetof(opts, prefill_tokens), 1, 1 << 20},
		{"--device", offsetof(opts, device), 0, 1024},
	};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int done = 0;
		for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !done; k++)
			if (!strcmp(a, ints[k].flag)) {
				if (parse_int(a, v, ints[k].lo, ints[k].hi,
					      (int *)((char *)o + ints[k].off)))
					return -1;
				done = 1;
			}
		if (done) {
			i++;
		} else if (!strcmp(a, "--targets") && v) {
			if (parse_targets(v, &o->targets)) {
				fprintf(stderr, "decode-bench: --targets: \"%s\" is not a list of "
					"q,k,v,o,gate,up,down\n", v);
				return -1;
			}
			i++;
		} else if (!strcmp(a, "--seed") && v) {
			o->seed = strtoull(v, NULL, 10);
			i++;
		} else if (!strcmp(a, "--f32-adapters")) {
			o->f32_adapters = 1;
		} else if (!strcmp(a, "--json") && v) {
			o->json = v;
			i++;
		} else {
			fprintf(stderr, "decode-bench: unknown or incomplete argument \"%s\" (see the "
				"usage in bench/gpu/decode_bench.c)\n", a);
			return -1;
		}
	}
	if (o->hidden % o->heads || o->heads % o->kv_heads) {
		fprintf(stderr, "decode-bench: --heads must divide --hidden and --kv-heads "
			"--heads\n");
		return -1;
	}
	return 0;
}

/* ---- output ---- */

static void json_mode(FILE *f, const mode_result *r, int batch, int prompt_tokens, int last)
{
	fprintf(f,
		"    {\"mode\": \"%s\", \"distinct_adapters\": %d, \"step_ms_median\": %.4f, "
		"\"step_ms_p10\": %.4f, \"step_ms_p90\": %.4f, \"step_ms_mean\": %.4f, "
		"\"decode_tokens_per_s\": %.1f, \"prefill_ms\": %.3f, "
		"\"prefill_tokens_per_s\": %.1f, \"bytes_per_step\": %.0f, "
		"\"achieved_GBps\": %.1f}%s\n",
		r->name, r->n_adapters, r->med, r->p10, r->p90, r->mean, batch * 1e3 / r->med,
		r->prefill_ms, prompt_tokens * 1e3 / r->prefill_ms, r->bytes_per_step,
		r->bytes_per_step / r->med / 1e6, last ? "" : ",");
}

static double max_diff(const float *a, const float *b, int n)
{
	double m = 0;
	for (int i = 0; i < n; i++)
		if (fabs((double)a[i] - b[i]) > m)
			m = fabs((double)a[i] - b[i]);
	return m;
}

int main(int argc, char **argv)
{
	opts o;
	if (parse_args(argc, argv, &o))
		return 2;
	int n_dev = 0;
	kn_cuda_device_count(&n_dev);
	if (n_dev <= o.device) {
		fprintf(stderr, "decode-bench: no CUDA device %d (%s)\n", o.device,
			*loom_errmsg() ? loom_errmsg() : "none found");
		return 2;
	}
	kn_cuda_device dev;
	loom_err rc = kn_cuda_device_info(o.device, &dev);
	if (rc) {
		fprintf(stderr, "decode-bench: %s\n", loom_errmsg());
		return 1;
	}
	if (o.adapters > o.batch)
		o.adapters = o.batch; /* a step cannot use more distinct adapters */
	rng_state = o.seed * 0x9E3779B97F4A7C15ULL + 1;
	host_model hm;
	host_adapters ha;
	bench b = {.o = &o, .m = &hm.m};
	mode_result res[3] = {{.name = "base"},
			      {.name = "lora-identical", .n_adapters = 1},
			      {.name = "lora-distinct", .n_adapters = o.adapters}};
	const ad_adapter **ad_ident = NULL, **ad_dist = NULL;
	FILE *out = stdout;
	int fail = 0, B = o.batch, bs = WK_KV_BLOCK;
	double t0 = now_ms();
	memset(&ha, 0, sizeof ha);
	if ((rc = model_build(&o, &hm)) || (rc = adapters_build(&o, &hm.m.cfg, &ha)))
		goto out;
	int per_seq = (o.prompt + o.warmup + o.steps + bs - 1) / bs;
	if ((rc = wk_kvpool_create(&hm.m, B * per_seq, bs, &b.pool)))
		goto out;
	int max_tokens = o.prefill_tokens > o.prompt ? o.prefill_tokens / o.prompt * o.prompt
						      : o.prompt;
	if (max_tokens > B * o.prompt)
		max_tokens = B * o.prompt;
	if (max_tokens < B)
		max_tokens = B;
	/* BF16 weights, 256-byte alignment of each piece, whole 1 MiB pages */
	size_t ad_mb = (size_t)((double)o.adapters *
				((double)ha.ad[0].bytes / 2 + (double)o.layers * 4096 + (1 << 20)) /
				(1 << 20)) + 16;
	wk_cuda_fwd_opts fo = {.device = o.device, .max_tokens = max_tokens, .max_seqs = B,
			       .adapter_slots = o.adapters, .adapter_mb = ad_mb};
	double tu = now_ms();
	if ((rc = wk_cuda_fwd_create(&hm.m, b.pool, &fo, &b.f)))
		goto out;
	double upload_ms = now_ms() - tu;
	fprintf(stderr, "decode-bench: %s, model %s uploaded in %.0f ms (host set-up %.0f ms)\n",
		dev.name, hm.m.name, upload_ms, tu - t0);
	b.kv = loom_calloc((size_t)B, sizeof *b.kv);
	b.kvp = loom_calloc((size_t)B, sizeof *b.kvp);
	b.prompts = loom_malloc((size_t)B * o.prompt * sizeof *b.prompts);
	b.tok = loom_malloc((size_t)max_tokens * sizeof *b.tok);
	b.seq_start = loom_malloc((size_t)(B + 1) * sizeof *b.seq_start);
	b.seg_start = loom_malloc((size_t)(B + 1) * sizeof *b.seg_start);
	b.seg_ad = loom_calloc((size_t)B + 1, sizeof *b.seg_ad);
	b.logits = loom_malloc((size_t)max_tokens * o.vocab * sizeof *b.logits);
	ad_ident = loom_malloc((size_t)B * sizeof *ad_ident);
	ad_dist = loom_malloc((size_t)B * sizeof *ad_dist);
	for (int i = 0; i < 3; i++)
		res[i].first_logits = loom_malloc((size_t)o.vocab * sizeof(float));
	if (!b.kv || !b.kvp || !b.prompts || !b.tok || !b.seq_start || !b.seg_start ||
	    !b.seg_ad || !b.logits || !ad_ident || !ad_dist || !res[0].first_logits ||
	    !res[1].first_logits || !res[2].first_logits) {
		rc = loom_fail(LOOM_ENOMEM, "decode-bench: out of host memory");
		goto out;
	}
	for (int s = 0; s < B; s++) {
		wk_kv_init(&b.kv[s], b.pool);
		b.kvp[s] = &b.kv[s];
		ad_ident[s] = &ha.ad[0];
		ad_dist[s] = &ha.ad[(int)((long)s * o.adapters / B)]; /* runs of equal adapters */
	}
	for (size_t i = 0; i < (size_t)B * o.prompt; i++)
		b.prompts[i] = (int32_t)(3 + rng_next() % (uint64_t)(o.vocab - 3));
	const ad_adapter *const *mix[3] = {NULL, ad_ident, ad_dist};
	double load_host_ms = 0, load_ms = 0;
	for (int i = 0; i < 3; i++) {
		if (i == 1) { /* every adapter to the pool on the copy stream, timed */
			double tp = now_ms();
			for (int a = 0; a < o.adapters && !rc; a++)
				rc = wk_cuda_fwd_prefetch(b.f, &ha.ad[a]);
			load_host_ms = now_ms() - tp;
			if (rc || (rc = wk_cuda_fwd_sync(b.f)))
				goto out;
			load_ms = now_ms() - tp;
			fprintf(stderr, "decode-bench: %d adapters prefetched in %.1f ms (host part "
				"%.1f ms), %.2f GB/s\n", o.adapters, load_ms, load_host_ms,
				o.adapters * (double)ha.bf16_bytes / load_ms / 1e6);
		}
		if ((rc = run_mode(&b, &res[i], mix[i])))
			goto out;
		fprintf(stderr, "decode-bench: %-14s step %.3f ms (p10 %.3f, p90 %.3f), %.0f tok/s, "
			"%.0f GB/s, prefill %.1f ms\n", res[i].name, res[i].med, res[i].p10,
			res[i].p90, B * 1e3 / res[i].med, res[i].bytes_per_step / res[i].med / 1e6,
			res[i].prefill_ms);
	}
	double diff_ident = max_diff(res[0].first_logits, res[1].first_logits, o.vocab);
	double diff_dist = max_diff(res[0].first_logits, res[2].first_logits, o.vocab);
	if (diff_ident <= 1e-3 || diff_dist <= 1e-3) {
		fprintf(stderr, "decode-bench: FAILED: LoRA modes give sequence 0 the base logits "
			"(max |diff| %g and %g): the adapters are not applied\n", diff_ident,
			diff_dist);
		fail = 1;
	}
	if (o.json && !(out = fopen(o.json, "w"))) {
		rc = loom_fail(LOOM_EIO, "decode-bench: cannot write %s", o.json);
		goto out;
	}
	fprintf(out, "{\n  \"bench\": \"decode\",\n  \"device\": \"%s\",\n  \"sm_count\": %d,\n"
		"  \"model\": {\"hidden\": %d, \"layers\": %d, \"heads\": %d, \"kv_heads\": %d, "
		"\"ffn\": %d, \"vocab\": %d, \"dtype\": \"bf16\", \"weight_upload_ms\": %.0f},\n"
		"  \"batch\": %d, \"prompt\": %d, \"warmup_steps\": %d, \"timed_steps\": %d,\n"
		"  \"adapters\": {\"count\": %d, \"rank\": %d, \"targets_mask\": %u, "
		"\"host_dtype\": \"%s\", \"bf16_bytes_each\": %.0f, \"prefetch_all_ms\": %.2f, "
		"\"prefetch_host_ms\": %.2f, \"prefetch_GBps\": %.2f},\n"
		"  \"lora_vs_base_first_logits_max_abs_diff\": [%.4g, %.4g],\n"
		"  \"lora_distinct_over_base\": %.4f,\n  \"lora_identical_over_base\": %.4f,\n"
		"  \"modes\": [\n",
		dev.name, dev.sm_count, o.hidden, o.layers, o.heads, o.kv_heads, o.ffn, o.vocab,
		upload_ms, B, o.prompt, o.warmup, o.steps, o.adapters, o.rank, o.targets,
		o.f32_adapters ? "f32" : "bf16", (double)ha.bf16_bytes, load_ms, load_host_ms,
		o.adapters * (double)ha.bf16_bytes / load_ms / 1e6, diff_ident, diff_dist,
		res[2].med / res[0].med, res[1].med / res[0].med);
	for (int i = 0; i < 3; i++)
		json_mode(out, &res[i], B, B * o.prompt, i == 2);
	fprintf(out, "  ]\n}\n");
	if (out != stdout && fclose(out)) {
		rc = loom_fail(LOOM_EIO, "decode-bench: cannot write %s", o.json);
		goto out;
	}
	fprintf(stderr, "decode-bench: lora-distinct / base = %.3f, lora-identical / base = %.3f\n",
		res[2].med / res[0].med, res[1].med / res[0].med);
out:
	if (rc) {
		fprintf(stderr, "decode-bench: %s (%s)\n", loom_errmsg(), loom_strerror(rc));
		fail = 1;
	}
	for (int s = 0; b.kv && s < B; s++)
		wk_kv_fini(&b.kv[s]);
	wk_cuda_fwd_destroy(b.f);
	wk_kvpool_destroy(b.pool);
	loom_free(b.kv);
	loom_free(b.kvp);
	loom_free(b.prompts);
	loom_free(b.tok);
	loom_free(b.seq_start);
	loom_free(b.seg_start);
	loom_free(b.seg_ad);
	loom_free(b.logits);
	loom_free(ad_ident);
	loom_free(ad_dist);
	for (int i = 0; i < 3; i++)
		loom_free(res[i].first_logits);
	adapters_free(&ha);
	model_free(&hm);
	return fail;
}
