// Every non-attention CUDA op against the CPU reference backend on random inputs:
// transfers and dtype conversion, embedding / gather / scatter, linear (cuBLASLt), the
// norms, activations, add, and the fused q/k-norm + rotary + KV-store prologue.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <random>

#include "engine/core/dtype.h"
#include "tests/gpu/gpu_test_util.h"

using namespace iris;
using namespace iris::gpu_test;

namespace {

std::vector<int32_t> random_ints(int64_t n, int32_t lo, int32_t hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> d(lo, hi);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

// Elements where got != want (bitwise-equal floats, NaN never equal).
int64_t mismatches(const std::vector<float>& got, const std::vector<float>& want) {
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += !(got[i] == want[i]);
  return bad;
}

}  // namespace

TEST_CASE("upload converts on the device and download_f32 reads every dtype back", "[ops]") {
  // More than one 64 MiB staging chunk in both directions.
  const int64_t n = (int64_t{1} << 24) + 12345;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> f32(n);
  for (auto& x : f32) x = dist(rng);
  f32[1] = 65504.0f * 4;  // beyond f16 range, fine in bf16
  f32[2] = -0.0f;
  f32[3] = 1e-40f;  // denormal
  f32[n - 1] = 7.0f;

  SECTION("F32 host -> BF16 device rounds to nearest even like the host") {
    Buffer b = gpu().allocate(DType::BF16, {n});
    gpu().upload(f32.data(), DType::F32, b.tensor);
    std::vector<float> want(n);
    for (int64_t i = 0; i < n; ++i) want[i] = bf16_to_f32(f32_to_bf16(f32[i]));
    REQUIRE(mismatches(download(gpu(), b.tensor), want) == 0);
  }
  SECTION("F16 and BF16 host -> BF16 device") {
    const int64_t m = 100003;
    std::vector<uint16_t> h16(m), b16(m);
    std::vector<float> want16(m), want_b(m);
    for (int64_t i = 0; i < m; ++i) {
      h16[i] = f32_to_f16(std::clamp(f32[i], -60000.0f, 60000.0f));
      b16[i] = f32_to_bf16(f32[i]);
      want16[i] = bf16_to_f32(f32_to_bf16(f16_to_f32(h16[i])));
      want_b[i] = bf16_to_f32(b16[i]);
    }
    Buffer b = gpu().allocate(DType::BF16, {m});
    gpu().upload(h16.data(), DType::F16, b.tensor);
    REQUIRE(mismatches(download(gpu(), b.tensor), want16) == 0);
    gpu().upload(b16.data(), DType::BF16, b.tensor);
    REQUIRE(mismatches(download(gpu(), b.tensor), want_b) == 0);
    Buffer f = gpu().allocate(DType::F32, {m});
    gpu().upload(h16.data(), DType::F16, f.tensor);
    std::vector<float> want_f(m);
    for (int64_t i = 0; i < m; ++i) want_f[i] = f16_to_f32(h16[i]);
    REQUIRE(mismatches(download(gpu(), f.tensor), want_f) == 0);
  }
  SECTION("F32 and I32 round trips are exact, including a view at an offset") {
    Buffer b = gpu().allocate(DType::F32, {n});
    gpu().upload(f32.data(), DType::F32, b.tensor);
    REQUIRE(mismatches(download(gpu(), b.tensor), f32) == 0);
    const auto ints = random_ints(1000, -5, 1 << 30, 2);
    Buffer bi = gpu().allocate(DType::I32, {1000});
    gpu().upload_i32(ints.data(), bi.tensor);
    std::vector<int32_t> got(1000);
    gpu().download_f32(bi.tensor, reinterpret_cast<float*>(got.data()));
    REQUIRE(got == ints);
    Buffer m = gpu().allocate(DType::BF16, {100, 30});
    Tensor rows = m.tensor.rows(7, 50);
    gpu().upload(f32.data(), DType::F32, rows);
    const auto all = download(gpu(), m.tensor);
    std::vector<float> want(100 * 30, 0.0f);  // allocate zero-fills
    for (int64_t i = 0; i < 50 * 30; ++i) want[7 * 30 + i] = bf16_to_f32(f32_to_bf16(f32[i]));
    REQUIRE(mismatches(all, want) == 0);
  }
  SECTION("the backend describes itself") {
    REQUIRE(gpu().kind() == DeviceKind::kCuda);
    REQUIRE(gpu().compute_dtype() == DType::BF16);
    REQUIRE(gpu().free_memory_bytes() > 0);
  }
}

TEST_CASE("embedding, embedding_shard, gather_rows and scatter_rows copy rows exactly", "[ops]") {
  auto h = GENERATE(as<int64_t>{}, 4096, 100, 8);  // vector path, 2-byte path, tiny rows
  const int64_t vocab = 1000, t = 37;
  Pair table = random_pair({vocab, h}, 3);
  auto ids_v = random_ints(t, 0, static_cast<int32_t>(vocab - 1), 4);
  ids_v[5] = ids_v[6];  // repeats
  IntPair ids = int_pair(ids_v);

  Pair out = output_pair({t, h});
  cpu().ops().embedding(ids.c.tensor, table.cpu(), out.cpu());
  gpu().ops().embedding(ids.g.tensor, table.gpu(), out.gpu());
  require_close(download(cpu(), out.cpu()), download(gpu(), out.gpu()), 0.0, "embedding");

  // Vocabulary-parallel: this rank holds rows [400, 400 + 300) of the table; other ids
  // give zero rows.
  Pair shard = random_pair({300, h}, 8);
  Pair sharded = output_pair({t, h});
  cpu().ops().embedding_shard(ids.c.tensor, shard.cpu(), 400, sharded.cpu());
  gpu().ops().embedding_shard(ids.g.tensor, shard.gpu(), 400, sharded.gpu());
  require_close(download(cpu(), sharded.cpu()), download(gpu(), sharded.gpu()), 0.0,
                "embedding_shard");

  const std::vector<int32_t> rows_v = {36, 0, 5, 5, 17};
  IntPair rows = int_pair(rows_v);
  Pair gathered = output_pair({5, h});
  cpu().ops().gather_rows(out.cpu(), rows.c.tensor, gathered.cpu());
  gpu().ops().gather_rows(out.gpu(), rows.g.tensor, gathered.gpu());
  require_close(download(cpu(), gathered.cpu()), download(gpu(), gathered.gpu()), 0.0,
                "gather_rows");

  std::vector<int32_t> perm(t);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(5));
  perm.resize(20);
  IntPair dst_rows = int_pair(perm);
  Pair src = random_pair({20, h}, 6);
  Pair scattered = random_pair({t, h}, 7);  // rows not scattered into keep their values
  cpu().ops().scatter_rows(src.cpu(), dst_rows.c.tensor, scattered.cpu());
  gpu().ops().scatter_rows(src.gpu(), dst_rows.g.tensor, scattered.gpu());
  require_close(download(cpu(), scattered.cpu()), download(gpu(), scattered.gpu()), 0.0,
                "scatter_rows");
}

TEST_CASE("linear matches the fp32 reference (bf16 and f32 outputs, bias, odd shapes)", "[ops]") {
  struct Case {
    int64_t m, n, k;
    bool bias;
    DType out;
    int64_t row_offset;  // x is a view starting at this row (pointer alignment < 256)
  };
  auto c = GENERATE(Case{1, 4096, 4096, false, DType::BF16, 0},   // decode, square
                    Case{7, 6144, 4096, true, DType::BF16, 0},    // fused qkv with bias
                    Case{300, 1024, 512, false, DType::BF16, 1},  // prefill, misaligned x
                    Case{33, 2816, 1000, true, DType::BF16, 3},   // x only 16-byte aligned
                    Case{5, 32000, 1024, false, DType::F32, 0},   // logits
                    Case{64, 4100, 256, true, DType::F32, 1},     // F32 out with bias
                    // CLIP/SigLIP patch embedding: k = 3 x 14 x 14 = 588 (a 1,176-byte row,
                    // so row 1 is only 8-byte aligned), 576 patches / one patch
                    Case{576, 1024, 588, true, DType::BF16, 1},
                    Case{1, 1152, 588, false, DType::BF16, 1},
                    // k % 8 != 0: rows not 16-byte multiples at all
                    Case{9, 256, 100, false, DType::F32, 1},      // k % 8 == 4
                    Case{17, 320, 37, true, DType::BF16, 1},      // k odd, 2-byte aligned rows
                    Case{3, 4096, 4100, false, DType::BF16, 0});  // k % 8 == 4, large
  CAPTURE(c.m, c.n, c.k, c.bias, dtype_name(c.out), c.row_offset);
  const float wscale = 1.0f / std::sqrt(static_cast<float>(c.k));
  Pair x = random_pair({c.m + c.row_offset, c.k}, 11);
  Pair w = random_pair({c.n, c.k}, 12, wscale);
  Pair b = c.bias ? random_pair({c.n}, 13) : Pair{};
  Tensor xc = x.cpu().rows(c.row_offset, c.m), xg = x.gpu().rows(c.row_offset, c.m);
  Pair out = output_pair({c.m, c.n}, c.out);
  cpu().ops().linear(xc, w.cpu(), c.bias ? b.cpu() : Tensor{}, out.cpu());
  gpu().ops().linear(xg, w.gpu(), c.bias ? b.gpu() : Tensor{}, out.gpu());
  const auto ref = download(cpu(), out.cpu()), got = download(gpu(), out.gpu());
  const double tol = c.out == DType::F32 ? 1e-3 : 1e-2;
  require_close(ref, got, tol, "linear");
  // Row by row too: a row read from the wrong offset must fail even in a large output.
  require_rows_close(ref, got, c.n, 2 * tol, "linear rows",
                     [](int64_t r) { return "output row " + std::to_string(r); });
}

TEST_CASE("rms_norm, add_rms_norm and layer_norm", "[ops]") {
  auto h = GENERATE(as<int64_t>{}, 4096, 5120, 100, 32);
  const int64_t t = 19;
  CAPTURE(h);
  Pair x = random_pair({t, h}, 21, 2.0f);
  Pair w = random_pair({h}, 22, 0.3f);
  Pair b = random_pair({h}, 23, 0.3f);
  Pair out = output_pair({t, h});

  cpu().ops().rms_norm(x.cpu(), w.cpu(), 1e-5f, out.cpu());
  gpu().ops().rms_norm(x.gpu(), w.gpu(), 1e-5f, out.gpu());
  require_close(download(cpu(), out.cpu()), download(gpu(), out.gpu()), 1e-2, "rms_norm");

  Pair res = random_pair({t, h}, 24, 2.0f);
  poison(out.gpu());
  cpu().ops().add_rms_norm(res.cpu(), x.cpu(), w.cpu(), 1e-6f, out.cpu());
  gpu().ops().add_rms_norm(res.gpu(), x.gpu(), w.gpu(), 1e-6f, out.gpu());
  require_close(download(cpu(), res.cpu()), download(gpu(), res.gpu()), 1e-2,
                "add_rms_norm residual");
  require_close(download(cpu(), out.cpu()), download(gpu(), out.gpu()), 1.5e-2, "add_rms_norm out");

  for (bool with_bias : {true, false}) {
    poison(out.gpu());
    // An offset mean checks the two-pass variance.
    Pair xs = random_pair({t, h}, 25, 1.0f);
    for (float& v : xs.host) v = bf16_to_f32(f32_to_bf16(v + 3.0f));
    xs = pair_from(xs.host, {t, h});
    cpu().ops().layer_norm(xs.cpu(), w.cpu(), with_bias ? b.cpu() : Tensor{}, 1e-5f, out.cpu());
    gpu().ops().layer_norm(xs.gpu(), w.gpu(), with_bias ? b.gpu() : Tensor{}, 1e-5f, out.gpu());
    require_close(download(cpu(), out.cpu()), download(gpu(), out.gpu()), 1.5e-2,
                  with_bias ? "layer_norm with bias" : "layer_norm");
  }
}

TEST_CASE("silu_mul, activations and add", "[ops]") {
  auto inter = GENERATE(as<int64_t>{}, 14336, 1000, 36);
  const int64_t t = 9;
  CAPTURE(inter);
  Pair gu = random_pair({t, 2 * inter}, 31, 2.0f);
  Pair out = output_pair({t, inter});
  cpu().ops().silu_mul(gu.cpu(), out.cpu());
  gpu().ops().silu_mul(gu.gpu(), out.gpu());
  require_close(download(cpu(), out.cpu()), download(gpu(), out.gpu()), 1e-2, "silu_mul");

  for (Activation act : {Activation::kGeluErf, Activation::kGeluTanh, Activation::kQuickGelu}) {
    Pair x = random_pair({t, inter}, 32 + static_cast<int>(act), 2.0f);
    cpu().ops().activation(x.cpu(), act);
    gpu().ops().activation(x.gpu(), act);
    require_close(download(cpu(), x.cpu()), download(gpu(), x.gpu()), 1e-2,
                  "activation " + std::to_string(static_cast<int>(act)));
  }
  Pair a = random_pair({t, inter}, 36), b = random_pair({t, inter}, 37);
  cpu().ops().add(a.cpu(), b.cpu());
  gpu().ops().add(a.gpu(), b.gpu());
  require_close(download(cpu(), a.cpu()), download(gpu(), a.gpu()), 1e-2, "add");
}

TEST_CASE("Gemma: gelu_tanh_mul, scale, tanh_softcap", "[ops]") {
  auto inter = GENERATE(as<int64_t>{}, 6912, 1000, 36);
  const int64_t t = 9;
  CAPTURE(inter);
  Pair gu = random_pair({t, 2 * inter}, 41, 2.0f);
  Pair out = output_pair({t, inter});
  cpu().ops().gelu_tanh_mul(gu.cpu(), out.cpu());
  gpu().ops().gelu_tanh_mul(gu.gpu(), out.gpu());
  require_close(download(cpu(), out.cpu()), download(gpu(), out.gpu()), 1e-2, "gelu_tanh_mul");

  Pair x = random_pair({t, inter}, 42, 2.0f);
  cpu().ops().scale(x.cpu(), 33.9411f);
  gpu().ops().scale(x.gpu(), 33.9411f);
  require_close(download(cpu(), x.cpu()), download(gpu(), x.gpu()), 1e-2, "scale");
  cpu().ops().tanh_softcap(x.cpu(), 30.0f);
  gpu().ops().tanh_softcap(x.gpu(), 30.0f);
  require_close(download(cpu(), x.cpu()), download(gpu(), x.gpu()), 1e-2, "tanh_softcap bf16");

  std::vector<float> logits(static_cast<size_t>(t * inter));
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(i % 200) - 100.0f;
  Pair l = f32_pair(logits, {t, inter});
  cpu().ops().tanh_softcap(l.cpu(), 30.0f);
  gpu().ops().tanh_softcap(l.gpu(), 30.0f);
  require_close(download(cpu(), l.cpu()), download(gpu(), l.gpu()), 1e-4, "tanh_softcap f32");
}

TEST_CASE("moe_combine: weighted sum of each token's expert rows, skipped slots", "[ops]") {
  auto h = GENERATE(as<int64_t>{}, 4096, 100, 8);
  const int64_t t = 11, k = 3, n = 25;
  CAPTURE(h);
  Pair y = random_pair({n, h}, 61);
  std::vector<int32_t> slots_v(t * k);
  std::vector<float> weights_v(t * k);
  std::mt19937 rng(62);
  for (int64_t i = 0; i < t * k; ++i) {
    slots_v[i] = static_cast<int32_t>(rng() % n);
    weights_v[i] = static_cast<float>(rng() % 1000) / 1000.0f;
  }
  slots_v[4] = -1;  // another rank's expert
  slots_v[2 * k] = slots_v[2 * k + 1] = slots_v[2 * k + 2] = -1;  // token 2: no slot, zeros
  IntPair slots = int_pair(slots_v);
  Pair weights = f32_pair(weights_v, {t, k});
  Pair out = output_pair({t, h});
  cpu().ops().moe_combine(y.cpu(), slots.c.tensor, weights.cpu(), out.cpu());
  gpu().ops().moe_combine(y.gpu(), slots.g.tensor, weights.gpu(), out.gpu());
  require_close(download(cpu(), out.cpu()), download(gpu(), out.gpu()), 1e-2, "moe_combine");
}

TEST_CASE("qk_norm_rope_store_kv: per-head norms, partial rotary, KV store, skipped slots",
          "[ops]") {
  struct Case {
    int d, hq, hkv, rotary;
    bool qk_norm;
    int block_size;
  };
  auto c = GENERATE(Case{128, 32, 8, 128, false, 16}, Case{128, 16, 2, 128, true, 32},
                    Case{64, 8, 8, 32, false, 16}, Case{256, 8, 1, 256, true, 32},
                    Case{64, 12, 4, 64, true, 16}, Case{80, 4, 4, 40, false, 16});
  CAPTURE(c.d, c.hq, c.hkv, c.rotary, c.qk_norm, c.block_size);
  AttentionShape shape{c.hq, c.hkv, c.d};
  const int t = 45, num_blocks = 12;
  Pair qkv = random_pair({t, shape.qkv_dim()}, 41, 1.5f);
  std::vector<float> inv(c.rotary / 2);
  for (int i = 0; i < c.rotary / 2; ++i)
    inv[i] = 1.0f / std::pow(500000.0f, 2.0f * i / static_cast<float>(c.rotary));
  Pair freq = f32_pair(inv, {static_cast<int64_t>(inv.size())});
  Pair qn = random_pair({c.d}, 42, 0.2f), kn = random_pair({c.d}, 43, 0.2f);
  for (auto* p : {&qn, &kn}) {
    for (float& v : p->host) v = bf16_to_f32(f32_to_bf16(v + 1.0f));
    *p = pair_from(p->host, {c.d});
  }
  // Positions: small and very large (angle accuracy), slots scattered, two skipped.
  std::vector<int32_t> pos(t), slots(t);
  std::vector<int32_t> perm(num_blocks * c.block_size);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(44));
  for (int i = 0; i < t; ++i) {
    pos[i] = i < 20 ? i : 100000 + 37 * i;
    slots[i] = perm[i];
  }
  slots[3] = -1;
  slots[30] = -1;
  IntPair p = int_pair(pos), s = int_pair(slots);
  AttentionMetadata mc, mg;
  mc.slot_mapping = s.c.tensor;
  mg.slot_mapping = s.g.tensor;
  mc.num_tokens = mg.num_tokens = t;
  Pair kc = random_pair({num_blocks, c.block_size, c.hkv, c.d}, 45);
  Pair vc = random_pair({num_blocks, c.block_size, c.hkv, c.d}, 46);
  KvLayer kvc{kc.cpu(), vc.cpu()}, kvg{kc.gpu(), vc.gpu()};
  cpu().ops().qk_norm_rope_store_kv(qkv.cpu(), p.c.tensor, freq.cpu(),
                                    c.qk_norm ? qn.cpu() : Tensor{},
                                    c.qk_norm ? kn.cpu() : Tensor{}, 1e-6f, shape, mc, kvc);
  gpu().ops().qk_norm_rope_store_kv(qkv.gpu(), p.g.tensor, freq.gpu(),
                                    c.qk_norm ? qn.gpu() : Tensor{},
                                    c.qk_norm ? kn.gpu() : Tensor{}, 1e-6f, shape, mg, kvg);
  require_close(download(cpu(), qkv.cpu()), download(gpu(), qkv.gpu()), 1e-2, "qkv after rope");
  require_close(download(cpu(), kc.cpu()), download(gpu(), kc.gpu()), 1e-2, "K cache");
  require_close(download(cpu(), vc.cpu()), download(gpu(), vc.gpu()), 0.0, "V cache");
}

TEST_CASE("qk_norm_rope_store_kv with M-RoPE: three position rows, section-masked frequencies",
          "[ops]") {
  // Qwen2.5-VL's layout: positions [T, 3] (temporal, height, width), frequency table [3, D/2]
  // holding each frequency in its mrope_section's row only.
  const int d = 128, hq = 16, hkv = 2, t = 37, num_blocks = 8, block_size = 16;
  const int sections[3] = {16, 24, 24};
  AttentionShape shape{hq, hkv, d};
  Pair qkv = random_pair({t, shape.qkv_dim()}, 51, 1.5f);
  std::vector<float> table(3 * d / 2, 0.0f);
  for (int i = 0, j = 0, k = 0; i < d / 2; ++i, ++k) {
    if (k == sections[j]) { ++j; k = 0; }
    table[j * (d / 2) + i] = 1.0f / std::pow(1000000.0f, 2.0f * i / static_cast<float>(d));
  }
  Pair freq = f32_pair(table, {3, d / 2});
  std::vector<int32_t> pos(3 * t), slots(t);
  for (int i = 0; i < t; ++i) {
    pos[3 * i] = i < 10 ? i : 10 + 2 * (i / 6);   // temporal
    pos[3 * i + 1] = i < 10 ? i : 10 + i % 6 / 2;  // row
    pos[3 * i + 2] = i < 10 ? i : 10 + i % 2 + 40000;  // column (large: angle accuracy)
    slots[i] = (i * 7) % (num_blocks * block_size);
  }
  IntPair p = int_pair(pos), s = int_pair(slots);
  AttentionMetadata mc, mg;
  mc.slot_mapping = s.c.tensor;
  mg.slot_mapping = s.g.tensor;
  mc.num_tokens = mg.num_tokens = t;
  Pair kc = random_pair({num_blocks, block_size, hkv, d}, 52);
  Pair vc = random_pair({num_blocks, block_size, hkv, d}, 53);
  KvLayer kvc{kc.cpu(), vc.cpu()}, kvg{kc.gpu(), vc.gpu()};
  cpu().ops().qk_norm_rope_store_kv(qkv.cpu(), p.c.tensor, freq.cpu(), Tensor{}, Tensor{}, 1e-6f,
                                    shape, mc, kvc);
  gpu().ops().qk_norm_rope_store_kv(qkv.gpu(), p.g.tensor, freq.gpu(), Tensor{}, Tensor{}, 1e-6f,
                                    shape, mg, kvg);
  require_close(download(cpu(), qkv.cpu()), download(gpu(), qkv.gpu()), 1e-2, "qkv after M-RoPE");
  require_close(download(cpu(), kc.cpu()), download(gpu(), kc.gpu()), 1e-2, "K cache");
}
