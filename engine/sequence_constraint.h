// A sequence's structured-output constraint during generation: the token mask for the next
// sample and the advance after it. The engine keeps one per sequence (n > 1: one per choice);
// it lives on the sequence, so a preempted sequence resumes with its matcher where it was.
// Compiling the constraint happens before submit (grammar::ConstraintCache::get, on the
// caller's thread); nothing here compiles.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/grammar/constraint.h"
#include "engine/stop_conditions.h"

namespace iris {

// Throws iris::Error when the request's constraint was compiled for a vocabulary larger than
// the model's logits (a constraint from another model).
void check_constraint_fits(const SamplingParams& params, int64_t model_vocab_size);

class SequenceConstraint {
 public:
  explicit SequenceConstraint(std::shared_ptr<const grammar::CompiledConstraint> constraint);

  // The allowed-token bitmask for the next sample over `vocab` logits (LSB-first uint32 words;
  // ids past the constraint's vocabulary are never allowed). Valid until advance(). Computed
  // here unless prepare_mask() already did it for this position.
  const uint32_t* next_mask(int64_t vocab);
  // Computes the next mask ahead of time (the engine calls it on its mask thread while the
  // forward pass runs); next_mask() then returns it without work.
  void prepare_mask(int64_t vocab);
  // Advances by the sampled token. kStop once the constrained output is complete and nothing
  // but EOS could follow (or EOS ended it); kError when the token was not allowed (the mask had
  // nothing to offer: a vocabulary that cannot spell what the grammar needs).
  std::optional<FinishReason> advance(int32_t token);
  const std::string& error() const { return error_; }
  const grammar::Matcher& matcher() const { return matcher_; }

 private:
  grammar::Matcher matcher_;
  std::vector<uint32_t> mask_;
  int64_t mask_vocab_ = -1;  // the vocab size mask_ holds the current position's mask for
  std::string error_;
};

}  // namespace iris
