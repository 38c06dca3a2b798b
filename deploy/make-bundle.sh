#!/usr/bin/env bash
# Builds a self-contained release bundle of `iris` for hosts that have the NVIDIA driver and
# the CUDA libraries but none of the Debian development packages (gRPC, protobuf, spdlog,
# OpenBLAS, ICU...):
#   OUT/bin/iris                 the binary, RUNPATH=$ORIGIN/../lib
#   OUT/lib/*.so*                every shared library it needs except glibc's and the CUDA
#                                toolkit's (cuBLAS, cuBLASLt, NCCL, cudart come from the host)
#   OUT/lib/libiris_video.so     the video decoder module and FFmpeg, when built (optional)
#   OUT/share/iris/models/iris-tiny   the embedded default model
# usage: deploy/make-bundle.sh [BUILD_DIR=build] [OUT=dist/iris]
# On the target: LD_LIBRARY_PATH must reach the CUDA libraries if they are not in the
# loader's default path (e.g. export LD_LIBRARY_PATH=/usr/local/cuda/lib64).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-dist/iris}
bin="$build/server/iris"
[ -x "$bin" ] || { echo "no $bin: build first (./scripts/build.sh)" >&2; exit 1; }
command -v patchelf >/dev/null || { echo "patchelf is needed (apt-get install patchelf)" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/share/iris/models"
cp "$bin" "$out/bin/iris"
# glibc and the kernel's vDSO stay with the host; so do the CUDA toolkit's libraries.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so|libcuda\.so|libcudart|libcublas|libcublasLt|libnccl|libnvrtc|libnvJitLink)'
ldd "$bin" | awk '/=> \// {print $1, $3}' | while read -r name path; do
  if [[ "$name" =~ $skip ]]; then continue; fi
  cp -L "$path" "$out/lib/$name"
done
# Loaded at run time by `iris serve --enable-reflection` (dlopen), so ldd does not list it.
refl=$(ldconfig -p | awk '/libgrpc\+\+_reflection\.so\.1\.51 / && !f {print $NF; f = 1}')  # no early exit: SIGPIPE
if [ -n "$refl" ]; then cp -L "$refl" "$out/lib/libgrpc++_reflection.so.1.51"; fi
# The video decoder module (FFmpeg; loaded by iris on the first video file from ../lib) and
# the libraries it needs, when this build has it. IRIS_BUNDLE_VIDEO=0 leaves it out (about
# 150 MB less; video files are then refused, frames still work).
if [ -f "$build/lib/libiris_video.so" ] && [ "${IRIS_BUNDLE_VIDEO:-1}" != 0 ]; then
  cp -L "$build/lib/libiris_video.so" "$out/lib/"
  ldd "$build/lib/libiris_video.so" | awk '/=> \// {print $1, $3}' | while read -r name path; do
    if [[ "$name" =~ $skip ]] || [ -e "$out/lib/$name" ]; then continue; fi
    cp -L "$path" "$out/lib/$name"
  done
fi
for lib in "$out"/lib/*.so*; do patchelf --set-rpath '$ORIGIN' "$lib"; done
patchelf --set-rpath '$ORIGIN/../lib' "$out/bin/iris"
cp -r models/iris-tiny "$out/share/iris/models/"
echo "bundle: $out ($(du -sh "$out" | cut -f1))"
tar -C "$(dirname "$out")" -cJf "$out.tar.xz" "$(basename "$out")"
echo "archive: $out.tar.xz ($(du -h "$out.tar.xz" | cut -f1))"
