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

#define LOOM_PROTO_VERSION 4  /* 2: sampling controls, logit_bias, logprobs; 3: guides;
				* 4: prefix cache figures (STEP n_cached, STATS) */
#define LOOM_NAME_MAX 128          /* model / adapter / worker names, bytes incl. NUL */
#define LOOM_PROTO_MAX_IDS (1u << 20) /* max token ids in one array */
#define LOOM_PROTO_MAX_ITEMS 65536 /* max entries in STEP / model lists */
#define LOOM_PROTO_MAX_STR 4096    /* max error message bytes */
#define LOOM_MAX_LOGPROBS 20       /* top alternatives per token (OpenAI's limit) */
#define LOOM_MAX_LOGIT_BIAS 1024   /* logit_bias entries per request */
#define LOOM_MAX_GUIDE (256u << 10) /* bytes of a guide's text (a schema, a regex, choices) */

/* Structured output: what the worker's grammar (common/grammar.h) holds a
 * request's output to, and the text it is compiled from. */
typedef enum loom_guide {
	LOOM_GUIDE_NONE = 0,
	LOOM_GUIDE_JSON_SCHEMA = 1, /* text: the JSON Schema, as JSON text */
	LOOM_GUIDE_JSON_OBJECT = 2, /* any JSON object; text "" */
	LOOM_GUIDE_REGEX = 3,       /* text: the regex (the whole output matches) */
	LOOM_GUIDE_CHOICE = 4,      /* text: a JSON array of the strings allowed */
	LOOM_GUIDE_WRAPPED = 5,     /* text: JSON {"prefix": s, "schema": {...},
				     * "suffix": s}: a schema value between two
				     * literal texts (tool calls) */
	LOOM_GUIDE_MAX = 5,
} loom_guide;

typedef enum loom_msg_type {
	LOOM_MSG_SUBMIT = 1, /* gateway -> worker */
	LOOM_MSG_CANCEL = 2, /* gateway -> worker */
	LOOM_MSG_PING = 3,   /* gateway -> worker; answered by HELLO */
	LOOM_MSG_HELLO = 4,  /* worker -> gateway */
	LOOM_MSG_STEP = 5,   /* worker -> gateway */
	LOOM_MSG_ERROR = 6,  /* worker -> gateway */
	LOOM_MSG_STATS = 7,  /* worker -> gateway */
	LOOM_MSG_ADAPTER = 8,/* gateway -> worker: an adapter it may be asked for */
	LOOM_MSG_MODEL = 9,  /* gateway -> worker: a base model it may be asked for */
	LOOM_MSG_FETCH = 10, /* worker -> gateway: send me (part of) a store blob */
	LOOM_MSG_BLOB = 11,  /* gateway -> worker: a chunk of a store blob */
	LOOM_MSG_RESIDENCY = 12, /* worker -> gateway: what is resident where, hit rates */
} loom_msg_type;

#define LOOM_SHA_HEX 65           /* 64 lowercase hex digits + NUL */
#define LOOM_BLOB_CHUNK (8u << 20) /* max bytes in one BLOB message */

typedef enum loom_finish {
	LOOM_FINISH_NONE = 0,   /* still generating */
	LOOM_FINISH_STOP = 1,   /* EOS or a stop id */
	LOOM_FINISH_LENGTH = 2, /* max_tokens or the context is full */
	LOOM_FINISH_ABORT = 3,  /* canceled or failed (an ERROR says why) */
} loom_finish;

/*
 * A request's sampling. Every field added after version 1 is off when zero,
 * so a zeroed struct plus temperature/top_p/seed/max_tokens is a plain
 * request. worker/sample.h gives the order the controls are applied in.
 */
typedef struct loom_sampling {
	float temperature;   /* 0 = greedy */
	float top_p;         /* (0,1]; 1 = off */
	int32_t top_k;       /* 0 = off */
	uint64_t seed;       /* always set: the gateway draws one when the client did not */
	uint32_t max_tokens;
	bool ignore_eos;
	uint32_t n_stop_ids;
	int32_t *stop_ids;   /* [n_stop_ids] extra stop token ids */
	float presence_penalty;   /* [-2, 2], OpenAI's; 0 = off */
	float frequency_penalty;  /* [-2, 2], OpenAI's; 0 = off */
	float repetition_penalty; /* > 0, Hugging Face's; 0 or 1 = off */
	float min_p;              /* [0, 1]; 0 = off */
	uint32_t min_tokens;      /* EOS and stop ids masked until this many tokens */
	uint32_t n_bias;          /* <= LOOM_MAX_LOGIT_BIAS */
	int32_t *bias_ids;        /* [n_bias] token ids (distinct) */
	float *bias;              /* [n_bias] added to their logits, [-100, 100] */
	bool logprobs;            /* report each new token's logprob (STEP items) */
	uint32_t top_logprobs;    /* with logprobs: alternatives per token, <= LOOM_MAX_LOGPROBS */
	bool prompt_logprobs;     /* report the prompt tokens' logprobs (not on resumption) */
	uint32_t prompt_top_logprobs; /* alternatives per prompt token, <= LOOM_MAX_LOGPROBS */
	uint8_t guide;            /* loom_guide; LOOM_GUIDE_NONE = unconstrained */
	char *guide_text;         /* NUL-terminated, < LOOM_MAX_GUIDE bytes, no NUL inside;
				   * NULL = "" */
} loom_sampling;

/* Deep copy of src's arrays into *dst (dst's old arrays are not freed).
 * On failure *dst holds no arrays. */
loom_err loom_sampling_copy(loom_sampling *dst, const loom_sampling *src);
/* Frees the arrays of s (stop_ids, bias_ids, bias, guide_text) and clears their counts. */
void loom_sampling_fini(loom_sampling *s);

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
	/* Resumption (a request moved off a lost worker): the last n_generated
	 * of prompt_ids are tokens this request already produced. The worker
	 * prefills all of prompt_ids, samples the next token at output position
	 * n_generated (so seeds continue), counts them against max_tokens and
	 * reports n_prompt - n_generated as the prompt length. 0 = a new request. */
	uint32_t n_generated;
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

/* Log-probabilities of n tokens: each one's own and its k best alternatives
 * (best first; equal logprobs: lower id first). worker/sample.h says of
 * which distribution. n = 0: none. */
typedef struct loom_logprobs {
	uint32_t n;
	uint32_t k;                   /* <= LOOM_MAX_LOGPROBS */
	float *lp;                    /* [n] */
	int32_t *top_ids;             /* [n * k] */
	float *top_lp;                /* [n * k] */
} loom_logprobs;

typedef struct loom_step_item {
	uint64_t req;
	uint32_t n_ids;
	int32_t *ids;                 /* [n_ids] new tokens this iteration */
	uint8_t finish;               /* loom_finish */
	uint32_t n_prompt;            /* prompt tokens (for usage); echoed every item */
	loom_logprobs lp;             /* sampling.logprobs: n = n_ids, else n = 0 */
	/* sampling.prompt_logprobs: in the item of the first token only, the
	 * prompt's tokens 1 .. n_prompt-1 (n = n_prompt - 1; the first token
	 * has no logprob); else n = 0 */
	loom_logprobs prompt_lp;
	uint32_t n_cached;            /* of n_prompt, tokens whose KV came from the
				       * prefix cache (usage); echoed every item */
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

/* One model's prefix-cache figures in STATS. */
typedef struct loom_prefix_model {
	char name[LOOM_NAME_MAX];
	uint64_t prompt_tokens, cached_tokens;
	uint32_t cached_blocks;
} loom_prefix_model;

typedef struct loom_msg_stats {
	uint32_t queued;              /* waiting sequences */
	uint32_t running;             /* sequences in the batch */
	uint64_t queued_tokens;       /* prompt tokens not yet prefilled */
	uint32_t kv_free;             /* free KV token slots */
	uint32_t kv_total;
	float step_ms;                /* mean iteration time, recent window */
	uint64_t steps;               /* iterations so far */
	uint64_t tokens_out;          /* tokens generated so far */
	float fit_a_ms, fit_b_ms;     /* step time ~ a + b * tokens (ms); 0, 0 = no fit yet */
	uint64_t queued_tokens_slo;   /* of queued_tokens: those of requests with a
				       * TTFT deadline or TPOT target */
	/* prefix cache, since start: context tokens of sequences at admission
	 * and, of those, tokens taken from cached blocks; keyed blocks now */
	uint64_t prompt_tokens, cached_tokens;
	uint32_t cached_blocks;
	uint32_t n_models;            /* per model (<= LOOM_PROTO_MAX_ITEMS) */
	loom_prefix_model *models;    /* [n_models] */
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
	char *path;                   /* NUL-terminated, < LOOM_PROTO_MAX_STR bytes; "" when sha is set */
	char sha[LOOM_SHA_HEX];       /* store blob (loom adapter layout) or "" = load from path */
} loom_msg_adapter;

/* Makes base model `name` known to the worker: its weights are store blob
 * `sha` (a loom model bundle: one safetensors with the config in its
 * metadata) or, when sha is "", the Hugging Face folder `path`. Same
 * answering rules as ADAPTER (ERROR req 0 "model NAME: reason" on failure). */
typedef struct loom_msg_model {
	char name[LOOM_NAME_MAX];
	char *path;                   /* NUL-terminated, < LOOM_PROTO_MAX_STR bytes */
	char sha[LOOM_SHA_HEX];
	char tokenizer_sha[LOOM_SHA_HEX]; /* store blob of its tokenizer.json, "" = none
					   * (structured outputs need the vocabulary) */
} loom_msg_model;

/* A worker whose own store lacks blob `sha` asks for bytes from offset on. */
typedef struct loom_msg_fetch {
	char sha[LOOM_SHA_HEX];
	uint64_t offset;
} loom_msg_fetch;

/* Bytes [offset, offset+len) of blob sha (total bytes long). len == 0 with
 * total == 0 means the gateway does not have it. */
typedef struct loom_msg_blob {
	char sha[LOOM_SHA_HEX];
	uint64_t offset;
	uint64_t total;
	uint32_t len;                 /* <= LOOM_BLOB_CHUNK */
	uint8_t *data;                /* [len] */
} loom_msg_blob;

typedef enum loom_tier {
	LOOM_TIER_STORE = 0,          /* only in the LMDB store */
	LOOM_TIER_HOST = 1,           /* host RAM cache */
	LOOM_TIER_DEVICE = 2,         /* device pool (the CPU backend's arena) */
} loom_tier;

typedef struct loom_resident {
	uint8_t kind;                 /* 0 = adapter, 1 = model */
	uint8_t tier;                 /* loom_tier */
	char name[LOOM_NAME_MAX];
	char sha[LOOM_SHA_HEX];
	uint64_t bytes;
} loom_resident;

/* Sent by the worker with every STATS: its resident entries (host and
 * device tiers) and counters since start. */
typedef struct loom_msg_residency {
	uint32_t n;
	loom_resident *items;         /* [n] */
	uint64_t host_bytes, host_budget;
	uint64_t device_bytes, device_budget;      /* adapters */
	uint64_t model_bytes, model_budget;        /* base models on the device */
	uint64_t host_hits, host_misses;
	uint64_t device_hits, device_misses;
	uint64_t cold_loads;          /* loads from the store tier */
	double cold_load_ms;          /* total time of those loads */
} loom_msg_residency;

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
		loom_msg_model model;
		loom_msg_fetch fetch;
		loom_msg_blob blob;
		loom_msg_residency residency;
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
