// ModelExecutor runs one step of the model on every tensor-parallel rank in lockstep. Rank 0
// runs on the calling thread (the engine's); ranks 1..N-1 each have a worker thread that
// receives the same step plan, builds the same inputs and runs the same forward, meeting the
// others in the all-reduces. Each rank computes the logits of its vocabulary shard; the
// executor assembles them into one host row per sampled sequence, so sampling stays on rank
// 0. A rank that throws, or that does not finish within the step timeout, fails the step:
// the communicators are aborted (peers waiting in a collective stop) and run() throws.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/model_runner.h"

namespace iris {

// One rank: its device and its shard of the model (not owned).
struct RankModel {
  Backend* backend = nullptr;
  Model* model = nullptr;
};

class ModelExecutor {
 public:
  // ranks[r] is rank r; comms (one per rank, or empty for a single rank) are wired into each
  // rank's backend and kept alive here.
  ModelExecutor(std::vector<RankModel> ranks, std::vector<std::unique_ptr<Communicator>> comms,
                std::chrono::milliseconds step_timeout = std::chrono::minutes(5));
  ~ModelExecutor();
  ModelExecutor(const ModelExecutor&) = delete;
  ModelExecutor& operator=(const ModelExecutor&) = delete;

  int world_size() const { return static_cast<int>(ranks_.size()); }
  const ModelConfig& config() const { return ranks_[0].model->config(); }
  // KV bytes of one block on the rank that needs the most, and free device memory on the
  // rank that has the least: the KV cache is sized from these.
  size_t kv_bytes_per_block(int block_size, KvCacheDtype kv_dtype = KvCacheDtype::kAuto) const;
  size_t free_memory_bytes() const;
  // Summed over ranks: a KV cache of num_blocks blocks, and the model's weights.
  size_t kv_cache_bytes(int num_blocks, int block_size,
                        KvCacheDtype kv_dtype = KvCacheDtype::kAuto) const;
  size_t weight_bytes() const;

  // Allocates num_blocks KV blocks (stored as kv_dtype says) on every rank and the per-step
  // buffers. Call once.
  void allocate(int num_blocks, int block_size, RunnerLimits limits,
                KvCacheDtype kv_dtype = KvCacheDtype::kAuto);
  const RunnerLimits& limits() const { return limits_; }

  // One step on all ranks; returns host logits [n_wanted, vocab], rows in chunk order. On one
  // rank, `host_rows` (a flag per wanted row) limits the copy to the host to the flagged
  // rows (the others are then sampled from device_logits()); several ranks copy every row.
  const std::vector<float>& run(const std::vector<SeqChunk>& chunks,
                                const std::vector<uint8_t>* host_rows = nullptr);
  // A sampler on rank 0's device when there is one rank and its backend has one (CUDA);
  // null otherwise. Call after allocate().
  std::unique_ptr<DeviceSampler> make_device_sampler();
  // One rank: the last run()'s logits on the device, [n_wanted (or more), vocab].
  const Tensor& device_logits() const;
  // Decode steps replayed from graphs, over all ranks.
  uint64_t graph_replays() const;

 private:
  void worker(int rank);
  // Aborts the communicators and records the first failure.
  void fail_group(const std::string& why);

  std::vector<RankModel> ranks_;
  std::vector<std::unique_ptr<Communicator>> comms_;
  std::chrono::milliseconds step_timeout_;
  RunnerLimits limits_;
  std::vector<KvCache> kv_;
  std::vector<std::unique_ptr<ModelRunner>> runners_;
  std::vector<float> logits_;

  // Lockstep hand-off to the workers.
  std::mutex mu_;
  std::condition_variable cv_;
  const std::vector<SeqChunk>* step_chunks_ = nullptr;
  uint64_t step_id_ = 0;
  int workers_done_ = 0;
  std::vector<uint8_t> worker_done_;   // per rank, for the current step
  std::vector<std::string> worker_error_;
  std::string failure_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
  // Test hook (IRIS_FAILPOINT=stall_rank:R:S): rank R sleeps instead of running step S.
  int stall_rank_ = -1;
  uint64_t stall_step_ = 0;
};

}  // namespace iris
