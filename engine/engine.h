// The batching engine: one thread owns a Scheduler and drives the loop
//   schedule() → ModelRunner::run (one flat batch) → sample → stop checks → update()
// Requests arrive from any thread through submit() and leave through per-request output
// callbacks. `n > 1` becomes n scheduler sequences that share the prompt through the
// prefix cache. Abort (any thread) frees every block of the request within one step.
//
// Media (vision-language models). A request's images are media spans of its prompt, each with
// a content hash and either ready embeddings or a MediaEncoder input. The scheduler hands out
// a per-step encoder budget and accounts for the encoder cache (scheduler/
// encoder_cache_manager.h); in each step the engine drops the entries the scheduler evicted,
// encodes the listed inputs (one batch), and points every chunk's overlapping spans at the
// cached embeddings. A repeated image (same decoded pixels) is encoded once while it stays
// cached.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/background_task.h"
#include "engine/engine_stats.h"
#include "engine/media_encoder.h"
#include "engine/model_executor.h"
#include "engine/sampler.h"
#include "engine/stop_conditions.h"
#include "engine/tokenizer/tokenizer.h"
#include "scheduler/scheduler.h"

namespace iris {

struct EngineConfig {
  int block_size = 16;
  int num_kv_blocks = 0;  // 0 = size from free memory (kv_memory_fraction of it)
  double kv_memory_fraction = 0.3;
  // With num_kv_blocks = 0: bytes of KV cache per rank (--kv-cache-memory-bytes), instead of
  // a fraction of free memory; 0 = use kv_memory_fraction.
  int64_t kv_cache_memory_bytes = 0;
  // Element type of the KV cache (--kv-cache-dtype): auto = the compute dtype, or FP8 E4M3
  // (one byte per element: twice the blocks of bf16 in the same memory).
  KvCacheDtype kv_cache_dtype = KvCacheDtype::kAuto;
  int max_num_seqs = 64;
  int max_num_batched_tokens = 512;
  int max_model_len = 0;  // 0 = the model's max_position_embeddings
  bool enable_prefix_caching = true;
  bool priority_policy = false;
  // Vision-language models: media tokens encoded per step at most, and the encoder cache's
  // capacity in tokens. 0 = max(max_num_batched_tokens, tokens per image), and for the
  // cache at least 8 images (Qwen2.5-VL, whose images vary in size: max_num_batched_tokens,
  // and 8 times that for the cache).
  int max_num_encoder_tokens = 0;
  int encoder_cache_tokens = 0;
  // Never capture decode steps as graphs (graphs exist only on backends that offer them).
  bool enforce_eager = false;
  // Sample every sequence on the host even where the backend can sample on the device.
  bool host_sampling = false;
};

struct EngineRequest {
  std::string id;
  std::vector<int32_t> prompt;
  SamplingParams params;
  int n = 1;
  int priority = 0;
  // Image (media) spans of the prompt: sorted, non-overlapping; each with its embeddings or
  // an encoder input (see MediaEmbeds).
  std::vector<MediaEmbeds> media{};
};

// One message on a request's output stream. The last one for choice `index` carries
// finish_reason; a request that failed admission gets one message with `error` set.
struct EngineOutput {
  std::string id;
  int index = 0;
  std::vector<int32_t> token_ids;  // new tokens of this choice
  std::vector<float> logprobs;     // one per token
  // Per token, the request's top_logprobs most likely alternatives (empty when not asked).
  std::vector<std::vector<std::pair<int32_t, float>>> top_logprobs;
  std::string text;                // new complete UTF-8 text (with a tokenizer)
  std::optional<FinishReason> finish_reason;
  std::string error;
  bool engine_failed = false;  // `error` is the engine's own failure, not the request's fault
  int prompt_tokens = 0;
  int completion_tokens = 0;
  // On the final output of a choice that was admitted: its time in the engine.
  std::optional<RequestTiming> timing;
};

using OutputCallback = std::function<void(const EngineOutput&)>;

class Engine {
 public:
  // With a tokenizer, outputs carry text and requests may use stop strings. With a media
  // encoder (not owned; used on the engine thread), requests may carry encoder inputs.
  Engine(Backend& backend, Model& model, const EngineConfig& config,
         const Tokenizer* tokenizer = nullptr, MediaEncoder* media_encoder = nullptr);
  // Tensor-parallel: the executor drives every rank.
  Engine(std::unique_ptr<ModelExecutor> executor, const EngineConfig& config,
         const Tokenizer* tokenizer = nullptr, MediaEncoder* media_encoder = nullptr);
  ~Engine();

  // Thread-safe. Outputs for this request go to `on_output` (called on the engine thread).
  void submit(EngineRequest request, OutputCallback on_output);
  // Thread-safe; effective at the start of the next step.
  void abort(const std::string& id);
  // One engine step on the calling thread. False when there was nothing to do.
  bool step();
  // Runs steps on a background thread until stop(). An exception out of a step is fatal:
  // every request in flight ends with an error (engine_failed), later submissions are refused
  // at once, and `on_failure` (if set) is called on the engine thread with the message.
  void start(std::function<void(const std::string&)> on_failure = {});
  // Sequences waiting for a slot, including submissions not yet seen by the scheduler.
  int num_queued() const;
  // The failure message once the engine loop has failed; empty while healthy.
  std::string failure() const;
  void stop();
  bool has_work() const;
  EngineStats stats() const;
  // Called on the engine thread after each step that ran the model (not owned; null = none).
  // Set it before start(), or between step() calls.
  void set_step_observer(StepObserver* observer) { step_observer_ = observer; }
  // Scheduler invariants ("" when consistent); call between steps.
  std::string check_invariants() const;
  const sched::SchedulerConfig& scheduler_config() const { return sched_config_; }
  int64_t max_model_len() const { return sched_config_.max_model_len; }

 private:
  struct Sequence;
  struct Pending;

  void admit_pending();
  // Makes num_queued() see the scheduler's current waiting count.
  void publish_waiting();
  // Publishes the scheduler's counters, adds this step's token count and phase times, and
  // tells the step observer about a step that ran the model.
  void refresh_stats(const StepTiming& step);
  // Follows the step's encoder-cache decisions: drop, then encode (engine thread).
  void run_encoder(const sched::SchedulerOutput& out);
  void finish_sequence(Sequence& s, FinishReason reason, const std::string& error = {});
  // Ends every request with `why` after a fatal error (engine thread).
  void fail_all(const std::string& why);

  void init(const EngineConfig& config);

  std::unique_ptr<ModelExecutor> executor_;
  const ModelConfig& model_config_;
  const Tokenizer* tokenizer_;
  MediaEncoder* media_encoder_;
  // Content hash -> embeddings, fp32 [tokens, hidden]; mirrors the scheduler's account.
  std::unordered_map<uint64_t, std::shared_ptr<const std::vector<float>>> encoder_cache_;
  sched::SchedulerConfig sched_config_;
  std::unique_ptr<sched::Scheduler> scheduler_;

  std::unordered_map<std::string, std::unique_ptr<Sequence>> sequences_;  // by scheduler id
  std::unordered_map<std::string, std::vector<std::string>> children_;    // request id → seq ids
  uint64_t arrival_ = 0;
  // Computes the step's structured-output masks while the forward pass runs; made on the first
  // step that samples a constrained sequence. Declared after sequences_: destroyed first.
  std::unique_ptr<BackgroundTask> mask_task_;
  // Sampling on the device (one rank on a backend that offers it; null otherwise), and the
  // step's scratch: which sampled rows go to the host sampler (all or none), the device's rows.
  std::unique_ptr<DeviceSampler> device_sampler_;
  std::vector<uint8_t> host_rows_;
  std::vector<DeviceSampleRow> device_rows_;
  std::vector<size_t> device_index_;
  uint64_t device_sampled_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Pending> incoming_;
  std::vector<std::string> aborts_;
  EngineStats stats_;
  int sched_waiting_ = 0;    // scheduler's waiting count at the last refresh
  std::string failure_;      // set once, under mu_
  std::thread thread_;
  std::atomic<bool> stop_{false};
  StepObserver* step_observer_ = nullptr;
};

}  // namespace iris
