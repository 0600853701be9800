/*
 * bench/bn_gen.c — PRNG, distributions, length specs, arrivals, popularity.
 *
 * xoshiro256** seeded through splitmix64 (seed and stream mixed), doubles
 * from the top 53 bits. Gamma is Marsaglia–Tsang (shape < 1 boosted by
 * U^(1/shape)); normal is the polar method. The picker keeps the cumulative
 * distribution of the adapters and binary-searches it: O(log N) a draw, and
 * N up to millions costs only the table.
 */
#include "bench/bn_gen.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

/* ---- PRNG ---- */

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void bn_rng_seed(bn_rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed ^ (stream * 0xd1342543de82ef95ULL + 0x632be59bd9b4e019ULL);
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t bn_rng_u64(bn_rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

double bn_rng_uniform(bn_rng *r)
{
	return (double)(bn_rng_u64(r) >> 11) * 0x1.0p-53;
}

long bn_rng_range(bn_rng *r, long lo, long hi)
{
	uint64_t span = (uint64_t)(hi - lo) + 1;
	if (span == 0)
		return lo + (long)bn_rng_u64(r);
	/* rejection sampling: no modulo bias */
	uint64_t limit = UINT64_MAX - UINT64_MAX % span;
	uint64_t x;
	do
		x = bn_rng_u64(r);
	while (x >= limit);
	return lo + (long)(x % span);
}

double bn_rng_normal(bn_rng *r)
{
	double u, v, s;
	do {
		u = 2.0 * bn_rng_uniform(r) - 1.0;
		v = 2.0 * bn_rng_uniform(r) - 1.0;
		s = u * u + v * v;
	} while (s >= 1.0 || s == 0.0);
	return u * sqrt(-2.0 * log(s) / s);
}

double bn_rng_exp(bn_rng *r, double rate)
{
	return -log1p(-bn_rng_uniform(r)) / rate;
}

double bn_rng_gamma(bn_rng *r, double shape, double scale)
{
	if (shape < 1.0) {
		double u;
		do
			u = bn_rng_uniform(r);
		while (u == 0.0);
		return bn_rng_gamma(r, shape + 1.0, scale) * pow(u, 1.0 / shape);
	}
	double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
	for (;;) {
		double x = bn_rng_normal(r), v = 1.0 + c * x;
		if (v <= 0.0)
			continue;
		v = v * v * v;
		double u = bn_rng_uniform(r);
		if (u < 1.0 - 0.0331 * x * x * x * x)
			return d * v * scale;
		if (u > 0.0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
			return d * v * scale;
	}
}

/* ---- number parsing shared by the specs ---- */

/* Parses a whole token [p, end) as a finite double. */
static int parse_double(const char *p, const char *end, double *out)
{
	char tmp[64], *e;
	size_t n = (size_t)(end - p);
	if (n == 0 || n >= sizeof tmp)
		return -1;
	memcpy(tmp, p, n);
	tmp[n] = '\0';
	errno = 0;
	double v = strtod(tmp, &e);
	if (*e || errno || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

static int parse_int(const char *p, const char *end, long lo, long hi, long *out)
{
	char tmp[32], *e;
	size_t n = (size_t)(end - p);
	if (n == 0 || n >= sizeof tmp)
		return -1;
	memcpy(tmp, p, n);
	tmp[n] = '\0';
	errno = 0;
	long v = strtol(tmp, &e, 10);
	if (*e || errno || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* Splits spec at ':' into at most max fields; returns the count or -1. */
static int split_colon(const char *spec, const char **f, const char **fe, int max)
{
	int n = 0;
	const char *p = spec;
	for (;;) {
		const char *c = strchr(p, ':');
		if (n == max)
			return -1;
		f[n] = p;
		fe[n] = c ? c : p + strlen(p);
		n++;
		if (!c)
			return n;
		p = c + 1;
	}
}

static int field_is(const char *f, const char *fe, const char *word)
{
	size_t n = strlen(word);
	return (size_t)(fe - f) == n && !strncmp(f, word, n);
}

/* ---- lengths ---- */

loom_err bn_len_parse(const char *spec, const char *what, bn_len *out)
{
	const char *f[4], *fe[4];
	long a, b;
	double m, s;
	int n = spec ? split_colon(spec, f, fe, 4) : -1;
	if (n == 1 && !parse_int(f[0], fe[0], 1, BN_LEN_MAX, &a)) {
		*out = (bn_len){ BN_LEN_FIXED, (double)a, 0 };
		return LOOM_OK;
	}
	if (n == 2 && field_is(f[0], fe[0], "fixed")) {
		if (parse_int(f[1], fe[1], 1, BN_LEN_MAX, &a))
			return loom_fail(LOOM_EINVAL, "%s '%s': fixed:n needs an integer n in 1..%d",
					 what, spec, BN_LEN_MAX);
		*out = (bn_len){ BN_LEN_FIXED, (double)a, 0 };
		return LOOM_OK;
	}
	if (n == 3 && field_is(f[0], fe[0], "uniform")) {
		if (parse_int(f[1], fe[1], 1, BN_LEN_MAX, &a) ||
		    parse_int(f[2], fe[2], 1, BN_LEN_MAX, &b) || a > b)
			return loom_fail(LOOM_EINVAL,
					 "%s '%s': uniform:a:b needs integers 1 <= a <= b <= %d",
					 what, spec, BN_LEN_MAX);
		*out = (bn_len){ BN_LEN_UNIFORM, (double)a, (double)b };
		return LOOM_OK;
	}
	if (n == 3 && field_is(f[0], fe[0], "lognormal")) {
		if (parse_double(f[1], fe[1], &m) || parse_double(f[2], fe[2], &s) || s < 0 ||
		    m > log((double)BN_LEN_MAX))
			return loom_fail(LOOM_EINVAL,
					 "%s '%s': lognormal:mu:sigma needs numbers mu <= %.2f "
					 "and sigma >= 0 (of the natural log of the length)",
					 what, spec, log((double)BN_LEN_MAX));
		*out = (bn_len){ BN_LEN_LOGNORMAL, m, s };
		return LOOM_OK;
	}
	return loom_fail(LOOM_EINVAL,
			 "%s '%s': expected fixed:n, uniform:a:b or lognormal:mu:sigma",
			 what, spec ? spec : "(missing)");
}

int bn_len_sample(const bn_len *l, bn_rng *r)
{
	switch (l->kind) {
	case BN_LEN_FIXED:
		return (int)l->a;
	case BN_LEN_UNIFORM:
		return (int)bn_rng_range(r, (long)l->a, (long)l->b);
	case BN_LEN_LOGNORMAL: {
		double x = round(exp(l->a + l->b * bn_rng_normal(r)));
		if (!(x >= 1.0))
			return 1;
		return x > BN_LEN_MAX ? BN_LEN_MAX : (int)x;
	}
	}
	return 1;
}

void bn_len_format(const bn_len *l, char *buf, size_t n)
{
	switch (l->kind) {
	case BN_LEN_FIXED:
		snprintf(buf, n, "fixed:%d", (int)l->a);
		break;
	case BN_LEN_UNIFORM:
		snprintf(buf, n, "uniform:%d:%d", (int)l->a, (int)l->b);
		break;
	case BN_LEN_LOGNORMAL:
		snprintf(buf, n, "lognormal:%g:%g", l->a, l->b);
		break;
	}
}

/* ---- arrivals ---- */

double bn_arrival_gap(bn_rng *r, double rate, double cv)
{
	if (cv == 1.0)
		return bn_rng_exp(r, rate);
	return bn_rng_gamma(r, 1.0 / (cv * cv), cv * cv / rate);
}

/* ---- popularity ---- */

loom_err bn_pop_parse(const char *spec, bn_pop *out)
{
	const char *f[3], *fe[3];
	double a;
	int n = spec ? split_colon(spec, f, fe, 3) : -1;
	if (n == 1 && field_is(f[0], fe[0], "uniform")) {
		*out = (bn_pop){ BN_POP_UNIFORM, 0 };
		return LOOM_OK;
	}
	if (n == 1 && field_is(f[0], fe[0], "distinct")) {
		*out = (bn_pop){ BN_POP_DISTINCT, 0 };
		return LOOM_OK;
	}
	if (n == 2 && (field_is(f[0], fe[0], "zipf") || field_is(f[0], fe[0], "powerlaw"))) {
		int zipf = field_is(f[0], fe[0], "zipf");
		if (parse_double(f[1], fe[1], &a) || a < 0 || (!zipf && a == 0) || a > 100)
			return loom_fail(LOOM_EINVAL, "--popularity '%s': alpha must be a number in %s",
					 spec, zipf ? "[0, 100]" : "(0, 100]");
		*out = (bn_pop){ zipf ? BN_POP_ZIPF : BN_POP_POWERLAW, a };
		return LOOM_OK;
	}
	return loom_fail(LOOM_EINVAL,
			 "--popularity '%s': expected uniform, zipf:alpha, powerlaw:alpha or distinct",
			 spec ? spec : "(missing)");
}

void bn_pop_format(const bn_pop *p, char *buf, size_t n)
{
	switch (p->kind) {
	case BN_POP_UNIFORM:
		snprintf(buf, n, "uniform");
		break;
	case BN_POP_DISTINCT:
		snprintf(buf, n, "distinct");
		break;
	case BN_POP_ZIPF:
		snprintf(buf, n, "zipf:%g", p->alpha);
		break;
	case BN_POP_POWERLAW:
		snprintf(buf, n, "powerlaw:%g", p->alpha);
		break;
	}
}

void bn_pop_probs(const bn_pop *p, int n, double *probs)
{
	double sum = 0;
	for (int i = 0; i < n; i++) {
		switch (p->kind) {
		case BN_POP_UNIFORM:
		case BN_POP_DISTINCT:
			probs[i] = 1.0;
			break;
		case BN_POP_ZIPF:
			probs[i] = pow((double)(i + 1), -p->alpha);
			break;
		case BN_POP_POWERLAW:
			probs[i] = pow((double)(i + 1) / n, p->alpha) - pow((double)i / n, p->alpha);
			break;
		}
		sum += probs[i];
	}
	for (int i = 0; i < n; i++)
		probs[i] /= sum;
}

struct bn_picker {
	bn_pop pop;
	int n;
	long next;    /* distinct: the next index */
	double *cdf;  /* (n) cumulative probabilities, cdf[n-1] == 1 */
};

loom_err bn_picker_create(const bn_pop *p, int n, bn_picker **out)
{
	*out = NULL;
	if (n < 1)
		return loom_fail(LOOM_EINVAL, "adapter picker: need at least one adapter, got %d", n);
	bn_picker *pk = loom_calloc(1, sizeof *pk);
	double *cdf = loom_malloc((size_t)n * sizeof *cdf);
	if (!pk || !cdf) {
		loom_free(pk);
		loom_free(cdf);
		return loom_fail(LOOM_ENOMEM, "adapter picker: no memory for %d adapters", n);
	}
	bn_pop_probs(p, n, cdf);
	for (int i = 1; i < n; i++)
		cdf[i] += cdf[i - 1];
	cdf[n - 1] = 1.0;
	pk->pop = *p;
	pk->n = n;
	pk->cdf = cdf;
	*out = pk;
	return LOOM_OK;
}

void bn_picker_destroy(bn_picker *pk)
{
	if (!pk)
		return;
	loom_free(pk->cdf);
	loom_free(pk);
}

int bn_picker_next(bn_picker *pk, bn_rng *r)
{
	if (pk->pop.kind == BN_POP_DISTINCT)
		return (int)(pk->next++ % pk->n);
	if (pk->pop.kind == BN_POP_UNIFORM)
		return (int)bn_rng_range(r, 0, pk->n - 1);
	double u = bn_rng_uniform(r);
	int lo = 0, hi = pk->n - 1; /* first i with cdf[i] > u */
	while (lo < hi) {
		int mid = lo + (hi - lo) / 2;
		if (pk->cdf[mid] > u)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}
