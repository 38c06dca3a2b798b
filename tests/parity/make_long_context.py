#!/usr/bin/env python3
"""Long-context parity fixtures: prompts of 2,100 to 3,000 tokens (well past the rope
scaling's original context, over many KV blocks) on small random checkpoints with llama3
and linear rope scaling, with greedy reference outputs from reference_llama.py (independent
PyTorch, no KV cache: every step recomputes the whole sequence). Same fixtures.json format
as make_checkpoints.py, so check_generate.py runs them.

usage: make_long_context.py OUT_DIR
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_checkpoints  # noqa: E402
import reference_llama  # noqa: E402

BASE = dict(make_checkpoints.BASE, max_position_embeddings=4096)

MODELS = {
    # Llama 3.1-style scaling: the original context (512) is a quarter of the prompt, so low
    # and medium frequencies are both rescaled and long-range positions matter.
    "llama3-long": dict(architectures=["LlamaForCausalLM"], model_type="llama",
                        num_key_value_heads=2, rope_theta=500000.0, tie_word_embeddings=False,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0,
                                          original_max_position_embeddings=512)),
    # Linear (position-interpolation) scaling on a Qwen2-shaped model with q/k/v biases.
    "qwen2-linear-long": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2",
                              num_key_value_heads=4, rope_theta=10000.0, tie_word_embeddings=True,
                              use_sliding_window=False, sliding_window=4096,
                              rope_scaling=dict(type="linear", factor=4.0)),
}

PROMPT_LENGTHS = {"llama3-long": [2100, 3000], "qwen2-linear-long": [2100]}
NEW_TOKENS = 5


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(2)
    cases = []
    for mi, (name, extra) in enumerate(MODELS.items()):
        cfg = dict(BASE, torch_dtype="float32", **extra)
        gen = torch.Generator().manual_seed(777 + mi)
        W = make_checkpoints.make_weights(cfg, gen)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        with open(os.path.join(d, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2)
        make_checkpoints.write_safetensors(os.path.join(d, "model.safetensors"), W, "F32",
                                           torch.float32)
        for n in PROMPT_LENGTHS[name]:
            prompt = torch.randint(3, cfg["vocab_size"], (n,), generator=gen).tolist()
            ids, lps = reference_llama.greedy(cfg, W, prompt, NEW_TOKENS)
            cases.append({"model": name, "prompt_ids": prompt, "output_ids": ids, "logprobs": lps})
    make_checkpoints.write_fixtures(out, "tests/parity/reference_llama.py (independent PyTorch)",
                                    NEW_TOKENS, cases)


if __name__ == "__main__":
    main()
