// Token-level stop rules shared by every generation path: EOS ids (unless ignore_eos),
// stop_token_ids, max_tokens, min_tokens, and the model's context length. Stop strings
// are matched on text by the incremental detokenizer (engine/tokenizer/tokenizer.h).
//
// What a finished choice carries: token_ids are every sampled token, the EOS or stop id
// that ended it included; text is the decode of those tokens (skip_special_tokens applied)
// cut before the first stop-string match that counts, and nothing held back is ever lost,
// whatever ended the choice. min_tokens bans EOS and stop ids until reached, and a stop
// string counts only when its match ends in text of a token after the first min_tokens
// (vLLM's rule): a match wholly inside that text is streamed as ordinary text.
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
