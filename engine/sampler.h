// Token sampling from one row of logits: penalties, temperature, top-k, top-p, min-p and a
// per-request seeded generator, so the same seed gives the same tokens whatever else runs
// in the batch. Runs on the host over fp32 logits.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace iris {

namespace grammar {
class CompiledConstraint;  // engine/grammar/constraint.h
}

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int top_k = -1;            // -1 or 0 = off
  float top_p = 1.0f;        // (0, 1]
  float min_p = 0.0f;        // [0, 1]
  float repetition_penalty = 1.0f;  // over prompt and output tokens (transformers' rule)
  float presence_penalty = 0.0f;    // over output tokens (OpenAI's rule)
  float frequency_penalty = 0.0f;
  std::optional<uint64_t> seed;
  int max_tokens = 16;
  int min_tokens = 0;
  bool ignore_eos = false;
  std::vector<int32_t> stop_token_ids;
  std::vector<std::string> stop;
  bool skip_special_tokens = true;  // leave special tokens out of the output text
  // Added to these tokens' logits before sampling (OpenAI's logit_bias, in [-100, 100]).
  std::vector<std::pair<int32_t, float>> logit_bias;
  int top_logprobs = 0;  // also report this many most likely tokens per step (<= kMaxTopLogprobs)
  // Structured output: the compiled constraint (grammar::ConstraintCache::get, before submit);
  // null = unconstrained. Each sequence follows it with its own matcher.
  std::shared_ptr<const grammar::CompiledConstraint> constraint;

  static constexpr int kMaxTopLogprobs = 20;

  // Throws iris::Error naming the first invalid field.
  void validate() const;
  bool greedy() const { return temperature == 0.0f; }
};

// Per-sequence sampling state: its generator and the token counts penalties need.
class SequenceSampler {
 public:
  SequenceSampler(const SamplingParams& params, const std::vector<int32_t>& prompt);

  struct Result {
    int32_t token = -1;
    // Log-probability under the unmodified model distribution: before penalties, temperature,
    // top-k/p and the constraint mask (so a constrained token reports what the model thought).
    float logprob = 0.0f;
    // The params' top_logprobs most likely tokens under the same distribution, best first.
    std::vector<std::pair<int32_t, float>> top;
  };
  // Samples from logits[0, vocab). `banned` ids (EOS before min_tokens) get probability 0, and
  // so does every id whose bit is clear in `allowed` (a constraint's mask, LSB-first words)
  // when given.
  Result sample(const float* logits, int64_t vocab, const std::vector<int32_t>& banned = {},
                const uint32_t* allowed = nullptr);
  // Records a generated token (for the output-token penalties).
  void append(int32_t token);
  // The seed of this sequence's generator (the request's, or a random one).
  uint64_t seed() const { return seed_; }
  // For samplers elsewhere (the device's): the distinct ids the penalties act on (prompt and
  // output ids with a repetition penalty, output ids otherwise) and each one's count in the
  // output (0 = prompt only). Empty when the params set no penalty.
  void penalty_entries(std::vector<int32_t>& tokens, std::vector<int32_t>& counts) const;

 private:
  void append_seen_(int32_t token);

  SamplingParams params_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::unordered_map<int32_t, int> output_counts_;
  std::vector<int32_t> seen_;  // prompt ∪ output, for the repetition penalty
  std::vector<uint8_t> seen_mask_;
  std::vector<float> scratch_;
  std::vector<int32_t> order_;
};

// log softmax(logits)[token], computed stably.
float token_logprob(const float* logits, int64_t vocab, int32_t token);

// The n largest entries of log softmax(logits), best first (ties by lower id).
std::vector<std::pair<int32_t, float>> top_logprobs(const float* logits, int64_t vocab, int n);

}  // namespace iris
