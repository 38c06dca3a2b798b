// See image_encoder.h.
#include "engine/image_encoder.h"

#include <chrono>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "engine/tokenizer/tokenizer.h"

#include "engine/core/check.h"

namespace iris {

namespace {

constexpr int kNewlineRuns = 64;  // newline runs tokenized ahead (Gemma has tokens up to 31)

}  // namespace

std::vector<int32_t> ImageMarkup::newlines(int k) const {
  std::vector<int32_t> out;
  const int table = static_cast<int>(newline_run.size()) - 1;
  while (k > 0) {
    const int take = std::min(k, table);
    out.insert(out.end(), newline_run[take].begin(), newline_run[take].end());
    k -= take;
  }
  return out;
}

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
    // The processor's expansion writes "\n\n" as text: runs of newlines are tokenized by the
    // checkpoint's tokenizer.
    if (!std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json"))
      fail(dir, ": Gemma 3 images need tokenizer.json (the image markup's newlines)");
    const std::unique_ptr<Tokenizer> tok = Tokenizer::from_dir(dir);
    ImageMarkup m;
    m.fill = config.multimodal->image_token_id;
    m.before = {g->boi_token_id};
    m.after = {g->eoi_token_id};
    m.lead_newlines = m.trail_newlines = 2;
    m.newline_run.resize(kNewlineRuns + 1);
    for (int k = 1; k <= kNewlineRuns; ++k) {
      m.newline_run[k] = tok->encode(std::string(static_cast<size_t>(k), '\n'),
                                     /*add_special_tokens=*/false, /*parse_special=*/false);
      if (m.newline_run[k].size() == 1) m.newline_count.emplace(m.newline_run[k][0], k);
    }
    e->markup_ = std::move(m);
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
  auto newline_count = [&](int32_t t) {
    if (!markup) return 0;
    const auto it = markup->newline_count.find(t);
    return it == markup->newline_count.end() ? 0 : it->second;
  };
  for (size_t i = 0; i < prompt.size(); ++i) {
    const int32_t t = prompt[i];
    if (t != image_token_id) {
      out.push_back(t);
      continue;
    }
    const ImageEncoder::Prepared& p = images[media.size()];
    if (markup) {
      int k = markup->lead_newlines;  // with the newline-only tokens just before
      while (!out.empty() && newline_count(out.back()) > 0) {
        k += newline_count(out.back());
        out.pop_back();
      }
      const std::vector<int32_t> run = markup->newlines(k);
      out.insert(out.end(), run.begin(), run.end());
      out.insert(out.end(), markup->before.begin(), markup->before.end());
    }
    MediaEmbeds m;
    m.position = static_cast<int32_t>(out.size());
    m.length = tokens_per_image;
    m.encoder_input = p.patches;
    m.content_hash = p.cache_key();
    media.push_back(std::move(m));
    out.insert(out.end(), tokens_per_image, markup ? markup->fill : image_token_id);
    if (markup) {
      out.insert(out.end(), markup->after.begin(), markup->after.end());
      int k = markup->trail_newlines;  // with the newline-only tokens just after
      while (i + 1 < prompt.size() && prompt[i + 1] != image_token_id &&
             newline_count(prompt[i + 1]) > 0)
        k += newline_count(prompt[++i]);
      const std::vector<int32_t> run = markup->newlines(k);
      out.insert(out.end(), run.begin(), run.end());
    }
  }
  prompt = std::move(out);
  return media;
}

}  // namespace iris
