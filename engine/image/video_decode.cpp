// Video files through the decoder module (see video_decode.h, video_module.h): loaded once,
// on first use, from next to the executable (bin/ or ../lib/), from IRIS_VIDEO_MODULE, or from
// where this build put it. Without the module every entry point refuses with a message
// saying so; the server itself never links FFmpeg.
#include "engine/image/video_decode.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <mutex>

#include "engine/core/check.h"
#include "engine/image/video_module.h"

namespace iris::image {
namespace {

struct Module {
  IrisVideoProbeFn probe = nullptr;
  IrisVideoDecodeFn decode = nullptr;
  std::string why;  // why there is none
};

std::string executable_dir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  std::string path(buf, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

Module load() {
  Module m;
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("IRIS_VIDEO_MODULE"); env && *env) {
    candidates.emplace_back(env);  // an explicit choice: nothing else is tried
  } else {
    const std::string dir = executable_dir();
    if (!dir.empty()) {
      candidates.push_back(dir + "/libiris_video.so");
      candidates.push_back(dir + "/../lib/libiris_video.so");
    }
#ifdef IRIS_VIDEO_MODULE_PATH
    candidates.emplace_back(IRIS_VIDEO_MODULE_PATH);
#endif
  }
  std::string errors;
  for (const std::string& path : candidates) {
    if (access(path.c_str(), F_OK) != 0) continue;
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      errors += std::string(errors.empty() ? "" : "; ") + dlerror();
      continue;
    }
    auto version = reinterpret_cast<IrisVideoAbiVersionFn>(dlsym(handle, "iris_video_abi_version"));
    m.probe = reinterpret_cast<IrisVideoProbeFn>(dlsym(handle, "iris_video_probe"));
    m.decode = reinterpret_cast<IrisVideoDecodeFn>(dlsym(handle, "iris_video_decode"));
    if (version && version() == IRIS_VIDEO_ABI_VERSION && m.probe && m.decode) return m;
    errors += std::string(errors.empty() ? "" : "; ") + path + " is not this build's video module";
    m.probe = nullptr;
    m.decode = nullptr;
    dlclose(handle);
  }
  m.why = errors.empty() ? "libiris_video.so was not built (no FFmpeg) or is not installed next to iris"
                         : errors;
  return m;
}

const Module& module() {
  static const Module m = load();
  return m;
}

const Module& require() {
  const Module& m = module();
  if (!m.probe)
    fail("this build of Iris has no video decoder (", m.why,
         "); send the video as a list of JPEG/PNG frames instead");
  return m;
}

IrisVideoLimits c_limits(const VideoLimits& l) {
  return IrisVideoLimits{l.max_pixels, l.max_frames, l.max_seconds, l.max_bytes};
}

IrisVideoInfo c_info(const VideoInfo& v) {
  IrisVideoInfo c{};
  c.width = v.width;
  c.height = v.height;
  c.frames = v.frames;
  c.fps = v.fps;
  c.seconds = v.seconds;
  return c;
}

}  // namespace

bool video_decoder_available() { return module().probe != nullptr; }

VideoInfo probe_video(std::span<const uint8_t> bytes, const VideoLimits& limits) {
  const Module& m = require();
  const IrisVideoLimits l = c_limits(limits);
  IrisVideoInfo c{};
  char err[512] = {};
  if (m.probe(bytes.data(), bytes.size(), &l, &c, err, sizeof(err)) != 0) fail(err);
  VideoInfo v;
  v.width = c.width;
  v.height = c.height;
  v.frames = c.frames;
  v.fps = c.fps;
  v.seconds = c.seconds;
  v.container = c.container;
  v.codec = c.codec;
  return v;
}

std::vector<DecodedImage> decode_video_frames(std::span<const uint8_t> bytes, const VideoLimits& limits,
                                              const VideoInfo& info, std::span<const int> indices) {
  IRIS_CHECK(!indices.empty() && std::is_sorted(indices.begin(), indices.end()) && indices.front() >= 0 &&
             indices.back() < info.frames)
      << "frame indices must ascend within the video's " << info.frames << " frames";
  const Module& m = require();
  struct Sink {
    const VideoInfo* info;
    std::vector<DecodedImage> frames;
  } sink{&info, {}};
  sink.frames.reserve(indices.size());
  auto keep = [](void* ctx, size_t, const uint8_t* rgb, size_t n) -> int {
    auto* s = static_cast<Sink*>(ctx);
    try {
      DecodedImage img;
      img.width = s->info->width;
      img.height = s->info->height;
      img.channels = 3;
      if (n != static_cast<size_t>(img.width) * img.height * 3) return 1;
      img.pixels.assign(rgb, rgb + n);
      s->frames.push_back(std::move(img));
      return 0;
    } catch (...) {
      return 1;
    }
  };
  const IrisVideoLimits l = c_limits(limits);
  const IrisVideoInfo c = c_info(info);
  char err[512] = {};
  if (m.decode(bytes.data(), bytes.size(), &l, &c, indices.data(), indices.size(), keep, &sink, err,
               sizeof(err)) != 0)
    fail(err);
  IRIS_CHECK(sink.frames.size() == indices.size())
      << "the video decoder returned " << sink.frames.size() << " of " << indices.size() << " frames";
  return std::move(sink.frames);
}

}  // namespace iris::image
