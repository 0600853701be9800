/*
 * common/tokenizer_nfc.c — Unicode NFC for the NFC normalizer (Qwen2/2.5/3
 * tokenizer.json files), as Hugging Face tokenizers' normalizers/unicode.rs
 * runs it: canonical decomposition, canonical ordering of combining marks,
 * canonical composition (UAX #15), Hangul syllables algorithmically.
 *
 * Workload: each text segment of a prompt once; ASCII (almost every prompt
 * byte in practice) is NFC already and is copied through. Tables: three
 * sorted arrays (tokenizer_nfc_tab.h) searched by bisection. The Unicode
 * version is the one the tables were generated from (stated there);
 * tokenizers uses its own copy of the data, so characters added to Unicode
 * since either was made may normalize differently.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "tokenizer_int.h"

typedef struct tk_nfc_ccc {
	uint32_t lo, hi;
	uint8_t ccc;
} tk_nfc_ccc;

#include "tokenizer_nfc_tab.h"

#define N_ELEM(a) (sizeof(a) / sizeof((a)[0]))

enum {
	S_BASE = 0xac00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11a7,
	L_COUNT = 19, V_COUNT = 21, T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT,
	S_COUNT = L_COUNT * N_COUNT,
	MAX_DECOMP = 4 /* longest canonical decomposition of one code point */
};

static uint8_t ccc_of(uint32_t cp)
{
	if (cp < 0x300)
		return 0;
	size_t lo = 0, hi = N_ELEM(nfc_ccc);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (cp < nfc_ccc[mid].lo)
			hi = mid;
		else if (cp > nfc_ccc[mid].hi)
			lo = mid + 1;
		else
			return nfc_ccc[mid].ccc;
	}
	return 0;
}

static const uint32_t *decomp_of(uint32_t cp)
{
	size_t lo = 0, hi = N_ELEM(nfc_decomp);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (cp < nfc_decomp[mid][0])
			hi = mid;
		else if (cp > nfc_decomp[mid][0])
			lo = mid + 1;
		else
			return nfc_decomp[mid];
	}
	return NULL;
}

/* The primary composite of a + b, or 0. */
static uint32_t compose(uint32_t a, uint32_t b)
{
	if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
		return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
	if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE &&
	    b < T_BASE + T_COUNT)
		return a + (b - T_BASE);
	uint64_t key = (uint64_t)a << 32 | b;
	size_t lo = 0, hi = N_ELEM(nfc_comp);
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		uint64_t k = (uint64_t)nfc_comp[mid][0] << 32 | nfc_comp[mid][1];
		if (key < k)
			hi = mid;
		else if (key > k)
			lo = mid + 1;
		else
			return nfc_comp[mid][2];
	}
	return 0;
}

/* Appends the full canonical decomposition of cp to out[*n]. */
static void decompose(uint32_t cp, uint32_t *out, size_t *n)
{
	if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
		uint32_t s = cp - S_BASE;
		out[(*n)++] = L_BASE + s / N_COUNT;
		out[(*n)++] = V_BASE + (s % N_COUNT) / T_COUNT;
		if (s % T_COUNT)
			out[(*n)++] = T_BASE + s % T_COUNT;
		return;
	}
	const uint32_t *d = cp >= 0xc0 ? decomp_of(cp) : NULL;
	if (!d) {
		out[(*n)++] = cp;
		return;
	}
	decompose(d[1], out, n);
	if (d[2])
		decompose(d[2], out, n);
}

/* Decodes one code point of valid UTF-8 at s (n bytes); advances *i. A
 * sequence cut short by the end (callers pass valid UTF-8, so never) reads
 * as U+FFFD, never past s + n. */
static uint32_t utf8_next(const unsigned char *s, size_t n, size_t *i)
{
	uint32_t c = s[*i];
	if (c < 0x80) {
		*i += 1;
		return c;
	}
	int k = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
	if (*i + (size_t)k >= n) {
		*i = n;
		return 0xfffd;
	}
	c &= 0x3f >> k;
	for (int j = 1; j <= k; j++)
		c = c << 6 | (s[*i + j] & 0x3f);
	*i += (size_t)k + 1;
	return c;
}

static size_t utf8_put(uint32_t c, char *o)
{
	if (c < 0x80) {
		o[0] = (char)c;
		return 1;
	}
	if (c < 0x800) {
		o[0] = (char)(0xc0 | c >> 6);
		o[1] = (char)(0x80 | (c & 0x3f));
		return 2;
	}
	if (c < 0x10000) {
		o[0] = (char)(0xe0 | c >> 12);
		o[1] = (char)(0x80 | (c >> 6 & 0x3f));
		o[2] = (char)(0x80 | (c & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | c >> 18);
	o[1] = (char)(0x80 | (c >> 12 & 0x3f));
	o[2] = (char)(0x80 | (c >> 6 & 0x3f));
	o[3] = (char)(0x80 | (c & 0x3f));
	return 4;
}

loom_err tk_nfc(const char *s, size_t n, char **out, size_t *out_len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	while (i < n && u[i] < 0x80)
		i++;
	*out = NULL;
	*out_len = 0;
	if (i == n) { /* ASCII is NFC */
		*out = loom_malloc(n + 1);
		if (!*out)
			return LOOM_ENOMEM;
		memcpy(*out, s, n);
		(*out)[n] = '\0';
		*out_len = n;
		return LOOM_OK;
	}
	/* every byte is at most one code point; each decomposes to <= MAX_DECOMP */
	if (n > SIZE_MAX / (MAX_DECOMP * sizeof(uint32_t)))
		return LOOM_ENOMEM;
	uint32_t *cp = loom_malloc(n * MAX_DECOMP * sizeof *cp);
	if (!cp)
		return LOOM_ENOMEM;
	size_t m = 0;
	for (i = 0; i < n;)
		decompose(utf8_next(u, n, &i), cp, &m);
	/* canonical ordering: a stable sort of each run of non-zero classes */
	for (size_t k = 1; k < m; k++) {
		uint8_t c = ccc_of(cp[k]);
		if (!c)
			continue;
		for (size_t j = k; j > 0; j--) {
			uint8_t p = ccc_of(cp[j - 1]);
			if (p <= c)
				break;
			uint32_t x = cp[j];
			cp[j] = cp[j - 1];
			cp[j - 1] = x;
		}
	}
	/* canonical composition, in place: cp[0..w) is the output so far */
	size_t w = 0, starter = SIZE_MAX;
	for (size_t k = 0; k < m; k++) {
		uint32_t c = cp[k];
		uint8_t cc = ccc_of(c);
		if (starter != SIZE_MAX) {
			/* not blocked: adjacent to the starter, or every mark in
			 * between has a lower (non-zero) class */
			bool open = w - 1 == starter || ccc_of(cp[w - 1]) < cc;
			uint32_t comp = open ? compose(cp[starter], c) : 0;
			if (comp) {
				cp[starter] = comp;
				continue;
			}
		}
		if (cc == 0)
			starter = w;
		cp[w++] = c;
	}
	char *o = loom_malloc(w * 4 + 1);
	if (!o) {
		loom_free(cp);
		return LOOM_ENOMEM;
	}
	size_t len = 0;
	for (size_t k = 0; k < w; k++)
		len += utf8_put(cp[k], o + len);
	o[len] = '\0';
	loom_free(cp);
	*out = o;
	*out_len = len;
	return LOOM_OK;
}
