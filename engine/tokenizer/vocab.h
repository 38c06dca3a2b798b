// Token string <-> id tables shared by the models: a hash map with string_view lookup and a
// dense id-indexed array of token strings.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace iris::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct Vocab {
  TokenMap token_to_id;
  std::vector<std::string> id_to_token;  // "" where an id has no token
  std::vector<bool> has_id;

  const int32_t* find(std::string_view token) const {
    auto it = token_to_id.find(token);
    return it == token_to_id.end() ? nullptr : &it->second;
  }
  void add(std::string token, int32_t id) {
    if (id >= static_cast<int32_t>(id_to_token.size())) {
      id_to_token.resize(id + 1);
      has_id.resize(id + 1, false);
    }
    id_to_token[id] = token;
    has_id[id] = true;
    token_to_id.insert_or_assign(std::move(token), id);
  }
  const std::string* token(int32_t id) const {
    if (id < 0 || id >= static_cast<int32_t>(id_to_token.size()) || !has_id[id]) return nullptr;
    return &id_to_token[id];
  }
};

// A tokenizer model whose vocabulary is a Vocab: the lookups every such model answers the
// same way. Base must be the Model interface (components.h).
template <typename Base>
class VocabModel : public Base {
 public:
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    if (auto* id = vocab_.find(token)) return *id;
    return std::nullopt;
  }
  const std::string* id_to_token(int32_t id) const override { return vocab_.token(id); }
  int32_t vocab_size() const override { return static_cast<int32_t>(vocab_.id_to_token.size()); }

 protected:
  Vocab vocab_;
};

}  // namespace iris::tok
