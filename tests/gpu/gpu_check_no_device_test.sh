#!/usr/bin/env bash
# ctest (label bundle): scripts/gpu-check.sh run from the bundle on a machine without a GPU
# goes as far as the first device access and writes a report (report.md and report.json)
# that calls "no device" a failure, lists the stages that did not run, and exits non-zero.
# Skipped (77) on a machine that has a GPU, where the real check applies.
# usage: gpu_check_no_device_test.sh BUNDLE_DIR OUT_DIR
set -uo pipefail
# The report needs only the standard library: the quickest interpreter will do.
export IRIS_REPORT_PYTHON=python3
[ -x /usr/bin/python3 ] && IRIS_REPORT_PYTHON=/usr/bin/python3
src=$(cd "$(dirname "$0")/../.." && pwd)
bundle=$1 out=$2
if [ -e /dev/nvidia0 ] || [ -e /proc/driver/nvidia/version ]; then
  echo "SKIP: this machine has a GPU; run scripts/gpu-check.sh itself"
  exit 77
fi
rm -rf "$out"
mkdir -p "$out"
IRIS_PYTHON=python3 IRIS_BENCH_DIR="$out/work" "$src/scripts/gpu-check.sh" "$out" "$bundle.tar.gz"
rc=$?
fail() { echo "FAIL: $*"; echo "--- report.md"; cat "$out/report.md" 2>/dev/null; exit 1; }
[ $rc -eq 1 ] || fail "gpu-check.sh exited $rc without a device (expected 1)"
[ -f "$out/report.md" ] && [ -f "$out/report.json" ] || fail "no report written"
python3 - "$out/report.json" <<'PY' || fail "report.json does not say what it should"
import json, sys
rep = json.load(open(sys.argv[1]))
st = {s["name"]: s for s in rep["stages"]}
assert st["env"]["status"] == "passed", st["env"]
assert "bundle complete" in st["env"]["summary"], st["env"]
assert st["device"]["status"] == "failed", st["device"]
assert "no device" in st["device"]["summary"], st["device"]
for name in ("ops", "attention", "sampling", "model_cpu", "model_hf", "bench"):
    assert st[name]["status"] == "not run", st[name]
    assert "no usable device" in st[name]["summary"], st[name]
assert rep["result"].startswith("FAILED: device"), rep["result"]
assert rep["facts"]["libcublasLt"].endswith("libcublasLt.so.13"), rep["facts"]
print("report:", rep["result"])
PY
grep -q "Result: FAILED: device" "$out/report.md" || fail "report.md does not say FAILED"
grep -q "| device | FAILED | .*no device" "$out/report.md" || fail "report.md does not say no device"
echo "gpu-check.sh without a device: report says 'no device' as a failure, exit 1"
