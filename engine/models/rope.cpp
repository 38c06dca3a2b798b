// Rotary-embedding frequency tables (default, linear and llama3 scaling).
#include "engine/models/rope.h"

#include <cmath>

namespace iris {

std::vector<float> rope_inv_freq(int rotary_dim, float theta, const RopeScaling& scaling) {
  const int half = rotary_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rotary_dim);
    inv[i] = 1.0f / std::pow(theta, exponent);
  }
  switch (scaling.type) {
    case RopeScaling::Type::kNone:
      break;
    case RopeScaling::Type::kLinear:
      for (float& f : inv) f /= scaling.factor;
      break;
    case RopeScaling::Type::kLlama3: {
      // Wavelengths longer than the original context are slowed by `factor`, shorter than
      // original/high_freq_factor are kept, and those between are interpolated smoothly.
      const float old_len = static_cast<float>(scaling.original_max_position_embeddings);
      const float low_wavelen = old_len / scaling.low_freq_factor;
      const float high_wavelen = old_len / scaling.high_freq_factor;
      constexpr float kPi = 3.14159265358979323846f;
      for (float& f : inv) {
        const float wavelen = 2.0f * kPi / f;
        float scaled = wavelen > low_wavelen ? f / scaling.factor : f;
        const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
        if (medium) {
          const float smooth = (old_len / wavelen - scaling.low_freq_factor) /
                               (scaling.high_freq_factor - scaling.low_freq_factor);
          scaled = (1.0f - smooth) * scaled / scaling.factor + smooth * scaled;
        }
        f = scaled;
      }
      break;
    }
  }
  return inv;
}

std::vector<float> mrope_inv_freq(const std::vector<float>& inv_freq,
                                  const std::vector<int>& sections) {
  const size_t half = inv_freq.size();
  std::vector<float> table(sections.size() * half, 0.0f);
  size_t i = 0;
  for (size_t j = 0; j < sections.size(); ++j)
    for (int k = 0; k < sections[j] && i < half; ++k, ++i) table[j * half + i] = inv_freq[i];
  return table;
}

}  // namespace iris
