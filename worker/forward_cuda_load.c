/*
 * worker/forward_cuda_load.c — the CUDA forward's uploads (forward_cuda.h):
 * the base weights, piecewise (wk_cuda_fwd_load), and adapters into the
 * slots of the adapter pool (on first use or wk_cuda_fwd_prefetch).
 *
 * Everything goes through one writer: values are converted to BF16 chunk by
 * chunk (or copied, from an adapter the residency's loader already holds as
 * BF16: ad_adapter_to_bf16) into one half of a pinned staging buffer while
 * the other half's copy runs on the copy stream, each half's reuse waiting for its own copy
 * (an event: the host waits for the DMA, never for compute). An adapter's
 * descriptor rows follow through the staging too (a copy from pageable
 * memory may synchronize with the stream) and a "ready" event is recorded;
 * the first step that uses the slot makes the compute stream wait for that
 * event before its first LoRA kernel (no device-wide sync). Loads happen
 * between steps (a step ends with a stream sync) and never evict a slot of
 * the latest step; the copy stream orders a slot's reloads after its
 * earlier copies. An adapter's slot is identified by its ad_adapter
 * pointer, name and size.
 */
#ifdef LOOM_HAVE_CUDA

#include <stdio.h>
#include <string.h>

#include "../common/alloc.h"
#include "../common/dtype.h"
#include "forward_cuda_int.h"
#include "forward_lora.h"

/* ---- base weights ---- */

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

/* The optional F32 vectors of layer w (the layer description's biases and
 * norms): where each goes and its up-to-three sources. */
typedef struct opt_vec {
	float **dst;
	const float *src[3];
	size_t n[3];
} opt_vec;

static int layer_opts(wk_cuda_fwd *f, const wk_layer *w, dlayer *dl, opt_vec v[7])
{
	size_t d = (size_t)f->d, q = (size_t)f->qdim, kv = (size_t)f->kvdim, ff = (size_t)f->ffn;
	size_t hd = (size_t)f->m->cfg.head_dim;
	const opt_vec all[7] = {
		{&dl->bqkv, {w->bq, w->bk, w->bv}, {q, kv, kv}},
		{&dl->bo, {w->bo}, {d}},
		{&dl->bgu, {w->b_gate, w->b_up}, {ff, ff}},
		{&dl->bdown, {w->b_down}, {d}},
		{&dl->qk_norm, {w->q_norm, w->k_norm}, {hd, hd}},
		{&dl->post_attn_norm, {w->post_attn_norm}, {d}},
		{&dl->post_ffn_norm, {w->post_ffn_norm}, {d}},
	};
	int n = 0;
	for (int i = 0; i < 7; i++)
		if (all[i].src[0])
			v[n++] = all[i];
	return n;
}

loom_err wk_cuda_plan_model(wk_cuda_fwd *f)
{
	const wk_model *m = f->m;
	size_t d = (size_t)f->d, q = (size_t)f->qdim, kv = (size_t)f->kvdim, ff = (size_t)f->ffn;
	/* the optional vectors of a layer: at most 7 of at most 3 x max(qkvw, 2 ffn) floats */
	size_t wide = (size_t)f->qkvw > 2 * ff ? (size_t)f->qkvw : 2 * ff;
	size_t per_layer = up256((size_t)f->qkvw * d * BF) + up256(d * q * BF) +
			   up256(2 * ff * d * BF) + up256(d * ff * BF) + 2 * up256(d * 4) +
			   7 * up256((wide + d + 2 * (size_t)m->cfg.head_dim) * 4);
	size_t total = (size_t)f->L * per_layer + 2 * up256(f->vocab * d * BF) + up256(d * 4) +
		       4096;
	loom_err rc = kn_cuda_arena_create("weights", total, &f->aw);
	if (rc)
		return rc;
	f->wp = loom_calloc(3 + 13 * (size_t)f->L, sizeof *f->wp);
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
				    0)) ||
		    (rc = add_piece(f, &dl->wdown, false, w->w_down, d * ff, NULL, 0, NULL, 0)))
			break;
		opt_vec v[7];
		int n = layer_opts(f, w, dl, v);
		for (int i = 0; i < n && !rc; i++)
			rc = add_piece(f, (void **)v[i].dst, true, v[i].src[0], v[i].n[0], v[i].src[1],
				       v[i].n[1], v[i].src[2], v[i].n[2]);
	}
	return rc;
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

/* The slot holding a (-1: none). */
static int slot_find(const wk_cuda_fwd *f, const ad_adapter *a)
{
	for (int j = 0; a && j < f->n_slots; j++)
		if (slot_is(&f->slots[j], a))
			return j;
	return -1;
}

static void slot_free(wk_cuda_fwd *f, int i)
{
	aslot *s = &f->slots[i];
	if (s->ad && s->n_pages)
		kn_cuda_pages_free(f->pages, s->first, s->n_pages);
	s->ad = NULL;
	s->n_pages = 0;
}

/* The least recently used occupied slot not used in the latest step (-1:
 * none). */
static int slot_lru(const wk_cuda_fwd *f)
{
	int v = -1;
	for (int i = 0; i < f->n_slots; i++) {
		const aslot *s = &f->slots[i];
		if (s->ad && s->last_use != f->tick &&
		    (v < 0 || s->last_use < f->slots[v].last_use))
			v = i;
	}
	return v;
}

/* A free slot, else slot_lru. */
static int slot_victim(const wk_cuda_fwd *f)
{
	for (int i = 0; i < f->n_slots; i++)
		if (!f->slots[i].ad)
			return i;
	return slot_lru(f);
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
		u->rc = loom_fail(LOOM_EINTERNAL, "cuda forward: upload past its destination");
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

/* Appends n values of one of a's matrices: copied as they are from a BF16
 * adapter (the residency's loader converted them), converted from float32. */
static void upl_mod(upl *u, const ad_adapter *a, const float *f32, const uint16_t *b16, size_t n)
{
	if (a->bf16)
		upl_bytes(u, b16, n * BF);
	else
		upl_put(u, f32, n);
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
		int v = slot_lru(f);
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
				upl_mod(&u, a, md->a, md->a16, (size_t)md->rank * a->d_in[g_t0[g] + k]);
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
				upl_mod(&u, a, md->bt, md->bt16,
					(size_t)md->rank * a->d_out[g_t0[g] + k]);
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

/* The slot of a, loaded into a victim slot when a is not resident, marked
 * used now. busy: the LOOM_EBUSY message (%d: the slot count) when every
 * slot holds an adapter of the latest step. */
static loom_err slot_acquire(wk_cuda_fwd *f, const ad_adapter *a, const char *busy, int *out)
{
	int sl = slot_find(f, a);
	if (sl < 0) {
		if ((sl = slot_victim(f)) < 0)
			return loom_fail(LOOM_EBUSY, busy, f->n_slots);
		slot_free(f, sl);
		loom_err rc = slot_load(f, sl, a);
		if (rc)
			return rc;
	}
	f->slots[sl].last_use = f->tick;
	*out = sl;
	return LOOM_OK;
}

loom_err wk_cuda_map_adapters(wk_cuda_fwd *f, const wk_batch *b, int rsum[G_N])
{
	memset(rsum, 0, G_N * sizeof *rsum);
	for (int i = 0; i < b->n_segs; i++) {
		const ad_adapter *a = b->seg_adapter[i];
		int sl = -1;
		if (a) {
			loom_err rc = slot_acquire(f, a, "cuda forward: more than %d adapters in one "
						   "step", &sl);
			if (rc)
				return rc;
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
	int sl = slot_find(f, a);
	loom_err rc = LOOM_OK;
	if (sl < 0) /* a batch's adapters are checked with the batch; this one alone */
		rc = wk_lora_check_adapter(f->m, a, "cuda prefetch");
	return rc ? rc : slot_acquire(f, a, "cuda prefetch: all %d adapter slots hold adapters "
				      "of the latest step", &sl);
}

int wk_cuda_fwd_resident(const wk_cuda_fwd *f, const ad_adapter *a)
{
	return slot_find(f, a) >= 0;
}

loom_err wk_cuda_fwd_sync(wk_cuda_fwd *f)
{
	return kn_cuda_ctx_sync(f->ctx);
}

#endif
