// Element-wise kernels: silu(gate) * up for the MLP (gelu_tanh(gate) * up for Gemma), the
// vision towers' GELU variants, a residual add, the bias add of F32 GEMM outputs, and
// Gemma's in-place scale and tanh soft-cap (bf16 activations or F32 logits). fp32 arithmetic, one bf16 rounding
// per output; 8 elements (16 bytes) per thread when sizes and pointers allow. Pure
// bandwidth: silu_mul moves 3 x 2 bytes per output element.
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace iris::cuda {
namespace {

unsigned grid_for(int64_t work, int threads) {
  return static_cast<unsigned>(std::clamp<int64_t>((work + threads - 1) / threads, 1, 65536));
}

__device__ __forceinline__ float silu(float g) {
  return g / (1.0f + expf(-g));
}

// Vector path: inter % 8 == 0 and 16-byte aligned pointers; unit u covers 8 outputs.
__global__ void silu_mul_vec_kernel(const bf16* __restrict__ gate_up, int64_t rows, int64_t inter,
                                    bf16* __restrict__ out) {
  const int64_t per_row = inter / 8;
  const int64_t total = rows * per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; u < total;
       u += stride) {
    const int64_t r = u / per_row, c = (u % per_row) * 8;
    float g[8], v[8];
    unpack8(*reinterpret_cast<const uint4*>(gate_up + r * 2 * inter + c), g);
    unpack8(*reinterpret_cast<const uint4*>(gate_up + r * 2 * inter + inter + c), v);
#pragma unroll
    for (int i = 0; i < 8; ++i) g[i] = silu(g[i]) * v[i];
    *reinterpret_cast<uint4*>(out + r * inter + c) = pack8(g);
  }
}

__global__ void silu_mul_kernel(const bf16* __restrict__ gate_up, int64_t rows, int64_t inter,
                                bf16* __restrict__ out) {
  const int64_t total = rows * inter;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += stride) {
    const int64_t r = k / inter, i = k % inter;
    const float g = to_f32(gate_up[r * 2 * inter + i]);
    const float v = to_f32(gate_up[r * 2 * inter + inter + i]);
    out[k] = to_bf16(silu(g) * v);
  }
}

__device__ __forceinline__ float apply_act(float v, Activation act) {
  switch (act) {
    case Activation::kGeluErf:
      return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case Activation::kGeluTanh:
      return 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    case Activation::kQuickGelu:
      return v / (1.0f + expf(-1.702f * v));
  }
  return v;
}

__global__ void activation_kernel(bf16* __restrict__ x, int64_t n, Activation act, bool vec) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (vec) {
    uint4* xv = reinterpret_cast<uint4*>(x);
    for (int64_t u = start; u < n / 8; u += stride) {
      float f[8];
      unpack8(xv[u], f);
#pragma unroll
      for (int i = 0; i < 8; ++i) f[i] = apply_act(f[i], act);
      xv[u] = pack8(f);
    }
  } else {
    for (int64_t i = start; i < n; i += stride) x[i] = to_bf16(apply_act(to_f32(x[i]), act));
  }
}

__global__ void add_kernel(bf16* __restrict__ a, const bf16* __restrict__ b, int64_t n, bool vec) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (vec) {
    uint4* av = reinterpret_cast<uint4*>(a);
    const uint4* bv = reinterpret_cast<const uint4*>(b);
    for (int64_t u = start; u < n / 8; u += stride) {
      float f[8], g[8];
      unpack8(av[u], f);
      unpack8(bv[u], g);
#pragma unroll
      for (int i = 0; i < 8; ++i) f[i] += g[i];
      av[u] = pack8(f);
    }
  } else {
    for (int64_t i = start; i < n; i += stride) a[i] = to_bf16(to_f32(a[i]) + to_f32(b[i]));
  }
}

__global__ void gelu_tanh_mul_kernel(const bf16* __restrict__ gate_up, int64_t rows,
                                     int64_t inter, bf16* __restrict__ out) {
  const int64_t total = rows * inter;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += stride) {
    const int64_t r = k / inter, i = k % inter;
    const float g = to_f32(gate_up[r * 2 * inter + i]);
    const float v = to_f32(gate_up[r * 2 * inter + inter + i]);
    out[k] = to_bf16(apply_act(g, Activation::kGeluTanh) * v);
  }
}

// mode 0: x *= s; mode 1: x = s * tanh(x / s).
template <typename T>
__global__ void scale_or_softcap_kernel(T* __restrict__ x, int64_t n, float s, int mode) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    float v;
    if constexpr (sizeof(T) == 4) v = x[i]; else v = to_f32(x[i]);
    v = mode == 0 ? v * s : tanhf(v / s) * s;
    if constexpr (sizeof(T) == 4) x[i] = v; else x[i] = to_bf16(v);
  }
}

__global__ void add_bias_f32_kernel(float* __restrict__ out, const bf16* __restrict__ bias,
                                    int64_t rows, int64_t cols) {
  const int64_t total = rows * cols;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < total;
       k += stride)
    out[k] += to_f32(bias[k % cols]);
}

}  // namespace

void launch_silu_mul(const bf16* gate_up, int64_t rows, int64_t inter, bf16* out,
                     cudaStream_t stream) {
  if (rows == 0 || inter == 0) return;
  constexpr int kThreads = 256;
  if (inter % 8 == 0 && aligned16(gate_up) && aligned16(out))
    silu_mul_vec_kernel<<<grid_for(rows * inter / 8, kThreads), kThreads, 0, stream>>>(
        gate_up, rows, inter, out);
  else
    silu_mul_kernel<<<grid_for(rows * inter, kThreads), kThreads, 0, stream>>>(gate_up, rows, inter,
                                                                               out);
  IRIS_CUDA_CHECK_LAUNCH();
}

void launch_activation(bf16* x, int64_t n, Activation act, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  const bool vec = n % 8 == 0 && aligned16(x);
  activation_kernel<<<grid_for(vec ? n / 8 : n, kThreads), kThreads, 0, stream>>>(x, n, act, vec);
  IRIS_CUDA_CHECK_LAUNCH();
}

void launch_add(bf16* a, const bf16* b, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  const bool vec = n % 8 == 0 && aligned16(a) && aligned16(b);
  add_kernel<<<grid_for(vec ? n / 8 : n, kThreads), kThreads, 0, stream>>>(a, b, n, vec);
  IRIS_CUDA_CHECK_LAUNCH();
}

void launch_gelu_tanh_mul(const bf16* gate_up, int64_t rows, int64_t inter, bf16* out,
                          cudaStream_t stream) {
  if (rows == 0 || inter == 0) return;
  constexpr int kThreads = 256;
  gelu_tanh_mul_kernel<<<grid_for(rows * inter, kThreads), kThreads, 0, stream>>>(gate_up, rows,
                                                                                  inter, out);
  IRIS_CUDA_CHECK_LAUNCH();
}

void launch_scale_or_softcap(void* x, bool f32, int64_t n, float s, bool softcap,
                             cudaStream_t stream) {
  if (n == 0) return;
  constexpr int kThreads = 256;
  if (f32)
    scale_or_softcap_kernel<float><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<float*>(x), n, s, softcap ? 1 : 0);
  else
    scale_or_softcap_kernel<bf16><<<grid_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<bf16*>(x), n, s, softcap ? 1 : 0);
  IRIS_CUDA_CHECK_LAUNCH();
}

void launch_add_bias_f32(float* out, const bf16* bias, int64_t rows, int64_t cols,
                         cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  constexpr int kThreads = 256;
  add_bias_f32_kernel<<<grid_for(rows * cols, kThreads), kThreads, 0, stream>>>(out, bias, rows,
                                                                                cols);
  IRIS_CUDA_CHECK_LAUNCH();
}

}  // namespace iris::cuda
