/* tests/common/test_sha256.c — SHA-256 against the FIPS 180-4 examples. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "common/alloc.h"
#include "common/sha256.h"

static const struct vec {
	const char *name;
	const char *msg;   /* NULL: one million 'a' */
	const char *hex;
} vecs[] = {
	{ "empty", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
	{ "abc", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
	{ "448 bits", "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
	  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
	{ "896 bits",
	  "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlm"
	  "nopqrsmnopqrstnopqrstu",
	  "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1" },
	{ "million a", NULL, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0" },
};

/* The message of v (the million 'a' is built; caller frees). */
static char *message(const struct vec *v, size_t *len)
{
	char *m;
	if (v->msg) {
		*len = strlen(v->msg);
		m = loom_strdup(v->msg);
	} else {
		*len = 1000000;
		m = loom_malloc(*len);
		memset(m, 'a', *len);
	}
	assert_non_null(m);
	return m;
}

static void one_shot_impl(void)
{
	for (size_t i = 0; i < sizeof vecs / sizeof *vecs; i++) {
		size_t len;
		char *m = message(&vecs[i], &len);
		uint8_t sha[32];
		char hex[65];
		loom_sha256(m, len, sha);
		loom_sha256_hex(sha, hex);
		if (strcmp(hex, vecs[i].hex) != 0)
			fail_msg("%s: got %s, want %s", vecs[i].name, hex, vecs[i].hex);
		loom_free(m);
	}
}

/* Pieces of odd sizes (1, 2, 3, 5, 7, 11, 63, 64, 65, 127 ... cycling) give
 * the same digest as one call. */
static void streaming_impl(void)
{
	static const size_t steps[] = { 1, 2, 3, 5, 7, 11, 63, 64, 65, 127, 0, 129, 1000 };
	for (size_t i = 0; i < sizeof vecs / sizeof *vecs; i++) {
		size_t len, off = 0, k = 0;
		char *m = message(&vecs[i], &len);
		loom_sha256_ctx c;
		uint8_t sha[32];
		char hex[65];
		loom_sha256_init(&c);
		while (off < len) {
			size_t n = steps[k++ % (sizeof steps / sizeof *steps)];
			if (n > len - off)
				n = len - off;
			loom_sha256_update(&c, m + off, n);
			off += n;
		}
		loom_sha256_final(&c, sha);
		loom_sha256_hex(sha, hex);
		if (strcmp(hex, vecs[i].hex) != 0)
			fail_msg("%s streamed: got %s, want %s", vecs[i].name, hex, vecs[i].hex);
		loom_free(m);
	}
}

/* Lengths around the 55/56/64-byte padding boundaries agree between
 * streaming byte by byte and one shot. */
static void padding_boundaries_impl(void)
{
	unsigned char buf[200];
	for (size_t i = 0; i < sizeof buf; i++)
		buf[i] = (unsigned char)(i * 7 + 3);
	for (size_t len = 0; len <= sizeof buf; len++) {
		uint8_t a[32], b[32];
		loom_sha256_ctx c;
		loom_sha256(buf, len, a);
		loom_sha256_init(&c);
		for (size_t j = 0; j < len; j++)
			loom_sha256_update(&c, buf + j, 1);
		loom_sha256_final(&c, b);
		if (memcmp(a, b, 32) != 0)
			fail_msg("length %zu: byte-wise digest differs", len);
	}
}

/* Runs body under each implementation (CPU's choice, then portable C). */
#define BOTH_IMPLS(name)                                                                     \
	static void name(void **state)                                                        \
	{                                                                                     \
		(void)state;                                                                  \
		for (int force = 0; force < 2; force++) {                                      \
			print_message("%s: %s\n", #name, loom_sha256_impl(force));           \
			name##_impl();                                                        \
		}                                                                             \
		loom_sha256_impl(0);                                                          \
	}
BOTH_IMPLS(one_shot)
BOTH_IMPLS(streaming)
BOTH_IMPLS(padding_boundaries)

/* The accelerated and the portable code agree on random inputs of many
 * lengths and alignments. */
static void impls_agree(void **state)
{
	(void)state;
	size_t cap = (1u << 20) + 64;
	unsigned char *buf = loom_malloc(cap);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	assert_non_null(buf);
	for (size_t i = 0; i < cap; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		buf[i] = (unsigned char)x;
	}
	for (int k = 0; k < 300; k++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t off = x % 16, len = k < 299 ? (x >> 8) % 5000 : cap - 16;
		uint8_t a[32], b[32];
		loom_sha256_impl(0);
		loom_sha256(buf + off, len, a);
		loom_sha256_impl(1);
		loom_sha256(buf + off, len, b);
		if (memcmp(a, b, 32) != 0)
			fail_msg("length %zu at offset %zu: implementations differ", len, off);
	}
	loom_sha256_impl(0);
	loom_free(buf);
}

static void hex_parse(void **state)
{
	uint8_t sha[32], back[32];
	char hex[65], upper[65];
	(void)state;
	loom_sha256("abc", 3, sha);
	loom_sha256_hex(sha, hex);
	assert_int_equal(loom_sha256_parse(hex, back), 0);
	assert_memory_equal(sha, back, 32);
	for (int i = 0; i < 65; i++)
		upper[i] = (char)(hex[i] >= 'a' && hex[i] <= 'f' ? hex[i] - 32 : hex[i]);
	memset(back, 0, 32);
	assert_int_equal(loom_sha256_parse(upper, back), 0);
	assert_memory_equal(sha, back, 32);

	static const char *const bad[] = {
		"",
		"abc",
		/* 63 digits */
		"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a",
		/* 65 digits */
		"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad0",
		/* a non-hex digit */
		"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ag",
		" a7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		memcpy(back, sha, 32);
		if (loom_sha256_parse(bad[i], back) != -1)
			fail_msg("accepted \"%s\"", bad[i]);
		assert_memory_equal(back, sha, 32); /* untouched on failure */
	}
	assert_int_equal(loom_sha256_parse(NULL, back), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(one_shot),
		cmocka_unit_test(streaming),
		cmocka_unit_test(padding_boundaries),
		cmocka_unit_test(impls_agree),
		cmocka_unit_test(hex_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
