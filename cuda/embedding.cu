// Indexed row copies: embedding lookup (also vocabulary-parallel: ids of other ranks give
// zero rows) and gather_rows (dst[i] = src[idx[i]]), scatter_rows (dst[idx[i]] = src[i]).
// Dtype-agnostic byte copies, 16 bytes per access when rows and pointers allow. One block per row;
// pure bandwidth.
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/kernels.h"

namespace iris::cuda {
namespace {

template <typename Unit>
__global__ void copy_rows_kernel(const Unit* __restrict__ src, Unit* __restrict__ dst,
                                 const int32_t* __restrict__ idx, int64_t index_offset,
                                 int64_t limit, int64_t row_units, bool gather) {
  const int64_t i = blockIdx.x;
  const int64_t r = static_cast<int64_t>(idx[i]) - index_offset;
  const bool ok = r >= 0 && r < limit;
  if (gather) {
    Unit* d = dst + i * row_units;
    // An index outside the table (the host checks token ids before a step) reads nothing.
    if (ok) {
      const Unit* s = src + r * row_units;
      for (int64_t u = threadIdx.x; u < row_units; u += blockDim.x) d[u] = s[u];
    } else {
      for (int64_t u = threadIdx.x; u < row_units; u += blockDim.x) d[u] = Unit{};
    }
  } else if (ok) {
    const Unit* s = src + i * row_units;
    Unit* d = dst + r * row_units;
    for (int64_t u = threadIdx.x; u < row_units; u += blockDim.x) d[u] = s[u];
  }
}

}  // namespace

void launch_copy_rows(const void* src, void* dst, const int32_t* idx, int64_t index_offset,
                      int64_t n, int64_t limit, int64_t row_bytes, RowCopy mode,
                      cudaStream_t stream) {
  if (n == 0 || row_bytes == 0) return;
  IRIS_CHECK(n <= 0x7fffffff) << "cuda copy_rows: " << n << " rows";
  const bool gather = mode == RowCopy::kGather;
  if (row_bytes % 16 == 0 && aligned16(src) && aligned16(dst)) {
    const int64_t units = row_bytes / 16;
    const int threads = static_cast<int>(std::min<int64_t>(256, (units + 31) / 32 * 32));
    copy_rows_kernel<<<static_cast<unsigned>(n), threads, 0, stream>>>(
        static_cast<const uint4*>(src), static_cast<uint4*>(dst), idx, index_offset, limit, units,
        gather);
  } else {
    IRIS_CHECK(row_bytes % 2 == 0) << "cuda copy_rows: odd row size " << row_bytes;
    const int64_t units = row_bytes / 2;
    const int threads = static_cast<int>(std::min<int64_t>(256, (units + 31) / 32 * 32));
    copy_rows_kernel<<<static_cast<unsigned>(n), threads, 0, stream>>>(
        static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), idx, index_offset, limit,
        units, gather);
  }
  IRIS_CUDA_CHECK_LAUNCH();
}

}  // namespace iris::cuda
