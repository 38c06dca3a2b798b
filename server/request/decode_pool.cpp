// See decode_pool.h.
#include "server/request/decode_pool.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <exception>

#include "engine/core/failpoint.h"

namespace iris::server {

DecodePool::DecodePool(int threads) {
  // slow_decode:MS — every job first sleeps MS milliseconds, so that tests can hold jobs in
  // the pool on cue (the --max-queue count of decodes in flight).
  if (const auto fp = failpoint_args("slow_decode"); fp && fp->size() == 1 && (*fp)[0] > 0) {
    job_delay_ms_ = (*fp)[0];
    spdlog::warn("IRIS_FAILPOINT: every image decode job sleeps {} ms first", job_delay_ms_);
  }
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { worker(); });
}

DecodePool::~DecodePool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void DecodePool::post(std::function<void()> job) {
  pending_.fetch_add(1);
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void DecodePool::worker() {
  while (true) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, and nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    try {
      if (job_delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(job_delay_ms_));
      job();
    } catch (const std::exception& e) {
      // Jobs report their own errors to their request; this only guards the worker.
      spdlog::error("image decode job failed: {}", e.what());
    }
    pending_.fetch_sub(1);
  }
}

}  // namespace iris::server
