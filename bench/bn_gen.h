/*
 * bench/bn_gen.h — the random generators behind loom-bench's workloads.
 *
 * Owns: a seedable PRNG (xoshiro256**), the continuous distributions the
 * workloads draw from (uniform, normal, exponential, gamma), request length
 * distributions (fixed / uniform / lognormal, parsed from "fixed:n" style
 * specs), open-loop inter-arrival gaps (Poisson, or Gamma with a given
 * coefficient of variation) and adapter popularity (uniform, Zipf, S-LoRA's
 * power law, distinct). Everything is deterministic for a seed and
 * allocation-free except the picker's CDF table.
 * Must not: do I/O, or know about HTTP. Called by bn_workload.c and tests.
 */
#ifndef BN_GEN_H
#define BN_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* ---- PRNG ---- */

typedef struct bn_rng {
	uint64_t s[4];
} bn_rng;

/* Seeds r from seed and a stream number (independent streams for arrivals,
 * adapters, lengths... so that changing one does not perturb the others). */
void bn_rng_seed(bn_rng *r, uint64_t seed, uint64_t stream);
uint64_t bn_rng_u64(bn_rng *r);
/* Uniform in [0, 1). */
double bn_rng_uniform(bn_rng *r);
/* Uniform integer in [lo, hi] (inclusive; lo <= hi). */
long bn_rng_range(bn_rng *r, long lo, long hi);
/* Standard normal. */
double bn_rng_normal(bn_rng *r);
/* Exponential with the given rate (mean 1/rate), rate > 0. */
double bn_rng_exp(bn_rng *r, double rate);
/* Gamma with shape k > 0 and scale theta > 0 (mean k*theta). */
double bn_rng_gamma(bn_rng *r, double shape, double scale);

/* ---- request lengths ---- */

typedef enum bn_len_kind {
	BN_LEN_FIXED,     /* a = n */
	BN_LEN_UNIFORM,   /* integers a..b, both inclusive */
	BN_LEN_LOGNORMAL, /* round(exp(a + b*Z)), at least 1; a = mu, b = sigma */
} bn_len_kind;

typedef struct bn_len {
	bn_len_kind kind;
	double a, b;
} bn_len;

#define BN_LEN_MAX 1000000

/* Parses "fixed:n", "n", "uniform:a:b" or "lognormal:mu:sigma". what names
 * the option in the error ("--prompt-len"). */
loom_err bn_len_parse(const char *spec, const char *what, bn_len *out);
/* Draws one length, in [1, BN_LEN_MAX]. */
int bn_len_sample(const bn_len *l, bn_rng *r);
/* Writes the spec back in the parsed syntax. */
void bn_len_format(const bn_len *l, char *buf, size_t n);

/* ---- open-loop arrivals ---- */

/* Gap to the next arrival, in seconds: exponential (Poisson process) when
 * cv == 1, else Gamma(shape 1/cv^2, scale cv^2/rate), which has mean 1/rate
 * and coefficient of variation cv (S-LoRA's generator). rate, cv > 0. */
double bn_arrival_gap(bn_rng *r, double rate, double cv);

/* ---- adapter popularity ---- */

typedef enum bn_pop_kind {
	BN_POP_UNIFORM,  /* P(i) = 1/N */
	BN_POP_ZIPF,     /* rank-frequency: P(i) = (i+1)^-alpha / H(N, alpha) */
	BN_POP_POWERLAW, /* S-LoRA: i = floor(N * X), X ~ power(alpha), CDF x^alpha on [0,1]:
			  * P(i) = ((i+1)/N)^alpha - (i/N)^alpha */
	BN_POP_DISTINCT, /* round robin: request k gets adapter k mod N */
} bn_pop_kind;

typedef struct bn_pop {
	bn_pop_kind kind;
	double alpha;
} bn_pop;

/* Parses "uniform", "zipf:alpha" (alpha >= 0), "powerlaw:alpha" (alpha > 0)
 * or "distinct". */
loom_err bn_pop_parse(const char *spec, bn_pop *out);
void bn_pop_format(const bn_pop *p, char *buf, size_t n);
/* Fills probs[0..n) with each adapter's probability (distinct: 1/n). n >= 1. */
void bn_pop_probs(const bn_pop *p, int n, double *probs);

/* Draws adapter indices; holds a CDF table of n doubles. */
typedef struct bn_picker bn_picker;
/* Creates a picker over n >= 1 adapters; *out owned by the caller
 * (bn_picker_destroy). */
loom_err bn_picker_create(const bn_pop *p, int n, bn_picker **out);
void bn_picker_destroy(bn_picker *pk);
/* Next adapter index in [0, n). */
int bn_picker_next(bn_picker *pk, bn_rng *r);

#endif
