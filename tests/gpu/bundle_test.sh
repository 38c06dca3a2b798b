#!/usr/bin/env bash
# ctest (label bundle): the GPU check bundle is complete.
#   bundle_test.sh make BUILD_DIR BUNDLE_DIR      builds it (gzip -1: the size limit is
#                                                 checked on an archive larger than the xz one)
#   bundle_test.sh check BUNDLE_DIR CUBLASLT      every binary starts in a clean environment
#                                                 with only the bundle and cuBLASLt, and the
#                                                 check itself fails on a bundle missing a library
set -uo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
case ${1:-} in
  make)
    IRIS_BUNDLE_COMPRESS=fast "$src/deploy/make-gpu-check-bundle.sh" "$2" "$3"
    ;;
  check)
    bundle=$2 cublaslt=$3
    "$src/deploy/check-bundle.sh" "$bundle" "$cublaslt" || exit 1
    # The check must be able to fail: the same bundle without libgfortran (OpenBLAS needs it;
    # this machine has it in /usr/lib, so only the check can notice) and without cuBLASLt.
    broken="$bundle.broken"
    rm -rf "$broken" && cp -al "$bundle" "$broken" && rm "$broken/lib/libgfortran.so.5"
    out=$("$src/deploy/check-bundle.sh" "$broken" "$cublaslt")
    rc=$?
    rm -rf "$broken"
    if [ $rc -eq 0 ] || ! grep -q "needs libgfortran.so.5, which is not in the bundle" <<<"$out" ||
       ! grep -q "loaded /.*libgfortran.so.5 from outside the bundle" <<<"$out"; then
      echo "FAIL: check-bundle.sh did not notice a missing libgfortran.so.5:"
      echo "$out"
      exit 1
    fi
    echo "check-bundle.sh rejects a bundle without libgfortran.so.5 (as it should)"
    ;;
  *)
    echo "usage: $0 make BUILD_DIR BUNDLE_DIR | check BUNDLE_DIR CUBLASLT" >&2
    exit 2
    ;;
esac
