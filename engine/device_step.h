// What a device backend may offer the model runner beyond Ops: graphs of decode steps and
// sampling on the device. The CPU backend offers neither (Backend::make_step_graphs and
// make_device_sampler return null there); the CUDA backend implements both (cuda/graph.h,
// cuda/sampling.h).
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "engine/core/tensor.h"

namespace iris {

struct SamplingParams;  // engine/sampler.h

// Records the work a callable enqueues on the backend's stream as one graph per batch-size
// bucket and replays it. The callable must only enqueue work on buffers at fixed addresses
// (no allocation, no synchronisation, no host copies); replay reruns exactly that work.
class StepGraphRunner {
 public:
  virtual ~StepGraphRunner() = default;
  // The smallest bucket >= n, or 0 when n is larger than every bucket.
  virtual int bucket_for(int n) const = 0;
  virtual bool captured(int bucket) const = 0;
  // Captures without running; throws (and captures nothing) when the work cannot be captured.
  virtual void capture(int bucket, const std::function<void()>& enqueue) = 0;
  // Enqueues the bucket's graph; returns without waiting.
  virtual void replay(int bucket) = 0;
};

// One row to sample on the device.
struct DeviceSampleRow {
  int logits_row = 0;                     // row of the logits tensor
  const SamplingParams* params = nullptr;
  uint64_t seed = 0;                      // the sequence's generator seed
  uint64_t offset = 0;                    // tokens generated so far: the draw's counter
  // Penalties (empty when the params set none): the distinct ids seen (prompt and output)
  // and how often each occurs in the output (0 = prompt only).
  std::vector<int32_t> seen_tokens;
  std::vector<int32_t> seen_counts;
  std::vector<int32_t> banned;            // ids that must not come out (EOS before min_tokens)
  // A structured-output constraint's allowed ids for this step (ceil(V / 32) words, bit t of
  // word t / 32, LSB first), on the host until sample() returns; null = unconstrained.
  const uint32_t* allowed = nullptr;
};

// Samples rows of F32 logits that are still on the device, as the host sampler does
// (penalties, logit_bias, banned ids, the constraint's mask, temperature, top-k/p, min-p);
// only the chosen ids, their log-probabilities under the unmodified logits and the asked-for
// top log-probabilities come back to the host.
class DeviceSampler {
 public:
  virtual ~DeviceSampler() = default;
  // logits: F32 [R, V] on the device; every rows[i].logits_row < R. Writes tokens[i],
  // logprobs[i] and top[i] (the params' top_logprobs best entries, best first; cleared when
  // none are asked) for rows[i]; waits for the result.
  virtual void sample(const Tensor& logits, const std::vector<DeviceSampleRow>& rows,
                      int32_t* tokens, float* logprobs,
                      std::vector<std::pair<int32_t, float>>* top) = 0;
};

}  // namespace iris
