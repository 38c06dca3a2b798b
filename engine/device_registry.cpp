// The registry of device backends (see device_registry.h).
#include "engine/device_registry.h"

#include <map>
#include <mutex>

#include "engine/core/check.h"

namespace iris {
namespace {

struct Entry {
  DeviceBackendFactory backend = nullptr;
  DeviceCommunicatorFactory communicators = nullptr;
};

// Function-local so registration from other translation units' static initializers is safe.
std::map<std::string, Entry>& registry() {
  static std::map<std::string, Entry> r;
  return r;
}
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

Entry lookup(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  auto it = registry().find(name);
  if (it == registry().end())
    fail("--device ", name, ": this build has no ", name, " backend; use --device cpu");
  return it->second;
}

}  // namespace

bool register_device_backend(const std::string& name, DeviceBackendFactory backend,
                             DeviceCommunicatorFactory communicators) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[name] = Entry{backend, communicators};
  return true;
}

bool has_device_backend(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  return registry().count(name) > 0;
}

std::unique_ptr<Backend> make_device_backend(const std::string& name, const DeviceOptions& options) {
  return lookup(name).backend(options);
}

std::vector<std::unique_ptr<Communicator>> make_device_communicators(
    const std::string& name, const std::vector<int>& devices, const std::vector<void*>& streams,
    std::chrono::milliseconds timeout) {
  const Entry e = lookup(name);
  IRIS_CHECK(e.communicators) << "the " << name << " backend has no communicator";
  return e.communicators(devices, streams, timeout);
}

}  // namespace iris
