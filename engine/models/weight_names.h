// Where a checkpoint keeps each part of a model. Text-only checkpoints put the language
// model under "model." with "lm_head.weight"; LLaVA checkpoints come in transformers' two
// layouts, told apart by which embedding tensor the checkpoint holds:
//   legacy (< 4.52)   language_model.model.*   language_model.lm_head.weight
//                     vision_tower.vision_model.*   multi_modal_projector.*
//   current (>= 4.52) model.language_model.*   lm_head.weight
//                     model.vision_tower.vision_model.*   model.multi_modal_projector.*
#pragma once

#include <string>

#include "engine/loader/checkpoint.h"
#include "engine/loader/model_config.h"

namespace iris {

struct WeightNames {
  std::string text_model = "model.";      // + embed_tokens.weight, layers.N.*, norm.weight
  std::string lm_head = "lm_head.weight";
  std::string vision_model;               // + embeddings.*, pre_layrnorm.*, encoder.layers.N.*
  std::string projector;                  // + linear_1.*, linear_2.*
};

// The layout `ckpt` uses for the model `config` describes; throws naming both candidate
// tensors when a LLaVA checkpoint matches neither layout.
WeightNames weight_names(const Checkpoint& ckpt, const ModelConfig& config);

}  // namespace iris
