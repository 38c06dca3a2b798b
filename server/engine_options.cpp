// Shared engine options and model loading for the CLI subcommands.
#include "server/engine_options.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "engine/core/check.h"

namespace iris::cli {

void EngineOptions::add_to(CLI::App& app) {
  app.add_option("--block-size", engine.block_size, "tokens per KV block")->capture_default_str();
  app.add_option("--num-kv-blocks", engine.num_kv_blocks,
                 "KV blocks to allocate (0 = size from free memory)")->capture_default_str();
  app.add_option("--max-num-seqs", engine.max_num_seqs, "sequences per step at most")
      ->capture_default_str();
  app.add_option("--max-num-batched-tokens", engine.max_num_batched_tokens,
                 "tokens per step at most")->capture_default_str();
  app.add_option("--max-model-len", engine.max_model_len,
                 "longest context (0 = the model's max_position_embeddings)");
  app.add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", engine.enable_prefix_caching,
               "reuse KV blocks of identical prefixes (default on)");
  app.add_option("--device", device, "cpu or cuda")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all cores)");
}

EngineConfig EngineOptions::config() const { return engine; }

LoadedModel load(const std::string& dir, const EngineOptions& opts) {
  if (opts.device != "cpu") {
    fail("--device ", opts.device, ": this build has no CUDA backend; use --device cpu");
  }
  LoadedModel m;
  m.config = ModelConfig::from_dir(dir);
  m.checkpoint = Checkpoint::open(dir);
  m.backend = make_cpu_backend(opts.threads);
  m.model = load_model(*m.checkpoint, m.config, *m.backend);
  return m;
}

std::string default_model_dir() {
  namespace fs = std::filesystem;
  if (const char* env = std::getenv("IRIS_DEFAULT_MODEL"); env && *env) return env;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path bundled = exe.parent_path() / ".." / "share" / "iris" / "models" / "iris-tiny";
    if (fs::exists(bundled / "config.json")) return bundled.lexically_normal().string();
  }
#ifdef IRIS_SOURCE_DIR
  const fs::path source = fs::path(IRIS_SOURCE_DIR) / "models" / "iris-tiny";
  if (fs::exists(source / "config.json")) return source.string();
#endif
  fail("no --model given and the embedded default model was not found (set IRIS_DEFAULT_MODEL)");
}

nlohmann::ordered_json read_tokenizer_config(const std::string& dir) {
  const auto path = std::filesystem::path(dir) / "tokenizer_config.json";
  std::ifstream in(path);
  if (!in) fail(path.string(), ": cannot open");
  try {
    return nlohmann::ordered_json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(path.string(), ": not valid JSON: ", e.what());
  }
}

std::unique_ptr<ChatTemplate> load_chat_template(const std::string& dir) {
  if (!std::filesystem::exists(std::filesystem::path(dir) / "tokenizer_config.json")) return nullptr;
  const nlohmann::ordered_json cfg = read_tokenizer_config(dir);
  if (!cfg.contains("chat_template")) return nullptr;
  return ChatTemplate::from_tokenizer_config(nlohmann::json(cfg));
}

}  // namespace iris::cli
