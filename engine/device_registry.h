// Device backends other than the CPU register themselves here when the binary links them
// (cuda/ does, at static initialization), so the server picks a device by name without
// including any device code.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace iris {

struct DeviceOptions {
  int device = 0;
  double gpu_memory_utilization = 0.9;  // fraction of the device's memory this process may hold
};

using DeviceBackendFactory = std::unique_ptr<Backend> (*)(const DeviceOptions&);
// One communicator per rank; devices[r] and streams[r] (Backend::native_stream()) of rank r.
using DeviceCommunicatorFactory = std::vector<std::unique_ptr<Communicator>> (*)(
    const std::vector<int>& devices, const std::vector<void*>& streams,
    std::chrono::milliseconds timeout);

// Returns true so that it can initialize a namespace-scope constant.
bool register_device_backend(const std::string& name, DeviceBackendFactory backend,
                             DeviceCommunicatorFactory communicators);
bool has_device_backend(const std::string& name);
// Fail with a clear message when `name` is not linked into this binary.
std::unique_ptr<Backend> make_device_backend(const std::string& name, const DeviceOptions& options);
std::vector<std::unique_ptr<Communicator>> make_device_communicators(
    const std::string& name, const std::vector<int>& devices, const std::vector<void*>& streams,
    std::chrono::milliseconds timeout);

}  // namespace iris
