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
 * order the table took them. Lock order: send_mu before mu.
 */
#ifndef GW_LINK_INT_H
#define GW_LINK_INT_H

#include <nng/nng.h>
#include <pthread.h>
#include <stdint.h>

#include "gw_link.h"

#define GW_LINK_BUCKETS 1024

typedef struct lk_entry {
	uint64_t id;
	gw_req *req;      /* holds a reference */
	int worker;
	uint32_t pipe;
	struct lk_entry *next;
} lk_entry;

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
} lk_worker;

struct gw_link {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	lk_worker *w;
	size_t n;
	lk_entry *table[GW_LINK_BUCKETS];
	lk_entry *to_fail;        /* detached entries waiting for gw_req_fail */
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
