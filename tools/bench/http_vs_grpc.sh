#!/usr/bin/env bash
# HTTP (OpenAI API) versus gRPC on one `iris serve`, in the same run: alternates
# `iris bench serve --backend openai` and `iris bench serve` (gRPC) with the same prompts
# (random token ids below --vocab-size), ROUNDS times each, and prints both summaries.
# usage: tools/bench/http_vs_grpc.sh [IRIS] [MODEL_DIR] [CONCURRENCY] [NUM_PROMPTS] [OUTPUT_LEN] [ROUNDS]
set -euo pipefail
iris=${1:-./build/server/iris}
model=${2:-models/iris-tiny}
conc=${3:-64}
num=${4:-256}
out_len=${5:-64}
rounds=${6:-2}
log=$(mktemp)
"$iris" serve --model "$model" --host 127.0.0.1 --port 0 --http-port -1 --max-queue 100000 > "$log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 600); do grep -q "http listening" "$log" && grep -q "serving .* on" "$log" && break; sleep 0.1; done
http=$(sed -n 's/.*http listening on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -1)
grpc=$(sed -n 's/.*serving [^ ]* on [0-9.]*:\([0-9]*\).*/\1/p' "$log" | head -1)
common=(--num-prompts "$num" --input-len 32 --output-len "$out_len" --max-concurrency "$conc" --vocab-size 1000)
"$iris" bench serve --address "127.0.0.1:$grpc" "${common[@]}" > /dev/null  # warm-up
for r in $(seq 1 "$rounds"); do
  echo "### round $r: gRPC"
  "$iris" bench serve --address "127.0.0.1:$grpc" "${common[@]}" | grep -E "Output token throughput|TTFT|E2EL \(ms\)|Failed"
  echo "### round $r: HTTP (OpenAI API)"
  "$iris" bench serve --backend openai --base-url "http://127.0.0.1:$http" "${common[@]}" |
    grep -E "Output token throughput|TTFT|E2EL \(ms\)|Failed"
done
