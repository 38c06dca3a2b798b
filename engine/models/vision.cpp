// The LLaVA vision tower and projector (see vision.h). Facts that matter for parity with
// transformers: CLIP's hidden_states[0] is the embeddings output *after* pre_layrnorm;
// neither CLIP's nor SigLIP's post_layernorm touches hidden_states; the "default" strategy
// drops row 0 of each image whatever the tower; several feature layers are concatenated
// along the hidden dimension, which here becomes a sum of per-layer GEMMs against column
// blocks of linear_1 (no concatenated copy).
#include "engine/models/vision.h"

#include <cmath>
#include <string>

#include "engine/core/check.h"
#include "engine/models/model.h"

namespace iris {
namespace {

Activation parse_activation(const std::string& name) {
  if (name == "quick_gelu") return Activation::kQuickGelu;
  if (name == "gelu") return Activation::kGeluErf;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new") return Activation::kGeluTanh;
  fail("activation '", name, "' has no encoder op");
}

}  // namespace

VisionEncoder::VisionEncoder(const Checkpoint& ckpt, const ModelConfig& config, Backend& backend,
                             const WeightNames& names)
    : backend_(backend) {
  IRIS_CHECK(config.multimodal.has_value())
      << config.architecture_name << " has no vision tower";
  mm_ = *config.multimodal;
  text_hidden_ = config.hidden_size;
  const VisionConfig& v = mm_.vision;
  const bool clip = v.type == VisionConfig::Type::kClip;
  const int64_t d = v.hidden_size, inter = v.intermediate_size;
  shape_.num_q_heads = v.num_heads;
  shape_.num_kv_heads = v.num_heads;
  shape_.head_dim = v.head_dim();
  act_ = parse_activation(v.hidden_act);
  projector_act_ = parse_activation(mm_.projector_hidden_act);
  layers_used_ = mm_.layers_used();

  const std::string vm = names.vision_model;
  const std::string emb = vm + "embeddings.";
  patch_w_ = alloc({d, v.patch_dim()});
  load_into(ckpt, emb + "patch_embedding.weight", {d, v.num_channels, v.patch_size, v.patch_size},
            Slice{}, patch_w_, 0);
  pos_ = load(ckpt, emb + "position_embedding.weight", {v.seq_len(), d});
  if (clip) {
    HostTensor h = ckpt.read(emb + "class_embedding", {d});
    class_emb_.resize(static_cast<size_t>(d));
    convert_to_f32(h.data, h.dtype, class_emb_.data(), class_emb_.size());
    pre_ln_w_ = load(ckpt, vm + "pre_layrnorm.weight", {d});
    pre_ln_b_ = load(ckpt, vm + "pre_layrnorm.bias", {d});
  } else {
    patch_b_ = load(ckpt, emb + "patch_embedding.bias", {d});
  }

  layers_.resize(layers_used_);
  for (int l = 0; l < layers_used_; ++l) {
    const std::string p = vm + "encoder.layers." + std::to_string(l) + ".";
    Layer& w = layers_[l];
    w.ln1_w = load(ckpt, p + "layer_norm1.weight", {d});
    w.ln1_b = load(ckpt, p + "layer_norm1.bias", {d});
    w.qkv = alloc({3 * d, d});
    w.qkv_b = alloc({3 * d});
    const char* qkv_names[] = {"q_proj", "k_proj", "v_proj"};
    for (int i = 0; i < 3; ++i) {
      const std::string n = p + "self_attn." + qkv_names[i];
      load_into(ckpt, n + ".weight", {d, d}, Slice{}, w.qkv, i * d);
      load_into(ckpt, n + ".bias", {d}, Slice{}, w.qkv_b, i * d);
    }
    w.o = load(ckpt, p + "self_attn.out_proj.weight", {d, d});
    w.o_b = load(ckpt, p + "self_attn.out_proj.bias", {d});
    w.ln2_w = load(ckpt, p + "layer_norm2.weight", {d});
    w.ln2_b = load(ckpt, p + "layer_norm2.bias", {d});
    w.fc1 = load(ckpt, p + "mlp.fc1.weight", {inter, d});
    w.fc1_b = load(ckpt, p + "mlp.fc1.bias", {inter});
    w.fc2 = load(ckpt, p + "mlp.fc2.weight", {d, inter});
    w.fc2_b = load(ckpt, p + "mlp.fc2.bias", {d});
  }

  const std::string pj = names.projector;
  if (mm_.gemma) {
    post_ln_w_ = load(ckpt, vm + "post_layernorm.weight", {d});
    post_ln_b_ = load(ckpt, vm + "post_layernorm.bias", {d});
    {
      HostTensor h = ckpt.read(pj + "mm_soft_emb_norm.weight", {d});
      std::vector<float> w(static_cast<size_t>(d));
      convert_to_f32(h.data, h.dtype, w.data(), w.size());
      for (float& x : w) x += 1.0f;  // Gemma's RMSNorm multiplies by (1 + weight)
      soft_norm_ = alloc({d});
      backend_.upload(w.data(), DType::F32, soft_norm_.tensor);
    }
    {
      HostTensor h = ckpt.read(pj + "mm_input_projection_weight", {d, text_hidden_});
      std::vector<float> w(static_cast<size_t>(d * text_hidden_)), t(w.size());
      convert_to_f32(h.data, h.dtype, w.data(), w.size());
      for (int64_t i = 0; i < d; ++i)
        for (int64_t j = 0; j < text_hidden_; ++j) t[j * d + i] = w[i * text_hidden_ + j];
      mm_proj_ = alloc({text_hidden_, d});
      backend_.upload(t.data(), DType::F32, mm_proj_.tensor);
    }
    const int side = static_cast<int>(std::lround(std::sqrt(static_cast<double>(tokens_per_image()))));
    pool_k_ = v.grid() / side;
    return;
  }
  const int64_t nf = static_cast<int64_t>(mm_.feature_layers.size());
  for (int64_t k = 0; k < nf; ++k)
    proj1_w_.push_back(load(ckpt, pj + "linear_1.weight", {text_hidden_, nf * d},
                            nf > 1 ? Slice{1, k * d, d} : Slice{}));
  proj2_w_ = load(ckpt, pj + "linear_2.weight", {text_hidden_, text_hidden_});
  if (mm_.projector_bias) {
    proj1_b_ = load(ckpt, pj + "linear_1.bias", {text_hidden_});
    proj2_b_ = load(ckpt, pj + "linear_2.bias", {text_hidden_});
  }
}

void VisionEncoder::reserve(int max_images) {
  IRIS_CHECK(max_images > 0) << "reserve(" << max_images << ")";
  const VisionConfig& v = mm_.vision;
  const DType dt = backend_.compute_dtype();
  const int64_t d = v.hidden_size, s = v.seq_len(), n = v.num_patches();
  const int64_t tok = tokens_per_image();
  const int64_t rows = max_images * s;
  max_images_ = max_images;

  if (v.has_class_token()) {
    embed_src_ = backend_.allocate(dt, {max_images * n + 1, d});
    Tensor cls = embed_src_.tensor.rows(0, 1);
    backend_.upload(class_emb_.data(), DType::F32, cls);
    std::vector<int32_t> idx(static_cast<size_t>(rows));
    for (int64_t i = 0; i < max_images; ++i) {
      idx[i * s] = 0;
      for (int64_t p = 0; p < n; ++p) idx[i * s + 1 + p] = static_cast<int32_t>(1 + i * n + p);
    }
    gather_idx_ = backend_.allocate(DType::I32, {rows});
    backend_.upload_i32(idx.data(), gather_idx_.tensor);
  }
  if (mm_.gemma) {
    // Window offset o = (dy, dx), image i, token (ty, tx) reads patch row
    // (ty * k + dy) * grid + (tx * k + dx) of image i.
    const int64_t k = pool_k_, grid = v.grid(), side = grid / k;
    std::vector<int32_t> idx(static_cast<size_t>(k * k * max_images * tok));
    size_t at = 0;
    for (int64_t dy = 0; dy < k; ++dy)
      for (int64_t dx = 0; dx < k; ++dx)
        for (int64_t i = 0; i < max_images; ++i)
          for (int64_t ty = 0; ty < side; ++ty)
            for (int64_t tx = 0; tx < side; ++tx)
              idx[at++] = static_cast<int32_t>(i * s + (ty * k + dy) * grid + tx * k + dx);
    pool_idx_ = backend_.allocate(DType::I32, {k * k * max_images * tok});
    backend_.upload_i32(idx.data(), pool_idx_.tensor);
    pooled_ = backend_.allocate(dt, {max_images * tok, d});
    pool_tmp_ = backend_.allocate(dt, {max_images * tok, d});
  } else {
    const int64_t skip = s - tok;  // 1 for "default", 0 for "full"
    std::vector<int32_t> idx(static_cast<size_t>(max_images * tok));
    for (int64_t i = 0; i < max_images; ++i)
      for (int64_t t = 0; t < tok; ++t) idx[i * tok + t] = static_cast<int32_t>(i * s + skip + t);
    select_idx_ = backend_.allocate(DType::I32, {max_images * tok});
    backend_.upload_i32(idx.data(), select_idx_.tensor);
  }
  hidden_ = backend_.allocate(dt, {rows, d});
  normed_ = backend_.allocate(dt, {rows, d});
  qkv_ = backend_.allocate(dt, {rows, 3 * d});
  attn_ = backend_.allocate(dt, {rows, d});
  mlp_ = backend_.allocate(dt, {rows, v.intermediate_size});
  out_ = backend_.allocate(dt, {rows, d});
  features_.clear();
  for (size_t k = 0; k < mm_.feature_layers.size(); ++k)
    features_.push_back(backend_.allocate(dt, {max_images * (mm_.gemma ? s : tok), d}));
  proj_ = backend_.allocate(dt, {max_images * tok, text_hidden_});
  if (mm_.feature_layers.size() > 1)
    proj_tmp_ = backend_.allocate(dt, {max_images * tok, text_hidden_});
}

void VisionEncoder::encode(const Tensor& patches, int num_images, Tensor& out) {
  const VisionConfig& v = mm_.vision;
  IRIS_CHECK(num_images > 0 && num_images <= max_images_)
      << num_images << " images in one encode call (reserved " << max_images_ << ")";
  const int64_t n = v.num_patches(), s = v.seq_len(), tok = tokens_per_image();
  const int64_t rows = num_images * s;
  IRIS_CHECK(patches.shape.ndim == 2 && patches.dim(0) == num_images * n &&
             patches.dim(1) == v.patch_dim())
      << "patches " << patches.shape.str() << " for " << num_images << " images of " << n
      << " patches of " << v.patch_dim();
  IRIS_CHECK(out.shape.ndim == 2 && out.dim(0) == num_images * tok && out.dim(1) == text_hidden_)
      << "image embeddings " << out.shape.str() << " for " << num_images << " images of " << tok
      << " tokens of " << text_hidden_;
  Ops& ops = backend_.ops();
  Tensor x = hidden_.tensor.rows(0, rows);
  Tensor normed = normed_.tensor.rows(0, rows);
  Tensor qkv = qkv_.tensor.rows(0, rows);
  Tensor attn = attn_.tensor.rows(0, rows);
  Tensor mlp = mlp_.tensor.rows(0, rows);
  Tensor proj = out_.tensor.rows(0, rows);
  const float eps = v.layer_norm_eps;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(v.head_dim())));

  // Embeddings: patch GEMM (+ class row), + position embeddings (+ CLIP's pre_layrnorm).
  if (v.has_class_token()) {
    Tensor patch_out = embed_src_.tensor.rows(1, num_images * n);
    ops.linear(patches, patch_w_.tensor, Tensor{}, patch_out);
    ops.gather_rows(embed_src_.tensor.rows(0, 1 + num_images * n), gather_idx_.tensor.rows(0, rows),
                    normed);
    for (int i = 0; i < num_images; ++i) {
      Tensor img = normed.rows(i * s, s);
      ops.add(img, pos_.tensor);
    }
    ops.layer_norm(normed, pre_ln_w_.tensor, pre_ln_b_.tensor, eps, x);
  } else {
    ops.linear(patches, patch_w_.tensor, patch_b_.tensor, x);
    for (int i = 0; i < num_images; ++i) {
      Tensor img = x.rows(i * s, s);
      ops.add(img, pos_.tensor);
    }
  }

  // hidden_states[h] is x after h encoder layers; copy out (and select rows) where wanted.
  Tensor select = mm_.gemma ? Tensor{} : select_idx_.tensor.rows(0, num_images * tok);
  auto take_features = [&](int h) {
    if (mm_.gemma) return;
    for (size_t k = 0; k < mm_.feature_layers.size(); ++k)
      if (mm_.hidden_state_index(k) == h) {
        Tensor f = features_[k].tensor.rows(0, num_images * tok);
        ops.gather_rows(x, select, f);
      }
  };
  take_features(0);
  for (int l = 0; l < layers_used_; ++l) {
    Layer& w = layers_[l];
    ops.layer_norm(x, w.ln1_w.tensor, w.ln1_b.tensor, eps, normed);
    ops.linear(normed, w.qkv.tensor, w.qkv_b.tensor, qkv);
    ops.encoder_attention(qkv, shape_, static_cast<int>(s), scale, attn);
    ops.linear(attn, w.o.tensor, w.o_b.tensor, proj);
    ops.add(x, proj);
    ops.layer_norm(x, w.ln2_w.tensor, w.ln2_b.tensor, eps, normed);
    ops.linear(normed, w.fc1.tensor, w.fc1_b.tensor, mlp);
    ops.activation(mlp, act_);
    ops.linear(mlp, w.fc2.tensor, w.fc2_b.tensor, proj);
    ops.add(x, proj);
    take_features(l + 1);
  }

  if (mm_.gemma) {
    encode_gemma_head(x, num_images, out);
    return;
  }
  // Projector: linear_1 over the concatenated features = sum of per-layer column blocks.
  Tensor p1 = proj_.tensor.rows(0, num_images * tok);
  for (size_t k = 0; k < mm_.feature_layers.size(); ++k) {
    Tensor f = features_[k].tensor.rows(0, num_images * tok);
    if (k == 0) {
      ops.linear(f, proj1_w_[k].tensor, proj1_b_.tensor, p1);
    } else {
      Tensor tmp = proj_tmp_.tensor.rows(0, num_images * tok);
      ops.linear(f, proj1_w_[k].tensor, Tensor{}, tmp);
      ops.add(p1, tmp);
    }
  }
  ops.activation(p1, projector_act_);
  ops.linear(p1, proj2_w_.tensor, proj2_b_.tensor, out);
}

void VisionEncoder::encode_gemma_head(Tensor& x, int num_images, Tensor& out) {
  Ops& ops = backend_.ops();
  const VisionConfig& v = mm_.vision;
  const int64_t tok = tokens_per_image(), rows = num_images * tok;
  Tensor last = features_[0].tensor.rows(0, num_images * static_cast<int64_t>(v.seq_len()));
  ops.layer_norm(x, post_ln_w_.tensor, post_ln_b_.tensor, v.layer_norm_eps, last);
  Tensor pooled = pooled_.tensor.rows(0, rows);
  Tensor tmp = pool_tmp_.tensor.rows(0, rows);
  const int64_t per_offset = static_cast<int64_t>(max_images_) * tok;
  for (int64_t o = 0; o < static_cast<int64_t>(pool_k_) * pool_k_; ++o) {
    Tensor idx = pool_idx_.tensor.rows(o * per_offset, rows);
    if (o == 0) {
      ops.gather_rows(last, idx, pooled);
    } else {
      ops.gather_rows(last, idx, tmp);
      ops.add(pooled, tmp);
    }
  }
  ops.scale(pooled, 1.0f / static_cast<float>(pool_k_ * pool_k_));
  ops.rms_norm(pooled, soft_norm_.tensor, v.layer_norm_eps, tmp);
  ops.linear(tmp, mm_proj_.tensor, Tensor{}, out);
}

Tensor VisionEncoder::selected_features(size_t k, int num_images) const {
  IRIS_CHECK(k < features_.size() && num_images <= max_images_) << "selected_features(" << k << ")";
  const int64_t per_image = mm_.gemma ? mm_.vision.seq_len() : tokens_per_image();
  return features_[k].tensor.rows(0, static_cast<int64_t>(num_images) * per_image);
}

Buffer VisionEncoder::alloc(Shape shape) {
  Buffer b = backend_.allocate(backend_.compute_dtype(), shape);
  weight_bytes_ += b.tensor.bytes();
  return b;
}

Buffer VisionEncoder::load(const Checkpoint& ckpt, const std::string& name,
                           std::vector<int64_t> shape, Slice slice) {
  Shape s;
  for (int64_t dim : shape) s.dims[s.ndim++] = dim;
  if (slice.dim >= 0) s.dims[slice.dim] = slice.count;
  Buffer b = alloc(s);
  load_into(ckpt, name, shape, slice, b, 0);
  return b;
}

void VisionEncoder::load_into(const Checkpoint& ckpt, const std::string& name,
                              std::vector<int64_t> full, Slice slice, Buffer& dst, int64_t row) {
  HostTensor h = ckpt.read(name, full, slice);
  Tensor target = dst.tensor.rows(row, h.shape[0]);
  IRIS_CHECK(target.numel() == h.numel())
      << name << ": " << h.numel() << " elements into " << target.shape.str();
  backend_.upload(h.data, h.dtype, target);
}

std::unique_ptr<VisionEncoder> load_vision_encoder(const Checkpoint& ckpt,
                                                   const ModelConfig& config, Backend& backend) {
  if (!config.multimodal) return nullptr;
  return std::make_unique<VisionEncoder>(ckpt, config, backend, weight_names(ckpt, config));
}

}  // namespace iris
