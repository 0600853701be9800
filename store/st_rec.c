/*
 * store/st_rec.c — adapter and model records: name -> fixed binary layout.
 *
 * Layout version 1 (little endian; never raw structs, so the file does not
 * depend on the compiler, and a later layout can be told apart by its first
 * byte):
 *   common   u8 layout (1) | u32 version | i64 created | 32 sha (main blob)
 *   adapter  u32 rank | u32 max_rank | u32 alpha (IEEE-754 bits) | u32 targets
 *            | u32 use_rslora | u64 bytes | u16 n | n bytes base_model
 *   model    32 tokenizer_sha | u64 bytes
 * The name is the key (no NUL). A put checks, in its one write transaction,
 * that the name is free in the other kind's database, that its blobs exist,
 * and reads the previous version, so uniqueness and versions cannot race.
 */
#include "st_int.h"

#include <string.h>

#include "common/alloc.h"
#include "common/log.h"

#define HDR_LEN (1 + 4 + 8 + 32)
#define AD_FIXED (HDR_LEN + 5 * 4 + 8 + 2)
#define MD_LEN (HDR_LEN + 32 + 8)

/* ---- little-endian bytes ---- */

static uint8_t *put_le(uint8_t *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		*p++ = (uint8_t)(v >> (8 * i));
	return p;
}

static uint64_t get_le(const uint8_t *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint8_t *put_hdr(uint8_t *p, uint32_t version, int64_t created, const uint8_t sha[32])
{
	*p++ = ST_REC_V1;
	p = put_le(p, version, 4);
	p = put_le(p, (uint64_t)created, 8);
	memcpy(p, sha, 32);
	return p + 32;
}

static const uint8_t *get_hdr(const uint8_t *p, uint32_t *version, int64_t *created,
			      uint8_t sha[32])
{
	*version = (uint32_t)get_le(p + 1, 4);
	*created = (int64_t)get_le(p + 5, 8);
	memcpy(sha, p + 13, 32);
	return p + HDR_LEN;
}

/* Checks the layout byte and the length; kind names the record in messages. */
static loom_err check_layout(const st_store *s, const char *kind, const MDB_val *key,
			     const MDB_val *v, size_t min_len)
{
	const uint8_t *p = v->mv_data;
	if (v->mv_size < 1 || p[0] != ST_REC_V1)
		return loom_fail(LOOM_EFORMAT,
				 "store %s: %s record \"%.*s\" has layout %d, which this loom does "
				 "not know (written by a newer loom?)",
				 s->e->dir, kind, (int)key->mv_size, (const char *)key->mv_data,
				 v->mv_size ? p[0] : -1);
	if (v->mv_size < min_len)
		return loom_fail(LOOM_EFORMAT, "store %s: %s record \"%.*s\" is truncated (%zu bytes)",
				 s->e->dir, kind, (int)key->mv_size, (const char *)key->mv_data,
				 v->mv_size);
	return LOOM_OK;
}

static loom_err key_name(const st_store *s, const char *kind, const MDB_val *key, char *name)
{
	if (key->mv_size == 0 || key->mv_size >= ST_NAME_MAX ||
	    memchr(key->mv_data, '\0', key->mv_size))
		return loom_fail(LOOM_EFORMAT, "store %s: a %s record has a malformed %zu-byte name",
				 s->e->dir, kind, key->mv_size);
	memcpy(name, key->mv_data, key->mv_size);
	name[key->mv_size] = '\0';
	return LOOM_OK;
}

static loom_err decode_adapter(const st_store *s, const MDB_val *key, const MDB_val *v,
			       st_adapter_rec *r)
{
	const uint8_t *p;
	uint32_t bits;
	size_t n;
	loom_err rc;

	memset(r, 0, sizeof *r);
	if ((rc = key_name(s, "adapter", key, r->name)) ||
	    (rc = check_layout(s, "adapter", key, v, AD_FIXED)))
		return rc;
	p = get_hdr(v->mv_data, &r->version, &r->created, r->sha);
	r->rank = (uint32_t)get_le(p, 4);
	r->max_rank = (uint32_t)get_le(p + 4, 4);
	bits = (uint32_t)get_le(p + 8, 4);
	memcpy(&r->alpha, &bits, 4);
	r->targets = (uint32_t)get_le(p + 12, 4);
	r->use_rslora = (uint32_t)get_le(p + 16, 4);
	r->bytes = get_le(p + 20, 8);
	n = (size_t)get_le(p + 28, 2);
	if (v->mv_size != AD_FIXED + n || n == 0 || n >= ST_NAME_MAX ||
	    memchr(p + 30, '\0', n))
		return loom_fail(LOOM_EFORMAT,
				 "store %s: adapter record \"%s\" is %zu bytes with a %zu-byte base "
				 "model name (malformed)",
				 s->e->dir, r->name, v->mv_size, n);
	memcpy(r->base_model, p + 30, n);
	r->base_model[n] = '\0';
	return LOOM_OK;
}

static loom_err decode_model(const st_store *s, const MDB_val *key, const MDB_val *v,
			     st_model_rec *r)
{
	const uint8_t *p;
	loom_err rc;

	memset(r, 0, sizeof *r);
	if ((rc = key_name(s, "model", key, r->name)) ||
	    (rc = check_layout(s, "model", key, v, MD_LEN)))
		return rc;
	if (v->mv_size != MD_LEN)
		return loom_fail(LOOM_EFORMAT, "store %s: model record \"%s\" is %zu bytes, not %d",
				 s->e->dir, r->name, v->mv_size, MD_LEN);
	p = get_hdr(v->mv_data, &r->version, &r->created, r->sha);
	memcpy(r->tokenizer_sha, p, 32);
	r->bytes = get_le(p + 32, 8);
	return LOOM_OK;
}

loom_err st__rec_refs(const st_store *s, int model, const MDB_val *key, const MDB_val *v,
		      uint8_t sha[2][32], int *n)
{
	static const uint8_t zero[32];
	loom_err rc;

	*n = 0;
	if (model) {
		st_model_rec r;
		if ((rc = decode_model(s, key, v, &r)))
			return rc;
		memcpy(sha[(*n)++], r.sha, 32);
		if (memcmp(r.tokenizer_sha, zero, 32) != 0)
			memcpy(sha[(*n)++], r.tokenizer_sha, 32);
	} else {
		st_adapter_rec r;
		if ((rc = decode_adapter(s, key, v, &r)))
			return rc;
		memcpy(sha[(*n)++], r.sha, 32);
	}
	return LOOM_OK;
}

/* ---- puts ---- */

static loom_err check_name(const st_store *s, const char *kind, const char *field,
			   const char *name)
{
	size_t n = strnlen(name, ST_NAME_MAX);
	if (n == 0 || n >= ST_NAME_MAX)
		return loom_fail(LOOM_EINVAL, "store %s: %s %s must be 1..%d bytes", s->e->dir, kind,
				 field, ST_NAME_MAX - 1);
	return LOOM_OK;
}

static loom_err need_blob(st_store *s, MDB_txn *txn, const char *kind, const char *name,
			  const char *what, const uint8_t sha[32])
{
	MDB_val k = { 32, (void *)sha }, v;
	char sh[17];
	int mrc = mdb_get(txn, s->e->blobs, &k, &v);

	if (mrc == MDB_NOTFOUND)
		return loom_fail(LOOM_ENOTFOUND,
				 "store %s: %s \"%s\": its %s blob %s is not in the store (put the "
				 "blob first)",
				 s->e->dir, kind, name, what, st__short(sha, sh));
	if (mrc)
		return st__mdb_fail(s, mrc, "%s \"%s\": blob lookup failed", kind, name);
	return LOOM_OK;
}

/* In txn: fails when name is taken by the other kind, or by this kind and
 * !replace; *version receives the new version (1, or previous + 1). */
static loom_err claim_name(st_store *s, MDB_txn *txn, int model, const char *name, int replace,
			   uint32_t *version)
{
	const char *kind = model ? "model" : "adapter", *other = model ? "an adapter" : "a model";
	MDB_dbi self = model ? s->e->models : s->e->adapters;
	MDB_dbi oth = model ? s->e->adapters : s->e->models;
	MDB_val k = { strlen(name), (void *)name }, v;
	int mrc;
	loom_err rc;

	mrc = mdb_get(txn, oth, &k, &v);
	if (mrc == 0)
		return loom_fail(LOOM_EEXIST, "%s \"%s\": the name is taken by %s", kind, name,
				 other);
	if (mrc != MDB_NOTFOUND)
		return st__mdb_fail(s, mrc, "%s \"%s\": lookup failed", kind, name);
	mrc = mdb_get(txn, self, &k, &v);
	if (mrc == MDB_NOTFOUND) {
		*version = 1;
		return LOOM_OK;
	}
	if (mrc)
		return st__mdb_fail(s, mrc, "%s \"%s\": lookup failed", kind, name);
	if (!replace)
		return loom_fail(LOOM_EEXIST, "%s \"%s\" already exists (replace it to make a new "
				 "version)", kind, name);
	if ((rc = check_layout(s, kind, &k, &v, HDR_LEN)))
		return rc;
	*version = (uint32_t)get_le((const uint8_t *)v.mv_data + 1, 4) + 1;
	return LOOM_OK;
}

loom_err st_adapter_put(st_store *s, st_adapter_rec *r, int replace)
{
	MDB_txn *txn = NULL;
	uint8_t buf[AD_FIXED + ST_NAME_MAX], *p;
	uint32_t version, bits;
	int64_t created = (int64_t)time(NULL);
	size_t nb;
	loom_err rc;
	int mrc;

	if ((rc = check_name(s, "adapter", "name", r->name)) ||
	    (rc = check_name(s, "adapter", "base_model", r->base_model)))
		return rc;
	if ((rc = st__begin(s, 0, &txn)))
		return rc;
	if ((rc = claim_name(s, txn, 0, r->name, replace, &version)) ||
	    (rc = need_blob(s, txn, "adapter", r->name, "adapter", r->sha)))
		goto out;
	nb = strlen(r->base_model);
	p = put_hdr(buf, version, created, r->sha);
	memcpy(&bits, &r->alpha, 4);
	p = put_le(p, r->rank, 4);
	p = put_le(p, r->max_rank, 4);
	p = put_le(p, bits, 4);
	p = put_le(p, r->targets, 4);
	p = put_le(p, r->use_rslora, 4);
	p = put_le(p, r->bytes, 8);
	p = put_le(p, nb, 2);
	memcpy(p, r->base_model, nb);
	MDB_val k = { strlen(r->name), r->name }, v = { AD_FIXED + nb, buf };
	if ((mrc = mdb_put(txn, s->e->adapters, &k, &v, 0))) {
		rc = st__mdb_fail(s, mrc, "adapter \"%s\": cannot write the record", r->name);
		goto out;
	}
	rc = st__commit(s, txn, "an adapter record");
	txn = NULL;
	if (rc)
		goto out;
	st__pending_drop(s, r->sha);
	r->version = version;
	r->created = created;
out:
	if (txn)
		mdb_txn_abort(txn);
	return rc;
}

loom_err st_model_put(st_store *s, st_model_rec *r, int replace)
{
	static const uint8_t zero[32];
	MDB_txn *txn = NULL;
	uint8_t buf[MD_LEN], *p;
	uint32_t version;
	int64_t created = (int64_t)time(NULL);
	int has_tok = memcmp(r->tokenizer_sha, zero, 32) != 0;
	loom_err rc;
	int mrc;

	if ((rc = check_name(s, "model", "name", r->name)))
		return rc;
	if ((rc = st__begin(s, 0, &txn)))
		return rc;
	if ((rc = claim_name(s, txn, 1, r->name, replace, &version)) ||
	    (rc = need_blob(s, txn, "model", r->name, "bundle", r->sha)) ||
	    (has_tok && (rc = need_blob(s, txn, "model", r->name, "tokenizer", r->tokenizer_sha))))
		goto out;
	p = put_hdr(buf, version, created, r->sha);
	memcpy(p, r->tokenizer_sha, 32);
	put_le(p + 32, r->bytes, 8);
	MDB_val k = { strlen(r->name), r->name }, v = { MD_LEN, buf };
	if ((mrc = mdb_put(txn, s->e->models, &k, &v, 0))) {
		rc = st__mdb_fail(s, mrc, "model \"%s\": cannot write the record", r->name);
		goto out;
	}
	rc = st__commit(s, txn, "a model record");
	txn = NULL;
	if (rc)
		goto out;
	st__pending_drop(s, r->sha);
	if (has_tok)
		st__pending_drop(s, r->tokenizer_sha);
	r->version = version;
	r->created = created;
out:
	if (txn)
		mdb_txn_abort(txn);
	return rc;
}

/* ---- get / del ---- */

/* Reads the record of name (model or adapter) into out through decode. */
static loom_err rec_get(st_store *s, int model, const char *name, void *out)
{
	const char *kind = model ? "model" : "adapter";
	MDB_txn *txn = NULL;
	MDB_val k, v;
	loom_err rc;
	int mrc;

	if ((rc = check_name(s, kind, "name", name)))
		return rc;
	k.mv_size = strlen(name);
	k.mv_data = (void *)name;
	if ((rc = st__begin(s, 1, &txn)))
		return rc;
	mrc = mdb_get(txn, model ? s->e->models : s->e->adapters, &k, &v);
	if (mrc == MDB_NOTFOUND)
		rc = loom_fail(LOOM_ENOTFOUND, "%s \"%s\" not found", kind, name);
	else if (mrc)
		rc = st__mdb_fail(s, mrc, "%s \"%s\": read failed", kind, name);
	else
		rc = model ? decode_model(s, &k, &v, out) : decode_adapter(s, &k, &v, out);
	mdb_txn_abort(txn);
	return rc;
}

static loom_err rec_del(st_store *s, int model, const char *name)
{
	const char *kind = model ? "model" : "adapter";
	MDB_txn *txn = NULL;
	MDB_val k;
	loom_err rc;
	int mrc;

	if ((rc = check_name(s, kind, "name", name)))
		return rc;
	k.mv_size = strlen(name);
	k.mv_data = (void *)name;
	if ((rc = st__begin(s, 0, &txn)))
		return rc;
	mrc = mdb_del(txn, model ? s->e->models : s->e->adapters, &k, NULL);
	if (mrc) {
		mdb_txn_abort(txn);
		if (mrc == MDB_NOTFOUND)
			return loom_fail(LOOM_ENOTFOUND, "%s \"%s\" not found", kind, name);
		return st__mdb_fail(s, mrc, "%s \"%s\": delete failed", kind, name);
	}
	return st__commit(s, txn, model ? "a model delete" : "an adapter delete");
}

loom_err st_adapter_get(st_store *s, const char *name, st_adapter_rec *out)
{
	return rec_get(s, 0, name, out);
}

loom_err st_model_get(st_store *s, const char *name, st_model_rec *out)
{
	return rec_get(s, 1, name, out);
}

loom_err st_adapter_del(st_store *s, const char *name)
{
	return rec_del(s, 0, name);
}

loom_err st_model_del(st_store *s, const char *name)
{
	return rec_del(s, 1, name);
}

/* ---- each ---- */

/* Decodes every record of one kind into a loom_malloc'ed array (elem bytes
 * each), so callbacks run with no transaction open. */
static loom_err rec_all(st_store *s, int model, void **out, size_t *n_out)
{
	size_t elem = model ? sizeof(st_model_rec) : sizeof(st_adapter_rec);
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	MDB_stat stat;
	char *arr = NULL;
	size_t n = 0, cap;
	loom_err rc;
	int mrc;

	*out = NULL;
	*n_out = 0;
	if ((rc = st__begin(s, 1, &txn)))
		return rc;
	MDB_dbi dbi = model ? s->e->models : s->e->adapters;
	if ((mrc = mdb_stat(txn, dbi, &stat)) || (mrc = mdb_cursor_open(txn, dbi, &cur))) {
		rc = st__mdb_fail(s, mrc, "cannot list the %ss", model ? "model" : "adapter");
		goto out;
	}
	cap = stat.ms_entries ? stat.ms_entries : 1;
	if (!(arr = loom_malloc(cap * elem))) {
		rc = loom_fail(LOOM_ENOMEM, "store %s: out of memory listing %zu records", s->e->dir,
			       cap);
		goto out;
	}
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && n < cap;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		void *r = arr + n * elem;
		/* one record this loom cannot read (a newer layout, damage) must not
		 * hide all the others: it is skipped with a warning */
		if ((rc = model ? decode_model(s, &k, &v, r) : decode_adapter(s, &k, &v, r))) {
			LOOM_WARN("%s (skipped)", loom_errmsg());
			rc = LOOM_OK;
			continue;
		}
		n++;
	}
	if (mrc && mrc != MDB_NOTFOUND) {
		rc = st__mdb_fail(s, mrc, "listing the %ss failed", model ? "model" : "adapter");
		goto out;
	}
	*out = arr;
	*n_out = n;
	arr = NULL;
out:
	if (cur)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	loom_free(arr);
	return rc;
}

loom_err st_adapter_each(st_store *s, int (*fn)(void *ctx, const st_adapter_rec *r), void *ctx)
{
	st_adapter_rec *a;
	size_t n;
	loom_err rc = rec_all(s, 0, (void **)&a, &n);

	if (rc)
		return rc;
	for (size_t i = 0; i < n && !fn(ctx, &a[i]); i++)
		;
	loom_free(a);
	return LOOM_OK;
}

loom_err st_model_each(st_store *s, int (*fn)(void *ctx, const st_model_rec *r), void *ctx)
{
	st_model_rec *m;
	size_t n;
	loom_err rc = rec_all(s, 1, (void **)&m, &n);

	if (rc)
		return rc;
	for (size_t i = 0; i < n && !fn(ctx, &m[i]); i++)
		;
	loom_free(m);
	return LOOM_OK;
}
