// Post-processors: add the special tokens of the model's template around the encoded text when
// add_special_tokens is set (TemplateProcessing, BERT/RoBERTa). ByteLevel only adjusts offsets
// in HF, so for ids it is the identity. Only single sequences are encoded here (no pairs).
#include "engine/core/check.h"
#include "engine/tokenizer/components.h"

namespace iris::tok {
namespace {

class TemplatePostProcessor : public PostProcessor {
 public:
  // An item is either a run of special-token ids or (empty) the input sequence.
  struct Item {
    bool is_sequence;
    std::vector<int32_t> ids;
  };
  explicit TemplatePostProcessor(std::vector<Item> items) : items_(std::move(items)) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    if (!add_special_tokens) return;
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& item : items_) {
      if (item.is_sequence) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), item.ids.begin(), item.ids.end());
      }
    }
    ids = std::move(out);
  }

 private:
  std::vector<Item> items_;
};

class IdentityPostProcessor : public PostProcessor {
 public:
  void process(std::vector<int32_t>&, bool) const override {}
};

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  void process(std::vector<int32_t>& ids, bool add_special_tokens) const override {
    for (const auto& p : parts_) p->process(ids, add_special_tokens);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

std::unique_ptr<PostProcessor> make_template(const json& config) {
  const json& single = require(config, "single", "post_processor TemplateProcessing");
  const json& specials = config.contains("special_tokens") ? config["special_tokens"] : json::object();
  IRIS_CHECK(single.is_array()) << "tokenizer.json: TemplateProcessing.single must be a list";
  std::vector<TemplatePostProcessor::Item> items;
  for (const auto& piece : single) {
    if (piece.contains("Sequence")) {
      items.push_back({true, {}});
      continue;
    }
    IRIS_CHECK(piece.contains("SpecialToken") && piece["SpecialToken"].contains("id"))
        << "tokenizer.json: TemplateProcessing.single item must be Sequence or SpecialToken, got "
        << piece.dump();
    std::string name = get_string(piece["SpecialToken"], "id", "TemplateProcessing SpecialToken");
    IRIS_CHECK(specials.contains(name))
        << "tokenizer.json: TemplateProcessing uses special token '" << name
        << "' which is missing from special_tokens";
    const json& ids = require(specials[name], "ids", "TemplateProcessing special_tokens entry");
    IRIS_CHECK(ids.is_array()) << "tokenizer.json: special_tokens['" << name << "'].ids must be a list";
    std::vector<int32_t> v;
    for (const auto& id : ids) {
      IRIS_CHECK(id.is_number_integer()) << "tokenizer.json: special_tokens['" << name
                                         << "'].ids must hold integers";
      v.push_back(id.get<int32_t>());
    }
    items.push_back({false, std::move(v)});
  }
  return std::make_unique<TemplatePostProcessor>(std::move(items));
}

int32_t pair_id(const json& config, const char* key, const char* where) {
  const json& p = require(config, key, where);
  IRIS_CHECK(p.is_array() && p.size() == 2 && p[1].is_number_integer())
      << "tokenizer.json: " << where << "." << key << " must be [token, id]";
  return p[1].get<int32_t>();
}

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const json& config) {
  if (config.is_null()) return nullptr;
  std::string type = get_string(config, "type", "post_processor");
  if (type == "TemplateProcessing") return make_template(config);
  if (type == "ByteLevel") return std::make_unique<IdentityPostProcessor>();
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    int32_t cls = pair_id(config, "cls", type.c_str());
    int32_t sep = pair_id(config, "sep", type.c_str());
    return std::make_unique<TemplatePostProcessor>(std::vector<TemplatePostProcessor::Item>{
        {false, {cls}}, {true, {}}, {false, {sep}}});
  }
  if (type == "Sequence") {
    const json& list = require(config, "processors", "post_processor Sequence");
    IRIS_CHECK(list.is_array()) << "tokenizer.json: post_processor Sequence.processors must be a list";
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (const auto& item : list) {
      if (auto p = make_post_processor(item)) parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePostProcessor>(std::move(parts));
  }
  fail("tokenizer.json: unsupported post_processor type '", type, "'");
}

std::unique_ptr<PostProcessor> make_bos_eos_template(std::optional<int32_t> bos,
                                                     std::optional<int32_t> eos) {
  std::vector<TemplatePostProcessor::Item> items;
  if (bos) items.push_back({false, {*bos}});
  items.push_back({true, {}});
  if (eos) items.push_back({false, {*eos}});
  return std::make_unique<TemplatePostProcessor>(std::move(items));
}

}  // namespace iris::tok
