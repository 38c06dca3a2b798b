// Helpers of the GPU tests: one CPU reference backend and CUDA backends shared by all
// tests, tensors holding the same bf16-representable random values on both backends,
// output poisoning (NaN bytes, so unwritten elements fail) and error metrics.
//
// Error thresholds used across the tests (relative L2 error ||gpu - cpu|| / ||cpu||, plus
// a per-element bound of the same size relative to the largest reference magnitude):
//   exact copies (embedding, gather/scatter, KV store of v):            0
//   one bf16 rounding of an fp32 result (norms, activations, rope, bf16 GEMM outputs):
//     bf16 has 8 significant bits, rounding error <= 2^-9 relative, ~2^-10 rms:  1e-2
//   fp32 GEMM output (logits):                                          1e-3
//   attention (tiled kernels round P to bf16 for the tensor cores):     2e-2
//   attention (rowwise fp32 kernel):                                    1e-2
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "engine/backend.h"

namespace iris::gpu_test {

Backend& cpu();
// The default CUDA backend (tiled attention) and one that uses the rowwise kernel.
Backend& gpu();
Backend& gpu_rowwise();

// The same values on both backends: F32 on the CPU, BF16 (exactly representable) on the GPU.
struct Pair {
  Buffer c, g;
  std::vector<float> host;
  Tensor& cpu() { return c.tensor; }
  Tensor& gpu() { return g.tensor; }
};

// Normal(0, scale) values rounded to bf16; never all zero.
std::vector<float> random_bf16_values(int64_t n, uint32_t seed, float scale = 1.0f);
Pair random_pair(Shape shape, uint32_t seed, float scale = 1.0f);
Pair pair_from(const std::vector<float>& values, Shape shape);
// An F32 tensor on both backends (e.g. inv_freq, which stays F32 on the GPU too).
Pair f32_pair(const std::vector<float>& values, Shape shape);
// I32 tensors on both backends.
struct IntPair {
  Buffer c, g;
};
IntPair int_pair(const std::vector<int32_t>& values);
// A BF16 tensor on the GPU and F32 on the CPU, filled with NaN bytes on the GPU.
Pair output_pair(Shape shape, DType gpu_dtype = DType::BF16);
void poison(Tensor& gpu_tensor);

std::vector<float> download(Backend& b, const Tensor& t);

struct ErrorStats {
  double rel_l2 = 0.0;
  double max_abs = 0.0;
  double ref_max = 0.0;
  int64_t nonfinite = 0;
  int64_t worst_index = -1;
};
ErrorStats compare(const std::vector<float>& ref, const std::vector<float>& got);
// REQUIREs got ~ ref within `tol` (see the header comment), with a readable message.
void require_close(const std::vector<float>& ref, const std::vector<float>& got, double tol,
                   const std::string& what);

// Row by row: each run of `row_len` values (an attention output row of one (token, head), a
// GEMM output row) must satisfy ||got_r - ref_r|| <= tol * ||ref_r||, so one wrong row cannot
// hide in the norm of a large tensor of right ones (a 4,100-token split-KV row among short
// rows, say). On failure the message names the worst row through `name_row` (its index
// otherwise), its error and norm, and how many rows are over the bound.
struct RowErrors {
  int64_t rows = 0, over = 0, nonfinite = 0;
  int64_t worst = -1;  // the row with the largest relative error
  double worst_rel = 0.0, worst_norm = 0.0;
};
RowErrors row_errors(const std::vector<float>& ref, const std::vector<float>& got, int64_t row_len,
                     double tol);
void require_rows_close(const std::vector<float>& ref, const std::vector<float>& got,
                        int64_t row_len, double tol, const std::string& what,
                        const std::function<std::string(int64_t)>& name_row = {});

}  // namespace iris::gpu_test
