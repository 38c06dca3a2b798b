// A 128-bit key for a decoded image's content: the encoder cache and the prefix cache use
// it to recognise an image they have already seen, so two requests whose pixels match share
// work whatever bytes (JPEG quality, PNG compression, metadata) they arrived as.
//
// Cache keys cross request boundaries: a collision would hand one request another image's
// embeddings. The hash is therefore cryptographic (SHA-256, truncated to 128 bits), so
// colliding images cannot be crafted, rather than a fast non-cryptographic hash.
#pragma once

#include <compare>
#include <cstdint>
#include <string>

#include "engine/image/decode.h"

namespace iris::image {

struct ContentHash {
  uint64_t hi = 0;          // first 8 bytes of the digest, big-endian
  uint64_t lo = 0;          // next 8 bytes
  std::string hex() const;  // 32 lowercase hex digits, digest byte order
  auto operator<=>(const ContentHash&) const = default;
};

// SHA-256 of "iris.image.v1\0", then width, height and channels as little-endian uint32,
// then the pixel bytes; the first 16 bytes of the digest. Hash after convert_to_rgb() when
// a gray and an RGB copy of the same picture should share a key.
ContentHash content_hash(const DecodedImage& image);

}  // namespace iris::image
