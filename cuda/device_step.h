// The CUDA backend's StepGraphRunner (cuda/graph.h) and DeviceSampler (cuda/sampling.h),
// behind the engine's interfaces (engine/device_step.h).
#pragma once

#include <memory>
#include <vector>

#include "engine/backend.h"

namespace iris::cuda {

std::unique_ptr<StepGraphRunner> make_step_graph_runner(Backend& backend, std::vector<int> buckets);
std::unique_ptr<DeviceSampler> make_device_sampler(Backend& backend, int max_rows, int64_t vocab);

}  // namespace iris::cuda
