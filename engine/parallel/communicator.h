// Collectives across the ranks of a tensor-parallel group. Each rank holds one Communicator;
// its collectives act on tensors on that rank's device and must be called by every rank in
// the same order (the ranks run the same step plan in lockstep). Implementations: the
// in-process CPU group below (one thread per rank) and NCCL (cuda/), one thread per GPU.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "engine/core/tensor.h"

namespace iris {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // x = sum over ranks of x, in place. Every rank gets bitwise the same result. Throws
  // iris::Error when a peer fails or does not arrive within the group's timeout.
  virtual void all_reduce_sum(Tensor& x) = 0;
  // Marks the whole group failed (a rank hit an error), so peers waiting in a collective stop
  // waiting and throw instead of hanging.
  virtual void abort(const std::string& why) = 0;
};

// N communicators over host memory for N ranks running as threads of this process.
// `timeout`: how long a collective waits for the slowest rank before the group fails.
std::vector<std::unique_ptr<Communicator>> make_cpu_communicators(int world_size,
                                                                  std::chrono::milliseconds timeout);

}  // namespace iris
