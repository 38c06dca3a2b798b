// CUDA graph capture and replay per batch-size bucket (see graph.h).
#include "cuda/graph.h"

#include <algorithm>

#include "cuda/cuda_check.h"
#include "engine/core/check.h"

namespace iris::cuda {

StepGraphs::StepGraphs(Backend& backend, std::vector<int> buckets)
    : stream_(backend_stream(backend)), buckets_(std::move(buckets)) {
  std::sort(buckets_.begin(), buckets_.end());
  buckets_.erase(std::unique(buckets_.begin(), buckets_.end()), buckets_.end());
  IRIS_CHECK(buckets_.empty() || buckets_.front() > 0) << "graph buckets must be positive";
}

StepGraphs::~StepGraphs() {
  clear();
}

int StepGraphs::bucket_for(int n) const {
  auto it = std::lower_bound(buckets_.begin(), buckets_.end(), n);
  return it == buckets_.end() ? 0 : *it;
}

void StepGraphs::capture(int bucket, const std::function<void()>& enqueue) {
  IRIS_CHECK(std::binary_search(buckets_.begin(), buckets_.end(), bucket))
      << "graph bucket " << bucket << " was not declared";
  // Thread-local mode: other threads' unrelated CUDA calls (e.g. a cudaMalloc) do not
  // invalidate this capture.
  IRIS_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
  cudaGraph_t graph = nullptr;
  try {
    enqueue();
  } catch (...) {
    cudaStreamEndCapture(stream_, &graph);
    if (graph) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    throw;
  }
  IRIS_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
  cudaGraphExec_t exec = nullptr;
  const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  IRIS_CUDA_CHECK(e);
  auto it = graphs_.find(bucket);
  if (it != graphs_.end()) {
    cudaGraphExecDestroy(it->second);
    it->second = exec;
  } else {
    graphs_.emplace(bucket, exec);
  }
}

void StepGraphs::replay(int bucket) {
  auto it = graphs_.find(bucket);
  IRIS_CHECK(it != graphs_.end()) << "no graph captured for bucket " << bucket;
  IRIS_CUDA_CHECK(cudaGraphLaunch(it->second, stream_));
}

void StepGraphs::clear() {
  for (auto& [bucket, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

}  // namespace iris::cuda
