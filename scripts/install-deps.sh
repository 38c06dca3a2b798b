#!/usr/bin/env bash
# Installs the Debian 12 packages Iris needs to build and test. Idempotent; run as root
# (or with sudo available). Pass --no-test to skip the test-only packages (PyTorch for
# reference outputs, Node.js for the Hugging Face tokenizer/Jinja references).
set -euo pipefail

with_test=1
for a in "$@"; do
  case "$a" in
    --no-test) with_test=0 ;;
    *) echo "usage: $0 [--no-test]" >&2; exit 2 ;;
  esac
done

sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi

build_pkgs=(
  build-essential cmake ninja-build pkg-config ccache
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev nlohmann-json3-dev libopenblas-dev libcli11-dev
  libpcre2-dev libutf8proc-dev libicu-dev libjpeg-dev libpng-dev libssl-dev zlib1g-dev
  libboost1.81-dev
  catch2 patchelf
  # Video files (Qwen2.5-VL): optional, IRIS_ENABLE_VIDEO=AUTO uses them when present.
  libavcodec-dev libavformat-dev libswscale-dev libavutil-dev
)
# haproxy + socat: the cluster tests' balancer and its control socket; prometheus: promtool
# and a live scrape of /metrics; ffmpeg: the video-file tests make their clips and extract
# their reference frames with it.
test_pkgs=(python3-torch python3-numpy python3-jinja2 openssl python3-pil haproxy socat prometheus
  python3-jsonschema ffmpeg)
# kubectl (for `kubectl kustomize` in the cluster tests): Debian's kubernetes-client unless
# another kubectl is installed (it would conflict on /usr/bin/kubectl).
if ! command -v kubectl >/dev/null 2>&1; then test_pkgs+=(kubernetes-client); fi
# Node.js may already come from elsewhere (its own npm); only ask Debian for it when absent.
if ! command -v npm >/dev/null 2>&1; then test_pkgs+=(nodejs npm); fi

pkgs=("${build_pkgs[@]}")
if [ "$with_test" -eq 1 ]; then pkgs+=("${test_pkgs[@]}"); fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo_cmd apt-get update -qq
$sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
