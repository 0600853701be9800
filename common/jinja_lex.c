/*
 * common/jinja_lex.c — template source to tokens, as jinja2 3.1's lexer
 * does it with trim_blocks and lstrip_blocks on.
 *
 * Whitespace rules (the part that decides byte-identical output):
 *   - newlines (\r\n, \r) become \n and one trailing newline of the source
 *     is dropped (keep_trailing_newline=False);
 *   - `{%-`, `{{-`, `{#-` strip all whitespace before the tag; `-%}`,
 *     `-}}`, `-#}` all whitespace after it;
 *   - trim_blocks: `%}` and `#}` eat one newline right after them;
 *   - lstrip_blocks: spaces/tabs between a line start and `{%` or `{#` go
 *     (not before `{{`, not with `{%+`). A "line start" is after a newline in
 *     the text or right after a tag whose match ended with one.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/jinja_int.h"

typedef struct lx {
	const char *s; /* normalized source */
	size_t n, pos;
	int line;
	jj_arena *a;
	jj_toks *toks;
	bool line_starting;
} lx;

static loom_err lx_fail(lx *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static loom_err lx_fail(lx *l, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return loom_fail(LOOM_EFORMAT, "chat template line %d: %s", l->line, msg);
}

static void lx_adv(lx *l, size_t to)
{
	for (size_t i = l->pos; i < to; i++)
		l->line += l->s[i] == '\n';
	l->pos = to;
}

static loom_err lx_push(lx *l, jj_token t)
{
	if (l->toks->n == l->toks->cap) {
		size_t cap = l->toks->cap ? l->toks->cap * 2 : 256;
		jj_token *v = loom_realloc(l->toks->v, cap * sizeof *v);
		if (!v)
			return loom_fail(LOOM_ENOMEM, "chat template: out of memory");
		l->toks->v = v;
		l->toks->cap = cap;
	}
	if (!t.line)
		t.line = l->line;
	l->toks->v[l->toks->n++] = t;
	return LOOM_OK;
}

/* Bytes of Python whitespace (\s) at s[i..n), 0 if none. */
static size_t ws_at(const char *s, size_t n, size_t i)
{
	size_t adv;
	if (i >= n)
		return 0;
	uint32_t cp = jj_utf8_dec(s + i, n - i, &adv);
	return jj_isspace(cp) ? adv : 0;
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
	size_t k;
	while ((k = ws_at(s, n, i)))
		i += k;
	return i;
}

/* Length of text with trailing Python whitespace removed. */
static size_t rstrip_len(const char *s, size_t n)
{
	size_t end = n;
	for (;;) {
		size_t i = end;
		if (!i)
			return 0;
		/* step back one code point */
		i--;
		while (i > 0 && ((unsigned char)s[i] & 0xc0) == 0x80)
			i--;
		if (ws_at(s, end, i) != end - i)
			return end;
		end = i;
	}
}

/* Emits the text before a tag, stripped as the tag asks. lstrip: the tag may lstrip. */
static loom_err lx_text(lx *l, size_t from, size_t to, int sign, bool lstrip)
{
	const char *t = l->s + from;
	size_t n = to - from;
	if (sign == '-') {
		n = rstrip_len(t, n);
	} else if (sign != '+' && lstrip) {
		size_t lpos = 0;
		for (size_t i = n; i > 0; i--)
			if (t[i - 1] == '\n') {
				lpos = i;
				break;
			}
		if ((lpos > 0 || l->line_starting) && lpos < n && skip_ws(t, n, lpos) == n)
			n = lpos;
	}
	if (n) {
		jj_token tk = { .type = JT_DATA, .s = t, .n = n };
		loom_err rc = lx_push(l, tk);
		if (rc)
			return rc;
	}
	lx_adv(l, to);
	return LOOM_OK;
}

static bool starts(const lx *l, size_t i, const char *w)
{
	size_t k = strlen(w);
	return i + k <= l->n && memcmp(l->s + i, w, k) == 0;
}

/* A block end at i: `+%}`, `-%}\s*`, `%}\n?`. Returns its end, 0 if none. */
static size_t block_end_at(const lx *l, size_t i, bool *nl)
{
	size_t e;
	if (starts(l, i, "+%}"))
		e = i + 3;
	else if (starts(l, i, "-%}"))
		e = skip_ws(l->s, l->n, i + 3);
	else if (starts(l, i, "%}"))
		e = i + 2 + (i + 2 < l->n && l->s[i + 2] == '\n');
	else
		return 0;
	*nl = e > 0 && l->s[e - 1] == '\n';
	return e;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static size_t put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A string literal at l->pos (quote char q); Python escapes decoded. */
static loom_err lx_string(lx *l)
{
	char q = l->s[l->pos];
	size_t i = l->pos + 1, start_line = (size_t)l->line;
	char *o = jj_alloc(l->a, l->n - l->pos + 1), *w = o;
	if (!o)
		return loom_fail(LOOM_ENOMEM, "chat template: out of memory");
	while (i < l->n && l->s[i] != q) {
		char c = l->s[i];
		if (c != '\\') {
			*w++ = c;
			i++;
			continue;
		}
		if (i + 1 >= l->n)
			break;
		c = l->s[i + 1];
		i += 2;
		switch (c) {
		case '\n': break;
		case '\\': *w++ = '\\'; break;
		case '\'': *w++ = '\''; break;
		case '"': *w++ = '"'; break;
		case 'a': *w++ = '\a'; break;
		case 'b': *w++ = '\b'; break;
		case 'f': *w++ = '\f'; break;
		case 'n': *w++ = '\n'; break;
		case 'r': *w++ = '\r'; break;
		case 't': *w++ = '\t'; break;
		case 'v': *w++ = '\v'; break;
		case 'x': case 'u': case 'U': {
			int nd = c == 'x' ? 2 : c == 'u' ? 4 : 8;
			uint32_t cp = 0;
			for (int k = 0; k < nd; k++) {
				int h = i + (size_t)k < l->n ? hexval(l->s[i + (size_t)k]) : -1;
				if (h < 0)
					return lx_fail(l, "truncated \\%cXX escape in a string", c);
				cp = cp * 16 + (uint32_t)h;
			}
			i += (size_t)nd;
			if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
				return lx_fail(l, "unsupported escape \\%c%0*x in a string", c, nd, cp);
			w += put_utf8(w, cp);
			break;
		}
		case 'N':
			return lx_fail(l, "unsupported escape \\N{...} in a string");
		default:
			if (c >= '0' && c <= '7') {
				uint32_t cp = (uint32_t)(c - '0');
				for (int k = 0; k < 2 && i < l->n && l->s[i] >= '0' && l->s[i] <= '7'; k++)
					cp = cp * 8 + (uint32_t)(l->s[i++] - '0');
				w += put_utf8(w, cp);
			} else {
				*w++ = '\\';
				i--; /* the char itself is copied next round */
			}
		}
	}
	if (i >= l->n) {
		l->line = (int)start_line;
		return lx_fail(l, "unterminated string");
	}
	*w = '\0';
	jj_token t = { .type = JT_STRING, .s = o, .n = (size_t)(w - o) };
	loom_err rc = lx_push(l, t);
	lx_adv(l, i + 1);
	return rc;
}

static bool isdig(char c) { return c >= '0' && c <= '9'; }
static bool isname0(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }

/* Digits with single underscores between them, from i; returns end (== i if none). */
static size_t digits(const lx *l, size_t i)
{
	size_t j = i;
	while (j < l->n && isdig(l->s[j])) {
		j++;
		if (j + 1 < l->n && l->s[j] == '_' && isdig(l->s[j + 1]))
			j++;
	}
	return j;
}

static loom_err lx_number(lx *l)
{
	size_t i = l->pos, e = digits(l, i), fe = 0;
	char buf[64];
	size_t k = 0;
	/* float: digits ( .digits [e..] | e.. ) */
	if (!(i > 0 && l->s[i - 1] == '.')) {
		size_t j = e;
		bool frac = false;
		if (j < l->n && l->s[j] == '.' && digits(l, j + 1) > j + 1) {
			j = digits(l, j + 1);
			frac = true;
		}
		if (j < l->n && (l->s[j] == 'e' || l->s[j] == 'E')) {
			size_t x = j + 1;
			if (x < l->n && (l->s[x] == '+' || l->s[x] == '-'))
				x++;
			if (digits(l, x) > x)
				fe = digits(l, x);
		}
		if (!fe && frac)
			fe = j;
	}
	if (fe) {
		for (size_t j = i; j < fe && k + 1 < sizeof buf; j++)
			if (l->s[j] != '_')
				buf[k++] = l->s[j];
		buf[k] = '\0';
		jj_token t = { .type = JT_FLOAT, .f = strtod(buf, NULL) };
		loom_err rc = lx_push(l, t);
		lx_adv(l, fe);
		return rc;
	}
	int base = 10;
	size_t j = i;
	if (l->s[i] == '0' && i + 1 < l->n && strchr("bBoOxX", l->s[i + 1]) && l->s[i + 1]) {
		char b = (char)(l->s[i + 1] | 0x20);
		base = b == 'b' ? 2 : b == 'o' ? 8 : 16;
		j = i + 2;
		while (j < l->n && (l->s[j] == '_' || hexval(l->s[j]) >= 0) &&
		       (l->s[j] == '_' || hexval(l->s[j]) < base))
			j++;
		if (j == i + 2) {
			base = 10;
			j = i + 1;
		}
	} else if (l->s[i] == '0') {
		j = i + 1;
		while (j + 1 < l->n && (l->s[j] == '0' || (l->s[j] == '_' && l->s[j + 1] == '0')))
			j++;
		if (j < l->n && l->s[j] == '0')
			j++;
	} else {
		j = e;
	}
	uint64_t v = 0;
	for (size_t p = base == 10 ? i : i + 2; p < j; p++) {
		if (l->s[p] == '_')
			continue;
		uint64_t d = (uint64_t)hexval(l->s[p]);
		if (v > (UINT64_C(0x7fffffffffffffff) - d) / (uint64_t)base)
			return lx_fail(l, "integer literal too large");
		v = v * (uint64_t)base + d;
	}
	jj_token t = { .type = JT_INT, .i = (int64_t)v };
	loom_err rc = lx_push(l, t);
	lx_adv(l, j);
	return rc;
}

/* Tokens of a {{ }} or {% %} tag, up to and including its end. */
static loom_err lx_tag(lx *l, bool block)
{
	char stack[JJ_MAX_PARSE_DEPTH];
	int depth = 0;
	loom_err rc;
	for (;;) {
		size_t w = skip_ws(l->s, l->n, l->pos);
		lx_adv(l, w);
		if (l->pos >= l->n)
			return lx_fail(l, "unexpected end of template inside a %s tag",
				       block ? "{% %}" : "{{ }}");
		if (!depth) {
			bool nl = false;
			size_t e = 0;
			if (block)
				e = block_end_at(l, l->pos, &nl);
			else if (starts(l, l->pos, "-}}"))
				e = skip_ws(l->s, l->n, l->pos + 3);
			else if (starts(l, l->pos, "}}"))
				e = l->pos + 2;
			if (e) {
				jj_token t = { .type = block ? JT_BLOCK_END : JT_VAR_END };
				if ((rc = lx_push(l, t)))
					return rc;
				l->line_starting = e > 0 && l->s[e - 1] == '\n';
				lx_adv(l, e);
				return LOOM_OK;
			}
		}
		char c = l->s[l->pos];
		if (isdig(c)) {
			if ((rc = lx_number(l)))
				return rc;
			continue;
		}
		if (isname0(c)) {
			size_t j = l->pos;
			while (j < l->n && (isname0(l->s[j]) || isdig(l->s[j])))
				j++;
			jj_token t = { .type = JT_NAME, .s = l->s + l->pos, .n = j - l->pos };
			if ((rc = lx_push(l, t)))
				return rc;
			lx_adv(l, j);
			continue;
		}
		if (c == '\'' || c == '"') {
			if ((rc = lx_string(l)))
				return rc;
			continue;
		}
		static const struct { const char *s; int op; } two[] = {
			{ "//", JO_FLOORDIV }, { "**", JO_POW }, { "==", JO_EQ },
			{ "!=", JO_NE },       { "<=", JO_LE },  { ">=", JO_GE },
		};
		int op = 0;
		size_t oplen = 1;
		for (size_t k = 0; k < sizeof two / sizeof two[0]; k++)
			if (starts(l, l->pos, two[k].s)) {
				op = two[k].op;
				oplen = 2;
			}
		if (!op && c && strchr("+-/*%~[](){}><=.:|,;", c))
			op = c;
		if (!op)
			return lx_fail(l, "unexpected char '%c'", c >= 0x20 && c < 0x7f ? c : '?');
		if (op == '(' || op == '[' || op == '{') {
			if (depth == (int)sizeof stack)
				return lx_fail(l, "brackets nested too deeply");
			stack[depth++] = op == '(' ? ')' : op == '[' ? ']' : '}';
		} else if (op == ')' || op == ']' || op == '}') {
			if (!depth)
				return lx_fail(l, "unexpected '%c'", op);
			if (stack[--depth] != op)
				return lx_fail(l, "unexpected '%c', expected '%c'", op, stack[depth]);
		}
		jj_token t = { .type = JT_OP, .op = op };
		if ((rc = lx_push(l, t)))
			return rc;
		lx_adv(l, l->pos + oplen);
	}
}

/* {% raw %} at i (already known to match, body starts at body). */
static loom_err lx_raw(lx *l, size_t body)
{
	lx_adv(l, body);
	for (size_t i = body; i + 1 < l->n; i++) {
		if (l->s[i] != '{' || l->s[i + 1] != '%')
			continue;
		size_t j = i + 2;
		int sign = j < l->n && (l->s[j] == '-' || l->s[j] == '+') ? l->s[j++] : 0;
		j = skip_ws(l->s, l->n, j);
		if (!starts(l, j, "endraw"))
			continue;
		j = skip_ws(l->s, l->n, j + 6);
		bool nl;
		size_t e = block_end_at(l, j, &nl);
		if (!e)
			continue;
		loom_err rc = lx_text(l, body, i, sign, true);
		if (rc)
			return rc;
		l->line_starting = nl;
		lx_adv(l, e);
		return LOOM_OK;
	}
	return lx_fail(l, "missing end of raw directive");
}

loom_err jj_lex(const char *src, size_t len, jj_arena *a, jj_toks *toks)
{
	char *s = jj_alloc(a, len + 1);
	size_t n = 0;
	loom_err rc;
	if (!s)
		return loom_fail(LOOM_ENOMEM, "chat template: out of memory");
	for (size_t i = 0; i < len; i++) {
		if (src[i] == '\r') {
			s[n++] = '\n';
			if (i + 1 < len && src[i + 1] == '\n')
				i++;
		} else {
			s[n++] = src[i];
		}
	}
	if (n && s[n - 1] == '\n')
		n--;
	s[n] = '\0';
	lx l = { .s = s, .n = n, .line = 1, .a = a, .toks = toks, .line_starting = true };

	while (l.pos < l.n) {
		size_t i = l.pos;
		while (i + 1 < l.n && !(l.s[i] == '{' && strchr("{%#", l.s[i + 1]) && l.s[i + 1]))
			i++;
		if (i + 1 >= l.n) { /* plain text to the end */
			if ((rc = lx_text(&l, l.pos, l.n, 0, false)))
				return rc;
			break;
		}
		char kind = l.s[i + 1];
		size_t j = i + 2;
		int sign = j < l.n && (l.s[j] == '-' || l.s[j] == '+') ? l.s[j] : 0;
		if (sign)
			j++;
		if (kind == '%') { /* {% raw %} ? */
			size_t k = skip_ws(l.s, l.n, j);
			if (starts(&l, k, "raw")) {
				k = skip_ws(l.s, l.n, k + 3);
				size_t e = 0;
				if (starts(&l, k, "-%}"))
					e = skip_ws(l.s, l.n, k + 3);
				else if (starts(&l, k, "%}"))
					e = k + 2;
				if (e) {
					if ((rc = lx_text(&l, l.pos, i, sign, true)))
						return rc;
					if ((rc = lx_raw(&l, e)))
						return rc;
					continue;
				}
			}
		}
		if ((rc = lx_text(&l, l.pos, i, sign, kind != '{')))
			return rc;
		if (kind == '#') {
			size_t q = j;
			while (q + 1 < l.n && !(l.s[q] == '#' && l.s[q + 1] == '}'))
				q++;
			if (q + 1 >= l.n)
				return lx_fail(&l, "missing end of comment tag");
			size_t e;
			if (q > j && l.s[q - 1] == '-')
				e = skip_ws(l.s, l.n, q + 2);
			else if (q > j && l.s[q - 1] == '+')
				e = q + 2;
			else
				e = q + 2 + (q + 2 < l.n && l.s[q + 2] == '\n');
			l.line_starting = l.s[e - 1] == '\n';
			lx_adv(&l, e);
			continue;
		}
		jj_token t = { .type = kind == '%' ? JT_BLOCK_BEGIN : JT_VAR_BEGIN };
		if ((rc = lx_push(&l, t)))
			return rc;
		lx_adv(&l, j);
		if ((rc = lx_tag(&l, kind == '%')))
			return rc;
	}
	jj_token t = { .type = JT_EOF };
	return lx_push(&l, t);
}
