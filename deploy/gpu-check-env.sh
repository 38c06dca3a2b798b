# Sourced (as OUT/env.sh of the GPU check bundle, see make-gpu-check-bundle.sh) on a GPU
# host: finds the host's libcublasLt.so.13 and libnccl.so.2 and puts their folders on
# LD_LIBRARY_PATH, after the bundle's own lib/. Where from, in this order:
#   $IRIS_CUDA_LIB_DIR (a folder), the loader cache (ldconfig -p), /usr/local/cuda*/lib64
#   and targets/*/lib, the system library folders, the nvidia/*/lib folders of the Python
#   packages (torch's CUDA wheels) of $IRIS_PYTHON or python3.
# Sets IRIS_CUBLASLT (the file used, empty when none) and IRIS_NCCL_LIBRARY (the same for
# NCCL; the NCCL communicator loads that file). C++ runtime: the bundle's lib/cxx
# (libstdc++, libgcc_s) where the host's glibc is new enough for it, else the host's own;
# IRIS_CXX_RUNTIME says which, IRIS_BUNDLE_PROBLEM what cannot work on this host (empty when
# nothing). Prints nothing; gpu-check.sh reports them.
iris_bundle_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# ldconfig lives in /sbin on many hosts, off an ordinary user's PATH.
iris_ldconfig=$(command -v ldconfig || command -v /sbin/ldconfig || command -v /usr/sbin/ldconfig || echo false)

iris_find_host_lib() {  # NAME -> the first matching file, or nothing
  local name=$1 d f sp
  for d in ${IRIS_CUDA_LIB_DIR:-}; do
    [ -e "$d/$name" ] && { echo "$d/$name"; return; }
  done
  f=$("$iris_ldconfig" -p 2>/dev/null | awk -v n="$name" '$1 == n && /x86-64/ && !f {print $NF; f = 1}')
  [ -n "$f" ] && [ -e "$f" ] && { echo "$f"; return; }
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
           /usr/local/cuda-*/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib; do
    [ -e "$d/$name" ] && { echo "$d/$name"; return; }
  done
  local py=${IRIS_PYTHON:-python3}
  command -v "$py" >/dev/null 2>&1 || return 0
  for sp in $("$py" -c 'import site, sys
paths = site.getsitepackages() + [site.getusersitepackages()] + sys.path
print("\n".join(p for p in paths if p))' 2>/dev/null); do
    [ -d "$sp/nvidia" ] || continue
    f=$(find "$sp/nvidia" -maxdepth 3 -name "$name" 2>/dev/null | sort | head -1)
    [ -n "$f" ] && { echo "$f"; return; }
  done
}

iris_version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$2" ]; }
iris_manifest() { awk -v k="$1:" '$1 == k {print $2}' "$iris_bundle_dir/MANIFEST.txt" 2>/dev/null; }

IRIS_BUNDLE_PROBLEM=""
iris_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
iris_need=$(iris_manifest glibc_needed)
if [ -n "$iris_need" ] && ! iris_version_ge "${iris_glibc:-0}" "$iris_need"; then
  IRIS_BUNDLE_PROBLEM="host glibc ${iris_glibc:-unknown} is older than the $iris_need the bundle needs"
fi
iris_path="$iris_bundle_dir/lib"
iris_need=$(iris_manifest glibc_needed_by_lib_cxx)
if [ -n "$iris_need" ] && iris_version_ge "${iris_glibc:-0}" "$iris_need"; then
  IRIS_CXX_RUNTIME="bundle ($iris_bundle_dir/lib/cxx)"
  iris_path="$iris_path:$iris_bundle_dir/lib/cxx"
else
  iris_cxx=$("$iris_ldconfig" -p 2>/dev/null | awk '$1 == "libstdc++.so.6" && /x86-64/ && !f {print $NF; f = 1}')
  if [ -n "$iris_need" ]; then iris_why="glibc ${iris_glibc:-unknown} is too old for the bundle's"; else iris_why="the bundle has none"; fi
  iris_need=$(iris_manifest glibcxx_needed)
  IRIS_CXX_RUNTIME="host (${iris_cxx:-no libstdc++.so.6 found}; $iris_why)"
  if [ -z "$iris_cxx" ] || ! grep -aq "GLIBCXX_$iris_need" "$iris_cxx"; then
    IRIS_BUNDLE_PROBLEM="${IRIS_BUNDLE_PROBLEM:+$IRIS_BUNDLE_PROBLEM; }the host's libstdc++ (${iris_cxx:-none}) lacks GLIBCXX_$iris_need"
  fi
fi
export IRIS_CXX_RUNTIME IRIS_BUNDLE_PROBLEM

IRIS_CUBLASLT=$(iris_find_host_lib libcublasLt.so.13)
iris_nccl=$(iris_find_host_lib libnccl.so.2)
export IRIS_CUBLASLT
[ -n "$iris_nccl" ] && export IRIS_NCCL_LIBRARY="$iris_nccl"
[ -z "$IRIS_CUBLASLT" ] &&
  IRIS_BUNDLE_PROBLEM="${IRIS_BUNDLE_PROBLEM:+$IRIS_BUNDLE_PROBLEM; }no libcublasLt.so.13 on this host (set IRIS_CUDA_LIB_DIR)"
[ -n "$IRIS_CUBLASLT" ] && iris_path="$iris_path:$(dirname "$IRIS_CUBLASLT")"
export LD_LIBRARY_PATH="$iris_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
unset iris_path iris_nccl iris_glibc iris_need iris_cxx iris_why iris_ldconfig
