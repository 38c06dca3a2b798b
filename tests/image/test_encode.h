// Test-only JPEG/PNG encoders (libjpeg-turbo, libpng) and a synthetic picture, so the C++
// tests can build valid inputs of every kind without the Python reference: fuzz seeds,
// truncation points, limit checks. Header-only; link JPEG::JPEG and PNG::PNG.
#pragma once

#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

// clang-format off: jpeglib.h needs <cstdio> (FILE, size_t) included before it.
#include <jpeglib.h>
// clang-format on

namespace iris::image::testing {

using Bytes = std::vector<uint8_t>;

// Gradients, a checkerboard and a diagonal: every channel varies in both directions.
inline std::vector<uint8_t> picture(int width, int height, int channels, int seed = 0) {
  std::vector<uint8_t> px(static_cast<size_t>(width) * height * channels);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < channels; ++c) {
        int v = 0;
        switch ((c + seed) % 4) {
          case 0:
            v = x * 255 / std::max(1, width - 1);
            break;
          case 1:
            v = y * 255 / std::max(1, height - 1);
            break;
          case 2:
            v = ((x / 5 + y / 3) % 2) * 200 + 20;
            break;
          default:
            v = (x * 7 + y * 13 + seed * 31) & 0xFF;
            break;
        }
        px[(static_cast<size_t>(y) * width + x) * channels + c] = static_cast<uint8_t>(v);
      }
    }
  }
  return px;
}

struct JpegOptions {
  int quality = 85;
  bool progressive = false;
  int restart_interval = 0;            // in MCUs; 0 = none
  J_COLOR_SPACE stored = JCS_UNKNOWN;  // JCS_YCCK to store CMYK input as YCCK
  bool arithmetic = false;
};

namespace detail {
struct EncodeError {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
};
[[noreturn]] inline void encode_error_exit(j_common_ptr cinfo) {
  std::longjmp(reinterpret_cast<EncodeError*>(cinfo->err)->jump, 1);
}
}  // namespace detail

// `pixels` are gray (1), RGB (3) or CMYK (4) samples.
inline Bytes encode_jpeg(const std::vector<uint8_t>& pixels, int width, int height, int channels,
                         const JpegOptions& options = {}) {
  jpeg_compress_struct cinfo;
  detail::EncodeError err;
  std::memset(&cinfo, 0, sizeof(cinfo));
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = detail::encode_error_exit;
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  if (setjmp(err.jump)) {
    jpeg_destroy_compress(&cinfo);
    std::free(buffer);
    throw std::runtime_error("test JPEG encoder failed");
  }
  jpeg_create_compress(&cinfo);
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = channels;
  cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : channels == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&cinfo);
  if (options.stored != JCS_UNKNOWN) jpeg_set_colorspace(&cinfo, options.stored);
  jpeg_set_quality(&cinfo, options.quality, TRUE);
  if (options.progressive) jpeg_simple_progression(&cinfo);
  cinfo.restart_interval = static_cast<unsigned>(options.restart_interval);
  cinfo.arith_code = options.arithmetic ? TRUE : FALSE;
  jpeg_start_compress(&cinfo, TRUE);
  const size_t stride = static_cast<size_t>(width) * channels;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(pixels.data()) + cinfo.next_scanline * stride;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  Bytes out(buffer, buffer + size);
  std::free(buffer);
  return out;
}

struct PngOptions {
  int bit_depth = 8;
  bool interlace = false;
  std::vector<uint8_t> palette;  // RGB triples, for PNG_COLOR_TYPE_PALETTE
  std::vector<uint8_t> trns;     // palette alphas, or a 16-bit gray key / RGB key (2 / 6 bytes)
};

namespace detail {
inline void png_write_to_vector(png_structp png, png_bytep data, size_t length) {
  auto* out = static_cast<Bytes*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + length);
}
inline void png_flush_noop(png_structp) {}
}  // namespace detail

// `samples`: one value per sample at bit_depth (16-bit values as big-endian pairs are built
// here from uint16 inputs), row-major, packed by libpng.
inline Bytes encode_png(const std::vector<uint16_t>& samples, int width, int height, int color_type,
                        const PngOptions& options = {}) {
  Bytes out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  std::vector<std::vector<uint8_t>> rows;
  std::vector<png_bytep> row_ptrs;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error("test PNG encoder failed");
  }
  png_set_write_fn(png, &out, detail::png_write_to_vector, detail::png_flush_noop);
  const int depth = options.bit_depth;
  png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), depth,
               color_type, options.interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  std::vector<png_color> plte;
  for (size_t i = 0; i + 2 < options.palette.size(); i += 3) {
    plte.push_back({options.palette[i], options.palette[i + 1], options.palette[i + 2]});
  }
  if (!plte.empty()) png_set_PLTE(png, info, plte.data(), static_cast<int>(plte.size()));
  png_color_16 key{};
  if (!options.trns.empty()) {
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
      png_set_tRNS(png, info, options.trns.data(), static_cast<int>(options.trns.size()), nullptr);
    } else {
      auto be16 = [&](size_t i) {
        return static_cast<png_uint_16>((options.trns[i] << 8) | options.trns[i + 1]);
      };
      if (color_type == PNG_COLOR_TYPE_GRAY) {
        key.gray = be16(0);
      } else {
        key.red = be16(0);
        key.green = be16(2);
        key.blue = be16(4);
      }
      png_set_tRNS(png, info, nullptr, 0, &key);
    }
  }
  png_write_info(png, info);
  if (depth < 8) png_set_packing(png);
  const int channels = color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_PALETTE ? 1
                       : color_type == PNG_COLOR_TYPE_GRAY_ALPHA                                 ? 2
                       : color_type == PNG_COLOR_TYPE_RGB                                        ? 3
                                                          : 4;
  const size_t per_row = static_cast<size_t>(width) * channels;
  rows.resize(height);
  for (int y = 0; y < height; ++y) {
    auto& row = rows[y];
    for (size_t i = 0; i < per_row; ++i) {
      const uint16_t v = samples[y * per_row + i];
      if (depth == 16) {
        row.push_back(static_cast<uint8_t>(v >> 8));
        row.push_back(static_cast<uint8_t>(v & 0xFF));
      } else {
        row.push_back(static_cast<uint8_t>(v));
      }
    }
    row_ptrs.push_back(row.data());
  }
  png_write_image(png, row_ptrs.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

inline std::vector<uint16_t> widen(const std::vector<uint8_t>& v, int shift_right = 0) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<uint16_t>(v[i] >> shift_right);
  return out;
}

// CRC-32 as PNG uses it, for building chunks by hand.
inline uint32_t png_crc(const uint8_t* data, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    c ^= data[i];
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

inline void put_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// Rewrites the CRC of the chunk starting at `offset` (its length field) after an edit.
inline void fix_png_crc(Bytes& png, size_t offset) {
  const uint32_t length = (uint32_t{png[offset]} << 24) | (uint32_t{png[offset + 1]} << 16) |
                          (uint32_t{png[offset + 2]} << 8) | png[offset + 3];
  if (offset + 12 + size_t{length} > png.size()) return;
  put_be32(&png[offset + 8 + length], png_crc(&png[offset + 4], 4 + size_t{length}));
}

}  // namespace iris::image::testing
