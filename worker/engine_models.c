/*
 * worker/engine_models.c — the engine's model slots follow the residency:
 * a slot per listed model (name, config and KV size known at once), its KV
 * pool and batch buffers allocated when the model becomes resident
 * (attach) and freed when the residency evicts it (detach). On the CUDA
 * backend an attached model's weights then go to the device piecewise,
 * WK_ENGINE_LOAD_BUDGET bytes per iteration on the copy stream, while the
 * other models keep serving; its requests wait until the upload is done. Engine thread
 * only (or the caller of wk_engine_create / wk_engine_step).
 */
#include <stdio.h>
#include <string.h>

#include "../common/alloc.h"
#include "../common/log.h"
#include "engine_int.h"
#include "sample.h"

int wk_engine_kv_blocks_for(const loom_model_config *c, size_t weight_bytes, int max_seqs,
			    int kv_mb, wk_kv_dtype dt)
{
	uint64_t per = wk_kv_bytes_per_position_dt(c, dt), bs = WK_KV_BLOCK;
	uint64_t ctx_blocks = ((uint64_t)c->max_ctx + bs - 1) / bs, blocks;

	if (kv_mb > 0) {
		blocks = ((uint64_t)kv_mb << 20) / (per * bs);
	} else {
		uint64_t cap = weight_bytes > ((uint64_t)256 << 20) ? weight_bytes
								    : (uint64_t)256 << 20;
		blocks = (uint64_t)(max_seqs > 0 ? max_seqs : 64) * ctx_blocks;
		if (blocks * bs * per > cap)
			blocks = cap / (bs * per);
		if (blocks < ctx_blocks)
			blocks = ctx_blocks;
	}
	if (blocks < 1)
		blocks = 1;
	return blocks > (uint64_t)INT32_MAX / bs ? INT32_MAX / WK_KV_BLOCK : (int)blocks;
}

void wk_engine_slots_sync(wk_engine *e)
{
	int n = wk_res_model_count(e->res);

	for (int i = e->n_models; i < n; i++) {
		model_slot *ms = &e->slots[i];
		size_t bytes;
		wk_res_model_info(e->res, i, ms->name, &ms->cfg, &bytes);
		ms->kv_blocks = e->kv_blocks_opt > 0
					? e->kv_blocks_opt
					: wk_engine_kv_blocks_for(&ms->cfg, bytes, e->max_seqs,
								  e->kv_mb_opt, e->kv_dtype);
	}
	if (n > e->n_models)
		e->n_models = n;
}

loom_err wk_engine_attach(wk_engine *e, int mi, wk_model *m)
{
	model_slot *ms = &e->slots[mi];
	size_t need = wk_sample_scratch_bytes(m->cfg.vocab);
	loom_err rc;

	if (need > e->sample_bytes) {
		void *p = loom_realloc(e->sample_scratch, need);
		if (!p)
			return loom_fail(LOOM_ENOMEM, "engine: out of memory for sampling '%s'",
					 m->name);
		e->sample_scratch = p;
		e->sample_bytes = need;
	}
	if (!(rc = wk_kvpool_create_dt(m, ms->kv_blocks, WK_KV_BLOCK, e->kv_dtype, &ms->pool)))
		wk_kvpool_set_prefix_cache(ms->pool, e->prefix_cache);
	if (rc) {
		char why[256];
		snprintf(why, sizeof why, "%s", loom_errmsg());
		rc = loom_fail(rc, "engine: KV cache of '%s': %s", m->name, why);
		goto out;
	}
	/* the CUDA adapter pool gets the residency's device budget: every
	 * adapter the residency counts as on the device fits it (the budget
	 * counts F32 bytes, the pool holds BF16) */
	wk_res_stats rs;
	wk_res_stats_get(e->res, &rs);
	size_t ad_mb = rs.device_budget == WK_RES_UNLIMITED ? 0 : (size_t)(rs.device_budget >> 20);
	if ((rc = wk_fwd_create(e->backend, m, ms->pool, e->max_batch_tokens + e->max_seqs,
				e->max_seqs, ad_mb, &ms->fwd)))
		goto out;
	ms->logits = loom_malloc((size_t)e->max_seqs * (size_t)m->cfg.vocab * sizeof(float));
	if (!ms->logits) {
		rc = loom_fail(LOOM_ENOMEM, "engine: out of memory for the logits of '%s'", m->name);
		goto out;
	}
	int done = 0;
	if ((rc = wk_fwd_load(ms->fwd, WK_ENGINE_LOAD_BUDGET, &done)))
		goto out;
	if (!done) { /* wk_engine_models_sync sends the rest, iteration by iteration */
		ms->loading = m;
		e->n_loading++;
		return LOOM_OK;
	}
	ms->m = m;
	LOOM_DEBUG("engine: '%s' attached: KV cache of %d blocks x %d positions (%zu MiB)",
		   m->name, ms->kv_blocks, WK_KV_BLOCK,
		   (size_t)ms->kv_blocks * WK_KV_BLOCK *
				   wk_kv_bytes_per_position_dt(&m->cfg, e->kv_dtype) >> 20);
	return LOOM_OK;
out:
	wk_engine_detach(e, mi);
	return rc;
}

void wk_engine_detach(wk_engine *e, int mi)
{
	model_slot *ms = &e->slots[mi];

	if (ms->loading)
		e->n_loading--;
	ms->loading = NULL;
	wk_fwd_destroy(ms->fwd);
	wk_kvpool_destroy(ms->pool);
	loom_free(ms->logits);
	loom_free(ms->all_logits);
	ms->all_logits = NULL;
	ms->fwd = NULL;
	ms->pool = NULL;
	ms->logits = NULL;
	ms->m = NULL;
}

void wk_engine_models_sync(wk_engine *e)
{
	for (int i = 0; i < e->n_models; i++) {
		model_slot *ms = &e->slots[i];
		wk_model *m = NULL;
		wk_res_state st;

		if (ms->loading) {
			int done = 0;
			if (wk_fwd_load(ms->fwd, WK_ENGINE_LOAD_BUDGET, &done)) {
				ms->err_code = LOOM_EIO;
				snprintf(ms->err, sizeof ms->err, "engine: uploading '%s' to the "
					 "device: %s", ms->name, loom_errmsg());
				LOOM_ERROR("%s", ms->err);
				wk_engine_detach(e, i);
				ms->failed = true;
			} else if (done) {
				ms->m = ms->loading;
				ms->loading = NULL;
				e->n_loading--;
				LOOM_DEBUG("engine: '%s' attached (weights on the device)", ms->name);
			}
			continue;
		}
		if (ms->m) {
			ms->failed = false;
			if (wk_res_model_begin_detach(e->res, i)) {
				wk_engine_detach(e, i);
				wk_res_model_detached(e->res, i);
			}
			continue;
		}
		st = wk_res_model_state(e->res, i, &m, &ms->err_code, ms->err, sizeof ms->err);
		ms->failed = st == WK_RES_FAILED;
		if (st != WK_RES_READY)
			continue;
		if (wk_engine_attach(e, i, m)) {
			/* the weights are in, the engine's buffers are not: the
			 * waiting requests learn why */
			ms->err_code = LOOM_ENOMEM;
			snprintf(ms->err, sizeof ms->err, "%s", loom_errmsg());
			ms->failed = true;
		}
	}
}
