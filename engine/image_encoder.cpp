// See image_encoder.h.
#include "engine/image_encoder.h"

#include "engine/core/check.h"

namespace iris {

std::unique_ptr<ImageEncoder> ImageEncoder::load(const std::string& dir, const Checkpoint& ckpt,
                                                 const ModelConfig& config, Backend& backend) {
  if (!config.multimodal) return nullptr;
  std::unique_ptr<ImageEncoder> e(new ImageEncoder());
  e->encoder_ = load_vision_encoder(ckpt, config, backend);
  IRIS_CHECK(e->encoder_) << "no vision tower in " << dir;
  e->preprocess_ = image::load_preprocessor_config(dir);
  e->backend_ = &backend;
  e->image_token_id_ = config.multimodal->image_token_id;
  e->patch_size_ = config.multimodal->vision.patch_size;
  e->encoder_->reserve(1);
  e->patches_ = backend.allocate(backend.compute_dtype(),
                                 {e->encoder_->patches_per_image(), e->encoder_->patch_dim()});
  e->out_ = backend.allocate(DType::F32, {e->encoder_->tokens_per_image(), e->encoder_->output_dim()});
  return e;
}

ImageEncoder::Encoded ImageEncoder::encode(std::span<const uint8_t> bytes,
                                           const image::DecodeLimits& limits) {
  const image::DecodedImage img = image::decode_rgb(bytes, limits);
  const image::PixelValues pv = image::preprocess(img, preprocess_);
  const VisionConfig& v = encoder_->config().vision;
  IRIS_CHECK(pv.height == v.image_size && pv.width == v.image_size)
      << "the preprocessor makes " << pv.height << "x" << pv.width << " images, the vision tower takes "
      << v.image_size << "x" << v.image_size;
  const image::Patches p = image::patchify(pv, patch_size_);
  IRIS_CHECK(p.num_patches() == encoder_->patches_per_image() && p.patch_dim == encoder_->patch_dim())
      << "patchify gave " << p.num_patches() << " patches of " << p.patch_dim;
  backend_->upload(p.data.data(), DType::F32, patches_.tensor);
  encoder_->encode(patches_.tensor, 1, out_.tensor);
  auto embeds = std::make_shared<std::vector<float>>(static_cast<size_t>(out_.tensor.numel()));
  backend_->download_f32(out_.tensor, embeds->data());
  return Encoded{std::move(embeds), image::content_hash(img)};
}

std::vector<MediaEmbeds> expand_image_placeholders(std::vector<int32_t>& prompt,
                                                   int32_t image_token_id, int tokens_per_image,
                                                   const std::vector<ImageEncoder::Encoded>& images) {
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
    const ImageEncoder::Encoded& e = images[media.size()];
    MediaEmbeds m;
    m.position = static_cast<int32_t>(out.size());
    m.length = tokens_per_image;
    m.embeds = e.embeds;
    m.content_hash = e.hash.lo ^ e.hash.hi;
    media.push_back(std::move(m));
    out.insert(out.end(), tokens_per_image, image_token_id);
  }
  prompt = std::move(out);
  return media;
}

}  // namespace iris
