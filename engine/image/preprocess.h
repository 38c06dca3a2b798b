// Turns a decoded image into the float32 pixel_values a vision tower takes, exactly as the
// (slow, Pillow-based) Hugging Face image processors named in a checkpoint's
// preprocessor_config.json do: CLIPImageProcessor, SiglipImageProcessor and
// LlavaImageProcessor.
//
// The pipeline, in transformers' order:
//   convert to RGB → [LLaVA do_pad: pad to a square with int(mean * 255)] → resize (Pillow,
//   8-bit) → center crop (zero-padded when the crop is larger) → rescale (uint8 * factor in
//   float64, then float32) → normalize ((x - mean) / std in float32) → [3, H, W].
// For shortest_edge sizes the output size is transformers' get_resize_output_image_size:
// the short side becomes `shortest_edge`, the long side int(shortest_edge * long / short)
// (truncated). Differences from transformers are listed in engine/image/README.md.
//
// patchify() lays the result out for a patch embedding done as one matrix multiply.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/image/decode.h"
#include "engine/image/resample.h"

namespace iris::image {

// kGemma3: Gemma3ImageProcessor without pan-and-scan, which is SiglipImageProcessor's
// pipeline with BILINEAR as the default resample.
enum class ProcessorKind { kClip, kSiglip, kLlava, kGemma3 };

struct PreprocessorConfig {
  ProcessorKind kind = ProcessorKind::kClip;
  std::string processor_type;  // as written in the file, e.g. "CLIPImageProcessor"
  bool do_resize = true;
  // Either shortest_edge > 0 (resize keeping the aspect ratio), or a fixed height/width.
  int shortest_edge = 0;
  int resize_height = 0;
  int resize_width = 0;
  Resample resample = Resample::kBicubic;
  bool do_center_crop = false;
  int crop_height = 0;
  int crop_width = 0;
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  // As written (Python floats); normalize() casts them to float32 like numpy does.
  std::array<double, 3> image_mean{};
  std::array<double, 3> image_std{};
  // Recorded only: Iris always converts to RGB (transformers fails on non-RGB images when
  // this is off, since its normalize expects 3 channels).
  bool do_convert_rgb = true;
  bool do_pad = false;  // LlavaImageProcessor: pad to a square before resizing
};

// Parses preprocessor_config.json. The processor is taken from "image_processor_type"
// (or the older "feature_extractor_type"); the "Fast" variants map to the same processor
// (Iris reproduces the Pillow-based one). Missing fields take that class's defaults in
// transformers. Legacy forms are accepted as transformers' get_size_dict does: an int
// size (shortest_edge for CLIP/LLaVA), an int crop_size (square), [height, width] lists,
// and a scalar image_mean/image_std. Throws iris::Error naming the field for anything else.
PreprocessorConfig parse_preprocessor_config(const nlohmann::json& config);
PreprocessorConfig parse_preprocessor_config_text(std::string_view json_text);
// `path` is the file itself or a checkpoint directory holding preprocessor_config.json.
PreprocessorConfig load_preprocessor_config(const std::string& path);

// Channel-first float32 image: data[(c * height + y) * width + x].
struct PixelValues {
  int channels = 0;
  int height = 0;
  int width = 0;
  std::vector<float> data;
};

// The whole pipeline on any decoded image (converted to RGB first).
PixelValues preprocess(const DecodedImage& image, const PreprocessorConfig& config);

// (height, width) the resize step produces for an input of (height, width).
std::pair<int, int> resize_output_size(int height, int width, const PreprocessorConfig& config);

// transformers' center_crop on a uint8 HWC image: offsets (orig - crop) // 2 with Python
// floor division; where the crop is larger than the image, zero padding, placed
// ceil((crop - orig) / 2) before the image.
DecodedImage center_crop(const DecodedImage& image, int crop_height, int crop_width);

// LlavaImageProcessor.pad_to_square: the image centred ((max - side) // 2) on a square
// canvas of `color`.
DecodedImage pad_to_square(const DecodedImage& image, const std::array<uint8_t, 3>& color);

// Non-overlapping patch_size x patch_size patches in row-major grid order, each flattened
// as (channel, row, column) — the order in which a Conv2d(C, D, kernel=P, stride=P) weight
// [D, C, P, P] flattens, so that patch embedding is patches [N, C*P*P] x weight^T.
// Like that convolution (no padding), trailing rows/columns that do not fill a whole patch
// are dropped (SigLIP-so400m: 384 / 14 → 27 x 27 patches, 6 pixels unused).
struct Patches {
  int grid_height = 0;
  int grid_width = 0;
  int patch_size = 0;
  int patch_dim = 0;        // channels * patch_size^2
  std::vector<float> data;  // [grid_height * grid_width, patch_dim]
  int num_patches() const { return grid_height * grid_width; }
};
Patches patchify(const PixelValues& pixel_values, int patch_size);

}  // namespace iris::image
