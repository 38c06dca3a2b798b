#!/bin/sh
# Decode ms/token and prefill tokens/s of a mixture-of-experts checkpoint against a dense
# one with the same active parameters (tools/bench/make_random_moe.py), in one run: the two
# alternate for ROUNDS rounds and the best figure of each is kept, so a busy machine
# penalises both alike. Prints figures only.
#
# usage: moe_vs_dense.sh BENCH_GENERATE DIR [rounds=3] [prompt=128] [decode=64] [threads=2]
set -eu
bench=$1 dir=$2 rounds=${3:-3} prompt=${4:-128} decode=${5:-64} threads=${6:-2}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
i=0
while [ "$i" -lt "$rounds" ]; do
  for m in dense moe; do
    "$bench" "$dir/$m" "$prompt" "$decode" "$threads" | sed -n "s/^RESULT /$m /p" >> "$out"
  done
  i=$((i + 1))
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
best = {}
for line in open(sys.argv[1]):
    name, js = line.split(" ", 1)
    r = json.loads(js)
    b = best.setdefault(name, {"decode": 1e30, "prefill": 0.0, "weights": r["weight_mb"], "n": 0})
    b["decode"] = min(b["decode"], r["decode_ms_per_token"])
    b["prefill"] = max(b["prefill"], r["prefill_tokens_per_s"])
    b["n"] += 1
for name, b in best.items():
    print(f"{name}: decode {b['decode']:.1f} ms/token, prefill {b['prefill']:.0f} tokens/s, "
          f"weights {b['weights']:.0f} MB (best of {b['n']})")
d, m = best["dense"], best["moe"]
print(f"moe / dense: decode {m['decode'] / d['decode']:.2f}x time, "
      f"prefill {d['prefill'] / m['prefill']:.2f}x time")
PY
