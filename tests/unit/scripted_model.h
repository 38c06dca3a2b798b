// A stand-in language model for engine tests that need to control exactly which tokens come
// out: stop strings that straddle token boundaries or a multi-byte character split over
// byte tokens cannot be provoked on demand with a trained or random model. The engine,
// scheduler, sampler and tokenizer around it are the real ones.
//
// The model reads a "tape" indexed by position: the logits row of a sequence whose last
// token sits at position p puts a large logit on the candidates tape[p] (every other id gets
// 0). A request with an L-token prompt therefore generates tape[L-1], tape[L], ..., so
// requests with different prompt lengths read different stretches of one tape. A position
// with two candidates is a coin flip for a sampling request (greedy takes the lower id).
// Past the end of the tape the model asks for `eos`. CPU backend only: it reads the step's
// inputs from host memory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "engine/models/model.h"

namespace iris::test {

class ScriptedModel final : public Model {
 public:
  // A gap of 40 nats: the other ids together get ~vocab * e^-40 of the mass, never sampled.
  static constexpr float kChosenLogit = 40.0f;

  ScriptedModel(int64_t vocab_size, std::vector<int32_t> eos,
                std::vector<std::vector<int32_t>> tape)
      : tape_(std::move(tape)) {
    config_.architecture_name = "ScriptedForTests";
    config_.vocab_size = vocab_size;
    config_.hidden_size = 4;
    config_.intermediate_size = 4;
    config_.num_layers = 1;
    config_.num_heads = 1;
    config_.num_kv_heads = 1;
    config_.head_dim = 4;
    config_.max_position_embeddings = 1024;
    config_.eos_token_ids = std::move(eos);
  }

  // A tape with one candidate per position: prompt.back() is at position prompt.size() - 1,
  // so `text_ids` are generated in order by a request whose prompt is `prompt`.
  static std::vector<std::vector<int32_t>> tape_after(const std::vector<int32_t>& prompt,
                                                     const std::vector<int32_t>& text_ids) {
    std::vector<std::vector<int32_t>> tape(prompt.size() - 1);
    for (int32_t id : text_ids) tape.push_back({id});
    return tape;
  }

  const ModelConfig& config() const override { return config_; }
  AttentionShape attention_shape() const override { return {1, 1, 4}; }
  void reserve(int, int) override {}
  size_t weight_bytes() const override { return 0; }

  void forward(const StepInputs& in, KvCache&, Tensor& logits) override {
    const int32_t* positions = in.positions.ptr<int32_t>();
    const int32_t* rows = in.logits_indices.ptr<int32_t>();
    float* out = logits.ptr<float>();
    const int64_t vocab = config_.vocab_size;
    for (int64_t r = 0; r < logits.dim(0); ++r) {
      float* row = out + r * vocab;
      std::fill(row, row + vocab, 0.0f);
      const size_t pos = static_cast<size_t>(positions[rows[r]]);
      if (pos < tape_.size()) {
        for (int32_t id : tape_[pos]) row[id] = kChosenLogit;
      } else {
        row[config_.eos_token_ids.at(0)] = kChosenLogit;
      }
    }
  }

 private:
  ModelConfig config_;
  std::vector<std::vector<int32_t>> tape_;
};

}  // namespace iris::test
