/*
 * gateway/gw_multipart.c — streaming multipart/form-data.
 *
 * The body is "preamble CRLF--B parts... CRLF--B--" where every part is
 * "transport padding CRLF headers CRLF CRLF data" and ends at the next
 * "CRLF--B". Data bytes pass through a Knuth-Morris-Pratt matcher for the
 * delimiter "\r\n--B": while a prefix of the delimiter is matched those
 * bytes are held back (they are the delimiter's own bytes, so nothing is
 * copied: on a mismatch they are emitted from the delimiter string itself).
 * The body's first delimiter may lack the leading CRLF, so the parser
 * starts with those two bytes counted as matched.
 */
#include "gw_multipart.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/alloc.h"

enum state {
	S_PREAMBLE,   /* before the first delimiter: data dropped */
	S_AFTER_DELIM,/* "--" (the end) or padding then CRLF (a part) */
	S_AFTER_DASH, /* one '-' seen */
	S_PAD_CR,     /* padding seen, waiting for '\n' after '\r' */
	S_HEADERS,
	S_DATA,
	S_EPILOGUE,   /* after the closing delimiter: ignored */
	S_ERROR,
};

struct gw_mp {
	gw_mp_cbs cb;
	char delim[GW_MP_BOUNDARY_MAX + 5]; /* "\r\n--" boundary */
	size_t dlen;
	size_t fail[GW_MP_BOUNDARY_MAX + 5]; /* KMP failure function */
	size_t st;                           /* delimiter bytes matched */
	enum state state;
	char hdr[GW_MP_HEADER_MAX + 1];
	size_t hlen;
	bool in_part;
	loom_err err;
	char errmsg[256];
};

loom_err gw_mp_boundary(const char *ct, char *out)
{
	out[0] = '\0';
	if (!ct)
		return loom_fail(LOOM_EINVAL, "missing Content-Type (expected multipart/form-data)");
	while (*ct == ' ')
		ct++;
	if (strncasecmp(ct, "multipart/form-data", 19) || (ct[19] && ct[19] != ';' && ct[19] != ' '))
		return loom_fail(LOOM_EINVAL, "Content-Type '%.64s' is not multipart/form-data", ct);
	const char *p = ct + 19;
	while ((p = strchr(p, ';'))) {
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncasecmp(p, "boundary=", 9))
			continue;
		p += 9;
		size_t n = 0;
		if (*p == '"') {
			p++;
			while (p[n] && p[n] != '"')
				n++;
			if (p[n] != '"')
				return loom_fail(LOOM_EINVAL, "Content-Type: unterminated boundary");
		} else {
			while (p[n] && p[n] != ';' && p[n] != ' ' && p[n] != '\t')
				n++;
		}
		if (n == 0 || n > GW_MP_BOUNDARY_MAX)
			return loom_fail(LOOM_EINVAL, "Content-Type: the boundary must be 1..%d bytes",
					 GW_MP_BOUNDARY_MAX);
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
				return loom_fail(LOOM_EINVAL, "Content-Type: bad byte in the boundary");
		memcpy(out, p, n);
		out[n] = '\0';
		return LOOM_OK;
	}
	return loom_fail(LOOM_EINVAL, "Content-Type multipart/form-data without a boundary");
}

loom_err gw_mp_create(const char *boundary, const gw_mp_cbs *cbs, gw_mp **out)
{
	*out = NULL;
	size_t bl = strlen(boundary);
	if (bl == 0 || bl > GW_MP_BOUNDARY_MAX)
		return loom_fail(LOOM_EINVAL, "multipart boundary must be 1..%d bytes",
				 GW_MP_BOUNDARY_MAX);
	gw_mp *p = loom_calloc(1, sizeof *p);
	if (!p)
		return loom_fail(LOOM_ENOMEM, "out of memory parsing an upload");
	p->cb = *cbs;
	p->dlen = (size_t)snprintf(p->delim, sizeof p->delim, "\r\n--%s", boundary);
	p->fail[0] = p->fail[1] = 0;
	for (size_t i = 1, k = 0; i < p->dlen; i++) {
		while (k && p->delim[i] != p->delim[k])
			k = p->fail[k];
		if (p->delim[i] == p->delim[k])
			k++;
		p->fail[i + 1] = k;
	}
	p->st = 2; /* the first delimiter may start the body: CRLF counted as seen */
	p->state = S_PREAMBLE;
	*out = p;
	return LOOM_OK;
}

void gw_mp_destroy(gw_mp *p)
{
	loom_free(p);
}

static loom_err fail(gw_mp *p, loom_err rc, const char *msg)
{
	if (p->state != S_ERROR) {
		p->state = S_ERROR;
		p->err = rc;
		snprintf(p->errmsg, sizeof p->errmsg, "%s", msg);
	}
	return loom_fail(p->err, "%s", p->errmsg);
}

/* A callback failed: keep its message. */
static loom_err cb_fail(gw_mp *p, loom_err rc)
{
	return fail(p, rc, loom_errmsg());
}

static loom_err emit(gw_mp *p, const char *d, size_t n)
{
	if (!n || p->state != S_DATA)
		return LOOM_OK; /* preamble bytes are dropped */
	loom_err rc = p->cb.part_data ? p->cb.part_data(p->cb.ctx, d, n) : LOOM_OK;
	return rc ? cb_fail(p, rc) : LOOM_OK;
}

/* Value of parameter key (e.g. "name") in a Content-Disposition value;
 * out gets it unquoted. False when absent. */
static bool param(const char *v, const char *key, char *out, size_t n)
{
	size_t kl = strlen(key);
	const char *p = v;
	while ((p = strchr(p, ';'))) {
		p++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (strncasecmp(p, key, kl) || p[kl] != '=')
			continue;
		p += kl + 1;
		size_t o = 0;
		if (*p == '"') {
			for (p++; *p && *p != '"'; p++) {
				if (*p == '\\' && p[1])
					p++;
				if (o + 1 < n)
					out[o++] = *p;
			}
		} else {
			for (; *p && *p != ';' && *p != ' '; p++)
				if (o + 1 < n)
					out[o++] = *p;
		}
		out[o] = '\0';
		return true;
	}
	return false;
}

/* The headers of a part are complete in p->hdr (without the blank line). */
static loom_err part_headers(gw_mp *p)
{
	char name[256] = "", filename[256] = "", ctype[128] = "";
	bool disp = false;
	char *save = NULL;
	p->hdr[p->hlen] = '\0';
	for (char *line = strtok_r(p->hdr, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save)) {
		char *colon = strchr(line, ':');
		if (!colon)
			return fail(p, LOOM_EFORMAT, "multipart: a part header line has no ':'");
		*colon = '\0';
		char *v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		if (!strcasecmp(line, "Content-Disposition")) {
			if (strncasecmp(v, "form-data", 9))
				return fail(p, LOOM_EFORMAT,
					    "multipart: Content-Disposition must be form-data");
			disp = true;
			if (!param(v, "name", name, sizeof name) || !name[0])
				return fail(p, LOOM_EFORMAT,
					    "multipart: a part's Content-Disposition has no name");
			param(v, "filename", filename, sizeof filename);
		} else if (!strcasecmp(line, "Content-Type")) {
			snprintf(ctype, sizeof ctype, "%s", v);
		}
	}
	if (!disp)
		return fail(p, LOOM_EFORMAT, "multipart: a part has no Content-Disposition");
	p->in_part = true;
	loom_err rc = p->cb.part_begin ? p->cb.part_begin(p->cb.ctx, name, filename, ctype) : 0;
	return rc ? cb_fail(p, rc) : LOOM_OK;
}

/* A whole delimiter was matched in PREAMBLE or DATA. */
static loom_err delimiter(gw_mp *p)
{
	if (p->in_part) {
		p->in_part = false;
		loom_err rc = p->cb.part_end ? p->cb.part_end(p->cb.ctx) : LOOM_OK;
		if (rc)
			return cb_fail(p, rc);
	}
	p->state = S_AFTER_DELIM;
	p->st = 0;
	return LOOM_OK;
}

/* One byte through the delimiter matcher (PREAMBLE / DATA). */
static loom_err match_byte(gw_mp *p, char c)
{
	loom_err rc;
	while (p->st && p->delim[p->st] != c) {
		size_t k = p->fail[p->st];
		if ((rc = emit(p, p->delim, p->st - k)))
			return rc;
		p->st = k;
	}
	if (p->delim[p->st] == c) {
		if (++p->st == p->dlen)
			return delimiter(p);
		return LOOM_OK;
	}
	return emit(p, &c, 1);
}

loom_err gw_mp_feed(gw_mp *p, const void *data, size_t n)
{
	const char *d = data;
	loom_err rc;
	if (p->state == S_ERROR)
		return loom_fail(p->err, "%s", p->errmsg);
	size_t i = 0;
	while (i < n) {
		char c = d[i];
		switch (p->state) {
		case S_PREAMBLE:
		case S_DATA:
			if (p->st == 0 && p->state == S_DATA) {
				/* fast path: a run without '\r' is plain data */
				const char *cr = memchr(d + i, '\r', n - i);
				size_t run = cr ? (size_t)(cr - (d + i)) : n - i;
				if (run) {
					if ((rc = emit(p, d + i, run)))
						return rc;
					i += run;
					continue;
				}
			}
			if ((rc = match_byte(p, c)))
				return rc;
			i++;
			break;
		case S_AFTER_DELIM:
			if (c == '-')
				p->state = S_AFTER_DASH;
			else if (c == '\r')
				p->state = S_PAD_CR;
			else if (c != ' ' && c != '\t')
				return fail(p, LOOM_EFORMAT, "multipart: bad bytes after a boundary");
			i++;
			break;
		case S_AFTER_DASH:
			if (c != '-')
				return fail(p, LOOM_EFORMAT, "multipart: bad bytes after a boundary");
			p->state = S_EPILOGUE;
			i++;
			break;
		case S_PAD_CR:
			if (c != '\n')
				return fail(p, LOOM_EFORMAT, "multipart: bad bytes after a boundary");
			p->state = S_HEADERS;
			p->hlen = 0;
			i++;
			break;
		case S_HEADERS:
			if (p->hlen >= GW_MP_HEADER_MAX)
				return fail(p, LOOM_EFORMAT, "multipart: part headers are too long");
			p->hdr[p->hlen++] = c;
			i++;
			if (p->hlen == 2 && !memcmp(p->hdr, "\r\n", 2)) {
				return fail(p, LOOM_EFORMAT, "multipart: a part has no headers");
			} else if (p->hlen >= 4 && !memcmp(p->hdr + p->hlen - 4, "\r\n\r\n", 4)) {
				p->hlen -= 4;
				if ((rc = part_headers(p)))
					return rc;
				p->state = S_DATA;
				p->st = 0;
			}
			break;
		case S_EPILOGUE:
			return LOOM_OK;
		case S_ERROR:
			return loom_fail(p->err, "%s", p->errmsg);
		}
	}
	return LOOM_OK;
}

loom_err gw_mp_finish(gw_mp *p)
{
	if (p->state == S_ERROR)
		return loom_fail(p->err, "%s", p->errmsg);
	if (p->state != S_EPILOGUE)
		return fail(p, LOOM_EFORMAT, p->state == S_PREAMBLE
						     ? "multipart: no boundary found in the body"
						     : "multipart: the body ended before the closing boundary");
	return LOOM_OK;
}
