/*
 * store/st_env.c — opening and closing the LMDB environment, LMDB error
 * translation, transactions, and the pending-blob set (see st_int.h).
 *
 * Environment: one directory (data.mdb + lock.mdb), three named databases,
 * a 64 GiB map (sparse: without MDB_WRITEMAP the file only grows as data is
 * written), MDB_NOTLS so read transactions (blob views) may be held by any
 * thread, many at once. Read-only opens use MDB_RDONLY and never create
 * anything. A read-write open clears reader slots left by killed processes
 * (mdb_reader_check) and sweeps leftover blobs.
 */
#include "st_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/log.h"

static pthread_mutex_t envs_mu = PTHREAD_MUTEX_INITIALIZER;
static st_env *envs; /* open environments of this process */

static loom_err map_code(int mrc)
{
	switch (mrc) {
	case MDB_NOTFOUND:
	case ENOENT:
		return LOOM_ENOTFOUND;
	case MDB_KEYEXIST:
	case EEXIST:
		return LOOM_EEXIST;
	case MDB_MAP_FULL:
	case MDB_TXN_FULL:
	case MDB_CURSOR_FULL:
	case MDB_PAGE_FULL:
	case MDB_BAD_VALSIZE:
		return LOOM_ERANGE;
	case MDB_READERS_FULL:
	case MDB_DBS_FULL:
	case EBUSY:
	case EAGAIN:
		return LOOM_EBUSY;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
	case MDB_INCOMPATIBLE:
		return LOOM_EFORMAT;
	case ENOMEM:
		return LOOM_ENOMEM;
	case EACCES:
	case EPERM:
	case EROFS:
	case EIO:
	case ENOSPC:
	case EDQUOT:
	case ENOTDIR:
		return LOOM_EIO;
	default:
		return LOOM_EINTERNAL;
	}
}

loom_err st__mdb_fail(const st_store *s, int mrc, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	return loom_fail(map_code(mrc), "store %s: %s: %s (mdb %d)", s ? s->e->dir : "?", what,
			 mdb_strerror(mrc), mrc);
}

const char *st__short(const uint8_t sha[32], char buf[17])
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < 8; i++) {
		buf[2 * i] = digits[sha[i] >> 4];
		buf[2 * i + 1] = digits[sha[i] & 15];
	}
	buf[16] = '\0';
	return buf;
}

loom_err st__begin(st_store *s, int rdonly, MDB_txn **txn)
{
	int mrc;

	*txn = NULL;
	if (s->e->pid != getpid())
		return loom_fail(LOOM_EINVAL,
				 "store %s was opened by process %d; a forked child must open it "
				 "itself",
				 s->e->dir, (int)s->e->pid);
	if (!rdonly && s->rdonly)
		return loom_fail(LOOM_EINVAL, "store %s is open read-only; cannot write", s->e->dir);
	mrc = mdb_txn_begin(s->e->env, NULL, rdonly ? MDB_RDONLY : 0, txn);
	if (mrc) {
		*txn = NULL;
		return st__mdb_fail(s, mrc, "cannot begin a %s transaction",
				    rdonly ? "read" : "write");
	}
	return LOOM_OK;
}

loom_err st__commit(st_store *s, MDB_txn *txn, const char *what)
{
	int mrc = mdb_txn_commit(txn);
	if (mrc)
		return st__mdb_fail(s, mrc, "commit of %s failed", what);
	return LOOM_OK;
}

/* ---- pending blobs ---- */

void st__pending_add(st_store *s, const uint8_t sha[32])
{
	st_env *e = s->e;
	time_t now = time(NULL);

	pthread_mutex_lock(&e->mu);
	for (size_t i = 0; i < e->n_pending;) {
		if (memcmp(e->pending[i].sha, sha, 32) == 0) {
			e->pending[i].since = now;
			goto out;
		}
		if (now - e->pending[i].since > ST_PENDING_TTL) {
			e->pending[i] = e->pending[--e->n_pending];
			continue;
		}
		i++;
	}
	if (e->n_pending == e->cap_pending) {
		size_t cap = e->cap_pending ? 2 * e->cap_pending : 16;
		struct st_pending *p = loom_realloc(e->pending, cap * sizeof *p);
		if (!p)
			goto out; /* best effort: a concurrent sweep may then win the race */
		e->pending = p;
		e->cap_pending = cap;
	}
	memcpy(e->pending[e->n_pending].sha, sha, 32);
	e->pending[e->n_pending++].since = now;
out:
	pthread_mutex_unlock(&e->mu);
}

void st__pending_drop(st_store *s, const uint8_t sha[32])
{
	st_env *e = s->e;

	pthread_mutex_lock(&e->mu);
	for (size_t i = 0; i < e->n_pending; i++) {
		if (memcmp(e->pending[i].sha, sha, 32) == 0) {
			e->pending[i] = e->pending[--e->n_pending];
			break;
		}
	}
	pthread_mutex_unlock(&e->mu);
}

int st__pending_has(st_store *s, const uint8_t sha[32])
{
	st_env *e = s->e;
	time_t now = time(NULL);
	int found = 0;

	pthread_mutex_lock(&e->mu);
	for (size_t i = 0; i < e->n_pending;) {
		if (now - e->pending[i].since > ST_PENDING_TTL) {
			e->pending[i] = e->pending[--e->n_pending];
			continue;
		}
		if (memcmp(e->pending[i].sha, sha, 32) == 0)
			found = 1;
		i++;
	}
	pthread_mutex_unlock(&e->mu);
	return found;
}

/* ---- environment ---- */

static void env_free(st_env *e)
{
	if (!e)
		return;
	/* In a forked child the env belongs to the parent: closing it here would
	 * clear the parent's reader slots. Leak it instead. */
	if (e->env && e->pid == getpid())
		mdb_env_close(e->env);
	pthread_mutex_destroy(&e->mu);
	loom_free(e->pending);
	loom_free(e->dir);
	loom_free(e);
}

static loom_err open_dbi(st_store *tmp, MDB_txn *txn, const char *name, MDB_dbi *dbi)
{
	int mrc = mdb_dbi_open(txn, name, tmp->e->rdonly ? 0 : MDB_CREATE, dbi);
	if (mrc == MDB_NOTFOUND)
		return loom_fail(LOOM_ENOTFOUND,
				 "store %s has no \"%s\" database yet (a read-write open creates it)",
				 tmp->e->dir, name);
	if (mrc)
		return st__mdb_fail(tmp, mrc, "cannot open the \"%s\" database", name);
	return LOOM_OK;
}

/* Opens a new LMDB environment for dir into *out. */
static loom_err env_open(const char *dir, int rdonly, const struct stat *st, st_env **out)
{
	st_env *e;
	st_store tmp;
	MDB_txn *txn = NULL;
	loom_err rc = LOOM_OK;
	int mrc, dead = 0;

	*out = NULL;
	if (!(e = loom_calloc(1, sizeof *e)) || !(e->dir = loom_strdup(dir))) {
		loom_free(e);
		return loom_fail(LOOM_ENOMEM, "store %s: out of memory", dir);
	}
	pthread_mutex_init(&e->mu, NULL);
	e->dev = st->st_dev;
	e->ino = st->st_ino;
	e->rdonly = rdonly;
	e->pid = getpid();
	tmp.e = e;
	tmp.rdonly = rdonly;
	tmp.nosweep = 1;
	if ((mrc = mdb_env_create(&e->env))) {
		e->env = NULL;
		rc = st__mdb_fail(&tmp, mrc, "cannot create the LMDB environment");
		goto out;
	}
	if ((mrc = mdb_env_set_maxdbs(e->env, 4)) ||
	    (mrc = mdb_env_set_mapsize(e->env, ST_MAP_SIZE)) ||
	    (mrc = mdb_env_set_maxreaders(e->env, ST_MAX_READERS))) {
		rc = st__mdb_fail(&tmp, mrc, "cannot configure the LMDB environment");
		goto out;
	}
	mrc = mdb_env_open(e->env, dir, MDB_NOTLS | (rdonly ? MDB_RDONLY : 0), 0644);
	if (mrc == ENOENT && rdonly) {
		rc = loom_fail(LOOM_ENOTFOUND,
			       "store %s: no LMDB environment there (the gateway creates it; check "
			       "--store)",
			       dir);
		goto out;
	}
	if (mrc) {
		rc = st__mdb_fail(&tmp, mrc, "cannot open the LMDB environment");
		goto out;
	}
	if ((mrc = mdb_reader_check(e->env, &dead))) {
		rc = st__mdb_fail(&tmp, mrc, "reader check failed");
		goto out;
	}
	if (dead)
		LOOM_INFO("store %s: cleared %d reader slot(s) of dead processes", dir, dead);
	if ((rc = st__begin(&tmp, rdonly, &txn)))
		goto out;
	if ((rc = open_dbi(&tmp, txn, "blobs", &e->blobs)) ||
	    (rc = open_dbi(&tmp, txn, "adapters", &e->adapters)) ||
	    (rc = open_dbi(&tmp, txn, "models", &e->models)))
		goto out;
	/* Committing (also a read txn) keeps the dbi handles for the env. */
	rc = st__commit(&tmp, txn, "the database handles");
	txn = NULL;
	if (rc)
		goto out;
	*out = e;
	e = NULL;
out:
	if (txn)
		mdb_txn_abort(txn);
	env_free(e);
	return rc;
}

loom_err st_open(const char *dir, int flags, st_store **out)
{
	st_store *s = NULL;
	st_env *e = NULL;
	struct stat st;
	int rdonly = flags & ST_RDONLY;
	loom_err rc = LOOM_OK;

	*out = NULL;
	if (!dir || !dir[0])
		return loom_fail(LOOM_EINVAL, "store: empty directory name");
	if (flags & ~(ST_RDONLY | ST_NOSWEEP))
		return loom_fail(LOOM_EINVAL, "store %s: unknown open flags 0x%x", dir, flags);
	if (!rdonly && mkdir(dir, 0755) != 0 && errno != EEXIST)
		return loom_fail(errno == ENOENT ? LOOM_ENOTFOUND : LOOM_EIO,
				 "store %s: cannot create the directory: %s", dir, strerror(errno));
	if (stat(dir, &st) != 0)
		return loom_fail(errno == ENOENT ? LOOM_ENOTFOUND : LOOM_EIO, "store %s: %s", dir,
				 strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return loom_fail(LOOM_EINVAL, "store %s: not a directory", dir);
	if (!(s = loom_calloc(1, sizeof *s)))
		return loom_fail(LOOM_ENOMEM, "store %s: out of memory", dir);

	pthread_mutex_lock(&envs_mu);
	for (e = envs; e; e = e->next)
		if (e->dev == st.st_dev && e->ino == st.st_ino && e->pid == getpid())
			break;
	if (e && !rdonly && e->rdonly) {
		rc = loom_fail(LOOM_EBUSY,
			       "store %s is already open read-only in this process; close it before "
			       "opening it read-write",
			       dir);
		e = NULL;
	} else if (!e && !(rc = env_open(dir, rdonly, &st, &e))) {
		e->next = envs;
		envs = e;
	}
	if (e)
		e->refs++;
	pthread_mutex_unlock(&envs_mu);
	if (rc)
		goto out;

	s->e = e;
	s->rdonly = rdonly;
	s->nosweep = !!(flags & ST_NOSWEEP);
	if (!rdonly && !s->nosweep) {
		size_t removed = 0;
		rc = st_sweep(s, &removed);
		if (rc == LOOM_EFORMAT) {
			/* a record this loom cannot read: keep every blob, but open */
			LOOM_WARN("%s; leftover blobs are kept", loom_errmsg());
			rc = LOOM_OK;
		}
		if (rc)
			goto out;
		if (removed)
			LOOM_INFO("store %s: swept %zu leftover blob(s)", dir, removed);
	}
	*out = s;
	s = NULL;
out:
	st_close(s);
	return rc;
}

void st_close(st_store *s)
{
	st_env **pp;

	if (!s)
		return;
	if (s->e) {
		pthread_mutex_lock(&envs_mu);
		if (--s->e->refs == 0) {
			for (pp = &envs; *pp; pp = &(*pp)->next) {
				if (*pp == s->e) {
					*pp = s->e->next;
					break;
				}
			}
			env_free(s->e);
		}
		pthread_mutex_unlock(&envs_mu);
	}
	loom_free(s);
}

const char *st_dir(const st_store *s)
{
	return s->e->dir;
}
