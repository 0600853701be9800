/*
 * common/tokenizer_decode.c — ids -> text, whole or incrementally, and the
 * UTF-8 helpers the encoder shares.
 *
 * Decoding is: the precomputed bytes of each id (tk_build_dec), one leading
 * space dropped when the decoder has Strip/Metaspace, then UTF-8 repair:
 * at each position a complete valid sequence is copied, anything else
 * becomes U+FFFD and the scan moves on by one byte. Because that decision
 * looks only at the bytes of one sequence, the stream decoder reaches the
 * same text by holding back an incomplete (but so far valid) tail until
 * the next id completes or breaks it.
 */
#include <string.h>

#include "alloc.h"
#include "tokenizer_int.h"

static const char fffd[3] = { (char)0xef, (char)0xbf, (char)0xbd };

size_t tk_utf8_seq(const uint8_t *s, size_t n, bool *partial)
{
	uint8_t c = s[0], lo = 0x80, hi = 0xbf;
	size_t need;
	if (partial)
		*partial = false;
	if (c < 0x80)
		return 1;
	if (c < 0xc2)
		return 0;
	if (c < 0xe0) {
		need = 2;
	} else if (c < 0xf0) {
		need = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c < 0xf5) {
		need = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	for (size_t i = 1; i < need; i++) {
		if (i >= n) {
			if (partial)
				*partial = true;
			return 0;
		}
		if (s[i] < lo || s[i] > hi)
			return 0;
		lo = 0x80;
		hi = 0xbf;
	}
	return need;
}

bool tk_utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		size_t k = tk_utf8_seq(s + i, n - i, NULL);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

/*
 * GPT-2's bytes_to_unicode: printable Latin-1 bytes ('!'..'~', '¡'..'¬',
 * '®'..'ÿ') stand for themselves; the other 68 bytes (0x00-0x20, 0x7f-0xa0,
 * 0xad) take U+0100.. in byte order.
 */
uint32_t tk_byte_to_cp(uint8_t b)
{
	if (b <= 0x20)
		return 256u + b;
	if (b >= 0x7f && b <= 0xa0)
		return 256u + 33 + (b - 0x7fu);
	if (b == 0xad)
		return 256u + 67;
	return b;
}

int tk_cp_to_byte(uint32_t cp)
{
	if (cp < 256)
		return tk_byte_to_cp((uint8_t)cp) == cp ? (int)cp : -1;
	if (cp < 256 + 33)
		return (int)(cp - 256);
	if (cp < 256 + 67)
		return (int)(0x7f + cp - 289);
	if (cp == 256 + 67)
		return 0xad;
	return -1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Writes the decoded bytes of one piece to out (room for len bytes). */
static size_t dec_piece(const loom_tok *t, const char *p, size_t len, uint8_t *out)
{
	if (t->dec_byte_fallback && len == 6 && !memcmp(p, "<0x", 3) && p[5] == '>' &&
	    hexval(p[3]) >= 0 && hexval(p[4]) >= 0) {
		out[0] = (uint8_t)(hexval(p[3]) * 16 + hexval(p[4]));
		return 1;
	}
	if (t->dec_byte_level) {
		size_t n = 0, i = 0;
		const uint8_t *s = (const uint8_t *)p;
		while (i < len) {
			size_t k = tk_utf8_seq(s + i, len - i, NULL);
			uint32_t cp;
			if (k == 1)
				cp = s[i];
			else if (k == 2)
				cp = ((s[i] & 0x1fu) << 6) | (s[i + 1] & 0x3fu);
			else
				break;
			int b = tk_cp_to_byte(cp);
			if (b < 0)
				break;
			out[n++] = (uint8_t)b;
			i += k;
		}
		if (i == len)
			return n;
		/* not all byte-level chars (e.g. an added token with a space): raw */
		memcpy(out, p, len);
		return len;
	}
	if (t->dec_meta) {
		size_t n = 0;
		for (size_t i = 0; i < len; i++) {
			if (i + 2 < len && (uint8_t)p[i] == 0xe2 && (uint8_t)p[i + 1] == 0x96 &&
			    (uint8_t)p[i + 2] == 0x81) {
				out[n++] = ' ';
				i += 2;
			} else {
				out[n++] = (uint8_t)p[i];
			}
		}
		return n;
	}
	memcpy(out, p, len);
	return len;
}

loom_err tk_build_dec(loom_tok *t)
{
	t->dec = loom_malloc(t->text_len ? t->text_len : 1);
	t->dec_off = loom_malloc(((size_t)t->n_vocab + 1) * sizeof *t->dec_off);
	if (!t->dec || !t->dec_off)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", t->name);
	uint32_t off = 0;
	for (int32_t id = 0; id < t->n_vocab; id++) {
		t->dec_off[id] = off;
		if (!(t->flags[id] & TK_HOLE))
			off += (uint32_t)dec_piece(t, tk_piece(t, id), t->piece_len[id], t->dec + off);
	}
	t->dec_off[t->n_vocab] = off;
	return LOOM_OK;
}

static loom_err check_id(const loom_tok *t, int32_t id)
{
	if (id < 0 || id >= t->n_vocab || (t->flags[id] & TK_HOLE))
		return loom_fail(LOOM_ERANGE, "%s: token id %d is not in the vocabulary (0..%d)", t->name, id,
				 t->n_vocab - 1);
	return LOOM_OK;
}

/*
 * UTF-8 repair of in[0..n) into out (room for 3n bytes). With hold, an
 * incomplete tail is left unconsumed; *used says how many bytes were.
 */
static size_t repair(const uint8_t *in, size_t n, char *out, bool hold, size_t *used)
{
	size_t i = 0, o = 0;
	while (i < n) {
		bool partial;
		size_t k = in[i] < 0x80 ? 1 : tk_utf8_seq(in + i, n - i, &partial);
		if (k) {
			memcpy(out + o, in + i, k);
			o += k;
			i += k;
		} else if (partial && hold) {
			break;
		} else {
			memcpy(out + o, fffd, 3);
			o += 3;
			i++;
		}
	}
	if (used)
		*used = i;
	return o;
}

loom_err loom_tok_decode(const loom_tok *t, const int32_t *ids, size_t n, bool skip_special,
			 char **text, size_t *len)
{
	loom_err rc;
	size_t total = 0;
	*text = NULL;
	*len = 0;
	for (size_t i = 0; i < n; i++) {
		if ((rc = check_id(t, ids[i])))
			return rc;
		total += t->dec_off[ids[i] + 1] - t->dec_off[ids[i]];
	}
	uint8_t *raw = loom_malloc(total + 1);
	char *out = loom_malloc(3 * total + 1);
	if (!raw || !out) {
		loom_free(raw);
		loom_free(out);
		return loom_fail(LOOM_ENOMEM, "%s: out of memory decoding %zu ids", t->name, n);
	}
	size_t r = 0;
	for (size_t i = 0; i < n; i++) {
		int32_t id = ids[i];
		if (skip_special && (t->flags[id] & TK_SPECIAL))
			continue;
		size_t k = t->dec_off[id + 1] - t->dec_off[id];
		memcpy(raw + r, t->dec + t->dec_off[id], k);
		r += k;
	}
	size_t skip = t->dec_strip_space && r && raw[0] == ' ';
	size_t o = repair(raw + skip, r - skip, out, false, NULL);
	out[o] = '\0';
	loom_free(raw);
	*text = out;
	*len = o;
	return LOOM_OK;
}

/* ---- incremental decoding ---- */

struct loom_tok_stream {
	const loom_tok *t;
	bool skip_special;
	bool strip;        /* a leading ' ' is still to be dropped */
	uint8_t held[4];   /* incomplete UTF-8 tail (at most 3 bytes) */
	size_t n_held;
	uint8_t *in;       /* held + this id's bytes */
	size_t in_cap;
	char *out;         /* what push/finish returns */
	size_t out_cap;
};

loom_err loom_tok_stream_create(const loom_tok *t, bool skip_special, bool at_start,
				loom_tok_stream **out)
{
	loom_tok_stream *s = loom_calloc(1, sizeof *s);
	*out = NULL;
	if (!s)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory for a decode stream", t->name);
	s->t = t;
	s->skip_special = skip_special;
	s->strip = at_start && t->dec_strip_space;
	*out = s;
	return LOOM_OK;
}

static loom_err reserve(loom_tok_stream *s, size_t in, size_t out)
{
	if (in > s->in_cap) {
		uint8_t *p = loom_realloc(s->in, in * 2);
		if (!p)
			return loom_fail(LOOM_ENOMEM, "%s: out of memory", s->t->name);
		s->in = p;
		s->in_cap = in * 2;
	}
	if (out > s->out_cap) {
		char *p = loom_realloc(s->out, out * 2);
		if (!p)
			return loom_fail(LOOM_ENOMEM, "%s: out of memory", s->t->name);
		s->out = p;
		s->out_cap = out * 2;
	}
	return LOOM_OK;
}

loom_err loom_tok_stream_push(loom_tok_stream *s, int32_t id, const char **out, size_t *out_len)
{
	const loom_tok *t = s->t;
	loom_err rc;
	*out = "";
	*out_len = 0;
	if ((rc = check_id(t, id)))
		return rc;
	if (s->skip_special && (t->flags[id] & TK_SPECIAL))
		return LOOM_OK;
	const uint8_t *b = t->dec + t->dec_off[id];
	size_t k = t->dec_off[id + 1] - t->dec_off[id];
	if (s->strip && k) {
		s->strip = false;
		if (b[0] == ' ') {
			b++;
			k--;
		}
	}
	size_t n = s->n_held + k;
	if ((rc = reserve(s, n + 1, 3 * n + 1)))
		return rc;
	memcpy(s->in, s->held, s->n_held);
	memcpy(s->in + s->n_held, b, k);
	size_t used;
	size_t o = repair(s->in, n, s->out, true, &used);
	s->n_held = n - used;
	memcpy(s->held, s->in + used, s->n_held);
	s->out[o] = '\0';
	*out = s->out;
	*out_len = o;
	return LOOM_OK;
}

loom_err loom_tok_stream_finish(loom_tok_stream *s, const char **out, size_t *out_len)
{
	loom_err rc;
	*out = "";
	*out_len = 0;
	if ((rc = reserve(s, 1, 3 * s->n_held + 1)))
		return rc;
	size_t o = repair(s->held, s->n_held, s->out, false, NULL);
	s->n_held = 0;
	s->out[o] = '\0';
	*out = s->out;
	*out_len = o;
	return LOOM_OK;
}

void loom_tok_stream_destroy(loom_tok_stream *s)
{
	if (!s)
		return;
	loom_free(s->in);
	loom_free(s->out);
	loom_free(s);
}
