/* tests/common/test_safetensors.c — safetensors reader, writer and shard sets. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/safetensors.h"
#include "tests/support/harness.h"

static char *tmp; /* this run's temp dir */

static const char *tpath(const char *name)
{
	static char buf[4][1024];
	static int k;
	char *b = buf[k++ % 4];
	snprintf(b, sizeof buf[0], "%s/%s", tmp, name);
	return b;
}

/* Writes u64 hlen (or hlen_override when non-zero), the header text, then
 * data_len zero bytes. */
static void write_raw(const char *path, const char *header, uint64_t hlen_override,
		      size_t data_len)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	uint64_t hlen = hlen_override ? hlen_override : strlen(header);
	unsigned char le[8];
	for (int i = 0; i < 8; i++)
		le[i] = (unsigned char)(hlen >> (8 * i));
	assert_int_equal(fwrite(le, 1, 8, fp), 8);
	fputs(header, fp);
	for (size_t i = 0; i < data_len; i++)
		fputc(0, fp);
	fclose(fp);
}

/* Opens path, expects rc and a message naming the file and containing word. */
static void expect_fail(const char *path, loom_err want, const char *word)
{
	loom_st_file *f = (loom_st_file *)0x1;
	loom_err rc = loom_st_open(path, &f);
	if (rc != want || !strstr(loom_errmsg(), path) || (word && !strstr(loom_errmsg(), word)))
		fail_msg("%s: got %s \"%s\", wanted %s mentioning \"%s\"", path, loom_strerror(rc),
			 loom_errmsg(), loom_strerror(want), word ? word : "");
	assert_null(f);
}

static void round_trip(void **state)
{
	(void)state;
	float a[6] = { 1, -2, 3.5f, 0, 1e-3f, -7 };
	uint16_t b[4] = { 0x3c00, 0xc100, 0x7bff, 0x0001 };
	int64_t c = -42;
	uint8_t d[3] = { 1, 0, 1 };
	double e[2] = { 3.25, -1e300 };
	loom_tensor ts[] = {
		{ .name = "a.weight", .dtype = LOOM_DT_F32, .ndim = 2, .shape = { 2, 3 }, .data = a,
		  .nbytes = sizeof a },
		{ .name = "b", .dtype = LOOM_DT_F16, .ndim = 3, .shape = { 1, 2, 2 }, .data = b,
		  .nbytes = sizeof b },
		{ .name = "scalar", .dtype = LOOM_DT_I64, .ndim = 0, .data = &c, .nbytes = 8 },
		{ .name = "empty", .dtype = LOOM_DT_BF16, .ndim = 2, .shape = { 0, 5 }, .data = NULL,
		  .nbytes = 0 },
		{ .name = "mask", .dtype = LOOM_DT_BOOL, .ndim = 1, .shape = { 3 }, .data = d,
		  .nbytes = 3 },
		{ .name = "dbl", .dtype = LOOM_DT_F64, .ndim = 1, .shape = { 2 }, .data = e,
		  .nbytes = 16 },
	};
	const size_t n = sizeof ts / sizeof *ts;
	const char *meta[] = { "format", "pt", "note", "héllo", NULL };
	const char *path = tpath("rt.safetensors");
	assert_int_equal(loom_st_write(path, ts, n, meta), LOOM_OK);

	/* header length is a multiple of 8 */
	FILE *fp = fopen(path, "rb");
	unsigned char le[8];
	assert_int_equal(fread(le, 1, 8, fp), 8);
	fclose(fp);
	assert_int_equal(le[0] % 8, 0);

	loom_st_file *f;
	assert_int_equal(loom_st_open(path, &f), LOOM_OK);
	assert_int_equal(loom_st_count(f), n);
	assert_string_equal(loom_st_path(f), path);
	assert_string_equal(loom_st_meta(f, "format"), "pt");
	assert_string_equal(loom_st_meta(f, "note"), "héllo");
	assert_null(loom_st_meta(f, "nope"));
	for (size_t i = 0; i < n; i++) {
		const loom_tensor *t = loom_st_find(f, ts[i].name);
		assert_non_null(t);
		assert_string_equal(t->name, ts[i].name);
		assert_int_equal(t->dtype, ts[i].dtype);
		assert_int_equal(t->ndim, ts[i].ndim);
		for (int k = 0; k < t->ndim; k++)
			assert_int_equal(t->shape[k], ts[i].shape[k]);
		assert_int_equal(t->nbytes, ts[i].nbytes);
		if (t->nbytes)
			assert_memory_equal(t->data, ts[i].data, t->nbytes);
	}
	assert_int_equal(loom_tensor_numel(loom_st_find(f, "scalar")), 1);
	assert_int_equal(loom_tensor_numel(loom_st_find(f, "empty")), 0);
	assert_null(loom_st_find(f, "a"));
	assert_null(loom_st_find(f, "a.weightx"));
	/* loom_st_at walks data order: data pointers never decrease */
	for (size_t i = 1; i < n; i++)
		assert_true((const char *)loom_st_at(f, i)->data >=
			    (const char *)loom_st_at(f, i - 1)->data);
	assert_null(loom_st_at(f, n));
	loom_st_close(f);

	/* an empty file (no tensors, no metadata) is valid */
	assert_int_equal(loom_st_write(tpath("none.safetensors"), NULL, 0, NULL), LOOM_OK);
	assert_int_equal(loom_st_open(tpath("none.safetensors"), &f), LOOM_OK);
	assert_int_equal(loom_st_count(f), 0);
	assert_null(loom_st_find(f, "x"));
	loom_st_close(f);
}

/* Many tensors: every one found by name, none that is not there. */
static void many_tensors(void **state)
{
	(void)state;
	enum { N = 1200 };
	static loom_tensor ts[N];
	static char names[N][64];
	static float vals[N];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof names[i], "model.layers.%d.self_attn.q_proj.weight", i);
		vals[i] = (float)i;
		ts[i] = (loom_tensor){ .name = names[i], .dtype = LOOM_DT_F32, .ndim = 1,
				       .shape = { 1 }, .data = &vals[i], .nbytes = 4 };
	}
	assert_int_equal(loom_st_write(tpath("many.safetensors"), ts, N, NULL), LOOM_OK);
	loom_st_file *f;
	assert_int_equal(loom_st_open(tpath("many.safetensors"), &f), LOOM_OK);
	for (int i = 0; i < N; i++) {
		const loom_tensor *t = loom_st_find(f, names[i]);
		assert_non_null(t);
		float v;
		memcpy(&v, t->data, 4);
		assert_true(v == (float)i);
	}
	assert_null(loom_st_find(f, "model.layers.1200.self_attn.q_proj.weight"));
	loom_st_close(f);
}

struct fill_ctx {
	int calls;
};

static loom_err fill_fn(void *ctx, size_t i, void *buf)
{
	struct fill_ctx *c = ctx;
	c->calls++;
	if (i == 2)
		return loom_fail(LOOM_EIO, "fill failed on purpose");
	memset(buf, (int)(0x10 + i), 8 * (i + 1));
	return LOOM_OK;
}

static void write_fill(void **state)
{
	(void)state;
	loom_tensor ts[3];
	for (int i = 0; i < 3; i++)
		ts[i] = (loom_tensor){ .name = i == 0 ? "x" : i == 1 ? "y" : "z",
				       .dtype = LOOM_DT_U8, .ndim = 1, .shape = { 8 * (i + 1) },
				       .nbytes = (size_t)(8 * (i + 1)) };
	struct fill_ctx c = { 0 };
	const char *path = tpath("fill.safetensors");
	assert_int_equal(loom_st_write_fill(path, ts, 2, NULL, fill_fn, &c), LOOM_OK);
	assert_int_equal(c.calls, 2);
	loom_st_file *f;
	assert_int_equal(loom_st_open(path, &f), LOOM_OK);
	assert_int_equal(((const uint8_t *)loom_st_find(f, "y")->data)[15], 0x11);
	loom_st_close(f);
	/* a failing fill leaves the old file alone and no temp file behind */
	assert_int_equal(loom_st_write_fill(path, ts, 3, NULL, fill_fn, &c), LOOM_EIO);
	assert_int_equal(loom_st_open(path, &f), LOOM_OK);
	assert_int_equal(loom_st_count(f), 2);
	loom_st_close(f);
	assert_int_equal(lt_sh("ls '%s' | grep -q tmp", tmp), 1);
}

static void write_errors(void **state)
{
	(void)state;
	float v[2] = { 0 };
	loom_tensor dup[2] = {
		{ .name = "w", .dtype = LOOM_DT_F32, .ndim = 1, .shape = { 2 }, .data = v, .nbytes = 8 },
		{ .name = "w", .dtype = LOOM_DT_F32, .ndim = 1, .shape = { 2 }, .data = v, .nbytes = 8 },
	};
	const char *p = tpath("bad_w.safetensors");
	assert_int_equal(loom_st_write(p, dup, 2, NULL), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "duplicate"));
	dup[1].name = "__metadata__";
	assert_int_equal(loom_st_write(p, dup, 2, NULL), LOOM_EINVAL);
	dup[0].nbytes = 4;
	assert_int_equal(loom_st_write(p, dup, 1, NULL), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "\"w\""));
	dup[0].nbytes = 8;
	dup[0].shape[0] = -2;
	assert_int_equal(loom_st_write(p, dup, 1, NULL), LOOM_EINVAL);
	dup[0].shape[0] = 2;
	dup[0].ndim = 9;
	assert_int_equal(loom_st_write(p, dup, 1, NULL), LOOM_EINVAL);
	dup[0].ndim = 1;
	const char *odd[] = { "k", NULL };
	assert_int_equal(loom_st_write(p, dup, 1, odd), LOOM_EINVAL);
	char nodir[1100];
	snprintf(nodir, sizeof nodir, "%s/no/such/dir/x.safetensors", tmp);
	assert_int_equal(loom_st_write(nodir, dup, 1, NULL), LOOM_EIO);
	assert_non_null(strstr(loom_errmsg(), "no/such/dir/x.safetensors"));
	assert_int_equal(access(p, F_OK), -1);
}

/* A malformed file: its header text, data section size, the expected code
 * and a word of the message. */
static const struct bad_case {
	const char *name;
	const char *header;
	size_t data;
	loom_err rc;
	const char *word;
} bad_cases[] = {
	{ "not_json", "{\"a\": {\"dtype\"", 0, LOOM_EFORMAT, "JSON" },
	{ "not_object", "[1, 2]", 0, LOOM_EFORMAT, "object" },
	{ "entry_not_object", "{\"a\": 3}", 0, LOOM_EFORMAT, "\"a\"" },
	{ "no_dtype", "{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, LOOM_EFORMAT,
	  "dtype" },
	{ "no_shape", "{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, LOOM_EFORMAT,
	  "shape" },
	{ "no_offsets", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, LOOM_EFORMAT,
	  "data_offsets" },
	{ "dtype_number", "{\"a\": {\"dtype\": 7, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
	  LOOM_EFORMAT, "dtype" },
	{ "dtype_unknown", "{\"a\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
	  4, LOOM_EFORMAT, "F33" },
	{ "dtype_fp8", "{\"a\": {\"dtype\": \"F8_E4M3\", \"shape\": [1], \"data_offsets\": [0, 1]}}",
	  1, LOOM_EUNSUPPORTED, "F8_E4M3" },
	{ "shape_string", "{\"a\": {\"dtype\": \"F32\", \"shape\": \"1\", \"data_offsets\": [0, 4]}}",
	  4, LOOM_EFORMAT, "shape" },
	{ "shape_float", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1.0], \"data_offsets\": [0, 4]}}",
	  4, LOOM_EFORMAT, "shape" },
	{ "negative_dim",
	  "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1, 2], \"data_offsets\": [0, 4]}}", 4,
	  LOOM_EFORMAT, "negative" },
	{ "nine_dims",
	  "{\"a\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", 1,
	  LOOM_EUNSUPPORTED, "dims" },
	{ "offsets_one", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 4,
	  LOOM_EFORMAT, "data_offsets" },
	{ "offsets_strings",
	  "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [\"0\", \"4\"]}}", 4,
	  LOOM_EFORMAT, "data_offsets" },
	{ "offsets_past_end", "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
	  4, LOOM_EFORMAT, "outside" },
	{ "offsets_reversed",
	  "{\"a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 0]}}", 4, LOOM_EFORMAT,
	  "outside" },
	{ "size_mismatch", "{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}",
	  8, LOOM_EFORMAT, "needs 12" },
	{ "overlap",
	  "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
	  " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
	  12, LOOM_EFORMAT, "overlaps" },
	{ "gap",
	  "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
	  " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}",
	  12, LOOM_EFORMAT, "unused" },
	{ "trailing_data", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
	  9, LOOM_EFORMAT, "cover" },
	{ "duplicate",
	  "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
	  " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
	  8, LOOM_EFORMAT, "duplicate" },
	{ "meta_not_string",
	  "{\"__metadata__\": {\"format\": 1},"
	  " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
	  4, LOOM_EFORMAT, "format" },
	{ "meta_not_object", "{\"__metadata__\": [\"pt\"]}", 0, LOOM_EFORMAT, "__metadata__" },
	{ "huge_shape",
	  "{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296],"
	  " \"data_offsets\": [0, 4]}}",
	  4, LOOM_EFORMAT, "overflow" },
};

static void malformed_headers(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
		const struct bad_case *c = &bad_cases[i];
		char name[96];
		snprintf(name, sizeof name, "bad_%s.safetensors", c->name);
		const char *p = tpath(name);
		write_raw(p, c->header, 0, c->data);
		expect_fail(p, c->rc, c->word);
	}
}

static void malformed_files(void **state)
{
	(void)state;
	const char *p;
	FILE *fp;

	p = tpath("short.safetensors");
	fp = fopen(p, "wb");
	fputs("\x10\0\0", fp);
	fclose(fp);
	expect_fail(p, LOOM_EFORMAT, "shorter");

	p = tpath("empty.safetensors");
	fclose(fopen(p, "wb"));
	expect_fail(p, LOOM_EFORMAT, "shorter");

	p = tpath("hlen_past_end.safetensors");
	write_raw(p, "{}", 4096, 0);
	expect_fail(p, LOOM_EFORMAT, "exceeds");

	p = tpath("hlen_absurd.safetensors");
	write_raw(p, "{}", 1ull << 40, 0);
	expect_fail(p, LOOM_EFORMAT, "absurd");

	expect_fail(tpath("missing.safetensors"), LOOM_ENOTFOUND, "cannot open");
	expect_fail(tmp, LOOM_EIO, "regular");

	/* a good file, then truncated, then with corrupted header bytes */
	float v[16] = { 1 };
	loom_tensor t = { .name = "w", .dtype = LOOM_DT_F32, .ndim = 2, .shape = { 4, 4 },
			  .data = v, .nbytes = sizeof v };
	p = tpath("trunc.safetensors");
	assert_int_equal(loom_st_write(p, &t, 1, NULL), LOOM_OK);
	assert_int_equal(lt_sh("truncate -s -4 '%s'", p), 0);
	expect_fail(p, LOOM_EFORMAT, "outside");
	assert_int_equal(lt_sh("truncate -s 20 '%s'", p), 0);
	expect_fail(p, LOOM_EFORMAT, "exceeds");

	p = tpath("corrupt.safetensors");
	assert_int_equal(loom_st_write(p, &t, 1, NULL), LOOM_OK);
	fp = fopen(p, "r+b");
	fseek(fp, 8, SEEK_SET);
	fputc(0xff, fp); /* the opening brace */
	fclose(fp);
	expect_fail(p, LOOM_EFORMAT, "JSON");

	p = tpath("corrupt2.safetensors");
	assert_int_equal(loom_st_write(p, &t, 1, NULL), LOOM_OK);
	fp = fopen(p, "r+b");
	fseek(fp, 0, SEEK_END);
	long end = ftell(fp);
	fseek(fp, 8 + 3, SEEK_SET); /* inside the name: {"w" -> {"w\0 breaks the string */
	fputc(0, fp);
	fclose(fp);
	(void)end;
	expect_fail(p, LOOM_EFORMAT, "JSON");
}

/* Every allocation failure is a clean LOOM_ENOMEM, never a crash or leak. */
static void alloc_failures(void **state)
{
	(void)state;
	const char *p = tpath("rt.safetensors");
	int ok = 0;
	for (long n = 1; n < 200 && !ok; n++) {
		loom_st_file *f = NULL;
		loom_alloc_fail_after(n);
		loom_err rc = loom_st_open(p, &f);
		loom_alloc_fail_reset();
		if (rc == LOOM_OK) {
			ok = 1;
			assert_non_null(loom_st_find(f, "dbl"));
			loom_st_close(f);
		} else {
			assert_int_equal(rc, LOOM_ENOMEM);
			assert_null(f);
		}
	}
	assert_true(ok);
}

static void real_model(void **state)
{
	(void)state;
	char path[1024];
	snprintf(path, sizeof path, "%s", lt_shared_path("models/stories260k/model.safetensors"));
	loom_st_file *f;
	assert_int_equal(loom_st_open(path, &f), LOOM_OK);
	const loom_tensor *t = loom_st_find(f, "model.embed_tokens.weight");
	assert_non_null(t);
	assert_int_equal(t->dtype, LOOM_DT_F32);
	assert_int_equal(t->ndim, 2);
	assert_int_equal(t->shape[0], 512);
	assert_int_equal(t->shape[1], 64);
	t = loom_st_find(f, "model.layers.4.self_attn.k_proj.weight");
	assert_non_null(t);
	assert_int_equal(t->shape[0], 32);
	assert_int_equal(t->shape[1], 64);
	t = loom_st_find(f, "model.layers.0.mlp.down_proj.weight");
	assert_non_null(t);
	assert_int_equal(t->shape[0], 64);
	assert_int_equal(t->shape[1], 172);
	assert_int_equal(loom_st_find(f, "model.norm.weight")->shape[0], 64);
	assert_null(loom_st_find(f, "lm_head.weight")); /* tied */
	assert_int_equal(loom_st_count(f), 2 + 5 * 9);
	loom_st_close(f);
}

static void write_shard(const char *dir, const char *file, const char *const *names, float base)
{
	loom_tensor ts[4];
	static float vals[4][3];
	int n = 0;
	for (; names[n]; n++) {
		for (int k = 0; k < 3; k++)
			vals[n][k] = base + (float)n + 0.25f * (float)k;
		ts[n] = (loom_tensor){ .name = names[n], .dtype = LOOM_DT_F32, .ndim = 1,
				       .shape = { 3 }, .data = vals[n], .nbytes = 12 };
	}
	char p[1100];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	assert_int_equal(loom_st_write(p, ts, (size_t)n, NULL), LOOM_OK);
}

static void write_text(const char *dir, const char *file, const char *text)
{
	char p[1100];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void shard_set(void **state)
{
	(void)state;
	char *dir = lt_tmpdir("st-shards");
	const char *s1[] = { "a", "b", NULL }, *s2[] = { "c", "extra", NULL };
	write_shard(dir, "model-00001-of-00002.safetensors", s1, 10);
	write_shard(dir, "model-00002-of-00002.safetensors", s2, 20);
	write_text(dir, "model.safetensors.index.json",
		   "{\"metadata\": {\"total_size\": 48}, \"weight_map\": {"
		   "\"a\": \"model-00001-of-00002.safetensors\","
		   "\"c\": \"model-00002-of-00002.safetensors\","
		   "\"b\": \"model-00001-of-00002.safetensors\"}}");
	loom_st_set *s;
	assert_int_equal(loom_st_set_open(dir, &s), LOOM_OK);
	const loom_tensor *t = loom_st_set_find(s, "c");
	assert_non_null(t);
	float v;
	memcpy(&v, (const char *)t->data + 4, 4);
	assert_true(v == 20.25f);
	assert_non_null(loom_st_set_find(s, "a"));
	assert_non_null(loom_st_set_find(s, "b"));
	assert_null(loom_st_set_find(s, "extra")); /* not in the weight_map */
	assert_null(loom_st_set_find(s, "zz"));
	assert_non_null(strstr(loom_st_set_where(s, "b"), "model-00001-of-00002.safetensors"));
	assert_non_null(strstr(loom_st_set_where(s, "c"), "model-00002-of-00002.safetensors"));
	assert_string_equal(loom_st_set_where(s, "zz"), dir);
	loom_st_set_close(s);

	static const struct {
		const char *name, *index;
		loom_err rc;
		const char *word;
	} bad[] = {
		{ "lacks", "{\"weight_map\": {\"q\": \"model-00001-of-00002.safetensors\"}}",
		  LOOM_EFORMAT, "lacks" },
		{ "no_shard", "{\"weight_map\": {\"a\": \"model-00009-of-00009.safetensors\"}}",
		  LOOM_ENOTFOUND, "model-00009-of-00009" },
		{ "slash", "{\"weight_map\": {\"a\": \"../x.safetensors\"}}", LOOM_EFORMAT,
		  "not a file name" },
		{ "no_map", "{\"metadata\": {}}", LOOM_EFORMAT, "weight_map" },
		{ "empty_map", "{\"weight_map\": {}}", LOOM_EFORMAT, "empty" },
		{ "not_string", "{\"weight_map\": {\"a\": 1}}", LOOM_EFORMAT, "\"a\"" },
		{ "bad_json", "{\"weight_map\": ", LOOM_EFORMAT, "JSON" },
		{ "dup", "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
			 "\"a\": \"model-00001-of-00002.safetensors\"}}",
		  LOOM_EFORMAT, "duplicate" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		write_text(dir, "model.safetensors.index.json", bad[i].index);
		s = (loom_st_set *)0x1;
		loom_err rc = loom_st_set_open(dir, &s);
		if (rc != bad[i].rc || !strstr(loom_errmsg(), bad[i].word) ||
		    !strstr(loom_errmsg(), dir))
			fail_msg("%s: got %s \"%s\"", bad[i].name, loom_strerror(rc), loom_errmsg());
		assert_null(s);
	}
	lt_sh("rm -rf '%s'", dir);
	loom_free(dir);
}

static void single_and_empty_set(void **state)
{
	(void)state;
	loom_st_set *s;
	char dir[1024];
	snprintf(dir, sizeof dir, "%s", lt_shared_path("models/stories260k"));
	assert_int_equal(loom_st_set_open(dir, &s), LOOM_OK);
	assert_non_null(loom_st_set_find(s, "model.layers.2.mlp.up_proj.weight"));
	assert_null(loom_st_set_find(s, "lm_head.weight"));
	assert_non_null(strstr(loom_st_set_where(s, "model.norm.weight"), "model.safetensors"));
	loom_st_set_close(s);

	char *empty = lt_tmpdir("st-empty");
	s = (loom_st_set *)0x1;
	assert_int_equal(loom_st_set_open(empty, &s), LOOM_ENOTFOUND);
	assert_null(s);
	assert_non_null(strstr(loom_errmsg(), empty));
	assert_int_equal(loom_st_set_open("/nonexistent/dir", &s), LOOM_ENOTFOUND);
	assert_non_null(strstr(loom_errmsg(), "/nonexistent/dir"));

	/* a broken single file reports that file */
	write_text(empty, "model.safetensors", "garbage!");
	assert_int_equal(loom_st_set_open(empty, &s), LOOM_EFORMAT);
	assert_non_null(strstr(loom_errmsg(), "model.safetensors"));
	lt_sh("rm -rf '%s'", empty);
	loom_free(empty);
}

/* ---- images in memory (loom_st_open_mem) ---- */

/* Reads a whole file into a loom_malloc'ed buffer at offset `shift` (so the
 * image can be misaligned); *base receives the allocation to free. */
static unsigned char *slurp(const char *path, size_t shift, size_t *len, void **base)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	unsigned char *b = loom_malloc((size_t)n + shift + 1);
	assert_non_null(b);
	assert_int_equal(fread(b + shift, 1, (size_t)n, fp), (size_t)n);
	fclose(fp);
	*len = (size_t)n;
	*base = b;
	return b + shift;
}

/* The same image opened from its file and from memory (aligned and not)
 * gives the same tensors, metadata and order; data points into the buffer. */
static void mem_round_trip(void **state)
{
	(void)state;
	float a[6] = { 1, -2, 3.5f, 0, 1e-3f, -7 };
	uint16_t b[4] = { 0x3c00, 0xc100, 0x7bff, 0x0001 };
	int64_t c = -42;
	loom_tensor ts[] = {
		{ .name = "a.weight", .dtype = LOOM_DT_F32, .ndim = 2, .shape = { 2, 3 }, .data = a,
		  .nbytes = sizeof a },
		{ .name = "b", .dtype = LOOM_DT_BF16, .ndim = 2, .shape = { 2, 2 }, .data = b,
		  .nbytes = sizeof b },
		{ .name = "scalar", .dtype = LOOM_DT_I64, .ndim = 0, .data = &c, .nbytes = 8 },
	};
	const size_t n = sizeof ts / sizeof *ts;
	const char *meta[] = { "loom.config", "{\"x\": 1}", NULL };
	const char *path = tpath("mem.safetensors");
	assert_int_equal(loom_st_write(path, ts, n, meta), LOOM_OK);

	loom_st_file *ff, *fm;
	assert_int_equal(loom_st_open(path, &ff), LOOM_OK);
	for (size_t shift = 0; shift < 3; shift++) {
		size_t len;
		void *base;
		unsigned char *img = slurp(path, shift, &len, &base);
		assert_int_equal(loom_st_open_mem(img, len, "blob 1234abcd", &fm), LOOM_OK);
		assert_string_equal(loom_st_path(fm), "blob 1234abcd");
		assert_string_equal(loom_st_meta(fm, "loom.config"), "{\"x\": 1}");
		assert_int_equal(loom_st_count(fm), n);
		for (size_t i = 0; i < n; i++) {
			const loom_tensor *x = loom_st_at(ff, i), *y = loom_st_at(fm, i);
			assert_string_equal(x->name, y->name);
			assert_int_equal(x->dtype, y->dtype);
			assert_int_equal(x->ndim, y->ndim);
			assert_int_equal(x->nbytes, y->nbytes);
			assert_memory_equal(x->data, y->data, x->nbytes);
			/* zero copy: inside the caller's buffer */
			assert_true((const unsigned char *)y->data >= img &&
				    (const unsigned char *)y->data + y->nbytes <= img + len);
			assert_ptr_equal(loom_st_find(fm, x->name), y);
		}
		loom_st_close(fm);
		loom_free(base);
	}
	loom_st_close(ff);

	/* NULL name is allowed (messages say "(memory)") */
	static const unsigned char empty[16] = { 8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ',
						 ' ', ' ', ' ', ' ' };
	assert_int_equal(loom_st_open_mem(empty, sizeof empty, NULL, &fm), LOOM_OK);
	assert_int_equal(loom_st_count(fm), 0);
	assert_string_equal(loom_st_path(fm), "(memory)");
	loom_st_close(fm);
}

/* Builds the image of a bad_case (header, then `data` zero bytes). */
static unsigned char *bad_image(const char *header, uint64_t hlen_override, size_t data,
				size_t *len)
{
	size_t h = strlen(header);
	uint64_t hl = hlen_override ? hlen_override : h;
	unsigned char *b = loom_calloc(8 + h + data + 1, 1);
	assert_non_null(b);
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(hl >> (8 * i));
	memcpy(b + 8, header, h);
	*len = 8 + h + data;
	return b;
}

static void expect_mem_fail(const void *buf, size_t len, const char *name, loom_err want,
			    const char *word)
{
	loom_st_file *f = (loom_st_file *)0x1;
	loom_err rc = loom_st_open_mem(buf, len, name, &f);
	if (rc != want || !strstr(loom_errmsg(), name) || (word && !strstr(loom_errmsg(), word)))
		fail_msg("%s: got %s \"%s\", wanted %s mentioning \"%s\"", name, loom_strerror(rc),
			 loom_errmsg(), loom_strerror(want), word ? word : "");
	assert_null(f);
}

/* Every malformed header of the file table fails the same way in memory,
 * plus images too short or with lying header lengths. */
static void mem_malformed(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
		const struct bad_case *c = &bad_cases[i];
		char name[96];
		size_t len;
		snprintf(name, sizeof name, "blob bad_%s", c->name);
		unsigned char *b = bad_image(c->header, 0, c->data, &len);
		expect_mem_fail(b, len, name, c->rc, c->word);
		loom_free(b);
	}
	size_t len;
	unsigned char *b = bad_image("{}", 4096, 0, &len);
	expect_mem_fail(b, len, "blob past_end", LOOM_EFORMAT, "exceeds");
	loom_free(b);
	b = bad_image("{}", 1ull << 40, 0, &len);
	expect_mem_fail(b, len, "blob absurd", LOOM_EFORMAT, "absurd");
	expect_mem_fail(b, 7, "blob seven", LOOM_EFORMAT, "shorter");
	expect_mem_fail(b, 0, "blob zero", LOOM_EFORMAT, "shorter");
	expect_mem_fail(NULL, 0, "blob null", LOOM_EFORMAT, "shorter");
	expect_mem_fail(NULL, 12, "blob null12", LOOM_EINVAL, "NULL");
	loom_free(b);
}

static void mem_alloc_failures(void **state)
{
	(void)state;
	size_t len;
	void *base;
	unsigned char *img = slurp(tpath("mem.safetensors"), 0, &len, &base);
	int ok = 0;
	for (long n = 1; n < 200 && !ok; n++) {
		loom_st_file *f = NULL;
		loom_alloc_fail_after(n);
		loom_err rc = loom_st_open_mem(img, len, "blob", &f);
		loom_alloc_fail_reset();
		if (rc == LOOM_OK) {
			ok = 1;
			assert_non_null(loom_st_find(f, "a.weight"));
			loom_st_close(f);
		} else {
			assert_int_equal(rc, LOOM_ENOMEM);
			assert_null(f);
		}
	}
	assert_true(ok);
	loom_free(base);
}

static int setup(void **state)
{
	(void)state;
	tmp = lt_tmpdir("test-safetensors");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	lt_sh("rm -rf '%s'", tmp);
	loom_free(tmp);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(round_trip),	     cmocka_unit_test(many_tensors),
		cmocka_unit_test(write_fill),	     cmocka_unit_test(write_errors),
		cmocka_unit_test(malformed_headers), cmocka_unit_test(malformed_files),
		cmocka_unit_test(alloc_failures),    cmocka_unit_test(real_model),
		cmocka_unit_test(shard_set),	     cmocka_unit_test(single_and_empty_set),
		cmocka_unit_test(mem_round_trip),    cmocka_unit_test(mem_malformed),
		cmocka_unit_test(mem_alloc_failures),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
