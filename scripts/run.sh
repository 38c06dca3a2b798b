#!/usr/bin/env bash
# Builds Iris (installing its Debian packages if needed) and runs it on the embedded default
# model, models/iris-tiny. Extra arguments go to `iris generate`, e.g.
#   ./scripts/run.sh --prompt "Once upon a time" --max-tokens 80
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --no-test
if [ ! -x build/server/iris ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build build -j "$(nproc)" --target iris
if [ $# -eq 0 ]; then
  set -- --prompt "The old man looked at the sea and" --max-tokens 64 --temperature 0.7 --seed 1
fi
exec ./build/server/iris generate --model models/iris-tiny "$@"
