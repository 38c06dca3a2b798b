#!/usr/bin/env python3
"""End to end from image files: `iris generate --image A --image B --prompt-ids ...` (one image
token per image, expanded by Iris) against image_fixtures.json from make_vision_checkpoints.py
(PIL + numpy preprocessing, independent PyTorch LLaVA). Greedy ids must match exactly and
log-probabilities within the tolerance; the expanded prompt must equal the reference's.

usage: check_generate_images.py IRIS_BINARY VISION_DIR [--tolerance 1e-4]
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "parity"))
from compare import max_logprob_diff  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("iris")
    ap.add_argument("dir")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    a = ap.parse_args()
    with open(os.path.join(a.dir, "image_fixtures.json")) as f:
        fx = json.load(f)
    failed = 0
    # Each case on one rank and on two tensor-parallel CPU ranks (the tower runs on rank 0,
    # every rank places the image embeddings), with a step budget that splits the images.
    runs = [(c, tp) for c in fx["cases"] for tp in (1, 2)]
    for c, tp in runs:
        cmd = [a.iris, "generate", "--model", os.path.join(a.dir, c["model"]),
               "--prompt-ids", ",".join(map(str, c["prompt_ids"])),
               "--max-tokens", str(len(c["output_ids"])), "--temperature", "0",
               "--ignore-eos", "--json", "--threads", "2", "--tensor-parallel-size", str(tp),
               "--max-num-batched-tokens", "7", "--cpu-weight-dtype", "fp32"]
        for img in c["images"]:
            cmd += ["--image", img]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL {c['model']}: exit {r.returncode}: {r.stderr.strip()}")
            failed += 1
            continue
        got = json.loads(r.stdout)
        diff = max_logprob_diff(got["logprobs"], c["logprobs"])
        ok = (got["prompt_ids"] == c["expanded_prompt_ids"] and got["output_ids"] == c["output_ids"]
              and diff <= a.tolerance)
        print(f"{'ok  ' if ok else 'FAIL'} {c['model']} tp={tp}: {len(c['images'])} images, "
              f"{len(got['prompt_ids'])} prompt tokens, ids match={got['output_ids'] == c['output_ids']}, "
              f"logprob max diff {diff:.2e}")
        failed += 0 if ok else 1
    # An image for a text position count that does not match fails clearly.
    c = fx["cases"][0]
    r = subprocess.run([a.iris, "generate", "--model", os.path.join(a.dir, c["model"]),
                        "--prompt-ids", "1,5,6", "--image", c["images"][0], "--max-tokens", "2"],
                       capture_output=True, text=True)
    if r.returncode == 0 or "placeholder" not in r.stderr:
        print(f"FAIL: a prompt without image tokens was accepted: {r.stderr.strip()}")
        failed += 1
    # A truncated image fails with a clear error.
    trunc = os.path.join(a.dir, "truncated.png")
    with open(c["images"][0], "rb") as f, open(trunc, "wb") as g:
        g.write(f.read()[:60])
    r = subprocess.run([a.iris, "generate", "--model", os.path.join(a.dir, c["model"]),
                        "--prompt-ids", ",".join(map(str, c["prompt_ids"])), "--image", trunc,
                        "--image", c["images"][1], "--max-tokens", "2"], capture_output=True, text=True)
    if r.returncode == 0 or "--image" not in r.stderr:
        print(f"FAIL: a truncated image was accepted: {r.stderr.strip()}")
        failed += 1
    print(f"{len(runs)} image runs, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
