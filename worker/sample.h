/*
 * worker/sample.h — turning logits into the next token and its logprobs.
 *
 * Owns: the sampling controls of loom_sampling, applied to one sequence's
 * logits row in this order (vLLM's; every step is a pure function of the
 * logits, the request's parameters and its own token history, so the
 * result does not depend on the batch):
 *   1. min_tokens: while fewer than min_tokens tokens were generated, the
 *      ids that would stop the request (EOS unless ignore_eos, stop ids)
 *      get -inf;
 *   2. logit_bias: added to its ids' logits;
 *   3. repetition_penalty (Hugging Face's): for every id present in the
 *      prompt or the generated tokens, logit > 0 ? logit / p : logit * p;
 *   4. frequency / presence penalty (OpenAI's): logit[j] -= c[j] * freq +
 *      (c[j] > 0) * presence, c[j] = count of j in the generated tokens;
 *   -- the logprobs reported (wk_logprobs) are the log-softmax of the
 *      logits at this point: after 1-4, before temperature and filters;
 *   5. temperature (0 = greedy: argmax of the row after 1-4, lowest id wins
 *      ties), then min_p (tokens whose probability is below min_p times
 *      the largest are dropped), top_k, top_p, and a draw with a
 *      counter-based random stream: the uniform draw for output position i
 *      of a request is a pure function of (seed, i), so a sampled
 *      completion is reproducible from its seed and can be resumed at any
 *      position on any worker.
 * The worker samples on the host for both backends (the CUDA forward
 * copies the logits rows back), so this one implementation serves both.
 * A sequence's token counts (wk_hist) are built once from its prompt and
 * generated tokens — on resumption from the same tokens, so the counts and
 * the seeded samples equal an uncut run's — and grow by one per token.
 * Must not: allocate per call beyond the caller's scratch.
 */
#ifndef WK_SAMPLE_H
#define WK_SAMPLE_H

#include <stdint.h>

#include "../common/proto.h"

/* Uniform double in [0,1) for (seed, position). */
double wk_rand_uniform(uint64_t seed, uint64_t position);

/* A sequence's token history as the penalties need it: the distinct ids of
 * the prompt (only with a repetition penalty) and of the generated tokens,
 * with their generated counts. A sorted array of at most cap entries,
 * allocated once at init (cap = min(vocab, prompt + max generated tokens)
 * bounds the distinct ids); no memory at all when no penalty is set. */
typedef struct wk_hist_entry {
	int32_t id;
	uint32_t count;      /* occurrences among the generated tokens */
	uint8_t in_prompt;
} wk_hist_entry;

typedef struct wk_hist {
	uint32_t n, cap;
	wk_hist_entry *e;    /* [cap], sorted by id; NULL = no penalty */
	uint8_t with_prompt; /* prompt ids are recorded (repetition penalty) */
} wk_hist;

/* Whether p sets a penalty that needs a history. */
int wk_sample_needs_hist(const loom_sampling *p);
/* Builds h from prompt[n_prompt] and gen[n_gen] for p (h zeroed when no
 * penalty is set). cap: the most distinct ids the sequence can see. On
 * failure (LOOM_ENOMEM) h is empty. Release with wk_hist_fini. */
loom_err wk_hist_init(wk_hist *h, const loom_sampling *p, const int32_t *prompt,
		      uint32_t n_prompt, const int32_t *gen, uint32_t n_gen, uint32_t cap);
/* Counts one more generated id (no-op without a history). */
void wk_hist_add(wk_hist *h, int32_t id);
void wk_hist_fini(wk_hist *h);

/*
 * Steps 1-4 above on logits[vocab], in place. n_gen: tokens generated so
 * far; eos[n_eos]: the model's EOS ids; h: the sequence's history (may be
 * NULL when no penalty is set). Bias ids outside [0, vocab) are skipped
 * (the engine refuses them earlier).
 */
void wk_sample_process(float *logits, int vocab, const loom_sampling *p, const wk_hist *h,
		       uint32_t n_gen, const int32_t *eos, int n_eos);

/*
 * Step 5: picks a token from logits[vocab] (not modified; already
 * processed). position: index of the token being produced within the
 * completion (0 for the first). scratch: [vocab] floats and [vocab] ints of
 * caller memory (see wk_sample_scratch_bytes).
 */
int32_t wk_sample(const float *logits, int vocab, const loom_sampling *p, uint64_t position,
		  void *scratch);
size_t wk_sample_scratch_bytes(int vocab);

/*
 * Log-softmax of logits[vocab] (accumulated in double): *lp gets id's
 * logprob, top_ids/top_lp[k] the k most likely ids (ties: lower id first)
 * and theirs. k <= LOOM_MAX_LOGPROBS. -inf logits give -inf.
 */
void wk_logprobs(const float *logits, int vocab, int32_t id, int k, float *lp, int32_t *top_ids,
		 float *top_lp);

#endif
