/*
 * common/grammar_int.h — what the grammar engine's own files share (private).
 *
 * Pipeline: grammar_schema.c (JSON Schema), grammar_regex.c (regex, choices)
 * build expression trees (gx) for the rules of a gx_builder;
 * grammar_build.c turns each rule's tree into an NFA over bytes (Thompson,
 * then epsilon edges removed) and lays all rules out as one array of
 * positions (a position = one state of one rule): byte edges, rule-reference
 * edges (push the rule, continue at `to` when it returns) and a final flag.
 * grammar_match.c runs the pushdown automaton whose stacks are chains of
 * positions, over a vocabulary trie (grammar_vocab.c).
 *
 * Memory: a builder's trees live in its arena and go with it; a compiled
 * loom_grammar is a few flat arrays plus the mask cache (grammar_match.c).
 */
#ifndef LOOM_GRAMMAR_INT_H
#define LOOM_GRAMMAR_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/grammar.h"

/* ---- expression trees ---- */

typedef enum { GX_EMPTY, GX_BYTES, GX_SEQ, GX_ALT, GX_REP, GX_REF } gx_kind;

typedef struct gx gx;
struct gx {
	gx_kind k;
	int n;          /* SEQ, ALT: number of kids */
	gx **kid;       /* SEQ, ALT: [n]; REP: [1] */
	int min, max;   /* REP: max -1 = unbounded */
	int rule;       /* REF */
	uint64_t set[4];/* BYTES: the bytes accepted */
};

/* Code point set: sorted, disjoint, non-adjacent ranges [lo, hi]. */
typedef struct gx_cprange {
	uint32_t lo, hi;
} gx_cprange;
typedef struct gx_cpset {
	gx_cprange *r;
	int n, cap;
} gx_cpset;

typedef struct gx_chunk gx_chunk;
typedef struct gx_rule {
	gx *body;        /* NULL while being built */
} gx_rule;

typedef struct gx_builder {
	gx_chunk *arena;
	size_t arena_bytes;
	gx_rule *rules;
	int n_rules, cap_rules;
	bool oom;        /* an allocation failed: every constructor returns NULL after */
	size_t n_nodes;  /* tree nodes made (a size limit) */
} gx_builder;

#define GX_MAX_NODES 2000000
#define GX_MAX_RULES 20000
#define GX_MAX_REPEAT 1000

void gx_builder_init(gx_builder *b);
void gx_builder_fini(gx_builder *b);
/* Constructors: NULL when out of memory (b->oom) or past GX_MAX_NODES. */
gx *gx_empty(gx_builder *b);
gx *gx_bytes(gx_builder *b, uint8_t lo, uint8_t hi);
gx *gx_lit(gx_builder *b, const char *s, size_t n);
gx *gx_seq(gx_builder *b, gx *const *kids, int n);
gx *gx_alt(gx_builder *b, gx *const *kids, int n);
gx *gx_seq2(gx_builder *b, gx *x, gx *y);
gx *gx_seq3(gx_builder *b, gx *x, gx *y, gx *z);
gx *gx_alt2(gx_builder *b, gx *x, gx *y);
gx *gx_rep(gx_builder *b, gx *x, int min, int max);
gx *gx_ref(gx_builder *b, int rule);
/* New rule without a body yet; -1 when out of memory or too many rules. */
int gx_rule_new(gx_builder *b);
/* A tree accepting exactly the UTF-8 encodings of the code points in s
 * (surrogates never); JSON string-escaped when json (", \ and controls as
 * escape sequences). NULL for an empty set or out of memory. */
gx *gx_from_cpset(gx_builder *b, const gx_cpset *s, bool json);

/* Code point sets (loom_realloc'ed ranges; free with gx_cpset_fini). */
loom_err gx_cpset_add(gx_cpset *s, uint32_t lo, uint32_t hi);
loom_err gx_cpset_negate(gx_cpset *s); /* complement within [0, 0x10FFFF] */
void gx_cpset_fini(gx_cpset *s);

/* The regex subset (grammar_regex.c) as a tree; json: the regex describes a
 * JSON string's content (literals escaped as JSON needs). what names the
 * source in messages ("regex", "json_schema: pattern at /properties/a"). */
loom_err gx_regex(gx_builder *b, const char *re, size_t len, bool json, const char *what,
		  gx **out);

/* A regex (for gx_regex) matching exactly the integers lo..hi (lo <= hi,
 * |lo|, |hi| < 10^17) in JSON syntax; loom_malloc'ed, NULL when out of memory. */
char *gx_int_range_re(long long lo, long long hi);

/* ---- the compiled grammar ---- */

typedef struct gm_bedge {
	uint8_t lo, hi;
	int32_t to;      /* position */
} gm_bedge;
typedef struct gm_redge {
	int32_t rule;
	int32_t to;      /* position to continue at when the rule returns */
} gm_redge;

typedef struct gm_cache gm_cache;

struct loom_grammar {
	int32_t n_rules;
	int32_t *rule_start;  /* [n_rules] start position of each rule */
	int32_t root;         /* the rule the output is */
	int32_t n_pos;
	uint32_t *be_off;     /* [n_pos + 1] into be */
	gm_bedge *be;         /* byte edges of each position, ordered by lo */
	uint32_t *re_off;     /* [n_pos + 1] into re */
	gm_redge *re;
	uint8_t *final;       /* [n_pos] 1 when the rule may return here */
	/* token mask cache, one per vocabulary used with this grammar */
	pthread_mutex_t lock;
	gm_cache *caches;
};

/* Compiles the rules of b (root = the output's rule) into *out. */
loom_err gx_compile(gx_builder *b, int root, loom_grammar **out);

/* ---- vocabulary (grammar_vocab.c) ---- */

struct loom_grammar_vocab {
	uint64_t serial;      /* unique per vocab ever made (keys the caches) */
	int32_t n_vocab;
	uint8_t *bytes;       /* all token bytes */
	uint32_t *off;        /* [n_vocab + 1] into bytes */
	int32_t n_sorted;     /* ids that may ever be allowed (not special, not EOS, not empty) */
	int32_t *sorted;      /* [n_sorted] those ids, by their bytes */
	uint16_t *lcp;        /* [n_sorted] common prefix with the previous one (capped) */
	uint32_t max_len;     /* longest token */
	int32_t *eos;
	int n_eos;
	uint8_t *is_eos;      /* [n_vocab] */
};

#endif
