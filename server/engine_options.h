// Command-line options shared by every subcommand that builds an Engine (generate, serve,
// bench): KV-cache paging, batching limits and prefix caching, plus model loading.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include <chrono>

#include <nlohmann/json.hpp>

#include "engine/backend.h"
#include "engine/chat_template/chat_template.h"
#include "engine/engine.h"
#include "engine/image_encoder.h"
#include "engine/loader/checkpoint.h"
#include "engine/models/model.h"

namespace iris::cli {

struct EngineOptions {
  EngineConfig engine;
  bool no_prefix_caching = false;
  std::string device = "cpu";
  int threads = 0;
  // How the CPU backend stores the dense matrices: "bf16" (default), "f16" or "fp32" (the
  // reference numerics the parity tests check).
  std::string cpu_weight_dtype = "fp32";
  // CPU: a quantized checkpoint's linear weights stay packed (FP8 / 4-bit codes + scales,
  // dequantized a tile at a time in the GEMM) unless this asks for dequantization at load.
  bool dequantize_weights = false;
  int tensor_parallel_size = 1;
  bool enable_expert_parallel = false;
  double gpu_memory_utilization = 0.9;
  double tp_timeout = 60.0;  // seconds a rank may lag in a step before the group fails
  // KV cache element type: "auto" (the compute dtype), "fp8" / "fp8_e4m3" (E4M3, one byte).
  std::string kv_cache_dtype = "auto";

  void add_to(CLI::App& app);
  EngineConfig config() const;
};

// A loaded model: one backend and one model shard per tensor-parallel rank.
struct LoadedModel {
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;
  std::vector<std::unique_ptr<Backend>> backends;
  std::vector<std::unique_ptr<Model>> models;
  std::vector<std::unique_ptr<Communicator>> comms;  // empty for one rank
  // Vision-language models: the vision tower + projector on rank 0's device, and the
  // preprocessing of the checkpoint's preprocessor_config.json. Null for text models.
  std::unique_ptr<ImageEncoder> image_encoder;
  std::chrono::milliseconds tp_timeout{60000};
  KvCacheDtype kv_cache_dtype = KvCacheDtype::kAuto;

  int world_size() const { return static_cast<int>(models.size()); }
  // The engine over every rank with the image encoder, if any (moves the communicators into
  // it; call once).
  std::unique_ptr<Engine> make_engine(const EngineConfig& config, const Tokenizer* tokenizer = nullptr);
  // One line per rank: device, weight bytes and (after make_engine) KV bytes and dtype.
  std::string memory_report(int num_kv_blocks, int block_size) const;
};

// The DType of a --cpu-weight-dtype value ("bf16", "f16", "fp32"); fails naming the option
// for anything else.
DType cpu_weight_dtype(const std::string& name);

// Loads `dir` on the device the options name; fails clearly for an unusable device. Before
// reading weights it plans each rank's weight and KV bytes (passed to `report` when given)
// and fails, naming the numbers, when they cannot fit in the memory available.
LoadedModel load(const std::string& dir, const EngineOptions& opts,
                 const std::function<void(const std::string&)>& report = {});

// The embedded default model (models/iris-tiny): $IRIS_DEFAULT_MODEL, else next to the
// binary in a release bundle (../share/iris/models/iris-tiny), else the source tree's copy.
std::string default_model_dir();

// `dir`/tokenizer_config.json, parsed with its key order kept; fails when unreadable.
nlohmann::ordered_json read_tokenizer_config(const std::string& dir);

// The chat template of `dir`, or null when it has no tokenizer_config.json or no template.
std::unique_ptr<ChatTemplate> load_chat_template(const std::string& dir);

}  // namespace iris::cli
