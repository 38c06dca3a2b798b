#!/usr/bin/env bash
# Builds Iris (installing its Debian packages if needed) and serves the embedded default
# model, models/iris-tiny, over gRPC on 127.0.0.1:50051 and the OpenAI-compatible HTTP API on
# 127.0.0.1:8000. Once the server is up it sends one
# chat message with `iris client chat` to show a reply, then keeps serving until Ctrl-C
# (the server drains and exits 0). Extra arguments go to `iris serve`, e.g.
#   ./scripts/run.sh --port 6000 --api-key secret
# Talk to it from another terminal:
#   ./build/server/iris client chat "Hello"      # or without a message for an interactive chat
#   curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \
#     -d '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32}'
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --no-test
build=${IRIS_BUILD_DIR:-build}
if [ ! -x "$build/server/iris" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" -j "$(nproc)" --target iris
iris=$build/server/iris

port=50051
api_key=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --port) port="${args[$((i + 1))]}" ;;
    --port=*) port="${args[$i]#--port=}" ;;
    --api-key) api_key="${args[$((i + 1))]}" ;;
    --api-key=*) api_key="${args[$i]#--api-key=}" ;;
  esac
done

"$iris" serve "$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true' INT TERM
# Wait for the server, then show one exchange.
for _ in $(seq 1 100); do
  if IRIS_API_KEY="$api_key" "$iris" client info --address "127.0.0.1:$port" >/dev/null 2>&1; then
    echo "--- iris client chat \"Hello\" ---"
    IRIS_API_KEY="$api_key" "$iris" client chat --address "127.0.0.1:$port" --temperature 0 "Hello" || true
    echo "--- serving gRPC on 127.0.0.1:$port and HTTP (OpenAI API) as logged above; Ctrl-C to stop ---"
    break
  fi
  if ! kill -0 "$server" 2>/dev/null; then break; fi
  sleep 0.2
done
wait "$server"
