#!/usr/bin/python3
"""tests/common/jinja_oracle.py — renders a chat template the way Hugging Face
transformers does (its _compile_jinja_template), as the reference for
common/jinja.c's output in tests/common/test_jinja.c.

Usage: /usr/bin/python3 jinja_oracle.py TEMPLATE CONTEXT.json OUT [CONTEXT.json OUT]...
   or: /usr/bin/python3 jinja_oracle.py TEMPLATE DIR   (every DIR/NAME.json -> DIR/NAME.out)
For each pair, writes the rendering (UTF-8, byte for byte) to OUT; when the
template raises (raise_exception, a type error, an undefined value used),
writes "TYPE: message" to OUT.err instead. Exits 0; 3 when the template does
not compile; 4 when jinja2 is missing (Debian's python3-jinja2 is needed).
"""
import json
import os
import sys
from datetime import datetime

try:
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError as e:  # the C test skips on this exit code
    sys.stderr.write(f"jinja_oracle: {e}\n")
    sys.exit(4)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # as transformers: no HTML escaping, non-ASCII kept, options exposed
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                      separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def main():
    tpl_path = sys.argv[1]
    pairs = sys.argv[2:]
    if len(pairs) == 1 and os.path.isdir(pairs[0]):
        d = pairs[0]
        pairs = []
        for name in sorted(os.listdir(d)):
            if name.endswith(".json"):
                pairs += [os.path.join(d, name), os.path.join(d, name[:-5] + ".out")]
    with open(tpl_path, encoding="utf-8", newline="") as f:
        source = f.read()
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        template = env.from_string(source)
    except Exception as e:
        sys.stderr.write(f"jinja_oracle: {type(e).__name__}: {e}\n")
        sys.exit(3)
    for ctx_path, out_path in zip(pairs[0::2], pairs[1::2]):
        with open(ctx_path, encoding="utf-8") as f:
            ctx = json.load(f)
        try:
            out, path = template.render(**ctx), out_path
        except Exception as e:  # any template error: the C side must fail too
            out, path = f"{type(e).__name__}: {e}", out_path + ".err"
        with open(path, "wb") as f:
            f.write(out.encode("utf-8", "surrogatepass"))
    sys.exit(0)


if __name__ == "__main__":
    main()
