/*
 * tests/fuzz/fuzz.h — what the fuzz targets share (header-only).
 *
 * A fuzz target is tests/fuzz/fuzz_<name>.c defining
 *   int  fuzz_<name>(const uint8_t *data, size_t size);  (returns 0)
 *   void fuzz_<name>_seeds(fuzz_seeds *s);               (valid inputs to start from)
 *   const fuzz_word fuzz_<name>_dict[];                 (words for mutations)
 * It must never crash, leak or hang on any input; an invariant it checks
 * that does not hold is reported with FUZZ_CHECK, which aborts (a crash for
 * libFuzzer and for the smoke test alike). The same .c file is compiled two
 * ways: #included by tests/fuzz/test_fuzz_smoke.c (ctest, seeded
 * mutations, any build), and by the shim scripts/fuzz generates around
 * LLVMFuzzerTestOneInput (clang -fsanitize=fuzzer,address,undefined).
 * So every file-level name in a target carries its target's prefix.
 *
 * State a target keeps across inputs (a loaded tokenizer, a temp folder) is
 * static and made on first use; it lives until the process exits.
 * Paths: LOOM_SHARED (default ../shared) for real fixtures, LOOM_TMP
 * (default /tmp) for temp folders.
 */
#ifndef LOOM_FUZZ_H
#define LOOM_FUZZ_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Invariant check: prints where and why, then aborts. */
#define FUZZ_CHECK(cond, ...)                                                               \
	do {                                                                                \
		if (!(cond)) {                                                              \
			fprintf(stderr, "%s:%d: fuzz invariant failed: %s: ", __FILE__,     \
				__LINE__, #cond);                                           \
			fprintf(stderr, __VA_ARGS__);                                       \
			fputc('\n', stderr);                                                \
			abort();                                                            \
		}                                                                           \
	} while (0)

/* A dictionary word (may hold NUL bytes): FUZZ_W("literal"). Dictionaries
 * end with { NULL, 0 }. */
typedef struct fuzz_word {
	const char *s;
	size_t n;
} fuzz_word;
#define FUZZ_W(lit) { lit, sizeof(lit) - 1 }

/* Set by a target when the input got past its parser (accepted). The smoke
 * test counts these so a target that rejects everything is noticed. */
static int fuzz_accepted __attribute__((unused));

/* Keeps the compiler from dropping reads whose only purpose is to touch memory. */
static volatile uint64_t fuzz_sink __attribute__((unused));

static inline void fuzz_touch(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 0;
	for (size_t i = 0; i < n; i++)
		h = h * 31 + b[i];
	fuzz_sink += h;
}

/* ---- seed inputs ---- */

typedef struct fuzz_seed {
	unsigned char *data;
	size_t size;
} fuzz_seed;

typedef struct fuzz_seeds {
	fuzz_seed *v;
	size_t n, cap;
} fuzz_seeds;

static inline void fuzz_seed_add(fuzz_seeds *s, const void *p, size_t n)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		fuzz_seed *v = realloc(s->v, cap * sizeof *v);
		if (!v)
			abort();
		s->v = v;
		s->cap = cap;
	}
	unsigned char *d = malloc(n ? n : 1);
	if (!d)
		abort();
	if (n)
		memcpy(d, p, n);
	s->v[s->n].data = d;
	s->v[s->n].size = n;
	s->n++;
}

static inline void fuzz_seed_str(fuzz_seeds *s, const char *text)
{
	fuzz_seed_add(s, text, strlen(text));
}

static inline void fuzz_seeds_free(fuzz_seeds *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i].data);
	free(s->v);
	memset(s, 0, sizeof *s);
}

/* Reads a whole file (malloc'ed, NUL-terminated; *n its size) or NULL. */
static inline char *fuzz_read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long len;
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)len + 1)) && fread(buf, 1, (size_t)len, f) == (size_t)len) {
		buf[len] = '\0';
		*n = (size_t)len;
	} else {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

/* Adds the file as a seed; 0, or -1 (with a message) when it cannot be read. */
static inline int fuzz_seed_file(fuzz_seeds *s, const char *path)
{
	size_t n;
	char *b = fuzz_read_file(path, &n);
	if (!b) {
		fprintf(stderr, "fuzz: cannot read seed %s: %s\n", path, strerror(errno));
		return -1;
	}
	fuzz_seed_add(s, b, n);
	free(b);
	return 0;
}

/* ---- paths ---- */

/* LOOM_SHARED/rel in one of 4 rotating static buffers. */
static inline const char *fuzz_shared_path(const char *rel)
{
	static char bufs[4][1024];
	static int k;
	const char *root = getenv("LOOM_SHARED");
	char *b = bufs[k++ % 4];
	snprintf(b, sizeof bufs[0], "%s/%s", root && *root ? root : "../shared", rel);
	return b;
}

static inline int fuzz_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p) == 0 || errno == ENOENT ? 0 : -1;
}

static char fuzz_tmp[400] __attribute__((unused));

static inline void fuzz_tmp_cleanup(void)
{
	if (fuzz_tmp[0])
		nftw(fuzz_tmp, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* This process's temp folder (made on first call, removed at exit);
 * aborts when it cannot be made. */
static inline const char *fuzz_tmpdir(void)
{
	if (!fuzz_tmp[0]) {
		const char *root = getenv("LOOM_TMP");
		char t[sizeof fuzz_tmp];
		if (!root || !*root)
			root = "/tmp";
		snprintf(t, sizeof t, "%s/fuzz-%d-XXXXXX", root, (int)getpid());
		if (!mkdtemp(t)) {
			/* LOOM_TMP may not exist yet */
			char cmd[600];
			snprintf(cmd, sizeof cmd, "mkdir -p '%s'", root);
			if (system(cmd) != 0 || !mkdtemp(t)) {
				fprintf(stderr, "fuzz: cannot make a temp folder under %s: %s\n",
					root, strerror(errno));
				abort();
			}
		}
		memcpy(fuzz_tmp, t, sizeof t);
		atexit(fuzz_tmp_cleanup);
	}
	return fuzz_tmp;
}

/* Writes n bytes to path (replacing its content); aborts on failure (the
 * disk, not the input). Overwrites in place and then cuts the length: ext4
 * flushes a file truncated to 0 and rewritten at close (auto_da_alloc),
 * which made a rewrite per input cost milliseconds. */
static inline void fuzz_write_file(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	size_t off = 0;
	if (fd < 0)
		goto fail;
	while (off < n) {
		ssize_t w = pwrite(fd, (const char *)p + off, n - off, (off_t)off);
		if (w <= 0)
			goto fail;
		off += (size_t)w;
	}
	if (ftruncate(fd, (off_t)n) != 0 || close(fd) != 0)
		goto fail;
	return;
fail:
	fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
	abort();
}

#endif
