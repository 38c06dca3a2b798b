// What the engine measures about itself, for metrics: cumulative counters and gauges
// (EngineStats, read with Engine::stats() from any thread), the timings of one request's
// life in the engine (RequestTiming, on the final EngineOutput of each choice), and the
// phases of one step (StepTiming, handed to an optional StepObserver on the engine thread).
// Std and scheduler headers only, so a metrics library can include it without the engine.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>

#include "scheduler/encoder_cache_manager.h"

namespace iris {

struct EngineStats {
  int num_running = 0;
  int num_waiting = 0;
  int num_total_blocks = 0;
  int num_free_blocks = 0;
  double prefix_cache_hit_rate = 0.0;
  int64_t prefix_cache_query_tokens = 0;  // prompt tokens looked up in the prefix cache
  int64_t num_cached_tokens_hit = 0;      // of those, found cached
  int64_t num_preemptions = 0;
  uint64_t num_steps = 0;
  int64_t num_computed_tokens = 0;  // tokens run through the model, all requests
  // Encoder cache (vision-language models): queries, hits, items encoded, evictions, tokens
  // held and capacity, as the scheduler accounts for them.
  sched::EncoderCacheStats encoder_cache;
  // Cumulative seconds per phase of the step (encode: the media encoder, inside none of the
  // others; detokenize: detokenization, stop checks and output callbacks, after sampling).
  double schedule_seconds = 0, prepare_forward_seconds = 0, sample_seconds = 0;
  double encode_seconds = 0, detokenize_seconds = 0;
  // Memory held for the life of the engine, summed over tensor-parallel ranks: the KV cache
  // and the language model's weights.
  int64_t kv_cache_bytes = 0;
  int64_t weight_bytes = 0;
  int tensor_parallel_size = 1;
  // Decode steps replayed from captured graphs, and tokens sampled on the device (both 0 on
  // the CPU backend, and with --enforce-eager / --host-sampling).
  uint64_t num_graph_replays = 0;
  uint64_t num_device_sampled = 0;
};

// One choice's life in the engine, from Engine::submit (arrival) to its final output. The
// three phases partition the whole: queue + prefill + decode == e2e.
//   queue:   arrival → the start of the first step that scheduled it (or → finish if never)
//   prefill: → the step that produced its first token (or → finish if none)
//   decode:  first token → finish
// ttft is arrival → first token (queue + prefill). A preempted request keeps its first
// scheduling and first token times; recomputation counts as decode.
struct RequestTiming {
  double queue_seconds = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  double ttft_seconds = 0;  // 0 when !first_token
  double e2e_seconds = 0;
  bool scheduled = false;    // ran in at least one step
  bool first_token = false;  // produced at least one token
};

// Takes a choice's timestamps on the engine thread and turns them into a RequestTiming.
class RequestClock {
 public:
  using clock = std::chrono::steady_clock;
  explicit RequestClock(clock::time_point arrival = clock::now()) : arrival_(arrival) {}
  void scheduled(clock::time_point t) {
    if (!scheduled_) scheduled_ = t;
  }
  void token(clock::time_point t) {
    if (!first_token_) first_token_ = t;
  }
  RequestTiming finish(clock::time_point end) const {
    auto secs = [](clock::time_point a, clock::time_point b) {
      return b > a ? std::chrono::duration<double>(b - a).count() : 0.0;
    };
    // Clamp so the phases stay ordered whatever the caller passed.
    const clock::time_point s = scheduled_ ? std::min(*scheduled_, end) : end;
    const clock::time_point f = first_token_ ? std::clamp(*first_token_, s, end) : end;
    RequestTiming t;
    t.scheduled = scheduled_.has_value();
    t.first_token = first_token_.has_value();
    t.queue_seconds = secs(arrival_, s);
    t.prefill_seconds = secs(s, f);
    t.decode_seconds = secs(f, end);
    t.e2e_seconds = secs(arrival_, end);
    if (t.first_token) t.ttft_seconds = secs(arrival_, f);
    return t;
  }

 private:
  clock::time_point arrival_;
  std::optional<clock::time_point> scheduled_, first_token_;
};

// One engine step that ran the model.
struct StepTiming {
  double schedule_seconds = 0;    // Scheduler::schedule
  double encode_seconds = 0;      // the media encoder (0 without media to encode)
  double forward_seconds = 0;     // inputs, forward on every rank, logits to the host
  double sample_seconds = 0;      // sampling and Scheduler::update
  double detokenize_seconds = 0;  // detokenization, stop checks and output callbacks
  int num_tokens = 0;             // tokens fed to the model (prefill chunks + decodes)
  int num_seqs = 0;               // sequences scheduled
  int num_encoder_inputs = 0;     // media items encoded or stored in the encoder cache
};

// Called on the engine thread after every step that ran the model. It must be cheap and
// must not block (atomic adds): it sits on the step's critical path.
class StepObserver {
 public:
  virtual ~StepObserver() = default;
  virtual void on_step(const StepTiming& step) noexcept = 0;
};

}  // namespace iris
