// Gemma 3's image side on the CPU backend against tests/parity/reference_gemma3.py (fixtures
// from tests/parity/make_gemma3.py): Gemma3ImageProcessor preprocessing of PNG/JPEG files
// against the PIL + numpy reference, the SigLIP tower's last_hidden_state (post_layernorm)
// and the pooled, normed, projected image embeddings within 1e-4, in both tensor-name
// layouts (the Hub's language_model.model.* and transformers >= 4.52's model.*), and the
// processor's prompt expansion of <start_of_image>.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "engine/backend.h"
#include "engine/image/decode.h"
#include "engine/image/preprocess.h"
#include "engine/image_encoder.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/models/model.h"
#include "engine/models/vision.h"

using namespace iris;

namespace {

nlohmann::json load_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) FAIL("cannot open " << path << " (run tests/parity/make_gemma3.py)");
  return nlohmann::json::parse(in);
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  float m = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    m = std::max(m, std::fabs(a[i] - b[i]));
  }
  return m;
}

}  // namespace

TEST_CASE("Gemma 3 vision: preprocessing, tower and pooled projector against the reference") {
  const std::string root = IRIS_GEMMA3_FIXTURES;
  const nlohmann::json fx = load_json(root + "/vision_fixtures.json");
  REQUIRE(fx["cases"].size() == 2);
  for (const auto& c : fx["cases"]) {
    const std::string name = c["model"];
    const std::string dir = root + "/" + name;
    CAPTURE(name);
    const ModelConfig cfg = ModelConfig::from_dir(dir);
    REQUIRE(cfg.multimodal);
    REQUIRE(cfg.multimodal->gemma);
    const VisionConfig& v = cfg.multimodal->vision;
    const image::PreprocessorConfig pcfg = image::load_preprocessor_config(dir);
    REQUIRE(pcfg.kind == image::ProcessorKind::kGemma3);

    // Preprocessing: the image files through Iris's decoder and Gemma3ImageProcessor.
    const std::vector<std::string> files = c["images"];
    const int n = static_cast<int>(files.size());
    const std::vector<float> ref_px = c["pixel_values"];
    std::vector<float> px, patches;
    for (const std::string& f : files) {
      const std::vector<uint8_t> bytes = read_file(f);
      const image::PixelValues pv = image::preprocess(image::decode_rgb(bytes), pcfg);
      REQUIRE(pv.height == v.image_size);
      REQUIRE(pv.width == v.image_size);
      px.insert(px.end(), pv.data.begin(), pv.data.end());
      const image::Patches p = image::patchify(pv, v.patch_size);
      patches.insert(patches.end(), p.data.begin(), p.data.end());
    }
    CHECK(max_abs_diff(px, ref_px) == 0.0f);  // identical, value for value

    auto backend = make_cpu_backend(2);
    auto ckpt = Checkpoint::open(dir);
    auto enc = load_vision_encoder(*ckpt, cfg, *backend);
    REQUIRE(enc->tokens_per_image() == 4);
    Buffer in = backend->allocate(DType::F32, {n * enc->patches_per_image(), enc->patch_dim()});
    Buffer out = backend->allocate(DType::F32, {n * enc->tokens_per_image(), enc->output_dim()});
    backend->upload(patches.data(), DType::F32, in.tensor);
    enc->reserve(n + 1);  // more than used: every buffer's prefix must serve
    enc->encode(in.tensor, n, out.tensor);

    std::vector<float> last(static_cast<size_t>(n) * v.num_patches() * v.hidden_size);
    backend->download_f32(enc->selected_features(0, n), last.data());
    const float d_last = max_abs_diff(last, c["last_hidden_state"].get<std::vector<float>>());
    std::vector<float> emb(static_cast<size_t>(out.tensor.numel()));
    backend->download_f32(out.tensor, emb.data());
    const float d_emb = max_abs_diff(emb, c["image_embeds"].get<std::vector<float>>());
    INFO("last_hidden_state max diff " << d_last << ", image embeddings max diff " << d_emb);
    CHECK(d_last <= 1e-4f);
    CHECK(d_emb <= 1e-4f);
  }
}

TEST_CASE("Gemma 3 prompt expansion: <start_of_image> becomes the processor's markup") {
  const std::string dir = std::string(IRIS_GEMMA3_FIXTURES) + "/gemma3-mm";
  const ModelConfig cfg = ModelConfig::from_dir(dir);
  auto backend = make_cpu_backend(1);
  auto ckpt = Checkpoint::open(dir);
  auto enc = ImageEncoder::load(dir, *ckpt, cfg, *backend, 1);
  REQUIRE(enc->image_token_id() == 300);  // <start_of_image> is what a prompt holds
  REQUIRE(enc->markup());
  std::vector<int32_t> prompt = {2, 10, 300, 11};
  const auto media = expand_image_placeholders(prompt, enc->image_token_id(),
                                               enc->tokens_per_image(),
                                               std::vector<ImageEncoder::Prepared>(1), enc->markup());
  // "\n\n" (260 in the fixture's tokenizer.json), boi, 4 image tokens, eoi, "\n\n".
  CHECK(prompt == std::vector<int32_t>{2, 10, 260, 300, 302, 302, 302, 302, 301, 260, 11});
  REQUIRE(media.size() == 1);
  CHECK(media[0].position == 4);
  CHECK(media[0].length == 4);

  // Newlines next to the markup join its "\n\n" into one run, as the processor's text does
  // before tokenization: "\n" + "\n\n" = 262, "\n\n" + "\n\n" between two images = 263, and
  // "\n\n" + "\n\n\n" = 5 newlines, which the tokenizer's merges make 260, 262.
  std::vector<int32_t> runs = {2, 261, 300, 300, 262};
  const auto two = expand_image_placeholders(runs, enc->image_token_id(), enc->tokens_per_image(),
                                             std::vector<ImageEncoder::Prepared>(2), enc->markup());
  CHECK(runs == std::vector<int32_t>{2, 262, 300, 302, 302, 302, 302, 301, 263, 300, 302, 302, 302,
                                     302, 301, 260, 262});
  REQUIRE(two.size() == 2);
  CHECK(two[0].position == 3);
  CHECK(two[1].position == 10);
}
