// Linear layers over packed quantized weights (engine/core/packed_weight.h): FP8 e4m3 codes
// with per-tensor / per-channel / 128x128-block scales (all one layout: an fp32 scale per
// row and group of columns) and 4-bit weights with group scales and zero points (AWQ, GPTQ
// incl. g_idx, compressed-tensors W4A16). A straightforward tiled kernel: each block stages
// a 16 x 64 tile of activations (bf16 -> fp32) and dequantizes a 64 x 64 tile of weights
// into shared memory -- the same fp32 product code * scale or (q - zero) * scale as the
// CPU backend, so the weights are bit-identical to the CPU's -- then accumulates in fp32.
// Weight-only semantics: activations are not quantized. Not tensor-core code: correct
// first, ready for the first GPU run (tests/gpu/test_packed_gemm.cpp compares it with the
// CPU path).
#include "cuda/common.cuh"
#include "cuda/packed_gemm.h"

namespace iris::cuda {
namespace {

constexpr int kTileM = 16;   // activation rows per block
constexpr int kTileN = 64;   // output columns (weight rows) per block
constexpr int kTileK = 64;   // reduction slice per step
constexpr int kThreads = 256;

// OCP e4m3fn; NaN codes are refused when the checkpoint is loaded.
__device__ __forceinline__ float fp8_e4m3(uint8_t c) {
  const int e = (c >> 3) & 0xF, m = c & 7;
  const float v = e == 0 ? ldexpf(static_cast<float>(m), -9) : ldexpf(static_cast<float>(8 + m), e - 10);
  return (c & 0x80) ? -v : v;
}

__device__ __forceinline__ float packed_element(const PackedWeightDevice& w, int64_t r, int64_t c) {
  int64_t g;
  if (w.gidx) {
    g = w.gidx[static_cast<int64_t>(w.row_segment[r]) * w.cols + c];
  } else {
    g = (c + w.col_phase) / w.group_size;
  }
  const float s = w.scales[r * w.groups_per_row + g];
  const uint8_t* row = w.codes + r * w.row_bytes;
  if (w.kind == PackedWeightDevice::kFp8) return fp8_e4m3(row[c]) * s;
  const int q = (row[c >> 1] >> ((c & 1) * 4)) & 0xF;
  return static_cast<float>(q - w.zeros[r * w.groups_per_row + g]) * s;
}

template <bool kF32Out>
__global__ void __launch_bounds__(kThreads)
packed_linear_kernel(PackedWeightDevice w, const bf16* __restrict__ x, const bf16* __restrict__ bias,
                     void* __restrict__ out, int64_t m) {
  __shared__ float xs[kTileM][kTileK + 1];
  __shared__ float ws[kTileN][kTileK + 1];
  const int64_t n = w.rows, k = w.cols;
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTileM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTileN;
  const int t = threadIdx.x;
  const int mi = t / 16;  // this thread's activation row in the tile
  const int nj = t % 16;  // and its first output column (then +16, +32, +48)
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t k0 = 0; k0 < k; k0 += kTileK) {
    for (int i = t; i < kTileM * kTileK; i += kThreads) {
      const int r = i / kTileK, c = i % kTileK;
      const int64_t gr = m0 + r, gc = k0 + c;
      xs[r][c] = (gr < m && gc < k) ? to_f32(x[gr * k + gc]) : 0.0f;
    }
    for (int i = t; i < kTileN * kTileK; i += kThreads) {
      const int r = i / kTileK, c = i % kTileK;
      const int64_t gr = n0 + r, gc = k0 + c;
      ws[r][c] = (gr < n && gc < k) ? packed_element(w, gr, gc) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTileK; ++kk) {
      const float xv = xs[mi][kk];
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[q] = fmaf(xv, ws[nj + 16 * q][kk], acc[q]);
    }
    __syncthreads();
  }
  const int64_t row = m0 + mi;
  if (row >= m) return;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int64_t col = n0 + nj + 16 * q;
    if (col >= n) continue;
    float v = acc[q];
    if (bias) v += to_f32(bias[col]);
    if constexpr (kF32Out) {
      static_cast<float*>(out)[row * n + col] = v;
    } else {
      static_cast<bf16*>(out)[row * n + col] = to_bf16(v);
    }
  }
}

}  // namespace

void launch_packed_linear(const PackedWeightDevice& w, const bf16* x, const bf16* bias, void* out,
                          DType out_dtype, int64_t m, cudaStream_t stream) {
  IRIS_CHECK(out_dtype == DType::F32 || out_dtype == DType::BF16)
      << "packed linear output must be F32 or BF16, got " << dtype_name(out_dtype);
  IRIS_CHECK(w.kind == PackedWeightDevice::kFp8 || w.kind == PackedWeightDevice::kInt4)
      << "packed linear: unknown weight kind " << w.kind;
  if (m == 0 || w.rows == 0) return;
  const dim3 grid(static_cast<unsigned>((w.rows + kTileN - 1) / kTileN),
                  static_cast<unsigned>((m + kTileM - 1) / kTileM));
  if (out_dtype == DType::F32) {
    packed_linear_kernel<true><<<grid, kThreads, 0, stream>>>(w, x, bias, out, m);
  } else {
    packed_linear_kernel<false><<<grid, kThreads, 0, stream>>>(w, x, bias, out, m);
  }
  IRIS_CUDA_CHECK(cudaGetLastError());
}

}  // namespace iris::cuda
