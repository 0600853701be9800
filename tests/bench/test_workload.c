/*
 * tests/bench/test_workload.c — the prefix-caching workloads of bn_workload,
 * without a server: with --shared-prefix every prompt starts with exactly
 * the same N ids (across adapters; another seed or sweep point, another
 * prefix); with --turns each turn's prompt is the previous prompt, the ids
 * the server generated and a new message, one adapter and class per
 * conversation, content independent of how conversations interleave; the
 * options' checks and their place in the configuration JSON.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bn_config.h"
#include "bench/bn_workload.h"
#include "common/alloc.h"

#define MAX_ARGS 32

static loom_err parse(bn_config *c, const char *line)
{
	static char buf[1024];
	static char *argv[MAX_ARGS];
	int argc = 0, at;
	bn_action act;
	snprintf(buf, sizeof buf, "%s", line);
	argv[argc++] = "loom-bench";
	for (char *tok = strtok(buf, " "); tok && argc < MAX_ARGS; tok = strtok(NULL, " "))
		argv[argc++] = tok;
	bn_config_init(c);
	return bn_config_parse(c, argc, argv, &act, &at);
}

/* A request's prompt ids, parsed back from its body. */
typedef struct prompt {
	int32_t *v;
	size_t n;
	json_t *body;
} prompt;

static prompt body_of(bn_workload *w, const bn_reqspec *s)
{
	char *text;
	prompt p = { 0 };
	assert_int_equal(bn_workload_body(w, s, &text), LOOM_OK);
	p.body = json_loads(text, 0, NULL);
	if (!p.body)
		fail_msg("body is not JSON: %.200s", text);
	loom_free(text);
	json_t *a = json_object_get(p.body, "prompt");
	p.n = json_array_size(a);
	p.v = loom_malloc((p.n ? p.n : 1) * sizeof *p.v);
	assert_non_null(p.v);
	for (size_t i = 0; i < p.n; i++)
		p.v[i] = (int32_t)json_integer_value(json_array_get(a, i));
	assert_int_equal(p.n, s->prompt_tokens);
	assert_int_equal(json_integer_value(json_object_get(p.body, "max_tokens")),
			 s->output_tokens);
	return p;
}

static void prompt_free(prompt *p)
{
	loom_free(p->v);
	json_decref(p->body);
	memset(p, 0, sizeof *p);
}

/* The first n ids of a workload's first request. */
static void first_prefix(const char *line, int point, int32_t *out, int n)
{
	bn_config c, pc;
	bn_workload *w;
	bn_reqspec s;
	assert_int_equal(parse(&c, line), LOOM_OK);
	bn_config_point(&c, point, &pc);
	assert_int_equal(bn_workload_create(&pc, &w), LOOM_OK);
	assert_int_equal(bn_workload_next(w, &s), LOOM_OK);
	prompt p = body_of(w, &s);
	memcpy(out, p.v, (size_t)n * sizeof *out);
	prompt_free(&p);
	bn_workload_destroy(w);
	bn_config_fini(&c);
}

static void test_shared_prefix(void **state)
{
	enum { N = 64, REQS = 60 };
	bn_config c;
	bn_workload *w;
	int32_t prefix[N];
	int adapters_seen = 0, differs_after = 0;
	(void)state;
	assert_int_equal(parse(&c, "--requests 60 --shared-prefix 64 --prompt-len uniform:1:40 "
			       "--vocab 1000 --adapters 4 --popularity distinct"), LOOM_OK);
	assert_int_equal(bn_workload_create(&c, &w), LOOM_OK);
	int32_t first_after = -1;
	for (int k = 0; k < REQS; k++) {
		bn_reqspec s;
		assert_int_equal(bn_workload_next(w, &s), LOOM_OK);
		assert_int_equal(s.conv, -1);
		assert_int_equal(s.turn, 1);
		assert_true(s.prompt_tokens >= N + 1 && s.prompt_tokens <= N + 40);
		prompt p = body_of(w, &s);
		assert_null(json_object_get(p.body, "return_token_ids"));
		if (k == 0) {
			memcpy(prefix, p.v, sizeof prefix);
			first_after = p.v[N];
		}
		for (int i = 0; i < N; i++)
			assert_int_equal(p.v[i], prefix[i]);
		for (size_t i = 0; i < p.n; i++)
			assert_true(p.v[i] >= 3 && p.v[i] <= 999);
		differs_after |= p.v[N] != first_after;
		adapters_seen |= 1 << s.adapter;
		prompt_free(&p);
	}
	assert_int_equal(adapters_seen, 0xf); /* every adapter shares the prefix */
	assert_true(differs_after);           /* exactly N shared: id N is the request's own */
	int distinct = 0;
	for (int i = 1; i < N; i++)
		distinct |= prefix[i] != prefix[0];
	assert_true(distinct);
	bn_workload_destroy(w);
	bn_config_fini(&c);

	/* the prefix is a function of the seed and the sweep point */
	int32_t a[N], b[N], s2[N], pt1[N];
	first_prefix("--requests 1 --shared-prefix 64 --vocab 1000", 0, a, N);
	first_prefix("--requests 1 --shared-prefix 64 --vocab 1000 --prompt-len 7", 0, b, N);
	first_prefix("--requests 1 --shared-prefix 64 --vocab 1000 --seed 2", 0, s2, N);
	first_prefix("--requests 1 --shared-prefix 64 --vocab 1000 --sweep rate=1,2", 1, pt1, N);
	assert_memory_equal(a, b, sizeof a);
	assert_memory_not_equal(a, s2, sizeof a);
	assert_memory_not_equal(a, pt1, sizeof a);
}

/* Without --shared-prefix the prompt ids are those of earlier versions. */
static void test_no_prefix_ids_unchanged(void **state)
{
	bn_config c;
	bn_workload *w;
	bn_reqspec s;
	(void)state;
	/* no prefix: the ids stream of earlier versions is unchanged */
	assert_int_equal(parse(&c, "--requests 2 --prompt-len 5 --vocab 100"), LOOM_OK);
	assert_int_equal(bn_workload_create(&c, &w), LOOM_OK);
	assert_int_equal(bn_workload_next(w, &s), LOOM_OK);
	prompt p = body_of(w, &s);
	bn_rng r;
	bn_rng_seed(&r, 1, 6); /* STREAM_IDS of seed 1 */
	for (size_t i = 0; i < p.n; i++)
		assert_int_equal(p.v[i], bn_rng_range(&r, 3, 99));
	prompt_free(&p);
	bn_workload_destroy(w);
	bn_config_fini(&c);
}

/* One conversation turn by turn: fake outputs, checks each extension. */
typedef struct convo {
	bn_reqspec s;
	prompt last;    /* the current turn's prompt */
	int32_t out[64];
	int n_out;
	int msg_lo, msg_hi; /* --prompt-len uniform:lo:hi */
} convo;

/* Turn 1 of a new conversation, checked. */
static void begin(bn_workload *w, const bn_config *c, convo *cv, const int32_t *prefix,
		  int prefix_n)
{
	memset(cv, 0, sizeof *cv);
	cv->msg_lo = (int)c->prompt_len.a;
	cv->msg_hi = (int)c->prompt_len.b;
	assert_int_equal(bn_workload_next(w, &cv->s), LOOM_OK);
	assert_int_equal(cv->s.turn, 1);
	assert_true(cv->s.conv >= 0);
	cv->last = body_of(w, &cv->s);
	assert_true(json_is_true(json_object_get(cv->last.body, "return_token_ids")));
	if (prefix)
		assert_memory_equal(cv->last.v, prefix, (size_t)prefix_n * sizeof *prefix);
	assert_true(cv->last.n >= (size_t)(prefix_n + cv->msg_lo));
	assert_true(cv->last.n <= (size_t)(prefix_n + cv->msg_hi));
}

/* Completes cv's current turn with made-up output ids (outside the prompt
 * vocabulary, so a copy is told from a draw) and takes the next turn. */
static loom_err step(bn_workload *w, convo *cv, int salt)
{
	bn_reqspec next;
	cv->n_out = cv->s.output_tokens;
	assert_true(cv->n_out <= 64);
	for (int i = 0; i < cv->n_out; i++)
		cv->out[i] = 5000 + salt * 100 + i;
	loom_err rc = bn_workload_follow(w, &cv->s, cv->out, cv->n_out, &next);
	if (rc)
		return rc;
	assert_int_equal(next.conv, cv->s.conv);
	assert_int_equal(next.turn, cv->s.turn + 1);
	assert_int_equal(next.adapter, cv->s.adapter);
	assert_int_equal(next.slo, cv->s.slo);
	/* previous prompt + exactly the generated ids + a new message */
	prompt p = body_of(w, &next);
	size_t n0 = cv->last.n, grown = (size_t)cv->n_out;
	assert_true(p.n >= n0 + grown + (size_t)cv->msg_lo);
	assert_true(p.n <= n0 + grown + (size_t)cv->msg_hi);
	assert_memory_equal(p.v, cv->last.v, n0 * sizeof *p.v);
	assert_memory_equal(p.v + n0, cv->out, grown * sizeof *p.v);
	prompt_free(&cv->last);
	cv->last = p;
	cv->s = next;
	return LOOM_OK;
}

static void test_turns_extend_exactly(void **state)
{
	enum { N = 32, T = 4 };
	bn_config c;
	bn_workload *w;
	convo a, b;
	int32_t prefix[N];
	(void)state;
	assert_int_equal(parse(&c, "--requests 100 --turns 4 --shared-prefix 32 --vocab 1000 "
			       "--prompt-len uniform:2:9 --output-len uniform:1:6 --concurrency 3 "
			       "--adapters 5 --slo-mix x:1,y:1"), LOOM_OK);
	assert_int_equal(bn_workload_create(&c, &w), LOOM_OK);
	/* the prefix is turn 1's first N ids; both conversations start with it */
	bn_reqspec probe;
	assert_int_equal(bn_workload_next(w, &probe), LOOM_OK);
	prompt pp = body_of(w, &probe);
	memcpy(prefix, pp.v, sizeof prefix);
	prompt_free(&pp);
	bn_workload_end(w, &probe);
	assert_int_equal(bn_workload_convs_open(w), 0);
	begin(w, &c, &a, prefix, N);
	begin(w, &c, &b, prefix, N);
	assert_int_equal(a.s.conv, 1);
	assert_int_equal(b.s.conv, 2);
	assert_int_equal(bn_workload_convs_open(w), 2);
	/* interleaved: a, b, a, a, b, b */
	assert_int_equal(step(w, &a, 1), LOOM_OK);
	assert_int_equal(step(w, &b, 2), LOOM_OK);
	assert_int_equal(step(w, &a, 3), LOOM_OK);
	assert_int_equal(step(w, &a, 4), LOOM_OK);
	assert_int_equal(a.s.turn, T);
	assert_int_equal(step(w, &a, 5), LOOM_ENOTFOUND); /* the last turn: over */
	assert_int_equal(bn_workload_convs_open(w), 1);
	assert_int_equal(step(w, &b, 6), LOOM_OK);
	assert_int_equal(step(w, &b, 7), LOOM_OK);
	assert_int_equal(step(w, &b, 8), LOOM_ENOTFOUND);
	assert_int_equal(bn_workload_convs_open(w), 0);
	/* a finished turn is no longer open: following it again is refused */
	bn_reqspec nx;
	assert_int_equal(bn_workload_follow(w, &a.s, a.out, 1, &nx), LOOM_EINVAL);
	char *body;
	assert_int_equal(bn_workload_body(w, &a.s, &body), LOOM_EINVAL);
	/* slots are reused: a third conversation, its turns still extend */
	convo d;
	begin(w, &c, &d, prefix, N);
	assert_int_equal(d.s.conv, 3);
	assert_int_equal(step(w, &d, 9), LOOM_OK);
	/* the server returned no ids: stand-ins of the same count keep the shape */
	bn_reqspec next;
	assert_int_equal(bn_workload_follow(w, &d.s, NULL, 5, &next), LOOM_OK);
	prompt p = body_of(w, &next);
	assert_memory_equal(p.v, d.last.v, d.last.n * sizeof *p.v);
	assert_true(p.n >= d.last.n + 5 + 2 && p.n <= d.last.n + 5 + 9);
	for (size_t i = d.last.n; i < p.n; i++)
		assert_true(p.v[i] >= 3 && p.v[i] <= 999);
	prompt_free(&p);
	/* a failed turn ends its conversation */
	bn_workload_end(w, &next);
	assert_int_equal(bn_workload_convs_open(w), 0);
	assert_int_equal(bn_workload_convs_started(w), 4);
	prompt_free(&a.last);
	prompt_free(&b.last);
	prompt_free(&d.last);
	bn_workload_destroy(w);
	bn_config_fini(&c);
}

/* Conversation k's messages do not depend on what ran beside it: three
 * conversations stepped in the given order; out[k][t] gets a copy of
 * conversation k's turn t+1 prompt ids (t = 1, 2). */
static void run_conv_sequence(bn_workload *w, const bn_config *c, const int *order,
			      int32_t *out[3][3], size_t n[3][3])
{
	convo cv[3];
	for (int k = 0; k < 3; k++)
		begin(w, c, &cv[k], NULL, c->shared_prefix);
	for (int i = 0; i < 6; i++) {
		int k = order[i];
		assert_int_equal(step(w, &cv[k], k), LOOM_OK);
		int t = cv[k].s.turn - 1;
		n[k][t] = cv[k].last.n;
		out[k][t] = loom_malloc(n[k][t] * sizeof **out[k]);
		assert_non_null(out[k][t]);
		memcpy(out[k][t], cv[k].last.v, n[k][t] * sizeof **out[k]);
	}
	for (int k = 0; k < 3; k++)
		prompt_free(&cv[k].last);
}

static void test_turns_independent_of_timing(void **state)
{
	bn_config c;
	bn_workload *w1, *w2;
	static const int in_turn[6] = { 0, 0, 1, 1, 2, 2 }, mixed[6] = { 2, 1, 0, 2, 1, 0 };
	int32_t *x[3][3], *y[3][3];
	size_t nx[3][3], ny[3][3];
	(void)state;
	assert_int_equal(parse(&c, "--requests 100 --turns 3 --shared-prefix 8 --vocab 500 "
			       "--prompt-len uniform:1:20 --output-len uniform:1:30 --adapters 9 "
			       "--popularity zipf:1"), LOOM_OK);
	assert_int_equal(bn_workload_create(&c, &w1), LOOM_OK);
	assert_int_equal(bn_workload_create(&c, &w2), LOOM_OK);
	run_conv_sequence(w1, &c, in_turn, x, nx);
	run_conv_sequence(w2, &c, mixed, y, ny);
	for (int k = 0; k < 3; k++)
		for (int t = 1; t < 3; t++) {
			assert_int_equal(nx[k][t], ny[k][t]);
			assert_memory_equal(x[k][t], y[k][t], nx[k][t] * sizeof *x[k][t]);
			loom_free(x[k][t]);
			loom_free(y[k][t]);
		}
	bn_workload_destroy(w1);
	bn_workload_destroy(w2);
	bn_config_fini(&c);
}

static void test_options(void **state)
{
	bn_config c;
	(void)state;
	assert_int_equal(parse(&c, "--requests 3 --turns 0"), LOOM_EINVAL);
	bn_config_fini(&c);
	assert_int_equal(parse(&c, "--requests 3 --shared-prefix -1"), LOOM_EINVAL);
	bn_config_fini(&c);
	assert_int_equal(parse(&c, "--requests 3 --turns x"), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "--turns"));
	bn_config_fini(&c);
	assert_int_equal(parse(&c, "--requests 3 --shared-prefix=300 --turns=5 --concurrency 16"),
			 LOOM_OK);
	assert_int_equal(c.shared_prefix, 300);
	assert_int_equal(c.turns, 5);
	json_t *j = bn_config_json(&c);
	assert_int_equal(json_integer_value(json_object_get(j, "shared_prefix")), 300);
	assert_int_equal(json_integer_value(json_object_get(j, "turns")), 5);
	json_decref(j);
	bn_config_fini(&c);
	/* defaults */
	assert_int_equal(parse(&c, "--requests 3"), LOOM_OK);
	assert_int_equal(c.shared_prefix, 0);
	assert_int_equal(c.turns, 1);
	bn_config_fini(&c);
	/* a trace's rows are independent requests */
	const char *tmp = getenv("LOOM_TMP") ? getenv("LOOM_TMP") : "/tmp";
	char path[256], line[400];
	snprintf(path, sizeof path, "%s/bench-turns-trace-%d.csv", tmp, (int)getpid());
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("0,,4,2\n1,,8,3\n", f);
	fclose(f);
	snprintf(line, sizeof line, "--trace %s --turns 2", path);
	assert_int_equal(parse(&c, line), LOOM_EINVAL);
	assert_non_null(strstr(loom_errmsg(), "--turns"));
	bn_config_fini(&c);
	/* ... but take the shared prefix before their own prompt */
	snprintf(line, sizeof line, "--trace %s --shared-prefix 16", path);
	assert_int_equal(parse(&c, line), LOOM_OK);
	bn_workload *w;
	bn_reqspec s;
	assert_int_equal(bn_workload_create(&c, &w), LOOM_OK);
	assert_int_equal(bn_workload_next(w, &s), LOOM_OK);
	assert_int_equal(s.prompt_tokens, 20);
	prompt p = body_of(w, &s);
	prompt_free(&p);
	bn_workload_destroy(w);
	bn_config_fini(&c);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shared_prefix),
		cmocka_unit_test(test_no_prefix_ids_unchanged),
		cmocka_unit_test(test_turns_extend_exactly),
		cmocka_unit_test(test_turns_independent_of_timing),
		cmocka_unit_test(test_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
