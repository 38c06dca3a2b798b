// Image decoding for multimodal requests: read an image's header without decoding it
// (probe), decode JPEG/PNG bytes into 8-bit pixels under size limits (decode), and convert
// them to RGB the way the Hugging Face image processors do (convert_to_rgb).
//
// The reference is what `transformers` feeds a vision tower: the image opened with Pillow,
// then `image.convert("RGB")` (image_transforms.convert_to_rgb). Every mode conversion here
// reproduces Pillow's pixel values exactly; engine/image/README.md lists each rule and the
// few places where Iris deliberately differs (EXIF orientation, CRC checks, scan limits).
//
// Untrusted input: every failure (truncated or corrupt data, wrong magic, zero or oversized
// dimensions) is an iris::Error with a message naming the problem. Size limits are checked
// on the header before any pixel buffer is allocated, so a decompression bomb costs a few
// hundred bytes of parsing, never its claimed size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace iris::image {

enum class ImageFormat { kJpeg, kPng };
const char* format_name(ImageFormat format);  // "jpeg" / "png"

// What the file header says. Read by probe() without decoding pixel data.
struct ImageInfo {
  ImageFormat format = ImageFormat::kJpeg;
  uint32_t width = 0;
  uint32_t height = 0;
  // Samples per pixel as stored: 1 gray, 2 gray+alpha, 3 color, 4 RGBA (PNG) or CMYK/YCCK
  // (JPEG). A palette PNG reports 3, or 4 when it has a tRNS chunk.
  int channels = 0;
  int bit_depth = 8;         // bits per stored sample (PNG 1..16; JPEG data precision)
  bool has_alpha = false;    // alpha channel or tRNS transparency
  bool is_palette = false;   // PNG color type 3
  bool progressive = false;  // progressive JPEG / Adam7-interlaced PNG
  // EXIF Orientation tag (1..8; 1 when absent). Reported only: like the transformers image
  // processors, decode() never rotates or flips (see README.md).
  int exif_orientation = 1;
};

// Reads format and dimensions from the header. JPEG: walks the marker segments up to the
// first SOFn. PNG: checks the signature and the IHDR chunk (including its CRC), then scans
// chunk headers up to the first IDAT for tRNS and eXIf. Throws iris::Error for anything
// that is not a well-formed JPEG/PNG header or declares a zero dimension.
ImageInfo probe(std::span<const uint8_t> bytes);

struct DecodeLimits;
// probe() that also refuses what decode() would refuse for size: more than
// limits.max_bytes of data or more than limits.max_pixels pixels. Lets a request be turned
// away on its header alone.
ImageInfo probe(std::span<const uint8_t> bytes, const DecodeLimits& limits);

struct DecodeLimits {
  // Largest width * height accepted; checked on the header, before decoding. The default
  // is Pillow's Image.MAX_IMAGE_PIXELS (beyond which Pillow warns; at twice it, refuses).
  uint64_t max_pixels = 89'478'485;
  // Largest encoded size accepted.
  size_t max_bytes = size_t{64} << 20;
  // Progressive JPEGs may hold any number of scans, each a full pass over the coefficient
  // buffers; a few kilobytes of tiny scans can cost minutes. libjpeg-turbo recommends a
  // limit for untrusted input; real encoders emit ≤ ~20 scans.
  int max_jpeg_scans = 500;
};

// 8-bit interleaved pixels, row-major: pixels[(y * width + x) * channels + c].
struct DecodedImage {
  uint32_t width = 0;
  uint32_t height = 0;
  int channels = 0;  // 1 gray (L), 2 gray+alpha (LA), 3 RGB, 4 RGBA
  std::vector<uint8_t> pixels;
};

// Decodes a JPEG or PNG (detected from the magic bytes) into the channel layout the file
// carries, in 8 bits, as Pillow opens it:
//  - JPEG gray → 1 channel; YCbCr/RGB → 3; CMYK/YCCK → converted to RGB with Pillow's
//    formula (Pillow always treats JPEG CMYK as Adobe-inverted).
//  - PNG gray ≤ 8 bit → 1 (1/2/4-bit scaled to 0..255); gray 16 bit → 1, values clamped to
//    255 (Pillow opens it as mode "I" and its RGB conversion clamps); gray+alpha → 2 (16-bit
//    samples keep their high byte); RGB → 3; RGBA → 4; palette → 3, or 4 with tRNS; a tRNS
//    color key on gray/RGB becomes an alpha channel. Interlaced images are supported.
// Throws iris::Error when the input is malformed, truncated, larger than `limits`, or of an
// unsupported kind (12-bit JPEG, 2-component JPEG, neither JPEG nor PNG).
DecodedImage decode(std::span<const uint8_t> bytes, const DecodeLimits& limits = {});

// Pillow's `image.convert("RGB")`, which transformers' convert_to_rgb calls for every
// non-RGB image: gray is replicated, alpha is dropped (no compositing onto a background).
// An RGB image is returned as a copy.
DecodedImage convert_to_rgb(const DecodedImage& image);

// decode() then convert_to_rgb().
DecodedImage decode_rgb(std::span<const uint8_t> bytes, const DecodeLimits& limits = {});

}  // namespace iris::image
