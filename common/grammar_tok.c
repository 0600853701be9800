/*
 * common/grammar_tok.c — a grammar vocabulary from a loaded tokenizer: the
 * bytes each id decodes to on its own (loom_tok_id_bytes), special tokens
 * other than EOS never allowed, ids past the tokenizer (padded embedding
 * rows) never allowed.
 */
#include "common/grammar.h"

#include "common/alloc.h"
#include "common/tokenizer.h"

loom_err loom_grammar_vocab_from_tok(const loom_tok *t, int32_t n_vocab, const int32_t *eos_ids,
				     int n_eos, loom_grammar_vocab **out)
{
	const char **bytes;
	size_t *lens;
	loom_err rc;
	int32_t nt = loom_tok_n_vocab(t);

	*out = NULL;
	if (n_vocab < 1)
		return loom_fail(LOOM_EINVAL, "grammar vocab: %d ids", n_vocab);
	bytes = loom_calloc((size_t)n_vocab, sizeof *bytes);
	lens = loom_calloc((size_t)n_vocab, sizeof *lens);
	if (!bytes || !lens) {
		rc = loom_fail(LOOM_ENOMEM, "grammar vocab: out of memory");
		goto out;
	}
	for (int32_t id = 0; id < n_vocab && id < nt; id++) {
		const char *p;
		size_t len;
		if (loom_tok_is_special(t, id) || !loom_tok_id_bytes(t, id, &p, &len))
			continue;
		bytes[id] = p;
		lens[id] = len;
	}
	rc = loom_grammar_vocab_create(bytes, lens, n_vocab, eos_ids, n_eos, out);
out:
	loom_free(bytes);
	loom_free(lens);
	return rc;
}
