// The Llama family (Llama 2/3.x, Mistral, Qwen2, Qwen3) and its mixture-of-experts
// relatives (Mixtral, Qwen2-MoE, Qwen3-MoE) written once against Ops.
// Differences between the architectures are data, not code paths: q/k/v biases (Qwen2),
// per-head q/k RMSNorm (Qwen3), tied embeddings, sliding windows, rope scaling — all read
// from ModelConfig, as is Qwen2.5-VL's M-RoPE (three position rows per token, one frequency
// table row per section). q/k/v and gate/up are fused into one GEMM each at load time. The same
// class is the language model of LLaVA and Qwen2.5-VL: only the weight-name prefix differs, and a step may
// carry image embeddings that replace the embeddings of its placeholder tokens. A sparse
// layer's MLP is a MoeBlock (engine/models/moe.h) in place of the dense gate/up/down.
// Gemma 3 (ModelConfig::gemma) is the same layer with four switches: the embedding scaled by
// sqrt(hidden) in the checkpoint's dtype, RMSNorm weights stored as (1 + w) at load, extra
// norms after attention and around the MLP, GELU-tanh gating, a RoPE table per layer kind
// and the final logit soft-cap.
#include <algorithm>
#include <cmath>
#include <string>

#include "engine/core/check.h"
#include "engine/models/model.h"
#include "engine/models/moe.h"
#include "engine/models/rope.h"
#include "engine/models/weight_names.h"

namespace iris {
namespace {

// One per-tensor KV-cache scale: a scalar ([] or [1]) F32 / BF16 / F16 tensor, finite and
// positive; fails naming the tensor otherwise.
float read_kv_scale(const Checkpoint& ckpt, const std::string& name) {
  const SafetensorInfo& info = ckpt.info(name);
  IRIS_CHECK(info.numel() == 1 && info.shape.size() <= 1)
      << ckpt.dir() << ": KV-cache scale '" << name << "' must be a scalar, has shape "
      << shape_str(info.shape);
  IRIS_CHECK(info.dtype == DType::F32 || info.dtype == DType::BF16 || info.dtype == DType::F16)
      << ckpt.dir() << ": KV-cache scale '" << name << "' must be F32, BF16 or F16, is "
      << dtype_name(info.dtype);
  float v = 0.0f;
  convert_to_f32(ckpt.bytes(name), info.dtype, &v, 1);
  IRIS_CHECK(std::isfinite(v) && v > 0.0f)
      << ckpt.dir() << ": KV-cache scale '" << name << "' must be finite and positive, is " << v;
  return v;
}

// The (k_scale, v_scale) of one attention layer (`prefix` = "...layers.N.self_attn."), as
// FP8-KV checkpoints store them (compressed-tensors' kv_cache_scheme, AutoFP8): k_scale and
// v_scale, or one kv_scale for both (older exports); 1 where the checkpoint has none.
// Scales apply only when the cache is FP8 (--kv-cache-dtype fp8).
std::pair<float, float> read_kv_scales(const Checkpoint& ckpt, const std::string& prefix) {
  const bool k = ckpt.has(prefix + "k_scale"), v = ckpt.has(prefix + "v_scale");
  IRIS_CHECK(k == v) << ckpt.dir() << ": '" << prefix << (k ? "k_scale" : "v_scale")
                     << "' has no matching '" << prefix << (k ? "v_scale" : "k_scale") << "'";
  if (k) return {read_kv_scale(ckpt, prefix + "k_scale"), read_kv_scale(ckpt, prefix + "v_scale")};
  if (ckpt.has(prefix + "kv_scale")) {
    const float s = read_kv_scale(ckpt, prefix + "kv_scale");
    return {s, s};
  }
  return {1.0f, 1.0f};
}

struct LayerWeights {
  Buffer input_norm;     // [H]
  Buffer qkv;            // [(Hq + 2 Hkv) * D, H]   this rank's heads
  Buffer qkv_bias;       // [(Hq + 2 Hkv) * D] or empty
  Buffer q_norm, k_norm; // [D] or empty (Qwen3)
  Buffer o_proj;         // [H, Hq * D]
  Buffer o_bias;         // [H] or empty (only on rank 0 when sharded)
  Buffer post_norm;      // [H]   (Gemma: post_attention_layernorm, on the attention output)
  Buffer pre_ff_norm;    // [H] or empty (Gemma: pre_feedforward_layernorm)
  Buffer post_ff_norm;   // [H] or empty (Gemma: post_feedforward_layernorm)
  Buffer gate_up;        // [2 I, H]
  Buffer gate_up_bias;   // [2 I] or empty
  Buffer down;           // [H, I]
  Buffer down_bias;      // [H] or empty
  std::unique_ptr<MoeBlock> moe;  // a sparse layer's MLP (the dense weights are then empty)
};

class LlamaModel final : public Model {
 public:
  LlamaModel(const Checkpoint& ckpt, const ModelConfig& cfg, Backend& backend,
             ParallelConfig par, const WeightNames& names)
      : cfg_(cfg), backend_(backend), par_(par) {
    IRIS_CHECK(par.world_size >= 1 && par.rank >= 0 && par.rank < par.world_size)
        << "rank " << par.rank << " of " << par.world_size;
    const int64_t h = cfg.hidden_size;
    const int world = par.world_size;
    IRIS_CHECK(cfg.num_heads % world == 0) << "num_attention_heads " << cfg.num_heads
                                           << " not divisible by " << world << " ranks";
    bool any_dense = true;
    if (cfg.moe) {
      any_dense = std::find(cfg.moe->sparse_layer.begin(), cfg.moe->sparse_layer.end(), 0) !=
                  cfg.moe->sparse_layer.end();
    }
    IRIS_CHECK(!any_dense || cfg.intermediate_size % world == 0)
        << "intermediate_size not divisible by " << world << " ranks";
    shape_.head_dim = cfg.head_dim;
    shape_.num_q_heads = cfg.num_heads / world;
    // With fewer KV heads than ranks each rank keeps the one KV head its q heads use.
    shape_.num_kv_heads = cfg.num_kv_heads >= world ? cfg.num_kv_heads / world : 1;
    if (cfg.num_kv_heads >= world) {
      IRIS_CHECK(cfg.num_kv_heads % world == 0)
          << "num_key_value_heads " << cfg.num_kv_heads << " not divisible by " << world;
    }
    inter_ = cfg.intermediate_size / world;
    const int64_t d = cfg.head_dim;
    const int64_t nq = cfg.num_heads, nk = cfg.num_kv_heads;
    const int64_t q0 = par.rank * shape_.num_q_heads;
    const int64_t k0 = cfg.num_kv_heads >= world ? par.rank * shape_.num_kv_heads
                                                 : par.rank * nk / world;

    // Vocabulary-parallel embedding and LM head: rank r holds rows [first, first + count).
    const int64_t per_rank = (cfg.vocab_size + world - 1) / world;
    vocab_first_ = std::min<int64_t>(cfg.vocab_size, par.rank * per_rank);
    vocab_count_ = std::min<int64_t>(cfg.vocab_size, vocab_first_ + per_rank) - vocab_first_;
    IRIS_CHECK(vocab_count_ > 0) << "vocabulary of " << cfg.vocab_size << " too small for "
                                 << world << " ranks";
    const Slice vocab_rows{0, vocab_first_, vocab_count_};
    embed_ = alloc_matrix({vocab_count_, h});
    load_into(ckpt, names.text_model + "embed_tokens.weight", {cfg.vocab_size, h}, vocab_rows, embed_, 0);
    final_norm_ = load_norm(ckpt, names.text_model + "norm.weight", h);
    if (cfg.tie_word_embeddings) {
      lm_head_ = embed_;
    } else {
      lm_head_ = alloc_matrix({vocab_count_, h});
      load_into(ckpt, names.lm_head, {cfg.vocab_size, h}, vocab_rows, lm_head_, 0);
    }
    if (cfg.mrope_section.empty()) {
      inv_freq_ = upload_f32(rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling));
    } else {
      const std::vector<float> table = mrope_inv_freq(
          rope_inv_freq(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling), cfg.mrope_section);
      const int64_t rows = static_cast<int64_t>(cfg.mrope_section.size());
      inv_freq_ = backend_.allocate(DType::F32, {rows, static_cast<int64_t>(table.size()) / rows});
      backend_.upload(table.data(), DType::F32, inv_freq_.tensor);
    }
    if (cfg.gemma) {
      // Sliding-window layers: their own base, no scaling. The embedding scale is rounded to
      // the dtype the embedding is stored in, as transformers multiplies in that dtype.
      inv_freq_local_ = upload_f32(
          rope_inv_freq(cfg.head_dim, cfg.gemma->rope_local_base_freq, RopeScaling{}));
      float scale = std::sqrt(static_cast<float>(h));
      const DType stored = ckpt.info(names.text_model + "embed_tokens.weight").dtype;
      if (stored == DType::BF16) scale = bf16_to_f32(f32_to_bf16(scale));
      if (stored == DType::F16) scale = f16_to_f32(f32_to_f16(scale));
      embed_scale_ = scale;
    }
    const WeightLoader loader{
        [this](Shape shape) { return alloc(shape); },
        [this, &ckpt](const std::string& name, std::vector<int64_t> full, Slice slice, Buffer& dst,
                      int64_t row) { load_into(ckpt, name, std::move(full), slice, dst, row); },
        [this, &ckpt](Shape shape, const std::vector<MatrixPiece>& pieces) {
          return load_matrix(ckpt, shape, pieces);  // the weight dtype, like the dense ones
        }};

    layers_.resize(cfg.num_layers);
    for (int l = 0; l < cfg.num_layers; ++l) {
      const std::string p = names.text_model + "layers." + std::to_string(l) + ".";
      LayerWeights& w = layers_[l];
      w.input_norm = load_norm(ckpt, p + "input_layernorm.weight", h);
      w.post_norm = load_norm(ckpt, p + "post_attention_layernorm.weight", h);
      if (cfg.gemma) {
        w.pre_ff_norm = load_norm(ckpt, p + "pre_feedforward_layernorm.weight", h);
        w.post_ff_norm = load_norm(ckpt, p + "post_feedforward_layernorm.weight", h);
      }

      const int64_t qr = shape_.q_dim(), kr = shape_.kv_dim();
      w.qkv = load_matrix(ckpt, {qr + 2 * kr, h},
                          {{p + "self_attn.q_proj.weight", {nq * d, h}, {0, q0 * d, qr}},
                           {p + "self_attn.k_proj.weight", {nk * d, h}, {0, k0 * d, kr}},
                           {p + "self_attn.v_proj.weight", {nk * d, h}, {0, k0 * d, kr}}});
      if (cfg.attention_bias) {
        w.qkv_bias = alloc({qr + 2 * kr});
        load_into(ckpt, p + "self_attn.q_proj.bias", {nq * d}, {0, q0 * d, qr}, w.qkv_bias, 0);
        load_into(ckpt, p + "self_attn.k_proj.bias", {nk * d}, {0, k0 * d, kr}, w.qkv_bias, qr);
        load_into(ckpt, p + "self_attn.v_proj.bias", {nk * d}, {0, k0 * d, kr}, w.qkv_bias, qr + kr);
      }
      if (cfg.qk_norm) {
        w.q_norm = load_norm(ckpt, p + "self_attn.q_norm.weight", d);
        w.k_norm = load_norm(ckpt, p + "self_attn.k_norm.weight", d);
      }
      kv_scales_.push_back(read_kv_scales(ckpt, p + "self_attn."));
      w.o_proj = load_matrix(ckpt, {h, qr}, {{p + "self_attn.o_proj.weight", {h, nq * d}, {1, q0 * d, qr}}});
      // A row-parallel bias is added once, after the all-reduce: rank 0 holds it.
      if (cfg.o_proj_bias && par.rank == 0) w.o_bias = load(ckpt, p + "self_attn.o_proj.bias", {h});

      if (cfg.moe && cfg.moe->sparse_layer[l]) {
        w.moe = std::make_unique<MoeBlock>(*cfg.moe, moe_weight_names(cfg, p), h, par, loader);
        continue;
      }
      const int64_t i0 = par.rank * inter_, ifull = cfg.intermediate_size;
      w.gate_up = load_matrix(ckpt, {2 * inter_, h},
                              {{p + "mlp.gate_proj.weight", {ifull, h}, {0, i0, inter_}},
                               {p + "mlp.up_proj.weight", {ifull, h}, {0, i0, inter_}}});
      w.down = load_matrix(ckpt, {h, inter_}, {{p + "mlp.down_proj.weight", {h, ifull}, {1, i0, inter_}}});
      if (cfg.mlp_bias) {
        w.gate_up_bias = alloc({2 * inter_});
        load_into(ckpt, p + "mlp.gate_proj.bias", {ifull}, {0, i0, inter_}, w.gate_up_bias, 0);
        load_into(ckpt, p + "mlp.up_proj.bias", {ifull}, {0, i0, inter_}, w.gate_up_bias, inter_);
        if (par.rank == 0) w.down_bias = load(ckpt, p + "mlp.down_proj.bias", {h});
      }
    }
  }

  const ModelConfig& config() const override { return cfg_; }
  AttentionShape attention_shape() const override { return shape_; }
  size_t weight_bytes() const override { return weight_bytes_; }
  // The MoE router's token grouping reads the router logits back on the host.
  bool supports_step_graphs() const override { return !cfg_.moe; }
  std::pair<int64_t, int64_t> vocab_shard() const override { return {vocab_first_, vocab_count_}; }
  std::vector<std::pair<float, float>> kv_scales() const override { return kv_scales_; }

  void reserve(int max_tokens, int max_logits) override {
    const DType dt = backend_.compute_dtype();
    const int64_t t = max_tokens, h = cfg_.hidden_size;
    residual_ = backend_.allocate(dt, {t, h});
    normed_ = backend_.allocate(dt, {t, h});
    if (cfg_.gemma) post_normed_ = backend_.allocate(dt, {t, h});
    qkv_ = backend_.allocate(dt, {t, shape_.qkv_dim()});
    attn_ = backend_.allocate(dt, {t, shape_.q_dim()});
    proj_ = backend_.allocate(dt, {t, h});
    gate_up_ = backend_.allocate(dt, {t, 2 * inter_});
    act_ = backend_.allocate(dt, {t, inter_});
    last_ = backend_.allocate(dt, {static_cast<int64_t>(max_logits), h});
    for (const LayerWeights& w : layers_) {
      if (!w.moe) continue;
      moe_ws_.reserve(backend_, *cfg_.moe, h, w.moe->expert_inter(), w.moe->shared_inter(),
                      max_tokens);
      break;
    }
    max_tokens_ = max_tokens;
    max_logits_ = max_logits;
  }

  void forward(const StepInputs& in, KvCache& kv, Tensor& logits) override {
    const int64_t t = in.token_ids.numel();
    const int64_t s = in.logits_indices.numel();
    IRIS_CHECK(t > 0 && t <= max_tokens_ && s <= max_logits_)
        << "step of " << t << " tokens / " << s << " logits exceeds the reserved "
        << max_tokens_ << " / " << max_logits_;
    IRIS_CHECK(static_cast<int>(kv.layers.size()) == cfg_.num_layers) << "KV cache layers";
    Ops& ops = backend_.ops();
    Tensor residual = residual_.tensor.rows(0, t);
    Tensor normed = normed_.tensor.rows(0, t);
    Tensor qkv = qkv_.tensor.rows(0, t);
    Tensor attn = attn_.tensor.rows(0, t);
    Tensor proj = proj_.tensor.rows(0, t);
    Tensor gate_up = gate_up_.tensor.rows(0, t);
    Tensor act = act_.tensor.rows(0, t);
    const float eps = cfg_.rms_norm_eps;
    const double scale_base = cfg_.gemma ? cfg_.gemma->query_pre_attn_scalar : cfg_.head_dim;
    const float scale = static_cast<float>(1.0 / std::sqrt(scale_base));
    // Gemma's sublayer outputs pass through a norm before they join the residual stream;
    // `out` is whichever buffer holds what the next add_rms_norm adds.
    Tensor post = cfg_.gemma ? post_normed_.tensor.rows(0, t) : Tensor{};
    Tensor* out = &proj;

    if (par_.world_size == 1) {
      ops.embedding(in.token_ids, embed_.tensor, residual);
    } else {
      ops.embedding_shard(in.token_ids, embed_.tensor, vocab_first_, residual);
      ops.all_reduce_sum(residual);
    }
    if (cfg_.gemma) ops.scale(residual, embed_scale_);
    if (in.embeds.defined() && in.embed_rows.numel() > 0) {
      IRIS_CHECK(in.embeds.dim(0) == in.embed_rows.numel() && in.embeds.dim(1) == cfg_.hidden_size)
          << "step embeddings " << in.embeds.shape.str() << " for " << in.embed_rows.numel()
          << " rows of hidden size " << cfg_.hidden_size;
      ops.scatter_rows(in.embeds, in.embed_rows, residual);
    }
    for (int l = 0; l < cfg_.num_layers; ++l) {
      LayerWeights& w = layers_[l];
      if (l == 0) {
        ops.rms_norm(residual, w.input_norm.tensor, eps, normed);
      } else {
        ops.add_rms_norm(residual, *out, w.input_norm.tensor, eps, normed);  // + MLP output
      }
      ops.linear(normed, w.qkv.tensor, w.qkv_bias.tensor, qkv);
      const bool local_rope = inv_freq_local_.tensor.defined() && cfg_.sliding_window[l] > 0;
      ops.qk_norm_rope_store_kv(qkv, in.positions,
                                local_rope ? inv_freq_local_.tensor : inv_freq_.tensor,
                                w.q_norm.tensor, w.k_norm.tensor, eps, shape_, in.attn,
                                kv.layers[l]);
      ops.attention(qkv, kv.layers[l], shape_, in.attn, scale, cfg_.sliding_window[l], attn);
      ops.linear(attn, w.o_proj.tensor, w.o_bias.tensor, proj);
      ops.all_reduce_sum(proj);
      if (cfg_.gemma) {
        ops.rms_norm(proj, w.post_norm.tensor, eps, post);
        ops.add_rms_norm(residual, post, w.pre_ff_norm.tensor, eps, normed);
      } else {
        ops.add_rms_norm(residual, proj, w.post_norm.tensor, eps, normed);
      }
      if (w.moe) {
        w.moe->forward(backend_, moe_ws_, normed, proj);
      } else {
        ops.linear(normed, w.gate_up.tensor, w.gate_up_bias.tensor, gate_up);
        if (cfg_.gemma) {
          ops.gelu_tanh_mul(gate_up, act);
        } else {
          ops.silu_mul(gate_up, act);
        }
        ops.linear(act, w.down.tensor, w.down_bias.tensor, proj);
      }
      ops.all_reduce_sum(proj);
      if (cfg_.gemma) {
        ops.rms_norm(proj, w.post_ff_norm.tensor, eps, post);
        out = &post;
      }
    }
    ops.add_rms_norm(residual, *out, final_norm_.tensor, eps, normed);
    Tensor last = last_.tensor.rows(0, s);
    ops.gather_rows(normed, in.logits_indices, last);
    ops.linear(last, lm_head_.tensor, Tensor{}, logits);
    if (cfg_.gemma && cfg_.gemma->final_logit_softcapping > 0)
      ops.tanh_softcap(logits, cfg_.gemma->final_logit_softcapping);
  }

 private:
  Buffer alloc(Shape shape) {
    Buffer b = backend_.allocate(backend_.compute_dtype(), shape);
    weight_bytes_ += b.tensor.bytes();
    return b;
  }
  // The dense matrices (embedding, LM head, attention and MLP projections) in the backend's
  // weight dtype.
  Buffer alloc_matrix(Shape shape) {
    Buffer b = backend_.allocate(backend_.weight_dtype(), shape);
    weight_bytes_ += b.tensor.bytes();
    return b;
  }
  // A linear weight stacked from `pieces`: packed when the backend keeps quantized weights
  // packed and every piece is stored quantized (each rank packs only its shard), else in the
  // backend's weight dtype (dense layers and experts alike).
  Buffer load_matrix(const Checkpoint& ckpt, Shape shape, const std::vector<MatrixPiece>& pieces) {
    bool packed = backend_.keeps_weights_packed();
    for (const MatrixPiece& p : pieces) packed = packed && ckpt.is_quantized(p.name);
    if (packed) {
      PackedWeight w;
      for (const MatrixPiece& p : pieces) {
        Slice slice = p.slice;
        if (slice.dim >= 0 && slice.begin == 0 && slice.count == p.full[slice.dim]) slice = Slice{};
        w.append_rows(ckpt.read_packed(p.name, p.full, slice), p.name);
      }
      IRIS_CHECK(shape.ndim == 2 && w.rows == shape[0] && w.cols == shape[1])
          << pieces.front().name << ": packed " << w.describe() << " for " << shape.str();
      weight_bytes_ += w.bytes();
      return backend_.upload_packed(std::move(w));
    }
    Buffer b = backend_.allocate(backend_.weight_dtype(), shape);
    weight_bytes_ += b.tensor.bytes();
    int64_t row = 0;
    for (const MatrixPiece& p : pieces) {
      load_into(ckpt, p.name, p.full, p.slice, b, row);
      row += p.slice.dim == 0 ? p.slice.count : p.full[0];
    }
    return b;
  }
  Buffer load(const Checkpoint& ckpt, const std::string& name, std::vector<int64_t> shape) {
    Shape s;
    for (int64_t d : shape) s.dims[s.ndim++] = d;
    Buffer b = alloc(s);
    load_into(ckpt, name, shape, Slice{}, b, 0);
    return b;
  }
  // An RMSNorm weight [n]; Gemma's norms multiply by (1 + w), so 1 is added here in fp32.
  Buffer load_norm(const Checkpoint& ckpt, const std::string& name, int64_t n) {
    if (!cfg_.gemma) return load(ckpt, name, {n});
    HostTensor h = ckpt.read(name, {n});
    std::vector<float> w(static_cast<size_t>(n));
    convert_to_f32(h.data, h.dtype, w.data(), w.size());
    for (float& x : w) x += 1.0f;
    Buffer b = alloc({n});
    backend_.upload(w.data(), DType::F32, b.tensor);
    return b;
  }
  // Reads `name` (full shape `full`), takes `slice`, and writes it at row `row` of dst.
  void load_into(const Checkpoint& ckpt, const std::string& name, std::vector<int64_t> full,
                 Slice slice, Buffer& dst, int64_t row) {
    if (slice.dim >= 0 && slice.begin == 0 && slice.count == full[slice.dim]) slice = Slice{};
    HostTensor h = ckpt.read(name, full, slice);
    Tensor target = dst.tensor.rows(row, h.shape[0]);
    IRIS_CHECK(target.numel() == h.numel()) << name << ": shard of " << h.numel()
                                            << " elements into " << target.shape.str();
    backend_.upload(h.data, h.dtype, target);
  }
  Buffer upload_f32(const std::vector<float>& v) {
    Buffer b = backend_.allocate(DType::F32, {static_cast<int64_t>(v.size())});
    backend_.upload(v.data(), DType::F32, b.tensor);
    return b;
  }

  ModelConfig cfg_;
  Backend& backend_;
  ParallelConfig par_;
  AttentionShape shape_;
  int64_t inter_ = 0;
  int64_t vocab_first_ = 0, vocab_count_ = 0;
  size_t weight_bytes_ = 0;
  Buffer embed_, final_norm_, lm_head_, inv_freq_;
  Buffer inv_freq_local_;   // Gemma's sliding-window layers, or empty
  float embed_scale_ = 1.0f;
  std::vector<LayerWeights> layers_;
  std::vector<std::pair<float, float>> kv_scales_;  // per layer (k_scale, v_scale)
  Buffer residual_, normed_, post_normed_, qkv_, attn_, proj_, gate_up_, act_, last_;
  MoeWorkspace moe_ws_;
  int max_tokens_ = 0, max_logits_ = 0;
};

}  // namespace

std::unique_ptr<Model> load_model(const Checkpoint& ckpt, const ModelConfig& config,
                                  Backend& backend, ParallelConfig parallel) {
  switch (config.arch) {
    case Architecture::kLlama:
    case Architecture::kMistral:
    case Architecture::kQwen2:
    case Architecture::kQwen3:
    case Architecture::kMixtral:
    case Architecture::kQwen2Moe:
    case Architecture::kQwen3Moe:
    case Architecture::kGemma3:
      return std::make_unique<LlamaModel>(ckpt, config, backend, parallel,
                                          weight_names(ckpt, config));
  }
  fail("no model definition for ", config.architecture_name);
}

size_t kv_bytes_per_block(const Backend& backend, const Model& model, int block_size,
                          KvCacheDtype dtype) {
  const AttentionShape s = model.attention_shape();
  return 2ull * model.config().num_layers * block_size * s.kv_dim() *
         dtype_size(kv_storage_dtype(dtype, backend.compute_dtype()));
}

KvCache allocate_kv_cache(Backend& backend, const Model& model, int num_blocks, int block_size,
                          KvCacheDtype dtype) {
  const AttentionShape s = model.attention_shape();
  const DType stored = kv_storage_dtype(dtype, backend.compute_dtype());
  const std::vector<std::pair<float, float>> scales = model.kv_scales();
  KvCache kv;
  kv.num_blocks = num_blocks;
  kv.block_size = block_size;
  for (int l = 0; l < model.config().num_layers; ++l) {
    Buffer k = backend.allocate(stored, {num_blocks, block_size, s.num_kv_heads, s.head_dim});
    Buffer v = backend.allocate(stored, {num_blocks, block_size, s.num_kv_heads, s.head_dim});
    KvLayer layer{k.tensor, v.tensor};
    if (stored == DType::F8_E4M3 && !scales.empty()) {
      layer.k_scale = scales.at(l).first;
      layer.v_scale = scales.at(l).second;
    }
    kv.layers.push_back(layer);
    kv.storage.push_back(std::move(k));
    kv.storage.push_back(std::move(v));
  }
  return kv;
}

}  // namespace iris
