// Rotary-embedding inverse frequencies, including the scaled variants (linear, llama3),
// computed in fp32 the way transformers computes them.
#pragma once

#include <vector>

#include "engine/loader/model_config.h"

namespace iris {

// inv_freq[i] for i in [0, rotary_dim / 2).
std::vector<float> rope_inv_freq(int rotary_dim, float theta, const RopeScaling& scaling);

// M-RoPE: inv_freq spread over one row per section, [sections, inv_freq.size()] row-major,
// row j holding inv_freq[i] for the frequencies i of section j and zeros elsewhere (the
// layout qk_norm_rope_store_kv takes with positions [T, sections]).
std::vector<float> mrope_inv_freq(const std::vector<float>& inv_freq,
                                  const std::vector<int>& sections);

}  // namespace iris
