// Internal interfaces of the tokenizer pipeline, one per HF stage, and the factories that build
// each from its tokenizer.json object. Each stage lives in its own .cpp:
//   normalizers.cpp, pre_tokenizers.cpp, bpe.cpp / unigram.cpp / wordpiece.cpp (models),
//   post_processors.cpp, decoders.cpp. Malformed JSON throws iris::Error naming the field.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace iris::tok {

using json = nlohmann::json;

// A pre-token. `at_origin` is true when it starts at offset 0 of the original input (HF's
// `offsets_original().0 == 0`), which Metaspace's prepend_scheme "first" depends on.
struct Piece {
  std::string text;
  bool at_origin = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& s) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` with their refinement; empty pieces are dropped.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual void tokenize(std::string_view piece, std::vector<int32_t>& out) const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual const std::string* id_to_token(int32_t id) const = 0;  // nullptr when unknown
  virtual int32_t vocab_size() const = 0;                        // max id + 1
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids, bool add_special_tokens) const = 0;
};

struct DecodeContext {
  bool continuation = false;  // first token continues earlier text (see Tokenizer)
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens, const DecodeContext& ctx) const = 0;
};

// Small helpers for reading config objects with error messages that name the field.
const json& require(const json& obj, const char* key, const char* where);
std::string get_string(const json& obj, const char* key, const char* where,
                       std::optional<std::string> fallback = std::nullopt);
bool get_bool(const json& obj, const char* key, bool fallback);
// A Split/Replace `pattern`: {"String": "..."} or {"Regex": "..."}; returns the regex source.
std::string pattern_to_regex(const json& pattern, const char* where);

std::unique_ptr<Normalizer> make_normalizer(const json& config);  // null config -> nullptr
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& config);
std::unique_ptr<Model> make_model(const json& config);
std::unique_ptr<PostProcessor> make_post_processor(const json& config);
std::unique_ptr<Decoder> make_decoder(const json& config);

// Builds HF's TemplateProcessing for "bos? $A eos?" (transformers' update_post_processor).
std::unique_ptr<PostProcessor> make_bos_eos_template(std::optional<int32_t> bos,
                                                     std::optional<int32_t> eos);

}  // namespace iris::tok
