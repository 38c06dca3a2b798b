#!/usr/bin/env bash
# Configures and builds Iris into build/ (Release). CUDA is enabled when nvcc is found;
# pass -DIRIS_ENABLE_CUDA=OFF (or any other CMake option) as arguments to override.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j "$(nproc)"
