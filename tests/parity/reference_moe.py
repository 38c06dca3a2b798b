#!/usr/bin/env python3
"""Independent PyTorch reference for the mixture-of-experts architectures (Mixtral,
Qwen2-MoE, Qwen3-MoE), written from the semantics of Hugging Face transformers' sparse MoE
blocks: router logits in the hidden dtype, softmax in float32, torch.topk, optional
renormalisation (Mixtral always; Qwen: norm_topk_prob), weights cast back to the hidden
dtype, then a loop over experts that gathers the tokens routed to each (one-hot mask,
torch.where), runs the SwiGLU expert on them, scales by the routing weight and index_add_s
the result; Qwen2-MoE adds a shared expert scaled by sigmoid(shared_expert_gate(x)). Which
layers are sparse follows decoder_sparse_step and mlp_only_layers. Attention, norms and the
LM head are reference_llama.py's. Shares no code with the C++ engine.
"""
import torch
import torch.nn.functional as F

import reference_llama

MOE_ARCHS = ("MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM")


def is_sparse_layer(cfg, layer):
    if cfg["architectures"][0] == "MixtralForCausalLM":
        return True
    return (layer not in cfg.get("mlp_only_layers", [])
            and cfg["num_experts"] > 0
            and (layer + 1) % cfg.get("decoder_sparse_step", 1) == 0)


def block_names(cfg, layer):
    """(router, expert prefix, (gate, up, down) suffixes, shared prefix or None, shared gate)."""
    p = f"model.layers.{layer}."
    if cfg["architectures"][0] == "MixtralForCausalLM":
        return (p + "block_sparse_moe.gate.weight", p + "block_sparse_moe.experts.",
                ("w1.weight", "w3.weight", "w2.weight"), None, None)
    shared = cfg["architectures"][0] == "Qwen2MoeForCausalLM"
    return (p + "mlp.gate.weight", p + "mlp.experts.",
            ("gate_proj.weight", "up_proj.weight", "down_proj.weight"),
            p + "mlp.shared_expert." if shared else None,
            p + "mlp.shared_expert_gate.weight" if shared else None)


def swiglu(x, gate_w, up_w, down_w):
    return (F.silu(x @ gate_w.T) * (x @ up_w.T)) @ down_w.T


def route(cfg, router_logits):
    """(routing weights [T, k] in the hidden dtype, selected experts [T, k])."""
    arch = cfg["architectures"][0]
    if arch == "MixtralForCausalLM":
        top_k, renorm = cfg["num_experts_per_tok"], True
    else:
        top_k, renorm = cfg["num_experts_per_tok"], cfg.get("norm_topk_prob", False)
    weights = F.softmax(router_logits, dim=1, dtype=torch.float)
    weights, selected = torch.topk(weights, top_k, dim=-1)
    if renorm:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(router_logits.dtype), selected


class Recorder:
    """Collects the experts every sparse layer selected (for checking edge-case fixtures)."""

    def __init__(self):
        self.selected = {}  # layer -> list of [T, k] tensors

    def add(self, layer, selected):
        self.selected.setdefault(layer, []).append(selected.clone())


def sparse_block(cfg, W, layer, h, recorder=None):
    if not is_sparse_layer(cfg, layer):
        return None
    arch = cfg["architectures"][0]
    num_experts = cfg["num_local_experts"] if arch == "MixtralForCausalLM" else cfg["num_experts"]
    router, experts, (g, u, d), shared, shared_gate = block_names(cfg, layer)
    router_logits = h @ W[router].T
    weights, selected = route(cfg, router_logits)
    if recorder is not None:
        recorder.add(layer, selected)
    out = torch.zeros_like(h)
    mask = F.one_hot(selected, num_classes=num_experts).permute(2, 1, 0)  # [E, k, T]
    for e in range(num_experts):
        idx, top_x = torch.where(mask[e])
        if top_x.numel() == 0:
            continue
        p = experts + f"{e}."
        y = swiglu(h[top_x], W[p + g], W[p + u], W[p + d]) * weights[top_x, idx, None]
        out.index_add_(0, top_x, y.to(h.dtype))
    if shared:
        s = swiglu(h, W[shared + "gate_proj.weight"], W[shared + "up_proj.weight"],
                   W[shared + "down_proj.weight"])
        out = out + torch.sigmoid(h @ W[shared_gate].T) * s
    return out


def greedy(cfg, W, prompt, n, recorder=None):
    return reference_llama.greedy(
        cfg, W, prompt, n, lambda c, w, l, h: sparse_block(c, w, l, h, recorder))
