// The CPU reference backend: fp32 activations, GEMMs through OpenBLAS, the other ops as loops
// split over a thread pool. With fp32 weights it defines the numerics every other backend is
// tested against; it can also store the dense matrices as bf16 or f16 (cpu_gemm.h), which
// halves the bytes a decode step reads.
#include <cblas.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <algorithm>
#include <vector>

#include "engine/backend.h"
#include "engine/core/check.h"
#include "engine/cpu/cpu_gemm.h"
#include "engine/cpu/cpu_kernels.h"

namespace iris {
namespace cpu {

void rms_norm_row(const float* x, const float* w, float eps, int64_t n, float* out) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(n)) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

namespace {

void check_f32(const Tensor& t, const char* what) {
  IRIS_CHECK(t.dtype == DType::F32) << what << " must be F32 on the CPU backend, got "
                                    << dtype_name(t.dtype);
}

bool is_half(DType d) { return d == DType::BF16 || d == DType::F16; }

// Row `row` of a [rows, h] table stored as F32, BF16 or F16, into dst as fp32.
void table_row(const Tensor& table, int64_t row, int64_t h, float* dst) {
  if (table.dtype == DType::F32) {
    std::memcpy(dst, table.ptr<float>() + row * h, h * sizeof(float));
  } else {
    IRIS_CHECK(is_half(table.dtype)) << "embedding table dtype " << dtype_name(table.dtype);
    half_to_f32(table.ptr<uint16_t>() + row * h, table.dtype, dst, h);
  }
}

class CpuOps final : public Ops {
 public:
  CpuOps(ThreadPool& pool, Communicator* const* comm) : pool_(pool), comm_(comm) {}

  void embedding(const Tensor& ids, const Tensor& table, Tensor& out) override {
    const int64_t n = ids.numel(), h = table.dim(1), v = table.dim(0);
    IRIS_CHECK(out.dim(0) == n && out.dim(1) == h) << "embedding out " << out.shape.str();
    const int32_t* id = ids.ptr<int32_t>();
    for (int64_t t = 0; t < n; ++t) {
      IRIS_CHECK(id[t] >= 0 && id[t] < v) << "token id " << id[t] << " outside vocab " << v;
      table_row(table, id[t], h, out.ptr<float>() + t * h);
    }
  }

  void embedding_shard(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                       Tensor& out) override {
    const int64_t n = ids.numel(), h = table.dim(1), rows = table.dim(0);
    IRIS_CHECK(out.dim(0) == n && out.dim(1) == h) << "embedding_shard out " << out.shape.str();
    const int32_t* id = ids.ptr<int32_t>();
    for (int64_t t = 0; t < n; ++t) {
      const int64_t local = static_cast<int64_t>(id[t]) - vocab_start;
      float* o = out.ptr<float>() + t * h;
      if (local >= 0 && local < rows) table_row(table, local, h, o);
      else std::memset(o, 0, h * sizeof(float));
    }
  }

  void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out) override {
    check_f32(x, "linear input");
    const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
    IRIS_CHECK(w.dim(1) == k && out.dim(0) == m && out.dim(1) == n)
        << "linear x " << x.shape.str() << " w " << w.shape.str() << " out " << out.shape.str();
    if (m == 0) return;
    if (w.dtype == DType::PACKED) {
      const PackedWeight& pw = *w.ptr<const PackedWeight>();
      IRIS_CHECK(pw.rows == n && pw.cols == k) << "linear packed weight " << pw.describe()
                                               << " viewed as " << w.shape.str();
      linear_packed(pool_, x.ptr<float>(), m, pw, out.ptr<float>(), scratch_);
    } else if (is_half(w.dtype)) {
      linear_half(pool_, x.ptr<float>(), m, k, w.ptr<uint16_t>(), w.dtype, n, out.ptr<float>(),
                  scratch_);
    } else if (check_f32(w, "linear weight"); m == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, n, k, 1.0f, w.ptr<float>(), k, x.ptr<float>(), 1,
                  0.0f, out.ptr<float>(), 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, x.ptr<float>(), k,
                  w.ptr<float>(), k, 0.0f, out.ptr<float>(), n);
    }
    if (bias.defined()) {
      const float* b = bias.ptr<float>();
      float* o = out.ptr<float>();
      pool_.parallel_for(m, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = 0; c < n; ++c) o[r * n + c] += b[c];
      });
    }
  }

  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override {
    const int64_t rows = x.dim(0), h = x.dim(1);
    pool_.parallel_for(rows, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        rms_norm_row(x.ptr<float>() + r * h, w.ptr<float>(), eps, h, out.ptr<float>() + r * h);
    });
  }

  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                    Tensor& out) override {
    const int64_t rows = x.dim(0), h = x.dim(1);
    pool_.parallel_for(rows, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* res = residual.ptr<float>() + r * h;
        const float* xr = x.ptr<float>() + r * h;
        for (int64_t i = 0; i < h; ++i) res[i] += xr[i];
        rms_norm_row(res, w.ptr<float>(), eps, h, out.ptr<float>() + r * h);
      }
    });
  }

  void qk_norm_rope_store_kv(Tensor& qkv, const Tensor& positions, const Tensor& inv_freq,
                             const Tensor& q_norm, const Tensor& k_norm, float norm_eps,
                             const AttentionShape& shape, const AttentionMetadata& meta,
                             KvLayer& kv) override {
    cpu::qk_norm_rope_store_kv(pool_, qkv, positions, inv_freq, q_norm, k_norm, norm_eps, shape, meta,
                               kv);
  }

  void attention(const Tensor& qkv, const KvLayer& kv, const AttentionShape& shape,
                 const AttentionMetadata& meta, float scale, int sliding_window,
                 Tensor& out) override {
    cpu::paged_attention(pool_, qkv, kv, shape, meta, scale, sliding_window, out);
  }

  void silu_mul(const Tensor& gate_up, Tensor& out) override {
    const int64_t rows = gate_up.dim(0), inter = out.dim(1);
    IRIS_CHECK(gate_up.dim(1) == 2 * inter) << "silu_mul " << gate_up.shape.str();
    pool_.parallel_for(rows * inter, [&](int64_t i0, int64_t i1) {
      for (int64_t k = i0; k < i1; ++k) {
        const int64_t r = k / inter, i = k % inter;
        const float g = gate_up.ptr<float>()[r * 2 * inter + i];
        const float u = gate_up.ptr<float>()[r * 2 * inter + inter + i];
        out.ptr<float>()[k] = g / (1.0f + std::exp(-g)) * u;
      }
    });
  }

  void gelu_tanh_mul(const Tensor& gate_up, Tensor& out) override {
    const int64_t rows = gate_up.dim(0), inter = out.dim(1);
    IRIS_CHECK(gate_up.dim(1) == 2 * inter && out.dim(0) == rows)
        << "gelu_tanh_mul " << gate_up.shape.str() << " -> " << out.shape.str();
    pool_.parallel_for(rows * inter, [&](int64_t i0, int64_t i1) {
      for (int64_t k = i0; k < i1; ++k) {
        const int64_t r = k / inter, i = k % inter;
        const float g = gate_up.ptr<float>()[r * 2 * inter + i];
        const float u = gate_up.ptr<float>()[r * 2 * inter + inter + i];
        const float a = 0.5f * g * (1.0f + std::tanh(0.79788456080286536f * (g + 0.044715f * g * g * g)));
        out.ptr<float>()[k] = a * u;
      }
    });
  }

  void scale(Tensor& x, float s) override {
    check_f32(x, "scale input");
    float* p = x.ptr<float>();
    pool_.parallel_for(x.numel(), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) p[i] *= s;
    });
  }

  void tanh_softcap(Tensor& x, float cap) override {
    check_f32(x, "tanh_softcap input");
    IRIS_CHECK(cap > 0) << "tanh_softcap cap " << cap;
    float* p = x.ptr<float>();
    pool_.parallel_for(x.numel(), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) p[i] = std::tanh(p[i] / cap) * cap;
    });
  }

  void gather_rows(const Tensor& x, const Tensor& indices, Tensor& out) override {
    const int64_t n = indices.numel(), h = x.dim(1);
    for (int64_t s = 0; s < n; ++s) {
      const int32_t row = indices.ptr<int32_t>()[s];
      IRIS_CHECK(row >= 0 && row < x.dim(0)) << "gather row " << row;
      std::memcpy(out.ptr<float>() + s * h, x.ptr<float>() + row * h, h * sizeof(float));
    }
  }

  void moe_combine(const Tensor& y, const Tensor& slots, const Tensor& weights,
                   Tensor& out) override {
    check_f32(y, "moe_combine input");
    check_f32(weights, "moe_combine weights");
    check_f32(out, "moe_combine output");
    IRIS_CHECK(slots.dtype == DType::I32) << "moe_combine slots must be I32";
    const int64_t t = out.dim(0), h = out.dim(1), k = slots.numel() / std::max<int64_t>(t, 1);
    const int64_t n = y.shape.ndim ? y.dim(0) : 0;
    IRIS_CHECK(slots.numel() == t * k && weights.numel() == t * k && (n == 0 || y.dim(1) == h))
        << "moe_combine y " << y.shape.str() << " slots " << slots.shape.str() << " weights "
        << weights.shape.str() << " out " << out.shape.str();
    const int32_t* slot = slots.ptr<int32_t>();
    const float* wt = weights.ptr<float>();
    for (int64_t i = 0; i < t * k; ++i)
      IRIS_CHECK(slot[i] < n) << "moe_combine slot " << slot[i] << " of " << n << " rows";
    pool_.parallel_for(t, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* o = out.ptr<float>() + r * h;
        std::fill(o, o + h, 0.0f);
        for (int64_t j = 0; j < k; ++j) {
          const int32_t s = slot[r * k + j];
          if (s < 0) continue;
          const float w = wt[r * k + j];
          const float* yr = y.ptr<float>() + static_cast<int64_t>(s) * h;
          for (int64_t i = 0; i < h; ++i) o[i] += w * yr[i];
        }
      }
    });
  }

  void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                  Tensor& out) override {
    check_f32(x, "layer_norm input");
    const int64_t rows = x.dim(0), h = x.dim(1);
    IRIS_CHECK(w.numel() == h && (!b.defined() || b.numel() == h) && out.numel() == x.numel())
        << "layer_norm x " << x.shape.str() << " w " << w.shape.str();
    pool_.parallel_for(rows, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = x.ptr<float>() + r * h;
        double mean = 0.0;
        for (int64_t i = 0; i < h; ++i) mean += xr[i];
        mean /= static_cast<double>(h);
        double var = 0.0;
        for (int64_t i = 0; i < h; ++i) var += (xr[i] - mean) * (xr[i] - mean);
        var /= static_cast<double>(h);
        const float inv = 1.0f / std::sqrt(static_cast<float>(var) + eps);
        const float m = static_cast<float>(mean);
        float* o = out.ptr<float>() + r * h;
        for (int64_t i = 0; i < h; ++i)
          o[i] = (xr[i] - m) * inv * w.ptr<float>()[i] + (b.defined() ? b.ptr<float>()[i] : 0.0f);
      }
    });
  }

  void activation(Tensor& x, Activation act) override {
    check_f32(x, "activation input");
    float* p = x.ptr<float>();
    pool_.parallel_for(x.numel(), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const float v = p[i];
        switch (act) {
          case Activation::kGeluErf:
            p[i] = 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
            break;
          case Activation::kGeluTanh:
            p[i] = 0.5f * v *
                   (1.0f + std::tanh(0.79788456080286536f * (v + 0.044715f * v * v * v)));
            break;
          case Activation::kQuickGelu:
            p[i] = v / (1.0f + std::exp(-1.702f * v));
            break;
        }
      }
    });
  }

  void add(Tensor& a, const Tensor& b) override {
    IRIS_CHECK(a.numel() == b.numel()) << "add " << a.shape.str() << " + " << b.shape.str();
    float* pa = a.ptr<float>();
    const float* pb = b.ptr<float>();
    pool_.parallel_for(a.numel(), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) pa[i] += pb[i];
    });
  }

  void encoder_attention(const Tensor& qkv, const AttentionShape& shape, int seq_len, float scale,
                         Tensor& out) override {
    cpu::encoder_attention(pool_, qkv, shape, seq_len, scale, out);
  }

  void scatter_rows(const Tensor& x, const Tensor& indices, Tensor& out) override {
    const int64_t n = indices.numel(), h = x.dim(1);
    IRIS_CHECK(x.dim(0) == n && out.dim(1) == h)
        << "scatter_rows x " << x.shape.str() << " into " << out.shape.str();
    for (int64_t i = 0; i < n; ++i) {
      const int32_t row = indices.ptr<int32_t>()[i];
      IRIS_CHECK(row >= 0 && row < out.dim(0)) << "scatter row " << row;
      std::memcpy(out.ptr<float>() + row * h, x.ptr<float>() + i * h, h * sizeof(float));
    }
  }

  void all_reduce_sum(Tensor& x) override {
    if (comm_ && *comm_) (*comm_)->all_reduce_sum(x);
  }

 private:
  ThreadPool& pool_;
  Communicator* const* comm_;  // the backend's communicator slot
  std::vector<float> scratch_;  // fp32 tiles of 16-bit weights for the prefill sgemm
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(int num_threads, DType weight_dtype, bool packed_weights)
      : weight_dtype_(weight_dtype),
        packed_weights_(packed_weights),
        pool_(num_threads > 0 ? num_threads
                              : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))),
        ops_(pool_, &comm_) {
    IRIS_CHECK(weight_dtype == DType::F32 || is_half(weight_dtype))
        << "CPU weight dtype must be F32, BF16 or F16, got " << dtype_name(weight_dtype);
#if defined(__SANITIZE_THREAD__)
    // OpenBLAS's own worker threads are not instrumented (they hand work over through spin
    // flags ThreadSanitizer cannot see): under TSan, BLAS runs on the calling thread.
    openblas_set_num_threads(1);
#else
    openblas_set_num_threads(pool_.size());
#endif
  }
  DeviceKind kind() const override { return DeviceKind::kCpu; }
  std::string name() const override { return "cpu"; }
  DType compute_dtype() const override { return DType::F32; }
  DType weight_dtype() const override { return weight_dtype_; }
  bool keeps_weights_packed() const override { return packed_weights_; }

  Buffer upload_packed(PackedWeight w) override {
    IRIS_CHECK(packed_weights_) << "cpu backend: packed weights were not enabled";
    w.validate("cpu upload_packed");
    auto held = std::make_shared<PackedWeight>(std::move(w));
    Buffer b;
    b.tensor.data = held.get();
    b.tensor.dtype = DType::PACKED;
    b.tensor.shape = Shape{held->rows, held->cols};
    b.memory = std::move(held);
    return b;
  }

  Buffer allocate(DType dtype, Shape shape) override {
    Buffer b;
    const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = rounded ? std::aligned_alloc(64, rounded) : nullptr;
    if (rounded && !p) fail("cpu backend: out of memory allocating ", bytes, " bytes");
    if (p) std::memset(p, 0, rounded);
    b.memory = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
    b.tensor.data = p;
    b.tensor.dtype = dtype;
    b.tensor.shape = shape;
    return b;
  }

  void upload(const void* src, DType src_dtype, Tensor& dst) override {
    const size_t n = static_cast<size_t>(dst.numel());
    if (dst.dtype == DType::F32) {
      convert_to_f32(src, src_dtype, dst.ptr<float>(), n);
    } else if (is_half(dst.dtype) && src_dtype != dst.dtype) {
      // Through fp32, in chunks, rounding to nearest even (bf16 → f16 or fp32 → 16 bits).
      std::vector<float> tmp(std::min<size_t>(n, 1 << 16));
      uint16_t* d = dst.ptr<uint16_t>();
      const size_t es = dtype_size(src_dtype);
      for (size_t i = 0; i < n; i += tmp.size()) {
        const size_t c = std::min(tmp.size(), n - i);
        convert_to_f32(static_cast<const char*>(src) + i * es, src_dtype, tmp.data(), c);
        for (size_t j = 0; j < c; ++j) {
          IRIS_CHECK(!std::isnan(tmp[j])) << "NaN in a weight uploaded as " << dtype_name(dst.dtype);
          d[i + j] = dst.dtype == DType::BF16 ? f32_to_bf16(tmp[j]) : f32_to_f16(tmp[j]);
          IRIS_CHECK(dst.dtype != DType::F16 || std::isinf(tmp[j]) || (d[i + j] & 0x7c00) != 0x7c00)
              << "weight " << tmp[j] << " is outside the F16 range; use bf16 or fp32 weights";
        }
      }
    } else {
      IRIS_CHECK(src_dtype == dst.dtype) << "cpu upload " << dtype_name(src_dtype) << " -> "
                                         << dtype_name(dst.dtype);
      std::memcpy(dst.data, src, dst.bytes());
    }
  }

  void download_f32(const Tensor& src, float* dst) override {
    if (is_half(src.dtype)) {
      half_to_f32(src.ptr<uint16_t>(), src.dtype, dst, src.numel());
      return;
    }
    check_f32(src, "download");
    std::memcpy(dst, src.data, src.bytes());
  }

  void upload_i32(const int32_t* src, Tensor& dst) override {
    IRIS_CHECK(dst.dtype == DType::I32) << "upload_i32 into " << dtype_name(dst.dtype);
    std::memcpy(dst.data, src, dst.bytes());
  }

  void synchronize() override {}

  size_t free_memory_bytes() const override {
    std::ifstream in("/proc/meminfo");
    std::string key;
    size_t kb = 0;
    std::string unit;
    while (in >> key >> kb >> unit)
      if (key == "MemAvailable:") return kb * 1024;
    return 1ull << 30;
  }

  Ops& ops() override { return ops_; }

 private:
  DType weight_dtype_;
  bool packed_weights_ = false;
  ThreadPool pool_;
  CpuOps ops_;
};

}  // namespace
}  // namespace cpu

std::unique_ptr<Backend> make_cpu_backend(int num_threads, DType weight_dtype, bool packed_weights) {
  return std::make_unique<cpu::CpuBackend>(num_threads, weight_dtype, packed_weights);
}

}  // namespace iris
