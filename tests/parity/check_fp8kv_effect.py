#!/usr/bin/env python3
"""Shows that --kv-cache-dtype fp8 really changes what Iris computes and stores, on the
fixtures of make_fp8kv_checkpoints.py:
  1. the FP8 reference differs from the unquantized-cache reference by more than the parity
     tolerance in every case (so check_generate.py against the FP8 reference would fail if
     the cache were silently kept in fp32), and Iris with the default cache matches the
     unquantized reference instead;
  2. the same KV byte budget (--kv-cache-memory-bytes) holds 4x the blocks with fp8 on the
     CPU backend (fp32 compute dtype; on a bf16 GPU it is 2x), as `kv_blocks_total` in
     `iris generate --json` reports, with kv_cache_bytes / kv_cache_dtype to match.

usage: check_fp8kv_effect.py IRIS_BINARY FIXTURE_DIR [--tolerance 1e-3]
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import max_logprob_diff  # noqa: E402


def generate(iris, model, prompt, n, extra):
    cmd = [iris, "generate", "--model", model, "--prompt-ids", ",".join(map(str, prompt)),
           "--max-tokens", str(n), "--temperature", "0", "--ignore-eos", "--json",
           "--threads", "2", "--cpu-weight-dtype", "fp32"] + extra
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"FAIL {' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()}")
    return json.loads(r.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("iris")
    ap.add_argument("fixtures")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    a = ap.parse_args()
    with open(os.path.join(a.fixtures, "fixtures.json")) as f:
        fx = json.load(f)
    failed = 0
    smallest_gap = float("inf")
    for c in fx["cases"]:
        label = f'{c["model"]} prompt_len={len(c["prompt_ids"])}'
        gap = (float("inf") if c["output_ids"] != c["unquantized_output_ids"]
               else max_logprob_diff(c["logprobs"], c["unquantized_logprobs"]))
        smallest_gap = min(smallest_gap, gap)
        if not gap > a.tolerance:
            print(f"FAIL {label}: the FP8 reference is within {gap:.2e} of the unquantized one")
            failed += 1
        got = generate(a.iris, os.path.join(a.fixtures, c["model"]), c["prompt_ids"],
                       len(c["output_ids"]), ["--kv-cache-dtype", "auto"])
        diff = (max_logprob_diff(got["logprobs"], c["unquantized_logprobs"])
                if got["output_ids"] == c["unquantized_output_ids"] else float("inf"))
        if not diff <= a.tolerance or got["kv_cache_dtype"] != "F32":
            print(f"FAIL {label}: --kv-cache-dtype auto is {diff:.2e} from the unquantized "
                  f"reference (kv_cache_dtype {got['kv_cache_dtype']})")
            failed += 1
    print(f"smallest FP8 vs unquantized reference gap: {smallest_gap:.2e} (tolerance {a.tolerance})")

    # Block count for one KV budget: 6 fp32 blocks' worth (the context allows 33 blocks of 8
    # tokens, so the budget decides). kv_blocks_total leaves out the scheduler's reserved
    # null block, hence the + 1.
    c = fx["cases"][0]
    model = os.path.join(a.fixtures, c["model"])
    cfg = json.load(open(os.path.join(model, "config.json")))
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    block = 8
    per_block_f32 = 2 * cfg["num_hidden_layers"] * block * cfg["num_key_value_heads"] * hd * 4
    budget = ["--kv-cache-memory-bytes", str(6 * per_block_f32), "--max-model-len", "256",
              "--block-size", str(block)]
    auto = generate(a.iris, model, c["prompt_ids"], 4, budget + ["--kv-cache-dtype", "auto"])
    fp8 = generate(a.iris, model, c["prompt_ids"], 4, budget + ["--kv-cache-dtype", "fp8"])
    print(f"kv_blocks_total: auto {auto['kv_blocks_total']} ({auto['kv_cache_dtype']}, "
          f"{auto['kv_cache_bytes']} bytes), fp8 {fp8['kv_blocks_total']} ({fp8['kv_cache_dtype']}, "
          f"{fp8['kv_cache_bytes']} bytes)")
    if not (auto["kv_blocks_total"] + 1 == 6 and fp8["kv_blocks_total"] + 1 == 4 * 6
            and fp8["kv_cache_dtype"] == "F8_E4M3" and fp8["kv_cache_bytes"] == auto["kv_cache_bytes"]):
        print("FAIL: fp8 must hold 4x the fp32 blocks in the same bytes")
        failed += 1
    print("ok" if failed == 0 else f"{failed} failed")
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
