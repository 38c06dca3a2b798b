#!/usr/bin/env python3
"""The memory plan `iris serve` prints before loading agrees with docs/scaling.md's arithmetic.

For Llama-3.1-70B, Mixtral-8x22B and Qwen3-235B-A22B (their published config.json shapes, an
empty weight file), `iris serve --cpu-weight-dtype bf16 --tensor-parallel-size N` must print,
per rank, the BF16 weight bytes tools/plan/large_model_arithmetic.py computes (within 1 %:
Iris also counts norms, and the vocabulary split gives rank 0 the rounded-up shard) and the
KV bytes per block (within the printed rounding; FP8 KV a quarter of F32), then refuse the model, naming the numbers, since no test machine
holds it. And every table row the script prints is in docs/scaling.md, so the docs cannot
drift from it.

usage: check_large_model_plan.py IRIS_BINARY WORK_DIR REPO_ROOT
"""
import json
import os
import re
import subprocess
import sys

iris, work, root = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(root, "tools", "plan"))
import large_model_arithmetic as arith  # noqa: E402

CONFIGS = {
    "Llama-3.1-70B": dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256,
                          hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                          num_attention_heads=64, num_key_value_heads=8,
                          max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                          hidden_act="silu", torch_dtype="bfloat16", tie_word_embeddings=False),
    "Mixtral-8x22B": dict(architectures=["MixtralForCausalLM"], model_type="mixtral", vocab_size=32768,
                          hidden_size=6144, intermediate_size=16384, num_hidden_layers=56,
                          num_attention_heads=48, num_key_value_heads=8, num_local_experts=8,
                          num_experts_per_tok=2, max_position_embeddings=65536, rms_norm_eps=1e-5,
                          rope_theta=1000000.0, hidden_act="silu", torch_dtype="bfloat16",
                          tie_word_embeddings=False),
    "Qwen3-235B-A22B": dict(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe",
                            vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                            moe_intermediate_size=1536, num_hidden_layers=94, num_attention_heads=64,
                            num_key_value_heads=4, head_dim=128, num_experts=128,
                            num_experts_per_tok=8, norm_topk_prob=True, decoder_sparse_step=1,
                            mlp_only_layers=[], max_position_embeddings=40960, rms_norm_eps=1e-6,
                            rope_theta=1000000.0, hidden_act="silu", torch_dtype="bfloat16",
                            tie_word_embeddings=False),
}
UNITS = {"KiB": 1024.0, "MiB": 1024.0 ** 2, "GiB": 1024.0 ** 3}


def empty_safetensors(path):
    header = b"{}"
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)


failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures += 1


for name, cfg in CONFIGS.items():
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    empty_safetensors(os.path.join(d, "model.safetensors"))
    total, _, emb = arith.gqa_params(arith.MODELS[name])
    for tp, kv_dtype in ((4, "auto"), (8, "auto"), (8, "fp8")):
        r = subprocess.run([iris, "serve", "--model", d, "--port", "0", "--tensor-parallel-size", str(tp),
                            "--cpu-weight-dtype", "bf16", "--num-kv-blocks", "2", "--kv-cache-dtype", kv_dtype],
                           capture_output=True, text=True, timeout=120)
        out = r.stdout + r.stderr
        ranks = re.findall(r"rank (\d+): weights ([0-9.]+) (KiB|MiB|GiB), KV ([0-9.]+) (KiB|MiB|GiB) per block of (\d+)",
                           out)
        check(len(ranks) == tp, f"{name} TP {tp} {kv_dtype} KV: {len(ranks)} rank lines in the plan")
        if not ranks:
            print(out[-2000:])
            continue
        expect_w = total * 2 / tp
        for rank, w, wu, kv, kvu, block in ranks:
            got_w = float(w) * UNITS[wu]
            check(abs(got_w - expect_w) / expect_w < 0.01,
                  f"{name} TP {tp} rank {rank}: weights {got_w / 1e9:.2f} GB vs the arithmetic's {expect_w / 1e9:.2f} GB")
            m = arith.MODELS[name]
            # Iris's CPU backend keeps K and V in its compute dtype (F32: 4 bytes an element), or
            # in FP8 E4M3 (1 byte) with --kv-cache-dtype fp8.
            expect_kv = 2 * m["L"] * max(1, m["nkv"] // tp) * m["hd"] * int(block) * (1 if kv_dtype == "fp8" else 4)
            got_kv = float(kv) * UNITS[kvu]
            check(abs(got_kv - expect_kv) <= 0.06 * UNITS[kvu],
                  f"{name} TP {tp} {kv_dtype} KV rank {rank}: KV {got_kv:.0f} B per block vs {expect_kv} B")
        check(r.returncode == 1 and "the model does not fit" in out,
              f"{name} TP {tp}: refused (exit {r.returncode}) with the numbers")

# The docs carry exactly the script's table.
table = subprocess.run([sys.executable, os.path.join(root, "tools", "plan", "large_model_arithmetic.py")],
                       capture_output=True, text=True, check=True).stdout
docs = open(os.path.join(root, "docs", "scaling.md")).read()
rows = [line for line in table.splitlines() if line.startswith("| ")]
check(len(rows) >= 12, f"{len(rows)} table rows from the script")
for line in rows:
    check(line in docs, f"docs/scaling.md has: {line[:60]}...")

print(f"{failures} failed")
sys.exit(1 if failures else 0)
