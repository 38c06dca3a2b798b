// SequenceConstraint (see sequence_constraint.h).
#include "engine/sequence_constraint.h"

#include <algorithm>

#include "engine/core/check.h"

namespace iris {

void check_constraint_fits(const SamplingParams& params, int64_t model_vocab_size) {
  if (!params.constraint) return;
  const int32_t n = params.constraint->vocabulary().size();
  if (n > model_vocab_size)
    fail("the output constraint was compiled for a vocabulary of ", n,
         " tokens; this model has ", model_vocab_size);
}

SequenceConstraint::SequenceConstraint(std::shared_ptr<const grammar::CompiledConstraint> constraint)
    : matcher_(std::move(constraint)) {}

void SequenceConstraint::prepare_mask(int64_t vocab) {
  if (mask_vocab_ == vocab) return;
  mask_.assign(static_cast<size_t>((vocab + 31) / 32), 0u);
  matcher_.fill_next_token_bitmask(mask_.data());  // writes matcher_.mask_words() <= size
  mask_vocab_ = vocab;
}

const uint32_t* SequenceConstraint::next_mask(int64_t vocab) {
  prepare_mask(vocab);
  return mask_.data();
}

std::optional<FinishReason> SequenceConstraint::advance(int32_t token) {
  mask_vocab_ = -1;
  if (!matcher_.accept_token(token)) {
    error_ = "the output constraint allows no token here (token " + std::to_string(token) +
             " was sampled); the vocabulary cannot continue the constrained output";
    return FinishReason::kError;
  }
  if (matcher_.is_terminated()) return FinishReason::kStop;
  return std::nullopt;
}

}  // namespace iris
