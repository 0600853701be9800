/*
 * tests/gateway/test_multipart.c — the streaming multipart/form-data parser:
 * boundary extraction from Content-Type; a body with files, fields, a
 * preamble, an epilogue and data full of near-misses of the delimiter
 * ("\r\n--", "\r\r\n--B", the boundary without its CRLF, a delimiter cut one
 * byte short) parses to the same parts whether fed whole, byte by byte, in
 * every fixed piece size or in random pieces; curl-shaped bodies (no
 * preamble, CRLF endings); every malformed body gives a clear error; a
 * callback's error stops the parse and keeps its message.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "gateway/gw_multipart.h"

#define MAXP 8

typedef struct rec {
	int n;
	char name[MAXP][64];
	char file[MAXP][64];
	char ctype[MAXP][64];
	char data[MAXP][4096];
	size_t len[MAXP];
	int ended;
	int fail_at_data;   /* part index whose data makes part_data fail, -1 = none */
} rec;

static loom_err on_begin(void *ctx, const char *name, const char *filename, const char *ctype)
{
	rec *r = ctx;
	assert_true(r->n < MAXP);
	assert_int_equal(r->ended, r->n); /* the previous part ended first */
	snprintf(r->name[r->n], sizeof r->name[0], "%s", name);
	snprintf(r->file[r->n], sizeof r->file[0], "%s", filename);
	snprintf(r->ctype[r->n], sizeof r->ctype[0], "%s", ctype);
	r->len[r->n] = 0;
	r->n++;
	return LOOM_OK;
}

static loom_err on_data(void *ctx, const void *d, size_t n)
{
	rec *r = ctx;
	int k = r->n - 1;
	assert_true(k >= 0 && n > 0);
	if (k == r->fail_at_data)
		return loom_fail(LOOM_EIO, "disk full (test)");
	assert_true(r->len[k] + n <= sizeof r->data[0]);
	memcpy(r->data[k] + r->len[k], d, n);
	r->len[k] += n;
	return LOOM_OK;
}

static loom_err on_end(void *ctx)
{
	rec *r = ctx;
	r->ended++;
	assert_int_equal(r->ended, r->n);
	return LOOM_OK;
}

/* Parses body fed in pieces: piece 0 = random sizes (seeded), else that size. */
static loom_err parse(const char *boundary, const char *body, size_t len, size_t piece,
		      unsigned seed, rec *r)
{
	gw_mp_cbs cbs = {on_begin, on_data, on_end, r};
	gw_mp *p;
	memset(r, 0, sizeof *r);
	r->fail_at_data = -1;
	assert_int_equal(gw_mp_create(boundary, &cbs, &p), LOOM_OK);
	loom_err rc = LOOM_OK;
	size_t off = 0;
	srand(seed);
	while (!rc && off < len) {
		size_t n = piece ? piece : 1 + (size_t)rand() % 23;
		if (n > len - off)
			n = len - off;
		rc = gw_mp_feed(p, body + off, n);
		off += n;
	}
	if (!rc)
		rc = gw_mp_finish(p);
	gw_mp_destroy(p);
	return rc;
}

static void test_boundary(void **state)
{
	(void)state;
	static const struct {
		const char *ct;
		const char *want; /* NULL = rejected */
	} cases[] = {
		{"multipart/form-data; boundary=abc", "abc"},
		{"multipart/form-data;boundary=abc", "abc"},
		{"Multipart/Form-Data; BOUNDARY=x-y_z", "x-y_z"},
		{"multipart/form-data; boundary=\"a b;c\"", "a b;c"},
		{"multipart/form-data; charset=utf-8; boundary=q1; x=y", "q1"},
		{"multipart/form-data; boundary=------------------------d74496d66958873e",
		 "------------------------d74496d66958873e"},
		{"multipart/form-data", NULL},
		{"multipart/form-data; boundary=", NULL},
		{"multipart/form-data; boundary=\"abc", NULL},
		{"multipart/mixed; boundary=abc", NULL},
		{"application/json", NULL},
		{"multipart/form-datax; boundary=abc", NULL},
		{"multipart/form-data; boundary="
		 "12345678901234567890123456789012345678901234567890123456789012345678901", NULL},
		{NULL, NULL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char b[GW_MP_BOUNDARY_MAX + 1];
		loom_err rc = gw_mp_boundary(cases[i].ct, b);
		if (cases[i].want ? rc != LOOM_OK || strcmp(b, cases[i].want) : rc != LOOM_EINVAL)
			fail_msg("'%s': rc %d, boundary '%s' (%s)", cases[i].ct ? cases[i].ct : "(null)",
				 rc, b, loom_errmsg());
	}
}

/* A body whose file data is full of near-misses of "\r\n--XyZ". */
static const char tricky_data[] =
	"line\r\n--Xy-not-quite... \r\n--Xy\r\n--X\r\r\n--XyY\r\n-\r\n--x--XyZ"
	"\0binary\xff\r\n\r\n-";
#define TRICKY_FILE_LEN (sizeof tricky_data - 1)

static size_t build_tricky(char *out, size_t cap)
{
	static const char head[] =
		"This is a preamble, ignored. --XyZ is not a delimiter here\r\n"
		"--XyZ\r\n"
		"Content-Disposition: form-data; name=\"adapter_model\"; "
		"filename=\"adapter_model.safetensors\"\r\n"
		"Content-Type: application/octet-stream\r\n"
		"\r\n";
	static const char rest[] =
		"\r\n--XyZ  \t\r\n" /* transport padding after a delimiter */
		"content-disposition: form-data; name=base_model\r\n"
		"\r\n"
		"stories\r\n"
		"--XyZ\r\n"
		"Content-Disposition: form-data; name=\"empty\"\r\n"
		"\r\n"
		"\r\n"
		"--XyZ\r\n"
		"Content-Disposition: form-data; name=\"q\\\"uoted\"\r\n"
		"\r\n"
		"--XyZ is data when it does not follow CRLF\r\n"
		"--XyZ--\r\n"
		"epilogue, ignored\r\n--XyZ\r\n";
	size_t n = 0;
	memcpy(out + n, head, sizeof head - 1);
	n += sizeof head - 1;
	memcpy(out + n, tricky_data, TRICKY_FILE_LEN);
	n += TRICKY_FILE_LEN;
	memcpy(out + n, rest, sizeof rest - 1);
	n += sizeof rest - 1;
	assert_true(n < cap);
	return n;
}

static void check_tricky(const rec *r)
{
	assert_int_equal(r->n, 4);
	assert_int_equal(r->ended, 4);
	assert_string_equal(r->name[0], "adapter_model");
	assert_string_equal(r->file[0], "adapter_model.safetensors");
	assert_string_equal(r->ctype[0], "application/octet-stream");
	assert_int_equal(r->len[0], TRICKY_FILE_LEN);
	assert_memory_equal(r->data[0], tricky_data, TRICKY_FILE_LEN);
	assert_string_equal(r->name[1], "base_model");
	assert_string_equal(r->file[1], "");
	assert_int_equal(r->len[1], 7);
	assert_memory_equal(r->data[1], "stories", 7);
	assert_string_equal(r->name[2], "empty");
	assert_int_equal(r->len[2], 0);
	assert_string_equal(r->name[3], "q\"uoted");
	const char *d = "--XyZ is data when it does not follow CRLF";
	assert_int_equal(r->len[3], strlen(d));
	assert_memory_equal(r->data[3], d, strlen(d));
}

static void test_pieces(void **state)
{
	(void)state;
	static char body[4096];
	size_t len = build_tricky(body, sizeof body);
	rec r;
	assert_int_equal(parse("XyZ", body, len, len, 0, &r), LOOM_OK);
	check_tricky(&r);
	for (size_t piece = 1; piece <= 40; piece++) {
		loom_err rc = parse("XyZ", body, len, piece, 0, &r);
		if (rc)
			fail_msg("pieces of %zu: %s", piece, loom_errmsg());
		check_tricky(&r);
	}
	for (unsigned seed = 1; seed <= 50; seed++) {
		assert_int_equal(parse("XyZ", body, len, 0, seed, &r), LOOM_OK);
		check_tricky(&r);
	}
}

/* The shape curl -F writes: the body starts with the delimiter. */
static void test_curl_shape(void **state)
{
	(void)state;
	static const char body[] =
		"--------------------------d74496d66958873e\r\n"
		"Content-Disposition: form-data; name=\"adapter_config\"; "
		"filename=\"adapter_config.json\"\r\n"
		"Content-Type: application/json\r\n"
		"\r\n"
		"{\"r\": 8}\n\r\n"
		"--------------------------d74496d66958873e\r\n"
		"Content-Disposition: form-data; name=\"base_model\"\r\n"
		"\r\n"
		"stories\r\n"
		"--------------------------d74496d66958873e--\r\n";
	rec r;
	for (size_t piece = 1; piece <= sizeof body; piece += 7) {
		assert_int_equal(parse("------------------------d74496d66958873e", body,
				       sizeof body - 1, piece, 0, &r), LOOM_OK);
		assert_int_equal(r.n, 2);
		assert_int_equal(r.len[0], 9);
		assert_memory_equal(r.data[0], "{\"r\": 8}\n", 9);
		assert_string_equal(r.ctype[0], "application/json");
		assert_memory_equal(r.data[1], "stories", 7);
	}
	/* no closing CRLF after "--" is fine too */
	static const char short_end[] = "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n"
					"--b--";
	assert_int_equal(parse("b", short_end, sizeof short_end - 1, 3, 0, &r), LOOM_OK);
	assert_int_equal(r.n, 1);
	/* a body with no parts at all */
	assert_int_equal(parse("b", "--b--\r\n", 7, 1, 0, &r), LOOM_OK);
	assert_int_equal(r.n, 0);
}

static void test_errors(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		const char *body;
		const char *want;
	} cases[] = {
		{"empty body", "", "no boundary"},
		{"no delimiter", "just text\r\n", "no boundary"},
		{"truncated data", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nabc",
		 "before the closing boundary"},
		{"truncated at a delimiter", "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n"
					     "abc\r\n--b", "before the closing boundary"},
		{"truncated headers", "--b\r\nContent-Disposition: form-da", "before the closing"},
		{"junk after a delimiter", "--bX\r\n", "bad bytes after a boundary"},
		{"one dash", "--b-x", "bad bytes after a boundary"},
		{"CR without LF", "--b\rx", "bad bytes after a boundary"},
		{"no headers", "--b\r\n\r\ndata\r\n--b--", "no headers"},
		{"header without colon", "--b\r\nContent-Disposition form-data\r\n\r\n\r\n--b--",
		 "no ':'"},
		{"no disposition", "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--",
		 "no Content-Disposition"},
		{"not form-data", "--b\r\nContent-Disposition: attachment; name=\"x\"\r\n\r\nx\r\n--b--",
		 "must be form-data"},
		{"no name", "--b\r\nContent-Disposition: form-data; filename=\"f\"\r\n\r\nx\r\n--b--",
		 "has no name"},
		{"empty name", "--b\r\nContent-Disposition: form-data; name=\"\"\r\n\r\nx\r\n--b--",
		 "has no name"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		for (size_t piece = 1; piece <= 5; piece += 4) {
			rec r;
			loom_err rc = parse("b", cases[i].body, strlen(cases[i].body), piece, 0, &r);
			if (rc != LOOM_EFORMAT || !strstr(loom_errmsg(), cases[i].want))
				fail_msg("%s (pieces of %zu): rc %d, '%s'", cases[i].name, piece, rc,
					 loom_errmsg());
		}
	}
	/* headers over the cap */
	size_t n = GW_MP_HEADER_MAX + 200;
	char *big = loom_malloc(n + 64);
	assert_non_null(big);
	strcpy(big, "--b\r\nX-Long: ");
	size_t at = strlen(big);
	memset(big + at, 'a', n - at);
	rec r;
	assert_int_equal(parse("b", big, n, 1000, 0, &r), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "too long"));
	loom_free(big);
	/* after an error, feeding again fails the same way */
	gw_mp_cbs cbs = {on_begin, on_data, on_end, &r};
	gw_mp *p;
	memset(&r, 0, sizeof r);
	r.fail_at_data = -1;
	assert_int_equal(gw_mp_create("b", &cbs, &p), LOOM_OK);
	assert_int_equal(gw_mp_feed(p, "--bX", 4), LOOM_EFORMAT);
	assert_int_equal(gw_mp_feed(p, "\r\n", 2), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "bad bytes"));
	assert_int_equal(gw_mp_finish(p), LOOM_EFORMAT);
	gw_mp_destroy(p);
	/* bad boundaries at creation */
	assert_int_equal(gw_mp_create("", &cbs, &p), LOOM_EINVAL);
	assert_int_equal(gw_mp_create("123456789012345678901234567890123456789012345678901234567890"
				      "12345678901", &cbs, &p), LOOM_EINVAL);
}

static void test_callback_error(void **state)
{
	(void)state;
	static const char body[] = "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nxyz\r\n"
				   "--b\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\n123\r\n"
				   "--b--\r\n";
	gw_mp_cbs cbs;
	rec r;
	memset(&r, 0, sizeof r);
	r.fail_at_data = 1;
	cbs = (gw_mp_cbs){on_begin, on_data, on_end, &r};
	gw_mp *p;
	assert_int_equal(gw_mp_create("b", &cbs, &p), LOOM_OK);
	loom_err rc = gw_mp_feed(p, body, sizeof body - 1);
	assert_int_equal(rc, LOOM_EIO);
	assert_string_equal(loom_errmsg(), "disk full (test)");
	assert_int_equal(r.n, 2);
	assert_int_equal(gw_mp_finish(p), LOOM_EIO);
	gw_mp_destroy(p);
	/* NULL callbacks are allowed: the parse only checks the syntax */
	gw_mp_cbs none = {0};
	assert_int_equal(gw_mp_create("b", &none, &p), LOOM_OK);
	assert_int_equal(gw_mp_feed(p, body, sizeof body - 1), LOOM_OK);
	assert_int_equal(gw_mp_finish(p), LOOM_OK);
	gw_mp_destroy(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_boundary),
		cmocka_unit_test(test_pieces),
		cmocka_unit_test(test_curl_shape),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_callback_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
