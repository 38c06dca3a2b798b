#!/usr/bin/env python3
"""Gemma 3 with images through the front doors of `iris serve`: the OpenAI-compatible HTTP
API (chat completions with image_url data URLs) and gRPC (`iris client chat --image`), against
chat_fixtures.json from tests/parity/make_gemma3.py (jinja2 + the processor's text expansion +
the fixture tokenizer + the independent PyTorch reference). Greedy ids must be identical,
log-probabilities within the tolerance, and the HTTP prompt token count that of the
reference's expanded prompt. Each server run uses small prefill chunks, so a chunk would split
an image if the scheduler let it; the second run has two tensor-parallel ranks. A broken
image fails its request alone, naming the field, and the server keeps serving.

usage: check_gemma3_serve.py IRIS_BINARY FIXTURE_DIR [--tolerance 1e-4]
"""
import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
from compare import max_logprob_diff  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_url(path):
    mime = "image/png" if path.endswith(".png") else "image/jpeg"
    with open(path, "rb") as f:
        return f"data:{mime};base64,{base64.b64encode(f.read()).decode()}"


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_ready(port, proc):
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"iris serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError("iris serve did not start")


def http_chat(port, c):
    messages = [{"role": m["role"], "content": [
        {"type": "text", "text": p["text"]} if p["type"] == "text"
        else {"type": "image_url", "image_url": {"url": data_url(p["file"])}}
        for p in m["content"]]} for m in c["messages"]]
    status, resp = post(port, "/v1/chat/completions", {
        "model": "gemma3-mm", "messages": messages, "max_tokens": len(c["output_ids"]),
        "temperature": 0, "ignore_eos": True, "logprobs": True, "return_tokens_as_token_ids": True})
    if status != 200:
        return f"HTTP {status}: {resp}"
    content = resp["choices"][0]["logprobs"]["content"]
    ids = [int(e["token"][len("token_id:"):]) for e in content]
    diff = max_logprob_diff([e["logprob"] for e in content], c["logprobs"])
    if ids != c["output_ids"] or diff > TOL or resp["usage"]["prompt_tokens"] != len(c["prompt_ids"]):
        return (f"ids {ids} vs {c['output_ids']}, logprob diff {diff:.2e}, prompt tokens "
                f"{resp['usage']['prompt_tokens']} vs {len(c['prompt_ids'])}")
    return f"ok (logprob diff {diff:.2e})"


def grpc_chat(iris, port, c):
    user = c["messages"][0]["content"]
    images = [p["file"] for p in user if p["type"] == "image"]
    text = "".join(p["text"] for p in user if p["type"] == "text")
    cmd = [iris, "client", "chat", "--address", f"127.0.0.1:{port}", "--json",
           "--max-tokens", str(len(c["output_ids"])), "--temperature", "0", "--ignore-eos",
           "--logprobs", "0", text]
    for img in images:
        cmd += ["--image", img]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return f"exit {r.returncode}: {r.stderr.strip()}"
    ids, lps = [], []
    for line in r.stdout.splitlines():
        m = json.loads(line)
        ids += m.get("tokenIds", [])
        lps += m.get("logprobs", [])
    diff = max_logprob_diff(lps, c["logprobs"])
    if ids != c["output_ids"] or diff > TOL:
        return f"ids {ids} vs {c['output_ids']}, logprob diff {diff:.2e}"
    return f"ok (logprob diff {diff:.2e})"


def main():
    global TOL
    ap = argparse.ArgumentParser()
    ap.add_argument("iris")
    ap.add_argument("dir")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    a = ap.parse_args()
    TOL = a.tolerance
    with open(os.path.join(a.dir, "chat_fixtures.json")) as f:
        cases = json.load(f)["cases"]
    failed = 0
    for tp in (1, 2):
        gport, hport = free_port(), free_port()
        proc = subprocess.Popen(
            [a.iris, "serve", "--model", os.path.join(a.dir, "gemma3-mm"), "--port", str(gport), "--http-port", str(hport), "--threads", "2",
             "--tensor-parallel-size", str(tp), "--max-num-batched-tokens", "12"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_ready(hport, proc)
            for c in cases:
                for door in ("http", "grpc") if c["kind"] == "grpc" else ("http",):
                    res = http_chat(hport, c) if door == "http" else grpc_chat(a.iris, gport, c)
                    ok = res.startswith("ok")
                    failed += 0 if ok else 1
                    print(f"{'ok  ' if ok else 'FAIL'} tp={tp} {door} {c['rendered']!r}: {res}")
            # A broken image fails alone, naming its field; the next request still works.
            bad = cases[1]
            status, resp = post(hport, "/v1/chat/completions", {
                "model": "gemma3-mm", "max_tokens": 2, "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "text", "text": "hi"}]}]})
            msg = json.dumps(resp)
            if status != 400 or "messages[0].content[0]" not in msg:
                print(f"FAIL tp={tp}: a truncated image gave {status} {msg}")
                failed += 1
            res = http_chat(hport, bad)
            if not res.startswith("ok"):
                print(f"FAIL tp={tp}: after a bad image: {res}")
                failed += 1
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"{failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
