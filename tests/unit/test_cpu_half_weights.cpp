// The CPU backend's 16-bit weight matrices: the bf16/f16 × fp32 kernels (row kernel and the
// tile-conversion + sgemm path) against a float64 reference on odd shapes, and the backend
// around them (upload rounding, range errors, download, linear with bias, embedding rows).
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "engine/backend.h"
#include "engine/core/dtype.h"
#include "engine/cpu/cpu_gemm.h"
#include "engine/cpu/thread_pool.h"

namespace iris {
namespace {

uint16_t to_half(float f, DType d) { return d == DType::BF16 ? f32_to_bf16(f) : f32_to_f16(f); }
float from_half(uint16_t h, DType d) { return d == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h); }

struct Case {
  int64_t m, k, n;
};

// y = x · wᵀ in float64 over the weights as stored; also Σ|x·w| per output, which bounds
// the fp32 rounding of any summation order: |err| ≤ k · 2⁻²⁴ · Σ|x·w| (with slack).
void reference(const std::vector<float>& x, const std::vector<uint16_t>& w, DType d, Case c,
               std::vector<double>& y, std::vector<double>& mag) {
  y.assign(c.m * c.n, 0.0);
  mag.assign(c.m * c.n, 0.0);
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t r = 0; r < c.n; ++r)
      for (int64_t j = 0; j < c.k; ++j) {
        const double p = static_cast<double>(x[i * c.k + j]) * from_half(w[r * c.k + j], d);
        y[i * c.n + r] += p;
        mag[i * c.n + r] += std::abs(p);
      }
}

TEST_CASE("bf16/f16 weight kernels match a float64 reference on odd shapes", "[cpu][half]") {
  const std::vector<Case> cases = {{1, 1, 1},   {1, 13, 7},  {1, 64, 9},   {1, 771, 33},
                                   {3, 16, 5},  {11, 37, 6}, {12, 37, 33}, {17, 45, 9},
                                   {17, 100, 31}, {40, 8, 17}, {64, 257, 130}};
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  double worst = 0.0;
  for (DType d : {DType::BF16, DType::F16}) {
    for (int threads : {1, 3}) {
      cpu::ThreadPool pool(threads);
      std::vector<float> scratch;
      for (const Case& c : cases) {
        std::vector<float> x(c.m * c.k);
        std::vector<uint16_t> w(c.n * c.k);
        for (float& v : x) v = nd(rng);
        for (uint16_t& v : w) v = to_half(0.5f * nd(rng), d);
        std::vector<double> ref, mag;
        reference(x, w, d, c, ref, mag);
        std::vector<float> y(c.m * c.n, NAN), y_rows(c.m * c.n, NAN), y_tiles(c.m * c.n, NAN);
        cpu::linear_half(pool, x.data(), c.m, c.k, w.data(), d, c.n, y.data(), scratch);
        cpu::linear_half_rows(pool, x.data(), c.m, c.k, w.data(), d, c.n, y_rows.data());
        cpu::linear_half_tiles(pool, x.data(), c.m, c.k, w.data(), d, c.n, y_tiles.data(), scratch);
        INFO(dtype_name(d) << " threads " << threads << " m " << c.m << " k " << c.k << " n " << c.n);
        for (int64_t i = 0; i < c.m * c.n; ++i) {
          REQUIRE(std::isfinite(y[i]));
          REQUIRE(std::isfinite(y_rows[i]));
          const double bound = static_cast<double>(c.k) * 6e-8 * mag[i] + 1e-30;
          REQUIRE(std::abs(y[i] - ref[i]) <= bound);
          REQUIRE(std::abs(y_rows[i] - ref[i]) <= bound);
          REQUIRE(std::isfinite(y_tiles[i]));
          REQUIRE(std::abs(y_tiles[i] - ref[i]) <= bound);
          worst = std::max(worst, std::abs(y[i] - ref[i]) / std::max(mag[i], 1e-30));
        }
      }
    }
  }
  // Every output written and close: the relative error is at fp32 level, far below the
  // 2⁻⁸ of a bf16 rounding of the activations.
  CHECK(worst < 1e-5);
}

TEST_CASE("half_to_f32 converts every element exactly", "[cpu][half]") {
  for (DType d : {DType::BF16, DType::F16}) {
    std::vector<uint16_t> src;
    for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 3.140625f, 1e-3f, -65504.0f, 0.333f, 7.0f, 1e-5f,
                    2.0f, -1.0f, 100.0f, 0.5f, 0.25f, 9.0f, 11.0f})
      src.push_back(to_half(f, d));
    std::vector<float> dst(src.size());
    cpu::half_to_f32(src.data(), d, dst.data(), static_cast<int64_t>(src.size()));
    for (size_t i = 0; i < src.size(); ++i) CHECK(dst[i] == from_half(src[i], d));
  }
  std::vector<float> dst(1);
  const uint16_t one = 0x3c00;
  CHECK_THROWS_WITH(cpu::half_to_f32(&one, DType::F32, dst.data(), 1),
                    Catch::Contains("must be BF16 or F16"));
}

TEST_CASE("CPU backend with bf16/f16 weight matrices", "[cpu][half]") {
  for (DType d : {DType::BF16, DType::F16}) {
    INFO(dtype_name(d));
    auto backend = make_cpu_backend(2, d);
    CHECK(backend->weight_dtype() == d);
    CHECK(backend->compute_dtype() == DType::F32);
    const int64_t m = 5, k = 19, n = 7;
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> ud(-1.0f, 1.0f);
    std::vector<float> wf(n * k), xf(m * k), bf(n);
    for (float& v : wf) v = ud(rng);
    for (float& v : xf) v = ud(rng);
    for (float& v : bf) v = ud(rng);

    // Upload from fp32 rounds to nearest even; download returns the stored values.
    Buffer w = backend->allocate(d, {n, k});
    backend->upload(wf.data(), DType::F32, w.tensor);
    std::vector<float> back(n * k);
    backend->download_f32(w.tensor, back.data());
    for (int64_t i = 0; i < n * k; ++i) REQUIRE(back[i] == from_half(to_half(wf[i], d), d));
    // Upload of the same 16-bit type is a copy; bf16 → f16 goes through fp32.
    std::vector<uint16_t> bits(n * k);
    for (int64_t i = 0; i < n * k; ++i) bits[i] = f32_to_bf16(wf[i]);
    backend->upload(bits.data(), DType::BF16, w.tensor);
    backend->download_f32(w.tensor, back.data());
    for (int64_t i = 0; i < n * k; ++i) REQUIRE(back[i] == from_half(to_half(bf16_to_f32(bits[i]), d), d));

    // linear with a bias against fp64 over the stored weights.
    Buffer x = backend->allocate(DType::F32, {m, k});
    Buffer b = backend->allocate(DType::F32, {n});
    Buffer y = backend->allocate(DType::F32, {m, n});
    backend->upload(xf.data(), DType::F32, x.tensor);
    backend->upload(bf.data(), DType::F32, b.tensor);
    backend->ops().linear(x.tensor, w.tensor, b.tensor, y.tensor);
    std::vector<float> yo(m * n);
    backend->download_f32(y.tensor, yo.data());
    for (int64_t i = 0; i < m; ++i)
      for (int64_t r = 0; r < n; ++r) {
        double s = bf[r];
        for (int64_t j = 0; j < k; ++j) s += static_cast<double>(xf[i * k + j]) * back[r * k + j];
        REQUIRE(std::abs(yo[i * n + r] - s) < 1e-5);
      }

    // Embedding rows from a 16-bit table (and the vocabulary shard of one).
    int32_t ids_host[3] = {6, 0, 3};
    Buffer ids = backend->allocate(DType::I32, {3});
    backend->upload_i32(ids_host, ids.tensor);
    Buffer e = backend->allocate(DType::F32, {3, k});
    backend->ops().embedding(ids.tensor, w.tensor, e.tensor);
    std::vector<float> eo(3 * k);
    backend->download_f32(e.tensor, eo.data());
    for (int t = 0; t < 3; ++t)
      for (int64_t j = 0; j < k; ++j) REQUIRE(eo[t * k + j] == back[ids_host[t] * k + j]);
    backend->ops().embedding_shard(ids.tensor, w.tensor.rows(2, 5), 2, e.tensor);
    backend->download_f32(e.tensor, eo.data());
    for (int64_t j = 0; j < k; ++j) {
      REQUIRE(eo[j] == back[6 * k + j]);
      REQUIRE(eo[k + j] == 0.0f);  // id 0 is outside rows [2, 7)
      REQUIRE(eo[2 * k + j] == back[3 * k + j]);
    }
  }
}

TEST_CASE("16-bit weight uploads reject NaN and f16 overflow", "[cpu][half]") {
  auto f16 = make_cpu_backend(1, DType::F16);
  Buffer w = f16->allocate(DType::F16, {2});
  const float big[2] = {1.0f, 1e6f};
  CHECK_THROWS_WITH(f16->upload(big, DType::F32, w.tensor), Catch::Contains("outside the F16 range"));
  const float nan[2] = {1.0f, NAN};
  CHECK_THROWS_WITH(f16->upload(nan, DType::F32, w.tensor), Catch::Contains("NaN"));
  auto bf16 = make_cpu_backend(1, DType::BF16);
  Buffer wb = bf16->allocate(DType::BF16, {2});
  CHECK_NOTHROW(bf16->upload(big, DType::F32, wb.tensor));  // bf16 has fp32's range
  CHECK_THROWS_WITH(bf16->upload(nan, DType::F32, wb.tensor), Catch::Contains("NaN"));
  CHECK_THROWS_WITH(make_cpu_backend(1, DType::I32), Catch::Contains("CPU weight dtype"));
}

}  // namespace
}  // namespace iris
