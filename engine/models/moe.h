// Mixture-of-experts MLP blocks (Mixtral, Qwen2-MoE, Qwen3-MoE), written once against Ops.
//
// One step of a sparse layer:
//   1. router logits = x @ router^T on the device ([T, E], plus Qwen2-MoE's shared-expert
//      gate as one more column), copied to the host;
//   2. routing on the host, in one place (route_top_k): fp32 softmax, top-k with ties broken
//      exactly as torch.topk on the CPU, optional renormalisation;
//   3. the step's (token, expert) pairs grouped by expert (group_by_expert): a counting sort,
//      tokens ascending inside each expert;
//   4. one gather of the grouped rows, then per active expert one gate|up GEMM over its
//      contiguous run of rows, one silu_mul over all rows, and per active expert one down
//      GEMM (an expert with no token costs nothing; no per-token loop over experts);
//   5. moe_combine: each token's output is the routing-weighted sum of its rows (and of the
//      shared expert's row scaled by sigmoid(gate)).
//
// Tensor parallelism: without expert parallelism every rank holds every expert with its
// intermediate dimension sharded like the dense MLP; with it (ParallelConfig::expert_parallel)
// rank r holds whole experts [r E / W, (r + 1) E / W) and computes them for every token that
// chose them. Either way each rank's output is a partial sum that the model all-reduces, so
// the result equals one rank's up to summation order. The shared expert is always sharded
// like the dense MLP. Every rank routes on bitwise the same hidden states, so all ranks
// agree on the routing.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"
#include "engine/models/weight_names.h"

namespace iris {

struct ParallelConfig;

// For each of `tokens` rows of router logits (row t at logits + t * stride, num_experts
// values), the top_k experts by softmax probability, largest first, and their weights
// (probabilities, renormalised to sum to one when `renormalize`). Ties are resolved as
// torch.topk does on the CPU (an nth_element / partial_sort over (probability, index)
// pairs), so equal logits pick the same experts as the PyTorch reference. Throws when a
// logit is not finite. experts, weights: [tokens, top_k].
void route_top_k(const float* logits, int64_t stride, int64_t tokens, int num_experts, int top_k,
                 bool renormalize, int32_t* experts, float* weights);

// The (token, choice) pairs of a step whose expert is in [first_expert, first_expert +
// num_local), grouped by expert.
struct ExpertGroups {
  std::vector<int32_t> rows;     // [N] the token of each grouped row, by expert then token
  std::vector<int32_t> offsets;  // [num_local + 1] local expert e owns rows [offsets[e], offsets[e + 1])
  std::vector<int32_t> slots;    // [T, top_k] the grouped row of each choice; -1 = another rank's
};
void group_by_expert(const int32_t* experts, int64_t tokens, int top_k, int first_expert,
                     int num_local, ExpertGroups& out);

// One source tensor of a (possibly fused) linear weight: `name` of full shape `full`, the
// rank's `slice` of it.
struct MatrixPiece {
  std::string name;
  std::vector<int64_t> full;
  Slice slice;
};

// How a checkpoint's weights reach a model's device buffers (the model's own loader, so
// experts are read exactly like dense weights).
struct WeightLoader {
  // A new weight buffer of `shape` in the compute dtype (counted in the model's weight bytes).
  std::function<Buffer(Shape)> alloc;
  // Reads `name` (full shape `full`), takes `slice`, and writes it at row `row` of dst.
  std::function<void(const std::string& name, std::vector<int64_t> full, Slice slice,
                     Buffer& dst, int64_t row)> load_into;
  // A linear weight of `shape` stacked from `pieces` (rows in order): kept packed where the
  // backend keeps quantized weights packed and every piece is stored quantized, else read
  // like alloc + load_into.
  std::function<Buffer(Shape shape, const std::vector<MatrixPiece>& pieces)> load_matrix;
};

// Activation buffers of the sparse layers of one model, shared by its layers and sized once.
class MoeWorkspace {
 public:
  void reserve(Backend& backend, const MoeConfig& cfg, int64_t hidden, int64_t expert_inter,
               int64_t shared_inter, int max_tokens);

 private:
  friend class MoeBlock;
  int max_tokens_ = 0;
  int num_columns_ = 0;  // router columns: experts (+ 1 for a shared-expert gate)
  int num_slots_ = 0;    // combine slots per token: top_k (+ 1 for a shared expert)
  Buffer logits_;        // [T, num_columns]       compute dtype
  Buffer rows_;          // I32 [T * top_k]
  Buffer slots_;         // I32 [T, num_slots]
  Buffer weights_;       // F32 [T, num_slots]
  Buffer xs_;            // [T * top_k, H]          grouped inputs
  Buffer gate_up_;       // [T * top_k, 2 I]
  Buffer act_;           // [T * top_k, I]
  Buffer y_;             // [T * top_k + T, H]      grouped outputs, then the shared expert's
  Buffer shared_gate_up_;  // [T, 2 I_shared] or empty
  Buffer shared_act_;      // [T, I_shared] or empty
  // Host side of the routing.
  std::vector<float> host_logits_;
  std::vector<int32_t> experts_;
  std::vector<float> expert_weights_;
  ExpertGroups groups_;
  std::vector<int32_t> slots_host_;
  std::vector<float> weights_host_;
};

// This rank's part of one sparse MLP block.
class MoeBlock {
 public:
  MoeBlock(const MoeConfig& cfg, const MoeWeightNames& names, int64_t hidden,
           const ParallelConfig& par, const WeightLoader& loader);

  // out = this rank's partial output of the block for x (sum it over the ranks).
  // x, out: [T, H].
  void forward(Backend& backend, MoeWorkspace& ws, const Tensor& x, Tensor& out);

  // Intermediate sizes on this rank (for sizing the workspace).
  int64_t expert_inter() const { return inter_; }
  int64_t shared_inter() const { return shared_inter_; }
  int first_expert() const { return first_expert_; }
  int num_local_experts() const { return num_local_; }

 private:
  MoeConfig cfg_;
  int64_t hidden_ = 0;
  int64_t inter_ = 0, shared_inter_ = 0;
  int first_expert_ = 0, num_local_ = 0;
  Buffer router_;                 // [E (+ 1), H]  router rows, then the shared-expert gate
  std::vector<Buffer> gate_up_;   // per local expert [2 I, H]
  std::vector<Buffer> down_;      // per local expert [H, I]
  Buffer shared_gate_up_;         // [2 I_shared, H] or empty
  Buffer shared_down_;            // [H, I_shared] or empty
};

}  // namespace iris
