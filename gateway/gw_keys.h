/*
 * gateway/gw_keys.h — API keys of the inference routes (issue 15 item 4).
 *
 * Owns: the table of API keys (from --api-key, LOOM_API_KEY and
 * --api-keys-file), each with optional settings: the base models and the
 * adapters it may use (shell patterns), a request rate (token bucket:
 * `burst` requests at once, refilled at `rpm` per minute) and a cap on its
 * generation requests in flight. Recognizing a request's key from its
 * "Authorization: Bearer KEY" header in constant time, admitting it against
 * the key's limits, and the OpenAI-shaped refusals (401 invalid_api_key,
 * 429 rate_limit_exceeded with a Retry-After).
 * Secrets are kept only as SHA-256 digests: a request's token is hashed and
 * the digest compared with every key's without an early exit, so the time
 * taken says nothing about which key, or how much of one, matched. Logs and
 * errors name a key by its label (name=..., else "#N", its place in the
 * table), never by its secret.
 * Thread safety: the table is built before the server starts and read-only
 * afterwards, except each key's bucket and in-flight count (one mutex).
 * Must not: know HTTP libraries, the admin token (gw_policy), or log secrets.
 * Called by main (building) and gw_server (every request but /health,
 * /ready and the admin routes).
 *
 * Keys file: one key per line, then optional settings separated by blanks:
 *   KEY [name=LABEL] [models=P,P...] [adapters=P,P...] [rpm=N] [burst=N] [concurrency=N]
 * Blank lines and lines starting with '#' are ignored. P is a shell pattern
 * (fnmatch: '*', '?', [...]) over model or adapter names; a list that is
 * given but empty ("models=") allows none, one not given allows all.
 */
#ifndef GW_KEYS_H
#define GW_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "gw_openai.h"

typedef struct gw_keys gw_keys;
typedef struct gw_key gw_key; /* one key: lives as long as its table */

#define GW_KEY_MAX_LEN 512    /* bytes of a key (printable ASCII, no blanks) */

loom_err gw_keys_create(gw_keys **out);
/* NULL is fine. Every grant must have been released. */
void gw_keys_destroy(gw_keys *k);

/*
 * Adds one key with its settings, in the keys file's line format (above).
 * where names the line's origin for errors ("--api-key", "FILE line 3"): a
 * malformed key or setting is LOOM_EINVAL, a key already in the table
 * LOOM_EEXIST; neither message shows the secret.
 */
loom_err gw_keys_add_line(gw_keys *k, const char *line, const char *where);
/* Adds every comma-separated key of list (LOOM_API_KEY), without settings. */
loom_err gw_keys_add_list(gw_keys *k, const char *list, const char *where);
/* Adds every line of the keys file at path (a regular file; errors name the
 * file and line). Warns when other users may read the file. */
loom_err gw_keys_load_file(gw_keys *k, const char *path);

size_t gw_keys_count(const gw_keys *k);
/* How many keys have any setting (a model/adapter list or a limit). */
size_t gw_keys_count_limited(const gw_keys *k);
/* "name" or "#N": what logs call the key. */
const char *gw_key_label(const gw_key *key);

/*
 * The key of an Authorization header value ("Bearer KEY"), or NULL when it
 * is absent, malformed or no key matches. No side effect (see admit).
 */
const gw_key *gw_keys_find(const gw_keys *k, const char *authorization);

/* What an admitted request holds until it ends. Zeroed = nothing held. */
typedef struct gw_keys_grant {
	const gw_key *key;
	bool slot;         /* holds one of the key's concurrency slots */
} gw_keys_grant;

/*
 * Admits a request carrying authorization (may be NULL) at now_ms (a
 * monotonic clock): true and *g filled, or false and *e holds the refusal:
 * 401 (no, malformed or unknown key; *retry_s 0) or 429 (the key's request
 * rate, or its concurrency when generation is set; *retry_s is when a retry
 * can pass: the bucket's next token, 1 s for concurrency). A request counts
 * against the rate whatever its route; a generation also takes a slot,
 * released with gw_keys_release. A refused request takes nothing.
 */
bool gw_keys_admit(gw_keys *k, const char *authorization, bool generation, int64_t now_ms,
		   gw_keys_grant *g, gw_api_err *e, uint32_t *retry_s);
/* Gives back what g holds (nothing is fine) and zeroes it. */
void gw_keys_release(gw_keys *k, gw_keys_grant *g);

/* True when key may use the base model (adapter false) or adapter called
 * name. key NULL (no keys configured) may use everything. */
bool gw_key_may_use(const gw_key *key, const char *name, bool adapter);

/*
 * /v1/models for key: json (loom_malloc'ed {"object":"list","data":[...]},
 * taken) without the entries key may not use; an entry with a string
 * "parent" is an adapter, else a base model. Returns json itself when the
 * key has no list, NULL when out of memory (json is freed either way).
 */
char *gw_keys_filter_models(const gw_key *key, char *json);

#endif
