// A few worker threads that decode and preprocess request images, so that gRPC's callback
// threads (which must not block) only check headers and hand the work over. Jobs run in
// arrival order; the destructor finishes the queued jobs, then joins.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace iris::server {

class DecodePool {
 public:
  explicit DecodePool(int threads);
  ~DecodePool();
  DecodePool(const DecodePool&) = delete;
  DecodePool& operator=(const DecodePool&) = delete;

  void post(std::function<void()> job);
  // Jobs queued or running.
  int pending() const { return pending_.load(); }

 private:
  void worker();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stop_ = false;
  std::atomic<int> pending_{0};
  long long job_delay_ms_ = 0;  // IRIS_FAILPOINT=slow_decode:MS
  std::vector<std::thread> threads_;
};

}  // namespace iris::server
