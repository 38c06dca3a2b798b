#!/usr/bin/python3
"""Qwen2.5-VL video FILES end to end: a short clip made here with the ffmpeg command line
(MP4/MPEG-4 Part 2, WebM/VP8, AVI/MJPEG), the frames the Qwen processor samples extracted
independently with the ffmpeg command line as PNGs, run through the PyTorch reference
(reference_qwen2_5_vl.py) as frames; then `iris generate --video FILE`, `iris serve` over HTTP
(video_url with a data:video/...;base64 URL) and gRPC (VideoPart.file) must give the same greedy
ids and logprobs within 1e-3, and the same prompt length. Bad files (truncated, random bytes
behind an MP4 header, no decodable frames, over the frame / duration / pixel caps) fail alone
with the field named while a good request in flight finishes with the right tokens, and every
KV block is free afterwards.

Usage: check_qwen_vl_video_file.py IRIS_BINARY FIXTURE_DIR (the make_qwen_vl_checkpoints.py
output). Registered only for builds that decode video files; fails without the ffmpeg CLI."""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_qwen_vl_checkpoints as mk  # noqa: E402
import reference_qwen2_5_vl as ref  # noqa: E402
from check_qwen_vl_serving import Server, max_diff, post  # noqa: E402

TOL = 1e-3
WIDTH, HEIGHT, RATE, SECONDS = 64, 48, 10, 3
CONTAINERS = [("mp4", "video/mp4", ["-c:v", "mpeg4", "-pix_fmt", "yuv420p", "-q:v", "4"]),
              ("webm", "video/webm", ["-c:v", "libvpx", "-pix_fmt", "yuv420p", "-b:v", "200k"]),
              ("avi", "video/x-msvideo", ["-c:v", "mjpeg", "-pix_fmt", "yuvj420p"])]
failed = 0


def check(ok, what):
    global failed
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    failed += 0 if ok else 1


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_clip(path, codec_args, size=(WIDTH, HEIGHT), seconds=SECONDS):
    """A moving test pattern (testsrc) plus noise-free motion: every frame differs."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size[0]}x{size[1]}:rate={RATE}:duration={seconds}",
           *codec_args, path)


def extract(path, indices, out_dir):
    """The frames at `indices` (display order) as PNGs, by the ffmpeg command line."""
    os.makedirs(out_dir, exist_ok=True)
    expr = "+".join(f"eq(n\\,{i})" for i in indices)
    ffmpeg("-i", path, "-vf", f"select='{expr}'", "-fps_mode", "passthrough",
           os.path.join(out_dir, "f%03d.png"))
    files = sorted(os.listdir(out_dir))
    assert len(files) == len(indices), f"ffmpeg extracted {len(files)} frames, wanted {len(indices)}"
    return [Image.open(os.path.join(out_dir, f)).convert("RGB") for f in files]


def count_frames(path):
    r = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
                        "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", path],
                       capture_output=True, text=True, check=True)
    return int(r.stdout.strip().split(",")[0])


def video_part(data, mime):
    return {"type": "video_url",
            "video_url": {"url": f"data:{mime};base64," + base64.b64encode(data).decode()}}


def chat_body(part, n):
    return {"model": "qwen25vl-hub", "max_tokens": n, "temperature": 0, "logprobs": True,
            "ignore_eos": True,
            "messages": [{"role": "user", "content": [part, {"type": "text", "text": "What moves?"}]}]}


def server_info(iris, server):
    r = subprocess.run([iris, "client", "info", "--address", f"127.0.0.1:{server.grpc}"],
                       capture_output=True, text=True)
    return json.loads(r.stdout[:r.stdout.index("\n}") + 2])


def main():
    iris, fixture_dir = sys.argv[1], sys.argv[2]
    if not shutil.which("ffmpeg") or not shutil.which("ffprobe"):
        # Registered only for builds that decode video, where scripts/install-deps.sh installs
        # the ffmpeg command line: its absence is a broken test machine, not a skip.
        raise SystemExit("FAIL: no ffmpeg/ffprobe command line (scripts/install-deps.sh installs it)")
    model = os.path.join(fixture_dir, "qwen25vl-hub")
    # The hub checkpoint's weights, regenerated exactly as make_qwen_vl_checkpoints.py made them.
    cfg = mk.hub_config(False)
    W = mk.random_weights(cfg, torch.Generator().manual_seed(4321))
    proc = mk.PROCESSOR
    tp = proc["temporal_patch_size"]
    work = tempfile.mkdtemp(prefix="iris_video_")

    cases = {}
    for ext, mime, codec in CONTAINERS:
        path = os.path.join(work, f"clip.{ext}")
        try:
            make_clip(path, codec)
        except subprocess.CalledProcessError:
            raise SystemExit(f"FAIL: this ffmpeg cannot write the {ext} clip")
        total = count_frames(path)
        idx = ref.sample_frame_indices(total, float(RATE), 2.0, tp)
        frames = extract(path, idx, os.path.join(work, f"frames_{ext}"))
        patches, grid, sec = ref.preprocess_sampled_video(frames, proc, 2.0)
        feats = ref.vision(cfg, W, patches, [grid])
        rendered = mk.render_chat([{"role": "user", "content": [{"type": "video"},
                                                                {"type": "text", "text": "What moves?"}]}])
        short = mk.tokenize(rendered)
        ids = mk.expand(short, mk.VIDEO, [grid[0] * grid[1] * grid[2] // 4])
        rows = [i for i, t in enumerate(ids) if t == mk.VIDEO]
        case = mk.case_for(cfg, W, ids, dict(zip(rows, feats)), [], [grid], [sec])
        case.update(path=path, mime=mime, short=short, sampled=idx, total=total)
        cases[ext] = case
        print(f"{ext}: {total} frames at {RATE} fps, sampled {idx}, grid {grid}, reference ids {case['ids']}")
    check(len(cases) == len(CONTAINERS), f"{len(cases)} of {len(CONTAINERS)} containers made")

    # iris generate --video FILE.
    for ext, c in cases.items():
        r = subprocess.run([iris, "generate", "--model", model, "--prompt-ids", ",".join(map(str, c["short"])),
                            "--video", c["path"], "--max-tokens", str(len(c["ids"])), "--temperature", "0",
                            "--ignore-eos", "--json", "--threads", "2"], capture_output=True, text=True)
        if r.returncode != 0:
            check(False, f"generate --video {ext}: exit {r.returncode}: {r.stderr.strip()[-400:]}")
            continue
        got = json.loads(r.stdout)
        d = max_diff(got["logprobs"], c["logprobs"])
        check(got["prompt_ids"] == c["prompt"] and got["output_ids"] == c["ids"] and d <= TOL,
              f"generate --video {ext}: prompt expanded as the reference "
              f"({len(got['prompt_ids'])} vs {len(c['prompt'])}), ids match={got['output_ids'] == c['ids']}, "
              f"logprob max diff {d:.2e}")

    # iris serve: HTTP and gRPC with the file; then bad files next to a good request.
    s = Server(iris, model, os.path.join(work, "serve.log"), "--max-num-batched-tokens", "16",
               "--max-image-pixels", "40000", "--max-video-seconds", "5", "--max-video-file-frames", "40")
    try:
        for ext, c in cases.items():
            with open(c["path"], "rb") as f:
                data = f.read()
            status, j = post(s.http, "/v1/chat/completions", chat_body(video_part(data, c["mime"]), len(c["ids"])))
            ok = status == 200
            msg = json.dumps(j)[:300]
            if ok:
                lps = [t["logprob"] for t in j["choices"][0]["logprobs"]["content"]]
                d = max_diff(lps, c["logprobs"])
                ok = d <= TOL and j["usage"]["prompt_tokens"] == len(c["prompt"])
                msg = f"logprob max diff {d:.2e}, prompt tokens {j['usage']['prompt_tokens']} (want {len(c['prompt'])})"
            check(ok, f"HTTP video file {ext}: status {status}, {msg}")
            r = subprocess.run([iris, "client", "chat", "What moves?", "--address", f"127.0.0.1:{s.grpc}",
                                "--json", "--logprobs", "0", "--temperature", "0", "--max-tokens",
                                str(len(c["ids"])), "--ignore-eos", "--video", c["path"]],
                               capture_output=True, text=True)
            ids, lps, usage = [], [], {}
            for line in r.stdout.splitlines():
                m = json.loads(line)
                ids += m.get("tokenIds", [])
                lps += m.get("logprobs", [])
                usage = m.get("usage", usage)
            d = max_diff(lps, c["logprobs"])
            check(r.returncode == 0 and ids == c["ids"] and d <= TOL and usage.get("promptTokens") == len(c["prompt"]),
                  f"gRPC video file {ext}: ids match={ids == c['ids']}, logprob max diff {d:.2e} {r.stderr.strip()[-300:]}")

        # Bad files, each while a good request runs in the same server.
        c = cases["mp4"]
        with open(c["path"], "rb") as f:
            good = f.read()
        long_clip = os.path.join(work, "long.mp4")
        make_clip(long_clip, CONTAINERS[0][2], seconds=6)        # 60 frames: over 40 and over 5 s
        big_clip = os.path.join(work, "big.mp4")
        make_clip(big_clip, CONTAINERS[0][2], size=(256, 192))  # 49152 pixels per frame > 40000
        zeroed = bytearray(good)
        mdat = zeroed.find(b"mdat")  # the sample data zeroed: demuxes, but no frame decodes
        end = mdat - 4 + int.from_bytes(zeroed[mdat - 4:mdat], "big")
        zeroed[mdat + 4:end] = bytes(end - mdat - 4)
        rnd = bytearray(good[:32]) + bytearray(os.urandom(4000))
        # An AVI whose JPEG frames are zeroed (the chunk headers kept): the header reads fine,
        # so this one fails in the decode pool, not on the request's thread.
        avi = bytearray(open(cases["avi"]["path"], "rb").read()) if "avi" in cases else None
        if avi:
            at = avi.find(b"00dc", avi.find(b"movi"))
            while at >= 0:
                n = int.from_bytes(avi[at + 4:at + 8], "little")
                avi[at + 8:at + 8 + n] = bytes(n)
                at = avi.find(b"00dc", at + 8 + n)
        bad = [
            ("truncated", good[:len(good) // 2], "video_url.url", None),
            ("random bytes behind an MP4 header", bytes(rnd), "video_url.url", None),
            ("no decodable frames", bytes(zeroed), "video_url.url", None),
            ("over the frame cap", open(long_clip, "rb").read(), "--max-video-file-frames", None),
            ("AVI frames that do not decode", bytes(avi or good[:100]), "video_url.url", None),
            ("over the pixel cap", open(big_clip, "rb").read(), "--max-image-pixels", None),
        ]
        s2 = Server(iris, model, os.path.join(work, "serve2.log"), "--max-num-batched-tokens", "16",
                    "--max-video-seconds", "5")
        try:
            status, j = post(s2.http, "/v1/chat/completions",
                             chat_body(video_part(open(long_clip, "rb").read(), "video/mp4"), 2))
            msg = j.get("error", {}).get("message", "")
            check(status == 400 and "--max-video-seconds" in msg and "video_url.url" in msg and "at most 5 s" in msg,
                  f"HTTP video over the duration cap -> {status}: {msg[:200]}")
        finally:
            s2.stop()
        for what, data, field, _ in bad:
            result = {}

            def run_good():
                result["good"] = post(s.http, "/v1/chat/completions",
                                      chat_body(video_part(good, "video/mp4"), len(c["ids"])))
            t = threading.Thread(target=run_good)
            t.start()
            status, j = post(s.http, "/v1/chat/completions", chat_body(video_part(data, "video/mp4"), 2))
            t.join()
            msg = j.get("error", {}).get("message", "")
            check(status == 400 and field in msg, f"HTTP video file, {what} -> {status}: {msg[:220]}")
            gs, gj = result["good"]
            ok = gs == 200
            if ok:
                lps = [x["logprob"] for x in gj["choices"][0]["logprobs"]["content"]]
                ok = max_diff(lps, c["logprobs"]) <= TOL
            check(ok, f"  the good request next to it: status {gs}")
        # gRPC: a truncated file is INVALID_ARGUMENT (3) naming the part's file field.
        trunc = os.path.join(work, "truncated.mp4")
        with open(trunc, "wb") as f:
            f.write(good[:len(good) // 2])
        r = subprocess.run([iris, "client", "chat", "What moves?", "--address", f"127.0.0.1:{s.grpc}",
                            "--json", "--max-tokens", "2", "--video", trunc], capture_output=True, text=True)
        check(r.returncode != 0 and "answered 3" in r.stderr and "video.file" in r.stderr,
              f"gRPC truncated video file -> {r.returncode}: {r.stderr.strip()[-220:]}")
        status, j = post(s.http, "/v1/chat/completions",
                         chat_body({"type": "video_url", "video_url": {"url": "data:video/mp4;base64,"
                                                                       + base64.b64encode(good).decode(),
                                                                       "fps": 2}}, 2))
        msg = j.get("error", {}).get("message", "")
        check(status == 400 and "video_url.fps" in msg, f"HTTP video file with fps -> {status}: {msg[:200]}")
        status, j = post(s.http, "/v1/chat/completions", chat_body(video_part(good, "video/ogg"), 2))
        msg = j.get("error", {}).get("message", "")
        check(status == 400 and "video/ogg" in msg, f"HTTP video file of type video/ogg -> {status}: {msg[:200]}")
        info = server_info(iris, s)
        check(info.get("kvBlocksFree") == info.get("kvBlocksTotal") and info.get("running", 0) == 0,
              f"every KV block free after the bad files: {info.get('kvBlocksFree')} of {info.get('kvBlocksTotal')}")
    finally:
        s.stop()
    # The MP4 clip and its reference outputs, for the openai-client tests (tests/http/client).
    keep = os.path.join(fixture_dir, "video_file")
    os.makedirs(keep, exist_ok=True)
    shutil.copy(cases["mp4"]["path"], os.path.join(keep, "clip.mp4"))
    with open(os.path.join(keep, "reference.json"), "w") as f:
        json.dump({k: cases["mp4"][k] for k in ("prompt", "ids", "logprobs", "sampled", "total")}
                  | {"file": os.path.join(keep, "clip.mp4"), "text": "What moves?"}, f)
    print(f"{failed} failed")
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
