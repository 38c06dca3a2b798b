// NCCL communicators for the GPUs of this process (one rank per GPU, one thread per rank).
// Collectives are enqueued on the rank's own stream (the backend's), so they are ordered with
// its kernels and can be captured in a CUDA graph; nothing waits on the stream (a watchdog
// thread bounds each collective by `timeout`). NCCL itself is loaded at run time, only for
// groups of two or more ranks (libnccl.so.2 from the loader's path, or $IRIS_NCCL_LIBRARY).
// This header pulls in no CUDA or NCCL headers.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "engine/parallel/communicator.h"

namespace iris {

// devices[r] is rank r's GPU; streams[r] its cudaStream_t (as void*). `timeout` bounds how
// long a rank waits for a collective to complete before it aborts the group.
std::vector<std::unique_ptr<Communicator>> make_nccl_communicators(
    const std::vector<int>& devices, const std::vector<void*>& streams,
    std::chrono::milliseconds timeout);

// Loads NCCL if it is not loaded yet and says which file and version the loader used; throws
// iris::Error when it cannot be loaded.
std::string nccl_library_path();

// Throws iris::Error when `comm` is an NCCL communicator whose group failed (a collective was
// aborted, timed out or hit an asynchronous NCCL error). The CUDA backend calls it after
// every wait for its stream, so a rank whose collectives were aborted mid-step reports the
// failure instead of returning that step's garbage. Does nothing for other communicators.
void check_nccl_communicator(Communicator* comm);

}  // namespace iris
