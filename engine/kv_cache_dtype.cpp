// --kv-cache-dtype parsing (see kv_cache_dtype.h).
#include "engine/kv_cache_dtype.h"

#include "engine/core/check.h"

namespace iris {

KvCacheDtype parse_kv_cache_dtype(std::string_view s) {
  if (s == "auto") return KvCacheDtype::kAuto;
  if (s == "fp8" || s == "fp8_e4m3") return KvCacheDtype::kFp8E4M3;
  if (s == "fp8_e5m2")
    fail("--kv-cache-dtype fp8_e5m2 is not supported: use fp8 (= fp8_e4m3) or auto");
  fail("--kv-cache-dtype must be auto, fp8 or fp8_e4m3, got '", s, "'");
}

std::string_view kv_cache_dtype_name(KvCacheDtype d) {
  return d == KvCacheDtype::kFp8E4M3 ? "fp8_e4m3" : "auto";
}

}  // namespace iris
