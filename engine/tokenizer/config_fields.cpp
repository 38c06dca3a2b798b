// Field readers for tokenizer.json objects: every malformed or missing field becomes an
// iris::Error that names the component and the field, never a raw nlohmann exception.
#include "engine/core/check.h"
#include "engine/tokenizer/components.h"

namespace iris::tok {

const json& require(const json& obj, const char* key, const char* where) {
  IRIS_CHECK(obj.is_object()) << "tokenizer.json: " << where << " must be an object, got "
                              << obj.type_name();
  auto it = obj.find(key);
  IRIS_CHECK(it != obj.end()) << "tokenizer.json: " << where << " is missing field '" << key
                              << "'";
  return *it;
}

std::string get_string(const json& obj, const char* key, const char* where,
                       std::optional<std::string> fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    IRIS_CHECK(fallback.has_value()) << "tokenizer.json: " << where << " is missing string field '"
                                     << key << "'";
    return *fallback;
  }
  IRIS_CHECK(it->is_string()) << "tokenizer.json: " << where << "." << key
                              << " must be a string, got " << it->type_name();
  return it->get<std::string>();
}

bool get_bool(const json& obj, const char* key, bool fallback) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  IRIS_CHECK(it->is_boolean()) << "tokenizer.json: field '" << key << "' must be a boolean, got "
                               << it->type_name();
  return it->get<bool>();
}

std::string pattern_to_regex(const json& pattern, const char* where) {
  IRIS_CHECK(pattern.is_object()) << "tokenizer.json: " << where
                                  << ".pattern must be {\"String\": ..} or {\"Regex\": ..}";
  if (auto it = pattern.find("Regex"); it != pattern.end() && it->is_string()) {
    return it->get<std::string>();
  }
  if (auto it = pattern.find("String"); it != pattern.end() && it->is_string()) {
    std::string out;
    for (char c : it->get<std::string>()) {
      if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out.push_back('\\');
      out.push_back(c);
    }
    return out;
  }
  fail("tokenizer.json: ", where, ".pattern must be {\"String\": ..} or {\"Regex\": ..}, got ",
       pattern.dump());
}

}  // namespace iris::tok
