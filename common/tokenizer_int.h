/*
 * common/tokenizer_int.h — what the tokenizer's own files share (private).
 *
 * Data layout of a loaded loom_tok (immutable after load, so shared between
 * threads without locks):
 *   - every token string (vocab pieces and added tokens) lives NUL-terminated
 *     in one arena `text`, at text + piece_off[id]; holes in the id space
 *     have piece_off = UINT32_MAX;
 *   - `pieces` (open addressing, keys compared against the arena) maps a
 *     string to its id; ids that exist only as added tokens carry TK_ADDED_ONLY
 *     so the BPE model never produces them;
 *   - `merges` maps the id pair (a, b) to (rank, id of a+b);
 *   - the bytes each id decodes to (decoder applied token by token: ▁ -> ' ',
 *     <0xNN> -> one byte, byte-level chars -> bytes) are precomputed in `dec`,
 *     so decoding is concatenation plus the leading-space strip and the
 *     UTF-8 repair.
 * Workload: loading 32k-50k pieces and 50k-65k merges once; encoding prompts
 * of up to tens of KB (a SentencePiece-style prompt is one BPE word, hence the
 * heap-driven merge loop in tokenizer_bpe.c); decoding one id at a time.
 */
#ifndef LOOM_TOKENIZER_INT_H
#define LOOM_TOKENIZER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer.h"

/* ---- hash maps (tokenizer_map.c) ---- */

/* String -> id over the arena. slots hold id + 1 (0 = empty). */
typedef struct tk_strmap {
	int32_t *slot;  /* [cap] */
	uint32_t *hash; /* [cap] full hash of the slot's key */
	size_t cap;     /* power of two */
	size_t n;
} tk_strmap;

typedef struct tk_merge {
	uint64_t key;   /* (a << 32) | b, UINT64_MAX = empty */
	int32_t rank;
	int32_t id;     /* id of the merged piece */
} tk_merge;

typedef struct tk_pairmap {
	tk_merge *slot; /* [cap] */
	size_t cap;     /* power of two */
	size_t n;
} tk_pairmap;

uint32_t tk_hash(const char *s, size_t len);
/* Sizes the map for n keys. */
loom_err tk_strmap_init(tk_strmap *m, size_t n);
void tk_strmap_fini(tk_strmap *m);
/* Looks s up; the key of each slot is the arena string of its id. */
int32_t tk_strmap_get(const tk_strmap *m, const struct loom_tok *t, const char *s, size_t len);
/* Inserts id under its arena string; an existing key keeps its first id. */
loom_err tk_strmap_put(tk_strmap *m, const struct loom_tok *t, int32_t id);

loom_err tk_pairmap_init(tk_pairmap *m, size_t n);
void tk_pairmap_fini(tk_pairmap *m);
const tk_merge *tk_pairmap_get(const tk_pairmap *m, int32_t a, int32_t b);
/* Keeps the first (lowest-rank) entry for a pair. */
void tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t id);

/* ---- the loaded tokenizer ---- */

enum { TK_SPECIAL = 1, TK_ADDED = 2, TK_ADDED_ONLY = 4, TK_HOLE = 8 };

typedef struct tk_added {
	int32_t id;
	uint32_t len;   /* bytes of s */
	const char *s;  /* what is matched: the content (in the arena) or, for a
			   normalized token, the content normalized (own) */
	char *own;      /* loom_malloc'ed normalized content, or NULL */
	bool lstrip, rstrip, special, normalized;
} tk_added;

/* Added tokens matched in one stage of encoding, longest first. */
typedef struct tk_added_set {
	tk_added *v;
	size_t n;
	uint8_t first[256]; /* 1 if some token starts with this byte */
} tk_added_set;

/* One normalizer step, applied in order to each text segment. */
typedef enum { TK_NORM_PREPEND, TK_NORM_REPLACE, TK_NORM_NFC } tk_norm_kind;
typedef struct tk_norm {
	tk_norm_kind kind;
	char *pat;      /* REPLACE: literal pattern (loom_malloc'ed) */
	char *with;     /* PREPEND: prefix; REPLACE: replacement */
	size_t pat_len, with_len;
} tk_norm;

/* One pre-tokenizer step, applied in order to the list of words. */
typedef enum { TK_PRE_SPLIT, TK_PRE_BYTELEVEL, TK_PRE_METASPACE, TK_PRE_DIGITS } tk_pre_kind;
typedef enum { TK_SPLIT_ISOLATED, TK_SPLIT_REMOVED } tk_split_mode;
typedef enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER } tk_prepend_scheme;
typedef struct tk_pre {
	tk_pre_kind kind;
	pcre2_code *re;          /* SPLIT, BYTELEVEL with use_regex; else NULL */
	tk_split_mode mode;      /* SPLIT */
	bool add_prefix_space;   /* BYTELEVEL */
	char repl[8];            /* METASPACE replacement (UTF-8), NUL-terminated */
	tk_prepend_scheme scheme;/* METASPACE */
	bool split;              /* METASPACE: split before each replacement char */
	bool individual;         /* DIGITS */
} tk_pre;

#define TK_MAX_STEPS 8

struct loom_tok {
	char *name;              /* file name used in messages */
	int32_t n_vocab;         /* largest id + 1 */

	char *text;              /* arena of NUL-terminated token strings */
	size_t text_len, text_cap;
	uint32_t *piece_off;     /* [n_vocab] offset into text, UINT32_MAX = hole */
	uint32_t *piece_len;     /* [n_vocab] */
	uint8_t *flags;          /* [n_vocab] TK_* */
	tk_strmap pieces;
	tk_pairmap merges;

	/* Added tokens as Hugging Face matches them: "normalized": false ones on
	 * the raw text; "normalized": true ones (when there is a normalizer) on
	 * each normalized piece between those, in their normalized spelling. */
	tk_added_set added_raw, added_norm;

	/* model */
	int32_t unk_id;          /* -1 when none */
	bool fuse_unk, byte_fallback, ignore_merges;
	int32_t byte_piece[256]; /* SP: id of "<0xNN>" (-1 if absent); byte-level: id of the mapped char */

	/* normalizer and pre-tokenizer */
	tk_norm norm[TK_MAX_STEPS];
	int n_norm;
	tk_pre pre[TK_MAX_STEPS];
	int n_pre;
	bool byte_level;         /* words are mapped bytes -> chars before BPE */

	/* post-processor (add_special) */
	int32_t *prefix, *suffix;
	size_t n_prefix, n_suffix;

	/* decoder */
	uint8_t *dec;            /* decoded bytes of all ids */
	uint32_t *dec_off;       /* [n_vocab + 1] */
	bool dec_strip_space;    /* drop one leading ' ' of the whole text */
	bool dec_meta;           /* "▁" -> " " */
	bool dec_byte_fallback;  /* "<0xNN>" -> byte NN */
	bool dec_byte_level;     /* GPT-2 chars -> bytes */
};

static inline const char *tk_piece(const struct loom_tok *t, int32_t id)
{
	return t->text + t->piece_off[id];
}

/* ---- UTF-8 (tokenizer_decode.c) ---- */

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid.
 * If the bytes are a valid but incomplete prefix, returns 0 and sets
 * *partial (when partial is not NULL). */
size_t tk_utf8_seq(const uint8_t *s, size_t n, bool *partial);
/* True if all n bytes are valid UTF-8. */
bool tk_utf8_valid(const uint8_t *s, size_t n);

/* GPT-2's byte -> printable code point table and its inverse (-1 = none). */
uint32_t tk_byte_to_cp(uint8_t b);
int tk_cp_to_byte(uint32_t cp);

/* ---- pieces of the load (tokenizer_config.c) ---- */
struct json_t;
loom_err tk_load_normalizer(struct loom_tok *t, struct json_t *norm);
loom_err tk_load_pretok(struct loom_tok *t, struct json_t *pre);
loom_err tk_load_post(struct loom_tok *t, struct json_t *post);
loom_err tk_load_decoder(struct loom_tok *t, struct json_t *dec);
void tk_config_fini(struct loom_tok *t);
/* Fills t->dec / t->dec_off from the pieces and the decoder flags. */
loom_err tk_build_dec(struct loom_tok *t);
/* Unicode NFC of n bytes of valid UTF-8 (tokenizer_nfc.c). *out is
 * loom_malloc'ed and NUL-terminated (caller frees); LOOM_ENOMEM on failure
 * (no message set: the caller names the tokenizer). */
loom_err tk_nfc(const char *s, size_t n, char **out, size_t *out_len);
/* Runs the normalizer over s; *out is loom_malloc'ed (tokenizer_bpe.c). */
loom_err tk_normalize(const struct loom_tok *t, const char *s, size_t n, char **out, size_t *out_len);

#endif
