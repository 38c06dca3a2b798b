// Shared engine options and model loading for the CLI subcommands.
#include "server/engine_options.h"

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

}  // namespace iris::cli
