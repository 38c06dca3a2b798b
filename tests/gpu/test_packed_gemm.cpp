// The CUDA packed-weight linear (cuda/packed_gemm.cu) against the CPU backend's
// linear_packed on the same packed weights and the same bf16-representable activations:
// FP8 with 128x128-block and per-channel scales, 4-bit with group scales and zero points,
// GPTQ-style g_idx over fused segments, and a tensor-parallel shard whose first group is cut
// (col_phase). Both dequantize to the same fp32 weights; only the summation order differs,
// so F32 outputs must agree to 1e-4 (relative L2 and per row) and BF16 outputs to 1e-2 (one
// bf16 rounding).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>

#include "engine/core/packed_weight.h"
#include "tests/gpu/gpu_test_util.h"

using namespace iris;
using namespace iris::gpu_test;

namespace {

PackedWeight random_packed(PackedWeight::Kind kind, int64_t rows, int64_t cols, int64_t group,
                           int64_t phase, int segments_with_gidx, uint32_t seed) {
  std::mt19937 rng(seed);
  PackedWeight w;
  w.kind = kind;
  w.rows = rows;
  w.cols = cols;
  w.group_size = group;
  w.col_phase = phase;
  w.groups_per_row = (cols - 1 + phase) / group + 1;
  std::uniform_int_distribution<int> byte(0, 255), fp8(0, 0x7E), zero(0, 15);
  // Scales keep dequantized weights around 1/sqrt(cols).
  const float base = 1.0f / std::sqrt(static_cast<float>(cols));
  std::uniform_real_distribution<float> scale(0.05f * base, 0.2f * base);
  w.codes.resize(static_cast<size_t>(rows * w.row_bytes()));
  for (auto& c : w.codes)
    c = static_cast<uint8_t>(kind == PackedWeight::Kind::kFp8 ? (fp8(rng) | (byte(rng) & 0x80)) : byte(rng));
  w.scales.resize(static_cast<size_t>(rows * w.groups_per_row));
  for (auto& s : w.scales) s = kind == PackedWeight::Kind::kFp8 ? scale(rng) * 0.02f : scale(rng);
  if (kind == PackedWeight::Kind::kInt4) {
    w.zeros.resize(w.scales.size());
    for (auto& z : w.zeros) z = static_cast<int8_t>(zero(rng));
  }
  if (segments_with_gidx == 0) {
    w.segments.push_back({rows, {}});
  } else {
    std::uniform_int_distribution<int32_t> g(0, static_cast<int32_t>(w.groups_per_row - 1));
    for (int s = 0; s < segments_with_gidx; ++s) {
      PackedWeight::Segment seg{rows * (s + 1) / segments_with_gidx, {}};
      for (int64_t c = 0; c < cols; ++c) seg.gidx.push_back(g(rng));
      w.segments.push_back(seg);
    }
  }
  w.validate("random packed weight");
  return w;
}

}  // namespace

TEST_CASE("packed FP8 / 4-bit linear matches the CPU backend's packed linear", "[packed]") {
  struct Case {
    const char* what;
    PackedWeight::Kind kind;
    int64_t m, n, k, group, phase;
    int gidx_segments;
    bool bias;
    DType out;
  };
  const auto fp8 = PackedWeight::Kind::kFp8;
  const auto int4 = PackedWeight::Kind::kInt4;
  auto c = GENERATE_COPY(
      Case{"fp8 128x128 blocks, decode", fp8, 1, 4096, 4096, 128, 0, 0, false, DType::F32},
      Case{"fp8 128x128 blocks, prefill", fp8, 300, 1024, 4096, 128, 0, 0, true, DType::BF16},
      Case{"fp8 per-channel", fp8, 7, 2816, 1000, 1000, 0, 0, false, DType::F32},
      Case{"fp8 block shard cut at column 64", fp8, 33, 512, 960, 128, 64, 0, true, DType::F32},
      Case{"awq/w4a16 group 128", int4, 5, 6144, 4096, 128, 0, 0, false, DType::F32},
      Case{"4-bit group 64, odd k", int4, 17, 320, 1001, 64, 0, 0, true, DType::BF16},
      Case{"4-bit shard cut inside a group", int4, 64, 1024, 2048, 128, 96, 0, false, DType::F32},
      Case{"gptq desc_act, fused q|k|v g_idx", int4, 9, 1536, 1024, 32, 0, 3, true, DType::F32});
  CAPTURE(c.what, c.m, c.n, c.k);
  const PackedWeight w = random_packed(c.kind, c.n, c.k, c.group, c.phase, c.gidx_segments, 21);
  auto cpu_packed = make_cpu_backend(0, DType::F32, /*packed_weights=*/true);
  Buffer wc = cpu_packed->upload_packed(w);
  Buffer wg = gpu().upload_packed(w);
  REQUIRE(wg.tensor.dtype == DType::PACKED);
  Pair x = random_pair({c.m, c.k}, 22);
  Pair b = c.bias ? random_pair({c.n}, 23) : Pair{};
  Pair out = output_pair({c.m, c.n}, c.out);
  cpu_packed->ops().linear(x.cpu(), wc.tensor, c.bias ? b.cpu() : Tensor{}, out.cpu());
  gpu().ops().linear(x.gpu(), wg.tensor, c.bias ? b.gpu() : Tensor{}, out.gpu());
  const auto ref = download(*cpu_packed, out.cpu()), got = download(gpu(), out.gpu());
  const double tol = c.out == DType::F32 ? 1e-4 : 1e-2;
  require_close(ref, got, tol, std::string("packed linear: ") + c.what);
  require_rows_close(ref, got, c.n, 2 * tol, std::string("packed linear rows: ") + c.what);
}

namespace {

// e4m3fn nearest to v (|v| <= 448), ties to the even code, as the device conversion does.
float round_e4m3(float v) {
  static const std::vector<float> pos = [] {
    std::vector<float> t;
    for (int c = 0; c < 0x7F; ++c) t.push_back(fp8_e4m3_to_f32(static_cast<uint8_t>(c)));
    return t;
  }();
  const float a = std::fabs(v);
  int best = 0;
  for (int c = 1; c < static_cast<int>(pos.size()); ++c) {
    const float d = std::fabs(pos[c] - a), db = std::fabs(pos[best] - a);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return std::copysign(pos[best], v);
}

}  // namespace

TEST_CASE("FP8 weights with dynamic per-token activations run e4m3 x e4m3 through cuBLASLt",
          "[packed]") {
  struct Case {
    int64_t m, n, k;
    bool bias;
    DType out;
  };
  auto c = GENERATE(Case{1, 1024, 2048, false, DType::F32}, Case{7, 2048, 1024, true, DType::F32},
                    Case{300, 512, 4096, true, DType::BF16});
  CAPTURE(c.m, c.n, c.k);
  // Per-channel scales (one group of k columns per row), as compressed-tensors FP8_DYNAMIC.
  PackedWeight w = random_packed(PackedWeight::Kind::kFp8, c.n, c.k, c.k, 0, 0, 31);
  w.dynamic_activations = true;
  Pair x = random_pair({c.m, c.k}, 32);
  // The host reference quantizes each activation row as the kernel does (scale amax / 448,
  // x * (1 / scale) rounded to e4m3) and multiplies the dequantized rows in fp32; the GPU
  // differs from it only in summation order.
  std::vector<float> xq(x.host.size());
  for (int64_t r = 0; r < c.m; ++r) {
    float amax = 0.0f;
    for (int64_t i = 0; i < c.k; ++i) amax = std::max(amax, std::fabs(x.host[r * c.k + i]));
    const float scale = amax > 0.0f ? amax / 448.0f : 1.0f, inv = 1.0f / scale;
    for (int64_t i = 0; i < c.k; ++i)
      xq[r * c.k + i] = round_e4m3(std::clamp(x.host[r * c.k + i] * inv, -448.0f, 448.0f)) * scale;
  }
  auto cpu_packed = make_cpu_backend(0, DType::F32, /*packed_weights=*/true);
  Buffer wc = cpu_packed->upload_packed(w);
  Buffer wg = gpu().upload_packed(w);
  Buffer xc = cpu_packed->allocate(DType::F32, {c.m, c.k});
  cpu_packed->upload(xq.data(), DType::F32, xc.tensor);
  Pair b = c.bias ? random_pair({c.n}, 33) : Pair{};
  Pair out = output_pair({c.m, c.n}, c.out);
  cpu_packed->ops().linear(xc.tensor, wc.tensor, c.bias ? b.cpu() : Tensor{}, out.cpu());
  gpu().ops().linear(x.gpu(), wg.tensor, c.bias ? b.gpu() : Tensor{}, out.gpu());
  const auto ref = download(*cpu_packed, out.cpu()), got = download(gpu(), out.gpu());
  const double tol = c.out == DType::F32 ? 1e-4 : 1e-2;
  require_close(ref, got, tol, "dynamic fp8 linear");
  require_rows_close(ref, got, c.n, 2 * tol, "dynamic fp8 linear rows");
}
