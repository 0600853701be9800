/*
 * gateway/gw_admin_json.c — the admin API's JSON bodies and the /metrics
 * text, built from registry entries and worker snapshots (gw_link_workers).
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "gw_admin.h"

static char *dump(json_t *j)
{
	if (!j)
		return NULL;
	char *s = json_dumps(j, JSON_COMPACT);
	json_decref(j);
	if (!s)
		return NULL;
	char *out = loom_strdup(s);
	free(s);
	return out;
}

static const char *tier_name(int t)
{
	return t == LOOM_TIER_DEVICE ? "device" : t == LOOM_TIER_HOST ? "host" : "store";
}

/* [{worker, url, tier}] for entries of kind (0 adapter, 1 model) named name
 * (and version sha when not ""), host and device tiers only. */
static json_t *resident(int kind, const char *name, const char *sha, const gw_worker_info *w,
			size_t n_w)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < n_w; i++) {
		int best = LOOM_TIER_STORE;
		for (uint32_t k = 0; k < w[i].res.n; k++) {
			const loom_resident *it = &w[i].res.items[k];
			if (it->kind == kind && !strcmp(it->name, name) &&
			    (!sha || !*sha || !strcmp(it->sha, sha)) && it->tier > best)
				best = it->tier;
		}
		if (best == LOOM_TIER_STORE)
			continue;
		if (json_array_append_new(a, json_pack("{s:s, s:s, s:s}", "worker",
						       w[i].id[0] ? w[i].id : w[i].url, "url", w[i].url,
						       "tier", tier_name(best)))) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static json_t *targets(unsigned bits)
{
	json_t *t = json_array();
	for (int i = 0; t && i < AD_N_TARGETS; i++) {
		if ((bits & (1u << i)) && json_array_append_new(t, json_string(ad_target_name(i)))) {
			json_decref(t);
			return NULL;
		}
	}
	return t;
}

static json_t *adapter_obj(const gw_adapter *a, const gw_worker_info *w, size_t n_w)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:f, s:b, s:o, s:I, s:s?, s:i, s:I, s:s?, "
			 "s:o}",
			 "id", a->name, "object", "lora_adapter", "name", a->name, "base_model",
			 a->base->name, "rank", a->rank, "max_rank", a->max_rank, "alpha",
			 (double)a->alpha, "use_rslora", a->use_rslora, "targets",
			 targets(a->targets), "bytes", (json_int_t)a->bytes, "sha256",
			 a->sha[0] ? a->sha : NULL, "version", (int)a->version, "created",
			 (json_int_t)a->created, "root", a->path[0] ? a->path : NULL, "resident",
			 resident(0, a->name, a->sha, w, n_w));
}

static json_t *model_obj(const gw_model *m, size_t n_ads, const gw_worker_info *w, size_t n_w)
{
	return json_pack("{s:s, s:s, s:s?, s:I, s:i, s:I, s:i, s:i, s:s, s:I, s:o}", "id", m->name,
			 "object", "model", "sha256", m->sha[0] ? m->sha : NULL, "bytes",
			 (json_int_t)m->bytes, "version", (int)m->version, "created",
			 (json_int_t)m->created, "max_model_len", m->cfg.max_ctx, "vocab",
			 m->cfg.vocab, "chat_template", gw_chat_tmpl_name(m->tmpl), "adapters",
			 (json_int_t)n_ads, "resident", resident(1, m->name, NULL, w, n_w));
}

char *gw_admin_adapter_json(const gw_adapter *a, const gw_worker_info *w, size_t n_w)
{
	return dump(adapter_obj(a, w, n_w));
}

char *gw_admin_model_json(const gw_model *m, size_t n_adapters, const gw_worker_info *w,
			  size_t n_w)
{
	return dump(model_obj(m, n_adapters, w, n_w));
}

static char *list(json_t *data)
{
	return data ? dump(json_pack("{s:s, s:o}", "object", "list", "data", data)) : NULL;
}

char *gw_admin_adapters_json(gw_models *m, const gw_worker_info *w, size_t n_w)
{
	json_t *data = json_array();
	gw_models_rdlock(m);
	for (size_t i = 0; data && i < gw_models_adapter_count_locked(m); i++) {
		if (json_array_append_new(data, adapter_obj(gw_models_adapter_at_locked(m, i), w, n_w))) {
			json_decref(data);
			data = NULL;
		}
	}
	gw_models_unlock(m);
	return list(data);
}

char *gw_admin_models_json(gw_models *m, const gw_worker_info *w, size_t n_w)
{
	json_t *data = json_array();
	gw_models_rdlock(m);
	for (size_t i = 0; data && i < gw_models_count_locked(m); i++) {
		const gw_model *md = gw_models_at_locked(m, i);
		size_t n_ads = 0;
		for (size_t k = 0; k < gw_models_adapter_count_locked(m); k++)
			n_ads += gw_models_adapter_at_locked(m, k)->base == md;
		if (json_array_append_new(data, model_obj(md, n_ads, w, n_w))) {
			json_decref(data);
			data = NULL;
		}
	}
	gw_models_unlock(m);
	return list(data);
}

static json_t *residency_obj(const gw_worker_info *w)
{
	const loom_msg_residency *r = &w->res;
	if (!w->has_residency)
		return json_null();
	json_t *items = json_array();
	for (uint32_t i = 0; items && i < r->n; i++) {
		const loom_resident *it = &r->items[i];
		if (json_array_append_new(items, json_pack("{s:s, s:s, s:s, s:s, s:I}", "kind",
							   it->kind ? "model" : "adapter", "tier",
							   tier_name(it->tier), "name", it->name,
							   "sha256", it->sha, "bytes",
							   (json_int_t)it->bytes))) {
			json_decref(items);
			items = NULL;
		}
	}
	json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
			      "host_bytes", (json_int_t)r->host_bytes, "host_budget",
			      (json_int_t)r->host_budget, "device_bytes", (json_int_t)r->device_bytes,
			      "device_budget", (json_int_t)r->device_budget, "model_bytes",
			      (json_int_t)r->model_bytes, "model_budget", (json_int_t)r->model_budget,
			      "host_hits", (json_int_t)r->host_hits, "host_misses",
			      (json_int_t)r->host_misses, "device_hits", (json_int_t)r->device_hits,
			      "device_misses", (json_int_t)r->device_misses, "cold_loads",
			      (json_int_t)r->cold_loads, "cold_load_ms", r->cold_load_ms);
	if (o && items && !json_object_set_new(o, "items", items))
		return o;
	json_decref(o);
	json_decref(items);
	return NULL;
}

static json_t *worker_obj(const gw_worker_info *w)
{
	json_t *models = json_array();
	for (uint32_t i = 0; models && i < w->n_models; i++) {
		if (json_array_append_new(models, json_string(w->models[i]))) {
			json_decref(models);
			models = NULL;
		}
	}
	const loom_msg_stats *s = &w->stats;
	return json_pack("{s:s?, s:s, s:b, s:b, s:s?, s:o, s:i, s:i, s:i, s:I, s:i, s:i, s:f, s:I, "
			 "s:I, s:o}",
			 "id", w->id[0] ? w->id : NULL, "url", w->url, "connected", w->connected,
			 "live", w->live, "backend", w->backend[0] ? w->backend : NULL, "models",
			 models, "inflight", (int)w->inflight, "queued", (int)s->queued, "running",
			 (int)s->running, "queued_tokens", (json_int_t)s->queued_tokens, "kv_free",
			 (int)s->kv_free, "kv_total", (int)s->kv_total, "step_ms", (double)s->step_ms,
			 "steps", (json_int_t)s->steps, "tokens_out", (json_int_t)s->tokens_out,
			 "residency", residency_obj(w));
}

char *gw_admin_workers_json(const gw_worker_info *w, size_t n_w)
{
	json_t *data = json_array();
	for (size_t i = 0; data && i < n_w; i++) {
		if (json_array_append_new(data, worker_obj(&w[i]))) {
			json_decref(data);
			data = NULL;
		}
	}
	return list(data);
}

/* ---- /metrics ---- */

typedef struct text {
	char *p;
	size_t n, cap;
	bool oom;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...)
{
	if (t->oom)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int k = vsnprintf(t->p + t->n, t->cap - t->n, fmt, ap);
		va_end(ap);
		if (k < 0) {
			t->oom = true;
			return;
		}
		if ((size_t)k < t->cap - t->n) {
			t->n += (size_t)k;
			return;
		}
		size_t cap = (t->cap + (size_t)k + 1) * 2;
		char *p = loom_realloc(t->p, cap);
		if (!p) {
			t->oom = true;
			return;
		}
		t->p = p;
		t->cap = cap;
	}
}

/* A label value with \ " and newline escaped. */
static void label(const char *s, char *out, size_t n)
{
	size_t o = 0;
	for (; *s && o + 3 < n; s++) {
		if (*s == '\\' || *s == '"') {
			out[o++] = '\\';
			out[o++] = *s;
		} else if (*s == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else {
			out[o++] = *s;
		}
	}
	out[o] = '\0';
}

static void family(text *t, const char *name, const char *type, const char *help)
{
	put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0.0;
}

/* The prefix cache's figures per worker and per (worker, model). */
static void prefix_metrics(text *t, const gw_worker_info *w, size_t n_w, char (*lab)[700])
{
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "loom_worker_prefix_prompt_tokens_total", "counter",
		  "Context tokens of sequences at admission (STATS)." },
		{ "loom_worker_prefix_cached_tokens_total", "counter",
		  "Of those, tokens whose KV came from the prefix cache (STATS)." },
		{ "loom_worker_prefix_hit_ratio", "gauge",
		  "Prefix cache hit rate: cached tokens / context tokens at admission." },
		{ "loom_worker_prefix_cached_blocks", "gauge",
		  "KV blocks registered in the prefix cache (held or cached)." },
	};
	for (int f = 0; f < 4; f++) {
		family(t, fam[f].name, fam[f].type, fam[f].help);
		for (size_t i = 0; i < n_w; i++) {
			const loom_msg_stats *s = &w[i].stats;
			if (!w[i].has_stats)
				continue;
			uint64_t v[4] = { s->prompt_tokens, s->cached_tokens, 0, s->cached_blocks };
			if (f == 2)
				put(t, "%s{%s} %.6f\n", fam[f].name, lab[i],
				    ratio(s->cached_tokens, s->prompt_tokens));
			else
				put(t, "%s{%s} %llu\n", fam[f].name, lab[i], (unsigned long long)v[f]);
			for (uint32_t k = 0; k < s->n_models; k++) {
				const loom_prefix_model *pm = &s->models[k];
				uint64_t u[4] = { pm->prompt_tokens, pm->cached_tokens, 0,
						  pm->cached_blocks };
				char model[2 * LOOM_NAME_MAX];
				label(pm->name, model, sizeof model);
				if (f == 2)
					put(t, "%s{%s,model=\"%s\"} %.6f\n", fam[f].name, lab[i], model,
					    ratio(pm->cached_tokens, pm->prompt_tokens));
				else
					put(t, "%s{%s,model=\"%s\"} %llu\n", fam[f].name, lab[i], model,
					    (unsigned long long)u[f]);
			}
		}
	}
}

char *gw_admin_metrics_text(const gw_worker_info *w, size_t n_w, size_t inflight,
			    size_t n_models, size_t n_adapters)
{
	text t = {0};
	char (*lab)[700] = loom_calloc(n_w ? n_w : 1, sizeof *lab);
	if (!lab)
		return NULL;
	for (size_t i = 0; i < n_w; i++) {
		char id[300], url[600];
		label(w[i].id[0] ? w[i].id : w[i].url, id, sizeof id);
		label(w[i].url, url, sizeof url);
		snprintf(lab[i], sizeof lab[i], "worker=\"%.290s\",url=\"%.390s\"", id, url);
	}
	family(&t, "loom_requests_in_flight", "gauge",
	       "Generation requests routed to a worker and not finished.");
	put(&t, "loom_requests_in_flight %zu\n", inflight);
	family(&t, "loom_models_registered", "gauge", "Base models in the registry.");
	put(&t, "loom_models_registered %zu\n", n_models);
	family(&t, "loom_adapters_registered", "gauge", "LoRA adapters in the registry.");
	put(&t, "loom_adapters_registered %zu\n", n_adapters);
	family(&t, "loom_worker_up", "gauge", "1 when the worker answers its heartbeat.");
	for (size_t i = 0; i < n_w; i++)
		put(&t, "loom_worker_up{%s} %d\n", lab[i], w[i].live ? 1 : 0);
	family(&t, "loom_worker_requests_in_flight", "gauge", "Requests routed to the worker.");
	for (size_t i = 0; i < n_w; i++)
		put(&t, "loom_worker_requests_in_flight{%s} %u\n", lab[i], w[i].inflight);
	family(&t, "loom_worker_queued", "gauge", "Sequences waiting on the worker (STATS).");
	for (size_t i = 0; i < n_w; i++)
		if (w[i].has_stats)
			put(&t, "loom_worker_queued{%s} %u\n", lab[i], w[i].stats.queued);
	family(&t, "loom_worker_running", "gauge", "Sequences in the worker's batch (STATS).");
	for (size_t i = 0; i < n_w; i++)
		if (w[i].has_stats)
			put(&t, "loom_worker_running{%s} %u\n", lab[i], w[i].stats.running);
	family(&t, "loom_worker_tokens_generated_total", "counter", "Tokens the worker generated.");
	for (size_t i = 0; i < n_w; i++)
		if (w[i].has_stats)
			put(&t, "loom_worker_tokens_generated_total{%s} %llu\n", lab[i],
			    (unsigned long long)w[i].stats.tokens_out);
	family(&t, "loom_worker_cold_loads_total", "counter",
	       "Adapter and model loads from the store tier.");
	for (size_t i = 0; i < n_w; i++)
		if (w[i].has_residency)
			put(&t, "loom_worker_cold_loads_total{%s} %llu\n", lab[i],
			    (unsigned long long)w[i].res.cold_loads);
	family(&t, "loom_worker_cold_load_ms_total", "counter", "Total time of the cold loads, ms.");
	for (size_t i = 0; i < n_w; i++)
		if (w[i].has_residency)
			put(&t, "loom_worker_cold_load_ms_total{%s} %.3f\n", lab[i],
			    w[i].res.cold_load_ms);
	family(&t, "loom_worker_cache_hits_total", "counter", "Residency lookups found in a tier.");
	for (size_t i = 0; i < n_w; i++) {
		if (!w[i].has_residency)
			continue;
		put(&t, "loom_worker_cache_hits_total{%s,tier=\"host\"} %llu\n", lab[i],
		    (unsigned long long)w[i].res.host_hits);
		put(&t, "loom_worker_cache_hits_total{%s,tier=\"device\"} %llu\n", lab[i],
		    (unsigned long long)w[i].res.device_hits);
	}
	family(&t, "loom_worker_cache_misses_total", "counter", "Residency lookups not in a tier.");
	for (size_t i = 0; i < n_w; i++) {
		if (!w[i].has_residency)
			continue;
		put(&t, "loom_worker_cache_misses_total{%s,tier=\"host\"} %llu\n", lab[i],
		    (unsigned long long)w[i].res.host_misses);
		put(&t, "loom_worker_cache_misses_total{%s,tier=\"device\"} %llu\n", lab[i],
		    (unsigned long long)w[i].res.device_misses);
	}
	family(&t, "loom_worker_resident_bytes", "gauge",
	       "Bytes resident per tier (host: adapter cache; device: adapter pool; model: base "
	       "models on the device).");
	for (size_t i = 0; i < n_w; i++) {
		if (!w[i].has_residency)
			continue;
		const loom_msg_residency *r = &w[i].res;
		put(&t, "loom_worker_resident_bytes{%s,tier=\"host\"} %llu\n", lab[i],
		    (unsigned long long)r->host_bytes);
		put(&t, "loom_worker_resident_bytes{%s,tier=\"device\"} %llu\n", lab[i],
		    (unsigned long long)r->device_bytes);
		put(&t, "loom_worker_resident_bytes{%s,tier=\"model\"} %llu\n", lab[i],
		    (unsigned long long)r->model_bytes);
	}
	family(&t, "loom_worker_budget_bytes", "gauge", "Byte budget per tier.");
	for (size_t i = 0; i < n_w; i++) {
		if (!w[i].has_residency)
			continue;
		const loom_msg_residency *r = &w[i].res;
		put(&t, "loom_worker_budget_bytes{%s,tier=\"host\"} %llu\n", lab[i],
		    (unsigned long long)r->host_budget);
		put(&t, "loom_worker_budget_bytes{%s,tier=\"device\"} %llu\n", lab[i],
		    (unsigned long long)r->device_budget);
		put(&t, "loom_worker_budget_bytes{%s,tier=\"model\"} %llu\n", lab[i],
		    (unsigned long long)r->model_budget);
	}
	family(&t, "loom_worker_resident_items", "gauge",
	       "Adapters / models resident on the worker, per tier (RESIDENCY).");
	for (size_t i = 0; i < n_w; i++) {
		if (!w[i].has_residency)
			continue;
		unsigned cnt[2][3] = {{0}};
		for (uint32_t k = 0; k < w[i].res.n; k++)
			if (w[i].res.items[k].kind < 2 && w[i].res.items[k].tier < 3)
				cnt[w[i].res.items[k].kind][w[i].res.items[k].tier]++;
		for (int kind = 0; kind < 2; kind++)
			for (int tier = LOOM_TIER_HOST; tier <= LOOM_TIER_DEVICE; tier++)
				put(&t, "loom_worker_resident_items{%s,kind=\"%s\",tier=\"%s\"} %u\n",
				    lab[i], kind ? "model" : "adapter",
				    tier == LOOM_TIER_HOST ? "host" : "device", cnt[kind][tier]);
	}
	family(&t, "loom_worker_queued_tokens", "gauge",
	       "Prompt tokens waiting to be prefilled on the worker (STATS).");
	for (size_t i = 0; i < n_w; i++)
		if (w[i].has_stats)
			put(&t, "loom_worker_queued_tokens{%s} %llu\n", lab[i],
			    (unsigned long long)w[i].stats.queued_tokens);
	family(&t, "loom_worker_kv_free_tokens", "gauge", "Free KV cache positions (STATS).");
	for (size_t i = 0; i < n_w; i++)
		if (w[i].has_stats)
			put(&t, "loom_worker_kv_free_tokens{%s} %u\n", lab[i], w[i].stats.kv_free);
	prefix_metrics(&t, w, n_w, lab);
	family(&t, "loom_worker_step_seconds", "gauge", "Mean recent iteration time (STATS).");
	for (size_t i = 0; i < n_w; i++)
		if (w[i].has_stats)
			put(&t, "loom_worker_step_seconds{%s} %.6f\n", lab[i], w[i].stats.step_ms / 1000.0);
	family(&t, "loom_worker_step_model_seconds", "gauge",
	       "The router's fit of iteration time = fixed + per_token * tokens.");
	for (size_t i = 0; i < n_w; i++) {
		if (!w[i].step_samples)
			continue;
		put(&t, "loom_worker_step_model_seconds{%s,term=\"fixed\"} %.6f\n", lab[i],
		    w[i].step_a_ms / 1000.0);
		put(&t, "loom_worker_step_model_seconds{%s,term=\"per_token\"} %.9f\n", lab[i],
		    w[i].step_b_ms / 1000.0);
	}
	family(&t, "loom_worker_predicted_ttft_seconds", "gauge",
	       "The router's predicted time to first token of a 1-token request sent now.");
	for (size_t i = 0; i < n_w; i++)
		if (w[i].live)
			put(&t, "loom_worker_predicted_ttft_seconds{%s} %.6f\n", lab[i],
			    w[i].predicted_ttft_ms / 1000.0);
	family(&t, "loom_worker_slots", "gauge",
	       "Sequences the worker runs at once, as the router learned it (most running while "
	       "others waited).");
	for (size_t i = 0; i < n_w; i++)
		if (w[i].slots)
			put(&t, "loom_worker_slots{%s} %u\n", lab[i], w[i].slots);
	family(&t, "loom_worker_request_seconds", "gauge",
	       "Mean time a request spends on the worker, send to end (the router's measure).");
	for (size_t i = 0; i < n_w; i++)
		if (w[i].request_ms > 0)
			put(&t, "loom_worker_request_seconds{%s} %.6f\n", lab[i], w[i].request_ms / 1000.0);
	family(&t, "loom_worker_batch_in_flight", "gauge",
	       "Requests of classes without a TTFT target (batch) routed to the worker.");
	for (size_t i = 0; i < n_w; i++)
		put(&t, "loom_worker_batch_in_flight{%s} %u\n", lab[i], w[i].batch_inflight);
	loom_free(lab);
	if (t.oom || !t.p) {
		loom_free(t.p);
		return NULL;
	}
	return t.p;
}

char *gw_admin_gateway_metrics_text(const gw_link_counters *c, long tracked, long long rss,
				    long long heap)
{
	text t = {0};
	family(&t, "loom_gateway_batch_queue_length", "gauge",
	       "Requests waiting in the gateway's batch queue for a worker with room.");
	put(&t, "loom_gateway_batch_queue_length %zu\n", c->queued);
	family(&t, "loom_gateway_batch_queue_capacity", "gauge", "--batch-queue.");
	put(&t, "loom_gateway_batch_queue_capacity %zu\n", c->queue_cap);
	family(&t, "loom_gateway_slo_routing", "gauge", "1 with SLO routing, 0 with --no-slo.");
	put(&t, "loom_gateway_slo_routing %d\n", c->no_slo ? 0 : 1);
	family(&t, "loom_gateway_requests_resumed_total", "counter",
	       "Requests resumed on another worker after their worker was lost.");
	put(&t, "loom_gateway_requests_resumed_total %llu\n", (unsigned long long)c->resumed);
	family(&t, "loom_gateway_requests_lost_total", "counter",
	       "Requests failed because their worker was lost and no other could take them.");
	put(&t, "loom_gateway_requests_lost_total %llu\n", (unsigned long long)c->lost);
	family(&t, "loom_gateway_link_entries", "gauge",
	       "Requests the worker links hold (in flight, queued, being moved).");
	put(&t, "loom_gateway_link_entries %zu\n", c->entries);
	family(&t, "loom_gateway_requests_tracked", "gauge",
	       "Generation requests alive in the gateway (every per-request structure).");
	put(&t, "loom_gateway_requests_tracked %ld\n", tracked);
	if (heap >= 0) {
		family(&t, "loom_gateway_heap_bytes", "gauge", "Heap bytes in use (malloc).");
		put(&t, "loom_gateway_heap_bytes %lld\n", heap);
	}
	if (rss >= 0) {
		family(&t, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
		put(&t, "process_resident_memory_bytes %lld\n", rss);
	}
	if (t.oom || !t.p) {
		loom_free(t.p);
		return NULL;
	}
	return t.p;
}
