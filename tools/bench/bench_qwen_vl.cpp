// Qwen2.5-VL image costs on the CPU backend:
//   prepare  decode + smart_resize + Pillow bicubic resize + normalize + patchify + content
//            hash of one image file (any thread),
//   encode   the vision tower (window and full attention) + merger on that image (engine
//            thread), with its FLOP rate against the backend's 2048^3 GEMM rate,
//   TTFT     a one-image chat prompt (text, the image's span, text; M-RoPE positions) through
//            the batching engine with the encode, and again on an encoder-cache hit.
// Prints the figures and a RESULT json line; never fails on a timing.
//
// usage: bench_qwen_vl CHECKPOINT IMAGE [REPS] [THREADS] [TEXT_TOKENS]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "engine/core/check.h"
#include "engine/engine.h"
#include "engine/image_encoder.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/models/model.h"

using namespace iris;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double gemm_rate(Backend& backend, int n) {
  Buffer a = backend.allocate(DType::F32, {n, n}), b = backend.allocate(DType::F32, {n, n});
  Buffer c = backend.allocate(DType::F32, {n, n});
  std::vector<float> ones(static_cast<size_t>(n) * n, 0.001f);
  backend.upload(ones.data(), DType::F32, a.tensor);
  backend.upload(ones.data(), DType::F32, b.tensor);
  backend.ops().linear(a.tensor, b.tensor, Tensor{}, c.tensor);
  auto t0 = clock_type::now();
  backend.ops().linear(a.tensor, b.tensor, Tensor{}, c.tensor);
  backend.synchronize();
  return 2.0 * n * n * n / seconds_since(t0);
}

// Multiply-adds x 2 of the tower on n patches (window attention over `window` patches).
double encode_flops(const QwenVisionConfig& v, double n, double window, double frame) {
  const double d = static_cast<double>(v.hidden_size), i = static_cast<double>(v.intermediate_size);
  const double full = static_cast<double>(v.fullatt_block_indexes.size());
  double f = v.depth * n * 2 * (4 * d * d + 3 * d * i);
  f += (v.depth - full) * n * 2 * 2 * d * window + full * n * 2 * 2 * d * frame;
  const double u = v.merge_unit();
  f += n / u * 2 * (u * d * u * d + u * d * static_cast<double>(v.out_hidden_size));
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s CHECKPOINT IMAGE [REPS] [THREADS] [TEXT_TOKENS]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const int reps = argc > 3 ? std::atoi(argv[3]) : 3;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 0;
  const int text_tokens = argc > 5 ? std::atoi(argv[5]) : 32;
  try {
    std::ifstream in(argv[2], std::ios::binary);
    IRIS_CHECK(in) << "cannot open " << argv[2];
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const ModelConfig cfg = ModelConfig::from_dir(dir);
    IRIS_CHECK(cfg.qwen_vl) << dir << " is not a Qwen2.5-VL checkpoint";
    auto ck = Checkpoint::open(dir);
    auto backend = make_cpu_backend(threads);
    auto model = load_model(*ck, cfg, *backend);
    auto encoder = ImageEncoder::load(dir, *ck, cfg, *backend);

    std::vector<double> t_prepare;
    ImageEncoder::Prepared prepared;
    for (int r = 0; r < std::max(3, reps); ++r) {
      auto t0 = clock_type::now();
      prepared = encoder->prepare(bytes, image::DecodeLimits{});
      t_prepare.push_back(seconds_since(t0));
    }
    MediaEmbeds span;
    span.length = prepared.tokens;
    span.grid_t = prepared.grid_t;
    span.grid_h = prepared.grid_h;
    span.grid_w = prepared.grid_w;
    span.encoder_input = prepared.patches;
    const MediaEmbeds* items[] = {&span};
    encoder->encode_items(items);  // warm-up (and buffer growth)
    std::vector<double> t_encode;
    for (int r = 0; r < reps; ++r) {
      auto t0 = clock_type::now();
      encoder->encode_items(items);
      backend->synchronize();
      t_encode.push_back(seconds_since(t0));
    }
    const QwenVisionConfig& v = cfg.qwen_vl->vision;
    const double patches = static_cast<double>(prepared.tokens) * v.merge_unit();
    const double side = v.window_size / v.patch_size;
    const double flops = encode_flops(v, patches, side * side, patches);
    const double peak = gemm_rate(*backend, 2048);

    EngineConfig ec;
    ec.max_num_batched_tokens = std::max(2048, prepared.tokens + text_tokens + 8);
    ec.num_kv_blocks = (ec.max_num_batched_tokens + 15) / 16 * 2 + 1;
    ec.max_num_seqs = 1;
    ec.enable_prefix_caching = false;
    Engine engine(*backend, *model, ec, nullptr, encoder.get());
    const QwenVlConfig& q = *cfg.qwen_vl;
    auto request = [&](int r, uint64_t hash) {
      EngineRequest e;
      e.id = "bench-" + std::to_string(r);
      for (int i = 0; i < text_tokens / 2; ++i) e.prompt.push_back(3 + (i * 7919 + r) % 150000);
      e.prompt.push_back(q.vision_start_token_id);
      e.prompt.push_back(q.image_token_id);
      e.prompt.push_back(q.vision_end_token_id);
      for (int i = 0; i < text_tokens - text_tokens / 2; ++i) e.prompt.push_back(3 + (i * 104729 + r) % 150000);
      ImageEncoder::Prepared p = prepared;
      p.hash.lo = hash;
      p.hash.hi = 0;
      e.media = expand_media_placeholders(e.prompt, q.image_token_id, {p}, q.video_token_id, {});
      e.params.temperature = 0;
      e.params.max_tokens = 1;
      e.params.ignore_eos = true;
      return e;
    };
    auto ttft = [&](EngineRequest e) {
      bool done = false;
      auto t0 = clock_type::now();
      engine.submit(std::move(e), [&](const EngineOutput& o) {
        if (o.finish_reason || !o.error.empty()) done = true;
        if (!o.error.empty()) std::fprintf(stderr, "error: %s\n", o.error.c_str());
      });
      while (!done) engine.step();
      return seconds_since(t0);
    };
    ttft(request(-1, 0xbe));
    std::vector<double> t_cold, t_hit;
    for (int r = 0; r < reps; ++r) {
      t_cold.push_back(ttft(request(r, 1000 + r)));
      t_hit.push_back(ttft(request(r + reps, 1000 + r)));
    }
    const int prompt_len = text_tokens + 2 + prepared.tokens;
    const double prep_ms = median(t_prepare) * 1e3, enc_ms = median(t_encode) * 1e3;
    const double cold_ms = median(t_cold) * 1e3, hit_ms = median(t_hit) * 1e3;
    std::printf("model: %s (%d-block tower, width %lld) on %s\n", dir.c_str(), v.depth,
                static_cast<long long>(v.hidden_size), backend->name().c_str());
    std::printf("image: %s, %zu bytes -> %dx%d patches, %d image tokens\n", argv[2], bytes.size(),
                prepared.grid_h * v.spatial_merge_size, prepared.grid_w * v.spatial_merge_size,
                prepared.tokens);
    std::printf("prepare: %.2f ms\n", prep_ms);
    std::printf("encode: %.1f ms, %.1f GFLOP -> %.1f GFLOP/s = %.0f%% of %.1f GFLOP/s (2048^3 GEMM)\n",
                enc_ms, flops / 1e9, flops / (enc_ms * 1e-3) / 1e9,
                100.0 * flops / (enc_ms * 1e-3) / peak, peak / 1e9);
    std::printf("TTFT, %d-token prompt (%d text + %d image): %.1f ms with the encode, %.1f ms cached\n",
                prompt_len, text_tokens + 2, prepared.tokens, cold_ms, hit_ms);
    std::printf("RESULT {\"image_tokens\": %d, \"prepare_ms\": %.3f, \"encode_ms\": %.3f, "
                "\"encode_gflops\": %.2f, \"gemm_peak_gflops\": %.2f, \"prompt_tokens\": %d, "
                "\"ttft_ms\": %.3f, \"ttft_cache_hit_ms\": %.3f}\n",
                prepared.tokens, prep_ms, enc_ms, flops / (enc_ms * 1e-3) / 1e9, peak / 1e9,
                prompt_len, cold_ms, hit_ms);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_qwen_vl: %s\n", e.what());
    return 1;
  }
  return 0;
}
