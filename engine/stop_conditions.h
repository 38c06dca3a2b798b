// Token-level stop rules shared by every generation path: EOS ids (unless ignore_eos),
// stop_token_ids, max_tokens, min_tokens, and the model's context length. Stop strings
// are matched on text by the incremental detokenizer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/sampler.h"

namespace iris {

enum class FinishReason { kStop, kLength, kAbort, kError };

inline const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "?";
}

// Ids that must not be sampled yet: EOS and stop ids while fewer than min_tokens exist.
inline std::vector<int32_t> banned_tokens(const SamplingParams& p, const std::vector<int32_t>& eos,
                                          int num_generated) {
  std::vector<int32_t> banned;
  if (num_generated >= p.min_tokens) return banned;
  if (!p.ignore_eos) banned = eos;
  banned.insert(banned.end(), p.stop_token_ids.begin(), p.stop_token_ids.end());
  return banned;
}

// Called after `token` became the num_generated-th output token of a sequence whose total
// length (prompt + output) is now total_len.
inline std::optional<FinishReason> check_token_stop(const SamplingParams& p,
                                                    const std::vector<int32_t>& eos,
                                                    int32_t token, int num_generated,
                                                    int64_t total_len, int64_t max_model_len) {
  if (num_generated >= p.min_tokens) {
    if (!p.ignore_eos)
      for (int32_t e : eos)
        if (token == e) return FinishReason::kStop;
    for (int32_t s : p.stop_token_ids)
      if (token == s) return FinishReason::kStop;
  }
  if (num_generated >= p.max_tokens || total_len >= max_model_len) return FinishReason::kLength;
  return std::nullopt;
}

}  // namespace iris
