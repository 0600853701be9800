/*
 * gateway/gw_link_int.h — what gw_link.c (sockets, heartbeat, request table,
 * routing) and gw_link_sync.c (model/adapter announcements, FETCH answers,
 * worker snapshots) share. Not for other modules.
 *
 * Locks: l->mu guards every field marked "under mu" and is held only
 * briefly, never across an nng send or a gw_req call. w->send_mu orders the
 * MODEL/ADAPTER messages sent to one worker: whoever sends them (the
 * receive thread on a HELLO, or gw_link_put_*) takes send_mu first, then
 * picks what to send under mu, so the worker receives versions in the
 * order the table took them. w->rx_mu is held by a worker's receive thread
 * while it delivers a STEP or ERROR; taking and dropping it (a barrier)
 * after entries left the table guarantees no delivery for them is still
 * under way, so the tokens a moved request has are final. Lock order:
 * rx_mu before send_mu before mu.
 */
#ifndef GW_LINK_INT_H
#define GW_LINK_INT_H

#include <nng/nng.h>
#include <pthread.h>
#include <stdint.h>

#include "gw_link.h"

#define GW_LINK_BUCKETS 1024
#define LK_PFX_BLOCK 16          /* tokens per KV block on the workers (WK_KV_BLOCK) */
#define LK_PFX_MAX_BLOCKS 1024   /* a prompt's blocks the router looks at */
#define LK_PFX_SETS 4096         /* per worker: 4096 x 4 blocks (a 1M-token pool) */
#define LK_PFX_WAYS 4

/* What a request needs to be sent again (elsewhere, or later). */
typedef struct lk_job {
	loom_msg_submit sub;      /* as first built; prompt_ids / stop_ids owned (the
				   * original prompt: generated ids are appended per move) */
	char sha[LOOM_SHA_HEX];   /* adapter version to prefer, "" = any */
	bool slo;                 /* routed by prediction (gw_link_submit_slo, SLO on) */
	bool queueable;           /* may wait in the admission queue (not a refusing class) */
	bool batch;               /* no TTFT target: counts in batch_inflight, needs batch room */
	uint32_t ttft_ms, tpot_ms;
	int priority;
	int64_t arrival_ms;
	uint32_t moves;           /* times resumed on another worker */
	uint64_t *pfx;            /* [n_pfx] the prompt's block keys (gw_link_prefix.c) */
	uint32_t n_pfx;
} lk_job;

typedef struct lk_entry {
	uint64_t id;
	gw_req *req;      /* holds a reference */
	int worker;       /* -1 while in the admission queue */
	uint32_t pipe;
	struct lk_entry *next;           /* hash chain, or the to_move list */
	struct lk_entry *qprev, *qnext;  /* admission queue (worker -1) */
	int64_t sent_ms;                 /* when it went to its worker */
	int64_t queued_ms;               /* when it joined the admission queue */
	lk_job job;
} lk_entry;

/* The router's view of one worker (under mu): a fit of step time against
 * tokens per step, updated from successive STATS, and the submits sent
 * since that STATS cannot reflect yet. */
#define LK_PEND_SLOTS 8
typedef struct lk_perf {
	double s1, sx, sy, sxx, sxy;  /* decayed sums over (tokens per step, step_ms) */
	double a_ms, b_ms;            /* step_ms ~= a_ms + b_ms * tokens */
	uint32_t samples;
	bool has_prev;                /* prev_* hold the previous STATS */
	uint64_t prev_steps, prev_tokens_out, prev_queued_tokens;
	uint64_t arrived;             /* prompt tokens that reached the worker since prev */
	struct {
		uint64_t seq;         /* w->ping_seq when sent; reflected by STATS answering a later PING */
		uint64_t tokens;
		uint32_t reqs;
	} pend[LK_PEND_SLOTS];
	uint64_t pend_tokens;         /* sums over pend[] */
	uint32_t pend_reqs;
	uint64_t stats_seq;           /* the PING the last HELLO answered (its STATS follows) */
	uint32_t slots;               /* sequences it runs at once: the most seen running
				       * while others waited in two successive STATS with
				       * steps between (0 = never saturated yet) */
	uint32_t prev_queued, prev_running; /* of the previous STATS */
	double dur_ms;                /* mean time a request spends there (send -> end) */
	uint32_t ia_peak;             /* most requests with a TTFT target there at once ... */
	int64_t ia_peak_ms;           /* ... in the window that began then */
} lk_perf;

/* A model or adapter workers are told about. */
typedef struct lk_item {
	loom_msg msg;             /* LOOM_MSG_MODEL or LOOM_MSG_ADAPTER; path owned */
	uint32_t *sent;           /* [l->n] pipe on which this version went out, 0 = none */
	bool fresh;               /* model from link creation: a worker listing it has it */
} lk_item;

typedef struct lk_worker {
	gw_link *l;
	int idx;
	char *url;
	nng_socket sock;
	bool sock_open;
	pthread_t rx;
	bool rx_started;
	pthread_mutex_t send_mu;  /* see above */
	pthread_mutex_t rx_mu;    /* see above */
	/* under l->mu */
	uint32_t pipe;            /* current pipe id, 0 = none */
	int64_t connected_ms;
	int64_t last_answer_ms;   /* last HELLO answering a PING on this pipe; 0 = none yet */
	int64_t last_ping_ms;
	bool ping_now;
	bool was_live;
	bool synced;              /* the current pipe's first HELLO was handled */
	uint64_t ping_seq;
	char id[LOOM_NAME_MAX];
	char backend[16];
	char (*models)[LOOM_NAME_MAX];
	uint32_t n_models;
	uint32_t inflight;
	bool has_stats;
	loom_msg_stats stats;
	bool has_res;
	loom_msg_residency res;   /* items owned */
	uint64_t live_after_seq;  /* a HELLO answering a PING up to this seq cannot make the
				   * worker live (that PING went out before its announcements) */
	uint32_t batch_inflight;  /* queueable requests routed here, not finished */
	lk_perf perf;
	/* prefixes sent here (gw_link_prefix.c): [LK_PFX_SETS][LK_PFX_WAYS]
	 * block keys (0 = empty) and when each way was last used; NULL until
	 * the first record */
	uint64_t *pfx_keys;
	uint32_t *pfx_used;
	uint32_t pfx_clock;
} lk_worker;

struct gw_link {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	lk_worker *w;
	size_t n;
	lk_entry *table[GW_LINK_BUCKETS];
	lk_entry *to_move;        /* detached from a lost worker: resumed elsewhere or failed
				   * by the heartbeat thread */
	/* admission queue (under mu): priority first, then arrival */
	lk_entry *q_head, *q_tail;
	size_t q_len, q_cap;
	uint32_t q_timeout_ms;
	bool no_slo;              /* plain least-loaded routing, no refusals, no queue */
	uint32_t worker_slots;    /* a worker's slots (room) */
	uint32_t batch_per_worker; /* 0 = no cap */
	uint32_t room_ms;         /* batch beside requests with a TTFT target: predicted TTFT
				   * at most this */
	uint64_t n_resumed, n_lost, n_timeouts;
	double prior_a_ms, prior_b_ms;  /* step model of a worker without samples yet: the
					 * running mean of the fitted ones (0 = none yet) */
	pthread_t hb;
	bool hb_started;
	bool stopping;            /* threads exit */
	bool closed;              /* submits refused */
	/* under mu */
	lk_item **mods;
	size_t n_mods, cap_mods;
	lk_item **ads;
	size_t n_ads, cap_ads;
	st_store *store;          /* borrowed; read by receive threads */
};

int64_t gw_link_now_ms(void);
/* Encodes and sends m to w (flags: 0 or NNG_FLAG_NONBLOCK); nng's code. */
int gw_link_send(lk_worker *w, const loom_msg *m, int flags);
/* Sends len bytes already encoded (buf stays the caller's); nng's code. */
int gw_link_send_buf(lk_worker *w, const void *buf, size_t len, int flags);
/* Under mu: w is connected and answered a PING in the last second. */
bool lk_is_live(const lk_worker *w, int64_t now);
bool lk_serves(const lk_worker *w, const char *model);

/* gw_link.c: the table (under mu) */
/* The chain slot holding request id (*slot is NULL when absent). */
lk_entry **lk_slot(gw_link *l, uint64_t id);
/* Enters e (job filled, req held) in the table on worker widx and counts it
 * there (inflight, batch_inflight, pending prompt tokens: n_prompt). */
void lk_table_insert(gw_link *l, lk_entry *e, int widx, uint32_t n_prompt);
/* Counts e (in the table, worker -1) on worker widx: worker, pipe, inflight,
 * batch_inflight, pending prompt tokens. */
void lk_assign(gw_link *l, lk_entry *e, int widx, uint32_t n_prompt);
/* Takes request id out of the table (and the batch queue), uncounting it; NULL if absent. */
lk_entry *lk_detach(gw_link *l, uint64_t id);
/* Not under mu: drops the entry's reference and frees it. */
void lk_entry_free(lk_entry *e);
/* Not under mu: CANCEL id on w when w is connected (non-blocking). */
void lk_send_cancel(lk_worker *w, uint64_t id);

/* gw_link_submit.c */
/* Under mu: the SUBMIT of e for now, with the n_gen ids gen generated so far
 * appended, encoded into *buf / *len (loom_malloc'ed). */
loom_err lk_encode_submit(gw_link *l, const lk_entry *e, const int32_t *gen, uint32_t n_gen,
			  void **buf, size_t *len);

/* gw_link_move.c (heartbeat thread, not under mu) */
/* Resumes each request on l->to_move on another live worker, or fails it. */
void lk_move_parked(gw_link *l);
/* Fails the queued requests that waited q_timeout_ms (503), then sends
 * queued requests to workers that meet their budget or have room, in queue
 * order; a request that cannot go holds back the later ones for its model
 * only. */
void lk_dispatch_queue(gw_link *l);

/* gw_link_route.c (all under mu) */
/* Predicted time to first token (ms) on w of a request for model / adapter
 * (sha: the version, may be "") with n_prompt tokens to prefill. */
double lk_predict_ttft(const lk_worker *w, const char *model, const char *adapter,
		       const char *sha, uint32_t n_prompt);
/* The sequences w runs at once, as far as the gateway knows. */
uint32_t lk_slots(const gw_link *l, const lk_worker *w);
/* The worker for job j (-1 = none), by the SLO rules. by_room false: a
 * worker whose prediction meets budget_ms (< 0: any); a batch job (no TTFT
 * target) never goes this way. by_room true: a worker with room (batch room
 * for a batch job). Prefers adapter residency, then the lowest prediction;
 * *best_pred gets the lowest prediction of all live workers serving the
 * model (-1 when there is none). */
int lk_route_slo(gw_link *l, const lk_job *j, uint32_t n_prompt, double budget_ms, bool by_room,
		 double *best_pred);
/* Admission by the SLO rules: a worker meeting j's remaining budget, else,
 * when j may wait and room is allowed, one with room; -1 = none (*best_pred
 * as above). */
int lk_route_admit(gw_link *l, const lk_job *j, uint32_t n_prompt, bool room, double *best_pred);
/* Least loaded with adapter/model residency as tie-breaks (the --no-slo router). */
int lk_route_plain(gw_link *l, const lk_job *j);
/* A SUBMIT of n_prompt tokens went to w (counted until a STATS reflects it). */
void lk_perf_submitted(lk_worker *w, uint32_t n_prompt);
/* A HELLO answering PING seq, then the STATS that follows it. */
void lk_perf_hello(lk_worker *w, uint64_t seq);
/* gw_link_prefix.c (under mu): j's block keys (new jobs); a worker's
 * record of the prefixes sent to it; j's cached tokens there, estimated. */
loom_err lk_prefix_keys(lk_job *j);
void lk_prefix_record(lk_worker *w, const lk_job *j);
uint32_t lk_prefix_cached(const lk_worker *w, const lk_job *j);
/* A worker lost (or restarted): its caches are gone. */
void lk_prefix_forget(lk_worker *w);
void lk_prefix_free(lk_worker *w);
void lk_perf_stats(lk_worker *w, const loom_msg_stats *st);
/* A new pipe: the worker's state starts over. */
void lk_perf_reset(lk_worker *w);
/* A request that went to w at sent_ms has ended there. */
void lk_perf_finished(lk_worker *w, int64_t sent_ms);
/* The count of requests with a TTFT target on w changed (or time passed). */
void lk_perf_load(lk_worker *w);
/* Admission queue: inserts e (worker -1) by priority, then arrival. */
void lk_queue_push(gw_link *l, lk_entry *e);
void lk_queue_unlink(gw_link *l, lk_entry *e);
/* True when a request for model of priority prio or higher waits in the
 * queue (a new one would overtake it). Requests for other models do not
 * count: they wait for other workers' room. */
bool lk_queue_ahead(const gw_link *l, int prio, const char *model);
/* Retry-After for a refusal for want of room (gw_link_retry_after_s), under mu. */
uint32_t lk_retry_after_s(gw_link *l);

/* gw_link_sync.c */
void lk_item_free(lk_item *it);
/* Copies the announced tables (creation time; no thread runs yet). */
loom_err lk_tables_init(gw_link *l, const gw_link_opts *o);
void lk_tables_fini(gw_link *l);
/* Sends w what it lacks on pipe: h = the HELLO just received (its models
 * count as served), or NULL for a change of the tables (skipped until the
 * pipe's first HELLO). False when a send failed. Takes w->send_mu. */
bool lk_sync(lk_worker *w, const loom_msg_hello *h, uint32_t pipe);
/* Receive thread: answers a FETCH with one BLOB. */
void lk_on_fetch(lk_worker *w, const loom_msg_fetch *f);
/* Receive thread: keeps a RESIDENCY (steals its items). */
void lk_on_residency(lk_worker *w, loom_msg_residency *r);
/* Under mu: the tier adapter (name, sha or "") / model has on w, LOOM_TIER_STORE when none. */
int lk_adapter_tier(const lk_worker *w, const char *name, const char *sha);
int lk_model_tier(const lk_worker *w, const char *name);

#endif
