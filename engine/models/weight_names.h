// Where a checkpoint keeps each part of a model. Text-only checkpoints put the language
// model under "model." with "lm_head.weight"; LLaVA checkpoints come in transformers' two
// layouts, told apart by which embedding tensor the checkpoint holds:
//   legacy (< 4.52)   language_model.model.*   language_model.lm_head.weight
//                     vision_tower.vision_model.*   multi_modal_projector.*
//   current (>= 4.52) model.language_model.*   lm_head.weight
//                     model.vision_tower.vision_model.*   model.multi_modal_projector.*
// Qwen2.5-VL checkpoints likewise:
//   the Hub's         model.*   lm_head.weight   visual.*
//   current (>= 4.52) model.language_model.*   lm_head.weight   model.visual.*
#pragma once

#include <string>

#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"

namespace iris {

struct WeightNames {
  std::string text_model = "model.";      // + embed_tokens.weight, layers.N.*, norm.weight
  std::string lm_head = "lm_head.weight";
  std::string vision_model;               // + embeddings.*, pre_layrnorm.*, encoder.layers.N.*
                                          // (Qwen2.5-VL: + patch_embed.*, blocks.N.*, merger.*)
  std::string projector;                  // + linear_1.*, linear_2.*
};

// Tensor names of one sparse (mixture-of-experts) MLP block under a layer prefix such as
// "model.layers.3.":
//   Mixtral     block_sparse_moe.gate.weight   block_sparse_moe.experts.E.{w1,w3,w2}.weight
//               (w1 = gate, w3 = up, w2 = down)
//   Qwen2/3-MoE mlp.gate.weight   mlp.experts.E.{gate,up,down}_proj.weight
//   Qwen2-MoE   + mlp.shared_expert.{gate,up,down}_proj.weight, mlp.shared_expert_gate.weight
struct MoeWeightNames {
  std::string router;              // [num_experts, H]
  std::string experts;             // prefix of expert E: experts + "E."
  std::string gate, up, down;      // suffixes after the expert prefix
  std::string shared_expert;       // prefix of the shared expert's *_proj, or empty
  std::string shared_expert_gate;  // [1, H], or empty

  std::string expert_gate(int e) const { return experts + std::to_string(e) + "." + gate; }
  std::string expert_up(int e) const { return experts + std::to_string(e) + "." + up; }
  std::string expert_down(int e) const { return experts + std::to_string(e) + "." + down; }
};
MoeWeightNames moe_weight_names(const ModelConfig& config, const std::string& layer_prefix);

// The layout `ckpt` uses for the model `config` describes; throws naming both candidate
// tensors when a LLaVA checkpoint matches neither layout.
WeightNames weight_names(const Checkpoint& ckpt, const ModelConfig& config);

}  // namespace iris
