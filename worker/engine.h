/*
 * worker/engine.h — the worker's engine loop: continuous batching of
 * requests over the resident models.
 *
 * Owns: every sequence's state (queue, paged KV, generated tokens) and the
 * loaded adapters, on one engine thread. Each iteration drains the inbox
 * (SUBMIT / CANCEL / new adapters from any thread), admits waiting requests
 * (FIFO per model, up to max_seqs in all, each only when the free blocks of
 * its model's KV pool hold its whole pending context), builds one wk_batch
 * per model — every running decode (1 token) plus prefill chunks in
 * admission order up to max_batch_tokens in all (chunked prefill) — with
 * blocks reserved first (wk_kv_reserve), runs wk_forward, samples each
 * sequence whose context is complete (position = tokens generated so far,
 * the request's seed), emits one STEP with an item per sequence that
 * produced a token or finished, and retires finished sequences. An idle
 * engine sleeps on a condition variable.
 *
 * SLO scheduling (sched.c): the waiting queue and the prefill chunks are in
 * TTFT-deadline order (arrival + ttft_deadline_ms, earliest first; requests
 * without one after, FCFS). The iteration's prefill tokens are capped so
 * the predicted step time (a + b * tokens, fitted online over the last
 * iterations) stays within the smallest tpot_target_ms of the running
 * decodes; WK_MIN_CHUNK prefill tokens are always allowed when nothing
 * decodes or when the decodes alone already exceed it.
 *
 * Prefix cache (kv.h; off with no_prefix_cache): each sequence's full
 * blocks are registered under a key chained from its namespace — a hash of
 * the model's name and the adapter's content hash (none for the base), so
 * blocks computed with another adapter, or an older version of one with
 * the same name, never match. A finished or preempted sequence's keyed
 * blocks stay cached until the pool needs the room. At admission a
 * sequence takes the blocks continuing its chain (at least its last
 * context token is computed, for the logits; none when it asks for prompt
 * logprobs, whose rows need computing) and prefills only the rest. A
 * sequence whose next block a running one of the same namespace is still
 * prefilling waits for it (identical prompts arriving together, n > 1
 * choices: the prompt is prefilled once). A model's pool, cache included,
 * goes when the model is detached.
 * KV: one pool per model of kv_blocks blocks of WK_KV_BLOCK positions. When
 * a reservation fails, a running sequence of that model not yet in this
 * iteration's batch is preempted by recompute: batch-class ones (no TTFT
 * deadline, no TPOT target) before interactive ones, newest first within
 * a class; its blocks are released and it goes back to the waiting queue
 * (in scheduling order); readmitted, it
 * prefills prompt + generated tokens again and samples on at the same output
 * position (same seed stream), so its tokens do not change. Nothing fails
 * because the cache is full.
 * Batch plan: the scheduled sequences are ordered by adapter (base-only is
 * one group; groups in order of first appearance, admission order inside a
 * group) and wk_batch's segments name each group's adapter.
 *
 * Requests are validated when drained; a bad one gets an ERROR{req} (which
 * ends it): unknown model or adapter (ENOTFOUND, "adapter X is not loaded"),
 * empty prompt or a token id outside the vocab or bad sampling values
 * (EINVAL), prompt + max_tokens over the context or more KV positions than
 * the model's whole pool (ERANGE), a req id already live (EEXIST).
 * max_tokens 0 means "until the context is full".
 * Resumption: a SUBMIT with n_generated k > 0 (a request moved off a lost
 * worker) has prompt_ids = prompt ++ its first k tokens; they become the
 * sequence's generated tokens, so the whole context is prefilled, sampling
 * goes on at output position k (same seed stream: the remaining tokens
 * equal an uncut run's), k counts against max_tokens and items report
 * n_prompt - k. k >= n_prompt or k >= the token limit: EINVAL.
 * Finish: STOP when the sampled id is an EOS id of the model (unless
 * ignore_eos) or one of stop_ids (that id is the item's last id); LENGTH at
 * max_tokens or a full context; ABORT (empty item) when canceled by req.
 *
 * Residency (worker/residency.h): models and adapters live in a wk_res.
 * A SUBMIT pins its model and adapter there on the submitting thread, which
 * starts their loads at once (prefetch); the sequence waits (not the
 * batch) until its model is resident and its adapter on the device, and
 * its pins keep both there until it ends. A load that fails ends the
 * requests waiting for it with an ERROR naming the reason. The engine
 * attaches a model that became resident (KV pool, buffers) and detaches one
 * the residency evicts, on its own thread.
 *
 * Must not: touch sockets or encode bytes (the emit callback does, see
 * worker/link.h), or load models (the residency does, off this thread).
 *
 * Threads: wk_engine_submit/cancel/cancel_owner/stats/add_adapter/
 * find_model are safe from any thread and never wait for an iteration. The emit callback runs on the
 * engine thread (or, in manual mode, on the thread calling wk_engine_step),
 * outside the engine's lock; the message it gets is valid only during the
 * call.
 */
#ifndef WK_ENGINE_H
#define WK_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/err.h"
#include "../adapters/adapter.h"
#include "../common/proto.h"
#include "backend.h"
#include "model.h"
#include "guide.h"
#include "residency.h"
#include "kv.h"

typedef struct wk_engine wk_engine;

typedef struct wk_engine_opts {
	int max_batch_tokens; /* tokens per model batch per iteration; 0 = 256 */
	int max_seqs;         /* admitted (KV-holding) sequences; 0 = 64 */
	int kv_blocks;        /* KV blocks per model (WK_KV_BLOCK positions each);
				 0 = from kv_mb */
	int kv_mb;            /* KV MiB per model when kv_blocks is 0; 0 = the
				 default: max_seqs full contexts, capped at
				 max(model weight bytes, 256 MiB), never below one
				 full context (wk_engine_default_kv_blocks) */
	bool manual;          /* no thread: the caller drives wk_engine_step (tests) */
	wk_res *res;          /* borrowed residency (outlives the engine); NULL = a
				 private one without budgets holding just the
				 lent models */
	wk_backend_kind backend; /* WK_BACKEND_CPU (0, the default) or _CUDA */
	bool no_prefix_cache; /* do not reuse the KV of shared prefixes */
	wk_kv_dtype kv_dtype; /* KV pool elements: WK_KV_F32 (0, the default) or
				 WK_KV_BF16 (half the bytes, values rounded; the
				 CPU forward; the CUDA backend keeps its own BF16
				 cache on the device) */
} wk_engine_opts;

/* The backend the engine's forward passes run on. */
wk_backend_kind wk_engine_backend(const wk_engine *e);

/* Receives each STEP / ERROR the engine produces; m is valid only during
 * the call. Must not call back into the engine's step. */
typedef void (*wk_emit_fn)(void *ctx, const loom_msg *m);

/*
 * Creates an engine over models[0..n_models) (borrowed: they must outlive
 * the engine; names must be distinct; lent to the residency, always
 * resident) plus every model opts->res lists now or later (n_models may
 * then be 0) and, unless opts->manual, starts its thread. opts may be NULL
 * for defaults. *out owned by the caller, released with wk_engine_destroy.
 */
loom_err wk_engine_create(wk_model *const *models, int n_models, const wk_engine_opts *opts,
			  wk_emit_fn emit, void *ctx, wk_engine **out);

/* Stops the thread, drops every request (no messages), frees everything. */
void wk_engine_destroy(wk_engine *e);

/* Structured outputs need each model's vocabulary bytes; the engine reads
 * its tokenizer.json through the residency (folder or store). A model
 * lent without one (tests, benchmarks) gets its vocabulary here (borrowed:
 * it must outlive the engine). LOOM_ENOTFOUND for an unknown model. */
loom_err wk_engine_set_guide_vocab(wk_engine *e, const char *model,
				   const loom_grammar_vocab *v);
/* Grammar compiles, cache hits and preparation times so far. */
void wk_engine_guide_stats(wk_engine *e, wk_guide_stats *out);

/* Queues a request (deep copy of s; the caller keeps s). Only fails with
 * LOOM_ENOMEM; invalid requests are answered by an emitted ERROR. */
loom_err wk_engine_submit(wk_engine *e, const loom_msg_submit *s);

/* As wk_engine_submit, tagging the request with owner (e.g. the nng pipe
 * it came from) for wk_engine_cancel_owner. wk_engine_submit uses owner 0. */
loom_err wk_engine_submit_from(wk_engine *e, const loom_msg_submit *s, uint64_t owner);

/* Drops request req (waiting or running; its KV is freed) and emits a
 * final empty item with finish ABORT. Unknown ids are ignored. */
void wk_engine_cancel(wk_engine *e, uint64_t req);

/* Drops every request submitted with this owner, emitting nothing (the
 * peer is gone). Cheap and non-blocking: safe in an nng pipe callback. */
void wk_engine_cancel_owner(wk_engine *e, uint64_t owner);

/*
 * Makes adapter a (validated for model_name's config by ad_adapter_load)
 * available to SUBMITs naming model_name and a->name, from now on (kept on
 * the device outside the pool's budget: wk_res_adapter_give). Takes
 * ownership of a in every case (destroyed on failure).
 * A name already loaded for that model is replaced for new requests; the
 * old adapter stays alive until its last sequence finishes. Errors:
 * LOOM_ENOTFOUND (no such model), LOOM_EINVAL (a->n_layers differs from the
 * model's), LOOM_ENOMEM. Safe from any thread.
 */
loom_err wk_engine_add_adapter(wk_engine *e, const char *model_name, ad_adapter *a);

/* The lent model called name (one given to wk_engine_create), or NULL
 * (borrowed). Safe from any thread. */
const wk_model *wk_engine_find_model(const wk_engine *e, const char *name);

/* The residency the engine serves from (borrowed). */
wk_res *wk_engine_residency(wk_engine *e);

/* The default pool size of wk_engine_opts for model m: blocks for max_seqs
 * full contexts, capped at max(weight bytes, 256 MiB) of KV, at least one
 * full context. kv_mb > 0 asks for that many MiB instead. */
int wk_engine_default_kv_blocks(const wk_model *m, int max_seqs, int kv_mb);
/* The same from a config and the weight bytes (a model not loaded yet),
 * for a pool of dt (a BF16 pool fits twice the blocks in kv_mb or the
 * cap). */
int wk_engine_kv_blocks_for(const loom_model_config *c, size_t weight_bytes, int max_seqs,
			    int kv_mb, wk_kv_dtype dt);

/* A snapshot of the engine's counters for STATS (kv_free / kv_total: token
 * slots, i.e. blocks x WK_KV_BLOCK, summed over the models). */
void wk_engine_stats(wk_engine *e, loom_msg_stats *out);

/* Prefix-cache figures of one model (or, summed, the worker) so far. */
typedef struct wk_prefix_info {
	uint64_t ctx_tokens;    /* context tokens of sequences at admission (the
				 * prompt; prompt + generated on readmission) */
	uint64_t cached_tokens; /* of those, taken from cached or shared blocks */
	uint32_t keyed_blocks;  /* blocks registered now (held or cached) */
	uint32_t cached_blocks; /* of those, held by nobody (evictable) */
} wk_prefix_info;
/* Model mi's figures (zeros for an unknown index); mi -1: the sum. Published
 * after each iteration. */
void wk_engine_prefix_info(wk_engine *e, int mi, wk_prefix_info *out);

/* Sequences preempted (KV released, recomputed later) so far; published
 * with the STATS snapshot after each iteration. */
uint64_t wk_engine_preemptions(wk_engine *e);

/* The scheduler's view (published with STATS after each iteration). */
typedef struct wk_sched_info {
	double step_ms;            /* mean iteration time (EMA, weight 0.2) */
	double fit_a, fit_b;       /* step_ms ~ fit_a + fit_b * tokens (ms, ms/token) */
	int fit_n;                 /* iterations the fit is over (0 = no model yet) */
	int last_decode;           /* decode tokens of the last iteration */
	int last_prefill;          /* prefill tokens of the last iteration */
	int last_cap;              /* its prefill cap from TPOT targets, -1 = none */
	uint64_t queued_tokens_slo;   /* tokens to prefill of requests with a TTFT
				       * deadline or TPOT target (waiting + running) */
	uint64_t queued_tokens_batch; /* the same for the others */
} wk_sched_info;

void wk_engine_sched_info(wk_engine *e, wk_sched_info *out);

/* Tests (manual mode): fixes the step-time model to a + b * tokens ms (no
 * more fitting); b <= 0 goes back to fitting from the next iteration. */
void wk_engine_set_step_model(wk_engine *e, double a, double b);

/*
 * Manual mode only: runs one iteration (drain inbox, admit, forward,
 * sample, emit) on the calling thread. Returns the number of live requests
 * left (queued + running), so `while (wk_engine_step(e) > 0)` runs all to
 * completion. Returns -1 on an engine created with a thread.
 */
int wk_engine_step(wk_engine *e);

#endif
