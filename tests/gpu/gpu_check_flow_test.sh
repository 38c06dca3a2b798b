#!/usr/bin/env bash
# ctest (label bundle): scripts/gpu-check.sh past the device stage, on a bundle of stand-in
# binaries (shell scripts that answer like the real ones: Catch2 console output, RESULT lines),
# so the stages, the one-case-per-process re-run of a failing group, the report (failing
# case's numbers, benchmark rows) and the exit code are exercised on a machine without a GPU.
# usage: gpu_check_flow_test.sh OUT_DIR
set -uo pipefail
# The report needs only the standard library: the quickest interpreter will do.
export IRIS_REPORT_PYTHON=python3
[ -x /usr/bin/python3 ] && IRIS_REPORT_PYTHON=/usr/bin/python3
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$1
rm -rf "$out" && mkdir -p "$out"
b="$out/bundle"
mkdir -p "$b/bin" "$b/lib" "$out/work/llama-110m"
cp "$src/deploy/gpu-check-env.sh" "$b/env.sh"
echo "commit: stand-in bundle" >"$b/MANIFEST.txt"
echo '{}' >"$out/work/llama-110m/config.json"
cat >"$b/bin/skip_without_gpu" <<'SH'
#!/bin/bash
exec "$@"
SH
cat >"$b/bin/iris" <<'SH'
#!/bin/bash
# generate on the bf16 checkpoint: the reference's ids, log-probs 0.05 off on cuda.
[ "$1" = generate ] || exit 1
case "$*" in *qwen2-bf16*) ;; *) echo "stand-in iris: only qwen2-bf16 expected: $*" >&2; exit 1 ;; esac
case "$*" in
  *"--device cuda --gpu-memory-utilization 0.2"*) echo '{"output_ids": [7, 8], "logprobs": [-0.45, -0.25], "finish_reason": "length"}' ;;
  *--device*) echo "unexpected device arguments: $*" >&2; exit 1 ;;
  *) echo '{"output_ids": [7, 8], "logprobs": [-0.5, -0.2501], "finish_reason": "length"}' ;;
esac
SH
cat >"$b/bin/bench_generate" <<'SH'
#!/bin/bash
[ "$5" = cuda ] || exit 2
echo '{"event": "loaded"}'
echo "RESULT {\"prompt_tokens\": $2, \"ttft_ms\": 12.5, \"prefill_tokens_per_s\": 16000, \"prefill_tflops\": 3.5, \"decode_ms_per_token\": 0.9, \"weight_mb\": 220, \"kv_mb_per_step\": 1.5, \"copy_bandwidth_gbs\": 3900, \"roofline_ms\": 0.057, \"roofline_fraction\": 0.063}"
SH
cat >"$b/bin/gpu_op_tests" <<'SH'
#!/bin/bash
# [attention] fails and then dies as a sticky CUDA error would; alone, case A fails and
# case B (whose name has a comma, escaped by the caller) passes.
fail_block() {
  printf '%s\n' "-------------------------------------------------------------------------------" \
    "paged attention A" "  decode batch" \
    "-------------------------------------------------------------------------------" \
    "tests/gpu/test_attention.cpp:88" \
    "..............................................................................." "" \
    "tests/gpu/test_attention.cpp:99: FAILED:" "  CHECK( e.over == 0 )" "with expansion:" "  3 == 0" \
    "with messages:" "  D=128 Hq=8 Hkv=2 block=16 window=0 seqs: (1/4100)" \
    "  tiled attention: 512 rows of 128, 3 over 0.03 (0 non-finite); worst row 7 [token 0 head 7: seq 0 (1/4100) position 4099]: rel 0.5 of norm 3.2" ""
}
case "$1" in
  "[ops]") [ "${CUDA_LAUNCH_BLOCKING:-}" = 1 ] || { echo "CUDA_LAUNCH_BLOCKING not set"; exit 3; }
           echo "==============================================================================="
           echo "All tests passed (120 assertions in 7 test cases)"; exit 0 ;;
  "[attention]")
    [ -n "${IRIS_FLOW_HANG:-}" ] && exec sleep "$IRIS_FLOW_HANG"
    if [ "${2:-}" = --list-test-names-only ]; then printf 'paged attention A\npaged attention B, with comma\n'; exit 0; fi
    fail_block; echo "terminate called after an illegal memory access"; exit 134 ;;
  "paged attention A") fail_block
    echo "==============================================================================="
    echo "test cases: 1 | 1 failed"; exit 1 ;;
  'paged attention B\, with comma')
    echo "==============================================================================="
    echo "All tests passed (4 assertions in 1 test case)"; exit 0 ;;
  "[model]")
    # bf16 checkpoints of both fixture sets, nothing else
    got=$(ls "${IRIS_PARITY_DIR:-/nonexistent}" 2>/dev/null | tr '\n' ' ')
    [ "$got" = "hf-qwen2-bf16 ref-llama-bf16 " ] || { echo "IRIS_PARITY_DIR holds: $got"; exit 5; }
    [ -f "$IRIS_PARITY_DIR/ref-llama-bf16/config.json" ] || { echo "links broken"; exit 6; }
    echo "==============================================================================="
    echo "All tests passed (9 assertions in 3 test cases)"; exit 0 ;;
  "[sampling]")
    echo "==============================================================================="
    echo "All tests passed (9 assertions in 3 test cases)"; exit 0 ;;
  "[packed]")
    echo "==============================================================================="
    echo "All tests passed (6 assertions in 2 test cases)"; exit 0 ;;
esac
echo "unexpected arguments: $*"; exit 4
SH
# A stand-in Python for the fixture scripts (the reference checkpoints need torch and
# transformers); check_generate.py itself runs for real, against the stand-in iris.
cat >"$b/python" <<'SH'
#!/bin/bash
case $(basename "${1:-}") in
  make_checkpoints.py)
    for v in bf16 f32; do mkdir -p "$2/llama-$v"; echo "{\"torch_dtype\": \"$( [ $v = bf16 ] && echo bfloat16 || echo float32)\"}" >"$2/llama-$v/config.json"; done ;;
  hf_fixtures.py)
    for v in bf16 f32; do mkdir -p "$2/qwen2-$v"; echo "{\"dtype\": \"x\"}" >"$2/qwen2-$v/config.json"; done
    echo '{"reference": "stand-in", "max_tokens": 2, "cases": [{"model": "qwen2-bf16", "prompt_ids": [5, 6], "output_ids": [7, 8], "logprobs": [-0.5, -0.25]}, {"model": "qwen2-f32", "prompt_ids": [5], "output_ids": [1, 1], "logprobs": [0, 0]}]}' >"$2/fixtures.json" ;;
  *) exec python3 "$@" ;;
esac
SH
chmod +x "$b"/bin/* "$b/python"
IRIS_PYTHON="$b/python" IRIS_BENCH_DIR="$out/work" IRIS_CHECK_SKIP_BUNDLE_CHECK=1 IRIS_CUDA_LIB_DIR=/nonexistent \
  "$src/scripts/gpu-check.sh" "$out/report" "$b" >"$out/run.log" 2>&1
rc=$?
fail() { echo "FAIL: $*"; cat "$out/run.log"; cat "$out/report/report.md"; exit 1; }
[ $rc -eq 1 ] || fail "gpu-check.sh exited $rc (expected 1: attention fails)"
python3 - "$out/report/report.json" <<'PY' || fail "report.json is not what it should be"
import json, sys
rep = json.load(open(sys.argv[1]))
st = {s["name"]: s for s in rep["stages"]}
def status(name): return st[name]["status"]
assert status("device") == "passed", st["device"]
assert status("ops") == "passed", st["ops"]
a = st["attention"]
assert a["status"] == "failed", a
assert a["failures"][0]["case"].startswith("paged attention A"), a["failures"]
assert "rel 0.5 of norm 3.2" in a["failures"][0]["detail"], a["failures"]
cases = {c["name"]: c for c in a["cases"]}
assert cases["paged attention A"]["status"] == "failed (exit 1)", cases
assert "position 4099" in cases["paged attention A"]["detail"], cases
assert cases["paged attention B, with comma"]["status"] == "passed", cases
assert status("sampling") == "passed" and status("model_cpu") == "passed", st
assert status("packed") == "passed", st
h = st["model_hf"]
assert h["status"] == "passed", h
assert "cuda: 1 passed, 0 failed" in h["summary"] and "worst logprob difference 5.00e-02" in h["summary"], h
assert "cpu: 1 passed, 0 failed" in h["summary"], h
assert "ref-llama-bf16" in rep["facts"]["parity_checkpoints"], rep["facts"]
b = st["bench"]
assert b["status"] == "passed", b
assert [r["name"] for r in b["bench"]] == ["small_decode", "small_ttft_2048", "small_ttft_2048_rowwise"], b
assert abs(b["bench"][0]["roofline_fraction"] - 0.063) < 1e-9, b
assert rep["result"] == "FAILED: attention", rep["result"]
PY
grep -q "| small_decode | 128 | 12.5 |.*| 6% |" "$out/report/report.md" || fail "report.md lacks the benchmark row"
grep -q "FAILED: paged attention A" "$out/report/report.md" || fail "report.md lacks the failing case"

# Out of time: every stage still to come says so, and the run is not a pass.
IRIS_CHECK_BUDGET_S=1 IRIS_PYTHON="$b/python" IRIS_BENCH_DIR="$out/work" IRIS_CHECK_SKIP_BUNDLE_CHECK=1 \
  "$src/scripts/gpu-check.sh" "$out/report-short" "$b" >"$out/run-short.log" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "gpu-check.sh with a 1 s budget exited $rc (expected 1)"
python3 - "$out/report-short/report.json" <<'PY' || fail "report-short/report.json is not what it should be"
import json, sys
rep = json.load(open(sys.argv[1]))
st = {s["name"]: s for s in rep["stages"]}
for name in ("ops", "attention", "sampling", "packed", "model_cpu"):
    assert st[name]["status"] == "not run" and st[name]["summary"] == "budget spent", st[name]
assert st["bench"]["status"] == "failed", st["bench"]
assert rep["result"].startswith("FAILED") and "not run: ops" in rep["result"], rep["result"]
PY

# Killed from outside in the middle of a stage: the report says where it stopped.
IRIS_FLOW_HANG=60 IRIS_PYTHON="$b/python" IRIS_BENCH_DIR="$out/work" IRIS_CHECK_SKIP_BUNDLE_CHECK=1 \
  timeout 45 "$src/scripts/gpu-check.sh" "$out/report-killed" "$b" >"$out/run-killed.log" 2>&1
python3 - "$out/report-killed/report.json" <<'PY' || fail "report-killed/report.json is not what it should be"
import json, sys
rep = json.load(open(sys.argv[1]))
st = {s["name"]: s for s in rep["stages"]}
assert st["ops"]["status"] == "passed", st["ops"]
assert st["attention"]["status"] == "running", st["attention"]
assert "cut short" in st["attention"]["summary"], st["attention"]
assert st["sampling"]["status"] == "not run", st["sampling"]
assert rep["result"].startswith("incomplete"), rep["result"]
PY
echo "gpu-check.sh flow: stages, per-case re-run, budget, a run cut short and report as expected"
