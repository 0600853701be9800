/*
 * store/st_blob.c — content-addressed blobs: sha256 (32-byte key) -> bytes.
 *
 * Each put is its own write transaction, committed (fsync'ed) before it
 * returns, so a record written afterwards never points at a blob that a
 * crash could lose. Big blobs (model bundles) are written with MDB_RESERVE:
 * the caller fills LMDB's page buffer directly, one copy, one commit.
 * A view is an MDB_RDONLY transaction kept open while the caller reads the
 * bytes in place; it pins the snapshot (old pages are not reused while it
 * lives), so views are meant to be short-lived: copy or upload, then release.
 */
#include "st_int.h"

#include <string.h>

#include "common/sha256.h"

struct copy_ctx {
	const void *src;
};

static void copy_fill(void *ctx, void *dst, size_t len)
{
	memcpy(dst, ((struct copy_ctx *)ctx)->src, len);
}

loom_err st_blob_put(st_store *s, const void *data, size_t len, uint8_t sha[32])
{
	uint8_t h[32];
	struct copy_ctx c = { data };
	loom_err rc;

	loom_sha256(data, len, h);
	if ((rc = st_blob_put_fill(s, h, len, copy_fill, &c)))
		return rc;
	memcpy(sha, h, 32);
	return LOOM_OK;
}

loom_err st_blob_put_fill(st_store *s, const uint8_t sha[32], size_t len,
			  void (*fill)(void *ctx, void *dst, size_t len), void *ctx)
{
	MDB_txn *txn = NULL;
	MDB_val k = { 32, (void *)sha }, v;
	char sh[17];
	loom_err rc;
	int mrc;

	if ((rc = st__begin(s, 0, &txn)))
		return rc;
	/* Pending before the commit: a sweep on another thread must not take it
	 * between here and the caller's record. */
	st__pending_add(s, sha);
	mrc = mdb_get(txn, s->e->blobs, &k, &v);
	if (mrc == 0) {
		mdb_txn_abort(txn); /* already there: content addressed, so identical */
		return LOOM_OK;
	}
	if (mrc != MDB_NOTFOUND) {
		rc = st__mdb_fail(s, mrc, "blob %s: lookup failed", st__short(sha, sh));
		goto out;
	}
	v.mv_size = len;
	v.mv_data = NULL;
	mrc = mdb_put(txn, s->e->blobs, &k, &v, MDB_RESERVE);
	if (mrc) {
		rc = st__mdb_fail(s, mrc, "blob %s: cannot store %zu bytes", st__short(sha, sh), len);
		goto out;
	}
	if (len)
		fill(ctx, v.mv_data, len);
	rc = st__commit(s, txn, "a blob");
	txn = NULL;
out:
	if (txn)
		mdb_txn_abort(txn);
	return rc;
}

int st_blob_has(st_store *s, const uint8_t sha[32])
{
	MDB_txn *txn;
	MDB_val k = { 32, (void *)sha }, v;
	int found;

	if (st__begin(s, 1, &txn))
		return 0;
	found = mdb_get(txn, s->e->blobs, &k, &v) == 0;
	mdb_txn_abort(txn);
	return found;
}

loom_err st_blob_get(st_store *s, const uint8_t sha[32], int verify, st_view *out)
{
	MDB_txn *txn = NULL;
	MDB_val k = { 32, (void *)sha }, v;
	char sh[17];
	loom_err rc;
	int mrc;

	memset(out, 0, sizeof *out);
	if ((rc = st__begin(s, 1, &txn)))
		return rc;
	mrc = mdb_get(txn, s->e->blobs, &k, &v);
	if (mrc == MDB_NOTFOUND) {
		rc = loom_fail(LOOM_ENOTFOUND, "store %s: no blob %s", s->e->dir, st__short(sha, sh));
		goto out;
	}
	if (mrc) {
		rc = st__mdb_fail(s, mrc, "blob %s: read failed", st__short(sha, sh));
		goto out;
	}
	if (verify) {
		uint8_t h[32];
		loom_sha256(v.mv_data, v.mv_size, h);
		if (memcmp(h, sha, 32) != 0) {
			char got[65];
			loom_sha256_hex(h, got);
			rc = loom_fail(LOOM_EFORMAT,
				       "store %s: blob %s is corrupt: its %zu bytes hash to %s",
				       s->e->dir, st__short(sha, sh), v.mv_size, got);
			goto out;
		}
	}
	out->data = v.mv_data;
	out->len = v.mv_size;
	out->txn = txn;
	txn = NULL;
out:
	if (txn)
		mdb_txn_abort(txn);
	return rc;
}

void st_view_release(st_view *v)
{
	if (!v)
		return;
	if (v->txn)
		mdb_txn_abort(v->txn);
	memset(v, 0, sizeof *v);
}
