// The CPU backend's packed quantized weights (engine/core/packed_weight.h): the element
// formula of each layout (FP8 + group scales, int4 + zero points, g_idx, a column phase),
// slicing and fusing, and linear_packed / the backend's linear against a float64 product
// over the decoded weights, on odd shapes and row counts on both sides of the tile size.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "engine/backend.h"
#include "engine/core/dtype.h"
#include "engine/core/packed_weight.h"
#include "engine/cpu/cpu_gemm.h"
#include "engine/cpu/thread_pool.h"

namespace iris {
namespace {

// A random packed weight of the given layout; `gidx` picks a scattered group per column.
PackedWeight random_weight(PackedWeight::Kind kind, int64_t rows, int64_t cols, int64_t group,
                           int64_t phase, bool gidx, std::mt19937& rng) {
  PackedWeight w;
  w.kind = kind;
  w.rows = rows;
  w.cols = cols;
  w.group_size = group;
  w.col_phase = phase;
  w.groups_per_row = (cols - 1 + phase) / group + 1;
  std::uniform_int_distribution<int> byte(0, 255), fp8(0, 0x7E), zero(0, 15);
  std::uniform_real_distribution<float> scale(0.001f, 0.05f);
  w.codes.resize(static_cast<size_t>(rows * w.row_bytes()));
  for (auto& c : w.codes) {
    c = static_cast<uint8_t>(kind == PackedWeight::Kind::kFp8 ? fp8(rng) | (byte(rng) & 0x80) : byte(rng));
  }
  w.scales.resize(static_cast<size_t>(rows * w.groups_per_row));
  for (auto& s : w.scales) s = scale(rng);
  if (kind == PackedWeight::Kind::kInt4) {
    w.zeros.resize(w.scales.size());
    for (auto& z : w.zeros) z = static_cast<int8_t>(zero(rng));
  }
  PackedWeight::Segment seg{rows, {}};
  if (gidx) {
    std::uniform_int_distribution<int32_t> g(0, static_cast<int32_t>(w.groups_per_row - 1));
    for (int64_t c = 0; c < cols; ++c) seg.gidx.push_back(g(rng));
  }
  w.segments.push_back(seg);
  w.validate("random weight");
  return w;
}

// Element (r, c) straight from the layout's formula.
float element(const PackedWeight& w, int64_t r, int64_t c) {
  const auto& seg = w.segments.front();
  const int64_t g = seg.gidx.empty() ? (c + w.col_phase) / w.group_size : seg.gidx[c];
  const float s = w.scales[r * w.groups_per_row + g];
  if (w.kind == PackedWeight::Kind::kFp8) return fp8_e4m3_to_f32(w.codes[r * w.cols + c]) * s;
  const int q = (w.codes[r * w.row_bytes() + c / 2] >> (4 * (c % 2))) & 0xF;
  return static_cast<float>(q - w.zeros[r * w.groups_per_row + g]) * s;
}

struct Layout {
  PackedWeight::Kind kind;
  int64_t group, phase;
  bool gidx;
};

const Layout kLayouts[] = {
    {PackedWeight::Kind::kFp8, 128, 0, false},  // 128x128 blocks (repeated per row)
    {PackedWeight::Kind::kFp8, 100, 37, false}, // a row-parallel shard of channel scales
    {PackedWeight::Kind::kInt4, 32, 0, false},  // AWQ / GPTQ groups
    {PackedWeight::Kind::kInt4, 64, 13, false}, // a shard that cuts a group
    {PackedWeight::Kind::kInt4, 32, 0, true},   // GPTQ desc_act
};

TEST_CASE("packed weights dequantize by their formula; slices and fused rows keep every bit",
          "[cpu][packed]") {
  std::mt19937 rng(11);
  for (const Layout& l : kLayouts) {
    const int64_t rows = 19, cols = 203;
    const PackedWeight w = random_weight(l.kind, rows, cols, l.group, l.phase, l.gidx, rng);
    std::vector<float> all(static_cast<size_t>(rows * cols));
    w.dequantize_rows(0, rows, all.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) REQUIRE(all[r * cols + c] == element(w, r, c));

    for (const int64_t c0 : {int64_t{0}, int64_t{1}, int64_t{33}, int64_t{128}}) {
      const int64_t n = cols - c0 - 7;
      const PackedWeight s = w.slice_cols(c0, n);
      s.validate("column slice");
      std::vector<float> part(static_cast<size_t>(rows * n));
      s.dequantize_rows(0, rows, part.data());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < n; ++c) REQUIRE(part[r * n + c] == all[r * cols + c0 + c]);
      if (!l.gidx) CHECK(s.groups_per_row <= (n - 1 + s.col_phase) / l.group + 1);
    }
    PackedWeight fused = w.slice_rows(0, 4);
    fused.append_rows(w.slice_rows(4, rows - 4), "fused");
    fused.validate("fused");
    std::vector<float> again(all.size());
    fused.dequantize_rows(0, rows, again.data());
    CHECK(again == all);
  }
}

TEST_CASE("every non-NaN e4m3 code dequantizes to fp8_e4m3_to_f32 times its scale",
          "[cpu][packed]") {
  PackedWeight w;
  w.kind = PackedWeight::Kind::kFp8;
  w.rows = 2;
  w.cols = 254;
  w.group_size = 254;
  w.groups_per_row = 1;
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 256; ++c)
      if ((c & 0x7F) != 0x7F) w.codes.push_back(static_cast<uint8_t>(c));
  w.scales = {1.0f, 0.0371f};
  w.segments.push_back({2, {}});
  w.validate("all codes");
  std::vector<float> got(2 * 254);
  w.dequantize_rows(0, 2, got.data());
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 254; ++c) {
      const float want = fp8_e4m3_to_f32(w.codes[r * 254 + c]) * w.scales[r];
      uint32_t a, b;
      std::memcpy(&a, &got[r * 254 + c], 4);
      std::memcpy(&b, &want, 4);
      CAPTURE(r, c, got[r * 254 + c], want);
      REQUIRE(a == b);
    }
}

TEST_CASE("fusing packed weights of different layouts is refused by name", "[cpu][packed]") {
  std::mt19937 rng(3);
  PackedWeight a = random_weight(PackedWeight::Kind::kInt4, 4, 64, 32, 0, false, rng);
  const PackedWeight b = random_weight(PackedWeight::Kind::kInt4, 4, 64, 16, 0, false, rng);
  CHECK_THROWS_WITH(a.append_rows(b, "layers.0.mlp.up_proj.weight"),
                    Catch::Contains("layers.0.mlp.up_proj.weight") &&
                        Catch::Contains("different layouts"));
}

TEST_CASE("linear over packed weights matches a float64 product of the decoded weights",
          "[cpu][packed]") {
  std::mt19937 rng(5);
  cpu::ThreadPool pool(2);
  std::vector<float> scratch;
  for (const Layout& l : kLayouts) {
    for (const int64_t m : {int64_t{1}, int64_t{3}, int64_t{17}}) {
      // 300 columns: a tile is 1744 rows, so 2000 rows take two tiles.
      for (const int64_t n : {int64_t{5}, int64_t{2000}}) {
        const int64_t k = 300;
        const PackedWeight w = random_weight(l.kind, n, k, l.group, l.phase, l.gidx, rng);
        std::vector<float> dense(static_cast<size_t>(n * k));
        w.dequantize_rows(0, n, dense.data());
        std::normal_distribution<float> d(0.0f, 1.0f);
        std::vector<float> x(static_cast<size_t>(m * k));
        for (float& v : x) v = d(rng);
        std::vector<float> y(static_cast<size_t>(m * n), NAN);
        cpu::linear_packed(pool, x.data(), m, w, y.data(), scratch);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t r = 0; r < n; ++r) {
            double ref = 0.0, mag = 0.0;
            for (int64_t j = 0; j < k; ++j) {
              const double p = static_cast<double>(x[i * k + j]) * dense[r * k + j];
              ref += p;
              mag += std::abs(p);
            }
            REQUIRE(std::abs(y[i * n + r] - ref) <= 4.0 * k * std::ldexp(1.0, -24) * mag + 1e-30);
          }
      }
    }
  }
}

TEST_CASE("the CPU backend's linear takes packed weights; a backend without them refuses",
          "[cpu][packed]") {
  std::mt19937 rng(9);
  const int64_t m = 2, k = 96, n = 24;
  PackedWeight w = random_weight(PackedWeight::Kind::kInt4, n, k, 32, 0, false, rng);
  std::vector<float> dense(static_cast<size_t>(n * k));
  w.dequantize_rows(0, n, dense.data());

  auto plain = make_cpu_backend(1);
  CHECK_FALSE(plain->keeps_weights_packed());
  CHECK_THROWS_WITH(plain->upload_packed(w), Catch::Contains("not enabled"));

  auto backend = make_cpu_backend(1, DType::F32, /*packed_weights=*/true);
  REQUIRE(backend->keeps_weights_packed());
  Buffer pw = backend->upload_packed(w);
  CHECK(pw.tensor.dtype == DType::PACKED);
  CHECK(pw.tensor.shape == Shape{n, k});
  Buffer x = backend->allocate(DType::F32, {m, k});
  std::vector<float> xs(static_cast<size_t>(m * k));
  for (int64_t i = 0; i < m * k; ++i) xs[i] = static_cast<float>((i % 7) - 3) * 0.25f;
  backend->upload(xs.data(), DType::F32, x.tensor);
  Buffer bias = backend->allocate(DType::F32, {n});
  std::vector<float> bs(static_cast<size_t>(n), 0.5f);
  backend->upload(bs.data(), DType::F32, bias.tensor);
  Buffer out = backend->allocate(DType::F32, {m, n});
  backend->ops().linear(x.tensor, pw.tensor, bias.tensor, out.tensor);
  std::vector<float> got(static_cast<size_t>(m * n));
  backend->download_f32(out.tensor, got.data());
  for (int64_t i = 0; i < m; ++i)
    for (int64_t r = 0; r < n; ++r) {
      double ref = 0.5;
      for (int64_t j = 0; j < k; ++j) ref += static_cast<double>(xs[i * k + j]) * dense[r * k + j];
      CHECK(got[i * n + r] == Approx(ref).margin(1e-4));
    }
}

}  // namespace
}  // namespace iris
