// FP8 E4M3 KV cache (--kv-cache-dtype fp8) on the CPU backend: the conversion against a table
// of the OCP FP8 spec's values (all 256 codes), round-to-nearest-even at every midpoint,
// subnormals, saturation and NaN; per-layer k_scale / v_scale loading (and malformed ones
// failing with the tensor's name); the cache's bytes and block count; and the engine with
// an FP8 cache: prefix-cache hits and chunked prefill give the tokens of a plain run, and
// the result differs from the fp32 cache (the FP8 path is really taken).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>

#include "engine/core/check.h"
#include "engine/core/fp8.h"
#include "engine/engine.h"
#include "engine/kv_cache_dtype.h"
#include "tests/unit/small_model.h"
#include "tests/unit/test_util.h"

using namespace iris;
using namespace iris::test;

namespace {

// Written from the OCP 8-bit floating point specification (E4M3: bias 7, 3 mantissa bits,
// S.1111.111 = NaN, no infinities), not from engine/core/fp8.cpp; index = code.
const float kSpecE4m3[256] = {
    0.0f, 0.001953125f, 0.00390625f, 0.005859375f, 0.0078125f, 0.009765625f, 0.01171875f, 0.013671875f,
    0.015625f, 0.017578125f, 0.01953125f, 0.021484375f, 0.0234375f, 0.025390625f, 0.02734375f, 0.029296875f,
    0.03125f, 0.03515625f, 0.0390625f, 0.04296875f, 0.046875f, 0.05078125f, 0.0546875f, 0.05859375f,
    0.0625f, 0.0703125f, 0.078125f, 0.0859375f, 0.09375f, 0.1015625f, 0.109375f, 0.1171875f,
    0.125f, 0.140625f, 0.15625f, 0.171875f, 0.1875f, 0.203125f, 0.21875f, 0.234375f,
    0.25f, 0.28125f, 0.3125f, 0.34375f, 0.375f, 0.40625f, 0.4375f, 0.46875f,
    0.5f, 0.5625f, 0.625f, 0.6875f, 0.75f, 0.8125f, 0.875f, 0.9375f,
    1.0f, 1.125f, 1.25f, 1.375f, 1.5f, 1.625f, 1.75f, 1.875f,
    2.0f, 2.25f, 2.5f, 2.75f, 3.0f, 3.25f, 3.5f, 3.75f,
    4.0f, 4.5f, 5.0f, 5.5f, 6.0f, 6.5f, 7.0f, 7.5f,
    8.0f, 9.0f, 10.0f, 11.0f, 12.0f, 13.0f, 14.0f, 15.0f,
    16.0f, 18.0f, 20.0f, 22.0f, 24.0f, 26.0f, 28.0f, 30.0f,
    32.0f, 36.0f, 40.0f, 44.0f, 48.0f, 52.0f, 56.0f, 60.0f,
    64.0f, 72.0f, 80.0f, 88.0f, 96.0f, 104.0f, 112.0f, 120.0f,
    128.0f, 144.0f, 160.0f, 176.0f, 192.0f, 208.0f, 224.0f, 240.0f,
    256.0f, 288.0f, 320.0f, 352.0f, 384.0f, 416.0f, 448.0f, NAN,
    -0.0f, -0.001953125f, -0.00390625f, -0.005859375f, -0.0078125f, -0.009765625f, -0.01171875f, -0.013671875f,
    -0.015625f, -0.017578125f, -0.01953125f, -0.021484375f, -0.0234375f, -0.025390625f, -0.02734375f, -0.029296875f,
    -0.03125f, -0.03515625f, -0.0390625f, -0.04296875f, -0.046875f, -0.05078125f, -0.0546875f, -0.05859375f,
    -0.0625f, -0.0703125f, -0.078125f, -0.0859375f, -0.09375f, -0.1015625f, -0.109375f, -0.1171875f,
    -0.125f, -0.140625f, -0.15625f, -0.171875f, -0.1875f, -0.203125f, -0.21875f, -0.234375f,
    -0.25f, -0.28125f, -0.3125f, -0.34375f, -0.375f, -0.40625f, -0.4375f, -0.46875f,
    -0.5f, -0.5625f, -0.625f, -0.6875f, -0.75f, -0.8125f, -0.875f, -0.9375f,
    -1.0f, -1.125f, -1.25f, -1.375f, -1.5f, -1.625f, -1.75f, -1.875f,
    -2.0f, -2.25f, -2.5f, -2.75f, -3.0f, -3.25f, -3.5f, -3.75f,
    -4.0f, -4.5f, -5.0f, -5.5f, -6.0f, -6.5f, -7.0f, -7.5f,
    -8.0f, -9.0f, -10.0f, -11.0f, -12.0f, -13.0f, -14.0f, -15.0f,
    -16.0f, -18.0f, -20.0f, -22.0f, -24.0f, -26.0f, -28.0f, -30.0f,
    -32.0f, -36.0f, -40.0f, -44.0f, -48.0f, -52.0f, -56.0f, -60.0f,
    -64.0f, -72.0f, -80.0f, -88.0f, -96.0f, -104.0f, -112.0f, -120.0f,
    -128.0f, -144.0f, -160.0f, -176.0f, -192.0f, -208.0f, -224.0f, -240.0f,
    -256.0f, -288.0f, -320.0f, -352.0f, -384.0f, -416.0f, -448.0f, NAN,
};

float bits_after(float x) { return std::nextafter(x, INFINITY); }
float bits_before(float x) { return std::nextafter(x, -INFINITY); }

RawTensor scalar_f32(float v, std::vector<int64_t> shape = {}) {
  RawTensor t;
  t.shape = shape;
  t.bytes.resize(4);
  std::memcpy(t.bytes.data(), &v, 4);
  return t;
}

}  // namespace

TEST_CASE("e4m3 decodes all 256 codes to the OCP spec's values") {
  for (int c = 0; c < 256; ++c) {
    const float want = kSpecE4m3[c];
    const float got = e4m3_to_f32(static_cast<uint8_t>(c));
    INFO("code 0x" << std::hex << c);
    if (std::isnan(want)) {
      CHECK(std::isnan(got));
    } else {
      CHECK(got == want);
      CHECK(std::signbit(got) == std::signbit(want));
    }
  }
  CHECK(e4m3_to_f32(0x7E) == 448.0f);
  CHECK(e4m3_to_f32(0x08) == 0x1p-6f);  // smallest normal
  CHECK(e4m3_to_f32(0x01) == 0x1p-9f);  // smallest subnormal
  CHECK(e4m3_to_f32(0x38) == 1.0f);
}

TEST_CASE("e4m3 encoding: exact values, nearest-even midpoints, subnormals, saturation, NaN") {
  // Every finite code encodes back to itself.
  for (int c = 0; c < 256; ++c) {
    if (std::isnan(kSpecE4m3[c])) continue;
    INFO("code 0x" << std::hex << c);
    CHECK(f32_to_e4m3(kSpecE4m3[c]) == c);
  }
  // Between neighbouring codes lo < hi (same sign): the midpoint goes to the even code, and
  // the floats just either side of it to the nearer one.
  for (int sign = 0; sign < 2; ++sign) {
    for (int c = 0; c < 0x7E; ++c) {
      const int lo = c | (sign << 7), hi = (c + 1) | (sign << 7);
      const float a = kSpecE4m3[lo], b = kSpecE4m3[hi];
      const float mid = (a + b) / 2;  // exact: a and b have at most 4 significant bits
      INFO("codes 0x" << std::hex << lo << " / 0x" << hi);
      CHECK(f32_to_e4m3(mid) == ((c % 2 == 0) ? lo : hi));
      const float toward_a = sign ? bits_after(mid) : bits_before(mid);
      const float toward_b = sign ? bits_before(mid) : bits_after(mid);
      CHECK(f32_to_e4m3(toward_a) == lo);
      CHECK(f32_to_e4m3(toward_b) == hi);
    }
  }
  // Subnormals: 2^-10 is halfway between 0 and the smallest subnormal (ties to 0, even);
  // 3 * 2^-10 between codes 1 and 2 (to 2); 15 * 2^-10 between 7 and the smallest normal 8.
  CHECK(f32_to_e4m3(0x1p-10f) == 0x00);
  CHECK(f32_to_e4m3(3 * 0x1p-10f) == 0x02);
  CHECK(f32_to_e4m3(15 * 0x1p-10f) == 0x08);
  CHECK(f32_to_e4m3(0x1p-20f) == 0x00);
  CHECK(f32_to_e4m3(-0x1p-20f) == 0x80);
  CHECK(f32_to_e4m3(-0.0f) == 0x80);
  CHECK(f32_to_e4m3(0.0f) == 0x00);
  // Saturation (CUDA's __NV_SATFINITE): anything past 448, infinities included, is ±448.
  for (float big : {448.0f, 449.0f, 464.0f, 480.0f, 1e6f, 3e38f, INFINITY}) {
    INFO(big);
    CHECK(f32_to_e4m3(big) == 0x7E);
    CHECK(f32_to_e4m3(-big) == 0xFE);
  }
  CHECK(f32_to_e4m3(bits_before(448.0f)) == 0x7E);
  CHECK(f32_to_e4m3(432.0f) == 0x7E);   // midpoint 416 | 448: to 448 (mantissa 6, even)
  CHECK(f32_to_e4m3(400.0f) == 0x7C);   // midpoint 384 | 416: to 384 (mantissa 4, even)
  // NaN stays NaN.
  CHECK(std::isnan(e4m3_to_f32(f32_to_e4m3(NAN))));
  CHECK(std::isnan(e4m3_to_f32(f32_to_e4m3(-NAN))));
}

TEST_CASE("kv-cache-dtype option values") {
  CHECK(parse_kv_cache_dtype("auto") == KvCacheDtype::kAuto);
  CHECK(parse_kv_cache_dtype("fp8") == KvCacheDtype::kFp8E4M3);
  CHECK(parse_kv_cache_dtype("fp8_e4m3") == KvCacheDtype::kFp8E4M3);
  CHECK_THROWS_WITH(parse_kv_cache_dtype("fp8_e5m2"), Catch::Contains("fp8_e5m2 is not supported"));
  CHECK_THROWS_WITH(parse_kv_cache_dtype("int8"), Catch::Contains("--kv-cache-dtype must be"));
}

TEST_CASE("FP8 KV cache: one byte per element, checkpoint scales per layer") {
  auto backend = make_cpu_backend(2);
  auto c = small_llama_config({{"max_position_embeddings", 256}});
  const int layers = c["num_hidden_layers"].get<int>();
  REQUIRE(layers >= 2);
  auto w = random_weights(c, 5);
  w["model.layers.0.self_attn.k_scale"] = scalar_f32(0.25f);
  w["model.layers.0.self_attn.v_scale"] = scalar_f32(0.5f, {1});
  const auto dir = write_checkpoint("fp8kv-scales", c, w);
  auto ck = Checkpoint::open(dir);
  const ModelConfig cfg = ModelConfig::from_dir(dir);
  auto model = load_model(*ck, cfg, *backend);
  const auto scales = model->kv_scales();
  REQUIRE(static_cast<int>(scales.size()) == layers);
  CHECK(scales[0] == std::pair<float, float>{0.25f, 0.5f});
  CHECK(scales[1] == std::pair<float, float>{1.0f, 1.0f});  // none in the checkpoint

  const KvCache fp8 = allocate_kv_cache(*backend, *model, 8, 16, KvCacheDtype::kFp8E4M3);
  const KvCache f32 = allocate_kv_cache(*backend, *model, 8, 16);
  CHECK(fp8.layers[0].k.dtype == DType::F8_E4M3);
  CHECK(fp8.layers[0].k_scale == 0.25f);
  CHECK(fp8.layers[0].v_scale == 0.5f);
  CHECK(fp8.layers[1].k_scale == 1.0f);
  CHECK(f32.layers[0].k.dtype == DType::F32);
  CHECK(4 * fp8.layers[0].k.bytes() == f32.layers[0].k.bytes());
  CHECK(4 * kv_bytes_per_block(*backend, *model, 16, KvCacheDtype::kFp8E4M3) ==
        kv_bytes_per_block(*backend, *model, 16));

  SECTION("an older export's single kv_scale applies to K and V") {
    auto ww = random_weights(c, 5);
    ww["model.layers.1.self_attn.kv_scale"] = scalar_f32(0.125f);
    const auto d = write_checkpoint("fp8kv-kv-scale", c, ww);
    auto ckk = Checkpoint::open(d);
    auto m = load_model(*ckk, ModelConfig::from_dir(d), *backend);
    CHECK(m->kv_scales().at(1) == std::pair<float, float>{0.125f, 0.125f});
  }
  SECTION("malformed scales fail naming the tensor") {
    auto bad = [&](const std::string& name, std::map<std::string, RawTensor> extra,
                   const std::string& message) {
      auto ww = random_weights(c, 5);
      for (auto& [k, v] : extra) ww[k] = v;
      const auto d = write_checkpoint("fp8kv-bad-" + name, c, ww);
      auto ckb = Checkpoint::open(d);
      const ModelConfig cb = ModelConfig::from_dir(d);
      INFO(name);
      CHECK_THROWS_WITH(load_model(*ckb, cb, *backend), Catch::Contains(message));
    };
    bad("unpaired", {{"model.layers.1.self_attn.k_scale", scalar_f32(1.0f)}},
        "'model.layers.1.self_attn.k_scale' has no matching 'model.layers.1.self_attn.v_scale'");
    bad("negative",
        {{"model.layers.0.self_attn.k_scale", scalar_f32(-1.0f)},
         {"model.layers.0.self_attn.v_scale", scalar_f32(1.0f)}},
        "'model.layers.0.self_attn.k_scale' must be finite and positive");
    bad("nan",
        {{"model.layers.0.self_attn.k_scale", scalar_f32(1.0f)},
         {"model.layers.0.self_attn.v_scale", scalar_f32(NAN)}},
        "'model.layers.0.self_attn.v_scale' must be finite and positive");
    RawTensor two = scalar_f32(1.0f, {2});
    two.bytes.resize(8);
    bad("shape", {{"model.layers.0.self_attn.k_scale", two},
                  {"model.layers.0.self_attn.v_scale", scalar_f32(1.0f)}},
        "'model.layers.0.self_attn.k_scale' must be a scalar, has shape [2]");
  }
}

TEST_CASE("engine with an FP8 KV cache: prefix hits and chunked prefill match a plain run") {
  SmallModel f("fp8kv-engine", 33);
  std::mt19937 rng(7);
  std::vector<int32_t> prefix(96);
  for (auto& t : prefix) t = static_cast<int32_t>(rng() % 64);
  auto prompt_b = prefix;
  prompt_b.insert(prompt_b.end(), {4, 5, 6, 7});
  struct Out {
    std::vector<int32_t> ids;
    std::vector<float> logprobs;
  };
  auto run = [](Engine& e, const std::string& id, const std::vector<int32_t>& prompt) {
    Out out;
    e.submit(EngineRequest{id, prompt, greedy(10)}, [&](const EngineOutput& o) {
      out.ids.insert(out.ids.end(), o.token_ids.begin(), o.token_ids.end());
      out.logprobs.insert(out.logprobs.end(), o.logprobs.begin(), o.logprobs.end());
    });
    while (e.has_work()) e.step();
    return out;
  };
  auto config = [](KvCacheDtype d, bool prefix_caching, int batched) {
    EngineConfig ec;
    ec.num_kv_blocks = 64;
    ec.enable_prefix_caching = prefix_caching;
    ec.max_num_batched_tokens = batched;
    ec.kv_cache_dtype = d;
    return ec;
  };
  const auto fp8 = KvCacheDtype::kFp8E4M3;
  Out plain;
  {
    Engine e(*f.backend, *f.model, config(fp8, false, 512));
    CHECK(e.stats().kv_cache_bytes ==
          64 * static_cast<int64_t>(kv_bytes_per_block(*f.backend, *f.model, 16, fp8)));
    plain = run(e, "plain", prompt_b);
  }
  SECTION("prefix-cache hit") {
    Engine e(*f.backend, *f.model, config(fp8, true, 512));
    auto a = prefix;
    a.insert(a.end(), {1, 2, 3});
    run(e, "a", a);
    const Out b = run(e, "b", prompt_b);
    CHECK(e.stats().num_cached_tokens_hit >= 96);
    CHECK(b.ids == plain.ids);
    for (size_t i = 0; i < b.logprobs.size(); ++i) CHECK(b.logprobs[i] == Approx(plain.logprobs[i]).margin(1e-5));
  }
  SECTION("chunked prefill (16-token chunks)") {
    Engine e(*f.backend, *f.model, config(fp8, false, 16));
    const Out b = run(e, "b", prompt_b);
    CHECK(b.ids == plain.ids);
    for (size_t i = 0; i < b.logprobs.size(); ++i) CHECK(b.logprobs[i] == Approx(plain.logprobs[i]).margin(1e-5));
  }
  SECTION("differs from the fp32 cache; the same byte budget holds 4x the blocks") {
    Engine e(*f.backend, *f.model, config(KvCacheDtype::kAuto, false, 512));
    const Out b = run(e, "b", prompt_b);
    float most = 0;
    for (size_t i = 0; i < b.logprobs.size() && i < plain.logprobs.size(); ++i)
      most = std::max(most, std::fabs(b.logprobs[i] - plain.logprobs[i]));
    CHECK((b.ids != plain.ids || most > 1e-4f));
    const size_t per_block_f32 = kv_bytes_per_block(*f.backend, *f.model, 16);
    EngineConfig budget = config(KvCacheDtype::kAuto, true, 512);
    budget.num_kv_blocks = 0;
    budget.kv_cache_memory_bytes = static_cast<int64_t>(10 * per_block_f32);
    Engine small_f32(*f.backend, *f.model, budget);
    budget.kv_cache_dtype = fp8;
    Engine small_fp8(*f.backend, *f.model, budget);
    CHECK(small_fp8.scheduler_config().num_blocks == 4 * small_f32.scheduler_config().num_blocks);
    CHECK(small_f32.scheduler_config().num_blocks == 10);
  }
}
