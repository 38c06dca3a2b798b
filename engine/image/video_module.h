// The C interface between iris and its video decoder module (libiris_video.so, built from
// video_module.cpp against FFmpeg). A plain C ABI, so no C++ exception or type crosses the
// dlopen boundary: each call returns 0 on success, or non-zero with a message in `err`.
#pragma once

#include <cstddef>
#include <cstdint>

#define IRIS_VIDEO_ABI_VERSION 1
#define IRIS_VIDEO_EXPORT __attribute__((visibility("default")))

extern "C" {

struct IrisVideoLimits {
  uint64_t max_pixels;
  int max_frames;
  double max_seconds;
  size_t max_bytes;
};

struct IrisVideoInfo {
  uint32_t width, height;
  int frames;
  double fps, seconds;
  char container[32], codec[32];
};

// Receives kept frame k (RGB, width * height * 3 bytes); returns non-zero to stop decoding.
typedef int (*IrisVideoFrameFn)(void* ctx, size_t k, const uint8_t* rgb, size_t bytes);

typedef int (*IrisVideoAbiVersionFn)();
typedef int (*IrisVideoProbeFn)(const uint8_t* data, size_t size, const IrisVideoLimits* limits,
                                IrisVideoInfo* info, char* err, size_t err_size);
typedef int (*IrisVideoDecodeFn)(const uint8_t* data, size_t size, const IrisVideoLimits* limits,
                                 const IrisVideoInfo* info, const int* indices, size_t count,
                                 IrisVideoFrameFn on_frame, void* ctx, char* err, size_t err_size);

}  // extern "C"
