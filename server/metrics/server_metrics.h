// The metric set of an Iris server (docs/observability.md lists every metric): what the
// request layer records as requests finish, stream tokens or are refused, what the engine
// reports per step (as its StepObserver), and gauges read from Engine::stats() at scrape
// time. Names carry the `iris_` prefix followed by vLLM's name where vLLM exposes the same
// quantity; every series has a `model_name` label.
//
// Threads. Every label combination is created in the constructor, so the recording calls
// (on_request_finished, on_tokens, on_rejected, on_image_prepared, on_step) are lock-free
// atomic adds, safe on the engine thread and on any other. render() may take the engine's
// stats mutex (through the stats source) and a mutex of its own; call it from the thread
// that serves GET /metrics, never from the engine thread.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "engine/engine_stats.h"
#include "engine/stop_conditions.h"
#include "server/metrics/metrics.h"

namespace iris::metrics {

// The front door a request came through.
enum class Api { kGrpc, kHttp };
inline constexpr int kNumApis = 2;
const char* api_name(Api api);  // "grpc", "http"

// Why a request was refused before it reached the engine (or by the engine's admission).
enum class RejectReason {
  kInvalidArgument,  // a field failed validation (also the engine's admission errors)
  kUnauthenticated,  // missing or wrong API key
  kQueueFull,        // --max-queue reached
  kTooLarge,         // prompt, image or body over a limit
  kDraining,         // the server is shutting down
  kNotFound,         // unknown model or route
};
inline constexpr int kNumRejectReasons = 6;
const char* reject_reason_name(RejectReason reason);

inline constexpr int kNumFinishReasons = 4;  // iris::FinishReason: stop, length, abort, error

// One finished choice (the final EngineOutput of index i). A request with n choices is n
// records, as vLLM counts its n child requests.
struct RequestRecord {
  Api api = Api::kHttp;
  FinishReason finish_reason = FinishReason::kStop;
  int prompt_tokens = 0;      // EngineOutput::prompt_tokens
  int completion_tokens = 0;  // EngineOutput::completion_tokens
  // Arrival at the front door → Engine::submit: validation, chat template, tokenization,
  // image decode. Added to TTFT and e2e, which then run from the front door.
  double preprocess_seconds = 0;
  // EngineOutput::timing of the final output; empty for a request the engine refused at
  // admission (then only the counters and e2e = preprocess_seconds are recorded).
  std::optional<RequestTiming> timing;
};

struct ServerMetricsConfig {
  std::string model_name;       // the served model's name (the `model` field clients send)
  std::string version;          // iris_build_info{version}
  std::string device = "cpu";   // iris_build_info{device}: cpu, cuda
  int tensor_parallel_size = 1;  // iris_build_info{tp_size}
  // Read at every render() for the engine gauges (e.g. [&engine] { return engine.stats(); }).
  // Unset: those gauges stay 0.
  std::function<EngineStats()> engine_stats;
};

// Gives a choice's token outputs their gaps, for on_tokens(). One per choice, used on the
// thread that receives the choice's outputs.
class TokenClock {
 public:
  // Seconds since the previous call; empty on the first.
  std::optional<double> tick() {
    const auto now = std::chrono::steady_clock::now();
    std::optional<double> gap;
    if (last_) gap = std::chrono::duration<double>(now - *last_).count();
    last_ = now;
    return gap;
  }

 private:
  std::optional<std::chrono::steady_clock::time_point> last_;
};

class ServerMetrics final : public StepObserver {
 public:
  explicit ServerMetrics(ServerMetricsConfig config);
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // Once per finished choice, with its final EngineOutput (any thread).
  void on_request_finished(const RequestRecord& r);
  // For each output of a choice that carries tokens: `num_tokens` new tokens, arriving
  // `since_previous` seconds after the choice's previous tokens (empty for its first output,
  // whose latency is TTFT). Counts generated tokens and observes inter-token latency
  // (since_previous / num_tokens, once per token).
  void on_tokens(int num_tokens, std::optional<double> since_previous);
  // A request refused with `reason` on front door `api` (any thread).
  void on_rejected(RejectReason reason, Api api);
  // One image decoded and preprocessed off the engine thread (seconds for each half).
  void on_image_prepared(double decode_seconds, double preprocess_seconds);
  // StepObserver: pass this to Engine::set_step_observer (engine thread).
  void on_step(const StepTiming& step) noexcept override;

  // The exposition text (Registry::kContentType); reads the engine stats and
  // /proc/self/statm. Not on the engine thread.
  std::string render();

  Registry& registry() { return registry_; }

  // Resident set size of this process in bytes (0 where /proc is unavailable).
  static int64_t process_resident_memory_bytes();

 private:
  ServerMetricsConfig config_;
  Registry registry_;
  std::mutex render_mu_;

  // Engine gauges and mirrored counters (set in render()).
  Gauge* num_requests_running_;
  Gauge* num_requests_waiting_;
  Gauge* kv_cache_usage_perc_;
  Counter* prefix_cache_queries_;
  Counter* prefix_cache_hits_;
  Counter* num_preemptions_;
  Counter* encoder_cache_queries_;
  Counter* encoder_cache_hits_;
  Counter* images_encoded_;
  Gauge* resident_memory_bytes_;
  Gauge* kv_cache_bytes_;
  Gauge* weight_bytes_;
  Counter* engine_steps_;

  // Recorded by the request layer.
  Counter* prompt_tokens_;
  Counter* generation_tokens_;
  Counter* request_success_[kNumFinishReasons][kNumApis];
  Counter* request_rejected_[kNumRejectReasons][kNumApis];
  Histogram* ttft_;
  Histogram* itl_;
  Histogram* e2e_;
  Histogram* queue_time_;
  Histogram* preprocess_time_;
  Histogram* prefill_time_;
  Histogram* decode_time_;
  Histogram* inference_time_;
  Histogram* request_prompt_tokens_;
  Histogram* request_generation_tokens_;
  Histogram* image_decode_;
  Histogram* image_preprocess_;

  // Recorded per engine step.
  Histogram* iteration_tokens_;
  Histogram* step_schedule_;
  Histogram* step_forward_;
  Histogram* step_sample_;
  Histogram* step_detokenize_;
  Histogram* image_encode_;
};

}  // namespace iris::metrics
