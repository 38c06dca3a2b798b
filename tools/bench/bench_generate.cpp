// Batch-1 prefill and decode speed of one checkpoint on a backend, with the fraction of the
// memory-bandwidth roofline decode reaches: bytes a decode step must read (weights plus
// the KV cache at the average context) over the measured copy bandwidth of the device
// (host memcpy on cpu, a device-to-device cudaMemcpy loop on cuda). Time to first token is
// the prefill of the whole prompt in one step. Prints figures only; never fails on a timing.
// The last line, "RESULT {...}", carries the figures as JSON for scripts.
//
// usage: bench_generate MODEL_DIR [prompt_tokens=128] [decode_tokens=64] [threads=0]
//                       [device=cpu|cuda]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/core/check.h"
#include "engine/generator.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"

#ifdef IRIS_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda/cuda_backend.h"
#endif

using namespace iris;

static double host_copy_bandwidth_gbs() {
  const size_t n = size_t(1) << 28;  // 256 MiB
  std::vector<char> a(n, 1), b(n, 0);
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    std::memcpy(b.data(), a.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n / s / 1e9);  // read + write
  }
  return best;
}

#ifdef IRIS_HAVE_CUDA
#define BENCH_CUDA(expr)                                                     \
  do {                                                                       \
    const cudaError_t e_ = (expr);                                           \
    if (e_ != cudaSuccess) fail(#expr, " failed: ", cudaGetErrorString(e_)); \
  } while (0)

// Device-to-device copy bandwidth (bytes read + written per second), median of 20 copies
// of 1 GiB after a warm-up.
static double device_copy_bandwidth_gbs() {
  const size_t n = size_t(1) << 30;
  void *a = nullptr, *b = nullptr;
  BENCH_CUDA(cudaMalloc(&a, n));
  BENCH_CUDA(cudaMalloc(&b, n));
  BENCH_CUDA(cudaMemset(a, 1, n));
  cudaEvent_t e0, e1;
  BENCH_CUDA(cudaEventCreate(&e0));
  BENCH_CUDA(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) BENCH_CUDA(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
  std::vector<double> gbs;
  for (int i = 0; i < 20; ++i) {
    BENCH_CUDA(cudaEventRecord(e0));
    BENCH_CUDA(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice));
    BENCH_CUDA(cudaEventRecord(e1));
    BENCH_CUDA(cudaEventSynchronize(e1));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, e0, e1));
    gbs.push_back(2.0 * n / (ms * 1e-3) / 1e9);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  std::sort(gbs.begin(), gbs.end());
  return gbs[gbs.size() / 2];
}
#endif

int main(int argc, char** argv) {
  const bool help = argc > 1 && std::string(argv[1]) == "--help";
  if (argc < 2 || help) {
    std::fprintf(help ? stdout : stderr,
                 "usage: %s MODEL_DIR [prompt_tokens] [decode_tokens] [threads] [cpu|cuda] "
                 "[fp32|bf16|f16 (CPU weight matrices, default fp32)]\n",
                 argv[0]);
    return help ? 0 : 2;
  }
  const int prompt_len = argc > 2 ? std::atoi(argv[2]) : 128;
  const int decode = argc > 3 ? std::atoi(argv[3]) : 64;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 0;
  const std::string device = argc > 5 ? argv[5] : "cpu";
  const std::string weights = argc > 6 ? argv[6] : "fp32";
  try {
    IRIS_CHECK(prompt_len > 0 && decode > 0) << "prompt_tokens and decode_tokens must be positive";
    const ModelConfig cfg = ModelConfig::from_dir(argv[1]);
    auto ck = Checkpoint::open(argv[1]);
    std::unique_ptr<Backend> backend;
    if (device == "cpu") {
      const DType wd = weights == "bf16" ? DType::BF16 : weights == "f16" ? DType::F16 : DType::F32;
      IRIS_CHECK(wd != DType::F32 || weights == "fp32")
          << "weight dtype must be fp32, bf16 or f16, got " << weights;
      backend = make_cpu_backend(threads, wd);
    } else if (device == "cuda") {
#ifdef IRIS_HAVE_CUDA
      backend = make_cuda_backend(CudaBackendOptions{});
#else
      fail("this build has no CUDA backend");
#endif
    } else {
      fail("device must be cpu or cuda, got ", device);
    }
    auto model = load_model(*ck, cfg, *backend);
    // The whole prompt in one step, so the prefill time is the time to first token.
    Generator gen(*backend, *model, std::max(512, prompt_len));
    std::vector<int32_t> prompt(prompt_len);
    for (int i = 0; i < prompt_len; ++i) prompt[i] = 3 + (i * 7919) % (cfg.vocab_size - 3);
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = decode;
    p.ignore_eos = true;
    SamplingParams warm = p;
    warm.max_tokens = 4;
    gen.generate(prompt, warm);  // warm-up: kernels loaded, GEMM plans cached
    auto r = gen.generate(prompt, p);

    const double ttft_ms = r.prefill_seconds * 1e3;
    const double prefill_tps = prompt_len / r.prefill_seconds;
    const size_t steps = std::max<size_t>(1, r.output_ids.size() - 1);
    const double decode_ms = r.decode_seconds * 1e3 / static_cast<double>(steps);
    const AttentionShape s = model->attention_shape();
    const double es = static_cast<double>(dtype_size(backend->compute_dtype()));
    const double avg_ctx = prompt_len + 0.5 * static_cast<double>(r.output_ids.size());
    const double weight_gb = model->weight_bytes() / 1e9;
    const double kv_gb = 2.0 * cfg.num_layers * s.kv_dim() * es * avg_ctx / 1e9;
    double bw = 0;
#ifdef IRIS_HAVE_CUDA
    if (device == "cuda") bw = device_copy_bandwidth_gbs();
#endif
    if (bw == 0) bw = host_copy_bandwidth_gbs();
    const double floor_ms = (weight_gb + kv_gb) / bw * 1e3;
    // Matmul FLOPs of the prefill: 2 per weight per token, plus causal attention.
    const double params = model->weight_bytes() / static_cast<double>(dtype_size(backend->weight_dtype()));
    const double attn_flops = 4.0 * cfg.num_layers * s.q_dim() * 0.5 * prompt_len * prompt_len;
    const double prefill_tflops =
        (2.0 * params * prompt_len + attn_flops) / r.prefill_seconds / 1e12;

    std::printf("model: %s  weights %.1f MB (%s matrices, %s compute on %s)\n", argv[1],
                weight_gb * 1e3, std::string(dtype_name(backend->weight_dtype())).c_str(),
                std::string(dtype_name(backend->compute_dtype())).c_str(), backend->name().c_str());
    std::printf(
        "prefill (time to first token): %d tokens in %.1f ms = %.0f tokens/s, ~%.1f TFLOP/s\n",
        prompt_len, ttft_ms, prefill_tps, prefill_tflops);
    std::printf(
        "decode: %.3f ms/token = %.1f tokens/s (batch 1, %zu tokens, host sampling included)\n",
        decode_ms, 1e3 / decode_ms, r.output_ids.size());
    std::printf(
        "roofline: copy bandwidth %.1f GB/s; a step reads %.1f MB of weights + %.1f MB of "
        "KV -> floor %.3f ms/token; decode at %.0f%% of it\n",
        bw, weight_gb * 1e3, kv_gb * 1e3, floor_ms, 100.0 * floor_ms / decode_ms);
    std::printf(
        "RESULT {\"device\": \"%s\", \"backend\": \"%s\", \"prompt_tokens\": %d, "
        "\"decode_tokens\": %zu, \"ttft_ms\": %.3f, \"prefill_tokens_per_s\": %.1f, "
        "\"prefill_tflops\": %.2f, \"decode_ms_per_token\": %.4f, \"weight_mb\": %.1f, "
        "\"kv_mb_per_step\": %.2f, \"copy_bandwidth_gbs\": %.1f, \"roofline_ms\": %.4f, "
        "\"roofline_fraction\": %.3f}\n",
        device.c_str(), backend->name().c_str(), prompt_len, r.output_ids.size(), ttft_ms,
        prefill_tps, prefill_tflops, decode_ms, weight_gb * 1e3, kv_gb * 1e3, bw, floor_ms,
        floor_ms / decode_ms);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_generate: %s\n", e.what());
    return 1;
  }
  return 0;
}
