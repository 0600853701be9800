/*
 * tests/fuzz/fuzz_multipart.c — the streaming multipart/form-data parser
 * (gateway/gw_multipart.h) that adapter uploads go through: the boundary
 * from a Content-Type, then the body fed in pieces.
 *
 * Input: the Content-Type value up to the first '\n', then the body.
 * Invariant: a streaming parser must not care how the body is cut. The body
 * is fed whole, one byte at a time, and in uneven pieces; the three runs
 * must give the same callbacks (part names, file names, content types, the
 * data of each part, part ends) and the same result. A part named "fail"
 * makes part_begin return an error, to walk the callback-error path.
 */
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/gw_multipart.h"
#include "tests/fuzz/fuzz.h"

/* What the callbacks saw, as bytes: B <name> <filename> <type>, D <data...>, E. */
typedef struct fuzz_mp_log {
	unsigned char *b;
	size_t n, cap;
	int in_data;
	int parts_open;
} fuzz_mp_log;

static void fuzz_mp_put(fuzz_mp_log *l, const void *p, size_t n)
{
	if (l->n + n > l->cap) {
		size_t cap = (l->n + n) * 2 + 64;
		unsigned char *b = realloc(l->b, cap);
		if (!b)
			abort();
		l->b = b;
		l->cap = cap;
	}
	memcpy(l->b + l->n, p, n);
	l->n += n;
}

static void fuzz_mp_put_str(fuzz_mp_log *l, const char *s)
{
	size_t n = s ? strlen(s) : (size_t)-1;
	fuzz_mp_put(l, &n, sizeof n);
	if (s)
		fuzz_mp_put(l, s, n);
}

static loom_err fuzz_mp_begin(void *ctx, const char *name, const char *filename,
			      const char *content_type)
{
	fuzz_mp_log *l = ctx;
	FUZZ_CHECK(name != NULL, "part without a name");
	FUZZ_CHECK(!l->parts_open, "part_begin inside a part");
	l->parts_open = 1;
	l->in_data = 0;
	fuzz_mp_put(l, "B", 1);
	fuzz_mp_put_str(l, name);
	fuzz_mp_put_str(l, filename);
	fuzz_mp_put_str(l, content_type);
	if (strcmp(name, "fail") == 0)
		return loom_fail(LOOM_EINVAL, "part \"fail\" refused by the callback");
	return LOOM_OK;
}

static loom_err fuzz_mp_data(void *ctx, const void *data, size_t n)
{
	fuzz_mp_log *l = ctx;
	FUZZ_CHECK(l->parts_open, "part_data outside a part");
	if (!l->in_data) {
		fuzz_mp_put(l, "D", 1);
		l->in_data = 1;
	}
	fuzz_mp_put(l, data, n);
	return LOOM_OK;
}

static loom_err fuzz_mp_end(void *ctx)
{
	fuzz_mp_log *l = ctx;
	FUZZ_CHECK(l->parts_open, "part_end outside a part");
	l->parts_open = 0;
	l->in_data = 0;
	fuzz_mp_put(l, "E", 1);
	return LOOM_OK;
}

/* Feeds body cut by mode (0 whole, 1 bytewise, 2 uneven); returns the result. */
static loom_err fuzz_mp_run(const char *boundary, const uint8_t *body, size_t n, int mode,
			    fuzz_mp_log *l)
{
	gw_mp_cbs cbs = { fuzz_mp_begin, fuzz_mp_data, fuzz_mp_end, l };
	gw_mp *p;
	loom_err rc = gw_mp_create(boundary, &cbs, &p);
	uint32_t x = (uint32_t)n * 2654435761u + 1;
	if (rc)
		return rc;
	for (size_t at = 0; at < n && !rc;) {
		size_t k = mode == 0 ? n : mode == 1 ? 1 : 1 + (x >> 24) % 97;
		x = x * 1664525u + 1013904223u;
		if (k > n - at)
			k = n - at;
		rc = gw_mp_feed(p, body + at, k);
		at += k;
	}
	if (!rc) {
		rc = gw_mp_finish(p);
		FUZZ_CHECK(rc || !l->parts_open, "finished OK inside a part");
	} else {
		FUZZ_CHECK(gw_mp_feed(p, "x", 1) == rc,
			   "feed after an error does not fail the same way");
	}
	gw_mp_destroy(p);
	return rc;
}

int fuzz_multipart(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t ct_len = nl ? (size_t)(nl - data) : size;
	char ct[512], boundary[GW_MP_BOUNDARY_MAX + 1];
	fuzz_mp_log logs[3];
	loom_err rc[3];

	if (ct_len >= sizeof ct)
		return 0;
	memcpy(ct, data, ct_len);
	ct[ct_len] = '\0';
	if (gw_mp_boundary(ct, boundary) != LOOM_OK)
		return 0;
	FUZZ_CHECK(strlen(boundary) >= 1 && strlen(boundary) <= GW_MP_BOUNDARY_MAX,
		   "boundary of %zu bytes", strlen(boundary));
	const uint8_t *body = nl ? nl + 1 : data + size;
	size_t n = (size_t)(data + size - body);

	memset(logs, 0, sizeof logs);
	for (int m = 0; m < 3; m++)
		rc[m] = fuzz_mp_run(boundary, body, n, m, &logs[m]);
	if (rc[0] == LOOM_OK)
		fuzz_accepted = 1;
	for (int m = 1; m < 3; m++) {
		if (rc[0] == LOOM_ENOMEM || rc[m] == LOOM_ENOMEM)
			continue;
		FUZZ_CHECK(rc[m] == rc[0], "fed %s the result is %d, fed whole %d",
			   m == 1 ? "bytewise" : "in pieces", rc[m], rc[0]);
		FUZZ_CHECK(
			logs[m].n == logs[0].n && (!logs[0].n || memcmp(logs[m].b, logs[0].b, logs[0].n) == 0),
			"fed %s the callbacks differ from fed whole (%zu vs %zu bytes of events)",
			m == 1 ? "bytewise" : "in pieces", logs[m].n, logs[0].n);
	}
	for (int m = 0; m < 3; m++)
		free(logs[m].b);
	return 0;
}

void fuzz_multipart_seeds(fuzz_seeds *s)
{
	static const char upload[] =
		"multipart/form-data; boundary=BnD\n"
		"--BnD\r\nContent-Disposition: form-data; name=\"base_model\"\r\n\r\nstories\r\n"
		"--BnD\r\nContent-Disposition: form-data; name=\"adapter_config\"; "
		"filename=\"adapter_config.json\"\r\nContent-Type: application/json\r\n\r\n"
		"{\"r\": 4}\r\n--BnD\r\nContent-Disposition: form-data; name=\"adapter_model\"; "
		"filename=\"adapter_model.safetensors\"\r\n"
		"Content-Type: application/octet-stream\r\n\r\n\x08\0\0\0\0\0\0\0{}      \r\n"
		"--BnD--\r\n";

	fuzz_seed_add(s, upload, sizeof upload - 1); /* holds NUL bytes */
	fuzz_seed_str(s, "multipart/form-data; boundary=\"a b:c\"\n"
			 "preamble\r\n--a b:c  \r\ncontent-disposition: FORM-DATA; name=x\r\n\r\n"
			 "\r\n--a b:\r\n--a b:c\r\r\n--a b:c\r\nContent-Disposition: form-data; "
			 "name=\"fail\"\r\n\r\nz\r\n--a b:c--epilogue");
	fuzz_seed_str(s,
		      "Multipart/Form-Data;charset=utf-8;boundary=----WebKitFormBoundary7MA4YWxk\n"
		      "------WebKitFormBoundary7MA4YWxk\r\nContent-Disposition: form-data; "
		      "name=\"f\"; "
		      "filename=\"a\\\"b.txt\"\r\n\r\n--\r\n-\r\n------WebKitFormBoundary7MA4YWx"
		      "\r\n------WebKitFormBoundary7MA4YWxk--");
	fuzz_seed_str(
		s,
		"multipart/form-data; boundary=x\n--x\r\nContent-Disposition: form-data; name=\"a\""
		"\r\n\r\nno closing boundary");
}

const fuzz_word fuzz_multipart_dict[] = {
	FUZZ_W("\r\n"), FUZZ_W("--"), FUZZ_W("\r\n--BnD"), FUZZ_W("\r\n\r\n"),
	FUZZ_W("Content-Disposition: form-data; name=\""), FUZZ_W("; filename=\""),
	FUZZ_W("Content-Type: "), FUZZ_W("boundary="), FUZZ_W("multipart/form-data"),
	FUZZ_W("name=\"fail\""), FUZZ_W("\""), FUZZ_W(";"), FUZZ_W("\\\""), FUZZ_W("--\r\n"),
	{ NULL, 0 },
};
