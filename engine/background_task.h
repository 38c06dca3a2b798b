// One worker thread that runs one job at a time beside the caller: the engine hands it the
// step's structured-output masks before the forward pass and waits for them before sampling,
// so mask computation overlaps the model instead of following it.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace iris {

class BackgroundTask {
 public:
  BackgroundTask();
  ~BackgroundTask();  // waits for a running job, then joins
  BackgroundTask(const BackgroundTask&) = delete;
  BackgroundTask& operator=(const BackgroundTask&) = delete;

  // Starts `job` on the worker. The previous job must have been waited for.
  void start(std::function<void()> job);
  // Blocks until the started job is done and rethrows what it threw. No-op without a job.
  void wait();

 private:
  void run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::function<void()> job_;
  bool busy_ = false;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace iris
