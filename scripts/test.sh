#!/usr/bin/env bash
# The test command: installs what the tests need, builds Iris, runs every test, then
# rebuilds under AddressSanitizer + UndefinedBehaviorSanitizer and runs the tests labelled
# `*sanitize` (the whole server among them), then runs the engine,
# tensor-parallel and metrics tests under ThreadSanitizer. GPU tests are skipped, visibly, on
# machines without a device.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh

# Hugging Face's own JavaScript tokenizers / Jinja engine, used as references.
for d in tests/tokenizer/reference tests/chat_template/reference tests/http/client tests/cluster; do
  if [ -f "$d/package-lock.json" ]; then
    npm ci --prefix "$d" --no-audit --no-fund --loglevel=error
  fi
done

jobs=$(nproc)
# Cache compilations by paths relative to the checkout, so any clone (CI's included) reuses
# what another one compiled; debug-info builds must not hash the directory either.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
ctest --test-dir build -j "$jobs" --output-on-failure

# AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer included) over everything
# labelled *sanitize: the loader, tokenizer, template, scheduler, engine, image, grammar,
# tool-call and metrics tests, and `iris serve` itself under the gRPC and HTTP integration
# tests (label server_sanitize: serve_integration, serve_api_integration, serve_claims,
# http_openai_api, http_openai_limits, http_structured, http_tools), each of which ends by
# draining the server and checking its exit status, so a leak or a sanitizer report fails it.
# IRIS_SANITIZE_SERVER=0 leaves the server out (a quicker local run).
asan_server=ON
[ "${IRIS_SANITIZE_SERVER:-1}" = 0 ] && asan_server=OFF
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIRIS_SANITIZE=ON \
  -DIRIS_ENABLE_CUDA=OFF -DIRIS_BUILD_SERVER=$asan_server
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan -L sanitize -j "$jobs" --output-on-failure

# ThreadSanitizer over the engine thread, the tensor-parallel rank workers, the metrics
# recorders and the structured-output mask thread (engine_unit_tests, moe_unit_tests,
# metrics_tests, metrics_engine_tests, grammar_engine_tests). Under TSan the CPU backend keeps
# OpenBLAS on the calling thread: OpenBLAS's own worker threads are not instrumented.
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIRIS_SANITIZE_THREAD=ON \
  -DIRIS_ENABLE_CUDA=OFF -DIRIS_BUILD_SERVER=OFF
cmake --build build-tsan -j "$jobs" --target engine_unit_tests moe_unit_tests metrics_tests \
  metrics_engine_tests grammar_engine_tests
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build-tsan -L "unit_sanitize|metrics_sanitize|thread_sanitize" -j "$jobs" \
  --output-on-failure
