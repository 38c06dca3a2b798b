// A small random Llama checkpoint loaded on the CPU backend (2 threads): the model the engine
// and metrics tests run real steps with.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/backend.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/models/model.h"
#include "engine/sampler.h"
#include "tests/unit/test_util.h"

namespace iris::test {

struct SmallModel {
  std::unique_ptr<Backend> backend = make_cpu_backend(2);
  std::unique_ptr<Checkpoint> ck;
  ModelConfig cfg;
  std::unique_ptr<Model> model;
  // Writes the checkpoint under `name` with weights drawn from `seed`.
  SmallModel(const std::string& name, uint32_t seed) {
    auto c = small_llama_config({{"max_position_embeddings", 512}});
    const auto dir = write_checkpoint(name, c, random_weights(c, seed));
    ck = Checkpoint::open(dir);
    cfg = ModelConfig::from_dir(dir);
    model = load_model(*ck, cfg, *backend);
  }
};

// Greedy decoding of exactly max_tokens tokens (EOS ignored).
inline SamplingParams greedy(int max_tokens) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  return p;
}

}  // namespace iris::test
