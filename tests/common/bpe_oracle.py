#!/usr/bin/python3
"""bpe_oracle.py — an independent encoder for Hugging Face tokenizer.json BPE files.

The reference that tests/common/test_tokenizer_real.c holds loom's tokenizer
against. Written from the semantics of Hugging Face `tokenizers` (Rust):
tokenizer/added_vocabulary.rs, normalizers/*, pre_tokenizers/{split,byte_level,
metaspace,digits,sequence}.rs, tokenizer/normalizer.rs (split behaviours),
models/bpe/{model,word}.rs, processors/{template,sequence}.rs. It shares no
code or data with loom. Run it with Debian's /usr/bin/python3 and its
python3-regex package (Python's `re` has no \\p{L}).

Pipeline, as tokenizers' Tokenizer::encode runs it:
  1. added tokens with "normalized": false are cut out of the raw text
     (leftmost-longest; single_word / lstrip / rstrip applied);
  2. every other piece is normalized on its own (so Prepend("▁") applies after
     each special token), then added tokens with "normalized": true are cut
     out of the normalized piece;
  3. the pre-tokenizer splits the remaining pieces (empty pieces dropped);
  4. BPE per pre-token: ignore_merges (a pre-token in the vocab is one id),
     characters to ids, byte_fallback <0xNN>, unk (fused when fuse_unk),
     a character with neither is dropped, then merges by rank, leftmost first;
  5. the post-processor (TemplateProcessing's single template) when
     add_special_tokens.

Usage:
  bpe_oracle.py [--no-special] [--tsv] tokenizer.json < corpus.txt
  bpe_oracle.py [--no-special] [--tsv] tokenizer.json -e TEXT [-e TEXT ...]
Output: one line per case. Default: the ids, space separated (add_special_tokens
true unless --no-special). --tsv: four tab-separated columns: the text as UTF-8
hex (so a caller need not parse the corpus escapes itself), the ids with
specials, the ids without, and Tokenizer::decode of the ids without (skip
special false; the file's decoder) as UTF-8 hex.

Corpus format (also used for -e TEXT): one case per line, UTF-8. Lines that
are blank or start with '#' are skipped. Escapes: \\n \\t \\r \\\\, \\s (a space,
to make leading or trailing spaces visible), \\# (a '#', for a case starting
with one), \\u{HEX} (any code point, e.g. a combining mark), \\z (nothing: a
line holding only \\z is the empty string). Any other backslash is an error.
Exit status 2 on a tokenizer.json component this oracle does not implement.
"""

import json
import sys
import unicodedata

try:
    import regex
except ImportError:  # the C test checks for this itself and skips
    sys.stderr.write("bpe_oracle: the python3 'regex' module is missing (apt-get install python3-regex)\n")
    sys.exit(3)


class Unsupported(Exception):
    pass


# ---------------------------------------------------------------- corpus ---

def unescape(line):
    out = []
    i = 0
    n = len(line)
    while i < n:
        c = line[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise ValueError("trailing backslash in %r" % line)
        e = line[i + 1]
        simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "s": " ", "#": "#", "z": ""}
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e == "u" and i + 2 < n and line[i + 2] == "{":
            j = line.index("}", i + 3)
            out.append(chr(int(line[i + 3:j], 16)))
            i = j + 1
        else:
            raise ValueError("unknown escape \\%s in %r" % (e, line))
    return "".join(out)


def read_corpus(stream):
    cases = []
    for raw in stream:
        line = raw[:-1] if raw.endswith("\n") else raw
        if line == "" or line.startswith("#"):
            continue
        cases.append(unescape(line))
    return cases


# ------------------------------------------------------------ byte level ---

def byte_to_char_table():
    """GPT-2's reversible byte -> printable character map (byte_level.rs)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_CHAR = byte_to_char_table()
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


# ----------------------------------------------------------- normalizers ---

def make_normalizer(spec):
    if spec is None:
        return None
    kind = spec["type"]
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        return lambda s: unicodedata.normalize(kind, s)
    if kind == "Lowercase":
        return lambda s: s.lower()
    if kind == "Prepend":
        p = spec["prepend"]
        return lambda s: (p + s) if s else s
    if kind == "Replace":
        pat = spec["pattern"]
        content = spec["content"]
        if "String" in pat:
            src = pat["String"]
            return lambda s: s.replace(src, content)
        rx = regex.compile(pat["Regex"])
        return lambda s: rx.sub(lambda m: content, s)
    if kind == "Strip":
        left, right = spec.get("strip_left", True), spec.get("strip_right", True)

        def strip(s):
            if left:
                s = s.lstrip()
            if right:
                s = s.rstrip()
            return s
        return strip
    if kind == "Sequence":
        parts = [make_normalizer(n) for n in spec["normalizers"]]

        def seq(s):
            for p in parts:
                if p is not None:
                    s = p(s)
            return s
        return seq
    raise Unsupported("normalizer %s" % kind)


# -------------------------------------------------------- pre-tokenizers ---
# A piece is (text, starts_at_origin); a pre-tokenizer maps a list of pieces
# to a list of pieces.

def find_matches(rx, s):
    """[(start, end, is_match)] covering s, as pattern.rs's find_matches."""
    if s == "":
        return [(0, 0, False)]
    out = []
    prev = 0
    for m in rx.finditer(s):
        if m.start() == m.end():
            continue
        if prev != m.start():
            out.append((prev, m.start(), False))
        out.append((m.start(), m.end(), True))
        prev = m.end()
    if prev != len(s):
        out.append((prev, len(s), False))
    return out


def split_by(s, matches, behavior):
    """normalizer.rs NormalizedString::split: behaviour -> kept substrings."""
    spans = []  # [start, end, remove]
    if behavior == "Isolated":
        spans = [[a, b, False] for a, b, _ in matches]
    elif behavior == "Removed":
        spans = [[a, b, m] for a, b, m in matches]
    elif behavior == "Contiguous":
        prev = False
        for a, b, m in matches:
            if m == prev and spans:
                spans[-1][1] = b
            else:
                spans.append([a, b, False])
            prev = m
    elif behavior == "MergedWithPrevious":
        prev = False
        for a, b, m in matches:
            if m and not prev and spans:
                spans[-1][1] = b
            else:
                spans.append([a, b, False])
            prev = m
    elif behavior == "MergedWithNext":
        prev = False
        for a, b, m in reversed(matches):
            if m and not prev and spans:
                spans[-1][0] = a
            else:
                spans.append([a, b, False])
            prev = m
        spans.reverse()
    else:
        raise Unsupported("split behavior %s" % behavior)
    return [s[a:b] for a, b, rm in spans if not rm]


def make_pretokenizer(spec):
    if spec is None:
        return lambda pieces: pieces
    kind = spec["type"]
    if kind == "Sequence":
        parts = [make_pretokenizer(p) for p in spec["pretokenizers"]]

        def seq(pieces):
            for p in parts:
                pieces = p(pieces)
            return pieces
        return seq
    if kind == "Split":
        pat = spec["pattern"]
        rx = regex.compile(regex.escape(pat["String"]) if "String" in pat else pat["Regex"])
        behavior = spec["behavior"]
        invert = spec.get("invert", False)

        def split(pieces):
            out = []
            for text, first in pieces:
                ms = find_matches(rx, text)
                if invert:
                    ms = [(a, b, not m) for a, b, m in ms]
                subs = split_by(text, ms, behavior)
                out.extend((t, first and k == 0) for k, t in enumerate(subs) if t)
            return out
        return split
    if kind == "ByteLevel":
        prefix = spec.get("add_prefix_space", True)
        use_regex = spec.get("use_regex", True)
        rx = regex.compile(GPT2_SPLIT)

        def bytelevel(pieces):
            out = []
            for text, first in pieces:
                if prefix and not text.startswith(" "):
                    text = " " + text
                subs = split_by(text, find_matches(rx, text), "Isolated") if use_regex else [text]
                for k, t in enumerate(subs):
                    if t:
                        out.append(("".join(BYTE_CHAR[b] for b in t.encode("utf-8")), first and k == 0))
            return out
        return bytelevel
    if kind == "Metaspace":
        rep = spec.get("replacement", "\u2581")
        scheme = spec.get("prepend_scheme", "always" if spec.get("add_prefix_space", True) else "never")
        do_split = spec.get("split", True)
        rx = regex.compile(regex.escape(rep))

        def metaspace(pieces):
            out = []
            for text, first in pieces:
                text = text.replace(" ", rep)
                if not text.startswith(rep) and (scheme == "always" or (scheme == "first" and first)):
                    text = rep + text
                subs = split_by(text, find_matches(rx, text), "MergedWithNext") if do_split else [text]
                out.extend((t, first and k == 0) for k, t in enumerate(subs) if t)
            return out
        return metaspace
    if kind == "Digits":
        rx = regex.compile(r"\p{N}")  # char::is_numeric: Nd, Nl, No
        behavior = "Isolated" if spec.get("individual_digits", False) else "Contiguous"

        def digits(pieces):
            out = []
            for text, first in pieces:
                subs = split_by(text, find_matches(rx, text), behavior)
                out.extend((t, first and k == 0) for k, t in enumerate(subs) if t)
            return out
        return digits
    raise Unsupported("pre_tokenizer %s" % kind)


# ------------------------------------------------------------------- BPE ---

class BPE:
    def __init__(self, spec):
        if spec.get("type", "BPE") != "BPE":
            raise Unsupported("model %s" % spec.get("type"))
        if spec.get("dropout") not in (None, 0, 0.0):
            raise Unsupported("BPE dropout")
        self.vocab = spec["vocab"]
        self.unk = spec.get("unk_token")
        self.fuse_unk = spec.get("fuse_unk", False)
        self.byte_fallback = spec.get("byte_fallback", False)
        self.ignore_merges = spec.get("ignore_merges", False)
        self.prefix = spec.get("continuing_subword_prefix") or ""
        self.suffix = spec.get("end_of_word_suffix") or ""
        self.merges = {}  # (left id, right id) -> (rank, merged id)
        for rank, m in enumerate(spec["merges"]):
            if isinstance(m, str):
                parts = m.split(" ")
                if len(parts) != 2:
                    raise Unsupported("merge %r is not two pieces" % m)
                a, b = parts
            else:
                a, b = m
            merged = a + b[len(self.prefix):]
            if a not in self.vocab or b not in self.vocab or merged not in self.vocab:
                raise Unsupported("merge %r names a piece not in the vocab" % (m,))
            # a later duplicate wins, as collecting into tokenizers' HashMap does
            self.merges[(self.vocab[a], self.vocab[b])] = (rank, self.vocab[merged])

    def tokenize(self, word):
        if word == "":
            return []
        if self.ignore_merges and word in self.vocab:
            return [self.vocab[word]]
        syms = []
        unk_run = False
        for k, ch in enumerate(word):
            s = ch
            if k > 0:
                s = self.prefix + s
            if k == len(word) - 1:
                s = s + self.suffix
            if s in self.vocab:
                syms.append(self.vocab[s])
                unk_run = False
                continue
            if self.byte_fallback:
                codes = ["<0x%02X>" % b for b in s.encode("utf-8")]
                if all(c in self.vocab for c in codes):
                    syms.extend(self.vocab[c] for c in codes)
                    unk_run = False
                    continue
            if self.unk is not None:
                if self.unk not in self.vocab:
                    raise Unsupported("unk_token %r not in the vocab" % self.unk)
                if not (unk_run and self.fuse_unk):
                    syms.append(self.vocab[self.unk])
                unk_run = True
            # no unk token: the character is dropped (model.rs merge_word)
        # word.rs merge_all: always the lowest rank, leftmost on ties
        while len(syms) > 1:
            best = None
            for i in range(len(syms) - 1):
                m = self.merges.get((syms[i], syms[i + 1]))
                if m is not None and (best is None or m[0] < best[0]):
                    best = (m[0], i, m[1])
            if best is None:
                break
            _, i, new = best
            syms[i:i + 2] = [new]
        return syms


# ----------------------------------------------------------- added tokens ---

def is_word_char(ch):
    # Rust regex \w: alphabetic, marks, decimal numbers, connector punctuation
    return bool(regex.match(r"[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]", ch))


def is_space(ch):
    # Rust regex \s: the White_Space property
    return bool(regex.match(r"\p{White_Space}", ch))


def split_added(s, tokens):
    """added_vocabulary.rs find_matches: [(text, id or None)], leftmost-longest."""
    if not tokens or s == "":
        return [(s, None)]
    out = []
    start_offset = 0
    pos = 0
    while pos < len(s):
        best = None
        for i in range(pos, len(s)):
            for t in tokens:
                c = t["match"]
                if s.startswith(c, i) and (best is None or len(c) > len(best[1]["match"])):
                    best = (i, t)
            if best is not None:
                break
        if best is None:
            break
        start, tok = best
        stop = start + len(tok["match"])
        pos = stop  # a non-overlapping match iterator resumes here, used or not
        if tok["single_word"]:
            start_space = start == 0 or not is_word_char(s[start - 1])
            stop_space = stop == len(s) or not is_word_char(s[stop])
            if not (start_space and stop_space):
                continue
        if tok["lstrip"]:
            j = start
            while j > 0 and is_space(s[j - 1]):
                j -= 1
            start = max(j, start_offset)
        if tok["rstrip"]:
            while stop < len(s) and is_space(s[stop]):
                stop += 1
        if start_offset < start:
            out.append((s[start_offset:start], None))
        out.append((s[start:stop], tok["id"]))
        start_offset = stop
    if start_offset != len(s):
        out.append((s[start_offset:], None))
    return out


# --------------------------------------------------------------- decoders ---
# A decoder maps the list of token strings to a list of strings (decode_chain);
# the text is their concatenation.

CHAR_BYTE = {c: b for b, c in BYTE_CHAR.items()}


def make_decoder(spec):
    if spec is None:
        return None
    kind = spec["type"]
    if kind == "ByteLevel":
        def bytelevel(tokens):
            out = bytearray()
            for t in tokens:
                if all(c in CHAR_BYTE for c in t):
                    out.extend(CHAR_BYTE[c] for c in t)
                else:
                    out.extend(t.encode("utf-8"))
            return [out.decode("utf-8", errors="replace")]
        return bytelevel
    if kind == "Replace":
        pat = spec["pattern"]
        if "String" not in pat:
            raise Unsupported("decoder Replace with a regex")
        src, content = pat["String"], spec["content"]
        return lambda tokens: [t.replace(src, content) for t in tokens]
    if kind == "ByteFallback":
        def byte_fallback(tokens):
            out, pending = [], bytearray()

            def flush():
                if pending:
                    try:
                        out.append(pending.decode("utf-8"))
                    except UnicodeDecodeError:
                        out.extend("\ufffd" for _ in pending)
                    pending.clear()
            for t in tokens:
                m = regex.fullmatch(r"<0x([0-9A-F]{2})>", t)
                if m:
                    pending.append(int(m.group(1), 16))
                else:
                    flush()
                    out.append(t)
            flush()
            return out
        return byte_fallback
    if kind == "Fuse":
        return lambda tokens: ["".join(tokens)]
    if kind == "Strip":
        content, start, stop = spec["content"], spec["start"], spec["stop"]

        def strip(tokens):
            out = []
            for t in tokens:
                a = 0
                while a < start and a < len(t) and t[a] == content:
                    a += 1
                b = len(t)
                while len(t) - b < stop and b > a and t[b - 1] == content:
                    b -= 1
                out.append(t[a:b])
            return out
        return strip
    if kind == "Metaspace":
        rep = spec.get("replacement", "\u2581")
        scheme = spec.get("prepend_scheme", "always" if spec.get("add_prefix_space", True) else "never")

        def metaspace(tokens):
            out = []
            for i, t in enumerate(tokens):
                t = t.replace(rep, " ")
                if i == 0 and scheme != "never" and t.startswith(" "):
                    t = t[1:]
                out.append(t)
            return out
        return metaspace
    if kind == "Sequence":
        parts = [make_decoder(d) for d in spec["decoders"]]

        def seq(tokens):
            for p in parts:
                tokens = p(tokens)
            return tokens
        return seq
    raise Unsupported("decoder %s" % kind)


# ---------------------------------------------------------- the pipeline ---

class Tokenizer:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        self.model = BPE(d["model"])
        self.normalize = make_normalizer(d.get("normalizer"))
        self.pretok = make_pretokenizer(d.get("pre_tokenizer"))
        self.raw_tokens = []
        self.norm_tokens = []
        for a in d.get("added_tokens") or []:
            if a["content"] == "":
                continue
            t = dict(a)
            t["match"] = a["content"]
            if a.get("normalized", not a.get("special", False)):
                if self.normalize is not None:
                    t["match"] = self.normalize(a["content"])
                self.norm_tokens.append(t)
            else:
                self.raw_tokens.append(t)
        self.id_to_piece = {i: p for p, i in self.model.vocab.items()}
        for a in d.get("added_tokens") or []:
            self.id_to_piece[a["id"]] = a["content"]
        self.decoder = make_decoder(d.get("decoder"))
        self.template = self.make_post(d.get("post_processor"))

    def make_post(self, spec):
        """Returns the single-sequence template: a list of ids and None (the text)."""
        if spec is None:
            return [None]
        kind = spec["type"]
        if kind == "ByteLevel":
            return [None]
        if kind == "TemplateProcessing":
            out = []
            for item in spec["single"]:
                if "Sequence" in item:
                    out.append(None)
                else:
                    out.extend(spec["special_tokens"][item["SpecialToken"]["id"]]["ids"])
            return out
        if kind == "Sequence":
            tpl = [None]
            for p in spec["processors"]:
                inner = self.make_post(p)
                tpl = [x for y in tpl for x in (inner if y is None else [y])]
            return tpl
        raise Unsupported("post_processor %s" % kind)

    def encode(self, text, add_special):
        pieces = []  # (text, id or None, starts at the origin)
        first = True
        for s, tid in split_added(text, self.raw_tokens):
            if tid is not None:
                pieces.append((s, tid, False))
                first = False
                continue
            start = first
            first = False
            if s == "":
                continue
            n = self.normalize(s) if self.normalize is not None else s
            for k, (s2, tid2) in enumerate(split_added(n, self.norm_tokens)):
                if tid2 is not None or s2:
                    pieces.append((s2, tid2, start and k == 0))
        ids = []
        for s, tid, at_origin in pieces:
            if tid is not None:
                ids.append(tid)
                continue
            for word, _ in self.pretok([(s, at_origin)]):
                ids.extend(self.model.tokenize(word))
        if not add_special:
            return ids
        return [x for y in self.template for x in (ids if y is None else [y])]


    def decode(self, ids):
        """Tokenizer::decode with skip_special_tokens false."""
        tokens = [self.id_to_piece[i] for i in ids]
        if self.decoder is None:
            return " ".join(tokens)
        return "".join(self.decoder(tokens))


def main(argv):
    args = argv[1:]
    special = True
    tsv = False
    texts = None
    path = None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--no-special":
            special = False
        elif a == "--tsv":
            tsv = True
        elif a == "-e" and i + 1 < len(args):
            texts = (texts or []) + [unescape(args[i + 1])]
            i += 1
        elif path is None and not a.startswith("-"):
            path = a
        else:
            sys.stderr.write(__doc__)
            return 1
        i += 1
    if path is None:
        sys.stderr.write(__doc__)
        return 1
    try:
        tok = Tokenizer(path)
    except Unsupported as e:
        sys.stderr.write("bpe_oracle: %s: unsupported %s\n" % (path, e))
        return 2
    if texts is None:
        texts = read_corpus(sys.stdin)
    out = sys.stdout
    for t in texts:
        if tsv:
            with_sp = " ".join(map(str, tok.encode(t, True)))
            ids = tok.encode(t, False)
            plain = " ".join(map(str, ids))
            back = tok.decode(ids).encode("utf-8").hex()
            out.write("%s\t%s\t%s\t%s\n" % (t.encode("utf-8").hex(), with_sp, plain, back))
        else:
            out.write(" ".join(map(str, tok.encode(t, special))) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.stdin.reconfigure(encoding="utf-8", newline="\n")
    sys.stdout.reconfigure(encoding="utf-8")
    sys.exit(main(sys.argv))
