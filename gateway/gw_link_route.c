/*
 * gateway/gw_link_route.c — the router: a per-worker model of step time,
 * TTFT predictions, the choice of a worker, and the batch queue's order.
 *
 * The step-time model. Every STATS (one per PING, i.e. every 200 ms) gives
 * the worker's mean recent iteration time (step_ms) and its counters. Between
 * two STATS the worker ran d_steps iterations that produced d_out tokens and
 * prefilled (queued_tokens before + prompt tokens that arrived - queued_tokens
 * now) tokens; their sum over d_steps is the interval's tokens per step x,
 * and (x, step_ms) is one sample of step_ms = a + b * x, fitted by least
 * squares with exponential forgetting (DECAY per sample), so the model
 * follows a machine whose speed changes (other load, another batch mix).
 * Until samples spread over x, the mean step is split evenly between a and
 * b; a worker with no sample yet borrows the running mean of the others'
 * fits (or a fixed prior), so a fresh worker looks neither free nor slow.
 *
 * The prediction for a request of P prompt tokens on a worker with Q
 * tokens waiting to be prefilled (STATS queued_tokens + submits STATS does
 * not show yet) and R sequences decoding or waiting: the Q + P tokens go
 * through in ceil((Q + P) / CHUNK) iterations (the worker's default token
 * budget per iteration), each costing a + b * R for the decodes riding along,
 * plus b per prefilled token, plus the load of the adapter / model when it is
 * not on the worker's device tier (the worker's measured mean cold-load time
 * from RESIDENCY: all of it from the store tier, a quarter from host RAM).
 * A worker also runs a bounded number of sequences at once: the most it was
 * seen running while others waited (in two successive STATS with steps run
 * between: a SUBMIT that just arrived counts as waiting until the worker's
 * next step admits it) is its slot count, and when the requests the gateway
 * has in flight there fill it, the request first waits for (excess + 1) of
 * them to end, one every mean request duration / slots (durations measured
 * here, send to end).
 *
 * Prefixes (gw_link_prefix.c): the prompt tokens a worker is estimated to
 * hold in its prefix cache (the run of the prompt's leading blocks sent
 * there before) are free: P counts only the others.
 *
 * The choice: among the workers that meet the request's TTFT budget, the
 * most resident tier first, then the lowest prediction; predictions within
 * the fits' noise of the lowest (TIE_FRAC, TIE_MS) count as equal, and among
 * those the worker holding more of the prompt wins (requests sharing a
 * prefix consolidate where it is, unless the prediction says its load costs
 * more than the prefill saved), then the one with the fewest requests in
 * flight, so a burst of unrelated requests spreads over equal workers
 * instead of piling onto the one whose fit happens to read a millisecond
 * faster.
 *
 * Room (no timing in it, so that a noisy fit cannot make a burst trickle):
 * fewer requests in flight there than its slots (lk_slots: --worker-slots),
 * and fewer than ROOM_TOKENS prompt tokens
 * waiting there (STATS + submits it does not show yet: a few iterations'
 * prefill budgets). Batch room, for a request without a TTFT target: room,
 * fewer than batch_per_worker such requests there when that cap is set,
 * the batch requests there plus the most requests with a TTFT target
 * seen there at once in the last PEAK_MS plus this one fit in the slots —
 * the slots interactive traffic needs stay free — and, only while requests
 * with a TTFT target run there, a predicted TTFT within room_ms (a quarter
 * of the tightest target): batch work yields to their first tokens, and a
 * worker without them takes a whole burst at once whatever its fit says.
 * Cost: O(workers) per request, under the link mutex.
 */
#include <math.h>
#include <string.h>

#include "gw_link_int.h"

#define DECAY 0.9
#define PRIOR_A_MS 5.0
#define PRIOR_B_MS 0.2
#define CHUNK 256.0
#define COLD_DEFAULT_MS 100.0
#define PEAK_MS 5000
#define PRIOR_SAMPLES 4 /* a fit lends itself to fresh workers from this many samples */
#define ROOM_TOKENS (4 * CHUNK) /* waiting prompt tokens beyond which a worker has no room */
#define RETRY_MAX_S 60
/* Two predictions closer than TIE_FRAC of the smaller, or TIE_MS, are equal
 * for the choice: the fits carry that much noise (a sample taken while the
 * machine was busy elsewhere), and on equal terms the worker with fewer
 * requests in flight gets the request, so that a burst spreads. */
#define TIE_FRAC 0.15
#define TIE_MS 3.0

/* Routing costs of the plain router: one request in flight weighs
 * COST_INFLIGHT; an adapter not on the worker's device tier, or a model to
 * swap in, adds the rest. */
#define COST_INFLIGHT 4
#define COST_AD_HOST 1
#define COST_AD_COLD 3
#define COST_MODEL_SWAP 6
/* The plain router's credit for a prompt's cached blocks there: one request
 * in flight per PFX_BLOCKS_PER_REQ blocks, at most PFX_MAX_CREDIT. */
#define PFX_BLOCKS_PER_REQ 4
#define PFX_MAX_CREDIT (2 * COST_INFLIGHT)

/* ---- the step-time model ---- */

static void refit(lk_perf *p)
{
	double det = p->s1 * p->sxx - p->sx * p->sx;
	double my = p->sy / p->s1, mx = p->sx / p->s1;
	double b = det > 1e-6 * p->s1 * p->s1 ? (p->s1 * p->sxy - p->sx * p->sy) / det : -1;
	double a = b >= 0 ? my - b * mx : -1;
	if (b < 0 || a < 0) {
		/* no spread in x yet (or a fit through noise): split the mean step
		 * evenly between its fixed part and its tokens */
		a = my / 2;
		b = mx > 1 ? my / 2 / mx : my / 2;
	}
	p->a_ms = a;
	p->b_ms = b;
}

void lk_perf_reset(lk_worker *w)
{
	memset(&w->perf, 0, sizeof w->perf);
}

void lk_perf_submitted(lk_worker *w, uint32_t n_prompt)
{
	lk_perf *p = &w->perf;
	int k = (int)(w->ping_seq % LK_PEND_SLOTS);
	if (p->pend[k].seq != w->ping_seq) {
		/* a slot still held by an older PING keeps counting under the new one */
		p->pend[k].seq = w->ping_seq;
	}
	p->pend[k].tokens += n_prompt;
	p->pend[k].reqs++;
	p->pend_tokens += n_prompt;
	p->pend_reqs++;
}

void lk_perf_finished(lk_worker *w, int64_t sent_ms)
{
	double d = (double)(gw_link_now_ms() - sent_ms);
	lk_perf *p = &w->perf;
	p->dur_ms = p->dur_ms > 0 ? 0.8 * p->dur_ms + 0.2 * d : d;
}

void lk_perf_load(lk_worker *w)
{
	lk_perf *p = &w->perf;
	int64_t now = gw_link_now_ms();
	uint32_t ia = w->inflight - w->batch_inflight;
	if (ia >= p->ia_peak || now - p->ia_peak_ms > PEAK_MS) {
		p->ia_peak = ia;
		p->ia_peak_ms = now;
	}
}

void lk_perf_hello(lk_worker *w, uint64_t seq)
{
	if (seq)
		w->perf.stats_seq = seq;
}

void lk_perf_stats(lk_worker *w, const loom_msg_stats *st)
{
	lk_perf *p = &w->perf;
	if (st->queued > 0 && p->has_prev && p->prev_queued > 0 && st->steps > p->prev_steps) {
		/* sequences waited through steps: it runs no more than this at once */
		uint32_t run = st->running < p->prev_running ? st->running : p->prev_running;
		if (run > p->slots)
			p->slots = run;
	}
	p->prev_queued = st->queued;
	p->prev_running = st->running;
	/* submits sent before the PING this STATS answers are in it now */
	for (int k = 0; k < LK_PEND_SLOTS; k++) {
		if (!p->pend[k].reqs || p->pend[k].seq >= p->stats_seq)
			continue;
		p->arrived += p->pend[k].tokens;
		p->pend_tokens -= p->pend[k].tokens;
		p->pend_reqs -= p->pend[k].reqs;
		p->pend[k].tokens = 0;
		p->pend[k].reqs = 0;
	}
	if (p->has_prev && st->steps > p->prev_steps && st->step_ms > 0) {
		double d_steps = (double)(st->steps - p->prev_steps);
		double d_out = st->tokens_out >= p->prev_tokens_out
				       ? (double)(st->tokens_out - p->prev_tokens_out) : 0;
		double pre = (double)p->prev_queued_tokens + (double)p->arrived -
			     (double)st->queued_tokens;
		double x = (d_out + (pre > 0 ? pre : 0)) / d_steps, y = st->step_ms;
		p->s1 = p->s1 * DECAY + 1;
		p->sx = p->sx * DECAY + x;
		p->sy = p->sy * DECAY + y;
		p->sxx = p->sxx * DECAY + x * x;
		p->sxy = p->sxy * DECAY + x * y;
		p->samples++;
		refit(p);
		gw_link *l = w->l;
		if (p->samples < PRIOR_SAMPLES) {
			/* too few to lend */
		} else if (l->prior_a_ms <= 0 && l->prior_b_ms <= 0) {
			l->prior_a_ms = p->a_ms;
			l->prior_b_ms = p->b_ms;
		} else {
			l->prior_a_ms = 0.5 * l->prior_a_ms + 0.5 * p->a_ms;
			l->prior_b_ms = 0.5 * l->prior_b_ms + 0.5 * p->b_ms;
		}
	}
	p->arrived = 0; /* from now on measured against this STATS's queued_tokens */
	p->has_prev = true;
	p->prev_steps = st->steps;
	p->prev_tokens_out = st->tokens_out;
	p->prev_queued_tokens = st->queued_tokens;
}

/* ---- predictions ---- */

static double cold_ms(const lk_worker *w)
{
	return w->res.cold_loads ? w->res.cold_load_ms / (double)w->res.cold_loads
				 : COLD_DEFAULT_MS;
}

static double load_ms(const lk_worker *w, const char *model, const char *adapter,
		      const char *sha)
{
	double ms = 0;
	if (!w->has_res)
		return 0;
	if (adapter && adapter[0]) {
		int t = lk_adapter_tier(w, adapter, sha);
		ms += t == LOOM_TIER_DEVICE ? 0 : t == LOOM_TIER_HOST ? cold_ms(w) / 4 : cold_ms(w);
	}
	if (model && model[0]) {
		int t = lk_model_tier(w, model);
		ms += t == LOOM_TIER_DEVICE ? 0 : t == LOOM_TIER_HOST ? cold_ms(w) / 4 : cold_ms(w);
	}
	return ms;
}

double lk_predict_ttft(const lk_worker *w, const char *model, const char *adapter,
		       const char *sha, uint32_t n_prompt)
{
	const lk_perf *p = &w->perf;
	const gw_link *l = w->l;
	bool prior = l->prior_a_ms > 0 || l->prior_b_ms > 0;
	double a = p->samples ? p->a_ms : prior ? l->prior_a_ms : PRIOR_A_MS;
	double b = p->samples ? p->b_ms : prior ? l->prior_b_ms : PRIOR_B_MS;
	double q = (double)p->pend_tokens, run = (double)p->pend_reqs;
	if (w->has_stats) {
		q += (double)w->stats.queued_tokens;
		run += (double)w->stats.running + (double)w->stats.queued;
	}
	double tokens = q + (double)n_prompt;
	double steps = ceil(tokens / CHUNK);
	if (steps < 1)
		steps = 1;
	double ms = steps * (a + b * run) + b * tokens + load_ms(w, model, adapter, sha);
	if (p->slots && w->inflight + 1 > p->slots && p->dur_ms > 0)
		ms += (double)(w->inflight + 1 - p->slots) * p->dur_ms / (double)p->slots;
	return ms;
}

uint32_t lk_slots(const gw_link *l, const lk_worker *w)
{
	/* Not the learned count: STATS.queued includes the SUBMITs that reached
	 * the worker during its current step, so under a closed loop with long
	 * steps it "learns" fewer slots than the worker has (12 of 32 seen). */
	(void)w;
	return l->worker_slots;
}

/* Under mu: w can start one more request within a few iterations. */
static bool has_room(gw_link *l, const lk_worker *w)
{
	uint64_t waiting = w->perf.pend_tokens + (w->has_stats ? w->stats.queued_tokens : 0);
	return w->inflight < lk_slots(l, w) && (double)waiting < ROOM_TOKENS;
}

/* Under mu: w can start one more request without a TTFT target now (pred_ms:
 * its predicted TTFT there). */
static bool has_batch_room(gw_link *l, lk_worker *w, double pred_ms)
{
	if (!has_room(l, w) || (l->batch_per_worker && w->batch_inflight >= l->batch_per_worker))
		return false;
	lk_perf_load(w); /* let an old peak expire */
	uint32_t ia = w->inflight - w->batch_inflight;
	if (ia && pred_ms > l->room_ms)
		return false;
	uint32_t keep = w->perf.ia_peak > ia ? w->perf.ia_peak : ia;
	return w->batch_inflight + keep + 1 <= lk_slots(l, w);
}

/* Under mu: how resident the request's adapter (or, without one, its model) is. */
static int residency(const lk_worker *w, const loom_msg_submit *sub, const char *sha)
{
	if (!w->has_res)
		return LOOM_TIER_STORE;
	return sub->adapter[0] ? lk_adapter_tier(w, sub->adapter, sha) : lk_model_tier(w, sub->model);
}

/* Predictions a and b are equal for the choice of a worker. */
static bool same_ms(double a, double b)
{
	double band = TIE_FRAC * (a < b ? a : b);
	return fabs(a - b) <= (band > TIE_MS ? band : TIE_MS);
}

/* Under mu: -1 when w does not serve j (dead, another model); else its
 * predicted TTFT and residency tier, and 1 when it can take j now (by_room:
 * it has room, batch room for a batch job; else: it meets budget_ms). */
static int candidate(gw_link *l, lk_worker *w, const lk_job *j, uint32_t n_prompt,
		     double budget_ms, bool by_room, int64_t now, double *ms, int *tier,
		     uint32_t *cached)
{
	if (!lk_is_live(w, now) || !lk_serves(w, j->sub.model))
		return -1;
	*cached = lk_prefix_cached(w, j);
	*ms = lk_predict_ttft(w, j->sub.model, j->sub.adapter, j->sha, n_prompt - *cached);
	*tier = residency(w, &j->sub, j->sha);
	if (by_room)
		return j->batch ? has_batch_room(l, w, *ms) : has_room(l, w);
	return !j->batch && (budget_ms < 0 || *ms <= budget_ms);
}

int lk_route_slo(gw_link *l, const lk_job *j, uint32_t n_prompt, double budget_ms, bool by_room,
		 double *best_pred)
{
	int64_t now = gw_link_now_ms();
	int best = -1, best_tier = -1, tier;
	double best_ms = 0, ms;
	uint32_t cached, pick_cached = 0;
	*best_pred = -1;
	for (size_t i = 0; !l->closed && i < l->n; i++) {
		int c = candidate(l, &l->w[i], j, n_prompt, budget_ms, by_room, now, &ms, &tier,
				  &cached);
		if (c >= 0 && (*best_pred < 0 || ms < *best_pred))
			*best_pred = ms;
		if (c > 0 && (best < 0 || tier > best_tier || (tier == best_tier && ms < best_ms))) {
			best = (int)i;
			best_tier = tier;
			best_ms = ms;
		}
	}
	/* among those as resident and as fast within the fits' noise: the one
	 * holding more of the prompt, then the least loaded */
	int pick = -1;
	double pick_ms = best_ms;
	for (size_t i = 0; best >= 0 && i < l->n; i++) {
		if (candidate(l, &l->w[i], j, n_prompt, budget_ms, by_room, now, &ms, &tier,
			      &cached) <= 0 ||
		    tier != best_tier || !same_ms(ms, best_ms))
			continue;
		uint32_t in = l->w[i].inflight, in_pick = pick < 0 ? 0 : l->w[pick].inflight;
		if (pick < 0 || cached > pick_cached ||
		    (cached == pick_cached && (in < in_pick || (in == in_pick && ms < pick_ms)))) {
			pick = (int)i;
			pick_ms = ms;
			pick_cached = cached;
		}
	}
	return pick >= 0 ? pick : best;
}

int lk_route_admit(gw_link *l, const lk_job *j, uint32_t n_prompt, bool room, double *best_pred)
{
	int widx = -1;
	*best_pred = -1;
	if (!j->batch) {
		double budget = (double)j->ttft_ms - (double)(gw_link_now_ms() - j->arrival_ms);
		widx = lk_route_slo(l, j, n_prompt, budget < 0 ? 0 : budget, false, best_pred);
	}
	if (widx < 0 && room && j->queueable)
		widx = lk_route_slo(l, j, n_prompt, -1, true, best_pred);
	return widx;
}

/* Under mu: what routing j to w costs in the plain router (lower is better). */
static int route_cost(const lk_worker *w, const lk_job *j)
{
	const loom_msg_submit *sub = &j->sub;
	const char *sha = j->sha;
	int cost = (int)w->inflight * COST_INFLIGHT;
	int credit = (int)(lk_prefix_cached(w, j) / LK_PFX_BLOCK) * COST_INFLIGHT /
		     PFX_BLOCKS_PER_REQ;
	cost -= credit < PFX_MAX_CREDIT ? credit : PFX_MAX_CREDIT;
	if (!w->has_res)
		return cost;
	if (sub->adapter[0]) {
		int t = lk_adapter_tier(w, sub->adapter, sha);
		cost += t == LOOM_TIER_DEVICE ? 0 : t == LOOM_TIER_HOST ? COST_AD_HOST : COST_AD_COLD;
	}
	if (lk_model_tier(w, sub->model) != LOOM_TIER_DEVICE)
		cost += COST_MODEL_SWAP;
	return cost;
}

int lk_route_plain(gw_link *l, const lk_job *j)
{
	int64_t now = gw_link_now_ms();
	int best = -1, best_cost = 0;
	for (size_t i = 0; !l->closed && i < l->n; i++) {
		const lk_worker *w = &l->w[i];
		if (!lk_is_live(w, now) || !lk_serves(w, j->sub.model))
			continue;
		int c = route_cost(w, j);
		if (best < 0 || c < best_cost) {
			best = (int)i;
			best_cost = c;
		}
	}
	return best;
}

/* ---- the admission queue ---- */

void lk_queue_push(gw_link *l, lk_entry *e)
{
	lk_entry *after = l->q_tail;
	while (after && after->job.priority < e->job.priority)
		after = after->qprev;
	e->qprev = after;
	e->qnext = after ? after->qnext : l->q_head;
	if (e->qnext)
		e->qnext->qprev = e;
	else
		l->q_tail = e;
	if (after)
		after->qnext = e;
	else
		l->q_head = e;
	l->q_len++;
}

void lk_queue_unlink(gw_link *l, lk_entry *e)
{
	if (e->qprev)
		e->qprev->qnext = e->qnext;
	else
		l->q_head = e->qnext;
	if (e->qnext)
		e->qnext->qprev = e->qprev;
	else
		l->q_tail = e->qprev;
	e->qprev = e->qnext = NULL;
	l->q_len--;
}

bool lk_queue_ahead(const gw_link *l, int prio, const char *model)
{
	for (const lk_entry *e = l->q_head; e && e->job.priority >= prio; e = e->qnext)
		if (!strcmp(e->job.sub.model, model))
			return true;
	return false;
}

uint32_t lk_retry_after_s(gw_link *l)
{
	/* the queue drains through every live worker's slots, one request per
	 * mean request duration each */
	int64_t now = gw_link_now_ms();
	double slots = 0, dur = 0;
	int n_dur = 0;
	for (size_t i = 0; i < l->n; i++) {
		const lk_worker *w = &l->w[i];
		if (!lk_is_live(w, now))
			continue;
		slots += lk_slots(l, w);
		if (w->perf.dur_ms > 0) {
			dur += w->perf.dur_ms;
			n_dur++;
		}
	}
	dur = n_dur ? dur / n_dur : 1000;
	double s = ceil(dur * ((double)l->q_len + 1) / (slots > 0 ? slots : 1) / 1000.0);
	return s < 1 ? 1 : s > RETRY_MAX_S ? RETRY_MAX_S : (uint32_t)s;
}
