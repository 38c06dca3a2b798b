#!/usr/bin/env python3
"""Builds small random quantized checkpoints with the Hub's exact tensor names, dtypes and
shapes for every supported quantization format, and writes greedy reference outputs to
fixtures.json: each checkpoint is dequantized by reference_dequant.py (numpy, from the
formats' semantics) and run through reference_llama.py (PyTorch, fp32 activations).

Formats (config.json quantization_config):
  fp8-block      quant_method fp8, weight_block_size [128, 128], weight_scale_inv F32
                 (DeepSeek-V3 / Qwen3-FP8), dynamic activations
  fp8-ct-channel compressed-tensors float-quantized, channel weight_scale BF16 [out, 1],
                 dynamic per-token activations (llm-compressor FP8_DYNAMIC)
  fp8-ct-tensor  compressed-tensors float-quantized, tensor weight_scale F32 [1] and
                 static input_scale (llm-compressor FP8)
  fbgemm-fp8     fbgemm_fp8, weight_scale F32 [out, 1] (+ input_scale_ub)
  awq            AutoAWQ GEMM, 4-bit, group 64, F16 scales
  gptq           GPTQ v1 (zero - 1 stored), sym, group 32, g_idx = i // 32
  gptq-desc-act  GPTQ v1, asymmetric, desc_act with a permuted g_idx, group 32
  ct-w4a16       compressed-tensors pack-quantized, symmetric, group 64, BF16 scales
  ct-w4a16-asym  compressed-tensors pack-quantized, asymmetric (packed weight_zero_point)

Mixture of experts (reference_moe.py), quantized as the Hub's Qwen3-MoE-FP8 / AWQ MoE
checkpoints are: attention and every expert's projections quantized, the router
(mlp.gate / block_sparse_moe.gate) left in the float dtype:
  qwen3moe-fp8-block  Qwen3-MoE, fp8 128x128 blocks (expert shards cut the blocks)
  qwen3moe-awq        Qwen3-MoE, AWQ group 64
  mixtral-awq         Mixtral (w1/w2/w3 experts), AWQ group 64

usage: make_quant_checkpoints.py OUT_DIR
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_checkpoints  # noqa: E402
import reference_dequant as rd  # noqa: E402
import reference_llama  # noqa: E402
import reference_moe  # noqa: E402

# in = 256 or 320: 320 is not a multiple of 128, so FP8 blocks at the edge are partial.
CFG = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=320,
           hidden_size=256, intermediate_size=320, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=256,
           hidden_act="silu", bos_token_id=1, eos_token_id=2, rope_theta=10000.0,
           tie_word_embeddings=False)
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
# Experts of 128 intermediate features: 2 and 4 ranks cut them inside FP8 blocks and at or
# inside AWQ groups; layer 1 of the Qwen3-MoE model is dense (mlp_only_layers).
MOE_CFGS = {
    "qwen3moe": dict(make_checkpoints.BASE, **dict(
        make_checkpoints.MOE_ARCHS["qwen3moe"], hidden_size=256, moe_intermediate_size=128,
        num_experts=8, num_experts_per_tok=2)),
    "mixtral": dict(make_checkpoints.BASE, **dict(
        make_checkpoints.MOE_ARCHS["mixtral"], hidden_size=256, intermediate_size=128)),
}
MOE_SPECS = {"qwen3moe-fp8-block": ("qwen3moe", "fp8-block"), "qwen3moe-awq": ("qwen3moe", "awq"),
             "mixtral-awq": ("mixtral", "awq")}
MOE_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
               "w1", "w2", "w3")
PROMPT_LENGTHS = [5, 40]
NEW_TOKENS = 8


def float_weights(rng):
    H, I, V = CFG["hidden_size"], CFG["intermediate_size"], CFG["vocab_size"]
    hd = H // CFG["num_attention_heads"]
    nh, nkv = CFG["num_attention_heads"], CFG["num_key_value_heads"]
    W = {"model.embed_tokens.weight": rng.standard_normal((V, H)),
         "model.norm.weight": 1.0 + 0.1 * rng.standard_normal(H),
         "lm_head.weight": 0.15 * rng.standard_normal((V, H))}
    shapes = {"self_attn.q_proj": (nh * hd, H), "self_attn.k_proj": (nkv * hd, H),
              "self_attn.v_proj": (nkv * hd, H), "self_attn.o_proj": (H, nh * hd),
              "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}
    for l in range(CFG["num_hidden_layers"]):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1.0 + 0.1 * rng.standard_normal(H)
        W[p + "post_attention_layernorm.weight"] = 1.0 + 0.1 * rng.standard_normal(H)
        for m in LINEARS:
            W[p + m + ".weight"] = (0.9 / np.sqrt(shapes[m][1])) * 2.0 * rng.standard_normal(shapes[m])
    return {k: v.astype(np.float32) for k, v in W.items()}


# ----------------------------------------------------------------------------------------
# safetensors writing (name -> (dtype string, numpy array already in that storage))

def to_storage(a, st_dtype):
    if st_dtype == "F32":
        return np.ascontiguousarray(a, dtype=np.float32).tobytes()
    if st_dtype == "F16":
        return np.ascontiguousarray(a, dtype=np.float16).tobytes()
    if st_dtype == "BF16":
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16)
        return t.view(torch.int16).numpy().tobytes()
    if st_dtype == "I32":
        return np.ascontiguousarray(a, dtype=np.int64).astype(np.uint32).view(np.int32).tobytes()
    if st_dtype == "I64":
        return np.ascontiguousarray(a, dtype=np.int64).tobytes()
    if st_dtype == "F8_E4M3":
        return np.ascontiguousarray(a, dtype=np.uint8).tobytes()
    raise ValueError(st_dtype)


def stored_value(a, st_dtype):
    """The float32 values a float tensor has once stored as st_dtype."""
    if st_dtype == "F16":
        return np.asarray(a, dtype=np.float16).astype(np.float32)
    if st_dtype == "BF16":
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16)
        return t.float().numpy()
    return np.asarray(a, dtype=np.float32)


def write_safetensors(path, tensors):
    """tensors: name -> (safetensors dtype, array)."""
    make_checkpoints.write_safetensors_raw(
        path, {name: (st, np.shape(a), to_storage(a, st)) for name, (st, a) in tensors.items()})


# ----------------------------------------------------------------------------------------
# Quantizers: produce the stored tensors of one linear weight w [out, in] (fp32).

def pack_nibbles(vals):
    """[..., 8] nibbles (lowest first) -> int64 words (reinterpreted as int32 on write)."""
    v = np.asarray(vals, dtype=np.int64) & 0xF
    return sum(v[..., k] << (4 * k) for k in range(8))


def quant_fp8_block(w, block=(128, 128)):
    out, inn = w.shape
    bo, bi = block
    nbo, nbi = -(-out // bo), -(-inn // bi)
    s = np.zeros((nbo, nbi), dtype=np.float32)
    for a in range(nbo):
        for b in range(nbi):
            s[a, b] = np.abs(w[a * bo:(a + 1) * bo, b * bi:(b + 1) * bi]).max() / 448.0
    sfull = np.repeat(np.repeat(s, bo, 0), bi, 1)[:out, :inn]
    codes = rd.e4m3_encode_nearest(w / sfull)
    return {"weight": ("F8_E4M3", codes), "weight_scale_inv": ("F32", s)}, \
        rd.fp8(codes, s, block)


def quant_fp8_scaled(w, per_channel, scale_dtype):
    out, _ = w.shape
    if per_channel:
        s = stored_value(np.abs(w).max(axis=1, keepdims=True) / 448.0, scale_dtype)
    else:
        s = stored_value(np.array([np.abs(w).max() / 448.0]), scale_dtype)
    codes = rd.e4m3_encode_nearest(w / (s if per_channel else s[0]))
    return {"weight": ("F8_E4M3", codes), "weight_scale": (scale_dtype, s)}, rd.fp8(codes, s)


AWQ_PACK = [0, 2, 4, 6, 1, 3, 5, 7]  # nibble k of a word holds column AWQ_PACK[k]


def asym_group_params(wg):
    """Asymmetric 4-bit scale and zero of one group (any shape), as AWQ/GPTQ compute them."""
    lo, hi = min(wg.min(), 0.0), max(wg.max(), 0.0)
    s = max((hi - lo) / 15.0, 1e-8)
    z = int(np.clip(np.round(-lo / s), 0, 15))
    return s, z


def quant_awq(w, group):
    wt = w.T  # [in, out]
    inn, out = wt.shape
    ng = inn // group
    scales = np.zeros((ng, out), dtype=np.float32)
    zeros = np.zeros((ng, out), dtype=np.int64)
    for g in range(ng):
        for o in range(out):
            s, z = asym_group_params(wt[g * group:(g + 1) * group, o])
            scales[g, o], zeros[g, o] = s, z
    scales = stored_value(scales, "F16")
    rows = np.arange(inn) // group
    q = np.clip(np.round(wt / scales[rows]) + zeros[rows], 0, 15).astype(np.int64)
    qweight = np.zeros((inn, out // 8), dtype=np.int64)
    qzeros = np.zeros((ng, out // 8), dtype=np.int64)
    for c in range(out // 8):
        for k in range(8):
            qweight[:, c] |= q[:, 8 * c + AWQ_PACK[k]] << (4 * k)
            qzeros[:, c] |= zeros[:, 8 * c + AWQ_PACK[k]] << (4 * k)
    st = {"qweight": ("I32", qweight), "qzeros": ("I32", qzeros), "scales": ("F16", scales)}
    return st, rd.awq(to_i32(qweight), to_i32(qzeros), scales, group)


def to_i32(a):
    return np.asarray(a, dtype=np.int64).astype(np.uint32).view(np.int32)


def quant_gptq(w, group, sym, desc_act, rng):
    wt = w.T  # [in, out]
    inn, out = wt.shape
    ng = inn // group
    if desc_act:
        perm = rng.permutation(inn)  # quantization order (by activation statistics in GPTQ)
        g_idx = np.zeros(inn, dtype=np.int64)
        g_idx[perm] = np.arange(inn) // group
    else:
        g_idx = np.arange(inn) // group
    scales = np.zeros((ng, out), dtype=np.float32)
    zeros = np.zeros((ng, out), dtype=np.int64)
    for g in range(ng):
        rows = np.nonzero(g_idx == g)[0]
        for o in range(out):
            if sym:
                s = max(np.abs(wt[rows, o]).max() * 2 / 15.0, 1e-8)
                z = 8
            else:
                s, z = asym_group_params(wt[rows, o])
                z = max(z, 1)  # v1 stores zero - 1: keep it a valid nibble
            scales[g, o], zeros[g, o] = s, z
    scales = stored_value(scales, "F16")
    q = np.clip(np.round(wt / scales[g_idx]) + zeros[g_idx], 0, 15).astype(np.int64)
    qweight = np.zeros((inn // 8, out), dtype=np.int64)
    for r in range(inn):
        qweight[r // 8] |= q[r] << (4 * (r % 8))
    stored_z = zeros - 1  # "gptq" (v1) checkpoint format
    qzeros = np.zeros((ng, out // 8), dtype=np.int64)
    for o in range(out):
        qzeros[:, o // 8] |= stored_z[:, o] << (4 * (o % 8))
    st = {"qweight": ("I32", qweight), "qzeros": ("I32", qzeros), "scales": ("F16", scales),
          "g_idx": ("I32", g_idx)}
    return st, rd.gptq(to_i32(qweight), to_i32(qzeros), scales, g_idx, zeros_minus_one=True)


def quant_pack(w, group, sym):
    out, inn = w.shape
    ng = -(-inn // group)
    scales = np.zeros((out, ng), dtype=np.float32)
    zp = np.zeros((out, ng), dtype=np.int64)
    for g in range(ng):
        blk = w[:, g * group:(g + 1) * group]
        if sym:
            scales[:, g] = np.maximum(np.abs(blk).max(axis=1) / 7.5, 1e-8)
        else:
            lo = np.minimum(blk.min(axis=1), 0.0)
            hi = np.maximum(blk.max(axis=1), 0.0)
            scales[:, g] = np.maximum((hi - lo) / 15.0, 1e-8)
            zp[:, g] = np.clip(np.round(-8 - lo / scales[:, g]), -8, 7)
    scales = stored_value(scales, "BF16")
    cols = np.arange(inn) // group
    q = np.clip(np.round(w / scales[:, cols]) + zp[:, cols], -8, 7).astype(np.int64)
    packed = np.zeros((out, -(-inn // 8)), dtype=np.int64)
    for i in range(inn):
        packed[:, i // 8] |= (q[:, i] + 8) << (4 * (i % 8))
    st = {"weight_packed": ("I32", packed), "weight_scale": ("BF16", scales),
          "weight_shape": ("I64", np.array([out, inn]))}
    zpk = None
    if not sym:
        zpk = np.zeros((-(-out // 8), ng), dtype=np.int64)
        for o in range(out):
            zpk[o // 8] |= (zp[o] + 8) << (4 * (o % 8))
        st["weight_zero_point"] = ("I32", zpk)
    return st, rd.pack_quantized(to_i32(packed), scales, [out, inn], group,
                                 None if zpk is None else to_i32(zpk))


# ----------------------------------------------------------------------------------------

def ct_config(fmt, weights, input_activations):
    return {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                          "input_activations": input_activations,
                                          "output_activations": None}},
            "ignore": ["lm_head"], "kv_cache_scheme": None, "sparsity_config": {}}


def fmt_specs():
    ch = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False,
          "strategy": "channel", "group_size": None, "observer": "minmax"}
    tok = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": True, "strategy": "token"}
    ten = dict(ch, strategy="tensor")
    stat = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False, "strategy": "tensor"}
    w4 = {"num_bits": 4, "type": "int", "symmetric": True, "dynamic": False, "strategy": "group",
          "group_size": 64, "observer": "minmax"}
    return {
        "fp8-block": ("bfloat16", {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                   "weight_block_size": [128, 128]},
                      lambda w, rng: quant_fp8_block(w)),
        "fp8-ct-channel": ("bfloat16", ct_config("float-quantized", ch, tok),
                           lambda w, rng: quant_fp8_scaled(w, True, "BF16")),
        "fp8-ct-tensor": ("bfloat16", ct_config("float-quantized", ten, stat),
                          lambda w, rng: quant_fp8_scaled(w, False, "F32")),
        "fbgemm-fp8": ("bfloat16", {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0,
                                    "modules_to_not_convert": ["lm_head"]},
                       lambda w, rng: quant_fp8_scaled(w, True, "F32")),
        "awq": ("float16", {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True,
                            "version": "gemm", "modules_to_not_convert": None},
                lambda w, rng: quant_awq(w, 64)),
        "gptq": ("float16", {"quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False,
                             "sym": True, "damp_percent": 0.01, "true_sequential": True,
                             "checkpoint_format": "gptq"},
                 lambda w, rng: quant_gptq(w, 32, True, False, rng)),
        "gptq-desc-act": ("float16", {"quant_method": "gptq", "bits": 4, "group_size": 32,
                                      "desc_act": True, "sym": False, "checkpoint_format": "gptq"},
                          lambda w, rng: quant_gptq(w, 32, False, True, rng)),
        "ct-w4a16": ("bfloat16", ct_config("pack-quantized", w4, None),
                     lambda w, rng: quant_pack(w, 64, True)),
        "ct-w4a16-asym": ("bfloat16", ct_config("pack-quantized", dict(w4, symmetric=False), None),
                          lambda w, rng: quant_pack(w, 64, False)),
    }


def is_dense_linear(module):
    return any(module.endswith(m) for m in LINEARS)


def is_moe_linear(module):
    return module.rsplit(".", 1)[-1] in MOE_LINEARS


def build(out_dir, name, torch_dtype, qcfg, quantize, W32, seed, base_cfg=CFG,
          is_linear=is_dense_linear):
    rng = np.random.default_rng(seed)
    st_float = {"bfloat16": "BF16", "float16": "F16"}[torch_dtype]
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    cfg = dict(base_cfg, torch_dtype=torch_dtype, quantization_config=qcfg)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2)
    tensors, ref = {}, {}
    for k, v in W32.items():
        module = k[:-len(".weight")]
        if is_linear(module):
            st, deq = quantize(v, rng)
            assert deq.shape == v.shape and np.isfinite(deq).all()
            for suffix, t in st.items():
                tensors[module + "." + suffix] = t
            ref[k] = deq
            if name == "fp8-ct-tensor":
                tensors[module + ".input_scale"] = ("F32", np.array([0.05], dtype=np.float32))
            if name == "fbgemm-fp8":
                tensors[module + ".input_scale_ub"] = ("F32", np.array([1200.0], dtype=np.float32))
        else:
            tensors[k] = (st_float, v)
            ref[k] = stored_value(v, st_float)
    write_safetensors(os.path.join(d, "model.safetensors"), tensors)
    return cfg, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in ref.items()}, tensors


def write_variant(out_dir, name, cfg, tensors):
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_safetensors(os.path.join(d, "model.safetensors"), tensors)


def write_malformed(out_dir, built):
    """Defective copies of valid checkpoints; CMakeLists.txt expects each load to fail with a
    message naming the tensor or field (see QUANT_LOAD_ERRORS there)."""
    L0 = "model.layers.0."

    def variant(base, cfg_edit=None, tensor_edit=None):
        cfg, tensors = json.loads(json.dumps(built[base][0])), dict(built[base][1])
        if cfg_edit:
            cfg_edit(cfg)
        if tensor_edit:
            tensor_edit(tensors)
        return cfg, tensors

    def drop(name):
        return lambda t: t.pop(name)

    def set_q(key, value):
        return lambda c: c["quantization_config"].__setitem__(key, value)

    def reshape_qweight(t):
        st, a = t[L0 + "self_attn.k_proj.qweight"]
        t[L0 + "self_attn.k_proj.qweight"] = (st, a.reshape(a.shape[1], a.shape[0]))

    def bad_gidx(t):
        st, a = t[L0 + "mlp.down_proj.g_idx"]
        a = a.copy()
        a[7] = 99
        t[L0 + "mlp.down_proj.g_idx"] = (st, a)

    def nan_code(t):
        st, a = t[L0 + "mlp.up_proj.weight"]
        a = a.copy()
        a[3, 5] = 0x7F
        t[L0 + "mlp.up_proj.weight"] = (st, a)

    variants = {
        "bad-missing-scale": variant("fp8-block", tensor_edit=drop(L0 + "self_attn.q_proj.weight_scale_inv")),
        "bad-group-size": variant("awq", cfg_edit=set_q("group_size", 32)),
        "bad-shape": variant("gptq", tensor_edit=reshape_qweight),
        "bad-method": variant("awq", cfg_edit=set_q("quant_method", "bitsandbytes")),
        "bad-gidx": variant("gptq-desc-act", tensor_edit=bad_gidx),
        "bad-nan": variant("fp8-ct-channel", tensor_edit=nan_code),
        "bad-block-field": variant("fp8-block", cfg_edit=set_q("weight_block_size", [128])),
        "bad-no-quant-config": variant("fbgemm-fp8", cfg_edit=lambda c: c.pop("quantization_config")),
        "bad-missing-zero-point": variant("ct-w4a16-asym", tensor_edit=drop(L0 + "mlp.gate_proj.weight_zero_point")),
        "bad-sym-zeros": variant("gptq", cfg_edit=set_q("checkpoint_format", "gptq_v2")),
        "bad-kv-scheme": variant("fp8-ct-channel", cfg_edit=set_q("kv_cache_scheme", {
            "num_bits": 8, "type": "float", "strategy": "channel", "dynamic": False, "symmetric": True})),
    }
    for name, (cfg, tensors) in variants.items():
        write_variant(out_dir, name, cfg, tensors)


def write_too_big(out_dir):
    """A 405B-shaped config with an empty weight file: the memory plan refuses it before any
    weight is read (about 1.5 TiB of fp32 weights)."""
    d = os.path.join(out_dir, "too-big")
    os.makedirs(d, exist_ok=True)
    cfg = dict(architectures=["LlamaForCausalLM"], vocab_size=128256, hidden_size=16384,
               intermediate_size=53248, num_hidden_layers=126, num_attention_heads=128,
               num_key_value_heads=8, max_position_embeddings=8192, rms_norm_eps=1e-5,
               hidden_act="silu", torch_dtype="bfloat16")
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_safetensors(os.path.join(d, "model.safetensors"), {})


def fnv1a64(data):
    """FNV-1a 64-bit hash of bytes (check_dequant.cpp hashes the loader's fp32 bytes the same way)."""
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    W32 = float_weights(np.random.default_rng(2024))
    gen = torch.Generator().manual_seed(7)
    prompts = [torch.randint(3, CFG["vocab_size"], (n,), generator=gen).tolist() for n in PROMPT_LENGTHS]
    cases, dequant, built = [], {}, {}
    for i, (name, (torch_dtype, qcfg, quantize)) in enumerate(fmt_specs().items()):
        cfg, Wd, tensors = build(out, name, torch_dtype, qcfg, quantize, W32, 100 + i)
        built[name] = (cfg, tensors)
        for prompt in prompts:
            ids, lps = reference_llama.greedy(cfg, Wd, prompt, NEW_TOKENS)
            cases.append({"model": name, "prompt_ids": prompt, "output_ids": ids, "logprobs": lps})
        # A few dequantized values for the loader unit test to compare bit for bit.
        w = Wd["model.layers.1.mlp.down_proj.weight"].numpy()
        dequant[name] = {"tensor": "model.layers.1.mlp.down_proj.weight", "shape": list(w.shape),
                         "fnv1a64": fnv1a64(np.ascontiguousarray(w, dtype="<f4").tobytes()),
                         "first_row_bits": [int(x) for x in w[0].view(np.uint32)]}
    specs = fmt_specs()
    for i, (name, (arch, fmt)) in enumerate(MOE_SPECS.items()):
        base = MOE_CFGS[arch]
        gen_w = torch.Generator().manual_seed(300 + i)
        W = {k: v.double().numpy() for k, v in make_checkpoints.make_weights(base, gen_w).items()}
        torch_dtype, qcfg, quantize = specs[fmt]
        cfg, Wd, _ = build(out, name, torch_dtype, qcfg, quantize, W, 200 + i, base_cfg=base,
                           is_linear=is_moe_linear)
        for prompt in prompts:
            ids, lps = reference_moe.greedy(cfg, Wd, prompt, NEW_TOKENS)
            cases.append({"model": name, "prompt_ids": prompt, "output_ids": ids, "logprobs": lps})
    write_malformed(out, built)
    write_too_big(out)
    make_checkpoints.write_fixtures(
        out, "tests/parity/reference_dequant.py (numpy) + reference_llama.py, reference_moe.py "
        "(PyTorch)",
        NEW_TOKENS, cases, dequant=dequant)


if __name__ == "__main__":
    main()
