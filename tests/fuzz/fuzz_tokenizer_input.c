/*
 * tests/fuzz/fuzz_tokenizer_input.c — the real tokenizers (stories260k:
 * SentencePiece-style BPE with byte fallback; babyllama105: no byte
 * fallback, <unk>; GPT-2: byte-level BPE with its PCRE2 split regex) on any
 * request text, and the decoders on any id sequence.
 *
 * One input is used twice: as text (encode, then decode and stream, see
 * fuzz_tok.h; decode(encode(x)) == x where the tokenizer is lossless), and
 * as little-endian 16-bit ids modulo vocab+16 (decode and stream; the ids
 * beyond the vocabulary must be refused).
 * The tokenizers are loaded once (static) from LOOM_SHARED.
 */
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/tokenizer.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_tok.h"

enum { FUZZ_TI_STORIES, FUZZ_TI_BABY, FUZZ_TI_GPT2, FUZZ_TI_N };

static loom_tok *fuzz_ti_toks[FUZZ_TI_N];

static void fuzz_ti_load(void)
{
	static const char *const rel[FUZZ_TI_N] = {
		"models/stories260k/tokenizer.json",
		"models/babyllama105/tokenizer.json",
		"fixtures/gpt2-tokenizer/tokenizer.json",
	};
	if (fuzz_ti_toks[0])
		return;
	for (int i = 0; i < FUZZ_TI_N; i++) {
		if (loom_tok_load(fuzz_shared_path(rel[i]), &fuzz_ti_toks[i])) {
			fprintf(stderr, "fuzz_tokenizer_input: %s (set LOOM_SHARED)\n", loom_errmsg());
			abort();
		}
	}
}

/* The text holds nothing a SentencePiece round trip is allowed to change:
 * no "<" (added tokens are split off before the "▁" prepend) and no "▁". */
static int fuzz_ti_sp_lossless(const char *s, size_t n)
{
	return !memchr(s, '<', n) && !memmem(s, n, "\xe2\x96\x81", 3);
}

static void fuzz_ti_text(int which, const char *text, size_t len)
{
	const loom_tok *t = fuzz_ti_toks[which];
	int32_t *ids;
	size_t n;
	loom_err rc = fuzz_tok_encode_check(t, text, len, &ids, &n);

	if (rc == LOOM_OK) {
		fuzz_accepted = 1;
		if (which == FUZZ_TI_GPT2 ||
		    (which == FUZZ_TI_STORIES && fuzz_ti_sp_lossless(text, len))) {
			char *back;
			size_t blen;
			if (loom_tok_decode(t, ids, n, false, &back, &blen) == LOOM_OK) {
				FUZZ_CHECK(blen == len && memcmp(back, text, len) == 0,
					   "tokenizer %d: decode(encode(x)) != x (%zu bytes, %zu ids, %zu back)",
					   which, len, n, blen);
				loom_free(back);
			}
		}
		loom_free(ids);
	} else if (rc == LOOM_EINVAL) {
		FUZZ_CHECK(!fuzz_utf8_ok(text, len), "tokenizer %d refused valid UTF-8: %s", which,
			   loom_errmsg());
	}
}

static void fuzz_ti_ids(int which, const uint8_t *data, size_t size)
{
	const loom_tok *t = fuzz_ti_toks[which];
	int32_t nv = loom_tok_n_vocab(t);
	size_t cap = size / 2 < 4096 ? size / 2 : 4096, n = 0;
	int32_t *ids = malloc((cap ? cap : 1) * sizeof *ids);
	int bad_seen = 0;

	if (!ids)
		return;
	for (size_t i = 0; i < cap; i++) {
		unsigned v = data[2 * i] | (unsigned)data[2 * i + 1] << 8;
		int32_t id = (int32_t)(v % (unsigned)(nv + 16));
		char *s;
		size_t len;
		loom_err rc = loom_tok_decode(t, &id, 1, false, &s, &len);
		if (rc == LOOM_OK) {
			loom_free(s);
			ids[n++] = id;
		} else {
			FUZZ_CHECK(rc == LOOM_ERANGE || rc == LOOM_ENOMEM, "decode of id %d: %d %s",
				   id, rc, loom_errmsg());
			FUZZ_CHECK(id >= 0, "negative id");
			if (id >= nv && !bad_seen) {
				fuzz_tok_range_check(t, id);
				bad_seen = 1;
			}
		}
	}
	fuzz_tok_decode_check(t, ids, n, NULL, NULL);
	free(ids);
}

int fuzz_tokenizer_input(const uint8_t *data, size_t size)
{
	fuzz_ti_load();
	for (int i = 0; i < FUZZ_TI_N; i++) {
		fuzz_ti_text(i, (const char *)data, size);
		fuzz_ti_ids(i, data, size);
	}
	return 0;
}

void fuzz_tokenizer_input_seeds(fuzz_seeds *s)
{
	static const char *const texts[] = {
		"Once upon a time",
		"Once upon a time, there was a little girl named Lily. She loved to play outside.",
		"Hello world",
		"  leading and trailing  ",
		" it's 123456 don't we'll I'M",
		"<s>Hi</s> <unk> <|endoftext|> [INST] <<SYS>>",
		"tabs\tand\nnewlines\r\n\n\n  x",
		("caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
		 "\xf0\x9f\x99\x82\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd"),
		"\xe2\x96\x81\xe2\x96\x81x \xef\xbf\xbd \xc2\xa0nbsp",
		"zero\0byte",
		"",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"\xff\xfe invalid \xc0\xaf utf8 \xed\xa0\x80",
	};
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
		fuzz_seed_add(s, texts[i], i == 9 ? 9 : strlen(texts[i]));
}

const fuzz_word fuzz_tokenizer_input_dict[] = {
	FUZZ_W("<s>"), FUZZ_W("</s>"), FUZZ_W("<unk>"), FUZZ_W("<|endoftext|>"),
	FUZZ_W("\xe2\x96\x81"), FUZZ_W(" "), FUZZ_W("  "), FUZZ_W("\n"), FUZZ_W("'s"), FUZZ_W("'ll"),
	FUZZ_W("\xc3\xa9"), FUZZ_W("\xe6\x97\xa5"), FUZZ_W("\xf0\x9f\x99\x82"), FUZZ_W("\xcc\x81"),
	FUZZ_W("\xef\xbf\xbd"), FUZZ_W("\xc2\xa0"), FUZZ_W("<0x41>"), FUZZ_W("123"), FUZZ_W("Once"),
	FUZZ_W(" upon"),
	{ NULL, 0 },
};
