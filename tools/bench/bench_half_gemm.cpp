// The CPU backend's linear layers on the ~125M Llama's shapes: fp32 weights through OpenBLAS
// against bf16 / f16 weights through the row kernel and through tile conversion + sgemm, for
// a range of activation rows — the measurement behind kHalfGemmMinRows (engine/cpu/cpu_gemm.h).
//
// usage: bench_half_gemm [threads=2] [reps=5]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "engine/core/dtype.h"
#include "engine/cpu/cpu_gemm.h"
#include "engine/cpu/thread_pool.h"

using namespace iris;

namespace {

template <typename F>
double best_ms(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 5;
  cpu::ThreadPool pool(threads);
  openblas_set_num_threads(threads);
  std::printf("threads %d, best of %d; AVX2/FMA/F16C kernels: %s\n", threads, reps,
              cpu::half_kernels_vectorised() ? "yes" : "no (scalar)");
  std::printf("%-6s %-12s %10s %14s %14s %14s\n", "m", "n x k", "fp32 BLAS", "bf16 rows", "bf16 sgemm",
              "f16 rows");
  struct Shape { int64_t n, k; };
  const Shape shapes[] = {{1280, 768}, {4096, 768}, {768, 2048}};  // qkv, gate_up, down
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (const Shape& s : shapes) {
    std::vector<float> w(s.n * s.k);
    for (float& v : w) v = nd(rng);
    std::vector<uint16_t> wb(w.size()), wh(w.size());
    for (size_t i = 0; i < w.size(); ++i) {
      wb[i] = f32_to_bf16(w[i]);
      wh[i] = f32_to_f16(w[i]);
    }
    for (int64_t m : {1, 4, 8, 16, 32, 128}) {
      std::vector<float> x(m * s.k), y(m * s.n), scratch;
      for (float& v : x) v = nd(rng);
      const double f32 = best_ms(reps, [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, s.n, s.k, 1.0f, x.data(), s.k,
                    w.data(), s.k, 0.0f, y.data(), s.n);
      });
      const double rows = best_ms(reps, [&] {
        cpu::linear_half_rows(pool, x.data(), m, s.k, wb.data(), DType::BF16, s.n, y.data());
      });
      const double tiles = best_ms(reps, [&] {
        cpu::linear_half_tiles(pool, x.data(), m, s.k, wb.data(), DType::BF16, s.n, y.data(), scratch);
      });
      const double hrows = best_ms(reps, [&] {
        cpu::linear_half_rows(pool, x.data(), m, s.k, wh.data(), DType::F16, s.n, y.data());
      });
      std::printf("%-6lld %5lldx%-6lld %8.3f ms %11.3f ms%s %11.3f ms%s %11.3f ms\n",
                  static_cast<long long>(m), static_cast<long long>(s.n), static_cast<long long>(s.k),
                  f32, rows, m < cpu::kHalfGemmMinRows ? "*" : " ", tiles,
                  m < cpu::kHalfGemmMinRows ? " " : "*", hrows);
    }
  }
  std::printf("* the path linear_half takes (kHalfGemmMinRows = %lld)\n",
              static_cast<long long>(cpu::kHalfGemmMinRows));
  return 0;
}
