/*
 * bench/bn_stats.c — percentiles (numpy "linear") and sample summaries.
 */
#include "bench/bn_stats.h"

#include <math.h>
#include <stdlib.h>

#include "common/alloc.h"

double bn_percentile(const double *sorted, size_t n, double q)
{
	if (n == 0)
		return NAN;
	if (q <= 0)
		return sorted[0];
	if (q >= 100)
		return sorted[n - 1];
	double h = (double)(n - 1) * q / 100.0;
	size_t lo = (size_t)floor(h);
	if (lo + 1 >= n)
		return sorted[n - 1];
	double f = h - (double)lo;
	return sorted[lo] + f * (sorted[lo + 1] - sorted[lo]);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

loom_err bn_summarize(const double *x, size_t n, bn_summary *out)
{
	size_t m = 0;
	double *s;
	*out = (bn_summary){ 0, NAN, NAN, NAN, NAN, NAN, NAN, NAN };
	if (n == 0)
		return LOOM_OK;
	s = loom_malloc(n * sizeof *s);
	if (!s)
		return loom_fail(LOOM_ENOMEM, "statistics: no memory for %zu samples", n);
	for (size_t i = 0; i < n; i++)
		if (!isnan(x[i]))
			s[m++] = x[i];
	if (m == 0) {
		loom_free(s);
		return LOOM_OK;
	}
	qsort(s, m, sizeof *s, cmp_double);
	double sum = 0, sq = 0;
	for (size_t i = 0; i < m; i++)
		sum += s[i];
	double mean = sum / (double)m;
	for (size_t i = 0; i < m; i++)
		sq += (s[i] - mean) * (s[i] - mean);
	out->count = m;
	out->mean = mean;
	out->stddev = sqrt(sq / (double)m);
	out->min = s[0];
	out->max = s[m - 1];
	out->p50 = bn_percentile(s, m, 50);
	out->p90 = bn_percentile(s, m, 90);
	out->p99 = bn_percentile(s, m, 99);
	loom_free(s);
	return LOOM_OK;
}
