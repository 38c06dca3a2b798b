// The CUDA Backend and its Ops (see cuda_backend.h): tensor-level checks, then the
// launchers of cuda/kernels.h and cuda/gemm.h on the backend's stream.
//
// Memory: every allocate() is one cudaMalloc, zero-filled on the stream like the CPU
// backend's buffers, freed by cudaFree when the last Buffer copy goes away. Allocations
// happen at load / reserve time only (weights, KV cache, the runner's workspace), so a
// caching or bump allocator would buy nothing yet. The backend itself holds three fixed
// buffers: the cuBLASLt workspace (32 MiB), the split-KV decode workspace (sized from the
// SM count, a few MiB) and a staging buffer for dtype conversion on upload/download
// (64 MiB, used in chunks). None of them is ever reallocated, so a captured graph keeps
// valid pointers.
//
// Ordering: ops only enqueue work (no synchronisation, no allocation), so a step can be
// captured as a CUDA graph. upload/upload_i32 copy from pageable host memory, which returns
// once the source has been staged, so callers may reuse their host buffers right away;
// download_f32 and synchronize wait for the stream.
#include "cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/device_step.h"
#include "cuda/gemm.h"
#include "cuda/graph.h"
#include "cuda/kernels.h"
#include "cuda/nccl_communicator.h"
#include "cuda/packed_gemm.h"
#include "engine/core/check.h"

namespace iris {
namespace cuda {
namespace {

constexpr size_t kStagingBytes = size_t{64} << 20;

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

const bf16* bf16_ptr(const Tensor& t) {
  return static_cast<const bf16*>(t.data);
}
bf16* bf16_ptr(Tensor& t) {
  return static_cast<bf16*>(t.data);
}
const bf16* bf16_or_null(const Tensor& t) {
  return t.defined() ? bf16_ptr(t) : nullptr;
}

void check_dtype(const Tensor& t, DType want, const char* op, const char* what) {
  IRIS_CHECK(t.dtype == want) << "cuda " << op << ": " << what << " must be " << dtype_name(want)
                              << ", got " << dtype_name(t.dtype);
}

void check_bf16(const Tensor& t, const char* op, const char* what) {
  check_dtype(t, DType::BF16, op, what);
}

void check_same_numel(const Tensor& a, const Tensor& b, const char* op) {
  IRIS_CHECK(a.numel() == b.numel())
      << "cuda " << op << ": " << a.shape.str() << " vs " << b.shape.str();
}

int64_t row_width(const Tensor& t) {
  return t.shape.ndim >= 2 ? t.numel() / t.dim(0) : t.numel();
}

class CudaBackend;

class CudaOps final : public Ops {
 public:
  explicit CudaOps(CudaBackend& b) : b_(b) {}

  void embedding(const Tensor& ids, const Tensor& table, Tensor& out) override;
  void embedding_shard(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                       Tensor& out) override;
  void linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out) override;
  void rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) override;
  void add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                    Tensor& out) override;
  void qk_norm_rope_store_kv(Tensor& qkv, const Tensor& positions, const Tensor& inv_freq,
                             const Tensor& q_norm, const Tensor& k_norm, float norm_eps,
                             const AttentionShape& shape, const AttentionMetadata& meta,
                             KvLayer& kv) override;
  void attention(const Tensor& qkv, const KvLayer& kv, const AttentionShape& shape,
                 const AttentionMetadata& meta, float scale, int sliding_window,
                 Tensor& out) override;
  void silu_mul(const Tensor& gate_up, Tensor& out) override;
  void gather_rows(const Tensor& x, const Tensor& indices, Tensor& out) override;
  void moe_combine(const Tensor& y, const Tensor& slots, const Tensor& weights,
                   Tensor& out) override;
  void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                  Tensor& out) override;
  void activation(Tensor& x, Activation act) override;
  void gelu_tanh_mul(const Tensor& gate_up, Tensor& out) override;
  void scale(Tensor& x, float s) override;
  void tanh_softcap(Tensor& x, float cap) override;
  void add(Tensor& a, const Tensor& b) override;
  void encoder_attention(const Tensor& qkv, const AttentionShape& shape, int seq_len, float scale,
                         Tensor& out) override;
  void scatter_rows(const Tensor& x, const Tensor& indices, Tensor& out) override;
  // Over the backend's communicator (cuda/nccl_communicator.h enqueues ncclAllReduce on
  // this backend's stream); a single rank has none and nothing to reduce.
  void all_reduce_sum(Tensor& x) override;

 private:
  cudaStream_t stream() const;
  CudaBackend& b_;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaBackendOptions& opts) : opts_(opts), ops_(*this) {
    int count = 0;  // not written when the call fails
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      (void)cudaGetLastError();
      fail("--device cuda: no usable CUDA device (",
           e != cudaSuccess ? cudaGetErrorString(e) : "no device found", ")");
    }
    if (opts.device < 0 || opts.device >= count)
      fail("--device cuda: device ", opts.device, " does not exist (", count, " device",
           count == 1 ? "" : "s", ")");
    if (!(opts.gpu_memory_utilization > 0.0 && opts.gpu_memory_utilization <= 1.0))
      fail("cuda backend: gpu_memory_utilization must be in (0, 1], got ",
           opts.gpu_memory_utilization);
    device_ = opts.device;
    IRIS_CUDA_CHECK(cudaSetDevice(device_));
    cudaDeviceProp prop{};
    IRIS_CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    const cudaError_t probe = probe_kernel_image();
    if (probe != cudaSuccess) {
      (void)cudaGetLastError();
      fail("--device cuda: device ", device_, " (", prop.name, ", compute capability ", prop.major,
           ".", prop.minor, ") cannot run this build's kernels: ", cudaGetErrorString(probe),
           " (built for CMAKE_CUDA_ARCHITECTURES ",
#ifdef IRIS_CUDA_ARCHITECTURES
           IRIS_CUDA_ARCHITECTURES,
#else
           "?",
#endif
           ")");
    }
    name_ = std::string("cuda:") + std::to_string(device_) + " (" + prop.name + ")";
    const char* env = std::getenv("IRIS_CUDA_ATTENTION");
    rowwise_ = opts.rowwise_attention || (env != nullptr && std::string(env) == "rowwise");
    IRIS_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    gemm_ = std::make_unique<Gemm>();
    decode_ws_.num_sms = prop.multiProcessorCount;
    decode_ws_.floats = decode_workspace_floats(prop.multiProcessorCount);
    IRIS_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&decode_ws_.data),
                               static_cast<size_t>(decode_ws_.floats) * 4));
    IRIS_CUDA_CHECK(cudaMalloc(&staging_, kStagingBytes));
  }

  ~CudaBackend() override {
    cudaSetDevice(device_);
    if (stream_) cudaStreamSynchronize(stream_);
    gemm_.reset();
    if (decode_ws_.data) cudaFree(decode_ws_.data);
    if (staging_) cudaFree(staging_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  DeviceKind kind() const override {
    return DeviceKind::kCuda;
  }
  std::string name() const override {
    return name_;
  }
  DType compute_dtype() const override {
    return DType::BF16;
  }

  // Packed quantized weights are implemented (upload_packed, packed_gemm.cu) but not yet
  // run on a GPU, so models still load quantized checkpoints dequantized to bf16 here; the
  // GPU tests (tests/gpu/test_packed_gemm.cpp) call upload_packed directly.
  bool keeps_weights_packed() const override { return false; }

  Buffer upload_packed(PackedWeight w) override {
    w.validate("cuda upload_packed");
    struct Held {
      PackedWeightDevice view;
      std::vector<Buffer> arrays;
    };
    auto held = std::make_shared<Held>();
    auto put = [&](const void* src, size_t bytes) -> void* {
      if (bytes == 0) return nullptr;
      Buffer b = allocate(DType::U8, {static_cast<int64_t>(bytes)});
      IRIS_CUDA_CHECK(cudaMemcpyAsync(b.tensor.data, src, bytes, cudaMemcpyHostToDevice, stream_));
      held->arrays.push_back(b);
      return b.tensor.data;
    };
    PackedWeightDevice& v = held->view;
    v.kind = w.kind == PackedWeight::Kind::kFp8 ? PackedWeightDevice::kFp8 : PackedWeightDevice::kInt4;
    v.rows = w.rows;
    v.cols = w.cols;
    v.row_bytes = w.row_bytes();
    v.group_size = w.group_size;
    v.col_phase = w.col_phase;
    v.groups_per_row = w.groups_per_row;
    v.dynamic_activations = w.dynamic_activations;
    v.codes = static_cast<const uint8_t*>(put(w.codes.data(), w.codes.size()));
    v.scales = static_cast<const float*>(put(w.scales.data(), w.scales.size() * sizeof(float)));
    v.zeros = static_cast<const int8_t*>(put(w.zeros.data(), w.zeros.size()));
    // Group indices: one column map per row segment (contiguous groups spelled out where a
    // segment has none), and each row's segment.
    bool any_gidx = false;
    for (const auto& seg : w.segments) any_gidx |= !seg.gidx.empty();
    std::vector<int32_t> gidx, row_segment;
    if (any_gidx) {
      int64_t row = 0;
      for (size_t si = 0; si < w.segments.size(); ++si) {
        const auto& seg = w.segments[si];
        for (int64_t c = 0; c < w.cols; ++c)
          gidx.push_back(seg.gidx.empty() ? static_cast<int32_t>((c + w.col_phase) / w.group_size)
                                          : seg.gidx[c]);
        for (; row < seg.row_end; ++row) row_segment.push_back(static_cast<int32_t>(si));
      }
      v.gidx = static_cast<const int32_t*>(put(gidx.data(), gidx.size() * sizeof(int32_t)));
      v.row_segment = static_cast<const int32_t*>(put(row_segment.data(), row_segment.size() * sizeof(int32_t)));
    }
    IRIS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host arrays go away below
    Buffer b;
    b.tensor.data = &held->view;
    b.tensor.dtype = DType::PACKED;
    b.tensor.shape = Shape{w.rows, w.cols};
    b.memory = std::move(held);
    return b;
  }

  // Scratch of the dynamic-FP8 linear (CudaOps::linear), grown on demand: models do not
  // load packed weights on this backend yet, so no captured decode step sees it grow.
  struct Fp8Scratch {
    uint8_t* xq;       // [m, k] e4m3
    float* row_scale;  // [m]
    float* acc;        // [m, n]
    const float* one;  // 1.0f
  };
  Fp8Scratch fp8_scratch(int64_t m, int64_t k, int64_t n) {
    auto grow = [&](Buffer& b, size_t bytes) {
      if (!b.tensor.defined() || b.tensor.bytes() < bytes)
        b = allocate(DType::U8, {static_cast<int64_t>(bytes)});
    };
    grow(fp8_xq_, static_cast<size_t>(m * k));
    grow(fp8_row_scale_, static_cast<size_t>(m) * sizeof(float));
    grow(fp8_acc_, static_cast<size_t>(m * n) * sizeof(float));
    if (!fp8_one_.tensor.defined()) {
      fp8_one_ = allocate(DType::F32, {1});
      const float one = 1.0f;
      upload(&one, DType::F32, fp8_one_.tensor);
    }
    return {fp8_xq_.tensor.ptr<uint8_t>(), fp8_row_scale_.tensor.ptr<float>(),
            fp8_acc_.tensor.ptr<float>(), fp8_one_.tensor.ptr<const float>()};
  }

  Buffer allocate(DType dtype, Shape shape) override {
    IRIS_CUDA_CHECK(cudaSetDevice(device_));
    Buffer b;
    b.tensor.dtype = dtype;
    b.tensor.shape = shape;
    const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
    if (bytes == 0) return b;
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free = 0, total = 0;
      cudaMemGetInfo(&free, &total);
      fail("cuda backend: out of device memory allocating ", bytes, " bytes for ", shape.str(),
           " (", cudaGetErrorString(e), "; ", free >> 20, " MiB of ", total >> 20, " MiB free)");
    }
    IRIS_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
    // The last Buffer copy may go away on a thread whose current device is another one.
    b.memory = std::shared_ptr<void>(p, [dev = device_](void* q) {
      int cur = -1;
      cudaGetDevice(&cur);
      if (cur != dev) cudaSetDevice(dev);
      cudaFree(q);
      if (cur != dev && cur >= 0) cudaSetDevice(cur);
    });
    b.tensor.data = p;
    return b;
  }

  void upload(const void* src, DType src_dtype, Tensor& dst) override {
    IRIS_CUDA_CHECK(cudaSetDevice(device_));
    const int64_t n = dst.numel();
    if (n == 0) return;
    if (src_dtype == dst.dtype) {
      IRIS_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, dst.bytes(), cudaMemcpyHostToDevice, stream_));
      return;
    }
    auto floating = [](DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; };
    IRIS_CHECK(floating(src_dtype) && floating(dst.dtype))
        << "cuda upload: " << dtype_name(src_dtype) << " -> " << dtype_name(dst.dtype)
        << " is not a supported conversion";
    // Raw bytes to the device in staging-sized chunks, converted there.
    const size_t src_es = dtype_size(src_dtype), dst_es = dtype_size(dst.dtype);
    const int64_t chunk = static_cast<int64_t>(kStagingBytes / src_es);
    for (int64_t off = 0; off < n; off += chunk) {
      const int64_t cnt = std::min(chunk, n - off);
      IRIS_CUDA_CHECK(cudaMemcpyAsync(staging_, static_cast<const char*>(src) + off * src_es,
                                      cnt * src_es, cudaMemcpyHostToDevice, stream_));
      launch_convert(staging_, src_dtype, static_cast<char*>(dst.data) + off * dst_es, dst.dtype,
                     cnt, stream_);
    }
  }

  void download_f32(const Tensor& src, float* dst) override {
    IRIS_CUDA_CHECK(cudaSetDevice(device_));
    const int64_t n = src.numel();
    if (n == 0) return;
    if (src.dtype == DType::F32 || src.dtype == DType::I32) {
      IRIS_CUDA_CHECK(cudaMemcpyAsync(dst, src.data, src.bytes(), cudaMemcpyDeviceToHost, stream_));
    } else {
      IRIS_CHECK(src.dtype == DType::BF16 || src.dtype == DType::F16)
          << "cuda download_f32 from " << dtype_name(src.dtype);
      const size_t es = dtype_size(src.dtype);
      const int64_t chunk = static_cast<int64_t>(kStagingBytes / sizeof(float));
      for (int64_t off = 0; off < n; off += chunk) {
        const int64_t cnt = std::min(chunk, n - off);
        launch_convert(static_cast<const char*>(src.data) + off * es, src.dtype, staging_,
                       DType::F32, cnt, stream_);
        IRIS_CUDA_CHECK(cudaMemcpyAsync(dst + off, staging_, cnt * sizeof(float),
                                        cudaMemcpyDeviceToHost, stream_));
      }
    }
    IRIS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    check_nccl_communicator(communicator());
  }

  void upload_i32(const int32_t* src, Tensor& dst) override {
    IRIS_CHECK(dst.dtype == DType::I32) << "upload_i32 into " << dtype_name(dst.dtype);
    IRIS_CUDA_CHECK(cudaSetDevice(device_));
    if (dst.numel() == 0) return;
    IRIS_CUDA_CHECK(cudaMemcpyAsync(dst.data, src, dst.bytes(), cudaMemcpyHostToDevice, stream_));
  }

  void synchronize() override {
    IRIS_CUDA_CHECK(cudaSetDevice(device_));
    IRIS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    check_nccl_communicator(communicator());
  }

  // What is left of gpu_memory_utilization x total after everything allocated so far (by
  // this process and others): free - (1 - utilization) x total.
  size_t free_memory_bytes() const override {
    IRIS_CUDA_CHECK(cudaSetDevice(device_));
    size_t free = 0, total = 0;
    IRIS_CUDA_CHECK(cudaMemGetInfo(&free, &total));
    const double reserve = (1.0 - opts_.gpu_memory_utilization) * static_cast<double>(total);
    return static_cast<double>(free) > reserve ? free - static_cast<size_t>(reserve) : 0;
  }

  Ops& ops() override {
    return ops_;
  }

  void bind_to_current_thread() override {
    IRIS_CUDA_CHECK(cudaSetDevice(device_));
  }
  void* native_stream() const override {
    return stream_;
  }
  std::unique_ptr<StepGraphRunner> make_step_graphs(std::vector<int> buckets) override {
    return make_step_graph_runner(*this, std::move(buckets));
  }
  std::unique_ptr<DeviceSampler> make_device_sampler(int max_rows, int64_t vocab) override {
    return cuda::make_device_sampler(*this, max_rows, vocab);
  }

  cudaStream_t stream() const {
    return stream_;
  }
  int device() const {
    return device_;
  }
  Gemm& gemm() {
    return *gemm_;
  }
  const DecodeWorkspace& decode_workspace() const {
    return decode_ws_;
  }
  bool rowwise_attention() const {
    return rowwise_;
  }

 private:
  CudaBackendOptions opts_;
  CudaOps ops_;
  int device_ = 0;
  std::string name_;
  bool rowwise_ = false;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Gemm> gemm_;
  Buffer fp8_xq_, fp8_row_scale_, fp8_acc_, fp8_one_;  // fp8_scratch()
  DecodeWorkspace decode_ws_;
  void* staging_ = nullptr;
};

cudaStream_t CudaOps::stream() const {
  // Ops may be called from a thread other than the one that created the backend.
  IRIS_CUDA_CHECK(cudaSetDevice(b_.device()));
  return b_.stream();
}

void CudaOps::embedding(const Tensor& ids, const Tensor& table, Tensor& out) {
  check_dtype(ids, DType::I32, "embedding", "ids");
  IRIS_CHECK(table.dtype == out.dtype && table.shape.ndim == 2 && out.shape.ndim == 2 &&
             out.dim(0) == ids.numel() && out.dim(1) == table.dim(1))
      << "cuda embedding: ids " << ids.shape.str() << " table " << table.shape.str() << " out "
      << out.shape.str();
  launch_copy_rows(table.data, out.data, ids.ptr<int32_t>(), 0, ids.numel(), table.dim(0),
                   static_cast<int64_t>(table.dim(1) * dtype_size(table.dtype)), RowCopy::kGather,
                   stream());
}

void CudaOps::embedding_shard(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                              Tensor& out) {
  check_dtype(ids, DType::I32, "embedding_shard", "ids");
  IRIS_CHECK(table.dtype == out.dtype && table.shape.ndim == 2 && out.shape.ndim == 2 &&
             out.dim(0) == ids.numel() && out.dim(1) == table.dim(1))
      << "cuda embedding_shard: ids " << ids.shape.str() << " table " << table.shape.str()
      << " out " << out.shape.str();
  launch_copy_rows(table.data, out.data, ids.ptr<int32_t>(), vocab_start, ids.numel(), table.dim(0),
                   static_cast<int64_t>(table.dim(1) * dtype_size(table.dtype)), RowCopy::kGather,
                   stream());
}

void CudaOps::all_reduce_sum(Tensor& x) {
  if (Communicator* comm = b_.communicator()) {
    stream();  // selects the device
    comm->all_reduce_sum(x);
  }
}

void CudaOps::linear(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out) {
  check_bf16(x, "linear", "input");
  if (w.dtype == DType::PACKED) {
    // A packed quantized weight (CudaBackend::upload_packed): dequantized in the kernel.
    const PackedWeightDevice& pw = *w.ptr<const PackedWeightDevice>();
    if (bias.defined()) check_bf16(bias, "linear", "bias");
    const int64_t m = x.dim(0);
    IRIS_CHECK(pw.cols == x.dim(1) && out.dim(0) == m && out.dim(1) == pw.rows &&
               (!bias.defined() || bias.numel() == pw.rows))
        << "cuda packed linear: x " << x.shape.str() << " w [" << pw.rows << ", " << pw.cols
        << "] out " << out.shape.str();
    const int64_t k = pw.cols, n = pw.rows;
    if (pw.kind == PackedWeightDevice::kFp8 && pw.dynamic_activations && pw.groups_per_row == 1 &&
        pw.gidx == nullptr && k % 16 == 0 && n % 16 == 0) {
      // Per-tensor / per-channel FP8 with dynamic per-token activations, as the format says:
      // e4m3 x e4m3 through cuBLASLt, then both scales as an epilogue.
      const CudaBackend::Fp8Scratch s = b_.fp8_scratch(m, k, n);
      launch_quantize_rows_fp8(bf16_ptr(x), m, k, s.xq, s.row_scale, stream());
      b_.gemm().linear_fp8(s.xq, pw.codes, s.one, s.one, s.acc, m, n, k, stream());
      launch_scale_rows_cols(s.acc, s.row_scale, pw.scales, bf16_or_null(bias), out.data,
                             out.dtype, m, n, stream());
      return;
    }
    launch_packed_linear(pw, bf16_ptr(x), bf16_or_null(bias), out.data, out.dtype, m, stream());
    return;
  }
  check_bf16(w, "linear", "weight");
  if (bias.defined()) check_bf16(bias, "linear", "bias");
  const int64_t m = x.dim(0), k = x.dim(1), n = w.dim(0);
  IRIS_CHECK(w.dim(1) == k && out.dim(0) == m && out.dim(1) == n &&
             (!bias.defined() || bias.numel() == n))
      << "cuda linear: x " << x.shape.str() << " w " << w.shape.str() << " out " << out.shape.str();
  b_.gemm().linear(bf16_ptr(x), bf16_ptr(w), bf16_or_null(bias), out.data, out.dtype, m, n, k,
                   stream());
}

void CudaOps::rms_norm(const Tensor& x, const Tensor& w, float eps, Tensor& out) {
  check_bf16(x, "rms_norm", "input");
  check_bf16(w, "rms_norm", "weight");
  check_bf16(out, "rms_norm", "output");
  const int64_t h = row_width(x);
  IRIS_CHECK(w.numel() == h && out.numel() == x.numel())
      << "cuda rms_norm: x " << x.shape.str() << " w " << w.shape.str();
  launch_rms_norm(bf16_ptr(x), bf16_ptr(w), eps, x.numel() / h, h, bf16_ptr(out), stream());
}

void CudaOps::add_rms_norm(Tensor& residual, const Tensor& x, const Tensor& w, float eps,
                           Tensor& out) {
  check_bf16(residual, "add_rms_norm", "residual");
  check_bf16(x, "add_rms_norm", "input");
  check_bf16(w, "add_rms_norm", "weight");
  check_bf16(out, "add_rms_norm", "output");
  const int64_t h = row_width(x);
  IRIS_CHECK(w.numel() == h && out.numel() == x.numel() && residual.numel() == x.numel())
      << "cuda add_rms_norm: x " << x.shape.str() << " residual " << residual.shape.str();
  launch_add_rms_norm(bf16_ptr(residual), bf16_ptr(x), bf16_ptr(w), eps, x.numel() / h, h,
                      bf16_ptr(out), stream());
}

// A bf16 or FP8 E4M3 (--kv-cache-dtype fp8) cache, K and V alike, with usable scales.
bool check_kv(const KvLayer& kv, const AttentionShape& shape, const char* op) {
  const bool fp8 = kv.k.dtype == DType::F8_E4M3;
  if (fp8) {
    IRIS_CHECK(kv.v.dtype == DType::F8_E4M3)
        << "cuda " << op << ": K cache is F8_E4M3 but V cache is " << dtype_name(kv.v.dtype);
    IRIS_CHECK(std::isfinite(kv.k_scale) && kv.k_scale > 0 && std::isfinite(kv.v_scale) &&
               kv.v_scale > 0)
        << "cuda " << op << ": FP8 KV scales must be finite and positive, got k " << kv.k_scale
        << " v " << kv.v_scale;
    IRIS_CHECK(shape.head_dim % 8 == 0)
        << "cuda " << op << ": an FP8 KV cache needs head_dim divisible by 8, got " << shape.head_dim;
  } else {
    check_bf16(kv.k, op, "K cache");
    check_bf16(kv.v, op, "V cache");
  }
  IRIS_CHECK(kv.k.shape.ndim == 4 && kv.k.shape == kv.v.shape &&
             kv.k.dim(2) == shape.num_kv_heads && kv.k.dim(3) == shape.head_dim)
      << "cuda " << op << ": KV cache " << kv.k.shape.str() << " for " << shape.num_kv_heads
      << " kv heads of " << shape.head_dim;
  return fp8;
}

// The cache pointers (and FP8 scales) of a kernel's argument struct, from a checked KvLayer.
template <class Args, class Kv>  // Kv: KvLayer or const KvLayer, as the kernel writes or reads
void set_kv_cache(Args& a, Kv& kv, bool fp8) {
  if (fp8) {
    a.k_cache_fp8 = kv.k.template ptr<uint8_t>();
    a.v_cache_fp8 = kv.v.template ptr<uint8_t>();
    a.k_scale = kv.k_scale;
    a.v_scale = kv.v_scale;
  } else {
    a.k_cache = bf16_ptr(kv.k);
    a.v_cache = bf16_ptr(kv.v);
  }
}

void check_heads(const AttentionShape& shape, const char* op) {
  IRIS_CHECK(shape.num_kv_heads > 0 && shape.num_q_heads % shape.num_kv_heads == 0)
      << "cuda " << op << ": " << shape.num_q_heads << " q heads over " << shape.num_kv_heads
      << " kv heads";
}

void CudaOps::qk_norm_rope_store_kv(Tensor& qkv, const Tensor& positions, const Tensor& inv_freq,
                                    const Tensor& q_norm, const Tensor& k_norm, float norm_eps,
                                    const AttentionShape& shape, const AttentionMetadata& meta,
                                    KvLayer& kv) {
  const char* op = "qk_norm_rope_store_kv";
  check_bf16(qkv, op, "qkv");
  check_dtype(positions, DType::I32, op, "positions");
  check_dtype(inv_freq, DType::F32, op, "inv_freq");
  check_dtype(meta.slot_mapping, DType::I32, op, "slot_mapping");
  if (q_norm.defined()) check_bf16(q_norm, op, "q_norm");
  if (k_norm.defined()) check_bf16(k_norm, op, "k_norm");
  const bool fp8 = check_kv(kv, shape, op);
  const int position_rows = inv_freq.shape.ndim == 2 ? static_cast<int>(inv_freq.dim(0)) : 1;
  IRIS_CHECK(qkv.shape.ndim == 2 && qkv.dim(1) == shape.qkv_dim() &&
             positions.numel() >= qkv.dim(0) * position_rows &&
             meta.slot_mapping.numel() >= qkv.dim(0))
      << "cuda " << op << ": qkv " << qkv.shape.str() << " vs qkv_dim " << shape.qkv_dim()
      << ", positions " << positions.shape.str() << " with " << position_rows << " rows";
  IRIS_CHECK((!q_norm.defined() || q_norm.numel() == shape.head_dim) &&
             (!k_norm.defined() || k_norm.numel() == shape.head_dim))
      << "cuda " << op << ": q/k norm weights must have head_dim elements";
  RopeKvArgs a;
  a.qkv = bf16_ptr(qkv);
  a.positions = positions.ptr<int32_t>();
  a.inv_freq = inv_freq.ptr<float>();
  a.q_norm = bf16_or_null(q_norm);
  a.k_norm = bf16_or_null(k_norm);
  a.slot_mapping = meta.slot_mapping.ptr<int32_t>();
  set_kv_cache(a, kv, fp8);
  a.num_slots = kv.k.dim(0) * kv.k.dim(1);
  a.num_tokens = static_cast<int>(qkv.dim(0));
  a.num_q_heads = shape.num_q_heads;
  a.num_kv_heads = shape.num_kv_heads;
  a.head_dim = shape.head_dim;
  a.rotary_half = static_cast<int>(inv_freq.numel()) / position_rows;
  a.position_rows = position_rows;
  a.norm_eps = norm_eps;
  launch_qk_norm_rope_store_kv(a, stream());
}

void CudaOps::attention(const Tensor& qkv, const KvLayer& kv, const AttentionShape& shape,
                        const AttentionMetadata& meta, float scale, int sliding_window,
                        Tensor& out) {
  const char* op = "attention";
  check_bf16(qkv, op, "qkv");
  check_bf16(out, op, "output");
  const bool fp8 = check_kv(kv, shape, op);
  check_heads(shape, op);
  IRIS_CHECK(qkv.shape.ndim == 2 && qkv.dim(1) == shape.qkv_dim() &&
             qkv.dim(0) >= meta.num_tokens &&
             out.numel() >= int64_t{meta.num_tokens} * shape.q_dim())
      << "cuda attention: qkv " << qkv.shape.str() << " out " << out.shape.str() << " for "
      << meta.num_tokens << " tokens";
  IRIS_CHECK(aligned16(qkv.data) && aligned16(kv.k.data) && aligned16(kv.v.data) &&
             (reinterpret_cast<uintptr_t>(out.data) & 3u) == 0)
      << "cuda attention: qkv, K/V caches must be 16-byte aligned and out 4-byte aligned";
  AttentionArgs a;
  a.qkv = bf16_ptr(qkv);
  a.qkv_row = shape.qkv_dim();
  a.out = bf16_ptr(out);
  a.paged = true;
  set_kv_cache(a, kv, fp8);
  a.query_start = meta.query_start.ptr<int32_t>();
  a.seq_lens = meta.seq_lens.ptr<int32_t>();
  a.block_tables = meta.block_tables.ptr<int32_t>();
  a.max_blocks_per_seq = meta.max_blocks_per_seq;
  a.block_size = static_cast<int>(kv.k.dim(1));
  a.sliding_window = sliding_window > 0 ? sliding_window : 0;
  a.media_span = meta.media_span.defined() ? meta.media_span.ptr<int32_t>() : nullptr;
  a.num_seqs = meta.num_seqs;
  a.num_tokens = meta.num_tokens;
  a.max_query_len = meta.max_query_len;
  a.max_seq_len = meta.max_seq_len;
  a.num_q_heads = shape.num_q_heads;
  a.num_kv_heads = shape.num_kv_heads;
  a.head_dim = shape.head_dim;
  a.scale = scale;
  if (meta.num_tokens == 0 || meta.num_seqs == 0) return;
  // Bidirectional image spans (Gemma 3) are a mask variant of the row-wise kernel only.
  if (b_.rowwise_attention() || a.media_span != nullptr)
    launch_rowwise_attention(a, stream());
  else if (meta.max_query_len == 1)
    launch_paged_decode(a, b_.decode_workspace(), stream());
  else
    launch_prefill_attention(a, stream());
}

void CudaOps::gelu_tanh_mul(const Tensor& gate_up, Tensor& out) {
  check_bf16(gate_up, "gelu_tanh_mul", "gate_up");
  check_bf16(out, "gelu_tanh_mul", "output");
  const int64_t rows = gate_up.dim(0), inter = out.dim(1);
  IRIS_CHECK(gate_up.dim(1) == 2 * inter && out.dim(0) == rows)
      << "cuda gelu_tanh_mul: gate_up " << gate_up.shape.str() << " out " << out.shape.str();
  launch_gelu_tanh_mul(bf16_ptr(gate_up), rows, inter, bf16_ptr(out), stream());
}

void CudaOps::scale(Tensor& x, float s) {
  IRIS_CHECK(x.dtype == DType::F32 || x.dtype == DType::BF16)
      << "cuda scale: dtype " << dtype_name(x.dtype);
  launch_scale_or_softcap(x.data, x.dtype == DType::F32, x.numel(), s, false, stream());
}

void CudaOps::tanh_softcap(Tensor& x, float cap) {
  IRIS_CHECK(x.dtype == DType::F32 || x.dtype == DType::BF16)
      << "cuda tanh_softcap: dtype " << dtype_name(x.dtype);
  IRIS_CHECK(cap > 0) << "cuda tanh_softcap: cap " << cap;
  launch_scale_or_softcap(x.data, x.dtype == DType::F32, x.numel(), cap, true, stream());
}

void CudaOps::silu_mul(const Tensor& gate_up, Tensor& out) {
  check_bf16(gate_up, "silu_mul", "gate_up");
  check_bf16(out, "silu_mul", "output");
  const int64_t rows = gate_up.dim(0), inter = out.dim(1);
  IRIS_CHECK(gate_up.dim(1) == 2 * inter && out.dim(0) == rows)
      << "cuda silu_mul: gate_up " << gate_up.shape.str() << " out " << out.shape.str();
  launch_silu_mul(bf16_ptr(gate_up), rows, inter, bf16_ptr(out), stream());
}

void CudaOps::gather_rows(const Tensor& x, const Tensor& indices, Tensor& out) {
  check_dtype(indices, DType::I32, "gather_rows", "indices");
  IRIS_CHECK(x.dtype == out.dtype && out.dim(0) == indices.numel() &&
             row_width(out) == row_width(x))
      << "cuda gather_rows: x " << x.shape.str() << " out " << out.shape.str();
  launch_copy_rows(x.data, out.data, indices.ptr<int32_t>(), 0, indices.numel(), x.dim(0),
                   static_cast<int64_t>(row_width(x) * dtype_size(x.dtype)), RowCopy::kGather,
                   stream());
}

void CudaOps::moe_combine(const Tensor& y, const Tensor& slots, const Tensor& weights,
                          Tensor& out) {
  check_bf16(y, "moe_combine", "expert outputs");
  check_bf16(out, "moe_combine", "output");
  check_dtype(slots, DType::I32, "moe_combine", "slots");
  check_dtype(weights, DType::F32, "moe_combine", "weights");
  const int64_t t = out.dim(0), h = row_width(out);
  const int64_t k = t > 0 ? slots.numel() / t : 0;
  IRIS_CHECK(slots.numel() == t * k && weights.numel() == t * k &&
             (y.numel() == 0 || row_width(y) == h))
      << "cuda moe_combine: y " << y.shape.str() << " slots " << slots.shape.str()
      << " weights " << weights.shape.str() << " out " << out.shape.str();
  launch_moe_combine(bf16_ptr(y), slots.ptr<int32_t>(), weights.ptr<float>(), t, k, h,
                     bf16_ptr(out), stream());
}

void CudaOps::layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                         Tensor& out) {
  check_bf16(x, "layer_norm", "input");
  check_bf16(w, "layer_norm", "weight");
  check_bf16(out, "layer_norm", "output");
  if (b.defined()) check_bf16(b, "layer_norm", "bias");
  const int64_t h = row_width(x);
  IRIS_CHECK(w.numel() == h && (!b.defined() || b.numel() == h) && out.numel() == x.numel())
      << "cuda layer_norm: x " << x.shape.str() << " w " << w.shape.str();
  launch_layer_norm(bf16_ptr(x), bf16_ptr(w), bf16_or_null(b), eps, x.numel() / h, h, bf16_ptr(out),
                    stream());
}

void CudaOps::activation(Tensor& x, Activation act) {
  check_bf16(x, "activation", "input");
  launch_activation(bf16_ptr(x), x.numel(), act, stream());
}

void CudaOps::add(Tensor& a, const Tensor& b) {
  check_bf16(a, "add", "a");
  check_bf16(b, "add", "b");
  check_same_numel(a, b, "add");
  launch_add(bf16_ptr(a), bf16_ptr(b), a.numel(), stream());
}

void CudaOps::encoder_attention(const Tensor& qkv, const AttentionShape& shape, int seq_len,
                                float scale, Tensor& out) {
  const char* op = "encoder_attention";
  check_bf16(qkv, op, "qkv");
  check_bf16(out, op, "output");
  check_heads(shape, op);
  const int64_t t = qkv.dim(0);
  IRIS_CHECK(seq_len > 0 && t % seq_len == 0)
      << "cuda encoder_attention: " << t << " rows are not sequences of " << seq_len;
  IRIS_CHECK(qkv.dim(1) == shape.qkv_dim() && out.dim(0) == t && row_width(out) == shape.q_dim())
      << "cuda encoder_attention: qkv " << qkv.shape.str() << " out " << out.shape.str();
  IRIS_CHECK(aligned16(qkv.data) && (reinterpret_cast<uintptr_t>(out.data) & 3u) == 0)
      << "cuda encoder_attention: qkv must be 16-byte aligned and out 4-byte aligned";
  IRIS_CHECK(t <= 0x7fffffff) << "cuda encoder_attention: " << t << " rows";
  AttentionArgs a;
  a.qkv = bf16_ptr(qkv);
  a.qkv_row = shape.qkv_dim();
  a.out = bf16_ptr(out);
  a.paged = false;
  a.encoder_seq_len = seq_len;
  a.num_tokens = static_cast<int>(t);
  a.num_seqs = static_cast<int>(t / seq_len);
  a.max_query_len = seq_len;
  a.max_seq_len = seq_len;
  a.num_q_heads = shape.num_q_heads;
  a.num_kv_heads = shape.num_kv_heads;
  a.head_dim = shape.head_dim;
  a.scale = scale;
  if (b_.rowwise_attention())
    launch_rowwise_attention(a, stream());
  else
    launch_prefill_attention(a, stream());
}

void CudaOps::scatter_rows(const Tensor& x, const Tensor& indices, Tensor& out) {
  check_dtype(indices, DType::I32, "scatter_rows", "indices");
  IRIS_CHECK(x.dtype == out.dtype && x.dim(0) == indices.numel() && row_width(out) == row_width(x))
      << "cuda scatter_rows: x " << x.shape.str() << " into " << out.shape.str();
  launch_copy_rows(x.data, out.data, indices.ptr<int32_t>(), 0, indices.numel(), out.dim(0),
                   static_cast<int64_t>(row_width(x) * dtype_size(x.dtype)), RowCopy::kScatter,
                   stream());
}

}  // namespace

cudaStream_t backend_stream(Backend& backend) {
  auto* b = dynamic_cast<CudaBackend*>(&backend);
  IRIS_CHECK(b != nullptr) << "backend " << backend.name() << " is not a CUDA backend";
  return b->stream();
}

}  // namespace cuda

std::unique_ptr<Backend> make_cuda_backend(const CudaBackendOptions& options) {
  return std::make_unique<cuda::CudaBackend>(options);
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

}  // namespace iris
