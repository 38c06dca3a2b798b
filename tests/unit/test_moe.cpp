// Mixture-of-experts routing and blocks on the CPU backend: ties broken as torch.topk does
// on the CPU (expected indices recorded from torch 1.13), renormalisation, non-finite logits
// refused, grouping by expert (an expert with no token, every token on one expert, another
// rank's experts), a MoeBlock's output against a per-token loop written here, on one rank
// and summed over sharded and expert-parallel ranks, and the MoE config fields and tensor
// names.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>

#include "engine/models/model.h"
#include "engine/models/moe.h"

using namespace iris;

namespace {

std::vector<int32_t> top_experts(const std::vector<float>& logits, int num_experts, int k,
                                 std::vector<float>* weights = nullptr, bool renorm = false) {
  const int64_t t = static_cast<int64_t>(logits.size()) / num_experts;
  std::vector<int32_t> e(static_cast<size_t>(t * k));
  std::vector<float> w(static_cast<size_t>(t * k));
  route_top_k(logits.data(), num_experts, t, num_experts, k, renorm, e.data(), w.data());
  if (weights) *weights = w;
  return e;
}

}  // namespace

TEST_CASE("route_top_k breaks ties as torch.topk on the CPU") {
  // torch.topk(torch.softmax(zeros(E), -1, dtype=float), k) on torch 1.13 (CPU).
  CHECK(top_experts(std::vector<float>(8, 0.0f), 8, 2) == std::vector<int32_t>{6, 5});
  CHECK(top_experts(std::vector<float>(4, 0.0f), 4, 2) == std::vector<int32_t>{2, 3});
  CHECK(top_experts(std::vector<float>(16, 0.0f), 16, 1) == std::vector<int32_t>{10});
  CHECK(top_experts(std::vector<float>(32, 0.0f), 32, 4) == std::vector<int32_t>{22, 21, 20, 23});
  // k * 64 <= E: torch takes its partial-sort path.
  CHECK(top_experts(std::vector<float>(128, 0.0f), 128, 8) ==
        std::vector<int32_t>{84, 87, 86, 85, 82, 81, 88, 83});
  std::vector<float> one_high(60, 0.0f);
  one_high[3] = 1.0f;
  CHECK(top_experts(one_high, 60, 4) == std::vector<int32_t>{3, 39, 40, 42});
  const std::vector<float> partial_ties{0.1f, 0.3f, 0.3f, 0.2f, 0.3f, 0.0f, 0.0f, 0.3f};
  CHECK(top_experts(partial_ties, 8, 2) == std::vector<int32_t>{4, 7});
  CHECK(top_experts(partial_ties, 8, 3) == std::vector<int32_t>{4, 7, 2});
  CHECK(top_experts(partial_ties, 8, 4) == std::vector<int32_t>{4, 7, 2, 1});
}

TEST_CASE("route_top_k weights: softmax probabilities, optionally renormalised") {
  const std::vector<float> logits{1.0f, -2.0f, 0.5f, 3.0f};
  double z = 0;
  for (float x : logits) z += std::exp(static_cast<double>(x));
  std::vector<float> w;
  CHECK(top_experts(logits, 4, 2, &w, false) == std::vector<int32_t>{3, 0});
  CHECK(w[0] == Approx(std::exp(3.0) / z).epsilon(1e-6));
  CHECK(w[1] == Approx(std::exp(1.0) / z).epsilon(1e-6));
  top_experts(logits, 4, 2, &w, true);
  CHECK(w[0] + w[1] == Approx(1.0).epsilon(1e-6));
  CHECK(w[0] / w[1] == Approx(std::exp(2.0)).epsilon(1e-5));
}

TEST_CASE("route_top_k refuses non-finite router logits") {
  std::vector<float> logits(8, 0.0f);
  logits[5] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(top_experts(logits, 8, 2), Catch::Contains("router logit"));
  logits[5] = std::numeric_limits<float>::infinity();
  CHECK_THROWS(top_experts(logits, 8, 2));
}

TEST_CASE("group_by_expert: empty experts, one expert for all, other ranks' experts") {
  // 4 tokens, top-2 of 4 experts; expert 2 receives nothing.
  const std::vector<int32_t> experts{1, 0, 3, 1, 0, 3, 1, 3};
  ExpertGroups g;
  group_by_expert(experts.data(), 4, 2, 0, 4, g);
  CHECK(g.offsets == std::vector<int32_t>{0, 2, 5, 5, 8});
  CHECK(g.rows == std::vector<int32_t>{0, 2, 0, 1, 3, 1, 2, 3});  // tokens ascending per expert
  CHECK(g.slots == std::vector<int32_t>{2, 0, 5, 3, 1, 6, 4, 7});
  for (size_t i = 0; i < experts.size(); ++i) CHECK(g.rows[g.slots[i]] == static_cast<int32_t>(i / 2));

  // Every token on expert 2 (top-1): one run, the other experts empty.
  const std::vector<int32_t> all_two(5, 2);
  group_by_expert(all_two.data(), 5, 1, 0, 4, g);
  CHECK(g.offsets == std::vector<int32_t>{0, 0, 0, 5, 5});
  CHECK(g.rows == std::vector<int32_t>{0, 1, 2, 3, 4});

  // Rank holding experts [2, 4): the others' choices get no slot.
  group_by_expert(experts.data(), 4, 2, 2, 2, g);
  CHECK(g.offsets == std::vector<int32_t>{0, 0, 3});
  CHECK(g.rows == std::vector<int32_t>{1, 2, 3});
  CHECK(g.slots == std::vector<int32_t>{-1, -1, 0, -1, -1, 1, -1, 2});
}

namespace {

// In-memory weights served through a WeightLoader, as the model's checkpoint loader does.
struct FakeCheckpoint {
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> tensors;
  std::mt19937 rng{7};

  void add(const std::string& name, int64_t rows, int64_t cols, float std) {
    std::normal_distribution<float> d(0.0f, std);
    std::vector<float> v(static_cast<size_t>(rows * cols));
    for (float& x : v) x = d(rng);
    tensors[name] = {{rows, cols}, std::move(v)};
  }

  WeightLoader loader(Backend& backend) {
    WeightLoader l;
    l.alloc = [&backend](Shape s) { return backend.allocate(DType::F32, s); };
    l.load_into = [this, &backend](const std::string& name, std::vector<int64_t> full, Slice slice,
                                   Buffer& dst, int64_t row) {
      const auto it = tensors.find(name);
      REQUIRE(it != tensors.end());
      REQUIRE(it->second.first == full);
      const int64_t r = full[0], c = full[1];
      int64_t r0 = 0, rn = r, c0 = 0, cn = c;
      if (slice.dim == 0) r0 = slice.begin, rn = slice.count;
      if (slice.dim == 1) c0 = slice.begin, cn = slice.count;
      std::vector<float> part;
      for (int64_t i = r0; i < r0 + rn; ++i)
        for (int64_t j = c0; j < c0 + cn; ++j) part.push_back(it->second.second[i * c + j]);
      Tensor target = dst.tensor.rows(row, rn);
      REQUIRE(target.numel() == static_cast<int64_t>(part.size()));
      backend.upload(part.data(), DType::F32, target);
    };
    return l;
  }
  const std::vector<float>& w(const std::string& name) { return tensors.at(name).second; }
};

float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace

TEST_CASE("MoeBlock equals a per-token loop, on one rank and summed over ranks") {
  const int64_t h = 16, inter = 8, shared_inter = 12, tokens = 9;
  for (const bool shared : {false, true}) {
    MoeConfig cfg;
    cfg.num_experts = 6;
    cfg.top_k = 2;
    cfg.expert_intermediate_size = inter;
    cfg.renormalize = !shared;
    cfg.shared_expert_intermediate_size = shared ? shared_inter : 0;
    ModelConfig mc;
    mc.arch = shared ? Architecture::kQwen2Moe : Architecture::kQwen3Moe;
    mc.moe = cfg;
    const MoeWeightNames names = moe_weight_names(mc, "model.layers.0.");
    FakeCheckpoint ck;
    ck.add(names.router, cfg.num_experts, h, 0.5f);
    for (int e = 0; e < cfg.num_experts; ++e) {
      ck.add(names.expert_gate(e), inter, h, 0.3f);
      ck.add(names.expert_up(e), inter, h, 0.3f);
      ck.add(names.expert_down(e), h, inter, 0.3f);
    }
    if (shared) {
      ck.add(names.shared_expert + "gate_proj.weight", shared_inter, h, 0.3f);
      ck.add(names.shared_expert + "up_proj.weight", shared_inter, h, 0.3f);
      ck.add(names.shared_expert + "down_proj.weight", h, shared_inter, 0.3f);
      ck.add(names.shared_expert_gate, 1, h, 0.5f);
    }
    std::vector<float> x(static_cast<size_t>(tokens * h));
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (float& v : x) v = d(ck.rng);

    // The per-token loop: softmax, top-k (no ties with random logits), experts one by one.
    std::vector<double> want(static_cast<size_t>(tokens * h), 0.0);
    auto expert = [&](const std::string& g, const std::string& u, const std::string& dn,
                      int64_t n, int64_t t, double scale) {
      std::vector<double> a(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        double gs = 0, us = 0;
        for (int64_t j = 0; j < h; ++j) {
          gs += ck.w(g)[i * h + j] * x[t * h + j];
          us += ck.w(u)[i * h + j] * x[t * h + j];
        }
        a[i] = silu(static_cast<float>(gs)) * us;
      }
      for (int64_t o = 0; o < h; ++o) {
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += ck.w(dn)[o * n + i] * a[i];
        want[t * h + o] += scale * s;
      }
    };
    std::vector<int> seen(cfg.num_experts, 0);
    for (int64_t t = 0; t < tokens; ++t) {
      std::vector<double> logit(cfg.num_experts), p(cfg.num_experts);
      double z = 0, mx = -1e30;
      for (int e = 0; e < cfg.num_experts; ++e) {
        for (int64_t j = 0; j < h; ++j) logit[e] += ck.w(names.router)[e * h + j] * x[t * h + j];
        mx = std::max(mx, logit[e]);
      }
      for (int e = 0; e < cfg.num_experts; ++e) z += p[e] = std::exp(logit[e] - mx);
      std::vector<int> order(cfg.num_experts);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
      double chosen = 0;
      for (int j = 0; j < cfg.top_k; ++j) chosen += p[order[j]] / z;
      for (int j = 0; j < cfg.top_k; ++j) {
        const int e = order[j];
        ++seen[e];
        const double wgt = cfg.renormalize ? p[e] / z / chosen : p[e] / z;
        expert(names.expert_gate(e), names.expert_up(e), names.expert_down(e), inter, t, wgt);
      }
      if (shared) {
        double gl = 0;
        for (int64_t j = 0; j < h; ++j) gl += ck.w(names.shared_expert_gate)[j] * x[t * h + j];
        expert(names.shared_expert + "gate_proj.weight", names.shared_expert + "up_proj.weight",
               names.shared_expert + "down_proj.weight", shared_inter, t, 1.0 / (1.0 + std::exp(-gl)));
      }
    }
    // The routing spread tokens over several experts (a test of grouping, not of one run).
    CHECK(std::count_if(seen.begin(), seen.end(), [](int n) { return n > 0; }) >= 3);

    struct Layout {
      int world;
      bool ep;
    };
    for (const Layout lay : {Layout{1, false}, Layout{2, false}, Layout{4, false}, Layout{2, true},
                             Layout{4, true}}) {
      if (!lay.ep && inter % lay.world != 0) continue;
      if (shared && shared_inter % lay.world != 0) continue;
      INFO("world " << lay.world << " expert parallel " << lay.ep << " shared " << shared);
      std::vector<double> sum(static_cast<size_t>(tokens * h), 0.0);
      for (int r = 0; r < lay.world; ++r) {
        auto backend = make_cpu_backend(1);
        ParallelConfig par{r, lay.world, lay.ep};
        MoeBlock block(cfg, names, h, par, ck.loader(*backend));
        if (lay.ep) CHECK(block.num_local_experts() == (r + 1) * 6 / lay.world - r * 6 / lay.world);
        MoeWorkspace ws;
        ws.reserve(*backend, cfg, h, block.expert_inter(), block.shared_inter(), 16);
        Buffer xb = backend->allocate(DType::F32, {tokens, h});
        backend->upload(x.data(), DType::F32, xb.tensor);
        Buffer out = backend->allocate(DType::F32, {tokens, h});
        block.forward(*backend, ws, xb.tensor, out.tensor);
        std::vector<float> got(static_cast<size_t>(tokens * h));
        backend->download_f32(out.tensor, got.data());
        for (size_t i = 0; i < got.size(); ++i) {
          REQUIRE(std::isfinite(got[i]));
          sum[i] += got[i];
        }
      }
      double worst = 0;
      for (size_t i = 0; i < sum.size(); ++i) worst = std::max(worst, std::abs(sum[i] - want[i]));
      CHECK(worst < 1e-4);
    }
  }
}

TEST_CASE("MoE config fields: sparse layers, defaults, refusals") {
  nlohmann::json q = {{"architectures", {"Qwen3MoeForCausalLM"}}, {"vocab_size", 100},
                      {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 6},
                      {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 16},
                      {"moe_intermediate_size", 32}, {"num_experts", 8},
                      {"num_experts_per_tok", 2}, {"norm_topk_prob", true},
                      {"decoder_sparse_step", 2}, {"mlp_only_layers", {3}}};
  ModelConfig c = ModelConfig::from_json(q, nlohmann::json(), "qwen3moe");
  REQUIRE(c.moe);
  CHECK(c.arch == Architecture::kQwen3Moe);
  CHECK(c.qk_norm);
  CHECK(c.moe->num_experts == 8);
  CHECK(c.moe->top_k == 2);
  CHECK(c.moe->expert_intermediate_size == 32);
  CHECK(c.moe->renormalize);
  CHECK(c.moe->shared_expert_intermediate_size == 0);
  // (l + 1) % 2 == 0 and not listed: layers 1 and 5 (3 is dense through mlp_only_layers).
  CHECK(c.moe->sparse_layer == std::vector<uint8_t>{0, 1, 0, 0, 0, 1});

  nlohmann::json q2 = q;
  q2["architectures"] = {"Qwen2MoeForCausalLM"};
  q2.erase("norm_topk_prob");
  q2.erase("decoder_sparse_step");
  q2.erase("mlp_only_layers");
  q2["shared_expert_intermediate_size"] = 96;
  c = ModelConfig::from_json(q2, nlohmann::json(), "qwen2moe");
  CHECK(c.attention_bias);
  CHECK_FALSE(c.moe->renormalize);  // norm_topk_prob defaults to false
  CHECK(c.moe->shared_expert_intermediate_size == 96);
  CHECK(c.moe->sparse_layer == std::vector<uint8_t>(6, 1));
  const MoeWeightNames n = moe_weight_names(c, "model.layers.1.");
  CHECK(n.router == "model.layers.1.mlp.gate.weight");
  CHECK(n.expert_down(7) == "model.layers.1.mlp.experts.7.down_proj.weight");
  CHECK(n.shared_expert_gate == "model.layers.1.mlp.shared_expert_gate.weight");

  nlohmann::json m = {{"architectures", {"MixtralForCausalLM"}}, {"vocab_size", 100},
                      {"hidden_size", 64}, {"intermediate_size", 48}, {"num_hidden_layers", 2},
                      {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"num_local_experts", 4}, {"num_experts_per_tok", 2},
                      {"sliding_window", 16}};
  c = ModelConfig::from_json(m, nlohmann::json(), "mixtral");
  CHECK(c.moe->renormalize);
  CHECK(c.moe->expert_intermediate_size == 48);
  CHECK(c.sliding_window == std::vector<int>{16, 16});
  const MoeWeightNames mn = moe_weight_names(c, "model.layers.0.");
  CHECK(mn.expert_gate(3) == "model.layers.0.block_sparse_moe.experts.3.w1.weight");
  CHECK(mn.expert_up(3) == "model.layers.0.block_sparse_moe.experts.3.w3.weight");
  CHECK(mn.expert_down(3) == "model.layers.0.block_sparse_moe.experts.3.w2.weight");
  CHECK(mn.shared_expert.empty());

  nlohmann::json bad = m;
  bad["num_experts_per_tok"] = 5;
  CHECK_THROWS_WITH(ModelConfig::from_json(bad, nlohmann::json(), "mixtral"),
                    Catch::Contains("exceeds the 4 experts"));
  bad = q;
  bad["mlp_only_layers"] = {6};
  CHECK_THROWS_WITH(ModelConfig::from_json(bad, nlohmann::json(), "qwen3moe"),
                    Catch::Contains("mlp_only_layers"));
}
