// The in-process communicator: ranks are threads sharing host memory. An all-reduce
// publishes every rank's buffer, waits at a barrier, has each rank sum all buffers in rank
// order into a private copy (so every rank gets bitwise the same sum), waits again so no
// buffer is overwritten while a peer still reads it, then writes the sum back. Barriers wait
// with a deadline: a rank that stalls or fails makes the others throw, never hang.
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <sstream>

#include "engine/core/check.h"
#include "engine/parallel/communicator.h"

namespace iris {
namespace {

struct CpuGroup {
  explicit CpuGroup(int n, std::chrono::milliseconds t)
      : world(n), timeout(t), buffers(n, nullptr), arrived_flags(n, 0) {}

  const int world;
  const std::chrono::milliseconds timeout;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<float*> buffers;
  int64_t count = 0;
  // Barrier state.
  uint64_t generation = 0;
  int arrived = 0;
  std::vector<uint8_t> arrived_flags;  // who reached the current barrier
  std::string failure;

  // Waits until all ranks arrive; throws on failure or timeout (and fails the group).
  void barrier(int rank, const char* what) {
    std::unique_lock<std::mutex> lock(mu);
    if (!failure.empty()) fail("tensor-parallel group failed: ", failure);
    const uint64_t gen = generation;
    arrived_flags[rank] = 1;
    if (++arrived == world) {
      arrived = 0;
      std::fill(arrived_flags.begin(), arrived_flags.end(), 0);
      ++generation;
      cv.notify_all();
      return;
    }
    const bool ok = cv.wait_for(lock, timeout, [&] { return generation != gen || !failure.empty(); });
    if (!failure.empty()) fail("tensor-parallel group failed: ", failure);
    if (!ok) {
      std::ostringstream os;
      os << "rank(s)";
      for (int r = 0; r < world; ++r)
        if (!arrived_flags[r]) os << " " << r;
      os << " did not reach " << what << " within " << timeout.count() << " ms (rank " << rank
         << " waited)";
      failure = os.str();
      cv.notify_all();
      fail("tensor-parallel group failed: ", failure);
    }
  }

  void abort(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    if (failure.empty()) failure = why;
    cv.notify_all();
  }
};

class CpuCommunicator final : public Communicator {
 public:
  CpuCommunicator(std::shared_ptr<CpuGroup> group, int rank) : group_(std::move(group)), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return group_->world; }

  void all_reduce_sum(Tensor& x) override {
    if (group_->world == 1) return;
    IRIS_CHECK(x.dtype == DType::F32) << "CPU all-reduce of " << dtype_name(x.dtype);
    const int64_t n = x.numel();
    {
      std::lock_guard<std::mutex> lock(group_->mu);
      group_->buffers[rank_] = x.ptr<float>();
      if (rank_ == 0) group_->count = n;
    }
    group_->barrier(rank_, "an all-reduce");
    IRIS_CHECK(group_->count == n) << "all-reduce of " << n << " elements on rank " << rank_
                                   << " but " << group_->count << " on rank 0";
    sum_.resize(static_cast<size_t>(n));
    std::memcpy(sum_.data(), group_->buffers[0], n * sizeof(float));
    for (int r = 1; r < group_->world; ++r) {
      const float* b = group_->buffers[r];
      for (int64_t i = 0; i < n; ++i) sum_[i] += b[i];
    }
    group_->barrier(rank_, "the end of an all-reduce");
    std::memcpy(x.ptr<float>(), sum_.data(), n * sizeof(float));
  }

  void abort(const std::string& why) override { group_->abort(why); }

 private:
  std::shared_ptr<CpuGroup> group_;
  int rank_;
  std::vector<float> sum_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_cpu_communicators(int world_size,
                                                                  std::chrono::milliseconds timeout) {
  IRIS_CHECK(world_size >= 1) << "tensor-parallel size must be at least 1, got " << world_size;
  auto group = std::make_shared<CpuGroup>(world_size, timeout);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < world_size; ++r) out.push_back(std::make_unique<CpuCommunicator>(group, r));
  return out;
}

}  // namespace iris
