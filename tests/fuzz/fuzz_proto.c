/*
 * tests/fuzz/fuzz_proto.c — loom_msg_decode (common/proto.h) on any bytes:
 * the gateway and the worker decode what the other side sends.
 *
 * Invariant: what decodes re-encodes, and the re-encoding is a fixed point:
 * decode(encode(m)) succeeds and encodes to the same bytes (the input itself
 * need not be canonical msgpack: ints may be wider than needed, floats 64-bit).
 */
#include <stdint.h>
#include <string.h>

#include "common/alloc.h"
#include "common/proto.h"
#include "tests/fuzz/fuzz.h"

int fuzz_proto(const uint8_t *data, size_t size)
{
	loom_msg m1, m2;
	void *b1 = NULL, *b2 = NULL;
	size_t n1 = 0, n2 = 0;
	loom_err rc;

	rc = loom_msg_decode(data, size, &m1);
	if (rc) {
		FUZZ_CHECK(rc == LOOM_EPROTO || rc == LOOM_ENOMEM, "decode returned %d (%s)", rc,
			   loom_errmsg());
		loom_msg_fini(&m1);
		return 0;
	}
	fuzz_accepted = 1;
	(void)loom_msg_type_name(m1.type);
	rc = loom_msg_encode(&m1, &b1, &n1);
	FUZZ_CHECK(rc == LOOM_OK, "a decoded %s does not encode: %s", loom_msg_type_name(m1.type),
		   loom_errmsg());
	rc = loom_msg_decode(b1, n1, &m2);
	FUZZ_CHECK(rc == LOOM_OK, "the encoding of a decoded %s does not decode: %s",
		   loom_msg_type_name(m1.type), loom_errmsg());
	FUZZ_CHECK(m2.type == m1.type, "type %d came back as %d", m1.type, m2.type);
	rc = loom_msg_encode(&m2, &b2, &n2);
	FUZZ_CHECK(rc == LOOM_OK, "second encode of %s failed: %s", loom_msg_type_name(m1.type),
		   loom_errmsg());
	FUZZ_CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0,
		   "%s: encode(decode(encode(decode(x)))) != encode(decode(x)) (%zu vs %zu bytes)",
		   loom_msg_type_name(m1.type), n1, n2);
	loom_free(b1);
	loom_free(b2);
	loom_msg_fini(&m1);
	loom_msg_fini(&m2);
	return 0;
}

/* ---- seeds: one or two of every message type ---- */

static int32_t fuzz_proto_prompt[] = { 1, 403, 407, 261, 378, 0, INT32_MAX, INT32_MIN, -1 };
static int32_t fuzz_proto_stops[] = { 2, 13 };
static int32_t fuzz_proto_ids[] = { 7, 8, 9, INT32_MIN };
static char fuzz_proto_models[2][LOOM_NAME_MAX] = { "stories260k", "babyllama105" };
static uint8_t fuzz_proto_bytes[5] = { 0, 1, 2, 0xfe, 0xff };
#define FUZZ_PROTO_SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void fuzz_proto_add(fuzz_seeds *s, const loom_msg *m)
{
	void *b;
	size_t n;
	if (loom_msg_encode(m, &b, &n)) {
		fprintf(stderr, "fuzz_proto: seed %s does not encode: %s\n",
			loom_msg_type_name(m->type), loom_errmsg());
		abort();
	}
	fuzz_seed_add(s, b, n);
	loom_free(b);
}

void fuzz_proto_seeds(fuzz_seeds *s)
{
	loom_msg m;
	loom_step_item items[2] = {
		{ .req = 1, .n_ids = 4, .ids = fuzz_proto_ids, .finish = LOOM_FINISH_NONE, .n_prompt = 5 },
		{ .req = UINT64_MAX, .n_ids = 0, .finish = LOOM_FINISH_STOP, .n_prompt = UINT32_MAX },
	};
	loom_resident res[2] = {
		{ .kind = 0, .tier = LOOM_TIER_DEVICE, .name = "sql", .sha = FUZZ_PROTO_SHA, .bytes = 123 },
		{ .kind = 1, .tier = LOOM_TIER_HOST, .name = "stories", .sha = "", .bytes = UINT64_MAX },
	};

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_SUBMIT;
	m.u.submit.req = 77;
	strcpy(m.u.submit.model, "stories260k");
	strcpy(m.u.submit.adapter, "sql-lora");
	m.u.submit.n_prompt = sizeof fuzz_proto_prompt / sizeof fuzz_proto_prompt[0];
	m.u.submit.prompt_ids = fuzz_proto_prompt;
	m.u.submit.sampling = (loom_sampling){ .temperature = 0.7f, .top_p = 0.9f, .top_k = 40,
		.seed = UINT64_MAX, .max_tokens = 20, .ignore_eos = true, .n_stop_ids = 2,
		.stop_ids = fuzz_proto_stops };
	strcpy(m.u.submit.slo_class, "interactive");
	m.u.submit.ttft_deadline_ms = 500;
	m.u.submit.tpot_target_ms = 50;
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_SUBMIT; /* empty arrays, zeros */
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_CANCEL;
	m.u.cancel.req = UINT64_MAX;
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_PING;
	m.u.ping.seq = 1ull << 40;
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_HELLO;
	strcpy(m.u.hello.worker_id, "w0");
	strcpy(m.u.hello.backend, "cpu");
	m.u.hello.proto_version = LOOM_PROTO_VERSION;
	m.u.hello.ping_seq = 12345;
	m.u.hello.device_mem = UINT64_MAX;
	m.u.hello.n_models = 2;
	m.u.hello.models = fuzz_proto_models;
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_STEP;
	m.u.step.n_items = 2;
	m.u.step.items = items;
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_ERROR;
	m.u.error.req = 9;
	m.u.error.code = LOOM_EUNSUPPORTED;
	m.u.error.message = "adapter sql: rank 4096 is larger than 64";
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_STATS;
	m.u.stats = (loom_msg_stats){ .queued = 3, .running = 64, .queued_tokens = 1ull << 33,
		.kv_free = 100, .kv_total = UINT32_MAX, .step_ms = 12.5f, .steps = UINT64_MAX };
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_ADAPTER;
	strcpy(m.u.adapter.name, "sql-lora");
	strcpy(m.u.adapter.base_model, "stories");
	m.u.adapter.path = "/srv/adapters/sql-lora";
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_ADAPTER;
	strcpy(m.u.adapter.name, "sql-lora");
	strcpy(m.u.adapter.base_model, "stories");
	m.u.adapter.path = "";
	strcpy(m.u.adapter.sha, FUZZ_PROTO_SHA);
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_MODEL;
	strcpy(m.u.model.name, "stories");
	m.u.model.path = "";
	strcpy(m.u.model.sha, FUZZ_PROTO_SHA);
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_FETCH;
	strcpy(m.u.fetch.sha, FUZZ_PROTO_SHA);
	m.u.fetch.offset = 8u << 20;
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_BLOB;
	strcpy(m.u.blob.sha, FUZZ_PROTO_SHA);
	m.u.blob.offset = 3;
	m.u.blob.total = 1000;
	m.u.blob.len = sizeof fuzz_proto_bytes;
	m.u.blob.data = fuzz_proto_bytes;
	fuzz_proto_add(s, &m);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_RESIDENCY;
	m.u.residency = (loom_msg_residency){ .n = 2, .items = res, .host_bytes = 1,
		.host_budget = 2, .device_bytes = 3, .device_budget = 4, .model_bytes = 5,
		.model_budget = UINT64_MAX, .host_hits = 7, .host_misses = 8, .device_hits = 9,
		.device_misses = 10, .cold_loads = 11, .cold_load_ms = 12.25 };
	fuzz_proto_add(s, &m);
}

/* msgpack type bytes: fixarray, array16/32, str8/16/32, bin8, uint8..64,
 * int8..64, float32/64, nil, true/false, fixstr. */
const fuzz_word fuzz_proto_dict[] = {
	FUZZ_W("\x93"), FUZZ_W("\x9a"), FUZZ_W("\x9f"), FUZZ_W("\xdc\xff\xff"),
	FUZZ_W("\xdd\x7f\xff\xff\xff"), FUZZ_W("\xd9\xff"), FUZZ_W("\xda\xff\xff"),
	FUZZ_W("\xdb\xff\xff\xff\xff"), FUZZ_W("\xc4\xff"), FUZZ_W("\xcc\xff"), FUZZ_W("\xcd\xff\xff"),
	FUZZ_W("\xce\xff\xff\xff\xff"), FUZZ_W("\xcf\xff\xff\xff\xff\xff\xff\xff\xff"),
	FUZZ_W("\xd0\x80"), FUZZ_W("\xd1\x80"), FUZZ_W("\xd2\x80"), FUZZ_W("\xd3\x80"),
	FUZZ_W("\xca\x7f\xc0"), FUZZ_W("\xcb\x7f\xf8"), FUZZ_W("\xc0"), FUZZ_W("\xc2"), FUZZ_W("\xc3"),
	FUZZ_W("\xa0"), FUZZ_W("\xbf"), FUZZ_W("\x01"),
	{ NULL, 0 },
};
