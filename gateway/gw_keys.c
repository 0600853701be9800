/*
 * gateway/gw_keys.c — the API key table: parsing, constant-time lookup,
 * token buckets and concurrency slots.
 *
 * The table is an array scanned whole on every request: a deployment has a
 * handful to a few thousand keys, and a scan of 32-byte digests without an
 * early exit is both fast enough (a few microseconds for a thousand) and
 * what keeps the lookup's time independent of the keys. The mutable state
 * of a key (its bucket, its requests in flight) sits under one mutex held
 * for a few instructions per request.
 */
#include "gw_keys.h"

#include <fnmatch.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/textfile.h"

#define KEYS_FILE_MAX (16u << 20) /* bytes of a keys file */
#define LABEL_MAX 64

/* A model or adapter allow-list: set = given (then n may be 0: none). */
typedef struct pat_list {
	bool set;
	char **pat;        /* [n] fnmatch patterns */
	size_t n;
} pat_list;

struct gw_key {
	uint8_t digest[32];   /* sha256 of the secret; the secret itself is not kept */
	char label[LABEL_MAX];
	pat_list models, adapters;
	uint32_t rpm;         /* 0 = no rate limit */
	uint32_t burst;       /* bucket size (>= 1 when rpm) */
	uint32_t concurrency; /* 0 = no cap */
	/* under gw_keys.mu */
	double tokens;
	int64_t last_ms;      /* tokens were computed at this time; -1 = never */
	uint32_t inflight;
};

struct gw_keys {
	gw_key **v;           /* [n] */
	size_t n, cap;
	pthread_mutex_t mu;
};

loom_err gw_keys_create(gw_keys **out)
{
	*out = loom_calloc(1, sizeof **out);
	if (!*out)
		return loom_fail(LOOM_ENOMEM, "out of memory (API keys)");
	pthread_mutex_init(&(*out)->mu, NULL);
	return LOOM_OK;
}

static void pats_fini(pat_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		loom_free(l->pat[i]);
	loom_free(l->pat);
	memset(l, 0, sizeof *l);
}

static void key_free(gw_key *key)
{
	if (!key)
		return;
	pats_fini(&key->models);
	pats_fini(&key->adapters);
	loom_free(key);
}

void gw_keys_destroy(gw_keys *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n; i++)
		key_free(k->v[i]);
	loom_free(k->v);
	pthread_mutex_destroy(&k->mu);
	loom_free(k);
}

size_t gw_keys_count(const gw_keys *k)
{
	return k ? k->n : 0;
}

size_t gw_keys_count_limited(const gw_keys *k)
{
	size_t n = 0;
	for (size_t i = 0; k && i < k->n; i++) {
		const gw_key *key = k->v[i];
		n += key->models.set || key->adapters.set || key->rpm || key->concurrency;
	}
	return n;
}

const char *gw_key_label(const gw_key *key)
{
	return key ? key->label : "(none)";
}

/* ---- parsing ---- */

static bool blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A pattern over names of [A-Za-z0-9._-] plus fnmatch's * ? [ ] !. */
static bool pattern_ok(const char *p, size_t n)
{
	if (!n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("._-*?[]!", c)))
			return false;
	}
	return true;
}

/* Parses "a,b*,c" into l. An empty value gives a set, empty list. */
static loom_err parse_pats(pat_list *l, const char *what, const char *v, size_t len,
			   const char *where)
{
	if (l->set)
		return loom_fail(LOOM_EINVAL, "%s: '%s=' given twice", where, what);
	l->set = true;
	size_t i = 0;
	while (i < len) {
		size_t j = i;
		while (j < len && v[j] != ',')
			j++;
		if (!pattern_ok(v + i, j - i))
			return loom_fail(LOOM_EINVAL, "%s: %s: '%.*s' is not a name or pattern "
				"(A-Z a-z 0-9 . _ - and * ? [ ] !)", where, what, (int)(j - i), v + i);
		char **np = loom_realloc(l->pat, (l->n + 1) * sizeof *np);
		if (!np)
			return loom_fail(LOOM_ENOMEM, "out of memory (API keys)");
		l->pat = np;
		if (!(l->pat[l->n] = loom_strndup(v + i, j - i)))
			return loom_fail(LOOM_ENOMEM, "out of memory (API keys)");
		l->n++;
		i = j + 1;
		if (j + 1 == len) /* "a," */
			return loom_fail(LOOM_EINVAL, "%s: %s: empty name after ','", where, what);
	}
	return LOOM_OK;
}

static loom_err parse_u32(uint32_t *out, const char *what, const char *v, size_t len,
			  uint32_t lo, uint32_t hi, const char *where)
{
	char buf[16];
	char *end;
	if (!len || len >= sizeof buf)
		goto bad;
	memcpy(buf, v, len);
	buf[len] = '\0';
	if (buf[0] < '0' || buf[0] > '9')
		goto bad;
	unsigned long long x = strtoull(buf, &end, 10);
	if (*end || x < lo || x > hi)
		goto bad;
	*out = (uint32_t)x;
	return LOOM_OK;
bad:
	return loom_fail(LOOM_EINVAL, "%s: %s: expected an integer %u..%u, got '%.*s'", where, what,
			 lo, hi, (int)(len > 32 ? 32 : len), v);
}

/* One "name=value" setting into key. */
static loom_err parse_setting(gw_key *key, const char *s, size_t len, const char *where)
{
	const char *eq = memchr(s, '=', len);
	if (!eq)
		return loom_fail(LOOM_EINVAL, "%s: a field after the key is not a setting NAME=VALUE "
			"(name, models, adapters, rpm, burst, concurrency)", where);
	size_t kl = (size_t)(eq - s), vl = len - kl - 1;
	const char *v = eq + 1;
#define IS(name) (kl == sizeof name - 1 && !memcmp(s, name, kl))
	if (IS("models"))
		return parse_pats(&key->models, "models", v, vl, where);
	if (IS("adapters"))
		return parse_pats(&key->adapters, "adapters", v, vl, where);
	if (IS("rpm"))
		return parse_u32(&key->rpm, "rpm", v, vl, 1, 100000000, where);
	if (IS("burst"))
		return parse_u32(&key->burst, "burst", v, vl, 1, 100000000, where);
	if (IS("concurrency"))
		return parse_u32(&key->concurrency, "concurrency", v, vl, 1, 1000000, where);
	if (IS("name")) {
		bool ok = vl && vl < LABEL_MAX && pattern_ok(v, vl) &&
			  !memchr(v, '*', vl) && !memchr(v, '?', vl) && !memchr(v, '[', vl) &&
			  !memchr(v, ']', vl) && !memchr(v, '!', vl);
		if (!ok)
			return loom_fail(LOOM_EINVAL, "%s: name: expected 1..%d characters of "
					 "A-Z a-z 0-9 . _ -", where, LABEL_MAX - 1);
		memcpy(key->label, v, vl);
		key->label[vl] = '\0';
		return LOOM_OK;
	}
#undef IS
	return loom_fail(LOOM_EINVAL, "%s: unknown setting '%.*s' (expected name, models, adapters, "
			 "rpm, burst, concurrency)", where, (int)(kl > 32 ? 32 : kl), s);
}

static bool digest_equal(const uint8_t a[32], const uint8_t b[32])
{
	unsigned d = 0;
	for (int i = 0; i < 32; i++)
		d |= a[i] ^ b[i];
	return d == 0;
}

static loom_err push(gw_keys *k, gw_key *key, const char *where)
{
	for (size_t i = 0; i < k->n; i++)
		if (digest_equal(k->v[i]->digest, key->digest))
			return loom_fail(LOOM_EEXIST, "%s: this key is given already (key %s)", where,
					 k->v[i]->label);
	if (k->n == k->cap) {
		size_t cap = k->cap ? 2 * k->cap : 8;
		gw_key **nv = loom_realloc(k->v, cap * sizeof *nv);
		if (!nv)
			return loom_fail(LOOM_ENOMEM, "out of memory (API keys)");
		k->v = nv;
		k->cap = cap;
	}
	k->v[k->n++] = key;
	return LOOM_OK;
}

loom_err gw_keys_add_line(gw_keys *k, const char *line, const char *where)
{
	loom_err rc;
	const char *p = line;
	while (blank(*p))
		p++;
	size_t n = 0;
	while (p[n] && !blank(p[n]))
		n++;
	if (!n)
		return loom_fail(LOOM_EINVAL, "%s: an empty API key", where);
	if (n > GW_KEY_MAX_LEN)
		return loom_fail(LOOM_EINVAL, "%s: an API key longer than %d bytes", where,
				 GW_KEY_MAX_LEN);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)p[i] < 0x21 || (unsigned char)p[i] > 0x7e)
			return loom_fail(LOOM_EINVAL, "%s: an API key must be printable ASCII without "
					 "blanks", where);
	gw_key *key = loom_calloc(1, sizeof *key);
	if (!key)
		return loom_fail(LOOM_ENOMEM, "out of memory (API keys)");
	loom_sha256(p, n, key->digest);
	snprintf(key->label, sizeof key->label, "#%zu", k->n + 1);
	key->last_ms = -1;
	for (p += n;;) {
		while (blank(*p))
			p++;
		if (!*p)
			break;
		for (n = 0; p[n] && !blank(p[n]); n++)
			;
		if ((rc = parse_setting(key, p, n, where)))
			goto fail;
		p += n;
	}
	if (key->burst && !key->rpm) {
		rc = loom_fail(LOOM_EINVAL, "%s: burst= needs rpm=", where);
		goto fail;
	}
	if (key->rpm && !key->burst)
		key->burst = key->rpm;
	key->tokens = key->burst;
	if ((rc = push(k, key, where)))
		goto fail;
	return LOOM_OK;
fail:
	key_free(key);
	return rc;
}

loom_err gw_keys_add_list(gw_keys *k, const char *list, const char *where)
{
	char *copy = loom_strdup(list);
	loom_err rc = LOOM_OK;
	if (!copy)
		return loom_fail(LOOM_ENOMEM, "out of memory (API keys)");
	char *save = NULL;
	size_t added = 0;
	for (char *t = strtok_r(copy, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save)) {
		char *e = t + strlen(t);
		while (blank(*t))
			t++;
		while (e > t && blank(e[-1]))
			*--e = '\0';
		if (!*t)
			continue;
		if (strpbrk(t, " \t")) {
			rc = loom_fail(LOOM_EINVAL, "%s: an API key must be printable ASCII without "
				       "blanks", where);
			break;
		}
		rc = gw_keys_add_line(k, t, where);
		added++;
	}
	if (!rc && !added)
		rc = loom_fail(LOOM_EINVAL, "%s: no API key in the list", where);
	/* the copy held secrets */
	memset(copy, 0, strlen(list));
	loom_free(copy);
	return rc;
}

loom_err gw_keys_load_file(gw_keys *k, const char *path)
{
	char *text = NULL;
	size_t len = 0;
	loom_err rc = loom_text_read(path, KEYS_FILE_MAX, &text, &len);
	if (rc)
		return rc;
	struct stat st;
	if (!stat(path, &st) && (st.st_mode & 077))
		LOOM_WARN("%s: the API keys file may be read by other users (mode %03o): chmod 600 it",
			  path, (unsigned)(st.st_mode & 0777));
	size_t before = k->n, line_no = 0;
	char *save = NULL;
	char where[256];
	for (char *line = text; line && !rc; line = save) {
		char *nl = strchr(line, '\n');
		save = nl ? nl + 1 : NULL;
		if (nl)
			*nl = '\0';
		line_no++;
		const char *p = line;
		while (blank(*p))
			p++;
		if (!*p || *p == '#')
			continue;
		snprintf(where, sizeof where, "%.200s line %zu", path, line_no);
		rc = gw_keys_add_line(k, p, where);
	}
	if (!rc && k->n == before)
		rc = loom_fail(LOOM_EINVAL, "%s: no API key in the file", path);
	memset(text, 0, len);
	loom_free(text);
	return rc;
}

/* ---- lookup and admission ---- */

/* The token of "Bearer TOKEN" (blanks around it allowed) in *tok, *n. */
static bool bearer(const char *h, const char **tok, size_t *n)
{
	if (!h)
		return false;
	while (*h == ' ' || *h == '\t')
		h++;
	if (strncasecmp(h, "Bearer", 6) || (h[6] != ' ' && h[6] != '\t'))
		return false;
	h += 6;
	while (*h == ' ' || *h == '\t')
		h++;
	size_t len = strlen(h);
	while (len && (h[len - 1] == ' ' || h[len - 1] == '\t'))
		len--;
	*tok = h;
	*n = len;
	return len > 0;
}

const gw_key *gw_keys_find(const gw_keys *k, const char *authorization)
{
	const char *tok;
	size_t n;
	uint8_t d[32];
	if (!k || !bearer(authorization, &tok, &n) || n > GW_KEY_MAX_LEN)
		return NULL;
	loom_sha256(tok, n, d);
	/* every key is compared, and the match selected without a branch on it */
	size_t hit = k->n;
	for (size_t i = 0; i < k->n; i++) {
		size_t eq = digest_equal(d, k->v[i]->digest);
		hit ^= (hit ^ i) & ((size_t)0 - eq);
	}
	memset(d, 0, sizeof d);
	return hit < k->n ? k->v[hit] : NULL;
}

/* Refills key's bucket up to now_ms (under mu). */
static void refill(gw_key *key, int64_t now_ms)
{
	if (key->last_ms >= 0 && now_ms > key->last_ms) {
		key->tokens += (double)(now_ms - key->last_ms) * key->rpm / 60000.0;
		if (key->tokens > key->burst)
			key->tokens = key->burst;
	}
	if (key->last_ms < 0 || now_ms > key->last_ms)
		key->last_ms = now_ms;
}

bool gw_keys_admit(gw_keys *k, const char *authorization, bool generation, int64_t now_ms,
		   gw_keys_grant *g, gw_api_err *e, uint32_t *retry_s)
{
	memset(g, 0, sizeof *g);
	*retry_s = 0;
	const char *tok;
	size_t n;
	if (!bearer(authorization, &tok, &n)) {
		gw_api_err_set(e, 401, "invalid_request_error", NULL, "invalid_api_key",
			       "You didn't provide an API key. You need to provide your API key in an "
			       "Authorization header using Bearer auth (i.e. Authorization: Bearer "
			       "YOUR_KEY).");
		return false;
	}
	gw_key *key = (gw_key *)gw_keys_find(k, authorization);
	if (!key) {
		gw_api_err_set(e, 401, "invalid_request_error", NULL, "invalid_api_key",
			       "Incorrect API key provided.");
		return false;
	}
	bool busy = false, ok = true;
	pthread_mutex_lock(&k->mu);
	if (generation && key->concurrency && key->inflight >= key->concurrency) {
		busy = true;
		ok = false;
	} else if (key->rpm) {
		refill(key, now_ms);
		if (key->tokens >= 1.0) {
			key->tokens -= 1.0;
		} else {
			double wait_s = (1.0 - key->tokens) * 60.0 / key->rpm;
			*retry_s = (uint32_t)ceil(wait_s - 1e-9);
			if (*retry_s < 1)
				*retry_s = 1;
			ok = false;
		}
	}
	if (ok && generation && key->concurrency) {
		key->inflight++;
		g->slot = true;
	}
	uint32_t cap = key->concurrency, rpm = key->rpm;
	pthread_mutex_unlock(&k->mu);
	if (busy) {
		*retry_s = 1;
		gw_api_err_set(e, 429, "rate_limit_error", NULL, "rate_limit_exceeded",
			       "Too many requests in flight for this API key (at most %u at once). "
			       "Retry when one of them has ended.", cap);
	} else if (!ok) {
		gw_api_err_set(e, 429, "rate_limit_error", NULL, "rate_limit_exceeded",
			       "Rate limit reached for this API key: %u requests per minute. Retry "
			       "after %u s.", rpm, *retry_s);
	}
	if (!ok) {
		LOOM_DEBUG("API key %s: %s", key->label, busy ? "concurrency limit" : "rate limit");
		return false;
	}
	g->key = key;
	return true;
}

void gw_keys_release(gw_keys *k, gw_keys_grant *g)
{
	if (!g->key)
		return;
	if (g->slot) {
		gw_key *key = (gw_key *)g->key;
		pthread_mutex_lock(&k->mu);
		if (key->inflight)
			key->inflight--;
		pthread_mutex_unlock(&k->mu);
	}
	memset(g, 0, sizeof *g);
}

/* ---- what a key may use ---- */

bool gw_key_may_use(const gw_key *key, const char *name, bool adapter)
{
	if (!key)
		return true;
	const pat_list *l = adapter ? &key->adapters : &key->models;
	if (!l->set)
		return true;
	for (size_t i = 0; i < l->n; i++)
		if (!fnmatch(l->pat[i], name, 0))
			return true;
	return false;
}

char *gw_keys_filter_models(const gw_key *key, char *json)
{
	if (!json || !key || (!key->models.set && !key->adapters.set))
		return json;
	char *out = NULL;
	json_t *root = json_loads(json, 0, NULL);
	loom_free(json);
	json_t *data = json_object_get(root, "data");
	if (!json_is_array(data))
		goto out;
	for (size_t i = json_array_size(data); i-- > 0;) {
		json_t *m = json_array_get(data, i);
		const char *id = json_string_value(json_object_get(m, "id"));
		bool adapter = json_is_string(json_object_get(m, "parent"));
		if (!id || !gw_key_may_use(key, id, adapter))
			json_array_remove(data, i);
	}
	char *s = json_dumps(root, JSON_COMPACT);
	if (s) {
		out = loom_strdup(s);
		free(s); /* jansson's allocator */
	}
out:
	json_decref(root);
	return out;
}
