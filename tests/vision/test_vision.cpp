// LLaVA parity on the CPU backend: the vision tower's selected features and the projector
// output against tests/vision/reference_llava.py within 1e-4, then greedy generation of the
// language model with the image embeddings scattered into the prompt — identical ids and
// log-probabilities within 1e-4. Fixtures come from make_vision_checkpoints.py (or, on a
// host with transformers, tools/parity/hf_llava_fixtures.py: point IRIS_VISION_FIXTURES at
// its output). Also config.json parsing of transformers' diff-only LLaVA configs and the
// weight-layout errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <numeric>

#include "engine/core/check.h"
#include "engine/engine.h"
#include "engine/image/preprocess.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/models/model.h"
#include "engine/models/vision.h"
#include "tests/unit/test_util.h"
#include "tests/vision/vision_fixtures.h"

using namespace iris;
using namespace iris::vision_test;
using Catch::Matchers::Contains;

namespace {

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  float m = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::vector<float> download(Backend& be, const Tensor& t) {
  std::vector<float> h(static_cast<size_t>(t.numel()));
  be.download_f32(t, h.data());
  return h;
}

// One sequence's steps through Model::forward over a contiguous block table.
class Stepper {
 public:
  Stepper(Backend& be, Model& model, int max_len, int block_size)
      : be_(be), model_(model) {
    blocks_ = (max_len + block_size - 1) / block_size;
    kv_ = allocate_kv_cache(be, model, blocks_, block_size);
    const int64_t t = max_len;
    tokens_ = be.allocate(DType::I32, {t});
    positions_ = be.allocate(DType::I32, {t});
    slots_ = be.allocate(DType::I32, {t});
    rows_ = be.allocate(DType::I32, {t});
    logits_idx_ = be.allocate(DType::I32, {1});
    qstart_ = be.allocate(DType::I32, {2});
    seq_lens_ = be.allocate(DType::I32, {1});
    tables_ = be.allocate(DType::I32, {1, blocks_});
    logits_ = be.allocate(DType::F32, {1, model.config().vocab_size});
    std::vector<int32_t> table(blocks_);
    std::iota(table.begin(), table.end(), 0);
    be.upload_i32(table.data(), tables_.tensor);
    model.reserve(max_len, 1);
  }

  // Feeds tokens at positions [start, start + n); rows listed in image_rows take their input
  // embedding from `embeds` instead. Returns the logits of the last token.
  std::vector<float> step(const std::vector<int32_t>& tokens, int start,
                          const std::vector<int32_t>& image_rows = {}, const Tensor& embeds = {}) {
    const int n = static_cast<int>(tokens.size());
    std::vector<int32_t> pos(n), last = {n - 1}, qs = {0, n}, lens = {start + n};
    std::iota(pos.begin(), pos.end(), start);  // contiguous table: slot == position
    StepInputs in;
    in.token_ids = tokens_.tensor.rows(0, n);
    in.positions = positions_.tensor.rows(0, n);
    in.logits_indices = logits_idx_.tensor;
    in.attn.query_start = qstart_.tensor;
    in.attn.seq_lens = seq_lens_.tensor;
    in.attn.block_tables = tables_.tensor;
    in.attn.slot_mapping = slots_.tensor.rows(0, n);
    in.attn.num_seqs = 1;
    in.attn.num_tokens = n;
    in.attn.max_query_len = n;
    in.attn.max_seq_len = start + n;
    in.attn.max_blocks_per_seq = blocks_;
    be_.upload_i32(tokens.data(), in.token_ids);
    be_.upload_i32(pos.data(), in.positions);
    be_.upload_i32(pos.data(), in.attn.slot_mapping);
    be_.upload_i32(last.data(), in.logits_indices);
    be_.upload_i32(qs.data(), in.attn.query_start);
    be_.upload_i32(lens.data(), in.attn.seq_lens);
    if (!image_rows.empty()) {
      in.embed_rows = rows_.tensor.rows(0, static_cast<int64_t>(image_rows.size()));
      be_.upload_i32(image_rows.data(), in.embed_rows);
      in.embeds = embeds;
    }
    model_.forward(in, kv_, logits_.tensor);
    return download(be_, logits_.tensor);
  }

 private:
  Backend& be_;
  Model& model_;
  int blocks_ = 0;
  KvCache kv_;
  Buffer tokens_, positions_, slots_, rows_, logits_idx_, qstart_, seq_lens_, tables_, logits_;
};

std::pair<int32_t, float> greedy_pick(const std::vector<float>& logits) {
  const auto it = std::max_element(logits.begin(), logits.end());
  const float mx = *it;
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l - mx));
  return {static_cast<int32_t>(it - logits.begin()), static_cast<float>(-std::log(sum))};
}

}  // namespace

TEST_CASE("LLaVA vision tower, projector and generation match the reference") {
  const nlohmann::json fx = load_fixtures();
  REQUIRE(fx["cases"].size() >= 2);
  for (const auto& c : fx["cases"]) {
    const std::string name = c["model"];
    INFO("model " << name << " (" << fx["reference"].get<std::string>() << ")");
    const std::string dir = fixture_dir() + "/" + name;
    auto backend = make_cpu_backend(2);
    auto ck = Checkpoint::open(dir);
    const ModelConfig cfg = ModelConfig::from_dir(dir);
    REQUIRE(cfg.multimodal.has_value());
    auto model = load_model(*ck, cfg, *backend);
    auto enc = load_vision_encoder(*ck, cfg, *backend);
    REQUIRE(enc != nullptr);

    const int n = c["num_images"];
    const int tpi = c["tokens_per_image"];
    REQUIRE(enc->tokens_per_image() == tpi);
    REQUIRE(cfg.multimodal->tokens_per_image() == tpi);
    const VisionConfig& v = cfg.multimodal->vision;
    const auto shape = c["pixel_shape"].get<std::vector<int>>();
    REQUIRE(shape == std::vector<int>{n, v.num_channels, v.image_size, v.image_size});

    // Vision: features of every feature layer and the projector output.
    const auto patches_h = patchify(c["pixel_values"].get<std::vector<float>>(), n,
                                    v.num_channels, v.image_size, v.patch_size);
    Buffer patches = backend->allocate(DType::F32, {n * static_cast<int64_t>(enc->patches_per_image()),
                                                    enc->patch_dim()});
    backend->upload(patches_h.data(), DType::F32, patches.tensor);
    Buffer embeds = backend->allocate(DType::F32, {static_cast<int64_t>(n) * tpi, enc->output_dim()});
    enc->reserve(n + 1);  // more than used: the prefix of every reserved buffer must serve
    enc->encode(patches.tensor, n, embeds.tensor);
    const auto& feats = c["features"];
    REQUIRE(feats.size() == cfg.multimodal->feature_layers.size());
    for (size_t k = 0; k < feats.size(); ++k) {
      const float d = max_abs_diff(download(*backend, enc->selected_features(k, n)),
                                   feats[k].get<std::vector<float>>());
      INFO("feature layer " << cfg.multimodal->feature_layers[k] << ": max |diff| " << d);
      CHECK(d <= 1e-4f);
    }
    const auto embeds_h = download(*backend, embeds.tensor);
    const float de = max_abs_diff(embeds_h, c["image_embeds"].get<std::vector<float>>());
    INFO("projector output: max |diff| " << de);
    CHECK(de <= 1e-4f);
    WARN(name << ": features/projector max |diff| " << de);

    // Text: prefill the prompt with the image embeddings at its placeholder rows, then decode.
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto want_ids = c["output_ids"].get<std::vector<int32_t>>();
    const auto want_lps = c["logprobs"].get<std::vector<float>>();
    std::vector<int32_t> rows;
    for (size_t i = 0; i < prompt.size(); ++i)
      if (prompt[i] == cfg.multimodal->image_token_id) rows.push_back(static_cast<int32_t>(i));
    REQUIRE(rows.size() == static_cast<size_t>(n) * tpi);

    Stepper st(*backend, *model, static_cast<int>(prompt.size() + want_ids.size()), 4);
    auto logits = st.step(prompt, 0, rows, embeds.tensor);
    std::vector<int32_t> got_ids;
    float worst = 0.0f;
    for (size_t i = 0; i < want_ids.size(); ++i) {
      const auto [tok, lp] = greedy_pick(logits);
      got_ids.push_back(tok);
      worst = std::max(worst, std::fabs(lp - want_lps[i]));
      if (i + 1 < want_ids.size())
        logits = st.step({tok}, static_cast<int>(prompt.size() + i));
    }
    INFO("logprob max |diff| " << worst);
    CHECK(got_ids == want_ids);
    CHECK(worst <= 1e-4f);
    WARN(name << ": greedy ids match=" << (got_ids == want_ids) << ", logprob max |diff| " << worst);

    // Without the image embeddings the same prompt must give different logits (the hook is live).
    Stepper plain(*backend, *model, static_cast<int>(prompt.size()), 4);
    const auto plain_logits = plain.step(prompt, 0);
    Stepper again(*backend, *model, static_cast<int>(prompt.size()), 4);
    const auto with_logits = again.step(prompt, 0, rows, embeds.tensor);
    CHECK(max_abs_diff(plain_logits, with_logits) > 1e-3f);
  }
}

TEST_CASE("LLaVA config.json as transformers writes it (sub-configs as diffs from defaults)") {
  // The shape of llava-hf/llava-1.5-7b-hf's config.json: most text and vision fields absent.
  nlohmann::json j = {
      {"architectures", {"LlavaForConditionalGeneration"}},
      {"model_type", "llava"},
      {"ignore_index", -100},
      {"image_token_index", 32000},
      {"pad_token_id", 32001},
      {"projector_hidden_act", "gelu"},
      {"text_config",
       {{"architectures", {"LlamaForCausalLM"}}, {"max_position_embeddings", 4096},
        {"model_type", "llama"}, {"rms_norm_eps", 1e-5}, {"vocab_size", 32064}}},
      {"vision_config",
       {{"hidden_size", 1024}, {"image_size", 336}, {"intermediate_size", 4096},
        {"model_type", "clip_vision_model"}, {"num_attention_heads", 16},
        {"num_hidden_layers", 24}, {"patch_size", 14}, {"projection_dim", 768},
        {"vocab_size", 32000}}},
      {"vision_feature_layer", -2},
      {"vision_feature_select_strategy", "default"}};
  const ModelConfig c = ModelConfig::from_json(j, nullptr, "config.json");
  REQUIRE(c.architecture_name == "LlavaForConditionalGeneration");
  REQUIRE(c.arch == Architecture::kLlama);
  REQUIRE(c.hidden_size == 4096);
  REQUIRE(c.intermediate_size == 11008);
  REQUIRE(c.num_layers == 32);
  REQUIRE(c.num_kv_heads == 32);
  REQUIRE(c.vocab_size == 32064);
  REQUIRE(c.max_position_embeddings == 4096);
  REQUIRE_FALSE(c.tie_word_embeddings);
  REQUIRE(c.multimodal.has_value());
  const MultimodalConfig& m = *c.multimodal;
  REQUIRE(m.image_token_id == 32000);
  REQUIRE(m.vision.type == VisionConfig::Type::kClip);
  REQUIRE(m.vision.hidden_act == "quick_gelu");
  REQUIRE(m.vision.layer_norm_eps == Approx(1e-5));
  REQUIRE(m.vision.num_patches() == 576);
  REQUIRE(m.vision.patch_dim() == 3 * 14 * 14);
  REQUIRE(m.tokens_per_image() == 576);
  REQUIRE(m.layers_used() == 23);
  REQUIRE(m.projector_bias);

  SECTION("SigLIP defaults, full strategy, a list of feature layers, Qwen2 text, image_token_id") {
    nlohmann::json s = j;
    s.erase("image_token_index");
    s["image_token_id"] = 151646;
    s["text_config"] = {{"model_type", "qwen2"}, {"tie_word_embeddings", true}};
    s["vision_config"] = {{"model_type", "siglip_vision_model"}, {"image_size", 384},
                          {"patch_size", 14}, {"num_hidden_layers", 27}};
    s["vision_feature_layer"] = {-1, 3};
    s["vision_feature_select_strategy"] = "full";
    s["multimodal_projector_bias"] = false;
    const ModelConfig q = ModelConfig::from_json(s, nullptr, "config.json");
    REQUIRE(q.arch == Architecture::kQwen2);
    REQUIRE(q.vocab_size == 151936);
    REQUIRE(q.attention_bias);
    REQUIRE(q.tie_word_embeddings);
    REQUIRE(q.multimodal->image_token_id == 151646);
    REQUIRE(q.multimodal->vision.type == VisionConfig::Type::kSiglip);
    REQUIRE(q.multimodal->vision.hidden_act == "gelu_pytorch_tanh");
    REQUIRE(q.multimodal->vision.layer_norm_eps == Approx(1e-6));
    REQUIRE(q.multimodal->tokens_per_image() == 27 * 27);
    REQUIRE(q.multimodal->feature_layers == std::vector<int>{-1, 3});
    REQUIRE(q.multimodal->layers_used() == 27);
    REQUIRE_FALSE(q.multimodal->projector_bias);
  }
  SECTION("invalid fields fail with the field named") {
    auto bad = [&](const char* key, nlohmann::json value, const char* msg) {
      nlohmann::json b = j;
      b[key] = value;
      REQUIRE_THROWS_WITH(ModelConfig::from_json(b, nullptr, "config.json"), Contains(msg));
    };
    bad("vision_feature_layer", 25, "vision_feature_layer 25");
    bad("vision_feature_layer", -26, "vision_feature_layer -26");
    bad("vision_feature_layer", "x", "vision_feature_layer");
    bad("vision_feature_select_strategy", "cls", "vision_feature_select_strategy 'cls'");
    bad("projector_hidden_act", "relu", "projector_hidden_act");
    bad("image_token_index", 40000, "image_token_index 40000");
    bad("text_config", {{"model_type", "gpt2"}}, "text_config model_type 'gpt2'");
    bad("vision_config", {{"model_type", "dinov2"}}, "vision_config model_type 'dinov2'");
    bad("vision_config", {{"image_size", 10}, {"patch_size", 14}}, "exceeds image_size");
  }
}

TEST_CASE("LLaVA weight layouts: neither layout fails clearly, a text model has no tower") {
  auto backend = make_cpu_backend(1);
  const std::string src = fixture_dir() + "/clip-llava";
  std::ifstream in(src + "/config.json");
  REQUIRE(in.good());
  const nlohmann::json cfg_json = nlohmann::json::parse(in);
  std::map<std::string, test::RawTensor> w;
  w["model.embed_tokens.weight"] = test::random_f32({320, 64}, 1);
  const std::string dir = test::write_checkpoint("llava_layout", cfg_json, w);
  auto ck = Checkpoint::open(dir);
  const ModelConfig cfg = ModelConfig::from_dir(dir);
  REQUIRE_THROWS_WITH(load_model(*ck, cfg, *backend),
                      Contains("model.language_model.embed_tokens.weight") &&
                          Contains("language_model.model.embed_tokens.weight"));
  REQUIRE_THROWS_WITH(load_vision_encoder(*ck, cfg, *backend), Contains("has neither"));

  const auto text_json = test::small_llama_config();
  const std::string tdir = test::write_checkpoint("llava_text", text_json,
                                                  test::random_weights(text_json, 3));
  auto tck = Checkpoint::open(tdir);
  REQUIRE(load_vision_encoder(*tck, ModelConfig::from_dir(tdir), *backend) == nullptr);
}

TEST_CASE("LLaVA through the batching engine: image embeddings as media spans, chunked prefill") {
  const nlohmann::json fx = load_fixtures();
  for (const auto& c : fx["cases"]) {
    const std::string name = c["model"];
    INFO("model " << name);
    const std::string dir = fixture_dir() + "/" + name;
    auto backend = make_cpu_backend(2);
    auto ck = Checkpoint::open(dir);
    const ModelConfig cfg = ModelConfig::from_dir(dir);
    auto model = load_model(*ck, cfg, *backend);
    auto enc = load_vision_encoder(*ck, cfg, *backend);
    const int n = c["num_images"];
    const int tpi = c["tokens_per_image"];
    const VisionConfig& v = cfg.multimodal->vision;
    const auto patches_h = patchify(c["pixel_values"].get<std::vector<float>>(), n,
                                    v.num_channels, v.image_size, v.patch_size);
    Buffer patches = backend->allocate(DType::F32, {n * static_cast<int64_t>(enc->patches_per_image()),
                                                    enc->patch_dim()});
    backend->upload(patches_h.data(), DType::F32, patches.tensor);
    Buffer embeds = backend->allocate(DType::F32, {static_cast<int64_t>(n) * tpi, enc->output_dim()});
    enc->reserve(n);
    enc->encode(patches.tensor, n, embeds.tensor);
    const std::vector<float> all = download(*backend, embeds.tensor);

    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const auto want_ids = c["output_ids"].get<std::vector<int32_t>>();
    const auto want_lps = c["logprobs"].get<std::vector<float>>();
    EngineRequest r;
    r.id = "llava";
    r.prompt = prompt;
    r.params.temperature = 0;
    r.params.ignore_eos = true;
    r.params.max_tokens = static_cast<int>(want_ids.size());
    // One span per image: its run of placeholder tokens.
    int image = 0;
    for (size_t i = 0; i < prompt.size();) {
      if (prompt[i] != cfg.multimodal->image_token_id) {
        ++i;
        continue;
      }
      MediaEmbeds m;
      m.position = static_cast<int32_t>(i);
      m.length = tpi;
      const int64_t h = cfg.hidden_size;
      m.embeds = std::make_shared<const std::vector<float>>(all.begin() + image * tpi * h,
                                                            all.begin() + (image + 1) * tpi * h);
      m.content_hash = 1000 + image;
      r.media.push_back(m);
      i += tpi;
      ++image;
    }
    REQUIRE(image == n);

    EngineConfig ec;
    ec.num_kv_blocks = 64;
    ec.block_size = 16;
    ec.max_num_seqs = 2;
    ec.max_num_batched_tokens = 7;  // prefill chunks end inside the image spans
    Engine engine(*backend, *model, ec);
    std::vector<int32_t> got;
    std::vector<float> lps;
    std::string error;
    engine.submit(r, [&](const EngineOutput& o) {
      got.insert(got.end(), o.token_ids.begin(), o.token_ids.end());
      lps.insert(lps.end(), o.logprobs.begin(), o.logprobs.end());
      if (!o.error.empty()) error = o.error;
    });
    while (engine.has_work()) engine.step();
    REQUIRE(error.empty());
    CHECK(got == want_ids);
    float worst = 0.0f;
    for (size_t i = 0; i < std::min(lps.size(), want_lps.size()); ++i)
      worst = std::max(worst, std::fabs(lps[i] - want_lps[i]));
    CHECK(worst <= 1e-4f);

    // A media span with the wrong number of embedding values fails alone, at admission.
    EngineRequest bad = r;
    bad.id = "bad";
    bad.media[0].embeds = std::make_shared<const std::vector<float>>(3, 0.0f);
    std::string bad_error;
    engine.submit(bad, [&](const EngineOutput& o) {
      if (!o.error.empty()) bad_error = o.error;
    });
    while (engine.has_work()) engine.step();
    CHECK_THAT(bad_error, Contains("embedding values"));
    CHECK(engine.stats().num_free_blocks == engine.stats().num_total_blocks);
  }
}
