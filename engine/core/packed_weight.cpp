// Packed quantized weights: the one dequantization both the loader and the CPU GEMM use.
#include "engine/core/packed_weight.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <sstream>

#include "engine/core/check.h"
#include "engine/core/dtype.h"

namespace iris {
namespace {

const std::array<float, 256>& fp8_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = fp8_e4m3_to_f32(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

// e4m3fn code -> fp32 without a table: the 7 magnitude bits placed at fp32's exponent /
// mantissa boundary read as an fp32 (a normal 2^(e-127) (1 + m/8), or for e = 0 the
// denormal m/8 * 2^-126), times 2^120, are exactly 2^(e-7) (1 + m/8) and m/8 * 2^-6: the
// e4m3 value, bit-identical to fp8_e4m3_to_f32 for every non-NaN code.
inline float fp8_bits_to_f32(uint8_t code) {
  const uint32_t bits = (static_cast<uint32_t>(code & 0x80) << 24) | (static_cast<uint32_t>(code & 0x7F) << 20);
  float f;
  std::memcpy(&f, &bits, 4);
  return f * 0x1p120f;
}

inline int nibble_at(const uint8_t* row, int64_t c) {
  return (row[c >> 1] >> ((c & 1) * 4)) & 0xF;
}

inline void set_nibble(uint8_t* row, int64_t c, int v) {
  uint8_t& b = row[c >> 1];
  const int shift = static_cast<int>(c & 1) * 4;
  b = static_cast<uint8_t>((b & ~(0xF << shift)) | ((v & 0xF) << shift));
}

const PackedWeight::Segment& segment_of(const PackedWeight& w, int64_t r) {
  for (const auto& s : w.segments)
    if (r < s.row_end) return s;
  fail("packed weight row ", r, " beyond its ", w.rows, " rows");
}

}  // namespace

size_t PackedWeight::bytes() const {
  size_t n = codes.size() + scales.size() * sizeof(float) + zeros.size();
  for (const auto& s : segments) n += s.gidx.size() * sizeof(int32_t);
  return n;
}

std::string PackedWeight::describe() const {
  std::ostringstream s;
  s << (kind == Kind::kFp8 ? "FP8" : "INT4") << " [" << rows << ", " << cols << "], group "
    << group_size;
  if (col_phase) s << " (phase " << col_phase << ")";
  return s.str();
}

void PackedWeight::dequantize_rows(int64_t r0, int64_t r1, float* dst) const {
  IRIS_CHECK(r0 >= 0 && r0 <= r1 && r1 <= rows) << "rows [" << r0 << ", " << r1 << ") of " << describe();
  const std::array<float, 256>& table = fp8_table();
  const int64_t rb = row_bytes();
  for (int64_t r = r0; r < r1; ++r) {
    const Segment& seg = segment_of(*this, r);
    const uint8_t* code = codes.data() + r * rb;
    const float* s = scales.data() + r * groups_per_row;
    const int8_t* z = kind == Kind::kInt4 ? zeros.data() + r * groups_per_row : nullptr;
    float* out = dst + (r - r0) * cols;
    if (!seg.gidx.empty()) {
      const int32_t* g = seg.gidx.data();
      if (kind == Kind::kFp8) {
        for (int64_t c = 0; c < cols; ++c) out[c] = table[code[c]] * s[g[c]];
      } else {
        for (int64_t c = 0; c < cols; ++c)
          out[c] = static_cast<float>(nibble_at(code, c) - z[g[c]]) * s[g[c]];
      }
      continue;
    }
    // Contiguous groups: column c belongs to group (c + col_phase) / group_size. The loops
    // below are branch-free so the compiler vectorises them.
    int64_t c = 0;
    for (int64_t grp = 0; c < cols; ++grp) {
      const int64_t end = std::min(cols, (grp + 1) * group_size - col_phase);
      const float sc = s[grp];
      if (kind == Kind::kFp8) {
        for (; c < end; ++c) out[c] = fp8_bits_to_f32(code[c]) * sc;
      } else {
        const int zero = z[grp];
        if (c % 2 == 1 && c < end) {
          out[c] = static_cast<float>(nibble_at(code, c) - zero) * sc;
          ++c;
        }
        // Whole bytes: columns c and c + 1 from byte c / 2.
        const int64_t pairs = (end - c) / 2;
        const uint8_t* b = code + c / 2;
        float* o = out + c;
        for (int64_t i = 0; i < pairs; ++i) {
          o[2 * i] = static_cast<float>(static_cast<int>(b[i] & 0xF) - zero) * sc;
          o[2 * i + 1] = static_cast<float>(static_cast<int>(b[i] >> 4) - zero) * sc;
        }
        c += 2 * pairs;
        if (c < end) {
          out[c] = static_cast<float>(nibble_at(code, c) - zero) * sc;
          ++c;
        }
      }
    }
  }
}

PackedWeight PackedWeight::slice_rows(int64_t begin, int64_t count) const {
  IRIS_CHECK(begin >= 0 && count >= 0 && begin + count <= rows)
      << "row slice [" << begin << ", +" << count << ") of " << describe();
  PackedWeight w;
  w.kind = kind;
  w.rows = count;
  w.cols = cols;
  w.dynamic_activations = dynamic_activations;
  w.group_size = group_size;
  w.col_phase = col_phase;
  w.groups_per_row = groups_per_row;
  const int64_t rb = row_bytes();
  w.codes.assign(codes.begin() + begin * rb, codes.begin() + (begin + count) * rb);
  w.scales.assign(scales.begin() + begin * groups_per_row,
                  scales.begin() + (begin + count) * groups_per_row);
  if (!zeros.empty())
    w.zeros.assign(zeros.begin() + begin * groups_per_row,
                   zeros.begin() + (begin + count) * groups_per_row);
  int64_t start = 0;
  for (const auto& s : segments) {
    const int64_t lo = std::max(start, begin), hi = std::min(s.row_end, begin + count);
    if (lo < hi) w.segments.push_back({hi - begin, s.gidx});
    start = s.row_end;
  }
  if (w.segments.empty()) w.segments.push_back({0, {}});
  return w;
}

PackedWeight PackedWeight::slice_cols(int64_t begin, int64_t count) const {
  IRIS_CHECK(begin >= 0 && count > 0 && begin + count <= cols)
      << "column slice [" << begin << ", +" << count << ") of " << describe();
  bool any_gidx = false, all_gidx = true;
  for (const auto& s : segments) {
    any_gidx |= !s.gidx.empty();
    all_gidx &= !s.gidx.empty();
  }
  // With group indices everywhere, keep only the groups the shard's columns use (renumbered
  // in order); a matrix mixing both layouts keeps every group.
  std::vector<int32_t> remap;
  if (all_gidx) {
    remap.assign(static_cast<size_t>(groups_per_row), -1);
    for (const auto& s : segments)
      for (int64_t c = begin; c < begin + count; ++c) remap[s.gidx[c]] = 0;
    int32_t next = 0;
    for (int32_t& g : remap)
      if (g == 0) g = next++;
  }
  PackedWeight w;
  w.kind = kind;
  w.rows = rows;
  w.cols = count;
  w.dynamic_activations = dynamic_activations;
  w.group_size = group_size;
  // Without group indices, keep only the groups the columns touch.
  int64_t g0 = 0, groups = groups_per_row;
  if (!any_gidx) {
    g0 = (begin + col_phase) / group_size;
    const int64_t g1 = (begin + count - 1 + col_phase) / group_size + 1;
    groups = g1 - g0;
    w.col_phase = (begin + col_phase) % group_size;
  }
  if (!remap.empty()) groups = *std::max_element(remap.begin(), remap.end()) + 1;
  w.groups_per_row = groups;
  w.scales.resize(static_cast<size_t>(rows * groups));
  if (!zeros.empty()) w.zeros.resize(static_cast<size_t>(rows * groups));
  for (int64_t r = 0; r < rows; ++r) {
    if (!remap.empty()) {
      for (int64_t g = 0; g < groups_per_row; ++g) {
        if (remap[g] < 0) continue;
        w.scales[r * groups + remap[g]] = scales[r * groups_per_row + g];
        if (!zeros.empty()) w.zeros[r * groups + remap[g]] = zeros[r * groups_per_row + g];
      }
      continue;
    }
    std::copy_n(scales.begin() + r * groups_per_row + g0, groups, w.scales.begin() + r * groups);
    if (!zeros.empty())
      std::copy_n(zeros.begin() + r * groups_per_row + g0, groups, w.zeros.begin() + r * groups);
  }
  const int64_t rb = row_bytes(), nrb = w.row_bytes();
  w.codes.assign(static_cast<size_t>(rows * nrb), 0);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = codes.data() + r * rb;
    uint8_t* dst = w.codes.data() + r * nrb;
    if (kind == Kind::kFp8) {
      std::copy_n(src + begin, count, dst);
    } else if (begin % 2 == 0) {
      std::copy_n(src + begin / 2, nrb, dst);
      if (count % 2) dst[nrb - 1] &= 0x0F;  // the high nibble is past the last column
    } else {
      for (int64_t c = 0; c < count; ++c) set_nibble(dst, c, nibble_at(src, begin + c));
    }
  }
  for (const auto& s : segments) {
    PackedWeight::Segment n{s.row_end, {}};
    if (!s.gidx.empty()) {
      n.gidx.assign(s.gidx.begin() + begin, s.gidx.begin() + begin + count);
      if (!remap.empty())
        for (int32_t& g : n.gidx) g = remap[g];
    }
    w.segments.push_back(std::move(n));
  }
  return w;
}

void PackedWeight::append_rows(const PackedWeight& other, const std::string& what) {
  if (rows == 0 && segments.size() <= 1 && codes.empty()) {
    *this = other;
    return;
  }
  if (other.kind != kind || other.cols != cols || other.group_size != group_size ||
      other.col_phase != col_phase || other.groups_per_row != groups_per_row)
    fail(what, ": cannot fuse packed weights of different layouts (", describe(), " and ",
         other.describe(), ")");
  const int64_t base = rows;
  codes.insert(codes.end(), other.codes.begin(), other.codes.end());
  scales.insert(scales.end(), other.scales.begin(), other.scales.end());
  zeros.insert(zeros.end(), other.zeros.begin(), other.zeros.end());
  for (const auto& s : other.segments) {
    // Neighbouring segments with the same column map merge.
    if (!segments.empty() && segments.back().gidx == s.gidx) {
      segments.back().row_end = base + s.row_end;
    } else {
      segments.push_back({base + s.row_end, s.gidx});
    }
  }
  rows += other.rows;
}

void PackedWeight::validate(const std::string& what) const {
  IRIS_CHECK(rows >= 0 && cols > 0 && group_size > 0 && col_phase >= 0 && col_phase < group_size &&
             groups_per_row > 0)
      << what << ": packed layout " << describe() << " with " << groups_per_row << " groups";
  IRIS_CHECK(codes.size() == static_cast<size_t>(rows * row_bytes()) &&
             scales.size() == static_cast<size_t>(rows * groups_per_row) &&
             zeros.size() == (kind == Kind::kInt4 ? scales.size() : 0))
      << what << ": packed arrays do not match " << describe();
  IRIS_CHECK(!segments.empty() && segments.back().row_end == rows)
      << what << ": packed row segments end at " << (segments.empty() ? -1 : segments.back().row_end);
  for (const auto& s : segments) {
    if (s.gidx.empty()) {
      IRIS_CHECK((cols - 1 + col_phase) / group_size < groups_per_row)
          << what << ": " << cols << " columns need more than " << groups_per_row << " groups";
      continue;
    }
    IRIS_CHECK(static_cast<int64_t>(s.gidx.size()) == cols) << what << ": g_idx size";
    for (int32_t g : s.gidx)
      IRIS_CHECK(g >= 0 && g < groups_per_row) << what << ": group index " << g << " outside "
                                               << groups_per_row << " groups";
  }
}

}  // namespace iris
