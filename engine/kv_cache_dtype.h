// The element type of the paged KV cache, as `--kv-cache-dtype` names it (vLLM's spelling):
// "auto" stores K/V in the backend's compute dtype; "fp8" / "fp8_e4m3" store one byte per
// element in OCP FP8 E4M3 with per-layer scales (engine/backend.h, KvLayer).
#pragma once

#include <string>
#include <string_view>

#include "engine/core/dtype.h"

namespace iris {

enum class KvCacheDtype { kAuto, kFp8E4M3 };

// Parses a --kv-cache-dtype value; fails naming the option for anything else (fp8_e5m2 is
// refused with its own message: only e4m3 is implemented).
KvCacheDtype parse_kv_cache_dtype(std::string_view s);
// "auto" or "fp8_e4m3".
std::string_view kv_cache_dtype_name(KvCacheDtype d);
// The DType the cache is stored in for a backend computing in `compute_dtype`.
inline DType kv_storage_dtype(KvCacheDtype d, DType compute_dtype) {
  return d == KvCacheDtype::kFp8E4M3 ? DType::F8_E4M3 : compute_dtype;
}

}  // namespace iris
