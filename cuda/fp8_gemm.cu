// The kernels around the cuBLASLt FP8 GEMM (gemm.h, Gemm::linear_fp8) for FP8 weights with
// per-tensor or per-channel scales whose format quantizes activations dynamically per token
// (compressed-tensors FP8_DYNAMIC, fbgemm_fp8, fp8 with activation_scheme dynamic):
//   1. quantize_rows_fp8: each activation row to e4m3 with its own scale amax / 448
//      (saturating, round to nearest even), as vLLM's dynamic per-token quantization does;
//   2. cuBLASLt multiplies the e4m3 operands into fp32;
//   3. scale_rows_cols: out[m, n] = acc[m, n] * row_scale[m] * col_scale[n] (+ bias[n]),
//      the per-token and per-channel scales as an epilogue.
#include <cuda_fp8.h>

#include "cuda/common.cuh"
#include "cuda/packed_gemm.h"

namespace iris::cuda {
namespace {

constexpr float kE4m3Max = 448.0f;

__global__ void quantize_rows_fp8_kernel(const bf16* __restrict__ x, int64_t k,
                                         __nv_fp8_e4m3* __restrict__ xq, float* __restrict__ row_scale) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const bf16* xr = x + row * k;
  float amax = 0.0f;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) amax = fmaxf(amax, fabsf(to_f32(xr[i])));
  amax = block_max(amax, scratch);
  // An all-zero row keeps scale 1 (its codes are all zero either way).
  const float scale = amax > 0.0f ? amax / kE4m3Max : 1.0f;
  if (threadIdx.x == 0) row_scale[row] = scale;
  const float inv = 1.0f / scale;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x)
    xq[row * k + i] = __nv_fp8_e4m3(fminf(fmaxf(to_f32(xr[i]) * inv, -kE4m3Max), kE4m3Max));
}

template <bool kF32Out>
__global__ void scale_rows_cols_kernel(const float* __restrict__ acc, const float* __restrict__ row_scale,
                                       const float* __restrict__ col_scale, const bf16* __restrict__ bias,
                                       void* __restrict__ out, int64_t m, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= m * n) return;
  const int64_t r = i / n, c = i % n;
  float v = acc[i] * row_scale[r] * col_scale[c];
  if (bias) v += to_f32(bias[c]);
  if constexpr (kF32Out) {
    static_cast<float*>(out)[i] = v;
  } else {
    static_cast<bf16*>(out)[i] = to_bf16(v);
  }
}

}  // namespace

void launch_quantize_rows_fp8(const bf16* x, int64_t m, int64_t k, uint8_t* xq, float* row_scale,
                              cudaStream_t stream) {
  if (m == 0) return;
  quantize_rows_fp8_kernel<<<static_cast<unsigned>(m), 256, 0, stream>>>(
      x, k, reinterpret_cast<__nv_fp8_e4m3*>(xq), row_scale);
  IRIS_CUDA_CHECK(cudaGetLastError());
}

void launch_scale_rows_cols(const float* acc, const float* row_scale, const float* col_scale,
                            const bf16* bias, void* out, DType out_dtype, int64_t m, int64_t n,
                            cudaStream_t stream) {
  IRIS_CHECK(out_dtype == DType::F32 || out_dtype == DType::BF16)
      << "fp8 linear output must be F32 or BF16, got " << dtype_name(out_dtype);
  if (m == 0 || n == 0) return;
  const unsigned blocks = ceil_div(m * n, 256);
  if (out_dtype == DType::F32) {
    scale_rows_cols_kernel<true><<<blocks, 256, 0, stream>>>(acc, row_scale, col_scale, bias, out, m, n);
  } else {
    scale_rows_cols_kernel<false><<<blocks, 256, 0, stream>>>(acc, row_scale, col_scale, bias, out, m, n);
  }
  IRIS_CUDA_CHECK(cudaGetLastError());
}

}  // namespace iris::cuda
