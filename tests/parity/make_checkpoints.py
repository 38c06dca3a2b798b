#!/usr/bin/env python3
"""Builds small random checkpoints of every supported architecture in every storage dtype
(real safetensors + config.json + generation_config.json, one of them sharded with
model.safetensors.index.json) and writes greedy reference outputs from
reference_llama.py (dense) and reference_moe.py (mixture of experts) to fixtures.json.
Tensor names, dtypes and shapes are the Hub's; router edge cases (exact ties, experts that
receive no token, every token routed to one expert) have checkpoints of their own.

usage: make_checkpoints.py OUT_DIR
"""
import json
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_llama  # noqa: E402
import reference_moe  # noqa: E402

DTYPES = {"f32": (torch.float32, "F32"), "f16": (torch.float16, "F16"), "bf16": (torch.bfloat16, "BF16")}

BASE = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, rms_norm_eps=1e-5, max_position_embeddings=256,
            hidden_act="silu", bos_token_id=1, eos_token_id=2)

ARCHS = {
    # GQA 4:2 with llama3 rope scaling whose original context is short enough to matter.
    "llama": dict(architectures=["LlamaForCausalLM"], model_type="llama", num_key_value_heads=2,
                  rope_theta=500000.0, tie_word_embeddings=False,
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                    high_freq_factor=4.0, original_max_position_embeddings=64)),
    # MQA with a sliding window shorter than the longest prompt.
    "mistral": dict(architectures=["MistralForCausalLM"], model_type="mistral",
                    num_key_value_heads=1, rope_theta=10000.0, sliding_window=24,
                    tie_word_embeddings=False),
    # MHA, q/k/v biases, tied embeddings.
    "qwen2": dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", num_key_value_heads=4,
                  rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
                  sliding_window=32),
    # head_dim set explicitly (not hidden/heads), per-head q/k norm, GQA 4:2.
    "qwen3": dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", num_key_value_heads=2,
                  head_dim=32, rope_theta=1000000.0, tie_word_embeddings=False,
                  attention_bias=False),
}

# Mixture of experts. Expert counts that 2 and 4 ranks divide unevenly (6) under expert
# parallelism, and intermediate sizes they divide without it.
MOE_ARCHS = {
    # 8 experts, top-2, always renormalised; w1/w3/w2 names.
    "mixtral": dict(architectures=["MixtralForCausalLM"], model_type="mixtral",
                    num_key_value_heads=2, intermediate_size=32, num_local_experts=8,
                    num_experts_per_tok=2, rope_theta=1000000.0, sliding_window=None,
                    tie_word_embeddings=False),
    # Shared expert with its sigmoid gate, q/k/v biases, every second layer sparse
    # (decoder_sparse_step 2), weights not renormalised, 6 experts.
    "qwen2moe": dict(architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe",
                     num_hidden_layers=4, num_key_value_heads=4, moe_intermediate_size=32,
                     shared_expert_intermediate_size=64, num_experts=6, num_experts_per_tok=2,
                     norm_topk_prob=False, decoder_sparse_step=2, mlp_only_layers=[],
                     rope_theta=1000000.0, tie_word_embeddings=True, use_sliding_window=False,
                     sliding_window=32),
    # q/k norm, renormalised top-4 of 16, layer 1 dense through mlp_only_layers.
    "qwen3moe": dict(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe",
                     num_hidden_layers=3, num_key_value_heads=2, head_dim=32,
                     moe_intermediate_size=32, num_experts=16, num_experts_per_tok=4,
                     norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[1],
                     rope_theta=1000000.0, tie_word_embeddings=False, attention_bias=False),
}
# Router edge cases: (base MoE arch, config overrides, router edits {layer: edit}).
#   zero: all router logits 0, so every token ties across all experts and torch.topk's
#         choice sends all of them to the same experts; the rest receive no token.
#   dup:  router rows 5, 6 copy rows 1, 2: every token sees exact ties between those pairs.
MOE_EDGE = {
    "mixtral-ties": ("mixtral", {}, {0: "zero", 1: "dup"}),
    "qwen3moe-top1": ("qwen3moe", {"num_experts_per_tok": 1, "norm_topk_prob": False},
                      {0: "zero", 2: "dup"}),
}
MOE_DTYPES = ("f32", "bf16")

PROMPT_LENGTHS = [1, 7, 33, 100]
NEW_TOKENS = 12


def make_weights(cfg, gen):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    arch = cfg["architectures"][0]

    def rnd(*shape, std):
        return torch.randn(*shape, generator=gen) * std

    def norm(n):
        return 1.0 + rnd(n, std=0.1)

    W = {"model.embed_tokens.weight": rnd(V, H, std=1.0), "model.norm.weight": norm(H)}
    if not cfg.get("tie_word_embeddings"):
        W["lm_head.weight"] = rnd(V, H, std=0.3)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        sparse = arch in reference_moe.MOE_ARCHS and reference_moe.is_sparse_layer(cfg, l)
        W[p + "input_layernorm.weight"] = norm(H)
        W[p + "post_attention_layernorm.weight"] = norm(H)
        W[p + "self_attn.q_proj.weight"] = rnd(nh * hd, H, std=0.25)
        W[p + "self_attn.k_proj.weight"] = rnd(nkv * hd, H, std=0.25)
        W[p + "self_attn.v_proj.weight"] = rnd(nkv * hd, H, std=0.25)
        W[p + "self_attn.o_proj.weight"] = rnd(H, nh * hd, std=0.15)
        if arch == "Qwen2ForCausalLM":
            W[p + "self_attn.q_proj.bias"] = rnd(nh * hd, std=0.2)
            W[p + "self_attn.k_proj.bias"] = rnd(nkv * hd, std=0.2)
            W[p + "self_attn.v_proj.bias"] = rnd(nkv * hd, std=0.2)
        if arch == "Qwen3ForCausalLM":
            W[p + "self_attn.q_norm.weight"] = norm(hd)
            W[p + "self_attn.k_norm.weight"] = norm(hd)
        if arch == "Qwen2MoeForCausalLM":
            W[p + "self_attn.q_proj.bias"] = rnd(nh * hd, std=0.2)
            W[p + "self_attn.k_proj.bias"] = rnd(nkv * hd, std=0.2)
            W[p + "self_attn.v_proj.bias"] = rnd(nkv * hd, std=0.2)
        if arch == "Qwen3MoeForCausalLM":
            W[p + "self_attn.q_norm.weight"] = norm(hd)
            W[p + "self_attn.k_norm.weight"] = norm(hd)
        if sparse:
            W.update(make_moe_layer(cfg, l, rnd))
            continue
        W[p + "mlp.gate_proj.weight"] = rnd(I, H, std=0.15)
        W[p + "mlp.up_proj.weight"] = rnd(I, H, std=0.15)
        W[p + "mlp.down_proj.weight"] = rnd(H, I, std=0.1)
    return W


def make_moe_layer(cfg, layer, rnd):
    """One sparse block's tensors in the Hub's names and shapes."""
    H = cfg["hidden_size"]
    arch = cfg["architectures"][0]
    E = cfg["num_local_experts"] if arch == "MixtralForCausalLM" else cfg["num_experts"]
    I = cfg["intermediate_size"] if arch == "MixtralForCausalLM" else cfg["moe_intermediate_size"]
    router, experts, (g, u, d), shared, shared_gate = reference_moe.block_names(cfg, layer)
    W = {router: rnd(E, H, std=0.3)}
    for e in range(E):
        p = experts + f"{e}."
        W[p + g] = rnd(I, H, std=0.15)
        W[p + u] = rnd(I, H, std=0.15)
        W[p + d] = rnd(H, I, std=0.1)
    if shared:
        S = cfg["shared_expert_intermediate_size"]
        W[shared + "gate_proj.weight"] = rnd(S, H, std=0.15)
        W[shared + "up_proj.weight"] = rnd(S, H, std=0.15)
        W[shared + "down_proj.weight"] = rnd(H, S, std=0.1)
        W[shared_gate] = rnd(1, H, std=0.3)
    return W


def edit_routers(cfg, W, edits):
    for layer, kind in edits.items():
        router = reference_moe.block_names(cfg, layer)[0]
        if kind == "zero":
            W[router] = torch.zeros_like(W[router])
        elif kind == "dup":
            W[router][5] = W[router][1]
            W[router][6] = W[router][2]


def check_edge_routing(name, cfg, edits, recorder):
    """The edge-case fixtures must really exercise the edge cases."""
    E = cfg["num_local_experts"] if "num_local_experts" in cfg else cfg["num_experts"]
    for layer, kind in edits.items():
        sel = torch.cat(recorder.selected[layer])
        if kind == "zero":
            rows = {tuple(r) for r in sel.tolist()}
            assert len(rows) == 1, f"{name} layer {layer}: tokens not routed alike: {rows}"
            assert len(set(sel.flatten().tolist())) < E, f"{name}: every expert got a token"
            if sel.shape[1] == 1:
                print(f"{name} layer {layer}: every token routed to expert {sel[0, 0].item()}")
        else:
            tied = ((sel == 1) | (sel == 5) | (sel == 2) | (sel == 6)).any(dim=1).sum().item()
            assert tied > 0, f"{name} layer {layer}: no token chose a tied expert"


def tensor_bytes(t, dtype):
    t = t.to(dtype).contiguous()
    if dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors_raw(path, entries):
    """entries: name -> (safetensors dtype, shape, little-endian bytes); written sorted by name."""
    header, blobs, off = {}, [], 0
    for name in sorted(entries):
        st_dtype, shape, b = entries[name]
        header[name] = {"dtype": st_dtype, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_safetensors(path, tensors, st_dtype, dtype):
    """Float tensors, all stored as one dtype."""
    write_safetensors_raw(path, {name: (st_dtype, t.shape, tensor_bytes(t, dtype))
                                 for name, t in tensors.items()})


def write_byte_level_tokenizer(d, specials, tokenizer_config):
    """tokenizer.json of a byte-level BPE without merges (byte b is token 3 + b, spelled with
    GPT-2's byte -> printable character table) plus `specials` {id: text} as special added
    tokens, and tokenizer_config.json = `tokenizer_config`."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "tools", "train_default_model"))
    from train import BYTE_ENCODER as table  # noqa: E402
    vocab = {table[b]: 3 + b for b in range(256)}
    vocab.update({v: k for k, v in specials.items()})
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, c in sorted(specials.items())],
        "normalizer": None, "pre_tokenizer": byte_level, "post_processor": None,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []},
    }
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config, f)


def write_fixtures(out, reference, max_tokens, cases, **extra):
    """fixtures.json as check_generate.py reads it."""
    with open(os.path.join(out, "fixtures.json"), "w") as f:
        json.dump(dict({"reference": reference, "max_tokens": max_tokens, "cases": cases}, **extra), f)
    print(f"wrote {len(cases)} cases to {out}/fixtures.json")


def all_models():
    """(name, config, seed, dtypes, router edits) of every fixture checkpoint."""
    for ai, (arch, extra) in enumerate(ARCHS.items()):
        yield arch, dict(BASE, **extra), 1234 + ai, tuple(DTYPES), {}
    for ai, (arch, extra) in enumerate(MOE_ARCHS.items()):
        yield arch, dict(BASE, **extra), 2234 + ai, MOE_DTYPES, {}
    for ai, (name, (base, over, edits)) in enumerate(MOE_EDGE.items()):
        yield name, dict(BASE, **{**MOE_ARCHS[base], **over}), 3234 + ai, ("f32",), edits


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    cases = []
    for arch, cfg, seed, dtypes, edits in all_models():
        gen = torch.Generator().manual_seed(seed)
        W32 = make_weights(cfg, gen)
        edit_routers(cfg, W32, edits)
        moe = cfg["architectures"][0] in reference_moe.MOE_ARCHS
        recorder = reference_moe.Recorder() if moe else None
        prompts = [torch.randint(3, cfg["vocab_size"], (n,), generator=gen).tolist()
                   for n in PROMPT_LENGTHS]
        for dname in dtypes:
            dtype, st_dtype = DTYPES[dname]
            name = f"{arch}-{dname}"
            d = os.path.join(out, name)
            os.makedirs(d, exist_ok=True)
            c = dict(cfg, torch_dtype={"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[dname])
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(c, f, indent=2)
            with open(os.path.join(d, "generation_config.json"), "w") as f:
                json.dump({"bos_token_id": 1, "eos_token_id": [2, 3]}, f, indent=2)
            for fn in ("model.safetensors", "model.safetensors.index.json",
                       "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
                if os.path.exists(os.path.join(d, fn)):
                    os.remove(os.path.join(d, fn))
            if dname == "bf16":
                # Sharded: layers split across two files with an index.
                names = sorted(W32)
                half = len(names) // 2
                parts = [names[:half], names[half:]]
                weight_map = {}
                for pi, part in enumerate(parts):
                    fn = f"model-0000{pi + 1}-of-00002.safetensors"
                    write_safetensors(os.path.join(d, fn), {k: W32[k] for k in part}, st_dtype, dtype)
                    for k in part:
                        weight_map[k] = fn
                with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
                    json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)
            else:
                write_safetensors(os.path.join(d, "model.safetensors"), W32, st_dtype, dtype)
            # The reference computes in fp32 on the weights as stored.
            Wd = {k: v.to(dtype).float() for k, v in W32.items()}
            for prompt in prompts:
                if moe:
                    ids, lps = reference_moe.greedy(c, Wd, prompt, NEW_TOKENS, recorder)
                else:
                    ids, lps = reference_llama.greedy(c, Wd, prompt, NEW_TOKENS)
                cases.append({"model": name, "prompt_ids": prompt, "output_ids": ids, "logprobs": lps})
        if edits:
            check_edge_routing(arch, cfg, edits, recorder)
    write_fixtures(out, "tests/parity/reference_llama.py, reference_moe.py (independent PyTorch)",
                   NEW_TOKENS, cases)


if __name__ == "__main__":
    main()
