/*
 * common/proto.c — msgpack encoding and strict decoding of loom_msg.
 *
 * Wire layout (every message is one msgpack array, [type, version, ...]):
 *   SUBMIT [1, v, req, model, adapter, [prompt_ids], sampling, slo_class,
 *           ttft_deadline_ms, tpot_target_ms, n_generated]
 *          sampling = [temperature, top_p, top_k, seed, max_tokens,
 *                      ignore_eos, [stop_ids], presence_penalty,
 *                      frequency_penalty, repetition_penalty, min_p,
 *                      min_tokens, [bias_ids], [bias (float)],
 *                      logprobs, prompt_logprobs, guide, guide_text]
 *          (logprobs / prompt_logprobs: -1 = none, else top_logprobs /
 *          prompt_top_logprobs, 0..LOOM_MAX_LOGPROBS; guide: loom_guide,
 *          guide_text: str, "" when none)
 *   CANCEL [2, v, req]
 *   PING   [3, v, seq]
 *   HELLO  [4, v, worker_id, backend, proto_version, ping_seq, device_mem,
 *           [model names]]
 *   STEP   [5, v, [[req, [ids], finish, n_prompt, lp, prompt_lp, n_cached], ...]]
 *          lp, prompt_lp = nil (none) or [k, [logprob], [top ids], [top logprob]]
 *          with n logprobs and n*k top entries (n >= 1)
 *   ERROR  [6, v, req, code, message]
 *   STATS  [7, v, queued, running, queued_tokens, kv_free, kv_total,
 *           step_ms, steps, tokens_out, fit_a_ms, fit_b_ms, queued_tokens_slo,
 *           prompt_tokens, cached_tokens, cached_blocks,
 *           [[model, prompt_tokens, cached_tokens, cached_blocks], ...]]
 *   ADAPTER [8, v, name, base_model, path, sha]
 *   MODEL  [9, v, name, path, sha, tokenizer_sha]
 *   FETCH  [10, v, sha, offset]
 *   BLOB   [11, v, sha, offset, total, bin]
 *   RESIDENCY [12, v, [[kind, tier, name, sha, bytes], ...], host_bytes,
 *           host_budget, device_bytes, device_budget, model_bytes,
 *           model_budget, host_hits, host_misses, device_hits,
 *           device_misses, cold_loads, cold_load_ms (float64)]
 * A sha is "" or 64 lowercase hex digits.
 * Unsigned fields are msgpack unsigned ints, token ids signed ints (int32
 * range), floats float32 on the wire (float64 accepted), strings str.
 *
 * Decoding first walks the raw bytes (prescan) so that no length header can
 * claim more elements than there are bytes left: msgpack-c allocates an
 * array's element table from its header before reading the elements, and a
 * 5-byte message could otherwise ask for tens of GiB. Then msgpack_unpack_next
 * builds the object tree in a zone and the fields are copied out (never
 * pointing into the input).
 */
#include "proto.h"

#include <inttypes.h>
#include <msgpack.h>
#include <string.h>

#include "alloc.h"

/* Arity (array length including type and version) per message type. */
enum {
	ARITY_SUBMIT = 11,
	ARITY_CANCEL = 3,
	ARITY_PING = 3,
	ARITY_HELLO = 8,
	ARITY_STEP = 3,
	ARITY_ERROR = 5,
	ARITY_STATS = 17,
	ARITY_PREFIX_MODEL = 4,
	ARITY_ADAPTER = 6,
	ARITY_MODEL = 6,
	ARITY_FETCH = 4,
	ARITY_BLOB = 6,
	ARITY_RESIDENCY = 15,
	ARITY_RESIDENT = 5,
	ARITY_SAMPLING = 18,
	ARITY_ITEM = 7,
	ARITY_LOGPROBS = 4,
};

const char *loom_msg_type_name(int type)
{
	switch (type) {
	case LOOM_MSG_SUBMIT: return "SUBMIT";
	case LOOM_MSG_CANCEL: return "CANCEL";
	case LOOM_MSG_PING: return "PING";
	case LOOM_MSG_HELLO: return "HELLO";
	case LOOM_MSG_STEP: return "STEP";
	case LOOM_MSG_ERROR: return "ERROR";
	case LOOM_MSG_STATS: return "STATS";
	case LOOM_MSG_ADAPTER: return "ADAPTER";
	case LOOM_MSG_MODEL: return "MODEL";
	case LOOM_MSG_FETCH: return "FETCH";
	case LOOM_MSG_BLOB: return "BLOB";
	case LOOM_MSG_RESIDENCY: return "RESIDENCY";
	}
	return "?";
}

/* ------------------------------------------------------------------ */
/* sampling arrays                                                     */
/* ------------------------------------------------------------------ */

static void *dup_array(const void *p, size_t n, size_t size, bool *fail)
{
	void *q;

	if (!n || !p)
		return NULL;
	if (!(q = loom_malloc(n * size))) {
		*fail = true;
		return NULL;
	}
	memcpy(q, p, n * size);
	return q;
}

loom_err loom_sampling_copy(loom_sampling *dst, const loom_sampling *src)
{
	bool fail = false;

	*dst = *src;
	dst->stop_ids = dup_array(src->stop_ids, src->n_stop_ids, sizeof *src->stop_ids, &fail);
	dst->bias_ids = dup_array(src->bias_ids, src->n_bias, sizeof *src->bias_ids, &fail);
	dst->bias = dup_array(src->bias, src->n_bias, sizeof *src->bias, &fail);
	dst->guide_text = NULL;
	if (src->guide_text && !(dst->guide_text = loom_strdup(src->guide_text)))
		fail = true;
	if (fail) {
		loom_sampling_fini(dst);
		return loom_fail(LOOM_ENOMEM, "out of memory copying sampling parameters");
	}
	return LOOM_OK;
}

void loom_sampling_fini(loom_sampling *s)
{
	loom_free(s->stop_ids);
	loom_free(s->bias_ids);
	loom_free(s->bias);
	loom_free(s->guide_text);
	s->guide_text = NULL;
	s->guide = LOOM_GUIDE_NONE;
	s->stop_ids = NULL;
	s->bias_ids = NULL;
	s->bias = NULL;
	s->n_stop_ids = s->n_bias = 0;
}

static void logprobs_fini(loom_logprobs *l)
{
	loom_free(l->lp);
	loom_free(l->top_ids);
	loom_free(l->top_lp);
	memset(l, 0, sizeof *l);
}

/* ------------------------------------------------------------------ */
/* encoding                                                            */
/* ------------------------------------------------------------------ */

/* Checks a fixed char[cap] field holds a NUL within cap bytes. */
static loom_err check_name(const char *s, size_t cap, const char *msg, const char *field)
{
	if (strnlen(s, cap) >= cap)
		return loom_fail(LOOM_EINVAL, "proto: %s.%s is not NUL-terminated within %zu bytes",
				 msg, field, cap);
	return LOOM_OK;
}

static loom_err check_array(const void *p, uint32_t n, uint32_t max, const char *msg,
			    const char *field)
{
	if (n > max)
		return loom_fail(LOOM_EINVAL, "proto: %s.%s has %" PRIu32 " entries (max %" PRIu32 ")",
				 msg, field, n, max);
	if (n && !p)
		return loom_fail(LOOM_EINVAL, "proto: %s.%s is NULL with %" PRIu32 " entries", msg,
				 field, n);
	return LOOM_OK;
}

/* A sha field: "" or exactly 64 lowercase hex digits. */
static int sha_ok(const char *s, size_t len)
{
	if (len == 0)
		return 1;
	if (len != LOOM_SHA_HEX - 1)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

static loom_err check_sha(const char *s, const char *msg, const char *field)
{
	size_t n = strnlen(s, LOOM_SHA_HEX);
	if (n >= LOOM_SHA_HEX || !sha_ok(s, n))
		return loom_fail(LOOM_EINVAL, "proto: %s.%s is not \"\" or 64 lowercase hex digits",
				 msg, field);
	return LOOM_OK;
}

static loom_err check_text(const char *s, const char *msg, const char *field)
{
	if (strnlen(s ? s : "", LOOM_PROTO_MAX_STR) >= LOOM_PROTO_MAX_STR)
		return loom_fail(LOOM_EINVAL, "proto: %s.%s longer than %d bytes", msg, field,
				 LOOM_PROTO_MAX_STR - 1);
	return LOOM_OK;
}

static int pack_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, s, n);
}

static int pack_ids(msgpack_packer *pk, const int32_t *ids, uint32_t n)
{
	int r = msgpack_pack_array(pk, n);
	for (uint32_t i = 0; i < n && !r; i++)
		r = msgpack_pack_int32(pk, ids[i]);
	return r;
}

static int pack_floats(msgpack_packer *pk, const float *v, uint32_t n)
{
	int r = msgpack_pack_array(pk, n);
	for (uint32_t i = 0; i < n && !r; i++)
		r = msgpack_pack_float(pk, v[i]);
	return r;
}

/* -1 = none, else the number of alternatives */
static int pack_lp_ask(msgpack_packer *pk, bool on, uint32_t k)
{
	return on ? msgpack_pack_int32(pk, (int32_t)k) : msgpack_pack_int32(pk, -1);
}

static int pack_logprobs(msgpack_packer *pk, const loom_logprobs *l)
{
	int r;

	if (l->n == 0)
		return msgpack_pack_nil(pk);
	r = msgpack_pack_array(pk, ARITY_LOGPROBS);
	r |= msgpack_pack_uint32(pk, l->k);
	r |= pack_floats(pk, l->lp, l->n);
	r |= pack_ids(pk, l->top_ids, l->n * l->k);
	r |= pack_floats(pk, l->top_lp, l->n * l->k);
	return r;
}

static loom_err check_logprobs(const loom_logprobs *l, const char *msg, const char *field)
{
	loom_err rc;

	if (l->n == 0)
		return LOOM_OK;
	if (l->k > LOOM_MAX_LOGPROBS)
		return loom_fail(LOOM_EINVAL, "proto: %s.%s has %" PRIu32 " alternatives (max %d)",
				 msg, field, l->k, LOOM_MAX_LOGPROBS);
	if ((uint64_t)l->n * (l->k + 1) > LOOM_PROTO_MAX_IDS)
		return loom_fail(LOOM_EINVAL, "proto: %s.%s has too many entries", msg, field);
	if ((rc = check_array(l->lp, l->n, LOOM_PROTO_MAX_IDS, msg, field)) ||
	    (rc = check_array(l->top_ids, l->n * l->k, LOOM_PROTO_MAX_IDS, msg, field)) ||
	    (rc = check_array(l->top_lp, l->n * l->k, LOOM_PROTO_MAX_IDS, msg, field)))
		return rc;
	return LOOM_OK;
}

static loom_err validate(const loom_msg *m)
{
	loom_err rc = LOOM_OK;
	const char *t = loom_msg_type_name(m->type);

	switch (m->type) {
	case LOOM_MSG_SUBMIT: {
		const loom_msg_submit *s = &m->u.submit;
		if ((rc = check_name(s->model, sizeof s->model, t, "model")) ||
		    (rc = check_name(s->adapter, sizeof s->adapter, t, "adapter")) ||
		    (rc = check_name(s->slo_class, sizeof s->slo_class, t, "slo_class")) ||
		    (rc = check_array(s->prompt_ids, s->n_prompt, LOOM_PROTO_MAX_IDS, t,
				      "prompt_ids")) ||
		    (rc = check_array(s->sampling.stop_ids, s->sampling.n_stop_ids,
				      LOOM_PROTO_MAX_IDS, t, "sampling.stop_ids")) ||
		    (rc = check_array(s->sampling.bias_ids, s->sampling.n_bias,
				      LOOM_MAX_LOGIT_BIAS, t, "sampling.bias_ids")) ||
		    (rc = check_array(s->sampling.bias, s->sampling.n_bias,
				      LOOM_MAX_LOGIT_BIAS, t, "sampling.bias")))
			return rc;
		if (s->sampling.guide > LOOM_GUIDE_MAX ||
		    (s->sampling.guide_text &&
		     strnlen(s->sampling.guide_text, LOOM_MAX_GUIDE) >= LOOM_MAX_GUIDE))
			return loom_fail(LOOM_EINVAL, "proto: SUBMIT guide %u or its text (limit %u "
					 "bytes) out of range", s->sampling.guide, LOOM_MAX_GUIDE - 1);
		if (s->sampling.top_logprobs > LOOM_MAX_LOGPROBS ||
		    s->sampling.prompt_top_logprobs > LOOM_MAX_LOGPROBS)
			return loom_fail(LOOM_EINVAL, "proto: SUBMIT asks for more than %d top logprobs",
					 LOOM_MAX_LOGPROBS);
		if (s->n_generated > s->n_prompt)
			return loom_fail(LOOM_EINVAL, "proto: SUBMIT.n_generated %" PRIu32
					 " exceeds n_prompt %" PRIu32, s->n_generated, s->n_prompt);
		break;
	}
	case LOOM_MSG_CANCEL:
	case LOOM_MSG_PING:
		break;
	case LOOM_MSG_STATS: {
		const loom_msg_stats *s = &m->u.stats;
		if ((rc = check_array(s->models, s->n_models, LOOM_PROTO_MAX_ITEMS, t, "models")))
			return rc;
		for (uint32_t i = 0; i < s->n_models; i++)
			if ((rc = check_name(s->models[i].name, LOOM_NAME_MAX, t, "models[].name")))
				return rc;
		break;
	}
	case LOOM_MSG_HELLO: {
		const loom_msg_hello *h = &m->u.hello;
		if ((rc = check_name(h->worker_id, sizeof h->worker_id, t, "worker_id")) ||
		    (rc = check_name(h->backend, sizeof h->backend, t, "backend")) ||
		    (rc = check_array(h->models, h->n_models, LOOM_PROTO_MAX_ITEMS, t, "models")))
			return rc;
		for (uint32_t i = 0; i < h->n_models; i++)
			if ((rc = check_name(h->models[i], LOOM_NAME_MAX, t, "models[]")))
				return rc;
		break;
	}
	case LOOM_MSG_STEP: {
		const loom_msg_step *s = &m->u.step;
		if ((rc = check_array(s->items, s->n_items, LOOM_PROTO_MAX_ITEMS, t, "items")))
			return rc;
		for (uint32_t i = 0; i < s->n_items; i++) {
			if ((rc = check_array(s->items[i].ids, s->items[i].n_ids, LOOM_PROTO_MAX_IDS,
					      t, "items[].ids")))
				return rc;
			if (s->items[i].finish > LOOM_FINISH_ABORT)
				return loom_fail(LOOM_EINVAL, "proto: STEP.items[%" PRIu32
						 "].finish %u is not a loom_finish",
						 i, s->items[i].finish);
			if ((rc = check_logprobs(&s->items[i].lp, t, "items[].lp")) ||
			    (rc = check_logprobs(&s->items[i].prompt_lp, t, "items[].prompt_lp")))
				return rc;
			if ((s->items[i].lp.n && s->items[i].lp.n != s->items[i].n_ids) ||
			    (s->items[i].prompt_lp.n &&
			     s->items[i].prompt_lp.n + 1 != s->items[i].n_prompt))
				return loom_fail(LOOM_EINVAL, "proto: STEP.items[%" PRIu32 "]: logprobs "
						 "for %" PRIu32 " ids / %" PRIu32 " prompt tokens do not "
						 "match", i, s->items[i].lp.n, s->items[i].prompt_lp.n);
		}
		break;
	}
	case LOOM_MSG_ADAPTER: {
		const loom_msg_adapter *a = &m->u.adapter;
		const char *path = a->path ? a->path : "";
		if ((rc = check_name(a->name, sizeof a->name, t, "name")) ||
		    (rc = check_name(a->base_model, sizeof a->base_model, t, "base_model")))
			return rc;
		if (strnlen(path, LOOM_PROTO_MAX_STR) >= LOOM_PROTO_MAX_STR)
			return loom_fail(LOOM_EINVAL, "proto: ADAPTER.path longer than %d bytes",
					 LOOM_PROTO_MAX_STR - 1);
		if ((rc = check_sha(a->sha, t, "sha")))
			return rc;
		break;
	}
	case LOOM_MSG_MODEL: {
		const loom_msg_model *mm = &m->u.model;
		if ((rc = check_name(mm->name, sizeof mm->name, t, "name")) ||
		    (rc = check_text(mm->path, t, "path")) || (rc = check_sha(mm->sha, t, "sha")) ||
		    (rc = check_sha(mm->tokenizer_sha, t, "tokenizer_sha")))
			return rc;
		break;
	}
	case LOOM_MSG_FETCH:
		if ((rc = check_sha(m->u.fetch.sha, t, "sha")))
			return rc;
		break;
	case LOOM_MSG_BLOB: {
		const loom_msg_blob *b = &m->u.blob;
		if ((rc = check_sha(b->sha, t, "sha")) ||
		    (rc = check_array(b->data, b->len, LOOM_BLOB_CHUNK, t, "data")))
			return rc;
		if (b->offset > b->total || b->len > b->total - b->offset)
			return loom_fail(LOOM_EINVAL, "proto: BLOB chunk [%" PRIu64 ", +%" PRIu32
					 ") beyond its total %" PRIu64, b->offset, b->len, b->total);
		break;
	}
	case LOOM_MSG_RESIDENCY: {
		const loom_msg_residency *r = &m->u.residency;
		if ((rc = check_array(r->items, r->n, LOOM_PROTO_MAX_ITEMS, t, "items")))
			return rc;
		for (uint32_t i = 0; i < r->n; i++) {
			if ((rc = check_name(r->items[i].name, LOOM_NAME_MAX, t, "items[].name")) ||
			    (rc = check_sha(r->items[i].sha, t, "items[].sha")))
				return rc;
			if (r->items[i].kind > 1 || r->items[i].tier > LOOM_TIER_DEVICE)
				return loom_fail(LOOM_EINVAL, "proto: RESIDENCY.items[%" PRIu32
						 "] has kind %u tier %u", i, r->items[i].kind,
						 r->items[i].tier);
		}
		break;
	}
	case LOOM_MSG_ERROR: {
		const char *msg = m->u.error.message ? m->u.error.message : "";
		if (strnlen(msg, LOOM_PROTO_MAX_STR) >= LOOM_PROTO_MAX_STR)
			return loom_fail(LOOM_EINVAL, "proto: ERROR.message longer than %d bytes",
					 LOOM_PROTO_MAX_STR - 1);
		break;
	}
	default:
		return loom_fail(LOOM_EINVAL, "proto: cannot encode unknown message type %d",
				 (int)m->type);
	}
	return LOOM_OK;
}

static int pack_body(msgpack_packer *pk, const loom_msg *m)
{
	int r = 0;

	switch (m->type) {
	case LOOM_MSG_SUBMIT: {
		const loom_msg_submit *s = &m->u.submit;
		const loom_sampling *sp = &s->sampling;
		r |= msgpack_pack_array(pk, ARITY_SUBMIT);
		r |= msgpack_pack_uint32(pk, m->type);
		r |= msgpack_pack_uint32(pk, LOOM_PROTO_VERSION);
		r |= msgpack_pack_uint64(pk, s->req);
		r |= pack_str(pk, s->model);
		r |= pack_str(pk, s->adapter);
		r |= pack_ids(pk, s->prompt_ids, s->n_prompt);
		r |= msgpack_pack_array(pk, ARITY_SAMPLING);
		r |= msgpack_pack_float(pk, sp->temperature);
		r |= msgpack_pack_float(pk, sp->top_p);
		r |= msgpack_pack_int32(pk, sp->top_k);
		r |= msgpack_pack_uint64(pk, sp->seed);
		r |= msgpack_pack_uint32(pk, sp->max_tokens);
		r |= sp->ignore_eos ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
		r |= pack_ids(pk, sp->stop_ids, sp->n_stop_ids);
		r |= msgpack_pack_float(pk, sp->presence_penalty);
		r |= msgpack_pack_float(pk, sp->frequency_penalty);
		r |= msgpack_pack_float(pk, sp->repetition_penalty);
		r |= msgpack_pack_float(pk, sp->min_p);
		r |= msgpack_pack_uint32(pk, sp->min_tokens);
		r |= pack_ids(pk, sp->bias_ids, sp->n_bias);
		r |= pack_floats(pk, sp->bias, sp->n_bias);
		r |= pack_lp_ask(pk, sp->logprobs, sp->top_logprobs);
		r |= pack_lp_ask(pk, sp->prompt_logprobs, sp->prompt_top_logprobs);
		r |= msgpack_pack_uint32(pk, sp->guide);
		r |= pack_str(pk, sp->guide_text ? sp->guide_text : "");
		r |= pack_str(pk, s->slo_class);
		r |= msgpack_pack_uint32(pk, s->ttft_deadline_ms);
		r |= msgpack_pack_uint32(pk, s->tpot_target_ms);
		r |= msgpack_pack_uint32(pk, s->n_generated);
		break;
	}
	case LOOM_MSG_CANCEL:
	case LOOM_MSG_PING:
		r |= msgpack_pack_array(pk, ARITY_CANCEL);
		r |= msgpack_pack_uint32(pk, m->type);
		r |= msgpack_pack_uint32(pk, LOOM_PROTO_VERSION);
		r |= msgpack_pack_uint64(pk, m->type == LOOM_MSG_PING ? m->u.ping.seq
								       : m->u.cancel.req);
		break;
	case LOOM_MSG_HELLO: {
		const loom_msg_hello *h = &m->u.hello;
		r |= msgpack_pack_array(pk, ARITY_HELLO);
		r |= msgpack_pack_uint32(pk, m->type);
		r |= msgpack_pack_uint32(pk, LOOM_PROTO_VERSION);
		r |= pack_str(pk, h->worker_id);
		r |= pack_str(pk, h->backend);
		r |= msgpack_pack_uint32(pk, h->proto_version);
		r |= msgpack_pack_uint64(pk, h->ping_seq);
		r |= msgpack_pack_uint64(pk, h->device_mem);
		r |= msgpack_pack_array(pk, h->n_models);
		for (uint32_t i = 0; i < h->n_models && !r; i++)
			r |= pack_str(pk, h->models[i]);
		break;
	}
	case LOOM_MSG_STEP: {
		const loom_msg_step *s = &m->u.step;
		r |= msgpack_pack_array(pk, ARITY_STEP);
		r |= msgpack_pack_uint32(pk, m->type);
		r |= msgpack_pack_uint32(pk, LOOM_PROTO_VERSION);
		r |= msgpack_pack_array(pk, s->n_items);
		for (uint32_t i = 0; i < s->n_items && !r; i++) {
			const loom_step_item *it = &s->items[i];
			r |= msgpack_pack_array(pk, ARITY_ITEM);
			r |= msgpack_pack_uint64(pk, it->req);
			r |= pack_ids(pk, it->ids, it->n_ids);
			r |= msgpack_pack_uint8(pk, it->finish);
			r |= msgpack_pack_uint32(pk, it->n_prompt);
			r |= pack_logprobs(pk, &it->lp);
			r |= pack_logprobs(pk, &it->prompt_lp);
			r |= msgpack_pack_uint32(pk, it->n_cached);
		}
		break;
	}
	case LOOM_MSG_ERROR: {
		const loom_msg_error *e = &m->u.error;
		r |= msgpack_pack_array(pk, ARITY_ERROR);
		r |= msgpack_pack_uint32(pk, m->type);
		r |= msgpack_pack_uint32(pk, LOOM_PROTO_VERSION);
		r |= msgpack_pack_uint64(pk, e->req);
		r |= msgpack_pack_uint32(pk, e->code);
		r |= pack_str(pk, e->message ? e->message : "");
		break;
	}
	case LOOM_MSG_STATS: {
		const loom_msg_stats *s = &m->u.stats;
		r |= msgpack_pack_array(pk, ARITY_STATS);
		r |= msgpack_pack_uint32(pk, m->type);
		r |= msgpack_pack_uint32(pk, LOOM_PROTO_VERSION);
		r |= msgpack_pack_uint32(pk, s->queued);
		r |= msgpack_pack_uint32(pk, s->running);
		r |= msgpack_pack_uint64(pk, s->queued_tokens);
		r |= msgpack_pack_uint32(pk, s->kv_free);
		r |= msgpack_pack_uint32(pk, s->kv_total);
		r |= msgpack_pack_float(pk, s->step_ms);
		r |= msgpack_pack_uint64(pk, s->steps);
		r |= msgpack_pack_uint64(pk, s->tokens_out);
		r |= msgpack_pack_float(pk, s->fit_a_ms);
		r |= msgpack_pack_float(pk, s->fit_b_ms);
		r |= msgpack_pack_uint64(pk, s->queued_tokens_slo);
		r |= msgpack_pack_uint64(pk, s->prompt_tokens);
		r |= msgpack_pack_uint64(pk, s->cached_tokens);
		r |= msgpack_pack_uint32(pk, s->cached_blocks);
		r |= msgpack_pack_array(pk, s->n_models);
		for (uint32_t i = 0; i < s->n_models && !r; i++) {
			const loom_prefix_model *pm = &s->models[i];
			r |= msgpack_pack_array(pk, ARITY_PREFIX_MODEL);
			r |= pack_str(pk, pm->name);
			r |= msgpack_pack_uint64(pk, pm->prompt_tokens);
			r |= msgpack_pack_uint64(pk, pm->cached_tokens);
			r |= msgpack_pack_uint32(pk, pm->cached_blocks);
		}
		break;
	}
	case LOOM_MSG_ADAPTER: {
		const loom_msg_adapter *a = &m->u.adapter;
		r |= msgpack_pack_array(pk, ARITY_ADAPTER);
		r |= msgpack_pack_uint32(pk, m->type);
		r |= msgpack_pack_uint32(pk, LOOM_PROTO_VERSION);
		r |= pack_str(pk, a->name);
		r |= pack_str(pk, a->base_model);
		r |= pack_str(pk, a->path ? a->path : "");
		r |= pack_str(pk, a->sha);
		break;
	}
	case LOOM_MSG_MODEL: {
		const loom_msg_model *mm = &m->u.model;
		r |= msgpack_pack_array(pk, ARITY_MODEL);
		r |= msgpack_pack_uint32(pk, m->type);
		r |= msgpack_pack_uint32(pk, LOOM_PROTO_VERSION);
		r |= pack_str(pk, mm->name);
		r |= pack_str(pk, mm->path ? mm->path : "");
		r |= pack_str(pk, mm->sha);
		r |= pack_str(pk, mm->tokenizer_sha);
		break;
	}
	case LOOM_MSG_FETCH:
		r |= msgpack_pack_array(pk, ARITY_FETCH);
		r |= msgpack_pack_uint32(pk, m->type);
		r |= msgpack_pack_uint32(pk, LOOM_PROTO_VERSION);
		r |= pack_str(pk, m->u.fetch.sha);
		r |= msgpack_pack_uint64(pk, m->u.fetch.offset);
		break;
	case LOOM_MSG_BLOB: {
		const loom_msg_blob *b = &m->u.blob;
		r |= msgpack_pack_array(pk, ARITY_BLOB);
		r |= msgpack_pack_uint32(pk, m->type);
		r |= msgpack_pack_uint32(pk, LOOM_PROTO_VERSION);
		r |= pack_str(pk, b->sha);
		r |= msgpack_pack_uint64(pk, b->offset);
		r |= msgpack_pack_uint64(pk, b->total);
		r |= msgpack_pack_bin(pk, b->len);
		r |= msgpack_pack_bin_body(pk, b->data, b->len);
		break;
	}
	case LOOM_MSG_RESIDENCY: {
		const loom_msg_residency *rs = &m->u.residency;
		r |= msgpack_pack_array(pk, ARITY_RESIDENCY);
		r |= msgpack_pack_uint32(pk, m->type);
		r |= msgpack_pack_uint32(pk, LOOM_PROTO_VERSION);
		r |= msgpack_pack_array(pk, rs->n);
		for (uint32_t i = 0; i < rs->n && !r; i++) {
			const loom_resident *it = &rs->items[i];
			r |= msgpack_pack_array(pk, ARITY_RESIDENT);
			r |= msgpack_pack_uint8(pk, it->kind);
			r |= msgpack_pack_uint8(pk, it->tier);
			r |= pack_str(pk, it->name);
			r |= pack_str(pk, it->sha);
			r |= msgpack_pack_uint64(pk, it->bytes);
		}
		const uint64_t c[] = { rs->host_bytes, rs->host_budget, rs->device_bytes,
				       rs->device_budget, rs->model_bytes, rs->model_budget,
				       rs->host_hits, rs->host_misses, rs->device_hits,
				       rs->device_misses, rs->cold_loads };
		for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
			r |= msgpack_pack_uint64(pk, c[i]);
		r |= msgpack_pack_double(pk, rs->cold_load_ms);
		break;
	}
	}
	return r;
}

loom_err loom_msg_encode(const loom_msg *m, void **buf, size_t *len)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	loom_err rc;

	*buf = NULL;
	*len = 0;
	if ((rc = validate(m)))
		return rc;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (pack_body(&pk, m)) {
		rc = loom_fail(LOOM_ENOMEM, "proto: out of memory encoding %s",
			       loom_msg_type_name(m->type));
		goto out;
	}
	*buf = loom_malloc(sb.size ? sb.size : 1);
	if (!*buf) {
		rc = loom_fail(LOOM_ENOMEM, "proto: out of memory encoding %s (%zu bytes)",
			       loom_msg_type_name(m->type), sb.size);
		goto out;
	}
	memcpy(*buf, sb.data, sb.size);
	*len = sb.size;
out:
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* ------------------------------------------------------------------ */
/* decoding                                                            */
/* ------------------------------------------------------------------ */

/* Deepest container nesting accepted (messages use 4; msgpack-c allows 32). */
#define PRESCAN_DEPTH 9

static uint64_t be_read(const uint8_t *p, size_t n)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * Walks one msgpack object tree over p[0..len) without building it: every
 * str/bin/ext payload must fit in the bytes left, every array/map may only
 * claim as many elements as bytes remain (each element is >= 1 byte), and
 * the object must end exactly at len. Linear time, no allocation.
 */
static loom_err prescan(const uint8_t *p, size_t len)
{
	size_t left[PRESCAN_DEPTH]; /* elements still to read per open container */
	size_t pos = 0, pending = 1;
	int top = 1;

	if (len == 0)
		return loom_fail(LOOM_EPROTO, "proto: empty message");
	left[0] = 1;
	while (top) {
		size_t hdr = 0, skip = 0, kids = 0, extra = 0, mult = 1;
		uint8_t b;

		if (pos >= len)
			return loom_fail(LOOM_EPROTO, "proto: message truncated at byte %zu of %zu",
					 pos, len);
		b = p[pos++];
		pending--;
		left[top - 1]--;
		if (b <= 0x7f || b >= 0xe0) {
			/* fixint: no payload */
		} else if (b <= 0x8f) {
			kids = 2 * (size_t)(b & 0x0f);  /* fixmap */
		} else if (b <= 0x9f) {
			kids = b & 0x0f;                /* fixarray */
		} else if (b <= 0xbf) {
			skip = b & 0x1f;                /* fixstr */
		} else {
			switch (b) {
			case 0xc0: case 0xc2: case 0xc3: break;
			case 0xc4: case 0xd9: hdr = 1; break;           /* bin8, str8 */
			case 0xc5: case 0xda: hdr = 2; break;
			case 0xc6: case 0xdb: hdr = 4; break;
			case 0xc7: hdr = 1; extra = 1; break;           /* ext8: +type */
			case 0xc8: hdr = 2; extra = 1; break;
			case 0xc9: hdr = 4; extra = 1; break;
			case 0xca: skip = 4; break;
			case 0xcb: skip = 8; break;
			case 0xcc: case 0xd0: skip = 1; break;
			case 0xcd: case 0xd1: skip = 2; break;
			case 0xce: case 0xd2: skip = 4; break;
			case 0xcf: case 0xd3: skip = 8; break;
			case 0xd4: skip = 2; break;                     /* fixext1 */
			case 0xd5: skip = 3; break;
			case 0xd6: skip = 5; break;
			case 0xd7: skip = 9; break;
			case 0xd8: skip = 17; break;
			case 0xdc: hdr = 2; kids = 1; break;            /* array16 */
			case 0xdd: hdr = 4; kids = 1; break;
			case 0xde: hdr = 2; kids = 1; mult = 2; break;  /* map16 */
			case 0xdf: hdr = 4; kids = 1; mult = 2; break;
			default:
				return loom_fail(LOOM_EPROTO, "proto: invalid msgpack byte 0x%02x at %zu",
						 b, pos - 1);
			}
		}
		if (hdr) {
			uint64_t n;
			if (len - pos < hdr)
				return loom_fail(LOOM_EPROTO, "proto: message truncated at byte %zu of %zu",
						 pos, len);
			n = be_read(p + pos, hdr);
			pos += hdr;
			if (kids)
				kids = (size_t)n * mult;
			else
				skip = (size_t)n + extra;
		}
		if (skip > len - pos)
			return loom_fail(LOOM_EPROTO, "proto: message truncated: %zu-byte payload at %zu of %zu",
					 skip, pos, len);
		pos += skip;
		if (kids > len - pos || pending + kids > len - pos)
			return loom_fail(LOOM_EPROTO, "proto: message truncated: %zu elements claimed at %zu of %zu",
					 kids, pos, len);
		if (kids) {
			if (top == PRESCAN_DEPTH)
				return loom_fail(LOOM_EPROTO, "proto: message nested deeper than %d levels",
						 PRESCAN_DEPTH - 1);
			left[top++] = kids;
			pending += kids;
		}
		while (top && left[top - 1] == 0)
			top--;
	}
	if (pos != len)
		return loom_fail(LOOM_EPROTO, "proto: %zu trailing bytes after the message", len - pos);
	return LOOM_OK;
}

/* Decoding context: the message name for error text. */
typedef struct dctx {
	const char *msg;
} dctx;

static loom_err bad(const dctx *d, const char *field, const char *what)
{
	return loom_fail(LOOM_EPROTO, "proto: %s field '%s': %s", d->msg, field, what);
}

static loom_err get_u64(const dctx *d, const msgpack_object *o, const char *field, uint64_t *v)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return bad(d, field, "expected an unsigned integer");
	*v = o->via.u64;
	return LOOM_OK;
}

static loom_err get_u32(const dctx *d, const msgpack_object *o, const char *field, uint32_t *v)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return bad(d, field, "expected an unsigned integer");
	if (o->via.u64 > UINT32_MAX)
		return bad(d, field, "integer does not fit 32 bits");
	*v = (uint32_t)o->via.u64;
	return LOOM_OK;
}

static loom_err get_i32(const dctx *d, const msgpack_object *o, const char *field, int32_t *v)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > INT32_MAX)
			return bad(d, field, "integer does not fit int32");
		*v = (int32_t)o->via.u64;
	} else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		if (o->via.i64 < INT32_MIN)
			return bad(d, field, "integer does not fit int32");
		*v = (int32_t)o->via.i64;
	} else {
		return bad(d, field, "expected an integer");
	}
	return LOOM_OK;
}

static loom_err get_f32(const dctx *d, const msgpack_object *o, const char *field, float *v)
{
	if (o->type != MSGPACK_OBJECT_FLOAT32 && o->type != MSGPACK_OBJECT_FLOAT64)
		return bad(d, field, "expected a float");
	*v = (float)o->via.f64;
	return LOOM_OK;
}

static loom_err get_bool(const dctx *d, const msgpack_object *o, const char *field, bool *v)
{
	if (o->type != MSGPACK_OBJECT_BOOLEAN)
		return bad(d, field, "expected a boolean");
	*v = o->via.boolean;
	return LOOM_OK;
}

/* Copies a str into dst[cap] (NUL-terminated); longer than cap-1 or holding
 * a NUL byte is an error. */
static loom_err get_name(const dctx *d, const msgpack_object *o, const char *field, char *dst,
			 size_t cap)
{
	if (o->type != MSGPACK_OBJECT_STR)
		return bad(d, field, "expected a string");
	if (o->via.str.size >= cap)
		return loom_fail(LOOM_EPROTO, "proto: %s field '%s': string of %" PRIu32
				 " bytes exceeds the limit of %zu",
				 d->msg, field, o->via.str.size, cap - 1);
	/* msgpack-c leaves ptr NULL for an empty string: never hand it to mem*() */
	if (o->via.str.size && memchr(o->via.str.ptr, '\0', o->via.str.size))
		return bad(d, field, "string contains a NUL byte");
	if (o->via.str.size)
		memcpy(dst, o->via.str.ptr, o->via.str.size);
	dst[o->via.str.size] = '\0';
	return LOOM_OK;
}

static loom_err get_ids(const dctx *d, const msgpack_object *o, const char *field, uint32_t *n,
			int32_t **ids)
{
	loom_err rc;

	if (o->type != MSGPACK_OBJECT_ARRAY)
		return bad(d, field, "expected an array of token ids");
	if (o->via.array.size > LOOM_PROTO_MAX_IDS)
		return bad(d, field, "too many token ids");
	*n = 0;
	*ids = NULL;
	if (o->via.array.size == 0)
		return LOOM_OK;
	*ids = loom_malloc(o->via.array.size * sizeof **ids);
	if (!*ids)
		return loom_fail(LOOM_ENOMEM, "proto: %s field '%s': out of memory", d->msg, field);
	*n = o->via.array.size;
	for (uint32_t i = 0; i < o->via.array.size; i++)
		if ((rc = get_i32(d, &o->via.array.ptr[i], field, &(*ids)[i])))
			return rc;
	return LOOM_OK;
}

static loom_err get_floats(const dctx *d, const msgpack_object *o, const char *field,
			   uint32_t max, uint32_t *n, float **v)
{
	loom_err rc;

	if (o->type != MSGPACK_OBJECT_ARRAY)
		return bad(d, field, "expected an array of floats");
	if (o->via.array.size > max)
		return bad(d, field, "too many entries");
	*n = 0;
	*v = NULL;
	if (o->via.array.size == 0)
		return LOOM_OK;
	*v = loom_malloc(o->via.array.size * sizeof **v);
	if (!*v)
		return loom_fail(LOOM_ENOMEM, "proto: %s field '%s': out of memory", d->msg, field);
	*n = o->via.array.size;
	for (uint32_t i = 0; i < o->via.array.size; i++)
		if ((rc = get_f32(d, &o->via.array.ptr[i], field, &(*v)[i])))
			return rc;
	return LOOM_OK;
}

/* A logprobs request: -1 (none) or 0..LOOM_MAX_LOGPROBS alternatives. */
static loom_err get_lp_ask(const dctx *d, const msgpack_object *o, const char *field, bool *on,
			   uint32_t *k)
{
	int32_t v = 0;
	loom_err rc = get_i32(d, o, field, &v);

	if (rc)
		return rc;
	if (v < -1 || v > LOOM_MAX_LOGPROBS)
		return bad(d, field, "must be -1 (none) or 0..20 alternatives");
	*on = v >= 0;
	*k = v >= 0 ? (uint32_t)v : 0;
	return LOOM_OK;
}

static const msgpack_object *sub_array(const dctx *d, const msgpack_object *o, const char *field,
				       uint32_t arity, loom_err *rc)
{
	if (o->type != MSGPACK_OBJECT_ARRAY) {
		*rc = bad(d, field, "expected an array");
		return NULL;
	}
	if (o->via.array.size != arity) {
		*rc = loom_fail(LOOM_EPROTO, "proto: %s field '%s': %" PRIu32
				" elements, expected %" PRIu32,
				d->msg, field, o->via.array.size, arity);
		return NULL;
	}
	return o->via.array.ptr;
}

/* The guide kind and its text (NULL for ""). */
static loom_err get_guide(const dctx *d, const msgpack_object *k, const msgpack_object *t,
			  loom_sampling *sp)
{
	uint32_t kind = 0;
	loom_err rc = get_u32(d, k, "sampling.guide", &kind);

	if (rc)
		return rc;
	if (kind > LOOM_GUIDE_MAX)
		return bad(d, "sampling.guide", "unknown guide kind");
	sp->guide = (uint8_t)kind;
	if (t->type != MSGPACK_OBJECT_STR)
		return bad(d, "sampling.guide_text", "expected a string");
	if (t->via.str.size >= LOOM_MAX_GUIDE)
		return bad(d, "sampling.guide_text", "longer than LOOM_MAX_GUIDE");
	if (!t->via.str.size)
		return LOOM_OK;
	if (memchr(t->via.str.ptr, '\0', t->via.str.size))
		return bad(d, "sampling.guide_text", "string contains a NUL byte");
	if (!(sp->guide_text = loom_strndup(t->via.str.ptr, t->via.str.size)))
		return loom_fail(LOOM_ENOMEM, "proto: %s field 'sampling.guide_text': out of memory",
				 d->msg);
	return LOOM_OK;
}

static loom_err dec_submit(const dctx *d, const msgpack_object *f, loom_msg_submit *s)
{
	const msgpack_object *sp;
	loom_err rc = LOOM_OK;
	uint32_t nb = 0;

	if ((rc = get_u64(d, &f[2], "req", &s->req)) ||
	    (rc = get_name(d, &f[3], "model", s->model, sizeof s->model)) ||
	    (rc = get_name(d, &f[4], "adapter", s->adapter, sizeof s->adapter)) ||
	    (rc = get_ids(d, &f[5], "prompt_ids", &s->n_prompt, &s->prompt_ids)))
		return rc;
	if (!(sp = sub_array(d, &f[6], "sampling", ARITY_SAMPLING, &rc)))
		return rc;
	if ((rc = get_f32(d, &sp[0], "sampling.temperature", &s->sampling.temperature)) ||
	    (rc = get_f32(d, &sp[1], "sampling.top_p", &s->sampling.top_p)) ||
	    (rc = get_i32(d, &sp[2], "sampling.top_k", &s->sampling.top_k)) ||
	    (rc = get_u64(d, &sp[3], "sampling.seed", &s->sampling.seed)) ||
	    (rc = get_u32(d, &sp[4], "sampling.max_tokens", &s->sampling.max_tokens)) ||
	    (rc = get_bool(d, &sp[5], "sampling.ignore_eos", &s->sampling.ignore_eos)) ||
	    (rc = get_ids(d, &sp[6], "sampling.stop_ids", &s->sampling.n_stop_ids,
			  &s->sampling.stop_ids)) ||
	    (rc = get_f32(d, &sp[7], "sampling.presence_penalty",
			  &s->sampling.presence_penalty)) ||
	    (rc = get_f32(d, &sp[8], "sampling.frequency_penalty",
			  &s->sampling.frequency_penalty)) ||
	    (rc = get_f32(d, &sp[9], "sampling.repetition_penalty",
			  &s->sampling.repetition_penalty)) ||
	    (rc = get_f32(d, &sp[10], "sampling.min_p", &s->sampling.min_p)) ||
	    (rc = get_u32(d, &sp[11], "sampling.min_tokens", &s->sampling.min_tokens)) ||
	    (rc = get_ids(d, &sp[12], "sampling.bias_ids", &s->sampling.n_bias,
			  &s->sampling.bias_ids)) ||
	    (rc = get_floats(d, &sp[13], "sampling.bias", LOOM_MAX_LOGIT_BIAS, &nb,
			     &s->sampling.bias)) ||
	    (rc = get_lp_ask(d, &sp[14], "sampling.logprobs", &s->sampling.logprobs,
			     &s->sampling.top_logprobs)) ||
	    (rc = get_lp_ask(d, &sp[15], "sampling.prompt_logprobs",
			     &s->sampling.prompt_logprobs, &s->sampling.prompt_top_logprobs)) ||
	    (rc = get_guide(d, &sp[16], &sp[17], &s->sampling)) ||
	    (rc = get_name(d, &f[7], "slo_class", s->slo_class, sizeof s->slo_class)) ||
	    (rc = get_u32(d, &f[8], "ttft_deadline_ms", &s->ttft_deadline_ms)) ||
	    (rc = get_u32(d, &f[9], "tpot_target_ms", &s->tpot_target_ms)) ||
	    (rc = get_u32(d, &f[10], "n_generated", &s->n_generated)))
		return rc;
	if (s->n_generated > s->n_prompt)
		return bad(d, "n_generated", "more than the prompt ids");
	if (s->sampling.n_bias > LOOM_MAX_LOGIT_BIAS)
		return bad(d, "sampling.bias_ids", "more than LOOM_MAX_LOGIT_BIAS entries");
	if (nb != s->sampling.n_bias)
		return bad(d, "sampling.bias", "not as many biases as bias_ids");
	return LOOM_OK;
}

static loom_err dec_hello(const dctx *d, const msgpack_object *f, loom_msg_hello *h)
{
	const msgpack_object *ms = &f[7];
	loom_err rc;

	if ((rc = get_name(d, &f[2], "worker_id", h->worker_id, sizeof h->worker_id)) ||
	    (rc = get_name(d, &f[3], "backend", h->backend, sizeof h->backend)) ||
	    (rc = get_u32(d, &f[4], "proto_version", &h->proto_version)) ||
	    (rc = get_u64(d, &f[5], "ping_seq", &h->ping_seq)) ||
	    (rc = get_u64(d, &f[6], "device_mem", &h->device_mem)))
		return rc;
	if (ms->type != MSGPACK_OBJECT_ARRAY)
		return bad(d, "models", "expected an array of names");
	if (ms->via.array.size > LOOM_PROTO_MAX_ITEMS)
		return bad(d, "models", "too many entries");
	if (ms->via.array.size == 0)
		return LOOM_OK;
	h->models = loom_calloc(ms->via.array.size, sizeof *h->models);
	if (!h->models)
		return loom_fail(LOOM_ENOMEM, "proto: HELLO field 'models': out of memory");
	h->n_models = ms->via.array.size;
	for (uint32_t i = 0; i < ms->via.array.size; i++)
		if ((rc = get_name(d, &ms->via.array.ptr[i], "models[]", h->models[i], LOOM_NAME_MAX)))
			return rc;
	return LOOM_OK;
}

/* nil (none) or [k, [lp], [top ids], [top lp]] with n >= 1 logprobs. */
static loom_err get_logprobs(const dctx *d, const msgpack_object *o, const char *field,
			     loom_logprobs *l)
{
	const msgpack_object *e;
	uint32_t nt = 0, ntl = 0;
	loom_err rc = LOOM_OK;

	if (o->type == MSGPACK_OBJECT_NIL)
		return LOOM_OK;
	if (!(e = sub_array(d, o, field, ARITY_LOGPROBS, &rc)))
		return rc;
	if ((rc = get_u32(d, &e[0], field, &l->k)))
		return rc;
	if (l->k > LOOM_MAX_LOGPROBS)
		return bad(d, field, "more than 20 alternatives per token");
	if ((rc = get_floats(d, &e[1], field, LOOM_PROTO_MAX_IDS, &l->n, &l->lp)) ||
	    (rc = get_ids(d, &e[2], field, &nt, &l->top_ids)) ||
	    (rc = get_floats(d, &e[3], field, LOOM_PROTO_MAX_IDS, &ntl, &l->top_lp)))
		return rc;
	if (l->n == 0)
		return bad(d, field, "no logprobs (send nil instead)");
	if ((uint64_t)l->n * l->k != nt || nt != ntl)
		return bad(d, field, "top entries are not k per logprob");
	return LOOM_OK;
}

static loom_err dec_step(const dctx *d, const msgpack_object *f, loom_msg_step *s)
{
	const msgpack_object *items = &f[2];
	loom_err rc = LOOM_OK;

	if (items->type != MSGPACK_OBJECT_ARRAY)
		return bad(d, "items", "expected an array");
	if (items->via.array.size > LOOM_PROTO_MAX_ITEMS)
		return bad(d, "items", "too many entries");
	if (items->via.array.size == 0)
		return LOOM_OK;
	s->items = loom_calloc(items->via.array.size, sizeof *s->items);
	if (!s->items)
		return loom_fail(LOOM_ENOMEM, "proto: STEP field 'items': out of memory");
	s->n_items = items->via.array.size;
	for (uint32_t i = 0; i < items->via.array.size; i++) {
		loom_step_item *it = &s->items[i];
		const msgpack_object *e;
		uint32_t fin;

		if (!(e = sub_array(d, &items->via.array.ptr[i], "items[]", ARITY_ITEM, &rc)))
			return rc;
		if ((rc = get_u64(d, &e[0], "items[].req", &it->req)) ||
		    (rc = get_ids(d, &e[1], "items[].ids", &it->n_ids, &it->ids)) ||
		    (rc = get_u32(d, &e[2], "items[].finish", &fin)) ||
		    (rc = get_u32(d, &e[3], "items[].n_prompt", &it->n_prompt)) ||
		    (rc = get_logprobs(d, &e[4], "items[].lp", &it->lp)) ||
		    (rc = get_logprobs(d, &e[5], "items[].prompt_lp", &it->prompt_lp)) ||
		    (rc = get_u32(d, &e[6], "items[].n_cached", &it->n_cached)))
			return rc;
		if (it->n_cached > it->n_prompt)
			return bad(d, "items[].n_cached", "more cached tokens than prompt tokens");
		if (fin > LOOM_FINISH_ABORT)
			return bad(d, "items[].finish", "not a finish reason (0..3)");
		if (it->lp.n && it->lp.n != it->n_ids)
			return bad(d, "items[].lp", "not one logprob per id");
		if (it->prompt_lp.n && it->prompt_lp.n + 1 != it->n_prompt)
			return bad(d, "items[].prompt_lp", "not one logprob per prompt token but the first");
		it->finish = (uint8_t)fin;
	}
	return LOOM_OK;
}

/* Copies a str field of fewer than LOOM_PROTO_MAX_STR bytes, no NULs. */
static loom_err get_text(const dctx *d, const msgpack_object *m, const char *field, char **out)
{
	if (m->type != MSGPACK_OBJECT_STR)
		return bad(d, field, "expected a string");
	if (m->via.str.size >= LOOM_PROTO_MAX_STR)
		return bad(d, field, "string too long");
	if (m->via.str.size && memchr(m->via.str.ptr, '\0', m->via.str.size))
		return bad(d, field, "string contains a NUL byte");
	*out = loom_strndup(m->via.str.ptr, m->via.str.size);
	if (!*out)
		return loom_fail(LOOM_ENOMEM, "proto: %s field '%s': out of memory", d->msg, field);
	return LOOM_OK;
}

static loom_err dec_error(const dctx *d, const msgpack_object *f, loom_msg_error *e)
{
	loom_err rc;

	if ((rc = get_u64(d, &f[2], "req", &e->req)) || (rc = get_u32(d, &f[3], "code", &e->code)))
		return rc;
	return get_text(d, &f[4], "message", &e->message);
}

static loom_err get_sha(const dctx *d, const msgpack_object *o, const char *field, char *dst)
{
	loom_err rc = get_name(d, o, field, dst, LOOM_SHA_HEX);
	if (rc)
		return rc;
	if (!sha_ok(dst, strlen(dst)))
		return bad(d, field, "not \"\" or 64 lowercase hex digits");
	return LOOM_OK;
}

static loom_err dec_adapter(const dctx *d, const msgpack_object *f, loom_msg_adapter *a)
{
	loom_err rc;

	if ((rc = get_name(d, &f[2], "name", a->name, sizeof a->name)) ||
	    (rc = get_name(d, &f[3], "base_model", a->base_model, sizeof a->base_model)) ||
	    (rc = get_text(d, &f[4], "path", &a->path)))
		return rc;
	return get_sha(d, &f[5], "sha", a->sha);
}

static loom_err dec_model(const dctx *d, const msgpack_object *f, loom_msg_model *mm)
{
	loom_err rc;

	if ((rc = get_name(d, &f[2], "name", mm->name, sizeof mm->name)) ||
	    (rc = get_text(d, &f[3], "path", &mm->path)))
		return rc;
	if ((rc = get_sha(d, &f[4], "sha", mm->sha)))
		return rc;
	return get_sha(d, &f[5], "tokenizer_sha", mm->tokenizer_sha);
}

static loom_err dec_fetch(const dctx *d, const msgpack_object *f, loom_msg_fetch *x)
{
	loom_err rc = get_sha(d, &f[2], "sha", x->sha);
	return rc ? rc : get_u64(d, &f[3], "offset", &x->offset);
}

static loom_err dec_blob(const dctx *d, const msgpack_object *f, loom_msg_blob *b)
{
	const msgpack_object *bin = &f[5];
	loom_err rc;

	if ((rc = get_sha(d, &f[2], "sha", b->sha)) ||
	    (rc = get_u64(d, &f[3], "offset", &b->offset)) ||
	    (rc = get_u64(d, &f[4], "total", &b->total)))
		return rc;
	if (bin->type != MSGPACK_OBJECT_BIN)
		return bad(d, "data", "expected bin");
	if (bin->via.bin.size > LOOM_BLOB_CHUNK)
		return bad(d, "data", "chunk larger than LOOM_BLOB_CHUNK");
	if (b->offset > b->total || bin->via.bin.size > b->total - b->offset)
		return bad(d, "data", "chunk beyond the blob's total");
	b->len = bin->via.bin.size;
	if (b->len) {
		b->data = loom_malloc(b->len);
		if (!b->data)
			return loom_fail(LOOM_ENOMEM, "proto: BLOB of %" PRIu32 " bytes: out of memory",
					 b->len);
		memcpy(b->data, bin->via.bin.ptr, b->len);
	}
	return LOOM_OK;
}

static loom_err dec_residency(const dctx *d, const msgpack_object *f, loom_msg_residency *r)
{
	const msgpack_object *items = &f[2];
	loom_err rc = LOOM_OK;
	uint64_t *c[] = { &r->host_bytes, &r->host_budget, &r->device_bytes, &r->device_budget,
			  &r->model_bytes, &r->model_budget, &r->host_hits, &r->host_misses,
			  &r->device_hits, &r->device_misses, &r->cold_loads };
	static const char *const cn[] = { "host_bytes", "host_budget", "device_bytes",
					  "device_budget", "model_bytes", "model_budget",
					  "host_hits", "host_misses", "device_hits",
					  "device_misses", "cold_loads" };

	if (items->type != MSGPACK_OBJECT_ARRAY)
		return bad(d, "items", "expected an array");
	if (items->via.array.size > LOOM_PROTO_MAX_ITEMS)
		return bad(d, "items", "too many entries");
	if (items->via.array.size) {
		r->items = loom_calloc(items->via.array.size, sizeof *r->items);
		if (!r->items)
			return loom_fail(LOOM_ENOMEM, "proto: RESIDENCY items: out of memory");
		r->n = items->via.array.size;
	}
	for (uint32_t i = 0; i < items->via.array.size; i++) {
		loom_resident *it = &r->items[i];
		const msgpack_object *e;
		uint32_t kind, tier;
		if (!(e = sub_array(d, &items->via.array.ptr[i], "items[]", ARITY_RESIDENT, &rc)))
			return rc;
		if ((rc = get_u32(d, &e[0], "items[].kind", &kind)) ||
		    (rc = get_u32(d, &e[1], "items[].tier", &tier)) ||
		    (rc = get_name(d, &e[2], "items[].name", it->name, sizeof it->name)) ||
		    (rc = get_sha(d, &e[3], "items[].sha", it->sha)) ||
		    (rc = get_u64(d, &e[4], "items[].bytes", &it->bytes)))
			return rc;
		if (kind > 1 || tier > LOOM_TIER_DEVICE)
			return bad(d, "items[]", "kind must be 0..1 and tier 0..2");
		it->kind = (uint8_t)kind;
		it->tier = (uint8_t)tier;
	}
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
		if ((rc = get_u64(d, &f[3 + i], cn[i], c[i])))
			return rc;
	if (f[14].type != MSGPACK_OBJECT_FLOAT32 && f[14].type != MSGPACK_OBJECT_FLOAT64)
		return bad(d, "cold_load_ms", "expected a float");
	r->cold_load_ms = f[14].via.f64;
	return LOOM_OK;
}

static loom_err dec_stats(const dctx *d, const msgpack_object *f, loom_msg_stats *s)
{
	loom_err rc;

	if ((rc = get_u32(d, &f[2], "queued", &s->queued)) ||
	    (rc = get_u32(d, &f[3], "running", &s->running)) ||
	    (rc = get_u64(d, &f[4], "queued_tokens", &s->queued_tokens)) ||
	    (rc = get_u32(d, &f[5], "kv_free", &s->kv_free)) ||
	    (rc = get_u32(d, &f[6], "kv_total", &s->kv_total)) ||
	    (rc = get_f32(d, &f[7], "step_ms", &s->step_ms)) ||
	    (rc = get_u64(d, &f[8], "steps", &s->steps)) ||
	    (rc = get_u64(d, &f[9], "tokens_out", &s->tokens_out)) ||
	    (rc = get_f32(d, &f[10], "fit_a_ms", &s->fit_a_ms)) ||
	    (rc = get_f32(d, &f[11], "fit_b_ms", &s->fit_b_ms)) ||
	    (rc = get_u64(d, &f[12], "queued_tokens_slo", &s->queued_tokens_slo)) ||
	    (rc = get_u64(d, &f[13], "prompt_tokens", &s->prompt_tokens)) ||
	    (rc = get_u64(d, &f[14], "cached_tokens", &s->cached_tokens)) ||
	    (rc = get_u32(d, &f[15], "cached_blocks", &s->cached_blocks)))
		return rc;
	if (f[16].type != MSGPACK_OBJECT_ARRAY)
		return bad(d, "models", "expected an array");
	if (f[16].via.array.size > LOOM_PROTO_MAX_ITEMS)
		return bad(d, "models", "too many entries");
	if (f[16].via.array.size == 0)
		return LOOM_OK;
	s->models = loom_calloc(f[16].via.array.size, sizeof *s->models);
	if (!s->models)
		return loom_fail(LOOM_ENOMEM, "proto: STATS field 'models': out of memory");
	s->n_models = f[16].via.array.size;
	for (uint32_t i = 0; i < s->n_models; i++) {
		loom_prefix_model *pm = &s->models[i];
		const msgpack_object *e;
		if (!(e = sub_array(d, &f[16].via.array.ptr[i], "models[]", ARITY_PREFIX_MODEL, &rc)))
			return rc;
		if ((rc = get_name(d, &e[0], "models[].name", pm->name, sizeof pm->name)) ||
		    (rc = get_u64(d, &e[1], "models[].prompt_tokens", &pm->prompt_tokens)) ||
		    (rc = get_u64(d, &e[2], "models[].cached_tokens", &pm->cached_tokens)) ||
		    (rc = get_u32(d, &e[3], "models[].cached_blocks", &pm->cached_blocks)))
			return rc;
	}
	return LOOM_OK;
}

static uint32_t arity_of(int type)
{
	switch (type) {
	case LOOM_MSG_SUBMIT: return ARITY_SUBMIT;
	case LOOM_MSG_CANCEL: return ARITY_CANCEL;
	case LOOM_MSG_PING: return ARITY_PING;
	case LOOM_MSG_HELLO: return ARITY_HELLO;
	case LOOM_MSG_STEP: return ARITY_STEP;
	case LOOM_MSG_ERROR: return ARITY_ERROR;
	case LOOM_MSG_STATS: return ARITY_STATS;
	case LOOM_MSG_ADAPTER: return ARITY_ADAPTER;
	case LOOM_MSG_MODEL: return ARITY_MODEL;
	case LOOM_MSG_FETCH: return ARITY_FETCH;
	case LOOM_MSG_BLOB: return ARITY_BLOB;
	case LOOM_MSG_RESIDENCY: return ARITY_RESIDENCY;
	}
	return 0;
}

static loom_err dec_fields(const msgpack_object *root, loom_msg *out)
{
	const msgpack_object *f;
	dctx d = { "message" };
	uint64_t type = 0, version = 0;
	loom_err rc;

	if (root->type != MSGPACK_OBJECT_ARRAY)
		return loom_fail(LOOM_EPROTO, "proto: message is not a msgpack array");
	if (root->via.array.size < 2)
		return loom_fail(LOOM_EPROTO, "proto: message array has %" PRIu32
				 " elements, need at least type and version",
				 root->via.array.size);
	f = root->via.array.ptr;
	if ((rc = get_u64(&d, &f[0], "type", &type)))
		return rc;
	if (arity_of(type > 255 ? 0 : (int)type) == 0)
		return loom_fail(LOOM_EPROTO, "proto: unknown message type %" PRIu64, type);
	d.msg = loom_msg_type_name((int)type);
	if ((rc = get_u64(&d, &f[1], "version", &version)))
		return rc;
	if (version != LOOM_PROTO_VERSION)
		return loom_fail(LOOM_EPROTO, "proto: %s has protocol version %" PRIu64
				 ", this build speaks %d",
				 d.msg, version, LOOM_PROTO_VERSION);
	if (root->via.array.size != arity_of((int)type))
		return loom_fail(LOOM_EPROTO, "proto: %s has %" PRIu32 " elements, expected %" PRIu32,
				 d.msg, root->via.array.size, arity_of((int)type));
	out->type = (loom_msg_type)type;
	switch (out->type) {
	case LOOM_MSG_SUBMIT: return dec_submit(&d, f, &out->u.submit);
	case LOOM_MSG_CANCEL: return get_u64(&d, &f[2], "req", &out->u.cancel.req);
	case LOOM_MSG_PING: return get_u64(&d, &f[2], "seq", &out->u.ping.seq);
	case LOOM_MSG_HELLO: return dec_hello(&d, f, &out->u.hello);
	case LOOM_MSG_STEP: return dec_step(&d, f, &out->u.step);
	case LOOM_MSG_ERROR: return dec_error(&d, f, &out->u.error);
	case LOOM_MSG_STATS: return dec_stats(&d, f, &out->u.stats);
	case LOOM_MSG_ADAPTER: return dec_adapter(&d, f, &out->u.adapter);
	case LOOM_MSG_MODEL: return dec_model(&d, f, &out->u.model);
	case LOOM_MSG_FETCH: return dec_fetch(&d, f, &out->u.fetch);
	case LOOM_MSG_BLOB: return dec_blob(&d, f, &out->u.blob);
	case LOOM_MSG_RESIDENCY: return dec_residency(&d, f, &out->u.residency);
	}
	return LOOM_EINTERNAL;
}

loom_err loom_msg_decode(const void *buf, size_t len, loom_msg *out)
{
	msgpack_unpacked u;
	msgpack_unpack_return ur;
	size_t off = 0;
	loom_err rc;

	memset(out, 0, sizeof *out);
	if (!buf && len)
		return loom_fail(LOOM_EINVAL, "proto: NULL buffer of %zu bytes", len);
	if ((rc = prescan(buf, len)))
		return rc;
	msgpack_unpacked_init(&u);
	ur = msgpack_unpack_next(&u, buf, len, &off);
	if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
		rc = loom_fail(LOOM_ENOMEM, "proto: out of memory unpacking %zu bytes", len);
		goto out;
	}
	if (ur != MSGPACK_UNPACK_SUCCESS || off != len) {
		rc = loom_fail(LOOM_EPROTO, "proto: msgpack rejected the message (code %d, %zu of %zu bytes)",
			       (int)ur, off, len);
		goto out;
	}
	rc = dec_fields(&u.data, out);
out:
	msgpack_unpacked_destroy(&u);
	if (rc)
		loom_msg_fini(out);
	return rc;
}

void loom_msg_fini(loom_msg *m)
{
	switch (m->type) {
	case LOOM_MSG_SUBMIT:
		loom_free(m->u.submit.prompt_ids);
		loom_sampling_fini(&m->u.submit.sampling);
		break;
	case LOOM_MSG_HELLO:
		loom_free(m->u.hello.models);
		break;
	case LOOM_MSG_STEP:
		for (uint32_t i = 0; i < m->u.step.n_items; i++) {
			loom_free(m->u.step.items[i].ids);
			logprobs_fini(&m->u.step.items[i].lp);
			logprobs_fini(&m->u.step.items[i].prompt_lp);
		}
		loom_free(m->u.step.items);
		break;
	case LOOM_MSG_ERROR:
		loom_free(m->u.error.message);
		break;
	case LOOM_MSG_ADAPTER:
		loom_free(m->u.adapter.path);
		break;
	case LOOM_MSG_MODEL:
		loom_free(m->u.model.path);
		break;
	case LOOM_MSG_BLOB:
		loom_free(m->u.blob.data);
		break;
	case LOOM_MSG_RESIDENCY:
		loom_free(m->u.residency.items);
		break;
	case LOOM_MSG_STATS:
		loom_free(m->u.stats.models);
		break;
	default:
		break;
	}
	memset(m, 0, sizeof *m);
}
