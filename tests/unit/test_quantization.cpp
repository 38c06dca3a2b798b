// Quantized-weight decoding: every FP8 e4m3 code against values built here from the bit
// layout, AWQ's nibble order, GPTQ's g_idx and zero-point conventions, pack-quantized's
// offset, and quantization_config / tensor defects failing with the field or tensor named.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "engine/core/check.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/quantization.h"
#include "tests/unit/test_util.h"

using namespace iris;
using namespace iris::test;
using Catch::Matchers::Contains;
using json = nlohmann::json;

namespace {

RawTensor i32(std::vector<int64_t> shape, const std::vector<uint32_t>& v) {
  RawTensor t;
  t.dtype = "I32";
  t.shape = std::move(shape);
  t.bytes.resize(v.size() * 4);
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

RawTensor f32(std::vector<int64_t> shape, const std::vector<float>& v) {
  RawTensor t;
  t.shape = std::move(shape);
  t.bytes.resize(v.size() * 4);
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

RawTensor f16(std::vector<int64_t> shape, const std::vector<float>& v) {
  RawTensor t;
  t.dtype = "F16";
  t.shape = std::move(shape);
  for (float x : v) {
    const uint16_t h = f32_to_f16(x);
    t.bytes.push_back(static_cast<uint8_t>(h & 0xff));
    t.bytes.push_back(static_cast<uint8_t>(h >> 8));
  }
  return t;
}

RawTensor fp8(std::vector<int64_t> shape, const std::vector<uint8_t>& codes) {
  RawTensor t;
  t.dtype = "F8_E4M3";
  t.shape = std::move(shape);
  t.bytes = codes;
  return t;
}

std::vector<float> read_f32(const Checkpoint& ck, const std::string& name, std::vector<int64_t> shape) {
  const HostTensor h = ck.read(name, shape);
  REQUIRE(h.dtype == DType::F32);
  REQUIRE(h.shape == shape);
  std::vector<float> v(static_cast<size_t>(h.numel()));
  std::memcpy(v.data(), h.data, v.size() * 4);
  return v;
}

std::unique_ptr<Checkpoint> open_quant(const std::string& name, const json& qcfg,
                                       const std::map<std::string, RawTensor>& tensors) {
  return Checkpoint::open(write_checkpoint(name, json{{"quantization_config", qcfg}}, tensors));
}

// The e4m3fn value of `code` built as an IEEE-754 single: a normal e4m3 value with exponent
// field e and mantissa m is the float with exponent e - 7 and the 3 mantissa bits at the top
// of the 23-bit fraction; subnormals are m * 2^-9.
float e4m3_via_bits(uint8_t code) {
  const uint32_t sign = (code & 0x80u) << 24;
  const uint32_t e = (code >> 3) & 0xF, m = code & 7;
  if (e == 0) {
    const float v = static_cast<float>(m) / 512.0f;
    return sign ? -v : v;
  }
  const uint32_t bits = sign | ((e - 7 + 127) << 23) | (m << 20);
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

TEST_CASE("every FP8 e4m3fn code decodes to its value") {
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    const float got = fp8_e4m3_to_f32(static_cast<uint8_t>(c));
    if ((c & 0x7F) == 0x7F) {
      CHECK(std::isnan(got));
      ++nans;
      continue;
    }
    INFO("code 0x" << std::hex << c);
    const float want = e4m3_via_bits(static_cast<uint8_t>(c));
    CHECK(std::memcmp(&got, &want, 4) == 0);
  }
  CHECK(nans == 2);
  // Anchors from the OCP FP8 spec: smallest subnormal, smallest normal, one, max.
  CHECK(fp8_e4m3_to_f32(0x01) == std::ldexp(1.0f, -9));
  CHECK(fp8_e4m3_to_f32(0x08) == std::ldexp(1.0f, -6));
  CHECK(fp8_e4m3_to_f32(0x38) == 1.0f);
  CHECK(fp8_e4m3_to_f32(0x7E) == 448.0f);
  CHECK(fp8_e4m3_to_f32(0xFE) == -448.0f);
  CHECK(std::signbit(fp8_e4m3_to_f32(0x80)));
  // Positive finite codes are strictly increasing (no infinities anywhere).
  for (int c = 1; c < 0x7F; ++c) CHECK(fp8_e4m3_to_f32(c) > fp8_e4m3_to_f32(c - 1));
}

TEST_CASE("FP8 block scales broadcast over partial edge blocks") {
  // [3, 5] weight with 2x4 blocks -> scales [2, 2]; the last row and column are partial.
  std::vector<uint8_t> codes(15, 0x38);  // 1.0
  codes[14] = 0xC0;                      // -2.0 at [2, 4]
  auto ck = open_quant("q_fp8_block", {{"quant_method", "fp8"}, {"weight_block_size", {2, 4}}},
                       {{"m.weight", fp8({3, 5}, codes)},
                        {"m.weight_scale_inv", f32({2, 2}, {0.5f, 3.0f, 0.25f, 1.5f})}});
  REQUIRE(ck->quantization());
  const auto w = read_f32(*ck, "m.weight", {3, 5});
  CHECK(w == std::vector<float>{0.5f, 0.5f, 0.5f, 0.5f, 3.0f,  //
                                0.5f, 0.5f, 0.5f, 0.5f, 3.0f,  //
                                0.25f, 0.25f, 0.25f, 0.25f, -3.0f});
  // A sliced read (a tensor-parallel shard) is taken from the dequantized weight.
  const HostTensor s = ck->read("m.weight", {3, 5}, Slice{1, 3, 2});
  REQUIRE(s.shape == std::vector<int64_t>{3, 2});
  const auto* p = static_cast<const float*>(s.data);
  CHECK(std::vector<float>(p, p + 6) == std::vector<float>{0.5f, 3.0f, 0.5f, 3.0f, 0.25f, -3.0f});
}

TEST_CASE("AWQ nibbles hold output columns in the order 0 2 4 6 1 3 5 7") {
  // One input row, 8 outputs, group 1: nibble k of the word holds the value k, zeros 0,
  // scales 1. Published order: nibble k is column {0,2,4,6,1,3,5,7}[k].
  const uint32_t word = 0x76543210u;
  auto ck = open_quant("q_awq_order", {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 1}},
                       {{"m.qweight", i32({1, 1}, {word})},
                        {"m.qzeros", i32({1, 1}, {0})},
                        {"m.scales", f16({1, 8}, {1, 1, 1, 1, 1, 1, 1, 1})}});
  const auto w = read_f32(*ck, "m.weight", {8, 1});  // [out, in]
  CHECK(w == std::vector<float>{0, 4, 1, 5, 2, 6, 3, 7});

  // Zero points use the same order and groups span group_size input rows.
  auto ck2 = open_quant("q_awq_zero", {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 2}},
                        {{"m.qweight", i32({2, 1}, {0xFFFFFFFFu, 0x00000000u})},
                         {"m.qzeros", i32({1, 1}, {0x00000001u})},  // column 0 zero = 1
                         {"m.scales", f16({1, 8}, {0.5f, 1, 1, 1, 1, 1, 1, 1})}});
  const auto w2 = read_f32(*ck2, "m.weight", {8, 2});
  CHECK(w2[0] == 7.0f);   // (15 - 1) * 0.5
  CHECK(w2[1] == -0.5f);  // (0 - 1) * 0.5
  CHECK(w2[2] == 15.0f);
  CHECK(w2[3] == 0.0f);
}

TEST_CASE("GPTQ reads groups through g_idx and zero points per checkpoint_format") {
  // 16 inputs, 8 outputs, group 8; g_idx interleaves the groups (desc_act). Every q = 12.
  std::vector<uint32_t> qweight(2 * 8, 0xCCCCCCCCu);
  std::vector<uint32_t> g_idx(16);
  for (int i = 0; i < 16; ++i) g_idx[i] = i % 2;
  std::vector<float> scales(16);
  for (int g = 0; g < 2; ++g)
    for (int o = 0; o < 8; ++o) scales[g * 8 + o] = (g == 0 ? 1.0f : 0.25f) * static_cast<float>(o + 1);
  auto tensors = [&](uint32_t zero_word) {
    return std::map<std::string, RawTensor>{{"m.qweight", i32({2, 8}, qweight)},
                                            {"m.qzeros", i32({2, 1}, {zero_word, zero_word})},
                                            {"m.scales", f16({2, 8}, scales)},
                                            {"m.g_idx", i32({16}, g_idx)}};
  };
  const json v1 = {{"quant_method", "gptq"}, {"bits", 4}, {"group_size", 8}, {"desc_act", true},
                   {"sym", true}};
  // v1 stores zero - 1 = 7: zero 8, q - zero = 4.
  auto ck = open_quant("q_gptq_v1", v1, tensors(0x77777777u));
  const auto w = read_f32(*ck, "m.weight", {8, 16});
  for (int o = 0; o < 8; ++o)
    for (int i = 0; i < 16; ++i) {
      INFO("o " << o << " i " << i);
      CHECK(w[o * 16 + i] == 4.0f * (i % 2 == 0 ? 1.0f : 0.25f) * static_cast<float>(o + 1));
    }
  // gptq_v2 stores the zero itself.
  json v2 = v1;
  v2["checkpoint_format"] = "gptq_v2";
  auto ck2 = open_quant("q_gptq_v2", v2, tensors(0x88888888u));
  CHECK(read_f32(*ck2, "m.weight", {8, 16}) == w);
  // The same v1 bytes read as v2 contradict sym: the error says what to check.
  auto ck3 = open_quant("q_gptq_v2_wrong", v2, tensors(0x77777777u));
  CHECK_THROWS_WITH(ck3->read("m.weight", {8, 16}),
                    Contains("'m.qzeros' gives zero point 7") && Contains("checkpoint_format"));
  // Without desc_act and g_idx, input i is in group i / group_size.
  json plain = v1;
  plain["desc_act"] = false;
  auto t = tensors(0x77777777u);
  t.erase("m.g_idx");
  auto ck4 = open_quant("q_gptq_plain", plain, t);
  const auto w4 = read_f32(*ck4, "m.weight", {8, 16});
  CHECK(w4[0 * 16 + 7] == 4.0f);
  CHECK(w4[0 * 16 + 8] == 1.0f);
  CHECK_THROWS_WITH(open_quant("q_gptq_noidx", v1, t)->read("m.weight", {8, 16}),
                    Contains("missing tensor 'm.g_idx'") && Contains("desc_act"));
}

TEST_CASE("pack-quantized stores q + 8 along the input dimension") {
  const json cfg = {
      {"quant_method", "compressed-tensors"},
      {"format", "pack-quantized"},
      {"config_groups",
       {{"group_0",
         {{"targets", {"Linear"}},
          {"weights", {{"num_bits", 4}, {"type", "int"}, {"symmetric", true}, {"strategy", "group"},
                       {"group_size", 8}}}}}}}};
  // Row 0 nibbles 0..7 -> q = -8..-1; row 1 all 8 -> q = 0.
  auto ck = open_quant("q_pack", cfg,
                       {{"m.weight_packed", i32({2, 1}, {0x76543210u, 0x88888888u})},
                        {"m.weight_scale", f16({2, 1}, {0.5f, 2.0f})},
                        {"m.weight_shape", i32({2}, {2, 8})}});
  const auto w = read_f32(*ck, "m.weight", {2, 8});
  CHECK(w == std::vector<float>{-4, -3.5f, -3, -2.5f, -2, -1.5f, -1, -0.5f, 0, 0, 0, 0, 0, 0, 0, 0});
  // weight_shape must be the model's [out, in].
  auto bad = open_quant("q_pack_shape", cfg,
                        {{"m.weight_packed", i32({2, 1}, {0, 0})},
                         {"m.weight_scale", f16({2, 1}, {1, 1})},
                         {"m.weight_shape", i32({2}, {2, 7})}});
  CHECK_THROWS_WITH(bad->read("m.weight", {2, 8}), Contains("'m.weight_shape' holds [2, 7]"));
}

TEST_CASE("quantization_config defects name the field") {
  auto parse = [](const json& q) { return parse_quantization_config({{"quantization_config", q}}, "c.json"); };
  CHECK_FALSE(parse_quantization_config(json::object(), "c.json"));
  CHECK_THROWS_WITH(parse({{"quant_method", "hqq"}}), Contains("quant_method 'hqq' is not supported"));
  CHECK_THROWS_WITH(parse({{"bits", 4}}), Contains("missing quantization_config.quant_method"));
  CHECK_THROWS_WITH(parse({{"quant_method", "awq"}, {"bits", 8}}),
                    Contains("quantization_config.bits = 8 is not supported"));
  CHECK_THROWS_WITH(parse({{"quant_method", "awq"}, {"group_size", 0}}),
                    Contains("quantization_config.group_size = 0"));
  CHECK_THROWS_WITH(parse({{"quant_method", "awq"}, {"version", "gemv"}}),
                    Contains("quantization_config.version 'gemv'"));
  CHECK_THROWS_WITH(parse({{"quant_method", "gptq"}, {"bits", 4}, {"checkpoint_format", "marlin"}}),
                    Contains("quantization_config.checkpoint_format 'marlin'"));
  CHECK_THROWS_WITH(parse({{"quant_method", "fp8"}, {"fmt", "e5m2"}}), Contains("quantization_config.fmt"));
  CHECK_THROWS_WITH(parse({{"quant_method", "fp8"}, {"weight_block_size", {128, 0}}}),
                    Contains("quantization_config.weight_block_size must be two positive integers"));
  CHECK_THROWS_WITH(parse({{"quant_method", "compressed-tensors"}, {"format", "pack-quantized"}}),
                    Contains("quantization_config.config_groups must be a non-empty object"));
  const json ct = json::parse(R"({"quant_method": "compressed-tensors", "format": "pack-quantized",
      "config_groups": {"group_0": {"weights": {"num_bits": 4, "type": "int", "strategy": "group"}}}})");
  CHECK_THROWS_WITH(parse(ct), Contains("missing quantization_config.config_groups.group_0.weights.group_size"));
  // A "mixed" top-level format defers to each group's own format.
  json mixed = ct;
  mixed["format"] = "mixed";
  mixed["config_groups"]["group_0"]["format"] = "pack-quantized";
  mixed["config_groups"]["group_0"]["weights"]["group_size"] = 32;
  const auto q = parse(mixed);
  REQUIRE(q);
  CHECK(q->format == QuantFormat::kPackQuantized);
  CHECK(q->group_size == 32);
  json frozen = mixed;
  frozen["quantization_status"] = "frozen";
  CHECK_THROWS_WITH(parse(frozen), Contains("quantization_config.quantization_status 'frozen'"));
  json dense = mixed;
  dense["sparsity_config"] = {{"format", "dense"}};
  CHECK(parse(dense));
  dense["sparsity_config"] = {{"format", "sparse-24-bitmask"}};
  CHECK_THROWS_WITH(parse(dense), Contains("quantization_config.sparsity_config is not supported"));
  json ct8 = ct;
  ct8["config_groups"]["group_0"]["weights"]["num_bits"] = 8;
  CHECK_THROWS_WITH(parse(ct8), Contains("config_groups.group_0.weights is int with 8 bits"));
}

TEST_CASE("quantized tensor defects name the tensor") {
  const json awq = {{"quant_method", "awq"}, {"bits", 4}, {"group_size", 2}};
  auto good = [] {
    return std::map<std::string, RawTensor>{{"m.qweight", i32({4, 1}, {0, 0, 0, 0})},
                                            {"m.qzeros", i32({2, 1}, {0, 0})},
                                            {"m.scales", f16({2, 8}, std::vector<float>(16, 1.0f))}};
  };
  SECTION("a missing scale") {
    auto t = good();
    t.erase("m.scales");
    CHECK_THROWS_WITH(open_quant("q_e_scale", awq, t)->read("m.weight", {8, 4}),
                      Contains("missing tensor 'm.scales'"));
  }
  SECTION("a missing packed weight") {
    auto t = good();
    t.erase("m.qweight");
    CHECK_THROWS_WITH(open_quant("q_e_qweight", awq, t)->read("m.weight", {8, 4}),
                      Contains("missing tensor 'm.qweight'"));
  }
  SECTION("a group size the tensors do not have") {
    json a = awq;
    a["group_size"] = 4;
    CHECK_THROWS_WITH(open_quant("q_e_group", a, good())->read("m.weight", {8, 4}),
                      Contains("'m.qzeros' has shape [2, 1]") && Contains("group_size 4") &&
                          Contains("implies [1, 1]"));
  }
  SECTION("a packed weight of another shape") {
    CHECK_THROWS_WITH(open_quant("q_e_shape", awq, good())->read("m.weight", {16, 4}),
                      Contains("'m.qweight' has shape [4, 1]") && Contains("[4, 2]"));
  }
  SECTION("a non-finite scale") {
    auto t = good();
    t["m.scales"] = f16({2, 8}, std::vector<float>(16, INFINITY));
    CHECK_THROWS_WITH(open_quant("q_e_inf", awq, t)->read("m.weight", {8, 4}),
                      Contains("'m.scales' holds a non-finite value"));
  }
  SECTION("an integer tensor of the wrong dtype") {
    auto t = good();
    t["m.qweight"] = f32({4, 1}, {0, 0, 0, 0});
    CHECK_THROWS_WITH(open_quant("q_e_dtype", awq, t)->read("m.weight", {8, 4}),
                      Contains("'m.qweight' has dtype F32; awq needs I32"));
  }
  SECTION("a layout other than the configured method") {
    CHECK_THROWS_WITH(
        open_quant("q_e_layout", {{"quant_method", "fp8"}}, good())->read("m.weight", {8, 4}),
        Contains("'m.qweight' is stored as AWQ") && Contains("quant_method 'fp8'"));
  }
  SECTION("an FP8 weight with a float dtype beside its scale") {
    CHECK_THROWS_WITH(open_quant("q_e_f8dtype", {{"quant_method", "fbgemm_fp8"}},
                                 {{"m.weight", f32({2, 2}, {1, 2, 3, 4})},
                                  {"m.weight_scale", f32({2, 1}, {1, 1})}})
                          ->read("m.weight", {2, 2}),
                      Contains("'m.weight' has dtype F32 but fbgemm_fp8 stores weights as F8_E4M3"));
  }
  SECTION("static activation scales that are missing") {
    CHECK_THROWS_WITH(open_quant("q_e_input", {{"quant_method", "fp8"}, {"activation_scheme", "static"}},
                                 {{"m.weight", fp8({2, 2}, {0x38, 0x38, 0x38, 0x38})},
                                  {"m.weight_scale", f32({1}, {1})}})
                          ->read("m.weight", {2, 2}),
                      Contains("missing tensor 'm.input_scale'"));
  }
}
