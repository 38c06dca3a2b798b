// content_hash with OpenSSL's SHA-256 (hardware-accelerated where the CPU has SHA
// extensions: a 12-megapixel RGB image hashes in a few tens of milliseconds).
#include "engine/image/content_hash.h"

#include <openssl/evp.h>

#include <array>
#include <memory>

#include "engine/core/check.h"

namespace iris::image {

std::string ContentHash::hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(32, '0');
  for (int i = 0; i < 16; ++i) {
    const uint64_t word = i < 8 ? hi : lo;
    const int shift = 56 - 8 * (i % 8);
    const unsigned byte = static_cast<unsigned>((word >> shift) & 0xFF);
    out[2 * i] = kDigits[byte >> 4];
    out[2 * i + 1] = kDigits[byte & 15];
  }
  return out;
}

ContentHash content_hash(const DecodedImage& image) {
  IRIS_CHECK(image.pixels.size() == size_t{image.width} * image.height * image.channels)
      << "pixel buffer of " << image.pixels.size() << " bytes for " << image.width << "x"
      << image.height << "x" << image.channels;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  IRIS_CHECK(ctx != nullptr) << "EVP_MD_CTX_new failed";
  static constexpr char kDomain[] = "iris.image.v1";  // hashed with its terminating NUL
  std::array<uint8_t, 12> dims{};
  const uint32_t values[3] = {image.width, image.height, static_cast<uint32_t>(image.channels)};
  for (int v = 0; v < 3; ++v) {
    for (int b = 0; b < 4; ++b) dims[v * 4 + b] = static_cast<uint8_t>(values[v] >> (8 * b));
  }
  std::array<uint8_t, EVP_MAX_MD_SIZE> digest{};
  unsigned int digest_len = 0;
  const bool ok = EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(ctx.get(), kDomain, sizeof(kDomain)) == 1 &&
                  EVP_DigestUpdate(ctx.get(), dims.data(), dims.size()) == 1 &&
                  EVP_DigestUpdate(ctx.get(), image.pixels.data(), image.pixels.size()) == 1 &&
                  EVP_DigestFinal_ex(ctx.get(), digest.data(), &digest_len) == 1;
  IRIS_CHECK(ok && digest_len == 32) << "SHA-256 failed";
  ContentHash h;
  for (int i = 0; i < 8; ++i) {
    h.hi = (h.hi << 8) | digest[i];
    h.lo = (h.lo << 8) | digest[8 + i];
  }
  return h;
}

}  // namespace iris::image
