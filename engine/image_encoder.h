// Images in, embeddings out: decode (refusing oversized images on their header), preprocess
// exactly as the checkpoint's preprocessor_config.json says, patchify, run the vision tower
// and projector, and bring the embeddings to the host as a media span for the engine.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/image/content_hash.h"
#include "engine/image/decode.h"
#include "engine/image/preprocess.h"
#include "engine/model_runner.h"
#include "engine/models/vision.h"

namespace iris {

class ImageEncoder {
 public:
  // Null for a text-only model. Reads `dir`/preprocessor_config.json.
  static std::unique_ptr<ImageEncoder> load(const std::string& dir, const Checkpoint& ckpt,
                                            const ModelConfig& config, Backend& backend);

  int tokens_per_image() const { return encoder_->tokens_per_image(); }
  int32_t image_token_id() const { return image_token_id_; }

  struct Encoded {
    std::shared_ptr<const std::vector<float>> embeds;  // [tokens_per_image, hidden] fp32
    image::ContentHash hash;                           // of the decoded RGB pixels
  };
  // Throws iris::Error for undecodable or oversized images (nothing is decoded past the
  // header of an image over the limits).
  Encoded encode(std::span<const uint8_t> bytes, const image::DecodeLimits& limits);

 private:
  ImageEncoder() = default;
  std::unique_ptr<VisionEncoder> encoder_;
  image::PreprocessorConfig preprocess_;
  Backend* backend_ = nullptr;
  int32_t image_token_id_ = 0;
  int patch_size_ = 0;
  Buffer patches_, out_;
};

// Replaces each occurrence of `image_token_id` in `prompt` by tokens_per_image copies and
// returns one media span per image at the expanded positions. Throws unless the number of
// occurrences equals images.size().
std::vector<MediaEmbeds> expand_image_placeholders(std::vector<int32_t>& prompt,
                                                   int32_t image_token_id, int tokens_per_image,
                                                   const std::vector<ImageEncoder::Encoded>& images);

}  // namespace iris
