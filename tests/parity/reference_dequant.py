#!/usr/bin/env python3
"""Independent numpy reference for dequantizing Hub quantized checkpoints, written from the
formats' published semantics (shares no code with the C++ loader):

- FP8 E4M3FN (torch.float8_e4m3fn): 1 sign bit, 4 exponent bits (bias 7), 3 mantissa
  bits, subnormals at exponent 0, no infinities, S.1111.111 is NaN; max 448.
  quant_method "fp8" + weight_block_size: W = fp8 * weight_scale_inv broadcast over
  blocks; compressed-tensors float-quantized / fbgemm_fp8: W = fp8 * weight_scale
  (one value, or one per output row, or one per block).
- AWQ GEMM (AutoAWQ): qweight int32 [in, out/8]; the 8 nibbles of a word, lowest first,
  hold output columns in the order 0,2,4,6,1,3,5,7; qzeros packed the same way per group
  of input rows; scales [in/group, out]; W[in, out] = (q - z) * s, used transposed.
- GPTQ: qweight int32 [in/8, out] with 8 consecutive input rows per word, lowest nibble
  first; qzeros int32 [groups, out/8] (consecutive output columns); "gptq" (v1) files store
  zero - 1; g_idx[in] picks each input row's group (desc_act permutes it).
- compressed-tensors pack-quantized: weight_packed int32 [out, ceil(in/8)], consecutive
  input columns lowest nibble first, each stored as q + 8 (q signed in [-8, 7]);
  weight_zero_point likewise packed along the output dimension; W = (q - zp) * scale.

Every product is taken in float32 from exactly decoded operands.
"""
import numpy as np


def e4m3_decode(codes):
    """float32 values of uint8 e4m3fn codes, from the bit formula."""
    c = np.asarray(codes, dtype=np.uint8).astype(np.int64)
    sign = np.where(c >> 7 == 1, -1.0, 1.0)
    exp = (c >> 3) & 0xF
    mant = c & 0x7
    normal = (1.0 + mant / 8.0) * np.power(2.0, exp - 7)
    subnormal = (mant / 8.0) * 2.0 ** -6
    v = sign * np.where(exp == 0, subnormal, normal)
    v = np.where((exp == 15) & (mant == 7), np.nan, v)
    return v.astype(np.float32)


def e4m3_encode_nearest(x):
    """uint8 codes of the finite e4m3 values nearest to x (ties to the even code); used by
    the fixture writer only."""
    codes = np.arange(256, dtype=np.uint8)
    vals = e4m3_decode(codes).astype(np.float64)
    ok = ~np.isnan(vals)
    codes, vals = codes[ok], vals[ok]
    x = np.clip(np.asarray(x, dtype=np.float64), -448.0, 448.0)
    d = np.abs(x[..., None] - vals[None, :])
    best = d.min(axis=-1, keepdims=True)
    # ties: pick the code with an even mantissa (lowest bit 0), as round-to-nearest-even
    cand = np.where(d == best, (codes[None, :] & 1).astype(np.int64) * 2 + 0, 99)
    return codes[np.argmin(cand, axis=-1)].astype(np.uint8)


def _scale_broadcast(scale, out, inn, block=None):
    s = np.asarray(scale, dtype=np.float32)
    if block is not None:
        bo, bi = block
        return np.repeat(np.repeat(s, bo, axis=0), bi, axis=1)[:out, :inn]
    if s.size == 1:
        return np.full((out, inn), s.reshape(-1)[0], dtype=np.float32)
    return np.repeat(s.reshape(out, 1), inn, axis=1)


def fp8(weight_codes, scale, block=None):
    w = e4m3_decode(weight_codes)
    assert not np.isnan(w).any()
    out, inn = w.shape
    return (w * _scale_broadcast(scale, out, inn, block)).astype(np.float32)


AWQ_UNPACK = [0, 4, 1, 5, 2, 6, 3, 7]  # column j of a word is nibble AWQ_UNPACK[j]


def _nibbles_last(x):
    """int32 [..., n] -> [..., n, 8] nibbles, lowest first."""
    u = np.asarray(x).astype(np.int64) & 0xFFFFFFFF
    shifts = np.arange(0, 32, 4)
    return (u[..., None] >> shifts) & 0xF


def awq(qweight, qzeros, scales, group):
    inn = qweight.shape[0]
    iw = _nibbles_last(qweight)[:, :, AWQ_UNPACK].reshape(inn, -1)
    iz = _nibbles_last(qzeros)[:, :, AWQ_UNPACK].reshape(qzeros.shape[0], -1)
    rows = np.arange(inn) // group
    s = np.asarray(scales, dtype=np.float32)
    w = (iw - iz[rows]).astype(np.float32) * s[rows]
    return np.ascontiguousarray(w.T)


def gptq(qweight, qzeros, scales, g_idx, zeros_minus_one=True):
    n8, out = qweight.shape
    iw = np.transpose(_nibbles_last(qweight.T), (1, 2, 0)).reshape(n8 * 8, out)  # [in, out]
    z = _nibbles_last(qzeros).reshape(qzeros.shape[0], -1)
    if zeros_minus_one:
        z = z + 1
    g = np.asarray(g_idx, dtype=np.int64)
    s = np.asarray(scales, dtype=np.float32)
    w = (iw - z[g]).astype(np.float32) * s[g]
    return np.ascontiguousarray(w.T)


def pack_quantized(weight_packed, weight_scale, weight_shape, group, zero_point=None, g_idx=None):
    out, inn = int(weight_shape[0]), int(weight_shape[1])
    q = _nibbles_last(weight_packed).reshape(out, -1)[:, :inn] - 8
    s = np.asarray(weight_scale, dtype=np.float32)
    cols = np.asarray(g_idx, dtype=np.int64) if g_idx is not None else np.arange(inn) // group
    zp = np.zeros_like(s, dtype=np.int64)
    if zero_point is not None:
        zp = np.transpose(_nibbles_last(zero_point.T), (1, 2, 0)).reshape(-1, s.shape[1])[:out] - 8
    w = (q - zp[:, cols]).astype(np.float32) * s[:, cols]
    return np.ascontiguousarray(w)
