#!/usr/bin/env python3
"""Builds small random Gemma 3 text checkpoints (Gemma3ForCausalLM: the Hub's tensor names,
config.json fields and generation_config.json) and their greedy reference outputs from
reference_gemma3.py, in the fixtures.json format check_generate.py reads.

Every Gemma switch is exercised: the sliding window (8) is shorter than the longer prompts,
so local and global layers differ; the global layers' RoPE has linear scaling and a base
other than the local one; query_pre_attn_scalar differs from head_dim, and head_dim from
hidden_size / num_attention_heads; the final logits are soft-capped at a value the logits
reach; attn_logit_softcapping is set low enough that applying it (transformers does not)
would change the outputs; sqrt(96) is not a bfloat16, so the bf16 checkpoint checks the
scale's rounding; one checkpoint picks its global layers by sliding_window_pattern, the
other by layer_types.

usage: make_gemma3.py OUT_DIR
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_gemma3  # noqa: E402
from make_checkpoints import DTYPES, write_fixtures, write_safetensors  # noqa: E402

TEXT = dict(architectures=["Gemma3ForCausalLM"], model_type="gemma3_text", vocab_size=320,
            hidden_size=96, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, hidden_activation="gelu_pytorch_tanh",
            max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1000000.0,
            rope_local_base_freq=10000.0, rope_scaling=dict(rope_type="linear", factor=4.0),
            query_pre_attn_scalar=24, sliding_window=8, final_logit_softcapping=3.0,
            attn_logit_softcapping=1.5, attention_bias=False, tie_word_embeddings=True,
            bos_token_id=2, eos_token_id=1, pad_token_id=0)

MODELS = {
    # Global layers by pattern: layers 2 (and a 3-pattern's 5th) are full attention.
    "gemma3-f32": ("f32", dict(sliding_window_pattern=3)),
    # Global layers listed: 0 and 3.
    "gemma3-bf16": ("bf16", dict(layer_types=["full_attention", "sliding_attention",
                                              "sliding_attention", "full_attention"])),
}
PROMPT_LENGTHS = [1, 7, 33, 100]
NEW_TOKENS = 12


def text_weights(c, gen, prefix="model."):
    """Gemma3ForCausalLM's tensors (tied head) in the Hub's names; RMSNorm weights are
    stored as offsets from 1, as Gemma stores them."""
    H, I, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    nh, nkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]

    def rnd(*shape, std):
        return torch.randn(*shape, generator=gen) * std

    W = {prefix + "embed_tokens.weight": rnd(V, H, std=0.3), prefix + "norm.weight": rnd(H, std=0.2)}
    for l in range(c["num_hidden_layers"]):
        p = f"{prefix}layers.{l}."
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            W[p + n + ".weight"] = rnd(H, std=0.2)
        W[p + "self_attn.q_proj.weight"] = rnd(nh * hd, H, std=0.2)
        W[p + "self_attn.k_proj.weight"] = rnd(nkv * hd, H, std=0.2)
        W[p + "self_attn.v_proj.weight"] = rnd(nkv * hd, H, std=0.2)
        W[p + "self_attn.o_proj.weight"] = rnd(H, nh * hd, std=0.15)
        W[p + "self_attn.q_norm.weight"] = rnd(hd, std=0.2)
        W[p + "self_attn.k_norm.weight"] = rnd(hd, std=0.2)
        W[p + "mlp.gate_proj.weight"] = rnd(I, H, std=0.15)
        W[p + "mlp.up_proj.weight"] = rnd(I, H, std=0.15)
        W[p + "mlp.down_proj.weight"] = rnd(H, I, std=0.1)
    return W


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    cases = []
    for mi, (name, (dname, extra)) in enumerate(MODELS.items()):
        cfg = dict(TEXT, **extra)
        gen = torch.Generator().manual_seed(4321 + mi)
        W32 = text_weights(cfg, gen)
        prompts = [torch.randint(3, cfg["vocab_size"], (n,), generator=gen).tolist()
                   for n in PROMPT_LENGTHS]
        dtype, st_dtype = DTYPES[dname]
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        c = dict(cfg, torch_dtype={"f32": "float32", "bf16": "bfloat16"}[dname])
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
        with open(os.path.join(d, "generation_config.json"), "w") as f:
            json.dump({"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0}, f, indent=2)
        write_safetensors(os.path.join(d, "model.safetensors"), W32, st_dtype, dtype)
        Wd = {k: v.to(dtype).float() for k, v in W32.items()}
        for prompt in prompts:
            ids, lps = reference_gemma3.greedy(c, Wd, prompt, NEW_TOKENS, embed_dtype=dtype)
            cases.append({"model": name, "prompt_ids": prompt, "output_ids": ids, "logprobs": lps})
        # The switches must matter on these fixtures: each changed alone moves the outputs.
        prompt = prompts[-1]
        base = reference_gemma3.forward(c, Wd, prompt, embed_dtype=dtype)
        for what, over, kw in (("attention soft-cap applied", {}, dict(attn_softcap=True)),
                               ("no sliding window", dict(sliding_window=4096), {}),
                               ("no final soft-cap", dict(final_logit_softcapping=None), {}),
                               ("unscaled global RoPE", dict(rope_scaling=None), {})):
            alt = reference_gemma3.forward(dict(c, **over), Wd, prompt, embed_dtype=dtype, **kw)
            delta = float((torch.log_softmax(alt, -1) - torch.log_softmax(base, -1)).abs().max())
            assert delta > 1e-2, f"{name}: '{what}' changes logprobs by only {delta:.2e}"
    write_fixtures(out, "tests/parity/reference_gemma3.py (independent PyTorch)", NEW_TOKENS, cases)


if __name__ == "__main__":
    main()
