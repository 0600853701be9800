/*
 * common/sha256.c — SHA-256 (FIPS 180-4 section 6.2).
 *
 * Workload: hashing adapter blobs (MBs) and model bundles (up to GBs) once
 * per registration and again when a reader verifies, so speed matters for
 * bundles: x86 CPUs with the SHA extensions (sha_ni) get them (chosen at
 * first use via cpuid), others a plain, readable compression function. The
 * context buffers a partial 64-byte block; whole blocks of the input are
 * compressed straight from the caller's memory.
 */
#include "sha256.h"

#include <string.h>

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
	0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
	0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
	0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
	0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
	0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
	0xc67178f2,
};

static inline uint32_t ror(uint32_t x, int n)
{
	return (x >> n) | (x << (32 - n));
}

static void compress(uint32_t h[8], const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, k;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 = k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) +
			      K[i] + w[i];
		uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

static void blocks_portable(uint32_t h[8], const uint8_t *p, size_t n)
{
	for (; n; n--, p += 64)
		compress(h, p);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

/* The x86 SHA extensions: state kept as ABEF / CDGH, four rounds per pair of
 * sha256rnds2, the message schedule by sha256msg1/msg2 on four words at a
 * time (x[i] = W[4i..4i+3]). */
__attribute__((target("sha,sse4.1,ssse3"))) static void blocks_shani(uint32_t h[8],
								     const uint8_t *p, size_t n)
{
	const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bll, 0x0405060700010203ll);
	__m128i tmp = _mm_loadu_si128((const __m128i *)&h[0]);
	__m128i s1 = _mm_loadu_si128((const __m128i *)&h[4]);
	__m128i s0, x[4], msg;

	tmp = _mm_shuffle_epi32(tmp, 0xB1);  /* CDAB */
	s1 = _mm_shuffle_epi32(s1, 0x1B);    /* EFGH */
	s0 = _mm_alignr_epi8(tmp, s1, 8);    /* ABEF */
	s1 = _mm_blend_epi16(s1, tmp, 0xF0); /* CDGH */
	for (; n; n--, p += 64) {
		__m128i save0 = s0, save1 = s1;
		for (int i = 0; i < 16; i++) {
			if (i < 4) {
				x[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)),
							bswap);
			} else {
				__m128i a = x[i & 3], b = x[(i + 1) & 3], c = x[(i + 2) & 3],
					d = x[(i + 3) & 3]; /* W[i-4], W[i-3], W[i-2], W[i-1] */
				a = _mm_sha256msg1_epu32(a, b);
				a = _mm_add_epi32(a, _mm_alignr_epi8(d, c, 4));
				x[i & 3] = _mm_sha256msg2_epu32(a, d);
			}
			msg = _mm_add_epi32(x[i & 3], _mm_loadu_si128((const __m128i *)&K[4 * i]));
			s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
			msg = _mm_shuffle_epi32(msg, 0x0E);
			s0 = _mm_sha256rnds2_epu32(s0, s1, msg);
		}
		s0 = _mm_add_epi32(s0, save0);
		s1 = _mm_add_epi32(s1, save1);
	}
	tmp = _mm_shuffle_epi32(s0, 0x1B);  /* FEBA */
	s1 = _mm_shuffle_epi32(s1, 0xB1);   /* DCHG */
	s0 = _mm_blend_epi16(tmp, s1, 0xF0); /* DCBA */
	s1 = _mm_alignr_epi8(s1, tmp, 8);   /* HGFE */
	_mm_storeu_si128((__m128i *)&h[0], s0);
	_mm_storeu_si128((__m128i *)&h[4], s1);
}

static int have_shani(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 19)) || !(c & (1u << 9)))
		return 0; /* SSE4.1, SSSE3 */
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return 0;
	return !!(b & (1u << 29));
}
#else
static void blocks_shani(uint32_t h[8], const uint8_t *p, size_t n)
{
	blocks_portable(h, p, n);
}

static int have_shani(void)
{
	return 0;
}
#endif

/* 0 = not decided yet, 1 = portable, 2 = SHA extensions. A race between
 * threads deciding is harmless: all decide the same. */
static int impl;
static int forced_portable;

static void blocks(uint32_t h[8], const uint8_t *p, size_t n)
{
	int m = __atomic_load_n(&impl, __ATOMIC_RELAXED);
	if (!m) {
		m = !forced_portable && have_shani() ? 2 : 1;
		__atomic_store_n(&impl, m, __ATOMIC_RELAXED);
	}
	if (m == 2)
		blocks_shani(h, p, n);
	else
		blocks_portable(h, p, n);
}

const char *loom_sha256_impl(int force_portable)
{
	if (force_portable >= 0) {
		forced_portable = force_portable;
		__atomic_store_n(&impl, 0, __ATOMIC_RELAXED);
	}
	int m = __atomic_load_n(&impl, __ATOMIC_RELAXED);
	if (!m)
		m = !forced_portable && have_shani() ? 2 : 1;
	return m == 2 ? "x86 SHA extensions" : "portable C";
}

void loom_sha256_init(loom_sha256_ctx *c)
{
	static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	memcpy(c->h, iv, sizeof iv);
	c->len = 0;
	c->fill = 0;
}

void loom_sha256_update(loom_sha256_ctx *c, const void *data, size_t n)
{
	const uint8_t *p = data;

	c->len += n;
	if (c->fill) {
		size_t take = 64 - c->fill < n ? 64 - c->fill : n;
		memcpy(c->buf + c->fill, p, take);
		c->fill += take, p += take, n -= take;
		if (c->fill < 64)
			return;
		blocks(c->h, c->buf, 1);
		c->fill = 0;
	}
	if (n >= 64) {
		blocks(c->h, p, n / 64);
		p += n / 64 * 64;
		n %= 64;
	}
	memcpy(c->buf, p, n);
	c->fill = n;
}

void loom_sha256_final(loom_sha256_ctx *c, uint8_t out[32])
{
	uint64_t bits = c->len * 8;

	c->buf[c->fill++] = 0x80;
	if (c->fill > 56) {
		memset(c->buf + c->fill, 0, 64 - c->fill);
		blocks(c->h, c->buf, 1);
		c->fill = 0;
	}
	memset(c->buf + c->fill, 0, 56 - c->fill);
	for (int i = 0; i < 8; i++)
		c->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
	blocks(c->h, c->buf, 1);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(c->h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
		out[4 * i + 3] = (uint8_t)c->h[i];
	}
	memset(c, 0, sizeof *c);
}

void loom_sha256(const void *data, size_t n, uint8_t out[32])
{
	loom_sha256_ctx c;
	loom_sha256_init(&c);
	loom_sha256_update(&c, data, n);
	loom_sha256_final(&c, out);
}

void loom_sha256_hex(const uint8_t sha[32], char hex[65])
{
	static const char digits[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		hex[2 * i] = digits[sha[i] >> 4];
		hex[2 * i + 1] = digits[sha[i] & 15];
	}
	hex[64] = '\0';
}

static int nibble(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int loom_sha256_parse(const char *hex, uint8_t sha[32])
{
	uint8_t tmp[32];

	if (!hex)
		return -1;
	for (int i = 0; i < 32; i++) {
		int hi = nibble(hex[2 * i]), lo;
		if (hi < 0 || (lo = nibble(hex[2 * i + 1])) < 0)
			return -1;
		tmp[i] = (uint8_t)(hi << 4 | lo);
	}
	if (hex[64] != '\0')
		return -1;
	memcpy(sha, tmp, 32);
	return 0;
}
