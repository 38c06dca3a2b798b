// cuBLASLt GEMM for linear layers: out[m, n] = x[m, k] @ w[n, k]^T (+ bias[n]) with bf16
// operands, fp32 accumulation and a bf16 or fp32 output. Matmul descriptors, layouts and
// the heuristic's algorithm are cached per shape (m, n, k, output dtype, bias, pointer
// alignments), so a steady-state step makes no heuristic queries; the workspace is
// allocated once, which keeps the calls capturable in a CUDA graph. Not thread-safe: one
// Gemm per backend, used from the thread that owns the backend's stream.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "engine/core/dtype.h"

namespace iris::cuda {

class Gemm {
 public:
  explicit Gemm(size_t workspace_bytes = size_t{32} << 20);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // x: [m, k] bf16; w: [n, k] bf16; bias: [n] bf16 or null; out: [m, n] of out_dtype
  // (BF16 or F32). Row-major throughout.
  void linear(const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* bias, void* out,
              DType out_dtype, int64_t m, int64_t n, int64_t k, cudaStream_t stream);

  // FP8: acc[m, n] = (a_scale * x[m, k]) @ (b_scale * w[n, k])^T in fp32, with x and w
  // e4m3 bytes and a_scale / b_scale device fp32 scalars (cuBLASLt's A/B scale pointers;
  // here A is w, B is x). k must be a multiple of 16 and every pointer 16-byte aligned.
  void linear_fp8(const uint8_t* x, const uint8_t* w, const float* x_scale, const float* w_scale,
                  float* acc, int64_t m, int64_t n, int64_t k, cudaStream_t stream);

  size_t cached_plans() const { return plans_.size() + fp8_plans_.size(); }

 private:
  // m, n, k, out dtype, bias epilogue, alignment of x, w, out (bytes, up to 256).
  using Key = std::tuple<int64_t, int64_t, int64_t, int, bool, int, int, int>;
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  Plan& plan(const Key& key);
  // Fills p.algo with cuBLASLt's first heuristic choice for p's descriptors, told the
  // operands' real alignments (bytes) of A, B and C/D; on failure destroys p's descriptors
  // and throws `what` with the status.
  void pick_algo(Plan& p, uint32_t align_a, uint32_t align_b, uint32_t align_c,
                 const std::string& what);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
  std::map<std::tuple<int64_t, int64_t, int64_t>, Plan> fp8_plans_;
};

}  // namespace iris::cuda
