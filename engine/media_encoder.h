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

#include "engine/core/check.h"
#include "engine/model_runner.h"

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

  // Checks a request's media span that needs encoding, before admission; throws iris::Error
  // naming the problem. The default: a fixed-size item of tokens_per_item() rows made from an
  // input of input_size() values. Encoders whose items vary in size (Qwen2.5-VL) check the
  // span's grid against its input instead.
  virtual void check_item(const MediaEmbeds& m) const {
    IRIS_CHECK(m.length == tokens_per_item())
        << "media span at " << m.position << " has " << m.length << " tokens, the encoder yields "
        << tokens_per_item();
    IRIS_CHECK(m.encoder_input->size() == input_size())
        << "media span at " << m.position << " has an encoder input of "
        << m.encoder_input->size() << " values, the encoder takes " << input_size();
  }
  // Encodes whole spans: one fp32 [m.length, output_dim] array per span, in order. The default
  // passes their encoder inputs to encode(); variable-size encoders read each span's grid.
  virtual std::vector<std::shared_ptr<const std::vector<float>>> encode_items(
      std::span<const MediaEmbeds* const> items) {
    std::vector<const std::vector<float>*> inputs;
    inputs.reserve(items.size());
    for (const MediaEmbeds* m : items) inputs.push_back(m->encoder_input.get());
    return encode(inputs);
  }
};

}  // namespace iris
