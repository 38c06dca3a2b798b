#!/usr/bin/env python3
"""Qwen2.5-VL end to end against fixtures.json from make_qwen_vl_checkpoints.py (PIL + numpy
preprocessing, the independent PyTorch reference):

  iris generate --image A --image B --prompt-ids ...   1 and 2 tensor-parallel ranks, a step
                                                      budget of 7 tokens that splits images
  iris serve, over gRPC (iris client chat) and HTTP (/v1/chat/completions with data: URLs)
                                                      1 and 2 ranks; the prompt rendered from
                                                      the chat template with each image's span
                                                      sized by Iris; a repeated request (encoder
                                                      and prefix caches) gives the same tokens
  bad media over HTTP: a truncated image, an image under smart_resize's 10 pixels -> HTTP 400
  naming the content part, and the server keeps serving.

Greedy ids must match exactly, log-probabilities within the tolerance.

usage: check_qwen_vl_serving.py IRIS_BINARY QWEN_VL_DIR [--tolerance 1e-3]
"""
import argparse
import base64
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

failed = 0


def check(ok, what):
    global failed
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
    failed += 0 if ok else 1


def max_diff(a, b):
    if len(a) != len(b):
        return float("inf")
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


def data_url(path):
    with open(path, "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class Server:
    def __init__(self, iris, model, log, *args):
        self.log = log
        self.proc = subprocess.Popen([iris, "serve", "--model", model, "--host", "127.0.0.1",
                                      "--port", "0", "--http-port", "-1", "--threads", "2", *args],
                                     stdout=open(log, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            text = open(log).read()
            g = re.search(r"serving \S+ on [0-9.]+:(\d+)", text)
            h = re.search(r"http listening on [0-9.]+:(\d+)", text)
            if g and h:
                self.grpc, self.http = int(g.group(1)), int(h.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        print(open(log).read())
        raise SystemExit(f"FAIL: iris serve did not start ({log})")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("iris")
    ap.add_argument("dir")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    a = ap.parse_args()
    with open(os.path.join(a.dir, "fixtures.json")) as f:
        fx = json.load(f)
    images = [os.path.join(a.dir, "images", n) for n in fx["qwen25vl-hub"]["vision"]["images"]]

    # iris generate: one placeholder per image in --prompt-ids, expanded by Iris.
    for name in ("qwen25vl-hub", "qwen25vl-current"):
        c = fx[name]["images"]
        full = c["prompt"]
        prompt = [t for i, t in enumerate(full) if t != 300 or i == 0 or full[i - 1] != 300]
        for tp in (1, 2):
            cmd = [a.iris, "generate", "--model", os.path.join(a.dir, name),
                   "--prompt-ids", ",".join(map(str, prompt)), "--max-tokens", str(len(c["ids"])),
                   "--temperature", "0", "--ignore-eos", "--json", "--threads", "2",
                   "--tensor-parallel-size", str(tp), "--max-num-batched-tokens", "7"]
            for img in images:
                cmd += ["--image", img]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                check(False, f"generate {name} tp={tp}: exit {r.returncode}: {r.stderr.strip()}")
                continue
            got = json.loads(r.stdout)
            d = max_diff(got["logprobs"], c["logprobs"])
            check(got["prompt_ids"] == full and got["output_ids"] == c["ids"] and d <= a.tolerance,
                  f"generate {name} tp={tp}: 2 images, prompt expanded as the reference, "
                  f"ids match={got['output_ids'] == c['ids']}, logprob max diff {d:.2e}")

    # iris serve: chat over gRPC and HTTP.
    c = fx["qwen25vl-hub"]["chat"]
    for tp in (1, 2):
        s = Server(a.iris, os.path.join(a.dir, "qwen25vl-hub"), os.path.join(a.dir, f"serve_tp{tp}.log"),
                   "--tensor-parallel-size", str(tp), "--max-num-batched-tokens", "16",
                   "--max-video-frames", "64", "--max-image-pixels", "40000")
        try:
            for attempt in ("cold", "cached"):
                cmd = [a.iris, "client", "chat", c["text"], "--address", f"127.0.0.1:{s.grpc}",
                       "--json", "--logprobs", "0", "--temperature", "0", "--max-tokens",
                       str(len(c["ids"])), "--ignore-eos"]
                for img in c["files"]:
                    cmd += ["--image", img]
                r = subprocess.run(cmd, capture_output=True, text=True)
                ids, lps, usage = [], [], {}
                for line in r.stdout.splitlines():
                    m = json.loads(line)
                    ids += m.get("tokenIds", [])
                    lps += m.get("logprobs", [])
                    usage = m.get("usage", usage)
                d = max_diff(lps, c["logprobs"])
                check(r.returncode == 0 and ids == c["ids"] and d <= a.tolerance and
                      usage.get("promptTokens") == len(c["prompt"]),
                      f"gRPC chat tp={tp} ({attempt}): ids match={ids == c['ids']}, logprob max diff "
                      f"{d:.2e}, prompt tokens {usage.get('promptTokens')} (want {len(c['prompt'])}) "
                      f"{r.stderr.strip()}")
            parts = [{"type": "image_url", "image_url": {"url": data_url(p)}} for p in c["files"]]
            body = {"model": "qwen25vl-hub", "max_tokens": len(c["ids"]), "temperature": 0,
                    "logprobs": True, "ignore_eos": True,
                    "messages": [{"role": "user", "content": parts + [{"type": "text", "text": c["text"]}]}]}
            status, j = post(s.http, "/v1/chat/completions", body)
            ok = status == 200
            if ok:
                content = j["choices"][0]["logprobs"]["content"]
                d = max_diff([t["logprob"] for t in content], c["logprobs"])
                ok = d <= a.tolerance and j["usage"]["prompt_tokens"] == len(c["prompt"])
            check(ok, f"HTTP chat tp={tp}: status {status}, logprob max diff "
                      f"{d if status == 200 else float('nan'):.2e}")

            # Per-request pixel range (Qwen's min_pixels / max_pixels on the part): the spans
            # shrink as smart_resize says; beyond the server's cap is refused.
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import reference_qwen2_5_vl as ref
            from PIL import Image
            small = json.loads(json.dumps(body))
            for part in small["messages"][0]["content"][:2]:
                part["max_pixels"] = 28 * 28 * 4
            status, j = post(s.http, "/v1/chat/completions", small)
            want = len(c["prompt"])
            for fpath, (t, h, w) in zip(c["files"], c["grids"]):
                im = Image.open(fpath)
                rh, rw = ref.smart_resize(im.height, im.width, 28, 3136, 28 * 28 * 4)
                want += rh * rw // (28 * 28) - t * h * w // 4
            check(status == 200 and j["usage"]["prompt_tokens"] == want,
                  f"HTTP chat with max_pixels per image: status {status}, prompt tokens "
                  f"{j.get('usage', {}).get('prompt_tokens')} (want {want})")
            over = json.loads(json.dumps(body))
            over["messages"][0]["content"][1]["max_pixels"] = 10 ** 12
            status, j = post(s.http, "/v1/chat/completions", over)
            check(status == 400 and "messages[0].content[1].max_pixels" in json.dumps(j),
                  f"HTTP max_pixels beyond the server's limit -> {status}: {json.dumps(j)[:200]}")

            # Bad media fail alone, with the content part named.
            with open(c["files"][0], "rb") as f:
                png = f.read()
            bad = {"truncated": png[:60]}
            from PIL import Image
            buf = io.BytesIO()
            Image.new("RGB", (8, 40), (10, 20, 30)).save(buf, "PNG")
            bad["too small"] = buf.getvalue()
            for what, data in bad.items():
                b = json.loads(json.dumps(body))
                b["messages"][0]["content"][1]["image_url"]["url"] = (
                    "data:image/png;base64," + base64.b64encode(data).decode())
                status, j = post(s.http, "/v1/chat/completions", b)
                msg = json.dumps(j)
                check(status == 400 and "messages[0].content[1]" in msg,
                      f"HTTP {what} image -> {status}: {msg[:200]}")
            status, j = post(s.http, "/v1/chat/completions", body)
            check(status == 200 and max_diff([t["logprob"] for t in j["choices"][0]["logprobs"]["content"]],
                                            c["logprobs"]) <= a.tolerance,
                  f"HTTP chat tp={tp} after the bad requests: status {status}")

            # A video as frames: gRPC (iris client chat --video-frame ...) and HTTP video_url.
            v = fx["qwen25vl-hub"]["video_chat"]
            cmd = [a.iris, "client", "chat", v["text"], "--address", f"127.0.0.1:{s.grpc}",
                   "--json", "--logprobs", "0", "--temperature", "0", "--max-tokens",
                   str(len(v["ids"])), "--ignore-eos", "--video-fps", str(v["fps"])]
            for fr in v["files"]:
                cmd += ["--video-frame", fr]
            r = subprocess.run(cmd, capture_output=True, text=True)
            ids, lps, usage = [], [], {}
            for line in r.stdout.splitlines():
                m = json.loads(line)
                ids += m.get("tokenIds", [])
                lps += m.get("logprobs", [])
                usage = m.get("usage", usage)
            d = max_diff(lps, v["logprobs"])
            check(r.returncode == 0 and ids == v["ids"] and d <= a.tolerance and
                  usage.get("promptTokens") == len(v["prompt"]),
                  f"gRPC video chat tp={tp}: ids match={ids == v['ids']}, logprob max diff {d:.2e}, "
                  f"prompt tokens {usage.get('promptTokens')} (want {len(v['prompt'])}) {r.stderr.strip()}")
            video = {"type": "video_url", "video_url": {"url": [data_url(fr) for fr in v["files"]],
                                                        "fps": v["fps"]}}
            vbody = {"model": "qwen25vl-hub", "max_tokens": len(v["ids"]), "temperature": 0,
                     "logprobs": True, "ignore_eos": True,
                     "messages": [{"role": "user", "content": [video, {"type": "text", "text": v["text"]}]}]}
            status, j = post(s.http, "/v1/chat/completions", vbody)
            ok = status == 200
            if ok:
                d = max_diff([t["logprob"] for t in j["choices"][0]["logprobs"]["content"]], v["logprobs"])
                ok = d <= a.tolerance and j["usage"]["prompt_tokens"] == len(v["prompt"])
            check(ok, f"HTTP video chat tp={tp}: status {status} {json.dumps(j)[:300] if status != 200 else ''}")

            # Bad videos fail alone, the field named.
            def bad_video(what, edit, field):
                b = json.loads(json.dumps(vbody))
                edit(b["messages"][0]["content"][0]["video_url"])
                status, j = post(s.http, "/v1/chat/completions", b)
                msg = json.dumps(j)
                check(status == 400 and field in msg, f"HTTP video with {what} -> {status}: {msg[:220]}")
            bad_video("zero frames", lambda vu: vu.update(url=[]), "video_url.url")
            bad_video("too many frames", lambda vu: vu.update(url=vu["url"] * 200), "--max-video-frames")
            other = data_url(c["files"][0])
            bad_video("mismatched frame sizes", lambda vu: vu["url"].__setitem__(2, other), "video_url.url[2]")
            corrupt = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n garbage").decode()
            bad_video("a corrupt frame", lambda vu: vu["url"].__setitem__(1, corrupt), "video_url.url[1]")
            bad_video("a corrupt video file", lambda vu: (vu.pop("fps"), vu.update(url="data:video/mp4;base64,AAAA")),
                      "video_url.url")
            bad_video("no fps", lambda vu: vu.pop("fps"), "video_url.fps")
            from PIL import Image
            buf = io.BytesIO()
            Image.new("RGB", (300, 300), (1, 2, 3)).save(buf, "PNG")
            big = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
            bad_video("frames beyond the pixel cap", lambda vu: vu.update(url=[big] * 4), "video_url.url[0]")
            status, j = post(s.http, "/v1/chat/completions", vbody)
            check(status == 200, f"HTTP video chat tp={tp} after the bad requests: status {status}")
        finally:
            s.stop()
    print(f"{failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
