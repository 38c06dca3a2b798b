"""Second reference: renders the cases of render_reference.js's output with Python jinja2,
configured exactly as transformers' apply_chat_template does (ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, loopcontrols, the generation tag, raise_exception, strftime_now
and a tojson with ensure_ascii=False). Writes the same JSON layout with jinja2's outputs.

Usage: /usr/bin/python3 render_reference_jinja2.py NODE_OUT.json OUT.json
Needs Debian's python3-jinja2 (apt-get install python3-jinja2). Exits 77 when missing.
"""
import json
import sys
from datetime import datetime

try:
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    print("jinja2 is not installed for this interpreter (apt-get install python3-jinja2)")
    sys.exit(77)


class AssistantTracker(Extension):
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def special_tokens(cfg):
    out = {}
    for k, v in cfg.items():
        if k.endswith("_token") and len(k) > 6:
            if isinstance(v, str):
                out[k] = v
            elif isinstance(v, dict) and isinstance(v.get("content"), str):
                out[k] = v["content"]
        elif k == "additional_special_tokens" and isinstance(v, list):
            out[k] = [x if isinstance(x, str) else x["content"] for x in v]
    return out


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    data = json.load(open(sys.argv[1], encoding="utf-8"))
    for c in data["cases"]:
        cfg = data["templates"][c["template"]]
        c.pop("expected", None)
        c.pop("error", None)
        try:
            tmpl = env.from_string(cfg["chat_template"])
            ctx = {**special_tokens(cfg), "messages": c["messages"], "tools": None, "documents": None,
                   "add_generation_prompt": c["add_generation_prompt"], **c["extra_context"]}
            c["expected"] = tmpl.render(**ctx)
        except Exception as e:  # the renderer's error is the expected outcome
            c["error"] = "%s: %s" % (type(e).__name__, e)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
    print("chat_template jinja2 reference: %d cases (%d raise) -> %s"
          % (len(data["cases"]), sum("error" in c for c in data["cases"]), sys.argv[2]))


if __name__ == "__main__":
    main()
