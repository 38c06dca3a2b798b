// See image_encoder.h.
#include "engine/image_encoder.h"

#include <chrono>

#include <algorithm>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/core/check.h"

namespace iris {

namespace {

// The id of `piece` in DIR/tokenizer.json's model vocabulary (an exact entry, as a
// SentencePiece-style BPE vocabulary such as Gemma's stores newlines).
int32_t vocab_token_id(const std::string& dir, const std::string& piece) {
  const std::string path = dir + "/tokenizer.json";
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open (Gemma 3's image markup needs the \"\\n\\n\" token)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON: ", e.what());
  }
  const auto model = j.find("model");
  if (model != j.end() && model->is_object()) {
    const auto vocab = model->find("vocab");
    if (vocab != model->end() && vocab->is_object()) {
      const auto it = vocab->find(piece);
      if (it != vocab->end() && it->is_number_integer()) return it->get<int32_t>();
    }
  }
  fail(path, ": model.vocab has no entry for ", nlohmann::json(piece).dump());
}

}  // namespace

std::unique_ptr<ImageEncoder> ImageEncoder::load(const std::string& dir, const Checkpoint& ckpt,
                                                 const ModelConfig& config, Backend& backend,
                                                 int max_batch) {
  if (!config.multimodal) return nullptr;
  IRIS_CHECK(max_batch >= 1) << "image encoder batch must be at least 1, got " << max_batch;
  std::unique_ptr<ImageEncoder> e(new ImageEncoder());
  e->encoder_ = load_vision_encoder(ckpt, config, backend);
  IRIS_CHECK(e->encoder_) << "no vision tower in " << dir;
  e->preprocess_ = image::load_preprocessor_config(dir);
  e->backend_ = &backend;
  e->image_token_id_ = config.multimodal->image_token_id;
  if (const auto& g = config.multimodal->gemma) {
    // The processor's expansion writes "\n\n" as text; its token comes from the vocabulary.
    const int32_t nl2 = vocab_token_id(dir, "\n\n");
    e->markup_ = ImageMarkup{config.multimodal->image_token_id, {nl2, g->boi_token_id},
                             {g->eoi_token_id, nl2}};
    e->image_token_id_ = g->boi_token_id;
  }
  e->patch_size_ = config.multimodal->vision.patch_size;
  e->max_batch_ = max_batch;
  e->encoder_->reserve(max_batch);
  const int64_t ppi = e->encoder_->patches_per_image();
  e->patches_ = backend.allocate(backend.compute_dtype(), {max_batch * ppi, e->encoder_->patch_dim()});
  e->out_ = backend.allocate(DType::F32, {static_cast<int64_t>(max_batch) * e->encoder_->tokens_per_image(),
                                          e->encoder_->output_dim()});
  return e;
}

ImageEncoder::Prepared ImageEncoder::prepare(std::span<const uint8_t> bytes,
                                             const image::DecodeLimits& limits) const {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const image::DecodedImage img = image::decode_rgb(bytes, limits);
  const auto t1 = clock::now();
  const image::PixelValues pv = image::preprocess(img, preprocess_);
  const VisionConfig& v = encoder_->config().vision;
  IRIS_CHECK(pv.height == v.image_size && pv.width == v.image_size)
      << "the preprocessor makes " << pv.height << "x" << pv.width << " images, the vision tower takes "
      << v.image_size << "x" << v.image_size;
  image::Patches p = image::patchify(pv, patch_size_);
  IRIS_CHECK(p.num_patches() == encoder_->patches_per_image() && p.patch_dim == encoder_->patch_dim())
      << "patchify gave " << p.num_patches() << " patches of " << p.patch_dim;
  Prepared out{std::make_shared<const std::vector<float>>(std::move(p.data)), image::content_hash(img)};
  out.decode_seconds = std::chrono::duration<double>(t1 - t0).count();
  out.preprocess_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return out;
}

std::vector<std::shared_ptr<const std::vector<float>>> ImageEncoder::encode(
    std::span<const std::vector<float>* const> inputs) {
  const int64_t ppi = encoder_->patches_per_image();
  const size_t per_input = static_cast<size_t>(ppi * encoder_->patch_dim());
  const size_t per_output = static_cast<size_t>(tokens_per_image() * encoder_->output_dim());
  std::vector<std::shared_ptr<const std::vector<float>>> result;
  result.reserve(inputs.size());
  for (size_t first = 0; first < inputs.size(); first += static_cast<size_t>(max_batch_)) {
    const int n = static_cast<int>(std::min<size_t>(max_batch_, inputs.size() - first));
    staging_.resize(per_input * n);
    for (int i = 0; i < n; ++i) {
      const std::vector<float>* in = inputs[first + i];
      IRIS_CHECK(in && in->size() == per_input)
          << "image encoder input of " << (in ? in->size() : 0) << " values, expected " << per_input;
      std::memcpy(staging_.data() + per_input * i, in->data(), per_input * sizeof(float));
    }
    Tensor patches = patches_.tensor.rows(0, n * ppi);
    Tensor out = out_.tensor.rows(0, static_cast<int64_t>(n) * tokens_per_image());
    backend_->upload(staging_.data(), DType::F32, patches);
    encoder_->encode(patches, n, out);
    std::vector<float> all(per_output * n);
    backend_->download_f32(out, all.data());
    for (int i = 0; i < n; ++i)
      result.push_back(std::make_shared<const std::vector<float>>(all.begin() + per_output * i,
                                                                  all.begin() + per_output * (i + 1)));
  }
  return result;
}

std::vector<MediaEmbeds> expand_image_placeholders(std::vector<int32_t>& prompt,
                                                   int32_t image_token_id, int tokens_per_image,
                                                   const std::vector<ImageEncoder::Prepared>& images,
                                                   const ImageMarkup* markup) {
  size_t count = 0;
  for (int32_t t : prompt) count += t == image_token_id;
  IRIS_CHECK(count == images.size()) << "the prompt holds " << count << " image placeholder(s) (token "
                                     << image_token_id << ") for " << images.size() << " image(s)";
  std::vector<int32_t> out;
  std::vector<MediaEmbeds> media;
  out.reserve(prompt.size() + images.size() * tokens_per_image);
  for (int32_t t : prompt) {
    if (t != image_token_id) {
      out.push_back(t);
      continue;
    }
    const ImageEncoder::Prepared& p = images[media.size()];
    if (markup) out.insert(out.end(), markup->before.begin(), markup->before.end());
    MediaEmbeds m;
    m.position = static_cast<int32_t>(out.size());
    m.length = tokens_per_image;
    m.encoder_input = p.patches;
    m.content_hash = p.cache_key();
    media.push_back(std::move(m));
    out.insert(out.end(), tokens_per_image, markup ? markup->fill : image_token_id);
    if (markup) out.insert(out.end(), markup->after.begin(), markup->after.end());
  }
  prompt = std::move(out);
  return media;
}

}  // namespace iris
