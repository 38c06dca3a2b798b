// Token string <-> id tables shared by the models: a hash map with string_view lookup and a
// dense id-indexed array of token strings.
#pragma once

#include <cstdint>
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

}  // namespace iris::tok
