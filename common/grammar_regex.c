/*
 * common/grammar_regex.c — the regex subset (guided_regex, JSON Schema
 * `pattern`) and choice lists as expression trees.
 *
 * Recursive descent over the pattern's UTF-8: alternation of sequences of
 * quantified atoms. Classes are code point sets turned into UTF-8 byte trees
 * (gx_from_cpset), so `.` and negated classes never split a character. The
 * whole output must match (implicit anchors; a leading ^ and trailing $ are
 * allowed and mean the same). What is refused is refused with the offset.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/grammar_int.h"

typedef struct rx {
	gx_builder *b;
	const unsigned char *s;
	size_t n, i;
	bool json;
	const char *what;
	int depth;
	loom_err rc;
} rx;

static gx *rx_fail(rx *p, loom_err code, const char *msg)
{
	if (!p->rc)
		p->rc = loom_fail(code, "%s: %s at offset %zu", p->what, msg, p->i);
	return NULL;
}

static gx *rx_oom(rx *p)
{
	if (!p->rc)
		p->rc = p->b->n_nodes > GX_MAX_NODES
				? loom_fail(LOOM_ERANGE, "%s: pattern too large", p->what)
				: loom_fail(LOOM_ENOMEM, "%s: out of memory", p->what);
	return NULL;
}

/* Decodes one UTF-8 character at p->i; -1 when invalid. */
static int32_t rx_char(rx *p)
{
	const unsigned char *s = p->s + p->i;
	size_t left = p->n - p->i;
	uint32_t c = s[0];
	int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
	if (!len || (size_t)len > left)
		return -1;
	if (len > 1)
		c &= 0x3F >> (len - 1);
	for (int k = 1; k < len; k++) {
		if ((s[k] & 0xC0) != 0x80)
			return -1;
		c = c << 6 | (s[k] & 0x3F);
	}
	static const uint32_t minv[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	if (c < minv[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return -1;
	p->i += (size_t)len;
	return (int32_t)c;
}

static int hexv(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
		: c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

static bool add_class(gx_cpset *s, int c, bool *oom)
{
	static const uint32_t d[] = { '0', '9' };
	static const uint32_t w[] = { '0', '9', 'A', 'Z', '_', '_', 'a', 'z' };
	static const uint32_t sp[] = { '\t', '\r', ' ', ' ' };
	const uint32_t *r;
	int n;
	switch (c | 0x20) {
	case 'd': r = d; n = 1; break;
	case 'w': r = w; n = 4; break;
	case 's': r = sp; n = 2; break;
	default: return false;
	}
	gx_cpset t = { 0 };
	for (int k = 0; k < n; k++)
		*oom |= gx_cpset_add(&t, r[2 * k], r[2 * k + 1]) != LOOM_OK;
	if (c >= 'A' && c <= 'Z')
		*oom |= gx_cpset_negate(&t) != LOOM_OK;
	for (int k = 0; k < t.n; k++)
		*oom |= gx_cpset_add(s, t.r[k].lo, t.r[k].hi) != LOOM_OK;
	gx_cpset_fini(&t);
	return true;
}

/* After a backslash: a class escape goes into set (returns -2), else the
 * code point; -1 on error (reported). */
static int32_t rx_escape(rx *p, gx_cpset *set, bool in_class)
{
	if (p->i >= p->n) {
		rx_fail(p, LOOM_EINVAL, "trailing backslash");
		return -1;
	}
	int c = p->s[p->i];
	bool oom = false;
	if (strchr("dDwWsS", c) && c) {
		p->i++;
		add_class(set, c, &oom);
		if (oom) {
			rx_oom(p);
			return -1;
		}
		return -2;
	}
	switch (c) {
	case 'n': p->i++; return '\n';
	case 't': p->i++; return '\t';
	case 'r': p->i++; return '\r';
	case 'f': p->i++; return '\f';
	case 'v': p->i++; return '\v';
	case 'x':
	case 'u': {
		int nd = c == 'x' ? 2 : 4;
		uint32_t v = 0;
		if (p->i + 1 + (size_t)nd > p->n)
			goto bad_hex;
		for (int k = 0; k < nd; k++) {
			int h = hexv(p->s[p->i + 1 + (size_t)k]);
			if (h < 0)
				goto bad_hex;
			v = v << 4 | (uint32_t)h;
		}
		p->i += 1 + (size_t)nd;
		if (v >= 0xD800 && v <= 0xDFFF) {
			rx_fail(p, LOOM_EUNSUPPORTED, "surrogate code point escape");
			return -1;
		}
		return (int32_t)v;
bad_hex:
		rx_fail(p, LOOM_EINVAL, "bad \\x or \\u escape");
		return -1;
	}
	case 'b':
		if (in_class) {
			p->i++;
			return '\b';
		}
		break;
	default:
		if ((c >= '0' && c <= '9') && !(c == '0' && in_class)) {
			rx_fail(p, LOOM_EUNSUPPORTED, "unsupported backreference");
			return -1;
		}
		if (c == '0') {
			p->i++;
			return 0;
		}
		if (c < 0x80 && !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
			p->i++;
			return c;
		}
	}
	char msg[48];
	snprintf(msg, sizeof msg, "unsupported escape '\\%c'", c >= 0x20 && c < 0x7f ? c : '?');
	rx_fail(p, LOOM_EUNSUPPORTED, msg);
	return -1;
}

static gx *rx_set(rx *p, gx_cpset *s)
{
	gx *x = gx_from_cpset(p->b, s, p->json);
	gx_cpset_fini(s);
	if (!x && !p->rc) {
		if (p->b->oom)
			return rx_oom(p);
		return rx_fail(p, LOOM_EINVAL, "empty character class");
	}
	return x;
}

static gx *rx_class(rx *p)
{
	gx_cpset s = { 0 };
	bool neg = false, oom = false;
	p->i++; /* [ */
	if (p->i < p->n && p->s[p->i] == '^') {
		neg = true;
		p->i++;
	}
	bool first = true;
	for (;;) {
		if (p->i >= p->n) {
			gx_cpset_fini(&s);
			return rx_fail(p, LOOM_EINVAL, "unterminated character class");
		}
		if (p->s[p->i] == ']' && !first) {
			p->i++;
			break;
		}
		first = false;
		if (p->s[p->i] == '[' && p->i + 1 < p->n && strchr(":=.", p->s[p->i + 1])) {
			gx_cpset_fini(&s);
			return rx_fail(p, LOOM_EUNSUPPORTED, "unsupported POSIX class");
		}
		int32_t lo;
		if (p->s[p->i] == '\\') {
			p->i++;
			lo = rx_escape(p, &s, true);
			if (lo == -2)
				continue;
		} else {
			lo = rx_char(p);
			if (lo < 0 && !p->rc)
				rx_fail(p, LOOM_EINVAL, "invalid UTF-8");
		}
		if (lo < 0) {
			gx_cpset_fini(&s);
			return NULL;
		}
		int32_t hi = lo;
		if (p->i + 1 < p->n && p->s[p->i] == '-' && p->s[p->i + 1] != ']') {
			p->i++;
			if (p->s[p->i] == '\\') {
				p->i++;
				hi = rx_escape(p, &s, true);
				if (hi == -2) {
					gx_cpset_fini(&s);
					return rx_fail(p, LOOM_EINVAL, "class escape as a range end");
				}
			} else {
				hi = rx_char(p);
				if (hi < 0 && !p->rc)
					rx_fail(p, LOOM_EINVAL, "invalid UTF-8");
			}
			if (hi < 0) {
				gx_cpset_fini(&s);
				return NULL;
			}
			if (hi < lo) {
				gx_cpset_fini(&s);
				return rx_fail(p, LOOM_EINVAL, "bad character range");
			}
		}
		oom |= gx_cpset_add(&s, (uint32_t)lo, (uint32_t)hi) != LOOM_OK;
	}
	if (neg)
		oom |= gx_cpset_negate(&s) != LOOM_OK;
	if (oom) {
		gx_cpset_fini(&s);
		return rx_oom(p);
	}
	return rx_set(p, &s);
}

static gx *rx_alt(rx *p);

static gx *rx_atom(rx *p)
{
	gx_cpset s = { 0 };
	int c = p->s[p->i];
	if (c == '(') {
		p->i++;
		if (p->i < p->n && p->s[p->i] == '?') {
			if (p->i + 1 < p->n && p->s[p->i + 1] == ':') {
				p->i += 2;
			} else if (p->i + 2 < p->n && (p->s[p->i + 1] == '<' || p->s[p->i + 1] == 'P') &&
				   p->s[p->i + 1 + (p->s[p->i + 1] == 'P')] == '<' &&
				   p->s[p->i + 2] != '=' && p->s[p->i + 2] != '!') {
				/* named group: skip the name */
				while (p->i < p->n && p->s[p->i] != '>')
					p->i++;
				if (p->i >= p->n)
					return rx_fail(p, LOOM_EINVAL, "unterminated group name");
				p->i++;
			} else {
				return rx_fail(p, LOOM_EUNSUPPORTED,
					       "unsupported group (lookaround, flags or conditionals)");
			}
		}
		if (++p->depth > LOOM_GRAMMAR_MAX_DEPTH)
			return rx_fail(p, LOOM_ERANGE, "groups nested too deeply");
		gx *x = rx_alt(p);
		p->depth--;
		if (!x)
			return NULL;
		if (p->i >= p->n || p->s[p->i] != ')')
			return rx_fail(p, LOOM_EINVAL, "missing )");
		p->i++;
		return x;
	}
	if (c == '[')
		return rx_class(p);
	if (c == '.') {
		p->i++;
		if (gx_cpset_add(&s, '\n', '\n') || gx_cpset_negate(&s)) {
			gx_cpset_fini(&s);
			return rx_oom(p);
		}
		return rx_set(p, &s);
	}
	if (c == '*' || c == '+' || c == '?')
		return rx_fail(p, LOOM_EINVAL, "nothing to repeat");
	if (c == '^' || c == '$')
		return rx_fail(p, LOOM_EUNSUPPORTED, "anchor inside the pattern");
	int32_t cp;
	if (c == '\\') {
		p->i++;
		if (p->i < p->n && strchr("bBAzZG", p->s[p->i]) && p->s[p->i])
			return rx_fail(p, LOOM_EUNSUPPORTED, "unsupported assertion escape");
		cp = rx_escape(p, &s, false);
		if (cp == -2)
			return rx_set(p, &s);
		if (cp < 0) {
			gx_cpset_fini(&s);
			return NULL;
		}
	} else {
		cp = rx_char(p);
		if (cp < 0)
			return rx_fail(p, LOOM_EINVAL, "invalid UTF-8");
	}
	if (gx_cpset_add(&s, (uint32_t)cp, (uint32_t)cp)) {
		gx_cpset_fini(&s);
		return rx_oom(p);
	}
	return rx_set(p, &s);
}

/* Parses {m}, {m,}, {m,n} at p->i; false (nothing consumed) if it is not one. */
static bool rx_braces(rx *p, int *min, int *max)
{
	size_t i = p->i + 1;
	long m = -1, n = -1;
	if (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') {
		m = 0;
		while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9' && m <= 100000)
			m = m * 10 + (p->s[i++] - '0');
	}
	if (m < 0)
		return false;
	if (i < p->n && p->s[i] == '}') {
		n = m;
	} else if (i < p->n && p->s[i] == ',') {
		i++;
		if (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') {
			n = 0;
			while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9' && n <= 100000)
				n = n * 10 + (p->s[i++] - '0');
		} else {
			n = -2; /* unbounded */
		}
		if (i >= p->n || p->s[i] != '}')
			return false;
	} else {
		return false;
	}
	p->i = i + 1;
	*min = (int)(m > 100000 ? 100001 : m);
	*max = n == -2 ? -1 : (int)(n > 100000 ? 100001 : n);
	return true;
}

static gx *rx_seq(rx *p)
{
	gx **k = NULL;
	int n = 0, cap = 0;
	gx *res = NULL;
	while (p->i < p->n && p->s[p->i] != '|' && p->s[p->i] != ')') {
		if (p->s[p->i] == '^' && p->i == 0) {
			p->i++;
			continue;
		}
		if (p->s[p->i] == '$' && p->i + 1 == p->n) {
			p->i++;
			continue;
		}
		gx *a = rx_atom(p);
		if (!a)
			goto out;
		for (;;) {
			int min, max;
			if (p->i >= p->n)
				break;
			int q = p->s[p->i];
			if (q == '*' || q == '+' || q == '?') {
				p->i++;
				min = q == '+';
				max = q == '?' ? 1 : -1;
			} else if (q == '{' && rx_braces(p, &min, &max)) {
				if (min > GX_MAX_REPEAT || max > GX_MAX_REPEAT) {
					rx_fail(p, LOOM_ERANGE, "repetition count over 1000");
					goto out;
				}
				if (max >= 0 && max < min) {
					rx_fail(p, LOOM_EINVAL, "bad repetition range");
					goto out;
				}
			} else {
				break;
			}
			if (p->i < p->n && (p->s[p->i] == '?' || p->s[p->i] == '+'))
				p->i++; /* lazy / possessive: same language */
			if (!(a = gx_rep(p->b, a, min, max))) {
				rx_oom(p);
				goto out;
			}
		}
		if (n == cap) {
			cap = cap ? 2 * cap : 8;
			gx **t = loom_realloc(k, (size_t)cap * sizeof *t);
			if (!t) {
				rx_oom(p);
				goto out;
			}
			k = t;
		}
		k[n++] = a;
	}
	if (!(res = gx_seq(p->b, k, n)))
		rx_oom(p);
out:
	loom_free(k);
	return res;
}

static gx *rx_alt(rx *p)
{
	gx *x = rx_seq(p);
	while (x && p->i < p->n && p->s[p->i] == '|') {
		p->i++;
		gx *y = rx_seq(p);
		if (!y)
			return NULL;
		if (!(x = gx_alt2(p->b, x, y)))
			return rx_oom(p);
	}
	return x;
}

loom_err gx_regex(gx_builder *b, const char *re, size_t len, bool json, const char *what, gx **out)
{
	rx p = { .b = b, .s = (const unsigned char *)re, .n = len, .json = json, .what = what };
	*out = NULL;
	gx *x = rx_alt(&p);
	if (!x)
		return p.rc ? p.rc : loom_fail(LOOM_ENOMEM, "%s: out of memory", what);
	if (p.i < p.n)
		return rx_fail(&p, LOOM_EINVAL, "unbalanced )"), p.rc;
	*out = x;
	return LOOM_OK;
}

/* ---- integers in a range, as a regex (JSON Schema minimum/maximum) ---- */

typedef struct sbuf {
	char *p;
	size_t n, cap;
	bool oom;
} sbuf;

static void sb_put(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_put(sbuf *s, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		if (s->oom)
			return;
		va_start(ap, fmt);
		int k = vsnprintf(s->p ? s->p + s->n : NULL, s->p ? s->cap - s->n : 0, fmt, ap);
		va_end(ap);
		if (k < 0) {
			s->oom = true;
			return;
		}
		if (s->p && s->n + (size_t)k < s->cap) {
			s->n += (size_t)k;
			return;
		}
		size_t cap = (s->cap + (size_t)k + 1) * 2;
		char *p = loom_realloc(s->p, cap);
		if (!p) {
			s->oom = true;
			return;
		}
		s->p = p;
		s->cap = cap;
	}
}

/* Digit strings L..H of the same length n. */
static void rng_same(sbuf *o, const char *L, const char *H, int n)
{
	if (n == 0)
		return;
	if (L[0] == H[0]) {
		sb_put(o, "%c", L[0]);
		rng_same(o, L + 1, H + 1, n - 1);
		return;
	}
	bool lo_min = true, hi_max = true;
	for (int i = 1; i < n; i++) {
		lo_min &= L[i] == '0';
		hi_max &= H[i] == '9';
	}
	char zeros[24], nines[24];
	memset(zeros, '0', sizeof zeros);
	memset(nines, '9', sizeof nines);
	sb_put(o, "(?:");
	const char *sep = "";
	int mid_lo = L[0], mid_hi = H[0];
	if (!lo_min) {
		sb_put(o, "%c", L[0]);
		rng_same(o, L + 1, nines, n - 1);
		sep = "|";
		mid_lo++;
	}
	if (!hi_max)
		mid_hi--;
	if (mid_lo <= mid_hi) {
		sb_put(o, "%s[%c-%c]", sep, mid_lo, mid_hi);
		if (n > 1)
			sb_put(o, "[0-9]{%d}", n - 1);
		sep = "|";
	}
	if (!hi_max) {
		sb_put(o, "%s%c", sep, H[0]);
		rng_same(o, zeros, H + 1, n - 1);
	}
	sb_put(o, ")");
}

static void rng_nonneg(sbuf *o, long long a, long long b)
{
	long long p = 1;
	const char *sep = "";
	sb_put(o, "(?:");
	for (int d = 1; d <= 17; d++, p *= 10) {
		long long lo = d == 1 ? 0 : p, hi = p * 10 - 1;
		if (lo < a)
			lo = a;
		if (hi > b)
			hi = b;
		if (lo <= hi) {
			char L[24], H[24];
			snprintf(L, sizeof L, "%lld", lo);
			snprintf(H, sizeof H, "%lld", hi);
			sb_put(o, "%s", sep);
			rng_same(o, L, H, (int)strlen(L));
			sep = "|";
		}
		if (p > b / 10 + 1)
			break;
	}
	sb_put(o, ")");
}

char *gx_int_range_re(long long lo, long long hi)
{
	sbuf o = { 0 };
	sb_put(&o, "(?:");
	const char *sep = "";
	if (lo < 0) {
		sb_put(&o, "-");
		rng_nonneg(&o, hi < 0 ? -hi : 1, -lo);
		sep = "|";
	}
	if (hi >= 0) {
		sb_put(&o, "%s", sep);
		rng_nonneg(&o, lo > 0 ? lo : 0, hi);
	}
	sb_put(&o, ")");
	if (o.oom) {
		loom_free(o.p);
		return NULL;
	}
	return o.p;
}

/* ---- public: regex and choices ---- */

loom_err loom_grammar_from_regex(const char *re, size_t len, loom_grammar **out)
{
	gx_builder b;
	gx *x;
	loom_err rc;
	*out = NULL;
	if (!re && len)
		return loom_fail(LOOM_EINVAL, "regex: NULL pattern");
	gx_builder_init(&b);
	int r = gx_rule_new(&b);
	if (r < 0) {
		rc = loom_fail(LOOM_ENOMEM, "regex: out of memory");
		goto out;
	}
	if ((rc = gx_regex(&b, re ? re : "", len, false, "regex", &x)))
		goto out;
	b.rules[r].body = x;
	rc = gx_compile(&b, r, out);
out:
	gx_builder_fini(&b);
	return rc;
}

loom_err loom_grammar_from_choices(const char *const *choices, const size_t *lens, size_t n,
				   loom_grammar **out)
{
	gx_builder b;
	gx **alts = NULL;
	loom_err rc = LOOM_OK;
	*out = NULL;
	if (n < 1 || n > 100000)
		return loom_fail(LOOM_EINVAL, "choices: %zu choices (1 to 100000 allowed)", n);
	gx_builder_init(&b);
	alts = loom_malloc(n * sizeof *alts);
	int r = gx_rule_new(&b);
	if (!alts || r < 0) {
		rc = loom_fail(LOOM_ENOMEM, "choices: out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (!choices[i] && lens[i]) {
			rc = loom_fail(LOOM_EINVAL, "choices: choice %zu is NULL", i);
			goto out;
		}
		alts[i] = gx_lit(&b, choices[i] ? choices[i] : "", lens[i]);
	}
	if (!(b.rules[r].body = gx_alt(&b, alts, (int)n))) {
		rc = b.n_nodes > GX_MAX_NODES ? loom_fail(LOOM_ERANGE, "choices: too large")
					      : loom_fail(LOOM_ENOMEM, "choices: out of memory");
		goto out;
	}
	rc = gx_compile(&b, r, out);
out:
	loom_free(alts);
	gx_builder_fini(&b);
	return rc;
}
