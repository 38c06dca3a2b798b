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
  IRIS_CHECK(max_batch >= 1) << "image encoder batch must be at least 1, got " << max_batch;
  if (config.qwen_vl) {
    std::unique_ptr<ImageEncoder> e(new ImageEncoder());
    e->qwen_ = std::make_unique<QwenVisionEncoder>(ckpt, config, backend, weight_names(ckpt, config));
    e->qwen_processor_ = image::load_qwen_processor_config(dir);
    const QwenVisionConfig& v = config.qwen_vl->vision;
    IRIS_CHECK(e->qwen_processor_.patch_size == v.patch_size &&
               e->qwen_processor_.merge_size == v.spatial_merge_size &&
               e->qwen_processor_.temporal_patch_size == v.temporal_patch_size)
        << dir << "/preprocessor_config.json: patch_size " << e->qwen_processor_.patch_size
        << ", merge_size " << e->qwen_processor_.merge_size << ", temporal_patch_size "
        << e->qwen_processor_.temporal_patch_size << " differ from the vision tower's "
        << v.patch_size << ", " << v.spatial_merge_size << ", " << v.temporal_patch_size;
    e->backend_ = &backend;
    e->image_token_id_ = config.qwen_vl->image_token_id;
    e->video_token_id_ = config.qwen_vl->video_token_id;
    return e;
  }
  if (!config.multimodal) return nullptr;
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
                                             const image::DecodeLimits& limits,
                                             int64_t min_pixels, int64_t max_pixels) const {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const image::DecodedImage img = image::decode_rgb(bytes, limits);
  const auto t1 = clock::now();
  if (qwen_) {
    const image::QwenProcessorConfig& q = qwen_processor_;
    image::QwenPatches p = image::qwen_preprocess_image(
        img, q, min_pixels > 0 ? min_pixels : q.min_pixels, max_pixels > 0 ? max_pixels : q.max_pixels);
    Prepared out;
    out.patches = std::make_shared<const std::vector<float>>(std::move(p.data));
    out.hash = image::content_hash(img);
    const int m = q.merge_size;
    out.grid_t = p.grid_t;
    out.grid_h = p.grid_h / m;
    out.grid_w = p.grid_w / m;
    out.tokens = out.grid_t * out.grid_h * out.grid_w;
    // The resized size is part of what the tower sees: the same pixels resized differently
    // (another per-request range) are another cache entry.
    out.hash.lo ^= (static_cast<uint64_t>(p.grid_h) << 32) ^ static_cast<uint64_t>(p.grid_w);
    out.decode_seconds = std::chrono::duration<double>(t1 - t0).count();
    out.preprocess_seconds = std::chrono::duration<double>(clock::now() - t1).count();
    return out;
  }
  const image::PixelValues pv = image::preprocess(img, preprocess_);
  const VisionConfig& v = encoder_->config().vision;
  IRIS_CHECK(pv.height == v.image_size && pv.width == v.image_size)
      << "the preprocessor makes " << pv.height << "x" << pv.width << " images, the vision tower takes "
      << v.image_size << "x" << v.image_size;
  image::Patches p = image::patchify(pv, patch_size_);
  IRIS_CHECK(p.num_patches() == encoder_->patches_per_image() && p.patch_dim == encoder_->patch_dim())
      << "patchify gave " << p.num_patches() << " patches of " << p.patch_dim;
  Prepared out;
  out.patches = std::make_shared<const std::vector<float>>(std::move(p.data));
  out.hash = image::content_hash(img);
  out.decode_seconds = std::chrono::duration<double>(t1 - t0).count();
  out.preprocess_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return out;
}

std::vector<std::shared_ptr<const std::vector<float>>> ImageEncoder::encode(
    std::span<const std::vector<float>* const> inputs) {
  IRIS_CHECK(encoder_) << "Qwen2.5-VL images are encoded with their grids (encode_items)";
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

ImageEncoder::Prepared ImageEncoder::layout(uint32_t width, uint32_t height, int64_t min_pixels,
                                            int64_t max_pixels) const {
  Prepared p;
  if (!qwen_) return p;
  const image::QwenProcessorConfig& q = qwen_processor_;
  const auto [h, w] = image::smart_resize(static_cast<int>(height), static_cast<int>(width),
                                          q.factor(), min_pixels > 0 ? min_pixels : q.min_pixels,
                                          max_pixels > 0 ? max_pixels : q.max_pixels);
  p.grid_t = 1;
  p.grid_h = h / q.factor();
  p.grid_w = w / q.factor();
  p.tokens = p.grid_h * p.grid_w;
  return p;
}

ImageEncoder::Prepared ImageEncoder::layout_video(int num_frames, double fps, uint32_t width,
                                                  uint32_t height, int64_t min_pixels,
                                                  int64_t max_pixels) const {
  IRIS_CHECK(qwen_) << "this model does not take videos";
  const image::QwenProcessorConfig& q = qwen_processor_;
  Prepared p = layout(width, height, min_pixels, max_pixels);
  p.sampled_frames = image::qwen_sample_frames(num_frames, fps, q.video_fps, q.temporal_patch_size,
                                               q.min_frames, q.max_frames);
  p.grid_t = static_cast<int32_t>((p.sampled_frames.size() + q.temporal_patch_size - 1) /
                                  q.temporal_patch_size);
  p.tokens = p.grid_t * p.grid_h * p.grid_w;
  p.temporal_step = q.temporal_patch_size / q.video_fps * qwen_->config().tokens_per_second;
  return p;
}

ImageEncoder::Prepared ImageEncoder::prepare_video(std::span<const std::span<const uint8_t>> frames,
                                                   double fps, const image::DecodeLimits& limits,
                                                   int64_t min_pixels, int64_t max_pixels) const {
  using clock = std::chrono::steady_clock;
  IRIS_CHECK(qwen_) << "this model does not take videos";
  IRIS_CHECK(!frames.empty()) << "a video needs at least one frame";
  const auto t0 = clock::now();
  const image::ImageInfo first = image::probe(frames[0], limits);
  Prepared p = layout_video(static_cast<int>(frames.size()), fps, first.width, first.height,
                            min_pixels, max_pixels);
  std::vector<image::DecodedImage> decoded;
  decoded.reserve(p.sampled_frames.size());
  for (int i : p.sampled_frames) {
    image::DecodedImage img = image::decode_rgb(frames[static_cast<size_t>(i)], limits);
    IRIS_CHECK(img.width == first.width && img.height == first.height)
        << "frame " << i << " is " << img.width << "x" << img.height << ", frame 0 is "
        << first.width << "x" << first.height;
    decoded.push_back(std::move(img));
  }
  p.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  finish_video(p, decoded, min_pixels, max_pixels);
  return p;
}

ImageEncoder::Prepared ImageEncoder::prepare_video_file(std::span<const uint8_t> bytes,
                                                        const image::VideoLimits& limits,
                                                        int64_t min_pixels, int64_t max_pixels) const {
  using clock = std::chrono::steady_clock;
  IRIS_CHECK(qwen_) << "this model does not take videos";
  const auto t0 = clock::now();
  const image::VideoInfo info = image::probe_video(bytes, limits);
  Prepared p = layout_video(info.frames, info.fps, info.width, info.height, min_pixels, max_pixels);
  std::vector<image::DecodedImage> decoded =
      image::decode_video_frames(bytes, limits, info, p.sampled_frames);
  p.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  finish_video(p, decoded, min_pixels, max_pixels);
  return p;
}

void ImageEncoder::finish_video(Prepared& p, const std::vector<image::DecodedImage>& decoded,
                                int64_t min_pixels, int64_t max_pixels) const {
  using clock = std::chrono::steady_clock;
  const auto t1 = clock::now();
  const image::QwenProcessorConfig& q = qwen_processor_;
  image::QwenPatches patches = image::qwen_preprocess_video(
      decoded, q, min_pixels > 0 ? min_pixels : q.min_pixels, max_pixels > 0 ? max_pixels : q.max_pixels);
  IRIS_CHECK(patches.grid_t == p.grid_t && patches.grid_h == p.grid_h * q.merge_size &&
             patches.grid_w == p.grid_w * q.merge_size)
      << "internal: video patches do not match the layout";
  p.patches = std::make_shared<const std::vector<float>>(std::move(patches.data));
  // The key covers every sampled frame's pixels, the size they were resized to and the
  // temporal step (the M-RoPE positions, hence the KV, depend on it).
  uint64_t hi = 0x51ed270b27d5a3c1ull, lo = static_cast<uint64_t>(p.grid_h) << 32 | static_cast<uint32_t>(p.grid_w);
  for (const image::DecodedImage& img : decoded) {
    const image::ContentHash h = image::content_hash(img);
    hi = (hi ^ h.hi) * 0x100000001b3ull;
    lo = (lo ^ h.lo) * 0x100000001b3ull;
  }
  uint64_t step_bits = 0;
  static_assert(sizeof(step_bits) == sizeof(p.temporal_step));
  std::memcpy(&step_bits, &p.temporal_step, sizeof(step_bits));
  p.hash.hi = hi;
  p.hash.lo = lo ^ step_bits;
  p.preprocess_seconds = std::chrono::duration<double>(clock::now() - t1).count();
}

int ImageEncoder::max_tokens_per_image() const {
  if (!qwen_) return tokens_per_image();
  const int64_t f = qwen_processor_.factor();
  return static_cast<int>(std::min<int64_t>(qwen_processor_.max_pixels / (f * f), 1 << 30));
}

void ImageEncoder::check_item(const MediaEmbeds& m) const {
  if (!qwen_) return MediaEncoder::check_item(m);
  const QwenVisionConfig& v = qwen_->config();
  const int64_t patches = static_cast<int64_t>(m.grid_t) * m.grid_h * m.grid_w * v.merge_unit();
  IRIS_CHECK(m.grid_t > 0 && m.grid_h > 0 && m.grid_w > 0 &&
             static_cast<int64_t>(m.encoder_input->size()) == patches * v.patch_dim())
      << "media span at " << m.position << " with grid " << m.grid_t << "x" << m.grid_h << "x"
      << m.grid_w << " has an encoder input of " << m.encoder_input->size() << " values, expected "
      << patches << " patches of " << v.patch_dim();
}

std::vector<std::shared_ptr<const std::vector<float>>> ImageEncoder::encode_items(
    std::span<const MediaEmbeds* const> items) {
  if (!qwen_) return MediaEncoder::encode_items(items);
  const QwenVisionConfig& v = qwen_->config();
  const int m = v.spatial_merge_size;
  std::vector<std::shared_ptr<const std::vector<float>>> result;
  for (const MediaEmbeds* item : items) {
    check_item(*item);
    const int64_t patches = static_cast<int64_t>(item->grid_t) * item->grid_h * item->grid_w *
                            v.merge_unit();
    if (!patches_.tensor.defined() || patches_.tensor.dim(0) < patches) {
      patches_ = backend_->allocate(backend_->compute_dtype(), {patches, v.patch_dim()});
      out_ = backend_->allocate(DType::F32, {patches / v.merge_unit(), qwen_->output_dim()});
    }
    Tensor in = patches_.tensor.rows(0, patches);
    Tensor out = out_.tensor.rows(0, patches / v.merge_unit());
    backend_->upload(item->encoder_input->data(), DType::F32, in);
    qwen_->encode(in, item->grid_t, item->grid_h * m, item->grid_w * m, out);
    auto rows = std::make_shared<std::vector<float>>(static_cast<size_t>(out.numel()));
    backend_->download_f32(out, rows->data());
    result.push_back(std::move(rows));
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
    m.length = p.tokens > 0 ? p.tokens : tokens_per_image;
    m.encoder_input = p.patches;
    m.content_hash = p.cache_key();
    m.grid_t = p.grid_t;
    m.grid_h = p.grid_h;
    m.grid_w = p.grid_w;
    m.temporal_step = p.temporal_step;
    out.insert(out.end(), static_cast<size_t>(m.length), markup ? markup->fill : image_token_id);
    media.push_back(std::move(m));
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

std::vector<MediaEmbeds> expand_media_placeholders(std::vector<int32_t>& prompt,
                                                   int32_t image_token_id,
                                                   const std::vector<ImageEncoder::Prepared>& images,
                                                   int32_t video_token_id,
                                                   const std::vector<ImageEncoder::Prepared>& videos) {
  size_t num_images = 0, num_videos = 0;
  for (int32_t t : prompt) {
    num_images += t == image_token_id;
    num_videos += t == video_token_id;
  }
  IRIS_CHECK(num_images == images.size())
      << "the prompt holds " << num_images << " image placeholder(s) (token " << image_token_id
      << ") for " << images.size() << " image(s)";
  IRIS_CHECK(num_videos == videos.size())
      << "the prompt holds " << num_videos << " video placeholder(s) (token " << video_token_id
      << ") for " << videos.size() << " video(s)";
  std::vector<int32_t> out;
  std::vector<MediaEmbeds> media;
  size_t i = 0, v = 0;
  for (int32_t t : prompt) {
    if (t != image_token_id && t != video_token_id) {
      out.push_back(t);
      continue;
    }
    const ImageEncoder::Prepared& p = t == image_token_id ? images[i++] : videos[v++];
    IRIS_CHECK(p.tokens > 0) << "internal: a Qwen2.5-VL media item without its layout";
    MediaEmbeds m;
    m.position = static_cast<int32_t>(out.size());
    m.length = p.tokens;
    m.encoder_input = p.patches;
    m.content_hash = p.cache_key();
    m.grid_t = p.grid_t;
    m.grid_h = p.grid_h;
    m.grid_w = p.grid_w;
    m.temporal_step = p.temporal_step;
    out.insert(out.end(), static_cast<size_t>(m.length), t);
    media.push_back(std::move(m));
  }
  prompt = std::move(out);
  return media;
}

}  // namespace iris
