#!/usr/bin/env python3
"""Writes two random-weight checkpoints with the same active parameters per token, for
comparing a mixture-of-experts model with a dense one (BF16 storage):

  OUT_DIR/moe    Qwen3MoeForCausalLM: 32 experts, top-4, moe_intermediate_size 512
  OUT_DIR/dense  Qwen3ForCausalLM: intermediate_size 2048 (= 4 x 512)

Both: hidden 768, 12 layers, 12 heads / 4 KV heads (head_dim 64, q/k norm), vocabulary
32000: ~125M active parameters per token; the MoE model holds ~530M in all.

usage: make_random_moe.py OUT_DIR [--experts 32] [--top-k 4] [--moe-intermediate 512]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_random_llama import write_random_bf16  # noqa: E402

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--top-k", type=int, default=4)
    ap.add_argument("--moe-intermediate", type=int, default=512)
    a = ap.parse_args()
    H, L, nh, nkv, hd, V = 768, 12, 12, 4, 64, 32000
    dense_inter = a.top_k * a.moe_intermediate
    base = {"vocab_size": V, "hidden_size": H, "num_hidden_layers": L,
            "num_attention_heads": nh, "num_key_value_heads": nkv, "head_dim": hd,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 4096,
            "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
            "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
    common = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,),
              "lm_head.weight": (V, H)}
    for l in range(L):
        p = f"model.layers.{l}."
        common.update({p + "input_layernorm.weight": (H,),
                       p + "post_attention_layernorm.weight": (H,),
                       p + "self_attn.q_proj.weight": (nh * hd, H),
                       p + "self_attn.k_proj.weight": (nkv * hd, H),
                       p + "self_attn.v_proj.weight": (nkv * hd, H),
                       p + "self_attn.o_proj.weight": (H, nh * hd),
                       p + "self_attn.q_norm.weight": (hd,),
                       p + "self_attn.k_norm.weight": (hd,)})
    dense = dict(common)
    moe = dict(common)
    for l in range(L):
        p = f"model.layers.{l}.mlp."
        dense.update({p + "gate_proj.weight": (dense_inter, H), p + "up_proj.weight": (dense_inter, H),
                      p + "down_proj.weight": (H, dense_inter)})
        moe[p + "gate.weight"] = (a.experts, H)
        for e in range(a.experts):
            q = p + f"experts.{e}."
            moe.update({q + "gate_proj.weight": (a.moe_intermediate, H),
                        q + "up_proj.weight": (a.moe_intermediate, H),
                        q + "down_proj.weight": (H, a.moe_intermediate)})
    n_dense = write_random_bf16(os.path.join(a.out, "dense"),
                    dict(base, architectures=["Qwen3ForCausalLM"], model_type="qwen3",
                         intermediate_size=dense_inter), dense, seed=0)
    n_moe = write_random_bf16(os.path.join(a.out, "moe"),
                  dict(base, architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe",
                       intermediate_size=dense_inter, moe_intermediate_size=a.moe_intermediate,
                       num_experts=a.experts, num_experts_per_tok=a.top_k, norm_topk_prob=True,
                       decoder_sparse_step=1, mlp_only_layers=[]), moe, seed=1)
    active = n_moe - L * (a.experts - a.top_k) * 3 * H * a.moe_intermediate
    print(f"dense {n_dense / 1e6:.1f}M parameters; moe {n_moe / 1e6:.1f}M parameters, "
          f"{active / 1e6:.1f}M active per token -> {a.out}")


if __name__ == "__main__":
    main()
