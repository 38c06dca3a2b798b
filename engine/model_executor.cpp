// Lockstep execution of a step on every tensor-parallel rank (see model_executor.h).
#include "engine/model_executor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "engine/core/check.h"
#include "engine/core/failpoint.h"

namespace iris {

ModelExecutor::ModelExecutor(std::vector<RankModel> ranks,
                             std::vector<std::unique_ptr<Communicator>> comms,
                             std::chrono::milliseconds step_timeout)
    : ranks_(std::move(ranks)), comms_(std::move(comms)), step_timeout_(step_timeout) {
  IRIS_CHECK(!ranks_.empty()) << "no ranks";
  const int world = world_size();
  IRIS_CHECK(world == 1 || static_cast<int>(comms_.size()) == world)
      << world << " ranks but " << comms_.size() << " communicators";
  for (int r = 0; r < world; ++r) {
    IRIS_CHECK(ranks_[r].backend && ranks_[r].model) << "rank " << r << " is incomplete";
    if (!comms_.empty()) ranks_[r].backend->set_communicator(comms_[r].get());
  }
  // The shards must tile the vocabulary in rank order.
  int64_t next = 0;
  for (int r = 0; r < world; ++r) {
    const auto [first, count] = ranks_[r].model->vocab_shard();
    IRIS_CHECK(first == next) << "rank " << r << " vocabulary shard starts at " << first
                              << ", expected " << next;
    next += count;
  }
  IRIS_CHECK(next == config().vocab_size) << "vocabulary shards cover " << next << " of "
                                          << config().vocab_size << " rows";
  // stall_rank:R:S — a test of the fail-fast path.
  if (const auto fp = failpoint_args("stall_rank"); fp && fp->size() == 2) {
    const long long r = (*fp)[0], s = (*fp)[1];
    if (r > 0 && r < world && s >= 0) {
      stall_rank_ = static_cast<int>(r);
      stall_step_ = static_cast<unsigned long long>(s);
      spdlog::warn("IRIS_FAILPOINT: rank {} will stall at step {}", r, s);
    }
  }
  worker_done_.assign(world, 0);
  worker_error_.assign(world, "");
}

ModelExecutor::~ModelExecutor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (size_t i = 0; i < workers_.size(); ++i) {
    // A stalled rank never comes back; after a failure it is left behind (the process is
    // about to exit) rather than waited for.
    const bool failed = !failure_.empty();
    if (failed) workers_[i].detach();
    else workers_[i].join();
  }
}

size_t ModelExecutor::kv_bytes_per_block(int block_size, KvCacheDtype kv_dtype) const {
  size_t most = 0;
  for (const RankModel& r : ranks_)
    most = std::max(most, iris::kv_bytes_per_block(*r.backend, *r.model, block_size, kv_dtype));
  return most;
}

size_t ModelExecutor::kv_cache_bytes(int num_blocks, int block_size, KvCacheDtype kv_dtype) const {
  size_t total = 0;
  for (const RankModel& r : ranks_)
    total += static_cast<size_t>(num_blocks) *
             iris::kv_bytes_per_block(*r.backend, *r.model, block_size, kv_dtype);
  return total;
}

size_t ModelExecutor::weight_bytes() const {
  size_t total = 0;
  for (const RankModel& r : ranks_) total += r.model->weight_bytes();
  return total;
}

size_t ModelExecutor::free_memory_bytes() const {
  size_t least = SIZE_MAX;
  for (const RankModel& r : ranks_) least = std::min(least, r.backend->free_memory_bytes());
  // CPU ranks share one host: each may use only its share of it.
  if (ranks_[0].backend->kind() == DeviceKind::kCpu) least /= ranks_.size();
  return least;
}

void ModelExecutor::allocate(int num_blocks, int block_size, RunnerLimits limits,
                             KvCacheDtype kv_dtype) {
  IRIS_CHECK(runners_.empty()) << "ModelExecutor::allocate called twice";
  limits_ = limits;
  kv_.reserve(ranks_.size());
  for (const RankModel& r : ranks_)
    kv_.push_back(allocate_kv_cache(*r.backend, *r.model, num_blocks, block_size, kv_dtype));
  for (size_t i = 0; i < ranks_.size(); ++i)
    runners_.push_back(std::make_unique<ModelRunner>(*ranks_[i].backend, *ranks_[i].model, kv_[i], limits));
  ranks_[0].backend->bind_to_current_thread();
  for (int r = 1; r < world_size(); ++r) workers_.emplace_back([this, r] { worker(r); });
}

void ModelExecutor::fail_group(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failure_.empty()) failure_ = why;
  }
  for (auto& c : comms_) c->abort(why);
  cv_.notify_all();
}

void ModelExecutor::worker(int rank) {
  ranks_[rank].backend->bind_to_current_thread();
  uint64_t seen = 0;
  while (true) {
    const std::vector<SeqChunk>* chunks = nullptr;
    uint64_t step = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || step_id_ != seen; });
      if (stop_) return;
      seen = step = step_id_;
      chunks = step_chunks_;
    }
    if (rank == stall_rank_ && step >= stall_step_) {
      spdlog::warn("IRIS_FAILPOINT: rank {} stalls at step {}", rank, step);
      while (true) std::this_thread::sleep_for(std::chrono::hours(1));
    }
    std::string error;
    try {
      runners_[rank]->run(*chunks);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty()) fail_group("rank " + std::to_string(rank) + ": " + error);
    {
      std::lock_guard<std::mutex> lock(mu_);
      worker_error_[rank] = error;
      worker_done_[rank] = 1;
      ++workers_done_;
    }
    cv_.notify_all();
  }
}

std::unique_ptr<DeviceSampler> ModelExecutor::make_device_sampler() {
  IRIS_CHECK(!runners_.empty()) << "ModelExecutor::make_device_sampler before allocate";
  if (world_size() != 1) return nullptr;  // logits are vocabulary shards across ranks
  return ranks_[0].backend->make_device_sampler(limits_.max_seqs, config().vocab_size);
}

const Tensor& ModelExecutor::device_logits() const {
  IRIS_CHECK(world_size() == 1) << "device logits exist only on one rank";
  return runners_[0]->device_logits();
}

uint64_t ModelExecutor::graph_replays() const {
  uint64_t n = 0;
  for (const auto& r : runners_) n += r->graph_replays();
  return n;
}

const std::vector<float>& ModelExecutor::run(const std::vector<SeqChunk>& chunks,
                                             const std::vector<uint8_t>* host_rows) {
  IRIS_CHECK(!runners_.empty()) << "ModelExecutor::run before allocate";
  const int world = world_size();
  if (world == 1) return runners_[0]->run(chunks, host_rows);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.empty()) fail("tensor-parallel group failed earlier: ", failure_);
    step_chunks_ = &chunks;
    workers_done_ = 0;
    std::fill(worker_done_.begin(), worker_done_.end(), 0);
    ++step_id_;
  }
  cv_.notify_all();

  const std::vector<float>* own = nullptr;
  try {
    own = &runners_[0]->run(chunks);
  } catch (const std::exception& e) {
    fail_group(std::string("rank 0: ") + e.what());
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    bool all = cv_.wait_for(lock, step_timeout_,
                            [&] { return workers_done_ == world - 1 || !failure_.empty(); });
    if (!failure_.empty() && workers_done_ != world - 1) {
      // Peers see the aborted group at their next collective: give them a moment to leave
      // this step (they read `chunks`) before the error propagates; a stalled one stays behind.
      all = cv_.wait_for(lock, std::chrono::seconds(1), [&] { return workers_done_ == world - 1; });
    }
    if (!all && failure_.empty()) {
      std::string missing;
      for (int r = 1; r < world; ++r)
        if (!worker_done_[r]) missing += " " + std::to_string(r);
      lock.unlock();
      fail_group("rank(s)" + missing + " did not finish a step within " +
                 std::to_string(step_timeout_.count()) + " ms");
      lock.lock();
    }
    if (!failure_.empty()) fail("tensor-parallel step failed: ", failure_);
  }

  // Assemble [n, vocab] from each rank's [n, shard] columns.
  const int64_t vocab = config().vocab_size;
  const int64_t rows = own ? static_cast<int64_t>(own->size()) / ranks_[0].model->vocab_shard().second : 0;
  logits_.resize(static_cast<size_t>(rows * vocab));
  for (int r = 0; r < world; ++r) {
    const auto [first, count] = ranks_[r].model->vocab_shard();
    const std::vector<float>& part = r == 0 ? *own : runners_[r]->last_logits();
    IRIS_CHECK(static_cast<int64_t>(part.size()) == rows * count)
        << "rank " << r << " returned " << part.size() << " logits, expected " << rows * count;
    for (int64_t i = 0; i < rows; ++i)
      std::memcpy(logits_.data() + i * vocab + first, part.data() + i * count, count * sizeof(float));
  }
  return logits_;
}

}  // namespace iris
