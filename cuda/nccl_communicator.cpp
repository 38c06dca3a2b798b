// NCCL all-reduce for tensor parallelism across the GPUs of one process.
#include "cuda/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>

#include "engine/core/check.h"

namespace iris {
namespace {

void nccl_check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess && r != ncclInProgress) fail("NCCL ", what, ": ", ncclGetErrorString(r));
}

struct NcclGroupState {
  std::mutex mu;
  std::string failure;
  std::vector<ncclComm_t> comms;
  ~NcclGroupState() {
    if (failure.empty())  // aborted communicators are already released
      for (ncclComm_t c : comms) ncclCommDestroy(c);
  }
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<NcclGroupState> group, int rank, int world, int device,
                   cudaStream_t stream, std::chrono::milliseconds timeout)
      : group_(std::move(group)), rank_(rank), world_(world), device_(device), stream_(stream),
        timeout_(timeout) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  void all_reduce_sum(Tensor& x) override {
    if (world_ == 1) return;
    {
      std::lock_guard<std::mutex> lock(group_->mu);
      if (!group_->failure.empty()) fail("tensor-parallel group failed: ", group_->failure);
    }
    ncclDataType_t type;
    switch (x.dtype) {
      case DType::F32: type = ncclFloat32; break;
      case DType::BF16: type = ncclBfloat16; break;
      case DType::F16: type = ncclFloat16; break;
      default: fail("NCCL all-reduce of ", dtype_name(x.dtype));
    }
    ncclComm_t comm = group_->comms[rank_];
    nccl_check(ncclAllReduce(x.data, x.data, static_cast<size_t>(x.numel()), type, ncclSum, comm,
                             stream_),
               "all-reduce");
    // During CUDA-graph capture nothing may wait on the stream; otherwise bound the wait so
    // a peer that never joins fails the group instead of hanging the step.
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    cudaStreamIsCapturing(stream_, &capture);
    if (capture != cudaStreamCaptureStatusNone) return;
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    while (true) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) fail("CUDA stream error after an all-reduce: ", cudaGetErrorString(q));
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        abort(std::string("rank ") + std::to_string(rank_) + ": " + ncclGetErrorString(async));
        fail("tensor-parallel group failed: NCCL ", ncclGetErrorString(async));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        const std::string why = "rank " + std::to_string(rank_) + " waited more than " +
                                std::to_string(timeout_.count()) + " ms for an all-reduce";
        abort(why);
        fail("tensor-parallel group failed: ", why);
      }
      std::this_thread::yield();
    }
  }

  void abort(const std::string& why) override {
    std::lock_guard<std::mutex> lock(group_->mu);
    if (!group_->failure.empty()) return;
    group_->failure = why;
    // Aborting the communicators makes kernels blocked in a collective return.
    for (ncclComm_t c : group_->comms) ncclCommAbort(c);
  }

 private:
  std::shared_ptr<NcclGroupState> group_;
  int rank_, world_, device_;
  cudaStream_t stream_;
  std::chrono::milliseconds timeout_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_nccl_communicators(
    const std::vector<int>& devices, const std::vector<void*>& streams,
    std::chrono::milliseconds timeout) {
  IRIS_CHECK(!devices.empty() && devices.size() == streams.size())
      << devices.size() << " devices, " << streams.size() << " streams";
  auto group = std::make_shared<NcclGroupState>();
  const int world = static_cast<int>(devices.size());
  group->comms.resize(devices.size());
  nccl_check(ncclCommInitAll(group->comms.data(), world, devices.data()), "ncclCommInitAll");
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < world; ++r)
    out.push_back(std::make_unique<NcclCommunicator>(group, r, world, devices[r],
                                                     static_cast<cudaStream_t>(streams[r]), timeout));
  return out;
}

}  // namespace iris
