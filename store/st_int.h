/*
 * store/st_int.h — what store/'s own files share (not for other modules).
 *
 * One st_env per LMDB environment per process: LMDB forbids opening the
 * same environment twice in one process (closing the second handle's lock
 * file descriptor drops the first one's POSIX locks), so st_open() hands out
 * st_store handles that share one refcounted st_env, found by the directory's
 * device and inode. The env remembers the pid that opened it and refuses to
 * be used from a forked child.
 *
 * Pending blobs: a blob written by this process whose record is not yet
 * committed is "pending"; st_sweep() leaves pending blobs alone for
 * ST_PENDING_TTL seconds so that a sweep on one thread cannot delete the
 * blob another thread is about to reference. A record commit drops its
 * blobs from the set.
 */
#ifndef ST_INT_H
#define ST_INT_H

#include <lmdb.h>
#include <pthread.h>
#include <sys/types.h>
#include <time.h>

#include "store.h"

#define ST_MAP_SIZE (64ull << 30) /* sparse without WRITEMAP: the file grows as written */
#define ST_MAX_READERS 1024       /* read txns: one per open view, per process too */
#define ST_PENDING_TTL 3600

/* On-disk record layouts (little endian, first byte = layout version). */
#define ST_REC_V1 1

struct st_pending {
	uint8_t sha[32];
	time_t since;
};

typedef struct st_env {
	MDB_env *env;
	MDB_dbi blobs, adapters, models;
	dev_t dev;
	ino_t ino;
	int rdonly;            /* the LMDB env itself was opened MDB_RDONLY */
	pid_t pid;             /* the process that opened it */
	int refs;              /* st_store handles sharing it; guarded by the global list lock */
	char *dir;
	pthread_mutex_t mu;    /* guards pending */
	struct st_pending *pending;
	size_t n_pending, cap_pending;
	struct st_env *next;
} st_env;

struct st_store {
	st_env *e;
	int rdonly;            /* this handle may not write (env RDONLY, or asked for) */
	int nosweep;
};

/* Translates an LMDB (or errno) code to a loom_err and records
 * "store DIR: WHAT: mdb_strerror text (mdb N)". */
loom_err st__mdb_fail(const st_store *s, int mrc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Begins a txn (write when !rdonly). Refuses writes on a read-only handle and
 * any use from a forked child. */
loom_err st__begin(st_store *s, int rdonly, MDB_txn **txn);
/* Commits; on failure the txn is gone (LMDB aborts it). what names the step. */
loom_err st__commit(st_store *s, MDB_txn *txn, const char *what);

/* Pending blob set (see above). */
void st__pending_add(st_store *s, const uint8_t sha[32]);
void st__pending_drop(st_store *s, const uint8_t sha[32]);
/* 1 if sha is pending and younger than ST_PENDING_TTL (older entries are
 * forgotten as a side effect). */
int st__pending_has(st_store *s, const uint8_t sha[32]);

/* The blobs record (key, v) references: sha[0..*n) (a model: bundle and,
 * when set, tokenizer). model: 1 for the models database. LOOM_EFORMAT for
 * a record it cannot decode. */
loom_err st__rec_refs(const st_store *s, int model, const MDB_val *key, const MDB_val *v,
		      uint8_t sha[2][32], int *n);

/* Hex prefix of a sha for messages ("3fa4b2c1..."), into buf[17]. */
const char *st__short(const uint8_t sha[32], char buf[17]);

#endif
