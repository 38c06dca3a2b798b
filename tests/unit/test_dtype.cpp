// Storage dtype conversions: bf16 and f16 round trips, specials, rounding.
#include <catch2/catch.hpp>
#include <cmath>

#include "engine/core/dtype.h"

using namespace iris;

TEST_CASE("bf16 round trip and rounding") {
  for (float v : {0.0f, 1.0f, -2.5f, 3.140625f, 1e-20f, 6.5e4f}) {
    REQUIRE(bf16_to_f32(f32_to_bf16(v)) == Approx(v).epsilon(1e-2));
  }
  REQUIRE(f32_to_bf16(1.0f) == 0x3f80);
  REQUIRE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  // 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: rounds to even (1).
  REQUIRE(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);
}

TEST_CASE("f16 conversions are exact on representable values") {
  for (float v : {0.0f, -0.0f, 1.0f, -1.5f, 65504.0f, 6.103515625e-05f, 5.960464477539063e-08f}) {
    REQUIRE(f16_to_f32(f32_to_f16(v)) == v);
  }
  REQUIRE(f32_to_f16(1.0f) == 0x3c00);
  REQUIRE(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  REQUIRE(std::isnan(f16_to_f32(0x7e00)));
  // Exhaustive: every finite half converts to f32 and back unchanged.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    REQUIRE(f32_to_f16(f) == h);
  }
}

TEST_CASE("convert_to_f32 reads unaligned sources") {
  uint8_t buf[7] = {0};
  const uint16_t one = f32_to_bf16(1.0f);
  std::memcpy(buf + 1, &one, 2);
  std::memcpy(buf + 3, &one, 2);
  float out[2];
  convert_to_f32(buf + 1, DType::BF16, out, 2);
  REQUIRE(out[0] == 1.0f);
  REQUIRE(out[1] == 1.0f);
}
