#!/usr/bin/env python3
"""Runs `iris generate --json` on every fixture case and compares greedy ids (exactly) and
log-probabilities (within a tolerance) with the reference.

usage: check_generate.py IRIS_BINARY FIXTURE_DIR [--tolerance 1e-3] [--extra-args "..."]
                         [--match REGEX] [--skip REGEX]   (models whose name matches / not)
"""
import argparse
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import max_logprob_diff  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("iris")
    ap.add_argument("fixtures")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--extra-args", default="")
    ap.add_argument("--match", default="")
    ap.add_argument("--skip", default="")
    a = ap.parse_args()
    with open(os.path.join(a.fixtures, "fixtures.json")) as f:
        fx = json.load(f)
    passed = failed = 0
    worst = 0.0
    for c in fx["cases"]:
        if a.match and not re.search(a.match, c["model"]):
            continue
        if a.skip and re.search(a.skip, c["model"]):
            continue
        cmd = [a.iris, "generate", "--model", os.path.join(a.fixtures, c["model"]),
               "--prompt-ids", ",".join(map(str, c["prompt_ids"])),
               "--max-tokens", str(len(c["output_ids"])), "--temperature", "0",
               "--ignore-eos", "--json", "--threads", "2"] + a.extra_args.split()
        # The reference numerics: fp32 weight matrices (the CLI's default stores bf16),
        # unless --extra-args names another.
        if "--cpu-weight-dtype" not in a.extra_args:
            cmd += ["--cpu-weight-dtype", "fp32"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        label = f'{c["model"]} prompt_len={len(c["prompt_ids"])}'
        if r.returncode != 0:
            print(f"FAIL {label}: exit {r.returncode}: {r.stderr.strip()}")
            failed += 1
            continue
        got = json.loads(r.stdout)
        if got["output_ids"] != c["output_ids"]:
            print(f"FAIL {label}: ids {got['output_ids']} != reference {c['output_ids']}")
            failed += 1
            continue
        diff = max_logprob_diff(got["logprobs"], c["logprobs"])
        if diff <= a.tolerance:
            worst = max(worst, diff)
        if not diff <= a.tolerance or got["finish_reason"] != "length":
            print(f"FAIL {label}: logprob diff {diff:.2e} (tolerance {a.tolerance}) "
                  f"finish_reason {got['finish_reason']}")
            failed += 1
            continue
        passed += 1
    print(f"reference: {fx.get('reference')}; worst logprob difference {worst:.2e}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 and passed > 0 else 1)


if __name__ == "__main__":
    main()
