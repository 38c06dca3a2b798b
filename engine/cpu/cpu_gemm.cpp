// 16-bit-weight linear layers of the CPU backend (see cpu_gemm.h).
#include "engine/cpu/cpu_gemm.h"

#include <cblas.h>

#include <algorithm>

#include "engine/core/check.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define IRIS_HALF_X86 1
#define IRIS_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

namespace iris::cpu {
namespace {

template <bool kBf16>
inline float to_f32(uint16_t h) {
  if constexpr (kBf16) return bf16_to_f32(h);
  else return f16_to_f32(h);
}

// Rows [r0, r1) of y (columns of the output), every activation row: the portable loop.
template <bool kBf16>
void rows_scalar(const float* x, int64_t m, int64_t k, const uint16_t* w, int64_t n, float* y,
                 int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint16_t* wr = w + r * k;
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * k;
      float s = 0.0f;
      for (int64_t j = 0; j < k; ++j) s += to_f32<kBf16>(wr[j]) * xi[j];
      y[i * n + r] = s;
    }
  }
}

#ifdef IRIS_HALF_X86
template <bool kBf16>
IRIS_AVX2 inline __m256 load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if constexpr (kBf16) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {
    return _mm256_cvtph_ps(h);
  }
}

IRIS_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// Four weight rows at a time: each 8-wide load of x feeds four FMA chains, and the four rows
// (4·k·2 bytes) stay in L1 while every activation row passes over them.
template <bool kBf16>
IRIS_AVX2 void rows_avx2(const float* x, int64_t m, int64_t k, const uint16_t* w, int64_t n,
                         float* y, int64_t r0, int64_t r1) {
  const int64_t k8 = k & ~int64_t{7};
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint16_t* w0 = w + r * k;
    const uint16_t* w1 = w0 + k;
    const uint16_t* w2 = w1 + k;
    const uint16_t* w3 = w2 + k;
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * k;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      for (int64_t j = 0; j < k8; j += 8) {
        const __m256 xv = _mm256_loadu_ps(xi + j);
        a0 = _mm256_fmadd_ps(load8<kBf16>(w0 + j), xv, a0);
        a1 = _mm256_fmadd_ps(load8<kBf16>(w1 + j), xv, a1);
        a2 = _mm256_fmadd_ps(load8<kBf16>(w2 + j), xv, a2);
        a3 = _mm256_fmadd_ps(load8<kBf16>(w3 + j), xv, a3);
      }
      float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
      for (int64_t j = k8; j < k; ++j) {
        s0 += to_f32<kBf16>(w0[j]) * xi[j];
        s1 += to_f32<kBf16>(w1[j]) * xi[j];
        s2 += to_f32<kBf16>(w2[j]) * xi[j];
        s3 += to_f32<kBf16>(w3[j]) * xi[j];
      }
      float* yi = y + i * n + r;
      yi[0] = s0;
      yi[1] = s1;
      yi[2] = s2;
      yi[3] = s3;
    }
  }
  for (; r < r1; ++r) {
    const uint16_t* wr = w + r * k;
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * k;
      __m256 a = _mm256_setzero_ps();
      for (int64_t j = 0; j < k8; j += 8)
        a = _mm256_fmadd_ps(load8<kBf16>(wr + j), _mm256_loadu_ps(xi + j), a);
      float s = hsum(a);
      for (int64_t j = k8; j < k; ++j) s += to_f32<kBf16>(wr[j]) * xi[j];
      y[i * n + r] = s;
    }
  }
}

template <bool kBf16>
IRIS_AVX2 void convert_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(dst + j, load8<kBf16>(src + j));
  for (; j < n; ++j) dst[j] = to_f32<kBf16>(src[j]);
}
#endif

#ifdef IRIS_HALF_X86
IRIS_AVX2 float dot_avx2(const float* a, const float* b, int64_t k) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= k; j += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j + 8), _mm256_loadu_ps(b + j + 8), s1);
  }
  for (; j + 8 <= k; j += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), s0);
  float s = hsum(_mm256_add_ps(s0, s1));
  for (; j < k; ++j) s += a[j] * b[j];
  return s;
}
#endif

bool detect_avx2() {
#ifdef IRIS_HALF_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

const bool kVectorised = detect_avx2();

void check_dtype(DType d) {
  IRIS_CHECK(d == DType::BF16 || d == DType::F16)
      << "16-bit linear weights must be BF16 or F16, got " << dtype_name(d);
}

void rows(const float* x, int64_t m, int64_t k, const uint16_t* w, DType d, int64_t n, float* y,
          int64_t r0, int64_t r1) {
  const bool bf16 = d == DType::BF16;
#ifdef IRIS_HALF_X86
  if (kVectorised) {
    if (bf16) rows_avx2<true>(x, m, k, w, n, y, r0, r1);
    else rows_avx2<false>(x, m, k, w, n, y, r0, r1);
    return;
  }
#endif
  if (bf16) rows_scalar<true>(x, m, k, w, n, y, r0, r1);
  else rows_scalar<false>(x, m, k, w, n, y, r0, r1);
}

// Four independent sums so the portable loop pipelines (and vectorises).
float dot_scalar(const float* a, const float* b, int64_t k) {
  float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  int64_t j = 0;
  for (; j + 4 <= k; j += 4)
    for (int u = 0; u < 4; ++u) s[u] += a[j + u] * b[j + u];
  float t = (s[0] + s[1]) + (s[2] + s[3]);
  for (; j < k; ++j) t += a[j] * b[j];
  return t;
}

float dot_f32(const float* a, const float* b, int64_t k) {
#ifdef IRIS_HALF_X86
  if (kVectorised) return dot_avx2(a, b, k);
#endif
  return dot_scalar(a, b, k);
}

}  // namespace

bool half_kernels_vectorised() { return kVectorised; }

void half_to_f32(const uint16_t* src, DType dtype, float* dst, int64_t n) {
  check_dtype(dtype);
  const bool bf16 = dtype == DType::BF16;
#ifdef IRIS_HALF_X86
  if (kVectorised) {
    if (bf16) convert_avx2<true>(src, dst, n);
    else convert_avx2<false>(src, dst, n);
    return;
  }
#endif
  for (int64_t j = 0; j < n; ++j) dst[j] = bf16 ? bf16_to_f32(src[j]) : f16_to_f32(src[j]);
}

void linear_half_rows(ThreadPool& pool, const float* x, int64_t m, int64_t k, const uint16_t* w,
                      DType wdtype, int64_t n, float* y) {
  check_dtype(wdtype);
  if (m == 0 || n == 0) return;
  // Blocks of four output columns, contiguous ranges of blocks per thread.
  const int64_t blocks = (n + 3) / 4;
  pool.parallel_for(blocks, [&](int64_t b0, int64_t b1) {
    rows(x, m, k, w, wdtype, n, y, b0 * 4, std::min(n, b1 * 4));
  });
}

void linear_half(ThreadPool& pool, const float* x, int64_t m, int64_t k, const uint16_t* w,
                 DType wdtype, int64_t n, float* y, std::vector<float>& scratch) {
  check_dtype(wdtype);
  if (m == 0 || n == 0) return;
  if (m < kHalfGemmMinRows || k == 0) linear_half_rows(pool, x, m, k, w, wdtype, n, y);
  else linear_half_tiles(pool, x, m, k, w, wdtype, n, y, scratch);
}

void linear_half_tiles(ThreadPool& pool, const float* x, int64_t m, int64_t k, const uint16_t* w,
                       DType wdtype, int64_t n, float* y, std::vector<float>& scratch) {
  check_dtype(wdtype);
  linear_converted_tiles(pool, x, m, k, n, y, scratch, [&](int64_t r0, int64_t r1, float* dst) {
    half_to_f32(w + r0 * k, wdtype, dst, (r1 - r0) * k);
  });
}

void linear_converted_tiles(ThreadPool& pool, const float* x, int64_t m, int64_t k, int64_t n,
                            float* y, std::vector<float>& scratch, const RowConverter& convert) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    std::fill(y, y + m * n, 0.0f);
    return;
  }
  // Tiles of ~2 MiB of fp32 weights (a multiple of 16 rows): converted on the pool, then one
  // sgemm per tile writes its block of output columns.
  const int64_t tile = std::max<int64_t>(16, ((int64_t{1} << 19) / k) & ~int64_t{15});
  const int64_t rows_per_tile = std::min(tile, n);
  if (scratch.size() < static_cast<size_t>(rows_per_tile * k))
    scratch.resize(static_cast<size_t>(rows_per_tile * k));
  for (int64_t c0 = 0; c0 < n; c0 += rows_per_tile) {
    const int64_t tn = std::min(rows_per_tile, n - c0);
    pool.parallel_for(tn, [&](int64_t r0, int64_t r1) {
      convert(c0 + r0, c0 + r1, scratch.data() + r0 * k);
    });
    if (m == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(tn), static_cast<int>(k), 1.0f,
                  scratch.data(), static_cast<int>(k), x, 1, 0.0f, y + c0, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                  static_cast<int>(tn), static_cast<int>(k), 1.0f, x, static_cast<int>(k),
                  scratch.data(), static_cast<int>(k), 0.0f, y + c0, static_cast<int>(n));
    }
  }
}

void linear_converted_rows(ThreadPool& pool, const float* x, int64_t m, int64_t k, int64_t n,
                           float* y, const RowConverter& convert) {
  if (m == 0 || n == 0) return;
  // Each thread converts blocks of 16 rows into its own buffer (16·k floats, L1/L2-resident)
  // and takes their dot products with every activation row while they are hot.
  constexpr int64_t kBlock = 16;
  pool.parallel_for(n, [&](int64_t r0, int64_t r1) {
    thread_local std::vector<float> buf;
    if (buf.size() < static_cast<size_t>(kBlock * k)) buf.resize(static_cast<size_t>(kBlock * k));
    for (int64_t b0 = r0; b0 < r1; b0 += kBlock) {
      const int64_t b1 = std::min(r1, b0 + kBlock);
      convert(b0, b1, buf.data());
      for (int64_t r = b0; r < b1; ++r)
        for (int64_t i = 0; i < m; ++i) y[i * n + r] = dot_f32(x + i * k, buf.data() + (r - b0) * k, k);
    }
  });
}

void linear_packed(ThreadPool& pool, const float* x, int64_t m, const PackedWeight& w, float* y,
                   std::vector<float>& scratch) {
  const RowConverter convert = [&](int64_t r0, int64_t r1, float* dst) {
    w.dequantize_rows(r0, r1, dst);
  };
  if (m < kHalfGemmMinRows) {
    linear_converted_rows(pool, x, m, w.cols, w.rows, y, convert);
  } else {
    linear_converted_tiles(pool, x, m, w.cols, w.rows, y, scratch, convert);
  }
}

}  // namespace iris::cpu
