/*
 * common/proto.h — the gateway <-> worker wire protocol (msgpack over nng).
 *
 * Owns: the message structs and one encode/decode pair for all of them.
 * Every message is a msgpack array [type, version, field, field, ...] with
 * a fixed arity per type; decoding is strict: unknown type, wrong version,
 * wrong arity, wrong field type, trailing bytes, over-long strings/arrays
 * are LOOM_EPROTO with a message naming the field — never a crash.
 * Must not: touch sockets (callers move the bytes over nng) or know about
 * HTTP, tokenizers or models.
 *
 * Ownership: loom_msg_decode() fills *out with memory it allocates (arrays,
 * strings — copies, never pointers into the input buffer); release it with
 * loom_msg_fini(). loom_msg_encode() allocates *buf with loom_malloc; the
 * caller frees it with loom_free.
 */
#ifndef LOOM_PROTO_H
#define LOOM_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define LOOM_PROTO_VERSION 1
#define LOOM_NAME_MAX 128          /* model / adapter / worker names, bytes incl. NUL */
#define LOOM_PROTO_MAX_IDS (1u << 20) /* max token ids in one array */
#define LOOM_PROTO_MAX_ITEMS 65536 /* max entries in STEP / model lists */
#define LOOM_PROTO_MAX_STR 4096    /* max error message bytes */

typedef enum loom_msg_type {
	LOOM_MSG_SUBMIT = 1, /* gateway -> worker */
	LOOM_MSG_CANCEL = 2, /* gateway -> worker */
	LOOM_MSG_PING = 3,   /* gateway -> worker; answered by HELLO */
	LOOM_MSG_HELLO = 4,  /* worker -> gateway */
	LOOM_MSG_STEP = 5,   /* worker -> gateway */
	LOOM_MSG_ERROR = 6,  /* worker -> gateway */
	LOOM_MSG_STATS = 7,  /* worker -> gateway */
	LOOM_MSG_ADAPTER = 8,/* gateway -> worker: an adapter it may be asked for */
} loom_msg_type;

typedef enum loom_finish {
	LOOM_FINISH_NONE = 0,   /* still generating */
	LOOM_FINISH_STOP = 1,   /* EOS or a stop id */
	LOOM_FINISH_LENGTH = 2, /* max_tokens or the context is full */
	LOOM_FINISH_ABORT = 3,  /* canceled or failed (an ERROR says why) */
} loom_finish;

typedef struct loom_sampling {
	float temperature;   /* 0 = greedy */
	float top_p;         /* (0,1]; 1 = off */
	int32_t top_k;       /* 0 = off */
	uint64_t seed;       /* always set: the gateway draws one when the client did not */
	uint32_t max_tokens;
	bool ignore_eos;
	uint32_t n_stop_ids;
	int32_t *stop_ids;   /* [n_stop_ids] extra stop token ids */
} loom_sampling;

typedef struct loom_msg_submit {
	uint64_t req;                 /* gateway-unique request id */
	char model[LOOM_NAME_MAX];
	char adapter[LOOM_NAME_MAX];  /* "" = base model */
	uint32_t n_prompt;
	int32_t *prompt_ids;          /* [n_prompt] */
	loom_sampling sampling;
	char slo_class[32];
	uint32_t ttft_deadline_ms;    /* 0 = none */
	uint32_t tpot_target_ms;      /* 0 = none */
} loom_msg_submit;

typedef struct loom_msg_cancel {
	uint64_t req;
} loom_msg_cancel;

typedef struct loom_msg_ping {
	uint64_t seq;
} loom_msg_ping;

typedef struct loom_msg_hello {
	char worker_id[LOOM_NAME_MAX];
	char backend[16];             /* "cpu" | "cuda" */
	uint32_t proto_version;
	uint64_t ping_seq;            /* the PING this answers (0 when unsolicited) */
	uint64_t device_mem;          /* bytes */
	uint32_t n_models;
	char (*models)[LOOM_NAME_MAX];/* [n_models] model names resident/served */
} loom_msg_hello;

typedef struct loom_step_item {
	uint64_t req;
	uint32_t n_ids;
	int32_t *ids;                 /* [n_ids] new tokens this iteration */
	uint8_t finish;               /* loom_finish */
	uint32_t n_prompt;            /* prompt tokens (for usage); echoed every item */
} loom_step_item;

typedef struct loom_msg_step {
	uint32_t n_items;
	loom_step_item *items;        /* [n_items] */
} loom_msg_step;

typedef struct loom_msg_error {
	uint64_t req;                 /* 0 = about the worker, not a request */
	uint32_t code;                /* loom_err */
	char *message;                /* NUL-terminated */
} loom_msg_error;

typedef struct loom_msg_stats {
	uint32_t queued;              /* waiting sequences */
	uint32_t running;             /* sequences in the batch */
	uint64_t queued_tokens;       /* prompt tokens not yet prefilled */
	uint32_t kv_free;             /* free KV token slots */
	uint32_t kv_total;
	float step_ms;                /* mean iteration time, recent window */
	uint64_t steps;               /* iterations so far */
	uint64_t tokens_out;          /* tokens generated so far */
} loom_msg_stats;

/* Makes adapter `name` of base model `base_model` known to the worker. Until
 * the store lands (issue 4) it names a PEFT folder on the worker's host.
 * The gateway sends one for every adapter right after a connection's first
 * HELLO, before any SUBMIT that uses it. The worker loads and validates it
 * before it reads its next message; a failure is answered by ERROR{req 0,
 * message "adapter NAME: reason"} and SUBMITs naming it get ERROR
 * LOOM_ENOTFOUND. Re-sending a known name replaces it for new requests. */
typedef struct loom_msg_adapter {
	char name[LOOM_NAME_MAX];
	char base_model[LOOM_NAME_MAX];
	char *path;                   /* NUL-terminated, < LOOM_PROTO_MAX_STR bytes */
} loom_msg_adapter;

typedef struct loom_msg {
	loom_msg_type type;
	union {
		loom_msg_submit submit;
		loom_msg_cancel cancel;
		loom_msg_ping ping;
		loom_msg_hello hello;
		loom_msg_step step;
		loom_msg_error error;
		loom_msg_stats stats;
		loom_msg_adapter adapter;
	} u;
} loom_msg;

/* Encodes m. *buf is loom_malloc'ed (caller loom_free's), *len its size. */
loom_err loom_msg_encode(const loom_msg *m, void **buf, size_t *len);
/* Decodes len bytes strictly into *out (which the caller releases with
 * loom_msg_fini, also after a failure — it is then zeroed/empty). */
loom_err loom_msg_decode(const void *buf, size_t len, loom_msg *out);
/* Frees what decode allocated inside m (not m itself); m becomes empty. */
void loom_msg_fini(loom_msg *m);
/* Static name of a message type ("SUBMIT"), "?" if unknown. */
const char *loom_msg_type_name(int type);

#endif
