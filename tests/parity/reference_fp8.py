"""FP8 E4M3 rounding written from the OCP 8-bit floating point specification (OFP8, E4M3:
exponent bias 7, 3 mantissa bits, no infinities, S.1111.111 = NaN, largest normal
1.75 * 2^8 = 448, smallest normal 2^-6, subnormals m/8 * 2^-6), for references whose torch
(1.13) has no float8 dtype.

round_e4m3(x) returns, in fp32, the E4M3 value nearest to x with ties to the even mantissa,
saturating beyond ±448 (the conversion vLLM's FP8 KV cache applies through CUDA's
__nv_cvt_float_to_fp8 with __NV_SATFINITE); NaN stays NaN. decode_e4m3(code) decodes one
byte as the spec defines it.
"""
import math

import torch

E4M3_MAX = 448.0
MIN_NORMAL_EXP = -6   # the smallest normal is 2^-6
MANTISSA_BITS = 3


def decode_e4m3(code):
    sign = -1.0 if code & 0x80 else 1.0
    e = (code >> 3) & 0xF
    m = code & 0x7
    if e == 0xF and m == 0x7:
        return float("nan")
    if e == 0:
        return sign * (m / 8.0) * 2.0 ** MIN_NORMAL_EXP
    return sign * (1.0 + m / 8.0) * 2.0 ** (e - 7)


def round_e4m3(x):
    """x: float tensor; the e4m3 value of every element as fp32 (same shape)."""
    x = x.float()
    a = x.abs()
    # a = mant * 2^exp with mant in [0.5, 1): a lies in the binade [2^(exp-1), 2^exp), whose
    # representable values are spaced 2^(exp-1-3); below 2^-6 the subnormals keep the spacing
    # of the lowest binade.
    _, exp = torch.frexp(a)
    binade = torch.clamp(exp - 1, min=MIN_NORMAL_EXP)
    quantum = torch.pow(torch.tensor(2.0), (binade - MANTISSA_BITS).float())
    # a / quantum is exact (a power-of-two scale); torch.round rounds half to even.
    r = torch.round(a / quantum) * quantum
    r = torch.clamp(r, max=E4M3_MAX)
    r = torch.where(torch.isinf(a), torch.full_like(a, E4M3_MAX), r)
    r = torch.copysign(r, x)
    return torch.where(torch.isnan(x), x, r)


def quantize_kv(t, scale):
    """What an FP8 KV cache gives back for t stored with per-tensor `scale`: fp8(t / scale) * scale."""
    return round_e4m3(t / scale) * scale


if __name__ == "__main__":
    # Self-check: every finite code decodes to a value round_e4m3 maps to itself, and the
    # midpoint between neighbours rounds to the even code.
    vals = sorted({decode_e4m3(c) for c in range(128) if not math.isnan(decode_e4m3(c))})
    t = torch.tensor(vals)
    assert torch.equal(round_e4m3(t), t) and torch.equal(round_e4m3(-t), -t)
    for lo, hi in zip(vals, vals[1:]):
        mid = torch.tensor([(lo + hi) / 2])
        lo_code = [c for c in range(128) if decode_e4m3(c) == lo][0]
        want = lo if lo_code % 2 == 0 else hi
        assert float(round_e4m3(mid)) == want, (lo, hi)
    assert float(round_e4m3(torch.tensor([1e9]))) == 448.0
    print("ok")
