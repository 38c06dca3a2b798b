// Mixture-of-experts blocks: host routing, grouping by expert, and the block's forward pass
// over Ops (see moe.h).
#include "engine/models/moe.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "engine/core/check.h"
#include "engine/models/model.h"

namespace iris {

void route_top_k(const float* logits, int64_t stride, int64_t tokens, int num_experts, int top_k,
                 bool renormalize, int32_t* experts, float* weights) {
  IRIS_CHECK(num_experts > 0 && top_k > 0 && top_k <= num_experts && stride >= num_experts)
      << "route_top_k: top " << top_k << " of " << num_experts << " experts, stride " << stride;
  using Entry = std::pair<float, int32_t>;  // (probability, expert)
  std::vector<Entry> queue(static_cast<size_t>(num_experts));
  std::vector<float> prob(static_cast<size_t>(num_experts));
  // torch.topk's order: larger probability first; equal ones keep whatever position the
  // selection algorithm leaves them in, which is what the reference sees.
  const auto larger = [](const Entry& a, const Entry& b) { return a.first > b.first; };
  for (int64_t t = 0; t < tokens; ++t) {
    const float* row = logits + t * stride;
    float mx = row[0];
    for (int e = 0; e < num_experts; ++e) {
      IRIS_CHECK(std::isfinite(row[e])) << "router logit " << row[e] << " for token " << t
                                        << ", expert " << e;
      mx = std::max(mx, row[e]);
    }
    float sum = 0.0f;
    for (int e = 0; e < num_experts; ++e) {
      prob[e] = std::exp(row[e] - mx);
      sum += prob[e];
    }
    for (int e = 0; e < num_experts; ++e) queue[e] = {prob[e] / sum, e};
    // The selection torch.topk (sorted=True) runs on the CPU: a partial sort when k is small
    // against the row, else nth_element at k - 1 and a sort of the first k - 1 entries.
    if (static_cast<int64_t>(top_k) * 64 <= num_experts) {
      std::partial_sort(queue.begin(), queue.begin() + top_k, queue.end(), larger);
    } else {
      std::nth_element(queue.begin(), queue.begin() + (top_k - 1), queue.end(), larger);
      std::sort(queue.begin(), queue.begin() + (top_k - 1), larger);
    }
    float chosen = 0.0f;
    for (int j = 0; j < top_k; ++j) chosen += queue[j].first;
    for (int j = 0; j < top_k; ++j) {
      experts[t * top_k + j] = queue[j].second;
      weights[t * top_k + j] = renormalize ? queue[j].first / chosen : queue[j].first;
    }
  }
}

void group_by_expert(const int32_t* experts, int64_t tokens, int top_k, int first_expert,
                     int num_local, ExpertGroups& out) {
  out.offsets.assign(static_cast<size_t>(num_local) + 1, 0);
  out.slots.assign(static_cast<size_t>(tokens * top_k), -1);
  const int64_t pairs = tokens * top_k;
  for (int64_t i = 0; i < pairs; ++i) {
    const int e = experts[i] - first_expert;
    if (e >= 0 && e < num_local) ++out.offsets[e + 1];
  }
  for (int e = 0; e < num_local; ++e) out.offsets[e + 1] += out.offsets[e];
  out.rows.assign(static_cast<size_t>(out.offsets[num_local]), 0);
  std::vector<int32_t> next(out.offsets.begin(), out.offsets.end() - 1);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int j = 0; j < top_k; ++j) {
      const int e = experts[t * top_k + j] - first_expert;
      if (e < 0 || e >= num_local) continue;
      const int32_t row = next[e]++;
      out.rows[row] = static_cast<int32_t>(t);
      out.slots[t * top_k + j] = row;
    }
  }
}

void MoeWorkspace::reserve(Backend& backend, const MoeConfig& cfg, int64_t hidden,
                           int64_t expert_inter, int64_t shared_inter, int max_tokens) {
  const DType dt = backend.compute_dtype();
  const bool shared = shared_inter > 0;
  const int64_t t = max_tokens, pairs = t * cfg.top_k;
  max_tokens_ = max_tokens;
  num_columns_ = cfg.num_experts + (cfg.shared_expert_intermediate_size > 0 ? 1 : 0);
  num_slots_ = cfg.top_k + (shared ? 1 : 0);
  logits_ = backend.allocate(dt, {t, num_columns_});
  rows_ = backend.allocate(DType::I32, {std::max<int64_t>(pairs, 1)});
  slots_ = backend.allocate(DType::I32, {t, num_slots_});
  weights_ = backend.allocate(DType::F32, {t, num_slots_});
  xs_ = backend.allocate(dt, {pairs, hidden});
  gate_up_ = backend.allocate(dt, {pairs, 2 * std::max<int64_t>(expert_inter, 1)});
  act_ = backend.allocate(dt, {pairs, std::max<int64_t>(expert_inter, 1)});
  y_ = backend.allocate(dt, {pairs + (shared ? t : 0), hidden});
  if (shared) {
    shared_gate_up_ = backend.allocate(dt, {t, 2 * shared_inter});
    shared_act_ = backend.allocate(dt, {t, shared_inter});
  }
  host_logits_.assign(static_cast<size_t>(t * num_columns_), 0.0f);
  experts_.assign(static_cast<size_t>(pairs), 0);
  expert_weights_.assign(static_cast<size_t>(pairs), 0.0f);
  slots_host_.assign(static_cast<size_t>(t * num_slots_), -1);
  weights_host_.assign(static_cast<size_t>(t * num_slots_), 0.0f);
}

namespace {

// loader.load_matrix, or alloc + load_into for a loader without it.
Buffer load_matrix(const WeightLoader& loader, Shape shape, const std::vector<MatrixPiece>& pieces) {
  if (loader.load_matrix) return loader.load_matrix(shape, pieces);
  Buffer b = loader.alloc(shape);
  int64_t row = 0;
  for (const MatrixPiece& p : pieces) {
    loader.load_into(p.name, p.full, p.slice, b, row);
    row += p.slice.dim == 0 ? p.slice.count : p.full[0];
  }
  return b;
}

}  // namespace

MoeBlock::MoeBlock(const MoeConfig& cfg, const MoeWeightNames& names, int64_t hidden,
                   const ParallelConfig& par, const WeightLoader& loader)
    : cfg_(cfg), hidden_(hidden) {
  const int world = par.world_size;
  const int64_t h = hidden, ifull = cfg.expert_intermediate_size;
  const int64_t e_all = cfg.num_experts;
  // Expert placement and the slice of each expert's intermediate dimension on this rank.
  int64_t i0 = 0;
  if (par.expert_parallel && world > 1) {
    first_expert_ = static_cast<int>(par.rank * e_all / world);
    num_local_ = static_cast<int>((par.rank + 1) * e_all / world) - first_expert_;
    inter_ = ifull;
  } else {
    IRIS_CHECK(ifull % world == 0) << "expert intermediate size " << ifull
                                   << " not divisible by " << world
                                   << " ranks (--enable-expert-parallel keeps experts whole)";
    first_expert_ = 0;
    num_local_ = static_cast<int>(e_all);
    inter_ = ifull / world;
    i0 = par.rank * inter_;
  }

  const bool shared = !names.shared_expert.empty();
  router_ = loader.alloc({e_all + (shared ? 1 : 0), h});
  loader.load_into(names.router, {e_all, h}, Slice{}, router_, 0);
  if (shared) loader.load_into(names.shared_expert_gate, {1, h}, Slice{}, router_, e_all);

  gate_up_.reserve(num_local_);
  down_.reserve(num_local_);
  for (int le = 0; le < num_local_; ++le) {
    const int e = first_expert_ + le;
    Buffer gu = load_matrix(loader, {2 * inter_, h},
                                   {{names.expert_gate(e), {ifull, h}, {0, i0, inter_}},
                                    {names.expert_up(e), {ifull, h}, {0, i0, inter_}}});
    Buffer dn = load_matrix(loader, {h, inter_}, {{names.expert_down(e), {h, ifull}, {1, i0, inter_}}});
    gate_up_.push_back(std::move(gu));
    down_.push_back(std::move(dn));
  }

  if (shared) {
    const int64_t sfull = cfg.shared_expert_intermediate_size;
    IRIS_CHECK(sfull % world == 0) << "shared_expert_intermediate_size " << sfull
                                   << " not divisible by " << world << " ranks";
    shared_inter_ = sfull / world;
    const int64_t s0 = par.rank * shared_inter_;
    const std::string& p = names.shared_expert;
    shared_gate_up_ = load_matrix(loader, 
        {2 * shared_inter_, h}, {{p + "gate_proj.weight", {sfull, h}, {0, s0, shared_inter_}},
                                 {p + "up_proj.weight", {sfull, h}, {0, s0, shared_inter_}}});
    shared_down_ = load_matrix(loader, 
        {h, shared_inter_}, {{p + "down_proj.weight", {h, sfull}, {1, s0, shared_inter_}}});
  }
}

void MoeBlock::forward(Backend& backend, MoeWorkspace& ws, const Tensor& x, Tensor& out) {
  Ops& ops = backend.ops();
  const int64_t t = x.dim(0), k = cfg_.top_k;
  const bool shared = shared_inter_ > 0;
  const int cols = ws.num_columns_, slots = ws.num_slots_;
  IRIS_CHECK(t <= ws.max_tokens_ && cols == cfg_.num_experts + (shared ? 1 : 0) &&
             slots == k + (shared ? 1 : 0))
      << "MoE step of " << t << " tokens on a workspace for " << ws.max_tokens_;

  // 1-2. Router logits to the host, top-k routing there.
  Tensor logits = ws.logits_.tensor.rows(0, t);
  ops.linear(x, router_.tensor, Tensor{}, logits);
  backend.download_f32(logits, ws.host_logits_.data());
  route_top_k(ws.host_logits_.data(), cols, t, cfg_.num_experts, cfg_.top_k, cfg_.renormalize,
              ws.experts_.data(), ws.expert_weights_.data());

  // 3. Group this rank's (token, expert) pairs by expert; the combine table per token.
  ExpertGroups& g = ws.groups_;
  group_by_expert(ws.experts_.data(), t, cfg_.top_k, first_expert_, num_local_, g);
  const int64_t n = static_cast<int64_t>(g.rows.size());
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      ws.slots_host_[r * slots + j] = g.slots[r * k + j];
      ws.weights_host_[r * slots + j] = ws.expert_weights_[r * k + j];
    }
    if (shared) {
      const float gate = ws.host_logits_[r * cols + cfg_.num_experts];
      ws.slots_host_[r * slots + k] = static_cast<int32_t>(n + r);
      ws.weights_host_[r * slots + k] = 1.0f / (1.0f + std::exp(-gate));
    }
  }
  Tensor slot_dev = ws.slots_.tensor.rows(0, t);
  Tensor weight_dev = ws.weights_.tensor.rows(0, t);
  backend.upload_i32(ws.slots_host_.data(), slot_dev);
  backend.upload(ws.weights_host_.data(), DType::F32, weight_dev);

  // 4. One gather of the grouped rows, then one GEMM pair per active local expert.
  if (n > 0) {
    Tensor rows = ws.rows_.tensor.rows(0, n);
    Tensor xs = ws.xs_.tensor.rows(0, n);
    backend.upload_i32(g.rows.data(), rows);
    ops.gather_rows(x, rows, xs);
  }
  // The activation runs once over every grouped row (one launch, not one per expert).
  for (int le = 0; le < num_local_; ++le) {
    const int64_t begin = g.offsets[le], count = g.offsets[le + 1] - begin;
    if (count == 0) continue;
    Tensor xs = ws.xs_.tensor.rows(begin, count);
    Tensor gu = ws.gate_up_.tensor.rows(begin, count);
    ops.linear(xs, gate_up_[le].tensor, Tensor{}, gu);
  }
  if (n > 0) {
    Tensor gu = ws.gate_up_.tensor.rows(0, n);
    Tensor act = ws.act_.tensor.rows(0, n);
    ops.silu_mul(gu, act);
  }
  for (int le = 0; le < num_local_; ++le) {
    const int64_t begin = g.offsets[le], count = g.offsets[le + 1] - begin;
    if (count == 0) continue;
    Tensor act = ws.act_.tensor.rows(begin, count);
    Tensor y = ws.y_.tensor.rows(begin, count);
    ops.linear(act, down_[le].tensor, Tensor{}, y);
  }
  if (shared) {
    Tensor gu = ws.shared_gate_up_.tensor.rows(0, t);
    Tensor act = ws.shared_act_.tensor.rows(0, t);
    Tensor y = ws.y_.tensor.rows(n, t);
    ops.linear(x, shared_gate_up_.tensor, Tensor{}, gu);
    ops.silu_mul(gu, act);
    ops.linear(act, shared_down_.tensor, Tensor{}, y);
  }

  // 5. Weighted sum per token.
  ops.moe_combine(ws.y_.tensor.rows(0, n + (shared ? t : 0)), slot_dev, weight_dev, out);
}

}  // namespace iris
