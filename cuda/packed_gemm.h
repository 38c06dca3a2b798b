// The CUDA side of packed quantized weights (engine/core/packed_weight.h): the device view
// a packed weight is uploaded into (cuda_backend.cpp, CudaBackend::upload_packed) and the
// launcher of the tiled dequantize-and-multiply kernel (packed_gemm.cu).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/core/dtype.h"

namespace iris::cuda {

// Device pointers of one packed weight, [rows, cols] logical. Element (r, c) is
// fp8(codes[r, c]) * scales[r, g] or (nibble(codes[r], c) - zeros[r, g]) * scales[r, g] with
// g = gidx[row_segment[r], c] when gidx is set, else (c + col_phase) / group_size.
struct PackedWeightDevice {
  enum : int { kFp8 = 0, kInt4 = 1 };
  int kind = kFp8;
  int64_t rows = 0, cols = 0, row_bytes = 0;
  int64_t group_size = 1, col_phase = 0, groups_per_row = 1;
  const uint8_t* codes = nullptr;        // [rows, row_bytes]
  const float* scales = nullptr;         // [rows, groups_per_row]
  const int8_t* zeros = nullptr;         // [rows, groups_per_row] (4-bit only)
  const int32_t* gidx = nullptr;         // [segments, cols] or null
  const int32_t* row_segment = nullptr;  // [rows] (with gidx)
  // The format quantizes activations per token at run time (FP8 dynamic). With one scale
  // per row (per-tensor / per-channel) and k, n multiples of 16, linear then runs the
  // cuBLASLt FP8 GEMM (fp8_gemm.cu) instead of the weight-only kernel.
  bool dynamic_activations = false;
};

// out[m, w.rows] = x[m, w.cols] @ dequant(w)^T (+ bias[w.rows]); x, bias bf16; out F32 or
// BF16; fp32 accumulation.
void launch_packed_linear(const PackedWeightDevice& w, const __nv_bfloat16* x,
                          const __nv_bfloat16* bias, void* out, DType out_dtype, int64_t m,
                          cudaStream_t stream);

// ---- fp8_gemm.cu ----
// Per-token dynamic FP8: xq[r] = e4m3(x[r] / row_scale[r]), row_scale[r] = amax(x[r]) / 448.
// x: [m, k] bf16; xq: [m, k] e4m3 bytes; row_scale: [m] fp32.
void launch_quantize_rows_fp8(const __nv_bfloat16* x, int64_t m, int64_t k, uint8_t* xq,
                              float* row_scale, cudaStream_t stream);
// out[m, n] = acc[m, n] * row_scale[m] * col_scale[n] (+ bias[n]); out F32 or BF16.
void launch_scale_rows_cols(const float* acc, const float* row_scale, const float* col_scale,
                            const __nv_bfloat16* bias, void* out, DType out_dtype, int64_t m,
                            int64_t n, cudaStream_t stream);

}  // namespace iris::cuda
