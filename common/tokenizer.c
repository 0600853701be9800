/*
 * common/tokenizer.c — loading tokenizer.json: vocab, added tokens, merges,
 * model options; the accessors. The normalizer / pre-tokenizer /
 * post-processor / decoder sections are read in tokenizer_config.c,
 * encoding is tokenizer_bpe.c, decoding tokenizer_decode.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "alloc.h"
#include "textfile.h"
#include "tokenizer_int.h"

#define TK_MAX_IDS (1 << 24)           /* ids above this are surely a broken file */
#define TK_MAX_FILE (512u << 20)

static loom_err arena_add(loom_tok *t, const char *s, size_t len, uint32_t *off)
{
	if (t->text_len + len + 1 > UINT32_MAX - 1)
		return loom_fail(LOOM_EFORMAT, "%s: token strings too large", t->name);
	if (t->text_len + len + 1 > t->text_cap) {
		size_t cap = t->text_cap ? t->text_cap : 1 << 16;
		while (cap < t->text_len + len + 1)
			cap *= 2;
		char *p = loom_realloc(t->text, cap);
		if (!p)
			return loom_fail(LOOM_ENOMEM, "%s: out of memory for token strings", t->name);
		t->text = p;
		t->text_cap = cap;
	}
	memcpy(t->text + t->text_len, s, len);
	t->text[t->text_len + len] = '\0';
	*off = (uint32_t)t->text_len;
	t->text_len += len + 1;
	return LOOM_OK;
}

static loom_err set_piece(loom_tok *t, int32_t id, const char *s, size_t len)
{
	uint32_t off = 0;
	loom_err rc = arena_add(t, s, len, &off);
	if (rc)
		return rc;
	t->piece_off[id] = off;
	t->piece_len[id] = (uint32_t)len;
	t->flags[id] &= (uint8_t)~TK_HOLE;
	return LOOM_OK;
}

static loom_err read_id(loom_tok *t, json_t *v, const char *what, const char *piece, int32_t *id)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) >= TK_MAX_IDS)
		return loom_fail(LOOM_EFORMAT, "%s: %s \"%.40s\" has no valid id (a non-negative integer below %d)",
				 t->name, what, piece, TK_MAX_IDS);
	*id = (int32_t)json_integer_value(v);
	return LOOM_OK;
}

/* Sizes the id space from the vocab and the added tokens. */
static loom_err size_ids(loom_tok *t, json_t *vocab, json_t *added)
{
	int32_t max = -1;
	const char *k;
	json_t *v;
	loom_err rc;
	json_object_foreach(vocab, k, v) {
		int32_t id;
		if ((rc = read_id(t, v, "vocab piece", k, &id)))
			return rc;
		if (id > max)
			max = id;
	}
	size_t i;
	json_array_foreach(added, i, v) {
		int32_t id;
		const char *c = json_string_value(json_object_get(v, "content"));
		if (!json_is_object(v) || !c)
			return loom_fail(LOOM_EFORMAT, "%s: added_tokens[%zu] has no \"content\" string",
					 t->name, i);
		if ((rc = read_id(t, json_object_get(v, "id"), "added token", c, &id)))
			return rc;
		if (id > max)
			max = id;
	}
	if (max < 0)
		return loom_fail(LOOM_EFORMAT, "%s: model.vocab is empty", t->name);
	t->n_vocab = max + 1;
	t->piece_off = loom_malloc((size_t)t->n_vocab * sizeof *t->piece_off);
	t->piece_len = loom_calloc((size_t)t->n_vocab, sizeof *t->piece_len);
	t->flags = loom_malloc((size_t)t->n_vocab);
	if (!t->piece_off || !t->piece_len || !t->flags)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory for %d ids", t->name, t->n_vocab);
	memset(t->piece_off, 0xff, (size_t)t->n_vocab * sizeof *t->piece_off);
	memset(t->flags, TK_HOLE, (size_t)t->n_vocab);
	return LOOM_OK;
}

static loom_err load_vocab(loom_tok *t, json_t *vocab)
{
	const char *k;
	json_t *v;
	loom_err rc;
	json_object_foreach(vocab, k, v) {
		int32_t id = (int32_t)json_integer_value(v);
		if (!(t->flags[id] & TK_HOLE))
			return loom_fail(LOOM_EFORMAT, "%s: vocab id %d is used by both \"%.40s\" and \"%.40s\"",
					 t->name, id, tk_piece(t, id), k);
		if ((rc = set_piece(t, id, k, strlen(k))))
			return rc;
	}
	return LOOM_OK;
}

static int added_cmp(const void *a, const void *b)
{
	const tk_added *x = a, *y = b;
	if (x->len != y->len)
		return x->len > y->len ? -1 : 1;
	return x->id - y->id;
}

static loom_err load_added(loom_tok *t, json_t *added)
{
	size_t i, n = json_array_size(added);
	json_t *v;
	loom_err rc;
	if (!n)
		return LOOM_OK;
	t->added_raw.v = loom_calloc(n, sizeof *t->added_raw.v);
	t->added_norm.v = loom_calloc(n, sizeof *t->added_norm.v);
	if (!t->added_raw.v || !t->added_norm.v)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", t->name);
	json_array_foreach(added, i, v) {
		json_t *c = json_object_get(v, "content");
		const char *s = json_string_value(c);
		size_t len = json_string_length(c);
		int32_t id = (int32_t)json_integer_value(json_object_get(v, "id"));
		if (!len)
			return loom_fail(LOOM_EFORMAT, "%s: added_tokens[%zu] has empty content", t->name, i);
		if (t->flags[id] & TK_HOLE) {
			if ((rc = set_piece(t, id, s, len)))
				return rc;
			t->flags[id] |= TK_ADDED_ONLY;
		} else if (t->piece_len[id] != len || memcmp(tk_piece(t, id), s, len)) {
			return loom_fail(LOOM_EFORMAT, "%s: added token \"%.40s\" has id %d, which the vocab gives to \"%.40s\"",
					 t->name, s, id, tk_piece(t, id));
		}
		bool special = json_is_true(json_object_get(v, "special"));
		t->flags[id] |= TK_ADDED | (special ? TK_SPECIAL : 0);
		/* parked in added_raw until the normalizer is known (finish_added) */
		t->added_raw.v[t->added_raw.n++] = (tk_added){
			.id = id,
			.lstrip = json_is_true(json_object_get(v, "lstrip")),
			.rstrip = json_is_true(json_object_get(v, "rstrip")),
			.special = special,
			.normalized = json_is_true(json_object_get(v, "normalized")),
		};
	}
	return LOOM_OK;
}

static void finish_set(tk_added_set *set)
{
	if (!set->n)
		return;
	qsort(set->v, set->n, sizeof *set->v, added_cmp);
	for (size_t j = 0; j < set->n; j++)
		set->first[(uint8_t)set->v[j].s[0]] = 1;
}

/* Splits the added tokens into the raw-text and the normalized-text sets. */
static loom_err finish_added(loom_tok *t)
{
	size_t keep = 0;
	loom_err rc;
	for (size_t j = 0; j < t->added_raw.n; j++) {
		tk_added a = t->added_raw.v[j];
		a.s = tk_piece(t, a.id); /* the arena no longer moves */
		a.len = t->piece_len[a.id];
		if (a.normalized && t->n_norm) {
			size_t nl;
			if ((rc = tk_normalize(t, a.s, a.len, &a.own, &nl)))
				return rc;
			a.s = a.own;
			a.len = (uint32_t)nl;
			if (a.len)
				t->added_norm.v[t->added_norm.n++] = a;
			else
				loom_free(a.own);
		} else {
			t->added_raw.v[keep++] = a;
		}
	}
	t->added_raw.n = keep;
	finish_set(&t->added_raw);
	finish_set(&t->added_norm);
	return LOOM_OK;
}

static loom_err build_piece_map(loom_tok *t)
{
	size_t n = 0;
	loom_err rc;
	for (int32_t id = 0; id < t->n_vocab; id++)
		n += !(t->flags[id] & TK_HOLE);
	if ((rc = tk_strmap_init(&t->pieces, n)))
		return rc;
	/* model pieces first, so a string that is both keeps its model id */
	for (int pass = 0; pass < 2; pass++)
		for (int32_t id = 0; id < t->n_vocab; id++) {
			uint8_t f = t->flags[id];
			if ((f & TK_HOLE) || !!(f & TK_ADDED_ONLY) != pass)
				continue;
			if ((rc = tk_strmap_put(&t->pieces, t, id)))
				return rc;
		}
	return LOOM_OK;
}

/* Id of a model piece (not an added-only token), -1 if none. */
static int32_t model_id(const loom_tok *t, const char *s, size_t len)
{
	int32_t id = tk_strmap_get(&t->pieces, t, s, len);
	return id >= 0 && !(t->flags[id] & TK_ADDED_ONLY) ? id : -1;
}

static loom_err load_merges(loom_tok *t, json_t *merges)
{
	size_t i, n = json_array_size(merges);
	json_t *m;
	loom_err rc;
	char *buf = NULL;
	size_t cap = 0;
	if ((rc = tk_pairmap_init(&t->merges, n)))
		return rc;
	json_array_foreach(merges, i, m) {
		const char *a, *b;
		size_t la, lb;
		if (json_is_string(m)) {
			a = json_string_value(m);
			const char *sp = strchr(a, ' ');
			if (!sp || sp == a || !sp[1]) {
				rc = loom_fail(LOOM_EFORMAT, "%s: merges[%zu] \"%.60s\" is not two pieces separated by a space",
					       t->name, i, a);
				goto out;
			}
			la = (size_t)(sp - a);
			b = sp + 1;
			lb = strlen(b);
		} else if (json_is_array(m) && json_array_size(m) == 2 &&
			   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
			a = json_string_value(json_array_get(m, 0));
			b = json_string_value(json_array_get(m, 1));
			la = json_string_length(json_array_get(m, 0));
			lb = json_string_length(json_array_get(m, 1));
		} else {
			rc = loom_fail(LOOM_EFORMAT, "%s: merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]",
				       t->name, i);
			goto out;
		}
		int32_t ia = model_id(t, a, la), ib = model_id(t, b, lb);
		if (la + lb + 1 > cap) {
			cap = 2 * (la + lb + 1);
			char *p = loom_realloc(buf, cap);
			if (!p) {
				rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", t->name);
				goto out;
			}
			buf = p;
		}
		memcpy(buf, a, la);
		memcpy(buf + la, b, lb);
		int32_t ic = model_id(t, buf, la + lb);
		if (ia < 0 || ib < 0 || ic < 0) {
			const char *what = ia < 0 ? a : ib < 0 ? b : "their concatenation";
			int wl = ia < 0 ? (int)la : ib < 0 ? (int)lb : 20;
			rc = loom_fail(LOOM_EFORMAT, "%s: merges[%zu] (\"%.*s\" + \"%.*s\") refers to a piece not in model.vocab: %.*s",
				       t->name, i, (int)(la > 40 ? 40 : la), a, (int)(lb > 40 ? 40 : lb), b,
				       wl > 40 ? 40 : wl, what);
			goto out;
		}
		tk_pairmap_put(&t->merges, ia, ib, (int32_t)i, ic);
	}
out:
	loom_free(buf);
	return rc;
}

static loom_err load_model(loom_tok *t, json_t *model)
{
	json_t *type = json_object_get(model, "type");
	json_t *merges = json_object_get(model, "merges");
	if (type && !json_is_string(type))
		return loom_fail(LOOM_EFORMAT, "%s: model.type is not a string", t->name);
	if (type && strcmp(json_string_value(type), "BPE") != 0)
		return loom_fail(LOOM_EUNSUPPORTED, "%s: model type \"%.40s\" is not supported (only BPE)",
				 t->name, json_string_value(type));
	if (!type && !merges)
		return loom_fail(LOOM_EUNSUPPORTED, "%s: model has no type and no merges: only BPE is supported",
				 t->name);
	if (merges && !json_is_array(merges))
		return loom_fail(LOOM_EFORMAT, "%s: model.merges is not an array", t->name);
	const char *sfx[] = { "continuing_subword_prefix", "end_of_word_suffix" };
	for (int i = 0; i < 2; i++) {
		const char *s = json_string_value(json_object_get(model, sfx[i]));
		if (s && *s)
			return loom_fail(LOOM_EUNSUPPORTED, "%s: model.%s \"%.20s\" is not supported",
					 t->name, sfx[i], s);
	}
	t->fuse_unk = json_is_true(json_object_get(model, "fuse_unk"));
	t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
	t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
	t->unk_id = -1;
	json_t *unk = json_object_get(model, "unk_token");
	if (json_is_string(unk)) {
		t->unk_id = tk_strmap_get(&t->pieces, t, json_string_value(unk), json_string_length(unk));
		if (t->unk_id < 0)
			return loom_fail(LOOM_EFORMAT, "%s: model.unk_token \"%.40s\" is not in the vocab",
					 t->name, json_string_value(unk));
	}
	for (int b = 0; b < 256; b++) {
		char s[8];
		snprintf(s, sizeof s, "<0x%02X>", b);
		t->byte_piece[b] = t->byte_fallback ? model_id(t, s, 6) : -1;
	}
	return merges ? load_merges(t, merges) : tk_pairmap_init(&t->merges, 0);
}

/* After the pre-tokenizer is known: byte-level words start from one
 * symbol per byte, the piece of the byte's printable char. */
static void map_byte_pieces(loom_tok *t)
{
	if (!t->byte_level)
		return;
	for (int b = 0; b < 256; b++) {
		uint32_t cp = tk_byte_to_cp((uint8_t)b);
		char s[4];
		size_t n;
		if (cp < 0x80) {
			s[0] = (char)cp;
			n = 1;
		} else {
			s[0] = (char)(0xc0 | (cp >> 6));
			s[1] = (char)(0x80 | (cp & 0x3f));
			n = 2;
		}
		t->byte_piece[b] = model_id(t, s, n);
	}
}

loom_err loom_tok_load_json(const char *json, size_t len, const char *name, loom_tok **out)
{
	loom_err rc;
	json_error_t jerr;
	json_t *root = NULL;
	loom_tok *t = loom_calloc(1, sizeof *t);
	*out = NULL;
	if (!t)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", name);
	t->name = loom_strdup(name ? name : "tokenizer.json");
	if (!t->name) {
		rc = loom_fail(LOOM_ENOMEM, "%s: out of memory", name);
		goto out;
	}
	root = json_loadb(json, len, 0, &jerr);
	if (!root) {
		rc = loom_fail(LOOM_EFORMAT, "%s: not valid JSON (line %d, column %d): %s", t->name,
			       jerr.line, jerr.column, jerr.text);
		goto out;
	}
	json_t *model = json_object_get(root, "model");
	if (!json_is_object(root) || !json_is_object(model)) {
		rc = loom_fail(LOOM_EFORMAT, "%s: no \"model\" object: not a tokenizer.json", t->name);
		goto out;
	}
	json_t *vocab = json_object_get(model, "vocab");
	json_t *added = json_object_get(root, "added_tokens");
	json_t *type = json_object_get(model, "type");
	if (json_is_string(type) && strcmp(json_string_value(type), "BPE") != 0) {
		rc = loom_fail(LOOM_EUNSUPPORTED, "%s: model type \"%.40s\" is not supported (only BPE)",
			       t->name, json_string_value(type));
		goto out;
	}
	if (!json_is_object(vocab)) {
		rc = loom_fail(LOOM_EFORMAT, "%s: model.vocab is missing or not an object", t->name);
		goto out;
	}
	if (added && !json_is_null(added) && !json_is_array(added)) {
		rc = loom_fail(LOOM_EFORMAT, "%s: added_tokens is not an array", t->name);
		goto out;
	}
	if ((rc = size_ids(t, vocab, added)) || (rc = load_vocab(t, vocab)) ||
	    (rc = load_added(t, added)) || (rc = build_piece_map(t)) || (rc = load_model(t, model)))
		goto out;
	if ((rc = tk_load_normalizer(t, json_object_get(root, "normalizer"))) ||
	    (rc = tk_load_pretok(t, json_object_get(root, "pre_tokenizer"))) ||
	    (rc = tk_load_post(t, json_object_get(root, "post_processor"))) ||
	    (rc = tk_load_decoder(t, json_object_get(root, "decoder"))))
		goto out;
	map_byte_pieces(t);
	if ((rc = finish_added(t)) || (rc = tk_build_dec(t)))
		goto out;
	*out = t;
	t = NULL;
out:
	json_decref(root);
	loom_tok_free(t);
	return rc;
}

loom_err loom_tok_load(const char *path, loom_tok **out)
{
	char *buf = NULL;
	size_t len = 0;
	*out = NULL;
	loom_err rc = loom_text_read(path, TK_MAX_FILE, &buf, &len);
	if (rc == LOOM_EFORMAT)
		rc = loom_fail(LOOM_EFORMAT, "%s: too large for a tokenizer.json (over %zu bytes)",
			       path, (size_t)TK_MAX_FILE);
	if (!rc)
		rc = loom_tok_load_json(buf, len, path, out);
	loom_free(buf);
	return rc;
}

loom_err loom_tok_set_name(loom_tok *t, const char *fmt, ...)
{
	char name[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	char *n = loom_strdup(name);
	if (!n)
		return loom_fail(LOOM_ENOMEM, "%s: out of memory", t->name);
	loom_free(t->name);
	t->name = n;
	return LOOM_OK;
}

void loom_tok_free(loom_tok *t)
{
	if (!t)
		return;
	tk_config_fini(t);
	tk_strmap_fini(&t->pieces);
	tk_pairmap_fini(&t->merges);
	for (size_t j = 0; j < t->added_norm.n; j++)
		loom_free(t->added_norm.v[j].own);
	loom_free(t->added_raw.v);
	loom_free(t->added_norm.v);
	loom_free(t->text);
	loom_free(t->piece_off);
	loom_free(t->piece_len);
	loom_free(t->flags);
	loom_free(t->prefix);
	loom_free(t->suffix);
	loom_free(t->dec);
	loom_free(t->dec_off);
	loom_free(t->name);
	loom_free(t);
}

int32_t loom_tok_n_vocab(const loom_tok *t)
{
	return t->n_vocab;
}

int32_t loom_tok_id(const loom_tok *t, const char *piece)
{
	return tk_strmap_get(&t->pieces, t, piece, strlen(piece));
}

bool loom_tok_is_special(const loom_tok *t, int32_t id)
{
	return id >= 0 && id < t->n_vocab && (t->flags[id] & TK_SPECIAL);
}

bool loom_tok_id_bytes(const loom_tok *t, int32_t id, const char **p, size_t *len)
{
	*p = NULL;
	*len = 0;
	if (id < 0 || id >= t->n_vocab || (t->flags[id] & TK_HOLE))
		return false;
	*p = (const char *)t->dec + t->dec_off[id];
	*len = t->dec_off[id + 1] - t->dec_off[id];
	return true;
}
