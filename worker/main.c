/*
 * worker/main.c — the loom-worker program: load the models, listen for the
 * gateway, run the engine until SIGINT/SIGTERM.
 *
 *   loom-worker --listen URL [--model [NAME=]DIR ...] [--store DIR | --own-store DIR]
 *               [--host-cache-mb N] [--device-adapter-mb N] [--device-model-mb N]
 *               [--id NAME] [--threads N] [--max-batch-tokens N] [--max-seqs N]
 *               [--kv-blocks N | --kv-mb N] [--backend cpu|cuda]
 *               [--tls-cert FILE --tls-key FILE --tls-ca FILE]
 *
 * Exit: 0 after a signal, 1 when a model or the listen address fails,
 * 2 on bad flags.
 */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "../common/alloc.h"
#include "../common/log.h"
#include "../common/tlslink.h"
#include "../store/store.h"
#include "backend.h"
#include "engine.h"
#include "forward.h"
#include "kv.h"
#include "link.h"
#include "model.h"
#include "residency.h"

#define MAX_MODELS 16

static const char usage[] =
	"usage: loom-worker --listen URL [--model [NAME=]DIR ...] [--store DIR | --own-store DIR] "
	"[--host-cache-mb N] [--device-adapter-mb N] [--device-model-mb N] [--id NAME] "
	"[--threads N] [--max-batch-tokens N] [--max-seqs N] [--kv-blocks N | --kv-mb N] [--no-prefix-cache] [--adapter-dtype auto|f32|bf16] [--kv-dtype f32|bf16] [--backend cpu|cuda] "
	"[--tls-cert FILE --tls-key FILE --tls-ca FILE]\n";

static const char help[] =
	"\n"
	"Serves LLaMA-family models to a loom-gateway over nng pair1.\n"
	"\n"
	"  --listen URL            ipc://, tcp:// or tls+tcp:// address the gateway dials\n"
	"                          (required)\n"
	"  --tls-cert FILE, --tls-key FILE, --tls-ca FILE\n"
	"                          mutual TLS on a tls+tcp:// --listen (all three, and only\n"
	"                          there): this worker's PEM certificate and unencrypted key,\n"
	"                          and the CA a gateway's certificate must chain to (give it\n"
	"                          the CA that signs gateway certificates only); a gateway\n"
	"                          without one fails the handshake\n"
	"  --model [NAME=]DIR      a Hugging Face model folder; NAME defaults to the folder's\n"
	"                          name (repeatable, up to 16). Required unless a store is given\n"
	"  --store DIR             the gateway's LMDB store on this host, opened read-only:\n"
	"                          its models are served, adapter and model blobs read\n"
	"                          zero-copy from it\n"
	"  --own-store DIR         this worker's own store (another host): opened read-write;\n"
	"                          a blob it lacks is fetched from the gateway (FETCH/BLOB),\n"
	"                          its sha256 verified, and kept there\n"
	"  --host-cache-mb N       host RAM cache of adapter blobs and swapped-out model\n"
	"                          bundles, LRU (default 1024; 0 = none)\n"
	"  --device-adapter-mb N   device adapter pool, LRU over idle adapters (default 1024);\n"
	"                          an adapter larger than the pool is refused\n"
	"  --device-model-mb N     base model weights resident at once (default: no limit); a\n"
	"                          request for another model swaps out the least recently used\n"
	"                          idle one\n"
	"  --id NAME               worker id reported in HELLO (default worker-PID)\n"
	"  --backend cpu|cuda      where the forward runs (default: cuda when this build has\n"
	"                          the CUDA backend and a device is found, else cpu)\n"
	"  --threads N             threads each model's CPU forward runs on, the engine\n"
	"                          thread included (and OpenBLAS's, for LoRA); default 1\n"
	"  --max-batch-tokens N    tokens per model per iteration: every decode plus prefill\n"
	"                          chunks up to this budget (default 256)\n"
	"  --max-seqs N            sequences holding KV at once, all models (default 64)\n"
	"  --kv-blocks N           paged KV cache: N blocks of 16 positions per model\n"
	"  --kv-mb N               paged KV cache: N MiB per model (when --kv-blocks is not\n"
	"                          given). Default: room for max-seqs full contexts, capped at\n"
	"                          the model's weight size (at least 256 MiB), never less than\n"
	"                          one full context. When the cache is full the newest running\n"
	"                          sequence is preempted and recomputed later; a request that\n"
	"                          needs more than the whole cache is refused (ERANGE).\n"
	"  --kv-dtype f32|bf16     the CPU backend's KV cache: f32 (default) or bf16 (half the\n"
	"                          bytes: twice the positions in --kv-mb, half what attention\n"
	"                          reads; K/V values rounded to BF16). The CUDA backend\n"
	"                          keeps its own BF16 cache on the device (refused there)\n"
	"  --adapter-dtype auto|f32|bf16  how the CPU backend holds adapters on its device\n"
	"                          tier: auto (default) BF16 when that rounds nothing (a BF16\n"
	"                          adapter file: half the bytes, the same results), else\n"
	"                          float32; f32 always; bf16 always (values rounded).\n"
	"                          The CUDA backend always holds BF16\n"
	"  --no-prefix-cache       compute every prompt from scratch (default: the KV of\n"
	"                          full 16-token blocks is kept after a request ends and\n"
	"                          reused by later requests of the same model and adapter\n"
	"                          content that share the prefix; evicted LRU when the\n"
	"                          cache needs the room)\n"
	"\n"
	"Adapters and models arrive from the gateway (ADAPTER / MODEL messages: a store blob\n"
	"or a folder); they are loaded when a request wants them, off the engine thread.\n"
	"Exit status: 0 after SIGINT/SIGTERM, 1 when a model or the address fails, 2 on bad\n"
	"flags.\n";

typedef struct args {
	const char *listen;
	const char *id;
	const char *backend;  /* --backend, NULL = default */
	int threads;
	int max_batch_tokens;
	int max_seqs;
	int kv_blocks;
	int kv_mb;
	bool no_prefix_cache;
	wk_ad_dtype adapter_dtype; /* --adapter-dtype (default auto) */
	wk_kv_dtype kv_dtype;      /* --kv-dtype (default f32) */
	int n_models;
	char names[MAX_MODELS][LOOM_NAME_MAX];
	const char *dirs[MAX_MODELS];
	const char *store;
	bool own_store;
	const char *tls_cert, *tls_key, *tls_ca;
	int host_mb, device_mb, model_mb;
} args;

/* Signals may land on any thread (OpenBLAS starts its pool before main), so
 * a handler posts a semaphore that main waits on. */
static sem_t quit_sem;
static volatile sig_atomic_t quit_sig;

static void on_signal(int sig)
{
	quit_sig = sig;
	sem_post(&quit_sem);
}

static int bad_usage(const char *fmt, const char *what)
{
	fprintf(stderr, "loom-worker: ");
	fprintf(stderr, fmt, what);
	fprintf(stderr, "\n%s", usage);
	return 2;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

/* "NAME=DIR" or "DIR" (NAME = the folder's base name). */
static int add_model(args *a, char *spec)
{
	char *eq = strchr(spec, '=');
	const char *dir = spec, *name;
	char base[PATH_MAX];
	size_t n;

	if (a->n_models == MAX_MODELS)
		return bad_usage("at most %s --model flags", "16");
	if (eq) {
		*eq = '\0';
		name = spec;
		dir = eq + 1;
	} else {
		snprintf(base, sizeof base, "%s", spec);
		n = strlen(base);
		while (n > 1 && base[n - 1] == '/')
			base[--n] = '\0';
		name = strrchr(base, '/') ? strrchr(base, '/') + 1 : base;
	}
	if (!*dir)
		return bad_usage("--model '%s' names no folder", spec);
	if (!*name || strlen(name) >= LOOM_NAME_MAX)
		return bad_usage("model name '%s' must be 1..127 bytes", name);
	for (int i = 0; i < a->n_models; i++)
		if (!strcmp(a->names[i], name))
			return bad_usage("model name '%s' given twice", name);
	memcpy(a->names[a->n_models], name, strlen(name) + 1); /* length checked above */
	a->dirs[a->n_models++] = dir;
	return 0;
}

static int parse_args(int argc, char **argv, args *a)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "model", required_argument, NULL, 'm' },
		{ "id", required_argument, NULL, 'i' },
		{ "threads", required_argument, NULL, 't' },
		{ "max-batch-tokens", required_argument, NULL, 'b' },
		{ "max-seqs", required_argument, NULL, 's' },
		{ "kv-blocks", required_argument, NULL, 'k' },
		{ "kv-mb", required_argument, NULL, 'K' },
		{ "store", required_argument, NULL, 'S' },
		{ "own-store", required_argument, NULL, 'O' },
		{ "host-cache-mb", required_argument, NULL, 'H' },
		{ "device-adapter-mb", required_argument, NULL, 'D' },
		{ "device-model-mb", required_argument, NULL, 'M' },
		{ "backend", required_argument, NULL, 'B' },
		{ "no-prefix-cache", no_argument, NULL, 'P' },
		{ "adapter-dtype", required_argument, NULL, 'W' },
		{ "kv-dtype", required_argument, NULL, 'V' },
		{ "tls-cert", required_argument, NULL, 'C' },
		{ "tls-key", required_argument, NULL, 'Y' },
		{ "tls-ca", required_argument, NULL, 'A' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, rc;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l': a->listen = optarg; break;
		case 'i': a->id = optarg; break;
		case 'B': a->backend = optarg; break;
		case 'V':
			if (strcmp(optarg, "f32") && strcmp(optarg, "bf16"))
				return bad_usage("--kv-dtype '%s' is not f32 or bf16", optarg);
			a->kv_dtype = !strcmp(optarg, "bf16") ? WK_KV_BF16 : WK_KV_F32;
			break;
		case 'P': a->no_prefix_cache = true; break;
		case 'W':
			if (strcmp(optarg, "f32") && strcmp(optarg, "bf16") && strcmp(optarg, "auto"))
				return bad_usage("--adapter-dtype '%s' is not auto, f32 or bf16", optarg);
			a->adapter_dtype = !strcmp(optarg, "bf16") ? WK_AD_BF16
					   : !strcmp(optarg, "f32") ? WK_AD_F32 : WK_AD_AUTO;
			break;
		case 'C': a->tls_cert = optarg; break;
		case 'Y': a->tls_key = optarg; break;
		case 'A': a->tls_ca = optarg; break;
		case 'm':
			if ((rc = add_model(a, optarg)))
				return rc;
			break;
		case 't':
			if (parse_int(optarg, 1, 1024, &a->threads))
				return bad_usage("--threads '%s' is not an integer in 1..1024", optarg);
			break;
		case 'b':
			if (parse_int(optarg, 1, 1 << 20, &a->max_batch_tokens))
				return bad_usage("--max-batch-tokens '%s' is not an integer in 1..1048576",
						 optarg);
			break;
		case 's':
			if (parse_int(optarg, 1, 65536, &a->max_seqs))
				return bad_usage("--max-seqs '%s' is not an integer in 1..65536", optarg);
			break;
		case 'k':
			if (parse_int(optarg, 1, 1 << 26, &a->kv_blocks))
				return bad_usage("--kv-blocks '%s' is not an integer in 1..67108864",
						 optarg);
			break;
		case 'K':
			if (parse_int(optarg, 1, 1 << 24, &a->kv_mb))
				return bad_usage("--kv-mb '%s' is not an integer in 1..16777216", optarg);
			break;
		case 'S':
		case 'O':
			if (a->store)
				return bad_usage("%s: give one of --store and --own-store", optarg);
			a->store = optarg;
			a->own_store = c == 'O';
			break;
		case 'H':
			if (parse_int(optarg, 0, 1 << 24, &a->host_mb))
				return bad_usage("--host-cache-mb '%s' is not an integer in 0..16777216",
						 optarg);
			break;
		case 'D':
			if (parse_int(optarg, 1, 1 << 24, &a->device_mb))
				return bad_usage("--device-adapter-mb '%s' is not an integer in "
						 "1..16777216", optarg);
			break;
		case 'M':
			if (parse_int(optarg, 1, 1 << 24, &a->model_mb))
				return bad_usage("--device-model-mb '%s' is not an integer in 1..16777216",
						 optarg);
			break;
		case 'h':
			fputs(usage, stdout);
			fputs(help, stdout);
			return -1;
		default:
			fputs(usage, stderr);
			return 2;
		}
	}
	if (optind < argc)
		return bad_usage("unexpected argument '%s'", argv[optind]);
	if (!a->listen)
		return bad_usage("%s is required", "--listen URL");
	bool tls = a->tls_cert || a->tls_key || a->tls_ca;
	if (tls && (!a->tls_cert || !a->tls_key || !a->tls_ca))
		return bad_usage("%s go together", "--tls-cert, --tls-key and --tls-ca");
	if (tls != loom_url_is_tls(a->listen))
		return bad_usage(tls ? "--tls-* need a tls+tcp:// --listen, not '%s'"
				     : "--listen '%s' needs --tls-cert, --tls-key and --tls-ca",
				 a->listen);
	if (a->n_models == 0 && !a->store)
		return bad_usage("%s is required (or --store / --own-store)", "--model [NAME=]DIR");
	if (a->id && (!*a->id || strlen(a->id) >= LOOM_NAME_MAX))
		return bad_usage("--id '%s' must be 1..127 bytes", a->id);
	return 0;
}

static int list_model(void *ctx, const st_model_rec *r)
{
	(void)wk_res_model_set_tokenizer(ctx, r->name, r->tokenizer_sha);
	if (wk_res_model_add_blob(ctx, r->name, r->sha))
		LOOM_WARN("store model %s is not served: %s", r->name, loom_errmsg());
	return 0;
}

static int list_adapter(void *ctx, const st_adapter_rec *r)
{
	if (wk_res_adapter_add_blob(ctx, r->base_model, r->name, r->sha))
		LOOM_WARN("store adapter %s is not served: %s", r->name, loom_errmsg());
	return 0;
}

/* Opens the store (if any), makes the residency (adapters on the device
 * tier as BF16 for the CUDA backend), registers the store's records and the
 * --model folders, loads what fits the model budget. */
static int start_residency(const args *a, wk_backend_kind backend, st_store **store,
			   wk_res **res)
{
	wk_res_opts ro = { .host_budget = (uint64_t)a->host_mb << 20,
			   .device_budget = (uint64_t)a->device_mb << 20,
			   .model_budget = (uint64_t)a->model_mb << 20,
			   .adapter_dtype = backend == WK_BACKEND_CUDA ? WK_AD_BF16 : a->adapter_dtype,
			   .packed_models = backend == WK_BACKEND_CPU };

	if (a->store) {
		/* the gateway may be creating its store right now: a missing one
		 * is waited for (30 s) */
		loom_err rc;
		for (int k = 0; (rc = st_open(a->store, a->own_store ? ST_NOSWEEP : ST_RDONLY,
					     store)) == LOOM_ENOTFOUND && !a->own_store && k < 300 &&
				 !quit_sig; k++) {
			if (k == 0)
				LOOM_INFO("waiting for the store %s: %s", a->store, loom_errmsg());
			usleep(100000);
		}
		if (rc) {
			LOOM_ERROR("cannot open the store %s: %s", a->store, loom_errmsg());
			return -1;
		}
		ro.store = *store;
		ro.own_store = a->own_store;
	}
	if (wk_res_create(&ro, res)) {
		LOOM_ERROR("%s", loom_errmsg());
		return -1;
	}
	/* the operator's folders first: a store record of the same name keeps
	 * the folder as the source */
	for (int i = 0; i < a->n_models; i++) {
		if (wk_res_model_add_dir(*res, a->names[i], a->dirs[i])) {
			LOOM_ERROR("cannot load model '%s': %s", a->names[i], loom_errmsg());
			return -1;
		}
	}
	if (*store) {
		st_model_each(*store, list_model, *res);
		st_adapter_each(*store, list_adapter, *res);
	}
	for (int i = 0; i < a->n_models; i++) {
		if (wk_res_model_preload(*res, wk_res_model_find(*res, a->names[i]))) {
			LOOM_ERROR("cannot load model '%s': %s", a->names[i], loom_errmsg());
			return -1;
		}
	}
	/* a worker of store models only: the first one that fits comes in now,
	 * in the background (the others when asked for) */
	for (int i = 0; a->n_models == 0 && i < wk_res_model_count(*res); i++)
		wk_res_model_warm(*res, i);
	return 0;
}

int main(int argc, char **argv)
{
	static args a = { .threads = 1, .max_batch_tokens = 256, .max_seqs = 64, .host_mb = 1024,
			  .device_mb = 1024, .adapter_dtype = WK_AD_AUTO };
	char idbuf[LOOM_NAME_MAX], list[1024] = "";
	static char names[WK_RES_MAX_MODELS][LOOM_NAME_MAX];
	const char *no_models[1] = { NULL };
	st_store *store = NULL;
	wk_res *res = NULL;
	wk_link *link = NULL;
	wk_engine *engine = NULL;
	struct nng_tls_config *tls = NULL;
	struct sigaction sa;
	int rc, status = 1, n;

	loom_log_init("loom-worker");
	rc = parse_args(argc, argv, &a);
	if (rc)
		return rc < 0 ? 0 : rc;
	wk_backend_kind backend;
	if (wk_backend_pick(a.backend, &backend)) {
		fprintf(stderr, "loom-worker: %s\n", loom_errmsg());
		return 2;
	}
	if (backend == WK_BACKEND_CUDA && a.kv_dtype != WK_KV_F32) {
		fprintf(stderr, "loom-worker: --kv-dtype is for the CPU backend (the CUDA backend keeps "
			"its own BF16 KV cache on the device)\n");
		return 2;
	}
	if (!a.id) {
		snprintf(idbuf, sizeof idbuf, "worker-%ld", (long)getpid());
		a.id = idbuf;
	}

	sem_init(&quit_sem, 0, 0);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	openblas_set_num_threads(a.threads);
	wk_forward_threads(a.threads);

	if (start_residency(&a, backend, &store, &res))
		goto out;
	n = wk_res_model_names(res, names, WK_RES_MAX_MODELS);
	for (int i = 0; i < n; i++)
		snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
			 names[i]);
	if ((a.tls_cert && loom_tls_link_config(true, a.tls_cert, a.tls_key, a.tls_ca, "--tls-",
						&tls)) ||
	    wk_link_create(a.listen, a.id, no_models, 0, tls, &link)) {
		LOOM_ERROR("%s", loom_errmsg());
		goto out;
	}
	/* blobs an own store lacks, or every blob without a store: from the gateway */
	if (a.own_store || !a.store)
		wk_res_set_fetch(res, wk_link_fetch, link);
	wk_engine_opts eo = { .backend = backend, .max_batch_tokens = a.max_batch_tokens, .max_seqs = a.max_seqs,
			      .kv_blocks = a.kv_blocks, .kv_mb = a.kv_mb, .res = res,
			      .no_prefix_cache = a.no_prefix_cache, .kv_dtype = a.kv_dtype };
	if (wk_engine_create(NULL, 0, &eo, wk_link_emit, link, &engine) ||
	    wk_link_start(link, engine)) {
		LOOM_ERROR("%s", loom_errmsg());
		goto out;
	}
	LOOM_INFO("worker %s listening on %s (backend %s; models: %s; host cache %d MiB, device adapter pool "
		  "%d MiB, device models %s%s)", a.id, a.listen, wk_backend_name(backend), n ? list : "none yet", a.host_mb,
		  a.device_mb, a.model_mb ? "limited" : "unlimited", a.store ? "" : "; no store");
	for (int i = 0; i < n; i++) {
		loom_model_config cfg;
		size_t bytes;
		wk_res_model_info(res, i, NULL, &cfg, &bytes);
		int blocks = a.kv_blocks ? a.kv_blocks
					 : wk_engine_kv_blocks_for(&cfg, bytes, a.max_seqs, a.kv_mb,
								   a.kv_dtype);
		LOOM_INFO("worker %s: '%s': %zu MiB of weights, KV cache of %d blocks x %d positions "
			  "(%zu MiB) while resident", a.id, names[i], bytes >> 20, blocks, WK_KV_BLOCK,
			  ((size_t)blocks * WK_KV_BLOCK *
			   wk_kv_bytes_per_position_dt(&cfg, a.kv_dtype)) >> 20);
	}
	while (sem_wait(&quit_sem) != 0 && errno == EINTR) {
	}
	LOOM_INFO("worker %s: %s, shutting down", a.id, quit_sig == SIGINT ? "SIGINT" : "SIGTERM");
	status = 0;
out:
	wk_link_stop(link);       /* no more SUBMITs reach the engine; a fetch gives up */
	wk_engine_destroy(engine);
	wk_res_destroy(res);      /* joins the loader */
	wk_link_destroy(link);
	if (tls)
		nng_tls_config_free(tls);
	st_close(store);
	return status;
}
