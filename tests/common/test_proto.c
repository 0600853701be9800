/*
 * tests/common/test_proto.c — round trips and strict decoding of the wire
 * protocol: every message type, boundary values, and bad bytes of every
 * kind (truncations, wrong types and arities, over-long names, random
 * buffers and bit flips) which must give an error or a valid message.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <msgpack.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/proto.h"

/* ---------------------------------------------------------------- */
/* sample messages                                                   */
/* ---------------------------------------------------------------- */

static int32_t prompt[] = { 1, 403, 407, 261, 378, 0, INT32_MAX, INT32_MIN, -1 };
static int32_t stops[] = { 2, 13 };
static int32_t ids_a[] = { 42 };
static int32_t ids_b[] = { 7, 8, 9, INT32_MIN };
static char models2[2][LOOM_NAME_MAX] = { "stories260k", "babyllama105" };
#define SHA_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
static uint8_t blob_bytes[5] = { 0, 1, 2, 0xfe, 0xff };
static loom_resident residents2[2] = {
	{ .kind = 0, .tier = LOOM_TIER_DEVICE, .name = "sql", .sha = SHA_A, .bytes = 123 },
	{ .kind = 1, .tier = LOOM_TIER_HOST, .name = "stories", .sha = "", .bytes = UINT64_MAX },
};
static int32_t bias_ids[] = { 3, 0, INT32_MAX };
static float bias_vals[] = { -100.0f, 0.5f, 100.0f };
static char guide_text[] = "{\"prefix\": \"<tool_call>\\n\", \"schema\": {\"type\": \"object\"}, "
			   "\"suffix\": \"\\n</tool_call>\"}";
static float lp_a[] = { -0.25f };
static int32_t top_a[] = { 42, 7, 9 };
static float top_lp_a[] = { -0.25f, -2.0f, -INFINITY };
static float plp4[] = { -1.0f, -2.5f, -0.125f, -7.0f };
static int32_t ptop4[] = { 1, 2, 3, 4 };
static float ptop_lp4[] = { -0.5f, -1.5f, -0.125f, -3.0f };
static loom_step_item items3[3] = {
	{ .req = 1, .n_ids = 1, .ids = ids_a, .finish = LOOM_FINISH_NONE, .n_prompt = 5,
	  .n_cached = 5,
	  .lp = { .n = 1, .k = 3, .lp = lp_a, .top_ids = top_a, .top_lp = top_lp_a },
	  .prompt_lp = { .n = 4, .k = 1, .lp = plp4, .top_ids = ptop4, .top_lp = ptop_lp4 } },
	{ .req = UINT64_MAX, .n_ids = 4, .ids = ids_b, .finish = LOOM_FINISH_STOP, .n_prompt = 0 },
	{ .req = 0, .n_ids = 0, .ids = NULL, .finish = LOOM_FINISH_ABORT, .n_prompt = UINT32_MAX,
	  .n_cached = UINT32_MAX - 1 },
};

static loom_prefix_model prefix2[2] = {
	{ .name = "stories", .prompt_tokens = UINT64_MAX, .cached_tokens = 1ull << 40,
	  .cached_blocks = UINT32_MAX },
	{ .name = "x" },
};

static void fill_max_name(char *dst)
{
	memset(dst, 'x', LOOM_NAME_MAX - 1);
	dst[LOOM_NAME_MAX - 1] = '\0';
}

/* Sample i of all message types (variants per type); returns 0 past the end. */
static int sample(int i, loom_msg *m)
{
	memset(m, 0, sizeof *m);
	switch (i) {
	case 0:
		m->type = LOOM_MSG_SUBMIT;
		m->u.submit.req = 77;
		strcpy(m->u.submit.model, "stories260k");
		m->u.submit.n_prompt = sizeof prompt / sizeof prompt[0];
		m->u.submit.prompt_ids = prompt;
		m->u.submit.sampling = (loom_sampling){ .temperature = 0.7f, .top_p = 0.9f,
			.top_k = 40, .seed = UINT64_MAX, .max_tokens = 20, .ignore_eos = true,
			.n_stop_ids = 2, .stop_ids = stops, .presence_penalty = -2.0f,
			.frequency_penalty = 1.5f, .repetition_penalty = 1.25f, .min_p = 0.05f,
			.min_tokens = 7, .n_bias = 3, .bias_ids = bias_ids, .bias = bias_vals,
			.logprobs = true, .top_logprobs = LOOM_MAX_LOGPROBS, .prompt_logprobs = true,
			.prompt_top_logprobs = 0, .guide = LOOM_GUIDE_WRAPPED,
			.guide_text = guide_text };
		strcpy(m->u.submit.slo_class, "interactive");
		m->u.submit.ttft_deadline_ms = 500;
		m->u.submit.tpot_target_ms = 50;
		m->u.submit.n_generated = 1;
		return 1;
	case 1: /* empty arrays, zeros, max-length names */
		m->type = LOOM_MSG_SUBMIT;
		fill_max_name(m->u.submit.model);
		fill_max_name(m->u.submit.adapter);
		memset(m->u.submit.slo_class, 's', sizeof m->u.submit.slo_class - 1);
		m->u.submit.sampling.top_k = INT32_MIN;
		m->u.submit.sampling.max_tokens = UINT32_MAX;
		return 1;
	case 2:
		m->type = LOOM_MSG_CANCEL;
		m->u.cancel.req = UINT64_MAX;
		return 1;
	case 3:
		m->type = LOOM_MSG_PING;
		m->u.ping.seq = 0;
		return 1;
	case 4:
		m->type = LOOM_MSG_PING;
		m->u.ping.seq = 1ull << 40;
		return 1;
	case 5:
		m->type = LOOM_MSG_HELLO;
		strcpy(m->u.hello.worker_id, "w0");
		strcpy(m->u.hello.backend, "cpu");
		m->u.hello.proto_version = LOOM_PROTO_VERSION;
		m->u.hello.ping_seq = 12345;
		m->u.hello.device_mem = UINT64_MAX;
		m->u.hello.n_models = 2;
		m->u.hello.models = models2;
		return 1;
	case 6:
		m->type = LOOM_MSG_HELLO;
		fill_max_name(m->u.hello.worker_id);
		memset(m->u.hello.backend, 'b', sizeof m->u.hello.backend - 1);
		return 1;
	case 7:
		m->type = LOOM_MSG_STEP;
		m->u.step.n_items = 3;
		m->u.step.items = items3;
		return 1;
	case 8:
		m->type = LOOM_MSG_STEP;
		return 1;
	case 9:
		m->type = LOOM_MSG_ERROR;
		m->u.error.req = 9;
		m->u.error.code = LOOM_EUNSUPPORTED;
		m->u.error.message = "adapters not supported yet";
		return 1;
	case 10:
		m->type = LOOM_MSG_ERROR;
		m->u.error.message = "";
		m->u.error.code = UINT32_MAX;
		return 1;
	case 11:
		m->type = LOOM_MSG_STATS;
		m->u.stats = (loom_msg_stats){ .queued = 3, .running = 64, .queued_tokens = 1ull << 33,
			.kv_free = 100, .kv_total = UINT32_MAX, .step_ms = 12.5f, .steps = UINT64_MAX,
			.tokens_out = 0, .fit_a_ms = 1.5f, .fit_b_ms = 0.25f,
			.queued_tokens_slo = 1ull << 32, .prompt_tokens = 1ull << 35,
			.cached_tokens = 1ull << 34, .cached_blocks = 77, .n_models = 2,
			.models = prefix2 };
		return 1;
	case 12:
		m->type = LOOM_MSG_STATS;
		return 1;
	case 13:
		m->type = LOOM_MSG_ADAPTER;
		strcpy(m->u.adapter.name, "sql-lora");
		strcpy(m->u.adapter.base_model, "stories");
		m->u.adapter.path = "/srv/adapters/sql-lora";
		return 1;
	case 14:
		m->type = LOOM_MSG_ADAPTER;
		fill_max_name(m->u.adapter.name);
		m->u.adapter.path = "";
		strcpy(m->u.adapter.sha, SHA_A);
		return 1;
	case 15:
		m->type = LOOM_MSG_MODEL;
		strcpy(m->u.model.name, "stories");
		m->u.model.path = "/models/stories260k";
		return 1;
	case 16:
		m->type = LOOM_MSG_MODEL;
		fill_max_name(m->u.model.name);
		m->u.model.path = "";
		strcpy(m->u.model.sha, SHA_A);
		strcpy(m->u.model.tokenizer_sha, SHA_A);
		return 1;
	case 17:
		m->type = LOOM_MSG_FETCH;
		strcpy(m->u.fetch.sha, SHA_A);
		m->u.fetch.offset = UINT64_MAX;
		return 1;
	case 18:
		m->type = LOOM_MSG_BLOB;
		strcpy(m->u.blob.sha, SHA_A);
		m->u.blob.offset = 3;
		m->u.blob.total = 1000;
		m->u.blob.len = sizeof blob_bytes;
		m->u.blob.data = blob_bytes;
		return 1;
	case 19:
		m->type = LOOM_MSG_BLOB; /* "not found" answer */
		strcpy(m->u.blob.sha, SHA_A);
		return 1;
	case 20:
		m->type = LOOM_MSG_RESIDENCY;
		m->u.residency = (loom_msg_residency){ .n = 2, .items = residents2,
			.host_bytes = 1, .host_budget = 2, .device_bytes = 3, .device_budget = 4,
			.model_bytes = 5, .model_budget = UINT64_MAX, .host_hits = 7, .host_misses = 8,
			.device_hits = 9, .device_misses = 10, .cold_loads = 11, .cold_load_ms = 12.25 };
		return 1;
	case 21:
		m->type = LOOM_MSG_RESIDENCY;
		return 1;
	}
	return 0;
}

static void assert_ids_equal(const int32_t *a, const int32_t *b, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		assert_int_equal(a[i], b[i]);
}

static int same_float(float a, float b)
{
	return a == b || (isnan(a) && isnan(b));
}

static void assert_lp_equal(const loom_logprobs *a, const loom_logprobs *b)
{
	assert_int_equal(a->n, b->n);
	if (!a->n)
		return;
	assert_int_equal(a->k, b->k);
	for (uint32_t i = 0; i < a->n; i++)
		assert_true(same_float(a->lp[i], b->lp[i]));
	assert_ids_equal(a->top_ids, b->top_ids, a->n * a->k);
	for (uint32_t i = 0; i < a->n * a->k; i++)
		assert_true(same_float(a->top_lp[i], b->top_lp[i]));
}

static void assert_msg_equal(const loom_msg *a, const loom_msg *b)
{
	assert_int_equal(a->type, b->type);
	switch (a->type) {
	case LOOM_MSG_SUBMIT: {
		const loom_msg_submit *x = &a->u.submit, *y = &b->u.submit;
		assert_true(x->req == y->req);
		assert_string_equal(x->model, y->model);
		assert_string_equal(x->adapter, y->adapter);
		assert_int_equal(x->n_prompt, y->n_prompt);
		assert_ids_equal(x->prompt_ids, y->prompt_ids, x->n_prompt);
		assert_true(same_float(x->sampling.temperature, y->sampling.temperature));
		assert_true(same_float(x->sampling.top_p, y->sampling.top_p));
		assert_int_equal(x->sampling.top_k, y->sampling.top_k);
		assert_true(x->sampling.seed == y->sampling.seed);
		assert_int_equal(x->sampling.max_tokens, y->sampling.max_tokens);
		assert_int_equal(x->sampling.ignore_eos, y->sampling.ignore_eos);
		assert_int_equal(x->sampling.n_stop_ids, y->sampling.n_stop_ids);
		assert_ids_equal(x->sampling.stop_ids, y->sampling.stop_ids, x->sampling.n_stop_ids);
		assert_true(same_float(x->sampling.presence_penalty, y->sampling.presence_penalty));
		assert_true(same_float(x->sampling.frequency_penalty, y->sampling.frequency_penalty));
		assert_true(same_float(x->sampling.repetition_penalty, y->sampling.repetition_penalty));
		assert_true(same_float(x->sampling.min_p, y->sampling.min_p));
		assert_int_equal(x->sampling.min_tokens, y->sampling.min_tokens);
		assert_int_equal(x->sampling.n_bias, y->sampling.n_bias);
		assert_ids_equal(x->sampling.bias_ids, y->sampling.bias_ids, x->sampling.n_bias);
		for (uint32_t i = 0; i < x->sampling.n_bias; i++)
			assert_true(same_float(x->sampling.bias[i], y->sampling.bias[i]));
		assert_int_equal(x->sampling.logprobs, y->sampling.logprobs);
		assert_int_equal(x->sampling.top_logprobs, y->sampling.top_logprobs);
		assert_int_equal(x->sampling.prompt_logprobs, y->sampling.prompt_logprobs);
		assert_int_equal(x->sampling.prompt_top_logprobs, y->sampling.prompt_top_logprobs);
		assert_int_equal(x->sampling.guide, y->sampling.guide);
		assert_string_equal(x->sampling.guide_text ? x->sampling.guide_text : "",
				    y->sampling.guide_text ? y->sampling.guide_text : "");
		assert_string_equal(x->slo_class, y->slo_class);
		assert_int_equal(x->ttft_deadline_ms, y->ttft_deadline_ms);
		assert_int_equal(x->n_generated, y->n_generated);
		assert_int_equal(x->tpot_target_ms, y->tpot_target_ms);
		break;
	}
	case LOOM_MSG_CANCEL:
		assert_true(a->u.cancel.req == b->u.cancel.req);
		break;
	case LOOM_MSG_PING:
		assert_true(a->u.ping.seq == b->u.ping.seq);
		break;
	case LOOM_MSG_HELLO: {
		const loom_msg_hello *x = &a->u.hello, *y = &b->u.hello;
		assert_string_equal(x->worker_id, y->worker_id);
		assert_string_equal(x->backend, y->backend);
		assert_int_equal(x->proto_version, y->proto_version);
		assert_true(x->ping_seq == y->ping_seq);
		assert_true(x->device_mem == y->device_mem);
		assert_int_equal(x->n_models, y->n_models);
		for (uint32_t i = 0; i < x->n_models; i++)
			assert_string_equal(x->models[i], y->models[i]);
		break;
	}
	case LOOM_MSG_STEP:
		assert_int_equal(a->u.step.n_items, b->u.step.n_items);
		for (uint32_t i = 0; i < a->u.step.n_items; i++) {
			const loom_step_item *x = &a->u.step.items[i], *y = &b->u.step.items[i];
			assert_true(x->req == y->req);
			assert_int_equal(x->n_ids, y->n_ids);
			assert_ids_equal(x->ids, y->ids, x->n_ids);
			assert_int_equal(x->finish, y->finish);
			assert_int_equal(x->n_prompt, y->n_prompt);
			assert_int_equal(x->n_cached, y->n_cached);
			assert_lp_equal(&x->lp, &y->lp);
			assert_lp_equal(&x->prompt_lp, &y->prompt_lp);
		}
		break;
	case LOOM_MSG_ADAPTER:
		assert_string_equal(a->u.adapter.name, b->u.adapter.name);
		assert_string_equal(a->u.adapter.base_model, b->u.adapter.base_model);
		assert_string_equal(a->u.adapter.path, b->u.adapter.path);
		assert_string_equal(a->u.adapter.sha, b->u.adapter.sha);
		break;
	case LOOM_MSG_MODEL:
		assert_string_equal(a->u.model.name, b->u.model.name);
		assert_string_equal(a->u.model.path, b->u.model.path);
		assert_string_equal(a->u.model.sha, b->u.model.sha);
		assert_string_equal(a->u.model.tokenizer_sha, b->u.model.tokenizer_sha);
		break;
	case LOOM_MSG_FETCH:
		assert_string_equal(a->u.fetch.sha, b->u.fetch.sha);
		assert_true(a->u.fetch.offset == b->u.fetch.offset);
		break;
	case LOOM_MSG_BLOB:
		assert_string_equal(a->u.blob.sha, b->u.blob.sha);
		assert_true(a->u.blob.offset == b->u.blob.offset);
		assert_true(a->u.blob.total == b->u.blob.total);
		assert_int_equal(a->u.blob.len, b->u.blob.len);
		if (a->u.blob.len)
			assert_memory_equal(a->u.blob.data, b->u.blob.data, a->u.blob.len);
		break;
	case LOOM_MSG_RESIDENCY: {
		const loom_msg_residency *x = &a->u.residency, *y = &b->u.residency;
		assert_int_equal(x->n, y->n);
		for (uint32_t i = 0; i < x->n; i++) {
			assert_int_equal(x->items[i].kind, y->items[i].kind);
			assert_int_equal(x->items[i].tier, y->items[i].tier);
			assert_string_equal(x->items[i].name, y->items[i].name);
			assert_string_equal(x->items[i].sha, y->items[i].sha);
			assert_true(x->items[i].bytes == y->items[i].bytes);
		}
		assert_true(x->host_bytes == y->host_bytes && x->host_budget == y->host_budget);
		assert_true(x->device_bytes == y->device_bytes && x->device_budget == y->device_budget);
		assert_true(x->model_bytes == y->model_bytes && x->model_budget == y->model_budget);
		assert_true(x->host_hits == y->host_hits && x->host_misses == y->host_misses);
		assert_true(x->device_hits == y->device_hits && x->device_misses == y->device_misses);
		assert_true(x->cold_loads == y->cold_loads && x->cold_load_ms == y->cold_load_ms);
		break;
	}
	case LOOM_MSG_ERROR:
		assert_true(a->u.error.req == b->u.error.req);
		assert_int_equal(a->u.error.code, b->u.error.code);
		assert_string_equal(a->u.error.message, b->u.error.message);
		break;
	case LOOM_MSG_STATS:
		assert_int_equal(a->u.stats.queued, b->u.stats.queued);
		assert_int_equal(a->u.stats.running, b->u.stats.running);
		assert_true(a->u.stats.queued_tokens == b->u.stats.queued_tokens);
		assert_int_equal(a->u.stats.kv_free, b->u.stats.kv_free);
		assert_true(same_float(a->u.stats.fit_a_ms, b->u.stats.fit_a_ms));
		assert_true(same_float(a->u.stats.fit_b_ms, b->u.stats.fit_b_ms));
		assert_true(a->u.stats.queued_tokens_slo == b->u.stats.queued_tokens_slo);
		assert_int_equal(a->u.stats.kv_total, b->u.stats.kv_total);
		assert_true(same_float(a->u.stats.step_ms, b->u.stats.step_ms));
		assert_true(a->u.stats.steps == b->u.stats.steps);
		assert_true(a->u.stats.tokens_out == b->u.stats.tokens_out);
		assert_true(a->u.stats.prompt_tokens == b->u.stats.prompt_tokens);
		assert_true(a->u.stats.cached_tokens == b->u.stats.cached_tokens);
		assert_int_equal(a->u.stats.cached_blocks, b->u.stats.cached_blocks);
		assert_int_equal(a->u.stats.n_models, b->u.stats.n_models);
		for (uint32_t i = 0; i < a->u.stats.n_models; i++) {
			const loom_prefix_model *x = &a->u.stats.models[i], *y = &b->u.stats.models[i];
			assert_string_equal(x->name, y->name);
			assert_true(x->prompt_tokens == y->prompt_tokens);
			assert_true(x->cached_tokens == y->cached_tokens);
			assert_int_equal(x->cached_blocks, y->cached_blocks);
		}
		break;
	}
}

/* ---------------------------------------------------------------- */
/* round trips                                                       */
/* ---------------------------------------------------------------- */

static void test_round_trip_all(void **state)
{
	(void)state;
	loom_msg m, d;
	int seen[LOOM_MSG_RESIDENCY + 1] = { 0 };

	for (int i = 0; sample(i, &m); i++) {
		void *buf;
		size_t len;
		assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_OK);
		assert_true(len > 0);
		assert_int_equal(loom_msg_decode(buf, len, &d), LOOM_OK);
		assert_msg_equal(&m, &d);
		seen[m.type] = 1;
		loom_msg_fini(&d);
		assert_int_equal(d.type, 0);
		loom_free(buf);
	}
	for (int t = LOOM_MSG_SUBMIT; t <= LOOM_MSG_RESIDENCY; t++)
		assert_true(seen[t]);
}

static void test_big_arrays(void **state)
{
	(void)state;
	enum { N = 100000 };
	int32_t *ids = loom_malloc(N * sizeof *ids);
	loom_step_item *items = loom_calloc(3000, sizeof *items);
	loom_msg m = { .type = LOOM_MSG_SUBMIT }, d;
	void *buf;
	size_t len;

	for (int i = 0; i < N; i++)
		ids[i] = i * 7919 - 300000;
	strcpy(m.u.submit.model, "m");
	m.u.submit.n_prompt = N;
	m.u.submit.prompt_ids = ids;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_OK);
	assert_int_equal(loom_msg_decode(buf, len, &d), LOOM_OK);
	assert_msg_equal(&m, &d);
	loom_msg_fini(&d);
	loom_free(buf);

	memset(&m, 0, sizeof m);
	m.type = LOOM_MSG_STEP;
	m.u.step.n_items = 3000;
	m.u.step.items = items;
	for (int i = 0; i < 3000; i++) {
		items[i].req = (uint64_t)i << 33;
		items[i].n_ids = 1;
		items[i].ids = &ids[i];
	}
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_OK);
	assert_int_equal(loom_msg_decode(buf, len, &d), LOOM_OK);
	assert_msg_equal(&m, &d);
	loom_msg_fini(&d);
	loom_free(buf);
	loom_free(items);
	loom_free(ids);
}

static void test_type_names(void **state)
{
	(void)state;
	assert_string_equal(loom_msg_type_name(LOOM_MSG_SUBMIT), "SUBMIT");
	assert_string_equal(loom_msg_type_name(LOOM_MSG_STATS), "STATS");
	assert_string_equal(loom_msg_type_name(0), "?");
	assert_string_equal(loom_msg_type_name(99), "?");
}

/* ---------------------------------------------------------------- */
/* encode rejects what decode would reject                           */
/* ---------------------------------------------------------------- */

static void test_encode_rejects(void **state)
{
	(void)state;
	loom_msg m;
	void *buf = (void *)1;
	size_t len = 1;

	sample(0, &m);
	memset(m.u.submit.model, 'x', sizeof m.u.submit.model); /* no NUL */
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);
	assert_null(buf);
	assert_int_equal(len, 0);
	assert_non_null(strstr(loom_errmsg(), "model"));

	sample(0, &m);
	m.u.submit.prompt_ids = NULL;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);

	sample(7, &m);
	loom_step_item bad_item = items3[0];
	bad_item.finish = 9;
	m.u.step.items = &bad_item;
	m.u.step.n_items = 1;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);

	/* logprobs that do not match their ids / prompt, too many alternatives */
	sample(7, &m);
	bad_item = items3[0];
	bad_item.n_ids = 0;
	m.u.step.items = &bad_item;
	m.u.step.n_items = 1;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);
	bad_item = items3[0];
	bad_item.n_prompt = 4;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);
	bad_item = items3[0];
	bad_item.lp.k = LOOM_MAX_LOGPROBS + 1;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);
	bad_item = items3[0];
	bad_item.lp.top_ids = NULL;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);

	/* too many logit_bias entries, too many top logprobs asked */
	sample(0, &m);
	m.u.submit.sampling.n_bias = LOOM_MAX_LOGIT_BIAS + 1;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);
	sample(0, &m);
	m.u.submit.sampling.prompt_top_logprobs = LOOM_MAX_LOGPROBS + 1;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);
	/* an unknown guide kind, a guide text past LOOM_MAX_GUIDE */
	sample(0, &m);
	m.u.submit.sampling.guide = LOOM_GUIDE_MAX + 1;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);
	sample(0, &m);
	char *huge = loom_malloc(LOOM_MAX_GUIDE + 1);
	memset(huge, 'a', LOOM_MAX_GUIDE);
	huge[LOOM_MAX_GUIDE] = '\0';
	m.u.submit.sampling.guide_text = huge;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);
	loom_free(huge);

	memset(&m, 0, sizeof m);
	m.type = 42;
	assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_EINVAL);
}

/* ---------------------------------------------------------------- */
/* strict decoding of hand-made bad messages                         */
/* ---------------------------------------------------------------- */

typedef struct packbuf {
	msgpack_sbuffer sb;
	msgpack_packer pk;
} packbuf;

static void pb_init(packbuf *p)
{
	msgpack_sbuffer_init(&p->sb);
	msgpack_packer_init(&p->pk, &p->sb, msgpack_sbuffer_write);
}

static void pk_str(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

/* Decodes p's bytes, expects LOOM_EPROTO with needle in the message. */
static void expect_reject(packbuf *p, const char *needle)
{
	loom_msg d;
	loom_err rc = loom_msg_decode(p->sb.data, p->sb.size, &d);
	if (rc != LOOM_EPROTO || (needle && !strstr(loom_errmsg(), needle)))
		fail_msg("expected EPROTO mentioning '%s', got %d: %s", needle ? needle : "",
			 (int)rc, loom_errmsg());
	assert_int_equal(d.type, 0);
	msgpack_sbuffer_destroy(&p->sb);
}

/* A CANCEL/PING-shaped message with the given head. */
static void test_bad_head(void **state)
{
	(void)state;
	packbuf p;
	loom_msg d;
	const uint8_t nil = 0xc0;

	assert_int_equal(loom_msg_decode("", 0, &d), LOOM_EPROTO);
	assert_int_equal(loom_msg_decode(&nil, 1, &d), LOOM_EPROTO);
	assert_non_null(strstr(loom_errmsg(), "array"));

	/* unknown type codes */
	const uint64_t types[] = { 0, 13, 255, 256, UINT64_MAX };
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		pb_init(&p);
		msgpack_pack_array(&p.pk, 3);
		msgpack_pack_uint64(&p.pk, types[i]);
		msgpack_pack_uint32(&p.pk, LOOM_PROTO_VERSION);
		msgpack_pack_uint64(&p.pk, 1);
		expect_reject(&p, "unknown message type");
	}
	/* type as a string */
	pb_init(&p);
	msgpack_pack_array(&p.pk, 3);
	pk_str(&p.pk, "PING", 4);
	msgpack_pack_uint32(&p.pk, LOOM_PROTO_VERSION);
	msgpack_pack_uint64(&p.pk, 1);
	expect_reject(&p, "type");
	/* negative type */
	pb_init(&p);
	msgpack_pack_array(&p.pk, 3);
	msgpack_pack_int32(&p.pk, -3);
	msgpack_pack_uint32(&p.pk, LOOM_PROTO_VERSION);
	msgpack_pack_uint64(&p.pk, 1);
	expect_reject(&p, "type");
	/* wrong version */
	pb_init(&p);
	msgpack_pack_array(&p.pk, 3);
	msgpack_pack_uint32(&p.pk, LOOM_MSG_PING);
	msgpack_pack_uint32(&p.pk, LOOM_PROTO_VERSION + 1);
	msgpack_pack_uint64(&p.pk, 1);
	expect_reject(&p, "version");
	/* wrong arity: too few, too many, head only */
	for (int n = 1; n <= 4; n++) {
		if (n == 3)
			continue;
		pb_init(&p);
		msgpack_pack_array(&p.pk, n);
		msgpack_pack_uint32(&p.pk, LOOM_MSG_PING);
		for (int k = 1; k < n; k++)
			msgpack_pack_uint32(&p.pk, k == 1 ? LOOM_PROTO_VERSION : 5);
		expect_reject(&p, NULL);
	}
	/* a map instead of an array */
	pb_init(&p);
	msgpack_pack_map(&p.pk, 1);
	msgpack_pack_uint32(&p.pk, 3);
	msgpack_pack_uint32(&p.pk, 1);
	expect_reject(&p, "array");
}

static void test_bad_fields(void **state)
{
	(void)state;
	packbuf p;
	char longname[LOOM_NAME_MAX + 1];

	memset(longname, 'n', sizeof longname);

	/* PING seq negative, float, string */
	for (int v = 0; v < 3; v++) {
		pb_init(&p);
		msgpack_pack_array(&p.pk, 3);
		msgpack_pack_uint32(&p.pk, LOOM_MSG_PING);
		msgpack_pack_uint32(&p.pk, LOOM_PROTO_VERSION);
		if (v == 0)
			msgpack_pack_int64(&p.pk, -1);
		else if (v == 1)
			msgpack_pack_double(&p.pk, 1.0);
		else
			pk_str(&p.pk, "1", 1);
		expect_reject(&p, "seq");
	}

	/* HELLO: worker_id of LOOM_NAME_MAX bytes (one too many), model name too
	 * long, a name with a NUL, backend too long, models not an array */
	for (int v = 0; v < 5; v++) {
		pb_init(&p);
		msgpack_pack_array(&p.pk, 8);
		msgpack_pack_uint32(&p.pk, LOOM_MSG_HELLO);
		msgpack_pack_uint32(&p.pk, LOOM_PROTO_VERSION);
		pk_str(&p.pk, longname, v == 0 ? LOOM_NAME_MAX : 3);
		pk_str(&p.pk, "cpu-cpu-cpu-cpu-cpu", v == 3 ? 16 : 3);
		msgpack_pack_uint32(&p.pk, 1);
		msgpack_pack_uint64(&p.pk, 0);
		msgpack_pack_uint64(&p.pk, 0);
		if (v == 4) {
			pk_str(&p.pk, "m", 1);
		} else {
			msgpack_pack_array(&p.pk, 1);
			if (v == 1)
				pk_str(&p.pk, longname, LOOM_NAME_MAX + 1);
			else if (v == 2)
				pk_str(&p.pk, "a\0b", 3);
			else
				pk_str(&p.pk, "m", 1);
		}
		static const char *const needles[] = { "worker_id", "models", "NUL", "backend",
						      "models" };
		expect_reject(&p, needles[v]);
	}

	/* SUBMIT variants: a wrong field in each position of the message */
	for (int v = 0; v < 11; v++) {
		pb_init(&p);
		msgpack_pack_array(&p.pk, 11);
		msgpack_pack_uint32(&p.pk, LOOM_MSG_SUBMIT);
		msgpack_pack_uint32(&p.pk, LOOM_PROTO_VERSION);
		msgpack_pack_uint64(&p.pk, 5);
		pk_str(&p.pk, longname, v == 0 ? LOOM_NAME_MAX : 4);
		if (v == 1)
			msgpack_pack_nil(&p.pk);
		else
			pk_str(&p.pk, "", 0);
		msgpack_pack_array(&p.pk, 2);
		msgpack_pack_int32(&p.pk, 1);
		if (v == 2)
			msgpack_pack_uint64(&p.pk, (uint64_t)INT32_MAX + 1);
		else if (v == 3)
			pk_str(&p.pk, "7", 1);
		else
			msgpack_pack_int32(&p.pk, 7);
		msgpack_pack_array(&p.pk, v == 4 ? 17 : 18);
		if (v == 5)
			msgpack_pack_int32(&p.pk, 0); /* temperature must be a float */
		else
			msgpack_pack_float(&p.pk, 0);
		msgpack_pack_float(&p.pk, 1);
		msgpack_pack_int32(&p.pk, 0);
		msgpack_pack_uint64(&p.pk, 1);
		msgpack_pack_uint32(&p.pk, 4);
		if (v == 6)
			msgpack_pack_int32(&p.pk, 1);
		else
			msgpack_pack_false(&p.pk);
		msgpack_pack_array(&p.pk, 0);
		for (int f = 0; f < 4; f++)
			msgpack_pack_float(&p.pk, 0);
		msgpack_pack_uint32(&p.pk, 0);
		msgpack_pack_array(&p.pk, 0);
		msgpack_pack_array(&p.pk, 0);
		msgpack_pack_int32(&p.pk, -1);
		msgpack_pack_int32(&p.pk, -1);
		msgpack_pack_uint32(&p.pk, 0);
		if (v != 4)
			pk_str(&p.pk, "", 0);
		pk_str(&p.pk, "", 0);
		if (v == 7)
			msgpack_pack_int64(&p.pk, -5);
		else
			msgpack_pack_uint32(&p.pk, 0);
		if (v == 8)
			msgpack_pack_uint64(&p.pk, (uint64_t)UINT32_MAX + 1);
		else
			msgpack_pack_uint32(&p.pk, 0);
		if (v == 9)
			pk_str(&p.pk, "0", 1);            /* n_generated must be an integer */
		else
			msgpack_pack_uint32(&p.pk, v == 10 ? 3 : 0); /* 3 > the 2 prompt ids */
		static const char *const needles[] = { "model", "adapter", "prompt_ids",
						      "prompt_ids", "sampling", "temperature",
						      "ignore_eos", "ttft_deadline_ms",
						      "tpot_target_ms", "n_generated",
						      "n_generated" };
		expect_reject(&p, needles[v]);
	}

	/* STEP: finish out of range, item of wrong arity, ids not an array,
	 * more cached tokens than prompt tokens */
	for (int v = 0; v < 4; v++) {
		pb_init(&p);
		msgpack_pack_array(&p.pk, 3);
		msgpack_pack_uint32(&p.pk, LOOM_MSG_STEP);
		msgpack_pack_uint32(&p.pk, LOOM_PROTO_VERSION);
		msgpack_pack_array(&p.pk, 2);
		msgpack_pack_array(&p.pk, 7);
		msgpack_pack_uint64(&p.pk, 1);
		msgpack_pack_array(&p.pk, 0);
		msgpack_pack_uint32(&p.pk, 0);
		msgpack_pack_uint32(&p.pk, 3);
		msgpack_pack_nil(&p.pk);
		msgpack_pack_nil(&p.pk);
		msgpack_pack_uint32(&p.pk, 3);
		msgpack_pack_array(&p.pk, v == 1 ? 6 : 7);
		msgpack_pack_uint64(&p.pk, 2);
		if (v == 2)
			msgpack_pack_uint32(&p.pk, 5);
		else
			msgpack_pack_array(&p.pk, 0);
		msgpack_pack_uint32(&p.pk, v == 0 ? 4 : 0);
		msgpack_pack_uint32(&p.pk, 3);
		msgpack_pack_nil(&p.pk);
		if (v != 1)
			msgpack_pack_nil(&p.pk);
		msgpack_pack_uint32(&p.pk, v == 3 ? 4 : 0);
		static const char *const needles[] = { "finish", "items", "ids", "n_cached" };
		expect_reject(&p, needles[v]);
	}

	/* STEP item logprobs: k > 20, top entries not n*k, n != n_ids, empty
	 * instead of nil, a string where floats go; SUBMIT: bias lengths differ,
	 * logprobs ask out of range, an unknown guide kind, a guide text that is
	 * not a string or holds a NUL */
	for (int v = 0; v < 10; v++) {
		pb_init(&p);
		if (v < 5) {
			msgpack_pack_array(&p.pk, 3);
			msgpack_pack_uint32(&p.pk, LOOM_MSG_STEP);
			msgpack_pack_uint32(&p.pk, LOOM_PROTO_VERSION);
			msgpack_pack_array(&p.pk, 1);
			msgpack_pack_array(&p.pk, 7);
			msgpack_pack_uint64(&p.pk, 1);
			msgpack_pack_array(&p.pk, 1);
			msgpack_pack_int32(&p.pk, 4);
			msgpack_pack_uint32(&p.pk, 0);
			msgpack_pack_uint32(&p.pk, 3);
			msgpack_pack_array(&p.pk, 4);
			msgpack_pack_uint32(&p.pk, v == 0 ? 21 : 1);
			msgpack_pack_array(&p.pk, v == 2 ? 2 : v == 3 ? 0 : 1);
			for (int i = 0; i < (v == 2 ? 2 : v == 3 ? 0 : 1); i++) {
				if (v == 4)
					pk_str(&p.pk, "x", 1);
				else
					msgpack_pack_float(&p.pk, -1);
			}
			int nt = v == 1 ? 2 : v == 2 ? 2 : v == 3 ? 0 : 1;
			msgpack_pack_array(&p.pk, nt);
			for (int i = 0; i < nt; i++)
				msgpack_pack_int32(&p.pk, i);
			msgpack_pack_array(&p.pk, nt);
			for (int i = 0; i < nt; i++)
				msgpack_pack_float(&p.pk, -1);
			msgpack_pack_nil(&p.pk);
			msgpack_pack_uint32(&p.pk, 0);
			expect_reject(&p, "lp");
			continue;
		}
		msgpack_pack_array(&p.pk, 11);
		msgpack_pack_uint32(&p.pk, LOOM_MSG_SUBMIT);
		msgpack_pack_uint32(&p.pk, LOOM_PROTO_VERSION);
		msgpack_pack_uint64(&p.pk, 5);
		pk_str(&p.pk, "m", 1);
		pk_str(&p.pk, "", 0);
		msgpack_pack_array(&p.pk, 1);
		msgpack_pack_int32(&p.pk, 1);
		msgpack_pack_array(&p.pk, 18);
		msgpack_pack_float(&p.pk, 0);
		msgpack_pack_float(&p.pk, 1);
		msgpack_pack_int32(&p.pk, 0);
		msgpack_pack_uint64(&p.pk, 1);
		msgpack_pack_uint32(&p.pk, 4);
		msgpack_pack_false(&p.pk);
		msgpack_pack_array(&p.pk, 0);
		for (int f = 0; f < 4; f++)
			msgpack_pack_float(&p.pk, 0);
		msgpack_pack_uint32(&p.pk, 0);
		msgpack_pack_array(&p.pk, 2);
		msgpack_pack_int32(&p.pk, 1);
		msgpack_pack_int32(&p.pk, 2);
		msgpack_pack_array(&p.pk, v == 5 ? 1 : 2);
		msgpack_pack_float(&p.pk, 1);
		if (v != 5)
			msgpack_pack_float(&p.pk, 1);
		msgpack_pack_int32(&p.pk, v == 6 ? 21 : 3);
		msgpack_pack_int32(&p.pk, -1);
		msgpack_pack_uint32(&p.pk, v == 7 ? LOOM_GUIDE_MAX + 1 : LOOM_GUIDE_REGEX);
		if (v == 8)
			msgpack_pack_uint32(&p.pk, 1);
		else
			pk_str(&p.pk, v == 9 ? "a\0b" : "a+", v == 9 ? 3 : 2);
		pk_str(&p.pk, "", 0);
		for (int f = 0; f < 3; f++)
			msgpack_pack_uint32(&p.pk, 0);
		expect_reject(&p, v == 5 ? "bias" : v == 6 ? "logprobs" : v == 7 ? "guide" : "guide_text");
	}

	/* ERROR: message too long */
	{
		char *big = loom_malloc(LOOM_PROTO_MAX_STR);
		memset(big, 'e', LOOM_PROTO_MAX_STR);
		pb_init(&p);
		msgpack_pack_array(&p.pk, 5);
		msgpack_pack_uint32(&p.pk, LOOM_MSG_ERROR);
		msgpack_pack_uint32(&p.pk, LOOM_PROTO_VERSION);
		msgpack_pack_uint64(&p.pk, 1);
		msgpack_pack_uint32(&p.pk, 2);
		pk_str(&p.pk, big, LOOM_PROTO_MAX_STR);
		expect_reject(&p, "message");
		loom_free(big);
	}
}

/* Length headers claiming far more than the bytes present. */
static void test_huge_claims(void **state)
{
	(void)state;
	static const uint8_t cases[][12] = {
		{ 0xdd, 0xff, 0xff, 0xff, 0xff },                     /* array32 of 4G */
		{ 0x93, 0x03, 0x01, 0xdd, 0x10, 0, 0, 0 },             /* nested array of 256M */
		{ 0xdf, 0xff, 0xff, 0xff, 0xff },                     /* map32 */
		{ 0xdb, 0xff, 0xff, 0xff, 0xff, 'a' },                /* str32 */
		{ 0xc6, 0x7f, 0xff, 0xff, 0xff },                     /* bin32 */
		{ 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01 },               /* ext32 */
		{ 0x93, 0x05, 0x01, 0xdc, 0xff, 0xff, 0x91 },          /* array16 */
	};
	static const size_t lens[] = { 5, 8, 5, 6, 5, 6, 7 };
	loom_msg d;

	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		assert_int_equal(loom_msg_decode(cases[i], lens[i], &d), LOOM_EPROTO);
		assert_int_equal(d.type, 0);
	}
	/* deep nesting */
	uint8_t deep[200];
	memset(deep, 0x91, sizeof deep);
	deep[sizeof deep - 1] = 0x01;
	assert_int_equal(loom_msg_decode(deep, sizeof deep, &d), LOOM_EPROTO);
}

static void test_truncated_and_trailing(void **state)
{
	(void)state;
	loom_msg m, d;

	for (int i = 0; sample(i, &m); i++) {
		void *buf;
		size_t len;
		assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_OK);
		for (size_t cut = 0; cut < len; cut++) {
			loom_err rc = loom_msg_decode(buf, cut, &d);
			if (rc != LOOM_EPROTO)
				fail_msg("sample %d cut at %zu of %zu: rc %d", i, cut, len, (int)rc);
			assert_int_equal(d.type, 0);
		}
		uint8_t *longer = loom_malloc(len + 3);
		memcpy(longer, buf, len);
		memcpy(longer + len, "\x01\x02\x03", 3);
		for (size_t extra = 1; extra <= 3; extra++) {
			assert_int_equal(loom_msg_decode(longer, len + extra, &d), LOOM_EPROTO);
			assert_non_null(strstr(loom_errmsg(), "trailing"));
		}
		loom_free(longer);
		loom_free(buf);
	}
}

/* ---------------------------------------------------------------- */
/* random input: an error or a valid message, never a crash          */
/* ---------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t x = rng_state += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

/* A decoded message must re-encode and decode to itself. */
static void check_valid(const loom_msg *d)
{
	void *buf;
	size_t len;
	loom_msg d2;

	assert_int_equal(loom_msg_encode(d, &buf, &len), LOOM_OK);
	assert_int_equal(loom_msg_decode(buf, len, &d2), LOOM_OK);
	assert_msg_equal(d, &d2);
	loom_msg_fini(&d2);
	loom_free(buf);
}

static int try_decode(const void *buf, size_t len)
{
	loom_msg d;
	loom_err rc = loom_msg_decode(buf, len, &d);
	if (rc == LOOM_OK) {
		check_valid(&d);
		loom_msg_fini(&d);
		return 1;
	}
	assert_int_equal(rc, LOOM_EPROTO);
	assert_int_equal(d.type, 0);
	assert_true(loom_errmsg()[0] != '\0');
	return 0;
}

static void test_random_buffers(void **state)
{
	(void)state;
	uint8_t buf[96];
	int ok = 0;

	rng_state = 12345;
	for (int n = 0; n < 5000; n++) {
		size_t len = rnd() % sizeof buf;
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)rnd();
		/* half the time look like a message head to get deeper */
		if (len >= 3 && (n & 1)) {
			buf[0] = 0x90 | (uint8_t)(rnd() % 11);
			buf[1] = (uint8_t)(1 + rnd() % 7);
			buf[2] = 0x01;
		}
		ok += try_decode(buf, len);
	}
	print_message("random buffers: %d of 5000 decoded\n", ok);
}

static void test_bit_flips(void **state)
{
	(void)state;
	loom_msg m;
	int ok = 0, total = 0;

	for (int i = 0; sample(i, &m); i++) {
		void *enc;
		size_t len;
		assert_int_equal(loom_msg_encode(&m, &enc, &len), LOOM_OK);
		uint8_t *b = loom_malloc(len);
		for (size_t bit = 0; bit < len * 8; bit++) {
			memcpy(b, enc, len);
			b[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			ok += try_decode(b, len);
			total++;
		}
		rng_state = 99 + (uint64_t)i;
		for (int k = 0; k < 200; k++) { /* random byte overwrites */
			memcpy(b, enc, len);
			for (int j = 0; j < 3; j++)
				b[rnd() % len] = (uint8_t)rnd();
			ok += try_decode(b, len);
			total++;
		}
		loom_free(b);
		loom_free(enc);
	}
	print_message("bit flips: %d of %d decoded\n", ok, total);
}

/* The N-th allocation failing inside decode gives ENOMEM and an empty message. */
static void test_alloc_failure(void **state)
{
	(void)state;
	loom_msg m, d;

	for (int i = 0; sample(i, &m); i++) {
		void *buf;
		size_t len;
		assert_int_equal(loom_msg_encode(&m, &buf, &len), LOOM_OK);
		for (long n = 1; n < 20; n++) {
			loom_alloc_fail_after(n);
			loom_err rc = loom_msg_decode(buf, len, &d);
			loom_alloc_fail_reset();
			if (rc == LOOM_OK) {
				assert_msg_equal(&m, &d);
				loom_msg_fini(&d);
				break;
			}
			assert_int_equal(rc, LOOM_ENOMEM);
			assert_int_equal(d.type, 0);
		}
		loom_free(buf);
		void *b2;
		size_t l2;
		loom_alloc_fail_after(1);
		loom_err rc = loom_msg_encode(&m, &b2, &l2);
		loom_alloc_fail_reset();
		assert_int_equal(rc, LOOM_ENOMEM);
		assert_null(b2);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip_all),
		cmocka_unit_test(test_big_arrays),
		cmocka_unit_test(test_type_names),
		cmocka_unit_test(test_encode_rejects),
		cmocka_unit_test(test_bad_head),
		cmocka_unit_test(test_bad_fields),
		cmocka_unit_test(test_huge_claims),
		cmocka_unit_test(test_truncated_and_trailing),
		cmocka_unit_test(test_random_buffers),
		cmocka_unit_test(test_bit_flips),
		cmocka_unit_test(test_alloc_failure),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
