// FP8 E4M3 encode/decode for the KV cache (see fp8.h).
#include "engine/core/fp8.h"

#include "engine/core/dtype.h"

#include <cmath>
#include <cstring>

namespace iris {

uint8_t f32_to_e4m3(float x) {
  if (std::isnan(x)) return 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const float a = std::fabs(x);
  if (a >= kE4m3Max) return sign | 0x7E;  // saturate (±inf too)
  // The quantum (spacing of representable values) around a: 2^(e - 3) for a in [2^e, 2^(e+1))
  // with e >= -6; below 2^-6 the subnormals share the quantum 2^-9. Scaling by a power of two
  // is exact, so nearbyint (round half to even under the default rounding mode) rounds a to
  // the nearest multiple of the quantum with ties to the even multiple — the even mantissa.
  int e2 = 0;
  std::frexp(a, &e2);  // a = f * 2^e2, f in [0.5, 1)
  const int e = e2 - 1 < -6 ? -6 : e2 - 1;
  const float q = std::nearbyint(std::ldexp(a, 3 - e));  // in [0, 16]
  int m = static_cast<int>(q);
  int exp_field = e + 7;
  if (a < 0x1p-6f) {
    // Subnormal (exponent field 0): m in [0, 8]; m = 8 is the smallest normal, code 0x08.
    return sign | static_cast<uint8_t>(m);
  }
  if (m == 16) {  // rounded up into the next binade
    m = 8;
    ++exp_field;
  }
  const int code = (exp_field << 3) | (m - 8);
  return sign | static_cast<uint8_t>(code > 0x7E ? 0x7E : code);
}

float e4m3_to_f32(uint8_t code) { return e4m3_table()[code]; }

const float* e4m3_table() {
  static const struct Table {
    float v[256];
    Table() {
      for (int c = 0; c < 256; ++c) v[c] = fp8_e4m3_to_f32(static_cast<uint8_t>(c));
    }
  } table;
  return table.v;
}

}  // namespace iris
