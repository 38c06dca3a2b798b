// Single-request generation without the scheduler: prefill the prompt in chunks, then
// decode token by token. `iris generate` uses it; the batching engine uses the same
// ModelRunner, sampler and stop rules.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model_runner.h"
#include "engine/stop_conditions.h"

namespace iris {

struct GenerationResult {
  std::vector<int32_t> output_ids;
  std::vector<float> logprobs;
  FinishReason finish_reason = FinishReason::kLength;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
};

class Generator {
 public:
  Generator(Backend& backend, Model& model, int max_tokens_per_step = 512, int block_size = 16);
  GenerationResult generate(const std::vector<int32_t>& prompt, const SamplingParams& params);

 private:
  Backend& backend_;
  Model& model_;
  int max_tokens_per_step_;
  int block_size_;
};

}  // namespace iris
