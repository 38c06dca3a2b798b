// Images through the batching engine's own encoder path: requests carry patchified pixels,
// the scheduler hands out a per-step encoder budget and accounts for the encoder cache, the
// engine encodes with ImageEncoder. Checked against the independent PyTorch reference
// (fixtures.json), plus the cache behaviour a user relies on: a repeated image is not encoded
// again, and the same text with a different image shares no KV after the text prefix.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "engine/engine.h"
#include "engine/image_encoder.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/models/model.h"
#include "tests/vision/vision_fixtures.h"

using namespace iris;
using namespace iris::vision_test;
using Catch::Matchers::Contains;

namespace {

struct Run {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  std::string error;
};

// Submits one request and steps the engine until it is idle, checking the scheduler's
// invariants (KV blocks and encoder-cache references) after every step.
Run run(Engine& engine, EngineRequest r) {
  Run out;
  engine.submit(std::move(r), [&](const EngineOutput& o) {
    out.ids.insert(out.ids.end(), o.token_ids.begin(), o.token_ids.end());
    out.logprobs.insert(out.logprobs.end(), o.logprobs.begin(), o.logprobs.end());
    if (!o.error.empty()) out.error = o.error;
  });
  while (engine.has_work()) {
    engine.step();
    const std::string bad = engine.check_invariants();
    REQUIRE(bad.empty());
  }
  return out;
}

// One media span per run of image tokens, each with its image's patches as encoder input.
std::vector<MediaEmbeds> spans(const std::vector<int32_t>& prompt, int32_t image_token, int tpi,
                               const std::vector<std::shared_ptr<const std::vector<float>>>& inputs,
                               const std::vector<uint64_t>& hashes) {
  std::vector<MediaEmbeds> media;
  for (size_t i = 0; i < prompt.size();) {
    if (prompt[i] != image_token) {
      ++i;
      continue;
    }
    MediaEmbeds m;
    m.position = static_cast<int32_t>(i);
    m.length = tpi;
    m.encoder_input = inputs.at(media.size());
    m.content_hash = hashes.at(media.size());
    media.push_back(m);
    i += static_cast<size_t>(tpi);
  }
  REQUIRE(media.size() == inputs.size());
  return media;
}

EngineRequest greedy(const std::string& id, std::vector<int32_t> prompt, int max_tokens) {
  EngineRequest r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.params.temperature = 0;
  r.params.ignore_eos = true;
  r.params.max_tokens = max_tokens;
  return r;
}

}  // namespace

TEST_CASE("LLaVA through the engine's encoder: budget, encoder cache, image content in the prefix keys") {
  const nlohmann::json fx = load_fixtures();
  const nlohmann::json* clip = nullptr;
  for (const auto& c : fx["cases"])
    if (c["model"] == "clip-llava") clip = &c;
  REQUIRE(clip);
  const nlohmann::json& c = *clip;
  const std::string dir = fixture_dir() + "/clip-llava";
  auto backend = make_cpu_backend(2);
  auto ck = Checkpoint::open(dir);
  const ModelConfig cfg = ModelConfig::from_dir(dir);
  auto model = load_model(*ck, cfg, *backend);
  auto encoder = ImageEncoder::load(dir, *ck, cfg, *backend, /*max_batch=*/2);
  REQUIRE(encoder);
  const int n = c["num_images"];
  REQUIRE(n == 2);
  const int tpi = c["tokens_per_image"];
  REQUIRE(encoder->tokens_per_item() == tpi);
  const VisionConfig& v = cfg.multimodal->vision;
  const auto all = patchify(c["pixel_values"].get<std::vector<float>>(), n, v.num_channels,
                            v.image_size, v.patch_size);
  const size_t per = all.size() / n;
  std::vector<std::shared_ptr<const std::vector<float>>> images;
  for (int i = 0; i < n; ++i)
    images.push_back(std::make_shared<const std::vector<float>>(all.begin() + per * i, all.begin() + per * (i + 1)));
  const int32_t img = cfg.multimodal->image_token_id;

  EngineConfig ec;
  ec.num_kv_blocks = 64;
  ec.block_size = 16;
  ec.max_num_seqs = 4;
  ec.max_num_batched_tokens = 7;      // chunks end inside image spans
  ec.max_num_encoder_tokens = tpi;    // one image per step
  ec.encoder_cache_tokens = 2 * tpi;  // room for both images
  Engine engine(*backend, *model, ec, nullptr, encoder.get());

  // The reference prompt (two images), encoded by the engine one image per step.
  const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
  const auto want = c["output_ids"].get<std::vector<int32_t>>();
  const auto want_lps = c["logprobs"].get<std::vector<float>>();
  EngineRequest r = greedy("ref", prompt, static_cast<int>(want.size()));
  r.media = spans(prompt, img, tpi, images, {11, 22});
  const Run a = run(engine, r);
  REQUIRE(a.error.empty());
  CHECK(a.ids == want);
  float worst = 0;
  for (size_t i = 0; i < std::min(a.logprobs.size(), want_lps.size()); ++i)
    worst = std::max(worst, std::fabs(a.logprobs[i] - want_lps[i]));
  CHECK(worst <= 1e-4f);
  EngineStats st = engine.stats();
  CHECK(st.encoder_cache.encoded_items == 2);
  CHECK(st.encoder_cache.hits == 0);
  CHECK(st.encode_seconds > 0);

  // The same text with one image per request: a long text prefix, the image, more text.
  std::vector<int32_t> text(40);
  for (int i = 0; i < 40; ++i) text[i] = 3 + (i * 7) % 200;
  std::vector<int32_t> p(text.begin(), text.begin() + 20);
  p.insert(p.end(), static_cast<size_t>(tpi), img);
  p.insert(p.end(), text.begin() + 20, text.end());
  auto one = [&](const std::string& id, int image, uint64_t hash) {
    EngineRequest q = greedy(id, p, 6);
    q.media = spans(p, img, tpi, {images[image]}, {hash});
    const int64_t hit0 = engine.stats().num_cached_tokens_hit;
    Run out = run(engine, q);
    REQUIRE(out.error.empty());
    return std::make_pair(out, engine.stats().num_cached_tokens_hit - hit0);
  };
  const auto [x1, x1_hit] = one("x1", 0, 11);  // image 0 is still in the encoder cache
  st = engine.stats();
  CHECK(st.encoder_cache.encoded_items == 2);
  CHECK(st.encoder_cache.hits == 1);
  CHECK(x1_hit == 0);  // the first request with this text

  const auto [y, y_hit] = one("y", 1, 22);
  // Different image: only the first block (text only) is shared; the second holds the image.
  CHECK(y_hit == 16);
  CHECK((y.ids != x1.ids || y.logprobs != x1.logprobs));  // and a different answer

  const auto [x2, x2_hit] = one("x2", 0, 11);
  CHECK(x2.ids == x1.ids);
  CHECK(x2_hit == static_cast<int64_t>(p.size()) / 16 * 16);  // every full block reused
  st = engine.stats();
  CHECK(st.encoder_cache.encoded_items == 2);  // nothing encoded twice
  CHECK(st.num_free_blocks == st.num_total_blocks);
  CHECK(st.encoder_cache.used_tokens == 2 * tpi);
  CHECK(st.encoder_cache.capacity_tokens == 2 * tpi);
}

// Counts the engine's calls into the encoder and how many items each carried.
class CountingEncoder final : public MediaEncoder {
 public:
  explicit CountingEncoder(MediaEncoder& inner) : inner_(inner) {}
  int tokens_per_item() const override { return inner_.tokens_per_item(); }
  int64_t output_dim() const override { return inner_.output_dim(); }
  size_t input_size() const override { return inner_.input_size(); }
  std::vector<std::shared_ptr<const std::vector<float>>> encode(
      std::span<const std::vector<float>* const> inputs) override {
    batches.push_back(static_cast<int>(inputs.size()));
    return inner_.encode(inputs);
  }
  std::vector<int> batches;

 private:
  MediaEncoder& inner_;
};

TEST_CASE("LLaVA engine: both images of a prompt encoded in one batched call match the reference") {
  const nlohmann::json fx = load_fixtures();
  const nlohmann::json* clip = nullptr;
  for (const auto& c : fx["cases"])
    if (c["model"] == "clip-llava") clip = &c;
  REQUIRE(clip);
  const nlohmann::json& c = *clip;
  const std::string dir = fixture_dir() + "/clip-llava";
  auto backend = make_cpu_backend(2);
  auto ck = Checkpoint::open(dir);
  const ModelConfig cfg = ModelConfig::from_dir(dir);
  auto model = load_model(*ck, cfg, *backend);
  // max_batch 2 and 3: one call of two images; max_batch 1: the encoder splits the call.
  for (int max_batch : {1, 2, 3}) {
    INFO("max_batch " << max_batch);
    auto image_encoder = ImageEncoder::load(dir, *ck, cfg, *backend, max_batch);
    CountingEncoder encoder(*image_encoder);
    const int n = c["num_images"];
    const int tpi = c["tokens_per_image"];
    const VisionConfig& v = cfg.multimodal->vision;
    const auto all = patchify(c["pixel_values"].get<std::vector<float>>(), n, v.num_channels,
                              v.image_size, v.patch_size);
    const size_t per = all.size() / n;
    std::vector<std::shared_ptr<const std::vector<float>>> images;
    for (int i = 0; i < n; ++i)
      images.push_back(std::make_shared<const std::vector<float>>(all.begin() + per * i, all.begin() + per * (i + 1)));
    EngineConfig ec;
    ec.num_kv_blocks = 64;
    ec.max_num_batched_tokens = 256;  // the whole prompt in one step
    ec.max_num_encoder_tokens = 2 * tpi;
    ec.encoder_cache_tokens = 2 * tpi;
    Engine engine(*backend, *model, ec, nullptr, &encoder);
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto want = c["output_ids"].get<std::vector<int32_t>>();
    const auto want_lps = c["logprobs"].get<std::vector<float>>();
    EngineRequest r = greedy("ref", prompt, static_cast<int>(want.size()));
    r.media = spans(prompt, cfg.multimodal->image_token_id, tpi, images, {31, 32});
    const Run a = run(engine, r);
    REQUIRE(a.error.empty());
    CHECK(a.ids == want);
    float worst = 0;
    for (size_t i = 0; i < std::min(a.logprobs.size(), want_lps.size()); ++i)
      worst = std::max(worst, std::fabs(a.logprobs[i] - want_lps[i]));
    CHECK(worst <= 1e-4f);
    CHECK(encoder.batches == std::vector<int>{2});  // one call for the step's two images
  }
}

TEST_CASE("LLaVA engine: an image the encoder budget can never take fails alone, at once") {
  const std::string dir = fixture_dir() + "/clip-llava";
  auto backend = make_cpu_backend(2);
  auto ck = Checkpoint::open(dir);
  const ModelConfig cfg = ModelConfig::from_dir(dir);
  auto model = load_model(*ck, cfg, *backend);
  auto encoder = ImageEncoder::load(dir, *ck, cfg, *backend);
  const int tpi = encoder->tokens_per_item();
  EngineConfig ec;
  ec.num_kv_blocks = 32;
  ec.max_num_encoder_tokens = tpi - 1;
  ec.encoder_cache_tokens = 4 * tpi;
  Engine engine(*backend, *model, ec, nullptr, encoder.get());
  const int32_t img = cfg.multimodal->image_token_id;
  std::vector<int32_t> prompt = {1, 5, 6};
  prompt.insert(prompt.end(), static_cast<size_t>(tpi), img);
  prompt.push_back(7);
  const auto patches = std::make_shared<const std::vector<float>>(
      static_cast<size_t>(cfg.multimodal->vision.num_patches() * cfg.multimodal->vision.patch_dim()), 0.5f);
  EngineRequest r = greedy("big", prompt, 3);
  r.media = spans(prompt, img, tpi, {patches}, {5});
  const Run bad = run(engine, r);
  CHECK_THAT(bad.error, Contains("can never be encoded"));
  CHECK(bad.ids.empty());
  // A text-only request on the same engine runs.
  const Run ok = run(engine, greedy("text", {1, 5, 6, 7}, 3));
  CHECK(ok.error.empty());
  CHECK(ok.ids.size() == 3);
  // A span whose length is not the encoder's fails alone too.
  EngineRequest wrong = greedy("wrong", prompt, 3);
  wrong.media = spans(prompt, img, tpi, {patches}, {6});
  wrong.media[0].length = tpi - 1;
  CHECK_THAT(run(engine, wrong).error, Contains("the encoder yields"));
  // So does an encoder input of the wrong size (it would otherwise fail the encoder's step).
  EngineRequest short_input = greedy("short", prompt, 3);
  short_input.media = spans(prompt, img, tpi, {std::make_shared<const std::vector<float>>(7, 0.0f)}, {7});
  CHECK_THAT(run(engine, short_input).error, Contains("encoder input of 7 values"));
  const EngineStats st = engine.stats();
  CHECK(st.num_free_blocks == st.num_total_blocks);
  CHECK(st.encoder_cache.encoded_items == 0);
}
