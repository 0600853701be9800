/*
 * tests/fuzz/test_fuzz_smoke.c — every fuzz target (tests/fuzz/fuzz_*.c,
 * see fuzz.h) for about a second and a half in any build, without
 * libFuzzer: first its seed inputs as they are (at least one must be
 * accepted, or the seeds or the target are broken), then seeded random
 * mutations of them (bit flips, interesting bytes and integers, truncations,
 * insertions, deletions, duplicated ranges, dictionary words, numbers in
 * text, splices of two seeds). The input sequence is deterministic
 * (LOOM_FUZZ_SEED); how far it gets depends on the machine (LOOM_FUZZ_SECONDS
 * per target, default 1.5).
 *
 * Failures: a crash, an abort (a FUZZ_CHECK invariant) or a hang (SIGALRM)
 * saves the input to $LOOM_TMP/fuzz-crash-<target>.bin and says so; a leak
 * (more live heap blocks after each of three runs of one input; the C
 * allocator is wrapped to count them, except under ASan, where
 * LeakSanitizer reports at exit) fails the case.
 * Replay saved inputs (or libFuzzer's crash-* files) in this build with
 *     build/tests/fuzz_test_fuzz_smoke TARGET FILE...
 * A target with a known, reported crash in product code is skipped with the
 * reason (field `skip` of the table) until it is fixed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/fuzz/fuzz.h"

#include "tests/fuzz/fuzz_adapter_blob.c"
#include "tests/fuzz/fuzz_bundle.c"
#include "tests/fuzz/fuzz_grammar.c"
#include "tests/fuzz/fuzz_jinja.c"
#include "tests/fuzz/fuzz_multipart.c"
#include "tests/fuzz/fuzz_openai_body.c"
#include "tests/fuzz/fuzz_peft_config.c"
#include "tests/fuzz/fuzz_proto.c"
#include "tests/fuzz/fuzz_safetensors.c"
#include "tests/fuzz/fuzz_tokenizer_input.c"
#include "tests/fuzz/fuzz_tokenizer_json.c"

#if defined(__SANITIZE_ADDRESS__)
#define SMOKE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SMOKE_ASAN 1
#endif
#endif
#ifndef SMOKE_ASAN
#define SMOKE_ASAN 0
#endif

typedef struct smoke_target {
	const char *name;
	int (*fn)(const uint8_t *data, size_t size);
	void (*seeds)(fuzz_seeds *s);
	const fuzz_word *dict;
	const char *skip;           /* non-NULL: a reported crash in product code, not fixed yet */
	const char *skip_sanitized; /* the same, for a report only sanitizer builds see */
} smoke_target;

#define TARGET(n) #n, fuzz_##n, fuzz_##n##_seeds, fuzz_##n##_dict

static const smoke_target targets[] = {
	{ TARGET(proto), NULL, NULL },
	{ TARGET(safetensors), NULL, NULL },
	{ TARGET(bundle), NULL, NULL },
	{ TARGET(tokenizer_json), NULL, NULL },
	{ TARGET(tokenizer_input), NULL, NULL },
	{ TARGET(openai_body), NULL, NULL },
	{ TARGET(peft_config), NULL, NULL },
	{ TARGET(adapter_blob), NULL, NULL },
	{ TARGET(multipart), NULL, NULL },
	{ TARGET(jinja), NULL, NULL },
	{ TARGET(grammar), NULL, NULL },
};

/* UBSan (sanitizer builds): stop at the first report, by abort() so that the
 * SIGABRT handler below saves the input (gcc's libubsan runs no death
 * callback of ASan's). */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void)
{
	return "halt_on_error=1:abort_on_error=1:print_stacktrace=1";
}

/* ---- the input being run, for the crash handler ---- */

static const char *cur_target;
static const uint8_t *cur_data;
static size_t cur_size;
static long cur_index; /* -1-based seeds: -(i+1); mutants: 0, 1, ... */
static char crash_path[600];

static void save_current(const char *why)
{
	char msg[900];
	int fd, n;
	if (!cur_target)
		return;
	fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		size_t off = 0;
		while (off < cur_size) {
			ssize_t w = write(fd, cur_data + off, cur_size - off);
			if (w <= 0)
				break;
			off += (size_t)w;
		}
		close(fd);
	}
	n = snprintf(msg, sizeof msg,
		     "\nfuzz smoke: target %s: %s on %s %ld (%zu bytes); input saved to %s\n"
		     "  replay: tests/fuzz_test_fuzz_smoke %s %s\n",
		     cur_target, why, cur_index < 0 ? "seed" : "mutant",
		     cur_index < 0 ? -cur_index - 1 : cur_index, cur_size,
		     fd >= 0 ? crash_path : "(could not save)", cur_target, crash_path);
	if (n > 0)
		(void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

static void on_signal(int sig)
{
	save_current(sig == SIGALRM ? "hang (no progress before the alarm)" : strsignal(sig));
	signal(sig, SIG_DFL);
	raise(sig);
}

static void on_sanitizer_death(void)
{
	save_current("sanitizer report");
}

void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));

static void install_handlers(void)
{
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGALRM };
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		if (SMOKE_ASAN && (sigs[i] == SIGSEGV || sigs[i] == SIGBUS || sigs[i] == SIGFPE))
			continue; /* ASan's own handler reports these better */
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_signal;
		sa.sa_flags = SA_RESETHAND | SA_NODEFER;
		sigaction(sigs[i], &sa, NULL);
	}
	if (__sanitizer_set_death_callback)
		__sanitizer_set_death_callback(on_sanitizer_death);
}

/* ---- running one input ---- */

typedef struct smoke_stats {
	long runs, accepted, leaks_suspected;
	double slowest;
} smoke_stats;

/*
 * Live heap blocks, counted by wrapping the C allocator (this program's
 * definitions take the place of libc's for every library it loads, so
 * jansson, msgpack-c and PCRE2 are counted too). glibc's own counters
 * (mallinfo2) count blocks parked in its per-thread cache as in use, which
 * makes them useless here. Not under ASan, which owns malloc.
 */
#if !SMOKE_ASAN
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t c, size_t n);
extern void *__libc_realloc(void *p, size_t n);
extern void *__libc_memalign(size_t align, size_t n);
extern void __libc_free(void *p);

static long live_blocks;

static void *counted(void *p)
{
	if (p)
		__atomic_add_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
	return p;
}

void *malloc(size_t n)
{
	return counted(__libc_malloc(n));
}

void *calloc(size_t c, size_t n)
{
	return counted(__libc_calloc(c, n));
}

void *realloc(void *p, size_t n)
{
	void *r = __libc_realloc(p, n);
	if (!p && r)
		__atomic_add_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
	else if (p && !n && !r) /* glibc: realloc(p, 0) frees */
		__atomic_sub_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
	return r;
}

void free(void *p)
{
	if (p)
		__atomic_sub_fetch(&live_blocks, 1, __ATOMIC_RELAXED);
	__libc_free(p);
}

void *memalign(size_t a, size_t n)
{
	return counted(__libc_memalign(a, n));
}

void *aligned_alloc(size_t a, size_t n)
{
	return counted(__libc_memalign(a, n));
}

int posix_memalign(void **out, size_t a, size_t n)
{
	if (a < sizeof(void *) || (a & (a - 1)))
		return EINVAL;
	void *p = counted(__libc_memalign(a, n));
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

void *valloc(size_t n)
{
	return counted(__libc_memalign((size_t)sysconf(_SC_PAGESIZE), n));
}
#endif

static size_t heap_in_use(void)
{
#if SMOKE_ASAN
	return 0;
#else
	return (size_t)__atomic_load_n(&live_blocks, __ATOMIC_RELAXED);
#endif
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs fn on an exact-size heap copy (so ASan sees over-reads); returns
 * whether the heap grew across the call. */
static int run_copy(const smoke_target *t, const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1);
	size_t before, after;
	assert_non_null(copy);
	if (size)
		memcpy(copy, data, size);
	cur_data = copy;
	before = heap_in_use();
	t->fn(copy, size);
	after = heap_in_use();
	cur_data = data;
	free(copy);
	return after > before;
}

static void run_one(const smoke_target *t, const uint8_t *data, size_t size, long index,
		    smoke_stats *st)
{
	double t0 = now_s();
	cur_data = data;
	cur_size = size;
	cur_index = index;
	fuzz_accepted = 0;
	int grew = run_copy(t, data, size);
	st->accepted += fuzz_accepted;
	st->runs++;
	double dt = now_s() - t0;
	if (dt > st->slowest)
		st->slowest = dt;
	/* growth once may be a cache filled on first use; growth on every run is a leak */
	if (grew && run_copy(t, data, size) && run_copy(t, data, size)) {
		st->leaks_suspected++;
		save_current("leak (more live heap blocks after each run)");
		fail_msg("%s: %s %ld leaks (more live heap blocks after each of 3 runs)", t->name,
			 index < 0 ? "seed" : "mutant", index < 0 ? -index - 1 : index);
	}
}

/* ---- mutations ---- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t x = rng_state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

static size_t below(size_t n)
{
	return n ? (size_t)(rnd() % n) : 0;
}

/* A position, biased to the first 4 KiB (headers live there). */
static size_t pos_in(size_t n)
{
	if (n > 4096 && (rnd() & 1))
		return below(4096);
	return below(n);
}

typedef struct mbuf {
	uint8_t *b;
	size_t n, cap;
} mbuf;

static void insert(mbuf *m, size_t at, const void *p, size_t k)
{
	if (m->n + k > m->cap)
		k = m->cap - m->n;
	memmove(m->b + at + k, m->b + at, m->n - at);
	memcpy(m->b + at, p, k);
	m->n += k;
}

static void overwrite(mbuf *m, size_t at, const void *p, size_t k)
{
	if (at + k > m->n)
		k = m->n - at;
	memcpy(m->b + at, p, k);
}

static void mutate_once(mbuf *m, const fuzz_seeds *seeds, const fuzz_word *dict, size_t n_dict)
{
	static const uint8_t bytes[] = { 0, 1, 0x7f, 0x80, 0xff, 0xfe, '"', '\\', '{', '}', '[',
					 ']', ',', ':', '0', '-', 0xc0, 0xdf, 0xe2, 0xf4, 0x90 };
	static const uint64_t ints[] = { 0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff,
					 0x7fffffff, 0x80000000ull, 0xffffffffull,
					 0x100000000ull, 0x7fffffffffffffffull, UINT64_MAX };
	static const char *const nums[] = { "0", "-1", "1", "-0", "1e309", "-1e309", "4294967296",
					    "2147483648", "9223372036854775808",
					    "18446744073709551616", "0.5", "1e-400", "999999999" };
	size_t at = pos_in(m->n), k;
	uint8_t tmp[16];

	switch (below(13)) {
	case 0: /* flip a bit */
		if (m->n)
			m->b[at] ^= (uint8_t)(1u << below(8));
		break;
	case 1: /* a random byte */
		if (m->n)
			m->b[at] = (uint8_t)rnd();
		break;
	case 2: /* an interesting byte */
		if (m->n)
			m->b[at] = bytes[below(sizeof bytes)];
		break;
	case 3: /* truncate */
		if (!below(3))
			m->n = below(m->n + 1);
		break;
	case 4: /* delete a range */
		if (m->n) {
			k = 1 + below(m->n - at < 16 ? m->n - at : 16);
			memmove(m->b + at, m->b + at + k, m->n - at - k);
			m->n -= k;
		}
		break;
	case 5: /* insert random bytes */
		k = 1 + below(8);
		for (size_t i = 0; i < k; i++)
			tmp[i] = (uint8_t)rnd();
		insert(m, at, tmp, k);
		break;
	case 6: /* insert a dictionary word */
	case 7: /* overwrite with one */
		if (n_dict) {
			const fuzz_word *w = &dict[below(n_dict)];
			if (below(2))
				insert(m, at, w->s, w->n);
			else
				overwrite(m, at, w->s, w->n);
		}
		break;
	case 8: /* duplicate a range elsewhere */
		if (m->n) {
			size_t from = pos_in(m->n);
			k = 1 + below(m->n - from < 64 ? m->n - from : 64);
			uint8_t chunk[64];
			memcpy(chunk, m->b + from, k);
			insert(m, at, chunk, k);
		}
		break;
	case 9: { /* splice: this up to at, another seed from a point on */
		const fuzz_seed *o = &seeds->v[below(seeds->n)];
		size_t from = pos_in(o->size);
		m->n = at;
		insert(m, at, o->data + from, o->size - from);
		break;
	}
	case 10: { /* an interesting integer, 1/2/4/8 bytes, either byte order */
		uint64_t v = ints[below(sizeof ints / sizeof ints[0])];
		size_t w = (size_t)1 << below(4);
		int be = (int)below(2);
		for (size_t i = 0; i < w; i++)
			tmp[i] = (uint8_t)(v >> (8 * (be ? w - 1 - i : i)));
		overwrite(m, at, tmp, w);
		break;
	}
	case 11: { /* a number in text replaced by an awkward one */
		size_t i = at;
		while (i < m->n && !(m->b[i] >= '0' && m->b[i] <= '9'))
			i++;
		if (i == m->n)
			break;
		size_t j = i;
		while (j < m->n && ((m->b[j] >= '0' && m->b[j] <= '9') || m->b[j] == '.'))
			j++;
		memmove(m->b + i, m->b + j, m->n - j);
		m->n -= j - i;
		const char *s = nums[below(sizeof nums / sizeof nums[0])];
		insert(m, i, s, strlen(s));
		break;
	}
	default: /* swap two bytes */
		if (m->n) {
			size_t o = pos_in(m->n);
			uint8_t c = m->b[at];
			m->b[at] = m->b[o];
			m->b[o] = c;
		}
		break;
	}
}

static double budget_s(void)
{
	const char *e = getenv("LOOM_FUZZ_SECONDS");
	double v = e ? atof(e) : 0;
	return v > 0 ? v : 1.5;
}

static uint64_t base_seed(const char *name)
{
	const char *e = getenv("LOOM_FUZZ_SEED");
	uint64_t h = e ? strtoull(e, NULL, 0) : 0x6c6f6f6d66757a7aull; /* "loomfuzz" */
	for (const char *p = name; *p; p++)
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	return h ? h : 1;
}

/* LOOM_FUZZ_TARGETS: comma-separated names to run (default all). */
static int selected(const char *name)
{
	const char *e = getenv("LOOM_FUZZ_TARGETS");
	size_t n = strlen(name);
	if (!e || !*e)
		return 1;
	for (const char *p = e; (p = strstr(p, name)); p += n)
		if ((p == e || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
			return 1;
	return 0;
}

static void run_target(void **state)
{
	const smoke_target *t = *state;
	fuzz_seeds seeds = { 0 };
	smoke_stats seed_st = { 0 }, st = { 0 };
	size_t max_seed = 0, n_dict = 0;
	double budget = budget_s(), t0;
	mbuf m;

	if (t->skip || (SMOKE_ASAN && t->skip_sanitized)) {
		print_message("SKIPPED %s: %s\n", t->name, t->skip ? t->skip : t->skip_sanitized);
		skip();
	}
	if (!selected(t->name))
		skip();
	t->seeds(&seeds);
	assert_true(seeds.n > 0);
	for (size_t i = 0; i < seeds.n; i++)
		if (seeds.v[i].size > max_seed)
			max_seed = seeds.v[i].size;
	while (t->dict && t->dict[n_dict].s)
		n_dict++;

	snprintf(crash_path, sizeof crash_path, "%s/fuzz-crash-%s.bin",
		 getenv("LOOM_TMP") && *getenv("LOOM_TMP") ? getenv("LOOM_TMP") : "/tmp", t->name);
	cur_target = t->name;
	install_handlers();
	alarm((unsigned)budget + 60);

	t0 = now_s();
	for (size_t i = 0; i < seeds.n; i++)
		run_one(t, seeds.v[i].data, seeds.v[i].size, -(long)i - 1, &seed_st);
	if (!seed_st.accepted)
		fail_msg("%s: none of its %zu seeds is accepted: the seeds or the target are broken",
			 t->name, seeds.n);

	m.cap = 2 * max_seed + 4096;
	m.b = malloc(m.cap);
	assert_non_null(m.b);
	rng_state = base_seed(t->name);
	for (long i = 0; now_s() - t0 < budget; i++) {
		const fuzz_seed *s = &seeds.v[below(seeds.n)];
		memcpy(m.b, s->data, s->size);
		m.n = s->size;
		size_t k = 1 + below(4);
		if (!below(8))
			k += below(16);
		while (k--)
			mutate_once(&m, &seeds, t->dict, n_dict);
		run_one(t, m.b, m.n, i, &st);
	}
	alarm(0);
	cur_target = NULL;
	print_message("%-16s %3zu seeds (%ld accepted), %6ld mutants in %.2f s (%ld accepted), "
		      "slowest input %.3f s\n",
		      t->name, seeds.n, seed_st.accepted, st.runs, now_s() - t0, st.accepted,
		      st.slowest > seed_st.slowest ? st.slowest : seed_st.slowest);
	free(m.b);
	fuzz_seeds_free(&seeds);
}

/* Replay: TARGET FILE... runs the files through one target and reports. */
static int replay(int argc, char **argv)
{
	const smoke_target *t = NULL;
	for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
		if (strcmp(targets[i].name, argv[1]) == 0)
			t = &targets[i];
	if (!t) {
		fprintf(stderr, "no fuzz target \"%s\"; targets:", argv[1]);
		for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
			fprintf(stderr, " %s", targets[i].name);
		fputc('\n', stderr);
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		size_t n;
		char *b = fuzz_read_file(argv[i], &n);
		if (!b) {
			fprintf(stderr, "%s: cannot read\n", argv[i]);
			return 2;
		}
		fprintf(stderr, "%s: %s (%zu bytes)... ", t->name, argv[i], n);
		fuzz_accepted = 0;
		t->fn((const uint8_t *)b, n);
		fprintf(stderr, "ok (%s)\n", fuzz_accepted ? "accepted" : "refused");
		free(b);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct CMUnitTest tests[sizeof targets / sizeof targets[0]];
	const char *tmp = getenv("LOOM_TMP");

	if (argc >= 3)
		return replay(argc, argv);
	if (tmp && *tmp)
		mkdir(tmp, 0755);
	for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++)
		tests[i] = (struct CMUnitTest){ targets[i].name, run_target, NULL, NULL,
						(void *)&targets[i] };
	return cmocka_run_group_tests_name("fuzz_smoke", tests, NULL, NULL);
}
