// One memory-mapped .safetensors file: the header is parsed and every entry validated at
// open (dtype known, shape sane, data_offsets inside the file and non-overlapping), so the
// rest of the loader can index tensor bytes without further bounds checks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/core/dtype.h"

namespace iris {

struct SafetensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the data section
  uint64_t end = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

class SafetensorsFile {
 public:
  // Largest header we accept; real checkpoints stay far below this.
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

  // Maps and validates `path`; throws iris::Error naming the file (and tensor) on any defect.
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const SafetensorInfo* find(std::string_view name) const;
  const std::vector<SafetensorInfo>& tensors() const { return tensors_; }
  // Start of the tensor's bytes inside the mapping (no alignment guarantee).
  const uint8_t* data(const SafetensorInfo& t) const { return data_ + t.begin; }

 private:
  SafetensorsFile() = default;

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section
  std::vector<SafetensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;
};

}  // namespace iris
