// Shared engine options and model loading for the CLI subcommands.
#include "server/engine_options.h"

#include <algorithm>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "engine/core/check.h"
#include "engine/device_registry.h"
#include "engine/loader/quantization.h"
#include "engine/memory_plan.h"

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
  app.add_option("--max-num-encoder-tokens", engine.max_num_encoder_tokens,
                 "vision models: image tokens encoded per step at most (0 = max of "
                 "--max-num-batched-tokens and one image)");
  app.add_option("--encoder-cache-tokens", engine.encoder_cache_tokens,
                 "vision models: image embeddings kept for reuse, in tokens (0 = at least 8 images)");
  app.add_option("--device", device, "cpu or cuda")->capture_default_str();
  app.add_option("--gpu-memory-utilization", gpu_memory_utilization,
                 "fraction of each GPU's memory Iris may hold (weights + KV cache)")
      ->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0 = all cores), shared by the ranks");
  app.add_option("--cpu-weight-dtype", cpu_weight_dtype,
                 "CPU: dtype the weight matrices are stored in: bf16 or f16 (half the memory, "
                 "faster decode; products and sums stay fp32) or fp32 (reference numerics)")
      ->check(CLI::IsMember({"bf16", "f16", "fp32"}))
      ->capture_default_str();
  app.add_flag("--dequantize-weights", dequantize_weights,
               "CPU, quantized checkpoints: dequantize the linear weights to --cpu-weight-dtype at "
               "load instead of keeping them packed (FP8: 1 byte, 4-bit: half a byte per weight "
               "plus scales) with exact on-the-fly dequantization; the results are the same");
  app.add_option("--tensor-parallel-size,--tp", tensor_parallel_size,
                 "ranks the model is split across (CPU: threads; CUDA: GPUs)")
      ->capture_default_str();
  app.add_flag("--enforce-eager", engine.enforce_eager,
               "never capture decode steps as CUDA graphs (CUDA only; the CPU backend is always eager)");
  app.add_flag("--host-sampling", engine.host_sampling,
               "sample every token on the host even where the GPU can sample (CUDA only)");
  app.add_flag("--enable-expert-parallel", enable_expert_parallel,
               "mixture-of-experts models: place whole experts on the tensor-parallel ranks "
               "instead of sharding every expert");
  app.add_option("--kv-cache-dtype", kv_cache_dtype,
                 "KV cache element type: auto (the compute dtype) or fp8 / fp8_e4m3 (OCP FP8 "
                 "E4M3, one byte per element: twice the blocks of bf16 in the same memory; "
                 "per-layer k_scale / v_scale from the checkpoint, else 1)")
      ->capture_default_str();
  app.add_option("--kv-cache-memory-bytes", engine.kv_cache_memory_bytes,
                 "KV cache bytes per rank when --num-kv-blocks is 0 (0 = a fraction of free memory)");
  app.add_option("--tp-timeout", tp_timeout,
                 "seconds a rank may lag behind the others in a step before the group fails")
      ->capture_default_str();
}

EngineConfig EngineOptions::config() const {
  EngineConfig c = engine;
  c.kv_cache_dtype = parse_kv_cache_dtype(kv_cache_dtype);
  // A GPU backend reports only the memory --gpu-memory-utilization leaves after the
  // weights; keep a little of that for activations and GEMM workspaces.
  if (device == "cuda") c.kv_memory_fraction = 0.9;
  return c;
}

namespace {

// Before any weight is read: the weight and KV bytes each rank will hold (weights in the
// backend's compute dtype, whatever the checkpoint stores) against the memory the device
// offers; refuses a configuration whose weights plus the smallest KV cache the engine can
// run with (--num-kv-blocks, else 2 blocks) cannot fit.
void check_memory(const LoadedModel& m, const EngineOptions& opts,
                  const std::function<void(const std::string&)>& report) {
  const int world = static_cast<int>(m.backends.size());
  const DType compute = m.backends[0]->compute_dtype();
  const DType dtype = kv_storage_dtype(m.kv_cache_dtype, compute);  // of the KV cache
  const int block = opts.engine.block_size > 0 ? opts.engine.block_size : 16;
  const DType wdtype = m.backends[0]->weight_dtype();
  const MemoryPlan plan = plan_memory(m.config, compute, world, block, wdtype, dtype,
                                      opts.enable_expert_parallel);
  const int64_t max_len = opts.engine.max_model_len > 0
                              ? std::min<int64_t>(opts.engine.max_model_len, m.config.max_position_embeddings)
                              : m.config.max_position_embeddings;
  const int64_t full_blocks = static_cast<int64_t>(opts.engine.max_num_seqs) * ((max_len + block - 1) / block) + 1;
  const int64_t min_blocks = opts.engine.num_kv_blocks > 0 ? opts.engine.num_kv_blocks : 2;
  // CPU ranks share the host's memory; each device rank has its own.
  const bool shared = m.backends[0]->kind() == DeviceKind::kCpu;
  std::string lines = "memory plan (" + std::string(dtype_name(wdtype)) + " weight matrices, " +
                      std::string(dtype_name(dtype)) + " KV, TP " +
                      std::to_string(world) + (opts.enable_expert_parallel && m.config.moe ? ", expert parallel" : "") + (m.checkpoint->quantization()
                                                   ? ", checkpoint " + m.checkpoint->quantization()->describe()
                                                   : std::string()) + "):";
  // Packed quantized matrices take about 1 (FP8) or 0.5-0.6 (4-bit) bytes a weight plus their
  // scales; the plan counts them at the dequantized size, so it is an upper bound there.
  if (m.checkpoint->quantization() && m.backends[0]->keeps_weights_packed())
    lines += "\n  (quantized matrices kept packed: the weight figures below count them dequantized, "
             "an upper bound)";
  size_t shared_need = 0;
  std::string refusal;
  for (int r = 0; r < world; ++r) {
    const RankMemory& rm = plan.ranks[r];
    const double kv_min = static_cast<double>(rm.kv_bytes_per_block) * static_cast<double>(min_blocks);
    const double kv_full = static_cast<double>(rm.kv_bytes_per_block) * static_cast<double>(full_blocks);
    lines += "\n  rank " + std::to_string(r) + ": weights " + format_bytes(rm.weight_bytes) +
             ", KV " + format_bytes(rm.kv_bytes_per_block) + " per block of " + std::to_string(block) +
             " tokens (" + format_bytes(kv_full) + " for " + std::to_string(opts.engine.max_num_seqs) +
             " sequences of " + std::to_string(max_len) + " tokens)";
    const size_t need = rm.weight_bytes + static_cast<size_t>(kv_min);
    if (shared) {
      shared_need += need;
    } else {
      const size_t avail = m.backends[r]->free_memory_bytes();
      lines += ", " + format_bytes(static_cast<double>(avail)) + " available";
      if (need > avail && refusal.empty())
        refusal = "rank " + std::to_string(r) + " on " + m.backends[r]->name() + " needs " +
                  format_bytes(static_cast<double>(rm.weight_bytes)) + " of weights + " +
                  format_bytes(kv_min) + " of KV cache (" + std::to_string(min_blocks) +
                  " blocks) but has " + format_bytes(static_cast<double>(avail)) + " available";
    }
  }
  if (shared) {
    const size_t avail = m.backends[0]->free_memory_bytes();
    lines += "\n  host: " + format_bytes(static_cast<double>(avail)) + " available";
    if (shared_need > avail)
      refusal = std::to_string(world) + " CPU rank(s) need " +
                format_bytes(static_cast<double>(plan.total_weight_bytes())) + " of " +
                std::string(dtype_name(wdtype)) + " weights + " +
                format_bytes(static_cast<double>(shared_need - plan.total_weight_bytes())) +
                " of KV cache (" + std::to_string(min_blocks) + " blocks per rank) but the host has " +
                format_bytes(static_cast<double>(avail)) + " available";
  }
  if (report) report(lines);
  if (!refusal.empty()) fail("the model does not fit: ", refusal, " (", m.checkpoint->dir(), ")");
}

}  // namespace

DType cpu_weight_dtype(const std::string& name) {
  if (name == "fp32") return DType::F32;
  if (name == "bf16") return DType::BF16;
  if (name == "f16") return DType::F16;
  fail("--cpu-weight-dtype must be bf16, f16 or fp32, got '", name, "'");
}

LoadedModel load(const std::string& dir, const EngineOptions& opts,
                 const std::function<void(const std::string&)>& report) {
  const bool device = opts.device != "cpu";  // a registered device backend, e.g. cuda
  if (device && !has_device_backend(opts.device))
    fail("--device ", opts.device, ": this build has no such backend (built without nvcc?); use --device cpu");
  const int world = opts.tensor_parallel_size;
  IRIS_CHECK(world >= 1 && world <= 64) << "--tensor-parallel-size must be in [1, 64], got " << world;
  IRIS_CHECK(opts.tp_timeout > 0) << "--tp-timeout must be positive";
  LoadedModel m;
  m.config = ModelConfig::from_dir(dir);
  m.checkpoint = Checkpoint::open(dir);
  m.tp_timeout = std::chrono::milliseconds(static_cast<int64_t>(opts.tp_timeout * 1e3));
  m.kv_cache_dtype = parse_kv_cache_dtype(opts.kv_cache_dtype);
  // CPU ranks split the cores between them.
  const int cores = opts.threads > 0 ? opts.threads
                                     : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int per_rank = std::max(1, cores / world);
  for (int r = 0; r < world; ++r) {
    if (device) {
      m.backends.push_back(make_device_backend(opts.device, DeviceOptions{r, opts.gpu_memory_utilization}));
    } else {
      m.backends.push_back(make_cpu_backend(per_rank, cpu_weight_dtype(opts.cpu_weight_dtype),
                                            !opts.dequantize_weights));
    }
  }
  check_memory(m, opts, report);
  for (int r = 0; r < world; ++r)
    m.models.push_back(load_model(*m.checkpoint, m.config, *m.backends[r],
                                  ParallelConfig{r, world, opts.enable_expert_parallel}));
  m.image_encoder = ImageEncoder::load(dir, *m.checkpoint, m.config, *m.backends[0]);
  if (world > 1) {
    if (device) {
      std::vector<int> devices;
      std::vector<void*> streams;
      for (int r = 0; r < world; ++r) {
        devices.push_back(r);
        streams.push_back(m.backends[r]->native_stream());
      }
      m.comms = make_device_communicators(opts.device, devices, streams, m.tp_timeout);
    } else {
      m.comms = make_cpu_communicators(world, m.tp_timeout);
    }
  }
  return m;
}

std::unique_ptr<Engine> LoadedModel::make_engine(const EngineConfig& config, const Tokenizer* tokenizer) {
  std::vector<RankModel> ranks;
  for (size_t r = 0; r < models.size(); ++r) ranks.push_back({backends[r].get(), models[r].get()});
  auto executor = std::make_unique<ModelExecutor>(std::move(ranks), std::move(comms), 2 * tp_timeout);
  EngineConfig ec = config;
  // Qwen2.5-VL images vary in size: by default a step may encode (and the cache hold) the
  // largest image the processor's max_pixels allows.
  if (image_encoder && image_encoder->qwen_processor() && ec.max_num_encoder_tokens == 0)
    ec.max_num_encoder_tokens = std::max(ec.max_num_batched_tokens, image_encoder->max_tokens_per_image());
  return std::make_unique<Engine>(std::move(executor), ec, tokenizer, image_encoder.get());
}

std::string LoadedModel::memory_report(int num_kv_blocks, int block_size) const {
  std::string out;
  for (size_t r = 0; r < models.size(); ++r) {
    const AttentionShape s = models[r]->attention_shape();
    const double kv =
        static_cast<double>(kv_bytes_per_block(*backends[r], *models[r], block_size, kv_cache_dtype)) *
        num_kv_blocks;
    const std::string kv_dtype(dtype_name(kv_storage_dtype(kv_cache_dtype, backends[r]->compute_dtype())));
    char line[320];
    std::snprintf(line, sizeof line,
                  "%srank %zu/%zu on %s: weights %.1f MiB, KV cache %.1f MiB in %s (%d blocks, %d heads, %d KV heads)",
                  r ? "; " : "", r, models.size(), backends[r]->name().c_str(),
                  models[r]->weight_bytes() / 1048576.0, kv / 1048576.0, kv_dtype.c_str(), num_kv_blocks,
                  s.num_q_heads, s.num_kv_heads);
    out += line;
  }
  return out;
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
  namespace fs = std::filesystem;
  if (!fs::exists(fs::path(dir) / "tokenizer_config.json")) return nullptr;
  nlohmann::json cfg(read_tokenizer_config(dir));
  if (!cfg.contains("chat_template")) {
    // Vision-language checkpoints often keep the template beside the processor instead:
    // chat_template.jinja, or chat_template.json {"chat_template": "..."}.
    const fs::path jinja = fs::path(dir) / "chat_template.jinja";
    const fs::path json = fs::path(dir) / "chat_template.json";
    if (fs::exists(jinja)) {
      std::ifstream in(jinja, std::ios::binary);
      cfg["chat_template"] = std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } else if (fs::exists(json)) {
      std::ifstream in(json);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        fail(json.string(), ": not valid JSON: ", e.what());
      }
      if (!j.is_object() || !j.contains("chat_template") || !j["chat_template"].is_string())
        fail(json.string(), ": expected {\"chat_template\": \"...\"}");
      cfg["chat_template"] = j["chat_template"];
    } else {
      return nullptr;
    }
  }
  return ChatTemplate::from_tokenizer_config(cfg);
}

}  // namespace iris::cli
