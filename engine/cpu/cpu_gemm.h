// Linear layers with 16-bit or packed quantized weights on the CPU backend. 16-bit: weights stored as bfloat16 or IEEE
// half, activations and accumulation in fp32. Decode (few rows) is memory-bound, so halving
// the bytes per weight is the win there: a GEMV-style kernel converts weight rows to fp32 in
// registers (AVX2/FMA/F16C when the CPU has them, a scalar loop otherwise) and is split over
// output rows on the thread pool. Prefill (many rows) converts tiles of weight rows to fp32
// into a scratch buffer and multiplies them with OpenBLAS sgemm. Packed quantized weights
// (engine/core/packed_weight.h: FP8 or 4-bit codes with group scales) take that tile path
// for prefill, and for decode a row kernel that dequantizes blocks of 16 rows per thread and
// takes their dot products at once: either way rows are dequantized exactly to fp32 (the
// loader's values, bit for bit), so only codes and scales stay resident.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/core/dtype.h"
#include "engine/core/packed_weight.h"
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

// Writes weight rows [r0, r1) (k fp32 values each) at dst.
using RowConverter = std::function<void(int64_t r0, int64_t r1, float* dst)>;

// y[m, n] = x[m, k] · w[n, k]ᵀ where `convert` produces w's rows in fp32: tiles of rows are
// converted on the pool into `scratch` (grown on demand) and multiplied with sgemm (sgemv
// for one row).
void linear_converted_tiles(ThreadPool& pool, const float* x, int64_t m, int64_t k, int64_t n,
                            float* y, std::vector<float>& scratch, const RowConverter& convert);

// The same for few activation rows (decode): the pool's threads convert blocks of 16 rows
// into their own buffers and take the dot products at once (no sgemm call, no fp32 tile
// written out and read back).
void linear_converted_rows(ThreadPool& pool, const float* x, int64_t m, int64_t k, int64_t n,
                           float* y, const RowConverter& convert);

// y[m, w.rows] = x[m, w.cols] · wᵀ with w packed: linear_converted_rows below
// kHalfGemmMinRows activation rows, linear_converted_tiles from there on.
void linear_packed(ThreadPool& pool, const float* x, int64_t m, const PackedWeight& w, float* y,
                   std::vector<float>& scratch);

}  // namespace iris::cpu
