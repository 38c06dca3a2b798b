// A quantized linear weight kept packed in host memory: one layout for every checkpoint
// format the loader reads (engine/loader/quantization.h), produced by the loader and
// consumed by a backend's linear (the CPU backend dequantizes tiles on the fly, cpu_gemm.h).
//
// Logical shape [rows, cols] = [out, in]. Element (r, c) is
//   FP8:   e4m3(code[r, c]) * scale[r, group(c)]
//   INT4:  float(q[r, c] - zero[r, group(c)]) * scale[r, group(c)]
// as one fp32 product, exactly what the loader's dequantization computes (it is the same
// function: dequantize_rows). group(c) is (c + col_phase) / group_size, or gidx[c] where the
// format stores a group index per input column (GPTQ desc_act / g_idx). Per-tensor and
// per-channel FP8 scales are one group per row; 128x128 blocks are groups of 128 columns
// whose scale is repeated on each of the block's rows, so any row range can be cut out.
//
// Rows can be sliced and concatenated (a fused q|k|v or gate|up matrix, a tensor-parallel
// column shard), columns sliced (a row-parallel shard) at any offset: col_phase keeps the
// group boundaries of the full matrix, and g_idx is sliced with the columns (the shard keeps
// the scales of the groups its columns use, renumbered). No tensor-parallel split is refused
// for cutting a group or a 128x128 block: a rank holds the cut group's scale with its part.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace iris {

struct PackedWeight {
  enum class Kind : uint8_t { kFp8, kInt4 };

  // Rows [row_begin(next segment), row_end) map columns to groups through gidx (empty:
  // contiguous groups with col_phase). Fused matrices of GPTQ desc_act layers carry one
  // segment per source tensor, as each has its own g_idx.
  struct Segment {
    int64_t row_end = 0;
    std::vector<int32_t> gidx;  // [cols] or empty
  };

  Kind kind = Kind::kFp8;
  int64_t rows = 0, cols = 0;
  int64_t group_size = 0;       // columns per scale group (contiguous groups)
  int64_t col_phase = 0;        // column 0 sits at this offset inside its group
  int64_t groups_per_row = 0;   // scales (and zeros) per row
  std::vector<uint8_t> codes;   // FP8: [rows, cols] e4m3; INT4: [rows, row_bytes()] two per byte, low nibble first
  std::vector<float> scales;    // [rows, groups_per_row]
  std::vector<int8_t> zeros;    // INT4: [rows, groups_per_row]; FP8: empty
  std::vector<Segment> segments;  // non-empty; the last ends at rows
  // FP8 only: the format also quantizes activations per token at run time (a GPU may run
  // such a weight as an FP8 x FP8 GEMM); the CPU keeps weight-only semantics and ignores it.
  bool dynamic_activations = false;

  int64_t row_bytes() const { return kind == Kind::kFp8 ? cols : (cols + 1) / 2; }
  // Bytes held: codes + scales + zero points + group indices.
  size_t bytes() const;
  std::string describe() const;  // "INT4 [out, in], group 128" for messages

  // dst[(r - r0) * cols + c] = element (r, c) in fp32, for rows [r0, r1).
  void dequantize_rows(int64_t r0, int64_t r1, float* dst) const;

  // Rows [begin, begin + count), as a new weight.
  PackedWeight slice_rows(int64_t begin, int64_t count) const;
  // Columns [begin, begin + count), as a new weight.
  PackedWeight slice_cols(int64_t begin, int64_t count) const;
  // Appends `other`'s rows below this weight's (same kind, columns, groups and phase; throws
  // iris::Error naming `what` otherwise). An empty weight takes other's layout.
  void append_rows(const PackedWeight& other, const std::string& what);
  // Checks the invariants above (sizes of every array, zero points, group indices).
  void validate(const std::string& what) const;
};

}  // namespace iris
