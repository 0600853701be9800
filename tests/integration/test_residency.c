/*
 * tests/integration/test_residency.c — residency and model swapping with
 * real processes:
 *  - 1,000 rank-8 adapters for stories260k, written straight into a store
 *    with st_ calls (one loom-mkmodel PEFT adapter, its blob copied with a
 *    few floats changed per copy), served by a gateway (--store) and one
 *    worker (--store, read-only) whose host cache holds about a tenth of
 *    them and whose device pool less: a few hundred Zipf-popular requests
 *    from concurrent clients all get the text a fresh worker with big
 *    budgets gives for the same adapter alone, and the resident bytes the
 *    worker reports (/admin/workers) never exceed the budgets;
 *  - stories260k and babyllama105 on one worker whose --device-model-mb
 *    holds only one: alternating requests get what each model gives with
 *    both resident;
 *  - a worker with its own empty store (--own-store) serves an adapter
 *    registered at run time through the admin API after fetching its blob
 *    from the gateway (FETCH/BLOB over nng), and keeps it;
 *  - the same worker talked to directly over nng: a BLOB whose bytes do not
 *    hash to the announced sha is refused (the request gets an ERROR), a
 *    missing blob too, and a correct one sent in two chunks serves the
 *    tokens of the adapter handed to an in-process engine.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "common/bundle.h"
#include "common/proto.h"
#include "common/sha256.h"
#include "store/store.h"
#include "tests/support/harness.h"
#include "worker/engine.h"
#include "worker/model.h"

#define N_AD 1000
#define N_REQ 300
#define N_CLIENTS 6

static char *tmp;
static char stories[600], baby[600], ad_dir[700];
static wk_model *model;
static size_t blob_len;

/* ---------------------------------------------------------------- */
/* helpers                                                           */
/* ---------------------------------------------------------------- */

static uint64_t rd_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Copy k: a few floats of layer 0's first A block scaled by a factor only
 * k uses (still a valid adapter, a distinct blob). */
static void perturb(uint8_t *blob, int k)
{
	uint64_t a_off = rd_u64(blob + 128 + 8);
	for (int j = 0; j < 8; j++) {
		float f;
		memcpy(&f, blob + a_off + 4 * (uint64_t)j, 4);
		f *= 1.0f + 0.01f * (float)(k + 1) * (float)(j + 1);
		memcpy(blob + a_off + 4 * (uint64_t)j, &f, 4);
	}
}

/* The base adapter's blob, perturbed as copy k (k < 0: unchanged). */
static void *adapter_blob(int k, size_t *len)
{
	ad_adapter *a;
	void *b;
	assert_int_equal(ad_adapter_load(ad_dir, "x", &model->cfg, &a), LOOM_OK);
	assert_int_equal(ad_adapter_serialize(a, &b, len), LOOM_OK);
	ad_adapter_destroy(a);
	if (k >= 0)
		perturb(b, k);
	return b;
}

static int setup(void **state)
{
	(void)state;
	tmp = lt_tmpdir("residency-it");
	if (!realpath(lt_shared_path("models/stories260k"), stories) ||
	    !realpath(lt_shared_path("models/babyllama105"), baby))
		return -1;
	snprintf(ad_dir, sizeof ad_dir, "%s/adapters/base", tmp);
	if (lt_sh("mkdir -p %s/adapters && '%s' adapter --model '%s' --out '%s' --rank 8 "
		  "--alpha 16 --targets q_proj,v_proj --seed 21 >&2", tmp,
		  lt_bin_path("loom-mkmodel"), stories, ad_dir))
		return -1;
	if (wk_model_load(stories, "stories260k", &model))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	wk_model_destroy(model);
	loom_free(tmp);
	return 0;
}

/* POST /v1/completions; the choice's text into text (n bytes). Returns the
 * HTTP status (0 on a transport failure). */
static long complete(const char *base_url, const char *model_name, int max_tokens, char *text,
		     size_t n)
{
	char url[256], body[512];
	lt_resp r;
	long st;

	snprintf(url, sizeof url, "%s/v1/completions", base_url);
	snprintf(body, sizeof body,
		 "{\"model\":\"%s\",\"prompt\":\"Once upon a time\",\"max_tokens\":%d,"
		 "\"temperature\":0,\"ignore_eos\":true}", model_name, max_tokens);
	text[0] = 0;
	if (lt_http("POST", url, body, NULL, 60000, &r) != 0)
		return 0;
	st = r.status;
	json_t *j = json_loads(r.body, 0, NULL);
	const char *t = j ? json_string_value(json_object_get(
				    json_array_get(json_object_get(j, "choices"), 0), "text"))
			  : NULL;
	snprintf(text, n, "%s", t ? t : r.body);
	json_decref(j);
	lt_resp_free(&r);
	return st;
}

typedef struct res_fig {
	long long host, host_budget, dev, dev_budget, model, model_budget;
	long long host_hits, host_misses, dev_hits, dev_misses, cold_loads;
	int n_model_items_host, n_model_items_dev;
	bool ok;
} res_fig;

/* The first worker's residency as the gateway reports it. */
static res_fig residency(const char *base_url)
{
	res_fig f = { 0 };
	char url[256];
	lt_resp r;

	snprintf(url, sizeof url, "%s/admin/workers", base_url);
	if (lt_http("GET", url, NULL, NULL, 5000, &r) != 0 || r.status != 200)
		return f;
	json_t *j = json_loads(r.body, 0, NULL);
	json_t *w = json_array_get(json_object_get(j, "data"), 0);
	json_t *o = json_object_get(w, "residency");
	if (json_is_object(o)) {
#define GET(field, key) f.field = json_integer_value(json_object_get(o, key))
		GET(host, "host_bytes");
		GET(host_budget, "host_budget");
		GET(dev, "device_bytes");
		GET(dev_budget, "device_budget");
		GET(model, "model_bytes");
		GET(model_budget, "model_budget");
		GET(host_hits, "host_hits");
		GET(host_misses, "host_misses");
		GET(dev_hits, "device_hits");
		GET(dev_misses, "device_misses");
		GET(cold_loads, "cold_loads");
#undef GET
		size_t i;
		json_t *it;
		json_array_foreach(json_object_get(o, "items"), i, it) {
			if (strcmp(json_string_value(json_object_get(it, "kind")), "model"))
				continue;
			if (!strcmp(json_string_value(json_object_get(it, "tier")), "host"))
				f.n_model_items_host++;
			else
				f.n_model_items_dev++;
		}
		f.ok = true;
	}
	json_decref(j);
	lt_resp_free(&r);
	return f;
}

static void check_fig(const res_fig *f)
{
	if (!f->ok)
		return;
	if (f->host > f->host_budget || (f->dev_budget && f->dev > f->dev_budget) ||
	    (f->model_budget && f->model > f->model_budget))
		fail_msg("over budget: host %lld/%lld device %lld/%lld models %lld/%lld", f->host,
			 f->host_budget, f->dev, f->dev_budget, f->model, f->model_budget);
}

/* Zipf (s = 1) over n ranks, deterministic. */
static int zipf(uint64_t *seed, int n)
{
	static double h;
	static int hn;
	if (hn != n) {
		h = 0;
		for (int k = 1; k <= n; k++)
			h += 1.0 / k;
		hn = n;
	}
	*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
	double u = (double)(*seed >> 11) / 9007199254740992.0 * h;
	for (int k = 1; k <= n; k++) {
		u -= 1.0 / k;
		if (u <= 0)
			return k - 1;
	}
	return n - 1;
}

/* ---------------------------------------------------------------- */
/* 1,000 adapters                                                    */
/* ---------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void write_store(const char *dir)
{
	st_store *s;
	size_t len;
	uint8_t *base = adapter_blob(-1, &len), *b = malloc(len);
	double t0 = now_s();

	blob_len = len;
	assert_int_equal(st_open(dir, 0, &s), LOOM_OK);
	/* the base model's record first (bundle + tokenizer blobs), as the
	 * gateway writes it */
	{
		st_model_rec m = { .name = "stories260k" };
		void *bundle, *tok;
		size_t blen, tlen;
		char tpath[700];
		FILE *tf;
		assert_int_equal(loom_bundle_from_dir(stories, &bundle, &blen), LOOM_OK);
		assert_int_equal(st_blob_put(s, bundle, blen, m.sha), LOOM_OK);
		snprintf(tpath, sizeof tpath, "%s/tokenizer.json", stories);
		assert_non_null(tf = fopen(tpath, "rb"));
		fseek(tf, 0, SEEK_END);
		tlen = (size_t)ftell(tf);
		fseek(tf, 0, SEEK_SET);
		tok = loom_malloc(tlen);
		assert_int_equal(fread(tok, 1, tlen, tf), tlen);
		fclose(tf);
		assert_int_equal(st_blob_put(s, tok, tlen, m.tokenizer_sha), LOOM_OK);
		m.bytes = blen;
		assert_int_equal(st_model_put(s, &m, 0), LOOM_OK);
		loom_free(bundle);
		loom_free(tok);
	}
	for (int k = 0; k < N_AD; k++) {
		st_adapter_rec rec = { .rank = 8, .max_rank = 8, .alpha = 16.0f,
				       .targets = (1u << AD_Q) | (1u << AD_V), .bytes = len };
		memcpy(b, base, len);
		perturb(b, k);
		snprintf(rec.name, sizeof rec.name, "a%03d", k);
		snprintf(rec.base_model, sizeof rec.base_model, "stories260k");
		assert_int_equal(st_blob_put(s, b, len, rec.sha), LOOM_OK);
		if (st_adapter_put(s, &rec, 0))
			fail_msg("st_adapter_put %s: %s", rec.name, loom_errmsg());
	}
	st_close(s);
	fprintf(stderr, "store: %d adapters of %zu bytes written in %.1f s\n", N_AD, len,
		now_s() - t0);
	free(b);
	loom_free(base);
}

static void thousand_adapters(void **state)
{
	(void)state;
	char sdir[700], marg[700], h_mb[16], d_mb[16], url[80];
	static char texts[N_REQ][256];
	int which[N_REQ];
	uint64_t seed = 7;
	lt_stack s;

	snprintf(sdir, sizeof sdir, "%s/store", tmp);
	write_store(sdir);
	/* host cache ~ a tenth of the adapters' bytes, device pool a third of that */
	snprintf(h_mb, sizeof h_mb, "%zu", (N_AD / 10 * blob_len + (1 << 19)) >> 20);
	snprintf(d_mb, sizeof d_mb, "%zu", ((N_AD / 30 * blob_len) >> 20) + 1);
	fprintf(stderr, "budgets: host %s MiB, device %s MiB (%zu-byte adapters)\n", h_mb, d_mb,
		blob_len);
	snprintf(marg, sizeof marg, "stories260k=%s", stories);
	const char *models[] = { marg, NULL };
	const char *gw[] = { "--store", sdir, NULL };
	const char *wk[] = { "--store", sdir, "--host-cache-mb", h_mb, "--device-adapter-mb", d_mb,
			     "--max-seqs", "16", NULL };
	assert_int_equal(lt_stack_start2(&s, models, 1, gw, wk), 0);
	snprintf(url, sizeof url, "%s", s.url);

	for (int i = 0; i < N_REQ; i++)
		which[i] = zipf(&seed, N_AD);
	/* clients: each takes every N_CLIENTS-th request, writes "i\ttext" lines */
	pid_t kids[N_CLIENTS];
	for (int c = 0; c < N_CLIENTS; c++) {
		if ((kids[c] = fork()) == 0) {
			char path[800], name[16], text[256];
			snprintf(path, sizeof path, "%s/out-%d.txt", s.dir, c);
			FILE *f = fopen(path, "w");
			for (int i = c; f && i < N_REQ; i += N_CLIENTS) {
				snprintf(name, sizeof name, "a%03d", which[i]);
				long st = complete(url, name, 6, text, sizeof text);
				for (char *p = text; *p; p++)
					if (*p == '\n' || *p == '\t')
						*p = ' ';
				fprintf(f, "%d\t%ld\t%s\n", i, st, text);
				fflush(f);
			}
			_exit(f ? 0 : 1);
		}
	}
	/* meanwhile: the budgets, as reported */
	int running = N_CLIENTS, polls = 0;
	res_fig f = { 0 };
	while (running > 0) {
		f = residency(url);
		check_fig(&f);
		polls += f.ok;
		usleep(20000);
		for (int c = 0; c < N_CLIENTS; c++) {
			int ws;
			if (kids[c] > 0 && waitpid(kids[c], &ws, WNOHANG) == kids[c]) {
				assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
				kids[c] = 0;
				running--;
			}
		}
	}
	usleep(300000); /* one more RESIDENCY after the last request */
	f = residency(url);
	check_fig(&f);
	assert_true(f.ok);
	fprintf(stderr, "residency: %d polls; host %lld/%lld B, device %lld/%lld B; device hits "
		"%lld misses %lld, host hits %lld misses %lld, cold loads %lld\n", polls, f.host,
		f.host_budget, f.dev, f.dev_budget, f.dev_hits, f.dev_misses, f.host_hits,
		f.host_misses, f.cold_loads);
	assert_true(f.dev_hits > 0 && f.dev_misses > 0 && f.cold_loads > 0);
	assert_int_equal(f.dev_hits + f.dev_misses, N_REQ);
	assert_true(f.host_budget > 0 && f.dev_budget > 0);
	char sdir_run[600];
	snprintf(sdir_run, sizeof sdir_run, "%s", s.dir);
	lt_stack_stop(&s);

	/* read the answers */
	memset(texts, 0, sizeof texts);
	for (int c = 0; c < N_CLIENTS; c++) {
		char path[800], line[512];
		snprintf(path, sizeof path, "%s/out-%d.txt", sdir_run, c);
		FILE *fp = fopen(path, "r");
		assert_non_null(fp);
		while (fgets(line, sizeof line, fp)) {
			int i;
			long st;
			char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
			assert_non_null(t2);
			i = atoi(line);
			st = atol(t1 + 1);
			line[strcspn(line, "\n")] = 0;
			if (st != 200)
				fail_msg("request %d (a%03d): status %ld: %s", i, which[i], st, t2 + 1);
			snprintf(texts[i], sizeof texts[i], "%s", t2 + 1);
		}
		fclose(fp);
	}
	for (int i = 0; i < N_REQ; i++)
		assert_true(texts[i][0] != 0);

	/* the oracle: a fresh worker with big budgets, each adapter alone */
	const char *wk_big[] = { "--store", sdir, "--host-cache-mb", "512", "--device-adapter-mb",
				 "512", NULL };
	assert_int_equal(lt_stack_start2(&s, models, 1, gw, wk_big), 0);
	int checked = 0, distinct = 0;
	static bool seen[N_AD];
	for (int i = 0; i < N_REQ; i++) {
		if (seen[which[i]])
			continue;
		seen[which[i]] = true;
		distinct++;
		if (distinct > 40 && i % 3) /* all popular ones, a third of the rest */
			continue;
		char name[16], text[256];
		snprintf(name, sizeof name, "a%03d", which[i]);
		assert_int_equal(complete(s.url, name, 6, text, sizeof text), 200);
		for (char *p = text; *p; p++)
			if (*p == '\n' || *p == '\t')
				*p = ' ';
		for (int k = 0; k < N_REQ; k++)
			if (which[k] == which[i] && strcmp(texts[k], text))
				fail_msg("%s: \"%s\" under small budgets, \"%s\" alone", name, texts[k],
					 text);
		checked++;
	}
	fprintf(stderr, "%d requests over %d distinct adapters; %d adapters checked alone\n", N_REQ,
		distinct, checked);
	/* the perturbations matter: not every adapter says the same */
	int differ = 0;
	for (int i = 1; i < N_REQ; i++)
		differ += strcmp(texts[i], texts[0]) != 0;
	assert_true(differ > 0);
	lt_stack_stop(&s);
}

/* ---------------------------------------------------------------- */
/* two base models, room for one                                     */
/* ---------------------------------------------------------------- */

static void two_models(void **state)
{
	(void)state;
	char m1[700], m2[700], sdir[700], sdir2[700];
	char want[2][256], got[256];
	lt_stack s;
	res_fig f;

	snprintf(m1, sizeof m1, "stories260k=%s", stories);
	snprintf(m2, sizeof m2, "babyllama105=%s", baby);
	snprintf(sdir, sizeof sdir, "%s/store2", tmp);
	snprintf(sdir2, sizeof sdir2, "%s/store3", tmp);
	const char *models[] = { m1, m2, NULL };
	const char *names[] = { "stories260k", "babyllama105" };
	const char *gw[] = { "--store", sdir, NULL };

	/* reference: both resident */
	assert_int_equal(lt_stack_start2(&s, models, 1, gw, NULL), 0);
	for (int m = 0; m < 2; m++)
		assert_int_equal(complete(s.url, names[m], 12, want[m], sizeof want[m]), 200);
	lt_stack_stop(&s);
	assert_true(strcmp(want[0], want[1]) != 0);

	/* 4 MiB holds babyllama105 (a CPU worker holds its packed weights and
	 * float32 embedding and norms: 3.6 MiB as the budget counts them) or
	 * stories260k (1.1 MiB), not both */
	const char *gw2[] = { "--store", sdir2, NULL };
	const char *wk[] = { "--device-model-mb", "4", "--host-cache-mb", "64", NULL };
	assert_int_equal(lt_stack_start2(&s, models, 1, gw2, wk), 0);
	for (int i = 0; i < 12; i++) {
		int m = i % 2;
		long st = complete(s.url, names[m], 12, got, sizeof got);
		if (st != 200 || strcmp(got, want[m])) {
			lt_proc_dump(&s.wk[0]);
			fail_msg("request %d for %s: %ld \"%s\", want \"%s\"", i, names[m], st, got,
				 want[m]);
		}
		f = residency(s.url);
		check_fig(&f);
	}
	/* concurrent, interleaved */
	pid_t kids[6];
	for (int c = 0; c < 6; c++) {
		if ((kids[c] = fork()) == 0) {
			char t[256];
			int m = c % 2, bad = 0;
			for (int k = 0; k < 3; k++)
				bad += complete(s.url, names[m], 12, t, sizeof t) != 200 ||
				       strcmp(t, want[m]) != 0;
			_exit(bad);
		}
	}
	for (int c = 0; c < 6; c++) {
		int ws;
		assert_int_equal(waitpid(kids[c], &ws, 0), kids[c]);
		assert_true(WIFEXITED(ws));
		assert_int_equal(WEXITSTATUS(ws), 0);
	}
	usleep(300000);
	f = residency(s.url);
	check_fig(&f);
	assert_true(f.ok);
	assert_int_equal(f.model_budget, 4 << 20);
	assert_true(f.model > 0);
	assert_int_equal(f.n_model_items_dev, 1);  /* one on the device, */
	assert_true(f.n_model_items_host >= 1);    /* the other one (at least) in RAM */
	/* the worker says it serves both */
	char url[256];
	lt_resp r;
	snprintf(url, sizeof url, "%s/admin/workers", s.url);
	assert_int_equal(lt_http("GET", url, NULL, NULL, 5000, &r), 0);
	assert_non_null(strstr(r.body, "\"babyllama105\""));
	assert_non_null(strstr(r.body, "\"stories260k\""));
	lt_resp_free(&r);
	char logp[700];
	snprintf(logp, sizeof logp, "%s/worker0.log", s.dir);
	lt_stack_stop(&s);
	assert_int_equal(lt_sh("grep -q 'swapped in from host RAM' '%s'", logp), 0);
}

/* ---------------------------------------------------------------- */
/* a worker with its own store                                       */
/* ---------------------------------------------------------------- */

static void own_store_fetch_via_gateway(void **state)
{
	(void)state;
	char m1[700], sdir[700], own[700], body[1200], url[256], adir[700], text[256],
		want[256];
	lt_stack s;
	lt_resp r;

	snprintf(m1, sizeof m1, "stories260k=%s", stories);
	snprintf(sdir, sizeof sdir, "%s/store4", tmp);
	snprintf(own, sizeof own, "%s/own", tmp);
	snprintf(adir, sizeof adir, "%s/adapters", tmp);
	const char *models[] = { m1, NULL };
	const char *gw[] = { "--store", sdir, "--adapter-dir", adir, NULL };
	const char *wk[] = { "--own-store", own, NULL };

	/* reference: the same folder served by a worker that reads the
	 * gateway's store */
	const char *wk_ref[] = { "--store", sdir, NULL };
	assert_int_equal(lt_stack_start2(&s, models, 1, gw, wk_ref), 0);
	snprintf(url, sizeof url, "%s/admin/adapters", s.url);
	snprintf(body, sizeof body,
		 "{\"name\":\"fresh\",\"base_model\":\"stories260k\",\"path\":\"%s\"}", ad_dir);
	assert_int_equal(lt_http("POST", url, body, NULL, 10000, &r), 0);
	if (r.status != 200 && r.status != 201)
		fail_msg("POST /admin/adapters: %ld %s", r.status, r.body);
	lt_resp_free(&r);
	assert_int_equal(complete(s.url, "fresh", 10, want, sizeof want), 200);
	lt_stack_stop(&s);

	/* the own-store worker: the adapter is registered after it connects */
	assert_int_equal(lt_stack_start2(&s, models, 1, gw, wk), 0);
	snprintf(url, sizeof url, "%s/admin/adapters?replace=true", s.url);
	snprintf(body, sizeof body,
		 "{\"name\":\"fresh\",\"base_model\":\"stories260k\",\"path\":\"%s\"}", ad_dir);
	assert_int_equal(lt_http("POST", url, body, NULL, 10000, &r), 0);
	lt_resp_free(&r);
	long st = complete(s.url, "fresh", 10, text, sizeof text);
	if (st != 200 || strcmp(text, want)) {
		lt_proc_dump(&s.wk[0]);
		fail_msg("own store: %ld \"%s\", want \"%s\"", st, text, want);
	}
	/* its sha, as the registry has it */
	snprintf(url, sizeof url, "%s/admin/adapters/fresh", s.url);
	assert_int_equal(lt_http("GET", url, NULL, NULL, 5000, &r), 0);
	json_t *j = json_loads(r.body, 0, NULL);
	const char *hex = json_string_value(json_object_get(j, "sha256"));
	assert_non_null(hex);
	uint8_t sha[32];
	assert_int_equal(loom_sha256_parse(hex, sha), 0);
	json_decref(j);
	lt_resp_free(&r);
	char logp[800];
	snprintf(logp, sizeof logp, "%s/worker0.log", s.dir);
	lt_stack_stop(&s);
	assert_int_equal(lt_sh("grep -q 'fetched from the gateway, verified, kept' '%s'", logp), 0);
	/* kept in the own store */
	st_store *o;
	assert_int_equal(st_open(own, ST_RDONLY, &o), LOOM_OK);
	assert_true(st_blob_has(o, sha));
	st_close(o);
}

/* ---------------------------------------------------------------- */
/* the same worker over nng: FETCH answered by hand                  */
/* ---------------------------------------------------------------- */

static nng_socket sock;

static void send_msg(const loom_msg *m)
{
	void *buf;
	size_t len;
	assert_int_equal(loom_msg_encode(m, &buf, &len), LOOM_OK);
	assert_int_equal(nng_send(sock, buf, len, 0), 0);
	loom_free(buf);
}

static void recv_msg(loom_msg *m)
{
	void *buf;
	size_t len;
	int rv = nng_recv(sock, &buf, &len, NNG_FLAG_ALLOC);
	if (rv)
		fail_msg("no message from the worker: %s", nng_strerror(rv));
	assert_int_equal(loom_msg_decode(buf, len, m), LOOM_OK);
	nng_free(buf, len);
}

static const int32_t prompt[] = { 1, 403, 407, 261, 378 };

static void submit(uint64_t req, const char *adapter)
{
	loom_msg m = { .type = LOOM_MSG_SUBMIT };
	m.u.submit.req = req;
	snprintf(m.u.submit.model, sizeof m.u.submit.model, "stories260k");
	snprintf(m.u.submit.adapter, sizeof m.u.submit.adapter, "%s", adapter);
	m.u.submit.n_prompt = 5;
	m.u.submit.prompt_ids = (int32_t *)prompt;
	m.u.submit.sampling = (loom_sampling){ .top_p = 1.0f, .seed = 1, .max_tokens = 8,
					       .ignore_eos = true };
	send_msg(&m);
}

/* Waits for the worker's FETCH of hex (other messages skipped). */
static uint64_t expect_fetch(const char *hex)
{
	for (;;) {
		loom_msg m;
		recv_msg(&m);
		if (m.type == LOOM_MSG_FETCH) {
			assert_string_equal(m.u.fetch.sha, hex);
			uint64_t off = m.u.fetch.offset;
			loom_msg_fini(&m);
			return off;
		}
		loom_msg_fini(&m);
	}
}

static void send_blob(const char *hex, uint64_t off, uint64_t total, const void *data,
		      uint32_t len)
{
	loom_msg m = { .type = LOOM_MSG_BLOB };
	snprintf(m.u.blob.sha, sizeof m.u.blob.sha, "%s", hex);
	m.u.blob.offset = off;
	m.u.blob.total = total;
	m.u.blob.len = len;
	m.u.blob.data = (uint8_t *)data;
	send_msg(&m);
}

/* Collects req's ids (or its error text) until it ends. */
static int collect(uint64_t req, int32_t *ids, char *err, size_t n)
{
	int k = 0;
	err[0] = 0;
	for (;;) {
		loom_msg m;
		recv_msg(&m);
		if (m.type == LOOM_MSG_ERROR && m.u.error.req == req) {
			snprintf(err, n, "%s", m.u.error.message);
			loom_msg_fini(&m);
			return -1;
		}
		if (m.type == LOOM_MSG_STEP) {
			bool done = false;
			for (uint32_t i = 0; i < m.u.step.n_items; i++) {
				const loom_step_item *it = &m.u.step.items[i];
				if (it->req != req)
					continue;
				for (uint32_t q = 0; q < it->n_ids && k < 64; q++)
					ids[k++] = it->ids[q];
				done |= it->finish != LOOM_FINISH_NONE;
			}
			loom_msg_fini(&m);
			if (done)
				return k;
			continue;
		}
		loom_msg_fini(&m);
	}
}

static void emit_collect(void *ctx, const loom_msg *m)
{
	int32_t *ids = ctx; /* ids[0] = count */
	if (m->type == LOOM_MSG_STEP)
		for (uint32_t i = 0; i < m->u.step.n_items; i++)
			for (uint32_t q = 0; q < m->u.step.items[i].n_ids && ids[0] < 63; q++)
				ids[1 + ids[0]++] = m->u.step.items[i].ids[q];
}

static void own_store_fetch_checked(void **state)
{
	(void)state;
	char own[700], wurl[300], log[800], mflag[700], hex[LOOM_SHA_HEX], err[512];
	int32_t ids[64], ref[64] = { 0 };
	uint8_t sha[32];
	size_t len;
	uint8_t *blob = adapter_blob(5, &len), *bad = malloc(len);
	lt_proc w;

	loom_sha256(blob, len, sha);
	loom_sha256_hex(sha, hex);
	/* the reference: the adapter handed to an in-process engine */
	{
		ad_adapter *a;
		wk_engine *e;
		wk_engine_opts eo = { .manual = true };
		assert_int_equal(ad_adapter_from_blob(blob, len, "r", &model->cfg, 1, &a), LOOM_OK);
		assert_int_equal(wk_engine_create(&model, 1, &eo, emit_collect, ref, &e), LOOM_OK);
		assert_int_equal(wk_engine_add_adapter(e, "stories260k", a), LOOM_OK);
		loom_msg_submit s = { .req = 1, .model = "stories260k", .adapter = "r",
				      .n_prompt = 5, .prompt_ids = (int32_t *)prompt };
		s.sampling = (loom_sampling){ .top_p = 1.0f, .seed = 1, .max_tokens = 8,
					      .ignore_eos = true };
		assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
		while (wk_engine_step(e) > 0) {
		}
		wk_engine_destroy(e);
		assert_int_equal(ref[0], 8);
	}

	snprintf(own, sizeof own, "%s/own2", tmp);
	snprintf(wurl, sizeof wurl, "ipc://%s/w.ipc", tmp);
	snprintf(log, sizeof log, "%s/own2-worker.log", tmp);
	snprintf(mflag, sizeof mflag, "stories260k=%s", stories);
	char *argv[] = { (char *)lt_bin_path("loom-worker"), "--listen", wurl, "--model", mflag,
			 "--own-store", own, NULL };
	assert_int_equal(lt_spawn(&w, log, argv), 0);
	assert_int_equal(nng_pair1_open(&sock), 0);
	assert_int_equal(nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, 20000), 0);
	assert_int_equal(nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, 5000), 0);
	int rv = -1;
	for (int i = 0; i < 500 && rv; i++)
		if ((rv = nng_dial(sock, wurl, NULL, 0)))
			usleep(20000);
	assert_int_equal(rv, 0);

	loom_msg am = { .type = LOOM_MSG_ADAPTER };
	snprintf(am.u.adapter.name, sizeof am.u.adapter.name, "f");
	snprintf(am.u.adapter.base_model, sizeof am.u.adapter.base_model, "stories260k");
	snprintf(am.u.adapter.sha, sizeof am.u.adapter.sha, "%s", hex);
	am.u.adapter.path = "";
	send_msg(&am);

	/* 1: bytes that do not hash to the sha */
	submit(1, "f");
	assert_int_equal(expect_fetch(hex), 0);
	memcpy(bad, blob, len);
	bad[len / 2] ^= 0x40;
	send_blob(hex, 0, len, bad, (uint32_t)len);
	assert_int_equal(collect(1, ids, err, sizeof err), -1);
	assert_non_null(strstr(err, "hashes to"));
	/* 2: the gateway does not have it */
	submit(2, "f");
	assert_int_equal(expect_fetch(hex), 0);
	send_blob(hex, 0, 0, NULL, 0);
	assert_int_equal(collect(2, ids, err, sizeof err), -1);
	assert_non_null(strstr(err, "does not have it"));
	/* 3: right, in two chunks */
	submit(3, "f");
	assert_int_equal(expect_fetch(hex), 0);
	send_blob(hex, 0, len, blob, (uint32_t)(len / 3));
	assert_int_equal(expect_fetch(hex), len / 3);
	send_blob(hex, len / 3, len, blob + len / 3, (uint32_t)(len - len / 3));
	int n = collect(3, ids, err, sizeof err);
	if (n < 0)
		fail_msg("request 3: %s", err);
	assert_int_equal(n, 8);
	assert_memory_equal(ids, ref + 1, 8 * sizeof(int32_t));
	/* 4: resident now, no FETCH */
	submit(4, "f");
	assert_int_equal(collect(4, ids, err, sizeof err), 8);
	assert_memory_equal(ids, ref + 1, 8 * sizeof(int32_t));
	nng_close(sock);
	assert_int_equal(lt_stop(&w, SIGTERM, 10000), 0);
	assert_int_equal(lt_sh("grep -q 'fetched from the gateway, verified, kept' '%s'", log), 0);
	st_store *o;
	assert_int_equal(st_open(own, ST_RDONLY, &o), LOOM_OK);
	assert_true(st_blob_has(o, sha));
	st_close(o);
	free(bad);
	loom_free(blob);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(thousand_adapters),
		cmocka_unit_test(two_models),
		cmocka_unit_test(own_store_fetch_via_gateway),
		/* last: it uses nng in this process, the others fork clients */
		cmocka_unit_test(own_store_fetch_checked),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
