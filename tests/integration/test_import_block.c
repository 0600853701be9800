/*
 * tests/integration/test_import_block.c — no blocking file I/O under the
 * registry's lock, and a bounded shutdown, against a real gateway and worker
 * (stories260k, adapters written by loom-mkmodel, --adapter-dir):
 * - imports whose files are FIFOs in an allowed folder (an adapter's
 *   adapter_config.json, an adapter's adapter_model.safetensors, a model's
 *   tokenizer.json): a 400 naming the FIFO within a second, while another
 *   admin import and a completion on it go through meanwhile (before, open()
 *   blocked for ever holding the registry mutex, and every later admin write
 *   and then every request waited behind it);
 * - SIGTERM while a FIFO import, a stream, an idle connection and a
 *   half-sent upload are in flight: the gateway exits 0 within 5 s.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>

#include "tests/gateway/admin_stack.h"
#include "tests/gateway/gw_proc.h"

static char *tmp;
static char root[PATH_MAX], allowed[PATH_MAX + 16], stories[PATH_MAX];
static ad_node node;

static int setup(void **state)
{
	(void)state;
	tmp = lt_tmpdir("import-block");
	if (!realpath(tmp, root) || !realpath(lt_shared_path("models/stories260k"), stories))
		return -1;
	snprintf(allowed, sizeof allowed, "%s/allowed", root);
	/* a1: a good adapter; fifo_cfg / fifo_st: one file a FIFO; fifo_model: a
	 * model folder whose tokenizer.json is a FIFO */
	if (lt_sh("%s adapter --model %s --out %s/a1 --rank 8 --alpha 16 --targets q_proj,v_proj "
		  "--seed 7 >/dev/null", lt_bin_path("loom-mkmodel"), stories, allowed) ||
	    lt_sh("cd %s && mkdir fifo_cfg fifo_st fifo_model && mkfifo fifo_cfg/adapter_config.json "
		  "&& cp a1/adapter_config.json fifo_st/ && mkfifo fifo_st/adapter_model.safetensors "
		  "&& cp %s/config.json %s/model.safetensors fifo_model/ && "
		  "mkfifo fifo_model/tokenizer.json", allowed, stories, stories))
		return -1;
	char model[3 * PATH_MAX];
	snprintf(model, sizeof model, "stories=%s", stories);
	const char *gx[] = {"--model", model, "--adapter-dir", allowed, NULL};
	ad_node_init(&node, root, "main");
	if (ad_worker_start(&node, NULL) || ad_gateway_start(&node, gx, "ready"))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	ad_node_stop(&node);
	loom_free(tmp);
	return 0;
}

/* A POST of a JSON body with a deadline: the status (0 = none in time),
 * the elapsed ms, the body. */
typedef struct post {
	const char *path;
	char body[3 * PATH_MAX];
	long timeout_ms;
	long status;
	int64_t ms;
	char resp[2048];
} post;

static void *post_main(void *arg)
{
	post *p = arg;
	char url[256];
	lt_resp r;
	snprintf(url, sizeof url, "%s%s", node.url, p->path);
	int64_t t0 = gwp_ms();
	p->status = lt_http("POST", url, p->body, NULL, p->timeout_ms, &r) == 0 ? r.status : 0;
	p->ms = gwp_ms() - t0;
	snprintf(p->resp, sizeof p->resp, "%s", r.body ? r.body : "");
	lt_resp_free(&r);
	return NULL;
}

static void fifo_adapter(post *p, const char *name, const char *folder)
{
	p->path = "/admin/adapters";
	p->timeout_ms = 5000;
	snprintf(p->body, sizeof p->body, "{\"name\":\"%s\",\"base_model\":\"stories\","
		 "\"path\":\"%s/%s\"}", name, allowed, folder);
}

static void assert_fifo_refused(const post *p)
{
	assert_int_equal(p->status, 400);
	assert_true(p->ms < 1000);
	assert_non_null(strstr(p->resp, "not a regular file (a FIFO)"));
	assert_non_null(strstr(p->resp, "\"type\":\"invalid_request_error\""));
}

static void test_fifo_imports(void **state)
{
	(void)state;
	post f1, good;
	pthread_t th;
	fifo_adapter(&f1, "f1", "fifo_cfg");
	assert_int_equal(pthread_create(&th, NULL, post_main, &f1), 0);
	usleep(100 * 1000);
	/* meanwhile another import and a completion on it */
	fifo_adapter(&good, "good", "a1");
	post_main(&good);
	assert_int_equal(good.status, 201);
	post c = {.path = "/v1/completions", .timeout_ms = 10000};
	snprintf(c.body, sizeof c.body, "{\"model\":\"good\",\"prompt\":\"Once upon a time\","
		 "\"max_tokens\":4,\"temperature\":0}");
	post_main(&c);
	assert_int_equal(c.status, 200);
	pthread_join(th, NULL);
	assert_fifo_refused(&f1);
	/* the weights a FIFO */
	post f2;
	fifo_adapter(&f2, "f2", "fifo_st");
	post_main(&f2);
	assert_fifo_refused(&f2);
	/* a model whose tokenizer.json is a FIFO */
	post f3 = {.path = "/admin/models", .timeout_ms = 5000};
	snprintf(f3.body, sizeof f3.body, "{\"name\":\"fm\",\"path\":\"%s/fifo_model\"}", allowed);
	post_main(&f3);
	assert_fifo_refused(&f3);
	/* nothing of them was registered */
	lt_resp r;
	char url[128];
	snprintf(url, sizeof url, "%s/v1/models", node.url);
	assert_int_equal(lt_http("GET", url, NULL, NULL, 5000, &r), 0);
	assert_int_equal(r.status, 200);
	assert_null(strstr(r.body, "\"f1\""));
	assert_null(strstr(r.body, "\"f2\""));
	assert_null(strstr(r.body, "\"fm\""));
	assert_non_null(strstr(r.body, "\"good\""));
	lt_resp_free(&r);
}

static void test_sigterm_in_flight(void **state)
{
	(void)state;
	post f;
	pthread_t th;
	fifo_adapter(&f, "f9", "fifo_cfg");
	f.timeout_ms = 8000;
	assert_int_equal(pthread_create(&th, NULL, post_main, &f), 0);
	/* a stream that runs for a while, an idle connection, a half-sent upload */
	int s = gwp_connect(node.port, NULL, 0), idle = gwp_connect(node.port, NULL, 0),
	    up = gwp_connect(node.port, NULL, 0);
	assert_true(s >= 0 && idle >= 0 && up >= 0);
	char req[512], body[] = "{\"model\":\"stories\",\"prompt\":\"Once\",\"stream\":true,"
				"\"max_tokens\":400,\"ignore_eos\":true}";
	snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
		 "application/json\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
	assert_true(gwp_send(s, req, strlen(req)));
	static const char upload[] =
		"PUT /admin/adapters/up HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
		"boundary=XyZ\r\nContent-Length: 100000\r\n\r\n--XyZ\r\nContent-Disposition: "
		"form-data; name=\"adapter_model\"; filename=\"m\"\r\n\r\nabc";
	assert_true(gwp_send(up, upload, sizeof upload - 1));
	usleep(300 * 1000);
	int64_t t0 = gwp_ms();
	int st = lt_stop(&node.gw, SIGTERM, 5000);
	int64_t ms = gwp_ms() - t0;
	node.gw.pid = 0;
	assert_int_equal(st, 0);
	assert_true(ms < 5000);
	pthread_join(th, NULL);
	close(s);
	close(idle);
	close(up);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fifo_imports),
		cmocka_unit_test(test_sigterm_in_flight),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
