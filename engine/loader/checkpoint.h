// A Hugging Face checkpoint directory: config.json, optional generation_config.json, and
// weights in model.safetensors or in shards listed by model.safetensors.index.json. Weight
// reads check the full shape against what the model expects and can return one slice along
// a dimension, so a tensor-parallel rank reads only its shard from the mapping. When
// config.json has a quantization_config, a quantized linear weight is dequantized to F32 by
// read() (engine/loader/quantization.h), so callers see ordinary float weights.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/core/packed_weight.h"
#include "engine/loader/safetensors.h"

namespace iris {

struct QuantizationConfig;

// Elements [begin, begin + count) along `dim`; dim < 0 means the whole tensor.
struct Slice {
  int dim = -1;
  int64_t begin = 0;
  int64_t count = 0;
};

// Host bytes of one tensor (or slice) in its storage dtype. `data` points into the file
// mapping when the slice is contiguous there, else into `owned`.
struct HostTensor {
  const void* data = nullptr;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> owned;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

class Checkpoint {
 public:
  // Opens every weight file of the directory; throws iris::Error naming the file at fault.
  static std::unique_ptr<Checkpoint> open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  // Throws "missing tensor" naming the checkpoint when absent.
  const SafetensorInfo& info(const std::string& name) const;
  // Reads `name` after checking that its full shape equals `expected`. A quantized weight
  // is dequantized (whole, then sliced) and returned as F32.
  HostTensor read(const std::string& name, const std::vector<int64_t>& expected,
                  Slice slice = {}) const;
  // True when `name` is stored quantized (config.json has a quantization_config and the
  // module holds quantization tensors).
  bool is_quantized(const std::string& name) const;
  // A quantized weight's slice in the packed layout, validated like read(); only for names
  // is_quantized() accepts, and only 2-D [out, in] weights sliced along dim 0 or 1.
  PackedWeight read_packed(const std::string& name, const std::vector<int64_t>& expected,
                           Slice slice = {}) const;
  size_t num_tensors() const { return where_.size(); }
  // The stored bytes of `name` in its storage dtype (shape and dtype from info()).
  const uint8_t* bytes(const std::string& name) const;
  // config.json's quantization_config, or null for a float checkpoint.
  const QuantizationConfig* quantization() const { return quant_.get(); }

 private:
  std::string dir_;
  std::shared_ptr<const QuantizationConfig> quant_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unordered_map<std::string, std::pair<const SafetensorsFile*, const SafetensorInfo*>> where_;
};

std::string shape_str(const std::vector<int64_t>& s);

}  // namespace iris
