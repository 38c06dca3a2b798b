// Qwen2.5-VL against the independent PyTorch reference (reference_qwen2_5_vl.py, fixtures
// written by make_qwen_vl_checkpoints.py): config parsing of both checkpoint layouts, M-RoPE
// positions against get_rope_index, and greedy generation through the batching engine with
// 1 and 2 tensor-parallel ranks and with chunked prefill splitting an image.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <span>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "engine/image/qwen_preprocess.h"
#include "engine/image_encoder.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/memory_plan.h"
#include "engine/models/model.h"
#include "engine/mrope_positions.h"
#include "engine/parallel/communicator.h"

using namespace iris;
using Catch::Matchers::Contains;
using json = nlohmann::json;

namespace {

std::string fixture_dir() {
  if (const char* env = std::getenv("IRIS_QWEN_VL_FIXTURES")) return env;
  return IRIS_QWEN_VL_FIXTURES;
}

const json& fixtures() {
  static const json fx = [] {
    const std::string path = fixture_dir() + "/fixtures.json";
    std::ifstream in(path);
    if (!in) FAIL("cannot open " << path << " (run make_qwen_vl_checkpoints.py)");
    return json::parse(in);
  }();
  return fx;
}

const char* const kCheckpoints[] = {"qwen25vl-hub", "qwen25vl-current"};

struct Run {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  std::string error;
};

// One model on `world` CPU ranks behind an engine.
struct Served {
  std::unique_ptr<Checkpoint> ckpt;
  ModelConfig cfg;
  std::vector<std::unique_ptr<Backend>> backends;
  std::vector<std::unique_ptr<Model>> models;
  std::unique_ptr<Engine> engine;

  std::unique_ptr<Backend> encoder_backend;
  std::unique_ptr<ImageEncoder> encoder;

  Served(const std::string& dir, int world, EngineConfig ec, bool with_encoder = false) {
    ckpt = Checkpoint::open(dir);
    cfg = ModelConfig::from_dir(dir);
    if (with_encoder) {
      encoder_backend = make_cpu_backend(1);
      encoder = ImageEncoder::load(dir, *ckpt, cfg, *encoder_backend);
    }
    std::vector<RankModel> ranks;
    for (int r = 0; r < world; ++r) {
      backends.push_back(make_cpu_backend(1));
      models.push_back(load_model(*ckpt, cfg, *backends.back(), ParallelConfig{r, world}));
      ranks.push_back({backends.back().get(), models.back().get()});
    }
    auto comms = world > 1 ? make_cpu_communicators(world, std::chrono::seconds(30))
                           : std::vector<std::unique_ptr<Communicator>>{};
    engine = std::make_unique<Engine>(std::make_unique<ModelExecutor>(std::move(ranks), std::move(comms)),
                                      ec, nullptr, encoder.get());
  }

  Run run(EngineRequest r) {
    Run out;
    engine->submit(std::move(r), [&](const EngineOutput& o) {
      out.ids.insert(out.ids.end(), o.token_ids.begin(), o.token_ids.end());
      out.logprobs.insert(out.logprobs.end(), o.logprobs.begin(), o.logprobs.end());
      if (!o.error.empty()) out.error = o.error;
    });
    while (engine->has_work()) {
      engine->step();
      REQUIRE(engine->check_invariants().empty());
    }
    return out;
  }
};

EngineConfig small_engine(int max_batched_tokens = 256) {
  EngineConfig ec;
  ec.num_kv_blocks = 64;
  ec.block_size = 16;
  ec.max_num_seqs = 4;
  ec.max_num_batched_tokens = max_batched_tokens;
  ec.max_num_encoder_tokens = 64;  // each image fits even when a step's chunk is smaller
  return ec;
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

// Media spans with given embeddings: one per run of image tokens, grids from the fixture
// ((t, h, w) in patches; the language model sees h / 2 x w / 2 after the 2 x 2 merger).
std::vector<MediaEmbeds> embed_spans(const json& c, int32_t image_token, int64_t hidden) {
  const auto prompt = c["prompt"].get<std::vector<int32_t>>();
  const auto all = c["embeds"].get<std::vector<float>>();
  std::vector<MediaEmbeds> media;
  size_t row = 0;
  for (size_t i = 0; i < prompt.size();) {
    if (prompt[i] != image_token) {
      ++i;
      continue;
    }
    const json& g = c["grids"][media.size()];
    MediaEmbeds m;
    m.position = static_cast<int32_t>(i);
    m.grid_t = g[0];
    m.grid_h = g[1].get<int>() / 2;
    m.grid_w = g[2].get<int>() / 2;
    m.length = m.grid_t * m.grid_h * m.grid_w;
    m.embeds = std::make_shared<const std::vector<float>>(all.begin() + row * hidden,
                                                          all.begin() + (row + m.length) * hidden);
    m.content_hash = 1000 + media.size();
    row += m.length;
    i += m.length;
    media.push_back(m);
  }
  REQUIRE(row * hidden == all.size());
  return media;
}

void check_matches(const Run& got, const json& c, float tol) {
  REQUIRE(got.error.empty());
  const auto want = c["ids"].get<std::vector<int32_t>>();
  const auto want_lps = c["logprobs"].get<std::vector<float>>();
  CHECK(got.ids == want);
  REQUIRE(got.logprobs.size() == want_lps.size());
  float worst = 0;
  for (size_t i = 0; i < want_lps.size(); ++i)
    worst = std::max(worst, std::fabs(got.logprobs[i] - want_lps[i]));
  INFO("worst logprob difference " << worst);
  CHECK(worst <= tol);
}

}  // namespace

TEST_CASE("Qwen2.5-VL config: both layouts, M-RoPE sections, the vision tower") {
  for (const char* name : kCheckpoints) {
    const ModelConfig c = ModelConfig::from_dir(fixture_dir() + "/" + name);
    CHECK(c.architecture_name == "Qwen2_5_VLForConditionalGeneration");
    CHECK(c.arch == Architecture::kQwen2);
    CHECK(c.attention_bias);
    CHECK(c.mrope_section == std::vector<int>{2, 3, 3});
    REQUIRE(c.qwen_vl);
    CHECK(c.qwen_vl->image_token_id == 300);
    CHECK(c.qwen_vl->video_token_id == 301);
    CHECK(c.qwen_vl->vision_start_token_id == 302);
    CHECK(c.qwen_vl->vision_end_token_id == 303);
    const QwenVisionConfig& v = c.qwen_vl->vision;
    CHECK(v.depth == 4);
    CHECK(v.hidden_size == 32);
    CHECK(v.out_hidden_size == 64);
    CHECK(v.fullatt_block_indexes == std::vector<int>{1, 3});
    CHECK(v.patch_dim() == 3 * 2 * 14 * 14);
    CHECK(v.tokens_per_second == 2);
  }
  CHECK_FALSE(ModelConfig::from_dir(fixture_dir() + "/qwen25vl-hub").tie_word_embeddings);
  CHECK(ModelConfig::from_dir(fixture_dir() + "/qwen25vl-current").tie_word_embeddings);

  json j;
  {
    std::ifstream in(fixture_dir() + "/qwen25vl-hub/config.json");
    j = json::parse(in);
  }
  auto bad = [&](json edited, const std::string& field) {
    CHECK_THROWS_WITH(ModelConfig::from_json(edited, json(), "config.json"), Contains(field));
  };
  json e = j;
  e["rope_scaling"]["mrope_section"] = {2, 3, 4};
  bad(e, "mrope_section");
  e = j;
  e.erase("rope_scaling");
  bad(e, "mrope_section");
  e = j;
  e["vision_config"]["fullatt_block_indexes"] = {1, 9};
  bad(e, "fullatt_block_indexes");
  e = j;
  e["vision_config"]["window_size"] = 100;
  bad(e, "window_size");
  e = j;
  e["image_token_id"] = 5000;
  bad(e, "image_token_id");
  e = j;
  e["vision_config"]["hidden_act"] = "gelu";
  bad(e, "hidden_act");
}

TEST_CASE("M-RoPE positions equal the reference's get_rope_index, decode delta included") {
  for (const char* name : kCheckpoints) {
    for (const char* key : {"mrope_embeds", "images"}) {
      const json& c = fixtures()[name][key];
      const auto prompt = c["prompt"].get<std::vector<int32_t>>();
      std::vector<MropeSpan> spans;
      size_t g = 0;
      for (size_t i = 0; i < prompt.size(); ++i) {
        if (prompt[i] != 300 || (i > 0 && prompt[i - 1] == 300)) continue;
        const json& grid = c["grids"][g++];
        spans.push_back(MropeSpan{static_cast<int32_t>(i), grid[0], grid[1].get<int>() / 2,
                                  grid[2].get<int>() / 2, 0.0});
      }
      const MropePositions m = mrope_positions(static_cast<int32_t>(prompt.size()), spans);
      CHECK(m.prompt == c["positions"].get<std::vector<int32_t>>());
      CHECK(m.delta == c["delta"].get<int32_t>());
      CHECK(m.delta < 0);  // images of more than one row/column compress the positions
      int32_t p3[3];
      m.at(static_cast<int32_t>(prompt.size()) + 4, p3);
      CHECK((p3[0] == p3[1] && p3[1] == p3[2] &&
             p3[0] == static_cast<int32_t>(prompt.size()) + 4 + m.delta));
    }
  }
  // A span that does not fit is an error, not a read past the prompt.
  CHECK_THROWS_WITH(mrope_positions(10, {MropeSpan{4, 1, 3, 3, 0.0}}), Contains("does not fit"));
}

TEST_CASE("Qwen2.5-VL text-only prompts: the reference's tokens, and plain Qwen2's exactly") {
  for (const char* name : kCheckpoints) {
    const json& c = fixtures()[name]["text"];
    for (int world : {1, 2}) {
      Served s(fixture_dir() + "/" + name, world, small_engine());
      INFO(name << " with " << world << " ranks");
      check_matches(s.run(greedy("t", c["prompt"].get<std::vector<int32_t>>(), 8)), c, 1e-3f);
    }
  }
  // M-RoPE with three equal position rows is RoPE: the same weights as Qwen2ForCausalLM.
  const json& c = fixtures()["qwen25vl-hub"]["text"];
  Served vl(fixture_dir() + "/qwen25vl-hub", 1, small_engine());
  Served plain(fixture_dir() + "/qwen2-text", 1, small_engine());
  const auto prompt = c["prompt"].get<std::vector<int32_t>>();
  const Run a = vl.run(greedy("a", prompt, 8));
  const Run b = plain.run(greedy("b", prompt, 8));
  CHECK(a.ids == b.ids);
  CHECK(a.logprobs == b.logprobs);
}

TEST_CASE("Qwen2.5-VL M-RoPE with two images of different grids: reference tokens with 1 and 2 "
          "ranks, and with chunked prefill splitting an image") {
  for (const char* name : kCheckpoints) {
    const json& c = fixtures()[name]["mrope_embeds"];
    const auto prompt = c["prompt"].get<std::vector<int32_t>>();
    for (int world : {1, 2}) {
      for (int chunk : {256, 5}) {
        Served s(fixture_dir() + "/" + name, world, small_engine(chunk));
        INFO(name << " with " << world << " ranks, " << chunk << " tokens per step");
        EngineRequest r = greedy("m", prompt, 8);
        r.media = embed_spans(c, 300, s.cfg.hidden_size);
        check_matches(s.run(r), c, 1e-3f);
      }
    }
  }
}

TEST_CASE("Qwen2.5-VL M-RoPE: a span whose grid does not match its length fails alone") {
  const json& c = fixtures()["qwen25vl-hub"]["mrope_embeds"];
  Served s(fixture_dir() + "/qwen25vl-hub", 1, small_engine());
  EngineRequest r = greedy("bad", c["prompt"].get<std::vector<int32_t>>(), 4);
  r.media = embed_spans(c, 300, s.cfg.hidden_size);
  r.media[0].grid_w += 1;
  const Run bad = s.run(r);
  CHECK_THAT(bad.error, Contains("grid"));
  CHECK(bad.ids.empty());
  // The engine serves the next request normally.
  const json& t = fixtures()["qwen25vl-hub"]["text"];
  check_matches(s.run(greedy("ok", t["prompt"].get<std::vector<int32_t>>(), 8)), t, 1e-3f);
}

namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) FAIL("cannot open " << path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

TEST_CASE("Qwen2.5-VL smart_resize: multiples of patch x merge, the pixel range, Python rounding") {
  using image::smart_resize;
  CHECK(smart_resize(100, 150, 28, 3136, 12845056) == std::pair{112, 140});
  // round() ties go to the even multiple: 42 / 28 = 1.5 -> 2, 70 / 28 = 2.5 -> 2.
  CHECK(smart_resize(42, 70, 28, 1, 1 << 30) == std::pair{56, 56});
  // Over max_pixels: scaled down, floored to multiples; under min_pixels: scaled up, ceiled.
  CHECK(smart_resize(1000, 2000, 28, 3136, 28 * 28 * 256) == std::pair{308, 616});
  CHECK(smart_resize(20, 30, 28, 56 * 56, 1 << 30) == std::pair{56, 84});
  CHECK_THROWS_WITH(smart_resize(9, 100, 28, 3136, 1 << 20), Contains("too small"));
  CHECK_THROWS_WITH(smart_resize(10, 2500, 28, 3136, 1 << 30), Contains("elongated"));
}

TEST_CASE("Qwen2.5-VL preprocessing is the Pillow-based processor's, vision features within 1e-4") {
  for (const char* name : kCheckpoints) {
    const std::string dir = fixture_dir() + "/" + name;
    auto backend = make_cpu_backend(2);
    auto ck = Checkpoint::open(dir);
    const ModelConfig cfg = ModelConfig::from_dir(dir);
    auto encoder = ImageEncoder::load(dir, *ck, cfg, *backend);
    REQUIRE(encoder);
    CHECK(encoder->tokens_per_image() == 0);
    CHECK(encoder->image_token_id() == 300);
    const json& v = fixtures()[name]["vision"];
    for (size_t i = 0; i < v["images"].size(); ++i) {
      INFO(name << " image " << v["images"][i]);
      const auto bytes = read_file(fixture_dir() + "/images/" + v["images"][i].get<std::string>());
      const ImageEncoder::Prepared p = encoder->prepare(bytes, image::DecodeLimits{});
      const json& g = v["grids"][i];
      CHECK(p.grid_t == g[0].get<int>());
      CHECK(p.grid_h == g[1].get<int>() / 2);
      CHECK(p.grid_w == g[2].get<int>() / 2);
      CHECK(p.tokens == p.grid_t * p.grid_h * p.grid_w);
      const auto want = v["patches"][i].get<std::vector<float>>();
      REQUIRE(p.patches->size() == want.size());
      size_t differ = 0;
      for (size_t k = 0; k < want.size(); ++k) differ += (*p.patches)[k] != want[k];
      CHECK(differ == 0);  // bit-identical to PIL + numpy

      MediaEmbeds m;
      m.length = p.tokens;
      m.grid_t = p.grid_t;
      m.grid_h = p.grid_h;
      m.grid_w = p.grid_w;
      m.encoder_input = p.patches;
      const MediaEmbeds* items[] = {&m};
      const auto out = encoder->encode_items(items);
      const auto feats = v["features"][i].get<std::vector<float>>();
      REQUIRE(out.at(0)->size() == feats.size());
      float worst = 0, scale = 0;
      for (size_t k = 0; k < feats.size(); ++k) {
        worst = std::max(worst, std::fabs((*out[0])[k] - feats[k]));
        scale = std::max(scale, std::fabs(feats[k]));
      }
      INFO("worst feature difference " << worst << " of values up to " << scale);
      CHECK(worst <= 1e-4f);
    }
  }
}

TEST_CASE("Qwen2.5-VL images through the engine's encoder: reference tokens with 1 and 2 ranks, "
          "chunked prefill splitting an image, and prefix-cache reuse equal to a cold run") {
  for (const char* name : kCheckpoints) {
    const std::string dir = fixture_dir() + "/" + name;
    const json& v = fixtures()[name]["vision"];
    const json& c = fixtures()[name]["images"];
    for (int world : {1, 2}) {
      for (int chunk : {256, 7}) {
        INFO(name << " with " << world << " ranks, " << chunk << " tokens per step");
        Served s(dir, world, small_engine(chunk), /*with_encoder=*/true);
        std::vector<ImageEncoder::Prepared> images;
        for (const auto& f : v["images"])
          images.push_back(s.encoder->prepare(
              read_file(fixture_dir() + "/images/" + f.get<std::string>()), image::DecodeLimits{}));
        // The prompt with one placeholder per image, expanded by Iris to each image's rows.
        std::vector<int32_t> prompt;
        const auto full = c["prompt"].get<std::vector<int32_t>>();
        for (size_t i = 0; i < full.size(); ++i)
          if (full[i] != 300 || i == 0 || full[i - 1] != 300) prompt.push_back(full[i]);
        EngineRequest r = greedy("img", prompt, 8);
        r.media = expand_image_placeholders(r.prompt, 300, 0, images);
        REQUIRE(r.prompt == full);
        REQUIRE(r.media.size() == 2);
        const Run cold = s.run(r);
        check_matches(cold, c, 1e-3f);
        // Again: both images come from the encoder cache and the prompt's full blocks from the
        // prefix cache; the tokens are the cold run's.
        const int64_t hits0 = s.engine->stats().num_cached_tokens_hit;
        const int64_t encoded0 = s.engine->stats().encoder_cache.encoded_items;
        r.id = "again";
        const Run warm = s.run(r);
        CHECK(warm.ids == cold.ids);
        CHECK(s.engine->stats().num_cached_tokens_hit - hits0 >= 16);
        CHECK(s.engine->stats().encoder_cache.encoded_items == encoded0);
      }
    }
  }
}

TEST_CASE("Qwen2.5-VL video frames: sampling, preprocessing and features as the reference, then an "
          "image and a video in one prompt through the engine (second_per_grid_ts in M-RoPE)") {
  // Frame sampling alone (Qwen2VLVideoProcessor.sample_frames with fps).
  CHECK(image::qwen_sample_frames(6, 3.0, 2.0, 2, 4, 768) == std::vector<int>{0, 1, 3, 4});
  CHECK(image::qwen_sample_frames(100, 25.0, 2.0, 2, 4, 768) == std::vector<int>{0, 12, 25, 37, 50, 62, 75, 87});
  CHECK(image::qwen_sample_frames(10, 2.0, 2.0, 2, 4, 768) ==
        std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(image::qwen_sample_frames(10, 2.0, 2.0, 2, 4, 6).size() == 6);
  CHECK_THROWS_WITH(image::qwen_sample_frames(1, 2.0, 2.0, 2, 4, 768), Contains("too short"));

  for (const char* name : kCheckpoints) {
    INFO(name);
    const std::string dir = fixture_dir() + "/" + name;
    const json& c = fixtures()[name]["video"];
    Served s(dir, 2, small_engine(7), /*with_encoder=*/true);
    std::vector<std::vector<uint8_t>> files;
    for (const auto& f : c["files"]) files.push_back(read_file(fixture_dir() + "/images/" + f.get<std::string>()));
    std::vector<std::span<const uint8_t>> frames(files.begin(), files.end());
    const ImageEncoder::Prepared v = s.encoder->prepare_video(frames, c["fps"].get<double>(), {});
    CHECK(v.sampled_frames == c["sampled"].get<std::vector<int>>());
    CHECK(v.grid_t == c["grid"][0].get<int>());
    CHECK(v.grid_h == c["grid"][1].get<int>() / 2);
    CHECK(v.grid_w == c["grid"][2].get<int>() / 2);
    CHECK(v.temporal_step == c["second_per_grid"].get<double>() * 2);  // tokens_per_second 2
    CHECK(*v.patches == c["patches"].get<std::vector<float>>());     // bit-identical

    MediaEmbeds m;
    m.length = v.tokens;
    m.grid_t = v.grid_t;
    m.grid_h = v.grid_h;
    m.grid_w = v.grid_w;
    m.encoder_input = v.patches;
    const MediaEmbeds* items[] = {&m};
    const auto feats = c["features"].get<std::vector<float>>();
    const auto out = s.encoder->encode_items(items);
    REQUIRE(out.at(0)->size() == feats.size());
    float worst = 0;
    for (size_t k = 0; k < feats.size(); ++k) worst = std::max(worst, std::fabs((*out[0])[k] - feats[k]));
    CHECK(worst <= 1e-4f);

    // The image and the video in one prompt, one placeholder each, expanded by Iris.
    const auto full = c["prompt"].get<std::vector<int32_t>>();
    std::vector<int32_t> prompt;
    for (size_t i = 0; i < full.size(); ++i)
      if ((full[i] != 300 && full[i] != 301) || full[i - 1] != full[i]) prompt.push_back(full[i]);
    const ImageEncoder::Prepared img =
        s.encoder->prepare(read_file(fixture_dir() + "/images/" + c["image"].get<std::string>()), {});
    EngineRequest r = greedy("video", prompt, 8);
    r.media = expand_media_placeholders(r.prompt, 300, {img}, 301, {v});
    REQUIRE(r.prompt == full);
    // M-RoPE after the video: the reference's get_rope_index with second_per_grid_ts.
    std::vector<MropeSpan> spans;
    for (const MediaEmbeds& e : r.media)
      spans.push_back(MropeSpan{e.position, e.grid_t, e.grid_h, e.grid_w, e.temporal_step});
    const MropePositions pos = mrope_positions(static_cast<int32_t>(full.size()), spans);
    CHECK(pos.prompt == c["positions"].get<std::vector<int32_t>>());
    CHECK(pos.delta == c["delta"].get<int32_t>());
    check_matches(s.run(r), c, 1e-3f);

    // Frames of different sizes fail with the frame named, and nothing is disturbed.
    std::vector<uint8_t> other = read_file(fixture_dir() + "/images/wide.png");
    std::vector<std::span<const uint8_t>> mixed(files.begin(), files.end());
    mixed[3] = other;
    CHECK_THROWS_WITH(s.encoder->prepare_video(mixed, 3.0, {}), Contains("frame 3"));
    CHECK_THROWS_WITH(s.encoder->prepare_video({}, 3.0, {}), Contains("at least one frame"));
  }
}

TEST_CASE("Qwen2.5-VL memory plan: rank 0 holds the language model's shard and the vision tower") {
  const std::string dir = fixture_dir() + "/qwen25vl-hub";
  const ModelConfig cfg = ModelConfig::from_dir(dir);
  auto ck = Checkpoint::open(dir);
  for (int world : {1, 2}) {
    const MemoryPlan plan = plan_memory(cfg, DType::F32, world, 16);
    for (int r = 0; r < world; ++r) {
      auto backend = make_cpu_backend(1);
      auto model = load_model(*ck, cfg, *backend, ParallelConfig{r, world});
      size_t tower = 0;
      if (r == 0) {
        QwenVisionEncoder v(*ck, cfg, *backend, weight_names(*ck, cfg));
        tower = v.weight_bytes();
      }
      INFO("rank " << r << " of " << world);
      CHECK(plan.ranks[r].weight_bytes == model->weight_bytes() + tower);
    }
  }
}
