/*
 * worker/backend.c — backend choice and the per-model forward handle (see
 * backend.h).
 */
#include "backend.h"

#include <string.h>

#include "../common/alloc.h"
#include "forward_cuda.h"

#ifdef LOOM_HAVE_CUDA
#include "../kernels/cuda/kn_cuda.h"
#endif

struct wk_fwd {
	wk_backend_kind kind;
	const wk_model *m;
	wk_scratch *cpu;
	wk_cuda_fwd *cuda;
};

const char *wk_backend_name(wk_backend_kind k)
{
	return k == WK_BACKEND_CUDA ? "cuda" : "cpu";
}

int wk_backend_cuda_built(void)
{
#ifdef LOOM_HAVE_CUDA
	return 1;
#else
	return 0;
#endif
}

/* Devices found (0 without the CUDA backend or a driver). */
static int cuda_devices(void)
{
#ifdef LOOM_HAVE_CUDA
	int n = 0;
	if (kn_cuda_device_count(&n))
		return 0;
	return n;
#else
	return 0;
#endif
}

loom_err wk_backend_pick(const char *req, wk_backend_kind *out)
{
	*out = WK_BACKEND_CPU;
	if (!req || !*req) {
		if (cuda_devices() > 0)
			*out = WK_BACKEND_CUDA;
		return LOOM_OK;
	}
	if (!strcmp(req, "cpu"))
		return LOOM_OK;
	if (strcmp(req, "cuda"))
		return loom_fail(LOOM_EINVAL, "--backend '%s' is not cpu or cuda", req);
	if (!wk_backend_cuda_built())
		return loom_fail(LOOM_EUNSUPPORTED, "--backend cuda: this loom-worker was built "
				 "without the CUDA backend (LOOM_CUDA=OFF or no nvcc)");
	if (cuda_devices() == 0)
		return loom_fail(LOOM_EUNSUPPORTED, "--backend cuda: no CUDA device found");
	*out = WK_BACKEND_CUDA;
	return LOOM_OK;
}

loom_err wk_fwd_create(wk_backend_kind k, const wk_model *m, const wk_kvpool *pool,
		       int max_tokens, int max_seqs, size_t adapter_mb, wk_fwd **out)
{
	*out = NULL;
	wk_fwd *f = loom_calloc(1, sizeof *f);
	if (!f)
		return loom_fail(LOOM_ENOMEM, "forward: out of memory");
	f->kind = k;
	f->m = m;
	loom_err rc;
	if (k == WK_BACKEND_CUDA) {
		wk_cuda_fwd_opts o = {.max_tokens = max_tokens, .max_seqs = max_seqs,
				      .adapter_slots = max_seqs > 32 ? max_seqs : 32,
				      .adapter_mb = adapter_mb, .defer_weights = 1};
		rc = wk_cuda_fwd_create(m, pool, &o, &f->cuda);
	} else {
		rc = wk_scratch_create(m, &f->cpu);
	}
	if (rc) {
		loom_free(f);
		return rc;
	}
	*out = f;
	return LOOM_OK;
}

void wk_fwd_destroy(wk_fwd *f)
{
	if (!f)
		return;
	wk_scratch_destroy(f->cpu);
	wk_cuda_fwd_destroy(f->cuda);
	loom_free(f);
}

wk_backend_kind wk_fwd_kind(const wk_fwd *f)
{
	return f->kind;
}

loom_err wk_fwd_run(wk_fwd *f, const wk_batch *b, float *logits)
{
	if (f->kind == WK_BACKEND_CUDA)
		return wk_cuda_forward(f->cuda, b, logits);
	return wk_forward(f->m, b, f->cpu, logits);
}

loom_err wk_fwd_prefetch(wk_fwd *f, const ad_adapter *a)
{
	if (f->kind == WK_BACKEND_CUDA)
		return wk_cuda_fwd_prefetch(f->cuda, a);
	return LOOM_OK;
}

loom_err wk_fwd_load(wk_fwd *f, size_t budget, int *done)
{
	if (f->kind == WK_BACKEND_CUDA)
		return wk_cuda_fwd_load(f->cuda, budget, done);
	*done = 1;
	return LOOM_OK;
}
