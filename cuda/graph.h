// CUDA graphs for decode steps: capture the work a callable enqueues on the backend's
// stream once per batch-size bucket, then replay it with one launch instead of ~10
// launches per layer. The model runner uses it (engine/model_runner.cpp, through
// cuda/device_step.cpp) for decode steps on one GPU unless --enforce-eager.
//
// What the runner does to use it (the contract the captured kernels rely on):
//  1. Keep every device buffer a step touches at a fixed address: the step inputs
//     (token ids, positions, slot mapping, query_start, seq_lens, block tables, logits
//     indices), the model's activation workspace and the logits. ModelRunner already
//     allocates them once; capture reads them through the same Tensors every replay.
//  2. Pad a decode batch of n sequences to bucket_for(n) sequences: padded sequences get
//     q_len 1, seq_len 1, slot_mapping -1 (nothing is stored) and a block table row
//     pointing at any valid block; their logits rows are ignored.
//  3. Fix every host-side size at the bucket's value while capturing and replaying:
//     num_seqs = num_tokens = bucket, max_query_len = 1, and max_seq_len =
//     max_blocks_per_seq * block_size (the decode kernel picks its KV split count from
//     max_seq_len; with the capacity it is the same at every step). The kernels read the
//     real per-sequence lengths from device memory.
//  4. Upload the step inputs (upload_i32) before replay and download the logits after it,
//     outside the captured callable: copies from pageable host memory cannot be captured.
//  5. Run one uncaptured step at each bucket size before capturing it (warm-up: cuBLASLt
//     picks and caches its algorithm, kernels are loaded), and capture on the thread that
//     owns the backend. Re-capture after anything reallocates a buffer in (1).
#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <map>
#include <vector>

#include "engine/backend.h"

namespace iris::cuda {

// The stream a CUDA backend enqueues all its work on. Throws for other backends.
cudaStream_t backend_stream(Backend& backend);

class StepGraphs {
 public:
  // buckets: the batch sizes graphs may be captured at (sorted and deduplicated here).
  StepGraphs(Backend& backend, std::vector<int> buckets);
  ~StepGraphs();
  StepGraphs(const StepGraphs&) = delete;
  StepGraphs& operator=(const StepGraphs&) = delete;

  // The smallest bucket >= n, or 0 when n is larger than every bucket (run eagerly then).
  int bucket_for(int n) const;
  bool captured(int bucket) const { return graphs_.count(bucket) != 0; }
  // Captures what `enqueue` puts on the backend's stream as the graph of `bucket`
  // (replacing an earlier one). `enqueue` must only enqueue work: no synchronisation, no
  // allocation, no host copies. A throw inside it ends the capture and is rethrown.
  void capture(int bucket, const std::function<void()>& enqueue);
  // Launches the bucket's graph on the backend's stream; returns without waiting.
  void replay(int bucket);
  void clear();

 private:
  cudaStream_t stream_;
  std::vector<int> buckets_;
  std::map<int, cudaGraphExec_t> graphs_;
};

}  // namespace iris::cuda
