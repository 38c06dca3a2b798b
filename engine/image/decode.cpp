// Format dispatch, limits, EXIF orientation parsing and Pillow's convert("RGB").
#include "engine/image/decode.h"

#include "engine/core/check.h"
#include "engine/image/codec.h"

namespace iris::image {

const char* format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::kJpeg:
      return "jpeg";
    case ImageFormat::kPng:
      return "png";
  }
  return "unknown";
}

namespace detail {

bool has_jpeg_magic(std::span<const uint8_t> bytes) {
  return bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF;
}

bool has_png_magic(std::span<const uint8_t> bytes) {
  static constexpr uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (bytes.size() < 8) return false;
  for (int i = 0; i < 8; ++i) {
    if (bytes[i] != kSignature[i]) return false;
  }
  return true;
}

void check_pixel_limit(const char* what, uint64_t width, uint64_t height,
                       const DecodeLimits& limits) {
  if (width == 0 || height == 0)
    fail(what, " image has a zero dimension (", width, "x", height, ")");
  const uint64_t pixels = width * height;  // both < 2^32: no overflow
  if (pixels > limits.max_pixels) {
    fail(what, " image is ", width, "x", height, " = ", pixels, " pixels, more than the limit of ",
         limits.max_pixels);
  }
}

int exif_orientation(std::span<const uint8_t> tiff) {
  if (tiff.size() < 8) return 1;
  bool little;
  if (tiff[0] == 'I' && tiff[1] == 'I' && tiff[2] == 42 && tiff[3] == 0) {
    little = true;
  } else if (tiff[0] == 'M' && tiff[1] == 'M' && tiff[2] == 0 && tiff[3] == 42) {
    little = false;
  } else {
    return 1;
  }
  auto u16 = [&](size_t at) -> uint32_t {
    return little ? (tiff[at] | (tiff[at + 1] << 8)) : ((tiff[at] << 8) | tiff[at + 1]);
  };
  auto u32 = [&](size_t at) -> uint64_t {
    return little ? (uint64_t{u16(at)} | (uint64_t{u16(at + 2)} << 16))
                  : ((uint64_t{u16(at)} << 16) | uint64_t{u16(at + 2)});
  };
  const uint64_t ifd = u32(4);
  if (ifd + 2 > tiff.size()) return 1;
  const uint32_t entries = u16(ifd);
  for (uint32_t i = 0; i < entries; ++i) {
    const uint64_t at = ifd + 2 + uint64_t{i} * 12;
    if (at + 12 > tiff.size()) return 1;
    if (u16(at) != 0x0112) continue;
    if (u16(at + 2) != 3 /* SHORT */ || u32(at + 4) != 1) return 1;
    const uint32_t value = u16(at + 8);
    return value >= 1 && value <= 8 ? static_cast<int>(value) : 1;
  }
  return 1;
}

}  // namespace detail

ImageInfo probe(std::span<const uint8_t> bytes) {
  if (detail::has_jpeg_magic(bytes)) return detail::probe_jpeg(bytes);
  if (detail::has_png_magic(bytes)) return detail::probe_png(bytes);
  if (bytes.empty()) fail("image is empty (0 bytes)");
  fail("image is neither JPEG nor PNG (unrecognised magic bytes; ", bytes.size(), " bytes)");
}

ImageInfo probe(std::span<const uint8_t> bytes, const DecodeLimits& limits) {
  if (bytes.size() > limits.max_bytes) {
    fail("image is ", bytes.size(), " bytes, more than the limit of ", limits.max_bytes);
  }
  const ImageInfo info = probe(bytes);
  detail::check_pixel_limit(format_name(info.format), info.width, info.height, limits);
  return info;
}

DecodedImage decode(std::span<const uint8_t> bytes, const DecodeLimits& limits) {
  // The header decides everything about size before a decoder allocates anything.
  const ImageInfo info = probe(bytes, limits);
  return info.format == ImageFormat::kJpeg ? detail::decode_jpeg(bytes, limits)
                                           : detail::decode_png(bytes, limits);
}

DecodedImage convert_to_rgb(const DecodedImage& image) {
  IRIS_CHECK(image.channels >= 1 && image.channels <= 4) << "channels " << image.channels;
  const size_t pixels = size_t{image.width} * image.height;
  IRIS_CHECK(image.pixels.size() == pixels * image.channels)
      << image.pixels.size() << " bytes for " << image.width << "x" << image.height << "x"
      << image.channels;
  if (image.channels == 3) return image;
  DecodedImage out;
  out.width = image.width;
  out.height = image.height;
  out.channels = 3;
  out.pixels.resize(pixels * 3);
  const uint8_t* src = image.pixels.data();
  uint8_t* dst = out.pixels.data();
  const int step = image.channels;
  if (step <= 2) {  // L / LA: gray replicated, alpha dropped
    for (size_t i = 0; i < pixels; ++i, src += step, dst += 3) dst[0] = dst[1] = dst[2] = src[0];
  } else {  // RGBA: alpha dropped
    for (size_t i = 0; i < pixels; ++i, src += 4, dst += 3) {
      dst[0] = src[0];
      dst[1] = src[1];
      dst[2] = src[2];
    }
  }
  return out;
}

DecodedImage decode_rgb(std::span<const uint8_t> bytes, const DecodeLimits& limits) {
  DecodedImage image = decode(bytes, limits);
  if (image.channels == 3) return image;
  return convert_to_rgb(image);
}

}  // namespace iris::image
