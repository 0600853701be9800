/*
 * tests/integration/http_ex.h — one HTTP(S) exchange with what lt_http does
 * not send: an Authorization header, a CA file to verify the server against
 * (HTTPS), a client certificate; and reading one response header. Used by
 * the API key and TLS tests. Header-only (static functions), like
 * tests/gateway/admin_stack.h.
 */
#ifndef TESTS_INTEGRATION_HTTP_EX_H
#define TESTS_INTEGRATION_HTTP_EX_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"
#include "tests/support/harness.h"

typedef struct hx_req {
	const char *method;    /* NULL = GET, or POST when body is set */
	const char *url;
	const char *body;      /* JSON, or NULL */
	const char *auth;      /* Authorization header value, or NULL */
	const char *cafile;    /* HTTPS: verify the server (and its name) against it */
	long timeout_ms;       /* 0 = 30 s */
	char err[CURL_ERROR_SIZE]; /* out: libcurl's message when the exchange failed */
} hx_req;

static inline size_t hx_append(void *data, size_t sz, size_t nm, void *ud)
{
	char **p = ud;
	size_t add = sz * nm, have = *p ? strlen(*p) : 0;
	char *np = loom_realloc(*p, have + add + 1);
	if (!np)
		return 0;
	memcpy(np + have, data, add);
	np[have + add] = '\0';
	*p = np;
	return add;
}

/* The HTTP status (0 when none came: q->err says why); r's strings are
 * loom_malloc'ed (lt_resp_free). */
static inline long hx_do(hx_req *q, lt_resp *r)
{
	struct curl_slist *hs = NULL;
	char h[1024];
	memset(r, 0, sizeof *r);
	q->err[0] = '\0';
	CURL *c = curl_easy_init();
	if (!c)
		return 0;
	curl_easy_setopt(c, CURLOPT_URL, q->url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST,
			 q->method ? q->method : q->body ? "POST" : "GET");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, q->timeout_ms ? q->timeout_ms : 30000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, hx_append);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hx_append);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->headers);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, q->err);
	if (q->cafile) {
		curl_easy_setopt(c, CURLOPT_CAINFO, q->cafile);
		curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	}
	hs = curl_slist_append(hs, "Expect:");
	if (q->body) {
		hs = curl_slist_append(hs, "Content-Type: application/json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(q->body));
	}
	if (q->auth) {
		snprintf(h, sizeof h, "Authorization: %s", q->auth);
		hs = curl_slist_append(hs, h);
	}
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
	CURLcode cc = curl_easy_perform(c);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	else if (!q->err[0])
		snprintf(q->err, sizeof q->err, "%s", curl_easy_strerror(cc));
	curl_slist_free_all(hs);
	curl_easy_cleanup(c);
	if (!r->body)
		r->body = loom_strdup("");
	if (!r->headers)
		r->headers = loom_strdup("");
	r->len = strlen(r->body);
	return cc == CURLE_OK ? r->status : 0;
}

/* The value of response header name (case-insensitive) into val; false when absent. */
static inline bool hx_header(const lt_resp *r, const char *name, char *val, size_t n)
{
	size_t nl = strlen(name);
	for (const char *p = r->headers; p && *p;) {
		const char *e = strchr(p, '\n');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len > nl && !strncasecmp(p, name, nl) && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			size_t vl = (size_t)(p + len - v);
			while (vl && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
				vl--;
			snprintf(val, n, "%.*s", (int)vl, v);
			return true;
		}
		p = e ? e + 1 : NULL;
	}
	return false;
}

#endif
