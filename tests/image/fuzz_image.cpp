// Fixed-seed mutation fuzzing of probe / decode / preprocess on JPEG and PNG inputs.
// Seeds are encoded here (libjpeg-turbo, libpng) in many variants: baseline, progressive,
// restart markers, arithmetic coding, gray, CMYK, YCCK; PNG of every color type and bit
// depth, interlaced, palette with tRNS, color keys. Mutations: bit flips, byte overwrites
// with boundary values, truncation, inserted/deleted runs, PNG chunk length edits (with
// and without a recomputed CRC), IHDR field edits with a valid CRC, JPEG segment length
// and SOF field edits. Each case must either decode (to a consistent image, which then goes
// through preprocessing) or throw iris::Error; any other exception, crash or sanitizer
// report fails. Meant to run under ASan/UBSan (label image_sanitize).
//
//   image_fuzz [max_cases=50000] [max_seconds=20] [seed=1]   (stops at whichever comes first)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/core/check.h"
#include "engine/image/content_hash.h"
#include "engine/image/decode.h"
#include "engine/image/preprocess.h"
#include "tests/image/test_encode.h"

namespace {

using namespace iris::image;
using namespace iris::image::testing;

struct Seed {
  std::string name;
  Bytes bytes;
};

std::vector<Seed> make_seeds() {
  std::vector<Seed> seeds;
  const int w = 37, h = 23;  // odd sizes: partial MCUs, padded PNG rows
  const auto rgb = picture(w, h, 3, 1), gray = picture(w, h, 1, 2), cmyk = picture(w, h, 4, 3);
  JpegOptions o;
  seeds.push_back({"jpeg-baseline", encode_jpeg(rgb, w, h, 3, o)});
  o.progressive = true;
  seeds.push_back({"jpeg-progressive", encode_jpeg(rgb, w, h, 3, o)});
  seeds.push_back({"jpeg-gray-progressive", encode_jpeg(gray, w, h, 1, o)});
  o = {};
  o.restart_interval = 1;
  seeds.push_back({"jpeg-restart", encode_jpeg(rgb, w, h, 3, o)});
  o = {};
  o.arithmetic = true;
  seeds.push_back({"jpeg-arithmetic", encode_jpeg(rgb, w, h, 3, o)});
  seeds.push_back({"jpeg-gray", encode_jpeg(gray, w, h, 1)});
  seeds.push_back({"jpeg-cmyk", encode_jpeg(cmyk, w, h, 4)});
  o = {};
  o.stored = JCS_YCCK;
  seeds.push_back({"jpeg-ycck", encode_jpeg(cmyk, w, h, 4, o)});

  PngOptions p;
  seeds.push_back({"png-rgb", encode_png(widen(rgb), w, h, PNG_COLOR_TYPE_RGB, p)});
  seeds.push_back({"png-gray", encode_png(widen(gray), w, h, PNG_COLOR_TYPE_GRAY, p)});
  p.interlace = true;
  seeds.push_back({"png-rgba-interlaced",
                   encode_png(widen(picture(w, h, 4, 4)), w, h, PNG_COLOR_TYPE_RGBA, p)});
  seeds.push_back({"png-ga-interlaced",
                   encode_png(widen(picture(w, h, 2, 5)), w, h, PNG_COLOR_TYPE_GRAY_ALPHA, p)});
  p = {};
  p.bit_depth = 16;
  std::vector<uint16_t> wide(rgb.size());
  for (size_t i = 0; i < rgb.size(); ++i) wide[i] = static_cast<uint16_t>(rgb[i] * 257 + i);
  seeds.push_back({"png-rgb16", encode_png(wide, w, h, PNG_COLOR_TYPE_RGB, p)});
  std::vector<uint16_t> g16(gray.size());
  for (size_t i = 0; i < gray.size(); ++i) g16[i] = static_cast<uint16_t>(gray[i] * 3);
  p.trns = {0, 0};
  seeds.push_back({"png-gray16-trns", encode_png(g16, w, h, PNG_COLOR_TYPE_GRAY, p)});
  p = {};
  p.bit_depth = 4;
  p.palette = picture(16, 1, 3, 6);
  p.trns = {0, 128, 255, 7};
  seeds.push_back(
      {"png-palette4-trns", encode_png(widen(gray, 4), w, h, PNG_COLOR_TYPE_PALETTE, p)});
  p = {};
  p.bit_depth = 1;
  p.interlace = true;
  seeds.push_back(
      {"png-gray1-interlaced", encode_png(widen(gray, 7), w, h, PNG_COLOR_TYPE_GRAY, p)});
  p = {};
  p.trns = {0, 10, 0, 20, 0, 30};
  seeds.push_back({"png-rgb-key", encode_png(widen(rgb), w, h, PNG_COLOR_TYPE_RGB, p)});
  return seeds;
}

// Offsets of every PNG chunk (its length field), walking from the signature.
std::vector<size_t> png_chunks(const Bytes& b) {
  std::vector<size_t> out;
  for (size_t pos = 8; pos + 12 <= b.size();) {
    out.push_back(pos);
    const size_t len = (size_t{b[pos]} << 24) | (size_t{b[pos + 1]} << 16) |
                       (size_t{b[pos + 2]} << 8) | b[pos + 3];
    if (len > b.size()) break;
    pos += 12 + len;
  }
  return out;
}

// Offsets of JPEG marker segments with a length field (the FF of the marker), up to SOS.
std::vector<size_t> jpeg_segments(const Bytes& b) {
  std::vector<size_t> out;
  for (size_t pos = 2; pos + 4 <= b.size();) {
    if (b[pos] != 0xFF) break;
    const uint8_t marker = b[pos + 1];
    out.push_back(pos);
    if (marker == 0xDA) break;
    pos += 2 + ((size_t{b[pos + 2]} << 8) | b[pos + 3]);
  }
  return out;
}

Bytes mutate(const Bytes& seed, std::mt19937_64& rng) {
  Bytes b = seed;
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % std::max<size_t>(n, 1)); };
  static const uint8_t kBoundary[] = {0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF};
  const bool is_png = b.size() > 8 && b[1] == 'P';
  const int rounds = 1 + static_cast<int>(rng() % 3);
  for (int r = 0; r < rounds && !b.empty(); ++r) {
    switch (rng() % 9) {
      case 0:  // bit flips
      case 1: {
        const int flips = 1 + static_cast<int>(rng() % 8);
        for (int i = 0; i < flips; ++i)
          b[pick(b.size())] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      }
      case 2: {  // boundary bytes
        const int n = 1 + static_cast<int>(rng() % 4);
        for (int i = 0; i < n; ++i) b[pick(b.size())] = kBoundary[rng() % 6];
        break;
      }
      case 3:  // truncation
        b.resize(pick(b.size()));
        break;
      case 4: {  // delete or duplicate a run
        const size_t at = pick(b.size()), len = 1 + pick(32);
        if (rng() % 2) {
          b.erase(b.begin() + static_cast<long>(at),
                  b.begin() + static_cast<long>(std::min(b.size(), at + len)));
        } else {
          const Bytes run(b.begin() + static_cast<long>(at),
                          b.begin() + static_cast<long>(std::min(b.size(), at + len)));
          b.insert(b.begin() + static_cast<long>(pick(b.size())), run.begin(), run.end());
        }
        break;
      }
      case 5:
      case 6: {  // structure-aware length edits
        if (is_png) {
          const auto chunks = png_chunks(b);
          if (chunks.empty()) break;
          const size_t at = chunks[pick(chunks.size())];
          static const uint32_t kLengths[] = {0, 1, 13, 0x7FFFFFFF, 0x80000000u, 0xFFFFFFFFu};
          const uint32_t old = (uint32_t{b[at]} << 24) | (uint32_t{b[at + 1]} << 16) |
                               (uint32_t{b[at + 2]} << 8) | b[at + 3];
          const uint32_t len = rng() % 2
                                   ? kLengths[rng() % 6]
                                   : old + static_cast<uint32_t>(static_cast<int>(rng() % 17) - 8);
          put_be32(&b[at], len);
          if (rng() % 2) fix_png_crc(b, at);
        } else {
          const auto segs = jpeg_segments(b);
          if (segs.empty()) break;
          const size_t at = segs[pick(segs.size())];
          if (at + 4 > b.size()) break;
          const int delta = static_cast<int>(rng() % 9) - 4;
          const int len = ((b[at + 2] << 8) | b[at + 3]) + delta;
          b[at + 2] = static_cast<uint8_t>(rng() % 5 == 0 ? rng() : (len >> 8));
          b[at + 3] = static_cast<uint8_t>(len);
        }
        break;
      }
      case 7: {  // header fields with a valid CRC (PNG) or inside SOF (JPEG)
        if (is_png && b.size() >= 33) {
          const size_t field = 16 + pick(13);
          b[field] = rng() % 2 ? kBoundary[rng() % 6] : static_cast<uint8_t>(rng());
          fix_png_crc(b, 8);
        } else if (!is_png) {
          for (size_t at : jpeg_segments(b)) {
            if (b[at + 1] >= 0xC0 && b[at + 1] <= 0xC2 && at + 10 <= b.size()) {
              b[at + 4 + pick(6)] = static_cast<uint8_t>(rng());
              break;
            }
          }
        }
        break;
      }
      default: {  // random bytes appended or a random prefix kept
        const size_t n = pick(64);
        for (size_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(rng()));
        break;
      }
    }
  }
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const long max_cases = argc > 1 ? std::atol(argv[1]) : 50000;
  const double max_seconds = argc > 2 ? std::atof(argv[2]) : 20.0;
  const unsigned long seed = argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 1;
  const std::vector<Seed> seeds = make_seeds();
  const PreprocessorConfig config = parse_preprocessor_config_text(
      R"({"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 24},
          "crop_size": {"height": 20, "width": 28}, "resample": 3})");
  DecodeLimits limits;
  limits.max_pixels = 1 << 20;  // keeps mutated headers from asking for huge (slow) images

  // Every seed must decode as is.
  for (const Seed& s : seeds) {
    try {
      const DecodedImage d = decode(s.bytes, limits);
      (void)preprocess(d, config);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "image_fuzz: seed %s does not decode: %s\n", s.name.c_str(), e.what());
      return 1;
    }
  }

  std::mt19937_64 rng(seed);
  const auto start = std::chrono::steady_clock::now();
  long cases = 0, decoded = 0, rejected = 0;
  for (; cases < max_cases; ++cases) {
    if ((cases & 63) == 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >
            max_seconds) {
      break;
    }
    const Seed& s = seeds[static_cast<size_t>(cases) % seeds.size()];
    const Bytes input = mutate(s.bytes, rng);
    try {
      (void)probe(input);
    } catch (const iris::Error&) {
    }
    try {
      const DecodedImage d = decode(input, limits);
      if (d.width == 0 || d.height == 0 || d.channels < 1 || d.channels > 4 ||
          d.pixels.size() != size_t{d.width} * d.height * d.channels) {
        std::fprintf(stderr, "image_fuzz: case %ld (%s): inconsistent image %ux%ux%d, %zu bytes\n",
                     cases, s.name.c_str(), d.width, d.height, d.channels, d.pixels.size());
        return 1;
      }
      const PixelValues pv = preprocess(d, config);
      (void)content_hash(d);
      if (pv.data.size() != size_t{3} * 20 * 28) {
        std::fprintf(stderr, "image_fuzz: case %ld: pixel_values of %zu\n", cases, pv.data.size());
        return 1;
      }
      ++decoded;
    } catch (const iris::Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "image_fuzz: case %ld (%s): unexpected %s\n", cases, s.name.c_str(),
                   e.what());
      return 1;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "image_fuzz: %ld cases from %zu seeds in %.1f s: %ld decoded, %ld rejected with "
      "iris::Error\n",
      cases, seeds.size(), seconds, decoded, rejected);
  return 0;
}
