#!/bin/sh
# Iris and llama.cpp side by side on the same random ~125M-parameter Llama, on this machine:
# Iris's bench_generate with fp32, bf16 and f16 weight matrices, and llama.cpp (the prebuilt
# CPU library of the node-llama-cpp npm package) on the same weights written as F32 and F16
# GGUF. Runs alternate, REPS rounds; prints each run and the medians (with the load average
# seen before each run: the figures are only comparable within one invocation).
#
# usage: tools/bench/llama_cpp_side_by_side.sh BENCH_GENERATE [REPS=5] [THREADS=2] [PROMPT=128] [DECODE=64]
#   BENCH_GENERATE: build/tools/bench/bench_generate
#   BENCH_DIR (env, default /tmp/llama-bench): where node-llama-cpp is installed with npm, and
#   the checkpoint and GGUF files are written — outside the repository.
set -eu
BIN=$1
REPS=${2:-5}
THREADS=${3:-2}
PROMPT=${4:-128}
DECODE=${5:-64}
DIR=${BENCH_DIR:-/tmp/llama-bench}
PY=${PYTHON:-/usr/bin/python3}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

mkdir -p "$DIR"
if [ ! -d "$DIR/node_modules/node-llama-cpp" ]; then
  (cd "$DIR" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install node-llama-cpp)
fi
[ -f "$DIR/ckpt/model.safetensors" ] || "$PY" "$HERE/make_random_llama.py" "$DIR/ckpt"
for t in f32 f16; do
  [ -f "$DIR/llama-$t.gguf" ] || "$PY" "$HERE/safetensors_to_gguf.py" "$DIR/ckpt" "$DIR/llama-$t.gguf" --type $t
done
cp "$HERE/llama_cpp_bench.mjs" "$DIR/"

OUT="$DIR/side_by_side.tsv"
: > "$OUT"
load() { cut -d' ' -f1 /proc/loadavg; }
for r in $(seq 1 "$REPS"); do
  for w in fp32 bf16 f16; do
    l=$(load)
    res=$("$BIN" "$DIR/ckpt" "$PROMPT" "$DECODE" "$THREADS" cpu $w | sed -n 's/^RESULT //p')
    printf 'iris %s\t%s\t%s\n' "$w" "$l" "$res" | tee -a "$OUT"
  done
  for g in f32 f16; do
    l=$(load)
    res=$(cd "$DIR" && node llama_cpp_bench.mjs "$DIR/llama-$g.gguf" "$PROMPT" "$DECODE" "$THREADS" | sed -n 's/^RESULT //p')
    printf 'llama.cpp %s\t%s\t%s\n' "$(echo $g | tr a-z A-Z)" "$l" "$res" | tee -a "$OUT"
  done
done

"$PY" - "$OUT" "$THREADS" "$PROMPT" <<'PYEOF'
import json, statistics, sys
rows = {}
loads = []
for line in open(sys.argv[1]):
    name, load, res = line.rstrip("\n").split("\t")
    if not res:
        sys.exit(f"a run of {name} printed no RESULT line")
    r = json.loads(res)
    rows.setdefault(name, []).append((r["decode_ms_per_token"], r["prefill_tokens_per_s"]))
    loads.append(float(load))
print(f"\nmedians over {len(next(iter(rows.values())))} runs each, {sys.argv[2]} threads, "
      f"prefill of {sys.argv[3]} tokens; load average before the runs {min(loads):.1f}-{max(loads):.1f} "
      f"(median {statistics.median(loads):.1f})")
print("| engine, weights | decode ms/token (median) | prefill tokens/s (median) | decode runs | prefill runs |")
print("|---|---|---|---|---|")
for name, v in rows.items():
    d = [x[0] for x in v]
    p = [x[1] for x in v]
    print(f"| {name} | {statistics.median(d):.2f} | {statistics.median(p):.0f} | "
          f"{', '.join(f'{x:.1f}' for x in d)} | {', '.join(f'{x:.0f}' for x in p)} |")
PYEOF
