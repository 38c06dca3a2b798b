// GPU test helpers (see gpu_test_util.h).
#include "tests/gpu/gpu_test_util.h"

#include <cuda_runtime_api.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>

#include "engine/core/dtype.h"

namespace iris::gpu_test {

Backend& cpu() {
  static std::unique_ptr<Backend> b = make_cpu_backend(0);
  return *b;
}

Backend& gpu() {
  static std::unique_ptr<Backend> b = [] {
    if (cuda_device_count() == 0)
      fail("no CUDA device: run these tests through skip_without_gpu (ctest -L gpu)");
    return make_cuda_backend(CudaBackendOptions{});
  }();
  return *b;
}

Backend& gpu_rowwise() {
  static std::unique_ptr<Backend> b = [] {
    gpu();  // same checks
    CudaBackendOptions o;
    o.rowwise_attention = true;
    return make_cuda_backend(o);
  }();
  return *b;
}

std::vector<float> random_bf16_values(int64_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = bf16_to_f32(f32_to_bf16(dist(rng)));
  if (n > 0) v[0] = bf16_to_f32(f32_to_bf16(scale));  // never all zero
  return v;
}

Pair pair_from(const std::vector<float>& values, Shape shape) {
  IRIS_CHECK(static_cast<int64_t>(values.size()) == shape.numel()) << "pair_from size";
  Pair p;
  p.host = values;
  p.c = cpu().allocate(DType::F32, shape);
  p.g = gpu().allocate(DType::BF16, shape);
  cpu().upload(values.data(), DType::F32, p.c.tensor);
  gpu().upload(values.data(), DType::F32, p.g.tensor);
  return p;
}

Pair random_pair(Shape shape, uint32_t seed, float scale) {
  return pair_from(random_bf16_values(shape.numel(), seed, scale), shape);
}

Pair f32_pair(const std::vector<float>& values, Shape shape) {
  Pair p;
  p.host = values;
  p.c = cpu().allocate(DType::F32, shape);
  p.g = gpu().allocate(DType::F32, shape);
  cpu().upload(values.data(), DType::F32, p.c.tensor);
  gpu().upload(values.data(), DType::F32, p.g.tensor);
  return p;
}

IntPair int_pair(const std::vector<int32_t>& values) {
  IntPair p;
  const Shape s{static_cast<int64_t>(values.size())};
  p.c = cpu().allocate(DType::I32, s);
  p.g = gpu().allocate(DType::I32, s);
  if (!values.empty()) {
    cpu().upload_i32(values.data(), p.c.tensor);
    gpu().upload_i32(values.data(), p.g.tensor);
  }
  return p;
}

void poison(Tensor& t) {
  if (t.bytes() == 0) return;
  gpu().synchronize();
  REQUIRE(cudaMemset(t.data, 0xff, t.bytes()) == cudaSuccess);  // bf16/f32 NaN
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
}

Pair output_pair(Shape shape, DType gpu_dtype) {
  Pair p;
  p.c = cpu().allocate(DType::F32, shape);
  p.g = gpu().allocate(gpu_dtype, shape);
  poison(p.g.tensor);
  return p;
}

std::vector<float> download(Backend& b, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  b.download_f32(t, v.data());
  return v;
}

ErrorStats compare(const std::vector<float>& ref, const std::vector<float>& got) {
  ErrorStats s;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(ref[i])) {
      ++s.nonfinite;
      if (s.worst_index < 0) s.worst_index = static_cast<int64_t>(i);
      continue;
    }
    const double d = static_cast<double>(got[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
    s.ref_max = std::max(s.ref_max, std::abs(static_cast<double>(ref[i])));
    if (std::abs(d) > s.max_abs) {
      s.max_abs = std::abs(d);
      if (s.nonfinite == 0) s.worst_index = static_cast<int64_t>(i);
    }
  }
  s.rel_l2 = den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
  return s;
}

void require_close(const std::vector<float>& ref, const std::vector<float>& got, double tol,
                   const std::string& what) {
  REQUIRE(ref.size() == got.size());
  const ErrorStats s = compare(ref, got);
  std::ostringstream msg;
  msg << what << ": rel_l2 " << s.rel_l2 << ", max_abs " << s.max_abs << " (ref max " << s.ref_max
      << "), non-finite " << s.nonfinite;
  if (s.worst_index >= 0)
    msg << ", worst at " << s.worst_index << ": cpu " << ref[s.worst_index] << " gpu "
        << got[s.worst_index];
  INFO(msg.str());
  CHECK(s.nonfinite == 0);
  CHECK(s.rel_l2 <= tol);
  // Element-wise: no single element may be off by more than a few times the tolerance
  // relative to the tensor's scale (catches a wrong row hidden in a large tensor).
  CHECK(s.max_abs <= 8.0 * tol * std::max(s.ref_max, 1e-6));
}

RowErrors row_errors(const std::vector<float>& ref, const std::vector<float>& got, int64_t row_len,
                     double tol) {
  RowErrors e;
  e.rows = static_cast<int64_t>(ref.size()) / row_len;
  e.worst_rel = -1.0;
  for (int64_t r = 0; r < e.rows; ++r) {
    double num = 0.0, den = 0.0;
    bool finite = true;
    for (int64_t i = r * row_len; i < (r + 1) * row_len; ++i) {
      if (!std::isfinite(got[i]) || !std::isfinite(ref[i])) {
        finite = false;
        break;
      }
      const double d = static_cast<double>(got[i]) - ref[i];
      num += d * d;
      den += static_cast<double>(ref[i]) * ref[i];
    }
    // A row whose reference is ~0 is judged on an absolute scale instead.
    const double rel = finite ? std::sqrt(num) / std::max(std::sqrt(den), 1e-6)
                              : std::numeric_limits<double>::infinity();
    if (!finite) ++e.nonfinite;
    if (!(rel <= tol)) ++e.over;
    if (!(rel <= e.worst_rel)) {
      e.worst_rel = rel;
      e.worst = r;
      e.worst_norm = std::sqrt(den);
    }
  }
  return e;
}

void require_rows_close(const std::vector<float>& ref, const std::vector<float>& got,
                        int64_t row_len, double tol, const std::string& what,
                        const std::function<std::string(int64_t)>& name_row) {
  REQUIRE(ref.size() == got.size());
  REQUIRE(row_len > 0);
  REQUIRE(static_cast<int64_t>(ref.size()) % row_len == 0);
  const RowErrors e = row_errors(ref, got, row_len, tol);
  std::ostringstream msg;
  msg << what << ": " << e.rows << " rows of " << row_len << ", " << e.over << " over " << tol
      << " (" << e.nonfinite << " non-finite); worst row " << e.worst;
  if (e.worst >= 0 && name_row) msg << " [" << name_row(e.worst) << "]";
  msg << ": rel " << e.worst_rel << " of norm " << e.worst_norm;
  INFO(msg.str());
  CHECK(e.over == 0);
}

}  // namespace iris::gpu_test
