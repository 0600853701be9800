/*
 * worker/sample.h — turning logits into the next token.
 *
 * Owns: greedy (temperature 0: argmax, lowest id wins ties), and
 * temperature / top_k / top_p sampling driven by a counter-based random
 * stream: the uniform draw for output position i of a request is a pure
 * function of (seed, i), so a sampled completion is reproducible from its
 * seed and can be resumed at any position on any worker.
 * Must not: allocate per call beyond the caller's scratch.
 */
#ifndef WK_SAMPLE_H
#define WK_SAMPLE_H

#include <stdint.h>

#include "../common/proto.h"

/* Uniform double in [0,1) for (seed, position). */
double wk_rand_uniform(uint64_t seed, uint64_t position);

/*
 * Picks a token from logits[vocab] (not modified). position: index of the
 * token being produced within the completion (0 for the first). scratch:
 * [vocab] floats and [vocab] ints of caller memory (see wk_sample_scratch_bytes).
 */
int32_t wk_sample(const float *logits, int vocab, const loom_sampling *p, uint64_t position,
		  void *scratch);
size_t wk_sample_scratch_bytes(int vocab);

#endif
