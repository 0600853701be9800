/*
 * worker/guide.h — structured outputs in the worker: each request's grammar
 * matcher, prepared off the engine thread.
 *
 * Owns: per model, the grammar vocabulary (each id's bytes, from the
 * model's tokenizer.json, built once on the first constrained request for
 * it); a bounded LRU of compiled grammars keyed by a hash of (guide kind,
 * text), so a schema seen again is warm (its token-mask cache lives in the
 * grammar); and per request a wk_guide_req: the matcher at the start of the
 * output, advanced over the tokens a resumed request already produced.
 * Preparation (tokenizer load, vocabulary, compile, replay) runs on one
 * guide thread started on first need; the engine polls a request before
 * admitting it (it waits, nobody else does) and is woken when it is ready.
 * In sync mode (a manual engine: tests, benchmarks) it runs on the caller.
 * Must not: sample, touch sockets, or block the engine thread.
 * Threads: every function is safe from any thread; a ready request's
 * matcher is then used by the engine thread alone.
 */
#ifndef WK_GUIDE_H
#define WK_GUIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/grammar.h"
#include "../common/model_config.h"
#include "../common/proto.h"
#include "residency.h"

#define WK_GUIDE_CACHE 64  /* compiled grammars kept (unused ones evicted LRU) */

typedef struct wk_guide wk_guide;
typedef struct wk_guide_req wk_guide_req;
/* Tells the engine a request became ready or failed; must not block. */
typedef void (*wk_guide_wake_fn)(void *ctx);

/* res borrowed (outlives g): where tokenizers come from. */
loom_err wk_guide_create(wk_res *res, bool sync, wk_guide_wake_fn wake, void *ctx,
			 wk_guide **out);
/* Joins the thread; every request must have been released. NULL is fine. */
void wk_guide_destroy(wk_guide *g);
/* Lends model mi's vocabulary (borrowed: outlives g), for models the
 * residency has no tokenizer for (lent ones). */
void wk_guide_set_vocab(wk_guide *g, int mi, const loom_grammar_vocab *v);

/* Starts preparing the matcher of a request for model mi (cfg: its vocab
 * size and EOS ids) held to sp's guide, advanced over replay[n_replay]
 * (copied). *out released with wk_guide_release. LOOM_ENOMEM only. */
loom_err wk_guide_start(wk_guide *g, int mi, const loom_model_config *cfg,
			const loom_sampling *sp, const int32_t *replay, uint32_t n_replay,
			wk_guide_req **out);
/* 0: still preparing; 1: ready, *m is the matcher (owned by r); -1: failed,
 * *code and err[n] say why (a message for the client). */
int wk_guide_poll(wk_guide *g, wk_guide_req *r, loom_grammar_matcher **m, loom_err *code,
		  char *err, size_t n);
/* Drops a request (pending ones are dropped when their preparation ends). */
void wk_guide_release(wk_guide *g, wk_guide_req *r);

/* Figures for tests and benchmarks. */
typedef struct wk_guide_stats {
	uint64_t compiles;     /* grammars compiled */
	uint64_t hits;         /* requests served by a cached grammar */
	uint32_t cached;       /* grammars in the cache now */
	double compile_ms;     /* total compile time */
	double vocab_ms;       /* total tokenizer + vocabulary build time */
} wk_guide_stats;
void wk_guide_stats_get(wk_guide *g, wk_guide_stats *out);

#endif
