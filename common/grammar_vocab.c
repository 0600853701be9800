/*
 * common/grammar_vocab.c — a tokenizer's vocabulary as the matcher walks it.
 *
 * The ids that may ever be allowed are sorted by their bytes, with each
 * one's common prefix length with the one before: walking them in that
 * order is a depth-first walk of the byte trie (tokens sharing a prefix
 * share the automaton steps for it, and a rejected prefix skips its whole
 * subtree, a contiguous run). Built once per tokenizer (128k ids: ~30 ms).
 */
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/grammar_int.h"

static uint64_t vocab_serial;

static int cmp_tok(const void *x, const void *y, void *ctx)
{
	const loom_grammar_vocab *v = ctx;
	int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
	uint32_t la = v->off[a + 1] - v->off[a], lb = v->off[b + 1] - v->off[b];
	int c = memcmp(v->bytes + v->off[a], v->bytes + v->off[b], la < lb ? la : lb);
	if (c)
		return c;
	if (la != lb)
		return la < lb ? -1 : 1;
	return a < b ? -1 : a > b;
}

loom_err loom_grammar_vocab_create(const char *const *bytes, const size_t *lens, int32_t n_vocab,
				   const int32_t *eos_ids, int n_eos, loom_grammar_vocab **out)
{
	loom_grammar_vocab *v = NULL;
	loom_err rc = LOOM_OK;
	size_t total = 0;
	*out = NULL;
	if (n_vocab < 1 || n_eos < 1 || !eos_ids)
		return loom_fail(LOOM_EINVAL, "grammar vocab: %d ids, %d EOS ids", n_vocab, n_eos);
	for (int32_t i = 0; i < n_vocab; i++) {
		if (bytes[i] && lens[i] > 65535)
			return loom_fail(LOOM_EINVAL, "grammar vocab: token %d has %zu bytes", i, lens[i]);
		total += bytes[i] ? lens[i] : 0;
	}
	if (total > UINT32_MAX / 2)
		return loom_fail(LOOM_EINVAL, "grammar vocab: %zu token bytes", total);
	v = loom_calloc(1, sizeof *v);
	if (!v)
		goto oom;
	v->n_vocab = n_vocab;
	v->bytes = loom_malloc(total ? total : 1);
	v->off = loom_malloc(((size_t)n_vocab + 1) * sizeof *v->off);
	v->sorted = loom_malloc((size_t)n_vocab * sizeof *v->sorted);
	v->lcp = loom_malloc((size_t)n_vocab * sizeof *v->lcp);
	v->is_eos = loom_calloc((size_t)n_vocab, 1);
	v->eos = loom_malloc((size_t)n_eos * sizeof *v->eos);
	if (!v->bytes || !v->off || !v->sorted || !v->lcp || !v->is_eos || !v->eos)
		goto oom;
	for (int k = 0; k < n_eos; k++) {
		if (eos_ids[k] < 0 || eos_ids[k] >= n_vocab) {
			rc = loom_fail(LOOM_EINVAL, "grammar vocab: EOS id %d out of range (0..%d)",
				       eos_ids[k], n_vocab - 1);
			goto out;
		}
		v->eos[k] = eos_ids[k];
		v->is_eos[eos_ids[k]] = 1;
	}
	v->n_eos = n_eos;
	uint32_t o = 0;
	for (int32_t i = 0; i < n_vocab; i++) {
		v->off[i] = o;
		if (bytes[i] && !v->is_eos[i]) {
			memcpy(v->bytes + o, bytes[i], lens[i]);
			o += (uint32_t)lens[i];
			if (lens[i])
				v->sorted[v->n_sorted++] = i;
			if (lens[i] > v->max_len)
				v->max_len = (uint32_t)lens[i];
		}
	}
	v->off[n_vocab] = o;
	qsort_r(v->sorted, (size_t)v->n_sorted, sizeof *v->sorted, cmp_tok, v);
	for (int32_t i = 0; i < v->n_sorted; i++) {
		uint32_t l = 0;
		if (i) {
			int32_t a = v->sorted[i - 1], b = v->sorted[i];
			uint32_t la = v->off[a + 1] - v->off[a], lb = v->off[b + 1] - v->off[b];
			const uint8_t *pa = v->bytes + v->off[a], *pb = v->bytes + v->off[b];
			while (l < la && l < lb && pa[l] == pb[l])
				l++;
		}
		v->lcp[i] = (uint16_t)l;
	}
	v->serial = __atomic_add_fetch(&vocab_serial, 1, __ATOMIC_RELAXED);
	*out = v;
	return LOOM_OK;
oom:
	rc = loom_fail(LOOM_ENOMEM, "grammar vocab: out of memory");
out:
	loom_grammar_vocab_free(v);
	return rc;
}

void loom_grammar_vocab_free(loom_grammar_vocab *v)
{
	if (!v)
		return;
	loom_free(v->bytes);
	loom_free(v->off);
	loom_free(v->sorted);
	loom_free(v->lcp);
	loom_free(v->is_eos);
	loom_free(v->eos);
	loom_free(v);
}

int32_t loom_grammar_vocab_size(const loom_grammar_vocab *v)
{
	return v->n_vocab;
}
