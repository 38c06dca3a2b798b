// FP8 E4M3 (OCP 8-bit floating point, "e4m3fn": 1 sign, 4 exponent bits with bias 7, 3
// mantissa bits; no infinities, S.1111.111 is NaN, largest finite ±448) as the paged KV cache
// stores it under --kv-cache-dtype fp8. The encoder rounds to nearest even and saturates
// out-of-range values (±inf included) to ±448, exactly what CUDA's
// __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3) does, so the CPU backend's cache holds
// the same bytes a GPU's would; NaN encodes as 0x7F.
#pragma once

#include <cstdint>

namespace iris {

// Round-to-nearest-even, saturating to ±448; NaN -> 0x7F; -0 -> 0x80.
uint8_t f32_to_e4m3(float x);
// Exact decoding of any of the 256 codes (0x7F / 0xFF are NaN).
float e4m3_to_f32(uint8_t code);
// All 256 decoded values, indexed by code (for table lookups in inner loops).
const float* e4m3_table();

// The largest finite e4m3 magnitude.
inline constexpr float kE4m3Max = 448.0f;

}  // namespace iris
