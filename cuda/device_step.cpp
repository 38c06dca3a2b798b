// See device_step.h.
#include "cuda/device_step.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "cuda/cuda_check.h"
#include "cuda/graph.h"
#include "cuda/sampling.h"
#include "engine/core/check.h"

namespace iris::cuda {
namespace {

class GraphRunner final : public StepGraphRunner {
 public:
  GraphRunner(Backend& backend, std::vector<int> buckets) : graphs_(backend, std::move(buckets)) {}
  int bucket_for(int n) const override { return graphs_.bucket_for(n); }
  bool captured(int bucket) const override { return graphs_.captured(bucket); }
  void capture(int bucket, const std::function<void()>& enqueue) override {
    graphs_.capture(bucket, enqueue);
  }
  void replay(int bucket) override { graphs_.replay(bucket); }

 private:
  StepGraphs graphs_;
};

// A device array that grows (never shrinks) to the largest size asked for.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() {
    if (ptr_) cudaFree(ptr_);
  }
  T* reserve(size_t n) {
    if (n > capacity_) {
      if (ptr_) IRIS_CUDA_CHECK(cudaFree(ptr_));
      ptr_ = nullptr;
      const size_t cap = std::max(n, capacity_ * 2);
      IRIS_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), cap * sizeof(T)));
      capacity_ = cap;
    }
    return ptr_;
  }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  size_t capacity_ = 0;
};

class Sampler final : public DeviceSampler {
 public:
  Sampler(Backend& backend, int max_rows, int64_t vocab)
      : stream_(backend_stream(backend)), max_rows_(max_rows), vocab_(vocab) {
    IRIS_CHECK(max_rows > 0 && vocab > 0 && vocab <= INT32_MAX) << "device sampler size";
    scratch_.reserve(static_cast<size_t>(max_rows) * static_cast<size_t>(vocab));
    params_.reserve(static_cast<size_t>(max_rows));
    out_tokens_.reserve(static_cast<size_t>(max_rows));
    out_logprobs_.reserve(static_cast<size_t>(max_rows));
  }

  void sample(const Tensor& logits, const std::vector<DeviceSampleRow>& rows, int32_t* tokens,
              float* logprobs, std::vector<std::pair<int32_t, float>>* top) override {
    if (rows.empty()) return;
    IRIS_CHECK(logits.dtype == DType::F32 && logits.shape.ndim == 2 && logits.dim(1) == vocab_)
        << "device sampler: logits " << logits.shape.str() << " for a vocabulary of " << vocab_;
    // Every row of the logits is sampled (rows nobody asked for greedily: cheaper than
    // gathering); the requested ones with their own parameters.
    const int num = static_cast<int>(logits.dim(0));
    IRIS_CHECK(num <= max_rows_) << num << " logits rows for a sampler of " << max_rows_;
    h_params_.assign(static_cast<size_t>(num), SamplingRowParams{});
    for (SamplingRowParams& p : h_params_) p.temperature = 0.0f;
    std::vector<const DeviceSampleRow*> by_row(static_cast<size_t>(num), nullptr);
    for (const DeviceSampleRow& r : rows) {
      IRIS_CHECK(r.logits_row >= 0 && r.logits_row < num && r.params != nullptr)
          << "device sampler: row " << r.logits_row << " of " << num;
      by_row[r.logits_row] = &r;
      h_params_[r.logits_row] = row_params(*r.params, r.seed, r.offset);
    }
    // CSR of the penalty entries, the bias and the banned ids, in logits-row order; the
    // masks of constrained rows.
    const int words = static_cast<int>((vocab_ + 31) / 32);
    h_pen_offsets_.assign(1, 0);
    h_ban_offsets_.assign(1, 0);
    h_bias_offsets_.assign(1, 0);
    h_pen_tokens_.clear();
    h_pen_counts_.clear();
    h_ban_tokens_.clear();
    h_bias_tokens_.clear();
    h_bias_values_.clear();
    h_has_mask_.assign(static_cast<size_t>(num), 0);
    bool any_mask = false, any_top = false;
    for (int i = 0; i < num; ++i) {
      if (const DeviceSampleRow* r = by_row[i]) {
        IRIS_CHECK(r->seen_tokens.size() == r->seen_counts.size()) << "penalty entries";
        h_pen_tokens_.insert(h_pen_tokens_.end(), r->seen_tokens.begin(), r->seen_tokens.end());
        h_pen_counts_.insert(h_pen_counts_.end(), r->seen_counts.begin(), r->seen_counts.end());
        h_ban_tokens_.insert(h_ban_tokens_.end(), r->banned.begin(), r->banned.end());
        // Repeated ids add up, as the host applies each pair in turn; one entry per id here.
        std::map<int32_t, float> bias;
        for (const auto& [t, v] : r->params->logit_bias) bias[t] += v;
        for (const auto& [t, v] : bias) {
          h_bias_tokens_.push_back(t);
          h_bias_values_.push_back(v);
        }
        any_mask |= r->allowed != nullptr;
        any_top |= r->params->top_logprobs > 0;
      }
      h_pen_offsets_.push_back(static_cast<int32_t>(h_pen_tokens_.size()));
      h_ban_offsets_.push_back(static_cast<int32_t>(h_ban_tokens_.size()));
      h_bias_offsets_.push_back(static_cast<int32_t>(h_bias_tokens_.size()));
    }
    if (any_mask) {
      h_masks_.assign(static_cast<size_t>(num) * words, 0u);
      for (int i = 0; i < num; ++i)
        if (by_row[i] && by_row[i]->allowed) {
          h_has_mask_[i] = 1;
          std::memcpy(h_masks_.data() + static_cast<size_t>(i) * words, by_row[i]->allowed,
                      static_cast<size_t>(words) * sizeof(uint32_t));
        }
    }
    SamplingBatch b;
    b.logits = logits.ptr<float>();
    b.scratch = scratch_.get();
    b.params = upload(params_, h_params_);
    if (!h_pen_tokens_.empty()) {
      b.penalty_offsets = upload(pen_offsets_, h_pen_offsets_);
      b.penalty_tokens = upload(pen_tokens_, h_pen_tokens_);
      b.penalty_counts = upload(pen_counts_, h_pen_counts_);
    }
    if (!h_ban_tokens_.empty()) {
      b.banned_offsets = upload(ban_offsets_, h_ban_offsets_);
      b.banned_tokens = upload(ban_tokens_, h_ban_tokens_);
    }
    if (!h_bias_tokens_.empty()) {
      b.bias_offsets = upload(bias_offsets_, h_bias_offsets_);
      b.bias_tokens = upload(bias_tokens_, h_bias_tokens_);
      b.bias_values = upload(bias_values_, h_bias_values_);
    }
    if (any_mask) {
      b.allowed = upload(masks_, h_masks_);
      b.has_mask = upload(has_mask_, h_has_mask_);
      b.mask_words = words;
    }
    constexpr int kTop = SamplingParams::kMaxTopLogprobs;
    if (any_top) {
      b.out_top_ids = top_ids_.reserve(static_cast<size_t>(num) * kTop);
      b.out_top_logprobs = top_logprobs_.reserve(static_cast<size_t>(num) * kTop);
    }
    b.out_tokens = out_tokens_.get();
    b.out_logprobs = out_logprobs_.get();
    b.num_rows = num;
    b.vocab = static_cast<int>(vocab_);
    launch_sample(b, stream_);
    h_tokens_.resize(static_cast<size_t>(num));
    h_logprobs_.resize(static_cast<size_t>(num));
    IRIS_CUDA_CHECK(cudaMemcpyAsync(h_tokens_.data(), b.out_tokens, num * sizeof(int32_t),
                                    cudaMemcpyDeviceToHost, stream_));
    IRIS_CUDA_CHECK(cudaMemcpyAsync(h_logprobs_.data(), b.out_logprobs, num * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream_));
    if (any_top) {
      h_top_ids_.resize(static_cast<size_t>(num) * kTop);
      h_top_logprobs_.resize(static_cast<size_t>(num) * kTop);
      IRIS_CUDA_CHECK(cudaMemcpyAsync(h_top_ids_.data(), b.out_top_ids, h_top_ids_.size() * sizeof(int32_t),
                                      cudaMemcpyDeviceToHost, stream_));
      IRIS_CUDA_CHECK(cudaMemcpyAsync(h_top_logprobs_.data(), b.out_top_logprobs,
                                      h_top_logprobs_.size() * sizeof(float), cudaMemcpyDeviceToHost,
                                      stream_));
    }
    IRIS_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (size_t k = 0; k < rows.size(); ++k) {
      const int r = rows[k].logits_row;
      tokens[k] = h_tokens_[r];
      logprobs[k] = h_logprobs_[r];
      if (!top) continue;
      top[k].clear();
      const int n = std::min(rows[k].params->top_logprobs, static_cast<int>(vocab_));
      for (int j = 0; j < n; ++j)
        top[k].emplace_back(h_top_ids_[static_cast<size_t>(r) * kTop + j],
                            h_top_logprobs_[static_cast<size_t>(r) * kTop + j]);
    }
  }

 private:
  // Copies `host` into `dev` (grown as needed) on the stream; the host vector must stay
  // unchanged until the stream passes the copy (sample() synchronises before returning).
  template <class T>
  const T* upload(DeviceArray<T>& dev, const std::vector<T>& host) {
    T* p = dev.reserve(host.size());
    IRIS_CUDA_CHECK(cudaMemcpyAsync(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice,
                                    stream_));
    return p;
  }

  cudaStream_t stream_;
  int max_rows_;
  int64_t vocab_;
  DeviceArray<float> scratch_;
  DeviceArray<SamplingRowParams> params_;
  DeviceArray<int32_t> pen_offsets_, pen_tokens_, pen_counts_, ban_offsets_, ban_tokens_;
  DeviceArray<int32_t> bias_offsets_, bias_tokens_, top_ids_;
  DeviceArray<float> bias_values_, top_logprobs_;
  DeviceArray<uint32_t> masks_;
  DeviceArray<uint8_t> has_mask_;
  DeviceArray<int32_t> out_tokens_;
  DeviceArray<float> out_logprobs_;
  std::vector<SamplingRowParams> h_params_;
  std::vector<int32_t> h_pen_offsets_, h_pen_tokens_, h_pen_counts_, h_ban_offsets_, h_ban_tokens_;
  std::vector<int32_t> h_bias_offsets_, h_bias_tokens_, h_top_ids_;
  std::vector<float> h_bias_values_, h_top_logprobs_;
  std::vector<uint32_t> h_masks_;
  std::vector<uint8_t> h_has_mask_;
  std::vector<int32_t> h_tokens_;
  std::vector<float> h_logprobs_;
};

}  // namespace

std::unique_ptr<StepGraphRunner> make_step_graph_runner(Backend& backend, std::vector<int> buckets) {
  return std::make_unique<GraphRunner>(backend, std::move(buckets));
}

std::unique_ptr<DeviceSampler> make_device_sampler(Backend& backend, int max_rows, int64_t vocab) {
  return std::make_unique<Sampler>(backend, max_rows, vocab);
}

}  // namespace iris::cuda
