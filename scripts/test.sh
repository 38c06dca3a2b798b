#!/usr/bin/env bash
# The test command: installs what the tests need, builds Iris, runs every test, then
# rebuilds the loader/tokenizer/template/scheduler tests under AddressSanitizer +
# UndefinedBehaviorSanitizer and runs those (label `sanitize`). GPU tests are skipped,
# visibly, on machines without a device.
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

# AddressSanitizer + UndefinedBehaviorSanitizer over everything labelled *sanitize: the
# loader, tokenizer, template, scheduler, engine and metrics tests. (The server under ASan —
# tests labelled server_sanitize — and a ThreadSanitizer pass, IRIS_SANITIZE_THREAD, are
# ready in CMake but not yet part of this script; see docs/status.md.)
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIRIS_SANITIZE=ON \
  -DIRIS_ENABLE_CUDA=OFF -DIRIS_BUILD_SERVER=OFF
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan -L sanitize -j "$jobs" --output-on-failure
