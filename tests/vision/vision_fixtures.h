// Shared by the vision tests: where make_vision_checkpoints.py wrote the checkpoints and
// fixtures, and pixel values -> patches through the image pipeline.
#pragma once

#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/image/preprocess.h"

namespace iris::vision_test {

inline std::string fixture_dir() {
  if (const char* env = std::getenv("IRIS_VISION_FIXTURES")) return env;
  return IRIS_VISION_FIXTURES;
}

inline nlohmann::json load_fixtures(const std::string& file = "fixtures.json") {
  const std::string path = fixture_dir() + "/" + file;
  std::ifstream in(path);
  if (!in) FAIL("cannot open " << path << " (run make_vision_checkpoints.py)");
  return nlohmann::json::parse(in);
}

// pixel_values [n, C, S, S] -> patches [n * grid^2, C * P * P] through the image pipeline's
// patchify (row (image, gy, gx), column (c, ky, kx): the order of Conv2d's weight.view(D, -1)).
inline std::vector<float> patchify(const std::vector<float>& px, int n, int c, int s, int p) {
  std::vector<float> out;
  const size_t per_image = static_cast<size_t>(c) * s * s;
  for (int i = 0; i < n; ++i) {
    image::PixelValues pv;
    pv.channels = c;
    pv.height = s;
    pv.width = s;
    pv.data.assign(px.begin() + i * per_image, px.begin() + (i + 1) * per_image);
    const image::Patches patches = image::patchify(pv, p);
    out.insert(out.end(), patches.data.begin(), patches.data.end());
  }
  return out;
}

}  // namespace iris::vision_test
