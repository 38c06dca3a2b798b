// cuBLASLt GEMM (see gemm.h). cuBLASLt is column-major, so row-major out = x @ w^T is
// computed as out^T = w @ x^T read column-major: A = w seen as a k x n matrix (ld k) and
// transposed, B = x seen as k x m (ld k), D = out seen as n x m (ld n) -- the "TN" layout
// cuBLASLt's Hopper kernels prefer. The bias epilogue adds a vector along D's rows (n).
#include "cuda/gemm.h"

#include <string>

#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "engine/core/check.h"

namespace iris::cuda {
namespace {

#define IRIS_CUBLAS_CHECK(expr)                                                            \
  do {                                                                                     \
    const cublasStatus_t iris_st_ = (expr);                                                \
    if (iris_st_ != CUBLAS_STATUS_SUCCESS)                                                 \
      ::iris::fail(#expr, " failed: cuBLAS status ", static_cast<int>(iris_st_), " (",     \
                   cublasLtGetStatusString(iris_st_), ", ", __FILE__, ":", __LINE__, ")"); \
  } while (0)

int alignment(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  int a = 1;
  while (a < 256 && (v & static_cast<uintptr_t>(2 * a - 1)) == 0) a *= 2;
  return a;
}

}  // namespace

Gemm::Gemm(size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  IRIS_CUBLAS_CHECK(cublasLtCreate(&handle_));
  IRIS_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

Gemm::~Gemm() {
  for (auto& [key, p] : fp8_plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.op);
  }
  for (auto& [key, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.op);
  }
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

Gemm::Plan& Gemm::plan(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  const auto [m, n, k, out_dt, bias, align_x, align_w, align_out] = key;
  const cudaDataType_t out_type =
      static_cast<DType>(out_dt) == DType::F32 ? CUDA_R_32F : CUDA_R_16BF;
  Plan p;
  IRIS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  IRIS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  IRIS_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    IRIS_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  }
  // Column-major: A = w as k x n (ld k), B = x as k x m (ld k), C = D = out^T as n x m (ld n).
  IRIS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, k, n, k));
  IRIS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, k, m, k));
  IRIS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, out_type, n, m, n));

  pick_algo(p, align_w, align_x, align_out,
            "cuda linear: cuBLASLt has no algorithm for m=" + std::to_string(m) + " n=" +
                std::to_string(n) + " k=" + std::to_string(k) + " out " +
                std::string(dtype_name(static_cast<DType>(out_dt))) + (bias ? " with bias" : ""));
  return plans_.emplace(key, p).first->second;
}

void Gemm::pick_algo(Plan& p, uint32_t align_a, uint32_t align_b, uint32_t align_c,
                     const std::string& what) {
  cublasLtMatmulPreference_t pref = nullptr;
  IRIS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_bytes_;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                       sizeof(ws));
  // The heuristic assumes 256-byte aligned matrices unless told otherwise; row views of
  // activation buffers can be less aligned, so say what each pointer really is.
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                       sizeof(align_a));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                       sizeof(align_b));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                       sizeof(align_c));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                       sizeof(align_c));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.op);
    fail(what, " (status ", cublasLtGetStatusString(st), ")");
  }
  p.algo = result.algo;
}

void Gemm::linear(const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* bias,
                  void* out, DType out_dtype, int64_t m, int64_t n, int64_t k,
                  cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  IRIS_CHECK(k > 0) << "cuda linear: k = " << k;
  IRIS_CHECK(out_dtype == DType::BF16 || out_dtype == DType::F32)
      << "cuda linear: output dtype " << dtype_name(out_dtype);
  // cuBLASLt's bias epilogue takes the bias in D's type; for F32 outputs (logits) a bf16
  // bias is added by a separate kernel instead.
  const bool epilogue_bias = bias != nullptr && out_dtype == DType::BF16;
  const Key key{m,
                n,
                k,
                static_cast<int>(out_dtype),
                epilogue_bias,
                alignment(x),
                alignment(w),
                alignment(out)};
  Plan& p = plan(key);
  if (epilogue_bias) {
    IRIS_CHECK(alignment(bias) >= 16) << "cuda linear: bias pointer is not 16-byte aligned";
    IRIS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                     sizeof(bias)));
  }
  const float alpha = 1.0f, beta = 0.0f;
  IRIS_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, out, p.c, out, p.c,
                                   &p.algo, workspace_, workspace_bytes_, stream));
  if (bias != nullptr && !epilogue_bias)
    launch_add_bias_f32(static_cast<float*>(out), bias, m, n, stream);
}

void Gemm::linear_fp8(const uint8_t* x, const uint8_t* w, const float* x_scale,
                      const float* w_scale, float* acc, int64_t m, int64_t n, int64_t k,
                      cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  IRIS_CHECK(k > 0 && k % 16 == 0 && n % 16 == 0)
      << "cuda fp8 linear: k = " << k << ", n = " << n << " (both must be multiples of 16)";
  IRIS_CHECK(alignment(x) >= 16 && alignment(w) >= 16 && alignment(acc) >= 16)
      << "cuda fp8 linear: operands must be 16-byte aligned";
  const std::tuple<int64_t, int64_t, int64_t> key{m, n, k};
  auto it = fp8_plans_.find(key);
  if (it == fp8_plans_.end()) {
    Plan p;
    IRIS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;  // FP8 needs the TN layout
    IRIS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    IRIS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    IRIS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8F_E4M3, k, n, k));
    IRIS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8F_E4M3, k, m, k));
    IRIS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, n, m, n));
    // Operands are only known to be 16-byte aligned (checked above).
    pick_algo(p, 16, 16, 16,
              "cuda fp8 linear: cuBLASLt has no FP8 algorithm for m=" + std::to_string(m) + " n=" +
                  std::to_string(n) + " k=" + std::to_string(k) + " (FP8 needs sm_89 or newer)");
    it = fp8_plans_.emplace(key, p).first;
  }
  Plan& p = it->second;
  IRIS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                   &w_scale, sizeof(w_scale)));
  IRIS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                   &x_scale, sizeof(x_scale)));
  const float alpha = 1.0f, beta = 0.0f;
  IRIS_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, acc, p.c, acc,
                                   p.c, &p.algo, workspace_, workspace_bytes_, stream));
}

}  // namespace iris::cuda
