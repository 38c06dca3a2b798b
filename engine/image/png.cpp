// PNG: header probe (signature, IHDR with its CRC, then chunk headers up to the first IDAT)
// and decoding with libpng.
//
// libpng's error callback must not return; it longjmps back to read_png() through C frames
// only. As for JPEG, every object with a destructor lives in the caller (PngDecoder owns the
// libpng structs and frees them), and the message is turned into an iris::Error afterwards.
//
// The channel rules follow Pillow's PngImagePlugin so that convert_to_rgb() afterwards gives
// Pillow's convert("RGB") pixels: 16-bit samples keep their high byte, except 16-bit gray,
// which Pillow opens as 32-bit mode "I" and clamps to 0..255 when converting; palette
// indices are looked up in a 256-entry table that starts as a gray ramp (Pillow's default
// palette) and is overwritten by the PLTE entries, so out-of-range indices match as well.
#include <png.h>

#include <algorithm>
#include <array>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include "engine/core/check.h"
#include "engine/image/codec.h"

namespace iris::image::detail {
namespace {

constexpr uint32_t kPngMaxDimension = 0x7FFFFFFF;  // PNG spec: 2^31 - 1
constexpr size_t kAncillaryChunkLimit = size_t{8} << 20;

uint32_t crc32_of(const uint8_t* data, size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

bool valid_depth(int color_type, int depth) {
  switch (color_type) {
    case 0:
      return depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
    case 3:
      return depth == 1 || depth == 2 || depth == 4 || depth == 8;
    case 2:
    case 4:
    case 6:
      return depth == 8 || depth == 16;
    default:
      return false;
  }
}

struct PngDecoder {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  bool truncated = false;
  char message[256] = {};

  ~PngDecoder() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

[[noreturn]] void on_png_error(png_structp png, png_const_charp message) {
  auto* d = static_cast<PngDecoder*>(png_get_error_ptr(png));
  std::snprintf(d->message, sizeof(d->message), "%s", message ? message : "unknown error");
  png_longjmp(png, 1);
}

void on_png_warning(png_structp, png_const_charp) {}

void on_png_read(png_structp png, png_bytep out, size_t length) {
  auto* d = static_cast<PngDecoder*>(png_get_io_ptr(png));
  if (length > d->size - d->pos) {
    d->truncated = true;
    png_error(png, "data ends before the image does");
  }
  std::memcpy(out, d->data + d->pos, length);
  d->pos += length;
}

// How the decoded rows are laid out before our own post-processing.
enum class RowKind {
  kDirect,   // libpng's output is the final 8-bit layout
  kPalette,  // one byte per pixel: palette index
  kGray16,   // two bytes per pixel: big-endian 16-bit gray
};

struct Layout {
  RowKind kind = RowKind::kDirect;
  int channels = 0;                        // channels of the final image
  std::array<uint8_t, 256 * 4> palette{};  // RGBA per index, for kPalette
};

bool read_png(PngDecoder& d, const DecodeLimits& limits, std::vector<uint8_t>& raw,
              std::vector<png_bytep>& rows, Layout& layout, uint32_t& width, uint32_t& height) {
  if (setjmp(png_jmpbuf(d.png))) return false;

  png_set_read_fn(d.png, &d, on_png_read);
  // Sizes are governed by DecodeLimits::max_pixels, not libpng's 1M-pixel row default.
  png_set_user_limits(d.png, kPngMaxDimension, kPngMaxDimension);
  png_set_chunk_malloc_max(d.png, kAncillaryChunkLimit);
  png_read_info(d.png, d.info);

  png_uint_32 w = 0, h = 0;
  int depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(d.png, d.info, &w, &h, &depth, &color_type, &interlace, nullptr, nullptr);
  check_pixel_limit("png", w, h, limits);
  width = w;
  height = h;
  const bool has_trns = png_get_valid(d.png, d.info, PNG_INFO_tRNS) != 0;

  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    layout.kind = RowKind::kPalette;
    for (int i = 0; i < 256; ++i) {  // Pillow's default palette: a gray ramp, opaque
      layout.palette[i * 4 + 0] = layout.palette[i * 4 + 1] = layout.palette[i * 4 + 2] =
          static_cast<uint8_t>(i);
      layout.palette[i * 4 + 3] = 255;
    }
    png_colorp plte = nullptr;
    int plte_count = 0;
    if (png_get_PLTE(d.png, d.info, &plte, &plte_count) && plte) {
      for (int i = 0; i < plte_count && i < 256; ++i) {
        layout.palette[i * 4 + 0] = plte[i].red;
        layout.palette[i * 4 + 1] = plte[i].green;
        layout.palette[i * 4 + 2] = plte[i].blue;
      }
    }
    layout.channels = 3;
    if (has_trns) {
      png_bytep alpha = nullptr;
      int alpha_count = 0;
      png_get_tRNS(d.png, d.info, &alpha, &alpha_count, nullptr);
      for (int i = 0; alpha && i < alpha_count && i < 256; ++i)
        layout.palette[i * 4 + 3] = alpha[i];
      layout.channels = 4;
    }
    if (depth < 8) png_set_packing(d.png);  // one index per byte, unscaled
  } else if (color_type == PNG_COLOR_TYPE_GRAY && depth == 16) {
    layout.kind = RowKind::kGray16;  // tRNS ignored: Pillow's mode "I" keeps no alpha
    layout.channels = 1;
  } else {
    layout.kind = RowKind::kDirect;
    if (color_type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(d.png);
    if (has_trns) png_set_tRNS_to_alpha(d.png);
    if (depth == 16) png_set_strip_16(d.png);  // keeps the high byte, as Pillow does
  }
  if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(d.png);
  png_read_update_info(d.png, d.info);

  const size_t row_bytes = png_get_rowbytes(d.png, d.info);
  const int out_channels = png_get_channels(d.png, d.info);
  if (layout.kind == RowKind::kDirect) {
    layout.channels = out_channels;
    IRIS_CHECK(row_bytes == size_t{w} * out_channels) << "libpng row of " << row_bytes;
  } else if (layout.kind == RowKind::kPalette) {
    IRIS_CHECK(row_bytes == w && out_channels == 1) << "libpng palette row of " << row_bytes;
  } else {
    IRIS_CHECK(row_bytes == size_t{w} * 2) << "libpng gray16 row of " << row_bytes;
  }
  raw.resize(row_bytes * h);
  rows.resize(h);
  for (uint32_t y = 0; y < h; ++y) rows[y] = raw.data() + y * row_bytes;
  png_read_image(d.png, rows.data());
  // Chunks after the image data (and IEND) are not read: like Pillow, a file whose pixel
  // data is complete decodes even when its tail is missing.
  return true;
}

}  // namespace

ImageInfo probe_png(std::span<const uint8_t> bytes) {
  ImageInfo info;
  info.format = ImageFormat::kPng;
  const size_t n = bytes.size();
  const uint8_t* b = bytes.data();
  if (n < 8 + 8 + 13 + 4) fail("truncated PNG header: ", n, " bytes, IHDR needs 33");
  if (read_be32(b + 8) != 13 || std::memcmp(b + 12, "IHDR", 4) != 0) {
    fail("invalid PNG: the first chunk is not a 13-byte IHDR");
  }
  const uint8_t* ihdr = b + 16;
  if (crc32_of(b + 12, 4 + 13) != read_be32(b + 29)) fail("invalid PNG: IHDR CRC mismatch");
  info.width = read_be32(ihdr);
  info.height = read_be32(ihdr + 4);
  if (info.width == 0 || info.height == 0) {
    fail("invalid PNG: zero dimension in IHDR (", info.width, "x", info.height, ")");
  }
  if (info.width > kPngMaxDimension || info.height > kPngMaxDimension) {
    fail("invalid PNG: dimension above 2^31-1 in IHDR (", info.width, "x", info.height, ")");
  }
  const int depth = ihdr[8], color_type = ihdr[9];
  if (!valid_depth(color_type, depth)) {
    fail("invalid PNG: bit depth ", depth, " with color type ", color_type);
  }
  if (ihdr[10] != 0 || ihdr[11] != 0 || ihdr[12] > 1) {
    fail("invalid PNG: unknown compression/filter/interlace method in IHDR");
  }
  info.bit_depth = depth;
  info.progressive = ihdr[12] == 1;
  info.is_palette = color_type == 3;
  bool has_trns = false;
  // Chunk headers only (no CRC checks: decode() verifies those), up to the image data.
  for (size_t pos = 33; pos + 8 <= n;) {
    const uint32_t length = read_be32(b + pos);
    const uint8_t* type = b + pos + 4;
    if (length > kPngMaxDimension) fail("invalid PNG: chunk length ", length);
    if (std::memcmp(type, "IDAT", 4) == 0 || std::memcmp(type, "IEND", 4) == 0) break;
    if (std::memcmp(type, "tRNS", 4) == 0) has_trns = true;
    if (std::memcmp(type, "eXIf", 4) == 0 && pos + 8 + length <= n) {
      info.exif_orientation = exif_orientation({b + pos + 8, length});
    }
    pos += size_t{12} + length;
  }
  switch (color_type) {
    case 0:  // gray; a tRNS key adds alpha except at 16 bits (Pillow's mode "I")
      info.channels = has_trns && depth < 16 ? 2 : 1;
      break;
    case 2:
      info.channels = has_trns ? 4 : 3;
      break;
    case 3:
      info.channels = has_trns ? 4 : 3;
      break;
    case 4:
      info.channels = 2;
      break;
    default:
      info.channels = 4;
      break;
  }
  info.has_alpha = info.channels == 2 || info.channels == 4;
  return info;
}

DecodedImage decode_png(std::span<const uint8_t> bytes, const DecodeLimits& limits) {
  PngDecoder decoder;
  decoder.data = bytes.data();
  decoder.size = bytes.size();
  decoder.png =
      png_create_read_struct(PNG_LIBPNG_VER_STRING, &decoder, on_png_error, on_png_warning);
  if (!decoder.png) fail("png: out of memory creating the decoder");
  decoder.info = png_create_info_struct(decoder.png);
  if (!decoder.info) fail("png: out of memory creating the decoder");

  std::vector<uint8_t> raw;
  std::vector<png_bytep> rows;
  Layout layout;
  uint32_t width = 0, height = 0;
  if (!read_png(decoder, limits, raw, rows, layout, width, height)) {
    if (decoder.truncated) fail("truncated PNG: data ends before the image does");
    fail("invalid PNG: ", decoder.message);
  }
  rows.clear();

  DecodedImage out;
  out.width = width;
  out.height = height;
  out.channels = layout.channels;
  const size_t pixels = size_t{width} * height;
  switch (layout.kind) {
    case RowKind::kDirect:
      out.pixels = std::move(raw);
      break;
    case RowKind::kPalette: {
      out.pixels.resize(pixels * layout.channels);
      uint8_t* dst = out.pixels.data();
      const int step = layout.channels;
      for (size_t i = 0; i < pixels; ++i, dst += step) {
        std::memcpy(dst, &layout.palette[size_t{raw[i]} * 4], step);
      }
      break;
    }
    case RowKind::kGray16: {
      out.pixels.resize(pixels);
      for (size_t i = 0; i < pixels; ++i) {
        const unsigned v = (unsigned{raw[2 * i]} << 8) | raw[2 * i + 1];
        out.pixels[i] = static_cast<uint8_t>(std::min(v, 255u));
      }
      break;
    }
  }
  return out;
}

}  // namespace iris::image::detail
