// Test wrapper: exits 77 (ctest's SKIP_RETURN_CODE for the gpu tests) when this machine has
// no NVIDIA GPU at all, else replaces itself with the test command given as arguments. A
// machine that has a GPU (a driver node under /dev or /proc) but where CUDA cannot use it — a
// driver older than the runtime, a broken install — FAILS: that is not "no device".
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
  const bool gpu_present = access("/dev/nvidiactl", F_OK) == 0 || access("/dev/nvidia0", F_OK) == 0 ||
                           access("/proc/driver/nvidia/version", F_OK) == 0;
  if (e == cudaSuccess && count > 0) {
    execv(argv[1], argv + 1);
    std::fprintf(stderr, "skip_without_gpu: cannot run %s: %s\n", argv[1], std::strerror(errno));
    return 2;
  }
  if (!gpu_present && (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaSuccess)) {
    std::printf("SKIP: no NVIDIA GPU on this machine (%s)\n",
                e != cudaSuccess ? cudaGetErrorString(e) : "no device found");
    return 77;
  }
  std::fprintf(stderr, "FAIL: this machine has an NVIDIA GPU driver node but CUDA cannot use it: %s\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0 devices");
  return 1;
}
