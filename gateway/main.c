/*
 * gateway/main.c — loom-gateway: command line, model loading, start/stop.
 *
 * Exit status: 0 after SIGINT/SIGTERM, 1 when start-up fails (bad model
 * folder, config file, rejected adapter, port in use), 2 for usage errors
 * (including a bad or clashing adapter name, or a missing adapter base).
 * Adapters are loaded once at start to validate them (then freed: workers
 * load their own copy from the absolute path the gateway sends them).
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "gateway/gw_chat.h"
#include "gateway/gw_link.h"
#include "gateway/gw_models.h"
#include "gateway/gw_server.h"

#define MAX_ITEMS 64

typedef struct opts {
	const char *host;
	int port;
	size_t max_body;
	int threads;
	const char *workers[MAX_ITEMS];
	size_t n_workers;
	const char *models[MAX_ITEMS]; /* "[NAME=]DIR" */
	size_t n_models;
	const char *templates[MAX_ITEMS]; /* "NAME=TEMPLATE" */
	size_t n_templates;
	const char *adapters[MAX_ITEMS]; /* "NAME=DIR[@BASE]" */
	size_t n_adapters;
	const char *config;
} opts;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: loom-gateway [--host 127.0.0.1] [--port 8080] --worker URL [--worker URL ...]\n"
		"                    --model [NAME=]DIR [--model ...] [--max-body-bytes N (1048576)]\n"
		"                    [--threads N (2)] [--chat-template NAME=plain|chatml|llama2|zephyr]\n"
		"                    [--adapter NAME=PEFT_DIR[@BASE] ...] [--config FILE]\n"
		"  --adapter: a PEFT LoRA folder served as model NAME on base model BASE\n"
		"             (BASE may be left out when one model is served)\n"
		"  --config FILE: JSON {\"models\":{\"NAME\":{\"path\":DIR,\"chat_template\":\"chatml\"}},\n"
		"                 \"adapters\":{\"NAME\":{\"path\":DIR,\"base\":BASE}},\n"
		"                 \"workers\":[URL,...]} (same meaning as the flags)\n");
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

/* Returns 0, or the exit status for a usage error. */
static int parse_args(int argc, char **argv, opts *o)
{
	for (int i = 1; i < argc; i++) {
		char *a = argv[i], *val = NULL;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			exit(0);
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
		static const char *const known[] = {"--host", "--port", "--worker", "--model",
						    "--max-body-bytes", "--threads",
						    "--chat-template", "--config", "--adapter"};
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
		} else if (!strcmp(flag, "--threads")) {
			if (!parse_num(val, 1, 256, &v))
				return usage_error("--threads '%s': expected 1..256", val);
			o->threads = (int)v;
		} else if (!strcmp(flag, "--config")) {
			o->config = val;
		} else {
			const char **list = !strcmp(flag, "--worker")  ? o->workers
					  : !strcmp(flag, "--model")   ? o->models
					  : !strcmp(flag, "--adapter") ? o->adapters
								       : o->templates;
			size_t *n = !strcmp(flag, "--worker")  ? &o->n_workers
				  : !strcmp(flag, "--model")   ? &o->n_models
				  : !strcmp(flag, "--adapter") ? &o->n_adapters
							       : &o->n_templates;
			if (*n == MAX_ITEMS)
				return usage_error("too many '%s' options", flag);
			if (list == o->templates && !strchr(val, '='))
				return usage_error("--chat-template '%s': expected NAME=TEMPLATE", val);
			list[(*n)++] = val;
		}
	}
	return 0;
}

/* One adapter to add once every model is loaded (strings owned). */
typedef struct adapter_spec {
	char *name;
	char *dir;
	char *base; /* NULL = the only model */
} adapter_spec;

static void specs_free(adapter_spec *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		loom_free(v[i].name);
		loom_free(v[i].dir);
		loom_free(v[i].base);
	}
}

/* Reads the config's "adapters" object into specs. Returns 0 or prints one
 * line and returns 1. */
static int config_adapters(const char *path, json_t *ads, adapter_spec *specs, size_t *n_specs)
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
		adapter_spec *s = &specs[(*n_specs)++];
		s->name = loom_strdup(key);
		s->dir = loom_strdup(json_string_value(p));
		s->base = b ? loom_strdup(json_string_value(b)) : NULL;
		if (!s->name || !s->dir || (b && !s->base)) {
			fprintf(stderr, "loom-gateway: out of memory\n");
			return 1;
		}
	}
	return 0;
}

/* Loads the --config file: models (into m), adapters (into specs) and workers
 * (appended to urls). Returns 0 or prints one line and returns 1. */
static int load_config(const char *path, gw_models *m, json_t **keep, const char **urls,
		       size_t *n_urls, adapter_spec *specs, size_t *n_specs)
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
		if (strcmp(key, "models") && strcmp(key, "workers") && strcmp(key, "adapters")) {
			fprintf(stderr, "loom-gateway: %s: unknown key '%s' (expected models, adapters, "
				"workers)\n", path, key);
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
		gw_chat_tmpl tmpl = GW_TMPL_PLAIN;
		if (!json_is_object(v) || !json_is_string(p)) {
			fprintf(stderr, "loom-gateway: %s: models.%s needs a string 'path'\n", path, key);
			return 1;
		}
		if (t && (!json_is_string(t) || gw_chat_tmpl_parse(json_string_value(t), &tmpl))) {
			fprintf(stderr, "loom-gateway: %s: models.%s.chat_template: %s\n", path, key,
				json_is_string(t) ? loom_errmsg() : "must be a string");
			return 1;
		}
		if (gw_models_add(m, key, json_string_value(p), tmpl)) {
			fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
			return 1;
		}
	}
	json_t *ads = json_object_get(root, "adapters");
	if (ads && config_adapters(path, ads, specs, n_specs))
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

/* Checks and loads every adapter (after all models). Returns 0, or prints
 * one line and returns the exit status: 2 for a bad or taken name or a
 * missing base, 1 for a folder the adapter loader rejects. */
static int add_adapters(gw_models *m, const adapter_spec *specs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const adapter_spec *s = &specs[i];
		if (gw_models_check_adapter(m, s->name, s->base, NULL)) {
			fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
			return 2;
		}
		if (gw_models_add_adapter(m, s->name, s->dir, s->base)) {
			fprintf(stderr, "loom-gateway: adapter %s (%s): %s\n", s->name, s->dir,
				loom_errmsg());
			return 1;
		}
	}
	return 0;
}

/* Starts the worker links, announcing every adapter. */
static loom_err link_create(const gw_models *m, const char *const *urls, size_t n_urls,
			    gw_link **out)
{
	size_t n = gw_models_adapter_count(m);
	gw_link_adapter *ads = loom_calloc(n ? n : 1, sizeof *ads);
	if (!ads)
		return loom_fail(LOOM_ENOMEM, "out of memory starting the worker links");
	for (size_t i = 0; i < n; i++) {
		const gw_adapter *a = gw_models_adapter_at(m, i);
		ads[i] = (gw_link_adapter){.name = a->name, .base_model = a->base->name,
					   .path = a->path};
	}
	loom_err rc = gw_link_create_with_adapters(urls, n_urls, ads, n, out);
	loom_free(ads);
	return rc;
}

int main(int argc, char **argv)
{
	opts o = {.host = "127.0.0.1", .port = 8080, .max_body = 1048576, .threads = 2};
	gw_models *models = NULL;
	gw_link *link = NULL;
	gw_server *srv = NULL;
	json_t *config = NULL;
	const char *urls[2 * MAX_ITEMS];
	size_t n_urls = 0;
	static adapter_spec specs[2 * MAX_ITEMS];
	size_t n_specs = 0;
	int status = 1;
	sigset_t sigs;

	loom_log_init("loom-gateway");
	int rc = parse_args(argc, argv, &o);
	if (rc)
		return rc;
	if (!o.config && (o.n_models == 0 || o.n_workers == 0))
		return usage_error("%s", "at least one --worker and one --model are required");

	/* signals are taken by sigwait below: block them before any thread starts */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (gw_models_create(&models)) {
		fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
		goto out;
	}
	if (o.config && load_config(o.config, models, &config, urls, &n_urls, specs, &n_specs))
		goto out;
	for (size_t i = 0; i < o.n_models; i++) {
		char *name = NULL, *dir = NULL;
		loom_err err = gw_models_split_arg(o.models[i], &name, &dir);
		if (!err)
			err = gw_models_add(models, name, dir, GW_TMPL_PLAIN);
		loom_free(name);
		loom_free(dir);
		if (err) {
			fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
			goto out;
		}
	}
	for (size_t i = 0; i < o.n_templates; i++) {
		const char *eq = strchr(o.templates[i], '=');
		char name[LOOM_NAME_MAX];
		gw_chat_tmpl t;
		snprintf(name, sizeof name, "%.*s", (int)(eq - o.templates[i]), o.templates[i]);
		if (gw_chat_tmpl_parse(eq + 1, &t) || gw_models_set_template(models, name, t)) {
			status = usage_error("%s", loom_errmsg());
			goto out;
		}
	}
	for (size_t i = 0; i < o.n_workers; i++)
		urls[n_urls++] = o.workers[i];
	if (gw_models_count(models) == 0 || n_urls == 0) {
		status = usage_error("%s", "at least one worker and one model are required");
		goto out;
	}
	for (size_t i = 0; i < o.n_adapters; i++) {
		adapter_spec *sp = &specs[n_specs++];
		if (gw_adapter_split_arg(o.adapters[i], &sp->name, &sp->dir, &sp->base)) {
			fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
			status = 2;
			goto out;
		}
	}
	if ((status = add_adapters(models, specs, n_specs)) != 0)
		goto out;
	status = 1;
	if (link_create(models, urls, n_urls, &link)) {
		fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
		goto out;
	}
	gw_server_opts so = {.host = o.host, .port = o.port, .max_body = o.max_body,
			     .threads = o.threads, .models = models, .link = link};
	if (gw_server_start(&so, &srv)) {
		fprintf(stderr, "loom-gateway: %s\n", loom_errmsg());
		goto out;
	}
	for (size_t i = 0; i < gw_models_count(models); i++) {
		const gw_model *m = gw_models_at(models, i);
		LOOM_INFO("model %s from %s (context %d, vocab %d, chat template %s)", m->name,
			  m->dir, m->cfg.max_ctx, m->cfg.vocab, gw_chat_tmpl_name(m->tmpl));
	}
	for (size_t i = 0; i < gw_models_adapter_count(models); i++) {
		const gw_adapter *a = gw_models_adapter_at(models, i);
		LOOM_INFO("adapter %s of %s from %s (r %d, max rank %d, alpha %g, %zu bytes)", a->name,
			  a->base->name, a->path, a->rank, a->max_rank, (double)a->alpha, a->bytes);
	}
	LOOM_INFO("gateway listening on http://%s:%d", o.host, gw_server_port(srv));

	int sig = 0;
	sigwait(&sigs, &sig);
	LOOM_INFO("signal %d: shutting down", sig);
	status = 0;
out:
	if (link)
		gw_link_close_all(link);
	gw_server_stop(srv);
	gw_link_destroy(link);
	gw_models_destroy(models);
	json_decref(config);
	specs_free(specs, n_specs);
	return status;
}
