// NCCL is loaded at run time (cuda/nccl_communicator.cpp); these run on the host, device or
// not: a missing library fails with a message that says what to set, the toolkit's library
// resolves every entry point the communicator uses, and a group of one never loads NCCL.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

#include "cuda/nccl_communicator.h"
#include "engine/core/check.h"

using namespace iris;

TEST_CASE("NCCL loads at run time, or fails saying how to point at it", "[nccl_host]") {
  const char* before = std::getenv("IRIS_NCCL_LIBRARY");
  const std::string saved = before ? before : "";
  setenv("IRIS_NCCL_LIBRARY", "/nonexistent/libnccl.so.2", 1);
  try {
    nccl_library_path();
    FAIL("loading /nonexistent/libnccl.so.2 succeeded");
  } catch (const Error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find("/nonexistent/libnccl.so.2") != std::string::npos);
    CHECK(what.find("IRIS_NCCL_LIBRARY") != std::string::npos);
  }
  // A group of one GPU needs no NCCL: no library is touched, the communicator is inert.
  auto one = make_nccl_communicators({0}, {nullptr}, std::chrono::milliseconds(100));
  REQUIRE(one.size() == 1);
  CHECK(one[0]->world_size() == 1);
  check_nccl_communicator(one[0].get());

  const char* toolkit_nccl = std::getenv("IRIS_TEST_NCCL");
  if (toolkit_nccl == nullptr) {
    WARN("IRIS_TEST_NCCL not set: entry points not resolved against a real libnccl");
  } else {
    setenv("IRIS_NCCL_LIBRARY", toolkit_nccl, 1);
    const std::string path = nccl_library_path();  // throws if an entry point is missing
    INFO(path);
    CHECK(path.find("libnccl.so") != std::string::npos);
    CHECK(path.find("(NCCL ") != std::string::npos);
  }
  if (before) setenv("IRIS_NCCL_LIBRARY", saved.c_str(), 1);
  else unsetenv("IRIS_NCCL_LIBRARY");
}
