#!/usr/bin/env bash
# Builds the GPU check bundle: everything scripts/gpu-check.sh needs on a GPU host that has
# only the NVIDIA driver, the CUDA 13 runtime libraries and Python (numpy, torch,
# transformers) — no compiler, no CMake, none of the Debian packages Iris builds against:
#   OUT/bin/      iris, the GPU test binaries (gpu_op_tests, skip_without_gpu) and the
#                 benchmark binaries, RUNPATH=$ORIGIN/../lib
#   OUT/lib/      every shared library they load except glibc's and the host's CUDA ones:
#                 OpenBLAS, libgfortran, libquadmath, gRPC, protobuf, abseil, ICU,
#                 ... (RUNPATH=$ORIGIN)
#   OUT/lib/cxx/  libstdc++ and libgcc_s of the build machine. They need glibc 2.36, so
#                 env.sh uses them only where the host's glibc is that new and otherwise
#                 uses the host's own (which must have the GLIBCXX version in the MANIFEST)
#   OUT/env.sh    sourced on the host: finds libcublasLt.so.13 (and libnccl.so.2, loaded
#                 only for tensor parallelism) and puts its folder on LD_LIBRARY_PATH
#   OUT/MANIFEST.txt   commit, the newest glibc symbol version needed, host libraries needed
#   OUT.tar.xz    the same, compressed (must stay under 60 MB); IRIS_BUNDLE_COMPRESS=fast
#                 writes OUT.tar.gz with gzip -1 instead (seconds instead of minutes, larger:
#                 the CI test checks that one against the limit, an upper bound)
# cuBLASLt (540 MB) and NCCL (220 MB) are far too big to carry; the binaries link the static
# CUDA runtime, so cuBLASLt is the only CUDA library a single-GPU run loads.
#
# usage: deploy/make-gpu-check-bundle.sh [BUILD_DIR=build] [OUT=dist/iris-gpu-check]
# Check it with deploy/check-bundle.sh OUT (run by ctest, label bundle).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${2:-dist/iris-gpu-check}
limit_mb=${IRIS_BUNDLE_LIMIT_MB:-60}
command -v patchelf >/dev/null || { echo "patchelf is needed (apt-get install patchelf)" >&2; exit 1; }

binaries=(server/iris tests/gpu/gpu_op_tests tests/gpu/skip_without_gpu
          tools/bench/bench_generate tools/bench/bench_vision tools/bench/bench_grammar)
for b in "${binaries[@]}"; do
  [ -x "$build/$b" ] || { echo "no $build/$b: build it first (with the CUDA backend)" >&2; exit 1; }
done

rm -rf "$out" "$out.tar.xz" "$out.tar.gz"
mkdir -p "$out/bin" "$out/lib/cxx" "$out/share/iris/models"
# Left to the host: glibc (and the vDSO), the driver's libcuda, the CUDA toolkit's libraries.
host_libs='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so|libutil\.so|libcuda\.so|libcudart|libcublas|libcublasLt|libnccl|libnvrtc|libnvJitLink)'
for b in "${binaries[@]}"; do
  cp "$build/$b" "$out/bin/"
  ldd "$build/$b" | awk '/=> \// {print $1, $3}' | while read -r name path; do
    if [[ "$name" =~ $host_libs ]] || [ -e "$out/lib/$name" ]; then continue; fi
    case $name in
      libstdc++.so.*|libgcc_s.so.*) [ -e "$out/lib/cxx/$name" ] || cp -L "$path" "$out/lib/cxx/$name" ;;
      *) cp -L "$path" "$out/lib/$name" ;;
    esac
  done
done
# dlopen()ed by `iris serve --enable-reflection`, so ldd does not list it; its own
# dependencies are iris's (gRPC, protobuf), already here.
# (awk reads all of ldconfig's output: an early exit would kill it with SIGPIPE, fatal
# under pipefail.)
refl=$(ldconfig -p | awk '/libgrpc\+\+_reflection\.so\.1\.51 / && !f {print $NF; f = 1}')
if [ -n "$refl" ]; then cp -L "$refl" "$out/lib/libgrpc++_reflection.so.1.51"; fi
chmod u+w "$out"/lib/*.so* "$out"/lib/cxx/*
for lib in "$out"/lib/*.so* "$out"/lib/cxx/*; do patchelf --set-rpath '$ORIGIN' "$lib"; done
for b in "$out"/bin/*; do patchelf --set-rpath '$ORIGIN/../lib' "$b"; done
cp -r models/iris-tiny "$out/share/iris/models/"
cp deploy/gpu-check-env.sh "$out/env.sh"

# The newest glibc symbol version the bundle needs (lib/cxx apart): the host's glibc must be
# at least that; and the newest libstdc++ symbol version (env.sh compares both).
newest() {  # PREFIX FILES... -> the newest PREFIX_x.y version the files' symbols need
  local prefix=$1
  shift
  for f in "$@"; do objdump -T "$f" 2>/dev/null; done | grep -o "${prefix}_[0-9][0-9.]*[0-9]" |
    sed "s/${prefix}_//" | sort -uV | tail -1
}
glibc_needed=$(newest GLIBC "$out"/bin/* "$out"/lib/*.so*)
glibc_cxx=$(newest GLIBC "$out"/lib/cxx/*)
glibcxx_needed=$(newest GLIBCXX "$out"/bin/* "$out"/lib/*.so*)
{
  echo "commit: $(git log -1 --format='%h %s' 2>/dev/null || echo unknown)"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
  echo "glibc_needed: $glibc_needed"
  echo "glibc_needed_by_lib_cxx: $glibc_cxx"
  echo "glibcxx_needed: $glibcxx_needed"
  echo "host_libraries: libcublasLt.so.13 (always), libnccl.so.2 (tensor parallelism only), libcuda.so.1 (driver)"
  echo "cuda_architectures: $(grep -o 'IRIS_CUDA_ARCHITECTURES=[^ ]*' "$build/build.ninja" | head -1 | cut -d= -f2 | tr -d '\\"')"
  echo "files:"
  (cd "$out" && find bin lib -type f | sort | xargs sha256sum)
} >"$out/MANIFEST.txt"

if [ "${IRIS_BUNDLE_COMPRESS:-}" = fast ]; then
  archive="$out.tar.gz"
  tar -C "$(dirname "$out")" -cf - "$(basename "$out")" | gzip -1 >"$archive"
else
  archive="$out.tar.xz"
  tar -C "$(dirname "$out")" -cf - "$(basename "$out")" | xz -T2 -6 >"$archive"
fi
size=$(stat -c %s "$archive")
echo "bundle: $out ($(du -sh "$out" | cut -f1)); archive: $archive ($((size / 1000000)) MB); glibc >= $glibc_needed, GLIBCXX >= $glibcxx_needed"
if [ "$size" -gt $((limit_mb * 1000000)) ]; then
  echo "the archive is over the $limit_mb MB limit" >&2
  exit 1
fi
