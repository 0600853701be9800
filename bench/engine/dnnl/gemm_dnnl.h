/*
 * bench/engine/dnnl/gemm_dnnl.h — oneDNN's matmul as one more variant of
 * loom-gemm-bench (built only where Debian's libdnnl-dev is installed;
 * the project itself does not use oneDNN, see README "CPU speed").
 *
 * gd_create prepares y[M,N] = x[M,K] . W^T for W [N,K] (Hugging Face's
 * out x in, float32), with W reordered once into the layout oneDNN picks
 * for that shape, held as float32 (bf16 = 0) or BF16 (bf16 = 1: the
 * activations are rounded to BF16 too, on every call, as oneDNN 2.6 has
 * no float32 x BF16 matmul), in `copies` copies at different addresses
 * (so that a timing loop can read weights that are not in cache). gd_run
 * computes it with copy c. threads: OpenMP's.
 */
#ifndef BENCH_GEMM_DNNL_H
#define BENCH_GEMM_DNNL_H

typedef struct gd_mm gd_mm;

/* 0, or -1 with a line on stderr. */
int gd_create(gd_mm **out, int M, int N, int K, int bf16, const float *w, int copies,
	      int threads);
int gd_run(gd_mm *g, int c, const float *x, float *y);
void gd_destroy(gd_mm *g);
/* "oneDNN 2.6.3" */
const char *gd_version(void);

#endif
