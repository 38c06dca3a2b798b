#!/usr/bin/env bash
# The GPU check, as one bounded run (default budget 450 s, under 8 minutes on an H100/H200)
# on a GPU host that has only the NVIDIA driver, the CUDA 13 runtime libraries and Python
# with numpy/torch/transformers. Runs the binaries of the GPU check bundle
# (deploy/make-gpu-check-bundle.sh; a build directory works too), never ctest (its files
# hold the build machine's paths), never a compiler. Stages, in this order:
#   env          host, driver, glibc, Python packages; which libcublasLt.so.13 (and NCCL)
#                the bundle uses; deploy/check-bundle.sh on this host
#   device       is there a usable GPU? "no device" (exit 77 of skip_without_gpu) is a
#                FAILURE here: this script only runs where a GPU is expected
#   ops          gpu_op_tests [ops] with CUDA_LAUNCH_BLOCKING=1 (a fault names its kernel)
#   attention    gpu_op_tests [attention] (incl. the FP8 KV cache: test_fp8_kv.cpp)
#   sampling     gpu_op_tests [sampling]
#   packed       gpu_op_tests [packed]: packed FP8 / 4-bit linear and cuBLASLt FP8 x FP8 against
#                the CPU backend (CudaBackend keeps quantized weights packed only once this passes)
#   model_cpu    gpu_op_tests [model]: whole-model greedy parity with the CPU backend, also on
#                the bf16 parity fixtures of tests/parity/make_checkpoints.py
#   model_hf     iris generate --device cuda (and --device cpu, the baseline) against
#                Hugging Face transformers' greedy output on the same bf16 checkpoints,
#                generated here by tools/parity/hf_fixtures.py
#   bench        bench_generate on a ~110M random Llama: decode ms/token and TTFT of a
#                2048-token prompt with their roofline fractions
#   bench_8b     the same on Llama-3-8B's shape (16 GB checkpoint): only with IRIS_CHECK_8B=1
# Every stage runs under its own `timeout`, within what is left of the budget. A failing test
# group is re-run one test case per process, so one sticky CUDA error does not hide the
# other cases. OUT/report.md and OUT/report.json are rewritten after every stage: a run cut
# short still says what passed, what failed (with the failing case's numbers) and what did
# not run. Raw logs go to OUT/raw. Exit code 0 only when every stage that ran passed and
# none was left out for want of time.
#
# usage: scripts/gpu-check.sh OUT_DIR [BUNDLE_ARCHIVE_OR_DIR_OR_BUILD_DIR]
#        (default: dist/iris-gpu-check.tar.xz, else dist/iris-gpu-check, else build). An
#        archive (.tar.xz / .tar.gz from make-gpu-check-bundle.sh) is unpacked under
#        IRIS_BENCH_DIR first.
# env:   IRIS_CHECK_BUDGET_S  total seconds (default 450; every timeout, the background
#                         fixture jobs' included, is cut to what is left of it)
#        IRIS_CHECK_8B=1      add the Llama-3-8B-shape benchmark (needs ~3 more minutes)
#        IRIS_BENCH_DIR       where checkpoints and fixtures go (default /tmp/iris-gpu-check)
#        IRIS_PYTHON          the Python with torch/transformers (default python3)
#        IRIS_REPORT_PYTHON   the Python that writes the report (default IRIS_PYTHON)
#        IRIS_CUDA_LIB_DIR    folder of libcublasLt.so.13 when the bundle's env.sh cannot find it
set -uo pipefail

if [ $# -lt 1 ]; then
  echo "usage: $0 OUT_DIR [BUNDLE_OR_BUILD_DIR]" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "$1" && cd "$1" && pwd)
work=${IRIS_BENCH_DIR:-/tmp/iris-gpu-check}
mkdir -p "$work"
raw="$out/raw"
rm -rf "$raw" "$out/report.json" "$out/report.md"
mkdir -p "$raw"
src=${2:-}
if [ -z "$src" ]; then
  for c in "$root/dist/iris-gpu-check.tar.xz" "$root/dist/iris-gpu-check" "$root/build"; do
    [ -e "$c" ] && { src=$c; break; }
  done
fi
if [ -f "$src" ]; then
  rm -rf "$work/bundle" && mkdir -p "$work/bundle"
  tar -C "$work/bundle" -xf "$src" || { echo "cannot unpack $src" >&2; exit 2; }
  dir=$(find "$work/bundle" -mindepth 2 -maxdepth 2 -name env.sh -printf '%h\n' | head -1)
  [ -n "$dir" ] || { echo "$src holds no bundle (no */env.sh)" >&2; exit 2; }
else
  dir=$(cd "${src:-.}" && pwd) || { echo "no directory $src" >&2; exit 2; }
fi
py=${IRIS_PYTHON:-python3}
report_py="$root/scripts/gpu_check_report.py"
budget=${IRIS_CHECK_BUDGET_S:-450}
t_start=$SECONDS
status=0

if [ -x "$dir/bin/gpu_op_tests" ]; then
  layout=bundle
  # shellcheck disable=SC1091
  . "$dir/env.sh"
  iris="$dir/bin/iris" tests="$dir/bin/gpu_op_tests" skip="$dir/bin/skip_without_gpu"
  bench="$dir/bin/bench_generate"
else
  layout=build
  iris="$dir/server/iris" tests="$dir/tests/gpu/gpu_op_tests" skip="$dir/tests/gpu/skip_without_gpu"
  bench="$dir/tools/bench/bench_generate"
fi

log() { echo "[gpu-check $((SECONDS - t_start))s] $*" | tee -a "$raw/progress.log"; }
report_python=${IRIS_REPORT_PYTHON:-$py}  # needs only the standard library
report() { "$report_python" "$report_py" "$out" "$@" || python3 "$report_py" "$out" "$@"; }
left() { echo $((budget - (SECONDS - t_start))); }
# The timeout for a stage: its own bound, or what is left of the budget when that is less.
# Never below 1: `timeout 0` would mean no timeout at all.
bound() { local l; l=$(left); [ "$l" -lt 1 ] && l=1; [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }
# Marks a stage as running, so that a report left by a run killed from outside says where.
stage_start() { report stage "$1" running 0 "started at $((SECONDS - t_start)) s; the run was cut short here if this is still the last word"; }
stage_done() {  # NAME STATUS T0 SUMMARY [LOG...]
  local name=$1 st=$2 t0=$3 summary=$4
  shift 4
  report stage "$name" "$st" "$((SECONDS - t0))" "$summary" "$@"
  log "$name: $st${summary:+ ($summary)}"
  [ "$st" = failed ] && status=1
  return 0
}

stages=(env device ops attention sampling packed model_cpu model_hf bench)
[ "${IRIS_CHECK_8B:-0}" = 1 ] && stages+=(bench_8b)
report init "${stages[@]}"
report fact binaries "$dir ($layout)"

# --- env -------------------------------------------------------------------------------------
t0=$SECONDS
{
  date -u
  uname -a
  echo "glibc: $(getconf GNU_LIBC_VERSION 2>&1)"
  cat /etc/os-release 2>/dev/null | grep PRETTY_NAME
  timeout 20 nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv 2>&1
  timeout 20 nvidia-smi 2>&1
  timeout 60 "$py" -c 'import sys, numpy, torch, transformers
print("python", sys.version.split()[0], "numpy", numpy.__version__, "torch", torch.__version__,
      "torch cuda", torch.version.cuda, "transformers", transformers.__version__)' 2>&1
  [ -f "$dir/MANIFEST.txt" ] && sed -n '1,/^files:/p' "$dir/MANIFEST.txt"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
} >"$raw/env.txt" 2>&1
gpu=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
report fact gpu "${gpu:-none found by nvidia-smi}"
report fact host "$(uname -srm); glibc $(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
report fact python "$(timeout 60 "$py" -c 'import sys, torch, transformers; print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__)' 2>&1 | tail -1)"
env_status=passed env_summary=""
if [ $layout = bundle ]; then
  report fact bundle "$(head -1 "$dir/MANIFEST.txt" 2>/dev/null)"
  report fact libcublasLt "${IRIS_CUBLASLT:-NOT FOUND}"
  report fact libnccl "${IRIS_NCCL_LIBRARY:-not found (needed only for tensor parallelism)}"
  report fact cxx_runtime "${IRIS_CXX_RUNTIME:-}"
  if [ "${IRIS_CHECK_SKIP_BUNDLE_CHECK:-0}" = 1 ]; then  # stand-in binaries (tests)
    env_summary="bundle check skipped (IRIS_CHECK_SKIP_BUNDLE_CHECK)"
  elif [ -n "${IRIS_BUNDLE_PROBLEM:-}" ]; then
    env_status=failed env_summary="bundle cannot run here: $IRIS_BUNDLE_PROBLEM"
  else
    host_libs=()
    [ -n "${IRIS_CUBLASLT:-}" ] && host_libs+=("$IRIS_CUBLASLT")
    if timeout -k 5 "$(bound 60)" "$root/deploy/check-bundle.sh" "$dir" "${host_libs[@]}" \
         >"$raw/check-bundle.log" 2>&1; then
      env_summary="bundle complete: every binary starts here; cuBLASLt from ${IRIS_CUBLASLT}"
    else
      env_status=failed env_summary="bundle check failed: $(grep PROBLEM "$raw/check-bundle.log" | head -3 | tr '\n' ' ')"
    fi
  fi
else
  report fact libcublasLt "$(ldd "$tests" 2>/dev/null | awk '/libcublasLt/ {print $3}')"
  missing=$(ldd "$tests" "$iris" "$bench" 2>/dev/null | grep "not found" | sort -u | tr '\n' ' ')
  [ -n "$missing" ] && env_status=failed env_summary="libraries missing: $missing"
fi
stage_done env "$env_status" "$t0" "$env_summary" "$raw/env.txt"

# --- device ----------------------------------------------------------------------------------
t0=$SECONDS
timeout -k 5 "$(bound 60)" "$skip" /bin/true >"$raw/device.log" 2>&1
rc=$?
case $rc in
  0) stage_done device passed "$t0" "a CUDA device is usable" "$raw/device.log" ;;
  77) stage_done device failed "$t0" "no device: $(head -1 "$raw/device.log") — this check needs a GPU" "$raw/device.log" ;;
  *) stage_done device failed "$t0" "exit $rc: $(tail -2 "$raw/device.log" | tr '\n' ' ')" "$raw/device.log" ;;
esac
if [ $rc -ne 0 ]; then
  report finish 1 "not run: no usable device"
  log "report: $out/report.md (no usable device: nothing else ran)"
  exit 1
fi

# --- checkpoints and fixtures, made on the CPU while the GPU tests run --------------------
# bf16 parity fixtures (both backends then see the same weights), the transformers
# reference on the same shapes, and the ~110M benchmark model.
(
  timeout -k 5 "$(bound 240)" "$py" "$root/tests/parity/make_checkpoints.py" "$work/parity" >"$raw/make_parity.log" 2>&1
  echo $? >"$raw/make_parity.rc"
) &
fixtures_pid=$!
(
  timeout -k 5 "$(bound 240)" "$py" "$root/tools/parity/hf_fixtures.py" "$work/hf" >"$raw/make_hf.log" 2>&1
  echo $? >"$raw/make_hf.rc"
) &
hf_pid=$!
(
  if [ -f "$work/llama-110m/config.json" ]; then echo 0; else
    timeout -k 5 "$(bound 240)" "$py" "$root/tools/bench/make_random_llama.py" "$work/llama-110m" >"$raw/make_small.log" 2>&1
    echo $?
  fi >"$raw/make_small.rc"
) &
small_pid=$!

# --- GPU test groups -------------------------------------------------------------------------
escape_name() { sed -e 's/\\/\\\\/g' -e 's/,/\\,/g' -e 's/\[/\\[/g' -e 's/\]/\\]/g' <<<"$1"; }

run_group() {  # STAGE TAG TIMEOUT [ENV...]
  local name=$1 tag=$2 limit=$3
  shift 3
  local t0=$SECONDS l
  l=$(bound "$limit")
  if [ "$l" -lt 10 ]; then
    stage_done "$name" "not run" "$t0" "budget spent"
    return
  fi
  log "$name: $tag (timeout ${l}s)"
  stage_start "$name"
  env "$@" timeout -k 5 "$l" "$tests" "$tag" --durations yes >"$raw/$name.log" 2>&1
  local rc=$?
  case $rc in
    0) stage_done "$name" passed "$t0" "" "$raw/$name.log"; return ;;
    124|137) stage_done "$name" failed "$t0" "timed out after ${l}s; cases re-run below" "$raw/$name.log" ;;
    *) stage_done "$name" failed "$t0" "exit $rc" "$raw/$name.log" ;;
  esac
  # One case per process: a sticky CUDA error (or a crash) in one case cannot hide the rest.
  local t1=$SECONDS case_name i=0 crc
  "$tests" "$tag" --list-test-names-only 2>/dev/null | sed -e 's/^ *//' -e '/^$/d' >"$raw/$name.cases"
  while IFS= read -r case_name; do
    i=$((i + 1))
    l=$(bound 90)
    # Re-runs get at most the group's own bound again, so later stages still run.
    if [ "$l" -lt 5 ] || [ $((SECONDS - t1)) -gt "$limit" ]; then
      report case "$name" "$case_name" "not run" 0
      continue
    fi
    local c0=$SECONDS
    env "$@" timeout -k 5 "$l" "$tests" "$(escape_name "$case_name")" >"$raw/$name.case$i.log" 2>&1
    crc=$?
    case $crc in
      0) report case "$name" "$case_name" passed "$((SECONDS - c0))" "$raw/$name.case$i.log" ;;
      124|137) report case "$name" "$case_name" "failed (timeout ${l}s)" "$((SECONDS - c0))" "$raw/$name.case$i.log" ;;
      *) report case "$name" "$case_name" "failed (exit $crc)" "$((SECONDS - c0))" "$raw/$name.case$i.log" ;;
    esac
  done <"$raw/$name.cases"
}

run_group ops "[ops]" 90 CUDA_LAUNCH_BLOCKING=1
run_group attention "[attention]" 150
run_group sampling "[sampling]" 60
run_group packed "[packed]" 60

wait "$fixtures_pid"
wait "$hf_pid"
if [ "$(cat "$raw/make_parity.rc" 2>/dev/null)" = 0 ]; then
  # Only the bf16 checkpoints: the GPU computes in bf16, so f32/f16 weights would differ
  # between the backends before any kernel runs. With them the checkpoints transformers
  # wrote (when hf_fixtures.py worked), so the CPU-backend comparison covers the very
  # checkpoints of the transformers stage.
  mkdir -p "$work/parity-bf16"
  rm -f "$work/parity-bf16"/*
  for d in "$work/parity"/*-bf16; do [ -d "$d" ] && ln -sfn "$d" "$work/parity-bf16/ref-$(basename "$d")"; done
  if [ "$(cat "$raw/make_hf.rc" 2>/dev/null)" = 0 ]; then
    for d in "$work/hf"/*-bf16; do [ -d "$d" ] && ln -sfn "$d" "$work/parity-bf16/hf-$(basename "$d")"; done
  fi
  report fact parity_checkpoints "$(cd "$work/parity-bf16" && ls | tr '\n' ' ')"
  run_group model_cpu "[model]" 120 IRIS_PARITY_DIR="$work/parity-bf16"
else
  report fact parity_fixtures "make_checkpoints.py failed (raw/make_parity.log); [model] ran without them"
  run_group model_cpu "[model]" 120
  status=1
fi

# --- whole-model parity against transformers ----------------------------------------------------
t0=$SECONDS
if [ "$(cat "$raw/make_hf.rc" 2>/dev/null)" != 0 ]; then
  stage_done model_hf failed "$t0" "tools/parity/hf_fixtures.py failed (exit $(cat "$raw/make_hf.rc" 2>/dev/null)): $(tail -1 "$raw/make_hf.log")" "$raw/make_hf.log"
elif [ "$(bound 150)" -lt 20 ]; then
  stage_done model_hf "not run" "$t0" "budget spent"
else
  stage_start model_hf
  # bf16 weights; the reference computes in fp32, the GPU in bf16: ids must match exactly,
  # log-probs within 0.1 (the CPU backend, fp32 on the same weights, within 1e-3).
  timeout -k 5 "$(bound 75)" "$py" "$root/tests/parity/check_generate.py" "$iris" "$work/hf" \
    --match bf16 --tolerance 0.1 --extra-args "--device cuda --gpu-memory-utilization 0.2" >"$raw/model_hf_cuda.log" 2>&1
  rc_cuda=$?
  timeout -k 5 "$(bound 75)" "$py" "$root/tests/parity/check_generate.py" "$iris" "$work/hf" \
    --match bf16 --tolerance 1e-3 >"$raw/model_hf_cpu.log" 2>&1
  rc_cpu=$?
  summary="cuda: $(tail -1 "$raw/model_hf_cuda.log"), $(grep -o 'worst logprob difference [^ ]*' "$raw/model_hf_cuda.log"); cpu: $(tail -1 "$raw/model_hf_cpu.log")"
  fails=$(grep -h '^FAIL' "$raw/model_hf_cuda.log" | head -5 | sed 's/^/cuda /')
  [ -n "$fails" ] && summary="$summary; $fails"
  if [ $rc_cuda -eq 0 ] && [ $rc_cpu -eq 0 ]; then st=passed; else st=failed; fi
  stage_done model_hf "$st" "$t0" "$summary" "$raw/model_hf_cuda.log" "$raw/model_hf_cpu.log"
fi

# --- benchmarks ---------------------------------------------------------------------------------
run_bench() {  # NAME MODEL PROMPT DECODE [ENV...] -> appends to bench_logs
  local name=$1 model=$2 prompt=$3 decode=$4 l
  shift 4
  l=$(bound 60)
  if [ "$l" -lt 10 ]; then echo "budget spent" >"$raw/bench_$name.log"; bench_ok=0; return; fi
  log "bench $name (timeout ${l}s)"
  if ! env "$@" timeout -k 5 "$l" "$bench" "$model" "$prompt" "$decode" 0 cuda >"$raw/bench_$name.log" 2>&1; then
    bench_ok=0
  fi
  sed -i "s/^RESULT {/RESULT {\"name\": \"$name\", /" "$raw/bench_$name.log"
  bench_logs+=("$raw/bench_$name.log")
}

t0=$SECONDS
wait "$small_pid"
bench_logs=() bench_ok=1
if [ "$(cat "$raw/make_small.rc" 2>/dev/null)" != 0 ]; then
  stage_done bench failed "$t0" "make_random_llama.py failed (raw/make_small.log)" "$raw/make_small.log"
else
  stage_start bench
  run_bench small_decode "$work/llama-110m" 128 256
  run_bench small_ttft_2048 "$work/llama-110m" 2048 8
  run_bench small_ttft_2048_rowwise "$work/llama-110m" 2048 8 IRIS_CUDA_ATTENTION=rowwise
  if [ $bench_ok = 1 ]; then st=passed; else st=failed; fi
  stage_done bench "$st" "$t0" "batch 1, bf16, random weights" "${bench_logs[@]}"
fi

if [ "${IRIS_CHECK_8B:-0}" = 1 ]; then
  t0=$SECONDS
  bench_logs=() bench_ok=1
  stage_start bench_8b
  big="$work/llama3-8b-shape"
  if [ ! -f "$big/config.json" ]; then
    log "writing a random Llama-3-8B-shape checkpoint (16 GB) to $big"
    timeout -k 5 "$(bound 240)" "$py" "$root/tools/bench/make_random_llama.py" "$big" --preset llama3-8b \
      >"$raw/make_8b.log" 2>&1 || bench_ok=0
  fi
  if [ $bench_ok = 1 ]; then
    run_bench llama3_8b_decode "$big" 128 128
    run_bench llama3_8b_ttft_2048 "$big" 2048 8
  fi
  if [ $bench_ok = 1 ]; then st=passed; else st=failed; fi
  stage_done bench_8b "$st" "$t0" "Llama-3-8B shape, batch 1" "${bench_logs[@]}"
fi

# Stages left out for want of time make the run incomplete, hence not a pass.
if grep -q '"status": "not run"' "$out/report.json"; then status=1; fi
report finish "$status"
log "report: $out/report.md"
exit $status
