/*
 * bench/engine/dnnl/gemm_dnnl.c — oneDNN matmul for loom-gemm-bench (see
 * gemm_dnnl.h). oneDNN 2.6's C API: one engine and stream per process, a
 * matmul primitive per shape with weights in format "any" (oneDNN packs
 * them, once, outside the timing), and for BF16 a reorder of the float32
 * activations into BF16 inside each call.
 */
#include "gemm_dnnl.h"

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

struct gd_mm {
	int bf16, copies;
	dnnl_primitive_t mm, src_reorder;
	dnnl_memory_t src_user, src, dst;
	dnnl_memory_t *wei; /* [copies] */
};

static dnnl_engine_t eng;
static dnnl_stream_t strm;

#define CK(call)                                                                            \
	do {                                                                                \
		dnnl_status_t st_ = (call);                                                 \
		if (st_ != dnnl_success) {                                                  \
			fprintf(stderr, "loom-gemm-bench: oneDNN: %s failed (status %d)\n", \
				#call, (int)st_);                                           \
			goto fail;                                                          \
		}                                                                           \
	} while (0)

const char *gd_version(void)
{
	static char v[32];
	const dnnl_version_t *d = dnnl_version();
	snprintf(v, sizeof v, "oneDNN %d.%d.%d", d->major, d->minor, d->patch);
	return v;
}

/* Reorders memory a into b on the stream, waiting. */
static int reorder(dnnl_memory_t a, dnnl_memory_t b)
{
	const dnnl_memory_desc_t *ma, *mb;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_primitive_t p = NULL;
	int rc = -1;
	CK(dnnl_memory_get_memory_desc(a, &ma));
	CK(dnnl_memory_get_memory_desc(b, &mb));
	CK(dnnl_reorder_primitive_desc_create(&pd, ma, eng, mb, eng, NULL));
	CK(dnnl_primitive_create(&p, pd));
	dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, a}, {DNNL_ARG_TO, b}};
	CK(dnnl_primitive_execute(p, strm, 2, args));
	CK(dnnl_stream_wait(strm));
	rc = 0;
fail:
	if (p)
		dnnl_primitive_destroy(p);
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	return rc;
}

int gd_create(gd_mm **out, int M, int N, int K, int bf16, const float *w, int copies,
	      int threads)
{
	gd_mm *g = calloc(1, sizeof *g);
	dnnl_primitive_desc_t pd = NULL, rpd = NULL;
	dnnl_memory_t wuser = NULL;
	*out = NULL;
	if (!g || !(g->wei = calloc((size_t)copies, sizeof *g->wei))) {
		free(g);
		return -1;
	}
	g->bf16 = bf16;
	g->copies = copies;
	omp_set_num_threads(threads);
	if (!eng) {
		CK(dnnl_engine_create(&eng, dnnl_cpu, 0));
		CK(dnnl_stream_create(&strm, eng, dnnl_stream_default_flags));
	}
	dnnl_data_type_t dt = bf16 ? dnnl_bf16 : dnnl_f32;
	dnnl_dims_t sd = {M, K}, wd = {K, N}, dd = {M, N};
	dnnl_memory_desc_t src_user_md, src_md, wuser_md, wany_md, dst_md;
	CK(dnnl_memory_desc_init_by_tag(&src_user_md, 2, sd, dnnl_f32, dnnl_ab));
	CK(dnnl_memory_desc_init_by_tag(&src_md, 2, sd, dt, dnnl_ab));
	/* W [N,K] row-major is the {K, N} matrix with K contiguous: tag ba */
	CK(dnnl_memory_desc_init_by_tag(&wuser_md, 2, wd, dnnl_f32, dnnl_ba));
	CK(dnnl_memory_desc_init_by_tag(&wany_md, 2, wd, dt, dnnl_format_tag_any));
	CK(dnnl_memory_desc_init_by_tag(&dst_md, 2, dd, dnnl_f32, dnnl_ab));
	dnnl_matmul_desc_t md;
	CK(dnnl_matmul_desc_init(&md, &src_md, &wany_md, NULL, &dst_md));
	CK(dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL));
	CK(dnnl_primitive_create(&g->mm, pd));
	const dnnl_memory_desc_t *wmd = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
	CK(dnnl_memory_create(&wuser, &wuser_md, eng, (void *)w));
	for (int c = 0; c < copies; c++) {
		CK(dnnl_memory_create(&g->wei[c], wmd, eng, DNNL_MEMORY_ALLOCATE));
		if (reorder(wuser, g->wei[c]))
			goto fail;
	}
	CK(dnnl_memory_create(&g->src_user, &src_user_md, eng, DNNL_MEMORY_NONE));
	CK(dnnl_memory_create(&g->dst, &dst_md, eng, DNNL_MEMORY_NONE));
	if (bf16) {
		CK(dnnl_memory_create(&g->src, &src_md, eng, DNNL_MEMORY_ALLOCATE));
		CK(dnnl_reorder_primitive_desc_create(&rpd, &src_user_md, eng, &src_md, eng, NULL));
		CK(dnnl_primitive_create(&g->src_reorder, rpd));
	}
	dnnl_memory_destroy(wuser);
	dnnl_primitive_desc_destroy(pd);
	if (rpd)
		dnnl_primitive_desc_destroy(rpd);
	*out = g;
	return 0;
fail:
	if (wuser)
		dnnl_memory_destroy(wuser);
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (rpd)
		dnnl_primitive_desc_destroy(rpd);
	gd_destroy(g);
	return -1;
}

int gd_run(gd_mm *g, int c, const float *x, float *y)
{
	CK(dnnl_memory_set_data_handle(g->src_user, (void *)x));
	CK(dnnl_memory_set_data_handle(g->dst, y));
	if (g->bf16) {
		dnnl_exec_arg_t ra[] = {{DNNL_ARG_FROM, g->src_user}, {DNNL_ARG_TO, g->src}};
		CK(dnnl_primitive_execute(g->src_reorder, strm, 2, ra));
	}
	dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, g->bf16 ? g->src : g->src_user},
				  {DNNL_ARG_WEIGHTS, g->wei[c % g->copies]},
				  {DNNL_ARG_DST, g->dst}};
	CK(dnnl_primitive_execute(g->mm, strm, 3, args));
	CK(dnnl_stream_wait(strm));
	return 0;
fail:
	return -1;
}

void gd_destroy(gd_mm *g)
{
	if (!g)
		return;
	if (g->mm)
		dnnl_primitive_destroy(g->mm);
	if (g->src_reorder)
		dnnl_primitive_destroy(g->src_reorder);
	if (g->src_user)
		dnnl_memory_destroy(g->src_user);
	if (g->src)
		dnnl_memory_destroy(g->src);
	for (int c = 0; c < g->copies; c++)
		if (g->wei[c])
			dnnl_memory_destroy(g->wei[c]);
	free(g->wei);
	if (g->dst)
		dnnl_memory_destroy(g->dst);
	free(g);
}
