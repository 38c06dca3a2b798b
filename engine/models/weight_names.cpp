// Weight-name layout detection (see weight_names.h).
#include "engine/models/weight_names.h"

#include "engine/core/check.h"

namespace iris {

WeightNames weight_names(const Checkpoint& ckpt, const ModelConfig& config) {
  WeightNames n;
  if (config.qwen_vl) {
    // Qwen2.5-VL: the Hub's checkpoints use model.* / visual.*; transformers >= 4.52 saves
    // model.language_model.* / model.visual.*. lm_head.weight in both (absent when tied).
    const std::string current = "model.language_model.embed_tokens.weight";
    const std::string hub = "model.embed_tokens.weight";
    if (ckpt.has(current)) {
      n.text_model = "model.language_model.";
      n.vision_model = "model.visual.";
    } else if (ckpt.has(hub)) {
      n.text_model = "model.";
      n.vision_model = "visual.";
    } else {
      fail(ckpt.dir(), ": a ", config.architecture_name, " checkpoint needs '", current,
           "' (transformers >= 4.52 layout) or '", hub, "' (the Hub's layout); it has neither");
    }
    return n;
  }
  if (!config.multimodal) return n;
  const std::string current = "model.language_model.embed_tokens.weight";
  const std::string legacy = "language_model.model.embed_tokens.weight";
  if (ckpt.has(current)) {
    n.text_model = "model.language_model.";
    n.lm_head = "lm_head.weight";
    n.vision_model = "model.vision_tower.vision_model.";
    n.projector = "model.multi_modal_projector.";
  } else if (ckpt.has(legacy)) {
    n.text_model = "language_model.model.";
    n.lm_head = "language_model.lm_head.weight";
    n.vision_model = "vision_tower.vision_model.";
    n.projector = "multi_modal_projector.";
  } else {
    fail(ckpt.dir(), ": a ", config.architecture_name, " checkpoint needs '", current,
         "' (transformers >= 4.52 layout) or '", legacy, "' (legacy layout); it has neither");
  }
  return n;
}

MoeWeightNames moe_weight_names(const ModelConfig& config, const std::string& layer_prefix) {
  MoeWeightNames n;
  if (config.arch == Architecture::kMixtral) {
    const std::string p = layer_prefix + "block_sparse_moe.";
    n.router = p + "gate.weight";
    n.experts = p + "experts.";
    n.gate = "w1.weight";
    n.up = "w3.weight";
    n.down = "w2.weight";
    return n;
  }
  const std::string p = layer_prefix + "mlp.";
  n.router = p + "gate.weight";
  n.experts = p + "experts.";
  n.gate = "gate_proj.weight";
  n.up = "up_proj.weight";
  n.down = "down_proj.weight";
  if (config.moe && config.moe->shared_expert_intermediate_size > 0) {
    n.shared_expert = p + "shared_expert.";
    n.shared_expert_gate = p + "shared_expert_gate.weight";
  }
  return n;
}

}  // namespace iris
