// Batch-1 prefill and decode speed of one checkpoint on a backend, with the fraction of the
// memory-bandwidth roofline decode reaches (weight bytes read per token ÷ measured copy
// bandwidth). Prints figures only; never fails on a timing.
//
// usage: bench_generate MODEL_DIR [prompt_tokens=128] [decode_tokens=64] [threads=0]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/backend.h"
#include "engine/core/check.h"
#include "engine/generator.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"

using namespace iris;

static double copy_bandwidth_gbs() {
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

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [prompt_tokens] [decode_tokens] [threads]\n", argv[0]);
    return 2;
  }
  const int prompt_len = argc > 2 ? std::atoi(argv[2]) : 128;
  const int decode = argc > 3 ? std::atoi(argv[3]) : 64;
  const int threads = argc > 4 ? std::atoi(argv[4]) : 0;
  try {
    const ModelConfig cfg = ModelConfig::from_dir(argv[1]);
    auto ck = Checkpoint::open(argv[1]);
    auto backend = make_cpu_backend(threads);
    auto model = load_model(*ck, cfg, *backend);
    Generator gen(*backend, *model, 512);
    std::vector<int32_t> prompt(prompt_len);
    for (int i = 0; i < prompt_len; ++i) prompt[i] = 3 + (i * 7919) % (cfg.vocab_size - 3);
    SamplingParams p;
    p.temperature = 0;
    p.max_tokens = decode;
    p.ignore_eos = true;
    gen.generate(prompt, SamplingParams{.temperature = 0, .max_tokens = 4, .ignore_eos = true});  // warm-up
    auto r = gen.generate(prompt, p);
    const double prefill_tps = prompt_len / r.prefill_seconds;
    const double decode_ms = r.decode_seconds * 1e3 / std::max<size_t>(1, r.output_ids.size() - 1);
    const double weight_gb = model->weight_bytes() / 1e9;
    const double bw = copy_bandwidth_gbs();
    const double floor_ms = weight_gb / bw * 1e3;
    std::printf("model: %s  weights %.1f MB (fp32 on %s)\n", argv[1], weight_gb * 1e3,
                backend->name().c_str());
    std::printf("prefill: %d tokens in %.1f ms = %.0f tokens/s\n", prompt_len,
                r.prefill_seconds * 1e3, prefill_tps);
    std::printf("decode: %.2f ms/token = %.1f tokens/s (batch 1, %zu tokens)\n", decode_ms,
                1e3 / decode_ms, r.output_ids.size());
    std::printf("roofline: copy bandwidth %.1f GB/s -> weight-read floor %.2f ms/token; "
                "decode at %.0f%% of it\n", bw, floor_ms, 100.0 * floor_ms / decode_ms);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_generate: %s\n", e.what());
    return 1;
  }
  return 0;
}
