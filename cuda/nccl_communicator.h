// NCCL communicators for the GPUs of this process (one rank per GPU, one thread per rank),
// bootstrapped with ncclCommInitAll. Collectives are enqueued on the rank's own stream (the
// backend's), so they are ordered with its kernels and can be captured in a CUDA graph. This
// header pulls in no CUDA or NCCL headers.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include "engine/parallel/communicator.h"

namespace iris {

// devices[r] is rank r's GPU; streams[r] its cudaStream_t (as void*). `timeout` bounds how
// long a rank waits for a collective to complete before it aborts the group.
std::vector<std::unique_ptr<Communicator>> make_nccl_communicators(
    const std::vector<int>& devices, const std::vector<void*>& streams,
    std::chrono::milliseconds timeout);

}  // namespace iris
