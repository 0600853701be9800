/*
 * worker/forward_cuda_int.h — what worker/forward_cuda.c (set-up and the
 * step) and worker/forward_cuda_load.c (the copy-stream uploads: base
 * weights, adapter slots) share. Private to those two files; built with
 * LOOM_HAVE_CUDA only.
 */
#ifndef WK_FORWARD_CUDA_INT_H
#define WK_FORWARD_CUDA_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "../kernels/cuda/kn_cuda.h"
#include "forward_cuda.h"

enum { G_QKV, G_GU, G_O, G_DOWN, G_N };
static const int g_t0[G_N] = {AD_Q, AD_GATE, AD_O, AD_DOWN};
static const int g_nt[G_N] = {3, 2, 1, 1};

typedef struct dlayer {
	float *attn_norm, *ffn_norm; /* F32 [d] */
	void *wqkv;                  /* BF16 [qdim + 2 kvdim, d] */
	void *wo;                    /* BF16 [d, qdim] */
	void *wgu;                   /* BF16 [2 ffn, d] */
	void *wdown;                 /* BF16 [d, ffn] */
	/* Optional (NULL unless the layer description has them), F32. */
	float *bqkv;                 /* [qdim + 2 kvdim] fused q|k|v bias */
	float *bo;                   /* [d] */
	float *bgu;                  /* [2 ffn] fused gate|up bias */
	float *bdown;                /* [d] */
	float *qk_norm;              /* [2 head_dim]: q_norm | k_norm */
	float *post_attn_norm;       /* [d] (sandwich norms) */
	float *post_ffn_norm;        /* [d] (sandwich norms) */
} dlayer;

/* A piece of the base weights to upload: up to three F32 host arrays, one
 * after the other, into one device allocation, as BF16 (norms: F32). */
typedef struct wpiece {
	void *dst;
	const float *src[3];
	size_t n[3];
	size_t elems;
	bool f32;
} wpiece;

typedef struct aslot {
	const ad_adapter *ad;        /* NULL = free */
	char name[128];
	size_t bytes;
	int first, n_pages;
	int rsum[G_N];               /* largest total rank of a group over layers */
	uint64_t last_use;
	kn_cuda_event *ready;        /* recorded on the copy stream after the load */
	bool pending;                /* loaded since the compute stream last waited */
} aslot;

/* One half of the pinned upload staging. The emulator build of the tests
 * sets a tiny one, so that their adapters cross many half boundaries. */
#ifndef WK_CUDA_STAGE_BYTES
#define WK_CUDA_STAGE_BYTES (4 << 20)
#endif
#define STAGE_BYTES ((size_t)WK_CUDA_STAGE_BYTES)
_Static_assert(WK_CUDA_STAGE_BYTES % 256 == 0 && WK_CUDA_STAGE_BYTES > 0,
	       "the staging half must be a multiple of 256 bytes");

struct wk_cuda_fwd {
	const wk_model *m;
	const wk_kvpool *pool;
	kn_cuda_ctx *ctx;
	void *st;
	kn_cuda_arena *aw, *akv, *aad, *asc;
	kn_cuda_pages *pages;
	int d, qdim, kvdim, ffn, qkvw, vocab, L;
	int max_tokens, max_seqs, n_slots, bt_cap, ws_ctx;
	void *embed, *lm_head;
	float *final_norm;
	double *rope_d;              /* device [head_dim/2]: inv_freq of every position
				      * (a dynamic schedule: of positions < orig_max) */
	double *rope_h;              /* host copy of rope_d */
	double rope_mscale;          /* the schedule's cos/sin factor */
	dlayer *layers;
	kn_cuda_kv kv;
	float *x, *xl, *logits_d, *lv;
	void *xn, *qkv, *att, *gu, *act, *attn_ws, *meta_d;
	size_t lv_bytes, attn_ws_bytes, meta_bytes, lmeta_bytes;
	void *meta_h;                /* pinned, meta_bytes */
	float *logits_h;             /* pinned [max_tokens, vocab] */
	kn_cuda_lora_desc *tab_h[G_N], *tab_d[G_N];
	aslot *slots;
	int32_t *seg_slot;           /* [max_seqs] */
	uint64_t tick;
	void *cst;                   /* the context's copy stream */
	char *stage;                 /* pinned, 2 * STAGE_BYTES */
	kn_cuda_event *stage_ev[2];  /* each half's last copy */
	bool stage_busy[2];          /* a copy from that half was queued */
	int stage_half;              /* the half being filled */
	bool need_wait;              /* this step uses a pending slot */
	wpiece *wp;                  /* [n_wp] the weights upload, in order */
	int n_wp, wp_cur;            /* next piece to send */
	size_t wp_off;               /* elements of wp[wp_cur] already sent */
	kn_cuda_event *w_ev;         /* recorded after the last weights copy */
	bool w_queued, w_ready;      /* all weights queued / known copied */
};

#define BF 2 /* bytes of a BF16 */

static inline size_t up256(size_t n)
{
	return (n + 255) & ~(size_t)255;
}

/* forward_cuda_load.c */

/* Lays out the weights arena and the list of pieces wk_cuda_fwd_load
 * sends into it (nothing is copied here). */
loom_err wk_cuda_plan_model(wk_cuda_fwd *f);
/* Maps each segment of b to an adapter slot (f->seg_slot), loading the
 * adapters not resident; rsum: each group's r_stride for this step (0 =
 * no adapter adapts the group). */
loom_err wk_cuda_map_adapters(wk_cuda_fwd *f, const wk_batch *b, int rsum[G_N]);

#endif
