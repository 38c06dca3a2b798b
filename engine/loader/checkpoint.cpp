// Checkpoint directory handling: single-file and sharded safetensors, shape checks and
// sliced reads for tensor-parallel shards.
#include "engine/loader/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/core/check.h"
#include "engine/loader/quantization.h"

namespace iris {

namespace fs = std::filesystem;

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string& dir) {
  auto ck = std::unique_ptr<Checkpoint>(new Checkpoint());
  ck->dir_ = dir;
  const fs::path root(dir);
  const fs::path index = root / "model.safetensors.index.json";
  const fs::path single = root / "model.safetensors";

  std::map<std::string, std::vector<std::string>> expected_by_file;  // from the index
  if (fs::exists(index)) {
    std::ifstream in(index);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail(index.string(), ": not valid JSON: ", e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index.string(), ": missing \"weight_map\" object");
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) fail(index.string(), ": weight_map entry for '", it.key(), "' is not a file name");
      const std::string file = it.value().get<std::string>();
      if (file.find('/') != std::string::npos || file == ".." || file.empty())
        fail(index.string(), ": weight_map names file '", file, "' outside the checkpoint");
      expected_by_file[file].push_back(it.key());
    }
    if (expected_by_file.empty()) fail(index.string(), ": weight_map is empty");
  } else if (fs::exists(single)) {
    expected_by_file["model.safetensors"] = {};
  } else {
    fail(dir, ": no model.safetensors or model.safetensors.index.json");
  }

  for (const auto& [file, names] : expected_by_file) {
    ck->files_.push_back(SafetensorsFile::open((root / file).string()));
    const SafetensorsFile* f = ck->files_.back().get();
    for (const auto& t : f->tensors()) {
      auto [it, inserted] = ck->where_.emplace(t.name, std::make_pair(f, &t));
      if (!inserted)
        fail(f->path(), ": tensor '", t.name, "' also stored in ", it->second.first->path());
    }
    for (const auto& n : names) {
      if (!f->find(n))
        fail(f->path(), ": tensor '", n, "' listed in model.safetensors.index.json is missing");
    }
  }
  // quantization_config lives in config.json; a checkpoint directory without one (some
  // tests build bare weight files) is a float checkpoint.
  const fs::path config = root / "config.json";
  if (fs::exists(config)) {
    std::ifstream in(config);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      fail(config.string(), ": not valid JSON: ", e.what());
    }
    if (auto q = parse_quantization_config(j, config.string()))
      ck->quant_ = std::make_shared<const QuantizationConfig>(std::move(*q));
  }
  return ck;
}

const uint8_t* Checkpoint::bytes(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, ": missing tensor '", name, "'");
  return it->second.first->data(*it->second.second);
}

namespace {

// `slice` of a tensor whose bytes start at `base`. The result points into `base` when the
// slice is contiguous there and `may_alias`, else owns a copy.
HostTensor slice_of(const std::string& name, const uint8_t* base, DType dtype,
                    const std::vector<int64_t>& shape, Slice slice, bool may_alias) {
  HostTensor h;
  h.dtype = dtype;
  h.shape = shape;
  const int nd = static_cast<int>(shape.size());
  IRIS_CHECK(slice.dim < nd && slice.begin >= 0 && slice.count >= 0 &&
             slice.begin + slice.count <= shape[slice.dim])
      << name << ": slice dim " << slice.dim << " [" << slice.begin << ", +" << slice.count
      << ") of " << shape_str(shape);
  // outer × [dim] × inner: copy `count` rows of `inner` elements from each outer block.
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < slice.dim; ++d) outer *= shape[d];
  for (int d = slice.dim + 1; d < nd; ++d) inner *= shape[d];
  const size_t esz = dtype_size(dtype);
  h.shape[slice.dim] = slice.count;
  if (outer == 1 && may_alias) {
    h.data = base + static_cast<size_t>(slice.begin * inner) * esz;
    return h;
  }
  const size_t chunk = static_cast<size_t>(slice.count * inner) * esz;
  h.owned.resize(chunk * static_cast<size_t>(outer));
  for (int64_t o = 0; o < outer; ++o) {
    const uint8_t* src =
        base + (static_cast<size_t>(o * shape[slice.dim] + slice.begin) * inner) * esz;
    std::memcpy(h.owned.data() + static_cast<size_t>(o) * chunk, src, chunk);
  }
  h.data = h.owned.data();
  return h;
}

}  // namespace

const SafetensorInfo& Checkpoint::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, ": missing tensor '", name, "'");
  return *it->second.second;
}

bool Checkpoint::is_quantized(const std::string& name) const {
  return quant_ && stores_quantized_weight(*this, name);
}

PackedWeight Checkpoint::read_packed(const std::string& name, const std::vector<int64_t>& expected,
                                     Slice slice) const {
  IRIS_CHECK(is_quantized(name)) << name << " is not stored quantized";
  PackedWeight p = pack_weight(*this, *quant_, name, expected);
  if (slice.dim < 0) return p;
  IRIS_CHECK(slice.dim <= 1 && slice.begin >= 0 && slice.count >= 0 &&
             slice.begin + slice.count <= expected[slice.dim])
      << name << ": slice dim " << slice.dim << " [" << slice.begin << ", +" << slice.count
      << ") of " << shape_str(expected);
  return slice.dim == 0 ? p.slice_rows(slice.begin, slice.count)
                        : p.slice_cols(slice.begin, slice.count);
}

HostTensor Checkpoint::read(const std::string& name, const std::vector<int64_t>& expected,
                            Slice slice) const {
  if (is_quantized(name)) return dequantize(read_packed(name, expected, slice));
  auto it = where_.find(name);
  if (it == where_.end()) fail(dir_, ": missing tensor '", name, "'");
  const SafetensorsFile& f = *it->second.first;
  const SafetensorInfo& t = *it->second.second;
  if (t.shape != expected)
    fail(f.path(), ": tensor '", name, "' has shape ", shape_str(t.shape),
         " but config.json implies ", shape_str(expected));
  if (t.dtype == DType::F8_E4M3 && !quant_)
    fail(f.path(), ": tensor '", name, "' has dtype F8_E4M3 but config.json has no "
         "quantization_config saying how to scale it");
  if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
    fail(f.path(), ": tensor '", name, "' has dtype ", dtype_name(t.dtype),
         "; weights must be F32, F16 or BF16");

  const uint8_t* base = f.data(t);
  if (slice.dim < 0) {
    HostTensor h;
    h.dtype = t.dtype;
    h.shape = t.shape;
    h.data = base;
    return h;
  }
  return slice_of(name, base, t.dtype, t.shape, slice, /*may_alias=*/true);
}

}  // namespace iris
