// The engine's view of a media encoder (a vision tower + projector): it turns prepared inputs
// (for images: preprocessed, patchified pixels) into the embedding rows that replace a media
// span's placeholder tokens. The engine calls it on its own thread, for the items the
// scheduler lists in a step (within the per-step encoder budget), and keeps the results in
// its encoder cache under the items' content hashes.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace iris {

class MediaEncoder {
 public:
  virtual ~MediaEncoder() = default;
  // Embedding rows per item (placeholder tokens it fills) and their width (hidden size).
  virtual int tokens_per_item() const = 0;
  virtual int64_t output_dim() const = 0;
  // Values of one prepared input (the engine refuses a request whose input differs).
  virtual size_t input_size() const = 0;
  // One fp32 [tokens_per_item, output_dim] array per input, in order. Inputs come from the
  // encoder's own preparation step, so a malformed one is a programming error (throws).
  virtual std::vector<std::shared_ptr<const std::vector<float>>> encode(
      std::span<const std::vector<float>* const> inputs) = 0;
};

}  // namespace iris
