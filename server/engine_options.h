// Command-line options shared by every subcommand that builds an Engine (generate, serve,
// bench): KV-cache paging, batching limits and prefix caching, plus model loading.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "engine/backend.h"
#include "engine/engine.h"
#include "engine/loader/checkpoint.h"
#include "engine/models/model.h"

namespace iris::cli {

struct EngineOptions {
  EngineConfig engine;
  bool no_prefix_caching = false;
  std::string device = "cpu";
  int threads = 0;

  void add_to(CLI::App& app);
  EngineConfig config() const;
};

// A loaded model on its backend.
struct LoadedModel {
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
};

// Loads `dir` on the device the options name; fails clearly for an unusable device.
LoadedModel load(const std::string& dir, const EngineOptions& opts);

}  // namespace iris::cli
