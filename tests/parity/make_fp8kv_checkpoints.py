#!/usr/bin/env python3
"""Fixtures for the FP8 KV cache (`iris generate --kv-cache-dtype fp8`).

usage: make_fp8kv_checkpoints.py OUT_DIR

Writes small random fp32 checkpoints (make_checkpoints.py's weights) and the greedy outputs
of reference_llama.py with K (after RoPE) and V rounded through FP8 E4M3 as vLLM's FP8 KV
cache does (reference_fp8.py, from the OCP spec):
  fp8kv-llama         GQA 4:2, no scale tensors: every scale is 1
  fp8kv-qwen3-scales  q/k norm, per-layer self_attn.k_scale / v_scale scalar tensors as
                      compressed-tensors kv_cache_scheme checkpoints store them; scales small
                      enough that some K/V values saturate at ±448 * scale
  fp8kv-qwen3-ct      the same weights and scales with the quantization_config a KV-cache-only
                      compressed-tensors checkpoint carries (kv_cache_scheme, no weight groups)
Each case also records the reference with an unquantized (fp32) cache, so the check can
show the FP8 result is a different one (fp8 being ignored would fail the test).
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_checkpoints as mc  # noqa: E402
import reference_llama  # noqa: E402

PROMPT_LENGTHS = [5, 40, 100]
NEW_TOKENS = 10
# (k_scale, v_scale) per layer for the checkpoint that carries them.
SCALES = [(0.0125, 0.004), (0.02, 0.0025)]

MODELS = {
    "fp8kv-llama": (dict(mc.BASE, **mc.ARCHS["llama"]), 4321, None),
    "fp8kv-qwen3-scales": (dict(mc.BASE, **mc.ARCHS["qwen3"]), 4322, SCALES),
    "fp8kv-qwen3-ct": (dict(mc.BASE, **mc.ARCHS["qwen3"]), 4322, SCALES),
}
# compressed-tensors' config for FP8 E4M3 K/V with static per-layer (tensor) scales.
KV_ONLY_QUANTIZATION = {
    "quant_method": "compressed-tensors", "format": "dense", "quantization_status": "compressed",
    "config_groups": {}, "ignore": [],
    "kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False,
                        "symmetric": True, "group_size": None, "block_structure": None,
                        "actorder": None, "observer": "minmax", "observer_kwargs": {}},
}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    cases = []
    for name, (cfg, seed, scales) in MODELS.items():
        gen = torch.Generator().manual_seed(seed)
        W = mc.make_weights(cfg, gen)
        prompts = [torch.randint(3, cfg["vocab_size"], (n,), generator=gen).tolist()
                   for n in PROMPT_LENGTHS]
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            extra = {"quantization_config": KV_ONLY_QUANTIZATION} if name.endswith("-ct") else {}
            json.dump(dict(cfg, torch_dtype="float32", **extra), f, indent=2)
        entries = {k: ("F32", tuple(v.shape), mc.tensor_bytes(v, torch.float32)) for k, v in W.items()}
        if scales:
            for l, (ks, vs) in enumerate(scales):
                p = f"model.layers.{l}.self_attn."
                # Scalar (shape []) F32 tensors, as llm-compressor writes them.
                entries[p + "k_scale"] = ("F32", (), mc.tensor_bytes(torch.tensor(ks), torch.float32))
                entries[p + "v_scale"] = ("F32", (), mc.tensor_bytes(torch.tensor(vs), torch.float32))
        mc.write_safetensors_raw(os.path.join(d, "model.safetensors"), entries)
        layer_scales = scales or [(1.0, 1.0)] * cfg["num_hidden_layers"]
        for prompt in prompts:
            ids, lps = reference_llama.greedy(cfg, W, prompt, NEW_TOKENS, kv_fp8_scales=layer_scales)
            ids32, lps32 = reference_llama.greedy(cfg, W, prompt, NEW_TOKENS)
            cases.append({"model": name, "prompt_ids": prompt, "output_ids": ids, "logprobs": lps,
                          "unquantized_output_ids": ids32, "unquantized_logprobs": lps32})
    mc.write_fixtures(out, "tests/parity/reference_llama.py with FP8 E4M3 K/V (reference_fp8.py)",
                      NEW_TOKENS, cases)


if __name__ == "__main__":
    main()
