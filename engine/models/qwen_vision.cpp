// Qwen2.5-VL vision tower (see qwen_vision.h). Facts that matter for parity with
// transformers: the 2-D rotary table has head_dim / 4 frequencies 1 / 10000^(2k / (head_dim /
// 2)), used once for the row and once for the column, in rotate-half form over the whole head;
// window attention and the merger both move whole merge blocks, so the merger's 2 x 2
// concatenation reads four consecutive rows in either order; empty windows (the padding
// transformers adds when a side is a multiple of the window) do not exist here.
#include "engine/models/qwen_vision.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/core/check.h"

namespace iris {

QwenVisionEncoder::QwenVisionEncoder(const Checkpoint& ckpt, const ModelConfig& config,
                                     Backend& backend, const WeightNames& names)
    : backend_(backend) {
  IRIS_CHECK(config.qwen_vl.has_value()) << config.architecture_name << " has no Qwen vision tower";
  vc_ = config.qwen_vl->vision;
  IRIS_CHECK(vc_.out_hidden_size == config.hidden_size)
      << "vision_config.out_hidden_size " << vc_.out_hidden_size
      << " differs from the language model's hidden_size " << config.hidden_size;
  const int64_t d = vc_.hidden_size, inter = vc_.intermediate_size, u = vc_.merge_unit();
  shape_.num_q_heads = vc_.num_heads;
  shape_.num_kv_heads = vc_.num_heads;
  shape_.head_dim = vc_.head_dim();

  const std::string vm = names.vision_model;
  patch_w_ = alloc({d, vc_.patch_dim()});
  load_into(ckpt, vm + "patch_embed.proj.weight",
            {d, vc_.in_channels, vc_.temporal_patch_size, vc_.patch_size, vc_.patch_size}, patch_w_, 0);

  // Rotary: frequencies over head_dim / 2 dims, i.e. head_dim / 4 of them, for rows then columns.
  const int quarter = vc_.head_dim() / 4;
  const int rot_dim = vc_.head_dim() / 2;
  std::vector<float> table(2 * 2 * quarter, 0.0f);
  for (int k = 0; k < quarter; ++k) {
    const float f = 1.0f / std::pow(10000.0f, static_cast<float>(2 * k) / static_cast<float>(rot_dim));
    table[k] = f;                              // row 0: frequencies [0, quarter) by patch row
    table[2 * quarter + quarter + k] = f;      // row 1: frequencies [quarter, 2 quarter) by column
  }
  inv_freq_ = backend.allocate(DType::F32, {2, 2 * quarter});
  backend.upload(table.data(), DType::F32, inv_freq_.tensor);

  blocks_.resize(vc_.depth);
  for (int l = 0; l < vc_.depth; ++l) {
    const std::string p = vm + "blocks." + std::to_string(l) + ".";
    Block& b = blocks_[l];
    b.norm1 = load(ckpt, p + "norm1.weight", {d});
    b.norm2 = load(ckpt, p + "norm2.weight", {d});
    b.qkv = load(ckpt, p + "attn.qkv.weight", {3 * d, d});
    b.qkv_b = load(ckpt, p + "attn.qkv.bias", {3 * d});
    b.proj = load(ckpt, p + "attn.proj.weight", {d, d});
    b.proj_b = load(ckpt, p + "attn.proj.bias", {d});
    b.gate_up = alloc({2 * inter, d});
    load_into(ckpt, p + "mlp.gate_proj.weight", {inter, d}, b.gate_up, 0);
    load_into(ckpt, p + "mlp.up_proj.weight", {inter, d}, b.gate_up, inter);
    b.gate_up_b = alloc({2 * inter});
    load_into(ckpt, p + "mlp.gate_proj.bias", {inter}, b.gate_up_b, 0);
    load_into(ckpt, p + "mlp.up_proj.bias", {inter}, b.gate_up_b, inter);
    b.down = load(ckpt, p + "mlp.down_proj.weight", {d, inter});
    b.down_b = load(ckpt, p + "mlp.down_proj.bias", {d});
  }
  merger_norm_ = load(ckpt, vm + "merger.ln_q.weight", {d});
  mlp0_ = load(ckpt, vm + "merger.mlp.0.weight", {u * d, u * d});
  mlp0_b_ = load(ckpt, vm + "merger.mlp.0.bias", {u * d});
  mlp2_ = load(ckpt, vm + "merger.mlp.2.weight", {vc_.out_hidden_size, u * d});
  mlp2_b_ = load(ckpt, vm + "merger.mlp.2.bias", {vc_.out_hidden_size});

  const DType dt = backend.compute_dtype();
  no_cache_k_ = backend.allocate(dt, {1, 1, vc_.num_heads, vc_.head_dim()});
  no_cache_v_ = backend.allocate(dt, {1, 1, vc_.num_heads, vc_.head_dim()});
  no_cache_ = KvLayer{no_cache_k_.tensor, no_cache_v_.tensor};
}

void QwenVisionEncoder::reserve(int64_t max_patches) {
  IRIS_CHECK(max_patches > 0) << "reserve(" << max_patches << ")";
  if (max_patches <= max_patches_) return;
  const DType dt = backend_.compute_dtype();
  const int64_t n = max_patches, d = vc_.hidden_size, inter = vc_.intermediate_size;
  const int64_t u = vc_.merge_unit();
  x_ = backend_.allocate(dt, {n, d});
  tmp_ = backend_.allocate(dt, {n, d});
  qkv_ = backend_.allocate(dt, {n, 3 * d});
  attn_ = backend_.allocate(dt, {n, d});
  gate_up_ = backend_.allocate(dt, {n, 2 * inter});
  act_ = backend_.allocate(dt, {n, inter});
  merged_ = backend_.allocate(dt, {n / u + 1, u * d});
  merged_hidden_ = backend_.allocate(dt, {n / u + 1, u * d});
  positions_ = backend_.allocate(DType::I32, {n, 2});
  order_ = backend_.allocate(DType::I32, {n});
  unorder_ = backend_.allocate(DType::I32, {n / u + 1});
  slots_ = backend_.allocate(DType::I32, {n});
  std::vector<int32_t> none(static_cast<size_t>(n), -1);
  backend_.upload_i32(none.data(), slots_.tensor);
  max_patches_ = max_patches;
}

QwenVisionEncoder::WindowPlan QwenVisionEncoder::window_plan(int grid_t, int grid_h,
                                                             int grid_w) const {
  const int m = vc_.spatial_merge_size, u = vc_.merge_unit();
  const int side = vc_.window_size / m / vc_.patch_size;  // merge blocks per window side
  const int bh = grid_h / m, bw = grid_w / m;
  WindowPlan plan;
  plan.bounds.push_back(0);
  for (int t = 0; t < grid_t; ++t)
    for (int wy = 0; wy < bh; wy += side)
      for (int wx = 0; wx < bw; wx += side) {
        for (int y = wy; y < std::min(wy + side, bh); ++y)
          for (int x = wx; x < std::min(wx + side, bw); ++x)
            plan.block_order.push_back((t * bh + y) * bw + x);
        const int blocks = (std::min(wy + side, bh) - wy) * (std::min(wx + side, bw) - wx);
        plan.bounds.push_back(plan.bounds.back() + blocks * u);
      }
  return plan;
}

// Bidirectional attention inside each [bounds[i], bounds[i + 1]) of consecutive rows: runs of
// equal-sized windows go to encoder_attention as one call.
void QwenVisionEncoder::attend(const Tensor& qkv, const std::vector<int32_t>& bounds, Tensor& out) {
  Ops& ops = backend_.ops();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(vc_.head_dim())));
  size_t w = 0;
  while (w + 1 < bounds.size()) {
    const int32_t len = bounds[w + 1] - bounds[w];
    size_t end = w + 1;
    while (end + 1 < bounds.size() && bounds[end + 1] - bounds[end] == len) ++end;
    const int64_t first = bounds[w], rows = static_cast<int64_t>(bounds[end]) - first;
    Tensor o = out.rows(first, rows);
    ops.encoder_attention(qkv.rows(first, rows), shape_, len, scale, o);
    w = end;
  }
}

void QwenVisionEncoder::encode(const Tensor& patches, int grid_t, int grid_h, int grid_w,
                               Tensor& out) {
  const int m = vc_.spatial_merge_size, u = vc_.merge_unit();
  IRIS_CHECK(grid_t > 0 && grid_h > 0 && grid_w > 0 && grid_h % m == 0 && grid_w % m == 0)
      << "vision grid " << grid_t << "x" << grid_h << "x" << grid_w << " (sides must be multiples of "
      << m << ")";
  const int64_t n = static_cast<int64_t>(grid_t) * grid_h * grid_w;
  IRIS_CHECK(patches.dim(0) == n && patches.dim(1) == vc_.patch_dim() && out.dim(0) == n / u &&
             out.dim(1) == vc_.out_hidden_size)
      << "vision encode: patches " << patches.shape.str() << ", out " << out.shape.str()
      << " for grid " << grid_t << "x" << grid_h << "x" << grid_w;
  reserve(n);
  const int64_t d = vc_.hidden_size;

  // Host plan: regrouped order of the patch rows, their (row, column), frame bounds.
  const WindowPlan plan = window_plan(grid_t, grid_h, grid_w);
  const int bw = grid_w / m;
  h_order_.clear();
  h_positions_.clear();
  h_unorder_.assign(static_cast<size_t>(n / u), 0);
  for (size_t slot = 0; slot < plan.block_order.size(); ++slot) {
    const int32_t block = plan.block_order[slot];
    h_unorder_[block] = static_cast<int32_t>(slot);
    const int32_t in_frame = block % ((grid_h / m) * bw);
    const int32_t by = in_frame / bw, bx = in_frame % bw;
    for (int k = 0; k < u; ++k) {
      h_order_.push_back(block * u + k);
      h_positions_.push_back(by * m + k / m);  // patch row
      h_positions_.push_back(bx * m + k % m);  // patch column
    }
  }
  std::vector<int32_t> frames{0};
  for (int t = 0; t < grid_t; ++t) frames.push_back(frames.back() + grid_h * grid_w);

  Ops& ops = backend_.ops();
  Tensor x = x_.tensor.rows(0, n), tmp = tmp_.tensor.rows(0, n), qkv = qkv_.tensor.rows(0, n);
  Tensor attn = attn_.tensor.rows(0, n), gate_up = gate_up_.tensor.rows(0, n);
  Tensor act = act_.tensor.rows(0, n);
  Tensor positions = positions_.tensor.rows(0, n), order = order_.tensor.rows(0, n);
  Tensor unorder = unorder_.tensor.rows(0, n / u);
  backend_.upload_i32(h_order_.data(), order);
  backend_.upload_i32(h_positions_.data(), positions);
  backend_.upload_i32(h_unorder_.data(), unorder);

  ops.linear(patches, patch_w_.tensor, Tensor{}, tmp);
  ops.gather_rows(tmp, order, x);

  AttentionMetadata none;
  none.slot_mapping = slots_.tensor.rows(0, n);
  none.num_tokens = static_cast<int>(n);
  const std::vector<int> full(vc_.fullatt_block_indexes);
  for (int l = 0; l < vc_.depth; ++l) {
    Block& b = blocks_[l];
    ops.rms_norm(x, b.norm1.tensor, 1e-6f, tmp);
    ops.linear(tmp, b.qkv.tensor, b.qkv_b.tensor, qkv);
    ops.qk_norm_rope_store_kv(qkv, positions, inv_freq_.tensor, Tensor{}, Tensor{}, 1e-6f, shape_,
                              none, no_cache_);
    const bool whole_frames = std::find(full.begin(), full.end(), l) != full.end();
    attend(qkv, whole_frames ? frames : plan.bounds, attn);
    ops.linear(attn, b.proj.tensor, b.proj_b.tensor, tmp);
    ops.add(x, tmp);
    ops.rms_norm(x, b.norm2.tensor, 1e-6f, tmp);
    ops.linear(tmp, b.gate_up.tensor, b.gate_up_b.tensor, gate_up);
    ops.silu_mul(gate_up, act);
    ops.linear(act, b.down.tensor, b.down_b.tensor, tmp);
    ops.add(x, tmp);
  }
  ops.rms_norm(x, merger_norm_.tensor, 1e-6f, tmp);
  // Back to processor order first (block b sits at regrouped slot unorder[b]; rows move
  // exactly), so the last GEMM writes `out` in whatever dtype it has.
  Tensor blocks = merged_.tensor.rows(0, n / u);
  ops.gather_rows(tmp.view({n / u, u * d}), unorder, blocks);
  Tensor hidden = merged_hidden_.tensor.rows(0, n / u);
  ops.linear(blocks, mlp0_.tensor, mlp0_b_.tensor, hidden);
  ops.activation(hidden, Activation::kGeluErf);
  ops.linear(hidden, mlp2_.tensor, mlp2_b_.tensor, out);
}

Buffer QwenVisionEncoder::alloc(Shape shape) {
  Buffer b = backend_.allocate(backend_.compute_dtype(), shape);
  weight_bytes_ += b.tensor.bytes();
  return b;
}

Buffer QwenVisionEncoder::load(const Checkpoint& ckpt, const std::string& name,
                               std::vector<int64_t> shape) {
  Shape s;
  for (int64_t dim : shape) s.dims[s.ndim++] = dim;
  Buffer b = alloc(s);
  load_into(ckpt, name, shape, b, 0);
  return b;
}

void QwenVisionEncoder::load_into(const Checkpoint& ckpt, const std::string& name,
                                  std::vector<int64_t> full, Buffer& dst, int64_t row) {
  HostTensor h = ckpt.read(name, full, Slice{});
  Tensor target = dst.tensor.rows(row, h.shape[0]);
  IRIS_CHECK(target.numel() == h.numel())
      << name << ": " << h.numel() << " elements into " << target.shape.str();
  backend_.upload(h.data, h.dtype, target);
}

}  // namespace iris
