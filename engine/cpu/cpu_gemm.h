// Linear layers with 16-bit weights on the CPU backend: weights stored as bfloat16 or IEEE
// half, activations and accumulation in fp32. Decode (few rows) is memory-bound, so halving
// the bytes per weight is the win there: a GEMV-style kernel converts weight rows to fp32 in
// registers (AVX2/FMA/F16C when the CPU has them, a scalar loop otherwise) and is split over
// output rows on the thread pool. Prefill (many rows) converts tiles of weight rows to fp32
// into a scratch buffer and multiplies them with OpenBLAS sgemm.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/core/dtype.h"
#include "engine/cpu/thread_pool.h"

namespace iris::cpu {

// At this many activation rows and above, linear_half converts weight tiles and calls sgemm;
// below it, the row kernel (tools/bench/bench_half_gemm measures the crossover).
inline constexpr int64_t kHalfGemmMinRows = 12;

// True when the row kernels run the AVX2/FMA/F16C path on this CPU.
bool half_kernels_vectorised();

// dst[0, n) = src[0, n) (bf16 or f16 bits) as fp32.
void half_to_f32(const uint16_t* src, DType dtype, float* dst, int64_t n);

// y[m, n] = x[m, k] · w[n, k]ᵀ, with w stored as `wdtype` (BF16 or F16) and x, y fp32.
// `scratch` holds the fp32 weight tiles of the sgemm path (grown on demand).
void linear_half(ThreadPool& pool, const float* x, int64_t m, int64_t k, const uint16_t* w,
                 DType wdtype, int64_t n, float* y, std::vector<float>& scratch);

// The two paths alone (any m), for tests and the benchmark that sets kHalfGemmMinRows.
void linear_half_rows(ThreadPool& pool, const float* x, int64_t m, int64_t k, const uint16_t* w,
                      DType wdtype, int64_t n, float* y);
void linear_half_tiles(ThreadPool& pool, const float* x, int64_t m, int64_t k, const uint16_t* w,
                       DType wdtype, int64_t n, float* y, std::vector<float>& scratch);

}  // namespace iris::cpu
