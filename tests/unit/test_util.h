// Helpers for tests that need checkpoints on disk: a safetensors writer and a random
// Llama-style checkpoint generator (no reference involved: structure only).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace iris::test {

struct RawTensor {
  std::string dtype = "F32";
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// A fresh empty directory under the system temp dir.
std::string temp_dir(const std::string& name);
void write_file(const std::string& path, const std::string& content);
std::string safetensors_bytes(const std::map<std::string, RawTensor>& tensors);
RawTensor random_f32(std::vector<int64_t> shape, uint32_t seed, float scale = 0.2f);
// config.json for a small Llama; `overrides` are merged in.
nlohmann::json small_llama_config(const nlohmann::json& overrides = {});
// Random weights matching `config` (any supported architecture).
std::map<std::string, RawTensor> random_weights(const nlohmann::json& config, uint32_t seed);
// Writes config.json + model.safetensors into a new temp dir and returns it.
std::string write_checkpoint(const std::string& name, const nlohmann::json& config,
                             const std::map<std::string, RawTensor>& weights);

}  // namespace iris::test
