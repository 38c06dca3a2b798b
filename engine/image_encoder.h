// Images in, embeddings out, in two halves. prepare() (any thread, no device) decodes the
// bytes (refusing oversized images on their header), preprocesses exactly as the checkpoint's
// preprocessor_config.json says, patchifies, and hashes the decoded pixels. encode() (the
// engine's thread, as its MediaEncoder) runs the vision tower and projector over a batch of
// prepared images and brings the embeddings to the host.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <span>
#include <string>
#include <vector>

#include "engine/image/content_hash.h"
#include "engine/image/decode.h"
#include "engine/image/preprocess.h"
#include "engine/media_encoder.h"
#include "engine/model_runner.h"
#include "engine/models/vision.h"

namespace iris {

// The tokens around an image's embedding rows. Gemma 3's processor replaces the text
// <start_of_image> by "\n\n<start_of_image>", the image tokens, "<end_of_image>\n\n" and then
// tokenizes, so those newlines join the newlines next to them into one run: here the
// newline-only tokens on either side are taken into the run, which is retokenized whole.
struct ImageMarkup {
  int32_t fill = 0;             // the token at each embedding row
  std::vector<int32_t> before;  // tokens before the rows (after the leading newlines)
  std::vector<int32_t> after;   // tokens after them (before the trailing newlines)
  int lead_newlines = 0;        // newlines the processor writes before `before`
  int trail_newlines = 0;       // and after `after`
  // newline_run[k]: the tokenization of k newlines (k >= 1); newline_count: the newlines of
  // each token the tokenizer makes of newlines alone.
  std::vector<std::vector<int32_t>> newline_run;
  std::unordered_map<int32_t, int> newline_count;
  // Tokens of a run of k newlines (longer runs than the table: table-sized pieces).
  std::vector<int32_t> newlines(int k) const;
};

class ImageEncoder final : public MediaEncoder {
 public:
  // Null for a text-only model. Reads `dir`/preprocessor_config.json. Images per encoder
  // call: at most max_batch (activations are sized for that once).
  static std::unique_ptr<ImageEncoder> load(const std::string& dir, const Checkpoint& ckpt,
                                            const ModelConfig& config, Backend& backend,
                                            int max_batch = 4);

  int tokens_per_image() const { return encoder_->tokens_per_image(); }
  // The token a prompt holds once per image (LLaVA: the image token; Gemma 3:
  // `<start_of_image>`, which markup() expands).
  int32_t image_token_id() const { return image_token_id_; }
  // How a placeholder expands around the embedding rows; null = tokens_per_image copies of
  // the placeholder itself.
  const ImageMarkup* markup() const { return markup_ ? &*markup_ : nullptr; }

  struct Prepared {
    std::shared_ptr<const std::vector<float>> patches;  // fp32 [patches_per_image, patch_dim]
    image::ContentHash hash;                            // of the decoded RGB pixels
    double decode_seconds = 0, preprocess_seconds = 0;  // preprocess includes patchify and hash
    uint64_t cache_key() const { return hash.hi ^ hash.lo; }
  };
  // Thread-safe. Throws iris::Error for undecodable or oversized images (nothing is decoded
  // past the header of an image over the limits).
  Prepared prepare(std::span<const uint8_t> bytes, const image::DecodeLimits& limits) const;

  // MediaEncoder: inputs are Prepared::patches.
  int tokens_per_item() const override { return encoder_->tokens_per_image(); }
  int64_t output_dim() const override { return encoder_->output_dim(); }
  size_t input_size() const override {
    return static_cast<size_t>(encoder_->patches_per_image()) * encoder_->patch_dim();
  }
  std::vector<std::shared_ptr<const std::vector<float>>> encode(
      std::span<const std::vector<float>* const> inputs) override;

 private:
  ImageEncoder() = default;
  std::unique_ptr<VisionEncoder> encoder_;
  image::PreprocessorConfig preprocess_;
  Backend* backend_ = nullptr;
  int32_t image_token_id_ = 0;
  std::optional<ImageMarkup> markup_;
  int patch_size_ = 0;
  int max_batch_ = 1;
  Buffer patches_, out_;
  std::vector<float> staging_;
};

// Replaces each occurrence of `image_token_id` in `prompt` by tokens_per_image copies (with
// `markup`: by markup->before, tokens_per_image copies of markup->fill, markup->after) and
// returns one media span per image at the expanded rows, carrying the prepared image as its
// encoder input. Throws unless the number of occurrences equals images.size().
std::vector<MediaEmbeds> expand_image_placeholders(std::vector<int32_t>& prompt,
                                                   int32_t image_token_id, int tokens_per_image,
                                                   const std::vector<ImageEncoder::Prepared>& images,
                                                   const ImageMarkup* markup = nullptr);

}  // namespace iris
