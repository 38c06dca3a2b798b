// JPEG: header probe (a marker walk of our own, no libjpeg) and decoding with libjpeg-turbo.
//
// libjpeg reports fatal errors through error_exit, which must not return. It is called from
// C frames, so it longjmps back to read_jpeg(); no C++ object with a destructor lives between
// that setjmp and any libjpeg call, and all state that outlives the jump sits in JpegDecoder,
// which the caller owns and which destroys the libjpeg object in its destructor. The message
// becomes an iris::Error once we are back in ordinary C++.
//
// Decoding settings are libjpeg's defaults (accurate integer IDCT, fancy upsampling), which
// are also what Pillow uses, so the pixels match Pillow's bit for bit with the same library.

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

// clang-format off: jpeglib.h needs <cstdio> (FILE, size_t) included before it.
#include <jerror.h>
#include <jpeglib.h>
// clang-format on

#include "engine/core/check.h"
#include "engine/image/codec.h"

namespace iris::image::detail {
namespace {

bool is_sof(uint8_t marker) {
  // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
  return marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
}

struct ErrorManager {
  jpeg_error_mgr pub;  // first: libjpeg sees a jpeg_error_mgr*
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 64];
  bool truncated;
  int max_scans;
};

[[noreturn]] void on_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

// Warnings (corrupt-but-recoverable entropy data, extraneous bytes) are neither printed nor
// fatal: Pillow decodes such files too. Running out of data is fatal (see fill_input).
void on_output_message(j_common_ptr) {}

void source_init(j_decompress_ptr) {}
void source_term(j_decompress_ptr) {}

// The whole file is in memory, so a request for more input means the data is truncated.
boolean source_fill_input(j_decompress_ptr cinfo) {
  reinterpret_cast<ErrorManager*>(cinfo->err)->truncated = true;
  ERREXIT(cinfo, JERR_INPUT_EOF);
  return FALSE;
}

void source_skip_input(j_decompress_ptr cinfo, long num_bytes) {
  if (num_bytes <= 0) return;
  jpeg_source_mgr* src = cinfo->src;
  if (static_cast<unsigned long>(num_bytes) > src->bytes_in_buffer) {
    reinterpret_cast<ErrorManager*>(cinfo->err)->truncated = true;
    ERREXIT(cinfo, JERR_INPUT_EOF);
  }
  src->next_input_byte += num_bytes;
  src->bytes_in_buffer -= static_cast<size_t>(num_bytes);
}

void on_progress(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  const int scans = reinterpret_cast<j_decompress_ptr>(cinfo)->input_scan_number;
  if (scans > err->max_scans) {
    std::snprintf(err->message, sizeof(err->message),
                  "progressive JPEG has more than %d scans (limit)", err->max_scans);
    std::longjmp(err->jump, 1);
  }
}

struct JpegDecoder {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  jpeg_source_mgr source;
  jpeg_progress_mgr progress;
  bool created = false;

  JpegDecoder() {
    std::memset(&cinfo, 0, sizeof(cinfo));
    std::memset(&err, 0, sizeof(err));
    std::memset(&source, 0, sizeof(source));
    std::memset(&progress, 0, sizeof(progress));
  }
  ~JpegDecoder() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
  JpegDecoder(const JpegDecoder&) = delete;
  JpegDecoder& operator=(const JpegDecoder&) = delete;
};

// Decodes into `raw` (height * width * components bytes). Returns false with
// d.err.message set when libjpeg reported an error; throws iris::Error for limits.
bool read_jpeg(JpegDecoder& d, std::span<const uint8_t> bytes, const DecodeLimits& limits,
               std::vector<uint8_t>& raw, uint32_t& width, uint32_t& height, int& components) {
  jpeg_decompress_struct* cinfo = &d.cinfo;
  cinfo->err = jpeg_std_error(&d.err.pub);
  d.err.pub.error_exit = on_error_exit;
  d.err.pub.output_message = on_output_message;
  d.err.max_scans = limits.max_jpeg_scans;
  if (setjmp(d.err.jump)) return false;

  jpeg_create_decompress(cinfo);
  d.created = true;
  d.source.init_source = source_init;
  d.source.fill_input_buffer = source_fill_input;
  d.source.skip_input_data = source_skip_input;
  d.source.resync_to_restart = jpeg_resync_to_restart;
  d.source.term_source = source_term;
  d.source.next_input_byte = bytes.data();
  d.source.bytes_in_buffer = bytes.size();
  cinfo->src = &d.source;
  d.progress.progress_monitor = on_progress;
  cinfo->progress = &d.progress;

  jpeg_read_header(cinfo, TRUE);
  check_pixel_limit("jpeg", cinfo->image_width, cinfo->image_height, limits);

  switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
      cinfo->out_color_space = JCS_GRAYSCALE;
      break;
    case JCS_YCbCr:
    case JCS_RGB:
      cinfo->out_color_space = JCS_RGB;
      break;
    case JCS_CMYK:
    case JCS_YCCK:
      cinfo->out_color_space = JCS_CMYK;
      break;
    default:
      fail("unsupported JPEG color space (", cinfo->num_components, " components)");
  }
  cinfo->dct_method = JDCT_ISLOW;
  cinfo->do_fancy_upsampling = TRUE;
  jpeg_start_decompress(cinfo);

  width = cinfo->output_width;
  height = cinfo->output_height;
  components = cinfo->output_components;
  const size_t stride = size_t{width} * static_cast<size_t>(components);
  raw.resize(stride * height);
  while (cinfo->output_scanline < cinfo->output_height) {
    JSAMPROW rows[16];
    const JDIMENSION first = cinfo->output_scanline;
    const JDIMENSION count = std::min<JDIMENSION>(16, cinfo->output_height - first);
    for (JDIMENSION i = 0; i < count; ++i) rows[i] = raw.data() + (first + i) * stride;
    jpeg_read_scanlines(cinfo, rows, count);
  }
  jpeg_finish_decompress(cinfo);
  return true;
}

// Pillow opens every 4-component JPEG as "CMYK;I" (Adobe's inverted convention, whatever
// the APP14 marker says) and converts CMYK to RGB as R = (255 - K) * (1 - C/255), rounded
// with its MULDIV255 integer trick. Reproduced exactly.
void cmyk_inverted_to_rgb(const uint8_t* src, uint8_t* dst, size_t pixels) {
  auto muldiv255 = [](int a, int b) {
    const int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
  };
  for (size_t i = 0; i < pixels; ++i, src += 4, dst += 3) {
    const int c = 255 - src[0], m = 255 - src[1], y = 255 - src[2], k = 255 - src[3];
    const int nk = 255 - k;
    dst[0] = static_cast<uint8_t>(std::clamp(nk - muldiv255(c, nk), 0, 255));
    dst[1] = static_cast<uint8_t>(std::clamp(nk - muldiv255(m, nk), 0, 255));
    dst[2] = static_cast<uint8_t>(std::clamp(nk - muldiv255(y, nk), 0, 255));
  }
}

}  // namespace

ImageInfo probe_jpeg(std::span<const uint8_t> bytes) {
  ImageInfo info;
  info.format = ImageFormat::kJpeg;
  const size_t n = bytes.size();
  const uint8_t* b = bytes.data();
  size_t pos = 2;  // after SOI
  for (;;) {
    // Like libjpeg's next_marker(): skip stray bytes, then 0xFF fill bytes.
    while (pos < n && b[pos] != 0xFF) ++pos;
    while (pos < n && b[pos] == 0xFF) ++pos;
    if (pos >= n) fail("truncated JPEG header: data ends before the frame header (SOF)");
    const uint8_t marker = b[pos++];
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;
    if (marker == 0xD8) fail("invalid JPEG: second SOI marker before the frame header");
    if (marker == 0xD9) fail("invalid JPEG: end of image (EOI) before any frame header");
    if (marker == 0xDA) fail("invalid JPEG: scan data (SOS) before the frame header");
    if (pos + 2 > n) fail("truncated JPEG header: segment length cut off at offset ", pos);
    const size_t length = read_be16(b + pos);
    if (length < 2) fail("invalid JPEG: segment length ", length, " at offset ", pos);
    if (pos + length > n) {
      fail("truncated JPEG header: segment of marker ", int{marker}, " (", length,
           " bytes) runs past the end of the data");
    }
    const uint8_t* payload = b + pos + 2;
    const size_t payload_len = length - 2;
    if (marker == 0xE1 && payload_len >= 6 && std::memcmp(payload, "Exif\0\0", 6) == 0) {
      if (info.exif_orientation == 1) {
        info.exif_orientation = exif_orientation({payload + 6, payload_len - 6});
      }
    } else if (is_sof(marker)) {
      if (payload_len < 6) fail("invalid JPEG: frame header of ", length, " bytes");
      const int components = payload[5];
      if (payload_len != 6 + size_t{3} * components) {
        fail("invalid JPEG: frame header length ", length, " does not match ", components,
             " components");
      }
      info.bit_depth = payload[0];
      info.height = read_be16(payload + 1);
      info.width = read_be16(payload + 3);
      if (info.width == 0 || info.height == 0) {
        fail("invalid JPEG: zero dimension in the frame header (", info.width, "x", info.height,
             ")");
      }
      if (components != 1 && components != 3 && components != 4) {
        fail("unsupported JPEG with ", components, " color components");
      }
      // decode() converts CMYK/YCCK to RGB, so a 4-component JPEG yields 3 channels.
      info.channels = components == 1 ? 1 : 3;
      info.progressive = marker == 0xC2 || marker == 0xC6 || marker == 0xCA || marker == 0xCE;
      return info;
    }
    pos += length;
  }
}

DecodedImage decode_jpeg(std::span<const uint8_t> bytes, const DecodeLimits& limits) {
  JpegDecoder decoder;
  std::vector<uint8_t> raw;
  uint32_t width = 0, height = 0;
  int components = 0;
  if (!read_jpeg(decoder, bytes, limits, raw, width, height, components)) {
    if (decoder.err.truncated) fail("truncated JPEG: data ends before the image does");
    fail("invalid JPEG: ", decoder.err.message);
  }
  DecodedImage out;
  out.width = width;
  out.height = height;
  if (components == 4) {
    out.channels = 3;
    out.pixels.resize(size_t{width} * height * 3);
    cmyk_inverted_to_rgb(raw.data(), out.pixels.data(), size_t{width} * height);
  } else {
    IRIS_CHECK(components == 1 || components == 3) << "libjpeg gave " << components;
    out.channels = components;
    out.pixels = std::move(raw);
  }
  return out;
}

}  // namespace iris::image::detail
