// Image pipeline tests.
//
// [reference] (label `image`): every image of make_reference.py decoded, converted and
// preprocessed by engine/image and compared with Pillow + the numpy re-implementation of
// the transformers processors: decoded pixels byte for byte, pixel_values within 1e-5,
// Pillow's resize for every filter byte for byte, probe fields, content hashes.
// The rest (label `image_sanitize`, also run under ASan/UBSan): malformed and hostile
// inputs, limits (checked without large allocations), config parsing, crop/pad/patchify.
#include <zlib.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <new>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/core/check.h"
#include "engine/image/content_hash.h"
#include "engine/image/decode.h"
#include "engine/image/preprocess.h"
#include "engine/image/resample.h"
#include "tests/image/test_encode.h"

// --- allocation tracking: the largest single operator-new request while enabled --------
// (The replacement pairs malloc/free itself; GCC cannot see that through inlining.)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
namespace {
std::atomic<bool> g_track_allocations{false};
std::atomic<size_t> g_largest_allocation{0};
}  // namespace

// Every non-aligned form is replaced so that each new/delete pair is malloc/free (mixing
// ours with the sanitizer's own replacements would be reported as a mismatch).
namespace {
void* tracked_malloc(size_t n) noexcept {
  if (g_track_allocations.load(std::memory_order_relaxed)) {
    size_t prev = g_largest_allocation.load(std::memory_order_relaxed);
    while (n > prev && !g_largest_allocation.compare_exchange_weak(prev, n)) {
    }
  }
  return std::malloc(n ? n : 1);
}
}  // namespace

void* operator new(size_t n) {
  if (void* p = tracked_malloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) {
  if (void* p = tracked_malloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  return tracked_malloc(n);
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  return tracked_malloc(n);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}

namespace {

namespace fs = std::filesystem;
using namespace iris::image;
using namespace iris::image::testing;
using nlohmann::json;

// Runs `fn` and returns the largest operator-new request it made.
template <typename Fn>
size_t largest_allocation_during(Fn&& fn) {
  g_largest_allocation = 0;
  g_track_allocations = true;
  try {
    fn();
  } catch (...) {
    g_track_allocations = false;
    throw;
  }
  g_track_allocations = false;
  return g_largest_allocation;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const iris::Error& e) {
    return e.what();
  }
  return "<no iris::Error thrown>";
}

// ------------------------------------------------------------------------------------------
// Reference data

std::vector<uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<uint8_t> read_z(const fs::path& path, size_t expected) {
  const std::vector<uint8_t> packed = read_file(path);
  std::vector<uint8_t> out(expected);
  uLongf size = static_cast<uLongf>(expected);
  if (uncompress(out.data(), &size, packed.data(), static_cast<uLong>(packed.size())) != Z_OK ||
      size != expected) {
    throw std::runtime_error("bad compressed reference " + path.string());
  }
  return out;
}

struct Reference {
  fs::path dir;
  json manifest;
};

const Reference& reference() {
  static const Reference ref = [] {
    Reference r;
    r.dir = IRIS_IMAGE_REFERENCE_DIR;
    const fs::path manifest = r.dir / "manifest.json";
    if (!fs::exists(manifest)) {
      throw std::runtime_error(
          "no reference data at " + manifest.string() +
          ": run the image_reference_setup test first (needs /usr/bin/python3 with python3-pil "
          "and python3-numpy)");
    }
    std::ifstream in(manifest);
    r.manifest = json::parse(in);
    return r;
  }();
  return ref;
}

std::vector<uint8_t> image_bytes(const json& image) {
  return read_file(reference().dir / image["file"].get<std::string>());
}

size_t count_differences(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return std::max(a.size(), b.size());
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

TEST_CASE("reference: probe reads format, size, channels without decoding", "[reference]") {
  for (const json& image : reference().manifest["images"]) {
    INFO(image["name"].get<std::string>());
    const auto bytes = image_bytes(image);
    const ImageInfo info = probe(bytes);
    CHECK(format_name(info.format) == image["format"].get<std::string>());
    CHECK(info.width == image["width"].get<uint32_t>());
    CHECK(info.height == image["height"].get<uint32_t>());
    CHECK(info.channels == image["channels"].get<int>());
    CHECK(info.progressive == image["progressive"].get<bool>());
    CHECK(info.exif_orientation == image["exif_orientation"].get<int>());
  }
}

TEST_CASE("reference: decode and convert_to_rgb match Pillow byte for byte", "[reference]") {
  size_t images = 0, bytes_compared = 0, differing = 0;
  for (const json& image : reference().manifest["images"]) {
    const std::string name = image["name"];
    INFO(name);
    const auto bytes = image_bytes(image);
    const DecodedImage decoded = decode(bytes);
    const uint32_t w = image["width"], h = image["height"];
    REQUIRE(decoded.width == w);
    REQUIRE(decoded.height == h);
    REQUIRE(decoded.channels == image["channels"].get<int>());
    if (!image["native"].is_null()) {  // before RGB conversion (alpha, gray)
      const auto native = read_z(reference().dir / image["native"].get<std::string>(),
                                 size_t{w} * h * decoded.channels);
      CHECK(count_differences(decoded.pixels, native) == 0);
    }
    const DecodedImage rgb = convert_to_rgb(decoded);
    const auto expected =
        read_z(reference().dir / image["rgb"].get<std::string>(), size_t{w} * h * 3);
    const size_t diffs = count_differences(rgb.pixels, expected);
    CHECK(diffs == 0);
    CHECK(decode_rgb(bytes).pixels == rgb.pixels);
    ++images;
    differing += diffs;
    bytes_compared += expected.size();
  }
  std::printf("decode: %zu images, %zu RGB bytes compared with Pillow, %zu differ\n", images,
              bytes_compared, differing);
}

TEST_CASE("reference: content_hash is SHA-256 of the documented serialisation", "[reference]") {
  for (const json& image : reference().manifest["images"]) {
    INFO(image["name"].get<std::string>());
    const DecodedImage rgb = decode_rgb(image_bytes(image));
    CHECK(content_hash(rgb).hex() == image["content_hash"].get<std::string>());
  }
}

TEST_CASE("reference: resize matches Pillow for every filter", "[reference]") {
  size_t cases = 0, mismatched = 0;
  std::map<std::string, std::vector<uint8_t>> sources;
  for (const json& r : reference().manifest["resize"]) {
    const std::string src_file = r["source"];
    if (!sources.count(src_file)) sources[src_file] = read_file(reference().dir / src_file);
    DecodedImage src;
    src.width = r["width"];
    src.height = r["height"];
    src.channels = r["channels"];
    src.pixels = sources[src_file];
    const uint32_t ow = r["out_width"], oh = r["out_height"];
    const Resample filter = resample_from_pil(r["filter"].get<int>());
    INFO(r["file"].get<std::string>());
    const DecodedImage out = resize(src, ow, oh, filter);
    const auto expected = read_file(reference().dir / r["file"].get<std::string>());
    const size_t diffs = count_differences(out.pixels, expected);
    CHECK(diffs == 0);
    mismatched += diffs != 0;
    // Any window of the resize is the same window of the full result.
    const uint32_t x0 = ow / 3, y0 = oh / 4, ww = std::max(1u, ow / 2), wh = std::max(1u, oh / 2);
    const DecodedImage part = resize_region(src, ow, oh, filter, x0, y0, ww, wh);
    size_t window_diffs = 0;
    for (uint32_t y = 0; y < wh; ++y) {
      for (uint32_t x = 0; x < ww * src.channels; ++x) {
        window_diffs += part.pixels[size_t{y} * ww * src.channels + x] !=
                        expected[(size_t{y0 + y} * ow + x0) * src.channels + x];
      }
    }
    CHECK(window_diffs == 0);
    ++cases;
  }
  std::printf("resize: %zu cases (6 filters, L and RGB), %zu differ from Pillow\n", cases,
              mismatched);
}

TEST_CASE("reference: pixel_values match the transformers processors", "[reference]") {
  const Reference& ref = reference();
  std::map<std::string, PreprocessorConfig> configs;
  for (const json& c : ref.manifest["configs"]) {
    configs[c["name"]] =
        load_preprocessor_config((ref.dir / c["file"].get<std::string>()).string());
  }
  std::map<std::string, json> images;
  for (const json& image : ref.manifest["images"]) images[image["name"]] = image;

  double max_diff = 0;
  size_t cases = 0, values = 0;
  std::string current_name;
  DecodedImage current;
  std::set<std::string> image_names, config_names;
  for (const json& c : ref.manifest["cases"]) {
    const std::string name = c["image"], config = c["config"];
    INFO(name << " / " << config);
    if (name != current_name) {
      current = decode(image_bytes(images.at(name)));
      current_name = name;
    }
    const PixelValues pv = preprocess(current, configs.at(config));
    const auto shape = c["shape"].get<std::vector<int>>();
    REQUIRE(pv.channels == shape[0]);
    REQUIRE(pv.height == shape[1]);
    REQUIRE(pv.width == shape[2]);
    const size_t n = size_t{3} * pv.height * pv.width;
    const auto raw = read_z(ref.dir / c["file"].get<std::string>(), n * 4);
    std::vector<float> expected(n);
    std::memcpy(expected.data(), raw.data(), raw.size());
    double case_max = 0;
    for (size_t i = 0; i < n; ++i) {
      case_max = std::max(case_max, std::abs(static_cast<double>(pv.data[i]) - expected[i]));
    }
    CHECK(case_max <= 1e-5);
    max_diff = std::max(max_diff, case_max);
    ++cases;
    values += n;
    image_names.insert(name);
    config_names.insert(config);
  }
  std::printf(
      "pixel_values: %zu cases (%zu images x %zu configs, partial matrix), %zu values, "
      "max |diff| = %g\n",
      cases, image_names.size(), config_names.size(), values, max_diff);
}

// ------------------------------------------------------------------------------------------
// Hostile and malformed input

Bytes small_jpeg(bool progressive = false, int channels = 3) {
  JpegOptions o;
  o.progressive = progressive;
  return encode_jpeg(picture(64, 48, channels), 64, 48, channels, o);
}

Bytes small_png(int color_type = PNG_COLOR_TYPE_RGB, bool interlace = false) {
  PngOptions o;
  o.interlace = interlace;
  const int ch = color_type == PNG_COLOR_TYPE_RGB ? 3 : color_type == PNG_COLOR_TYPE_RGBA ? 4 : 1;
  return encode_png(widen(picture(64, 48, ch)), 64, 48, color_type, o);
}

Bytes png_header(uint32_t width, uint32_t height, int depth = 8, int color_type = 2) {
  Bytes b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  b.resize(33);
  put_be32(&b[16], width);
  put_be32(&b[20], height);
  b[24] = static_cast<uint8_t>(depth);
  b[25] = static_cast<uint8_t>(color_type);
  fix_png_crc(b, 8);
  // An IDAT that promises more than it holds, then IEND.
  const uint8_t idat[] = {0, 0, 0, 2, 'I', 'D', 'A', 'T', 0x78, 0x9C, 0, 0, 0, 0};
  b.insert(b.end(), std::begin(idat), std::end(idat));
  fix_png_crc(b, 33);
  return b;
}

// SOI, a DQT, a baseline SOF0 of the given size, a DHT, SOS, a few bytes, EOI.
Bytes jpeg_header(uint16_t width, uint16_t height, int components = 3, int precision = 8) {
  Bytes b = {0xFF, 0xD8};
  Bytes dqt = {0xFF, 0xDB, 0, 67, 0};
  for (int i = 0; i < 64; ++i) dqt.push_back(1);
  b.insert(b.end(), dqt.begin(), dqt.end());
  const uint16_t sof_len = static_cast<uint16_t>(8 + 3 * components);
  Bytes sof = {0xFF,
               0xC0,
               static_cast<uint8_t>(sof_len >> 8),
               static_cast<uint8_t>(sof_len),
               static_cast<uint8_t>(precision),
               static_cast<uint8_t>(height >> 8),
               static_cast<uint8_t>(height),
               static_cast<uint8_t>(width >> 8),
               static_cast<uint8_t>(width),
               static_cast<uint8_t>(components)};
  for (int c = 0; c < components; ++c) {
    sof.push_back(static_cast<uint8_t>(c + 1));
    sof.push_back(0x11);
    sof.push_back(0);
  }
  b.insert(b.end(), sof.begin(), sof.end());
  const uint8_t tail[] = {0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0, 0x12, 0x34, 0xFF, 0xD9};
  b.insert(b.end(), std::begin(tail), std::end(tail));
  return b;
}

TEST_CASE("probe refuses a 100000x100000 PNG header without allocating", "[unit]") {
  const Bytes bomb = png_header(100000, 100000);
  const ImageInfo info = probe(bomb);  // the header itself is well formed
  CHECK(info.width == 100000);
  CHECK(info.height == 100000);
  const DecodeLimits limits;
  size_t largest = 0;
  std::string message;
  largest = largest_allocation_during([&] { message = error_of([&] { probe(bomb, limits); }); });
  CHECK(message.find("more than the limit") != std::string::npos);
  CHECK(largest < 4096);
  largest = largest_allocation_during([&] { message = error_of([&] { decode(bomb, limits); }); });
  CHECK(message.find("10000000000 pixels") != std::string::npos);
  CHECK(largest < 4096);
}

TEST_CASE("a JPEG bomb header is refused before decoding", "[unit]") {
  const Bytes bomb = jpeg_header(65500, 65500);
  const ImageInfo info = probe(bomb);
  CHECK(info.width == 65500);
  CHECK(info.format == ImageFormat::kJpeg);
  std::string message;
  const size_t largest =
      largest_allocation_during([&] { message = error_of([&] { decode(bomb); }); });
  CHECK(message.find("more than the limit") != std::string::npos);
  CHECK(largest < 4096);
  // Under the limit the header is honoured: like Pillow, libjpeg decodes a scan that ends
  // early (here at once) with the missing data as mid-gray. max_pixels is what bounds it.
  DecodeLimits generous;
  generous.max_pixels = uint64_t{1} << 33;
  const DecodedImage gray = decode(jpeg_header(3000, 2000), generous);
  CHECK(gray.width == 3000);
  CHECK(gray.height == 2000);
}

TEST_CASE("truncated JPEGs are errors at every cut point", "[unit]") {
  for (bool progressive : {false, true}) {
    const Bytes full = small_jpeg(progressive);
    REQUIRE_NOTHROW(decode(full));
    for (size_t cut :
         {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{20}, size_t{100}, full.size() / 3,
          full.size() / 2, full.size() - 40, full.size() - 2, full.size() - 1}) {
      INFO("progressive " << progressive << ", cut at " << cut << " of " << full.size());
      const Bytes part(full.begin(), full.begin() + static_cast<long>(cut));
      const std::string message = error_of([&] { decode(part); });
      CHECK(message != "<no iris::Error thrown>");
    }
  }
}

TEST_CASE("truncated PNGs are errors until the pixel data is complete", "[unit]") {
  for (bool interlace : {false, true}) {
    const Bytes full = small_png(PNG_COLOR_TYPE_RGB, interlace);
    REQUIRE_NOTHROW(decode(full));
    // The file ends with the 12-byte IEND chunk; everything before it is needed.
    for (size_t cut : {size_t{0}, size_t{7}, size_t{8}, size_t{20}, size_t{32}, size_t{33},
                       size_t{45}, full.size() / 2, full.size() - 20, full.size() - 13}) {
      INFO("interlace " << interlace << ", cut at " << cut << " of " << full.size());
      const Bytes part(full.begin(), full.begin() + static_cast<long>(cut));
      CHECK(error_of([&] { decode(part); }) != "<no iris::Error thrown>");
    }
    // Like Pillow, a missing IEND after complete pixel data is tolerated.
    const Bytes no_iend(full.begin(), full.end() - 12);
    CHECK_NOTHROW(decode(no_iend));
  }
}

TEST_CASE("PNG CRC mismatches are refused", "[unit]") {
  Bytes bad_ihdr = small_png();
  bad_ihdr[29] ^= 0x01;
  CHECK(error_of([&] { probe(bad_ihdr); }).find("IHDR CRC") != std::string::npos);
  CHECK(error_of([&] { decode(bad_ihdr); }).find("IHDR CRC") != std::string::npos);
  Bytes bad_idat = small_png();
  size_t pos = 8;
  while (std::memcmp(&bad_idat[pos + 4], "IDAT", 4) != 0) {
    pos += 12 + ((size_t{bad_idat[pos]} << 24) | (size_t{bad_idat[pos + 1]} << 16) |
                 (size_t{bad_idat[pos + 2]} << 8) | bad_idat[pos + 3]);
  }
  const size_t idat_len = (size_t{bad_idat[pos]} << 24) | (size_t{bad_idat[pos + 1]} << 16) |
                          (size_t{bad_idat[pos + 2]} << 8) | bad_idat[pos + 3];
  bad_idat[pos + 8 + idat_len] ^= 0x40;  // the stored CRC
  CHECK(error_of([&] { decode(bad_idat); }).find("CRC") != std::string::npos);
  Bytes bad_data = small_png();
  bad_data[pos + 8 + 3] ^= 0x40;  // the data: zlib or the CRC check refuses it
  CHECK(error_of([&] { decode(bad_data); }).find("invalid PNG") != std::string::npos);
}

TEST_CASE("zero dimensions are refused by probe", "[unit]") {
  CHECK(error_of([&] { probe(png_header(0, 10)); }).find("zero dimension") != std::string::npos);
  CHECK(error_of([&] { probe(png_header(10, 0)); }).find("zero dimension") != std::string::npos);
  CHECK(error_of([&] { probe(jpeg_header(0, 10)); }).find("zero dimension") != std::string::npos);
  CHECK(error_of([&] { probe(jpeg_header(10, 0)); }).find("zero dimension") != std::string::npos);
  CHECK(error_of([&] { decode(jpeg_header(10, 0)); }).find("zero dimension") != std::string::npos);
}

TEST_CASE("garbage, wrong magic, empty input and size limits", "[unit]") {
  Bytes garbage(1000);
  uint32_t state = 12345;
  for (auto& b : garbage) b = static_cast<uint8_t>((state = state * 1103515245 + 12345) >> 16);
  garbage[0] = 0x42;
  CHECK(error_of([&] { decode(garbage); }).find("neither JPEG nor PNG") != std::string::npos);
  CHECK(error_of([&] { decode(Bytes{}); }).find("empty") != std::string::npos);
  Bytes png = small_png();
  png[1] = 'Q';
  CHECK(error_of([&] { decode(png); }).find("neither JPEG nor PNG") != std::string::npos);
  Bytes jpeg = small_jpeg();
  jpeg[2] = 0x00;  // FF D8 must be followed by a marker
  CHECK(error_of([&] { decode(jpeg); }).find("neither JPEG nor PNG") != std::string::npos);
  // Garbage after a valid SOI: no frame header anywhere.
  Bytes soi_garbage(200, 0x37);
  const uint8_t soi_app0[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10};
  std::copy(std::begin(soi_app0), std::end(soi_app0), soi_garbage.begin());
  CHECK(error_of([&] { decode(soi_garbage); }).find("JPEG") != std::string::npos);

  DecodeLimits small;
  small.max_bytes = 100;
  CHECK(error_of([&] { decode(small_jpeg(), small); }).find("more than the limit of 100") !=
        std::string::npos);
  small = {};
  small.max_pixels = 64 * 48 - 1;
  CHECK(error_of([&] { decode(small_png(), small); }).find("3072 pixels") != std::string::npos);
  CHECK(error_of([&] { decode(small_jpeg(), small); }).find("3072 pixels") != std::string::npos);
  small.max_pixels = 64 * 48;
  CHECK_NOTHROW(decode(small_png(), small));
}

TEST_CASE("unsupported JPEG kinds are refused clearly", "[unit]") {
  CHECK(error_of([&] { probe(jpeg_header(16, 16, 2)); }).find("2 color components") !=
        std::string::npos);
  CHECK(error_of([&] { decode(jpeg_header(16, 16, 3, 12)); }).find("precision") !=
        std::string::npos);
  DecodeLimits few_scans;
  few_scans.max_jpeg_scans = 2;
  CHECK(error_of([&] { decode(small_jpeg(true), few_scans); }).find("scans") != std::string::npos);
  CHECK_NOTHROW(decode(small_jpeg(true)));
}

TEST_CASE("CMYK, YCCK, restart markers and arithmetic coding decode", "[unit]") {
  std::vector<uint8_t> cmyk;  // smooth, so YCCK's chroma subsampling loses little
  for (int y = 0; y < 30; ++y) {
    for (int x = 0; x < 40; ++x) {
      for (int v : {x * 5, y * 7, (x + y) * 3, 40}) cmyk.push_back(static_cast<uint8_t>(v));
    }
  }
  JpegOptions plain;
  plain.quality = 100;
  JpegOptions ycck = plain;
  ycck.stored = JCS_YCCK;
  const DecodedImage a = decode(encode_jpeg(cmyk, 40, 30, 4, plain));
  const DecodedImage b = decode(encode_jpeg(cmyk, 40, 30, 4, ycck));
  REQUIRE(a.channels == 3);
  REQUIRE(b.channels == 3);
  int worst = 0;  // same picture through two lossy color paths
  for (size_t i = 0; i < a.pixels.size(); ++i)
    worst = std::max(worst, std::abs(a.pixels[i] - b.pixels[i]));
  CHECK(worst <= 8);
  JpegOptions restarts;
  restarts.restart_interval = 1;
  CHECK(decode(encode_jpeg(picture(64, 48, 3), 64, 48, 3, restarts)).width == 64);
  JpegOptions arith;
  arith.arithmetic = true;
  CHECK(decode(encode_jpeg(picture(64, 48, 3), 64, 48, 3, arith)).height == 48);
}

TEST_CASE("decode keeps EXIF orientation as metadata only", "[unit]") {
  // APP1 Exif (big-endian TIFF, IFD0 with Orientation = 8) spliced in after SOI.
  const Bytes jpeg = small_jpeg();
  const uint8_t app1[] = {0xFF, 0xE1, 0x00, 0x22, 'E', 'x', 'i', 'f', 0,    0,    'M', 'M',
                          0,    42,   0,    0,    0,   8,   0,   1,   0x01, 0x12, 0,   3,
                          0,    0,    0,    1,    0,   8,   0,   0,   0,    0,    0,   0};
  Bytes with_exif(jpeg.begin(), jpeg.begin() + 2);
  with_exif.insert(with_exif.end(), std::begin(app1), std::end(app1));
  with_exif.insert(with_exif.end(), jpeg.begin() + 2, jpeg.end());
  CHECK(probe(with_exif).exif_orientation == 8);
  const DecodedImage d = decode(with_exif);
  CHECK(d.width == 64);  // not rotated
  CHECK(d.pixels == decode(jpeg).pixels);
}

// ------------------------------------------------------------------------------------------
// Preprocessing

TEST_CASE("preprocessor_config.json parsing", "[unit]") {
  const PreprocessorConfig clip = parse_preprocessor_config_text(
      R"({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 336},
          "crop_size": {"height": 336, "width": 336}, "resample": 3})");
  CHECK(clip.kind == ProcessorKind::kClip);
  CHECK(clip.shortest_edge == 336);
  CHECK(clip.do_center_crop);
  CHECK(clip.crop_height == 336);
  CHECK(clip.image_mean[0] == 0.48145466);
  CHECK(clip.resample == Resample::kBicubic);

  const PreprocessorConfig legacy = parse_preprocessor_config_text(
      R"({"feature_extractor_type": "CLIPFeatureExtractor", "size": 224, "crop_size": 224,
          "image_mean": 0.5, "resample": 2})");
  CHECK(legacy.shortest_edge == 224);
  CHECK(legacy.crop_width == 224);
  CHECK(legacy.image_mean[2] == 0.5);
  CHECK(legacy.resample == Resample::kBilinear);

  const PreprocessorConfig siglip = parse_preprocessor_config_text(
      R"({"image_processor_type": "SiglipImageProcessor", "size": {"height": 384, "width": 384},
          "do_center_crop": true})");
  CHECK(siglip.kind == ProcessorKind::kSiglip);
  CHECK(siglip.resize_height == 384);
  CHECK_FALSE(siglip.do_center_crop);  // SigLIP has no crop step
  CHECK(siglip.image_std[1] == 0.5);
  CHECK_FALSE(siglip.do_convert_rgb);

  const PreprocessorConfig llava = parse_preprocessor_config_text(
      R"({"image_processor_type": "LlavaImageProcessorFast", "do_pad": true})");
  CHECK(llava.kind == ProcessorKind::kLlava);
  CHECK(llava.do_pad);
  CHECK(llava.shortest_edge == 224);

  CHECK(error_of([] {
          parse_preprocessor_config_text(R"({"image_processor_type": "Qwen2VLImageProcessor"})");
        }).find("unsupported image processor") != std::string::npos);
  CHECK(error_of([] {
          parse_preprocessor_config_text(R"({"size": 224})");
        }).find("image_processor_type") != std::string::npos);
  CHECK(error_of([] {
          parse_preprocessor_config_text(
              R"({"image_processor_type": "CLIPImageProcessor", "resample": 7})");
        }).find("resample") != std::string::npos);
  CHECK(error_of([] {
          parse_preprocessor_config_text(
              R"({"image_processor_type": "SiglipImageProcessor", "size": 224})");
        }).find("height and width") != std::string::npos);
  CHECK(error_of([] {
          parse_preprocessor_config_text(
              R"({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": -1}})");
        }).find("out of range") != std::string::npos);
  CHECK(error_of([] { parse_preprocessor_config_text("{not json"); }).find("not valid JSON") !=
        std::string::npos);
  CHECK(error_of([] { load_preprocessor_config("/nonexistent/dir"); }).find("cannot open") !=
        std::string::npos);
}

TEST_CASE("resize output size follows get_resize_output_image_size", "[unit]") {
  PreprocessorConfig c;
  c.shortest_edge = 224;
  CHECK(resize_output_size(480, 640, c) == std::pair{224, 298});  // int(224 * 640 / 480)
  CHECK(resize_output_size(640, 480, c) == std::pair{298, 224});
  CHECK(resize_output_size(100, 100, c) == std::pair{224, 224});
  CHECK(resize_output_size(1, 3, c) == std::pair{224, 672});
  c.shortest_edge = 336;
  CHECK(resize_output_size(2000, 3000, c) == std::pair{336, 504});
  CHECK(error_of([&] { resize_output_size(1, 89'000'000, c); }).find("too elongated") !=
        std::string::npos);
  c.shortest_edge = 0;
  c.resize_height = 384;
  c.resize_width = 300;
  CHECK(resize_output_size(7, 9, c) == std::pair{384, 300});
}

DecodedImage ramp(uint32_t w, uint32_t h) {
  DecodedImage img;
  img.width = w;
  img.height = h;
  img.channels = 3;
  for (uint32_t i = 0; i < w * h * 3; ++i) img.pixels.push_back(static_cast<uint8_t>(i + 1));
  return img;
}

TEST_CASE("center crop pads with zeros where the crop is larger", "[unit]") {
  const DecodedImage img = ramp(3, 2);  // pixel (x, y) channel c = 1 + (y * 3 + x) * 3 + c
  const DecodedImage out = center_crop(img, 4, 5);
  REQUIRE(out.width == 5);
  REQUIRE(out.height == 4);
  // ceil((4-2)/2) = 1 row and ceil((5-3)/2) = 1 column of padding before the image.
  auto at = [&](uint32_t x, uint32_t y) { return out.pixels[(y * 5 + x) * 3]; };
  CHECK(at(0, 0) == 0);
  CHECK(at(1, 1) == 1);
  CHECK(at(3, 2) == 1 + (1 * 3 + 2) * 3);
  CHECK(at(4, 2) == 0);
  CHECK(at(1, 3) == 0);
  // Odd differences: (orig - crop) // 2 floors toward -infinity in Python.
  const DecodedImage narrow = center_crop(ramp(4, 4), 4, 1);
  CHECK(narrow.width == 1);
  CHECK(narrow.pixels[0] == 1 + 1 * 3);  // column (4 - 1) // 2 = 1
}

TEST_CASE("LLaVA pad_to_square centres the image", "[unit]") {
  const DecodedImage img = ramp(4, 2);
  const DecodedImage sq = pad_to_square(img, {122, 116, 104});
  REQUIRE(sq.width == 4);
  REQUIRE(sq.height == 4);
  CHECK(sq.pixels[0] == 122);
  CHECK(sq.pixels[(1 * 4 + 0) * 3] == 1);  // rows start at (4 - 2) // 2 = 1
  CHECK(sq.pixels[(3 * 4 + 3) * 3 + 2] == 104);
}

TEST_CASE("preprocess on a 1x1 gray image", "[unit]") {
  DecodedImage gray;
  gray.width = gray.height = 1;
  gray.channels = 1;
  gray.pixels = {200};
  PreprocessorConfig c = parse_preprocessor_config_text(
      R"({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 4},
          "crop_size": 4, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]})");
  const PixelValues pv = preprocess(gray, c);
  REQUIRE(pv.data.size() == 3 * 4 * 4);
  const float expected = (static_cast<float>(200 * (1.0 / 255.0)) - 0.5f) / 0.5f;
  for (float v : pv.data) CHECK(v == expected);
}

TEST_CASE("patchify lays patches out as a stride-P Conv2d weight flattens", "[unit]") {
  PixelValues pv;
  pv.channels = 3;
  pv.height = 30;  // 30 / 14 = 2 patches, 2 rows dropped
  pv.width = 44;   // 44 / 14 = 3 patches, 2 columns dropped
  for (int i = 0; i < 3 * 30 * 44; ++i) pv.data.push_back(static_cast<float>(i));
  const Patches p = patchify(pv, 14);
  REQUIRE(p.grid_height == 2);
  REQUIRE(p.grid_width == 3);
  REQUIRE(p.patch_dim == 3 * 14 * 14);
  REQUIRE(p.data.size() == size_t{6} * p.patch_dim);
  // conv(x)[d, gy, gx] = sum_{c,ky,kx} W[d, c, ky, kx] x[c, gy*P+ky, gx*P+kx]
  for (int gy = 0; gy < 2; ++gy) {
    for (int gx = 0; gx < 3; ++gx) {
      for (int c = 0; c < 3; ++c) {
        for (int ky = 0; ky < 14; ++ky) {
          for (int kx = 0; kx < 14; kx += 13) {
            const float want = pv.data[(c * 30 + gy * 14 + ky) * 44 + gx * 14 + kx];
            CHECK(p.data[(gy * 3 + gx) * p.patch_dim + (c * 14 + ky) * 14 + kx] == want);
          }
        }
      }
    }
  }
  PixelValues siglip;
  siglip.channels = 3;
  siglip.height = siglip.width = 384;
  siglip.data.assign(3 * 384 * 384, 0.f);
  CHECK(patchify(siglip, 14).num_patches() == 27 * 27);
  CHECK(error_of([&] { patchify(pv, 0); }).find("patch_size") != std::string::npos);
}

TEST_CASE("content_hash covers dimensions and every byte", "[unit]") {
  DecodedImage a = ramp(4, 3);
  const ContentHash h = content_hash(a);
  CHECK(h.hex().size() == 32);
  CHECK(content_hash(a) == h);
  DecodedImage b = a;
  b.width = 3;
  b.height = 4;  // same bytes, other shape
  CHECK(content_hash(b) != h);
  b = a;
  b.pixels.back() ^= 1;
  CHECK(content_hash(b) != h);
}

}  // namespace
