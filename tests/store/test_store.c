/*
 * tests/store/test_store.c — the LMDB store: blobs, records, sweep,
 * read-only readers in another process, corruption, crash safety.
 *
 * The program doubles as its own helper process (never an env across fork:
 * helpers are fork+exec'ed copies of this binary):
 *   test_store --ro-check DIR SHAHEX NAME    opens DIR read-only, checks
 *                                            blob SHAHEX and adapter NAME
 *   test_store --crash-loop DIR SEED READY   registers and replaces adapters
 *                                            forever (killed by the parent);
 *                                            creates file READY once open
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/sha256.h"
#include "store/store.h"
#include "tests/support/harness.h"

static char *tmp; /* this run's temp dir */
static char self[1024];

static const char *tpath(const char *name)
{
	static char buf[4][1024];
	static int k;
	char *b = buf[k++ % 4];
	snprintf(b, sizeof buf[0], "%s/%s", tmp, name);
	return b;
}

#define OK(expr)                                                                             \
	do {                                                                                  \
		loom_err rc_ = (expr);                                                        \
		if (rc_ != LOOM_OK)                                                           \
			fail_msg("%s: %s: %s", #expr, loom_strerror(rc_), loom_errmsg());     \
	} while (0)

#define FAILS(expr, want)                                                                    \
	do {                                                                                  \
		loom_err rc_ = (expr);                                                        \
		if (rc_ != (want))                                                            \
			fail_msg("%s: got %s (%s), want %s", #expr, loom_strerror(rc_),        \
				 loom_errmsg(), loom_strerror(want));                         \
	} while (0)

static st_store *open_rw(const char *dir)
{
	st_store *s = NULL;
	OK(st_open(dir, 0, &s));
	return s;
}

static void fill_adapter(st_adapter_rec *r, const char *name, const uint8_t sha[32])
{
	memset(r, 0, sizeof *r);
	snprintf(r->name, sizeof r->name, "%s", name);
	snprintf(r->base_model, sizeof r->base_model, "stories260k");
	memcpy(r->sha, sha, 32);
	r->rank = 8;
	r->max_rank = 16;
	r->alpha = 16.5f;
	r->targets = 0x5;
	r->use_rslora = 1;
	r->bytes = 12345;
}

/* ---- blobs ---- */

static void blobs(void **state)
{
	(void)state;
	st_store *s = open_rw(tpath("blobs"));
	uint8_t sha[32], want[32], sha2[32], zsha[32];
	st_view v, z;
	static const char msg[] = "hello, store";

	OK(st_blob_put(s, msg, sizeof msg, sha));
	loom_sha256(msg, sizeof msg, want);
	assert_memory_equal(sha, want, 32);
	assert_true(st_blob_has(s, sha));
	OK(st_blob_put(s, msg, sizeof msg, sha2)); /* idempotent */
	assert_memory_equal(sha, sha2, 32);
	OK(st_blob_get(s, sha, 1, &v));
	assert_int_equal(v.len, sizeof msg);
	assert_memory_equal(v.data, msg, sizeof msg);
	/* many views at once on one thread (MDB_NOTLS) */
	OK(st_blob_get(s, sha, 0, &z));
	assert_ptr_equal(z.data, v.data);
	st_view_release(&z);
	st_view_release(&v);
	assert_null(v.txn);
	st_view_release(&v); /* twice, and on a zeroed view: no-ops */
	memset(&z, 0, sizeof z);
	st_view_release(&z);
	st_view_release(NULL);

	/* empty blob */
	OK(st_blob_put(s, "", 0, zsha));
	OK(st_blob_get(s, zsha, 1, &v));
	assert_int_equal(v.len, 0);
	st_view_release(&v);

	/* absent */
	want[0] ^= 1;
	assert_false(st_blob_has(s, want));
	memset(&v, 0x55, sizeof v);
	FAILS(st_blob_get(s, want, 1, &v), LOOM_ENOTFOUND);
	assert_null(v.data);
	assert_null(v.txn);
	assert_non_null(strstr(loom_errmsg(), "no blob"));
	st_view_release(&v);
	st_close(s);
}

struct pattern {
	uint64_t seed;
};

static void pattern_fill(void *ctx, void *dst, size_t len)
{
	uint64_t x = ((struct pattern *)ctx)->seed;
	unsigned char *p = dst;
	for (size_t i = 0; i < len; i++) {
		if ((i & 7) == 0)
			x = x * 6364136223846793005ull + 1442695040888963407ull;
		p[i] = (unsigned char)(x >> (8 * (i & 7)));
	}
}

static void big_blob(void **state)
{
	(void)state;
	const size_t len = 64u << 20, chunk = 1u << 20;
	struct pattern pat = { 42 };
	unsigned char *buf = loom_malloc(len);
	uint8_t sha[32];
	st_view v;

	assert_non_null(buf);
	pattern_fill(&pat, buf, len); /* the caller hashes beforehand */
	loom_sha256(buf, len, sha);
	st_store *s = open_rw(tpath("big"));
	OK(st_blob_put_fill(s, sha, len, pattern_fill, &pat));
	assert_true(st_blob_has(s, sha));
	OK(st_blob_get(s, sha, 1, &v));
	assert_int_equal(v.len, len);
	for (size_t off = 0; off < len; off += 7 * chunk + 13)
		assert_memory_equal((const char *)v.data + off, buf + off,
				    len - off < 4096 ? len - off : 4096);
	st_view_release(&v);
	/* a second put of the same content does not call fill again */
	OK(st_blob_put_fill(s, sha, len, NULL, NULL));
	st_close(s);
	loom_free(buf);
}

/* ---- records ---- */

struct names {
	char v[8][ST_NAME_MAX];
	int n, stop_at;
};

static int collect_adapter(void *ctx, const st_adapter_rec *r)
{
	struct names *c = ctx;
	snprintf(c->v[c->n++], ST_NAME_MAX, "%s", r->name);
	return c->n == c->stop_at;
}

static int collect_model(void *ctx, const st_model_rec *r)
{
	struct names *c = ctx;
	snprintf(c->v[c->n++], ST_NAME_MAX, "%s", r->name);
	return 0;
}

static void records(void **state)
{
	(void)state;
	st_store *s = open_rw(tpath("records"));
	uint8_t a1[32], a2[32], bundle[32], tok[32], missing[32];
	st_adapter_rec r, got;
	st_model_rec m, mg;
	time_t t0 = time(NULL);

	OK(st_blob_put(s, "adapter one", 11, a1));
	OK(st_blob_put(s, "adapter two", 11, a2));
	OK(st_blob_put(s, "bundle", 6, bundle));
	OK(st_blob_put(s, "tokenizer", 9, tok));
	loom_sha256("never stored", 12, missing);

	fill_adapter(&r, "zeta", a1);
	OK(st_adapter_put(s, &r, 0));
	assert_int_equal(r.version, 1);
	assert_true(r.created >= t0 && r.created <= time(NULL));
	OK(st_adapter_get(s, "zeta", &got));
	assert_string_equal(got.name, "zeta");
	assert_string_equal(got.base_model, "stories260k");
	assert_memory_equal(got.sha, a1, 32);
	assert_int_equal(got.rank, 8);
	assert_int_equal(got.max_rank, 16);
	assert_true(got.alpha == 16.5f);
	assert_int_equal(got.targets, 5);
	assert_int_equal(got.use_rslora, 1);
	assert_int_equal(got.bytes, 12345);
	assert_int_equal(got.version, 1);
	assert_int_equal(got.created, r.created);

	/* existing name without replace */
	fill_adapter(&r, "zeta", a2);
	FAILS(st_adapter_put(s, &r, 0), LOOM_EEXIST);
	assert_non_null(strstr(loom_errmsg(), "zeta"));
	OK(st_adapter_get(s, "zeta", &got));
	assert_memory_equal(got.sha, a1, 32);
	/* replace makes version 2 with the new blob */
	OK(st_adapter_put(s, &r, 1));
	assert_int_equal(r.version, 2);
	OK(st_adapter_get(s, "zeta", &got));
	assert_memory_equal(got.sha, a2, 32);
	assert_int_equal(got.version, 2);
	/* replace of a name that does not exist yet: version 1 */
	fill_adapter(&r, "alpha", a1);
	OK(st_adapter_put(s, &r, 1));
	assert_int_equal(r.version, 1);
	/* a record whose blob is not in the store */
	fill_adapter(&r, "mid", missing);
	FAILS(st_adapter_put(s, &r, 0), LOOM_ENOTFOUND);
	assert_non_null(strstr(loom_errmsg(), "not in the store"));
	FAILS(st_adapter_get(s, "mid", &got), LOOM_ENOTFOUND);
	fill_adapter(&r, "mid", a2);
	OK(st_adapter_put(s, &r, 0));

	/* each: name order, early stop */
	struct names c = { .stop_at = 0 };
	OK(st_adapter_each(s, collect_adapter, &c));
	assert_int_equal(c.n, 3);
	assert_string_equal(c.v[0], "alpha");
	assert_string_equal(c.v[1], "mid");
	assert_string_equal(c.v[2], "zeta");
	memset(&c, 0, sizeof c);
	c.stop_at = 2;
	OK(st_adapter_each(s, collect_adapter, &c));
	assert_int_equal(c.n, 2);

	/* models, and names unique across kinds */
	memset(&m, 0, sizeof m);
	snprintf(m.name, sizeof m.name, "base");
	memcpy(m.sha, bundle, 32);
	memcpy(m.tokenizer_sha, tok, 32);
	m.bytes = 6;
	OK(st_model_put(s, &m, 0));
	assert_int_equal(m.version, 1);
	OK(st_model_get(s, "base", &mg));
	assert_memory_equal(mg.sha, bundle, 32);
	assert_memory_equal(mg.tokenizer_sha, tok, 32);
	assert_int_equal(mg.bytes, 6);
	OK(st_model_put(s, &m, 1));
	assert_int_equal(m.version, 2);
	fill_adapter(&r, "base", a1);
	FAILS(st_adapter_put(s, &r, 0), LOOM_EEXIST);
	FAILS(st_adapter_put(s, &r, 1), LOOM_EEXIST);
	assert_non_null(strstr(loom_errmsg(), "taken by a model"));
	snprintf(m.name, sizeof m.name, "zeta");
	FAILS(st_model_put(s, &m, 1), LOOM_EEXIST);
	assert_non_null(strstr(loom_errmsg(), "taken by an adapter"));
	FAILS(st_model_get(s, "zeta", &mg), LOOM_ENOTFOUND);
	/* a model's tokenizer blob must exist too */
	snprintf(m.name, sizeof m.name, "other");
	memcpy(m.tokenizer_sha, missing, 32);
	FAILS(st_model_put(s, &m, 0), LOOM_ENOTFOUND);
	memset(m.tokenizer_sha, 0, 32); /* none */
	OK(st_model_put(s, &m, 0));
	memset(&c, 0, sizeof c);
	OK(st_model_each(s, collect_model, &c));
	assert_int_equal(c.n, 2);
	assert_string_equal(c.v[0], "base");
	assert_string_equal(c.v[1], "other");

	/* delete */
	OK(st_adapter_del(s, "mid"));
	FAILS(st_adapter_get(s, "mid", &got), LOOM_ENOTFOUND);
	FAILS(st_adapter_del(s, "mid"), LOOM_ENOTFOUND);
	OK(st_model_del(s, "other"));
	FAILS(st_model_del(s, "other"), LOOM_ENOTFOUND);
	/* a deleted name is free for the other kind; a new adapter starts at 1 */
	memcpy(m.tokenizer_sha, tok, 32);
	snprintf(m.name, sizeof m.name, "mid");
	OK(st_model_put(s, &m, 0));
	OK(st_model_del(s, "mid"));
	fill_adapter(&r, "mid", a1);
	OK(st_adapter_put(s, &r, 0));
	assert_int_equal(r.version, 1);

	/* bad names */
	fill_adapter(&r, "", a1);
	FAILS(st_adapter_put(s, &r, 0), LOOM_EINVAL);
	memset(r.name, 'x', sizeof r.name); /* no NUL within ST_NAME_MAX */
	FAILS(st_adapter_put(s, &r, 0), LOOM_EINVAL);
	fill_adapter(&r, "ok", a1);
	r.base_model[0] = '\0';
	FAILS(st_adapter_put(s, &r, 0), LOOM_EINVAL);
	FAILS(st_adapter_get(s, "", &got), LOOM_EINVAL);

	/* records survive a reopen */
	st_close(s);
	s = open_rw(tpath("records"));
	OK(st_adapter_get(s, "zeta", &got));
	assert_int_equal(got.version, 2);
	assert_memory_equal(got.sha, a2, 32);
	OK(st_model_get(s, "base", &mg));
	assert_int_equal(mg.version, 2);
	st_close(s);
}

/* ---- sweep ---- */

static void sweep(void **state)
{
	(void)state;
	const char *dir = tpath("sweep");
	st_store *s = open_rw(dir);
	uint8_t sha[40][32], extra[32];
	char body[32];
	size_t removed = 99;

	/* 40 blobs; adapters reference every 3rd, one model references 1 and
	 * (tokenizer) 2; adapter "old" was replaced, leaving its blob 5 behind */
	for (int i = 0; i < 40; i++) {
		int n = snprintf(body, sizeof body, "blob %d", i);
		OK(st_blob_put(s, body, (size_t)n, sha[i]));
	}
	for (int i = 0; i < 40; i += 3) {
		st_adapter_rec r;
		char name[16];
		snprintf(name, sizeof name, "a%02d", i);
		fill_adapter(&r, name, sha[i]);
		OK(st_adapter_put(s, &r, 0));
	}
	st_adapter_rec r;
	fill_adapter(&r, "old", sha[5]);
	OK(st_adapter_put(s, &r, 0));
	fill_adapter(&r, "old", sha[8]);
	OK(st_adapter_put(s, &r, 1));
	st_model_rec m = { .name = "m" };
	memcpy(m.sha, sha[1], 32);
	memcpy(m.tokenizer_sha, sha[2], 32);
	OK(st_model_put(s, &m, 0));
	OK(st_adapter_del(s, "a39"));

	/* blobs this process put for records not yet written stay (pending);
	 * those whose record went away (5 replaced, 39 deleted) go */
	OK(st_sweep(s, &removed));
	assert_int_equal(removed, 2);
	for (int i = 0; i < 40; i++)
		assert_int_equal(st_blob_has(s, sha[i]), i != 5 && i != 39);
	st_close(s);

	/* a fresh process state: the open sweeps exactly the unreferenced ones */
	s = open_rw(dir);
	for (int i = 0; i < 40; i++) {
		int keep = (i % 3 == 0 && i != 39) || i == 1 || i == 2 || i == 8;
		if (st_blob_has(s, sha[i]) != keep)
			fail_msg("blob %d: has=%d, want %d", i, !keep, keep);
	}
	OK(st_sweep(s, &removed));
	assert_int_equal(removed, 0);
	/* a leftover of an older process is removed by an explicit sweep too */
	OK(st_blob_put(s, "leftover", 8, extra));
	st_close(s);
	s = NULL;
	OK(st_open(dir, ST_NOSWEEP, &s)); /* keeps it */
	assert_true(st_blob_has(s, extra));
	OK(st_sweep(s, &removed));
	assert_int_equal(removed, 1);
	assert_false(st_blob_has(s, extra));
	st_close(s);
}

/* ---- read-only, another process ---- */

static int run_helper(char *const argv[])
{
	lt_proc p;
	char log[1024];
	snprintf(log, sizeof log, "%s/helper.log", tmp);
	if (lt_spawn(&p, log, argv) != 0)
		return -1;
	int st = lt_stop(&p, 0, 10000); /* signal 0: just wait */
	if (st != 0)
		lt_proc_dump(&p);
	return st;
}

static int ro_check_main(const char *dir, const char *hex, const char *name)
{
	st_store *s = NULL;
	uint8_t sha[32];
	st_view v;
	st_adapter_rec r;
	if (loom_sha256_parse(hex, sha) != 0)
		return 10;
	if (st_open(dir, ST_RDONLY, &s)) {
		fprintf(stderr, "ro open: %s\n", loom_errmsg());
		return 11;
	}
	if (st_blob_get(s, sha, 1, &v)) {
		fprintf(stderr, "ro get: %s\n", loom_errmsg());
		return 12;
	}
	if (v.len != 5 || memcmp(v.data, "shard", 5) != 0)
		return 13;
	st_view_release(&v);
	if (st_adapter_get(s, name, &r) || r.version != 2 || memcmp(r.sha, sha, 32) != 0)
		return 14;
	/* writes are refused */
	if (st_adapter_del(s, name) != LOOM_EINVAL || st_blob_put(s, "x", 1, sha) != LOOM_EINVAL ||
	    st_sweep(s, NULL) != LOOM_EINVAL)
		return 15;
	if (st_adapter_get(s, name, &r))
		return 16;
	st_close(s);
	return 0;
}

static void read_only(void **state)
{
	(void)state;
	const char *dir = tpath("ro");
	char d[1024], hex[65], name[] = "shared-ad";
	uint8_t sha[32], other[32];
	st_adapter_rec r;
	st_store *s = open_rw(dir), *ro = NULL;

	snprintf(d, sizeof d, "%s", dir);
	OK(st_blob_put(s, "first", 5, other));
	fill_adapter(&r, name, other);
	OK(st_adapter_put(s, &r, 0));
	OK(st_blob_put(s, "shard", 5, sha));
	fill_adapter(&r, name, sha);
	OK(st_adapter_put(s, &r, 1));
	loom_sha256_hex(sha, hex);
	/* the writer keeps the env open while the reader process reads */
	char *argv[] = { self, "--ro-check", d, hex, name, NULL };
	assert_int_equal(run_helper(argv), 0);

	/* in this process, a read-only handle shares the env and cannot write */
	OK(st_open(dir, ST_RDONLY, &ro));
	FAILS(st_adapter_del(ro, name), LOOM_EINVAL);
	OK(st_adapter_get(ro, name, &r));
	st_close(ro);
	st_close(s);
	/* read-only first: a read-write open in the same process is refused */
	OK(st_open(dir, ST_RDONLY, &ro));
	FAILS(st_open(dir, 0, &s), LOOM_EBUSY);
	assert_null(s);
	st_close(ro);

	/* read-only open of nothing */
	FAILS(st_open(tpath("nothing-here"), ST_RDONLY, &ro), LOOM_ENOTFOUND);
	assert_null(ro);
	assert_int_equal(lt_sh("mkdir -p '%s'", tpath("empty-dir")), 0);
	FAILS(st_open(tpath("empty-dir"), ST_RDONLY, &ro), LOOM_ENOTFOUND);
	assert_non_null(strstr(loom_errmsg(), "empty-dir"));
	FAILS(st_open(tpath("no/such/parent"), 0, &ro), LOOM_ENOTFOUND);
	FAILS(st_open("", 0, &ro), LOOM_EINVAL);
	FAILS(st_open(dir, 0x40, &ro), LOOM_EINVAL);
}

/* ---- corruption ---- */

/* Flips byte `at` of blob sha with LMDB directly (no st_ store open). */
static void flip_byte(const char *dir, const uint8_t sha[32], size_t at)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { 32, (void *)sha }, v;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
	assert_int_equal(mdb_env_set_mapsize(env, 64ull << 30), 0);
	assert_int_equal(mdb_env_open(env, dir, MDB_NOTLS, 0644), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "blobs", 0, &dbi), 0);
	assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
	unsigned char *copy = loom_malloc(v.mv_size);
	memcpy(copy, v.mv_data, v.mv_size);
	copy[at] ^= 0x20;
	v.mv_data = copy;
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	loom_free(copy);
}

static void corrupt_blob(void **state)
{
	(void)state;
	const char *dir = tpath("corrupt");
	static const char body[] = "the adapter's weights, 0123456789";
	uint8_t sha[32];
	st_adapter_rec r;
	st_view v;
	st_store *s = open_rw(dir);

	OK(st_blob_put(s, body, sizeof body, sha));
	fill_adapter(&r, "victim", sha);
	OK(st_adapter_put(s, &r, 0));
	st_close(s);
	flip_byte(dir, sha, 7);
	s = open_rw(dir);
	assert_true(st_blob_has(s, sha)); /* referenced: not swept */
	FAILS(st_blob_get(s, sha, 1, &v), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "corrupt"));
	assert_null(v.txn);
	st_view_release(&v);
	OK(st_blob_get(s, sha, 0, &v)); /* unverified reads see the bad bytes */
	assert_int_equal(v.len, sizeof body);
	assert_int_equal(((const char *)v.data)[7], body[7] ^ 0x20);
	st_view_release(&v);
	st_close(s);
}

/* ---- records this loom cannot read, a file that is not LMDB ---- */

/* Writes key -> val into database db with LMDB directly (no st_ store open). */
static void raw_put(const char *dir, const char *db, const char *key, const void *val,
		    size_t len)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { strlen(key), (void *)key }, v = { len, (void *)val };
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
	assert_int_equal(mdb_env_set_mapsize(env, 64ull << 30), 0);
	assert_int_equal(mdb_env_open(env, dir, MDB_NOTLS, 0644), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static void foreign_records(void **state)
{
	(void)state;
	const char *dir = tpath("foreign");
	static const uint8_t future[] = { 9, 1, 2, 3 }, cut[] = { 1, 0, 0 };
	uint8_t a[32], left[32];
	st_adapter_rec r;
	st_model_rec m;
	struct names c = { .stop_at = 0 };
	size_t removed;
	st_store *s = open_rw(dir);

	OK(st_blob_put(s, "good", 4, a));
	fill_adapter(&r, "good", a);
	OK(st_adapter_put(s, &r, 0));
	OK(st_blob_put(s, "leftover", 8, left));
	st_close(s);
	raw_put(dir, "adapters", "future", future, sizeof future);
	raw_put(dir, "models", "cut", cut, sizeof cut);

	/* the open still works; its sweep keeps every blob */
	s = open_rw(dir);
	assert_true(st_blob_has(s, left));
	FAILS(st_adapter_get(s, "future", &r), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "layout 9"));
	FAILS(st_model_get(s, "cut", &m), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "truncated"));
	/* listing skips what it cannot read */
	OK(st_adapter_each(s, collect_adapter, &c));
	assert_int_equal(c.n, 1);
	assert_string_equal(c.v[0], "good");
	memset(&c, 0, sizeof c);
	OK(st_model_each(s, collect_model, &c));
	assert_int_equal(c.n, 0);
	/* an explicit sweep refuses; the names stay taken */
	FAILS(st_sweep(s, &removed), LOOM_EFORMAT);
	fill_adapter(&r, "cut", a);
	FAILS(st_adapter_put(s, &r, 1), LOOM_EEXIST);
	fill_adapter(&r, "future", a);
	FAILS(st_adapter_put(s, &r, 0), LOOM_EEXIST);
	/* once they are deleted, the sweep runs again */
	OK(st_adapter_del(s, "future"));
	OK(st_model_del(s, "cut"));
	OK(st_sweep(s, &removed));
	assert_int_equal(removed, 1);
	assert_false(st_blob_has(s, left));
	assert_true(st_blob_has(s, a));
	st_close(s);

	/* a data.mdb that is not LMDB */
	const char *bad = tpath("not-lmdb");
	assert_int_equal(lt_sh("mkdir -p '%s' && head -c 65536 /dev/urandom > '%s/data.mdb'", bad,
			       bad),
			 0);
	loom_err rc = st_open(bad, 0, &s);
	if (rc == LOOM_OK || !strstr(loom_errmsg(), "mdb") || !strstr(loom_errmsg(), "not-lmdb"))
		fail_msg("garbage data.mdb: got %s \"%s\"", loom_strerror(rc), loom_errmsg());
	assert_null(s);
}

/* ---- crash safety ---- */

#define CRASH_NAMES 6

static int crash_loop_main(const char *dir, unsigned seed, const char *ready)
{
	st_store *s = NULL;
	unsigned char buf[8192];
	FILE *fp;
	if (st_open(dir, 0, &s)) {
		fprintf(stderr, "crash-loop open: %s\n", loom_errmsg());
		return 20;
	}
	if ((fp = fopen(ready, "w")))
		fclose(fp);
	srand(seed);
	for (unsigned i = 0;; i++) {
		char name[16];
		uint8_t sha[32];
		st_adapter_rec r;
		snprintf(name, sizeof name, "ad%d", rand() % CRASH_NAMES);
		/* the blob names its adapter, so the parent can check pairing */
		size_t len = 64 + (size_t)(rand() % 4000);
		int n = snprintf((char *)buf, sizeof buf, "%s|%u|%u|", name, seed, i);
		for (size_t j = (size_t)n; j < len; j++)
			buf[j] = (unsigned char)rand();
		if (st_blob_put(s, buf, len, sha)) {
			fprintf(stderr, "crash-loop put: %s\n", loom_errmsg());
			return 21;
		}
		(void)st_blob_has(s, sha); /* a read txn too: kills leave reader slots */
		fill_adapter(&r, name, sha);
		r.bytes = len;
		if (rand() % 10 == 0) {
			loom_err rc = st_adapter_del(s, name);
			if (rc && rc != LOOM_ENOTFOUND)
				return 22;
		} else if (st_adapter_put(s, &r, 1)) {
			fprintf(stderr, "crash-loop record: %s\n", loom_errmsg());
			return 23;
		}
	}
}

struct check {
	st_store *s;
	int n;
	uint8_t shas[CRASH_NAMES][32];
	int fails;
};

static int check_adapter(void *ctx, const st_adapter_rec *r)
{
	struct check *c = ctx;
	st_view v;
	if (st_blob_get(c->s, r->sha, 1, &v)) {
		fprintf(stderr, "adapter %s: %s\n", r->name, loom_errmsg());
		c->fails++;
		return 0;
	}
	size_t nl = strlen(r->name);
	if (v.len != r->bytes || v.len < nl + 1 || memcmp(v.data, r->name, nl) != 0 ||
	    ((const char *)v.data)[nl] != '|') {
		fprintf(stderr, "adapter %s: its blob belongs to another record\n", r->name);
		c->fails++;
	}
	st_view_release(&v);
	if (c->n < CRASH_NAMES)
		memcpy(c->shas[c->n], r->sha, 32);
	c->n++;
	return 0;
}

/* With no st_ store open: every blob in the env is one of the shas. */
static int count_blobs(const char *dir, const uint8_t (*shas)[32], int n, int *stray)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_val k, v;
	int total = 0;
	*stray = 0;
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
	assert_int_equal(mdb_env_set_mapsize(env, 64ull << 30), 0);
	assert_int_equal(mdb_env_open(env, dir, MDB_NOTLS | MDB_RDONLY, 0644), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "blobs", 0, &dbi), 0);
	assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
	for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		int found = 0;
		for (int i = 0; i < n; i++)
			found |= k.mv_size == 32 && memcmp(k.mv_data, shas[i], 32) == 0;
		*stray += !found;
		total++;
	}
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return total;
}

static void crash_safety(void **state)
{
	(void)state;
	const char *dir = tpath("crash");
	char d[1024], seed[16], ready[1100];
	uint8_t last[CRASH_NAMES][32];
	int last_n = -1, rounds = 60, changed = 0;
	struct timespec ts;

	snprintf(ready, sizeof ready, "%s.ready", dir);
	snprintf(d, sizeof d, "%s", dir);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	srand((unsigned)ts.tv_nsec);
	st_close(open_rw(dir)); /* create it */
	for (int round = 0; round < rounds; round++) {
		lt_proc p;
		char log[1024];
		snprintf(seed, sizeof seed, "%d", rand());
		snprintf(log, sizeof log, "%s/crash.log", tmp);
		char *argv[] = { self, "--crash-loop", d, seed, ready, NULL };
		unlink(ready);
		assert_int_equal(lt_spawn(&p, log, argv), 0);
		/* most kills land in the loop (after the open), some in the open */
		if (rand() % 8 != 0)
			for (int w = 0; w < 5000 && access(ready, F_OK) != 0; w++)
				usleep(1000);
		usleep((useconds_t)(rand() % 40000));
		int st = lt_stop(&p, SIGKILL, 5000);
		if (st != 128 + SIGKILL) {
			lt_proc_dump(&p);
			fail_msg("round %d: the writer exited with %d before the kill", round, st);
		}

		/* reopen read-write: reader check + sweep */
		st_store *s = open_rw(dir);
		struct check c = { .s = s };
		size_t removed = 9;
		OK(st_adapter_each(s, check_adapter, &c));
		if (c.fails)
			fail_msg("round %d: %d adapter(s) incomplete", round, c.fails);
		OK(st_sweep(s, &removed));
		assert_int_equal(removed, 0);
		st_close(s);
		int stray, total = count_blobs(dir, (const uint8_t(*)[32])c.shas, c.n, &stray);
		if (stray || total != c.n)
			fail_msg("round %d: %d blobs for %d records, %d unreferenced", round, total,
				 c.n, stray);
		changed += c.n != last_n || memcmp(last, c.shas, (size_t)c.n * 32) != 0;
		last_n = c.n;
		memcpy(last, c.shas, sizeof last);
	}
	/* the writer got somewhere in many rounds (a loaded machine may starve a few) */
	if (changed < rounds / 4)
		fail_msg("the records changed in only %d of %d rounds: the writer barely ran",
			 changed, rounds);
}

static int setup(void **state)
{
	(void)state;
	tmp = lt_tmpdir("test-store");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	lt_sh("rm -rf '%s'", tmp);
	loom_free(tmp);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "--ro-check") == 0)
		return ro_check_main(argv[2], argv[3], argv[4]);
	if (argc == 5 && strcmp(argv[1], "--crash-loop") == 0)
		return crash_loop_main(argv[2], (unsigned)strtoul(argv[3], NULL, 10), argv[4]);
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		return 1;
	self[n] = '\0';

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(blobs),	cmocka_unit_test(big_blob),
		cmocka_unit_test(records),	cmocka_unit_test(sweep),
		cmocka_unit_test(read_only),	cmocka_unit_test(corrupt_blob),
		cmocka_unit_test(foreign_records),
		cmocka_unit_test(crash_safety),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
