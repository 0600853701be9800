/*
 * bench/bn_stats.h — summary statistics of loom-bench's per-request samples.
 *
 * Owns: percentiles defined exactly as numpy's default
 * (`numpy.percentile(x, q)`, method "linear": on the sorted samples
 * x[0..n), position h = (n-1)*q/100, value x[floor h] + (h - floor h) *
 * (x[floor h + 1] - x[floor h])), and the summary of a sample set.
 * Must not: allocate except the sorted copy in bn_summarize.
 */
#ifndef BN_STATS_H
#define BN_STATS_H

#include <stddef.h>

#include "common/err.h"

/* Percentile q in [0, 100] of sorted[0..n), n >= 1 (numpy "linear"). */
double bn_percentile(const double *sorted, size_t n, double q);

typedef struct bn_summary {
	size_t count;      /* 0: every other field is NaN */
	double mean, stddev; /* population standard deviation */
	double min, max;
	double p50, p90, p99;
} bn_summary;

/* Summarizes x[0..n) (any order; NaNs are skipped). Sorts a private copy. */
loom_err bn_summarize(const double *x, size_t n, bn_summary *out);

#endif
