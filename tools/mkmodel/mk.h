/*
 * tools/mkmodel/mk.h — pieces of loom-mkmodel, the random model/adapter writer.
 *
 * loom-mkmodel writes random-weight Hugging Face model folders (Llama,
 * Llama 3, Qwen2, Qwen3, Mistral, Gemma 2) and random PEFT LoRA adapters
 * for tests, the demo and benchmarks. This header joins its files: main.c
 * (CLI), mk_model.c (weights + adapters), mk_config.c (each family's
 * defaults and config.json), mk_tokenizer.c (a real, trained
 * tokenizer.json of either shape), mk_tokcopy.c (a real tokenizer.json
 * copied in instead).
 */
#ifndef MK_H
#define MK_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef enum mk_tok_kind {
	MK_TOK_SP = 0,        /* SentencePiece-style BPE: <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF>, merges */
	MK_TOK_BYTELEVEL = 1, /* GPT-2/Llama-3 style byte-level BPE with split regex and
				 <|begin_of_text|>/<|end_of_text|> added tokens */
} mk_tok_kind;

/*
 * Builds the text of a tokenizer.json with exactly vocab ids (pieces plus
 * added tokens), its merges learned by BPE on a small built-in corpus.
 * *json is loom_malloc'ed (caller frees). *bos / *eos receive the ids of
 * the begin/end-of-sequence tokens. vocab below the shape's minimum
 * (SP: 259 + a few merges, byte-level: 258 + a few merges; see the .c) is
 * LOOM_EINVAL with a message giving the minimum.
 */
loom_err mk_tokenizer_json(mk_tok_kind kind, int vocab, char **json, size_t *len, int32_t *bos,
			   int32_t *eos);

#define MK_MAX_EOS 8

/*
 * Reads a real tokenizer.json (json_path) and, when config_path is not
 * NULL, its tokenizer_config.json, to copy them into a model folder.
 * *text: json_path's bytes, loom_malloc'ed (caller frees). *n_ids: one past
 * the highest id in model.vocab and added_tokens. *bos: the id of
 * tokenizer_config's bos_token, else of a usual BOS piece (<s>,
 * <|begin_of_text|>, <bos>), else -1. eos[0..*n_eos): tokenizer_config's
 * eos_token first, then every usual end-of-sequence/turn piece present
 * (</s>, <|end_of_text|>, <|eom_id|>, <|eot_id|>, <|endoftext|>,
 * <|im_end|>, <eos>, <end_of_turn>), at most MK_MAX_EOS. mk_tokcopy.c.
 */
loom_err mk_tokenizer_read(const char *json_path, const char *config_path, char **text,
			   size_t *len, int *n_ids, int32_t *bos, int32_t *eos, int *n_eos);

/* Reads a whole file; *buf is loom_malloc'ed and NUL-terminated. */
loom_err mk_read_file(const char *path, char **buf, size_t *len);

#endif
