/*
 * store/st_sweep.c — deleting blobs that no record references.
 *
 * One write transaction: collect the shas every adapter and model record
 * references (sorted, binary-searched), then walk the blobs and delete the
 * others, except blobs this process has just written for a record not yet
 * committed (the pending set, st_int.h). A record that cannot be decoded
 * stops the sweep: without knowing what it references nothing is safe to
 * delete. Committed only when something was deleted (no fsync otherwise).
 */
#include "st_int.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

static int sha_cmp(const void *a, const void *b)
{
	return memcmp(a, b, 32);
}

/* Appends the blobs the records of one database reference to *refs. */
static loom_err collect(st_store *s, MDB_txn *txn, int model, uint8_t (**refs)[32], size_t *n,
			size_t *cap)
{
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	loom_err rc = LOOM_OK;
	int mrc;

	if ((mrc = mdb_cursor_open(txn, model ? s->e->models : s->e->adapters, &cur)))
		return st__mdb_fail(s, mrc, "sweep: cannot read the records");
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint8_t sha[2][32];
		int m;
		if ((rc = st__rec_refs(s, model, &k, &v, sha, &m)))
			goto out;
		if (*n + 2 > *cap) {
			size_t nc = *cap ? 2 * *cap : 64;
			uint8_t(*p)[32] = loom_realloc(*refs, nc * 32);
			if (!p) {
				rc = loom_fail(LOOM_ENOMEM, "store %s: sweep: out of memory", s->e->dir);
				goto out;
			}
			*refs = p;
			*cap = nc;
		}
		for (int i = 0; i < m; i++)
			memcpy((*refs)[(*n)++], sha[i], 32);
	}
	if (mrc != MDB_NOTFOUND)
		rc = st__mdb_fail(s, mrc, "sweep: reading the records failed");
out:
	mdb_cursor_close(cur);
	return rc;
}

loom_err st_sweep(st_store *s, size_t *removed)
{
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	uint8_t(*refs)[32] = NULL;
	size_t n = 0, cap = 0, gone = 0;
	loom_err rc;
	int mrc;

	if (removed)
		*removed = 0;
	if ((rc = st__begin(s, 0, &txn)))
		return rc;
	if ((rc = collect(s, txn, 0, &refs, &n, &cap)) || (rc = collect(s, txn, 1, &refs, &n, &cap)))
		goto out;
	if (n)
		qsort(refs, n, 32, sha_cmp);
	if ((mrc = mdb_cursor_open(txn, s->e->blobs, &cur))) {
		rc = st__mdb_fail(s, mrc, "sweep: cannot read the blobs");
		goto out;
	}
	for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0;
	     mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		if (k.mv_size == 32 && ((n && bsearch(k.mv_data, refs, n, 32, sha_cmp)) ||
					st__pending_has(s, k.mv_data)))
			continue;
		/* After a delete the cursor sits on the next item; MDB_NEXT
		 * returns that one (LMDB's C_DEL), so nothing is skipped. */
		if ((mrc = mdb_cursor_del(cur, 0))) {
			rc = st__mdb_fail(s, mrc, "sweep: cannot delete a blob");
			goto out;
		}
		gone++;
	}
	if (mrc != MDB_NOTFOUND) {
		rc = st__mdb_fail(s, mrc, "sweep: reading the blobs failed");
		goto out;
	}
	mdb_cursor_close(cur);
	cur = NULL;
	if (gone) {
		rc = st__commit(s, txn, "a sweep");
		txn = NULL;
		if (rc)
			goto out;
	}
	if (removed)
		*removed = gone;
out:
	if (cur)
		mdb_cursor_close(cur);
	if (txn)
		mdb_txn_abort(txn);
	loom_free(refs);
	return rc;
}
