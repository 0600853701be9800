/*
 * tests/fuzz/fuzz_safetensors.c — loom_st_open_mem (common/safetensors.h)
 * on any bytes (store blobs, uploaded weights), then every accessor and
 * every byte of every tensor.
 *
 * Invariants on success: tensors lie inside the buffer, in offset order
 * without overlap; nbytes = numel x dtype size; each is found by its own
 * name; metadata keys are found. An odd-sized input is parsed from an odd
 * address, so a reader that assumes alignment trips UBSan.
 */
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/dtype.h"
#include "common/safetensors.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_st.h"

int fuzz_safetensors(const uint8_t *data, size_t size)
{
	unsigned char *copy;
	const unsigned char *buf = fuzz_st_place(data, size, &copy);
	loom_st_file *f = NULL;
	loom_err rc;

	rc = loom_st_open_mem(buf, size, "fuzz.safetensors", &f);
	if (rc == LOOM_OK) {
		FUZZ_CHECK(f != NULL, "OK without a file");
		fuzz_accepted = 1;
		fuzz_st_walk(f, buf, size);
		loom_st_close(f);
	} else {
		FUZZ_CHECK(f == NULL, "error %d but *out set", rc);
		FUZZ_CHECK(rc == LOOM_EFORMAT || rc == LOOM_EUNSUPPORTED || rc == LOOM_ENOMEM,
			   "unexpected error %d: %s", rc, loom_errmsg());
		FUZZ_CHECK(loom_errmsg()[0] != '\0', "error %d without a message", rc);
	}
	free(copy);
	return 0;
}

/* ---- seeds: small files of every dtype written by loom_st_write, and real ones ---- */

static void fuzz_safetensors_write_seed(fuzz_seeds *s, const char *tag, const loom_tensor *t, size_t n,
			       const char *const *meta)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/seed-%s.safetensors", fuzz_tmpdir(), tag);
	if (loom_st_write(path, t, n, meta)) {
		fprintf(stderr, "fuzz_safetensors: seed %s: %s\n", tag, loom_errmsg());
		abort();
	}
	if (fuzz_seed_file(s, path))
		abort();
	remove(path);
}

void fuzz_safetensors_seeds(fuzz_seeds *s)
{
	static const float f32[6] = { 1, -2, 0.5f, 3e38f, -0.0f, 7 };
	static const uint16_t f16[4] = { 0x3c00, 0x7c00, 0x7e00, 0x0001 };
	static const uint16_t bf16[1] = { 0x3f80 };
	static const int64_t i64[2] = { -1, INT64_MAX };
	static const uint8_t u8[6] = { 0, 1, 2, 3, 254, 255 };
	const char *meta[] = { "format", "pt", "loom.config", "{\"hidden_size\": 4}", NULL };
	loom_tensor t[6];

	memset(t, 0, sizeof t);
	t[0] = (loom_tensor){ .name = "a.weight", .dtype = LOOM_DT_F32, .ndim = 2, .shape = { 2, 3 },
			      .data = f32, .nbytes = sizeof f32 };
	t[1] = (loom_tensor){ .name = "b.f16", .dtype = LOOM_DT_F16, .ndim = 1, .shape = { 4 },
			      .data = f16, .nbytes = sizeof f16 };
	t[2] = (loom_tensor){ .name = "c.scalar", .dtype = LOOM_DT_BF16, .ndim = 0, .data = bf16,
			      .nbytes = sizeof bf16 };
	t[3] = (loom_tensor){ .name = "d.i64", .dtype = LOOM_DT_I64, .ndim = 1, .shape = { 2 },
			      .data = i64, .nbytes = sizeof i64 };
	t[4] = (loom_tensor){ .name = "e.empty", .dtype = LOOM_DT_F32, .ndim = 2, .shape = { 0, 5 },
			      .data = f32, .nbytes = 0 };
	t[5] = (loom_tensor){ .name = "f.u8", .dtype = LOOM_DT_U8, .ndim = 3, .shape = { 3, 1, 2 },
			      .data = u8, .nbytes = sizeof u8 };
	fuzz_safetensors_write_seed(s, "mixed", t, 6, meta);
	fuzz_safetensors_write_seed(s, "one", t, 1, NULL);
	fuzz_safetensors_write_seed(s, "none", t, 0, meta);
	/* real files nobody here wrote */
	if (fuzz_seed_file(s, fuzz_shared_path("fixtures/peft-trimmed-real/adapter_model.safetensors")) ||
	    fuzz_seed_file(s, fuzz_shared_path("models/stories260k/model.safetensors")))
		abort();
	/* hand-made headers the writer would not produce */
	static const char raw[][120] = {
		"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"__metadata__\":{}}",
		"{\"x\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[0,1]}}  ",
		"{}",
	};
	for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
		unsigned char b[256];
		uint64_t hl = strlen(raw[i]);
		for (int k = 0; k < 8; k++)
			b[k] = (unsigned char)(hl >> (8 * k));
		memcpy(b + 8, raw[i], hl);
		memset(b + 8 + hl, 0x3f, 4);
		fuzz_seed_add(s, b, 8 + hl + (i == 0 ? 4 : i == 1 ? 1 : 0));
	}
}

const fuzz_word fuzz_safetensors_dict[] = {
	FUZZ_W("\"dtype\""), FUZZ_W("\"shape\""), FUZZ_W("\"data_offsets\""),
	FUZZ_W("\"__metadata__\""), FUZZ_W("\"F32\""), FUZZ_W("\"F16\""), FUZZ_W("\"BF16\""),
	FUZZ_W("\"F64\""), FUZZ_W("\"I64\""), FUZZ_W("\"I32\""), FUZZ_W("\"I16\""), FUZZ_W("\"I8\""),
	FUZZ_W("\"U8\""), FUZZ_W("\"BOOL\""), FUZZ_W("\"F8_E4M3\""), FUZZ_W("\"U64\""),
	FUZZ_W("[0,0]"), FUZZ_W("[]"), FUZZ_W("{}"), FUZZ_W("null"), FUZZ_W("18446744073709551615"),
	FUZZ_W("9223372036854775808"), FUZZ_W("-1"), FUZZ_W("1e3"), FUZZ_W("4294967296"),
	FUZZ_W("\"\\u0000\""), FUZZ_W(","), FUZZ_W(":"), FUZZ_W("\""),
	{ NULL, 0 },
};
