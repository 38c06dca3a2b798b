#!/usr/bin/env bash
# Claims of docs/status.md that had no test of their own, checked through the binary as a
# user meets them: the embedded-model default, `iris client info`, the API key on every RPC
# the CLI makes, gRPC mutual TLS at the handshake, --max-model-len, --max-image-bytes,
# `iris bench offline`, and scripts/run.sh (starts, answers over gRPC and HTTP, drains on
# SIGTERM with exit 0).
# usage: claims_test.sh IRIS VISION_DIR WORK_DIR
set -uo pipefail
iris=$1 vision=$2 work=$3
repo=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$work" && mkdir -p "$work"
. "$(dirname "$0")/serve_lib.sh"

# The embedded model without --model; client info reports it.
start default
"$iris" client info --address "127.0.0.1:$grpc_port" > "$work/info.json"
grep -q '"modelId": "iris-tiny"' "$work/info.json" && grep -q '"hasChatTemplate": true' "$work/info.json"
check "iris serve without --model serves iris-tiny; iris client info reports it" $?

# The API key on every RPC the CLI makes.
start keyed --api-key k3y
for sub in "info" "generate Hello --max-tokens 2" "chat Hello --max-tokens 2"; do
  # shellcheck disable=SC2086
  out=$(IRIS_API_KEY= "$iris" client $sub --address "127.0.0.1:$grpc_port" 2>&1)
  st=$?
  [ $st -ne 0 ] && echo "$out" | grep -qi "unauthenticated\|authorization"
  check "client $sub without the key is refused" $?
  # shellcheck disable=SC2086
  IRIS_API_KEY=k3y "$iris" client $sub --address "127.0.0.1:$grpc_port" > /dev/null 2>&1
  check "client $sub with the key works" $?
done

# gRPC mutual TLS: the handshake fails without a client certificate, succeeds with one.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=client -keyout "$work/ckey.pem" -out "$work/ccert.pem" 2>/dev/null
start mtls --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --tls-client-ca "$work/ccert.pem"
"$iris" client info --address "127.0.0.1:$grpc_port" --tls-ca "$work/cert.pem" --timeout 5 > /dev/null 2>&1
[ $? -ne 0 ]
check "gRPC mutual TLS: a client without a certificate is refused" $?
echo | timeout 10 openssl s_client -connect "127.0.0.1:$grpc_port" -CAfile "$work/cert.pem" -alpn h2 \
  -cert "$work/ccert.pem" -key "$work/ckey.pem" -verify_return_error > "$work/sclient.txt" 2>&1
grep -q "Verify return code: 0 (ok)" "$work/sclient.txt" && grep -q "ALPN protocol: h2" "$work/sclient.txt"
check "gRPC mutual TLS: the handshake with the client certificate completes (h2)" $?

# --max-model-len caps the context: reported, and a prompt beyond it is refused.
start short --max-model-len 32
"$iris" client info --address "127.0.0.1:$grpc_port" | grep -q '"maxContextLength": "32"'
check "--max-model-len 32 is the reported context" $?
ids=$(seq -s, 1 40)
out=$("$iris" client generate --prompt-ids "$ids" --address "127.0.0.1:$grpc_port" --max-tokens 2 2>&1)
[ $? -ne 0 ] && echo "$out" | grep -q "context length 32"
check "a 40-token prompt is refused under --max-model-len 32" $?

# --max-image-bytes refuses larger images, naming the flag.
start vision --model "$vision/clip-llava" --max-image-bytes 100000
out=$("$iris" client chat --address "127.0.0.1:$grpc_port" --image "$vision/clip-llava/large.jpeg" 'What?' --max-tokens 2 2>&1)
[ $? -ne 0 ] && echo "$out" | grep -q -- "--max-image-bytes"
check "--max-image-bytes refuses a larger image and names the flag" $?
out=$("$iris" client chat --address "127.0.0.1:$grpc_port" --image "$vision/clip-llava/image0.png" 'What?' --max-tokens 2 2>&1)
check "a small image under --max-image-bytes is served" $?

# iris bench offline prints its figures.
"$iris" bench offline --model "$repo/models/iris-tiny" --num-prompts 8 --input-len 16 --output-len 8 --json \
  > "$work/offline.json" 2>&1
/usr/bin/python3 -c '
import json, sys, math
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):text.rindex("}") + 1])
vals = [v for v in j.values() if isinstance(v, (int, float))]
assert vals and all(math.isfinite(v) for v in vals), j
assert any("token" in k and j[k] > 0 for k in j), j
' "$work/offline.json"
check "iris bench offline reports finite figures" $?

# scripts/run.sh: serves, shows a reply, answers HTTP, drains on SIGTERM and exits 0.
gport=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
hport=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$repo" && IRIS_BUILD_DIR="$(dirname "$(dirname "$iris")")" ./scripts/run.sh --port "$gport" --http-port "$hport" \
  > "$work/run.log" 2>&1) &
runpid=$!
pids+=("$runpid")
ok=1
for _ in $(seq 1 1200); do
  if grep -q -- "--- serving" "$work/run.log"; then ok=0; break; fi
  kill -0 "$runpid" 2>/dev/null || break
  sleep 0.1
done
check "scripts/run.sh starts the server and shows a chat reply" $ok
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hport/v1/chat/completions" \
  -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":4}')
[ "$code" = 200 ]
check "the run.sh server answers the README's curl" $?
server_pid=$(pgrep -f "serve --port $gport" | head -1)
kill -TERM "$server_pid" 2>/dev/null
wait "$runpid"
st=$?
[ $st -eq 0 ]
check "scripts/run.sh exits 0 after SIGTERM (status $st)" $?

finish
