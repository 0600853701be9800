/*
 * common/tokenizer_map.c — the tokenizer's two hash maps.
 *
 * Both are open addressing with linear probing, sized once at load to at
 * most half full, and read-only afterwards (lookups from many threads).
 * The string map stores ids only: the key of a slot is the token string of
 * that id in the tokenizer's arena, so 50k pieces cost 8 bytes a slot.
 */
#include <string.h>

#include "alloc.h"
#include "tokenizer_int.h"

uint32_t tk_hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)s[i];
		h *= 16777619u;
	}
	return h;
}

static size_t pow2_for(size_t n)
{
	size_t cap = 16;
	while (cap < 2 * n + 1)
		cap <<= 1;
	return cap;
}

loom_err tk_strmap_init(tk_strmap *m, size_t n)
{
	m->cap = pow2_for(n);
	m->n = 0;
	m->slot = loom_calloc(m->cap, sizeof *m->slot);
	m->hash = loom_calloc(m->cap, sizeof *m->hash);
	if (!m->slot || !m->hash) {
		tk_strmap_fini(m);
		return loom_fail(LOOM_ENOMEM, "tokenizer: out of memory for %zu pieces", n);
	}
	return LOOM_OK;
}

void tk_strmap_fini(tk_strmap *m)
{
	loom_free(m->slot);
	loom_free(m->hash);
	m->slot = NULL;
	m->hash = NULL;
	m->cap = m->n = 0;
}

int32_t tk_strmap_get(const tk_strmap *m, const struct loom_tok *t, const char *s, size_t len)
{
	if (!m->cap)
		return -1;
	uint32_t h = tk_hash(s, len);
	size_t mask = m->cap - 1;
	for (size_t i = h & mask;; i = (i + 1) & mask) {
		int32_t v = m->slot[i];
		if (!v)
			return -1;
		int32_t id = v - 1;
		if (m->hash[i] == h && t->piece_len[id] == len && memcmp(tk_piece(t, id), s, len) == 0)
			return id;
	}
}

loom_err tk_strmap_put(tk_strmap *m, const struct loom_tok *t, int32_t id)
{
	const char *s = tk_piece(t, id);
	size_t len = t->piece_len[id];
	if (2 * (m->n + 1) > m->cap)
		return loom_fail(LOOM_EINTERNAL, "tokenizer: string map overfull");
	uint32_t h = tk_hash(s, len);
	size_t mask = m->cap - 1;
	for (size_t i = h & mask;; i = (i + 1) & mask) {
		int32_t v = m->slot[i];
		if (!v) {
			m->slot[i] = id + 1;
			m->hash[i] = h;
			m->n++;
			return LOOM_OK;
		}
		int32_t o = v - 1;
		if (m->hash[i] == h && t->piece_len[o] == len && memcmp(tk_piece(t, o), s, len) == 0)
			return LOOM_OK;
	}
}

static inline uint64_t pair_key(int32_t a, int32_t b)
{
	return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static inline size_t pair_hash(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	return (size_t)k;
}

loom_err tk_pairmap_init(tk_pairmap *m, size_t n)
{
	m->cap = pow2_for(n);
	m->n = 0;
	m->slot = loom_malloc(m->cap * sizeof *m->slot);
	if (!m->slot) {
		m->cap = 0;
		return loom_fail(LOOM_ENOMEM, "tokenizer: out of memory for %zu merges", n);
	}
	for (size_t i = 0; i < m->cap; i++)
		m->slot[i].key = UINT64_MAX;
	return LOOM_OK;
}

void tk_pairmap_fini(tk_pairmap *m)
{
	loom_free(m->slot);
	m->slot = NULL;
	m->cap = m->n = 0;
}

const tk_merge *tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b)
{
	if (!m->cap)
		return NULL;
	uint64_t k = pair_key(a, b);
	size_t mask = m->cap - 1;
	for (size_t i = pair_hash(k) & mask;; i = (i + 1) & mask) {
		if (m->slot[i].key == k)
			return &m->slot[i];
		if (m->slot[i].key == UINT64_MAX)
			return NULL;
	}
}

void tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id)
{
	uint64_t k = pair_key(a, b);
	size_t mask = m->cap - 1;
	for (size_t i = pair_hash(k) & mask;; i = (i + 1) & mask) {
		if (m->slot[i].key == k)
			return;
		if (m->slot[i].key == UINT64_MAX) {
			m->slot[i] = (tk_merge){ .key = k, .rank = rank, .id = id };
			m->n++;
			return;
		}
	}
}
