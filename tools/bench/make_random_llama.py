#!/usr/bin/env python3
"""Writes a random-weight Llama checkpoint of a given size for benchmarks (BF16 storage).

usage: make_random_llama.py OUT_DIR [--preset llama3-8b] [--hidden 768] [--layers 12] [--heads 12]
                            [--kv-heads 4] [--intermediate 2048] [--vocab 32000]
                            [--rope-theta 10000] [--max-position 4096]
Default shape: ~110M parameters. --preset llama3-8b: Llama-3-8B's shapes (hidden 4096, 32
layers, 32 heads, 8 KV heads, intermediate 14336, vocabulary 128256, rope theta 500000,
8192 positions; 8.0B parameters, 16 GB of BF16), the figures explicitly given win.
"""
import argparse
import json
import os
import struct

import numpy as np


DEFAULT = dict(hidden=768, layers=12, heads=12, kv_heads=4, intermediate=2048, vocab=32000,
               rope_theta=10000.0, max_position=4096)
CHUNK = 1 << 26
PRESETS = {
    "llama3-8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, intermediate=14336,
                      vocab=128256, rope_theta=500000.0, max_position=8192),
}


def write_random_bf16(out, cfg, shapes, seed):
    """Writes OUT/model.safetensors (BF16, N(0, 0.02); norms around 1) with `shapes` (name ->
    shape, in file order) and OUT/config.json; returns the parameter count."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    header, off, params = {}, 0, 0
    for name, shp in shapes.items():
        n = int(np.prod(shp))
        header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [off, off + 2 * n]}
        off += 2 * n
        params += n
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shp in shapes.items():
            n = int(np.prod(shp))
            for start in range(0, n, CHUNK):  # bounded memory for 8B-parameter shapes
                x = rng.standard_normal(min(CHUNK, n - start), dtype=np.float32) * 0.02
                if "norm" in name:
                    x = x + 1.0
                f.write((x.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return params


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--intermediate", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--rope-theta", type=float)
    ap.add_argument("--max-position", type=int)
    a = ap.parse_args()
    shape = dict(DEFAULT, **PRESETS.get(a.preset, {}))
    for k in DEFAULT:
        if getattr(a, k) is not None:
            shape[k] = getattr(a, k)
    for k, v in shape.items():
        setattr(a, k, v)
    os.makedirs(a.out, exist_ok=True)
    hd = a.hidden // a.heads
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": a.vocab,
           "hidden_size": a.hidden, "intermediate_size": a.intermediate,
           "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
           "num_key_value_heads": a.kv_heads, "rms_norm_eps": 1e-5, "rope_theta": a.rope_theta,
           "max_position_embeddings": a.max_position, "hidden_act": "silu", "tie_word_embeddings": False,
           "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
    shapes = {"model.embed_tokens.weight": (a.vocab, a.hidden), "model.norm.weight": (a.hidden,),
              "lm_head.weight": (a.vocab, a.hidden)}
    for l in range(a.layers):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": (a.hidden,),
                       p + "post_attention_layernorm.weight": (a.hidden,),
                       p + "self_attn.q_proj.weight": (a.heads * hd, a.hidden),
                       p + "self_attn.k_proj.weight": (a.kv_heads * hd, a.hidden),
                       p + "self_attn.v_proj.weight": (a.kv_heads * hd, a.hidden),
                       p + "self_attn.o_proj.weight": (a.hidden, a.heads * hd),
                       p + "mlp.gate_proj.weight": (a.intermediate, a.hidden),
                       p + "mlp.up_proj.weight": (a.intermediate, a.hidden),
                       p + "mlp.down_proj.weight": (a.hidden, a.intermediate)})
    params = write_random_bf16(a.out, cfg, shapes, seed=0)
    print(f"{params / 1e6:.1f}M parameters -> {a.out}")


if __name__ == "__main__":
    main()
