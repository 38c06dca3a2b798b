// Batched token sampling on the GPU over F32 logits [S, V], one row per sequence with its
// own parameters, following engine/sampler.cpp: repetition penalty (over prompt and output
// tokens), presence/frequency penalties (over output tokens), banned ids, then greedy
// argmax (temperature 0; ties to the lowest id) or temperature, top-k, top-p (over the
// top-k set, renormalised), min-p, and an inverse-CDF draw. The kept set is exactly the
// host sampler's: candidates ordered by (value desc, id asc), cut to prefixes. The uniform
// draw comes from Philox4x32-10 keyed by the row's seed at counter `offset`, so a request's
// draws do not depend on what else is in the batch (pass the number of tokens generated
// so far as the offset). The draws differ from the host sampler's std::mt19937_64 stream:
// the distribution is the same, the individual samples are not.
//
// The engine samples through it (cuda/device_step.cpp) on one GPU for requests without a
// constraint, logit_bias or top_logprobs. All pointers are device pointers; nothing is
// allocated and nothing synchronises, so a call can sit inside a captured decode graph.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/sampler.h"

namespace iris::cuda {

struct SamplingRowParams {
  float temperature = 1.0f;  // 0 = greedy
  int32_t top_k = -1;        // <= 0 or >= vocab: off
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t top_logprobs = 0;  // also report this many best log-probabilities (<= kMaxTopLogprobs)
  uint64_t seed = 0;
  uint64_t offset = 0;  // Philox counter: e.g. tokens generated so far
};

inline SamplingRowParams row_params(const SamplingParams& p, uint64_t seed, uint64_t offset) {
  SamplingRowParams r;
  r.temperature = p.temperature;
  r.top_k = p.top_k;
  r.top_p = p.top_p;
  r.min_p = p.min_p;
  r.repetition_penalty = p.repetition_penalty;
  r.presence_penalty = p.presence_penalty;
  r.frequency_penalty = p.frequency_penalty;
  r.top_logprobs = p.top_logprobs;
  r.seed = seed;
  r.offset = offset;
  return r;
}

struct SamplingBatch {
  const float* logits = nullptr;              // [S, V], read only
  float* scratch = nullptr;                   // [S, V] workspace (penalised logits)
  const SamplingRowParams* params = nullptr;  // [S]
  // Tokens each row has seen, CSR: row s owns entries [offsets[s], offsets[s + 1]) of
  // tokens (distinct ids: prompt and output) and counts (times in the output; 0 = prompt
  // only). offsets null = no penalties anywhere.
  const int32_t* penalty_offsets = nullptr;  // [S + 1]
  const int32_t* penalty_tokens = nullptr;
  const int32_t* penalty_counts = nullptr;
  // OpenAI's logit_bias, CSR as above (distinct ids per row), added after the penalties;
  // null = none.
  const int32_t* bias_offsets = nullptr;  // [S + 1]
  const int32_t* bias_tokens = nullptr;
  const float* bias_values = nullptr;
  // Ids that must not be sampled (EOS before min_tokens), CSR as above; null = none.
  const int32_t* banned_offsets = nullptr;  // [S + 1]
  const int32_t* banned_tokens = nullptr;
  // Structured-output masks: row s's allowed ids are the set bits of
  // allowed[s * mask_words, (s + 1) * mask_words) (bit t of word t / 32, LSB first); ids whose
  // bit is clear get probability 0 after the penalties, bias and bans. null = no masks;
  // has_mask[s] = 0 leaves row s unmasked.
  const uint32_t* allowed = nullptr;
  const uint8_t* has_mask = nullptr;  // [S]
  int mask_words = 0;
  // The best params.top_logprobs entries of log softmax(unmodified logits) per row, best
  // first, ties by lower id: [S, kMaxTopLogprobs] each; null when no row asks.
  int32_t* out_top_ids = nullptr;
  float* out_top_logprobs = nullptr;
  int32_t* out_tokens = nullptr;  // [S]
  float* out_logprobs = nullptr;  // [S] log softmax(unmodified logits)[token]
  int num_rows = 0;
  int vocab = 0;
};

// One 1024-thread block per row; about 12 passes over the row (L2-resident) when top-k and
// top-p are both on, 3 for greedy.
void launch_sample(const SamplingBatch& batch, cudaStream_t stream);

}  // namespace iris::cuda
