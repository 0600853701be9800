/*
 * worker/forward_cuda.c — the forward pass on the CUDA op table (see
 * forward_cuda.h).
 *
 * A step: pack the batch (tokens, positions, cu_q, KV lengths, block
 * tables, SGMV metadata) into pinned staging, one async copy, then per
 * layer: RMSNorm -> fused q|k|v GEMM -> LoRA q,k,v (one shrink, one expand
 * into the fused row) -> RoPE over q and k heads of the fused row -> KV
 * write -> paged attention (the decode kernel when every sequence brings
 * one token, else the prefill kernel) -> o GEMM added into the F32 residual
 * -> LoRA o -> RMSNorm -> fused gate|up GEMM -> LoRA gate,up -> SiLU*mul ->
 * down GEMM into the residual -> LoRA down; then the rows that need logits
 * are gathered (kn_cuda_embed over the residual as a table), normed, and
 * the LM head writes F32 logits, copied back once. Everything runs on the
 * context's compute stream; the step ends with one stream sync (logits).
 * Adapters are uploaded into contiguous pages of the adapter pool on the
 * context's copy stream, when a batch first uses them or earlier through
 * wk_cuda_fwd_prefetch: converted to BF16 chunk by chunk into one half of
 * a pinned staging buffer while the other half's copy runs, each half's
 * reuse waiting for its own copy (an event: the host waits for the DMA,
 * never for compute). The slot's descriptor rows follow on the same
 * stream and a "ready" event is recorded; the first step that uses the
 * slot makes the compute stream wait for that event (no device-wide sync)
 * before its first LoRA kernel. Safety: loads happen between steps (a step
 * ends with a stream sync) and never evict a slot of the latest step; the
 * copy stream orders a slot's reloads after its earlier copies.
 * An adapter's slot is identified by its ad_adapter pointer, name and size.
 */
#include "forward_cuda.h"

#ifndef LOOM_HAVE_CUDA

loom_err wk_cuda_fwd_create(const wk_model *m, const wk_kvpool *pool,
			    const wk_cuda_fwd_opts *o, wk_cuda_fwd **out)
{
	(void)m, (void)pool, (void)o;
	*out = NULL;
	return loom_fail(LOOM_EUNSUPPORTED, "this build has no CUDA backend (built with "
			 "LOOM_CUDA=OFF or without nvcc)");
}

void wk_cuda_fwd_destroy(wk_cuda_fwd *f)
{
	(void)f;
}

loom_err wk_cuda_forward(wk_cuda_fwd *f, const wk_batch *b, float *logits)
{
	(void)f, (void)b, (void)logits;
	return loom_fail(LOOM_EUNSUPPORTED, "this build has no CUDA backend");
}

loom_err wk_cuda_fwd_load(wk_cuda_fwd *f, size_t budget, int *done)
{
	(void)f, (void)budget;
	*done = 0;
	return loom_fail(LOOM_EUNSUPPORTED, "this build has no CUDA backend");
}

loom_err wk_cuda_fwd_prefetch(wk_cuda_fwd *f, const ad_adapter *a)
{
	(void)f, (void)a;
	return loom_fail(LOOM_EUNSUPPORTED, "this build has no CUDA backend");
}

int wk_cuda_fwd_resident(const wk_cuda_fwd *f, const ad_adapter *a)
{
	(void)f, (void)a;
	return 0;
}

loom_err wk_cuda_fwd_sync(wk_cuda_fwd *f)
{
	(void)f;
	return loom_fail(LOOM_EUNSUPPORTED, "this build has no CUDA backend");
}

#else

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../common/alloc.h"
#include "../common/dtype.h"
#include "../kernels/cuda/kn_cuda.h"
#include "forward_lora.h"

enum { G_QKV, G_GU, G_O, G_DOWN, G_N };
static const int g_t0[G_N] = {AD_Q, AD_GATE, AD_O, AD_DOWN};
static const int g_nt[G_N] = {3, 2, 1, 1};

typedef struct dlayer {
	float *attn_norm, *ffn_norm; /* F32 [d] */
	void *wqkv;                  /* BF16 [qdim + 2 kvdim, d] */
	void *wo;                    /* BF16 [d, qdim] */
	void *wgu;                   /* BF16 [2 ffn, d] */
	void *wdown;                 /* BF16 [d, ffn] */
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

static void *col(void *p, size_t elems)
{
	return (char *)p + elems * BF;
}

/* Group g's input width and slice output widths. */
static void group_dims(const loom_model_config *c, int g, int *d_in, int n_out[3])
{
	for (int s = 0; s < g_nt[g]; s++) {
		int di;
		ad_target_dims(c, g_t0[g] + s, &di, &n_out[s]);
		*d_in = di;
	}
}

/* ---- set-up ---- */

static size_t up256(size_t n)
{
	return (n + 255) & ~(size_t)255;
}

/* Appends a piece of up to three sources (NULL-terminated) to the upload
 * list, allocating its device memory: *dst. */
static loom_err add_piece(wk_cuda_fwd *f, void **dst, bool f32, const float *s0, size_t n0,
			  const float *s1, size_t n1, const float *s2, size_t n2)
{
	wpiece *p = &f->wp[f->n_wp++];
	*p = (wpiece){.src = {s0, s1, s2}, .n = {n0, s1 ? n1 : 0, s2 ? n2 : 0}, .f32 = f32};
	p->elems = p->n[0] + p->n[1] + p->n[2];
	loom_err rc = kn_cuda_arena_alloc(f->aw, p->elems * (f32 ? 4 : BF), &p->dst);
	*dst = p->dst;
	return rc;
}

/* Lays out the weights arena and the list of pieces wk_cuda_fwd_load
 * sends into it (nothing is copied here). */
static loom_err plan_model(wk_cuda_fwd *f)
{
	const wk_model *m = f->m;
	size_t d = (size_t)f->d, q = (size_t)f->qdim, kv = (size_t)f->kvdim, ff = (size_t)f->ffn;
	size_t per_layer = up256((size_t)f->qkvw * d * BF) + up256(d * q * BF) +
			   up256(2 * ff * d * BF) + up256(d * ff * BF) + 2 * up256(d * 4);
	size_t total = (size_t)f->L * per_layer + 2 * up256(f->vocab * d * BF) + up256(d * 4) +
		       4096;
	loom_err rc = kn_cuda_arena_create("weights", total, &f->aw);
	if (rc)
		return rc;
	f->wp = loom_calloc(3 + 6 * (size_t)f->L, sizeof *f->wp);
	if (!f->wp)
		return loom_fail(LOOM_ENOMEM, "cuda forward: out of host memory");
	size_t vd = (size_t)f->vocab * d;
	rc = add_piece(f, &f->embed, false, m->embed, vd, NULL, 0, NULL, 0);
	if (!rc && m->lm_head != m->embed)
		rc = add_piece(f, &f->lm_head, false, m->lm_head, vd, NULL, 0, NULL, 0);
	else
		f->lm_head = f->embed;
	if (!rc)
		rc = add_piece(f, (void **)&f->final_norm, true, m->final_norm, d, NULL, 0, NULL, 0);
	for (int l = 0; l < f->L && !rc; l++) {
		const wk_layer *w = &m->layers[l];
		dlayer *dl = &f->layers[l];
		if ((rc = add_piece(f, (void **)&dl->attn_norm, true, w->attn_norm, d, NULL, 0,
				    NULL, 0)) ||
		    (rc = add_piece(f, (void **)&dl->ffn_norm, true, w->ffn_norm, d, NULL, 0, NULL,
				    0)) ||
		    (rc = add_piece(f, &dl->wqkv, false, w->wq, q * d, w->wk, kv * d, w->wv,
				    kv * d)) ||
		    (rc = add_piece(f, &dl->wo, false, w->wo, d * q, NULL, 0, NULL, 0)) ||
		    (rc = add_piece(f, &dl->wgu, false, w->w_gate, ff * d, w->w_up, ff * d, NULL,
				    0)))
			break;
		rc = add_piece(f, &dl->wdown, false, w->w_down, d * ff, NULL, 0, NULL, 0);
	}
	return rc;
}

/* Offsets in the per-step metadata block (bytes): the SGMV metadata first,
 * then int32 tokens, pos, cu_q, ctx_len, last rows, block tables (last, so
 * a step copies only the prefix it filled). */
typedef struct meta_off {
	size_t tok, pos, cuq, ctx, last, bt;
} meta_off;

static meta_off meta_layout(const wk_cuda_fwd *f)
{
	meta_off o;
	size_t T = (size_t)f->max_tokens, S = (size_t)f->max_seqs;
	o.tok = f->lmeta_bytes;
	o.pos = o.tok + 4 * T;
	o.cuq = o.pos + 4 * T;
	o.ctx = o.cuq + 4 * (S + 1);
	o.last = o.ctx + 4 * S;
	o.bt = up256(o.last + 4 * T);
	return o;
}

static loom_err alloc_scratch(wk_cuda_fwd *f, const wk_cuda_fwd_opts *o)
{
	size_t T = (size_t)f->max_tokens, d = (size_t)f->d;
	f->lv_bytes = kn_cuda_lora_v_bytes(f->max_tokens, KN_CUDA_LORA_MAX_RSTRIDE,
					   KN_CUDA_LORA_MAX_KSPLIT);
	f->ws_ctx = f->kv.n_blocks * f->kv.block_size;
	if (f->ws_ctx > f->m->cfg.max_ctx)
		f->ws_ctx = f->m->cfg.max_ctx;
	for (;;) {
		f->attn_ws_bytes = kn_cuda_attn_decode_ws_bytes(f->max_seqs, f->m->cfg.n_heads,
								 f->m->cfg.head_dim, f->ws_ctx);
		if (f->attn_ws_bytes <= ((size_t)256 << 20) || f->ws_ctx <= 256)
			break;
		f->ws_ctx /= 2; /* longer contexts take the prefill kernel */
	}
	f->lmeta_bytes = up256(kn_cuda_lora_meta_bytes(f->max_tokens, f->max_seqs));
	f->bt_cap = f->kv.n_blocks;
	f->meta_bytes = meta_layout(f).bt + (size_t)4 * f->max_seqs * f->bt_cap;
	struct {
		void **p;
		size_t n;
	} bufs[] = {
		{(void **)&f->x, T * d * 4},        {(void **)&f->xl, T * d * 4},
		{(void **)&f->logits_d, T * f->vocab * 4}, {(void **)&f->lv, f->lv_bytes},
		{&f->xn, T * d * BF},               {&f->qkv, T * f->qkvw * BF},
		{&f->att, T * f->qdim * BF},        {&f->gu, T * 2 * f->ffn * BF},
		{&f->act, T * f->ffn * BF},         {&f->attn_ws, f->attn_ws_bytes},
		{&f->meta_d, f->meta_bytes},
	};
	size_t total = 4096;
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
		total += up256(bufs[i].n);
	loom_err rc = kn_cuda_arena_create("scratch", total, &f->asc);
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0] && !rc; i++)
		rc = kn_cuda_arena_alloc(f->asc, bufs[i].n, bufs[i].p);
	if (!rc)
		rc = kn_cuda_host_alloc(f->meta_bytes, &f->meta_h);
	if (!rc)
		rc = kn_cuda_host_alloc(T * f->vocab * 4, (void **)&f->logits_h);
	if (rc)
		return rc;

	/* adapter pool: descriptor tables, then pages */
	f->n_slots = o->adapter_slots > 0 ? o->adapter_slots : 32;
	size_t mb = o->adapter_mb ? o->adapter_mb : 256;
	size_t tab = (size_t)f->n_slots * f->L * sizeof(kn_cuda_lora_desc);
	size_t page = (size_t)1 << 20;
	int n_pages = (int)(mb * ((size_t)1 << 20) / page);
	rc = kn_cuda_arena_create("adapters", G_N * up256(tab) + (size_t)n_pages * page + 4096,
				  &f->aad);
	for (int g = 0; g < G_N && !rc; g++) {
		f->tab_h[g] = loom_calloc((size_t)f->n_slots * f->L, sizeof(kn_cuda_lora_desc));
		if (!f->tab_h[g])
			return loom_fail(LOOM_ENOMEM, "cuda forward: out of host memory");
		if (!(rc = kn_cuda_arena_alloc(f->aad, tab, (void **)&f->tab_d[g])))
			rc = kn_cuda_memcpy(f->tab_d[g], f->tab_h[g], tab);
	}
	if (!rc)
		rc = kn_cuda_pages_create(f->aad, page, n_pages, &f->pages);
	if (rc)
		return rc;
	f->slots = loom_calloc((size_t)f->n_slots, sizeof *f->slots);
	f->seg_slot = loom_calloc((size_t)f->max_seqs + 1, sizeof *f->seg_slot);
	if (!f->slots || !f->seg_slot)
		return loom_fail(LOOM_ENOMEM, "cuda forward: out of host memory");
	for (int i = 0; i < f->n_slots && !rc; i++)
		rc = kn_cuda_event_create(0, &f->slots[i].ready);
	for (int h = 0; h < 2 && !rc; h++)
		rc = kn_cuda_event_create(0, &f->stage_ev[h]);
	if (!rc)
		rc = kn_cuda_host_alloc(2 * STAGE_BYTES, (void **)&f->stage);
	return rc;
}

loom_err wk_cuda_fwd_create(const wk_model *m, const wk_kvpool *pool,
			    const wk_cuda_fwd_opts *o, wk_cuda_fwd **out)
{
	*out = NULL;
	const loom_model_config *c = &m->cfg;
	if (!o || o->max_tokens < 1 || o->max_seqs < 1)
		return loom_fail(LOOM_EINVAL, "cuda forward: max_tokens and max_seqs must be >= 1");
	if (!wk_kvpool_fits(pool, c))
		return loom_fail(LOOM_EINVAL, "cuda forward: the kv pool was made for another "
				 "model shape than \"%s\"", m->name);
	wk_cuda_fwd *f = loom_calloc(1, sizeof *f);
	if (!f)
		return loom_fail(LOOM_ENOMEM, "cuda forward: out of memory");
	f->m = m;
	f->pool = pool;
	f->d = c->hidden;
	f->qdim = c->n_heads * c->head_dim;
	f->kvdim = c->n_kv_heads * c->head_dim;
	f->ffn = c->ffn;
	f->qkvw = f->qdim + 2 * f->kvdim;
	f->vocab = c->vocab;
	f->L = c->n_layers;
	f->max_tokens = o->max_tokens;
	f->max_seqs = o->max_seqs;
	loom_err rc = LOOM_OK;
	f->layers = loom_calloc((size_t)f->L, sizeof *f->layers);
	if (!f->layers) {
		rc = loom_fail(LOOM_ENOMEM, "cuda forward: out of memory");
		goto out;
	}
	if ((rc = kn_cuda_ctx_create(o->device, 0, &f->ctx)))
		goto out;
	f->st = kn_cuda_ctx_stream(f->ctx);
	f->cst = kn_cuda_ctx_copy_stream(f->ctx);
	if ((rc = plan_model(f)))
		goto out;
	f->kv = (kn_cuda_kv){.dt = KN_CUDA_BF16, .n_blocks = wk_kvpool_n_blocks(pool),
			     .n_layers = f->L, .block_size = wk_kvpool_block_size(pool),
			     .n_kv_heads = c->n_kv_heads, .head_dim = c->head_dim};
	size_t kvb = kn_cuda_kv_bytes(&f->kv);
	if ((rc = kn_cuda_arena_create("kv", 2 * up256(kvb) + 4096, &f->akv)) ||
	    (rc = kn_cuda_arena_alloc(f->akv, kvb, &f->kv.k)) ||
	    (rc = kn_cuda_arena_alloc(f->akv, kvb, &f->kv.v)))
		goto out;
	if ((rc = alloc_scratch(f, o)) || (rc = kn_cuda_event_create(0, &f->w_ev)))
		goto out;
	if (!o->defer_weights) { /* everything now, then wait for the copies */
		int done = 0;
		if (!(rc = wk_cuda_fwd_load(f, SIZE_MAX, &done)) && !done &&
		    !(rc = kn_cuda_event_sync(f->w_ev)))
			rc = wk_cuda_fwd_load(f, SIZE_MAX, &done);
	}
out:
	if (rc) {
		wk_cuda_fwd_destroy(f);
		return rc;
	}
	*out = f;
	return LOOM_OK;
}

void wk_cuda_fwd_destroy(wk_cuda_fwd *f)
{
	if (!f)
		return;
	if (f->ctx)
		kn_cuda_ctx_sync(f->ctx);
	kn_cuda_pages_destroy(f->pages);
	kn_cuda_arena_destroy(f->aad);
	kn_cuda_arena_destroy(f->asc);
	kn_cuda_arena_destroy(f->akv);
	kn_cuda_arena_destroy(f->aw);
	kn_cuda_host_free(f->meta_h);
	kn_cuda_host_free(f->logits_h);
	kn_cuda_host_free(f->stage);
	kn_cuda_event_destroy(f->w_ev);
	loom_free(f->wp);
	for (int h = 0; h < 2; h++)
		kn_cuda_event_destroy(f->stage_ev[h]);
	for (int i = 0; f->slots && i < f->n_slots; i++)
		kn_cuda_event_destroy(f->slots[i].ready);
	for (int g = 0; g < G_N; g++)
		loom_free(f->tab_h[g]);
	loom_free(f->slots);
	loom_free(f->seg_slot);
	loom_free(f->layers);
	kn_cuda_ctx_destroy(f->ctx);
	loom_free(f);
}

/* ---- adapters ---- */

/* Bytes adapter a takes in the pool (each block 256-aligned). */
static size_t adapter_bytes(const wk_cuda_fwd *f, const ad_adapter *a)
{
	size_t n = 0;
	for (int l = 0; l < f->L; l++)
		for (int t = 0; t < AD_N_TARGETS; t++) {
			const ad_module *md = ad_mod(a, l, t);
			if (md->rank > 0)
				n += up256((size_t)md->rank * a->d_in[t] * BF) +
				     up256((size_t)md->rank * a->d_out[t] * BF);
		}
	return n;
}

static bool slot_is(const aslot *s, const ad_adapter *a)
{
	return s->ad == a && s->bytes == a->bytes && !strcmp(s->name, a->name);
}

static void slot_free(wk_cuda_fwd *f, int i)
{
	aslot *s = &f->slots[i];
	if (s->ad && s->n_pages)
		kn_cuda_pages_free(f->pages, s->first, s->n_pages);
	s->ad = NULL;
	s->n_pages = 0;
}

/* A free slot, else the LRU slot not used in the latest step (-1: none). */
static int slot_victim(const wk_cuda_fwd *f)
{
	int v = -1;
	for (int i = 0; i < f->n_slots; i++) {
		const aslot *s = &f->slots[i];
		if (!s->ad)
			return i;
		if (s->last_use == f->tick)
			continue;
		if (v < 0 || s->last_use < f->slots[v].last_use)
			v = i;
	}
	return v;
}

/* ---- the copy-stream upload of one adapter ---- */

typedef struct upl {
	wk_cuda_fwd *f;
	char *dev;      /* destination (the slot's pages) */
	size_t cap;     /* bytes there */
	size_t sent;    /* bytes queued so far (a multiple of STAGE_BYTES) */
	size_t fill;    /* bytes in the current staging half */
	loom_err rc;
} upl;

static char *stage_half(const upl *u)
{
	return u->f->stage + (size_t)u->f->stage_half * STAGE_BYTES;
}

/* Waits until the current staging half's previous copy is done. */
static void stage_claim(upl *u)
{
	wk_cuda_fwd *f = u->f;
	if (!u->rc && f->stage_busy[f->stage_half]) {
		u->rc = kn_cuda_event_sync(f->stage_ev[f->stage_half]);
		f->stage_busy[f->stage_half] = false;
	}
}

/* Queues the current half's bytes on the copy stream; switches halves. */
static void upl_flush(upl *u)
{
	wk_cuda_fwd *f = u->f;
	if (u->rc || u->fill == 0)
		return;
	if ((u->rc = kn_cuda_memcpy_async(u->dev + u->sent, stage_half(u), u->fill, f->cst)) ||
	    (u->rc = kn_cuda_event_record(f->stage_ev[f->stage_half], f->cst)))
		return;
	f->stage_busy[f->stage_half] = true;
	u->sent += u->fill;
	u->fill = 0;
	f->stage_half ^= 1;
	stage_claim(u);
}

static size_t upl_off(const upl *u)
{
	return u->sent + u->fill;
}

/* Appends n F32 values as BF16. */
static void upl_put(upl *u, const float *src, size_t n)
{
	if (!u->rc && upl_off(u) + n * BF > u->cap)
		u->rc = loom_fail(LOOM_EINTERNAL, "cuda forward: adapter layout overflow");
	while (n > 0 && !u->rc) {
		size_t k = (STAGE_BYTES - u->fill) / BF;
		if (k > n)
			k = n;
		uint16_t *dst = (uint16_t *)(stage_half(u) + u->fill);
		for (size_t j = 0; j < k; j++)
			dst[j] = loom_f32_to_bf16(src[j]);
		u->fill += k * BF, src += k, n -= k;
		if (u->fill == STAGE_BYTES)
			upl_flush(u);
	}
}

/* Zero bytes up to the next 256-byte boundary (it fits the half: halves
 * are multiples of 256 bytes and sent is a multiple of the half). */
static void upl_align(upl *u)
{
	size_t pad = up256(upl_off(u)) - upl_off(u);
	if (!u->rc && pad) {
		memset(stage_half(u) + u->fill, 0, pad);
		u->fill += pad;
		if (u->fill == STAGE_BYTES)
			upl_flush(u);
	}
}

/* Sends what is staged and continues at another destination. */
static void upl_retarget(upl *u, void *dev, size_t cap)
{
	upl_flush(u);
	u->dev = dev;
	u->cap = cap;
	u->sent = 0;
}

/* Appends n raw bytes. */
static void upl_bytes(upl *u, const void *src, size_t n)
{
	if (!u->rc && upl_off(u) + n > u->cap)
		u->rc = loom_fail(LOOM_EINTERNAL, "cuda forward: adapter table overflow");
	while (n > 0 && !u->rc) {
		size_t k = STAGE_BYTES - u->fill;
		if (k > n)
			k = n;
		memcpy(stage_half(u) + u->fill, src, k);
		u->fill += k, src = (const char *)src + k, n -= k;
		if (u->fill == STAGE_BYTES)
			upl_flush(u);
	}
}

loom_err wk_cuda_fwd_load(wk_cuda_fwd *f, size_t budget, int *done)
{
	*done = 0;
	if (f->w_ready) {
		*done = 1;
		return LOOM_OK;
	}
	loom_err rc;
	if (!f->w_queued) {
		upl u = {.f = f};
		stage_claim(&u);
		while (f->wp_cur < f->n_wp && budget > 0 && !u.rc) {
			const wpiece *p = &f->wp[f->wp_cur];
			size_t es = p->f32 ? 4 : BF, e = f->wp_off;
			upl_retarget(&u, (char *)p->dst + e * es, (p->elems - e) * es);
			for (int k = 0; k < 3 && budget >= es && !u.rc; k++) {
				if (e >= p->n[k]) { /* this source was sent before */
					e -= p->n[k];
					continue;
				}
				size_t take = p->n[k] - e;
				if (take > budget / es)
					take = budget / es;
				if (p->f32)
					upl_bytes(&u, p->src[k] + e, take * 4);
				else
					upl_put(&u, p->src[k] + e, take);
				f->wp_off += take;
				budget -= take * es;
				e = 0;
			}
			if (f->wp_off == p->elems) {
				f->wp_cur++;
				f->wp_off = 0;
			} else if (budget < es) {
				budget = 0;
			}
		}
		upl_flush(&u);
		if (u.rc)
			return u.rc;
		if (f->wp_cur < f->n_wp)
			return LOOM_OK;
		if ((rc = kn_cuda_event_record(f->w_ev, f->cst)))
			return rc;
		f->w_queued = true;
	}
	int q = 0;
	if ((rc = kn_cuda_event_query(f->w_ev, &q)))
		return rc;
	f->w_ready = q != 0;
	*done = q != 0;
	return LOOM_OK;
}

/* Uploads a into slot i on the copy stream: weights to pages, descriptors
 * to the tables (through the pinned staging too: a copy from pageable
 * memory may synchronize with the stream), then the slot's ready event. */
static loom_err slot_load(wk_cuda_fwd *f, int i, const ad_adapter *a)
{
	aslot *s = &f->slots[i];
	size_t bytes = adapter_bytes(f, a), page = kn_cuda_pages_page_bytes(f->pages);
	int n = (int)((bytes + page - 1) / page);
	void *dev = NULL;
	loom_err rc = LOOM_OK;
	if (n < 1)
		n = 1;
	while ((rc = kn_cuda_pages_alloc(f->pages, n, &s->first, &dev)) == LOOM_EBUSY) {
		int v = -1;
		for (int j = 0; j < f->n_slots; j++)
			if (f->slots[j].ad && f->slots[j].last_use != f->tick &&
			    (v < 0 || f->slots[j].last_use < f->slots[v].last_use))
				v = j;
		if (v < 0)
			return loom_fail(LOOM_EBUSY, "cuda forward: adapter \"%s\" (%zu bytes) does "
					 "not fit the adapter pool beside this step's adapters",
					 a->name, bytes);
		slot_free(f, v);
	}
	if (rc)
		return rc;
	s->n_pages = n;
	upl u = {.f = f, .dev = dev, .cap = (size_t)n * page};
	stage_claim(&u);
	memset(s->rsum, 0, sizeof s->rsum);
	for (int g = 0; g < G_N; g++)
		for (int l = 0; l < f->L; l++) {
			kn_cuda_lora_desc *dsc = &f->tab_h[g][(size_t)i * f->L + l];
			memset(dsc, 0, sizeof *dsc);
			int rs = 0;
			for (int k = 0; k < g_nt[g]; k++) { /* packed A rows of the group */
				const ad_module *md = ad_mod(a, l, g_t0[g] + k);
				if (md->rank <= 0)
					continue;
				if (!dsc->a)
					dsc->a = (char *)dev + upl_off(&u);
				upl_put(&u, md->a, (size_t)md->rank * a->d_in[g_t0[g] + k]);
				rs += md->rank;
			}
			upl_align(&u);
			for (int k = 0; k < g_nt[g]; k++) {
				const ad_module *md = ad_mod(a, l, g_t0[g] + k);
				if (md->rank <= 0)
					continue;
				dsc->bt[k] = (char *)dev + upl_off(&u);
				dsc->rank[k] = md->rank;
				dsc->scale[k] = md->scale;
				upl_put(&u, md->bt, (size_t)md->rank * a->d_out[g_t0[g] + k]);
				upl_align(&u);
			}
			if (rs > s->rsum[g])
				s->rsum[g] = rs;
		}
	size_t tb = (size_t)f->L * sizeof(kn_cuda_lora_desc);
	for (int g = 0; g < G_N; g++) {
		upl_retarget(&u, f->tab_d[g] + (size_t)i * f->L, tb);
		upl_bytes(&u, f->tab_h[g] + (size_t)i * f->L, tb);
	}
	upl_flush(&u);
	rc = u.rc;
	if (!rc)
		rc = kn_cuda_event_record(s->ready, f->cst);
	if (rc) {
		kn_cuda_pages_free(f->pages, s->first, n);
		s->n_pages = 0;
		return rc;
	}
	s->ad = a;
	s->bytes = a->bytes;
	s->pending = true;
	snprintf(s->name, sizeof s->name, "%s", a->name);
	return LOOM_OK;
}

/* Maps each segment's adapter to a slot (loading it when new); rsum: the
 * r_stride of each group for this step (0 = no adapter adapts the group). */
static loom_err map_adapters(wk_cuda_fwd *f, const wk_batch *b, int rsum[G_N])
{
	memset(rsum, 0, G_N * sizeof *rsum);
	for (int i = 0; i < b->n_segs; i++) {
		const ad_adapter *a = b->seg_adapter[i];
		int sl = -1;
		if (a) {
			for (int j = 0; j < f->n_slots && sl < 0; j++)
				if (slot_is(&f->slots[j], a))
					sl = j;
			if (sl < 0) {
				sl = slot_victim(f);
				if (sl < 0)
					return loom_fail(LOOM_EBUSY, "cuda forward: more than %d adapters "
							 "in one step", f->n_slots);
				slot_free(f, sl);
				loom_err rc = slot_load(f, sl, a);
				if (rc)
					return rc;
			}
			f->slots[sl].last_use = f->tick;
			f->need_wait |= f->slots[sl].pending;
			for (int g = 0; g < G_N; g++)
				if (f->slots[sl].rsum[g] > rsum[g])
					rsum[g] = f->slots[sl].rsum[g];
		}
		f->seg_slot[i] = sl;
	}
	for (int g = 0; g < G_N; g++)
		if (rsum[g] > KN_CUDA_LORA_MAX_RSTRIDE)
			return loom_fail(LOOM_EUNSUPPORTED, "cuda forward: total LoRA rank %d of a "
					 "module group exceeds %d", rsum[g],
					 KN_CUDA_LORA_MAX_RSTRIDE);
	return LOOM_OK;
}

loom_err wk_cuda_fwd_prefetch(wk_cuda_fwd *f, const ad_adapter *a)
{
	if (!a)
		return LOOM_OK;
	for (int j = 0; j < f->n_slots; j++)
		if (slot_is(&f->slots[j], a)) {
			f->slots[j].last_use = f->tick;
			return LOOM_OK;
		}
	loom_err rc = wk_lora_check_adapter(f->m, a, "cuda prefetch");
	if (rc)
		return rc;
	int sl = slot_victim(f);
	if (sl < 0)
		return loom_fail(LOOM_EBUSY, "cuda prefetch: all %d adapter slots hold adapters of "
				 "the latest step", f->n_slots);
	slot_free(f, sl);
	if ((rc = slot_load(f, sl, a)))
		return rc;
	f->slots[sl].last_use = f->tick;
	return LOOM_OK;
}

int wk_cuda_fwd_resident(const wk_cuda_fwd *f, const ad_adapter *a)
{
	for (int j = 0; a && j < f->n_slots; j++)
		if (slot_is(&f->slots[j], a))
			return 1;
	return 0;
}

loom_err wk_cuda_fwd_sync(wk_cuda_fwd *f)
{
	return kn_cuda_ctx_sync(f->ctx);
}

/* ---- the step ---- */

static loom_err check_batch(const wk_cuda_fwd *f, const wk_batch *b, int *max_ctx, int *max_q)
{
	const wk_model *m = f->m;
	if (b->n_seqs < 0 || (b->n_seqs > 0 && (!b->seq_start || !b->kv)))
		return loom_fail(LOOM_EINVAL, "wk_forward: bad batch (n_seqs %d)", b->n_seqs);
	if (b->n_seqs > 0 && b->seq_start[0] != 0)
		return loom_fail(LOOM_EINVAL, "wk_forward: seq_start[0] is %d, not 0",
				 b->seq_start[0]);
	*max_ctx = *max_q = 0;
	for (int s = 0; s < b->n_seqs; s++) {
		int n = b->seq_start[s + 1] - b->seq_start[s];
		const wk_kv *kv = b->kv[s];
		if (n <= 0)
			return loom_fail(LOOM_EINVAL, "wk_forward: sequence %d has no tokens", s);
		if (!kv || kv->pool != f->pool)
			return loom_fail(LOOM_EINVAL, "wk_forward: sequence %d's kv cache is not on "
					 "the pool the cuda forward mirrors", s);
		if (kv->len < 0 || n > kv->capacity - kv->len)
			return loom_fail(LOOM_ERANGE, "wk_forward: sequence %d: %d tokens after %d "
					 "overflow its kv capacity %d", s, n, kv->len, kv->capacity);
		for (int r = 0; r < s; r++)
			if (b->kv[r] == kv)
				return loom_fail(LOOM_EINVAL, "wk_forward: sequences %d and %d share "
						 "one kv cache", r, s);
		if (kv->len + n > *max_ctx)
			*max_ctx = kv->len + n;
		if (n > *max_q)
			*max_q = n;
	}
	int T = b->n_seqs > 0 ? b->seq_start[b->n_seqs] : 0;
	if (T > f->max_tokens || b->n_seqs > f->max_seqs)
		return loom_fail(LOOM_ERANGE, "wk_forward: %d tokens of %d sequences exceed the "
				 "cuda forward's %d tokens / %d sequences", T, b->n_seqs,
				 f->max_tokens, f->max_seqs);
	if (T > 0 && !b->tokens)
		return loom_fail(LOOM_EINVAL, "wk_forward: %d tokens but no token array", T);
	for (int t = 0; t < T; t++)
		if (b->tokens[t] < 0 || b->tokens[t] >= m->cfg.vocab)
			return loom_fail(LOOM_EINVAL, "wk_forward: token %d at row %d is outside the "
					 "vocabulary [0, %d)", b->tokens[t], t, m->cfg.vocab);
	return wk_lora_check(m, b);
}

typedef struct step {
	int T, R;
	kn_cuda_attn_batch ab;
	bool decode;
	const void *lmeta;
	int n_chunks;
	int rsum[G_N];
} step;

static loom_err lora(wk_cuda_fwd *f, const step *s, int g, int l, const void *x, int ldx,
		     void *y, kn_cuda_dtype ydt, int ldy)
{
	if (!s->lmeta || s->rsum[g] == 0 || s->n_chunks == 0)
		return LOOM_OK;
	if (f->need_wait) { /* adapters this step loaded or prefetched */
		for (int i = 0; i < f->n_slots; i++) {
			aslot *sl = &f->slots[i];
			if (sl->ad && sl->pending && sl->last_use == f->tick) {
				loom_err rc = kn_cuda_stream_wait(f->st, sl->ready);
				if (rc)
					return rc;
				sl->pending = false;
			}
		}
		f->need_wait = false;
	}
	kn_cuda_lora_group grp = {.table = f->tab_d[g], .n_slots = f->n_slots, .n_layers = f->L,
				  .n_slices = g_nt[g], .dt = KN_CUDA_BF16};
	group_dims(&f->m->cfg, g, &grp.d_in, grp.n_out);
	int ks = kn_cuda_lora_ksplit(grp.d_in, s->n_chunks, kn_cuda_ctx_sm_count(f->ctx));
	if (kn_cuda_lora_v_bytes(s->T, s->rsum[g], ks) > f->lv_bytes)
		return loom_fail(LOOM_ERANGE, "cuda forward: LoRA v buffer too small");
	loom_err rc = kn_cuda_lora_shrink(f->lv, s->T, s->rsum[g], ks, x, ldx, &grp, l, s->lmeta,
					  s->n_chunks, f->st);
	return rc ? rc : kn_cuda_lora_expand(y, ydt, ldy, f->lv, s->T, s->rsum[g], ks, &grp, l,
					     s->lmeta, s->n_chunks, f->st);
}

static loom_err layer(wk_cuda_fwd *f, const step *s, int l, const int32_t *pos)
{
	const loom_model_config *c = &f->m->cfg;
	const dlayer *w = &f->layers[l];
	int T = s->T, d = f->d;
	float scale = (float)(1.0 / sqrt((double)c->head_dim));
	const kn_cuda_dtype B = KN_CUDA_BF16, F = KN_CUDA_F32;
	loom_err rc;
	if ((rc = kn_cuda_rmsnorm(f->xn, B, d, f->x, F, d, w->attn_norm, F, T, d, c->rms_eps,
				  f->st)) ||
	    (rc = kn_cuda_gemm(f->ctx, f->qkv, B, f->qkvw, f->xn, B, d, w->wqkv, B, d, T, f->qkvw,
			       d, 1.0f, 0.0f, f->st)) ||
	    (rc = lora(f, s, G_QKV, l, f->xn, d, f->qkv, B, f->qkvw)) ||
	    (rc = kn_cuda_rope(f->qkv, B, f->qkvw, T, c->n_heads + c->n_kv_heads, c->head_dim, pos,
			       c->rope_theta, f->st)) ||
	    (rc = kn_cuda_kv_write(&f->kv, l, &s->ab, col(f->qkv, f->qdim),
				   col(f->qkv, (size_t)f->qdim + f->kvdim), B, f->qkvw, f->st)))
		return rc;
	if (s->decode)
		rc = kn_cuda_attn_decode(f->att, B, f->qdim, f->qkv, B, f->qkvw, &f->kv, l, &s->ab,
					 c->n_heads, scale, f->attn_ws, f->attn_ws_bytes, f->st);
	else
		rc = kn_cuda_attn_prefill(f->att, B, f->qdim, f->qkv, B, f->qkvw, &f->kv, l, &s->ab,
					  c->n_heads, scale, f->st);
	if (rc ||
	    (rc = kn_cuda_gemm(f->ctx, f->x, F, d, f->att, B, f->qdim, w->wo, B, f->qdim, T, d,
			       f->qdim, 1.0f, 1.0f, f->st)) ||
	    (rc = lora(f, s, G_O, l, f->att, f->qdim, f->x, F, d)) ||
	    (rc = kn_cuda_rmsnorm(f->xn, B, d, f->x, F, d, w->ffn_norm, F, T, d, c->rms_eps,
				  f->st)) ||
	    (rc = kn_cuda_gemm(f->ctx, f->gu, B, 2 * f->ffn, f->xn, B, d, w->wgu, B, d, T,
			       2 * f->ffn, d, 1.0f, 0.0f, f->st)) ||
	    (rc = lora(f, s, G_GU, l, f->xn, d, f->gu, B, 2 * f->ffn)) ||
	    (rc = kn_cuda_silu_mul(f->act, B, f->ffn, f->gu, col(f->gu, f->ffn), B, 2 * f->ffn, T,
				   f->ffn, f->st)) ||
	    (rc = kn_cuda_gemm(f->ctx, f->x, F, d, f->act, B, f->ffn, w->wdown, B, f->ffn, T, d,
			       f->ffn, 1.0f, 1.0f, f->st)))
		return rc;
	return lora(f, s, G_DOWN, l, f->act, f->ffn, f->x, F, d);
}

loom_err wk_cuda_forward(wk_cuda_fwd *f, const wk_batch *b, float *logits)
{
	int max_ctx = 0, max_q = 0;
	if (!f->w_ready)
		return loom_fail(LOOM_EBUSY, "cuda forward: the weights of \"%s\" are still "
				 "uploading (wk_cuda_fwd_load)", f->m->name);
	loom_err rc = check_batch(f, b, &max_ctx, &max_q);
	if (rc || b->n_seqs == 0)
		return rc;
	const loom_model_config *c = &f->m->cfg;
	step s = {.T = b->seq_start[b->n_seqs]};
	s.R = b->all_logits ? s.T : b->n_seqs;
	f->tick++;
	f->need_wait = false;

	/* pack the step's metadata */
	meta_off o = meta_layout(f);
	char *h = f->meta_h, *dv = f->meta_d;
	int32_t *tok = (int32_t *)(h + o.tok), *pos = (int32_t *)(h + o.pos);
	int32_t *cuq = (int32_t *)(h + o.cuq), *ctx = (int32_t *)(h + o.ctx);
	int32_t *last = (int32_t *)(h + o.last), *bt = (int32_t *)(h + o.bt);
	int bts = 1;
	for (int q = 0; q < b->n_seqs; q++)
		if (b->kv[q]->n_blocks > bts)
			bts = b->kv[q]->n_blocks;
	memcpy(tok, b->tokens, (size_t)s.T * sizeof *tok);
	for (int q = 0; q < b->n_seqs; q++) {
		int t0 = b->seq_start[q], n = b->seq_start[q + 1] - t0;
		const wk_kv *kv = b->kv[q];
		for (int t = 0; t < n; t++)
			pos[t0 + t] = kv->len + t;
		cuq[q] = t0;
		ctx[q] = kv->len + n;
		if (!b->all_logits)
			last[q] = t0 + n - 1;
		memcpy(bt + (size_t)q * bts, kv->blocks, (size_t)kv->n_blocks * sizeof *bt);
		for (int j = kv->n_blocks; j < bts; j++)
			bt[(size_t)q * bts + j] = -1;
	}
	cuq[b->n_seqs] = s.T;
	if (b->all_logits)
		for (int t = 0; t < s.T; t++)
			last[t] = t;
	if (b->n_segs > 0) {
		if ((rc = map_adapters(f, b, s.rsum)) ||
		    (rc = kn_cuda_lora_meta_pack(h, f->lmeta_bytes, b->seg_start, f->seg_slot,
						 b->n_segs, &s.n_chunks)))
			return rc;
		s.lmeta = dv;
	}
	size_t used = o.bt + (size_t)4 * b->n_seqs * bts;
	if ((rc = kn_cuda_memcpy_async(dv, h, used, f->st)))
		return rc;
	s.ab = (kn_cuda_attn_batch){.n_seqs = b->n_seqs, .n_tokens = s.T, .max_q_len = max_q,
				    .max_ctx_len = max_ctx, .cu_q = (const int32_t *)(dv + o.cuq),
				    .ctx_len = (const int32_t *)(dv + o.ctx),
				    .block_tables = (const int32_t *)(dv + o.bt), .bt_stride = bts};
	s.decode = max_q == 1 && max_ctx <= f->ws_ctx;

	int d = f->d;
	const kn_cuda_dtype B = KN_CUDA_BF16, F = KN_CUDA_F32;
	rc = kn_cuda_embed(f->x, F, d, f->embed, B, f->vocab, (const int32_t *)(dv + o.tok), s.T,
			   d, f->st);
	for (int l = 0; l < f->L && !rc; l++)
		rc = layer(f, &s, l, (const int32_t *)(dv + o.pos));
	/* logits rows: gather (the residual as an embedding table), norm, head */
	if (!rc)
		rc = kn_cuda_embed(f->xl, F, d, f->x, F, s.T, (const int32_t *)(dv + o.last), s.R, d,
				   f->st);
	if (!rc)
		rc = kn_cuda_rmsnorm(f->xn, B, d, f->xl, F, d, f->final_norm, F, s.R, d, c->rms_eps,
				     f->st);
	if (!rc)
		rc = kn_cuda_gemm(f->ctx, f->logits_d, F, f->vocab, f->xn, B, d, f->lm_head, B, d,
				  s.R, f->vocab, d, 1.0f, 0.0f, f->st);
	size_t lb = (size_t)s.R * f->vocab * sizeof(float);
	if (!rc)
		rc = kn_cuda_memcpy_async(f->logits_h, f->logits_d, lb, f->st);
	loom_err rs = kn_cuda_stream_sync(f->st); /* also frees the staging for the next step */
	if (!rc)
		rc = rs;
	if (rc)
		return rc;
	memcpy(logits, f->logits_h, lb);
	for (int q = 0; q < b->n_seqs; q++)
		b->kv[q]->len += b->seq_start[q + 1] - b->seq_start[q];
	return LOOM_OK;
}

#endif
