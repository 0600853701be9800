/*
 * tests/worker/test_worker_proc.c — the real loom-worker program spoken to
 * over a real nng pair1 socket, as the gateway does: PING -> HELLO + STATS,
 * SUBMIT -> STEPs until finish (same ids as a hand-driven forward), ERROR
 * for bad requests, CANCEL -> ABORT, malformed bytes ignored, a dropped
 * connection cancels its requests, SIGTERM -> exit 0; bad flags -> 2, a bad
 * model folder -> 1 with the file named; --kv-dtype bf16 serves the ids
 * of a forward over a BF16 cache, with twice the slots in --kv-mb. ADAPTER: a good random adapter
 * serves SUBMITs naming it (same ids as a hand-driven forward with its
 * segment); a DoRA one, a missing folder and an unknown base model are
 * answered by ERROR{req 0, "adapter NAME: reason"} and the worker keeps
 * serving base and good-adapter requests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "adapters/adapter.h"
#include "common/alloc.h"
#include "common/proto.h"
#include "tests/support/harness.h"
#include "worker/forward.h"
#include "worker/kv.h"
#include "worker/model.h"
#include "worker/sample.h"

static lt_proc worker;
static wk_kv_dtype ref_kv_dt = WK_KV_F32; /* the KV cache of reference_ad */
static char *dir;
static char url[256];
static nng_socket sock;

static const int32_t once_upon[] = { 1, 403, 407, 261, 378 };

/* ---------------------------------------------------------------- */
/* the gateway side                                                  */
/* ---------------------------------------------------------------- */

static void dial(void)
{
	int rv = -1;
	assert_int_equal(nng_pair1_open(&sock), 0);
	assert_int_equal(nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, 10000), 0);
	assert_int_equal(nng_socket_set_ms(sock, NNG_OPT_SENDTIMEO, 5000), 0);
	for (int i = 0; i < 300 && rv != 0; i++) { /* the worker may still be loading */
		rv = nng_dial(sock, url, NULL, 0);
		if (rv)
			usleep(20000);
	}
	if (rv) {
		lt_proc_dump(&worker);
		fail_msg("cannot dial %s: %s", url, nng_strerror(rv));
	}
}

static void send_raw(const void *buf, size_t len)
{
	assert_int_equal(nng_send(sock, (void *)buf, len, 0), 0);
}

static void send_msg(const loom_msg *m)
{
	void *buf;
	size_t len;
	assert_int_equal(loom_msg_encode(m, &buf, &len), LOOM_OK);
	send_raw(buf, len);
	loom_free(buf);
}

/* Next message from the worker (fails the test after the receive timeout). */
static void recv_msg(loom_msg *m)
{
	void *buf;
	size_t len;
	int rv = nng_recv(sock, &buf, &len, NNG_FLAG_ALLOC);
	if (rv) {
		lt_proc_dump(&worker);
		fail_msg("no message from the worker: %s", nng_strerror(rv));
	}
	loom_err rc = loom_msg_decode(buf, len, m);
	nng_free(buf, len);
	if (rc)
		fail_msg("worker sent bytes that do not decode: %s", loom_errmsg());
}

static void send_ping(uint64_t seq)
{
	loom_msg m = { .type = LOOM_MSG_PING };
	m.u.ping.seq = seq;
	send_msg(&m);
}

/* Sends PING seq and waits for its HELLO and the STATS after it. */
static void ping(uint64_t seq, loom_msg *hello, loom_msg_stats *stats)
{
	loom_msg m;
	send_ping(seq);
	for (;;) {
		recv_msg(&m);
		if (m.type == LOOM_MSG_HELLO && m.u.hello.ping_seq == seq)
			break;
		loom_msg_fini(&m);
	}
	*hello = m;
	recv_msg(&m);
	assert_int_equal(m.type, LOOM_MSG_STATS);
	*stats = m.u.stats;
	loom_msg_fini(&m);
}

/* Like ping, but a PING lost on a pipe that is being replaced is resent. */
static void ping_retry(uint64_t seq, loom_msg *hello, loom_msg_stats *stats)
{
	assert_int_equal(nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, 500), 0);
	for (int attempt = 0; attempt < 20; attempt++, seq += 1000000) {
		loom_msg m;
		void *buf;
		size_t len;
		send_ping(seq);
		for (;;) {
			if (nng_recv(sock, &buf, &len, NNG_FLAG_ALLOC) != 0)
				break;
			loom_err rc = loom_msg_decode(buf, len, &m);
			nng_free(buf, len);
			assert_int_equal(rc, LOOM_OK);
			if (m.type == LOOM_MSG_HELLO && m.u.hello.ping_seq == seq) {
				*hello = m;
				recv_msg(&m);
				assert_int_equal(m.type, LOOM_MSG_STATS);
				*stats = m.u.stats;
				loom_msg_fini(&m);
				assert_int_equal(nng_socket_set_ms(sock, NNG_OPT_RECVTIMEO, 10000), 0);
				return;
			}
			loom_msg_fini(&m);
		}
	}
	lt_proc_dump(&worker);
	fail_msg("no HELLO after 20 PINGs");
}

static void submit(uint64_t req, const char *model, const char *adapter, const int32_t *prompt,
		   uint32_t n, uint32_t max_tokens, bool ignore_eos)
{
	loom_msg m = { .type = LOOM_MSG_SUBMIT };
	m.u.submit.req = req;
	snprintf(m.u.submit.model, sizeof m.u.submit.model, "%s", model);
	snprintf(m.u.submit.adapter, sizeof m.u.submit.adapter, "%s", adapter);
	m.u.submit.n_prompt = n;
	m.u.submit.prompt_ids = (int32_t *)prompt;
	m.u.submit.sampling = (loom_sampling){ .temperature = 0.0f, .top_p = 1.0f, .seed = 3,
					       .max_tokens = max_tokens, .ignore_eos = ignore_eos };
	send_msg(&m);
}

typedef struct result {
	int32_t ids[512];
	int n;
	int finish;
	int items;
	bool error;
	uint32_t err_code;
	char err[256];
} result;

/* Collects req's items until it finishes or errors; calls on_item (if
 * given) after each item. Other messages are skipped. */
static void collect(uint64_t req, result *r, void (*on_item)(result *))
{
	memset(r, 0, sizeof *r);
	r->finish = -1;
	while (r->finish < 0 && !r->error) {
		loom_msg m;
		recv_msg(&m);
		if (m.type == LOOM_MSG_ERROR && m.u.error.req == req) {
			r->error = true;
			r->err_code = m.u.error.code;
			snprintf(r->err, sizeof r->err, "%s", m.u.error.message);
		} else if (m.type == LOOM_MSG_STEP) {
			for (uint32_t i = 0; i < m.u.step.n_items; i++) {
				const loom_step_item *it = &m.u.step.items[i];
				if (it->req != req)
					continue;
				for (uint32_t k = 0; k < it->n_ids && r->n < 512; k++)
					r->ids[r->n++] = it->ids[k];
				r->items++;
				if (it->finish != LOOM_FINISH_NONE)
					r->finish = it->finish;
				if (on_item)
					on_item(r);
			}
		}
		loom_msg_fini(&m);
	}
}

/* Greedy by hand with the library: the ids the worker must send; with the
 * adapter in folder ad_dir when given (one segment over the sequence). */
static int reference_ad(const int32_t *prompt, int n_prompt, int max_tokens, const char *ad_dir,
			int32_t *out)
{
	wk_model *m;
	ad_adapter *ad = NULL;
	wk_kv *kv;
	wk_scratch *s;
	assert_int_equal(wk_model_load(lt_shared_path("models/stories260k"), "ref", &m), LOOM_OK);
	assert_int_equal(wk_kv_create_dt(m, n_prompt + max_tokens, ref_kv_dt, &kv), LOOM_OK);
	assert_int_equal(wk_scratch_create(m, &s), LOOM_OK);
	float *logits = loom_malloc((size_t)m->cfg.vocab * sizeof(float));
	void *ss = loom_malloc(wk_sample_scratch_bytes(m->cfg.vocab));
	loom_sampling sp = { .top_p = 1.0f, .max_tokens = (uint32_t)max_tokens };
	int32_t start[2] = { 0, n_prompt };
	wk_batch b = { .n_seqs = 1, .seq_start = start, .tokens = prompt, .kv = &kv };
	int n = 0;
	const ad_adapter *seg_ad[1] = { NULL };
	if (ad_dir) {
		if (ad_adapter_load(ad_dir, "ref", &m->cfg, &ad))
			fail_msg("ad_adapter_load %s: %s", ad_dir, loom_errmsg());
		seg_ad[0] = ad;
		b.n_segs = 1;
		b.seg_start = start; /* one segment: the whole sequence */
		b.seg_adapter = seg_ad;
	}
	for (;;) {
		assert_int_equal(wk_forward(m, &b, s, logits), LOOM_OK);
		out[n] = wk_sample(logits, m->cfg.vocab, &sp, (uint64_t)n, ss);
		n++;
		if (n == max_tokens || out[n - 1] == m->cfg.eos_ids[0])
			break;
		start[1] = 1;
		b.tokens = &out[n - 1];
	}
	loom_free(logits);
	loom_free(ss);
	ad_adapter_destroy(ad);
	wk_scratch_destroy(s);
	wk_kv_destroy(kv);
	wk_model_destroy(m);
	return n;
}

static int reference(const int32_t *prompt, int n_prompt, int max_tokens, int32_t *out)
{
	return reference_ad(prompt, n_prompt, max_tokens, NULL, out);
}

static bool log_contains(const char *path, const char *needle)
{
	FILE *f = fopen(path, "r");
	char line[2048];
	bool hit = false;
	if (!f)
		return false;
	while (!hit && fgets(line, sizeof line, f))
		hit = strstr(line, needle) != NULL;
	fclose(f);
	return hit;
}

/* ---------------------------------------------------------------- */
/* tests                                                             */
/* ---------------------------------------------------------------- */

static int setup(void **state)
{
	(void)state;
	char log[512], model_arg[512];
	dir = lt_tmpdir("wkproc");
	snprintf(url, sizeof url, "ipc://%s/w.ipc", dir);
	snprintf(log, sizeof log, "%s/worker.log", dir);
	snprintf(model_arg, sizeof model_arg, "%s", lt_shared_path("models/stories260k"));
	char *argv[] = { (char *)lt_bin_path("loom-worker"), "--listen", url, "--model", model_arg,
			 "--id", "w-test", "--max-batch-tokens", "16", NULL };
	if (lt_spawn(&worker, log, argv) != 0)
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (worker.pid)
		lt_stop(&worker, SIGKILL, 1000);
	loom_free(dir);
	return 0;
}

static void test_ping_hello(void **state)
{
	(void)state;
	loom_msg h;
	loom_msg_stats st;

	dial();
	ping(42, &h, &st);
	assert_string_equal(h.u.hello.worker_id, "w-test");
	assert_string_equal(h.u.hello.backend, "cpu");
	assert_int_equal(h.u.hello.proto_version, LOOM_PROTO_VERSION);
	assert_int_equal(h.u.hello.n_models, 1);
	assert_string_equal(h.u.hello.models[0], "stories260k");
	assert_true(h.u.hello.device_mem > 0);
	loom_msg_fini(&h);
	assert_int_equal(st.running, 0);
	assert_int_equal(st.queued, 0);
	assert_int_equal(st.kv_total, 64 * 512);
	for (uint64_t s = 1; s <= 3; s++) { /* every PING gets its own answer */
		ping(1000 + s, &h, &st);
		loom_msg_fini(&h);
	}
	assert_true(log_contains(worker.log, "worker w-test listening on "));
}

static void test_submit_streams(void **state)
{
	(void)state;
	int32_t want[64];
	int n = reference(once_upon, 5, 20, want);
	result r;

	submit(7, "stories260k", "", once_upon, 5, 20, false);
	collect(7, &r, NULL);
	assert_false(r.error);
	assert_int_equal(r.finish, LOOM_FINISH_LENGTH);
	assert_int_equal(r.n, n);
	assert_memory_equal(r.ids, want, (size_t)n * sizeof *want);
	assert_int_equal(r.items, n); /* one token per STEP item */

	/* a prompt longer than --max-batch-tokens 16: chunked prefill */
	int32_t prompt[100];
	prompt[0] = 1;
	for (int i = 1; i < 100; i++)
		prompt[i] = 3 + (int32_t)(wk_rand_uniform(11, (uint64_t)i) * 509);
	n = reference(prompt, 100, 8, want);
	submit(8, "stories260k", "", prompt, 100, 8, false);
	collect(8, &r, NULL);
	assert_int_equal(r.n, n);
	assert_memory_equal(r.ids, want, (size_t)n * sizeof *want);
}

static void test_errors(void **state)
{
	(void)state;
	result r;
	int32_t bad[] = { 1, 9999 };

	submit(20, "nope", "", once_upon, 5, 4, false);
	collect(20, &r, NULL);
	assert_true(r.error);
	assert_int_equal(r.err_code, LOOM_ENOTFOUND);

	submit(21, "stories260k", "some-lora", once_upon, 5, 4, false);
	collect(21, &r, NULL);
	assert_true(r.error);
	assert_int_equal(r.err_code, LOOM_ENOTFOUND);
	assert_string_equal(r.err, "adapter some-lora is not loaded");

	submit(22, "stories260k", "", bad, 2, 4, false);
	collect(22, &r, NULL);
	assert_int_equal(r.err_code, LOOM_EINVAL);

	submit(23, "stories260k", "", once_upon, 5, 600, false);
	collect(23, &r, NULL);
	assert_int_equal(r.err_code, LOOM_ERANGE);
}

static void test_malformed_ignored(void **state)
{
	(void)state;
	loom_msg h;
	loom_msg_stats st;
	uint8_t junk[64];

	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (uint8_t)(i * 37 + 11);
	send_raw(junk, sizeof junk);
	send_raw("\xc1", 1);
	send_raw("\x93\x03\x01", 3);            /* truncated PING */
	send_raw("\x93\x03\x02\x05", 4);        /* PING of protocol version 2 */
	{
		loom_msg wrong = { .type = LOOM_MSG_STATS }; /* valid, wrong direction */
		send_msg(&wrong);
	}
	/* still serving */
	ping(77, &h, &st);
	loom_msg_fini(&h);
	result r;
	int32_t want[8];
	int n = reference(once_upon, 5, 3, want);
	submit(30, "stories260k", "", once_upon, 5, 3, false);
	collect(30, &r, NULL);
	assert_int_equal(r.n, n);
	assert_memory_equal(r.ids, want, (size_t)n * sizeof *want);
	assert_true(log_contains(worker.log, "malformed"));
}

static void send_adapter(const char *name, const char *base, const char *path)
{
	loom_msg m = { .type = LOOM_MSG_ADAPTER };
	snprintf(m.u.adapter.name, sizeof m.u.adapter.name, "%s", name);
	snprintf(m.u.adapter.base_model, sizeof m.u.adapter.base_model, "%s", base);
	m.u.adapter.path = (char *)path;
	send_msg(&m);
}

/* Waits for the worker-level ERROR (req 0) about an adapter. */
static void expect_adapter_error(const char *name, uint32_t code, const char *needle)
{
	char head[200];
	snprintf(head, sizeof head, "adapter %s: ", name);
	for (;;) {
		loom_msg m;
		recv_msg(&m);
		if (m.type == LOOM_MSG_ERROR && m.u.error.req == 0) {
			if (strncmp(m.u.error.message, head, strlen(head)) != 0 ||
			    !strstr(m.u.error.message, needle))
				fail_msg("ERROR '%s' is not '%s...%s'", m.u.error.message, head, needle);
			assert_int_equal(m.u.error.code, code);
			loom_msg_fini(&m);
			return;
		}
		loom_msg_fini(&m);
	}
}

static void test_adapters(void **state)
{
	(void)state;
	char good[600], dora[600], missing[600];
	int32_t want[32], base_want[32];
	result r;

	snprintf(good, sizeof good, "%s/ad-good", dir);
	snprintf(dora, sizeof dora, "%s/ad-dora", dir);
	snprintf(missing, sizeof missing, "%s/ad-missing", dir);
	assert_int_equal(lt_sh("'%s' adapter --model '%s' --out '%s' --rank 8 --alpha 16 "
			       "--targets q_proj,k_proj,v_proj,o_proj,down_proj --seed 5 >/dev/null",
			       lt_bin_path("loom-mkmodel"), lt_shared_path("models/stories260k"),
			       good), 0);
	assert_int_equal(lt_sh("cp -r '%s' '%s' && sed -i 's/\"use_dora\": *false/"
			       "\"use_dora\": true/' '%s/adapter_config.json' && "
			       "grep -q '\"use_dora\": *true' '%s/adapter_config.json'",
			       good, dora, dora, dora), 0);
	int n = reference_ad(once_upon, 5, 16, good, want);
	int n_base = reference(once_upon, 5, 16, base_want);
	assert_true(n != n_base || memcmp(want, base_want, sizeof(int32_t) * (size_t)n) != 0);

	send_adapter("good", "stories260k", good);
	submit(70, "stories260k", "good", once_upon, 5, 16, false);
	collect(70, &r, NULL);
	assert_false(r.error);
	assert_int_equal(r.n, n);
	assert_memory_equal(r.ids, want, (size_t)n * sizeof *want);

	send_adapter("bad", "stories260k", dora);
	expect_adapter_error("bad", LOOM_EUNSUPPORTED, "use_dora");
	send_adapter("gone", "stories260k", missing);
	expect_adapter_error("gone", LOOM_EINVAL, "ad-missing");
	send_adapter("orphan", "no-such-base", good);
	expect_adapter_error("orphan", LOOM_ENOTFOUND, "no-such-base");

	/* still serving: base, the good adapter, and a clear refusal of the bad one */
	submit(71, "stories260k", "", once_upon, 5, 16, false);
	submit(72, "stories260k", "good", once_upon, 5, 16, false);
	collect(71, &r, NULL);
	assert_int_equal(r.n, n_base);
	assert_memory_equal(r.ids, base_want, (size_t)n_base * sizeof *want);
	submit(73, "stories260k", "bad", once_upon, 5, 16, false);
	collect(73, &r, NULL);
	assert_true(r.error);
	assert_int_equal(r.err_code, LOOM_ENOTFOUND);
	assert_string_equal(r.err, "adapter bad is not loaded");
	/* 72 finished meanwhile; send it again to read its ids */
	submit(74, "stories260k", "good", once_upon, 5, 16, false);
	collect(74, &r, NULL);
	assert_false(r.error);
	assert_int_equal(r.n, n);
	assert_memory_equal(r.ids, want, (size_t)n * sizeof *want);
	assert_true(log_contains(worker.log, "use_dora"));
}

static void cancel_after_two(result *r)
{
	if (r->items == 2) {
		loom_msg m = { .type = LOOM_MSG_CANCEL };
		m.u.cancel.req = 40;
		send_msg(&m);
	}
}

static void test_cancel(void **state)
{
	(void)state;
	result r;
	loom_msg h;
	loom_msg_stats st;

	submit(40, "stories260k", "", once_upon, 5, 400, true);
	collect(40, &r, cancel_after_two);
	assert_int_equal(r.finish, LOOM_FINISH_ABORT);
	assert_true(r.n >= 2 && r.n < 400);
	{
		loom_msg m = { .type = LOOM_MSG_CANCEL };
		m.u.cancel.req = 123456; /* unknown: ignored */
		send_msg(&m);
	}
	/* STATS is a snapshot published after each iteration: poll */
	for (int k = 0; k < 100; k++) {
		ping(88 + (uint64_t)k, &h, &st);
		loom_msg_fini(&h);
		if (st.running == 0)
			break;
		usleep(10000);
	}
	assert_int_equal(st.running, 0);
}

static atomic_int closed;

static void *close_main(void *arg)
{
	nng_close(*(nng_socket *)arg);
	atomic_store(&closed, 1);
	return NULL;
}

/* Closes s without waiting more than a few seconds: nng 1.5.2's nng_close
 * of a pair1 socket now and then never returns while the peer streams to it
 * (seen on a loaded 2-core machine, the worker having already seen the pipe
 * go); the test is about what the worker does, so it goes on. */
static void close_bounded(nng_socket s)
{
	static nng_socket held;
	pthread_t th;
	held = s;
	atomic_store(&closed, 0);
	if (pthread_create(&th, NULL, close_main, &held) != 0) {
		nng_close(s);
		return;
	}
	pthread_detach(th);
	for (int i = 0; i < 300 && !atomic_load(&closed); i++)
		usleep(10000);
}

/* Closing the gateway's socket cancels what it submitted. */
static void test_disconnect_cancels(void **state)
{
	(void)state;
	loom_msg h, m;
	loom_msg_stats st;

	submit(50, "stories260k", "", once_upon, 5, 400, true);
	for (bool running = false; !running;) { /* its first STEP: it is running */
		recv_msg(&m);
		running = m.type == LOOM_MSG_STEP && m.u.step.n_items > 0 &&
			  m.u.step.items[0].req == 50;
		loom_msg_fini(&m);
	}
	close_bounded(sock);
	dial();
	for (int k = 0; k < 100; k++) {
		ping_retry(200 + (uint64_t)k, &h, &st);
		loom_msg_fini(&h);
		if (st.running == 0 && st.queued == 0)
			break;
		usleep(20000);
	}
	assert_int_equal(st.running, 0);
	assert_int_equal(st.queued, 0);
	assert_true(log_contains(worker.log, "disconnected"));
}

/* --kv-dtype bf16: a second worker holds its KV cache as BF16: twice the
 * token slots in the same --kv-mb (its STATS), and the ids of a
 * hand-driven forward over a BF16 cache. */
static void test_kv_dtype_bf16(void **state)
{
	(void)state;
	char log[512], url2[sizeof url], model_arg[512];
	snprintf(log, sizeof log, "%s/bf16kv.log", dir);
	snprintf(url2, sizeof url2, "ipc://%s/kv16.ipc", dir);
	snprintf(model_arg, sizeof model_arg, "%s", lt_shared_path("models/stories260k"));
	char *argv[] = { (char *)lt_bin_path("loom-worker"), "--listen", url2, "--model", model_arg,
			 "--id", "w-kv16", "--kv-mb", "1", "--kv-dtype", "bf16", NULL };
	lt_proc w2;
	assert_int_equal(lt_spawn(&w2, log, argv), 0);
	nng_socket keep = sock;
	char keep_url[sizeof url];
	memcpy(keep_url, url, sizeof url);
	memcpy(url, url2, sizeof url);
	dial();

	wk_model *m;
	assert_int_equal(wk_model_load(model_arg, "ref", &m), LOOM_OK);
	uint64_t per16 = wk_kv_bytes_per_position_dt(&m->cfg, WK_KV_BF16);
	assert_int_equal(per16 * 2, wk_kv_bytes_per_position(&m->cfg));
	wk_model_destroy(m);
	loom_msg h;
	loom_msg_stats st;
	ping_retry(77, &h, &st);
	loom_msg_fini(&h);
	/* 1 MiB of BF16 K/V: whole blocks of WK_KV_BLOCK positions */
	assert_int_equal(st.kv_total, ((1u << 20) / (per16 * WK_KV_BLOCK)) * WK_KV_BLOCK);

	int32_t want[64];
	ref_kv_dt = WK_KV_BF16;
	int n = reference(once_upon, 5, 20, want);
	ref_kv_dt = WK_KV_F32;
	result r;
	submit(9, "stories260k", "", once_upon, 5, 20, false);
	collect(9, &r, NULL);
	assert_false(r.error);
	assert_int_equal(r.n, n);
	assert_memory_equal(r.ids, want, (size_t)n * sizeof *want);

	assert_int_equal(lt_stop(&w2, SIGTERM, 20000), 0);
	/* this socket stays open until the process ends: nng 1.5.2's nng_close
	 * of a pair1 socket now and then never returns (close_bounded), and a
	 * close stuck in the background made the next test's close hang too */
	sock = keep;
	memcpy(url, keep_url, sizeof url);
}

static void test_sigterm_exits_0(void **state)
{
	(void)state;
	submit(60, "stories260k", "", once_upon, 5, 400, true); /* busy when stopped */
	int st = lt_stop(&worker, SIGTERM, 10000);
	if (st != 0)
		lt_proc_dump(&worker);
	assert_int_equal(st, 0);
	close_bounded(sock); /* the worker died streaming to it: see close_bounded */
}

static void test_bad_invocations(void **state)
{
	(void)state;
	char log[512], bad_model[512], bad_url[300];
	snprintf(log, sizeof log, "%s/bad.log", dir);
	snprintf(bad_model, sizeof bad_model, "%s/no-such-model", dir);
	snprintf(bad_url, sizeof bad_url, "ipc://%s/b.ipc", dir);
	const char *bin = lt_bin_path("loom-worker");
	lt_proc p;

	char *a1[] = { (char *)bin, "--listen", bad_url, "--model", bad_model, NULL };
	assert_int_equal(lt_spawn(&p, log, a1), 0);
	assert_int_equal(lt_stop(&p, 0, 20000), 1);
	assert_true(log_contains(log, "no-such-model/config.json"));

	char *a2[] = { (char *)bin, "--listen", bad_url, NULL };
	assert_int_equal(lt_spawn(&p, log, a2), 0);
	assert_int_equal(lt_stop(&p, 0, 20000), 2);
	assert_true(log_contains(log, "usage: loom-worker"));

	char *a3[] = { (char *)bin, "--listen", bad_url, "--model", bad_model, "--max-seqs", "x",
		       NULL };
	assert_int_equal(lt_spawn(&p, log, a3), 0);
	assert_int_equal(lt_stop(&p, 0, 20000), 2);

	char *a4[] = { (char *)bin, "--bogus", NULL };
	assert_int_equal(lt_spawn(&p, log, a4), 0);
	assert_int_equal(lt_stop(&p, 0, 20000), 2);

	char *a5[] = { (char *)bin, "--listen", bad_url, "--model", bad_model, "--kv-dtype", "f16",
		       NULL };
	assert_int_equal(lt_spawn(&p, log, a5), 0);
	assert_int_equal(lt_stop(&p, 0, 20000), 2);
	assert_true(log_contains(log, "--kv-dtype 'f16' is not f32 or bf16"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ping_hello),
		cmocka_unit_test(test_submit_streams),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_malformed_ignored),
		cmocka_unit_test(test_adapters),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_disconnect_cancels),
		cmocka_unit_test(test_sigterm_exits_0),
		cmocka_unit_test(test_bad_invocations),
		cmocka_unit_test(test_kv_dtype_bf16), /* last: it leaves a socket open */
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
