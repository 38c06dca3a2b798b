// Test wrapper: exits 77 (ctest's SKIP_RETURN_CODE for the gpu tests) when this machine has
// no usable CUDA device, else replaces itself with the test command given as arguments.
//
// usage: skip_without_gpu TEST_BINARY [ARGS...]
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s TEST_BINARY [ARGS...]\n", argv[0]);
    return 2;
  }
  int count = 0;  // not written when the call fails
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::printf("SKIP: no usable CUDA device (%s)\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "no device found");
    return 77;
  }
  execv(argv[1], argv + 1);
  std::fprintf(stderr, "skip_without_gpu: cannot run %s: %s\n", argv[1], std::strerror(errno));
  return 2;
}
