// Runtime values of the Jinja evaluator. They model the Python objects that jinja2 sees when
// transformers renders a chat template: None/bool/int/float/str, list/tuple, dict (keeps
// insertion order), namespace, callables, and jinja2's Undefined. Printing follows Python's
// str()/repr() so rendered text is byte-identical to the reference.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace iris::jinja {

class Evaluator;
struct Value;

struct ArrayData {
  std::vector<Value> items;
  bool is_tuple = false;
};

// A dict keyed by strings, in insertion order (Python dicts keep it and tojson relies on it).
struct ObjectData {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;  // namespace() objects are the only mutable ones in templates

  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  void set(std::string key, Value v);
};

// Arguments of a call: positional then keyword, as written at the call site.
struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

// A builtin function, a bound method or a macro.
struct Function {
  std::string name;
  std::function<Value(Evaluator&, CallArgs&)> fn;
};

struct Value {
  enum class Kind : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kFunction };

  Kind kind = Kind::kUndefined;
  bool b = false;
  // For kUndefined, `safe_error` marks a value whose use must fail (sandboxed attribute).
  bool safe_error = false;
  int64_t i = 0;
  double f = 0.0;
  std::string s;  // string value; for kUndefined the name or hint used in error messages
  std::shared_ptr<ArrayData> arr;
  std::shared_ptr<ObjectData> obj;
  std::shared_ptr<Function> fn;

  Value() = default;
  static Value undefined(std::string hint = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value number(double v);
  static Value string(std::string v);
  static Value array(std::vector<Value> items = {}, bool is_tuple = false);
  static Value object();
  static Value function(std::string name, std::function<Value(Evaluator&, CallArgs&)> fn);

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_none() const { return kind == Kind::kNone; }
  bool is_bool() const { return kind == Kind::kBool; }
  bool is_int() const { return kind == Kind::kInt; }
  bool is_float() const { return kind == Kind::kFloat; }
  // Python counts bool as a number too; templates rarely care, tests below follow jinja2.
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_array() const { return kind == Kind::kArray; }
  bool is_object() const { return kind == Kind::kObject; }
  bool is_function() const { return kind == Kind::kFunction; }

  double as_double() const;  // for int/float/bool
  bool truthy() const;       // Python truthiness

  // Python str(): strings unquoted, everything else as repr().
  std::string str() const;
  // Python repr(): 'quoted' strings, [lists], (tuples,), {'dicts': 1}, True/False/None.
  std::string repr() const;
  const char* type_name() const;  // Python type name, for error messages
};

bool values_equal(const Value& a, const Value& b);
// Python ordering (<); throws iris::Error for types Python cannot compare.
bool values_less(const Value& a, const Value& b);

// nlohmann::json sorts object keys; pass nlohmann::ordered_json to keep the caller's order
// (tojson output and dict iteration follow it, as Python dicts do).
Value from_json(const nlohmann::json& j);
Value from_json(const nlohmann::ordered_json& j);
nlohmann::ordered_json to_json(const Value& v);

// json.dumps(v, ensure_ascii=..., indent=..., separators=..., sort_keys=...) byte for byte.
struct JsonDumpOptions {
  bool ensure_ascii = false;
  bool has_indent = false;
  std::string indent;  // indent string when has_indent
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
std::string dump_json(const Value& v, const JsonDumpOptions& opts);

std::string python_float_repr(double v);
std::string python_string_repr(std::string_view s);

// UTF-8 helpers: Python indexes strings by code point. Invalid bytes count as one code point
// each so hostile input never fails here.
std::vector<size_t> utf8_offsets(std::string_view s);  // start offset of each code point + end
size_t utf8_length(std::string_view s);
uint32_t utf8_decode_at(std::string_view s, size_t& pos);
void utf8_append(std::string& out, uint32_t cp);

}  // namespace iris::jinja
