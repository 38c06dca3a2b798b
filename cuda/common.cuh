// Shared device helpers of the CUDA backend: the error-check macro, bf16 <-> fp32
// conversions, warp/block reductions, 16-byte vector access and the one place that turns a
// runtime head_dim into a template parameter. Included by every .cu file of cuda/.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/cuda_check.h"
#include "engine/core/check.h"

namespace iris::cuda {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ float to_f32(bf16 x) {
  return __bfloat162float(x);
}
__device__ __forceinline__ bf16 to_bf16(float x) {
  return __float2bfloat16_rn(x);
}

// FP8 E4M3 KV cache (--kv-cache-dtype fp8): x is stored as e4m3(x / scale), rounded to
// nearest even and saturated to ±448 (__NV_SATFINITE; NaN -> NaN), matching the CPU
// backend's engine/core/fp8.h bit for bit; read back as e4m3 * scale.
__device__ __forceinline__ uint8_t to_e4m3(float x) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}
__device__ __forceinline__ float e4m3_to_f32(uint8_t c) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(c), __NV_E4M3)));
}
// 8 E4M3 codes (one 8-byte load) to fp32, times scale.
__device__ __forceinline__ void unpack8_e4m3(const uint8_t* p, float scale, float (&f)[8]) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  const uint32_t w[2] = {u.x, u.y};
#pragma unroll
  for (int i = 0; i < 8; ++i)
    f[i] = e4m3_to_f32(static_cast<uint8_t>(w[i / 4] >> (8 * (i % 4)))) * scale;
}

// 8 bf16 values in one 16-byte register quad.
union Vec8 {
  uint4 u;
  __nv_bfloat162 h2[4];
};

__device__ __forceinline__ void unpack8(const uint4& u, float (&f)[8]) {
  Vec8 v;
  v.u = u;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __bfloat1622float2(v.h2[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

// 8 E4M3 codes as 8 bf16 values, unscaled: exact, since every E4M3 value is a bf16 (4
// significant bits, exponents within bf16's range). The tensor-core prefill kernel stages
// the FP8 cache this way and applies the scales to the scores and the output.
__device__ __forceinline__ uint4 e4m3x8_to_bf16x8(const uint8_t* p) {
  float f[8];
  unpack8_e4m3(p, 1.0f, f);
  Vec8 v;
#pragma unroll
  for (int i = 0; i < 4; ++i) v.h2[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  return v.u;
}

__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  Vec8 v;
#pragma unroll
  for (int i = 0; i < 4; ++i) v.h2[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  return v.u;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. `scratch` holds >= 32 floats and may be
// reused right after the call returns (the trailing barrier protects it).
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? scratch[lane] : 0.0f;
  t = warp_sum(t);
  __syncthreads();
  return t;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = lane < nwarps ? scratch[lane] : -INFINITY;
  t = warp_max(t);
  __syncthreads();
  return t;
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

inline unsigned ceil_div(int64_t a, int64_t b) {
  return static_cast<unsigned>((a + b - 1) / b);
}

// head_dim -> padded template head dim. Kernels read and write only the first head_dim
// elements and zero-fill the rest, so any multiple of 8 up to 256 runs on three
// instantiations (64, 128, 256); the common sizes 64/128/256 run unpadded.
template <class F>
void dispatch_head_dim(int head_dim, const char* op, F&& f) {
  if (head_dim <= 0 || head_dim % 8 != 0 || head_dim > 256)
    fail("cuda ", op, ": head_dim ", head_dim, " is not supported (a multiple of 8, at most 256)");
  if (head_dim <= 64)
    f(std::integral_constant<int, 64>{});
  else if (head_dim <= 128)
    f(std::integral_constant<int, 128>{});
  else
    f(std::integral_constant<int, 256>{});
}

}  // namespace iris::cuda
