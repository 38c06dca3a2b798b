// Pillow's Image.resize for 8-bit images, reproduced to the bit: the transformers image
// processors resize uint8 images by handing them to Pillow, so the pixels a vision tower was
// trained on are Pillow's.
//
// Convolution filters (box, bilinear, hamming, bicubic, lanczos) run Pillow's separable
// two-pass scheme: horizontal pass first (only over the source rows the vertical pass will
// read), then vertical, each with the filter's support widened by the downscale factor
// (antialiasing), per-output-pixel weights normalised to sum 1, converted to fixed point
// with 22 fractional bits (PRECISION_BITS = 32 - 8 - 2), accumulated in int32 from a
// rounding bias of 1 << 21, and clipped to 0..255 after an arithmetic shift. The
// intermediate image is 8-bit. NEAREST is Pillow's affine-scale path: source coordinates
// accumulated in double from scale * 0.5, truncated.
#pragma once

#include <cstdint>
#include <string_view>

#include "engine/image/decode.h"

namespace iris::image {

// Values are Pillow's Image.Resampling enum, as stored in preprocessor_config.json.
enum class Resample : int {
  kNearest = 0,
  kLanczos = 1,
  kBilinear = 2,
  kBicubic = 3,
  kBox = 4,
  kHamming = 5,
};

// From the integer in a config; throws iris::Error for values Pillow does not define.
Resample resample_from_pil(int value);
std::string_view resample_name(Resample filter);

// Pillow's `Image.resize((out_width, out_height), filter)` of an L (1 channel) or RGB
// (3 channel) image. Same-size resizes return a copy, as Pillow does. Pillow resizes LA/RGBA
// with premultiplied alpha; that path is not reproduced, so 2/4-channel images are refused
// (convert_to_rgb first, as every Hugging Face pipeline does).
DecodedImage resize(const DecodedImage& image, uint32_t out_width, uint32_t out_height,
                    Resample filter);

// The window [x0, x0 + width) x [y0, y0 + height) of resize(image, out_width, out_height,
// filter), identical to cropping the full result but computing only the window (each
// output pixel's weights depend only on the sizes and its index). The preprocessor uses it
// to resize-then-center-crop without materialising the long side of a panorama.
DecodedImage resize_region(const DecodedImage& image, uint32_t out_width, uint32_t out_height,
                           Resample filter, uint32_t x0, uint32_t y0, uint32_t width,
                           uint32_t height);

}  // namespace iris::image
