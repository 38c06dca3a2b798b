#!/usr/bin/env bash
# Proves a GPU check bundle (make-gpu-check-bundle.sh) complete: every binary in it starts in
# a clean environment (env -i, library path from the bundle's env.sh only) and loads every
# shared library from the bundle, the host libraries named on the command line, or glibc.
#   1. closure: every DT_NEEDED of every file in bin/ and lib/ is in lib/ (or lib/cxx/),
#      is glibc's, or is a host CUDA library (libcublasLt.so.13, libcublas.so.13,
#      libcuda.so.1); nothing needs libnccl (it is loaded at run time, for TP only).
#   2. start: each binary runs its --help / --list-tests with LD_DEBUG=libs, exits as
#      expected, and every library the loader initialised lies inside the bundle or the
#      host-library folder, or is glibc's or the NVIDIA driver's (so a library the loader
#      quietly found in this machine's /usr/lib fails the check, as it would fail on the
#      GPU host).
# usage: deploy/check-bundle.sh BUNDLE_DIR [HOST_LIBRARY_FILE...]
#   HOST_LIBRARY_FILE: what the GPU host provides (here: /usr/local/cuda/lib64/
#   libcublasLt.so.13); they are linked into a private folder given to env.sh as
#   IRIS_CUDA_LIB_DIR, so nothing else of their folder is visible.
# Exit 0 when complete; 1 with one line per problem otherwise.
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BUNDLE_DIR [HOST_LIBRARY_FILE...]" >&2; exit 2; }
bundle=$(cd "$1" && pwd) || exit 2
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/host"
for f in "$@"; do ln -s "$(readlink -f "$f")" "$work/host/$(basename "$f")"; done

glibc='^(linux-vdso\.so\.1|ld-linux-x86-64\.so\.2|libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|libresolv\.so\.2|libutil\.so\.1)$'
host='^(libcublasLt\.so\.13|libcublas\.so\.13|libcuda\.so\.1)$'
# The NVIDIA driver's own libraries (cudart loads libcuda.so.1 at run time on a GPU host).
driver='^(libcuda\.so|libnvidia-|libcudadebugger\.so)'
problems=0
problem() { echo "PROBLEM: $*"; problems=$((problems + 1)); }

# --- 1. closure of DT_NEEDED ---------------------------------------------------------------
if ! command -v readelf >/dev/null; then
  echo "note: no readelf here (binutils): closure not checked, only the clean-environment start"
fi
for f in "$bundle"/bin/* "$bundle"/lib/*.so* "$bundle"/lib/cxx/*; do
  [ -f "$f" ] || continue
  for need in $(readelf -d "$f" 2>/dev/null | awk '/\(NEEDED\)/ {gsub(/[\[\]]/, "", $NF); print $NF}'); do
    if [[ "$need" =~ ^libnccl ]]; then
      problem "${f#$bundle/} links $need (NCCL must be loaded at run time)"
    elif [[ "$need" =~ $glibc ]] || [[ "$need" =~ $host ]]; then
      :
    elif [ ! -e "$bundle/lib/$need" ] && [ ! -e "$bundle/lib/cxx/$need" ]; then
      problem "${f#$bundle/} needs $need, which is not in the bundle"
    fi
  done
done

# --- 2. clean-environment start ------------------------------------------------------------
# binary, arguments, the exit codes that mean "started" (* = any but the loader's 127), a
# string its output must contain. Catch2's --list-tests exits with the number of tests;
# skip_without_gpu exits 77 without a GPU and runs gpu_op_tests with one.
checks=(
  "iris|--help|0|Usage"
  "gpu_op_tests|--list-tests|*|test cases"
  "skip_without_gpu|$bundle/bin/gpu_op_tests --list-tests|*|"
  "bench_generate|--help|0|usage"
  "bench_vision|--help|0|usage"
  "bench_grammar|--help|0|usage"
)
for c in "${checks[@]}"; do
  IFS='|' read -r name args codes expect <<<"$c"
  bin="$bundle/bin/$name"
  [ -x "$bin" ] || { problem "bin/$name is missing"; continue; }
  log="$work/$name.log"
  # shellcheck disable=SC2086
  env -i PATH=/usr/bin:/bin HOME="$work" IRIS_CUDA_LIB_DIR="$work/host" IRIS_PYTHON=/nonexistent \
    bash -c '. "$1/env.sh" && shift && LD_DEBUG=libs LD_DEBUG_OUTPUT="$0" exec "$@"' \
    "$work/$name.ld" "$bundle" "$bin" $args >"$log" 2>&1
  rc=$?
  if { [ "$codes" = "*" ] && [ $rc -eq 127 ]; } || { [ "$codes" != "*" ] && [[ " $codes " != *" $rc "* ]]; }; then
    problem "bin/$name $args exited $rc (expected $codes): $(grep -v '^ *[0-9]*:' "$log" | tail -3 | tr '\n' ' ')"
  elif [ -n "$expect" ] && ! grep -q "$expect" "$log"; then
    problem "bin/$name $args did not print '$expect'"
  fi
  # Every library the loader initialised (LD_DEBUG writes one file per process).
  for lib in $(cat "$work/$name.ld".* 2>/dev/null | sed -n 's/.*calling init: //p' | sort -u); do
    real=$(readlink -f "$lib")
    case $real in
      "$bundle"/lib/*) continue ;;
    esac
    case $lib in
      "$work/host/"*) continue ;;
    esac
    [[ "$(basename "$lib")" =~ $glibc ]] && continue
    [[ "$(basename "$lib")" =~ $driver ]] && continue
    problem "bin/$name loaded $lib from outside the bundle"
  done
  rm -f "$work/$name.ld".*
done

if [ $problems -gt 0 ]; then
  echo "bundle $bundle: $problems problem(s)"
  exit 1
fi
echo "bundle $bundle: complete (every binary starts in a clean environment)"
