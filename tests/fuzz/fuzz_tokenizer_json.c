/*
 * tests/fuzz/fuzz_tokenizer_json.c — loom_tok_load_json (common/tokenizer.h)
 * on any bytes: a tokenizer.json comes with a model someone uploads.
 *
 * What loads must then work: a fixed set of awkward texts encodes (or is
 * refused as bad UTF-8) to ids in the vocabulary, every id decodes and
 * streams the same (fuzz_tok.h), out-of-range ids are refused, and the
 * lookups answer. Seeds: the real stories260k file, and small tokenizers of
 * both shapes trained by loom-mkmodel's generator (the big real GPT-2 and
 * TinyLlama files are too slow to mutate; fuzz_tokenizer_input covers them).
 */
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/tokenizer.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_tok.h"
#include "tools/mkmodel/mk_tokenizer.c"

static void fuzz_tj_exercise(const loom_tok *t)
{
	static const char *const texts[] = {
		"Hello world",
		"  Once upon a time, 2024 times\n",
		"<s>x</s><unk><|endoftext|><|begin_of_text|>",
		"caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82 \xe2\x96\x81 \xc2\xa0",
		"",
	};
	int32_t nv = loom_tok_n_vocab(t);
	FUZZ_CHECK(nv > 0, "vocab %d", nv);
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
		(void)fuzz_tok_encode_check(t, texts[i], strlen(texts[i]), NULL, NULL);
	(void)fuzz_tok_encode_check(t, "zero\0byte", 9, NULL, NULL);

	/* every id (up to 600) alone, then all of them as one sequence */
	int32_t ids[600];
	size_t n = 0;
	for (int32_t id = 0; id < nv && id < 600; id++) {
		char *s;
		size_t len;
		loom_err rc = loom_tok_decode(t, &id, 1, false, &s, &len);
		if (rc == LOOM_OK) {
			FUZZ_CHECK(fuzz_utf8_ok(s, len), "id %d decodes to invalid UTF-8", id);
			loom_free(s);
			ids[n++] = id;
			(void)loom_tok_is_special(t, id);
		} else {
			FUZZ_CHECK(rc == LOOM_ERANGE || rc == LOOM_ENOMEM, "decode of id %d: %s", id,
				   loom_errmsg());
		}
	}
	fuzz_tok_decode_check(t, ids, n, NULL, NULL);
	fuzz_tok_range_check(t, nv);
	fuzz_tok_range_check(t, -1);
	(void)loom_tok_is_special(t, -1);
	(void)loom_tok_is_special(t, nv);
	(void)loom_tok_id(t, "<s>");
	(void)loom_tok_id(t, "");
	(void)loom_tok_id(t, "\xc4\xa0the");
}

int fuzz_tokenizer_json(const uint8_t *data, size_t size)
{
	loom_tok *t = NULL;
	loom_err rc = loom_tok_load_json((const char *)data, size, "fuzz-tokenizer.json", &t);
	if (rc == LOOM_OK) {
		FUZZ_CHECK(t != NULL, "OK without a tokenizer");
		fuzz_accepted = 1;
		fuzz_tj_exercise(t);
		loom_tok_free(t);
	} else {
		FUZZ_CHECK(t == NULL, "error %d but *out set", rc);
		FUZZ_CHECK(loom_errmsg()[0] != '\0', "error %d without a message", rc);
	}
	return 0;
}

void fuzz_tokenizer_json_seeds(fuzz_seeds *s)
{
	static const struct {
		mk_tok_kind kind;
		int vocab;
	} gen[] = { { MK_TOK_SP, MK_SP_MIN }, { MK_TOK_SP, 300 }, { MK_TOK_BYTELEVEL, MK_BL_MIN },
		    { MK_TOK_BYTELEVEL, 300 } };
	if (fuzz_seed_file(s, fuzz_shared_path("models/stories260k/tokenizer.json")) ||
	    fuzz_seed_file(s, fuzz_shared_path("models/babyllama105/tokenizer.json")))
		abort();
	for (size_t i = 0; i < sizeof gen / sizeof gen[0]; i++) {
		char *js;
		size_t len;
		int32_t bos, eos;
		if (mk_tokenizer_json(gen[i].kind, gen[i].vocab, &js, &len, &bos, &eos)) {
			fprintf(stderr, "fuzz_tokenizer_json: generator: %s\n", loom_errmsg());
			abort();
		}
		fuzz_seed_add(s, js, len);
		loom_free(js);
	}
	/* the smaller shapes the loader accepts */
	fuzz_seed_str(s, "{\"added_tokens\":[{\"id\":4,\"content\":\"<x>\",\"lstrip\":true,\"rstrip\":true,"
			 "\"normalized\":false,\"special\":true}],"
			 "\"normalizer\":null,\"pre_tokenizer\":null,"
			 "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\" \":2,\"ab\":3},"
			 "\"merges\":[[\"a\",\"b\"]]}}");
	fuzz_seed_str(s, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"<unk>\":3},"
			 "\"merges\":[\"a b\"],\"unk_token\":\"<unk>\"},"
			 "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
			 "{\"type\":\"Digits\",\"individual_digits\":true},"
			 "{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\","
			 "\"prepend_scheme\":\"always\",\"split\":true}]},"
			 "\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\xe2\x96\x81\","
			 "\"prepend_scheme\":\"always\",\"split\":true}}");
}

const fuzz_word fuzz_tokenizer_json_dict[] = {
	FUZZ_W("\"model\""), FUZZ_W("\"type\""), FUZZ_W("\"BPE\""), FUZZ_W("\"vocab\""),
	FUZZ_W("\"merges\""), FUZZ_W("\"unk_token\""), FUZZ_W("\"byte_fallback\""),
	FUZZ_W("\"fuse_unk\""), FUZZ_W("\"ignore_merges\""), FUZZ_W("\"added_tokens\""),
	FUZZ_W("\"id\""), FUZZ_W("\"content\""), FUZZ_W("\"special\""), FUZZ_W("\"normalized\""),
	FUZZ_W("\"lstrip\""), FUZZ_W("\"rstrip\""), FUZZ_W("\"single_word\""),
	FUZZ_W("\"normalizer\""), FUZZ_W("\"pre_tokenizer\""), FUZZ_W("\"post_processor\""),
	FUZZ_W("\"decoder\""), FUZZ_W("\"Sequence\""), FUZZ_W("\"normalizers\""),
	FUZZ_W("\"pretokenizers\""), FUZZ_W("\"decoders\""), FUZZ_W("\"Prepend\""),
	FUZZ_W("\"prepend\""), FUZZ_W("\"Replace\""), FUZZ_W("\"pattern\""), FUZZ_W("\"String\""),
	FUZZ_W("\"Regex\""), FUZZ_W("\"ByteLevel\""), FUZZ_W("\"add_prefix_space\""),
	FUZZ_W("\"trim_offsets\""), FUZZ_W("\"use_regex\""), FUZZ_W("\"Split\""),
	FUZZ_W("\"behavior\""), FUZZ_W("\"Isolated\""), FUZZ_W("\"invert\""), FUZZ_W("\"Metaspace\""),
	FUZZ_W("\"replacement\""), FUZZ_W("\"prepend_scheme\""), FUZZ_W("\"first\""),
	FUZZ_W("\"always\""), FUZZ_W("\"never\""), FUZZ_W("\"split\""), FUZZ_W("\"Digits\""),
	FUZZ_W("\"individual_digits\""), FUZZ_W("\"NFC\""), FUZZ_W("\"NFKC\""),
	FUZZ_W("\"ByteFallback\""), FUZZ_W("\"Fuse\""), FUZZ_W("\"Strip\""), FUZZ_W("\"start\""),
	FUZZ_W("\"stop\""), FUZZ_W("\"TemplateProcessing\""), FUZZ_W("\"single\""), FUZZ_W("\"pair\""),
	FUZZ_W("\"special_tokens\""), FUZZ_W("\"SpecialToken\""), FUZZ_W("\"Sequence\""),
	FUZZ_W("\"sequence\""), FUZZ_W("\"type_id\""), FUZZ_W("\"ids\""), FUZZ_W("\"tokens\""),
	FUZZ_W("\"<0x00>\""), FUZZ_W("\"<0xFF>\""), FUZZ_W("\"\xe2\x96\x81\""), FUZZ_W("\"\xc4\xa0\""),
	FUZZ_W("\"(?i:'s|'t)\""), FUZZ_W("\"\\\\p{L}+\""), FUZZ_W("\"(a+)+$\""), FUZZ_W("null"),
	FUZZ_W("true"), FUZZ_W("false"), FUZZ_W("[]"), FUZZ_W("{}"), FUZZ_W("-1"),
	FUZZ_W("2147483647"), FUZZ_W("4294967296"),
	{ NULL, 0 },
};
