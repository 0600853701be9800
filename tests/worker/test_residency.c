/*
 * tests/worker/test_residency.c — the worker's residency in-process, over a
 * real LMDB store holding adapter blobs for stories260k:
 *  - LRU order on the device and host tiers, budgets never exceeded
 *    (checked after every step and by a thread sampling all along);
 *  - pins prevent eviction: a load waits for room instead, then proceeds;
 *  - an adapter larger than the device pool is refused (ERANGE);
 *  - the CPU default (WK_AD_AUTO): BF16-valued adapters held as BF16 at
 *    half the blob, float32 ones as float32;
 *  - the CUDA backend's device tier (WK_AD_BF16): BF16 copies made by the
 *    loader, each value rounded from the blob, counted at half the blob;
 *  - prefetch at submit: the adapter reaches the device before the engine
 *    runs a single iteration;
 *  - counters add up (device hits + misses = acquires, host misses = cold
 *    loads, host hits + cold loads = loads);
 *  - an engine serving 24 adapters, Zipf-popular, through a pool of 4 and a
 *    host cache of 8 gives every request the tokens it gets alone with the
 *    adapter handed in directly;
 *  - path mode: a registered PEFT folder is served from its host copy and
 *    reloaded from the folder once evicted; a changed folder is refused;
 *  - two base models under a model budget that holds one: alternating
 *    requests are all correct and the models swap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "common/dtype.h"
#include "common/sha256.h"
#include "store/store.h"
#include "tests/support/harness.h"
#include "worker/engine.h"
#include "worker/residency.h"

#define N_AD 24

static char *tmp;
static char ad_dir[600];
static wk_model *model;  /* stories260k, lent to engines */
static st_store *store;
static uint8_t shas[N_AD][32];
static size_t blob_len;  /* every blob has the same size */

/* ---------------------------------------------------------------- */
/* fixtures                                                          */
/* ---------------------------------------------------------------- */

static uint64_t rd_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* Copy k of the serialized adapter: a few floats of the first module's A
 * scaled, so every copy is a valid, distinct adapter. */
static void perturb(uint8_t *blob, int k)
{
	uint64_t a_off = rd_u64(blob + 128 + 8); /* layer 0 q_proj */
	for (int j = 0; j < 4; j++) {
		float f;
		memcpy(&f, blob + a_off + 4 * (uint64_t)j, 4);
		f *= 1.0f + 0.5f * (float)(k + 1);
		memcpy(blob + a_off + 4 * (uint64_t)j, &f, 4);
	}
}

static int setup(void **state)
{
	(void)state;
	ad_adapter *a = NULL;
	void *blob;
	char sdir[700];

	tmp = lt_tmpdir("residency");
	snprintf(ad_dir, sizeof ad_dir, "%s/ad", tmp);
	snprintf(sdir, sizeof sdir, "%s/store", tmp);
	if (wk_model_load(lt_shared_path("models/stories260k"), "stories260k", &model))
		return -1;
	if (lt_sh("'%s' adapter --model '%s' --out '%s' --rank 8 --alpha 16 --seed 11 "
		  "--targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj >&2",
		  lt_bin_path("loom-mkmodel"), lt_shared_path("models/stories260k"), ad_dir))
		return -1;
	if (ad_adapter_load(ad_dir, "x", &model->cfg, &a) || st_open(sdir, 0, &store))
		return -1;
	for (int k = 0; k < N_AD; k++) {
		if (ad_adapter_serialize(a, &blob, &blob_len))
			return -1;
		perturb(blob, k);
		if (st_blob_put(store, blob, blob_len, shas[k]))
			return -1;
		loom_free(blob);
	}
	ad_adapter_destroy(a);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	st_close(store);
	wk_model_destroy(model);
	loom_free(tmp);
	return 0;
}

static void ad_name(int k, char *buf, size_t n)
{
	snprintf(buf, n, "ad%02d", k);
}

/* A residency over the store with budgets in blobs; stories260k lent;
 * every adapter registered. */
static wk_res *make_res(int host_blobs, int dev_blobs)
{
	wk_res_opts o = { .host_budget = (uint64_t)host_blobs * blob_len,
			  .device_budget = (uint64_t)dev_blobs * blob_len, .store = store };
	wk_res *r;
	char nm[16];

	assert_int_equal(wk_res_create(&o, &r), LOOM_OK);
	assert_int_equal(wk_res_model_lend(r, model), LOOM_OK);
	for (int k = 0; k < N_AD; k++) {
		ad_name(k, nm, sizeof nm);
		assert_int_equal(wk_res_adapter_add_blob(r, "stories260k", nm, shas[k]), LOOM_OK);
	}
	return r;
}

static void check_budgets(wk_res *r)
{
	wk_res_stats s;
	wk_res_stats_get(r, &s);
	assert_true(s.host_bytes <= s.host_budget);
	assert_true(s.device_bytes <= s.device_budget);
	assert_true(s.model_bytes <= s.model_budget);
}

static wk_res_state wait_state(wk_res *r, wk_res_ad *h, int want)
{
	wk_res_state st = WK_RES_LOADING;
	for (int i = 0; i < 10000; i++) {
		st = wk_res_adapter_state(r, h, NULL, NULL, NULL, 0);
		if ((int)st == want || (want < 0 && st != WK_RES_LOADING))
			return st;
		usleep(1000);
	}
	return st;
}

/* Acquires adapter k and waits until it is on the device. */
static wk_res_ad *pin(wk_res *r, int k)
{
	char nm[16];
	ad_name(k, nm, sizeof nm);
	wk_res_ad *h = wk_res_adapter_acquire(r, 0, nm);
	assert_non_null(h);
	assert_int_equal(wait_state(r, h, WK_RES_READY), WK_RES_READY);
	check_budgets(r);
	return h;
}

static void use(wk_res *r, int k)
{
	wk_res_ad *h = pin(r, k);
	wk_res_adapter_release(r, h);
	check_budgets(r);
}

/* Which adapters sit in tier `tier`, as a bit set. */
static uint32_t in_tier(wk_res *r, int tier)
{
	loom_msg_residency m;
	uint32_t set = 0;
	assert_int_equal(wk_res_residency(r, &m), LOOM_OK);
	for (uint32_t i = 0; i < m.n; i++) {
		int k;
		if (m.items[i].kind == 0 && m.items[i].tier == tier &&
		    sscanf(m.items[i].name, "ad%d", &k) == 1)
			set |= 1u << k;
	}
	wk_res_residency_fini(&m);
	return set;
}

/* ---------------------------------------------------------------- */
/* policy                                                            */
/* ---------------------------------------------------------------- */

static void lru_order(void **state)
{
	(void)state;
	wk_res *r = make_res(5, 3);

	use(r, 0);
	use(r, 1);
	use(r, 2);
	assert_int_equal(in_tier(r, LOOM_TIER_DEVICE), 0x7);
	use(r, 0);                /* 1 is now the least recently used */
	use(r, 3);
	assert_int_equal(in_tier(r, LOOM_TIER_DEVICE), 0xd);
	use(r, 4);                /* then 2 */
	assert_int_equal(in_tier(r, LOOM_TIER_DEVICE), 0x19);
	/* host: 0..4 fit (5); 5 pushes out the oldest host copy (0's, made
	 * first and only read again when 0 came back... it did not: 0 stayed
	 * on the device, so its host copy is the least recent) */
	assert_int_equal(in_tier(r, LOOM_TIER_HOST), 0x1f);
	use(r, 5);
	assert_int_equal(in_tier(r, LOOM_TIER_HOST), 0x3e);
	/* 1 comes back from the host tier: a host hit, no cold load */
	wk_res_stats before, after;
	wk_res_stats_get(r, &before);
	use(r, 1);
	wk_res_stats_get(r, &after);
	assert_int_equal(after.host_hits, before.host_hits + 1);
	assert_int_equal(after.cold_loads, before.cold_loads);
	wk_res_destroy(r);
}

static void pins_prevent_eviction(void **state)
{
	(void)state;
	wk_res *r = make_res(2, 3);
	wk_res_ad *h[3], *d;

	for (int k = 0; k < 3; k++)
		h[k] = pin(r, k);
	d = wk_res_adapter_acquire(r, 0, "ad03");
	/* the pool is full of pinned adapters: 3 waits, nobody is evicted */
	usleep(100000);
	assert_int_equal(wk_res_adapter_state(r, d, NULL, NULL, NULL, 0), WK_RES_LOADING);
	assert_int_equal(in_tier(r, LOOM_TIER_DEVICE), 0x7);
	check_budgets(r);
	wk_res_adapter_release(r, h[1]);
	assert_int_equal(wait_state(r, d, WK_RES_READY), WK_RES_READY);
	assert_int_equal(in_tier(r, LOOM_TIER_DEVICE), 0xd);
	check_budgets(r);
	wk_res_adapter_release(r, h[0]);
	wk_res_adapter_release(r, h[2]);
	wk_res_adapter_release(r, d);
	/* an unknown name pins nothing */
	assert_null(wk_res_adapter_acquire(r, 0, "nope"));
	wk_res_destroy(r);
}

static void too_big_for_the_pool(void **state)
{
	(void)state;
	wk_res_opts o = { .host_budget = 0, .device_budget = blob_len - 1, .store = store };
	wk_res *r;
	char err[768];
	loom_err code = LOOM_OK;

	assert_int_equal(wk_res_create(&o, &r), LOOM_OK);
	assert_int_equal(wk_res_model_lend(r, model), LOOM_OK);
	assert_int_equal(wk_res_adapter_add_blob(r, "stories260k", "big", shas[0]), LOOM_OK);
	wk_res_ad *h = wk_res_adapter_acquire(r, 0, "big");
	assert_int_equal(wait_state(r, h, WK_RES_FAILED), WK_RES_FAILED);
	assert_int_equal(wk_res_adapter_state(r, h, NULL, &code, err, sizeof err), WK_RES_FAILED);
	assert_int_equal(code, LOOM_ERANGE);
	assert_non_null(strstr(err, "adapter big:"));
	assert_non_null(strstr(err, "--device-adapter-mb"));
	check_budgets(r);
	wk_res_adapter_release(r, h);
	/* unknown base model, missing blob */
	uint8_t zero[32] = { 0 };
	assert_int_equal(wk_res_adapter_add_blob(r, "nope", "x", shas[0]), LOOM_ENOTFOUND);
	assert_int_equal(wk_res_adapter_add_blob(r, "stories260k", "ghost", zero), LOOM_OK);
	h = wk_res_adapter_acquire(r, 0, "ghost");
	assert_int_equal(wait_state(r, h, WK_RES_FAILED), WK_RES_FAILED);
	assert_int_equal(wk_res_adapter_state(r, h, NULL, &code, err, sizeof err), WK_RES_FAILED);
	assert_int_equal(code, LOOM_ENOTFOUND);
	wk_res_adapter_release(r, h);
	wk_res_destroy(r);
}

/* WK_AD_BF16 (the CUDA backend's residency): the loader hands out BF16
 * copies, each value rounded from the blob's float32, counted at half the
 * blob: a pool of 1.5 blobs holds three, and a fourth pinned one waits. */
static void bf16_device_tier(void **state)
{
	(void)state;
	uint64_t half = (blob_len + 1) / 2;
	wk_res_opts o = { .host_budget = 8 * (uint64_t)blob_len, .device_budget = 3 * half,
			  .store = store, .adapter_dtype = WK_AD_BF16 };
	wk_res *r;
	char nm[16];
	assert_int_equal(wk_res_create(&o, &r), LOOM_OK);
	assert_int_equal(wk_res_model_lend(r, model), LOOM_OK);
	for (int k = 0; k < 4; k++) {
		ad_name(k, nm, sizeof nm);
		assert_int_equal(wk_res_adapter_add_blob(r, "stories260k", nm, shas[k]), LOOM_OK);
	}
	wk_res_ad *h[3];
	for (int k = 0; k < 3; k++) {
		h[k] = pin(r, k);
		const ad_adapter *a = NULL;
		assert_int_equal(wk_res_adapter_state(r, h[k], &a, NULL, NULL, 0), WK_RES_READY);
		assert_int_equal(a->bf16, 1);
		/* the oracle: the blob read as float32, every value rounded */
		st_view v;
		ad_adapter *f = NULL;
		assert_int_equal(st_blob_get(store, shas[k], 1, &v), LOOM_OK);
		assert_int_equal(ad_adapter_from_blob(v.data, v.len, "f", &model->cfg, 1, &f),
				 LOOM_OK);
		st_view_release(&v);
		for (int l = 0; l < f->n_layers; l++)
			for (int t = 0; t < AD_N_TARGETS; t++) {
				const ad_module *fm = ad_mod(f, l, t), *bm = ad_mod(a, l, t);
				assert_int_equal(bm->rank, fm->rank);
				for (int i = 0; i < fm->rank * f->d_in[t]; i++)
					assert_int_equal(bm->a16[i], loom_f32_to_bf16(fm->a[i]));
				for (int i = 0; i < fm->rank * f->d_out[t]; i++)
					assert_int_equal(bm->bt16[i], loom_f32_to_bf16(fm->bt[i]));
			}
		ad_adapter_destroy(f);
	}
	wk_res_stats st;
	wk_res_stats_get(r, &st);
	assert_int_equal(st.device_bytes, 3 * half);
	wk_res_ad *d = wk_res_adapter_acquire(r, 0, "ad03");
	usleep(100000);
	assert_int_equal(wk_res_adapter_state(r, d, NULL, NULL, NULL, 0), WK_RES_LOADING);
	wk_res_adapter_release(r, h[0]);
	assert_int_equal(wait_state(r, d, WK_RES_READY), WK_RES_READY);
	check_budgets(r);
	wk_res_adapter_release(r, h[1]);
	wk_res_adapter_release(r, h[2]);
	wk_res_adapter_release(r, d);
	wk_res_destroy(r);
}

/* Every acquire is a device hit or miss; every load a host hit or a cold
 * load (= a host miss). */
/* WK_AD_AUTO (the CPU worker's default): an adapter whose values are all
 * BF16 values is held as a BF16 copy (half the blob, the same values), a
 * float32 one as float32; once known, the BF16 one reloads at half the
 * blob: with ad01 pinned, a pool of one blob and a half has room for it. */
static void auto_device_tier(void **state)
{
	(void)state;
	uint64_t half = (blob_len + 1) / 2;
	ad_adapter *a = NULL;
	void *blob;
	size_t len;
	uint8_t sha[32];
	assert_int_equal(ad_adapter_load(ad_dir, "x", &model->cfg, &a), LOOM_OK);
	for (int l = 0; l < a->n_layers; l++)
		for (int t = 0; t < AD_N_TARGETS; t++) {
			const ad_module *m = ad_mod(a, l, t);
			float *w[2] = {(float *)m->a, (float *)m->bt};
			int n[2] = {m->rank * a->d_in[t], m->rank * a->d_out[t]};
			for (int h = 0; h < 2; h++)
				for (int i = 0; i < n[h]; i++)
					w[h][i] = loom_bf16_to_f32(loom_f32_to_bf16(w[h][i]));
		}
	assert_true(ad_adapter_bf16_exact(a));
	assert_int_equal(ad_adapter_serialize(a, &blob, &len), LOOM_OK);
	assert_int_equal(len, blob_len);
	assert_int_equal(st_blob_put(store, blob, len, sha), LOOM_OK);
	loom_free(blob);

	wk_res_opts o = { .host_budget = 8 * (uint64_t)blob_len, .device_budget = blob_len + half,
			  .store = store, .adapter_dtype = WK_AD_AUTO };
	wk_res *r;
	assert_int_equal(wk_res_create(&o, &r), LOOM_OK);
	assert_int_equal(wk_res_model_lend(r, model), LOOM_OK);
	assert_int_equal(wk_res_adapter_add_blob(r, "stories260k", "ex", sha), LOOM_OK);
	for (int k = 0; k < 2; k++) {
		char nm[16];
		ad_name(k, nm, sizeof nm);
		assert_int_equal(wk_res_adapter_add_blob(r, "stories260k", nm, shas[k]), LOOM_OK);
	}
	wk_res_ad *ex = wk_res_adapter_acquire(r, 0, "ex");
	assert_non_null(ex);
	assert_int_equal(wait_state(r, ex, WK_RES_READY), WK_RES_READY);
	const ad_adapter *held = NULL;
	assert_int_equal(wk_res_adapter_state(r, ex, &held, NULL, NULL, 0), WK_RES_READY);
	assert_int_equal(held->bf16, 1);
	for (int l = 0; l < a->n_layers; l++)
		for (int t = 0; t < AD_N_TARGETS; t++) {
			const ad_module *fm = ad_mod(a, l, t), *bm = ad_mod(held, l, t);
			for (int i = 0; i < fm->rank * a->d_in[t]; i++)
				assert_true(loom_bf16_to_f32(bm->a16[i]) == fm->a[i]);
			for (int i = 0; i < fm->rank * a->d_out[t]; i++)
				assert_true(loom_bf16_to_f32(bm->bt16[i]) == fm->bt[i]);
		}
	wk_res_ad *f = pin(r, 0);
	assert_int_equal(wk_res_adapter_state(r, f, &held, NULL, NULL, 0), WK_RES_READY);
	assert_int_equal(held->bf16, 0);
	wk_res_stats st;
	wk_res_stats_get(r, &st);
	assert_int_equal(st.device_bytes, blob_len + half);
	wk_res_adapter_release(r, ex);
	wk_res_adapter_release(r, f);
	f = pin(r, 1); /* a float32 blob: evicts both */
	ex = wk_res_adapter_acquire(r, 0, "ex");
	assert_non_null(ex);
	assert_int_equal(wait_state(r, ex, WK_RES_READY), WK_RES_READY);
	wk_res_stats_get(r, &st);
	assert_int_equal(st.device_bytes, blob_len + half);
	check_budgets(r);
	wk_res_adapter_release(r, ex);
	wk_res_adapter_release(r, f);
	wk_res_destroy(r);
	ad_adapter_destroy(a);
}

static void counters_add_up(void **state)
{
	(void)state;
	wk_res *r = make_res(4, 2);
	static const int order[] = { 0, 1, 0, 2, 3, 0, 1, 4, 4, 5, 2, 0, 6, 1, 3, 3 };
	int n = (int)(sizeof order / sizeof order[0]);
	wk_res_stats s;

	for (int i = 0; i < n; i++)
		use(r, order[i]);
	wk_res_stats_get(r, &s);
	assert_int_equal(s.device_hits + s.device_misses, (uint64_t)n);
	assert_int_equal(s.host_misses, s.cold_loads);
	assert_int_equal(s.host_hits + s.cold_loads, s.device_misses);
	assert_true(s.cold_load_ms > 0.0);
	assert_int_equal(s.pending_loads, 0);
	assert_true(s.device_evictions > 0 && s.host_evictions > 0);
	/* RESIDENCY carries the same figures */
	loom_msg_residency m;
	assert_int_equal(wk_res_residency(r, &m), LOOM_OK);
	assert_int_equal(m.device_hits, s.device_hits);
	assert_int_equal(m.host_misses, s.host_misses);
	assert_int_equal(m.cold_loads, s.cold_loads);
	assert_int_equal(m.device_budget, 2 * blob_len);
	assert_int_equal(m.host_budget, 4 * blob_len);
	uint64_t dev = 0, host = 0;
	for (uint32_t i = 0; i < m.n; i++) {
		if (m.items[i].kind == 0 && m.items[i].tier == LOOM_TIER_DEVICE)
			dev += m.items[i].bytes;
		if (m.items[i].kind == 0 && m.items[i].tier == LOOM_TIER_HOST)
			host += m.items[i].bytes;
		if (m.items[i].kind == 0)
			assert_int_equal(strlen(m.items[i].sha), 64);
	}
	assert_int_equal(dev, m.device_bytes);
	assert_int_equal(host, m.host_bytes);
	wk_res_residency_fini(&m);
	wk_res_destroy(r);
}

/* ---------------------------------------------------------------- */
/* with the engine                                                   */
/* ---------------------------------------------------------------- */

#define MAX_OUT 64

typedef struct out {
	pthread_mutex_t mu;
	int32_t ids[128][MAX_OUT];
	int n[128];
	int done[128];
	uint32_t err[128];
	int n_done;
} out;

static void on_emit(void *ctx, const loom_msg *m)
{
	out *o = ctx;
	pthread_mutex_lock(&o->mu);
	if (m->type == LOOM_MSG_STEP) {
		for (uint32_t i = 0; i < m->u.step.n_items; i++) {
			const loom_step_item *it = &m->u.step.items[i];
			int q = (int)it->req % 128;
			for (uint32_t k = 0; k < it->n_ids && o->n[q] < MAX_OUT; k++)
				o->ids[q][o->n[q]++] = it->ids[k];
			if (it->finish && !o->done[q]) {
				o->done[q] = 1;
				o->n_done++;
			}
		}
	} else if (m->type == LOOM_MSG_ERROR && m->u.error.req) {
		int q = (int)m->u.error.req % 128;
		o->err[q] = m->u.error.code;
		if (!o->done[q]) {
			o->done[q] = 1;
			o->n_done++;
		}
		fprintf(stderr, "req %llu: %s\n", (unsigned long long)m->u.error.req,
			m->u.error.message);
	}
	pthread_mutex_unlock(&o->mu);
}

static const int32_t prompt[] = { 1, 403, 407, 261, 378 };

static void submit(wk_engine *e, uint64_t req, const char *model_name, const char *adapter,
		   const int32_t *p, uint32_t np, uint32_t max_tokens)
{
	loom_msg_submit s = { .req = req, .n_prompt = np, .prompt_ids = (int32_t *)p };
	snprintf(s.model, sizeof s.model, "%s", model_name);
	snprintf(s.adapter, sizeof s.adapter, "%s", adapter);
	s.sampling = (loom_sampling){ .temperature = 0.0f, .top_p = 1.0f, .seed = 1,
				      .max_tokens = max_tokens, .ignore_eos = true };
	assert_int_equal(wk_engine_submit(e, &s), LOOM_OK);
}

/* Greedy tokens of adapter k alone, handed in directly (no residency). */
static int alone(int k, int32_t *ids)
{
	st_view v;
	ad_adapter *a;
	out *o = loom_calloc(1, sizeof *o);
	wk_engine_opts eo = { .manual = true };
	wk_engine *e;
	int n;

	pthread_mutex_init(&o->mu, NULL);
	assert_int_equal(st_blob_get(store, shas[k], 1, &v), LOOM_OK);
	assert_int_equal(ad_adapter_from_blob(v.data, v.len, "ref", &model->cfg, 1, &a), LOOM_OK);
	st_view_release(&v);
	assert_int_equal(wk_engine_create(&model, 1, &eo, on_emit, o, &e), LOOM_OK);
	assert_int_equal(wk_engine_add_adapter(e, "stories260k", a), LOOM_OK);
	submit(e, 1, "stories260k", "ref", prompt, 5, 12);
	while (wk_engine_step(e) > 0) {
	}
	n = o->n[1];
	memcpy(ids, o->ids[1], sizeof(int32_t) * (size_t)n);
	wk_engine_destroy(e);
	pthread_mutex_destroy(&o->mu);
	loom_free(o);
	return n;
}

static void prefetch_at_submit(void **state)
{
	(void)state;
	wk_res *r = make_res(4, 4);
	wk_engine_opts eo = { .manual = true, .res = r };
	out *o = loom_calloc(1, sizeof *o);
	wk_engine *e;
	wk_res_stats s;

	pthread_mutex_init(&o->mu, NULL);
	assert_int_equal(wk_engine_create(NULL, 0, &eo, on_emit, o, &e), LOOM_OK);
	submit(e, 7, "stories260k", "ad05", prompt, 5, 4);
	/* no iteration has run: the load started at submit */
	for (int i = 0; i < 5000; i++) {
		wk_res_stats_get(r, &s);
		if (s.adapters_device == 1)
			break;
		usleep(1000);
	}
	assert_int_equal(s.adapters_device, 1);
	assert_int_equal(in_tier(r, LOOM_TIER_DEVICE), 1u << 5);
	while (wk_engine_step(e) > 0) {
	}
	assert_int_equal(o->n[7], 4);
	assert_int_equal(o->err[7], 0);
	/* an unknown adapter still gets the engine's error */
	submit(e, 8, "stories260k", "nope", prompt, 5, 4);
	while (wk_engine_step(e) > 0) {
	}
	assert_int_equal(o->err[8], LOOM_ENOTFOUND);
	wk_engine_destroy(e);
	wk_res_destroy(r);
	pthread_mutex_destroy(&o->mu);
	loom_free(o);
}

typedef struct monitor {
	wk_res *r;
	volatile int stop;
	uint64_t max_host, max_dev, samples;
	wk_res_stats last;
} monitor;

static void *monitor_main(void *arg)
{
	monitor *m = arg;
	while (!m->stop) {
		wk_res_stats s;
		wk_res_stats_get(m->r, &s);
		if (s.host_bytes > m->max_host)
			m->max_host = s.host_bytes;
		if (s.device_bytes > m->max_dev)
			m->max_dev = s.device_bytes;
		m->samples++;
		m->last = s;
		usleep(200);
	}
	return NULL;
}

/* Zipf-ish: adapter k with weight 1/(k+1). */
static int zipf(uint64_t *seed)
{
	double h = 0, u;
	for (int k = 0; k < N_AD; k++)
		h += 1.0 / (k + 1);
	*seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
	u = (double)(*seed >> 11) / 9007199254740992.0 * h;
	for (int k = 0; k < N_AD; k++) {
		u -= 1.0 / (k + 1);
		if (u <= 0)
			return k;
	}
	return N_AD - 1;
}

static void engine_serves_through_small_pools(void **state)
{
	(void)state;
	static int32_t want[N_AD][MAX_OUT];
	int n_want[N_AD];
	wk_res *r = make_res(8, 4);
	wk_engine_opts eo = { .res = r, .max_seqs = 8 };
	out *o = loom_calloc(1, sizeof *o);
	monitor mon = { .r = r };
	pthread_t th;
	wk_engine *e;
	int which[96];
	uint64_t seed = 42;
	char nm[16];

	for (int k = 0; k < N_AD; k++)
		n_want[k] = alone(k, want[k]);
	pthread_mutex_init(&o->mu, NULL);
	assert_int_equal(pthread_create(&th, NULL, monitor_main, &mon), 0);
	assert_int_equal(wk_engine_create(NULL, 0, &eo, on_emit, o, &e), LOOM_OK);
	for (int i = 0; i < 96; i++) {
		which[i] = zipf(&seed);
		ad_name(which[i], nm, sizeof nm);
		submit(e, (uint64_t)i + 1, "stories260k", nm, prompt, 5, 12);
		if (i % 8 == 7)
			usleep(2000);
	}
	for (int t = 0; t < 60000; t++) {
		pthread_mutex_lock(&o->mu);
		int d = o->n_done;
		pthread_mutex_unlock(&o->mu);
		if (d == 96)
			break;
		usleep(1000);
	}
	wk_engine_destroy(e);
	mon.stop = 1;
	pthread_join(th, NULL);
	assert_int_equal(o->n_done, 96);
	for (int i = 0; i < 96; i++) {
		int q = i + 1;
		assert_int_equal(o->err[q], 0);
		assert_int_equal(o->n[q], n_want[which[i]]);
		assert_memory_equal(o->ids[q], want[which[i]], sizeof(int32_t) * (size_t)o->n[q]);
	}
	assert_true(mon.samples > 10);
	assert_true(mon.max_dev <= 4 * blob_len);
	assert_true(mon.max_host <= 8 * blob_len);
	wk_res_stats s;
	wk_res_stats_get(r, &s);
	assert_int_equal(s.device_hits + s.device_misses, 96);
	assert_true(s.host_hits + s.host_misses <= s.device_misses);
	assert_true(s.cold_loads >= s.host_misses);
	assert_true(s.device_evictions > 0);
	fprintf(stderr, "96 requests over %d adapters: device %llu hits / %llu misses, host %llu / "
		"%llu, %llu cold loads (%.1f ms)\n", N_AD, (unsigned long long)s.device_hits,
		(unsigned long long)s.device_misses, (unsigned long long)s.host_hits,
		(unsigned long long)s.host_misses, (unsigned long long)s.cold_loads,
		s.cold_load_ms);
	wk_res_destroy(r);
	pthread_mutex_destroy(&o->mu);
	loom_free(o);
}

/* ---------------------------------------------------------------- */
/* path mode                                                         */
/* ---------------------------------------------------------------- */

static void path_mode(void **state)
{
	(void)state;
	wk_res_opts ro = { .host_budget = 0, .device_budget = 0 };
	wk_res *r;
	wk_res_ad *h;
	wk_res_stats s;
	char dir2[700];

	/* no host cache: the folder is tier 0, read again after an eviction */
	ro.device_budget = blob_len;
	assert_int_equal(wk_res_create(&ro, &r), LOOM_OK);
	assert_int_equal(wk_res_model_lend(r, model), LOOM_OK);
	assert_int_equal(wk_res_adapter_add_dir(r, "stories260k", "p", ad_dir), LOOM_OK);
	snprintf(dir2, sizeof dir2, "%s/ad2", tmp);
	assert_int_equal(lt_sh("cp -r '%s' '%s'", ad_dir, dir2), 0);
	assert_int_equal(wk_res_adapter_add_dir(r, "stories260k", "q", dir2), LOOM_OK);
	assert_int_equal(wk_res_adapter_add_dir(r, "stories260k", "z", "/no/such/folder"),
			 LOOM_EINVAL);
	/* p and q have the same bytes: one entry, two names */
	h = wk_res_adapter_acquire(r, 0, "p");
	assert_int_equal(wait_state(r, h, WK_RES_READY), WK_RES_READY);
	wk_res_adapter_release(r, h);
	h = wk_res_adapter_acquire(r, 0, "q");
	assert_int_equal(wk_res_adapter_state(r, h, NULL, NULL, NULL, 0), WK_RES_READY);
	wk_res_adapter_release(r, h);
	wk_res_stats_get(r, &s);
	assert_int_equal(s.device_hits, 1);
	assert_int_equal(s.cold_loads, 1);
	wk_res_destroy(r);

	/* a changed folder is refused when it has to be read again */
	ro.device_budget = 0;
	assert_int_equal(wk_res_create(&ro, &r), LOOM_OK);
	assert_int_equal(wk_res_model_lend(r, model), LOOM_OK);
	assert_int_equal(wk_res_adapter_add_dir(r, "stories260k", "q", dir2), LOOM_OK);
	assert_int_equal(lt_sh("'%s' adapter --model '%s' --out '%s' --rank 4 --seed 99 >&2",
			       lt_bin_path("loom-mkmodel"), lt_shared_path("models/stories260k"),
			       dir2), 0);
	h = wk_res_adapter_acquire(r, 0, "q");
	assert_int_equal(wait_state(r, h, WK_RES_FAILED), WK_RES_FAILED);
	char err[768];
	wk_res_adapter_state(r, h, NULL, NULL, err, sizeof err);
	assert_non_null(strstr(err, "changed since"));
	wk_res_adapter_release(r, h);
	/* registering it again makes the new version current */
	assert_int_equal(wk_res_adapter_add_dir(r, "stories260k", "q", dir2), LOOM_OK);
	h = wk_res_adapter_acquire(r, 0, "q");
	assert_int_equal(wait_state(r, h, WK_RES_READY), WK_RES_READY);
	const ad_adapter *a;
	wk_res_adapter_state(r, h, &a, NULL, NULL, 0);
	assert_int_equal(a->max_rank, 4);
	wk_res_adapter_release(r, h);
	wk_res_destroy(r);
}

/* ---------------------------------------------------------------- */
/* two base models, room for one                                     */
/* ---------------------------------------------------------------- */

static int alone_model(const char *name, const int32_t *p, uint32_t np, int32_t *ids)
{
	wk_model *m;
	out *o = loom_calloc(1, sizeof *o);
	wk_engine_opts eo = { .manual = true };
	wk_engine *e;
	int n;

	pthread_mutex_init(&o->mu, NULL);
	char path[64];
	snprintf(path, sizeof path, "models/%s", name);
	assert_int_equal(wk_model_load(lt_shared_path(path), name, &m), LOOM_OK);
	assert_int_equal(wk_engine_create(&m, 1, &eo, on_emit, o, &e), LOOM_OK);
	submit(e, 1, name, "", p, np, 10);
	while (wk_engine_step(e) > 0) {
	}
	n = o->n[1];
	memcpy(ids, o->ids[1], sizeof(int32_t) * (size_t)n);
	wk_engine_destroy(e);
	wk_model_destroy(m);
	pthread_mutex_destroy(&o->mu);
	loom_free(o);
	return n;
}

static void two_models_one_slot(void **state)
{
	(void)state;
	static const int32_t pb[] = { 1, 20, 31, 42, 7 }; /* babyllama105: vocab 105 */
	int32_t want_s[MAX_OUT], want_b[MAX_OUT];
	int ns = alone_model("stories260k", prompt, 5, want_s);
	int nb = alone_model("babyllama105", pb, 5, want_b);
	loom_model_config cs, cb;
	assert_int_equal(loom_model_config_load(lt_shared_path("models/stories260k"), &cs), 0);
	assert_int_equal(loom_model_config_load(lt_shared_path("models/babyllama105"), &cb), 0);
	size_t bs = wk_model_weight_bytes(&cs), bb = wk_model_weight_bytes(&cb);
	wk_res_opts ro = { .host_budget = 64 << 20, .model_budget = bs > bb ? bs : bb };
	wk_res *r;
	out *o = loom_calloc(1, sizeof *o);
	wk_engine *e;
	wk_res_stats s;

	pthread_mutex_init(&o->mu, NULL);
	assert_int_equal(wk_res_create(&ro, &r), LOOM_OK);
	assert_int_equal(wk_res_model_add_dir(r, "stories260k",
					      lt_shared_path("models/stories260k")), LOOM_OK);
	assert_int_equal(wk_res_model_add_dir(r, "babyllama105",
					      lt_shared_path("models/babyllama105")), LOOM_OK);
	wk_engine_opts eo = { .res = r };
	assert_int_equal(wk_engine_create(NULL, 0, &eo, on_emit, o, &e), LOOM_OK);
	for (int i = 0; i < 8; i++) {
		bool b = i % 2;
		submit(e, (uint64_t)i + 1, b ? "babyllama105" : "stories260k", "", b ? pb : prompt, 5,
		       10);
		for (int t = 0; t < 30000; t++) { /* one at a time: each swap is forced */
			pthread_mutex_lock(&o->mu);
			int d = o->done[i + 1];
			pthread_mutex_unlock(&o->mu);
			if (d)
				break;
			usleep(1000);
		}
		check_budgets(r);
	}
	/* and all at once, interleaved */
	for (int i = 8; i < 24; i++) {
		bool b = i % 2;
		submit(e, (uint64_t)i + 1, b ? "babyllama105" : "stories260k", "", b ? pb : prompt, 5,
		       10);
	}
	for (int t = 0; t < 60000 && o->n_done < 24; t++) {
		check_budgets(r);
		usleep(1000);
	}
	wk_engine_destroy(e);
	assert_int_equal(o->n_done, 24);
	for (int i = 0; i < 24; i++) {
		bool b = i % 2;
		assert_int_equal(o->err[i + 1], 0);
		assert_int_equal(o->n[i + 1], b ? nb : ns);
		assert_memory_equal(o->ids[i + 1], b ? want_b : want_s,
				    sizeof(int32_t) * (size_t)(b ? nb : ns));
	}
	wk_res_stats_get(r, &s);
	assert_true(s.model_loads >= 8);
	assert_true(s.model_evictions >= 7);
	assert_true(s.model_bytes <= s.model_budget);
	fprintf(stderr, "two models: %llu loads, %llu evictions\n",
		(unsigned long long)s.model_loads, (unsigned long long)s.model_evictions);
	wk_res_destroy(r);
	pthread_mutex_destroy(&o->mu);
	loom_free(o);
}

/* wk_res_model_warm: a worker with nothing on its device brings one model
 * in with no request, in the background; a second warm while one is there
 * (or coming) does nothing, and a warm never evicts. */
static void warm_one_model(void **state)
{
	(void)state;
	wk_res_opts ro = { .model_budget = 64 << 20 };
	wk_res *r;
	wk_res_stats s;
	assert_int_equal(wk_res_create(&ro, &r), LOOM_OK);
	assert_int_equal(wk_res_model_add_dir(r, "stories260k",
					      lt_shared_path("models/stories260k")), LOOM_OK);
	assert_int_equal(wk_res_model_add_dir(r, "babyllama105",
					      lt_shared_path("models/babyllama105")), LOOM_OK);
	wk_res_model_warm(r, 1);
	wk_res_model_warm(r, 0); /* babyllama105 is coming: nothing */
	wk_res_state st = WK_RES_LOADING;
	for (int t = 0; t < 5000 && st != WK_RES_READY; t++) {
		st = wk_res_model_state(r, 1, NULL, NULL, NULL, 0);
		usleep(1000);
	}
	assert_int_equal(st, WK_RES_READY);
	usleep(50000);
	assert_int_equal(wk_res_model_state(r, 0, NULL, NULL, NULL, 0), WK_RES_LOADING);
	wk_res_model_warm(r, 0); /* one is on the device: nothing */
	usleep(50000);
	wk_res_stats_get(r, &s);
	assert_int_equal(s.model_loads, 1);
	assert_int_equal(s.model_evictions, 0);
	wk_res_destroy(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(lru_order),
		cmocka_unit_test(pins_prevent_eviction),
		cmocka_unit_test(too_big_for_the_pool),
		cmocka_unit_test(bf16_device_tier),
		cmocka_unit_test(auto_device_tier),
		cmocka_unit_test(counters_add_up),
		cmocka_unit_test(prefetch_at_submit),
		cmocka_unit_test(engine_serves_through_small_pools),
		cmocka_unit_test(path_mode),
		cmocka_unit_test(two_models_one_slot),
		cmocka_unit_test(warm_one_model),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
