// Pillow-exact 8-bit resampling (see resample.h for the algorithm). Every floating-point
// expression that feeds a coefficient is written in Pillow's order of operations, because
// a last-bit difference in a weight can move a fixed-point coefficient by one and a pixel
// by one level. The integer accumulation is exact, so its loop order is free; the vertical
// pass runs row-wise for cache locality.
#include "engine/image/resample.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "engine/core/check.h"

namespace iris::image {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr double kPi = std::numbers::pi;

double box_filter(double x) {
  if (x > -0.5 && x <= 0.5) return 1.0;
  return 0.0;
}

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

double hamming_filter(double x) {
  if (x < 0.0) x = -x;
  if (x == 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * kPi;
  // Pillow writes the constants as floats (0.54f, 0.46f); they are promoted to double.
  return std::sin(x) / x * (static_cast<double>(0.54f) + static_cast<double>(0.46f) * std::cos(x));
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;  // Pillow's bicubic (Keys) parameter
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * kPi;
  return std::sin(x) / x;
}

double lanczos_filter(double x) {
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_for(Resample r) {
  switch (r) {
    case Resample::kBox:
      return {box_filter, 0.5};
    case Resample::kBilinear:
      return {bilinear_filter, 1.0};
    case Resample::kHamming:
      return {hamming_filter, 1.0};
    case Resample::kBicubic:
      return {bicubic_filter, 2.0};
    case Resample::kLanczos:
      return {lanczos_filter, 3.0};
    case Resample::kNearest:
      break;
  }
  fail("no convolution filter for resample mode ", static_cast<int>(r));
}

// For output indices [first_out, first_out + n): the first source index, the number of
// taps, and `ksize` fixed-point weights (only the first `count` of them used). Each output
// index's weights depend only on the sizes and the index, so a window of the output can be
// computed on its own and equals the same window of the full resize.
struct Coefficients {
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;  // [n, ksize]
};

Coefficients precompute_coefficients(int in_size, int out_size, int first_out, int n,
                                     const Filter& filter) {
  // Pillow passes the box as floats (0, in_size); scale is computed from their difference.
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);
  const double scale = static_cast<double>(in1 - in0) / out_size;
  double filterscale = scale;
  if (filterscale < 1.0) filterscale = 1.0;
  const double support = filter.support * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(n);
  c.count.resize(n);
  c.weights.assign(static_cast<size_t>(n) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int i = 0; i < n; ++i) {
    const int xx = first_out + i;
    const double center = in0 + (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    int x = 0;
    for (; x < xmax; ++x) {
      const double w = filter.fn((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[x] /= ww;
    }
    int32_t* out = &c.weights[static_cast<size_t>(i) * c.ksize];
    for (x = 0; x < xmax; ++x) {
      out[x] = k[x] < 0 ? static_cast<int32_t>(-0.5 + k[x] * (1 << kPrecisionBits))
                        : static_cast<int32_t>(0.5 + k[x] * (1 << kPrecisionBits));
    }
    c.first[i] = xmin;
    c.count[i] = std::max(xmax, 0);
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  const int32_t s = v >> kPrecisionBits;  // arithmetic shift (C++20), as in Pillow
  return static_cast<uint8_t>(s < 0 ? 0 : (s > 255 ? 255 : s));
}

// Source rows [row_first, row_first + rows) of `in` → `rows` rows of width out_w.
void horizontal_pass(const uint8_t* in, int in_w, int channels, int row_first, int rows,
                     const Coefficients& c, int out_w, uint8_t* out) {
  constexpr int32_t kBias = 1 << (kPrecisionBits - 1);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* src = in + static_cast<size_t>(row_first + y) * in_w * channels;
    uint8_t* dst = out + static_cast<size_t>(y) * out_w * channels;
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = &c.weights[static_cast<size_t>(xx) * c.ksize];
      const uint8_t* s = src + static_cast<size_t>(c.first[xx]) * channels;
      const int n = c.count[xx];
      if (channels == 3) {
        int32_t s0 = kBias, s1 = kBias, s2 = kBias;
        for (int x = 0; x < n; ++x, s += 3) {
          s0 += s[0] * k[x];
          s1 += s[1] * k[x];
          s2 += s[2] * k[x];
        }
        dst[xx * 3 + 0] = clip8(s0);
        dst[xx * 3 + 1] = clip8(s1);
        dst[xx * 3 + 2] = clip8(s2);
      } else {
        int32_t s0 = kBias;
        for (int x = 0; x < n; ++x) s0 += s[x] * k[x];
        dst[xx] = clip8(s0);
      }
    }
  }
}

// `in` has in_h rows of `row_len` samples; output row yy sums rows first[yy]... .
void vertical_pass(const uint8_t* in, size_t row_len, const Coefficients& c, int out_h,
                   uint8_t* out) {
  constexpr int32_t kBias = 1 << (kPrecisionBits - 1);
  std::vector<int32_t> acc(row_len);
  for (int yy = 0; yy < out_h; ++yy) {
    std::fill(acc.begin(), acc.end(), kBias);
    const int32_t* k = &c.weights[static_cast<size_t>(yy) * c.ksize];
    for (int y = 0; y < c.count[yy]; ++y) {
      const uint8_t* src = in + static_cast<size_t>(c.first[yy] + y) * row_len;
      const int32_t w = k[y];
      for (size_t i = 0; i < row_len; ++i) acc[i] += src[i] * w;
    }
    uint8_t* dst = out + static_cast<size_t>(yy) * row_len;
    for (size_t i = 0; i < row_len; ++i) dst[i] = clip8(acc[i]);
  }
}

struct Window {
  int x0, y0, w, h;
};

DecodedImage resize_convolution(const DecodedImage& image, int out_w, int out_h, Resample resample,
                                const Window& win) {
  const Filter filter = filter_for(resample);
  const int in_w = static_cast<int>(image.width), in_h = static_cast<int>(image.height);
  const int ch = image.channels;
  // As Pillow: a pass runs only when its dimension changes (an unchanged one is identity).
  const bool need_horizontal = out_w != in_w;
  const bool need_vertical = out_h != in_h;

  Coefficients vert;
  int ybox_first = win.y0, ybox_last = win.y0 + win.h;  // source rows needed
  if (need_vertical) {
    vert = precompute_coefficients(in_h, out_h, win.y0, win.h, filter);
    ybox_first = vert.first[0];
    ybox_last = vert.first[win.h - 1] + vert.count[win.h - 1];
    for (int& f : vert.first) f -= ybox_first;
  }
  const int rows = ybox_last - ybox_first;
  std::vector<uint8_t> temp(static_cast<size_t>(rows) * win.w * ch);
  if (need_horizontal) {
    const Coefficients horiz = precompute_coefficients(in_w, out_w, win.x0, win.w, filter);
    horizontal_pass(image.pixels.data(), in_w, ch, ybox_first, rows, horiz, win.w, temp.data());
  } else {
    const size_t row_bytes = static_cast<size_t>(win.w) * ch;
    for (int y = 0; y < rows; ++y) {
      const uint8_t* src =
          image.pixels.data() + (static_cast<size_t>(ybox_first + y) * in_w + win.x0) * ch;
      std::copy(src, src + row_bytes, temp.data() + y * row_bytes);
    }
  }

  DecodedImage out;
  out.width = static_cast<uint32_t>(win.w);
  out.height = static_cast<uint32_t>(win.h);
  out.channels = ch;
  if (!need_vertical) {
    out.pixels = std::move(temp);
    return out;
  }
  out.pixels.resize(static_cast<size_t>(win.w) * win.h * ch);
  vertical_pass(temp.data(), static_cast<size_t>(win.w) * ch, vert, win.h, out.pixels.data());
  return out;
}

// Pillow's NEAREST resize goes through its affine "scale" transform: source coordinates
// are accumulated (not multiplied) in double, starting half a step in, and truncated; the
// accumulation runs from index 0 even for a window, so the values are the same.
DecodedImage resize_nearest(const DecodedImage& image, int out_w, int out_h, const Window& win) {
  const int in_w = static_cast<int>(image.width), in_h = static_cast<int>(image.height);
  const int ch = image.channels;
  const double a0 = static_cast<double>(static_cast<float>(in_w) - 0.0f) / out_w;
  const double a4 = static_cast<double>(static_cast<float>(in_h) - 0.0f) / out_h;
  auto coord = [](double v) { return v < 0.0 ? -1 : static_cast<int>(v); };
  std::vector<int> xin(win.w, -1);
  double xo = 0.0 + a0 * 0.5;
  for (int x = 0; x < win.x0 + win.w; ++x) {
    const int xi = coord(xo);
    if (x >= win.x0 && xi >= 0 && xi < in_w) xin[x - win.x0] = xi;
    xo += a0;
  }
  DecodedImage out;
  out.width = static_cast<uint32_t>(win.w);
  out.height = static_cast<uint32_t>(win.h);
  out.channels = ch;
  out.pixels.assign(static_cast<size_t>(win.w) * win.h * ch, 0);  // Pillow fills with 0
  double yo = 0.0 + a4 * 0.5;
  for (int y = 0; y < win.y0 + win.h; ++y) {
    const int yi = coord(yo);
    yo += a4;
    if (y < win.y0 || yi < 0 || yi >= in_h) continue;
    const uint8_t* src = image.pixels.data() + static_cast<size_t>(yi) * in_w * ch;
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(y - win.y0) * win.w * ch;
    for (int x = 0; x < win.w; ++x) {
      if (xin[x] < 0) continue;
      for (int c = 0; c < ch; ++c) dst[x * ch + c] = src[xin[x] * ch + c];
    }
  }
  return out;
}

}  // namespace

Resample resample_from_pil(int value) {
  if (value < 0 || value > 5) {
    fail("unknown resample filter ", value,
         " (Pillow's values: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming)");
  }
  return static_cast<Resample>(value);
}

std::string_view resample_name(Resample filter) {
  switch (filter) {
    case Resample::kNearest:
      return "nearest";
    case Resample::kLanczos:
      return "lanczos";
    case Resample::kBilinear:
      return "bilinear";
    case Resample::kBicubic:
      return "bicubic";
    case Resample::kBox:
      return "box";
    case Resample::kHamming:
      return "hamming";
  }
  return "unknown";
}

DecodedImage resize_region(const DecodedImage& image, uint32_t out_width, uint32_t out_height,
                           Resample filter, uint32_t x0, uint32_t y0, uint32_t width,
                           uint32_t height) {
  IRIS_CHECK(image.channels == 1 || image.channels == 3)
      << "resize takes L or RGB images (Pillow premultiplies alpha for LA/RGBA); got "
      << image.channels << " channels";
  IRIS_CHECK(image.width > 0 && image.height > 0) << "empty image";
  IRIS_CHECK(image.pixels.size() == size_t{image.width} * image.height * image.channels)
      << "pixel buffer of " << image.pixels.size() << " bytes";
  // Every index computation below fits in int, and sizes stay exact as floats, as in Pillow.
  constexpr uint32_t kMaxSide = 1u << 24;
  IRIS_CHECK(out_width > 0 && out_height > 0 && out_width <= kMaxSide && out_height <= kMaxSide &&
             image.width <= kMaxSide && image.height <= kMaxSide)
      << "resize " << image.width << "x" << image.height << " -> " << out_width << "x"
      << out_height;
  IRIS_CHECK(width > 0 && height > 0 && x0 < out_width && y0 < out_height &&
             width <= out_width - x0 && height <= out_height - y0)
      << "window " << x0 << "," << y0 << " " << width << "x" << height << " of " << out_width << "x"
      << out_height;
  const Window win{static_cast<int>(x0), static_cast<int>(y0), static_cast<int>(width),
                   static_cast<int>(height)};
  if (filter == Resample::kNearest && (out_width != image.width || out_height != image.height)) {
    return resize_nearest(image, static_cast<int>(out_width), static_cast<int>(out_height), win);
  }
  // Same size: Pillow returns a copy; the convolution path then runs no pass and copies too.
  const Resample conv = filter == Resample::kNearest ? Resample::kBilinear : filter;
  return resize_convolution(image, static_cast<int>(out_width), static_cast<int>(out_height), conv,
                            win);
}

DecodedImage resize(const DecodedImage& image, uint32_t out_width, uint32_t out_height,
                    Resample filter) {
  return resize_region(image, out_width, out_height, filter, 0, 0, out_width, out_height);
}

}  // namespace iris::image
