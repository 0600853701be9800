/*
 * gateway/main.c — loom-gateway: command line, the registry (store), start/stop.
 *
 * Exit status: 0 after SIGINT/SIGTERM (the shutdown takes at most
 * SHUTDOWN_GRACE_S seconds, whatever is in flight), 1 when start-up fails (bad model
 * folder, config file, rejected adapter, store, port in use), 2 for usage
 * errors (including a bad or clashing adapter name, or a missing adapter base).
 * Models and adapters live in the store (--store, default ./loom-data): those
 * registered earlier are served again; --model / --adapter / --config
 * register theirs into it (an unchanged folder keeps its version, a changed
 * one becomes a new version). Workers load them by content hash.
 * SLO classes: the defaults (interactive, batch), then the config's
 * "slo_classes", then --slo-class flags, each replacing a class by name.
 * Admission (queue length and wait, worker slots, batch cap): the config's
 * keys, then the flags.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/textfile.h"
#include "common/tlslink.h"
#include "gateway/gw_admin.h"
#include "gateway/gw_chat.h"
#include "gateway/gw_keys.h"
#include "gateway/gw_link.h"
#include "gateway/gw_models.h"
#include "gateway/gw_registry.h"
#include "gateway/gw_server.h"
#include "gateway/gw_slo.h"

#define MAX_ITEMS 1024 /* of each repeatable flag (e.g. --adapter), and adapters in --config */

/* The admission settings (requests, then connections): flag, config key,
 * range, default (-1: the link's own). */
enum adm_key {
	ADM_QUEUE_MAX, ADM_QUEUE_TIMEOUT, ADM_WORKER_SLOTS, ADM_BATCH_PER_WORKER,
	ADM_MAX_CONNS, ADM_MAX_CONNS_PER_IP, ADM_CONN_TIMEOUT, ADM_IMPORT_TIMEOUT, ADM_N
};
static const struct {
	const char *flag, *key;
	long long lo, hi, def;
} adm_tab[ADM_N] = {
	{"--queue-max", "queue_max", 1, 1 << 20, -1},
	{"--queue-timeout-ms", "queue_timeout_ms", 1, 86400000, -1},
	{"--worker-slots", "worker_slots", 1, 65536, -1},
	{"--batch-per-worker", "batch_per_worker", 0, 65536, -1},
	{"--max-connections", "max_connections", 1, 1 << 20, GW_SERVER_MAX_CONNS},
	{"--max-connections-per-ip", "max_connections_per_ip", 0, 1 << 20, 1024},
	{"--connection-timeout-s", "connection_timeout_s", 0, 86400, 60},
	{"--import-timeout-s", "import_timeout_s", 0, 86400, 60},
};

typedef struct opts {
	const char *host;
	int port;
	size_t max_body;
	size_t max_upload;
	int threads;
	const char *store;
	const char *admin_token;
	const char *api_keys[MAX_ITEMS]; /* "KEY [settings]" (--api-key) */
	size_t n_api_keys;
	const char *api_keys_file;
	const char *tls_cert, *tls_key; /* files */
	const char *link_cert, *link_key, *link_ca; /* files: mutual TLS to tls+tcp:// workers */
	const char *workers[MAX_ITEMS];
	size_t n_workers;
	const char *models[MAX_ITEMS]; /* "[NAME=]DIR" */
	size_t n_models;
	const char *templates[MAX_ITEMS]; /* "NAME=TEMPLATE" */
	size_t n_templates;
	const char *adapters[MAX_ITEMS]; /* "NAME=DIR[@BASE]" */
	size_t n_adapters;
	const char *adapter_dirs[MAX_ITEMS];
	size_t n_adapter_dirs;
	const char *model_dirs[MAX_ITEMS];
	size_t n_model_dirs;
	const char *slo_classes[MAX_ITEMS]; /* "NAME=TTFT:TPOT:PRIO[:refuse|queue]" */
	size_t n_slo_classes;
	bool no_slo;
	bool public_metrics;
	long long adm[ADM_N]; /* by enum adm_key; -1 = not given (the config's, else the default) */
	const char *config;
} opts;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: loom-gateway [--host 127.0.0.1] [--port 8080] --worker URL [--worker URL ...]\n"
		"                    [--model [NAME=]DIR ...] [--adapter NAME=PEFT_DIR[@BASE] ...]\n"
		"                    [--store DIR (./loom-data)] [--admin-token TOKEN] [--public-metrics]\n"
		"                    [--adapter-dir DIR ...] [--model-dir DIR ...]\n"
		"                    [--max-body-bytes N (1048576)] [--max-upload-bytes N (1 GiB)]\n"
		"                    [--threads N (2)]\n"
		"                    [--chat-template NAME=model|auto|plain|chatml|llama2|zephyr]\n"
		"                    [--slo-class NAME=TTFT_MS:TPOT_MS:PRIORITY[:refuse|:queue] ...]\n"
		"                    [--no-slo] [--queue-max N (256)] [--queue-timeout-ms N (60000)]\n"
		"                    [--worker-slots N (64)] [--batch-per-worker N (0)]\n"
		"                    [--max-connections N (4096)] [--max-connections-per-ip N (1024)]\n"
		"                    [--connection-timeout-s N (60)] [--import-timeout-s N (60)]\n"
		"                    [--config FILE]\n"
		"                    [--api-key KEY ...] [--api-keys-file FILE]\n"
		"                    [--tls-cert FILE --tls-key FILE]\n"
		"                    [--link-tls-cert FILE --link-tls-key FILE --link-tls-ca FILE]\n"
		"  --store DIR: the registry (LMDB): models and adapters registered earlier are\n"
		"               served again; --model/--adapter register into it\n"
		"  --adapter: a PEFT LoRA folder served as model NAME on base model BASE\n"
		"             (BASE may be left out when one model is served)\n"
		"  --admin-token: Bearer token of the admin API and /metrics (also\n"
		"                 LOOM_ADMIN_TOKEN); without one, they are accepted from\n"
		"                 loopback clients only\n"
		"  --public-metrics: /metrics for every client, without the admin rule\n"
		"  --api-key KEY: with any key configured, every route but /health, /ready\n"
		"                 and the admin API needs 'Authorization: Bearer KEY' (401\n"
		"                 invalid_api_key otherwise). Repeatable; also LOOM_API_KEY\n"
		"                 (comma-separated; read when no --api-key is given), which\n"
		"                 unlike the command line is not shown by ps\n"
		"  --api-keys-file FILE: one key per line with optional settings:\n"
		"                 KEY [name=LABEL] [models=P,...] [adapters=P,...] [rpm=N]\n"
		"                     [burst=N] [concurrency=N]\n"
		"                 models/adapters: the base models / adapters the key may use\n"
		"                 (shell patterns; 'models=' none; not given: all), others are\n"
		"                 404 as if they did not exist; rpm: requests per minute (a\n"
		"                 bucket of burst requests, default rpm); concurrency:\n"
		"                 completions in flight; over either: 429 + Retry-After.\n"
		"                 '#' starts a comment line; logs name a key by its label\n"
		"  --tls-cert FILE --tls-key FILE: serve HTTPS (TLS 1.2/1.3, GnuTLS) with this\n"
		"                 PEM certificate (chain: server first, then intermediates)\n"
		"                 and its unencrypted PEM private key; both or neither\n"
		"  --link-tls-cert FILE --link-tls-key FILE --link-tls-ca FILE: mutual TLS to\n"
		"                 tls+tcp:// workers (all three; needed by such a worker, and\n"
		"                 then no plain tcp:// worker is accepted): the gateway's PEM\n"
		"                 certificate and unencrypted key, which workers check, and\n"
		"                 the CA a worker's certificate must chain to (give it the CA\n"
		"                 that signs worker certificates only)\n"
		"  --adapter-dir: a folder whose PEFT sub-folders POST /admin/adapters and\n"
		"                 /v1/load_lora_adapter may import (none: path imports refused)\n"
		"  --model-dir: a folder whose model sub-folders POST /admin/models may import\n"
		"               (as may the --adapter-dir folders)\n"
		"  --slo-class: add or replace an SLO class (targets in ms, 0 or 'none' = no\n"
		"               target); defaults interactive=1000:200:1 and batch=none:none:0.\n"
		"               Requests name theirs in \"slo_class\" or X-Loom-SLO-Class\n"
		"               (default interactive). When no worker can give the first token\n"
		"               within the class's TTFT target, a request goes to a worker with\n"
		"               room, else waits in the admission queue (':queue', the default);\n"
		"               with ':refuse' it gets 503 + Retry-After at once\n"
		"  --queue-max: requests the admission queue holds (all classes; by priority,\n"
		"               then arrival); a request finding it full gets 429 + Retry-After\n"
		"               (--batch-queue is the same)\n"
		"  --queue-timeout-ms: the longest wait there; then 503 + Retry-After\n"
		"  --worker-slots: requests in flight per worker before others wait in the\n"
		"                  queue (set it to the workers' --max-seqs)\n"
		"  --chat-template: how model NAME renders chat messages: its own Jinja template\n"
		"                   (model: tokenizer_config.json's chat_template or\n"
		"                   chat_template.jinja), or a built-in style; auto (default):\n"
		"                   the model's own when it ships one, else plain\n"
		"  --no-slo: route every request at once to the least loaded worker (no\n"
		"            refusals, no queue, no deadlines sent to workers), for comparison\n"
		"  --batch-per-worker: requests without a TTFT target in flight per worker at\n"
		"                      most (0: as many as the worker has room for)\n"
		"  --max-connections: HTTP connections open at once (lowered to the open-file\n"
		"                     limit less 256, which the gateway raises to its hard limit)\n"
		"  --max-connections-per-ip: of those, from one client address (0: no cap;\n"
		"                            behind a reverse proxy raise it or use 0)\n"
		"  --connection-timeout-s: a connection that sends and reads nothing this long\n"
		"                          is closed: idle keep-alive, half-sent requests, a\n"
		"                          stream its client stopped reading (0: never). A\n"
		"                          request waiting for its tokens is not idle\n"
		"  --import-timeout-s: an import (admin API, vLLM's load route) whose files do\n"
		"                      not read within this time fails with 504 (a hung\n"
		"                      filesystem holds no HTTP thread longer; 0: no limit)\n"
		"  --config FILE: JSON {\"models\":{\"NAME\":{\"path\":DIR,\"chat_template\":\"chatml\"}},\n"
		"                 \"adapters\":{\"NAME\":{\"path\":DIR,\"base\":BASE}},\n"
		"                 \"workers\":[URL,...],\n"
		"                 \"slo_classes\":{\"NAME\":{\"ttft_ms\":N|null,\"tpot_ms\":N|null,\n"
		"                                  \"priority\":N,\"on_miss\":\"queue\"|\"refuse\"}},\n"
		"                 \"queue_max\":N, \"queue_timeout_ms\":N, \"worker_slots\":N,\n"
		"                 \"batch_per_worker\":N, \"max_connections\":N,\n"
		"                 \"max_connections_per_ip\":N, \"connection_timeout_s\":N,\n"
		"                 \"import_timeout_s\":N}\n"
		"                 (same meaning as the flags; flags win)\n");
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "loom-gateway: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	usage(stderr);
	return 2;
}

static bool parse_num(const char *s, long long lo, long long hi, long long *out)
{
	char *end;
	long long v = strtoll(s, &end, 10);
	if (!*s || *end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* The list a repeatable flag appends to, or NULL. */
static const char **list_of(opts *o, const char *flag, size_t **n)
{
	static const struct {
		const char *flag;
		size_t list, count;
	} tab[] = {
		{"--worker", offsetof(opts, workers), offsetof(opts, n_workers)},
		{"--model", offsetof(opts, models), offsetof(opts, n_models)},
		{"--adapter", offsetof(opts, adapters), offsetof(opts, n_adapters)},
		{"--chat-template", offsetof(opts, templates), offsetof(opts, n_templates)},
		{"--adapter-dir", offsetof(opts, adapter_dirs), offsetof(opts, n_adapter_dirs)},
		{"--model-dir", offsetof(opts, model_dirs), offsetof(opts, n_model_dirs)},
		{"--slo-class", offsetof(opts, slo_classes), offsetof(opts, n_slo_classes)},
		{"--api-key", offsetof(opts, api_keys), offsetof(opts, n_api_keys)},
	};
	for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
		if (!strcmp(flag, tab[i].flag)) {
			*n = (size_t *)((char *)o + tab[i].count);
			return (const char **)((char *)o + tab[i].list);
		}
	}
	return NULL;
}

/* The adm_key of an admission flag, or -1. */
static int adm_flag(const char *flag)
{
	if (!strcmp(flag, "--batch-queue"))
		return ADM_QUEUE_MAX; /* its earlier name */
	for (int k = 0; k < ADM_N; k++)
		if (!strcmp(flag, adm_tab[k].flag))
			return k;
	return -1;
}

/* Returns 0, or the exit status for a usage error. */
static int parse_args(int argc, char **argv, opts *o)
{
	for (int i = 1; i < argc; i++) {
		char *a = argv[i], *val = NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
		}
		if (!strcmp(a, "--no-slo")) {
			o->no_slo = true;
			continue;
		}
		if (!strcmp(a, "--public-metrics")) {
			o->public_metrics = true;
			continue;
		}
		char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
		char flag[64];
		if (eq && (size_t)(eq - a) < sizeof flag) {
			memcpy(flag, a, (size_t)(eq - a));
			flag[eq - a] = '\0';
			val = eq + 1;
		} else {
			snprintf(flag, sizeof flag, "%s", a);
		}
		static const char *const known[] = {
			"--host", "--port", "--worker", "--model", "--max-body-bytes", "--threads",
			"--chat-template", "--config", "--adapter", "--store", "--admin-token",
			"--adapter-dir", "--model-dir", "--max-upload-bytes", "--slo-class",
			"--batch-queue", "--batch-per-worker", "--queue-max", "--queue-timeout-ms",
			"--worker-slots", "--max-connections", "--max-connections-per-ip",
			"--connection-timeout-s", "--import-timeout-s", "--api-key", "--api-keys-file", "--tls-cert",
			"--tls-key", "--link-tls-cert", "--link-tls-key", "--link-tls-ca"};
		bool ok = false;
		for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
			ok |= !strcmp(flag, known[k]);
		if (!ok)
			return usage_error("unknown option '%s'", a);
		if (!val) {
			if (i + 1 >= argc)
				return usage_error("option '%s' needs a value", a);
			val = argv[++i];
		}
		long long v;
		size_t *n;
		const char **list;
		int k;
		if (!strcmp(flag, "--host")) {
			o->host = val;
		} else if (!strcmp(flag, "--port")) {
			if (!parse_num(val, 0, 65535, &v))
				return usage_error("--port '%s': expected 0..65535", val);
			o->port = (int)v;
		} else if (!strcmp(flag, "--max-body-bytes")) {
			if (!parse_num(val, 1, 1LL << 40, &v))
				return usage_error("--max-body-bytes '%s': expected a positive integer", val);
			o->max_body = (size_t)v;
		} else if (!strcmp(flag, "--max-upload-bytes")) {
			if (!parse_num(val, 1, 1LL << 44, &v))
				return usage_error("--max-upload-bytes '%s': expected a positive integer",
						   val);
			o->max_upload = (size_t)v;
		} else if (!strcmp(flag, "--threads")) {
			if (!parse_num(val, 1, 256, &v))
				return usage_error("--threads '%s': expected 1..256", val);
			o->threads = (int)v;
		} else if ((k = adm_flag(flag)) >= 0) {
			if (!parse_num(val, adm_tab[k].lo, adm_tab[k].hi, &v)) {
				fprintf(stderr, "loom-gateway: %s '%s': expected %lld..%lld\n", flag, val,
					adm_tab[k].lo, adm_tab[k].hi);
				usage(stderr);
				return 2;
			}
			o->adm[k] = v;
		} else if (!strcmp(flag, "--config")) {
			o->config = val;
		} else if (!strcmp(flag, "--store")) {
			if (!*val)
				return usage_error("%s", "--store needs a folder");
			o->store = val;
		} else if (!strcmp(flag, "--admin-token")) {
			o->admin_token = val;
		} else if (!strcmp(flag, "--api-keys-file")) {
			o->api_keys_file = val;
		} else if (!strcmp(flag, "--tls-cert")) {
			o->tls_cert = val;
		} else if (!strcmp(flag, "--tls-key")) {
			o->tls_key = val;
		} else if (!strcmp(flag, "--link-tls-cert")) {
			o->link_cert = val;
		} else if (!strcmp(flag, "--link-tls-key")) {
			o->link_key = val;
		} else if (!strcmp(flag, "--link-tls-ca")) {
			o->link_ca = val;
		} else if ((list = list_of(o, flag, &n))) {
			if (*n == MAX_ITEMS)
				return usage_error("too many '%s' options", flag);
			if (list == o->templates && !strchr(val, '='))
				return usage_error("--chat-template '%s': expected NAME=TEMPLATE", val);
			list[(*n)++] = val;
		}
	}
	return 0;
}

/* One model or adapter to register once the store is open (strings owned). */
typedef struct spec {
	char *name;
	char *dir;
	char *base;            /* adapters: NULL = the only model */
	gw_chat_tmpl tmpl;     /* models */
} spec;

static void specs_free(spec *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		loom_free(v[i].name);
		loom_free(v[i].dir);
		loom_free(v[i].base);
	}
}

static int oom(void)
{
	fprintf(stderr, "loom-gateway: out of memory\n");
	return 1;
}

/* Reads the config's "adapters" object into specs. Returns 0 or prints one
 * line and returns 1. */
static int config_adapters(const char *path, json_t *ads, spec *specs, size_t *n_specs)
{
	const char *key, *k2;
	json_t *v, *v2;
	if (!json_is_object(ads)) {
		fprintf(stderr, "loom-gateway: %s: 'adapters' must be an object\n", path);
		return 1;
	}
	json_object_foreach(ads, key, v) {
		json_t *p = json_object_get(v, "path"), *b = json_object_get(v, "base");
		if (!json_is_object(v) || !json_is_string(p) || (b && !json_is_string(b))) {
			fprintf(stderr,
				"loom-gateway: %s: adapters.%s needs a string 'path' (and an optional "
				"string 'base')\n", path, key);
			return 1;
		}
		json_object_foreach(v, k2, v2) {
			if (strcmp(k2, "path") && strcmp(k2, "base")) {
				fprintf(stderr, "loom-gateway: %s: adapters.%s: unknown key '%s' "
					"(expected path, base)\n", path, key, k2);
				return 1;
			}
		}
		if (*n_specs == MAX_ITEMS) {
			fprintf(stderr, "loom-gateway: %s: more than %d adapters\n", path, MAX_ITEMS);
			return 1;
		}
		spec *s = &specs[(*n_specs)++];
		s->name = loom_strdup(key);
		s->dir = loom_strdup(json_string_value(p));
		s->base = b ? loom_strdup(json_string_value(b)) : NULL;
		if (!s->name || !s->dir || (b && !s->base))
			return oom();
	}
	return 0;
}

/* The config's admission keys into adm where the flags left -1. Returns 0
 * or prints one line and returns 1. */
static int config_admission(const char *path, json_t *root, long long *adm)
{
	for (int k = 0; k < ADM_N; k++) {
		json_t *v = json_object_get(root, adm_tab[k].key);
		if (!v)
			continue;
		if (!json_is_integer(v) || json_integer_value(v) < adm_tab[k].lo ||
		    json_integer_value(v) > adm_tab[k].hi) {
			fprintf(stderr, "loom-gateway: %s: '%s' must be an integer %lld..%lld\n", path,
				adm_tab[k].key, adm_tab[k].lo, adm_tab[k].hi);
			return 1;
		}
		if (adm[k] < 0)
			adm[k] = json_integer_value(v);
	}
	return 0;
}

/* Loads the --config file: models (into mspecs), adapters (into aspecs),
 * workers (appended to urls), SLO classes and admission settings (adm).
 * Returns 0 or prints one line and returns 1. */
static int load_config(const char *path, json_t **keep, const char **urls, size_t *n_urls,
		       spec *mspecs, size_t *n_m, spec *aspecs, size_t *n_a, gw_slo *slo,
		       long long *adm)
{
	json_error_t je;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		fprintf(stderr, "loom-gateway: %s: line %d, column %d: %s\n", path, je.line,
			je.column, je.text);
		return 1;
	}
	*keep = root; /* worker url strings point into it */
	if (!json_is_object(root)) {
		fprintf(stderr, "loom-gateway: %s: expected a JSON object\n", path);
		return 1;
	}
	const char *key;
	json_t *v;
	json_object_foreach(root, key, v) {
		bool adm_key = false;
		for (int k = 0; k < ADM_N; k++)
			adm_key |= !strcmp(key, adm_tab[k].key);
		if (strcmp(key, "models") && strcmp(key, "workers") && strcmp(key, "adapters") &&
		    strcmp(key, "slo_classes") && !adm_key) {
			fprintf(stderr, "loom-gateway: %s: unknown key '%s' (expected models, adapters, "
				"workers, slo_classes, queue_max, queue_timeout_ms, worker_slots, "
				"batch_per_worker, max_connections, max_connections_per_ip, "
				"connection_timeout_s, import_timeout_s)\n", path, key);
			return 1;
		}
	}
	if (config_admission(path, root, adm))
		return 1;
	json_t *sc = json_object_get(root, "slo_classes");
	if (sc) {
		char *text = json_dumps(sc, JSON_ENCODE_ANY);
		loom_err rc = text ? gw_slo_load_json(slo, text, path)
				   : loom_fail(LOOM_ENOMEM, "out of memory");
		free(text);
		if (rc) {
			fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
			return 1;
		}
	}
	json_t *models = json_object_get(root, "models");
	if (models && !json_is_object(models)) {
		fprintf(stderr, "loom-gateway: %s: 'models' must be an object\n", path);
		return 1;
	}
	json_object_foreach(models, key, v) {
		json_t *p = json_object_get(v, "path"), *t = json_object_get(v, "chat_template");
		gw_chat_tmpl tmpl = GW_TMPL_AUTO;
		if (!json_is_object(v) || !json_is_string(p)) {
			fprintf(stderr, "loom-gateway: %s: models.%s needs a string 'path'\n", path, key);
			return 1;
		}
		if (t && (!json_is_string(t) || gw_chat_tmpl_parse(json_string_value(t), &tmpl))) {
			fprintf(stderr, "loom-gateway: %s: models.%s.chat_template: %s\n", path, key,
				json_is_string(t) ? loom_errmsg() : "must be a string");
			return 1;
		}
		if (*n_m == MAX_ITEMS) {
			fprintf(stderr, "loom-gateway: %s: more than %d models\n", path, MAX_ITEMS);
			return 1;
		}
		spec *s = &mspecs[(*n_m)++];
		s->tmpl = tmpl;
		if (!(s->name = loom_strdup(key)) || !(s->dir = loom_strdup(json_string_value(p))))
			return oom();
	}
	json_t *ads = json_object_get(root, "adapters");
	if (ads && config_adapters(path, ads, aspecs, n_a))
		return 1;
	json_t *workers = json_object_get(root, "workers");
	if (workers && !json_is_array(workers)) {
		fprintf(stderr, "loom-gateway: %s: 'workers' must be an array of URLs\n", path);
		return 1;
	}
	size_t i;
	json_array_foreach(workers, i, v) {
		if (!json_is_string(v) || *n_urls == MAX_ITEMS) {
			fprintf(stderr, "loom-gateway: %s: workers[%zu] must be a URL string (at most %d)\n",
				path, i, MAX_ITEMS);
			return 1;
		}
		urls[(*n_urls)++] = json_string_value(v);
	}
	return 0;
}

/* Registers every model spec (config first, then flags). Returns 0, or
 * prints one line and returns 1 (2 for two models with one name). */
static int add_models(gw_registry *reg, const spec *specs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < i; k++) {
			if (!strcmp(specs[k].name, specs[i].name)) {
				fprintf(stderr, "loom-gateway: model '%s' given twice\n", specs[i].name);
				return 2;
			}
		}
		if (gw_registry_import_model(reg, specs[i].name, specs[i].dir, specs[i].tmpl,
					     GW_REG_SYNC, NULL)) {
			fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
			return 1;
		}
	}
	return 0;
}

/* Checks and registers every adapter spec (after all models). Returns 0, or
 * prints one line and returns the exit status: 2 for a bad or taken name or a
 * missing base, 1 for a folder the adapter loader rejects. */
static int add_adapters(gw_registry *reg, gw_models *m, const spec *specs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const spec *s = &specs[i];
		gw_model *base = NULL;
		char abs[PATH_MAX];
		if (!gw_adapter_name_ok(s->name)) {
			fprintf(stderr, "loom-gateway: adapter name '%s' must be 1..%d characters of "
				"A-Z a-z 0-9 . _ -\n", s->name, LOOM_NAME_MAX - 1);
			return 2;
		}
		for (size_t k = 0; k < i; k++) {
			if (!strcmp(specs[k].name, s->name)) {
				fprintf(stderr, "loom-gateway: adapter '%s' given twice\n", s->name);
				return 2;
			}
		}
		if (gw_models_find(m, s->name)) {
			fprintf(stderr, "loom-gateway: adapter '%s': a model already has that name\n",
				s->name);
			return 2;
		}
		if (gw_models_adapter_base(m, s->name, s->base, &base)) {
			fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
			return 2;
		}
		gw_model_release(base);
		if (!realpath(s->dir, abs)) {
			fprintf(stderr, "loom-gateway: adapter %s (%s): %s: %s\n", s->name, s->dir,
				s->dir, strerror(errno));
			return 1;
		}
		if (gw_registry_import_adapter(reg, s->name, s->base, abs, abs, GW_REG_SYNC, NULL)) {
			fprintf(stderr, "loom-gateway: adapter %s (%s): %s\n", s->name, s->dir,
				loom_errmsg());
			return 1;
		}
	}
	return 0;
}

/* realpath of every dir into out (loom_malloc'ed strings). 0 or prints and 1. */
static int resolve_dirs(const char *flag, const char *const *dirs, size_t n, char **out)
{
	for (size_t i = 0; i < n; i++) {
		char abs[PATH_MAX];
		if (!realpath(dirs[i], abs)) {
			fprintf(stderr, "loom-gateway: %s %s: %s\n", flag, dirs[i], strerror(errno));
			return 1;
		}
		if (!(out[i] = loom_strdup(abs)))
			return oom();
	}
	return 0;
}

/* The API keys of --api-key (else LOOM_API_KEY) and --api-keys-file into
 * *out (NULL when none is configured: the API is open). Returns 0, or prints
 * one line (never a key) and returns the exit status: 2 for a bad flag, 1
 * for a bad file. */
static int load_keys(const opts *o, gw_keys **out)
{
	const char *env = getenv("LOOM_API_KEY");
	bool from_env = !o->n_api_keys && env && *env;
	int status = 2;
	*out = NULL;
	if (!o->n_api_keys && !from_env && !o->api_keys_file)
		return 0;
	if (gw_keys_create(out))
		return oom();
	loom_err rc = LOOM_OK;
	for (size_t i = 0; i < o->n_api_keys && !rc; i++)
		rc = gw_keys_add_line(*out, o->api_keys[i], "--api-key");
	if (!rc && from_env)
		rc = gw_keys_add_list(*out, env, "LOOM_API_KEY");
	if (!rc && o->api_keys_file) {
		status = 1;
		rc = gw_keys_load_file(*out, o->api_keys_file);
	}
	if (!rc)
		return 0;
	fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
	gw_keys_destroy(*out);
	*out = NULL;
	return status;
}

/* Reads the --tls-cert / --tls-key files (PEM text, loom_malloc'ed; the
 * key is wiped when freed). 0 or prints one line and returns 1. */
static int load_tls(const opts *o, char **cert, size_t *cert_len, char **key, size_t *key_len)
{
	if (loom_text_read(o->tls_cert, 1u << 20, cert, cert_len) ||
	    loom_text_read(o->tls_key, 1u << 20, key, key_len)) {
		fprintf(stderr, "loom-gateway: --tls-cert/--tls-key: %s\n", loom_errmsg());
		return 1;
	}
	if (!strstr(*cert, "-----BEGIN CERTIFICATE-----")) {
		fprintf(stderr, "loom-gateway: --tls-cert %s: not a PEM certificate\n", o->tls_cert);
		return 1;
	}
	if (!strstr(*key, "PRIVATE KEY-----") || strstr(*key, "ENCRYPTED")) {
		fprintf(stderr, "loom-gateway: --tls-key %s: not an unencrypted PEM private key\n",
			o->tls_key);
		return 1;
	}
	return 0;
}

/* The link's TLS (--link-tls-*) into *out, checked against the worker
 * URLs: a tls+tcp:// worker needs it, and with it no worker is plain
 * tcp://. 0, or prints one line and returns the exit status (2 usage, 1 a
 * file nng refuses). */
static int link_tls(const opts *o, const char *const *urls, size_t n, struct nng_tls_config **out)
{
	bool want = o->link_cert || o->link_key || o->link_ca;
	*out = NULL;
	if (want && (!o->link_cert || !o->link_key || !o->link_ca))
		return usage_error("%s", "--link-tls-cert, --link-tls-key and --link-tls-ca go together");
	for (size_t i = 0; i < n; i++) {
		if (!want && loom_url_is_tls(urls[i]))
			return usage_error("worker %s: tls+tcp:// needs --link-tls-cert, --link-tls-key "
					   "and --link-tls-ca", urls[i]);
		if (want && !strncmp(urls[i], "tcp", 3))
			return usage_error("worker %s: with --link-tls-* a TCP worker must be "
					   "tls+tcp://", urls[i]);
	}
	if (want && loom_tls_link_config(false, o->link_cert, o->link_key, o->link_ca,
					 "--link-tls-", out)) {
		fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
		return 1;
	}
	return 0;
}

/* How long the shutdown may take before the process just exits. */
#define SHUTDOWN_GRACE_S 4

/* Ends the process when the orderly shutdown hangs (an HTTP thread stuck in
 * a read from a hung file system, a link that does not close): whatever is
 * in flight, SIGTERM stops the gateway within SHUTDOWN_GRACE_S seconds. The
 * store needs no orderly close (every LMDB commit is durable). */
static void *shutdown_watchdog(void *arg)
{
	(void)arg;
	sleep(SHUTDOWN_GRACE_S);
	LOOM_WARN("shutdown did not finish within %d s: exiting now", SHUTDOWN_GRACE_S);
	_exit(0);
	return NULL;
}

/* Every connection takes a descriptor: the soft open-file limit goes up to
 * the hard one (the connection limit is clamped to what it allows). */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) || rl.rlim_cur >= rl.rlim_max)
		return;
	rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (1u << 20) ? (1u << 20)
									       : rl.rlim_max;
	if (want <= rl.rlim_cur)
		return;
	rl.rlim_cur = want;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		LOOM_WARN("cannot raise the open-file limit to %llu: %s", (unsigned long long)want,
			  strerror(errno));
}

static void log_registry(gw_models *models)
{
	gw_models_rdlock(models);
	for (size_t i = 0; i < gw_models_count_locked(models); i++) {
		const gw_model *m = gw_models_at_locked(models, i);
		LOOM_INFO("model %s v%u (context %d, vocab %d, chat template %s)", m->name, m->version,
			  m->cfg.max_ctx, m->cfg.vocab, gw_chat_tmpl_name(m->tmpl));
	}
	size_t na = gw_models_adapter_count_locked(models);
	for (size_t i = 0; i < na && i < 16; i++) {
		const gw_adapter *a = gw_models_adapter_at_locked(models, i);
		LOOM_INFO("adapter %s v%u of %s (r %d, max rank %d, alpha %g, %zu bytes)", a->name,
			  a->version, a->base->name, a->rank, a->max_rank, (double)a->alpha, a->bytes);
	}
	if (na > 16)
		LOOM_INFO("... and %zu more adapters", na - 16);
	gw_models_unlock(models);
}

int main(int argc, char **argv)
{
	opts o = {.host = "127.0.0.1", .port = 8080, .max_body = 1048576,
		  .max_upload = (size_t)1 << 30, .threads = 2, .store = "./loom-data",
		  .adm = {-1, -1, -1, -1, -1, -1, -1}};
	gw_models *models = NULL;
	gw_registry *reg = NULL;
	gw_link *link = NULL;
	gw_server *srv = NULL;
	gw_admin *admin = NULL;
	gw_slo *slo = NULL;
	gw_keys *keys = NULL;
	char *tls_cert = NULL, *tls_key = NULL;
	struct nng_tls_config *link_cfg = NULL;
	size_t tls_cert_len = 0, tls_key_len = 0;
	json_t *config = NULL;
	const char *urls[2 * MAX_ITEMS];
	size_t n_urls = 0;
	static spec mspecs[2 * MAX_ITEMS], aspecs[2 * MAX_ITEMS];
	size_t n_m = 0, n_a = 0;
	char *adirs[MAX_ITEMS] = {0}, *mdirs[MAX_ITEMS] = {0};
	gw_link_opts lo = {0};
	int status = 1;
	sigset_t sigs;

	loom_log_init("loom-gateway");
	int rc = parse_args(argc, argv, &o);
	if (rc)
		return rc;
	if (!o.config && o.n_workers == 0)
		return usage_error("%s", "at least one --worker is required");
	if (!o.admin_token)
		o.admin_token = getenv("LOOM_ADMIN_TOKEN");
	if (!o.tls_cert != !o.tls_key)
		return usage_error("%s", "--tls-cert and --tls-key go together");

	/* signals are taken by sigwait below: block them before any thread starts */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();

	for (size_t i = 0; i < o.n_templates; i++) {
		gw_chat_tmpl t;
		if (gw_chat_tmpl_parse(strchr(o.templates[i], '=') + 1, &t)) {
			status = usage_error("%s", loom_errmsg());
			goto out;
		}
	}
	if (gw_slo_create(&slo)) {
		fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
		goto out;
	}
	if (o.config &&
	    load_config(o.config, &config, urls, &n_urls, mspecs, &n_m, aspecs, &n_a, slo, o.adm))
		goto out;
	for (size_t i = 0; i < o.n_slo_classes; i++) {
		if (gw_slo_parse_arg(slo, o.slo_classes[i], "--slo-class")) {
			status = usage_error("%s", loom_errmsg());
			goto out;
		}
	}
	for (size_t i = 0; i < o.n_workers; i++)
		urls[n_urls++] = o.workers[i];
	if (n_urls == 0) {
		status = usage_error("%s", "at least one worker is required");
		goto out;
	}
	if ((status = link_tls(&o, urls, n_urls, &link_cfg)))
		goto out;
	for (size_t i = 0; i < o.n_models; i++) {
		spec *sp = &mspecs[n_m++];
		sp->tmpl = GW_TMPL_AUTO;
		if (gw_models_split_arg(o.models[i], &sp->name, &sp->dir)) {
			status = usage_error("%s", loom_errmsg());
			goto out;
		}
	}
	for (size_t i = 0; i < o.n_adapters; i++) {
		spec *sp = &aspecs[n_a++];
		if (gw_adapter_split_arg(o.adapters[i], &sp->name, &sp->dir, &sp->base)) {
			fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
			status = 2;
			goto out;
		}
	}
	if ((status = resolve_dirs("--adapter-dir", o.adapter_dirs, o.n_adapter_dirs, adirs)) ||
	    (status = resolve_dirs("--model-dir", o.model_dirs, o.n_model_dirs, mdirs)) ||
	    (status = load_keys(&o, &keys)) ||
	    (o.tls_cert && (status = load_tls(&o, &tls_cert, &tls_cert_len, &tls_key, &tls_key_len))))
		goto out;
	status = 1;
	if (gw_models_create(&models) || gw_registry_open(o.store, models, &reg) ||
	    gw_registry_load(reg, NULL)) {
		fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
		goto out;
	}
	if ((status = add_models(reg, mspecs, n_m)) != 0)
		goto out;
	for (size_t i = 0; i < o.n_templates; i++) {
		const char *eq = strchr(o.templates[i], '=');
		char name[LOOM_NAME_MAX];
		gw_chat_tmpl t;
		snprintf(name, sizeof name, "%.*s", (int)(eq - o.templates[i]), o.templates[i]);
		gw_chat_tmpl_parse(eq + 1, &t);
		if (gw_models_set_template(models, name, t)) {
			status = usage_error("%s", loom_errmsg());
			goto out;
		}
	}
	if ((status = add_adapters(reg, models, aspecs, n_a)) != 0)
		goto out;
	status = 1;
	if (gw_models_count(models) == 0)
		LOOM_WARN("no model is registered yet (--model, --config, or POST /admin/models)");
	if (gw_registry_link_opts(reg, &lo)) {
		fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
		goto out;
	}
	lo.urls = urls;
	lo.n_urls = n_urls;
	lo.no_slo = o.no_slo;
	lo.tls = link_cfg;
	/* -1 (not given) -> 0 (the link's default) */
	lo.batch_queue = o.adm[ADM_QUEUE_MAX] > 0 ? (size_t)o.adm[ADM_QUEUE_MAX] : 0;
	lo.queue_timeout_ms = o.adm[ADM_QUEUE_TIMEOUT] > 0 ? (uint32_t)o.adm[ADM_QUEUE_TIMEOUT] : 0;
	lo.worker_slots = o.adm[ADM_WORKER_SLOTS] > 0 ? (uint32_t)o.adm[ADM_WORKER_SLOTS] : 0;
	lo.batch_per_worker = o.adm[ADM_BATCH_PER_WORKER] > 0 ? (uint32_t)o.adm[ADM_BATCH_PER_WORKER]
							      : 0;
	/* beside requests with a TTFT target, a batch request starts only where one
	 * would still meet a quarter of the tightest TTFT target */
	lo.room_ms = gw_slo_min_ttft(slo) / 4;
	if (gw_link_create_opts(&lo, &link)) {
		fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
		goto out;
	}
	gw_registry_attach(reg, link);
	gw_admin_opts ao = {.token = o.admin_token,
			    .adapter_dirs = (const char *const *)adirs,
			    .n_adapter_dirs = o.n_adapter_dirs,
			    .model_dirs = (const char *const *)mdirs,
			    .n_model_dirs = o.n_model_dirs,
			    .max_upload = o.max_upload,
			    .max_body = o.max_body,
			    .reg = reg,
			    .models = models,
			    .link = link,
			    .slo = slo,
			    .public_metrics = o.public_metrics};
	if (gw_admin_create(&ao, &admin)) {
		fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
		goto out;
	}
	for (int k = ADM_MAX_CONNS; k < ADM_N; k++)
		if (o.adm[k] < 0)
			o.adm[k] = adm_tab[k].def;
	/* imports through the API from now on (start-up ones had no limit) */
	gw_registry_set_import_timeout(reg, (long)o.adm[ADM_IMPORT_TIMEOUT] * 1000L);
	gw_server_opts so = {.host = o.host, .port = o.port, .max_body = o.max_body,
			     .threads = o.threads, .models = models, .link = link, .admin = admin,
			     .slo = slo, .keys = keys, .max_conns = (unsigned)o.adm[ADM_MAX_CONNS],
			     .max_conns_per_ip = (unsigned)o.adm[ADM_MAX_CONNS_PER_IP],
			     .conn_timeout_s = (unsigned)o.adm[ADM_CONN_TIMEOUT],
			     .tls_cert = tls_cert, .tls_key = tls_key};
	if (gw_server_start(&so, &srv)) {
		fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
		goto out;
	}
	log_registry(models);
	LOOM_INFO("gateway listening on %s://%s:%d (store %s, admin %s, %s)",
		  tls_cert ? "https" : "http", o.host,
		  gw_server_port(srv), o.store,
		  o.admin_token && *o.admin_token ? "by token" : "from loopback only",
		  o.no_slo ? "plain least-loaded routing (--no-slo)" : "SLO routing");
	LOOM_INFO("connections: at most %lld, %lld per client address (0 = no cap), closed after "
		  "%lld s without traffic (0 = never)", o.adm[ADM_MAX_CONNS],
		  o.adm[ADM_MAX_CONNS_PER_IP], o.adm[ADM_CONN_TIMEOUT]);
	if (keys)
		LOOM_INFO("API keys: %zu (%zu with model lists or limits); every route but /health, "
			  "/ready and the admin API needs one", gw_keys_count(keys),
			  gw_keys_count_limited(keys));
	else
		LOOM_INFO("API routes open to every client (no --api-key, LOOM_API_KEY or "
			  "--api-keys-file)");
	for (size_t i = 0; i < gw_slo_count(slo); i++) {
		const gw_slo_class *c = gw_slo_at(slo, i);
		LOOM_INFO("SLO class %s: TTFT %u ms, TPOT %u ms (0 = none), priority %d%s", c->name,
			  c->ttft_ms, c->tpot_ms, c->priority,
			  !c->ttft_ms ? "" : c->refuse ? ", refused when late" : ", queued when late");
	}

	int sig = 0;
	sigwait(&sigs, &sig);
	LOOM_INFO("signal %d: shutting down", sig);
	pthread_t dog;
	if (pthread_create(&dog, NULL, shutdown_watchdog, NULL) == 0)
		pthread_detach(dog);
	status = 0;
out:
	if (reg)
		gw_registry_attach(reg, NULL);
	if (link)
		gw_link_close_all(link);
	gw_server_stop(srv);
	gw_link_destroy(link);
	gw_admin_destroy(admin);
	gw_registry_link_opts_fini(&lo);
	gw_registry_close(reg);
	gw_models_destroy(models);
	gw_slo_destroy(slo);
	gw_keys_destroy(keys);
	if (link_cfg)
		nng_tls_config_free(link_cfg);
	if (tls_key)
		memset(tls_key, 0, tls_key_len);
	loom_free(tls_key);
	loom_free(tls_cert);
	json_decref(config);
	specs_free(mspecs, n_m);
	specs_free(aspecs, n_a);
	for (size_t i = 0; i < MAX_ITEMS; i++) {
		loom_free(adirs[i]);
		loom_free(mdirs[i]);
	}
	return status;
}
