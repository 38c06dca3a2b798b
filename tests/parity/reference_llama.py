#!/usr/bin/env python3
"""Independent PyTorch reference for the Llama family (Llama, Mistral, Qwen2, Qwen3).

Written in the shape of Hugging Face transformers' modeling code (separate q/k/v
projections, repeat_kv, rotate_half, an explicit causal/sliding-window mask) and run
without any KV cache: every greedy step recomputes the whole sequence. It shares no code
with the C++ engine. It stands in for transformers itself on hosts that lack it; see
tools/parity/hf_fixtures.py for the transformers-generated fixtures.
"""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_fp8  # noqa: E402


def rope_inv_freq(cfg, dim):
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "linear":
        return inv / rs["factor"]
    if kind == "llama3":
        factor = rs["factor"]
        lo, hi = rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        lo_wl, hi_wl = old / lo, old / hi
        wavelen = 2 * math.pi / inv
        out = torch.where(wavelen > lo_wl, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * out / factor + smooth * out
        medium = ~(wavelen < hi_wl) * ~(wavelen > lo_wl)
        return torch.where(medium, smoothed, out)
    return inv


def rms_norm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, W, ids, mlp_block=None, kv_fp8_scales=None):
    """Logits [len(ids), vocab] for the token list `ids` (fp32). `mlp_block(cfg, W, l, h)`,
    when given, computes the MLP output of layer l for the normed hidden states h, or
    returns None for the dense MLP (reference_moe.py plugs its sparse blocks in here).
    `kv_fp8_scales`, when given, is a (k_scale, v_scale) per layer: K (after RoPE) and V
    are rounded through FP8 E4M3 with those scales before attention, as vLLM's
    kv_cache_dtype="fp8" cache stores and reads them."""
    arch = cfg["architectures"][0]
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    T = len(ids)
    pos = torch.arange(T, dtype=torch.float32)
    inv = rope_inv_freq(cfg, hd)
    freqs = pos[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()

    window = None
    if arch in ("MistralForCausalLM", "MixtralForCausalLM"):
        window = cfg.get("sliding_window")
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allowed = j <= i
    if window:
        allowed = allowed & (j > i - window)
    mask = torch.zeros(T, T).masked_fill(~allowed, float("-inf"))

    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)

        def proj(name):
            y = h @ W[p + f"self_attn.{name}.weight"].T
            b = W.get(p + f"self_attn.{name}.bias")
            return y + b if b is not None else y

        q = proj("q_proj").view(T, nh, hd).transpose(0, 1)
        k = proj("k_proj").view(T, nkv, hd).transpose(0, 1)
        v = proj("v_proj").view(T, nkv, hd).transpose(0, 1)
        if arch in ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM"):
            q = rms_norm(q, W[p + "self_attn.q_norm.weight"], eps)
            k = rms_norm(k, W[p + "self_attn.k_norm.weight"], eps)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if kv_fp8_scales is not None:
            k_scale, v_scale = kv_fp8_scales[l]
            k = reference_fp8.quantize_kv(k, k_scale)
            v = reference_fp8.quantize_kv(v, v_scale)
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=0)
        v = v.repeat_interleave(rep, dim=0)
        scores = (q @ k.transpose(1, 2)) * (hd ** -0.5) + mask
        attn = torch.softmax(scores.float(), dim=-1) @ v
        attn = attn.transpose(0, 1).reshape(T, nh * hd)
        o = attn @ W[p + "self_attn.o_proj.weight"].T
        if p + "self_attn.o_proj.bias" in W:
            o = o + W[p + "self_attn.o_proj.bias"]
        x = x + o
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)

        def mlp(name, inp):
            y = inp @ W[p + f"mlp.{name}.weight"].T
            b = W.get(p + f"mlp.{name}.bias")
            return y + b if b is not None else y

        sparse = mlp_block(cfg, W, l, h) if mlp_block else None
        if sparse is not None:
            x = x + sparse
            continue
        g = mlp("gate_proj", h)
        u = mlp("up_proj", h)
        x = x + mlp("down_proj", torch.nn.functional.silu(g) * u)
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    return x @ head.T


def greedy(cfg, W, prompt, n, mlp_block=None, kv_fp8_scales=None):
    ids = list(prompt)
    out, lps = [], []
    for _ in range(n):
        logits = forward(cfg, W, ids, mlp_block, kv_fp8_scales)[-1]
        tok = int(torch.argmax(logits))
        lps.append(float(torch.log_softmax(logits, dim=-1)[tok]))
        out.append(tok)
        ids.append(tok)
    return out, lps
