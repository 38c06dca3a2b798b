#!/usr/bin/env python3
"""Checks `iris render-chat` end to end against the @huggingface/jinja reference renders
(reference_expected.json from reference/render_reference.js): for every case without extra
context, the printed prompt must equal the reference byte for byte, and a case the
reference rejects must make iris exit non-zero.

usage: check_cli.py IRIS REFERENCE_EXPECTED_JSON WORK_DIR
"""
import json
import os
import subprocess
import sys


def main():
    iris, ref_path, work = sys.argv[1:4]
    ref = json.load(open(ref_path, encoding="utf-8"))
    os.makedirs(work, exist_ok=True)
    for name, cfg in ref["templates"].items():
        d = os.path.join(work, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False)
    passed = failed = skipped = 0
    for i, c in enumerate(ref["cases"]):
        if c.get("extra_context"):
            skipped += 1
            continue
        msgs = os.path.join(work, f"messages_{i}.json")
        with open(msgs, "w", encoding="utf-8") as f:
            json.dump(c["messages"], f, ensure_ascii=False)
        cmd = [iris, "render-chat", "--model", os.path.join(work, c["template"]), "--messages", msgs]
        if c["add_generation_prompt"]:
            cmd.append("--add-generation-prompt")
        r = subprocess.run(cmd, capture_output=True)
        label = f'{c["template"]}/{c["conversation"]} gen={c["add_generation_prompt"]}'
        if "expected" not in c:  # the reference raised
            if r.returncode != 0:
                passed += 1
            else:
                failed += 1
                print(f"FAIL {label}: reference raised, iris printed {r.stdout[:80]!r}")
            continue
        if r.returncode == 0 and r.stdout.decode("utf-8") == c["expected"]:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {label}: exit {r.returncode} {r.stderr.decode()[:200]} "
                  f"got {r.stdout.decode('utf-8', 'replace')[:120]!r} want {c['expected'][:120]!r}")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(0 if failed == 0 and passed > 0 else 1)


if __name__ == "__main__":
    main()
