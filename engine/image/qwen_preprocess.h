// Qwen2-VL / Qwen2.5-VL image preprocessing, exactly as transformers' Pillow-based
// Qwen2VLImageProcessor: smart_resize picks a size whose sides are multiples of patch_size x
// merge_size and whose area lies in [min_pixels, max_pixels] (a request may narrow the range
// within the server's caps), then the image goes through the common pipeline (RGB, Pillow
// bicubic resize, rescale, normalize with the CLIP mean/std) and is cut into patches of
// temporal_patch_size frames (an image is its own frame repeated), ordered merge block by
// merge block.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/image/decode.h"
#include "engine/image/preprocess.h"

namespace iris::image {

struct QwenProcessorConfig {
  int patch_size = 14;
  int merge_size = 2;
  int temporal_patch_size = 2;
  int64_t min_pixels = 56 * 56;
  int64_t max_pixels = 28 * 28 * 1280;
  // Videos: frames sampled to about video_fps per second, min_frames..max_frames of them.
  double video_fps = 2.0;
  int min_frames = 4;
  int max_frames = 768;
  // The common pipeline's settings (resize size is chosen per image).
  PreprocessorConfig common;

  int factor() const { return patch_size * merge_size; }
};

// Parses a Qwen2VLImageProcessor preprocessor_config.json: min_pixels / max_pixels (or the
// newer size {"shortest_edge", "longest_edge"}), patch, merge and temporal patch sizes, and
// the rescale/normalize fields. Throws iris::Error naming the field.
QwenProcessorConfig parse_qwen_processor_config(const nlohmann::json& config);
// `path` is the file itself or a checkpoint directory holding preprocessor_config.json.
QwenProcessorConfig load_qwen_processor_config(const std::string& path);

// transformers' smart_resize: (height, width) for an image of (height, width). Throws
// iris::Error for images under 10 pixels on a side or more elongated than 200:1.
std::pair<int, int> smart_resize(int height, int width, int factor, int64_t min_pixels,
                                 int64_t max_pixels);

// Patches of a clip of frames of equal size: [grid_t * grid_h * grid_w, C * T * P * P], each
// row one patch flattened (channel, frame, y, x) — Conv3d's weight order — rows ordered frame
// group, then merge block (row-major), then the merge_size^2 patches of the block (row-major).
// Grids are in patches.
struct QwenPatches {
  int grid_t = 0, grid_h = 0, grid_w = 0;
  int patch_dim = 0;
  std::vector<float> data;
  int64_t num_patches() const { return static_cast<int64_t>(grid_t) * grid_h * grid_w; }
};
// frames.size() must be a multiple of temporal_patch_size, or 1 (repeated to fill a group).
QwenPatches qwen_patchify(const std::vector<PixelValues>& frames, const QwenProcessorConfig& config);

// Preprocesses one image: smart_resize within [min_pixels, max_pixels], the common pipeline,
// qwen_patchify.
QwenPatches qwen_preprocess_image(const DecodedImage& image, const QwenProcessorConfig& config,
                                  int64_t min_pixels, int64_t max_pixels);

// Video frame sampling as Qwen2VLVideoProcessor.sample_frames with `fps`: about `fps` frames
// per second of a clip of `total` frames at `source_fps`, at least min_frames, at most
// max_frames and `total`, rounded down to a multiple of temporal_patch_size, spread evenly
// (torch.arange(0, total, total / n) truncated). Throws iris::Error when no whole temporal
// patch can be sampled.
std::vector<int> qwen_sample_frames(int total, double source_fps, double fps, int temporal_patch_size,
                                    int min_frames, int max_frames);

// A video's frames (already sampled, all of one size) as the Pillow-based
// Qwen2VLImageProcessor preprocesses videos: one smart_resize for the clip, the common
// pipeline per frame, the last frame repeated to fill a temporal patch, qwen_patchify.
QwenPatches qwen_preprocess_video(const std::vector<DecodedImage>& frames,
                                  const QwenProcessorConfig& config, int64_t min_pixels,
                                  int64_t max_pixels);

}  // namespace iris::image
