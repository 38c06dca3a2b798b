// Row normalisations: rms_norm, add_rms_norm (residual add fused in) and layer_norm. One
// block per row, fp32 statistics, 16-byte accesses when the row allows them. Memory-bound:
// each kernel reads its inputs once and writes its outputs once (the second pass over a
// row hits L1/L2), so a row of 4096 bf16 costs about as much as moving 16 KiB.
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace iris::cuda {
namespace {

// Elements of a row handled per access: 8 (one uint4) on the vector path, else 1.
template <bool kVec>
struct RowAccess {
  static constexpr int kWidth = kVec ? 8 : 1;
  __device__ static void load(const bf16* p, int64_t unit, float (&f)[8]) {
    if constexpr (kVec) {
      unpack8(reinterpret_cast<const uint4*>(p)[unit], f);
    } else {
      f[0] = to_f32(p[unit]);
    }
  }
  __device__ static void store(bf16* p, int64_t unit, const float (&f)[8]) {
    if constexpr (kVec) {
      reinterpret_cast<uint4*>(p)[unit] = pack8(f);
    } else {
      p[unit] = to_bf16(f[0]);
    }
  }
};

template <bool kVec>
__global__ void rms_norm_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, float eps,
                                int64_t h, bf16* __restrict__ out) {
  using A = RowAccess<kVec>;
  constexpr int W = A::kWidth;
  __shared__ float scratch[32];
  const bf16* xr = x + blockIdx.x * h;
  bf16* orow = out + blockIdx.x * h;
  const int64_t units = h / W;
  float ss = 0.0f;
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
    float f[8];
    A::load(xr, u, f);
#pragma unroll
    for (int i = 0; i < W; ++i) ss += f[i] * f[i];
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(h) + eps);
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
    float f[8], g[8];
    A::load(xr, u, f);
    A::load(w, u, g);
#pragma unroll
    for (int i = 0; i < W; ++i) f[i] = g[i] * (f[i] * inv);
    A::store(orow, u, f);
  }
}

template <bool kVec>
__global__ void add_rms_norm_kernel(bf16* __restrict__ residual, const bf16* __restrict__ x,
                                    const bf16* __restrict__ w, float eps, int64_t h,
                                    bf16* __restrict__ out) {
  using A = RowAccess<kVec>;
  constexpr int W = A::kWidth;
  __shared__ float scratch[32];
  bf16* rr = residual + blockIdx.x * h;
  const bf16* xr = x + blockIdx.x * h;
  bf16* orow = out + blockIdx.x * h;
  const int64_t units = h / W;
  float ss = 0.0f;
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
    float f[8], g[8];
    A::load(rr, u, f);
    A::load(xr, u, g);
#pragma unroll
    for (int i = 0; i < W; ++i) {
      // The residual stream is carried in bf16; normalise the value it now holds.
      f[i] = to_f32(to_bf16(f[i] + g[i]));
      ss += f[i] * f[i];
    }
    A::store(rr, u, f);
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(h) + eps);
  // Each thread re-reads exactly the units it wrote above, so no barrier is needed.
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
    float f[8], g[8];
    A::load(rr, u, f);
    A::load(w, u, g);
#pragma unroll
    for (int i = 0; i < W; ++i) f[i] = g[i] * (f[i] * inv);
    A::store(orow, u, f);
  }
}

template <bool kVec>
__global__ void layer_norm_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                  const bf16* __restrict__ b, float eps, int64_t h,
                                  bf16* __restrict__ out) {
  using A = RowAccess<kVec>;
  constexpr int W = A::kWidth;
  __shared__ float scratch[32];
  const bf16* xr = x + blockIdx.x * h;
  bf16* orow = out + blockIdx.x * h;
  const int64_t units = h / W;
  float sum = 0.0f;
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
    float f[8];
    A::load(xr, u, f);
#pragma unroll
    for (int i = 0; i < W; ++i) sum += f[i];
  }
  const float mean = block_sum(sum, scratch) / static_cast<float>(h);
  // Second pass for the variance (as the reference): no cancellation from E[x^2] - E[x]^2.
  float var = 0.0f;
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
    float f[8];
    A::load(xr, u, f);
#pragma unroll
    for (int i = 0; i < W; ++i) var += (f[i] - mean) * (f[i] - mean);
  }
  var = block_sum(var, scratch) / static_cast<float>(h);
  const float inv = 1.0f / sqrtf(var + eps);
  for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
    float f[8], g[8], c[8] = {};
    A::load(xr, u, f);
    A::load(w, u, g);
    if (b != nullptr) A::load(b, u, c);
#pragma unroll
    for (int i = 0; i < W; ++i) f[i] = (f[i] - mean) * inv * g[i] + c[i];
    A::store(orow, u, f);
  }
}

// Vector path when rows are whole uint4s and every pointer is 16-byte aligned.
bool use_vec(int64_t h, std::initializer_list<const void*> ptrs) {
  if (h % 8 != 0) return false;
  for (const void* p : ptrs)
    if (p != nullptr && !aligned16(p)) return false;
  return true;
}

int threads_for(int64_t units) {
  const int64_t t = (units + 31) / 32 * 32;
  return static_cast<int>(std::clamp<int64_t>(t, 32, 512));
}

void check_rows(int64_t rows) {
  IRIS_CHECK(rows <= 0x7fffffff) << "cuda norm: " << rows << " rows exceed one grid";
}

}  // namespace

void launch_rms_norm(const bf16* x, const bf16* w, float eps, int64_t rows, int64_t h, bf16* out,
                     cudaStream_t stream) {
  if (rows == 0) return;
  check_rows(rows);
  if (use_vec(h, {x, w, out}))
    rms_norm_kernel<true><<<rows, threads_for(h / 8), 0, stream>>>(x, w, eps, h, out);
  else
    rms_norm_kernel<false><<<rows, threads_for(h), 0, stream>>>(x, w, eps, h, out);
  IRIS_CUDA_CHECK_LAUNCH();
}

void launch_add_rms_norm(bf16* residual, const bf16* x, const bf16* w, float eps, int64_t rows,
                         int64_t h, bf16* out, cudaStream_t stream) {
  if (rows == 0) return;
  check_rows(rows);
  if (use_vec(h, {residual, x, w, out}))
    add_rms_norm_kernel<true><<<rows, threads_for(h / 8), 0, stream>>>(residual, x, w, eps, h, out);
  else
    add_rms_norm_kernel<false><<<rows, threads_for(h), 0, stream>>>(residual, x, w, eps, h, out);
  IRIS_CUDA_CHECK_LAUNCH();
}

void launch_layer_norm(const bf16* x, const bf16* w, const bf16* b, float eps, int64_t rows,
                       int64_t h, bf16* out, cudaStream_t stream) {
  if (rows == 0) return;
  check_rows(rows);
  if (use_vec(h, {x, w, b, out}))
    layer_norm_kernel<true><<<rows, threads_for(h / 8), 0, stream>>>(x, w, b, eps, h, out);
  else
    layer_norm_kernel<false><<<rows, threads_for(h), 0, stream>>>(x, w, b, eps, h, out);
  IRIS_CUDA_CHECK_LAUNCH();
}

}  // namespace iris::cuda
