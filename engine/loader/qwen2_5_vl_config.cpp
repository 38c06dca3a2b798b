// config.json of Qwen2_5_VLForConditionalGeneration. The Hub's checkpoints keep the language
// model's fields at the top level (a Qwen2 config) with rope_scaling {"type": "mrope",
// "mrope_section": [...]} and the vision tower under vision_config; transformers >= 4.53
// also writes them under text_config, which then wins. Missing vision fields take
// Qwen2_5_VLVisionConfig's defaults.
#include <numeric>

#include "engine/core/check.h"
#include "engine/loader/model_config.h"

namespace iris {
namespace {

using json = nlohmann::json;

int get_int(const json& j, const char* key, int64_t def, const std::string& source,
            int64_t lo = 1) {
  if (!j.contains(key) || j[key].is_null()) return static_cast<int>(def);
  if (!j[key].is_number_integer()) fail(source, ": \"", key, "\" must be an integer");
  const int64_t v = j[key].get<int64_t>();
  if (v < lo || v > (1ll << 31)) fail(source, ": \"", key, "\" = ", v, " is out of range");
  return static_cast<int>(v);
}

std::vector<int> get_int_list(const json& v, const std::string& source, const char* key) {
  if (!v.is_array()) fail(source, ": \"", key, "\" must be a list of integers");
  std::vector<int> out;
  for (const json& x : v) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > (1 << 20))
      fail(source, ": \"", key, "\" entry ", x.dump(), " is not a non-negative integer");
    out.push_back(static_cast<int>(x.get<int64_t>()));
  }
  return out;
}

QwenVisionConfig parse_vision(const json& v, const std::string& source) {
  const std::string src = source + " vision_config";
  QwenVisionConfig vc;
  vc.depth = get_int(v, "depth", vc.depth, src);
  vc.hidden_size = get_int(v, "hidden_size", vc.hidden_size, src);
  vc.intermediate_size = get_int(v, "intermediate_size", vc.intermediate_size, src);
  vc.num_heads = get_int(v, "num_heads", vc.num_heads, src);
  // The Hub's configs spell it in_chans; the config class in_channels.
  vc.in_channels = get_int(v, "in_channels", get_int(v, "in_chans", vc.in_channels, src), src);
  vc.patch_size = get_int(v, "patch_size", get_int(v, "spatial_patch_size", vc.patch_size, src), src);
  vc.spatial_merge_size = get_int(v, "spatial_merge_size", vc.spatial_merge_size, src);
  vc.temporal_patch_size = get_int(v, "temporal_patch_size", vc.temporal_patch_size, src);
  vc.window_size = get_int(v, "window_size", vc.window_size, src);
  vc.out_hidden_size = get_int(v, "out_hidden_size", vc.out_hidden_size, src);
  if (v.contains("fullatt_block_indexes") && !v["fullatt_block_indexes"].is_null())
    vc.fullatt_block_indexes = get_int_list(v["fullatt_block_indexes"], src, "fullatt_block_indexes");
  for (int l : vc.fullatt_block_indexes)
    if (l >= vc.depth)
      fail(src, ": fullatt_block_indexes entry ", l, " is not a block index in [0, ", vc.depth, ")");
  if (v.contains("tokens_per_second") && !v["tokens_per_second"].is_null()) {
    if (!v["tokens_per_second"].is_number() || !(v["tokens_per_second"].get<double>() > 0))
      fail(src, ": \"tokens_per_second\" must be a positive number");
    vc.tokens_per_second = v["tokens_per_second"].get<double>();
  }
  if (v.contains("hidden_act") && !v["hidden_act"].is_null()) {
    if (!v["hidden_act"].is_string() || v["hidden_act"].get<std::string>() != "silu")
      fail(src, ": hidden_act ", v["hidden_act"].dump(), " is not supported (only \"silu\")");
  }
  if (vc.hidden_size % vc.num_heads != 0 || vc.head_dim() % 4 != 0)
    fail(src, ": hidden_size ", vc.hidden_size, " over ", vc.num_heads,
         " heads must give a head_dim divisible by 4 (2-D rotary embedding)");
  const int unit = vc.spatial_merge_size * vc.patch_size;
  if (vc.window_size < unit || vc.window_size % unit != 0)
    fail(src, ": window_size ", vc.window_size, " must be a multiple of patch_size x "
         "spatial_merge_size = ", unit);
  return vc;
}

}  // namespace

ModelConfig parse_qwen2_5_vl(const json& j, const json& gen, const std::string& source) {
  // The language model: the top-level fields, overridden by text_config where present,
  // parsed as the Qwen2 text config it is (rope_scaling is M-RoPE's and read here).
  json text = json::object();
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "vision_config" && it.key() != "text_config") text[it.key()] = it.value();
  if (j.contains("text_config") && j["text_config"].is_object())
    for (auto it = j["text_config"].begin(); it != j["text_config"].end(); ++it)
      if (!it.value().is_null()) text[it.key()] = it.value();
  const json rope = text.contains("rope_scaling") ? text["rope_scaling"] : json();
  text.erase("rope_scaling");
  text["architectures"] = {"Qwen2ForCausalLM"};
  ModelConfig c = ModelConfig::from_json(text, gen, source);
  c.architecture_name = "Qwen2_5_VLForConditionalGeneration";

  if (!rope.is_object() || !rope.contains("mrope_section"))
    fail(source, ": Qwen2.5-VL needs rope_scaling.mrope_section");
  const std::string type = rope.value("rope_type", rope.value("type", std::string("default")));
  if (type != "mrope" && type != "default")
    fail(source, ": rope_scaling type '", type, "' is not supported with M-RoPE (mrope, default)");
  c.mrope_section = get_int_list(rope["mrope_section"], source, "rope_scaling.mrope_section");
  const int sum = std::accumulate(c.mrope_section.begin(), c.mrope_section.end(), 0);
  if (c.mrope_section.size() != 3 || sum != c.head_dim / 2)
    fail(source, ": rope_scaling.mrope_section ", rope["mrope_section"].dump(),
         " must be three sections summing to head_dim / 2 = ", c.head_dim / 2);

  QwenVlConfig q;
  q.vision = parse_vision(j.contains("vision_config") && j["vision_config"].is_object()
                              ? j["vision_config"] : json::object(),
                          source);
  const int64_t vocab = c.vocab_size;
  auto token = [&](const char* key, int32_t def) {
    const json& src = text.contains(key) ? text : j;
    const int id = get_int(src, key, def, source, 0);
    if (id >= vocab) fail(source, ": ", key, " ", id, " outside the vocabulary [0, ", vocab, ")");
    return static_cast<int32_t>(id);
  };
  q.image_token_id = token("image_token_id", q.image_token_id);
  q.video_token_id = token("video_token_id", q.video_token_id);
  q.vision_start_token_id = token("vision_start_token_id", q.vision_start_token_id);
  q.vision_end_token_id = token("vision_end_token_id", q.vision_end_token_id);
  c.qwen_vl = std::move(q);
  return c;
}

}  // namespace iris
