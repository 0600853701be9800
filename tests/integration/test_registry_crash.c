/*
 * tests/integration/test_registry_crash.c — crash safety of the registry.
 * A real gateway (store, admin API) and worker (reading that store) serve
 * stories260k; a writer process streams registrations, replacements (path
 * route and multipart uploads) and a few deletes over a handful of names and
 * adapter folders while the gateway is SIGKILLed at a random moment, 60
 * rounds. After each kill, with the gateway dead, the store (opened
 * read-only here, as a worker sees it) holds only complete records: every adapter's blob exists
 * and re-hashes to its sha256, and that sha256 is the blob of one of the
 * folders (never a mix). After each restart the gateway lists exactly the
 * store's records, its upload area is empty, and every listed adapter
 * serves: a greedy completion gives the tokens of the folder its sha names.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>

#include "adapters/adapter.h"
#include "common/model_config.h"
#include "common/proto.h"
#include "common/sha256.h"
#include "tests/gateway/admin_stack.h"

#define N_FOLDERS 4
#define N_NAMES 5
#define ROUNDS 60
#define NTOK 6

static char *tmp;
static char root[PATH_MAX], stories[PATH_MAX];
static char folder[N_FOLDERS][PATH_MAX + 32];
static char sha[N_FOLDERS][65];      /* the blob each folder imports to */
static char expect[N_FOLDERS][256];  /* its greedy tokens */
static ad_node node;
static const char *gw_args[8];
static char model_arg[PATH_MAX + 32], dir_arg[PATH_MAX + 32];

/* The adapter blob's sha256 of folder f, computed here as the gateway does. */
static void blob_sha(const char *dir, char out[65])
{
	loom_model_config cfg;
	ad_adapter *ad;
	void *blob;
	size_t len;
	uint8_t h[32];
	assert_int_equal(loom_model_config_load(stories, &cfg), LOOM_OK);
	assert_int_equal(ad_adapter_load(dir, "x", &cfg, &ad), LOOM_OK);
	assert_int_equal(ad_adapter_serialize(ad, &blob, &len), LOOM_OK);
	loom_sha256(blob, len, h);
	loom_sha256_hex(h, out);
	loom_free(blob);
	ad_adapter_destroy(ad);
}

static int setup(void **state)
{
	(void)state;
	tmp = lt_tmpdir("regcrash");
	if (!realpath(tmp, root) || !realpath(lt_shared_path("models/stories260k"), stories))
		return -1;
	static const char *const targets[N_FOLDERS] = {
		"q_proj,v_proj", "q_proj,k_proj,v_proj,o_proj", "gate_proj,up_proj,down_proj",
		"q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"};
	for (int i = 0; i < N_FOLDERS; i++) {
		snprintf(folder[i], sizeof folder[i], "%s/allowed/f%d", root, i);
		if (lt_sh("%s adapter --model %s --out %s --rank %d --alpha 16 --targets %s --seed %d "
			  ">/dev/null", lt_bin_path("loom-mkmodel"), stories, folder[i], 4 << (i % 3),
			  targets[i], 500 + i))
			return -1;
		blob_sha(folder[i], sha[i]);
	}
	snprintf(model_arg, sizeof model_arg, "stories=%s", stories);
	snprintf(dir_arg, sizeof dir_arg, "%s/allowed", root);
	const char *g[] = {"--model", model_arg, "--adapter-dir", dir_arg, NULL};
	memcpy(gw_args, g, sizeof g);
	ad_node_init(&node, root, "crash");
	if (ad_worker_start(&node, NULL) || ad_gateway_start(&node, gw_args, "ready"))
		return -1;
	/* what each folder serves, and that the gateway hashes it as computed here */
	for (int i = 0; i < N_FOLDERS; i++) {
		char body[PATH_MAX + 128], *resp, got[65];
		snprintf(body, sizeof body, "{\"name\":\"probe\",\"path\":\"%.4000s\"}", folder[i]);
		if (ad_json(&node, "POST", "/admin/adapters?replace=true", body, NULL, &resp) / 100 != 2)
			return -1;
		ad_field(resp, "sha256", got, sizeof got);
		loom_free(resp);
		if (strcmp(got, sha[i]) ||
		    ad_complete(&node, "probe", NTOK, expect[i], sizeof expect[i]) != 200)
			return -1;
		for (int k = 0; k < i; k++)
			if (!strcmp(expect[k], expect[i]))
				return -1; /* the folders must be told apart by their tokens */
	}
	if (ad_json(&node, "DELETE", "/admin/adapters/probe", NULL, NULL, NULL) != 200)
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

static int folder_of(const char *s)
{
	for (int i = 0; i < N_FOLDERS; i++)
		if (!strcmp(s, sha[i]))
			return i;
	return -1;
}

/* The writer: registrations, replacements and deletes until it is killed. */
static void writer(unsigned seed)
{
	srand(seed);
	for (;;) {
		char name[16], body[PATH_MAX + 128];
		int f = rand() % N_FOLDERS, op = rand() % 10;
		snprintf(name, sizeof name, "c%d", rand() % N_NAMES);
		if (op < 5) {
			snprintf(body, sizeof body, "{\"name\":\"%s\",\"path\":\"%.4000s\"}", name, folder[f]);
			ad_json(&node, "POST", "/admin/adapters?replace=true", body, NULL, NULL);
		} else if (op < 9) {
			ad_upload(&node, name, folder[f], "stories", true, NULL, NULL);
		} else {
			char path[64];
			snprintf(path, sizeof path, "/admin/adapters/%s", name);
			ad_json(&node, "DELETE", path, NULL, NULL, NULL);
		}
	}
}

typedef struct rec_set {
	int n;
	char name[N_NAMES + 4][LOOM_NAME_MAX];
	char sha[N_NAMES + 4][65];
} rec_set;

static int collect(void *ctx, const st_adapter_rec *r)
{
	rec_set *s = ctx;
	assert_true(s->n < N_NAMES + 4);
	snprintf(s->name[s->n], sizeof s->name[0], "%s", r->name);
	loom_sha256_hex(r->sha, s->sha[s->n]);
	s->n++;
	return 0;
}

/* With the gateway dead: every record complete, every blob verifies. */
static void check_store(rec_set *s)
{
	st_store *st;
	memset(s, 0, sizeof *s);
	assert_int_equal(st_open(node.store, ST_RDONLY, &st), LOOM_OK);
	assert_int_equal(st_adapter_each(st, collect, s), LOOM_OK);
	for (int i = 0; i < s->n; i++) {
		st_adapter_rec r;
		st_view v;
		assert_int_equal(st_adapter_get(st, s->name[i], &r), LOOM_OK);
		assert_string_equal(r.base_model, "stories");
		if (st_blob_get(st, r.sha, 1, &v) != LOOM_OK)
			fail_msg("adapter %s: blob %s: %s", s->name[i], s->sha[i], loom_errmsg());
		assert_int_equal(v.len, r.bytes);
		st_view_release(&v);
		if (folder_of(s->sha[i]) < 0)
			fail_msg("adapter %s: sha %s is no folder's blob", s->name[i], s->sha[i]);
	}
	st_model_rec m;
	st_view v;
	assert_int_equal(st_model_get(st, "stories", &m), LOOM_OK);
	assert_int_equal(st_blob_get(st, m.sha, 1, &v), LOOM_OK);
	st_view_release(&v);
	assert_int_equal(st_blob_get(st, m.tokenizer_sha, 1, &v), LOOM_OK);
	st_view_release(&v);
	st_close(st);
}

/* After a restart: the gateway lists exactly the store's records, and each serves. */
static void check_served(const rec_set *s)
{
	char *resp, ids[256];
	assert_int_equal(lt_sh("test -z \"$(ls -A %s/uploads)\"", node.store), 0);
	assert_int_equal(ad_json(&node, "GET", "/admin/adapters", NULL, NULL, &resp), 200);
	json_t *j = json_loads(resp, 0, NULL);
	loom_free(resp);
	json_t *data = json_object_get(j, "data");
	assert_int_equal(json_array_size(data), (size_t)s->n);
	for (int i = 0; i < s->n; i++) {
		json_t *e = json_array_get(data, (size_t)i);
		const char *name = json_string_value(json_object_get(e, "id"));
		const char *h = json_string_value(json_object_get(e, "sha256"));
		assert_string_equal(name, s->name[i]); /* both in name order */
		assert_string_equal(h, s->sha[i]);
		int f = folder_of(h);
		assert_true(f >= 0);
		assert_int_equal(ad_complete(&node, name, NTOK, ids, sizeof ids), 200);
		if (strcmp(ids, expect[f]))
			fail_msg("adapter %s (folder %d): tokens %s, want %s", name, f, ids, expect[f]);
	}
	json_decref(j);
}

static void test_kill_during_registrations(void **state)
{
	(void)state;
	int killed_busy = 0;
	srand(20261125u);
	for (int round = 0; round < ROUNDS; round++) {
		pid_t w = fork();
		assert_true(w >= 0);
		if (w == 0) {
			writer((unsigned)round * 7919u + 1);
			_exit(0);
		}
		usleep((useconds_t)(rand() % 120) * 1000);
		kill(node.gw.pid, SIGKILL);
		waitpid(node.gw.pid, NULL, 0);
		node.gw.pid = 0;
		kill(w, SIGKILL);
		waitpid(w, NULL, 0);
		rec_set s;
		check_store(&s);
		killed_busy += s.n > 0;
		if (ad_gateway_start(&node, gw_args, "ready"))
			fail_msg("round %d: the gateway did not come back", round);
		/* read again: a writer killed inside its last commit leaves that commit
		 * on disk but unseen by readers until the next writer repairs LMDB's
		 * lock file, which the restarted gateway does (both states are whole) */
		check_store(&s);
		check_served(&s);
	}
	assert_true(killed_busy > ROUNDS / 2); /* the writer did get work in */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kill_during_registrations),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
