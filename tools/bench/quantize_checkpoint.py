#!/usr/bin/env python3
"""Writes a quantized copy of a single-file float checkpoint (e.g. one from
make_random_llama.py) in a Hub format, for memory and load-time measurements: the linear
layers' weights (q/k/v/o, gate/up/down) are quantized, everything else is copied.

usage: quantize_checkpoint.py SRC_DIR OUT_DIR --format {fp8-block,awq,w4a16}
  fp8-block  quant_method fp8, weight_block_size [128, 128], F8_E4M3 weight + F32 weight_scale_inv
  awq        AutoAWQ GEMM, 4-bit, group 128 (qweight/qzeros/scales F16)
  w4a16      compressed-tensors pack-quantized, symmetric, group 128 (weight_packed/weight_scale)
The quantizers are plain round-to-nearest (no calibration): fine for measuring storage.
"""
import argparse
import json
import os
import struct

import numpy as np

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
AWQ_PACK = [0, 2, 4, 6, 1, 3, 5, 7]


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[b:end]
        if e["dtype"] == "BF16":
            a = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif e["dtype"] == "F16":
            a = raw.view(np.float16).astype(np.float32)
        elif e["dtype"] == "F32":
            a = raw.view(np.float32)
        else:
            raise SystemExit(f"{name}: dtype {e['dtype']} not handled")
        out[name] = (e["dtype"], a.reshape(e["shape"]))
    return out


def e4m3_positive_table():
    codes = np.arange(0x7F)
    e, m = codes >> 3, codes & 7
    return np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e - 7.0))


def e4m3_encode(x):
    vals = e4m3_positive_table()
    a = np.minimum(np.abs(x), 448.0)
    i = np.clip(np.searchsorted(vals, a), 1, len(vals) - 1)
    pick = np.where(a - vals[i - 1] <= vals[i] - a, i - 1, i)
    return (pick | (np.signbit(x).astype(np.int64) << 7)).astype(np.uint8)


def pack8(v, axis):
    """Packs 8 consecutive 4-bit values along `axis` (lowest nibble first) into int32."""
    v = np.moveaxis(np.asarray(v, dtype=np.uint32) & 0xF, axis, -1)
    v = v.reshape(v.shape[:-1] + (-1, 8))
    word = np.zeros(v.shape[:-1], dtype=np.uint32)
    for k in range(8):
        word |= v[..., k] << np.uint32(4 * k)
    return np.moveaxis(word, -1, axis).view(np.int32)


def quant_fp8_block(w, b=128):
    out, inn = w.shape
    po, pi = -(-out // b) * b, -(-inn // b) * b
    wp = np.zeros((po, pi), dtype=np.float32)
    wp[:out, :inn] = w
    s = np.abs(wp.reshape(po // b, b, pi // b, b)).max(axis=(1, 3)) / 448.0
    s = np.maximum(s, 1e-12).astype(np.float32)
    full = np.repeat(np.repeat(s, b, 0), b, 1)[:out, :inn]
    return {"weight": ("F8_E4M3", e4m3_encode(w / full)), "weight_scale_inv": ("F32", s)}


def quant_awq(w, g=128):
    wt = w.T.astype(np.float32)  # [in, out]
    inn, out = wt.shape
    grp = wt.reshape(inn // g, g, out)
    lo, hi = np.minimum(grp.min(axis=1), 0), np.maximum(grp.max(axis=1), 0)
    s = np.maximum((hi - lo) / 15.0, 1e-8).astype(np.float16).astype(np.float32)
    z = np.clip(np.round(-lo / s), 0, 15)
    rows = np.arange(inn) // g
    q = np.clip(np.round(wt / s[rows]) + z[rows], 0, 15)
    reorder = np.concatenate([8 * c + np.array(AWQ_PACK) for c in range(out // 8)])
    return {"qweight": ("I32", pack8(q[:, reorder], 1)), "qzeros": ("I32", pack8(z[:, reorder], 1)),
            "scales": ("F16", s.astype(np.float16))}


def quant_w4a16(w, g=128):
    out, inn = w.shape
    grp = w.reshape(out, inn // g, g)
    s = np.maximum(np.abs(grp).max(axis=2) / 7.5, 1e-8)
    s_bf16 = ((s.astype(np.float32).view(np.uint32) + 0x8000) >> 16).astype(np.uint16)
    s = (s_bf16.astype(np.uint32) << 16).view(np.float32)
    q = np.clip(np.round(w / np.repeat(s, g, axis=1)), -8, 7) + 8
    return {"weight_packed": ("I32", pack8(q, 1)), "weight_scale": ("BF16", s_bf16),
            "weight_shape": ("I64", np.array([out, inn], dtype=np.int64))}


def storage_bytes(st, a):
    if st == "BF16":
        if a.dtype == np.uint16:
            return a.tobytes()
        return ((np.ascontiguousarray(a, dtype=np.float32).view(np.uint32) + 0x8000) >> 16).astype(np.uint16).tobytes()
    return np.ascontiguousarray(a, dtype={"F32": np.float32, "F16": np.float16, "I32": np.int32,
                                          "I64": np.int64, "F8_E4M3": np.uint8}[st]).tobytes()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--format", required=True, choices=["fp8-block", "awq", "w4a16"])
    a = ap.parse_args()
    with open(os.path.join(a.src, "config.json")) as f:
        cfg = json.load(f)
    tensors = read_safetensors(os.path.join(a.src, "model.safetensors"))
    quant = {"fp8-block": quant_fp8_block, "awq": quant_awq, "w4a16": quant_w4a16}[a.format]
    cfg["quantization_config"] = {
        "fp8-block": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                      "weight_block_size": [128, 128]},
        "awq": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"},
        "w4a16": {"quant_method": "compressed-tensors", "format": "pack-quantized",
                  "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                                "weights": {"num_bits": 4, "type": "int", "symmetric": True,
                                                            "strategy": "group", "group_size": 128}}},
                  "ignore": ["lm_head"]},
    }[a.format]
    os.makedirs(a.out, exist_ok=True)
    header, off = {}, 0
    blobs = []
    for name, (st, arr) in tensors.items():
        module = name[:-len(".weight")] if name.endswith(".weight") else None
        if module and module.split(".")[-1] in LINEARS:
            for suffix, (qst, qa) in quant(np.asarray(arr, dtype=np.float32)).items():
                blobs.append((module + "." + suffix, qst, list(qa.shape), storage_bytes(qst, qa)))
        else:
            blobs.append((name, st, list(arr.shape), storage_bytes(st, arr)))
    for name, st, shape, b in blobs:
        header[name] = {"dtype": st, "shape": shape, "data_offsets": [off, off + len(b)]}
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, _, b in blobs:
            f.write(b)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"{a.format}: {off / 2**20:.1f} MiB of tensors -> {a.out}")


if __name__ == "__main__":
    main()
