/*
 * adapters/ad_blob.c — the adapter blob: an ad_adapter as bytes (what the
 * store keeps, content addressed by its sha256) and back.
 *
 * Layout (all integers little-endian; floats IEEE-754 binary32 LE):
 *
 *   0   magic "LOOMADP1"              8 bytes
 *   8   u32 version (1)
 *  12   u32 n_layers
 *  16   u32 d_in[7]                   in ad_target order
 *  44   u32 d_out[7]
 *  72   u32 base_rank                 config "r"
 *  76   f32 base_alpha                config "lora_alpha"
 *  80   u32 use_rslora                0 or 1
 *  84   u32 targets                   bit t = target t adapted somewhere
 *  88   u32 max_rank
 *  92   u32 reserved (0)
 *  96   u64 table_off                 = 128
 * 104   u64 data_off                  64-byte aligned, after the table
 * 112   u64 data_bytes
 * 120   u64 total_bytes               = data_off + data_bytes = blob length
 * 128   module table: n_layers * 7 entries of 24 bytes, index l*7 + t:
 *         u32 rank (0 = not adapted), f32 scale, u64 a_off, u64 bt_off
 *         (byte offsets from the blob start; 0 when rank is 0)
 * data_off: the arena exactly as ad_adapter_load lays it out (per layer
 *   A_q A_k A_v | A_gate A_up | A_o | A_down | Bt_q .. Bt_down, "|" = a
 *   64-byte aligned block start; alignment gaps are zero bytes).
 *
 * Serializing re-lays the weights out with that rule whatever memory they
 * came from, so equal adapters give equal bytes (and equal hashes), and a
 * blob rebuilt here keeps the packed-A adjacency forward_lora.c relies on.
 * Parsing trusts nothing: every size and offset is checked against the
 * blob length with 64-bit arithmetic before anything is read through it.
 */
#include "adapter.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"

#define BLOB_MAGIC "LOOMADP1"
#define BLOB_VERSION 1u
#define HDR_BYTES 128u
#define ENTRY_BYTES 24u
#define ALIGN 64u
#define MAX_RANK (1u << 16)  /* far above any LoRA; keeps size math small */
#define MAX_LAYERS (1u << 16)

/* ---- little-endian helpers ---- */

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_f32(uint8_t *p, float f)
{
	uint32_t v;
	memcpy(&v, &f, 4);
	put_u32(p, v);
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static float get_f32(const uint8_t *p)
{
	uint32_t v = get_u32(p);
	float f;
	memcpy(&f, &v, 4);
	return f;
}

static uint64_t align_up(uint64_t n)
{
	return (n + ALIGN - 1) / ALIGN * ALIGN;
}

/* Arena order of the A blocks (as ad_load.c); a new aligned block starts
 * before each entry whose flag is set. */
static const struct {
	int t, new_block;
} a_order[AD_N_TARGETS] = {
	{ AD_Q, 1 }, { AD_K, 0 }, { AD_V, 0 }, { AD_GATE, 1 },
	{ AD_UP, 0 }, { AD_O, 1 }, { AD_DOWN, 1 },
};

/* ------------------------------------------------------------------ */
/* serialize                                                           */
/* ------------------------------------------------------------------ */

/* Byte offsets (from the arena start) of every module's A and Bt, the
 * layout ad_adapter_load uses; returns the arena size. */
static uint64_t place(const ad_adapter *a, uint64_t *a_off, uint64_t *bt_off)
{
	uint64_t off = 0;

	for (int l = 0; l < a->n_layers; l++) {
		const ad_module *row = &a->mods[(size_t)l * AD_N_TARGETS];
		for (int k = 0; k < AD_N_TARGETS; k++) {
			int t = a_order[k].t;
			if (a_order[k].new_block)
				off = align_up(off);
			if (row[t].rank <= 0)
				continue;
			a_off[(size_t)l * AD_N_TARGETS + t] = off;
			off += (uint64_t)row[t].rank * (uint64_t)a->d_in[t] * sizeof(float);
		}
		for (int t = 0; t < AD_N_TARGETS; t++) {
			if (row[t].rank <= 0)
				continue;
			off = align_up(off);
			bt_off[(size_t)l * AD_N_TARGETS + t] = off;
			off += (uint64_t)row[t].rank * (uint64_t)a->d_out[t] * sizeof(float);
		}
	}
	return off;
}

loom_err ad_adapter_serialize(const ad_adapter *a, void **buf, size_t *len)
{
	size_t n_mods;
	uint64_t *a_off = NULL, *bt_off = NULL, data_off, data_bytes, total;
	uint8_t *b = NULL, *e;
	loom_err rc = LOOM_OK;

	*buf = NULL;
	*len = 0;
	if (!a || !a->mods || a->n_layers <= 0 || (uint32_t)a->n_layers > MAX_LAYERS)
		return loom_fail(LOOM_EINVAL, "ad_adapter_serialize: no adapter or a bad layer count");
	n_mods = (size_t)a->n_layers * AD_N_TARGETS;
	a_off = loom_calloc(n_mods, sizeof *a_off);
	bt_off = loom_calloc(n_mods, sizeof *bt_off);
	if (!a_off || !bt_off) {
		rc = loom_fail(LOOM_ENOMEM, "adapter %s: out of memory serializing it", a->name);
		goto out;
	}
	for (size_t i = 0; i < n_mods; i++) {
		const ad_module *m = &a->mods[i];
		if (m->rank < 0 || (uint32_t)m->rank > MAX_RANK || (m->rank > 0 && (!m->a || !m->bt))) {
			rc = loom_fail(LOOM_EINVAL, "adapter %s: module %zu has rank %d and %s weights",
				       a->name, i, m->rank, m->a && m->bt ? "its" : "no");
			goto out;
		}
	}
	data_off = align_up(HDR_BYTES + (uint64_t)n_mods * ENTRY_BYTES);
	data_bytes = place(a, a_off, bt_off);
	total = data_off + data_bytes;
	if (total > SIZE_MAX - ALIGN) {
		rc = loom_fail(LOOM_ENOMEM, "adapter %s: %llu bytes do not fit in memory", a->name,
			       (unsigned long long)total);
		goto out;
	}
	b = loom_calloc(1, (size_t)total);
	if (!b) {
		rc = loom_fail(LOOM_ENOMEM, "adapter %s: out of memory for a %llu-byte blob", a->name,
			       (unsigned long long)total);
		goto out;
	}
	memcpy(b, BLOB_MAGIC, 8);
	put_u32(b + 8, BLOB_VERSION);
	put_u32(b + 12, (uint32_t)a->n_layers);
	for (int t = 0; t < AD_N_TARGETS; t++) {
		put_u32(b + 16 + 4 * t, (uint32_t)a->d_in[t]);
		put_u32(b + 44 + 4 * t, (uint32_t)a->d_out[t]);
	}
	put_u32(b + 72, (uint32_t)a->base_rank);
	put_f32(b + 76, a->base_alpha);
	put_u32(b + 80, a->use_rslora ? 1u : 0u);
	put_u32(b + 84, a->targets);
	put_u32(b + 88, (uint32_t)a->max_rank);
	put_u32(b + 92, 0);
	put_u64(b + 96, HDR_BYTES);
	put_u64(b + 104, data_off);
	put_u64(b + 112, data_bytes);
	put_u64(b + 120, total);
	for (size_t i = 0; i < n_mods; i++) {
		const ad_module *m = &a->mods[i];
		int t = (int)(i % AD_N_TARGETS);
		e = b + HDR_BYTES + i * ENTRY_BYTES;
		put_u32(e, (uint32_t)m->rank);
		put_f32(e + 4, m->rank > 0 ? m->scale : 0.0f);
		if (m->rank <= 0)
			continue;
		put_u64(e + 8, data_off + a_off[i]);
		put_u64(e + 16, data_off + bt_off[i]);
		memcpy(b + data_off + a_off[i], m->a,
		       (size_t)m->rank * (size_t)a->d_in[t] * sizeof(float));
		memcpy(b + data_off + bt_off[i], m->bt,
		       (size_t)m->rank * (size_t)a->d_out[t] * sizeof(float));
	}
	*buf = b;
	*len = (size_t)total;
	b = NULL;
out:
	loom_free(b);
	loom_free(a_off);
	loom_free(bt_off);
	return rc;
}

/* ------------------------------------------------------------------ */
/* from_blob                                                           */
/* ------------------------------------------------------------------ */

/* Checks the fixed header against len and base. */
static loom_err check_header(const uint8_t *b, size_t len, const char *name,
			     const loom_model_config *base, uint64_t *data_off, uint64_t *data_bytes)
{
	uint32_t n_layers, version;
	uint64_t table_off, table_bytes, total;

	if (len < HDR_BYTES)
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: %zu bytes, shorter than the %u-byte "
				 "header", name, len, HDR_BYTES);
	if (memcmp(b, BLOB_MAGIC, 8) != 0)
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: bad magic (not a loom adapter blob)",
				 name);
	if ((version = get_u32(b + 8)) != BLOB_VERSION)
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: version %u, this build reads version "
				 "%u", name, version, BLOB_VERSION);
	n_layers = get_u32(b + 12);
	if (n_layers != (uint32_t)base->n_layers)
		return loom_fail(LOOM_EINVAL, "adapter blob %s: n_layers %u, the base model has %d",
				 name, n_layers, base->n_layers);
	for (int t = 0; t < AD_N_TARGETS; t++) {
		int d_in, d_out;
		ad_target_dims(base, t, &d_in, &d_out);
		if (get_u32(b + 16 + 4 * t) != (uint32_t)d_in ||
		    get_u32(b + 44 + 4 * t) != (uint32_t)d_out)
			return loom_fail(LOOM_EINVAL, "adapter blob %s: %s maps %u -> %u, the base "
					 "model's maps %d -> %d", name, ad_target_name(t),
					 get_u32(b + 16 + 4 * t), get_u32(b + 44 + 4 * t), d_in,
					 d_out);
	}
	if (!isfinite(get_f32(b + 76)))
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: base_alpha is not finite", name);
	if (get_u32(b + 80) > 1)
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: use_rslora is %u (0 or 1)", name,
				 get_u32(b + 80));
	if (get_u32(b + 84) >> AD_N_TARGETS)
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: targets 0x%x name unknown modules",
				 name, get_u32(b + 84));
	if (get_u32(b + 92) != 0)
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: reserved header field is not 0",
				 name);
	table_off = get_u64(b + 96);
	*data_off = get_u64(b + 104);
	*data_bytes = get_u64(b + 112);
	total = get_u64(b + 120);
	table_bytes = (uint64_t)n_layers * AD_N_TARGETS * ENTRY_BYTES;
	if (table_off != HDR_BYTES)
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: table_off %llu (expected %u)", name,
				 (unsigned long long)table_off, HDR_BYTES);
	if (*data_off != align_up(table_off + table_bytes) || *data_off > len)
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: data_off %llu, expected %llu (the module "
				 "table's end rounded up to 64 bytes; blob of %zu bytes)", name,
				 (unsigned long long)*data_off,
				 (unsigned long long)align_up(table_off + table_bytes), len);
	if (total != len || *data_bytes != len - *data_off)
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: header says %llu bytes (data %llu "
				 "from %llu), the blob has %zu (truncated or padded)", name,
				 (unsigned long long)total, (unsigned long long)*data_bytes,
				 (unsigned long long)*data_off, len);
	for (uint64_t i = table_off + table_bytes; i < *data_off; i++)
		if (b[i])
			return loom_fail(LOOM_EFORMAT, "adapter blob %s: padding byte %llu after the "
					 "module table is not 0", name, (unsigned long long)i);
	return LOOM_OK;
}

/* [off, off + n) inside [lo, len), float aligned. */
static int range_ok(uint64_t off, uint64_t n, uint64_t lo, uint64_t len)
{
	return off % sizeof(float) == 0 && off >= lo && off <= len && n <= len - off;
}

/* Reads and checks the module table into a->mods (pointers set relative to
 * base_ptr, which maps blob offset data_off). The layout must be the
 * canonical one (place()): any other offset is a corrupt blob. */
static loom_err read_table(const uint8_t *b, size_t len, uint64_t data_off, ad_adapter *a,
			   const float *base_ptr)
{
	size_t n_mods = (size_t)a->n_layers * AD_N_TARGETS;
	uint64_t *a_off = NULL, *bt_off = NULL, want_bytes;
	unsigned targets = 0;
	int max_rank = 0;
	loom_err rc = LOOM_OK;

	/* pass 1: ranks and scales */
	for (size_t i = 0; i < n_mods; i++) {
		const uint8_t *e = b + HDR_BYTES + i * ENTRY_BYTES;
		int l = (int)(i / AD_N_TARGETS), t = (int)(i % AD_N_TARGETS);
		uint32_t rank = get_u32(e);
		float scale = get_f32(e + 4);

		if (rank == 0) {
			if (get_u64(e + 8) || get_u64(e + 16) || scale != 0.0f)
				return loom_fail(LOOM_EFORMAT, "adapter blob %s: layer %d %s has rank 0 "
						 "but offsets or a scale", a->name, l, ad_target_name(t));
			continue;
		}
		if (rank > MAX_RANK)
			return loom_fail(LOOM_EFORMAT, "adapter blob %s: layer %d %s has rank %u "
					 "(max %u)", a->name, l, ad_target_name(t), rank, MAX_RANK);
		if (!isfinite(scale))
			return loom_fail(LOOM_EFORMAT, "adapter blob %s: layer %d %s: scale is not "
					 "finite", a->name, l, ad_target_name(t));
		a->mods[i].rank = (int)rank;
		a->mods[i].scale = scale;
		targets |= 1u << t;
		if ((int)rank > max_rank)
			max_rank = (int)rank;
	}
	if (targets != a->targets || max_rank != a->max_rank)
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: header says targets 0x%x and max "
				 "rank %d, the module table has 0x%x and %d", a->name, a->targets,
				 a->max_rank, targets, max_rank);
	if (!targets)
		return loom_fail(LOOM_EFORMAT, "adapter blob %s: no module is adapted", a->name);
	/* pass 2: offsets, exactly where the canonical layout puts them */
	a_off = loom_calloc(n_mods, sizeof *a_off);
	bt_off = loom_calloc(n_mods, sizeof *bt_off);
	if (!a_off || !bt_off) {
		rc = loom_fail(LOOM_ENOMEM, "adapter blob %s: out of memory", a->name);
		goto out;
	}
	want_bytes = place(a, a_off, bt_off);
	if (want_bytes != len - data_off) {
		rc = loom_fail(LOOM_EFORMAT, "adapter blob %s: its ranks need %llu bytes of weights, "
			       "the blob holds %llu", a->name, (unsigned long long)want_bytes,
			       (unsigned long long)(len - data_off));
		goto out;
	}
	for (size_t i = 0; i < n_mods; i++) {
		const uint8_t *e = b + HDR_BYTES + i * ENTRY_BYTES;
		int l = (int)(i / AD_N_TARGETS), t = (int)(i % AD_N_TARGETS);
		ad_module *m = &a->mods[i];
		uint64_t ao = get_u64(e + 8), bo = get_u64(e + 16);
		uint64_t an = (uint64_t)m->rank * (uint64_t)a->d_in[t] * sizeof(float);
		uint64_t bn = (uint64_t)m->rank * (uint64_t)a->d_out[t] * sizeof(float);

		if (m->rank == 0)
			continue;
		if (ao != data_off + a_off[i] || bo != data_off + bt_off[i] ||
		    !range_ok(ao, an, data_off, len) || !range_ok(bo, bn, data_off, len)) {
			rc = loom_fail(LOOM_EFORMAT, "adapter blob %s: layer %d %s: A at %llu and Bt "
				       "at %llu, the layout puts them at %llu and %llu", a->name, l,
				       ad_target_name(t), (unsigned long long)ao,
				       (unsigned long long)bo,
				       (unsigned long long)(data_off + a_off[i]),
				       (unsigned long long)(data_off + bt_off[i]));
			goto out;
		}
		m->a = base_ptr + (ao - data_off) / sizeof(float);
		m->bt = base_ptr + (bo - data_off) / sizeof(float);
		a->bytes += (size_t)(an + bn);
	}
out:
	loom_free(a_off);
	loom_free(bt_off);
	return rc;
}

/* Every A and Bt value finite (what ad_adapter_load guarantees). */
static loom_err check_values(const ad_adapter *a)
{
	for (int l = 0; l < a->n_layers; l++)
		for (int t = 0; t < AD_N_TARGETS; t++) {
			const ad_module *m = ad_mod(a, l, t);
			size_t na = (size_t)m->rank * (size_t)a->d_in[t];
			size_t nb = (size_t)m->rank * (size_t)a->d_out[t];
			for (size_t i = 0; i < na; i++)
				if (!isfinite(m->a[i]))
					return loom_fail(LOOM_EFORMAT, "adapter blob %s: layer %d %s A "
							 "holds a non-finite value at %zu", a->name, l,
							 ad_target_name(t), i);
			for (size_t i = 0; i < nb; i++)
				if (!isfinite(m->bt[i]))
					return loom_fail(LOOM_EFORMAT, "adapter blob %s: layer %d %s Bt "
							 "holds a non-finite value at %zu", a->name, l,
							 ad_target_name(t), i);
		}
	return LOOM_OK;
}

loom_err ad_adapter_from_blob(const void *buf, size_t len, const char *name,
			      const loom_model_config *base, int copy, ad_adapter **out)
{
	const uint8_t *b = buf;
	uint64_t data_off = 0, data_bytes = 0;
	const float *base_ptr;
	ad_adapter *a = NULL;
	loom_err rc;

	*out = NULL;
	if (!name)
		name = "";
	if (!buf || !base || base->n_layers <= 0)
		return loom_fail(LOOM_EINVAL, "adapter blob %s: no bytes or no base config", name);
	if (strlen(name) >= sizeof a->name)
		return loom_fail(LOOM_EINVAL, "adapter blob: name \"%.40s...\" is longer than %zu "
				 "bytes", name, sizeof a->name - 1);
	/* zero-copy hands out float pointers into buf: they must be aligned
	 * for float (the blob's offsets are, relative to its start). LMDB
	 * values are 16-byte aligned, heap copies 64. */
	if (!copy && (uintptr_t)buf % sizeof(float))
		return loom_fail(LOOM_EINVAL, "adapter blob %s: zero-copy needs a float-aligned "
				 "buffer", name);
	if ((rc = check_header(b, len, name, base, &data_off, &data_bytes)))
		return rc;
	if (!(a = loom_calloc(1, sizeof *a)) ||
	    !(a->mods = loom_calloc((size_t)base->n_layers * AD_N_TARGETS, sizeof *a->mods))) {
		rc = loom_fail(LOOM_ENOMEM, "adapter blob %s: out of memory", name);
		goto out;
	}
	snprintf(a->name, sizeof a->name, "%s", name);
	a->n_layers = base->n_layers;
	for (int t = 0; t < AD_N_TARGETS; t++)
		ad_target_dims(base, t, &a->d_in[t], &a->d_out[t]);
	a->base_rank = (int)get_u32(b + 72);
	a->base_alpha = get_f32(b + 76);
	a->use_rslora = (int)get_u32(b + 80);
	a->targets = get_u32(b + 84);
	a->max_rank = (int)get_u32(b + 88);
	if (a->base_rank < 0 || a->max_rank < 0) {
		rc = loom_fail(LOOM_EFORMAT, "adapter blob %s: rank fields out of range", name);
		goto out;
	}
	if (copy) {
		if (!(a->arena = loom_malloc((size_t)data_bytes + ALIGN))) {
			rc = loom_fail(LOOM_ENOMEM, "adapter blob %s: out of memory for %llu bytes of "
				       "weights", name, (unsigned long long)data_bytes);
			goto out;
		}
		float *dst = (float *)(((uintptr_t)a->arena + ALIGN - 1) & ~(uintptr_t)(ALIGN - 1));
		memcpy(dst, b + data_off, (size_t)data_bytes);
		base_ptr = dst;
	} else {
		base_ptr = (const float *)(const void *)(b + data_off);
	}
	if ((rc = read_table(b, len, data_off, a, base_ptr)) || (rc = check_values(a)))
		goto out;
	*out = a;
	a = NULL;
out:
	ad_adapter_destroy(a);
	return rc;
}
