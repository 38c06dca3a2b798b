// Internal to engine/image: the per-format probe and decode entry points behind
// decode.h, and the small byte readers they share. Not part of the public API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/image/decode.h"

namespace iris::image::detail {

bool has_jpeg_magic(std::span<const uint8_t> bytes);
bool has_png_magic(std::span<const uint8_t> bytes);

ImageInfo probe_jpeg(std::span<const uint8_t> bytes);
ImageInfo probe_png(std::span<const uint8_t> bytes);

// Both re-check the dimensions their library reads against `limits` before allocating.
DecodedImage decode_jpeg(std::span<const uint8_t> bytes, const DecodeLimits& limits);
DecodedImage decode_png(std::span<const uint8_t> bytes, const DecodeLimits& limits);

// The Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block (starting at the
// "II*\0" / "MM\0*" header); 1 when absent, out of range or unreadable. Never throws.
int exif_orientation(std::span<const uint8_t> tiff);

// Throws iris::Error unless width * height fits the limit; `what` names the format.
void check_pixel_limit(const char* what, uint64_t width, uint64_t height,
                       const DecodeLimits& limits);

inline uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
inline uint16_t read_be16(const uint8_t* p) {
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}

}  // namespace iris::image::detail
