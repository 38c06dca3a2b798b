#!/usr/bin/env bash
# The HTTP API through curl, as a shell user meets it: raw SSE framing and [DONE], keep-alive
# reuse of one connection, HTTPS with the gRPC port's certificate flags (and mutual TLS), and
# a data: image on a vision checkpoint giving the same tokens as gRPC with the same image.
# usage: curl_test.sh IRIS MODEL_DIR VISION_DIR WORK_DIR
set -uo pipefail
iris=$1 model=$2 vision=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
. "$(dirname "$0")/../integration/serve_lib.sh"

# --- SSE framing and keep-alive on the embedded model -----------------------------------------
start text --model "$model"
base="http://127.0.0.1:$http_port"
curl -sS -N "$base/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":12,"temperature":0,"stream":true}' \
  -D "$work/sse.headers" -o "$work/sse.body"
/usr/bin/python3 - "$work/sse.body" "$work/sse.headers" <<'EOF'
import json, sys
raw = open(sys.argv[1], encoding="utf-8").read()
headers = open(sys.argv[2]).read().lower()
assert "content-type: text/event-stream" in headers, headers
assert "transfer-encoding: chunked" in headers, headers
assert raw.endswith("data: [DONE]\n\n"), raw[-60:]
events = raw.split("\n\n")[:-1]
assert all(e.startswith("data: ") and "\n" not in e for e in events), events[:3]
chunks = [json.loads(e[6:]) for e in events[:-1]]
assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
assert sum(1 for c in chunks if c["choices"][0]["finish_reason"]) == 1
assert len({c["id"] for c in chunks}) == 1
EOF
check "SSE framing, role first, one finish, [DONE] last" $?

# Two requests on one curl invocation share one connection (num_connects 1 then 0).
conns=$(curl -sS -o /dev/null -o /dev/null -w '%{num_connects}\n' "$base/v1/models" "$base/health" | tr '\n' ' ')
[ "$conns" = "1 0 " ]
check "keep-alive: the second request reuses the connection (num_connects: $conns)" $?

# Non-streamed text equals the concatenated stream.
full=$(curl -sS "$base/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Hello"}],"max_tokens":12,"temperature":0}' |
  /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["choices"][0]["message"]["content"])')
streamed=$(/usr/bin/python3 -c '
import json, sys
raw = open(sys.argv[1], encoding="utf-8").read().split("\n\n")[:-2]
print("".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in raw))' "$work/sse.body")
[ "$full" = "$streamed" ]
check "streamed deltas == non-streamed content ('$full')" $?

status=$(curl -sS -o /dev/null -w '%{http_code}' "$base/v1/chat/completions" -d '{"messages": "x"}')
[ "$status" = 400 ]
check "wrong type is 400" $?

# --- HTTPS with the same certificate flags, then mutual TLS -----------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
start tls --model "$model" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem"
out=$(curl -sS --cacert "$work/cert.pem" "https://127.0.0.1:$http_port/v1/completions" \
  -d '{"prompt":"Hello","max_tokens":3,"temperature":0}')
echo "$out" | grep -q '"completion_tokens":3'
check "HTTPS completion" $?
curl -sS -o /dev/null "http://127.0.0.1:$http_port/health" 2>/dev/null && plain=0 || plain=1
[ "$plain" = 1 ]
check "plain HTTP refused on the HTTPS port" $?
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=client -keyout "$work/ckey.pem" -out "$work/ccert.pem" 2>/dev/null
start mtls --model "$model" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --tls-client-ca "$work/ccert.pem"
curl -sS -o /dev/null --cacert "$work/cert.pem" "https://127.0.0.1:$http_port/health" 2>/dev/null && nocert=0 || nocert=1
[ "$nocert" = 1 ]
check "mutual TLS: no client certificate, no response" $?
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$work/cert.pem" --cert "$work/ccert.pem" --key "$work/ckey.pem" \
  "https://127.0.0.1:$http_port/health")
[ "$code" = 200 ]
check "mutual TLS: with the client certificate, 200" $?

# --- a data: image on the vision checkpoint equals gRPC with the same file ---------------------
start vision --model "$vision/clip-llava"
img="$vision/clip-llava/image0.png"
b64=$(base64 -w0 "$img")
printf '{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,%s"}},{"type":"text","text":"Describe it."}]}],"max_tokens":6,"temperature":0,"ignore_eos":true,"logprobs":true,"return_tokens_as_token_ids":true}' \
  "$b64" > "$work/image_req.json"
curl -sS "http://127.0.0.1:$http_port/v1/chat/completions" -H 'Content-Type: application/json' \
  --data-binary @"$work/image_req.json" > "$work/image_http.json"
"$iris" client chat --address "127.0.0.1:$grpc_port" --image "$img" 'Describe it.' --temperature 0 \
  --max-tokens 6 --ignore-eos --logprobs 0 --json > "$work/image_grpc.jsonl"
/usr/bin/python3 - "$work/image_http.json" "$work/image_grpc.jsonl" <<'EOF'
import json, sys
h = json.load(open(sys.argv[1]))
content = h["choices"][0]["logprobs"]["content"]
http_ids = [int(e["token"].split(":")[1]) for e in content]
grpc = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
grpc_ids = [t for m in grpc for t in m.get("tokenIds", [])]
grpc_lps = [x for m in grpc for x in m.get("logprobs", [])]
assert len(http_ids) == 6 and http_ids == grpc_ids, (http_ids, grpc_ids)
assert all(abs(e["logprob"] - g) < 1e-5 for e, g in zip(content, grpc_lps))
EOF
check "data: image via curl == gRPC iris client chat --image (tokens and logprobs)" $?

finish
