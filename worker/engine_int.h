/*
 * worker/engine_int.h — the engine's state, shared by engine.c (inbox,
 * requests, adapters, lifecycle) and sched.c (admission, preemption, batch
 * plan, forward, sampling). Nothing outside worker/engine.c and
 * worker/sched.c includes it.
 *
 * Threads: fields under "shared" are guarded by mu; everything else belongs
 * to the engine thread (or the caller of wk_engine_step in manual mode).
 */
#ifndef WK_ENGINE_INT_H
#define WK_ENGINE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../adapters/adapter.h"
#include "engine.h"
#include "forward.h"
#include "guide.h"
#include "kv.h"
#include "residency.h"
#include "sample.h"

enum { CMD_SUBMIT, CMD_CANCEL, CMD_CANCEL_OWNER };

#define WK_FIT_WINDOW 64   /* iterations the step-time model is fitted on */
#define WK_MIN_CHUNK 16    /* prefill tokens an iteration may always take */

typedef struct cmd {
	struct cmd *next;
	int kind;
	uint64_t req;         /* CANCEL */
	uint64_t owner;       /* SUBMIT, CANCEL_OWNER */
	loom_msg_submit sub;  /* SUBMIT: owns prompt_ids and the sampling arrays */
	int model;            /* SUBMIT: residency model index (pinned), -1 = unknown */
	wk_res_ad *ad;        /* SUBMIT: pinned adapter entry, NULL = none/unknown */
	double arrival_ms;    /* SUBMIT: when submitted (CLOCK_MONOTONIC) */
} cmd;

/*
 * A request. Its context is prompt ++ gen[0 .. n_gen); kv holds the first
 * kv.len positions of it. Pending tokens (n_ctx - kv.len) are what the next
 * forwards must feed: the prompt (in chunks), then one token per decode
 * step (the last sampled one). Preemption releases kv (kv.len = 0), so the
 * whole context is prefilled again; sampling goes on at position n_gen.
 */
typedef struct seq {
	struct seq *next;     /* waiting-list link */
	loom_msg_submit sub;  /* owns prompt_ids and the sampling arrays */
	uint64_t owner;
	int model;            /* index into e->slots (= residency model index); pinned */
	wk_res_ad *ad;        /* NULL = base model; pinned */
	const ad_adapter *ad_dev; /* ad's device copy once ready (stable while pinned) */
	wk_kv kv;             /* bound to the model's pool; no blocks while waiting */
	uint8_t ns[32];       /* prefix-cache namespace (model, adapter identity) */
	uint32_t n_cached;    /* prompt tokens taken from the prefix cache at its
				 first admission (usage: cached_tokens) */
	bool admitted;        /* admitted at least once */
	int32_t *gen;         /* [cap_gen] tokens generated so far */
	uint32_t cap_gen;
	uint32_t n_gen;
	uint32_t limit;       /* n_gen that ends it with LENGTH */
	uint32_t n_preempted; /* times it lost its KV */
	wk_hist hist;         /* token counts for the penalties (empty when none) */
	wk_guide_req *guide;  /* sampling.guide: its matcher's preparation, NULL = none */
	loom_grammar_matcher *gm; /* the matcher once ready (owned by guide); the
				   * sequence waits until then */
	/* prompt logprobs (sampling.prompt_logprobs on a new request): entry
	 * p describes prompt token p+1, from the prefill row of position p;
	 * sent in the item of the first token, then plp_pending is false */
	loom_logprobs plp;    /* n = n_prompt - 1, arrays owned */
	bool plp_pending;
	uint8_t finish;       /* loom_finish once decided */
	bool dead;            /* to be freed without an item (error, cancel) */
	/* scheduling (sched.c): deadline order, then arrival order */
	double deadline_ms;   /* arrival + ttft_deadline_ms; INFINITY = none */
	uint64_t order;       /* arrival number: FCFS among equal deadlines */
	bool batch;           /* no TTFT deadline and no TPOT target: preempted first */
	bool waiting;         /* on the waiting list (not running) */
	bool in_batch;        /* scheduled in the batch being built */
} seq;

static inline uint32_t seq_ctx(const seq *s)
{
	return s->sub.n_prompt + s->n_gen;
}

static inline int32_t seq_token(const seq *s, uint32_t i)
{
	return i < s->sub.n_prompt ? s->sub.prompt_ids[i] : s->gen[i - s->sub.n_prompt];
}

/* Device bytes of base weights sent per engine iteration while a model is
 * uploading (CUDA backend): about 10-20 ms of BF16 conversion on the engine
 * thread, so the other models' steps keep going between the pieces. */
#define WK_ENGINE_LOAD_BUDGET ((size_t)32 << 20)

/* One model the residency lists. Attached (m set, KV pool and buffers
 * allocated) while the model is resident; the engine thread attaches and
 * detaches (engine_models.c). name, cfg and kv_blocks are known from the
 * start, so requests are validated before the weights arrive. */
typedef struct model_slot {
	char name[LOOM_NAME_MAX];
	loom_model_config cfg;
	int kv_blocks;        /* pool size once attached */
	wk_model *m;          /* NULL = not attached (borrowed from the residency) */
	wk_model *loading;    /* attached but its device weights still uploading
				 (the CUDA backend: wk_fwd_load each iteration) */
	wk_fwd *fwd;          /* the backend's forward state (backend.h) */
	wk_kvpool *pool;      /* this model's KV blocks */
	float *logits;        /* [max_seqs, vocab] */
	float *all_logits;    /* [max_batch_tokens + max_seqs, vocab]: every row of a
				 step with a prompt-logprobs prefill; allocated
				 at the first such step */
	bool failed;          /* the residency could not load it; err says why */
	loom_err err_code;
	char err[768];
	bool blocked;         /* admission: a waiting seq of this model did not fit */
	int pledged;          /* admission: blocks promised this iteration */
	wk_prefix_info prefix;/* counters (engine thread); blocks set at publish */
} model_slot;

struct wk_engine {
	model_slot *slots;    /* [WK_RES_MAX_MODELS], first n_models listed */
	int n_models;
	wk_res *res;          /* borrowed, or owned when own_res */
	bool own_res;
	int kv_blocks_opt, kv_mb_opt;
	wk_kv_dtype kv_dtype;     /* the KV pools' elements */
	bool prefix_cache;    /* pools reuse shared prefixes (kv.h) */
	wk_backend_kind backend;  /* where every model slot's forward runs */
	int max_batch_tokens;
	int max_seqs;
	bool manual;
	wk_emit_fn emit;
	void *ctx;

	/* shared: under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	cmd *inbox_head, *inbox_tail;
	uint32_t inbox_submits;
	uint64_t inbox_tokens;
	bool stop;
	bool wake;            /* the residency finished something */
	loom_msg_stats snap;  /* published by the engine thread */
	uint64_t snap_preemptions;
	pthread_t thread;
	bool has_thread;

	/* engine thread only */
	seq *wait_head, *wait_tail;
	uint32_t n_waiting;
	seq **running;        /* [max_seqs], admission order (oldest first) */
	int n_running;
	/* the batch being built (one model at a time) */
	int32_t *seq_start;   /* [max_seqs + 1] */
	int32_t *tokens;      /* [max_batch_tokens + max_seqs] */
	wk_kv **kvs;          /* [max_seqs] */
	seq **bseq;           /* [max_seqs] scheduled, running order */
	int32_t *bchunk;      /* [max_seqs] tokens each contributes */
	seq **pseq;           /* [max_seqs] the batch plan: bseq grouped by adapter */
	int32_t *pchunk;      /* [max_seqs] */
	int32_t *seg_start;   /* [max_seqs + 1] */
	const ad_adapter **seg_ad; /* [max_seqs] */
	loom_step_item *items;/* [max_seqs] */
	int32_t *item_ids;    /* [max_seqs] one id per item */
	float *item_lp;       /* [max_seqs] the item's token's logprob */
	int32_t *item_top_ids;/* [max_seqs, LOOM_MAX_LOGPROBS] its alternatives */
	float *item_top_lp;   /* [max_seqs, LOOM_MAX_LOGPROBS] */
	void *sample_scratch;
	size_t sample_bytes;
	wk_guide *guide;      /* structured outputs: matchers prepared off this thread */
	uint32_t *guide_mask; /* [guide_words] allowed-token bits of one row */
	size_t guide_words;
	bool stalled;         /* last iteration: everything waiting on loads */
	int n_loading;        /* slots whose weights are uploading: no sleeping */
	double step_ms;
	uint64_t steps, tokens_out, preemptions;
	uint64_t n_arrived;   /* seq order numbers handed out */
	/* step-time model (sched.c): step_ms ~ fit_a + fit_b * tokens, least
	 * squares over the last WK_FIT_WINDOW iterations (tokens, ms) */
	double fit_x[WK_FIT_WINDOW], fit_y[WK_FIT_WINDOW];
	int fit_n, fit_pos;
	double fit_a, fit_b;
	bool fit_frozen;      /* wk_engine_set_step_model: tests */
	/* this iteration (sched.c) */
	int it_prefill_cap;   /* prefill tokens still allowed; INT32_MAX = no cap */
	int it_cap;           /* the cap it started with, -1 = none */
	int it_prefill, it_decode;
	wk_sched_info snap_sched; /* shared: under mu */
	wk_prefix_info *snap_prefix; /* shared: under mu; [WK_RES_MAX_MODELS] */
};

/* engine_models.c: slots follow the residency (engine thread) */
/* Lists the residency's new models as (detached) slots. */
void wk_engine_slots_sync(wk_engine *e);
/* Attaches models that became resident, detaches the ones to evict,
 * records failures. */
void wk_engine_models_sync(wk_engine *e);
/* Allocates model m's KV pool and buffers into slot mi. */
loom_err wk_engine_attach(wk_engine *e, int mi, wk_model *m);
void wk_engine_detach(wk_engine *e, int mi);

/* engine.c */
void wk_engine_emit_error(wk_engine *e, uint64_t req, loom_err code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Frees s: its blocks, its adapter ref, its arrays. */
void wk_engine_seq_free(wk_engine *e, seq *s);
/* Puts s on the waiting list in scheduling order (deadline, then arrival;
 * sched.c wk_sched_before). */
void wk_engine_wait_insert(wk_engine *e, seq *s);
/* Sets s's prefix-cache namespace from its model and adapter. */
void wk_engine_seq_ns(wk_engine *e, seq *s);

/* sched.c: one iteration's admission and model batches */
/* Whether a is scheduled before b: a TTFT deadline before none, earlier
 * deadlines first, then arrival order. */
bool wk_sched_before(const seq *a, const seq *b);
/* Sets s's deadline, order and class from its SUBMIT (arrival time given). */
void wk_sched_classify(wk_engine *e, seq *s, double arrival_ms);
void wk_sched_admit(wk_engine *e);
/* After admission: this iteration's prefill token cap from the step-time
 * model and the running decodes' TPOT targets. */
void wk_sched_begin(wk_engine *e);
/* After the forward passes: feeds the step-time model. */
void wk_sched_end(wk_engine *e, double ms);
/* Schedules, runs and samples model mi's batch; appends STEP items. */
void wk_sched_run_model(wk_engine *e, int mi, int *n_items);
void wk_sched_publish_stats(wk_engine *e);

#endif
