/*
 * tests/gateway/fake_worker.h — a scripted stand-in for loom-worker, for the
 * gateway's tests: a real nng pair1 socket listening in the test process that
 * answers PINGs with HELLO+STATS (the STATS the test set in `stats`; unless
 * told to stay silent), records the SUBMITs (the last one's prompt ids too),
 * CANCELs and ADAPTERs it gets, optionally answers each SUBMIT with one STEP,
 * and lets the test send STEP / ERROR messages itself. Header-only (static inline
 * functions) so that each test program that needs it includes it.
 */
#ifndef TESTS_GATEWAY_FAKE_WORKER_H
#define TESTS_GATEWAY_FAKE_WORKER_H

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/proto.h"

#define MAXREC 64

typedef struct fake {
	char url[128];
	nng_socket sock;
	bool open;
	pthread_t th;
	atomic_bool stop;
	atomic_bool answer;     /* answer PINGs */
	pthread_mutex_t mu;
	uint64_t submits[MAXREC];
	uint64_t seeds[MAXREC]; /* each SUBMIT's sampling.seed */
	int n_submits;
	uint64_t cancels[MAXREC];
	int n_cancels;
	loom_msg_submit last;   /* copy of the last SUBMIT's scalars (ids: last_prompt) */
	uint32_t last_n_prompt;
	int32_t last_prompt[512]; /* its first 512 prompt ids */
	loom_msg_stats stats;   /* sent with every HELLO (under mu) */
	char model[LOOM_NAME_MAX];
	/* ADAPTER messages, in arrival order, with the number of SUBMITs seen before each */
	char ad_name[MAXREC][LOOM_NAME_MAX];
	char ad_base[MAXREC][LOOM_NAME_MAX];
	char ad_path[MAXREC][512];
	char ad_sha[MAXREC][LOOM_SHA_HEX];
	int ad_after_submits[MAXREC];
	int n_adapters;
	/* BLOB answers: count, the last one's fields; data copied into blob_buf at its offset */
	int n_blobs;
	uint64_t blob_total, blob_offset;
	uint32_t blob_len;
	uint8_t *blob_buf;
	size_t blob_cap;
	/* sent after each STATS when send_res (items owned by the test) */
	bool send_res;
	loom_msg_residency res;
	/* MODEL messages, in arrival order */
	char mod_name[MAXREC][LOOM_NAME_MAX];
	char mod_sha[MAXREC][LOOM_SHA_HEX];
	int n_model_msgs;
	int adapter_delay_ms;   /* time each ADAPTER takes to "load" (nothing else is read) */
	/* when n_auto > 0, every SUBMIT is answered with STEP{auto_ids, auto_finish} */
	int32_t auto_ids[16];
	uint32_t n_auto;
	int auto_finish;
} fake;

static int fake_seq;

static inline void send_to_gateway(fake *f, const loom_msg *m)
{
	void *buf;
	size_t len;
	if (loom_msg_encode(m, &buf, &len) != LOOM_OK)
		return;
	nng_send(f->sock, buf, len, 0);
	loom_free(buf);
}

static inline void *fake_main(void *arg)
{
	fake *f = arg;
	while (!atomic_load(&f->stop)) {
		nng_msg *msg;
		if (nng_recvmsg(f->sock, &msg, 0) != 0)
			continue; /* timeout (or closed: stop is set) */
		loom_msg m;
		if (loom_msg_decode(nng_msg_body(msg), nng_msg_len(msg), &m) == LOOM_OK) {
			if (m.type == LOOM_MSG_PING && atomic_load(&f->answer)) {
				/* its own model, then every model a MODEL named (as a worker does) */
				char names[1 + MAXREC][LOOM_NAME_MAX];
				uint32_t nn = 0;
				snprintf(names[nn++], sizeof names[0], "%s", f->model);
				pthread_mutex_lock(&f->mu);
				for (int k = 0; k < f->n_model_msgs; k++)
					if (strcmp(f->mod_name[k], f->model))
						snprintf(names[nn++], sizeof names[0], "%s", f->mod_name[k]);
				pthread_mutex_unlock(&f->mu);
				loom_msg h = {.type = LOOM_MSG_HELLO};
				snprintf(h.u.hello.worker_id, sizeof h.u.hello.worker_id, "fake");
				snprintf(h.u.hello.backend, sizeof h.u.hello.backend, "cpu");
				h.u.hello.proto_version = LOOM_PROTO_VERSION;
				h.u.hello.ping_seq = m.u.ping.seq;
				h.u.hello.n_models = nn;
				h.u.hello.models = names;
				send_to_gateway(f, &h);
				pthread_mutex_lock(&f->mu);
				loom_msg st = {.type = LOOM_MSG_STATS, .u.stats = f->stats};
				pthread_mutex_unlock(&f->mu);
				send_to_gateway(f, &st);
				pthread_mutex_lock(&f->mu);
				loom_msg rs = {.type = LOOM_MSG_RESIDENCY, .u.residency = f->res};
				bool send_res = f->send_res;
				if (send_res)
					send_to_gateway(f, &rs);
				pthread_mutex_unlock(&f->mu);
			} else if (m.type == LOOM_MSG_SUBMIT) {
				pthread_mutex_lock(&f->mu);
				if (f->n_submits < MAXREC) {
					f->seeds[f->n_submits] = m.u.submit.sampling.seed;
					f->submits[f->n_submits++] = m.u.submit.req;
				}
				f->last = m.u.submit;
				f->last.prompt_ids = NULL;
				f->last.sampling.stop_ids = NULL;
				f->last_n_prompt = m.u.submit.n_prompt;
				for (uint32_t k = 0; k < m.u.submit.n_prompt && k < 512; k++)
					f->last_prompt[k] = m.u.submit.prompt_ids[k];
				pthread_mutex_unlock(&f->mu);
				if (f->n_auto) {
					loom_step_item it = {.req = m.u.submit.req, .n_ids = f->n_auto,
							     .ids = f->auto_ids,
							     .finish = (uint8_t)f->auto_finish,
							     .n_prompt = m.u.submit.n_prompt};
					loom_msg sm = {.type = LOOM_MSG_STEP,
						       .u.step = {.n_items = 1, .items = &it}};
					send_to_gateway(f, &sm);
				}
			} else if (m.type == LOOM_MSG_ADAPTER) {
				pthread_mutex_lock(&f->mu);
				if (f->n_adapters < MAXREC) {
					int k = f->n_adapters++;
					snprintf(f->ad_name[k], sizeof f->ad_name[k], "%s", m.u.adapter.name);
					snprintf(f->ad_base[k], sizeof f->ad_base[k], "%s",
						 m.u.adapter.base_model);
					snprintf(f->ad_path[k], sizeof f->ad_path[k], "%s", m.u.adapter.path);
					snprintf(f->ad_sha[k], sizeof f->ad_sha[k], "%s", m.u.adapter.sha);
					f->ad_after_submits[k] = f->n_submits;
				}
				pthread_mutex_unlock(&f->mu);
				if (f->adapter_delay_ms)
					usleep((useconds_t)f->adapter_delay_ms * 1000);
			} else if (m.type == LOOM_MSG_BLOB) {
				pthread_mutex_lock(&f->mu);
				const loom_msg_blob *b = &m.u.blob;
				f->n_blobs++;
				f->blob_total = b->total;
				f->blob_offset = b->offset;
				f->blob_len = b->len;
				if (f->blob_buf && b->len && b->offset + b->len <= f->blob_cap)
					memcpy(f->blob_buf + b->offset, b->data, b->len);
				pthread_mutex_unlock(&f->mu);
			} else if (m.type == LOOM_MSG_MODEL) {
				pthread_mutex_lock(&f->mu);
				if (f->n_model_msgs < MAXREC) {
					int k = f->n_model_msgs++;
					snprintf(f->mod_name[k], sizeof f->mod_name[k], "%s", m.u.model.name);
					snprintf(f->mod_sha[k], sizeof f->mod_sha[k], "%s", m.u.model.sha);
				}
				pthread_mutex_unlock(&f->mu);
			} else if (m.type == LOOM_MSG_CANCEL) {
				pthread_mutex_lock(&f->mu);
				if (f->n_cancels < MAXREC)
					f->cancels[f->n_cancels++] = m.u.cancel.req;
				pthread_mutex_unlock(&f->mu);
			}
		}
		loom_msg_fini(&m);
		nng_msg_free(msg);
	}
	return NULL;
}

/* A fake worker listening at url (NULL = a fresh ipc path). */
static inline void fake_start_at(fake *f, const char *model, const char *url)
{
	memset(f, 0, sizeof *f);
	if (url)
		snprintf(f->url, sizeof f->url, "%s", url);
	else
		snprintf(f->url, sizeof f->url, "ipc:///tmp/loom-gwt-%d-%d.ipc", (int)getpid(),
			 fake_seq++);
	snprintf(f->model, sizeof f->model, "%s", model);
	pthread_mutex_init(&f->mu, NULL);
	atomic_init(&f->answer, true);
	if (nng_pair1_open(&f->sock) != 0)
		abort();
	nng_socket_set_ms(f->sock, NNG_OPT_RECVTIMEO, 20);
	nng_socket_set_ms(f->sock, NNG_OPT_SENDTIMEO, 200); /* never block once the gateway is gone */
	if (nng_listen(f->sock, f->url, NULL, 0) != 0) {
		fprintf(stderr, "fake worker: cannot listen on %s\n", f->url);
		abort();
	}
	f->open = true;
	if (pthread_create(&f->th, NULL, fake_main, f) != 0)
		abort();
}

static inline void fake_start(fake *f, const char *model)
{
	fake_start_at(f, model, NULL);
}

/* Closes the socket (the gateway sees the pipe go) and joins the thread. */
static inline void fake_kill(fake *f)
{
	if (!f->open)
		return;
	atomic_store(&f->stop, true);
	pthread_join(f->th, NULL);
	nng_close(f->sock);
	f->open = false;
	char path[160];
	snprintf(path, sizeof path, "%s", f->url + strlen("ipc://"));
	unlink(path);
}

/* SUBMITs received so far (read under the fake's mutex). */
static inline int fake_nsub(fake *f)
{
	pthread_mutex_lock(&f->mu);
	int n = f->n_submits;
	pthread_mutex_unlock(&f->mu);
	return n;
}

static inline int fake_count(fake *f, bool cancels, uint64_t id)
{
	int n = 0;
	pthread_mutex_lock(&f->mu);
	for (int i = 0; i < (cancels ? f->n_cancels : f->n_submits); i++)
		n += (cancels ? f->cancels[i] : f->submits[i]) == id;
	pthread_mutex_unlock(&f->mu);
	return n;
}

#endif
