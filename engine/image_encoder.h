// Images in, embeddings out, in two halves. prepare() (any thread, no device) decodes the
// bytes (refusing oversized images on their header), preprocesses exactly as the checkpoint's
// preprocessor_config.json says, patchifies, and hashes the decoded pixels. encode() (the
// engine's thread, as its MediaEncoder) runs the vision tower and projector over a batch of
// prepared images and brings the embeddings to the host.
//
// Two towers: LLaVA's (fixed-size images, tokens_per_image() rows each) and Qwen2.5-VL's
// (engine/models/qwen_vision.h), whose images keep their aspect ratio (smart_resize) and so
// fill a different number of rows each: Prepared::tokens and its grid say how many.
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
#include "engine/image/qwen_preprocess.h"
#include "engine/image/video_decode.h"
#include "engine/media_encoder.h"
#include "engine/model_runner.h"
#include "engine/models/qwen_vision.h"
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

  // Rows per image for LLaVA and Gemma 3; 0 for Qwen2.5-VL (each Prepared says).
  int tokens_per_image() const { return encoder_ ? encoder_->tokens_per_image() : 0; }
  // The token a prompt holds once per image (LLaVA, Qwen2.5-VL: the image token; Gemma 3:
  // `<start_of_image>`, which markup() expands).
  int32_t image_token_id() const { return image_token_id_; }
  // How a placeholder expands around the embedding rows; null = tokens_per_image copies of
  // the placeholder itself.
  const ImageMarkup* markup() const { return markup_ ? &*markup_ : nullptr; }
  // Qwen2.5-VL: the processor's pixel range (requests may narrow it); null otherwise.
  const image::QwenProcessorConfig* qwen_processor() const {
    return qwen_ ? &qwen_processor_ : nullptr;
  }

  struct Prepared {
    std::shared_ptr<const std::vector<float>> patches;  // fp32 [patches_per_image, patch_dim]
    image::ContentHash hash;                            // of the decoded RGB pixels
    double decode_seconds = 0, preprocess_seconds = 0;  // preprocess includes patchify and hash
    // Qwen2.5-VL: embedding rows and their grid in language-model tokens (t, rows, columns
    // after the merger); 0 for LLaVA (tokens_per_image() rows).
    int tokens = 0;
    int32_t grid_t = 0, grid_h = 0, grid_w = 0;
    // A video's temporal M-RoPE step per grid frame (second_per_grid_t * tokens_per_second).
    double temporal_step = 0;
    std::vector<int> sampled_frames;  // a video: the indices of the frames used
    uint64_t cache_key() const { return hash.hi ^ hash.lo; }
  };
  // Thread-safe. Throws iris::Error for undecodable or oversized images (nothing is decoded
  // past the header of an image over the limits). Qwen2.5-VL: min_pixels / max_pixels > 0
  // replace the processor's range for this image (the caller enforces its caps).
  Prepared prepare(std::span<const uint8_t> bytes, const image::DecodeLimits& limits,
                   int64_t min_pixels = 0, int64_t max_pixels = 0) const;

  // Qwen2.5-VL video: `frames` (JPEG/PNG, in order, all of one size) shot at `fps` frames per
  // second, sampled as the Qwen processor does (about video_fps per second), preprocessed
  // and patchified in temporal pairs. second_per_grid_t = temporal_patch_size / video_fps.
  Prepared prepare_video(std::span<const std::span<const uint8_t>> frames, double fps,
                         const image::DecodeLimits& limits, int64_t min_pixels = 0,
                         int64_t max_pixels = 0) const;
  // The rows, grid and frames a video of num_frames frames of width x height at fps will have.
  Prepared layout_video(int num_frames, double fps, uint32_t width, uint32_t height,
                        int64_t min_pixels = 0, int64_t max_pixels = 0) const;
  // Qwen2.5-VL video file (MP4, WebM/Matroska, AVI; needs a build with FFmpeg): the
  // header's size, frame count and frame rate give the layout (layout_video on
  // probe_video's VideoInfo), the sampled frames are decoded in memory and prepared as
  // prepare_video does. Throws iris::Error for anything beyond `limits` or undecodable.
  Prepared prepare_video_file(std::span<const uint8_t> bytes, const image::VideoLimits& limits,
                              int64_t min_pixels = 0, int64_t max_pixels = 0) const;
  int32_t video_token_id() const { return video_token_id_; }

  // Qwen2.5-VL: the rows and grid an image of width x height will have, from its header alone
  // (Prepared without patches), so a prompt can be expanded before the image is decoded.
  // Throws iris::Error for sizes smart_resize refuses. LLaVA: tokens_per_image() rows.
  Prepared layout(uint32_t width, uint32_t height, int64_t min_pixels = 0,
                  int64_t max_pixels = 0) const;
  // Qwen2.5-VL: the most embedding rows one image can have under the processor's max_pixels.
  int max_tokens_per_image() const;

  // MediaEncoder: inputs are Prepared::patches.
  int tokens_per_item() const override { return tokens_per_image(); }
  int64_t output_dim() const override {
    return encoder_ ? encoder_->output_dim() : qwen_->output_dim();
  }
  size_t input_size() const override {
    return encoder_ ? static_cast<size_t>(encoder_->patches_per_image()) * encoder_->patch_dim() : 0;
  }
  std::vector<std::shared_ptr<const std::vector<float>>> encode(
      std::span<const std::vector<float>* const> inputs) override;
  void check_item(const MediaEmbeds& m) const override;
  std::vector<std::shared_ptr<const std::vector<float>>> encode_items(
      std::span<const MediaEmbeds* const> items) override;

 private:
  ImageEncoder() = default;
  // A video's sampled frames (decoded) into p: patches, content key, preprocess time.
  void finish_video(Prepared& p, const std::vector<image::DecodedImage>& decoded, int64_t min_pixels,
                    int64_t max_pixels) const;
  std::unique_ptr<VisionEncoder> encoder_;        // LLaVA
  std::unique_ptr<QwenVisionEncoder> qwen_;       // Qwen2.5-VL
  image::QwenProcessorConfig qwen_processor_;
  image::PreprocessorConfig preprocess_;
  Backend* backend_ = nullptr;
  int32_t image_token_id_ = 0;
  std::optional<ImageMarkup> markup_;
  int32_t video_token_id_ = -1;
  int patch_size_ = 0;
  int max_batch_ = 1;
  Buffer patches_, out_;
  std::vector<float> staging_;
};

// Replaces each occurrence of `image_token_id` in `prompt` by tokens_per_image copies (for a
// Qwen2.5-VL image, its Prepared::tokens copies, with its grid on the span; with `markup`:
// by markup->before, the copies of markup->fill, markup->after) and returns one media span
// per image at the expanded rows, carrying the prepared image as its encoder input. Throws
// unless the number of occurrences equals images.size().
std::vector<MediaEmbeds> expand_image_placeholders(std::vector<int32_t>& prompt,
                                                   int32_t image_token_id, int tokens_per_image,
                                                   const std::vector<ImageEncoder::Prepared>& images,
                                                   const ImageMarkup* markup = nullptr);

// Qwen2.5-VL prompts with images and videos: the i-th `image_token_id` becomes images[i]'s
// rows, the j-th `video_token_id` videos[j]'s; the spans come back in prompt order. Throws
// unless the counts match.
std::vector<MediaEmbeds> expand_media_placeholders(std::vector<int32_t>& prompt,
                                                   int32_t image_token_id,
                                                   const std::vector<ImageEncoder::Prepared>& images,
                                                   int32_t video_token_id,
                                                   const std::vector<ImageEncoder::Prepared>& videos);

}  // namespace iris
