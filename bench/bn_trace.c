/*
 * bench/bn_trace.c — trace CSV and adapter-list parsing.
 *
 * Both parsers walk the text line by line (LF or CRLF), trimming blanks.
 * Trace adapter names are interned through a small open-addressing hash
 * table so a 100k-row trace over thousands of adapters parses in linear time.
 */
#include "bench/bn_trace.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

#define NAME_MAX_LEN 255
#define TRACE_HEADER "timestamp_s,adapter,prompt_tokens,output_tokens"

loom_err bn_read_file(const char *path, char **text, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0;
	*text = NULL;
	*len = 0;
	if (!f)
		return loom_fail(LOOM_EIO, "%s: cannot open: %s", path, strerror(errno));
	for (;;) {
		if (cap - n < 4096) {
			size_t nc = cap ? cap * 2 : 65536;
			char *nb = loom_realloc(buf, nc + 1);
			if (!nb) {
				loom_free(buf);
				fclose(f);
				return loom_fail(LOOM_ENOMEM, "%s: no memory to read it", path);
			}
			buf = nb;
			cap = nc;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		int e = errno;
		loom_free(buf);
		fclose(f);
		return loom_fail(LOOM_EIO, "%s: read failed: %s", path, strerror(e));
	}
	fclose(f);
	buf[n] = '\0';
	*text = buf;
	*len = n;
	return LOOM_OK;
}

/* ---- line walking ---- */

typedef struct line_iter {
	const char *p, *end;
	int lineno;
} line_iter;

/* Next line, trimmed; returns 0 at the end of the text. */
static int next_line(line_iter *it, const char **s, const char **e)
{
	if (it->p >= it->end)
		return 0;
	const char *nl = memchr(it->p, '\n', (size_t)(it->end - it->p));
	const char *le = nl ? nl : it->end;
	*s = it->p;
	*e = le;
	it->p = nl ? nl + 1 : it->end;
	it->lineno++;
	while (*s < *e && (**s == ' ' || **s == '\t'))
		(*s)++;
	while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\r'))
		(*e)--;
	return 1;
}

static int skip_line(const char *s, const char *e)
{
	return s == e || *s == '#';
}

/* A name: 1..255 bytes, no control characters or spaces. */
static const char *name_problem(const char *s, const char *e)
{
	if (s == e)
		return "empty";
	if (e - s > NAME_MAX_LEN)
		return "longer than 255 bytes";
	for (const char *p = s; p < e; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return "contains a space or control character";
	return NULL;
}

/* ---- adapter lists ---- */

void bn_names_free(char **names, int n)
{
	if (!names)
		return;
	for (int i = 0; i < n; i++)
		loom_free(names[i]);
	loom_free(names);
}

static int push_name(char ***names, int *n, int *cap, const char *s, size_t len)
{
	if (*n == *cap) {
		int nc = *cap ? *cap * 2 : 16;
		char **nn = loom_realloc(*names, (size_t)nc * sizeof *nn);
		if (!nn)
			return -1;
		*names = nn;
		*cap = nc;
	}
	char *c = loom_strndup(s, len);
	if (!c)
		return -1;
	(*names)[(*n)++] = c;
	return 0;
}

loom_err bn_names_parse(const char *text, size_t len, const char *name, char ***names, int *n)
{
	line_iter it = { text, text + len, 0 };
	const char *s, *e, *why;
	char **v = NULL;
	int cnt = 0, cap = 0;
	loom_err rc = LOOM_OK;
	*names = NULL;
	*n = 0;
	while (next_line(&it, &s, &e)) {
		if (skip_line(s, e))
			continue;
		if ((why = name_problem(s, e))) {
			rc = loom_fail(LOOM_EFORMAT, "%s:%d: adapter name %s", name, it.lineno, why);
			goto out;
		}
		if (cnt >= 1000000) {
			rc = loom_fail(LOOM_ERANGE, "%s:%d: more than 1000000 adapter names", name,
				       it.lineno);
			goto out;
		}
		if (push_name(&v, &cnt, &cap, s, (size_t)(e - s))) {
			rc = loom_fail(LOOM_ENOMEM, "%s: no memory for the adapter names", name);
			goto out;
		}
	}
	if (cnt == 0) {
		rc = loom_fail(LOOM_EFORMAT, "%s: no adapter names (one name a line expected)", name);
		goto out;
	}
	*names = v;
	*n = cnt;
	v = NULL;
out:
	bn_names_free(v, cnt);
	return rc;
}

loom_err bn_names_load(const char *path, char ***names, int *n)
{
	char *text;
	size_t len;
	loom_err rc = bn_read_file(path, &text, &len);
	*names = NULL;
	*n = 0;
	if (rc)
		return rc;
	rc = bn_names_parse(text, len, path, names, n);
	loom_free(text);
	return rc;
}

/* ---- traces ---- */

typedef struct intern {
	int *slots;  /* (cap) index into names, -1 empty */
	int cap;
} intern;

static uint64_t hash_bytes(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return h;
}

/* Index of name [s, s+len) in t->names, adding it when new; -1 on ENOMEM. */
static int intern_name(intern *in, bn_trace *t, int *names_cap, const char *s, size_t len)
{
	if ((t->n_names + 1) * 2 > in->cap) {
		int nc = in->cap ? in->cap * 2 : 64;
		int *ns = loom_malloc((size_t)nc * sizeof *ns);
		if (!ns)
			return -1;
		for (int i = 0; i < nc; i++)
			ns[i] = -1;
		for (int k = 0; k < t->n_names; k++) {
			uint64_t h = hash_bytes(t->names[k], strlen(t->names[k]));
			int j = (int)(h & (uint64_t)(nc - 1));
			while (ns[j] >= 0)
				j = (j + 1) & (nc - 1);
			ns[j] = k;
		}
		loom_free(in->slots);
		in->slots = ns;
		in->cap = nc;
	}
	int j = (int)(hash_bytes(s, len) & (uint64_t)(in->cap - 1));
	while (in->slots[j] >= 0) {
		const char *nm = t->names[in->slots[j]];
		if (strlen(nm) == len && !memcmp(nm, s, len))
			return in->slots[j];
		j = (j + 1) & (in->cap - 1);
	}
	if (push_name(&t->names, &t->n_names, names_cap, s, len))
		return -1;
	in->slots[j] = t->n_names - 1;
	return t->n_names - 1;
}

static int parse_ts(const char *s, const char *e, double *out)
{
	char tmp[64], *end;
	size_t n = (size_t)(e - s);
	if (n == 0 || n >= sizeof tmp)
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	errno = 0;
	double v = strtod(tmp, &end);
	if (*end || errno || !isfinite(v) || v < 0)
		return -1;
	*out = v;
	return 0;
}

static int parse_count(const char *s, const char *e, int *out)
{
	char tmp[32], *end;
	size_t n = (size_t)(e - s);
	if (n == 0 || n >= sizeof tmp)
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	errno = 0;
	long v = strtol(tmp, &end, 10);
	if (*end || errno || v < 1 || v > 1000000)
		return -1;
	*out = (int)v;
	return 0;
}

typedef struct keyed_row {
	bn_trace_row r;
	size_t idx; /* line order, so that equal timestamps keep it (stable sort) */
} keyed_row;

static int cmp_keyed(const void *a, const void *b)
{
	const keyed_row *x = a, *y = b;
	if (x->r.t != y->r.t)
		return x->r.t < y->r.t ? -1 : 1;
	return (x->idx > y->idx) - (x->idx < y->idx);
}

void bn_trace_destroy(bn_trace *t)
{
	if (!t)
		return;
	loom_free(t->rows);
	bn_names_free(t->names, t->n_names);
	loom_free(t);
}

/* Splits [s, e) at commas into f/fe (trimmed); returns the field count. */
static int split_csv(const char *s, const char *e, const char **f, const char **fe, int max)
{
	int n = 0;
	const char *p = s;
	for (;;) {
		const char *c = memchr(p, ',', (size_t)(e - p));
		const char *q = c ? c : e;
		if (n < max) {
			const char *a = p, *b = q;
			while (a < b && (*a == ' ' || *a == '\t'))
				a++;
			while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
				b--;
			f[n] = a;
			fe[n] = b;
		}
		n++;
		if (!c)
			return n;
		p = c + 1;
	}
}

loom_err bn_trace_parse(const char *text, size_t len, const char *name, bn_trace **out)
{
	line_iter it = { text, text + len, 0 };
	const char *s, *e, *f[4], *fe[4], *why;
	keyed_row *rows = NULL;
	size_t n = 0, cap = 0;
	int names_cap = 0, seen_data = 0;
	intern in = { NULL, 0 };
	loom_err rc = LOOM_OK;
	bn_trace *t = loom_calloc(1, sizeof *t);
	*out = NULL;
	if (!t)
		return loom_fail(LOOM_ENOMEM, "%s: no memory for the trace", name);
	while (next_line(&it, &s, &e)) {
		if (skip_line(s, e))
			continue;
		int nf = split_csv(s, e, f, fe, 4);
		if (!seen_data && nf >= 1 && fe[0] - f[0] == 11 && !memcmp(f[0], "timestamp_s", 11)) {
			seen_data = 1;
			if (nf != 4 || fe[1] - f[1] != 7 || memcmp(f[1], "adapter", 7) ||
			    fe[2] - f[2] != 13 || memcmp(f[2], "prompt_tokens", 13) ||
			    fe[3] - f[3] != 13 || memcmp(f[3], "output_tokens", 13)) {
				rc = loom_fail(LOOM_EFORMAT, "%s:%d: header must be '%s'", name,
					       it.lineno, TRACE_HEADER);
				goto out;
			}
			continue;
		}
		seen_data = 1;
		if (nf != 4) {
			rc = loom_fail(LOOM_EFORMAT, "%s:%d: expected 4 fields (%s), got %d", name,
				       it.lineno, TRACE_HEADER, nf);
			goto out;
		}
		keyed_row kr = { { 0, -1, 0, 0 }, n };
		if (parse_ts(f[0], fe[0], &kr.r.t)) {
			rc = loom_fail(LOOM_EFORMAT,
				       "%s:%d: timestamp_s: expected a number of seconds >= 0, got '%.*s'",
				       name, it.lineno, (int)(fe[0] - f[0]), f[0]);
			goto out;
		}
		if (f[1] != fe[1]) {
			if ((why = name_problem(f[1], fe[1]))) {
				rc = loom_fail(LOOM_EFORMAT, "%s:%d: adapter: name %s", name, it.lineno,
					       why);
				goto out;
			}
			kr.r.adapter = intern_name(&in, t, &names_cap, f[1], (size_t)(fe[1] - f[1]));
			if (kr.r.adapter < 0) {
				rc = loom_fail(LOOM_ENOMEM, "%s: no memory for adapter names", name);
				goto out;
			}
		}
		if (parse_count(f[2], fe[2], &kr.r.prompt_tokens)) {
			rc = loom_fail(LOOM_EFORMAT,
				       "%s:%d: prompt_tokens: expected an integer in 1..1000000, got '%.*s'",
				       name, it.lineno, (int)(fe[2] - f[2]), f[2]);
			goto out;
		}
		if (parse_count(f[3], fe[3], &kr.r.output_tokens)) {
			rc = loom_fail(LOOM_EFORMAT,
				       "%s:%d: output_tokens: expected an integer in 1..1000000, got '%.*s'",
				       name, it.lineno, (int)(fe[3] - f[3]), f[3]);
			goto out;
		}
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 1024;
			keyed_row *nr = loom_realloc(rows, nc * sizeof *nr);
			if (!nr) {
				rc = loom_fail(LOOM_ENOMEM, "%s: no memory for %zu rows", name, nc);
				goto out;
			}
			rows = nr;
			cap = nc;
		}
		rows[n++] = kr;
	}
	if (n == 0) {
		rc = loom_fail(LOOM_EFORMAT, "%s: no requests in the trace (expected lines '%s')",
			       name, TRACE_HEADER);
		goto out;
	}
	qsort(rows, n, sizeof *rows, cmp_keyed);
	t->rows = loom_malloc(n * sizeof *t->rows);
	if (!t->rows) {
		rc = loom_fail(LOOM_ENOMEM, "%s: no memory for %zu rows", name, n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		t->rows[i] = rows[i].r;
		t->rows[i].t -= rows[0].r.t;
	}
	t->n = n;
	*out = t;
	t = NULL;
out:
	loom_free(rows);
	loom_free(in.slots);
	bn_trace_destroy(t);
	return rc;
}

loom_err bn_trace_load(const char *path, bn_trace **out)
{
	char *text;
	size_t len;
	loom_err rc = bn_read_file(path, &text, &len);
	*out = NULL;
	if (rc)
		return rc;
	rc = bn_trace_parse(text, len, path, out);
	loom_free(text);
	return rc;
}
