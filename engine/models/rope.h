// Rotary-embedding inverse frequencies, including the scaled variants (linear, llama3),
// computed in fp32 the way transformers computes them.
#pragma once

#include <vector>

#include "engine/loader/model_config.h"

namespace iris {

// inv_freq[i] for i in [0, rotary_dim / 2).
std::vector<float> rope_inv_freq(int rotary_dim, float theta, const RopeScaling& scaling);

}  // namespace iris
