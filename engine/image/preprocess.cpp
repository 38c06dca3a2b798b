// preprocessor_config.json parsing and the CLIP / SigLIP / LLaVA preprocessing pipeline.
// Each step follows the transformers function it names; the comments say which.
#include "engine/image/preprocess.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "engine/core/check.h"

namespace iris::image {
namespace {

using nlohmann::json;

// transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD and IMAGENET_STANDARD_MEAN / _STD.
constexpr std::array<double, 3> kClipMean = {0.48145466, 0.4578275, 0.40821073};
constexpr std::array<double, 3> kClipStd = {0.26862954, 0.26130258, 0.27577711};
constexpr std::array<double, 3> kHalf = {0.5, 0.5, 0.5};
constexpr int kMaxConfigSide = 1 << 16;

int floor_div2(int64_t a) {
  return static_cast<int>(a >= 0 ? a / 2 : -((-a + 1) / 2));
}

int size_value(const json& v, const char* field) {
  if (!v.is_number_integer() && !v.is_number_unsigned()) {
    fail("preprocessor_config.json: ", field, " must be an integer, got ", v.dump());
  }
  const int64_t n = v.get<int64_t>();
  if (n <= 0 || n > kMaxConfigSide) {
    fail("preprocessor_config.json: ", field, " = ", n, " is out of range (1..", kMaxConfigSide,
         ")");
  }
  return static_cast<int>(n);
}

bool bool_field(const json& j, const char* name, bool fallback) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail("preprocessor_config.json: ", name, " must be true/false");
  return it->get<bool>();
}

std::array<double, 3> triple_field(const json& j, const char* name,
                                   const std::array<double, 3>& fallback) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return fallback;
  std::array<double, 3> out{};
  if (it->is_number()) {  // normalize() broadcasts a scalar to every channel
    out.fill(it->get<double>());
  } else if (it->is_array() && it->size() == 3) {
    for (size_t i = 0; i < 3; ++i) {
      if (!(*it)[i].is_number()) fail("preprocessor_config.json: ", name, " must hold numbers");
      out[i] = (*it)[i].get<double>();
    }
  } else {
    fail("preprocessor_config.json: ", name, " must be a number or 3 numbers, got ", it->dump());
  }
  for (double v : out) {
    if (!std::isfinite(v)) fail("preprocessor_config.json: ", name, " is not finite");
  }
  return out;
}

// transformers' get_size_dict: an int means a square when default_to_square, else the
// shortest edge; a list is (height, width); a dict is taken as is.
struct SizeDict {
  int shortest_edge = 0;
  int height = 0;
  int width = 0;
};

SizeDict size_dict(const json& v, bool default_to_square, const char* field) {
  SizeDict s;
  if (v.is_number()) {
    const int n = size_value(v, field);
    if (default_to_square) {
      s.height = s.width = n;
    } else {
      s.shortest_edge = n;
    }
  } else if (v.is_array() && v.size() == 2) {
    s.height = size_value(v[0], field);
    s.width = size_value(v[1], field);
  } else if (v.is_object()) {
    if (v.contains("shortest_edge")) s.shortest_edge = size_value(v["shortest_edge"], field);
    if (v.contains("height") || v.contains("width")) {
      if (!v.contains("height") || !v.contains("width")) {
        fail("preprocessor_config.json: ", field, " needs both height and width: ", v.dump());
      }
      s.height = size_value(v["height"], field);
      s.width = size_value(v["width"], field);
    }
    if (s.shortest_edge == 0 && s.height == 0) {
      fail("preprocessor_config.json: ", field,
           " must contain shortest_edge or height and width, got ", v.dump());
    }
  } else {
    fail("preprocessor_config.json: unsupported ", field, " ", v.dump());
  }
  return s;
}

ProcessorKind kind_from_type(const std::string& type) {
  auto starts = [&](const char* prefix) { return type.rfind(prefix, 0) == 0; };
  if (starts("CLIPImageProcessor") || starts("CLIPFeatureExtractor")) return ProcessorKind::kClip;
  if (starts("SiglipImageProcessor")) return ProcessorKind::kSiglip;
  if (starts("LlavaImageProcessor")) return ProcessorKind::kLlava;
  if (starts("Gemma3ImageProcessor")) return ProcessorKind::kGemma3;
  fail("unsupported image processor \"", type,
       "\" (supported: CLIPImageProcessor, SiglipImageProcessor, LlavaImageProcessor, "
       "Gemma3ImageProcessor)");
}

// The part of one axis that a transformers center_crop keeps: output index o shows source
// index o + offset when 0 <= o + offset < orig, and the zero padding otherwise.
struct CropAxis {
  int length = 0;  // output length (= crop size)
  int offset = 0;
};

CropAxis crop_axis(int orig, int crop) {
  const int top = floor_div2(int64_t{orig} - crop);  // Python's (orig - crop) // 2
  const int bottom = top + crop;
  if (top >= 0 && bottom <= orig) return {crop, top};
  const int padded = std::max(crop, orig);
  const int pad_before = (padded - orig + 1) / 2;  // ceil((padded - orig) / 2)
  const int first = std::max(0, top + pad_before);
  const int last = std::min(padded, bottom + pad_before);
  return {last - first, first - pad_before};
}

}  // namespace

PreprocessorConfig parse_preprocessor_config(const json& j) {
  if (!j.is_object()) fail("preprocessor_config.json: expected a JSON object");
  PreprocessorConfig c;
  if (auto it = j.find("image_processor_type"); it != j.end() && it->is_string()) {
    c.processor_type = it->get<std::string>();
  } else if (auto it2 = j.find("feature_extractor_type"); it2 != j.end() && it2->is_string()) {
    c.processor_type = it2->get<std::string>();
  } else {
    fail("preprocessor_config.json names no image_processor_type");
  }
  c.kind = kind_from_type(c.processor_type);
  const bool siglip = c.kind == ProcessorKind::kSiglip || c.kind == ProcessorKind::kGemma3;
  if (c.kind == ProcessorKind::kGemma3) {
    c.resample = Resample::kBilinear;
    if (bool_field(j, "do_pan_and_scan", false))
      fail("preprocessor_config.json: do_pan_and_scan (Gemma 3 pan-and-scan crops) is not supported");
  }

  c.do_resize = bool_field(j, "do_resize", true);
  const json default_size =
      siglip ? json{{"height", 224}, {"width", 224}} : json{{"shortest_edge", 224}};
  auto size_it = j.find("size");
  const SizeDict size =
      size_dict(size_it != j.end() && !size_it->is_null() ? *size_it : default_size,
                /*default_to_square=*/false, "size");
  if (siglip) {
    // SiglipImageProcessor resizes to size["height"], size["width"] only.
    if (size.height == 0) fail("preprocessor_config.json: SigLIP size needs height and width");
    c.resize_height = size.height;
    c.resize_width = size.width;
  } else if (size.shortest_edge > 0) {  // CLIPImageProcessor.resize checks shortest_edge first
    c.shortest_edge = size.shortest_edge;
  } else {
    c.resize_height = size.height;
    c.resize_width = size.width;
  }

  if (auto it = j.find("resample"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer()) fail("preprocessor_config.json: resample must be an integer");
    c.resample = resample_from_pil(it->get<int>());
  }

  if (!siglip) {  // SigLIP has no center crop step at all
    c.do_center_crop = bool_field(j, "do_center_crop", true);
    auto crop_it = j.find("crop_size");
    const SizeDict crop =
        size_dict(crop_it != j.end() && !crop_it->is_null() ? *crop_it
                                                            : json{{"height", 224}, {"width", 224}},
                  /*default_to_square=*/true, "crop_size");
    if (crop.height == 0) fail("preprocessor_config.json: crop_size needs height and width");
    c.crop_height = crop.height;
    c.crop_width = crop.width;
  }

  c.do_rescale = bool_field(j, "do_rescale", true);
  if (auto it = j.find("rescale_factor"); it != j.end() && !it->is_null()) {
    if (!it->is_number()) fail("preprocessor_config.json: rescale_factor must be a number");
    c.rescale_factor = it->get<double>();
    if (!std::isfinite(c.rescale_factor)) fail("preprocessor_config.json: rescale_factor");
  }
  c.do_normalize = bool_field(j, "do_normalize", true);
  c.image_mean = triple_field(j, "image_mean", siglip ? kHalf : kClipMean);
  c.image_std = triple_field(j, "image_std", siglip ? kHalf : kClipStd);
  for (double s : c.image_std) {
    if (c.do_normalize && s == 0.0) fail("preprocessor_config.json: image_std contains 0");
  }
  c.do_convert_rgb = bool_field(j, "do_convert_rgb", c.kind != ProcessorKind::kSiglip);
  c.do_pad = c.kind == ProcessorKind::kLlava && bool_field(j, "do_pad", false);
  return c;
}

PreprocessorConfig parse_preprocessor_config_text(std::string_view json_text) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail("preprocessor_config.json is not valid JSON");
  return parse_preprocessor_config(j);
}

PreprocessorConfig load_preprocessor_config(const std::string& path) {
  std::filesystem::path file(path);
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) file /= "preprocessor_config.json";
  std::ifstream in(file);
  if (!in) fail("cannot open ", file.string());
  std::stringstream text;
  text << in.rdbuf();
  const std::string content = text.str();
  return parse_preprocessor_config_text(content);
}

std::pair<int, int> resize_output_size(int height, int width, const PreprocessorConfig& config) {
  IRIS_CHECK(height > 0 && width > 0) << height << "x" << width;
  if (config.shortest_edge == 0) return {config.resize_height, config.resize_width};
  // transformers' get_resize_output_image_size(default_to_square=False): Python's
  // int(size * long / short) — an exact integer product, one correctly rounded division
  // (exact in double: both operands are far below 2^53), truncated.
  const int64_t short_side = std::min(height, width), long_side = std::max(height, width);
  const int64_t size = config.shortest_edge;
  const double new_long_f = static_cast<double>(size * long_side) / static_cast<double>(short_side);
  constexpr double kMaxSide = 1 << 24;
  if (!(new_long_f < kMaxSide)) {
    fail("image of ", width, "x", height, " is too elongated: resizing its short side to ", size,
         " makes the long side ", new_long_f, " pixels");
  }
  const int new_long = static_cast<int>(new_long_f);
  const int new_short = static_cast<int>(size);
  return width <= height ? std::pair{new_long, new_short} : std::pair{new_short, new_long};
}

DecodedImage center_crop(const DecodedImage& image, int crop_height, int crop_width) {
  IRIS_CHECK(crop_height > 0 && crop_width > 0) << crop_height << "x" << crop_width;
  const int ch = image.channels;
  const CropAxis rows = crop_axis(static_cast<int>(image.height), crop_height);
  const CropAxis cols = crop_axis(static_cast<int>(image.width), crop_width);
  DecodedImage out;
  out.width = static_cast<uint32_t>(cols.length);
  out.height = static_cast<uint32_t>(rows.length);
  out.channels = ch;
  out.pixels.assign(size_t{out.width} * out.height * ch, 0);
  for (int y = 0; y < rows.length; ++y) {
    const int sy = y + rows.offset;
    if (sy < 0 || sy >= static_cast<int>(image.height)) continue;
    for (int x = 0; x < cols.length; ++x) {
      const int sx = x + cols.offset;
      if (sx < 0 || sx >= static_cast<int>(image.width)) continue;
      const uint8_t* src =
          &image.pixels[(size_t{static_cast<uint32_t>(sy)} * image.width + sx) * ch];
      std::copy(src, src + ch,
                &out.pixels[(size_t{static_cast<uint32_t>(y)} * out.width + x) * ch]);
    }
  }
  return out;
}

DecodedImage pad_to_square(const DecodedImage& image, const std::array<uint8_t, 3>& color) {
  IRIS_CHECK(image.channels == 3) << "pad_to_square takes RGB, got " << image.channels;
  if (image.width == image.height) return image;
  const uint32_t side = std::max(image.width, image.height);
  DecodedImage out;
  out.width = out.height = side;
  out.channels = 3;
  out.pixels.resize(size_t{side} * side * 3);
  for (size_t i = 0; i < size_t{side} * side; ++i) {
    std::copy(color.begin(), color.end(), &out.pixels[i * 3]);
  }
  const uint32_t y0 = image.width > image.height ? (side - image.height) / 2 : 0;
  const uint32_t x0 = image.width > image.height ? 0 : (side - image.width) / 2;
  const size_t row = size_t{image.width} * 3;
  for (uint32_t y = 0; y < image.height; ++y) {
    std::copy(&image.pixels[y * row], &image.pixels[y * row] + row,
              &out.pixels[((size_t{y0} + y) * side + x0) * 3]);
  }
  return out;
}

PixelValues preprocess(const DecodedImage& image, const PreprocessorConfig& config) {
  IRIS_CHECK(image.width > 0 && image.height > 0) << "empty image";
  // 1. convert_to_rgb (Pillow's convert("RGB")).
  DecodedImage rgb_storage;
  const DecodedImage* current = &image;
  if (image.channels != 3) {
    rgb_storage = convert_to_rgb(image);
    current = &rgb_storage;
  }
  // 2. LlavaImageProcessor.pad_to_square, background tuple(int(x * 255) for x in mean).
  DecodedImage padded;
  if (config.do_pad) {
    std::array<uint8_t, 3> color{};
    for (int c = 0; c < 3; ++c) {
      const int v = static_cast<int>(config.image_mean[c] * 255);  // int() truncates
      IRIS_CHECK(v >= 0 && v <= 255) << "pad color " << v << " from image_mean";
      color[c] = static_cast<uint8_t>(v);
    }
    padded = pad_to_square(*current, color);
    current = &padded;
  }
  // 3 + 4. Resize, then center crop. The crop only ever shows a window of the resized
  // image, so only that window is resampled (exactly the same pixels; see resize_region).
  int height = static_cast<int>(current->height), width = static_cast<int>(current->width);
  if (config.do_resize) std::tie(height, width) = resize_output_size(height, width, config);
  CropAxis rows{height, 0}, cols{width, 0};
  if (config.do_center_crop) {
    rows = crop_axis(height, config.crop_height);
    cols = crop_axis(width, config.crop_width);
  }
  // Source window of the resized image that lands in the output, and where it lands.
  const int src_y0 = std::max(0, rows.offset), src_y1 = std::min(height, rows.length + rows.offset);
  const int src_x0 = std::max(0, cols.offset), src_x1 = std::min(width, cols.length + cols.offset);
  DecodedImage window;
  if (src_y1 > src_y0 && src_x1 > src_x0) {
    if (config.do_resize) {
      window = resize_region(*current, static_cast<uint32_t>(width), static_cast<uint32_t>(height),
                             config.resample, static_cast<uint32_t>(src_x0),
                             static_cast<uint32_t>(src_y0), static_cast<uint32_t>(src_x1 - src_x0),
                             static_cast<uint32_t>(src_y1 - src_y0));
    } else {
      window.width = static_cast<uint32_t>(src_x1 - src_x0);
      window.height = static_cast<uint32_t>(src_y1 - src_y0);
      window.channels = 3;
      window.pixels.resize(size_t{window.width} * window.height * 3);
      const size_t row = size_t{window.width} * 3;
      for (int y = src_y0; y < src_y1; ++y) {
        const uint8_t* src =
            &current->pixels[(static_cast<size_t>(y) * current->width + src_x0) * 3];
        std::copy(src, src + row, &window.pixels[static_cast<size_t>(y - src_y0) * row]);
      }
    }
  }

  // 5 + 6. rescale: uint8 * factor in float64, cast to float32 (image_transforms.rescale);
  // normalize: (x - mean) / std in float32, mean/std cast to float32 (image_transforms.normalize).
  std::array<float, 256 * 3> lut{};  // the result depends only on (channel, uint8 value)
  for (int c = 0; c < 3; ++c) {
    const float mean = static_cast<float>(config.image_mean[c]);
    const float std = static_cast<float>(config.image_std[c]);
    for (int v = 0; v < 256; ++v) {
      float x = config.do_rescale
                    ? static_cast<float>(static_cast<double>(v) * config.rescale_factor)
                    : static_cast<float>(v);
      if (config.do_normalize) x = (x - mean) / std;
      lut[c * 256 + v] = x;
    }
  }
  PixelValues out;
  out.channels = 3;
  out.height = rows.length;
  out.width = cols.length;
  const size_t plane = size_t{static_cast<uint32_t>(out.height)} * out.width;
  out.data.resize(plane * 3);
  for (int c = 0; c < 3; ++c) {  // crop padding is uint8 zero before rescale/normalize
    std::fill(out.data.begin() + c * plane, out.data.begin() + (c + 1) * plane, lut[c * 256]);
  }
  const int dst_y0 = src_y0 - rows.offset, dst_x0 = src_x0 - cols.offset;
  for (uint32_t y = 0; y < window.height; ++y) {
    const uint8_t* src = &window.pixels[size_t{y} * window.width * 3];
    for (uint32_t x = 0; x < window.width; ++x, src += 3) {
      const size_t at = (size_t{dst_y0 + y}) * out.width + dst_x0 + x;
      out.data[at] = lut[src[0]];
      out.data[plane + at] = lut[256 + src[1]];
      out.data[2 * plane + at] = lut[512 + src[2]];
    }
  }
  return out;
}

Patches patchify(const PixelValues& pv, int patch_size) {
  IRIS_CHECK(patch_size > 0) << "patch_size " << patch_size;
  IRIS_CHECK(pv.channels > 0 && pv.height >= patch_size && pv.width >= patch_size)
      << "image " << pv.channels << "x" << pv.height << "x" << pv.width << " for patch "
      << patch_size;
  IRIS_CHECK(pv.data.size() == size_t{static_cast<uint32_t>(pv.channels)} * pv.height * pv.width)
      << "pixel_values of " << pv.data.size() << " floats";
  Patches p;
  p.patch_size = patch_size;
  p.grid_height = pv.height / patch_size;  // floor, as Conv2d(stride=P, padding=0)
  p.grid_width = pv.width / patch_size;
  p.patch_dim = pv.channels * patch_size * patch_size;
  p.data.resize(size_t{static_cast<uint32_t>(p.num_patches())} * p.patch_dim);
  float* dst = p.data.data();
  for (int gy = 0; gy < p.grid_height; ++gy) {
    for (int gx = 0; gx < p.grid_width; ++gx) {
      for (int c = 0; c < pv.channels; ++c) {
        for (int ky = 0; ky < patch_size; ++ky) {
          const float* src =
              &pv.data[(size_t{static_cast<uint32_t>(c)} * pv.height + gy * patch_size + ky) *
                           pv.width +
                       gx * patch_size];
          dst = std::copy(src, src + patch_size, dst);
        }
      }
    }
  }
  return p;
}

}  // namespace iris::image
