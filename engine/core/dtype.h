// Element types of checkpoint storage and of device tensors, and the scalar conversions
// between them (bfloat16 and IEEE half are converted bit-exactly, round-to-nearest-even).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace iris {

// F8_E4M3 is OCP FP8 e4m3fn (safetensors "F8_E4M3"): a storage type only, decoded by the
// quantized-weight loader (engine/loader/quantization.h), never a compute dtype.
// PACKED marks a backend's packed quantized weight (engine/core/packed_weight.h): the
// Tensor's data points to the backend's object for it, its shape is the logical [out, in],
// and only the backend's linear reads it (dtype_size is 0: its bytes are the object's).
enum class DType : uint8_t { F32, F16, BF16, I32, I64, U8, F8_E4M3, PACKED };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);
// Parses a safetensors dtype string ("F32", "BF16", …); nullopt for unknown ones.
std::optional<DType> parse_safetensors_dtype(std::string_view s);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// OCP FP8 E4M3FN (torch.float8_e4m3fn): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no
// infinities; 0x7F and 0xFF are NaN; largest finite 448.
float fp8_e4m3_to_f32(uint8_t code);

// Converts `n` elements stored as `src_type` into fp32.
void convert_to_f32(const void* src, DType src_type, float* dst, size_t n);

}  // namespace iris
