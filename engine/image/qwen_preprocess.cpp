// Qwen2VLImageProcessor (see qwen_preprocess.h). smart_resize follows Python's arithmetic:
// round() rounds half to even, `/` is a correctly rounded double division, math.sqrt is sqrt.
#include "engine/image/qwen_preprocess.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/core/check.h"

namespace iris::image {
namespace {

using nlohmann::json;

int64_t int_field(const json& j, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer())
    fail("preprocessor_config.json: ", name, " must be an integer, got ", it->dump());
  const int64_t v = it->get<int64_t>();
  if (v < lo || v > hi)
    fail("preprocessor_config.json: ", name, " = ", v, " is out of range (", lo, "..", hi, ")");
  return v;
}

// Python's round(): to nearest, ties to even.
double round_half_even(double x) {
  const double r = std::round(x);
  if (std::fabs(x - std::trunc(x)) == 0.5) return 2.0 * std::round(x / 2.0);
  return r;
}

}  // namespace

QwenProcessorConfig parse_qwen_processor_config(const json& j) {
  if (!j.is_object()) fail("preprocessor_config.json: expected a JSON object");
  QwenProcessorConfig c;
  c.patch_size = static_cast<int>(int_field(j, "patch_size", 14, 1, 1024));
  c.merge_size = static_cast<int>(int_field(j, "merge_size", 2, 1, 64));
  c.temporal_patch_size = static_cast<int>(int_field(j, "temporal_patch_size", 2, 1, 64));
  constexpr int64_t kMaxArea = int64_t{1} << 40;
  c.min_pixels = int_field(j, "min_pixels", c.min_pixels, 1, kMaxArea);
  c.max_pixels = int_field(j, "max_pixels", c.max_pixels, 1, kMaxArea);
  // Newer files keep the range in size {"shortest_edge": min, "longest_edge": max}.
  if (auto it = j.find("size"); it != j.end() && it->is_object()) {
    if (!j.contains("min_pixels")) c.min_pixels = int_field(*it, "shortest_edge", c.min_pixels, 1, kMaxArea);
    if (!j.contains("max_pixels")) c.max_pixels = int_field(*it, "longest_edge", c.max_pixels, 1, kMaxArea);
  }
  // Video sampling (Qwen2VLVideoProcessor's fps sampling; transformers' defaults).
  if (auto it = j.find("fps"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || !(it->get<double>() > 0))
      fail("preprocessor_config.json: fps must be a positive number, got ", it->dump());
    c.video_fps = it->get<double>();
  }
  c.min_frames = static_cast<int>(int_field(j, "min_frames", c.min_frames, 1, 1 << 20));
  c.max_frames = static_cast<int>(int_field(j, "max_frames", c.max_frames, 1, 1 << 20));
  if (c.min_pixels > c.max_pixels)
    fail("preprocessor_config.json: min_pixels ", c.min_pixels, " exceeds max_pixels ", c.max_pixels);
  // The common pipeline, parsed as a CLIP processor (same rescale/normalize/resample fields and
  // defaults: CLIP mean/std, bicubic) and then set to resize to a per-image size, no crop.
  json common = j;
  common["image_processor_type"] = "CLIPImageProcessor";
  common.erase("size");
  common.erase("crop_size");
  common["do_center_crop"] = false;
  c.common = parse_preprocessor_config(common);
  c.common.processor_type = j.value("image_processor_type", std::string("Qwen2VLImageProcessor"));
  c.common.shortest_edge = 0;
  return c;
}

QwenProcessorConfig load_qwen_processor_config(const std::string& path) {
  std::filesystem::path file(path);
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) file /= "preprocessor_config.json";
  std::ifstream in(file);
  if (!in) fail("cannot open ", file.string());
  std::stringstream text;
  text << in.rdbuf();
  json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(file.string(), " is not valid JSON");
  return parse_qwen_processor_config(j);
}

std::pair<int, int> smart_resize(int height, int width, int factor, int64_t min_pixels,
                                 int64_t max_pixels) {
  if (height < 10 || width < 10)
    fail("image of ", width, "x", height, " is too small (each side must be at least 10 pixels)");
  const double ratio = static_cast<double>(std::max(height, width)) / std::min(height, width);
  if (ratio > 200) fail("image of ", width, "x", height, " is too elongated (aspect ratio over 200)");
  const double f = factor;
  double h = round_half_even(height / f) * f;
  double w = round_half_even(width / f) * f;
  const double area = static_cast<double>(height) * static_cast<double>(width);
  if (h * w > static_cast<double>(max_pixels)) {
    const double beta = std::sqrt(area / static_cast<double>(max_pixels));
    h = std::floor(height / beta / f) * f;
    w = std::floor(width / beta / f) * f;
  } else if (h * w < static_cast<double>(min_pixels)) {
    const double beta = std::sqrt(static_cast<double>(min_pixels) / area);
    h = std::ceil(height * beta / f) * f;
    w = std::ceil(width * beta / f) * f;
  }
  if (!(h >= f && w >= f && h < (1 << 20) && w < (1 << 20)))
    fail("image of ", width, "x", height, " resizes to ", w, "x", h, " pixels, outside what ",
         "patches of ", factor, " can cover");
  return {static_cast<int>(h), static_cast<int>(w)};
}

QwenPatches qwen_patchify(const std::vector<PixelValues>& frames, const QwenProcessorConfig& config) {
  const int tp = config.temporal_patch_size, p = config.patch_size, m = config.merge_size;
  IRIS_CHECK(!frames.empty() && (frames.size() == 1 || frames.size() % tp == 0))
      << frames.size() << " frames are not whole groups of " << tp;
  const PixelValues& f0 = frames[0];
  for (const PixelValues& f : frames)
    IRIS_CHECK(f.channels == f0.channels && f.height == f0.height && f.width == f0.width)
        << "frames of different sizes: " << f.width << "x" << f.height << " and " << f0.width
        << "x" << f0.height;
  IRIS_CHECK(f0.height % (p * m) == 0 && f0.width % (p * m) == 0)
      << "frame of " << f0.width << "x" << f0.height << " is not a multiple of " << p * m;
  QwenPatches out;
  out.grid_t = frames.size() == 1 ? 1 : static_cast<int>(frames.size()) / tp;
  out.grid_h = f0.height / p;
  out.grid_w = f0.width / p;
  const int c = f0.channels;
  out.patch_dim = c * tp * p * p;
  out.data.resize(static_cast<size_t>(out.num_patches()) * out.patch_dim);
  float* dst = out.data.data();
  const int bh = out.grid_h / m, bw = out.grid_w / m;
  for (int t = 0; t < out.grid_t; ++t)
    for (int by = 0; by < bh; ++by)
      for (int bx = 0; bx < bw; ++bx)
        for (int my = 0; my < m; ++my)
          for (int mx = 0; mx < m; ++mx) {
            const int y0 = (by * m + my) * p, x0 = (bx * m + mx) * p;
            for (int ch = 0; ch < c; ++ch)
              for (int k = 0; k < tp; ++k) {
                const PixelValues& f = frames.size() == 1 ? f0 : frames[static_cast<size_t>(t) * tp + k];
                for (int y = 0; y < p; ++y) {
                  const float* src = f.data.data() + (static_cast<size_t>(ch) * f.height + y0 + y) * f.width + x0;
                  std::copy(src, src + p, dst);
                  dst += p;
                }
              }
          }
  return out;
}

QwenPatches qwen_preprocess_image(const DecodedImage& image, const QwenProcessorConfig& config,
                                  int64_t min_pixels, int64_t max_pixels) {
  const auto [h, w] = smart_resize(static_cast<int>(image.height), static_cast<int>(image.width),
                                   config.factor(), min_pixels, max_pixels);
  PreprocessorConfig common = config.common;
  common.do_resize = true;
  common.shortest_edge = 0;
  common.resize_height = h;
  common.resize_width = w;
  common.do_center_crop = false;
  common.do_pad = false;
  return qwen_patchify({preprocess(image, common)}, config);
}

std::vector<int> qwen_sample_frames(int total, double source_fps, double fps, int temporal_patch_size,
                                    int min_frames, int max_frames) {
  IRIS_CHECK(total > 0) << "a video needs at least one frame";
  IRIS_CHECK(source_fps > 0 && std::isfinite(source_fps)) << "video fps " << source_fps
                                                          << " must be a positive number";
  const int tp = temporal_patch_size;
  const double cap = std::floor(static_cast<double>(std::min(max_frames, total)) / tp) * tp;
  double n = static_cast<double>(total) / source_fps * fps;
  n = std::min({std::max(n, static_cast<double>(min_frames)), cap, static_cast<double>(total)});
  n = std::floor(n / tp) * tp;
  if (!(n > 0))
    fail("a video of ", total, " frame(s) is too short: at least ", tp, " frames are needed");
  // torch.arange(0, total, step) in float32: ceil(total / step) values i * step, truncated.
  const double step = static_cast<double>(total) / n;
  const auto count = static_cast<int>(std::ceil(static_cast<double>(total) / step));
  std::vector<int> idx;
  for (int i = 0; i < count; ++i)
    idx.push_back(static_cast<int>(static_cast<float>(static_cast<double>(i) * step)));
  return idx;
}

QwenPatches qwen_preprocess_video(const std::vector<DecodedImage>& frames,
                                  const QwenProcessorConfig& config, int64_t min_pixels,
                                  int64_t max_pixels) {
  IRIS_CHECK(!frames.empty()) << "a video needs at least one frame";
  const auto [h, w] = smart_resize(static_cast<int>(frames[0].height), static_cast<int>(frames[0].width),
                                   config.factor(), min_pixels, max_pixels);
  PreprocessorConfig common = config.common;
  common.do_resize = true;
  common.shortest_edge = 0;
  common.resize_height = h;
  common.resize_width = w;
  common.do_center_crop = false;
  common.do_pad = false;
  std::vector<PixelValues> pv;
  pv.reserve(frames.size() + config.temporal_patch_size);
  for (const DecodedImage& f : frames) {
    IRIS_CHECK(f.width == frames[0].width && f.height == frames[0].height)
        << "video frames of different sizes: " << f.width << "x" << f.height << " after "
        << frames[0].width << "x" << frames[0].height;
    pv.push_back(preprocess(f, common));
  }
  while (pv.size() % config.temporal_patch_size != 0) pv.push_back(pv.back());
  return qwen_patchify(pv, config);
}

}  // namespace iris::image
