/*
 * tests/fuzz/fuzz_adapter_blob.c — ad_adapter_from_blob (adapters/adapter.h)
 * on any bytes: adapter blobs come out of the store and over the wire
 * (BLOB messages), so a worker parses them as untrusted.
 *
 * The input sits in an exact-size 64-byte aligned allocation (a sanitizer
 * sees any over-read) and is parsed zero-copy and copying, against
 * fuzz_ad.h's tiny base. Invariants: both modes agree; what loads passes
 * fuzz_ad_check; what loads serializes back to the input bytes (all but
 * the alignment gaps, see fuzz_adapter_blob_same).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "tests/fuzz/fuzz.h"
#include "tests/fuzz/fuzz_ad.h"

/*
 * A blob that loads (zero-copy a, from buf) serializes back to the same
 * bytes wherever they mean something: the header, the module table and
 * every A / Bt block. Not compared, because the parser lets them through
 * (reported; two blobs that differ there load as the same adapter): the
 * alignment gaps between blocks (written as zeros, not checked) and the
 * scale -0.0 of a rank-0 module (written as +0.0).
 */
static void fuzz_adapter_blob_same(const ad_adapter *a, const uint8_t *buf, size_t size)
{
	const loom_model_config *base = fuzz_ad_base();
	uint8_t *used = calloc(size ? size : 1, 1);
	void *out;
	size_t n, data_off = 0;
	if (!used)
		return;
	if (ad_adapter_serialize(a, &out, &n) != LOOM_OK) {
		free(used);
		return;
	}
	FUZZ_CHECK(n == size, "a %zu-byte blob that loads serializes to %zu bytes", size, n);
	for (int k = 0; k < 8; k++)
		data_off |= (size_t)buf[104 + k] << (8 * k);
	FUZZ_CHECK(data_off <= size, "data_off %zu past the end", data_off);
	memset(used, 1, data_off);
	for (int l = 0; l < a->n_layers; l++) {
		for (int t = 0; t < AD_N_TARGETS; t++) {
			const ad_module *m = ad_mod(a, l, t);
			int din, dout;
			if (!m->rank) {
				/* scale -0.0 passes the parser's "scale == 0" and comes back +0.0 */
				size_t e = 128 + ((size_t)l * AD_N_TARGETS + (size_t)t) * 24 + 4;
				if (e + 4 <= size && buf[e] == 0 && buf[e + 1] == 0 && buf[e + 2] == 0 &&
				    buf[e + 3] == 0x80)
					memset(used + e, 0, 4);
				continue;
			}
			ad_target_dims(base, t, &din, &dout);
			size_t ao = (size_t)((const uint8_t *)m->a - buf);
			size_t bo = (size_t)((const uint8_t *)m->bt - buf);
			size_t an = (size_t)m->rank * (size_t)din * 4;
			size_t bn = (size_t)m->rank * (size_t)dout * 4;
			FUZZ_CHECK(ao <= size && an <= size - ao && bo <= size && bn <= size - bo,
				   "layer %d target %d: zero-copy weights outside the blob", l, t);
			memset(used + ao, 1, an);
			memset(used + bo, 1, bn);
		}
	}
	for (size_t i = 0; i < size; i++)
		FUZZ_CHECK(!used[i] || ((const uint8_t *)out)[i] == buf[i],
			   "a blob that loads serializes differently at byte %zu (%02x -> %02x)", i,
			   buf[i], ((const uint8_t *)out)[i]);
	loom_free(out);
	free(used);
}

int fuzz_adapter_blob(const uint8_t *data, size_t size)
{
	const loom_model_config *base = fuzz_ad_base();
	void *buf = NULL;
	ad_adapter *a0 = NULL, *a1 = NULL;
	loom_err rc0, rc1;

	if (posix_memalign(&buf, 64, size ? size : 1) != 0)
		return 0;
	memcpy(buf, data, size);
	rc0 = ad_adapter_from_blob(buf, size, "fuzz", base, 0, &a0);
	rc1 = ad_adapter_from_blob(buf, size, "fuzz", base, 1, &a1);
	if (rc0 != LOOM_ENOMEM && rc1 != LOOM_ENOMEM)
		FUZZ_CHECK(rc0 == rc1, "zero-copy says %d, copy says %d", rc0, rc1);
	FUZZ_CHECK(!rc0 == !!a0 && !rc1 == !!a1, "result and *out disagree");
	if (a0) {
		fuzz_accepted = 1;
		fuzz_ad_check(a0, base);
		fuzz_adapter_blob_same(a0, buf, size);
	} else {
		FUZZ_CHECK(loom_errmsg()[0] != '\0', "error %d without a message", rc0);
	}
	if (a1)
		fuzz_ad_check(a1, base);
	ad_adapter_destroy(a0);
	ad_adapter_destroy(a1);
	free(buf);
	return 0;
}

void fuzz_adapter_blob_seeds(fuzz_seeds *s)
{
	const loom_model_config *base = fuzz_ad_base();
	for (int v = 0; v < FUZZ_AD_VARIANTS; v++) {
		char path[2048];
		ad_adapter *a;
		void *b;
		size_t n;
		const char *cfg = fuzz_ad_config(v);
		snprintf(path, sizeof path, "%s/adapter_config.json", fuzz_ad_dir(v));
		fuzz_write_file(path, cfg, strlen(cfg));
		if (ad_adapter_load(fuzz_ad_dir(v), "seed", base, &a) ||
		    ad_adapter_serialize(a, &b, &n)) {
			fprintf(stderr, "fuzz_adapter_blob: seed %d: %s\n", v, loom_errmsg());
			abort();
		}
		fuzz_seed_add(s, b, n);
		loom_free(b);
		ad_adapter_destroy(a);
	}
}

const fuzz_word fuzz_adapter_blob_dict[] = {
	FUZZ_W("LOOMADP1"), FUZZ_W("\x01\x00\x00\x00"), FUZZ_W("\x00\x00\x00\x00"),
	FUZZ_W("\xff\xff\xff\xff"), FUZZ_W("\x00\x00\x80\x7f"), FUZZ_W("\x00\x00\xc0\x7f"),
	FUZZ_W("\x40\x00\x00\x00"), FUZZ_W("\x10\x00\x00\x00"), FUZZ_W("\x02\x00\x00\x00"),
	{ NULL, 0 },
};
