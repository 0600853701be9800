#!/usr/bin/python3
"""tests/common/jinja_oracle.py — renders a chat template the way Hugging Face
transformers does (its _compile_jinja_template), as the reference for
common/jinja.c's output in tests/common/test_jinja.c.

Usage: /usr/bin/python3 jinja_oracle.py TEMPLATE CONTEXT.json OUT
Writes the rendering (UTF-8, byte for byte) to OUT and exits 0; when the
template raises (raise_exception, a type error, an undefined value used),
writes "TYPE: message" to OUT and exits 3. Needs Debian's python3-jinja2.
"""
import json
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
    tpl_path, ctx_path, out_path = sys.argv[1:4]
    with open(tpl_path, encoding="utf-8", newline="") as f:
        source = f.read()
    with open(ctx_path, encoding="utf-8") as f:
        ctx = json.load(f)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        out = env.from_string(source).render(**ctx)
        code = 0
    except Exception as e:  # any template error: the C side must fail too
        out = f"{type(e).__name__}: {e}"
        code = 3
    with open(out_path, "wb") as f:
        f.write(out.encode("utf-8", "surrogatepass"))
    sys.exit(code)


if __name__ == "__main__":
    main()
