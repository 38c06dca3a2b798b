// Image costs of a vision-language checkpoint on one backend, the way a request pays them:
//   prepare  decode + preprocess + patchify + content hash of one image file (any thread),
//   encode   the vision tower + projector on one image (the engine thread), with its FLOP
//            rate against the backend's own GEMM rate on a large square matrix product,
//   prefill  a prompt of text + one image through the batching engine, first request
//            (encode included) and the same image again (an encoder-cache hit: the encode is
//            skipped, the prefill is not, since the text differs).
// Medians over the repetitions; prints figures only and never fails on a timing. The last
// line, "RESULT {...}", carries the figures as JSON.
//
// usage: bench_vision MODEL_DIR IMAGE_FILE [reps=5] [threads=0] [text_tokens=32]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/core/check.h"
#include "engine/engine.h"
#include "engine/image_encoder.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"

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

// FLOPs of one image through the tower (the layers the feature layers use) and projector.
double encode_flops(const ModelConfig& cfg, int layers_used) {
  const MultimodalConfig& mm = *cfg.multimodal;
  const VisionConfig& v = mm.vision;
  const double s = v.seq_len(), d = v.hidden_size, i = v.intermediate_size;
  const double per_layer = 2.0 * s * (4.0 * d * d + 2.0 * d * i) + 4.0 * s * s * d;
  const double patch = 2.0 * v.num_patches() * v.patch_dim() * d;
  const double t = mm.tokens_per_image(), h = static_cast<double>(cfg.hidden_size);
  const double proj = 2.0 * t * (d * static_cast<double>(mm.feature_layers.size()) * h + h * h);
  return layers_used * per_layer + patch + proj;
}

// The backend's matrix-product rate (FLOP/s) on [n, n] x [n, n]^T, best of 5.
double gemm_rate(Backend& be, int64_t n) {
  Buffer a = be.allocate(be.compute_dtype(), {n, n});
  Buffer b = be.allocate(be.compute_dtype(), {n, n});
  Buffer c = be.allocate(be.compute_dtype(), {n, n});
  std::vector<float> host(static_cast<size_t>(n * n), 0.01f);
  be.upload(host.data(), DType::F32, a.tensor);
  be.upload(host.data(), DType::F32, b.tensor);
  double best = 0;
  for (int r = 0; r < 6; ++r) {
    be.synchronize();
    auto t0 = clock_type::now();
    be.ops().linear(a.tensor, b.tensor, Tensor{}, c.tensor);
    be.synchronize();
    if (r > 0) best = std::max(best, 2.0 * n * n * n / seconds_since(t0));
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const bool help = argc > 1 && std::string(argv[1]) == "--help";
  if (argc < 3 || help) {
    std::fprintf(help ? stdout : stderr, "usage: %s MODEL_DIR IMAGE_FILE [reps] [threads] [text_tokens]\n",
                 argv[0]);
    return help ? 0 : 2;
  }
  const std::string dir = argv[1];
  const int reps = argc > 3 ? std::atoi(argv[3]) : 5;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 0;
  const int text_tokens = argc > 5 ? std::atoi(argv[5]) : 32;
  try {
    IRIS_CHECK(reps > 0 && text_tokens > 0) << "reps and text_tokens must be positive";
    std::ifstream in(argv[2], std::ios::binary);
    IRIS_CHECK(in) << "cannot open " << argv[2];
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const ModelConfig cfg = ModelConfig::from_dir(dir);
    IRIS_CHECK(cfg.multimodal) << dir << " is not a vision-language checkpoint";
    auto ck = Checkpoint::open(dir);
    auto backend = make_cpu_backend(threads);
    auto model = load_model(*ck, cfg, *backend);
    auto encoder = ImageEncoder::load(dir, *ck, cfg, *backend, /*max_batch=*/1);
    const int tpi = encoder->tokens_per_item();

    // prepare: decode + preprocess + patchify + hash.
    std::vector<double> t_prepare;
    ImageEncoder::Prepared prepared;
    for (int r = 0; r < reps; ++r) {
      auto t0 = clock_type::now();
      prepared = encoder->prepare(bytes, image::DecodeLimits{});
      t_prepare.push_back(seconds_since(t0));
    }

    // encode: one image through the tower and projector (after one warm-up).
    std::vector<const std::vector<float>*> one = {prepared.patches.get()};
    encoder->encode(one);
    std::vector<double> t_encode;
    for (int r = 0; r < reps; ++r) {
      backend->synchronize();
      auto t0 = clock_type::now();
      encoder->encode(one);
      backend->synchronize();
      t_encode.push_back(seconds_since(t0));
    }
    const int layers_used = cfg.multimodal->layers_used();
    const double flops = encode_flops(cfg, layers_used);
    const double peak = gemm_rate(*backend, 2048);

    // prefill through the engine: [BOS] text/2, the image, text/2; one output token.
    EngineConfig ec;
    ec.max_num_batched_tokens = std::max(2048, tpi + text_tokens + 1);
    ec.num_kv_blocks = (ec.max_num_batched_tokens + 15) / 16 * 2 + 1;
    ec.max_num_seqs = 1;
    ec.enable_prefix_caching = false;  // every repetition computes its whole prompt
    Engine engine(*backend, *model, ec, nullptr, encoder.get());
    auto request = [&](int r, uint64_t hash) {
      EngineRequest q;
      q.id = "bench-" + std::to_string(r);
      q.prompt.push_back(1);
      for (int i = 0; i < text_tokens / 2; ++i) q.prompt.push_back(3 + (i * 7919 + r) % (cfg.vocab_size - 3));
      MediaEmbeds m;
      m.position = static_cast<int32_t>(q.prompt.size());
      m.length = tpi;
      m.encoder_input = prepared.patches;
      m.content_hash = hash;
      q.media.push_back(m);
      q.prompt.insert(q.prompt.end(), static_cast<size_t>(tpi), cfg.multimodal->image_token_id);
      for (int i = 0; i < text_tokens - text_tokens / 2; ++i) q.prompt.push_back(3 + (i * 104729 + r) % (cfg.vocab_size - 3));
      q.params.temperature = 0;
      q.params.max_tokens = 1;
      q.params.ignore_eos = true;
      return q;
    };
    auto ttft = [&](EngineRequest q) {
      bool done = false;
      auto t0 = clock_type::now();
      engine.submit(std::move(q), [&](const EngineOutput& o) {
        if (o.finish_reason) done = true;
      });
      while (!done) engine.step();
      return seconds_since(t0);
    };
    ttft(request(-1, 0xbe));  // warm-up
    std::vector<double> t_cold, t_hit;
    for (int r = 0; r < reps; ++r) {
      t_cold.push_back(ttft(request(r, 1000 + r)));  // a new image: encode + prefill
      t_hit.push_back(ttft(request(r + reps, 1000 + r)));  // same image: cache hit, prefill only
    }
    const int prompt_len = 1 + text_tokens + tpi;
    const EngineStats st = engine.stats();

    const double prep_ms = median(t_prepare) * 1e3, enc_ms = median(t_encode) * 1e3;
    const double cold_ms = median(t_cold) * 1e3, hit_ms = median(t_hit) * 1e3;
    std::printf("model: %s (%s; %d image tokens, tower %d x %d, %d layers used) on %s\n", dir.c_str(),
                cfg.architecture_name.c_str(), tpi, cfg.multimodal->vision.image_size,
                cfg.multimodal->vision.image_size, layers_used, backend->name().c_str());
    std::printf("image: %s, %zu bytes\n", argv[2], bytes.size());
    std::printf("prepare (decode + preprocess + patchify + hash): %.2f ms\n", prep_ms);
    std::printf("encode (tower + projector, 1 image): %.1f ms, %.1f GFLOP -> %.1f GFLOP/s = %.0f%% of "
                "the backend's %.1f GFLOP/s on a 2048^3 GEMM\n",
                enc_ms, flops / 1e9, flops / (enc_ms * 1e-3) / 1e9,
                100.0 * flops / (enc_ms * 1e-3) / peak, peak / 1e9);
    std::printf("prefill of %d tokens (%d text + %d image), time to first token: %.1f ms with the "
                "encode, %.1f ms on an encoder-cache hit (%lld hits, %lld encodes in all)\n",
                prompt_len, text_tokens + 1, tpi, cold_ms, hit_ms,
                static_cast<long long>(st.encoder_cache.hits), static_cast<long long>(st.encoder_cache.encoded_items));
    std::printf(
        "RESULT {\"image_tokens\": %d, \"prepare_ms\": %.3f, \"encode_ms\": %.3f, "
        "\"encode_gflops\": %.2f, \"gemm_peak_gflops\": %.2f, \"encode_peak_fraction\": %.3f, "
        "\"prompt_tokens\": %d, \"ttft_ms\": %.3f, \"ttft_cache_hit_ms\": %.3f}\n",
        tpi, prep_ms, enc_ms, flops / (enc_ms * 1e-3) / 1e9, peak / 1e9,
        flops / (enc_ms * 1e-3) / peak, prompt_len, cold_ms, hit_ms);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_vision: %s\n", e.what());
    return 1;
  }
  return 0;
}
